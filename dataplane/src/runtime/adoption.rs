//! Taking over from the vnetd before: the flows it left in the pinned flow
//! map (see `kernel/pin.rs`) keep forwarding while this one starts, and
//! are adopted once the ports are bound.
//!
//! An adopted flow is a decision of the earlier process that this one did
//! not see being made, so what it read is unknown. It is kept only where
//! that cannot matter:
//!
//! - the stored revision is the one the flows were installed under (the
//!   worker writes it to `kernel-flows.revision` in the state directory each
//!   time it runs one); otherwise every flow is dropped;
//! - its ingress interface (and its output, if any) is bound to a port now;
//! - it rewrites no address or port: a NAT binding lives in the earlier
//!   process's memory only, and a new one could hand the same public port to
//!   another connection. Such flows are dropped; their next packets come up
//!   and are translated anew (a TCP connection through SNAT breaks, as on
//!   any NAT gateway that restarts without its table).
//!
//! Adopted flows carry their ports' tags (an unbind or a port change
//! removes them), the tags of the MACs they match on their ingress bridge
//! (a MAC that moves removes them, as for any flow), and [`Tag::ADOPTED`],
//! which the first topology change invalidates whole. Whatever else they
//! read (a router's ARP entry, a chain's connection state) this process
//! never saw, so they are kept for a hand-over window only
//! ([`HAND_OVER_NS`]): then they are removed, and each one's next packet is
//! simulated and installed afresh with all its tags. Conntrack entries are
//! not rebuilt: a connection's next packet after the window is judged on
//! this process's table (its replies, seen in the window's first packets
//! of new flows, or not).

use super::{now_ns, Runtime};
use crate::sim::{DeviceRef, Tag, FLOW_IDLE_TIMEOUT_NS};
use std::path::Path;
use vnet_common::act;

/// The file in the state directory that says which revision the kernel's
/// flows were installed under.
pub const REVISION_FILE: &str = "kernel-flows.revision";

/// How long adopted flows stay: long enough for this process to start
/// without the traffic noticing, short enough that a decision it did not
/// make (and cannot invalidate precisely) does not last.
pub const HAND_OVER_NS: u64 = 30 * 1_000_000_000;

/// What a take-over did, for the log and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adoption {
    pub adopted: usize,
    /// Dropped because the revision changed.
    pub stale: usize,
    /// Dropped because they rewrite addresses or ports (NAT).
    pub nat: usize,
    /// Dropped because an interface they use is not bound now.
    pub unbound: usize,
}

/// The revision recorded in `state_dir`, if any.
pub fn recorded_revision(state_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(state_dir.join(REVISION_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records `revision` as the one the kernel's flows are installed under.
/// Written to a temporary file and renamed, so a crash leaves the old
/// value or the new one, never a torn one.
pub(super) fn record_revision(path: &Path, revision: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{revision}\n"))?;
    std::fs::rename(&tmp, path)
}

impl Runtime {
    /// Records in `state_dir` the revision of the flows this worker
    /// installs, from now on at every new revision.
    pub fn record_revisions_in(&mut self, state_dir: &Path) {
        self.revision_file = Some(state_dir.join(REVISION_FILE));
        self.record_running_revision();
    }

    pub(super) fn record_running_revision(&self) {
        let Some(path) = &self.revision_file else {
            return;
        };
        if let Err(e) = record_revision(path, self.snap.revision) {
            tracing::warn!(file = %path.display(), error = %e, "recording the flows' revision (a restart will drop them)");
        }
    }

    /// Takes over the flows an earlier vnetd left in the kernel, if the
    /// maps were pinned by one: adopts those that fit this process (see the
    /// module's notes) and removes the others. `installed_under` is the
    /// revision they were installed under, as recorded. Call once, after
    /// the ports are bound.
    ///
    /// Flows it cannot read it cannot account for (they would never expire
    /// or be invalidated): that is an error, and vnetd does not start.
    pub fn take_over_kernel_flows(
        &mut self,
        installed_under: Option<u64>,
    ) -> Result<Adoption, crate::kernel::KernelError> {
        let mut outcome = Adoption::default();
        if !self.kernel.adopted_maps() {
            return Ok(outcome);
        }
        self.kernel.release_stale_links();
        let flows = self.kernel.all_flows()?;
        let same_revision = installed_under == Some(self.snap.revision);
        let now = now_ns();
        let rewrites = act::SET_IP_SRC | act::SET_IP_DST | act::SET_L4_SRC | act::SET_L4_DST;
        for (key, value) in flows {
            let actions = &value.actions;
            let ingress = self.ports.by_ifindex(key.ifindex).map(|b| b.port);
            let egress = if actions.flags & act::OUTPUT != 0 {
                self.ports
                    .by_ifindex(actions.out_ifindex)
                    .map(|b| Some(b.port))
            } else {
                Some(None)
            };
            let keep = if !same_revision {
                outcome.stale += 1;
                None
            } else if actions.flags & rewrites != 0 {
                outcome.nat += 1;
                None
            } else {
                match (ingress, egress) {
                    (Some(i), Some(o)) => Some((i, o)),
                    _ => {
                        outcome.unbound += 1;
                        None
                    }
                }
            };
            let Some((ingress, egress)) = keep else {
                if let Err(e) = self.kernel.remove_flow(&key) {
                    tracing::warn!(error = %e, "removing a flow an earlier vnetd left");
                }
                continue;
            };
            let mut tags = vec![Tag::ADOPTED];
            tags.extend(self.snap.ports.get(ingress).map(|p| p.tag));
            tags.extend(egress.and_then(|o| self.snap.ports.get(o)).map(|p| p.tag));
            let ingress_bridge = self.snap.ports.get(ingress).and_then(|p| match p.device {
                DeviceRef::Bridge(b) => self.snap.bridges.get(b).map(|b| b.tag),
                DeviceRef::Router(_) => None,
            });
            if let Some(bridge) = ingress_bridge {
                tags.push(Tag::mac(bridge, &key.eth_src));
                tags.push(Tag::mac(bridge, &key.eth_dst));
            }
            let device = self.device_tag(ingress);
            self.flows
                .adopt(key, device, tags, FLOW_IDLE_TIMEOUT_NS, now);
            outcome.adopted += 1;
        }
        tracing::info!(
            adopted = outcome.adopted,
            dropped_stale_revision = outcome.stale,
            dropped_nat = outcome.nat,
            dropped_unbound = outcome.unbound,
            recorded_revision = ?installed_under,
            running_revision = self.snap.revision,
            "took over the kernel flows of the earlier vnetd"
        );
        if outcome.adopted > 0 {
            self.hand_over_until = Some(now + HAND_OVER_NS);
        }
        self.record_running_revision();
        Ok(outcome)
    }

    /// Ends the hand-over window: the adopted flows left go, and their
    /// next packets are simulated here.
    pub(super) fn end_hand_over(&mut self, now: u64) {
        if self.hand_over_until.is_some_and(|until| now >= until) {
            self.hand_over_until = None;
            let n = self.flows.invalidate(&mut self.kernel, Tag::ADOPTED);
            tracing::info!(
                flows = n,
                "hand-over from the earlier vnetd over: its flows are replaced by this one's"
            );
        }
    }
}
