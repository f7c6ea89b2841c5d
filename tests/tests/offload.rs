//! Guests with their default offloads (transmit checksum offload and GSO
//! on, as every Linux guest starts): bulk TCP and UDP through the bridge,
//! the router with SNAT, the port forward (DNAT) and the floating IP, with
//! every byte checked and no checksum error anywhere.
//!
//! Nothing in a guest is changed. The checksums are checked where they can
//! be: a partial checksum is trusted by a receiver on the same host (the
//! kernel finishes nothing for local delivery), so the outside network here
//! behaves as a real one does: `out`, its router, transmits towards `far`
//! with checksum offload off (the kernel then finishes each checksum from
//! the seed vnet left in the packet, as a NIC would), and `far` sends full
//! checksums. A seed vnet rewrote wrongly then arrives wrong at `far` and is
//! counted (InCsumErrors); a full checksum vnet rewrote wrongly is counted
//! by the guest. `out` and `far` stand for the Internet, not for tenants.
//!
//! Run with the uplink on each executor: skb, and XDP, where the flows
//! from the uplink to the guests go from XDP to the tc program
//! (`xdp_pass_to_tc`).
use anyhow::{ensure, Context, Result};
use std::time::Duration;
use vnet_e2e::{have_root, run, Guest, World};

const TOPOLOGY: &str = "version: 1
bridges:
  tenant:
    ports:
      vm1: {interface: vm1-h}
      vm2: {interface: vm2-h}
      gw: {peer: edge/tenant}
routers:
  edge:
    ports:
      tenant: {address: 10.0.0.1/24, peer: tenant/gw}
      uplink: {address: 192.0.2.2/24, interface: uplink-h, executor: EXECUTOR}
    routes:
      - {dst: 10.0.0.0/24, port: tenant}
      - {dst: 192.0.2.0/24, port: uplink}
      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}
nat:
  - {router: edge, type: snat, from: 10.0.0.0/24, to: 192.0.2.10, ports: 1024-65535, port: uplink}
  - {router: edge, type: floating_ip, public: 192.0.2.50, private: 10.0.0.11, port: uplink}
  - {router: edge, type: port_forward, protocol: tcp, public: 192.0.2.10, public_ports: 8080,
     private: 10.0.0.12, private_ports: 80, port: uplink}
";

/// Receives UDP datagrams on PORT until 2 s of silence; prints how many
/// arrived with the expected contents.
const UDP_SINK: &str = "import socket,sys\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',int(sys.argv[1])))\n\
s.settimeout(5)\nok=0\n\
try:\n    while True:\n        d,_=s.recvfrom(2048)\n        ok+=d==bytes(i%251 for i in range(1400))\n        s.settimeout(2)\n\
except socket.timeout:\n    pass\nprint(ok)\n";

/// 8 MiB of a fixed pattern: its SHA-256, computed by the sender too.
const BULK_MIB: usize = 8;

fn send_udp(host: &str, port: u16, count: u32) -> String {
    format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         d=bytes(i%251 for i in range(1400))\n\
         for _ in range({count}):\n    s.sendto(d,('{host}',{port}))\n    time.sleep(0.002)\n"
    )
}

struct Net {
    w: World,
    vm1: Guest,
    vm2: Guest,
    out: Guest,
    far: Guest,
}

fn net(test: &str, executor: &str) -> Result<Net> {
    let mut w = World::new(test)?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let (out, far) = w.outside()?;
    // The outside network finishes and sends full checksums (see the module
    // doc): out's side of the link to far, and far itself.
    run(&[
        "ip", "netns", "exec", &out.netns, "ethtool", "-K", "far-h", "tx", "off",
    ])?;
    run(&[
        "ip", "netns", "exec", &far.netns, "ethtool", "-K", "eth0", "tx", "off",
    ])?;
    w.route(&vm1, &["default", "via", "10.0.0.1"])?;
    w.route(&vm2, &["default", "via", "10.0.0.1"])?;
    for g in [&vm1, &vm2] {
        let features = w.exec(g, &["ethtool", "-k", "eth0"])?;
        let text = String::from_utf8_lossy(&features.stdout);
        ensure!(
            text.contains("tx-checksumming: on")
                && text.contains("generic-segmentation-offload: on"),
            "the guests must keep their default offloads:\n{text}"
        );
    }
    let topology = w.topology_file(&TOPOLOGY.replace("EXECUTOR", executor))?;
    w.start_vnetd(&topology)?;
    Ok(Net {
        w,
        vm1,
        vm2,
        out,
        far,
    })
}

/// A TCP stream from `from` to `host:port`, received by `to` on
/// `listen_port`: the receiver must see every byte of it.
fn tcp(n: &Net, from: &Guest, to: &Guest, host: &str, port: u16, listen_port: u16) -> Result<()> {
    n.w.tcp_stream(from, to, (host, port), listen_port, BULK_MIB)
}

/// 100 UDP datagrams of 1400 bytes: all must arrive intact (on veths in
/// one host nothing is lost).
fn udp(n: &Net, from: &Guest, to: &Guest, host: &str, port: u16) -> Result<()> {
    let sink =
        n.w.spawn(to, &["/usr/bin/python3", "-c", UDP_SINK, &port.to_string()])?;
    n.w.python(from, &send_udp(host, port, 100))?;
    let got = sink.finish(Duration::from_secs(30))?;
    ensure!(
        got.trim() == "100",
        "UDP {} → {host}:{port}: {} of 100 datagrams arrived intact",
        from.name,
        got.trim()
    );
    Ok(())
}

/// Tcp and Udp InCsumErrors of a namespace (`/proc/net/snmp`).
fn checksum_errors(w: &World, g: &Guest) -> Result<u64> {
    let out = w.exec(g, &["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0;
    for proto in ["Tcp:", "Udp:"] {
        let mut lines = text.lines().filter(|l| l.starts_with(proto));
        let (names, values) = (lines.next(), lines.next());
        let (Some(names), Some(values)) = (names, values) else {
            anyhow::bail!("no {proto} lines in /proc/net/snmp of {}", g.name);
        };
        let at = names
            .split_whitespace()
            .position(|n| n == "InCsumErrors")
            .with_context(|| format!("no InCsumErrors in {names}"))?;
        total += values
            .split_whitespace()
            .nth(at)
            .context("short /proc/net/snmp line")?
            .parse::<u64>()?;
    }
    Ok(total)
}

fn every_path(test: &str, uplink_executor: &str) -> Result<()> {
    let n = net(test, uplink_executor)?;
    // Bridged: guest to guest.
    tcp(&n, &n.vm1, &n.vm2, "10.0.0.12", 5001, 5001)?;
    udp(&n, &n.vm1, &n.vm2, "10.0.0.12", 5002)?;
    // Routed and SNAT (vm2 leaves as 192.0.2.10).
    tcp(&n, &n.vm2, &n.far, "198.18.0.2", 5003, 5003)?;
    udp(&n, &n.vm2, &n.far, "198.18.0.2", 5004)?;
    // The floating IP, both ways (vm1 is 192.0.2.50; its firewall admits
    // everything here: no firewall in this topology).
    tcp(&n, &n.vm1, &n.far, "198.18.0.2", 5005, 5005)?;
    tcp(&n, &n.far, &n.vm1, "192.0.2.50", 5006, 5006)?;
    udp(&n, &n.far, &n.vm1, "192.0.2.50", 5007)?;
    // The port forward (DNAT): 192.0.2.10:8080 is vm2:80.
    tcp(&n, &n.far, &n.vm2, "192.0.2.10", 8080, 80)?;
    for g in [&n.vm1, &n.vm2, &n.out, &n.far] {
        let errors = checksum_errors(&n.w, g)?;
        ensure!(errors == 0, "{} counted {errors} checksum errors", g.name);
    }
    // The bulk ran in the kernel, not through userspace.
    let in_kernel = n.w.kernel_flow_packets("vm1-h")?;
    ensure!(
        in_kernel > 100,
        "only {in_kernel} packets of vm1's flows ran in the kernel"
    );
    let stats = n.w.vnetctl_json(&["stats"])?;
    let reason = |r: &str| stats["reasons"][r].as_u64().unwrap_or(0);
    if uplink_executor == "xdp" {
        ensure!(
            reason("xdp_pass_to_tc") > 0,
            "flows from the XDP uplink to the guests go through tc: {stats}"
        );
    }
    ensure!(reason("tc_hit_redirect") > 0, "{stats}");
    Ok(())
}

#[test]
fn guest_offloads_on_every_path_with_the_uplink_on_the_skb_executor() -> Result<()> {
    if !have_root("guest_offloads_on_every_path_with_the_uplink_on_the_skb_executor") {
        return Ok(());
    }
    every_path("offload-skb", "skb")
}

#[test]
fn guest_offloads_on_every_path_with_the_uplink_on_the_xdp_executor() -> Result<()> {
    if !have_root("guest_offloads_on_every_path_with_the_uplink_on_the_xdp_executor") {
        return Ok(());
    }
    every_path("offload-xdp", "xdp")
}

/// A guest's stream whose flow is invalidated while it runs goes on: its
/// next packets, 64 KB GSO frames, miss the flow table and reach userspace
/// segmented by the upcall pair (each segment behind its own header), and
/// the simulated flow takes over again. Every byte arrives, without a
/// stall.
#[test]
fn a_stream_whose_flows_are_invalidated_while_it_runs_goes_on() -> Result<()> {
    if !have_root("a_stream_whose_flows_are_invalidated_while_it_runs_goes_on") {
        return Ok(());
    }
    let n = net("offload-invalidate", "skb")?;
    let sink = n.w.spawn(
        &n.vm2,
        &["/usr/bin/python3", "-c", vnet_e2e::TCP_SINK, "5010"],
    )?;
    // 64 KB every 10 ms for 8 s: writes big enough for GSO frames. The
    // bound UDP socket only tells `spawn` that the stream is connected.
    let sender = n.w.spawn(
        &n.vm1,
        &[
            "/usr/bin/python3",
            "-c",
            "import socket,hashlib,time\nb=bytes(i%251 for i in range(1<<16))\nh=hashlib.sha256()\n\
             s=socket.create_connection(('10.0.0.12',5010),timeout=10)\n\
             r=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nr.bind(('127.0.0.1',0))\n\
             for _ in range(800):\n    s.sendall(b)\n    h.update(b)\n    time.sleep(0.01)\n\
             s.close()\nprint(800*len(b),h.hexdigest())\n",
        ],
    )?;
    let upcalls = |w: &World| -> Result<u64> {
        Ok(w.vnetctl_json(&["stats"])?["reasons"]["upcall_rx"]
            .as_u64()
            .unwrap_or(0))
    };
    let before = upcalls(&n.w)?;
    // A change of the bridge itself invalidates every flow through it.
    let topology = TOPOLOGY.replace("EXECUTOR", "skb");
    let with_entry = topology.replace(
        "  tenant:\n    ports:",
        "  tenant:\n    arp_table: [{ip: 10.0.0.99, mac: \"02:00:00:00:00:99\"}]\n    ports:",
    );
    // Once the stream runs in the kernel, change the bridge; once its
    // packets came up again, change it back.
    vnet_e2e::poll(
        "the stream running in the kernel",
        Duration::from_secs(10),
        || Ok((n.w.kernel_flow_packets("vm1-h")? >= 20).then_some(())),
    )?;
    n.w.apply(&with_entry)?;
    vnet_e2e::poll(
        "the stream's packets coming up",
        Duration::from_secs(10),
        || Ok((upcalls(&n.w)? > before).then_some(())),
    )?;
    n.w.apply(&topology)?;
    let sent = sender.finish(Duration::from_secs(20))?;
    let got = sink.finish(Duration::from_secs(20))?;
    ensure!(
        got.trim() == sent.trim(),
        "sent {} received {}",
        sent.trim(),
        got.trim()
    );
    // More frames came up than the tc program sent up: GSO frames,
    // segmented on the pair.
    let stats = n.w.vnetctl_json(&["stats"])?;
    let sent_up: u64 = [
        "tc_miss",
        "tc_unparsed",
        "tc_malformed",
        "tc_frag_unknown",
        "tc_action_failed",
    ]
    .iter()
    .map(|r| stats["reasons"][*r].as_u64().unwrap_or(0))
    .sum();
    let (misses, up) = (sent_up, stats["reasons"]["upcall_rx"].as_u64().unwrap_or(0));
    eprintln!(
        "{misses} misses came up as {up} frames ({} during the stream)",
        up - before
    );
    ensure!(
        up > misses,
        "no GSO frame missed and came up segmented: {stats}"
    );
    for g in [&n.vm1, &n.vm2] {
        let errors = checksum_errors(&n.w, g)?;
        ensure!(errors == 0, "{} counted {errors} checksum errors", g.name);
    }
    Ok(())
}
