//! Which request goes where: MidoNet's endpoint table (MIDONET-API.md §8)
//! over the resource modules. Reads answer from one topology revision;
//! every write is one transaction on the store.

use axum::http::Method;
use serde_json::{json, Value};
use vnet_model::model::{AnyPort, PortRef};

use crate::chains;
use crate::devices;
use crate::dhcp;
use crate::error::{ApiError, ApiResult};
use crate::groups;
use crate::host;
use crate::ids::Uuid;
use crate::index::{port_id, Index};
use crate::input::Body;
use crate::view::{Reply, View};

/// Collections of the root document that vnet has nothing for: they list
/// empty, and refuse creates. (path segment, root key, template key)
const EMPTY: &[(&str, &str, &str)] = &[
    ("mirrors", "mirrors", "mirrorTemplate"),
    ("l2insertions", "l2insertions", "l2insertionTemplate"),
    ("load_balancers", "loadBalancers", "loadBalancerTemplate"),
    ("vips", "vips", "vipTemplate"),
    ("pools", "pools", "poolTemplate"),
    ("pool_members", "poolMembers", "poolMemberTemplate"),
    ("health_monitors", "healthMonitors", "healthMonitorTemplate"),
    ("pool_statistics", "poolStatistics", "poolStatisticTemplate"),
    ("vteps", "vteps", "vtepTemplate"),
    ("traces", "traceRequests", "traceRequestTemplate"),
    (
        "service_containers",
        "serviceContainers",
        "serviceContainerTemplate",
    ),
    (
        "service_container_groups",
        "serviceContainerGroups",
        "serviceContainerGroupTemplate",
    ),
];

pub fn application(base: &str) -> Value {
    let mut o = json!({
        "uri": format!("{base}/"),
        "version": "v5",
        "writeVersion": format!("{base}/write_version"),
        "systemState": format!("{base}/system_state"),
        "hostVersions": format!("{base}/versions"),
        "routeTemplate": format!("{base}/routes/{{id}}"),
        "ruleTemplate": format!("{base}/rules/{{id}}"),
        "bgpNetworkTemplate": format!("{base}/bgp_networks/{{id}}"),
        "bgpPeerTemplate": format!("{base}/bgp_peers/{{id}}"),
        "bgpTemplate": format!("{base}/bgps/{{id}}"),
        "adRouteTemplate": format!("{base}/ad_routes/{{id}}"),
        "poolStatistic": format!("{base}/pool_statistics/{{id}}"),
    });
    for (seg, key, template) in [
        ("bridges", "bridges", "bridgeTemplate"),
        ("routers", "routers", "routerTemplate"),
        ("ports", "ports", "portTemplate"),
        ("chains", "chains", "chainTemplate"),
        ("hosts", "hosts", "hostTemplate"),
        ("tunnel_zones", "tunnelZones", "tunnelZoneTemplate"),
        ("port_groups", "portGroups", "portGroupTemplate"),
        ("ip_addr_groups", "ipAddrGroups", "ipAddrGroupTemplate"),
        ("tenants", "tenants", "tenantTemplate"),
    ]
    .into_iter()
    .chain(EMPTY.iter().copied())
    {
        o[key] = json!(format!("{base}/{seg}"));
        o[template] = json!(format!("{base}/{seg}/{{id}}"));
    }
    o
}

fn system_state(base: &str) -> Value {
    json!({
        "state": "ACTIVE",
        "availability": "READWRITE",
        "version": "5.2",
        "writeVersion": "5.2",
        "information": null,
        "uri": format!("{base}/system_state"),
    })
}

/// An id in a path: a malformed one names nothing (404, as MidoNet).
fn id(seg: &str) -> ApiResult<Uuid> {
    seg.parse()
        .map_err(|_| ApiError::not_found(format!("no object has the id `{}`", seg.escape_debug())))
}

fn host_json(v: &View) -> Value {
    let id = v.host.id;
    let uri = v.uri(&format!("/hosts/{id}"));
    json!({
        "id": id.to_string(),
        "name": v.host.name,
        "alive": true,
        "addresses": [],
        "floodingProxyWeight": 1,
        "containerWeight": 1,
        "containerLimit": -1,
        "enforceContainerLimit": false,
        "interfaces": format!("{uri}/interfaces"),
        "ports": format!("{uri}/ports"),
        "tunnelZones": [],
        "uri": uri,
    })
}

fn binding_json(v: &View, port: Uuid, interface: &str) -> Value {
    let h = v.host.id;
    json!({
        "hostId": h.to_string(),
        "portId": port.to_string(),
        "interfaceName": interface,
        "host": v.uri(&format!("/hosts/{h}")),
        "port": v.uri(&format!("/ports/{port}")),
        "uri": v.uri(&format!("/hosts/{h}/ports/{port}")),
    })
}

/// Every port bound to an interface of this host.
fn bindings(v: &View) -> Vec<Value> {
    let mut out = Vec::new();
    for (b, bridge) in &v.t.bridges {
        for (p, port) in &bridge.ports {
            if let Some(i) = &port.interface {
                out.push(binding_json(v, port_id(v.t, &PortRef::new(b, p)), i));
            }
        }
    }
    for (r, router) in &v.t.routers {
        for (p, port) in &router.ports {
            if let Some(i) = &port.interface {
                out.push(binding_json(v, port_id(v.t, &PortRef::new(r, p)), i));
            }
        }
    }
    out
}

fn this_host(v: &View, seg: &str) -> ApiResult<()> {
    if id(seg)? != v.host.id {
        return Err(ApiError::not_found(format!(
            "there is no host {seg}: this vnet host is {}",
            v.host.id
        )));
    }
    Ok(())
}

/// GET requests.
pub fn read(v: &View, segs: &[&str]) -> ApiResult<Reply> {
    let list = |media, items: Vec<Value>| Ok(Reply::ok(media, Value::Array(items)));
    let t = v.t;
    match segs {
        [] => Ok(Reply::ok("Application-v5", application(v.base))),
        ["system_state"] => Ok(Reply::ok("SystemState-v2", system_state(v.base))),
        ["bridges"] => list(
            "collection.Bridge-v4",
            t.bridges
                .iter()
                .map(|(n, b)| devices::bridge_json(v, n, b))
                .collect(),
        ),
        ["bridges", b] => {
            let name = v.idx.bridge(id(b)?)?;
            Ok(Reply::ok(
                "Bridge-v4",
                devices::bridge_json(v, &name, &t.bridges[&name]),
            ))
        }
        ["bridges", b, "ports"] => {
            let name = v.idx.bridge(id(b)?)?;
            list("collection.Port-v3", devices::ports(v, Some(&name)))
        }
        ["bridges", b, "peer_ports"] => {
            let name = v.idx.bridge(id(b)?)?;
            list("collection.Port-v3", devices::peer_ports(v, &name))
        }
        ["bridges", b, "dhcp"] => {
            let name = v.idx.bridge(id(b)?)?;
            list(
                "collection.DhcpSubnet-v2",
                t.bridges[&name]
                    .dhcp
                    .iter()
                    .map(|s| dhcp::subnet_json(v, &name, s))
                    .collect(),
            )
        }
        ["bridges", b, "dhcp", s] => {
            let (name, s) = dhcp::find(t, &v.idx, id(b)?, &dhcp::parse_subnet(s)?)?;
            Ok(Reply::ok("DhcpSubnet-v2", dhcp::subnet_json(v, &name, s)))
        }
        ["bridges", b, "dhcp", s, "hosts"] => {
            let (name, s) = dhcp::find(t, &v.idx, id(b)?, &dhcp::parse_subnet(s)?)?;
            list(
                "collection.DhcpHost-v2",
                s.hosts
                    .iter()
                    .map(|h| dhcp::host_json(v, &name, s, h))
                    .collect(),
            )
        }
        ["bridges", b, "dhcp", s, "hosts", mac] => {
            let (name, s) = dhcp::find(t, &v.idx, id(b)?, &dhcp::parse_subnet(s)?)?;
            let mac = dhcp::parse_mac(mac)?;
            let h = s.hosts.iter().find(|h| h.mac == mac).ok_or_else(|| {
                ApiError::not_found(format!("subnet {} has no host {mac}", s.subnet))
            })?;
            Ok(Reply::ok("DhcpHost-v2", dhcp::host_json(v, &name, s, h)))
        }
        ["bridges", _, "dhcpV6"] | ["bridges", _, "mac_table"] | ["bridges", _, "arp_table"] => {
            list("collection.DhcpSubnet6-v1", Vec::new())
        }
        ["routers"] => list(
            "collection.Router-v3",
            t.routers
                .iter()
                .map(|(n, r)| devices::router_json(v, n, r))
                .collect(),
        ),
        ["routers", r] => {
            let name = v.idx.router(id(r)?)?;
            Ok(Reply::ok(
                "Router-v3",
                devices::router_json(v, &name, &t.routers[&name]),
            ))
        }
        ["routers", r, "ports"] => {
            let name = v.idx.router(id(r)?)?;
            list("collection.Port-v3", devices::ports(v, Some(&name)))
        }
        ["routers", r, "peer_ports"] => {
            let name = v.idx.router(id(r)?)?;
            list("collection.Port-v3", devices::peer_ports(v, &name))
        }
        ["routers", r, "routes"] => {
            let name = v.idx.router(id(r)?)?;
            list("collection.Route-v1", devices::routes(v, &name))
        }
        ["routers", r, "bgp_networks"] | ["routers", r, "bgp_peers"] => {
            v.idx.router(id(r)?)?;
            list("collection.BgpNetwork-v1", Vec::new())
        }
        ["routes", r] => match v.idx.get(id(r)?) {
            Some(crate::index::Target::Route(router, i)) => {
                let route = &t.routers[router].routes[*i];
                Ok(Reply::ok(
                    "Route-v1",
                    devices::route_json(v, router, id(r)?, route),
                ))
            }
            _ => Err(ApiError::not_found(format!("there is no route {r}"))),
        },
        ["ports"] => list("collection.Port-v3", devices::ports(v, None)),
        ["ports", p] => Ok(Reply::ok("Port-v3", devices::port_by_id(v, id(p)?)?)),
        ["ports", p, "port_groups"] => {
            list("collection.PortGroupPort-v1", groups::groups_of(v, id(p)?)?)
        }
        ["chains"] => list(
            "collection.Chain-v1",
            t.chains.keys().map(|n| chains::chain_json(v, n)).collect(),
        ),
        ["chains", c] => {
            let name = v.idx.chain(id(c)?)?;
            Ok(Reply::ok("Chain-v1", chains::chain_json(v, &name)))
        }
        ["chains", c, "rules"] => {
            let name = v.idx.chain(id(c)?)?;
            list("collection.Rule-v2", chains::rules(v, &name))
        }
        ["rules", r] => Ok(Reply::ok("Rule-v2", chains::rule_by_id(v, id(r)?)?)),
        ["port_groups"] => list(
            "collection.PortGroup-v1",
            t.port_groups
                .iter()
                .map(|(n, g)| groups::port_group_json(v, n, g))
                .collect(),
        ),
        ["port_groups", g] => {
            let name = v.idx.port_group(id(g)?)?;
            Ok(Reply::ok(
                "PortGroup-v1",
                groups::port_group_json(v, &name, &t.port_groups[&name]),
            ))
        }
        ["port_groups", g, "ports"] => {
            let name = v.idx.port_group(id(g)?)?;
            list("collection.PortGroupPort-v1", groups::members(v, &name))
        }
        ["port_groups", g, "ports", p] => {
            let name = v.idx.port_group(id(g)?)?;
            let (r, _) = v.idx.port(id(p)?)?;
            if !t.port_groups[&name].ports.contains(&r) {
                return Err(ApiError::not_found(format!(
                    "port {p} is not in port group {name}"
                )));
            }
            Ok(Reply::ok(
                "PortGroupPort-v1",
                groups::member_json(v, &name, id(p)?),
            ))
        }
        ["ip_addr_groups"] => list(
            "collection.IpAddrGroup-v1",
            t.ip_groups
                .keys()
                .map(|n| groups::ip_group_json(v, n))
                .collect(),
        ),
        ["ip_addr_groups", g] => {
            let name = v.idx.ip_group(id(g)?)?;
            Ok(Reply::ok("IpAddrGroup-v1", groups::ip_group_json(v, &name)))
        }
        ["ip_addr_groups", g, "ip_addrs"] | ["ip_addr_groups", g, "versions", "4", "ip_addrs"] => {
            let name = v.idx.ip_group(id(g)?)?;
            list("collection.IpAddrGroupAddr-v1", groups::addrs(v, &name))
        }
        ["ip_addr_groups", g, "ip_addrs", a]
        | ["ip_addr_groups", g, "versions", "4", "ip_addrs", a] => {
            let name = v.idx.ip_group(id(g)?)?;
            let addr = a
                .parse()
                .ok()
                .filter(|x| t.ip_groups[&name].contains(x))
                .ok_or_else(|| {
                    ApiError::not_found(format!("`{}` is not in group {name}", a.escape_debug()))
                })?;
            Ok(Reply::ok(
                "IpAddrGroupAddr-v1",
                groups::addr_json(v, &name, addr),
            ))
        }
        ["hosts"] => list("collection.Host-v3", vec![host_json(v)]),
        ["hosts", h] => {
            this_host(v, h)?;
            Ok(Reply::ok("Host-v3", host_json(v)))
        }
        ["hosts", h, "interfaces"] => {
            this_host(v, h)?;
            list("collection.Interface-v1", host::interfaces(v.host, v.base))
        }
        ["hosts", h, "ports"] => {
            this_host(v, h)?;
            list("collection.HostInterfacePort-v1", bindings(v))
        }
        ["hosts", h, "ports", p] => {
            this_host(v, h)?;
            let pid = id(p)?;
            let (r, _) = v.idx.port(pid)?;
            let i = t
                .port(&r)
                .and_then(|p| p.interface().map(str::to_string))
                .ok_or_else(|| {
                    ApiError::not_found(format!("port {p} is not bound on this host"))
                })?;
            Ok(Reply::ok("HostInterfacePort-v1", binding_json(v, pid, &i)))
        }
        ["tunnel_zones"] => list("collection.TunnelZone-v1", Vec::new()),
        ["tunnel_zones", z, ..] => Err(ApiError::not_found(format!(
            "there is no tunnel zone {z}: vnet has no tunnel zones (see docs/MIDONET.md)"
        ))),
        ["tenants"] => list("collection.Tenant-v2", Vec::new()),
        ["tenants", t] => Err(ApiError::not_found(format!(
            "there is no tenant {t}: vnet keeps no tenants (see docs/MIDONET.md)"
        ))),
        [seg] if EMPTY.iter().any(|(s, _, _)| s == seg) => list("collection.Empty-v1", Vec::new()),
        [seg, rest, ..] if EMPTY.iter().any(|(s, _, _)| s == seg) => Err(ApiError::not_found(
            format!("there is no {seg} {rest}: vnet has none"),
        )),
        _ => Err(unknown_path(segs)),
    }
}

fn unknown_path(segs: &[&str]) -> ApiError {
    ApiError::not_found(format!(
        "/midonet-api/{} is not a MidoNet API resource",
        segs.join("/").escape_debug()
    ))
}

/// What a write does, run inside one store transaction; its outcome
/// decides the answer.
pub enum Outcome {
    /// Created: the path of the new object (from the base).
    Created(&'static str, String),
    Done,
}

/// POST, PUT and DELETE, inside a transaction on `t`.
pub fn write(
    t: &mut vnet_model::model::Topology,
    method: &Method,
    segs: &[&str],
    body: &Body,
    host: &host::HostInfo,
) -> ApiResult<Outcome> {
    use Outcome::{Created, Done};
    let post = *method == Method::POST;
    let put = *method == Method::PUT;
    let del = *method == Method::DELETE;
    match segs {
        ["bridges"] if post => {
            devices::create_bridge(t, body).map(|id| Created("Bridge-v4", format!("/bridges/{id}")))
        }
        ["bridges", b] if put => devices::update_bridge(t, id(b)?, body).map(|_| Done),
        ["bridges", b] if del => devices::delete_bridge(t, id(b)?).map(|_| Done),
        ["bridges", d, "ports"] | ["routers", d, "ports"] if post => {
            devices::create_port(t, id(d)?, body).map(|id| Created("Port-v3", format!("/ports/{id}")))
        }
        ["bridges", b, "dhcp"] if post => {
            dhcp::create_subnet(t, id(b)?, body).map(|path| Created("DhcpSubnet-v2", path))
        }
        ["bridges", b, "dhcp", s] if put => {
            dhcp::update_subnet(t, id(b)?, &dhcp::parse_subnet(s)?, body).map(|_| Done)
        }
        ["bridges", b, "dhcp", s] if del => {
            dhcp::delete_subnet(t, id(b)?, &dhcp::parse_subnet(s)?).map(|_| Done)
        }
        ["bridges", b, "dhcp", s, "hosts"] if post => {
            dhcp::create_host(t, id(b)?, &dhcp::parse_subnet(s)?, body).map(|p| Created("DhcpHost-v2", p))
        }
        ["bridges", b, "dhcp", s, "hosts", mac] if put => {
            dhcp::update_host(t, id(b)?, &dhcp::parse_subnet(s)?, dhcp::parse_mac(mac)?, body).map(|_| Done)
        }
        ["bridges", b, "dhcp", s, "hosts", mac] if del => {
            dhcp::delete_host(t, id(b)?, &dhcp::parse_subnet(s)?, dhcp::parse_mac(mac)?).map(|_| Done)
        }
        ["routers"] if post => {
            devices::create_router(t, body).map(|id| Created("Router-v3", format!("/routers/{id}")))
        }
        ["routers", r] if put => devices::update_router(t, id(r)?, body).map(|_| Done),
        ["routers", r] if del => devices::delete_router(t, id(r)?).map(|_| Done),
        ["routers", r, "routes"] if post => {
            devices::create_route(t, id(r)?, body).map(|id| Created("Route-v1", format!("/routes/{id}")))
        }
        ["routes", r] if del => devices::delete_route(t, id(r)?).map(|_| Done),
        ["ports", p] if put => devices::update_port(t, id(p)?, body).map(|_| Done),
        ["ports", p] if del => devices::delete_port(t, id(p)?).map(|_| Done),
        ["ports", p, "link"] if post => {
            let pid = id(p)?;
            devices::link(t, pid, body)?;
            Ok(if body.uuid("peerId")?.is_some() {
                Created("PortLink-v1", format!("/ports/{pid}/link"))
            } else {
                Done
            })
        }
        ["ports", p, "link"] if del => devices::unlink(t, id(p)?).map(|_| Done),
        ["chains"] if post => {
            chains::create_chain(t, body).map(|id| Created("Chain-v1", format!("/chains/{id}")))
        }
        ["chains", c] if put => chains::update_chain(t, id(c)?, body).map(|_| Done),
        ["chains", c] if del => chains::delete_chain(t, id(c)?).map(|_| Done),
        ["chains", c, "rules"] if post => {
            chains::create_rule(t, id(c)?, body).map(|id| Created("Rule-v2", format!("/rules/{id}")))
        }
        ["rules", r] if del => chains::delete_rule(t, id(r)?).map(|_| Done),
        ["port_groups"] if post => groups::create_port_group(t, body)
            .map(|id| Created("PortGroup-v1", format!("/port_groups/{id}"))),
        ["port_groups", g] if put => groups::update_port_group(t, id(g)?, body).map(|_| Done),
        ["port_groups", g] if del => groups::delete_port_group(t, id(g)?).map(|_| Done),
        ["port_groups", g, "ports"] if post => {
            let gid = id(g)?;
            groups::add_member(t, gid, body)
                .map(|p| Created("PortGroupPort-v1", format!("/port_groups/{gid}/ports/{p}")))
        }
        ["port_groups", g, "ports", p] if del => {
            groups::remove_member(t, id(g)?, id(p)?).map(|_| Done)
        }
        ["ip_addr_groups"] if post => groups::create_ip_group(t, body)
            .map(|id| Created("IpAddrGroup-v1", format!("/ip_addr_groups/{id}"))),
        ["ip_addr_groups", g] if del => groups::delete_ip_group(t, id(g)?).map(|_| Done),
        ["ip_addr_groups", g, "ip_addrs"] if post => {
            let gid = id(g)?;
            groups::add_addr(t, gid, body).map(|a| {
                Created("IpAddrGroupAddr-v1", format!("/ip_addr_groups/{gid}/versions/4/ip_addrs/{a}"))
            })
        }
        ["ip_addr_groups", g, "ip_addrs", a] | ["ip_addr_groups", g, "versions", _, "ip_addrs", a]
            if del =>
        {
            groups::remove_addr(t, id(g)?, a).map(|_| Done)
        }
        ["hosts", h, "ports"] if post => {
            if id(h)? != host.id {
                return Err(ApiError::not_found(format!(
                    "there is no host {h}: this vnet host is {}",
                    host.id
                )));
            }
            bind(t, body).map(|p| Created("HostInterfacePort-v1", format!("/hosts/{h}/ports/{p}")))
        }
        ["hosts", h, "ports", p] if del => {
            if id(h)? != host.id {
                return Err(ApiError::not_found(format!("there is no host {h}")));
            }
            let (r, _) = Index::new(t).port(id(p)?)?;
            if t.port(&r).is_none_or(|x| x.interface().is_none()) {
                return Err(ApiError::not_found(format!("port {p} is not bound on this host")));
            }
            devices::set_interface(t, &r, None);
            Ok(Done)
        }
        ["tunnel_zones"] if post => Err(ApiError::unsupported(
            "vnet has no tunnel zones: one vnetd serves the ports of its own host, so there is \
             nothing to tunnel between (see docs/MIDONET.md)",
        )),
        ["tenants"] if post => Err(ApiError::unsupported(
            "tenants are not created through the API (MidoNet's come from Keystone); vnet keeps none",
        )),
        [seg, ..] if EMPTY.iter().any(|(s, _, _)| s == seg) => Err(ApiError::unsupported(format!(
            "vnet has no {seg}: this MidoNet feature is not part of vnet"
        ))),
        _ => Err(match read_only(segs) {
            true => ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on /midonet-api/{}", segs.join("/").escape_debug()),
            ),
            false => unknown_path(segs),
        }),
    }
}

/// Whether a GET of the path would answer (so another method is 405).
fn read_only(segs: &[&str]) -> bool {
    matches!(
        segs.first().copied(),
        Some(
            "bridges"
                | "routers"
                | "ports"
                | "routes"
                | "chains"
                | "rules"
                | "port_groups"
                | "ip_addr_groups"
                | "hosts"
                | "tunnel_zones"
                | "tenants"
                | "system_state"
        )
    ) || segs.is_empty()
}

/// `POST /hosts/{h}/ports {portId, interfaceName}`: the port becomes an
/// exterior port bound to that interface of this host.
fn bind(t: &mut vnet_model::model::Topology, body: &Body) -> ApiResult<Uuid> {
    let pid = body
        .uuid("portId")?
        .ok_or_else(|| ApiError::field("portId", "is required"))?;
    let interface = body
        .text("interfaceName")?
        .ok_or_else(|| ApiError::field("interfaceName", "is required"))?;
    let (r, _) = Index::new(t).field("portId", |i| i.port(pid))?;
    match t.port(&r) {
        Some(p) if p.peer().is_some() => {
            return Err(ApiError::conflict(format!(
                "port {pid} is linked to another port; unlink it before binding it to an interface"
            )))
        }
        Some(AnyPort::Bridge(_)) | Some(AnyPort::Router(_)) => {}
        None => return Err(ApiError::field("portId", format!("there is no port {pid}"))),
    }
    devices::set_interface(t, &r, Some(interface));
    Ok(pid)
}
