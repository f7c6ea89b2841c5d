//! Types shared by the XDP flow executor (kernel) and vnetd (userspace).
//!
//! Every type here is `#[repr(C)]` with explicit padding fields, so the
//! layout is the same on both sides and no byte of a map key is left
//! uninitialised (an uninitialised padding byte in a hash key makes two equal
//! keys hash differently). `tests` below pins the sizes and offsets.
#![no_std]

pub mod wire;

/// Map names, shared so the loader cannot misspell them.
pub mod maps {
    pub const FLOWS: &str = "FLOWS";
    pub const FRAGS: &str = "FRAGS";
    pub const IFACES: &str = "IFACES";
    pub const XSKS: &str = "XSKS";
    pub const STATS: &str = "STATS";
    pub const UPCALL: &str = "UPCALL";
    pub const UPCALL_BUDGETS: &str = "UPCALL_BUDGETS";
    pub const TUNNEL_PORTS: &str = "TUNNEL_PORTS";
    pub const TUNNEL_PEERS: &str = "TUNNEL_PEERS";
    pub const TUNNEL_LOCAL: &str = "TUNNEL_LOCAL";
    /// Every map of the programs (what vnetd pins).
    pub const ALL: [&str; 10] = [
        FLOWS,
        FRAGS,
        IFACES,
        XSKS,
        STATS,
        UPCALL,
        UPCALL_BUDGETS,
        TUNNEL_PORTS,
        TUNNEL_PEERS,
        TUNNEL_LOCAL,
    ];
}

/// The version of the maps' layout: what the types below look like in the
/// kernel's maps. vnetd pins its maps under a directory of this version and
/// adopts pinned maps of the same version only (a restart keeps the flows);
/// bump it with any change to a map's key or value type, or to what a
/// field means. (Not bumped for `IfaceConfig::queues`, which was padding:
/// an older vnetd's entries hold 0 there, which reads as one queue, their
/// meaning; an older program ignores the field and hands misses of other
/// queues to no socket, as it always did.)
pub const LAYOUT_VERSION: u32 = 4;

/// Name of the XDP flow executor in the object file.
pub const XDP_PROGRAM: &str = "vnet_xdp";
/// Name of the tc (skb) flow executor in the object file.
pub const TC_PROGRAM: &str = "vnet_tc";
/// Name of the XDP program on the upcall interface, which hands every frame
/// to the upcall socket.
pub const UPCALL_PROGRAM: &str = "vnet_upcall";
/// Name of the VXLAN decapsulator at tc ingress (tcx) of the underlay
/// interface (`vnetd --underlay`).
pub const UNDERLAY_PROGRAM: &str = "vnet_underlay";
/// Name of the VXLAN decapsulator in the XDP hook of the underlay
/// interface.
pub const UNDERLAY_XDP_PROGRAM: &str = "vnet_underlay_xdp";

/// Default capacity of the flow table (see PERFORMANCE.md: 1 000 000 flows).
pub const DEFAULT_MAX_FLOWS: u32 = 1 << 20;
/// Capacity of the fragment map (first fragment's ports by IP id).
pub const MAX_FRAGS: u32 = 16 * 1024;
/// Capacity of the interface table and of the XSKMAP.
pub const MAX_IFACES: u32 = 256;

/// Size of one AF_XDP UMEM frame (vnetd's sockets use this for every
/// frame of their UMEM).
pub const XSK_FRAME_SIZE: u32 = 4096;
/// Headroom vnetd's UMEM asks for in front of each received frame
/// (`UmemConfig::headroom`).
pub const XSK_HEADROOM: u32 = 0;
/// Headroom the kernel itself keeps in every AF_XDP receive frame
/// (`XDP_PACKET_HEADROOM`), in front of the socket's own.
pub const XDP_PACKET_HEADROOM: u32 = 256;
/// Largest frame an AF_XDP socket of vnetd can receive: the kernel drops a
/// longer one at the socket (`rx_dropped`) after the redirect succeeded,
/// so the XDP program drops it itself, counted (`XdpTooBig`).
pub const XSK_MAX_RX_FRAME: u32 = XSK_FRAME_SIZE - XDP_PACKET_HEADROOM - XSK_HEADROOM;

/// `FlowKey::frag`: the packet is not an IPv4 fragment.
pub const FRAG_NONE: u8 = 0;
/// `FlowKey::frag`: the packet is an IPv4 fragment (first or later). A later
/// fragment carries the first fragment's ports when the kernel saw the first
/// one (through the FRAGS map), so all fragments of a datagram share one flow.
pub const FRAG_FRAGMENT: u8 = 1;

/// `FlowKey::flags`: the frame carries an 802.1Q tag. A priority-tagged
/// frame (VID 0) and an untagged one have the same `vlan_tci` (0 when the
/// PCP and DEI are 0 too), and the simulation treats them differently (an
/// untagged port drops the tagged one), so the key must tell them apart.
pub const KEY_TAGGED: u8 = 1 << 0;

/// Exact-match flow key.
///
/// THE rule: the key holds every field of the packet that the simulation
/// reads, and nothing is wildcarded; a field that the packet does not have
/// (ports of an ICMP packet, IP addresses of a non-IP frame) is zero. A
/// decision that depends on anything the key cannot hold is not installed.
/// So: the ingress ifindex; the MACs; the whole 802.1Q TCI (PCP, DEI and
/// VID) and whether a tag is present (`KEY_TAGGED`); the EtherType after
/// the tag; for IPv4 the addresses, the protocol, whether it is a fragment,
/// the TOS byte (DSCP and ECN: a chain can match it) and the transport
/// fields: TCP/UDP ports, or for ICMP the echo identifier in `l4_src` (echo
/// request/reply only, else 0) and `type << 8 | code` in `l4_dst`. For ARP,
/// `src`/`dst` are the sender/target protocol addresses, `proto` is 0 and
/// `l4_dst` is the full 16-bit opcode.
///
/// The kernel keys only well-formed IPv4 (header checksum, lengths and
/// TCP/UDP header consistent with the frame, see `XdpMalformed`): a flow is
/// never applied to a packet the simulation would have dropped as malformed.
/// Multi-byte integers are in host order; addresses are in wire order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub ifindex: u32,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    /// The whole 802.1Q tag control information (PCP, DEI, VID), 0 when
    /// untagged.
    pub vlan_tci: u16,
    /// EtherType after the VLAN tag.
    pub ethertype: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// IPv4 protocol; 0 for ARP and other EtherTypes.
    pub proto: u8,
    pub frag: u8,
    pub l4_src: u16,
    /// Destination port, ICMP `type << 8 | code`, or the ARP opcode.
    pub l4_dst: u16,
    /// IPv4 TOS byte (DSCP and ECN), 0 for anything else.
    pub tos: u8,
    /// `KEY_*` bits.
    pub flags: u8,
}

impl FlowKey {
    /// The VID of the key's 802.1Q tag (0 when untagged or priority-tagged).
    pub const fn vid(&self) -> u16 {
        self.vlan_tci & 0x0fff
    }

    /// Whether the frame carried an 802.1Q tag.
    pub const fn tagged(&self) -> bool {
        self.flags & KEY_TAGGED != 0
    }
}

/// Flow action bits. The actions of one flow are a set applied in this fixed
/// order (the order of the constants), which is every order a decision of the
/// simulation needs: rewrites commute, VLAN pop comes before and push after
/// them, and the verdict (output or drop) comes last. A fixed order keeps the
/// kernel program a straight line, which the verifier likes.
pub mod act {
    pub const POP_VLAN: u32 = 1 << 0;
    pub const SET_ETH_SRC: u32 = 1 << 1;
    pub const SET_ETH_DST: u32 = 1 << 2;
    pub const SET_IP_SRC: u32 = 1 << 3;
    pub const SET_IP_DST: u32 = 1 << 4;
    /// TCP/UDP source port; for ICMP echo, the identifier.
    pub const SET_L4_SRC: u32 = 1 << 5;
    pub const SET_L4_DST: u32 = 1 << 6;
    pub const DEC_TTL: u32 = 1 << 7;
    pub const PUSH_VLAN: u32 = 1 << 8;
    pub const OUTPUT: u32 = 1 << 9;
    pub const DROP: u32 = 1 << 10;
    /// Set by vnetd on a flow whose ingress port runs the XDP executor and
    /// whose egress port the skb executor: the XDP program passes the frame
    /// on (`XDP_PASS`) to the interface's tc program, which executes the
    /// flow. A redirect from XDP into a veth is lost unless its peer runs
    /// XDP or GRO, which vnet may not ask of a guest.
    pub const VIA_TC: u32 = 1 << 11;
    /// Set by vnetd when the egress interface is a veth whose peer is in
    /// another network namespace: the tc program delivers straight into the
    /// peer (`bpf_redirect_peer`), skipping the veth's transmit and backlog.
    pub const REDIRECT_PEER: u32 = 1 << 12;
    /// The egress port is on another host: after every other action (the
    /// rewrites, the TTL), the frame as rewritten is put behind Ethernet,
    /// IPv4, UDP and VXLAN headers made from `FlowActions::encap` (see
    /// [`Encap`](crate::Encap)), and `OUTPUT` sends it out of
    /// `out_ifindex`, the underlay interface. The flow's `mtu` applies to
    /// the inner IPv4 packet (on the skb executor, to each GSO segment):
    /// userspace puts the underlay MTU less [`tunnel::OVERHEAD`](crate::tunnel::OVERHEAD)
    /// there. A flow with both `PUSH_VLAN` and `ENCAP_VXLAN` is invalid
    /// (the inner frame of a tunnel is never tagged): userspace never
    /// installs one, and the kernel sends such a frame to userspace,
    /// counted (`*ActionFailed` and `TunnelEncapFailed`).
    pub const ENCAP_VXLAN: u32 = 1 << 13;
    pub const ALL: u32 = (1 << 14) - 1;
}

/// VXLAN between hosts (RFC 7348): constants and the local delivery table.
///
/// The ingress host simulates the whole path and installs a flow that
/// encapsulates (`act::ENCAP_VXLAN`); the egress host's underlay programs
/// (`UNDERLAY_PROGRAM`, `UNDERLAY_XDP_PROGRAM`) decapsulate what a known
/// peer sends to a local tunnel address and deliver it by VNI
/// (`TUNNEL_PORTS`), with no simulation.
pub mod tunnel {
    /// The IANA VXLAN port, the outer UDP destination port.
    pub const VXLAN_PORT: u16 = 4789;
    /// Bytes the encapsulation adds: Ethernet (14), IPv4 (20), UDP (8),
    /// VXLAN (8).
    pub const OVERHEAD: u32 = 50;
    /// The VNI of flow state (MidoNet's `0xFFFFFF`): not delivered to a
    /// port. For now the underlay programs drop it, counted
    /// (`TunnelReservedVni`).
    pub const RESERVED_VNI: u32 = 0xFF_FFFF;
    /// The largest VNI (24 bits).
    pub const MAX_VNI: u32 = 0xFF_FFFF;
    /// The VXLAN flags byte with the I bit (a valid VNI follows).
    pub const FLAG_I: u8 = 0x08;
    /// TTL of the outer IPv4 header.
    pub const OUTER_TTL: u8 = 64;
    /// `TunnelPort::flags`: deliver straight into the veth's peer
    /// (`bpf_redirect_peer`, the tc decapsulator only; like
    /// `act::REDIRECT_PEER`).
    pub const PORT_REDIRECT_PEER: u32 = 1 << 0;
    /// `TunnelPort::flags`: the port runs the XDP executor, so the XDP
    /// decapsulator may redirect into it; without it the XDP decapsulator
    /// passes the frame to the tc one (a redirect from XDP into a veth is
    /// lost unless its peer runs XDP).
    pub const PORT_XDP: u32 = 1 << 1;
    /// Capacity of `TUNNEL_PORTS` (local ports reachable by VNI).
    pub const MAX_PORTS: u32 = 4096;
    /// Capacity of `TUNNEL_PEERS` (other hosts' tunnel addresses).
    pub const MAX_PEERS: u32 = 4096;
    /// Capacity of `TUNNEL_LOCAL` (this host's tunnel addresses).
    pub const MAX_LOCAL: u32 = 16;

    /// Value of `TUNNEL_PORTS`, keyed by VNI (host order): the local port
    /// that frames with this VNI are delivered to.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TunnelPort {
        pub ifindex: u32,
        /// `PORT_*` bits.
        pub flags: u32,
    }
}

/// The outer headers of an `act::ENCAP_VXLAN` flow. The kernel writes:
/// Ethernet `eth_dst`, `eth_src`, EtherType IPv4; IPv4 version 4, IHL 5,
/// TOS 0, id 0, DF, TTL 64, protocol UDP, `src` → `dst`,
/// the header checksum; UDP `sport` → `tunnel::VXLAN_PORT`, the length,
/// checksum 0 (none, RFC 7348 on IPv4); VXLAN flags `I`, `vni << 8`. The
/// lengths are those of the actual (super-)frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encap {
    /// 24 bits, host order.
    pub vni: u32,
    /// Outer IPv4 addresses, wire order: this host's tunnel address and
    /// the egress host's.
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Outer MACs: the underlay interface's and the next hop's.
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    /// UDP source port, host order: userspace derives it from the flow key
    /// (RFC 7348: a hash of the inner headers, for the underlay's ECMP).
    pub sport: u16,
    /// To 32 bytes, so that `FlowActions` (72) ends where `FlowValue`'s
    /// counters are aligned, with no implicit padding before them.
    pub _pad: [u8; 6],
}

/// The upcall path of the skb executor. A tc program cannot hand a frame to
/// an AF_XDP socket, and an XDP program on a guest's veth would turn off GSO
/// on the guest's side. So the tc program sends a first packet, behind an
/// [`UpcallHeader`](upcall::UpcallHeader), out of one end of vnetd's own veth
/// pair; the XDP program on the other end (`UPCALL_PROGRAM`) redirects every
/// frame into vnetd's upcall socket. A GSO super-frame is segmented by the
/// kernel on the way (the pair has no GSO, its far end running XDP), each
/// segment carrying a copy of the header.
pub mod upcall {
    /// The near end (the tc program sends into it) and the far end (XDP and
    /// the upcall socket).
    pub const NEAR: &str = "vnet-up";
    pub const FAR: &str = "vnet-up-x";
    /// MTU of the pair: the largest a veth with native XDP takes (a page,
    /// less the XDP headroom, the Ethernet header and `skb_shared_info`).
    pub const MTU: u32 = 3500;
    /// IEEE 802 local experimental EtherType, so that tcpdump on the pair
    /// shows what the frames are.
    pub const ETHERTYPE: u16 = 0x88b5;
    /// `UpcallHeader::flags`: the frame carried an outer VLAN tag (the
    /// kernel keeps a received outer tag out of the packet bytes, so the
    /// header carries it and vnetd puts it back; an inner tag stays in the
    /// bytes).
    pub const TAGGED: u8 = 1 << 0;
    /// With `TAGGED`: the tag's TPID is 802.1ad (0x88a8), not 802.1Q.
    pub const TAGGED_8021AD: u8 = 1 << 1;
    pub const HEADER_LEN: usize = core::mem::size_of::<UpcallHeader>();

    /// In front of every frame on the upcall pair. Byte arrays only: no
    /// padding, no alignment; multi-byte fields in network order.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct UpcallHeader {
        /// An Ethernet header (zero MACs, [`ETHERTYPE`]).
        pub eth_dst: [u8; 6],
        pub eth_src: [u8; 6],
        pub ethertype: [u8; 2],
        /// Interface the frame entered on.
        pub ifindex: [u8; 4],
        /// The 802.1Q TCI of a tagged frame.
        pub vlan_tci: [u8; 2],
        /// `TAGGED`, `TAGGED_8021AD`.
        pub flags: u8,
        pub _pad: u8,
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowActions {
    pub flags: u32,
    pub out_ifindex: u32,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub ip_src: [u8; 4],
    pub ip_dst: [u8; 4],
    pub l4_src: u16,
    pub l4_dst: u16,
    /// VID pushed by `PUSH_VLAN` (priority 0).
    pub vlan: u16,
    /// When not 0, an IPv4 packet longer than this (total length) is not
    /// forwarded by the flow but sent to userspace, which fragments it or
    /// answers ICMP "fragmentation needed" (the egress router port's MTU).
    pub mtu: u16,
    /// How much `DEC_TTL` subtracts (one per router on the path; 0 counts
    /// as 1). A packet whose TTL would drop below 1 goes to userspace,
    /// which sends the ICMP time exceeded.
    pub ttl_dec: u8,
    pub _pad: [u8; 3],
    /// The outer headers of `act::ENCAP_VXLAN` (zero otherwise).
    pub encap: Encap,
}

/// Value of the flow table: the actions, written by userspace, and the
/// counters, updated by the kernel on every hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub actions: FlowActions,
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last hit.
    pub last_used_ns: u64,
}

/// Key of the fragment map: identifies the datagram a fragment belongs to.
/// The ingress interface is part of it: tenants behind different
/// interfaces may use the same addresses (and IP ids), and their fragments
/// must not pick up each other's ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub ifindex: u32,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of the fragment map: the first fragment's L4 key fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    pub l4_src: u16,
    pub l4_dst: u16,
}

/// A port's budget of first packets on the skb path, keyed by ifindex: a
/// token bucket the tc program charges before it sends a frame up. All skb
/// ports share the upcall pair's one socket ring, so a port's budget must
/// be enforced before the ring, or one guest's flood of new flows would
/// fill it and the others' first packets (DHCP, ARP, SYNs) would be dropped
/// there. Written whole by vnetd when it binds a port (a full bucket);
/// `tokens` and `last_ns` then by the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpcallBudget {
    /// Frames per second; 0: no limit.
    pub per_sec: u32,
    /// How many a quiet port may send at once.
    pub burst: u32,
    /// In units of [`UpcallBudget::TOKEN`] per frame.
    pub tokens: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last charge.
    pub last_ns: u64,
}

impl UpcallBudget {
    /// One frame's worth of `tokens`: with time in ns, `per_sec` tokens
    /// accrue per ns of elapsed time.
    pub const TOKEN: u64 = 1_000_000_000;

    /// A full bucket.
    pub const fn full(per_sec: u32, burst: u32) -> UpcallBudget {
        UpcallBudget {
            per_sec,
            burst,
            tokens: burst as u64 * Self::TOKEN,
            last_ns: 0,
        }
    }
}

/// Per-interface configuration, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Index of the AF_XDP socket of this interface's receive queue 0 in
    /// the XSKMAP; queue `q`'s is at `xsk_slot + q`.
    pub xsk_slot: u32,
    /// Receive queues with a socket (0..queues); a frame received on a
    /// higher queue has none. 0 reads as 1: entries an earlier vnetd wrote
    /// before there were sockets per queue.
    pub queues: u32,
}

impl IfaceConfig {
    /// The XSKMAP slot of receive queue `queue`'s socket, if it has one.
    /// (The kernel delivers a redirect only to a socket bound to the queue
    /// the frame arrived on: on a multi-queue NIC, veth or tap one socket
    /// of queue 0 would lose every other queue's first packets.)
    #[inline(always)]
    pub fn slot_of_queue(&self, queue: u32) -> Option<u32> {
        let queues = if self.queues == 0 { 1 } else { self.queues };
        if queue < queues {
            Some(self.xsk_slot + queue)
        } else {
            None
        }
    }
}

/// Declares `Reason` once: each variant with its doc and its stable name.
/// `ALL` and `name()` are generated, so a reason cannot be listed in one
/// place and forgotten in another.
macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*) => {
        /// Why a packet went where it went. One list for the kernel program,
        /// the userspace dataplane, the counters, the API and the trace. The
        /// kernel counts the first group (up to `XDP_COUNT`) in the per-CPU
        /// STATS array, indexed by the value.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            /// Stable snake_case name, used in logs, counters and the API.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Reason::$variant => $name, )*
                }
            }
        }
    };
}

reasons! {
    // --- counted by the XDP program ---
    /// A frame entered the XDP program: the sum of its outcomes
    /// (`XDP_OUTCOMES`), worked out by vnetd; the program does not count it.
    XdpRx = "xdp_rx",
    /// Flow hit, actions applied, frame redirected.
    XdpHitRedirect = "xdp_hit_redirect",
    /// Flow hit with a drop action.
    XdpHitDrop = "xdp_hit_drop",
    /// No flow: sent to userspace.
    XdpMiss = "xdp_miss",
    /// Not parsable by the kernel program (too short, QinQ, ...): sent to
    /// userspace, which decides.
    XdpUnparsed = "xdp_unparsed",
    /// The interface has no AF_XDP socket: dropped (never passed to the host
    /// stack, which must not see tenant traffic).
    XdpNoSocket = "xdp_no_socket",
    /// A flow hit whose action could not be applied (bad length after a VLAN
    /// change, TTL already 0): sent to userspace.
    XdpActionFailed = "xdp_action_failed",
    /// A later fragment whose first fragment was not seen: sent to userspace.
    XdpFragUnknown = "xdp_frag_unknown",
    /// An IPv4 packet the kernel will not key (bad header checksum, lengths
    /// that disagree with the frame, a bad TCP/UDP header): sent to
    /// userspace, which drops it with the precise reason.
    XdpMalformed = "xdp_malformed",
    /// A frame larger than an AF_XDP frame that missed the flow table: it
    /// cannot reach userspace, so it is dropped and counted here.
    XdpTooBig = "xdp_too_big",
    /// A flow hit whose egress runs the skb executor (`act::VIA_TC`): passed
    /// to the interface's tc program, which executes it.
    XdpPassToTc = "xdp_pass_to_tc",
    // --- counted by the tc (skb) program ---
    /// A frame entered the tc program: the sum of its outcomes
    /// (`TC_OUTCOMES`), worked out by vnetd.
    TcRx = "tc_rx",
    /// Flow hit, actions applied, frame redirected.
    TcHitRedirect = "tc_hit_redirect",
    /// Flow hit with a drop action.
    TcHitDrop = "tc_hit_drop",
    /// No flow: sent to userspace through the upcall interface.
    TcMiss = "tc_miss",
    /// Not parsable by the kernel program: sent to userspace, which decides.
    TcUnparsed = "tc_unparsed",
    /// IPv4 the kernel will not key (see `XdpMalformed`): sent to userspace.
    TcMalformed = "tc_malformed",
    /// A later fragment whose first fragment was not seen: sent to userspace.
    TcFragUnknown = "tc_frag_unknown",
    /// A flow hit whose action could not be applied (TTL, MTU, a helper
    /// failing): sent to userspace.
    TcActionFailed = "tc_action_failed",
    /// A frame for userspace larger than the upcall pair carries (over
    /// 3.5 KB, or a GSO frame whose segments are): dropped.
    TcTooBig = "tc_too_big",
    /// A frame for userspace with no upcall interface set (vnetd not
    /// running or starting): dropped.
    TcNoUpcall = "tc_no_upcall",
    /// The upcall header could not be added (no memory for the head):
    /// dropped.
    TcUpcallFailed = "tc_upcall_failed",
    /// A first packet over its port's budget (`UpcallBudget`): dropped
    /// before the shared upcall ring, so one port cannot fill it.
    TcUpcallBudget = "tc_upcall_budget",
    /// A frame the upcall interface's XDP program handed to the upcall
    /// socket.
    UpcallRx = "upcall_rx",
    // --- counted by the underlay programs (VXLAN) ---
    /// A frame entered the underlay programs: the sum of their outcomes
    /// (`UNDERLAY_OUTCOMES`), worked out by vnetd.
    UnderlayRx = "underlay_rx",
    /// VXLAN from a peer to a local tunnel address with a known VNI:
    /// decapsulated and redirected to its port.
    TunnelDecap = "tunnel_decap",
    /// Not VXLAN to a local tunnel address (the host's own traffic):
    /// passed to the host stack. Counted by the tc decapsulator only (the
    /// XDP one passes such frames to it).
    TunnelPass = "tunnel_pass",
    /// VXLAN to us with a VNI no local port has: dropped.
    TunnelUnknownVni = "tunnel_unknown_vni",
    /// VXLAN to us from an address that is no known peer's: dropped (the
    /// underlay is shared: a frame from an unknown source must not reach a
    /// tenant).
    TunnelUnknownPeer = "tunnel_unknown_peer",
    /// VXLAN to us with the flow-state VNI (`tunnel::RESERVED_VNI`):
    /// dropped for now.
    TunnelReservedVni = "tunnel_reserved_vni",
    /// VXLAN to us that is cut short, has bad lengths or header checksum,
    /// or no I flag: dropped.
    TunnelMalformed = "tunnel_malformed",
    /// VXLAN to us for a known port that could not be decapsulated (a
    /// helper failed; on the skb path, an inner frame too short for the
    /// kernel): dropped.
    TunnelDecapFailed = "tunnel_decap_failed",
    /// Counted on top of an outcome: the XDP decapsulator passed a tunnel
    /// frame for a port of the skb executor to the tc decapsulator, which
    /// counts the outcome.
    TunnelPassToTc = "tunnel_pass_to_tc",
    /// Counted on top of `XdpHitRedirect`/`TcHitRedirect`: the flow
    /// encapsulated the frame (`act::ENCAP_VXLAN`).
    TunnelEncap = "tunnel_encap",
    /// Counted on top of `XdpActionFailed`/`TcActionFailed`: an
    /// `ENCAP_VXLAN` flow could not encapsulate (no headroom, a helper
    /// failing, `PUSH_VLAN` with it): sent to userspace unchanged.
    TunnelEncapFailed = "tunnel_encap_failed",
    // --- counted by userspace ---
    /// A frame too short or malformed for the simulation.
    Malformed = "malformed",
    /// An IPv4 header whose checksum is wrong (RFC 1812 5.2.2).
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// An IPv4 header whose lengths disagree with the frame (IHL under 5,
    /// total length beyond the frame or under the header).
    Ipv4BadLength = "ipv4_bad_length",
    /// A TCP or UDP header inconsistent with its packet (UDP length under 8
    /// or beyond the packet, TCP data offset under 5 or beyond the packet).
    L4BadHeader = "l4_bad_header",
    /// The ingress interface is bound to no port.
    UnknownInterface = "unknown_interface",
    /// The ingress or egress port is administratively down.
    PortDown = "port_down",
    /// A frame whose VLAN tag does not match the port's.
    VlanMismatch = "vlan_mismatch",
    /// The destination MAC is on the ingress port itself.
    SameSegment = "same_segment",
    /// A flood found no other port that is up.
    NoEgress = "no_egress",
    /// The flow table is full: the packet was forwarded but no flow installed.
    FlowTableFull = "flow_table_full",
    /// The device's (tenant's) share of the flow table is used up: the packet
    /// was forwarded but no flow installed.
    DeviceFlowLimit = "device_flow_limit",
    /// A frame with a reserved (IEEE 802.1D link-local) destination.
    LinkLocalDrop = "link_local_drop",
    /// A transmit ring was full.
    TxRingFull = "tx_ring_full",
    /// A frame for a port on another host could not be sent into the
    /// tunnel (the socket refused it, or this vnetd has no tunnel).
    TunnelTxFailed = "tunnel_tx_failed",
    /// A flow-state message (conntrack and NAT entries another host sends
    /// ahead of a packet) that was malformed or came from an address that
    /// is no other host's tunnel address: dropped.
    FlowStateRefused = "flow_state_refused",
    /// Frames the kernel dropped at an AF_XDP receive ring that was full
    /// (counted from the socket's statistics).
    RxRingFull = "rx_ring_full",
    /// Frames the kernel dropped because the fill ring had no free frame.
    FillRingEmpty = "fill_ring_empty",
    /// Frames the kernel dropped at an AF_XDP socket for another reason
    /// (a frame larger than the UMEM frame among them).
    RxDropped = "rx_dropped",
    /// A first packet over its port's upcall budget: dropped so that one
    /// port flooding new flows cannot delay the others' first packets.
    UpcallBudget = "upcall_budget",
    /// A guest frame whose source MAC the port does not own (port security).
    SpoofedMac = "spoofed_mac",
    /// A guest IPv4 packet whose source address the port does not own
    /// (port security).
    SpoofedIp = "spoofed_ip",
    /// A guest ARP whose sender MAC or address the port does not own
    /// (port security), or whose sender MAC is not a unicast address.
    SpoofedArp = "spoofed_arp",
    /// A guest ARP claiming an address the network itself owns (a router
    /// port, a NAT or floating address, the DHCP server): never flooded nor
    /// learned, whatever the port's setting.
    ArpClaimsNetworkAddress = "arp_claims_network_address",
    /// A router got a frame addressed to another MAC.
    NotForRouter = "not_for_router",
    /// A source address no router forwards (RFC 1812 5.3.7: 0/8, 127/8,
    /// multicast, class E, limited broadcast, the router's own addresses).
    MartianSource = "martian_source",
    /// A destination address no router forwards (0/8, 127/8, class E).
    MartianDestination = "martian_destination",
    /// The source fails the ingress port's reverse-path check.
    ReversePath = "reverse_path",
    /// No route to the destination (ICMP net unreachable sent).
    NoRoute = "no_route",
    /// A blackhole route: dropped silently.
    Blackhole = "blackhole",
    /// A reject route (ICMP administratively prohibited sent).
    RejectRoute = "reject_route",
    /// TTL ran out at a router (ICMP time exceeded sent).
    TtlExpired = "ttl_expired",
    /// Bigger than the egress MTU with DF set (ICMP fragmentation needed).
    FragmentationNeeded = "fragmentation_needed",
    /// Bigger than the tunnel to the egress port's host carries (the
    /// underlay MTU less 50) with DF set (ICMP fragmentation needed).
    TunnelFragmentationNeeded = "tunnel_fragmentation_needed",
    /// Not IPv4, and bigger than the tunnel to the egress port's host
    /// carries: dropped (it cannot be fragmented).
    TunnelTooBig = "tunnel_too_big",
    /// The next hop's ARP queue was full.
    ArpQueueFull = "arp_queue_full",
    /// The next hop never answered ARP (ICMP host unreachable sent).
    ArpUnresolved = "arp_unresolved",
    /// Broadcast, multicast or otherwise unroutable destination at a router.
    NotRoutable = "not_routable",
    /// The walk crossed more devices than any sane topology needs (a loop).
    HopLimit = "hop_limit",
    /// A later fragment whose first fragment was not seen, where the
    /// decision needs the first fragment's ports (NAT): dropped rather than
    /// sent untranslated.
    FragmentUnknown = "fragment_unknown",
    /// The fragment table (first fragments' ports) is full.
    FragmentTableFull = "fragment_table_full",
    /// A DHCP request whose IPv4 or UDP lengths do not match the frame (or
    /// a fragment of one).
    DhcpBadLength = "dhcp_bad_length",
    /// A DHCP message cut short: under the fixed header, or options without
    /// their END.
    DhcpTruncated = "dhcp_truncated",
    /// A request without the DHCP magic cookie (plain BOOTP).
    DhcpNoCookie = "dhcp_no_cookie",
    /// A DHCP option whose length runs past the message or does not suit
    /// its code, or a request without a message type.
    DhcpBadOption = "dhcp_bad_option",
    /// A DHCP request with option overload (52): options in sname/file.
    DhcpOverload = "dhcp_overload",
    /// Not a BOOTREQUEST from an Ethernet client (op, htype, hlen).
    DhcpBadHeader = "dhcp_bad_header",
    /// A frame to a bridge's DHCP server that it does not answer: the server
    /// answers DHCP (and ARP) only, and nothing else owns its MAC.
    DhcpUnanswered = "dhcp_unanswered",
    /// A port holds as many dynamic leases as it may: no new one.
    DhcpLeaseLimit = "dhcp_lease_limit",
    /// A filter chain dropped the packet.
    FilterDrop = "filter_drop",
    /// A filter chain rejected the packet (an ICMP error or TCP RST was sent
    /// back to the sender).
    FilterReject = "filter_reject",
    /// The connection-tracking table is full: a new connection was refused.
    ConntrackFull = "conntrack_full",
    /// The zone's (device's) share of the connection-tracking table is used
    /// up: a new connection was refused.
    DeviceConntrackLimit = "device_conntrack_limit",
    /// The bridge's share of the MAC table is used up: the MAC was not learned.
    DeviceMacLimit = "device_mac_limit",
    /// No free NAT binding (address and port) for a new connection.
    NatExhausted = "nat_exhausted",
    /// The zone's share of the NAT table is used up.
    DeviceNatLimit = "device_nat_limit",
    /// A packet a dynamic NAT cannot name a binding for (an ICMP query
    /// other than echo): dropped rather than sent with its private address.
    NatUntranslatable = "nat_untranslatable",
}

impl Reason {
    /// Number of reasons the kernel programs count (the size of the STATS
    /// array): the XDP, tc and upcall groups.
    pub const XDP_COUNT: u32 = Reason::TunnelEncapFailed as u32 + 1;

    /// Where every frame of the XDP program ends, exactly one each (the
    /// socket outcomes, `XdpNoSocket` and `XdpTooBig`, come on top of
    /// some): their sum is `XdpRx`, which the program leaves uncounted to
    /// spare the hit path an add.
    pub const XDP_OUTCOMES: [Reason; 8] = [
        Reason::XdpHitRedirect,
        Reason::XdpHitDrop,
        Reason::XdpMiss,
        Reason::XdpUnparsed,
        Reason::XdpActionFailed,
        Reason::XdpFragUnknown,
        Reason::XdpMalformed,
        Reason::XdpPassToTc,
    ];

    /// The same for the tc program and `TcRx`.
    pub const TC_OUTCOMES: [Reason; 7] = [
        Reason::TcHitRedirect,
        Reason::TcHitDrop,
        Reason::TcMiss,
        Reason::TcUnparsed,
        Reason::TcMalformed,
        Reason::TcFragUnknown,
        Reason::TcActionFailed,
    ];

    /// The same for the underlay programs and `UnderlayRx`: a frame the
    /// XDP decapsulator passes to the tc one is counted by the one that
    /// ends it (`TunnelPassToTc` comes on top).
    pub const UNDERLAY_OUTCOMES: [Reason; 7] = [
        Reason::TunnelDecap,
        Reason::TunnelPass,
        Reason::TunnelUnknownVni,
        Reason::TunnelUnknownPeer,
        Reason::TunnelReservedVni,
        Reason::TunnelMalformed,
        Reason::TunnelDecapFailed,
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these types are repr(C), made only of integers and byte
    // arrays, with every padding byte an explicit field: any bit pattern is
    // valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragPorts {}
    unsafe impl aya::Pod for super::IfaceConfig {}
    unsafe impl aya::Pod for super::UpcallBudget {}
    unsafe impl aya::Pod for super::tunnel::TunnelPort {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 36);
        assert_eq!(offset_of!(FlowKey, ifindex), 0);
        assert_eq!(offset_of!(FlowKey, eth_src), 4);
        assert_eq!(offset_of!(FlowKey, eth_dst), 10);
        assert_eq!(offset_of!(FlowKey, vlan_tci), 16);
        assert_eq!(offset_of!(FlowKey, ethertype), 18);
        assert_eq!(offset_of!(FlowKey, src), 20);
        assert_eq!(offset_of!(FlowKey, dst), 24);
        assert_eq!(offset_of!(FlowKey, proto), 28);
        assert_eq!(offset_of!(FlowKey, frag), 29);
        assert_eq!(offset_of!(FlowKey, l4_src), 30);
        assert_eq!(offset_of!(FlowKey, l4_dst), 32);
        assert_eq!(offset_of!(FlowKey, tos), 34);
        assert_eq!(offset_of!(FlowKey, flags), 35);
        assert_eq!(size_of::<FlowActions>(), 72);
        assert_eq!(offset_of!(FlowActions, vlan), 32);
        assert_eq!(offset_of!(FlowActions, mtu), 34);
        assert_eq!(offset_of!(FlowActions, ttl_dec), 36);
        assert_eq!(offset_of!(FlowActions, encap), 40);
        assert_eq!(size_of::<Encap>(), 32);
        assert_eq!(offset_of!(Encap, vni), 0);
        assert_eq!(offset_of!(Encap, src), 4);
        assert_eq!(offset_of!(Encap, dst), 8);
        assert_eq!(offset_of!(Encap, eth_src), 12);
        assert_eq!(offset_of!(Encap, eth_dst), 18);
        assert_eq!(offset_of!(Encap, sport), 24);
        assert_eq!(offset_of!(Encap, _pad), 26);
        assert_eq!(size_of::<FlowValue>(), 96);
        assert_eq!(offset_of!(FlowValue, bytes), 80);
        assert_eq!(offset_of!(FlowValue, packets), 72);
        assert_eq!(size_of::<tunnel::TunnelPort>(), 8);
        assert_eq!(size_of::<FragKey>(), 16);
        assert_eq!(offset_of!(FragKey, ifindex), 0);
        assert_eq!(offset_of!(FragKey, src), 4);
        assert_eq!(offset_of!(FragKey, dst), 8);
        assert_eq!(offset_of!(FragKey, id), 12);
        assert_eq!(offset_of!(FragKey, proto), 14);
        assert_eq!(offset_of!(FragKey, _pad), 15);
        assert_eq!(size_of::<FragPorts>(), 4);
        assert_eq!(size_of::<IfaceConfig>(), 8);
        assert_eq!(upcall::HEADER_LEN, 22);
        assert_eq!(size_of::<UpcallBudget>(), 24);
    }

    #[test]
    fn reasons_are_dense_and_named_once() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for a in Reason::ALL {
            for b in Reason::ALL {
                if a != b {
                    assert_ne!(a.name(), b.name());
                }
            }
        }
        assert_eq!(Reason::XDP_COUNT, 35);
    }

    #[test]
    fn each_receive_queue_has_the_slot_after_the_first_and_no_more() {
        let four = IfaceConfig {
            xsk_slot: 10,
            queues: 4,
        };
        assert_eq!(four.slot_of_queue(0), Some(10));
        assert_eq!(four.slot_of_queue(3), Some(13));
        assert_eq!(four.slot_of_queue(4), None, "a queue without a socket");
        assert_eq!(four.slot_of_queue(u32::MAX), None);
        // An entry of an earlier vnetd (the field was padding, zero).
        let old = IfaceConfig {
            xsk_slot: 7,
            queues: 0,
        };
        assert_eq!(old.slot_of_queue(0), Some(7));
        assert_eq!(old.slot_of_queue(1), None);
    }
}
