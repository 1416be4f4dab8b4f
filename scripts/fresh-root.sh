#!/usr/bin/env bash
# Proves the README's set-up on a freshly made Debian 12 root: a green CI on a
# machine where the packages happen to be installed hides a list that a new
# machine cannot install. Makes DIR with debootstrap (minbase plus what a new
# build machine has: make, git, gcc, Go copied from /usr/local/go), clones this
# repository's HEAD into it with ../shared beside it, and runs COMMAND there as
# root in a chroot (default: make demo, make demo-stop, make test).
#
#   scripts/fresh-root.sh DIR [COMMAND]
#   scripts/fresh-root.sh /srv/fresh 'make demo && make demo-stop'
#
# Needs root and debootstrap (installed when missing). The Debian mirror and
# apt settings are this machine's. DIR is kept for a rerun: the chroot's own
# packages stay, the clone is made anew each time.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR [COMMAND]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "fresh-root: run as root (debootstrap, chroot, mounts)" >&2; exit 1; }
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mkdir -p "$1" && cd "$1" && pwd)
cmd=${2:-"make demo && make demo-stop && make test"}

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "fresh-root: no Debian mirror found in this machine's apt sources" >&2; exit 1; }

if [ ! -f "$dir/.fresh-root-done" ]; then
	echo "fresh-root: debootstrap bookworm into $dir"
	debootstrap --variant=minbase --include=make,git,gcc,libc6-dev,ca-certificates bookworm "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 ||
		{ tail -20 "$dir.debootstrap.log" >&2; exit 1; }
	touch "$dir/.fresh-root-done"
fi
# This machine's apt settings (mirror, proxies) and Go, as a new build machine has them.
rm -f "$dir/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/. "$dir/etc/apt/sources.list.d/" 2>/dev/null || true
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$dir/etc/apt/"
for f in /etc/apt/apt.conf.d/*; do
	case $(basename "$f") in docker-* | 20packagekit | 50appstream) continue ;; esac
	cp "$f" "$dir/etc/apt/apt.conf.d/"
done
rm -rf "$dir/usr/local/go" && cp -a /usr/local/go "$dir/usr/local/go"
# The certificate authorities this machine trusts (a network that inspects TLS
# adds its own, which a new machine of the same kind has too).
cp -a /usr/local/share/ca-certificates/. "$dir/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true

rm -rf "$dir/work" && mkdir -p "$dir/work"
git clone -q "$top" "$dir/work/main"
[ -d "$top/../shared" ] && cp -a "$top/../shared" "$dir/work/shared"

mounts=()
mnt() { mount "$@"; mounts=("${@: -1}" "${mounts[@]}"); }
cleanup() { for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
# The root must be a mount point, as on a real machine: ip netns remounts "/"
# as a slave in each namespace, which fails on a plain directory.
mnt --bind "$dir" "$dir"
mnt -t proc proc "$dir/proc"
mnt -t sysfs sys "$dir/sys"
mnt --rbind /dev "$dir/dev"
mnt -t tmpfs tmpfs "$dir/run"

echo "fresh-root: running in the chroot: $cmd"
chroot "$dir" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
	PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/bash -c "cd /work/main && $cmd"
