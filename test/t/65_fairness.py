"""One receiver cannot take every slot.

lark_webhooks.max_concurrency_per_webhook caps the requests in flight to
one webhook: a slow receiver never sees more at once, and while a receiver
that never answers has a backlog, a healthy receiver is still served.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import hostile  # noqa: E402
from lark_test import (Receiver, Tap, create_webhook, create_workflow,  # noqa: E402
                       deliveries_of, finish_run, new_account, psql, quote,
                       scalar, set_settings, wait_for_status)

t = Tap()
r = Receiver()
set_settings(max_concurrency="4", max_concurrency_per_webhook="2")

# A slow receiver with a backlog sees at most two requests at once.
account = new_account()
hook, secret = create_webhook(account, r.url("/slow"), ["workflow_execution.success"])
r.route("/slow", secret, ("slow", 0.3))
workflow = create_workflow(account)
psql("INSERT INTO lark.workflow_executions (workflow_id, status) "
     "SELECT %s, 'success' FROM generate_series(1, 12)" % quote(workflow))
done = wait_for_status([d["id"] for d in deliveries_of(hook)], timeout=60)
t.is_(sorted(set(d["status"] for d in done)), ["succeeded"], "twelve deliveries to a slow receiver succeeded")
t.is_(r.most_active.get("/slow"), 2, "never more than two at once (max_concurrency_per_webhook = 2)")

# A receiver that never answers, with a backlog, and a healthy one after it.
dead = hostile.HostileServer(hostile.never_answer)
dead_account = new_account()
dead_hook, _ = create_webhook(dead_account, dead.url(), ["workflow_generation.failure"])
dead_workflow = create_workflow(dead_account)
psql("INSERT INTO lark.workflow_generations (workflow_id, status) "
     "SELECT %s, 'failure' FROM generate_series(1, 20)" % quote(dead_workflow))
dead_ids = [d["id"] for d in deliveries_of(dead_hook)]

ok_account = new_account()
ok_hook, ok_secret = create_webhook(ok_account, r.url("/healthy"), ["workflow_repair.success"])
r.route("/healthy", ok_secret)
finish_run(create_workflow(ok_account), "workflow_repair", "success")
healthy = wait_for_status([d["id"] for d in deliveries_of(ok_hook)], timeout=30)
still_open = scalar("SELECT count(*) FROM lark.deliveries WHERE id = ANY (ARRAY[%s]) "
                    "AND status IN ('pending', 'in_flight')" % ", ".join(quote(i) for i in dead_ids))
t.is_([d["status"] for d in healthy], ["succeeded"], "the healthy receiver was served")
t.ok(still_open >= 15, "while the dead receiver's backlog was still open (%d of 20)" % still_open)
t.ok(dead.hits <= 2 + 2, "the dead receiver never held more than its share of slots", dead.hits)

psql("SELECT lark.pause_webhook(%s)" % quote(dead_hook))
set_settings(max_concurrency=None, max_concurrency_per_webhook=None)
dead.close()
r.close()
t.done()
