//! The vnet XDP flow executor.
//!
//! One program, attached to every bound interface, that knows no topology:
//!
//! 1. parse the frame into a [`FlowKey`] by the rule written on `FlowKey`
//!    (the same parser, field for field, as `dataplane/src/packet`); IPv4
//!    that the userspace parser rejects as malformed (bad header checksum,
//!    lengths that disagree with the frame, a bad TCP/UDP header) is not
//!    keyed at all, so no installed flow ever applies to it;
//! 2. look the key up in `FLOWS`;
//! 3. hit: apply the flow's actions in the fixed order of `vnet_common::act`,
//!    update the flow's counters, then redirect (`OUTPUT`) or drop;
//! 4. miss, a frame this parser does not take, or an action that cannot be
//!    applied: hand the frame, as received, to the interface's AF_XDP socket
//!    (`IFACES` → `XSKS`); without a socket the frame is dropped, never passed
//!    to the host stack, which must not see tenant traffic. A frame larger
//!    than an AF_XDP frame holds is dropped and counted (`XdpTooBig`): the
//!    socket would drop it anyway, uncounted by us.
//!
//! Everything that needs thought happens in userspace and arrives here as
//! plain data in `FLOWS`. Every `Reason::Xdp*` counter is bumped in the
//! per-CPU `STATS` array.
//!
//! Verifier notes. Packet bytes are only read or written through
//! [`Frame::at`], whose `addr + len <= data_end` comparison is the bounds
//! proof the verifier needs; offsets are always small bounded values (L2
//! header 14 or 18 bytes, IPv4 header 20..=60), because the verifier only
//! accepts packet pointer arithmetic with a bounded scalar. After
//! `bpf_xdp_adjust_head` every packet pointer is invalid, so the rewrite phase
//! re-derives pointers from `ctx` and checks bounds again.
//!
//! The crate also compiles for the host (`cargo build --workspace`, clippy,
//! the unit tests at the bottom): the assembly helpers then have plain-Rust
//! twins and `main` only says what this binary is.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// For the BPF assembly in the packet accessors, `bounded` and `atomic_add`.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_REDIRECT},
        BPF_F_NO_PREALLOC,
    },
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_get_buff_len},
    macros::{map, xdp},
    maps::{HashMap, LruHashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use vnet_common::{
    act, FlowActions, FlowKey, FlowValue, FragKey, FragPorts, IfaceConfig, Reason,
    DEFAULT_MAX_FLOWS, FRAG_FRAGMENT, KEY_TAGGED, MAX_FRAGS, MAX_IFACES, XSK_MAX_RX_FRAME,
};

// Map names are the statics' names (`#[map]` exports the identifier), which
// must equal the constants in `vnet_common::maps`.

/// The flow table. Not preallocated so that memory grows with the number of
/// flows; the loader sets the real capacity (`Kernel::load(max_flows)`).
#[map]
static FLOWS: HashMap<FlowKey, FlowValue> =
    HashMap::with_max_entries(DEFAULT_MAX_FLOWS, BPF_F_NO_PREALLOC);

/// First fragment's L4 key fields by datagram, for the later fragments.
/// LRU: stale datagrams (lost fragments) age out by themselves.
#[map]
static FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::with_max_entries(MAX_FRAGS, 0);

/// Ingress ifindex → the interface's AF_XDP socket slot in `XSKS`.
#[map]
static IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map]
static XSKS: XskMap = XskMap::with_max_entries(MAX_IFACES, 0);

/// Per-CPU counters indexed by `Reason` (the `Xdp*` group).
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::XDP_COUNT, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

// Offsets inside the headers.
const IP_TTL: usize = 8;
const IP_CSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
const TCP_DOFF: usize = 12;
const TCP_CSUM: usize = 16;
const UDP_LEN: usize = 4;
const UDP_CSUM: usize = 6;
const ICMP_CSUM: usize = 2;
const ICMP_ECHO_ID: usize = 4;

#[xdp]
pub fn vnet_xdp(ctx: XdpContext) -> u32 {
    count(Reason::XdpRx);
    let parsed = match parse(&ctx) {
        Ok(p) => p,
        Err(reason) => {
            count(reason);
            return to_userspace(&ctx);
        }
    };
    let Some(flow) = FLOWS.get_ptr_mut(parsed.key) else {
        count(Reason::XdpMiss);
        return to_userspace(&ctx);
    };
    // Copy the actions out of the map value: userspace may replace the entry
    // concurrently, and one consistent copy is what this packet executes.
    let actions = unsafe { (*flow).actions };
    let flags = actions.flags;

    // A flow without OUTPUT drops, like an empty OVS/MidoNet action list.
    // Rewrites before a drop are unobservable, so they are skipped (a drop
    // must not turn into an upcall because a rewrite could not be applied).
    if flags & act::DROP != 0 || flags & act::OUTPUT == 0 {
        account(flow, parsed.len);
        count(Reason::XdpHitDrop);
        return XDP_DROP;
    }
    if apply(&ctx, &parsed, &actions).is_err() {
        count(Reason::XdpActionFailed);
        return to_userspace(&ctx);
    }
    account(flow, parsed.len);
    count(Reason::XdpHitRedirect);
    // XDP_REDIRECT, or XDP_ABORTED for invalid flags (we pass none).
    unsafe { bpf_redirect(actions.out_ifindex, 0) as u32 }
}

/// What the executor needs besides the key.
struct Parsed {
    key: FlowKey,
    /// Length of the Ethernet header as received: 14, or 18 with a tag.
    l2_len: usize,
    /// IPv4 header length (20..=60), 0 for a non-IPv4 frame.
    ip_len: usize,
    /// The IPv4 packet carries its transport header (not a later fragment).
    has_l4: bool,
    /// Frame length as received, for the byte counter.
    len: u64,
}

/// Bounds-checked access to the frame.
struct Frame {
    data: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    fn new(ctx: &XdpContext) -> Self {
        Self {
            data: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Address of `len` bytes at `off`, if they are inside the frame. This
    /// comparison of a packet pointer against `data_end` is the bounds proof
    /// the verifier needs before any access through the returned address.
    #[inline(always)]
    fn at(&self, off: usize, len: usize) -> Result<usize, ()> {
        let addr = self.data + off;
        if addr + len > self.end {
            return Err(());
        }
        Ok(addr)
    }
}

// Packet accessors. BPF packet loads and stores have no alignment
// requirement (the verifier enforces none without BPF_F_STRICT_ALIGNMENT,
// and the x86-64/arm64 JITs emit plain moves), and the IPv4 header sits at
// offset 14 or 18, so its words are at best 2-aligned. LLVM's BPF backend
// assumes strict alignment and splits every unaligned Rust access
// (`read_unaligned`) into byte loads and shifts, or into a call to a
// byte-copy loop: three to eight instructions per field on the hot path.
// Writing the 16/32-bit accesses in assembly gives one instruction each and
// asks Rust for no alignment at all (no undefined behaviour on a
// misaligned address). Values are the wire bytes in native order.

#[inline(always)]
fn u8_at(addr: usize) -> u8 {
    unsafe { *(addr as *const u8) }
}

/// Two wire bytes as a native-order u16: what one's-complement checksum
/// arithmetic works on (the sum is byte-order independent, RFC 1071 §2(B)),
/// so checksums are updated without byte swaps.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn raw16(addr: usize) -> u16 {
    let v: u64;
    unsafe {
        core::arch::asm!(
            "{v} = *(u16 *)({a} + 0)",
            v = out(reg) v,
            a = in(reg) addr,
            options(readonly, nostack, preserves_flags),
        );
    }
    v as u16
}

/// Four wire bytes as a native-order u32.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn raw32(addr: usize) -> u32 {
    let v: u64;
    unsafe {
        core::arch::asm!(
            "{v} = *(u32 *)({a} + 0)",
            v = out(reg) v,
            a = in(reg) addr,
            options(readonly, nostack, preserves_flags),
        );
    }
    v as u32
}

#[cfg(target_arch = "bpf")]
#[inline(always)]
fn set_raw16(addr: usize, v: u16) {
    unsafe {
        core::arch::asm!(
            "*(u16 *)({a} + 0) = {v}",
            a = in(reg) addr,
            v = in(reg) v as u64,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(target_arch = "bpf")]
#[inline(always)]
fn set_raw32(addr: usize, v: u32) {
    unsafe {
        core::arch::asm!(
            "*(u32 *)({a} + 0) = {v}",
            a = in(reg) addr,
            v = in(reg) v as u64,
            options(nostack, preserves_flags),
        );
    }
}

/// A big-endian (wire order) u16 as a host value.
#[inline(always)]
fn be16(addr: usize) -> u16 {
    u16::from_be(raw16(addr))
}

#[inline(always)]
fn mac_at(addr: usize) -> [u8; 6] {
    let a = raw32(addr).to_ne_bytes();
    let b = raw16(addr + 4).to_ne_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1]]
}

#[inline(always)]
fn set_mac(addr: usize, m: [u8; 6]) {
    set_raw32(addr, u32::from_ne_bytes([m[0], m[1], m[2], m[3]]));
    set_raw16(addr + 4, u16::from_ne_bytes([m[4], m[5]]));
}

#[inline(always)]
fn ip_at(addr: usize) -> [u8; 4] {
    raw32(addr).to_ne_bytes()
}

/// Builds the flow key. `Err` carries the reason the frame goes to
/// userspace unlooked-up: `XdpUnparsed` (the userspace parser decides what
/// it is), `XdpMalformed` (IPv4 that userspace drops as malformed: never
/// matched against a flow) or `XdpFragUnknown` (a later fragment whose first
/// one we did not see, so its ports are unknown).
#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Parsed, Reason> {
    const UNPARSED: Reason = Reason::XdpUnparsed;
    let f = Frame::new(ctx);
    let eth = f.at(0, ETH_HLEN).map_err(|()| UNPARSED)?;
    // Zeroed first: every field the packet lacks is 0.
    let mut key = FlowKey {
        ifindex: ctx.ingress_ifindex() as u32,
        eth_dst: mac_at(eth),
        eth_src: mac_at(eth + 6),
        ..FlowKey::default()
    };
    let mut ethertype = be16(eth + 12);
    let mut l2_len = ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        let tag = f.at(ETH_HLEN, VLAN_HLEN).map_err(|()| UNPARSED)?;
        // The whole TCI (a chain or a port may tell priorities apart), and
        // the presence of the tag: a priority tag (VID 0) is not untagged.
        key.vlan_tci = be16(tag);
        key.flags |= KEY_TAGGED;
        ethertype = be16(tag + 2);
        l2_len = ETH_HLEN + VLAN_HLEN;
    }
    // QinQ (an outer 802.1ad tag, or a second tag): not ours to parse.
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(UNPARSED);
    }
    key.ethertype = ethertype;
    let mut parsed = Parsed {
        key,
        l2_len,
        ip_len: 0,
        has_l4: false,
        len: (f.end - f.data) as u64,
    };
    match ethertype {
        ETH_P_ARP => parse_arp(&f, &mut parsed).map_err(|()| UNPARSED)?,
        ETH_P_IP => parse_ipv4(&f, &mut parsed)?,
        // Any other EtherType is switched on its L2 fields alone.
        _ => {}
    }
    Ok(parsed)
}

/// Ethernet/IPv4 ARP only (htype 1, ptype 0x0800, hlen 6, plen 4): key
/// src/dst are the sender/target protocol addresses, l4_dst the whole
/// 16-bit opcode (proto stays 0).
#[inline(always)]
fn parse_arp(f: &Frame, p: &mut Parsed) -> Result<(), ()> {
    let arp = f.at(p.l2_len, 28)?;
    if be16(arp) != 1 || be16(arp + 2) != ETH_P_IP || u8_at(arp + 4) != 6 || u8_at(arp + 5) != 4 {
        return Err(());
    }
    p.key.l4_dst = be16(arp + 6);
    p.key.src = ip_at(arp + 14);
    p.key.dst = ip_at(arp + 24);
    Ok(())
}

/// Keys an IPv4 packet, or refuses it as the userspace parser does
/// (`packet::parse`): lengths first, then the header checksum, then the
/// transport header of a packet that carries one. The checks are those of
/// Linux's `ip_rcv_core` and `udp_rcv`/`tcp_v4_rcv`; a packet failing them
/// is `XdpMalformed`, for userspace to drop with the precise reason.
#[inline(always)]
fn parse_ipv4(f: &Frame, p: &mut Parsed) -> Result<(), Reason> {
    const UNPARSED: Reason = Reason::XdpUnparsed;
    const MALFORMED: Reason = Reason::XdpMalformed;
    let ip = f.at(p.l2_len, 20).map_err(|()| UNPARSED)?;
    let vihl = u8_at(ip);
    if vihl >> 4 != 4 {
        return Err(UNPARSED);
    }
    // IHL 5..=15 words. The mask also tells the verifier the offset of the
    // transport header is bounded (at most 60 bytes past the IP header).
    let ip_len = ((vihl & 0x0f) as usize) * 4;
    if ip_len < 20 {
        return Err(MALFORMED);
    }
    // The packet must fit in the frame (Ethernet padding after it is legal)
    // and hold its own header; the options are then in the frame too.
    let total = be16(ip + 2) as usize;
    if total < ip_len || p.l2_len + total > f.end - f.data {
        return Err(MALFORMED);
    }
    if !ipv4_checksum_ok(f, p.l2_len, ip_len) {
        return Err(MALFORMED);
    }
    p.ip_len = ip_len;
    let frag = be16(ip + 6);
    let proto = u8_at(ip + 9);
    p.key.proto = proto;
    p.key.tos = u8_at(ip + 1);
    p.key.src = ip_at(ip + IP_SRC);
    p.key.dst = ip_at(ip + IP_DST);

    let is_fragment = frag & (IP_MF | IP_OFFSET) != 0;
    if is_fragment {
        p.key.frag = FRAG_FRAGMENT;
    }
    let frag_key = FragKey {
        ifindex: p.key.ifindex,
        src: p.key.src,
        dst: p.key.dst,
        id: be16(ip + 4),
        proto,
        _pad: 0,
    };
    if frag & IP_OFFSET != 0 {
        // A later fragment has no transport header: its key takes the first
        // fragment's L4 fields, so every fragment of a datagram hits the
        // datagram's flow.
        let Some(ports) = (unsafe { FRAGS.get(frag_key) }) else {
            return Err(Reason::XdpFragUnknown);
        };
        p.key.l4_src = ports.l4_src;
        p.key.l4_dst = ports.l4_dst;
        return Ok(());
    }

    p.has_l4 = true;
    // Verifier workaround: LLVM knows from the length checks above that
    // the transport header is inside the frame and would drop the bounds
    // checks below, which the verifier needs; the opaque mask (a no-op: at
    // most 18 + 60) keeps them.
    let l4_off = bounded::<0x7f>(p.l2_len + ip_len);
    // Transport bytes of this packet (not of the frame: padding is not
    // part of the packet).
    let l4_room = total - ip_len;
    match proto {
        IPPROTO_TCP => {
            // The whole fixed header, and the options its data offset
            // claims, inside the packet.
            if l4_room < 20 {
                return Err(MALFORMED);
            }
            let l4 = f.at(l4_off, 20).map_err(|()| MALFORMED)?;
            let doff = ((u8_at(l4 + TCP_DOFF) >> 4) as usize) * 4;
            if doff < 20 || doff > l4_room {
                return Err(MALFORMED);
            }
            p.key.l4_src = be16(l4);
            p.key.l4_dst = be16(l4 + 2);
        }
        IPPROTO_UDP => {
            if l4_room < 8 {
                return Err(MALFORMED);
            }
            let l4 = f.at(l4_off, 8).map_err(|()| MALFORMED)?;
            // A first fragment's UDP length covers the whole datagram,
            // which this packet does not hold: only its floor is checked.
            let udp_len = be16(l4 + UDP_LEN) as usize;
            if udp_len < 8 || (!is_fragment && udp_len > l4_room) {
                return Err(MALFORMED);
            }
            p.key.l4_src = be16(l4);
            p.key.l4_dst = be16(l4 + 2);
        }
        IPPROTO_ICMP => {
            if l4_room < 8 {
                return Err(UNPARSED);
            }
            let l4 = f.at(l4_off, 8).map_err(|()| UNPARSED)?;
            let kind = u8_at(l4);
            let code = u8_at(l4 + 1);
            if kind == 0 || kind == 8 {
                p.key.l4_src = be16(l4 + ICMP_ECHO_ID);
            }
            p.key.l4_dst = (kind as u16) << 8 | code as u16;
        }
        _ => {}
    }
    if is_fragment {
        // The first fragment (offset 0, MF set) records its L4 fields for
        // the later ones. A full LRU map evicts; a failed insert only makes
        // the later fragments go to userspace, so the result is ignored.
        let ports = FragPorts {
            l4_src: p.key.l4_src,
            l4_dst: p.key.l4_dst,
        };
        let _ = FRAGS.insert(frag_key, ports, 0);
    }
    Ok(())
}

/// Whether the IPv4 header of `ip_len` bytes at `ip_off` has a correct
/// checksum: its one's-complement sum, checksum field included, is 0xffff.
/// Summed as 32-bit words (5 to 15 of them) and folded: the same sum as
/// over 16-bit words (RFC 1071 §2(B)), with fewer loads.
#[inline(always)]
fn ipv4_checksum_ok(f: &Frame, ip_off: usize, ip_len: usize) -> bool {
    // Verifier workaround: a loop with a constant trip count (15 words, the
    // longest header) and an early exit, instead of one bounded by the IHL,
    // which the verifier cannot prove finite; and every load re-proves its
    // own bounds through `Frame::at`, as the verifier does not carry the
    // length check of the caller into the loop. `bounded` gives the header
    // offset a range again after it went through the stack (it is 14 or 18).
    let ip_off = bounded::<0x1f>(ip_off);
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < 15 {
        if i * 4 >= ip_len {
            break;
        }
        let Ok(word) = f.at(ip_off + i * 4, 4) else {
            return false;
        };
        sum += raw32(word) as u64;
        i += 1;
    }
    // At most 15 words of 32 bits: two folds to 32 bits, two to 16.
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    csum_fold(sum as u32) == 0xffff
}

/// Applies the rewrites of a flow that outputs. All preconditions are
/// checked before the first byte is written, so on `Err` the frame is still
/// exactly as received when it goes to userspace.
#[inline(always)]
fn apply(ctx: &XdpContext, p: &Parsed, a: &FlowActions) -> Result<(), ()> {
    let flags = a.flags;
    let proto = p.key.proto;
    let is_ip = p.key.ethertype == ETH_P_IP;
    // Verifier workaround: these lengths come back from the stack where the
    // verifier lost their range (it cannot track a narrow spill read back
    // wide), and packet pointer arithmetic needs a bounded offset. The masks
    // are no-ops on the real values (14/18 and 20..=60).
    let in_l2 = bounded::<0x1f>(p.l2_len);
    let ip_len = bounded::<0x3f>(p.ip_len);

    // --- preconditions -------------------------------------------------
    let tagged_in = in_l2 != ETH_HLEN;
    let mut tagged = tagged_in;
    if flags & act::POP_VLAN != 0 {
        if !tagged {
            return Err(());
        }
        tagged = false;
    }
    if flags & act::PUSH_VLAN != 0 {
        // We never build QinQ.
        if tagged {
            return Err(());
        }
        tagged = true;
    }
    if flags & (act::SET_IP_SRC | act::SET_IP_DST | act::DEC_TTL) != 0 && !is_ip {
        return Err(());
    }
    // L4 rewrites only where the transport header is: a later fragment has
    // none and keeps its bytes (its flow key carries the first fragment's
    // ports; the rewritten ports are in the first fragment).
    let set_l4 = flags & (act::SET_L4_SRC | act::SET_L4_DST);
    let l4_rewrite = set_l4 != 0 && p.has_l4;
    // Bytes of transport header the rewrites touch (checksum included).
    let mut l4_need = 0;
    if flags & (act::SET_IP_SRC | act::SET_IP_DST) != 0 && p.has_l4 {
        // The pseudo-header changes: TCP and UDP checksums follow.
        if proto == IPPROTO_TCP {
            l4_need = TCP_CSUM + 2;
        } else if proto == IPPROTO_UDP {
            l4_need = UDP_CSUM + 2;
        }
    }
    if l4_rewrite {
        match proto {
            IPPROTO_TCP => l4_need = TCP_CSUM + 2,
            IPPROTO_UDP => l4_need = UDP_CSUM + 2,
            // The echo identifier is the ICMP "source port"; an ICMP
            // packet has nothing that SET_L4_DST could mean.
            IPPROTO_ICMP if set_l4 == act::SET_L4_SRC && is_echo(p.key.l4_dst) => {
                l4_need = ICMP_ECHO_ID + 2
            }
            _ => return Err(()),
        }
    }
    {
        let f = Frame::new(ctx);
        if is_ip {
            let ip = f.at(in_l2, 20)?;
            // A router must not forward what would leave with TTL 0
            // (RFC 1812 §5.3.1): userspace sends the ICMP time exceeded.
            if flags & act::DEC_TTL != 0 && u8_at(ip + IP_TTL) <= ttl_dec(a) {
                return Err(());
            }
            // Too big for the egress MTU: userspace fragments it or sends
            // ICMP fragmentation needed.
            if a.mtu != 0 && be16(ip + 2) > a.mtu {
                return Err(());
            }
        }
        if l4_need != 0 {
            f.at(in_l2 + ip_len, l4_need)?;
        }
    }

    // --- Ethernet header: VLAN pop/push and MAC rewrites ------------------
    let l2_len = if tagged {
        ETH_HLEN + VLAN_HLEN
    } else {
        ETH_HLEN
    };
    if flags & (act::POP_VLAN | act::PUSH_VLAN | act::SET_ETH_SRC | act::SET_ETH_DST) != 0 {
        if l2_len != in_l2 {
            // Grow (-4) or shrink (+4) the head; the L3 header stays where
            // it is in memory and the Ethernet header is rewritten whole
            // below. This is the only step that can fail after the checks,
            // and it comes before any write.
            let delta = in_l2 as i32 - l2_len as i32;
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
                return Err(());
            }
        }
        // adjust_head invalidated every packet pointer: start over.
        let f = Frame::new(ctx);
        let eth = f.at(0, ETH_HLEN)?;
        let dst = if flags & act::SET_ETH_DST != 0 {
            a.eth_dst
        } else {
            p.key.eth_dst
        };
        let src = if flags & act::SET_ETH_SRC != 0 {
            a.eth_src
        } else {
            p.key.eth_src
        };
        set_mac(eth, dst);
        set_mac(eth + 6, src);
        if tagged {
            let tag = f.at(12, 6)?;
            // Keep the tag of a frame that stays tagged (its PCP/DEI too);
            // a pushed tag has priority 0.
            if flags & act::PUSH_VLAN != 0 {
                set_raw16(tag, ETH_P_8021Q.to_be());
                set_raw16(tag + 2, (a.vlan & 0x0fff).to_be());
            }
            set_raw16(tag + 4, p.key.ethertype.to_be());
        } else {
            set_raw16(eth + 12, p.key.ethertype.to_be());
        }
    }
    if !is_ip {
        return Ok(());
    }

    // --- IPv4 and transport header ----------------------------------------
    let f = Frame::new(ctx);
    let ip = f.at(l2_len, 20)?;
    // The transport header, when a checksum or port in it changes. Every
    // access below re-checks its own bytes although `l4_need` covered them
    // all: the verifier does not keep the link between `proto` and
    // `l4_need` once they are spilled, and would see a path where a TCP
    // checksum is read with only a UDP header proven (verifier workaround;
    // the checks cannot fail here).
    if l4_need != 0 {
        let l4_off = l2_len + ip_len;
        let csum_off = match proto {
            IPPROTO_TCP => TCP_CSUM,
            IPPROTO_UDP => UDP_CSUM,
            _ => ICMP_CSUM,
        };
        let csum_at = f.at(l4_off + csum_off, 2)?;
        let mut l4_csum = raw16(csum_at);
        // A zero UDP checksum means "none" and stays zero.
        let csum_on = !(proto == IPPROTO_UDP && l4_csum == 0);
        // Only TCP and UDP have a pseudo-header; ICMP gets here only for an
        // echo id rewrite.
        if proto != IPPROTO_ICMP {
            if flags & act::SET_IP_SRC != 0 {
                l4_csum = csum_replace4(
                    l4_csum,
                    raw16(ip + IP_SRC),
                    raw16(ip + IP_SRC + 2),
                    a.ip_src,
                );
            }
            if flags & act::SET_IP_DST != 0 {
                l4_csum = csum_replace4(
                    l4_csum,
                    raw16(ip + IP_DST),
                    raw16(ip + IP_DST + 2),
                    a.ip_dst,
                );
            }
        }
        if l4_rewrite {
            if proto == IPPROTO_ICMP {
                let id = f.at(l4_off + ICMP_ECHO_ID, 2)?;
                l4_csum = set_port(id, a.l4_src, l4_csum);
            } else {
                let ports = f.at(l4_off, 4)?;
                if flags & act::SET_L4_SRC != 0 {
                    l4_csum = set_port(ports, a.l4_src, l4_csum);
                }
                if flags & act::SET_L4_DST != 0 {
                    l4_csum = set_port(ports + 2, a.l4_dst, l4_csum);
                }
            }
        }
        if csum_on {
            // In a UDP checksum 0 means "none": a computed 0 is sent as its
            // one's-complement twin 0xffff (RFC 768).
            if proto == IPPROTO_UDP && l4_csum == 0 {
                l4_csum = 0xffff;
            }
            set_raw16(csum_at, l4_csum);
        }
    }
    // The IP header after the transport header: the pseudo-header update
    // above reads the old addresses from the packet.
    let mut ip_csum = raw16(ip + IP_CSUM);
    if flags & act::SET_IP_SRC != 0 {
        ip_csum = set_addr(ip + IP_SRC, a.ip_src, ip_csum);
    }
    if flags & act::SET_IP_DST != 0 {
        ip_csum = set_addr(ip + IP_DST, a.ip_dst, ip_csum);
    }
    if flags & act::DEC_TTL != 0 {
        // The checksum covers TTL as half of the 16-bit word (TTL, protocol).
        // TTL > ttl_dec was checked above.
        let old = raw16(ip + IP_TTL);
        let ttl = u8_at(ip + IP_TTL);
        unsafe { *((ip + IP_TTL) as *mut u8) = ttl.wrapping_sub(ttl_dec(a)) };
        ip_csum = csum_replace2(ip_csum, old, raw16(ip + IP_TTL));
    }
    set_raw16(ip + IP_CSUM, ip_csum);
    Ok(())
}

/// TTL decrement of a flow: one per router on its path (0 means 1).
#[inline(always)]
fn ttl_dec(a: &FlowActions) -> u8 {
    if a.ttl_dec == 0 {
        1
    } else {
        a.ttl_dec
    }
}

/// `x & MASK`, done in assembly so that LLVM, which can prove the mask
/// useless, cannot remove it: the verifier needs to see it (see `apply`).
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn bounded<const MASK: usize>(x: usize) -> usize {
    let mut x = x;
    unsafe {
        core::arch::asm!(
            "{x} &= {mask}",
            x = inout(reg) x,
            mask = const MASK,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    x
}

/// ICMP echo reply (0) or request (8), from the key's `type << 8 | code`.
#[inline(always)]
fn is_echo(type_code: u16) -> bool {
    let kind = type_code >> 8;
    kind == 0 || kind == 8
}

/// Writes a new IPv4 address; returns the updated IP header checksum.
#[inline(always)]
fn set_addr(addr: usize, new: [u8; 4], ip_csum: u16) -> u16 {
    let csum = csum_replace4(ip_csum, raw16(addr), raw16(addr + 2), new);
    set_raw32(addr, u32::from_ne_bytes(new));
    csum
}

/// Writes a new port (or echo id), given in host order; returns the updated
/// transport checksum.
#[inline(always)]
fn set_port(addr: usize, port: u16, csum: u16) -> u16 {
    let old = raw16(addr);
    let new = port.to_be();
    set_raw16(addr, new);
    csum_replace2(csum, old, new)
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), in one's-complement arithmetic,
/// for one 16-bit word `old` → `new` covered by checksum `csum`.
#[inline(always)]
fn csum_replace2(csum: u16, old: u16, new: u16) -> u16 {
    let sum = (!csum) as u32 + (!old) as u32 + new as u32;
    !csum_fold(sum)
}

/// [`csum_replace2`] for a 32-bit field (an IPv4 address): the old value as
/// its two wire words, the new one as wire bytes.
#[inline(always)]
fn csum_replace4(csum: u16, old_hi: u16, old_lo: u16, new: [u8; 4]) -> u16 {
    let new_hi = u16::from_ne_bytes([new[0], new[1]]);
    let new_lo = u16::from_ne_bytes([new[2], new[3]]);
    let sum = (!csum) as u32 + (!old_hi) as u32 + (!old_lo) as u32 + new_hi as u32 + new_lo as u32;
    !csum_fold(sum)
}

/// Folds a 32-bit sum of at most a few 16-bit words into 16 bits, adding
/// the carries back (end-around carry).
#[inline(always)]
fn csum_fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Flow counters: atomic adds, as several CPUs may hit the same flow.
#[inline(always)]
fn account(flow: *mut FlowValue, len: u64) {
    unsafe {
        atomic_add(&raw mut (*flow).packets, 1);
        atomic_add(&raw mut (*flow).bytes, len);
        // One aligned 64-bit store (BPF STX DW) cannot tear, and the latest
        // writer winning is what "last used" means. Volatile, not an atomic
        // store: LLVM's BPF backend cannot select an atomic store for the
        // generic CPU that bpf-linker targets.
        (&raw mut (*flow).last_used_ns).write_volatile(bpf_ktime_get_ns());
    }
}

/// `lock *(u64 *)(addr) += v`, the BPF atomic add (BPF_ATOMIC | BPF_ADD).
/// Inline assembly because the bpfel target has no compare-and-swap, which
/// hides `AtomicU64::fetch_add` from core although the instruction exists.
///
/// # Safety
/// `addr` points to a u64 in a map value, 8-aligned.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn atomic_add(addr: *mut u64, v: u64) {
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({addr} + 0) += {v}",
            addr = in(reg) addr,
            v = in(reg) v,
            options(nostack, preserves_flags),
        );
    }
}

/// Hands the frame to the ingress interface's AF_XDP socket; drops it when
/// the interface has none (never `XDP_PASS`: the host stack must not see
/// tenant traffic), or when it is larger than the socket's frames: the
/// redirect would succeed and the socket drop it (`rx_dropped`), where no
/// reason is kept.
#[inline(always)]
fn to_userspace(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(cfg) = (unsafe { IFACES.get(ifindex) }) else {
        count(Reason::XdpNoSocket);
        return XDP_DROP;
    };
    // The whole frame, fragments of a multi-buffer frame included (a
    // BPF_PROG_TEST_RUN can make one; attached, this program only sees
    // linear frames).
    if unsafe { bpf_xdp_get_buff_len(ctx.ctx) } > u64::from(XSK_MAX_RX_FRAME) {
        count(Reason::XdpTooBig);
        return XDP_DROP;
    }
    // An empty slot returns the fallback action in the flags: XDP_DROP.
    match XSKS.redirect(cfg.xsk_slot, XDP_DROP as u64) {
        Ok(_) => XDP_REDIRECT,
        Err(_) => {
            count(Reason::XdpNoSocket);
            XDP_DROP
        }
    }
}

#[inline(always)]
fn count(reason: Reason) {
    // Per-CPU slot: no other CPU writes it, and XDP runs with migration
    // disabled, so a plain add is exact.
    if let Some(c) = STATS.get_ptr_mut(reason as u32) {
        unsafe { *c += 1 };
    }
}

// The program never panics (no indexing, no unwrap; overflow checks are off
// in release). The handler only satisfies no_std.
#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "vnet-xdp is the XDP program: it runs in the kernel, built for bpfel-unknown-none \
         and embedded by dataplane/build.rs. This host build exists for the workspace build, \
         clippy and unit tests, and does nothing."
    );
}

/// Plain-Rust twins of the assembly helpers, for host builds only (the
/// program is never run there; the unit tests use the checksum helpers).
#[cfg(not(target_arch = "bpf"))]
mod host_twins {
    pub(crate) fn raw16(addr: usize) -> u16 {
        unsafe { core::ptr::read_unaligned(addr as *const u16) }
    }
    pub(crate) fn raw32(addr: usize) -> u32 {
        unsafe { core::ptr::read_unaligned(addr as *const u32) }
    }
    pub(crate) fn set_raw16(addr: usize, v: u16) {
        unsafe { core::ptr::write_unaligned(addr as *mut u16, v) }
    }
    pub(crate) fn set_raw32(addr: usize, v: u32) {
        unsafe { core::ptr::write_unaligned(addr as *mut u32, v) }
    }
    pub(crate) fn bounded<const MASK: usize>(x: usize) -> usize {
        x & MASK
    }
    pub(crate) unsafe fn atomic_add(addr: *mut u64, v: u64) {
        unsafe {
            core::sync::atomic::AtomicU64::from_ptr(addr)
                .fetch_add(v, core::sync::atomic::Ordering::Relaxed)
        };
    }
}
#[cfg(not(target_arch = "bpf"))]
use host_twins::{atomic_add, bounded, raw16, raw32, set_raw16, set_raw32};

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use super::*;

    /// Internet checksum from scratch over big-endian words.
    fn checksum(words: &[u16]) -> u16 {
        let mut s: u32 = words.iter().map(|&w| u32::from(w)).sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    /// Incremental updates agree with recomputing from scratch over a chain
    /// of random one-word changes (0x0000 and 0xffff are the same number in
    /// one's complement, so either may come out).
    #[test]
    fn csum_replace_matches_recompute() {
        let mut words = [
            0x4500u16, 0x0054, 0x1c46, 0x4000, 0x4006, 0, 0x0a00, 0x0001, 0xc633, 0x6407,
        ];
        words[5] = checksum(&words);
        let mut seed = 0x1234_5678u32;
        for _ in 0..100_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let i = (seed >> 8) as usize % words.len();
            if i == 5 {
                continue;
            }
            let new = (seed >> 16) as u16;
            let old = words[i];
            // The helpers work on native-order words read from wire bytes.
            let csum = u16::from_ne_bytes(words[5].to_be_bytes());
            let updated = csum_replace2(
                csum,
                u16::from_ne_bytes(old.to_be_bytes()),
                u16::from_ne_bytes(new.to_be_bytes()),
            );
            words[i] = new;
            words[5] = 0;
            let scratch = checksum(&words);
            let got = u16::from_be_bytes(updated.to_ne_bytes());
            assert!(
                got == scratch || (got == 0 && scratch == 0xffff) || (got == 0xffff && scratch == 0),
                "word {i}: {old:#06x} -> {new:#06x}: incremental {got:#06x}, from scratch {scratch:#06x}"
            );
            words[5] = got;
        }
    }

    /// The header checksum check over real headers of every IHL: right
    /// checksums pass, any single flipped bit fails, and a header cut by
    /// the frame end fails rather than reading past it.
    #[test]
    fn ipv4_checksum_ok_checks_every_header_word() {
        for ihl in 5..=15usize {
            let len = ihl * 4;
            // 14 bytes of Ethernet header, then the IPv4 header.
            let mut buf = vec![0u8; ETH_HLEN + len];
            let ip = &mut buf[ETH_HLEN..];
            ip[0] = 0x40 | ihl as u8;
            ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = IPPROTO_UDP;
            for (i, b) in ip[12..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37).wrapping_add(ihl as u8);
            }
            let words: Vec<u16> = ip
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            let c = checksum(&words);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let frame = |b: &[u8]| Frame {
                data: b.as_ptr() as usize,
                end: b.as_ptr() as usize + b.len(),
            };
            assert!(ipv4_checksum_ok(&frame(&buf), ETH_HLEN, len), "IHL {ihl}");
            for bit in 0..len * 8 {
                let mut bad = buf.clone();
                bad[ETH_HLEN + bit / 8] ^= 1 << (bit % 8);
                assert!(
                    !ipv4_checksum_ok(&frame(&bad), ETH_HLEN, len),
                    "IHL {ihl}, bit {bit} flipped"
                );
            }
            assert!(
                !ipv4_checksum_ok(&frame(&buf[..buf.len() - 1]), ETH_HLEN, len),
                "IHL {ihl}, cut"
            );
        }
    }

    #[test]
    fn csum_replace4_is_two_replace2() {
        let csum = 0xb1e6u16;
        let old = [10u8, 0, 0, 1];
        let new = [203u8, 0, 113, 10];
        let hi = |a: [u8; 4]| u16::from_ne_bytes([a[0], a[1]]);
        let lo = |a: [u8; 4]| u16::from_ne_bytes([a[2], a[3]]);
        assert_eq!(
            csum_replace4(csum, hi(old), lo(old), new),
            csum_replace2(csum_replace2(csum, hi(old), hi(new)), lo(old), lo(new))
        );
    }
}
