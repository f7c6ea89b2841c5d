//! Multi-queue interfaces and several workers (issue 14): a port whose
//! interface has several receive queues gets a socket per queue, and
//! `vnetd --workers 2` serves them from two threads; the upcall path of
//! the skb ports gets a queue per worker.
//!
//! The guest's veth has four queues at each end and the port runs the XDP
//! executor (in SKB mode on a veth, as vnetd attaches it there): what the
//! guest sends on transmit queue 2 or 3 reaches the program on receive
//! queue 1 or 2 (the kernel records the transmit queue plus one as the
//! receive queue, and generic XDP reads it back minus one), and the kernel
//! hands a frame only to a socket bound to its receive queue. With one
//! socket on queue 0, about half of the connections below lose every SYN.
use anyhow::{ensure, Result};
use vnet_e2e::{have_root, World};

const TOPOLOGY: &str = r#"
version: 1
bridges:
  br:
    ports:
      p1: {interface: vm1-h, executor: xdp}
      p2: {interface: vm2-h}
"#;

/// Accepts `n` connections on port 7000 (20 s at most), answers each
/// 1000-byte message with "ok", prints how many it served.
const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(64)
s.settimeout(20)
n = 0
for _ in range(int(sys.argv[1])):
    try:
        c, _ = s.accept()
    except OSError:
        break
    c.settimeout(5)
    d = b""
    while len(d) < 1000:
        x = c.recv(1000 - len(d))
        if not x:
            break
        d += x
    if len(d) == 1000:
        c.sendall(b"ok")
        n += 1
    c.close()
print(n)
"#;

/// Opens `n` connections one after the other, each with a connect timeout
/// shorter than TCP's first SYN retransmission (1 s), so a SYN the
/// dataplane lost fails its connection; prints the successes and failures.
const CLIENT: &str = r#"
import socket, sys
ok, bad = 0, []
for i in range(int(sys.argv[1])):
    s = socket.socket()
    s.settimeout(0.9)
    try:
        s.connect(("10.0.0.12", 7000))
        s.sendall(b"x" * 1000)
        s.settimeout(5)
        ok += s.recv(2) == b"ok"
    except OSError as e:
        bad.append((i, str(e)))
    s.close()
print(ok, bad)
"#;

const CONNECTIONS: usize = 24;

/// The same two guests on the skb executor (vnetd's choice for veths):
/// their first packets come up the upcall pair.
const SKB_TOPOLOGY: &str = r#"
version: 1
bridges:
  br:
    ports:
      p1: {interface: vm1-h}
      p2: {interface: vm2-h}
"#;

/// Runs [`CONNECTIONS`] connections from `vm1` to `vm2`'s server: every
/// one must be answered.
fn connections_all_answered(w: &World, vm1: &vnet_e2e::Guest, vm2: &vnet_e2e::Guest) -> Result<()> {
    let server = w.spawn(
        vm2,
        &["/usr/bin/python3", "-c", SERVER, &CONNECTIONS.to_string()],
    )?;
    let n = CONNECTIONS.to_string();
    let out = w.exec(vm1, &["/usr/bin/python3", "-c", CLIENT, &n])?;
    let client = String::from_utf8_lossy(&out.stdout).into_owned();
    let served = server.finish(std::time::Duration::from_secs(30))?;
    ensure!(
        client.trim() == format!("{CONNECTIONS} []"),
        "connections (done, failed): {}; the server served {}; {}",
        client.trim(),
        served.trim(),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(served.trim() == CONNECTIONS.to_string(), "served {served}");
    Ok(())
}

/// Waits for vnetd's second worker thread: vnetd says it runs before the
/// workers start.
fn second_worker_runs(w: &World) -> Result<()> {
    vnet_e2e::poll(
        "vnetd --workers 2 runs a second worker thread",
        std::time::Duration::from_secs(10),
        || Ok((worker_threads(w)? == ["vnet-worker-1"]).then_some(())),
    )
}

/// The threads of vnetd named `vnet-worker-N`.
fn worker_threads(w: &World) -> Result<Vec<String>> {
    let pid = w.vnetd_pid().expect("vnetd runs");
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("vnet-worker-"))
        .collect())
}

#[test]
fn the_upcall_path_has_a_queue_per_worker_and_each_is_served() -> Result<()> {
    if !have_root("the_upcall_path_has_a_queue_per_worker_and_each_is_served") {
        return Ok(());
    }
    let mut w = World::new("upqueues")?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let topology = w.topology_file(SKB_TOPOLOGY)?;
    w.start_vnetd_args(&topology, &["--workers", "2"])?;
    second_worker_runs(&w)?;
    let queues = w.in_host(&["ls", "/sys/class/net/vnet-up-x/queues"])?;
    let queues = String::from_utf8_lossy(&queues.stdout).into_owned();
    ensure!(
        queues
            .split_whitespace()
            .filter(|q| q.starts_with("rx-"))
            .count()
            == 2,
        "the upcall pair's far end should have 2 receive queues: {queues}"
    );
    ensure!(
        w.ping(&vm1, &vm2.ip, 3)? >= 1,
        "vm1 cannot ping vm2 at all:\n{}",
        w.vnetd_log()
    );
    // Connections hash to both of the pair's queues; a queue no worker
    // served would lose every SYN of its connections.
    connections_all_answered(&w, &vm1, &vm2)
}

#[test]
fn first_packets_on_every_receive_queue_reach_two_workers() -> Result<()> {
    if !have_root("first_packets_on_every_receive_queue_reach_two_workers") {
        return Ok(());
    }
    let mut w = World::new("queues")?;
    let vm1 = w.guest_with_queues("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11", 4)?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let topology = w.topology_file(TOPOLOGY)?;
    w.start_vnetd_args(&topology, &["--workers", "2"])?;

    second_worker_runs(&w)?;
    // Neighbours first (an ARP on a lost queue would be retried a second
    // later and spoil the first connection's timing, not the result).
    ensure!(
        w.ping(&vm1, &vm2.ip, 3)? >= 1,
        "vm1 cannot ping vm2 at all:\n{}",
        w.vnetd_log()
    );
    connections_all_answered(&w, &vm1, &vm2)?;

    // The flows run in the kernel on every queue: a second round of the
    // same traffic is forwarded by them (more kernel-flow packets).
    let before = w.kernel_flow_packets("vm1-h")?;
    ensure!(w.ping(&vm1, &vm2.ip, 20)? == 20, "20 pings after the flows");
    let after = w.kernel_flow_packets("vm1-h")?;
    ensure!(
        after >= before + 19,
        "kernel flows forwarded {} of 20 pings",
        after - before
    );
    Ok(())
}

/// `ethtool -L` on the host end of a guest's veth.
fn set_host_queues(w: &World, ifname: &str, n: &str) -> Result<()> {
    let out = w.in_host(&["ethtool", "-L", ifname, "rx", n, "tx", n])?;
    ensure!(
        out.status.success(),
        "ethtool -L {ifname} rx {n} tx {n}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn a_port_binds_again_when_its_receive_queues_change() -> Result<()> {
    if !have_root("a_port_binds_again_when_its_receive_queues_change") {
        return Ok(());
    }
    let mut w = World::new("requeue")?;
    let vm1 = w.guest_with_queues("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11", 4)?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    // One queue when vnetd binds, as a multi-queue tap before its guest
    // turns the others on; four a moment later (the host's ethtool).
    set_host_queues(&w, "vm1-h", "1")?;
    let topology = w.topology_file(TOPOLOGY)?;
    w.start_vnetd_args(&topology, &["--workers", "2"])?;
    set_host_queues(&w, "vm1-h", "4")?;
    vnet_e2e::poll(
        "vnetd rebinds vm1-h with a socket per queue",
        std::time::Duration::from_secs(10),
        || {
            Ok(w.vnetd_log()
                .contains("receive queues changed")
                .then_some(()))
        },
    )?;
    ensure!(
        w.ping(&vm1, &vm2.ip, 3)? >= 1,
        "vm1 cannot ping vm2 after the rebind:\n{}",
        w.vnetd_log()
    );
    connections_all_answered(&w, &vm1, &vm2)
}
