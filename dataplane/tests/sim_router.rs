//! The virtual router, on packet bytes: frames in, decisions out.
use vnet_common::{act, Reason};
use vnet_dataplane::packet::build::{arp_frame, icmp_echo_frame, udp_frame};
use vnet_dataplane::packet::{self, checksum, Mac, ARP_REPLY, ARP_REQUEST, BROADCAST, ETH_HLEN};
use vnet_dataplane::sim::{simulate, tick, Decision, PortId, Snapshot, State, Step, Tag, Verdict};

const TOPOLOGY: &str = r#"
version: 1
bridges:
  red:
    ports:
      vm1: {interface: vm1-h}
      gw: {peer: r1/red}
  blue:
    ports:
      vm2: {interface: vm2-h}
      gw: {peer: r1/blue}
  far:
    ports:
      vm3: {interface: vm3-h}
      gw: {peer: r2/far}
routers:
  r1:
    ports:
      red: {address: 10.1.0.1/24, peer: red/gw}
      blue: {address: 10.2.0.1/24, peer: blue/gw, mtu: 1000}
      link: {address: 10.9.0.1/30, peer: r2/link}
      uplink: {address: 192.0.2.2/24, interface: up-h}
    routes:
      - {dst: 10.1.0.0/24, port: red}
      - {dst: 10.2.0.0/24, port: blue}
      - {dst: 10.3.0.0/24, port: link, via: 10.9.0.2}
      - {dst: 10.66.0.0/16, type: blackhole}
      - {dst: 10.77.0.0/16, type: reject}
      - {dst: 192.0.2.0/24, port: uplink}
  r2:
    ports:
      link: {address: 10.9.0.2/30, peer: r1/link}
      far: {address: 10.3.0.1/24, peer: far/gw}
    routes:
      - {dst: 10.3.0.0/24, port: far}
      - {dst: 0.0.0.0/0, port: link, via: 10.9.0.1}
"#;

const VM1_MAC: Mac = [2, 0, 0, 0, 1, 1];
const VM2_MAC: Mac = [2, 0, 0, 0, 1, 2];
const VM3_MAC: Mac = [2, 0, 0, 0, 1, 3];
const OUT_MAC: Mac = [2, 0, 0, 0, 9, 9];
const VM1: [u8; 4] = [10, 1, 0, 10];
const VM2: [u8; 4] = [10, 2, 0, 10];
const VM3: [u8; 4] = [10, 3, 0, 10];

struct Bench {
    snap: Snapshot,
    state: State,
    now: u64,
}

impl Bench {
    fn new() -> Bench {
        let topo = vnet_model::load_str(TOPOLOGY).expect("test topology is valid");
        Bench {
            snap: Snapshot::compile(&topo, 1),
            state: State::default(),
            now: 1,
        }
    }
    fn port(&self, name: &str) -> PortId {
        self.snap.port_by_name(name).expect("port exists")
    }
    fn mac(&self, router_port: &str) -> Mac {
        self.snap.ports[self.port(router_port)]
            .l3
            .expect("a router port")
            .mac
    }
    fn send(&mut self, port: &str, frame: &[u8]) -> Decision {
        self.now += 1_000_000;
        let p = self.port(port);
        simulate(&self.snap, &mut self.state, p, frame, self.now, true)
    }
    /// vm2 answers the router's ARP request for it.
    fn vm2_answers_arp(&mut self) -> Decision {
        let reply = arp_frame(
            ARP_REPLY,
            VM2_MAC,
            VM2,
            self.mac("r1/blue"),
            [10, 2, 0, 1],
            self.mac("r1/blue"),
        );
        self.send("blue/vm2", &reply)
    }
    fn emitted_to(&self, d: &Decision) -> Vec<String> {
        d.emit
            .iter()
            .map(|e| self.snap.ports[e.port].name.clone())
            .collect()
    }
}

fn ping(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    icmp_echo_frame(src_mac, dst_mac, src, dst, true, 77, 1, b"abcdefgh")
}

/// The frame with another TTL (header checksum recomputed).
fn with_ttl(frame: &[u8], ttl: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[ETH_HLEN + 8] = ttl;
    fix_ip_checksum(&mut f);
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[ETH_HLEN + 10] = 0;
    f[ETH_HLEN + 11] = 0;
    let hl = (f[ETH_HLEN] & 0x0f) as usize * 4;
    let c = checksum::ipv4_header(&f[ETH_HLEN..ETH_HLEN + hl]);
    f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
}

/// A UDP datagram of `total` IP bytes, with or without DF.
fn big_udp(total: usize, df: bool, dst: [u8; 4], r1_red: Mac) -> Vec<u8> {
    let mut f = udp_frame(
        VM1_MAC,
        r1_red,
        VM1,
        dst,
        5000,
        6000,
        &vec![0x5a; total - 28],
    );
    if !df {
        f[ETH_HLEN + 6] = 0;
        fix_ip_checksum(&mut f);
    }
    f
}

/// Checks an emitted IPv4 frame: both checksums verify. Returns the IP
/// header fields (src, dst, ttl) and the ICMP type/code if ICMP.
/// (source, destination, TTL, ICMP type and code).
type IpSummary = ([u8; 4], [u8; 4], u8, Option<(u8, u8)>);

fn check_ip(frame: &[u8]) -> IpSummary {
    let h = packet::parse(frame).expect("emitted frames parse");
    let packet::L3::Ipv4(ip, l4) = h.l3 else {
        panic!("not IPv4")
    };
    assert_eq!(
        checksum::ipv4_header(&frame[ETH_HLEN..ETH_HLEN + ip.header_len]),
        0,
        "IPv4 checksum"
    );
    let icmp = match l4 {
        packet::L4::Icmp { kind, code, .. } => {
            let body = &frame[ETH_HLEN + ip.header_len..ETH_HLEN + ip.total_len as usize];
            assert_eq!(checksum::finish(checksum::sum(body, 0)), 0, "ICMP checksum");
            Some((kind, code))
        }
        _ => None,
    };
    (ip.src, ip.dst, ip.ttl, icmp)
}

#[test]
fn the_bridge_answers_arp_for_its_gateway() {
    let mut b = Bench::new();
    let d = b.send(
        "red/vm1",
        &arp_frame(ARP_REQUEST, VM1_MAC, VM1, [0; 6], [10, 1, 0, 1], BROADCAST),
    );
    assert_eq!(d.verdict, Verdict::Answered);
    let gw = b.mac("r1/red");
    assert_eq!(d.emit.len(), 1);
    assert_eq!(
        d.emit[0].frame,
        arp_frame(ARP_REPLY, gw, [10, 1, 0, 1], VM1_MAC, VM1, VM1_MAC)
    );
}

#[test]
fn every_router_address_answers_ping_from_any_side() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    for addr in [[10, 1, 0, 1], [10, 2, 0, 1], [192, 0, 2, 2], [10, 9, 0, 1]] {
        let d = b.send("red/vm1", &ping(VM1_MAC, gw, VM1, addr));
        assert_eq!(d.verdict, Verdict::Answered, "ping {addr:?}");
        assert!(d.install.is_none(), "replies of the router are never flows");
        assert_eq!(b.emitted_to(&d), ["red/vm1"]);
        let (src, dst, _, icmp) = check_ip(&d.emit[0].frame);
        assert_eq!((src, dst, icmp), (addr, VM1, Some((0, 0))));
        assert_eq!(&d.emit[0].frame[0..12], [VM1_MAC, gw].concat().as_slice());
    }
}

#[test]
fn ttl_one_to_the_router_itself_is_still_answered() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let d = b.send(
        "red/vm1",
        &with_ttl(&ping(VM1_MAC, gw, VM1, [10, 2, 0, 1]), 1),
    );
    assert_eq!(d.verdict, Verdict::Answered);
}

#[test]
fn routed_traffic_waits_for_arp_then_flows_with_one_flow() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let first = ping(VM1_MAC, gw, VM1, VM2);
    let d = b.send("red/vm1", &first);
    assert_eq!(d.verdict, Verdict::Consumed, "queued until vm2 answers ARP");
    assert!(d.install.is_none());
    let blue = b.mac("r1/blue");
    assert_eq!(
        b.emitted_to(&d),
        ["blue/vm2"],
        "the ARP request is flooded on blue"
    );
    assert_eq!(
        d.emit[0].frame,
        arp_frame(ARP_REQUEST, blue, [10, 2, 0, 1], [0; 6], VM2, BROADCAST)
    );

    let d = b.vm2_answers_arp();
    assert_eq!(
        d.released,
        vec![(b.port("red/vm1"), first.clone())],
        "the queued ping is released"
    );

    let d = b.send("red/vm1", &first);
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert_eq!(b.emitted_to(&d), ["blue/vm2"]);
    let out = &d.emit[0].frame;
    assert_eq!(
        &out[0..12],
        [VM2_MAC, blue].concat().as_slice(),
        "next-hop MACs"
    );
    let (src, dst, ttl, _) = check_ip(out);
    assert_eq!(
        (src, dst, ttl),
        (VM1, VM2, 63),
        "TTL decremented once, never by the bridges"
    );

    let flow = d.install.expect("routed traffic is installed");
    let a = flow.actions;
    assert_eq!(
        a.flags,
        act::SET_ETH_SRC | act::SET_ETH_DST | act::DEC_TTL | act::OUTPUT
    );
    assert_eq!(
        (a.eth_src, a.eth_dst, a.ttl_dec, a.mtu),
        (blue, VM2_MAC, 1, 1000)
    );
    assert_eq!(flow.output, Some(b.port("blue/vm2")));
    let r1 = Tag::device("r1");
    for tag in [
        r1,
        Tag::arp(r1, VM2),
        Tag::device("red"),
        Tag::device("blue"),
        Tag::port("blue/vm2"),
    ] {
        assert!(flow.tags.contains(&tag), "flow tagged {tag:?}");
    }
}

#[test]
fn ttl_expiry_answers_time_exceeded_from_the_ingress_port() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let probe = with_ttl(&udp_frame(VM1_MAC, gw, VM1, VM2, 33434, 33434, b"probe"), 1);
    let d = b.send("red/vm1", &probe);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::TtlExpired));
    assert!(
        d.install.is_none(),
        "TTL is not in the key: never installed"
    );
    let (src, dst, _, icmp) = check_ip(&d.emit[0].frame);
    assert_eq!((src, dst, icmp), ([10, 1, 0, 1], VM1, Some((11, 0))));
    // The quoted packet is the original IP header and what follows.
    assert_eq!(
        &d.emit[0].frame[ETH_HLEN + 28..ETH_HLEN + 28 + 20],
        &probe[ETH_HLEN..ETH_HLEN + 20]
    );
}

#[test]
fn traceroute_through_two_routers_sees_each_router() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let probe = |ttl| {
        with_ttl(
            &udp_frame(VM1_MAC, gw, VM1, VM3, 33434, 33435, b"probe"),
            ttl,
        )
    };
    let d = b.send("red/vm1", &probe(1));
    assert_eq!(
        check_ip(&d.emit[0].frame).0,
        [10, 1, 0, 1],
        "hop 1 is r1's red port"
    );
    let d = b.send("red/vm1", &probe(2));
    // r2's answer comes back through r1, which asks for vm1's MAC first;
    // the answer waits for it instead of being lost.
    assert_eq!(b.emitted_to(&d), ["red/vm1"]);
    assert!(matches!(
        packet::parse(&d.emit[0].frame).unwrap().l3,
        packet::L3::Arp(_)
    ));
    let red = b.mac("r1/red");
    let d = b.send(
        "red/vm1",
        &arp_frame(ARP_REPLY, VM1_MAC, VM1, red, [10, 1, 0, 1], red),
    );
    assert_eq!(b.emitted_to(&d), ["red/vm1"]);
    let (src, dst, _, icmp) = check_ip(&d.emit[0].frame);
    assert_eq!(
        (src, dst, icmp),
        ([10, 9, 0, 2], VM1, Some((11, 0))),
        "hop 2 is r2's link port"
    );
    let d = b.send("red/vm1", &probe(2));
    assert_eq!(
        check_ip(&d.emit[0].frame).0,
        [10, 9, 0, 2],
        "and at once for the next probe"
    );
}

#[test]
fn two_routers_in_a_row_make_one_flow_decrementing_twice() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let p = ping(VM1_MAC, gw, VM1, VM3);
    let d = b.send("red/vm1", &p);
    assert!(
        d.trace.iter().any(|s| matches!(
            s,
            Step::ArpResolved {
                ip: [10, 9, 0, 2],
                ..
            }
        )),
        "router link resolved at once"
    );
    assert_eq!(d.verdict, Verdict::Consumed, "vm3 itself still needs ARP");
    let far = b.mac("r2/far");
    b.send(
        "far/vm3",
        &arp_frame(ARP_REPLY, VM3_MAC, VM3, far, [10, 3, 0, 1], far),
    );
    let d = b.send("red/vm1", &p);
    assert_eq!(b.emitted_to(&d), ["far/vm3"]);
    assert_eq!(check_ip(&d.emit[0].frame).2, 62);
    let a = d.install.expect("installed").actions;
    assert_eq!((a.ttl_dec, a.eth_src, a.eth_dst), (2, far, VM3_MAC));
}

#[test]
fn no_route_answers_net_unreachable() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let d = b.send("red/vm1", &ping(VM1_MAC, gw, VM1, [172, 16, 0, 1]));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::NoRoute));
    let (src, _, _, icmp) = check_ip(&d.emit[0].frame);
    assert_eq!((src, icmp), ([10, 1, 0, 1], Some((3, 0))));
}

#[test]
fn reject_routes_answer_admin_prohibited_and_blackholes_drop_silently() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let d = b.send("red/vm1", &ping(VM1_MAC, gw, VM1, [10, 77, 0, 1]));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::RejectRoute));
    assert_eq!(check_ip(&d.emit[0].frame).3, Some((3, 13)));
    let d = b.send("red/vm1", &ping(VM1_MAC, gw, VM1, [10, 66, 0, 1]));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::Blackhole));
    assert!(d.emit.is_empty());
    assert_eq!(
        d.install
            .expect("blackholes drop in the kernel")
            .actions
            .flags,
        act::DROP
    );
}

#[test]
fn oversize_with_df_gets_fragmentation_needed_with_the_mtu() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    b.send("red/vm1", &ping(VM1_MAC, gw, VM1, VM2));
    b.vm2_answers_arp();
    let d = b.send("red/vm1", &big_udp(1400, true, VM2, gw));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::FragmentationNeeded));
    let out = &d.emit[0].frame;
    assert_eq!(check_ip(out).3, Some((3, 4)));
    let mtu = u16::from_be_bytes([out[ETH_HLEN + 26], out[ETH_HLEN + 27]]);
    assert_eq!(mtu, 1000, "next-hop MTU in the ICMP header");
}

#[test]
fn oversize_without_df_is_fragmented() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    b.send("red/vm1", &ping(VM1_MAC, gw, VM1, VM2));
    b.vm2_answers_arp();
    let original = big_udp(2400, false, VM2, gw);
    let d = b.send("red/vm1", &original);
    assert!(
        d.install.is_none(),
        "size-dependent decisions are not installed"
    );
    assert_eq!(d.emit.len(), 3);
    let mut data = Vec::new();
    let mut expect_offset = 0;
    for (i, e) in d.emit.iter().enumerate() {
        let h = packet::parse(&e.frame).unwrap();
        let packet::L3::Ipv4(ip, _) = h.l3 else {
            panic!()
        };
        assert!(ip.total_len <= 1000);
        assert_eq!(ip.frag_offset as usize * 8, expect_offset);
        assert_eq!(ip.more_fragments, i < 2);
        assert_eq!(check_ip(&e.frame).2, 63);
        let payload = &e.frame[ETH_HLEN + ip.header_len..ETH_HLEN + ip.total_len as usize];
        expect_offset += payload.len();
        data.extend_from_slice(payload);
    }
    assert_eq!(
        data,
        &original[ETH_HLEN + 20..],
        "fragments carry the whole datagram"
    );
}

#[test]
fn arp_from_outside_the_port_subnet_is_ignored() {
    let mut b = Bench::new();
    let up = b.mac("r1/uplink");
    let r1 = Tag::device("r1");
    let spoof = arp_frame(ARP_REPLY, OUT_MAC, [10, 2, 0, 10], up, [192, 0, 2, 2], up);
    let d = b.send("r1/uplink", &spoof);
    assert!(d.trace.contains(&Step::ArpIgnored { ip: [10, 2, 0, 10] }));
    assert_eq!(
        b.state.arp.lookup(r1, [10, 2, 0, 10]),
        None,
        "a spoofed reply must not steer vm2's traffic"
    );
    let genuine = arp_frame(ARP_REPLY, OUT_MAC, [192, 0, 2, 1], up, [192, 0, 2, 2], up);
    b.send("r1/uplink", &genuine);
    assert_eq!(b.state.arp.lookup(r1, [192, 0, 2, 1]), Some(OUT_MAC));
}

#[test]
fn a_changed_arp_entry_invalidates_its_flows() {
    let mut b = Bench::new();
    b.send("red/vm1", &ping(VM1_MAC, b.mac("r1/red"), VM1, VM2));
    b.vm2_answers_arp();
    let blue = b.mac("r1/blue");
    let moved = arp_frame(
        ARP_REPLY,
        [2, 0, 0, 0, 7, 7],
        VM2,
        blue,
        [10, 2, 0, 1],
        blue,
    );
    let d = b.send("blue/vm2", &moved);
    assert_eq!(d.invalidate, vec![Tag::arp(Tag::device("r1"), VM2)]);
}

#[test]
fn the_router_answers_arp_on_an_exterior_port() {
    let mut b = Bench::new();
    let d = b.send(
        "r1/uplink",
        &arp_frame(
            ARP_REQUEST,
            OUT_MAC,
            [192, 0, 2, 1],
            [0; 6],
            [192, 0, 2, 2],
            BROADCAST,
        ),
    );
    assert_eq!(d.verdict, Verdict::Answered);
    assert_eq!(b.emitted_to(&d), ["r1/uplink"]);
    let up = b.mac("r1/uplink");
    assert_eq!(
        d.emit[0].frame,
        arp_frame(
            ARP_REPLY,
            up,
            [192, 0, 2, 2],
            OUT_MAC,
            [192, 0, 2, 1],
            OUT_MAC
        )
    );
}

#[test]
fn unanswered_arp_is_retried_then_gives_host_unreachable() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    b.send("red/vm1", &ping(VM1_MAC, gw, VM1, [10, 2, 0, 99]));
    let mut requests = 0;
    let mut unreachable = None;
    for _ in 0..100 {
        b.now += 100_000_000;
        let d = tick(&b.snap, &mut b.state, b.now);
        requests += d
            .emit
            .iter()
            .filter(|e| packet::parse(&e.frame).is_ok_and(|h| matches!(h.l3, packet::L3::Arp(_))))
            .count();
        if let Some(e) = d
            .emit
            .iter()
            .find(|e| b.snap.ports[e.port].name == "red/vm1")
        {
            unreachable = Some(e.frame.clone());
            break;
        }
    }
    assert_eq!(requests, 2, "two retries after the first request");
    let frame = unreachable.expect("ICMP host unreachable to the sender");
    let (src, dst, _, icmp) = check_ip(&frame);
    assert_eq!((src, dst, icmp), ([10, 1, 0, 1], VM1, Some((3, 1))));
}

#[test]
fn broadcast_and_multicast_destinations_are_not_routed_or_answered() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    for dst in [[10, 1, 0, 255], [224, 0, 0, 5], [255, 255, 255, 255]] {
        let d = b.send(
            "red/vm1",
            &with_ttl(&udp_frame(VM1_MAC, gw, VM1, dst, 1, 2, b""), 1),
        );
        assert_eq!(d.verdict, Verdict::Dropped(Reason::NotRoutable), "{dst:?}");
        assert!(d.emit.is_empty(), "no ICMP for {dst:?}");
    }
}

#[test]
fn udp_to_the_router_gets_port_unreachable() {
    let mut b = Bench::new();
    let gw = b.mac("r1/red");
    let d = b.send(
        "red/vm1",
        &udp_frame(VM1_MAC, gw, VM1, [10, 1, 0, 1], 1000, 53, b"q"),
    );
    assert_eq!(check_ip(&d.emit[0].frame).3, Some((3, 3)));
}
