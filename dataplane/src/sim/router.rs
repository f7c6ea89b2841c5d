//! The virtual router: ARP for its ports, ICMP for itself, TTL, routing,
//! MTU and fragmentation, next-hop resolution (SEMANTICS.md "Router").
use super::arp_cache::{Queued, Update};
use super::route_table::NextHop;
use super::{filter, DeviceRef, PortId, RouterIf, Step, Tag, Walk};
use crate::packet::{
    self, build, Arp, Frame, Ipv4, Mac, ARP_REPLY, ARP_REQUEST, BROADCAST, ETH_HLEN, L3, L4,
};
use vnet_common::{act, Reason};
use vnet_model::ReversePath;

/// ICMP types and codes the router sends.
pub(super) mod icmp {
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const NET_UNREACHABLE: u8 = 0;
    pub const HOST_UNREACHABLE: u8 = 1;
    pub const PROTOCOL_UNREACHABLE: u8 = 2;
    pub const PORT_UNREACHABLE: u8 = 3;
    pub const FRAGMENTATION_NEEDED: u8 = 4;
    pub const ADMIN_PROHIBITED: u8 = 13;
    pub const TIME_EXCEEDED: u8 = 11;
}

pub(super) fn process(walk: &mut Walk, router_id: usize, in_port: PortId, frame: Frame) {
    let snap = walk.snap;
    let router = &snap.routers[router_id];
    let h = *frame.headers();
    walk.step(|| Step::Device {
        device: DeviceRef::Router(router_id),
    });
    let Some(port) = snap.ports[in_port].l3 else {
        walk.drop(Reason::NotForRouter, false);
        return;
    };
    walk.tags.push(router.tag);
    if h.dst != port.mac && h.dst != BROADCAST {
        walk.drop(Reason::NotForRouter, !packet::is_multicast(&h.dst));
        return;
    }
    match h.l3 {
        L3::Arp(arp) => arp_input(walk, router_id, in_port, port, &arp),
        L3::Ipv4(..) if h.dst == port.mac => {
            // Pre-routing: the router's inbound filters (DNAT, reverse
            // SNAT, firewall) see the packet before anything else.
            let mut frame = frame;
            // ICMP errors follow the NAT binding of what they quote.
            if walk.origin.is_some() {
                if let Err(r) = super::nat::translate_related_error(walk, &mut frame, router.tag) {
                    return walk.drop(r, false);
                }
            }
            if walk.origin.is_some() && !router.filters.inbound.is_empty() {
                let at = filter::Point {
                    in_port: Some(in_port),
                    out_port: None,
                    zone: router.tag,
                    reply_via: Some((in_port, port, h.src)),
                };
                if !filter::run(walk, &router.filters.inbound, &mut frame, at) {
                    return;
                }
            }
            // The headers as the filters and NAT left them.
            let L3::Ipv4(ip, l4) = frame.headers().l3 else {
                return walk.drop(Reason::Malformed, false);
            };
            ip_input(walk, router_id, in_port, port, frame, h.src, &ip, l4)
        }
        _ => walk.drop(Reason::NotRoutable, false),
    }
}

/// ARP at a router port: learn from senders inside the port's subnet,
/// answer requests for the port's address.
fn arp_input(walk: &mut Walk, router_id: usize, in_port: PortId, port: RouterIf, arp: &Arp) {
    let r = &walk.snap.routers[router_id];
    let router = r.tag;
    // The port's address, or a NAT address the router owns on this port
    // (even outside the port's subnet).
    let owned = r.owned.get(&in_port).is_some_and(|a| a.contains(&arp.tpa));
    let for_us = arp.tpa == port.addr || owned;
    // Learn only from senders inside the port's subnet: a reply or a
    // gratuitous ARP claiming an outside address is spoofing or a
    // misconfiguration, and must not steer traffic. Like Linux, a request
    // creates an entry only when it asks for us; any ARP updates one.
    if arp.spa != [0; 4] && port.contains(arp.spa) && arp.spa != port.addr {
        if for_us || arp.op == ARP_REPLY || walk.state.arp.lookup(router, arp.spa).is_some() {
            learn(walk, router, arp.spa, arp.sha);
        }
    } else if arp.op == ARP_REPLY || !for_us {
        walk.step(|| Step::ArpIgnored { ip: arp.spa });
    }
    if arp.op == ARP_REQUEST && for_us {
        let reply = build::arp_frame(ARP_REPLY, port.mac, arp.tpa, arp.sha, arp.spa, arp.sha);
        walk.inject(in_port, reply);
        walk.answered();
    } else {
        walk.consumed();
    }
}

/// Records that `ip` is at `mac` for `router` (and tells the other hosts:
/// the reply to a request from one may arrive at another) and releases
/// what waited for it.
pub(super) fn learn(walk: &mut Walk, router: Tag, ip: [u8; 4], mac: Mac) {
    let (update, released) = walk.state.arp.update(router, ip, mac, walk.now_ns);
    if update != Update::TableFull {
        walk.step(|| Step::ArpLearned { ip, mac });
        let entry = super::flow_state::StateEntry::Arp { router, ip, mac };
        walk.decision.state_out.push(entry);
    }
    if update == Update::Changed {
        walk.decision.invalidate.push(Tag::arp(router, ip));
    }
    for q in released {
        match q {
            Queued::Received { origin, frame, .. } => walk.decision.released.push((origin, frame)),
            Queued::Generated { port, mut frame } => {
                if let Some(egress) = walk.snap.ports[port].l3 {
                    packet::set_macs(&mut frame, egress.mac, mac);
                    walk.inject(port, frame);
                }
            }
        }
    }
}

/// The IPv4 packet inside `frame` (which the router checked holds one).
fn ip_packet(frame: &Frame) -> &[u8] {
    frame.ipv4_packet().unwrap_or_default()
}

/// Sends an ICMP error about `frame` back to its sender through `in_port`.
pub(super) fn icmp_error(
    walk: &mut Walk,
    in_port: PortId,
    sender: Mac,
    original: &[u8],
    kind: u8,
    code: u8,
    rest: u32,
) {
    let Some(port) = walk.snap.ports[in_port].l3 else {
        return;
    };
    walk.step(|| Step::Icmp { kind, code });
    let packet = build::icmp_error(port.addr, kind, code, rest, original);
    walk.inject(in_port, build::ethernet_ipv4(sender, port.mac, &packet));
}

/// A packet the router refuses, and where its ICMP error goes.
struct Offender<'p> {
    in_port: PortId,
    sender: Mac,
    /// The IPv4 packet as received.
    packet: &'p [u8],
    /// Whether an ICMP error may be sent about it at all.
    answerable: bool,
}

/// Drops the packet, answering its sender with ICMP (type, code, second
/// header word) when allowed. Never installed: every such packet gets its
/// own answer.
fn refuse(walk: &mut Walk, o: &Offender, (kind, code, rest): (u8, u8, u32), reason: Reason) {
    walk.not_installable("the router answers every such packet with ICMP");
    if o.answerable {
        icmp_error(walk, o.in_port, o.sender, o.packet, kind, code, rest);
    }
    walk.drop(reason, false);
}

/// Whether an ICMP error may be sent about this packet (RFC 1812 §4.3.2.7):
/// never about an ICMP error, a non-first fragment, or a packet from a
/// broadcast/multicast/zero source.
pub(super) fn may_answer_with_error(ip: &Ipv4, l4: L4) -> bool {
    let icmp_error =
        matches!(l4, L4::Icmp { kind, .. } if !matches!(kind, 0 | 8 | 13 | 14 | 17 | 18));
    !icmp_error
        && !ip.is_later_fragment()
        && ip.src != [0; 4]
        && ip.src[0] < 224
        && ip.src != [255; 4]
}

#[allow(clippy::too_many_arguments)]
fn ip_input(
    walk: &mut Walk,
    router_id: usize,
    in_port: PortId,
    port: RouterIf,
    mut frame: Frame,
    sender: Mac,
    ip: &Ipv4,
    l4: L4,
) {
    let snap = walk.snap;
    let router = &snap.routers[router_id];

    // RFC 1812 5.3.7 and RFC 3704, before anything else (Linux checks
    // both before local delivery too). The decision reads addresses, which
    // are in the key, and the routes, which are tagged: a drop is installed.
    if let Some(reason) = martian(snap, router, port, ip) {
        walk.drop(reason, true);
        return;
    }
    let check = snap.ports[in_port].reverse_path;
    if !port.contains(ip.src) && !reverse_path_ok(router, check, in_port, ip) {
        walk.drop(Reason::ReversePath, true);
        return;
    }

    // Packets for the router itself (any of its addresses, from any side,
    // and its NAT addresses when no rule translated them).
    if router.port_with_addr(snap, ip.dst).is_some() || router.owns(ip.dst) {
        local_input(walk, in_port, port, &frame, sender, ip, l4);
        return;
    }
    let multicast = ip.dst[0] >= 224 || ip.dst == [255; 4];
    let directed_broadcast = router
        .ports
        .iter()
        .any(|&p| snap.ports[p].l3.and_then(|l3| l3.broadcast()) == Some(ip.dst));
    if multicast || directed_broadcast {
        walk.drop(Reason::NotRoutable, false);
        return;
    }
    let original = ip_packet(&frame).to_vec();
    let offender = Offender {
        in_port,
        sender,
        packet: &original,
        answerable: may_answer_with_error(ip, l4),
    };
    if ip.ttl <= 1 {
        // TTL is not in the flow key, and the kernel hands packets whose TTL
        // would run out to userspace anyway.
        return refuse(
            walk,
            &offender,
            (icmp::TIME_EXCEEDED, 0, 0),
            Reason::TtlExpired,
        );
    }

    let hash = flow_hash(ip, l4);
    let route = router.routes.lookup(ip.dst, ip.src, hash);
    walk.step(|| Step::Route {
        dst: ip.dst,
        route: route.map(|r| r.index),
    });
    let (out_port, gateway) = match route.map(|r| r.next_hop) {
        None => {
            let net_unreachable = (icmp::DEST_UNREACHABLE, icmp::NET_UNREACHABLE, 0);
            return refuse(walk, &offender, net_unreachable, Reason::NoRoute);
        }
        Some(NextHop::Blackhole) => {
            walk.drop(Reason::Blackhole, true);
            return;
        }
        Some(NextHop::Reject) => {
            let prohibited = (icmp::DEST_UNREACHABLE, icmp::ADMIN_PROHIBITED, 0);
            return refuse(walk, &offender, prohibited, Reason::RejectRoute);
        }
        Some(NextHop::Port { port, gateway }) => (port, gateway),
    };
    let Some(egress) = snap.ports[out_port].l3 else {
        walk.drop(Reason::NoEgress, false);
        return;
    };
    let next_hop = gateway.unwrap_or(ip.dst);

    // TTL − 1, once per router.
    frame.decrement_ttl();
    walk.step(|| Step::TtlDecremented);
    walk.path.actions.flags |= act::DEC_TTL;
    walk.path.actions.ttl_dec = walk.path.actions.ttl_dec.saturating_add(1);

    // Post-routing: the router's outbound filters (SNAT, reverse DNAT).
    if walk.origin.is_some() {
        if let Err(r) = super::nat::translate_related_error_out(walk, &mut frame, router.tag) {
            return walk.drop(r, false);
        }
    }
    if walk.origin.is_some() && !router.filters.outbound.is_empty() {
        let at = filter::Point {
            in_port: Some(in_port),
            out_port: Some(out_port),
            zone: router.tag,
            reply_via: Some((in_port, port, sender)),
        };
        if !filter::run(walk, &router.filters.outbound, &mut frame, at) {
            return;
        }
    }

    // MTU: the flow forwards only packets that fit every egress on its path.
    if walk.path.actions.mtu == 0 || egress.mtu < walk.path.actions.mtu {
        walk.path.actions.mtu = egress.mtu;
    }
    if ip.total_len > egress.mtu {
        walk.not_installable(
            "larger than the egress MTU (the kernel sends such packets up anyway)",
        );
        if ip.dont_fragment {
            let too_big = (
                icmp::DEST_UNREACHABLE,
                icmp::FRAGMENTATION_NEEDED,
                egress.mtu as u32,
            );
            return refuse(walk, &offender, too_big, Reason::FragmentationNeeded);
        }
        let Some(fragments) = build::fragment_ipv4(ip_packet(&frame), egress.mtu as usize) else {
            walk.drop(Reason::Malformed, false);
            return;
        };
        walk.step(|| Step::Fragmented {
            count: fragments.len(),
        });
        for f in fragments {
            let mut copy = frame.bytes()[..ETH_HLEN].to_vec();
            copy.extend_from_slice(&f);
            // A frame the router built itself: parsed once, here.
            let copy = match Frame::parse(copy) {
                Ok(copy) => copy,
                Err(e) => {
                    walk.drop(e.reason(), false);
                    continue;
                }
            };
            resolve_and_send(
                walk, router_id, in_port, out_port, egress, next_hop, copy, sender, &original,
            );
        }
        return;
    }
    resolve_and_send(
        walk, router_id, in_port, out_port, egress, next_hop, frame, sender, &original,
    );
}

/// Addresses no router forwards (RFC 1812 5.3.7). Sources: "this network"
/// 0/8, loopback 127/8, multicast and class E (224/3, with the limited
/// broadcast), the subnet's own broadcast, and the router's own addresses
/// (a guest posing as its gateway). Destinations: 0/8, 127/8 and class E
/// (multicast and broadcast destinations are `NotRoutable`). 169.254/16 is
/// left alone: clouds route their metadata service there.
fn martian(
    snap: &super::Snapshot,
    router: &super::snapshot::Router,
    port: RouterIf,
    ip: &Ipv4,
) -> Option<Reason> {
    let reserved = |a: [u8; 4]| a[0] == 0 || a[0] == 127;
    let own = router.port_with_addr(snap, ip.src).is_some();
    if reserved(ip.src) || ip.src[0] >= 224 || port.broadcast() == Some(ip.src) || own {
        return Some(Reason::MartianSource);
    }
    if reserved(ip.dst) || (ip.dst[0] >= 240 && ip.dst != [255; 4]) {
        return Some(Reason::MartianDestination);
    }
    None
}

/// The ingress port's reverse-path check (a source inside the port's own
/// subnet, which is on-link, passes before this): strict wants a best
/// route back to the source through the ingress port (any of the
/// equal-cost ones), loose any forwarding route back.
fn reverse_path_ok(
    router: &super::snapshot::Router,
    check: ReversePath,
    in_port: PortId,
    ip: &Ipv4,
) -> bool {
    let routes = &router.routes;
    match check {
        ReversePath::Off => true,
        ReversePath::Loose => routes.any_best(ip.src, ip.dst, |r| {
            matches!(r.next_hop, NextHop::Port { .. })
        }),
        ReversePath::Strict => routes.any_best(
            ip.src,
            ip.dst,
            |r| matches!(r.next_hop, NextHop::Port { port, .. } if port == in_port),
        ),
    }
}

/// Resolves the next hop's MAC and sends the frame; queues it while ARP is
/// pending.
#[allow(clippy::too_many_arguments)]
fn resolve_and_send(
    walk: &mut Walk,
    router_id: usize,
    in_port: PortId,
    out_port: PortId,
    egress: RouterIf,
    next_hop: [u8; 4],
    mut frame: Frame,
    sender: Mac,
    original: &[u8],
) {
    let router = walk.snap.routers[router_id].tag;
    let mut mac = walk.state.arp.lookup(router, next_hop);
    if mac.is_none() && walk.state.arp.pending(router, next_hop).is_none() {
        // Over an interior link the request is answered within this call
        // (the peer router or the bridge's ARP table answers it).
        send_arp_request(walk, out_port, egress, next_hop);
        mac = walk.state.arp.lookup(router, next_hop);
    }
    let Some(mac) = mac else {
        walk.not_installable("the next hop's MAC is not known yet");
        let queued = match walk.origin {
            Some((origin, received)) => Queued::Received {
                origin,
                frame: received.to_vec(),
                router_port: in_port,
                sender_mac: sender,
                ip_packet: original.to_vec(),
            },
            None => Queued::Generated {
                port: out_port,
                frame: frame.into_bytes(),
            },
        };
        match walk
            .state
            .arp
            .enqueue(router, next_hop, out_port, queued, walk.now_ns)
        {
            Some(_) => {
                walk.step(|| Step::ArpQueued { ip: next_hop });
                walk.consumed();
            }
            None => walk.drop(Reason::ArpQueueFull, false),
        }
        return;
    };
    walk.step(|| Step::ArpResolved { ip: next_hop, mac });
    walk.tags.push(Tag::arp(router, next_hop));
    frame.set_macs(egress.mac, mac);
    walk.path.actions.flags |= act::SET_ETH_SRC | act::SET_ETH_DST;
    walk.path.actions.eth_src = egress.mac;
    walk.path.actions.eth_dst = mac;
    walk.deliver(out_port, frame);
}

fn send_arp_request(walk: &mut Walk, out_port: PortId, egress: RouterIf, target: [u8; 4]) {
    let request = build::arp_frame(
        ARP_REQUEST,
        egress.mac,
        egress.addr,
        [0; 6],
        target,
        BROADCAST,
    );
    walk.inject(out_port, request);
}

/// Packets addressed to one of the router's own addresses.
fn local_input(
    walk: &mut Walk,
    in_port: PortId,
    port: RouterIf,
    frame: &Frame,
    sender: Mac,
    ip: &Ipv4,
    l4: L4,
) {
    let packet = ip_packet(frame).to_vec();
    // Reassembling datagrams for the router itself is not worth it: echo
    // requests bigger than the MTU are not answered.
    if ip.is_fragment() {
        walk.drop(Reason::NotRoutable, false);
        return;
    }
    match l4 {
        L4::Icmp { kind: 8, .. } => {
            let Some(reply) = build::icmp_echo_reply(ip.dst, &packet) else {
                walk.drop(Reason::Malformed, false);
                return;
            };
            walk.step(|| Step::Icmp { kind: 0, code: 0 });
            walk.inject(in_port, build::ethernet_ipv4(sender, port.mac, &reply));
            walk.answered();
        }
        L4::Icmp { .. } => walk.consumed(),
        L4::Ports { .. } => {
            icmp_error(
                walk,
                in_port,
                sender,
                &packet,
                icmp::DEST_UNREACHABLE,
                icmp::PORT_UNREACHABLE,
                0,
            );
            walk.answered();
        }
        L4::None => {
            icmp_error(
                walk,
                in_port,
                sender,
                &packet,
                icmp::DEST_UNREACHABLE,
                icmp::PROTOCOL_UNREACHABLE,
                0,
            );
            walk.answered();
        }
    }
}

/// A hash of the packet's 5-tuple: the same flow always takes the same
/// equal-cost route.
fn flow_hash(ip: &Ipv4, l4: L4) -> u64 {
    let (sp, dp) = match l4 {
        L4::Ports { src, dst } => (src, dst),
        L4::Icmp { echo_id, .. } => (echo_id.unwrap_or(0), 0),
        L4::None => (0, 0),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ip
        .src
        .iter()
        .chain(&ip.dst)
        .chain(&[ip.proto])
        .chain(&sp.to_be_bytes())
        .chain(&dp.to_be_bytes())
    {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// ARP timers: retries, give-ups (ICMP host unreachable to the queued
/// packets' senders), refreshes and expiry.
pub(super) fn timers(walk: &mut Walk) {
    let snap = walk.snap;
    let router_of_tag = |tag: Tag| snap.routers.iter().position(|r| r.tag == tag);
    // A stale entry is refreshed from the router port whose subnet holds it.
    let refresh_port = |router: Tag, ip: [u8; 4]| {
        let r = &snap.routers[router_of_tag(router)?];
        r.ports
            .iter()
            .copied()
            .find(|&p| snap.ports[p].l3.is_some_and(|l3| l3.contains(ip)))
    };
    let due = walk.state.arp.tick(walk.now_ns, refresh_port);
    for (_router, ip, port) in due.requests {
        if let Some(egress) = snap.ports.get(port).and_then(|p| p.l3) {
            send_arp_request(walk, port, egress, ip);
        }
    }
    for (_router, q) in due.unresolved {
        if let Queued::Received {
            router_port,
            sender_mac,
            ip_packet,
            ..
        } = q
        {
            let (kind, code) = (icmp::DEST_UNREACHABLE, icmp::HOST_UNREACHABLE);
            icmp_error(walk, router_port, sender_mac, &ip_packet, kind, code, 0);
        }
    }
    walk.decision.invalidate.extend(due.expired);
}
