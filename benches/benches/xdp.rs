//! The XDP program per packet through `BPF_PROG_TEST_RUN` with repeat,
//! timed by the kernel (criterion's `iter_custom` gets the kernel's own
//! duration, not the syscall's): flow hit, flow hit with MAC rewrites, flow
//! miss, and the baselines (an empty program; an empty program plus one
//! hash lookup). Needs root; skips with a message otherwise.
//!
//! After the suite, a side-by-side run (alternating cases, medians) prints
//! the ratio PERFORMANCE.md sets a target for: flow hit ≤ 1.8× (empty + one
//! lookup).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use vnet_benches::have_root;
use vnet_benches::xdp::{Case, XdpBench};

fn per_packet(c: &mut Criterion) {
    if !have_root("the XDP benchmarks (BPF_PROG_TEST_RUN)") {
        return;
    }
    let b = match XdpBench::load() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping the XDP benchmarks: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("xdp");
    g.throughput(Throughput::Elements(1));
    for case in Case::ALL {
        g.bench_function(case.name(), |bencher| {
            bencher.iter_custom(|iters| match b.total_ns(case, iters) {
                Ok(ns) => Duration::from_nanos(ns),
                Err(e) => panic!("test run of {}: {e}", case.name()),
            })
        });
    }
    g.finish();

    match b.side_by_side(21, 1 << 20) {
        Ok(m) => {
            let get = |c: Case| m.iter().find(|(k, _)| *k == c).map_or(0.0, |(_, v)| *v);
            eprintln!(
                "\nside by side, medians of 21 alternating runs of 2^20 packets (ns per packet):"
            );
            for (case, ns) in &m {
                eprintln!("  {:<24} {ns:>6.1}", case.name());
            }
            let base = get(Case::EmptyPlusLookup);
            if base > 0.0 {
                eprintln!(
                    "  flow hit / (empty + one lookup) = {:.2} (target ≤ 1.8); with MAC rewrites {:.2}",
                    get(Case::Hit) / base,
                    get(Case::HitRewrite) / base
                );
            }
        }
        Err(e) => eprintln!("side-by-side run failed: {e}"),
    }
}

criterion_group!(benches, per_packet);
criterion_main!(benches);
