"""DROP DATABASE of another database, and DROP EXTENSION, while a delivery
is in flight to a receiver that takes 8 s: each returns before that
receiver answers, the worker neither crashes nor errors in a loop, and
CREATE EXTENSION afterwards works without a restart.

Runs last: it drops the extension from the worker's database.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import (Receiver, Tap, create_webhook, create_workflow,  # noqa: E402
                       deliveries_of, finish_run, new_account, psql, quote,
                       server_log, set_settings, wait_for_status,
                       wait_for_worker, wait_until)

t = Tap()
set_settings(timeout="10s")
r = Receiver()
pid = wait_for_worker()
log_start = len(server_log())


def start_slow_delivery(path):
    account = new_account()
    hook, secret = create_webhook(account, r.url(path), ["workflow_execution.success"])
    r.route(path, secret, ("slow", 8))
    finish_run(create_workflow(account), "workflow_execution", "success")
    return wait_until(lambda: r.received(path), timeout=15)


def answered(path):
    """Has the slow receiver finished answering on path?"""
    return any(time.time() - q["arrived"] >= 8 for q in r.received(path))


# DROP DATABASE of another database.
psql("DROP DATABASE IF EXISTS lark_drop_me")
psql("CREATE DATABASE lark_drop_me")
t.ok(start_slow_delivery("/slow-db"), "a delivery is in flight to a receiver that takes 8 s")
psql("DROP DATABASE lark_drop_me")
t.ok(not answered("/slow-db"), "DROP DATABASE of another database returned before the receiver answered")
t.is_(psql("SELECT count(*) FROM pg_database WHERE datname = 'lark_drop_me'"), "0", "and the database is gone")

# DROP EXTENSION while the next one is in flight.
t.ok(start_slow_delivery("/slow-ext"), "another delivery is in flight")
psql("DROP EXTENSION lark_webhooks")
t.ok(not answered("/slow-ext"), "DROP EXTENSION returned before the receiver answered")
time.sleep(9)
t.is_(wait_for_worker(), pid, "the worker is the same process after both drops")
log = server_log()[log_start:]
worker_errors = [line for line in log.splitlines() if "lark_webhooks ERROR" in line
                 or "lark_webhooks FATAL" in line or "lark_webhooks PANIC" in line]
t.is_(worker_errors, [], "the worker logged no error")
t.is_(log.count("lark_webhooks extension was dropped"), 1, "it noted the drop once")

# CREATE EXTENSION again: delivering resumes without a restart.
psql("CREATE EXTENSION lark_webhooks")
t.ok(wait_until(lambda: server_log()[log_start:].count("worker is delivering for database") >= 1,
                timeout=15), "the worker picks up the new extension")
account = new_account()
hook, secret = create_webhook(account, r.url("/again"), ["workflow_repair.success"])
r.route("/again", secret)
finish_run(create_workflow(account), "workflow_repair", "success")
done = wait_for_status([d["id"] for d in deliveries_of(hook)], timeout=20)
t.is_([d["status"] for d in done], ["succeeded"], "and delivers again")
t.is_(wait_for_worker(), pid, "still the same worker process")

# A half-dropped schema: one of the extension's tables removed by hand.
# The worker reports the error, backs off (1 s, 2 s, 4 s, ...) instead of
# looping or crashing, and recovers once the extension is whole again.
log_mark = len(server_log())
psql("ALTER EXTENSION lark_webhooks DROP TABLE lark.delivery_attempts")
psql("DROP TABLE lark.delivery_attempts")
account = new_account()
hook, secret = create_webhook(account, r.url("/half"), ["workflow_repair.failure"])
r.route("/half", secret)
finish_run(create_workflow(account), "workflow_repair", "failure")
time.sleep(6)
errors = [line for line in server_log()[log_mark:].splitlines() if "lark_webhooks ERROR" in line]
t.ok(1 <= len(errors) <= 6, "with a table missing, the worker reports errors and backs off (%d in 6 s)"
     % len(errors), errors[:3])
t.is_(wait_for_worker(), pid, "and does not crash")
psql("DROP EXTENSION lark_webhooks")
psql("CREATE EXTENSION lark_webhooks")
account = new_account()
hook, secret = create_webhook(account, r.url("/whole"), ["workflow_repair.success"])
r.route("/whole", secret)
finish_run(create_workflow(account), "workflow_repair", "success")
done = wait_for_status([d["id"] for d in deliveries_of(hook)], timeout=30)
t.is_([d["status"] for d in done], ["succeeded"], "once the extension is whole again, it delivers")

set_settings(timeout=None)
r.close()
t.done()
