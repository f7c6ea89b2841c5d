//! Frames: the header layout, the validating parser, the parsed view the
//! simulation carries, checksum-keeping rewrites, flow keys, builders.
//!
//! - `layout`: every header field's byte range, written once.
//! - `parse`: bytes to [`Headers`], with the XDP program's checks.
//! - [`Frame`]: bytes and headers parsed once and kept in step by setters.
//! - `rewrite`: the byte-level rewrites under those setters (also used on
//!   the packet an ICMP error quotes).
//! - `build`: frames the dataplane generates, and those of tests.
//! - `offload`: finishing the partial checksums of guests with transmit
//!   offload.
//!
//! The rule for what the flow key holds is written once, on
//! `vnet_common::FlowKey`; [`Headers::flow_key`] follows it.
pub mod build;
pub mod checksum;
mod frame;
pub mod layout;
pub mod offload;
mod parse;
pub mod rewrite;

pub use frame::Frame;
pub use parse::{icmp_quote, parse, Quote};
pub use rewrite::{decrement_ttl, rewrite_ipv4, set_macs, Rewrite};

use vnet_common::{FlowKey, Reason, FRAG_FRAGMENT, FRAG_NONE, KEY_TAGGED};

pub const ETH_HLEN: usize = layout::ethernet::HEADER_LEN;
pub const VLAN_HLEN: usize = layout::vlan::TAG_LEN;
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
mod tests;
