#!/usr/bin/env bash
# The two-host demo (scripts/demo.sh --hosts 2): two hosts, each a network
# namespace running its own vnetd, share one topology in etcd
# (examples/two-hosts.yaml) and are joined by an underlay bridge. A guest on
# h1 talks to guests on h2, bridged and through a router: the ingress host
# simulates, the frame crosses the underlay in VXLAN, the other host's
# kernel delivers it. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates namespaces and attaches the kernel programs): sudo $0 --hosts 2" >&2; exit 1; }

bash scripts/bootstrap.sh
echo "[demo] building vnetd and vnetctl (release)"
cargo build --release -p vnetd -p vnetctl
VNETD=target/release/vnetd
U=vnet-demo-u
ETCD_DATA=/dev/shm/vnet-demo-etcd
LOGS=$(mktemp -d /tmp/vnet-demo-hosts.XXXXXX)
vnetctl() { local h=$1; shift; target/release/vnetctl --socket "/tmp/vnet-demo-$h.sock" "$@"; }
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  for ns in vnet-demo-vm1 vnet-demo-vm2 vnet-demo-vm3 vnet-demo-h1 vnet-demo-h2 "$U"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$ETCD_DATA" /sys/fs/bpf/vnet-demo-h1 /sys/fs/bpf/vnet-demo-h2
  echo "[demo] removed the namespaces; the logs are in $LOGS"
}
trap cleanup EXIT INT TERM

echo "[demo] the underlay: namespace $U with bridge br0 (192.0.2.254) and etcd on it"
ip netns add "$U"
ip -n "$U" link set lo up
ip -n "$U" link add br0 type bridge
ip -n "$U" addr add 192.0.2.254/24 dev br0
ip -n "$U" link set br0 up
rm -rf "$ETCD_DATA"
ip netns exec "$U" etcd --name demo --data-dir "$ETCD_DATA" --logger zap --log-level warn \
  --listen-client-urls http://192.0.2.254:2379 --advertise-client-urls http://192.0.2.254:2379 \
  --listen-peer-urls http://192.0.2.254:2380 --initial-advertise-peer-urls http://192.0.2.254:2380 \
  --initial-cluster demo=http://192.0.2.254:2380 >"$LOGS/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  ip netns exec "$U" curl -fsS http://192.0.2.254:2379/version >/dev/null 2>&1 && break; sleep 0.1
done
ip netns exec "$U" curl -fsS http://192.0.2.254:2379/version >/dev/null || { echo "[demo] etcd did not start:"; cat "$LOGS/etcd.log"; exit 1; }

for n in 1 2; do
  h=vnet-demo-h$n
  echo "[demo] host h$n: namespace $h, underlay address 192.0.2.$n (MTU 1550: room for VXLAN around a guest's 1500)"
  ip netns add "$h"
  ip -n "$h" link set lo up
  ip -n "$h" link add u$n type veth peer name p$n netns "$U"
  ip -n "$h" addr add 192.0.2.$n/24 dev u$n
  ip -n "$h" link set u$n mtu 1550 up
  ip -n "$U" link set p$n mtu 1550 master br0 up
done

guest() { # name host mac address gateway
  local ns=vnet-demo-$1
  ip netns add "$ns"
  ip -n "vnet-demo-$2" link add "$1-h" type veth peer name eth0 netns "$ns"
  ip -n "$ns" link set eth0 address "$3"
  ip -n "$ns" addr add "$4/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$5"
  ip -n "vnet-demo-$2" link set "$1-h" up
}
echo "[demo] guests: vm1 on h1 (10.0.0.11), vm2 on h2 (10.0.0.12, same bridge), vm3 on h2 (10.0.1.13, behind the router)"
guest vm1 h1 02:00:00:00:01:01 10.0.0.11 10.0.0.1
guest vm2 h2 02:00:00:00:01:02 10.0.0.12 10.0.0.1
guest vm3 h2 02:00:00:00:02:03 10.0.1.13 10.0.1.1

for n in 1 2; do
  echo "[demo] starting vnetd on h$n (--store etcd://192.0.2.254:2379 --host h$n --tunnel-address 192.0.2.$n)"
  ip netns exec "vnet-demo-h$n" "$VNETD" --topology examples/two-hosts.yaml \
    --store etcd://192.0.2.254:2379 --host "h$n" --tunnel-address "192.0.2.$n" --host-ttl 5 \
    --state-dir "/tmp/vnet-demo-h$n" --socket "/tmp/vnet-demo-h$n.sock" \
    --bpffs-dir "/sys/fs/bpf/vnet-demo-h$n" --detach-on-exit >"$LOGS/vnetd-h$n.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do grep -q "vnetd running" "$LOGS/vnetd-h$n.log" && break; sleep 0.1; done
  grep -q "vnetd running" "$LOGS/vnetd-h$n.log" || { echo "[demo] vnetd on h$n did not start:"; cat "$LOGS/vnetd-h$n.log"; exit 1; }
done

echo "[demo] vnetctl get hosts (on h1): both registered under their etcd leases"
vnetctl h1 get hosts | sed 's/^/  /'
echo "[demo] waiting until h1 has seen h2 alive"
for _ in $(seq 50); do ip netns exec vnet-demo-vm1 ping -c 1 -W 1 10.0.0.12 >/dev/null 2>&1 && break; sleep 0.2; done

echo "[demo] ping vm1 (h1) -> vm2 (h2), bridged across the hosts"
ip netns exec vnet-demo-vm1 ping -c 3 -i 0.2 10.0.0.12 | sed 's/^/  /'
echo "[demo] ping vm1 (h1) -> vm3 (h2), routed: the router runs on h1 for vm1's packets, on h2 for vm3's replies"
ip netns exec vnet-demo-vm1 ping -c 3 -i 0.2 10.0.1.13 | sed 's/^/  /'
echo "[demo] 200 pings vm1 -> vm3 at 5 ms: after the first packet, the kernels encapsulate and decapsulate"
ip netns exec vnet-demo-vm1 ping -q -c 200 -i 0.005 10.0.1.13 | sed 's/^/  /'
for n in 1 2; do
  echo "[demo] kernel tunnel counters on h$n (vnetctl stats):"
  vnetctl "h$n" stats -o json | python3 -c '
import json, sys
r = json.load(sys.stdin)["reasons"]
print("  " + ", ".join(f"{k} {r.get(k, 0)}" for k in ("tunnel_encap", "tunnel_decap")))'
done
echo "[demo] done"
