#!/usr/bin/env bash
# TCP guest→guest across two hosts (issue 16): vnet (two vnetds sharing
# examples/two-hosts.yaml in etcd, VXLAN in the kernel executors) against
# Linux doing the same job (a VXLAN device and a bridge on each host), on
# the same underlay and the same guests, in one run. The hosts are network
# namespaces on this machine (scripts/two-hosts-lib.sh), so both ends and
# the "wire" share its CPUs: the figures compare the two datapaths, not a
# real network.
#
#   bridged: vm1 (h1) → vm2 (h2), iperf3, 1 and 4 streams, guests' default
#   offloads (nothing in a guest is changed).
#
# Root. A manual command, never part of CI:
#   sudo benches/hosts.sh [--reps N] [--seconds S]
# The table goes to stdout; progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
REPS=3
SECS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    *) echo "usage: sudo benches/hosts.sh [--reps N] [--seconds S]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "hosts.sh: run as root: sudo $0" >&2; exit 1; }
say() { echo "[hosts] $*" >&2; }

say "building vnetd and vnetctl (release)"
cargo build --release -p vnetd -p vnetctl >&2
. scripts/two-hosts-lib.sh
trap th_cleanup EXIT INT TERM
th_cleanup
th_underlay
th_host 1
th_host 2
th_guest vm1 h1 02:00:00:00:01:01 10.0.0.11 10.0.0.1
th_guest vm2 h2 02:00:00:00:01:02 10.0.0.12 10.0.0.1
th_guest vm3 h2 02:00:00:00:02:03 10.0.1.13 10.0.1.1
ip netns exec vnet-demo-vm2 iperf3 -s -D -1 >/dev/null 2>&1 || true

# Gbit/s received by vm2 in one iperf3 run of P streams.
measure() {
  local p=$1 out
  ip netns exec vnet-demo-vm2 pkill -x iperf3 2>/dev/null || true
  ip netns exec vnet-demo-vm2 iperf3 -s -D >/dev/null
  sleep 0.3  # the server's socket (iperf3 -D returns before it listens)
  out=$(ip netns exec vnet-demo-vm1 iperf3 -c 10.0.0.12 -t "$SECS" -P "$p" -J)
  ip netns exec vnet-demo-vm2 pkill -x iperf3 2>/dev/null || true
  python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <<<"$out"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

declare -A results
run_system() {
  local name=$1
  for p in 1 4; do
    local got=()
    for r in $(seq "$REPS"); do
      got+=("$(measure "$p")")
      say "$name, $p stream(s), run $r: ${got[-1]} Gbit/s"
    done
    results["$name/$p"]=$(median "${got[@]}")
  done
}

say "vnet: two vnetds, VXLAN in the kernel executors"
th_vnetd 1 examples/two-hosts.yaml
th_vnetd 2 examples/two-hosts.yaml
for _ in $(seq 50); do ip netns exec vnet-demo-vm1 ping -c 1 -W 1 10.0.0.12 >/dev/null 2>&1 && break; sleep 0.2; done
run_system vnet
encap=$(th_vnetctl h1 stats -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["reasons"].get("tunnel_encap", 0))')
th_stop_vnetds

say "Linux: a VXLAN device (VNI 42, UDP 4789) and a bridge on each host"
for n in 1 2; do
  h=vnet-demo-h$n; peer=$((3 - n)); vm=vm$((n))-h
  [ "$n" = 2 ] && vm=vm2-h
  ip -n "$h" link add vx0 type vxlan id 42 local "192.0.2.$n" remote "192.0.2.$peer" dstport 4789 dev "u$n"
  ip -n "$h" link add br0 type bridge
  ip -n "$h" link set vx0 master br0 up
  ip -n "$h" link set "$vm" master br0
  ip -n "$h" link set br0 up
done
for _ in $(seq 50); do ip netns exec vnet-demo-vm1 ping -c 1 -W 1 10.0.0.12 >/dev/null 2>&1 && break; sleep 0.2; done
run_system linux

echo "TCP vm1 (h1) → vm2 (h2) across the underlay, Gbit/s received, median of $REPS × ${SECS} s"
echo
echo "| streams | vnet (VXLAN in eBPF) | Linux (vxlan + bridge) | vnet / Linux |"
echo "| --- | --- | --- | --- |"
for p in 1 4; do
  v=${results["vnet/$p"]}; l=${results["linux/$p"]}
  echo "| $p | $v | $l | $(python3 -c "print('%.2f' % ($v / $l))")× |"
done
echo
echo "vnet's h1 encapsulated $encap frames in the kernel (tunnel_encap) during its runs."
