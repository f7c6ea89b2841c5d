#!/usr/bin/env bash
# Builds the guest image of the end-to-end VM tests (tests/vm.rs): a Debian
# cloud kernel and a busybox initramfs, from Debian packages only
# (`apt-get download` + `dpkg -x`, nothing installed, nothing fetched from
# anywhere else). See ../shared/design/TOOLCHAIN.md, "Real virtual machines".
#
#   scripts/vm-image.sh [DIR]     # default: target/vm-image in the repository
#
# DIR gets vmlinuz, initrd.img and image.stamp. Idempotent: when the stamp
# names this script's content the image is kept as it is (delete DIR to
# rebuild). Safe to run concurrently (a lock in DIR).
#
# The initramfs has: busybox (wget, nc, md5sum, httpd, udhcpc, ...), the
# virtio-net modules and their dependencies (insmod'ed by /init in order),
# udhcpc's hook script, and the host's iperf3 and ethtool with the libraries
# ldd lists (when the host has them). /init mounts /proc, /sys, /dev, loads
# the modules, prints "vnet-vm: ready" and gives a root shell on ttyS0.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/target/vm-image}"
step() { printf '[vm-image] %s\n' "$*"; }
die() { printf '[vm-image] error: %s\n' "$*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg ldd gzip; do
  command -v "$tool" >/dev/null || die "$tool not found: this script needs a Debian host"
done

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

# The modules virtio-net needs, in load order (dependencies first). Any that
# the kernel has built in is skipped.
MODULES=(failover net_failover virtio_ring virtio virtio_pci_modern_dev
  virtio_pci_legacy_dev virtio_pci virtio_net)
# Host programs copied into the guest with their libraries, when present.
HOST_PROGRAMS=(iperf3 ethtool)

# The image is up to date when this script and the set of host programs it
# copies are what they were when it was built.
script_sum="$(sha256sum "$0" | cut -d' ' -f1)"
programs="$(for p in "${HOST_PROGRAMS[@]}"; do command -v "$p" || true; done | tr '\n' ' ')"
if [ -f "$out/image.stamp" ] && grep -qx "script=$script_sum" "$out/image.stamp" \
  && grep -qxF "programs=$programs" "$out/image.stamp" \
  && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
  step "up to date: $out ($(grep '^kernel=' "$out/image.stamp"))"
  exit 0
fi

work="$(mktemp -d /tmp/vnet-vm-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# apt-get download drops privileges to _apt, which must be able to write here.
chmod 0777 "$work"

# The kernel the cloud meta-package points at (apt lists may be empty on a
# fresh machine: update once then).
kernel_pkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
kpkg="$(kernel_pkg)"
if [ -z "$kpkg" ]; then
  [ "$(id -u)" -eq 0 ] || die "apt has no package lists yet: run 'sudo apt-get update' (or this script as root)"
  step "apt: no package lists yet, running apt-get update"
  apt-get update -qq
  kpkg="$(kernel_pkg)"
fi
[ -n "$kpkg" ] || die "apt-cache knows no linux-image-cloud-amd64: is Debian's main archive in /etc/apt/sources.list?"
kver="${kpkg#linux-image-}"

step "downloading $kpkg and busybox-static (Debian packages)"
(cd "$work" && apt-get download -q "$kpkg" busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
kdeb="$(ls "$work"/linux-image-*.deb 2>/dev/null | head -1)"
bdeb="$(ls "$work"/busybox-static_*.deb 2>/dev/null | head -1)"
[ -n "$kdeb" ] || die "apt-get download $kpkg gave no .deb (see above)"
[ -n "$bdeb" ] || die "apt-get download busybox-static gave no .deb (see above)"

step "extracting $(basename "$kdeb") and $(basename "$bdeb")"
dpkg -x "$kdeb" "$work/kernel"
dpkg -x "$bdeb" "$work/busybox"
vmlinuz="$work/kernel/boot/vmlinuz-$kver"
[ -s "$vmlinuz" ] || die "$(basename "$kdeb") has no boot/vmlinuz-$kver"
bb="$work/busybox/bin/busybox"
[ -x "$bb" ] || die "$(basename "$bdeb") has no bin/busybox"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,lib/modules,usr/share/udhcpc,www}
cp "$bb" "$root/bin/busybox"

step "modules: ${MODULES[*]}"
moddir="$work/kernel/lib/modules/$kver"
: >"$root/lib/modules/order"
for m in "${MODULES[@]}"; do
  f="$(find "$moddir" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -1)"
  if [ -z "$f" ]; then
    if grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
      step "  $m is built into the kernel"
      continue
    fi
    die "module $m is neither in $kpkg nor built in"
  fi
  case "$f" in
    *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$root/lib/modules/order"
done

# Host programs and the libraries ldd names, at the same paths.
for p in "${HOST_PROGRAMS[@]}"; do
  path="$(command -v "$p" || true)"
  if [ -z "$path" ]; then
    step "  $p: not on this host, left out (scripts/bootstrap.sh installs it)"
    continue
  fi
  step "  $p: $path and its libraries"
  install -D "$path" "$root/usr/bin/$p"
  for lib in $(ldd "$path" | awk '/=> \// {print $3} /^\t\// {print $1}'); do
    [ -e "$root$lib" ] || install -D "$(readlink -f "$lib")" "$root$lib"
  done
done

# udhcpc's hook: configures the interface and records what udhcpc passed
# (/run/udhcpc.<iface>.<event>) for the tests to read.
cat >"$root/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
env | sort >"/run/udhcpc.$interface.$1"
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    : >/etc/resolv.conf
    for s in $dns; do echo "nameserver $s" >>/etc/resolv.conf; done ;;
esac
exit 0
EOF
chmod +x "$root/usr/share/udhcpc/default.script"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "vnet-vm: insmod $m failed"
done
ip link set lo up
# Kernel messages would interleave with command output on the console.
dmesg -n 1
echo "root:x:0:0:root:/:/bin/sh" >/etc/passwd
echo "vnet-vm: ready"
# PID 1 must not exit (the kernel would panic): a shell that ends is
# started again.
while :; do
  setsid cttyhack sh -l
done
EOF
chmod +x "$root/init"
# The console is driven by a program (tests/vm.rs): no echo of what it
# types, and with echo off busybox's shell reads plain lines (no line
# editing, no cursor-position queries).
cat >"$root/etc/profile" <<'EOF'
PS1='# '
stty -echo
EOF

step "packing the initramfs (busybox cpio, gzip)"
(cd "$root" && find . | "$bb" cpio -o -H newc 2>/dev/null | gzip -9 >"$work/initrd.img")
cp "$vmlinuz" "$out/vmlinuz.new"
cp "$work/initrd.img" "$out/initrd.img.new"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.img.new" "$out/initrd.img"
{
  echo "script=$script_sum"
  echo "programs=$programs"
  echo "kernel=$kpkg"
  echo "busybox=$(basename "$bdeb")"
} >"$out/image.stamp"
step "done: $out/vmlinuz ($(du -h "$out/vmlinuz" | cut -f1)), $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1)), kernel $kver"
