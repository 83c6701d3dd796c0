"""Fail if a signing secret or a signature appears in the server log.

Looks for every secret and signature the tests saw (LARK_TMPDIR/
seen_secrets.txt, written by lark_test.py), and for anything shaped like a
secret (whsec_ followed by hex) or a bare 64-digit hex digest.
Prints one TAP-style line.
"""
import os
import re
import sys

log_path = sys.argv[1]
with open(log_path, errors="replace") as f:
    log = f.read()

seen = set()
seen_file = os.path.join(os.environ.get("LARK_TMPDIR", "/tmp"), "seen_secrets.txt")
if os.path.exists(seen_file):
    with open(seen_file) as f:
        seen = {line.strip() for line in f if len(line.strip()) >= 16}

leaks = [s for s in seen if s in log]
leaks += re.findall(r"whsec_[0-9a-f]{8,}", log)
leaks += re.findall(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", log)

if leaks:
    print("not ok - the server log holds %d secret(s) or signature(s), e.g. %s..."
          % (len(leaks), leaks[0][:12]))
    sys.exit(1)
print("ok - no secret or signature in %d lines of server log (%d known values checked)"
      % (log.count("\n"), len(seen)))
