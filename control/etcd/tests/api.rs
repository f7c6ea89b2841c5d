//! The gRPC API served by two "hosts" (two API servers, each over its own
//! etcd store client) sharing one real etcd, on a single-threaded tokio
//! runtime: the store's synchronous calls from the API's async code must
//! neither panic nor deadlock it. Fails when etcd cannot be started.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vnet_api::{ApiConfig, Client, Listeners, Target};
use vnet_etcd::server::EtcdServer;
use vnet_etcd::EtcdStore;
use vnet_store::Store;

struct Host {
    socket: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Host {
    fn serve(name: &str, store: EtcdStore) -> Host {
        let dir = std::env::temp_dir().join(format!("vnet-etcd-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        let listeners = Listeners::bind(&ApiConfig {
            socket: socket.clone(),
            listen: None,
            token_file: None,
        })
        .unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let store: Arc<dyn Store> = Arc::new(store);
        let task = tokio::spawn(async move {
            vnet_api::serve(listeners, store, None, rx).await.unwrap();
        });
        Host { socket, stop, task }
    }

    async fn client(&self) -> Client {
        Client::connect(&Target::Unix(self.socket.clone()))
            .await
            .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

const T1: &str = "version: 1
hosts:
  h1: {tunnel_address: 192.0.2.1}
  h2: {tunnel_address: 192.0.2.2}
bridges:
  tenant:
    ports:
      vm1: {interface: vm1-h, host: h1}
      vm2: {interface: vm2-h, host: h2}
";

#[tokio::test]
async fn two_hosts_serve_one_topology_from_etcd() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
    let s1 = EtcdStore::connect(&etcd.url()).unwrap();
    s1.register_host("h1", Ipv4Addr::new(192, 0, 2, 1), 3)
        .unwrap();
    let h1 = Host::serve("h1", s1);
    let h2 = Host::serve("h2", EtcdStore::connect(&etcd.url()).unwrap());
    let (mut c1, mut c2) = (h1.client().await, h2.client().await);

    // A watcher on h2 from the start.
    let mut watch = c2.watch(0).await.unwrap();
    let t1 = vnet_model::load_str(T1).unwrap();
    let out = c1.apply(&t1, false, None).await.unwrap();
    assert_eq!(out.revision, 1);
    let listed = c2.list(None).await.unwrap();
    // As stored: the placed ports with the tunnel keys the store gave.
    let mut stored = t1.clone();
    stored
        .keep_tunnel_keys(&vnet_model::Topology::default())
        .unwrap();
    assert_eq!((listed.revision, &listed.topology), (1, &stored));
    // The current topology first (the empty one at 0), then the change.
    let mut seen = Vec::new();
    while seen.last() != Some(&1) {
        let e = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the watch on h2 saw the apply through h1")
            .unwrap()
            .unwrap();
        seen.push(e.revision);
    }
    assert_eq!(seen, [0, 1]);

    // Racing applies at the same revision through the two hosts: one wins,
    // the other is told to read again.
    let mut t2 = t1.clone();
    t2.bridges.get_mut("tenant").unwrap().ports.remove("vm2");
    let mut t3 = t1.clone();
    t3.bridges.get_mut("tenant").unwrap().ports.remove("vm1");
    let (r2, r3) = tokio::join!(c1.apply(&t2, false, Some(1)), c2.apply(&t3, false, Some(1)));
    let lost = match (r2, r3) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        other => panic!("exactly one apply must win: {other:?}"),
    };
    assert!(
        format!("{:?}", lost.code()).contains("FailedPrecondition"),
        "{lost}"
    );
    let second = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch on h2 saw the winner")
        .unwrap()
        .unwrap();
    assert_eq!(second.revision, 2);

    // Hosts: h1 registered and alive; h2 only declared, so dead; the ports
    // of each.
    let (_, hosts) = c2.hosts().await.unwrap();
    let shown: Vec<_> = hosts
        .iter()
        .map(|h| {
            (
                h.name.as_str(),
                h.tunnel_address.as_str(),
                h.alive,
                h.registered,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("h1", "192.0.2.1", true, true),
            ("h2", "192.0.2.2", false, false)
        ]
    );
    h1.stop().await;
    h2.stop().await;
}
