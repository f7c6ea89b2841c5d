//! The skb (tc) flow executor: the same flow table and actions as the XDP
//! program, for guest-facing interfaces (veth, tap), where the packet is an
//! skb that keeps what XDP cannot see:
//!
//! - **GSO**: a guest's 64 KB TCP super-frame stays whole from the guest to
//!   the receiver; the MTU check of a flow is on the segment size.
//! - **Partial checksums** (`CHECKSUM_PARTIAL`: a guest with transmit
//!   offload leaves the TCP/UDP checksum to be finished later). Every
//!   rewrite goes through the kernel's checksum helpers, which know the
//!   skb's checksum state: an address change updates the pseudo-header sum
//!   with `BPF_F_PSEUDO_HDR` the way a partial checksum needs it, a port
//!   change leaves a partial checksum alone (the data is summed later), and
//!   `CHECKSUM_COMPLETE` sums stay right. An incremental update written for
//!   full checksums (what XDP does) would corrupt a partial one.
//! - **VLAN tags** received are in the skb's metadata, not the bytes: they
//!   are keyed from there and pushed and popped with the skb helpers.
//!
//! A miss goes to userspace through the upcall pair (`vnet_common::upcall`):
//! the frame, with an upcall header naming its ingress interface and tag in
//! front, is sent out of the pair's near end; the XDP program on the far
//! end ([`crate::vnet_upcall`]) hands it to vnetd's upcall socket.
//!
//! Frames are never passed to the host stack (`TC_ACT_OK`): it must not see
//! tenant traffic.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{
        bpf_redirect, bpf_redirect_peer, bpf_skb_change_head, bpf_skb_vlan_pop, bpf_skb_vlan_push,
    },
    programs::TcContext,
};
use vnet_common::{
    act,
    upcall::{self, UpcallHeader},
    FlowActions, Reason,
};

use crate::access::{bounded, Frame};
use crate::maps::{self, count};
use crate::parse::{self, Parsed};
use crate::rewrite::{is_echo, ttl_dec};
use crate::tunnel;
use crate::wire::*;

// The tc verdicts the program returns. The constants are u32 in the bpf
// build's bindings and i32 in the host build's.
#[allow(clippy::unnecessary_cast)]
const SHOT: i32 = TC_ACT_SHOT as i32;
#[allow(clippy::unnecessary_cast)]
const REDIRECT: i32 = TC_ACT_REDIRECT as i32;

/// `BPF_F_RECOMPUTE_CSUM` of `bpf_skb_store_bytes`.
const RECOMPUTE_CSUM: u64 = 1 << 0;

/// Bytes made linear (and writable) before parsing: the Ethernet header,
/// the longest IPv4 header and the longest TCP header. Parsing and
/// rewriting touch nothing further in.
const HEADERS: u32 = (ETH_HLEN + 60 + 60) as u32;

/// The skb's metadata the executor reads.
struct Meta {
    ifindex: u32,
    /// The received outer VLAN tag (its TPID and TCI), if the frame had
    /// one: the kernel keeps it in the skb, out of the bytes.
    tag: Option<Tag>,
    /// GSO segment size (payload bytes per segment), 0 for a plain frame.
    gso_size: u32,
    len: u32,
}

/// A VLAN tag held in the skb's metadata.
#[derive(Clone, Copy)]
struct Tag {
    /// The TPID in network order (`ETH_P_8021Q` or `ETH_P_8021AD`).
    proto_be: u16,
    tci: u16,
}

#[inline(always)]
fn meta(ctx: &TcContext) -> Meta {
    let skb = ctx.skb.skb;
    // SAFETY: reads of the program's own context.
    let (ifindex, vlan_present, vlan_proto, vlan_tci, gso_size, len) = unsafe {
        (
            (*skb).ifindex,
            (*skb).vlan_present,
            (*skb).vlan_proto,
            (*skb).vlan_tci,
            (*skb).gso_size,
            (*skb).len,
        )
    };
    let tag = (vlan_present != 0).then_some(Tag {
        proto_be: vlan_proto as u16,
        tci: vlan_tci as u16,
    });
    Meta {
        ifindex,
        tag,
        gso_size,
        len,
    }
}

/// The program: key, look up, execute or hand to userspace.
#[inline(always)]
pub(crate) fn run(ctx: TcContext) -> i32 {
    // No `TcRx` count: every frame ends in exactly one outcome counter, and
    // vnetd sums them (`Kernel::stats`).
    let m = meta(&ctx);
    // An outer 802.1ad (QinQ) tag is not ours to key.
    let tci = match m.tag {
        Some(t) if t.proto_be != ETH_P_8021Q.to_be() => {
            count(Reason::TcUnparsed);
            return upcall(&ctx, m.tag);
        }
        t => t.map(|t| t.tci),
    };
    // Headers linear and writable (a cloned skb gets its own head). Failure
    // is memory pressure: userspace copes with the frame as it is.
    let pull = if m.len < HEADERS { m.len } else { HEADERS };
    if ctx.pull_data(pull).is_err() {
        count(Reason::TcUnparsed);
        return upcall(&ctx, m.tag);
    }
    let parsed = {
        let f = Frame::of_skb(&ctx);
        match parse::parse_frame(&f, m.ifindex, tci) {
            Ok(p) => p,
            Err(reason) => {
                count(tc_reason(reason));
                return upcall(&ctx, m.tag);
            }
        }
    };
    // A tag still in the bytes: the kernel takes a received outer tag out
    // of them before tc, so only a test run makes one. The rewrites here
    // assume a plain Ethernet header.
    if parsed.l2_len != ETH_HLEN {
        count(Reason::TcUnparsed);
        return upcall(&ctx, m.tag);
    }
    let Some(flow) = maps::flow(parsed.key) else {
        count(Reason::TcMiss);
        return upcall(&ctx, m.tag);
    };
    let actions = flow.actions();
    let flags = actions.flags;
    if flags & act::DROP != 0 || flags & act::OUTPUT == 0 {
        flow.account(parsed.len);
        count(Reason::TcHitDrop);
        return SHOT;
    }
    match apply(&ctx, &parsed, &actions, m.gso_size) {
        Ok(()) => {}
        Err(Failed::Unchanged) => {
            count(Reason::TcActionFailed);
            return upcall(&ctx, m.tag);
        }
        Err(Failed::Encap) => {
            count(Reason::TcActionFailed);
            count(Reason::TunnelEncapFailed);
            return upcall(&ctx, m.tag);
        }
        Err(Failed::Partly) => {
            count(Reason::TcActionFailed);
            return SHOT;
        }
    }
    flow.account(parsed.len);
    if flags & act::ENCAP_VXLAN != 0 {
        count(Reason::TunnelEncap);
    }
    count(Reason::TcHitRedirect);
    // SAFETY: helper calls with plain values. Both return TC_ACT_REDIRECT,
    // or TC_ACT_SHOT for flags they do not know (we pass none).
    unsafe {
        // An encapsulated frame leaves by the underlay's transmit path,
        // never into a veth's peer.
        if flags & act::REDIRECT_PEER != 0 && flags & act::ENCAP_VXLAN == 0 {
            bpf_redirect_peer(actions.out_ifindex, 0) as i32
        } else {
            bpf_redirect(actions.out_ifindex, 0) as i32
        }
    }
}

/// The parser's reasons are named for XDP; the skb path counts its own.
#[inline(always)]
fn tc_reason(xdp: Reason) -> Reason {
    match xdp {
        Reason::XdpMalformed => Reason::TcMalformed,
        Reason::XdpFragUnknown => Reason::TcFragUnknown,
        _ => Reason::TcUnparsed,
    }
}

/// How a rewrite failed.
enum Failed {
    /// Before the first byte changed: the frame can go to userspace as
    /// received.
    Unchanged,
    /// The encapsulation of an `ENCAP_VXLAN` flow, before the first byte
    /// changed: as `Unchanged`, counted `TunnelEncapFailed` too.
    Encap,
    /// A helper failed after some bytes changed (it cannot, with the
    /// headers made writable first, short of a kernel bug): the frame is
    /// dropped rather than sent half rewritten.
    Partly,
}

/// Applies the rewrites of a flow that outputs, in the order of
/// `vnet_common::act`, through the skb helpers. Every value is read and
/// every precondition checked before the first write; the helpers
/// invalidate all packet pointers, so nothing is read from the packet
/// after them.
#[inline(always)]
fn apply(ctx: &TcContext, p: &Parsed, a: &FlowActions, gso_size: u32) -> Result<(), Failed> {
    let flags = a.flags;
    let proto = p.key.proto;
    let is_ip = p.key.ethertype == ETH_P_IP;
    // Verifier workaround: the length comes back from the stack without
    // its range (see `rewrite::apply`); the mask is a no-op on 20..=60.
    let ip_len = bounded::<0x3f>(p.ip_len);
    let l4_off = ETH_HLEN + ip_len;

    // --- preconditions -------------------------------------------------
    let mut tagged = p.key.tagged();
    if flags & act::POP_VLAN != 0 {
        if !tagged {
            return Err(Failed::Unchanged);
        }
        tagged = false;
    }
    // We never build QinQ.
    if flags & act::PUSH_VLAN != 0 && tagged {
        return Err(Failed::Unchanged);
    }
    // The inner frame of a tunnel is never tagged (see `act::ENCAP_VXLAN`).
    let encap = flags & act::ENCAP_VXLAN != 0;
    if encap && flags & act::PUSH_VLAN != 0 {
        return Err(Failed::Encap);
    }
    if flags & (act::SET_IP_SRC | act::SET_IP_DST | act::DEC_TTL) != 0 && !is_ip {
        return Err(Failed::Unchanged);
    }
    let set_l4 = flags & (act::SET_L4_SRC | act::SET_L4_DST);
    let l4_rewrite = set_l4 != 0 && p.has_l4;
    let addr_rewrite = flags & (act::SET_IP_SRC | act::SET_IP_DST) != 0;
    // The transport checksum's offset (in the transport header), when it
    // changes; TCP and UDP only carry a pseudo-header.
    let mut csum_at = 0;
    let mut pseudo = false;
    if p.has_l4 && (addr_rewrite || l4_rewrite) {
        match proto {
            IPPROTO_TCP => {
                csum_at = TCP_CSUM;
                pseudo = true;
            }
            IPPROTO_UDP => {
                csum_at = UDP_CSUM;
                pseudo = true;
            }
            IPPROTO_ICMP if l4_rewrite => {
                if set_l4 != act::SET_L4_SRC || !is_echo(p.key.l4_dst) {
                    return Err(Failed::Unchanged);
                }
                csum_at = ICMP_CSUM;
            }
            _ if l4_rewrite => return Err(Failed::Unchanged),
            _ => {}
        }
    }

    // --- the old values, read before any helper runs ---------------------
    let f = Frame::of_skb(ctx);
    let mut old_src = 0;
    let mut old_dst = 0;
    let mut old_ttl_proto = 0;
    let mut new_ttl_proto = 0;
    let mut old_l4_src = 0;
    let mut old_l4_dst = 0;
    if is_ip {
        let ip = f
            .bytes::<IPV4_MIN_HLEN>(ETH_HLEN)
            .ok_or(Failed::Unchanged)?;
        if flags & act::DEC_TTL != 0 {
            // RFC 1812 §5.3.1: userspace sends the ICMP time exceeded.
            let ttl = ip.u8::<IP_TTL>();
            if ttl <= ttl_dec(a) {
                return Err(Failed::Unchanged);
            }
            let ttl_proto = ip.field::<IP_TTL, 2>();
            old_ttl_proto = ttl_proto.raw16::<0>();
            new_ttl_proto = u16::from_ne_bytes([ttl - ttl_dec(a), ttl_proto.u8::<1>()]);
        }
        if a.mtu != 0 && segment_len(&f, p, ip.be16::<IP_TOTAL_LEN>(), gso_size) > u32::from(a.mtu)
        {
            // Userspace fragments it or answers "fragmentation needed".
            return Err(Failed::Unchanged);
        }
        old_src = ip.raw32::<IP_SRC>();
        old_dst = ip.raw32::<IP_DST>();
        if l4_rewrite {
            if proto == IPPROTO_ICMP {
                let id = f
                    .bytes::<2>(l4_off + ICMP_ECHO_ID)
                    .ok_or(Failed::Unchanged)?;
                old_l4_src = id.raw16::<0>();
            } else {
                let ports = f.bytes::<4>(l4_off).ok_or(Failed::Unchanged)?;
                old_l4_src = ports.raw16::<L4_SRC>();
                old_l4_dst = ports.raw16::<L4_DST>();
            }
        }
        if csum_at != 0 && !f.contains(l4_off + csum_at, 2) {
            return Err(Failed::Unchanged);
        }
    }

    let olds = Olds {
        src: old_src,
        dst: old_dst,
        ttl_proto: old_ttl_proto,
        new_ttl_proto,
        l4_src: old_l4_src,
        l4_dst: old_l4_dst,
    };
    // The whole (super-)frame: the outer lengths are those of what leaves.
    let inner_len = ctx.len() as usize;

    // --- VLAN: the only helpers that can fail (memory), before any write -
    let skb = ctx.skb.skb;
    if flags & act::POP_VLAN != 0 {
        // SAFETY: a helper call on the program's own context.
        if unsafe { bpf_skb_vlan_pop(skb) } != 0 {
            return Err(Failed::Unchanged);
        }
    }
    if flags & act::PUSH_VLAN != 0 {
        // SAFETY: as above; a pushed tag has priority 0.
        let pushed = unsafe { bpf_skb_vlan_push(skb, ETH_P_8021Q.to_be(), a.vlan & 0x0fff) };
        if pushed != 0 {
            return Err(Failed::Unchanged);
        }
    }
    // --- VXLAN: room for the outer headers, still before any write -------
    // The room opens after the Ethernet header: from here on the inner
    // frame starts at `base` (its Ethernet header is written there below)
    // and every offset of the rewrites is shifted by it.
    let base = if encap { tunnel::OVERHEAD } else { 0 };
    if encap
        && ctx
            .adjust_room(tunnel::OVERHEAD as i32, 1, tunnel::SKB_ENCAP_FLAGS)
            .is_err()
    {
        return Err(Failed::Encap);
    }

    // --- Ethernet, then the transport checksum and ports, then IPv4 ------
    let partly = |_| Failed::Partly;
    if encap {
        // The inner Ethernet header, whole, into the room's end. Inside
        // the checksummed part of the frame (after the MAC header), hence
        // BPF_F_RECOMPUTE_CSUM (a no-op unless CHECKSUM_COMPLETE).
        let inner = tunnel::InnerEth {
            dst: if flags & act::SET_ETH_DST != 0 {
                a.eth_dst
            } else {
                p.key.eth_dst
            },
            src: if flags & act::SET_ETH_SRC != 0 {
                a.eth_src
            } else {
                p.key.eth_src
            },
            ethertype: p.key.ethertype.to_be(),
        };
        ctx.store(tunnel::OVERHEAD, &inner, RECOMPUTE_CSUM)
            .map_err(partly)?;
    } else {
        if flags & act::SET_ETH_DST != 0 {
            ctx.store(ETH_DST, &a.eth_dst, 0).map_err(partly)?;
        }
        if flags & act::SET_ETH_SRC != 0 {
            ctx.store(ETH_SRC, &a.eth_src, 0).map_err(partly)?;
        }
    }
    if is_ip {
        rewrite_ip(ctx, p, a, base, csum_at, pseudo, l4_rewrite, olds)?;
    }
    if encap {
        // The outer headers last, over the old Ethernet header and the
        // room: the bytes are linear and writable (the room was made so).
        // Written directly, so a CHECKSUM_COMPLETE sum would not follow
        // them; frames from guests (veth, tap) are CHECKSUM_PARTIAL or
        // NONE at this hook, never COMPLETE (only a NIC's receive is).
        let f = Frame::of_skb(ctx);
        let h = f.bytes::<{ tunnel::OVERHEAD }>(0).ok_or(Failed::Partly)?;
        tunnel::write_outer(h, &a.encap, inner_len);
    }
    Ok(())
}

/// The old values of the IPv4 rewrites, read before any helper.
struct Olds {
    src: u32,
    dst: u32,
    ttl_proto: u16,
    new_ttl_proto: u16,
    l4_src: u16,
    l4_dst: u16,
}

/// The transport checksum and ports, then IPv4, of the frame whose IPv4
/// header is at `base + ETH_HLEN`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rewrite_ip(
    ctx: &TcContext,
    p: &Parsed,
    a: &FlowActions,
    base: usize,
    csum_at: usize,
    pseudo: bool,
    l4_rewrite: bool,
    o: Olds,
) -> Result<(), Failed> {
    let partly = |_| Failed::Partly;
    let flags = a.flags;
    let proto = p.key.proto;
    let ip_len = bounded::<0x3f>(p.ip_len);
    let l4_off = base + ETH_HLEN + ip_len;
    let Olds {
        src: old_src,
        dst: old_dst,
        ttl_proto: old_ttl_proto,
        new_ttl_proto,
        l4_src: old_l4_src,
        l4_dst: old_l4_dst,
    } = o;
    let csum = l4_off + csum_at;
    // A zero UDP checksum means "none": BPF_F_MARK_MANGLED_0 keeps it zero
    // and turns a computed zero into 0xffff (RFC 768).
    let mangled0 = if proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    let new_src = u32::from_ne_bytes(a.ip_src);
    let new_dst = u32::from_ne_bytes(a.ip_dst);
    if pseudo {
        let f = BPF_F_PSEUDO_HDR as u64 | mangled0 | 4;
        if flags & act::SET_IP_SRC != 0 {
            ctx.l4_csum_replace(csum, old_src.into(), new_src.into(), f)
                .map_err(partly)?;
        }
        if flags & act::SET_IP_DST != 0 {
            ctx.l4_csum_replace(csum, old_dst.into(), new_dst.into(), f)
                .map_err(partly)?;
        }
    }
    if l4_rewrite {
        let f = mangled0 | 2;
        let new_l4_src = a.l4_src.to_be();
        if proto == IPPROTO_ICMP {
            ctx.l4_csum_replace(csum, old_l4_src.into(), new_l4_src.into(), f)
                .map_err(partly)?;
            ctx.store(l4_off + ICMP_ECHO_ID, &new_l4_src, 0)
                .map_err(partly)?;
        } else {
            if flags & act::SET_L4_SRC != 0 {
                ctx.l4_csum_replace(csum, old_l4_src.into(), new_l4_src.into(), f)
                    .map_err(partly)?;
                ctx.store(l4_off + L4_SRC, &new_l4_src, 0).map_err(partly)?;
            }
            if flags & act::SET_L4_DST != 0 {
                let new_l4_dst = a.l4_dst.to_be();
                ctx.l4_csum_replace(csum, old_l4_dst.into(), new_l4_dst.into(), f)
                    .map_err(partly)?;
                ctx.store(l4_off + L4_DST, &new_l4_dst, 0).map_err(partly)?;
            }
        }
    }
    let ip_off = base + ETH_HLEN;
    let ip_csum = ip_off + IP_CSUM;
    if flags & act::SET_IP_SRC != 0 {
        ctx.l3_csum_replace(ip_csum, old_src.into(), new_src.into(), 4)
            .map_err(partly)?;
        ctx.store(ip_off + IP_SRC, &new_src, 0).map_err(partly)?;
    }
    if flags & act::SET_IP_DST != 0 {
        ctx.l3_csum_replace(ip_csum, old_dst.into(), new_dst.into(), 4)
            .map_err(partly)?;
        ctx.store(ip_off + IP_DST, &new_dst, 0).map_err(partly)?;
    }
    if flags & act::DEC_TTL != 0 {
        ctx.l3_csum_replace(ip_csum, old_ttl_proto.into(), new_ttl_proto.into(), 2)
            .map_err(partly)?;
        ctx.store(ip_off + IP_TTL, &new_ttl_proto, 0)
            .map_err(partly)?;
    }
    Ok(())
}

/// The length of the IPv4 packets this frame leaves as: itself, or for a
/// GSO super-frame each segment (its headers plus one segment of payload),
/// which is what the egress MTU applies to.
#[inline(always)]
fn segment_len(f: &Frame, p: &Parsed, total: u16, gso_size: u32) -> u32 {
    if gso_size == 0 {
        return u32::from(total);
    }
    let l4_hlen = match p.key.proto {
        IPPROTO_TCP => f
            .bytes::<TCP_MIN_HLEN>(ETH_HLEN + bounded::<0x3f>(p.ip_len))
            .map(|tcp| ((tcp.u8::<TCP_DOFF>() >> 4) as u32) * 4)
            .unwrap_or(60),
        IPPROTO_UDP => UDP_HLEN as u32,
        _ => 0,
    };
    p.ip_len as u32 + l4_hlen + gso_size
}

/// Sends the frame to userspace: prepends the header (with the received
/// tag, which the far end's XDP would not see: it stays in the skb's
/// metadata, as veth carries it, while the bytes keep any inner tag) and
/// redirects out of the upcall pair's near end.
#[inline(always)]
fn upcall(ctx: &TcContext, tag: Option<Tag>) -> i32 {
    let Some(target) = maps::upcall_ifindex() else {
        count(Reason::TcNoUpcall);
        return SHOT;
    };
    let skb = ctx.skb.skb;
    // SAFETY: reads of the program's own context.
    let (ifindex, len, gso_size) = unsafe { ((*skb).ifindex, (*skb).len, (*skb).gso_size) };
    // What arrives at the far end must fit its MTU: the whole frame, or
    // each segment of a GSO frame (the pair segments it).
    let longest = if gso_size == 0 {
        len
    } else {
        gso_size + HEADERS
    };
    if longest as usize + upcall::HEADER_LEN > (upcall::MTU as usize) + ETH_HLEN {
        count(Reason::TcTooBig);
        return SHOT;
    }
    // The port's budget, before the ring all skb ports share. A GSO frame
    // is charged once, before the pair segments it.
    if !maps::take_upcall_token(ifindex) {
        count(Reason::TcUpcallBudget);
        return SHOT;
    }
    let mut header = UpcallHeader {
        ethertype: upcall::ETHERTYPE.to_be_bytes(),
        ifindex: ifindex.to_be_bytes(),
        ..UpcallHeader::default()
    };
    if let Some(t) = tag {
        header.vlan_tci = t.tci.to_be_bytes();
        header.flags = upcall::TAGGED;
        if t.proto_be != ETH_P_8021Q.to_be() {
            header.flags |= upcall::TAGGED_8021AD;
        }
    }
    // SAFETY: as above.
    if unsafe { bpf_skb_change_head(skb, upcall::HEADER_LEN as u32, 0) } != 0
        || ctx.store(0, &header, 0).is_err()
    {
        count(Reason::TcUpcallFailed);
        return SHOT;
    }
    // SAFETY: a helper call with plain values.
    let verdict = unsafe { bpf_redirect(target, 0) } as i32;
    if verdict != REDIRECT {
        count(Reason::TcUpcallFailed);
    }
    verdict
}
