#!/usr/bin/env bash
# Cross-host benchmarks (issue 16): vnet (two vnetds sharing
# examples/two-hosts.yaml in etcd, VXLAN in the kernel executors) against
# Linux doing the same job (a VXLAN device and a bridge on each host), on
# the same underlay and the same guests, in one run. The hosts are network
# namespaces on this machine (scripts/two-hosts-lib.sh), so both ends and
# the "wire" share its CPUs: the figures compare the two datapaths, not a
# real network. The two systems alternate: every round brings one up on
# the namespaces, measures it once in each part, takes it down and does
# the same with the other (the order swapped every round).
#
#   tcp:     vm1 (h1) -> vm2 (h2), bridged, iperf3, 1 and 4 streams, guests'
#            default offloads (nothing in a guest is changed).
#   mpps:    64-byte UDP frames of one established flow vm1 -> vm2 from the
#            single-host harness's BPF_PROG_TEST_RUN live-frames generator,
#            sent out of vm1's eth0 on cpu 1, counted by vm2's eth0 and UDP
#            layer (benches/src/bin/crosshost.rs says why there).
#   latency: `ping -c 4` runs vm1 -> vm2, each a new ICMP id (a new flow in
#            both directions), first RTT against the later ones, medians
#            and p99, with ping on cpu 1 and on cpu 0 (the vnetds' cpu).
#
# Root. A manual command, never part of CI:
#   sudo benches/hosts.sh [--reps N] [--seconds S] [--mpps-seconds S]
#                         [--probes N] [--only tcp,mpps,latency] [--no-build]
# Defaults: 5 rounds (--reps), 5 s of tcp and 3 s of mpps per round, 200
# probes per latency row in all; about 6 minutes after the build. The
# tables go to stdout (for benches/RESULTS.md), progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
ARGS=${*:+ $*}
REPS=5
SECS=5
MPPS_SECS=3
PROBES=200
ONLY=tcp,mpps,latency
BUILD=1
usage() {
  echo "usage: sudo benches/hosts.sh [--reps N] [--seconds S] [--mpps-seconds S] [--probes N] [--only tcp,mpps,latency] [--no-build]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=${2:?--reps needs a number}; shift 2 ;;
    --seconds) SECS=${2:?--seconds needs a number}; shift 2 ;;
    --mpps-seconds) MPPS_SECS=${2:?--mpps-seconds needs a number}; shift 2 ;;
    --probes) PROBES=${2:?--probes needs a number}; shift 2 ;;
    --only) ONLY=${2:?--only needs a list: tcp,mpps,latency}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) usage ;;
  esac
done
for part in ${ONLY//,/ }; do
  case "$part" in tcp|mpps|latency) ;; *) echo "hosts.sh: --only takes tcp, mpps and latency, not $part" >&2; exit 2 ;; esac
done
for v in "$REPS" "$PROBES"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "hosts.sh: --reps and --probes take a positive whole number, not $v" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "hosts.sh: needs root (network namespaces, XDP, BPF_PROG_TEST_RUN): sudo $0" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "hosts.sh: needs 2 CPUs (traffic on cpu 1, the vnetds on cpu 0); this machine has $(nproc)" >&2; exit 1; }
say() { echo "[hosts] $*" >&2; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }

if [ "$BUILD" = 1 ]; then
  say "building vnetd, vnetctl and the crosshost harness (release)"
  cargo build --release -p vnetd -p vnetctl -p vnet-benches --bin crosshost >&2
fi
for b in vnetd vnetctl crosshost; do
  [ -x "target/release/$b" ] || { echo "hosts.sh: target/release/$b is missing: run without --no-build" >&2; exit 1; }
done
. scripts/two-hosts-lib.sh
OUT=$TH_LOGS/results
mkdir -p "$OUT"
trap th_cleanup EXIT
trap 'say "interrupted: removing the namespaces"; exit 130' INT TERM
th_cleanup
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
say "setting up: the underlay and etcd, hosts h1 and h2, guests vm1 (h1), vm2 and vm3 (h2); logs in $TH_LOGS"
th_underlay
th_host 1
th_host 2
th_guest vm1 h1 02:00:00:00:01:01 10.0.0.11 10.0.0.1
th_guest vm2 h2 02:00:00:00:01:02 10.0.0.12 10.0.0.1
th_guest vm3 h2 02:00:00:00:02:03 10.0.1.13 10.0.1.1

# Gbit/s received by vm2 in one iperf3 run of P streams.
measure() {
  local p=$1 out
  ip netns exec vnet-demo-vm2 pkill -x iperf3 2>/dev/null || true
  ip netns exec vnet-demo-vm2 iperf3 -s -D >/dev/null
  # iperf3 -D returns before its socket listens: wait for it (5 s at most).
  for _ in $(seq 100); do
    ip netns exec vnet-demo-vm2 ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.05
  done
  out=$(ip netns exec vnet-demo-vm1 iperf3 -c 10.0.0.12 -t "$SECS" -P "$p" -J)
  ip netns exec vnet-demo-vm2 pkill -x iperf3 2>/dev/null || true
  python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <<<"$out"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# TCP: one run of 1 and one of 4 streams, appended to tcp-SYSTEM-P.
run_tcp() {
  local name=$1 round=$2 g
  for p in 1 4; do
    g=$(measure "$p")
    echo "$g" >>"$OUT/tcp-$name-$p"
    say "$name tcp, $p stream(s), round $round/$REPS: $g Gbit/s"
  done
}

# First-packet latency, ping on cpu 1 and on cpu 0 (the vnetds' cpu): this
# round's share of the probes, one JSON line appended per cpu.
run_latency() {
  local name=$1 round=$2
  for cpu in 1 0; do
    say "$name latency, round $round/$REPS: $PROBES_PER_ROUND ping runs vm1 -> vm2 on cpu $cpu (each a new flow)"
    target/release/crosshost latency --label "$name" --ns vnet-demo-vm1 --dst 10.0.0.12 \
      --probes "$PROBES_PER_ROUND" --cpu "$cpu" >>"$OUT/latency-$name-cpu$cpu.json"
  done
}

# The kernel's tunnel counter REASON on host H (vnet).
tunnel_count() {
  th_vnetctl "$1" stats -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['reasons'].get('$2', 0))"
}

# Established Mpps vm1 -> vm2, one run, one JSON line appended. The
# generator redirects into vm1's eth0 natively; a veth delivers such frames
# to its peer (vm1-h, on the host) only when the peer runs XDP or has GRO on
# (TOOLCHAIN.md), and vm1-h runs neither under vnet's tc executor or the
# Linux bridge: GRO goes on at vm1-h (the host's end, not the guest's) for
# this run only, for both systems alike, and back off after.
run_mpps() {
  local name=$1 round=$2 enc0 dec0
  say "$name mpps, round $round/$REPS: GRO on at h1's vm1-h for the generator; $MPPS_SECS s of traffic"
  if [ "$name" = vnet ]; then enc0=$(tunnel_count h1 tunnel_encap); dec0=$(tunnel_count h2 tunnel_decap); fi
  ip netns exec vnet-demo-h1 ethtool -K vm1-h gro on
  target/release/crosshost mpps --label "$name" --src-ns vnet-demo-vm1 --dst-ns vnet-demo-vm2 \
    --src-mac 02:00:00:00:01:01 --dst-mac 02:00:00:00:01:02 --src 10.0.0.11 --dst 10.0.0.12 \
    --seconds "$MPPS_SECS" --reps 1 --cpu 1 >>"$OUT/mpps-$name.json"
  ip netns exec vnet-demo-h1 ethtool -K vm1-h gro off
  if [ "$name" = vnet ]; then
    echo "{\"encap\": $(($(tunnel_count h1 tunnel_encap) - enc0)), \"decap\": $(($(tunnel_count h2 tunnel_decap) - dec0))}" >>"$OUT/mpps-vnet-tunnel.json"
  fi
}

wait_ping() {
  for _ in $(seq 50); do ip netns exec vnet-demo-vm1 ping -c 1 -W 1 10.0.0.12 >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "hosts.sh: vm1 cannot ping vm2 across the hosts ($1); logs in $TH_LOGS" >&2
  return 1
}

# vnet: two vnetds sharing the topology in etcd, all their threads on cpu 0
# and the traffic (generator, ping) on cpu 1: the "another cpu than the
# worker's" of the single-host latency figure. They detach on exit.
up_vnet() {
  th_vnetd 1 examples/two-hosts.yaml
  th_vnetd 2 examples/two-hosts.yaml
  for pid in "${TH_VNETDS[@]}"; do taskset -a -p -c 0 "$pid" >/dev/null; done
  wait_ping vnet
}
down_vnet() { th_stop_vnetds; }

# Linux: a VXLAN device (VNI 42, UDP 4789) and a bridge on each host, with
# the same guest interfaces; removed again (vnetd's tunnel socket and the
# VXLAN device would both want the hosts' UDP 4789).
up_linux() {
  local n h
  for n in 1 2; do
    h=vnet-demo-h$n
    ip -n "$h" link add vx0 type vxlan id 42 local "192.0.2.$n" remote "192.0.2.$((3 - n))" dstport 4789 dev "u$n"
    ip -n "$h" link add br0 type bridge
    ip -n "$h" link set vx0 master br0 up
    ip -n "$h" link set "vm$n-h" master br0
    ip -n "$h" link set br0 up
  done
  wait_ping linux
}
down_linux() {
  local n
  for n in 1 2; do
    ip -n "vnet-demo-h$n" link del vx0
    ip -n "vnet-demo-h$n" link del br0
  done
}

# Rounds: each system is brought up, measured once in every selected part
# and taken down, alternating, the order swapped every round, so that a
# change in the machine's load lands on both systems.
PROBES_PER_ROUND=$(( (PROBES + REPS - 1) / REPS ))
say "$REPS alternating rounds of vnet (two vnetds, VXLAN in the kernel executors) and Linux (vxlan + bridge per host)"
for round in $(seq "$REPS"); do
  if [ $((round % 2)) = 1 ]; then order="vnet linux"; else order="linux vnet"; fi
  for sys in $order; do
    say "round $round/$REPS: $sys up"
    "up_$sys"
    want tcp && run_tcp "$sys" "$round"
    want latency && run_latency "$sys" "$round"
    want mpps && run_mpps "$sys" "$round"
    "down_$sys"
  done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

say "done; the tables follow"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r)"
echo "Command: \`sudo benches/hosts.sh$ARGS\`"
echo "Load average (1, 5, 15 min) at the start $LOAD0, at the end $LOAD1: on a shared machine, read the ratios."
echo "$REPS rounds, each bringing up vnet and then Linux (or the reverse, alternately) on the same namespaces."
echo
python3 - "$OUT" "$ONLY" "$REPS" "$SECS" "$MPPS_SECS" <<'PY'
import json, math, sys
out, only, reps, secs, mpps_secs = sys.argv[1:]
only = only.split(",")

def median(v):
    v = sorted(v)
    n = len(v)
    return float("nan") if n == 0 else (v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2)

def p99(v):
    v = sorted(v)
    return v[max(1, math.ceil(0.99 * len(v))) - 1]

def lines(path):
    return [json.loads(l) for l in open(path) if l.strip()]

def ratio(a, b):
    return f"{a / b:.2f}×" if b > 0 else "—"

if "tcp" in only:
    print(f"TCP vm1 (h1) → vm2 (h2) across the underlay, Gbit/s received, median (min–max) of {reps} × {secs} s")
    print()
    print("| streams | vnet (VXLAN in eBPF) | Linux (vxlan + bridge) | vnet / Linux |")
    print("| --- | --- | --- | --- |")
    for p in (1, 4):
        v = [float(x) for x in open(f"{out}/tcp-vnet-{p}")]
        l = [float(x) for x in open(f"{out}/tcp-linux-{p}")]
        f = lambda s: f"{median(s):.2f} ({min(s):.2f}–{max(s):.2f})"
        print(f"| {p} | {f(v)} | {f(l)} | {ratio(median(v), median(l))} |")
    print()

if "mpps" in only:
    v = [r for x in lines(f"{out}/mpps-vnet.json") for r in x["runs"]]
    l = [r for x in lines(f"{out}/mpps-linux.json") for r in x["runs"]]
    t = lines(f"{out}/mpps-vnet-tunnel.json")
    print(f"Established 64-byte UDP, one flow, vm1 (h1) → vm2 (h2): Mpps received by vm2's UDP layer "
          f"(checksums verified by the guest), median (min–max) of {reps} × {mpps_secs} s, generator on cpu 1")
    print()
    print("| | vnet (VXLAN in eBPF) | Linux (vxlan + bridge) | vnet / Linux |")
    print("| --- | --- | --- | --- |")
    mv, ml = [r["mpps"] for r in v], [r["mpps"] for r in l]
    f = lambda s: f"{median(s):.3f} ({min(s):.3f}–{max(s):.3f})"
    print(f"| Mpps received | {f(mv)} | {f(ml)} | {ratio(median(mv), median(ml))} |")
    ov, ol = [r["offered_mpps"] for r in v], [r["offered_mpps"] for r in l]
    print(f"| Mpps offered by the generator | {median(ov):.3f} | {median(ol):.3f} | |")
    cv, cl = [r["mpps_per_cpu_sec"] for r in v], [r["mpps_per_cpu_sec"] for r in l]
    print(f"| Mpps per CPU-second of the path (the sending thread, in whose softirq every hop runs, + ksoftirqd/1) "
          f"| {f(cv)} | {f(cl)} | {ratio(median(cv), median(cl))} |")
    print(f"| UDP checksum errors in vm2 | {sum(r['udp_csum_errors'] for r in v)} | {sum(r['udp_csum_errors'] for r in l)} | |")
    print()
    print(f"During vnet's runs (first frames and test bursts included) h1's kernel encapsulated "
          f"{sum(x['encap'] for x in t)} frames and h2's decapsulated {sum(x['decap'] for x in t)}; vm2's UDP "
          f"layer received {sum(r['udp_ok'] for r in v)} in the timed runs: the frames took the kernel flows, "
          f"not vnetd.")
    print()

if "latency" in only:
    pooled = {}
    for cpu in (1, 0):
        for name in ("vnet", "linux"):
            s = {"first_us": [], "later_us": [], "added_us": []}
            for x in lines(f"{out}/latency-{name}-cpu{cpu}.json"):
                for k in s:
                    s[k] += x["samples"][k]
            pooled[(cpu, name)] = s
    n = len(pooled[(1, "vnet")]["first_us"])
    print(f"First-packet latency across hosts: {n} runs of `ping -c 4 -i 0.05` vm1 (h1) → vm2 (h2) per row, "
          f"each a new ICMP id, so its first echo and its reply are new flows (vnet: simulated on h1, sent "
          f"through h1's tunnel socket, decapsulated by h2's kernel; the reply the same way back); the later "
          f"echoes of the same run are the established flow's; µs, median (p99)")
    print()
    print("| ping on | system | first RTT | later RTTs | added (first − later) |")
    print("| --- | --- | --- | --- | --- |")
    for cpu, where in ((1, "cpu 1 (not the vnetds')"), (0, "cpu 0 (the vnetds')")):
        for name, label in (("vnet", "vnet"), ("linux", "Linux (vxlan + bridge)")):
            s = pooled[(cpu, name)]
            c = lambda k: f"{median(s[k]):.0f} ({p99(s[k]):.0f})"
            print(f"| {where} | {label} | {c('first_us')} | {c('later_us')} | {c('added_us')} |")
    print()
    for cpu in (1, 0):
        d = median(pooled[(cpu, "vnet")]["added_us"]) - median(pooled[(cpu, "linux")]["added_us"])
        print(f"Ping on cpu {cpu}: vnet's first packets across hosts add {d:.0f} µs to the RTT beyond what "
              f"Linux's do (medians of the added RTT; two first packets per RTT).")
PY
