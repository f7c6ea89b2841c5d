//! One tenant cannot starve the others, end to end: real vnetd, a guest
//! sending new flows as fast as it can, another guest opening TCP
//! connections through the same vnetd meanwhile.
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use vnet_e2e::{have_root, run, Guest, World};

const FLOODER_MAC: &str = "02:00:00:00:0f:01";
const CLIENT_MAC: &str = "02:00:00:00:0f:02";
const SERVER_MAC: &str = "02:00:00:00:0f:03";
const SINK_MAC: &str = "02:00:00:00:0f:04";
/// vnetd's default upcall budget of a port (`--upcall-rate`, `--upcall-burst`).
const RATE: u64 = 2000;
const BURST: u64 = 500;

/// Four guests on one bridge: a flooder, a TCP client, its server, and the
/// sink of the flood.
fn world(test: &str) -> Result<(World, [Guest; 4])> {
    world_with(test, &[])
}

/// [`world`] with more vnetd flags.
fn world_with(test: &str, args: &[&str]) -> Result<(World, [Guest; 4])> {
    let mut w = World::new(test)?;
    let flooder = w.guest("flooder", "fl-h", FLOODER_MAC, "10.0.0.11")?;
    let client = w.guest("client", "cl-h", CLIENT_MAC, "10.0.0.12")?;
    let server = w.guest("server", "sv-h", SERVER_MAC, "10.0.0.13")?;
    let sink = w.guest("sink", "sk-h", SINK_MAC, "10.0.0.14")?;
    let topo = w.topology_file(
        "version: 1\nbridges:\n  tenant:\n    ports:\n      flooder: {interface: fl-h}\n      \
         client: {interface: cl-h}\n      server: {interface: sv-h}\n      sink: {interface: sk-h}\n",
    )?;
    w.start_vnetd_args(&topo, args)?;
    // The sink speaks once so that the bridge knows its MAC: the flood is
    // unicast to it, one new flow per packet, never flooded to the others.
    if w.ping(&sink, &flooder.ip, 1)? != 1 {
        bail!("the sink cannot reach the flooder before the test");
    }
    Ok((w, [flooder, client, server, sink]))
}

/// UDP frames to the sink, each with a new (source port, destination port)
/// and so a new flow key, sent on a raw socket as fast as Python can for
/// `seconds`; prints how many.
fn flood(seconds: f64) -> String {
    format!(
        r#"
import socket, struct, time
def mac(s): return bytes.fromhex(s.replace(':', ''))
payload = b'flood' * 4
udp_len = 8 + len(payload)
ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
               socket.inet_aton('10.0.0.11'), socket.inet_aton('10.0.0.14')))
csum = sum(struct.unpack('!10H', ip))
csum = (csum & 0xffff) + (csum >> 16)
csum = (csum & 0xffff) + (csum >> 16)
struct.pack_into('!H', ip, 10, ~csum & 0xffff)
frame = bytearray(mac('{SINK_MAC}') + mac('{FLOODER_MAC}') + b'\x08\x00' + bytes(ip)
                  + struct.pack('!HHHH', 0, 0, udp_len, 0) + payload)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
n, end = 0, time.time() + {seconds}
while time.time() < end:
    for _ in range(2000):
        struct.pack_into('!HH', frame, 34, 1024 + n % 64000, 1024 + n // 64000)
        try:
            s.send(frame)
        except OSError:
            pass
        n += 1
print(n)
"#
    )
}

/// A server accepting connections and answering each with `pong`.
const SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7100))
s.listen(64)
s.settimeout(30)
while True:
    c, a = s.accept()
    c.settimeout(5)
    try:
        c.recv(16)
        c.sendall(b'pong')
    except OSError:
        pass
    c.close()
"#;

/// Opens `n` TCP connections one after the other, each with a 3 s budget
/// to connect and get its answer; prints one line per connection: the
/// milliseconds it took, or why it failed.
fn connections(n: u32) -> String {
    format!(
        r#"
import socket, time
for i in range({n}):
    t = time.time()
    try:
        c = socket.create_connection(('10.0.0.13', 7100), timeout=3)
        c.settimeout(3)
        c.sendall(b'ping')
        ok = c.recv(16) == b'pong'
        c.close()
        print('%.1f' % ((time.time() - t) * 1000) if ok else 'no-pong')
    except OSError as e:
        print('failed:%s' % e)
"#
    )
}

fn stats_reason(stats: &serde_json::Value, name: &str) -> u64 {
    stats["reasons"][name].as_u64().unwrap_or(0)
}

#[test]
fn a_guest_flooding_new_flows_does_not_keep_another_from_connecting() -> Result<()> {
    if !have_root("a_guest_flooding_new_flows_does_not_keep_another_from_connecting") {
        return Ok(());
    }
    let (mut w, [flooder, client, server, _sink]) = world("fairness")?;
    let _server = w.spawn(&server, &["/usr/bin/python3", "-c", SERVER])?;
    let before = w.vnetctl_json(&["stats"])?;
    let flooder_rx_before = vnet_e2e::port_userspace_rx(&before, "tenant/flooder")?;

    let flood_seconds = 6.0;
    let started = Instant::now();
    let flood = w.spawn(&flooder, &["/usr/bin/python3", "-c", &flood(flood_seconds)])?;
    // Connect once the flood is under way: it has gone over its budget.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats_reason(&w.vnetctl_json(&["stats"])?, "upcall_budget") == 0 {
        if Instant::now() > deadline {
            bail!("the flood never went over its upcall budget");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connecting = Instant::now();
    let lines = w.python(&client, &connections(20))?;
    let connect_time = connecting.elapsed();
    let flood_running = started.elapsed() < Duration::from_secs_f64(flood_seconds);
    let sent: u64 = flood
        .finish(Duration::from_secs(20))?
        .trim()
        .parse()
        .context("the flooder's count")?;
    let flood_time = started.elapsed();

    let times: Vec<f64> = lines.lines().filter_map(|l| l.parse().ok()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "flooder sent {sent} new flows in {:.1} s; 20 connections took {:.2} s in all \
         (per connection: median {:.1} ms, max {:.1} ms)",
        flood_time.as_secs_f64(),
        connect_time.as_secs_f64(),
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
    );
    assert!(
        flood_running,
        "the connections were made while the flood ran"
    );
    assert_eq!(
        times.len(),
        20,
        "every connection is made and answered: {lines}"
    );

    let stats = w.vnetctl_json(&["stats"])?;
    let over_budget = stats_reason(&stats, "upcall_budget");
    let flooder_rx = vnet_e2e::port_userspace_rx(&stats, "tenant/flooder")? - flooder_rx_before;
    eprintln!(
        "upcall_budget {over_budget}; flooder's frames simulated {flooder_rx}; \
         rx_ring_full {}, fill_ring_empty {}, rx_dropped {}",
        stats_reason(&stats, "rx_ring_full"),
        stats_reason(&stats, "fill_ring_empty"),
        stats_reason(&stats, "rx_dropped"),
    );
    assert!(
        sent > 4 * RATE * flood_seconds as u64,
        "the flood was one ({sent} new flows)"
    );
    assert!(over_budget > 0, "the flood's excess is counted: {stats}");
    // ... and charged to the flooder's port, not to the client's.
    let port_over = |port: &str| {
        stats["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"] == port)
            .and_then(|p| p["upcall_budget"].as_u64())
    };
    assert_eq!(port_over("tenant/flooder"), Some(over_budget), "{stats}");
    assert_eq!(port_over("tenant/client"), Some(0), "{stats}");
    // The flooder's first packets reached the simulation at its rate, no
    // faster (the budget is checked before anything else is done).
    let allowed = RATE * flood_time.as_secs_f64().ceil() as u64 + BURST;
    assert!(
        flooder_rx <= allowed,
        "the flooder got {flooder_rx} frames simulated, more than its budget ({allowed})"
    );
    // vnetd's last stats line names the ports that went over their budget:
    // the flooder's alone.
    let (_, log) = w.stop_vnetd()?;
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("upcall_budget_by_port"))
        .context("vnetd logs its stats when it stops")?;
    assert!(last.contains("\"fl-h\""), "{last}");
    assert!(
        !last.contains("\"cl-h\"") && !last.contains("\"sv-h\""),
        "only the flooder went over its budget: {last}"
    );
    Ok(())
}

#[test]
fn frames_the_kernel_drops_at_a_full_socket_are_counted() -> Result<()> {
    if !have_root("frames_the_kernel_drops_at_a_full_socket_are_counted") {
        return Ok(());
    }
    // No upcall budget: the skb executor's kernel-side budget would keep
    // the flood out of the ring, which is what it is for.
    let (mut w, [flooder, ..]) = world_with("ring-drops", &["--upcall-rate", "0"])?;
    let ring = |s: &serde_json::Value| {
        ["rx_ring_full", "fill_ring_empty", "rx_dropped"]
            .iter()
            .map(|r| stats_reason(s, r))
            .sum::<u64>()
    };
    let before = ring(&w.vnetctl_json(&["stats"])?);
    let flood = w.spawn(&flooder, &["/usr/bin/python3", "-c", &flood(2.0)])?;
    // A worker that stops serving its sockets (stopped, here): the
    // flooder's receive ring fills, and the kernel drops the rest there.
    let pid = w.vnetd_pid().context("vnetd runs")?.to_string();
    run(&["kill", "-STOP", &pid])?;
    std::thread::sleep(Duration::from_millis(800));
    run(&["kill", "-CONT", &pid])?;
    let sent = flood.finish(Duration::from_secs(20))?;
    let stats = w.vnetctl_json(&["stats"])?;
    let dropped = ring(&stats) - before;
    eprintln!("flooder sent {}; ring drops counted {dropped}", sent.trim());
    assert!(dropped > 0, "the socket's drops are counted: {stats}");
    let (status, _) = w.stop_vnetd()?;
    assert!(status.success());
    Ok(())
}
