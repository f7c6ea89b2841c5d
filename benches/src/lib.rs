//! Fixtures shared by the criterion suites (`benches/benches/*.rs`) and the
//! harnesses (`src/bin/throughput`, `src/bin/scale.rs`): the frames, the
//! topologies and the simulation state every figure of
//! `../shared/design/PERFORMANCE.md` is measured on, so that a criterion
//! figure and a harness figure describe the same packet.
//!
//! Nothing here measures anything; see `benches/RESULTS.md` for the figures
//! and the commands that produce them.
pub mod lane;
pub mod sys;
pub mod topo;
pub mod xdp;

use vnet_common::{act, FlowActions, FlowKey};
use vnet_dataplane::packet::{self, build, Mac, ARP_REPLY};
use vnet_dataplane::sim::{self, Decision, PortId, Snapshot, State, Verdict};

/// Guests' MACs and addresses, the same in every fixture.
pub const VM1_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x01];
pub const VM2_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x02];
/// Bridged fixture: one subnet.
pub const BR_VM1: [u8; 4] = [10, 0, 0, 11];
pub const BR_VM2: [u8; 4] = [10, 0, 0, 12];
/// Routed fixture: vm1 in red 10.1.0.0/24, vm2 in blue 10.2.0.0/24.
pub const RT_VM1: [u8; 4] = [10, 1, 0, 10];
pub const RT_VM2: [u8; 4] = [10, 2, 0, 10];
pub const RT_GW1: [u8; 4] = [10, 1, 0, 1];
pub const RT_GW2: [u8; 4] = [10, 2, 0, 1];

/// Size of the frames of every throughput and per-packet figure.
pub const FRAME_LEN: usize = 64;

/// Fixed clock of the simulation fixtures (ns). Constant so that no entry
/// ages or goes stale while a benchmark repeats a decision.
pub const NOW_NS: u64 = 1_000_000_000;

/// One subnet: a bridge with vm1 and vm2 (host interfaces vm1-h, vm2-h);
/// the end-to-end tests' fixture.
pub const BRIDGED_TOPOLOGY: &str = include_str!("../../tests/fixtures/two-guests.yaml");

/// Two subnets joined by a router: red (vm1) → r1 → blue (vm2):
/// `examples/router.yaml` itself.
pub const ROUTED_TOPOLOGY: &str = include_str!("../../examples/router.yaml");

/// A UDP frame of exactly [`FRAME_LEN`] bytes with a correct checksum.
pub fn udp64(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    // 14 Ethernet + 20 IPv4 + 8 UDP + 22 payload.
    build::udp_frame(
        src_mac,
        dst_mac,
        src,
        dst,
        sport,
        dport,
        &[0x5a; FRAME_LEN - 42],
    )
}

/// [`udp64`] with UDP checksum 0 ("none", RFC 768), for frames whose ports
/// the generator rewrites per frame.
pub fn udp64_no_checksum(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut f = udp64(src_mac, dst_mac, src, dst, sport, dport);
    f[packet::ETH_HLEN + 20 + 6] = 0;
    f[packet::ETH_HLEN + 20 + 7] = 0;
    f
}

/// The flow key of `frame` on `ifindex`, as the kernel computes it.
pub fn key_of(frame: &[u8], ifindex: u32) -> Option<FlowKey> {
    packet::parse(frame).ok()?.flow_key(ifindex)
}

/// Actions of an established bridged flow: output only.
pub fn bridged_actions(out_ifindex: u32) -> FlowActions {
    FlowActions {
        flags: act::OUTPUT,
        out_ifindex,
        ..FlowActions::default()
    }
}

/// A compiled topology with its state, ready to simulate.
pub struct SimFixture {
    pub snap: Snapshot,
    pub state: State,
    /// Port the measured frame enters on.
    pub in_port: PortId,
    /// The measured frame.
    pub frame: Vec<u8>,
}

impl SimFixture {
    /// Simulates the measured frame once.
    pub fn decide(&mut self) -> Decision {
        sim::simulate(
            &self.snap,
            &mut self.state,
            self.in_port,
            &self.frame,
            NOW_NS,
            false,
        )
    }

    fn port(snap: &Snapshot, name: &str) -> Result<PortId, String> {
        snap.port_by_name(name)
            .ok_or_else(|| format!("the fixture topology has no port {name}"))
    }

    /// Bridged, known unicast: vm2's MAC was learned, vm1 sends to it.
    pub fn bridged() -> Result<SimFixture, String> {
        let topo = vnet_model::load_str(BRIDGED_TOPOLOGY).map_err(|e| e.to_string())?;
        let snap = Snapshot::compile(&topo, 1);
        let (vm1, vm2) = (
            Self::port(&snap, "tenant/vm1")?,
            Self::port(&snap, "tenant/vm2")?,
        );
        let mut state = State::default();
        // vm2 speaks first: the bridge learns its MAC (the frame floods).
        let hello = udp64(VM2_MAC, VM1_MAC, BR_VM2, BR_VM1, 7000, 7000);
        sim::simulate(&snap, &mut state, vm2, &hello, NOW_NS, false);
        let mut f = SimFixture {
            snap,
            state,
            in_port: vm1,
            frame: udp64(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 5000, 6000),
        };
        f.expect_installed_forward("bridged known unicast")?;
        Ok(f)
    }

    /// Routed, bridge → router → bridge, ARP for vm2 resolved.
    pub fn routed() -> Result<SimFixture, String> {
        let topo = vnet_model::load_str(ROUTED_TOPOLOGY).map_err(|e| e.to_string())?;
        let mut f = Self::routed_from(&topo)?;
        f.expect_installed_forward("routed, ARP resolved")?;
        Ok(f)
    }

    /// vm1 → vm2 across r1 (red/vm1 to blue/vm2) on `topo`, with r1 having
    /// resolved vm2: the first packet makes r1 ask, vm2's reply answers.
    fn routed_from(topo: &vnet_model::Topology) -> Result<SimFixture, String> {
        let snap = Snapshot::compile(topo, 1);
        let (vm1, vm2) = (
            Self::port(&snap, "red/vm1")?,
            Self::port(&snap, "blue/vm2")?,
        );
        let gw_red = router_mac(&snap, "r1/red")?;
        let gw_blue = router_mac(&snap, "r1/blue")?;
        let mut state = State::default();
        let frame = udp64(VM1_MAC, gw_red, RT_VM1, RT_VM2, 5000, 6000);
        sim::simulate(&snap, &mut state, vm1, &frame, NOW_NS, false);
        let reply = build::arp_frame(ARP_REPLY, VM2_MAC, RT_VM2, gw_blue, RT_GW2, gw_blue);
        sim::simulate(&snap, &mut state, vm2, &reply, NOW_NS, false);
        Ok(SimFixture {
            snap,
            state,
            in_port: vm1,
            frame,
        })
    }

    /// Routed through r1 with SNAT (and, with `rules` > 0, r1's inbound
    /// filter a chain of `rules` rules of `kind`; see
    /// [`topo::routed_snat_chain_topology`]), ARP for vm2 resolved. The
    /// measured frame is checked to leave translated, installed, and (with
    /// rules) to have been through the chain.
    pub fn routed_snat(rules: usize, kind: topo::ChainKind) -> Result<SimFixture, String> {
        let text = topo::routed_snat_chain_topology(rules, kind);
        let topo = vnet_model::load_str(&text).map_err(|e| e.to_string())?;
        let mut f = Self::routed_from(&topo)?;
        f.expect_installed_forward("routed with SNAT")?;
        let d = sim::simulate(&f.snap, &mut f.state, f.in_port, &f.frame, NOW_NS, true);
        let flow = d.install.ok_or("routed with SNAT: no flow")?;
        if flow.actions.flags & act::SET_IP_SRC == 0 || flow.actions.ip_src != topo::SNAT_IP {
            return Err(format!(
                "routed with SNAT: the flow does not translate the source: {:?}",
                flow.actions
            ));
        }
        if rules > 0
            && !d
                .trace
                .iter()
                .any(|s| matches!(s, sim::Step::Filter { .. }))
        {
            return Err(format!(
                "routed with SNAT and {rules} rules: the chain did not run: {:?}",
                d.trace
            ));
        }
        Ok(f)
    }

    /// The measured frame with its ports replaced: a new connection (as
    /// far as the key and connection tracking go) for each `n` below
    /// 8 976 × 1 000. Source ports stay below 10 000 (no generated rule
    /// matches them).
    pub fn frame_for_connection(&self, n: u32) -> Vec<u8> {
        let mut f = self.frame.clone();
        let sport = 1024 + (n % 8976) as u16;
        let dport = 6000 + (n / 8976 % 1000) as u16;
        let l4 = packet::ETH_HLEN + 20;
        f[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
        // A zero UDP checksum is "none": no need to recompute it.
        f[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        f
    }

    /// Checks that the measured frame is forwarded and installed, so that a
    /// benchmark measures the decision it claims to (a fixture that floods
    /// or queues would measure something else).
    fn expect_installed_forward(&mut self, what: &str) -> Result<(), String> {
        let d = self.decide();
        if d.verdict != Verdict::Forwarded || d.install.is_none() {
            return Err(format!(
                "{what}: expected a forwarded, installed decision, got {:?} (install: {})",
                d.verdict,
                d.install.is_some()
            ));
        }
        Ok(())
    }
}

/// The MAC of router port `name` (`router/port`) in `snap`.
pub fn router_mac(snap: &Snapshot, name: &str) -> Result<Mac, String> {
    let p = snap
        .port_by_name(name)
        .ok_or_else(|| format!("no port {name}"))?;
    snap.ports[p]
        .l3
        .map(|l3| l3.mac)
        .ok_or_else(|| format!("{name} is not a router port"))
}

/// Whether this process may load BPF programs and create namespaces; says
/// why not (on stderr) when it cannot, naming what is skipped.
pub fn have_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping {what}: needs root (BPF programs, BPF_PROG_TEST_RUN); run `sudo cargo bench -p vnet-benches`");
    }
    root
}

/// Median of `v` (sorted in place); 0.0 when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_64_bytes_and_parse() {
        let f = udp64(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 1, 2);
        assert_eq!(f.len(), FRAME_LEN);
        assert!(key_of(&f, 1).is_some());
        let g = udp64_no_checksum(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 1, 2);
        assert_eq!(&g[40..42], &[0, 0]);
    }

    #[test]
    fn fixtures_reach_the_decisions_they_name() {
        SimFixture::bridged().unwrap();
        SimFixture::routed().unwrap();
        for kind in [topo::ChainKind::Indexed, topo::ChainKind::Unindexed] {
            for rules in [0, 10, 100] {
                let mut f = SimFixture::routed_snat(rules, kind).unwrap();
                // A new connection is forwarded and installed too.
                let frame = f.frame_for_connection(77);
                let d = sim::simulate(&f.snap, &mut f.state, f.in_port, &frame, NOW_NS, false);
                assert_eq!(d.verdict, Verdict::Forwarded, "{rules} {kind:?}");
                assert!(d.install.is_some());
            }
        }
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
