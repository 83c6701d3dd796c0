"""The lark_webhooks benchmark; bench/run.sh starts it.

    python3 bench/bench.py full     every pass, one table, bench/RESULTS.md
    python3 bench/bench.py smoke    500 deliveries, one TAP line

run.sh has already started (or, for the smoke pass, may be reusing) a
cluster with the extension created in database "postgres", exported
PGHOST/PGPORT/PGUSER, and started nginx on 127.0.0.1:$LARK_BENCH_NGINX_PORT,
answering 200 to every POST and 500 under /fail.  Everything here talks to
127.0.0.1 only, and every wait is bounded in time.

Python standard library only.  SQL goes through one long-lived psql process
(Session), because starting psql costs about 10 ms, which would swamp both
the 20 ms polling and the latency figures.
"""

import datetime
import hashlib
import hmac
import http.server
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "lib"))
from lark_test import closed_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
DB = "postgres"  # the database the worker serves (lark_webhooks.database)
NGINX_PORT = int(os.environ.get("LARK_BENCH_NGINX_PORT", "0"))
WORK_DIR = os.environ.get("LARK_BENCH_WORK_DIR", "/tmp")
EVENT = "workflow_execution.success"

# Reference points from the issue, printed beside our figures.
REF_PGNET_RPS = "pg_net 0.20.4: 480 req/s"
REF_WRK = "wrk keep-alive ~88,000/s"


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# SQL through one psql process
# --------------------------------------------------------------------------

def quote(value):
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


class Session:
    """One psql process fed on stdin.

    After each statement we ask psql to \\echo a unique marker and read its
    output up to that marker: when the marker arrives, the statement (an
    autocommitted one: its COMMIT included) has returned to the client.
    stderr goes to a file, so that notices can never fill a pipe and block
    psql; with ON_ERROR_STOP an error ends psql, and we report that file.
    """

    def __init__(self, name="session", dbname=DB):
        self.err_path = os.path.join(WORK_DIR, "psql_%s_%s.err" % (name, uuid.uuid4().hex[:6]))
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(PGBIN, "psql"), "-X", "-q", "-A", "-t",
             "-v", "ON_ERROR_STOP=1", "-d", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
            text=True, bufsize=1)
        self.n = 0
        # Bound every statement, so that no wait here is unbounded.
        self.run("SET client_min_messages = warning")
        self.run("SET statement_timeout = '300s'")

    def run(self, sql):
        """Run SQL; return its output lines (unaligned, tuples only)."""
        self.n += 1
        marker = "__lark_bench_%d__" % self.n
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + marker + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError("psql ended: " + self._stderr())
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if line == "":
                raise BenchError("psql failed on %s: %s" % (sql[:200], self._stderr()))
            line = line.rstrip("\n")
            if line == marker:
                return lines
            lines.append(line)

    def value(self, sql):
        out = self.run(sql)
        return out[0] if out else None

    def timed(self, sql):
        """Run SQL; return (sent, returned) client clock times."""
        sent = time.time()
        self.run(sql)
        return sent, time.time()

    def _stderr(self):
        self.err.flush()
        with open(self.err_path) as f:
            return f.read().strip()[-2000:]

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.err.close()


# --------------------------------------------------------------------------
# A python receiver on loopback, for the latency and the burst passes
# --------------------------------------------------------------------------

class Receiver:
    """HTTP on 127.0.0.1: per path a secret and a delay before answering 200.

    Records for each request its arrival time (time.time(), the same clock
    the client-side commit times use), its delivery id and whether its
    signature verified.
    """

    def __init__(self):
        self.routes = {}
        self.arrivals = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the worker expects

            def log_message(self, *args):
                pass

            def do_POST(self):
                arrived = time.time()
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                route = receiver.routes.get(self.path)
                status = 404
                if route:
                    expected = hmac.new(route["secret"].encode(), body,
                                        hashlib.sha256).hexdigest()
                    valid = hmac.compare_digest(
                        expected, self.headers.get("X-Lark-Signature", ""))
                    with receiver.lock:
                        receiver.arrivals[self.headers.get("X-Lark-Delivery")] = {
                            "arrived": arrived, "path": self.path, "valid": valid}
                    if route["delay"]:
                        time.sleep(route["delay"])
                    status = 200
                reply = b"ok"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass

        class Server(http.server.ThreadingHTTPServer):
            # The default backlog of 5 drops SYNs when the worker opens 64
            # connections at once; each drop costs a 1 s retransmit.
            request_queue_size = 1024
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, path, delay=0.0):
        """Register path; return its URL.  The secret is set later."""
        self.routes[path] = {"secret": "", "delay": delay}
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def count(self, path):
        with self.lock:
            return sum(1 for a in self.arrivals.values() if a["path"] == path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def nginx_url(path):
    return "http://127.0.0.1:%d%s" % (NGINX_PORT, path)


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

def new_account(db, urls):
    """An account with one webhook per URL, all subscribed to EVENT, and one
    workflow; returns (workflow_id, [(webhook_id, secret)])."""
    account = "acct_bench_" + uuid.uuid4().hex[:10]
    hooks = []
    for url in urls:
        line = db.value("SELECT webhook_id || ' ' || signing_secret "
                        "FROM lark.create_webhook(%s, %s, ARRAY[%s])"
                        % (quote(account), quote(url), quote(EVENT)))
        hooks.append(tuple(line.split(" ", 1)))
    wf = db.value("INSERT INTO lark.workflows (account_id, name, description) "
                  "VALUES (%s, 'Bench', 'Benchmark workflow') RETURNING id"
                  % quote(account))
    return wf, hooks


def insert_running(db, wf, prefix, n):
    """n executions of wf in status running, ids prefix1..prefixN."""
    db.run("INSERT INTO lark.workflow_executions (id, workflow_id, status, started_at) "
           "SELECT %s || g, %s, 'running', now() FROM generate_series(1, %d) g"
           % (quote(prefix), quote(wf), n))


def last_event_id(db):
    return int(db.value("SELECT coalesce(max(id), 0) FROM lark.events"))


def batch_filter(wf, lo):
    """SQL condition on lark.deliveries d: the deliveries of wf's events after lo."""
    return ("d.event_id > %d AND d.event_id IN (SELECT e.id FROM lark.events e "
            "WHERE e.id > %d AND e.workflow_id = %s)" % (lo, lo, quote(wf)))


def open_deliveries_sql(hooks):
    """SQL: does any delivery to these webhooks still wait (pending or in
    flight)?  EXISTS over the extension's partial index of open deliveries
    stops at the first row, so a poll costs well under a millisecond even
    with 20,000 queued; counting the whole batch every 20 ms instead took
    25-45 ms a poll, one of our two CPUs, and slowed the worker it measured."""
    ids = ", ".join(quote(h) for h in hooks)
    return ("SELECT EXISTS (SELECT 1 FROM lark.deliveries d "
            "WHERE d.webhook_id IN (%s) AND d.status IN ('pending', 'in_flight'))" % ids)


def wait_settled(db, hooks, wf, lo, expected, timeout, done_statuses=("succeeded",),
                 interval=0.02):
    """Poll every interval until no delivery to hooks is open, or timeout
    passes; then count the batch (wf's events after lo) once.  Returns
    (client time the empty queue was seen, or None on timeout,
    (deliveries in the batch, of which not in done_statuses))."""
    poll = open_deliveries_sql(hooks)
    deadline = time.time() + timeout
    done_at = None
    while True:
        busy = db.value(poll) == "t"
        now = time.time()
        if not busy:
            done_at = now
            break
        if now >= deadline:
            break
        time.sleep(interval)
    statuses = ", ".join(quote(s) for s in done_statuses)
    total, not_done = (int(x) for x in db.value(
        "SELECT count(*), count(*) FILTER (WHERE d.status NOT IN (%s)) "
        "FROM lark.deliveries d WHERE %s" % (statuses, batch_filter(wf, lo))).split("|"))
    if total < expected or not_done > 0:
        done_at = None
    return done_at, (total, not_done)


def attempt_counts(db, wf, lo):
    """(attempts, attempts with an error, of which timeouts) for a batch."""
    line = db.value(
        "SELECT count(*), count(*) FILTER (WHERE a.error IS NOT NULL), "
        "count(*) FILTER (WHERE a.error ~* 'time.?out|timed out') "
        "FROM lark.delivery_attempts a JOIN lark.deliveries d ON d.id = a.delivery_id "
        "WHERE " + batch_filter(wf, lo))
    return tuple(int(x) for x in line.split("|"))


def worker_pid(db):
    pid = db.value("SELECT pid FROM pg_stat_activity WHERE backend_type = 'lark_webhooks'")
    if not pid:
        raise BenchError("no lark_webhooks worker in pg_stat_activity")
    return int(pid)


def vm_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError("no %s for pid %d" % (field, pid))


def analyze(db):
    # After bulk set-up the planner should see the tables as they are, as
    # autovacuum would soon arrange; otherwise we would time a stale plan.
    db.run("ANALYZE lark.workflow_executions, lark.events, lark.deliveries, "
           "lark.delivery_attempts, lark.webhooks, lark.workflows")


# --------------------------------------------------------------------------
# The passes
# --------------------------------------------------------------------------

def throughput(db, executions, timeout=120.0, paths=("/t1", "/t2", "/t3", "/t4", "/t5")):
    """Complete `executions` runs in one UPDATE; each has len(paths) webhooks
    at nginx.  Timed from the UPDATE's commit (client clock when psql
    returned it) to the first poll that finds no delivery open, after which
    the batch is checked to be all succeeded."""
    wf, hooks = new_account(db, [nginx_url(p) for p in paths])
    hooks = [h for h, _ in hooks]
    insert_running(db, wf, "exec_tp_%s_" % uuid.uuid4().hex[:6], executions)
    analyze(db)
    lo = last_event_id(db)
    expected = executions * len(paths)
    sent, committed = db.timed("UPDATE lark.workflow_executions SET status = 'success' "
                               "WHERE workflow_id = %s AND status = 'running'" % quote(wf))
    done_at, (total, open_) = wait_settled(db, hooks, wf, lo, expected, timeout)
    attempts, failed, timeouts = attempt_counts(db, wf, lo)
    result = {"deliveries": expected, "enqueued": total, "open": open_,
              "enqueue_s": committed - sent, "attempts": attempts,
              "failed_attempts": failed, "timeouts": timeouts, "wf": wf}
    if done_at is None:
        result["seconds"] = None
        result["rate"] = None
    else:
        result["seconds"] = done_at - committed
        result["rate"] = expected / result["seconds"]
    return result


def run_wrk(db):
    """wrk against the same nginx: POST, keep-alive, 64 connections, with a
    real event body and our headers, so that it sends what the worker sends."""
    # The body the triggers would build for one of our executions.
    body = db.value("SELECT lark._event_body(%s, now(), 'wf_000000000000000000000000', "
                    "'Bench', 'Benchmark workflow', '{}', 'execution_id', "
                    "'exec_tp_000000_1', 'success', now(), now(), NULL)" % quote(EVENT))
    script = os.path.join(WORK_DIR, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write("wrk.body = [==[%s]==]\n" % body)
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write('wrk.headers["X-Lark-Signature"] = "%s"\n' % ("0" * 64))
        f.write('wrk.headers["X-Lark-Event"] = "%s"\n' % EVENT)
        f.write('wrk.headers["X-Lark-Delivery"] = "dlv_000000000000000000000000"\n')
    proc = subprocess.run(["wrk", "-t2", "-c64", "-d5s", "-s", script, nginx_url("/wrk")],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Requests/sec:\s+([0-9.]+)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise BenchError("wrk failed: " + proc.stdout + proc.stderr)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", proc.stdout)
    return float(match.group(1)), int(errors.group(1)) if errors else 0


def pgbench_run(seconds, script, clients=2, dbname=DB):
    cmd = [os.path.join(PGBIN, "pgbench"), "-n", "-c", str(clients), "-j", str(clients),
           "-T", str(seconds), "-f", script, dbname]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise BenchError("pgbench failed: " + proc.stdout[-1500:] + proc.stderr[-1500:])
    txns = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
    return float(match.group(1)), int(txns.group(1))


def set_triggers(db, on):
    db.run("ALTER TABLE lark.workflow_executions %s TRIGGER USER"
           % ("ENABLE" if on else "DISABLE"))


IDLE_DB = "lark_bench_idle"


def trigger_alone(db, script, seconds):
    """Diagnostic for 2a: the same pgbench runs in a database the worker
    does not serve (it serves lark_webhooks.database only), so that the
    triggers queue their deliveries and nobody sends them.  Without / with
    triggers there is the cost of the triggers alone, with no worker
    competing for the CPUs."""
    db.run("DROP DATABASE IF EXISTS " + IDLE_DB)
    db.run("CREATE DATABASE " + IDLE_DB)
    idle = Session("idle", IDLE_DB)
    try:
        idle.run("CREATE EXTENSION lark_webhooks")
        wf, _ = new_account(idle, [nginx_url("/i%d" % i) for i in range(1, 6)])
        idle.run("CREATE SEQUENCE public.lark_bench_seq")
        insert_running(idle, wf, "exec_pgb_", 80000)
        idle.run("VACUUM ANALYZE lark.workflow_executions")
        analyze(idle)
        idle.run("CHECKPOINT")
        res = {"off": [], "on": []}
        for mode in ("off", "on", "off", "on"):
            set_triggers(idle, mode == "on")
            res[mode].append(pgbench_run(seconds // 2, script, dbname=IDLE_DB))
        queued = int(idle.value("SELECT count(*) FROM lark.deliveries"))
        res["queued"] = queued
    finally:
        idle.close()
    db.run("DROP DATABASE IF EXISTS " + IDLE_DB)
    return res


def trigger_cost(db, seconds=10, rows=150000):
    """(a) pgbench, each transaction completing one execution that 5 webhooks
    subscribe to, with and without the triggers; (b) 10,000 completions in
    one UPDATE, with and without."""
    wf, hooks = new_account(db, [nginx_url("/p%d" % i) for i in range(1, 6)])
    hooks = [h for h, _ in hooks]
    # A sequence hands each transaction its own running execution, so that
    # every transaction really makes a transition (random ids would collide).
    db.run("DROP SEQUENCE IF EXISTS public.lark_bench_seq")
    db.run("CREATE SEQUENCE public.lark_bench_seq")
    insert_running(db, wf, "exec_pgb_", rows)
    # Two sets of 10,000 for (b), in workflows of the same account.
    wf_off = db.value("INSERT INTO lark.workflows (account_id, name) "
                      "SELECT account_id, 'Bench bulk off' FROM lark.workflows "
                      "WHERE id = %s RETURNING id" % quote(wf))
    wf_on = db.value("INSERT INTO lark.workflows (account_id, name) "
                     "SELECT account_id, 'Bench bulk on' FROM lark.workflows "
                     "WHERE id = %s RETURNING id" % quote(wf))
    insert_running(db, wf_off, "exec_bulk_off_", 10000)
    insert_running(db, wf_on, "exec_bulk_on_", 10000)
    db.run("VACUUM ANALYZE lark.workflow_executions")
    analyze(db)

    script = os.path.join(WORK_DIR, "complete_one.sql")
    with open(script, "w") as f:
        # One statement: the CTE calls nextval once, and the join turns into
        # an index lookup of that one id.
        f.write("WITH n AS (SELECT nextval('public.lark_bench_seq') AS v) "
                "UPDATE lark.workflow_executions e SET status = 'success' "
                "FROM n WHERE e.id = 'exec_pgb_' || n.v AND e.status = 'running';\n")

    def completed():
        return int(db.value("SELECT count(*) FROM lark.workflow_executions "
                            "WHERE workflow_id = %s AND status = 'success'" % quote(wf)))

    def measured(secs):
        """(tps, transactions, real transitions, deliveries queued and
        whether they were all delivered afterwards)."""
        lo = last_event_id(db)
        before = completed()
        tps, txns = pgbench_run(secs, script)
        moved = completed() - before
        # The worker delivered during the run, as it would in production;
        # let it finish before the next run, so that no run pays for
        # another's backlog.
        done_at, (queued, _) = wait_settled(db, hooks, wf, lo, 0, 180)
        return tps, txns, moved, queued, done_at is not None

    res = {"off": [], "on": []}
    set_triggers(db, False)
    pgbench_run(2, script)  # warm-up: caches, connections; not reported
    db.run("CHECKPOINT")  # so that no run inherits the set-up's checkpoint
    # Alternate, half the time each, so that drift (checkpoints, autovacuum,
    # a noisy neighbour) falls on both sides alike.
    for mode in ("off", "on", "off", "on"):
        set_triggers(db, mode == "on")
        res[mode].append(measured(seconds // 2))
    res["idle"] = trigger_alone(db, script, seconds)

    # (b) one statement, 10,000 completions, client-side time of the
    # autocommitted UPDATE (its commit included).
    set_triggers(db, False)
    s, c = db.timed("UPDATE lark.workflow_executions SET status = 'success' "
                    "WHERE workflow_id = %s AND status = 'running'" % quote(wf_off))
    res["bulk_off"] = c - s
    set_triggers(db, True)
    lo = last_event_id(db)
    s, c = db.timed("UPDATE lark.workflow_executions SET status = 'success' "
                    "WHERE workflow_id = %s AND status = 'running'" % quote(wf_on))
    res["bulk_on"] = c - s
    # 50,000 deliveries to drain: a second throughput figure, for free.
    done_at, _ = wait_settled(db, hooks, wf_on, lo, 50000, 180)
    res["bulk_drain_rate"] = 50000 / (done_at - c) if done_at else None
    return res


def latency(db, receiver, events=200, every=0.05):
    """One event every 50 ms to a receiver on loopback, each timed from its
    commit to its arrival.

    The commit time is the client clock right after psql returned the
    autocommitted UPDATE (Session.run waits for the marker psql echoes after
    the statement's result).  That instant is after the commit, by the
    return trip server -> psql -> pipe (well under a millisecond), so the
    figure errs, if at all, slightly low by that much.  The time the UPDATE
    took, commit included, is reported separately.  Arrival is time.time()
    in the receiver's thread of this same process: one clock for both."""
    url = receiver.route("/latency")
    wf, hooks = new_account(db, [url])
    receiver.routes["/latency"]["secret"] = hooks[0][1]
    insert_running(db, wf, "exec_lat_", events)
    analyze(db)
    lo = last_event_id(db)
    committed = {}
    round_trips = []
    start = time.time() + 0.2
    for i in range(1, events + 1):
        pause = start + i * every - time.time()
        if pause > 0:
            time.sleep(pause)
        s, c = db.timed("UPDATE lark.workflow_executions SET status = 'success' "
                        "WHERE id = 'exec_lat_%d'" % i)
        committed["exec_lat_%d" % i] = c
        round_trips.append(c - s)
    deadline = time.time() + 30
    while receiver.count("/latency") < events and time.time() < deadline:
        time.sleep(0.02)
    rows = db.run("SELECT d.id || '|' || e.runnable_id FROM lark.deliveries d "
                  "JOIN lark.events e ON e.id = d.event_id WHERE " + batch_filter(wf, lo))
    samples = []
    invalid = 0
    with receiver.lock:
        for line in rows:
            delivery, runnable = line.split("|", 1)
            arrival = receiver.arrivals.get(delivery)
            if arrival:
                samples.append((arrival["arrived"] - committed[runnable]) * 1000)
                invalid += not arrival["valid"]
    samples.sort()
    round_trips.sort()
    return {"received": len(samples), "events": events, "invalid": invalid,
            "p50": percentile(samples, 50), "p99": percentile(samples, 99),
            "max": samples[-1] if samples else None,
            "update_p50": percentile([r * 1000 for r in round_trips], 50)}


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-p * len(sorted_values) // 100))
    return sorted_values[int(rank) - 1]


def burst(db, receiver, executions=1000, delay=0.05):
    url = receiver.route("/burst", delay=delay)
    wf, hooks = new_account(db, [url])
    receiver.routes["/burst"]["secret"] = hooks[0][1]
    insert_running(db, wf, "exec_burst_", executions)
    analyze(db)
    lo = last_event_id(db)
    _, committed = db.timed("UPDATE lark.workflow_executions SET status = 'success' "
                            "WHERE workflow_id = %s AND status = 'running'" % quote(wf))
    done_at, (total, open_) = wait_settled(db, [hooks[0][0]], wf, lo, executions, 120)
    attempts, failed, timeouts = attempt_counts(db, wf, lo)
    return {"seconds": done_at - committed if done_at else None, "open": open_,
            "attempts": attempts, "failed_attempts": failed, "timeouts": timeouts,
            "received": receiver.count("/burst"), "executions": executions}


def memory(db, chunks=10, per_chunk=2000):
    """Worker RSS before and after chunks x per_chunk x 5 deliveries: two
    webhooks answered 200 by nginx, two answered 500, one refused."""
    # No retries, so that failures settle at once and the pass stays quick.
    db.run("ALTER SYSTEM SET lark_webhooks.retry_delays = ''")
    db.run("ALTER SYSTEM SET lark_webhooks.timeout = '2s'")
    db.run("SELECT pg_reload_conf()")
    time.sleep(0.5)
    refused = "http://127.0.0.1:%d/m5" % closed_port()
    wf, hooks = new_account(db, [nginx_url("/m1"), nginx_url("/m2"),
                                 nginx_url("/fail/m3"), nginx_url("/fail/m4"), refused])
    hooks = [h for h, _ in hooks]
    pid = worker_pid(db)
    before = vm_kb(pid, "VmRSS")
    # VmRSS counts the pages of shared_buffers this process has touched
    # (RssShmem), which grow towards shared_buffers as the tables grow and
    # are no leak; RssAnon is the worker's private memory, where one would be.
    anon_before = vm_kb(pid, "RssAnon")
    counts = {"succeeded": 0, "failed": 0}
    settled = True
    started = time.time()
    for chunk in range(chunks):
        prefix = "exec_mem_%s_%d_" % (wf[-8:], chunk)
        insert_running(db, wf, prefix, per_chunk)
        lo = last_event_id(db)
        db.run("UPDATE lark.workflow_executions SET status = 'success' "
               "WHERE workflow_id = %s AND status = 'running'" % quote(wf))
        done_at, _ = wait_settled(db, hooks, wf, lo, per_chunk * 5, 120,
                                  done_statuses=("succeeded", "failed"))
        if done_at is None:
            settled = False
            break
    for line in db.run("SELECT d.status, count(*) FROM lark.deliveries d "
                       "JOIN lark.events e ON e.id = d.event_id "
                       "WHERE e.workflow_id = %s GROUP BY d.status" % quote(wf)):
        status, n = line.split("|")
        counts[status] = int(n)
    elapsed = time.time() - started
    pid_after = worker_pid(db)
    after = vm_kb(pid_after, "VmRSS") if pid_after == pid else None
    hwm = vm_kb(pid_after, "VmHWM") if pid_after == pid else None
    anon_after = vm_kb(pid_after, "RssAnon") if pid_after == pid else None
    shmem_after = vm_kb(pid_after, "RssShmem") if pid_after == pid else None
    db.run("ALTER SYSTEM RESET lark_webhooks.retry_delays")
    db.run("ALTER SYSTEM RESET lark_webhooks.timeout")
    db.run("SELECT pg_reload_conf()")
    return {"before_kb": before, "after_kb": after, "hwm_kb": hwm, "settled": settled,
            "anon_before_kb": anon_before, "anon_after_kb": anon_after,
            "shmem_after_kb": shmem_after,
            "counts": counts, "total": chunks * per_chunk * 5, "seconds": elapsed,
            "same_pid": pid_after == pid}


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

def machine(db):
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    ncpu = len(os.sched_getaffinity(0))
    return "%d x %s, %.1f GiB RAM, %s %s, PostgreSQL %s" % (
        ncpu, model, mem_kb / 1048576, platform.system(), platform.release(),
        db.value("SHOW server_version"))


def fmt(value, spec="{:,.0f}", none="n/a"):
    return none if value is None else spec.format(value)


def verdict(ok):
    return "yes" if ok else "NO"


def build_table(r):
    rows = []
    tp = r["throughput"]
    rows.append(("1", "throughput: %s deliveries (4,000 x 5), commit -> all succeeded"
                 % fmt(tp["deliveries"]),
                 "%s /s (%s s)" % (fmt(tp["rate"]), fmt(tp["seconds"], "{:.2f}")),
                 ">= 3,000/s, aim 10,000", REF_PGNET_RPS,
                 verdict(tp["rate"] is not None and tp["rate"] >= 3000)))
    rows.append(("1", "failed attempts (delivery_attempts.error not null)",
                 fmt(tp["failed_attempts"]), "0", "",
                 verdict(tp["failed_attempts"] == 0 and tp["rate"] is not None)))
    rows.append(("1", "wrk -t2 -c64 -d5s, POST keep-alive, same nginx",
                 "%s req/s" % fmt(r["wrk"][0]), "", REF_WRK, ""))
    tc = r["trigger"]
    off = sum(x[0] for x in tc["off"]) / len(tc["off"])
    on = sum(x[0] for x in tc["on"]) / len(tc["on"])
    ratio_a = off / on if on else None
    rows.append(("2a", "pgbench 2 clients, 1 completion/txn, 5 webhooks, 2 x %d s "
                 "alternating: tps without / with triggers (worker delivering)"
                 % (r["pgbench_seconds"] // 2),
                 "%s / %s = %sx" % (fmt(off), fmt(on), fmt(ratio_a, "{:.2f}")),
                 "<= 1.3x", "pg_net 1.25-1.44x", verdict(ratio_a is not None and ratio_a <= 1.3)))
    idle = tc["idle"]
    i_off = sum(x[0] for x in idle["off"]) / len(idle["off"])
    i_on = sum(x[0] for x in idle["on"]) / len(idle["on"])
    rows.append(("2a'", "diagnostic: same in a database the worker does not serve "
                 "(triggers alone, nothing sent)",
                 "%s / %s = %sx" % (fmt(i_off), fmt(i_on), fmt(i_off / i_on if i_on else None,
                                                              "{:.2f}")),
                 "", "", ""))
    ratio_b = tc["bulk_on"] / tc["bulk_off"] if tc["bulk_off"] else None
    rows.append(("2b", "10,000 completions in one UPDATE (x 5 webhooks): "
                 "without / with triggers",
                 "%s / %s ms = %sx" % (fmt(tc["bulk_off"] * 1000), fmt(tc["bulk_on"] * 1000),
                                        fmt(ratio_b, "{:.1f}")),
                 "", "pg_net ~16x", ""))
    lt = r["latency"]
    rows.append(("3", "latency commit -> arrival, %d events every 50 ms: p50 / p99"
                 % lt["events"],
                 "%s / %s ms" % (fmt(lt["p50"], "{:.1f}"), fmt(lt["p99"], "{:.1f}")),
                 "<= 20 / <= 100 ms", "pg_net 725 / 1,957 ms",
                 verdict(lt["received"] == lt["events"] and lt["p50"] <= 20 and lt["p99"] <= 100)))
    b = r["burst"]
    rows.append(("4", "burst: 1,000 completions in one UPDATE, receiver answers after 50 ms: "
                 "time to drain",
                 "%s s, %d timeouts, %d failed attempts" % (
                     fmt(b["seconds"], "{:.2f}"), b["timeouts"], b["failed_attempts"]),
                 "0 timeouts, 0 failed", "",
                 verdict(b["seconds"] is not None and b["timeouts"] == 0
                         and b["failed_attempts"] == 0)))
    m = r["memory"]
    mb = lambda kb: kb / 1024 if kb is not None else None  # noqa: E731
    growth = (m["after_kb"] - m["before_kb"]) / 1024 if m["after_kb"] is not None else None
    rows.append(("5", "worker VmRSS before / after %s deliveries (2xx, 500, refused)"
                 % fmt(m["total"]),
                 "%s / %s MB (%s MB)" % (fmt(mb(m["before_kb"]), "{:.1f}"),
                                         fmt(mb(m["after_kb"]), "{:.1f}"),
                                         fmt(growth, "{:+.1f}")),
                 "growth < 10 MB", "",
                 verdict(growth is not None and growth < 10 and m["settled"])))
    anon = (m["anon_after_kb"] - m["anon_before_kb"]) / 1024 if m["anon_after_kb"] is not None else None
    rows.append(("5'", "of which private (RssAnon) before / after; the rest is "
                 "shared_buffers pages touched (RssShmem %s MB after)"
                 % fmt(mb(m["shmem_after_kb"]), "{:.0f}"),
                 "%s / %s MB (%s MB)" % (fmt(mb(m["anon_before_kb"]), "{:.1f}"),
                                         fmt(mb(m["anon_after_kb"]), "{:.1f}"),
                                         fmt(anon, "{:+.1f}")),
                 "growth < 10 MB", "",
                 verdict(anon is not None and anon < 10 and m["settled"])))

    header = ("#", "measure", "lark_webhooks", "target", "reference", "met")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]

    def line(row):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return out


def notes(r):
    tp, tc, lt, b, m = r["throughput"], r["trigger"], r["latency"], r["burst"], r["memory"]
    out = [
        "- 1: the enqueueing UPDATE itself took %s ms; %s attempts for %s deliveries."
        % (fmt(tp["enqueue_s"] * 1000), fmt(tp["attempts"]), fmt(tp["deliveries"])),
        "- 1: wrk got %d non-2xx answers." % r["wrk"][1],
        "- 2a: tps of each run without %s, with %s; transactions / real transitions "
        "without %s / %s, with %s / %s; the %s deliveries queued by the runs with "
        "triggers %s."
        % (", ".join(fmt(x[0]) for x in tc["off"]), ", ".join(fmt(x[0]) for x in tc["on"]),
           fmt(sum(x[1] for x in tc["off"])), fmt(sum(x[2] for x in tc["off"])),
           fmt(sum(x[1] for x in tc["on"])), fmt(sum(x[2] for x in tc["on"])),
           fmt(sum(x[3] for x in tc["on"])),
           "were all delivered after each run" if all(x[4] for x in tc["on"])
           else "were NOT all delivered within 180 s"),
        "- 2a': tps of each run without %s, with %s; %s deliveries queued, none sent."
        % (", ".join(fmt(x[0]) for x in tc["idle"]["off"]),
           ", ".join(fmt(x[0]) for x in tc["idle"]["on"]), fmt(tc["idle"]["queued"])),
        "- 2b: the 50,000 deliveries of the bulk UPDATE drained at %s /s."
        % fmt(tc["bulk_drain_rate"]),
        "- 3: %d of %d events arrived, %d with a bad signature; max %s ms; the "
        "UPDATE's own round trip (commit included) p50 %s ms."
        % (lt["received"], lt["events"], lt["invalid"], fmt(lt["max"], "{:.1f}"),
           fmt(lt["update_p50"], "{:.1f}")),
        "- 4: the receiver got %d requests for %d deliveries (%d attempts)."
        % (b["received"], b["executions"], b["attempts"]),
        "- 5: %s succeeded, %s failed (no retries: lark_webhooks.retry_delays = ''), "
        "in %s s; VmHWM after %s MB%s."
        % (fmt(m["counts"].get("succeeded", 0)), fmt(m["counts"].get("failed", 0)),
           fmt(m["seconds"], "{:.1f}"),
           fmt(m["hwm_kb"] / 1024 if m["hwm_kb"] else None, "{:.1f}"),
           "" if m["same_pid"] else "; THE WORKER RESTARTED during the pass"),
    ]
    return out


def full():
    db = Session("bench")
    pid = worker_pid(db)
    results = {"pgbench_seconds": 10}
    desc = machine(db)
    started = time.time()

    def step(name, fn):
        t = time.time()
        print("bench: %s ..." % name, end="", flush=True)
        value = fn()
        print(" %.1f s" % (time.time() - t), flush=True)
        return value

    receiver = Receiver()
    try:
        # wrk first, while nothing else runs: it is the ceiling of the
        # HTTP path alone.
        results["wrk"] = step("wrk", lambda: run_wrk(db))
        results["throughput"] = step("throughput (20,000 deliveries)", lambda: throughput(db, 4000))
        results["trigger"] = step("trigger cost (pgbench, bulk)",
                                  lambda: trigger_cost(db, results["pgbench_seconds"]))
        results["latency"] = step("latency (200 events)", lambda: latency(db, receiver))
        results["burst"] = step("burst (1,000, 50 ms receiver)", lambda: burst(db, receiver))
        results["memory"] = step("memory (100,000 deliveries)", lambda: memory(db))
    finally:
        receiver.close()
    if worker_pid(db) != pid:
        print("bench: note: the worker restarted during the run", flush=True)
    db.close()

    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = "lark_webhooks benchmark, %s" % stamp
    config = ("fsync on (default), lark_webhooks.max_concurrency = 64, "
              "nginx-light with 2 workers on 127.0.0.1; whole run %.0f s"
              % (time.time() - started))
    table = build_table(results)
    print()
    print(title)
    print("machine: " + desc)
    print(config)
    print()
    print("\n".join(table))
    print()
    print("\n".join(notes(results)))

    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("# %s\n\n" % title)
        f.write("Machine: %s\n\n%s\n\n" % (desc, config))
        f.write("\n".join(table) + "\n\n")
        f.write("\n".join(notes(results)) + "\n\n")
        f.write("Produced by `make bench`; see bench/README.md for what each figure means.\n")
    return 0


def smoke():
    """500 deliveries to nginx; one TAP line; exit 0 only if all succeeded
    with no failed attempt."""
    db = Session("smoke")
    try:
        r = throughput(db, 100, timeout=60)
    except BenchError as e:
        print("not ok - bench smoke: %s" % str(e).splitlines()[0])
        return 1
    finally:
        db.close()
    good = r["seconds"] is not None and r["failed_attempts"] == 0
    if good:
        print("ok - bench smoke: %d deliveries succeeded in %.2f s (%.0f/s), 0 failed attempts"
              % (r["deliveries"], r["seconds"], r["rate"]))
    else:
        print("not ok - bench smoke: %d of %d deliveries queued, %d not succeeded, "
              "%d failed attempts" % (r["enqueued"], r["deliveries"], r["open"],
                                      r["failed_attempts"]))
    return 0 if good else 1


def main():
    # run.sh stops us with TERM on INT or failure: exit through the finally
    # blocks and subprocess.run's clean-up, which kill pgbench and wrk.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mode = sys.argv[1] if len(sys.argv) > 1 else "full"
    if mode == "smoke":
        return smoke()
    if mode == "full":
        try:
            return full()
        except BenchError as e:
            print("\nbench: %s" % e, file=sys.stderr)
            return 1
    print("usage: bench.py full|smoke", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
