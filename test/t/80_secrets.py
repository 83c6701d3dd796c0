"""Secrets and signatures stay out of sight.

While deliveries are under way, pg_stat_activity.query of every backend is
sampled, and no signing secret or signature may appear in it.  (The server
log is checked for them after the whole suite, which runs with
log_min_messages = debug5: see test/run.sh and test/lib/scan_log.py.)
"""
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import (Receiver, Tap, create_webhook, create_workflow,  # noqa: E402
                       deliveries_of, new_account, psql, quote,
                       remember_secret, rows, wait_for_status)

t = Tap()
r = Receiver()
account = new_account()
secrets = []
paths = []
for i in range(3):
    path = "/s%d" % i
    hook, secret = create_webhook(account, r.url(path), ["workflow_execution.success"])
    secret = psql("SELECT lark.rotate_secret(%s)" % quote(hook))
    remember_secret(secret)
    r.route(path, secret)
    secrets.append(secret)
    paths.append((hook, path))

samples = []
stop = threading.Event()


def sample():
    while not stop.is_set() and len(samples) < 2000:
        samples.extend(q["query"] or "" for q in rows(
            "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()"))


sampler = threading.Thread(target=sample)
sampler.start()
workflow = create_workflow(account)
for _ in range(5):
    psql("INSERT INTO lark.workflow_executions (workflow_id, status) "
         "SELECT %s, 'success' FROM generate_series(1, 100)" % quote(workflow))
ids = [d["id"] for hook, _ in paths for d in deliveries_of(hook)]
done = wait_for_status(ids, timeout=60)
stop.set()
sampler.join(30)

t.is_(sorted(set(d["status"] for d in done)), ["succeeded"], "1,500 deliveries went out")
t.ok(all(q["signature_valid"] for q in r.received()), "each signed with the rotated secret")
signatures = {q["headers"]["X-Lark-Signature"] for q in r.received()}
t.ok(len(samples) > 20, "pg_stat_activity was sampled while they went out (%d rows)" % len(samples))
worker_queries = [s for s in samples if s.startswith("lark_webhooks:")]
t.ok(worker_queries, "the samples include the worker's activity", set(samples))
leaked = [s for s in samples if any(x in s for x in secrets) or any(x in s for x in signatures)]
t.is_(leaked, [], "no secret and no signature in any backend's pg_stat_activity.query")

r.close()
t.done()
