//! The virtual bridge (MidoNet "Network"): MAC learning, static MACs, ARP
//! suppression, known unicast, flooding.
use super::{filter, Binding, PortId, Step, Tag, Verdict, Walk};
use crate::packet::{self, build, Frame, Headers, ARP_REPLY, ARP_REQUEST, L3};
use crate::sim::mac_table::Learned;
use vnet_common::Reason;

pub(super) fn process(walk: &mut Walk, bridge_id: usize, in_port: PortId, mut frame: Frame) {
    let snap = walk.snap;
    let bridge = &snap.bridges[bridge_id];
    let h = *frame.headers();
    walk.step(|| Step::Device {
        device: super::DeviceRef::Bridge(bridge_id),
    });

    if packet::is_link_local(&h.dst) {
        walk.drop(Reason::LinkLocalDrop, false);
        return;
    }
    if matches!(h.l3, L3::Arp(_)) {
        // Port security, ARP suppression and the routers read the sender
        // and target hardware addresses, which the flow key does not hold.
        walk.not_installable("ARP: the key does not hold the hardware addresses");
    }

    if walk.origin.is_some() && !bridge.filters.inbound.is_empty() {
        let at = filter::Point {
            in_port: Some(in_port),
            out_port: None,
            zone: bridge.tag,
            reply_via: None,
        };
        if !filter::run(walk, &bridge.filters.inbound, &mut frame, at) {
            return;
        }
    }
    // A NAT rule may have rewritten the frame (its headers with it).
    let h = *frame.headers();

    learn(walk, bridge_id, in_port, &h);

    // ARP suppression: answer requests for addresses in the bridge's table
    // instead of flooding them.
    if let L3::Arp(arp) = h.l3 {
        if arp.op == ARP_REQUEST {
            if let Some(mac) = bridge.arp_table.get(&arp.tpa) {
                let mac = *mac;
                walk.step(|| Step::ArpSuppressed { ip: arp.tpa, mac });
                let reply = build::arp_frame(ARP_REPLY, mac, arp.tpa, arp.sha, arp.spa, arp.sha);
                walk.inject(in_port, reply);
                walk.answered();
                return;
            }
        }
    }

    // DHCP: requests to the bridge's servers are answered here.
    if super::dhcp_stage::process(walk, bridge_id, in_port, frame.bytes(), &h) {
        return;
    }

    if packet::is_multicast(&h.dst) {
        flood(walk, bridge_id, in_port, frame);
        return;
    }

    let (out_port, is_static) = match bridge.static_macs.get(&h.dst) {
        Some(p) => (Some(*p), true),
        None => {
            let learned = walk.state.macs.lookup(bridge.tag, &h.dst);
            (learned.and_then(|t| snap.port_by_tag(t)), false)
        }
    };
    walk.step(|| Step::MacLookup {
        mac: h.dst,
        port: out_port,
        is_static,
    });
    let Some(out_port) = out_port else {
        flood(walk, bridge_id, in_port, frame);
        return;
    };

    walk.tags.extend([
        bridge.tag,
        Tag::mac(bridge.tag, &h.src),
        Tag::mac(bridge.tag, &h.dst),
    ]);
    if out_port == in_port {
        walk.drop(Reason::SameSegment, true);
        return;
    }
    if !outbound_filter(walk, bridge_id, in_port, Some(out_port), &mut frame) {
        return;
    }
    walk.deliver(out_port, frame);
}

/// Learns the source MAC on the ingress port (unless it is static there or
/// not a unicast address). A move invalidates every flow that used the MAC.
/// Learned on a port of this host, it is also flow state for the hosts the
/// frame goes to (`StateEntry::Mac`), every time: a host that restarted or
/// aged the entry out learns it again from the next first packet.
fn learn(walk: &mut Walk, bridge_id: usize, in_port: PortId, h: &Headers) {
    let snap = walk.snap;
    let bridge = &snap.bridges[bridge_id];
    if !learnable(bridge, &h.src) {
        return;
    }
    let port_tag = snap.ports[in_port].tag;
    let learned = walk
        .state
        .macs
        .learn(bridge.tag, h.src, port_tag, walk.now_ns);
    let kept = matches!(
        learned,
        Learned::New | Learned::Refreshed | Learned::Moved { .. }
    );
    // Only another host needs it (a topology without hosts has none).
    let local = matches!(snap.ports[in_port].binding, Binding::Interface(_));
    if kept && local && !snap.hosts.is_empty() {
        walk.decision
            .state_out
            .push(super::flow_state::StateEntry::Mac {
                bridge: bridge.tag,
                mac: h.src,
                port: port_tag,
            });
    }
    match learned {
        Learned::Refreshed => {}
        Learned::New => walk.step(|| Step::MacLearned {
            mac: h.src,
            port: in_port,
        }),
        Learned::Moved { from } => {
            let from = snap.port_by_tag(from);
            walk.step(|| Step::MacMoved {
                mac: h.src,
                from,
                to: in_port,
            });
            walk.decision.invalidate.push(Tag::mac(bridge.tag, &h.src));
        }
        Learned::TableFull | Learned::BridgeLimit => {
            walk.step(|| Step::MacTableFull { mac: h.src })
        }
    }
}

/// Whether `mac` may be learned on `bridge`: unicast, not zero, not one of
/// its static MACs (which stay where the topology puts them).
fn learnable(bridge: &super::snapshot::Bridge, mac: &packet::Mac) -> bool {
    !packet::is_multicast(mac) && *mac != [0; 6] && !bridge.static_macs.contains_key(mac)
}

/// Learns what the host at `from` said its bridge learned (flow state):
/// only a MAC on a port of that bridge placed on that host, so a host can
/// move no MAC to another host's port, nor to a port of this one.
pub(super) fn learn_remote(
    walk: &mut Walk,
    from: [u8; 4],
    bridge: Tag,
    mac: packet::Mac,
    port: Tag,
) {
    let snap = walk.snap;
    let Some(bridge_id) = snap.bridges.iter().position(|b| b.tag == bridge) else {
        return;
    };
    let Some(p) = snap.port_by_tag(port) else {
        return;
    };
    let theirs = matches!(
        snap.ports[p].binding,
        Binding::Remote { tunnel_address, .. } if tunnel_address == from
    );
    if !theirs
        || snap.ports[p].device != super::DeviceRef::Bridge(bridge_id)
        || !learnable(&snap.bridges[bridge_id], &mac)
    {
        return;
    }
    if let Learned::Moved { .. } = walk.state.macs.learn(bridge, mac, port, walk.now_ns) {
        walk.decision.invalidate.push(Tag::mac(bridge, &mac));
    }
}

/// Sends the frame to every other port of the bridge that is up, exterior
/// or interior. Flooded frames are never installed as flows: the set of
/// ports changes as MACs are learned, and the next frame to a learned MAC
/// must take the unicast path.
fn flood(walk: &mut Walk, bridge_id: usize, in_port: PortId, mut frame: Frame) {
    if !outbound_filter(walk, bridge_id, in_port, None, &mut frame) {
        return;
    }
    let snap = walk.snap;
    let ports: Vec<PortId> = snap.bridges[bridge_id]
        .ports
        .iter()
        .copied()
        .filter(|&p| p != in_port && snap.ports[p].up && snap.ports[p].binding != Binding::Unbound)
        .collect();
    if ports.is_empty() {
        walk.drop(Reason::NoEgress, false);
        return;
    }
    if walk.tracing {
        walk.decision.trace.push(Step::Flood {
            ports: ports.clone(),
        });
    }
    for p in ports {
        walk.deliver_copy(p, frame.clone());
    }
    if walk.origin.is_some() {
        walk.decision.verdict = Verdict::Flooded;
    }
}

/// The bridge's outbound filter, before delivery (`out_port` is `None` for
/// a flood: the filter runs once for all copies).
fn outbound_filter(
    walk: &mut Walk,
    bridge_id: usize,
    in_port: PortId,
    out_port: Option<PortId>,
    frame: &mut Frame,
) -> bool {
    let bridge = &walk.snap.bridges[bridge_id];
    if walk.origin.is_none() || bridge.filters.outbound.is_empty() {
        return true;
    }
    let at = filter::Point {
        in_port: Some(in_port),
        out_port,
        zone: bridge.tag,
        reply_via: None,
    };
    filter::run(walk, &bridge.filters.outbound, frame, at)
}
