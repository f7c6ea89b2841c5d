//! The read-optimised, immutable form of a topology that the simulation
//! walks. Compiled once per topology revision from the control model; the
//! workers share it behind an `Arc` and never lock it.
use super::chain::{ChainId, Chains, PortNames};
use super::nat_blocks::NatBlocks;
use super::route_table::{NextHop, Route, RouteTable};
use super::Tag;
use crate::hash::HashMap;
use crate::packet::Mac;
use std::sync::Arc;
use vnet_model::{ReversePath, RouteType, Topology};

/// The pairs whose key appears once: a MAC (or address) two ports claim is
/// left to learning (or ARP), not pinned to either.
fn unique<K: std::hash::Hash + Eq + Copy, V: Copy>(pairs: Vec<(K, V)>) -> HashMap<K, V> {
    let mut count: HashMap<K, usize> = HashMap::default();
    for (k, _) in &pairs {
        *count.entry(*k).or_default() += 1;
    }
    pairs.into_iter().filter(|(k, _)| count[k] == 1).collect()
}

/// Index of a port in `Snapshot::ports`; valid within one snapshot only
/// (tags are the ids that survive snapshots).
pub type PortId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Exterior: bound to a host interface.
    Interface(String),
    /// Interior: linked to the port of another device.
    Peer(PortId),
    /// Exterior, on another host (`host:`): frames for it are sent to that
    /// host's tunnel address in VXLAN with the port's tunnel key, and that
    /// host's kernel delivers them (see `Snapshot::placed_on`).
    Remote {
        tunnel_address: [u8; 4],
        tunnel_key: u32,
    },
    Unbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRef {
    Bridge(usize),
    Router(usize),
}

/// The filter chains attached to a port or device, run in order (the
/// chains generated from intents first, then the operator's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub inbound: Vec<ChainId>,
    pub outbound: Vec<ChainId>,
}

impl Filters {
    fn of(chains: &Chains, inbound: &Option<String>, outbound: &Option<String>) -> Filters {
        let id = |n: &Option<String>| {
            n.as_deref()
                .and_then(|n| chains.id(n))
                .into_iter()
                .collect()
        };
        Filters {
            inbound: id(inbound),
            outbound: id(outbound),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Port {
    /// Qualified name `device/port`.
    pub name: String,
    pub tag: Tag,
    pub device: DeviceRef,
    pub binding: Binding,
    /// The kernel program an exterior port's flows run in, as configured
    /// (`auto` is resolved by the binder, which sees the interface).
    pub executor: vnet_model::Executor,
    /// The host whose vnetd binds the interface (`host:`); none: any.
    pub host: Option<String>,
    /// The VNI other hosts reach the port by (`tunnel_key:`).
    pub tunnel_key: Option<u32>,
    /// 802.1Q VID carried on the wire of an exterior port.
    pub vlan: Option<u16>,
    pub up: bool,
    /// The L3 interface of a router port.
    pub l3: Option<RouterIf>,
    pub filters: Filters,
    /// Connection-tracking zone of the port's filters: its stateful port
    /// group, or its device.
    pub zone: Tag,
    /// Anti-spoofing of an exterior bridge port (`None`: off).
    pub security: Option<PortSecurity>,
    /// Reverse-path check of a router port (`Off` on bridge ports).
    pub reverse_path: ReversePath,
}

/// What a port with port security on owns: the sources its guest may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSecurity {
    pub macs: Vec<Mac>,
    /// IPv4 prefixes with the MAC they go with (`None`: any owned MAC).
    pub ips: Vec<(Option<Mac>, [u8; 4], u8)>,
}

impl PortSecurity {
    pub fn owns_mac(&self, mac: &Mac) -> bool {
        self.macs.contains(mac)
    }

    /// Whether `ip` may be sent with source MAC `mac`.
    pub fn owns_ip(&self, mac: &Mac, ip: [u8; 4]) -> bool {
        self.ips.iter().any(|(m, net, len)| {
            m.is_none_or(|m| m == *mac) && super::route_table::in_prefix(ip, *net, *len)
        })
    }

    fn compile(port: &vnet_model::BridgePort, bridge: &vnet_model::Bridge) -> PortSecurity {
        let mut sec = PortSecurity::default();
        for a in port.addresses.iter().chain(&port.allowed_address_pairs) {
            if let Some(mac) = a.mac {
                if !sec.macs.contains(&mac.0) {
                    sec.macs.push(mac.0);
                }
            }
            match (a.mac, a.ip) {
                (mac, Some(net)) => {
                    sec.ips
                        .push((mac.map(|m| m.0), net.network().octets(), net.prefix_len()))
                }
                // A MAC alone: its addresses are the bridge's DHCP hosts.
                (Some(mac), None) => {
                    let hosts = bridge.dhcp.iter().flat_map(|s| &s.hosts);
                    for h in hosts.filter(|h| h.mac == mac) {
                        sec.ips.push((Some(mac.0), h.ip.octets(), 32));
                    }
                }
                (None, None) => {}
            }
        }
        sec
    }
}

/// Address, MAC and MTU of a router port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterIf {
    pub addr: [u8; 4],
    pub prefix_len: u8,
    pub mac: Mac,
    pub mtu: u16,
}

impl RouterIf {
    pub fn contains(&self, ip: [u8; 4]) -> bool {
        super::route_table::in_prefix(ip, self.addr, self.prefix_len)
    }
    /// The subnet's directed broadcast address (none for /31 and /32).
    pub fn broadcast(&self) -> Option<[u8; 4]> {
        (self.prefix_len < 31).then(|| {
            (u32::from_be_bytes(self.addr) | !super::route_table::mask(self.prefix_len))
                .to_be_bytes()
        })
    }
}

#[derive(Debug, Clone)]
pub struct Bridge {
    pub name: String,
    pub tag: Tag,
    pub ports: Vec<PortId>,
    pub static_macs: HashMap<Mac, PortId>,
    /// IP → MAC entries the bridge answers ARP requests for.
    pub arp_table: HashMap<[u8; 4], Mac>,
    /// The DHCP subnets the bridge serves.
    pub dhcp: super::dhcp::Config,
    pub filters: Filters,
    /// Addresses the network owns on this bridge (linked router ports,
    /// their NAT addresses, DHCP servers): no guest may claim them in ARP.
    pub network_addrs: Vec<[u8; 4]>,
}

#[derive(Debug, Clone)]
pub struct Router {
    pub name: String,
    pub tag: Tag,
    pub ports: Vec<PortId>,
    pub routes: RouteTable,
    pub filters: Filters,
    /// NAT addresses the router owns, by port (from intents).
    pub owned: HashMap<PortId, Vec<[u8; 4]>>,
}

impl Router {
    /// Whether `ip` is a NAT address of the router (on any port).
    pub fn owns(&self, ip: [u8; 4]) -> bool {
        self.owned.values().any(|v| v.contains(&ip))
    }

    /// The router port that owns `ip` as its address.
    pub fn port_with_addr(&self, snap: &Snapshot, ip: [u8; 4]) -> Option<PortId> {
        self.ports
            .iter()
            .copied()
            .find(|&p| snap.ports[p].l3.is_some_and(|l3| l3.addr == ip))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub ports: Vec<Port>,
    pub bridges: Vec<Bridge>,
    pub routers: Vec<Router>,
    pub chains: Chains,
    /// The tunnel address of each host of `hosts:`.
    pub hosts: HashMap<String, [u8; 4]>,
    /// With many hosts: the SNAT port blocks this host leased (dynamic
    /// SNAT takes only their ports, `nat::snat_candidates`); `None`: every
    /// port is this host's. Shared with the leaser, which adds blocks
    /// without a new snapshot.
    pub nat_blocks: Option<Arc<NatBlocks>>,
    /// The tunnel addresses of the other hosts with members of each
    /// stateful port group (by its zone): the state of a connection in such
    /// a group, or through one of its members, goes to all of them, since
    /// its return traffic may enter through any member (`placed_on`).
    pub group_peers: HashMap<Tag, Vec<[u8; 4]>>,
    /// The largest inner IPv4 packet this host's tunnels carry (the
    /// underlay MTU less 50, `with_tunnel_mtu`); `None`: no tunnels.
    pub tunnel_mtu: Option<u16>,
    by_name: HashMap<String, PortId>,
    by_tag: HashMap<Tag, PortId>,
    /// The ports bound to each host interface (`Binding::Interface`), built
    /// on first use ([`Snapshot::ports_of_interface`]); reset by what
    /// changes bindings.
    by_interface: std::sync::OnceLock<InterfaceIndex>,
}

/// The ports bound to each host interface, and how many there are.
#[derive(Debug, Clone, Default)]
struct InterfaceIndex {
    ports: HashMap<String, Vec<PortId>>,
    count: usize,
}

impl Snapshot {
    /// Compiles a validated topology. References were checked by
    /// validation; one that still does not resolve leaves the port unbound
    /// rather than panicking.
    pub fn compile(topology: &Topology, revision: u64) -> Snapshot {
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        let mut peers: Vec<(PortId, String)> = Vec::new();
        // Sized once: a 10 000-port topology otherwise rehashes both
        // indexes a dozen times on every change.
        let port_count = topology
            .bridges
            .values()
            .map(|b| b.ports.len())
            .sum::<usize>()
            + topology
                .routers
                .values()
                .map(|r| r.ports.len())
                .sum::<usize>();
        snap.ports.reserve_exact(port_count);
        snap.by_name.reserve(port_count);
        snap.by_tag.reserve(port_count);
        for (name, h) in &topology.hosts {
            snap.hosts.insert(name.clone(), h.tunnel_address.octets());
        }

        for (bname, b) in &topology.bridges {
            let device = DeviceRef::Bridge(snap.bridges.len());
            let mut ports = Vec::new();
            // The MACs and addresses ports placed on a host own: a bridge
            // (or router) on another host never sees their frames (its
            // kernel delivers them from the tunnel), so it cannot learn
            // where they are, nor a router there hear their ARP replies.
            let mut placed_macs: Vec<(Mac, PortId)> = Vec::new();
            let mut placed_ips: Vec<([u8; 4], Mac)> = Vec::new();
            for (pname, p) in &b.ports {
                let id = snap.add_port(format!("{bname}/{pname}"), device, p.vlan, p.up);
                if let Some(ifname) = &p.interface {
                    snap.ports[id].binding = Binding::Interface(ifname.clone());
                    snap.ports[id].executor = p.executor;
                    snap.ports[id].host = p.host.clone();
                    snap.ports[id].tunnel_key = p.tunnel_key;
                }
                if let Some(peer) = &p.peer {
                    peers.push((id, format!("{}/{}", peer.device, peer.port)));
                }
                if p.interface.is_some() && p.port_security_on() {
                    snap.ports[id].security = Some(PortSecurity::compile(p, b));
                }
                // What the port owns (`addresses`), not what it may also
                // use (`allowed_address_pairs`: a VIP moves between ports).
                if p.interface.is_some() && p.host.is_some() {
                    for a in &p.addresses {
                        if let Some(mac) = a.mac {
                            placed_macs.push((mac.0, id));
                            if let Some(net) = a.ip.filter(|n| n.prefix_len() == 32) {
                                placed_ips.push((net.addr().octets(), mac.0));
                            }
                        }
                    }
                }
                ports.push(id);
            }
            let bridge_name = bname.clone();
            let mut static_macs = unique(placed_macs);
            // The bridge's own table wins.
            static_macs.extend(b.mac_table.iter().filter_map(|m| {
                let id = snap.by_name.get(&format!("{bridge_name}/{}", m.port))?;
                Some((m.mac.0, *id))
            }));
            let mut arp_table = unique(placed_ips);
            arp_table.extend(b.arp_table.iter().map(|a| (a.ip.octets(), a.mac.0)));
            snap.bridges.push(Bridge {
                name: bname.clone(),
                tag: Tag::device(bname),
                ports,
                static_macs,
                arp_table,
                dhcp: super::dhcp::Config::compile(bname, &b.dhcp),
                filters: Filters::default(),
                network_addrs: Vec::new(),
            });
        }

        for (rname, r) in &topology.routers {
            let device = DeviceRef::Router(snap.routers.len());
            let mut ports = Vec::new();
            for (pname, p) in &r.ports {
                let id = snap.add_port(format!("{rname}/{pname}"), device, None, p.up);
                snap.ports[id].l3 = Some(RouterIf {
                    addr: p.address.addr().octets(),
                    prefix_len: p.address.prefix_len(),
                    mac: p.effective_mac(rname, pname).0,
                    mtu: p.effective_mtu(),
                });
                if let Some(ifname) = &p.interface {
                    snap.ports[id].binding = Binding::Interface(ifname.clone());
                    snap.ports[id].executor = p.executor;
                    snap.ports[id].host = p.host.clone();
                    snap.ports[id].tunnel_key = p.tunnel_key;
                }
                if let Some(peer) = &p.peer {
                    peers.push((id, format!("{}/{}", peer.device, peer.port)));
                }
                snap.ports[id].reverse_path = p.effective_reverse_path(r, pname);
                ports.push(id);
            }
            let routes = r.routes.iter().enumerate().filter_map(|(index, route)| {
                let next_hop = match route.kind {
                    RouteType::Blackhole => NextHop::Blackhole,
                    RouteType::Reject => NextHop::Reject,
                    RouteType::Normal => {
                        let port = r.route_port(route)?;
                        let port = *snap.by_name.get(&format!("{rname}/{port}"))?;
                        NextHop::Port {
                            port,
                            gateway: route.via.map(|v| v.octets()),
                        }
                    }
                };
                Some(Route {
                    dst: route.dst.network().octets(),
                    dst_len: route.dst.prefix_len(),
                    src: route.src.map(|s| (s.network().octets(), s.prefix_len())),
                    next_hop,
                    weight: route.weight.unwrap_or(0),
                    index,
                })
            });
            let routes = RouteTable::new(routes.collect::<Vec<_>>());
            let tag = Tag::device(rname);
            snap.routers.push(Router {
                name: rname.clone(),
                tag,
                ports,
                routes,
                filters: Filters::default(),
                owned: HashMap::default(),
            });
        }

        for (id, peer_name) in peers {
            if let Some(&peer) = snap.by_name.get(&peer_name) {
                snap.ports[id].binding = Binding::Peer(peer);
            }
        }
        snap.seed_router_peers();
        snap.seed_dhcp_servers();
        snap.attach_filters(topology);
        snap.seed_network_addresses();
        snap
    }

    /// The addresses each bridge must protect from guests' ARP: those of the
    /// router ports linked to it, the NAT addresses their routers own on
    /// those ports, and the bridge's DHCP servers.
    fn seed_network_addresses(&mut self) {
        for b in 0..self.bridges.len() {
            let mut addrs: Vec<[u8; 4]> = self.bridges[b]
                .dhcp
                .subnets
                .iter()
                .map(|s| s.server)
                .collect();
            for &port in &self.bridges[b].ports {
                let Binding::Peer(peer) = self.ports[port].binding else {
                    continue;
                };
                let Some(l3) = self.ports[peer].l3 else {
                    continue;
                };
                addrs.push(l3.addr);
                if let DeviceRef::Router(r) = self.ports[peer].device {
                    addrs.extend(self.routers[r].owned.get(&peer).into_iter().flatten());
                }
            }
            addrs.sort_unstable();
            addrs.dedup();
            self.bridges[b].network_addrs = addrs;
        }
    }

    /// Compiles the chains and attaches them to ports and devices; sets
    /// each port's conntrack zone.
    fn attach_filters(&mut self, topology: &Topology) {
        let intents = vnet_model::intents::compile(topology);
        self.chains = Chains::compile(topology, &intents.chains, self);
        for (i, (_, b)) in topology.bridges.iter().enumerate() {
            self.bridges[i].filters =
                Filters::of(&self.chains, &b.inbound_filter, &b.outbound_filter);
            // `compile` gave the device its ports' ids in the model's
            // order: no name to format and look up per port.
            for (p, &id) in b.ports.values().zip(&self.bridges[i].ports) {
                self.ports[id].filters =
                    Filters::of(&self.chains, &p.inbound_filter, &p.outbound_filter);
            }
        }
        for (i, (rname, r)) in topology.routers.iter().enumerate() {
            let user = Filters::of(&self.chains, &r.inbound_filter, &r.outbound_filter);
            let generated =
                |map: &std::collections::BTreeMap<String, Vec<String>>| -> Vec<ChainId> {
                    map.get(rname)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| self.chains.id(c))
                        .collect()
                };
            let mut filters = Filters {
                inbound: generated(&intents.pre_routing),
                outbound: generated(&intents.post_routing),
            };
            filters.inbound.extend(user.inbound);
            filters.outbound.extend(user.outbound);
            self.routers[i].filters = filters;
            for ((router, port), addrs) in &intents.owned {
                if router == rname {
                    if let Some(id) = self.port_by_name(&format!("{router}/{port}")) {
                        self.routers[i]
                            .owned
                            .insert(id, addrs.iter().map(|a| a.octets()).collect());
                    }
                }
            }
            for (p, &id) in r.ports.values().zip(&self.routers[i].ports) {
                self.ports[id].filters =
                    Filters::of(&self.chains, &p.inbound_filter, &p.outbound_filter);
            }
        }
        for id in 0..self.ports.len() {
            self.ports[id].zone = match self.ports[id].device {
                DeviceRef::Bridge(b) => self.bridges[b].tag,
                DeviceRef::Router(r) => self.routers[r].tag,
            };
        }
        for (gname, g) in &topology.port_groups {
            if !g.stateful {
                continue;
            }
            for member in &g.ports {
                if let Some(id) = self.port_by_name(&format!("{}/{}", member.device, member.port)) {
                    self.ports[id].zone = Tag::port_group(gname);
                }
            }
        }
    }

    /// A bridge knows the router ports linked to it, as MidoNet's did: their
    /// MAC is static on the interior port (frames to the router go there
    /// without flooding) and their address is in the ARP table (guests'
    /// requests for their gateway are answered by the bridge).
    fn seed_router_peers(&mut self) {
        for b in 0..self.bridges.len() {
            for i in 0..self.bridges[b].ports.len() {
                let port = self.bridges[b].ports[i];
                let Binding::Peer(peer) = self.ports[port].binding else {
                    continue;
                };
                let Some(l3) = self.ports[peer].l3 else {
                    continue;
                };
                let bridge = &mut self.bridges[b];
                bridge.static_macs.entry(l3.mac).or_insert(port);
                bridge.arp_table.entry(l3.addr).or_insert(l3.mac);
            }
        }
    }

    /// A bridge answers ARP for its DHCP server addresses, so that unicast
    /// renewals reach the server. Entries already there win: a server
    /// address that is also a router port's keeps the router's MAC (the
    /// DHCP stage takes requests sent to that MAC too).
    fn seed_dhcp_servers(&mut self) {
        for bridge in &mut self.bridges {
            for s in &bridge.dhcp.subnets {
                bridge
                    .arp_table
                    .entry(s.server)
                    .or_insert(bridge.dhcp.server_mac);
            }
        }
    }

    fn add_port(&mut self, name: String, device: DeviceRef, vlan: Option<u16>, up: bool) -> PortId {
        let id = self.ports.len();
        let tag = Tag::port(&name);
        self.by_name.insert(name.clone(), id);
        self.by_tag.insert(tag, id);
        self.ports.push(Port {
            name,
            tag,
            device,
            binding: Binding::Unbound,
            executor: vnet_model::Executor::Auto,
            host: None,
            tunnel_key: None,
            vlan,
            up,
            l3: None,
            filters: Filters::default(),
            zone: Tag(0),
            security: None,
            reverse_path: ReversePath::Off,
        });
        id
    }

    pub fn port_by_name(&self, qualified_name: &str) -> Option<PortId> {
        self.by_name.get(qualified_name).copied()
    }

    pub fn port_by_tag(&self, tag: Tag) -> Option<PortId> {
        self.by_tag.get(&tag).copied()
    }

    /// The snapshot as the vnetd of `host` (`--host`; none for a vnetd
    /// without one) runs it: a port placed on another host (`host:`) is
    /// not bound here but reached through a tunnel to that host
    /// (`Binding::Remote`). A vnetd without `--host` has no tunnels: ports
    /// placed on a host are unbound there, as are ports whose host has no
    /// address or that have no tunnel key (stores give one to every placed
    /// port; a snapshot compiled from a file may lack them).
    pub fn placed_on(mut self, host: Option<&str>) -> Snapshot {
        self.by_interface = Default::default();
        for p in &mut self.ports {
            let Some(there) = p.host.as_deref() else {
                continue;
            };
            if Some(there) == host || !matches!(p.binding, Binding::Interface(_)) {
                continue;
            }
            p.binding = match (host, self.hosts.get(there), p.tunnel_key) {
                (Some(_), Some(&tunnel_address), Some(tunnel_key)) => Binding::Remote {
                    tunnel_address,
                    tunnel_key,
                },
                _ => Binding::Unbound,
            };
        }
        self.group_peers.clear();
        for id in 0..self.ports.len() {
            let p = &self.ports[id];
            let device = match p.device {
                DeviceRef::Bridge(b) => self.bridges[b].tag,
                DeviceRef::Router(r) => self.routers[r].tag,
            };
            if let (true, Binding::Remote { tunnel_address, .. }) = (p.zone != device, &p.binding) {
                let peers = self.group_peers.entry(p.zone).or_default();
                if !peers.contains(tunnel_address) {
                    peers.push(*tunnel_address);
                }
            }
        }
        self
    }

    /// The other hosts the state recorded in `zone`, or for a packet
    /// through a port of that zone, must reach (see `group_peers`).
    pub fn group_peers(&self, zone: Tag) -> &[[u8; 4]] {
        self.group_peers.get(&zone).map_or(&[], Vec::as_slice)
    }

    /// The snapshot with the ports of `dead` hosts (their registration
    /// expired) unreachable: frames towards them are dropped here
    /// (`NoEgress`) instead of being sent into a tunnel nobody ends. When
    /// such a host returns, the next snapshot reaches its ports again, by
    /// the same tunnel keys.
    pub fn without_hosts(mut self, dead: &std::collections::BTreeSet<String>) -> Snapshot {
        self.by_interface = Default::default();
        for p in &mut self.ports {
            let unreachable = matches!(p.binding, Binding::Remote { .. })
                && p.host.as_ref().is_some_and(|h| dead.contains(h));
            if unreachable {
                p.binding = Binding::Unbound;
            }
        }
        self
    }

    /// The snapshot for a host that leases SNAT port blocks (many hosts).
    pub fn with_nat_blocks(mut self, blocks: Arc<NatBlocks>) -> Snapshot {
        self.nat_blocks = Some(blocks);
        self
    }

    /// The public addresses of the dynamic SNAT rules (their port ranges,
    /// merged per address): what this host leases port blocks of. At most
    /// `limit` addresses, the first of each range first.
    pub fn snat_targets(&self, limit: usize) -> std::collections::BTreeMap<[u8; 4], (u16, u16)> {
        let mut targets = std::collections::BTreeMap::new();
        for (start, end, (lo, hi)) in self.chains.dynamic_snat_ranges() {
            let (a, z) = (u32::from_be_bytes(start), u32::from_be_bytes(end));
            for addr in a..=z.max(a) {
                if targets.len() >= limit && !targets.contains_key(&addr.to_be_bytes()) {
                    break;
                }
                let r = targets.entry(addr.to_be_bytes()).or_insert((lo, hi));
                *r = (r.0.min(lo), r.1.max(hi));
            }
        }
        targets
    }

    /// The snapshot for a host whose tunnels carry inner packets of at most
    /// `inner_mtu` bytes: the DHCP servers of bridges with ports placed on
    /// hosts tell their clients that MTU (option 26), unless a subnet sets
    /// `mtu:` itself (any of their frames may cross a tunnel, bridged or
    /// routed). Nothing changes when a guest's 1500 fits.
    pub fn with_tunnel_mtu(mut self, inner_mtu: u16) -> Snapshot {
        // What does not fit is answered or fragmented (`sim::tunnel_mtu`).
        self.tunnel_mtu = Some(inner_mtu);
        if inner_mtu >= 1500 {
            return self;
        }
        for (i, bridge) in self.bridges.iter_mut().enumerate() {
            let placed = self
                .ports
                .iter()
                .any(|p| p.device == DeviceRef::Bridge(i) && p.host.is_some());
            if placed {
                for s in &mut bridge.dhcp.subnets {
                    s.advertise_mtu(inner_mtu);
                }
            }
        }
        self
    }

    /// The tunnel address and key of port `port` when it is on another
    /// host (`Binding::Remote`).
    pub fn remote(&self, port: PortId) -> Option<([u8; 4], u32)> {
        match self.ports.get(port)?.binding {
            Binding::Remote {
                tunnel_address,
                tunnel_key,
            } => Some((tunnel_address, tunnel_key)),
            _ => None,
        }
    }

    /// Exterior ports with their interface names.
    pub fn interfaces(&self) -> impl Iterator<Item = (PortId, &str)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(id, p)| match &p.binding {
                Binding::Interface(name) => Some((id, name.as_str())),
                _ => None,
            })
    }

    /// The ports bound to host interface `ifname`, lowest id first: one,
    /// unless a port placed on this host and one placed on none name the
    /// same interface (validation allows it; binding the second fails and
    /// says so). The worker looks up the host's interfaces here instead of
    /// visiting every port of the snapshot: most ports of a large topology
    /// are bound on other hosts or wait for interfaces that do not exist.
    pub fn ports_of_interface(&self, ifname: &str) -> &[PortId] {
        self.interface_index()
            .ports
            .get(ifname)
            .map_or(&[], Vec::as_slice)
    }

    /// How many ports are bound to a host interface.
    pub fn interface_port_count(&self) -> usize {
        self.interface_index().count
    }

    /// The snapshot with its interface index built, so that the control
    /// thread pays for it rather than the worker.
    pub fn with_interface_index(self) -> Snapshot {
        self.interface_index();
        self
    }

    fn interface_index(&self) -> &InterfaceIndex {
        self.by_interface.get_or_init(|| {
            let mut index = InterfaceIndex::default();
            for (port, ifname) in self.interfaces() {
                index
                    .ports
                    .entry(ifname.to_string())
                    .or_default()
                    .push(port);
                index.count += 1;
            }
            index
        })
    }
}

impl PortNames for Snapshot {
    fn port_id(&self, qualified: &str) -> Option<PortId> {
        self.port_by_name(qualified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACED: &str = "version: 1
hosts:
  h1: {tunnel_address: 192.0.2.1}
  h2: {tunnel_address: 192.0.2.2}
bridges:
  tenant:
    ports:
      a: {interface: a-h, host: h1, tunnel_key: 1}
      b: {interface: b-h, host: h2, tunnel_key: 2, addresses: [\"02:00:00:00:00:0b 10.0.0.11\"]}
      c: {interface: c-h}
";

    fn bound_here(host: Option<&str>) -> Vec<String> {
        let topology = vnet_model::parse_str(PLACED).expect("valid topology");
        let snap = Snapshot::compile(&topology, 1).placed_on(host);
        snap.interfaces().map(|(_, i)| i.to_string()).collect()
    }

    #[test]
    fn a_host_binds_its_own_ports_and_those_placed_nowhere() {
        assert_eq!(bound_here(Some("h1")), ["a-h", "c-h"]);
        assert_eq!(bound_here(Some("h2")), ["b-h", "c-h"]);
        // A vnetd without --host binds only ports placed on no host.
        assert_eq!(bound_here(None), ["c-h"]);
    }

    #[test]
    fn the_interface_index_follows_the_placement() {
        let topology = vnet_model::parse_str(PLACED).expect("valid topology");
        let compiled = Snapshot::compile(&topology, 1);
        let b = compiled.port_by_name("tenant/b").unwrap();
        // Built before placement (every port still names its interface)...
        assert_eq!(compiled.ports_of_interface("b-h"), [b]);
        assert_eq!(compiled.interface_port_count(), 3);
        // ...and built again after it: b is on h2, reached by its tunnel.
        let on_h1 = compiled.placed_on(Some("h1")).with_interface_index();
        assert_eq!(on_h1.ports_of_interface("b-h"), [] as [PortId; 0]);
        let a = on_h1.port_by_name("tenant/a").unwrap();
        assert_eq!(on_h1.ports_of_interface("a-h"), [a]);
        assert_eq!(on_h1.interface_port_count(), 2);
        let none = on_h1.without_hosts(&["h1".to_string()].into());
        assert_eq!(none.ports_of_interface("nosuch"), [] as [PortId; 0]);
        assert_eq!(
            none.interface_port_count(),
            2,
            "only tunnels go with a dead host"
        );
    }

    #[test]
    fn a_port_on_another_host_is_reached_by_its_tunnel() {
        let topology = vnet_model::parse_str(PLACED).expect("valid topology");
        let on_h1 = Snapshot::compile(&topology, 1).placed_on(Some("h1"));
        let b = on_h1.port_by_name("tenant/b").unwrap();
        assert_eq!(
            on_h1.ports[b].binding,
            Binding::Remote {
                tunnel_address: [192, 0, 2, 2],
                tunnel_key: 2
            }
        );
        // Its MAC and address are known on every host: h1 never sees its
        // frames.
        assert_eq!(
            on_h1.bridges[0].static_macs.get(&[2, 0, 0, 0, 0, 0x0b]),
            Some(&b)
        );
        assert_eq!(
            on_h1.bridges[0].arp_table.get(&[10, 0, 0, 11]),
            Some(&[2, 0, 0, 0, 0, 0x0b])
        );
        // A dead host's ports are unreachable.
        let dead = std::collections::BTreeSet::from(["h2".to_string()]);
        let h2_dead = Snapshot::compile(&topology, 1)
            .placed_on(Some("h1"))
            .without_hosts(&dead);
        assert_eq!(h2_dead.ports[b].binding, Binding::Unbound);
        // Without --host there are no tunnels.
        let alone = Snapshot::compile(&topology, 1).placed_on(None);
        assert_eq!(alone.ports[b].binding, Binding::Unbound);
    }

    #[test]
    fn dhcp_tells_guests_of_placed_bridges_the_tunnel_mtu() {
        let with_dhcp = |mtu: &str| {
            PLACED.replace(
                "  tenant:\n    ports:\n",
                &format!("  tenant:\n    dhcp:\n      - {{subnet: 10.0.0.0/24, server: 10.0.0.2{mtu}}}\n    ports:\n"),
            )
        };
        let mtu_option = |yaml: &str, inner: u16| {
            let topology = vnet_model::parse_str(yaml).expect("valid topology");
            let snap = Snapshot::compile(&topology, 1)
                .placed_on(Some("h1"))
                .with_tunnel_mtu(inner);
            snap.bridges[0].dhcp.subnets[0]
                .options
                .iter()
                .find(|(c, _)| *c == 26)
                .map(|(_, v)| u16::from_be_bytes([v[0], v[1]]))
        };
        assert_eq!(mtu_option(&with_dhcp(""), 1450), Some(1450));
        assert_eq!(mtu_option(&with_dhcp(""), 1500), None, "1500 fits");
        assert_eq!(
            mtu_option(&with_dhcp(", mtu: 1400"), 1450),
            Some(1400),
            "the subnet's own wins"
        );
    }
}
