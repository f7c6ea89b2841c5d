//! The worker's side of the control thread: new topology revisions (swap
//! the snapshot, bind and unbind interfaces, invalidate the flows the change
//! touched), the host's interfaces coming and going (netlink link events:
//! bind, rebind, unbind, no apply needed) and the API's views of the
//! worker's own data (trace on an overlay of the state, flows, counters,
//! health). The worker drains these between polls, so it alone still
//! touches its sockets, state and kernel.
use super::{now_ns, Runtime};
use crate::binding::{self, Binder, Look, Step, Unbound};
use crate::link_watch::LinkWatch;
use crate::packet::build;
use crate::ports::BoundPort;
use crate::sim::{self, PortId, Snapshot};
use crate::views;
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vnet_common::{FlowKey, Reason};
use vnet_model::reports::{
    CounterReport, DataplaneHealth, FlowInfo, FlowPage, FlowsPage, PortState, PortStatus,
    TraceReport, TraceRequest, TraceStep, TrafficCounters,
};
use vnet_model::{AnyPort, MacAddr, Protocol, Topology};

/// What the control thread asks of the worker.
pub enum Command {
    /// Run this revision: swap the snapshot in, invalidate the flows of
    /// these tags (what changed since the revision sent before; the
    /// control thread worked them out).
    Apply {
        snapshot: Arc<Snapshot>,
        topology: Arc<Topology>,
        invalidate: Vec<sim::Tag>,
    },
    Trace(TraceRequest, Sender<Result<TraceReport, String>>),
    Flows(FlowPage, Sender<Result<FlowsPage, String>>),
    Counters(Sender<CounterReport>),
    Health(Sender<DataplaneHealth>),
}

/// An eventfd the worker polls with its sockets: a command wakes it at
/// once instead of waiting for its next poll timeout.
pub struct Wakeup(std::os::fd::OwnedFd);

impl Wakeup {
    pub fn new() -> std::io::Result<Wakeup> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Wakeup(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn notify(&self) {
        use std::os::fd::AsRawFd;
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer; a full counter (EAGAIN)
        // already means "wake up".
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Resets the counter after a wake-up.
    fn drain(&self) {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN is fine.
        unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }
}

/// The worker has stopped: nobody receives commands any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStopped;

/// The control thread's end: sending a command also wakes the worker.
#[derive(Clone)]
pub struct Commands {
    tx: Sender<Command>,
    wake: Arc<Wakeup>,
}

impl Commands {
    /// Fails when the worker has stopped.
    pub fn send(&self, command: Command) -> Result<(), WorkerStopped> {
        self.tx.send(command).map_err(|_| WorkerStopped)?;
        self.wake.notify();
        Ok(())
    }
}

/// A command channel whose sends wake the worker: the sender, the
/// receiver, and the wake-up the worker polls.
pub fn channel() -> std::io::Result<(Commands, Receiver<Command>, Arc<Wakeup>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let wake = Arc::new(Wakeup::new()?);
    Ok((
        Commands {
            tx,
            wake: wake.clone(),
        },
        rx,
        wake,
    ))
}

/// How often the worker looks at every port's interface even without a
/// link event: a safety net should netlink miss one (it cannot be opened,
/// or overruns without saying so).
const LINK_CHECK_NS: u64 = 2_000_000_000;

/// The worker's end of the link with the control thread.
pub struct Link {
    pub commands: Receiver<Command>,
    pub wake: Arc<Wakeup>,
    /// The revision the worker runs, for the API's Apply to wait on.
    pub running: Arc<AtomicU64>,
    pub binder: Binder,
    /// The model of the running revision (for trace defaults).
    pub topology: Arc<Topology>,
    /// Exterior ports of the running snapshot that are not bound and were
    /// logged on their own, by name: a bind that failed (with why), an
    /// interface that vanished. At most one entry per port of the
    /// snapshot. Ports whose interface never existed have none
    /// ([`log_waiting`] counts them): a large topology has thousands.
    unbound: crate::hash::HashMap<String, Unbound>,
    /// Link events; none if the socket could not be opened (then only
    /// the safety net follows the interfaces).
    links: Option<LinkWatch>,
    next_link_check: u64,
    /// How many ports waited for their interfaces when last logged.
    waiting_logged: usize,
}

impl Link {
    pub fn new(
        commands: Receiver<Command>,
        wake: Arc<Wakeup>,
        running: Arc<AtomicU64>,
        binder: Binder,
        topology: Arc<Topology>,
    ) -> Link {
        let links = LinkWatch::open()
            .map_err(|e| {
                tracing::warn!(
                    error = %e,
                    "no netlink link events: interfaces are looked at every {} s only",
                    LINK_CHECK_NS / 1_000_000_000
                )
            })
            .ok();
        Link {
            commands,
            wake,
            running,
            binder,
            topology,
            unbound: Default::default(),
            links,
            next_link_check: 0,
            waiting_logged: 0,
        }
    }

    /// The netlink socket, for the worker's poll set.
    pub fn link_events_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.links.as_ref().map(LinkWatch::fd)
    }
}

/// How many of the ports named in the log as waiting at most.
const WAITING_NAMED: usize = 5;

/// Says how many ports wait for interfaces that do not exist when that
/// number changes, naming a few (`vnetctl status` lists all). A port whose
/// interface vanished or whose bind failed has an entry in `unbound` and
/// was logged on its own; these are the others that are not bound.
fn log_waiting(link: &mut Link, snap: &Snapshot, bound: &crate::ports::PortRegistry) {
    let waiting = snap
        .interface_port_count()
        .saturating_sub(bound.len() + link.unbound.len());
    if waiting == link.waiting_logged {
        return;
    }
    link.waiting_logged = waiting;
    if waiting == 0 {
        return;
    }
    // Only when the number changes: this visits every port.
    let named: Vec<String> = snap
        .interfaces()
        .filter(|&(port, _)| {
            !bound.is_bound(port) && !link.unbound.contains_key(&snap.ports[port].name)
        })
        .take(WAITING_NAMED)
        .map(|(port, ifname)| format!("{} ({ifname})", snap.ports[port].name))
        .collect();
    let more = waiting.saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more (vnetctl status lists them)")
    } else {
        String::new()
    };
    tracing::warn!(
        waiting,
        "interface does not exist: port waiting for it: {}{more}",
        named.join(", ")
    );
}

impl Runtime {
    /// Connects the worker to the control thread, and binds the ports
    /// whose interfaces vnetd did not bind at start-up (or says they wait).
    pub fn attach_control(&mut self, link: Link) {
        link.running.store(self.snap.revision, Ordering::Release);
        self.ctl = Some(link);
        self.reconcile_links(Look::Revision);
    }

    /// Looks at the interfaces when netlink says a link changed, and every
    /// [`LINK_CHECK_NS`] anyway.
    pub(super) fn follow_links(&mut self) {
        let Some(link) = self.ctl.as_mut() else {
            return;
        };
        let event = link.links.as_mut().is_some_and(|w| w.drain().changed());
        let now = now_ns();
        if event || now >= link.next_link_check {
            link.next_link_check = now + LINK_CHECK_NS;
            self.reconcile_links(if event { Look::LinkEvent } else { Look::Timer });
        }
    }

    /// Brings every exterior port of the running snapshot in line with the
    /// host's interfaces: binds the ports whose interface exists, rebinds
    /// those whose interface was recreated (another ifindex), unbinds those
    /// whose interface vanished. Flows through a port that loses its
    /// binding are invalidated, so the kernel redirects nothing to a dead
    /// ifindex. Each transition is logged once. When a port whose bind
    /// failed is tried again: [`Unbound::retry`].
    pub(super) fn reconcile_links(&mut self, look: Look) {
        let Some(link) = self.ctl.as_mut() else {
            return;
        };
        let snap = self.snap.clone();
        let interfaces = binding::Interfaces::list();
        let mut changed = false;
        let mut steps = Vec::new();
        let lost = self.ports.retain(|b| {
            let present = interfaces.ifindex(&b.xsk.ifname);
            let step = match binding::step(Some(b.ifindex), present) {
                // An XDP port has a socket per receive queue: a change of
                // their number binds it again.
                Step::Keep if b.slot.is_some() => {
                    let (had, has) = (b.socket_count(), binding::socket_queues(&b.xsk.ifname));
                    if had == has {
                        Step::Keep
                    } else {
                        Step::Requeue { had, has }
                    }
                }
                step => step,
            };
            if step == Step::Keep {
                return true;
            }
            steps.push(step);
            false
        });
        for (mut b, step) in lost.into_iter().zip(steps) {
            let name = snap.ports.get(b.port).map(|p| p.name.clone());
            let shown = name.clone().unwrap_or_default();
            match step {
                Step::Rebind { old, new } => tracing::info!(
                    port = %shown,
                    interface = %b.xsk.ifname,
                    old_ifindex = old,
                    new_ifindex = new,
                    "interface recreated: rebinding"
                ),
                Step::Requeue { had, has } => tracing::info!(
                    port = %shown,
                    interface = %b.xsk.ifname,
                    had,
                    has,
                    "receive queues changed: rebinding, a socket per queue"
                ),
                _ => tracing::info!(
                    port = %shown,
                    interface = %b.xsk.ifname,
                    ifindex = b.ifindex,
                    "interface vanished: port unbound, waiting for it"
                ),
            }
            let invalidated = snap
                .ports
                .get(b.port)
                .map_or(0, |p| self.flows.invalidate(&mut self.kernel, p.tag));
            tracing::debug!(invalidated, "flows of the lost binding");
            // Its socket's last drops are counted before it closes.
            self.counters.socket_drops(&mut b);
            link.binder.unbind(&mut self.kernel, b);
            if let Some(name) = name {
                if step == Step::Unbind {
                    link.unbound.insert(name, Unbound::Waiting);
                }
            }
            changed = true;
        }

        // Only ports whose interface exists can be bound: looked up by the
        // host's interfaces, so ports waiting for theirs cost nothing here
        // (10 000 of them took the worker 13 ms per look when each was
        // visited). They are counted below, and listed by `vnetctl status`.
        for (port, ifindex) in interfaces.present_ports(&snap) {
            if self.ports.is_bound(port) {
                continue;
            }
            let name = &snap.ports[port].name;
            let sim::Binding::Interface(ifname) = &snap.ports[port].binding else {
                continue;
            };
            if let Some(state) = link.unbound.get(name) {
                if !state.retry(ifindex, look, now_ns()) {
                    continue;
                }
            }
            let executor = snap.ports[port].executor;
            let limit = self.limits.upcalls_of(&snap.ports[port]);
            match link
                .binder
                .bind(&mut self.kernel, port, ifname, executor, limit)
            {
                Ok(b) => {
                    tracing::info!(port = %name, interface = %ifname, ifindex = b.ifindex, "bound");
                    link.unbound.remove(name);
                    self.ports.register(b);
                    changed = true;
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    let said = matches!(
                        link.unbound.get(name),
                        Some(Unbound::Failed { error: was, .. }) if *was == error
                    );
                    if !said {
                        tracing::warn!(port = %name, interface = %ifname, ifindex, "cannot bind: {error}");
                    }
                    let at_ns = now_ns();
                    let failed = Unbound::Failed {
                        ifindex,
                        error,
                        at_ns,
                    };
                    link.unbound.insert(name.clone(), failed);
                }
            }
        }
        // Only ports of this snapshot that are still unbound keep a state.
        link.unbound.retain(|name, _| {
            snap.port_by_name(name).is_some_and(|p| {
                matches!(snap.ports[p].binding, sim::Binding::Interface(_))
                    && !self.ports.is_bound(p)
            })
        });
        log_waiting(link, &snap, &self.ports);
        if changed {
            tracing::debug!(bound = self.ports.len(), "bindings changed");
        }
        if changed || look == Look::Revision || !self.tunnels_written.synced {
            self.sync_tunnels();
        }
    }

    /// Carries out what the control thread asked since the last poll.
    pub(super) fn control(&mut self) {
        let Some(link) = &self.ctl else { return };
        link.wake.drain();
        let commands: Vec<Command> = link.commands.try_iter().collect();
        for c in commands {
            match c {
                Command::Apply {
                    snapshot,
                    topology,
                    invalidate,
                } => self.reconfigure(snapshot, topology, &invalidate),
                // A caller that gave up waiting is not an error.
                Command::Trace(req, reply) => {
                    let _ = reply.send(self.trace(&req));
                }
                Command::Flows(page, reply) => {
                    let _ = reply.send(self.flow_page(&page));
                }
                Command::Counters(reply) => {
                    // The sockets' drops as of now, not of the last timer.
                    self.read_socket_drops();
                    let _ = reply.send(self.counter_report());
                }
                Command::Health(reply) => {
                    let _ = reply.send(self.health());
                }
            }
        }
    }

    /// Runs a new revision: binds what it adds, unbinds what it removes,
    /// swaps the snapshot and invalidates exactly the flows whose ports or
    /// devices changed.
    fn reconfigure(&mut self, snap: Arc<Snapshot>, topology: Arc<Topology>, tags: &[sim::Tag]) {
        // Sockets about to be closed take their last drops with them.
        self.read_socket_drops();
        let Some(link) = self.ctl.as_mut() else {
            return;
        };
        // Keep the sockets of interfaces still bound (under their new port
        // ids), unbind the rest; the new snapshot's other ports are bound
        // (or found waiting) as for a link event.
        // A port whose executor setting changed is bound again.
        let gone = self.ports.retain(|b| {
            // Validation gives an interface one port per host; the last
            // wins if a port placed here and one placed nowhere share it.
            match snap.ports_of_interface(&b.xsk.ifname).last() {
                Some(&port) if snap.ports[port].executor == b.wanted => {
                    b.port = port;
                    true
                }
                _ => false,
            }
        });
        for b in gone {
            link.binder.unbind(&mut self.kernel, b);
        }
        let revision = snap.revision;
        self.snap = snap;
        self.reconcile_links(Look::Revision);
        let Some(link) = self.ctl.as_mut() else {
            return;
        };
        let mut invalidated = 0;
        for tag in tags {
            invalidated += self.flows.invalidate(&mut self.kernel, *tag);
        }
        // Flows taken over from an earlier vnetd: what they read is
        // unknown, so any change may concern them.
        if !tags.is_empty() {
            invalidated += self.flows.invalidate(&mut self.kernel, sim::Tag::ADOPTED);
        }
        link.topology = topology;
        link.running.store(revision, Ordering::Release);
        self.record_running_revision();
        tracing::info!(
            revision,
            changed = tags.len(),
            invalidated,
            flows = self.flows.len(),
            ports = self.ports.len(),
            "running a new topology revision"
        );
    }

    fn port_of_ifindex(&self, ifindex: u32) -> String {
        self.ports
            .by_ifindex(ifindex)
            .map(|b| views::port_name(&self.snap, b.port))
            .unwrap_or_else(|| format!("ifindex {ifindex}"))
    }

    /// Simulates the packet on an overlay of the state (`sim::Shared`: the
    /// tables are shared, a table the trace writes is copied for it alone):
    /// nothing live changes.
    fn trace(&self, req: &TraceRequest) -> Result<TraceReport, String> {
        let snap = &self.snap;
        let name = req.port.to_string();
        let port = snap.port_by_name(&name).ok_or_else(|| {
            format!(
                "port: no port {name} in the running topology (revision {})",
                snap.revision
            )
        })?;
        let empty = Topology::default();
        let topo = self
            .ctl
            .as_ref()
            .map(|l| l.topology.as_ref())
            .unwrap_or(&empty);
        let frame = trace_frame(snap, topo, port, req);
        let mut state = self.state.clone();
        let decision = sim::simulate(snap, &mut state, port, &frame, now_ns(), true);
        let packet = decision
            .received
            .and_then(|h| h.flow_key(0))
            .map(|k| views::key(&k))
            .unwrap_or_else(|| format!("{} bytes", frame.len()));
        let steps = views::steps(snap, topo, &decision.trace)
            .into_iter()
            .map(|(kind, detail)| TraceStep { kind, detail })
            .collect();
        let flow = decision.install.as_ref().map(|f| {
            let out = f
                .output
                .map(|p| views::port_name(snap, p))
                .unwrap_or_default();
            format!(
                "{} (tags: {})",
                views::actions(&f.actions, |_| out.clone()),
                f.tags.len()
            )
        });
        Ok(TraceReport {
            revision: snap.revision,
            packet,
            steps,
            verdict: views::verdict(&decision.verdict),
            emitted: decision
                .emit
                .iter()
                .map(|e| views::port_name(snap, e.port))
                .collect(),
            flow,
        })
    }

    /// One page of the installed flows, in flow-key order: a selection of
    /// the `limit` smallest keys after the token (linear in the flows, not
    /// a sort of all of them), and the kernel's counters of those alone.
    fn flow_page(&self, page: &FlowPage) -> Result<FlowsPage, String> {
        let now = now_ns();
        let ms = |ns: u64| now.saturating_sub(ns) / 1_000_000;
        let after = match page.after.as_deref() {
            None => None,
            Some(token) => Some(views::key_from_token(token).ok_or_else(|| {
                format!(
                    "page_token: `{}` is not a token this server gave (ask without one to start over)",
                    vnet_model::visible(token)
                )
            })?),
        };
        let mut keys: Vec<&FlowKey> = self
            .flows
            .keys()
            .filter(|k| after.is_none_or(|a| **k > a))
            .collect();
        let limit = page.limit();
        let more = keys.len() > limit;
        if more {
            keys.select_nth_unstable(limit);
            keys.truncate(limit);
        }
        keys.sort_unstable();
        let flows = keys
            .iter()
            .map(|&key| {
                let (tags, installed) = self.flows.record(key).unwrap_or((&[], now));
                let value = self.kernel.flow(key).ok().flatten().unwrap_or_default();
                let last = value.last_used_ns.max(installed);
                FlowInfo {
                    in_port: self.port_of_ifindex(key.ifindex),
                    matches: views::key(key),
                    actions: views::actions(&value.actions, |i| self.port_of_ifindex(i)),
                    packets: value.packets,
                    bytes: value.bytes,
                    age_ms: ms(installed),
                    idle_ms: ms(last),
                    tags: tags.len() as u32,
                }
            })
            .collect();
        Ok(FlowsPage {
            flows,
            next: more
                .then(|| keys.last().map(|k| views::key_token(k)))
                .flatten(),
            total: self.flows.len() as u64,
        })
    }

    /// The kernel's side of every flow (actions and counters), read in
    /// batches: one syscall per few hundred flows, not one per flow.
    fn kernel_flows(&self) -> HashMap<vnet_common::FlowKey, vnet_common::FlowValue> {
        match self.kernel.all_flows() {
            Ok(flows) => flows.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the kernel's flows");
                HashMap::new()
            }
        }
    }

    fn counter_report(&self) -> CounterReport {
        let kernel = self.kernel.stats().ok();
        let mut reasons = Vec::new();
        for &r in Reason::ALL {
            let n = match &kernel {
                Some(k) if (r as usize) < k.len() => k[r as usize],
                _ => self.userspace_count(r),
            };
            reasons.push((r.name().to_string(), n));
        }
        let c = &self.counters;
        let f = &self.flows.counters;
        let totals = vec![
            ("userspace_rx".into(), c.received),
            ("forwarded".into(), c.forwarded),
            ("flooded".into(), c.flooded),
            ("answered".into(), c.answered),
            ("worker_busy_ns".into(), c.busy_ns),
            ("flows".into(), self.flows.len() as u64),
            ("flows_installed".into(), f.installed),
            ("flows_invalidated".into(), f.invalidated),
            ("flows_expired".into(), f.expired),
            ("flow_table_full".into(), f.table_full),
            ("macs".into(), self.state.macs.len() as u64),
            ("arp_entries".into(), self.state.arp.len() as u64),
            ("conntrack".into(), self.state.conntrack.len() as u64),
            ("nat_bindings".into(), self.state.nat.len() as u64),
            ("fragments".into(), self.state.fragments.len() as u64),
        ];
        // Kernel traffic by ingress interface, from the flows' counters.
        let mut by_ifindex: HashMap<u32, TrafficCounters> = HashMap::new();
        let kernel = self.kernel_flows();
        for key in self.flows.keys() {
            let v = kernel.get(key).copied().unwrap_or_default();
            let t = by_ifindex.entry(key.ifindex).or_default();
            t.kernel_packets += v.packets;
            t.kernel_bytes += v.bytes;
            t.flows += 1;
        }
        let mut ports = Vec::new();
        let mut devices: BTreeMap<String, TrafficCounters> = BTreeMap::new();
        for b in &self.ports {
            let mut t = by_ifindex.get(&b.ifindex).cloned().unwrap_or_default();
            t.userspace_rx = b.rx;
            t.userspace_bytes = b.rx_bytes;
            t.upcall_budget = b.upcall_dropped;
            let port = views::port_name(&self.snap, b.port);
            if let Some(p) = self.snap.ports.get(b.port) {
                let d = devices
                    .entry(views::device_name(&self.snap, p.device))
                    .or_default();
                d.userspace_rx += t.userspace_rx;
                d.userspace_bytes += t.userspace_bytes;
                d.kernel_packets += t.kernel_packets;
                d.kernel_bytes += t.kernel_bytes;
                d.flows += t.flows;
                d.upcall_budget += t.upcall_budget;
            }
            ports.push((port, b.xsk.ifname.clone(), t));
        }
        ports.sort_by(|a, b| a.0.cmp(&b.0));
        CounterReport {
            revision: self.snap.revision,
            reasons,
            totals,
            ports,
            devices: devices.into_iter().collect(),
        }
    }

    /// How often userspace counted `reason`: the packets' verdicts, and
    /// what the tables count themselves (a MAC not learned is no verdict:
    /// its frame still goes where it should).
    fn userspace_count(&self, reason: Reason) -> u64 {
        let counted = self.counters.by_reason.get(&reason).copied().unwrap_or(0);
        counted
            + match reason {
                Reason::DeviceMacLimit => self.state.macs.counters.bridge_limit,
                _ => 0,
            }
    }

    fn health(&self) -> DataplaneHealth {
        let mut interfaces: Vec<(String, String, u32)> = self
            .ports
            .iter()
            .map(|b: &BoundPort| {
                (
                    views::port_name(&self.snap, b.port),
                    b.xsk.ifname.clone(),
                    b.ifindex,
                )
            })
            .collect();
        interfaces.sort();
        let unbound = self.ctl.as_ref().map(|l| &l.unbound);
        let mut ports = Vec::new();
        let mut problems = Vec::new();
        for (port, ifname) in self.snap.interfaces() {
            let name = views::port_name(&self.snap, port);
            let state = match self.ports.by_port(port) {
                Some(b) => PortState::Bound { ifindex: b.ifindex },
                None => match unbound.and_then(|u| u.get(&name)) {
                    Some(Unbound::Failed { error, .. }) => PortState::Failed(error.clone()),
                    _ => PortState::Waiting,
                },
            };
            match &state {
                PortState::Bound { .. } => {}
                PortState::Waiting => problems.push(format!(
                    "port {name} is not bound: interface {ifname} does not exist (waiting for it)"
                )),
                PortState::Failed(why) => {
                    problems.push(format!("port {name} is not bound to {ifname}: {why}"))
                }
            }
            ports.push(PortStatus {
                port: name,
                interface: ifname.to_string(),
                state,
            });
        }
        ports.sort_by(|a, b| a.port.cmp(&b.port));
        DataplaneHealth {
            running_revision: self.snap.revision,
            interfaces,
            problems,
            ports,
        }
    }
}

/// Used when a trace gives no source MAC and the topology knows none.
const TRACE_SRC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfe, 0x01]);

/// The frame of a trace request as it would arrive on `port`'s wire. MACs
/// left out are what the virtual network knows for the addresses (DHCP
/// hosts and ARP entries of the port's bridge, the gateway router port), or
/// else a fixed local MAC (source) and broadcast (destination).
fn trace_frame(snap: &Snapshot, topo: &Topology, port: PortId, req: &TraceRequest) -> Vec<u8> {
    let known = |addr| known_mac(topo, &req.port.device, addr);
    let src_mac = req
        .src_mac
        .or_else(|| known(req.src))
        .unwrap_or(TRACE_SRC_MAC);
    let dst_mac = req
        .dst_mac
        .or_else(|| known(req.dst))
        .or_else(|| gateway_mac(topo, req))
        .unwrap_or(MacAddr::BROADCAST);
    let (s, d) = (src_mac.0, dst_mac.0);
    let (src, dst) = (req.src.octets(), req.dst.octets());
    let frame = match req.protocol {
        Protocol::TCP => build::tcp_frame(
            s,
            d,
            src,
            dst,
            req.src_port.unwrap_or(40000),
            req.dst_port.unwrap_or(80),
            0x02,
        ),
        Protocol::UDP => build::udp_frame(
            s,
            d,
            src,
            dst,
            req.src_port.unwrap_or(40000),
            req.dst_port.unwrap_or(53),
            b"vnet trace",
        ),
        _ => build::icmp_echo_frame(s, d, src, dst, true, 1, 1, b"vnet trace"),
    };
    match snap.ports.get(port).and_then(|p| p.vlan) {
        Some(vid) => build::with_vlan(&frame, vid),
        None => frame,
    }
}

/// The MAC a bridge knows for `addr` (DHCP host or ARP entry).
fn known_mac(topo: &Topology, device: &str, addr: std::net::Ipv4Addr) -> Option<MacAddr> {
    let b = topo.bridges.get(device)?;
    b.arp_table
        .iter()
        .find(|a| a.ip == addr)
        .map(|a| a.mac)
        .or_else(|| {
            b.dhcp
                .iter()
                .flat_map(|d| &d.hosts)
                .find(|h| h.ip == addr)
                .map(|h| h.mac)
        })
}

/// The router port a packet from `req.src` to `req.dst` goes to first: the
/// ingress router port itself, or the router port on the ingress bridge
/// whose subnet holds the source but not the destination.
fn gateway_mac(topo: &Topology, req: &TraceRequest) -> Option<MacAddr> {
    if let Some(AnyPort::Router(p)) = topo.port(&req.port) {
        return Some(p.effective_mac(&req.port.device, &req.port.port));
    }
    let bridge = topo.bridges.get(&req.port.device)?;
    bridge.ports.values().find_map(|bp| {
        let peer = bp.peer.as_ref()?;
        let rp = topo.routers.get(&peer.device)?.ports.get(&peer.port)?;
        (rp.address.contains(&req.src) && !rp.address.contains(&req.dst))
            .then(|| rp.effective_mac(&peer.device, &peer.port))
    })
}
