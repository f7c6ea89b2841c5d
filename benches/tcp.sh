#!/usr/bin/env bash
# TCP and small-UDP benchmarks of issue 13: vnet against Linux doing the same
# job and against the plain skb-redirect ceiling, between veth guests that
# keep their DEFAULT offloads (GSO, partial checksums: this script never
# changes an offload anywhere), in one run, in one set of namespaces.
#
#   TCP guest→guest, iperf3, 1 and 4 streams (-P 4):
#     bridged      vnet bridge        | Linux bridge          | tc mirred redirect (ceiling)
#     routed       vnet router        | ip_forward
#     routed+snat  vnet router + SNAT | ip_forward + nft masquerade   (to an "outside" namespace)
#   small UDP from a guest (bridged), vnet's guest ports on `executor: skb`
#   and on `executor: xdp`, Linux bridge for reference:
#     iperf3 -u -l 18 -b 0 (what a guest's socket sends: partial checksums), and
#     trafgen 60-byte frames with full checksums from an AF_PACKET socket
#     (the executors' own packet rates, whatever the checksum state).
#
# Every system is set up, measured and torn down in turn inside the same
# namespaces, repetition after repetition (alternating, so a change of the
# machine's load hits every system alike); medians are reported, with the
# checksum errors counted in both guests (/proc/net/snmp InCsumErrors), the
# machine's CPU use during each run and the load other processes put on it
# just before (this machine has 2 CPUs and is shared).
#
# Root. A manual command, never part of CI or `cargo test`:
#   sudo benches/tcp.sh [--reps N] [--seconds S] [--cases LIST] [--profile] ...
# (--help lists the options). The table goes to stdout and to
# /tmp/vnet-bench-tcp/results.md; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PATH="$HOME/.cargo/bin:$PATH"

REPS=3
SECS=3
CASES="bridged,routed,snat,udp"
BUILD=1
PROFILE=0
WAIT_LOAD=""
WAIT_MAX=600
UDP_LEN=18
VNETD=""

usage() {
  cat <<EOF
usage: sudo benches/tcp.sh [options]
  --reps N          repetitions of every measurement; medians are reported (default $REPS)
  --seconds S       seconds per iperf3/trafgen run (default $SECS)
  --cases LIST      comma-separated, of: bridged routed snat udp (default $CASES)
  --profile         afterwards, perf record -a one 1-stream bridged run of each system
                    and print where the CPU time went (kernel symbols)
  --wait-load L     before starting, wait (up to --wait-max s) for the 1-minute load
                    average to fall below L (other engineers' builds)
  --wait-max S      the longest wait of --wait-load (default $WAIT_MAX)
  --udp-len B       UDP payload bytes of the small-packet runs (default $UDP_LEN)
  --vnetd PATH      use this vnetd instead of building target/release/vnetd
  --no-build        do not run cargo build (use target/release/vnetd as it is)
EOF
}

die() {
  echo "tcp.sh: error: $*" >&2
  exit 1
}

need_value() {
  [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
}

while [ $# -gt 0 ]; do
  case "$1" in
  --reps) need_value "$@"; REPS=$2; shift 2 ;;
  --seconds) need_value "$@"; SECS=$2; shift 2 ;;
  --cases) need_value "$@"; CASES=$2; shift 2 ;;
  --profile) PROFILE=1; shift ;;
  --wait-load) need_value "$@"; WAIT_LOAD=$2; shift 2 ;;
  --wait-max) need_value "$@"; WAIT_MAX=$2; shift 2 ;;
  --udp-len) need_value "$@"; UDP_LEN=$2; shift 2 ;;
  --vnetd) need_value "$@"; VNETD=$2; BUILD=0; shift 2 ;;
  --no-build) BUILD=0; shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "unknown option $1" ;;
  esac
done

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_uint "$REPS" && [ "$REPS" -ge 1 ] && [ "$REPS" -le 100 ] ||
  die "--reps $REPS: give a whole number from 1 to 100"
is_uint "$SECS" && [ "$SECS" -ge 1 ] && [ "$SECS" -le 600 ] ||
  die "--seconds $SECS: give a whole number of seconds from 1 to 600"
is_uint "$UDP_LEN" && [ "$UDP_LEN" -ge 16 ] && [ "$UDP_LEN" -le 1472 ] ||
  die "--udp-len $UDP_LEN: give a payload size from 16 (iperf3's minimum) to 1472 bytes"
is_uint "$WAIT_MAX" || die "--wait-max $WAIT_MAX: give a whole number of seconds"
[ -z "$WAIT_LOAD" ] || [[ "$WAIT_LOAD" =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
  die "--wait-load $WAIT_LOAD: give a load average such as 1.5"
DO_BRIDGED=0 DO_ROUTED=0 DO_SNAT=0 DO_UDP=0
IFS=, read -r -a _cases <<<"$CASES"
for c in "${_cases[@]}"; do
  case "$c" in
  bridged) DO_BRIDGED=1 ;;
  routed) DO_ROUTED=1 ;;
  snat | routed+snat) DO_SNAT=1 ;;
  udp) DO_UDP=1 ;;
  *) die "--cases: unknown case '$c': use bridged, routed, snat, udp" ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  die "needs root (network namespaces, eBPF, tc, nft): sudo benches/tcp.sh $*"
fi

# What the runs call, and the Debian package of each. Installed here if
# missing (the project's scripts install what they need).
declare -A PKG=([iperf3]=iperf3 [nft]=nftables [tc]=iproute2 [ip]=iproute2
  [bridge]=iproute2 [ping]=iputils-ping [ss]=iproute2 [trafgen]=netsniff-ng
  [perf]=linux-perf [python3]=python3 [ethtool]=ethtool)
missing=()
for prog in "${!PKG[@]}"; do
  [ "$prog" = perf ] && [ "$PROFILE" -eq 0 ] && continue
  command -v "$prog" >/dev/null || missing+=("${PKG[$prog]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[tcp.sh] installing ${missing[*]} (apt)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$BUILD" -eq 1 ]; then
  echo "[tcp.sh] building vnetd and vnetctl (release)" >&2
  cargo build --release -p vnetd -p vnetctl
fi
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
VNETD=${VNETD:-$TARGET/release/vnetd}
[ -x "$VNETD" ] || die "$VNETD is not an executable: build it (cargo build --release -p vnetd) or pass --vnetd PATH"
REVISION=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)

# ---------------------------------------------------------------- plumbing

WORK=/tmp/vnet-bench-tcp
# One run at a time: the namespaces and $WORK are this script's fixed names.
exec 8>/tmp/vnet-bench-tcp.lock
flock -n 8 || die "another benches/tcp.sh is running (it holds /tmp/vnet-bench-tcp.lock)"
P=vtb # namespace names: ${P}h (host: vnetd, the bridges), ${P}a ${P}b (guests), ${P}o (outside)
H=${P}h A=${P}a B=${P}b O=${P}o
VNETD_PID=""
IPERF_PIDFILE=$WORK/iperf3-server.pid

log() { echo "[tcp.sh $(date -u +%H:%M:%S)] $*" >&2; }
nsx() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

stop_vnetd() {
  [ -n "$VNETD_PID" ] || return 0
  if kill -0 "$VNETD_PID" 2>/dev/null; then
    kill -TERM "$VNETD_PID" 2>/dev/null || true
    local i
    for i in $(seq 100); do
      kill -0 "$VNETD_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$VNETD_PID" 2>/dev/null && kill -KILL "$VNETD_PID" 2>/dev/null
    wait "$VNETD_PID" 2>/dev/null || true
  fi
  VNETD_PID=""
}

stop_server() {
  if [ -s "$IPERF_PIDFILE" ]; then
    local pid
    pid=$(cat "$IPERF_PIDFILE")
    kill "$pid" 2>/dev/null || true
    rm -f "$IPERF_PIDFILE"
  fi
}

cleanup() {
  stop_server
  stop_vnetd
  for ns in $H $A $B $O; do ip netns del "$ns" 2>/dev/null || true; done
  mountpoint -q "$WORK/bpffs" 2>/dev/null && umount "$WORK/bpffs"
  return 0
}
trap cleanup EXIT
trap 'log "interrupted: cleaning up"; exit 130' INT TERM

load1() { cut -d' ' -f1 /proc/loadavg; }

# The whole machine's CPU counters: "busy softirq total" (jiffies).
cpu_counters() {
  awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print t-$5-$6, $8, t; exit}' /proc/stat
}
# Percent busy and in softirq between two cpu_counters readings, of ALL
# CPUs together (200% = both CPUs of a 2-CPU machine).
cpu_between() {
  awk -v n="$(nproc)" -v a="$1" -v b="$2" 'BEGIN{split(a,x," "); split(b,y," ");
    t=y[3]-x[3]; if (t<=0) {print "0 0"; exit}
    printf "%.0f %.0f\n", 100*n*(y[1]-x[1])/t, 100*n*(y[2]-x[2])/t}'
}
# What other processes use of the machine right now: busy % over half a
# second while nothing of this benchmark runs.
background_busy() {
  local a b
  a=$(cpu_counters)
  sleep 0.5
  b=$(cpu_counters)
  cpu_between "$a" "$b" | cut -d' ' -f1
}

# TCP and UDP InCsumErrors of a namespace: "tcp udp".
csum_errors() {
  nsx "$1" cat /proc/net/snmp | awk '
    $1=="Tcp:" && !th {for(i=2;i<=NF;i++) if($i=="InCsumErrors") tc=i; th=1; next}
    $1=="Tcp:" && th {t=$tc}
    $1=="Udp:" && !uh {for(i=2;i<=NF;i++) if($i=="InCsumErrors") uc=i; uh=1; next}
    $1=="Udp:" && uh {u=$uc}
    END {print t+0, u+0}'
}
csum_sum() { # total of "tcp udp" readings: after1 before1 after2 before2
  awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" 'BEGIN{split(a,w);split(b,x);split(c,y);split(d,z);
    print w[1]-x[1]+w[2]-x[2]+y[1]-z[1]+y[2]-z[2]}'
}
rx_packets() { nsx "$1" cat /sys/class/net/eth0/statistics/rx_packets; }

# Polls (every 0.1 s, up to $3 s) until `$1` succeeds; the condition is
# evaluated with eval. Returns 1 on timeout.
poll() {
  local cond=$1 what=$2 limit=${3:-10}
  local deadline=$((SECONDS + limit))
  until eval "$cond" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${limit}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

start_server() { # ns
  stop_server
  nsx "$1" iperf3 -s -1 -D -p 5201 --pidfile "$IPERF_PIDFILE"
  poll "[ -n \"\$(nsx $1 ss -Hltn 'sport = :5201')\" ]" "iperf3 server in $1" 5
}

# ------------------------------------------------------------- namespaces

mkdir -p "$WORK"
mountpoint -q "$WORK/bpffs" 2>/dev/null && umount "$WORK/bpffs"
rm -rf "${WORK:?}"/*
mkdir -p "$WORK/bpffs"
# vnetd's pins on a bpffs of this run's own (`ip netns exec` hides
# /sys/fs/bpf, and other vnetds of the machine use theirs).
mount -t bpf bpf "$WORK/bpffs"
RAW=$WORK/raw.tsv
: >"$RAW"
for ns in $H $A $B $O; do
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
MAC_A=02:00:00:00:01:01 MAC_B=02:00:00:00:01:02 MAC_O=02:00:00:00:01:03
# The guests' links: new veth pairs, so every offload is the kernel's default.
make_links() {
  local g
  for g in "$A vm1-h $MAC_A" "$B vm2-h $MAC_B" "$O uplink-h $MAC_O"; do
    set -- $g
    ip -n $H link del "$2" 2>/dev/null || true
    ip -n $H link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$1" link set eth0 address "$3"
    ip -n "$1" link set eth0 up
    ip -n $H link set "$2" up
  done
}
# The offloads that matter to TCP of every guest's eth0, one line.
offloads() {
  local ns
  for ns in $A $B $O; do
    printf '%s: %s\n' "${ns#"$P"}" "$(nsx "$ns" ethtool -k eth0 2>/dev/null | grep -E '^(tx-checksumming|generic-segmentation-offload|tcp-segmentation-offload|generic-receive-offload):' | sed 's/^tx-checksumming: /csum=/; s/^tcp-segmentation-offload: /tso=/; s/^generic-segmentation-offload: /gso=/; s/^generic-receive-offload: /gro=/' | paste -sd' ' -)"
  done | paste -sd',' - | sed 's/,/, /g'
}
make_links
OFFLOADS_BEFORE=$(offloads)
CHANGED_OFFLOADS="" # what systems changed in the guests, as found after them

# ------------------------------------------------------------- the systems

# Guests' addresses and routes for a path; the host's namespace is set up
# by the system.
guests_for() {
  case "$1" in
  bridged)
    ip -n $A addr add 10.0.0.11/24 dev eth0
    ip -n $B addr add 10.0.0.12/24 dev eth0
    SRC=$A DST_NS=$B DST_IP=10.0.0.12
    ;;
  routed)
    ip -n $A addr add 10.1.0.10/24 dev eth0
    ip -n $A route add default via 10.1.0.1
    ip -n $B addr add 10.2.0.10/24 dev eth0
    ip -n $B route add default via 10.2.0.1
    SRC=$A DST_NS=$B DST_IP=10.2.0.10
    ;;
  snat)
    # The outside knows no route to 10.1.0.0/24: only translated packets
    # get answers.
    ip -n $A addr add 10.1.0.10/24 dev eth0
    ip -n $A route add default via 10.1.0.1
    ip -n $O addr add 192.0.2.1/24 dev eth0
    SRC=$A DST_NS=$O DST_IP=192.0.2.1
    ;;
  esac
}

# vnet's topology for a path, every exterior port on executor $2.
topology_for() {
  local e=$2
  case "$1" in
  bridged)
    cat <<EOF
version: 1
bridges:
  tenant:
    ports:
      vm1: {interface: vm1-h, executor: $e}
      vm2: {interface: vm2-h, executor: $e}
EOF
    ;;
  routed)
    cat <<EOF
version: 1
bridges:
  red:
    ports:
      vm1: {interface: vm1-h, executor: $e}
      gw: {peer: r1/red}
  blue:
    ports:
      vm2: {interface: vm2-h, executor: $e}
      gw: {peer: r1/blue}
routers:
  r1:
    ports:
      red: {address: 10.1.0.1/24, peer: red/gw}
      blue: {address: 10.2.0.1/24, peer: blue/gw}
    routes:
      - {dst: 10.1.0.0/24, port: red}
      - {dst: 10.2.0.0/24, port: blue}
EOF
    ;;
  snat)
    # SNAT to the uplink's own address, as masquerade does.
    cat <<EOF
version: 1
bridges:
  red:
    ports:
      vm1: {interface: vm1-h, executor: $e}
      gw: {peer: r1/red}
routers:
  r1:
    ports:
      red: {address: 10.1.0.1/24, peer: red/gw}
      uplink: {address: 192.0.2.2/24, interface: uplink-h, executor: $e}
    routes:
      - {dst: 10.1.0.0/24, port: red}
      - {dst: 192.0.2.0/24, port: uplink}
nat:
  - {router: r1, type: snat, from: 10.1.0.0/24, to: 192.0.2.2, ports: 1024-65535, port: uplink}
EOF
    ;;
  esac
}

EXECUTORS="" # what vnetd logged it chose, per interface, for the last start

setup_vnet() { # path executor
  local topo=$WORK/topology-$1-$2.yaml log=$WORK/vnetd-$1-$2.log
  topology_for "$1" "$2" >"$topo"
  "$VNETD" --check "$topo" >/dev/null || die "vnetd --check rejects $topo"
  rm -rf "$WORK/state"
  ip netns exec $H "$VNETD" --topology "$topo" --state-dir "$WORK/state" \
    --socket "$WORK/vnetd.sock" --bpffs-dir "$WORK/bpffs" --detach-on-exit >"$log" 2>&1 &
  VNETD_PID=$!
  # Ready when it says so; a vnetd that exited is not waited for.
  if ! poll "grep -q 'vnetd running' '$log' || ! kill -0 $VNETD_PID" "vnetd to start (log: $log)" 30 ||
    ! grep -q 'vnetd running' "$log"; then
    local status=running
    kill -0 "$VNETD_PID" 2>/dev/null || { wait "$VNETD_PID" && status=0 || status=$?; }
    log "  vnetd did not start (exit status: $status); the end of its log ($log):"
    tail -20 "$log" >&2
    stop_vnetd
    return 1
  fi
  EXECUTORS=$(grep -o 'interface=[a-z0-9-]* executor="[a-z]*"' "$log" | sed 's/interface=//; s/ executor="/=/; s/"$//' | paste -sd' ' -)
  cp "$log" "$WORK/last-vnetd.log"
}

setup_linux() { # path
  case "$1" in
  bridged)
    ip -n $H link add br0 type bridge
    ip -n $H link set vm1-h master br0
    ip -n $H link set vm2-h master br0
    ip -n $H link set br0 up
    ;;
  routed | snat)
    local out=vm2-h
    [ "$1" = snat ] && out=uplink-h
    ip -n $H addr add 10.1.0.1/24 dev vm1-h
    if [ "$1" = snat ]; then
      ip -n $H addr add 192.0.2.2/24 dev uplink-h
    else
      ip -n $H addr add 10.2.0.1/24 dev vm2-h
    fi
    for s in net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0; do
      nsx $H sysctl -qw "$s"
    done
    if [ "$1" = snat ]; then
      printf 'table ip vnet_bench {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname "%s" masquerade\n  }\n}\n' "$out" >"$WORK/masquerade.nft"
      nsx $H nft -f "$WORK/masquerade.nft"
    fi
    ;;
  esac
}

setup_ceiling() {
  for pair in "vm1-h vm2-h" "vm2-h vm1-h"; do
    set -- $pair
    nsx $H tc qdisc add dev "$1" clsact
    nsx $H tc filter add dev "$1" ingress u32 match u32 0 0 action mirred egress redirect dev "$2"
  done
}

# Back to bare veths: no system, no addresses, no neighbours.
teardown() {
  stop_server
  stop_vnetd
  ip -n $H link del br0 2>/dev/null || true
  for i in vm1-h vm2-h uplink-h; do
    nsx $H tc qdisc del dev $i clsact 2>/dev/null || true
    ip -n $H addr flush dev $i
    ip -n $H neigh flush dev $i 2>/dev/null || true
  done
  nsx $H nft delete table ip vnet_bench 2>/dev/null || true
  nsx $H sysctl -qw net.ipv4.ip_forward=0
  for ns in $A $B $O; do
    ip -n "$ns" route flush dev eth0 2>/dev/null || true
    ip -n "$ns" addr flush dev eth0
    ip -n "$ns" neigh flush dev eth0 2>/dev/null || true
  done
}

# setup PATH SYSTEM: SYSTEM is vnet (executor auto), vnet-skb, vnet-xdp,
# linux or ceiling. Then waits until the first packets went through.
setup() {
  guests_for "$1"
  case "$2" in
  vnet) setup_vnet "$1" auto ;;
  vnet-skb) setup_vnet "$1" skb ;;
  vnet-xdp) setup_vnet "$1" xdp ;;
  linux) setup_linux "$1" ;;
  ceiling) setup_ceiling ;;
  esac || return 1
  # The far guest speaks first (a bridge learns its MAC), then the near one.
  local back=10.0.0.11
  [ "$1" = bridged ] || back=""
  [ -z "$back" ] || nsx $DST_NS ping -c 1 -W 1 $back >/dev/null 2>&1 || true
  poll "nsx $SRC ping -c 1 -W 1 $DST_IP" "$2 $1: ping from the guest to $DST_IP" 15
}

# ------------------------------------------------------------ measurements

# One row of raw results: case system metric rep value csum_errors busy% softirq% background% load
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }

# iperf3 TCP, $3 streams: Gbit/s received.
measure_tcp() { # path system streams rep
  local path=$1 sys=$2 n=$3 rep=$4
  local bg load c0 c1 s0 s1 d0 d1 json=$WORK/iperf-$path-$sys-P$n-$rep.json
  bg=$(background_busy)
  load=$(load1)
  start_server $DST_NS || return 1
  s0=$(csum_errors $SRC) d0=$(csum_errors $DST_NS) c0=$(cpu_counters)
  local ok=1
  timeout $((SECS + 15)) ip netns exec $SRC iperf3 -c $DST_IP -p 5201 -t "$SECS" -P "$n" -J >"$json" 2>&1 || ok=0
  c1=$(cpu_counters) s1=$(csum_errors $SRC) d1=$(csum_errors $DST_NS)
  stop_server
  local cpu csum gbps retr
  cpu=$(cpu_between "$c0" "$c1")
  csum=$(csum_sum "$d1" "$d0" "$s1" "$s0")
  # Besides Gbit/s, Gbit per CPU-second of the two iperf3 processes
  # (iperf3's own figures: their user + system time, which on this kernel's
  # tick accounting includes the softirq work done in their context, where
  # the forwarding runs): what a byte costs, which other processes' load
  # changes much less than the rate.
  local eff
  if [ $ok -eq 1 ] && read -r gbps retr eff < <(python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["end"]
c = e["cpu_utilization_percent"]
g = e["sum_received"]["bits_per_second"] / 1e9
print("%.3f %d %.3f" % (g, e["sum_sent"].get("retransmits", 0), g / ((c["host_total"] + c["remote_total"]) / 100)))' "$json" 2>/dev/null); then
    record "$path" "$sys" "tcp-P$n" "$rep" "$gbps" "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
    record "$path" "$sys" "tcp-P$n-per-cpu" "$rep" "$eff" 0 ${cpu% *} ${cpu#* } "$bg" "$load"
    log "  $path $sys ${n} stream(s): $gbps Gbit/s ($eff per iperf3 CPU-second), $retr retransmits, checksum errors $csum, CPU ${cpu% *}% (softirq ${cpu#* }%), others ${bg}% before"
  else
    record "$path" "$sys" "tcp-P$n" "$rep" fail "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
    log "  $path $sys ${n} stream(s): FAILED (checksum errors in the guests: $csum); iperf3 said: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","?"))' "$json" 2>/dev/null || head -c 300 "$json")"
  fi
}

# iperf3 UDP, $UDP_LEN-byte payloads, unlimited rate: packets/s the
# server's socket received, and frames/s the receiving guest's eth0 took.
measure_udp_iperf() { # system rep
  local sys=$1 rep=$2
  local bg load c0 c1 s0 s1 d0 d1 r0 r1 t0 t1 json=$WORK/iperf-udp-$sys-$rep.json
  bg=$(background_busy)
  load=$(load1)
  start_server $DST_NS || return 1
  s0=$(csum_errors $SRC) d0=$(csum_errors $DST_NS) c0=$(cpu_counters) r0=$(rx_packets $DST_NS) t0=$(date +%s.%N)
  local ok=1
  timeout $((SECS + 15)) ip netns exec $SRC iperf3 -c $DST_IP -p 5201 -t "$SECS" -u -l "$UDP_LEN" -b 0 -J >"$json" 2>&1 || ok=0
  t1=$(date +%s.%N) r1=$(rx_packets $DST_NS) c1=$(cpu_counters) s1=$(csum_errors $SRC) d1=$(csum_errors $DST_NS)
  stop_server
  local cpu csum rx sent got
  cpu=$(cpu_between "$c0" "$c1")
  csum=$(csum_sum "$d1" "$d0" "$s1" "$s0")
  # eth0's count over the whole client run (its seconds, plus a handshake).
  rx=$(awk -v a="$r0" -v b="$r1" -v s="$SECS" 'BEGIN{printf "%.0f", (b-a)/s}')
  if [ $ok -eq 1 ] && read -r sent got < <(python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["end"]
s, r = e["sum_sent"], e["sum_received"]
print("%.0f %.0f" % (s["packets"] / s["seconds"], (r["packets"] - r["lost_packets"]) / r["seconds"]))' "$json" 2>/dev/null); then
    record udp "$sys" iperf-received-pps "$rep" "$got" "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
    record udp "$sys" iperf-sent-pps "$rep" "$sent" "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
    record udp "$sys" iperf-eth0-pps "$rep" "$rx" "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
    log "  udp $sys iperf3 -u -l $UDP_LEN: sent $sent/s, received by iperf3 $got/s, at the guest's eth0 $rx/s, checksum errors $csum, CPU ${cpu% *}%"
  else
    record udp "$sys" iperf-received-pps "$rep" fail "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
    log "  udp $sys iperf3 -u -l $UDP_LEN: FAILED (checksum errors in the guests: $csum); iperf3 said: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","?"))' "$json" 2>/dev/null || head -c 300 "$json")"
  fi
}

# trafgen: 14+20+8+UDP_LEN-byte frames with full IPv4 and UDP checksums,
# as fast as one AF_PACKET sender goes, for $SECS s; frames/s at the
# receiving guest's eth0 and datagrams/s its UDP layer took (no listener:
# NoPorts counts them, after the checksum check).
measure_udp_trafgen() { # system rep
  local sys=$1 rep=$2
  local bg load c0 c1 s0 s1 d0 d1 r0 r1 u0 u1 conf=$WORK/trafgen.cfg
  cat >"$conf" <<EOF
{ eth(da=$MAC_B, sa=$MAC_A), ipv4(saddr=10.0.0.11, daddr=10.0.0.12, ttl=64), udp(sp=5000, dp=6000), fill(0x41, $UDP_LEN) }
EOF
  bg=$(background_busy)
  load=$(load1)
  udp_in() { nsx $DST_NS awk '$1=="Udp:" && h {print $2+$3; exit} $1=="Udp:" {h=1}' /proc/net/snmp; }
  s0=$(csum_errors $SRC) d0=$(csum_errors $DST_NS) c0=$(cpu_counters) r0=$(rx_packets $DST_NS) u0=$(udp_in)
  timeout -s INT "$SECS" ip netns exec $SRC trafgen --dev eth0 --conf "$conf" --cpus 1 --no-sock-mem >"$WORK/trafgen-$sys-$rep.log" 2>&1 || true
  sleep 0.05 # frames still in a softirq queue
  r1=$(rx_packets $DST_NS) u1=$(udp_in) c1=$(cpu_counters) s1=$(csum_errors $SRC) d1=$(csum_errors $DST_NS)
  local cpu csum rx udp
  cpu=$(cpu_between "$c0" "$c1")
  csum=$(csum_sum "$d1" "$d0" "$s1" "$s0")
  rx=$(awk -v a="$r0" -v b="$r1" -v s="$SECS" 'BEGIN{printf "%.0f", (b-a)/s}')
  udp=$(awk -v a="$u0" -v b="$u1" -v s="$SECS" 'BEGIN{printf "%.0f", (b-a)/s}')
  record udp "$sys" trafgen-eth0-pps "$rep" "$rx" "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
  record udp "$sys" trafgen-udp-pps "$rep" "$udp" "$csum" ${cpu% *} ${cpu#* } "$bg" "$load"
  log "  udp $sys trafgen $((42 + UDP_LEN))-byte frames: at the guest's eth0 $rx/s, through its UDP checksum check $udp/s, checksum errors $csum, CPU ${cpu% *}%"
}

# ------------------------------------------------------------------- run

if [ -n "$WAIT_LOAD" ]; then
  deadline=$((SECONDS + WAIT_MAX))
  while awk -v l="$(load1)" -v t="$WAIT_LOAD" 'BEGIN{exit !(l >= t)}'; do
    [ $SECONDS -lt $deadline ] || { log "load still $(load1) after ${WAIT_MAX}s: starting anyway"; break; }
    log "load average $(load1) >= $WAIT_LOAD: waiting (other work on the machine)"
    sleep 10
  done
fi

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
START_UPTIME=$(uptime)
START_TOP=$(top -b -n 2 -d 0.5 -w 200 | awk '/^top -/{n++} n==2 && /^ *[0-9]+ / && k<5 {printf "%s %s%%; ", $12, $9; k++}')
log "machine: $(nproc) CPUs, $(uname -r); $START_UPTIME"
log "busiest processes now: $START_TOP"
log "guest eth0 offloads (defaults, never changed here): $OFFLOADS_BEFORE"
log "vnetd: $VNETD (git $REVISION$([ "$DIRTY" -gt 0 ] && echo ", $DIRTY files modified"))"

declare -A VNET_EXECUTORS DURING_OFFLOADS
run_system() { # path system rep
  local path=$1 sys=$2 rep=$3
  log "$path / $sys (rep $rep/$REPS)"
  if ! setup "$path" "$sys"; then
    record "$path" "$sys" setup "$rep" fail 0 0 0 0 "$(load1)"
    log "  $path $sys: setup failed (see above); skipped this repetition"
    teardown
    return 0
  fi
  [[ "$sys" == vnet* ]] && VNET_EXECUTORS["$path/$sys"]=$EXECUTORS
  DURING_OFFLOADS["$path/$sys"]=$(offloads)
  measure_tcp "$path" "$sys" 1 "$rep" || true
  measure_tcp "$path" "$sys" 4 "$rep" || true
  teardown
  check_offloads "$path/$sys"
}

# A system that changed a guest's offloads (XDP on a veth in native mode
# turns its peer's GSO off; vnetd before commit "vnetd changes nothing on a
# veth's peer" enabled GRO there) would change every later measurement: say
# so, and give the guests new links with the defaults again.
check_offloads() {
  local now
  now=$(offloads)
  if [ "$now" != "$OFFLOADS_BEFORE" ]; then
    log "  the guests' offloads differ after $1: $now (were: $OFFLOADS_BEFORE); recreating their veths"
    CHANGED_OFFLOADS+="after $1: $now; "
    make_links
    [ "$(offloads)" = "$OFFLOADS_BEFORE" ] || die "new veths do not have the offloads of the first ones: $(offloads)"
  fi
}

run_udp_system() { # system rep
  local sys=$1 rep=$2
  log "udp (bridged) / $sys (rep $rep/$REPS)"
  if ! setup bridged "$sys"; then
    record udp "$sys" setup "$rep" fail 0 0 0 0 "$(load1)"
    log "  udp $sys: setup failed (see above); skipped this repetition"
    teardown
    return 0
  fi
  [[ "$sys" == vnet* ]] && VNET_EXECUTORS["udp/$sys"]=$EXECUTORS
  DURING_OFFLOADS["udp/$sys"]=$(offloads)
  measure_udp_iperf "$sys" "$rep" || true
  measure_udp_trafgen "$sys" "$rep" || true
  teardown
  check_offloads "udp/$sys"
}

for rep in $(seq "$REPS"); do
  [ $DO_BRIDGED -eq 0 ] || for s in vnet linux ceiling; do run_system bridged $s "$rep"; done
  [ $DO_ROUTED -eq 0 ] || for s in vnet linux; do run_system routed $s "$rep"; done
  [ $DO_SNAT -eq 0 ] || for s in vnet linux; do run_system snat $s "$rep"; done
  [ $DO_UDP -eq 0 ] || for s in vnet-skb vnet-xdp linux; do run_udp_system $s "$rep"; done
done
END_UPTIME=$(uptime)
OFFLOADS_AFTER=$(offloads)

# --------------------------------------------------------------- profile

PROFILE_OUT=$WORK/profile.txt
: >"$PROFILE_OUT"
if [ "$PROFILE" -eq 1 ]; then
  for s in vnet linux ceiling; do
    log "profile: bridged / $s, 1 stream, perf record -a"
    setup bridged $s || { teardown; continue; }
    start_server $DST_NS
    perf record -a -o "$WORK/perf-$s.data" -- \
      ip netns exec $SRC iperf3 -c $DST_IP -p 5201 -t "$SECS" -J >"$WORK/perf-iperf-$s.json" 2>"$WORK/perf-$s.log" || true
    stop_server
    teardown
    {
      echo "### bridged, $s: $(python3 -c 'import json,sys; print("%.2f Gbit/s" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/perf-iperf-$s.json" 2>/dev/null || echo '?')"
      echo '```'
      # Where the machine's time went, by command (other engineers' work
      # included), then inside the benchmark's own commands (iperf3 and the
      # softirq threads: the forwarding runs in their context). sed, not
      # head: head's early exit would kill perf with SIGPIPE.
      perf report -i "$WORK/perf-$s.data" --stdio --no-children --sort comm 2>/dev/null |
        grep -E '^ +[0-9]' | sed -n 1,6p || true
      echo '--- iperf3 and ksoftirqd only:'
      perf report -i "$WORK/perf-$s.data" --stdio --no-children --comms iperf3,ksoftirqd/0,ksoftirqd/1 \
        --percentage relative --sort sym 2>/dev/null | grep -E '^ +[0-9]' | sed -n 1,20p || true
      echo '```'
    } >>"$PROFILE_OUT"
  done
fi

# --------------------------------------------------------------- summary

export REPS SECS UDP_LEN REVISION DIRTY START_DATE START_UPTIME END_UPTIME START_TOP OFFLOADS_BEFORE OFFLOADS_AFTER
VNET_EXEC_SUMMARY=""
for k in "${!VNET_EXECUTORS[@]}"; do VNET_EXEC_SUMMARY+="$k: ${VNET_EXECUTORS[$k]}; "; done
export VNET_EXEC_SUMMARY
DURING_SUMMARY=""
for k in "${!DURING_OFFLOADS[@]}"; do
  [ "${DURING_OFFLOADS[$k]}" = "$OFFLOADS_BEFORE" ] || DURING_SUMMARY+="$k: ${DURING_OFFLOADS[$k]}; "
done
export DURING_SUMMARY CHANGED_OFFLOADS
python3 - "$RAW" "$PROFILE_OUT" <<'PY' | tee "$WORK/results.md"
import os, statistics, sys
from collections import defaultdict

raw, profile = sys.argv[1], sys.argv[2]
E = os.environ
vals = defaultdict(list)   # (case, system, metric) -> [float]
fails = defaultdict(int)
csum = defaultdict(int)    # (case, system) -> checksum errors, all runs
cpu = defaultdict(list)    # (case, system, metric) -> [busy%]
bg, loads = [], []
for line in open(raw):
    case, system, metric, rep, value, cs, busy, soft, back, load = line.rstrip("\n").split("\t")
    csum[(case, system)] += int(cs)
    bg.append(float(back)); loads.append(float(load))
    if value == "fail":
        fails[(case, system, metric)] += 1
        continue
    vals[(case, system, metric)].append(float(value))
    cpu[(case, system, metric)].append(float(busy))

def med(case, system, metric):
    v = vals.get((case, system, metric))
    return statistics.median(v) if v else None

def cell(case, system, metric, fmt="{:.2f}"):
    m = med(case, system, metric)
    n = fails.get((case, system, metric), 0)
    if m is None:
        return "failed" if n else "—"
    v = vals[(case, system, metric)]
    s = fmt.format(m)
    if len(v) > 1:
        s += " (" + fmt.format(min(v)) + "–" + fmt.format(max(v)) + ")"
    if n:
        s += f", {n} failed"
    return s

def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b

def rcell(r, target=None):
    if r is None:
        return "—"
    s = f"{r:.2f}×"
    if target is not None:
        s += " ✔" if r >= target else f" ✘ (target ≥ {target}×)"
    return s

print(f"Run {E['START_DATE']}, git {E['REVISION']}" + (f" with {E['DIRTY']} modified files" if E['DIRTY'] != '0' else "")
      + f"; {E['REPS']} repetitions of {E['SECS']} s, medians (min–max).")
print()
print(f"Load: at start `{E['START_UPTIME'].strip()}`, at the end `{E['END_UPTIME'].strip()}`; "
      f"other processes' CPU use measured for 0.5 s before each run: median {statistics.median(bg) if bg else 0:.0f}%, "
      f"max {max(bg) if bg else 0:.0f}% (of {os.cpu_count() * 100}%).")
print()
print(f"Guest offloads (defaults; this script changes none): `{E['OFFLOADS_BEFORE']}`.")
if E["DURING_SUMMARY"]:
    print(f"Different while a system ran: {E['DURING_SUMMARY']}")
if E["CHANGED_OFFLOADS"]:
    print(f"Left changed by a system (the guests then got new veths with the defaults): {E['CHANGED_OFFLOADS']}")
print(f"vnet's executors as vnetd logged them: {E['VNET_EXEC_SUMMARY'] or '—'}")
print()

tcp_cases = [c for c in ("bridged", "routed", "snat") if any(k[0] == c for k in vals) or any(k[0] == c for k in fails)]
if tcp_cases:
    names = {"bridged": ("Linux bridge", True), "routed": ("ip_forward", False), "snat": ("ip_forward + nft masquerade", False)}
    print("TCP guest→guest, iperf3, Gbit/s received (machine CPU busy during the run, % of 200):")
    print()
    print("| path | streams | vnet | Linux | skb-redirect ceiling | vnet / Linux | vnet / ceiling | checksum errors (vnet, Linux, ceiling) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in tcp_cases:
        lname, has_ceiling = names[c]
        for n in (1, 4):
            m = f"tcp-P{n}"
            v, l, k = med(c, "vnet", m), med(c, "linux", m), med(c, "ceiling", m)
            target_l = 1.25 if c in ("bridged", "snat") else None
            cpus = "/".join(f"{statistics.median(cpu[(c, s, m)]):.0f}%" if cpu.get((c, s, m)) else "—"
                            for s in (("vnet", "linux", "ceiling") if has_ceiling else ("vnet", "linux")))
            label = {"bridged": "bridged", "routed": "routed", "snat": "routed + SNAT"}[c]
            print(f"| {label} (vs {lname}) | {n} | {cell(c, 'vnet', m)} | {cell(c, 'linux', m)} | "
                  f"{cell(c, 'ceiling', m) if has_ceiling else 'not measured'} | {rcell(ratio(v, l), target_l)} | "
                  f"{rcell(ratio(v, k), 0.85) if has_ceiling else '—'} | "
                  + ", ".join(str(csum[(c, s)]) for s in (("vnet", "linux", "ceiling") if has_ceiling else ("vnet", "linux")))
                  + f" (CPU {cpus}) |")
    print()
    print("The same runs, Gbit per CPU-second of the two iperf3 processes (sender + receiver, softirq work in their context included): the cost of a byte, less sensitive to other processes' load than the rate:")
    print()
    print("| path | streams | vnet | Linux | skb-redirect ceiling | vnet / Linux | vnet / ceiling |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for c in tcp_cases:
        lname, has_ceiling = names[c]
        for n in (1, 4):
            m = f"tcp-P{n}-per-cpu"
            v, l, k = med(c, "vnet", m), med(c, "linux", m), med(c, "ceiling", m)
            label = {"bridged": "bridged", "routed": "routed", "snat": "routed + SNAT"}[c]
            print(f"| {label} (vs {lname}) | {n} | {cell(c, 'vnet', m)} | {cell(c, 'linux', m)} | "
                  f"{cell(c, 'ceiling', m) if has_ceiling else 'not measured'} | {rcell(ratio(v, l))} | "
                  f"{rcell(ratio(v, k)) if has_ceiling else '—'} |")
    if "bridged" in tcp_cases:
        for n in (1, 4):
            r = ratio(med("bridged", "ceiling", f"tcp-P{n}"), med("bridged", "linux", f"tcp-P{n}"))
            if r is not None:
                print(f"\nCeiling / Linux bridge, {n} stream(s): {r:.2f}× (the most any bridge can gain over Linux's on this machine)", end="")
        print()
    print()

if any(k[0] == "udp" for k in list(vals) + list(fails)):
    L = E["UDP_LEN"]
    print(f"Small UDP from a guest, bridged, packets/s (iperf3 -u -l {L} -b 0; trafgen {42 + int(L)}-byte frames with full checksums):")
    print()
    print("| system | iperf3 sent | iperf3 received | iperf3: at the receiver's eth0 | trafgen: at the receiver's eth0 | trafgen: through its UDP checksum check | checksum errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s, label in (("vnet-skb", "vnet, executor: skb"), ("vnet-xdp", "vnet, executor: xdp"), ("linux", "Linux bridge")):
        f = "{:.0f}"
        print(f"| {label} | {cell('udp', s, 'iperf-sent-pps', f)} | {cell('udp', s, 'iperf-received-pps', f)} | "
              f"{cell('udp', s, 'iperf-eth0-pps', f)} | {cell('udp', s, 'trafgen-eth0-pps', f)} | "
              f"{cell('udp', s, 'trafgen-udp-pps', f)} | {csum[('udp', s)]} |")
    for m, what in (("iperf-received-pps", "iperf3 received"), ("trafgen-eth0-pps", "trafgen at eth0"), ("trafgen-udp-pps", "trafgen through the checksum check")):
        r = ratio(med("udp", "vnet-skb", m), med("udp", "vnet-xdp", m))
        print(f"\nskb / xdp executor, {what}: {rcell(r)}", end="")
    print("\n")

if any(v for v in csum.values()):
    print("**Checksum errors** (InCsumErrors, TCP + UDP, both guests, all runs): "
          + ", ".join(f"{c}/{s}: {n}" for (c, s), n in sorted(csum.items()) if n))
    print()
prof = open(profile).read() if os.path.exists(profile) else ""
if prof:
    print("Profiles (perf record -a, cpu-clock, whole machine, top symbols):")
    print()
    print(prof)
PY
log "raw results: $RAW; vnetd logs and iperf3 JSON in $WORK"
