//! What kind of interface a port is bound to.
//!
//! [`describe`] tells veth and tap (guest interfaces, which get the skb
//! executor by default) from the rest, and whether a veth's peer is in
//! another namespace (the skb executor then delivers straight into it).
//! vnetd changes nothing on a veth's peer (see `binding::Binder::bind`).
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
    let info = ip_json(&["-d", "link", "show", "dev", ifname])?;
    let link = info.get(0)?;
    let kind = link["linkinfo"]["info_kind"].as_str().map(str::to_string);
    let peer_elsewhere = kind.as_deref() == Some("veth") && link["link_netnsid"].as_u64().is_some();
    Some(LinkInfo {
        kind,
        peer_elsewhere,
    })
}

/// `ip -j ARGS...` parsed as JSON.
fn ip_json(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("ip").arg("-j").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The `ip` arguments that create the veth pair `name`/`peer` with `queues`
/// transmit and receive queues at each end (`ip link add ... type veth peer
/// ...`); the caller may add `netns NS` for the peer.
pub fn add_pair_args(name: &str, peer: &str, queues: u32) -> Vec<String> {
    let q = queues.max(1).to_string();
    let queues = ["numtxqueues", &q, "numrxqueues", &q];
    ["link", "add", name]
        .into_iter()
        .chain(queues)
        .chain(["type", "veth", "peer", "name", peer])
        .chain(queues)
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pair_gets_its_queues_at_both_ends() {
        assert_eq!(
            super::add_pair_args("a", "b", 2).join(" "),
            "link add a numtxqueues 2 numrxqueues 2 type veth peer name b numtxqueues 2 numrxqueues 2"
        );
        assert!(super::add_pair_args("a", "b", 0)
            .join(" ")
            .contains("numtxqueues 1"));
    }
}
