"""At least once: a delivery in flight when the worker dies is sent again,
with the same X-Lark-Delivery, and nothing queued is lost or sent twice.

Three ways to die: pg_terminate_backend on the worker, kill -9 of the
worker (the postmaster then restarts every backend), and
pg_ctl restart -m immediate.  Each time max_concurrency is 1 and the
receiver takes a second per request, so one delivery is in flight and four
wait behind it when the blow lands.
"""
import collections
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import (Receiver, Tap, create_webhook, create_workflow,  # noqa: E402
                       deliveries_of, new_account, pg_ctl, psql, quote,
                       scalar, server_log, set_settings, wait_for_status,
                       wait_for_worker, wait_until)

t = Tap()
r = Receiver()
set_settings(max_concurrency="1")


def terminate(pid):
    psql("SELECT pg_terminate_backend(%d)" % pid)


def kill9(pid):
    os.kill(pid, signal.SIGKILL)


def restart_immediate(pid):
    res = pg_ctl("restart", "-m", "immediate")
    if res.returncode != 0:
        t.diag(res.stdout + res.stderr)


for how, blow in (("pg_terminate_backend", terminate), ("kill -9", kill9),
                  ("restart -m immediate", restart_immediate)):
    account = new_account()
    path = "/slow-" + how.split()[0].replace("_", "-")
    hook, secret = create_webhook(account, r.url(path), ["workflow_execution.success"])
    r.route(path, secret, ("slow", 1.0))
    workflow = create_workflow(account)
    psql("INSERT INTO lark.workflow_executions (workflow_id, status) "
         "SELECT %s, 'success' FROM generate_series(1, 5)" % quote(workflow))
    ids = [d["id"] for d in deliveries_of(hook)]

    pid = wait_for_worker()
    in_flight = wait_until(lambda: r.received(path), timeout=15)
    t.ok(bool(in_flight), "%s: a delivery is in flight" % how)
    if not in_flight:
        continue
    victim = in_flight[0]["delivery"]
    blow(pid)

    new_pid = wait_until(lambda: (p := wait_for_worker(timeout=1)) and p != pid and p, timeout=40)
    t.ok(bool(new_pid), "%s: the postmaster started a new worker" % how, (pid, new_pid))
    settled = wait_for_status(ids, timeout=60)
    t.is_(sorted(d["status"] for d in settled), ["succeeded"] * 5,
          "%s: all five were delivered after the restart" % how)
    time.sleep(0.3)
    counts = collections.Counter(q["delivery"] for q in r.received(path))
    t.ok(counts[victim] >= 2, "%s: the in-flight delivery was sent again with the same id" % how, counts)
    t.is_(sorted(counts[i] for i in ids if i != victim), [1, 1, 1, 1],
          "%s: the four that were queued were each sent once" % how)
    t.ok(all(q["signature_valid"] for q in r.received(path)), "%s: every copy verifies" % how)
    t.is_(scalar("SELECT count(*) FROM lark.deliveries WHERE status = 'in_flight' "
                 "AND id = ANY (ARRAY[%s])" % ", ".join(quote(i) for i in ids)), 0,
          "%s: nothing is left in flight" % how)

t.ok("queued 1 deliveries again that were in flight" in server_log(),
     "the new worker logs what it queued again")
set_settings(max_concurrency=None)
r.close()
t.done()
