#!/usr/bin/env bash
# The throughput harness: vnet against the Linux kernel and the raw
# XDP_REDIRECT ceiling on identical namespaces (64-byte frames from the
# BPF_PROG_TEST_RUN live-frames generator), new flows per second, first-packet
# latency and the XDP program's per-packet cost; prints the table of
# benches/RESULTS.md.
#
# Root (namespaces, XDP, BPF_PROG_TEST_RUN). A manual command, never part of
# CI or of `cargo test`. Arguments go to the harness (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "throughput.sh: needs root (network namespaces, XDP): sudo benches/throughput.sh $*" >&2
  exit 1
fi
bash scripts/bootstrap.sh # nftables: the Linux masquerade baseline
echo "[throughput.sh] building vnetd and the harness (release)"
cargo build --release -p vnetd -p vnet-benches --bin throughput
exec "${CARGO_TARGET_DIR:-target}/release/throughput" "$@"
