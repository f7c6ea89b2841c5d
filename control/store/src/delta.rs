//! What one revision changed, object by object: enough to turn the topology
//! before it into the topology after it, and small when the change is.
//!
//! An object is what the API names (a bridge with its ports, a router, a
//! chain, a group): a changed object is kept whole, a removed one by its
//! path. NAT and firewall intents have no names, so each section is kept
//! whole when it changed (and named as removed when it became empty).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vnet_model::model::Topology;
use vnet_model::objects::ObjectKind;

/// The section path that stands for all NAT intents.
pub const NAT: &str = "nat";
/// The section path that stands for all firewall intents.
pub const FIREWALL: &str = "firewall";
/// The section path that stands for the `hosts:` section (kept whole: it is
/// small and names no API object).
pub const HOSTS: &str = "hosts";

/// The change from one topology to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The added and changed objects, whole; the NAT and firewall sections
    /// whole when they changed; the new topology's version.
    pub changed: Topology,
    /// Paths of the removed objects (`bridges.b`), and [`NAT`] /
    /// [`FIREWALL`] when that section became empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

impl Delta {
    /// The change that turns `old` into `new`.
    pub fn between(old: &Topology, new: &Topology) -> Delta {
        // Destructured so that a new section of the topology cannot be
        // forgotten here: it would not compile.
        let Topology {
            version,
            hosts,
            bridges,
            routers,
            chains,
            ip_groups,
            port_groups,
            nat,
            firewall,
        } = new;
        let mut delta = Delta {
            changed: Topology {
                version: *version,
                ..Topology::default()
            },
            removed: Vec::new(),
        };
        let c = &mut delta.changed;
        let r = &mut delta.removed;
        objects(ObjectKind::Bridge, &old.bridges, bridges, &mut c.bridges, r);
        objects(ObjectKind::Router, &old.routers, routers, &mut c.routers, r);
        objects(ObjectKind::Chain, &old.chains, chains, &mut c.chains, r);
        objects(
            ObjectKind::IpGroup,
            &old.ip_groups,
            ip_groups,
            &mut c.ip_groups,
            r,
        );
        objects(
            ObjectKind::PortGroup,
            &old.port_groups,
            port_groups,
            &mut c.port_groups,
            r,
        );
        if &old.hosts != hosts {
            if hosts.is_empty() {
                r.push(HOSTS.to_string());
            } else {
                c.hosts = hosts.clone();
            }
        }
        section(NAT, &old.nat, nat, &mut c.nat, r);
        section(FIREWALL, &old.firewall, firewall, &mut c.firewall, r);
        delta
    }

    /// Makes `topology` (the one this delta was taken from) the one after.
    /// Fails on a removed path that names nothing this store writes.
    pub fn apply_to(&self, topology: &mut Topology) -> Result<(), String> {
        topology.version = self.changed.version;
        for path in &self.removed {
            match path.as_str() {
                NAT => topology.nat.clear(),
                HOSTS => topology.hosts.clear(),
                FIREWALL => topology.firewall.clear(),
                _ => {
                    let (kind, name) = object_path(path)?;
                    topology.remove_object(kind, name);
                }
            }
        }
        let c = self.changed.clone();
        topology.bridges.extend(c.bridges);
        topology.routers.extend(c.routers);
        topology.chains.extend(c.chains);
        topology.ip_groups.extend(c.ip_groups);
        topology.port_groups.extend(c.port_groups);
        if !c.hosts.is_empty() {
            topology.hosts = c.hosts;
        }
        if !c.nat.is_empty() {
            topology.nat = c.nat;
        }
        if !c.firewall.is_empty() {
            topology.firewall = c.firewall;
        }
        Ok(())
    }

    /// Paths (`bridges.b`) of the named objects this delta adds or changes.
    pub fn changed_paths(&self) -> impl Iterator<Item = String> + '_ {
        ObjectKind::ALL
            .into_iter()
            .flat_map(|kind| self.changed.names(kind).map(move |name| kind.path(name)))
    }
}

/// Splits `bridges.b` into its kind and name (names may hold dots; sections
/// do not).
pub fn object_path(path: &str) -> Result<(ObjectKind, &str), String> {
    let (section, name) = path
        .split_once('.')
        .ok_or_else(|| format!("`{path}` is not an object path"))?;
    let kind = ObjectKind::ALL
        .into_iter()
        .find(|k| k.section() == section)
        .ok_or_else(|| format!("`{path}` names no kind of object"))?;
    Ok((kind, name))
}

fn objects<V: PartialEq + Clone>(
    kind: ObjectKind,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    changed: &mut BTreeMap<String, V>,
    removed: &mut Vec<String>,
) {
    for (name, v) in new {
        if old.get(name) != Some(v) {
            changed.insert(name.clone(), v.clone());
        }
    }
    removed.extend(
        old.keys()
            .filter(|name| !new.contains_key(*name))
            .map(|name| kind.path(name)),
    );
}

fn section<V: PartialEq + Clone>(
    path: &str,
    old: &[V],
    new: &[V],
    changed: &mut Vec<V>,
    removed: &mut Vec<String>,
) {
    if old == new {
        return;
    }
    if new.is_empty() {
        removed.push(path.to_string());
    } else {
        *changed = new.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(yaml: &str) -> Topology {
        vnet_model::load_str(yaml).unwrap()
    }

    #[test]
    fn keeps_only_what_changed_and_turns_old_into_new() {
        let old = topo(
            "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: a}\n  gone: {}\n  same: {}\nchains:\n  c: [{action: accept}]\nip_groups:\n  g: [10.0.0.1]\n",
        );
        let new = topo(
            "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: a, up: false}\n  same: {}\n  new: {}\nchains:\n  c: [{action: accept}]\n",
        );
        let d = Delta::between(&old, &new);
        let changed: Vec<String> = d.changed_paths().collect();
        assert_eq!(changed, ["bridges.b", "bridges.new"]);
        assert_eq!(d.removed, ["bridges.gone", "ip_groups.g"]);
        let mut t = old.clone();
        d.apply_to(&mut t).unwrap();
        assert_eq!(t, new);
        assert_eq!(Delta::between(&new, &new).changed_paths().count(), 0);
        assert!(Delta::between(&new, &new).removed.is_empty());
    }

    #[test]
    fn every_fixture_turns_into_every_other() {
        // The examples and the test file that sets every field.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files: Vec<_> = std::fs::read_dir(root.join("examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.push(root.join("control/model/tests/data/everything.yaml"));
        let mut all: Vec<Topology> = files
            .iter()
            .map(|f| vnet_model::load_file(f).unwrap())
            .collect();
        assert!(all.len() >= 4);
        all.push(Topology::default());
        for a in &all {
            for b in &all {
                let mut t = a.clone();
                Delta::between(a, b).apply_to(&mut t).unwrap();
                assert_eq!(&t, b);
            }
        }
    }

    #[test]
    fn an_emptied_intent_section_is_removed_by_name() {
        let router = "version: 1\nrouters:\n  r:\n    ports:\n      up: {address: 192.0.2.2/24, interface: u}\n";
        let with = topo(&format!(
            "{router}nat:\n  - {{router: r, type: floating_ip, public: 192.0.2.5, private: 10.0.0.5, port: up}}\n"
        ));
        let without = topo(router);
        let d = Delta::between(&with, &without);
        assert_eq!(d.removed, [NAT]);
        let mut t = with.clone();
        d.apply_to(&mut t).unwrap();
        assert_eq!(t, without);
        assert!(Delta {
            removed: vec!["nowhere".into()],
            ..Delta::default()
        }
        .apply_to(&mut t)
        .is_err());
    }
}
