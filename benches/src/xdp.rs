//! The per-packet cost of the XDP flow executor under `BPF_PROG_TEST_RUN`
//! (the kernel times the runs itself), next to its baseline: an empty XDP
//! program plus one hash lookup in a map declared like FLOWS
//! (PERFORMANCE.md: a flow hit must cost ≤ 1.8× that). Used by the criterion
//! suite `benches/xdp.rs` and by the throughput harness's table.
use crate::{bridged_actions, key_of, median, udp64, BR_VM1, BR_VM2, VM1_MAC, VM2_MAC};
use vnet_common::{act, FlowActions, IfaceConfig};
use vnet_dataplane::kernel::bench::{BenchProgram, BenchPrograms};
use vnet_dataplane::kernel::{xdp_action, Kernel, KernelError};

/// Test runs pretend the frame arrived on lo, which always exists.
pub const IFINDEX: u32 = 1;

/// The programs and frames of the per-packet measurements, with every
/// frame's verdict checked once, so that "hit" is a hit.
pub struct XdpBench {
    pub kernel: Kernel,
    pub bench: BenchPrograms,
    /// Bridged flow: OUTPUT only.
    pub hit: Vec<u8>,
    /// Routed-style flow: both MACs rewritten (to the values they have, so
    /// that the key survives the kernel's repeats) and the MTU checked.
    pub hit_rewrite: Vec<u8>,
    /// No flow: goes to the interface's AF_XDP slot (empty here, so the
    /// redirect falls back to a drop after the same lookups).
    pub miss: Vec<u8>,
}

/// Which program a measurement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Empty,
    EmptyPlusLookup,
    Hit,
    HitRewrite,
    Miss,
}

impl Case {
    pub const ALL: [Case; 5] = [
        Case::Empty,
        Case::EmptyPlusLookup,
        Case::Hit,
        Case::HitRewrite,
        Case::Miss,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Case::Empty => "empty",
            Case::EmptyPlusLookup => "empty_plus_lookup",
            Case::Hit => "vnet_hit_bridged",
            Case::HitRewrite => "vnet_hit_mac_rewrite",
            Case::Miss => "vnet_miss_to_afxdp",
        }
    }
}

impl XdpBench {
    pub fn load() -> Result<XdpBench, KernelError> {
        let mut kernel = Kernel::load(1024)?;
        let mut bench = BenchPrograms::load(1024)?;
        let hit = udp64(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 5000, 6000);
        let hit_rewrite = udp64(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 5001, 6000);
        let miss = udp64(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 5002, 6000);
        let key = |f: &[u8]| key_of(f, IFINDEX).expect("fixture frames have keys");
        kernel.insert_flow(&key(&hit), &bridged_actions(IFINDEX))?;
        let rewrite = FlowActions {
            flags: act::SET_ETH_SRC | act::SET_ETH_DST | act::OUTPUT,
            out_ifindex: IFINDEX,
            eth_src: VM1_MAC,
            eth_dst: VM2_MAC,
            mtu: 1500,
            ..FlowActions::default()
        };
        kernel.insert_flow(&key(&hit_rewrite), &rewrite)?;
        kernel.set_iface(
            IFINDEX,
            IfaceConfig {
                xsk_slot: 0,
                queues: 1,
            },
        )?;
        let lookup_key = BenchPrograms::lookup_key(&hit, IFINDEX).expect("a 64-byte frame");
        bench.insert_lookup_key(&lookup_key)?;
        let b = XdpBench {
            kernel,
            bench,
            hit,
            hit_rewrite,
            miss,
        };
        b.check()?;
        Ok(b)
    }

    /// Each case's verdict, checked once: a benchmark of a "hit" that
    /// missed would be a benchmark of something else.
    fn check(&self) -> Result<(), KernelError> {
        let expect = [
            (
                Case::EmptyPlusLookup,
                xdp_action::XDP_DROP,
                "the lookup must hit",
            ),
            (
                Case::Hit,
                xdp_action::XDP_REDIRECT,
                "the bridged flow must hit",
            ),
            (
                Case::HitRewrite,
                xdp_action::XDP_REDIRECT,
                "the rewrite flow must hit",
            ),
            (
                Case::Miss,
                xdp_action::XDP_DROP,
                "the miss goes to an empty AF_XDP slot",
            ),
        ];
        for (case, action, why) in expect {
            let r = self.run(case, 3)?;
            if r.action != action {
                panic!(
                    "{}: verdict {} instead of {action}: {why}",
                    case.name(),
                    r.action
                );
            }
        }
        Ok(())
    }

    /// One test run of `case`, repeated `repeat` times in the kernel.
    pub fn run(
        &self,
        case: Case,
        repeat: u32,
    ) -> Result<vnet_dataplane::kernel::TestRun, KernelError> {
        match case {
            Case::Empty => self
                .bench
                .test_run(BenchProgram::Empty, &self.hit, IFINDEX, repeat),
            Case::EmptyPlusLookup => {
                self.bench
                    .test_run(BenchProgram::Lookup, &self.hit, IFINDEX, repeat)
            }
            Case::Hit => self.kernel.test_run(&self.hit, IFINDEX, repeat),
            Case::HitRewrite => self.kernel.test_run(&self.hit_rewrite, IFINDEX, repeat),
            Case::Miss => self.kernel.test_run(&self.miss, IFINDEX, repeat),
        }
    }

    /// Kernel-measured total time of `iters` runs of `case` (the kernel
    /// reports the mean in whole ns; runs are split in chunks of 2^22).
    pub fn total_ns(&self, case: Case, iters: u64) -> Result<u64, KernelError> {
        let mut total = 0u64;
        let mut left = iters;
        while left > 0 {
            let n = left.min(1 << 22) as u32;
            total += self.run(case, n)?.duration_ns * u64::from(n);
            left -= u64::from(n);
        }
        Ok(total)
    }

    /// Medians of `rounds` alternating measurements of every case, `repeat`
    /// runs each (ns per packet), in `Case::ALL` order.
    pub fn side_by_side(
        &self,
        rounds: usize,
        repeat: u32,
    ) -> Result<Vec<(Case, f64)>, KernelError> {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Case::ALL.len()];
        for _ in 0..rounds {
            for (i, case) in Case::ALL.iter().enumerate() {
                samples[i].push(self.run(*case, repeat)?.duration_ns as f64);
            }
        }
        Ok(Case::ALL
            .iter()
            .zip(samples.iter_mut())
            .map(|(c, s)| (*c, median(s)))
            .collect())
    }
}
