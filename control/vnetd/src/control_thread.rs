//! vnetd's control thread: a tokio runtime on its own thread that serves the
//! API and watches the store. On every new revision it compiles the
//! topology into a snapshot, works out which flows the change touches (the
//! invalidation tags), and hands both to the worker, which swaps the
//! snapshot in between two polls: the packet thread never diffs models. The API's dataplane views ask the worker over the same
//! channel ([`WorkerView`]).
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vnet_api::Listeners;
use vnet_dataplane::reconfig;
use vnet_dataplane::runtime::{Command, Commands};
use vnet_dataplane::sim::Snapshot;
use vnet_model::reports::{
    CounterReport, Dataplane, DataplaneHealth, FlowPage, FlowsPage, TraceError, TraceReport,
    TraceRequest,
};
use vnet_model::Topology;
use vnet_store::Store;

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
        host: Option<String>,
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
                    let watcher = tokio::spawn(watch_store(
                        store.clone(),
                        commands,
                        running.load(Ordering::Acquire),
                        topology,
                        host,
                        stop.clone(),
                    ));
                    let served =
                        vnet_api::serve_timed(listeners, store, Some(view), api_latency, stop)
                            .await;
                    if let Err(e) = served {
                        tracing::error!("API stopped: {e}");
                    }
                    watcher.abort();
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

/// Compiles every revision after `sent` (whose model is `running`), as this
/// `host` runs it (its own ports bound, see `Snapshot::placed_on`), and
/// sends it to the worker with the tags of what changed since the one sent
/// before. Only the latest matters: revisions stored while one compiles are
/// skipped, and the next diff is against what the worker was sent.
async fn watch_store(
    store: Arc<dyn Store>,
    commands: Commands,
    mut sent: u64,
    mut running: Arc<Topology>,
    host: Option<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changed = store.subscribe();
    loop {
        changed.borrow_and_update();
        match store.current() {
            Ok(cur) if cur.revision != sent => {
                let snapshot = Arc::new(
                    Snapshot::compile(&cur.topology, cur.revision).placed_on(host.as_deref()),
                );
                let invalidate = reconfig::changed_tags(&running, &cur.topology);
                tracing::debug!(
                    revision = cur.revision,
                    changed = invalidate.len(),
                    "compiled a topology snapshot"
                );
                let topology = Arc::new(cur.topology);
                let apply = Command::Apply {
                    snapshot,
                    topology: topology.clone(),
                    invalidate,
                };
                if commands.send(apply).is_err() {
                    return;
                }
                (sent, running) = (cur.revision, topology);
            }
            Ok(_) => {}
            Err(e) => tracing::error!("reading the store: {e}"),
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
