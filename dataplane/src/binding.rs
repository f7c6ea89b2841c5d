//! Binding exterior ports to host interfaces: XDP attached, an AF_XDP
//! socket, its XSKMAP slot and the interface's IFACES entry; and undoing all
//! of it. vnetd binds at start-up and the worker binds and unbinds on every
//! topology change and whenever an interface appears, is recreated or
//! vanishes ([`step`], driven by [`crate::link_watch`]).
use crate::afxdp::Xsk;
use crate::kernel::{AttachMode, Kernel};
use crate::ports::BoundPort;
use crate::sim::PortId;
use crate::veth::{self, PeerOutcome};
use anyhow::Context;
use std::collections::BTreeSet;
use vnet_common::{IfaceConfig, MAX_IFACES};

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

/// The attach mode chosen at start-up, and the XSKMAP slots in use.
#[derive(Debug)]
pub struct Binder {
    pub mode: AttachMode,
    used: BTreeSet<u32>,
}

impl Binder {
    pub fn new(mode: AttachMode) -> Binder {
        Binder {
            mode,
            used: BTreeSet::new(),
        }
    }

    fn free_slot(&self) -> Option<u32> {
        (0..MAX_IFACES).find(|s| !self.used.contains(s))
    }

    /// Binds `port` to `ifname`. On failure nothing stays attached or set.
    pub fn bind(
        &mut self,
        kernel: &mut Kernel,
        port: PortId,
        ifname: &str,
    ) -> anyhow::Result<BoundPort> {
        if ifindex(ifname).is_none() {
            anyhow::bail!("interface {ifname} does not exist");
        }
        let slot = self.free_slot().with_context(|| {
            format!("no free socket slot for {ifname} (at most {MAX_IFACES} interfaces)")
        })?;
        // A veth added while running needs its peer prepared like the ones
        // bound at start-up, or native redirects into it are lost.
        if self.mode == AttachMode::Native {
            match veth::prepare_peer(ifname) {
                PeerOutcome::NotVeth => {}
                PeerOutcome::Prepared(p) => tracing::info!(
                    interface = %ifname,
                    peer = %p.peer,
                    "veth peer: enabled GRO and turned tx checksum offload off"
                ),
                PeerOutcome::Unprepared(why) => tracing::warn!(
                    interface = %ifname,
                    "veth peer not prepared ({why}): native XDP redirects into {ifname} may be lost"
                ),
            }
        }
        let ifindex = match kernel.attach(ifname, self.mode) {
            // Native XDP takes no frame larger than a page on veth (ERANGE
            // for a jumbo MTU): such an interface runs the program in SKB
            // mode, which takes any MTU. Flow hits of any size are then
            // forwarded; misses too large for a socket are counted
            // (`xdp_too_big`).
            Err(e) if self.mode == AttachMode::Native && e.raw_os_error() == Some(libc::ERANGE) => {
                tracing::warn!(
                    interface = %ifname,
                    "its MTU is too large for native XDP; attaching in SKB mode instead"
                );
                kernel.attach(ifname, AttachMode::Skb)?
            }
            other => other?,
        };
        let undo = |kernel: &mut Kernel| {
            let _ = kernel.clear_xsk(slot);
            let _ = kernel.detach(ifname);
        };
        let result = (|| {
            let xsk = Xsk::bind(ifname)?;
            kernel.set_xsk(slot, xsk.fd())?;
            kernel.set_iface(
                ifindex,
                IfaceConfig {
                    xsk_slot: slot,
                    _pad: 0,
                },
            )?;
            anyhow::Ok(xsk)
        })();
        match result {
            Ok(xsk) => {
                self.used.insert(slot);
                Ok(BoundPort::new(port, ifindex, xsk, slot))
            }
            Err(e) => {
                undo(kernel);
                Err(e)
            }
        }
    }

    /// Unbinds: the IFACES entry first (misses stop going to the socket),
    /// then the slot, then XDP. Errors are logged: the interface may be
    /// gone already.
    pub fn unbind(&mut self, kernel: &mut Kernel, bound: BoundPort) {
        let ifname = bound.xsk.ifname.clone();
        if let Err(e) = kernel.remove_iface(bound.ifindex) {
            tracing::warn!(interface = %ifname, error = %e, "removing the interface entry");
        }
        if let Err(e) = kernel.clear_xsk(bound.slot) {
            tracing::warn!(interface = %ifname, error = %e, "clearing the socket slot");
        }
        if let Err(e) = kernel.detach(&ifname) {
            tracing::warn!(interface = %ifname, error = %e, "detaching XDP");
        }
        self.used.remove(&bound.slot);
        tracing::info!(interface = %ifname, "unbound");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_port_steps_by_its_bound_and_present_ifindex() {
        assert_eq!(step(None, None), Step::Wait);
        assert_eq!(step(None, Some(4)), Step::Bind);
        assert_eq!(step(Some(4), Some(4)), Step::Keep);
        assert_eq!(step(Some(4), Some(9)), Step::Rebind { old: 4, new: 9 });
        assert_eq!(step(Some(4), None), Step::Unbind);
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
