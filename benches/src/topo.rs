//! Generated topologies for the scale runs and for the benchmarks that wait
//! on rule chains and NAT.
//!
//! All of them are topology files (YAML) checked by the same validation as
//! `vnetd --check`, so a scale figure includes parsing and validation when
//! it says "full load".

use std::fmt::Write as _;

/// A big topology: `bridges` tenant bridges of `vms` VM ports each, every
/// bridge linked to one core router that routes between them, so
/// `bridges * (vms + 1)` bridge ports plus `bridges` router ports. 100
/// bridges of 99 VMs make the 10 000-port topology of PERFORMANCE.md
/// (10 000 bridge ports, 100 router ports). Bridge `b` is subnet
/// 10.`b`.0.0/16 (so at most 255 bridges).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub bridges: usize,
    pub vms: usize,
    /// VM `v` of bridge `b` names host interface `t{b}v{v}` (which need not
    /// exist to compile a snapshot; vnetd reports it unbound). Otherwise
    /// VM ports name no interface: ports of VMs that are not on this host,
    /// or not plugged yet.
    pub name_interfaces: bool,
    /// t0/vm0 is administratively down: the one change the scale run times.
    pub vm0_down: bool,
    /// t0/vm0 and t0/vm1 are bound to vm1-h and vm2-h, the interfaces of a
    /// harness lane (`crate::lane`), so traffic can cross bridge t0.
    pub lane: bool,
}

impl Ports {
    pub fn new(bridges: usize, vms: usize) -> Ports {
        Ports {
            bridges: bridges.min(255),
            vms,
            name_interfaces: false,
            vm0_down: false,
            lane: false,
        }
    }

    pub fn yaml(&self) -> String {
        let mut y = String::from("version: 1\nbridges:\n");
        for b in 0..self.bridges {
            let _ = writeln!(y, "  t{b}:\n    ports:");
            for v in 0..self.vms {
                let mut fields = Vec::new();
                match (self.lane && b == 0, v) {
                    // The lane measures the XDP executor (`auto` is tc on a veth).
                    (true, 0) => fields.push("interface: vm1-h, executor: xdp".to_string()),
                    (true, 1) => fields.push("interface: vm2-h, executor: xdp".to_string()),
                    _ if self.name_interfaces => fields.push(format!("interface: t{b}v{v}")),
                    _ => {}
                }
                if self.vm0_down && b == 0 && v == 0 {
                    fields.push("up: false".into());
                }
                let _ = writeln!(y, "      vm{v}: {{{}}}", fields.join(", "));
            }
            let _ = writeln!(y, "      gw: {{peer: core/t{b}}}");
        }
        y.push_str("routers:\n  core:\n    ports:\n");
        for b in 0..self.bridges {
            let _ = writeln!(y, "      t{b}: {{address: 10.{b}.0.1/16, peer: t{b}/gw}}");
        }
        y.push_str("    routes:\n");
        for b in 0..self.bridges {
            let _ = writeln!(y, "      - {{dst: 10.{b}.0.0/16, port: t{b}}}");
        }
        y
    }
}

/// What the rules of a generated chain look like to the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainKind {
    /// Rule `i` drops UDP to host 10.(100 + i / 65536).(i / 256 % 256).(i %
    /// 256)/32, which the measured packet (to 10.2.0.10) never is: every
    /// rule is indexed by its destination prefix, as a firewall's host
    /// rules are, so a packet's candidates are a few hash probes away.
    Indexed,
    /// Rule `i` drops UDP from source ports 10000 + i and the next one (which
    /// the measured packet, from a port below 10000, never has): a port
    /// range, which the classifier does not index (it indexes single ports),
    /// so every rule is a candidate — the worst case, a linear scan.
    Unindexed,
}

impl ChainKind {
    pub fn name(self) -> &'static str {
        match self {
            ChainKind::Indexed => "indexed",
            ChainKind::Unindexed => "unindexed",
        }
    }
}

/// Source NAT address of [`routed_snat_chain_topology`] (outside the
/// router's own addresses; the router answers ARP for it).
pub const SNAT_IP: [u8; 4] = [10, 2, 0, 100];

/// The routed fixture (`crate::ROUTED_TOPOLOGY`) with SNAT of red
/// (10.1.0.0/24) to [`SNAT_IP`] when leaving by r1's `blue` port (a `nat`
/// intent, compiled into r1's chains), and, when `rules` > 0, r1's inbound
/// filter a chain of `rules` rules of `kind` that the measured packets (UDP
/// from vm1, source ports below 10000, to vm2) all walk and none matches
/// but the last, which accepts.
///
/// "router + SNAT + N rules" of PERFORMANCE.md, for the simulation benches
/// and the throughput harness's routed+snat path.
pub fn routed_snat_chain_topology(rules: usize, kind: ChainKind) -> String {
    let mut y = String::from(
        r#"version: 1
bridges:
  red:
    ports:
      vm1: {interface: vm1-h}
      gw: {peer: r1/red}
  blue:
    ports:
      vm2: {interface: vm2-h}
      gw: {peer: r1/blue}
routers:
  r1:
"#,
    );
    if rules > 0 {
        y.push_str("    inbound_filter: fw\n");
    }
    y.push_str(
        r#"    ports:
      red: {address: 10.1.0.1/24, peer: red/gw}
      blue: {address: 10.2.0.1/24, peer: blue/gw}
    routes:
      - {dst: 10.1.0.0/24, port: red}
      - {dst: 10.2.0.0/24, port: blue}
nat:
  - {router: r1, type: snat, from: 10.1.0.0/24, to: 10.2.0.100, ports: 1024-65535, port: blue}
"#,
    );
    if rules > 0 {
        y.push_str("chains:\n  fw:\n");
        for i in 0..rules.saturating_sub(1) {
            let _ = match kind {
                ChainKind::Indexed => writeln!(
                    y,
                    "    - {{action: drop, match: {{protocol: udp, dst: 10.{}.{}.{}/32}}}}",
                    100 + i / 65_536,
                    i / 256 % 256,
                    i % 256
                ),
                ChainKind::Unindexed => {
                    writeln!(
                        y,
                        "    - {{action: drop, match: {{protocol: udp, src_ports: {}-{}}}}}",
                        10_000 + i % 55_000,
                        10_001 + i % 55_000
                    )
                }
            };
        }
        y.push_str("    - {action: accept}\n");
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_topologies_validate() {
        let base = Ports::new(3, 4);
        let t = vnet_model::load_str(&base.yaml()).unwrap();
        assert_eq!(t.bridges.len(), 3);
        for p in [
            Ports {
                name_interfaces: true,
                ..base
            },
            Ports {
                vm0_down: true,
                ..base
            },
            Ports {
                lane: true,
                vm0_down: true,
                name_interfaces: true,
                ..base
            },
        ] {
            let y = p.yaml();
            vnet_model::load_str(&y).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert_ne!(y, base.yaml());
        }
        let lane = Ports {
            lane: true,
            vm0_down: true,
            ..base
        }
        .yaml();
        assert!(
            lane.contains("vm0: {interface: vm1-h, executor: xdp, up: false}")
                && lane.contains("vm1: {interface: vm2-h, executor: xdp}")
        );
        for kind in [ChainKind::Indexed, ChainKind::Unindexed] {
            for n in [0, 1, 10, 100] {
                vnet_model::load_str(&routed_snat_chain_topology(n, kind))
                    .unwrap_or_else(|e| panic!("{n} rules: {e}"));
            }
        }
    }
}
