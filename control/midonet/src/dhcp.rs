//! DHCP subnets and hosts of a bridge: vnet's `dhcp:` entries. A subnet is
//! addressed by `<prefix>_<length>`, a host by its MAC with dashes. A
//! subnet created without `serverAddr` serves from its `defaultGateway`, as
//! MidoNet does.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use vnet_model::model::{DhcpHost, DhcpOption, DhcpRoute, DhcpSubnet, MacAddr, Topology};

use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Uuid};
use crate::index::Index;
use crate::input::Body;
use crate::view::View;

fn subnet_uri(v: &View, bridge: &str, s: &Ipv4Net) -> String {
    v.uri(&format!(
        "/bridges/{}/dhcp/{}_{}",
        ids::bridge(bridge),
        s.network(),
        s.prefix_len()
    ))
}

pub fn subnet_json(v: &View, bridge: &str, s: &DhcpSubnet) -> Value {
    let uri = subnet_uri(v, bridge, &s.subnet);
    let dns: Vec<String> = s.dns.iter().map(|a| a.to_string()).collect();
    let mut o = json!({
        "subnetPrefix": s.subnet.network().to_string(),
        "subnetLength": s.subnet.prefix_len(),
        "defaultGateway": s.gateway.map(|g| g.to_string()),
        "serverAddr": s.server.to_string(),
        "dnsServerAddrs": dns,
        "interfaceMTU": s.mtu.unwrap_or(0),
        "opt121Routes": s.routes.iter().map(|r| json!({
            "destinationPrefix": r.dst.network().to_string(),
            "destinationLength": r.dst.prefix_len(),
            "gatewayAddr": r.via.to_string(),
        })).collect::<Vec<_>>(),
        "enabled": s.enabled,
        "hosts": format!("{uri}/hosts"),
        "uri": uri,
    });
    if v.legacy {
        o["dnsServerAddr"] = json!(s.dns.first().map(|a| a.to_string()));
    }
    o
}

pub fn host_json(v: &View, bridge: &str, s: &DhcpSubnet, h: &DhcpHost) -> Value {
    let mac = h.mac.to_string();
    json!({
        "macAddr": mac,
        "ipAddr": h.ip.to_string(),
        "name": h.name,
        "extraDhcpOpts": h.options.iter().map(|o| json!({
            "optName": o.code.to_string(),
            "optValue": o.text.clone().or_else(|| o.hex.clone()).unwrap_or_else(|| {
                o.ips.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
            }),
        })).collect::<Vec<_>>(),
        "uri": format!("{}/hosts/{}", subnet_uri(v, bridge, &s.subnet), mac.replace(':', "-")),
    })
}

/// The subnet a `<prefix>_<length>` path segment names.
pub fn parse_subnet(seg: &str) -> ApiResult<Ipv4Net> {
    let bad = || {
        ApiError::not_found(format!(
            "`{}` is not a DHCP subnet of the form <prefix>_<length>",
            seg.escape_debug()
        ))
    };
    let (a, l) = seg.split_once('_').ok_or_else(bad)?;
    let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let l: u8 = l.parse().map_err(|_| bad())?;
    Ipv4Net::new(a, l).map(|n| n.trunc()).map_err(|_| bad())
}

pub fn parse_mac(seg: &str) -> ApiResult<MacAddr> {
    seg.replace('-', ":").parse().map_err(|_| {
        ApiError::not_found(format!(
            "`{}` is not a MAC address (aa-bb-cc-dd-ee-ff)",
            seg.escape_debug()
        ))
    })
}

pub fn find<'t>(
    t: &'t Topology,
    idx: &Index,
    bridge: Uuid,
    subnet: &Ipv4Net,
) -> ApiResult<(String, &'t DhcpSubnet)> {
    let name = idx.bridge(bridge)?;
    let s = t.bridges[&name]
        .dhcp
        .iter()
        .find(|s| s.subnet.trunc() == *subnet)
        .ok_or_else(|| {
            ApiError::not_found(format!("bridge {name} serves no DHCP subnet {subnet}"))
        })?;
    Ok((name, s))
}

fn subnet_mut<'t>(
    t: &'t mut Topology,
    bridge: Uuid,
    subnet: &Ipv4Net,
) -> ApiResult<&'t mut DhcpSubnet> {
    let idx = Index::new(t);
    let name = idx.bridge(bridge)?;
    t.bridges
        .get_mut(&name)
        .expect("indexed")
        .dhcp
        .iter_mut()
        .find(|s| s.subnet.trunc() == *subnet)
        .ok_or_else(|| ApiError::not_found(format!("bridge {name} serves no DHCP subnet {subnet}")))
}

/// The fields of a subnet a request sets, onto `s`.
fn fill(s: &mut DhcpSubnet, body: &Body) -> ApiResult<()> {
    if let Some(g) = body.ip("defaultGateway")? {
        s.gateway = (!g.is_unspecified()).then_some(g);
    }
    if let Some(a) = body.ip("serverAddr")? {
        s.server = a;
    }
    if body.has("dnsServerAddrs") {
        s.dns = body
            .array("dnsServerAddrs")?
            .iter()
            .map(|v| {
                v.as_str().and_then(|a| a.parse().ok()).ok_or_else(|| {
                    ApiError::field("dnsServerAddrs", format!("`{v}` is not an IPv4 address"))
                })
            })
            .collect::<ApiResult<_>>()?;
    } else if let Some(a) = body.ip("dnsServerAddr")? {
        s.dns = vec![a];
    }
    if let Some(m) = body.u32_max("interfaceMTU", 65535)? {
        s.mtu = (m != 0).then_some(m as u16);
    }
    if body.has("opt121Routes") {
        s.routes = body
            .array("opt121Routes")?
            .iter()
            .map(|r| {
                let Value::Object(m) = r else {
                    return Err(ApiError::field(
                        "opt121Routes",
                        "each route must be an object",
                    ));
                };
                let r = Body(m.clone());
                let dst = r.ip("destinationPrefix")?.ok_or_else(|| {
                    ApiError::field("opt121Routes.destinationPrefix", "is required")
                })?;
                let len = r.u32_max("destinationLength", 32)?.unwrap_or(32) as u8;
                let via = r
                    .ip("gatewayAddr")?
                    .ok_or_else(|| ApiError::field("opt121Routes.gatewayAddr", "is required"))?;
                Ok(DhcpRoute {
                    dst: Ipv4Net::new(dst, len)
                        .map_err(|e| {
                            ApiError::field("opt121Routes.destinationLength", e.to_string())
                        })?
                        .trunc(),
                    via,
                })
            })
            .collect::<ApiResult<_>>()?;
    }
    if let Some(e) = body.bool("enabled")? {
        s.enabled = e;
    }
    Ok(())
}

pub fn create_subnet(t: &mut Topology, bridge: Uuid, body: &Body) -> ApiResult<String> {
    let idx = Index::new(t);
    let name = idx.bridge(bridge)?;
    let prefix = body
        .ip("subnetPrefix")?
        .ok_or_else(|| ApiError::field("subnetPrefix", "is required"))?;
    let len = body
        .u32_max("subnetLength", 32)?
        .ok_or_else(|| ApiError::field("subnetLength", "is required"))? as u8;
    let subnet = Ipv4Net::new(prefix, len)
        .map_err(|e| ApiError::field("subnetLength", e.to_string()))?
        .trunc();
    let server = match (body.ip("serverAddr")?, body.ip("defaultGateway")?) {
        (Some(s), _) => s,
        (None, Some(g)) if !g.is_unspecified() => g,
        _ => {
            return Err(ApiError::field(
                "serverAddr",
                "is required when there is no defaultGateway (the DHCP server's address)",
            ))
        }
    };
    let b = t.bridges.get_mut(&name).expect("indexed");
    if b.dhcp.iter().any(|s| s.subnet.trunc() == subnet) {
        return Err(ApiError::conflict(format!(
            "bridge {name} already serves DHCP subnet {subnet}"
        )));
    }
    let mut s = DhcpSubnet {
        subnet,
        server,
        gateway: None,
        dns: Vec::new(),
        domain: None,
        mtu: None,
        lease_seconds: None,
        routes: Vec::new(),
        hosts: Vec::new(),
        pool: None,
        enabled: true,
    };
    fill(&mut s, body)?;
    b.dhcp.push(s);
    Ok(format!(
        "/bridges/{bridge}/dhcp/{}_{}",
        subnet.network(),
        subnet.prefix_len()
    ))
}

pub fn update_subnet(
    t: &mut Topology,
    bridge: Uuid,
    subnet: &Ipv4Net,
    body: &Body,
) -> ApiResult<()> {
    fill(subnet_mut(t, bridge, subnet)?, body)
}

pub fn delete_subnet(t: &mut Topology, bridge: Uuid, subnet: &Ipv4Net) -> ApiResult<()> {
    let name = Index::new(t).bridge(bridge)?;
    let b = t.bridges.get_mut(&name).expect("indexed");
    let before = b.dhcp.len();
    b.dhcp.retain(|s| s.subnet.trunc() != *subnet);
    if b.dhcp.len() == before {
        return Err(ApiError::not_found(format!(
            "bridge {name} serves no DHCP subnet {subnet}"
        )));
    }
    Ok(())
}

fn options(body: &Body) -> ApiResult<Vec<DhcpOption>> {
    body.array("extraDhcpOpts")?
        .iter()
        .map(|o| {
            let Value::Object(m) = o else {
                return Err(ApiError::field(
                    "extraDhcpOpts",
                    "each option must be an object",
                ));
            };
            let o = Body(m.clone());
            let name = o.text("optName")?.unwrap_or_default();
            let code: u8 = name.parse().map_err(|_| {
                ApiError::field(
                    "extraDhcpOpts.optName",
                    format!(
                        "`{}`: vnet takes options by number (1-254)",
                        name.escape_debug()
                    ),
                )
            })?;
            Ok(DhcpOption {
                code,
                text: Some(o.str("optValue")?.unwrap_or_default()),
                hex: None,
                ips: Vec::new(),
            })
        })
        .collect()
}

fn host_from(body: &Body, old: Option<&DhcpHost>) -> ApiResult<DhcpHost> {
    let mac = match (body.text("macAddr")?, old) {
        (Some(m), _) => m
            .parse()
            .map_err(|e: vnet_model::model::ValueError| ApiError::field("macAddr", e.0))?,
        (None, Some(o)) => o.mac,
        (None, None) => return Err(ApiError::field("macAddr", "is required")),
    };
    let ip = match (body.ip("ipAddr")?, old) {
        (Some(a), _) => a,
        (None, Some(o)) => o.ip,
        (None, None) => return Err(ApiError::field("ipAddr", "is required")),
    };
    let name = match body.text("name")? {
        Some(n) => Some(n),
        None => old.and_then(|o| o.name.clone()),
    };
    let options = if body.has("extraDhcpOpts") || old.is_none() {
        options(body)?
    } else {
        old.map(|o| o.options.clone()).unwrap_or_default()
    };
    Ok(DhcpHost {
        mac,
        ip,
        name,
        options,
    })
}

pub fn create_host(
    t: &mut Topology,
    bridge: Uuid,
    subnet: &Ipv4Net,
    body: &Body,
) -> ApiResult<String> {
    let s = subnet_mut(t, bridge, subnet)?;
    let h = host_from(body, None)?;
    if s.hosts.iter().any(|x| x.mac == h.mac) {
        return Err(ApiError::conflict(format!(
            "subnet {subnet} already has a host with MAC {}",
            h.mac
        )));
    }
    let mac = h.mac.to_string().replace(':', "-");
    s.hosts.push(h);
    Ok(format!(
        "/bridges/{bridge}/dhcp/{}_{}/hosts/{mac}",
        subnet.network(),
        subnet.prefix_len()
    ))
}

pub fn update_host(
    t: &mut Topology,
    bridge: Uuid,
    subnet: &Ipv4Net,
    mac: MacAddr,
    body: &Body,
) -> ApiResult<()> {
    let s = subnet_mut(t, bridge, subnet)?;
    let i = s
        .hosts
        .iter()
        .position(|h| h.mac == mac)
        .ok_or_else(|| ApiError::not_found(format!("subnet {subnet} has no host {mac}")))?;
    let h = host_from(body, Some(&s.hosts[i]))?;
    if h.mac != mac {
        return Err(ApiError::field(
            "macAddr",
            "a host's MAC is its id: delete it and add another",
        ));
    }
    s.hosts[i] = h;
    Ok(())
}

pub fn delete_host(
    t: &mut Topology,
    bridge: Uuid,
    subnet: &Ipv4Net,
    mac: MacAddr,
) -> ApiResult<()> {
    let s = subnet_mut(t, bridge, subnet)?;
    let before = s.hosts.len();
    s.hosts.retain(|h| h.mac != mac);
    if s.hosts.len() == before {
        return Err(ApiError::not_found(format!(
            "subnet {subnet} has no host {mac}"
        )));
    }
    Ok(())
}
