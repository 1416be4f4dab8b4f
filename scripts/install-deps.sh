#!/usr/bin/env bash
# Installs the Debian packages hv needs (scripts/deps*.txt) when any is missing,
# and fetches the Go modules. Idempotent: a second run installs nothing.
#
#   scripts/install-deps.sh          everything but the optional lists (what CI runs)
#   scripts/install-deps.sh bench    also scripts/deps-bench.txt (make bench)
#
# Every run first asks apt to plan the installation of every list, optional
# ones included, on this machine (apt-get install --simulate). A package that
# conflicts with another or does not exist fails here, also on a machine where
# everything is already installed: a green CI proves a fresh machine can
# install the lists, not only that this one happens to have them.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

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
names() { cat "$@" | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u; }
pkgs=$(names "${lists[@]}")
all=$(names scripts/deps*.txt)

# The plan must hold for all lists together. apt needs its package index for
# that: a fresh machine has none, so a failed plan is retried once after an
# update before it counts.
simulate() { apt-get install --simulate -q --no-install-recommends $all 2>&1; }
updated=""
if ! plan=$(simulate); then
	$SUDO apt-get update -qq
	updated=1
	if ! plan=$(simulate); then
		echo "install-deps: apt cannot install the packages of scripts/deps*.txt together:" >&2
		echo "$plan" | grep -E 'Conflicts|Depends|Breaks|^E:|unmet|Unable' >&2 || echo "$plan" | tail -20 >&2
		echo "install-deps: fix the lists (a package in conflict with another, a name Debian 12 does not have)" >&2
		exit 1
	fi
fi

missing=()
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: installing ${missing[*]}"
	[ -n "$updated" ] || $SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "install-deps: Go is missing; install Go 1.26 or newer (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
echo "install-deps: all present"
