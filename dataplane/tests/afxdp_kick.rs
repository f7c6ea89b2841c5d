//! The AF_XDP transmit kick on a real socket: in copy mode the kernel sends
//! at most 32 frames per `sendto` and answers `EAGAIN` while more wait, so
//! one `Kick` must go on kicking until the frames queued in a turn are out
//! (a kick that stopped at the first `EAGAIN` sent 32 and left the rest for
//! later turns, up to 100 ms apart when the worker is idle).
//!
//! Needs root (a network namespace, an AF_XDP socket): without it the test
//! fails, saying so.
use std::process::Command;
use vnet_dataplane::afxdp::Xsk;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Frames counted by `ifname` in namespace `ns` (sysfs as that namespace
/// sees it: `ip netns exec` mounts its own).
fn rx_packets(ns: &str, ifname: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/rx_packets");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &path])
        .output()
        .expect("reading rx_packets");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("rx_packets of {ifname}: {out:?}"))
}

/// Enters network namespace `name` for the rest of this thread.
fn enter(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("opening the namespace");
    // SAFETY: setns on an open namespace fd; only this test thread moves.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn one_kick_sends_every_frame_queued_in_a_turn() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "afxdp_kick needs root (a namespace and an AF_XDP socket): run it as root"
    );
    let ns = Netns(format!("vkick{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&[
        "-n", &ns.0, "link", "add", "ka", "type", "veth", "peer", "name", "kb",
    ]);
    // No IPv6: nothing but the test's frames crosses the pair.
    for dev in ["ka", "kb"] {
        let sysctl = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
        ip(&["netns", "exec", &ns.0, "sysctl", "-qw", &sysctl]);
    }
    for dev in ["ka", "kb"] {
        ip(&["-n", &ns.0, "link", "set", dev, "up"]);
    }
    // Everything below runs in the namespace, on a thread of its own.
    let ns_name = ns.0.clone();
    std::thread::spawn(move || {
        enter(&ns_name);
        let mut xsk = Xsk::bind("ka", 0).expect("binding an AF_XDP socket to ka");
        // 64-byte frames from a locally administered MAC to broadcast
        // (an unknown EtherType: kb's stack counts and drops them).
        let mut frame = [0u8; 64];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        const FRAMES: u64 = 200;
        let before = rx_packets(&ns_name, "kb");
        for _ in 0..FRAMES {
            assert!(xsk.send(&frame), "the transmit ring took a frame");
        }
        xsk.kick().expect("frames wait: a kick").run();
        let sent = rx_packets(&ns_name, "kb") - before;
        assert_eq!(
            sent, FRAMES,
            "one kick sent {sent} of {FRAMES} queued frames (32 is the kernel's batch)"
        );
    })
    .join()
    .expect("the test thread");
}
