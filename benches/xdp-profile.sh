#!/usr/bin/env bash
# Where the XDP program's flow hit spends its time, by source line: runs the
# XDP benchmark's case (BPF_PROG_TEST_RUN, default vnet_hit_bridged) in the
# background and samples it with perf (benches/xdp_profile.py). Prints
# Markdown tables for benches/RESULTS.md.
#
# Root (BPF_PROG_TEST_RUN, perf on every CPU). A manual command, never part
# of CI.  Usage: sudo benches/xdp-profile.sh [case] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "xdp-profile.sh: needs root (BPF_PROG_TEST_RUN, perf -a): sudo benches/xdp-profile.sh $*" >&2
  exit 1
fi
case_name=${1:-vnet_hit_bridged}
seconds=${2:-5}
bash scripts/bootstrap.sh
if ! command -v perf >/dev/null; then
  echo "[xdp-profile.sh] apt: installing linux-perf"
  apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
fi
echo "[xdp-profile.sh] building the XDP benchmark (release)"
bench=$(cargo bench -p vnet-benches --bench xdp --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "xdp":
        print(m["executable"])' | tail -1)
[ -n "$bench" ] || { echo "xdp-profile.sh: cargo built no xdp benchmark; run cargo bench -p vnet-benches --bench xdp --no-run to see why" >&2; exit 1; }
echo "[xdp-profile.sh] running xdp/$case_name for $((seconds + 10)) s and sampling it for $seconds s"
"$bench" --bench "xdp/$case_name" --profile-time $((seconds + 10)) >/dev/null 2>&1 &
runner=$!
trap 'kill $runner 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  bpftool prog show 2>/dev/null | grep -q "name vnet_xdp " && break
  sleep 0.2
done
sleep 2 # past loading, into the runs
python3 benches/xdp_profile.py --name vnet_xdp --seconds "$seconds"
