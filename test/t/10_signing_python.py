"""lark.sign agrees with the documented Python verify(), byte for byte.

Bodies and secrets cover ASCII, quotes, backslashes, newlines, emoji and
other multi-byte UTF-8; lark.verify accepts what Python signs, and both
reject tampering.
"""
import hashlib
import hmac
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lark_test import Tap, documented_verify, psql, quote  # noqa: E402

t = Tap()

bodies = [
    '{"event":"workflow_execution.success"}',
    'He said "hi" \\ and left\nnext line\ttab',
    "emoji 🎉🚀 and ünïcödé and 日本語",
    "",
    "x" * 100000,
]
secrets = ["whsec_" + "ab" * 32, "clé secrète 🔑", "s"]

for i, body in enumerate(bodies):
    for j, secret in enumerate(secrets):
        sig_text = psql("SELECT lark.sign(%s, %s)" % (quote(body), quote(secret)))
        sig_bytea = psql("SELECT lark.sign(convert_to(%s, 'UTF8'), %s)" % (quote(body), quote(secret)))
        raw = body.encode("utf-8")
        t.ok(documented_verify(raw, sig_text, secret),
             "documented verify accepts lark.sign(text) for body %d, secret %d" % (i, j))
        t.is_(sig_bytea, sig_text, "bytea and text overloads agree for body %d, secret %d" % (i, j))

# lark.verify accepts what Python signs, and only that.
for i, body in enumerate(bodies[:3]):
    secret = secrets[1]
    py_sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    t.is_(psql("SELECT lark.verify(%s, %s, %s)" % (quote(body), quote(py_sig), quote(secret))),
          "t", "lark.verify accepts a Python signature for body %d" % i)
    t.is_(psql("SELECT lark.verify(%s, %s, %s)" % (quote(body + " "), quote(py_sig), quote(secret))),
          "f", "lark.verify rejects a tampered body %d" % i)
    t.ok(not documented_verify((body + " ").encode(), py_sig, secret),
         "documented verify rejects a tampered body %d" % i)

t.done()
