//! The flow key rule, as a property: an installed decision is reused by the
//! kernel for every packet with the same key, so for every packet field
//! outside the key, a packet that differs only there must get the same
//! decision from the simulation, or it must not have the same key (it gets
//! its own flow, or the kernel sends it up).
//!
//! For each topology and first packet below, the first packet is simulated
//! on a copy of a warmed-up state; if it installs a flow, every mutation of
//! it that keeps the key is simulated on another copy of the same state and
//! must install the same actions and output.
mod common;

use common::Bench;
use vnet_dataplane::packet::build::{icmp_echo_frame, tcp_frame, udp_frame, with_vlan};
use vnet_dataplane::packet::{self, checksum, Mac, ETH_HLEN};
use vnet_dataplane::sim::{simulate, State};

const IFINDEX: u32 = 7;

/// A bridge whose filter reads TOS, with an untagged and a VLAN port, and a
/// router behind it with SNAT and a firewall that reads TCP ports.
const TOPOLOGY: &str = r#"
version: 1
bridges:
  tenant:
    inbound_filter: tos-filter
    ports:
      vm1: {interface: vm1-h}
      vm2: {interface: vm2-h}
      tagged: {interface: tag-h, vlan: 10}
      gw: {peer: edge/tenant}
routers:
  edge:
    ports:
      tenant: {address: 10.0.0.1/24, peer: tenant/gw}
      uplink: {address: 192.0.2.2/24, interface: uplink-h}
    routes:
      - {dst: 10.0.0.0/24, port: tenant}
      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}
chains:
  tos-filter:
    - {action: drop, match: {tos: 16}}
    - {action: drop, match: {protocol: tcp, dst_ports: 23}}
nat:
  - {router: edge, type: snat, from: 10.0.0.0/24, to: 192.0.2.10, ports: 1024-65535, port: uplink}
"#;

const VM1_MAC: Mac = [2, 0, 0, 0, 1, 1];
const VM2_MAC: Mac = [2, 0, 0, 0, 1, 2];
const TAG_MAC: Mac = [2, 0, 0, 0, 1, 3];
const GW_OUT_MAC: Mac = [2, 0, 0, 0, 9, 1];
const VM1: [u8; 4] = [10, 0, 0, 11];
const VM2: [u8; 4] = [10, 0, 0, 12];
const TAGGED: [u8; 4] = [10, 0, 0, 13];
const INTERNET: [u8; 4] = [198, 51, 100, 7];
const UPLINK_GW: [u8; 4] = [192, 0, 2, 1];

/// The bench after every guest and the uplink's gateway have spoken once,
/// so bridges and the router know where everyone is.
fn warmed() -> Bench {
    let mut b = Bench::new(TOPOLOGY);
    let hello = |src_mac, src| udp_frame(src_mac, [0xff; 6], src, [10, 0, 0, 255], 9, 9, b"hi");
    b.send("tenant/vm1", &hello(VM1_MAC, VM1));
    b.send("tenant/vm2", &hello(VM2_MAC, VM2));
    b.send("tenant/tagged", &with_vlan(&hello(TAG_MAC, TAGGED), 10));
    let uplink = b.mac("edge/uplink");
    let reply = packet::build::arp_frame(
        packet::ARP_REPLY,
        GW_OUT_MAC,
        UPLINK_GW,
        uplink,
        [192, 0, 2, 2],
        uplink,
    );
    b.send("edge/uplink", &reply);
    b
}

/// First packets: bridged, to and from a VLAN port, routed with SNAT.
fn first_packets(b: &Bench) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let router = b.mac("edge/tenant");
    vec![
        (
            "udp bridged",
            "tenant/vm1",
            udp_frame(VM1_MAC, VM2_MAC, VM1, VM2, 1000, 53, b"query"),
        ),
        (
            "tcp bridged",
            "tenant/vm1",
            tcp_frame(VM1_MAC, VM2_MAC, VM1, VM2, 1001, 80, 0x02),
        ),
        (
            "tcp to telnet",
            "tenant/vm1",
            tcp_frame(VM1_MAC, VM2_MAC, VM1, VM2, 1002, 23, 0x02),
        ),
        (
            "ping bridged",
            "tenant/vm2",
            icmp_echo_frame(VM2_MAC, VM1_MAC, VM2, VM1, true, 7, 1, b"abcdefgh"),
        ),
        (
            "udp from the VLAN port",
            "tenant/tagged",
            with_vlan(
                &udp_frame(TAG_MAC, VM1_MAC, TAGGED, VM1, 1003, 53, b"q"),
                10,
            ),
        ),
        (
            "udp to the VLAN port",
            "tenant/vm1",
            udp_frame(VM1_MAC, TAG_MAC, VM1, TAGGED, 1004, 53, b"q"),
        ),
        (
            "udp routed",
            "tenant/vm1",
            udp_frame(VM1_MAC, router, VM1, INTERNET, 1005, 53, b"query"),
        ),
        (
            "tcp routed",
            "tenant/vm2",
            tcp_frame(VM2_MAC, router, VM2, INTERNET, 1006, 443, 0x02),
        ),
    ]
}

/// Where the IPv4 header starts (after an 802.1Q tag, if any).
fn l3(frame: &[u8]) -> usize {
    if frame[12..14] == [0x81, 0x00] {
        ETH_HLEN + 4
    } else {
        ETH_HLEN
    }
}

fn fix_ip_checksum(f: &mut [u8]) {
    let at = l3(f);
    let ihl = (f[at] & 0x0f) as usize * 4;
    f[at + 10..at + 12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header(&f[at..at + ihl]);
    f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
}

type Mutation = (&'static str, fn(&[u8]) -> Vec<u8>);

/// Changes to fields a guest controls. Each keeps the packet well formed.
fn mutations() -> Vec<Mutation> {
    fn ip_byte(f: &[u8], off: usize, v: u8) -> Vec<u8> {
        let mut f = f.to_vec();
        let at = l3(&f);
        f[at + off] = v;
        fix_ip_checksum(&mut f);
        f
    }
    vec![
        ("TOS 16", |f| ip_byte(f, 1, 16)),
        ("DSCP 46", |f| ip_byte(f, 1, 46 << 2)),
        ("ECN CE", |f| ip_byte(f, 1, 3)),
        ("IP id", |f| ip_byte(f, 5, 0x99)),
        ("TTL 20", |f| ip_byte(f, 8, 20)),
        ("DF clear", |f| ip_byte(f, 6, 0)),
        ("TCP flags ACK", |f| {
            let mut f = f.to_vec();
            let at = l3(&f) + 20 + 13;
            if f[l3(&f) + 9] == 6 {
                f[at] = 0x10;
            }
            f
        }),
        ("payload", |f| {
            let mut f = f.to_vec();
            let last = f.len() - 1;
            f[last] ^= 0x5a;
            f
        }),
        ("Ethernet padding", |f| {
            let mut f = f.to_vec();
            f.extend_from_slice(&[0; 18]);
            f
        }),
        ("IP options", |f| {
            // Four NOPs: a 24-byte header, the transport header moves.
            let at = l3(f);
            let mut g = f[..at + 20].to_vec();
            g.extend_from_slice(&[1, 1, 1, 1]);
            g.extend_from_slice(&f[at + 20..]);
            g[at] = 0x46;
            let total = u16::from_be_bytes([g[at + 2], g[at + 3]]) + 4;
            g[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
            fix_ip_checksum(&mut g);
            g
        }),
        ("priority tag (VID 0)", |f| {
            if f[12..14] == [0x81, 0x00] {
                return f.to_vec();
            }
            with_vlan(f, 0)
        }),
        ("802.1Q priority bits", |f| {
            let mut f = f.to_vec();
            if f[12..14] == [0x81, 0x00] {
                f[14] |= 0xa0; // PCP 5
            }
            f
        }),
        ("802.1Q DEI bit", |f| {
            let mut f = f.to_vec();
            if f[12..14] == [0x81, 0x00] {
                f[14] |= 0x10;
            }
            f
        }),
    ]
}

#[test]
fn a_field_outside_the_key_never_changes_an_installed_decision() {
    let warm = warmed();
    let mut checked = 0;
    let mut installed = 0;
    for (name, port, frame) in first_packets(&warm) {
        let in_port = warm.port(port);
        let mut state: State = warm.state.clone();
        let d = simulate(&warm.snap, &mut state, in_port, &frame, warm.now + 1, false);
        let Some(flow) = d.install else { continue };
        installed += 1;
        let key = packet::parse(&frame).unwrap().flow_key(IFINDEX);
        assert!(key.is_some(), "{name}: an installed decision has a key");
        for (what, mutate) in mutations() {
            let other = mutate(&frame);
            let Ok(h) = packet::parse(&other) else {
                continue;
            };
            if h.flow_key(IFINDEX) != key {
                continue; // its own flow: the kernel cannot confuse the two
            }
            let mut state = warm.state.clone();
            let d2 = simulate(&warm.snap, &mut state, in_port, &other, warm.now + 1, false);
            let got = d2.install.map(|f| (f.actions, f.output));
            assert_eq!(
                got,
                Some((flow.actions, flow.output)),
                "{name} with {what}: same key, another decision ({:?})",
                d2.verdict
            );
            checked += 1;
        }
    }
    assert!(
        installed >= 6,
        "the first packets install flows ({installed})"
    );
    assert!(
        checked >= 30,
        "mutations that keep the key were checked ({checked})"
    );
}
