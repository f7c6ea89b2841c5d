//! The worker: polls the AF_XDP sockets, runs the simulation on every frame
//! the kernel missed, transmits what it emits and installs its flow. It also
//! runs the timers (flow expiry, MAC ageing) and counts reasons.
//!
//! Fairness between ports (tenants): each turn of the loop serves every
//! port's receive ring once, at most [`crate::afxdp::BATCH`] frames each,
//! starting one port further every turn, so a port with a full ring cannot
//! take a turn; each frame is first charged to its port's upcall budget
//! ([`upcalls`]), so a port flooding new flows gets its rate and no more;
//! each device (tenant) may hold only its share of each table ([`Limits`]);
//! and the kernel's drops at each socket are read every second and counted
//! by reason (`rx_ring_full`, `fill_ring_empty`, `rx_dropped`). The first
//! packets of skb ports share one socket, the upcall path's
//! ([`crate::upcall_path`]): the tc program charges each to its port's
//! budget before that socket's ring, and the worker again when it reads it.
//!
//! The miss path (issue 14): a port's turn copies its frames into one
//! buffer kept from turn to turn ([`rx_buffer`]: no allocation per frame),
//! the simulation parses each frame once, and the flows the turn decided
//! are written to the kernel together at the end of the turn, after the
//! worker let go of the runtime ([`FlowTable::take_batch`], one
//! `BPF_MAP_UPDATE_BATCH` by the worker's [`crate::kernel::FlowWriter`]).
//! A turn that took frames is followed at once by
//! the next, without `poll`; an idle loop spins on the rings for
//! [`BusyPoll`] before it sleeps, so a first packet that follows closely
//! does not pay for waking the worker.
//!
//! One runtime owns the sockets and the state tables; with several
//! workers (a socket per receive queue of multi-queue interfaces) they take
//! turns holding it, and the state needs no locks of its own
//! ([`workers`]).
use crate::flows::{self, FlowBackend, FlowTable, InstallError};
use crate::kernel::{Kernel, KernelError};
use crate::lease_file::{self, LeaseFile};
use crate::packet;
use crate::ports::{BoundPort, PortRegistry};
use crate::sim::dhcp::leases::{self, Leases};
use crate::sim::nat::{self, NatTable};
use crate::sim::{self, conntrack, mac_table, Conntrack, DeviceRef, MacTable, PortId};
use crate::sim::{Snapshot, State, Tag, Verdict};
use crate::tunnel::Tunnel;
use crate::upcall_path::{self, UpcallPath};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use vnet_common::{act, FlowActions, FlowKey, Reason};
use vnet_model::Executor;

pub mod adoption;
pub mod busy_poll;
mod control;
mod rx_buffer;
mod tunnels;
pub mod workers;
use crate::afxdp::Kick;
/// Re-exported: the upcall budget lives with the ports it limits.
pub use crate::upcalls;
pub use busy_poll::BusyPoll;
pub use control::{channel, Command, Commands, Link, Wakeup};
use rx_buffer::RxBuffer;
pub use upcalls::UpcallLimit;
pub use workers::Share;

/// The per-tenant limits of the worker's tables and upcalls (vnetd's
/// flags). The defaults give each device a quarter of each table (see
/// each table's module) and each port [`UpcallLimit::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub upcalls: UpcallLimit,
    /// Installed flows charged to one ingress device.
    pub flows_per_device: usize,
    /// Learned MACs of one bridge.
    pub macs_per_bridge: usize,
    /// Tracked connections of one zone.
    pub conntrack_per_zone: usize,
    /// Dynamic NAT bindings of one zone.
    pub nat_per_zone: usize,
    /// Dynamic DHCP leases (offers included) of one bridge port.
    pub dhcp_leases_per_port: usize,
}

impl Limits {
    /// The upcall budget of `port`: an uplink's (a router's exterior port)
    /// is larger, as every tenant's inbound first packets arrive there.
    pub fn upcalls_of(&self, port: &sim::snapshot::Port) -> UpcallLimit {
        match port.device {
            DeviceRef::Router(_) => self.upcalls.for_uplink(),
            DeviceRef::Bridge(_) => self.upcalls,
        }
    }

    /// The upcall budget of port `port` of `snap` (a guest's if it is gone).
    fn upcalls_at(&self, snap: &Snapshot, port: PortId) -> UpcallLimit {
        snap.ports
            .get(port)
            .map_or(self.upcalls, |p| self.upcalls_of(p))
    }

    /// The defaults for a kernel flow table of `max_flows`.
    pub fn for_max_flows(max_flows: u32) -> Limits {
        Limits {
            upcalls: UpcallLimit::default(),
            flows_per_device: flows::default_per_device(max_flows as usize),
            macs_per_bridge: mac_table::default_per_bridge(mac_table::DEFAULT_CAPACITY),
            conntrack_per_zone: conntrack::default_per_zone(conntrack::DEFAULT_CAPACITY),
            nat_per_zone: nat::default_per_zone(nat::DEFAULT_CAPACITY),
            dhcp_leases_per_port: leases::DEFAULT_PER_PORT,
        }
    }

    /// Empty state tables with these limits.
    fn state(&self) -> State {
        let mut state = State {
            macs: MacTable::with_limits(mac_table::DEFAULT_CAPACITY, self.macs_per_bridge).into(),
            conntrack: Conntrack::with_limits(conntrack::DEFAULT_CAPACITY, self.conntrack_per_zone)
                .into(),
            nat: NatTable::with_limits(nat::DEFAULT_CAPACITY, self.nat_per_zone).into(),
            ..State::default()
        };
        state.dhcp.leases =
            Leases::with_limits(leases::DEFAULT_CAPACITY, self.dhcp_leases_per_port);
        state
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::for_max_flows(vnet_common::DEFAULT_MAX_FLOWS)
    }
}

/// A kernel error as the flow table counts it.
fn install_error(e: KernelError) -> InstallError {
    match e {
        KernelError::FlowTableFull { .. } => InstallError::Full,
        other => InstallError::Other(other.to_string()),
    }
}

impl FlowBackend for Kernel {
    fn insert(&mut self, key: &FlowKey, actions: &FlowActions) -> Result<(), InstallError> {
        self.insert_flow(key, actions).map_err(install_error)
    }
    fn insert_batch(
        &mut self,
        keys: &[FlowKey],
        actions: &[FlowActions],
    ) -> (usize, Option<InstallError>) {
        let (n, error) = self.insert_flows(keys, actions);
        (n, error.map(install_error))
    }
    fn remove(&mut self, key: &FlowKey) {
        if let Err(e) = self.remove_flow(key) {
            tracing::warn!(error = %e, "removing a flow");
        }
    }
    fn last_used_ns(&self, key: &FlowKey) -> Option<u64> {
        self.flow(key).ok().flatten().map(|v| v.last_used_ns)
    }
}

/// Monotonic clock in ns, the clock of `bpf_ktime_get_ns`.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Userspace counters by reason (the kernel counts its own).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub by_reason: HashMap<Reason, u64>,
    pub received: u64,
    pub forwarded: u64,
    pub flooded: u64,
    pub answered: u64,
    pub consumed: u64,
    /// Time spent working (not waiting in poll), ns, summed over the
    /// workers.
    pub busy_ns: u64,
    /// Time workers waited for another to let go of the runtime, ns (0
    /// with one worker): what several workers lose to taking turns.
    pub lock_wait_ns: u64,
}

impl Counters {
    fn count(&mut self, reason: Reason) {
        self.add(reason, 1);
    }

    fn add(&mut self, reason: Reason, n: u64) {
        if n > 0 {
            *self.by_reason.entry(reason).or_default() += n;
        }
    }

    /// Adds what the kernel dropped at `p`'s socket since its last reading.
    fn socket_drops(&mut self, p: &mut BoundPort) {
        self.xsk_drops(&p.xsk, &mut p.drops);
    }

    /// Adds what the kernel dropped at `xsk` since `last`, its last reading.
    fn xsk_drops(&mut self, xsk: &crate::afxdp::Xsk, last: &mut crate::afxdp::RxDrops) {
        let Some(total) = xsk.drops() else {
            return;
        };
        let new = total.since(last);
        *last = total;
        self.add(Reason::RxRingFull, new.ring_full);
        self.add(Reason::FillRingEmpty, new.fill_ring_empty);
        self.add(Reason::RxDropped, new.other);
    }
}

pub struct Runtime {
    pub snap: Arc<Snapshot>,
    pub state: State,
    pub flows: FlowTable,
    pub kernel: Kernel,
    pub ports: PortRegistry,
    pub counters: Counters,
    limits: Limits,
    /// The port the next turn of the loop serves first.
    first_port: usize,
    /// The frames a port's turn took (kept for its capacity).
    frames: RxBuffer,
    /// How long the loop spins on the rings before it sleeps.
    busy_poll: BusyPoll,
    /// Where the DHCP leases are kept, once `keep_leases_in` was called.
    lease_file: Option<LeaseFile>,
    /// Where the revision of the installed flows is recorded, once
    /// `record_revisions_in` was called (see [`adoption`]).
    revision_file: Option<std::path::PathBuf>,
    /// Until when flows taken over from an earlier vnetd stay (ns).
    hand_over_until: Option<u64>,
    /// The control thread's link (topology changes, API views); none in
    /// tests that drive the runtime directly.
    ctl: Option<control::Link>,
    /// Where the first packets of skb ports arrive; none until vnetd set it
    /// up (and in tests of XDP ports alone).
    upcall: Option<UpcallPath>,
    /// The frames taken off it in a turn, with their port's position (kept
    /// for its capacity).
    upcalls_in: RxBuffer,
    /// This host's end of the tunnels to ports on other hosts; none on a
    /// single host.
    tunnel: Option<Tunnel>,
    /// What the kernel's tunnel maps hold (see [`tunnels`]).
    tunnels_written: tunnels::Written,
    /// The next hop's MAC each peer's installed flows encapsulate with,
    /// checked every second against the neighbour table.
    peer_macs: HashMap<[u8; 4], [u8; 6]>,
}

/// How many socket batches of the upcall path a turn of the loop reads.
const UPCALL_BATCHES: usize = 4;

/// The action bits a flow needs for the executors of its ports: XDP hands a
/// flow whose egress runs the skb executor to tc (`VIA_TC`: an XDP
/// redirect into a guest's veth would be lost), and the skb executor
/// delivers into a veth's peer in another namespace directly.
fn executor_flags(ingress: Executor, egress: &BoundPort) -> u32 {
    if egress.executor != Executor::Skb {
        return 0;
    }
    let mut flags = 0;
    if ingress == Executor::Xdp {
        flags |= act::VIA_TC;
    }
    if egress.redirect_peer {
        flags |= act::REDIRECT_PEER;
    }
    flags
}

const TIMER_NS: u64 = 1_000_000_000;
const SIM_TIMER_NS: u64 = 50_000_000;
const STATS_LOG_NS: u64 = 10 * TIMER_NS;

impl Runtime {
    pub fn new(
        snap: Arc<Snapshot>,
        kernel: Kernel,
        ports: Vec<BoundPort>,
        limits: Limits,
    ) -> Runtime {
        Runtime {
            snap,
            state: limits.state(),
            flows: FlowTable::with_device_limit(limits.flows_per_device),
            kernel,
            ports: PortRegistry::new(ports),
            counters: Counters::default(),
            limits,
            first_port: 0,
            frames: RxBuffer::default(),
            busy_poll: BusyPoll::OFF,
            lease_file: None,
            revision_file: None,
            hand_over_until: None,
            ctl: None,
            upcall: None,
            upcalls_in: RxBuffer::default(),
            tunnel: None,
            tunnels_written: tunnels::Written::default(),
            peer_macs: HashMap::new(),
        }
    }

    /// Sends what is for ports on other hosts through `tunnel` from now on.
    /// Starts from what an earlier vnetd left in the (pinned) tunnel maps:
    /// those entries go on delivering until the ports are bound, and the
    /// first sync after that (`sync_tunnels`) removes what this topology
    /// no longer has.
    pub fn attach_tunnel(&mut self, tunnel: Tunnel) -> Result<(), KernelError> {
        self.tunnels_written = tunnels::Written::from_kernel(&self.kernel)?;
        self.tunnel = Some(tunnel);
        Ok(())
    }

    /// Serves the upcall path's socket from now on.
    pub fn attach_upcall_path(&mut self, path: UpcallPath) {
        self.upcall = Some(path);
    }

    /// Spins on the receive rings for `busy_poll` before sleeping (off
    /// unless set: tests drive the loop as they like).
    pub fn set_busy_poll(&mut self, busy_poll: BusyPoll) {
        self.busy_poll = busy_poll;
    }

    /// Keeps the DHCP leases in `state_dir`: loads them now and writes them
    /// whenever they change. A file that cannot be read is moved aside
    /// (`.bad`), so that it is not overwritten, and vnetd starts without it.
    pub fn keep_leases_in(&mut self, state_dir: &Path) {
        let mut file = LeaseFile::new(state_dir);
        match file.load(
            &mut self.state.dhcp.leases,
            now_ns(),
            lease_file::unix_now(),
        ) {
            Ok(n) => {
                tracing::info!(leases = n, file = %file.path().display(), "DHCP leases loaded")
            }
            Err(e) => {
                let aside = file.path().with_extension("json.bad");
                let moved = std::fs::rename(file.path(), &aside);
                tracing::warn!(error = %e, moved_to = %aside.display(), ?moved, "starting without the DHCP leases");
            }
        }
        self.lease_file = Some(file);
    }

    /// Writes the DHCP leases if they changed since the last write. The
    /// timer calls it every second rather than after each ACK: a client
    /// whose lease was lost to a crash gets its address back when it
    /// renews (the server grants a free address to whoever asks for it),
    /// and a guest sending requests in a loop cannot make the worker fsync
    /// in a loop.
    pub fn save_leases(&mut self) {
        let Some(file) = &mut self.lease_file else {
            return;
        };
        if let Err(e) =
            file.save_if_changed(&self.state.dhcp.leases, now_ns(), lease_file::unix_now())
        {
            tracing::warn!(error = %e, "DHCP leases not saved");
        }
    }

    /// The receive sockets a worker of `share` serves: its queues of every
    /// port and of the upcall path.
    fn share_sockets(&self, share: Share) -> impl Iterator<Item = &crate::afxdp::Xsk> {
        let ports = self.ports.iter().flat_map(|p| p.receive_sockets());
        let upcall = self.upcall.iter().flat_map(|u| u.receive_sockets());
        ports
            .chain(upcall)
            .filter(move |(queue, _)| share.serves(*queue))
            .map(|(_, xsk)| xsk)
    }

    /// Whether a receive ring of `share`'s sockets has frames, without
    /// taking any (the spin of [`workers`]).
    fn has_frames(&self, share: Share) -> bool {
        self.share_sockets(share).any(|x| x.has_frames())
    }

    /// The fds a worker of `share` waits on: its receive sockets (ports'
    /// and the upcall path's) and, for worker 0, the tunnel's flow state,
    /// the control thread's wake-up and the link events.
    fn wait_fds(&self, share: Share) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.share_sockets(share).map(|x| x.fd()).collect();
        if !share.is_primary() {
            return fds;
        }
        if let Some(t) = &self.tunnel {
            fds.push(t.state_fd().as_raw_fd());
        }
        if let Some(link) = &self.ctl {
            fds.push(link.wake.fd().as_raw_fd());
            fds.extend(link.link_events_fd().map(|fd| fd.as_raw_fd()));
        }
        fds
    }

    /// One turn of a worker: each of `share`'s sockets of every port once,
    /// round-robin from `first_port`, then its queues of the upcall path
    /// (the skb ports' first packets). Returns how many frames it took off
    /// the rings.
    fn serve_ports(&mut self, share: Share) -> u32 {
        let n = self.ports.len();
        let mut took = 0;
        if n > 0 {
            let first = self.first_port % n;
            for k in 0..n {
                let i = (first + k) % n;
                for queue in 0..=self.ports.at(i).queues.len() {
                    if share.serves(queue) {
                        took += self.service(i, queue);
                    }
                }
            }
            self.first_port = (first + 1) % n;
        }
        // Even with no port bound: frames left in the rings (an earlier
        // vnetd's tc programs) must be read, or the poll never sleeps.
        let queues = self.upcall.as_ref().map_or(0, |u| 1 + u.queues.len());
        for queue in 0..queues {
            if share.serves(queue) {
                took += self.serve_upcalls(queue);
            }
        }
        took
    }

    /// Handles what came through queue `queue` of the upcall path: up to
    /// [`UPCALL_BATCHES`] socket batches a turn (it carries the first
    /// packets of every skb port), each frame charged to its ingress port's
    /// budget.
    fn serve_upcalls(&mut self, queue: usize) -> u32 {
        let Some(xsk) = self.upcall.as_mut().and_then(|u| u.socket_mut(queue)) else {
            return 0;
        };
        let mut taken = std::mem::take(&mut self.upcalls_in);
        taken.clear();
        let mut took = 0;
        let now = now_ns();
        let (ports, counters) = (&mut self.ports, &mut self.counters);
        let (snap, limits) = (&self.snap, &self.limits);
        for _ in 0..UPCALL_BATCHES {
            let n = xsk.receive(|bytes| {
                let Some(received) = upcall_path::read(bytes) else {
                    counters.count(Reason::Malformed);
                    return;
                };
                let Some(i) = ports.position_of_ifindex(received.ifindex) else {
                    counters.count(Reason::UnknownInterface);
                    return;
                };
                // Charged to its port before it is copied, as on the ports'
                // own sockets (`service`).
                let limit = limits.upcalls_at(snap, ports.at(i).port);
                let port = ports.at_mut(i);
                if !port.upcalls.take(now, &limit) {
                    port.upcall_dropped += 1;
                    counters.count(Reason::UpcallBudget);
                    return;
                }
                taken.push_with(i, |b| received.append_frame_to(b));
            });
            took += n;
            if n == 0 {
                break;
            }
        }
        for k in 0..taken.len() {
            let (i, frame) = taken.frame_mut(k);
            self.handle_received(i, frame);
        }
        self.upcalls_in = taken;
        took
    }

    /// The upcall budget of the port at position `i`.
    fn upcall_limit(&self, i: usize) -> UpcallLimit {
        self.limits.upcalls_at(&self.snap, self.ports.at(i).port)
    }

    /// Handles what port `i` received on receive queue `queue`: at most
    /// `afxdp::BATCH` frames, each charged to the port's budget (one for
    /// all its queues) before it is even copied, then installs their flows
    /// in one batch. Returns how many frames it took.
    fn service(&mut self, i: usize, queue: usize) -> u32 {
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let now = now_ns();
        let limit = self.upcall_limit(i);
        let port = self.ports.at_mut(i);
        let Some(xsk) = crate::ports::queue_socket_mut(&mut port.xsk, &mut port.queues, queue)
        else {
            self.frames = frames;
            return 0;
        };
        let budget = &mut port.upcalls;
        let mut over = 0;
        let took = xsk.receive(|f| {
            if budget.take(now, &limit) {
                frames.push(i, f);
            } else {
                over += 1;
            }
        });
        port.upcall_dropped += over;
        self.counters.add(Reason::UpcallBudget, over);
        for k in 0..frames.len() {
            let (_, frame) = frames.frame_mut(k);
            self.handle_received(i, frame);
        }
        self.frames = frames;
        took
    }

    /// Removes and counts the flows of `batch` the worker could not write
    /// (`failed`, emptied).
    fn flows_not_written(&mut self, batch: &flows::Batch, failed: &mut Vec<(usize, KernelError)>) {
        let failed: Vec<(usize, InstallError)> = failed
            .drain(..)
            .map(|(at, e)| (at, install_error(e)))
            .collect();
        let done = self.flows.not_written(&mut self.kernel, batch, &failed);
        self.count_flushed(done);
    }

    /// Counts the flows a write refused.
    fn count_flushed(&mut self, done: flows::Flushed) {
        self.counters.add(Reason::FlowTableFull, done.full as u64);
        if let Some(e) = done.first_other {
            tracing::warn!(error = %e, failed = done.other, "installing flows");
        }
    }

    /// Writes the flows queued since the last call in one batch, and counts
    /// those the kernel refused.
    fn install_flows(&mut self) {
        if self.flows.queued() == 0 {
            return;
        }
        let done = self.flows.flush(&mut self.kernel);
        self.count_flushed(done);
    }

    /// Adds what the kernel dropped at each socket since the last reading
    /// to the counters.
    fn read_socket_drops(&mut self) {
        for p in &mut self.ports {
            self.counters.socket_drops(p);
            for q in &mut p.queues {
                self.counters.xsk_drops(&q.xsk, &mut q.drops);
            }
        }
        if let Some(up) = &mut self.upcall {
            self.counters.xsk_drops(&up.xsk, &mut up.drops);
            for q in &mut up.queues {
                self.counters.xsk_drops(&q.xsk, &mut q.drops);
            }
        }
    }

    /// The device (tenant) a flow entering by `port` is charged to.
    fn device_tag(&self, port: PortId) -> Option<Tag> {
        let p = self.snap.ports.get(port)?;
        Some(match p.device {
            DeviceRef::Bridge(b) => self.snap.bridges.get(b)?.tag,
            DeviceRef::Router(r) => self.snap.routers.get(r)?.tag,
        })
    }

    /// The kicks of every transmit ring with frames waiting, for the
    /// worker to run once it let go of the runtime (see [`workers`]).
    fn transmit_kicks(&mut self, kicks: &mut Vec<Kick>) {
        kicks.extend(self.ports.iter_mut().filter_map(|p| p.xsk.kick()));
    }

    /// Kicks every transmit ring with frames waiting, now.
    fn flush(&mut self) {
        for p in &mut self.ports {
            if let Some(kick) = p.xsk.kick() {
                kick.run();
            }
        }
    }

    /// A frame the kernel sent up: a guest with checksum offload may have
    /// sent it with a partial checksum, and what userspace sends on must be
    /// complete.
    fn handle_received(&mut self, i: usize, frame: &mut [u8]) {
        packet::offload::complete_partial_checksum(frame);
        self.handle(i, frame);
    }

    fn handle(&mut self, i: usize, frame: &[u8]) {
        self.counters.received += 1;
        let port = self.ports.at_mut(i);
        port.rx += 1;
        port.rx_bytes += frame.len() as u64;
        let in_port = port.port;
        let now = now_ns();
        let decision = sim::simulate(&self.snap, &mut self.state, in_port, frame, now, false);
        self.apply(decision, Some((i, frame)), now);
    }

    /// Carries out a decision: invalidations, transmissions, counters, the
    /// flow (keyed on `ingress`: bound port index and frame), and packets
    /// released by ARP, which are simulated again from their origin.
    fn apply(&mut self, decision: sim::Decision, ingress: Option<(usize, &[u8])>, now: u64) {
        if !decision.invalidate.is_empty() {
            // The queued flows were decided before this invalidation; the
            // table would write them first anyway, this counts refusals.
            self.install_flows();
        }
        for tag in &decision.invalidate {
            let n = self.flows.invalidate(&mut self.kernel, *tag);
            tracing::debug!(tag = tag.0, flows = n, "invalidated flows");
        }
        // Ahead of the packet: what the other host needs for its replies.
        if !decision.state_out.is_empty() {
            self.send_flow_state(&decision);
        }
        for emit in &decision.emit {
            let (sent, unsent) = match self.ports.by_port_mut(emit.port) {
                Some(b) => (b.xsk.send(&emit.frame), Reason::TxRingFull),
                // Not bound here: on another host, or a local port whose
                // interface is gone (counted as before).
                None => match self.snap.remote(emit.port) {
                    Some(to) => (self.send_remote(to, &emit.frame), Reason::TunnelTxFailed),
                    None => (false, Reason::TxRingFull),
                },
            };
            if !sent {
                self.counters.count(unsent);
            }
        }
        if ingress.is_some() {
            match decision.verdict {
                Verdict::Forwarded => self.counters.forwarded += 1,
                Verdict::Flooded => self.counters.flooded += 1,
                Verdict::Answered => self.counters.answered += 1,
                Verdict::Consumed => self.counters.consumed += 1,
                Verdict::Dropped(r) => self.counters.count(r),
            }
        }
        for (port, frame) in &decision.released {
            if let Some(b) = self.ports.position(*port) {
                self.handle(b, frame);
            }
        }
        let (Some(mut flow), Some((i, _))) = (decision.install, ingress) else {
            return;
        };
        let ifindex = self.ports.at(i).ifindex;
        // Keyed on the headers the simulation parsed the frame into.
        let Some(key) = decision.received.and_then(|h| h.flow_key(ifindex)) else {
            return;
        };
        let Some(device) = self.device_tag(self.ports.at(i).port) else {
            return;
        };
        let mut actions = flow.actions;
        if let Some(out) = flow.output {
            match self.ports.by_port(out) {
                Some(b) => {
                    actions.out_ifindex = b.ifindex;
                    actions.flags |= executor_flags(self.ports.at(i).executor, b);
                }
                None => {
                    let ingress = self.ports.at(i).executor;
                    let Some((peer, mac)) = self.tunnel_actions(out, &key, ingress, &mut actions)
                    else {
                        return;
                    };
                    flow.tags.push(Tag::tunnel_peer(peer));
                    self.peer_macs.insert(peer, mac);
                }
            }
        }
        // Queued: the turn's flows are written together (`install_flows`).
        match self
            .flows
            .queue_for(&mut self.kernel, Some(device), key, &actions, flow, now)
        {
            Ok(()) => {}
            Err(InstallError::Full) => self.counters.count(Reason::FlowTableFull),
            Err(InstallError::DeviceLimit) => self.counters.count(Reason::DeviceFlowLimit),
            Err(e) => tracing::warn!(error = %e, "installing a flow"),
        }
    }

    /// Sends `frame` through the tunnel to the port of tunnel key `key` at
    /// `address` (`Snapshot::remote`).
    fn send_remote(&self, (address, key): ([u8; 4], u32), frame: &[u8]) -> bool {
        self.tunnel
            .as_ref()
            .is_some_and(|t| t.send(address, key, frame))
    }

    /// Makes `actions` (towards `port`, on another host) encapsulate and
    /// leave by the underlay; returns the peer and the next hop's MAC used.
    /// `None` when the flow cannot be installed: no tunnel, the next hop not
    /// resolved yet (the packet went through the socket, which resolves
    /// it), or a VLAN tag to push (a tunnel's inner frame is sent as
    /// userspace built it).
    fn tunnel_actions(
        &self,
        port: PortId,
        key: &FlowKey,
        ingress: Executor,
        actions: &mut FlowActions,
    ) -> Option<([u8; 4], [u8; 6])> {
        let (Some(tunnel), Some((tunnel_address, tunnel_key))) =
            (&self.tunnel, self.snap.remote(port))
        else {
            return None;
        };
        // The inner frame of a tunnel is untagged: one to tag stays in
        // userspace, and so does a tagged one kept tagged (on tc the tag is
        // the skb's, and would end up on the outer frame).
        if actions.flags & act::PUSH_VLAN != 0
            || (key.tagged() && actions.flags & act::POP_VLAN == 0)
        {
            return None;
        }
        let known = self.peer_macs.get(&tunnel_address).copied();
        let encap = tunnel.encap(tunnel_address, tunnel_key, key, known)?;
        actions.encap = encap;
        actions.flags |= act::ENCAP_VXLAN;
        actions.out_ifindex = tunnel.underlay.ifindex;
        let inner = tunnel.underlay.inner_mtu();
        if actions.mtu == 0 || actions.mtu > inner {
            actions.mtu = inner;
        }
        if ingress == Executor::Xdp && tunnel.underlay.executor == Executor::Skb {
            actions.flags |= act::VIA_TC;
        }
        Some((tunnel_address, encap.eth_dst))
    }

    /// Invalidates the flows towards a peer whose next hop's MAC changed or
    /// went from the neighbour table (they would go to the old MAC), and
    /// forgets peers no flow uses any more.
    fn check_tunnel_peers(&mut self) {
        let Some(tunnel) = &self.tunnel else {
            return;
        };
        if self.peer_macs.is_empty() {
            return;
        }
        let peers: Vec<([u8; 4], [u8; 6])> = self.peer_macs.iter().map(|(a, m)| (*a, *m)).collect();
        let Some(moved) = tunnel.moved_peers(&peers) else {
            return;
        };
        for peer in moved {
            let n = self
                .flows
                .invalidate(&mut self.kernel, Tag::tunnel_peer(peer));
            tracing::info!(peer = %std::net::Ipv4Addr::from(peer), flows = n, "next hop of a tunnel changed: its flows go");
            self.peer_macs.remove(&peer);
        }
        let flows = &self.flows;
        self.peer_macs
            .retain(|peer, _| flows.uses(Tag::tunnel_peer(*peer)));
    }

    /// The simulation's own timers (ARP retries and expiry), run often: a
    /// retry is due half a second after the first request.
    fn sim_timers(&mut self, now: u64) {
        let decision = sim::tick(&self.snap, &mut self.state, now);
        self.apply(decision, None, now);
        self.install_flows();
        self.flush();
    }

    fn timers(&mut self, now: u64) {
        self.end_hand_over(now);
        self.check_tunnel_peers();
        let expired = self.flows.expire(&mut self.kernel, now);
        if expired > 0 {
            tracing::debug!(expired, "expired idle flows");
        }
        // State entries that installed flows still use are kept (the
        // kernel forwards their traffic, so userspace does not see it).
        let flows = &self.flows;
        let mut gone = self
            .state
            .macs
            .expire(now, mac_table::DEFAULT_MAX_AGE_NS, |t| flows.uses(t));
        gone.extend(self.state.conntrack.expire(now, |t| flows.uses(t)));
        gone.extend(self.state.nat.expire(now, |t| flows.uses(t)));
        for tag in gone {
            self.flows.invalidate(&mut self.kernel, tag);
        }
        self.state.dhcp.leases.expire(now);
        self.save_leases();
        self.read_socket_drops();
    }

    pub fn log_stats(&self) {
        let over_budget: Vec<(&str, u64)> = self
            .ports
            .iter()
            .filter(|p| p.upcall_dropped > 0)
            .map(|p| (p.xsk.ifname.as_str(), p.upcall_dropped))
            .collect();
        let kernel = self.kernel.stats().ok();
        let k = |r: Reason| kernel.as_ref().map(|s| s[r as usize]).unwrap_or(0);
        // Both executors; a frame XDP passes to tc is received once.
        let sum = |rs: &[Reason]| rs.iter().map(|&r| k(r)).sum::<u64>();
        tracing::info!(
            kernel_rx = (k(Reason::XdpRx) + k(Reason::TcRx)).saturating_sub(k(Reason::XdpPassToTc)),
            kernel_hits = sum(&[
                Reason::XdpHitRedirect,
                Reason::XdpHitDrop,
                Reason::TcHitRedirect,
                Reason::TcHitDrop
            ]),
            kernel_misses = sum(&[
                Reason::XdpMiss,
                Reason::XdpUnparsed,
                Reason::TcMiss,
                Reason::TcUnparsed
            ]),
            tunnel_encap = k(Reason::TunnelEncap),
            tunnel_decap = k(Reason::TunnelDecap),
            userspace_rx = self.counters.received,
            forwarded = self.counters.forwarded,
            flooded = self.counters.flooded,
            answered = self.counters.answered,
            flows = self.flows.len(),
            macs = self.state.macs.len(),
            busy_ms = self.counters.busy_ns / 1_000_000,
            lock_wait_ms = self.counters.lock_wait_ns / 1_000_000,
            drops = ?self.counters.by_reason,
            upcall_budget_by_port = ?over_budget,
            "stats"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_tables_take_the_limits_shares() {
        let limits = Limits {
            conntrack_per_zone: 5,
            nat_per_zone: 7,
            ..Limits::default()
        };
        let state = limits.state();
        assert_eq!(state.conntrack.per_zone(), 5);
        assert_eq!(state.nat.zone_share(), 7);
        assert_eq!(Limits::default().state().nat.zone_share(), 65_536);
    }
}
