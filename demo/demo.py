"""The demo's script: webhooks, workflow runs, and what was delivered."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "lib"))
from lark_test import (Receiver, create_webhook, create_workflow, psql,  # noqa: E402
                       quote, rows, wait_until)


def show(title, sql):
    print("\n== " + title)
    sys.stdout.flush()
    subprocess.run(["psql", "-X", "-P", "pager=off", "-c", sql], check=True)


def step(text):
    print("-- " + text)
    sys.stdout.flush()


receiver = Receiver()
print("== receiver listening on 127.0.0.1:%d; it checks X-Lark-Signature "
      "with the documented HMAC-SHA256 over the raw body" % receiver.port)
print("== retry delays shortened to 2s, 4s, 8s for the demo (default 10s, 20s, 40s)")

account = "acct_demo"
all_events = psql("SELECT array_to_string(lark.event_types(), ',')").split(",")
ok_hook, ok_secret = create_webhook(account, receiver.url("/hooks/warehouse"), all_events,
                                    "data warehouse loader")
receiver.route("/hooks/warehouse", ok_secret)
bad_hook, bad_secret = create_webhook(account, receiver.url("/hooks/broken"),
                                      ["workflow_execution.failure"],
                                      "a receiver that always answers 500")
receiver.route("/hooks/broken", bad_secret, "fail")
print("\n== webhooks created (each signing secret is shown once; here: %s... and %s...)"
      % (ok_secret[:10], bad_secret[:10]))
show("lark.webhooks", "SELECT id, url, cardinality(events) AS events, active, description "
                      "FROM lark.webhooks ORDER BY created_at")

workflow = create_workflow(account, name="New User Signup",
                           description="Go to dashboard url and verify that you can sign up as a new user.")

step("execution 1: pending -> running -> success")
ex1 = psql("INSERT INTO lark.workflow_executions (workflow_id) VALUES (%s) RETURNING id" % quote(workflow))
psql("UPDATE lark.workflow_executions SET status = 'running', started_at = now() WHERE id = %s" % quote(ex1))
time.sleep(0.4)
psql("UPDATE lark.workflow_executions SET status = 'success', summary = 'All 12 steps passed.' "
     "WHERE id = %s" % quote(ex1))

step("execution 2: running -> failure (also goes to the broken receiver)")
ex2 = psql("INSERT INTO lark.workflow_executions (workflow_id, status, started_at) "
           "VALUES (%s, 'running', now()) RETURNING id" % quote(workflow))
time.sleep(0.3)
psql("UPDATE lark.workflow_executions SET status = 'failure', "
     "summary = 'The signup button did not respond after submission.' WHERE id = %s" % quote(ex2))

step("execution 3: running -> cancelled")
psql("INSERT INTO lark.workflow_executions (workflow_id, status, started_at) "
     "VALUES (%s, 'running', now()) RETURNING id" % quote(workflow))
psql("UPDATE lark.workflow_executions SET status = 'cancelled' WHERE workflow_id = %s "
     "AND status = 'running'" % quote(workflow))

step("a script generation that succeeds, and one that fails")
psql("INSERT INTO lark.workflow_generations (workflow_id, status, started_at) VALUES "
     "(%s, 'running', now()), (%s, 'running', now())" % (quote(workflow), quote(workflow)))
psql("UPDATE lark.workflow_generations SET status = CASE WHEN ctid = (SELECT min(ctid) FROM "
     "lark.workflow_generations) THEN 'success' ELSE 'failure' END, summary = 'generation finished'")

step("a repair that fixes the script")
psql("INSERT INTO lark.workflow_repairs (workflow_id, status, started_at, summary) VALUES "
     "(%s, 'running', now(), 'Selector for the signup button updated.')" % quote(workflow))
psql("UPDATE lark.workflow_repairs SET status = 'success'")

step("a transaction that rolls back: it sends nothing")
psql("BEGIN; UPDATE lark.workflow_executions SET status = 'running' WHERE id = %s; ROLLBACK;" % quote(ex1))


def unsettled():
    return rows("SELECT id FROM lark.deliveries WHERE status IN ('pending', 'in_flight')")


print("\n== waiting for the worker (the broken receiver takes 4 attempts over ~14 s)")
sys.stdout.flush()
start = time.monotonic()
wait_until(lambda: not unsettled(), timeout=90, interval=0.5)
print("   settled after %.1f s" % (time.monotonic() - start))

show("lark.deliveries",
     "SELECT d.id, e.event, w.description AS webhook, d.status, d.attempts, "
     "d.last_http_status AS last_http, d.last_error "
     "FROM lark.deliveries d JOIN lark.events e ON e.id = d.event_id "
     "JOIN lark.webhooks w ON w.id = d.webhook_id ORDER BY e.id, w.description")
show("lark.delivery_attempts",
     "SELECT a.delivery_id, a.attempt, to_char(a.started_at, 'HH24:MI:SS.MS') AS started, "
     "round(a.duration_ms::numeric, 1) AS ms, a.http_status, a.error, "
     "convert_from(a.response_excerpt, 'UTF8') AS response "
     "FROM lark.delivery_attempts a ORDER BY a.started_at")

print("\n== what the receiver got")
for req in receiver.received():
    print("   %s  %-30s  %-15s  signature %s  %d bytes" % (
        req["delivery"], req["event"], req["path"],
        "verified" if req["signature_valid"] else "INVALID", len(req["body"])))
print("\n== one body, as sent and signed:")
first = receiver.received("/hooks/warehouse")[0]
print("   " + first["body"].decode("utf-8"))

print("\n== the worker's log lines")
with open(os.environ["LARK_SERVER_LOG"]) as f:
    for line in f:
        if "] lark_webhooks " in line and ("LOG:" in line or "DETAIL:" in line):
            print("   " + line.rstrip())

valid = all(r["signature_valid"] for r in receiver.received())
receiver.close()
print("\n== %d requests received, %s" % (
    len(receiver.received()), "every signature verified" if valid else "SOME SIGNATURES FAILED"))
sys.exit(0 if valid else 1)
