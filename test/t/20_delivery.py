"""Each of the seven events reaches a subscribed webhook, signed.

The receiver checks X-Lark-Signature with the documented algorithm over the
raw body, and records headers and bytes.  Also: an unsubscribed or paused
webhook gets nothing, two webhooks of one account both get their copy, the
body is byte for byte the stored one, and a name full of quotes,
backslashes, newlines and emoji still verifies.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import (Receiver, Tap, attempts_of, create_webhook,  # noqa: E402
                       create_workflow, deliveries_of, finish_run, new_account,
                       psql, quote, rows, wait_for_status, wait_until)

t = Tap()
r = Receiver()
account = new_account()

EVENTS = [
    ("workflow_execution", "success", "execution_id"),
    ("workflow_execution", "failure", "execution_id"),
    ("workflow_execution", "cancelled", "execution_id"),
    ("workflow_generation", "success", "generation_id"),
    ("workflow_generation", "failure", "generation_id"),
    ("workflow_repair", "success", "repair_id"),
    ("workflow_repair", "failure", "repair_id"),
]
all_events = ["%s.%s" % (k, s) for k, s, _ in EVENTS]

hook_all, secret_all = create_webhook(account, r.url("/all"), all_events, "all events")
r.route("/all", secret_all)
hook_copy, secret_copy = create_webhook(account, r.url("/copy"), ["workflow_execution.failure"])
r.route("/copy", secret_copy)
hook_none, secret_none = create_webhook(account, r.url("/unsubscribed"), ["workflow_repair.success"])
r.route("/unsubscribed", secret_none)
hook_paused, secret_paused = create_webhook(account, r.url("/paused"), all_events)
r.route("/paused", secret_paused)
psql("SELECT lark.pause_webhook(%s)" % quote(hook_paused))

workflow = create_workflow(account, name="New User Signup",
                           description="Go to dashboard url and verify that you can sign up.")

run_ids = {}
for kind, status, _ in EVENTS:
    run_ids["%s.%s" % (kind, status)] = finish_run(workflow, kind, status, "summary of " + status)

# Wait for the /all webhook's seven, and for everything that should arrive.
settled = wait_for_status([d["id"] for d in deliveries_of(hook_all)])
t.is_(sorted(d["status"] for d in settled), ["succeeded"] * 7, "all seven deliveries succeeded")
wait_until(lambda: len(r.received("/all")) >= 7 and len(r.received("/copy")) >= 1, timeout=10)

got = {req["event"]: req for req in r.received("/all")}
t.is_(sorted(got), sorted(all_events), "the receiver got each of the seven events once")
t.is_(len(r.received("/all")), 7, "and nothing more")

stored = {row["event"]: row for row in rows(
    "SELECT e.event, e.body, d.id AS delivery FROM lark.events e "
    "JOIN lark.deliveries d ON d.event_id = e.id WHERE d.webhook_id = %s" % quote(hook_all))}

for kind, status, id_key in EVENTS:
    name = "%s.%s" % (kind, status)
    req = got.get(name)
    if req is None:
        t.ok(False, "%s arrived" % name)
        continue
    t.ok(req["signature_valid"], "%s: signature verifies with the documented algorithm" % name)
    t.is_(req["body"], stored[name]["body"].encode("utf-8"), "%s: body is the stored bytes" % name)
    t.is_(req["delivery"], stored[name]["delivery"], "%s: X-Lark-Delivery is the delivery id" % name)
    h = req["headers"]
    t.is_((h.get("Content-Type"), h.get("User-Agent"), h.get("X-Lark-Event")),
          ("application/json", "lark-webhooks/1.0", name), "%s: headers" % name)
    payload = json.loads(req["body"])
    t.is_(list(payload), ["event", "timestamp", "workflow", "data"], "%s: envelope keys in order" % name)
    t.is_(payload["workflow"], {"id": workflow, "name": "New User Signup",
                                "description": "Go to dashboard url and verify that you can sign up.",
                                "secret_context_names": ["dashboard_login"]},
          "%s: workflow block" % name)
    data = payload["data"]
    t.is_((list(data), data[id_key], data["status"], data["summary"]),
          ([id_key, "status", "started_at", "finished_at", "duration_ms", "summary"],
           run_ids[name], status, "summary of " + status), "%s: data block" % name)
    t.ok(isinstance(data["duration_ms"], int) and data["duration_ms"] >= 3000,
         "%s: duration_ms covers the run" % name, data)

copy = r.received("/copy")
t.is_([c["event"] for c in copy], ["workflow_execution.failure"], "a second webhook of the account got its own copy")
t.ok(copy and copy[0]["signature_valid"], "signed with its own secret")
t.ok(copy and copy[0]["delivery"] != stored["workflow_execution.failure"]["delivery"],
     "with its own delivery id")
t.is_([q["event"] for q in r.received("/unsubscribed")], ["workflow_repair.success"],
      "a webhook got only the one event it subscribed to, none of the other six")
t.is_(r.received("/paused"), [], "a paused webhook got nothing")
t.is_(deliveries_of(hook_paused), [], "and no delivery was queued for it")

attempt = attempts_of(stored["workflow_execution.success"]["delivery"])
t.is_([(a["attempt"], a["http_status"], a["error"]) for a in attempt], [(1, 200, None)],
      "one attempt is recorded, with its status")
t.is_(bytes.fromhex(attempt[0]["excerpt_hex"]) if attempt else None, b'{"received":true}',
      "the response excerpt is stored")

# A name that needs escaping still verifies over the raw bytes.
tricky = 'Say "hi" \\ back\nnew line \t tab 🎉 ünï'
wf2 = create_workflow(account, name=tricky, description=None, contexts=['a"b', "c\\d"])
run = finish_run(wf2, "workflow_execution", "success", 'summary "quoted"\n🎉')
dl = [d["id"] for d in deliveries_of(hook_all) if d["status"] != "succeeded"]
wait_for_status(dl)
req = [q for q in r.received("/all") if run.encode() in q["body"]]
t.is_(len(req), 1, "the tricky event arrived once")
if req:
    t.ok(req[0]["signature_valid"], "its signature verifies over the raw bytes")
    payload = json.loads(req[0]["body"].decode("utf-8"))
    t.is_((payload["workflow"]["name"], payload["workflow"]["secret_context_names"],
           payload["data"]["summary"]),
          (tricky, ['a"b', "c\\d"], 'summary "quoted"\n🎉'), "and its JSON round-trips")

r.close()
t.done()
