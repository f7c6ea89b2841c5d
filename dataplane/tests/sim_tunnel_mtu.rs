//! The tunnel MTU on packet bytes (`sim::tunnel_mtu`): what host h1 decides
//! for a packet towards a port on host h2 that does not fit the VXLAN
//! tunnel (underlay MTU 1500 less 50: inner IPv4 packets of 1450 bytes),
//! bridged and routed, with and without DF, exactly fitting and one byte
//! over; and that ports on h1 itself see no change.
mod common;

use common::Bench;
use vnet_common::Reason;
use vnet_dataplane::packet::build::{icmp_echo_frame, udp_frame};
use vnet_dataplane::packet::{self, checksum, Mac, ETH_HLEN};
use vnet_dataplane::sim::{Decision, Snapshot, Step, Verdict};

const TOPOLOGY: &str = r#"
version: 1
hosts:
  h1: {tunnel_address: 192.0.2.1}
  h2: {tunnel_address: 192.0.2.2}
bridges:
  tenant:
    ports:
      vm1: {interface: vm1-h, host: h1, tunnel_key: 1, addresses: ["02:00:00:00:00:01 10.0.0.1"]}
      vm2: {interface: vm2-h, host: h2, tunnel_key: 2, addresses: ["02:00:00:00:00:02 10.0.0.2"]}
      vm3: {interface: vm3-h, host: h1, tunnel_key: 3, addresses: ["02:00:00:00:00:03 10.0.0.3"]}
      tagged: {interface: vm6-h, host: h2, tunnel_key: 6, vlan: 6, addresses: ["02:00:00:00:00:06 10.0.0.6"]}
      gw: {peer: r1/tenant}
  far:
    ports:
      vm4: {interface: vm4-h, host: h2, tunnel_key: 4, addresses: ["02:00:00:00:00:04 10.0.1.4"]}
      vm5: {interface: vm5-h, host: h1, tunnel_key: 5, addresses: ["02:00:00:00:00:05 10.0.1.5"]}
      gw: {peer: r1/far}
routers:
  r1:
    ports:
      tenant: {address: 10.0.0.254/24, peer: tenant/gw}
      far: {address: 10.0.1.254/24, peer: far/gw}
    routes:
      - {dst: 10.0.0.0/24, port: tenant}
      - {dst: 10.0.1.0/24, port: far}
"#;

/// The inner MTU of a 1500-byte underlay.
const TUNNEL_MTU: u16 = 1450;

const VM1_MAC: Mac = [2, 0, 0, 0, 0, 1];
const VM2_MAC: Mac = [2, 0, 0, 0, 0, 2];
const VM3_MAC: Mac = [2, 0, 0, 0, 0, 3];
const VM6_MAC: Mac = [2, 0, 0, 0, 0, 6];
const UNKNOWN_MAC: Mac = [2, 0, 0, 0, 0, 0x77];
const VM1: [u8; 4] = [10, 0, 0, 1];
const VM2: [u8; 4] = [10, 0, 0, 2];
const VM3: [u8; 4] = [10, 0, 0, 3];
const VM6: [u8; 4] = [10, 0, 0, 6];
const VM4: [u8; 4] = [10, 0, 1, 4];
const VM5: [u8; 4] = [10, 0, 1, 5];
const R1_TENANT: [u8; 4] = [10, 0, 0, 254];

/// The topology as h1 runs it, with tunnels of `TUNNEL_MTU` (what vnetd's
/// `Placement::compile` makes of it).
fn on_h1() -> Bench {
    let mut b = Bench::new(TOPOLOGY);
    b.snap = compiled().with_tunnel_mtu(TUNNEL_MTU);
    b
}

/// The same without tunnels (a vnetd without `--tunnel-address`).
fn on_h1_without_tunnels() -> Bench {
    let mut b = Bench::new(TOPOLOGY);
    b.snap = compiled();
    b
}

fn compiled() -> Snapshot {
    let topo = vnet_model::load_str(TOPOLOGY).expect("test topology is valid");
    Snapshot::compile(&topo, 1).placed_on(Some("h1"))
}

/// A UDP datagram from vm1 of `total` IPv4 bytes, DF set or not.
fn udp(dst_mac: Mac, dst: [u8; 4], total: usize, df: bool) -> Vec<u8> {
    let mut f = udp_frame(
        VM1_MAC,
        dst_mac,
        VM1,
        dst,
        40000,
        5001,
        &vec![0x5a; total - 28],
    );
    assert_eq!(f[ETH_HLEN + 6] & 0x40, 0x40, "the builder sets DF");
    if !df {
        f[ETH_HLEN + 6] = 0;
        fix_ip_checksum(&mut f);
    }
    assert_eq!(f.len(), ETH_HLEN + total);
    f
}

/// `ping -M do -s 1472`: an echo request of 1500 IPv4 bytes with DF.
fn big_ping(dst_mac: Mac, dst: [u8; 4]) -> Vec<u8> {
    let f = icmp_echo_frame(VM1_MAC, dst_mac, VM1, dst, true, 0x4242, 1, &[0x61; 1472]);
    assert_eq!(f.len(), ETH_HLEN + 1500);
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[ETH_HLEN + 10] = 0;
    f[ETH_HLEN + 11] = 0;
    let hl = (f[ETH_HLEN] & 0x0f) as usize * 4;
    let c = checksum::ipv4_header(&f[ETH_HLEN..ETH_HLEN + hl]);
    f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Checks that `frame` is an ICMP "fragmentation needed" to vm1 from
/// `src_mac`/`src` with next-hop MTU `mtu`, quoting `original` (a frame),
/// both checksums right.
fn assert_frag_needed(frame: &[u8], src_mac: Mac, src: [u8; 4], mtu: u16, original: &[u8]) {
    assert_eq!(frame[0..6], VM1_MAC, "to the sender's MAC");
    assert_eq!(frame[6..12], src_mac, "from");
    assert_eq!(be16(frame, 12), 0x0800, "IPv4");
    let ip = &frame[ETH_HLEN..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    assert_eq!(
        checksum::ipv4_header(&ip[..header_len]),
        0,
        "IPv4 header checksum"
    );
    assert_eq!(ip[9], 1, "protocol ICMP");
    assert_eq!(ip[12..16], src, "source address");
    assert_eq!(ip[16..20], VM1, "to the sender's address");
    let total = usize::from(be16(ip, 2));
    assert_eq!(total, ip.len(), "total length is the frame's");
    let icmp = &ip[header_len..total];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "type 3 code 4");
    assert_eq!(checksum::finish(checksum::sum(icmp, 0)), 0, "ICMP checksum");
    assert_eq!(be16(icmp, 4), 0, "unused");
    assert_eq!(be16(icmp, 6), mtu, "next-hop MTU");
    // The packet as its sender sent it: header and the first bytes of its
    // payload (as much as fits 576 bytes, at least the 8 PMTUD needs).
    let sent = &original[ETH_HLEN..];
    let quote = &icmp[8..];
    assert!(quote.len() >= 28, "quotes the header and 8 bytes");
    assert_eq!(quote, &sent[..quote.len()], "quotes the packet as sent");
}

/// The one frame the decision emitted, on port `port`.
fn only_emit<'d>(b: &Bench, d: &'d Decision, port: &str) -> &'d [u8] {
    assert_eq!(b.emitted_to(d), [port], "emitted to");
    &d.emit[0].frame
}

/// The IPv4 packets `d` emitted to `port`, reassembled: (the payload in
/// order, each fragment's IPv4 header fields).
fn reassemble(b: &Bench, d: &Decision, port: &str) -> (Vec<u8>, Vec<packet::Ipv4>) {
    let mut data = Vec::new();
    let mut headers = Vec::new();
    for e in &d.emit {
        assert_eq!(b.snap.ports[e.port].name, port, "every fragment to {port}");
        let h = packet::parse(&e.frame).expect("fragments parse");
        let packet::L3::Ipv4(ip, _) = h.l3 else {
            panic!("not IPv4")
        };
        let hl = ip.header_len;
        assert_eq!(
            checksum::ipv4_header(&e.frame[ip.offset..ip.offset + hl]),
            0,
            "fragment header checksum"
        );
        assert_eq!(
            usize::from(ip.frag_offset) * 8,
            data.len(),
            "offsets follow"
        );
        data.extend_from_slice(&e.frame[ip.offset + hl..ip.offset + usize::from(ip.total_len)]);
        headers.push(ip);
    }
    (data, headers)
}

// --- bridged: vm1 (h1) to vm2 (h2) on one bridge --------------------------

/// The case of the issue: `ping -M do -s 1472` to a guest on another host
/// gets "Frag needed and DF set (mtu = 1450)". On a bridge no address is
/// ours: it comes from the destination, as Linux's VXLAN device sends it.
#[test]
fn bridged_ping_with_df_over_the_tunnel_gets_frag_needed_from_the_destination() {
    let mut b = on_h1();
    let ping = big_ping(VM2_MAC, VM2);
    let d = b.send("tenant/vm1", &ping);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::TunnelFragmentationNeeded)
    );
    assert!(d.install.is_none(), "every such packet is answered");
    let icmp = only_emit(&b, &d, "tenant/vm1");
    assert_frag_needed(icmp, VM2_MAC, VM2, TUNNEL_MTU, &ping);
    assert!(d.trace.contains(&Step::Icmp { kind: 3, code: 4 }));
}

#[test]
fn bridged_one_byte_over_with_df_is_answered() {
    let mut b = on_h1();
    let frame = udp(VM2_MAC, VM2, 1451, true);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::TunnelFragmentationNeeded)
    );
    assert_frag_needed(
        only_emit(&b, &d, "tenant/vm1"),
        VM2_MAC,
        VM2,
        TUNNEL_MTU,
        &frame,
    );
}

/// A packet of exactly the tunnel MTU goes through unchanged, installed
/// with the tunnel MTU as its flow's `mtu`: the kernel sends a later, bigger
/// packet of the flow to userspace, to be answered as above.
#[test]
fn bridged_exactly_fitting_is_forwarded_and_its_flow_carries_the_tunnel_mtu() {
    let mut b = on_h1();
    let frame = udp(VM2_MAC, VM2, 1450, true);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert_eq!(only_emit(&b, &d, "tenant/vm2"), &frame[..], "unchanged");
    let flow = d.install.expect("installed");
    assert_eq!(flow.output, Some(b.port("tenant/vm2")));
    assert_eq!(flow.actions.mtu, TUNNEL_MTU);

    // The next packet of that flow, one byte bigger, is what the kernel
    // hands up: the same simulation answers it.
    let d = b.send("tenant/vm1", &udp(VM2_MAC, VM2, 1451, true));
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::TunnelFragmentationNeeded)
    );
}

#[test]
fn bridged_without_df_over_the_tunnel_is_fragmented() {
    let mut b = on_h1();
    let frame = udp(VM2_MAC, VM2, 1451, false);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert!(d.install.is_none(), "size-dependent: not installed");
    assert!(d.trace.contains(&Step::Fragmented { count: 2 }));
    let (data, ips) = reassemble(&b, &d, "tenant/vm2");
    assert_eq!(ips.len(), 2);
    assert_eq!(ips[0].total_len, 20 + 1424, "a multiple of 8 that fits");
    assert_eq!(ips[1].total_len, 20 + 7);
    assert!(ips[0].more_fragments && !ips[1].more_fragments);
    assert!(ips
        .iter()
        .all(|ip| ip.src == VM1 && ip.dst == VM2 && ip.ttl == 64));
    assert_eq!(data, frame[ETH_HLEN + 20..], "the whole datagram");

    // 3000 bytes: three fragments, none over the tunnel MTU.
    let frame = udp(VM2_MAC, VM2, 3000, false);
    let d = b.send("tenant/vm1", &frame);
    let (data, ips) = reassemble(&b, &d, "tenant/vm2");
    assert_eq!(ips.len(), 3);
    assert!(ips.iter().all(|ip| ip.total_len <= TUNNEL_MTU));
    assert_eq!(data, frame[ETH_HLEN + 20..]);
}

/// A port on another host with a VLAN: its frames cross the tunnel tagged,
/// so 4 bytes less fit.
#[test]
fn a_tagged_remote_port_has_room_for_its_tag() {
    let mut b = on_h1();
    let d = b.send("tenant/vm1", &udp(VM6_MAC, VM6, 1446, true));
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert_eq!(b.emitted_to(&d), ["tenant/tagged"]);
    let frame = udp(VM6_MAC, VM6, 1447, true);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::TunnelFragmentationNeeded)
    );
    assert_frag_needed(only_emit(&b, &d, "tenant/vm1"), VM6_MAC, VM6, 1446, &frame);
}

/// An unknown destination floods: the copies to ports on h1 go, those to
/// the two ports on h2 do not fit, and the sender gets one answer, not one
/// per remote port (with the room of the first copy that did not fit: the
/// tagged port's, in name order; a packet that then fits it fits both).
#[test]
fn a_flood_answers_once_and_still_reaches_local_ports() {
    let mut b = on_h1();
    let frame = udp(UNKNOWN_MAC, [10, 0, 0, 77], 1451, true);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(d.verdict, Verdict::Flooded);
    assert_eq!(b.emitted_to(&d), ["tenant/vm1", "tenant/vm3"]);
    let icmp = d
        .emit
        .iter()
        .find(|e| e.port == b.port("tenant/vm1"))
        .unwrap();
    assert_frag_needed(&icmp.frame, UNKNOWN_MAC, [10, 0, 0, 77], 1446, &frame);
    let copy = d
        .emit
        .iter()
        .find(|e| e.port == b.port("tenant/vm3"))
        .unwrap();
    assert_eq!(copy.frame, frame, "the local copy unchanged");

    // 1446 bytes fit both: every copy goes.
    let d = b.send("tenant/vm1", &udp(UNKNOWN_MAC, [10, 0, 0, 77], 1446, true));
    assert_eq!(d.verdict, Verdict::Flooded);
    assert_eq!(
        b.emitted_to(&d),
        ["tenant/tagged", "tenant/vm2", "tenant/vm3"]
    );
}

/// Nothing answers an ICMP error: one that does not fit is dropped, counted.
#[test]
fn an_icmp_error_over_the_tunnel_is_dropped_unanswered() {
    let mut b = on_h1();
    let mut frame = icmp_echo_frame(VM1_MAC, VM2_MAC, VM1, VM2, true, 1, 1, &[0; 1472]);
    // Type 3 code 3 (port unreachable), its checksum made right again.
    let l4 = ETH_HLEN + 20;
    frame[l4] = 3;
    frame[l4 + 1] = 3;
    frame[l4 + 2] = 0;
    frame[l4 + 3] = 0;
    let c = checksum::finish(checksum::sum(&frame[l4..], 0));
    frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::TunnelFragmentationNeeded)
    );
    assert!(d.emit.is_empty(), "no ICMP about an ICMP error");
}

/// What is not IPv4 cannot be fragmented on the way: dropped, counted,
/// rather than refused by the socket.
#[test]
fn non_ipv4_over_the_tunnel_is_dropped_counted() {
    let mut b = on_h1();
    let mut frame = Vec::new();
    frame.extend_from_slice(&VM2_MAC);
    frame.extend_from_slice(&VM1_MAC);
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    frame.resize(ETH_HLEN + 1451, 0x60);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::TunnelTooBig));
    assert!(d.emit.is_empty());
    frame.truncate(ETH_HLEN + 1450);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert_eq!(b.emitted_to(&d), ["tenant/vm2"]);
}

// --- routed: vm1 (h1) through r1 to vm4 (h2) ------------------------------

/// Through a router the answer comes from the router port the sender uses
/// as its gateway, as the router's own MTU errors do, quoting the packet as
/// the sender sent it (TTL not yet decremented).
#[test]
fn routed_ping_with_df_over_the_tunnel_gets_frag_needed_from_the_gateway() {
    let mut b = on_h1();
    let gw = b.mac("r1/tenant");
    let ping = big_ping(gw, VM4);
    let d = b.send("tenant/vm1", &ping);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::TunnelFragmentationNeeded)
    );
    assert!(d.install.is_none());
    assert_frag_needed(
        only_emit(&b, &d, "tenant/vm1"),
        gw,
        R1_TENANT,
        TUNNEL_MTU,
        &ping,
    );
}

#[test]
fn routed_exactly_fitting_and_one_byte_over() {
    let mut b = on_h1();
    let gw = b.mac("r1/tenant");
    let d = b.send("tenant/vm1", &udp(gw, VM4, 1450, true));
    assert_eq!(d.verdict, Verdict::Forwarded);
    let out = only_emit(&b, &d, "far/vm4");
    assert_eq!(out[ETH_HLEN + 8], 63, "routed: TTL - 1");
    assert_eq!(be16(out, ETH_HLEN + 2), 1450);
    let flow = d.install.expect("installed");
    assert_eq!(flow.actions.mtu, TUNNEL_MTU, "the smaller of 1500 and 1450");

    let frame = udp(gw, VM4, 1451, true);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::TunnelFragmentationNeeded)
    );
    assert_frag_needed(
        only_emit(&b, &d, "tenant/vm1"),
        gw,
        R1_TENANT,
        TUNNEL_MTU,
        &frame,
    );
}

#[test]
fn routed_without_df_over_the_tunnel_is_fragmented_after_the_router() {
    let mut b = on_h1();
    let gw = b.mac("r1/tenant");
    let far = b.mac("r1/far");
    let frame = udp(gw, VM4, 1480, false);
    let d = b.send("tenant/vm1", &frame);
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert!(d.install.is_none());
    let (data, ips) = reassemble(&b, &d, "far/vm4");
    assert_eq!(ips.len(), 2);
    assert!(ips
        .iter()
        .all(|ip| ip.total_len <= TUNNEL_MTU && ip.ttl == 63));
    assert_eq!(data, frame[ETH_HLEN + 20..]);
    assert!(d.emit.iter().all(|e| e.frame[6..12] == far), "from r1/far");

    // Over the router port's MTU too: fragmented by the router for its
    // 1500, then each fragment again for the tunnel.
    let frame = udp(gw, VM4, 2000, false);
    let d = b.send("tenant/vm1", &frame);
    let (data, ips) = reassemble(&b, &d, "far/vm4");
    assert_eq!(ips.len(), 3);
    assert!(ips
        .iter()
        .all(|ip| ip.total_len <= TUNNEL_MTU && ip.ttl == 63));
    assert_eq!(data, frame[ETH_HLEN + 20..]);
}

// --- ports on this host ----------------------------------------------------

/// Ports on h1 itself are not behind the tunnel: a 1500-byte DF packet to
/// them is forwarded exactly as it is without tunnels, bridged and routed.
#[test]
fn local_ports_are_untouched() {
    let gw = on_h1().mac("r1/tenant");
    let cases = [
        ("bridged", big_ping(VM3_MAC, VM3), "tenant/vm3"),
        ("routed", big_ping(gw, VM5), "far/vm5"),
    ];
    for (what, frame, to) in cases {
        let mut with = on_h1();
        let mut without = on_h1_without_tunnels();
        let d = with.send("tenant/vm1", &frame);
        assert_eq!(d.verdict, Verdict::Forwarded, "{what}");
        assert_eq!(with.emitted_to(&d), [to], "{what}");
        assert_eq!(
            d,
            without.send("tenant/vm1", &frame),
            "{what}: as without tunnels"
        );
    }
    // The bridged flow carries no MTU, the routed one the router port's.
    let d = on_h1().send("tenant/vm1", &big_ping(VM3_MAC, VM3));
    assert_eq!(d.install.unwrap().actions.mtu, 0);
    let d = on_h1().send("tenant/vm1", &big_ping(gw, VM5));
    assert_eq!(d.install.unwrap().actions.mtu, 1500);
}

/// Without tunnels (no `--tunnel-address`) nothing is checked here: the
/// runtime has nothing to send with and counts `tunnel_tx_failed`.
#[test]
fn without_tunnels_the_remote_port_is_not_checked() {
    let mut b = on_h1_without_tunnels();
    let d = b.send("tenant/vm1", &big_ping(VM2_MAC, VM2));
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert_eq!(b.emitted_to(&d), ["tenant/vm2"]);
}
