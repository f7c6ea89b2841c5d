//! What the API needs from a running dataplane (vnetd) for its views:
//! trace, flows, counters, health. Plain model-side types: the control
//! plane knows nothing of XDP, and vnetd implements [`Dataplane`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::model::{MacAddr, PortRef, Protocol};

/// A packet to simulate: entering `port`, with these headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRequest {
    pub port: PortRef,
    /// tcp, udp or icmp (an echo request).
    pub protocol: Protocol,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub src_mac: Option<MacAddr>,
    pub dst_mac: Option<MacAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceReport {
    pub revision: u64,
    pub packet: String,
    pub steps: Vec<TraceStep>,
    pub verdict: String,
    pub emitted: Vec<String>,
    pub flow: Option<String>,
}

/// Which flows to list: at most `limit` (at most [`FlowPage::MAX`]), after
/// the page that ended with `after` (a token from [`FlowsPage::next`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowPage {
    pub after: Option<String>,
    pub limit: usize,
}

impl FlowPage {
    /// Flows per page at most: a page of them stays well under gRPC's
    /// 4 MiB message limit (a flow's text is a few hundred bytes).
    pub const MAX: usize = 4096;

    /// `limit`, or the largest page when none (0) or too many is asked.
    pub fn limit(&self) -> usize {
        match self.limit {
            0 => FlowPage::MAX,
            n => n.min(FlowPage::MAX),
        }
    }
}

/// One page of flows, in a stable order (by flow key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowsPage {
    pub flows: Vec<FlowInfo>,
    /// The token of the next page; none after the last.
    pub next: Option<String>,
    /// Flows installed now, on every page.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub in_port: String,
    pub matches: String,
    pub actions: String,
    pub packets: u64,
    pub bytes: u64,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub tags: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub userspace_rx: u64,
    /// Bytes of the `userspace_rx` frames.
    pub userspace_bytes: u64,
    pub kernel_packets: u64,
    pub kernel_bytes: u64,
    pub flows: u32,
    /// Frames over the upcall budget, dropped before the worker.
    pub upcall_budget: u64,
}

/// Whether the topology store answers, as this vnetd last saw it (a shared
/// store can be unreachable while every host goes on forwarding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// The store (`embedded`, `etcd://...`).
    pub store: String,
    pub reachable: bool,
    /// Seconds since it stopped answering (0 while reachable).
    pub down_for_secs: u64,
    /// Times it stopped answering since vnetd started.
    pub outages: u64,
    /// The last failure, while unreachable.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterReport {
    pub revision: u64,
    /// By reason name (`port_down`, `xdp_hit_redirect`, ...).
    pub reasons: Vec<(String, u64)>,
    pub totals: Vec<(String, u64)>,
    /// (port, interface, counters)
    pub ports: Vec<(String, String, TrafficCounters)>,
    pub devices: Vec<(String, TrafficCounters)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneHealth {
    pub running_revision: u64,
    /// (port, interface, ifindex)
    pub interfaces: Vec<(String, String, u32)>,
    /// Things the dataplane could not do (an interface that does not exist).
    pub problems: Vec<String>,
    /// Every exterior port of the running topology and its binding.
    pub ports: Vec<PortStatus>,
}

/// An exterior port and its interface, as the dataplane follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStatus {
    pub port: String,
    pub interface: String,
    pub state: PortState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    Bound {
        ifindex: u32,
    },
    /// The interface does not exist (yet): bound when it appears.
    Waiting,
    /// Binding failed, with why.
    Failed(String),
}

impl PortState {
    /// `bound`, `waiting` or `failed`, as the API and `vnetctl` show it.
    pub fn name(&self) -> &'static str {
        match self {
            PortState::Bound { .. } => "bound",
            PortState::Waiting => "waiting",
            PortState::Failed(_) => "failed",
        }
    }
}

/// Why a trace did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The request does not fit the running topology (an unknown port).
    #[error("{0}")]
    Invalid(String),
    /// The dataplane could not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// A running dataplane. Calls may block briefly (they ask the worker); the
/// API calls them off its async threads.
pub trait Dataplane: Send + Sync {
    /// The store revision the workers run.
    fn running_revision(&self) -> u64;

    /// Waits until the workers run `revision` or a later one, for at most
    /// `timeout`; returns whether they do. Blocks: call it off async
    /// threads. Looks at [`Dataplane::running_revision`] (an atomic the
    /// worker sets, which can wake no one) every 50 µs: at most that much
    /// on an answer that used to wait up to 10 ms.
    fn wait_running(&self, revision: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.running_revision() >= revision {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep((deadline - now).min(Duration::from_micros(50)));
        }
    }

    fn trace(&self, request: TraceRequest) -> Result<TraceReport, TraceError>;
    fn flows(&self, page: FlowPage) -> Result<FlowsPage, String>;
    fn counters(&self) -> Result<CounterReport, String>;
    fn health(&self) -> Result<DataplaneHealth, String>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A dataplane that only runs revisions.
    struct Running(AtomicU64);

    impl Dataplane for Running {
        fn running_revision(&self) -> u64 {
            self.0.load(Ordering::Acquire)
        }
        fn trace(&self, _: TraceRequest) -> Result<TraceReport, TraceError> {
            Err(TraceError::Unavailable("no trace here".into()))
        }
        fn flows(&self, _: FlowPage) -> Result<FlowsPage, String> {
            Err("no flows here".into())
        }
        fn counters(&self) -> Result<CounterReport, String> {
            Err("no counters here".into())
        }
        fn health(&self) -> Result<DataplaneHealth, String> {
            Err("no health here".into())
        }
    }

    #[test]
    fn waiting_ends_when_the_revision_runs_or_the_time_is_up() {
        let dp = Arc::new(Running(AtomicU64::new(3)));
        // Already running, or an older one: no wait.
        assert!(dp.wait_running(3, Duration::ZERO));
        assert!(dp.wait_running(1, Duration::ZERO));
        // Never reached: false once the time is up.
        assert!(!dp.wait_running(4, Duration::from_millis(20)));
        // Reached while waiting.
        let runner = dp.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            runner.0.store(5, Ordering::Release);
        });
        assert!(dp.wait_running(5, Duration::from_secs(60)));
        t.join().unwrap();
    }
}
