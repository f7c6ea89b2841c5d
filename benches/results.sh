#!/usr/bin/env bash
# Every figure of issue 14's table in one run, for benches/RESULTS.md: the
# throughput harness (vnet vs Linux vs the raw XDP_REDIRECT ceiling on each
# path, the XDP program's per-packet cost, new flows per second, first-packet
# latency, more than one core) and the scale harness (10 000 ports: a load and
# one change to its effect, in process and through vnetd's API; --flows
# bounds its kernel-table part), and how long this machine takes to wake a
# sleeping thread (the floor under first-packet latency). Each harness measures its baselines in the
# same run. Writes benches/results-<UTC date>.md (the two tables and the
# command) and prints where; progress goes to the terminal.
#
# Root (namespaces, XDP, BPF_PROG_TEST_RUN). A manual command, never part of
# CI. Arguments: --quick (fewer repetitions, about 5 minutes instead of 15).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "results.sh: needs root (network namespaces, XDP): sudo benches/results.sh $*" >&2
  exit 1
fi
throughput_args=()
scale_args=()
case "${1:-}" in
  --quick)
    throughput_args=(--reps 3 --new-flow-reps 3 --pings 10)
    scale_args=(--reps 3 --flows 100000)
    ;;
  "") ;;
  *)
    echo "results.sh: unknown argument $1 (only --quick)" >&2
    exit 2
    ;;
esac
out="benches/results-$(date -u +%Y-%m-%d).md"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
{
  echo "# Benchmark results, $(date -u '+%Y-%m-%d %H:%M UTC'), main at $(git rev-parse --short HEAD)"
  echo
  echo "Command: \`sudo benches/results.sh $*\`."
} >"$tmp"
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/bootstrap.sh # nftables (the masquerade baseline), the eBPF toolchain
echo "[results.sh] building vnetd and the harnesses (release)"
cargo build --release -p vnetd -p vnet-benches --bin vnetd --bin throughput --bin scale --bin wakeup
bin="${CARGO_TARGET_DIR:-target}/release"
# Only the harnesses' tables go into the file (their progress goes to the
# terminal), as benches/throughput.sh and benches/scale.sh would print them.
echo "[results.sh] 1/3: the throughput harness (throughput ${throughput_args[*]})"
"$bin/throughput" "${throughput_args[@]}" >>"$tmp"
echo "[results.sh] 2/3: the scale harness (scale ${scale_args[*]})"
"$bin/scale" "${scale_args[@]}" >>"$tmp"
# The floor under the first-packet latency: a wake-up of a sleeping thread.
echo "[results.sh] 3/3: the wake-up floor (wakeup)"
{ echo; "$bin/wakeup"; } >>"$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "[results.sh] done: $out (paste its tables into benches/RESULTS.md)"
