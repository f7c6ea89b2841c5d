//! The bridge's DHCP stage (SEMANTICS.md "DHCP"): after ARP suppression
//! and before L2 lookup.
//!
//! A frame is a request for this bridge's server when it is IPv4 UDP to
//! port 67 (from 68, or 67 for a relay), to the broadcast MAC or the
//! server's MAC, and to 255.255.255.255 or a server address. Such requests
//! are answered here and never installed as flows: each one changes or
//! reads lease state, and the next request of the same client must come
//! back to userspace. What the server does not answer goes on through the
//! bridge, as in MidoNet, unless it was sent to the server's own MAC.
//! Malformed requests are counted under their reason and dropped.

use super::dhcp::server::{Outcome, Server};
use super::dhcp::{Message, MessageType, CLIENT_PORT, SERVER_PORT};
use super::snapshot::Bridge;
use super::{PortId, Step, Walk};
use crate::packet::{build, Headers, Mac, BROADCAST, IPPROTO_UDP, L3, L4};
use vnet_common::Reason;

const LIMITED_BROADCAST: [u8; 4] = [255; 4];
const UNSPECIFIED: [u8; 4] = [0; 4];

/// Where a frame stands with respect to this bridge's server.
enum Payload<'f> {
    NotForServer,
    /// A request whose IP or UDP framing is wrong.
    BadLength,
    Request(&'f [u8]),
}

/// Runs the stage on `frame`; returns whether the walk ends here.
pub(crate) fn process(
    walk: &mut Walk,
    bridge_id: usize,
    in_port: PortId,
    frame: &[u8],
    h: &Headers,
) -> bool {
    let snap = walk.snap;
    let bridge = &snap.bridges[bridge_id];
    let config = &bridge.dhcp;
    if !config.is_serving() {
        return false;
    }
    let to_server_mac = h.dst == config.server_mac;
    let bytes = match request_payload(bridge, frame, h) {
        Payload::Request(bytes) => bytes,
        Payload::BadLength => {
            walk.drop(Reason::DhcpBadLength, false);
            return true;
        }
        Payload::NotForServer if to_server_mac => {
            // Nothing but the server owns its MAC, and the server answers
            // DHCP (and ARP, earlier) only; flooding such frames (DNS
            // queries to a server address that is also the DNS address...)
            // would show them to every port. Not DHCP, so a flow may drop
            // the later ones.
            walk.tags.push(bridge.tag);
            walk.drop(Reason::DhcpUnanswered, true);
            return true;
        }
        Payload::NotForServer => return false,
    };
    let parsed = Message::parse_bytes(bytes).and_then(|m| m.check_request().map(|k| (m, k)));
    let (req, kind) = match parsed {
        Ok(r) => r,
        Err(error) => {
            walk.step(|| Step::DhcpInvalid { error });
            walk.drop(error.reason(), false);
            return true;
        }
    };
    let mac = req.client_mac();
    walk.step(|| Step::DhcpRequest {
        kind,
        mac,
        xid: req.xid,
    });
    let state = &mut walk.state.dhcp;
    let outcome = Server {
        config,
        leases: &mut state.leases,
        bridge: &bridge.name,
        port: snap.ports[in_port].tag,
        now_ns: walk.now_ns,
    }
    .handle(&req, kind);
    match outcome {
        Outcome::Reply(reply) => {
            let kind = reply.message_type().unwrap_or(MessageType::Ack);
            match kind {
                MessageType::Offer => state.counters.offers += 1,
                MessageType::Nak => state.counters.naks += 1,
                _ => state.counters.acks += 1,
            }
            let (dst_mac, dst_ip, dst_port) = destination(&req, &reply, h.src);
            let src_ip = reply.server_id().unwrap_or(UNSPECIFIED);
            let out = build::udp_frame(
                config.server_mac,
                dst_mac,
                src_ip,
                dst_ip,
                SERVER_PORT,
                dst_port,
                &reply.emit(),
            );
            walk.step(|| Step::DhcpReply {
                kind,
                ip: reply.yiaddr,
                to: dst_ip,
            });
            // Sent like the bridge's ARP replies: back out of the port the
            // request came in by, never as a flow.
            walk.inject(in_port, out);
            walk.answered();
            true
        }
        Outcome::Consumed(why) => {
            state.counters.unanswered += 1;
            walk.step(|| Step::DhcpNoReply { why });
            walk.consumed();
            true
        }
        Outcome::Refused(why) => {
            state.counters.unanswered += 1;
            walk.step(|| Step::DhcpNoReply { why });
            walk.drop(Reason::DhcpLeaseLimit, false);
            true
        }
        Outcome::Pass(why) => {
            state.counters.unanswered += 1;
            walk.step(|| Step::DhcpNoReply { why });
            if to_server_mac {
                // Sent to the server alone: nobody else may answer it.
                walk.drop(Reason::DhcpUnanswered, false);
                return true;
            }
            false
        }
    }
}

/// The DHCP message of `frame` if it is a request for this bridge's server.
/// Lengths are checked against each other and the frame; the UDP checksum
/// is not: guests with transmit checksum offload hand over partial ones
/// (the forwarding path does not check them either).
fn request_payload<'f>(bridge: &Bridge, frame: &'f [u8], h: &Headers) -> Payload<'f> {
    let config = &bridge.dhcp;
    let L3::Ipv4(ip, l4) = h.l3 else {
        return Payload::NotForServer;
    };
    // To a server address at the MAC the bridge answers ARP for it with:
    // the server's own, or a router port's that has the same address.
    let for_server_l2 = h.dst == BROADCAST
        || h.dst == config.server_mac
        || bridge.arp_table.get(&ip.dst) == Some(&h.dst);
    let for_server_l3 = ip.dst == LIMITED_BROADCAST || config.subnet_of_server(ip.dst).is_some();
    let ports = matches!(
        l4,
        L4::Ports {
            src: SERVER_PORT | CLIENT_PORT,
            dst: SERVER_PORT
        }
    );
    if ip.proto != IPPROTO_UDP || !for_server_l2 || !for_server_l3 || !ports {
        return Payload::NotForServer;
    }
    // A first fragment: the message is not whole here (DHCP messages fit
    // in 576 bytes; nobody fragments them).
    if ip.is_fragment() {
        return Payload::BadLength;
    }
    let total = usize::from(ip.total_len);
    let Some(udp) = frame
        .get(ip.offset..)
        .and_then(|l3| l3.get(ip.header_len..total))
    else {
        return Payload::BadLength;
    };
    let Some(udp_len) = udp
        .get(4..6)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return Payload::BadLength;
    };
    match udp.get(8..udp_len) {
        Some(payload) if udp_len >= 8 => Payload::Request(payload),
        _ => Payload::BadLength,
    }
}

/// RFC 2131 §4.1: to the relay when there is one; a NAK to everyone; to
/// ciaddr when the client has an address; to everyone when the client
/// asked for broadcast; otherwise to the new address at the client's MAC
/// (vnet writes the frame itself, so it needs no ARP for it).
fn destination(req: &Message, reply: &Message, frame_src: Mac) -> (Mac, [u8; 4], u16) {
    if req.giaddr != UNSPECIFIED {
        return (frame_src, req.giaddr, SERVER_PORT);
    }
    if reply.message_type() == Some(MessageType::Nak) {
        return (BROADCAST, LIMITED_BROADCAST, CLIENT_PORT);
    }
    if req.ciaddr != UNSPECIFIED {
        return (req.client_mac(), req.ciaddr, CLIENT_PORT);
    }
    if req.broadcast_flag() {
        return (BROADCAST, LIMITED_BROADCAST, CLIENT_PORT);
    }
    (req.client_mac(), reply.yiaddr, CLIENT_PORT)
}
