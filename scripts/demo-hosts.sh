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
. scripts/two-hosts-lib.sh
vnetctl() { th_vnetctl "$@"; }
trap 'th_cleanup; echo "[demo] removed the namespaces; the logs are in $TH_LOGS"' EXIT INT TERM

echo "[demo] the underlay: namespace $TH_U with bridge br0 (192.0.2.254) and etcd on it"
th_underlay
for n in 1 2; do
  echo "[demo] host h$n: namespace vnet-demo-h$n, underlay address 192.0.2.$n (MTU 1550: room for VXLAN around a guest's 1500)"
  th_host "$n"
done
echo "[demo] guests: vm1 on h1 (10.0.0.11), vm2 on h2 (10.0.0.12, same bridge), vm3 on h2 (10.0.1.13, behind the router)"
th_guest vm1 h1 02:00:00:00:01:01 10.0.0.11 10.0.0.1
th_guest vm2 h2 02:00:00:00:01:02 10.0.0.12 10.0.0.1
th_guest vm3 h2 02:00:00:00:02:03 10.0.1.13 10.0.1.1
for n in 1 2; do
  echo "[demo] starting vnetd on h$n (--store etcd://192.0.2.254:2379 --host h$n --tunnel-address 192.0.2.$n)"
  th_vnetd "$n" examples/two-hosts.yaml
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
