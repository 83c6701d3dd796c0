#!/usr/bin/env bash
#
# make test: build and install lark_webhooks, start a throwaway cluster with
# the library preloaded, run the three suites against it, stop the cluster
# (also when a test fails), and end with one line "N passed, N failed".
#
#	pg_regress	sql/*.sql against expected/*.out: API, validation,
#			payloads, signing.  Its database is not served by the
#			worker, so what it queues stays pending.
#	pgTAP		test/pgtap/*.sql through pg_prove, in database lark_tap.
#	TAP		test/t/*.py through prove: the real worker, delivering
#			to receivers on loopback, in database postgres.
#
# Set LARK_TESTS to a glob (for example 't/20*') to run only some TAP files.
#
set -uo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh

log_dir=$(mktemp -d /tmp/lark_webhooks_test_logs.XXXXXX)
passed=0
failed=0

note() { printf '\n== %s\n' "$*"; }

note "build and install"
make -s >"$log_dir/build.log" 2>&1 && make -s install >>"$log_dir/build.log" 2>&1 || {
	cat "$log_dir/build.log"
	echo "0 passed, 1 failed"
	exit 1
}

# Retries and timeouts are shortened so that the suite stays quick.
lark_cluster_start test \
	"lark_webhooks.retry_delays = '300ms, 300ms, 300ms'" \
	"lark_webhooks.timeout = '2s'" \
	"fsync = off" \
	"log_min_messages = debug5" || { echo "0 passed, 1 failed"; exit 1; }
trap 'lark_cluster_stop' EXIT

# Count TAP lines in a runner's verbose output.
count_tap() {
	local out=$1 ok notok
	ok=$(grep -cE '^[[:space:]]*ok [0-9]+' "$out")
	notok=$(grep -cE '^[[:space:]]*not ok [0-9]+' "$out")
	passed=$((passed + ok))
	failed=$((failed + notok))
	echo "$ok passed, $notok failed"
}

note "pg_regress: $(sed -n 's/^REGRESS = //p' Makefile)"
if make -s installcheck PGUSER=postgres >"$log_dir/regress.log" 2>&1; then :; fi
cat "$log_dir/regress.log" | grep -E '\.\.\.|tests|FAILED' || true
ok=$(grep -cE '\.\.\. ok' "$log_dir/regress.log")
bad=$(grep -cE '\.\.\. FAILED|failed \(ignored\)' "$log_dir/regress.log")
if [ "$ok" -eq 0 ] && [ "$bad" -eq 0 ]; then
	bad=1
	cat "$log_dir/regress.log"
fi
[ -f regression.diffs ] && [ "$bad" -gt 0 ] && head -100 regression.diffs
passed=$((passed + ok))
failed=$((failed + bad))

note "pgTAP (pg_prove)"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE lark_tap' &&
	psql -X -q -v ON_ERROR_STOP=1 -d lark_tap \
		-c 'CREATE EXTENSION pgtap; CREATE EXTENSION lark_webhooks;'
pg_prove -v -d lark_tap test/pgtap/*.sql >"$log_dir/pgtap.log" 2>&1
rc=$?
grep -E '^(not )?ok|^#|Result|Failed' "$log_dir/pgtap.log" | grep -vE '^ok' || true
count_tap "$log_dir/pgtap.log"
if [ $rc -ne 0 ] && ! grep -qE '^[[:space:]]*not ok' "$log_dir/pgtap.log"; then
	tail -20 "$log_dir/pgtap.log"
	failed=$((failed + 1))
fi

note "TAP: the worker against receivers on loopback"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE EXTENSION lark_webhooks'
# shellcheck disable=SC2086
prove -v -e python3 test/t/${LARK_TESTS:-*}.py >"$log_dir/worker.log" 2>&1
rc=$?
grep -vE '^[[:space:]]*ok ' "$log_dir/worker.log" || true
count_tap "$log_dir/worker.log"
if [ $rc -ne 0 ] && ! grep -qE '^[[:space:]]*not ok' "$log_dir/worker.log"; then
	failed=$((failed + 1))
fi

# Secrets and signatures never reach the server log.
note "server log"
if python3 test/lib/scan_log.py "$LARK_SERVER_LOG"; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi

lark_cluster_stop

# The fault suite once more, with every process under valgrind.
note "valgrind: the fault suite under memcheck (a few minutes)"
bash test/valgrind.sh >"$log_dir/valgrind.log" 2>&1
cat "$log_dir/valgrind.log"
count_tap "$log_dir/valgrind.log" >/dev/null
if ! grep -qE '^(not )?ok' "$log_dir/valgrind.log"; then
	failed=$((failed + 1))
fi

echo
echo "logs: $log_dir"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
