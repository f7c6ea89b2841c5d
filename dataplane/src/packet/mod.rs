//! Frames: parsing into a flat header summary, flow keys, builders.
//!
//! The parser mirrors the XDP program's (ebpf/xdp) field for field, so that
//! the key userspace installs is the key the kernel looks up. The rule for
//! what the key holds is written once, on `vnet_common::FlowKey`.
pub mod build;
pub mod checksum;

use vnet_common::{FlowKey, FRAG_FRAGMENT, FRAG_NONE};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const BROADCAST: [u8; 6] = [0xff; 6];

pub type Mac = [u8; 6];

/// Why a frame could not be parsed. Counted as `Reason::Malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("frame shorter than an Ethernet header")]
    ShortEthernet,
    #[error("stacked VLAN tags are not supported")]
    StackedVlan,
    #[error("truncated ARP packet")]
    ShortArp,
    #[error("truncated or malformed IPv4 header")]
    BadIpv4,
    #[error("truncated transport header")]
    ShortL4,
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: [u8; 4],
    pub tha: Mac,
    pub tpa: [u8; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4 {
    /// Offset of the IPv4 header in the frame.
    pub offset: usize,
    pub header_len: usize,
    pub total_len: u16,
    pub tos: u8,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4 {
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.frag_offset != 0
    }
    /// A later fragment carries no transport header.
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }
    pub fn l4_offset(&self) -> usize {
        self.offset + self.header_len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP or UDP.
    Ports { src: u16, dst: u16 },
    Icmp {
        kind: u8,
        code: u8,
        echo_id: Option<u16>,
    },
    /// Another protocol, or a later fragment.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Arp(Arp),
    Ipv4(Ipv4, L4),
    /// An EtherType we do not look into (IPv6 among them): switched on MACs.
    Other,
}

/// What the dataplane needs to know of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub dst: Mac,
    pub src: Mac,
    /// VID of the 802.1Q tag.
    pub vlan: Option<u16>,
    pub ethertype: u16,
    /// Offset of the L3 header (after the VLAN tag, if any).
    pub l3_offset: usize,
    pub l3: L3,
}

pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

/// IEEE 802.1D reserved addresses 01:80:c2:00:00:0x (STP, LLDP, pause...):
/// a bridge must not forward them.
pub fn is_link_local(mac: &Mac) -> bool {
    mac[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && mac[5] & 0xf0 == 0
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

fn ip_at(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// Parses a frame. Every access is bounds-checked; a frame the parser does
/// not accept is an error, never a panic.
pub fn parse(frame: &[u8]) -> Result<Headers, ParseError> {
    if frame.len() < ETH_HLEN {
        return Err(ParseError::ShortEthernet);
    }
    let dst = mac_at(frame, 0);
    let src = mac_at(frame, 6);
    let mut ethertype = be16(frame, 12);
    let mut l3_offset = ETH_HLEN;
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < ETH_HLEN + VLAN_HLEN {
            return Err(ParseError::ShortEthernet);
        }
        vlan = Some(be16(frame, 14) & 0x0fff);
        ethertype = be16(frame, 16);
        l3_offset += VLAN_HLEN;
    }
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        return Err(ParseError::StackedVlan);
    }
    let l3 = match ethertype {
        ETHERTYPE_ARP => L3::Arp(parse_arp(&frame[l3_offset..])?),
        ETHERTYPE_IPV4 => parse_ipv4(frame, l3_offset)?,
        _ => L3::Other,
    };
    Ok(Headers {
        dst,
        src,
        vlan,
        ethertype,
        l3_offset,
        l3,
    })
}

fn parse_arp(b: &[u8]) -> Result<Arp, ParseError> {
    // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
    if b.len() < 28 || be16(b, 0) != 1 || be16(b, 2) != ETHERTYPE_IPV4 || b[4] != 6 || b[5] != 4 {
        return Err(ParseError::ShortArp);
    }
    Ok(Arp {
        op: be16(b, 6),
        sha: mac_at(b, 8),
        spa: ip_at(b, 14),
        tha: mac_at(b, 18),
        tpa: ip_at(b, 24),
    })
}

fn parse_ipv4(frame: &[u8], offset: usize) -> Result<L3, ParseError> {
    let b = &frame[offset..];
    if b.len() < 20 || b[0] >> 4 != 4 {
        return Err(ParseError::BadIpv4);
    }
    let header_len = ((b[0] & 0x0f) as usize) * 4;
    let total_len = be16(b, 2);
    if header_len < 20 || b.len() < header_len || (total_len as usize) < header_len {
        return Err(ParseError::BadIpv4);
    }
    let flags_frag = be16(b, 6);
    let ip = Ipv4 {
        offset,
        header_len,
        total_len,
        tos: b[1],
        id: be16(b, 4),
        dont_fragment: flags_frag & 0x4000 != 0,
        more_fragments: flags_frag & 0x2000 != 0,
        frag_offset: flags_frag & 0x1fff,
        ttl: b[8],
        proto: b[9],
        src: ip_at(b, 12),
        dst: ip_at(b, 16),
    };
    let l4 = if ip.is_later_fragment() {
        L4::None
    } else {
        let t = &b[header_len..];
        match ip.proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                if t.len() < 4 {
                    return Err(ParseError::ShortL4);
                }
                L4::Ports {
                    src: be16(t, 0),
                    dst: be16(t, 2),
                }
            }
            IPPROTO_ICMP => {
                if t.len() < 8 {
                    return Err(ParseError::ShortL4);
                }
                let (kind, code) = (t[0], t[1]);
                let echo_id = matches!(kind, 0 | 8).then(|| be16(t, 4));
                L4::Icmp {
                    kind,
                    code,
                    echo_id,
                }
            }
            _ => L4::None,
        }
    };
    Ok(L3::Ipv4(ip, l4))
}

impl Headers {
    /// The flow key of this frame arriving on `ifindex`, built by the rule on
    /// `FlowKey`. `None` for a later fragment: its ports are known only to
    /// the kernel (FRAGS map), so userspace cannot name its flow.
    pub fn flow_key(&self, ifindex: u32) -> Option<FlowKey> {
        let mut key = FlowKey {
            ifindex,
            eth_src: self.src,
            eth_dst: self.dst,
            vlan: self.vlan.unwrap_or(0),
            ethertype: self.ethertype,
            ..FlowKey::default()
        };
        match self.l3 {
            L3::Arp(arp) => {
                key.src = arp.spa;
                key.dst = arp.tpa;
                key.proto = arp.op as u8;
            }
            L3::Ipv4(ip, l4) => {
                if ip.is_later_fragment() {
                    return None;
                }
                key.src = ip.src;
                key.dst = ip.dst;
                key.proto = ip.proto;
                key.frag = if ip.is_fragment() {
                    FRAG_FRAGMENT
                } else {
                    FRAG_NONE
                };
                match l4 {
                    L4::Ports { src, dst } => {
                        key.l4_src = src;
                        key.l4_dst = dst;
                    }
                    L4::Icmp {
                        kind,
                        code,
                        echo_id,
                    } => {
                        key.l4_src = echo_id.unwrap_or(0);
                        key.l4_dst = (kind as u16) << 8 | code as u16;
                    }
                    L4::None => {}
                }
            }
            L3::Other => {}
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn udp_key_holds_every_parsed_field() {
        let f = udp_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], 1234, 53, b"hi");
        let k = parse(&f).unwrap().flow_key(7).unwrap();
        assert_eq!(k.ifindex, 7);
        assert_eq!((k.eth_src, k.eth_dst), (A, B));
        assert_eq!((k.ethertype, k.proto), (ETHERTYPE_IPV4, IPPROTO_UDP));
        assert_eq!((k.src, k.dst), ([10, 0, 0, 1], [10, 0, 0, 2]));
        assert_eq!(
            (k.l4_src, k.l4_dst, k.frag, k.vlan),
            (1234, 53, FRAG_NONE, 0)
        );
    }

    #[test]
    fn icmp_echo_key_has_id_and_type_code() {
        let f = icmp_echo_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], true, 0x4242, 1, &[0; 8]);
        let k = parse(&f).unwrap().flow_key(1).unwrap();
        assert_eq!((k.l4_src, k.l4_dst), (0x4242, 8 << 8));
    }

    #[test]
    fn arp_key_uses_protocol_addresses_and_opcode() {
        let f = arp_frame(
            ARP_REQUEST,
            A,
            [10, 0, 0, 1],
            [0; 6],
            [10, 0, 0, 2],
            BROADCAST,
        );
        let k = parse(&f).unwrap().flow_key(1).unwrap();
        assert_eq!((k.src, k.dst, k.proto), ([10, 0, 0, 1], [10, 0, 0, 2], 1));
        assert_eq!(k.ethertype, ETHERTYPE_ARP);
    }

    #[test]
    fn vlan_tag_is_read_and_skipped() {
        let f = with_vlan(&udp_frame(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b""), 42);
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.vlan, h.ethertype, h.l3_offset),
            (Some(42), ETHERTYPE_IPV4, 18)
        );
        assert_eq!(h.flow_key(1).unwrap().vlan, 42);
    }

    #[test]
    fn later_fragment_has_no_userspace_key() {
        let mut f = udp_frame(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"12345678");
        f[ETH_HLEN + 6] = 0x00;
        f[ETH_HLEN + 7] = 0x10; // offset 16 * 8
        let h = parse(&f).unwrap();
        assert!(matches!(h.l3, L3::Ipv4(_, L4::None)));
        assert_eq!(h.flow_key(1), None);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good = udp_frame(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"payload");
        for len in 0..good.len() {
            let _ = parse(&good[..len]);
        }
        assert_eq!(parse(&good[..10]), Err(ParseError::ShortEthernet));
        assert_eq!(parse(&good[..ETH_HLEN + 19]), Err(ParseError::BadIpv4));
        assert_eq!(parse(&good[..ETH_HLEN + 22]), Err(ParseError::ShortL4));
        let mut bad_ihl = good.clone();
        bad_ihl[ETH_HLEN] = 0x4f; // 60-byte header in a shorter packet
        assert_eq!(parse(&bad_ihl), Err(ParseError::BadIpv4));
        let qinq = with_vlan(&with_vlan(&good, 1), 2);
        assert_eq!(parse(&qinq), Err(ParseError::StackedVlan));
    }

    #[test]
    fn ipv4_options_move_the_transport_header() {
        let f = udp_frame_with_options(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 7, 9, &[1, 1, 1, 0]);
        let h = parse(&f).unwrap();
        let L3::Ipv4(ip, l4) = h.l3 else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header_len, 24);
        assert_eq!(l4, L4::Ports { src: 7, dst: 9 });
    }
}

/// Sets the MACs of a frame in place.
pub fn set_macs(frame: &mut [u8], src: Mac, dst: Mac) {
    if frame.len() >= ETH_HLEN {
        frame[0..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&src);
    }
}

/// Decrements the TTL of the IPv4 header at `l3_offset` by one, updating
/// its checksum incrementally, as the kernel's DEC_TTL does.
pub fn decrement_ttl(frame: &mut [u8], l3_offset: usize) {
    let Some(h) = frame.get_mut(l3_offset..l3_offset + 20) else {
        return;
    };
    let old = u16::from_be_bytes([h[8], h[9]]);
    h[8] = h[8].saturating_sub(1);
    let new = u16::from_be_bytes([h[8], h[9]]);
    let c = checksum::update16(u16::from_be_bytes([h[10], h[11]]), old, new);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The transport fields of the packet an ICMP error quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// Offset of the quoted IPv4 header in the frame.
    pub offset: usize,
    pub header_len: usize,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// TCP/UDP ports; for a quoted ICMP echo, (id, 0).
    pub sport: u16,
    pub dport: u16,
}

/// Parses the packet quoted by the ICMP error in `frame` (whose outer IPv4
/// header is `ip`). `None` if it is too short to name a connection.
pub fn icmp_quote(frame: &[u8], ip: &Ipv4) -> Option<Quote> {
    let offset = ip.l4_offset() + 8;
    let q = frame.get(offset..)?;
    if q.len() < 20 || q[0] >> 4 != 4 {
        return None;
    }
    let header_len = ((q[0] & 0x0f) as usize) * 4;
    let l4 = q
        .get(header_len..header_len + 8)
        .or_else(|| q.get(header_len..header_len + 4))?;
    let proto = q[9];
    let (sport, dport) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => (be16(l4, 0), be16(l4, 2)),
        IPPROTO_ICMP if l4.len() >= 8 && matches!(l4[0], 0 | 8) => (be16(l4, 4), 0),
        _ => return None,
    };
    Some(Quote {
        offset,
        header_len,
        proto,
        src: ip_at(q, 12),
        dst: ip_at(q, 16),
        sport,
        dport,
    })
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

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
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
    if ip_offset + 20 > limit {
        return false;
    }
    let header_len = ((frame[ip_offset] & 0x0f) as usize) * 4;
    if header_len < 20 || ip_offset + header_len > limit {
        return false;
    }
    let proto = frame[ip_offset + 9];
    let later_fragment = get16(frame, ip_offset + 6) & 0x1fff != 0;
    let l4 = ip_offset + header_len;
    let csum_at = match proto {
        IPPROTO_TCP => Some(l4 + 16),
        IPPROTO_UDP => Some(l4 + 6),
        IPPROTO_ICMP => Some(l4 + 2),
        _ => None,
    }
    .filter(|at| !later_fragment && at + 2 <= limit);
    let pseudo = matches!(proto, IPPROTO_TCP | IPPROTO_UDP);
    let udp_none = proto == IPPROTO_UDP && csum_at.is_some_and(|at| get16(frame, at) == 0);
    let mut ip_csum = get16(frame, ip_offset + 10);
    let mut l4_csum = csum_at.map(|at| get16(frame, at));
    for (field, new) in [(ip_offset + 12, rw.src), (ip_offset + 16, rw.dst)] {
        let Some(new) = new else { continue };
        let old = ip_at(frame, field);
        ip_csum = checksum::update32(ip_csum, old, new);
        if pseudo {
            l4_csum = l4_csum.map(|c| checksum::update32(c, old, new));
        }
        frame[field..field + 4].copy_from_slice(&new);
    }
    put16(frame, ip_offset + 10, ip_csum);
    let echo = proto == IPPROTO_ICMP && l4 + 8 <= limit && matches!(frame[l4], 0 | 8);
    let ports = [(0usize, rw.sport), (2, rw.dport)];
    for (off, new) in ports {
        let Some(new) = new else { continue };
        let at = match proto {
            IPPROTO_TCP | IPPROTO_UDP if !later_fragment && l4 + off + 2 <= limit => l4 + off,
            // The echo identifier is the ICMP "source port".
            IPPROTO_ICMP if echo && off == 0 => l4 + 4,
            _ => continue,
        };
        let old = get16(frame, at);
        l4_csum = l4_csum.map(|c| checksum::update16(c, old, new));
        put16(frame, at, new);
    }
    if let (Some(at), Some(mut c)) = (csum_at, l4_csum) {
        if udp_none {
            c = 0;
        } else if proto == IPPROTO_UDP && c == 0 {
            c = 0xffff;
        }
        put16(frame, at, c);
    }
    true
}
