"""Outbound safety: by default the worker refuses loopback, private,
link-local (cloud metadata included), multicast and unspecified addresses,
judged on the address actually resolved at connect time.

Only loopback is ever connected to: the other ranges are refused before any
packet leaves, which is what is being tested.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import (Receiver, SqlError, Tap, attempts_of,  # noqa: E402
                       create_webhook, create_workflow, deliveries_of,
                       finish_run, new_account, psql, quote, set_settings,
                       wait_for_status)

t = Tap()
r = Receiver()
account = new_account()
ev = ["workflow_execution.success"]

# With the suite's allowed_networks (loopback) a loopback receiver works,
# through a literal address and through a name.
hook_literal, s1 = create_webhook(account, r.url("/literal"), ev)
r.route("/literal", s1)
hook_name, s2 = create_webhook(account, "http://localhost:%d/name" % r.port, ev)
r.route("/name", s2)

# Literal addresses in refused ranges are rejected at creation, allowed
# list or not, unless the list opens them.
REFUSED = ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://172.16.5.4/",
           "http://192.168.1.1/", "http://0.0.0.0/", "http://[fe80::1]/", "http://224.0.0.1/",
           "http://[::ffff:169.254.169.254]/", "http://100.64.0.1/", "http://[fd00::1]/"]
for url in REFUSED:
    try:
        create_webhook(account + "_x", url, ev)
        t.ok(False, "create_webhook refuses %s" % url)
    except SqlError as e:
        t.ok(e.sqlstate == "22023" and "refused address" in e.message,
             "create_webhook refuses %s" % url, e)

# Now the default: nothing allowed.
set_settings(allowed_networks="")
for url in ("http://127.0.0.1:9/", "http://[::1]:9/", "http://127.1.2.3/"):
    try:
        create_webhook(account + "_y", url, ev)
        t.ok(False, "by default create_webhook refuses %s" % url)
    except SqlError as e:
        t.is_(e.sqlstate, "22023", "by default create_webhook refuses %s" % url)

workflow = create_workflow(account)
finish_run(workflow, "workflow_execution", "success")
ids = [deliveries_of(h)[0]["id"] for h in (hook_literal, hook_name)]
settled = wait_for_status(ids, timeout=30)
t.is_(sorted(d["status"] for d in settled), ["failed", "failed"],
      "both deliveries fail while loopback is not allowed")
t.is_(r.received(), [], "and the receiver was never reached")
for hook, what in ((hook_literal, "127.0.0.1"), (hook_name, "localhost")):
    att = attempts_of(deliveries_of(hook)[0]["id"])
    t.ok(len(att) == 4 and all("refused by lark_webhooks" in (a["error"] or "")
                               and "loopback" in a["error"] for a in att),
         "%s: each attempt records the refusal and why" % what, [a["error"] for a in att])

# Open loopback again: the same webhooks deliver.
set_settings(allowed_networks="127.0.0.0/8, ::1/128")
finish_run(workflow, "workflow_execution", "success")
ids = [deliveries_of(h)[-1]["id"] for h in (hook_literal, hook_name)]
settled = wait_for_status(ids, timeout=30)
t.is_(sorted(d["status"] for d in settled), ["succeeded", "succeeded"],
      "with loopback allowed, a literal address and a name both deliver")

# Allowing loopback does not open the metadata address.
try:
    create_webhook(account + "_z", "http://169.254.169.254/", ev)
    t.ok(False, "metadata address still refused")
except SqlError as e:
    t.is_(e.sqlstate, "22023", "metadata address still refused with loopback allowed")

# Narrowing the list also stops requests over connections already open:
# the last delivery left a kept-alive connection to the receiver.
before = len(r.received())
set_settings(allowed_networks="")
finish_run(workflow, "workflow_execution", "success")
ids = [deliveries_of(h)[-1]["id"] for h in (hook_literal, hook_name)]
settled = wait_for_status(ids, timeout=30)
t.is_(sorted(d["status"] for d in settled), ["failed", "failed"],
      "after narrowing, deliveries over the pooled connection are refused")
t.is_(len(r.received()), before, "and nothing more reached the receiver")
set_settings(allowed_networks="127.0.0.0/8, ::1/128")

r.close()
t.done()
