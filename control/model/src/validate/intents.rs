//! NAT and firewall intents.

use super::{FirstSeen, Validator};
use crate::model::*;

impl Validator<'_> {
    /// The router and port an intent names must exist.
    fn intent_target(&mut self, path: &str, router: &str, port: Option<&str>) {
        let Some(r) = self.topo.routers.get(router) else {
            self.err(
                format!("{path}.router"),
                format!("no router named `{router}`"),
            );
            return;
        };
        if let Some(port) = port {
            if !r.ports.contains_key(port) {
                self.err(
                    format!("{path}.port"),
                    format!("router {router} has no port `{port}`"),
                );
            }
        }
    }

    pub(super) fn nat(&mut self) {
        let topo = self.topo;
        // (router, address) -> first intent that maps it, to catch an
        // address translated two ways.
        let mut publics = FirstSeen::new();
        let mut privates = FirstSeen::new();
        let mut forwards: Vec<(usize, &PortForwardIntent)> = Vec::new();
        for (i, intent) in topo.nat.iter().enumerate() {
            let path = format!("nat[{i}]");
            self.intent_target(&path, intent.router(), Some(intent.port()));
            match intent {
                NatIntent::Snat(n) => {
                    self.network(format!("{path}.from"), &n.from);
                    self.ip_range(format!("{path}.to"), &n.to);
                    if let Some(ports) = &n.ports {
                        self.nat_ports(format!("{path}.ports"), ports);
                    }
                }
                NatIntent::FloatingIp(n) => {
                    if self.unicast(format!("{path}.public"), n.public) {
                        if let Some(first) =
                            publics.check((n.router.as_str(), n.public), format!("nat[{i}]"))
                        {
                            let msg = format!(
                                "{} is already a public address of {first} on router {}; a floating IP maps all of an address",
                                n.public, n.router
                            );
                            self.err(format!("{path}.public"), msg);
                        }
                    }
                    if self.unicast(format!("{path}.private"), n.private) {
                        if let Some(first) =
                            privates.check((n.router.as_str(), n.private), format!("nat[{i}]"))
                        {
                            let msg = format!(
                                "{} already has a floating IP in {first}; give each private address one",
                                n.private
                            );
                            self.err(format!("{path}.private"), msg);
                        }
                    }
                }
                NatIntent::PortForward(n) => {
                    self.port_forward(&path, n);
                    forwards.push((i, n));
                }
            }
        }
        // Checked after the loop so that a floating IP listed after a port
        // forward on the same address is caught too.
        for (i, n) in &forwards {
            if let Some(first) = publics.0.get(&(n.router.as_str(), n.public)) {
                self.err(
                    format!("nat[{i}].public"),
                    format!(
                        "{} is the floating IP of {first}, which already forwards every port; forward ports of another address",
                        n.public
                    ),
                );
            }
        }
        for (b, (j, nj)) in forwards.iter().enumerate() {
            let clash = forwards[..b].iter().find(|(_, ni)| {
                ni.router == nj.router
                    && ni.public == nj.public
                    && ni.protocol == nj.protocol
                    && ni.public_ports.overlaps(&nj.public_ports)
            });
            if let Some((i, ni)) = clash {
                self.err(
                    format!("nat[{j}].public_ports"),
                    format!(
                        "{} {}:{} overlaps nat[{i}] ({}); a public port can be forwarded once",
                        nj.protocol, nj.public, nj.public_ports, ni.public_ports
                    ),
                );
            }
        }
    }

    fn port_forward(&mut self, path: &str, n: &PortForwardIntent) {
        if !n.protocol.has_ports() {
            self.err(
                format!("{path}.protocol"),
                format!(
                    "cannot forward ports of protocol {}; use tcp or udp",
                    n.protocol
                ),
            );
        }
        self.unicast(format!("{path}.public"), n.public);
        self.unicast(format!("{path}.private"), n.private);
        self.port_range(format!("{path}.public_ports"), &n.public_ports);
        self.port_range(format!("{path}.private_ports"), &n.private_ports);
        let (public, private) = (n.public_ports.len(), n.private_ports.len());
        if public > 0 && private > 0 && public != private {
            self.err(
                format!("{path}.private_ports"),
                format!(
                    "{} has {private} ports but public_ports {} has {public}; ranges are mapped offset by offset, so give both the same size",
                    n.private_ports, n.public_ports
                ),
            );
        }
    }

    pub(super) fn firewall(&mut self) {
        let topo = self.topo;
        let mut seen = FirstSeen::new();
        for (i, fw) in topo.firewall.iter().enumerate() {
            let path = format!("firewall[{i}]");
            self.intent_target(&path, &fw.router, None);
            if self.unicast(format!("{path}.public"), fw.public) {
                if let Some(first) = seen.check((fw.router.as_str(), fw.public), path.clone()) {
                    let msg = format!(
                        "{first} already guards {} on router {}; merge the allow lists into one entry",
                        fw.public, fw.router
                    );
                    self.err(format!("{path}.public"), msg);
                }
            }
            for (j, allow) in fw.allow.iter().enumerate() {
                let apath = format!("{path}.allow[{j}]");
                if let Some(from) = &allow.from {
                    self.network(format!("{apath}.from"), from);
                }
                if let Some(ports) = &allow.ports {
                    self.port_range(format!("{apath}.ports"), ports);
                    match allow.protocol {
                        Some(p) if p.has_ports() => {}
                        Some(p) => self.err(
                            format!("{apath}.ports"),
                            format!("protocol {p} has no ports; ports apply to tcp and udp"),
                        ),
                        None => self.err(
                            format!("{apath}.ports"),
                            "ports need a protocol: add protocol: tcp or protocol: udp",
                        ),
                    }
                }
            }
        }
    }
}
