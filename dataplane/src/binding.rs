//! Binding exterior ports to host interfaces, by executor: the tc program
//! at ingress always; for XDP ports also XDP, an AF_XDP socket, its XSKMAP
//! slot and the interface's IFACES entry; for skb ports a socket that only
//! transmits (their first packets come through the upcall path); and
//! undoing all of it. vnetd binds at start-up and the worker binds and unbinds on every
//! topology change and whenever an interface appears, is recreated or
//! vanishes ([`step`], driven by [`crate::link_watch`]).
use crate::afxdp::Xsk;
use crate::kernel::{AttachMode, Kernel};
use crate::ports::{BoundPort, QueueSocket};
use crate::sim::{PortId, Snapshot};
use crate::upcall_path::{self, UpcallPath};
use crate::upcalls::UpcallLimit;
use crate::veth::{self, LinkInfo};
use anyhow::Context;
use std::collections::BTreeSet;
use vnet_common::{upcall, IfaceConfig, MAX_IFACES};
use vnet_model::Executor;

/// Receive queues of one XDP port that get a socket each: a NIC with more
/// (RSS) loses the first packets of the others (dropped, counted
/// `xdp_no_socket`; vnetd warns at bind: `ethtool -L <nic> combined 8` on
/// the host makes them fit). Each socket holds 16 MiB of UMEM.
pub const MAX_SOCKET_QUEUES: u32 = 8;

/// The receive queues of `ifname` (`/sys/class/net/<if>/queues/rx-*`): 1
/// when sysfs does not say.
pub fn rx_queues(ifname: &str) -> u32 {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    (n as u32).max(1)
}

/// The receive queues of `ifname` that get a socket when it is bound on
/// the XDP executor.
pub fn socket_queues(ifname: &str) -> u32 {
    rx_queues(ifname).min(MAX_SOCKET_QUEUES)
}

/// Binds a socket to queue `queue` of `ifname`. The kernel releases a
/// queue's previous socket once its last descriptor closes, and with
/// several workers a transmit kick may hold one a few microseconds after
/// the port was unbound (`afxdp::Kick`): a rebind that finds the queue
/// busy tries again a few times before it fails.
fn bind_socket(ifname: &str, queue: u32) -> Result<Xsk, crate::afxdp::XskError> {
    let mut tries = 0;
    loop {
        match Xsk::bind(ifname, queue) {
            Err(e) if e.is_busy() && tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// What to do with one exterior port, from the ifindex it is bound to and
/// the ifindex its interface has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bound to the interface that exists: nothing to do.
    Keep,
    /// Not bound, and the interface exists.
    Bind,
    /// Bound, but the interface was recreated (another ifindex): the old
    /// binding points at a dead interface.
    Rebind { old: u32, new: u32 },
    /// Bound, and the interface is gone.
    Unbind,
    /// Not bound, and no such interface yet.
    Wait,
    /// Bound (XDP) with sockets for `had` receive queues, and the interface
    /// has `has` now (`ethtool -L`, a multi-queue tap whose guest turned
    /// its queues on): bound again, a socket per queue.
    Requeue { had: u32, has: u32 },
}

pub fn step(bound: Option<u32>, present: Option<u32>) -> Step {
    match (bound, present) {
        (None, None) => Step::Wait,
        (None, Some(_)) => Step::Bind,
        (Some(old), Some(new)) if old == new => Step::Keep,
        (Some(old), Some(new)) => Step::Rebind { old, new },
        (Some(_), None) => Step::Unbind,
    }
}

/// The ifindex of interface `ifname` in vnetd's namespace, if it exists.
pub fn ifindex(ifname: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(ifname).ok()
}

/// The host's interfaces by name, from one listing (`if_nameindex`: one
/// netlink dump), for a look at every port: asking for each name costs a
/// socket and an ioctl per port, which for 10 000 ports waiting for their
/// interfaces was most of a revision's time in the worker.
pub struct Interfaces(Option<crate::hash::HashMap<String, u32>>);

impl Interfaces {
    /// The interfaces now; if the listing fails, each name is asked for on
    /// its own.
    pub fn list() -> Interfaces {
        Interfaces(nix::net::if_::if_nameindex().ok().map(|all| {
            all.iter()
                .map(|i| (i.name().to_string_lossy().into_owned(), i.index()))
                .collect()
        }))
    }

    /// The ifindex of `ifname`, if it exists.
    pub fn ifindex(&self, ifname: &str) -> Option<u32> {
        match &self.0 {
            Some(all) => all.get(ifname).copied(),
            None => ifindex(ifname),
        }
    }

    /// The ports of `snap` whose interface exists, with its ifindex, in
    /// port order. From the listing, by the host's interfaces (tens) rather
    /// than the snapshot's ports (thousands, most waiting or elsewhere);
    /// without one, each port's interface asked for on its own.
    pub fn present_ports(&self, snap: &Snapshot) -> Vec<(PortId, u32)> {
        let mut present: Vec<(PortId, u32)> = match &self.0 {
            Some(all) => all
                .iter()
                .flat_map(|(ifname, &ifindex)| {
                    snap.ports_of_interface(ifname)
                        .iter()
                        .map(move |&port| (port, ifindex))
                })
                .collect(),
            None => snap
                .interfaces()
                .filter_map(|(port, ifname)| Some((port, ifindex(ifname)?)))
                .collect(),
        };
        present.sort_unstable();
        present
    }
}

/// Why the worker looks at the interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The safety net, every few seconds.
    Timer,
    /// A netlink link event.
    LinkEvent,
    /// A new topology revision (an operator's apply).
    Revision,
}

/// How long a failed bind waits before a link event may retry it. Binding
/// attaches and detaches XDP, which itself sends link events: without a
/// pause a port failing after the attach would be retried in a loop.
pub const FAILED_RETRY_NS: u64 = 5_000_000_000;

/// Why an exterior port is not bound, for `vnetctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbound {
    /// Its interface does not exist (yet).
    Waiting,
    /// Binding to the interface `ifindex` failed at `at_ns`.
    Failed {
        ifindex: u32,
        error: String,
        at_ns: u64,
    },
}

impl Unbound {
    /// Whether a port in this state should be bound to `ifindex` now: a
    /// failed one when its interface was recreated, on a new revision, or
    /// on a link event [`FAILED_RETRY_NS`] after it failed (an MTU or
    /// driver change may have fixed it); never by the safety net alone.
    pub fn retry(&self, ifindex: u32, look: Look, now_ns: u64) -> bool {
        match self {
            Unbound::Waiting => true,
            Unbound::Failed {
                ifindex: failed,
                at_ns,
                ..
            } => {
                *failed != ifindex
                    || look == Look::Revision
                    || (look == Look::LinkEvent && now_ns >= at_ns.saturating_add(FAILED_RETRY_NS))
            }
        }
    }
}

/// The executor a port gets: the configured one, or for `auto` the skb
/// executor on veth and tap (guests: it keeps their GSO and partial
/// checksums) and XDP on anything else (NICs, where XDP is fastest).
/// Returns the choice and why, for the log.
pub fn resolve_executor(wanted: Executor, link: Option<&LinkInfo>) -> (Executor, &'static str) {
    match wanted {
        Executor::Xdp => (Executor::Xdp, "configured"),
        Executor::Skb => (Executor::Skb, "configured"),
        Executor::Auto => match link {
            Some(l) if l.is_guest_facing() => {
                (Executor::Skb, "auto: a veth or tap (guest) interface")
            }
            Some(_) => (Executor::Xdp, "auto: not a veth or tap"),
            None => (Executor::Xdp, "auto: the interface's kind is unknown"),
        },
    }
}

/// The XDP attach mode chosen at start-up, and the XSKMAP slots in use.
#[derive(Debug)]
pub struct Binder {
    pub mode: AttachMode,
    /// In native mode, attach a veth whose peer cannot be prepared in SKB
    /// mode rather than lose the redirects into it (`--xdp-mode auto`).
    fall_back_to_skb: bool,
    used: BTreeSet<u32>,
}

impl Binder {
    pub fn new(mode: AttachMode) -> Binder {
        Binder {
            mode,
            fall_back_to_skb: false,
            used: BTreeSet::new(),
        }
    }

    /// [`Binder::new`] in native mode, falling back to SKB mode per veth
    /// whose peer cannot be prepared.
    pub fn native_with_fallback() -> Binder {
        Binder {
            fall_back_to_skb: true,
            ..Binder::new(AttachMode::Native)
        }
    }

    /// The first of `n` consecutive free slots (a port's queues' sockets
    /// are found by the first's slot plus the queue).
    fn free_slots(&self, n: u32) -> Option<u32> {
        (0..=MAX_IFACES.checked_sub(n)?).find(|&s| (s..s + n).all(|x| !self.used.contains(&x)))
    }

    /// Binds `port` to `ifname` with the executor `wanted` resolves to. On
    /// failure nothing stays attached or set.
    /// `limit` is the port's budget of first packets, which the tc program
    /// enforces for an skb port (their first packets share one ring).
    pub fn bind(
        &mut self,
        kernel: &mut Kernel,
        port: PortId,
        ifname: &str,
        wanted: Executor,
        limit: UpcallLimit,
    ) -> anyhow::Result<BoundPort> {
        if ifindex(ifname).is_none() {
            anyhow::bail!("interface {ifname} does not exist");
        }
        let link = veth::describe(ifname);
        let (executor, why) = resolve_executor(wanted, link.as_ref());
        tracing::info!(interface = %ifname, executor = executor.as_str(), "executor: {why}");
        // Every bound interface runs the skb executor at tc ingress: on an
        // XDP port it executes the flows XDP passes to it (`act::VIA_TC`,
        // their egress is on the skb path). Attached before XDP, so no such
        // flow can meet an interface without it.
        let ifindex = kernel.attach_tc(ifname)?;
        let peer_elsewhere = link.as_ref().is_some_and(|l| l.peer_elsewhere);
        let bound = match executor {
            Executor::Xdp => self.bind_xdp(kernel, port, ifname, link.as_ref()),
            // The socket only transmits (what userspace forwards to this
            // port): nothing redirects into it, and no XDP program runs on
            // the interface. First packets come through the upcall path.
            _ => kernel
                .set_upcall_budget(ifindex, limit.per_sec, limit.burst)
                .map_err(anyhow::Error::from)
                .and_then(|()| Xsk::bind(ifname, 0).map_err(anyhow::Error::from))
                .map(|xsk| BoundPort::new(port, ifindex, xsk, None, Executor::Skb, peer_elsewhere)),
        };
        match bound {
            Ok(mut b) => {
                b.wanted = wanted;
                Ok(b)
            }
            Err(e) => {
                let _ = kernel.remove_upcall_budget(ifindex);
                let _ = kernel.detach_tc(ifname);
                Err(e)
            }
        }
    }

    fn bind_xdp(
        &mut self,
        kernel: &mut Kernel,
        port: PortId,
        ifname: &str,
        link: Option<&LinkInfo>,
    ) -> anyhow::Result<BoundPort> {
        let present = rx_queues(ifname);
        let queues = socket_queues(ifname);
        if present > queues {
            tracing::warn!(
                interface = %ifname,
                queues = present,
                "more receive queues than vnetd binds sockets to ({MAX_SOCKET_QUEUES}): first \
                 packets on the others are dropped (xdp_no_socket); `ethtool -L {ifname} \
                 combined {MAX_SOCKET_QUEUES}` on the host makes them fit"
            );
        }
        let slot = self.free_slots(queues).with_context(|| {
            format!(
                "no {queues} free socket slots for {ifname} (at most {MAX_IFACES} sockets: \
                 one per interface and receive queue)"
            )
        })?;
        let mut mode = self.mode;
        // Native XDP redirects into a veth are lost unless its peer runs XDP
        // or has GRO on, and vnetd changes nothing on a peer: a veth on the
        // XDP executor runs XDP in SKB mode (`--xdp-mode auto`), which needs
        // neither, or is warned about (`--xdp-mode native`).
        if mode == AttachMode::Native && link.is_some_and(|l| l.kind.as_deref() == Some("veth")) {
            if self.fall_back_to_skb {
                tracing::info!(
                    interface = %ifname,
                    "a veth on the XDP executor: XDP in SKB mode (native redirects into it \
                     would need its peer changed, which vnetd does not do)"
                );
                mode = AttachMode::Skb;
            } else {
                tracing::warn!(
                    interface = %ifname,
                    "native XDP on a veth: redirects into it are lost unless its peer runs \
                     XDP or has GRO on"
                );
            }
        }
        let ifindex = match kernel.attach(ifname, mode) {
            // Native XDP takes no frame larger than a page on veth (ERANGE
            // for a jumbo MTU): such an interface runs the program in SKB
            // mode, which takes any MTU. Flow hits of any size are then
            // forwarded; misses too large for a socket are counted
            // (`xdp_too_big`).
            Err(e) if mode == AttachMode::Native && e.raw_os_error() == Some(libc::ERANGE) => {
                tracing::warn!(
                    interface = %ifname,
                    "its MTU is too large for native XDP; attaching in SKB mode instead"
                );
                kernel.attach(ifname, AttachMode::Skb)?
            }
            other => other?,
        };
        let result = (|| {
            let xsk = bind_socket(ifname, 0)?;
            kernel.set_xsk(slot, xsk.fd())?;
            let mut more = Vec::new();
            for q in 1..queues {
                let xsk = bind_socket(ifname, q)?;
                kernel.set_xsk(slot + q, xsk.fd())?;
                more.push(QueueSocket::new(xsk));
            }
            kernel.set_iface(
                ifindex,
                IfaceConfig {
                    xsk_slot: slot,
                    queues,
                },
            )?;
            anyhow::Ok((xsk, more))
        })();
        match result {
            Ok((xsk, more)) => {
                self.used.extend(slot..slot + queues);
                let mut bound =
                    BoundPort::new(port, ifindex, xsk, Some(slot), Executor::Xdp, false);
                bound.queues = more;
                Ok(bound)
            }
            Err(e) => {
                for q in 0..queues {
                    let _ = kernel.clear_xsk(slot + q);
                }
                let _ = kernel.detach(ifname);
                Err(e)
            }
        }
    }

    /// Unbinds: the IFACES entry first (misses stop going to the socket),
    /// then the slot, then XDP, then tc. Errors are logged: the interface
    /// may be gone already.
    pub fn unbind(&mut self, kernel: &mut Kernel, bound: BoundPort) {
        let ifname = bound.xsk.ifname.clone();
        if let Some(slot) = bound.slot {
            if let Err(e) = kernel.remove_iface(bound.ifindex) {
                tracing::warn!(interface = %ifname, error = %e, "removing the interface entry");
            }
            for s in slot..=slot + bound.queues.len() as u32 {
                if let Err(e) = kernel.clear_xsk(s) {
                    tracing::warn!(interface = %ifname, error = %e, "clearing a socket slot");
                }
                self.used.remove(&s);
            }
            if let Err(e) = kernel.detach(&ifname) {
                tracing::warn!(interface = %ifname, error = %e, "detaching XDP");
            }
        }
        if let Err(e) = kernel.detach_tc(&ifname) {
            tracing::warn!(interface = %ifname, error = %e, "detaching the tc program");
        }
        if let Err(e) = kernel.remove_upcall_budget(bound.ifindex) {
            tracing::warn!(interface = %ifname, error = %e, "removing the upcall budget");
        }
        tracing::info!(interface = %ifname, "unbound");
    }

    /// Sets up the upcall path (`crate::upcall_path`): the pair with
    /// `queues` queues (one per worker), the upcall program on its far
    /// end, a socket per queue there in slots of their own, and the near
    /// end's ifindex for the tc program.
    pub fn bind_upcall_path(
        &mut self,
        kernel: &mut Kernel,
        queues: u32,
    ) -> anyhow::Result<UpcallPath> {
        let queues = queues.clamp(1, MAX_SOCKET_QUEUES);
        let (near, far) = upcall_path::ensure_pair(queues)?;
        let slot = self
            .free_slots(queues)
            .context("no free socket slots for the upcall path")?;
        kernel.attach_upcall(upcall::FAR)?;
        let mut path = UpcallPath::new(Xsk::bind(upcall::FAR, 0)?);
        kernel.set_xsk(slot, path.xsk.fd())?;
        for q in 1..queues {
            let xsk = Xsk::bind(upcall::FAR, q)?;
            kernel.set_xsk(slot + q, xsk.fd())?;
            path.queues.push(QueueSocket::new(xsk));
        }
        kernel.set_iface(
            far,
            IfaceConfig {
                xsk_slot: slot,
                queues,
            },
        )?;
        kernel.set_upcall_ifindex(near)?;
        self.used.extend(slot..slot + queues);
        tracing::info!(
            near = upcall::NEAR,
            far = upcall::FAR,
            queues,
            "upcall path ready: first packets of skb ports reach userspace through it"
        );
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ports_queues_get_consecutive_free_slots() {
        let mut b = Binder::new(AttachMode::Skb);
        assert_eq!(b.free_slots(4), Some(0));
        b.used.extend([0, 1, 3]);
        assert_eq!(b.free_slots(1), Some(2));
        assert_eq!(b.free_slots(2), Some(4), "2 is free but 3 is not");
        b.used.extend(4..MAX_IFACES - 1);
        assert_eq!(b.free_slots(1), Some(2));
        assert_eq!(b.free_slots(2), None, "only single slots are left");
        assert_eq!(b.free_slots(MAX_IFACES + 1), None);
    }

    #[test]
    fn one_listing_finds_what_asking_for_each_name_finds() {
        let all = Interfaces::list();
        assert!(all.0.is_some(), "if_nameindex lists the interfaces");
        assert_eq!(all.ifindex("lo"), ifindex("lo"));
        assert!(all.ifindex("lo").is_some());
        assert_eq!(all.ifindex("vnet-no-such-if"), None);
    }

    #[test]
    fn rx_queues_of_a_missing_interface_is_one() {
        assert_eq!(rx_queues("vnet-no-such-if"), 1);
        assert_eq!(socket_queues("vnet-no-such-if"), 1);
    }

    #[test]
    fn each_port_steps_by_its_bound_and_present_ifindex() {
        assert_eq!(step(None, None), Step::Wait);
        assert_eq!(step(None, Some(4)), Step::Bind);
        assert_eq!(step(Some(4), Some(4)), Step::Keep);
        assert_eq!(step(Some(4), Some(9)), Step::Rebind { old: 4, new: 9 });
        assert_eq!(step(Some(4), None), Step::Unbind);
    }

    #[test]
    fn present_ports_are_the_snapshots_ports_of_existing_interfaces_in_port_order() {
        let topology = vnet_model::parse_str(
            "version: 1\nbridges:\n  b:\n    ports:\n      p1: {interface: one-h}\n      \
             p2: {interface: gone-h}\n      p3: {interface: three-h}\n      p4: {}\n",
        )
        .expect("valid topology");
        let snap = Snapshot::compile(&topology, 1);
        let id = |name: &str| snap.port_by_name(name).unwrap();
        let listed = Interfaces(Some(
            [("lo", 1), ("three-h", 7), ("one-h", 9), ("other", 4)]
                .into_iter()
                .map(|(n, i)| (n.to_string(), i))
                .collect(),
        ));
        let mut expected = vec![(id("b/p1"), 9), (id("b/p3"), 7)];
        expected.sort_unstable();
        assert_eq!(listed.present_ports(&snap), expected);
        // Without a listing, each name is asked for: none of these exist.
        assert_eq!(Interfaces(None).present_ports(&snap), []);
    }

    #[test]
    fn a_failed_port_is_retried_on_a_new_ifindex_a_revision_or_a_later_link_event() {
        let at = 1_000;
        let failed = Unbound::Failed {
            ifindex: 4,
            error: "attaching XDP: busy".into(),
            at_ns: at,
        };
        let later = at + FAILED_RETRY_NS;
        assert!(
            !failed.retry(4, Look::Timer, later),
            "the safety net does not retry"
        );
        assert!(
            !failed.retry(4, Look::LinkEvent, later - 1),
            "the events of its own attach do not retry it at once"
        );
        assert!(
            failed.retry(4, Look::LinkEvent, later),
            "a link event may have fixed it"
        );
        assert!(failed.retry(4, Look::Revision, at), "an apply retries");
        assert!(
            failed.retry(5, Look::Timer, at),
            "a recreated interface is new"
        );
        assert!(Unbound::Waiting.retry(4, Look::Timer, at));
    }
}
