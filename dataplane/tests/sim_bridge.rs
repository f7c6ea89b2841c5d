//! The virtual bridge, on packet bytes: frames in, decisions out.
mod common;

use common::Bench;
use vnet_common::{act, Reason};
use vnet_dataplane::packet::build::{arp_frame, udp_frame, with_vlan};
use vnet_dataplane::packet::{Mac, ARP_REPLY, ARP_REQUEST, BROADCAST};
use vnet_dataplane::sim::{Step, Tag, Verdict};

const TOPOLOGY: &str = r#"
version: 1
bridges:
  tenant:
    mac_table: [{mac: "02:00:00:00:00:99", port: vm3}]
    arp_table: [{ip: 10.0.0.50, mac: "02:00:00:00:00:50"}]
    ports:
      vm1: {interface: vm1-h}
      vm2: {interface: vm2-h}
      vm3: {interface: vm3-h}
      off: {interface: off-h, up: false}
      tagged: {interface: tag-h, vlan: 10}
  other:
    ports:
      a: {interface: oa-h}
      b: {interface: ob-h}
"#;

const M1: Mac = [2, 0, 0, 0, 0, 1];
const M2: Mac = [2, 0, 0, 0, 0, 2];
const M_STATIC: Mac = [2, 0, 0, 0, 0, 0x99];
const IP1: [u8; 4] = [10, 0, 0, 1];
const IP2: [u8; 4] = [10, 0, 0, 2];

fn udp(src: Mac, dst: Mac) -> Vec<u8> {
    udp_frame(src, dst, IP1, IP2, 1000, 2000, b"data")
}

#[test]
fn unknown_unicast_floods_to_every_other_port_that_is_up() {
    let mut b = Bench::new(TOPOLOGY);
    let f = udp(M1, M2);
    let d = b.send("tenant/vm1", &f);
    assert_eq!(d.verdict, Verdict::Flooded);
    assert_eq!(
        b.emitted_to(&d),
        ["tenant/tagged", "tenant/vm2", "tenant/vm3"]
    );
    assert!(d.install.is_none(), "floods are never installed");
    let untagged = d
        .emit
        .iter()
        .find(|e| b.snap.ports[e.port].name == "tenant/vm2")
        .unwrap();
    assert_eq!(untagged.frame, f, "the frame is forwarded unchanged");
    let tagged = d
        .emit
        .iter()
        .find(|e| b.snap.ports[e.port].name == "tenant/tagged")
        .unwrap();
    assert_eq!(
        tagged.frame,
        with_vlan(&f, 10),
        "the access port's VLAN tag is pushed"
    );
}

#[test]
fn broadcast_floods_and_learns_the_source() {
    let mut b = Bench::new(TOPOLOGY);
    let d = b.send(
        "tenant/vm1",
        &arp_frame(ARP_REQUEST, M1, IP1, [0; 6], IP2, BROADCAST),
    );
    assert_eq!(d.verdict, Verdict::Flooded);
    assert!(d.trace.contains(&Step::MacLearned {
        mac: M1,
        port: b.port("tenant/vm1")
    }));
    assert_eq!(b.state.macs.len(), 1);
}

#[test]
fn learned_destination_goes_to_one_port_and_installs_a_flow() {
    let mut b = Bench::new(TOPOLOGY);
    b.send("tenant/vm1", &udp(M1, BROADCAST));
    let f = udp(M2, M1);
    let d = b.send("tenant/vm2", &f);
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert_eq!(b.emitted_to(&d), ["tenant/vm1"]);
    assert_eq!(d.emit[0].frame, f);
    let flow = d.install.expect("a flow for the learned destination");
    assert_eq!(flow.actions.flags, act::OUTPUT);
    assert_eq!(flow.output, Some(b.port("tenant/vm1")));
    let bridge = Tag::device("tenant");
    for tag in [
        Tag::port("tenant/vm1"),
        Tag::port("tenant/vm2"),
        bridge,
        Tag::mac(bridge, &M1),
        Tag::mac(bridge, &M2),
    ] {
        assert!(flow.tags.contains(&tag), "flow is tagged with {tag:?}");
    }
}

#[test]
fn a_mac_moving_to_another_port_invalidates_its_flows() {
    let mut b = Bench::new(TOPOLOGY);
    b.send("tenant/vm1", &udp(M1, BROADCAST));
    let d = b.send("tenant/vm3", &udp(M1, BROADCAST));
    let bridge = Tag::device("tenant");
    assert_eq!(d.invalidate, vec![Tag::mac(bridge, &M1)]);
    assert!(d.trace.contains(&Step::MacMoved {
        mac: M1,
        from: Some(b.port("tenant/vm1")),
        to: b.port("tenant/vm3")
    }));
    let d = b.send("tenant/vm2", &udp(M2, M1));
    assert_eq!(
        b.emitted_to(&d),
        ["tenant/vm3"],
        "frames follow the MAC at once"
    );
}

#[test]
fn static_mac_entries_forward_and_are_not_relearned() {
    let mut b = Bench::new(TOPOLOGY);
    let d = b.send("tenant/vm1", &udp(M1, M_STATIC));
    assert_eq!(b.emitted_to(&d), ["tenant/vm3"]);
    assert!(d.install.is_some());
    // A frame from the static MAC on another port does not move it.
    let d = b.send("tenant/vm2", &udp(M_STATIC, BROADCAST));
    assert!(d.invalidate.is_empty());
    let d = b.send("tenant/vm1", &udp(M1, M_STATIC));
    assert_eq!(b.emitted_to(&d), ["tenant/vm3"]);
}

#[test]
fn arp_requests_for_the_arp_table_are_answered_not_flooded() {
    let mut b = Bench::new(TOPOLOGY);
    let target = [10, 0, 0, 50];
    let d = b.send(
        "tenant/vm1",
        &arp_frame(ARP_REQUEST, M1, IP1, [0; 6], target, BROADCAST),
    );
    assert_eq!(d.verdict, Verdict::Answered);
    assert_eq!(b.emitted_to(&d), ["tenant/vm1"]);
    let table_mac = [2, 0, 0, 0, 0, 0x50];
    assert_eq!(
        d.emit[0].frame,
        arp_frame(ARP_REPLY, table_mac, target, M1, IP1, M1)
    );
    assert!(d.install.is_none());
    // Other addresses are flooded as usual.
    let d = b.send(
        "tenant/vm1",
        &arp_frame(ARP_REQUEST, M1, IP1, [0; 6], IP2, BROADCAST),
    );
    assert_eq!(d.verdict, Verdict::Flooded);
}

#[test]
fn a_port_that_is_down_neither_sends_nor_receives() {
    let mut b = Bench::new(TOPOLOGY);
    let d = b.send("tenant/off", &udp(M1, M2));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::PortDown));
    let flow = d.install.expect("a drop flow");
    assert_eq!(flow.actions.flags, act::DROP);
    assert_eq!(flow.tags, vec![Tag::port("tenant/off")]);
    let d = b.send("tenant/vm1", &udp(M1, BROADCAST));
    assert!(!b.emitted_to(&d).contains(&"tenant/off".to_string()));
}

#[test]
fn vlan_access_port_pops_and_pushes_its_tag() {
    let mut b = Bench::new(TOPOLOGY);
    b.send("tenant/vm1", &udp(M1, BROADCAST));
    let inner = udp(M2, M1);
    let d = b.send("tenant/tagged", &with_vlan(&inner, 10));
    assert_eq!(b.emitted_to(&d), ["tenant/vm1"]);
    assert_eq!(
        d.emit[0].frame, inner,
        "the tag is removed towards an untagged port"
    );
    let flow = d.install.unwrap();
    assert_eq!(flow.actions.flags, act::POP_VLAN | act::OUTPUT);

    let d = b.send("tenant/vm1", &udp(M1, M2));
    assert_eq!(b.emitted_to(&d), ["tenant/tagged"]);
    assert_eq!(d.emit[0].frame, with_vlan(&udp(M1, M2), 10));
    let flow = d.install.unwrap();
    assert_eq!(flow.actions.flags, act::PUSH_VLAN | act::OUTPUT);
    assert_eq!(flow.actions.vlan, 10);
}

#[test]
fn frames_with_the_wrong_vlan_are_dropped() {
    let mut b = Bench::new(TOPOLOGY);
    let d = b.send("tenant/tagged", &udp(M2, M1));
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::VlanMismatch),
        "untagged on an access port"
    );
    let d = b.send("tenant/tagged", &with_vlan(&udp(M2, M1), 11));
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::VlanMismatch),
        "another VID"
    );
    let d = b.send("tenant/vm1", &with_vlan(&udp(M1, M2), 10));
    assert_eq!(
        d.verdict,
        Verdict::Dropped(Reason::VlanMismatch),
        "tagged on an untagged port"
    );
}

#[test]
fn bridges_are_isolated_even_with_the_same_macs() {
    let mut b = Bench::new(TOPOLOGY);
    b.send("tenant/vm1", &udp(M1, BROADCAST));
    let d = b.send("other/b", &udp(M2, M1));
    assert_eq!(
        d.verdict,
        Verdict::Flooded,
        "M1 is unknown on the other bridge"
    );
    assert_eq!(b.emitted_to(&d), ["other/a"]);
}

#[test]
fn frames_to_their_own_segment_are_dropped_in_the_kernel() {
    let mut b = Bench::new(TOPOLOGY);
    b.send("tenant/vm1", &udp(M1, BROADCAST));
    b.send("tenant/vm1", &udp(M2, BROADCAST));
    let d = b.send("tenant/vm1", &udp(M2, M1));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::SameSegment));
    assert_eq!(d.install.unwrap().actions.flags, act::DROP);
}

#[test]
fn link_local_frames_are_not_forwarded() {
    let mut b = Bench::new(TOPOLOGY);
    let stp = udp(M1, [0x01, 0x80, 0xc2, 0, 0, 0]);
    let d = b.send("tenant/vm1", &stp);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::LinkLocalDrop));
    assert!(d.emit.is_empty());
}

#[test]
fn multicast_is_flooded() {
    let mut b = Bench::new(TOPOLOGY);
    let d = b.send("tenant/vm1", &udp(M1, [0x01, 0x00, 0x5e, 0, 0, 1]));
    assert_eq!(d.verdict, Verdict::Flooded);
    assert_eq!(d.emit.len(), 3);
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let mut b = Bench::new(TOPOLOGY);
    let f = udp(M1, M2);
    for len in [0, 5, 13, 20, 33] {
        let d = b.send("tenant/vm1", &f[..len]);
        assert_eq!(
            d.verdict,
            Verdict::Dropped(Reason::Malformed),
            "{len}-byte frame"
        );
        assert!(d.emit.is_empty() && d.install.is_none());
    }
}

#[test]
fn trace_names_every_step() {
    let mut b = Bench::new(TOPOLOGY);
    b.send("tenant/vm1", &udp(M1, BROADCAST));
    let d = b.send("tenant/vm2", &udp(M2, M1));
    let vm1 = b.port("tenant/vm1");
    assert!(matches!(d.trace[0], Step::Ingress { .. }));
    assert!(d.trace.contains(&Step::MacLookup {
        mac: M1,
        port: Some(vm1),
        is_static: false
    }));
    assert_eq!(d.trace.last(), Some(&Step::Egress { port: vm1 }));
}

#[test]
fn a_flood_reaches_every_port_of_a_large_bridge() {
    // Cloud bridges have hundreds of ports; the hop limit counts the depth
    // of one path, not the copies of a flood.
    let mut yaml = String::from("version: 1\nbridges:\n  big:\n    ports:\n");
    for i in 0..100 {
        yaml.push_str(&format!("      p{i}: {{interface: big{i}-h}}\n"));
    }
    let mut b = Bench::new(&yaml);
    let request = arp_frame(ARP_REQUEST, M1, IP1, [0; 6], IP2, BROADCAST);
    let d = b.send("big/p0", &request);
    assert_eq!(d.verdict, Verdict::Flooded);
    let reached = b.emitted_to(&d);
    assert_eq!(reached.len(), 99, "every other port gets the broadcast");
    assert!(!reached.contains(&"big/p0".to_string()));
    assert!(!d.trace.contains(&Step::Drop {
        reason: Reason::HopLimit
    }));
}
