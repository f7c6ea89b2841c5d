//! What one apply costs the embedded store for a large topology: time per
//! apply and disk bytes per revision (`cargo run --release -p vnet-store
//! --example apply_cost [CHAINS [RULES [APPLIES]]]`). Each apply changes one
//! port of a bridge next to `CHAINS` chains of `RULES` rules.

use std::time::Instant;

use vnet_model::Topology;
use vnet_store::{EmbeddedStore, Store};

fn topology(chains: usize, rules: usize, down: usize) -> Topology {
    let mut yaml = String::from("version: 1\nbridges:\n  b:\n    ports:\n");
    for p in 0..64 {
        let up = if p == down { ", up: false" } else { "" };
        yaml.push_str(&format!("      p{p}: {{interface: if{p}{up}}}\n"));
    }
    yaml.push_str("chains:\n");
    for c in 0..chains {
        yaml.push_str(&format!("  c{c}:\n"));
        for r in 0..rules {
            yaml.push_str(&format!(
                "    - {{action: drop, match: {{protocol: tcp, src: 10.{}.{}.{}/32, dst_ports: \"{}\"}}}}\n",
                c % 250,
                r / 250 % 250,
                r % 250,
                r % 60000 + 1
            ));
        }
    }
    vnet_model::load_str(&yaml).expect("a valid topology")
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let chains = args.first().copied().unwrap_or(1190);
    let rules = args.get(1).copied().unwrap_or(100);
    let applies = args.get(2).copied().unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("vnet-apply-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(&dir).unwrap();
    let base = topology(chains, rules, usize::MAX);
    let t = Instant::now();
    store.apply(base.clone(), None).unwrap();
    println!(
        "{} rules: first apply {:.0} ms, disk {} bytes",
        chains * rules,
        t.elapsed().as_secs_f64() * 1e3,
        disk_bytes(&dir)
    );
    let variants: Vec<Topology> = (0..2).map(|i| topology(chains, rules, i)).collect();
    let before = disk_bytes(&dir);
    let mut times = Vec::new();
    let mut grown = Vec::new();
    for i in 0..applies {
        let disk = disk_bytes(&dir) as i64;
        let t = Instant::now();
        store.apply(variants[i % 2].clone(), None).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        grown.push(disk_bytes(&dir) as i64 - disk);
    }
    grown.sort();
    let after = disk_bytes(&dir);
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{applies} applies of a one-port change: median {:.0} ms, max {:.0} ms; \
         disk {before} -> {after} bytes (median {} bytes per revision)",
        times[times.len() / 2],
        times[times.len() - 1],
        grown[grown.len() / 2]
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(peak) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        println!("peak resident memory: {}", peak[6..].trim());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
