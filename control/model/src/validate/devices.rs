//! Bridges, routers, their ports, the links between ports, host interfaces
//! and routes.

use std::collections::BTreeMap;

use super::{is_host_in, overlaps, FirstSeen, PortPath, Validator};
use crate::model::*;

/// What every port has, whichever device it belongs to.
struct PortInfo<'a> {
    device: &'a str,
    port: &'a str,
    path: PortPath<'a>,
    is_bridge: bool,
    interface: Option<&'a String>,
    host: Option<&'a String>,
    executor: crate::Executor,
    peer: Option<&'a PortRef>,
}

impl Validator<'_> {
    pub(super) fn devices(&mut self) {
        let topo = self.topo;
        self.hosts();
        for (name, bridge) in &topo.bridges {
            self.bridge(name, bridge);
        }
        for (name, router) in &topo.routers {
            let path = format!("routers.{name}");
            self.name(&path, name);
            // Ports are referenced as `device/port`: a name shared by a bridge
            // and a router would make such references ambiguous.
            if topo.bridges.contains_key(name) {
                self.err(
                    &path,
                    format!("`{name}` is also the name of a bridge; bridges and routers need distinct names"),
                );
            }
            self.router(name, router);
        }
        let ports = all_ports(topo);
        self.port_bindings(&ports);
        self.links(&ports);
        self.router_macs();
    }

    /// Host names are used in etcd keys and `host:` references; tunnel
    /// addresses are where other hosts send VXLAN, so one per host.
    fn hosts(&mut self) {
        let mut addresses = FirstSeen::new();
        for (name, host) in &self.topo.hosts {
            let path = format!("hosts.{name}");
            self.name(&path, name);
            let a = host.tunnel_address;
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                self.err(
                    format!("{path}.tunnel_address"),
                    format!("{a} is not a unicast address; give the host's underlay address"),
                );
            }
            if let Some(first) = addresses.check(a, path.clone()) {
                let msg = format!("{a} is already the tunnel address of {first}");
                self.err(format!("{path}.tunnel_address"), msg);
            }
        }
    }

    /// The inbound and outbound filters of the object at `path` name chains.
    fn filters(
        &mut self,
        path: &dyn std::fmt::Display,
        inbound: Option<&String>,
        outbound: Option<&String>,
    ) {
        for (field, chain) in [("inbound_filter", inbound), ("outbound_filter", outbound)] {
            // The path is written only for a filter that names no chain.
            if chain.is_some_and(|c| !self.topo.chains.contains_key(c)) {
                self.chain_ref(format!("{path}.{field}"), chain);
            }
        }
    }

    fn bridge(&mut self, name: &str, bridge: &Bridge) {
        let path = format!("bridges.{name}");
        self.name(&path, name);
        self.filters(
            &path,
            bridge.inbound_filter.as_ref(),
            bridge.outbound_filter.as_ref(),
        );

        for (pname, port) in &bridge.ports {
            let ppath = PortPath::new("bridges", name, pname);
            self.name(ppath, pname);
            self.filters(
                &ppath,
                port.inbound_filter.as_ref(),
                port.outbound_filter.as_ref(),
            );
            if let Some(vlan) = port.vlan {
                if !(1..=4094).contains(&vlan) {
                    self.err(
                        format!("{ppath}.vlan"),
                        format!("VLAN id {vlan} is out of range 1-4094"),
                    );
                }
            }
        }

        let mut macs = FirstSeen::new();
        for (i, entry) in bridge.mac_table.iter().enumerate() {
            let epath = format!("{path}.mac_table[{i}]");
            if !bridge.ports.contains_key(&entry.port) {
                self.err(
                    format!("{epath}.port"),
                    format!("bridge `{name}` has no port `{}`", entry.port),
                );
            }
            if !entry.mac.is_unicast() {
                self.err(
                    format!("{epath}.mac"),
                    format!(
                        "{} is not a unicast MAC; static entries map one station to one port",
                        entry.mac
                    ),
                );
            }
            if let Some(first) = macs.check(entry.mac, format!("mac_table[{i}]")) {
                let msg = format!(
                    "{} is already in {first}; a MAC can be on one port only",
                    entry.mac
                );
                self.err(format!("{epath}.mac"), msg);
            }
        }

        let mut ips = FirstSeen::new();
        for (i, entry) in bridge.arp_table.iter().enumerate() {
            let epath = format!("{path}.arp_table[{i}]");
            self.unicast(format!("{epath}.ip"), entry.ip);
            if !entry.mac.is_unicast() {
                self.err(
                    format!("{epath}.mac"),
                    format!("{} is not a unicast MAC", entry.mac),
                );
            }
            if let Some(first) = ips.check(entry.ip, format!("arp_table[{i}]")) {
                let msg = format!("{} is already in {first}; give each IP one MAC", entry.ip);
                self.err(format!("{epath}.ip"), msg);
            }
        }

        self.dhcp(&path, bridge);
        self.port_security(name, bridge);
    }

    fn router(&mut self, name: &str, router: &Router) {
        let path = format!("routers.{name}");
        self.filters(
            &path,
            router.inbound_filter.as_ref(),
            router.outbound_filter.as_ref(),
        );

        for (pname, port) in &router.ports {
            let ppath = PortPath::new("routers", name, pname);
            self.name(ppath, pname);
            self.filters(
                &ppath,
                port.inbound_filter.as_ref(),
                port.outbound_filter.as_ref(),
            );
            let a = port.address;
            if a.prefix_len() < 31 && (a.addr() == a.network() || a.addr() == a.broadcast()) {
                let which = if a.addr() == a.network() {
                    "network"
                } else {
                    "broadcast"
                };
                self.err(
                    format!("{ppath}.address"),
                    format!(
                        "{} is the {which} address of {}; give the port a host address of the subnet, such as {}/{}",
                        a.addr(),
                        a.trunc(),
                        first_host(&a),
                        a.prefix_len()
                    ),
                );
            } else if !super::is_unicast(a.addr()) {
                self.err(
                    format!("{ppath}.address"),
                    format!("{} is not a unicast address", a.addr()),
                );
            }
            if let Some(mac) = port.mac {
                if !mac.is_unicast() {
                    self.err(
                        format!("{ppath}.mac"),
                        format!("{mac} is not a unicast MAC"),
                    );
                }
            }
            if let Some(mtu) = port.mtu {
                if mtu < 68 {
                    self.err(
                        format!("{ppath}.mtu"),
                        format!("MTU {mtu} is below the IPv4 minimum of 68"),
                    );
                }
            }
        }

        // Overlapping subnets would make the connected route of a
        // destination ambiguous.
        let ports: Vec<(&String, &RouterPort)> = router.ports.iter().collect();
        for (j, (pj, portj)) in ports.iter().enumerate() {
            if let Some((pi, porti)) = ports[..j]
                .iter()
                .find(|(_, pi)| overlaps(&pi.address, &portj.address))
            {
                self.err(
                    format!("{path}.ports.{pj}.address"),
                    format!(
                        "subnet {} overlaps subnet {} of port {pi}; the ports of a router need distinct subnets",
                        portj.address.trunc(),
                        porti.address.trunc()
                    ),
                );
            }
        }

        for (i, route) in router.routes.iter().enumerate() {
            self.route(name, router, &format!("{path}.routes[{i}]"), route);
        }
    }

    fn route(&mut self, rname: &str, router: &Router, path: &str, route: &Route) {
        self.network(format!("{path}.dst"), &route.dst);
        if let Some(src) = &route.src {
            self.network(format!("{path}.src"), src);
        }
        if route.kind != RouteType::Normal {
            let kind = if route.kind == RouteType::Blackhole {
                "blackhole"
            } else {
                "reject"
            };
            if route.port.is_some() {
                self.err(
                    format!("{path}.port"),
                    format!("a {kind} route sends nothing out, so it takes no port; remove port"),
                );
            }
            if route.via.is_some() {
                self.err(
                    format!("{path}.via"),
                    format!("a {kind} route sends nothing out, so it takes no via; remove via"),
                );
            }
            return;
        }
        match (&route.port, route.via) {
            (Some(pname), via) => {
                let Some(port) = router.ports.get(pname) else {
                    self.err(
                        format!("{path}.port"),
                        format!("router {rname} has no port `{pname}`"),
                    );
                    return;
                };
                if let Some(via) = via {
                    if !is_host_in(&port.address, via) {
                        self.err(
                            format!("{path}.via"),
                            format!(
                                "{via} is not a host address inside subnet {} of port {pname}; the next hop must be reachable on that port",
                                port.address.trunc()
                            ),
                        );
                    } else if via == port.address.addr() {
                        self.err(
                            format!("{path}.via"),
                            format!("{via} is the router's own address on port {pname}; give the neighbour's address, or no via for an on-link route"),
                        );
                    }
                }
            }
            (None, Some(via)) => match router.port_for(via) {
                None => self.err(
                    format!("{path}.via"),
                    format!("{via} is not inside any port subnet of router {rname}"),
                ),
                Some((pname, port)) if via == port.address.addr() => self.err(
                    format!("{path}.via"),
                    format!("{via} is the router's own address on port {pname}; give the neighbour's address"),
                ),
                Some(_) => {}
            },
            (None, None) => self.err(
                format!("{path}.port"),
                "a normal route needs port (or a via inside a port's subnet); use type: blackhole or reject to drop the traffic",
            ),
        }
    }
}

/// Every port of every device, with what the link and binding checks need.
fn all_ports(topo: &Topology) -> Vec<PortInfo<'_>> {
    let bridge_ports = topo.bridges.iter().flat_map(|(b, bridge)| {
        bridge.ports.iter().map(move |(p, port)| PortInfo {
            device: b,
            port: p,
            path: PortPath::new("bridges", b, p),
            is_bridge: true,
            interface: port.interface.as_ref(),
            host: port.host.as_ref(),
            executor: port.executor,
            peer: port.peer.as_ref(),
        })
    });
    let router_ports = topo.routers.iter().flat_map(|(r, router)| {
        router.ports.iter().map(move |(p, port)| PortInfo {
            device: r,
            port: p,
            path: PortPath::new("routers", r, p),
            is_bridge: false,
            interface: port.interface.as_ref(),
            host: port.host.as_ref(),
            executor: port.executor,
            peer: port.peer.as_ref(),
        })
    });
    bridge_ports.chain(router_ports).collect()
}

impl Validator<'_> {
    /// A port is bound to an interface, linked to a peer, or neither
    /// (unbound); a host interface backs one port only.
    fn port_bindings(&mut self, ports: &[PortInfo]) {
        // By interface, the first port bound to it.
        let mut bound: BTreeMap<(Option<&String>, &str), PortPath> = BTreeMap::new();
        for p in ports {
            if let Some(host) = p.host {
                if !self.topo.hosts.contains_key(host) {
                    self.err(
                        format!("{}.host", p.path),
                        format!("no host named `{host}`; declare it under hosts (with its tunnel_address)"),
                    );
                }
                if p.interface.is_none() {
                    self.err(
                        format!("{}.host", p.path),
                        "a host applies to an exterior port (bound to an interface); this port has no interface",
                    );
                }
            }
            if p.interface.is_some() && p.peer.is_some() {
                self.err(
                    p.path,
                    "set either interface (exterior port) or peer (interior port), not both",
                );
            }
            let Some(ifname) = p.interface else {
                if !p.executor.is_auto() {
                    self.err(
                        format!("{}.executor", p.path),
                        "an executor applies to an exterior port (bound to an interface); \
                         this port has no interface",
                    );
                }
                continue;
            };
            let ipath = |p: &PortInfo| format!("{}.interface", p.path);
            if let Some(why) = bad_interface_name(ifname) {
                self.err(
                    ipath(p),
                    format!("`{ifname}` is not a valid Linux interface name: {why}"),
                );
            }
            // Interfaces are per host: each host has its own `vm1`.
            if let Some(first) = bound.get(&(p.host, ifname.as_str())) {
                let msg = format!(
                    "interface {ifname} is already bound to {first}; a host interface can back one port only"
                );
                self.err(ipath(p), msg);
            } else {
                bound.insert((p.host, ifname.as_str()), p.path);
            }
        }
    }

    /// Links are declared on both ends and must agree: `a.peer = b` requires
    /// `b.peer = a`. MidoNet links bridge↔router and router↔router only.
    fn links(&mut self, ports: &[PortInfo]) {
        let topo = self.topo;
        let mut linked_from: BTreeMap<&PortRef, Vec<PortRef>> = BTreeMap::new();
        for p in ports {
            let Some(peer) = p.peer else { continue };
            let path = format!("{}.peer", p.path);
            // Made only for linked ports, a few of a large topology.
            let this = PortRef::new(p.device, p.port);
            if *peer == this {
                self.err(&path, "a port cannot be linked to itself");
                continue;
            }
            if !self.port_ref(&path, peer) {
                continue;
            }
            if peer.device == this.device {
                self.err(
                    &path,
                    format!("{peer} is a port of the same device; link ports of different devices"),
                );
                continue;
            }
            linked_from.entry(peer).or_default().push(this.clone());
            if p.is_bridge && topo.bridges.contains_key(&peer.device) {
                self.err(
                    &path,
                    format!(
                        "{peer} is a bridge port, and bridges cannot be linked to each other (MidoNet has no bridge-to-bridge link); connect the bridges through a router"
                    ),
                );
                continue;
            }
            let back = topo.port(peer).and_then(|q| q.peer().cloned());
            match back {
                Some(back) if back == this => {}
                Some(back) => self.err(
                    &path,
                    format!("{peer} is linked to {back}, not to {this}; a port has only one peer"),
                ),
                None => {
                    let kind = if topo.bridges.contains_key(&peer.device) {
                        "bridges"
                    } else {
                        "routers"
                    };
                    self.err(
                        &path,
                        format!(
                            "{peer} does not link back; set peer: {this} on {kind}.{}.ports.{}",
                            peer.device, peer.port
                        ),
                    )
                }
            }
        }
        for (target, sources) in linked_from {
            if sources.len() > 1 {
                let kind = if topo.bridges.contains_key(&target.device) {
                    "bridges"
                } else {
                    "routers"
                };
                let list: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
                self.err(
                    format!("{kind}.{}.ports.{}", target.device, target.port),
                    format!(
                        "linked from several ports ({}); a port can be linked to one peer only",
                        list.join(", ")
                    ),
                );
            }
        }
    }

    /// Router port MACs (configured or derived) must differ, or ARP answers
    /// and L2 delivery become ambiguous.
    fn router_macs(&mut self) {
        let mut seen = FirstSeen::new();
        for (r, router) in &self.topo.routers {
            for (p, port) in &router.ports {
                let mac = port.effective_mac(r, p);
                let path = format!("routers.{r}.ports.{p}");
                if let Some(first) = seen.check(mac, path.clone()) {
                    let msg = if port.mac.is_some() {
                        format!(
                            "{mac} is also the MAC of {first}; give each router port its own MAC"
                        )
                    } else {
                        format!("the MAC derived for this port, {mac}, is also the MAC of {first}; set mac explicitly")
                    };
                    self.err(format!("{path}.mac"), msg);
                }
            }
        }
    }
}

/// Why `name` cannot be a Linux interface name (the kernel's
/// `dev_valid_name`), or `None` if it can.
fn bad_interface_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are reserved")
    } else if name.contains('/') || name.contains(':') {
        Some("it contains '/' or ':'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or a control character")
    } else {
        None
    }
}

fn first_host(net: &ipnet::Ipv4Net) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}
