//! The Store contract against a real etcd (Debian's etcd-server 3.4, started
//! per test on its own ports and tmpfs data). A test fails when etcd cannot
//! be started.

use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use vnet_etcd::server::EtcdServer;
use vnet_etcd::EtcdStore;
use vnet_model::objects::{Object, ObjectKind};
use vnet_model::Topology;
use vnet_store::{NatBlockClaim, Store, StoreError, HISTORY};

fn etcd() -> EtcdServer {
    EtcdServer::start().unwrap_or_else(|e| panic!("cannot start etcd for this test: {e}"))
}

fn store(server: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(&server.url()).unwrap()
}

fn topo(yaml: &str) -> Topology {
    vnet_model::load_str(yaml).unwrap()
}

const A: &str = "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: a}\n";
const B: &str = "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: a, up: false}\n";

fn bridge(n: usize) -> Topology {
    topo(&format!(
        "version: 1\nbridges:\n  b{n}:\n    ports:\n      p: {{interface: a{n}}}\n"
    ))
}

/// Polls `f` every 20 ms until it holds or `timeout` passes.
fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn apply_conflict_events_and_ids_as_the_embedded_store() {
    let server = etcd();
    let s = store(&server);
    assert_eq!(s.current().unwrap().revision, 0);
    assert!(s.events_since(0).unwrap().is_empty());
    assert_eq!(s.apply(topo(A), None).unwrap().revision, 1);
    // Same topology again: nothing new.
    let same = s.apply(topo(A), None).unwrap();
    assert_eq!((same.revision, same.changes.len()), (1, 0));
    let b = s.apply(topo(B), Some(1)).unwrap();
    assert_eq!(b.revision, 2);
    assert_eq!(b.changes[0].to_string(), "~ bridges.b.ports.p");
    assert!(matches!(
        s.apply(topo(A), Some(1)),
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2
        })
    ));
    // An invalid change stores nothing.
    let bad =
        vnet_model::parse_str("version: 1\nbridges:\n  b:\n    ports:\n      p: {vlan: 5000}\n")
            .unwrap();
    let err = s.apply(bad, None).unwrap_err();
    assert!(err.to_string().contains("bridges.b.ports.p.vlan"), "{err}");
    assert_eq!(s.current().unwrap().revision, 2);

    // Another client (another host) sees the same store.
    let other = store(&server);
    let cur = other.current().unwrap();
    assert_eq!((cur.revision, cur.topology), (2, topo(B)));
    let ids = other.object_ids().unwrap();
    assert_eq!(ids.get("bridges.b"), Some(&1));
    let events = other.events_since(0).unwrap();
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [1, 2]
    );
    // The deltas turn the empty topology into the current one.
    let mut t = Topology::default();
    for e in &events {
        e.delta.apply_to(&mut t).unwrap();
    }
    assert_eq!(t, topo(B));
    assert!(other.events_since(2).unwrap().is_empty());
    assert!(matches!(
        other.events_since(3),
        Err(StoreError::FutureRevision {
            requested: 3,
            current: 2
        })
    ));

    // Single-object changes; ids stay with names, new names get new ids.
    other.create("c", Object::Chain(Vec::new())).unwrap();
    assert!(matches!(
        s.create("c", Object::Chain(Vec::new())),
        Err(StoreError::AlreadyExists { .. })
    ));
    s.delete(ObjectKind::Bridge, "b").unwrap();
    let ids = s.object_ids().unwrap();
    assert_eq!(ids.get("chains.c"), Some(&2));
    assert_eq!(ids.get("bridges.b"), None);
    s.apply(topo(A), None).unwrap();
    assert_eq!(s.object_ids().unwrap().get("bridges.b"), Some(&3));
    assert_eq!(s.current().unwrap().revision, 5);
}

#[test]
fn every_section_round_trips_through_etcd() {
    let server = etcd();
    let s = store(&server);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.push(root.join("control/model/tests/data/everything.yaml"));
    files.sort();
    let hosts = topo(
        "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  h2: {tunnel_address: 192.0.2.2}\nbridges:\n  t:\n    ports:\n      vm1: {interface: vm1, host: h1}\n      vm2: {interface: vm1, host: h2}\n",
    );
    let mut all: Vec<Topology> = files
        .iter()
        .map(|f| vnet_model::load_file(f).unwrap())
        .collect();
    all.push(hosts);
    all.push(Topology::default());
    let (mut revision, mut given) = (0, 0);
    for t in &mut all {
        let before = s.current().unwrap().topology;
        let applied = s.apply(t.clone(), None).unwrap();
        if !applied.changes.is_empty() {
            revision += 1;
        }
        assert_eq!(applied.revision, revision);
        // As stored: placed ports get the tunnel keys the store gives,
        // above every key it gave before.
        t.keep_tunnel_keys_above(&before, given).unwrap();
        given = given.max(t.highest_tunnel_key());
        assert_eq!(&s.current().unwrap().topology, t);
    }
    // Replaying every change from the start gives each topology in turn.
    let mut t = Topology::default();
    for e in s.events_since(0).unwrap() {
        e.delta.apply_to(&mut t).unwrap();
    }
    assert_eq!(t, Topology::default());
}

#[test]
fn two_applies_racing_from_two_clients_never_both_win() {
    let server = etcd();
    let (a, b) = (Arc::new(store(&server)), Arc::new(store(&server)));
    a.apply(bridge(0), None).unwrap();
    for round in 1..=10u64 {
        let base = a.current().unwrap().revision;
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [
            (a.clone(), 2 * round as usize),
            (b.clone(), 2 * round as usize + 1),
        ]
        .into_iter()
        .map(|(s, n)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                s.apply(bridge(n), Some(base))
            })
        })
        .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::Conflict { expected, actual } if *expected == base && *actual == base + 1),
                    "{e}"
                );
            }
        }
        assert_eq!(a.current().unwrap().revision, base + 1);
    }
}

#[test]
fn changes_without_an_expected_revision_serialise_across_clients() {
    let server = etcd();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let s = store(&server);
            std::thread::spawn(move || {
                for i in 0..15 {
                    let name = format!("w{w}-{i}");
                    s.create(&name, Object::Chain(Vec::new())).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let s = store(&server);
    let cur = s.current().unwrap();
    assert_eq!(cur.revision, 30);
    assert_eq!(cur.topology.chains.len(), 30);
    let events = s.events_since(0).unwrap();
    assert_eq!(events.len(), 30);
    // Each revision added one chain: none was lost or merged.
    assert!(events.iter().all(|e| e.changes.len() == 1));
    let ids: std::collections::BTreeSet<u64> = s.object_ids().unwrap().into_values().collect();
    assert_eq!(ids.len(), 30);
}

#[test]
fn history_is_bounded_and_a_late_watcher_is_told_to_relist() {
    let server = etcd();
    let s = store(&server);
    let n = HISTORY as u64 + 5;
    for i in 0..n {
        s.apply(bridge(i as usize), None).unwrap();
    }
    let oldest = n - HISTORY as u64;
    match s.events_since(0) {
        Err(StoreError::Compacted {
            requested,
            oldest: o,
        }) => {
            assert_eq!((requested, o), (0, oldest));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        s.events_since(oldest - 1),
        Err(StoreError::Compacted { .. })
    ));
    // Re-list, then go on from there.
    let cur = s.current().unwrap();
    assert_eq!(cur.topology, bridge(n as usize - 1));
    assert_eq!(s.events_since(oldest).unwrap().len(), HISTORY);
    s.apply(bridge(1000), None).unwrap();
    let after = s.events_since(cur.revision).unwrap();
    assert_eq!(after.len(), 1);
    let mut t = cur.topology;
    after[0].delta.apply_to(&mut t).unwrap();
    assert_eq!(t, bridge(1000));
    // Only the kept records are in etcd.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = rt.block_on(async {
        let mut c = etcd_client::Client::connect([format!("http://{}", server.client)], None)
            .await
            .unwrap();
        c.get(
            "/vnet/topo/log/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap()
        .count()
    });
    assert_eq!(records, HISTORY as i64);
}

#[test]
fn subscribe_wakes_on_changes_from_another_client_across_etcd_compaction() {
    let server = etcd();
    let (a, b) = (store(&server), store(&server));
    let mut rx = b.subscribe();
    assert_eq!(*rx.borrow_and_update(), 0);
    a.apply(topo(A), None).unwrap();
    assert!(poll(Duration::from_secs(5), || rx
        .has_changed()
        .unwrap_or(false)));
    assert_eq!(*rx.borrow_and_update(), 1);
    // etcd compacts its history (as --auto-compaction does): the store's
    // history and the watch go on.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([format!("http://{}", server.client)], None)
            .await
            .unwrap();
        let at = c.get("x", None).await.unwrap().header().unwrap().revision();
        c.compact(at, None).await.unwrap();
    });
    a.apply(topo(B), None).unwrap();
    assert!(poll(Duration::from_secs(5), || *b.subscribe().borrow() == 2));
    assert_eq!(b.events_since(0).unwrap().len(), 2);
}

/// With two hosts registered, a port bound to an interface must name its
/// host; with one, it need not (a single host, as with the embedded store).
#[test]
fn with_two_hosts_a_bound_port_must_name_its_host() {
    let server = etcd();
    let s = store(&server);
    let unplaced = "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  \
                    h2: {tunnel_address: 192.0.2.2}\nbridges:\n  b:\n    ports:\n      \
                    p: {interface: p-h}\n      q: {}\n";
    s.register_host("h1", Ipv4Addr::new(192, 0, 2, 1), 5)
        .unwrap();
    s.apply(topo(unplaced), None)
        .expect("one host: a port on none is this one's");
    let h2 = store(&server);
    h2.register_host("h2", Ipv4Addr::new(192, 0, 2, 2), 5)
        .unwrap();
    let changed = topo(&unplaced.replace("p-h}", "p-h, up: false}"));
    // A dry run says the same as the change, and neither stores anything.
    for err in [
        s.plan(&changed).unwrap_err(),
        s.apply(changed, None).unwrap_err(),
    ] {
        assert!(
            matches!(&err, StoreError::Invalid(e) if e.len() == 1
                && e[0].to_string().contains("bridges.b.ports.p.host")),
            "{err}"
        );
    }
    assert_eq!(s.current().unwrap().revision, 1);
    let placed = unplaced.replace("p: {interface: p-h}", "p: {interface: p-h, host: h2}");
    s.apply(topo(&placed), None).expect("placed: fine");
}

#[test]
fn hosts_register_under_leases_and_a_name_is_held_by_one_live_vnetd() {
    let server = etcd();
    let observer = store(&server);
    assert!(observer.registered_hosts().unwrap().is_empty());
    let h1 = store(&server);
    h1.register_host("h1", Ipv4Addr::new(192, 0, 2, 1), 2)
        .unwrap();
    let h2 = store(&server);
    h2.register_host("h2", Ipv4Addr::new(192, 0, 2, 2), 2)
        .unwrap();
    let hosts = observer.registered_hosts().unwrap();
    let shown: Vec<_> = hosts
        .iter()
        .map(|h| (h.name.as_str(), h.tunnel_address.as_str(), h.alive))
        .collect();
    assert_eq!(
        shown,
        [("h1", "192.0.2.1", true), ("h2", "192.0.2.2", true)]
    );
    // Kept alive past several TTLs.
    std::thread::sleep(Duration::from_secs(5));
    assert!(observer.registered_hosts().unwrap().iter().all(|h| h.alive));
    // Bad names and TTLs are refused, saying what is accepted.
    let err = h2
        .register_host("h/3", Ipv4Addr::new(192, 0, 2, 3), 2)
        .unwrap_err();
    assert!(err.to_string().contains("1 to 64 letters"), "{err}");
    let err = h2
        .register_host("h3", Ipv4Addr::new(192, 0, 2, 3), i64::MAX)
        .unwrap_err();
    assert!(err.to_string().contains("give 2 to 3600"), "{err}");
    // A second vnetd cannot take a live host's name.
    let dup = store(&server);
    let err = dup
        .register_host("h1", Ipv4Addr::new(192, 0, 2, 9), 2)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another vnetd is registered as host h1"),
        "{err}"
    );
    // A clean exit revokes the lease: dead at once, still listed.
    drop(h2);
    let hosts = observer.registered_hosts().unwrap();
    assert_eq!(
        hosts
            .iter()
            .map(|h| (h.name.as_str(), h.alive))
            .collect::<Vec<_>>(),
        [("h1", true), ("h2", false)]
    );
    // And the name is free again.
    dup.register_host("h2", Ipv4Addr::new(192, 0, 2, 2), 2)
        .unwrap();
    assert!(observer.registered_hosts().unwrap().iter().all(|h| h.alive));
}

#[test]
fn an_unreachable_etcd_is_an_error_naming_it_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("etcd://127.0.0.1:{port}");
    let started = Instant::now();
    let err = EtcdStore::connect(&url).unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains(&url), "{err}");
    for bad in [
        "http://h:1",
        "etcd://",
        "etcd://h",
        "etcd://h:0",
        "etcd://h:1,:2",
    ] {
        let err = EtcdStore::connect(bad).unwrap_err().to_string();
        assert!(err.contains("etcd://HOST:PORT"), "{bad}: {err}");
    }
}

#[test]
fn an_etcd_outage_is_an_error_and_the_store_catches_up_after_it() {
    let mut server = etcd();
    let (a, b) = (store(&server), store(&server));
    b.register_host("h2", Ipv4Addr::new(192, 0, 2, 2), 2)
        .unwrap();
    a.apply(topo(A), None).unwrap();
    server.kill();
    let started = Instant::now();
    let err = a.current().unwrap_err().to_string();
    assert!(err.contains(&server.url()), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "{:?}",
        started.elapsed()
    );
    // Longer than the lease's TTL.
    std::thread::sleep(Duration::from_secs(3));
    server.restart().unwrap();
    let mut rx = b.subscribe();
    rx.borrow_and_update();
    assert!(poll(Duration::from_secs(20), || a
        .apply(topo(B), None)
        .is_ok()));
    assert_eq!(a.current().unwrap().revision, 2);
    // The watch came back by itself.
    assert!(poll(Duration::from_secs(20), || *rx.borrow() == 2));
    assert_eq!(b.events_since(1).unwrap().len(), 1);
    // And the host is registered again (a new lease if the old one expired).
    assert!(poll(Duration::from_secs(20), || {
        a.registered_hosts()
            .is_ok_and(|h| h.len() == 1 && h[0].alive)
    }));
}

fn bridges(from: usize, n: usize) -> Topology {
    let mut y = String::from("version: 1\nbridges:\n");
    for b in from..from + n {
        y += &format!("  b{b}:\n    ports:\n      p: {{interface: i{b}}}\n");
    }
    topo(&y)
}

#[test]
fn an_apply_of_many_objects_is_one_revision_and_a_too_large_one_says_why() {
    let server = etcd();
    let s = store(&server);
    // More objects than etcd allows operations in one Txn (128): still one
    // atomic revision.
    assert_eq!(s.apply(bridges(0, 500), None).unwrap().revision, 1);
    let replaced = s.apply(bridges(500, 500), None).unwrap();
    assert_eq!((replaced.revision, replaced.changes.len()), (2, 1000));
    let other = store(&server);
    assert_eq!(other.current().unwrap().topology, bridges(500, 500));
    assert_eq!(other.object_ids().unwrap().len(), 500);
    // A change beyond etcd's request limit (1.5 MiB by default) stores
    // nothing and says what to do.
    let err = s.apply(bridges(0, 20_000), None).unwrap_err().to_string();
    assert!(err.contains("--max-request-bytes"), "{err}");
    assert_eq!(other.current().unwrap().revision, 2);
}

fn nat_claim(host: &str, held: &[u16], more: usize, ports: (u16, u16)) -> NatBlockClaim {
    NatBlockClaim {
        host: host.to_string(),
        address: Ipv4Addr::new(203, 0, 113, 10),
        ports,
        held: held.to_vec(),
        more,
    }
}

/// SNAT port blocks (many hosts): two hosts claiming blocks of one address
/// at the same time never hold the same one; a claim takes only blocks
/// that overlap the ports asked for, gives what it holds again when asked
/// for nothing more, and needs a registration; a host that leaves frees
/// its blocks, and one that comes back takes the same ones again.
#[test]
fn snat_port_blocks_are_held_by_one_host_each() {
    let server = etcd();
    let (h1, h2) = (Arc::new(store(&server)), Arc::new(store(&server)));
    h1.register_host("h1", Ipv4Addr::new(192, 0, 2, 1), 2)
        .unwrap();
    h2.register_host("h2", Ipv4Addr::new(192, 0, 2, 2), 2)
        .unwrap();
    let all = (1024, 65535);

    let anon = store(&server);
    let err = anon
        .claim_nat_blocks(&nat_claim("h3", &[], 1, all))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not registered"), "{err}");

    // Racing: both ask for 450 of the 1008 blocks of 1024-65535 at once
    // (several Txns each: etcd takes at most 128 operations in one).
    let barrier = Arc::new(Barrier::new(2));
    let race = |s: Arc<EtcdStore>, host: &'static str| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            barrier.wait();
            s.claim_nat_blocks(&nat_claim(host, &[], 450, all))
                .unwrap()
                .unwrap()
        })
    };
    let (a, b) = (race(h1.clone(), "h1"), race(h2.clone(), "h2"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!((a.len(), b.len()), (450, 450));
    assert!(a.iter().all(|x| !b.contains(x)), "a block held by both");
    assert!(
        a.iter().chain(&b).all(|&x| x >= 16),
        "a block below port 1024"
    );
    // Asking for nothing more gives the same blocks.
    assert_eq!(
        h1.claim_nat_blocks(&nat_claim("h1", &a, 0, all))
            .unwrap()
            .unwrap(),
        a
    );
    // Only 108 are left: h2 gets them all, no more.
    let b2 = h2
        .claim_nat_blocks(&nat_claim("h2", &b, 200, all))
        .unwrap()
        .unwrap();
    assert_eq!(b2.len(), 558);
    // A range within one block: that block only, if free.
    let small = (5000, 5010);
    let held_by = if a.contains(&78) { "h1" } else { "h2" };
    let other = if held_by == "h1" { &h2 } else { &h1 };
    let other_name = if held_by == "h1" { "h2" } else { "h1" };
    let got = other
        .claim_nat_blocks(&nat_claim(other_name, &[], 1, small))
        .unwrap()
        .unwrap();
    assert!(!got.contains(&78), "block 78 is {held_by}'s");

    // h1 leaves (its lease revoked): its blocks are free for h2.
    drop(h1);
    let b3 = h2
        .claim_nat_blocks(&nat_claim("h2", &b2, 1, all))
        .unwrap()
        .unwrap();
    assert_eq!(b3.len(), 559);
    assert!(a.iter().any(|x| b3.contains(x)));
}

/// A host whose blocks were freed (its lease ran out: a restart, a long
/// etcd outage) takes the same ones back, first to last, while nobody took
/// them: they hold the ports its kernel flows still translate.
#[test]
fn a_returning_host_takes_back_its_snat_blocks() {
    let server = etcd();
    let h1 = store(&server);
    let h2 = store(&server);
    h1.register_host("h1", Ipv4Addr::new(192, 0, 2, 1), 2)
        .unwrap();
    h2.register_host("h2", Ipv4Addr::new(192, 0, 2, 2), 2)
        .unwrap();
    let all = (1024, 65535);
    let one = |s: &EtcdStore, host: &str, held: &[u16]| {
        s.claim_nat_blocks(&nat_claim(host, held, 1, all))
            .unwrap()
            .unwrap()
    };
    let first = one(&h1, "h1", &[]);
    let second = one(&h1, "h1", &first);
    let theirs = one(&h2, "h2", &[]);
    assert_eq!((first.len(), second.len(), theirs.len()), (1, 2, 1));
    assert!(!second.contains(&theirs[0]));
    drop(h1);
    let h1 = store(&server);
    h1.register_host("h1", Ipv4Addr::new(192, 0, 2, 1), 2)
        .unwrap();
    assert_eq!(one(&h1, "h1", &[]), first);
    assert_eq!(one(&h1, "h1", &first), second);
}

/// The highest tunnel key ever given is never given again, even once its
/// port is deleted: a host cut off from etcd may still route by it.
#[test]
fn a_deleted_ports_tunnel_key_is_never_given_again() {
    let server = etcd();
    let s = store(&server);
    let with = |ports: &str| {
        topo(&format!(
            "version: 1\nhosts:\n  h1: {{tunnel_address: 192.0.2.1}}\nbridges:\n  b:\n    ports:\n{ports}"
        ))
    };
    let key = |port: &str| s.current().unwrap().topology.bridges["b"].ports[port].tunnel_key;
    s.apply(
        with("      a: {interface: a-h, host: h1}\n      b: {interface: b-h, host: h1}\n"),
        None,
    )
    .unwrap();
    assert_eq!((key("a"), key("b")), (Some(1), Some(2)));
    s.apply(with("      a: {interface: a-h, host: h1}\n"), None)
        .unwrap();
    s.apply(
        with("      a: {interface: a-h, host: h1}\n      c: {interface: c-h, host: h1}\n"),
        None,
    )
    .unwrap();
    assert_eq!(key("c"), Some(3), "b's key 2 was given before");
    // Nor may a file write it.
    let err = s
        .apply(
            with("      a: {interface: a-h, host: h1}\n      c: {interface: c-h, host: h1}\n      d: {interface: d-h, host: h1, tunnel_key: 3}\n"),
            None,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("not above the keys already given"),
        "{err}"
    );
}
