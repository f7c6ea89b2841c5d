//! vnet's topology store in etcd: the same [`vnet_store::Store`] as the
//! embedded store, shared by the vnetds of many hosts, and the hosts'
//! registrations under leases (their liveness).
//!
//! # Layout (under a prefix, `/vnet/` by default)
//!
//! | key | value | written |
//! |---|---|---|
//! | `topo/head` | [`layout::Head`]: the vnet revision, the next object id, the format version, the kept log's revisions and sizes | by every change |
//! | `topo/obj/NN` (NN < [`layout::BUCKETS`]) | the named objects (a bridge with its ports, a router, a chain, a group) whose path hashes to bucket NN, each with its stable id | when one of them changes |
//! | `topo/sec/{nat,firewall,hosts}` | the whole section | when that section changes |
//! | `topo/log/<revision, 20 digits>` | the revision's changes and [`vnet_store::Delta`] (for watchers) | by every change; the oldest deleted past the bounds |
//! | `hosts/live/<name>` | `{tunnel_address}` under the host's lease | by that host's vnetd |
//! | `hosts/known/<name>` | `{tunnel_address}`, no lease | by that host's vnetd, at registration |
//! | `nat/<address>/<block, 4 digits>` | the name of the host holding that SNAT port block (64 ports), under its lease | by that host's vnetd, when its SNAT needs ports (nat.rs) |
//!
//! **Objects in 32 bucket keys: neither one key per object nor one key
//! holding the document.** Measured against etcd 3.4: one key per object
//! fails for any apply of more than about 120 objects, because etcd refuses
//! a Txn of more than `--max-txn-ops` (128 by default) operations, and an
//! apply must be one Txn to be atomic. One key for the document makes every
//! change of one port rewrite the whole topology, over the network and in
//! etcd's MVCC history, and meets etcd's request limit
//! (`--max-request-bytes`, 1.5 MiB) at a topology of that size whatever
//! the change. Objects hashed (FNV-1a of `bridges.b`) into 32 keys bound a
//! change to 32 + 6 operations, and a one-object change writes about 1/32
//! of the topology. A change larger than etcd's request limit is refused,
//! storing nothing, with an error naming `--max-request-bytes`. Measured
//! (release build, etcd on tmpfs, 4-port bridges): 1000 bridges (130 kB of
//! JSON) apply in 70 ms, a one-port change then takes 51 ms and `current()`
//! 14 ms; 3000 bridges: 206, 164 and 69 ms. A change costs what reading,
//! validating and diffing the whole topology costs, as the `Store`
//! contract asks (validated whole), plus one round trip. Reading the current
//! topology is one range read of `topo/obj/` and `topo/sec/` inside one
//! read-only Txn, so it is taken at one etcd revision: never half of a
//! change.
//!
//! **Every change is one etcd Txn guarded by `mod_revision(topo/head)`.**
//! A change reads the head (its etcd `mod_revision` R) and the objects at
//! one etcd revision, runs the edit, validates the whole result, and
//! commits `when mod_revision(topo/head) == R` (0: no head yet) the
//! rewritten buckets and sections, the new head and the log record. Two
//! changes that read the same head cannot both commit: the second one's
//! compare fails. With an expected revision the loser gets
//! [`StoreError::Conflict`]; without one it reads again, edits again and
//! retries (a few times), which is what "each change sees the result of the
//! one before" means when writers sit on different hosts.
//!
//! **vnet revisions are their own counter, in the head.** etcd's revision
//! counts every write to the cluster, hosts' registrations and (later) MAC,
//! ARP and NAT state included; vnet's revisions count topology changes,
//! one by one, as the embedded store's do, so `events_since(r)` means the
//! same in both stores and `vnetctl apply --expect-revision` numbers don't
//! jump. Each vnet revision is exactly one etcd revision (one Txn); the
//! head's `mod_revision` is the etcd revision of the current vnet one.
//!
//! **History is the log keys, bounded like the embedded store's**
//! ([`vnet_store::HISTORY`] revisions, [`vnet_store::HISTORY_BYTES`] bytes;
//! the newest always kept): the Txn that writes revision n deletes the
//! records that fall out (one range delete). `events_since(r)` reads the records after r; if
//! r + 1 is no longer kept it is [`StoreError::Compacted`] and the caller
//! re-lists. The record of a revision is written in the same Txn as the
//! revision, so there is never a revision without its record. etcd's own
//! compaction does not touch these keys (they are current values, not old
//! versions), so the store works whatever the cluster's
//! `--auto-compaction-*` settings.
//!
//! **Watch.** [`Store::subscribe`] is fed by an etcd watch on `topo/head`
//! from the etcd revision at which the head was read, plus one. When etcd
//! answers that revision is compacted (or cancels the watch, or the stream
//! breaks), the watcher re-reads the head (re-list) and watches again from
//! the new read's revision + 1, never retrying the old start revision
//! (etcd-io/etcd#8668). So a change made through any host's vnetd wakes
//! every host's control thread and API watchers.
//!
//! **Sync over async.** The [`Store`] methods are synchronous; callers are
//! the API's `spawn_blocking` closures, the control thread's async tasks
//! (which call `current()` and `events_since()` directly on a tokio worker)
//! and vnetd's main thread. The store owns its own tokio runtime (one
//! worker thread); a call spawns its future there and waits on a std
//! channel. It never calls `block_on` on the caller's runtime, so it cannot
//! panic inside one or deadlock it, and the caller's runtime is blocked
//! only as long as the etcd round trip, like the embedded store's fsync.
//! Every call has a deadline ([`OP_TIMEOUT`]): an unreachable etcd is an
//! error naming the endpoints, not a hang.
//!
//! **Hosts.** [`EtcdStore::register_host`] grants a lease (TTL a few
//! seconds), creates `hosts/live/<name>` under it only if absent (a second
//! vnetd with the same `--host` is refused while the first is alive), and
//! keeps the lease alive every TTL/3 from the store's runtime; a lease that
//! expired anyway (etcd unreachable longer than the TTL) is granted again
//! and the key re-created. A vnetd killed with SIGKILL stops the keep-alive,
//! etcd deletes its key when the TTL runs out: that host is dead.
//! `hosts/known/<name>` stays, so a dead host is still listed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use vnet_model::model::Topology;
use vnet_store::{Applied, Event, NatBlockClaim, RegisteredHost, Revisioned, Store, StoreError};

mod hosts;
pub mod layout;
mod nat;
pub mod server;
mod txn;
mod watch;

/// The longest any one etcd call may take before the store gives up and
/// returns an error.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of a change without an expected revision that lost a race to
/// another writer, before it is returned as a conflict.
pub const RETRIES: usize = 16;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/vnet/";

/// The lease TTL of a host's registration, in seconds, unless told.
pub const DEFAULT_HOST_TTL: i64 = 5;

/// Parses `etcd://HOST:PORT[,HOST:PORT...]` into client endpoints
/// (`http://HOST:PORT`).
pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        format!("`{url}` is not an etcd store: write etcd://HOST:PORT[,HOST:PORT...]")
    })?;
    let rest = rest.trim_end_matches('/');
    let mut endpoints = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        let ok = match part.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
            None => false,
        };
        if !ok {
            return Err(format!(
                "`{part}` in `{url}` is not HOST:PORT (a port from 1 to 65535); \
                 write etcd://HOST:PORT[,HOST:PORT...]"
            ));
        }
        endpoints.push(format!("http://{part}"));
    }
    Ok(endpoints)
}

/// What the store's tasks share.
pub(crate) struct Shared {
    pub client: Client,
    pub keys: layout::Keys,
    /// `etcd://...`, for errors.
    pub name: String,
    pub notify: tokio::sync::watch::Sender<u64>,
    /// Whether etcd answered the last call (`vnetctl status`, metrics).
    pub reachability: Mutex<Reachability>,
}

/// What the store's calls and the lease's keep-alive saw of etcd.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    down_since: Option<std::time::Instant>,
    outages: u64,
    error: Option<String>,
}

impl Shared {
    /// An etcd failure as a store error naming the store.
    pub fn error(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.name.clone(),
            error: std::io::Error::other(format!("{what}: {e}")),
        }
    }

    pub fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt {
            path: self.name.clone(),
            message,
        }
    }

    /// etcd answered a call.
    pub fn answered(&self) {
        let mut r = self.reachability.lock().unwrap_or_else(|p| p.into_inner());
        if r.down_since.take().is_some() {
            tracing::info!(store = %self.name, "etcd answers again");
        }
        r.error = None;
    }

    /// A call could not reach etcd.
    pub fn unreachable(&self, error: &str) {
        let mut r = self.reachability.lock().unwrap_or_else(|p| p.into_inner());
        if r.down_since.is_none() {
            r.down_since = Some(std::time::Instant::now());
            r.outages += 1;
            tracing::warn!(store = %self.name, error, "etcd does not answer: forwarding goes on with the topology and hosts last seen");
        }
        r.error = Some(error.to_string());
    }

    /// Publishes `revision` if it is newer than what watchers were told.
    pub fn published(&self, revision: u64) {
        self.notify.send_if_modified(|r| {
            if revision > *r {
                *r = revision;
                true
            } else {
                false
            }
        });
    }
}

/// The topology store in etcd (see the crate's documentation).
pub struct EtcdStore {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    /// The host this vnetd registered, to revoke its lease on exit.
    registration: Mutex<Option<(hosts::Registration, tokio::task::JoinHandle<()>)>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("store", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster of `url` (`etcd://HOST:PORT,...`) with
    /// the default prefix.
    pub fn connect(url: &str) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with_prefix(url, DEFAULT_PREFIX)
    }

    /// Connects with the keys under `prefix` (tests give each their own).
    pub fn connect_with_prefix(url: &str, prefix: &str) -> Result<EtcdStore, StoreError> {
        let endpoints = parse_url(url).map_err(|message| StoreError::Corrupt {
            path: url.to_string(),
            message,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vnet-etcd")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Io {
                path: url.to_string(),
                error,
            })?;
        let handle = runtime.handle().clone();
        let name = url.to_string();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = run_on(&handle, async move {
            tokio::time::timeout(OP_TIMEOUT, Client::connect(endpoints, Some(options)))
                .await
                .unwrap_or_else(|_| {
                    Err(etcd_client::Error::IoError(std::io::Error::other(
                        "timed out",
                    )))
                })
        })
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| StoreError::Io {
            path: name.clone(),
            error: std::io::Error::other(format!(
                "cannot connect to etcd: {e}; is etcd running there?"
            )),
        })?;
        let (notify, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            client,
            keys: layout::Keys::new(prefix),
            name,
            notify,
            reachability: Mutex::new(Reachability::default()),
        });
        let store = EtcdStore {
            shared: shared.clone(),
            runtime: Mutex::new(Some(runtime)),
            handle: handle.clone(),
            registration: Mutex::new(None),
        };
        // The first read proves etcd answers, and gives the watch its start.
        let (head, etcd_revision) = store.run(txn::read_head(shared.clone()))?;
        shared.published(head.revision);
        handle.spawn(watch::follow_head(shared, etcd_revision));
        Ok(store)
    }

    /// Runs `fut` on the store's runtime and waits for it, at most
    /// [`OP_TIMEOUT`] (plus a margin for the calls that make several).
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let name = self.shared.name.clone();
        let timed = async move {
            match tokio::time::timeout(OP_TIMEOUT * 3, fut).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Io {
                    path: name,
                    error: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "etcd did not answer within {} s; is the cluster up and reachable?",
                            (OP_TIMEOUT * 3).as_secs()
                        ),
                    ),
                }),
            }
        };
        let result = run_on(&self.handle, timed).map_err(|e| StoreError::Io {
            path: self.shared.name.clone(),
            error: std::io::Error::other(e),
        })?;
        // An answer of any kind (a conflict, a refusal) is etcd reachable.
        match &result {
            Err(StoreError::Io { error, .. }) => self.shared.unreachable(&error.to_string()),
            _ => self.shared.answered(),
        }
        result
    }

    /// Registers this vnetd as host `name` with its tunnel address, under a
    /// lease of `ttl` seconds kept alive from now on. Fails if a live vnetd
    /// holds the name (after waiting one TTL for a dead one's lease to
    /// run out).
    pub fn register_host(
        &self,
        name: &str,
        tunnel_address: Ipv4Addr,
        ttl: i64,
    ) -> Result<(), StoreError> {
        let reg = self.run(hosts::register(
            self.shared.clone(),
            name.to_string(),
            tunnel_address,
            ttl,
        ))?;
        let keeper = self
            .handle
            .spawn(hosts::keep_alive(self.shared.clone(), reg.clone()));
        *self.registration.lock().unwrap_or_else(|p| p.into_inner()) = Some((reg, keeper));
        Ok(())
    }

    /// The etcd endpoints' URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.shared.name
    }
}

/// Spawns `fut` on `handle` and waits on a std channel: usable from any
/// thread, inside a tokio runtime or not, as long as it is not one of the
/// store's own runtime's threads (the store never calls itself from there).
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| "the etcd store's runtime stopped (vnetd is exiting)".to_string())
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // A clean exit tells the others at once that this host is gone,
        // rather than after its lease's TTL.
        let reg = self
            .registration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((reg, keeper)) = reg {
            keeper.abort();
            let shared = self.shared.clone();
            let lease = reg.lease.load(std::sync::atomic::Ordering::Relaxed);
            let revoked = run_on(&self.handle, async move {
                tokio::time::timeout(Duration::from_secs(2), hosts::revoke(shared, lease)).await
            });
            if !matches!(revoked, Ok(Ok(Ok(())))) {
                tracing::warn!(
                    "could not revoke this host's etcd lease; the others see it dead when its TTL runs out"
                );
            }
        }
        // Not a plain drop: the store may be dropped on a tokio thread,
        // where a runtime's blocking shutdown panics.
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

impl Store for EtcdStore {
    fn current(&self) -> Result<Revisioned, StoreError> {
        self.run(txn::read_current(self.shared.clone()))
            .map(|c| Revisioned {
                revision: c.head.revision,
                topology: c.topology,
            })
    }

    fn transact(
        &self,
        expected: Option<u64>,
        edit: &mut dyn FnMut(&mut Topology) -> Result<(), StoreError>,
    ) -> Result<Applied, StoreError> {
        // The edit is the caller's closure (not Send): it runs here, between
        // the read and the commit, each of which runs on the store's runtime.
        for _ in 0..RETRIES {
            let current = self.run(txn::read_current(self.shared.clone()))?;
            if let Some(expected) = expected {
                if expected != current.head.revision {
                    return Err(StoreError::Conflict {
                        expected,
                        actual: current.head.revision,
                    });
                }
            }
            let mut topology = current.topology.clone();
            edit(&mut topology)?;
            topology
                .keep_tunnel_keys_above(&current.topology, current.head.tunnel_keys)
                .map_err(StoreError::Invalid)?;
            topology.validate().map_err(StoreError::Invalid)?;
            self.check_rules(&topology)?;
            let Some(change) = txn::Change::prepare(&self.shared, &current, topology)? else {
                return Ok(Applied {
                    revision: current.head.revision,
                    changes: Vec::new(),
                });
            };
            let base = current.head.revision;
            match self.run(txn::commit(
                self.shared.clone(),
                current.head_mod_revision,
                change,
            ))? {
                txn::Committed::Stored(applied) => {
                    self.shared.published(applied.revision);
                    return Ok(applied);
                }
                txn::Committed::Lost { actual } => {
                    if let Some(expected) = expected {
                        return Err(StoreError::Conflict { expected, actual });
                    }
                    tracing::debug!(
                        base,
                        actual,
                        "another writer changed the topology first; retrying"
                    );
                }
            }
        }
        Err(StoreError::Io {
            path: self.shared.name.clone(),
            error: std::io::Error::other(format!(
                "the change lost the race to other writers {RETRIES} times in a row; try again"
            )),
        })
    }

    fn events_since(&self, revision: u64) -> Result<Vec<Event>, StoreError> {
        self.run(txn::events_since(self.shared.clone(), revision))
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.notify.subscribe()
    }

    fn object_ids(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.run(txn::read_current(self.shared.clone()))
            .map(|c| c.ids)
    }

    fn registered_hosts(&self) -> Result<Vec<RegisteredHost>, StoreError> {
        self.run(hosts::list(self.shared.clone()))
    }

    /// With more than one host registered, a port bound to an interface
    /// must say whose interface it is (`host:`): every vnetd would bind a
    /// port placed on none (HOSTS.md's contract).
    fn check_rules(&self, topology: &Topology) -> Result<(), StoreError> {
        let hosts = self.registered_hosts()?;
        if hosts.len() < 2 {
            return Ok(());
        }
        let mut errors = Vec::new();
        let mut unplaced = |path: String| {
            errors.push(vnet_model::ValidationError::new(
                format!("{path}.host"),
                format!(
                    "{} hosts are registered in this store: say which host's interface this is (host: NAME)",
                    hosts.len()
                ),
            ))
        };
        for (section, d, p, port) in topology.ports() {
            if port.interface().is_some() && port.host().is_none() {
                unplaced(format!("{section}.{d}.ports.{p}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Invalid(errors))
        }
    }

    fn claim_nat_blocks(&self, claim: &NatBlockClaim) -> Result<Option<Vec<u16>>, StoreError> {
        let lease = self.lease();
        self.run(nat::claim(self.shared.clone(), lease, claim.clone()))
            .map(Some)
    }

    fn registration_epoch(&self) -> u64 {
        self.lease() as u64
    }

    fn health(&self) -> vnet_model::reports::StoreHealth {
        let r = self
            .shared
            .reachability
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        vnet_model::reports::StoreHealth {
            store: self.shared.name.clone(),
            reachable: r.down_since.is_none(),
            down_for_secs: r.down_since.map_or(0, |t| t.elapsed().as_secs()),
            outages: r.outages,
            error: r.error.clone(),
        }
    }
}

impl EtcdStore {
    /// The lease this host's registration holds now (0: not registered).
    fn lease(&self) -> i64 {
        let reg = self.registration.lock().unwrap_or_else(|p| p.into_inner());
        reg.as_ref().map_or(0, |(r, _)| {
            r.lease.load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}
