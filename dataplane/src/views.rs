//! Text forms of the dataplane's own objects for the API views: trace
//! steps with names instead of snapshot ids, flow keys and flow actions.
//! Pure functions of a snapshot, so they are tested without a kernel.
use crate::packet::{Mac, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::sim::{DeviceRef, PortId, Snapshot, Step, Verdict};
use std::net::Ipv4Addr;
use vnet_common::{act, FlowActions, FlowKey};
use vnet_model::{MacAddr, Topology};

fn mac(m: &Mac) -> String {
    MacAddr(*m).to_string()
}

fn ip(a: &[u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(*a)
}

pub fn port_name(snap: &Snapshot, port: PortId) -> String {
    snap.ports
        .get(port)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| format!("#{port}"))
}

pub fn device_name(snap: &Snapshot, device: DeviceRef) -> String {
    match device {
        DeviceRef::Bridge(i) => snap
            .bridges
            .get(i)
            .map(|b| format!("bridge {}", b.name))
            .unwrap_or_else(|| format!("bridge #{i}")),
        DeviceRef::Router(i) => snap
            .routers
            .get(i)
            .map(|r| format!("router {}", r.name))
            .unwrap_or_else(|| format!("router #{i}")),
    }
}

/// `MacLookup { .. }` → `mac_lookup`: the step's kind, from its variant
/// name, so that steps added to the simulation get a kind without a change
/// here.
fn kind_of(debug: &str) -> String {
    let name = debug.split([' ', '{', '(']).next().unwrap_or(debug);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// (kind, detail) of every step of a trace. Route steps name the route of
/// the router the walk is in, as `topology` (the running model) has it.
pub fn steps(snap: &Snapshot, topology: &Topology, steps: &[Step]) -> Vec<(String, String)> {
    let mut router: Option<&str> = None;
    steps
        .iter()
        .map(|s| {
            if let Step::Device { device } = s {
                router = match device {
                    DeviceRef::Router(i) => snap.routers.get(*i).map(|r| r.name.as_str()),
                    DeviceRef::Bridge(_) => None,
                };
            }
            step(snap, topology, router, s)
        })
        .collect()
}

fn route(topology: &Topology, router: Option<&str>, i: usize) -> String {
    let r = router
        .and_then(|name| topology.routers.get(name))
        .and_then(|r| r.routes.get(i));
    match r {
        Some(r) => {
            let mut s = format!("routes[{i}]: {}", r.dst);
            if let Some(via) = r.via {
                s.push_str(&format!(" via {via}"));
            }
            if let Some(port) = &r.port {
                s.push_str(&format!(" port {port}"));
            }
            if r.kind != vnet_model::RouteType::Normal {
                s.push_str(&format!(" ({:?})", r.kind).to_lowercase());
            }
            s
        }
        None => format!("route #{i}"),
    }
}

/// (kind, detail) of one step; `router` is the router the walk is in.
pub fn step(
    snap: &Snapshot,
    topology: &Topology,
    router: Option<&str>,
    step: &Step,
) -> (String, String) {
    let debug = format!("{step:?}");
    let kind = kind_of(&debug);
    let p = |id: &PortId| port_name(snap, *id);
    #[allow(unreachable_patterns)]
    let detail = match step {
        Step::Ingress { port } => format!("port {}", p(port)),
        Step::VlanPopped { vid } => format!("VLAN {vid} removed"),
        Step::Device { device } => device_name(snap, *device),
        Step::MacLearned { mac: m, port } => format!("{} learned on {}", mac(m), p(port)),
        Step::MacMoved { mac: m, from, to } => format!(
            "{} moved from {} to {}",
            mac(m),
            from.map(|f| p(&f))
                .unwrap_or_else(|| "a removed port".into()),
            p(to)
        ),
        Step::MacTableFull { mac: m } => format!("MAC table full: {} not learned", mac(m)),
        Step::ArpSuppressed { ip: a, mac: m } => {
            format!("ARP for {} answered with {}", ip(a), mac(m))
        }
        Step::MacLookup {
            mac: m,
            port,
            is_static,
        } => match port {
            Some(port) => format!(
                "{} -> {}{}",
                mac(m),
                p(port),
                if *is_static { " (static)" } else { "" }
            ),
            None => format!("{} unknown", mac(m)),
        },
        Step::Flood { ports } => format!(
            "flooded to {}",
            ports.iter().map(p).collect::<Vec<_>>().join(", ")
        ),
        Step::Egress { port } => format!("out of {}", p(port)),
        Step::VlanPushed { vid } => format!("VLAN {vid} added"),
        Step::Drop { reason } => format!("dropped: {}", reason.name()),
        Step::NotInstalled { why } => format!("not installed as a flow: {why}"),
        Step::Link { from, to } => format!("{} -> {}", p(from), p(to)),
        Step::ArpLearned { ip: a, mac: m } => format!("{} is at {}", ip(a), mac(m)),
        Step::ArpIgnored { ip: a } => {
            format!("ARP from {} ignored: outside the port's subnet", ip(a))
        }
        Step::Route { dst, route: r } => match r {
            Some(i) => format!("{} matches {}", ip(dst), route(topology, router, *i)),
            None => format!("no route to {}", ip(dst)),
        },
        Step::TtlDecremented => "TTL decremented".into(),
        Step::ArpResolved { ip: a, mac: m } => format!("next hop {} is at {}", ip(a), mac(m)),
        Step::ArpQueued { ip: a } => {
            format!(
                "next hop {} unknown: packet queued, ARP request sent",
                ip(a)
            )
        }
        Step::Icmp { kind: t, code } => format!("ICMP type {t} code {code} sent back"),
        Step::Fragmented { count } => format!("fragmented into {count} packets"),
        Step::Filter { chain, verdict } => format!(
            "chain {}: {}",
            snap.chains
                .chains
                .get(*chain)
                .map(|c| c.name.as_str())
                .unwrap_or("?"),
            kind_of(&format!("{verdict:?}"))
        ),
        Step::Conntrack { state, .. } => kind_of(&format!("{state:?}")),
        Step::Rejected { with } => format!("rejected with {}", kind_of(&format!("{with:?}"))),
        Step::Nat {
            src,
            dst,
            sport,
            dport,
        } => format!("rewritten to {}:{sport} > {}:{dport}", ip(src), ip(dst)),
        // Steps this renderer does not know yet: their debug form.
        _ => debug.clone(),
    };
    (kind, detail)
}

pub fn verdict(v: &Verdict) -> String {
    #[allow(unreachable_patterns)]
    match v {
        Verdict::Forwarded => "forwarded".into(),
        Verdict::Flooded => "flooded".into(),
        Verdict::Answered => "answered".into(),
        Verdict::Dropped(r) => format!("dropped ({})", r.name()),
        Verdict::Consumed => "consumed".into(),
        other => kind_of(&format!("{other:?}")),
    }
}

/// A flow key as a one-line match.
pub fn key(k: &FlowKey) -> String {
    let mut s = format!("eth {} > {}", mac(&k.eth_src), mac(&k.eth_dst));
    if k.tagged() {
        s.push_str(&format!(" vlan {} pcp {}", k.vid(), k.vlan_tci >> 13));
    }
    match k.ethertype {
        ETHERTYPE_ARP => s.push_str(&format!(
            " arp op {} {} > {}",
            k.l4_dst,
            ip(&k.src),
            ip(&k.dst)
        )),
        ETHERTYPE_IPV4 => {
            let proto = vnet_model::Protocol(k.proto);
            s.push_str(&format!(" ipv4 {} > {}", ip(&k.src), ip(&k.dst)));
            if k.tos != 0 {
                s.push_str(&format!(" tos {}", k.tos));
            }
            s.push_str(&format!(" {proto}"));
            if k.frag != 0 {
                s.push_str(" fragment");
            }
            if proto == vnet_model::Protocol::ICMP {
                // The key holds the echo id and type << 8 | code.
                s.push_str(&format!(
                    " id {} type {} code {}",
                    k.l4_src,
                    k.l4_dst >> 8,
                    k.l4_dst & 0xff
                ));
            } else if k.l4_src != 0 || k.l4_dst != 0 {
                s.push_str(&format!(" {} > {}", k.l4_src, k.l4_dst));
            }
        }
        other => s.push_str(&format!(" ethertype {other:#06x}")),
    }
    s
}

/// Flow actions in the order the kernel applies them; the output interface
/// named by `out` (the port bound to that ifindex).
pub fn actions(a: &FlowActions, out: impl Fn(u32) -> String) -> String {
    let f = a.flags;
    let mut parts = Vec::new();
    if f & act::POP_VLAN != 0 {
        parts.push("pop_vlan".to_string());
    }
    if f & act::SET_ETH_SRC != 0 {
        parts.push(format!("eth_src={}", mac(&a.eth_src)));
    }
    if f & act::SET_ETH_DST != 0 {
        parts.push(format!("eth_dst={}", mac(&a.eth_dst)));
    }
    if f & act::SET_IP_SRC != 0 {
        parts.push(format!("ip_src={}", ip(&a.ip_src)));
    }
    if f & act::SET_IP_DST != 0 {
        parts.push(format!("ip_dst={}", ip(&a.ip_dst)));
    }
    if f & act::SET_L4_SRC != 0 {
        parts.push(format!("l4_src={}", a.l4_src));
    }
    if f & act::SET_L4_DST != 0 {
        parts.push(format!("l4_dst={}", a.l4_dst));
    }
    if f & act::DEC_TTL != 0 {
        parts.push(format!("dec_ttl={}", a.ttl_dec.max(1)));
    }
    if f & act::PUSH_VLAN != 0 {
        parts.push(format!("push_vlan={}", a.vlan));
    }
    if f & act::ENCAP_VXLAN != 0 {
        let e = &a.encap;
        parts.push(format!(
            "vxlan(vni={},{}->{})",
            e.vni,
            ip(&e.src),
            ip(&e.dst)
        ));
    }
    if f & act::OUTPUT != 0 {
        parts.push(format!("output={}", out(a.out_ifindex)));
    }
    if f & act::DROP != 0 {
        parts.push("drop".to_string());
    }
    parts.join(",")
}

/// A flow key as an opaque page token (`vnetctl flows` pages): its 36
/// bytes in field order, in hex, so that tokens sort as keys do.
pub fn key_token(k: &FlowKey) -> String {
    let mut bytes = Vec::with_capacity(36);
    bytes.extend(k.ifindex.to_be_bytes());
    bytes.extend(k.eth_src);
    bytes.extend(k.eth_dst);
    bytes.extend(k.vlan_tci.to_be_bytes());
    bytes.extend(k.ethertype.to_be_bytes());
    bytes.extend(k.src);
    bytes.extend(k.dst);
    bytes.extend([k.proto, k.frag]);
    bytes.extend(k.l4_src.to_be_bytes());
    bytes.extend(k.l4_dst.to_be_bytes());
    bytes.extend([k.tos, k.flags]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a [`key_token`]; `None` for anything else.
pub fn key_from_token(token: &str) -> Option<FlowKey> {
    if token.len() != 72 || !token.is_ascii() {
        return None;
    }
    let mut b = [0u8; 36];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&token[2 * i..2 * i + 2], 16).ok()?;
    }
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let arr = |i: usize| -> [u8; 6] { [b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5]] };
    let ip = |i: usize| -> [u8; 4] { [b[i], b[i + 1], b[i + 2], b[i + 3]] };
    Some(FlowKey {
        ifindex: u32::from_be_bytes(ip(0)),
        eth_src: arr(4),
        eth_dst: arr(10),
        vlan_tci: u16_at(16),
        ethertype: u16_at(18),
        src: ip(20),
        dst: ip(24),
        proto: b[28],
        frag: b[29],
        l4_src: u16_at(30),
        l4_dst: u16_at(32),
        tos: b[34],
        flags: b[35],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_tokens_round_trip_and_sort_as_keys() {
        let mut keys: Vec<FlowKey> = (0..50u32)
            .map(|i| FlowKey {
                ifindex: i % 3 + 1,
                eth_src: [2, 0, 0, 0, (i % 7) as u8, 1],
                vlan_tci: (i * 97) as u16,
                src: [10, 0, 0, i as u8],
                l4_dst: (i * 1031) as u16,
                tos: (i % 4) as u8,
                flags: (i % 2) as u8,
                ..FlowKey::default()
            })
            .collect();
        for k in &keys {
            assert_eq!(key_from_token(&key_token(k)), Some(*k));
        }
        let mut tokens: Vec<String> = keys.iter().map(key_token).collect();
        keys.sort();
        tokens.sort();
        let back: Vec<FlowKey> = tokens.iter().filter_map(|t| key_from_token(t)).collect();
        assert_eq!(back, keys);
        for bad in ["", "zz", &"0".repeat(71), &"g".repeat(72), &"é".repeat(36)] {
            assert_eq!(key_from_token(bad), None, "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn kinds_come_from_variant_names() {
        assert_eq!(kind_of("MacLookup { mac: .. }"), "mac_lookup");
        assert_eq!(kind_of("Dropped(PortDown)"), "dropped");
        assert_eq!(kind_of("TtlDecremented"), "ttl_decremented");
    }

    #[test]
    fn keys_and_actions_read_like_a_match() {
        let k = FlowKey {
            eth_src: [2, 0, 0, 0, 1, 1],
            eth_dst: [2, 0, 0, 0, 1, 2],
            ethertype: ETHERTYPE_IPV4,
            src: [10, 0, 0, 11],
            dst: [10, 0, 0, 12],
            proto: 6,
            l4_src: 40000,
            l4_dst: 80,
            ..FlowKey::default()
        };
        assert_eq!(
            key(&k),
            "eth 02:00:00:00:01:01 > 02:00:00:00:01:02 ipv4 10.0.0.11 > 10.0.0.12 tcp 40000 > 80"
        );
        let a = FlowActions {
            flags: act::PUSH_VLAN | act::OUTPUT,
            vlan: 10,
            out_ifindex: 7,
            ..FlowActions::default()
        };
        assert_eq!(actions(&a, |i| format!("if{i}")), "push_vlan=10,output=if7");
        let tunnelled = FlowActions {
            flags: act::ENCAP_VXLAN | act::OUTPUT,
            out_ifindex: 3,
            encap: vnet_common::Encap {
                vni: 2,
                src: [192, 0, 2, 1],
                dst: [192, 0, 2, 2],
                ..Default::default()
            },
            ..FlowActions::default()
        };
        assert_eq!(
            actions(&tunnelled, |i| format!("if{i}")),
            "vxlan(vni=2,192.0.2.1->192.0.2.2),output=if3"
        );
    }
}
