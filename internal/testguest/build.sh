#!/usr/bin/env bash
# Build the hv tiny Linux test guest from Debian 12 packages.
#
#   internal/testguest/build.sh OUTDIR
#
# Produces in OUTDIR: vmlinuz, initrd.img, tiny-bios.qcow2, tiny-uefi.qcow2,
# inputs.txt (the cache key) and SHA256SUMS (checksums of all outputs, written
# last). Nothing is rebuilt when inputs.txt matches the current inputs and
# SHA256SUMS verifies. See README.md next to this script for details.
set -euo pipefail

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

# ---- layout constants (sectors of 512 bytes) -------------------------------
DISK_SIZE_MIB=256
P1_START=2048            # 1 MiB: FAT (BIOS boot partition / EFI system partition)
P1_SECTORS=98304         # 48 MiB
P2_START=100352          # 49 MiB: ext4 root
P2_SECTORS=421888        # 206 MiB (ends at 255 MiB, leaves room for the GPT backup)
ROOT_DEV=/dev/vda2
CMDLINE="console=tty0 console=ttyS0 root=$ROOT_DEV rw"

# Kernel modules to put into the guest, in the order we want them loaded
# (dependencies found in the modules' .modinfo are loaded first). Those marked
# optional may be missing from the kernel package.
MODULES_REQUIRED="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk virtio_console failover net_failover virtio_net virtio_mem"
MODULES_OPTIONAL="virtio_balloon virtio_scsi virtio_rng button evdev"

# busybox applets the guest must have (qemu-ga's guest-set-time runs
# /sbin/hwclock -w; tests use the others through guest-exec).
APPLETS_REQUIRED="sbin/hwclock bin/ping sbin/ip sbin/udhcpc usr/bin/sha256sum bin/stty"

# Host packages whose files end up in the images (the shared libraries of
# qemu-ga and script, the bootloaders). Their versions are part of the cache key.
HOST_PKGS="libc6 libglib2.0-0 libpcre2-8-0 libudev1 libnuma1 liburing2 syslinux syslinux-common systemd-boot-efi"

STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin

# ---- host tools ------------------------------------------------------------
for t in apt-cache apt-get dpkg-deb dpkg-query sha256sum objcopy objdump cpio zstd \
         mkfs.ext4 sfdisk sgdisk mformat mmd mcopy syslinux qemu-img ldd flock; do
  command -v "$t" >/dev/null 2>&1 ||
    die "missing host tool '$t' (install the packages in scripts/deps-guest.txt)"
done
[ -r "$STUB" ] || die "missing $STUB (package systemd-boot-efi)"
[ -r "$MBR_BIN" ] || die "missing $MBR_BIN (package syslinux-common)"

# One build at a time per OUTDIR.
exec 9>"$OUT/.lock"
flock 9

# ---- resolve inputs --------------------------------------------------------
# One apt-cache call (it is the slow part of an up-to-date check): the
# candidate version of each package, and the real kernel package that the
# metapackage's candidate depends on, with its exact version.
KMETA=linux-image-cloud-amd64
APT_INFO=$(apt-cache show --no-all-versions "$KMETA" qemu-guest-agent busybox-static bsdutils 2>/dev/null |
           grep -E '^(Package|Version|Depends):' || true)
candidate() { # PKG -> candidate version
  local v
  v=$(awk -v p="$1" '$1 == "Package:" { cur = $2 } cur == p && $1 == "Version:" { print $2; exit }' <<<"$APT_INFO")
  [ -n "$v" ] || die "no candidate version for package $1 (run apt-get update?)"
  printf '%s\n' "$v"
}
KMETA_VER=$(candidate "$KMETA")
read -r KPKG KPKG_VER < <(awk -v p="$KMETA" '$1 == "Package:" { cur = $2 } cur == p && $1 == "Depends:" { print; exit }' <<<"$APT_INFO" |
  sed 's/^Depends: *//' | tr ',|' '\n\n' |
  sed -n 's/^ *\(linux-image-[0-9][^ ]*\) *(= *\([^)]*\)).*/\1 \2/p' | head -n1) || true
[ -n "${KPKG:-}" ] && [ -n "${KPKG_VER:-}" ] ||
  die "cannot resolve the kernel package behind $KMETA=$KMETA_VER"
QGA_VER=$(candidate qemu-guest-agent)
BB_VER=$(candidate busybox-static)
BSD_VER=$(candidate bsdutils) # util-linux's script(1), for pty sessions

inputs() {
  echo "format hv-testguest 1"
  echo "pkg $KMETA $KMETA_VER"
  echo "pkg $KPKG $KPKG_VER"
  echo "pkg qemu-guest-agent $QGA_VER"
  echo "pkg busybox-static $BB_VER"
  echo "pkg bsdutils $BSD_VER"
  local p v
  for p in $HOST_PKGS; do
    v=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$p" 2>/dev/null) ||
      die "host package $p is not installed (see scripts/deps-guest.txt)"
    case $v in ii*) ;; *) die "host package $p is not installed (see scripts/deps-guest.txt)" ;; esac
    echo "host $p ${v##* }"
  done
  echo "cmdline $CMDLINE"
  (cd "$SRC" && find . -type f ! -name '*~' ! -name '.*' ! -name '*.md' | LC_ALL=C sort |
     while read -r f; do printf 'file %s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "${f#./}"; done)
}
INPUTS=$(inputs)

OUTPUTS="vmlinuz initrd.img tiny-bios.qcow2 tiny-uefi.qcow2 inputs.txt"
if [ -f "$OUT/SHA256SUMS" ] && [ -f "$OUT/inputs.txt" ] &&
   [ "$(cat "$OUT/inputs.txt")" = "$INPUTS" ] &&
   (cd "$OUT" && sha256sum --quiet --status -c SHA256SUMS); then
  echo "build.sh: $OUT is up to date"
  exit 0
fi

log "building test guest into $OUT"
log "  kernel $KPKG $KPKG_VER, qemu-guest-agent $QGA_VER, busybox-static $BB_VER, bsdutils $BSD_VER"

WORK=$(mktemp -d "$OUT/.work.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- fetch and unpack packages ---------------------------------------------
mkdir -p "$WORK/debs" "$WORK/x"
(cd "$WORK/debs" &&
 apt-get -q -o APT::Sandbox::User=root download \
   "$KPKG=$KPKG_VER" "qemu-guest-agent=$QGA_VER" "busybox-static=$BB_VER" \
   "bsdutils=$BSD_VER" >&2) ||
  die "apt-get download failed"
for p in "$KPKG" qemu-guest-agent busybox-static bsdutils; do
  deb=$(ls "$WORK/debs/${p}_"*.deb)
  dpkg-deb -x "$deb" "$WORK/x/$p"
done
KX=$WORK/x/$KPKG
KVER=$(ls "$KX/lib/modules")
[ "$(echo "$KVER" | wc -l)" -eq 1 ] || die "unexpected module dirs in $KPKG: $KVER"
BB=$WORK/x/busybox-static/bin/busybox
QGA=$WORK/x/qemu-guest-agent/usr/sbin/qemu-ga
[ -x "$BB" ] || die "no busybox in busybox-static"
SCRIPT=$WORK/x/bsdutils/usr/bin/script
[ -x "$QGA" ] || die "no qemu-ga in qemu-guest-agent"
[ -x "$SCRIPT" ] || die "no script in bsdutils"

# ---- root file system tree -------------------------------------------------
R=$WORK/root
mkdir -p "$R"
(cd "$R" && mkdir -p bin sbin usr/bin usr/sbin lib/x86_64-linux-gnu lib64 etc/acpi/PWRF \
   etc/udhcpc usr/share/udhcpc \
   dev proc sys run tmp root var/log var/tmp mnt "lib/modules/$KVER")
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 0700 "$R/root"

# busybox and its applet links
install -m 0755 "$BB" "$R/bin/busybox"
"$BB" --list-full | while read -r a; do
  case $a in */*) ;; *) continue ;; esac   # skips linuxrc at /
  [ -e "$R/$a" ] || [ -L "$R/$a" ] || ln -s /bin/busybox "$R/$a"
done

for a in $APPLETS_REQUIRED; do
  [ -L "$R/$a" ] || [ -e "$R/$a" ] || die "busybox-static $BB_VER has no /$a"
done

# Dynamic binaries from Debian packages and the host libraries they link
# against: qemu-ga (qemu-guest-agent) and script (bsdutils).
copy_libs() { # BINARY
  local lib owner ldd_out
  ldd_out=$(ldd "$1") || die "ldd ${1##*/} failed"
  if grep -q 'not found' <<<"$ldd_out"; then
    die "${1##*/} needs libraries missing on the host (see scripts/deps-guest.txt):
$ldd_out"
  fi
  for lib in $(awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$ldd_out"); do
    owner=$(dpkg-query -S "$lib" 2>/dev/null | head -n1 | cut -d: -f1) ||
      owner=$(dpkg-query -S "$(readlink -f "$lib")" 2>/dev/null | head -n1 | cut -d: -f1) || owner=
    case " $HOST_PKGS " in
      *" $owner "*) ;;
      *) die "${1##*/} library $lib comes from '$owner', which is not in HOST_PKGS" ;;
    esac
    cp -L "$lib" "$R/lib/x86_64-linux-gnu/"
  done
}
install -m 0755 "$QGA" "$R/usr/sbin/qemu-ga"
copy_libs "$QGA"
install -m 0755 "$SCRIPT" "$R/usr/bin/script"
copy_libs "$SCRIPT"
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"

# kernel modules: the wanted ones plus their dependencies, in load order
MD=$KX/lib/modules/$KVER
declare -A KO=() SEEN=()
while read -r f; do
  n=${f##*/}; n=${n%.ko}; KO[${n//-/_}]=$f
done < <(cd "$MD" && find kernel -name '*.ko')
builtin_mod() { sed 's|.*/||; s|\.ko$||; s|-|_|g' "$MD/modules.builtin" | grep -qx "$1"; }
ORDER=()
visit() { # NAME REQUIRED
  local n=$1 req=$2 f deps d
  [ -z "${SEEN[$n]:-}" ] || return 0
  SEEN[$n]=1
  f=${KO[$n]:-}
  if [ -z "$f" ]; then
    builtin_mod "$n" && return 0
    [ "$req" = 1 ] && die "kernel module $n not found in $KPKG"
    log "  note: optional module $n not in $KPKG, skipped"
    return 0
  fi
  objcopy -O binary --only-section=.modinfo "$MD/$f" "$WORK/modinfo"
  deps=$(tr '\0' '\n' <"$WORK/modinfo" | sed -n 's/^depends=//p' | tr ',' ' ')
  for d in $deps; do visit "${d//-/_}" 1; done
  ORDER+=("$n $f")
}
for m in $MODULES_REQUIRED; do visit "$m" 1; done
for m in $MODULES_OPTIONAL; do visit "$m" 0; done
: >"$R/lib/modules/$KVER/hv-modules.order"
for e in "${ORDER[@]}"; do
  f=${e#* }
  mkdir -p "$R/lib/modules/$KVER/$(dirname "$f")"
  cp "$MD/$f" "$R/lib/modules/$KVER/$f"
  echo "$e" >>"$R/lib/modules/$KVER/hv-modules.order"
done
cp "$MD/modules.builtin" "$MD/modules.order" "$R/lib/modules/$KVER/" 2>/dev/null || true
"$BB" depmod -b "$R" "$KVER" 2>/dev/null || log "  note: depmod failed; modprobe will not work in the guest"
log "  modules: $(cut -d' ' -f1 "$R/lib/modules/$KVER/hv-modules.order" | tr '\n' ' ')"

# configuration and scripts
install -m 0755 "$SRC/init" "$R/init"
install -m 0755 "$SRC/shutdown" "$R/sbin/shutdown"
install -m 0644 "$SRC/inittab" "$R/etc/inittab"
install -m 0755 "$SRC/udhcpc.script" "$R/usr/share/udhcpc/default.script"
ln -s /usr/share/udhcpc/default.script "$R/etc/udhcpc/default.script"
echo tiny >"$R/etc/hostname"
cat >"$R/etc/os-release" <<EOF
NAME="hv tiny test guest"
ID=hv-tiny
ID_LIKE=debian
VERSION_ID="1"
PRETTY_NAME="hv tiny test guest (Debian $KPKG_VER kernel, busybox $BB_VER)"
EOF
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
echo 'root::0:0:99999:7:::' >"$R/etc/shadow"
chmod 0600 "$R/etc/shadow"
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttiny\n::1\tlocalhost\n' >"$R/etc/hosts"
cat >"$R/etc/profile" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
PS1='\h:\w\$ '
cd /root 2>/dev/null || true
EOF
ln -s /proc/self/mounts "$R/etc/mtab"
printf '#!/bin/sh\nexec /sbin/poweroff\n' >"$R/etc/acpi/PWRF/00000080"
chmod 0755 "$R/etc/acpi/PWRF/00000080"

if [ "$(id -u)" = 0 ]; then   # sanity check: the agent runs inside the tree
  chroot "$R" /usr/sbin/qemu-ga --version >/dev/null ||
    die "qemu-ga does not run inside the guest tree"
  chroot "$R" /usr/bin/script --version >/dev/null ||
    die "script does not run inside the guest tree"
fi

# ---- initramfs ---------------------------------------------------------------
I=$WORK/initramfs
cp -a "$R" "$I"
mkdir -p "$I/newroot"
echo "this file marks the initramfs" >"$I/etc/hv-initramfs"

cpio_entry() { # NAME MODE(octal) RDEVMAJOR RDEVMINOR INO: one newc header, no data
  local name=$1 mode=$2 maj=$3 min=$4 ino=$5 nsz pad
  nsz=$(( ${#name} + 1 ))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    "$ino" $((8#$mode)) 0 0 1 0 0 0 0 "$maj" "$min" "$nsz" 0
  printf '%s\0' "$name"
  pad=$(( (4 - (110 + nsz) % 4) % 4 ))
  head -c "$pad" /dev/zero
}
{
  (cd "$I" && find . -mindepth 1 | LC_ALL=C sort |
     cpio -o -H newc -R 0:0 --reproducible --quiet)
  # device nodes the kernel needs before /init runs (no mknod/root needed)
  cpio_entry dev 040755 0 0 900001
  cpio_entry dev/console 020600 5 1 900002
  cpio_entry dev/null 020666 1 3 900003
  cpio_entry TRAILER!!! 0 0 0 0
} | zstd -q -19 -T0 >"$WORK/initrd.img"
install -m 0644 "$KX/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

# ---- ext4 root -------------------------------------------------------------
truncate -s $((P2_SECTORS * 512)) "$WORK/root.ext4"
mkfs.ext4 -q -F -L hvroot -m 0 -E root_owner=0:0 -d "$R" "$WORK/root.ext4" >&2

# ---- FAT partitions ----------------------------------------------------------
new_fat() { # FILE LABEL
  truncate -s $((P1_SECTORS * 512)) "$1"
  mformat -i "$1" -T "$P1_SECTORS" -h 64 -s 32 -H "$P1_START" -v "$2" ::
}
export MTOOLS_SKIP_CHECK=1

# BIOS: syslinux on FAT, kernel + initrd next to it
new_fat "$WORK/bios-fat.img" HVBOOT
mcopy -i "$WORK/bios-fat.img" "$WORK/vmlinuz" "$WORK/initrd.img" ::/
sed "s|@CMDLINE@|$CMDLINE|" "$SRC/syslinux.cfg" >"$WORK/syslinux.cfg"
mcopy -i "$WORK/bios-fat.img" "$WORK/syslinux.cfg" ::/syslinux.cfg

# UEFI: unified kernel image at the removable-media path
sec_end=0
while read -r size vma; do
  e=$(( 0x$vma + 0x$size ))
  [ "$e" -gt "$sec_end" ] && sec_end=$e
done < <(objdump -h "$STUB" | awk '$1 ~ /^[0-9]+$/ { print $3, $4 }')
align() { echo $(( ($1 + 0xfff) & ~0xfff )); }
printf '%s' "$CMDLINE" >"$WORK/cmdline"
osrel_vma=$(align "$sec_end")
cmdline_vma=$(align $(( osrel_vma + $(stat -c %s "$R/etc/os-release") )))
linux_vma=$(align $(( cmdline_vma + $(stat -c %s "$WORK/cmdline") )))
initrd_vma=$(align $(( linux_vma + $(stat -c %s "$WORK/vmlinuz") )))
objcopy \
  --add-section .osrel="$R/etc/os-release" --change-section-vma .osrel=$(printf 0x%x "$osrel_vma") \
  --add-section .cmdline="$WORK/cmdline" --change-section-vma .cmdline=$(printf 0x%x "$cmdline_vma") \
  --add-section .linux="$WORK/vmlinuz" --change-section-vma .linux=$(printf 0x%x "$linux_vma") \
  --add-section .initrd="$WORK/initrd.img" --change-section-vma .initrd=$(printf 0x%x "$initrd_vma") \
  "$STUB" "$WORK/BOOTX64.EFI"
new_fat "$WORK/esp.img" ESP
mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$WORK/esp.img" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

# ---- disks -----------------------------------------------------------------
place() { # IMAGE DISK START_SECTOR
  dd if="$1" of="$2" bs=512 seek="$3" conv=notrunc,sparse status=none
}

D=$WORK/bios.raw
truncate -s ${DISK_SIZE_MIB}M "$D"
sfdisk -q "$D" >&2 <<EOF
label: dos
label-id: 0x68760001
unit: sectors
start=$P1_START, size=$P1_SECTORS, type=e, bootable
start=$P2_START, size=$P2_SECTORS, type=83
EOF
place "$WORK/bios-fat.img" "$D" "$P1_START"
place "$WORK/root.ext4" "$D" "$P2_START"
syslinux --install --offset $((P1_START * 512)) "$D"
dd if="$MBR_BIN" of="$D" bs=440 count=1 conv=notrunc status=none

D=$WORK/uefi.raw
truncate -s ${DISK_SIZE_MIB}M "$D"
sgdisk -o \
  -n 1:$P1_START:$((P1_START + P1_SECTORS - 1)) -t 1:ef00 -c 1:ESP \
  -n 2:$P2_START:$((P2_START + P2_SECTORS - 1)) -t 2:8300 -c 2:hvroot \
  "$D" >/dev/null
sgdisk -v "$D" >/dev/null || die "sgdisk did not write a valid GPT"
place "$WORK/esp.img" "$D" "$P1_START"
place "$WORK/root.ext4" "$D" "$P2_START"

mkdir -p "$WORK/out"
for m in bios uefi; do
  qemu-img convert -f raw -O qcow2 "$WORK/$m.raw" "$WORK/out/tiny-$m.qcow2"
  qemu-img check -q "$WORK/out/tiny-$m.qcow2"
done
mv "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/out/"
printf '%s\n' "$INPUTS" >"$WORK/out/inputs.txt"
(cd "$WORK/out" && sha256sum $OUTPUTS >SHA256SUMS)

# ---- move into place (SHA256SUMS last: without it the cache is invalid) -----
rm -f "$OUT/SHA256SUMS"
for f in $OUTPUTS SHA256SUMS; do
  chmod 0644 "$WORK/out/$f"
  mv -f "$WORK/out/$f" "$OUT/$f"
done
log "done:"
(cd "$OUT" && ls -l $OUTPUTS SHA256SUMS >&2)
