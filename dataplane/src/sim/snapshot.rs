//! The read-optimised, immutable form of a topology that the simulation
//! walks. Compiled once per topology revision from the control model; the
//! workers share it behind an `Arc` and never lock it.
use super::Tag;
use crate::packet::Mac;
use std::collections::HashMap;
use vnet_control::Topology;

/// Index of a port in `Snapshot::ports`; valid within one snapshot only
/// (tags are the ids that survive snapshots).
pub type PortId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Exterior: bound to a host interface.
    Interface(String),
    /// Interior: linked to the port of another device.
    Peer(PortId),
    Unbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRef {
    Bridge(usize),
    Router(usize),
}

#[derive(Debug, Clone)]
pub struct Port {
    /// Qualified name `device/port`.
    pub name: String,
    pub tag: Tag,
    pub device: DeviceRef,
    pub binding: Binding,
    /// 802.1Q VID carried on the wire of an exterior port.
    pub vlan: Option<u16>,
    pub up: bool,
}

#[derive(Debug, Clone)]
pub struct Bridge {
    pub name: String,
    pub tag: Tag,
    pub ports: Vec<PortId>,
    pub static_macs: HashMap<Mac, PortId>,
    /// IP → MAC entries the bridge answers ARP requests for.
    pub arp_table: HashMap<[u8; 4], Mac>,
}

#[derive(Debug, Clone)]
pub struct Router {
    pub name: String,
    pub tag: Tag,
    pub ports: Vec<PortId>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub ports: Vec<Port>,
    pub bridges: Vec<Bridge>,
    pub routers: Vec<Router>,
    by_name: HashMap<String, PortId>,
    by_tag: HashMap<Tag, PortId>,
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

        for (bname, b) in &topology.bridges {
            let device = DeviceRef::Bridge(snap.bridges.len());
            let mut ports = Vec::new();
            for (pname, p) in &b.ports {
                let id = snap.add_port(format!("{bname}/{pname}"), device, p.vlan, p.up);
                if let Some(ifname) = &p.interface {
                    snap.ports[id].binding = Binding::Interface(ifname.clone());
                }
                if let Some(peer) = &p.peer {
                    peers.push((id, format!("{}/{}", peer.device, peer.port)));
                }
                ports.push(id);
            }
            let bridge_name = bname.clone();
            let static_macs = b
                .mac_table
                .iter()
                .filter_map(|m| {
                    let id = snap.by_name.get(&format!("{bridge_name}/{}", m.port))?;
                    Some((m.mac.0, *id))
                })
                .collect();
            let arp_table = b
                .arp_table
                .iter()
                .map(|a| (a.ip.octets(), a.mac.0))
                .collect();
            snap.bridges.push(Bridge {
                name: bname.clone(),
                tag: Tag::device(bname),
                ports,
                static_macs,
                arp_table,
            });
        }

        for (rname, r) in &topology.routers {
            let device = DeviceRef::Router(snap.routers.len());
            let mut ports = Vec::new();
            for (pname, p) in &r.ports {
                let id = snap.add_port(format!("{rname}/{pname}"), device, None, p.up);
                if let Some(ifname) = &p.interface {
                    snap.ports[id].binding = Binding::Interface(ifname.clone());
                }
                if let Some(peer) = &p.peer {
                    peers.push((id, format!("{}/{}", peer.device, peer.port)));
                }
                ports.push(id);
            }
            snap.routers.push(Router {
                name: rname.clone(),
                tag: Tag::device(rname),
                ports,
            });
        }

        for (id, peer_name) in peers {
            if let Some(&peer) = snap.by_name.get(&peer_name) {
                snap.ports[id].binding = Binding::Peer(peer);
            }
        }
        snap
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
            vlan,
            up,
        });
        id
    }

    pub fn port_by_name(&self, qualified_name: &str) -> Option<PortId> {
        self.by_name.get(qualified_name).copied()
    }

    pub fn port_by_tag(&self, tag: Tag) -> Option<PortId> {
        self.by_tag.get(&tag).copied()
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
}
