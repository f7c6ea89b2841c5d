//! Real answers in, the exact text vnetctl prints out.
use super::*;
use vnet_model::diff::ChangeOp;
use vnet_model::reports::{StoreHealth, TraceStep};

fn change(op: ChangeOp, path: &str) -> Change {
    Change {
        op,
        path: path.into(),
    }
}

fn outcome(changes: Vec<Change>, running: bool) -> ApplyOutcome {
    ApplyOutcome {
        revision: 4,
        changes,
        dry_run: false,
        running,
        warnings: vec!["port b/p2 is not bound".into()],
    }
}

const TWO_PORTS: &str = "version: 1\nbridges:\n  b:\n    ports:\n      p1: {interface: if1}\n      p2: {interface: if2, up: false}\n";

fn traffic(n: u64) -> TrafficCounters {
    TrafficCounters {
        userspace_rx: n,
        userspace_bytes: 100 * n,
        kernel_packets: 10 * n,
        kernel_bytes: 1000 * n,
        flows: 2,
        upcall_budget: 0,
    }
}

#[test]
fn a_table_pads_every_column_to_its_widest_cell_and_trims_the_last() {
    let rows = vec![
        vec!["tenant/vm1".to_string(), "vm1-h".into(), "".into()],
        vec!["b/p".into(), "a-long-interface".into(), "why".into()],
    ];
    assert_eq!(
        table(&["PORT", "INTERFACE", "WHY"], &rows),
        "PORT        INTERFACE         WHY\n\
         tenant/vm1  vm1-h\n\
         b/p         a-long-interface  why\n"
    );
    assert_eq!(table(&["KIND", "NAME"], &[]), "KIND  NAME\n");
}

#[test]
fn apply_lists_the_changes_then_what_became_of_them() {
    let changes = vec![
        change(ChangeOp::Added, "bridges.b"),
        change(ChangeOp::Changed, "routers.r"),
        change(ChangeOp::Removed, "chains.c"),
    ];
    let out = outcome(changes.clone(), true);
    assert_eq!(
        apply(&out, false, Format::Table).unwrap(),
        "+ bridges.b\n~ routers.r\n- chains.c\napplied: revision 4 (running)\n"
    );
    assert_eq!(
        apply(&out, true, Format::Table).unwrap(),
        "+ bridges.b\n~ routers.r\n- chains.c\n\
         dry run: 3 change(s) against revision 4; nothing applied\n"
    );
    assert_eq!(
        apply(&outcome(changes, false), false, Format::Yaml).unwrap(),
        "+ bridges.b\n~ routers.r\n- chains.c\n\
         applied: revision 4 (stored; the dataplane does not run it yet)\n"
    );
    assert_eq!(
        apply(&outcome(vec![], true), false, Format::Table).unwrap(),
        "no changes: revision 4 stays\n"
    );
    assert_eq!(warnings(&out.warnings), "warning: port b/p2 is not bound\n");
    assert_eq!(warnings(&[]), "");
}

#[test]
fn apply_as_json_carries_changes_and_warnings() {
    let out = outcome(vec![change(ChangeOp::Added, "bridges.b")], true);
    assert_eq!(
        apply(&out, false, Format::Json).unwrap(),
        r#"{
  "changes": [
    "+ bridges.b"
  ],
  "dry_run": false,
  "revision": 4,
  "running": true,
  "warnings": [
    "port b/p2 is not bound"
  ]
}
"#
    );
}

#[test]
fn delete_and_watch_list_their_changes() {
    let changes = [change(ChangeOp::Removed, "chains.c")];
    assert_eq!(deleted(&changes, 9), "- chains.c\ndeleted: revision 9\n");
    let t = vnet_model::load_str(TWO_PORTS).unwrap();
    // The revision removed chain c and changed bridge b (whole, as it is now).
    let event = vnet_api::Event {
        revision: 9,
        changes: changes.to_vec(),
        delta: std::sync::Arc::new(vnet_api::Delta {
            changed: t,
            removed: vec!["chains.c".into()],
        }),
    };
    assert_eq!(
        watch_event(&event, Format::Table),
        "revision 9: 1 change(s)\n  - chains.c\n"
    );
    assert_eq!(
        watch_event(&event, Format::Json),
        "{\"changed\":{\"bridges\":{\"b\":\
         {\"ports\":{\"p1\":{\"interface\":\"if1\"},\"p2\":{\"interface\":\"if2\",\"up\":false}}}},\
         \"version\":1},\"changes\":[\"- chains.c\"],\"removed\":[\"chains.c\"],\"revision\":9}\n"
    );
}

#[test]
fn get_lists_objects_with_a_summary_and_counts_the_intents() {
    let topology =
        vnet_model::load_str(include_str!("../../../../examples/tenant-nat.yaml")).unwrap();
    let listed = Listed {
        revision: 7,
        topology,
        objects: vec![
            (ObjectKind::Bridge, "tenant".into(), 1),
            (ObjectKind::Router, "edge".into(), 2),
        ],
    };
    assert_eq!(
        listing(&listed, None, Format::Table).unwrap(),
        "KIND    NAME    ID  SUMMARY\n\
         bridge  tenant  1   3 ports, DHCP on 1 subnet(s)\n\
         router  edge    2   2 ports, 3 routes\n\
         3 NAT and 1 firewall intent(s): -o yaml shows them\n\
         revision 7\n"
    );
    // Listing one kind: the intents are not among them.
    let routers = Listed {
        objects: vec![(ObjectKind::Router, "edge".into(), 2)],
        ..listed.clone()
    };
    assert_eq!(
        listing(&routers, Some(ObjectKind::Router), Format::Table).unwrap(),
        "KIND    NAME  ID  SUMMARY\nrouter  edge  2   2 ports, 3 routes\nrevision 7\n"
    );
    assert_eq!(
        listing(&listed, None, Format::Yaml).unwrap(),
        listed.topology.to_yaml()
    );
}

#[test]
fn get_of_one_object_prints_its_section_of_a_file() {
    let t = vnet_model::load_str(TWO_PORTS).unwrap();
    assert_eq!(
        object(ObjectKind::Bridge, "b", 3, 5, &t, Format::Table).unwrap(),
        "KIND    NAME  ID  SUMMARY\nbridge  b     3   2 ports (1 down)\nrevision 5\n"
    );
    assert_eq!(
        object(ObjectKind::Bridge, "b", 3, 5, &t, Format::Yaml).unwrap(),
        "bridges:\n  b:\n    ports:\n      p1:\n        interface: if1\n      \
         p2:\n        interface: if2\n        up: false\n"
    );
    assert!(object(ObjectKind::Bridge, "b", 3, 5, &t, Format::Json)
        .unwrap()
        .starts_with("{\n  \"version\": 1,\n  \"bridges\": {\n"));
}

#[test]
fn summaries_count_what_each_kind_holds() {
    let t = vnet_model::load_str(
        "version: 1\nchains:\n  c: [{action: drop}]\nip_groups:\n  g: [10.0.0.1, 10.0.0.2]\n\
         port_groups:\n  pg: {ports: [b/p]}\nbridges:\n  b:\n    ports:\n      p: {interface: if1}\n",
    )
    .unwrap();
    assert_eq!(summary(&t, ObjectKind::Chain, "c"), "1 rules");
    assert_eq!(summary(&t, ObjectKind::IpGroup, "g"), "2 addresses");
    assert_eq!(summary(&t, ObjectKind::PortGroup, "pg"), "1 ports");
    assert_eq!(summary(&t, ObjectKind::Bridge, "b"), "1 ports");
    assert_eq!(summary(&t, ObjectKind::Router, "nosuch"), "");
}

fn report(flow: Option<&str>, emitted: &[&str]) -> TraceReport {
    TraceReport {
        revision: 2,
        packet: "ipv4 10.0.0.11 > 10.0.0.12 icmp".into(),
        steps: vec![
            TraceStep {
                kind: "ingress".into(),
                detail: "port tenant/vm1".into(),
            },
            TraceStep {
                kind: "mac_lookup".into(),
                detail: "02:00:00:00:01:02 -> tenant/vm2".into(),
            },
        ],
        verdict: "forwarded".into(),
        emitted: emitted.iter().map(|e| e.to_string()).collect(),
        flow: flow.map(String::from),
    }
}

#[test]
fn a_trace_numbers_its_steps() {
    assert_eq!(
        trace(
            &report(Some("output=tenant/vm2"), &["tenant/vm2", "tenant/vm3"]),
            Format::Table
        )
        .unwrap(),
        "packet: ipv4 10.0.0.11 > 10.0.0.12 icmp\n  \
         1. ingress          port tenant/vm1\n  \
         2. mac_lookup       02:00:00:00:01:02 -> tenant/vm2\n\
         verdict: forwarded\n\
         sent to: tenant/vm2, tenant/vm3\n\
         flow: output=tenant/vm2\n\
         (simulated on revision 2; nothing changed)\n"
    );
    let text = trace(&report(None, &[]), Format::Table).unwrap();
    assert!(!text.contains("sent to"), "{text}");
    assert!(
        text.contains("\nflow: none (not installed for this packet)\n"),
        "{text}"
    );
}

#[test]
fn a_trace_as_json_or_yaml_is_json() {
    let json = trace(&report(None, &[]), Format::Json).unwrap();
    assert_eq!(json, trace(&report(None, &[]), Format::Yaml).unwrap());
    assert_eq!(
        json,
        r#"{
  "emitted": [],
  "flow": null,
  "packet": "ipv4 10.0.0.11 > 10.0.0.12 icmp",
  "revision": 2,
  "steps": [
    {
      "detail": "port tenant/vm1",
      "kind": "ingress"
    },
    {
      "detail": "02:00:00:00:01:02 -> tenant/vm2",
      "kind": "mac_lookup"
    }
  ],
  "verdict": "forwarded"
}
"#
    );
}

#[test]
fn flows_show_idle_time_in_seconds() {
    let flows_ = [FlowInfo {
        in_port: "tenant/vm1".into(),
        matches: "ipv4 10.0.0.11 > 10.0.0.12".into(),
        actions: "output=tenant/vm2".into(),
        packets: 12,
        bytes: 1176,
        age_ms: 9000,
        idle_ms: 2500,
        tags: 6,
    }];
    assert_eq!(
        flows(3, &flows_, Format::Table).unwrap(),
        "IN          MATCH                       ACTIONS            PACKETS  BYTES  IDLE\n\
         tenant/vm1  ipv4 10.0.0.11 > 10.0.0.12  output=tenant/vm2  12       1176   2s\n\
         1 flow(s), revision 3\n"
    );
    assert_eq!(
        flows(3, &[], Format::Table).unwrap(),
        "IN  MATCH  ACTIONS  PACKETS  BYTES  IDLE\n0 flow(s), revision 3\n"
    );
    assert_eq!(
        flows(3, &flows_, Format::Json).unwrap(),
        r#"[
  {
    "actions": "output=tenant/vm2",
    "age_ms": 9000,
    "bytes": 1176,
    "idle_ms": 2500,
    "in_port": "tenant/vm1",
    "match": "ipv4 10.0.0.11 > 10.0.0.12",
    "packets": 12,
    "tags": 6
  }
]
"#
    );
}

fn counters() -> CounterReport {
    CounterReport {
        revision: 3,
        reasons: vec![("port_down".into(), 0), ("xdp_hit_redirect".into(), 40)],
        totals: vec![("upcalls".into(), 5)],
        ports: vec![("tenant/vm1".into(), "vm1-h".into(), traffic(1))],
        devices: vec![("tenant".into(), traffic(2))],
    }
}

#[test]
fn stats_are_three_tables_and_leave_out_reasons_that_never_counted() {
    assert_eq!(
        stats(&counters(), Format::Table).unwrap(),
        "PORT        INTERFACE  USERSPACE_RX  KERNEL_PKTS  KERNEL_BYTES  FLOWS  OVER_BUDGET\n\
         tenant/vm1  vm1-h      1             10           1000          2      0\n\
         \n\
         DEVICE  USERSPACE_RX  KERNEL_PKTS  KERNEL_BYTES  FLOWS  OVER_BUDGET\n\
         tenant  2             20           2000          2      0\n\
         \n\
         COUNTER           VALUE\n\
         upcalls           5\n\
         xdp_hit_redirect  40\n"
    );
}

#[test]
fn stats_as_json_keep_every_reason() {
    let json: Value = serde_json::from_str(&stats(&counters(), Format::Json).unwrap()).unwrap();
    assert_eq!(
        json,
        json!({
            "revision": 3,
            "reasons": {"port_down": 0, "xdp_hit_redirect": 40},
            "totals": {"upcalls": 5},
            "ports": [{"port": "tenant/vm1", "interface": "vm1-h", "userspace_rx": 1,
                       "userspace_bytes": 100, "kernel_packets": 10, "kernel_bytes": 1000, "flows": 2,
                       "upcall_budget": 0}],
            "devices": [{"device": "tenant", "userspace_rx": 2, "userspace_bytes": 200,
                         "kernel_packets": 20,
                         "kernel_bytes": 2000, "flows": 2, "upcall_budget": 0}],
        })
    );
}

fn health(dataplane: bool) -> Health {
    Health {
        stored_revision: 4,
        running_revision: 3,
        dataplane,
        interfaces: vec![("b/p1".into(), "if1".into(), 7)],
        problems: vec!["port b/p2 is not bound".into()],
        ports: vec![
            PortStatus {
                port: "b/p1".into(),
                interface: "if1".into(),
                state: PortState::Bound { ifindex: 7 },
            },
            PortStatus {
                port: "b/p2".into(),
                interface: "if2".into(),
                state: PortState::Waiting,
            },
            PortStatus {
                port: "b/p3".into(),
                interface: "if3".into(),
                state: PortState::Failed("EBUSY".into()),
            },
        ],
        store: StoreHealth {
            store: "embedded".into(),
            reachable: true,
            ..Default::default()
        },
    }
}

#[test]
fn status_shows_each_port_as_bound_waiting_or_failed() {
    assert_eq!(
        status(&health(true), Format::Table).unwrap(),
        "store:            embedded\n\
         stored revision:  4\n\
         running revision: 3\n\
         PORT  INTERFACE  STATE    IFINDEX  WHY\n\
         b/p1  if1        bound    7\n\
         b/p2  if2        waiting  -        waiting for the interface\n\
         b/p3  if3        failed   -        EBUSY\n\
         problem: port b/p2 is not bound\n"
    );
    assert_eq!(
        status(&health(false), Format::Table).unwrap(),
        "store:            embedded\nstored revision:  4\nno dataplane behind this API\n"
    );
}

#[test]
fn status_shows_a_store_outage_and_that_forwarding_goes_on() {
    let mut h = health(true);
    h.stored_revision = 0;
    h.store = StoreHealth {
        store: "etcd://192.0.2.254:2379".into(),
        reachable: false,
        down_for_secs: 12,
        outages: 1,
        error: Some("connection refused".into()),
    };
    let text = status(&h, Format::Table).unwrap();
    assert!(
        text.starts_with(
            "store:            etcd://192.0.2.254:2379 UNREACHABLE for 12 s (1 outages since start): \
             connection refused\nstored revision:  unknown; forwarding goes on"
        ),
        "{text}"
    );
    assert!(text.contains("running revision: 3\n"), "{text}");
    let json: Value = serde_json::from_str(&status(&h, Format::Yaml).unwrap()).unwrap();
    assert_eq!(
        json["store"],
        json!({"store": "etcd://192.0.2.254:2379", "reachable": false, "down_seconds": 12,
               "outages": 1, "error": "connection refused"})
    );
    h.store.reachable = true;
    h.store.error = None;
    h.stored_revision = 4;
    let text = status(&h, Format::Table).unwrap();
    assert!(
        text.starts_with(
            "store:            etcd://192.0.2.254:2379 (answering; 1 outages since start)\n"
        ),
        "{text}"
    );
}

#[test]
fn status_as_json_names_the_ifindex_or_the_error() {
    let json: Value = serde_json::from_str(&status(&health(true), Format::Yaml).unwrap()).unwrap();
    assert_eq!(
        json["ports"],
        json!([
            {"port": "b/p1", "interface": "if1", "state": "bound", "ifindex": 7},
            {"port": "b/p2", "interface": "if2", "state": "waiting"},
            {"port": "b/p3", "interface": "if3", "state": "failed", "error": "EBUSY"},
        ])
    );
    assert_eq!(
        json["interfaces"],
        json!([{"port": "b/p1", "interface": "if1", "ifindex": 7}])
    );
    assert_eq!(
        (&json["stored_revision"], &json["running_revision"]),
        (&json!(4), &json!(3))
    );
}

#[test]
fn errors_say_what_to_do() {
    let connect = ClientError::Connect {
        target: "/run/vnet/vnetd.sock".into(),
        message: "No such file or directory (os error 2)".into(),
    };
    assert_eq!(
        client_error(connect),
        "cannot reach vnetd at /run/vnet/vnetd.sock: No such file or directory (os error 2)\n  \
         (is vnetd running? pass its socket with --socket PATH; the socket is root's only)"
    );
    let rejected = || ClientError::Status(tonic::Status::invalid_argument("bad\u{1b}[2J"));
    assert_eq!(client_error(rejected()), "rejected: bad\\u{1b}[2J");
    assert_eq!(
        change_error(rejected()),
        "nothing changed: rejected: bad\\u{1b}[2J"
    );
    let missing = ClientError::Status(tonic::Status::not_found("bridges.x does not exist"));
    assert_eq!(change_error(missing), "not found: bridges.x does not exist");
    assert_eq!(
        in_file(Path::new("/tmp/t.yaml"), "syntax error"),
        "/tmp/t.yaml: syntax error"
    );
}

#[test]
fn every_validation_error_is_listed_one_a_line() {
    let errors = [
        ValidationError::new(
            "bridges.b.ports.p0.vlan",
            "VLAN id 5000 is out of range 1-4094",
        ),
        ValidationError::new(
            "bridges.b.ports.p1.vlan",
            "VLAN id 5001 is out of range 1-4094",
        ),
    ];
    assert_eq!(
        every_validation_error(&errors),
        "nothing changed: rejected: invalid topology (2 errors; the server listed the first \
         ones, all are checked here):\n  \
         bridges.b.ports.p0.vlan: VLAN id 5000 is out of range 1-4094\n  \
         bridges.b.ports.p1.vlan: VLAN id 5001 is out of range 1-4094"
    );
}
