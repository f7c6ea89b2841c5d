//! Which flows a topology change touches: the tags of every port, device,
//! chain and group whose configuration differs between the running
//! topology and the new one (MidoNet's flow invalidation by tag). Flows
//! tagged with none of them stay installed.
//!
//! Every flow carries the tags of its ports and devices and of each chain it
//! evaluated (jumps included), so a changed chain is its own tag; a changed
//! group touches the chains that use it, and a port group also its member
//! ports (their connection-tracking zone). A NAT or firewall intent is
//! compiled into its router's chains: it touches its router.
use crate::sim::Tag;
use std::collections::BTreeSet;
use vnet_model::diff::{diff, ChangeOp};
use vnet_model::Topology;

/// The tags of the ports placed on `host`.
pub fn ports_placed_on<'t>(t: &'t Topology, host: &'t str) -> impl Iterator<Item = Tag> + 't {
    t.ports()
        .filter(move |(_, _, _, port)| port.host() == Some(host))
        .map(|(_, d, p, _)| Tag::port(&format!("{d}/{p}")))
}

/// Tags to invalidate when `old` is replaced by `new`, without duplicates.
pub fn changed_tags(old: &Topology, new: &Topology) -> Vec<Tag> {
    let mut tags = BTreeSet::new();
    let mut chains = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for change in diff(old, new) {
        let side = if change.op == ChangeOp::Removed {
            old
        } else {
            new
        };
        let path = change.path.as_str();
        let device_path = path
            .strip_prefix("bridges.")
            .or_else(|| path.strip_prefix("routers."));
        if let Some(rest) = device_path {
            match rest.split_once(".ports.") {
                Some((device, port)) => {
                    tags.insert(Tag::port(&format!("{device}/{port}")));
                }
                None => {
                    tags.insert(Tag::device(rest));
                    // A device added or removed whole takes its ports.
                    if change.op != ChangeOp::Changed {
                        for port in device_ports(side, rest) {
                            tags.insert(Tag::port(&format!("{rest}/{port}")));
                        }
                    }
                }
            }
        } else if let Some(host) = path.strip_prefix("hosts.") {
            // A host's tunnel address changed, or it came or went: flows
            // towards its ports carry (or lack) that address.
            for t in [old, new] {
                tags.extend(ports_placed_on(t, host));
            }
        } else if let Some(name) = path.strip_prefix("chains.") {
            chains.insert(name.to_string());
        } else if let Some(name) = path
            .strip_prefix("ip_groups.")
            .or_else(|| path.strip_prefix("port_groups."))
        {
            groups.insert(name.to_string());
        } else if path == "nat" || path == "firewall" {
            // Reordered intents: every router with one.
            for t in [old, new] {
                tags.extend(t.nat.iter().map(|n| Tag::device(n.router())));
                tags.extend(t.firewall.iter().map(|f| Tag::device(&f.router)));
            }
        } else if let Some(router) = intent_router(side, path) {
            tags.insert(Tag::device(&router));
        }
    }
    for t in [old, new] {
        // Chains using a changed group changed too.
        for (name, rules) in &t.chains {
            let uses = rules.iter().any(|r| {
                let c = &r.condition;
                [&c.src_group, &c.dst_group, &c.port_group]
                    .into_iter()
                    .flatten()
                    .any(|g| groups.contains(g))
            });
            if uses {
                chains.insert(name.clone());
            }
        }
        for (name, g) in &t.port_groups {
            if groups.contains(name) {
                tags.extend(g.ports.iter().map(|p| Tag::port(&p.to_string())));
            }
        }
    }
    for g in &groups {
        tags.insert(Tag::ip_group(g));
        tags.insert(Tag::port_group(g));
    }
    tags.extend(chains.iter().map(|c| Tag::chain(c)));
    tags.into_iter().collect()
}

fn device_ports(t: &Topology, device: &str) -> Vec<String> {
    if let Some(b) = t.bridges.get(device) {
        return b.ports.keys().cloned().collect();
    }
    t.routers
        .get(device)
        .map(|r| r.ports.keys().cloned().collect())
        .unwrap_or_default()
}

/// The router of `nat[i]` / `firewall[i]`.
fn intent_router(t: &Topology, path: &str) -> Option<String> {
    let (list, rest) = path.split_once('[')?;
    let i: usize = rest.strip_suffix(']')?.parse().ok()?;
    match list {
        "nat" => t.nat.get(i).map(|n| n.router().to_string()),
        "firewall" => t.firewall.get(i).map(|f| f.router.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(yaml: &str) -> Topology {
        vnet_model::load_str(yaml).unwrap()
    }

    const BASE: &str = "version: 1
chains:
  inner: [{action: accept}]
  outer: [{action: jump, chain: inner}]
ip_groups:
  g: [10.0.0.5]
bridges:
  b:
    ports:
      p1: {interface: a}
      p2: {interface: b, inbound_filter: outer}
      p3: {interface: c}
";

    #[test]
    fn a_port_change_touches_only_that_port() {
        let new = BASE.replace("p3: {interface: c}", "p3: {interface: c, up: false}");
        assert_eq!(
            changed_tags(&topo(BASE), &topo(&new)),
            vec![Tag::port("b/p3")]
        );
        assert!(changed_tags(&topo(BASE), &topo(BASE)).is_empty());
    }

    #[test]
    fn a_chain_or_group_change_touches_the_chains() {
        let new = BASE.replace("inner: [{action: accept}]", "inner: [{action: drop}]");
        assert_eq!(
            changed_tags(&topo(BASE), &topo(&new)),
            vec![Tag::chain("inner")]
        );
        let grouped = BASE.replace(
            "inner: [{action: accept}]",
            "inner: [{action: drop, match: {src_group: g}}]",
        );
        let regrouped = grouped.replace("g: [10.0.0.5]", "g: [10.0.0.6]");
        let mut tags = changed_tags(&topo(&grouped), &topo(&regrouped));
        tags.sort();
        let mut want = vec![
            Tag::chain("inner"),
            Tag::ip_group("g"),
            Tag::port_group("g"),
        ];
        want.sort();
        assert_eq!(tags, want);
    }

    #[test]
    fn a_host_change_touches_its_ports() {
        let placed = "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  \
                      h2: {tunnel_address: 192.0.2.2}\nbridges:\n  b:\n    ports:\n      \
                      x: {interface: x, host: h1}\n      y: {interface: y, host: h2}\n";
        let moved = placed.replace("192.0.2.2}", "192.0.2.9}");
        assert_eq!(
            changed_tags(&topo(placed), &topo(&moved)),
            vec![Tag::port("b/y")]
        );
    }

    #[test]
    fn a_removed_device_takes_its_ports() {
        let mut without = topo(BASE);
        without.bridges.clear();
        let mut tags = changed_tags(&topo(BASE), &without);
        tags.sort();
        let mut want = vec![
            Tag::device("b"),
            Tag::port("b/p1"),
            Tag::port("b/p2"),
            Tag::port("b/p3"),
        ];
        want.sort();
        assert_eq!(tags, want);
    }
}
