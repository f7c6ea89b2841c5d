//! The tunnel MTU. A frame for a port on another host (`Binding::Remote`)
//! travels inside VXLAN, whose inner IPv4 packets are at most the underlay
//! MTU less 50 bytes (`Snapshot::tunnel_mtu`). The sending socket refuses
//! a bigger one (the outer packet has DF), which would lose it without a
//! word to its sender; instead, as a router does for its port MTU
//! (SEMANTICS.md "MTU"):
//!
//! - IPv4 with DF: dropped and answered with ICMP 3/4 carrying the tunnel
//!   MTU, so the sender's path MTU discovery lowers its MTU to it; counted
//!   `tunnel_fragmentation_needed`;
//! - IPv4 without DF: fragmented to the tunnel MTU, each fragment sent;
//! - anything else (IPv6, which is never fragmented on the way): dropped,
//!   counted `tunnel_too_big`.
//!
//! None of these decisions is installed. The flow of a packet that fits
//! carries the tunnel MTU as its `mtu`, and both kernel executors check the
//! inner packet's length (a GSO frame's segments', on tc) against it before
//! encapsulating: a later packet over it goes to userspace and through here
//! again, so established flows get the same answer.
//!
//! Who answers. The ICMP quotes the packet as its sender sent it (the frame
//! received at the walk's origin), so the sender matches it to its socket
//! whatever NAT did on the way, and it comes back:
//! - on a routed path, from the first router's ingress port (the sender's
//!   gateway) and its address, as the router's own MTU errors do;
//! - on a bridged path, where no address on the way is ours, from the
//!   packet's destination address and MAC. This is what Linux's VXLAN
//!   device does for bridged packets since 5.9 (`iptunnel_pmtud_build_icmp`,
//!   "tunnels: PMTU discovery support for directly bridged IP packets"),
//!   and what guests accept: Linux and Windows match an ICMP error by the
//!   header it quotes, not by its source. Dropping instead (Linux before
//!   5.9) would stall every TCP connection across hosts of a guest not told
//!   the smaller MTU by DHCP on its first full-sized segment.
use super::router::{self, icmp};
use super::{PortId, Step, Walk};
use crate::packet::{build, Frame, ETH_HLEN, L3};
use vnet_common::Reason;

/// Room an 802.1Q tag takes in the inner frame.
const VLAN_TAG_LEN: u16 = 4;

/// Emits `frame` on `port`, a port on another host, if it fits the tunnel;
/// otherwise answers, fragments or drops it.
pub(super) fn emit(walk: &mut Walk, port: PortId, frame: Frame) {
    let Some(mtu) = walk.snap.tunnel_mtu else {
        // No tunnels here: the runtime counts what it cannot send.
        return walk.emit(port, frame);
    };
    // The inner frame is sent tagged if the port is: the tag takes room.
    let room = match walk.snap.ports[port].vlan {
        Some(_) => mtu.saturating_sub(VLAN_TAG_LEN),
        None => mtu,
    };
    // The flow forwards only packets that fit every egress on its path.
    if walk.path.actions.mtu == 0 || room < walk.path.actions.mtu {
        walk.path.actions.mtu = room;
    }
    let len = match frame.headers().l3 {
        L3::Ipv4(ip, _) => usize::from(ip.total_len),
        _ => frame.bytes().len().saturating_sub(ETH_HLEN),
    };
    if len <= usize::from(room) {
        return walk.emit(port, frame);
    }
    walk.not_installable("larger than the tunnel MTU (the kernel sends such packets up anyway)");
    let L3::Ipv4(ip, _) = frame.headers().l3 else {
        return walk.drop(Reason::TunnelTooBig, false);
    };
    if ip.dont_fragment {
        answer(walk, room);
        return walk.drop(Reason::TunnelFragmentationNeeded, false);
    }
    let packet = frame.ipv4_packet().unwrap_or_default();
    let Some(fragments) = build::fragment_ipv4(packet, usize::from(room)) else {
        return walk.drop(Reason::Malformed, false);
    };
    walk.step(|| Step::Fragmented {
        count: fragments.len(),
    });
    for f in fragments {
        let mut copy = frame.bytes()[..ETH_HLEN].to_vec();
        copy.extend_from_slice(&f);
        // A frame built here: parsed once, as the router's fragments are.
        match Frame::parse(copy) {
            Ok(copy) => walk.emit(port, copy),
            Err(e) => walk.drop(e.reason(), false),
        }
    }
}

/// Sends the sender of the packet being walked an ICMP "fragmentation
/// needed" with next-hop MTU `mtu`, once per walk (a flood's copies to
/// several hosts get one), when an ICMP error may be sent about it at all.
fn answer(walk: &mut Walk, mtu: u16) {
    // A frame the dataplane generated has nobody to tell.
    let (Some((origin, received)), Some(sent)) = (walk.origin, walk.decision.received) else {
        return;
    };
    let L3::Ipv4(ip, l4) = sent.l3 else {
        return;
    };
    let end = ip.offset + usize::from(ip.total_len);
    let Some(original) = received.get(ip.offset..end) else {
        return;
    };
    // Nor about a packet to a group: the answer would come from it (Linux
    // does not answer those either).
    let group = ip.dst[0] >= 224 || ip.dst == [255; 4];
    if walk.tunnel_mtu_answered || group || !router::may_answer_with_error(&ip, l4) {
        return;
    }
    walk.tunnel_mtu_answered = true;
    let (kind, code, rest) = (
        icmp::DEST_UNREACHABLE,
        icmp::FRAGMENTATION_NEEDED,
        u32::from(mtu),
    );
    match walk.path.first_router_in {
        Some((port, _, sender)) => {
            router::icmp_error(walk, port, sender, original, kind, code, rest)
        }
        None => {
            walk.step(|| Step::Icmp { kind, code });
            let packet = build::icmp_error(ip.dst, kind, code, rest, original);
            walk.inject(origin, build::ethernet_ipv4(sent.src, sent.dst, &packet));
        }
    }
}
