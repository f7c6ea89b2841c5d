//! Rule chains and connection tracking end to end: real vnetd, namespaces,
//! ping, Python sockets, scapy.
use anyhow::Result;
use vnet_e2e::{have_root, Guest, World};

/// A TCP or UDP client: connects to host:port, sends, prints what came back
/// or `timeout` / `refused` / `unreachable` (EHOSTUNREACH: an ICMP host or
/// administratively prohibited unreachable).
fn client(proto: &str, host: &str, port: u16) -> String {
    let kind = if proto == "tcp" {
        "SOCK_STREAM"
    } else {
        "SOCK_DGRAM"
    };
    format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.{kind})\ns.settimeout(2)\n\
         try:\n    s.connect(('{host}',{port}))\n    s.send(b'ping')\n    print(s.recv(100).decode())\n\
         except socket.timeout:\n    print('timeout')\nexcept ConnectionRefusedError:\n    print('refused')\n\
         except OSError as e:\n    print('unreachable' if e.errno == 113 else 'error %d' % e.errno)\n"
    )
}

/// A one-shot server answering `pong` on port `port`.
fn server(proto: &str, port: u16) -> Vec<String> {
    let code = if proto == "tcp" {
        format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',{port}))\ns.listen()\ns.settimeout(8)\nc,a=s.accept()\nc.recv(100)\nc.sendall(b'pong')\n"
        )
    } else {
        format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\n\
             s.settimeout(8)\nd,a=s.recvfrom(100)\ns.sendto(b'pong',a)\n"
        )
    };
    vec!["/usr/bin/python3".into(), "-c".into(), code]
}

fn serve(w: &World, g: &Guest, proto: &str, port: u16) -> Result<vnet_e2e::Background> {
    let args = server(proto, port);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    w.spawn(g, &refs)
}

/// Guests `inside` (port a) and `outside` (port b) on one bridge whose
/// filters let `inside` open connections and `outside` only answer them.
fn peephole(test: &str) -> Result<(World, Guest, Guest)> {
    let mut w = World::new(test)?;
    let inside = w.guest("inside", "a-h", "02:00:00:00:0a:01", "10.0.0.1")?;
    let outside = w.guest("outside", "b-h", "02:00:00:00:0b:01", "10.0.0.2")?;
    let topo = w.topology_file(
        "version: 1\nchains:\n  track:\n    - {action: continue, match: {conntrack: forward}}\n  \
         guard:\n    - {action: accept, match: {in_ports: [lan/a]}}\n    \
         - {action: accept, match: {ethertype: 0x0806}}\n    \
         - {action: accept, match: {conntrack: return}}\n    - {action: drop}\n\
         bridges:\n  lan:\n    inbound_filter: track\n    outbound_filter: guard\n    ports:\n      \
         a: {interface: a-h}\n      b: {interface: b-h}\n",
    )?;
    w.start_vnetd(&topo)?;
    Ok((w, inside, outside))
}

#[test]
fn peephole_lets_replies_in_and_nothing_else() -> Result<()> {
    if !have_root("peephole_lets_replies_in_and_nothing_else") {
        return Ok(());
    }
    let (w, inside, outside) = peephole("peephole")?;
    for (proto, port) in [("udp", 5000), ("tcp", 7000)] {
        let srv = serve(&w, &outside, proto, port)?;
        let got = w.python(&inside, &client(proto, &outside.ip, port))?;
        assert_eq!(
            got.trim(),
            "pong",
            "{proto}: inside opens, the reply comes back"
        );
        drop(srv);
        let srv = serve(&w, &inside, proto, port + 1)?;
        let got = w.python(&outside, &client(proto, &inside.ip, port + 1))?;
        assert_eq!(
            got.trim(),
            "timeout",
            "{proto}: outside cannot open a connection"
        );
        drop(srv);
    }
    assert_eq!(
        w.ping(&inside, &outside.ip, 3)?,
        3,
        "echo replies are return traffic"
    );
    assert_eq!(
        w.ping(&outside, &inside.ip, 2)?,
        0,
        "echo requests from outside are not"
    );
    Ok(())
}

#[test]
fn only_icmp_errors_related_to_a_connection_pass() -> Result<()> {
    if !have_root("only_icmp_errors_related_to_a_connection_pass") {
        return Ok(());
    }
    let (w, inside, outside) = peephole("related")?;
    // Related: inside's datagram to a closed port is answered by the
    // outside kernel's port unreachable, which must reach inside.
    let got = w.python(&inside, &client("udp", &outside.ip, 9))?;
    assert_eq!(got.trim(), "refused", "the related port unreachable passed");
    // Unrelated: an ICMP error about a connection nobody opened.
    let cap = w.capture(&inside, "icmp")?;
    w.python(
        &outside,
        "from scapy.all import Ether, IP, UDP, ICMP, sendp\n\
         quoted = IP(src='10.0.0.1', dst='10.0.0.2')/UDP(sport=4444, dport=5555)\n\
         sendp(Ether(dst='02:00:00:00:0a:01')/IP(src='10.0.0.2', dst='10.0.0.1')/ICMP(type=3, code=3)/quoted, \
         iface='eth0', count=3, verbose=False)\n",
    )?;
    let seen = cap.finish()?;
    assert!(
        seen.iter().all(|l| !l.contains("5555")),
        "unrelated ICMP error leaked: {seen:?}"
    );
    Ok(())
}

#[test]
fn reject_answers_connection_refused_and_port_unreachable() -> Result<()> {
    if !have_root("reject_answers_connection_refused_and_port_unreachable") {
        return Ok(());
    }
    let mut w = World::new("reject")?;
    let a = w.guest("a", "x-h", "02:00:00:00:0a:01", "10.0.0.2")?;
    let b = w.guest("b", "y-h", "02:00:00:00:0b:01", "10.1.0.2")?;
    w.route(&a, &["default", "via", "10.0.0.1"])?;
    w.route(&b, &["default", "via", "10.1.0.1"])?;
    let topo = w.topology_file(
        "version: 1\nchains:\n  guard:\n    - {action: reject, reject_with: tcp-reset, match: {protocol: tcp, dst_ports: 7}}\n    \
         - {action: reject, reject_with: icmp-port-unreachable, match: {protocol: udp, dst_ports: 7}}\n    \
         - {action: reject, match: {protocol: tcp, dst_ports: 8}}\n\
         routers:\n  r:\n    inbound_filter: guard\n    ports:\n      \
         x: {address: 10.0.0.1/24, interface: x-h}\n      y: {address: 10.1.0.1/24, interface: y-h}\n    \
         routes: [{dst: 10.0.0.0/24, port: x}, {dst: 10.1.0.0/24, port: y}]\n",
    )?;
    w.start_vnetd(&topo)?;
    // b listens on every port used, so a refusal can only come from vnet.
    let _s1 = serve(&w, &b, "tcp", 7)?;
    let _s2 = serve(&w, &b, "udp", 7)?;
    assert_eq!(
        w.python(&a, &client("tcp", &b.ip, 7))?.trim(),
        "refused",
        "tcp-reset: connection refused"
    );
    assert_eq!(
        w.python(&a, &client("udp", &b.ip, 7))?.trim(),
        "refused",
        "icmp-port-unreachable"
    );
    let nc = w.exec(&a, &["nc", "-z", "-w", "2", &b.ip, "7"])?;
    assert!(!nc.status.success(), "nc sees the port closed");
    // The default reject (ICMP administratively prohibited) fails the
    // connection at once with "no route to host".
    assert_eq!(
        w.python(&a, &client("tcp", &b.ip, 8))?.trim(),
        "unreachable",
        "admin prohibited"
    );
    let _s3 = serve(&w, &b, "tcp", 9)?;
    assert_eq!(
        w.python(&a, &client("tcp", &b.ip, 9))?.trim(),
        "pong",
        "other ports pass"
    );
    Ok(())
}

#[test]
fn ethertype_and_masked_mac_matches() -> Result<()> {
    if !have_root("ethertype_and_masked_mac_matches") {
        return Ok(());
    }
    let mut w = World::new("l2match")?;
    let a = w.guest("a", "a-h", "02:00:00:00:0a:01", "10.0.0.1")?;
    let b = w.guest("b", "b-h", "02:00:00:00:0b:01", "10.0.0.2")?;
    let c = w.guest("c", "c-h", "02:00:00:00:0c:01", "10.0.0.3")?;
    let q = w.guest("q", "q-h", "02:00:00:00:0c:02", "10.0.0.4")?;
    // Frames from 02:00:00:00:0c:* are dropped; ARP from port a is dropped.
    let topo = w.topology_file(
        "version: 1\nchains:\n  c:\n    - {action: drop, match: {eth_src: \"02:00:00:00:0c:00/ff:ff:ff:ff:ff:00\"}}\n    \
         - {action: drop, match: {ethertype: 0x0806, in_ports: [lan/a]}}\n\
         bridges:\n  lan:\n    inbound_filter: c\n    ports:\n      a: {interface: a-h}\n      \
         b: {interface: b-h}\n      c: {interface: c-h}\n      q: {interface: q-h}\n",
    )?;
    w.start_vnetd(&topo)?;
    assert_eq!(w.ping(&b, &a.ip, 2)?, 0, "a cannot answer ARP");
    w.exec(
        &a,
        &[
            "ip",
            "neigh",
            "replace",
            &b.ip,
            "lladdr",
            "02:00:00:00:0b:01",
            "dev",
            "eth0",
        ],
    )?;
    w.exec(
        &b,
        &[
            "ip",
            "neigh",
            "replace",
            &a.ip,
            "lladdr",
            "02:00:00:00:0a:01",
            "dev",
            "eth0",
        ],
    )?;
    assert_eq!(
        w.ping(&b, &a.ip, 2)?,
        2,
        "with static neighbours, IPv4 from a passes: only ARP was dropped"
    );
    assert_eq!(w.ping(&c, &b.ip, 2)?, 0, "c's MAC matches the masked rule");
    assert_eq!(w.ping(&q, &b.ip, 2)?, 0, "so does q's");
    w.exec(
        &b,
        &[
            "ip",
            "neigh",
            "replace",
            &c.ip,
            "lladdr",
            "02:00:00:00:0c:01",
            "dev",
            "eth0",
        ],
    )?;
    Ok(())
}

#[test]
fn a_chain_accepting_only_unfragmented_packets_drops_big_pings() -> Result<()> {
    if !have_root("a_chain_accepting_only_unfragmented_packets_drops_big_pings") {
        return Ok(());
    }
    let mut w = World::new("frag")?;
    let a = w.guest("a", "a-h", "02:00:00:00:0a:01", "10.0.0.1")?;
    let b = w.guest("b", "b-h", "02:00:00:00:0b:01", "10.0.0.2")?;
    let topo = w.topology_file(
        "version: 1\nchains:\n  c:\n    - {action: accept, match: {ethertype: 0x0800, fragments: unfragmented}}\n    \
         - {action: accept, match: {ethertype: 0x0806}}\n    - {action: drop}\n\
         bridges:\n  lan:\n    inbound_filter: c\n    ports:\n      a: {interface: a-h}\n      b: {interface: b-h}\n",
    )?;
    w.start_vnetd(&topo)?;
    assert_eq!(w.ping(&a, &b.ip, 2)?, 2);
    let big = w.exec(&a, &["ping", "-c", "2", "-W", "1", "-s", "3000", &b.ip])?;
    let text = String::from_utf8_lossy(&big.stdout);
    assert!(
        text.contains(" 0 received"),
        "ping -s 3000 must be dropped: {text}"
    );
    let mid = w.exec(&a, &["ping", "-c", "2", "-W", "1", "-s", "1000", &b.ip])?;
    assert!(String::from_utf8_lossy(&mid.stdout).contains(" 2 received"));
    Ok(())
}

/// The replies counted in `ping` output lines so far (icmp_seq numbers).
fn replied_seqs(out: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| {
            l.split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_rule_added_while_a_ping_runs_stops_it_and_removing_it_restores_it() -> Result<()> {
    if !have_root("a_rule_added_while_a_ping_runs_stops_it_and_removing_it_restores_it") {
        return Ok(());
    }
    let mut w = World::new("live-rule")?;
    let a = w.guest("a", "a-h", "02:00:00:00:0a:01", "10.0.0.1")?;
    let b = w.guest("b", "b-h", "02:00:00:00:0b:01", "10.0.0.2")?;
    let open = "version: 1\nchains:\n  c:\n    - {action: accept}\n\
                bridges:\n  lan:\n    inbound_filter: c\n    ports:\n      a: {interface: a-h}\n      b: {interface: b-h}\n";
    let closed = open.replace(
        "- {action: accept}",
        "- {action: drop, match: {protocol: icmp}}",
    );
    w.start_vnetd(&w.topology_file(open)?)?;
    // 60 pings at 0.1 s: 6 s in all; the rule is there from 2 s to 4 s.
    let ping = w.spawn(
        &a,
        &["ping", "-n", "-c", "60", "-i", "0.1", "-W", "1", &b.ip],
    )?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    w.apply(&closed)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    w.apply(open)?;
    let out = ping.finish(std::time::Duration::from_secs(10))?;
    let seqs = replied_seqs(&out);
    // The established flow is in the kernel: only invalidation by the
    // chain's tag makes the rule apply to its next packet.
    let gap = |lo: u32, hi: u32| seqs.iter().filter(|s| (lo..=hi).contains(*s)).count();
    assert!(gap(1, 15) >= 12, "pings answered before the rule: {seqs:?}");
    assert_eq!(
        gap(25, 38),
        0,
        "no ping answered while the rule is in place: {seqs:?}"
    );
    assert!(
        gap(48, 60) >= 10,
        "pings answered again after the rule is removed: {seqs:?}"
    );
    Ok(())
}
