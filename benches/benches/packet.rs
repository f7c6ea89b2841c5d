//! Packet parsing and flow key extraction: what userspace does to every
//! frame the kernel misses before the simulation starts (the kernel's own
//! parser is measured in `xdp.rs`).
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use vnet_benches::{udp64, BR_VM1, BR_VM2, VM1_MAC, VM2_MAC};
use vnet_dataplane::packet::{self, build, ARP_REQUEST, BROADCAST};

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let udp = udp64(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 5000, 6000);
    vec![
        ("udp64", udp.clone()),
        (
            "tcp",
            build::tcp_frame(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, 40000, 80, 0x02),
        ),
        (
            "icmp_echo",
            build::icmp_echo_frame(VM1_MAC, VM2_MAC, BR_VM1, BR_VM2, true, 7, 1, &[0; 8]),
        ),
        (
            "arp_request",
            build::arp_frame(ARP_REQUEST, VM1_MAC, BR_VM1, [0; 6], BR_VM2, BROADCAST),
        ),
        ("udp64_vlan", build::with_vlan(&udp, 100)),
    ]
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in frames() {
        g.bench_function(name, |b| b.iter(|| packet::parse(black_box(&frame))));
    }
    g.finish();
}

fn flow_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_key");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in frames() {
        let headers = packet::parse(&frame).expect("the fixture frames parse");
        // The key from parsed headers alone, then parse + key as the worker
        // does it for every frame it installs a flow for.
        g.bench_function(format!("{name}/from_headers"), |b| {
            b.iter(|| black_box(&headers).flow_key(black_box(3)))
        });
        g.bench_function(format!("{name}/parse_and_key"), |b| {
            b.iter(|| {
                packet::parse(black_box(&frame))
                    .ok()
                    .and_then(|h| h.flow_key(3))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, flow_key);
criterion_main!(benches);
