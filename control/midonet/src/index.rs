//! Finding the vnet object a MidoNet id names: the ids of every object of a
//! topology ([`crate::ids`]), computed once per request.

use std::collections::HashMap;

use vnet_model::model::{PortRef, Topology};

use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Uuid};

/// What an id names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Bridge(String),
    Router(String),
    /// A bridge or router port: its `device/port`.
    BridgePort(PortRef),
    RouterPort(PortRef),
    Chain(String),
    /// A rule: chain and index.
    Rule(String, usize),
    /// A route: router and index.
    Route(String, usize),
    PortGroup(String),
    IpGroup(String),
}

pub struct Index {
    by_id: HashMap<Uuid, Target>,
}

/// The file form of an item, what its id hashes.
pub fn content<T: serde::Serialize>(item: &T) -> String {
    serde_json::to_string(item).unwrap_or_default()
}

/// Ids of a list's items: content plus the count of equal items before.
pub fn item_ids<T: serde::Serialize>(items: &[T], id: impl Fn(&str, usize) -> Uuid) -> Vec<Uuid> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    items
        .iter()
        .map(|item| {
            let c = content(item);
            let n = seen.entry(c.clone()).or_insert(0);
            let uuid = id(&c, *n);
            *n += 1;
            uuid
        })
        .collect()
}

pub fn rule_ids(t: &Topology, chain: &str) -> Vec<Uuid> {
    match t.chains.get(chain) {
        Some(rules) => item_ids(rules, |c, n| ids::rule(chain, c, n)),
        None => Vec::new(),
    }
}

pub fn route_ids(t: &Topology, router: &str) -> Vec<Uuid> {
    match t.routers.get(router) {
        Some(r) => item_ids(&r.routes, |c, n| ids::route(router, c, n)),
        None => Vec::new(),
    }
}

impl Index {
    pub fn new(t: &Topology) -> Index {
        let mut by_id = HashMap::new();
        for (name, b) in &t.bridges {
            by_id.insert(ids::bridge(name), Target::Bridge(name.clone()));
            for p in b.ports.keys() {
                by_id.insert(
                    ids::bridge_port(name, p),
                    Target::BridgePort(PortRef::new(name, p)),
                );
            }
        }
        for (name, r) in &t.routers {
            by_id.insert(ids::router(name), Target::Router(name.clone()));
            for p in r.ports.keys() {
                by_id.insert(
                    ids::router_port(name, p),
                    Target::RouterPort(PortRef::new(name, p)),
                );
            }
            for (i, id) in route_ids(t, name).into_iter().enumerate() {
                by_id.insert(id, Target::Route(name.clone(), i));
            }
        }
        for name in t.chains.keys() {
            by_id.insert(ids::chain(name), Target::Chain(name.clone()));
            for (i, id) in rule_ids(t, name).into_iter().enumerate() {
                by_id.insert(id, Target::Rule(name.clone(), i));
            }
        }
        for name in t.port_groups.keys() {
            by_id.insert(ids::port_group(name), Target::PortGroup(name.clone()));
        }
        for name in t.ip_groups.keys() {
            by_id.insert(ids::ip_group(name), Target::IpGroup(name.clone()));
        }
        Index { by_id }
    }

    pub fn get(&self, id: Uuid) -> Option<&Target> {
        self.by_id.get(&id)
    }

    pub fn bridge(&self, id: Uuid) -> ApiResult<String> {
        match self.get(id) {
            Some(Target::Bridge(n)) => Ok(n.clone()),
            _ => Err(ApiError::not_found(format!("there is no bridge {id}"))),
        }
    }

    pub fn router(&self, id: Uuid) -> ApiResult<String> {
        match self.get(id) {
            Some(Target::Router(n)) => Ok(n.clone()),
            _ => Err(ApiError::not_found(format!("there is no router {id}"))),
        }
    }

    pub fn chain(&self, id: Uuid) -> ApiResult<String> {
        match self.get(id) {
            Some(Target::Chain(n)) => Ok(n.clone()),
            _ => Err(ApiError::not_found(format!("there is no chain {id}"))),
        }
    }

    /// A port of either kind: its reference and whether it is a router's.
    pub fn port(&self, id: Uuid) -> ApiResult<(PortRef, bool)> {
        match self.get(id) {
            Some(Target::BridgePort(r)) => Ok((r.clone(), false)),
            Some(Target::RouterPort(r)) => Ok((r.clone(), true)),
            _ => Err(ApiError::not_found(format!("there is no port {id}"))),
        }
    }

    pub fn port_group(&self, id: Uuid) -> ApiResult<String> {
        match self.get(id) {
            Some(Target::PortGroup(n)) => Ok(n.clone()),
            _ => Err(ApiError::not_found(format!("there is no port group {id}"))),
        }
    }

    pub fn ip_group(&self, id: Uuid) -> ApiResult<String> {
        match self.get(id) {
            Some(Target::IpGroup(n)) => Ok(n.clone()),
            _ => Err(ApiError::not_found(format!(
                "there is no IP address group {id}"
            ))),
        }
    }

    /// A field holding a reference to another object: an unknown id is the
    /// request's fault (400 naming the field), not a missing resource.
    pub fn field<T>(
        &self,
        field: &str,
        lookup: impl FnOnce(&Index) -> ApiResult<T>,
    ) -> ApiResult<T> {
        lookup(self).map_err(|e| ApiError::field(field, e.message))
    }
}

/// The id of a port given by reference.
pub fn port_id(t: &Topology, r: &PortRef) -> Uuid {
    if t.routers.contains_key(&r.device) {
        ids::router_port(&r.device, &r.port)
    } else {
        ids::bridge_port(&r.device, &r.port)
    }
}
