//! The parser and the flow key on packet bytes: what is accepted, with
//! which error, and what the key holds.
use super::build::*;
use super::layout::{self, ipv4, tcp, udp, vlan};
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
    let header_len = ipv4::header_len(ip[ipv4::VER_IHL]).clamp(ipv4::HEADER_LEN, ip.len());
    layout::put16(ip, ipv4::CHECKSUM, 0);
    let c = checksum::ipv4_header(&ip[..header_len]);
    layout::put16(ip, ipv4::CHECKSUM, c);
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
        let f = with_ip(plain.clone(), |ip| ip[ipv4::TOS] = tos);
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
    set16(&mut pcp, vlan::AT + vlan::TCI.start, 5 << 13 | 1 << 12 | 7);
    let h = parse(&pcp).unwrap();
    assert_eq!((h.vlan, h.vlan_tci), (Some(7), Some(0xb007)));
    let k = h.flow_key(1).unwrap();
    assert_eq!((k.vlan_tci, k.vid()), (0xb007, 7));
    assert_ne!(k, key_of(&with_vlan(&plain, 7)));
}

#[test]
fn later_fragment_has_no_userspace_key() {
    let f = udp_frame(A, B, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"12345678");
    let f = with_ip(f, |ip| set16(ip, ipv4::FLAGS_FRAG.start, 0x0010)); // offset 16 * 8
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
        set16(ip, ipv4::LENGTH.start, 36);
        set16(ip, ipv4::FLAGS_FRAG.start, ipv4::MORE_FRAGMENTS);
    });
    let k = key_of(&first);
    assert_eq!((k.frag, k.l4_src, k.l4_dst), (FRAG_FRAGMENT, 1, 2));
    // The floor still holds for a first fragment.
    let mut bad = first.clone();
    set16(&mut bad, ETH_HLEN + 20 + udp::LENGTH.start, 0);
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
    bad_ihl[ETH_HLEN + ipv4::VER_IHL] = 0x4f; // 60-byte header in a shorter packet
    assert_eq!(parse(&bad_ihl), Err(ParseError::Ipv4TotalLength));
    let qinq = with_vlan(&with_vlan(&good, 1), 2);
    assert_eq!(parse(&qinq), Err(ParseError::StackedVlan));
    let v6 = with_ip(good.clone(), |ip| ip[ipv4::VER_IHL] = 0x65);
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
    f[ETH_HLEN + ipv4::CHECKSUM.start] ^= 0x01;
    add(
        "bad header checksum",
        f,
        ParseError::Ipv4Checksum,
        Reason::Ipv4BadChecksum,
    );
    add(
        "IHL 4",
        with_ip(udp.clone(), |ip| ip[ipv4::VER_IHL] = 0x44),
        ParseError::Ipv4HeaderLength,
        Reason::Ipv4BadLength,
    );
    add(
        "total length under the header",
        with_ip(udp.clone(), |ip| set16(ip, ipv4::LENGTH.start, 19)),
        ParseError::Ipv4TotalLength,
        Reason::Ipv4BadLength,
    );
    let len = (udp.len() - ETH_HLEN) as u16;
    add(
        "total length one byte beyond the frame",
        with_ip(udp.clone(), |ip| set16(ip, ipv4::LENGTH.start, len + 1)),
        ParseError::Ipv4TotalLength,
        Reason::Ipv4BadLength,
    );
    add(
        "total length 65535",
        with_ip(udp.clone(), |ip| set16(ip, ipv4::LENGTH.start, 0xffff)),
        ParseError::Ipv4TotalLength,
        Reason::Ipv4BadLength,
    );
    let mut f = udp.clone();
    set16(&mut f, l4 + udp::LENGTH.start, 0);
    add(
        "UDP length 0",
        f,
        ParseError::UdpLength,
        Reason::L4BadHeader,
    );
    let mut f = udp.clone();
    set16(&mut f, l4 + udp::LENGTH.start, 7);
    add(
        "UDP length 7",
        f,
        ParseError::UdpLength,
        Reason::L4BadHeader,
    );
    let mut f = udp.clone();
    set16(&mut f, l4 + udp::LENGTH.start, 0xffff);
    add(
        "UDP length 65535",
        f,
        ParseError::UdpLength,
        Reason::L4BadHeader,
    );
    let mut f = udp.clone();
    set16(&mut f, l4 + udp::LENGTH.start, 8 + 9); // one beyond the 8-byte payload
    add(
        "UDP length beyond the packet",
        f,
        ParseError::UdpLength,
        Reason::L4BadHeader,
    );
    let short_udp = with_ip(udp[..l4 + 7].to_vec(), |ip| {
        set16(ip, ipv4::LENGTH.start, 27)
    });
    add(
        "UDP header of 7 bytes",
        short_udp,
        ParseError::ShortUdp,
        Reason::L4BadHeader,
    );
    let mut f = tcp.clone();
    f[l4 + tcp::DATA_OFFSET] = 0x00;
    add(
        "TCP data offset 0",
        f,
        ParseError::TcpDataOffset,
        Reason::L4BadHeader,
    );
    let mut f = tcp.clone();
    f[l4 + tcp::DATA_OFFSET] = 0x40;
    add(
        "TCP data offset 4",
        f,
        ParseError::TcpDataOffset,
        Reason::L4BadHeader,
    );
    let mut f = tcp.clone();
    f[l4 + tcp::DATA_OFFSET] = 0x60; // 24 bytes in a 20-byte segment
    add(
        "TCP data offset beyond the packet",
        f,
        ParseError::TcpDataOffset,
        Reason::L4BadHeader,
    );
    let short_tcp = with_ip(tcp[..l4 + 19].to_vec(), |ip| {
        set16(ip, ipv4::LENGTH.start, 39)
    });
    add(
        "TCP header of 19 bytes",
        short_tcp,
        ParseError::ShortTcp,
        Reason::L4BadHeader,
    );
    // The TCP header in the Ethernet padding, not in the packet.
    let mut padded = with_ip(tcp.clone(), |ip| set16(ip, ipv4::LENGTH.start, 30));
    padded.resize(60, 0);
    add(
        "TCP header beyond the total length, in the padding",
        padded,
        ParseError::ShortTcp,
        Reason::L4BadHeader,
    );
    let icmp = icmp_echo_frame(A, B, IP_A, IP_B, true, 1, 1, b"");
    let short_icmp = with_ip(icmp[..l4 + 6].to_vec(), |ip| {
        set16(ip, ipv4::LENGTH.start, 26)
    });
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
