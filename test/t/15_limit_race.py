"""Concurrent creators cannot exceed the per-account limit.

Twelve connections race to create webhooks for one new account: exactly
five succeed and the rest fail with SQLSTATE 54000.  Then, with an account
at four, two connections race for the fifth slot while one of them holds
its transaction open: one wins, one gets 54000, and the account has five.
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import Tap, create_webhook, new_account, quote, scalar  # noqa: E402

t = Tap()


def create_in_own_session(account, results, index, hold=0.0):
    sql = ("BEGIN; SELECT webhook_id FROM lark.create_webhook(%s, 'https://example.com/%d', "
           "ARRAY['workflow_execution.success']); SELECT pg_sleep(%s); COMMIT;"
           % (quote(account), index, hold))
    proc = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                           "-v", "VERBOSITY=verbose", "-c", sql],
                          capture_output=True, text=True, timeout=60)
    results[index] = (proc.returncode, proc.stderr)


# Twelve at once.
account = new_account()
results = {}
threads = [threading.Thread(target=create_in_own_session, args=(account, results, i))
           for i in range(12)]
for th in threads:
    th.start()
for th in threads:
    th.join(60)
succeeded = [i for i, (rc, _) in results.items() if rc == 0]
failed = [err for rc, err in results.values() if rc != 0]
t.is_(len(succeeded), 5, "five of twelve concurrent creates succeed")
t.is_(len(failed), 7, "seven fail")
t.ok(all("54000" in err for err in failed), "every failure is SQLSTATE 54000",
     "\n".join(failed))
t.is_(scalar("SELECT count(*) FROM lark.webhooks WHERE account_id = %s" % quote(account)), 5,
      "the account has exactly five webhooks")

# Two sessions for the last slot; the first holds its transaction open.
account = new_account()
for i in range(4):
    create_webhook(account, "https://example.com/%d" % i, ["workflow_repair.success"])
results = {}
first = threading.Thread(target=create_in_own_session, args=(account, results, 100, 1.5))
first.start()
time.sleep(0.5)
second = threading.Thread(target=create_in_own_session, args=(account, results, 101))
second.start()
first.join(60)
second.join(60)
t.is_(results[100][0], 0, "the first session takes the fifth slot")
t.ok(results[101][0] != 0 and "54000" in results[101][1],
     "the second session waits for it, then fails with 54000", results[101][1])
t.is_(scalar("SELECT count(*) FROM lark.webhooks WHERE account_id = %s" % quote(account)), 5,
      "the account has exactly five webhooks")

t.done()
