#!/usr/bin/env bash
#
# Throwaway PostgreSQL clusters for the tests, the demo and the benchmark.
# Source this file, then:
#
#	lark_cluster_start NAME [SETTING ...]	initdb + start; exports PGHOST,
#						PGPORT, PGUSER, LARK_PGDATA,
#						LARK_SERVER_LOG, LARK_TMPDIR
#	lark_cluster_stop			stop it and remove its directory
#
# The cluster runs as the "postgres" OS user when we are root (initdb and
# postgres refuse to run as root), listens only on a Unix socket in its own
# temporary directory plus loopback TCP on a free port, and preloads
# lark_webhooks.
#
# LARK_PG_CTL_OPTS, if set, is passed to pg_ctl start (test/valgrind.sh
# uses it to start postgres through a valgrind wrapper with -p).
#

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# Run a command as the cluster's owner.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

lark_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

lark_cluster_start() {
	local name=$1
	shift

	LARK_TMPDIR=$(mktemp -d "/tmp/lark_webhooks_${name}.XXXXXX")
	chmod 755 "$LARK_TMPDIR"
	[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$LARK_TMPDIR"
	LARK_PGDATA=$LARK_TMPDIR/data
	LARK_SERVER_LOG=$LARK_TMPDIR/server.log
	PGPORT=$(lark_free_port)

	if ! as_pg "$PGBIN/initdb" -D "$LARK_PGDATA" -U postgres -A trust \
		-E UTF8 --locale=C.UTF-8 >"$LARK_TMPDIR/initdb.log" 2>&1; then
		cat "$LARK_TMPDIR/initdb.log" >&2
		return 1
	fi

	{
		echo "listen_addresses = '127.0.0.1'"
		echo "port = $PGPORT"
		echo "unix_socket_directories = '$LARK_TMPDIR'"
		echo "shared_preload_libraries = 'lark_webhooks'"
		echo "lark_webhooks.database = 'postgres'"
		echo "lark_webhooks.allowed_networks = '127.0.0.0/8, ::1/128'"
		echo "log_line_prefix = '%m [%p] %b '"
		for setting in "$@"; do
			echo "$setting"
		done
	} >>"$LARK_PGDATA/postgresql.conf"

	# shellcheck disable=SC2086
	if ! as_pg "$PGBIN/pg_ctl" -D "$LARK_PGDATA" -l "$LARK_SERVER_LOG" \
		-w -t 300 ${LARK_PG_CTL_OPTS:-} start >/dev/null; then
		cat "$LARK_SERVER_LOG" >&2
		return 1
	fi

	export PGHOST=$LARK_TMPDIR PGPORT PGUSER=postgres PGDATABASE=postgres
	export LARK_PGDATA LARK_SERVER_LOG LARK_TMPDIR PGBIN
}

lark_cluster_stop() {
	[ -n "${LARK_PGDATA:-}" ] || return 0
	as_pg "$PGBIN/pg_ctl" -D "$LARK_PGDATA" -m fast -w -t 300 stop >/dev/null 2>&1 ||
		as_pg "$PGBIN/pg_ctl" -D "$LARK_PGDATA" -m immediate -w stop >/dev/null 2>&1
	if [ -n "${LARK_KEEP_CLUSTER:-}" ]; then
		echo "cluster kept in $LARK_TMPDIR"
	else
		rm -rf "$LARK_TMPDIR"
	fi
	LARK_PGDATA=
}
