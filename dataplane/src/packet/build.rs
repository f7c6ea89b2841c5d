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
    debug_assert!(options.len() % 4 == 0 && options.len() <= 40);
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
