//! The header layout, written once for the kernel and userspace: the byte
//! range of every field vnet reads or writes, per header, from the start
//! of that header (as smoltcp's `mod field`). The dataplane's parser,
//! builders and rewrites (`dataplane/src/packet`) and the XDP program
//! (`ebpf/xdp/src/wire.rs`, which derives its offsets from these) name
//! them; no other file spells an offset.
use core::ops::Range;

/// The bytes of one field within its header.
pub type Field = Range<usize>;

/// Ethernet II.
pub mod ethernet {
    use super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const HEADER_LEN: usize = 14;
}

/// An 802.1Q tag, from its TPID (which sits where the Ethernet header's
/// EtherType does): the tag control information, then the inner EtherType.
pub mod vlan {
    use super::Field;
    /// The tag sits right after the two MAC addresses.
    pub const AT: usize = super::ethernet::ETHERTYPE.start;
    pub const TPID: Field = 0..2;
    pub const TCI: Field = 2..4;
    pub const ETHERTYPE: Field = 4..6;
    pub const TAG_LEN: usize = 4;
    /// The VID bits of the TCI (the rest is PCP and DEI).
    pub const VID_MASK: u16 = 0x0fff;
}

/// ARP for IPv4 over Ethernet (RFC 826).
pub mod arp {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
    pub const PACKET_LEN: usize = 28;
    /// Hardware type Ethernet.
    pub const HTYPE_ETHERNET: u16 = 1;
}

/// IPv4 (RFC 791).
pub mod ipv4 {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLAGS_FRAG: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    /// TTL and protocol: the 16-bit word the checksum sees the TTL in.
    pub const TTL_PROTOCOL: Field = 8..10;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    /// The header without options.
    pub const HEADER_LEN: usize = 20;
    pub const MAX_OPTIONS_LEN: usize = 40;
    pub const DONT_FRAGMENT: u16 = 0x4000;
    pub const MORE_FRAGMENTS: u16 = 0x2000;
    /// The fragment offset bits of FLAGS_FRAG, in 8-byte units.
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
    /// `VER_IHL` of a header without options.
    pub const VER_IHL_PLAIN: u8 = 0x45;

    /// The version nibble of `VER_IHL`.
    pub const fn version(ver_ihl: u8) -> u8 {
        ver_ihl >> 4
    }

    /// The header length in bytes that `VER_IHL` declares.
    pub const fn header_len(ver_ihl: u8) -> usize {
        ((ver_ihl & 0x0f) as usize) * 4
    }

    /// `VER_IHL` of a version 4 header of `header_len` bytes.
    pub const fn ver_ihl(header_len: usize) -> u8 {
        0x40 | (header_len / 4) as u8
    }
}

/// TCP (RFC 793).
pub mod tcp {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble, in 32-bit words).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const HEADER_LEN: usize = 20;
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    /// The header length in bytes that the data offset byte declares.
    pub const fn header_len(data_offset: u8) -> usize {
        ((data_offset >> 4) as usize) * 4
    }
}

/// UDP (RFC 768).
pub mod udp {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const HEADER_LEN: usize = 8;
}

/// ICMP (RFC 792): the first 8 bytes, which every message has.
pub mod icmp {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// The second header word: an echo's identifier and sequence number,
    /// an error's "rest of header" (the next-hop MTU, or unused).
    pub const REST: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    pub const HEADER_LEN: usize = 8;
    pub const ECHO_REPLY: u8 = 0;
    pub const ECHO_REQUEST: u8 = 8;

    /// Echo request and reply: the messages with an identifier.
    pub const fn is_echo(kind: u8) -> bool {
        kind == ECHO_REPLY || kind == ECHO_REQUEST
    }

    /// Destination unreachable, time exceeded, parameter problem: the
    /// errors that quote the packet they are about.
    pub const fn is_error(kind: u8) -> bool {
        kind == 3 || kind == 11 || kind == 12
    }
}
