//! Rule chains and connection tracking, on packet bytes.
use vnet_common::{act, Reason};
use vnet_dataplane::packet::build::{arp_frame, icmp_echo_frame, tcp_frame, udp_frame, with_vlan};
use vnet_dataplane::packet::{self, checksum, Mac, ARP_REQUEST, BROADCAST, ETH_HLEN};
use vnet_dataplane::sim::{simulate, Decision, Snapshot, State, Step, Tag, Verdict};

const A_MAC: Mac = [2, 0, 0, 0, 0, 1];
const B_MAC: Mac = [2, 0, 0, 0, 0, 2];
const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

/// A bridge `b` with ports a and b (B_MAC is static on b), the given
/// chains, and `filter` as the bridge's inbound filter.
fn bridge_with(chains: &str, filter: &str) -> Snapshot {
    let yaml = format!(
        "version: 1\nip_groups:\n  servers: [10.0.0.2, 10.0.0.9]\nport_groups:\n  pg: {{ports: [b/a]}}\n\
         chains:\n{chains}\nbridges:\n  b:\n    inbound_filter: {filter}\n    \
         mac_table: [{{mac: \"02:00:00:00:00:02\", port: b}}, {{mac: \"02:00:00:00:00:01\", port: a}}]\n    \
         ports:\n      a: {{interface: a-h}}\n      b: {{interface: b-h}}\n"
    );
    let topo = vnet_model::load_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Snapshot::compile(&topo, 1)
}

fn run(snap: &Snapshot, state: &mut State, from: &str, frame: &[u8]) -> Decision {
    let port = snap.port_by_name(from).unwrap();
    simulate(snap, state, port, frame, 1_000, true)
}

fn verdict_of(chains: &str, frame: &[u8]) -> Verdict {
    let snap = bridge_with(chains, "c");
    run(&snap, &mut State::default(), "b/a", frame).verdict
}

const PASS: Verdict = Verdict::Forwarded;
const DROP: Verdict = Verdict::Dropped(Reason::FilterDrop);

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    udp_frame(A_MAC, B_MAC, A, B, sport, dport, b"x")
}

/// "match that drops, then accept": the packet passes iff `cond` misses.
fn drop_if(cond: &str) -> String {
    format!("  c:\n    - {{action: drop, match: {{{cond}}}}}\n")
}

#[test]
fn every_condition_field_matches_and_inverts() {
    let ping = icmp_echo_frame(A_MAC, B_MAC, A, B, true, 9, 1, b"");
    let tos = {
        let mut f = udp(1000, 53);
        f[ETH_HLEN + 1] = 0x10;
        f[ETH_HLEN + 10] = 0;
        f[ETH_HLEN + 11] = 0;
        let c = checksum::ipv4_header(&f[ETH_HLEN..ETH_HLEN + 20]);
        f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
        f
    };
    // (condition, frame, whether it matches)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("in_ports: [b/a]", udp(1, 2), true),
        ("in_ports: [b/b]", udp(1, 2), false),
        ("port_group: pg", udp(1, 2), true),
        ("ethertype: 0x0800", udp(1, 2), true),
        ("ethertype: 0x0806", udp(1, 2), false),
        ("eth_src: \"02:00:00:00:00:01\"", udp(1, 2), true),
        (
            "eth_src: \"02:00:00:00:00:99/ff:ff:ff:ff:ff:00\"",
            udp(1, 2),
            true,
        ),
        ("eth_src: \"02:00:00:00:00:99\"", udp(1, 2), false),
        (
            "eth_dst: \"01:00:00:00:00:00/01:00:00:00:00:00\"",
            udp(1, 2),
            false,
        ),
        ("protocol: udp", udp(1, 2), true),
        ("protocol: tcp", udp(1, 2), false),
        ("protocol: 17", udp(1, 2), true),
        ("tos: 16", tos.clone(), true),
        ("tos: 16", udp(1, 2), false),
        ("src: 10.0.0.0/24", udp(1, 2), true),
        ("dst: 10.0.0.1/32", udp(1, 2), false),
        ("dst_group: servers", udp(1, 2), true),
        ("src_group: servers", udp(1, 2), false),
        ("src_ports: 1000-2000", udp(1500, 2), true),
        ("dst_ports: 53", udp(1500, 53), true),
        ("dst_ports: 54-60", udp(1500, 53), false),
        ("protocol: icmp, icmp_type: 8", ping.clone(), true),
        ("protocol: icmp, icmp_type: 0", ping.clone(), false),
        ("protocol: icmp, icmp_code: 0", ping.clone(), true),
        ("dnat_rewritten: true", udp(1, 2), false),
        ("dnat_rewritten: false", udp(1, 2), true),
        ("conntrack: forward", udp(1, 2), true),
        ("conntrack: return", udp(1, 2), false),
        ("fragments: unfragmented", udp(1, 2), true),
        ("fragments: nonheader", udp(1, 2), false),
    ];
    for (cond, frame, matches) in cases {
        let plain = verdict_of(&drop_if(cond), &frame);
        assert_eq!(plain, if matches { DROP } else { PASS }, "{cond}");
        // Inverting the field, and inverting the whole condition, flip it
        // (a fragment policy is chosen, not inverted: validation says so).
        let field = cond.split(':').next().unwrap().trim();
        if field == "fragments" {
            continue;
        }
        let field = if cond.contains("icmp_type") {
            "icmp_type"
        } else if cond.contains("icmp_code") {
            "icmp_code"
        } else {
            field
        };
        let inverted = verdict_of(&drop_if(&format!("{cond}, not: [{field}]")), &frame);
        assert_eq!(
            inverted,
            if matches { PASS } else { DROP },
            "not: [{field}] of {cond}"
        );
        let whole = verdict_of(&drop_if(&format!("{cond}, invert: true")), &frame);
        assert_eq!(
            whole,
            if matches { PASS } else { DROP },
            "invert: true of {cond}"
        );
    }
}

#[test]
fn masked_macs_and_ethertypes_match_arp_too() {
    let arp = arp_frame(ARP_REQUEST, A_MAC, A, [0; 6], B, BROADCAST);
    assert_eq!(
        verdict_of(&drop_if("ethertype: 0x0806"), &arp),
        Verdict::Dropped(Reason::FilterDrop)
    );
    let multicast = drop_if("eth_dst: \"01:00:00:00:00:00/01:00:00:00:00:00\"");
    assert_eq!(
        verdict_of(&multicast, &arp),
        Verdict::Dropped(Reason::FilterDrop),
        "broadcast is multicast"
    );
    assert_eq!(verdict_of(&multicast, &udp(1, 2)), PASS);
}

#[test]
fn evaluation_order_and_actions() {
    // First match decides.
    let c = "  c:\n    - {action: accept, match: {protocol: udp}}\n    - {action: drop}\n";
    assert_eq!(verdict_of(c, &udp(1, 2)), PASS);
    assert_eq!(verdict_of(c, &tcp_frame(A_MAC, B_MAC, A, B, 1, 2, 2)), DROP);
    // Continue goes on; falling off the end accepts.
    let c = "  c:\n    - {action: continue, match: {protocol: udp}}\n";
    assert_eq!(verdict_of(c, &udp(1, 2)), PASS);
    // Jump + return resumes the caller at the next rule.
    let c =
        "  c:\n    - {action: jump, chain: d}\n    - {action: drop, match: {dst_ports: 53}}\n  \
             d:\n    - {action: return, match: {protocol: udp}}\n    - {action: drop}\n";
    assert_eq!(
        verdict_of(c, &udp(1, 53)),
        DROP,
        "returned, then the caller's next rule dropped"
    );
    assert_eq!(verdict_of(c, &udp(1, 54)), PASS);
    assert_eq!(
        verdict_of(c, &tcp_frame(A_MAC, B_MAC, A, B, 1, 2, 2)),
        DROP,
        "the jumped chain decided"
    );
    // RETURN at top level accepts.
    let c = "  c:\n    - {action: return}\n    - {action: drop}\n";
    assert_eq!(verdict_of(c, &udp(1, 2)), PASS);
    // Reject on a bridge drops.
    let c = "  c:\n    - {action: reject}\n";
    assert_eq!(
        verdict_of(c, &udp(1, 2)),
        Verdict::Dropped(Reason::FilterReject)
    );
}

#[test]
fn a_jump_to_a_chain_already_on_the_path_is_ignored() {
    // Validation refuses jump cycles in files; the engine still guards
    // against them: parse without validating to build one.
    let yaml = "version: 1\nchains:\n  c:\n    - {action: jump, chain: d}\n    - {action: drop, match: {dst_ports: 2}}\n  \
                d:\n    - {action: jump, chain: c}\n    - {action: accept, match: {dst_ports: 1}}\n\
                bridges:\n  b:\n    inbound_filter: c\n    mac_table: [{mac: \"02:00:00:00:00:02\", port: b}]\n    \
                ports:\n      a: {interface: a-h}\n      b: {interface: b-h}\n";
    let topo = vnet_model::parse_str(yaml).unwrap();
    assert!(topo.validate().is_err(), "validation refuses the cycle");
    let snap = Snapshot::compile(&topo, 1);
    assert_eq!(
        run(&snap, &mut State::default(), "b/a", &udp(1, 1)).verdict,
        PASS,
        "d's jump back to c is skipped"
    );
    assert_eq!(
        run(&snap, &mut State::default(), "b/a", &udp(1, 2)).verdict,
        DROP
    );
    assert_eq!(
        run(&snap, &mut State::default(), "b/a", &udp(1, 3)).verdict,
        PASS
    );
}

#[test]
fn flows_carry_the_chains_they_evaluated_and_drops_are_installed() {
    let snap = bridge_with(
        "  c:\n    - {action: jump, chain: d}\n  d:\n    - {action: drop, match: {dst_ports: 9}}\n",
        "c",
    );
    let d = run(&snap, &mut State::default(), "b/a", &udp(1, 9));
    let flow = d
        .install
        .expect("a drop decided by rules on the key is installed");
    assert_eq!(flow.actions.flags, act::DROP);
    assert!(flow.tags.contains(&Tag::chain("c")) && flow.tags.contains(&Tag::chain("d")));
    let d = run(&snap, &mut State::default(), "b/a", &udp(1, 8));
    assert!(
        d.install.unwrap().tags.contains(&Tag::chain("d")),
        "accepted flows too"
    );
}

#[test]
fn group_conditions_tag_their_groups() {
    let snap = bridge_with(&drop_if("dst_group: servers"), "c");
    let d = run(&snap, &mut State::default(), "b/a", &udp(1, 2));
    assert!(d.install.unwrap().tags.contains(&Tag::ip_group("servers")));
}

/// A stateful "peep hole": the guest on port a may open connections; from
/// port b only replies pass.
const PEEPHOLE: &str = "  c:\n    - {action: accept, match: {in_ports: [b/a]}}\n    \
                        - {action: accept, match: {conntrack: return}}\n    - {action: drop}\n  \
                        track:\n    - {action: continue, match: {conntrack: forward}}\n";

fn peephole() -> Snapshot {
    let yaml = format!(
        "version: 1\nchains:\n{PEEPHOLE}\nbridges:\n  b:\n    inbound_filter: track\n    outbound_filter: c\n    \
         mac_table: [{{mac: \"02:00:00:00:00:02\", port: b}}, {{mac: \"02:00:00:00:00:01\", port: a}}]\n    \
         ports:\n      a: {{interface: a-h}}\n      b: {{interface: b-h}}\n"
    );
    Snapshot::compile(&vnet_model::load_str(&yaml).unwrap(), 1)
}

#[test]
fn replies_pass_a_stateful_filter_and_new_connections_from_outside_do_not() {
    for proto in ["udp", "tcp"] {
        let snap = peephole();
        let mut st = State::default();
        let (out, back) = if proto == "udp" {
            (
                udp_frame(A_MAC, B_MAC, A, B, 4000, 53, b"q"),
                udp_frame(B_MAC, A_MAC, B, A, 53, 4000, b"r"),
            )
        } else {
            (
                tcp_frame(A_MAC, B_MAC, A, B, 4000, 80, 0x02),
                tcp_frame(B_MAC, A_MAC, B, A, 80, 4000, 0x12),
            )
        };
        let early = run(&snap, &mut st, "b/b", &back);
        assert_eq!(early.verdict, DROP, "{proto}: no connection yet");
        let drop_flow = early.install.expect("installed drop");
        let d = run(&snap, &mut st, "b/a", &out);
        assert_eq!(d.verdict, PASS, "{proto}: the guest opens a connection");
        assert!(
            d.invalidate.iter().any(|t| drop_flow.tags.contains(t)),
            "{proto}: the early drop flow is invalidated"
        );
        let d = run(&snap, &mut st, "b/b", &back);
        assert_eq!(d.verdict, PASS, "{proto}: the reply passes");
        assert!(d.trace.iter().any(|s| matches!(
            s,
            Step::Conntrack {
                state: vnet_dataplane::sim::conntrack::Direction::Return,
                ..
            }
        )));
        let other = if proto == "udp" {
            udp_frame(B_MAC, A_MAC, B, A, 53, 4001, b"r")
        } else {
            tcp_frame(B_MAC, A_MAC, B, A, 80, 4001, 0x02)
        };
        assert_eq!(
            run(&snap, &mut st, "b/b", &other).verdict,
            DROP,
            "{proto}: another port is not a reply"
        );
    }
}

#[test]
fn a_dropped_packet_opens_no_connection() {
    let yaml = "version: 1\nchains:\n  c:\n    - {action: drop, match: {conntrack: forward, dst_ports: 53}}\n\
                bridges:\n  b:\n    inbound_filter: c\n    mac_table: [{mac: \"02:00:00:00:00:02\", port: b}]\n    \
                ports:\n      a: {interface: a-h}\n      b: {interface: b-h}\n";
    let snap = Snapshot::compile(&vnet_model::load_str(yaml).unwrap(), 1);
    let mut st = State::default();
    assert_eq!(run(&snap, &mut st, "b/a", &udp(4000, 53)).verdict, DROP);
    assert!(st.conntrack.is_empty());
}

#[test]
fn only_icmp_errors_related_to_a_connection_are_return_traffic() {
    let snap = peephole();
    let mut st = State::default();
    let out = udp_frame(A_MAC, B_MAC, A, B, 4000, 53, b"q");
    run(&snap, &mut st, "b/a", &out);
    let unreachable = |quoted: &[u8]| {
        let p = packet::build::icmp_error(B, 3, 3, 0, &quoted[ETH_HLEN..]);
        packet::build::ethernet_ipv4(A_MAC, B_MAC, &p)
    };
    let d = run(&snap, &mut st, "b/b", &unreachable(&out));
    assert_eq!(
        d.verdict, PASS,
        "port unreachable about the guest's datagram"
    );
    assert!(
        d.install.is_none(),
        "the key cannot see the quoted packet: never installed"
    );
    let unrelated = udp_frame(A_MAC, B_MAC, A, B, 4999, 53, b"q");
    assert_eq!(
        run(&snap, &mut st, "b/b", &unreachable(&unrelated)).verdict,
        DROP,
        "about nothing tracked"
    );
}

#[test]
fn a_full_conntrack_table_refuses_new_connections() {
    let snap = peephole();
    let mut st = State {
        conntrack: vnet_dataplane::sim::Conntrack::with_capacity(1).into(),
        ..State::default()
    };
    assert_eq!(run(&snap, &mut st, "b/a", &udp(4000, 53)).verdict, PASS);
    let d = run(&snap, &mut st, "b/a", &udp(4001, 53));
    assert_eq!(d.verdict, Verdict::Dropped(Reason::ConntrackFull));
    assert!(d.emit.is_empty() && d.install.is_none());
    let reply = udp_frame(B_MAC, A_MAC, B, A, 53, 4000, b"r");
    assert_eq!(
        run(&snap, &mut st, "b/b", &reply).verdict,
        PASS,
        "the old connection still works"
    );
}

#[test]
fn fragment_policies() {
    let mut first = udp_frame(A_MAC, B_MAC, A, B, 1, 53, &[0; 32]);
    first[ETH_HLEN + 6] = 0x20; // MF, offset 0
    first[ETH_HLEN + 10] = 0;
    first[ETH_HLEN + 11] = 0;
    let c = checksum::ipv4_header(&first[ETH_HLEN..ETH_HLEN + 20]);
    first[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
    let mut later = first.clone();
    later[ETH_HLEN + 6] = 0x00;
    later[ETH_HLEN + 7] = 0x04; // offset 32, last
    later[ETH_HLEN + 10] = 0;
    later[ETH_HLEN + 11] = 0;
    let c = checksum::ipv4_header(&later[ETH_HLEN..ETH_HLEN + 20]);
    later[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());

    let only_whole =
        "  c:\n    - {action: accept, match: {fragments: unfragmented}}\n    - {action: drop}\n";
    assert_eq!(verdict_of(only_whole, &udp(1, 53)), PASS);
    assert_eq!(verdict_of(only_whole, &first), DROP);
    assert_eq!(verdict_of(only_whole, &later), DROP);
    // L4 fields imply `header`: later fragments do not match them.
    let dns = "  c:\n    - {action: accept, match: {dst_ports: 53}}\n    - {action: drop}\n";
    assert_eq!(verdict_of(dns, &first), PASS);
    assert_eq!(verdict_of(dns, &later), DROP);
    let snap = bridge_with(only_whole, "c");
    let d = run(&snap, &mut State::default(), "b/a", &first);
    assert!(
        d.install.is_none(),
        "fragment-sensitive decisions are not installed (one kernel flow serves all fragments)"
    );
}

#[test]
fn router_reject_answers_icmp_or_tcp_reset() {
    let yaml = "version: 1\nchains:\n  c:\n    - {action: reject, match: {dst_ports: 1}}\n    \
                - {action: reject, reject_with: icmp-port-unreachable, match: {dst_ports: 2}}\n    \
                - {action: reject, reject_with: tcp-reset, match: {dst_ports: 3}}\n\
                routers:\n  r:\n    inbound_filter: c\n    ports:\n      \
                x: {address: 10.0.0.254/24, interface: x-h}\n      y: {address: 10.9.0.1/24, interface: y-h}\n    \
                routes: [{dst: 10.9.0.0/24, port: y}]\n";
    let snap = Snapshot::compile(&vnet_model::load_str(yaml).unwrap(), 1);
    let rmac = snap.ports[snap.port_by_name("r/x").unwrap()]
        .l3
        .unwrap()
        .mac;
    let dst = [10, 9, 0, 5];
    let icmp_of = |d: &Decision| {
        let f = &d.emit[0].frame;
        (f[ETH_HLEN + 20], f[ETH_HLEN + 21])
    };
    let d = run(
        &snap,
        &mut State::default(),
        "r/x",
        &udp_frame(A_MAC, rmac, A, dst, 9, 1, b""),
    );
    assert_eq!(d.verdict, Verdict::Dropped(Reason::FilterReject));
    assert_eq!(icmp_of(&d), (3, 13), "MidoNet's reject: admin prohibited");
    assert!(d.install.is_none());
    let d = run(
        &snap,
        &mut State::default(),
        "r/x",
        &udp_frame(A_MAC, rmac, A, dst, 9, 2, b""),
    );
    assert_eq!(icmp_of(&d), (3, 3));
    let syn = tcp_frame(A_MAC, rmac, A, dst, 9, 3, 0x02);
    let d = run(&snap, &mut State::default(), "r/x", &syn);
    let rst = &d.emit[0].frame;
    let h = packet::parse(rst).unwrap();
    assert_eq!(
        h.flow_key(0).map(|k| (k.src, k.dst, k.l4_src, k.l4_dst)),
        Some((dst, A, 3, 9))
    );
    assert_eq!(rst[ETH_HLEN + 20 + 13], 0x14, "RST+ACK to a SYN");
    let seg = &rst[ETH_HLEN + 20..];
    assert_eq!(
        checksum::finish(checksum::sum(
            seg,
            checksum::pseudo_header(dst, A, 6, seg.len() as u16)
        )),
        0
    );
}

#[test]
fn vlan_tagged_frames_are_filtered_on_their_inner_fields() {
    let yaml = "version: 1\nchains:\n  c:\n    - {action: drop, match: {dst_ports: 53}}\n\
                bridges:\n  b:\n    inbound_filter: c\n    mac_table: [{mac: \"02:00:00:00:00:02\", port: b}]\n    \
                ports:\n      a: {interface: a-h, vlan: 7}\n      b: {interface: b-h}\n";
    let snap = Snapshot::compile(&vnet_model::load_str(yaml).unwrap(), 1);
    let d = run(
        &snap,
        &mut State::default(),
        "b/a",
        &with_vlan(&udp(1, 53), 7),
    );
    assert_eq!(d.verdict, DROP);
}

/// 10 000 host and port rules: the indexed chain gives the same answers as
/// the rules read in order.
#[test]
fn indexed_classification_agrees_with_rule_order() {
    // Every third rule matches a destination port, every seventh (of the
    // rest) a source port, the others a host; some overlap.
    let kind = |i: u32| {
        if i.is_multiple_of(3) {
            0
        } else if i % 7 == 1 {
            1
        } else {
            2
        }
    };
    let mut rules = String::from("  c:\n");
    for i in 0..10_000u32 {
        let b = i.to_be_bytes();
        let action = if i % 2 == 0 { "drop" } else { "accept" };
        rules += &match kind(i) {
            0 => format!(
                "    - {{action: {action}, match: {{protocol: udp, dst_ports: {}}}}}\n",
                1000 + i % 500
            ),
            1 => format!(
                "    - {{action: {action}, match: {{protocol: udp, src_ports: {}}}}}\n",
                2000 + i % 300
            ),
            _ => format!(
                "    - {{action: {action}, match: {{dst: 10.{}.{}.{}/32}}}}\n",
                b[1], b[2], b[3]
            ),
        };
    }
    rules += "    - {action: drop, match: {src: 10.0.0.0/8}}\n";
    let snap = bridge_with(&rules, "c");
    let expected = |dst: [u8; 4], sport: u16, dport: u16| -> Verdict {
        for i in 0..10_000u32 {
            let b = i.to_be_bytes();
            let hit = match kind(i) {
                0 => dport == (1000 + i % 500) as u16,
                1 => sport == (2000 + i % 300) as u16,
                _ => dst == [10, b[1], b[2], b[3]],
            };
            if hit {
                return if i % 2 == 0 { DROP } else { PASS };
            }
        }
        DROP
    };
    let cases = [
        (1u32, 1u16, 7u16),
        (2, 1, 1000),
        (4, 1, 1002),
        (9_998, 1, 1499),
        (9_999, 1, 1),
        (10_001, 1, 9),
        (7, 1, 1003),
        (10_002, 2008, 9),
        (10_003, 2299, 9),
        (5, 2001, 1700),
    ];
    for (n, sport, dport) in cases {
        let b = n.to_be_bytes();
        let dst = [10, b[1], b[2], b[3]];
        let frame = udp_frame(A_MAC, B_MAC, A, dst, sport, dport, b"");
        let got = run(&snap, &mut State::default(), "b/a", &frame).verdict;
        assert_eq!(
            got,
            expected(dst, sport, dport),
            "dst {dst:?} ports {sport} -> {dport}"
        );
    }
}

/// Two bridges joined by a host with a leg on each (ports x/h and y/h):
/// traffic leaves through x/h and its replies come back through y/h. Port
/// filters track on the way out and accept only replies on the way in; the
/// state is shared only when both ports are in a stateful port group.
fn asymmetric(stateful: bool) -> Snapshot {
    let yaml = format!(
        "version: 1\nport_groups:\n  legs: {{ports: [x/h, y/h], stateful: {stateful}}}\n\
         chains:\n  track:\n    - {{action: continue, match: {{conntrack: forward}}}}\n  \
         replies:\n    - {{action: accept, match: {{conntrack: return}}}}\n    - {{action: drop}}\n\
         bridges:\n  x:\n    mac_table: [{{mac: \"02:00:00:00:00:02\", port: h}}]\n    ports:\n      \
         a: {{interface: a-h}}\n      h: {{interface: xh-h, outbound_filter: track}}\n  \
         y:\n    mac_table: [{{mac: \"02:00:00:00:00:01\", port: a}}]\n    ports:\n      \
         a: {{interface: ya-h}}\n      h: {{interface: yh-h, inbound_filter: replies}}\n"
    );
    Snapshot::compile(&vnet_model::load_str(&yaml).unwrap(), 1)
}

#[test]
fn stateful_port_groups_share_connections_between_members() {
    for stateful in [true, false] {
        let snap = asymmetric(stateful);
        let mut st = State::default();
        assert_eq!(run(&snap, &mut st, "x/a", &udp(4000, 53)).verdict, PASS);
        let reply = udp_frame(B_MAC, A_MAC, B, A, 53, 4000, b"r");
        let back = run(&snap, &mut st, "y/h", &reply).verdict;
        if stateful {
            assert_eq!(
                back, PASS,
                "the reply through the other member is recognised"
            );
        } else {
            assert_eq!(
                back, DROP,
                "without the group, the other port knows nothing of it"
            );
        }
    }
}
