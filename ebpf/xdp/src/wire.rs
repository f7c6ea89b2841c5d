//! Header lengths, protocol numbers and field offsets, as on the wire.
//! Offsets are from the start of their own header.

// Ethernet and 802.1Q.
pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const VLAN_HLEN: usize = 4;
pub(crate) const ETH_DST: usize = 0;
pub(crate) const ETH_SRC: usize = 6;
pub(crate) const ETH_TYPE: usize = 12;
/// In the 4-byte tag: the TCI, then the EtherType it encloses.
pub(crate) const VLAN_TCI: usize = 0;
pub(crate) const VLAN_TYPE: usize = 2;

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88a8;

// ARP for Ethernet/IPv4 (RFC 826): 28 bytes.
pub(crate) const ARP_LEN: usize = 28;
pub(crate) const ARP_HTYPE: usize = 0;
pub(crate) const ARP_PTYPE: usize = 2;
pub(crate) const ARP_HLEN: usize = 4;
pub(crate) const ARP_PLEN: usize = 5;
pub(crate) const ARP_OPER: usize = 6;
pub(crate) const ARP_SPA: usize = 14;
pub(crate) const ARP_TPA: usize = 24;

// IPv4 (RFC 791).
pub(crate) const IPV4_MIN_HLEN: usize = 20;
pub(crate) const IP_VIHL: usize = 0;
pub(crate) const IP_TOS: usize = 1;
pub(crate) const IP_TOTAL_LEN: usize = 2;
pub(crate) const IP_ID: usize = 4;
pub(crate) const IP_FRAG: usize = 6;
pub(crate) const IP_TTL: usize = 8;
pub(crate) const IP_PROTO: usize = 9;
pub(crate) const IP_CSUM: usize = 10;
pub(crate) const IP_SRC: usize = 12;
pub(crate) const IP_DST: usize = 16;
pub(crate) const IP_MF: u16 = 0x2000;
pub(crate) const IP_OFFSET: u16 = 0x1fff;

pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

// Transport headers. TCP and UDP both start with the source and
// destination ports.
pub(crate) const L4_SRC: usize = 0;
pub(crate) const L4_DST: usize = 2;
pub(crate) const TCP_MIN_HLEN: usize = 20;
pub(crate) const TCP_DOFF: usize = 12;
pub(crate) const TCP_CSUM: usize = 16;
pub(crate) const UDP_HLEN: usize = 8;
pub(crate) const UDP_LEN: usize = 4;
pub(crate) const UDP_CSUM: usize = 6;
/// ICMP's fixed header: type, code, checksum and 4 bytes of the message
/// (the echo identifier and sequence number for an echo).
pub(crate) const ICMP_HLEN: usize = 8;
pub(crate) const ICMP_TYPE: usize = 0;
pub(crate) const ICMP_CODE: usize = 1;
pub(crate) const ICMP_CSUM: usize = 2;
pub(crate) const ICMP_ECHO_ID: usize = 4;
