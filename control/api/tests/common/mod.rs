//! The API test harness: a server on a Unix socket in a temporary
//! directory over the embedded store, no dataplane. Shared by the API's
//! tests and vnetctl's (control/vnetctl/tests).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use vnet_api::{ApiConfig, Client, Listeners, Target};
use vnet_store::{EmbeddedStore, Store};

/// The topology fixtures live with the model's tests.
#[path = "../../../model/tests/common/mod.rs"]
mod fixtures;
// Not every test binary uses it.
#[allow(unused_imports)]
pub use fixtures::all_files;

pub struct Server {
    pub dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    pub async fn client(&self) -> Client {
        Client::connect(&Target::Unix(self.socket())).await.unwrap()
    }

    pub async fn stop(self) -> PathBuf {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.dir
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vnet-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub async fn start_in(dir: PathBuf, listen: Option<(std::net::SocketAddr, PathBuf)>) -> Server {
    let store = Arc::new(EmbeddedStore::open(&dir.join("state")).unwrap());
    serve_store(dir, listen, store)
}

/// A server over the returned store, which the test may change directly
/// (faster than through the API for many big changes).
pub async fn start_with_store(name: &str) -> (Server, Arc<EmbeddedStore>) {
    let dir = temp_dir(name);
    let store = Arc::new(EmbeddedStore::open(&dir.join("state")).unwrap());
    (serve_store(dir, None, store.clone()), store)
}

fn serve_store(
    dir: PathBuf,
    listen: Option<(std::net::SocketAddr, PathBuf)>,
    store: Arc<EmbeddedStore>,
) -> Server {
    let listeners = Listeners::bind(&ApiConfig {
        socket: dir.join("api.sock"),
        listen: listen.as_ref().map(|l| l.0),
        token_file: listen.map(|l| l.1),
    })
    .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let s: Arc<dyn Store> = store;
    let task = tokio::spawn(async move {
        vnet_api::serve(listeners, s, None, rx).await.unwrap();
    });
    Server { dir, stop, task }
}

pub async fn start(name: &str) -> Server {
    start_in(temp_dir(name), None).await
}

pub fn code(e: &vnet_api::ClientError) -> tonic::Code {
    e.code().unwrap_or(tonic::Code::Unknown)
}

/// A topology with `n` validation errors, each naming its own port.
pub fn with_errors(n: usize) -> String {
    let mut yaml = "version: 1\nbridges:\n  b:\n    ports:\n".to_string();
    for i in 0..n {
        yaml.push_str(&format!(
            "      port{i}: {{interface: if{i}, vlan: 5000}}\n"
        ));
    }
    yaml
}
