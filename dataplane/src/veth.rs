//! What kind of interface a port is bound to, and preparing a veth for the
//! XDP executor.
//!
//! [`describe`] tells veth and tap (guest interfaces, which get the skb
//! executor by default) from the rest, and whether a veth's peer is in
//! another namespace (the skb executor then delivers straight into it).
//!
//! A frame that XDP redirects into veth X in native mode is delivered only if
//! the far end of X (its peer) has an XDP program or GRO enabled
//! (TOOLCHAIN.md); otherwise the kernel drops it silently. For a veth an
//! operator puts on the XDP executor (`executor: xdp`), vnetd finds the
//! peer, in this namespace or in a named one under /run/netns, and enables
//! GRO there. A peer it cannot find makes the caller fall back to SKB-mode
//! XDP, which needs neither. It never touches a peer's checksum offload: a
//! veth whose peer sends partial checksums belongs on the skb executor,
//! which is why `auto` picks it for veths.
use std::process::Command;

/// A bound interface, as `ip -d link` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link kind (`veth`, `tun`, `vxlan`, ...); `None` for a physical
    /// NIC.
    pub kind: Option<String>,
    /// A veth whose peer is in another network namespace.
    pub peer_elsewhere: bool,
}

impl LinkInfo {
    /// veth or tun/tap: where guests are.
    pub fn is_guest_facing(&self) -> bool {
        matches!(self.kind.as_deref(), Some("veth" | "tun"))
    }
}

/// What `ifname` is, or `None` if `ip` cannot say.
pub fn describe(ifname: &str) -> Option<LinkInfo> {
    let info = ip_json(None, &["-d", "link", "show", "dev", ifname])?;
    let link = info.get(0)?;
    let kind = link["linkinfo"]["info_kind"].as_str().map(str::to_string);
    let peer_elsewhere = kind.as_deref() == Some("veth") && link["link_netnsid"].as_u64().is_some();
    Some(LinkInfo {
        kind,
        peer_elsewhere,
    })
}

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

/// `ip -j [-n NS] ARGS...` parsed as JSON.
fn ip_json(netns: Option<&str>, args: &[&str]) -> Option<serde_json::Value> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.arg("-j").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Name of the interface with `ifindex` in namespace `netns`.
fn name_of(netns: Option<&str>, ifindex: u64) -> Option<String> {
    let links = ip_json(netns, &["link", "show"])?;
    links.as_array()?.iter().find_map(|l| {
        (l.get("ifindex")?.as_u64()? == ifindex)
            .then(|| l.get("ifname")?.as_str().map(str::to_string))?
    })
}

/// Name of the namespace that vnetd's namespace knows as `netnsid`.
fn netns_name(netnsid: u64) -> Option<String> {
    let list = ip_json(None, &["netns", "list"])?;
    list.as_array()?.iter().find_map(|n| {
        (n.get("id")?.as_u64()? == netnsid).then(|| n.get("name")?.as_str().map(str::to_string))?
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
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Prepares the peer of `ifname` for native XDP redirects (GRO on).
///
/// The peer is found exactly: the link's `link_netnsid` names the peer's
/// namespace (resolved through `ip netns list`) and `link_index` its
/// ifindex there. (Searching namespaces for the ifindex alone is wrong:
/// ifindexes are per namespace.)
pub fn prepare_peer(ifname: &str) -> PeerOutcome {
    let Some(info) = ip_json(None, &["-d", "link", "show", "dev", ifname]) else {
        return PeerOutcome::Unprepared(format!("interface {ifname} not found"));
    };
    let link = &info[0];
    if link["linkinfo"]["info_kind"].as_str() != Some("veth") {
        return PeerOutcome::NotVeth;
    }
    let Some(peer_index) = link["link_index"].as_u64() else {
        return PeerOutcome::Unprepared(format!("veth {ifname} reports no peer ifindex"));
    };
    let netns = match link["link_netnsid"].as_u64() {
        None => None,
        Some(id) => match netns_name(id) {
            Some(name) => Some(name),
            None => {
                return PeerOutcome::Unprepared(format!(
                    "the peer of veth {ifname} is in a namespace with no name under /run/netns (netnsid {id})"
                ))
            }
        },
    };
    let Some(peer) = name_of(netns.as_deref(), peer_index) else {
        return PeerOutcome::Unprepared(format!(
            "the peer of veth {ifname} (ifindex {peer_index}) was not found"
        ));
    };
    match run_in(netns.as_deref(), &["ethtool", "-K", &peer, "gro", "on"]) {
        Ok(()) => PeerOutcome::Prepared(PreparedPeer { netns, peer }),
        Err(e) => PeerOutcome::Unprepared(e),
    }
}
