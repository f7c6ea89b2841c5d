//! The validating parser: a frame's bytes to its [`Headers`], checked once.
//!
//! It mirrors the XDP program's parser (ebpf/xdp) field for field, so that
//! the key userspace installs is the key the kernel looks up, and it
//! rejects exactly the IPv4 the kernel refuses to key (`XdpMalformed`), so
//! that no flow installed for a good packet is ever applied to a malformed
//! one.
use super::layout::{arp, ethernet, get16, get4, get6, icmp, ipv4, tcp, udp, vlan};
use super::{checksum, Arp, Headers, Ipv4, ParseError, L3, L4};
use super::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use super::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Parses a frame. Every access is bounds-checked; a frame the parser does
/// not accept is an error, never a panic.
pub fn parse(frame: &[u8]) -> Result<Headers, ParseError> {
    if frame.len() < ethernet::HEADER_LEN {
        return Err(ParseError::ShortEthernet);
    }
    let dst = get6(frame, ethernet::DST);
    let src = get6(frame, ethernet::SRC);
    let mut ethertype = get16(frame, ethernet::ETHERTYPE);
    let mut l3_offset = ethernet::HEADER_LEN;
    let mut vlan_tci = None;
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < ethernet::HEADER_LEN + vlan::TAG_LEN {
            return Err(ParseError::ShortEthernet);
        }
        let tag = &frame[vlan::AT..];
        vlan_tci = Some(get16(tag, vlan::TCI));
        ethertype = get16(tag, vlan::ETHERTYPE);
        l3_offset += vlan::TAG_LEN;
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
        vlan: vlan_tci.map(|tci| tci & vlan::VID_MASK),
        vlan_tci,
        ethertype,
        l3_offset,
        l3,
    })
}

fn parse_arp(b: &[u8]) -> Result<Arp, ParseError> {
    // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
    if b.len() < arp::PACKET_LEN
        || get16(b, arp::HTYPE) != arp::HTYPE_ETHERNET
        || get16(b, arp::PTYPE) != ETHERTYPE_IPV4
        || b[arp::HLEN] != 6
        || b[arp::PLEN] != 4
    {
        return Err(ParseError::ShortArp);
    }
    Ok(Arp {
        op: get16(b, arp::OPER),
        sha: get6(b, arp::SHA),
        spa: get4(b, arp::SPA),
        tha: get6(b, arp::THA),
        tpa: get4(b, arp::TPA),
    })
}

/// An IPv4 packet, checked in the kernel program's order: lengths, header
/// checksum, then the transport header of a packet that carries one.
fn parse_ipv4(frame: &[u8], offset: usize) -> Result<L3, ParseError> {
    let b = &frame[offset..];
    if b.len() < ipv4::HEADER_LEN {
        return Err(ParseError::ShortIpv4);
    }
    if ipv4::version(b[ipv4::VER_IHL]) != 4 {
        return Err(ParseError::Ipv4Version);
    }
    let header_len = ipv4::header_len(b[ipv4::VER_IHL]);
    if header_len < ipv4::HEADER_LEN {
        return Err(ParseError::Ipv4HeaderLength);
    }
    // Ethernet padding after the packet is legal; a packet longer than the
    // frame, or shorter than its own header, is not.
    let total_len = get16(b, ipv4::LENGTH);
    if (total_len as usize) < header_len || total_len as usize > b.len() {
        return Err(ParseError::Ipv4TotalLength);
    }
    if checksum::sum(&b[..header_len], 0) != 0xffff {
        return Err(ParseError::Ipv4Checksum);
    }
    let flags_frag = get16(b, ipv4::FLAGS_FRAG);
    let ip = Ipv4 {
        offset,
        header_len,
        total_len,
        tos: b[ipv4::TOS],
        id: get16(b, ipv4::IDENT),
        dont_fragment: flags_frag & ipv4::DONT_FRAGMENT != 0,
        more_fragments: flags_frag & ipv4::MORE_FRAGMENTS != 0,
        frag_offset: flags_frag & ipv4::FRAG_OFFSET_MASK,
        ttl: b[ipv4::TTL],
        proto: b[ipv4::PROTOCOL],
        src: get4(b, ipv4::SRC_ADDR),
        dst: get4(b, ipv4::DST_ADDR),
    };
    let l4 = if ip.is_later_fragment() {
        L4::None
    } else {
        // The transport bytes of this packet, without Ethernet padding.
        parse_l4(&ip, &b[header_len..total_len as usize])?
    };
    Ok(L3::Ipv4(ip, l4))
}

/// The transport header `t` of the (first or only fragment) packet `ip`.
fn parse_l4(ip: &Ipv4, t: &[u8]) -> Result<L4, ParseError> {
    Ok(match ip.proto {
        IPPROTO_TCP => {
            if t.len() < tcp::HEADER_LEN {
                return Err(ParseError::ShortTcp);
            }
            let data_offset = tcp::header_len(t[tcp::DATA_OFFSET]);
            if data_offset < tcp::HEADER_LEN || data_offset > t.len() {
                return Err(ParseError::TcpDataOffset);
            }
            L4::Ports {
                src: get16(t, tcp::SRC_PORT),
                dst: get16(t, tcp::DST_PORT),
            }
        }
        IPPROTO_UDP => {
            if t.len() < udp::HEADER_LEN {
                return Err(ParseError::ShortUdp);
            }
            // A first fragment's UDP length covers the whole datagram,
            // which this packet does not hold: only its floor is checked.
            let udp_len = get16(t, udp::LENGTH) as usize;
            if udp_len < udp::HEADER_LEN || (!ip.is_fragment() && udp_len > t.len()) {
                return Err(ParseError::UdpLength);
            }
            L4::Ports {
                src: get16(t, udp::SRC_PORT),
                dst: get16(t, udp::DST_PORT),
            }
        }
        IPPROTO_ICMP => {
            if t.len() < icmp::HEADER_LEN {
                return Err(ParseError::ShortIcmp);
            }
            let (kind, code) = (t[icmp::TYPE], t[icmp::CODE]);
            let echo_id = icmp::is_echo(kind).then(|| get16(t, icmp::ECHO_IDENT));
            L4::Icmp {
                kind,
                code,
                echo_id,
            }
        }
        _ => L4::None,
    })
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
/// header is `ip`). `None` if it is too short to name a connection. This is
/// a second, lenient parse by nature: the quote is a truncated copy of
/// another packet (its lengths and checksums are not this packet's), read
/// only when an error meets conntrack or NAT.
pub fn icmp_quote(frame: &[u8], ip: &Ipv4) -> Option<Quote> {
    let offset = ip.l4_offset() + icmp::HEADER_LEN;
    let q = frame.get(offset..)?;
    if q.len() < ipv4::HEADER_LEN || ipv4::version(q[ipv4::VER_IHL]) != 4 {
        return None;
    }
    let header_len = ipv4::header_len(q[ipv4::VER_IHL]);
    // RFC 792 promises the first 8 transport bytes; ports need only 4.
    let l4 = q
        .get(header_len..header_len + 8)
        .or_else(|| q.get(header_len..header_len + 4))?;
    let proto = q[ipv4::PROTOCOL];
    let (sport, dport) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => (get16(l4, udp::SRC_PORT), get16(l4, udp::DST_PORT)),
        IPPROTO_ICMP if l4.len() >= icmp::HEADER_LEN && icmp::is_echo(l4[icmp::TYPE]) => {
            (get16(l4, icmp::ECHO_IDENT), 0)
        }
        _ => return None,
    };
    Some(Quote {
        offset,
        header_len,
        proto,
        src: get4(q, ipv4::SRC_ADDR),
        dst: get4(q, ipv4::DST_ADDR),
        sport,
        dport,
    })
}

// `icmp_quote` reads TCP and UDP ports through one set of fields.
const _: () = assert!(
    tcp::SRC_PORT.start == udp::SRC_PORT.start && tcp::DST_PORT.start == udp::DST_PORT.start
);
