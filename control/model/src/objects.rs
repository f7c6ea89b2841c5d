//! Single named objects of a topology (a bridge, a router, a chain, a
//! group), for the API's create/update/delete/get calls and vnetctl.
//!
//! NAT and firewall intents have no names; they change with `apply`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::model::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Bridge,
    Router,
    Chain,
    IpGroup,
    PortGroup,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 5] = [
        ObjectKind::Bridge,
        ObjectKind::Router,
        ObjectKind::Chain,
        ObjectKind::IpGroup,
        ObjectKind::PortGroup,
    ];

    /// The section of the file the kind lives in (`bridges`), which is also
    /// the first part of its objects' paths.
    pub fn section(self) -> &'static str {
        match self {
            ObjectKind::Bridge => "bridges",
            ObjectKind::Router => "routers",
            ObjectKind::Chain => "chains",
            ObjectKind::IpGroup => "ip_groups",
            ObjectKind::PortGroup => "port_groups",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Bridge => "bridge",
            ObjectKind::Router => "router",
            ObjectKind::Chain => "chain",
            ObjectKind::IpGroup => "ip_group",
            ObjectKind::PortGroup => "port_group",
        }
    }

    /// `bridges.tenant`: how errors and diffs name the object.
    pub fn path(self, name: &str) -> String {
        format!("{}.{name}", self.section())
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ObjectKind {
    type Err = String;

    /// Singular or plural, `_` or `-`: `bridge`, `bridges`, `ip-group`.
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.to_ascii_lowercase().replace('-', "_");
        let norm = norm.strip_suffix('s').unwrap_or(&norm);
        ObjectKind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                format!("unknown kind `{s}`: use bridge, router, chain, ip_group or port_group")
            })
    }
}

/// A named object of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Bridge(Bridge),
    Router(Router),
    Chain(Vec<Rule>),
    IpGroup(Vec<Ipv4Addr>),
    PortGroup(PortGroup),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Bridge(_) => ObjectKind::Bridge,
            Object::Router(_) => ObjectKind::Router,
            Object::Chain(_) => ObjectKind::Chain,
            Object::IpGroup(_) => ObjectKind::IpGroup,
            Object::PortGroup(_) => ObjectKind::PortGroup,
        }
    }

    /// A topology holding only this object (to print it as a file).
    pub fn into_topology(self, name: &str) -> Topology {
        let mut t = Topology::default();
        t.insert_object(name, self);
        t
    }
}

impl Topology {
    pub fn object(&self, kind: ObjectKind, name: &str) -> Option<Object> {
        Some(match kind {
            ObjectKind::Bridge => Object::Bridge(self.bridges.get(name)?.clone()),
            ObjectKind::Router => Object::Router(self.routers.get(name)?.clone()),
            ObjectKind::Chain => Object::Chain(self.chains.get(name)?.clone()),
            ObjectKind::IpGroup => Object::IpGroup(self.ip_groups.get(name)?.clone()),
            ObjectKind::PortGroup => Object::PortGroup(self.port_groups.get(name)?.clone()),
        })
    }

    pub fn contains_object(&self, kind: ObjectKind, name: &str) -> bool {
        self.names(kind).any(|n| n == name)
    }

    /// Names of the objects of `kind`, sorted.
    pub fn names(&self, kind: ObjectKind) -> Box<dyn Iterator<Item = &str> + '_> {
        match kind {
            ObjectKind::Bridge => Box::new(self.bridges.keys().map(String::as_str)),
            ObjectKind::Router => Box::new(self.routers.keys().map(String::as_str)),
            ObjectKind::Chain => Box::new(self.chains.keys().map(String::as_str)),
            ObjectKind::IpGroup => Box::new(self.ip_groups.keys().map(String::as_str)),
            ObjectKind::PortGroup => Box::new(self.port_groups.keys().map(String::as_str)),
        }
    }

    /// Inserts or replaces the object; returns whether one was replaced.
    pub fn insert_object(&mut self, name: &str, object: Object) -> bool {
        let name = name.to_string();
        match object {
            Object::Bridge(b) => self.bridges.insert(name, b).is_some(),
            Object::Router(r) => self.routers.insert(name, r).is_some(),
            Object::Chain(c) => self.chains.insert(name, c).is_some(),
            Object::IpGroup(g) => self.ip_groups.insert(name, g).is_some(),
            Object::PortGroup(g) => self.port_groups.insert(name, g).is_some(),
        }
    }

    /// Removes the object; returns whether it was there.
    pub fn remove_object(&mut self, kind: ObjectKind, name: &str) -> bool {
        match kind {
            ObjectKind::Bridge => self.bridges.remove(name).is_some(),
            ObjectKind::Router => self.routers.remove(name).is_some(),
            ObjectKind::Chain => self.chains.remove(name).is_some(),
            ObjectKind::IpGroup => self.ip_groups.remove(name).is_some(),
            ObjectKind::PortGroup => self.port_groups.remove(name).is_some(),
        }
    }

    /// Keeps only the objects of `kind` (and the version).
    pub fn only(&self, kind: ObjectKind) -> Topology {
        let mut t = Topology {
            version: self.version,
            ..Topology::default()
        };
        for name in self.names(kind) {
            if let Some(o) = self.object(kind, name) {
                t.insert_object(name, o);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_in_every_spelling() {
        for s in ["bridge", "bridges", "Bridge"] {
            assert_eq!(s.parse::<ObjectKind>().unwrap(), ObjectKind::Bridge);
        }
        for s in ["ip-group", "ip_groups", "IP_GROUP"] {
            assert_eq!(s.parse::<ObjectKind>().unwrap(), ObjectKind::IpGroup);
        }
        assert!("switch"
            .parse::<ObjectKind>()
            .unwrap_err()
            .contains("bridge"));
    }
}
