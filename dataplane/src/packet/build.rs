//! Frame builders: the replies the dataplane generates itself (ARP now;
//! ICMP and DHCP as their devices land), and the frames of tests and benches.
//! Builders write correct checksums.
use super::checksum;
use super::{Mac, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN, ETH_HLEN, VLAN_HLEN};
use super::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

fn ethernet(dst: Mac, src: Mac, ethertype: u16, capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + capacity);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An Ethernet/IPv4 ARP packet.
pub fn arp_frame(op: u16, sha: Mac, spa: [u8; 4], tha: Mac, tpa: [u8; 4], dst: Mac) -> Vec<u8> {
    let mut f = ethernet(dst, sha, ETHERTYPE_ARP, 28);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
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
    debug_assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let header_len = 20 + options.len();
    let total = (header_len + payload.len()) as u16;
    let start = f.len();
    f.push(0x40 | (header_len / 4) as u8);
    f.push(0);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]); // id, DF, ttl 64
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(options);
    let c = checksum::ipv4_header(&f[start..start + header_len]);
    f[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
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
    let mut s = Vec::with_capacity(8 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let c = l4_checksum(src, dst, IPPROTO_UDP, &s);
    s[6..8].copy_from_slice(&c.to_be_bytes());
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
    let mut s = Vec::with_capacity(20);
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let c = l4_checksum(src, dst, IPPROTO_TCP, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
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
    let mut m = Vec::with_capacity(8 + payload.len());
    m.extend_from_slice(&[if request { 8 } else { 0 }, 0, 0, 0]);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let c = checksum::finish(checksum::sum(&m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
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
    let mut f = Vec::with_capacity(frame.len() + VLAN_HLEN);
    f.extend_from_slice(&frame[..12]);
    f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// The frame without its (outer) 802.1Q tag. The caller checked it has one.
pub fn without_vlan(frame: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len().saturating_sub(VLAN_HLEN));
    f.extend_from_slice(&frame[..12]);
    f.extend_from_slice(frame.get(16..).unwrap_or(&[]));
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
    let mut p = Vec::with_capacity(20 + payload.len());
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let c = checksum::ipv4_header(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// How much of the offending packet an ICMP error quotes: as much as fits
/// in a 576-byte datagram (RFC 1812 §4.3.2.3).
pub const ICMP_QUOTE_MAX: usize = 576 - 20 - 8;

/// An ICMP error (`kind`/`code`) about `original` (the offending IPv4
/// packet), from `src` to the original sender. `rest` is the second header
/// word (the next-hop MTU for fragmentation needed, else 0).
pub fn icmp_error(src: [u8; 4], kind: u8, code: u8, rest: u32, original: &[u8]) -> Vec<u8> {
    let quote = &original[..original.len().min(ICMP_QUOTE_MAX)];
    let mut m = Vec::with_capacity(8 + quote.len());
    m.extend_from_slice(&[kind, code, 0, 0]);
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(quote);
    let c = checksum::finish(checksum::sum(&m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let dst = [original[12], original[13], original[14], original[15]];
    ipv4_packet(src, dst, IPPROTO_ICMP, 0, &m)
}

/// The echo reply to `request` (an IPv4 ICMP echo request packet), from
/// `src`; `None` if `request` is not one.
pub fn icmp_echo_reply(src: [u8; 4], request: &[u8]) -> Option<Vec<u8>> {
    let header_len = ((*request.first()? & 0x0f) as usize) * 4;
    let icmp = request.get(header_len..)?;
    if icmp.len() < 8 || icmp[0] != 8 {
        return None;
    }
    let mut m = icmp.to_vec();
    m[0] = 0;
    m[2] = 0;
    m[3] = 0;
    let c = checksum::finish(checksum::sum(&m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let dst = [request[12], request[13], request[14], request[15]];
    let id = u16::from_be_bytes([request[4], request[5]]);
    Some(ipv4_packet(src, dst, IPPROTO_ICMP, id, &m))
}

/// Splits an IPv4 packet into fragments of at most `mtu` bytes (RFC 791).
/// Options are kept in the first fragment only. `None` if `mtu` leaves no
/// room for 8 bytes of data or the packet is malformed.
pub fn fragment_ipv4(packet: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    let header_len = ((*packet.first()? & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]) as usize;
    if header_len < 20 || total < header_len || packet.len() < total {
        return None;
    }
    let flags = u16::from_be_bytes([packet[6], packet[7]]);
    let base_offset = (flags & 0x1fff) as usize * 8;
    let more_after = flags & 0x2000 != 0;
    let data = &packet[header_len..total];
    let mut fragments = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let hlen = if at == 0 { header_len } else { 20 };
        let room = mtu.checked_sub(hlen)? / 8 * 8;
        if room == 0 {
            return None;
        }
        let chunk = &data[at..(at + room).min(data.len())];
        let last = at + chunk.len() == data.len();
        let mut f = Vec::with_capacity(hlen + chunk.len());
        f.extend_from_slice(&packet[..hlen]);
        f[0] = 0x40 | (hlen / 4) as u8;
        f[2..4].copy_from_slice(&((hlen + chunk.len()) as u16).to_be_bytes());
        let mf = if last && !more_after { 0 } else { 0x2000 };
        let off = ((base_offset + at) / 8) as u16 | mf;
        f[6..8].copy_from_slice(&off.to_be_bytes());
        f[10] = 0;
        f[11] = 0;
        let c = checksum::ipv4_header(&f[..hlen]);
        f[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(chunk);
        fragments.push(f);
        at += chunk.len();
    }
    Some(fragments)
}

/// The TCP RST answering `original` (an IPv4 TCP segment), per RFC 793's
/// reset generation; `None` for a segment that is itself a RST or too short.
pub fn tcp_reset_for(original: &[u8]) -> Option<Vec<u8>> {
    let header_len = ((*original.first()? & 0x0f) as usize) * 4;
    let tcp = original.get(header_len..header_len + 20)?;
    let flags = tcp[13];
    if flags & 0x04 != 0 {
        return None;
    }
    let src: [u8; 4] = original.get(16..20)?.try_into().ok()?;
    let dst: [u8; 4] = original.get(12..16)?.try_into().ok()?;
    let data_offset = ((tcp[12] >> 4) as usize) * 4;
    let total = u16::from_be_bytes([original[2], original[3]]) as usize;
    let payload = total.saturating_sub(header_len + data_offset) as u32;
    let seq_in = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack_in = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    // With ACK: RST with seq = their ack. Without: RST+ACK acknowledging
    // everything they sent (SYN and FIN count one).
    let (seq, ack, out_flags) = if flags & 0x10 != 0 {
        (ack_in, 0, 0x04)
    } else {
        let syn_fin = (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32;
        (0, seq_in.wrapping_add(payload + syn_fin), 0x14)
    };
    let mut s = Vec::with_capacity(20);
    s.extend_from_slice(&tcp[2..4]);
    s.extend_from_slice(&tcp[0..2]);
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.extend_from_slice(&[0x50, out_flags, 0, 0, 0, 0, 0, 0]);
    let c = l4_checksum(src, dst, IPPROTO_TCP, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    Some(ipv4_packet(src, dst, IPPROTO_TCP, 0, &s))
}
