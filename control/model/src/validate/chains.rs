//! Chains, rules, conditions and the groups conditions refer to.

use std::collections::{BTreeMap, BTreeSet};

use super::{FirstSeen, Validator};
use crate::model::*;

impl Validator<'_> {
    pub(super) fn chains(&mut self) {
        let topo = self.topo;
        for (name, rules) in &topo.chains {
            let path = format!("chains.{name}");
            self.name(&path, name);
            for (i, rule) in rules.iter().enumerate() {
                self.rule(&format!("{path}[{i}]"), rule);
            }
        }
        self.jump_cycles();
    }

    fn rule(&mut self, path: &str, rule: &Rule) {
        match &rule.action {
            Action::Jump { chain } if !self.topo.chains.contains_key(chain) => self.err(
                format!("{path}.chain"),
                format!("no chain named `{chain}`; define it under chains"),
            ),
            Action::Dnat { to, .. } | Action::Snat { to, .. } => {
                self.ip_range(format!("{path}.to.ip"), &to.ip);
                if let Some(ports) = &to.ports {
                    self.nat_ports(format!("{path}.to.ports"), ports);
                }
            }
            _ => {}
        }
        self.condition(&format!("{path}.match"), &rule.condition);
    }

    fn condition(&mut self, path: &str, c: &Condition) {
        for (k, p) in c.in_ports.iter().enumerate() {
            self.port_ref(format!("{path}.in_ports[{k}]"), p);
        }
        for (k, p) in c.out_ports.iter().enumerate() {
            self.port_ref(format!("{path}.out_ports[{k}]"), p);
        }
        if let Some(g) = &c.port_group {
            if !self.topo.port_groups.contains_key(g) {
                self.err(
                    format!("{path}.port_group"),
                    format!("no port group named `{g}`; define it under port_groups"),
                );
            }
        }
        for (field, group) in [("src_group", &c.src_group), ("dst_group", &c.dst_group)] {
            if let Some(g) = group {
                if !self.topo.ip_groups.contains_key(g) {
                    self.err(
                        format!("{path}.{field}"),
                        format!("no IP group named `{g}`; define it under ip_groups"),
                    );
                }
            }
        }
        if let Some(et) = c.ethertype {
            // Below 0x0600 the field is an 802.3 length, never a type.
            if et < 0x0600 {
                self.err(
                    format!("{path}.ethertype"),
                    format!("{et:#06x} is a frame length, not an EtherType; EtherTypes start at 0x0600 (IPv4 is 0x0800)"),
                );
            }
        }
        if let Some(src) = &c.src {
            self.network(format!("{path}.src"), src);
        }
        if let Some(dst) = &c.dst {
            self.network(format!("{path}.dst"), dst);
        }

        // A protocol that only this rule's own `not` inverts says nothing
        // certain about the packet, so only a plain protocol is checked.
        let protocol = c
            .protocol
            .filter(|_| !c.is_inverted(ConditionField::Protocol));
        for (field, ports) in [("src_ports", &c.src_ports), ("dst_ports", &c.dst_ports)] {
            let Some(ports) = ports else { continue };
            let fpath = format!("{path}.{field}");
            self.port_range(&fpath, ports);
            match protocol {
                Some(Protocol::ICMP) => self.err(
                    &fpath,
                    "ICMP has no ports; match icmp_type and icmp_code instead",
                ),
                Some(p) if !p.has_ports() => self.err(
                    &fpath,
                    format!("protocol {p} has no ports; ports apply to tcp and udp"),
                ),
                _ => {}
            }
        }
        for (field, value) in [("icmp_type", c.icmp_type), ("icmp_code", c.icmp_code)] {
            if value.is_some() && protocol != Some(Protocol::ICMP) {
                self.err(
                    format!("{path}.{field}"),
                    format!("{field} needs protocol: icmp in the same condition"),
                );
            }
        }

        let mut seen = BTreeSet::new();
        for (k, field) in c.not.iter().enumerate() {
            let fpath = format!("{path}.not[{k}]");
            let name = field.name();
            if !seen.insert(*field) {
                self.err(&fpath, format!("{name} is listed twice"));
            } else if *field == ConditionField::Fragments {
                self.err(
                    &fpath,
                    "fragments cannot be inverted; choose the fragment policy you want instead",
                );
            } else if !c.is_set(*field) {
                self.err(
                    &fpath,
                    format!("{name} is not set in this condition, so there is nothing to invert; set {name} or remove it from not"),
                );
            }
        }
    }

    /// Chains jumping into each other in a circle would loop; report each
    /// cycle once, at the jump that closes it.
    fn jump_cycles(&mut self) {
        let topo = self.topo;
        // chain -> [(rule index, target)]
        let edges: BTreeMap<&str, Vec<(usize, &str)>> = topo
            .chains
            .iter()
            .map(|(name, rules)| {
                let jumps = rules
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| match &r.action {
                        Action::Jump { chain } if topo.chains.contains_key(chain) => {
                            Some((i, chain.as_str()))
                        }
                        _ => None,
                    })
                    .collect();
                (name.as_str(), jumps)
            })
            .collect();

        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Unseen,
            OnPath,
            Done,
        }
        let mut mark: BTreeMap<&str, Mark> = edges.keys().map(|k| (*k, Mark::Unseen)).collect();
        for start in edges.keys() {
            if mark[start] != Mark::Unseen {
                continue;
            }
            // Iterative DFS: a deep chain of jumps must not overflow the stack.
            let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
            mark.insert(start, Mark::OnPath);
            while let Some(top) = stack.last_mut() {
                let (node, next) = *top;
                let Some(&(rule, target)) = edges[node].get(next) else {
                    mark.insert(node, Mark::Done);
                    stack.pop();
                    continue;
                };
                top.1 += 1;
                match mark[target] {
                    Mark::Unseen => {
                        mark.insert(target, Mark::OnPath);
                        stack.push((target, 0));
                    }
                    Mark::OnPath => {
                        let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(target);
                        self.err(
                            format!("chains.{node}[{rule}].chain"),
                            format!(
                                "jump to {target} closes a cycle ({}); chains must not jump back into themselves",
                                cycle.join(" → ")
                            ),
                        );
                    }
                    Mark::Done => {}
                }
            }
        }
    }

    pub(super) fn groups(&mut self) {
        let topo = self.topo;
        for (name, addrs) in &topo.ip_groups {
            let path = format!("ip_groups.{name}");
            self.name(&path, name);
            let mut seen = FirstSeen::new();
            for (k, addr) in addrs.iter().enumerate() {
                if let Some(first) = seen.check(*addr, format!("{path}[{k}]")) {
                    let msg = format!("{addr} is already listed at {first}");
                    self.err(format!("{path}[{k}]"), msg);
                }
            }
        }
        for (name, group) in &topo.port_groups {
            let path = format!("port_groups.{name}");
            self.name(&path, name);
            let mut seen = FirstSeen::new();
            for (k, port) in group.ports.iter().enumerate() {
                let ppath = format!("{path}.ports[{k}]");
                self.port_ref(&ppath, port);
                if let Some(first) = seen.check(port.clone(), ppath.clone()) {
                    let msg = format!("{port} is already listed at {first}");
                    self.err(&ppath, msg);
                }
            }
        }
    }
}
