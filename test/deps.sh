#!/usr/bin/env bash
#
# Install the Debian packages that building, testing, the demo and the
# benchmark need, when any is missing.  Needs root (CI and a fresh machine
# run as root); as another user it only says what is missing.
#
set -euo pipefail

packages=(
	make gcc
	postgresql-15 postgresql-server-dev-15
	libcurl4-openssl-dev libssl-dev
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	python3 nginx-light wrk valgrind
)

missing=()
for pkg in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "lark_webhooks: missing packages: ${missing[*]}" >&2
	echo "Run 'sudo make deps' (or install them with apt-get) and try again." >&2
	exit 1
fi

echo "lark_webhooks: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Debian's nginx package starts a server on port 80 when it can; we start
# our own on loopback when we need one.
if command -v nginx >/dev/null && pgrep -x nginx >/dev/null; then
	nginx -s stop 2>/dev/null || true
fi
