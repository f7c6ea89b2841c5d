//! The virtual router end to end: real vnetd, namespaces as guests and as
//! the outside network, ping, traceroute, arping and scapy.
use anyhow::Result;
use vnet_e2e::{have_root, repo_root, Guest, World};

fn route(w: &World, g: &Guest, args: &[&str]) -> Result<()> {
    let mut cmd = vec!["ip", "route", "add"];
    cmd.extend_from_slice(args);
    let out = w.exec(g, &cmd)?;
    anyhow::ensure!(
        out.status.success(),
        "ip route add {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn stdout(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn guests_of_the_example_router_reach_each_other_through_the_kernel() -> Result<()> {
    if !have_root("guests_of_the_example_router_reach_each_other_through_the_kernel") {
        return Ok(());
    }
    let mut w = World::new("router")?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.1.0.10")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.2.0.10")?;
    route(&w, &vm1, &["default", "via", "10.1.0.1"])?;
    route(&w, &vm2, &["default", "via", "10.2.0.1"])?;
    w.start_vnetd(&repo_root().join("examples/router.yaml"))?;
    assert_eq!(w.ping(&vm1, "10.1.0.1", 2)?, 2, "the near gateway");
    assert_eq!(w.ping(&vm1, "10.2.0.1", 2)?, 2, "the far router port");
    assert_eq!(w.ping(&vm1, &vm2.ip, 3)?, 3);
    assert_eq!(w.ping(&vm2, &vm1.ip, 3)?, 3);
    let before = w.kernel_flow_packets("vm1-h")?;
    assert_eq!(w.ping(&vm1, &vm2.ip, 50)?, 50);
    let in_kernel = w.kernel_flow_packets("vm1-h")? - before;
    assert!(
        in_kernel >= 48,
        "only {in_kernel} of 50 requests were routed by kernel flows"
    );
    let ttl = stdout(w.exec(&vm1, &["ping", "-c", "1", &vm2.ip])?);
    assert!(
        ttl.contains("ttl=63"),
        "one router decrements TTL once: {ttl}"
    );

    // 3000-byte pings travel as three fragments; after the first datagram
    // the later fragments hit the flow in the kernel too (FRAGS map).
    let before = w.kernel_flow_packets("vm1-h")?;
    let big = stdout(w.exec(
        &vm1,
        &["ping", "-c", "10", "-i", "0.1", "-s", "3000", &vm2.ip],
    )?);
    assert!(big.contains("10 received"), "ping -s 3000: {big}");
    let in_kernel = w.kernel_flow_packets("vm1-h")? - before;
    assert!(
        in_kernel >= 24,
        "only {in_kernel} of 30 request fragments were routed by kernel flows"
    );
    Ok(())
}

const TWO_ROUTERS: &str = "\
version: 1
bridges:
  red:
    ports:
      vm1: {interface: vm1-h}
      gw: {peer: r1/red}
  far:
    ports:
      vm3: {interface: vm3-h}
      gw: {peer: r2/far}
routers:
  r1:
    ports:
      red: {address: 10.1.0.1/24, peer: red/gw}
      link: {address: 10.9.0.1/30, peer: r2/link}
      uplink: {address: 192.0.2.2/24, interface: up-h}
    routes:
      - {dst: 10.1.0.0/24, port: red}
      - {dst: 10.3.0.0/24, port: link, via: 10.9.0.2}
      - {dst: 192.0.2.0/24, port: uplink}
      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}
  r2:
    ports:
      link: {address: 10.9.0.2/30, peer: r1/link}
      far: {address: 10.3.0.1/24, peer: far/gw, mtu: 1000}
    routes:
      - {dst: 10.3.0.0/24, port: far}
      - {dst: 0.0.0.0/0, port: link, via: 10.9.0.1}
";

/// vm1 — r1 — r2 — vm3, and r1's uplink to an outside namespace.
fn two_routers(test: &str) -> Result<(World, Guest, Guest, Guest)> {
    let mut w = World::new(test)?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.1.0.10")?;
    let vm3 = w.guest("vm3", "vm3-h", "02:00:00:00:01:03", "10.3.0.10")?;
    let out = w.guest("out", "up-h", "02:00:00:00:09:01", "192.0.2.1")?;
    route(&w, &vm1, &["default", "via", "10.1.0.1"])?;
    route(&w, &vm3, &["default", "via", "10.3.0.1"])?;
    route(&w, &out, &["10.0.0.0/8", "via", "192.0.2.2"])?;
    let topo = w.topology_file(TWO_ROUTERS)?;
    w.start_vnetd(&topo)?;
    Ok((w, vm1, vm3, out))
}

#[test]
fn two_routers_in_a_row_and_an_uplink() -> Result<()> {
    if !have_root("two_routers_in_a_row_and_an_uplink") {
        return Ok(());
    }
    let (w, vm1, vm3, out) = two_routers("two-routers")?;
    assert_eq!(w.ping(&vm1, &vm3.ip, 3)?, 3, "across two routers");
    assert_eq!(
        w.ping(&out, &vm3.ip, 3)?,
        3,
        "from the outside through the uplink"
    );
    assert_eq!(
        w.ping(&vm3, &out.ip, 3)?,
        3,
        "to the outside through the default route"
    );
    let ttl = stdout(w.exec(&vm1, &["ping", "-c", "1", &vm3.ip])?);
    assert!(ttl.contains("ttl=62"), "two routers, two decrements: {ttl}");

    // traceroute names each router by the address of the port it entered.
    let trace = stdout(w.exec(
        &vm1,
        &["traceroute", "-n", "-q", "2", "-w", "1", "-m", "5", &vm3.ip],
    )?);
    let hop = |n: usize| {
        trace
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{n} ")))
            .unwrap_or("")
    };
    assert!(hop(1).contains("10.1.0.1"), "hop 1 is r1: {trace}");
    assert!(hop(2).contains("10.9.0.2"), "hop 2 is r2: {trace}");
    assert!(hop(3).contains("10.3.0.10"), "hop 3 is vm3: {trace}");
    Ok(())
}

#[test]
fn fragments_and_path_mtu_across_routers() -> Result<()> {
    if !have_root("fragments_and_path_mtu_across_routers") {
        return Ok(());
    }
    let (w, vm1, vm3, _out) = two_routers("mtu")?;
    assert_eq!(w.ping(&vm1, &vm3.ip, 2)?, 2);
    // 3000-byte pings leave vm1 as fragments; r2's far port (MTU 1000)
    // fragments them again; vm3 reassembles and answers in fragments.
    let out = w.exec(
        &vm1,
        &[
            "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", &vm3.ip,
        ],
    )?;
    let text = stdout(out);
    assert!(text.contains("3 received"), "ping -s 3000: {text}");
    // With DF and a packet too big for r2's far port: fragmentation needed.
    let out = w.exec(
        &vm1,
        &[
            "ping", "-c", "2", "-W", "1", "-M", "do", "-s", "1400", &vm3.ip,
        ],
    )?;
    let text = stdout(out);
    assert!(
        text.contains("mtu = 1000") || text.contains("mtu=1000"),
        "ping -M do: {text}"
    );
    Ok(())
}

#[test]
fn arp_on_the_uplink_answers_and_ignores_spoofing() -> Result<()> {
    if !have_root("arp_on_the_uplink_answers_and_ignores_spoofing") {
        return Ok(());
    }
    let (w, vm1, _vm3, out) = two_routers("arp")?;
    let reply = stdout(w.exec(
        &out,
        &["arping", "-c", "2", "-w", "3", "-I", "eth0", "192.0.2.2"],
    )?);
    assert!(
        reply.to_lowercase().contains("reply") || reply.contains("bytes from"),
        "arping: {reply}"
    );
    // The router's uplink MAC, as the outside sees it.
    assert_eq!(w.ping(&out, "192.0.2.2", 1)?, 1);
    let neigh = stdout(w.exec(&out, &["ip", "neigh", "show", "192.0.2.2"])?);
    let router_mac = neigh
        .split_whitespace()
        .skip_while(|t| *t != "lladdr")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        !router_mac.is_empty(),
        "router MAC learned by the outside: {neigh}"
    );
    // The outside claims vm1's address: the reply comes from outside the
    // uplink's subnet, so r1 must ignore it and keep delivering to vm1.
    let spoof = format!(
        "from scapy.all import Ether, ARP, sendp\n\
         sendp(Ether(dst='{router_mac}', src='02:00:00:00:09:01')/ARP(op=2, hwsrc='02:00:00:00:09:01', \
         psrc='10.1.0.10', hwdst='{router_mac}', pdst='192.0.2.2'), iface='eth0', count=3, verbose=False)\n"
    );
    // Debian's python3, which has python3-scapy (not a pyenv one on PATH).
    let sent = w.exec(&out, &["/usr/bin/python3", "-c", &spoof])?;
    assert!(sent.status.success(), "scapy: {}", stdout(sent));
    assert_eq!(
        w.ping(&out, &vm1.ip, 3)?,
        3,
        "vm1 still reachable after the spoofed reply"
    );
    Ok(())
}
