#!/usr/bin/env bash
# Installs what building and testing vnet needs on a fresh Debian machine:
# apt packages for the end-to-end tests, rust-src for the nightly that builds
# the eBPF crate, and bpf-linker. Idempotent: a second run only checks.
# Versions follow ../shared/design/TOOLCHAIN.md.
set -euo pipefail

BPF_LINKER_VERSION=0.10.3
APT_PACKAGES=(iproute2 ethtool tcpdump iputils-ping netcat-openbsd curl
  isc-dhcp-client udhcpc dhcpcd-base arping traceroute python3-scapy bpftool
  procps nftables
  prometheus  # prometheus: the server and promtool that tests/tests/metrics.rs runs
  etcd-server protobuf-compiler libprotobuf-dev  # etcd for control/etcd and tests/tests/etcd.rs; protoc (and its well-known .proto files, not installed without recommends) for etcd-client's build
  qemu-system-x86 iperf3)  # the VMs of tests/tests/vm.rs (iperf3 goes into their image too)

step() { printf '[bootstrap] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  step "apt: all ${#APT_PACKAGES[@]} packages present"
fi

if ! command -v rustup >/dev/null; then
  echo "[bootstrap] error: rustup not found; install Rust with rustup first" >&2
  exit 1
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  step "rustup: installing the nightly toolchain (builds the eBPF crate)"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  step "rustup: adding rust-src to nightly (for -Z build-std=core)"
  rustup component add rust-src --toolchain nightly
else
  step "rustup: nightly with rust-src present"
fi

if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  step "bpf-linker $BPF_LINKER_VERSION present"
else
  step "cargo: installing bpf-linker $BPF_LINKER_VERSION (about a minute)"
  cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION"
fi
bash "$(dirname "$0")/vm-image.sh"  # kernel + busybox initramfs of the VMs of tests/tests/vm.rs
bash "$(dirname "$0")/midonet-client.sh"  # midonetclient 5.2.0 for tests/tests/midonet.rs
step "done"
