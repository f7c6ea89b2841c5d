//! Header lengths, protocol numbers and field offsets, as on the wire, as
//! the flat constants the program's accessors take. Offsets are from the
//! start of their own header and come from `vnet_common::wire`, the one
//! layout the kernel and userspace share; the 802.1Q ones are from the
//! 4-byte tag after the outer EtherType.
use vnet_common::wire::{arp, ethernet, icmp, ipv4, tcp, udp, vlan};

// TCP and UDP share their port offsets, so the program reads both with one.
const _: () = assert!(tcp::SRC_PORT.start == udp::SRC_PORT.start);
const _: () = assert!(tcp::DST_PORT.start == udp::DST_PORT.start);

// Ethernet and 802.1Q.
pub(crate) const ETH_HLEN: usize = ethernet::HEADER_LEN;
pub(crate) const VLAN_HLEN: usize = vlan::TAG_LEN;
pub(crate) const ETH_DST: usize = ethernet::DST.start;
pub(crate) const ETH_SRC: usize = ethernet::SRC.start;
pub(crate) const ETH_TYPE: usize = ethernet::ETHERTYPE.start;
/// In the 4-byte tag: the TCI, then the EtherType it encloses.
pub(crate) const VLAN_TCI: usize = vlan::TCI.start - vlan::TPID.end;
pub(crate) const VLAN_TYPE: usize = vlan::ETHERTYPE.start - vlan::TPID.end;

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88a8;

// ARP for Ethernet/IPv4 (RFC 826): 28 bytes.
pub(crate) const ARP_LEN: usize = arp::PACKET_LEN;
pub(crate) const ARP_HTYPE: usize = arp::HTYPE.start;
pub(crate) const ARP_PTYPE: usize = arp::PTYPE.start;
pub(crate) const ARP_HLEN: usize = arp::HLEN;
pub(crate) const ARP_PLEN: usize = arp::PLEN;
pub(crate) const ARP_OPER: usize = arp::OPER.start;
pub(crate) const ARP_SPA: usize = arp::SPA.start;
pub(crate) const ARP_TPA: usize = arp::TPA.start;

// IPv4 (RFC 791).
pub(crate) const IPV4_MIN_HLEN: usize = ipv4::HEADER_LEN;
pub(crate) const IP_VIHL: usize = ipv4::VER_IHL;
pub(crate) const IP_TOS: usize = ipv4::TOS;
pub(crate) const IP_TOTAL_LEN: usize = ipv4::LENGTH.start;
pub(crate) const IP_ID: usize = ipv4::IDENT.start;
pub(crate) const IP_FRAG: usize = ipv4::FLAGS_FRAG.start;
pub(crate) const IP_TTL: usize = ipv4::TTL;
pub(crate) const IP_PROTO: usize = ipv4::PROTOCOL;
pub(crate) const IP_CSUM: usize = ipv4::CHECKSUM.start;
pub(crate) const IP_SRC: usize = ipv4::SRC_ADDR.start;
pub(crate) const IP_DST: usize = ipv4::DST_ADDR.start;
pub(crate) const IP_MF: u16 = ipv4::MORE_FRAGMENTS;
pub(crate) const IP_OFFSET: u16 = ipv4::FRAG_OFFSET_MASK;

pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

// Transport headers. TCP and UDP both start with the source and
// destination ports.
pub(crate) const L4_SRC: usize = tcp::SRC_PORT.start;
pub(crate) const L4_DST: usize = tcp::DST_PORT.start;
pub(crate) const TCP_MIN_HLEN: usize = tcp::HEADER_LEN;
pub(crate) const TCP_DOFF: usize = tcp::DATA_OFFSET;
pub(crate) const TCP_CSUM: usize = tcp::CHECKSUM.start;
pub(crate) const UDP_HLEN: usize = udp::HEADER_LEN;
pub(crate) const UDP_LEN: usize = udp::LENGTH.start;
pub(crate) const UDP_CSUM: usize = udp::CHECKSUM.start;
/// ICMP's fixed header: type, code, checksum and 4 bytes of the message
/// (the echo identifier and sequence number for an echo).
pub(crate) const ICMP_HLEN: usize = icmp::HEADER_LEN;
pub(crate) const ICMP_TYPE: usize = icmp::TYPE;
pub(crate) const ICMP_CODE: usize = icmp::CODE;
pub(crate) const ICMP_CSUM: usize = icmp::CHECKSUM.start;
pub(crate) const ICMP_ECHO_ID: usize = icmp::ECHO_IDENT.start;
