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
pub mod dhcp;
mod dhcp_stage;
mod filter;
pub mod fragments;
pub mod mac_table;
pub mod nat;
mod port_security;
pub mod route_table;
mod router;
pub mod share;
pub mod snapshot;
pub mod tag;

pub use arp_cache::ArpCache;
pub use conntrack::Conntrack;
pub use mac_table::MacTable;
pub use snapshot::{Binding, DeviceRef, PortId, RouterIf, Snapshot};
pub use tag::Tag;

use crate::packet::{self, build, Frame, Headers, Mac};
use vnet_common::{act, FlowActions, Reason};

/// Idle timeout of installed flows. Short enough that a flow table full of
/// dead flows empties quickly, long enough that a ping every second or a
/// keep-alive stays in the kernel.
pub const FLOW_IDLE_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

/// More ports than any sane path crosses: a loop in the topology. It counts
/// the depth of one path, not the copies of a flood (a bridge of hundreds of
/// ports floods to all of them).
const MAX_HOPS: u32 = 32;

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
    /// The dataplane answered the frame itself (ARP, ICMP echo, ...).
    Answered,
    /// The dataplane took the frame for itself (an ARP reply it learned
    /// from, a packet queued until its next hop resolves).
    Consumed,
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
    /// Crossing an interior link.
    Link {
        from: PortId,
        to: PortId,
    },
    /// A router's ARP cache learned or confirmed `ip` → `mac`.
    ArpLearned {
        ip: [u8; 4],
        mac: Mac,
    },
    /// An ARP packet from outside the receiving port's subnet: ignored.
    ArpIgnored {
        ip: [u8; 4],
    },
    /// Route lookup: the index of the route in the router's list, if any.
    Route {
        dst: [u8; 4],
        route: Option<usize>,
    },
    TtlDecremented,
    ArpResolved {
        ip: [u8; 4],
        mac: Mac,
    },
    /// The next hop is unknown: the packet waits for ARP.
    ArpQueued {
        ip: [u8; 4],
    },
    /// The dataplane generated an ICMP message.
    Icmp {
        kind: u8,
        code: u8,
    },
    Fragmented {
        count: usize,
    },
    /// A DHCP request to the bridge's server.
    DhcpRequest {
        kind: dhcp::MessageType,
        mac: Mac,
        xid: u32,
    },
    /// A DHCP request the server refused as malformed.
    DhcpInvalid {
        error: dhcp::message::Error,
    },
    /// The server's reply: `kind` giving address `ip` (0.0.0.0 in a NAK or
    /// an answer to INFORM), sent to `to`.
    DhcpReply {
        kind: dhcp::MessageType,
        ip: [u8; 4],
        to: [u8; 4],
    },
    /// The server sent no reply.
    DhcpNoReply {
        why: dhcp::NoReply,
    },
    /// A filter chain ran and decided.
    Filter {
        chain: chain::ChainId,
        verdict: chain::Verdict,
    },
    /// Connection-tracking state of the packet in a zone.
    Conntrack {
        zone: Tag,
        state: conntrack::Direction,
    },
    Rejected {
        with: vnet_model::RejectWith,
    },
    /// A NAT rule rewrote the packet.
    Nat {
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
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
    /// The decision depends on something the flow key cannot hold, so it is
    /// not installed: every such packet comes to userspace.
    NotInstalled {
        why: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub emit: Vec<Emit>,
    pub install: Option<Flow>,
    /// Tags whose flows must go because this decision changed state (a MAC
    /// that moved, an ARP entry that changed).
    pub invalidate: Vec<Tag>,
    /// Frames to simulate again from their exterior port, as if they had
    /// just arrived (packets that waited for ARP).
    pub released: Vec<(PortId, Vec<u8>)>,
    /// Filled only when tracing was asked for.
    pub trace: Vec<Step>,
    /// The received frame's headers, parsed once at ingress (`None` when it
    /// did not parse): the worker keys the installed flow on them.
    pub received: Option<Headers>,
}

impl Decision {
    fn new(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            emit: Vec::new(),
            install: None,
            invalidate: Vec::new(),
            released: Vec::new(),
            trace: Vec::new(),
            received: None,
        }
    }
}

/// The state tables the simulation reads and writes.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub macs: MacTable,
    pub arp: ArpCache,
    pub conntrack: Conntrack,
    pub nat: nat::NatTable,
    pub fragments: fragments::FragmentTable,
    pub dhcp: dhcp::DhcpState,
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
    /// Whether the outcome may be installed as a flow (not for floods,
    /// generated frames, or decisions that depend on more than the key).
    pub installable: bool,
    /// Rewrites accumulated by the devices crossed so far.
    pub actions: FlowActions,
    /// Objects and state entries the decision depended on.
    pub tags: Vec<Tag>,
    /// Forward-direction connections to record if the packet is forwarded.
    pub pending_conns: Vec<(Tag, conntrack::Tuple)>,
    /// A DNAT rule rewrote the destination.
    pub dnat_rewritten: bool,
    /// The transport fields of the datagram being walked, as rewritten so
    /// far: what its later fragments are decided by (`fragments`).
    pub datagram_l4: packet::L4,
    /// The port the frame entered the current device by.
    pub device_in: Option<PortId>,
    /// On a router: its ingress port and the sender, where REJECT answers.
    pub router_in: Option<(PortId, RouterIf, Mac)>,
    /// Ports crossed on the current path (not counting flood siblings).
    depth: u32,
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
            installable: origin.is_some(),
            actions: FlowActions::default(),
            tags: Vec::new(),
            pending_conns: Vec::new(),
            dnat_rewritten: false,
            datagram_l4: packet::L4::None,
            device_in: None,
            router_in: None,
            depth: 0,
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
        if install && self.installable && self.origin.is_some() {
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
        if self.installable && self.origin.is_some() {
            self.step(|| Step::NotInstalled { why });
        }
        self.installable = false;
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
        if self.depth >= MAX_HOPS {
            self.drop(Reason::HopLimit, false);
            return;
        }
        self.depth += 1;
        self.deliver_on_path(port, frame);
        self.depth -= 1;
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
                in_port: self.device_in,
                out_port: Some(port),
                zone: p.zone,
                reply_via: self.router_in,
            };
            if !filter::run(self, &p.filters.outbound, &mut frame, at) {
                return;
            }
        }
        match p.binding {
            Binding::Interface(_) => self.emit(port, frame),
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
        if let (true, Some((origin, _))) = (self.installable, self.origin) {
            let mut actions = self.actions;
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

    /// Delivers a frame the dataplane generated (an ARP or ICMP reply, a
    /// request) from `port`. It never becomes a flow and does not change the
    /// verdict of the frame being simulated. It is parsed here, once, as a
    /// received frame is: the devices it crosses read its headers.
    pub fn inject(&mut self, port: PortId, frame: Vec<u8>) {
        let saved = (
            self.origin.take(),
            self.installable,
            self.actions,
            std::mem::take(&mut self.tags),
        );
        let devices = (self.device_in, self.router_in);
        self.installable = false;
        self.actions = FlowActions::default();
        match Frame::parse(frame) {
            Ok(frame) => self.deliver(port, frame),
            Err(e) => self.drop(e.reason(), false),
        }
        (self.origin, self.installable, self.actions, self.tags) = saved;
        (self.device_in, self.router_in) = devices;
    }

    /// Delivers one copy of a flooded frame: never installed.
    pub fn deliver_copy(&mut self, port: PortId, frame: Frame) {
        let saved = (
            self.installable,
            self.actions,
            self.tags.len(),
            self.device_in,
            self.router_in,
        );
        self.installable = false;
        self.deliver(port, frame);
        self.installable = saved.0;
        self.actions = saved.1;
        self.tags.truncate(saved.2);
        (self.device_in, self.router_in) = (saved.3, saved.4);
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
            Ok(Some(tag)) => walk.decision.invalidate.push(tag),
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
    walk.device_in = Some(port);
    walk.router_in = p.l3.map(|l3| (port, l3, frame.headers().src));
    if walk.origin.is_some() && !p.filters.inbound.is_empty() {
        let at = filter::Point {
            in_port: Some(port),
            out_port: None,
            zone: p.zone,
            reply_via: walk.router_in,
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
