//! Driving a running vnetd through its API with vnetctl: live topology
//! changes while traffic flows, restarts on the stored topology, traces,
//! flows and counters.
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use vnet_e2e::{have_root, repo_root, Guest, World};

fn example(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples").join(name)).expect("example file")
}

/// bridge.yaml with three guests.
fn bridge_world(test: &str) -> Result<(World, Guest, Guest, Guest)> {
    let mut w = World::new(test)?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let vm3 = w.guest("vm3", "vm3-h", "02:00:00:00:01:03", "10.0.0.13")?;
    w.start_vnetd(&repo_root().join("examples/bridge.yaml"))?;
    Ok((w, vm1, vm2, vm3))
}

/// The kernel flows whose match mentions `needle`.
fn flows_matching(w: &World, needle: &str) -> Result<Vec<serde_json::Value>> {
    let flows = w.vnetctl_json(&["flows"])?;
    Ok(flows
        .as_array()
        .context("flows is a list")?
        .iter()
        .filter(|f| f["match"].as_str().is_some_and(|m| m.contains(needle)))
        .cloned()
        .collect())
}

#[test]
fn a_port_set_down_live_stops_its_traffic_and_leaves_other_flows() -> Result<()> {
    if !have_root("a_port_set_down_live_stops_its_traffic_and_leaves_other_flows") {
        return Ok(());
    }
    let (w, vm1, vm2, _vm3) = bridge_world("live-down")?;
    let mode = std::fs::metadata(w.socket())?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "API socket mode {mode:o}");

    assert_eq!(w.ping(&vm1, &vm2.ip, 3)?, 3);
    assert_eq!(w.ping(&vm1, "10.0.0.13", 3)?, 3);
    let unrelated = flows_matching(&w, "10.0.0.11 > 10.0.0.13")?;
    assert!(
        !unrelated.is_empty(),
        "a kernel flow vm1 -> vm3 is installed"
    );

    // vm2 down: its pings stop at once, vm1 -> vm3 keeps its kernel flow.
    let down = example("bridge.yaml").replace(
        "vm2: {interface: vm2-h}",
        "vm2: {interface: vm2-h, up: false}",
    );
    let out = w.apply(&down)?;
    assert!(out.contains("~ bridges.tenant.ports.vm2"), "{out}");
    assert!(out.contains("(running)"), "{out}");
    assert_eq!(w.ping(&vm1, &vm2.ip, 3)?, 0, "vm2 is down");
    let still = flows_matching(&w, "10.0.0.11 > 10.0.0.13")?;
    assert_eq!(
        still.iter().map(|f| &f["match"]).collect::<Vec<_>>(),
        unrelated.iter().map(|f| &f["match"]).collect::<Vec<_>>(),
        "the unrelated flow stays installed"
    );
    let trace = w.vnetctl(&[
        "trace",
        "--port",
        "tenant/vm1",
        "--proto",
        "icmp",
        "--src",
        "10.0.0.11",
        "--dst",
        "10.0.0.12",
    ])?;
    let text = String::from_utf8_lossy(&trace.stdout);
    assert!(text.contains("verdict: dropped (port_down)"), "{text}");

    // Up again: pings resume.
    let out = w.apply(&example("bridge.yaml"))?;
    assert!(out.contains("~ bridges.tenant.ports.vm2"), "{out}");
    assert_eq!(w.ping(&vm1, &vm2.ip, 3)?, 3, "vm2 is up again");

    // A rejected file changes nothing and names the field.
    let bad = example("bridge.yaml").replace(
        "vm3: {interface: vm3-h}",
        "vm3: {interface: vm3-h, vlan: 5000}",
    );
    let path = w.dir().join("bad.yaml");
    std::fs::write(&path, bad)?;
    let before = w.vnetctl_json(&["status"])?["stored_revision"].clone();
    let out = w.vnetctl(&["apply", "-f", path.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bridges.tenant.ports.vm3.vlan"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    let status = w.vnetctl_json(&["status"])?;
    assert_eq!(status["stored_revision"], before);
    assert_eq!(status["running_revision"], before);

    // Counters: vm1's traffic was forwarded by kernel flows.
    let stats = w.vnetctl_json(&["stats"])?;
    let vm1_port = stats["ports"]
        .as_array()
        .context("ports")?
        .iter()
        .find(|p| p["port"] == "tenant/vm1")
        .context("tenant/vm1 in stats")?
        .clone();
    assert!(
        vm1_port["kernel_packets"].as_u64().unwrap_or(0) > 0,
        "{vm1_port}"
    );
    assert!(
        stats["reasons"]["port_down"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    Ok(())
}

#[test]
fn vnetd_restarts_on_its_stored_topology_and_binds_live() -> Result<()> {
    if !have_root("vnetd_restarts_on_its_stored_topology_and_binds_live") {
        return Ok(());
    }
    let (mut w, vm1, vm2, vm3) = bridge_world("live-restart")?;
    // Unbind vm3 live, then restart without --topology.
    let two = example("bridge.yaml").replace("      vm3: {interface: vm3-h}\n", "");
    w.apply(&two)?;
    let health = w.vnetctl_json(&["status"])?;
    let bound: Vec<&str> = health["interfaces"]
        .as_array()
        .context("interfaces")?
        .iter()
        .filter_map(|i| i["interface"].as_str())
        .collect();
    assert_eq!(bound, ["vm1-h", "vm2-h"]);
    let (status, _) = w.stop_vnetd()?;
    assert!(status.success());
    w.start_vnetd_stored()?;
    let status = w.vnetctl_json(&["status"])?;
    assert_eq!(status["stored_revision"], 2, "{status}");
    assert_eq!(status["running_revision"], 2, "{status}");
    assert_eq!(w.ping(&vm1, &vm2.ip, 3)?, 3);
    assert_eq!(w.ping(&vm1, &vm3.ip, 2)?, 0, "vm3 is not bound");
    // Bind it again live.
    w.apply(&example("bridge.yaml"))?;
    assert_eq!(w.ping(&vm1, &vm3.ip, 3)?, 3, "vm3 bound live");
    let got = w.vnetctl(&["get", "-o", "yaml"])?;
    let yaml = String::from_utf8_lossy(&got.stdout);
    assert_eq!(
        vnet_model::parse_str(&yaml)?,
        vnet_model::parse_str(&example("bridge.yaml"))?,
        "get -o yaml gives back the applied file"
    );
    // A stored topology whose interface is gone still starts, without
    // that port, and says so.
    w.stop_vnetd()?;
    vnet_e2e::run(&["ip", "-n", &w.host, "link", "del", "vm3-h"])?;
    w.start_vnetd_stored()?;
    let status = w.vnetctl_json(&["status"])?;
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("tenant/vm3") && problems.contains("vm3-h"),
        "{status}"
    );
    assert_eq!(w.ping(&vm1, &vm2.ip, 3)?, 3);
    Ok(())
}

#[test]
fn trace_follows_a_packet_through_the_tenant_nat_example() -> Result<()> {
    if !have_root("trace_follows_a_packet_through_the_tenant_nat_example") {
        return Ok(());
    }
    let mut w = World::new("live-trace")?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    w.guest("out", "uplink-h", "02:00:00:00:09:01", "192.0.2.1")?;
    w.route(&vm1, &["default", "via", "10.0.0.1"])?;
    w.start_vnetd(&repo_root().join("examples/tenant-nat.yaml"))?;
    // Resolve the gateway's MAC first, so that the trace runs to the wire.
    w.ping(&vm1, "192.0.2.1", 2)?;
    let t = w.vnetctl_json(&[
        "trace",
        "--port",
        "tenant/vm1",
        "--proto",
        "tcp",
        "--src",
        "10.0.0.11",
        "--dst",
        "192.0.2.1",
        "--dport",
        "443",
    ])?;
    let kinds: Vec<&str> = t["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    let details: Vec<&str> = t["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .filter_map(|s| s["detail"].as_str())
        .collect();
    let text = details.join("\n");
    for kind in ["ingress", "device", "link", "route", "nat", "egress"] {
        assert!(
            kinds.contains(&kind),
            "no {kind} step in {kinds:?}:\n{text}"
        );
    }
    assert!(
        text.contains("bridge tenant") && text.contains("router edge"),
        "{text}"
    );
    // vm1 leaves through its floating IP.
    assert!(text.contains("192.0.2.50"), "{text}");
    assert!(text.contains("out of edge/uplink"), "{text}");
    assert_eq!(t["verdict"], "forwarded", "{t}");
    // Human form: numbered steps.
    let human = w.vnetctl(&[
        "trace",
        "--port",
        "tenant/vm1",
        "--proto",
        "icmp",
        "--src",
        "10.0.0.11",
        "--dst",
        "192.0.2.1",
    ])?;
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("  1. ingress"), "{human}");
    // A port that does not exist is an error naming it.
    let bad = w.vnetctl(&[
        "trace",
        "--port",
        "tenant/nope",
        "--proto",
        "icmp",
        "--src",
        "10.0.0.11",
        "--dst",
        "10.0.0.12",
    ])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tenant/nope"));
    Ok(())
}

/// `vnetctl flows` reads the flows page by page (the server sends at most
/// 4096 per answer, in flow-key order); small pages list exactly the
/// flows one page does.
#[test]
fn flows_are_listed_page_by_page() -> Result<()> {
    if !have_root("flows_are_listed_page_by_page") {
        return Ok(());
    }
    let (w, vm1, vm2, vm3) = bridge_world("live-pages")?;
    for (from, to) in [(&vm1, &vm2), (&vm1, &vm3), (&vm2, &vm3)] {
        assert_eq!(w.ping(from, &to.ip, 2)?, 2);
    }
    let listed = |args: &[&str]| -> Result<Vec<(String, String, String)>> {
        let flows = w.vnetctl_json(args)?;
        let flows = flows.as_array().context("flows is a list")?;
        Ok(flows
            .iter()
            .map(|f| {
                let text = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                (text("in_port"), text("match"), text("actions"))
            })
            .collect())
    };
    let whole = listed(&["flows"])?;
    assert!(whole.len() >= 6, "{} flows: {whole:?}", whole.len());
    for size in ["1", "2", "5"] {
        assert_eq!(
            listed(&["flows", "--page-size", size])?,
            whole,
            "pages of {size}"
        );
    }
    Ok(())
}
