#!/usr/bin/env bash
# Installs the Debian packages hv needs (scripts/deps*.txt) when any is missing,
# and fetches the Go modules. Idempotent: a second run does nothing.
#
#   scripts/install-deps.sh          everything but the optional lists (what CI runs)
#   scripts/install-deps.sh bench    also scripts/deps-bench.txt (make bench)
set -euo pipefail
cd "$(dirname "$0")/.."

optional=(scripts/deps-bench.txt) # installed only when named as an argument
lists=()
for f in scripts/deps*.txt; do
	[[ " ${optional[*]} " == *" $f "* ]] || lists+=("$f")
done
for extra in "$@"; do
	f=scripts/deps-$extra.txt
	[ -f "$f" ] || { echo "install-deps: no $f (optional lists: ${optional[*]})" >&2; exit 2; }
	lists+=("$f")
done
pkgs=$(cat "${lists[@]}" | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: installing ${missing[*]}"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "install-deps: Go is missing; install Go 1.26 or newer (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
echo "install-deps: all present"
