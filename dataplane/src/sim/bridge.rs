//! The virtual bridge (MidoNet "Network"): MAC learning, static MACs, ARP
//! suppression, known unicast, flooding.
use super::{
    forward_actions, Binding, Flow, PortId, Step, Tag, Verdict, Walk, FLOW_IDLE_TIMEOUT_NS,
};
use crate::packet::{self, build, Headers, ARP_REPLY, ARP_REQUEST, L3};
use crate::sim::mac_table::Learned;
use vnet_common::Reason;

pub(super) fn process(
    walk: &mut Walk,
    bridge_id: usize,
    in_port: PortId,
    frame: &[u8],
    h: &Headers,
) {
    let snap = walk.snap;
    let bridge = &snap.bridges[bridge_id];
    walk.step(|| Step::Device {
        device: super::DeviceRef::Bridge(bridge_id),
    });

    if packet::is_link_local(&h.dst) {
        walk.drop(Reason::LinkLocalDrop, None);
        return;
    }

    learn(walk, bridge_id, in_port, h);

    // ARP suppression: answer requests for addresses in the bridge's table
    // instead of flooding them.
    if let L3::Arp(arp) = h.l3 {
        if arp.op == ARP_REQUEST {
            if let Some(mac) = bridge.arp_table.get(&arp.tpa) {
                let mac = *mac;
                walk.step(|| Step::ArpSuppressed { ip: arp.tpa, mac });
                let reply = build::arp_frame(ARP_REPLY, mac, arp.tpa, arp.sha, arp.spa, arp.sha);
                walk.emit(in_port, reply);
                walk.decision.verdict = Verdict::Answered;
                return;
            }
        }
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

    let out = &snap.ports[out_port];
    let tags = vec![
        snap.ports[in_port].tag,
        out.tag,
        bridge.tag,
        Tag::mac(bridge.tag, &h.src),
        Tag::mac(bridge.tag, &h.dst),
    ];
    if out_port == in_port {
        walk.drop(Reason::SameSegment, Some(tags));
        return;
    }
    if !out.up {
        walk.drop(Reason::PortDown, Some(tags));
        return;
    }
    match &out.binding {
        Binding::Interface(_) => {
            walk.emit(out_port, frame.to_vec());
            walk.decision.verdict = Verdict::Forwarded;
            walk.decision.install = Some(Flow {
                actions: forward_actions(snap, in_port, out_port),
                output: Some(out_port),
                tags,
                idle_timeout_ns: FLOW_IDLE_TIMEOUT_NS,
            });
        }
        // Interior ports lead to routers, which arrive with the router issue.
        Binding::Peer(_) | Binding::Unbound => walk.drop(Reason::NoEgress, None),
    }
}

/// Learns the source MAC on the ingress port (unless it is static there or
/// not a unicast address). A move invalidates every flow that used the MAC.
fn learn(walk: &mut Walk, bridge_id: usize, in_port: PortId, h: &Headers) {
    let snap = walk.snap;
    let bridge = &snap.bridges[bridge_id];
    if packet::is_multicast(&h.src) || h.src == [0; 6] || bridge.static_macs.contains_key(&h.src) {
        return;
    }
    let port_tag = snap.ports[in_port].tag;
    match walk
        .state
        .macs
        .learn(bridge.tag, h.src, port_tag, walk.now_ns)
    {
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
        Learned::TableFull => walk.step(|| Step::MacTableFull { mac: h.src }),
    }
}

/// Sends the frame to every other port of the bridge that is up. Flooded
/// frames are never installed as flows: the set of ports changes as MACs are
/// learned, and the next frame to a learned MAC must take the unicast path.
fn flood(walk: &mut Walk, bridge_id: usize, in_port: PortId, frame: &[u8]) {
    let snap = walk.snap;
    let ports: Vec<PortId> = snap.bridges[bridge_id]
        .ports
        .iter()
        .copied()
        .filter(|&p| {
            p != in_port
                && snap.ports[p].up
                && matches!(snap.ports[p].binding, Binding::Interface(_))
        })
        .collect();
    if ports.is_empty() {
        walk.drop(Reason::NoEgress, None);
        return;
    }
    if walk.tracing {
        walk.decision.trace.push(Step::Flood {
            ports: ports.clone(),
        });
    }
    for p in ports {
        walk.emit(p, frame.to_vec());
    }
    walk.decision.verdict = Verdict::Flooded;
}
