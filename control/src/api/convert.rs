//! Conversions between the protobuf messages and the model.
//!
//! Model → protobuf cannot fail (`From`). Protobuf → model is `TryFrom`,
//! one impl per message, each failing with a [`FieldError`] that names the
//! field inside the message; callers prefix the path of the message
//! ([`FieldError::within`]), so the error the client sees names object and
//! field the way the file does (`bridges.tenant.ports.vm1.vlan`).
//! The conversion checks types and forms only; relations between objects
//! are left to validation, exactly as for a file.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

use super::pb;
use crate::model::*;
use crate::objects::{Object, ObjectKind};

/// A field of a request that does not have the form the model needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error seen from the message that contains this one.
    pub fn within(mut self, prefix: impl Display) -> Self {
        self.path = if self.path.is_empty() {
            prefix.to_string()
        } else if self.path.starts_with('[') {
            format!("{prefix}{}", self.path)
        } else {
            format!("{prefix}.{}", self.path)
        };
        self
    }
}

type Result<T> = std::result::Result<T, FieldError>;

// ---------------------------------------------------------------------------
// Helpers: text values and numbers

fn text<T>(field: &str, value: &str, expected: &str) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    value.parse::<T>().map_err(|e| {
        let msg = e.to_string();
        // The std parsers' messages ("invalid IPv4 address syntax") do not
        // say what was expected; the model's own ones do.
        if msg.contains('`') {
            FieldError::new(field, msg)
        } else {
            FieldError::new(field, format!("`{value}` is not {expected}"))
        }
    })
}

fn ip(field: &str, value: &str) -> Result<Ipv4Addr> {
    text(field, value, "an IPv4 address like 10.0.0.1")
}

fn ip_opt(field: &str, value: &Option<String>) -> Result<Option<Ipv4Addr>> {
    value.as_deref().map(|v| ip(field, v)).transpose()
}

fn cidr(field: &str, value: &str) -> Result<Ipv4Net> {
    text(
        field,
        value,
        "an IPv4 address with a prefix length, like 10.0.0.0/24",
    )
}

fn cidr_opt(field: &str, value: &Option<String>) -> Result<Option<Ipv4Net>> {
    value.as_deref().map(|v| cidr(field, v)).transpose()
}

fn opt<T>(field: &str, value: &Option<String>) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    value
        .as_deref()
        .map(|v| text(field, v, "of the documented form"))
        .transpose()
}

fn num<T: TryFrom<u32>>(field: &str, value: u32, max: u64) -> Result<T> {
    T::try_from(value)
        .map_err(|_| FieldError::new(field, format!("{value} is out of range 0-{max}")))
}

fn num_opt<T: TryFrom<u32>>(field: &str, value: Option<u32>, max: u64) -> Result<Option<T>> {
    value.map(|v| num(field, v, max)).transpose()
}

fn list<P, M>(items: Vec<P>, convert: impl Fn(P) -> Result<M>) -> Result<Vec<M>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, p)| convert(p).map_err(|e| e.within(format!("[{i}]"))))
        .collect()
}

fn map<P, M>(
    items: std::collections::HashMap<String, P>,
    convert: impl Fn(P) -> Result<M>,
) -> Result<BTreeMap<String, M>> {
    // Sorted, so that the first error reported is the same every time.
    let sorted: BTreeMap<String, P> = items.into_iter().collect();
    sorted
        .into_iter()
        .map(|(name, p)| match convert(p) {
            Ok(m) => Ok((name, m)),
            Err(e) => Err(e.within(&name)),
        })
        .collect()
}

fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

fn s<T: Display>(v: T) -> String {
    v.to_string()
}

fn s_opt<T: Display>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

// ---------------------------------------------------------------------------
// Topology

impl TryFrom<pb::Topology> for Topology {
    type Error = FieldError;

    fn try_from(p: pb::Topology) -> Result<Topology> {
        Ok(Topology {
            version: p.version,
            bridges: map(p.bridges, Bridge::try_from).map_err(|e| e.within("bridges"))?,
            routers: map(p.routers, Router::try_from).map_err(|e| e.within("routers"))?,
            chains: map(p.chains, chain).map_err(|e| e.within("chains"))?,
            ip_groups: map(p.ip_groups, ip_group).map_err(|e| e.within("ip_groups"))?,
            port_groups: map(p.port_groups, PortGroup::try_from)
                .map_err(|e| e.within("port_groups"))?,
            nat: list(p.nat, NatIntent::try_from).map_err(|e| e.within("nat"))?,
            firewall: list(p.firewall, FirewallIntent::try_from)
                .map_err(|e| e.within("firewall"))?,
        })
    }
}

impl From<&Topology> for pb::Topology {
    fn from(t: &Topology) -> pb::Topology {
        pb::Topology {
            version: t.version,
            bridges: t
                .bridges
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            routers: t
                .routers
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            chains: t
                .chains
                .iter()
                .map(|(k, v)| (k.clone(), chain_pb(v)))
                .collect(),
            ip_groups: t
                .ip_groups
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        pb::IpGroup {
                            addresses: v.iter().map(s).collect(),
                        },
                    )
                })
                .collect(),
            port_groups: t
                .port_groups
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            nat: t.nat.iter().map(Into::into).collect(),
            firewall: t.firewall.iter().map(Into::into).collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Bridges and DHCP

impl TryFrom<pb::Bridge> for Bridge {
    type Error = FieldError;

    fn try_from(p: pb::Bridge) -> Result<Bridge> {
        Ok(Bridge {
            inbound_filter: p.inbound_filter,
            outbound_filter: p.outbound_filter,
            mac_table: list(p.mac_table, |m| {
                Ok(StaticMac {
                    mac: text("mac", &m.mac, "a MAC address")?,
                    port: m.port,
                })
            })
            .map_err(|e| e.within("mac_table"))?,
            arp_table: list(p.arp_table, |a| {
                Ok(StaticArp {
                    ip: ip("ip", &a.ip)?,
                    mac: text("mac", &a.mac, "a MAC address")?,
                })
            })
            .map_err(|e| e.within("arp_table"))?,
            dhcp: list(p.dhcp, DhcpSubnet::try_from).map_err(|e| e.within("dhcp"))?,
            ports: map(p.ports, BridgePort::try_from).map_err(|e| e.within("ports"))?,
        })
    }
}

impl From<&Bridge> for pb::Bridge {
    fn from(b: &Bridge) -> pb::Bridge {
        pb::Bridge {
            inbound_filter: b.inbound_filter.clone(),
            outbound_filter: b.outbound_filter.clone(),
            mac_table: b
                .mac_table
                .iter()
                .map(|m| pb::StaticMac {
                    mac: s(m.mac),
                    port: m.port.clone(),
                })
                .collect(),
            arp_table: b
                .arp_table
                .iter()
                .map(|a| pb::StaticArp {
                    ip: s(a.ip),
                    mac: s(a.mac),
                })
                .collect(),
            dhcp: b.dhcp.iter().map(Into::into).collect(),
            ports: b.ports.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
        }
    }
}

impl TryFrom<pb::BridgePort> for BridgePort {
    type Error = FieldError;

    fn try_from(p: pb::BridgePort) -> Result<BridgePort> {
        Ok(BridgePort {
            interface: p.interface,
            peer: opt("peer", &p.peer)?,
            vlan: num_opt("vlan", p.vlan, u16::MAX.into())?,
            inbound_filter: p.inbound_filter,
            outbound_filter: p.outbound_filter,
            up: p.up.unwrap_or(true),
            port_security: p.port_security,
            addresses: list(p.addresses, |a| {
                text("", &a, "an address of the documented form")
            })
            .map_err(|e| e.within("addresses"))?,
            allowed_address_pairs: list(p.allowed_address_pairs, |a| {
                text("", &a, "an address of the documented form")
            })
            .map_err(|e| e.within("allowed_address_pairs"))?,
        })
    }
}

impl From<&BridgePort> for pb::BridgePort {
    fn from(p: &BridgePort) -> pb::BridgePort {
        pb::BridgePort {
            interface: p.interface.clone(),
            peer: s_opt(&p.peer),
            vlan: p.vlan.map(u32::from),
            inbound_filter: p.inbound_filter.clone(),
            outbound_filter: p.outbound_filter.clone(),
            up: Some(p.up),
            port_security: p.port_security,
            addresses: p.addresses.iter().map(ToString::to_string).collect(),
            allowed_address_pairs: p
                .allowed_address_pairs
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

impl TryFrom<pb::DhcpSubnet> for DhcpSubnet {
    type Error = FieldError;

    fn try_from(p: pb::DhcpSubnet) -> Result<DhcpSubnet> {
        Ok(DhcpSubnet {
            subnet: cidr("subnet", &p.subnet)?,
            server: ip("server", &p.server)?,
            gateway: ip_opt("gateway", &p.gateway)?,
            dns: list(p.dns, |d| ip("", &d)).map_err(|e| e.within("dns"))?,
            domain: p.domain,
            mtu: num_opt("mtu", p.mtu, u16::MAX.into())?,
            lease_seconds: p.lease_seconds,
            routes: list(p.routes, |r| {
                Ok(DhcpRoute {
                    dst: cidr("dst", &r.dst)?,
                    via: ip("via", &r.via)?,
                })
            })
            .map_err(|e| e.within("routes"))?,
            hosts: list(p.hosts, DhcpHost::try_from).map_err(|e| e.within("hosts"))?,
            pool: opt("pool", &p.pool)?,
            enabled: p.enabled.unwrap_or(true),
        })
    }
}

impl From<&DhcpSubnet> for pb::DhcpSubnet {
    fn from(d: &DhcpSubnet) -> pb::DhcpSubnet {
        pb::DhcpSubnet {
            subnet: s(d.subnet),
            server: s(d.server),
            gateway: s_opt(&d.gateway),
            dns: d.dns.iter().map(s).collect(),
            domain: d.domain.clone(),
            mtu: d.mtu.map(u32::from),
            lease_seconds: d.lease_seconds,
            routes: d
                .routes
                .iter()
                .map(|r| pb::DhcpRoute {
                    dst: s(r.dst),
                    via: s(r.via),
                })
                .collect(),
            hosts: d.hosts.iter().map(Into::into).collect(),
            pool: s_opt(&d.pool),
            enabled: Some(d.enabled),
        }
    }
}

impl TryFrom<pb::DhcpHost> for DhcpHost {
    type Error = FieldError;

    fn try_from(p: pb::DhcpHost) -> Result<DhcpHost> {
        Ok(DhcpHost {
            mac: text("mac", &p.mac, "a MAC address")?,
            ip: ip("ip", &p.ip)?,
            name: p.name,
            options: list(p.options, |o| {
                Ok(DhcpOption {
                    code: num("code", o.code, u8::MAX.into())?,
                    text: o.text,
                    hex: o.hex,
                    ips: list(o.ips, |a| ip("", &a)).map_err(|e| e.within("ips"))?,
                })
            })
            .map_err(|e| e.within("options"))?,
        })
    }
}

impl From<&DhcpHost> for pb::DhcpHost {
    fn from(h: &DhcpHost) -> pb::DhcpHost {
        pb::DhcpHost {
            mac: s(h.mac),
            ip: s(h.ip),
            name: h.name.clone(),
            options: h
                .options
                .iter()
                .map(|o| pb::DhcpOption {
                    code: o.code.into(),
                    text: o.text.clone(),
                    hex: o.hex.clone(),
                    ips: o.ips.iter().map(s).collect(),
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Routers

impl TryFrom<pb::Router> for Router {
    type Error = FieldError;

    fn try_from(p: pb::Router) -> Result<Router> {
        Ok(Router {
            inbound_filter: p.inbound_filter,
            outbound_filter: p.outbound_filter,
            ports: map(p.ports, RouterPort::try_from).map_err(|e| e.within("ports"))?,
            routes: list(p.routes, Route::try_from).map_err(|e| e.within("routes"))?,
        })
    }
}

impl From<&Router> for pb::Router {
    fn from(r: &Router) -> pb::Router {
        pb::Router {
            inbound_filter: r.inbound_filter.clone(),
            outbound_filter: r.outbound_filter.clone(),
            ports: r.ports.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            routes: r.routes.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::RouterPort> for RouterPort {
    type Error = FieldError;

    fn try_from(p: pb::RouterPort) -> Result<RouterPort> {
        Ok(RouterPort {
            address: cidr("address", &p.address)?,
            mac: opt("mac", &p.mac)?,
            mtu: num_opt("mtu", p.mtu, u16::MAX.into())?,
            interface: p.interface,
            peer: opt("peer", &p.peer)?,
            inbound_filter: p.inbound_filter,
            outbound_filter: p.outbound_filter,
            up: p.up.unwrap_or(true),
            reverse_path: opt("reverse_path", &p.reverse_path)?,
        })
    }
}

impl From<&RouterPort> for pb::RouterPort {
    fn from(p: &RouterPort) -> pb::RouterPort {
        pb::RouterPort {
            address: s(p.address),
            mac: s_opt(&p.mac),
            mtu: p.mtu.map(u32::from),
            interface: p.interface.clone(),
            peer: s_opt(&p.peer),
            inbound_filter: p.inbound_filter.clone(),
            outbound_filter: p.outbound_filter.clone(),
            up: Some(p.up),
            reverse_path: s_opt(&p.reverse_path),
        }
    }
}

impl TryFrom<pb::Route> for Route {
    type Error = FieldError;

    fn try_from(p: pb::Route) -> Result<Route> {
        let kind = match pb::RouteType::try_from(p.r#type) {
            Ok(pb::RouteType::Normal) => RouteType::Normal,
            Ok(pb::RouteType::Blackhole) => RouteType::Blackhole,
            Ok(pb::RouteType::Reject) => RouteType::Reject,
            Err(_) => return Err(unknown_enum("type", p.r#type)),
        };
        Ok(Route {
            dst: cidr("dst", &p.dst)?,
            src: cidr_opt("src", &p.src)?,
            port: p.port,
            via: ip_opt("via", &p.via)?,
            kind,
            weight: p.weight,
        })
    }
}

impl From<&Route> for pb::Route {
    fn from(r: &Route) -> pb::Route {
        let kind = match r.kind {
            RouteType::Normal => pb::RouteType::Normal,
            RouteType::Blackhole => pb::RouteType::Blackhole,
            RouteType::Reject => pb::RouteType::Reject,
        };
        pb::Route {
            dst: s(r.dst),
            src: s_opt(&r.src),
            port: r.port.clone(),
            via: s_opt(&r.via),
            r#type: kind.into(),
            weight: r.weight,
        }
    }
}

fn unknown_enum(field: &str, value: i32) -> FieldError {
    FieldError::new(field, format!("{value} is not a known value"))
}

// ---------------------------------------------------------------------------
// Chains and rules

fn chain(p: pb::Chain) -> Result<Vec<Rule>> {
    list(p.rules, Rule::try_from)
}

fn chain_pb(rules: &[Rule]) -> pb::Chain {
    pb::Chain {
        rules: rules.iter().map(Into::into).collect(),
    }
}

impl TryFrom<pb::Rule> for Rule {
    type Error = FieldError;

    fn try_from(p: pb::Rule) -> Result<Rule> {
        use pb::RuleAction as A;
        let action = match A::try_from(p.action) {
            Ok(A::Unspecified) => return Err(FieldError::new("action", "is required")),
            Ok(A::Accept) => ActionKind::Accept,
            Ok(A::Drop) => ActionKind::Drop,
            Ok(A::Reject) => ActionKind::Reject,
            Ok(A::Continue) => ActionKind::Continue,
            Ok(A::Return) => ActionKind::Return,
            Ok(A::Jump) => ActionKind::Jump,
            Ok(A::Dnat) => ActionKind::Dnat,
            Ok(A::Snat) => ActionKind::Snat,
            Ok(A::RevDnat) => ActionKind::RevDnat,
            Ok(A::RevSnat) => ActionKind::RevSnat,
            Err(_) => return Err(unknown_enum("action", p.action)),
        };
        let reject_with = match pb::RejectWith::try_from(p.reject_with) {
            Ok(pb::RejectWith::Unspecified) => None,
            Ok(pb::RejectWith::IcmpAdminProhibited) => Some(RejectWith::IcmpAdminProhibited),
            Ok(pb::RejectWith::IcmpPortUnreachable) => Some(RejectWith::IcmpPortUnreachable),
            Ok(pb::RejectWith::TcpReset) => Some(RejectWith::TcpReset),
            Err(_) => return Err(unknown_enum("reject_with", p.reject_with)),
        };
        let then = match pb::FlowAction::try_from(p.then) {
            Ok(pb::FlowAction::Unspecified) => None,
            Ok(pb::FlowAction::Accept) => Some(FlowAction::Accept),
            Ok(pb::FlowAction::Continue) => Some(FlowAction::Continue),
            Ok(pb::FlowAction::Return) => Some(FlowAction::Return),
            Err(_) => return Err(unknown_enum("then", p.then)),
        };
        let to =
            p.to.map(|t| {
                Ok::<_, FieldError>(NatTarget {
                    ip: text("ip", &t.ip, "an address or address range")?,
                    ports: opt("ports", &t.ports)?,
                })
            })
            .transpose()
            .map_err(|e| e.within("to"))?;
        let condition = p
            .r#match
            .map(Condition::try_from)
            .transpose()
            .map_err(|e| e.within("match"))?;
        // The file's rule checks (which fields go with which action) apply
        // unchanged.
        Rule::try_from(RuleRepr {
            action,
            reject_with,
            chain: p.chain,
            to,
            then,
            condition,
        })
        .map_err(|message| FieldError::new("action", message))
    }
}

impl From<&Rule> for pb::Rule {
    fn from(rule: &Rule) -> pb::Rule {
        let r = RuleRepr::from(rule.clone());
        let action = match r.action {
            ActionKind::Accept => pb::RuleAction::Accept,
            ActionKind::Drop => pb::RuleAction::Drop,
            ActionKind::Reject => pb::RuleAction::Reject,
            ActionKind::Continue => pb::RuleAction::Continue,
            ActionKind::Return => pb::RuleAction::Return,
            ActionKind::Jump => pb::RuleAction::Jump,
            ActionKind::Dnat => pb::RuleAction::Dnat,
            ActionKind::Snat => pb::RuleAction::Snat,
            ActionKind::RevDnat => pb::RuleAction::RevDnat,
            ActionKind::RevSnat => pb::RuleAction::RevSnat,
        };
        let reject_with = match r.reject_with {
            None => pb::RejectWith::Unspecified,
            Some(RejectWith::IcmpAdminProhibited) => pb::RejectWith::IcmpAdminProhibited,
            Some(RejectWith::IcmpPortUnreachable) => pb::RejectWith::IcmpPortUnreachable,
            Some(RejectWith::TcpReset) => pb::RejectWith::TcpReset,
        };
        let then = match r.then {
            None => pb::FlowAction::Unspecified,
            Some(FlowAction::Accept) => pb::FlowAction::Accept,
            Some(FlowAction::Continue) => pb::FlowAction::Continue,
            Some(FlowAction::Return) => pb::FlowAction::Return,
        };
        pb::Rule {
            action: action.into(),
            reject_with: reject_with.into(),
            chain: r.chain,
            to: r.to.map(|t| pb::NatTarget {
                ip: s(t.ip),
                ports: s_opt(&t.ports),
            }),
            then: then.into(),
            r#match: r.condition.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::Condition> for Condition {
    type Error = FieldError;

    fn try_from(p: pb::Condition) -> Result<Condition> {
        let port_refs = |field: &str, v: Vec<String>| {
            list(v, |r| text("", &r, "a port reference")).map_err(|e| e.within(field))
        };
        let conntrack = match pb::ConnState::try_from(p.conntrack) {
            Ok(pb::ConnState::Unspecified) => None,
            Ok(pb::ConnState::Forward) => Some(ConnState::Forward),
            Ok(pb::ConnState::Return) => Some(ConnState::Return),
            Err(_) => return Err(unknown_enum("conntrack", p.conntrack)),
        };
        let fragments = match pb::Fragments::try_from(p.fragments) {
            Ok(pb::Fragments::Unspecified) => None,
            Ok(pb::Fragments::Any) => Some(FragmentPolicy::Any),
            Ok(pb::Fragments::Header) => Some(FragmentPolicy::Header),
            Ok(pb::Fragments::Nonheader) => Some(FragmentPolicy::Nonheader),
            Ok(pb::Fragments::Unfragmented) => Some(FragmentPolicy::Unfragmented),
            Err(_) => return Err(unknown_enum("fragments", p.fragments)),
        };
        Ok(Condition {
            in_ports: port_refs("in_ports", p.in_ports)?,
            out_ports: port_refs("out_ports", p.out_ports)?,
            port_group: p.port_group,
            ethertype: num_opt("ethertype", p.ethertype, u16::MAX.into())?,
            eth_src: opt("eth_src", &p.eth_src)?,
            eth_dst: opt("eth_dst", &p.eth_dst)?,
            protocol: opt("protocol", &p.protocol)?,
            tos: num_opt("tos", p.tos, u8::MAX.into())?,
            src: cidr_opt("src", &p.src)?,
            dst: cidr_opt("dst", &p.dst)?,
            src_group: p.src_group,
            dst_group: p.dst_group,
            src_ports: opt("src_ports", &p.src_ports)?,
            dst_ports: opt("dst_ports", &p.dst_ports)?,
            icmp_type: num_opt("icmp_type", p.icmp_type, u8::MAX.into())?,
            icmp_code: num_opt("icmp_code", p.icmp_code, u8::MAX.into())?,
            conntrack,
            dnat_rewritten: p.dnat_rewritten,
            fragments,
            not: list(p.not, |name| {
                serde_json::from_value(serde_json::Value::String(name.clone())).map_err(|_| {
                    FieldError::new("", format!("`{name}` is not a field of a condition"))
                })
            })
            .map_err(|e| e.within("not"))?,
            invert: p.invert,
        })
    }
}

impl From<&Condition> for pb::Condition {
    fn from(c: &Condition) -> pb::Condition {
        let conntrack = match c.conntrack {
            None => pb::ConnState::Unspecified,
            Some(ConnState::Forward) => pb::ConnState::Forward,
            Some(ConnState::Return) => pb::ConnState::Return,
        };
        let fragments = match c.fragments {
            None => pb::Fragments::Unspecified,
            Some(FragmentPolicy::Any) => pb::Fragments::Any,
            Some(FragmentPolicy::Header) => pb::Fragments::Header,
            Some(FragmentPolicy::Nonheader) => pb::Fragments::Nonheader,
            Some(FragmentPolicy::Unfragmented) => pb::Fragments::Unfragmented,
        };
        pb::Condition {
            in_ports: c.in_ports.iter().map(s).collect(),
            out_ports: c.out_ports.iter().map(s).collect(),
            port_group: c.port_group.clone(),
            ethertype: c.ethertype.map(u32::from),
            eth_src: s_opt(&c.eth_src),
            eth_dst: s_opt(&c.eth_dst),
            protocol: s_opt(&c.protocol),
            tos: c.tos.map(u32::from),
            src: s_opt(&c.src),
            dst: s_opt(&c.dst),
            src_group: c.src_group.clone(),
            dst_group: c.dst_group.clone(),
            src_ports: s_opt(&c.src_ports),
            dst_ports: s_opt(&c.dst_ports),
            icmp_type: c.icmp_type.map(u32::from),
            icmp_code: c.icmp_code.map(u32::from),
            conntrack: conntrack.into(),
            dnat_rewritten: c.dnat_rewritten,
            fragments: fragments.into(),
            not: c.not.iter().map(|f| f.name().to_string()).collect(),
            invert: c.invert,
        }
    }
}

// ---------------------------------------------------------------------------
// Groups and intents

fn ip_group(p: pb::IpGroup) -> Result<Vec<Ipv4Addr>> {
    list(p.addresses, |a| ip("", &a))
}

impl TryFrom<pb::PortGroup> for PortGroup {
    type Error = FieldError;

    fn try_from(p: pb::PortGroup) -> Result<PortGroup> {
        Ok(PortGroup {
            ports: list(p.ports, |r| text("", &r, "a port reference"))
                .map_err(|e| e.within("ports"))?,
            stateful: p.stateful,
        })
    }
}

impl From<&PortGroup> for pb::PortGroup {
    fn from(g: &PortGroup) -> pb::PortGroup {
        pb::PortGroup {
            ports: g.ports.iter().map(s).collect(),
            stateful: g.stateful,
        }
    }
}

impl TryFrom<pb::NatIntent> for NatIntent {
    type Error = FieldError;

    fn try_from(p: pb::NatIntent) -> Result<NatIntent> {
        use pb::nat_intent::Kind;
        match p.kind {
            None => Err(FieldError::new(
                "type",
                "is required: snat, floating_ip or port_forward",
            )),
            Some(Kind::Snat(n)) => Ok(NatIntent::Snat(SnatIntent {
                router: n.router,
                from: cidr("from", &n.from)?,
                to: text("to", &n.to, "an address or address range")?,
                ports: opt("ports", &n.ports)?,
                port: n.port,
            })),
            Some(Kind::FloatingIp(n)) => Ok(NatIntent::FloatingIp(FloatingIpIntent {
                router: n.router,
                public: ip("public", &n.public)?,
                private: ip("private", &n.private)?,
                port: n.port,
            })),
            Some(Kind::PortForward(n)) => Ok(NatIntent::PortForward(PortForwardIntent {
                router: n.router,
                protocol: text("protocol", &n.protocol, "a protocol")?,
                public: ip("public", &n.public)?,
                public_ports: text("public_ports", &n.public_ports, "a port range")?,
                private: ip("private", &n.private)?,
                private_ports: text("private_ports", &n.private_ports, "a port range")?,
                port: n.port,
            })),
        }
    }
}

impl From<&NatIntent> for pb::NatIntent {
    fn from(n: &NatIntent) -> pb::NatIntent {
        use pb::nat_intent::Kind;
        let kind = match n {
            NatIntent::Snat(n) => Kind::Snat(pb::SnatIntent {
                router: n.router.clone(),
                from: s(n.from),
                to: s(n.to),
                ports: s_opt(&n.ports),
                port: n.port.clone(),
            }),
            NatIntent::FloatingIp(n) => Kind::FloatingIp(pb::FloatingIpIntent {
                router: n.router.clone(),
                public: s(n.public),
                private: s(n.private),
                port: n.port.clone(),
            }),
            NatIntent::PortForward(n) => Kind::PortForward(pb::PortForwardIntent {
                router: n.router.clone(),
                protocol: s(n.protocol),
                public: s(n.public),
                public_ports: s(n.public_ports),
                private: s(n.private),
                private_ports: s(n.private_ports),
                port: n.port.clone(),
            }),
        };
        pb::NatIntent { kind: Some(kind) }
    }
}

impl TryFrom<pb::FirewallIntent> for FirewallIntent {
    type Error = FieldError;

    fn try_from(p: pb::FirewallIntent) -> Result<FirewallIntent> {
        Ok(FirewallIntent {
            router: p.router,
            public: ip("public", &p.public)?,
            allow: list(p.allow, |a| {
                Ok(FirewallAllow {
                    protocol: opt("protocol", &a.protocol)?,
                    ports: opt("ports", &a.ports)?,
                    from: cidr_opt("from", &a.from)?,
                })
            })
            .map_err(|e| e.within("allow"))?,
        })
    }
}

impl From<&FirewallIntent> for pb::FirewallIntent {
    fn from(f: &FirewallIntent) -> pb::FirewallIntent {
        pb::FirewallIntent {
            router: f.router.clone(),
            public: s(f.public),
            allow: f
                .allow
                .iter()
                .map(|a| pb::FirewallAllow {
                    protocol: s_opt(&a.protocol),
                    ports: s_opt(&a.ports),
                    from: s_opt(&a.from),
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Single objects

pub(crate) fn kind_from_pb(kind: i32) -> Result<Option<ObjectKind>> {
    match pb::Kind::try_from(kind) {
        Ok(pb::Kind::Unspecified) => Ok(None),
        Ok(pb::Kind::Bridge) => Ok(Some(ObjectKind::Bridge)),
        Ok(pb::Kind::Router) => Ok(Some(ObjectKind::Router)),
        Ok(pb::Kind::Chain) => Ok(Some(ObjectKind::Chain)),
        Ok(pb::Kind::IpGroup) => Ok(Some(ObjectKind::IpGroup)),
        Ok(pb::Kind::PortGroup) => Ok(Some(ObjectKind::PortGroup)),
        Err(_) => Err(unknown_enum("kind", kind)),
    }
}

pub(crate) fn kind_to_pb(kind: Option<ObjectKind>) -> pb::Kind {
    match kind {
        None => pb::Kind::Unspecified,
        Some(ObjectKind::Bridge) => pb::Kind::Bridge,
        Some(ObjectKind::Router) => pb::Kind::Router,
        Some(ObjectKind::Chain) => pb::Kind::Chain,
        Some(ObjectKind::IpGroup) => pb::Kind::IpGroup,
        Some(ObjectKind::PortGroup) => pb::Kind::PortGroup,
    }
}

impl TryFrom<pb::Object> for Object {
    type Error = FieldError;

    fn try_from(p: pb::Object) -> Result<Object> {
        use pb::object::Object as O;
        match required("object", p.object)? {
            O::Bridge(b) => Bridge::try_from(b).map(Object::Bridge),
            O::Router(r) => Router::try_from(r).map(Object::Router),
            O::Chain(c) => chain(c).map(Object::Chain),
            O::IpGroup(g) => ip_group(g).map(Object::IpGroup),
            O::PortGroup(g) => PortGroup::try_from(g).map(Object::PortGroup),
        }
    }
}

impl From<&Object> for pb::Object {
    fn from(o: &Object) -> pb::Object {
        use pb::object::Object as O;
        let object = match o {
            Object::Bridge(b) => O::Bridge(b.into()),
            Object::Router(r) => O::Router(r.into()),
            Object::Chain(c) => O::Chain(chain_pb(c)),
            Object::IpGroup(g) => O::IpGroup(pb::IpGroup {
                addresses: g.iter().map(s).collect(),
            }),
            Object::PortGroup(g) => O::PortGroup(g.into()),
        };
        pb::Object {
            object: Some(object),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests with corrupted bytes decode to anything protobuf allows;
    /// converting and validating them must give errors, never a panic.
    #[test]
    fn corrupted_requests_never_panic() {
        use prost::Message;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let topo = crate::load_file(&dir.join("tests/data/everything.yaml")).unwrap();
        let bytes = pb::Topology::from(&topo).encode_to_vec();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut decoded, mut converted) = (0, 0);
        for _ in 0..3000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % b.len() as u64) as usize;
                b[i] = next() as u8;
            }
            let Ok(p) = pb::Topology::decode(b.as_slice()) else {
                continue;
            };
            decoded += 1;
            if let Ok(t) = Topology::try_from(p) {
                converted += 1;
                let _ = t.validate();
                let _ = t.to_yaml();
            }
        }
        assert!(
            decoded > 100 && converted > 10,
            "{decoded} decoded, {converted} converted"
        );
    }

    #[test]
    fn errors_name_the_field_inside_the_topology() {
        let mut p = pb::Topology {
            version: 1,
            ..Default::default()
        };
        let mut bridge = pb::Bridge::default();
        bridge.ports.insert(
            "vm1".into(),
            pb::BridgePort {
                vlan: Some(70000),
                ..Default::default()
            },
        );
        p.bridges.insert("tenant".into(), bridge);
        let err = Topology::try_from(p).unwrap_err();
        assert_eq!(err.path, "bridges.tenant.ports.vm1.vlan");
        assert!(err.message.contains("70000"), "{err}");

        let rule = pb::Rule {
            action: pb::RuleAction::Accept.into(),
            r#match: Some(pb::Condition {
                src: Some("10.0.0.300/24".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = chain(pb::Chain {
            rules: vec![rule.clone(), rule],
        })
        .map_err(|e| e.within("chains.c"))
        .unwrap_err();
        assert_eq!(err.path, "chains.c[0].match.src");
        assert!(err.message.contains("10.0.0.300/24"), "{err}");

        let err = Rule::try_from(pb::Rule {
            action: pb::RuleAction::Jump.into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.message.contains("needs `chain`"), "{err}");
    }
}
