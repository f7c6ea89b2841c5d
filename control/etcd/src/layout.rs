//! The keys and values of the topology in etcd (the table in the crate's
//! documentation), and the conversion between them and a [`Topology`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vnet_model::model::Topology;
use vnet_model::objects::ObjectKind;
use vnet_store::{Delta, FIREWALL, HOSTS, NAT};

/// Bumped when the layout changes incompatibly; a vnetd refuses a store
/// written in a format it does not read.
pub const FORMAT: u32 = 1;

/// The keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    pub fn head(&self) -> String {
        format!("{}topo/head", self.prefix)
    }

    /// Prefix of the named objects.
    pub fn objects(&self) -> String {
        format!("{}topo/obj/", self.prefix)
    }

    /// The key of bucket `b` of named objects.
    pub fn bucket(&self, b: u32) -> String {
        format!("{}{b:02}", self.objects())
    }

    /// Prefix of the whole sections (nat, firewall, hosts).
    pub fn sections(&self) -> String {
        format!("{}topo/sec/", self.prefix)
    }

    pub fn section(&self, section: &str) -> String {
        format!("{}{section}", self.sections())
    }

    /// Prefix of the change records.
    pub fn log(&self) -> String {
        format!("{}topo/log/", self.prefix)
    }

    /// Zero-padded, so that key order is revision order.
    pub fn record(&self, revision: u64) -> String {
        format!("{}{revision:020}", self.log())
    }

    /// Prefix of the live (leased) host registrations.
    pub fn live_hosts(&self) -> String {
        format!("{}hosts/live/", self.prefix)
    }

    pub fn live_host(&self, name: &str) -> String {
        format!("{}{name}", self.live_hosts())
    }

    /// Prefix of the hosts ever registered (no lease).
    pub fn known_hosts(&self) -> String {
        format!("{}hosts/known/", self.prefix)
    }

    pub fn known_host(&self, name: &str) -> String {
        format!("{}{name}", self.known_hosts())
    }

    /// Prefix of the SNAT port blocks of `address`.
    pub fn nat_blocks(&self, address: std::net::Ipv4Addr) -> String {
        format!("{}nat/{address}/", self.prefix)
    }

    /// One SNAT port block: its holder's name, under the holder's lease.
    pub fn nat_block(&self, address: std::net::Ipv4Addr, block: u16) -> String {
        format!("{}{block:04}", self.nat_blocks(address))
    }
}

/// `topo/head`: what every change rewrites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub format: u32,
    /// The current vnet revision (0: nothing stored).
    pub revision: u64,
    /// The next object id to give.
    pub next_id: u64,
    /// The topology's `version:`.
    pub version: u32,
    /// The kept change records, oldest first: (revision, bytes).
    #[serde(default)]
    pub log: Vec<(u64, usize)>,
    /// The highest tunnel key ever given: never given again, even once its
    /// port is gone (a host cut off from etcd may still route by it).
    #[serde(default)]
    pub tunnel_keys: u32,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            format: FORMAT,
            revision: 0,
            next_id: 1,
            version: vnet_model::FORMAT_VERSION,
            log: Vec::new(),
            tunnel_keys: 0,
        }
    }
}

/// Named objects are kept in this many keys (`topo/obj/NN`), each a map
/// of the objects whose path hashes to it. Not one key per object: etcd
/// refuses a Txn of more than `--max-txn-ops` operations (128 by default),
/// so a key per object would cap an atomic apply at about 120 objects. Not
/// one key for the document: every change of one port would rewrite the
/// whole topology. With 32 buckets a change writes at most 32 + 6 keys,
/// and a change of one object about 1/32 of the topology.
pub const BUCKETS: u32 = 32;

/// The bucket of the object at `path` (`bridges.b`): FNV-1a of the path.
/// Part of the format: changing it moves every object.
pub fn bucket_of(path: &str) -> u32 {
    (fnv1a(path) % u64::from(BUCKETS)) as u32
}

/// 64-bit FNV-1a of `s`.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One named object with its stable id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectValue {
    pub id: u64,
    pub value: serde_json::Value,
}

/// `topo/obj/NN`: the objects of one bucket, by path.
pub type Bucket = BTreeMap<String, ObjectValue>;

/// `topo/log/<revision>`: what a revision changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub revision: u64,
    /// As `vnetctl apply` prints them (`~ bridges.b.ports.p`).
    pub changes: Vec<String>,
    pub delta: Delta,
}

/// The JSON of the object `kind`/`name` of `t`.
pub fn object_json(
    t: &Topology,
    kind: ObjectKind,
    name: &str,
) -> Option<Result<serde_json::Value, serde_json::Error>> {
    Some(match kind {
        ObjectKind::Bridge => serde_json::to_value(t.bridges.get(name)?),
        ObjectKind::Router => serde_json::to_value(t.routers.get(name)?),
        ObjectKind::Chain => serde_json::to_value(t.chains.get(name)?),
        ObjectKind::IpGroup => serde_json::to_value(t.ip_groups.get(name)?),
        ObjectKind::PortGroup => serde_json::to_value(t.port_groups.get(name)?),
    })
}

/// Puts the object of `section`/`name` into `t`.
pub fn insert_json(
    t: &mut Topology,
    section: &str,
    name: &str,
    value: serde_json::Value,
) -> Result<(), String> {
    let name = name.to_string();
    let e = |e: serde_json::Error| e.to_string();
    match section {
        "bridges" => t
            .bridges
            .insert(name, serde_json::from_value(value).map_err(e)?)
            .map(drop),
        "routers" => t
            .routers
            .insert(name, serde_json::from_value(value).map_err(e)?)
            .map(drop),
        "chains" => t
            .chains
            .insert(name, serde_json::from_value(value).map_err(e)?)
            .map(drop),
        "ip_groups" => t
            .ip_groups
            .insert(name, serde_json::from_value(value).map_err(e)?)
            .map(drop),
        "port_groups" => t
            .port_groups
            .insert(name, serde_json::from_value(value).map_err(e)?)
            .map(drop),
        other => return Err(format!("`{other}` is not a section of named objects")),
    };
    Ok(())
}

/// The JSON of a whole section of `t`, `None` when it is empty (no key).
pub fn section_json(t: &Topology, section: &str) -> Result<Option<Vec<u8>>, serde_json::Error> {
    Ok(match section {
        NAT if !t.nat.is_empty() => Some(serde_json::to_vec(&t.nat)?),
        FIREWALL if !t.firewall.is_empty() => Some(serde_json::to_vec(&t.firewall)?),
        HOSTS if !t.hosts.is_empty() => Some(serde_json::to_vec(&t.hosts)?),
        _ => None,
    })
}

/// Puts a whole section into `t`.
pub fn insert_section(t: &mut Topology, section: &str, bytes: &[u8]) -> Result<(), String> {
    let e = |e: serde_json::Error| e.to_string();
    match section {
        NAT => t.nat = serde_json::from_slice(bytes).map_err(e)?,
        FIREWALL => t.firewall = serde_json::from_slice(bytes).map_err(e)?,
        HOSTS => t.hosts = serde_json::from_slice(bytes).map_err(e)?,
        other => return Err(format!("`{other}` is not a section this vnetd knows")),
    }
    Ok(())
}

/// The whole sections, by name.
pub const SECTIONS: [&str; 3] = [NAT, FIREWALL, HOSTS];

/// Ids by path (`bridges.b`), as [`vnet_store::Store::object_ids`] gives them.
pub type Ids = BTreeMap<String, u64>;
