//! The vocabulary of the simulation's outcome: what a walk decided
//! ([`Decision`]: frames to send, a flow to install, tags to invalidate),
//! how it ended ([`Verdict`]), and the steps `vnetctl trace` and the tests
//! read ([`Step`]). The walk that produces them is in `mod.rs`.

use super::{chain, conntrack, dhcp, DeviceRef, PortId, Tag};
use crate::packet::{Headers, Mac};
use vnet_common::{FlowActions, Reason};

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
    /// State this decision recorded (new connections, new NAT bindings)
    /// that the host the packet goes to needs for its replies
    /// (`flow_state`); the worker sends it there before the packet.
    pub state_out: Vec<super::flow_state::StateEntry>,
}

impl Decision {
    pub(super) fn new(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            emit: Vec::new(),
            install: None,
            invalidate: Vec::new(),
            released: Vec::new(),
            trace: Vec::new(),
            received: None,
            state_out: Vec::new(),
        }
    }
}
