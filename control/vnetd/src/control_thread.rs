//! vnetd's control thread: a tokio runtime on its own thread that serves the
//! API and watches the store. On every new revision it compiles the
//! topology into a snapshot, works out which flows the change touches (the
//! invalidation tags), and hands both to the worker, which swaps the
//! snapshot in between two polls: the packet thread never diffs models. The API's dataplane views ask the worker over the same
//! channel ([`WorkerView`]).
use crossbeam_channel::Sender;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnet_api::Listeners;
use vnet_dataplane::reconfig;
use vnet_dataplane::runtime::{Command, Commands};
use vnet_dataplane::sim::{nat_blocks, Snapshot};
use vnet_model::reports::{
    CounterReport, Dataplane, DataplaneHealth, FlowPage, FlowsPage, TraceError, TraceReport,
    TraceRequest,
};
use vnet_model::Topology;
use vnet_store::Store;

use crate::nat_leaser::{self, NatLeasing};

/// How long a view waits for the worker (woken by each command, it answers
/// after the packets it is handling).
const WORKER_WAIT: Duration = Duration::from_secs(3);

/// The worker, as the API sees it.
pub struct WorkerView {
    commands: Commands,
    running: Arc<AtomicU64>,
}

impl WorkerView {
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(make(tx))
            .map_err(|_| "the worker has stopped".to_string())?;
        rx.recv_timeout(WORKER_WAIT).map_err(|_| {
            format!(
                "the worker did not answer within {} s",
                WORKER_WAIT.as_secs()
            )
        })
    }
}

impl Dataplane for WorkerView {
    fn running_revision(&self) -> u64 {
        self.running.load(Ordering::Acquire)
    }

    fn trace(&self, request: TraceRequest) -> Result<TraceReport, TraceError> {
        self.ask(|tx| Command::Trace(request, tx))
            .map_err(TraceError::Unavailable)?
            .map_err(TraceError::Invalid)
    }

    fn flows(&self, page: FlowPage) -> Result<FlowsPage, String> {
        self.ask(|reply| Command::Flows(page, reply))?
    }

    fn counters(&self) -> Result<CounterReport, String> {
        self.ask(Command::Counters)
    }

    fn health(&self) -> Result<DataplaneHealth, String> {
        self.ask(Command::Health)
    }
}

/// How this vnetd runs a topology: its host (`--host`; its own ports are
/// bound, the others' reached through tunnels) and the largest inner packet
/// its tunnels carry (`None`: no tunnels).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub host: Option<String>,
    /// This host's underlay address (`--tunnel-address`).
    pub tunnel_address: Option<std::net::Ipv4Addr>,
    pub tunnel_mtu: Option<u16>,
    /// With a store shared by many hosts: the SNAT port blocks this host
    /// leases ([`nat_leaser`]).
    pub nat: Option<Arc<NatLeasing>>,
}

impl Placement {
    /// Why `topology` cannot be run here as given ([`address_mismatch`]).
    pub fn mismatch(&self, topology: &Topology) -> Option<String> {
        address_mismatch(topology, self.host.as_deref()?, self.tunnel_address?)
    }

    /// The snapshot of `topology` as this vnetd runs it; tells the leaser
    /// its SNAT addresses.
    pub fn compile(&self, topology: &Topology, revision: u64) -> Snapshot {
        let mut snap = Snapshot::compile(topology, revision).placed_on(self.host.as_deref());
        if let Some(mtu) = self.tunnel_mtu {
            snap = snap.with_tunnel_mtu(mtu);
        }
        if let Some(nat) = &self.nat {
            nat.targets
                .send_replace(snap.snat_targets(nat_blocks::MAX_ADDRESSES));
            snap = snap.with_nat_blocks(nat.blocks.clone());
        }
        snap
    }
}

/// Why `topology` cannot be run by host `host` with tunnel address
/// `address`: its `hosts:` entry for this host names another (the other
/// hosts would send this host's traffic there).
pub fn address_mismatch(
    topology: &Topology,
    host: &str,
    address: std::net::Ipv4Addr,
) -> Option<String> {
    let listed = topology.hosts.get(host)?.tunnel_address;
    (listed != address).then(|| {
        format!(
            "hosts.{host}.tunnel_address is {listed} but this vnetd's --tunnel-address is \
             {address}: the other hosts send this host's tunnels to {listed}; give vnetd \
             --tunnel-address {listed}, or change the topology's hosts.{host}"
        )
    })
}

pub struct ControlThread {
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlThread {
    /// Starts serving the API on `listeners` (already bound) and feeding
    /// the worker every revision after `running`, whose model is `topology`;
    /// each API call's duration goes to `api_latency`.
    pub fn start(
        store: Arc<dyn Store>,
        listeners: Listeners,
        commands: Commands,
        running: Arc<AtomicU64>,
        topology: Arc<Topology>,
        api_latency: prometheus::HistogramVec,
        placement: Placement,
    ) -> anyhow::Result<ControlThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("vnetd-control")
            .build()?;
        let (shutdown, stop) = tokio::sync::watch::channel(false);
        let view: Arc<dyn Dataplane> = Arc::new(WorkerView {
            commands: commands.clone(),
            running: running.clone(),
        });
        let thread = std::thread::Builder::new()
            .name("vnetd-control".into())
            .spawn(move || {
                rt.block_on(async move {
                    let leaser = match (&placement.host, &placement.nat) {
                        (Some(host), Some(nat)) => Some(tokio::spawn(nat_leaser::run(
                            store.clone(),
                            host.clone(),
                            nat.clone(),
                            stop.clone(),
                        ))),
                        _ => None,
                    };
                    let watcher = tokio::spawn(watch_store(
                        store.clone(),
                        commands,
                        running.load(Ordering::Acquire),
                        topology,
                        placement,
                        stop.clone(),
                    ));
                    let served =
                        vnet_api::serve_timed(listeners, store, Some(view), api_latency, stop)
                            .await;
                    if let Err(e) = served {
                        tracing::error!("API stopped: {e}");
                    }
                    watcher.abort();
                    if let Some(l) = leaser {
                        l.abort();
                    }
                });
            })?;
        Ok(ControlThread {
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often a vnetd of a shared store reads which hosts are alive: a dead
/// host's ports become unreachable within its lease's TTL and this.
const LIVENESS_POLL: Duration = Duration::from_secs(1);

/// A revision compiled, and the tags of what changed since `base`, as the
/// control thread hands them to the worker.
struct Compiled {
    snapshot: Arc<Snapshot>,
    invalidate: Vec<vnet_dataplane::sim::Tag>,
}

/// Compiles `topology` (as revision `revision`, without the ports of the
/// `dead` hosts) on one blocking thread and works out the tags of what
/// changed since `base` on another: the two are most of a change's cost
/// here.
fn compile(
    placement: &Placement,
    topology: &Arc<Topology>,
    revision: u64,
    base: &Arc<Topology>,
    dead: &BTreeSet<String>,
) -> tokio::task::JoinHandle<Option<Compiled>> {
    let start = Instant::now();
    let compiling = {
        let (placement, topology, dead) = (placement.clone(), topology.clone(), dead.clone());
        tokio::task::spawn_blocking(move || {
            let snapshot = placement.compile(&topology, revision);
            // The worker looks up interfaces in this index on every look.
            Arc::new(snapshot.without_hosts(&dead).with_interface_index())
        })
    };
    let (topology, base) = (topology.clone(), base.clone());
    tokio::task::spawn_blocking(move || {
        let invalidate = reconfig::changed_tags(&base, &topology);
        let tagged = start.elapsed();
        // Waits on this blocking thread, not on the control thread's.
        let snapshot = match tokio::runtime::Handle::current().block_on(compiling) {
            Ok(snapshot) => snapshot,
            // As if compiled here: a panic is the control thread's.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => return None,
        };
        tracing::debug!(
            revision,
            changed = invalidate.len(),
            tags_ms = tagged.as_secs_f64() * 1e3,
            compiled_ms = start.elapsed().as_secs_f64() * 1e3,
            "compiled a topology snapshot"
        );
        Some(Compiled {
            snapshot,
            invalidate,
        })
    })
}

/// Compiles every revision after `sent` (whose model is `running`), as this
/// vnetd runs it (`placement`: its own ports bound, see `Snapshot::placed_on`), and
/// sends it to the worker with the tags of what changed since the one sent
/// before. Only the latest matters: revisions stored while one compiles are
/// skipped, and the next diff is against what the worker was sent. With a
/// host, the other hosts' liveness is read every [`LIVENESS_POLL`]: when a
/// host dies or returns, the snapshot is compiled again without or with its
/// ports (`Snapshot::without_hosts`) and the flows towards them go.
async fn watch_store(
    store: Arc<dyn Store>,
    commands: Commands,
    mut sent: u64,
    mut running: Arc<Topology>,
    placement: Placement,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let host = placement.host.clone();
    let mut changed = store.subscribe();
    let mut dead = BTreeSet::new();
    let mut liveness = tokio::time::interval(LIVENESS_POLL);
    // After an etcd outage, one read, not a burst of them.
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The snapshot last sent, and the snapshot and model sent before it:
    // held until the next revision, so that the worker, swapping them out,
    // does not free them itself (a 10 000-port snapshot takes a while to
    // free) between the swap and the invalidation.
    let mut last_snapshot: Option<Arc<Snapshot>> = None;
    let mut retired: Option<(Arc<Snapshot>, Arc<Topology>)> = None;
    loop {
        // The topology is read only when the store has a newer revision;
        // a liveness tick reads the hosts alone.
        let stored = *changed.borrow_and_update();
        // Shared with the store, not copied.
        let fresh = if stored != sent {
            match store.current_shared() {
                Ok(cur) if cur.0 != sent => Some(cur),
                Ok(_) => None,
                Err(e) => {
                    tracing::error!("reading the store: {e}");
                    None
                }
            }
        } else {
            None
        };
        let (revision, topology) = match fresh {
            Some(cur) => cur,
            None => (sent, running.clone()),
        };
        if revision != sent {
            if let Some(why) = placement.mismatch(&topology) {
                tracing::error!(revision, "{why}");
            }
        }
        let now_dead = match &host {
            // Off this thread, which also serves the API: with etcd down
            // the read waits for its deadline.
            Some(me) => {
                let (store, topology, me) = (store.clone(), topology.clone(), me.clone());
                tokio::task::spawn_blocking(move || dead_hosts(&*store, &topology, &me))
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| dead.clone())
            }
            None => BTreeSet::new(),
        };
        if revision != sent || now_dead != dead {
            let start = Instant::now();
            let work = compile(&placement, &topology, revision, &running, &now_dead);
            let Compiled {
                snapshot,
                mut invalidate,
            } = match work.await {
                Ok(Some(c)) => c,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down.
                Ok(None) | Err(_) => return,
            };
            let flipped: BTreeSet<&String> = now_dead.symmetric_difference(&dead).collect();
            for name in &flipped {
                if now_dead.contains(*name) {
                    tracing::warn!(host = %name, "host dead (its registration expired): its ports are unreachable until it returns");
                } else {
                    tracing::info!(host = %name, "host alive: its ports are reachable");
                }
                invalidate.extend(reconfig::ports_placed_on(&topology, name));
            }
            let apply = Command::Apply {
                snapshot: snapshot.clone(),
                topology: topology.clone(),
                invalidate,
            };
            if commands.send(apply).is_err() {
                return;
            }
            tracing::debug!(
                revision,
                waited_ms = start.elapsed().as_secs_f64() * 1e3,
                "sent a topology snapshot to the worker"
            );
            // What the worker ran before this one is freed here, after the
            // send (see `retired`).
            let before = last_snapshot.replace(snapshot).map(|s| (s, running));
            drop(std::mem::replace(&mut retired, before));
            (sent, running, dead) = (revision, topology, now_dead);
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = liveness.tick(), if host.is_some() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The hosts of `topology` other than `me` whose registration is not alive
/// (never registered, or lease expired). `None` when the store cannot say
/// (etcd unreachable): then nothing changes, and every host goes on
/// forwarding on what it has.
fn dead_hosts(store: &dyn Store, topology: &Topology, me: &str) -> Option<BTreeSet<String>> {
    let registered = match store.registered_hosts() {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("reading the hosts' liveness: {e}");
            return None;
        }
    };
    let alive: BTreeSet<&str> = registered
        .iter()
        .filter(|h| h.alive)
        .map(|h| h.name.as_str())
        .collect();
    Some(
        topology
            .hosts
            .keys()
            .filter(|h| h.as_str() != me && !alive.contains(h.as_str()))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::{Placement, WorkerView};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use vnet_model::reports::Dataplane;

    /// Apply's wait sees the revision the worker publishes, and gives up
    /// when it never comes.
    #[test]
    fn the_wait_ends_when_the_worker_runs_the_revision() {
        let (commands, _worker_end, _wake) = vnet_dataplane::runtime::channel().unwrap();
        let running = Arc::new(AtomicU64::new(1));
        let view = WorkerView {
            commands,
            running: running.clone(),
        };
        assert!(view.wait_running(1, Duration::ZERO));
        assert!(!view.wait_running(2, Duration::from_millis(5)));
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            running.store(2, Ordering::Release);
        });
        assert!(view.wait_running(2, Duration::from_secs(60)));
        worker.join().unwrap();
    }

    #[test]
    fn a_host_listed_with_another_tunnel_address_is_refused() {
        let t = vnet_model::load_str(
            "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  h2: {tunnel_address: 192.0.2.2}\n",
        )
        .unwrap();
        let on = |host: &str, address: [u8; 4]| Placement {
            host: Some(host.into()),
            tunnel_address: Some(address.into()),
            ..Default::default()
        };
        assert_eq!(on("h1", [192, 0, 2, 1]).mismatch(&t), None);
        let why = on("h1", [192, 0, 2, 9]).mismatch(&t).unwrap();
        assert!(
            why.contains("hosts.h1.tunnel_address is 192.0.2.1"),
            "{why}"
        );
        assert!(why.contains("--tunnel-address 192.0.2.1"), "{why}");
        // A host the topology does not list yet: nothing to compare.
        assert_eq!(on("h3", [192, 0, 2, 3]).mismatch(&t), None);
    }
}
