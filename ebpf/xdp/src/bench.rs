//! XDP programs for the benchmarks (`benches/`), not for vnetd.
//!
//! A separate object (`vnet-xdp-bench`) so that the flow executor in
//! `main.rs`, and the maps vnetd creates, stay exactly as they are. Loaded by
//! `dataplane/src/kernel/bench.rs` (`BenchPrograms`). Every program here is
//! a yardstick for the flow executor or a piece of the traffic harness:
//!
//! - `bench_empty`: does nothing (the floor of `BPF_PROG_TEST_RUN`).
//! - `bench_lookup`: builds a key from the Ethernet header and does one hash
//!   lookup in a map declared like FLOWS: "an empty XDP program + one hash
//!   lookup", the baseline PERFORMANCE.md compares the executor with.
//! - `bench_redirect`: redirects every frame to one interface, the raw
//!   XDP_REDIRECT veth→veth ceiling of the throughput harness.
//! - `bench_generate`: the traffic generator, run with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`: writes the frame template into the live
//!   frame (routers downstream rewrite MACs and TTL in place, and the kernel
//!   recycles the page with those rewrites), optionally stamps a sequence
//!   number into the UDP ports (one new 5-tuple per frame), and redirects it.
//! - `bench_count`: counts and drops the generator's frames (IPv4 UDP) at
//!   the far end of a path, and passes everything else.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

// The executor's packet accessors (see there): checked handles, no raw
// addresses. The benchmarks use only some of them.
#[allow(dead_code)]
#[path = "access.rs"]
mod access;
#[allow(dead_code)]
#[path = "wire.rs"]
mod wire;

use access::Frame;
use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        BPF_F_NO_PREALLOC,
    },
    helpers::{bpf_get_smp_processor_id, bpf_redirect},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use vnet_common::{FlowKey, FlowValue, DEFAULT_MAX_FLOWS};
use wire::{ETH_DST, ETH_HLEN, ETH_P_IP, ETH_SRC, ETH_TYPE, IPPROTO_UDP, IPV4_MIN_HLEN, IP_PROTO};

/// Length of the generator's frame template. The harness sends 64-byte
/// frames; a longer live frame keeps its tail as given to the test run.
const TEMPLATE_LEN: usize = 64;

/// Same type and flags as the executor's FLOWS, so a lookup costs the same.
#[map]
static BENCH_FLOWS: HashMap<FlowKey, FlowValue> =
    HashMap::with_max_entries(DEFAULT_MAX_FLOWS, BPF_F_NO_PREALLOC);

/// `[0]`: ifindex `bench_redirect` and `bench_generate` redirect to.
/// `[1]`: what `bench_generate` stamps into the UDP ports of every frame:
/// [`STAMP_SEQUENCE`] a sequence number (a new tuple per frame),
/// [`STAMP_FLOW_PER_CPU`] the CPU (one flow per CPU), 0 nothing.
#[map]
static BENCH_CONFIG: Array<u32> = Array::with_max_entries(2, 0);

/// The generator's frame template (the first `TEMPLATE_LEN` bytes).
#[map]
static BENCH_TEMPLATE: Array<[u64; TEMPLATE_LEN / 8]> = Array::with_max_entries(1, 0);

const STAMP_SEQUENCE: u32 = 1;
const STAMP_FLOW_PER_CPU: u32 = 2;

/// The generator's sequence number, per CPU (a plain add is exact; the CPU
/// is stamped beside it, so CPUs never repeat each other's tuples).
#[map]
static BENCH_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Frames seen by `bench_count`.
#[map]
static BENCH_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Offset of the UDP ports in the template (Ethernet + IPv4 without options).
const UDP_PORTS: usize = ETH_HLEN + IPV4_MIN_HLEN;

#[xdp]
pub fn bench_empty(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

#[xdp]
pub fn bench_lookup(ctx: XdpContext) -> u32 {
    let Some(eth) = Frame::new(&ctx).bytes::<ETH_HLEN>(0) else {
        return XDP_PASS;
    };
    let key = FlowKey {
        ifindex: ctx.ingress_ifindex() as u32,
        eth_dst: eth.mac::<ETH_DST>(),
        eth_src: eth.mac::<ETH_SRC>(),
        ethertype: eth.be16::<ETH_TYPE>(),
        ..FlowKey::default()
    };
    match BENCH_FLOWS.get_ptr(key) {
        Some(_) => XDP_DROP,
        None => XDP_PASS,
    }
}

#[xdp]
pub fn bench_redirect(_ctx: XdpContext) -> u32 {
    let ifindex = BENCH_CONFIG.get(0).copied().unwrap_or(0);
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

#[xdp]
pub fn bench_generate(ctx: XdpContext) -> u32 {
    if let Some(frame) = Frame::new(&ctx).bytes::<TEMPLATE_LEN>(0) {
        if let Some(t) = BENCH_TEMPLATE.get(0) {
            // The template's eight words, one store each (what LLVM made of
            // the loop this replaced; offsets must be constants here).
            frame.set_raw64::<0>(t[0]);
            frame.set_raw64::<8>(t[1]);
            frame.set_raw64::<16>(t[2]);
            frame.set_raw64::<24>(t[3]);
            frame.set_raw64::<32>(t[4]);
            frame.set_raw64::<40>(t[5]);
            frame.set_raw64::<48>(t[6]);
            frame.set_raw64::<56>(t[7]);
        }
        let stamp = BENCH_CONFIG.get(1).copied().unwrap_or(0);
        // The CPU this run is on (< 8 on the machines the harness runs):
        // generators on several CPUs at once stamp tuples of their own.
        let cpu = (unsafe { bpf_get_smp_processor_id() } & 7) as u64;
        if stamp == STAMP_SEQUENCE {
            if let Some(seq) = BENCH_SEQ.get_ptr_mut(0) {
                // Per-CPU: no other CPU writes this slot.
                let n = unsafe { *seq };
                unsafe { *seq = n + 1 };
                let n = n * 8 + cpu;
                // Source port from the low 16 bits, destination port from
                // the next 16: 2^32 distinct tuples before one repeats. The
                // template's UDP checksum is 0 ("none"), so nothing else
                // changes.
                frame.set_raw32::<UDP_PORTS>(
                    ((n as u16).to_be() as u32) | (((n >> 16) as u16).to_be() as u32) << 16,
                );
            }
        } else if stamp == STAMP_FLOW_PER_CPU {
            // The template's source port plus the CPU: one established
            // flow per CPU, as RSS keeps each flow on one queue.
            let sport = frame.be16::<UDP_PORTS>().wrapping_add(cpu as u16);
            frame.set_raw16::<UDP_PORTS>(sport.to_be());
        }
    }
    let ifindex = BENCH_CONFIG.get(0).copied().unwrap_or(0);
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// Counts and drops IPv4 UDP frames (the generator's); passes everything
/// else, so that the far end still answers ARP and ping (a router resolving
/// it, the latency runs) while the counter is attached.
#[xdp]
pub fn bench_count(ctx: XdpContext) -> u32 {
    let Some(head) = Frame::new(&ctx).bytes::<UDP_PORTS>(0) else {
        return XDP_PASS;
    };
    if head.be16::<ETH_TYPE>() != ETH_P_IP || head.u8::<{ ETH_HLEN + IP_PROTO }>() != IPPROTO_UDP {
        return XDP_PASS;
    }
    if let Some(c) = BENCH_COUNT.get_ptr_mut(0) {
        // Per-CPU slot, XDP runs with migration disabled: exact.
        unsafe { *c += 1 };
    }
    XDP_DROP
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "vnet-xdp-bench holds the benchmark XDP programs: built for bpfel-unknown-none and \
         embedded by dataplane/build.rs; this host build does nothing."
    );
}
