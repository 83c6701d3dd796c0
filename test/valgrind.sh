#!/usr/bin/env bash
#
# The worker under valgrind through the fault suite (test/t/50_crash.py,
# 60_hostile.py, 90_drop.py), in a cluster of its own whose every process
# runs under memcheck.  Prints TAP lines; run by test/run.sh.
#
# What is asserted is valgrind's verdict: no invalid read, write or free in
# any process, and no use of uninitialised memory and no definite leak whose
# stack passes through lark_webhooks or libcurl.  (The server itself is not
# built for valgrind, so its own well-known reports, such as padding bytes
# written to the relcache init file, are left out.)  The suites' own checks
# run too, but under valgrind everything is 20-50 times slower, so their
# results are shown as diagnostics, not counted.
#
set -uo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh

if ! command -v valgrind >/dev/null; then
	echo "not ok - valgrind is not installed (make deps installs it)"
	exit 1
fi

vg_dir=$(mktemp -d /tmp/lark_webhooks_vg.XXXXXX)
chmod 777 "$vg_dir"
wrapper=$vg_dir/postgres
cat >"$wrapper" <<WRAP
#!/bin/sh
exec valgrind --quiet --error-limit=no --num-callers=40 \\
	--leak-check=full --show-leak-kinds=definite \\
	--log-file=$vg_dir/vg.%p $PGBIN/postgres "\$@"
WRAP
chmod 755 "$wrapper"

export LARK_PG_CTL_OPTS="-p $wrapper"
lark_cluster_start valgrind \
	"lark_webhooks.retry_delays = '300ms, 300ms, 300ms'" \
	"lark_webhooks.timeout = '5s'" \
	"fsync = off" || { echo "not ok - the valgrind cluster did not start"; exit 1; }
trap 'lark_cluster_stop; rm -rf "$vg_dir"' EXIT

psql -X -q -c 'CREATE EXTENSION lark_webhooks'
count_attempts() { psql -X -Atc "SELECT count(*) FROM lark.delivery_attempts" 2>/dev/null || echo 0; }
attempts=0
for t in test/t/50_crash.py test/t/60_hostile.py test/t/90_drop.py; do
	# 90_drop.py drops the extension: count what the others recorded first.
	[ "$t" = test/t/90_drop.py ] && attempts=$(count_attempts)
	timeout 900 python3 "$t" >"$vg_dir/$(basename "$t").tap" 2>&1
	printf '# under valgrind: %s: %s of %s checks passed\n' "$(basename "$t")" \
		"$(grep -c '^ok' "$vg_dir/$(basename "$t").tap")" \
		"$(grep -cE '^(not )?ok' "$vg_dir/$(basename "$t").tap")"
done
attempts=$((attempts + $(count_attempts)))

# A clean stop, so that every process writes its leak summary.
as_pg "$PGBIN/pg_ctl" -D "$LARK_PGDATA" -m fast -w -t 300 stop >/dev/null 2>&1
LARK_PGDATA=

python3 test/lib/valgrind_verdict.py "$vg_dir" "$attempts"
