#!/usr/bin/env bash
#
# make demo: build and install lark_webhooks, start a throwaway cluster and
# a receiver on loopback that verifies every signature, and deliver real
# webhooks for a few workflow runs.  Cleans up after itself.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh

echo "== building and installing lark_webhooks"
make -s >/dev/null
make -s install >/dev/null

# Retries are shortened from the default 10s, 20s, 40s so that the demo
# shows a delivery being dropped within a minute.
lark_cluster_start demo \
	"lark_webhooks.retry_delays = '2s, 4s, 8s'" \
	"lark_webhooks.timeout = '5s'"
trap lark_cluster_stop EXIT
echo "== throwaway cluster on port $PGPORT (socket in $PGHOST)"

psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION lark_webhooks'
python3 demo/demo.py
