# Two hosts on one machine, for scripts/demo-hosts.sh and benches/hosts.sh
# (sourced, not run): an underlay namespace with a bridge and etcd, host
# namespaces joined to it (MTU 1550: room for VXLAN around a guest's 1500),
# guests in their own namespaces on a host, and a vnetd per host sharing the
# topology in etcd. Names start with vnet-demo-; th_cleanup removes them.
TH_U=vnet-demo-u
TH_ETCD_DATA=/dev/shm/vnet-demo-etcd
TH_LOGS=${TH_LOGS:-$(mktemp -d /tmp/vnet-two-hosts.XXXXXX)}
TH_PIDS=()     # etcd
TH_VNETDS=()   # the hosts' vnetds
TH_GUESTS=()

th_vnetctl() { local h=$1; shift; target/release/vnetctl --socket "/tmp/vnet-demo-$h.sock" "$@"; }

th_cleanup() {
  th_stop_vnetds
  for pid in "${TH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  TH_PIDS=()
  for ns in "${TH_GUESTS[@]}" vnet-demo-h1 vnet-demo-h2 "$TH_U"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$TH_ETCD_DATA" /sys/fs/bpf/vnet-demo-h1 /sys/fs/bpf/vnet-demo-h2
}

# The underlay namespace: bridge br0 192.0.2.254/24 and etcd on it.
th_underlay() {
  ip netns add "$TH_U"
  ip -n "$TH_U" link set lo up
  ip -n "$TH_U" link add br0 type bridge
  ip -n "$TH_U" addr add 192.0.2.254/24 dev br0
  ip -n "$TH_U" link set br0 up
  rm -rf "$TH_ETCD_DATA"
  ip netns exec "$TH_U" etcd --name demo --data-dir "$TH_ETCD_DATA" --logger zap --log-level warn \
    --listen-client-urls http://192.0.2.254:2379 --advertise-client-urls http://192.0.2.254:2379 \
    --listen-peer-urls http://192.0.2.254:2380 --initial-advertise-peer-urls http://192.0.2.254:2380 \
    --initial-cluster demo=http://192.0.2.254:2380 >"$TH_LOGS/etcd.log" 2>&1 &
  TH_PIDS+=($!)
  for _ in $(seq 100); do
    ip netns exec "$TH_U" curl -fsS http://192.0.2.254:2379/version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "etcd did not start:" >&2; cat "$TH_LOGS/etcd.log" >&2; return 1
}

# Host N: namespace vnet-demo-hN, underlay interface uN at 192.0.2.N.
th_host() {
  local n=$1 h=vnet-demo-h$1
  ip netns add "$h"
  ip -n "$h" link set lo up
  ip -n "$h" link add "u$n" type veth peer name "p$n" netns "$TH_U"
  ip -n "$h" addr add "192.0.2.$n/24" dev "u$n"
  ip -n "$h" link set "u$n" mtu 1550 up
  ip -n "$TH_U" link set "p$n" mtu 1550 master br0 up
}

# A guest: th_guest NAME HOST MAC ADDRESS GATEWAY (veth NAME-h on the host).
th_guest() {
  local ns=vnet-demo-$1
  ip netns add "$ns"
  TH_GUESTS+=("$ns")
  ip -n "vnet-demo-$2" link add "$1-h" type veth peer name eth0 netns "$ns"
  ip -n "$ns" link set eth0 address "$3"
  ip -n "$ns" addr add "$4/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$5"
  ip -n "vnet-demo-$2" link set "$1-h" up
}

# vnetd on host N with topology FILE, sharing etcd; waits until it runs.
th_vnetd() {
  local n=$1 file=$2 log="$TH_LOGS/vnetd-h$1.log"
  ip netns exec "vnet-demo-h$n" target/release/vnetd --topology "$file" \
    --store etcd://192.0.2.254:2379 --host "h$n" --tunnel-address "192.0.2.$n" --host-ttl 5 \
    --state-dir "/tmp/vnet-demo-h$n" --socket "/tmp/vnet-demo-h$n.sock" \
    --bpffs-dir "/sys/fs/bpf/vnet-demo-h$n" --detach-on-exit >"$log" 2>&1 &
  TH_VNETDS+=($!)
  for _ in $(seq 200); do grep -q "vnetd running" "$log" && return 0; sleep 0.1; done
  echo "vnetd on h$n did not start:" >&2; cat "$log" >&2; return 1
}

# Stops the vnetds (their programs detach), leaving namespaces and etcd.
th_stop_vnetds() {
  for pid in "${TH_VNETDS[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  TH_VNETDS=()
}
