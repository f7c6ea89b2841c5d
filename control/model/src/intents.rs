//! Compiles the high-level `nat` and `firewall` intents into rule chains on
//! their routers, as MidoNet's API compiled CloudStack and Neutron requests.
//!
//! Per router, the generated chains run before the router's own filters
//! (they may be combined with hand-written chains), in this order:
//!
//! pre-routing (inbound):
//! - `fw:R` — per firewalled public address P: replies of connections opened
//!   from inside pass; each `allow` passes; everything else to P is dropped.
//! - `nat-in:R` — floating IPs (static DNAT P → private), port forwards
//!   (DNAT P:ports → private:ports, offset-preserving), reverse SNAT for the
//!   SNAT addresses and for hairpin translations to router port addresses.
//!
//! post-routing (outbound):
//! - `nat-out:R` — reverse DNAT of port-forward replies; hairpin SNAT (a
//!   packet DNAT'ed back out of the port it came in by is SNAT'ed to that
//!   port's address, so the reply comes back through the router); the
//!   hairpin reply of a floating IP's private address leaves as the public
//!   one; floating IPs (static SNAT private → P) and SNAT of subnets, both
//!   only out of the intent's port.
//! - `fw-out:R` — tracks connections leaving from a firewalled address, so
//!   their replies are recognised by `fw:R`.
//!
//! Generated chain names contain ':', which user chain names cannot.
use crate::model::*;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Router → generated chains run before its inbound filter.
    pub pre_routing: BTreeMap<String, Vec<String>>,
    /// Router → generated chains run before its outbound filter.
    pub post_routing: BTreeMap<String, Vec<String>>,
    /// (router, port) → NAT addresses the router owns there (answers ARP
    /// for them, even outside the port's subnet, and answers ping).
    pub owned: BTreeMap<(String, String), Vec<Ipv4Addr>>,
}

fn host(a: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(a, 32).expect("/32 is a valid prefix")
}

fn port_ref(router: &str, port: &str) -> PortRef {
    PortRef {
        device: router.to_string(),
        port: port.to_string(),
    }
}

fn rule(action: Action, condition: Condition) -> Rule {
    Rule { action, condition }
}

fn static_nat(ip: Ipv4Addr) -> NatTarget {
    NatTarget {
        ip: Ipv4Range::single(ip),
        ports: None,
    }
}

const HAIRPIN_PORTS: PortRange = PortRange {
    start: 1024,
    end: 65535,
};

pub fn compile(t: &Topology) -> Compiled {
    let mut out = Compiled::default();
    for (rname, router) in &t.routers {
        let nats: Vec<&NatIntent> = t.nat.iter().filter(|n| n.router() == rname).collect();
        let fws: Vec<&FirewallIntent> = t.firewall.iter().filter(|f| &f.router == rname).collect();
        if nats.is_empty() && fws.is_empty() {
            continue;
        }
        let uplink = |p: &str| vec![port_ref(rname, p)];
        // Router ports whose subnet holds a private address of a floating
        // IP or port forward: hairpin traffic comes back out of them.
        let tenant_ports: Vec<(&String, &RouterPort)> = router
            .ports
            .iter()
            .filter(|(_, p)| {
                nats.iter().any(|n| match n {
                    NatIntent::FloatingIp(f) => p.address.contains(&f.private),
                    NatIntent::PortForward(f) => p.address.contains(&f.private),
                    NatIntent::Snat(_) => false,
                })
            })
            .collect();

        // --- firewall -------------------------------------------------
        let mut fw_in = Vec::new();
        let mut fw_out = Vec::new();
        for fw in &fws {
            let dst = Some(host(fw.public));
            // The ports the public address is used on; any port if none.
            let in_ports: Vec<PortRef> = nats
                .iter()
                .filter(|n| public_of(n).contains(&fw.public))
                .map(|n| port_ref(rname, n.port()))
                .collect();
            let base = Condition {
                dst,
                in_ports: in_ports.clone(),
                ..Default::default()
            };
            fw_in.push(rule(
                Action::Accept,
                Condition {
                    conntrack: Some(ConnState::Return),
                    ..base.clone()
                },
            ));
            for allow in &fw.allow {
                let c = Condition {
                    protocol: allow.protocol,
                    dst_ports: allow.ports,
                    src: allow.from,
                    ..base.clone()
                };
                fw_in.push(rule(Action::Accept, c));
            }
            fw_in.push(rule(Action::Drop, base));
            let track = Condition {
                src: Some(host(fw.public)),
                conntrack: Some(ConnState::Forward),
                ..Default::default()
            };
            fw_out.push(rule(Action::Continue, track));
        }

        // --- NAT --------------------------------------------------------
        // Within each chain the specific translations come first: DNAT of
        // floating IPs and port forwards before reverse SNAT (a port forward
        // may use the SNAT address), floating IPs before subnet SNAT (a
        // floating IP's guest is inside the SNAT'ed subnet).
        let mut nat_in = Vec::new();
        let mut nat_in_rev = Vec::new();
        let mut nat_out_rev = Vec::new();
        let mut nat_out = Vec::new();
        let mut nat_out_snat = Vec::new();
        for n in &nats {
            match n {
                NatIntent::FloatingIp(FloatingIpIntent {
                    public,
                    private,
                    port,
                    ..
                }) => {
                    nat_in.push(rule(
                        Action::Dnat {
                            to: static_nat(*private),
                            then: FlowAction::Accept,
                        },
                        Condition {
                            dst: Some(host(*public)),
                            ..Default::default()
                        },
                    ));
                    nat_out.push(rule(
                        Action::Snat {
                            to: static_nat(*public),
                            then: FlowAction::Accept,
                        },
                        Condition {
                            src: Some(host(*private)),
                            out_ports: uplink(port),
                            ..Default::default()
                        },
                    ));
                }
                NatIntent::PortForward(PortForwardIntent {
                    protocol,
                    public,
                    public_ports,
                    private,
                    private_ports,
                    ..
                }) => {
                    let proto = Some(*protocol);
                    nat_in.push(rule(
                        Action::Dnat {
                            to: NatTarget {
                                ip: Ipv4Range::single(*private),
                                ports: Some(*private_ports),
                            },
                            then: FlowAction::Accept,
                        },
                        Condition {
                            dst: Some(host(*public)),
                            protocol: proto,
                            dst_ports: Some(*public_ports),
                            ..Default::default()
                        },
                    ));
                    nat_out_rev.push(rule(
                        Action::RevDnat {
                            then: FlowAction::Continue,
                        },
                        Condition {
                            src: Some(host(*private)),
                            protocol: proto,
                            src_ports: Some(*private_ports),
                            ..Default::default()
                        },
                    ));
                }
                NatIntent::Snat(SnatIntent {
                    from,
                    to,
                    ports,
                    port,
                    ..
                }) => {
                    let target = NatTarget {
                        ip: *to,
                        ports: Some(ports.unwrap_or(HAIRPIN_PORTS)),
                    };
                    nat_out_snat.push(rule(
                        Action::Snat {
                            to: target,
                            then: FlowAction::Accept,
                        },
                        Condition {
                            src: Some(*from),
                            out_ports: uplink(port),
                            ..Default::default()
                        },
                    ));
                    for addr in range_addrs(to) {
                        nat_in_rev.push(rule(
                            Action::RevSnat {
                                then: FlowAction::Accept,
                            },
                            Condition {
                                dst: Some(host(addr)),
                                ..Default::default()
                            },
                        ));
                    }
                }
            }
        }
        let mut hairpin = Vec::new();
        for (pname, p) in &tenant_ports {
            let here = uplink(pname);
            let addr = p.address.addr();
            hairpin.push(rule(
                Action::Snat {
                    to: NatTarget {
                        ip: Ipv4Range::single(addr),
                        ports: Some(HAIRPIN_PORTS),
                    },
                    then: FlowAction::Accept,
                },
                Condition {
                    in_ports: here.clone(),
                    out_ports: here.clone(),
                    dnat_rewritten: Some(true),
                    ..Default::default()
                },
            ));
            nat_in_rev.push(rule(
                Action::RevSnat {
                    then: FlowAction::Accept,
                },
                Condition {
                    dst: Some(host(addr)),
                    in_ports: here.clone(),
                    ..Default::default()
                },
            ));
            for n in &nats {
                if let NatIntent::FloatingIp(FloatingIpIntent {
                    public, private, ..
                }) = n
                {
                    if p.address.contains(private) {
                        hairpin.push(rule(
                            Action::Snat {
                                to: static_nat(*public),
                                then: FlowAction::Accept,
                            },
                            Condition {
                                in_ports: here.clone(),
                                out_ports: here.clone(),
                                src: Some(host(*private)),
                                ..Default::default()
                            },
                        ));
                    }
                }
            }
        }

        let mut pre = Vec::new();
        let mut post = Vec::new();
        let mut add = |name: String, rules: Vec<Rule>, list: &mut Vec<String>| {
            if !rules.is_empty() {
                out.chains.insert(name.clone(), rules);
                list.push(name);
            }
        };
        add(format!("fw:{rname}"), fw_in, &mut pre);
        add(
            format!("nat-in:{rname}"),
            [nat_in, nat_in_rev].concat(),
            &mut pre,
        );
        add(
            format!("nat-out:{rname}"),
            [nat_out_rev, hairpin, nat_out, nat_out_snat].concat(),
            &mut post,
        );
        add(format!("fw-out:{rname}"), fw_out, &mut post);
        out.pre_routing.insert(rname.clone(), pre);
        out.post_routing.insert(rname.clone(), post);

        for n in &nats {
            let owned = out
                .owned
                .entry((rname.clone(), n.port().to_string()))
                .or_default();
            owned.extend(public_of(n));
        }
        for list in out.owned.values_mut() {
            list.sort();
            list.dedup();
        }
    }
    out
}

/// The addresses of a range (bounded: validation keeps ranges small).
fn range_addrs(r: &Ipv4Range) -> impl Iterator<Item = Ipv4Addr> {
    let (a, b) = (u32::from(r.start), u32::from(r.end));
    (a..=b.max(a)).take(65_536).map(Ipv4Addr::from)
}

/// The public addresses an intent uses.
fn public_of(n: &NatIntent) -> Vec<Ipv4Addr> {
    match n {
        NatIntent::Snat(s) => range_addrs(&s.to).collect(),
        NatIntent::FloatingIp(f) => vec![f.public],
        NatIntent::PortForward(f) => vec![f.public],
    }
}
