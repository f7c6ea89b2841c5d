//! The simulation of the virtual topology.
//!
//! [`simulate`] is a function from (frame, ingress port, snapshot, state,
//! time) to a [`Decision`]; it performs no I/O. The AF_XDP worker, the unit
//! tests, the benchmarks and `vnetctl trace` all call it. It walks the
//! pipeline of SEMANTICS.md: exterior port ingress → device → port → peer
//! device → … → exterior port egress. Along the way each device adds its
//! rewrites to the walk's flow actions and its dependencies to the walk's
//! tags, so a frame that crosses bridge → router → bridge leaves with one
//! flow doing all three hops.
mod arp_cache;
mod bridge;
pub mod chain;
pub mod conntrack;
mod decision;
pub mod dhcp;
mod dhcp_stage;
mod filter;
pub mod flow_state;
pub mod fragments;
pub mod mac_table;
pub mod nat;
pub mod nat_blocks;
mod port_security;
pub mod route_table;
mod router;
pub mod share;
pub mod shared;
pub mod snapshot;
pub mod tag;
mod tunnel_mtu;

pub use arp_cache::ArpCache;
pub use conntrack::Conntrack;
pub use decision::{Decision, Emit, Flow, Step, Verdict};
pub use mac_table::MacTable;
pub use shared::Shared;
pub use snapshot::{Binding, DeviceRef, PortId, RouterIf, Snapshot};
pub use tag::Tag;

use crate::packet::{self, build, Frame, Mac};
use vnet_common::{act, FlowActions, Reason};

/// Idle timeout of installed flows. Short enough that a flow table full of
/// dead flows empties quickly, long enough that a ping every second or a
/// keep-alive stays in the kernel.
pub const FLOW_IDLE_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

/// More ports than any sane path crosses: a loop in the topology. It counts
/// the depth of one path, not the copies of a flood (a bridge of hundreds of
/// ports floods to all of them).
const MAX_HOPS: u32 = 32;

/// The state tables the simulation reads and writes. Each is shared
/// copy-on-write ([`shared`]): cloning a `State` copies no table, so a
/// trace runs on an overlay of the worker's state.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub macs: Shared<MacTable>,
    pub arp: Shared<ArpCache>,
    pub conntrack: Shared<Conntrack>,
    pub nat: Shared<nat::NatTable>,
    pub fragments: Shared<fragments::FragmentTable>,
    pub dhcp: Shared<dhcp::DhcpState>,
}

/// What one path through the topology has gathered so far. The copies of
/// a flood and the frames the dataplane injects each run on a branch
/// ([`Walk::branch`]) that starts from the current path and gives it back
/// unchanged, so nothing one branch did leaks into its siblings or the
/// rest of the walk. One `Copy` value, saved and restored whole: a field
/// added here cannot be forgotten by a hand-written save.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Path {
    /// Whether the outcome may be installed as a flow (not for floods,
    /// generated frames, or decisions that depend on more than the key).
    pub installable: bool,
    /// Rewrites accumulated by the devices crossed so far.
    pub actions: FlowActions,
    /// A DNAT rule rewrote the destination.
    pub dnat_rewritten: bool,
    /// The transport fields of the datagram being walked, as rewritten so
    /// far: what its later fragments are decided by (`fragments`).
    pub datagram_l4: packet::L4,
    /// The port the frame entered the current device by.
    pub device_in: Option<PortId>,
    /// On a router: its ingress port and the sender, where REJECT answers.
    pub router_in: Option<(PortId, RouterIf, Mac)>,
    /// The same for the first router on the path: where an error about
    /// the packet as its sender sent it is answered from (`tunnel_mtu`).
    pub first_router_in: Option<(PortId, RouterIf, Mac)>,
    /// Ports crossed on the current path (not counting flood siblings).
    depth: u32,
}

/// One walk through the topology.
pub(crate) struct Walk<'a> {
    pub snap: &'a Snapshot,
    pub state: &'a mut State,
    pub now_ns: u64,
    pub tracing: bool,
    pub decision: Decision,
    /// The exterior port and the frame as received there: the origin of the
    /// flow. `None` while delivering a frame the dataplane generated.
    pub origin: Option<(PortId, &'a [u8])>,
    /// What the current path gathered: branches restore it ([`Walk::branch`]).
    pub path: Path,
    /// Objects and state entries the decision depended on (a stack: a
    /// branch pops what it pushed).
    pub tags: Vec<Tag>,
    /// Forward-direction connections to record if the packet is forwarded.
    pub pending_conns: Vec<(Tag, conntrack::Tuple)>,
    /// An ICMP "fragmentation needed" for the tunnel MTU was sent: the
    /// copies of a flood get one answer, not one per remote port.
    pub tunnel_mtu_answered: bool,
}

impl<'a> Walk<'a> {
    /// A walk from `origin` (exterior port and frame as received), or of
    /// timers and generated frames when `None` (never installed).
    fn new(
        snap: &'a Snapshot,
        state: &'a mut State,
        now_ns: u64,
        tracing: bool,
        origin: Option<(PortId, &'a [u8])>,
    ) -> Walk<'a> {
        let verdict = if origin.is_some() {
            Verdict::Dropped(Reason::Malformed)
        } else {
            Verdict::Consumed
        };
        Walk {
            snap,
            state,
            now_ns,
            tracing,
            decision: Decision::new(verdict),
            origin,
            path: Path {
                installable: origin.is_some(),
                actions: FlowActions::default(),
                dnat_rewritten: false,
                datagram_l4: packet::L4::None,
                device_in: None,
                router_in: None,
                first_router_in: None,
                depth: 0,
            },
            tags: Vec::new(),
            pending_conns: Vec::new(),
            tunnel_mtu_answered: false,
        }
    }

    pub fn step(&mut self, step: impl FnOnce() -> Step) {
        if self.tracing {
            self.decision.trace.push(step());
        }
    }

    fn set_verdict(&mut self, verdict: Verdict) {
        if self.origin.is_some() {
            self.decision.verdict = verdict;
        }
    }

    /// Ends the walk with a drop. With `install`, later packets with the
    /// same key are dropped in the kernel until one of the walk's tags
    /// changes (use it only for outcomes that depend on nothing else).
    pub fn drop(&mut self, reason: Reason, install: bool) {
        self.step(|| Step::Drop { reason });
        self.set_verdict(Verdict::Dropped(reason));
        if install && self.path.installable && self.origin.is_some() {
            let actions = FlowActions {
                flags: act::DROP,
                ..FlowActions::default()
            };
            self.decision.install = Some(Flow {
                actions,
                output: None,
                tags: self.tags.clone(),
                idle_timeout_ns: FLOW_IDLE_TIMEOUT_NS,
            });
        }
    }

    /// The decision read something outside the flow key (the key rule on
    /// `vnet_common::FlowKey`): it must not be reused for other packets.
    pub fn not_installable(&mut self, why: &'static str) {
        if self.path.installable && self.origin.is_some() {
            self.step(|| Step::NotInstalled { why });
        }
        self.path.installable = false;
    }

    pub fn answered(&mut self) {
        self.set_verdict(Verdict::Answered);
    }

    pub fn consumed(&mut self) {
        self.set_verdict(Verdict::Consumed);
    }

    /// Sends `frame` (untagged, as inside the virtual network) out of
    /// `port`: on its interface if exterior, into the peer device if
    /// interior. A unicast delivery to an exterior port ends the walk and,
    /// when installable, installs the flow built along the way.
    pub fn deliver(&mut self, port: PortId, frame: Frame) {
        if self.path.depth >= MAX_HOPS {
            self.drop(Reason::HopLimit, false);
            return;
        }
        self.path.depth += 1;
        self.deliver_on_path(port, frame);
        self.path.depth -= 1;
    }

    fn deliver_on_path(&mut self, port: PortId, mut frame: Frame) {
        let p = &self.snap.ports[port];
        self.tags.push(p.tag);
        if !p.up {
            self.drop(Reason::PortDown, true);
            return;
        }
        if self.origin.is_some() && !p.filters.outbound.is_empty() {
            let at = filter::Point {
                in_port: self.path.device_in,
                out_port: Some(port),
                zone: p.zone,
                reply_via: self.path.router_in,
            };
            if !filter::run(self, &p.filters.outbound, &mut frame, at) {
                return;
            }
        }
        match p.binding {
            Binding::Interface(_) => self.emit(port, frame),
            Binding::Remote { .. } => tunnel_mtu::emit(self, port, frame),
            Binding::Peer(peer) => {
                self.step(|| Step::Link {
                    from: port,
                    to: peer,
                });
                device_ingress(self, peer, frame);
            }
            Binding::Unbound => self.drop(Reason::NoEgress, true),
        }
    }

    /// Emits `frame` on exterior port `port`, adding the port's VLAN tag.
    fn emit(&mut self, port: PortId, frame: Frame) {
        let vlan = self.snap.ports[port].vlan;
        let frame = match vlan {
            Some(vid) => {
                self.step(|| Step::VlanPushed { vid });
                build::with_vlan(frame.bytes(), vid)
            }
            None => frame.into_bytes(),
        };
        self.step(|| Step::Egress { port });
        self.decision.emit.push(Emit { port, frame });
        self.set_verdict(Verdict::Forwarded);
        if let (true, Some((origin, _))) = (self.path.installable, self.origin) {
            let mut actions = self.path.actions;
            actions.flags |= act::OUTPUT;
            let (vin, vout) = (self.snap.ports[origin].vlan, vlan);
            if vin != vout {
                if vin.is_some() {
                    actions.flags |= act::POP_VLAN;
                }
                if let Some(vid) = vout {
                    actions.flags |= act::PUSH_VLAN;
                    actions.vlan = vid;
                }
            }
            self.decision.install = Some(Flow {
                actions,
                output: Some(port),
                tags: self.tags.clone(),
                idle_timeout_ns: FLOW_IDLE_TIMEOUT_NS,
            });
        }
    }

    /// Runs `f` on a branch of the walk: the path (and the tags it pushed)
    /// is given back as it was before, whatever the branch did.
    fn branch(&mut self, f: impl FnOnce(&mut Self)) {
        let (path, tags) = (self.path, self.tags.len());
        f(self);
        self.path = path;
        self.tags.truncate(tags);
    }

    /// Delivers a frame the dataplane generated (an ARP or ICMP reply, a
    /// request) from `port`. It never becomes a flow and does not change the
    /// verdict of the frame being simulated. It is parsed here, once, as a
    /// received frame is: the devices it crosses read its headers.
    pub fn inject(&mut self, port: PortId, frame: Vec<u8>) {
        let origin = self.origin.take();
        self.branch(|w| {
            w.path.installable = false;
            w.path.actions = FlowActions::default();
            match Frame::parse(frame) {
                Ok(frame) => w.deliver(port, frame),
                Err(e) => w.drop(e.reason(), false),
            }
        });
        self.origin = origin;
    }

    /// Delivers one copy of a flooded frame: never installed.
    pub fn deliver_copy(&mut self, port: PortId, frame: Frame) {
        self.branch(|w| {
            w.path.installable = false;
            w.deliver(port, frame);
        });
    }
}

/// Simulates `frame` arriving on exterior port `in_port`.
pub fn simulate(
    snap: &Snapshot,
    state: &mut State,
    in_port: PortId,
    frame: &[u8],
    now_ns: u64,
    tracing: bool,
) -> Decision {
    let mut walk = Walk::new(snap, state, now_ns, tracing, Some((in_port, frame)));
    ingress(&mut walk, in_port, frame);
    commit_connections(&mut walk);
    walk.decision
}

/// Records the connections a forwarded packet opened. A full table, or a
/// zone holding its share of it, refuses the packet instead (its replies
/// could not be recognised); the zone's existing connections go on.
fn commit_connections(walk: &mut Walk) {
    if !matches!(
        walk.decision.verdict,
        Verdict::Forwarded | Verdict::Flooded | Verdict::Consumed
    ) {
        return;
    }
    for (zone, tuple) in std::mem::take(&mut walk.pending_conns) {
        match walk.state.conntrack.commit(zone, tuple, walk.now_ns) {
            Ok(Some(tag)) => {
                walk.decision.invalidate.push(tag);
                let entry = flow_state::StateEntry::Connection { zone, tuple };
                walk.decision.state_out.push(entry);
            }
            Ok(None) => {}
            Err(refused) => {
                let reason = refused.reason();
                walk.decision.emit.clear();
                walk.decision.install = None;
                walk.decision.verdict = Verdict::Dropped(reason);
                walk.step(|| Step::Drop { reason });
                return;
            }
        }
    }
}

/// Runs the simulation's timers: ARP retries (and ICMP host unreachable
/// for packets whose next hop never answered), refreshes of stale ARP
/// entries and their expiry. The runtime calls it a few times a second.
pub fn tick(snap: &Snapshot, state: &mut State, now_ns: u64) -> Decision {
    let mut walk = Walk::new(snap, state, now_ns, false, None);
    router::timers(&mut walk);
    walk.decision
}

/// Exterior port ingress: port state and VLAN, then the port's device.
fn ingress(walk: &mut Walk, in_port: PortId, frame: &[u8]) {
    walk.step(|| Step::Ingress { port: in_port });
    let Some(port) = walk.snap.ports.get(in_port) else {
        walk.drop(Reason::UnknownInterface, false);
        return;
    };
    // The one parse of the received frame: everything after reads (and
    // rewrites keep current) these headers.
    let frame = match Frame::parse(frame.to_vec()) {
        Ok(f) => f,
        Err(e) => {
            walk.drop(e.reason(), false);
            return;
        }
    };
    let headers = *frame.headers();
    walk.decision.received = Some(headers);
    if !fragments::ingress(walk, in_port, &headers) {
        return;
    }
    walk.tags.push(port.tag);
    if !port.up {
        walk.drop(Reason::PortDown, true);
        return;
    }
    // An access port for VLAN v carries frames tagged v on the wire; inside
    // the virtual network frames are untagged. Any other tagging is dropped.
    let frame = match (port.vlan, headers.vlan) {
        (None, None) => frame,
        (Some(vid), Some(tag)) if vid == tag => {
            walk.step(|| Step::VlanPopped { vid });
            frame.without_vlan()
        }
        _ => {
            walk.drop(Reason::VlanMismatch, true);
            return;
        }
    };
    if let DeviceRef::Bridge(bridge) = port.device {
        if !port_security::admit(walk, bridge, in_port, &headers) {
            return;
        }
    }
    device_ingress(walk, in_port, frame);
}

/// A frame entering the device of `port` through that port: the port's
/// inbound filter, then the device.
fn device_ingress(walk: &mut Walk, port: PortId, mut frame: Frame) {
    let p = &walk.snap.ports[port];
    walk.path.device_in = Some(port);
    walk.path.router_in = p.l3.map(|l3| (port, l3, frame.headers().src));
    if walk.path.first_router_in.is_none() {
        walk.path.first_router_in = walk.path.router_in;
    }
    if walk.origin.is_some() && !p.filters.inbound.is_empty() {
        let at = filter::Point {
            in_port: Some(port),
            out_port: None,
            zone: p.zone,
            reply_via: walk.path.router_in,
        };
        if !filter::run(walk, &p.filters.inbound, &mut frame, at) {
            return;
        }
    }
    match walk.snap.ports[port].device {
        DeviceRef::Bridge(b) => bridge::process(walk, b, port, frame),
        DeviceRef::Router(r) => router::process(walk, r, port, frame),
    }
}
