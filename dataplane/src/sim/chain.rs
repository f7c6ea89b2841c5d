//! Rule chains: compiled conditions, indexed classification and MidoNet's
//! evaluation order.
//!
//! Evaluation (SEMANTICS.md "Rule evaluation"): rules run in order; a rule
//! whose condition fails continues to the next. ACCEPT, DROP and REJECT
//! decide; CONTINUE goes on; JUMP evaluates another chain, whose RETURN (or
//! end) resumes the caller at the next rule, and a jump to a chain already
//! on the path is ignored; RETURN at top level, or falling off the end,
//! means ACCEPT. NAT rules rewrite the packet, then their `then` decides
//! (accept), goes on (continue) or returns.
//!
//! Classification does not scan: each rule is indexed under one field it
//! requires — its destination prefix, else its source prefix, else its
//! destination port, else its source port — in per-prefix-length hash maps
//! (as the route table) and port maps; a packet's candidate rules are the ones in the buckets
//! it hits plus the few that no field can index, merged in rule order. A
//! chain of 10 000 host rules costs a handful of hash probes per packet.
use super::conntrack::Direction;
use super::route_table::mask;
use super::{PortId, Tag};
use crate::hash::HashMap;
use crate::packet::{Mac, IPPROTO_ICMP};
use std::collections::BTreeMap;
use vnet_common::Reason;
use vnet_model::{
    Action, ConditionField, ConnState, FlowAction, FragmentPolicy, RejectWith, Rule, Topology,
};

pub type ChainId = usize;

/// Fragment class of a packet, for fragment policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    Unfragmented,
    First,
    Later,
}

/// The fields of a packet that rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub in_port: Option<PortId>,
    pub out_port: Option<PortId>,
    pub ethertype: u16,
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub ip: Option<IpFields>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFields {
    pub proto: u8,
    pub tos: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub frag: Frag,
    /// TCP/UDP ports; for ICMP (type, code). A later fragment has its first
    /// fragment's (sim/fragments.rs); `None` when that one was not seen.
    pub l4: Option<(u16, u16)>,
}

/// What evaluation asks of the walk: state it cannot compute itself.
pub trait Env {
    fn conn_state(&mut self) -> Direction;
    fn dnat_rewritten(&self) -> bool;
    /// The decision depended on whether the packet is a fragment.
    fn fragment_sensitive(&mut self);
    fn depends_on(&mut self, tag: Tag);
    /// Applies a NAT action to the packet (and the frame behind it).
    /// `Ok(false)`: the rule does not apply to this packet (a forward rule
    /// meeting a reply of a connection already translated), and the chain
    /// goes on as if it had not matched.
    fn nat(&mut self, packet: &mut Packet, nat: &Nat) -> Result<bool, Reason>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nat {
    /// `match_ports`: the destination ports the rule matched, so the
    /// translated port keeps its offset in the range.
    Dnat {
        start: [u8; 4],
        end: [u8; 4],
        ports: Option<(u16, u16)>,
        match_ports: Option<(u16, u16)>,
    },
    /// `forwarded`: for a dynamic SNAT, the destinations DNAT rules own on
    /// its target addresses, which it must not allocate.
    Snat {
        start: [u8; 4],
        end: [u8; 4],
        ports: Option<(u16, u16)>,
        forwarded: Vec<Forwarded>,
    },
    RevDnat,
    RevSnat,
}

/// What a DNAT rule matches (a port forward's public side): a connection
/// SNAT gave such a source would have its replies taken by the DNAT rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Destination prefix (network, length); `None`: any address.
    pub dst: Option<(u32, u8)>,
    /// `None`: any protocol.
    pub proto: Option<u8>,
    /// TCP/UDP destination ports; `None`: the whole address (every port,
    /// every ICMP id).
    pub ports: Option<(u16, u16)>,
}

impl Forwarded {
    /// Whether it owns anything of `addr`.
    fn on(&self, addr: [u8; 4]) -> bool {
        self.dst.is_none_or(|net| in_net(addr, net))
    }

    /// The ports (ICMP: ids) of protocol `proto` it owns on `addr`.
    pub fn owned(&self, addr: [u8; 4], proto: u8) -> Option<(u16, u16)> {
        if !self.on(addr) || self.proto.is_some_and(|p| p != proto) {
            return None;
        }
        match self.ports {
            None => Some((0, u16::MAX)),
            // Port conditions match TCP and UDP only.
            Some(r) => (proto != IPPROTO_ICMP).then_some(r),
        }
    }

    /// The DNAT rules of the chains, as SNAT must avoid them. Only plain
    /// conditions are taken: an inverted destination, protocol or port
    /// condition owns "everything but", which SNAT cannot sensibly avoid.
    fn of_rules<'r>(rules: impl Iterator<Item = &'r Rule>) -> Vec<Forwarded> {
        let mut out = Vec::new();
        for r in rules {
            if !matches!(r.action, Action::Dnat { .. }) {
                continue;
            }
            let c = &r.condition;
            let plain = [
                ConditionField::Dst,
                ConditionField::Protocol,
                ConditionField::DstPorts,
            ]
            .iter()
            .all(|f| !c.not.contains(f));
            if c.invert || !plain {
                continue;
            }
            out.push(Forwarded {
                dst: c.dst.map(|n| (u32::from(n.network()), n.prefix_len())),
                proto: c.protocol.map(|p| p.0),
                ports: c
                    .dst_ports
                    .map(|r| (r.start.min(r.end), r.start.max(r.end))),
            });
        }
        out.sort_unstable_by_key(|f| (f.dst, f.proto, f.ports));
        out.dedup();
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CAction {
    Accept,
    Drop,
    Reject(RejectWith),
    Continue,
    Return,
    Jump(ChainId),
    Nat(Nat, FlowAction),
}

/// The end of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject(RejectWith),
    /// A NAT action could not be applied (counted with this reason).
    Error(Reason),
}

/// Bits of `ConditionField`, for inversion masks.
fn bit(f: ConditionField) -> u32 {
    1 << (f as u32)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cond {
    in_ports: Option<Vec<PortId>>,
    out_ports: Option<Vec<PortId>>,
    port_group: Option<(Tag, Vec<PortId>)>,
    ethertype: Option<u16>,
    eth_src: Option<(Mac, Mac)>,
    eth_dst: Option<(Mac, Mac)>,
    proto: Option<u8>,
    tos: Option<u8>,
    src: Option<(u32, u8)>,
    dst: Option<(u32, u8)>,
    src_group: Option<(Tag, Vec<[u8; 4]>)>,
    dst_group: Option<(Tag, Vec<[u8; 4]>)>,
    src_ports: Option<(u16, u16)>,
    dst_ports: Option<(u16, u16)>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    conntrack: Option<ConnState>,
    dnat_rewritten: Option<bool>,
    fragments: Option<FragmentPolicy>,
    inverted: u32,
    invert: bool,
}

fn masked_eq(a: &Mac, b: &Mac, m: &Mac) -> bool {
    (0..6).all(|i| a[i] & m[i] == b[i] & m[i])
}

fn in_net(addr: [u8; 4], (net, len): (u32, u8)) -> bool {
    u32::from_be_bytes(addr) & mask(len) == net
}

impl Cond {
    /// Whether the condition uses L4 fields (for the default fragment policy).
    fn has_l4(&self) -> bool {
        self.src_ports.is_some()
            || self.dst_ports.is_some()
            || self.icmp_type.is_some()
            || self.icmp_code.is_some()
    }

    fn matches(&self, p: &Packet, env: &mut dyn Env) -> bool {
        let r = self.fields_match(p, env);
        r != self.invert
    }

    fn fields_match(&self, p: &Packet, env: &mut dyn Env) -> bool {
        // Each set field must match (or, when inverted, must not).
        let ok =
            |field: ConditionField, matched: bool| matched != (self.inverted & bit(field) != 0);
        use ConditionField as F;
        if let Some(ports) = &self.in_ports {
            if !ok(F::InPorts, p.in_port.is_some_and(|i| ports.contains(&i))) {
                return false;
            }
        }
        if let Some(ports) = &self.out_ports {
            if !ok(F::OutPorts, p.out_port.is_some_and(|o| ports.contains(&o))) {
                return false;
            }
        }
        if let Some((tag, members)) = &self.port_group {
            env.depends_on(*tag);
            let m = p.in_port.is_some_and(|i| members.contains(&i))
                || p.out_port.is_some_and(|o| members.contains(&o));
            if !ok(F::PortGroup, m) {
                return false;
            }
        }
        if let Some(t) = self.ethertype {
            if !ok(F::Ethertype, p.ethertype == t) {
                return false;
            }
        }
        if let Some((addr, m)) = &self.eth_src {
            if !ok(F::EthSrc, masked_eq(&p.eth_src, addr, m)) {
                return false;
            }
        }
        if let Some((addr, m)) = &self.eth_dst {
            if !ok(F::EthDst, masked_eq(&p.eth_dst, addr, m)) {
                return false;
            }
        }
        let ip = p.ip;
        if let Some(proto) = self.proto {
            if !ok(F::Protocol, ip.is_some_and(|i| i.proto == proto)) {
                return false;
            }
        }
        if let Some(tos) = self.tos {
            if !ok(F::Tos, ip.is_some_and(|i| i.tos == tos)) {
                return false;
            }
        }
        if let Some(net) = self.src {
            if !ok(F::Src, ip.is_some_and(|i| in_net(i.src, net))) {
                return false;
            }
        }
        if let Some(net) = self.dst {
            if !ok(F::Dst, ip.is_some_and(|i| in_net(i.dst, net))) {
                return false;
            }
        }
        if let Some((tag, addrs)) = &self.src_group {
            env.depends_on(*tag);
            if !ok(F::SrcGroup, ip.is_some_and(|i| addrs.contains(&i.src))) {
                return false;
            }
        }
        if let Some((tag, addrs)) = &self.dst_group {
            env.depends_on(*tag);
            if !ok(F::DstGroup, ip.is_some_and(|i| addrs.contains(&i.dst))) {
                return false;
            }
        }
        let is_icmp = ip.is_some_and(|i| i.proto == IPPROTO_ICMP);
        let l4 = ip.and_then(|i| i.l4);
        let ports = l4.filter(|_| !is_icmp);
        if let Some((lo, hi)) = self.src_ports {
            if !ok(
                F::SrcPorts,
                ports.is_some_and(|(s, _)| (lo..=hi).contains(&s)),
            ) {
                return false;
            }
        }
        if let Some((lo, hi)) = self.dst_ports {
            if !ok(
                F::DstPorts,
                ports.is_some_and(|(_, d)| (lo..=hi).contains(&d)),
            ) {
                return false;
            }
        }
        let icmp = l4.filter(|_| is_icmp);
        if let Some(t) = self.icmp_type {
            if !ok(F::IcmpType, icmp.is_some_and(|(ty, _)| ty == t as u16)) {
                return false;
            }
        }
        if let Some(c) = self.icmp_code {
            if !ok(F::IcmpCode, icmp.is_some_and(|(_, code)| code == c as u16)) {
                return false;
            }
        }
        if let Some(want) = self.conntrack {
            let state = if ip.is_some() {
                Some(env.conn_state())
            } else {
                None
            };
            let matched = match want {
                ConnState::Forward => state == Some(Direction::Forward),
                ConnState::Return => state == Some(Direction::Return),
            };
            if !ok(F::Conntrack, matched) {
                return false;
            }
        }
        if let Some(want) = self.dnat_rewritten {
            if !ok(F::DnatRewritten, env.dnat_rewritten() == want) {
                return false;
            }
        }
        // Default policy: a rule on L4 fields cannot match a packet that
        // lacks them (a later fragment whose first fragment was not seen),
        // even through an inverted field; a later fragment that has its
        // datagram's fields is decided as its first fragment.
        let policy = self.fragments.unwrap_or(if self.has_l4() && l4.is_none() {
            FragmentPolicy::Header
        } else {
            FragmentPolicy::Any
        });
        if policy != FragmentPolicy::Any {
            let frag = ip.map(|i| i.frag).unwrap_or(Frag::Unfragmented);
            if frag != Frag::Unfragmented {
                // The kernel runs one flow for all fragments of a datagram:
                // a decision that tells them apart must not be installed.
                env.fragment_sensitive();
            }
            let matched = match policy {
                FragmentPolicy::Any => true,
                FragmentPolicy::Header => frag != Frag::Later,
                FragmentPolicy::Nonheader => frag == Frag::Later,
                FragmentPolicy::Unfragmented => frag == Frag::Unfragmented,
            };
            if !ok(F::Fragments, matched) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CRule {
    cond: Cond,
    action: CAction,
}

/// Rule indices by masked prefix, one map per prefix length.
#[derive(Debug, Clone, Default)]
struct PrefixIndex {
    lens: Vec<(u8, HashMap<u32, Vec<u32>>)>,
}

impl PrefixIndex {
    fn insert(&mut self, (net, len): (u32, u8), rule: u32) {
        let pos = match self.lens.iter().position(|(l, _)| *l == len) {
            Some(p) => p,
            None => {
                self.lens.push((len, HashMap::default()));
                self.lens.len() - 1
            }
        };
        self.lens[pos].1.entry(net).or_default().push(rule);
    }
    fn collect(&self, addr: [u8; 4], out: &mut Vec<u32>) {
        let a = u32::from_be_bytes(addr);
        for (len, map) in &self.lens {
            if let Some(rules) = map.get(&(a & mask(*len))) {
                out.extend_from_slice(rules);
            }
        }
    }
}

/// The (protocol, port) a rule can be indexed under: it requires one TCP or
/// UDP protocol and one port, neither inverted.
fn single_port(c: &Cond, ports: Option<(u16, u16)>, field: ConditionField) -> Option<(u8, u16)> {
    let plain = |f: ConditionField| !c.invert && c.inverted & bit(f) == 0;
    let (proto, (lo, hi)) = (c.proto?, ports?);
    (lo == hi && proto != IPPROTO_ICMP && plain(field) && plain(ConditionField::Protocol))
        .then_some((proto, lo))
}

/// Below this many rules a scan is cheaper than the index.
const INDEX_MIN_RULES: usize = 16;

#[derive(Debug, Clone, Default)]
struct Index {
    by_dst: PrefixIndex,
    by_src: PrefixIndex,
    by_dport: HashMap<(u8, u16), Vec<u32>>,
    by_sport: HashMap<(u8, u16), Vec<u32>>,
    always: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    pub tag: Tag,
    rules: Vec<CRule>,
    index: Option<Index>,
}

impl Chain {
    fn build_index(rules: &[CRule]) -> Option<Index> {
        if rules.len() < INDEX_MIN_RULES {
            return None;
        }
        let mut ix = Index::default();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            let c = &r.cond;
            let plain = |f: ConditionField| !c.invert && c.inverted & bit(f) == 0;
            if let (Some(net), true) = (c.dst, plain(ConditionField::Dst)) {
                ix.by_dst.insert(net, i);
            } else if let (Some(net), true) = (c.src, plain(ConditionField::Src)) {
                ix.by_src.insert(net, i);
            } else if let Some(key) = single_port(c, c.dst_ports, ConditionField::DstPorts) {
                ix.by_dport.entry(key).or_default().push(i);
            } else if let Some(key) = single_port(c, c.src_ports, ConditionField::SrcPorts) {
                ix.by_sport.entry(key).or_default().push(i);
            } else {
                ix.always.push(i);
            }
        }
        Some(ix)
    }

    /// Rules that may match `p`, in order.
    fn candidates(&self, p: &Packet, out: &mut Vec<u32>) {
        out.clear();
        let Some(ix) = &self.index else {
            out.extend(0..self.rules.len() as u32);
            return;
        };
        out.extend_from_slice(&ix.always);
        if let Some(ip) = p.ip {
            ix.by_dst.collect(ip.dst, out);
            ix.by_src.collect(ip.src, out);
            if let (Some((sport, dport)), false) = (ip.l4, ip.proto == IPPROTO_ICMP) {
                if let Some(rules) = ix.by_dport.get(&(ip.proto, dport)) {
                    out.extend_from_slice(rules);
                }
                if let Some(rules) = ix.by_sport.get(&(ip.proto, sport)) {
                    out.extend_from_slice(rules);
                }
            }
        }
        out.sort_unstable();
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// All chains of a topology, compiled.
#[derive(Debug, Clone, Default)]
pub struct Chains {
    pub chains: Vec<Chain>,
    by_name: HashMap<String, ChainId>,
}

/// Resolves port names for conditions.
pub trait PortNames {
    fn port_id(&self, qualified: &str) -> Option<PortId>;
}

impl Chains {
    /// (first address, last address, ports) of every dynamic SNAT rule.
    pub fn dynamic_snat_ranges(&self) -> impl Iterator<Item = ([u8; 4], [u8; 4], (u16, u16))> + '_ {
        self.chains
            .iter()
            .flat_map(|c| c.rules.iter())
            .filter_map(|r| match &r.action {
                CAction::Nat(
                    Nat::Snat {
                        start,
                        end,
                        ports: Some(ports),
                        ..
                    },
                    _,
                ) => Some((*start, *end, *ports)),
                _ => None,
            })
    }

    /// Compiles the topology's chains and `generated` ones (from intents).
    pub fn compile(
        topology: &Topology,
        generated: &BTreeMap<String, Vec<Rule>>,
        ports: &dyn PortNames,
    ) -> Chains {
        let mut chains = Chains::default();
        let all = || topology.chains.iter().chain(generated.iter());
        for (name, _) in all() {
            chains.by_name.insert(name.clone(), chains.chains.len());
            chains.chains.push(Chain {
                name: name.clone(),
                tag: Tag::chain(name),
                rules: Vec::new(),
                index: None,
            });
        }
        let forwarded = Forwarded::of_rules(all().flat_map(|(_, rules)| rules.iter()));
        for (name, rules) in all() {
            let compiled: Vec<CRule> = rules
                .iter()
                .map(|r| compile_rule(r, topology, ports, &chains.by_name, &forwarded))
                .collect();
            let id = chains.by_name[name];
            chains.chains[id].index = Chain::build_index(&compiled);
            chains.chains[id].rules = compiled;
        }
        chains
    }

    pub fn id(&self, name: &str) -> Option<ChainId> {
        self.by_name.get(name).copied()
    }

    /// Evaluates chain `id` on `p`.
    pub fn evaluate(&self, id: ChainId, p: &mut Packet, env: &mut dyn Env) -> Verdict {
        let mut path = Vec::with_capacity(4);
        match self.eval(id, p, env, &mut path) {
            Some(v) => v,
            None => Verdict::Accept,
        }
    }

    /// `None`: the chain returned (or ended) without a decision.
    fn eval(
        &self,
        id: ChainId,
        p: &mut Packet,
        env: &mut dyn Env,
        path: &mut Vec<ChainId>,
    ) -> Option<Verdict> {
        let chain = &self.chains[id];
        env.depends_on(chain.tag);
        path.push(id);
        let mut candidates = Vec::new();
        chain.candidates(p, &mut candidates);
        let mut k = 0;
        let mut result = None;
        while k < candidates.len() {
            let i = candidates[k] as usize;
            k += 1;
            let rule = &chain.rules[i];
            if !rule.cond.matches(p, env) {
                continue;
            }
            match &rule.action {
                CAction::Accept => result = Some(Verdict::Accept),
                CAction::Drop => result = Some(Verdict::Drop),
                CAction::Reject(with) => result = Some(Verdict::Reject(*with)),
                CAction::Continue => continue,
                CAction::Return => break,
                CAction::Jump(target) => {
                    if path.contains(target) {
                        continue;
                    }
                    match self.eval(*target, p, env, path) {
                        Some(v) => result = Some(v),
                        None => continue,
                    }
                }
                CAction::Nat(nat, then) => match env.nat(p, nat) {
                    Err(reason) => result = Some(Verdict::Error(reason)),
                    Ok(false) => continue,
                    Ok(true) => {
                        match then {
                            FlowAction::Accept => result = Some(Verdict::Accept),
                            FlowAction::Return => break,
                            FlowAction::Continue => {
                                // The packet changed: the rest of the chain
                                // sees the rewritten one, so its candidates
                                // are recomputed (in rule order after `i`).
                                chain.candidates(p, &mut candidates);
                                candidates.retain(|&c| c as usize > i);
                                k = 0;
                                continue;
                            }
                        }
                    }
                },
            }
            if result.is_some() {
                break;
            }
        }
        path.pop();
        result
    }
}

fn compile_rule(
    rule: &Rule,
    topo: &Topology,
    ports: &dyn PortNames,
    chains: &HashMap<String, ChainId>,
    forwarded: &[Forwarded],
) -> CRule {
    let c = &rule.condition;
    let port_list = |refs: &Vec<vnet_model::PortRef>| -> Vec<PortId> {
        refs.iter()
            .filter_map(|r| ports.port_id(&format!("{}/{}", r.device, r.port)))
            .collect()
    };
    let group = |name: &String| {
        let addrs = topo
            .ip_groups
            .get(name)
            .map(|g| g.iter().map(|a| a.octets()).collect())
            .unwrap_or_default();
        (Tag::ip_group(name), addrs)
    };
    let mut inverted = 0;
    for f in &c.not {
        inverted |= bit(*f);
    }
    let cond = Cond {
        in_ports: (!c.in_ports.is_empty()).then(|| port_list(&c.in_ports)),
        out_ports: (!c.out_ports.is_empty()).then(|| port_list(&c.out_ports)),
        port_group: c.port_group.as_ref().map(|name| {
            let members = topo
                .port_groups
                .get(name)
                .map(|g| port_list(&g.ports))
                .unwrap_or_default();
            (Tag::port_group(name), members)
        }),
        ethertype: c.ethertype,
        eth_src: c.eth_src.map(|m| (m.addr.0, m.mask.0)),
        eth_dst: c.eth_dst.map(|m| (m.addr.0, m.mask.0)),
        proto: c.protocol.map(|p| p.0),
        tos: c.tos,
        src: c.src.map(|n| (u32::from(n.network()), n.prefix_len())),
        dst: c.dst.map(|n| (u32::from(n.network()), n.prefix_len())),
        src_group: c.src_group.as_ref().map(group),
        dst_group: c.dst_group.as_ref().map(group),
        src_ports: c.src_ports.map(|r| (r.start, r.end)),
        dst_ports: c.dst_ports.map(|r| (r.start, r.end)),
        icmp_type: c.icmp_type,
        icmp_code: c.icmp_code,
        conntrack: c.conntrack,
        dnat_rewritten: c.dnat_rewritten,
        fragments: c.fragments,
        inverted,
        invert: c.invert,
    };
    let range = |t: &vnet_model::NatTarget| {
        let ports = t.ports.filter(|p| !p.is_zero()).map(|p| (p.start, p.end));
        (t.ip.start.octets(), t.ip.end.octets(), ports)
    };
    let action = match &rule.action {
        Action::Accept => CAction::Accept,
        Action::Drop => CAction::Drop,
        Action::Reject { with } => CAction::Reject(*with),
        Action::Continue => CAction::Continue,
        Action::Return => CAction::Return,
        // Validation rejects unknown jump targets; one that still does not
        // resolve is treated as a rule that does nothing.
        Action::Jump { chain } => chains
            .get(chain)
            .map(|&id| CAction::Jump(id))
            .unwrap_or(CAction::Continue),
        Action::Dnat { to, then } => {
            let (start, end, ports) = range(to);
            let match_ports = c.dst_ports.map(|r| (r.start, r.end));
            CAction::Nat(
                Nat::Dnat {
                    start,
                    end,
                    ports,
                    match_ports,
                },
                *then,
            )
        }
        Action::Snat { to, then } => {
            let (start, end, ports) = range(to);
            // A dynamic SNAT keeps the DNAT rules that own something of its
            // addresses (a static one allocates nothing).
            let (lo, hi) = (u32::from_be_bytes(start), u32::from_be_bytes(end));
            let forwarded = match ports {
                None => Vec::new(),
                Some(_) => forwarded
                    .iter()
                    .filter(|f| match f.dst {
                        None => true,
                        Some((net, len)) => net <= hi.max(lo) && (net | !mask(len)) >= lo,
                    })
                    .copied()
                    .collect(),
            };
            CAction::Nat(
                Nat::Snat {
                    start,
                    end,
                    ports,
                    forwarded,
                },
                *then,
            )
        }
        Action::RevDnat { then } => CAction::Nat(Nat::RevDnat, *then),
        Action::RevSnat { then } => CAction::Nat(Nat::RevSnat, *then),
    };
    CRule { cond, action }
}
