"""Helpers for the worker tests: TAP output, SQL through psql, a receiver.

Every test talks to the throwaway cluster that test/run.sh (or demo.sh,
bench/run.sh) started, through the PGHOST/PGPORT/PGUSER it exported.  The
receiver is a real HTTP server on 127.0.0.1 that checks X-Lark-Signature
with the algorithm the user documentation gives, over the raw body bytes.
"""

import hashlib
import hmac
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid

PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
SECRET_LOG = os.path.join(os.environ.get("LARK_TMPDIR", "/tmp"), "seen_secrets.txt")


# --------------------------------------------------------------------------
# TAP
# --------------------------------------------------------------------------

class Tap:
    """A TAP producer: ok/is_ lines, a plan printed at the end."""

    def __init__(self):
        self.count = 0
        self.failures = 0

    def ok(self, cond, name, diag=None):
        self.count += 1
        print(("ok %d - %s" if cond else "not ok %d - %s") % (self.count, name))
        if not cond:
            self.failures += 1
            if diag is not None:
                for line in str(diag).splitlines() or [""]:
                    print("#   " + line)
        sys.stdout.flush()
        return cond

    def is_(self, got, expected, name):
        return self.ok(got == expected, name,
                       "got:      %r\nexpected: %r" % (got, expected))

    def diag(self, text):
        for line in str(text).splitlines():
            print("# " + line)
        sys.stdout.flush()

    def done(self):
        print("1..%d" % self.count)
        sys.exit(1 if self.failures else 0)


def wait_until(predicate, timeout=30.0, interval=0.05):
    """Poll predicate until it returns a true value or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------

class SqlError(Exception):
    def __init__(self, sqlstate, message):
        super().__init__("%s: %s" % (sqlstate, message))
        self.sqlstate = sqlstate
        self.message = message


def psql(sql, db="postgres"):
    """Run SQL; return its unaligned output, or raise SqlError."""
    proc = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-v", "VERBOSITY=verbose", "-d", db, "-c", sql],
        capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        match = re.search(r"ERROR:\s+([0-9A-Z]{5}):\s+(.*)", proc.stderr)
        if match:
            raise SqlError(match.group(1), match.group(2))
        raise SqlError("?????", proc.stderr.strip())
    return proc.stdout.strip()


def rows(sql, db="postgres"):
    """Run a query; return its rows as a list of dicts."""
    out = psql("SELECT coalesce(json_agg(q), '[]') FROM (%s) q" % sql, db)
    return json.loads(out)


def scalar(sql, db="postgres"):
    out = psql("SELECT to_json((%s))" % sql, db)
    return json.loads(out) if out else None


def quote(value):
    """A SQL literal."""
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def array(values):
    return "ARRAY[%s]::text[]" % ", ".join(quote(v) for v in values)


def new_account():
    return "acct_" + uuid.uuid4().hex[:12]


def remember_secret(secret):
    """Note a secret so that the final log scan can look for it."""
    with open(SECRET_LOG, "a") as f:
        f.write(secret + "\n")


def create_webhook(account, url, events, description=None):
    row = rows("SELECT * FROM lark.create_webhook(%s, %s, %s, %s)"
               % (quote(account), quote(url), array(events), quote(description)))[0]
    remember_secret(row["signing_secret"])
    return row["webhook_id"], row["signing_secret"]


def create_workflow(account, name="Signup", description="Sign up as a new user.",
                    contexts=("dashboard_login",)):
    return psql("INSERT INTO lark.workflows (account_id, name, description, "
                  "secret_context_names) VALUES (%s, %s, %s, %s) RETURNING id"
                  % (quote(account), quote(name), quote(description), array(contexts)))


RUN_TABLES = {
    "workflow_execution": "lark.workflow_executions",
    "workflow_generation": "lark.workflow_generations",
    "workflow_repair": "lark.workflow_repairs",
}


def finish_run(workflow_id, kind, status, summary="done"):
    """Insert a running run of kind, then move it to status; return its id."""
    table = RUN_TABLES[kind]
    run_id = psql("INSERT INTO %s (workflow_id, status, started_at) "
                    "VALUES (%s, 'running', now() - interval '3 seconds') RETURNING id"
                    % (table, quote(workflow_id)))
    psql("UPDATE %s SET status = %s, summary = %s WHERE id = %s"
         % (table, quote(status), quote(summary), quote(run_id)))
    return run_id


def deliveries_of(webhook_id):
    return rows("SELECT d.*, e.event FROM lark.deliveries d "
                "JOIN lark.events e ON e.id = d.event_id "
                "WHERE d.webhook_id = %s ORDER BY d.created_at, d.id" % quote(webhook_id))


def attempts_of(delivery_id):
    return rows("SELECT attempt, http_status, error, "
                "encode(response_excerpt, 'hex') AS excerpt_hex, duration_ms "
                "FROM lark.delivery_attempts WHERE delivery_id = %s ORDER BY attempt"
                % quote(delivery_id))


def wait_for_status(delivery_ids, statuses=("succeeded", "failed", "cancelled"),
                    timeout=60):
    """Wait until every delivery has one of statuses; return their rows."""
    ids = "ARRAY[%s]::text[]" % ", ".join(quote(i) for i in delivery_ids)

    def settled():
        got = rows("SELECT id, status, attempts FROM lark.deliveries "
                   "WHERE id = ANY (%s)" % ids)
        if len(got) == len(delivery_ids) and all(r["status"] in statuses for r in got):
            return got
        return None

    return wait_until(settled, timeout=timeout) or rows(
        "SELECT id, status, attempts FROM lark.deliveries WHERE id = ANY (%s)" % ids)


def worker_pid():
    """The delivery worker's pid, or None (also while the server restarts)."""
    try:
        return scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = 'lark_webhooks'")
    except SqlError:
        return None


def wait_for_worker(timeout=30):
    return wait_until(worker_pid, timeout=timeout)


def pg_ctl(*args):
    data = os.environ["LARK_PGDATA"]
    # LARK_PG_CTL_OPTS names the postgres to start (a valgrind wrapper,
    # for test/valgrind.sh).
    cmd = [os.path.join(PGBIN, "pg_ctl"), "-D", data,
        "-l", os.environ["LARK_SERVER_LOG"], "-w", "-t", "300"] + \
        os.environ.get("LARK_PG_CTL_OPTS", "").split() + list(args)
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=320)


def server_log():
    with open(os.environ["LARK_SERVER_LOG"], errors="replace") as f:
        return f.read()


def set_settings(**settings):
    """ALTER SYSTEM the given lark_webhooks settings and reload."""
    for name, value in settings.items():
        if value is None:
            psql("ALTER SYSTEM RESET lark_webhooks.%s" % name)
        else:
            psql("ALTER SYSTEM SET lark_webhooks.%s = %s" % (name, quote(value)))
    psql("SELECT pg_reload_conf()")
    time.sleep(0.3)


# --------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------

def documented_verify(body: bytes, signature: str, secret: str) -> bool:
    """Exactly the verify() of the user documentation."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class Receiver:
    """An HTTP server on loopback.  Each path has a secret and a behaviour.

    Behaviours (a callable or a name):
      "ok"            200
      "fail"          500
      ("fail", n)     500 for the first n requests, then 200
      ("slow", s)     sleep s seconds, then 200
      ("status", c)   answer with status c
    Every request is recorded with its raw body, headers, arrival time and
    whether its signature verified.
    """

    def __init__(self):
        self.routes = {}
        self.requests = []
        self.lock = threading.Lock()
        self.active = {}          # path -> requests being answered now
        self.most_active = {}     # path -> the most at any one time
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                receiver._handle(self)

            def do_GET(self):
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def route(self, path, secret, behaviour="ok"):
        with self.lock:
            self.routes[path] = {"secret": secret, "behaviour": behaviour, "hits": 0}
        return self.url(path)

    def set_secret(self, path, secret):
        with self.lock:
            self.routes[path]["secret"] = secret

    def _handle(self, h):
        arrived = time.time()
        length = int(h.headers.get("Content-Length", "0"))
        body = h.rfile.read(length)
        with self.lock:
            route = self.routes.get(h.path)
            if route:
                route["hits"] += 1
                hits = route["hits"]
            self.active[h.path] = self.active.get(h.path, 0) + 1
            self.most_active[h.path] = max(self.most_active.get(h.path, 0),
                                           self.active[h.path])
        signature = h.headers.get("X-Lark-Signature", "")
        valid = bool(route) and documented_verify(body, signature, route["secret"])
        record = {
            "path": h.path, "body": body, "headers": dict(h.headers.items()),
            "signature_valid": valid, "arrived": arrived,
            "delivery": h.headers.get("X-Lark-Delivery"),
            "event": h.headers.get("X-Lark-Event"),
        }
        with self.lock:
            self.requests.append(record)
            with open(SECRET_LOG, "a") as f:
                f.write(signature + "\n")

        status = 404
        if route:
            behaviour = route["behaviour"]
            if behaviour == "ok":
                status = 200
            elif behaviour == "fail":
                status = 500
            elif behaviour[0] == "fail":
                status = 500 if hits <= behaviour[1] else 200
            elif behaviour[0] == "slow":
                time.sleep(behaviour[1])
                status = 200
            elif behaviour[0] == "status":
                status = behaviour[1]
        reply = b'{"received":true}' if 200 <= status < 300 else b'{"error":"refused on purpose"}'
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(reply)))
            h.end_headers()
            h.wfile.write(reply)
        except OSError:
            pass
        finally:
            with self.lock:
                self.active[h.path] -= 1

    def received(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port():
    """A loopback port nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
