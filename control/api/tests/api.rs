//! The gRPC API against the embedded store, in process: a server on a Unix
//! socket in a temporary directory, the model-typed client. No dataplane
//! (vnetd's views are tested end to end in tests/).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{all_files, code, start, start_in, temp_dir, with_errors};
use vnet_api::{ApiConfig, Client, Listeners, Target};
use vnet_model::objects::{Object, ObjectKind};
use vnet_model::{load_file, parse_str, BridgePort, Topology};
use vnet_store::{EmbeddedStore, Store};

/// `stored` with the tunnel keys the store gave taken back out (those
/// `file` has stay); every port placed on a host must have one.
fn without_given_keys(stored: &Topology, file: &Topology) -> Topology {
    let mut t = stored.clone();
    for (d, b) in &mut t.bridges {
        for (p, port) in &mut b.ports {
            assert!(
                port.host.is_none() || port.tunnel_key.is_some(),
                "{d}/{p}: no tunnel key"
            );
            port.tunnel_key = file
                .bridges
                .get(d)
                .and_then(|b| b.ports.get(p))
                .and_then(|p| p.tunnel_key);
        }
    }
    for (d, r) in &mut t.routers {
        for (p, port) in &mut r.ports {
            assert!(
                port.host.is_none() || port.tunnel_key.is_some(),
                "{d}/{p}: no tunnel key"
            );
            port.tunnel_key = file
                .routers
                .get(d)
                .and_then(|r| r.ports.get(p))
                .and_then(|p| p.tunnel_key);
        }
    }
    t
}

#[tokio::test]
async fn every_example_round_trips_through_apply_and_get() {
    let server = start("roundtrip").await;
    let mut c = server.client().await;
    for path in all_files() {
        let topo = load_file(&path).unwrap();
        let out = c.apply(&topo, false, None).await.unwrap();
        assert!(!out.running, "no dataplane: not running");
        let listed = c.list(None).await.unwrap();
        assert_eq!(listed.revision, out.revision);
        // The store adds what it gives: a tunnel key to every placed port.
        assert_eq!(
            without_given_keys(&listed.topology, &topo),
            topo,
            "{} changed through the API",
            path.display()
        );
        // `vnetctl get -o yaml` gives back an equivalent file.
        let yaml = listed.topology.to_yaml();
        assert_eq!(
            parse_str(&yaml).unwrap(),
            listed.topology,
            "{}",
            path.display()
        );
        // Applying it again changes nothing.
        let again = c.apply(&topo, false, None).await.unwrap();
        assert_eq!((again.revision, again.changes.len()), (out.revision, 0));
    }
    server.stop().await;
}

/// Topologies that fail, one per class of validation error; the message
/// must name this path.
const BAD: &[(&str, &str)] = &[
    (
        "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: x, vlan: 5000}\n",
        "bridges.b.ports.p.vlan",
    ),
    (
        "version: 1\nbridges:\n  b:\n    ports:\n      p: {peer: nowhere/p}\n",
        "bridges.b.ports.p.peer",
    ),
    (
        "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: x}\n      q: {interface: x}\n",
        "bridges.b.ports",
    ),
    (
        "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: x, inbound_filter: nope}\n",
        "bridges.b.ports.p.inbound_filter",
    ),
    (
        "version: 1\nrouters:\n  r:\n    ports:\n      a: {address: 10.0.0.1/24, interface: x}\n    routes:\n      - {dst: 0.0.0.0/0, via: 10.9.0.1}\n",
        "routers.r.routes[0]",
    ),
    (
        "version: 1\nchains:\n  c: [{action: jump, chain: missing}]\n",
        "chains.c[0].chain",
    ),
    (
        "version: 1\nnat:\n  - {router: nope, type: floating_ip, public: 192.0.2.5, private: 10.0.0.5, port: up}\n",
        "nat[0].router",
    ),
    (
        "version: 1\nbridges:\n  b:\n    dhcp:\n      - {subnet: 10.0.0.0/24, server: 10.1.0.2}\n",
        "bridges.b.dhcp[0].server",
    ),
    ("version: 2\n", "version"),
];

#[tokio::test]
async fn each_validation_error_is_invalid_argument_and_changes_nothing() {
    let server = start("invalid").await;
    let mut c = server.client().await;
    let good = load_file(&all_files()[0]).unwrap();
    let before = c.apply(&good, false, None).await.unwrap().revision;
    for (yaml, path) in BAD {
        let topo = parse_str(yaml).unwrap();
        for dry_run in [true, false] {
            let e = c.apply(&topo, dry_run, None).await.unwrap_err();
            assert_eq!(code(&e), tonic::Code::InvalidArgument, "{yaml}: {e}");
            assert!(e.to_string().contains(path), "{path} not named: {e}");
        }
        let now = c.list(None).await.unwrap();
        assert_eq!((now.revision, &now.topology), (before, &good), "{yaml}");
    }
    // Single-object changes are validated against the whole topology.
    let port = BridgePort {
        vlan: Some(9999),
        ..Default::default()
    };
    let mut bridge = vnet_model::Bridge::default();
    bridge.ports.insert("p".into(), port);
    let e = c
        .create("extra", &Object::Bridge(bridge))
        .await
        .unwrap_err();
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    assert!(e.to_string().contains("bridges.extra.ports.p.vlan"), "{e}");
    assert_eq!(c.list(None).await.unwrap().revision, before);
    server.stop().await;
}

#[tokio::test]
async fn single_objects_are_created_updated_got_and_deleted() {
    let server = start("objects").await;
    let mut c = server.client().await;
    let chain = parse_str("version: 1\nchains:\n  c: [{action: drop, match: {src: 10.0.0.0/8}}]\n")
        .unwrap()
        .chains["c"]
        .clone();
    let r1 = c.create("c", &Object::Chain(chain.clone())).await.unwrap();
    assert_eq!(r1.changes[0].to_string(), "+ chains.c");
    let e = c.create("c", &Object::Chain(chain)).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::AlreadyExists);
    let r2 = c.update("c", &Object::Chain(vec![])).await.unwrap();
    assert_eq!(r2.revision, r1.revision + 1);
    let (rev, id, object) = c.get(ObjectKind::Chain, "c").await.unwrap();
    assert_eq!((rev, object), (r2.revision, Object::Chain(vec![])));
    assert!(id > 0);
    let e = c.get(ObjectKind::Bridge, "c").await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::NotFound);
    c.delete(ObjectKind::Chain, "c").await.unwrap();
    let e = c.delete(ObjectKind::Chain, "c").await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::NotFound);
    assert_eq!(c.list(None).await.unwrap().topology, Topology::default());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_applies_get_consecutive_revisions() {
    let server = start("concurrent").await;
    let n = 12u64;
    let mut tasks = Vec::new();
    for i in 0..n {
        let socket = server.socket();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&Target::Unix(socket)).await.unwrap();
            let t = parse_str(&format!(
                "version: 1\nip_groups:\n  g{i}: [10.0.0.{}]\n",
                i + 1
            ))
            .unwrap();
            (c.apply(&t, false, None).await.unwrap().revision, t)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut revisions: Vec<u64> = results.iter().map(|r| r.0).collect();
    revisions.sort();
    assert_eq!(revisions, (1..=n).collect::<Vec<_>>());
    // The last revision is the topology its apply sent.
    let last = results.iter().find(|r| r.0 == n).unwrap();
    let mut c = server.client().await;
    assert_eq!(c.list(None).await.unwrap().topology, last.1);
    // A stale expected revision is refused.
    let e = c.apply(&last.1, false, Some(1)).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn watch_streams_the_current_topology_then_every_change() {
    let server = start("watch").await;
    let mut c = server.client().await;
    let a = parse_str("version: 1\nip_groups:\n  g: [10.0.0.1]\n").unwrap();
    c.apply(&a, false, None).await.unwrap();
    let mut w = c.watch(0).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!((first.revision, &first.delta.changed), (1, &a));
    let mut c2 = server.client().await;
    let b = parse_str("version: 1\nip_groups:\n  h: [10.0.0.2]\n").unwrap();
    c2.apply(&b, false, None).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.revision, 2);
    let changes: Vec<String> = next.changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(changes, ["- ip_groups.g", "+ ip_groups.h"]);
    // From a revision in the past: the changes after it.
    let mut w1 = c2.watch(1).await.unwrap();
    assert_eq!(w1.next().await.unwrap().unwrap().revision, 2);
    let e = c2.watch(99).await.err().unwrap();
    assert_eq!(code(&e), tonic::Code::OutOfRange);
    server.stop().await;
}

#[tokio::test]
async fn watch_events_carry_only_what_changed() {
    let server = start("watch-changes").await;
    let mut c = server.client().await;
    let before = parse_str(
        "version: 1\nchains:\n  c: []\n  keep: [{action: accept}]\nbridges:\n  b:\n    ports:\n      p: {interface: a}\n      q: {interface: b}\n  other: {}\n",
    )
    .unwrap();
    let rev = c.apply(&before, false, None).await.unwrap().revision;
    let mut w = c.watch(rev).await.unwrap();
    let after = parse_str(
        "version: 1\nchains:\n  keep: [{action: accept}]\nbridges:\n  b:\n    ports:\n      p: {interface: a, up: false}\n      q: {interface: b}\n  other: {}\n",
    )
    .unwrap();
    c.apply(&after, false, None).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let changes: Vec<String> = e.changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(changes, ["~ bridges.b.ports.p", "- chains.c"]);
    // Only bridge b, whole; chain c by its path; nothing of the rest.
    let b = parse_str(
        "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: a, up: false}\n      q: {interface: b}\n",
    )
    .unwrap();
    assert_eq!(e.delta.changed, b);
    assert_eq!(e.delta.removed, ["chains.c"]);
    // The listed topology plus the events is the current topology.
    let mut t = before.clone();
    e.delta.apply_to(&mut t).unwrap();
    assert_eq!(t, c.list(None).await.unwrap().topology);
    server.stop().await;
}

/// A topology of one IP group of `n` addresses, different for each `v`.
fn group(n: u32, v: u32) -> Topology {
    let mut t = parse_str("version: 1\n").unwrap();
    let addresses = (0..n)
        .map(|a| std::net::Ipv4Addr::from(0x0a00_0000 + v * n + a))
        .collect();
    t.ip_groups.insert("g".into(), addresses);
    t
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_cut_off_with_the_revision_to_go_on_from() {
    let (server, store) = common::start_with_store("watch-cut-off").await;
    let again_store = store.clone();
    let mut c = server.client().await;
    let mut w = c.watch(0).await.unwrap();
    // About 200 KB a revision: the windows of the connection hold a few
    // dozen, the server's queue for the watcher a few dozen more.
    let revisions = 150;
    // Off the runtime's thread: the server feeds the watcher meanwhile.
    tokio::task::spawn_blocking(move || {
        for v in 0..revisions {
            store.apply(group(15_000, v), None).unwrap();
        }
        store
    })
    .await
    .unwrap();
    let mut last = None;
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("the stream goes on or ends")
        {
            Some(Ok(e)) => last = Some(e.revision),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    let last = last.expect("the events sent before the cut-off");
    assert!(last < revisions as u64, "cut off at {last}");
    assert_eq!(code(&err), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "watcher fell behind at revision {last}: watch again from revision {last} or re-list"
        )),
        "{err}"
    );
    // Watching again from there goes on, unless the store has compacted
    // that revision by now: then re-list and go on from the listed one.
    match c.watch(last).await {
        Ok(mut again) => {
            // From 0: the current topology first.
            let e = again.next().await.unwrap().unwrap();
            let next = if last == 0 {
                revisions as u64
            } else {
                last + 1
            };
            assert_eq!(e.revision, next);
        }
        Err(e) => assert_eq!(code(&e), tonic::Code::OutOfRange, "{e}"),
    }
    let listed = c.list(None).await.unwrap();
    let mut w = c.watch(listed.revision).await.unwrap();
    again_store.apply(group(10, 0), None).unwrap();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!(e.revision, listed.revision + 1);
    server.stop().await;
}

#[tokio::test]
async fn the_socket_is_root_only_and_the_store_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let server = start("restart").await;
    let mode = std::fs::metadata(server.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let topo = load_file(&all_files()[0]).unwrap();
    let rev = server
        .client()
        .await
        .apply(&topo, false, None)
        .await
        .unwrap()
        .revision;
    let dir = server.stop().await;
    assert!(
        !dir.join("api.sock").exists(),
        "the socket is removed on stop"
    );
    let server = start_in(dir, None).await;
    let listed = server.client().await.list(None).await.unwrap();
    assert_eq!((listed.revision, listed.topology), (rev, topo));
    // A second server on the same socket is refused, naming it.
    let e = Listeners::bind(&ApiConfig {
        socket: server.socket(),
        listen: None,
        token_file: None,
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("in use"), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn tcp_needs_the_bearer_token() {
    let dir = temp_dir("tcp");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "0123456789abcdef0123\n").unwrap();
    let addr: std::net::SocketAddr = {
        // A free port on loopback.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = start_in(dir, Some((addr, token_file))).await;
    let url = format!("http://{addr}");
    let mut bad = Client::connect(&Target::Tcp {
        url: url.clone(),
        token: "wrong-token-wrong-token".into(),
    })
    .await
    .unwrap();
    let e = bad.list(None).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unauthenticated);
    let mut good = Client::connect(&Target::Tcp {
        url,
        token: "0123456789abcdef0123".into(),
    })
    .await
    .unwrap();
    assert_eq!(good.list(None).await.unwrap().revision, 0);
    // No dataplane behind this server: its views say so.
    let e = good.flows().await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unavailable);
    server.stop().await;
    // Without a token file TCP is refused.
    let e = Listeners::bind(&ApiConfig {
        socket: temp_dir("tcp2").join("api.sock"),
        listen: Some(addr),
        token_file: None,
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("--token-file"), "{e}");
}

/// The child of [`kill_9_during_applies_leaves_the_old_or_the_new_topology`]:
/// applies two topologies in turn until it is killed.
#[test]
fn store_writer_child() {
    let Some(dir) = std::env::var_os("VNET_STORE_CHILD_DIR") else {
        return;
    };
    let store = EmbeddedStore::open(Path::new(&dir)).unwrap();
    let (a, b) = alternating();
    loop {
        let rev = store.current().unwrap().revision;
        let next = if rev.is_multiple_of(2) { &a } else { &b };
        store.apply(next.clone(), None).unwrap();
    }
}

/// Odd revisions hold `a`, even ones `b`.
fn alternating() -> (Topology, Topology) {
    let a = load_file(&all_files()[0]).unwrap();
    let mut b = a.clone();
    b.ip_groups
        .insert("marker".into(), vec!["10.9.9.9".parse().unwrap()]);
    (a, b)
}

#[test]
fn kill_9_during_applies_leaves_the_old_or_the_new_topology() {
    let dir = temp_dir("kill9");
    let (a, b) = alternating();
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    for round in 0..4 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "store_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VNET_STORE_CHILD_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = EmbeddedStore::open(&dir).unwrap();
        let cur = store.current().unwrap();
        assert!(cur.revision >= last, "revisions never go back");
        let want = if cur.revision % 2 == 1 { &a } else { &b };
        if cur.revision > 0 {
            assert_eq!(
                &cur.topology, want,
                "revision {} holds the wrong topology",
                cur.revision
            );
        }
        // The history is whole: every kept revision is there, in order.
        let events = store.events_since(cur.revision.saturating_sub(3)).unwrap();
        assert!(events
            .windows(2)
            .all(|w| w[1].revision == w[0].revision + 1));
        last = cur.revision;
    }
    assert!(last > 0, "the child applied nothing before being killed");
}

/// A raw channel to the server's socket, for the standard services.
async fn channel(socket: PathBuf) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://vnetd.sock")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let s = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test]
async fn standard_health_and_reflection_services_answer() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let server = start("standard").await;
    let ch = channel(server.socket()).await;
    let status = HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "vnet.v1.Vnet".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"vnet.v1.Vnet"), "{names:?}");
    server.stop().await;
}

/// Past ~90 errors the list overflowed the 16 KiB trailer limit and the
/// client saw only "h2 protocol error".
#[tokio::test]
async fn every_validation_error_reaches_the_client_however_many() {
    let server = start("many-errors").await;
    let mut c = server.client().await;
    let n = 2000;
    let topo = parse_str(&with_errors(n)).unwrap();
    assert_eq!(topo.validate().unwrap_err().len(), n);
    let e = c.apply(&topo, true, None).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("invalid topology ({n} errors)")),
        "{text}"
    );
    assert!(text.contains("bridges.b.ports.port0.vlan"), "{text}");
    assert!(text.contains("more (`vnetd --check FILE`"), "{text}");
    assert_eq!(e.validation_error_count(), Some(n));
    assert_eq!(c.list(None).await.unwrap().revision, 0);
    server.stop().await;
}

#[tokio::test]
async fn names_with_control_characters_are_shown_escaped() {
    let server = start("escaped").await;
    let mut c = server.client().await;
    let evil = "evil\u{1b}[2J\nbridges.b: fine";
    let e = c
        .create(evil, &Object::Bridge(Default::default()))
        .await
        .unwrap_err();
    assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");
    let text = e.to_string();
    assert!(
        !text.contains('\u{1b}') && !text.contains("\nbridges.b: fine"),
        "raw control characters: {text:?}"
    );
    assert!(text.contains("evil\\u{1b}[2J\\nbridges.b: fine"), "{text}");
    let e = c.get(ObjectKind::Bridge, evil).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::NotFound);
    assert!(!e.to_string().contains('\u{1b}'), "{e:?}");
    let e = c.delete(ObjectKind::Chain, evil).await.unwrap_err();
    assert!(!e.to_string().contains('\u{1b}'), "{e:?}");
    server.stop().await;
}

#[test]
fn a_socket_path_that_is_not_a_socket_is_refused_and_kept() {
    let dir = temp_dir("not-a-socket");
    let path = dir.join("precious.txt");
    std::fs::write(&path, "keep me").unwrap();
    let e = Listeners::bind(&ApiConfig {
        socket: path.clone(),
        listen: None,
        token_file: None,
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    std::fs::create_dir(dir.join("a-dir")).unwrap();
    let e = Listeners::bind(&ApiConfig {
        socket: dir.join("a-dir"),
        listen: None,
        token_file: None,
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert!(dir.join("a-dir").is_dir());
}

/// A name far longer than any trailer can carry still gets its error back.
#[tokio::test]
async fn an_enormous_name_gets_a_bounded_error_not_a_protocol_error() {
    let server = start("long-name").await;
    let mut c = server.client().await;
    let name = "x".repeat(100_000);
    let e = c
        .create(&name, &Object::Bridge(Default::default()))
        .await
        .unwrap_err();
    assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("is not valid"), "{e}");
    assert!(e.to_string().len() < 8192, "{} bytes", e.to_string().len());
    let e = c.get(ObjectKind::Bridge, &name).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::NotFound, "{e}");
    let e = c.delete(ObjectKind::Chain, &name).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::NotFound, "{e}");
    server.stop().await;
}

#[tokio::test]
async fn hosts_are_the_declared_ones_with_their_ports_and_none_alive_in_the_embedded_store() {
    let server = start("hosts").await;
    let mut c = server.client().await;
    let (_, hosts) = c.hosts().await.unwrap();
    assert!(hosts.is_empty());
    let topo = parse_str(
        "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  h2: {tunnel_address: 192.0.2.2}\nbridges:\n  t:\n    ports:\n      vm1: {interface: vm1-h, host: h1}\n      vm2: {interface: vm2-h}\nrouters:\n  r:\n    ports:\n      up: {address: 192.0.2.9/24, interface: up-h, host: h1}\n",
    )
    .unwrap();
    let out = c.apply(&topo, false, None).await.unwrap();
    let (revision, hosts) = c.hosts().await.unwrap();
    assert_eq!(revision, out.revision);
    let shown: Vec<_> = hosts
        .iter()
        .map(|h| {
            (
                h.name.as_str(),
                h.tunnel_address.as_str(),
                h.alive,
                h.registered,
                h.ports.clone(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                "h1",
                "192.0.2.1",
                false,
                false,
                vec!["t/vm1".to_string(), "r/up".to_string()]
            ),
            ("h2", "192.0.2.2", false, false, vec![]),
        ]
    );
    server.stop().await;
}
