//! The example topologies load, validate and survive a round trip.

mod common;

use common::{all_files, example_files};
use vnet_model::{load_file, parse_str, Topology};

#[test]
fn examples_are_the_shared_contract_files() {
    let names: Vec<String> = example_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in ["bridge.yaml", "router.yaml", "tenant-nat.yaml"] {
        assert!(
            names.iter().any(|n| n == required),
            "examples/{required} is missing"
        );
    }
}

#[test]
fn every_example_loads_and_validates() {
    for path in all_files() {
        let topo = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(topo.version, 1);
    }
}

#[test]
fn every_example_round_trips_through_yaml() {
    for path in all_files() {
        let original = load_file(&path).unwrap();
        let yaml = original.to_yaml();
        let again = parse_str(&yaml).unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", path.display()));
        assert_eq!(
            original,
            again,
            "{} changed in the round trip:\n{yaml}",
            path.display()
        );
        again.validate().unwrap();
        // Writing is deterministic: the second write is the first.
        assert_eq!(yaml, again.to_yaml());
    }
}

#[test]
fn every_example_round_trips_through_json() {
    for path in all_files() {
        let original = load_file(&path).unwrap();
        let json = serde_json::to_string_pretty(&original).unwrap();
        let again = parse_str(&json).unwrap_or_else(|e| panic!("{}: {e}\n{json}", path.display()));
        assert_eq!(original, again, "{}", path.display());
    }
}

#[test]
fn output_leaves_out_defaults() {
    let topo = load_file(&common::example_files()[1]).unwrap();
    let yaml = topo.to_yaml();
    for absent in ["up:", "enabled:", "null", "[]", "{}", "type:", "invert"] {
        assert!(!yaml.contains(absent), "`{absent}` in\n{yaml}");
    }
}

#[test]
fn examples_mean_what_they_say() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let nat = load_file(&dir.join("tenant-nat.yaml")).unwrap();
    let edge = &nat.routers["edge"];
    assert_eq!(edge.ports["uplink"].interface.as_deref(), Some("uplink-h"));
    assert_eq!(edge.ports["uplink"].effective_mtu(), 1500);
    let default = &edge.routes[2];
    assert_eq!(edge.route_port(default), Some("uplink"));
    assert_eq!(default.via, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(nat.nat.len(), 3);
    match &nat.nat[2] {
        vnet_model::NatIntent::PortForward(pf) => {
            assert_eq!(pf.protocol, vnet_model::Protocol::TCP);
            assert_eq!((pf.public_ports.start, pf.private_ports.start), (8080, 80));
        }
        other => panic!("expected a port forward, got {other:?}"),
    }
    assert_eq!(nat.firewall[0].allow.len(), 2);

    let bridge = load_file(&dir.join("bridge.yaml")).unwrap();
    let dhcp = &bridge.bridges["tenant"].dhcp[0];
    assert_eq!(
        dhcp.hosts[1].ip,
        "10.0.0.12".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(dhcp.pool.unwrap().len(), 100);
    assert!(dhcp.enabled);
    assert!(bridge.bridges["tenant"].ports["vm3"].up);
}

#[test]
fn the_empty_topology_is_valid() {
    let t = parse_str("version: 1\n").unwrap();
    assert_eq!(t, Topology::default());
    t.validate().unwrap();
    assert_eq!(t.to_yaml(), "version: 1\n");
}
