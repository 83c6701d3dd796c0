"""Read the vg.<pid> logs of a cluster run under valgrind; print TAP lines.

Usage: valgrind_verdict.py DIR ATTEMPTS
"""
import glob
import os
import re
import sys

log_dir, attempts = sys.argv[1], int(sys.argv[2] or 0)
OURS = re.compile(r"lark_webhooks\.so|libcurl")
INVALID = re.compile(r"Invalid (read|write|free)|Mismatched free|Source and destination overlap")

invalid, ours_uninit, ours_leaks, worker_logs = [], [], [], 0
for path in sorted(glob.glob(os.path.join(log_dir, "vg.*"))):
    with open(path, errors="replace") as f:
        text = f.read()
    if "lark_worker_main" in text or "lark_webhooks delivery worker" in text:
        worker_logs += 1
    # valgrind separates reports with a line holding only the pid prefix
    for report in re.split(r"\n==\d+== \n", text):
        if INVALID.search(report):
            invalid.append((path, report[:1500]))
        elif ("uninitialised" in report or "Conditional jump" in report) and OURS.search(report):
            ours_uninit.append((path, report[:1500]))
        elif "definitely lost" in report and "loss record" in report and OURS.search(report):
            ours_leaks.append((path, report[:1500]))

logs = len(glob.glob(os.path.join(log_dir, "vg.*")))
print(("ok 1" if logs > 0 and attempts > 100 else "not ok 1")
      + " - valgrind watched %d processes while the worker made %d attempts" % (logs, attempts))
for n, (name, found) in enumerate( (("invalid reads, writes or frees", invalid),
                    ("uses of uninitialised memory in lark_webhooks or libcurl", ours_uninit),
                    ("definite leaks from lark_webhooks or libcurl", ours_leaks)), start=2):
    print(("ok %d" % n if not found else "not ok %d" % n) + " - no %s under valgrind" % name)
    for path, report in found[:3]:
        print("# " + os.path.basename(path))
        for line in report.splitlines()[:40]:
            print("#   " + line)
sys.exit(1 if invalid or ours_uninit or ours_leaks or not logs else 0)
