//! The benchmark XDP programs (`ebpf/xdp/src/bench.rs`, object
//! `vnet-xdp-bench`): yardsticks for the flow executor and the pieces of the
//! throughput harness. vnetd never loads them; [`super::Kernel`] is not
//! involved, so its API and its maps stay as they are.
//!
//! - [`BenchProgram::Empty`] and [`BenchProgram::Lookup`] (one hash lookup
//!   in a map declared like FLOWS) are the baselines of the per-packet cost
//!   of the executor under `BPF_PROG_TEST_RUN` ([`BenchPrograms::test_run`]).
//! - [`BenchProgram::Redirect`] is the raw XDP_REDIRECT ceiling.
//! - [`BenchProgram::Generate`] is the traffic generator
//!   ([`BenchPrograms::generate`], `BPF_F_TEST_XDP_LIVE_FRAMES`).
//! - [`BenchProgram::Count`] counts and drops the IPv4 UDP frames that
//!   arrive at the far end, and passes the rest (ARP, ping).
//!
//! One [`BenchPrograms`] has one set of maps (one redirect target, one
//! counter): load one per role.

use std::time::Duration;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, Xdp},
    Ebpf, EbpfLoader, TestRun as _, TestRunAttrs, TestRunOptions,
};
use vnet_common::{FlowKey, FlowValue};

use super::{
    error, ifindex, take_map, AttachMode, KernelError, TestRun, MAX_TEST_FRAME, MIN_TEST_FRAME,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vnet-xdp-bench"));

/// Bytes of the frame template the generator writes into every frame.
pub const TEMPLATE_LEN: usize = 64;

/// Largest batch the kernel takes in live-frames mode (TEST_XDP_MAX_BATCH).
pub const MAX_LIVE_BATCH: u32 = 256;

const FLOWS: &str = "BENCH_FLOWS";
const CONFIG: &str = "BENCH_CONFIG";
const TEMPLATE: &str = "BENCH_TEMPLATE";
const SEQ: &str = "BENCH_SEQ";
const COUNT: &str = "BENCH_COUNT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BenchProgram {
    /// Returns XDP_DROP and does nothing else.
    Empty,
    /// Builds a key from the Ethernet header and looks it up once in
    /// BENCH_FLOWS (XDP_DROP on a hit, XDP_PASS on a miss).
    Lookup,
    /// Redirects every frame to the target interface.
    Redirect,
    /// Writes the template (and, when asked, a sequence number in the UDP
    /// ports) into the frame and redirects it to the target interface.
    Generate,
    /// Counts and drops IPv4 UDP frames; passes everything else.
    Count,
}

impl BenchProgram {
    pub const ALL: [BenchProgram; 5] = [
        BenchProgram::Empty,
        BenchProgram::Lookup,
        BenchProgram::Redirect,
        BenchProgram::Generate,
        BenchProgram::Count,
    ];

    /// The program's name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            BenchProgram::Empty => "bench_empty",
            BenchProgram::Lookup => "bench_lookup",
            BenchProgram::Redirect => "bench_redirect",
            BenchProgram::Generate => "bench_generate",
            BenchProgram::Count => "bench_count",
        }
    }
}

/// The loaded benchmark programs and their maps. Dropping it detaches every
/// program it attached.
pub struct BenchPrograms {
    ebpf: Ebpf,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    config: Array<MapData, u32>,
    template: Array<MapData, [u64; TEMPLATE_LEN / 8]>,
    seq: PerCpuArray<MapData, u64>,
    count: PerCpuArray<MapData, u64>,
    links: Vec<(BenchProgram, u32, XdpLinkId)>,
}

impl std::fmt::Debug for BenchPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchPrograms")
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl BenchPrograms {
    /// Loads every benchmark program; BENCH_FLOWS gets room for
    /// `lookup_entries` keys. Needs root, like [`super::Kernel::load`].
    pub fn load(lookup_entries: u32) -> Result<BenchPrograms, KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NotBuilt);
        }
        if lookup_entries == 0 {
            return Err(KernelError::InvalidMaxFlows);
        }
        super::raise_memlock_rlimit();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, lookup_entries)
            .load(OBJECT)
            .map_err(|error| {
                if error::is_permission(&error) {
                    KernelError::NotPermitted {
                        call: "loading the benchmark XDP object (creating its maps)".into(),
                        error: Box::new(error),
                    }
                } else {
                    KernelError::LoadBench { error }
                }
            })?;
        for p in BenchProgram::ALL {
            program_mut(&mut ebpf, p)?.load().map_err(|error| {
                if error::is_permission(&error) {
                    KernelError::NotPermitted {
                        call: format!("loading program {}", p.name()),
                        error: Box::new(error),
                    }
                } else {
                    KernelError::ProgramLoad {
                        program: p.name(),
                        error,
                    }
                }
            })?;
        }
        let flows = take_map(&mut ebpf, FLOWS, HashMap::try_from)?;
        let config = take_map(&mut ebpf, CONFIG, Array::try_from)?;
        let template = take_map(&mut ebpf, TEMPLATE, Array::try_from)?;
        let seq = take_map(&mut ebpf, SEQ, PerCpuArray::try_from)?;
        let count = take_map(&mut ebpf, COUNT, PerCpuArray::try_from)?;
        Ok(BenchPrograms {
            ebpf,
            flows,
            config,
            template,
            seq,
            count,
            links: Vec::new(),
        })
    }

    /// The key `bench_lookup` builds for `frame` received on `ifindex`
    /// (ifindex and the Ethernet header; every other field zero), `None`
    /// for a frame shorter than an Ethernet header.
    pub fn lookup_key(frame: &[u8], ifindex: u32) -> Option<FlowKey> {
        let eth = frame.get(..14)?;
        let mut key = FlowKey {
            ifindex,
            ethertype: u16::from_be_bytes([eth[12], eth[13]]),
            ..FlowKey::default()
        };
        key.eth_dst.copy_from_slice(&eth[0..6]);
        key.eth_src.copy_from_slice(&eth[6..12]);
        Some(key)
    }

    /// Adds `key` to BENCH_FLOWS (value zero).
    pub fn insert_lookup_key(&mut self, key: &FlowKey) -> Result<(), KernelError> {
        self.flows
            .insert(key, FlowValue::default(), 0)
            .map_err(|error| KernelError::Map {
                op: format!("inserting {key:?}"),
                map: FLOWS,
                error,
            })
    }

    /// Sets the interface `bench_redirect` and `bench_generate` redirect to
    /// (an ifindex of the namespace they run in).
    pub fn set_target(&mut self, ifindex: u32) -> Result<(), KernelError> {
        self.set_config(0, ifindex, "setting the redirect target")
    }

    /// Whether the generator stamps a sequence number into the UDP ports
    /// (bytes 34..38, a UDP frame without IP options and with checksum 0),
    /// making every frame a new 5-tuple. The sequence continues across runs;
    /// each CPU has its own and stamps the CPU beside it, so generators on
    /// several CPUs never repeat each other's tuples.
    pub fn set_sequence(&mut self, on: bool) -> Result<(), KernelError> {
        self.set_config(1, on as u32, "switching the sequence stamp")
    }

    /// Whether the generator adds the CPU it runs on to the template's UDP
    /// source port: one established flow per CPU (as a NIC's RSS keeps each
    /// flow on one queue). Off with `set_sequence(false)`.
    pub fn set_flow_per_cpu(&mut self) -> Result<(), KernelError> {
        self.set_config(1, 2, "switching the per-CPU flow stamp")
    }

    /// The frame the generator writes into every live frame: its first
    /// [`TEMPLATE_LEN`] bytes (a shorter frame is padded with zeros).
    pub fn set_template(&mut self, frame: &[u8]) -> Result<(), KernelError> {
        let mut bytes = [0u8; TEMPLATE_LEN];
        let n = frame.len().min(TEMPLATE_LEN);
        bytes[..n].copy_from_slice(&frame[..n]);
        // Words in native order: the program stores them back as they are,
        // which puts the bytes back in order.
        let mut words = [0u64; TEMPLATE_LEN / 8];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_ne_bytes(chunk.try_into().expect("chunks of 8"));
        }
        self.template
            .set(0, words, 0)
            .map_err(|error| KernelError::Map {
                op: "setting the frame template".into(),
                map: TEMPLATE,
                error,
            })
    }

    /// The generator's sequence numbers summed over CPUs (frames stamped
    /// so far).
    pub fn sequence(&self) -> Result<u64, KernelError> {
        let per_cpu = self.seq.get(&0, 0).map_err(|error| KernelError::Map {
            op: "reading".into(),
            map: SEQ,
            error,
        })?;
        Ok(per_cpu.iter().sum())
    }

    /// IPv4 UDP frames `bench_count` has counted, summed over CPUs.
    pub fn count(&self) -> Result<u64, KernelError> {
        let per_cpu = self.count.get(&0, 0).map_err(|error| KernelError::Map {
            op: "reading the counter".into(),
            map: COUNT,
            error,
        })?;
        Ok(per_cpu.iter().sum())
    }

    fn set_config(&mut self, index: u32, value: u32, op: &str) -> Result<(), KernelError> {
        self.config
            .set(index, value, 0)
            .map_err(|error| KernelError::Map {
                op: op.into(),
                map: CONFIG,
                error,
            })
    }

    /// Attaches `program` to `ifname`, an interface of the calling thread's
    /// network namespace (enter another one with `setns` first).
    pub fn attach(
        &mut self,
        program: BenchProgram,
        ifname: &str,
        mode: AttachMode,
    ) -> Result<u32, KernelError> {
        let ifindex = ifindex(ifname).ok_or_else(|| KernelError::UnknownInterface {
            ifname: ifname.into(),
        })?;
        let link = program_mut(&mut self.ebpf, program)?
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|error| {
                if error::is_permission(&error) {
                    KernelError::NotPermitted {
                        call: format!(
                            "attaching {} to interface {ifname} ({mode} mode)",
                            program.name()
                        ),
                        error: Box::new(error),
                    }
                } else {
                    KernelError::Attach {
                        what: format!("{} ({mode} mode) to interface {ifname}", program.name()),
                        error,
                    }
                }
            })?;
        self.links.push((program, ifindex, link));
        Ok(ifindex)
    }

    /// Detaches every program this set attached.
    pub fn detach_all(&mut self) {
        for (program, ifindex, link) in std::mem::take(&mut self.links) {
            let detached = program_mut(&mut self.ebpf, program).and_then(|p| {
                p.detach(link).map_err(|error| KernelError::Detach {
                    ifname: format!("ifindex {ifindex}"),
                    error,
                })
            });
            if let Err(e) = detached {
                tracing::warn!("{e}");
            }
        }
    }

    /// Runs `program` on `frame` like [`super::Kernel::test_run`] (same
    /// rules: the frame persists across repeats, verdicts are not carried
    /// out).
    pub fn test_run(
        &self,
        program: BenchProgram,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<TestRun, KernelError> {
        if !(MIN_TEST_FRAME..=MAX_TEST_FRAME).contains(&frame.len()) {
            return Err(KernelError::TestFrameSize {
                program: program.name(),
                len: frame.len(),
                max: MAX_TEST_FRAME,
            });
        }
        let xdp = program_ref(&self.ebpf, program)?;
        let ctx = super::xdp_md(frame, ifindex);
        super::run_test(program.name(), frame, ifindex, &ctx, repeat, |o| {
            xdp.test_run(o)
        })
    }

    /// Sends `frames` live frames through the generator
    /// (`BPF_F_TEST_XDP_LIVE_FRAMES`): each starts as `frame`, gets the
    /// template (and sequence number) written into it and is redirected to
    /// the target, for real, `batch` frames per kernel batch (1..=256). The
    /// redirect target is looked up in the calling thread's network
    /// namespace, and the frames are processed on the calling CPU. Returns
    /// the kernel's measured time per frame.
    pub fn generate(&self, frame: &[u8], frames: u32, batch: u32) -> Result<Duration, KernelError> {
        let program = BenchProgram::Generate;
        if !(MIN_TEST_FRAME..=MAX_TEST_FRAME).contains(&frame.len()) {
            return Err(KernelError::TestFrameSize {
                program: program.name(),
                len: frame.len(),
                max: MAX_TEST_FRAME,
            });
        }
        let result = program_ref(&self.ebpf, program)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: frames.max(1),
                attrs: TestRunAttrs::new().xdp_live_frames(batch.clamp(1, MAX_LIVE_BATCH)),
                ..TestRunOptions::default()
            })
            .map_err(|error| KernelError::TestRun {
                program: program.name(),
                len: frame.len(),
                ifindex: 0,
                error,
            })?;
        Ok(result.duration)
    }
}

impl Drop for BenchPrograms {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn program_mut(ebpf: &mut Ebpf, p: BenchProgram) -> Result<&mut Xdp, KernelError> {
    ebpf.program_mut(p.name())
        .ok_or(KernelError::Missing {
            what: "program",
            name: p.name(),
        })?
        .try_into()
        .map_err(|error| KernelError::ProgramLoad {
            program: p.name(),
            error,
        })
}

fn program_ref(ebpf: &Ebpf, p: BenchProgram) -> Result<&Xdp, KernelError> {
    ebpf.program(p.name())
        .ok_or(KernelError::Missing {
            what: "program",
            name: p.name(),
        })?
        .try_into()
        .map_err(|error| KernelError::ProgramLoad {
            program: p.name(),
            error,
        })
}
