//! Bridges, routers, their ports, port links and routes.
//!
//! Mapping (docs/MIDONET.md):
//! - A MidoNet bridge or router is the vnet bridge or router of the same
//!   name; objects created without a name get `bridge-<8 hex>` /
//!   `router-<8 hex>`. Names must be vnet names (1-64 of A-Z a-z 0-9 - _ .);
//!   renames are refused because ids derive from names.
//! - Ports get generated names (`port-<8 hex>`; MidoNet ports have none).
//!   A port bound by a host binding is an exterior port with `interface`; a
//!   linked port is interior, with `peer` on both ends.
//! - Bridges have no administrative state in vnet (ports do): a bridge or
//!   router `adminStateUp: false` is refused.
//! - tenantId is not stored: vnet has one namespace per topology, so lists
//!   ignore `?tenant_id=` and objects answer `tenantId: ""`.

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use vnet_model::model::{
    AnyPort, Bridge, BridgePort, MacAddr, PortRef, Route, RouteType, Router, RouterPort, Topology,
};

use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Uuid};
use crate::index::{port_id, route_ids, Index};
use crate::input::Body;
use crate::view::{id_or_null, View};

// ---------------------------------------------------------------------------
// Reading

pub fn bridge_json(v: &View, name: &str, b: &Bridge) -> Value {
    let id = ids::bridge(name);
    let uri = v.uri(&format!("/bridges/{id}"));
    json!({
        "id": id.to_string(),
        "tenantId": "",
        "name": name,
        "adminStateUp": true,
        "inboundFilterId": v.chain_id(&b.inbound_filter),
        "outboundFilterId": v.chain_id(&b.outbound_filter),
        "inboundMirrorIds": [],
        "outboundMirrorIds": [],
        "vxLanPortIds": [],
        "ports": format!("{uri}/ports"),
        "peerPorts": format!("{uri}/peer_ports"),
        "dhcpSubnets": format!("{uri}/dhcp"),
        "dhcpSubnet6s": format!("{uri}/dhcpV6"),
        "macTable": format!("{uri}/mac_table"),
        "arpTable": format!("{uri}/arp_table"),
        "uri": uri,
    })
}

pub fn router_json(v: &View, name: &str, r: &Router) -> Value {
    let id = ids::router(name);
    let uri = v.uri(&format!("/routers/{id}"));
    json!({
        "id": id.to_string(),
        "tenantId": "",
        "name": name,
        "adminStateUp": true,
        "inboundFilterId": v.chain_id(&r.inbound_filter),
        "outboundFilterId": v.chain_id(&r.outbound_filter),
        "inboundMirrorIds": [],
        "outboundMirrorIds": [],
        "loadBalancerId": null,
        "asNumber": 0,
        "localRedirectChainId": null,
        "forwardChainId": null,
        "ports": format!("{uri}/ports"),
        "peerPorts": format!("{uri}/peer_ports"),
        "routes": format!("{uri}/routes"),
        "bgpNetworks": format!("{uri}/bgp_networks"),
        "bgpPeers": format!("{uri}/bgp_peers"),
        "uri": uri,
    })
}

pub fn port_json(v: &View, r: &PortRef, port: AnyPort) -> Value {
    let router = matches!(port, AnyPort::Router(_));
    let id = port_id(v.t, r);
    let device_id = if router {
        ids::router(&r.device)
    } else {
        ids::bridge(&r.device)
    };
    let uri = v.uri(&format!("/ports/{id}"));
    let (up, inf, outf) = match port {
        AnyPort::Bridge(p) => (p.up, &p.inbound_filter, &p.outbound_filter),
        AnyPort::Router(p) => (p.up, &p.inbound_filter, &p.outbound_filter),
    };
    let peer = port.peer().map(|p| port_id(v.t, p));
    let interface = port.interface();
    let kind = match (router, v.legacy, peer.is_some()) {
        (false, false, _) => "Bridge",
        (true, false, _) => "Router",
        (false, true, true) => "InteriorBridge",
        (false, true, false) => "ExteriorBridge",
        (true, true, true) => "InteriorRouter",
        (true, true, false) => "ExteriorRouter",
    };
    let mut o = json!({
        "type": kind,
        "id": id.to_string(),
        "deviceId": device_id.to_string(),
        "device": v.uri(&format!("/{}/{device_id}", if router { "routers" } else { "bridges" })),
        "adminStateUp": up,
        "active": interface.is_some() || peer.is_some(),
        "inboundFilterId": v.chain_id(inf),
        "outboundFilterId": v.chain_id(outf),
        "inboundMirrorIds": [],
        "outboundMirrorIds": [],
        "postInFilterMirrorIds": [],
        "preOutFilterMirrorIds": [],
        "vifId": null,
        "hostId": interface.map(|_| v.host.id.to_string()),
        "interfaceName": interface,
        "peerId": id_or_null(peer),
        "peer": peer.map(|p| v.uri(&format!("/ports/{p}"))),
        "tunnelKey": 0,
        "serviceContainerId": null,
        "insertionIds": [],
        "link": format!("{uri}/link"),
        "portGroups": format!("{uri}/port_groups"),
        "hostInterfacePort": interface.map(|_| v.uri(&format!("/hosts/{}/ports/{id}", v.host.id))),
        "uri": uri,
    });
    match port {
        AnyPort::Bridge(p) => {
            o["vlanId"] = json!(p.vlan.unwrap_or(0));
            o["vifId"] = json!(p.vif_id);
        }
        AnyPort::Router(p) => {
            o["portAddress"] = json!(p.address.addr().to_string());
            o["networkAddress"] = json!(p.address.network().to_string());
            o["networkLength"] = json!(p.address.prefix_len());
            o["portSubnet"] = json!(p.address.trunc().to_string());
            o["portMac"] = json!(p.effective_mac(&r.device, &r.port).to_string());
            o["rtrPortVni"] = json!(0);
            o["offRampVxlan"] = json!(false);
            o["bgpStatus"] = Value::Null;
            o["routeIds"] = json!([]);
        }
    }
    o
}

/// Every port of the topology (bridges first), or of one device.
pub fn ports(v: &View, device: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for (b, bridge) in &v.t.bridges {
        if device.is_some_and(|d| d != b) {
            continue;
        }
        for (p, port) in &bridge.ports {
            out.push(port_json(v, &PortRef::new(b, p), AnyPort::Bridge(port)));
        }
    }
    for (r, router) in &v.t.routers {
        if device.is_some_and(|d| d != r) {
            continue;
        }
        for (p, port) in &router.ports {
            out.push(port_json(v, &PortRef::new(r, p), AnyPort::Router(port)));
        }
    }
    out
}

/// The ports linked to a device's ports (`peer_ports`).
pub fn peer_ports(v: &View, device: &str) -> Vec<Value> {
    let mut peers: Vec<PortRef> = Vec::new();
    if let Some(b) = v.t.bridges.get(device) {
        peers.extend(b.ports.values().filter_map(|p| p.peer.clone()));
    }
    if let Some(r) = v.t.routers.get(device) {
        peers.extend(r.ports.values().filter_map(|p| p.peer.clone()));
    }
    peers
        .iter()
        .filter_map(|r| v.t.port(r).map(|p| port_json(v, r, p)))
        .collect()
}

pub fn route_json(v: &View, router: &str, id: Uuid, route: &Route) -> Value {
    let src = route.src.unwrap_or_default();
    let kind = match route.kind {
        RouteType::Normal => "Normal",
        RouteType::Blackhole => "BlackHole",
        RouteType::Reject => "Reject",
    };
    let port =
        v.t.routers
            .get(router)
            .and_then(|r| r.route_port(route))
            .map(|p| ids::router_port(router, p).to_string());
    json!({
        "id": id.to_string(),
        "routerId": ids::router(router).to_string(),
        "type": kind,
        "srcNetworkAddr": src.network().to_string(),
        "srcNetworkLength": src.prefix_len(),
        "dstNetworkAddr": route.dst.network().to_string(),
        "dstNetworkLength": route.dst.prefix_len(),
        "nextHopPort": port,
        "nextHopGateway": route.via.map(|a| a.to_string()),
        "weight": route.weight.unwrap_or(0),
        "attributes": null,
        "learned": false,
        "uri": v.uri(&format!("/routes/{id}")),
    })
}

pub fn routes(v: &View, router: &str) -> Vec<Value> {
    let Some(r) = v.t.routers.get(router) else {
        return Vec::new();
    };
    route_ids(v.t, router)
        .into_iter()
        .zip(&r.routes)
        .map(|(id, route)| route_json(v, router, id, route))
        .collect()
}

pub fn port_by_id(v: &View, id: Uuid) -> ApiResult<Value> {
    let (r, _) = v.idx.port(id)?;
    let port =
        v.t.port(&r)
            .ok_or_else(|| ApiError::not_found(format!("there is no port {id}")))?;
    Ok(port_json(v, &r, port))
}

// ---------------------------------------------------------------------------
// Writing

/// A name for a new object: the one asked for, or `<kind>-<8 hex>`.
pub fn new_name(body: &Body, kind: &str) -> ApiResult<String> {
    match body.text("name")? {
        Some(n) => Ok(n),
        None => Ok(format!("{kind}-{}", fresh()?.short())),
    }
}

pub fn fresh() -> ApiResult<Uuid> {
    Uuid::random().map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("making an id: {e}"),
        )
    })
}

/// A chain named by an id field (`inboundFilterId`), or none.
fn filter(idx: &Index, body: &Body, key: &str) -> ApiResult<Option<String>> {
    match body.uuid(key)? {
        None => Ok(None),
        Some(id) => idx.field(key, |i| i.chain(id)).map(Some),
    }
}

/// `adminStateUp: false` on a device: vnet has no such state.
fn device_state(body: &Body, what: &str) -> ApiResult<()> {
    if body.bool("adminStateUp")? == Some(false) {
        return Err(ApiError::unsupported(format!(
            "adminStateUp: vnet {what}s have no administrative state; set their ports down instead"
        )));
    }
    Ok(())
}

fn same_name(body: &Body, name: &str) -> ApiResult<()> {
    match body.text("name")? {
        Some(n) if n != name => Err(ApiError::unsupported(format!(
            "name: cannot rename {name} to {n}: vnet objects are known by name and their \
             MidoNet ids derive from it; create a new one instead"
        ))),
        _ => Ok(()),
    }
}

pub fn create_bridge(t: &mut Topology, body: &Body) -> ApiResult<Uuid> {
    let idx = Index::new(t);
    device_state(body, "bridge")?;
    let name = new_name(body, "bridge")?;
    if t.bridges.contains_key(&name) || t.routers.contains_key(&name) {
        return Err(ApiError::conflict(format!(
            "a bridge or router named {name} already exists"
        )));
    }
    let b = Bridge {
        inbound_filter: filter(&idx, body, "inboundFilterId")?,
        outbound_filter: filter(&idx, body, "outboundFilterId")?,
        ..Bridge::default()
    };
    t.bridges.insert(name.clone(), b);
    Ok(ids::bridge(&name))
}

pub fn update_bridge(t: &mut Topology, id: Uuid, body: &Body) -> ApiResult<()> {
    let idx = Index::new(t);
    let name = idx.bridge(id)?;
    same_name(body, &name)?;
    device_state(body, "bridge")?;
    let inbound = filter(&idx, body, "inboundFilterId")?;
    let outbound = filter(&idx, body, "outboundFilterId")?;
    let b = t.bridges.get_mut(&name).expect("indexed");
    b.inbound_filter = inbound;
    b.outbound_filter = outbound;
    Ok(())
}

pub fn create_router(t: &mut Topology, body: &Body) -> ApiResult<Uuid> {
    let idx = Index::new(t);
    device_state(body, "router")?;
    let name = new_name(body, "router")?;
    if t.bridges.contains_key(&name) || t.routers.contains_key(&name) {
        return Err(ApiError::conflict(format!(
            "a bridge or router named {name} already exists"
        )));
    }
    refuse_router_extras(body)?;
    let r = Router {
        inbound_filter: filter(&idx, body, "inboundFilterId")?,
        outbound_filter: filter(&idx, body, "outboundFilterId")?,
        ..Router::default()
    };
    t.routers.insert(name.clone(), r);
    Ok(ids::router(&name))
}

fn refuse_router_extras(body: &Body) -> ApiResult<()> {
    for key in ["loadBalancerId", "localRedirectChainId", "forwardChainId"] {
        if body.text(key)?.is_some() {
            return Err(ApiError::unsupported(format!(
                "{key}: vnet routers have no {key}; leave it null"
            )));
        }
    }
    if body.u64("asNumber")?.unwrap_or(0) != 0 {
        return Err(ApiError::unsupported(
            "asNumber: vnet routers do not speak BGP",
        ));
    }
    Ok(())
}

pub fn update_router(t: &mut Topology, id: Uuid, body: &Body) -> ApiResult<()> {
    let idx = Index::new(t);
    let name = idx.router(id)?;
    same_name(body, &name)?;
    device_state(body, "router")?;
    refuse_router_extras(body)?;
    let inbound = filter(&idx, body, "inboundFilterId")?;
    let outbound = filter(&idx, body, "outboundFilterId")?;
    let r = t.routers.get_mut(&name).expect("indexed");
    r.inbound_filter = inbound;
    r.outbound_filter = outbound;
    Ok(())
}

/// Removes references to the ports of a device that goes away: their peers'
/// links (MidoNet deletes a device's ports and links with it).
fn unlink_all(t: &mut Topology, device: &str) {
    for b in t.bridges.values_mut() {
        for p in b.ports.values_mut() {
            if p.peer.as_ref().is_some_and(|r| r.device == device) {
                p.peer = None;
            }
        }
    }
    for r in t.routers.values_mut() {
        for p in r.ports.values_mut() {
            if p.peer.as_ref().is_some_and(|r| r.device == device) {
                p.peer = None;
            }
        }
    }
}

pub fn delete_bridge(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    let name = Index::new(t).bridge(id)?;
    t.bridges.remove(&name);
    unlink_all(t, &name);
    Ok(())
}

pub fn delete_router(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    let name = Index::new(t).router(id)?;
    t.routers.remove(&name);
    unlink_all(t, &name);
    Ok(())
}

fn port_type(body: &Body, router: bool) -> ApiResult<()> {
    let Some(kind) = body.text("type")? else {
        return Ok(());
    };
    let ok = if router {
        matches!(
            kind.as_str(),
            "Router" | "InteriorRouter" | "ExteriorRouter"
        )
    } else {
        matches!(
            kind.as_str(),
            "Bridge" | "InteriorBridge" | "ExteriorBridge"
        )
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            "type",
            format!(
                "`{}` is not a port type of a {} (vnet has no VXLAN or L2 service ports)",
                kind.escape_debug(),
                if router {
                    "router: Router"
                } else {
                    "bridge: Bridge"
                }
            ),
        ))
    }
}

/// A bridge port's `vifId`: kept as the port's `vif_id` (CloudStack sets
/// it to the NIC's id and its KVM agent finds the port by it).
fn vif(body: &Body) -> ApiResult<Option<String>> {
    Ok(body.uuid("vifId")?.map(|u| u.to_string()))
}

/// Router ports have no VIF in vnet (MidoNet's are for bridge ports too).
fn refuse_vif(body: &Body) -> ApiResult<()> {
    if body.text("vifId")?.is_some() {
        return Err(ApiError::unsupported(
            "vifId: only bridge ports carry a VIF id in vnet",
        ));
    }
    Ok(())
}

fn vlan(body: &Body) -> ApiResult<Option<u16>> {
    Ok(body
        .u32_max("vlanId", 4094)?
        .filter(|v| *v != 0)
        .map(|v| v as u16))
}

/// A router port's address from `portAddress`, `networkAddress`,
/// `networkLength`. vnet keeps a port's address inside its subnet; MidoNet
/// does not require it, and CloudStack links its routers with
/// `169.254.255.1` on network `169.254.255.0/32`. Such a port gets the
/// smallest subnet holding both its address and `networkAddress`, and at
/// least a /30 (a point-to-point link), so both ends of the link share it.
fn router_address(body: &Body, old: Option<Ipv4Net>) -> ApiResult<Ipv4Net> {
    let addr = match (body.ip("portAddress")?, old) {
        (Some(a), _) => a,
        (None, Some(o)) => o.addr(),
        (None, None) => return Err(ApiError::field("portAddress", "is required")),
    };
    let len = match (body.u32_max("networkLength", 32)?, old) {
        (Some(l), _) => l as u8,
        (None, Some(o)) => o.prefix_len(),
        (None, None) => return Err(ApiError::field("networkLength", "is required")),
    };
    let net =
        Ipv4Net::new(addr, len).map_err(|e| ApiError::field("networkLength", e.to_string()))?;
    let Some(network) = body.ip("networkAddress")? else {
        return Ok(net);
    };
    if net.contains(&network) && network == net.network() {
        return Ok(net);
    }
    let stated =
        Ipv4Net::new(network, len).map_err(|e| ApiError::field("networkLength", e.to_string()))?;
    if stated.contains(&addr) {
        // networkAddress is inside the network but not its first address.
        return Err(ApiError::field(
            "networkAddress",
            format!(
                "{network} is not the network address of {} (that is {})",
                stated,
                stated.network()
            ),
        ));
    }
    if len < 30 {
        return Err(ApiError::field(
            "networkAddress",
            format!("portAddress {addr} is not inside {network}/{len}"),
        ));
    }
    // The smallest subnet of at least a /30 (and at most a /24) holding
    // both addresses.
    (24..=30u8)
        .rev()
        .map(|wide| Ipv4Net::new(addr, wide).expect("prefix <= 32"))
        .find(|n| n.trunc().contains(&network))
        .ok_or_else(|| {
            ApiError::field(
                "networkAddress",
                format!("portAddress {addr} is not inside {network}/{len}"),
            )
        })
}

fn port_mac(body: &Body) -> ApiResult<Option<MacAddr>> {
    match body.text("portMac")? {
        None => Ok(None),
        Some(m) => m
            .parse()
            .map(Some)
            .map_err(|e: vnet_model::model::ValueError| ApiError::field("portMac", e.0)),
    }
}

pub fn create_port(t: &mut Topology, device: Uuid, body: &Body) -> ApiResult<Uuid> {
    let idx = Index::new(t);
    if body.text("peerId")?.is_some() {
        return Err(ApiError::field(
            "peerId",
            "link ports with POST /ports/{id}/link after creating them",
        ));
    }
    let up = body.bool("adminStateUp")?.unwrap_or(true);
    let inbound = filter(&idx, body, "inboundFilterId")?;
    let outbound = filter(&idx, body, "outboundFilterId")?;
    let name = format!("port-{}", fresh()?.short());
    match idx.get(device) {
        Some(crate::index::Target::Bridge(b)) => {
            port_type(body, false)?;
            let port = BridgePort {
                vlan: vlan(body)?,
                vif_id: vif(body)?,
                inbound_filter: inbound,
                outbound_filter: outbound,
                up,
                ..BridgePort::default()
            };
            let b = b.clone();
            t.bridges
                .get_mut(&b)
                .expect("indexed")
                .ports
                .insert(name.clone(), port);
            Ok(ids::bridge_port(&b, &name))
        }
        Some(crate::index::Target::Router(r)) => {
            port_type(body, true)?;
            refuse_vif(body)?;
            let mut port = RouterPort::new(router_address(body, None)?);
            port.mac = port_mac(body)?;
            port.inbound_filter = inbound;
            port.outbound_filter = outbound;
            port.up = up;
            let r = r.clone();
            t.routers
                .get_mut(&r)
                .expect("indexed")
                .ports
                .insert(name.clone(), port);
            Ok(ids::router_port(&r, &name))
        }
        _ => Err(ApiError::not_found(format!(
            "there is no bridge or router {device}"
        ))),
    }
}

/// `PUT /ports/{id}`: state, filters, VLAN, router addressing. `peerId`,
/// `hostId` and `interfaceName` are kept as they are (links and host
/// bindings change them), as MidoNet does.
pub fn update_port(t: &mut Topology, id: Uuid, body: &Body) -> ApiResult<()> {
    let idx = Index::new(t);
    let (r, router) = idx.port(id)?;
    port_type(body, router)?;
    let inbound = filter(&idx, body, "inboundFilterId")?;
    let outbound = filter(&idx, body, "outboundFilterId")?;
    let up = body.bool("adminStateUp")?;
    if router {
        refuse_vif(body)?;
        let old = t.routers[&r.device].ports[&r.port].address;
        let address = router_address(body, Some(old))?;
        let mac = port_mac(body)?;
        let p = t
            .routers
            .get_mut(&r.device)
            .and_then(|d| d.ports.get_mut(&r.port))
            .expect("indexed");
        p.address = address;
        // The MAC answered for a derived one is kept derived.
        if let Some(mac) = mac {
            if mac != p.effective_mac(&r.device, &r.port) {
                p.mac = Some(mac);
            }
        }
        p.inbound_filter = inbound;
        p.outbound_filter = outbound;
        if let Some(up) = up {
            p.up = up;
        }
    } else {
        let vlan = vlan(body)?;
        let vif_id = vif(body)?;
        let p = t
            .bridges
            .get_mut(&r.device)
            .and_then(|d| d.ports.get_mut(&r.port))
            .expect("indexed");
        p.vlan = vlan;
        p.vif_id = vif_id;
        p.inbound_filter = inbound;
        p.outbound_filter = outbound;
        if let Some(up) = up {
            p.up = up;
        }
    }
    Ok(())
}

fn set_peer(t: &mut Topology, r: &PortRef, peer: Option<PortRef>) {
    if let Some(p) = t
        .bridges
        .get_mut(&r.device)
        .and_then(|b| b.ports.get_mut(&r.port))
    {
        p.peer = peer;
    } else if let Some(p) = t
        .routers
        .get_mut(&r.device)
        .and_then(|d| d.ports.get_mut(&r.port))
    {
        p.peer = peer;
    }
}

pub fn set_interface(t: &mut Topology, r: &PortRef, interface: Option<String>) {
    if let Some(p) = t
        .bridges
        .get_mut(&r.device)
        .and_then(|b| b.ports.get_mut(&r.port))
    {
        p.interface = interface;
    } else if let Some(p) = t
        .routers
        .get_mut(&r.device)
        .and_then(|d| d.ports.get_mut(&r.port))
    {
        p.interface = interface;
    }
}

pub fn delete_port(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    let (r, router) = Index::new(t).port(id)?;
    let peer = t.port(&r).and_then(|p| p.peer().cloned());
    if let Some(peer) = peer {
        set_peer(t, &peer, None);
    }
    if router {
        t.routers
            .get_mut(&r.device)
            .expect("indexed")
            .ports
            .remove(&r.port);
    } else {
        t.bridges
            .get_mut(&r.device)
            .expect("indexed")
            .ports
            .remove(&r.port);
    }
    Ok(())
}

/// `POST /ports/{id}/link {peerId}` (12.12 clients unlink with `peerId:
/// null`). Both ends change, in one revision.
pub fn link(t: &mut Topology, id: Uuid, body: &Body) -> ApiResult<()> {
    let idx = Index::new(t);
    let (a, _) = idx.port(id)?;
    let Some(peer_id) = body.uuid("peerId")? else {
        return unlink(t, id);
    };
    let (b, _) = idx.field("peerId", |i| i.port(peer_id))?;
    if a == b {
        return Err(ApiError::field(
            "peerId",
            "a port cannot be linked to itself",
        ));
    }
    for (r, uuid) in [(&a, id), (&b, peer_id)] {
        let p = t.port(r).expect("indexed");
        match p.peer() {
            Some(existing) if *existing == if *r == a { b.clone() } else { a.clone() } => {}
            Some(_) => {
                return Err(ApiError::conflict(format!(
                    "port {uuid} is already linked; unlink it first (DELETE its link)"
                )))
            }
            None => {}
        }
        if let Some(i) = p.interface() {
            return Err(ApiError::conflict(format!(
                "port {uuid} is bound to interface {i}; delete the host binding before linking it"
            )));
        }
    }
    set_peer(t, &a, Some(b.clone()));
    set_peer(t, &b, Some(a));
    Ok(())
}

pub fn unlink(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    let (a, _) = Index::new(t).port(id)?;
    if let Some(b) = t.port(&a).and_then(|p| p.peer().cloned()) {
        set_peer(t, &b, None);
    }
    set_peer(t, &a, None);
    Ok(())
}

pub fn create_route(t: &mut Topology, router_id: Uuid, body: &Body) -> ApiResult<Uuid> {
    let idx = Index::new(t);
    let router = idx.router(router_id)?;
    let kind = match body.text("type")?.as_deref() {
        None => RouteType::Normal,
        Some(k) if k.eq_ignore_ascii_case("normal") => RouteType::Normal,
        Some(k) if k.eq_ignore_ascii_case("blackhole") => RouteType::Blackhole,
        Some(k) if k.eq_ignore_ascii_case("reject") => RouteType::Reject,
        Some(k) => {
            return Err(ApiError::field(
                "type",
                format!(
                    "`{}`: vnet routes are Normal, BlackHole or Reject (a router's own \
                     addresses are its ports': no Local routes)",
                    k.escape_debug()
                ),
            ))
        }
    };
    let net = |addr: &str, len: &str, default: bool| -> ApiResult<Option<Ipv4Net>> {
        match (body.ip(addr)?, body.u32_max(len, 32)?) {
            (Some(a), Some(l)) => Ipv4Net::new(a, l as u8)
                .map(|n| Some(n.trunc()))
                .map_err(|e| ApiError::field(len, e.to_string())),
            (None, None) if default => Ok(None),
            (None, _) => Err(ApiError::field(addr, "is required")),
            (_, None) => Err(ApiError::field(len, "is required")),
        }
    };
    let dst = net("dstNetworkAddr", "dstNetworkLength", false)?.expect("required");
    let src = net("srcNetworkAddr", "srcNetworkLength", true)?.filter(|s| s.prefix_len() != 0);
    let port = match body.uuid("nextHopPort")? {
        None => None,
        Some(pid) => {
            let (r, is_router) = idx.field("nextHopPort", |i| i.port(pid))?;
            if !is_router || r.device != router {
                return Err(ApiError::field(
                    "nextHopPort",
                    format!("port {pid} is not a port of router {router}"),
                ));
            }
            Some(r.port)
        }
    };
    let mut via = body.ip("nextHopGateway")?.filter(|a| !a.is_unspecified());
    // Over a link between two routers MidoNet hands packets to the peer
    // router whatever the next hop; vnet resolves next hops by ARP, which
    // the peer answers for its own address: that becomes the gateway.
    if via.is_none() && kind == RouteType::Normal {
        if let Some(p) = &port {
            let peer = t.routers[&router].ports[p].peer.clone();
            if let Some(peer) = peer {
                if let Some(AnyPort::Router(rp)) = t.port(&peer) {
                    via = Some(rp.address.addr());
                }
            }
        }
    }
    if kind != RouteType::Normal && (port.is_some() || via.is_some()) {
        return Err(ApiError::field(
            "nextHopPort",
            "a BlackHole or Reject route has no next hop",
        ));
    }
    let weight = body.u32_max("weight", u32::MAX as u64)?.unwrap_or(100) as u32;
    let route = Route {
        dst,
        src,
        port,
        via,
        kind,
        weight: Some(weight),
    };
    let r = t.routers.get_mut(&router).expect("indexed");
    r.routes.push(route);
    Ok(*route_ids(t, &router).last().expect("pushed"))
}

pub fn delete_route(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    match Index::new(t).get(id) {
        Some(crate::index::Target::Route(r, i)) => {
            let (r, i) = (r.clone(), *i);
            t.routers.get_mut(&r).expect("indexed").routes.remove(i);
            Ok(())
        }
        _ => Err(ApiError::not_found(format!("there is no route {id}"))),
    }
}
