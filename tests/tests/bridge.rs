//! The virtual bridge end to end: real vnetd, namespaces as guests, ping,
//! nc and tcpdump.
use anyhow::Result;
use std::time::Duration;
use vnet_e2e::{have_root, poll, repo_root, Guest, World};

const VM1_MAC: &str = "02:00:00:00:01:01";
const VM2_MAC: &str = "02:00:00:00:01:02";
const VM3_MAC: &str = "02:00:00:00:01:03";

/// The example bridge.yaml, unchanged, with three guests.
fn example_bridge(test: &str) -> Result<(World, Guest, Guest, Guest)> {
    let mut w = World::new(test)?;
    let vm1 = w.guest("vm1", "vm1-h", VM1_MAC, "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", VM2_MAC, "10.0.0.12")?;
    let vm3 = w.guest("vm3", "vm3-h", VM3_MAC, "10.0.0.13")?;
    w.start_vnetd(&repo_root().join("examples/bridge.yaml"))?;
    Ok((w, vm1, vm2, vm3))
}

#[test]
fn guests_on_the_example_bridge_reach_each_other_through_the_kernel() -> Result<()> {
    if !have_root("guests_on_the_example_bridge_reach_each_other_through_the_kernel") {
        return Ok(());
    }
    let (w, vm1, vm2, vm3) = example_bridge("ping")?;
    for (a, b) in [
        (&vm1, &vm2),
        (&vm1, &vm3),
        (&vm2, &vm3),
        (&vm2, &vm1),
        (&vm3, &vm1),
        (&vm3, &vm2),
    ] {
        let got = w.ping(a, &b.ip, 3)?;
        assert_eq!(got, 3, "ping {} -> {}: {got}/3 replies", a.name, b.name);
    }
    let before = w.kernel_flow_packets("vm1-h")?;
    assert_eq!(w.ping(&vm1, &vm2.ip, 50)?, 50);
    let in_kernel = w.kernel_flow_packets("vm1-h")? - before;
    // 50 requests and 50 replies; at most the first of each direction may
    // miss (flows of the earlier pings may have expired meanwhile).
    assert!(
        in_kernel >= 96,
        "only {in_kernel} of 100 packets were forwarded by kernel flows"
    );
    Ok(())
}

#[test]
fn tcp_crosses_the_bridge_with_checksum_offload_on_the_guests() -> Result<()> {
    if !have_root("tcp_crosses_the_bridge_with_checksum_offload_on_the_guests") {
        return Ok(());
    }
    let (w, vm1, vm2, _vm3) = example_bridge("tcp")?;
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", &vm2.netns, "sh", "-c", "timeout 20 nc -l -p 7000 > /tmp/vnet-tcp-$$.out && wc -c < /tmp/vnet-tcp-$$.out; rm -f /tmp/vnet-tcp-$$.out"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    // 2 MB through nc: every segment must arrive with a valid checksum.
    let out = w.exec(
        &vm1,
        &[
            "sh",
            "-c",
            "head -c 2000000 /dev/urandom | timeout 20 nc -q 1 -w 5 10.0.0.12 7000 && echo sent",
        ],
    )?;
    let sent = String::from_utf8_lossy(&out.stdout).contains("sent");
    let server_out = server.wait_with_output()?;
    assert!(
        sent,
        "nc client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = String::from_utf8_lossy(&server_out.stdout)
        .trim()
        .to_string();
    assert_eq!(received, "2000000", "bytes received by vm2");
    Ok(())
}

#[test]
fn unknown_unicast_is_flooded_and_learned_unicast_is_not() -> Result<()> {
    if !have_root("unknown_unicast_is_flooded_and_learned_unicast_is_not") {
        return Ok(());
    }
    let (w, vm1, vm2, vm3) = example_bridge("flood")?;
    // A destination MAC nobody has: vm1 believes 10.0.0.99 is there.
    w.exec(
        &vm1,
        &[
            "ip",
            "neigh",
            "add",
            "10.0.0.99",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
        ],
    )?;
    let cap2 = w.capture(&vm2, "udp port 5555")?;
    let cap3 = w.capture(&vm3, "udp port 5555")?;
    w.exec(
        &vm1,
        &["sh", "-c", "echo flood | nc -u -w 1 10.0.0.99 5555"],
    )?;
    assert!(
        !cap2.finish()?.is_empty(),
        "vm2 got the unknown-unicast frame"
    );
    assert!(
        !cap3.finish()?.is_empty(),
        "vm3 got the unknown-unicast frame"
    );

    // Once vm2 has spoken, frames to its MAC go to vm2 only.
    assert_eq!(w.ping(&vm2, &vm1.ip, 1)?, 1);
    let cap2 = w.capture(&vm2, "udp port 5556")?;
    let cap3 = w.capture(&vm3, "udp port 5556")?;
    w.exec(
        &vm1,
        &["sh", "-c", "echo hello | nc -u -w 1 10.0.0.12 5556"],
    )?;
    assert!(!cap2.finish()?.is_empty(), "vm2 got its frame");
    assert_eq!(
        cap3.finish()?,
        Vec::<String>::new(),
        "vm3 must not see vm2's unicast"
    );
    Ok(())
}

#[test]
fn a_mac_moving_to_another_port_is_followed_at_once() -> Result<()> {
    if !have_root("a_mac_moving_to_another_port_is_followed_at_once") {
        return Ok(());
    }
    let (w, vm1, vm2, vm3) = example_bridge("move")?;
    assert_eq!(w.ping(&vm1, &vm2.ip, 5)?, 5);
    // vm2's address and MAC move to vm3's port (as after a live migration).
    w.exec(&vm2, &["ip", "link", "set", "eth0", "down"])?;
    w.exec(&vm3, &["ip", "link", "set", "eth0", "address", VM2_MAC])?;
    w.exec(&vm3, &["ip", "addr", "add", "10.0.0.12/24", "dev", "eth0"])?;
    // A gratuitous ARP from the new location, as hypervisors send.
    w.exec(
        &vm3,
        &["arping", "-U", "-c", "1", "-I", "eth0", "10.0.0.12"],
    )?;
    let got = w.ping(&vm1, "10.0.0.12", 5)?;
    assert_eq!(got, 5, "after the move, vm2's MAC answers from vm3's port");
    Ok(())
}

#[test]
fn two_bridges_with_the_same_subnet_stay_isolated() -> Result<()> {
    if !have_root("two_bridges_with_the_same_subnet_stay_isolated") {
        return Ok(());
    }
    let mut w = World::new("isolation")?;
    let a1 = w.guest("a1", "a1-h", "02:00:00:00:0a:01", "10.0.0.1")?;
    let a2 = w.guest("a2", "a2-h", "02:00:00:00:0a:02", "10.0.0.2")?;
    let b1 = w.guest("b1", "b1-h", "02:00:00:00:0b:01", "10.0.0.3")?;
    let _b2 = w.guest("b2", "b2-h", "02:00:00:00:0b:02", "10.0.0.4")?;
    let topo = w.topology_file(
        "version: 1\nbridges:\n  red:\n    ports:\n      a1: {interface: a1-h}\n      a2: {interface: a2-h}\n  \
         blue:\n    ports:\n      b1: {interface: b1-h}\n      b2: {interface: b2-h}\n",
    )?;
    w.start_vnetd(&topo)?;
    assert_eq!(w.ping(&a1, &a2.ip, 3)?, 3, "same bridge");
    assert_eq!(w.ping(&a1, "10.0.0.4", 3)?, 0, "other bridge");
    assert_eq!(w.ping(&b1, "10.0.0.4", 3)?, 3, "same bridge");
    assert_eq!(w.ping(&b1, &a2.ip, 3)?, 0, "other bridge");
    Ok(())
}

#[test]
fn a_port_set_down_passes_nothing() -> Result<()> {
    if !have_root("a_port_set_down_passes_nothing") {
        return Ok(());
    }
    let mut w = World::new("down")?;
    let vm1 = w.guest("vm1", "vm1-h", VM1_MAC, "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", VM2_MAC, "10.0.0.12")?;
    let _vm3 = w.guest("vm3", "vm3-h", VM3_MAC, "10.0.0.13")?;
    let topo = w.topology_file(
        "version: 1\nbridges:\n  tenant:\n    ports:\n      vm1: {interface: vm1-h}\n      \
         vm2: {interface: vm2-h}\n      vm3: {interface: vm3-h, up: false}\n",
    )?;
    w.start_vnetd(&topo)?;
    assert_eq!(w.ping(&vm1, &vm2.ip, 3)?, 3);
    assert_eq!(w.ping(&vm1, "10.0.0.13", 3)?, 0, "vm3's port is down");
    Ok(())
}

#[test]
fn sigterm_with_detach_on_exit_detaches_every_program() -> Result<()> {
    if !have_root("sigterm_with_detach_on_exit_detaches_every_program") {
        return Ok(());
    }
    // A plain SIGTERM leaves XDP attached for the next vnetd (restart.rs);
    // --detach-on-exit is the operator's way to remove it.
    let mut w = World::new("shutdown")?;
    let vm1 = w.guest("vm1", "vm1-h", VM1_MAC, "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", VM2_MAC, "10.0.0.12")?;
    w.guest("vm3", "vm3-h", VM3_MAC, "10.0.0.13")?;
    w.start_vnetd_args(
        &repo_root().join("examples/bridge.yaml"),
        &["--detach-on-exit"],
    )?;
    assert_eq!(w.ping(&vm1, &vm2.ip, 2)?, 2);
    // The guests' veths run the skb executor (auto: veth), the upcall
    // pair's far end the upcall program.
    assert_eq!(
        names(&w.programs_on("vm1-h")?),
        ["vnet_tc"],
        "the skb executor on a guest veth while running"
    );
    assert_eq!(names(&w.programs_on("vnet-up-x")?), ["vnet_upcall"]);
    let (status, log) = w.stop_vnetd()?;
    assert!(status.success(), "vnetd exit status {status}; log:\n{log}");
    for ifname in ["vm1-h", "vm2-h", "vm3-h"] {
        let left = w.programs_on(ifname)?;
        assert!(
            left.is_empty(),
            "{ifname} still has {left:?} after shutdown"
        );
    }
    let pair = std::process::Command::new("ip")
        .args(["-n", &w.host, "link", "show", "vnet-up"])
        .output()?;
    assert!(!pair.status.success(), "the upcall pair is removed too");
    Ok(())
}

fn names(programs: &[(String, u64)]) -> Vec<&str> {
    programs.iter().map(|(n, _)| n.as_str()).collect()
}

/// A port carrying VLAN 100 (`vlan: 100`) and an untagged one on the same
/// bridge: the trunk guest's tagged frames lose their tag, the access
/// guest's answers gain it, in the kernel. On the skb path a received tag
/// is skb metadata, popped and pushed with the skb helpers. (This kernel
/// has no 802.1Q devices: the trunk guest speaks through scapy.)
#[test]
fn a_tagged_port_and_an_untagged_one_talk_through_the_kernel() -> Result<()> {
    if !have_root("a_tagged_port_and_an_untagged_one_talk_through_the_kernel") {
        return Ok(());
    }
    let mut w = World::new("vlan")?;
    let trunk = w.guest_without_address("trunk", "tr-h", "02:00:00:00:0c:01")?;
    let access = w.guest("access", "ac-h", "02:00:00:00:0c:02", "10.0.0.2")?;
    // The access guest knows the trunk guest's MAC (no ARP from scapy).
    let neigh = w.exec(
        &access,
        &[
            "ip",
            "neigh",
            "add",
            "10.0.0.1",
            "lladdr",
            "02:00:00:00:0c:01",
            "dev",
            "eth0",
        ],
    )?;
    anyhow::ensure!(
        neigh.status.success(),
        "{}",
        String::from_utf8_lossy(&neigh.stderr)
    );
    let topo = w.topology_file(
        "version: 1\nbridges:\n  lan:\n    ports:\n      trunk: {interface: tr-h, vlan: 100}\n      access: {interface: ac-h}\n",
    )?;
    w.start_vnetd(&topo)?;
    let replies = w.capture(&trunk, "vlan 100 and icmp[icmptype] == icmp-echoreply")?;
    w.python(
        &trunk,
        "from scapy.all import Ether, Dot1Q, IP, ICMP, sendp\n\
         p = Ether(src='02:00:00:00:0c:01', dst='02:00:00:00:0c:02')/Dot1Q(vlan=100)/\
         IP(src='10.0.0.1', dst='10.0.0.2')/ICMP(id=77)\n\
         sendp([p] * 20, iface='eth0', inter=0.05, verbose=False)\n",
    )?;
    poll("20 tagged echo replies", Duration::from_secs(10), || {
        Ok((w.kernel_flow_packets("tr-h")? >= 18).then_some(()))
    })?;
    let seen = replies.finish()?;
    let answered = seen
        .iter()
        .filter(|l| l.contains("vlan 100") && l.contains("echo reply"))
        .count();
    assert_eq!(answered, 20, "every request answered, tagged: {seen:?}");
    Ok(())
}
