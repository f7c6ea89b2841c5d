//! Simulation cost per decision (PERFORMANCE.md: bridge ≤ 300 ns; router +
//! SNAT + 100 rules ≤ 2 µs; chains of 10 000 rules grow sub-linearly), on
//! the fixtures of `vnet_benches`: each iteration is one call of
//! `sim::simulate` on a first packet whose outcome is a forwarded frame and
//! a flow to install, as the AF_XDP worker sees it. The decision (its
//! emitted frame, its flow) is built and dropped inside the timed loop.
//!
//! - `simulate/*`: the same packet again and again (state already there:
//!   learned MAC, ARP entry, connection and NAT binding).
//! - `*/new_connection`: a new 5-tuple every iteration (a new connection
//!   to track and, with SNAT, a binding to allocate), from a copy of the
//!   fixture's state every 8 976 connections (untimed), so the tables stay
//!   the size a busy host has, not the size of criterion's sample.
//! - `topology_change/*`: the whole-topology work each change of a
//!   10 100-port topology costs before the dataplane runs it (the store's
//!   tunnel keys and validation, the control thread's compile and changed
//!   tags; PERFORMANCE.md "topology change to effect").
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};
use vnet_benches::topo::ChainKind;
use vnet_benches::{SimFixture, NOW_NS};
use vnet_dataplane::sim::simulate;

/// Connections per fresh state (the fixture's port plan has 8 976 source
/// ports before it changes the destination port).
const CHUNK: u64 = 8976;

fn new_connections(f: &SimFixture, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CHUNK);
        let frames: Vec<Vec<u8>> = (0..n).map(|i| f.frame_for_connection(i as u32)).collect();
        let mut state = f.state.clone();
        let start = Instant::now();
        for frame in &frames {
            black_box(simulate(
                &f.snap, &mut state, f.in_port, frame, NOW_NS, false,
            ));
        }
        total += start.elapsed();
        done += n;
    }
    total
}

fn fixture(name: &str, make: impl FnOnce() -> Result<SimFixture, String>) -> SimFixture {
    make().unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulate");
    g.throughput(Throughput::Elements(1));
    let mut bridged = fixture("bridged", SimFixture::bridged);
    g.bench_function("bridge_known_unicast", |b| b.iter(|| bridged.decide()));
    let mut routed = fixture("routed", SimFixture::routed);
    g.bench_function("bridge_router_bridge", |b| b.iter(|| routed.decide()));
    let mut snat = fixture("routed+snat", || {
        SimFixture::routed_snat(0, ChainKind::Indexed)
    });
    g.bench_function("router_snat/established", |b| b.iter(|| snat.decide()));
    g.bench_function("router_snat/new_connection", |b| {
        b.iter_custom(|iters| new_connections(&snat, iters))
    });
    let snat100 = fixture("routed+snat+100", || {
        SimFixture::routed_snat(100, ChainKind::Indexed)
    });
    g.bench_function("router_snat_100_rules/new_connection", |b| {
        b.iter_custom(|iters| new_connections(&snat100, iters))
    });
    // The same with the trace on, as `vnetctl trace` runs it.
    g.bench_function("bridge_router_bridge/traced", |b| {
        b.iter(|| {
            simulate(
                &routed.snap,
                &mut routed.state,
                routed.in_port,
                &routed.frame,
                NOW_NS,
                true,
            )
        })
    });
    g.finish();
}

/// Router + SNAT + a chain of N rules, new connections: how the first
/// packet's cost grows with the chain, indexed (host rules) and not
/// (source-port rules, a linear scan).
fn chains(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    for kind in [ChainKind::Indexed, ChainKind::Unindexed] {
        for rules in [10usize, 100, 1000, 10_000] {
            let f = fixture(&format!("{rules} {} rules", kind.name()), || {
                SimFixture::routed_snat(rules, kind)
            });
            g.bench_with_input(
                BenchmarkId::new(format!("{}/new_connection", kind.name()), rules),
                &f,
                |b, f| b.iter_custom(|iters| new_connections(f, iters)),
            );
        }
    }
    g.finish();
}

/// One port down on a 10 100-port topology (`scale`'s topology): each step
/// a change passes through between the API and the worker, alone.
fn topology_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("topology_change");
    g.sample_size(20);
    let ports = vnet_benches::topo::Ports::new(100, 99);
    let load = |p: &vnet_benches::topo::Ports| {
        vnet_model::load_str(&p.yaml()).unwrap_or_else(|e| panic!("the scale topology: {e}"))
    };
    let before = load(&ports);
    let after = load(&vnet_benches::topo::Ports {
        vm0_down: true,
        ..ports
    });
    g.bench_function("keep_tunnel_keys", |b| {
        b.iter(|| {
            let mut t = after.clone();
            black_box(t.keep_tunnel_keys(&before)).ok();
            t
        })
    });
    g.bench_function("clone", |b| b.iter(|| black_box(after.clone())));
    g.bench_function("validate", |b| b.iter(|| black_box(after.validate()).ok()));
    g.bench_function("compile", |b| {
        b.iter(|| black_box(vnet_dataplane::sim::Snapshot::compile(&after, 2)))
    });
    g.bench_function("changed_tags", |b| {
        b.iter(|| black_box(vnet_dataplane::reconfig::changed_tags(&before, &after)))
    });
    g.finish();
}

criterion_group!(benches, decisions, chains, topology_change);
criterion_main!(benches);
