//! Port groups (vnet `port_groups`) and IP address groups (vnet
//! `ip_groups`, IPv4 only), with their members.

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use vnet_model::model::{PortGroup, Topology};

use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Uuid};
use crate::index::{port_id, Index};
use crate::input::Body;
use crate::view::View;

pub fn port_group_json(v: &View, name: &str, g: &PortGroup) -> Value {
    let id = ids::port_group(name);
    let uri = v.uri(&format!("/port_groups/{id}"));
    json!({
        "id": id.to_string(),
        "tenantId": "",
        "name": name,
        "stateful": g.stateful,
        "ports": format!("{uri}/ports"),
        "uri": uri,
    })
}

pub fn member_json(v: &View, group: &str, port: Uuid) -> Value {
    let gid = ids::port_group(group);
    json!({
        "portGroupId": gid.to_string(),
        "portId": port.to_string(),
        "port": v.uri(&format!("/ports/{port}")),
        "portGroup": v.uri(&format!("/port_groups/{gid}")),
        "uri": v.uri(&format!("/port_groups/{gid}/ports/{port}")),
    })
}

pub fn members(v: &View, group: &str) -> Vec<Value> {
    v.t.port_groups
        .get(group)
        .map(|g| {
            g.ports
                .iter()
                .map(|r| member_json(v, group, port_id(v.t, r)))
                .collect()
        })
        .unwrap_or_default()
}

/// The groups a port is in (`/ports/{id}/port_groups`).
pub fn groups_of(v: &View, port: Uuid) -> ApiResult<Vec<Value>> {
    let (r, _) = v.idx.port(port)?;
    Ok(v.t
        .port_groups
        .iter()
        .filter(|(_, g)| g.ports.contains(&r))
        .map(|(name, _)| member_json(v, name, port))
        .collect())
}

pub fn create_port_group(t: &mut Topology, body: &Body) -> ApiResult<Uuid> {
    let name = crate::devices::new_name(body, "port-group")?;
    if t.port_groups.contains_key(&name) {
        return Err(ApiError::conflict(format!(
            "a port group named {name} already exists"
        )));
    }
    t.port_groups.insert(
        name.clone(),
        PortGroup {
            ports: Vec::new(),
            stateful: body.flag("stateful")?,
        },
    );
    Ok(ids::port_group(&name))
}

pub fn update_port_group(t: &mut Topology, id: Uuid, body: &Body) -> ApiResult<()> {
    let name = Index::new(t).port_group(id)?;
    if let Some(n) = body.text("name")? {
        if n != name {
            return Err(ApiError::unsupported(format!(
                "name: cannot rename port group {name} to {n}: its id derives from its name"
            )));
        }
    }
    if let Some(s) = body.bool("stateful")? {
        t.port_groups.get_mut(&name).expect("indexed").stateful = s;
    }
    Ok(())
}

pub fn delete_port_group(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    let name = Index::new(t).port_group(id)?;
    t.port_groups.remove(&name);
    Ok(())
}

pub fn add_member(t: &mut Topology, group: Uuid, body: &Body) -> ApiResult<Uuid> {
    let idx = Index::new(t);
    let name = idx.port_group(group)?;
    let pid = body
        .uuid("portId")?
        .ok_or_else(|| ApiError::field("portId", "is required"))?;
    let (r, _) = idx.field("portId", |i| i.port(pid))?;
    let g = t.port_groups.get_mut(&name).expect("indexed");
    if g.ports.contains(&r) {
        return Err(ApiError::conflict(format!(
            "port {pid} is already in port group {name}"
        )));
    }
    g.ports.push(r);
    Ok(pid)
}

pub fn remove_member(t: &mut Topology, group: Uuid, port: Uuid) -> ApiResult<()> {
    let idx = Index::new(t);
    let name = idx.port_group(group)?;
    let (r, _) = idx.port(port)?;
    let g = t.port_groups.get_mut(&name).expect("indexed");
    let before = g.ports.len();
    g.ports.retain(|p| *p != r);
    if g.ports.len() == before {
        return Err(ApiError::not_found(format!(
            "port {port} is not in port group {name}"
        )));
    }
    Ok(())
}

pub fn ip_group_json(v: &View, name: &str) -> Value {
    let id = ids::ip_group(name);
    let uri = v.uri(&format!("/ip_addr_groups/{id}"));
    json!({
        "id": id.to_string(),
        "name": name,
        "addrs": format!("{uri}/ip_addrs"),
        "uri": uri,
    })
}

pub fn addr_json(v: &View, group: &str, addr: Ipv4Addr) -> Value {
    let gid = ids::ip_group(group);
    json!({
        "ipAddrGroupId": gid.to_string(),
        "addr": addr.to_string(),
        "version": 4,
        "uri": v.uri(&format!("/ip_addr_groups/{gid}/versions/4/ip_addrs/{addr}")),
    })
}

pub fn addrs(v: &View, group: &str) -> Vec<Value> {
    v.t.ip_groups
        .get(group)
        .map(|a| a.iter().map(|x| addr_json(v, group, *x)).collect())
        .unwrap_or_default()
}

pub fn create_ip_group(t: &mut Topology, body: &Body) -> ApiResult<Uuid> {
    let name = crate::devices::new_name(body, "ip-group")?;
    if t.ip_groups.contains_key(&name) {
        return Err(ApiError::conflict(format!(
            "an IP address group named {name} already exists"
        )));
    }
    t.ip_groups.insert(name.clone(), Vec::new());
    Ok(ids::ip_group(&name))
}

pub fn delete_ip_group(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    let name = Index::new(t).ip_group(id)?;
    t.ip_groups.remove(&name);
    Ok(())
}

pub fn add_addr(t: &mut Topology, group: Uuid, body: &Body) -> ApiResult<Ipv4Addr> {
    let name = Index::new(t).ip_group(group)?;
    if body.u64("version")?.is_some_and(|v| v != 4) {
        return Err(ApiError::unsupported(
            "version: vnet address groups hold IPv4 addresses only",
        ));
    }
    let addr = body
        .ip("addr")?
        .ok_or_else(|| ApiError::field("addr", "is required"))?;
    let g = t.ip_groups.get_mut(&name).expect("indexed");
    if g.contains(&addr) {
        return Err(ApiError::conflict(format!(
            "{addr} is already in group {name}"
        )));
    }
    g.push(addr);
    Ok(addr)
}

pub fn remove_addr(t: &mut Topology, group: Uuid, addr: &str) -> ApiResult<()> {
    let name = Index::new(t).ip_group(group)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| {
        ApiError::not_found(format!("`{}` is not an IPv4 address", addr.escape_debug()))
    })?;
    let g = t.ip_groups.get_mut(&name).expect("indexed");
    let before = g.len();
    g.retain(|a| *a != addr);
    if g.len() == before {
        return Err(ApiError::not_found(format!(
            "{addr} is not in group {name}"
        )));
    }
    Ok(())
}
