"""Failures are retried on the schedule, then dropped with one LOG line.

The suite runs with lark_webhooks.retry_delays = '300ms, 300ms, 300ms' and
lark_webhooks.timeout = '2s' (see test/run.sh).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import (Receiver, Tap, attempts_of, closed_port,  # noqa: E402
                       create_webhook, create_workflow, deliveries_of,
                       finish_run, new_account, psql, quote, scalar, server_log,
                       set_settings, wait_for_status)

t = Tap()
r = Receiver()
account = new_account()
ev = ["workflow_execution.failure"]

hook_flaky, s1 = create_webhook(account, r.url("/flaky"), ev)
r.route("/flaky", s1, ("fail", 1))
hook_down, s2 = create_webhook(account, r.url("/down"), ev)
r.route("/down", s2, "fail")
hook_closed, _ = create_webhook(account, "http://127.0.0.1:%d/hook" % closed_port(), ev)
hook_slow, s4 = create_webhook(account, r.url("/slow"), ev)
r.route("/slow", s4, ("slow", 3))
hook_redirect, s5 = create_webhook(account, r.url("/moved"), ev)
r.route("/moved", s5, ("status", 302))

workflow = create_workflow(account)
finish_run(workflow, "workflow_execution", "failure")

ids = {h: deliveries_of(h)[0]["id"] for h in (hook_flaky, hook_down, hook_closed, hook_slow, hook_redirect)}
settled = {row["id"]: row for row in wait_for_status(list(ids.values()), timeout=90)}

# 500 then 200
d = settled[ids[hook_flaky]]
t.is_((d["status"], d["attempts"]), ("succeeded", 2), "500 then 200: succeeded on the second attempt")
t.is_([(a["attempt"], a["http_status"]) for a in attempts_of(ids[hook_flaky])], [(1, 500), (2, 200)],
      "both attempts recorded in order")
same_id = {q["delivery"] for q in r.received("/flaky")}
t.is_(same_id, {ids[hook_flaky]}, "the retry carries the same X-Lark-Delivery")

# always 500
d = settled[ids[hook_down]]
t.is_((d["status"], d["attempts"]), ("failed", 4), "always 500: failed after four attempts")
t.is_([a["http_status"] for a in attempts_of(ids[hook_down])], [500] * 4, "four 500s recorded")
t.is_(len(r.received("/down")), 4, "the receiver saw exactly four requests")
t.ok(all(q["signature_valid"] for q in r.received("/down")), "every retry is signed")

# refused connection
d = settled[ids[hook_closed]]
t.is_((d["status"], d["attempts"]), ("failed", 4), "refused connection: failed after four attempts")
att = attempts_of(ids[hook_closed])
t.ok(all(a["http_status"] is None and "onnect" in (a["error"] or "") for a in att),
     "each attempt records a connection error and no status", att)

# slower than the timeout
att = attempts_of(ids[hook_slow])
t.is_(len(att), 4, "slow receiver: four attempts")
t.ok(all("timed out" in (a["error"] or "") and a["http_status"] is None for a in att),
     "each recorded as a timeout", att)
t.ok(all(1900 <= a["duration_ms"] < 2900 for a in att), "each ended at the 2 s timeout",
     [a["duration_ms"] for a in att])

# redirects are not followed
att = attempts_of(ids[hook_redirect])
t.is_([a["http_status"] for a in att], [302] * 4, "a 302 is a failed attempt, not followed")

# The drop is logged once per delivery, and the webhooks stay active.
log = server_log()
for hook in (hook_down, hook_closed, hook_slow, hook_redirect):
    lines = [line for line in log.splitlines()
             if "dropped delivery \"%s\"" % ids[hook] in line]
    t.is_(len(lines), 1, "one LOG line for the dropped delivery to %s" % hook)
    if lines:
        t.ok("workflow_execution.failure" in lines[0] and hook in lines[0]
             and "after 4 attempts" in lines[0], "it names event, webhook and attempts", lines[0])
t.ok("Last error: receiver answered with HTTP status 500" in log, "the last error is in the log")
t.is_(scalar("SELECT bool_and(active) FROM lark.webhooks WHERE account_id = %s" % quote(account)), True,
      "every webhook is still active")
t.is_(scalar("SELECT count(*) FROM lark.deliveries d JOIN lark.webhooks w ON w.id = d.webhook_id "
             "WHERE w.account_id = %s AND d.status IN ('pending', 'in_flight')" % quote(account)), 0,
      "nothing is left pending or in flight")
t.ok(scalar("SELECT bool_and(next_attempt_at IS NULL AND finished_at IS NOT NULL) FROM lark.deliveries "
            "WHERE id = ANY (ARRAY[%s])" % ", ".join(quote(i) for i in ids.values())),
     "finished deliveries have no next attempt and a finish time")

# A lone failing delivery, with nothing else to wake the worker: every
# retry still happens when due (the worker's idle poll is a minute, so
# without its own wake-up this would not settle in the time allowed).
# With max_concurrency 1 every claim fills its batch, so each result is
# recorded in the same transaction as the next claim: the case where the
# worker once lost track of the next retry.
set_settings(max_concurrency="1")
lone_account = new_account()
lone_hook, lone_secret = create_webhook(lone_account, r.url("/lone"), ["workflow_repair.failure"])
r.route("/lone", lone_secret, "fail")
finish_run(create_workflow(lone_account), "workflow_repair", "failure")
lone = deliveries_of(lone_hook)[0]["id"]
settled = wait_for_status([lone], timeout=20)
t.is_([(d["status"], d["attempts"]) for d in settled], [("failed", 4)],
      "a lone delivery's retries are each attempted when due")
set_settings(max_concurrency=None)

r.close()
t.done()
