//! In-place rewrites of frame bytes that keep every checksum valid,
//! updated incrementally (RFC 1624) as the XDP executor does. They work on
//! bytes alone, so they also reach a packet quoted inside an ICMP error;
//! [`super::Frame`] wraps them to keep its parsed view current.
use super::layout::{self, ethernet, get16, get4, icmp, ipv4, put16, tcp, udp};
use super::{checksum, Mac, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Sets the MACs of a frame in place.
pub fn set_macs(frame: &mut [u8], src: Mac, dst: Mac) {
    if frame.len() >= ethernet::HEADER_LEN {
        frame[ethernet::DST].copy_from_slice(&dst);
        frame[ethernet::SRC].copy_from_slice(&src);
    }
}

/// Decrements the TTL of the IPv4 header at `l3_offset` by one, updating
/// its checksum incrementally, as the kernel's DEC_TTL does.
pub fn decrement_ttl(frame: &mut [u8], l3_offset: usize) {
    let Some(h) = frame.get_mut(l3_offset..l3_offset + ipv4::HEADER_LEN) else {
        return;
    };
    let old = get16(h, ipv4::TTL_PROTOCOL);
    h[ipv4::TTL] = h[ipv4::TTL].saturating_sub(1);
    let new = get16(h, ipv4::TTL_PROTOCOL);
    let c = checksum::update16(get16(h, ipv4::CHECKSUM), old, new);
    put16(h, ipv4::CHECKSUM, c);
}

/// A NAT rewrite of an IPv4 packet: the fields to set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub src: Option<[u8; 4]>,
    pub dst: Option<[u8; 4]>,
    /// TCP/UDP source port; for ICMP echo, the identifier.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// Applies `rw` to the IPv4 packet at `ip_offset` of `frame`, updating the
/// IPv4, TCP, UDP and ICMP checksums incrementally as the XDP executor
/// does: a UDP checksum of 0 (none) stays 0 and a computed 0 is sent as
/// 0xFFFF; a later fragment has no transport header to touch. `limit` is
/// the end of the packet in the frame (a quoted packet may be truncated:
/// transport fields beyond it are left alone). Returns false if the header
/// is not there.
pub fn rewrite_ipv4(frame: &mut [u8], ip_offset: usize, limit: usize, rw: &Rewrite) -> bool {
    let limit = limit.min(frame.len());
    if ip_offset + ipv4::HEADER_LEN > limit {
        return false;
    }
    let header_len = ipv4::header_len(frame[ip_offset + ipv4::VER_IHL]);
    if header_len < ipv4::HEADER_LEN || ip_offset + header_len > limit {
        return false;
    }
    let field = |f| layout::at(ip_offset, f);
    let proto = frame[ip_offset + ipv4::PROTOCOL];
    let later_fragment = get16(frame, field(ipv4::FLAGS_FRAG)) & ipv4::FRAG_OFFSET_MASK != 0;
    let l4 = ip_offset + header_len;
    let csum = match proto {
        IPPROTO_TCP => Some(layout::at(l4, tcp::CHECKSUM)),
        IPPROTO_UDP => Some(layout::at(l4, udp::CHECKSUM)),
        IPPROTO_ICMP => Some(layout::at(l4, icmp::CHECKSUM)),
        _ => None,
    }
    .filter(|at| !later_fragment && at.end <= limit);
    let pseudo = matches!(proto, IPPROTO_TCP | IPPROTO_UDP);
    let udp_none = proto == IPPROTO_UDP
        && csum
            .as_ref()
            .is_some_and(|at| get16(frame, at.clone()) == 0);
    let mut ip_csum = get16(frame, field(ipv4::CHECKSUM));
    let mut l4_csum = csum.clone().map(|at| get16(frame, at));
    for (addr, new) in [
        (field(ipv4::SRC_ADDR), rw.src),
        (field(ipv4::DST_ADDR), rw.dst),
    ] {
        let Some(new) = new else { continue };
        let old = get4(frame, addr.clone());
        ip_csum = checksum::update32(ip_csum, old, new);
        // TCP and UDP checksums cover the addresses (pseudo header).
        if pseudo {
            l4_csum = l4_csum.map(|c| checksum::update32(c, old, new));
        }
        frame[addr].copy_from_slice(&new);
    }
    put16(frame, field(ipv4::CHECKSUM), ip_csum);
    let echo = proto == IPPROTO_ICMP
        && l4 + icmp::HEADER_LEN <= limit
        && icmp::is_echo(frame[l4 + icmp::TYPE]);
    // TCP and UDP ports are at the same places.
    let ports = [(udp::SRC_PORT, rw.sport), (udp::DST_PORT, rw.dport)];
    for (port, new) in ports {
        let Some(new) = new else { continue };
        let at = match proto {
            IPPROTO_TCP | IPPROTO_UDP if !later_fragment && l4 + port.end <= limit => {
                layout::at(l4, port)
            }
            // The echo identifier is the ICMP "source port".
            IPPROTO_ICMP if echo && port == udp::SRC_PORT => layout::at(l4, icmp::ECHO_IDENT),
            _ => continue,
        };
        let old = get16(frame, at.clone());
        l4_csum = l4_csum.map(|c| checksum::update16(c, old, new));
        put16(frame, at, new);
    }
    if let (Some(at), Some(mut c)) = (csum, l4_csum) {
        if udp_none {
            c = 0;
        } else if proto == IPPROTO_UDP && c == 0 {
            c = 0xffff;
        }
        put16(frame, at, c);
    }
    true
}

/// Recomputes the checksum of the ICMP message from `at` to `end` of
/// `frame` (after its quoted packet changed: the checksum covers it all).
pub fn refresh_icmp_checksum(frame: &mut [u8], at: usize, end: usize) {
    if at + icmp::CHECKSUM.end <= end {
        let field = layout::at(at, icmp::CHECKSUM);
        put16(frame, field.clone(), 0);
        let c = checksum::finish(checksum::sum(&frame[at..end], 0));
        put16(frame, field, c);
    }
}
