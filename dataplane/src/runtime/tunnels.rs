//! The kernel's tunnel tables, kept in line with the running snapshot and
//! the bound ports: which VNI reaches which local port (`TUNNEL_PORTS`),
//! whose VXLAN is accepted (`TUNNEL_PEERS`: the other hosts' tunnel
//! addresses), and this host's own address (`TUNNEL_LOCAL`). Written only
//! by the worker (here), read by the underlay programs; each entry is
//! written whole, so the kernel sees the old value or the new one. And the
//! flow state exchanged with the other hosts (`sim::flow_state`).
use super::Runtime;
use crate::sim::{self, flow_state};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use vnet_common::tunnel::{TunnelPort, PORT_REDIRECT_PEER, PORT_XDP};
use vnet_common::Reason;
use vnet_model::Executor;

/// What the worker last wrote to the tunnel maps.
#[derive(Debug, Default)]
pub struct Written {
    ports: HashMap<u32, TunnelPort>,
    peers: HashMap<[u8; 4], u32>,
    local: Option<[u8; 4]>,
    /// Local addresses an earlier vnetd wrote besides `local`.
    stale_locals: Vec<[u8; 4]>,
    /// Whether a sync ran since the tunnel was attached.
    pub(super) synced: bool,
}

impl Written {
    /// What the kernel's maps hold now (left by an earlier vnetd).
    pub fn from_kernel(
        kernel: &crate::kernel::Kernel,
    ) -> Result<Written, crate::kernel::KernelError> {
        let (ports, peers, local) = kernel.tunnel_entries()?;
        Ok(Written {
            ports: ports.into_iter().collect(),
            peers: peers.into_iter().collect(),
            // More than one would be a stale one: the sync replaces it.
            local: local.first().map(|(a, _)| *a),
            stale_locals: local.iter().skip(1).map(|(a, _)| *a).collect(),
            synced: false,
        })
    }
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
        w.synced = true;
        if w.local != Some(local) {
            if let Some(old) = w.local {
                w.stale_locals.push(old);
            }
            match self.kernel.set_tunnel_local(Ipv4Addr::from(local)) {
                Ok(()) => w.local = Some(local),
                Err(e) => tracing::warn!(error = %e, "setting the local tunnel address"),
            }
        }
        w.stale_locals.retain(|a| {
            *a != local
                && self
                    .kernel
                    .remove_tunnel_local(Ipv4Addr::from(*a))
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "removing an old local tunnel address"),
                    )
                    .is_err()
        });
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

    /// Sends the state `decision` recorded to every other host it sends the
    /// packet to (its remote egress ports' hosts), and to the hosts of the
    /// members of a stateful port group the state is in or the packet
    /// leaves by, before the packet.
    pub(super) fn send_flow_state(&mut self, decision: &sim::Decision) {
        let Some(tunnel) = &self.tunnel else {
            return;
        };
        let mut peers: Vec<[u8; 4]> = Vec::new();
        if decision.state_out.iter().any(|e| e.for_every_host()) {
            let local = tunnel.local;
            peers.extend(self.snap.hosts.values().filter(|a| **a != local));
        }
        let flow_out = decision.install.as_ref().and_then(|f| f.output);
        let outputs = || decision.emit.iter().map(|e| e.port).chain(flow_out);
        let snap = &self.snap;
        let zones = decision.state_out.iter().filter_map(|e| e.zone());
        let port_zones = outputs().filter_map(|p| snap.ports.get(p).map(|p| p.zone));
        let group = zones
            .chain(port_zones)
            .flat_map(|z| snap.group_peers(z).iter().copied());
        let egress = outputs().filter_map(|p| snap.remote(p)).map(|(a, _)| a);
        for address in egress.chain(group) {
            if !peers.contains(&address) {
                peers.push(address);
            }
        }
        if peers.is_empty() {
            return;
        }
        let message = flow_state::encode(&decision.state_out);
        for peer in peers {
            if !tunnel.send_state(peer, &message) {
                self.counters.count(Reason::TunnelTxFailed);
            }
        }
    }

    /// Imports the flow state other hosts sent, at most a batch per turn.
    /// Only the tunnel addresses of the topology's other hosts are heard.
    pub(super) fn receive_flow_state(&mut self) {
        const BATCH: usize = 64;
        let Some(tunnel) = &self.tunnel else {
            return;
        };
        let local = tunnel.local;
        let mut buf = [0u8; 2048];
        let now = super::now_ns();
        let mut imported = Vec::new();
        for _ in 0..BATCH {
            let Some((from, message)) = tunnel.receive_state(&mut buf) else {
                break;
            };
            let known = from != local && self.snap.hosts.values().any(|a| *a == from);
            match flow_state::decode(message) {
                Ok(entries) if known => imported.push((from, entries)),
                Ok(_) | Err(_) => self.counters.count(Reason::FlowStateRefused),
            }
        }
        for (from, entries) in imported {
            let decision = flow_state::import(&self.snap, &mut self.state, from, &entries, now);
            self.apply(decision, None, now);
        }
    }
}
