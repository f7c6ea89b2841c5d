//! The userspace side of flow installation: `FlowTable::install` (tag
//! index + backend insert) with the in-memory backend, and with the real
//! kernel map (`Kernel`, one `bpf(BPF_MAP_UPDATE_ELEM)` per flow) when run
//! as root. Every iteration installs a new key, as a stream of first
//! packets does; the table is emptied between samples (untimed) so that
//! every sample starts from the same size.
//!
//! `flow_install/memory_backend/*/into_100000`: the same into a table that
//! already holds 100 000 flows with the same tags, as in a new-flows run
//! (a tag's index then covers every flow).
//!
//! `first_packet/*`: what the worker does for a first packet, minus the
//! AF_XDP rings: parse, simulate (a new connection), flow key, install —
//! the userspace ceiling of "new flows per second" (PERFORMANCE.md: ≥ 300
//! k/s bridged, ≥ 150 k/s with NAT + 100 rules, i.e. 3.3 µs and 6.7 µs).
//! `*/kernel` installs each flow with its own syscall; `*/kernel_batched`
//! as the worker does, queued and written 64 at a time
//! (`BPF_MAP_UPDATE_BATCH`, one ring batch per turn).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use vnet_benches::topo::ChainKind;
use vnet_benches::NOW_NS;
use vnet_benches::{
    bridged_actions, have_root, key_of, udp64, SimFixture, BR_VM1, BR_VM2, VM1_MAC, VM2_MAC,
};
use vnet_common::FlowKey;
use vnet_dataplane::flows::{FlowBackend, FlowTable, Flushed, MemoryBackend};
use vnet_dataplane::kernel::Kernel;
use vnet_dataplane::sim::{simulate, Flow, Tag};

/// Distinct keys: the base key with the 32-bit counter in the L4 ports.
fn key(base: &FlowKey, n: u64) -> FlowKey {
    FlowKey {
        l4_src: n as u16,
        l4_dst: (n >> 16) as u16,
        ..*base
    }
}

/// Installs `iters` new flows into `table`, timed; then empties it, untimed.
fn install_batch(
    table: &mut FlowTable,
    backend: &mut impl FlowBackend,
    base: &FlowKey,
    flow: &Flow,
    iters: u64,
) -> Duration {
    let actions = bridged_actions(2);
    let start = Instant::now();
    for n in 0..iters {
        if let Err(e) = table.install(backend, key(base, n), &actions, flow, n) {
            panic!("installing flow {n} of {iters}: {e}");
        }
    }
    let elapsed = start.elapsed();
    table.clear(backend);
    elapsed
}

/// Flows already in the table in the `into_*` variant: a new-flows run
/// reaches this many within a second, all with the same tags.
const PREFILLED: u64 = 100_000;

/// The tag of the flows a sample installs among the prefilled ones, by
/// which they are removed after it.
const SAMPLE_TAG: Tag = Tag(0x5a3b1e);

fn prefill(table: &mut FlowTable, backend: &mut impl FlowBackend, base: &FlowKey, flow: &Flow) {
    let actions = bridged_actions(2);
    for n in 0..PREFILLED {
        if let Err(e) = table.install(backend, key(base, n), &actions, flow, n) {
            panic!("prefilling flow {n}: {e}");
        }
    }
}

/// Installs `iters` new flows into a table holding [`PREFILLED`] with the
/// same tags, timed; then removes them, untimed (the prefilled stay).
fn install_among(
    table: &mut FlowTable,
    backend: &mut impl FlowBackend,
    base: &FlowKey,
    flow: &Flow,
    iters: u64,
) -> Duration {
    let actions = bridged_actions(2);
    let mut flow = flow.clone();
    flow.tags.push(SAMPLE_TAG);
    let start = Instant::now();
    for n in 0..iters {
        let k = key(base, PREFILLED + n);
        if let Err(e) = table.install(backend, k, &actions, &flow, n) {
            panic!("installing flow {n} of {iters}: {e}");
        }
    }
    let elapsed = start.elapsed();
    table.invalidate(backend, SAMPLE_TAG);
    elapsed
}

fn install(c: &mut Criterion) {
    let frame = udp64(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 5000, 6000);
    let base = key_of(&frame, 1).expect("the fixture frame has a key");
    // The flow of the routed fixture: the most tags a flow carries today.
    let flow = SimFixture::routed()
        .and_then(|mut f| f.decide().install.ok_or_else(|| "no flow".to_string()))
        .unwrap_or_else(|e| panic!("routed fixture: {e}"));

    let mut g = c.benchmark_group("flow_install");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("memory_backend/{}_tags", flow.tags.len()), |b| {
        let (mut table, mut backend) = (FlowTable::default(), MemoryBackend::default());
        b.iter_custom(|iters| install_batch(&mut table, &mut backend, &base, &flow, iters))
    });
    g.bench_function(
        format!("memory_backend/{}_tags/into_{PREFILLED}", flow.tags.len()),
        |b| {
            let (mut table, mut backend) = (FlowTable::default(), MemoryBackend::default());
            prefill(&mut table, &mut backend, &base, &flow);
            b.iter_custom(|iters| install_among(&mut table, &mut backend, &base, &flow, iters))
        },
    );
    if have_root("flow_install/kernel (FlowTable::install into the kernel's FLOWS map)") {
        match Kernel::load(1 << 20) {
            Ok(mut kernel) => {
                g.bench_function(format!("kernel/{}_tags", flow.tags.len()), |b| {
                    let mut table = FlowTable::default();
                    b.iter_custom(|iters| {
                        // Criterion's largest samples would overflow the map.
                        let mut total = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let n = left.min(500_000);
                            total += install_batch(&mut table, &mut kernel, &base, &flow, n);
                            left -= n;
                        }
                        total
                    })
                });
            }
            Err(e) => eprintln!("skipping flow_install/kernel: {e}"),
        }
    }
    g.finish();
}

/// Runs `iters` first packets of new connections through parse, simulate,
/// key and install, from a copy of the fixture's state and an empty table
/// every 8 976 packets (untimed).
/// Flows per batch write in the `_batched` variant: the worker's ring batch.
const BATCH: usize = 64;

fn first_packets(
    f: &SimFixture,
    backend: &mut impl FlowBackend,
    iters: u64,
    batched: bool,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(8976);
        let frames: Vec<Vec<u8>> = (0..n).map(|i| f.frame_for_connection(i as u32)).collect();
        let mut state = f.state.clone();
        let mut table = FlowTable::default();
        let start = Instant::now();
        for (i, frame) in frames.iter().enumerate() {
            let d = simulate(&f.snap, &mut state, f.in_port, frame, NOW_NS, false);
            let (Some(flow), Some(key)) = (d.install, key_of(frame, 1)) else {
                panic!("packet {i}: no flow to install ({:?})", d.verdict);
            };
            let mut actions = flow.actions;
            actions.out_ifindex = 2;
            let installed = if batched {
                let queued = table.queue_for(backend, None, key, &actions, flow, NOW_NS);
                if table.queued() >= BATCH {
                    check(table.flush(backend), i);
                }
                queued
            } else {
                table.install(backend, key, &actions, &flow, NOW_NS)
            };
            if let Err(e) = installed {
                panic!("installing flow {i}: {e}");
            }
        }
        check(table.flush(backend), n as usize);
        total += start.elapsed();
        table.clear(backend);
        done += n;
    }
    total
}

/// Panics unless a batch write installed every flow (the table is sized
/// for them).
fn check(done: Flushed, at: usize) {
    if done.full + done.other > 0 {
        panic!("batch write before packet {at}: {done:?}");
    }
}

fn first_packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("first_packet");
    g.throughput(Throughput::Elements(1));
    // The bridged fixture's frame with new ports is a new flow too (the
    // bridge has no connection state); SNAT + 100 rules is the other target.
    let fixtures = [
        ("bridged", SimFixture::bridged()),
        (
            "router_snat_100_rules",
            SimFixture::routed_snat(100, ChainKind::Indexed),
        ),
    ];
    let mut kernel = if have_root("first_packet/*/kernel") {
        Kernel::load(1 << 16)
            .map_err(|e| eprintln!("skipping first_packet/*/kernel: {e}"))
            .ok()
    } else {
        None
    };
    for (name, f) in fixtures {
        let f = f.unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        g.bench_function(format!("{name}/memory_backend"), |b| {
            let mut backend = MemoryBackend::default();
            b.iter_custom(|iters| first_packets(&f, &mut backend, iters, false))
        });
        if let Some(k) = kernel.as_mut() {
            g.bench_function(format!("{name}/kernel"), |b| {
                b.iter_custom(|iters| first_packets(&f, k, iters, false))
            });
            g.bench_function(format!("{name}/kernel_batched"), |b| {
                b.iter_custom(|iters| first_packets(&f, k, iters, true))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, install, first_packet);
criterion_main!(benches);
