//! NAT on packet bytes: SNAT, floating IPs, port forwarding, ICMP errors,
//! hairpin, ARP for NAT addresses — on the example tenant-nat.yaml and a
//! variant of it.
use std::sync::Arc;
use vnet_common::{act, Reason};
use vnet_dataplane::packet::build::{
    arp_frame, ethernet_ipv4, fragment_ipv4, icmp_echo_frame, icmp_error, tcp_frame, udp_frame,
};
use vnet_dataplane::packet::{
    self, checksum, Mac, ARP_REPLY, ARP_REQUEST, BROADCAST, ETH_HLEN, L3, L4,
};
use vnet_dataplane::sim::nat_blocks::NatBlocks;
use vnet_dataplane::sim::{simulate, Decision, Snapshot, State, Step, Verdict};

const VM1_MAC: Mac = [2, 0, 0, 0, 1, 1];
const VM2_MAC: Mac = [2, 0, 0, 0, 1, 2];
const VM3_MAC: Mac = [2, 0, 0, 0, 1, 3];
const GW_MAC: Mac = [2, 0, 0, 0, 9, 1]; // the outside gateway 192.0.2.1
const VM1: [u8; 4] = [10, 0, 0, 11];
const VM2: [u8; 4] = [10, 0, 0, 12];
const VM3: [u8; 4] = [10, 0, 0, 13];
const REMOTE: [u8; 4] = [203, 0, 113, 5];
const SNAT_IP: [u8; 4] = [192, 0, 2, 10];
const FLOATING: [u8; 4] = [192, 0, 2, 50];

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/tenant-nat.yaml"
    ))
    .unwrap()
}

/// The example plus a third guest, a ranged UDP port forward and a floating
/// IP outside the uplink's subnet.
fn variant() -> String {
    example()
        .replace("      vm2: {interface: vm2-h}\n", "      vm2: {interface: vm2-h}\n      vm3: {interface: vm3-h}\n")
        .replace(
            "nat:\n",
            "nat:\n  - {router: edge, type: port_forward, protocol: udp, public: 192.0.2.10, public_ports: 8000-8009,\n     \
             private: 10.0.0.13, private_ports: 80-89, port: uplink}\n  \
             - {router: edge, type: floating_ip, public: 198.51.100.7, private: 10.0.0.14, port: uplink}\n",
        )
}

struct Net {
    snap: Snapshot,
    st: State,
    now: u64,
}

impl Net {
    fn new(yaml: &str) -> Net {
        Net::on_host(yaml, None)
    }
    /// The network as the vnetd of `host` runs it (many hosts).
    fn on_host(yaml: &str, host: Option<&str>) -> Net {
        let topo = vnet_model::load_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        let mut n = Net {
            snap: Snapshot::compile(&topo, 1).placed_on(host),
            st: State::default(),
            now: 1,
        };
        // The router knows its neighbours (ARP is the router tests' job).
        let up = n.mac("edge/uplink");
        n.send(
            "edge/uplink",
            &arp_frame(ARP_REPLY, GW_MAC, [192, 0, 2, 1], up, [192, 0, 2, 2], up),
        );
        let t = n.mac("edge/tenant");
        for (mac, ip, port) in [
            (VM1_MAC, VM1, "tenant/vm1"),
            (VM2_MAC, VM2, "tenant/vm2"),
            (VM3_MAC, VM3, "tenant/vm3"),
        ] {
            if n.snap.port_by_name(port).is_some() {
                n.send(port, &arp_frame(ARP_REPLY, mac, ip, t, [10, 0, 0, 1], t));
            }
        }
        n
    }
    fn mac(&self, port: &str) -> Mac {
        self.snap.ports[self.snap.port_by_name(port).unwrap()]
            .l3
            .unwrap()
            .mac
    }
    fn send(&mut self, port: &str, frame: &[u8]) -> Decision {
        self.now += 1_000_000;
        let p = self.snap.port_by_name(port).unwrap();
        simulate(&self.snap, &mut self.st, p, frame, self.now, true)
    }
    fn out(&self, d: &Decision) -> Vec<(String, Vec<u8>)> {
        d.emit
            .iter()
            .map(|e| (self.snap.ports[e.port].name.clone(), e.frame.clone()))
            .collect()
    }
    /// A frame from the outside gateway to the router's uplink.
    fn addressed_from_outside(&self, f: &mut [u8]) {
        packet::set_macs(f, GW_MAC, self.mac("edge/uplink"));
    }
}

/// The one frame emitted, checked: valid IPv4 and transport checksums.
/// Returns (port, src, dst, sport, dport) — ICMP: (id or type, code).
fn single(n: &Net, d: &Decision) -> (String, [u8; 4], [u8; 4], u16, u16) {
    let out = n.out(d);
    assert_eq!(out.len(), 1, "one frame out: {:?} {:?}", d.verdict, d.trace);
    let (port, f) = &out[0];
    verify_checksums(f);
    let h = packet::parse(f).unwrap();
    let L3::Ipv4(ip, l4) = h.l3 else {
        panic!("not IPv4")
    };
    let (a, b) = match l4 {
        L4::Ports { src, dst } => (src, dst),
        L4::Icmp {
            echo_id: Some(id), ..
        } => (id, 0),
        L4::Icmp { kind, code, .. } => (kind as u16, code as u16),
        L4::None => (0, 0),
    };
    (port.clone(), ip.src, ip.dst, a, b)
}

fn verify_checksums(f: &[u8]) {
    let h = packet::parse(f).unwrap();
    let L3::Ipv4(ip, _) = h.l3 else { return };
    let o = h.l3_offset;
    assert_eq!(
        checksum::ipv4_header(&f[o..o + ip.header_len]),
        0,
        "IPv4 header checksum"
    );
    let seg = &f[o + ip.header_len..o + ip.total_len as usize];
    match ip.proto {
        6 | 17 => {
            if ip.proto == 17 && u16::from_be_bytes([seg[6], seg[7]]) == 0 {
                return;
            }
            let acc = checksum::pseudo_header(ip.src, ip.dst, ip.proto, seg.len() as u16);
            assert_eq!(
                checksum::finish(checksum::sum(seg, acc)),
                0,
                "TCP/UDP checksum"
            );
        }
        1 => assert_eq!(checksum::finish(checksum::sum(seg, 0)), 0, "ICMP checksum"),
        _ => {}
    }
}

/// An ICMP error (type, code, second word) from the outside gateway,
/// 192.0.2.1, about `sent` (a frame the router sent out of its uplink).
fn error_from_outside(n: &Net, (kind, code, rest): (u8, u8, u32), sent: &[u8]) -> Vec<u8> {
    let packet = icmp_error([192, 0, 2, 1], kind, code, rest, &sent[ETH_HLEN..]);
    let mut err = ethernet_ipv4(GW_MAC, [0; 6], &packet);
    n.addressed_from_outside(&mut err);
    err
}

fn tenant_gw(n: &Net) -> Mac {
    n.mac("edge/tenant")
}

#[test]
fn snat_translates_out_and_back_and_installs_both_ways() {
    let mut n = Net::new(&example());
    let gw = tenant_gw(&n);
    let d = n.send(
        "tenant/vm2",
        &tcp_frame(VM2_MAC, gw, VM2, REMOTE, 40000, 80, 0x02),
    );
    let (port, src, dst, sport, dport) = single(&n, &d);
    assert_eq!(
        (port.as_str(), src, dst, dport),
        ("edge/uplink", SNAT_IP, REMOTE, 80)
    );
    assert!((1024..=65535).contains(&sport));
    assert_eq!(sport, 40000, "the original port is kept when free");
    let a = d.install.expect("NAT flows run in the kernel").actions;
    assert!(a.flags & act::SET_IP_SRC != 0 && a.ip_src == SNAT_IP);
    assert!(a.flags & (act::SET_IP_DST | act::SET_L4_DST) == 0);

    let mut reply = tcp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 80, sport, 0x12);
    n.addressed_from_outside(&mut reply);
    let d = n.send("edge/uplink", &reply);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm2".into(), REMOTE, VM2, 80, 40000)
    );
    let a = d.install.expect("the reply direction too").actions;
    assert!(a.flags & act::SET_IP_DST != 0 && a.ip_dst == VM2);
}

#[test]
fn udp_checksum_zero_stays_zero_through_snat() {
    let mut n = Net::new(&example());
    let mut f = udp_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, 5000, 53, b"query");
    f[ETH_HLEN + 20 + 6] = 0;
    f[ETH_HLEN + 20 + 7] = 0;
    let d = n.send("tenant/vm2", &f);
    let out = &n.out(&d)[0].1;
    assert_eq!(
        &out[ETH_HLEN + 26..ETH_HLEN + 28],
        &[0, 0],
        "no checksum stays no checksum"
    );
    verify_checksums(out);
}

#[test]
fn two_guests_with_the_same_icmp_id_get_distinct_ids() {
    let mut n = Net::new(&variant());
    let gw = tenant_gw(&n);
    let d2 = n.send(
        "tenant/vm2",
        &icmp_echo_frame(VM2_MAC, gw, VM2, REMOTE, true, 7777, 1, b"ping"),
    );
    let d3 = n.send(
        "tenant/vm3",
        &icmp_echo_frame(VM3_MAC, gw, VM3, REMOTE, true, 7777, 1, b"ping"),
    );
    let (_, src2, _, id2, _) = single(&n, &d2);
    let (_, src3, _, id3, _) = single(&n, &d3);
    assert_eq!((src2, src3), (SNAT_IP, SNAT_IP));
    assert_eq!(id2, 7777, "the first keeps its id (inside the range)");
    assert_ne!(id3, 7777, "the second is translated");
    for (id, guest, vm) in [(id2, "tenant/vm2", VM2), (id3, "tenant/vm3", VM3)] {
        let mut reply = icmp_echo_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, false, id, 1, b"ping");
        n.addressed_from_outside(&mut reply);
        let d = n.send("edge/uplink", &reply);
        assert_eq!(
            single(&n, &d),
            (guest.into(), REMOTE, vm, 7777, 0),
            "reply with id {id}"
        );
    }
}

#[test]
fn floating_ip_is_one_to_one_behind_its_firewall() {
    let mut n = Net::new(&example());
    let from_out = |n: &Net, mut f: Vec<u8>| {
        n.addressed_from_outside(&mut f);
        f
    };
    let ping = from_out(
        &n,
        icmp_echo_frame(GW_MAC, [0; 6], REMOTE, FLOATING, true, 5, 1, b"hi"),
    );
    let d = n.send("edge/uplink", &ping);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm1".into(), REMOTE, VM1, 5, 0),
        "icmp allowed"
    );
    let ssh = from_out(
        &n,
        tcp_frame(GW_MAC, [0; 6], REMOTE, FLOATING, 50000, 22, 0x02),
    );
    let d = n.send("edge/uplink", &ssh);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm1".into(), REMOTE, VM1, 50000, 22),
        "tcp/22 allowed"
    );
    let web = from_out(
        &n,
        tcp_frame(GW_MAC, [0; 6], REMOTE, FLOATING, 50000, 80, 0x02),
    );
    let d = n.send("edge/uplink", &web);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::FilterDrop),
        "tcp/80 is not allowed"
    );
    // vm1 leaves as its floating IP, and the replies of its own
    // connections pass the firewall.
    let d = n.send(
        "tenant/vm1",
        &tcp_frame(VM1_MAC, tenant_gw(&n), VM1, REMOTE, 33000, 443, 0x02),
    );
    assert_eq!(
        single(&n, &d),
        ("edge/uplink".into(), FLOATING, REMOTE, 33000, 443)
    );
    let back = from_out(
        &n,
        tcp_frame(GW_MAC, [0; 6], REMOTE, FLOATING, 443, 33000, 0x12),
    );
    let d = n.send("edge/uplink", &back);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm1".into(), REMOTE, VM1, 443, 33000),
        "reply of vm1's connection"
    );
}

#[test]
fn port_forward_keeps_the_offset_and_reverses_replies() {
    let mut n = Net::new(&variant());
    let mut f = tcp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 51000, 8080, 0x02);
    n.addressed_from_outside(&mut f);
    let d = n.send("edge/uplink", &f);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm2".into(), REMOTE, VM2, 51000, 80)
    );
    let reply = tcp_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, 80, 51000, 0x12);
    let d = n.send("tenant/vm2", &reply);
    assert_eq!(
        single(&n, &d),
        ("edge/uplink".into(), SNAT_IP, REMOTE, 8080, 51000),
        "reply from the public port"
    );
    // 8000-8009 → 80-89 on vm3: 8003 → 83.
    let mut f = udp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 52000, 8003, b"x");
    n.addressed_from_outside(&mut f);
    let d = n.send("edge/uplink", &f);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm3".into(), REMOTE, VM3, 52000, 83)
    );
}

#[test]
fn icmp_errors_are_translated_in_outer_and_quoted_headers() {
    let mut n = Net::new(&example());
    // Through SNAT: vm2's datagram, answered by port unreachable.
    let d = n.send(
        "tenant/vm2",
        &udp_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, 5353, 9, b"x"),
    );
    let sent = n.out(&d)[0].1.clone();
    let mut err = ethernet_ipv4(
        GW_MAC,
        [0; 6],
        &icmp_error(REMOTE, 3, 3, 0, &sent[ETH_HLEN..]),
    );
    n.addressed_from_outside(&mut err);
    let d = n.send("edge/uplink", &err);
    let (port, src, dst, kind, code) = single(&n, &d);
    assert_eq!(
        (port.as_str(), src, dst, kind, code),
        ("tenant/vm2", REMOTE, VM2, 3, 3)
    );
    let out = &n.out(&d)[0].1;
    let h = packet::parse(out).unwrap();
    let L3::Ipv4(ip, _) = h.l3 else { panic!() };
    let q = packet::icmp_quote(out, &ip).expect("quoted packet");
    assert_eq!(
        (q.src, q.sport, q.dst, q.dport),
        (VM2, 5353, REMOTE, 9),
        "the quoted packet is vm2's own again"
    );
    assert_eq!(
        checksum::ipv4_header(&out[q.offset..q.offset + 20]),
        0,
        "quoted IPv4 checksum fixed"
    );
    assert!(
        d.install.is_none(),
        "errors are translated in userspace every time"
    );

    // Through DNAT (the floating IP): the quoted source becomes vm1 again.
    let d = n.send(
        "tenant/vm1",
        &udp_frame(VM1_MAC, tenant_gw(&n), VM1, REMOTE, 6000, 9, b"x"),
    );
    let sent = n.out(&d)[0].1.clone();
    let mut err = ethernet_ipv4(
        GW_MAC,
        [0; 6],
        &icmp_error(REMOTE, 3, 3, 0, &sent[ETH_HLEN..]),
    );
    n.addressed_from_outside(&mut err);
    let d = n.send("edge/uplink", &err);
    let out = &n.out(&d)[0].1;
    verify_checksums(out);
    let h = packet::parse(out).unwrap();
    let L3::Ipv4(ip, _) = h.l3 else { panic!() };
    assert_eq!(ip.dst, VM1);
    let q = packet::icmp_quote(out, &ip).unwrap();
    assert_eq!((q.src, q.sport), (VM1, 6000));
}

#[test]
fn time_exceeded_from_beyond_the_snat_reaches_the_guest() {
    let mut n = Net::new(&example());
    let mut probe = udp_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, 33434, 33435, b"probe");
    probe[ETH_HLEN + 8] = 2;
    probe[ETH_HLEN + 10] = 0;
    probe[ETH_HLEN + 11] = 0;
    let c = checksum::ipv4_header(&probe[ETH_HLEN..ETH_HLEN + 20]);
    probe[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
    let d = n.send("tenant/vm2", &probe);
    let sent = n.out(&d)[0].1.clone();
    let err = error_from_outside(&n, (11, 0, 0), &sent);
    let d = n.send("edge/uplink", &err);
    let (port, src, dst, kind, _) = single(&n, &d);
    assert_eq!(
        (port.as_str(), src, dst, kind),
        ("tenant/vm2", [192, 0, 2, 1], VM2, 11)
    );
}

#[test]
fn hairpin_to_a_floating_ip_and_a_port_forward() {
    let mut n = Net::new(&example());
    let gw = tenant_gw(&n);
    // vm2 → vm1's floating IP: delivered to vm1 from the router's tenant
    // address, so that the reply comes back through the router.
    let d = n.send(
        "tenant/vm2",
        &tcp_frame(VM2_MAC, gw, VM2, FLOATING, 41000, 22, 0x02),
    );
    let (port, src, dst, sport, dport) = single(&n, &d);
    assert_eq!(
        (port.as_str(), src, dst, dport),
        ("tenant/vm1", [10, 0, 0, 1], VM1, 22)
    );
    let reply = tcp_frame(VM1_MAC, gw, VM1, [10, 0, 0, 1], 22, sport, 0x12);
    let d = n.send("tenant/vm1", &reply);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm2".into(), FLOATING, VM2, 22, 41000),
        "vm2 sees the floating IP answer"
    );

    // vm1 → the port forward (public 192.0.2.10:8080 → vm2:80).
    let d = n.send(
        "tenant/vm1",
        &tcp_frame(VM1_MAC, gw, VM1, SNAT_IP, 42000, 8080, 0x02),
    );
    let (port, src, dst, sport, dport) = single(&n, &d);
    assert_eq!(
        (port.as_str(), src, dst, dport),
        ("tenant/vm2", [10, 0, 0, 1], VM2, 80)
    );
    let reply = tcp_frame(VM2_MAC, gw, VM2, [10, 0, 0, 1], 80, sport, 0x12);
    let d = n.send("tenant/vm2", &reply);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm1".into(), SNAT_IP, VM1, 8080, 42000)
    );

    // A guest reaching its own floating IP.
    let d = n.send(
        "tenant/vm1",
        &tcp_frame(VM1_MAC, gw, VM1, FLOATING, 43000, 22, 0x02),
    );
    let (port, _, dst, sport, _) = single(&n, &d);
    assert_eq!((port.as_str(), dst), ("tenant/vm1", VM1));
    let d = n.send(
        "tenant/vm1",
        &tcp_frame(VM1_MAC, gw, VM1, [10, 0, 0, 1], 22, sport, 0x12),
    );
    assert_eq!(
        single(&n, &d),
        ("tenant/vm1".into(), FLOATING, VM1, 22, 43000)
    );
}

#[test]
fn the_router_answers_arp_for_its_nat_addresses_even_outside_the_subnet() {
    let mut n = Net::new(&variant());
    for ip in [FLOATING, SNAT_IP, [198, 51, 100, 7]] {
        let d = n.send(
            "edge/uplink",
            &arp_frame(ARP_REQUEST, GW_MAC, [192, 0, 2, 1], [0; 6], ip, BROADCAST),
        );
        assert_eq!(d.verdict, Verdict::Answered, "ARP for {ip:?}");
        let up = n.mac("edge/uplink");
        assert_eq!(
            n.out(&d)[0].1,
            arp_frame(ARP_REPLY, up, ip, GW_MAC, [192, 0, 2, 1], GW_MAC)
        );
    }
    // And the SNAT address answers ping itself.
    let mut ping = icmp_echo_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, true, 3, 1, b"");
    n.addressed_from_outside(&mut ping);
    let d = n.send("edge/uplink", &ping);
    assert_eq!(d.verdict, Verdict::Answered);
}

#[test]
fn bindings_are_bounded_and_expire_with_their_connection() {
    let mut n = Net::new(&example());
    n.st.nat = vnet_dataplane::sim::nat::NatTable::with_capacity(1).into();
    let gw = tenant_gw(&n);
    let first = n.send(
        "tenant/vm2",
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 7000, 53, b"a"),
    );
    assert_eq!(first.verdict, Verdict::Forwarded);
    let d = n.send(
        "tenant/vm2",
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 7001, 53, b"b"),
    );
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::NatExhausted),
        "full: refused, never mis-translated"
    );
    let tags =
        n.st.nat
            .expire(n.now + vnet_dataplane::sim::nat::IDLE_NS + 1, |_| false);
    assert_eq!(tags.len(), 1);
    assert!(
        first.install.unwrap().tags.contains(&tags[0]),
        "its flows are invalidated with it"
    );
    let mut reply = udp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 53, 7000, b"r");
    n.addressed_from_outside(&mut reply);
    let d = n.send("edge/uplink", &reply);
    assert!(
        n.out(&d).iter().all(|(p, _)| p != "tenant/vm2"),
        "an expired binding translates nothing"
    );
}

// --- issue 11: NAT is complete --------------------------------------------

/// `frame` (an Ethernet IPv4 frame) with IP id `id`, split into fragments of
/// at most `mtu` bytes of IPv4 each, as Ethernet frames with its MACs.
fn fragmented(frame: &[u8], id: u16, mtu: usize) -> Vec<Vec<u8>> {
    let mut ip = frame[ETH_HLEN..].to_vec();
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    fragment_ipv4(&ip, mtu)
        .unwrap()
        .into_iter()
        .map(|f| {
            let mut e = frame[..ETH_HLEN].to_vec();
            e.extend_from_slice(&f);
            e
        })
        .collect()
}

fn ipv4_of(f: &[u8]) -> packet::Ipv4 {
    let L3::Ipv4(ip, _) = packet::parse(f).unwrap().l3 else {
        panic!("not IPv4")
    };
    ip
}

/// Reassembles fragments (Ethernet frames) as the receiver would: they
/// must share addresses, protocol and id, and cover the datagram exactly.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let first = ipv4_of(&frags[0]);
    let mut data = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        let ip = ipv4_of(f);
        let o = ETH_HLEN;
        assert_eq!(
            checksum::ipv4_header(&f[o..o + ip.header_len]),
            0,
            "fragment {i}: IPv4 header checksum"
        );
        assert_eq!(
            (ip.src, ip.dst, ip.proto, ip.id),
            (first.src, first.dst, first.proto, first.id),
            "fragment {i} belongs to the datagram"
        );
        assert_eq!(
            ip.frag_offset as usize * 8,
            data.len(),
            "fragment {i} in order"
        );
        assert_eq!(ip.more_fragments, i + 1 < frags.len());
        data.extend_from_slice(&f[o + ip.header_len..o + ip.total_len as usize]);
    }
    let mut ip = frags[0][ETH_HLEN..ETH_HLEN + first.header_len].to_vec();
    let total = (ip.len() + data.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6..8].copy_from_slice(&[0, 0]);
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&data);
    let mut whole = frags[0][..ETH_HLEN].to_vec();
    whole.extend_from_slice(&ip);
    verify_checksums(&whole);
    whole
}

/// (src, dst, sport, dport) of a whole UDP/TCP frame.
fn ports_of(f: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let h = packet::parse(f).unwrap();
    let L3::Ipv4(ip, L4::Ports { src, dst }) = h.l3 else {
        panic!("no ports")
    };
    (ip.src, ip.dst, src, dst)
}

/// Sends every fragment on `port`; each must come out alone on `expect`.
fn send_all(n: &mut Net, port: &str, frags: &[Vec<u8>], expect: &str) -> Vec<Vec<u8>> {
    frags
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let d = n.send(port, f);
            let out = n.out(&d);
            assert_eq!(out.len(), 1, "fragment {i}: {:?} {:?}", d.verdict, d.trace);
            assert_eq!(out[0].0, expect, "fragment {i}");
            out[0].1.clone()
        })
        .collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn every_fragment_of_a_first_datagram_is_translated_and_reassembles() {
    let mut n = Net::new(&variant());
    let gw = tenant_gw(&n);
    // vm3 holds source port 5000 towards the remote, so vm2's is translated:
    // its later fragments must stay consistent with a rewritten first one.
    let d = n.send(
        "tenant/vm3",
        &udp_frame(VM3_MAC, gw, VM3, REMOTE, 5000, 53, b"x"),
    );
    assert_eq!(single(&n, &d).3, 5000);
    let payload = pattern(2000);
    let datagram = udp_frame(VM2_MAC, gw, VM2, REMOTE, 5000, 53, &payload);
    let frags = fragmented(&datagram, 0x4242, 1000);
    assert_eq!(frags.len(), 3);
    let out = send_all(&mut n, "tenant/vm2", &frags, "edge/uplink");
    for (i, (sent, got)) in frags.iter().zip(&out).enumerate().skip(1) {
        let (a, b) = (ipv4_of(sent), ipv4_of(got));
        assert_eq!((b.src, b.dst), (SNAT_IP, REMOTE), "fragment {i} translated");
        assert_eq!(
            &got[ETH_HLEN + b.header_len..],
            &sent[ETH_HLEN + a.header_len..],
            "fragment {i}: only the addresses are rewritten (ports live in the first)"
        );
    }
    let whole = reassemble(&out);
    let (src, dst, sport, dport) = ports_of(&whole);
    assert_eq!((src, dst, dport), (SNAT_IP, REMOTE, 53));
    assert_ne!(sport, 5000, "the first fragment's port was translated");
    assert_eq!(&whole[ETH_HLEN + 28..], &payload[..]);

    // The fragmented answer comes back whole to vm2.
    let mut reply = udp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 53, sport, &payload);
    n.addressed_from_outside(&mut reply);
    let frags = fragmented(&reply, 0x5151, 1000);
    let out = send_all(&mut n, "edge/uplink", &frags, "tenant/vm2");
    let whole = reassemble(&out);
    assert_eq!(ports_of(&whole), (REMOTE, VM2, 53, 5000));
}

#[test]
fn later_fragments_follow_a_port_forward() {
    let mut n = Net::new(&variant());
    let mut f = udp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 52000, 8003, &pattern(1800));
    n.addressed_from_outside(&mut f);
    let frags = fragmented(&f, 7, 800);
    let out = send_all(&mut n, "edge/uplink", &frags, "tenant/vm3");
    let whole = reassemble(&out);
    assert_eq!(ports_of(&whole), (REMOTE, VM3, 52000, 83));
}

#[test]
fn a_later_fragment_without_its_first_is_dropped_at_dynamic_nat_only() {
    let mut n = Net::new(&example());
    let gw = tenant_gw(&n);
    let frags = fragmented(
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 6000, 53, &pattern(1500)),
        9,
        1000,
    );
    let d = n.send("tenant/vm2", &frags[1]);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::FragmentUnknown),
        "never sent with the private source: {:?}",
        d.trace
    );
    // A first fragment is remembered for a few seconds only.
    n.send("tenant/vm2", &frags[0]);
    n.now += vnet_dataplane::sim::fragments::TIMEOUT_NS + 1;
    let d = n.send("tenant/vm2", &frags[1]);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::FragmentUnknown));

    // A static translation (vm1's floating IP) needs no ports.
    let frags = fragmented(
        &udp_frame(VM1_MAC, gw, VM1, REMOTE, 6000, 53, &pattern(1500)),
        10,
        1000,
    );
    let d = n.send("tenant/vm1", &frags[1]);
    let out = n.out(&d);
    assert_eq!(out.len(), 1, "{:?}", d.trace);
    let ip = ipv4_of(&out[0].1);
    assert_eq!((out[0].0.as_str(), ip.src), ("edge/uplink", FLOATING));
}

#[test]
fn the_fragment_table_is_bounded_per_zone() {
    use vnet_dataplane::sim::fragments::FragmentTable;
    let mut n = Net::new(&variant());
    n.st.fragments = FragmentTable::with_limits(2, 1).into();
    let gw = tenant_gw(&n);
    let vm2 = fragmented(
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 5000, 53, &pattern(1500)),
        1,
        1000,
    );
    let vm3 = fragmented(
        &udp_frame(VM3_MAC, gw, VM3, REMOTE, 5000, 53, &pattern(1500)),
        2,
        1000,
    );
    let d = n.send("tenant/vm2", &vm2[0]);
    assert_eq!(d.verdict, Verdict::Forwarded);
    let d = n.send("tenant/vm3", &vm3[0]);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::FragmentTableFull),
        "the tenant bridge holds its share"
    );
    // The uplink is another zone (the router): it still has room.
    let mut reply = udp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 53, 5000, &pattern(1500));
    n.addressed_from_outside(&mut reply);
    let back = fragmented(&reply, 3, 1000);
    let out = send_all(&mut n, "edge/uplink", &back, "tenant/vm2");
    assert_eq!(ports_of(&reassemble(&out)), (REMOTE, VM2, 53, 5000));
    // And the old entry is intact.
    let d = n.send("tenant/vm2", &vm2[1]);
    let (port, src, ..) = (n.out(&d)[0].0.clone(), ipv4_of(&n.out(&d)[0].1).src);
    assert_eq!((port.as_str(), src), ("edge/uplink", SNAT_IP));
    assert_eq!(n.st.fragments.counters.full, 1);
}

/// The quoted packet of the ICMP error `f`, checked: quoted IPv4 header
/// checksum, and the quoted TCP/UDP checksum when the quote is whole.
fn quote_of(f: &[u8]) -> packet::Quote {
    let ip = ipv4_of(f);
    let q = packet::icmp_quote(f, &ip).expect("a quoted packet");
    assert_eq!(
        checksum::ipv4_header(&f[q.offset..q.offset + q.header_len]),
        0,
        "quoted IPv4 checksum"
    );
    let qlen = u16::from_be_bytes([f[q.offset + 2], f[q.offset + 3]]) as usize;
    let end = ETH_HLEN + ip.total_len as usize;
    if q.offset + qlen <= end && q.proto != 1 {
        let seg = &f[q.offset + q.header_len..q.offset + qlen];
        let acc = checksum::pseudo_header(q.src, q.dst, q.proto, seg.len() as u16);
        assert_eq!(
            checksum::finish(checksum::sum(seg, acc)),
            0,
            "quoted L4 checksum"
        );
    }
    q
}

#[test]
fn icmp_errors_from_inside_hosts_leave_translated() {
    let mut n = Net::new(&variant());
    let gw = tenant_gw(&n);
    // Through SNAT, with a translated port: vm2 answers a reply it got
    // with port unreachable.
    n.send(
        "tenant/vm3",
        &udp_frame(VM3_MAC, gw, VM3, REMOTE, 5000, 53, b"x"),
    );
    let d = n.send(
        "tenant/vm2",
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 5000, 53, b"q"),
    );
    let sport = single(&n, &d).3;
    assert_ne!(sport, 5000);
    let mut reply = udp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 53, sport, b"answer");
    n.addressed_from_outside(&mut reply);
    let d = n.send("edge/uplink", &reply);
    let got = n.out(&d)[0].1.clone();
    let err = ethernet_ipv4(gw, VM2_MAC, &icmp_error(VM2, 3, 3, 0, &got[ETH_HLEN..]));
    let d = n.send("tenant/vm2", &err);
    assert_eq!(
        single(&n, &d),
        ("edge/uplink".into(), SNAT_IP, REMOTE, 3, 3),
        "the outer source is the SNAT address"
    );
    let q = quote_of(&n.out(&d)[0].1);
    assert_eq!(
        (q.src, q.sport, q.dst, q.dport),
        (REMOTE, 53, SNAT_IP, sport),
        "the quote is the reply as the remote sent it"
    );
    assert!(d.install.is_none(), "never installed");

    // Through a port forward: vm2 says fragmentation needed about what
    // the remote sent to the public port (path-MTU discovery).
    let mut syn = tcp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 51000, 8080, 0x18);
    n.addressed_from_outside(&mut syn);
    let d = n.send("edge/uplink", &syn);
    let got = n.out(&d)[0].1.clone();
    assert_eq!(ports_of(&got), (REMOTE, VM2, 51000, 80));
    let err = ethernet_ipv4(gw, VM2_MAC, &icmp_error(VM2, 3, 4, 1400, &got[ETH_HLEN..]));
    let d = n.send("tenant/vm2", &err);
    assert_eq!(
        single(&n, &d),
        ("edge/uplink".into(), SNAT_IP, REMOTE, 3, 4)
    );
    let out = &n.out(&d)[0].1;
    let q = quote_of(out);
    assert_eq!(
        (q.src, q.sport, q.dst, q.dport),
        (REMOTE, 51000, SNAT_IP, 8080)
    );
    let icmp = ETH_HLEN + 20;
    assert_eq!(
        &out[icmp + 4..icmp + 8],
        &1400u32.to_be_bytes(),
        "the MTU is kept"
    );

    // Static (the floating IP) still works: vm1 refuses what it got.
    let mut syn = tcp_frame(GW_MAC, [0; 6], REMOTE, FLOATING, 40000, 22, 0x02);
    n.addressed_from_outside(&mut syn);
    let d = n.send("edge/uplink", &syn);
    let got = n.out(&d)[0].1.clone();
    assert_eq!(ports_of(&got), (REMOTE, VM1, 40000, 22));
    let quoted = got[ETH_HLEN..].to_vec();
    let err = ethernet_ipv4(gw, VM1_MAC, &icmp_error(VM1, 3, 3, 0, &quoted));
    let d = n.send("tenant/vm1", &err);
    assert_eq!(
        single(&n, &d),
        ("edge/uplink".into(), FLOATING, REMOTE, 3, 3)
    );
    let q = quote_of(&n.out(&d)[0].1);
    assert_eq!((q.src, q.dst), (REMOTE, FLOATING));
}

#[test]
fn echo_ids_honour_the_snat_port_range() {
    let mut n = Net::new(&example());
    let d = n.send(
        "tenant/vm2",
        &icmp_echo_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, true, 77, 1, b"ping"),
    );
    let (_, src, _, id, _) = single(&n, &d);
    assert_eq!(src, SNAT_IP);
    assert!(
        (1024..=65535).contains(&id),
        "id {id} is inside the SNAT range"
    );
    let mut reply = icmp_echo_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, false, id, 1, b"ping");
    n.addressed_from_outside(&mut reply);
    let d = n.send("edge/uplink", &reply);
    assert_eq!(single(&n, &d), ("tenant/vm2".into(), REMOTE, VM2, 77, 0));
    // An error about the translated request finds vm2's id again.
    let request = icmp_echo_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, true, 77, 2, b"ping");
    let d = n.send("tenant/vm2", &request);
    let sent = n.out(&d)[0].1.clone();
    let err = error_from_outside(&n, (11, 0, 0), &sent);
    let d = n.send("edge/uplink", &err);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm2".into(), [192, 0, 2, 1], VM2, 11, 0)
    );
    let q = quote_of(&n.out(&d)[0].1);
    assert_eq!((q.src, q.sport), (VM2, 77));
}

#[test]
fn snat_never_takes_a_port_a_port_forward_owns() {
    let mut n = Net::new(&variant());
    let gw = tenant_gw(&n);
    // 192.0.2.10 forwards tcp/8080 and udp/8000-8009.
    let d = n.send(
        "tenant/vm2",
        &tcp_frame(VM2_MAC, gw, VM2, REMOTE, 8080, 80, 0x02),
    );
    let (_, src, _, sport, _) = single(&n, &d);
    assert_eq!(src, SNAT_IP);
    assert!(sport != 8080 && sport >= 1024, "tcp/{sport}");
    for p in 8000..=8009 {
        let d = n.send(
            "tenant/vm2",
            &udp_frame(VM2_MAC, gw, VM2, REMOTE, p, 53, b"x"),
        );
        let sport = single(&n, &d).3;
        assert!(!(8000..=8009).contains(&sport), "udp/{p} got {sport}");
    }
    let d = n.send(
        "tenant/vm2",
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 8080, 53, b"x"),
    );
    assert_eq!(single(&n, &d).3, 8080, "udp/8080 is not forwarded: kept");
    // The SNAT'ed connection's reply and the port forward both still work.
    let mut back = tcp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 80, sport, 0x12);
    n.addressed_from_outside(&mut back);
    let d = n.send("edge/uplink", &back);
    assert_eq!(single(&n, &d), ("tenant/vm2".into(), REMOTE, VM2, 80, 8080));
    let mut syn = tcp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 80, 8080, 0x02);
    n.addressed_from_outside(&mut syn);
    let d = n.send("edge/uplink", &syn);
    assert_eq!(single(&n, &d), ("tenant/vm2".into(), REMOTE, VM2, 80, 80));
}

#[test]
fn a_reverse_nat_without_binding_is_not_installed() {
    let mut n = Net::new(&example());
    let gw = tenant_gw(&n);
    // vm2 sends from its forwarded port before any connection came in:
    // the port forward's reverse DNAT has nothing to undo.
    let d = n.send(
        "tenant/vm2",
        &tcp_frame(VM2_MAC, gw, VM2, REMOTE, 80, 51000, 0x12),
    );
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert!(
        d.install.is_none(),
        "installed, the flow would skip the binding that comes next"
    );
    assert!(
        d.trace
            .iter()
            .any(|s| matches!(s, Step::NotInstalled { why } if why.contains("reverse NAT"))),
        "the trace says why: {:?}",
        d.trace
    );
    // The connection that then comes in is answered from the public port.
    let mut syn = tcp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 51000, 8080, 0x02);
    n.addressed_from_outside(&mut syn);
    n.send("edge/uplink", &syn);
    let d = n.send(
        "tenant/vm2",
        &tcp_frame(VM2_MAC, gw, VM2, REMOTE, 80, 51000, 0x12),
    );
    assert_eq!(
        single(&n, &d),
        ("edge/uplink".into(), SNAT_IP, REMOTE, 8080, 51000)
    );
}

/// The example plus a second tenant behind its own router `edge2`, with
/// the same private subnet and its own SNAT address.
fn two_tenants() -> String {
    example()
        .replace(
            "bridges:\n",
            "bridges:\n  tenant2:\n    ports:\n      vm4: {interface: vm4-h}\n      gw: {peer: edge2/tenant}\n",
        )
        .replace(
            "routers:\n",
            "routers:\n  edge2:\n    ports:\n      tenant: {address: 10.0.0.1/24, peer: tenant2/gw}\n      \
             uplink: {address: 192.0.2.3/24, interface: uplink2-h}\n    routes:\n      \
             - {dst: 10.0.0.0/24, port: tenant}\n      - {dst: 192.0.2.0/24, port: uplink}\n      \
             - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}\n",
        )
        .replace(
            "nat:\n",
            "nat:\n  - {router: edge2, type: snat, from: 10.0.0.0/24, to: 192.0.2.20, ports: 1024-65535, port: uplink}\n",
        )
}

#[test]
fn one_tenant_at_its_nat_limit_leaves_the_others_allocating() {
    use vnet_dataplane::sim::nat::NatTable;
    let mut n = Net::new(&two_tenants());
    let up2 = n.mac("edge2/uplink");
    n.send(
        "edge2/uplink",
        &arp_frame(ARP_REPLY, GW_MAC, [192, 0, 2, 1], up2, [192, 0, 2, 3], up2),
    );
    n.st.nat = NatTable::with_limits(100, 2).into();
    let gw = tenant_gw(&n);
    for sport in [7000, 7001] {
        let d = n.send(
            "tenant/vm2",
            &udp_frame(VM2_MAC, gw, VM2, REMOTE, sport, 53, b"a"),
        );
        assert_eq!(d.verdict, Verdict::Forwarded);
    }
    let d = n.send(
        "tenant/vm2",
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 7002, 53, b"a"),
    );
    assert_eq!(d.verdict, Verdict::Dropped(Reason::DeviceNatLimit));
    assert_eq!(n.st.nat.counters.zone_limited, 1);
    // The other tenant (same private address) still gets bindings.
    const VM4_MAC: Mac = [2, 0, 0, 0, 2, 4];
    let gw2 = n.mac("edge2/tenant");
    let d = n.send(
        "tenant2/vm4",
        &udp_frame(VM4_MAC, gw2, VM2, REMOTE, 7002, 53, b"a"),
    );
    assert_eq!(
        single(&n, &d),
        ("edge2/uplink".into(), [192, 0, 2, 20], REMOTE, 7002, 53)
    );
}

#[test]
fn errors_about_a_port_forwards_replies_reach_the_inside_host() {
    let mut n = Net::new(&example());
    let gw = tenant_gw(&n);
    let mut syn = tcp_frame(GW_MAC, [0; 6], REMOTE, SNAT_IP, 51000, 8080, 0x02);
    n.addressed_from_outside(&mut syn);
    n.send("edge/uplink", &syn);
    let d = n.send(
        "tenant/vm2",
        &tcp_frame(VM2_MAC, gw, VM2, REMOTE, 80, 51000, 0x12),
    );
    let sent = n.out(&d)[0].1.clone();
    assert_eq!(ports_of(&sent), (SNAT_IP, REMOTE, 8080, 51000));
    // A link beyond the remote's gateway is smaller: path-MTU discovery
    // must reach vm2 about its own segment.
    let err = error_from_outside(&n, (3, 4, 1280), &sent);
    let d = n.send("edge/uplink", &err);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm2".into(), [192, 0, 2, 1], VM2, 3, 4)
    );
    let q = quote_of(&n.out(&d)[0].1);
    assert_eq!((q.src, q.sport, q.dst, q.dport), (VM2, 80, REMOTE, 51000));
}

#[test]
fn fragments_of_tenants_with_overlapping_addresses_stay_apart() {
    let mut n = Net::new(&two_tenants());
    let up2 = n.mac("edge2/uplink");
    n.send(
        "edge2/uplink",
        &arp_frame(ARP_REPLY, GW_MAC, [192, 0, 2, 1], up2, [192, 0, 2, 3], up2),
    );
    const VM4_MAC: Mac = [2, 0, 0, 0, 2, 4];
    let (gw, gw2) = (tenant_gw(&n), n.mac("edge2/tenant"));
    // Both tenants' guests are 10.0.0.12 and send datagram id 77 to the
    // same remote, from different ports.
    let a = fragmented(
        &udp_frame(VM2_MAC, gw, VM2, REMOTE, 5000, 53, &pattern(1500)),
        77,
        1000,
    );
    let b = fragmented(
        &udp_frame(VM4_MAC, gw2, VM2, REMOTE, 6000, 53, &pattern(1500)),
        77,
        1000,
    );
    let a0 = send_all(&mut n, "tenant/vm2", &a[..1], "edge/uplink");
    let b0 = send_all(&mut n, "tenant2/vm4", &b[..1], "edge2/uplink");
    let a1 = send_all(&mut n, "tenant/vm2", &a[1..], "edge/uplink");
    let b1 = send_all(&mut n, "tenant2/vm4", &b[1..], "edge2/uplink");
    let whole_a = reassemble(&[a0, a1].concat());
    let whole_b = reassemble(&[b0, b1].concat());
    assert_eq!(ports_of(&whole_a), (SNAT_IP, REMOTE, 5000, 53));
    assert_eq!(ports_of(&whole_b), ([192, 0, 2, 20], REMOTE, 6000, 53));
}

#[test]
fn an_icmp_query_dynamic_snat_cannot_bind_is_dropped_not_leaked() {
    let mut n = Net::new(&example());
    let gw = tenant_gw(&n);
    // ICMP timestamp request (type 13): no echo id to bind.
    let mut icmp = vec![13, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(&[0; 12]);
    let c = checksum::finish(checksum::sum(&icmp, 0));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let ip = vnet_dataplane::packet::build::ipv4_packet(VM2, REMOTE, 1, 9, &icmp);
    let frame = vnet_dataplane::packet::build::ethernet_ipv4(gw, VM2_MAC, &ip);
    let d = n.send("tenant/vm2", &frame);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::NatUntranslatable));
    assert!(d.emit.is_empty(), "nothing leaves with the private source");
}

/// CloudStack's recipe (MidoNetElement): post-routing holds the source-NAT
/// `snat` (no condition but the uplink) ahead of `rev_dnat`. The replies of
/// a port-forwarded connection still leave from the public port: a forward
/// rule passes over a reply of a connection the router already translated.
/// A new connection from the same guest is source-NATed as before.
#[test]
fn a_snat_rule_ahead_of_rev_dnat_leaves_port_forward_replies_alone() {
    let yaml = example()
        .split("\nnat:\n")
        .next()
        .unwrap()
        .replace(
            "routers:\n  edge:\n",
            "routers:\n  edge:\n    inbound_filter: pre\n    outbound_filter: post\n",
        )
        + "\nchains:\n  pre:\n\
           \x20   - {action: rev_snat, then: accept, match: {dst: 192.0.2.10/32, in_ports: [edge/uplink]}}\n\
           \x20   - action: dnat\n      to: {ip: 10.0.0.12, ports: 80}\n      then: accept\n\
           \x20     match: {dst: 192.0.2.30/32, protocol: tcp, dst_ports: 8080, in_ports: [edge/uplink]}\n\
           \x20 post:\n\
           \x20   - {action: snat, to: {ip: 192.0.2.10, ports: 1024-65535}, then: accept, \
           match: {out_ports: [edge/uplink]}}\n\
           \x20   - {action: rev_dnat, then: accept}\n";
    let mut n = Net::new(&yaml);
    let forward = [192, 0, 2, 30];
    let mut f = tcp_frame(GW_MAC, [0; 6], REMOTE, forward, 51000, 8080, 0x02);
    n.addressed_from_outside(&mut f);
    let d = n.send("edge/uplink", &f);
    assert_eq!(
        single(&n, &d),
        ("tenant/vm2".into(), REMOTE, VM2, 51000, 80)
    );
    let reply = tcp_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, 80, 51000, 0x12);
    let d = n.send("tenant/vm2", &reply);
    assert_eq!(
        single(&n, &d),
        ("edge/uplink".into(), forward, REMOTE, 8080, 51000),
        "the reply leaves from the forwarded public port, not source-NATed: {:?}",
        d.trace
    );
    assert!(
        d.install.is_some(),
        "the reply is installed as a flow: {:?}",
        d.trace
    );
    // vm2's own connection to the same remote is source-NATed.
    let own = tcp_frame(VM2_MAC, tenant_gw(&n), VM2, REMOTE, 40000, 443, 0x02);
    let d = n.send("tenant/vm2", &own);
    let (port, src, dst, _, dport) = single(&n, &d);
    assert_eq!(
        (port.as_str(), src, dst, dport),
        ("edge/uplink", SNAT_IP, REMOTE, 443)
    );
}

/// Two hosts SNAT to one public address, each deciding alone (the first
/// packet is simulated where it enters): the same connection tuple from
/// vm2 on h1 and vm3 on h2 gets two different public ports, each from a
/// block its host leased, so the replies cannot be mixed up. Without a
/// block of the address, a host has no port to give: the packet is
/// dropped (`nat_exhausted`) and the leaser is asked for one.
#[test]
fn two_hosts_never_give_the_same_public_port() {
    let yaml = variant()
        .replace(
            "version: 1\n",
            "version: 1\nhosts:\n  h1: {tunnel_address: 198.51.100.1}\n  h2: {tunnel_address: 198.51.100.2}\n",
        )
        .replace("vm2: {interface: vm2-h}", "vm2: {interface: vm2-h, host: h1, tunnel_key: 1}")
        .replace("vm3: {interface: vm3-h}", "vm3: {interface: vm3-h, host: h2, tunnel_key: 2}")
        .replace(
            "uplink: {address: 192.0.2.2/24, interface: uplink-h}",
            "uplink: {address: 192.0.2.2/24, interface: uplink-h, host: h2, tunnel_key: 3}",
        );
    let mut ports = Vec::new();
    // h1 leased block 625 (ports 40000..=40063), h2 blocks 16 and 900.
    for (host, port, mac, ip, leased) in [
        ("h1", "tenant/vm2", VM2_MAC, VM2, vec![625u16]),
        ("h2", "tenant/vm3", VM3_MAC, VM3, vec![16, 900]),
    ] {
        let mut n = Net::on_host(&yaml, Some(host));
        let blocks = Arc::new(NatBlocks::new());
        n.snap = n.snap.clone().with_nat_blocks(blocks.clone());
        let gw = tenant_gw(&n);
        // The same source port from both guests, to the same remote.
        let syn = tcp_frame(mac, gw, ip, REMOTE, 40000, 443, 0x02);
        let d = n.send(port, &syn);
        assert!(
            d.emit.is_empty(),
            "{host}: no block, no port: {:?}",
            d.trace
        );
        assert_eq!(d.verdict, Verdict::Dropped(Reason::NatExhausted), "{host}");
        assert!(blocks.take_demand().wanted.contains(&SNAT_IP));
        blocks.set_held(SNAT_IP, leased.iter().copied().collect());
        let d = n.send(port, &syn);
        let (out, src, dst, sport, dport) = single(&n, &d);
        assert_eq!(
            (out.as_str(), src, dst, dport),
            ("edge/uplink", SNAT_IP, REMOTE, 443),
            "{host}: {:?}",
            d.trace
        );
        assert!(
            leased.contains(&(sport / 64)),
            "{host}: port {sport} is not of its blocks {leased:?}"
        );
        assert_eq!(blocks.take_demand().handed[&SNAT_IP], 1, "{host}");
        ports.push(sport);
    }
    assert_ne!(ports[0], ports[1], "two connections on one public port");
    // h1 keeps the guest's port (its block holds it); h2 cannot.
    assert_eq!(ports[0], 40000);
}
