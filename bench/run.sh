#!/usr/bin/env bash
#
# make bench: build and install lark_webhooks, start a throwaway cluster and
# Debian's nginx-light on loopback, run bench/bench.py (which prints one table
# and writes bench/RESULTS.md), and stop everything again, also on failure.
#
#	bash bench/run.sh		the full benchmark (about 3-6 minutes)
#	bash bench/run.sh --smoke	500 deliveries, one TAP line, exit 0 only
#					when all succeeded with no failed attempt
#
# With LARK_BENCH_REUSE_CLUSTER=1 and PGHOST/PGPORT set, no cluster is built
# or started: the benchmark runs against that one (the test suite does this
# for --smoke).  nginx is always our own.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh

mode=full
case "${1:-}" in
"") ;;
--smoke) mode=smoke ;;
*)
	echo "usage: bash bench/run.sh [--smoke]" >&2
	exit 2
	;;
esac

reuse=0
if [ "${LARK_BENCH_REUSE_CLUSTER:-}" = 1 ] && [ -n "${PGHOST:-}" ] && [ -n "${PGPORT:-}" ]; then
	reuse=1
fi

work_dir=$(mktemp -d /tmp/lark_webhooks_bench.XXXXXX)
nginx_pid=
bench_pid=
started_cluster=0

# TERM a process, wait up to $2 tenths of a second for it, then KILL it.
stop_pid() {
	kill -TERM "$1" 2>/dev/null
	for _ in $(seq 1 "$2"); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null
}

cleanup() {
	local rc=$?
	set +e
	# bench.py turns TERM into a clean exit that stops its pgbench/wrk.
	[ -n "$bench_pid" ] && stop_pid "$bench_pid" 100
	# Only the nginx master we started; it takes its workers down with it.
	[ -n "$nginx_pid" ] && stop_pid "$nginx_pid" 50
	[ "$started_cluster" = 1 ] && lark_cluster_stop
	if [ "$rc" -ne 0 ] && [ -n "${LARK_BENCH_KEEP_LOGS:-}" ]; then
		echo "bench: logs kept in $work_dir" >&2
	else
		rm -rf "$work_dir"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fail with the first lines of a log, which say why.
die_with_log() {
	echo "bench: $1" >&2
	[ -f "$2" ] && tail -40 "$2" >&2
	exit 1
}

if [ "$reuse" = 0 ]; then
	# A build failure is reported as such rather than as a benchmark result.
	make -s >"$work_dir/build.log" 2>&1 && make -s install >>"$work_dir/build.log" 2>&1 ||
		die_with_log "build failed" "$work_dir/build.log"

	# fsync stays at its default (on): commit costs are part of what we
	# measure.  max_concurrency is the default, written out so that the
	# table and the configuration agree.
	started_cluster=1
	lark_cluster_start bench \
		"lark_webhooks.max_concurrency = 64" \
		"lark_webhooks.timeout = '10s'" \
		"max_connections = 50" ||
		die_with_log "could not start the cluster" ""
	psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE EXTENSION lark_webhooks' >/dev/null
else
	psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'SET client_min_messages = warning' \
		-c 'CREATE EXTENSION IF NOT EXISTS lark_webhooks' >/dev/null
fi

# nginx: loopback only, everything it writes inside $work_dir.  200 with a
# small body for every POST, 500 under /fail (the memory pass mixes both).
# "user root" keeps the workers able to use the temp paths when we are root.
nginx_port=$(lark_free_port)
mkdir -p "$work_dir/nginx/tmp"
{
	[ "$(id -u)" -eq 0 ] && echo "user root;"
	cat <<EOF
worker_processes 2;
pid $work_dir/nginx/nginx.pid;
error_log $work_dir/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $work_dir/nginx/tmp/body;
	proxy_temp_path $work_dir/nginx/tmp/proxy;
	fastcgi_temp_path $work_dir/nginx/tmp/fastcgi;
	uwsgi_temp_path $work_dir/nginx/tmp/uwsgi;
	scgi_temp_path $work_dir/nginx/tmp/scgi;
	# Keep connections open as a real receiver would; the worker pools them.
	keepalive_requests 100000;
	keepalive_timeout 60s;
	server {
		listen 127.0.0.1:$nginx_port;
		location /fail { return 500 "fail"; }
		location / { return 200 "ok"; }
	}
}
EOF
} >"$work_dir/nginx/nginx.conf"

nginx -p "$work_dir/nginx" -c "$work_dir/nginx/nginx.conf" \
	-e "$work_dir/nginx/error.log" >"$work_dir/nginx/stdout.log" 2>&1 &
nginx_pid=$!

# Wait (bounded) until it answers.
for _ in $(seq 1 100); do
	if python3 - "$nginx_port" <<'EOF' 2>/dev/null; then break; fi
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
c.request("POST", "/", body=b"{}")
sys.exit(0 if c.getresponse().status == 200 else 1)
EOF
	kill -0 "$nginx_pid" 2>/dev/null || die_with_log "nginx did not start" "$work_dir/nginx/error.log"
	sleep 0.1
done

export LARK_BENCH_NGINX_PORT=$nginx_port LARK_BENCH_WORK_DIR=$work_dir
export LARK_BENCH_REUSED=$reuse
# In the background and waited for, so that a TERM or INT reaches our trap
# at once instead of after the whole run.
python3 bench/bench.py "$mode" &
bench_pid=$!
rc=0
wait "$bench_pid" || rc=$?
bench_pid=
exit "$rc"
