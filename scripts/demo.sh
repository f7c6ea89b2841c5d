#!/usr/bin/env bash
# The vnet demo: vnetd runs the example bridge (examples/bridge.yaml) with
# three network namespaces as its guests, and traffic flows between them
# through the XDP fast path. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates namespaces and attaches XDP): sudo $0" >&2; exit 1; }

bash scripts/bootstrap.sh
echo "[demo] building vnetd (release)"
cargo build --release -p vnet-dataplane --bin vnetd
VNETD=target/release/vnetd

HOST=vnet-demo-host
LOG=$(mktemp /tmp/vnet-demo.XXXXXX.log)
cleanup() {
  [ -n "${VNETD_PID:-}" ] && kill -TERM "$VNETD_PID" 2>/dev/null && wait "$VNETD_PID" 2>/dev/null || true
  for ns in vnet-demo-vm1 vnet-demo-vm2 vnet-demo-vm3 "$HOST"; do ip netns del "$ns" 2>/dev/null || true; done
  echo "[demo] removed the namespaces; vnetd's log is in $LOG"
}
trap cleanup EXIT INT TERM

echo "[demo] creating guests vm1..vm3 (namespaces vnet-demo-vmN, veth vmN-h <-> eth0)"
ip netns add "$HOST"
i=0
for vm in vm1 vm2 vm3; do
  i=$((i + 1)); ns=vnet-demo-$vm
  ip netns add "$ns"
  ip -n "$HOST" link add "$vm-h" type veth peer name eth0 netns "$ns"
  ip -n "$ns" link set eth0 address "02:00:00:00:01:0$i"
  ip -n "$ns" addr add "10.0.0.1$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$HOST" link set "$vm-h" up
done

echo "[demo] starting vnetd on examples/bridge.yaml"
ip netns exec "$HOST" "$VNETD" --topology examples/bridge.yaml \
  --state-dir /tmp/vnet-demo-state --socket /tmp/vnet-demo.sock >"$LOG" 2>&1 &
VNETD_PID=$!
for _ in $(seq 100); do grep -q "vnetd running" "$LOG" && break; sleep 0.1; done
grep -q "vnetd running" "$LOG" || { echo "[demo] vnetd did not start:"; cat "$LOG"; exit 1; }
sed 's/^/  vnetd | /' "$LOG"

for pair in "vm1 10.0.0.12" "vm2 10.0.0.13" "vm3 10.0.0.11"; do
  set -- $pair
  echo "[demo] ping from $1 to $2"
  ip netns exec "vnet-demo-$1" ping -c 3 -i 0.2 "$2" | sed 's/^/  /'
done

echo "[demo] 200 pings vm1 -> vm2 at 5 ms: after the first packet, the kernel forwards them"
ip netns exec vnet-demo-vm1 ping -q -c 200 -i 0.005 10.0.0.12 | sed 's/^/  /'

echo "[demo] installed flows (bpftool; packets counted in the kernel, never seen by userspace):"
PROG=$(ip -n "$HOST" -j link show vm1-h | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['xdp']['prog']['id'])")
for id in $(bpftool -j prog show id "$PROG" | python3 -c "import json,sys; print(' '.join(map(str, json.load(sys.stdin)['map_ids'])))"); do
  bpftool -j map show id "$id" | grep -q '"name":"FLOWS"' || continue
  bpftool -j map dump id "$id" | python3 -c "
import json,sys
def mac(b): return ':'.join(b)
for e in json.load(sys.stdin):
    k=[int(x,16) for x in e['key']]; v=[int(x,16) for x in e['value']]
    pk=int.from_bytes(bytes(v[40:48]),'little'); by=int.from_bytes(bytes(v[48:56]),'little')
    src='%02x:%02x:%02x:%02x:%02x:%02x'%tuple(k[4:10]); dst='%02x:%02x:%02x:%02x:%02x:%02x'%tuple(k[10:16])
    print('  if %-3d %s -> %s  %s -> %s  packets %-5d bytes %d'%(k[0],src,dst,'.'.join(map(str,k[20:24])),'.'.join(map(str,k[24:28])),pk,by))"
done
kill -TERM "$VNETD_PID"; wait "$VNETD_PID" || true; VNETD_PID=
echo "[demo] vnetd's last statistics:"
grep -E "stats|stopped" "$LOG" | tail -2 | sed 's/^/  /'
