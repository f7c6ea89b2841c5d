//! What changed between two topologies, object by object, named by the
//! objects' paths in the file (`bridges.tenant.ports.vm2`, `nat[1]`).
//!
//! Used for `apply --dry-run`, for the changes of every stored revision (the
//! watch stream) and, in vnetd, to find the flows a change touched.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeOp {
    Added,
    Removed,
    Changed,
}

/// One changed object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Change {
    pub op: ChangeOp,
    pub path: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let sign = match self.op {
            ChangeOp::Added => '+',
            ChangeOp::Removed => '-',
            ChangeOp::Changed => '~',
        };
        write!(f, "{sign} {}", self.path)
    }
}

impl Change {
    /// A change back from its text (`~ bridges.b.ports.p`, as `Display`
    /// writes it); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Change> {
        let (sign, path) = text.split_once(' ')?;
        let op = match sign {
            "+" => ChangeOp::Added,
            "-" => ChangeOp::Removed,
            "~" => ChangeOp::Changed,
            _ => return None,
        };
        Some(Change {
            op,
            path: path.to_string(),
        })
    }
}

/// The changes that turn `old` into `new`. A device that is added or removed
/// is one change (its ports are not listed); a device that stays is
/// `Changed` when its own fields differ, and each of its ports is compared
/// on its own. NAT and firewall entries have no names: an entry is
/// `Removed` / `Added` when no equal entry is on the other side.
pub fn diff(old: &Topology, new: &Topology) -> Vec<Change> {
    let mut out = Vec::new();
    if old.version != new.version {
        out.push(change(ChangeOp::Changed, "version".into()));
    }
    named(&mut out, "hosts", &old.hosts, &new.hosts);
    // A device's own fields are compared by reference: a copy of each
    // device without its ports would copy every port too (a topology of
    // 10 000 ports, twice, on every change).
    devices(&mut out, "bridges", &old.bridges, &new.bridges, |b| {
        // Destructured so that a new field cannot be left out of the
        // comparison: it would not compile.
        let Bridge {
            inbound_filter,
            outbound_filter,
            mac_table,
            arp_table,
            dhcp,
            ports,
        } = b;
        (
            (inbound_filter, outbound_filter, mac_table, arp_table, dhcp),
            ports,
        )
    });
    devices(&mut out, "routers", &old.routers, &new.routers, |r| {
        let Router {
            inbound_filter,
            outbound_filter,
            ports,
            routes,
        } = r;
        ((inbound_filter, outbound_filter, routes), ports)
    });
    named(&mut out, "chains", &old.chains, &new.chains);
    named(&mut out, "ip_groups", &old.ip_groups, &new.ip_groups);
    named(&mut out, "port_groups", &old.port_groups, &new.port_groups);
    unnamed(&mut out, "nat", &old.nat, &new.nat);
    unnamed(&mut out, "firewall", &old.firewall, &new.firewall);
    out
}

fn change(op: ChangeOp, path: String) -> Change {
    Change { op, path }
}

fn named<V: PartialEq>(
    out: &mut Vec<Change>,
    kind: &str,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) {
    // Both maps are in name order: walked side by side, with no lookup
    // per entry (a bridge of thousands of ports is compared on every
    // change). Removed and changed entries come first, then added ones.
    let mut added = Vec::new();
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some((name, _)), None) => {
                out.push(change(ChangeOp::Removed, format!("{kind}.{name}")));
                o.next();
            }
            (None, Some((name, _))) => {
                added.push(change(ChangeOp::Added, format!("{kind}.{name}")));
                n.next();
            }
            (Some((on, ov)), Some((nn, nv))) => match on.cmp(nn) {
                std::cmp::Ordering::Less => {
                    out.push(change(ChangeOp::Removed, format!("{kind}.{on}")));
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    added.push(change(ChangeOp::Added, format!("{kind}.{nn}")));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if ov != nv {
                        out.push(change(ChangeOp::Changed, format!("{kind}.{on}")));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    out.extend(added);
}

/// Devices: the device's own fields (`split` returns them without ports)
/// and then each port.
fn devices<'d, D, P: PartialEq + 'd, O: PartialEq>(
    out: &mut Vec<Change>,
    kind: &str,
    old: &'d BTreeMap<String, D>,
    new: &'d BTreeMap<String, D>,
    split: impl Fn(&'d D) -> (O, &'d BTreeMap<String, P>),
) {
    for (name, o) in old {
        let Some(n) = new.get(name) else {
            out.push(change(ChangeOp::Removed, format!("{kind}.{name}")));
            continue;
        };
        let ((o_own, o_ports), (n_own, n_ports)) = (split(o), split(n));
        if o_own != n_own {
            out.push(change(ChangeOp::Changed, format!("{kind}.{name}")));
        }
        named(out, &format!("{kind}.{name}.ports"), o_ports, n_ports);
    }
    for name in new.keys().filter(|n| !old.contains_key(*n)) {
        out.push(change(ChangeOp::Added, format!("{kind}.{name}")));
    }
}

fn unnamed<V: PartialEq>(out: &mut Vec<Change>, kind: &str, old: &[V], new: &[V]) {
    let before = out.len();
    for (i, v) in old.iter().enumerate() {
        if !new.contains(v) {
            out.push(change(ChangeOp::Removed, format!("{kind}[{i}]")));
        }
    }
    for (i, v) in new.iter().enumerate() {
        if !old.contains(v) {
            out.push(change(ChangeOp::Added, format!("{kind}[{i}]")));
        }
    }
    // The same entries in another order (or repeated) are a change too.
    if out.len() == before && old != new {
        out.push(change(ChangeOp::Changed, kind.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(yaml: &str) -> Topology {
        crate::parse_str(yaml).unwrap()
    }

    #[test]
    fn names_devices_ports_and_unnamed_entries() {
        let old = topo(
            "version: 1\nbridges:\n  b:\n    ports:\n      p1: {interface: a}\n      p2: {interface: b}\n  gone: {}\nchains:\n  c: [{action: accept}]\n",
        );
        let new = topo(
            "version: 1\nbridges:\n  b:\n    arp_table: [{ip: 10.0.0.1, mac: '02:00:00:00:00:01'}]\n    ports:\n      p1: {interface: a, up: false}\n      p3: {interface: c}\n  new: {}\nchains:\n  c: [{action: drop}]\n",
        );
        let text: Vec<String> = diff(&old, &new).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            [
                "~ bridges.b",
                "~ bridges.b.ports.p1",
                "- bridges.b.ports.p2",
                "+ bridges.b.ports.p3",
                "- bridges.gone",
                "+ bridges.new",
                "~ chains.c",
            ]
        );
        assert!(diff(&new, &new).is_empty());
        let nat = |order: &str| {
            topo(&format!(
                "version: 1\nrouters:\n  r:\n    ports:\n      up: {{address: 192.0.2.2/24, interface: u}}\nnat:\n{order}"
            ))
        };
        let a =
            "  - {router: r, type: floating_ip, public: 192.0.2.5, private: 10.0.0.5, port: up}\n";
        let b =
            "  - {router: r, type: floating_ip, public: 192.0.2.6, private: 10.0.0.6, port: up}\n";
        let swapped = diff(&nat(&format!("{a}{b}")), &nat(&format!("{b}{a}")));
        assert_eq!(swapped[0].to_string(), "~ nat");
    }

    /// A device's own fields and its ports are compared apart: a changed
    /// route is the router's change, a changed port is the port's.
    #[test]
    fn a_device_changes_apart_from_its_ports() {
        let router = |route: &str, up: bool| {
            topo(&format!(
                "version: 1\nrouters:\n  r:\n    ports:\n      a: {{address: 10.0.0.1/24, up: {up}}}\n      \
                 b: {{address: 10.0.1.1/24}}\n    routes:\n      - {{dst: {route}, port: a}}\n"
            ))
        };
        let base = router("10.9.0.0/16", true);
        let text = |old: &Topology, new: &Topology| -> Vec<String> {
            diff(old, new).iter().map(|c| c.to_string()).collect()
        };
        assert_eq!(text(&base, &router("10.8.0.0/16", true)), ["~ routers.r"]);
        assert_eq!(
            text(&base, &router("10.9.0.0/16", false)),
            ["~ routers.r.ports.a"]
        );
        assert!(text(&base, &router("10.9.0.0/16", true)).is_empty());
    }
}
