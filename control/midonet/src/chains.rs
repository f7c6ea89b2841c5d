//! Chains and rules.
//!
//! A MidoNet chain is the vnet chain of the same name; its rules are vnet
//! rules in order (`position` is the 1-based index). MidoNet rule types map
//! to vnet actions one to one (`accept drop reject continue return jump
//! dnat snat rev_dnat rev_snat`, NAT rules with `flowAction` as `then`);
//! `redirect`, `l2_transform` and `trace` have no vnet equivalent and are
//! refused. Every condition field of MidoNet's `Condition` maps to a field
//! of vnet's `match` (`inv*` flags to `not`, `condInvert` to `invert`,
//! `matchForwardFlow`/`matchReturnFlow` to `conntrack`; for ICMP, MidoNet's
//! `tpSrc`/`tpDst` carry the type and code, as in MidoNet), except VLAN
//! matches (`vlan`, `noVlan`) and `outPortGroup`, which vnet lacks: refused.
//! `properties` (CloudStack's labels) are not stored and come back empty.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use vnet_model::model::{
    Action, Condition, ConditionField as F, ConnState, FlowAction, FragmentPolicy, Ipv4Range,
    MacAddr, MacMatch, NatTarget, PortRange, Protocol, RejectWith, Rule, Topology,
};

use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Uuid};
use crate::index::{port_id, rule_ids, Index, Target};
use crate::input::{number, Body};
use crate::view::View;

// ---------------------------------------------------------------------------
// Chains

pub fn chain_json(v: &View, name: &str) -> Value {
    let id = ids::chain(name);
    let uri = v.uri(&format!("/chains/{id}"));
    json!({
        "id": id.to_string(),
        "tenantId": "",
        "name": name,
        "rules": format!("{uri}/rules"),
        "uri": uri,
    })
}

pub fn create_chain(t: &mut Topology, body: &Body) -> ApiResult<Uuid> {
    let name = crate::devices::new_name(body, "chain")?;
    if t.chains.contains_key(&name) {
        return Err(ApiError::conflict(format!(
            "a chain named {name} already exists"
        )));
    }
    t.chains.insert(name.clone(), Vec::new());
    Ok(ids::chain(&name))
}

pub fn update_chain(t: &mut Topology, id: Uuid, body: &Body) -> ApiResult<()> {
    let name = Index::new(t).chain(id)?;
    match body.text("name")? {
        Some(n) if n != name => Err(ApiError::unsupported(format!(
            "name: cannot rename chain {name} to {n}: vnet chains are known by name and \
             their MidoNet ids derive from it"
        ))),
        _ => Ok(()),
    }
}

pub fn delete_chain(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    let name = Index::new(t).chain(id)?;
    t.chains.remove(&name);
    Ok(())
}

// ---------------------------------------------------------------------------
// Rules: vnet → MidoNet

fn kind_name(a: &Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        Action::Drop => "drop",
        Action::Reject { .. } => "reject",
        Action::Continue => "continue",
        Action::Return => "return",
        Action::Jump { .. } => "jump",
        Action::Dnat { .. } => "dnat",
        Action::Snat { .. } => "snat",
        Action::RevDnat { .. } => "rev_dnat",
        Action::RevSnat { .. } => "rev_snat",
    }
}

fn flow_name(f: FlowAction) -> &'static str {
    match f {
        FlowAction::Accept => "accept",
        FlowAction::Continue => "continue",
        FlowAction::Return => "return",
    }
}

/// A MAC mask in MidoNet's notation (`ffff.ffff.0000`).
fn dotted(m: MacAddr) -> String {
    let b = m.0;
    format!(
        "{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

fn range_json(r: Option<PortRange>) -> Value {
    r.map_or(Value::Null, |r| json!({"start": r.start, "end": r.end}))
}

pub fn rule_json(v: &View, chain: &str, position: usize, id: Uuid, rule: &Rule) -> Value {
    let c = &rule.condition;
    let inv = |f: F| c.is_inverted(f);
    let ports = |list: &[vnet_model::model::PortRef]| -> Vec<String> {
        list.iter().map(|r| port_id(v.t, r).to_string()).collect()
    };
    let icmp = c.protocol == Some(Protocol::ICMP);
    // ICMP type and code travel in tpSrc/tpDst, as MidoNet keeps them.
    let (tp_src, tp_dst) = if icmp {
        (
            c.icmp_type.map(|t| PortRange::single(t.into())),
            c.icmp_code.map(|t| PortRange::single(t.into())),
        )
    } else {
        (c.src_ports, c.dst_ports)
    };
    let fragments = c
        .fragments
        .unwrap_or(if tp_src.is_some() || tp_dst.is_some() {
            FragmentPolicy::Header
        } else {
            FragmentPolicy::Any
        });
    let mut o = json!({
        "id": id.to_string(),
        "chainId": ids::chain(chain).to_string(),
        "position": position,
        "type": kind_name(&rule.action),
        "flowAction": null,
        "jumpChainId": null,
        "jumpChainName": null,
        "natTargets": null,
        "properties": {},
        "condInvert": c.invert,
        "matchForwardFlow": c.conntrack == Some(ConnState::Forward),
        "matchReturnFlow": c.conntrack == Some(ConnState::Return),
        "inPorts": ports(&c.in_ports),
        "invInPorts": inv(F::InPorts),
        "outPorts": ports(&c.out_ports),
        "invOutPorts": inv(F::OutPorts),
        "portGroup": c.port_group.as_ref().map(|g| ids::port_group(g).to_string()),
        "invPortGroup": inv(F::PortGroup),
        "inPortGroup": null,
        "invInPortGroup": false,
        "outPortGroup": null,
        "invOutPortGroup": false,
        "ipAddrGroupSrc": c.src_group.as_ref().map(|g| ids::ip_group(g).to_string()),
        "invIpAddrGroupSrc": inv(F::SrcGroup),
        "ipAddrGroupDst": c.dst_group.as_ref().map(|g| ids::ip_group(g).to_string()),
        "invIpAddrGroupDst": inv(F::DstGroup),
        "dlType": c.ethertype,
        "invDlType": inv(F::Ethertype),
        "dlSrc": c.eth_src.map(|m| m.addr.to_string()),
        "dlSrcMask": c.eth_src.map(|m| dotted(m.mask)),
        "invDlSrc": inv(F::EthSrc),
        "dlDst": c.eth_dst.map(|m| m.addr.to_string()),
        "dlDstMask": c.eth_dst.map(|m| dotted(m.mask)),
        "invDlDst": inv(F::EthDst),
        "nwTos": c.tos,
        "invNwTos": inv(F::Tos),
        "nwProto": c.protocol.map(|p| p.0),
        "invNwProto": inv(F::Protocol),
        "nwSrcAddress": c.src.map(|n| n.network().to_string()),
        "nwSrcLength": c.src.map(|n| n.prefix_len()),
        "invNwSrc": inv(F::Src),
        "nwDstAddress": c.dst.map(|n| n.network().to_string()),
        "nwDstLength": c.dst.map(|n| n.prefix_len()),
        "invNwDst": inv(F::Dst),
        "invTpSrc": inv(F::SrcPorts) || (icmp && inv(F::IcmpType)),
        "invTpDst": inv(F::DstPorts) || (icmp && inv(F::IcmpCode)),
        "fragmentPolicy": match fragments {
            FragmentPolicy::Any => "any",
            FragmentPolicy::Header => "header",
            FragmentPolicy::Nonheader => "nonheader",
            FragmentPolicy::Unfragmented => "unfragmented",
        },
        "noVlan": false,
        "vlan": null,
        "uri": v.uri(&format!("/rules/{id}")),
    });
    if v.legacy {
        // The 12.12 client's spelling: flat port ranges, 0 = any.
        let start = |r: Option<PortRange>| r.map_or(0, |r| r.start);
        let end = |r: Option<PortRange>| r.map_or(0, |r| r.end);
        o["tpSrcStart"] = json!(start(tp_src));
        o["tpSrcEnd"] = json!(end(tp_src));
        o["tpDstStart"] = json!(start(tp_dst));
        o["tpDstEnd"] = json!(end(tp_dst));
        o["dlType"] = json!(c.ethertype.unwrap_or(0));
    } else {
        o["tpSrc"] = range_json(tp_src);
        o["tpDst"] = range_json(tp_dst);
    }
    match &rule.action {
        Action::Jump { chain: target } => {
            o["jumpChainId"] = json!(ids::chain(target).to_string());
            o["jumpChainName"] = json!(target);
        }
        Action::Dnat { to, then } | Action::Snat { to, then } => {
            let ports = to.ports.unwrap_or(PortRange { start: 0, end: 0 });
            o["flowAction"] = json!(flow_name(*then));
            o["natTargets"] = json!([{
                "addressFrom": to.ip.start.to_string(),
                "addressTo": to.ip.end.to_string(),
                "portFrom": ports.start,
                "portTo": ports.end,
            }]);
        }
        Action::RevDnat { then } | Action::RevSnat { then } => {
            o["flowAction"] = json!(flow_name(*then));
        }
        _ => {}
    }
    o
}

pub fn rules(v: &View, chain: &str) -> Vec<Value> {
    let Some(list) = v.t.chains.get(chain) else {
        return Vec::new();
    };
    rule_ids(v.t, chain)
        .into_iter()
        .zip(list)
        .enumerate()
        .map(|(i, (id, rule))| rule_json(v, chain, i + 1, id, rule))
        .collect()
}

pub fn rule_by_id(v: &View, id: Uuid) -> ApiResult<Value> {
    match v.idx.get(id) {
        Some(Target::Rule(chain, i)) => {
            let rule = &v.t.chains[chain][*i];
            Ok(rule_json(v, chain, i + 1, id, rule))
        }
        _ => Err(ApiError::not_found(format!("there is no rule {id}"))),
    }
}

// ---------------------------------------------------------------------------
// Rules: MidoNet → vnet

fn mac(key: &str, s: &str) -> ApiResult<MacAddr> {
    // MidoNet writes masks as ffff.ffff.0000; addresses with colons.
    let hex: String = s
        .chars()
        .filter(|c| *c != '.' && *c != ':' && *c != '-')
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::field(
            key,
            format!("`{}` is not a MAC address or mask", s.escape_debug()),
        ));
    }
    let mut b = [0u8; 6];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex checked");
    }
    Ok(MacAddr(b))
}

fn mac_match(body: &Body, addr: &str, mask: &str) -> ApiResult<Option<MacMatch>> {
    let Some(a) = body.text(addr)? else {
        if body.text(mask)?.is_some() {
            return Err(ApiError::field(mask, format!("needs {addr}")));
        }
        return Ok(None);
    };
    let addr_v = mac(addr, &a)?;
    let mask_v = match body.text(mask)? {
        Some(m) => mac(mask, &m)?,
        None => MacAddr::BROADCAST,
    };
    Ok(Some(MacMatch {
        addr: addr_v,
        mask: mask_v,
    }))
}

fn prefix(body: &Body, addr: &str, len: &str) -> ApiResult<Option<Ipv4Net>> {
    match (body.ip(addr)?, body.u32_max(len, 32)?) {
        (None, _) => Ok(None),
        (Some(a), l) => {
            let l = l.unwrap_or(32) as u8;
            let n = Ipv4Net::new(a, l).map_err(|e| ApiError::field(len, e.to_string()))?;
            // MidoNet matches a length of 0 as anything: no condition.
            Ok((l != 0).then(|| n.trunc()))
        }
    }
}

/// A port range from `{start, end}` (5.x) or `tpXStart`/`tpXEnd` (12.12,
/// 0 = any).
fn tp_range(
    body: &Body,
    key: &str,
    legacy_start: &str,
    legacy_end: &str,
) -> ApiResult<Option<PortRange>> {
    let read = |v: Option<&Value>, k: &str| -> ApiResult<Option<u16>> {
        match v.filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => match number(v) {
                Some(n) if n <= 65535 => Ok(Some(n as u16)),
                _ => Err(ApiError::field(
                    k,
                    format!("`{v}` is not a port number 0-65535"),
                )),
            },
        }
    };
    let (start, end) = if let Some(o) = body.object(key)? {
        (read(o.0.get("start"), key)?, read(o.0.get("end"), key)?)
    } else {
        let s = read(body.0.get(legacy_start), legacy_start)?.filter(|p| *p != 0);
        let e = read(body.0.get(legacy_end), legacy_end)?.filter(|p| *p != 0);
        (s, e)
    };
    match (start, end) {
        (None, None) => Ok(None),
        (Some(s), None) | (None, Some(s)) => Ok(Some(PortRange::single(s))),
        (Some(s), Some(e)) if s <= e => Ok(Some(PortRange { start: s, end: e })),
        (Some(s), Some(e)) => Err(ApiError::field(key, format!("start {s} is after end {e}"))),
    }
}

fn ports(idx: &Index, body: &Body, key: &str) -> ApiResult<Vec<vnet_model::model::PortRef>> {
    body.uuids(key)?
        .into_iter()
        .map(|id| idx.field(key, |i| i.port(id)).map(|(r, _)| r))
        .collect()
}

fn condition(idx: &Index, body: &Body) -> ApiResult<Condition> {
    let mut c = Condition::default();
    let mut not = Vec::new();
    let inverted = |key: &str, field: F, not: &mut Vec<F>| -> ApiResult<()> {
        if body.flag(key)? {
            not.push(field);
        }
        Ok(())
    };
    if body.flag("noVlan")? || body.has("vlan") {
        return Err(ApiError::unsupported(
            "vlan, noVlan: vnet conditions have no VLAN match (a bridge port's vlan selects its traffic)",
        ));
    }
    if body.has("outPortGroup") {
        return Err(ApiError::unsupported(
            "outPortGroup: vnet conditions match the ingress port's group only (portGroup)",
        ));
    }
    c.invert = body.flag("condInvert")?;
    c.conntrack = match (
        body.flag("matchForwardFlow")?,
        body.flag("matchReturnFlow")?,
    ) {
        (true, true) => {
            return Err(ApiError::field(
                "matchReturnFlow",
                "a packet is never both forward and return flow: set at most one",
            ))
        }
        (true, false) => Some(ConnState::Forward),
        (false, true) => Some(ConnState::Return),
        (false, false) => None,
    };
    c.in_ports = ports(idx, body, "inPorts")?;
    inverted("invInPorts", F::InPorts, &mut not)?;
    c.out_ports = ports(idx, body, "outPorts")?;
    inverted("invOutPorts", F::OutPorts, &mut not)?;
    let group = match (body.uuid("portGroup")?, body.uuid("inPortGroup")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::field(
                "inPortGroup",
                "differs from portGroup: set one",
            ))
        }
        (Some(g), _) | (None, Some(g)) => Some(g),
        (None, None) => None,
    };
    if let Some(g) = group {
        c.port_group = Some(idx.field("portGroup", |i| i.port_group(g))?);
        if body.flag("invPortGroup")? || body.flag("invInPortGroup")? {
            not.push(F::PortGroup);
        }
    }
    if let Some(g) = body.uuid("ipAddrGroupSrc")? {
        c.src_group = Some(idx.field("ipAddrGroupSrc", |i| i.ip_group(g))?);
        inverted("invIpAddrGroupSrc", F::SrcGroup, &mut not)?;
    }
    if let Some(g) = body.uuid("ipAddrGroupDst")? {
        c.dst_group = Some(idx.field("ipAddrGroupDst", |i| i.ip_group(g))?);
        inverted("invIpAddrGroupDst", F::DstGroup, &mut not)?;
    }
    // 12.12 sends dlType 0 for "any".
    c.ethertype = body
        .u32_max("dlType", 0xffff)?
        .filter(|t| *t != 0)
        .map(|t| t as u16);
    if c.ethertype.is_some() {
        inverted("invDlType", F::Ethertype, &mut not)?;
    }
    c.eth_src = mac_match(body, "dlSrc", "dlSrcMask")?;
    if c.eth_src.is_some() {
        inverted("invDlSrc", F::EthSrc, &mut not)?;
    }
    c.eth_dst = mac_match(body, "dlDst", "dlDstMask")?;
    if c.eth_dst.is_some() {
        inverted("invDlDst", F::EthDst, &mut not)?;
    }
    c.tos = body.u32_max("nwTos", 255)?.map(|t| t as u8);
    if c.tos.is_some() {
        inverted("invNwTos", F::Tos, &mut not)?;
    }
    // 12.12 sends nwProto 0 for "any".
    c.protocol = body
        .u32_max("nwProto", 255)?
        .filter(|p| *p != 0)
        .map(|p| Protocol(p as u8));
    if c.protocol.is_some() {
        inverted("invNwProto", F::Protocol, &mut not)?;
    }
    c.src = prefix(body, "nwSrcAddress", "nwSrcLength")?;
    if c.src.is_some() {
        inverted("invNwSrc", F::Src, &mut not)?;
    }
    c.dst = prefix(body, "nwDstAddress", "nwDstLength")?;
    if c.dst.is_some() {
        inverted("invNwDst", F::Dst, &mut not)?;
    }
    let tp_src = tp_range(body, "tpSrc", "tpSrcStart", "tpSrcEnd")?;
    let tp_dst = tp_range(body, "tpDst", "tpDstStart", "tpDstEnd")?;
    if c.protocol == Some(Protocol::ICMP) {
        let single = |r: Option<PortRange>, key: &str, what: &str| -> ApiResult<Option<u8>> {
            match r {
                None => Ok(None),
                Some(r) if r.start == r.end && r.start <= 255 => Ok(Some(r.start as u8)),
                Some(_) => Err(ApiError::field(
                    key,
                    format!("for ICMP, {key} is the ICMP {what}: one value 0-255"),
                )),
            }
        };
        c.icmp_type = single(tp_src, "tpSrc", "type")?;
        c.icmp_code = single(tp_dst, "tpDst", "code")?;
        if c.icmp_type.is_some() {
            inverted("invTpSrc", F::IcmpType, &mut not)?;
        }
        if c.icmp_code.is_some() {
            inverted("invTpDst", F::IcmpCode, &mut not)?;
        }
    } else {
        c.src_ports = tp_src;
        c.dst_ports = tp_dst;
        if tp_src.is_some() {
            inverted("invTpSrc", F::SrcPorts, &mut not)?;
        }
        if tp_dst.is_some() {
            inverted("invTpDst", F::DstPorts, &mut not)?;
        }
    }
    c.fragments = match body.text("fragmentPolicy")? {
        None => None,
        Some(p) => Some(match p.to_ascii_lowercase().as_str() {
            "any" => FragmentPolicy::Any,
            "header" => FragmentPolicy::Header,
            "nonheader" => FragmentPolicy::Nonheader,
            "unfragmented" => FragmentPolicy::Unfragmented,
            _ => {
                return Err(ApiError::field(
                    "fragmentPolicy",
                    format!(
                        "`{}` is not any, header, nonheader or unfragmented",
                        p.escape_debug()
                    ),
                ))
            }
        }),
    };
    // The policy MidoNet answers by default is kept implicit.
    let l4 = tp_src.is_some() || tp_dst.is_some();
    if (c.fragments == Some(FragmentPolicy::Any) && !l4)
        || (c.fragments == Some(FragmentPolicy::Header) && l4)
    {
        c.fragments = None;
    }
    not.sort();
    not.dedup();
    c.not = not;
    Ok(c)
}

fn flow_action(body: &Body) -> ApiResult<FlowAction> {
    match body.text("flowAction")?.as_deref() {
        None => Ok(FlowAction::Accept),
        Some(f) => match f.to_ascii_lowercase().as_str() {
            "accept" => Ok(FlowAction::Accept),
            "continue" => Ok(FlowAction::Continue),
            "return" => Ok(FlowAction::Return),
            _ => Err(ApiError::field(
                "flowAction",
                format!("`{}` is not accept, continue or return", f.escape_debug()),
            )),
        },
    }
}

fn nat_target(body: &Body) -> ApiResult<NatTarget> {
    let targets = body.array("natTargets")?;
    let [t] = targets else {
        return Err(ApiError::field(
            "natTargets",
            format!(
                "vnet NAT rules take exactly one target (an address range and a port range), not {}",
                targets.len()
            ),
        ));
    };
    let Value::Object(m) = t else {
        return Err(ApiError::field(
            "natTargets",
            "each target must be an object",
        ));
    };
    let t = Body(m.clone());
    let from = t
        .ip("addressFrom")?
        .ok_or_else(|| ApiError::field("natTargets.addressFrom", "is required"))?;
    let to: Ipv4Addr = t.ip("addressTo")?.unwrap_or(from);
    if to < from {
        return Err(ApiError::field(
            "natTargets.addressTo",
            format!("{to} is before addressFrom {from}"),
        ));
    }
    let pf = t.u32_max("portFrom", 65535)?.unwrap_or(0) as u16;
    let pt = t.u32_max("portTo", 65535)?.map(|p| p as u16).unwrap_or(pf);
    if pt < pf {
        return Err(ApiError::field(
            "natTargets.portTo",
            format!("{pt} is below portFrom {pf}"),
        ));
    }
    Ok(NatTarget {
        ip: Ipv4Range {
            start: from,
            end: to,
        },
        ports: (pf != 0 || pt != 0).then_some(PortRange { start: pf, end: pt }),
    })
}

fn action(idx: &Index, body: &Body) -> ApiResult<Action> {
    let kind = body
        .text("type")?
        .ok_or_else(|| ApiError::field("type", "is required (accept, drop, jump, snat, ...)"))?;
    Ok(match kind.to_ascii_lowercase().as_str() {
        "accept" => Action::Accept,
        "drop" => Action::Drop,
        "reject" => Action::Reject {
            with: RejectWith::IcmpAdminProhibited,
        },
        "continue" => Action::Continue,
        "return" => Action::Return,
        "jump" => {
            let chain = match (body.uuid("jumpChainId")?, body.text("jumpChainName")?) {
                (Some(id), _) => idx.field("jumpChainId", |i| i.chain(id))?,
                (None, Some(name)) => name,
                (None, None) => {
                    return Err(ApiError::field(
                        "jumpChainId",
                        "a jump rule needs jumpChainId (or jumpChainName)",
                    ))
                }
            };
            Action::Jump { chain }
        }
        "dnat" => Action::Dnat {
            to: nat_target(body)?,
            then: flow_action(body)?,
        },
        "snat" => Action::Snat {
            to: nat_target(body)?,
            then: flow_action(body)?,
        },
        "rev_dnat" => Action::RevDnat {
            then: flow_action(body)?,
        },
        "rev_snat" => Action::RevSnat {
            then: flow_action(body)?,
        },
        other => {
            return Err(ApiError::field(
                "type",
                format!(
                "`{}`: vnet rules are accept, drop, reject, continue, return, jump, dnat, snat, \
                     rev_dnat or rev_snat (no redirect, l2_transform or trace)",
                other.escape_debug()
            ),
            ))
        }
    })
}

/// `POST /chains/{id}/rules`: the rule at `position` (1..=n+1; default:
/// last).
pub fn create_rule(t: &mut Topology, chain_id: Uuid, body: &Body) -> ApiResult<Uuid> {
    let idx = Index::new(t);
    let chain = idx.chain(chain_id)?;
    let n = t.chains[&chain].len();
    let position = match body.u64("position")? {
        None => n + 1,
        Some(p) if p >= 1 && p as usize <= n + 1 => p as usize,
        Some(p) => {
            return Err(ApiError::field(
                "position",
                format!(
                    "{p} is not between 1 and {} (the chain has {n} rules)",
                    n + 1
                ),
            ))
        }
    };
    let rule = Rule {
        action: action(&idx, body)?,
        condition: condition(&idx, body)?,
    };
    t.chains
        .get_mut(&chain)
        .expect("indexed")
        .insert(position - 1, rule);
    Ok(rule_ids(t, &chain)[position - 1])
}

pub fn delete_rule(t: &mut Topology, id: Uuid) -> ApiResult<()> {
    match Index::new(t).get(id) {
        Some(Target::Rule(chain, i)) => {
            let (chain, i) = (chain.clone(), *i);
            t.chains.get_mut(&chain).expect("indexed").remove(i);
            Ok(())
        }
        _ => Err(ApiError::not_found(format!("there is no rule {id}"))),
    }
}
