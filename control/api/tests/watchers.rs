//! Watchers that stop reading cost the server a bounded amount of memory:
//! each one's queue is cut off, not grown. Its own test binary, so that the
//! process's memory (/proc/self/status) is this test's alone.

mod common;

use std::time::Duration;

use common::{code, start_with_store};
use vnet_model::Topology;
use vnet_store::Store;

const GROUPS: u32 = 6;
const ADDRESSES: u32 = 10_000;

/// Six groups of 10k addresses (about 870 KB as JSON, 240 KB in memory);
/// revision `v` changes the first one (about 145 KB).
fn topology(v: u32) -> Topology {
    let mut t = Topology {
        version: 1,
        ..Topology::default()
    };
    for g in 0..GROUPS {
        let base = if g == 0 {
            v * ADDRESSES
        } else {
            (1000 + g) * ADDRESSES
        };
        let addresses = (0..ADDRESSES)
            .map(|a| std::net::Ipv4Addr::from(0x0a00_0000 + base + a))
            .collect();
        t.ip_groups.insert(format!("g{g}"), addresses);
    }
    t
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_stalled_watchers_are_cut_off_and_memory_stays_bounded() {
    let (server, store) = start_with_store("stalled-watchers").await;
    store.apply(topology(0), None).unwrap();
    // Ten watchers, each on its own connection, that never read.
    let mut watchers = Vec::new();
    for _ in 0..10 {
        let mut c = server.client().await;
        let w = c.watch(0).await.unwrap();
        watchers.push((w, c));
    }
    let applies = 200;
    let (base, peak) = tokio::task::spawn_blocking(move || {
        let base = rss();
        let mut peak = base;
        for v in 1..=applies {
            store.apply(topology(v), None).unwrap();
            peak = peak.max(rss());
        }
        (base, peak)
    })
    .await
    .unwrap();
    let grown = peak.saturating_sub(base) >> 20;
    eprintln!(
        "{applies} applies, 10 stalled watchers: resident memory grew by {grown} MiB at most"
    );
    // Before watchers were cut off, each one's task held up to 64 whole
    // topologies plus 16 encoded ones (about 30 MB each here: 300 MB for
    // ten); now each holds at most its queue (8 MiB) and what is in flight.
    assert!(grown < 150, "resident memory grew by {grown} MiB");
    // Each watcher, when it reads at last, gets what was in flight, then
    // the error saying where to go on from.
    for (mut w, _c) in watchers {
        let mut last = 0;
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(30), w.next())
                .await
                .expect("the stream goes on or ends")
            {
                Some(Ok(e)) => last = e.revision,
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        };
        assert_eq!(code(&err), tonic::Code::ResourceExhausted, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("watcher fell behind at revision {last}")),
            "{err}"
        );
        assert!(last < applies as u64 / 2, "cut off at revision {last}");
    }
    server.stop().await;
}
