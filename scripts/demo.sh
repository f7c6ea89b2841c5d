#!/usr/bin/env bash
# The vnet demo: vnetd runs the example bridge (examples/bridge.yaml) with
# three network namespaces as its guests, and traffic flows between them
# through the kernel fast path (the tc executor on the guests' veths). Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# --hosts 2: two hosts sharing one topology in etcd (scripts/demo-hosts.sh).
if [ "${1:-}" = "--hosts" ]; then
  [ "${2:-}" = 2 ] || { echo "demo: --hosts takes 2 (the two-host demo)" >&2; exit 2; }
  exec bash scripts/demo-hosts.sh
fi
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates namespaces and attaches the kernel programs): sudo $0" >&2; exit 1; }

bash scripts/bootstrap.sh
echo "[demo] building vnetd and vnetctl (release)"
cargo build --release -p vnetd -p vnetctl
VNETD=target/release/vnetd
SOCK=/tmp/vnet-demo.sock
vnetctl() { target/release/vnetctl --socket "$SOCK" "$@"; }

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
  --state-dir /tmp/vnet-demo-state --socket "$SOCK" --detach-on-exit >"$LOG" 2>&1 &
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

echo "[demo] installed flows (vnetctl flows; packets counted in the kernel, never seen by userspace):"
vnetctl flows | sed 's/^/  /'

echo "[demo] vnetctl trace: the path of a packet vm1 -> vm2, simulated (nothing live changes)"
vnetctl trace --port tenant/vm1 --proto tcp --src 10.0.0.11 --dst 10.0.0.12 --dport 22 | sed 's/^/  /'

echo "[demo] a live change: vm2's port set down (vnetctl apply), then up again"
sed 's/vm2: {interface: vm2-h}/vm2: {interface: vm2-h, up: false}/' examples/bridge.yaml >/tmp/vnet-demo-down.yaml
vnetctl apply -f /tmp/vnet-demo-down.yaml | sed 's/^/  /'
ip netns exec vnet-demo-vm1 ping -q -c 3 -i 0.2 -W 1 10.0.0.12 | sed 's/^/  /' || true
vnetctl apply -f examples/bridge.yaml | sed 's/^/  /'
ip netns exec vnet-demo-vm1 ping -q -c 3 -i 0.2 10.0.0.12 | sed 's/^/  /'
rm -f /tmp/vnet-demo-down.yaml

kill -TERM "$VNETD_PID"; wait "$VNETD_PID" || true; VNETD_PID=
echo "[demo] vnetd's last statistics:"
grep -E "stats|stopped" "$LOG" | tail -2 | sed 's/^/  /'
