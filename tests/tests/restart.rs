//! Hitless restarts (issue 15): vnetd pins its maps and XDP links, so a
//! vnetd that stops (SIGTERM) or dies (SIGKILL) leaves established flows
//! forwarding in the kernel, and the next one takes them over. Measured
//! with a ping at 100/s across the restart: nothing may be lost.
use anyhow::{ensure, Context, Result};
use std::time::Duration;
use vnet_e2e::{have_root, poll, Guest, World};

const TOPOLOGY: &str = include_str!("../fixtures/two-guests.yaml");

/// Pings sent across the restart, at 100/s.
const PINGS: u32 = 400;

fn two_guests(test: &str) -> Result<(World, Guest, Guest)> {
    let mut w = World::new(test)?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let file = w.topology_file(TOPOLOGY)?;
    w.start_vnetd(&file)?;
    // Neighbours resolved and the echo flows in the kernel, both ways.
    ensure!(w.ping(&vm1, &vm2.ip, 3)? == 3, "no ping before the restart");
    Ok((w, vm1, vm2))
}

/// "400 packets transmitted, 400 received" → (400, 400).
fn ping_summary(out: &str) -> Result<(u32, u32)> {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in:\n{out}"))?;
    let numbers: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(numbers.len() == 2, "cannot read {line:?}");
    Ok((numbers[0], numbers[1]))
}

/// Restarts vnetd (`stop`: how the old one goes) while vm1 pings vm2 at
/// 100/s, and checks that no ping was lost and that the new vnetd took
/// the flows over.
fn restart_loses_nothing(test: &str, stop: impl Fn(&mut World) -> Result<()>) -> Result<()> {
    let (mut w, vm1, vm2) = two_guests(test)?;
    let count = PINGS.to_string();
    let before = w.kernel_flow_packets("vm1-h")?;
    let ping = w.spawn(
        &vm1,
        &["ping", "-n", "-i", "0.01", "-c", &count, "-W", "1", &vm2.ip],
    )?;
    // The restart falls inside the ping: wait until its echoes flow
    // through the kernel (a quarter of them) before stopping vnetd.
    poll(
        "the pings flowing through the kernel",
        Duration::from_secs(10),
        || {
            let now = w.kernel_flow_packets("vm1-h")?;
            Ok((now >= before + u64::from(PINGS / 4)).then_some(()))
        },
    )?;
    stop(&mut w)?;
    w.start_vnetd_stored()?;
    let out = ping.finish(Duration::from_secs(30))?;
    let (sent, received) = ping_summary(&out)?;
    eprintln!("{test}: {sent} pings sent at 100/s across the restart, {received} answered");
    ensure!(sent == PINGS, "ping did not finish: {out}");
    ensure!(
        received == sent,
        "{} pings lost across the restart:\n{out}",
        sent - received
    );
    let log = w.vnetd_log();
    let line = log
        .lines()
        .find(|l| l.contains("took over the kernel flows"))
        .with_context(|| format!("the new vnetd did not take the flows over:\n{log}"))?;
    ensure!(
        !line.contains("adopted=0"),
        "the new vnetd adopted no flow: {line}"
    );
    ensure!(log.contains("took over the pinned link"), "{log}");
    // The adopted flows stay correct: a topology change invalidates them
    // and traffic goes on through new ones.
    w.apply(&format!("{TOPOLOGY}      vm3: {{interface: vm3-h}}\n"))?;
    ensure!(w.ping(&vm1, &vm2.ip, 3)? == 3, "no ping after the restart");
    Ok(())
}

#[test]
fn a_killed_vnetd_loses_no_packet_of_established_flows() -> Result<()> {
    if !have_root("a_killed_vnetd_loses_no_packet_of_established_flows") {
        return Ok(());
    }
    restart_loses_nothing("restart-kill", |w| {
        let status = w.kill_vnetd()?;
        ensure!(!status.success(), "vnetd was not killed: {status}");
        Ok(())
    })
}

#[test]
fn a_stopped_vnetd_loses_no_packet_of_established_flows() -> Result<()> {
    if !have_root("a_stopped_vnetd_loses_no_packet_of_established_flows") {
        return Ok(());
    }
    restart_loses_nothing("restart-term", |w| {
        let (status, log) = w.stop_vnetd()?;
        ensure!(
            status.success(),
            "vnetd did not stop cleanly: {status}\n{log}"
        );
        ensure!(log.contains("XDP stays attached"), "{log}");
        Ok(())
    })
}

#[test]
fn detach_on_exit_removes_the_program_and_the_pins() -> Result<()> {
    if !have_root("detach_on_exit_removes_the_program_and_the_pins") {
        return Ok(());
    }
    let mut w = World::new("restart-detach")?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let file = w.topology_file(TOPOLOGY)?;
    w.start_vnetd_args(&file, &["--detach-on-exit"])?;
    ensure!(w.ping(&vm1, &vm2.ip, 3)? == 3, "no ping with vnetd running");
    let layout = w
        .bpffs_dir()
        .join(format!("layout-{}", vnet_common::LAYOUT_VERSION));
    ensure!(
        layout.join("maps/FLOWS").exists(),
        "maps not pinned in {}",
        layout.display()
    );
    let (status, log) = w.stop_vnetd()?;
    ensure!(status.success(), "{status}\n{log}");
    ensure!(
        !layout.exists(),
        "{} still there after --detach-on-exit",
        layout.display()
    );
    let link = vnet_e2e::run(&["ip", "-n", &w.host, "-d", "link", "show", "vm1-h"])?;
    let text = String::from_utf8_lossy(&link.stdout);
    ensure!(
        !text.contains("prog/xdp"),
        "XDP still attached to vm1-h:\n{text}"
    );
    ensure!(
        w.ping(&vm1, &vm2.ip, 2)? == 0,
        "pings pass with vnetd gone and XDP detached"
    );
    Ok(())
}
