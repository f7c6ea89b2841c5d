//! The worker threads and their loop (issue 14: more than one core).
//!
//! A multi-queue interface (a NIC with RSS, a veth or tap made with several
//! queues) has one AF_XDP socket per receive queue ([`crate::binding`]),
//! and the upcall path of the skb ports has a queue per worker (flows
//! spread over it by hash, `crate::upcall_path::ensure_pair`). With
//! `--workers N`, worker `w` serves queue `q` of every port and of the
//! upcall path when `q % N == w`; worker 0 also runs the control thread's
//! commands, the link events and the timers.
//!
//! The workers share one [`Runtime`] behind a mutex, taken for a turn (a
//! batch of up to [`crate::afxdp::BATCH`] frames per socket) and released
//! while the worker waits. So the simulation, the state tables and the flow
//! table's bookkeeping are serialized, exactly as with one worker: a
//! decision is never made on half-updated state, and no table needs a lock
//! of its own. What runs outside the lock is the kernel's work that a turn
//! starts: the write of the turn's flows (`BPF_MAP_UPDATE_BATCH`, ordered
//! against every other write to the flow map by `kernel::flow_writer`),
//! the transmit kicks (`sendto`, which in copy mode runs the egress
//! device's transmit and the receiver's softirq in the caller) and the
//! waits. The measured split of a worker's time (benches/RESULTS.md)
//! bounds what a second worker can add; partitioning the state tables by
//! connection would lift that bound but needs the NAT's reply direction to
//! land on the worker that holds its binding, which a NIC's RSS does not
//! promise.
//!
//! With one worker (the default) the loop runs on the caller's thread and
//! the lock is never contended.
use super::{now_ns, Runtime, SIM_TIMER_NS, STATS_LOG_NS, TIMER_NS};
use crate::afxdp::Kick;
use crate::flows::Batch;
use crate::kernel::KernelError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The most worker threads vnetd runs (`--workers`): each queue's socket is
/// served by one of them, and vnetd binds at most
/// [`crate::binding::MAX_SOCKET_QUEUES`] queues per port.
pub const MAX_WORKERS: usize = crate::binding::MAX_SOCKET_QUEUES as usize;

/// Which receive sockets a worker serves: queue `q` of every port goes to
/// worker `q % of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub worker: usize,
    pub of: usize,
}

impl Share {
    /// The one worker of a single-worker vnetd.
    pub const ALL: Share = Share { worker: 0, of: 1 };

    /// Whether this worker serves receive queue `queue`.
    pub fn serves(&self, queue: usize) -> bool {
        queue % self.of == self.worker
    }

    /// Worker 0: it also runs the control commands, links and timers.
    pub fn is_primary(&self) -> bool {
        self.worker == 0
    }
}

/// Parses `--workers`: 1 to [`MAX_WORKERS`].
pub fn parse_workers(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of worker threads"))?;
    if n == 0 || n > MAX_WORKERS {
        return Err(format!(
            "{n} workers: give 1 to {MAX_WORKERS} (one per receive queue of the busiest \
             interface is enough; more have nothing to serve)"
        ));
    }
    Ok(n)
}

/// `spin_loop` hints between two looks at the rings while spinning (a
/// PAUSE is tens to ~140 cycles: a few hundred ns between looks).
const SPIN_BETWEEN_LOOKS: u32 = 16;

/// How long worker 0 sleeps at most with nothing to do (commands, link
/// events and flow state wake it earlier), and the other workers: they
/// wait on the sockets of their share as it was at the start of the wait,
/// so a port bound meanwhile is watched from their next wait on (its
/// frames queue in the ring until then).
const WAIT_MS: i32 = 100;
const WAIT_MS_OTHERS: i32 = 20;

/// The runtime as the workers share it, and how many wait for it.
struct Shared<'a> {
    runtime: Mutex<&'a mut Runtime>,
    waiting: AtomicUsize,
}

impl<'a> Shared<'a> {
    fn lock<'b>(&'b self) -> MutexGuard<'b, &'a mut Runtime> {
        // Poisoned only by a worker that panicked, which stops vnetd
        // (`worker_thread`): the others finish their turn and stop.
        self.runtime
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Shared::lock`] for a turn: counted as waiting meanwhile, so that
    /// the holder lets a waiter have the next turn (the mutex is not fair).
    fn lock_for_turn<'b>(&'b self) -> MutexGuard<'b, &'a mut Runtime> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let guard = self.lock();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        guard
    }

    /// Gives the next turn to a worker waiting for one, if any.
    fn let_waiter_go_first(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            std::thread::yield_now();
        }
    }
}

/// Why the workers did not run.
#[derive(Debug, thiserror::Error)]
#[error("starting worker thread {worker} of {of}: {error} (start vnetd with fewer --workers)")]
pub struct WorkersError {
    worker: usize,
    of: usize,
    error: std::io::Error,
}

impl Runtime {
    /// Runs one worker until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        // One worker starts no thread: nothing can fail.
        let _ = self.run_workers(1, stop);
    }

    /// Runs `workers` worker threads (this one is worker 0) until `stop` is
    /// set. More workers than receive queues leave the extra ones idle. A
    /// thread that cannot be started stops the others (its queues would be
    /// served by none); one that panics sets `stop`, so vnetd exits (its
    /// pinned flows go on forwarding until it is started again).
    pub fn run_workers(&mut self, workers: usize, stop: &AtomicBool) -> Result<(), WorkersError> {
        let of = workers.clamp(1, MAX_WORKERS);
        let shared = Shared {
            runtime: Mutex::new(self),
            waiting: AtomicUsize::new(0),
        };
        std::thread::scope(|s| {
            for worker in 1..of {
                let shared = &shared;
                let spawned = std::thread::Builder::new()
                    .name(format!("vnet-worker-{worker}"))
                    .spawn_scoped(s, move || worker_thread(shared, Share { worker, of }, stop));
                if let Err(error) = spawned {
                    stop.store(true, Ordering::Relaxed);
                    return Err(WorkersError { worker, of, error });
                }
            }
            worker_loop(&shared, Share { worker: 0, of }, stop);
            Ok(())
        })
    }
}

/// A worker other than 0: its loop, and vnetd stopped if it panics.
fn worker_thread(rt: &Shared, share: Share, stop: &AtomicBool) {
    let run = std::panic::AssertUnwindSafe(|| worker_loop(rt, share, stop));
    if std::panic::catch_unwind(run).is_err() {
        tracing::error!(
            worker = share.worker,
            "a worker thread panicked: vnetd stops (its pinned flows keep forwarding until it is started again)"
        );
        stop.store(true, Ordering::Relaxed);
    }
}

/// When worker 0 next runs each of its timers.
struct Timers {
    next: u64,
    next_sim: u64,
    next_stats: u64,
    last_logged: (u64, usize),
}

impl Timers {
    fn new(now: u64) -> Timers {
        Timers {
            next: now + TIMER_NS,
            next_sim: now,
            next_stats: now + STATS_LOG_NS,
            last_logged: (u64::MAX, 0),
        }
    }

    fn due(&self, now: u64) -> bool {
        now >= self.next_sim || now >= self.next || now >= self.next_stats
    }

    fn run_due(&mut self, rt: &mut Runtime, now: u64) {
        if now >= self.next_sim {
            rt.sim_timers(now);
            self.next_sim = now + SIM_TIMER_NS;
        }
        if now >= self.next {
            rt.timers(now);
            self.next = now + TIMER_NS;
        }
        if now >= self.next_stats {
            let summary = (rt.counters.received, rt.flows.len());
            if summary != self.last_logged {
                rt.log_stats();
                self.last_logged = summary;
            }
            self.next_stats = now + STATS_LOG_NS;
        }
    }
}

fn worker_loop(rt: &Shared, share: Share, stop: &AtomicBool) {
    let mut timers = Timers::new(now_ns());
    let mut kicks: Vec<Kick> = Vec::new();
    let mut writer = rt.lock().kernel.flow_writer();
    // The turn's flows, and those of the last batch the kernel refused
    // (reported at the next turn).
    let mut batch = Batch::default();
    let mut failed: Vec<(usize, KernelError)> = Vec::new();
    // Work done since the runtime was last held (the kicks), counted at
    // the next turn.
    let mut unaccounted_ns = 0;
    let mut took = 0;
    while !stop.load(Ordering::Relaxed) {
        // A turn that took frames may have left more: the next turn
        // starts at once (no poll). Idle, the loop spins a while
        // (`busy_poll`), then sleeps.
        if took == 0 && !spin(rt, share) {
            wait(rt, share);
        }
        let asked = now_ns();
        let mut guard = rt.lock_for_turn();
        let woke = now_ns();
        guard.counters.lock_wait_ns += woke.saturating_sub(asked);
        guard.counters.busy_ns += std::mem::take(&mut unaccounted_ns);
        if !failed.is_empty() {
            guard.flows_not_written(&batch, &mut failed);
        }
        if share.is_primary() {
            guard.control();
            guard.follow_links();
        }
        // Before the ports: a reply waiting there may need it (every
        // worker: the reply may come on any queue).
        guard.receive_flow_state();
        took = guard.serve_ports(share);
        guard.flows.take_batch(&mut batch);
        // The write order is taken before the runtime is let go: a removal
        // decided after this turn waits for the write.
        let write = (!batch.is_empty()).then(|| writer.begin());
        guard.transmit_kicks(&mut kicks);
        guard.counters.busy_ns += now_ns().saturating_sub(woke);
        drop(guard);
        // Outside the lock: the flows, then each kick, which transmits in
        // the caller (copy mode): most of a forwarded first packet's
        // kernel time.
        let kicked = now_ns();
        if let Some(write) = write {
            write.write(&batch.keys, &batch.actions, &mut failed);
        }
        for kick in kicks.drain(..) {
            kick.run();
        }
        let now = now_ns();
        unaccounted_ns += now.saturating_sub(kicked);
        // The timers after the kicks: what this turn forwarded does not
        // wait for flow expiry or the lease file.
        if share.is_primary() && timers.due(now) {
            let mut guard = rt.lock_for_turn();
            timers.run_due(&mut guard, now);
            guard.counters.busy_ns += now_ns().saturating_sub(now);
        }
        rt.let_waiter_go_first();
    }
}

/// Spins for up to `busy_poll` until one of the share's receive rings has
/// frames; returns whether one has. (Control commands and link events
/// wait for the spin to end: at most `busy_poll::MAX_US`.)
fn spin(rt: &Shared, share: Share) -> bool {
    let ns = rt.lock().busy_poll.ns();
    if ns == 0 {
        return false;
    }
    let deadline = now_ns() + ns;
    loop {
        if rt.lock().has_frames(share) {
            return true;
        }
        if now_ns() >= deadline {
            return false;
        }
        // A moment between looks: each look takes the lock, which another
        // worker's turn should rarely have to wait for.
        for _ in 0..SPIN_BETWEEN_LOOKS {
            std::hint::spin_loop();
        }
    }
}

/// Blocks until one of the share's sockets has frames (for worker 0 also a
/// command, a link event or flow state) or the wait ends.
fn wait(rt: &Shared, share: Share) {
    let mut fds: Vec<libc::pollfd> = rt
        .lock()
        .wait_fds(share)
        .into_iter()
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = if share.is_primary() {
        WAIT_MS
    } else {
        WAIT_MS_OTHERS
    };
    // SAFETY: a valid array of pollfd. The fds were read under the lock;
    // worker 0 may close one meanwhile (a port unbound) and the number be
    // reused: poll then watches that file until it returns, a spurious
    // wake-up at worst, and the next wait reads the fds again. EINTR (a
    // signal) just ends the wait early.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_is_served_by_exactly_one_worker() {
        for of in 1..=MAX_WORKERS {
            for queue in 0..2 * MAX_WORKERS {
                let serving = (0..of)
                    .filter(|&worker| Share { worker, of }.serves(queue))
                    .count();
                assert_eq!(serving, 1, "queue {queue} with {of} workers");
            }
        }
        assert!(Share::ALL.serves(5) && Share::ALL.is_primary());
        assert!(!Share { worker: 1, of: 2 }.is_primary());
    }

    #[test]
    fn workers_are_one_to_the_most_queues() {
        assert_eq!(parse_workers("1"), Ok(1));
        assert_eq!(parse_workers("8"), Ok(MAX_WORKERS));
        for bad in ["0", "9", "-1", "two", ""] {
            let e = parse_workers(bad).expect_err(bad);
            assert!(e.contains("worker"), "{e}");
        }
    }
}
