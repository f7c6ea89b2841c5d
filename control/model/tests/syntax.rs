//! Errors the parser reports: unknown or duplicate keys, malformed values,
//! impossible rules. Each must name where the problem is.

mod common;

use std::path::Path;

use common::parse_error;
use vnet_model::{
    load_file, parse_bytes, parse_str, Action, FlowAction, RejectWith, TopologyError,
};

#[test]
fn unknown_top_level_key() {
    let err = parse_str("version: 1\nroutes: []\n").unwrap_err();
    let TopologyError::Syntax { line, message, .. } = &err else {
        panic!("expected a syntax error, got {err:?}");
    };
    assert_eq!(*line, Some(2));
    assert!(message.contains("unknown field `routes`"), "{message}");
    assert!(
        message.contains("expected one of `version`, `bridges`"),
        "{message}"
    );
}

#[test]
fn typo_in_a_field_names_the_object() {
    let msg = parse_error("version: 1\nbridges:\n  b:\n    ports:\n      p: {interfce: x}\n");
    assert!(
        msg.contains("bridges.b.ports.p: unknown field `interfce`"),
        "{msg}"
    );
    assert!(msg.contains("line 5"), "{msg}");
}

#[test]
fn missing_version() {
    let msg = parse_error("bridges: {}\n");
    assert!(msg.contains("missing field `version`"), "{msg}");
}

#[test]
fn duplicate_names_are_errors() {
    let msg = parse_error("version: 1\nbridges:\n  b: {}\n  b: {}\n");
    assert!(msg.contains("duplicate key `b`"), "{msg}");
    let msg = parse_error(
        "version: 1\nbridges:\n  b:\n    ports:\n      p: {}\n      p: {interface: x}\n",
    );
    assert!(
        msg.contains("bridges.b.ports") && msg.contains("duplicate key `p`"),
        "{msg}"
    );
    let msg = parse_error("version: 1\nchains:\n  c: []\n  c: []\n");
    assert!(msg.contains("duplicate key `c`"), "{msg}");
    let msg = parse_error("version: 1\nrouters:\n  r:\n    ports:\n      p: {address: 10.0.0.1/24, address: 10.0.0.2/24}\n");
    assert!(msg.contains("duplicate field `address`"), "{msg}");
    // JSON alike.
    let msg = parse_error(r#"{"version": 1, "routers": {"r": {}, "r": {}}}"#);
    assert!(msg.contains("duplicate key `r`"), "{msg}");
}

#[test]
fn not_with_an_unknown_field() {
    let msg = parse_error(
        "version: 1\nchains:\n  c:\n    - {action: drop, match: {src: 10.0.0.0/8, not: [srcc]}}\n",
    );
    assert!(
        msg.contains("chains.c[0].match.not[0]: unknown variant `srcc`"),
        "{msg}"
    );
    assert!(msg.contains("`src`"), "{msg}");
    // `not` and `invert` are not condition fields either.
    let msg =
        parse_error("version: 1\nchains:\n  c:\n    - {action: drop, match: {not: [invert]}}\n");
    assert!(msg.contains("unknown variant `invert`"), "{msg}");
}

#[test]
fn unknown_condition_field() {
    let msg =
        parse_error("version: 1\nchains:\n  c:\n    - {action: drop, match: {src_port: 80}}\n");
    assert!(
        msg.contains("chains.c[0].match: unknown field `src_port`"),
        "{msg}"
    );
}

#[test]
fn rule_fields_must_fit_the_action() {
    for (rule, expected) in [
        ("{action: jump}", "action jump needs `chain`"),
        (
            "{action: accept, chain: x}",
            "chain is only valid with action jump, not accept",
        ),
        (
            "{action: drop, reject_with: tcp-reset}",
            "reject_with is only valid with action reject, not drop",
        ),
        ("{action: dnat}", "action dnat needs `to"),
        (
            "{action: accept, to: {ip: 10.0.0.1}}",
            "to is only valid with actions dnat and snat",
        ),
        (
            "{action: rev_snat, to: {ip: 10.0.0.1}}",
            "to is only valid with actions dnat and snat, not rev_snat",
        ),
        (
            "{action: drop, then: accept}",
            "then is only valid with actions dnat",
        ),
        ("{action: teleport}", "unknown variant `teleport`"),
        (
            "{action: reject, reject_with: icmp-nope}",
            "unknown variant `icmp-nope`",
        ),
        (
            "{action: snat, to: {ip: 10.0.0.1}, then: drop}",
            "unknown variant `drop`",
        ),
        ("{match: {}}", "missing field `action`"),
    ] {
        let msg = parse_error(&format!("version: 1\nchains:\n  c:\n    - {rule}\n"));
        assert!(msg.contains(expected), "{rule}: {msg}");
        assert!(
            msg.contains("chains.c") && msg.contains("line 4"),
            "{rule}: {msg}"
        );
    }
}

#[test]
fn rule_defaults() {
    let t = parse_str("version: 1\nchains:\n  c:\n    - {action: reject}\n    - {action: dnat, to: {ip: 10.0.0.1}}\n").unwrap();
    let c = &t.chains["c"];
    assert_eq!(
        c[0].action,
        Action::Reject {
            with: RejectWith::IcmpAdminProhibited
        }
    );
    let Action::Dnat { to, then } = &c[1].action else {
        panic!("{:?}", c[1])
    };
    assert_eq!(*then, FlowAction::Accept);
    assert!(to.is_static());
    assert!(c[0].condition.is_empty());
}

#[test]
fn nat_intent_shape() {
    let msg = parse_error("version: 1\nnat:\n  - {router: e, type: snatt, port: p}\n");
    assert!(
        msg.contains("nat[0].type: unknown variant `snatt`"),
        "{msg}"
    );
    let msg = parse_error("version: 1\nnat:\n  - {router: e, type: snat, from: 10.0.0.0/24, to: 192.0.2.1, port: p, public: 192.0.2.1}\n");
    assert!(msg.contains("unknown field `public`"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    let msg = parse_error("version: 1\nnat:\n  - {router: e, from: 10.0.0.0/24}\n");
    assert!(msg.contains("missing field `type`"), "{msg}");
    let msg = parse_error(
        "version: 1\nnat:\n  - {router: e, type: floating_ip, public: 192.0.2.1, port: p}\n",
    );
    assert!(msg.contains("missing field `private`"), "{msg}");
}

#[test]
fn malformed_values_name_the_field() {
    for (yaml, path, expected) in [
        ("version: 1\nbridges:\n  b:\n    mac_table: [{mac: \"02:00:00:00:00\", port: p}]\n", "bridges.b.mac_table[0].mac", "is not a MAC address"),
        ("version: 1\nbridges:\n  b:\n    ports:\n      p: {peer: nodevice}\n", "bridges.b.ports.p.peer", "is not a port reference"),
        ("version: 1\nbridges:\n  b:\n    ports:\n      p: {vlan: 70000}\n", "bridges.b.ports.p.vlan", "70000"),
        ("version: 1\nrouters:\n  r:\n    ports:\n      p: {address: 10.0.0.1}\n", "routers.r.ports.p.address", "`10.0.0.1` is not an IPv4 address with a prefix length, like 10.0.0.0/24"),
        ("version: 1\nrouters:\n  r:\n    routes: [{dst: 10.0.0.0/8, type: drop}]\n", "routers.r.routes[0].type", "unknown variant `drop`"),
        ("version: 1\nchains:\n  c: [{action: drop, match: {dst_ports: 70000}}]\n", "chains.c[0].match.dst_ports", "port 70000 is out of range"),
        ("version: 1\nchains:\n  c: [{action: drop, match: {dst_ports: 80-x}}]\n", "chains.c[0].match.dst_ports", "is not a port"),
        ("version: 1\nchains:\n  c: [{action: drop, match: {protocol: tcpp}}]\n", "chains.c[0].match.protocol", "is not a protocol"),
        ("version: 1\nchains:\n  c: [{action: drop, match: {protocol: 300}}]\n", "chains.c[0].match.protocol", "out of range 0-255"),
        ("version: 1\nchains:\n  c: [{action: drop, match: {eth_src: \"02:00:00:00:00:01/ff\"}}]\n", "chains.c[0].match.eth_src", "optional mask"),
        ("version: 1\nchains:\n  c: [{action: drop, match: {conntrack: established}}]\n", "chains.c[0].match.conntrack", "unknown variant `established`"),
        ("version: 1\nchains:\n  c: [{action: drop, match: {fragments: some}}]\n", "chains.c[0].match.fragments", "unknown variant `some`"),
        ("version: 1\nbridges:\n  b:\n    dhcp: [{subnet: 10.0.0.0/24, server: 10.0.0.2, pool: 10.0.0.1-x}]\n", "bridges.b.dhcp[0].pool", "address range"),
        ("version: 1\nip_groups:\n  g: [10.0.0.300]\n", "ip_groups.g[0]", "invalid IPv4 address"),
        ("version: 1\nport_groups:\n  g: {ports: [a/b/c]}\n", "port_groups.g.ports[0]", "is not a port reference"),
    ] {
        let msg = parse_error(yaml);
        assert!(msg.contains(path) && msg.contains(expected), "expected {path} / {expected}: {msg}");
    }
}

#[test]
fn json_is_accepted_and_json_errors_have_positions() {
    let t =
        parse_str(r#"{"version": 1, "bridges": {"b": {"ports": {"p": {"interface": "p-h"}}}}}"#)
            .unwrap();
    assert_eq!(t.bridges["b"].ports["p"].interface.as_deref(), Some("p-h"));
    let err = parse_str("{\"version\": 1,\n \"bridges\": {\"b\": {\"ports\": 5}}}").unwrap_err();
    let TopologyError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, Some(2));
    assert!(column.is_some());
}

#[test]
fn yaml_errors_have_positions() {
    let err = parse_str("version: 1\nbridges:\n  b: [\n").unwrap_err();
    let TopologyError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(line.is_some() && column.is_some(), "{err}");
}

#[test]
fn byte_order_mark_and_empty_collections_are_accepted() {
    let t = parse_str("\u{feff}version: 1\nbridges:\n  b:\n    ports:\nrouters:\n").unwrap();
    assert!(t.bridges["b"].ports.is_empty());
}

#[test]
fn non_utf8_is_an_error() {
    let msg = parse_bytes(b"version: 1\nbridges: {\xff: {}}\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not UTF-8") && msg.contains("offset 21"),
        "{msg}"
    );
}

#[test]
fn load_file_names_the_file() {
    let missing = Path::new("/nonexistent/topology.yaml");
    let msg = load_file(missing).unwrap_err().to_string();
    assert!(
        msg.starts_with("/nonexistent/topology.yaml: cannot read the topology"),
        "{msg}"
    );

    let dir = std::env::temp_dir().join(format!("vnet-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 2\nbridges:\n  b:\n    ports:\n      p: {vlan: 0}\n",
    )
    .unwrap();
    let err = load_file(&bad).unwrap_err();
    assert_eq!(err.validation_errors().len(), 2);
    let msg = err.to_string();
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(
        lines[0],
        format!("{}: invalid topology (2 errors):", bad.display())
    );
    assert_eq!(
        lines[1],
        "  version: unsupported format version 2; this vnet reads version 1"
    );
    assert_eq!(
        lines[2],
        "  bridges.b.ports.p.vlan: VLAN id 0 is out of range 1-4094"
    );

    let syntax = dir.join("syntax.yaml");
    std::fs::write(&syntax, "version: 1\nbrigdes: {}\n").unwrap();
    let msg = load_file(&syntax).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: syntax error: unknown field `brigdes`",
            syntax.display()
        )),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
