//! The kernel's tunnel tables, kept in line with the running snapshot and
//! the bound ports: which VNI reaches which local port (`TUNNEL_PORTS`),
//! whose VXLAN is accepted (`TUNNEL_PEERS`: the other hosts' tunnel
//! addresses), and this host's own address (`TUNNEL_LOCAL`). Written only
//! by the worker (here), read by the underlay programs; each entry is
//! written whole, so the kernel sees the old value or the new one.
use super::Runtime;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use vnet_common::tunnel::{TunnelPort, PORT_REDIRECT_PEER, PORT_XDP};
use vnet_model::Executor;

/// What the worker last wrote to the tunnel maps.
#[derive(Debug, Default)]
pub struct Written {
    ports: HashMap<u32, TunnelPort>,
    peers: HashMap<[u8; 4], u32>,
    local: Option<[u8; 4]>,
}

impl Runtime {
    /// Writes the differences between what the tunnel maps hold and what
    /// the snapshot and the bindings want. Called after every binding
    /// change and every new revision; cheap when nothing changed.
    pub(super) fn sync_tunnels(&mut self) {
        let Some(tunnel) = &self.tunnel else {
            return;
        };
        let local = tunnel.local;
        let mut ports: HashMap<u32, TunnelPort> = HashMap::new();
        for b in self.ports.iter() {
            let Some(key) = self.snap.ports.get(b.port).and_then(|p| p.tunnel_key) else {
                continue;
            };
            let mut flags = 0;
            if b.executor == Executor::Xdp {
                flags |= PORT_XDP;
            } else if b.redirect_peer {
                flags |= PORT_REDIRECT_PEER;
            }
            ports.insert(
                key,
                TunnelPort {
                    ifindex: b.ifindex,
                    flags,
                },
            );
        }
        // Every other host of the topology; its id is its position among
        // the names (the kernel only keys on the address).
        let mut names: Vec<(&String, &[u8; 4])> = self.snap.hosts.iter().collect();
        names.sort();
        let peers: HashMap<[u8; 4], u32> = names
            .into_iter()
            .enumerate()
            .filter(|(_, (_, a))| **a != local)
            .map(|(i, (_, a))| (*a, i as u32))
            .collect();

        let w = &mut self.tunnels_written;
        if w.local != Some(local) {
            match self.kernel.set_tunnel_local(Ipv4Addr::from(local)) {
                Ok(()) => w.local = Some(local),
                Err(e) => tracing::warn!(error = %e, "setting the local tunnel address"),
            }
        }
        let stale: Vec<u32> = w
            .ports
            .keys()
            .filter(|k| !ports.contains_key(k))
            .copied()
            .collect();
        for vni in stale {
            match self.kernel.remove_tunnel_port(vni) {
                Ok(()) => {
                    w.ports.remove(&vni);
                }
                Err(e) => tracing::warn!(vni, error = %e, "removing a tunnel port"),
            }
        }
        for (vni, tp) in ports {
            if w.ports.get(&vni) == Some(&tp) {
                continue;
            }
            match self.kernel.set_tunnel_port(vni, tp) {
                Ok(()) => {
                    tracing::debug!(vni, ifindex = tp.ifindex, "tunnel port");
                    w.ports.insert(vni, tp);
                }
                Err(e) => {
                    tracing::warn!(vni, ifindex = tp.ifindex, error = %e, "setting a tunnel port")
                }
            }
        }
        let gone: Vec<[u8; 4]> = w
            .peers
            .keys()
            .filter(|a| !peers.contains_key(*a))
            .copied()
            .collect();
        for addr in gone {
            match self.kernel.remove_tunnel_peer(Ipv4Addr::from(addr)) {
                Ok(()) => {
                    w.peers.remove(&addr);
                }
                Err(e) => {
                    tracing::warn!(peer = %Ipv4Addr::from(addr), error = %e, "removing a tunnel peer")
                }
            }
        }
        for (addr, id) in peers {
            if w.peers.get(&addr) == Some(&id) {
                continue;
            }
            match self.kernel.set_tunnel_peer(Ipv4Addr::from(addr), id) {
                Ok(()) => {
                    w.peers.insert(addr, id);
                }
                Err(e) => {
                    tracing::warn!(peer = %Ipv4Addr::from(addr), error = %e, "setting a tunnel peer")
                }
            }
        }
    }
}
