//! Two hosts sharing one etcd (issue 16, first layer): each host is a
//! namespace running its own vnetd with `--store etcd://...`, joined to
//! etcd by an underlay bridge in a third namespace (HOSTS.md §5). A change
//! applied through one vnetd is what the other one serves and runs; each
//! host registers under a lease, and a vnetd killed with SIGKILL is shown
//! dead by the other within the lease's TTL.
//!
//! Then guests on both hosts, bridged and routed: the ingress host
//! simulates, the frame crosses the underlay in VXLAN, the egress host's
//! kernel delivers it.
//!
//! Needs root and Debian's etcd-server; fails (never skips) without etcd.
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};
use vnet_e2e::hosts::{example, listed_hosts as hosts, Hosts, TTL};
use vnet_e2e::{have_root, poll, run, Guest, World};

const HOSTS: &str = "version: 1
hosts:
  h1: {tunnel_address: 192.0.2.1}
  h2: {tunnel_address: 192.0.2.2}
";

fn topology(extra_port: bool) -> String {
    let mut t = format!(
        "{HOSTS}bridges:
  tenant:
    ports:
      vm1: {{interface: vm1-h, host: h1}}
      vm2: {{interface: vm2-h, host: h2}}
"
    );
    if extra_port {
        t += "      spare: {}\n";
    }
    t
}

#[test]
fn two_vnetds_share_one_etcd_and_see_each_other_die() -> Result<()> {
    if !have_root("two_vnetds_share_one_etcd_and_see_each_other_die") {
        return Ok(());
    }
    let mut h = Hosts::new("etcd", 2)?;
    // Each host has its own guest; a host's vnetd refuses a topology file
    // only for missing interfaces of its own ports.
    h.guest(1, "vm1", "02:00:00:00:01:01", "10.0.0.11", None)?;
    h.guest(2, "vm2", "02:00:00:00:01:02", "10.0.0.12", None)?;
    h.start_vnetd(1, &topology(false))?;
    h.start_vnetd(2, &topology(false))?;
    let (ip1s, ip2s) = (h.ips[0].clone(), h.ips[1].clone());
    let [a, b] = &mut h.worlds[..] else {
        unreachable!("Hosts::new made two hosts")
    };
    // The same file twice is one revision.
    let status = b.vnetctl_json(&["status"])?;
    ensure!(status["stored_revision"] == 1, "status on h2: {status}");

    // An apply through h1 is what h2 serves, and what h2's dataplane runs.
    let out = a.apply(&topology(true))?;
    ensure!(
        out.contains("bridges.tenant.ports.spare"),
        "apply said: {out}"
    );
    let listed = poll(
        "h2 serving the change made through h1",
        Duration::from_secs(5),
        || {
            let t = b.vnetctl_json(&["get"])?;
            Ok(t["bridges"]["tenant"]["ports"]
                .get("spare")
                .is_some()
                .then_some(t))
        },
    )?;
    ensure!(
        listed["hosts"]["h1"]["tunnel_address"] == "192.0.2.1",
        "the topology on h2: {listed}"
    );
    poll("h2 running revision 2", Duration::from_secs(10), || {
        let s = b.vnetctl_json(&["status"])?;
        Ok((s["stored_revision"] == 2 && s["running_revision"] == 2).then_some(()))
    })?;
    // Each host binds its own ports only: the other's are not its.
    for (w, mine, theirs) in [
        (&a, "tenant/vm1", "tenant/vm2"),
        (&b, "tenant/vm2", "tenant/vm1"),
    ] {
        let s = w.vnetctl_json(&["status"])?;
        let ports: Vec<&str> = s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_str())
            .collect();
        ensure!(
            ports.contains(&mine) && !ports.contains(&theirs),
            "{mine} only, not {theirs}: {s}"
        );
    }

    // Both hosts registered, alive, with their ports; the table too.
    let expected = vec![
        (
            "h1".to_string(),
            ip1s.clone(),
            true,
            vec!["tenant/vm1".to_string()],
        ),
        (
            "h2".to_string(),
            ip2s.clone(),
            true,
            vec!["tenant/vm2".to_string()],
        ),
    ];
    ensure!(hosts(b)? == expected, "hosts on h2: {:?}", hosts(b)?);
    ensure!(hosts(a)? == expected, "hosts on h1: {:?}", hosts(a)?);
    let table = b.vnetctl(&["get", "hosts"])?;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    ensure!(
        table.contains("TUNNEL ADDRESS")
            && table.lines().filter(|l| l.contains("alive")).count() == 2,
        "vnetctl get hosts:\n{table}"
    );

    // Still alive after more than a TTL: the leases are kept alive.
    std::thread::sleep(Duration::from_secs(TTL + 1));
    ensure!(
        hosts(b)?.iter().all(|h| h.2),
        "hosts on h2: {:?}",
        hosts(b)?
    );

    // kill -9 of h1's vnetd: h2 shows it dead within the lease's TTL.
    let killed = Instant::now();
    a.kill_vnetd()?;
    poll("h1 dead on h2", Duration::from_secs(TTL + 3), || {
        let h = hosts(b)?;
        Ok((h.len() == 2 && !h[0].2 && h[1].2).then_some(()))
    })?;
    let took = killed.elapsed();
    ensure!(
        took <= Duration::from_secs(TTL + 2),
        "h1 was shown dead {took:?} after its vnetd died; the lease TTL is {TTL} s"
    );
    let table = b.vnetctl(&["get", "hosts"])?;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let h1_line = table
        .lines()
        .find(|l| l.starts_with("h1"))
        .unwrap_or_default();
    ensure!(h1_line.contains("dead"), "vnetctl get hosts:\n{table}");
    eprintln!("h1 shown dead {took:?} after kill -9 (TTL {TTL} s)");
    Ok(())
}

/// Two hosts, one bridge across them and a router whose other network is
/// on the second host (the example the two-host demo runs).
fn across() -> Result<String> {
    example("two-hosts.yaml")
}

/// The example's guests on two hosts: vm1 on h1 (10.0.0.11), vm2
/// (10.0.0.12) and vm3 (10.0.1.13, behind the router) on h2, their default
/// routes through the router.
struct TwoHosts {
    h: Hosts,
    vm1: Guest,
    vm2: Guest,
    vm3: Guest,
}

impl TwoHosts {
    fn new(name: &str) -> Result<TwoHosts> {
        let mut h = Hosts::new(name, 2)?;
        let vm1 = h.guest(1, "vm1", "02:00:00:00:01:01", "10.0.0.11", Some("10.0.0.1"))?;
        let vm2 = h.guest(2, "vm2", "02:00:00:00:01:02", "10.0.0.12", None)?;
        let vm3 = h.guest(2, "vm3", "02:00:00:00:02:03", "10.0.1.13", Some("10.0.1.1"))?;
        Ok(TwoHosts { h, vm1, vm2, vm3 })
    }

    /// Both vnetds on `yaml`, until h1 reaches vm2.
    fn start(&mut self, yaml: &str) -> Result<()> {
        self.h.start(yaml)?;
        self.h.reach(1, &self.vm1, "10.0.0.12")
    }
}

#[test]
fn guests_on_two_hosts_talk_through_vxlan() -> Result<()> {
    if !have_root("guests_on_two_hosts_talk_through_vxlan") {
        return Ok(());
    }
    let mut h = TwoHosts::new("vxlan")?;
    h.start(&across()?)?;
    let TwoHosts { h, vm1, vm2, vm3 } = &mut h;
    let [a, b] = &mut h.worlds[..] else {
        unreachable!("TwoHosts has two hosts")
    };
    // The store gave every placed port its tunnel key.
    let t = a.vnetctl_json(&["get"])?;
    let keys: Vec<u64> = ["tenant.ports.vm1", "tenant.ports.vm2", "other.ports.vm3"]
        .iter()
        .filter_map(|p| {
            let (bridge, port) = p.split_once(".ports.")?;
            t["bridges"][bridge]["ports"][port]["tunnel_key"].as_u64()
        })
        .collect();
    ensure!(keys.len() == 3, "tunnel keys in the stored topology: {t}");

    // Bridged: vm1 on h1, vm2 on h2.
    ensure!(a.ping(vm1, "10.0.0.12", 3)? == 3, "vm1 → vm2 across hosts");
    // Routed: the router runs on h1 for vm1's packets, on h2 for vm3's.
    ensure!(
        a.ping(vm1, "10.0.1.13", 3)? == 3,
        "vm1 → vm3 routed across hosts"
    );
    // Bulk TCP with the guests' offloads (GSO frames through the tunnel).
    a.tcp_stream(vm1, vm2, ("10.0.0.12", 5001), 5001, 8)
        .context("TCP vm1 → vm2 across hosts")?;
    a.tcp_stream(vm3, vm1, ("10.0.0.11", 5002), 5002, 8)
        .context("TCP vm3 → vm1 routed across hosts")?;
    // The kernel carried the connections once their flows were in: h1
    // encapsulated and h2 decapsulated, and back.
    for (w, host) in [(&a, "h1"), (&b, "h2")] {
        let (encap, decap) = (w.reason("tunnel_encap")?, w.reason("tunnel_decap")?);
        ensure!(
            encap > 100 && decap > 100,
            "{host}: tunnel_encap {encap}, tunnel_decap {decap}: the kernel should carry the streams"
        );
    }

    // The next hop's MAC changes under installed flows (a peer's NIC
    // replaced): h1 notices within a second or two and drops its flows
    // towards h2 (new ones take the MAC the table has). Here h2's underlay
    // MAC is written over in h1's neighbour table, then put back.
    let (ul_a, ul_b) = (format!("{}-ul", a.prefix), format!("{}-ul", b.prefix));
    // `ip netns exec` mounts the namespace's own /sys.
    let address = format!("/sys/class/net/{ul_b}/address");
    let out = run(&["ip", "netns", "exec", &b.host, "cat", &address])?;
    let real = String::from_utf8_lossy(&out.stdout);
    let real = real.trim().to_string();
    let neigh = |mac: &str| {
        run(&[
            "ip",
            "-n",
            &a.host,
            "neigh",
            "replace",
            "192.0.2.2",
            "lladdr",
            mac,
            "dev",
            &ul_a,
            "nud",
            "permanent",
        ])
    };
    neigh("02:00:00:00:99:99")?;
    poll(
        "h1's flows towards h2 dropped after its MAC changed",
        Duration::from_secs(5),
        || {
            Ok(a.vnetd_log()
                .contains("next hop of a tunnel changed")
                .then_some(()))
        },
    )?;
    neigh(&real)?;
    poll(
        "vm2 reached by h2's MAC again",
        Duration::from_secs(5),
        || Ok((a.ping(vm1, "10.0.0.12", 1)? == 1).then_some(())),
    )?;
    run(&[
        "ip",
        "-n",
        &a.host,
        "neigh",
        "del",
        "192.0.2.2",
        "dev",
        &ul_a,
    ])?;

    // An etcd outage: both hosts go on forwarding on what they have, the
    // established flows and new connections on the last topology, and see
    // each other alive again once etcd is back.
    let etcd = h.underlay.etcd()?;
    etcd.kill();
    ensure!(
        a.ping(vm1, "10.0.0.12", 3)? == 3,
        "vm1 → vm2 with etcd down"
    );
    a.tcp_stream(vm1, vm2, ("10.0.0.12", 5004), 5004, 1)
        .context("a new connection vm1 → vm2 with etcd down")?;
    etcd.restart()
        .map_err(|e| anyhow::anyhow!("restarting etcd: {e}"))?;
    poll(
        "both hosts alive after the outage",
        Duration::from_secs(15),
        || {
            let h = hosts(a)?;
            Ok((h.len() == 2 && h.iter().all(|h| h.2)).then_some(()))
        },
    )?;
    ensure!(
        a.ping(vm1, "10.0.1.13", 3)? == 3,
        "vm1 → vm3 after the outage"
    );

    // kill -9 of h2's vnetd: within its lease's TTL h1 stops sending to
    // h2's ports (the flows towards them go, their packets are dropped and
    // counted); restarted, h2 is reached again, by the same tunnel keys.
    let dropped = a.reason("no_egress")?;
    b.kill_vnetd()?;
    let killed = Instant::now();
    poll(
        "h1 dropping what is for the dead h2",
        Duration::from_secs(TTL + 5),
        || {
            Ok(
                (a.ping(vm1, "10.0.0.12", 1)? == 0 && a.reason("no_egress")? > dropped)
                    .then_some(()),
            )
        },
    )?;
    eprintln!(
        "h2's ports unreachable {:?} after kill -9 (TTL {TTL} s)",
        killed.elapsed()
    );
    h.start_vnetd(2, &across()?).context("vnetd on h2 again")?;
    let a = h.host(1);
    poll("vm2 reached again", Duration::from_secs(TTL + 5), || {
        Ok((a.ping(vm1, "10.0.0.12", 1)? == 1).then_some(()))
    })?;
    let again = a.vnetctl_json(&["get"])?;
    ensure!(
        again["bridges"]["tenant"]["ports"]["vm2"]["tunnel_key"]
            == t["bridges"]["tenant"]["ports"]["vm2"]["tunnel_key"],
        "vm2's tunnel key changed: {again}"
    );
    Ok(())
}

/// The two-host example with state that must follow the traffic: vm1's
/// port lets in only the replies of what vm1 opened (`replies`), and vm1
/// leaves by SNAT through an uplink on h2. vm1's packets are simulated on
/// h1, their replies on h2 (where vm2 is, and the uplink).
fn stateful_across() -> Result<String> {
    let t = across()?
        .replace(
            "vm1: {interface: vm1-h, host: h1,",
            "vm1: {interface: vm1-h, host: h1, inbound_filter: track, outbound_filter: replies,",
        )
        .replace(
            "      other: {address: 10.0.1.1/24, peer: other/gw}\n",
            "      other: {address: 10.0.1.1/24, peer: other/gw}\n      \
             uplink: {address: 192.0.2.2/24, interface: uplink-h, host: h2}\n",
        )
        .replace(
            "      - {dst: 10.0.1.0/24, port: other}\n",
            "      - {dst: 10.0.1.0/24, port: other}\n      \
             - {dst: 192.0.2.0/24, port: uplink}\n      \
             - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}\n",
        );
    Ok(t + "chains:
  track:
    - {action: continue, match: {conntrack: forward}}
  replies:
    - {action: accept, match: {conntrack: return}}
    - {action: drop}
nat:
  - {router: edge, type: snat, from: 10.0.0.0/24, to: 192.0.2.10, ports: 1024-65535, port: uplink}
")
}

/// Connection and NAT state reach the host that simulates the replies
/// before the replies do (`flow_state`): without it, vm2's answers to vm1
/// would be dropped by vm1's filter on h2, and the outside's answers to
/// vm1's SNATed packets would find no binding on h2.
#[test]
fn state_reaches_the_host_that_simulates_the_replies() -> Result<()> {
    if !have_root("state_reaches_the_host_that_simulates_the_replies") {
        return Ok(());
    }
    let mut h = TwoHosts::new("vxstate")?;
    let (out, far) = h.h.host_mut(2).outside()?;
    h.start(&stateful_across()?)?;
    let TwoHosts { h, vm1, vm2, .. } = &h;
    let (a, b) = (h.host(1), h.host(2));

    // vm1's connections get their replies (simulated on h2)...
    ensure!(
        a.ping(vm1, "10.0.0.12", 3)? == 3,
        "vm1 → vm2 and its replies"
    );
    // ...and nobody else may open one towards vm1.
    ensure!(
        b.ping(vm2, "10.0.0.11", 2)? == 0,
        "vm2 → vm1 must be dropped"
    );
    // SNAT on h1, the uplink and the outside's replies on h2.
    let cap = b.capture(&out, "icmp")?;
    ensure!(a.ping(vm1, "198.18.0.2", 3)? == 3, "vm1 → far by SNAT");
    let lines = cap.finish()?;
    ensure!(
        lines.iter().any(|l| l.contains("192.0.2.10 > 198.18.0.2")),
        "the outside sees the SNAT address: {lines:?}"
    );
    b.tcp_stream(vm1, &far, ("198.18.0.2", 5003), 5003, 8)
        .context("TCP vm1 → far by SNAT, replies through h2")?;
    for (w, host) in [(&a, "h1"), (&b, "h2")] {
        let refused = w.reason("flow_state_refused")?;
        ensure!(refused == 0, "{host} refused {refused} flow-state messages");
    }
    Ok(())
}

/// Guests whose ports name no addresses: each host learns the other's
/// guests' MACs from flow state (the egress host delivers a tunnelled
/// frame by its key, without simulating, so it never learns them itself),
/// and the kernel carries the traffic both ways instead of every frame
/// flooding through userspace.
#[test]
fn macs_learned_on_one_host_are_known_to_the_other() -> Result<()> {
    if !have_root("macs_learned_on_one_host_are_known_to_the_other") {
        return Ok(());
    }
    let yaml = across()?
        .replace(
            r#"vm1: {interface: vm1-h, host: h1, addresses: ["02:00:00:00:01:01 10.0.0.11"]}"#,
            "vm1: {interface: vm1-h, host: h1}",
        )
        .replace(
            r#"vm2: {interface: vm2-h, host: h2, addresses: ["02:00:00:00:01:02 10.0.0.12"]}"#,
            "vm2: {interface: vm2-h, host: h2}",
        );
    ensure!(
        !yaml.contains("01:01 10.0.0.11"),
        "the example changed: {yaml}"
    );
    let mut h = TwoHosts::new("vxmac")?;
    h.start(&yaml)?;
    let TwoHosts { h, vm1, vm2, .. } = &h;
    let (a, b) = (h.host(1), h.host(2));
    a.tcp_stream(vm1, vm2, ("10.0.0.12", 5004), 5004, 8)
        .context("TCP vm1 → vm2, learned MACs")?;
    b.tcp_stream(vm2, vm1, ("10.0.0.11", 5005), 5005, 8)
        .context("TCP vm2 → vm1, learned MACs")?;
    for (w, host) in [(a, "h1"), (b, "h2")] {
        let (encap, decap) = (w.reason("tunnel_encap")?, w.reason("tunnel_decap")?);
        ensure!(
            encap > 100 && decap > 100,
            "{host}: tunnel_encap {encap}, tunnel_decap {decap}: frames to learned MACs \
             should be carried by the kernel, not flooded"
        );
    }
    Ok(())
}

/// A routed underlay: h2 on a subnet of its own behind a router (the
/// underlay namespace). The flows towards h2 are addressed to the
/// gateway's MAC (the underlay's route towards h2), so the kernel carries
/// the tunnels both ways, as on one subnet.
#[test]
fn a_routed_underlay_carries_the_tunnels() -> Result<()> {
    if !have_root("a_routed_underlay_carries_the_tunnels") {
        return Ok(());
    }
    let yaml = across()?.replace(
        "h2: {tunnel_address: 192.0.2.2}",
        "h2: {tunnel_address: 198.51.100.2}",
    );
    ensure!(yaml.contains("198.51.100.2"), "the example changed: {yaml}");
    let mut h = TwoHosts::new("vxroute")?;
    h.h.route_host(2)?;
    h.start(&yaml)?;
    let TwoHosts { h, vm1, vm2, vm3 } = &h;
    let (a, b) = (h.host(1), h.host(2));
    ensure!(a.ping(vm1, "10.0.1.13", 3)? == 3, "vm1 → vm3 routed across");
    a.tcp_stream(vm1, vm2, ("10.0.0.12", 5006), 5006, 8)
        .context("TCP vm1 → vm2 over a routed underlay")?;
    b.tcp_stream(vm3, vm1, ("10.0.0.11", 5007), 5007, 8)
        .context("TCP vm3 → vm1 over a routed underlay")?;
    for (w, host) in [(a, "h1"), (b, "h2")] {
        let (encap, decap) = (w.reason("tunnel_encap")?, w.reason("tunnel_decap")?);
        ensure!(
            encap > 100 && decap > 100,
            "{host}: tunnel_encap {encap}, tunnel_decap {decap}: the kernel should carry \
             the tunnels through the underlay's gateway"
        );
    }
    Ok(())
}

#[test]
fn vnetd_with_etcd_needs_its_host_and_a_reachable_store() -> Result<()> {
    if !have_root("vnetd_with_etcd_needs_its_host_and_a_reachable_store") {
        return Ok(());
    }
    let vnetd = vnet_e2e::vnetd_path()?;
    let w = World::new("etcd-flags")?;
    let sock = w.dir().join("s.sock");
    let base = |extra: &[&str]| {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &w.host])
            .arg(&vnetd)
            .arg("--state-dir")
            .arg(w.state_dir())
            .arg("--socket")
            .arg(&sock)
            .arg("--bpffs-dir")
            .arg(w.bpffs_dir())
            .args(extra);
        c.output()
    };
    let out = base(&["--store", "etcd://192.0.2.254:2379"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("--host NAME --tunnel-address IP"),
        "{err}"
    );
    let out = base(&[
        "--store",
        "http://x",
        "--host",
        "h",
        "--tunnel-address",
        "192.0.2.1",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("etcd://HOST:PORT"),
        "{err}"
    );
    // Nothing listens there (the namespace has only loopback).
    let started = Instant::now();
    let out = base(&[
        "--store",
        "etcd://127.0.0.1:2379",
        "--host",
        "h",
        "--tunnel-address",
        "192.0.2.1",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("etcd://127.0.0.1:2379"),
        "{err}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}
