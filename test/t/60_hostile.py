"""Receivers that misbehave: the worker records the outcome, stays up (same
pid), ends every attempt within the timeout, keeps at most the 1 KiB
excerpt, retries per the schedule, and keeps delivering to good receivers.

The suite's settings: timeout 2s, retry_delays 300ms x 3.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import hostile  # noqa: E402
from lark_test import (Receiver, Tap, attempts_of, closed_port,  # noqa: E402
                       create_webhook, create_workflow, deliveries_of,
                       finish_run, new_account, psql, quote, rows, scalar,
                       set_settings, wait_for_status, wait_for_worker)

t = Tap()
pid = wait_for_worker()
set_settings(max_webhooks_per_account="100")

# behaviour -> (final status, attempts, what each attempt must show)
CASES = [
    ("never answers", hostile.never_answer, "failed", 4, "timed out"),
    ("trickles a byte a second", hostile.trickle, "failed", 4, "timed out"),
    ("301", hostile.status(301, b"Location: http://127.0.0.1:9/\r\n"), "failed", 4, "status 301"),
    ("302", hostile.status(302, b"Location: http://127.0.0.1:9/\r\n"), "failed", 4, "status 302"),
    ("307", hostile.status(307, b"Location: http://127.0.0.1:9/\r\n"), "failed", 4, "status 307"),
    ("308", hostile.status(308, b"Location: http://127.0.0.1:9/\r\n"), "failed", 4, "status 308"),
    ("404", hostile.status(404), "failed", 4, "status 404"),
    ("410", hostile.status(410), "failed", 4, "status 410"),
    ("429", hostile.status(429, b"Retry-After: 3600\r\n"), "failed", 4, "status 429"),
    ("500", hostile.status(500), "failed", 4, "status 500"),
    ("503", hostile.status(503), "failed", 4, "status 503"),
    ("200 with a 300 MB body", hostile.huge_body, "succeeded", 1, None),
    ("200 with an endless stream", hostile.endless, "succeeded", 1, None),
    ("200 with binary, invalid UTF-8", hostile.binary_body, "succeeded", 1, None),
    ("malformed headers", hostile.malformed_headers, "failed", 4, ""),
    ("connection reset", hostile.reset, "failed", 4, ""),
    ("closes without answering", hostile.close_silently, "failed", 4, ""),
]

account = new_account()
workflow = create_workflow(account)
servers = {}
hooks = {}
for name, behaviour, _, _, _ in CASES:
    servers[name] = hostile.HostileServer(behaviour)
    hooks[name], _ = create_webhook(account, servers[name].url(), ["workflow_execution.failure"])

# A good receiver beside them all.
good = Receiver()
good_hook, good_secret = create_webhook(account, good.url("/good"), ["workflow_execution.failure"])
good.route("/good", good_secret)

finish_run(workflow, "workflow_execution", "failure")
ids = {name: deliveries_of(hook)[0]["id"] for name, hook in hooks.items()}
good_id = deliveries_of(good_hook)[0]["id"]

good_done = wait_for_status([good_id], timeout=10)
t.is_([d["status"] for d in good_done], ["succeeded"], "the good receiver is served while the others misbehave")
still_open = scalar("SELECT count(*) FROM lark.deliveries WHERE id = ANY (ARRAY[%s]) AND status "
                    "IN ('pending', 'in_flight')" % ", ".join(quote(i) for i in ids.values()))
t.ok(still_open > 0, "it did not wait for them", still_open)

settled = {d["id"]: d for d in wait_for_status(list(ids.values()), timeout=120)}
for name, _, want_status, want_attempts, want_error in CASES:
    d = settled[ids[name]]
    att = attempts_of(ids[name])
    t.is_((d["status"], d["attempts"], len(att)), (want_status, want_attempts, want_attempts),
          "%s: %s after %d attempt(s)" % (name, want_status, want_attempts))
    t.ok(all(a["duration_ms"] < 2900 for a in att), "%s: every attempt ended within the timeout" % name,
         [a["duration_ms"] for a in att])
    t.ok(all(len(a["excerpt_hex"] or "") // 2 <= 1024 for a in att),
         "%s: at most 1 KiB of the response is kept" % name)
    if want_error is not None:
        t.ok(all(a["error"] and want_error in a["error"] for a in att),
             "%s: every attempt records why" % name, [a["error"] for a in att])

big = attempts_of(ids["200 with a 300 MB body"])
t.is_(len(big[0]["excerpt_hex"]) // 2 if big else None, 1024, "the huge body left exactly 1 KiB")
binary = attempts_of(ids["200 with binary, invalid UTF-8"])
t.ok(binary and bytes.fromhex(binary[0]["excerpt_hex"]).startswith(bytes(range(256))),
     "binary bytes are stored as they came")
t.ok(servers["301"].hits == 4 and all(s.hits <= 4 for s in servers.values()),
     "redirects were not followed, and nothing was attempted more than four times",
     {n: s.hits for n, s in servers.items()})
t.is_(wait_for_worker(), pid, "the worker is the same process throughout")

# 100 deliveries to a closed port, then a good one.
set_settings(retry_delays="")
dead_account = new_account()
dead_workflow = create_workflow(dead_account)
dead_hook, _ = create_webhook(dead_account, "http://127.0.0.1:%d/" % closed_port(),
                              ["workflow_generation.failure"])
psql("INSERT INTO lark.workflow_generations (workflow_id, status) "
     "SELECT %s, 'failure' FROM generate_series(1, 100)" % quote(dead_workflow))
dead_ids = [d["id"] for d in deliveries_of(dead_hook)]
good2_hook, good2_secret = create_webhook(dead_account, good.url("/after"), ["workflow_generation.success"])
good.route("/after", good2_secret)
finish_run(dead_workflow, "workflow_generation", "success")
good2 = deliveries_of(good2_hook)[0]["id"]
wait_for_status(dead_ids + [good2], timeout=60)
t.is_(scalar("SELECT count(*) FROM lark.delivery_attempts WHERE delivery_id = ANY (ARRAY[%s]) "
             "AND http_status IS NULL AND error IS NOT NULL" % ", ".join(quote(i) for i in dead_ids)),
      100, "100 failures to the closed port are recorded")
t.is_(rows("SELECT status FROM lark.deliveries WHERE id = %s" % quote(good2)), [{"status": "succeeded"}],
      "and the good one after them was delivered")
t.is_(len(good.received("/after")), 1, "once")
t.is_(wait_for_worker(), pid, "the worker is still the same process")

set_settings(retry_delays=None, max_webhooks_per_account=None)
for s in servers.values():
    s.close()
good.close()
t.done()
