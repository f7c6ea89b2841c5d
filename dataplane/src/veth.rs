//! Makes bound veth interfaces receive frames redirected by native XDP.
//!
//! A frame that XDP redirects into veth X in native mode is delivered only if
//! the far end of X (its peer, usually inside a guest's namespace) has an XDP
//! program or GRO enabled (TOOLCHAIN.md); otherwise the kernel drops it
//! silently. vnetd finds each peer, in this namespace or in a named one under
//! /run/netns, and enables GRO there. A peer it cannot find makes the caller
//! fall back to SKB-mode XDP, which needs neither.
//!
//! It also turns transmit checksum offload off on the peer: with it on, the
//! guest's TCP/UDP packets reach XDP with a partial checksum (the kernel
//! would complete it later on the normal path), and a frame redirected
//! as-is would arrive at the other guest with a wrong checksum.
use std::path::Path;
use std::process::Command;

/// Where a veth's peer lives and what was changed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPeer {
    /// Named network namespace of the peer; `None` for vnetd's own.
    pub netns: Option<String>,
    pub peer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOutcome {
    /// Not a veth: nothing to prepare.
    NotVeth,
    Prepared(PreparedPeer),
    /// A veth whose peer could not be prepared; the reason says why.
    Unprepared(String),
}

fn read_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_veth(ifname: &str) -> bool {
    // veth has no sysfs driver link or DEVTYPE; ethtool names the driver.
    Command::new("ethtool")
        .args(["-i", ifname])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "driver: veth"))
        .unwrap_or(false)
}

/// Finds the interface with `ifindex` whose link is `link_index`, in the
/// namespace `netns` (None: our own).
fn find_in_netns(netns: Option<&str>, ifindex: u32, link_index: u32) -> Option<String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(["-j", "link", "show"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    links.as_array()?.iter().find_map(|l| {
        let idx = l.get("ifindex")?.as_u64()?;
        let link = l.get("link_index").and_then(|v| v.as_u64());
        if idx == ifindex as u64 && link.is_none_or(|li| li == link_index as u64) {
            l.get("ifname")?.as_str().map(str::to_string)
        } else {
            None
        }
    })
}

fn run_in(netns: Option<&str>, args: &[&str]) -> Result<(), String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd.output().map_err(|e| format!("running {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Prepares the peer of `ifname` for native XDP redirects.
pub fn prepare_peer(ifname: &str) -> PeerOutcome {
    let base = format!("/sys/class/net/{ifname}");
    let (Some(ifindex), Some(iflink)) = (read_u32(&format!("{base}/ifindex")), read_u32(&format!("{base}/iflink")))
    else {
        return PeerOutcome::Unprepared(format!("interface {ifname} not found in /sys/class/net"));
    };
    if ifindex == iflink || !is_veth(ifname) {
        return PeerOutcome::NotVeth;
    }
    let mut namespaces: Vec<Option<String>> = vec![None];
    if let Ok(dir) = std::fs::read_dir(Path::new("/run/netns")) {
        let mut named: Vec<String> = dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        named.sort();
        namespaces.extend(named.into_iter().map(Some));
    }
    for ns in namespaces {
        let Some(peer) = find_in_netns(ns.as_deref(), iflink, ifindex) else { continue };
        if ns.is_none() && peer == ifname {
            continue;
        }
        let result = run_in(ns.as_deref(), &["ethtool", "-K", &peer, "gro", "on"])
            .and_then(|_| run_in(ns.as_deref(), &["ethtool", "-K", &peer, "tx", "off"]));
        return match result {
            Ok(()) => PeerOutcome::Prepared(PreparedPeer { netns: ns, peer }),
            Err(e) => PeerOutcome::Unprepared(e),
        };
    }
    PeerOutcome::Unprepared(format!(
        "the peer of veth {ifname} (ifindex {iflink}) is in no namespace vnetd can see (its own or /run/netns/*)"
    ))
}
