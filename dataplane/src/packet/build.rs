//! Frame builders: the replies the dataplane generates itself (ARP now;
//! ICMP and DHCP as their devices land), and the frames of tests and benches.
//! Builders write correct checksums.
use super::checksum;
use super::layout::{self, arp, ethernet, get16, get4, icmp, ipv4, put16, tcp, udp, vlan};
use super::{Mac, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN};
use super::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

fn ethernet(dst: Mac, src: Mac, ethertype: u16, capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(ethernet::HEADER_LEN + capacity);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An Ethernet/IPv4 ARP packet.
pub fn arp_frame(op: u16, sha: Mac, spa: [u8; 4], tha: Mac, tpa: [u8; 4], dst: Mac) -> Vec<u8> {
    let mut f = ethernet(dst, sha, ETHERTYPE_ARP, arp::PACKET_LEN);
    f.extend_from_slice(&arp::HTYPE_ETHERNET.to_be_bytes());
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(&[6, 4]); // hardware and protocol address lengths
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f
}

/// Appends an IPv4 header (with options) and `payload`; returns the frame.
fn ipv4(
    mut f: Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    debug_assert!(options.len().is_multiple_of(4) && options.len() <= ipv4::MAX_OPTIONS_LEN);
    let header_len = ipv4::HEADER_LEN + options.len();
    let total = (header_len + payload.len()) as u16;
    let start = f.len();
    f.push(ipv4::ver_ihl(header_len));
    f.push(0);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34]); // identification
    f.extend_from_slice(&ipv4::DONT_FRAGMENT.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]); // TTL, protocol, checksum
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(options);
    let c = checksum::ipv4_header(&f[start..start + header_len]);
    put16(&mut f, layout::at(start, ipv4::CHECKSUM), c);
    f.extend_from_slice(payload);
    f
}

/// Transport checksum over the pseudo header and `segment`, as written.
pub fn l4_checksum(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> u16 {
    let acc = checksum::pseudo_header(src, dst, proto, segment.len() as u16);
    let c = checksum::finish(checksum::sum(segment, acc));
    if proto == IPPROTO_UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

fn udp_segment(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(udp::HEADER_LEN + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&((udp::HEADER_LEN + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let c = l4_checksum(src, dst, IPPROTO_UDP, &s);
    put16(&mut s, udp::CHECKSUM, c);
    s
}

#[allow(clippy::too_many_arguments)]
pub fn udp_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let seg = udp_segment(src, dst, sport, dport, payload);
    ipv4(
        ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, 28 + payload.len()),
        src,
        dst,
        IPPROTO_UDP,
        &[],
        &seg,
    )
}

/// A UDP frame whose IPv4 header carries `options` (a multiple of 4 bytes).
pub fn udp_frame_with_options(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    options: &[u8],
) -> Vec<u8> {
    let seg = udp_segment(src, dst, sport, dport, b"");
    ipv4(
        ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, 68),
        src,
        dst,
        IPPROTO_UDP,
        options,
        &seg,
    )
}

/// A TCP segment with the given flags (e.g. 0x02 SYN), no options.
pub fn tcp_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut s = Vec::with_capacity(tcp::HEADER_LEN);
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    // seq 1, ack 0, data offset 5 words, window 65535, checksum, urgent.
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let c = l4_checksum(src, dst, IPPROTO_TCP, &s);
    put16(&mut s, tcp::CHECKSUM, c);
    ipv4(
        ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, 40),
        src,
        dst,
        IPPROTO_TCP,
        &[],
        &s,
    )
}

/// An ICMP echo request (`request`) or reply.
#[allow(clippy::too_many_arguments)]
pub fn icmp_echo_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    request: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(icmp::HEADER_LEN + payload.len());
    let kind = if request {
        icmp::ECHO_REQUEST
    } else {
        icmp::ECHO_REPLY
    };
    m.extend_from_slice(&[kind, 0, 0, 0]);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let c = checksum::finish(checksum::sum(&m, 0));
    put16(&mut m, icmp::CHECKSUM, c);
    ipv4(
        ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, 28 + payload.len()),
        src,
        dst,
        IPPROTO_ICMP,
        &[],
        &m,
    )
}

/// The frame with an 802.1Q tag `vid` inserted after the MACs.
pub fn with_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len() + vlan::TAG_LEN);
    f.extend_from_slice(&frame[..vlan::AT]);
    f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    f.extend_from_slice(&(vid & vlan::VID_MASK).to_be_bytes());
    f.extend_from_slice(&frame[vlan::AT..]);
    f
}

/// The frame without its (outer) 802.1Q tag. The caller checked it has one.
pub fn without_vlan(frame: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len().saturating_sub(vlan::TAG_LEN));
    f.extend_from_slice(&frame[..vlan::AT]);
    f.extend_from_slice(frame.get(vlan::AT + vlan::TAG_LEN..).unwrap_or(&[]));
    f
}

/// `ip_packet` (an IPv4 packet) in an Ethernet frame.
pub fn ethernet_ipv4(dst: Mac, src: Mac, ip_packet: &[u8]) -> Vec<u8> {
    let mut f = ethernet(dst, src, ETHERTYPE_IPV4, ip_packet.len());
    f.extend_from_slice(ip_packet);
    f
}

/// An IPv4 packet without options, TTL 64, DF clear.
pub fn ipv4_packet(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(ipv4::HEADER_LEN + payload.len());
    p.extend_from_slice(&[ipv4::VER_IHL_PLAIN, 0]);
    p.extend_from_slice(&((ipv4::HEADER_LEN + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 64, proto, 0, 0]); // flags, TTL, protocol, checksum
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let c = checksum::ipv4_header(&p[..ipv4::HEADER_LEN]);
    put16(&mut p, ipv4::CHECKSUM, c);
    p.extend_from_slice(payload);
    p
}

/// How much of the offending packet an ICMP error quotes: as much as fits
/// in a 576-byte datagram (RFC 1812 §4.3.2.3).
pub const ICMP_QUOTE_MAX: usize = 576 - ipv4::HEADER_LEN - icmp::HEADER_LEN;

/// An ICMP error (`kind`/`code`) about `original` (the offending IPv4
/// packet), from `src` to the original sender. `rest` is the second header
/// word (the next-hop MTU for fragmentation needed, else 0).
pub fn icmp_error(src: [u8; 4], kind: u8, code: u8, rest: u32, original: &[u8]) -> Vec<u8> {
    let quote = &original[..original.len().min(ICMP_QUOTE_MAX)];
    let mut m = Vec::with_capacity(icmp::HEADER_LEN + quote.len());
    m.extend_from_slice(&[kind, code, 0, 0]);
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(quote);
    let c = checksum::finish(checksum::sum(&m, 0));
    put16(&mut m, icmp::CHECKSUM, c);
    let dst = get4(original, ipv4::SRC_ADDR);
    ipv4_packet(src, dst, IPPROTO_ICMP, 0, &m)
}

/// The echo reply to `request` (an IPv4 ICMP echo request packet), from
/// `src`; `None` if `request` is not one.
pub fn icmp_echo_reply(src: [u8; 4], request: &[u8]) -> Option<Vec<u8>> {
    let header_len = ipv4::header_len(*request.first()?);
    let message = request.get(header_len..)?;
    if message.len() < icmp::HEADER_LEN || message[icmp::TYPE] != icmp::ECHO_REQUEST {
        return None;
    }
    let mut m = message.to_vec();
    m[icmp::TYPE] = icmp::ECHO_REPLY;
    put16(&mut m, icmp::CHECKSUM, 0);
    let c = checksum::finish(checksum::sum(&m, 0));
    put16(&mut m, icmp::CHECKSUM, c);
    let dst = get4(request, ipv4::SRC_ADDR);
    let id = get16(request, ipv4::IDENT);
    Some(ipv4_packet(src, dst, IPPROTO_ICMP, id, &m))
}

/// Splits an IPv4 packet into fragments of at most `mtu` bytes (RFC 791).
/// Options are kept in the first fragment only. `None` if `mtu` leaves no
/// room for 8 bytes of data or the packet is malformed.
pub fn fragment_ipv4(packet: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    if packet.len() < ipv4::HEADER_LEN {
        return None;
    }
    let header_len = ipv4::header_len(packet[ipv4::VER_IHL]);
    let total = get16(packet, ipv4::LENGTH) as usize;
    if header_len < ipv4::HEADER_LEN || total < header_len || packet.len() < total {
        return None;
    }
    let flags = get16(packet, ipv4::FLAGS_FRAG);
    let base_offset = (flags & ipv4::FRAG_OFFSET_MASK) as usize * 8;
    let more_after = flags & ipv4::MORE_FRAGMENTS != 0;
    let data = &packet[header_len..total];
    let mut fragments = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let hlen = if at == 0 {
            header_len
        } else {
            ipv4::HEADER_LEN
        };
        let room = mtu.checked_sub(hlen)? / 8 * 8;
        if room == 0 {
            return None;
        }
        let chunk = &data[at..(at + room).min(data.len())];
        let last = at + chunk.len() == data.len();
        let mut f = Vec::with_capacity(hlen + chunk.len());
        f.extend_from_slice(&packet[..hlen]);
        f[ipv4::VER_IHL] = ipv4::ver_ihl(hlen);
        put16(&mut f, ipv4::LENGTH, (hlen + chunk.len()) as u16);
        let mf = if last && !more_after {
            0
        } else {
            ipv4::MORE_FRAGMENTS
        };
        put16(
            &mut f,
            ipv4::FLAGS_FRAG,
            ((base_offset + at) / 8) as u16 | mf,
        );
        put16(&mut f, ipv4::CHECKSUM, 0);
        let c = checksum::ipv4_header(&f[..hlen]);
        put16(&mut f, ipv4::CHECKSUM, c);
        f.extend_from_slice(chunk);
        fragments.push(f);
        at += chunk.len();
    }
    Some(fragments)
}

/// The TCP RST answering `original` (an IPv4 TCP segment), per RFC 793's
/// reset generation; `None` for a segment that is itself a RST or too short.
pub fn tcp_reset_for(original: &[u8]) -> Option<Vec<u8>> {
    let header_len = ipv4::header_len(*original.first()?);
    let segment = original.get(header_len..header_len + tcp::HEADER_LEN)?;
    let flags = segment[tcp::FLAGS];
    if flags & tcp::RST != 0 {
        return None;
    }
    // The reset goes back: its source is the segment's destination.
    let src = get4(original.get(..ipv4::HEADER_LEN)?, ipv4::DST_ADDR);
    let dst = get4(original, ipv4::SRC_ADDR);
    let data_offset = tcp::header_len(segment[tcp::DATA_OFFSET]);
    let total = get16(original, ipv4::LENGTH) as usize;
    let payload = total.saturating_sub(header_len + data_offset) as u32;
    let seq_in = u32::from_be_bytes(get4(segment, tcp::SEQ_NUM));
    let ack_in = u32::from_be_bytes(get4(segment, tcp::ACK_NUM));
    // With ACK: RST with seq = their ack. Without: RST+ACK acknowledging
    // everything they sent (SYN and FIN count one).
    let (seq, ack, out_flags) = if flags & tcp::ACK != 0 {
        (ack_in, 0, tcp::RST)
    } else {
        let syn_fin = (flags & tcp::SYN != 0) as u32 + (flags & tcp::FIN != 0) as u32;
        (
            0,
            seq_in.wrapping_add(payload + syn_fin),
            tcp::RST | tcp::ACK,
        )
    };
    let mut s = Vec::with_capacity(tcp::HEADER_LEN);
    s.extend_from_slice(&segment[tcp::DST_PORT]);
    s.extend_from_slice(&segment[tcp::SRC_PORT]);
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    // Data offset 5 words, flags, window 0, checksum, urgent pointer.
    s.extend_from_slice(&[0x50, out_flags, 0, 0, 0, 0, 0, 0]);
    let c = l4_checksum(src, dst, IPPROTO_TCP, &s);
    put16(&mut s, tcp::CHECKSUM, c);
    Some(ipv4_packet(src, dst, IPPROTO_TCP, 0, &s))
}
