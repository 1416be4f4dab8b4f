#!/usr/bin/env bash
# The README's first command runs this (make demo): start hvd in a private root,
# boot a Generation 2 VM from the tiny test guest, and show it working.
#   scripts/demo.sh [ROOT]          start
#   scripts/demo.sh --stop [ROOT]   stop the VM and hvd
set -euo pipefail
cd "$(dirname "$0")/.."
stop=0
if [ "${1:-}" = "--stop" ]; then stop=1; shift; fi
root=${1:-/tmp/hv-demo}
export HV_SOCKET=$root/hvd.sock
hv=bin/hv

if ((stop)); then
	$hv vm kill demo 2>/dev/null || true
	[ -f "$root/hvd.pid" ] && kill "$(cat "$root/hvd.pid")" 2>/dev/null || true
	echo "demo stopped; remove $root to forget it"
	exit 0
fi

mkdir -p "$root"
if ! $hv host info >/dev/null 2>&1; then
	echo "== starting hvd (root $root, log $root/hvd.log)"
	setsid bin/hvd --root "$root" --socket "$HV_SOCKET" >"$root/hvd.log" 2>&1 &
	echo $! >"$root/hvd.pid"
	for _ in $(seq 100); do $hv host info >/dev/null 2>&1 && break; sleep 0.1; done
fi
$hv host info
if ! $hv vm show demo >/dev/null 2>&1; then
	echo "== creating VM demo (generation 2, UEFI) from the tiny guest"
	$hv vm create demo --generation 2 --cpus 1 --memory 256M --image build/guest/tiny-uefi.qcow2
fi
state=$($hv vm show demo -o json | sed -n 's/.*"state": "\([A-Za-z]*\)".*/\1/p')
[ "$state" = Running ] || { echo "== starting demo"; $hv vm start demo; }
echo "== waiting for the guest agent's heartbeat"
for _ in $(seq 240); do
	$hv vm show demo -o json | grep -q '"heartbeat": "OK"' && break
	sleep 0.5
done
$hv vm list
echo "== running a command in the guest through its agent (no guest network)"
$hv vm exec demo -- uname -a
$hv vm exec demo -- cat /etc/os-release
cat <<MSG

The VM runs. Try:
  export HV_SOCKET=$HV_SOCKET
  bin/hv vm console demo      # serial console; Ctrl-] detaches
  bin/hv vm save demo && bin/hv vm start demo
  make demo-stop              # turn it off and stop hvd
MSG
