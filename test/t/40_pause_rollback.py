"""Paused webhooks hold their deliveries; rolled-back work sends nothing;
deleted webhooks cancel theirs; a rotated secret signs the next attempt.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import (Receiver, Tap, create_webhook, create_workflow,  # noqa: E402
                       deliveries_of, finish_run, new_account, psql, quote,
                       remember_secret, rows, set_settings,
                       wait_for_status, wait_until)

t = Tap()
r = Receiver()


def queue_held(hook, workflow, status, n=1):
    """Queue n deliveries for a paused webhook and leave it paused.

    The trigger skips paused webhooks, so resume it, fire, and pause it
    again, all in one transaction.
    """
    psql("BEGIN; SELECT lark.resume_webhook(%s); "
         "INSERT INTO lark.workflow_executions (workflow_id, status) "
         "SELECT %s, %s FROM generate_series(1, %d); "
         "SELECT lark.pause_webhook(%s); COMMIT;"
         % (quote(hook), quote(workflow), quote(status), n, quote(hook)))

account = new_account()
ev = ["workflow_execution.success", "workflow_execution.failure"]
workflow = create_workflow(account)

# Paused with deliveries queued: nothing is sent until it resumes.
hook, secret = create_webhook(account, r.url("/paused"), ev)
r.route("/paused", secret)
psql("SELECT lark.pause_webhook(%s)" % quote(hook))
queue_held(hook, workflow, "success", 3)
queued = deliveries_of(hook)
t.is_([d["status"] for d in queued], ["pending"] * 3, "three deliveries are queued for the paused webhook")
time.sleep(1.5)
t.is_(r.received("/paused"), [], "nothing was sent while paused")
t.is_([d["status"] for d in deliveries_of(hook)], ["pending"] * 3, "they are held, still pending")
psql("SELECT lark.resume_webhook(%s)" % quote(hook))
done = wait_for_status([d["id"] for d in queued])
t.is_(sorted(d["status"] for d in done), ["succeeded"] * 3, "after resume all three were delivered")
time.sleep(0.5)
got = [q["delivery"] for q in r.received("/paused")]
t.is_(sorted(got), sorted(d["id"] for d in queued), "each exactly once")

# A held retry keeps the wait it had left.
hook2, secret2 = create_webhook(account, r.url("/held-retry"), ["workflow_execution.cancelled"])
r.route("/held-retry", secret2, ("fail", 1))
set_settings(retry_delays="5s")
finish_run(workflow, "workflow_execution", "cancelled")
first = wait_until(lambda: [d for d in deliveries_of(hook2) if d["attempts"] == 1], timeout=10)
psql("SELECT lark.pause_webhook(%s)" % quote(hook2))
left_before = psql("SELECT next_attempt_at - now() FROM lark.deliveries WHERE webhook_id = %s" % quote(hook2))
time.sleep(1.0)
psql("SELECT lark.resume_webhook(%s)" % quote(hook2))
left_after = psql("SELECT extract(epoch FROM next_attempt_at - now()) FROM lark.deliveries "
                  "WHERE webhook_id = %s" % quote(hook2))
set_settings(retry_delays=None)
t.ok(bool(first), "the first attempt failed and a retry is scheduled", left_before)
t.ok(3.0 < float(left_after) <= 5.0, "after a 1 s pause the retry still has its remaining wait",
     left_after)
wait_for_status([d["id"] for d in deliveries_of(hook2)], timeout=15)
t.is_([d["status"] for d in deliveries_of(hook2)], ["succeeded"], "and is delivered when due")

# ROLLBACK, and rollback to a savepoint: nothing is sent.
hook3, secret3 = create_webhook(account, r.url("/rollback"), ev)
r.route("/rollback", secret3)
psql("BEGIN; INSERT INTO lark.workflow_executions (workflow_id, status) VALUES (%s, 'failure'); ROLLBACK;"
     % quote(workflow))
psql("BEGIN; SAVEPOINT s; INSERT INTO lark.workflow_executions (workflow_id, status) "
     "VALUES (%s, 'failure'); ROLLBACK TO SAVEPOINT s; COMMIT;" % quote(workflow))
# A committed event afterwards proves the worker was awake to send the others.
finish_run(workflow, "workflow_execution", "success")
wait_for_status([d["id"] for d in deliveries_of(hook3)])
time.sleep(0.5)
t.is_([q["event"] for q in r.received("/rollback")], ["workflow_execution.success"],
      "rolled-back events were never sent; the committed one was")
t.is_(len(deliveries_of(hook3)), 1, "and left no delivery rows")

# Deleting a webhook cancels what it had queued.
hook4, secret4 = create_webhook(account, r.url("/deleted"), ev)
r.route("/deleted", secret4)
psql("SELECT lark.pause_webhook(%s)" % quote(hook4))
queue_held(hook4, workflow, "failure")
psql("SELECT lark.delete_webhook(%s)" % quote(hook4))
time.sleep(1.0)
t.is_([d["status"] for d in deliveries_of(hook4)], ["cancelled"], "a deleted webhook's delivery is cancelled")
t.is_(r.received("/deleted"), [], "and never sent")

# rotate_secret takes effect for the next attempt of queued deliveries.
hook5, old_secret = create_webhook(account, r.url("/rotated"), ev)
r.route("/rotated", old_secret)
psql("SELECT lark.pause_webhook(%s)" % quote(hook5))
queue_held(hook5, workflow, "success")
new_secret = psql("SELECT lark.rotate_secret(%s)" % quote(hook5))
remember_secret(new_secret)
r.set_secret("/rotated", new_secret)
psql("SELECT lark.resume_webhook(%s)" % quote(hook5))
wait_for_status([d["id"] for d in deliveries_of(hook5)])
got = r.received("/rotated")
t.is_(len(got), 1, "the queued delivery went out after rotation")
t.ok(got and got[0]["signature_valid"], "signed with the new secret")

# A webhook deleted while its delivery is in flight: the delivery stays
# cancelled, and the attempt that was under way is counted and recorded.
hook6, secret6 = create_webhook(account, r.url("/deleted-in-flight"), ["workflow_repair.success"])
r.route("/deleted-in-flight", secret6, ("slow", 1.0))
finish_run(workflow, "workflow_repair", "success")
wait_until(lambda: r.received("/deleted-in-flight"), timeout=10)
psql("SELECT lark.delete_webhook(%s)" % quote(hook6))
time.sleep(1.5)
d6 = deliveries_of(hook6)
t.is_([(d["status"], d["attempts"], d["last_http_status"]) for d in d6], [("cancelled", 1, 200)],
      "deleted mid-flight: cancelled, with its one attempt counted")
t.is_(len(rows("SELECT 1 FROM lark.delivery_attempts WHERE delivery_id = %s" % quote(d6[0]["id"]))), 1,
      "and recorded")

# A due delivery whose row another transaction has locked does not make
# the worker spin (it looks again a second later), nor hold up others: with
# one slot, another webhook's delivery still goes out while the lock holds.
set_settings(retry_delays="1s", max_concurrency="1")
hook7, secret7 = create_webhook(account, r.url("/locked"), ["workflow_generation.failure"])
r.route("/locked", secret7, ("fail", 1))
finish_run(workflow, "workflow_generation", "failure")
d7 = wait_until(lambda: [d for d in deliveries_of(hook7) if d["attempts"] == 1], timeout=10)[0]["id"]
commits_before = int(psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"))
holder = subprocess.Popen(["psql", "-X", "-q", "-c",
                           "BEGIN; SELECT 1 FROM lark.deliveries WHERE id = %s FOR UPDATE; "
                           "SELECT pg_sleep(4); COMMIT;" % quote(d7)], stdout=subprocess.DEVNULL)
time.sleep(0.5)
other = new_account()
hook8, secret8 = create_webhook(other, r.url("/beside-locked"), ["workflow_generation.success"])
r.route("/beside-locked", secret8)
finish_run(create_workflow(other), "workflow_generation", "success")
beside = wait_for_status([d["id"] for d in deliveries_of(hook8)], timeout=10)
t.ok([d["status"] for d in beside] == ["succeeded"] and holder.poll() is None,
     "another webhook's delivery went out while the lock was held", (beside, holder.poll()))
holder.wait(30)
time.sleep(1.2)
commits = int(psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")) - commits_before
t.ok(commits < 200, "while the row was locked the worker did not spin (%d commits in 4 s)" % commits)
done7 = wait_for_status([d7], timeout=15)
t.is_([d["status"] for d in done7], ["succeeded"], "once released, the delivery went out")
set_settings(retry_delays=None, max_concurrency=None)

r.close()
t.done()
