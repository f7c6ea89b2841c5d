//! Tenant safety on packet bytes: port security, ARP claims on the
//! network's addresses, martian and reverse-path checks at routers, and
//! REJECT on a bridge.
mod common;

use common::Bench;
use vnet_common::{act, Reason};
use vnet_dataplane::packet::build::{arp_frame, tcp_frame, udp_frame};
use vnet_dataplane::packet::{self, Mac, ARP_REPLY, ARP_REQUEST, BROADCAST, IPPROTO_ICMP, L3, L4};
use vnet_dataplane::sim::Verdict;

const TOPOLOGY: &str = r#"
version: 1
bridges:
  tenant:
    inbound_filter: refuse
    dhcp:
      - subnet: 10.0.0.0/24
        server: 10.0.0.2
        gateway: 10.0.0.1
        hosts:
          - {mac: "02:00:00:00:01:01", ip: 10.0.0.11}
          - {mac: "02:00:00:00:01:02", ip: 10.0.0.12}
    ports:
      vm1: {interface: vm1-h, addresses: ["02:00:00:00:01:01 10.0.0.11"]}
      vm2: {interface: vm2-h, addresses: ["02:00:00:00:01:02"], allowed_address_pairs: ["10.0.0.100"]}
      vm3: {interface: vm3-h}
      vm4: {interface: vm4-h, addresses: ["02:00:00:00:01:04 10.0.0.14"], port_security: false}
      gw: {peer: edge/tenant}
  outside:
    ports:
      ext1: {interface: ext1-h}
      gw: {peer: edge/uplink}
routers:
  edge:
    ports:
      tenant: {address: 10.0.0.1/24, peer: tenant/gw}
      uplink: {address: 192.0.2.2/24, peer: outside/gw}
    routes:
      - {dst: 10.0.0.0/24, port: tenant}
      - {dst: 192.0.2.0/24, port: uplink}
      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}
chains:
  refuse:
    - {action: reject, match: {protocol: tcp, dst_ports: 80}}
    - {action: reject, match: {protocol: udp, dst_ports: 9999}}
nat:
  - {router: edge, type: floating_ip, public: 192.0.2.50, private: 10.0.0.11, port: uplink}
"#;

const VM1_MAC: Mac = [2, 0, 0, 0, 1, 1];
const VM2_MAC: Mac = [2, 0, 0, 0, 1, 2];
const VM3_MAC: Mac = [2, 0, 0, 0, 1, 3];
const VM4_MAC: Mac = [2, 0, 0, 0, 1, 4];
const EXT_MAC: Mac = [2, 0, 0, 0, 9, 1];
const VM1: [u8; 4] = [10, 0, 0, 11];
const VM3: [u8; 4] = [10, 0, 0, 13];
const GATEWAY: [u8; 4] = [10, 0, 0, 1];
const OUTSIDE: [u8; 4] = [198, 51, 100, 7];

fn bench() -> Bench {
    Bench::new(TOPOLOGY)
}

fn udp(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    udp_frame(src_mac, dst_mac, src, dst, 40000, dport, b"payload")
}

fn gratuitous(sha: Mac, ip: [u8; 4]) -> Vec<u8> {
    arp_frame(ARP_REQUEST, sha, ip, [0; 6], ip, BROADCAST)
}

// --- ARP claims on the network's own addresses (finding 3) ---------------

#[test]
fn a_guest_claiming_the_gateway_address_is_neither_flooded_nor_learned() {
    let mut b = bench();
    for claim in [
        gratuitous(VM3_MAC, GATEWAY),
        arp_frame(ARP_REPLY, VM3_MAC, GATEWAY, VM1_MAC, VM1, VM1_MAC),
        gratuitous(VM3_MAC, [10, 0, 0, 2]), // the DHCP server
    ] {
        let d = b.send("tenant/vm3", &claim);
        assert_eq!(d.verdict, Verdict::Dropped(Reason::ArpClaimsNetworkAddress));
        assert!(d.emit.is_empty(), "no guest hears the claim");
        assert!(d.install.is_none(), "ARP is never installed");
    }
    // The gateway still answers for itself.
    let ask = arp_frame(ARP_REQUEST, VM1_MAC, VM1, [0; 6], GATEWAY, BROADCAST);
    let d = b.send("tenant/vm1", &ask);
    assert_eq!(d.verdict, Verdict::Answered);
    let reply = packet::parse(&d.emit[0].frame).unwrap();
    let L3::Arp(arp) = reply.l3 else {
        panic!("an ARP reply")
    };
    assert_eq!(arp.sha, b.mac("edge/tenant"));
}

#[test]
fn a_guest_claiming_a_floating_ip_of_its_router_is_dropped() {
    let mut b = bench();
    let d = b.send("outside/ext1", &gratuitous(EXT_MAC, [192, 0, 2, 50]));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::ArpClaimsNetworkAddress));
    assert!(d.emit.is_empty());
}

#[test]
fn arp_with_a_broadcast_sender_mac_is_dropped_on_any_port() {
    let mut b = bench();
    let poison = gratuitous(BROADCAST, [10, 0, 0, 33]);
    let d = b.send("tenant/vm3", &poison);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::SpoofedArp));
    assert!(d.emit.is_empty());
}

// --- Port security (finding 4) --------------------------------------------

#[test]
fn a_secured_port_drops_foreign_source_macs_and_installs_the_drop() {
    let mut b = bench();
    let d = b.send("tenant/vm1", &udp(VM3_MAC, BROADCAST, VM1, VM3, 53));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::SpoofedMac));
    assert!(d.emit.is_empty());
    let flow = d
        .install
        .expect("the spoofer's later packets drop in the kernel");
    assert_eq!(flow.actions.flags, act::DROP);
}

#[test]
fn a_secured_port_drops_foreign_source_addresses() {
    let mut b = bench();
    for spoofed in [[10, 0, 0, 12], [10, 0, 0, 99], [203, 0, 113, 1]] {
        let d = b.send("tenant/vm1", &udp(VM1_MAC, VM3_MAC, spoofed, VM3, 53));
        assert_eq!(
            d.verdict,
            Verdict::Dropped(Reason::SpoofedIp),
            "{spoofed:?}"
        );
    }
    let d = b.send("tenant/vm1", &udp(VM1_MAC, VM3_MAC, VM1, VM3, 53));
    assert_eq!(d.verdict, Verdict::Flooded, "its own address goes through");
}

#[test]
fn a_mac_only_address_owns_its_dhcp_host_ip_and_allowed_pairs_add_more() {
    let mut b = bench();
    for (src, ok) in [
        ([10, 0, 0, 12], true),  // the DHCP host entry of its MAC
        ([10, 0, 0, 100], true), // an allowed address pair
        ([10, 0, 0, 11], false), // vm1's
    ] {
        let d = b.send("tenant/vm2", &udp(VM2_MAC, VM3_MAC, src, VM3, 53));
        let spoofed = d.verdict == Verdict::Dropped(Reason::SpoofedIp);
        assert_eq!(!spoofed, ok, "{src:?}: {:?}", d.verdict);
    }
}

#[test]
fn a_dhcp_client_may_send_from_zero_but_nothing_else_may() {
    let mut b = bench();
    let discover = udp_frame(VM1_MAC, BROADCAST, [0; 4], [255; 4], 68, 67, b"x");
    let d = b.send("tenant/vm1", &discover);
    assert_ne!(d.verdict, Verdict::Dropped(Reason::SpoofedIp));
    let other = udp_frame(VM1_MAC, BROADCAST, [0; 4], [255; 4], 68, 53, b"x");
    let d = b.send("tenant/vm1", &other);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::SpoofedIp));
}

#[test]
fn arp_from_a_secured_port_must_carry_its_own_addresses() {
    let mut b = bench();
    let foreign_ip = arp_frame(ARP_REQUEST, VM1_MAC, [10, 0, 0, 12], [0; 6], VM3, BROADCAST);
    assert_eq!(
        b.send("tenant/vm1", &foreign_ip).verdict,
        Verdict::Dropped(Reason::SpoofedArp)
    );
    // Ethernet source owned, ARP sender hardware address not.
    let mut foreign_sha = arp_frame(ARP_REQUEST, VM3_MAC, VM1, [0; 6], VM3, BROADCAST);
    foreign_sha[6..12].copy_from_slice(&VM1_MAC);
    assert_eq!(
        b.send("tenant/vm1", &foreign_sha).verdict,
        Verdict::Dropped(Reason::SpoofedArp)
    );
    // An RFC 5227 probe (sender 0.0.0.0) and a plain request go through.
    let probe = arp_frame(ARP_REQUEST, VM1_MAC, [0; 4], [0; 6], VM1, BROADCAST);
    assert_eq!(b.send("tenant/vm1", &probe).verdict, Verdict::Flooded);
    let ask = arp_frame(ARP_REQUEST, VM1_MAC, VM1, [0; 6], VM3, BROADCAST);
    let d = b.send("tenant/vm1", &ask);
    assert_eq!(d.verdict, Verdict::Flooded);
    assert!(d.install.is_none());
}

#[test]
fn port_security_false_and_ports_without_addresses_are_open() {
    let mut b = bench();
    let d = b.send(
        "tenant/vm4",
        &udp(VM4_MAC, VM3_MAC, [10, 0, 0, 77], VM3, 53),
    );
    assert_eq!(d.verdict, Verdict::Flooded);
    let d = b.send(
        "tenant/vm3",
        &udp([2, 9, 9, 9, 9, 9], VM1_MAC, [10, 0, 0, 78], VM1, 53),
    );
    assert_ne!(d.verdict, Verdict::Dropped(Reason::SpoofedMac));
}

// --- Router hygiene (finding 4) -------------------------------------------

#[test]
fn routers_drop_martian_sources_and_destinations() {
    let mut b = bench();
    let router = b.mac("edge/tenant");
    let sources: [[u8; 4]; 6] = [
        [127, 0, 0, 1],
        [0, 0, 0, 0],
        [224, 0, 0, 5],
        [255, 255, 255, 255],
        [10, 0, 0, 255], // the subnet's broadcast
        GATEWAY,         // posing as the router
    ];
    for src in sources {
        let d = b.send("tenant/vm3", &udp(VM3_MAC, router, src, [8, 8, 8, 8], 53));
        assert_eq!(
            d.verdict,
            Verdict::Dropped(Reason::MartianSource),
            "{src:?}"
        );
        assert!(d.emit.is_empty());
    }
    for dst in [[127, 0, 0, 1], [0, 1, 2, 3], [240, 0, 0, 1]] {
        let d = b.send("tenant/vm3", &udp(VM3_MAC, router, VM3, dst, 53));
        assert_eq!(
            d.verdict,
            Verdict::Dropped(Reason::MartianDestination),
            "{dst:?}"
        );
    }
}

#[test]
fn a_tenant_port_checks_the_reverse_path_strictly() {
    let mut b = bench();
    let router = b.mac("edge/tenant");
    // Another network's address from inside the tenant: never leaves.
    let d = b.send(
        "tenant/vm3",
        &udp(VM3_MAC, router, OUTSIDE, [8, 8, 8, 8], 53),
    );
    assert_eq!(d.verdict, Verdict::Dropped(Reason::ReversePath));
    let flow = d.install.expect("installed: the key holds the source");
    assert_eq!(flow.actions.flags, act::DROP);
    // Its own address goes on towards the uplink.
    let d = b.send("tenant/vm3", &udp(VM3_MAC, router, VM3, [8, 8, 8, 8], 53));
    assert_ne!(d.verdict, Verdict::Dropped(Reason::ReversePath));
}

#[test]
fn an_uplink_is_loose_by_default_and_strict_when_asked() {
    let mut b = bench();
    let router = b.mac("edge/uplink");
    let inbound = udp(EXT_MAC, router, OUTSIDE, VM3, 53);
    assert_ne!(
        b.send("outside/ext1", &inbound).verdict,
        Verdict::Dropped(Reason::ReversePath)
    );
    // A tenant address arriving from outside passes a loose check (a route
    // back exists) but not a strict one.
    let spoofed = udp(EXT_MAC, router, [10, 0, 0, 99], VM3, 53);
    assert_ne!(
        b.send("outside/ext1", &spoofed).verdict,
        Verdict::Dropped(Reason::ReversePath)
    );
    let strict = TOPOLOGY.replace(
        "uplink: {address: 192.0.2.2/24, peer: outside/gw}",
        "uplink: {address: 192.0.2.2/24, peer: outside/gw, reverse_path: strict}",
    );
    let mut b = Bench::new(&strict);
    let router = b.mac("edge/uplink");
    let spoofed = udp(EXT_MAC, router, [10, 0, 0, 99], VM3, 53);
    assert_eq!(
        b.send("outside/ext1", &spoofed).verdict,
        Verdict::Dropped(Reason::ReversePath)
    );
}

// --- REJECT on a bridge ---------------------------------------------------

#[test]
fn reject_on_a_bridge_answers_tcp_with_a_reset_from_the_destination() {
    let mut b = bench();
    let syn = tcp_frame(VM4_MAC, VM3_MAC, [10, 0, 0, 14], VM3, 40000, 80, 0x02);
    let d = b.send("tenant/vm4", &syn);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::FilterReject));
    assert_eq!(b.emitted_to(&d), ["tenant/vm4"]);
    let rst = packet::parse(&d.emit[0].frame).unwrap();
    assert_eq!((rst.src, rst.dst), (VM3_MAC, VM4_MAC));
    let L3::Ipv4(ip, L4::Ports { src, dst }) = rst.l3 else {
        panic!("a TCP reply")
    };
    assert_eq!((ip.src, ip.dst, src, dst), (VM3, [10, 0, 0, 14], 80, 40000));
    let flags = d.emit[0].frame[ip.l4_offset() + 13];
    assert_ne!(flags & 0x04, 0, "RST set");
    assert!(d.install.is_none(), "every rejected packet gets its answer");
}

#[test]
fn reject_on_a_bridge_answers_udp_with_port_unreachable_from_the_destination() {
    let mut b = bench();
    let d = b.send(
        "tenant/vm4",
        &udp(VM4_MAC, VM3_MAC, [10, 0, 0, 14], VM3, 9999),
    );
    assert_eq!(d.verdict, Verdict::Dropped(Reason::FilterReject));
    assert_eq!(b.emitted_to(&d), ["tenant/vm4"]);
    let answer = packet::parse(&d.emit[0].frame).unwrap();
    assert_eq!((answer.src, answer.dst), (VM3_MAC, VM4_MAC));
    let L3::Ipv4(ip, L4::Icmp { kind, code, .. }) = answer.l3 else {
        panic!("ICMP")
    };
    assert_eq!(
        (ip.src, ip.dst, ip.proto),
        (VM3, [10, 0, 0, 14], IPPROTO_ICMP)
    );
    assert_eq!((kind, code), (3, 3));
}

#[test]
fn reject_on_a_bridge_stays_silent_for_broadcasts() {
    let mut b = bench();
    let d = b.send(
        "tenant/vm4",
        &udp(VM4_MAC, BROADCAST, [10, 0, 0, 14], [10, 0, 0, 255], 9999),
    );
    assert_eq!(d.verdict, Verdict::Dropped(Reason::FilterReject));
    assert!(d.emit.is_empty());
}
