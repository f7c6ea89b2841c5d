//! Frames: parsing into a flat header summary, flow keys, builders.
//!
//! The parser mirrors the XDP program's (ebpf/xdp) field for field, so that
//! the key userspace installs is the key the kernel looks up, and it rejects
//! exactly the IPv4 the kernel refuses to key (`XdpMalformed`), so that no
//! flow installed for a good packet is ever applied to a malformed one. The
//! rule for what the key holds is written once, on `vnet_common::FlowKey`.
pub mod build;
pub mod checksum;

use vnet_common::{FlowKey, Reason, FRAG_FRAGMENT, FRAG_NONE, KEY_TAGGED};

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

/// Why a frame could not be parsed; [`ParseError::reason`] is the drop
/// reason. The IPv4 and TCP/UDP checks are the kernel program's (and
/// Linux's `ip_rcv_core`, `udp_rcv`, `tcp_v4_rcv`): RFC 1812 §5.2.2 has a
/// router drop what fails them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("frame shorter than an Ethernet header")]
    ShortEthernet,
    #[error("stacked VLAN tags are not supported")]
    StackedVlan,
    #[error("truncated ARP packet")]
    ShortArp,
    #[error("frame too short for an IPv4 header")]
    ShortIpv4,
    #[error("IP version other than 4 under the IPv4 EtherType")]
    Ipv4Version,
    #[error("IPv4 header length (IHL) under 5 words")]
    Ipv4HeaderLength,
    #[error("IPv4 total length under the header length or beyond the frame")]
    Ipv4TotalLength,
    #[error("IPv4 header checksum is wrong")]
    Ipv4Checksum,
    #[error("TCP header shorter than 20 bytes")]
    ShortTcp,
    #[error("TCP data offset under 5 words or beyond the packet")]
    TcpDataOffset,
    #[error("UDP header shorter than 8 bytes")]
    ShortUdp,
    #[error("UDP length under 8 or beyond the packet")]
    UdpLength,
    #[error("ICMP header shorter than 8 bytes")]
    ShortIcmp,
}

impl ParseError {
    /// The reason a frame failing this way is dropped.
    pub fn reason(self) -> Reason {
        match self {
            ParseError::Ipv4Checksum => Reason::Ipv4BadChecksum,
            ParseError::Ipv4HeaderLength | ParseError::Ipv4TotalLength => Reason::Ipv4BadLength,
            ParseError::ShortTcp
            | ParseError::TcpDataOffset
            | ParseError::ShortUdp
            | ParseError::UdpLength => Reason::L4BadHeader,
            ParseError::ShortEthernet
            | ParseError::StackedVlan
            | ParseError::ShortArp
            | ParseError::ShortIpv4
            | ParseError::Ipv4Version
            | ParseError::ShortIcmp => Reason::Malformed,
        }
    }
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
    /// VID of the 802.1Q tag, `Some(0)` for a priority tag.
    pub vlan: Option<u16>,
    /// The whole tag control information (PCP, DEI, VID) of the 802.1Q
    /// tag; `Some` exactly when `vlan` is.
    pub vlan_tci: Option<u16>,
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
    let mut vlan_tci = None;
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < ETH_HLEN + VLAN_HLEN {
            return Err(ParseError::ShortEthernet);
        }
        vlan_tci = Some(be16(frame, 14));
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
        vlan: vlan_tci.map(|tci| tci & 0x0fff),
        vlan_tci,
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

/// An IPv4 packet, checked in the kernel program's order: lengths, header
/// checksum, then the transport header of a packet that carries one.
fn parse_ipv4(frame: &[u8], offset: usize) -> Result<L3, ParseError> {
    let b = &frame[offset..];
    if b.len() < 20 {
        return Err(ParseError::ShortIpv4);
    }
    if b[0] >> 4 != 4 {
        return Err(ParseError::Ipv4Version);
    }
    let header_len = ((b[0] & 0x0f) as usize) * 4;
    if header_len < 20 {
        return Err(ParseError::Ipv4HeaderLength);
    }
    // Ethernet padding after the packet is legal; a packet longer than the
    // frame, or shorter than its own header, is not.
    let total_len = be16(b, 2);
    if (total_len as usize) < header_len || total_len as usize > b.len() {
        return Err(ParseError::Ipv4TotalLength);
    }
    if checksum::sum(&b[..header_len], 0) != 0xffff {
        return Err(ParseError::Ipv4Checksum);
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
        // The transport bytes of this packet, without Ethernet padding.
        let t = &b[header_len..total_len as usize];
        match ip.proto {
            IPPROTO_TCP => {
                if t.len() < 20 {
                    return Err(ParseError::ShortTcp);
                }
                let data_offset = ((t[12] >> 4) as usize) * 4;
                if data_offset < 20 || data_offset > t.len() {
                    return Err(ParseError::TcpDataOffset);
                }
                L4::Ports {
                    src: be16(t, 0),
                    dst: be16(t, 2),
                }
            }
            IPPROTO_UDP => {
                if t.len() < 8 {
                    return Err(ParseError::ShortUdp);
                }
                // A first fragment's UDP length covers the whole datagram,
                // which this packet does not hold: only its floor is checked.
                let udp_len = be16(t, 4) as usize;
                if udp_len < 8 || (!ip.is_fragment() && udp_len > t.len()) {
                    return Err(ParseError::UdpLength);
                }
                L4::Ports {
                    src: be16(t, 0),
                    dst: be16(t, 2),
                }
            }
            IPPROTO_ICMP => {
                if t.len() < 8 {
                    return Err(ParseError::ShortIcmp);
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
            vlan_tci: self.vlan_tci.unwrap_or(0),
            ethertype: self.ethertype,
            flags: if self.vlan_tci.is_some() {
                KEY_TAGGED
            } else {
                0
            },
            ..FlowKey::default()
        };
        match self.l3 {
            L3::Arp(arp) => {
                key.src = arp.spa;
                key.dst = arp.tpa;
                key.l4_dst = arp.op;
            }
            L3::Ipv4(ip, l4) => {
                if ip.is_later_fragment() {
                    return None;
                }
                key.src = ip.src;
                key.dst = ip.dst;
                key.proto = ip.proto;
                key.tos = ip.tos;
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
    const IP_A: [u8; 4] = [10, 0, 0, 1];
    const IP_B: [u8; 4] = [10, 0, 0, 2];

    /// `f` with its IPv4 header (untagged) changed by `change` and its
    /// header checksum recomputed, so that only the change is wrong.
    fn with_ip(mut f: Vec<u8>, change: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let ip = &mut f[ETH_HLEN..];
        change(ip);
        let header_len = (((ip[0] & 0x0f) as usize) * 4).clamp(20, ip.len());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::ipv4_header(&ip[..header_len]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn set16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn key_of(f: &[u8]) -> FlowKey {
        parse(f).unwrap().flow_key(1).unwrap()
    }

    #[test]
    fn udp_key_holds_every_parsed_field() {
        let f = udp_frame(A, B, IP_A, IP_B, 1234, 53, b"hi");
        let k = parse(&f).unwrap().flow_key(7).unwrap();
        assert_eq!(k.ifindex, 7);
        assert_eq!((k.eth_src, k.eth_dst), (A, B));
        assert_eq!((k.ethertype, k.proto), (ETHERTYPE_IPV4, IPPROTO_UDP));
        assert_eq!((k.src, k.dst), (IP_A, IP_B));
        assert_eq!(
            (k.l4_src, k.l4_dst, k.frag, k.vlan_tci, k.tos, k.flags),
            (1234, 53, FRAG_NONE, 0, 0, 0)
        );
    }

    #[test]
    fn tos_byte_is_in_the_key() {
        let plain = udp_frame(A, B, IP_A, IP_B, 1234, 53, b"hi");
        for tos in [16u8, 0xb8, 0x01, 0x03] {
            let f = with_ip(plain.clone(), |ip| ip[1] = tos);
            let k = key_of(&f);
            assert_eq!(k.tos, tos);
            assert_ne!(k, key_of(&plain), "tos {tos:#04x} shares the TOS-0 key");
        }
    }

    #[test]
    fn icmp_echo_key_has_id_and_type_code() {
        let f = icmp_echo_frame(A, B, IP_A, IP_B, true, 0x4242, 1, &[0; 8]);
        let k = parse(&f).unwrap().flow_key(1).unwrap();
        assert_eq!((k.l4_src, k.l4_dst), (0x4242, 8 << 8));
    }

    #[test]
    fn arp_key_uses_protocol_addresses_and_the_whole_opcode() {
        let arp = |op| arp_frame(op, A, IP_A, [0; 6], IP_B, BROADCAST);
        let k = key_of(&arp(ARP_REQUEST));
        assert_eq!((k.src, k.dst, k.proto), (IP_A, IP_B, 0));
        assert_eq!((k.l4_src, k.l4_dst), (0, ARP_REQUEST));
        assert_eq!(k.ethertype, ETHERTYPE_ARP);
        // 0x0101 and 0x0001 agree in their low byte only.
        assert_eq!(key_of(&arp(0x0101)).l4_dst, 0x0101);
        assert_ne!(key_of(&arp(0x0101)), k);
    }

    #[test]
    fn vlan_tag_is_read_and_skipped() {
        let f = with_vlan(&udp_frame(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b""), 42);
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.vlan, h.vlan_tci, h.ethertype, h.l3_offset),
            (Some(42), Some(42), ETHERTYPE_IPV4, 18)
        );
        let k = h.flow_key(1).unwrap();
        assert_eq!((k.vlan_tci, k.flags, k.vid()), (42, KEY_TAGGED, 42));
        assert!(k.tagged());
    }

    #[test]
    fn priority_tag_and_pcp_are_not_untagged() {
        let plain = udp_frame(A, B, IP_A, IP_B, 1, 2, b"");
        let untagged = key_of(&plain);
        let priority = with_vlan(&plain, 0);
        let h = parse(&priority).unwrap();
        assert_eq!((h.vlan, h.vlan_tci), (Some(0), Some(0)));
        let k = h.flow_key(1).unwrap();
        assert_eq!((k.vlan_tci, k.flags), (0, KEY_TAGGED));
        assert_ne!(k, untagged, "VID 0 priority tag shares the untagged key");
        assert_eq!(
            FlowKey {
                vlan_tci: 0,
                flags: 0,
                ..k
            },
            untagged,
            "only the tag differs"
        );
        // PCP 5, DEI 1 on VID 7: the VID is 7 for the simulation, the whole
        // TCI is in the key.
        let mut pcp = with_vlan(&plain, 7);
        set16(&mut pcp, 14, 5 << 13 | 1 << 12 | 7);
        let h = parse(&pcp).unwrap();
        assert_eq!((h.vlan, h.vlan_tci), (Some(7), Some(0xb007)));
        let k = h.flow_key(1).unwrap();
        assert_eq!((k.vlan_tci, k.vid()), (0xb007, 7));
        assert_ne!(k, key_of(&with_vlan(&plain, 7)));
    }

    #[test]
    fn later_fragment_has_no_userspace_key() {
        let f = udp_frame(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"12345678");
        let f = with_ip(f, |ip| set16(ip, 6, 0x0010)); // offset 16 * 8
        let h = parse(&f).unwrap();
        assert!(matches!(h.l3, L3::Ipv4(_, L4::None)));
        assert_eq!(h.flow_key(1), None);
    }

    #[test]
    fn first_fragment_key_is_marked_and_its_udp_length_covers_the_datagram() {
        // The first 8 bytes of a 1008-byte datagram: the UDP length (1008)
        // is beyond this packet, as it must be.
        let f = udp_frame(A, B, IP_A, IP_B, 1, 2, &[0; 1000]);
        let mut first = f[..ETH_HLEN + 20 + 16].to_vec();
        first = with_ip(first, |ip| {
            set16(ip, 2, 36);
            set16(ip, 6, 0x2000); // MF
        });
        let k = key_of(&first);
        assert_eq!((k.frag, k.l4_src, k.l4_dst), (FRAG_FRAGMENT, 1, 2));
        // The floor still holds for a first fragment.
        let mut bad = first.clone();
        set16(&mut bad, ETH_HLEN + 20 + 4, 0);
        assert_eq!(parse(&bad), Err(ParseError::UdpLength));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good = udp_frame(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"payload");
        for len in 0..good.len() {
            let _ = parse(&good[..len]);
        }
        assert_eq!(parse(&good[..10]), Err(ParseError::ShortEthernet));
        assert_eq!(parse(&good[..ETH_HLEN + 19]), Err(ParseError::ShortIpv4));
        // Cut frames: the total length is beyond what is left.
        assert_eq!(
            parse(&good[..ETH_HLEN + 22]),
            Err(ParseError::Ipv4TotalLength)
        );
        let mut bad_ihl = good.clone();
        bad_ihl[ETH_HLEN] = 0x4f; // 60-byte header in a shorter packet
        assert_eq!(parse(&bad_ihl), Err(ParseError::Ipv4TotalLength));
        let qinq = with_vlan(&with_vlan(&good, 1), 2);
        assert_eq!(parse(&qinq), Err(ParseError::StackedVlan));
        let v6 = with_ip(good.clone(), |ip| ip[0] = 0x65);
        assert_eq!(parse(&v6), Err(ParseError::Ipv4Version));
    }

    /// Every IPv4 case the kernel program refuses to key (`XdpMalformed`),
    /// with its error and drop reason.
    #[test]
    fn malformed_ipv4_is_rejected_with_its_reason() {
        let udp = udp_frame(A, B, IP_A, IP_B, 1234, 53, b"payload!");
        let tcp = tcp_frame(A, B, IP_A, IP_B, 40000, 80, 0x02);
        let l4 = ETH_HLEN + 20;
        let mut cases: Vec<(&str, Vec<u8>, ParseError, Reason)> = Vec::new();
        let mut add = |name, f, e, r| cases.push((name, f, e, r));

        let mut f = udp.clone();
        f[ETH_HLEN + 10] ^= 0x01;
        add(
            "bad header checksum",
            f,
            ParseError::Ipv4Checksum,
            Reason::Ipv4BadChecksum,
        );
        add(
            "IHL 4",
            with_ip(udp.clone(), |ip| ip[0] = 0x44),
            ParseError::Ipv4HeaderLength,
            Reason::Ipv4BadLength,
        );
        add(
            "total length under the header",
            with_ip(udp.clone(), |ip| set16(ip, 2, 19)),
            ParseError::Ipv4TotalLength,
            Reason::Ipv4BadLength,
        );
        let len = (udp.len() - ETH_HLEN) as u16;
        add(
            "total length one byte beyond the frame",
            with_ip(udp.clone(), |ip| set16(ip, 2, len + 1)),
            ParseError::Ipv4TotalLength,
            Reason::Ipv4BadLength,
        );
        add(
            "total length 65535",
            with_ip(udp.clone(), |ip| set16(ip, 2, 0xffff)),
            ParseError::Ipv4TotalLength,
            Reason::Ipv4BadLength,
        );
        let mut f = udp.clone();
        set16(&mut f, l4 + 4, 0);
        add(
            "UDP length 0",
            f,
            ParseError::UdpLength,
            Reason::L4BadHeader,
        );
        let mut f = udp.clone();
        set16(&mut f, l4 + 4, 7);
        add(
            "UDP length 7",
            f,
            ParseError::UdpLength,
            Reason::L4BadHeader,
        );
        let mut f = udp.clone();
        set16(&mut f, l4 + 4, 0xffff);
        add(
            "UDP length 65535",
            f,
            ParseError::UdpLength,
            Reason::L4BadHeader,
        );
        let mut f = udp.clone();
        set16(&mut f, l4 + 4, 8 + 9); // one beyond the 8-byte payload
        add(
            "UDP length beyond the packet",
            f,
            ParseError::UdpLength,
            Reason::L4BadHeader,
        );
        let short_udp = with_ip(udp[..l4 + 7].to_vec(), |ip| set16(ip, 2, 27));
        add(
            "UDP header of 7 bytes",
            short_udp,
            ParseError::ShortUdp,
            Reason::L4BadHeader,
        );
        let mut f = tcp.clone();
        f[l4 + 12] = 0x00;
        add(
            "TCP data offset 0",
            f,
            ParseError::TcpDataOffset,
            Reason::L4BadHeader,
        );
        let mut f = tcp.clone();
        f[l4 + 12] = 0x40;
        add(
            "TCP data offset 4",
            f,
            ParseError::TcpDataOffset,
            Reason::L4BadHeader,
        );
        let mut f = tcp.clone();
        f[l4 + 12] = 0x60; // 24 bytes in a 20-byte segment
        add(
            "TCP data offset beyond the packet",
            f,
            ParseError::TcpDataOffset,
            Reason::L4BadHeader,
        );
        let short_tcp = with_ip(tcp[..l4 + 19].to_vec(), |ip| set16(ip, 2, 39));
        add(
            "TCP header of 19 bytes",
            short_tcp,
            ParseError::ShortTcp,
            Reason::L4BadHeader,
        );
        // The TCP header in the Ethernet padding, not in the packet.
        let mut padded = with_ip(tcp.clone(), |ip| set16(ip, 2, 30));
        padded.resize(60, 0);
        add(
            "TCP header beyond the total length, in the padding",
            padded,
            ParseError::ShortTcp,
            Reason::L4BadHeader,
        );
        let icmp = icmp_echo_frame(A, B, IP_A, IP_B, true, 1, 1, b"");
        let short_icmp = with_ip(icmp[..l4 + 6].to_vec(), |ip| set16(ip, 2, 26));
        add(
            "ICMP header of 6 bytes",
            short_icmp,
            ParseError::ShortIcmp,
            Reason::Malformed,
        );

        for (name, frame, error, reason) in cases {
            assert_eq!(parse(&frame), Err(error), "{name}");
            assert_eq!(error.reason(), reason, "{name}");
            // Tagged, the same packet fails the same way.
            assert_eq!(parse(&with_vlan(&frame, 5)), Err(error), "{name}, tagged");
        }
    }

    #[test]
    fn ethernet_padding_is_legal() {
        // A 60-byte minimum frame around a 28-byte UDP packet, and a TCP
        // segment padded the same way.
        for f in [
            udp_frame(A, B, IP_A, IP_B, 1234, 53, b""),
            tcp_frame(A, B, IP_A, IP_B, 40000, 80, 0x10),
        ] {
            let mut padded = f.clone();
            padded.resize(60, 0xee);
            let h = parse(&padded).unwrap();
            assert_eq!(h.flow_key(1), parse(&f).unwrap().flow_key(1));
        }
    }

    #[test]
    fn every_parse_error_has_a_reason() {
        let all = [
            ParseError::ShortEthernet,
            ParseError::StackedVlan,
            ParseError::ShortArp,
            ParseError::ShortIpv4,
            ParseError::Ipv4Version,
            ParseError::Ipv4HeaderLength,
            ParseError::Ipv4TotalLength,
            ParseError::Ipv4Checksum,
            ParseError::ShortTcp,
            ParseError::TcpDataOffset,
            ParseError::ShortUdp,
            ParseError::UdpLength,
            ParseError::ShortIcmp,
        ];
        for e in all {
            // The kernel-counted group never names a userspace drop.
            assert!(e.reason() as u32 >= Reason::XDP_COUNT, "{e:?}");
        }
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
