//! Port security: the addresses a bridge port owns.
//!
//! A guest may only claim what its port owns, and never what the network
//! itself owns (router ports on the bridge, the bridge's DHCP servers): a
//! file that gives a port such an address is refused, as is a MAC owned by
//! two ports of one bridge.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{FirstSeen, PortPath, Validator};
use crate::model::*;

impl Validator<'_> {
    pub(super) fn port_security(&mut self, name: &str, bridge: &Bridge) {
        let network = network_addresses(self.topo, name, bridge);
        let mut owners = FirstSeen::new();
        for (pname, port) in &bridge.ports {
            let ppath = PortPath::new("bridges", name, pname);
            let claims = port.port_security.is_some()
                || !port.addresses.is_empty()
                || !port.allowed_address_pairs.is_empty();
            if port.peer.is_some() && claims {
                self.err(
                    format!("{ppath}.port_security"),
                    "port security applies to exterior ports (bound to an interface); this port is linked to a peer",
                );
            }
            let lists = [
                ("addresses", &port.addresses),
                ("allowed_address_pairs", &port.allowed_address_pairs),
            ];
            for (field, list) in lists {
                for (i, a) in list.iter().enumerate() {
                    let apath = format!("{ppath}.{field}[{i}]");
                    match a.mac {
                        Some(mac) if !mac.is_unicast() => self.err(
                            &apath,
                            format!("{mac} is not a unicast MAC a guest can own"),
                        ),
                        None if field == "addresses" => self.err(
                            &apath,
                            format!("`{a}` has no MAC; write the pair as \"MAC IP\""),
                        ),
                        _ => {}
                    }
                    if let Some(net) = a.ip {
                        for (addr, owner) in &network {
                            if net.contains(addr) {
                                self.err(
                                    &apath,
                                    format!(
                                        "{addr} belongs to {owner}; no guest port may claim it"
                                    ),
                                );
                            }
                        }
                    }
                    if let (Some(mac), "addresses") = (a.mac, field) {
                        if let Some(first) = owners.check(mac, format!("port {pname}")) {
                            if *first != format!("port {pname}") {
                                let msg = format!(
                                    "{mac} is already owned by {first}; a MAC belongs to one port"
                                );
                                self.err(&apath, msg);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The addresses the network owns on bridge `name`: the router ports linked
/// to it and its DHCP servers, with who owns each (for the error message).
fn network_addresses(topo: &Topology, name: &str, bridge: &Bridge) -> BTreeMap<Ipv4Addr, String> {
    let mut owned = BTreeMap::new();
    for (pname, port) in &bridge.ports {
        let Some(peer) = &port.peer else { continue };
        if let Some(rp) = topo
            .routers
            .get(&peer.device)
            .and_then(|r| r.ports.get(&peer.port))
        {
            owned.insert(
                rp.address.addr(),
                format!("router port {peer} (linked to {name}/{pname})"),
            );
        }
    }
    for subnet in &bridge.dhcp {
        owned.insert(subnet.server, format!("the DHCP server of {name}"));
    }
    owned
}
