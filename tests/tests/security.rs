//! Tenant safety end to end: real vnetd, namespaces, scapy and tcpdump.
//! A guest is an attacker: it claims the gateway's address, spoofs its
//! sources, and varies fields outside the flow key to ride another
//! packet's kernel flow.
use anyhow::Result;
use std::time::Duration;
use vnet_e2e::{have_root, poll, Guest, World};

/// How long a readiness poll waits.
const READY_WITHIN: Duration = Duration::from_secs(5);

const TOPOLOGY: &str = "version: 1
bridges:
  tenant:
    inbound_filter: no-tos-16
    ports:
      vm1: {interface: vm1-h, addresses: [\"02:00:00:00:01:01 10.0.0.11\"]}
      vm2: {interface: vm2-h}
      vm3: {interface: vm3-h}
      gw: {peer: edge/tenant}
routers:
  edge:
    ports:
      tenant: {address: 10.0.0.1/24, mac: \"02:00:00:00:00:01\", peer: tenant/gw}
    routes:
      - {dst: 10.0.0.0/24, port: tenant}
chains:
  no-tos-16:
    - {action: drop, match: {tos: 16}}
";

fn world(test: &str) -> Result<(World, Guest, Guest, Guest)> {
    let mut w = World::new(test)?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let vm3 = w.guest("vm3", "vm3-h", "02:00:00:00:01:03", "10.0.0.13")?;
    let topo = w.topology_file(TOPOLOGY)?;
    w.start_vnetd(&topo)?;
    Ok((w, vm1, vm2, vm3))
}

fn reason(w: &World, name: &str) -> Result<u64> {
    let stats = w.vnetctl_json(&["stats"])?;
    Ok(stats["reasons"][name].as_u64().unwrap_or(0))
}

#[test]
fn a_guest_claiming_the_gateway_reaches_no_one() -> Result<()> {
    if !have_root("a_guest_claiming_the_gateway_reaches_no_one") {
        return Ok(());
    }
    let (w, vm1, vm2, vm3) = world("arp-claim")?;
    let cap = w.capture(&vm2, "arp")?;
    w.python(
        &vm3,
        "from scapy.all import Ether, ARP, sendp\n\
         me = '02:00:00:00:01:03'\n\
         claims = [ARP(op=1, hwsrc=me, psrc='10.0.0.1', pdst='10.0.0.1'),\n\
                   ARP(op=2, hwsrc=me, psrc='10.0.0.1', hwdst='ff:ff:ff:ff:ff:ff', pdst='10.0.0.1'),\n\
                   ARP(op=2, hwsrc='ff:ff:ff:ff:ff:ff', psrc='10.0.0.1', pdst='10.0.0.11')]\n\
         for c in claims:\n    sendp(Ether(src=me, dst='ff:ff:ff:ff:ff:ff')/c, iface='eth0', count=3, verbose=False)\n",
    )?;
    let seen = cap.finish()?;
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("10.0.0.1 is-at") || l.contains("who-has 10.0.0.1 tell 10.0.0.1")),
        "another guest heard the claim: {seen:?}"
    );
    assert!(reason(&w, "arp_claims_network_address")? >= 6);
    assert!(reason(&w, "spoofed_arp")? >= 3, "the broadcast sender MAC");
    // vm1 still reaches its real gateway, and knows it by the router's MAC.
    assert_eq!(w.ping(&vm1, "10.0.0.1", 3)?, 3);
    let neigh = w.exec(&vm1, &["ip", "neigh", "show", "10.0.0.1"])?;
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(neigh.contains("02:00:00:00:00:01"), "{neigh}");
    Ok(())
}

#[test]
fn a_secured_port_cannot_spoof_its_sources() -> Result<()> {
    if !have_root("a_secured_port_cannot_spoof_its_sources") {
        return Ok(());
    }
    let (w, vm1, vm2, _vm3) = world("spoof")?;
    assert_eq!(w.ping(&vm1, &vm2.ip, 2)?, 2, "the bridge learns both MACs");
    let cap = w.capture(&vm2, "udp port 5555")?;
    w.python(
        &vm1,
        "from scapy.all import Ether, IP, UDP, sendp\n\
         to = Ether(src='02:00:00:00:01:01', dst='02:00:00:00:01:02')\n\
         sendp(to/IP(src='10.0.0.99', dst='10.0.0.12')/UDP(sport=4000, dport=5555), iface='eth0', count=3, verbose=False)\n\
         sendp(to/IP(src='192.0.2.7', dst='10.0.0.12')/UDP(sport=4001, dport=5555), iface='eth0', count=3, verbose=False)\n\
         sendp(Ether(src='02:00:00:00:01:77', dst='02:00:00:00:01:02')/IP(src='10.0.0.11', dst='10.0.0.12')/UDP(sport=4002, dport=5555), iface='eth0', count=3, verbose=False)\n\
         sendp(to/IP(src='10.0.0.11', dst='10.0.0.12')/UDP(sport=4003, dport=5555), iface='eth0', count=3, verbose=False)\n",
    )?;
    let seen = cap.finish()?;
    let udp: Vec<&String> = seen.iter().filter(|l| l.contains("5555")).collect();
    assert_eq!(udp.len(), 3, "only the genuine datagrams arrive: {seen:?}");
    assert!(udp.iter().all(|l| l.contains("10.0.0.11.4003")), "{udp:?}");
    assert!(reason(&w, "spoofed_ip")? >= 1, "spoofed IPv4 counted");
    assert!(reason(&w, "spoofed_mac")? >= 1, "spoofed MAC counted");
    Ok(())
}

#[test]
fn a_field_outside_the_kernel_flow_cannot_bypass_a_rule() -> Result<()> {
    if !have_root("a_field_outside_the_kernel_flow_cannot_bypass_a_rule") {
        return Ok(());
    }
    let (w, vm1, vm2, _vm3) = world("tos")?;
    assert_eq!(w.ping(&vm1, &vm2.ip, 2)?, 2, "the bridge learns both MACs");
    let cap = w.capture(&vm2, "udp port 6000")?;
    // The same 5-tuple: TOS 0 installs a kernel flow, TOS 16 must not ride
    // it. Then a priority-tagged copy (VID 0) of another 5-tuple, which the
    // untagged port drops, must not blackhole that 5-tuple untagged.
    let send = |packets: &str| {
        w.python(
            &vm1,
            &format!(
                "from scapy.all import Ether, Dot1Q, IP, UDP, sendp\n\
                 eth = Ether(src='02:00:00:00:01:01', dst='02:00:00:00:01:02')\n\
                 ip = lambda tos: IP(src='10.0.0.11', dst='10.0.0.12', tos=tos)\n\
                 sendp({packets}, iface='eth0', inter=0.05, verbose=False)\n"
            ),
        )
    };
    send("[eth/ip(0)/UDP(sport=7000, dport=6000)] * 5")?;
    // The TOS-0 flow is installed and running in the kernel.
    poll(
        "the TOS-0 flow counting in the kernel",
        READY_WITHIN,
        || Ok((w.kernel_flow_packets("vm1-h")? > 0).then_some(())),
    )?;
    send("[eth/ip(16)/UDP(sport=7000, dport=6000)] * 5")?;
    send("[eth/Dot1Q(vlan=0)/ip(0)/UDP(sport=7001, dport=6000)] * 3")?;
    // The priority-tagged copies were decided (and their drop installed).
    poll("the priority-tagged drop counted", READY_WITHIN, || {
        Ok((reason(&w, "vlan_mismatch")? >= 1).then_some(()))
    })?;
    send("[eth/ip(0)/UDP(sport=7001, dport=6000)] * 3")?;
    let seen = cap.finish()?;
    let from = |sport: &str| {
        seen.iter()
            .filter(|l| l.contains(&format!("10.0.0.11.{sport} >")))
            .count()
    };
    assert_eq!(
        from("7000"),
        5,
        "the TOS-16 datagrams are dropped: {seen:?}"
    );
    assert_eq!(
        from("7001"),
        3,
        "only the untagged copies arrive, all of them: {seen:?}"
    );
    assert!(
        w.kernel_flow_packets("vm1-h")? > 0,
        "the TOS-0 flow ran in the kernel"
    );
    assert!(reason(&w, "filter_drop")? >= 1);
    Ok(())
}

#[test]
fn jumbo_frames_work_in_the_kernel_or_are_dropped_with_a_counter() -> Result<()> {
    if !have_root("jumbo_frames_work_in_the_kernel_or_are_dropped_with_a_counter") {
        return Ok(());
    }
    let mut w = World::new("jumbo")?;
    let a = w.guest("a", "ja-h", "02:00:00:00:0a:01", "10.0.0.1")?;
    let b = w.guest("b", "jb-h", "02:00:00:00:0b:01", "10.0.0.2")?;
    for (g, host_if) in [(&a, "ja-h"), (&b, "jb-h")] {
        vnet_e2e::run(&["ip", "-n", &w.host, "link", "set", host_if, "mtu", "9000"])?;
        w.exec(g, &["ip", "link", "set", "eth0", "mtu", "9000"])?;
    }
    let topo = w.topology_file(
        "version: 1\nbridges:\n  lan:\n    ports:\n      a: {interface: ja-h}\n      b: {interface: jb-h}\n",
    )?;
    w.start_vnetd(&topo)?;
    // TCP: the SYN is small and installs the flow; 9000-byte segments then
    // run in the kernel.
    let sink = w.spawn(
        &b,
        &[
            "/usr/bin/python3",
            "-c",
            "import socket\ns=socket.socket()\ns.bind(('0.0.0.0',7100))\ns.listen()\n\
             c,_=s.accept()\nn=0\nwhile True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\nprint(n)\n",
        ],
    )?;
    w.python(
        &a,
        "import socket\ns=socket.create_connection(('10.0.0.2',7100), timeout=10)\n\
         s.sendall(b'x' * 2000000)\ns.close()\n",
    )?;
    let got = sink.finish(std::time::Duration::from_secs(10))?;
    assert_eq!(
        got.trim(),
        "2000000",
        "the whole stream crossed with a 9000 MTU"
    );
    // 2 MB in at most 64 KB GSO frames (the skb executor keeps them
    // whole) is at least 31 of them.
    assert!(
        w.kernel_flow_packets("ja-h")? > 30,
        "the big segments ran in the kernel"
    );
    // A flow whose first packet is larger than a socket frame cannot be
    // simulated: dropped and counted, not lost silently.
    assert_eq!(w.ping(&a, "10.0.0.2", 2)?, 2);
    let _ = w.exec(
        &a,
        &[
            "ping", "-c", "2", "-s", "8000", "-W", "1", "-M", "do", "10.0.0.2",
        ],
    )?;
    assert!(
        reason(&w, "tc_too_big")? >= 2,
        "the oversized first packets are counted"
    );
    Ok(())
}
