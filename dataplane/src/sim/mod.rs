//! The simulation of the virtual topology.
//!
//! [`simulate`] is a function from (frame, ingress port, snapshot, state,
//! time) to a [`Decision`]; it performs no I/O. The AF_XDP worker, the unit
//! tests, the benchmarks and `vnetctl trace` all call it. It walks the
//! pipeline of SEMANTICS.md: exterior port ingress → device → egress port.
mod bridge;
pub mod mac_table;
pub mod snapshot;
pub mod tag;

pub use mac_table::MacTable;
pub use snapshot::{Binding, DeviceRef, PortId, Snapshot};
pub use tag::Tag;

use crate::packet::{self, build, Mac};
use vnet_common::{act, FlowActions, Reason};

/// Idle timeout of installed flows. Short enough that a flow table full of
/// dead flows empties quickly, long enough that a ping every second or a
/// keep-alive stays in the kernel.
pub const FLOW_IDLE_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

/// A frame to transmit on an exterior port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    pub port: PortId,
    pub frame: Vec<u8>,
}

/// A flow to install: the kernel applies `actions` to every later packet
/// with the same key. `output` is the egress port; the runtime turns it into
/// `actions.out_ifindex`, which the simulation does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub actions: FlowActions,
    pub output: Option<PortId>,
    pub tags: Vec<Tag>,
    pub idle_timeout_ns: u64,
}

/// How the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Sent to one port.
    Forwarded,
    /// Sent to every other port that is up (not installed as a flow).
    Flooded,
    /// The dataplane answered the frame itself (ARP suppression, ...).
    Answered,
    Dropped(Reason),
}

/// One step of the walk, for `vnetctl trace` and the tests. Ids refer to
/// the snapshot the decision was made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Ingress {
        port: PortId,
    },
    VlanPopped {
        vid: u16,
    },
    Device {
        device: DeviceRef,
    },
    MacLearned {
        mac: Mac,
        port: PortId,
    },
    MacMoved {
        mac: Mac,
        from: Option<PortId>,
        to: PortId,
    },
    MacTableFull {
        mac: Mac,
    },
    ArpSuppressed {
        ip: [u8; 4],
        mac: Mac,
    },
    /// L2 lookup: `None` is an unknown destination.
    MacLookup {
        mac: Mac,
        port: Option<PortId>,
        is_static: bool,
    },
    Flood {
        ports: Vec<PortId>,
    },
    Egress {
        port: PortId,
    },
    VlanPushed {
        vid: u16,
    },
    Drop {
        reason: Reason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub emit: Vec<Emit>,
    pub install: Option<Flow>,
    /// Tags whose flows must go because this decision changed state (a MAC
    /// that moved).
    pub invalidate: Vec<Tag>,
    /// Filled only when tracing was asked for.
    pub trace: Vec<Step>,
}

/// The state tables the simulation reads and writes.
#[derive(Debug, Default)]
pub struct State {
    pub macs: MacTable,
}

/// Inputs of one walk that stay the same along it.
pub(crate) struct Walk<'a> {
    pub snap: &'a Snapshot,
    pub state: &'a mut State,
    pub now_ns: u64,
    pub tracing: bool,
    pub decision: Decision,
}

impl Walk<'_> {
    pub fn step(&mut self, step: impl FnOnce() -> Step) {
        if self.tracing {
            self.decision.trace.push(step());
        }
    }

    /// Ends the walk with a drop. With `install`, later packets with the same
    /// key are dropped in the kernel until one of `tags` changes.
    pub fn drop(&mut self, reason: Reason, install: Option<Vec<Tag>>) {
        self.step(|| Step::Drop { reason });
        self.decision.verdict = Verdict::Dropped(reason);
        if let Some(tags) = install {
            let actions = FlowActions {
                flags: act::DROP,
                ..FlowActions::default()
            };
            self.decision.install = Some(Flow {
                actions,
                output: None,
                tags,
                idle_timeout_ns: FLOW_IDLE_TIMEOUT_NS,
            });
        }
    }

    /// Emits `frame` (untagged, as inside the virtual network) on exterior
    /// port `port`, adding the port's VLAN tag.
    pub fn emit(&mut self, port: PortId, frame: Vec<u8>) {
        let vlan = self.snap.ports[port].vlan;
        let frame = match vlan {
            Some(vid) => {
                self.step(|| Step::VlanPushed { vid });
                build::with_vlan(&frame, vid)
            }
            None => frame,
        };
        self.step(|| Step::Egress { port });
        self.decision.emit.push(Emit { port, frame });
    }
}

/// Simulates `frame` arriving on port `in_port`.
pub fn simulate(
    snap: &Snapshot,
    state: &mut State,
    in_port: PortId,
    frame: &[u8],
    now_ns: u64,
    tracing: bool,
) -> Decision {
    let decision = Decision {
        verdict: Verdict::Dropped(Reason::Malformed),
        emit: Vec::new(),
        install: None,
        invalidate: Vec::new(),
        trace: Vec::new(),
    };
    let mut walk = Walk {
        snap,
        state,
        now_ns,
        tracing,
        decision,
    };
    ingress(&mut walk, in_port, frame);
    walk.decision
}

/// Exterior port ingress: port state and VLAN, then the port's device.
fn ingress(walk: &mut Walk, in_port: PortId, frame: &[u8]) {
    walk.step(|| Step::Ingress { port: in_port });
    let Some(port) = walk.snap.ports.get(in_port) else {
        walk.drop(Reason::UnknownInterface, None);
        return;
    };
    let headers = match packet::parse(frame) {
        Ok(h) => h,
        Err(_) => {
            walk.drop(Reason::Malformed, None);
            return;
        }
    };
    if !port.up {
        walk.drop(Reason::PortDown, Some(vec![port.tag]));
        return;
    }
    // An access port for VLAN v carries frames tagged v on the wire; inside
    // the virtual network frames are untagged. Any other tagging is dropped.
    let untagged;
    let (frame, headers) = match (port.vlan, headers.vlan) {
        (None, None) => (frame, headers),
        (Some(vid), Some(tag)) if vid == tag => {
            walk.step(|| Step::VlanPopped { vid });
            untagged = build::without_vlan(frame);
            match packet::parse(&untagged) {
                Ok(h) => (untagged.as_slice(), h),
                Err(_) => {
                    walk.drop(Reason::Malformed, None);
                    return;
                }
            }
        }
        _ => {
            walk.drop(Reason::VlanMismatch, Some(vec![port.tag]));
            return;
        }
    };
    match port.device {
        DeviceRef::Bridge(b) => bridge::process(walk, b, in_port, frame, &headers),
        DeviceRef::Router(_) => walk.drop(Reason::NoEgress, None),
    }
}

/// Actions that carry a frame from `in_port` to `out_port` unchanged inside
/// the virtual network: the VLAN of each end, then output.
pub(crate) fn forward_actions(snap: &Snapshot, in_port: PortId, out_port: PortId) -> FlowActions {
    let mut a = FlowActions {
        flags: act::OUTPUT,
        ..FlowActions::default()
    };
    let (vin, vout) = (snap.ports[in_port].vlan, snap.ports[out_port].vlan);
    if vin != vout {
        if vin.is_some() {
            a.flags |= act::POP_VLAN;
        }
        if let Some(vid) = vout {
            a.flags |= act::PUSH_VLAN;
            a.vlan = vid;
        }
    }
    a
}
