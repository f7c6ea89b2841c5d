//! VXLAN between hosts (RFC 7348): the outer headers an `act::ENCAP_VXLAN`
//! flow puts in front of its frame (both executors), and the underlay
//! programs that take them off again on the egress host.
//!
//! Encapsulation writes Ethernet + IPv4 + UDP + VXLAN (50 bytes,
//! `tunnel::OVERHEAD`) at the start of a frame whose head was grown by
//! that much: by `bpf_xdp_adjust_head(-50)` on XDP (the inner frame then
//! follows whole), by `bpf_skb_adjust_room(+50, BPF_ADJ_ROOM_MAC)` on the
//! skb path, which opens the room after the existing Ethernet header (so
//! the executor writes the inner Ethernet header at 50 itself) and tells
//! the kernel the skb is now a UDP tunnel (`skb->encapsulation`, the inner
//! header offsets, `SKB_GSO_UDP_TUNNEL`): a GSO super-frame stays whole and
//! the underlay segments it as a tunnel, and a partial inner checksum stays
//! right (its `csum_start` is head-relative and the inner bytes do not
//! move).
//!
//! Decapsulation ([`classify`], then each program's own strip) takes only
//! VXLAN to one of this host's tunnel addresses (`TUNNEL_LOCAL`) from a
//! known peer (`TUNNEL_PEERS`) with a VNI a local port has
//! (`TUNNEL_PORTS`); everything else to us is dropped, counted, and
//! anything that is not VXLAN to us is the host's own traffic (etcd, ssh)
//! and passes.
//!
//! Verifier: every packet offset here is a constant (the outer headers
//! have no options, the inner Ethernet header no tag), so no range is lost
//! and no workaround of `access::bounded` kind was needed. Each helper
//! that moves the packet (`adjust_head`, `adjust_room`) is followed by a
//! fresh `Frame` and bounds check before the next access.

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        TC_ACT_SHOT,
    },
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::{TcContext, XdpContext},
};
use vnet_common::{
    tunnel::{self, TunnelPort},
    Encap, Reason,
};

use crate::access::{adjust_head, total_len, Bytes, Frame};
use crate::checksum;
use crate::maps::{self, count};
use crate::wire::*;

/// The outer headers' length, as an offset.
pub(crate) const OVERHEAD: usize = tunnel::OVERHEAD as usize;
/// Outer headers and the inner Ethernet header: what must be linear (and
/// is checked) to classify or to write an encapsulation on the skb path.
pub(crate) const WITH_INNER_ETH: usize = OVERHEAD + ETH_HLEN;

// Offsets in the outer headers, from the start of the frame.
const O_IP: usize = ETH_HLEN;
const O_UDP: usize = O_IP + IPV4_MIN_HLEN;
const O_VXLAN: usize = O_UDP + UDP_HLEN;
const VXLAN_HLEN: usize = 8;
const _: () = assert!(O_VXLAN + VXLAN_HLEN == OVERHEAD);

// bpf_skb_adjust_room flags (include/uapi/linux/bpf.h), as u64: the
// bindings' types differ between the bpf and the host build.
const ADJ_ROOM_FIXED_GSO: u64 = 1 << 0;
const ADJ_ROOM_ENCAP_L3_IPV4: u64 = 1 << 1;
const ADJ_ROOM_ENCAP_L4_UDP: u64 = 1 << 4;
const ADJ_ROOM_ENCAP_L2_ETH: u64 = 1 << 6;
const ADJ_ROOM_DECAP_L3_IPV4: u64 = 1 << 7;
/// Newer than this project's kernel (bpf-next, 2026): also resets
/// `skb->encapsulation` and the tunnel GSO bits on decapsulation. Tried
/// first for GSO frames; an older kernel refuses it (EINVAL, nothing
/// changed) and the frame is decapsulated without it.
const ADJ_ROOM_DECAP_L4_UDP: u64 = 1 << 10;
/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: the inner L2 header's length, which the
/// room includes.
const fn adj_room_encap_l2(len: u64) -> u64 {
    (len & 0xff) << 56
}
/// `BPF_ADJ_ROOM_MAC`: the room opens (or closes) right after the Ethernet
/// header.
const ADJ_ROOM_MAC: u32 = 1;

/// Encapsulation on the skb path. `FIXED_GSO`: the segment size of a GSO
/// frame stays the guest's; the flow's MTU check (on the inner segment,
/// against the underlay MTU less 50) already proved each outer segment
/// fits, where the kernel would otherwise shrink every segment by 50.
pub(crate) const SKB_ENCAP_FLAGS: u64 = ADJ_ROOM_FIXED_GSO
    | ADJ_ROOM_ENCAP_L3_IPV4
    | ADJ_ROOM_ENCAP_L4_UDP
    | ADJ_ROOM_ENCAP_L2_ETH
    | adj_room_encap_l2(ETH_HLEN as u64);

/// Decapsulation on the skb path. `FIXED_GSO`: a GSO frame's segment size
/// is its inner payload's (what the encapsulator kept, or what the
/// underlay's GRO merged), where the kernel would otherwise grow it by 50.
const DECAP_FLAGS: u64 = ADJ_ROOM_FIXED_GSO | ADJ_ROOM_DECAP_L3_IPV4;

/// The outer IPv4 header's flags and offset: DF.
const OUTER_DF: u32 = 0x4000;

/// The outer IPv4 header's checksum (version 4, IHL 5, TOS 0, id 0, DF,
/// TTL 64, UDP) for `total` bytes from `src` to `dst`, host order.
#[inline(always)]
fn outer_ip_checksum(total: u16, src: [u8; 4], dst: [u8; 4]) -> u16 {
    let mut sum: u32 = 0x4500
        + u32::from(total)
        + OUTER_DF
        + (u32::from(tunnel::OUTER_TTL) << 8 | u32::from(IPPROTO_UDP))
        + u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]));
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Writes the 50 bytes of outer headers into `h` for an inner frame of
/// `inner_len` bytes (Ethernet header included).
#[inline(always)]
pub(crate) fn write_outer(h: Bytes<'_, OVERHEAD>, e: &Encap, inner_len: usize) {
    let eth = h.field::<0, ETH_HLEN>();
    eth.set_mac::<ETH_DST>(e.eth_dst);
    eth.set_mac::<ETH_SRC>(e.eth_src);
    eth.set_raw16::<ETH_TYPE>(ETH_P_IP.to_be());

    // A GSO super-frame near 64 KB could overflow the 16-bit lengths: they
    // saturate instead (still consistent with each other and the frame,
    // for a receiver that sees the super-frame whole); segmentation writes
    // every segment's own lengths anyway.
    let ip_total = inner_len + IPV4_MIN_HLEN + UDP_HLEN + VXLAN_HLEN;
    let total = if ip_total > 0xffff {
        0xffff
    } else {
        ip_total as u16
    };
    let udp_len = total - IPV4_MIN_HLEN as u16;
    let [t0, t1] = total.to_be_bytes();
    let [c0, c1] = outer_ip_checksum(total, e.src, e.dst).to_be_bytes();
    let ip = h.field::<O_IP, IPV4_MIN_HLEN>();
    ip.set_raw32::<0>(u32::from_ne_bytes([0x45, 0, t0, t1]));
    // Id 0, DF, offset 0: the decapsulator takes no fragments, so a tunnel
    // packet must arrive whole or not at all (the flow's MTU keeps it
    // within the underlay's); with DF, id 0 is allowed (RFC 6864).
    let [f0, f1] = (OUTER_DF as u16).to_be_bytes();
    ip.set_raw32::<IP_ID>(u32::from_ne_bytes([0, 0, f0, f1]));
    ip.set_raw32::<IP_TTL>(u32::from_ne_bytes([tunnel::OUTER_TTL, IPPROTO_UDP, c0, c1]));
    ip.set_raw32::<IP_SRC>(u32::from_ne_bytes(e.src));
    ip.set_raw32::<IP_DST>(u32::from_ne_bytes(e.dst));

    let udp = h.field::<O_UDP, UDP_HLEN>();
    let [s0, s1] = e.sport.to_be_bytes();
    let [p0, p1] = tunnel::VXLAN_PORT.to_be_bytes();
    udp.set_raw32::<0>(u32::from_ne_bytes([s0, s1, p0, p1]));
    let [l0, l1] = udp_len.to_be_bytes();
    // Checksum 0: none (RFC 7348 §5 on IPv4).
    udp.set_raw32::<UDP_LEN>(u32::from_ne_bytes([l0, l1, 0, 0]));

    let vxlan = h.field::<O_VXLAN, VXLAN_HLEN>();
    vxlan.set_raw32::<0>(u32::from_ne_bytes([tunnel::FLAG_I, 0, 0, 0]));
    let [_, v0, v1, v2] = (e.vni & tunnel::MAX_VNI).to_be_bytes();
    vxlan.set_raw32::<4>(u32::from_ne_bytes([v0, v1, v2, 0]));
}

/// What the underlay programs do with a frame.
pub(crate) enum Underlay {
    /// Not VXLAN to a local tunnel address: the host's own traffic.
    NotOurs,
    /// VXLAN to us that no port may see, with why.
    Drop(Reason),
    /// VXLAN to us for a local port.
    Deliver {
        port: TunnelPort,
        /// The inner frame's EtherType is IPv4.
        inner_ipv4: bool,
    },
}

/// Classifies a frame received on the underlay: outer IPv4 without
/// options, not a fragment, UDP to `VXLAN_PORT`, to a local tunnel address
/// is ours; then the source must be a peer, the headers whole and
/// consistent (lengths, IPv4 checksum, the I flag), and the VNI a local
/// port's. The outer UDP checksum is not verified (RFC 7348 lets a
/// receiver ignore it, and the encapsulator sends none).
#[inline(always)]
pub(crate) fn classify(f: &Frame) -> Underlay {
    let Some(h) = f.bytes::<O_VXLAN>(0) else {
        return Underlay::NotOurs;
    };
    let ip = h.field::<O_IP, IPV4_MIN_HLEN>();
    if h.be16::<ETH_TYPE>() != ETH_P_IP
        || ip.u8::<IP_VIHL>() != 0x45
        || ip.u8::<IP_PROTO>() != IPPROTO_UDP
        // A fragment of a datagram to 4789 is the host stack's to
        // reassemble (an encapsulator of ours never sends one).
        || ip.be16::<IP_FRAG>() & (IP_MF | IP_OFFSET) != 0
    {
        return Underlay::NotOurs;
    }
    let udp = h.field::<O_UDP, UDP_HLEN>();
    if udp.be16::<L4_DST>() != tunnel::VXLAN_PORT || !maps::is_tunnel_local(ip.ipv4::<IP_DST>()) {
        return Underlay::NotOurs;
    }
    // VXLAN to us from here on: it reaches a port or is dropped.
    if !maps::is_tunnel_peer(ip.ipv4::<IP_SRC>()) {
        return Underlay::Drop(Reason::TunnelUnknownPeer);
    }
    let Some(all) = f.bytes::<WITH_INNER_ETH>(0) else {
        return Underlay::Drop(Reason::TunnelMalformed);
    };
    let total = ip.be16::<IP_TOTAL_LEN>() as usize;
    let udp_len = udp.be16::<UDP_LEN>() as usize;
    // Exact lengths: bytes past the outer packet would be delivered as
    // the inner frame's tail (a VXLAN frame is never short enough to be
    // padded to Ethernet's minimum).
    if total < WITH_INNER_ETH - ETH_HLEN
        || ETH_HLEN + total != f.len()
        || udp_len != total - IPV4_MIN_HLEN
        || !checksum::ipv4_header_ok(f, O_IP, IPV4_MIN_HLEN)
    {
        return Underlay::Drop(Reason::TunnelMalformed);
    }
    let vxlan = all.field::<O_VXLAN, VXLAN_HLEN>();
    if vxlan.u8::<0>() & tunnel::FLAG_I == 0 {
        return Underlay::Drop(Reason::TunnelMalformed);
    }
    let vni = u32::from_be_bytes([0, vxlan.u8::<4>(), vxlan.u8::<5>(), vxlan.u8::<6>()]);
    if vni == tunnel::RESERVED_VNI {
        return Underlay::Drop(Reason::TunnelReservedVni);
    }
    let Some(port) = maps::tunnel_port(vni) else {
        return Underlay::Drop(Reason::TunnelUnknownVni);
    };
    let inner_ipv4 = all.be16::<{ OVERHEAD + ETH_TYPE }>() == ETH_P_IP;
    Underlay::Deliver { port, inner_ipv4 }
}

// The tc verdicts, as in `skb`.
#[allow(clippy::unnecessary_cast)]
const SHOT: i32 = TC_ACT_SHOT as i32;
/// `TC_ACT_UNSPEC`: on tcx, "next": the host's own traffic goes on to any
/// other tc program on the underlay (a host firewall), then to the stack.
const NEXT: i32 = -1;

/// The tc decapsulator (`UNDERLAY_PROGRAM`).
#[inline(always)]
pub(crate) fn underlay_tc(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: reads of the program's own context.
    let (len, gso_size) = unsafe { ((*skb).len, (*skb).gso_size) };
    // The outer headers and the inner Ethernet header linear (and
    // writable). Failure is memory pressure: the frame cannot be looked
    // at, so it goes on as the host's (the stack drops stray VXLAN: no
    // socket on 4789).
    let want = WITH_INNER_ETH as u32;
    let pull = if len < want { len } else { want };
    if ctx.pull_data(pull).is_err() {
        count(Reason::TunnelPass);
        return NEXT;
    }
    let (port, inner_ipv4, inner_eth) = {
        let f = Frame::of_skb(&ctx);
        match classify(&f) {
            Underlay::NotOurs => {
                count(Reason::TunnelPass);
                return NEXT;
            }
            Underlay::Drop(reason) => {
                count(reason);
                return SHOT;
            }
            Underlay::Deliver { port, inner_ipv4 } => {
                // The inner Ethernet header, read before the helper that
                // invalidates every packet pointer.
                let Some(eth) = f.bytes::<ETH_HLEN>(OVERHEAD) else {
                    count(Reason::TunnelMalformed);
                    return SHOT;
                };
                let header = InnerEth {
                    dst: eth.mac::<ETH_DST>(),
                    src: eth.mac::<ETH_SRC>(),
                    ethertype: eth.raw16::<ETH_TYPE>(),
                };
                (port, inner_ipv4, header)
            }
        }
    };
    // Removes the 50 bytes after the outer Ethernet header (outer IPv4,
    // UDP, VXLAN and the inner Ethernet header), then the inner Ethernet
    // header takes the outer one's place. A GRO aggregate first tries the
    // flag that also clears its tunnel GSO state (newer kernels); without
    // it that state stays (harmless for a guest that receives the frame,
    // not for one that forwards it on: a limit of this kernel).
    let shrink = -(OVERHEAD as i32);
    let mut stripped = false;
    if gso_size != 0 {
        stripped = ctx
            .adjust_room(shrink, ADJ_ROOM_MAC, DECAP_FLAGS | ADJ_ROOM_DECAP_L4_UDP)
            .is_ok();
    }
    if !stripped && ctx.adjust_room(shrink, ADJ_ROOM_MAC, DECAP_FLAGS).is_err() {
        // Nothing changed (an inner frame under the kernel's minimum, or
        // no memory): the frame was for a tenant, never for the host.
        count(Reason::TunnelDecapFailed);
        return SHOT;
    }
    // Outside the checksummed part of the frame at tc ingress (the MAC
    // header), so no checksum flag.
    if ctx.store(0, &inner_eth, 0).is_err() {
        count(Reason::TunnelDecapFailed);
        return SHOT;
    }
    count(Reason::TunnelDecap);
    // SAFETY: helper calls with plain values; both return TC_ACT_REDIRECT,
    // or TC_ACT_SHOT for flags they do not know (we pass none).
    // `bpf_redirect_peer` skips the peer's `eth_type_trans`, so the skb's
    // protocol stays the outer one (IPv4): right for an IPv4 inner frame
    // only, so anything else takes the veth's transmit path.
    unsafe {
        if port.flags & tunnel::PORT_REDIRECT_PEER != 0 && inner_ipv4 {
            bpf_redirect_peer(port.ifindex, 0) as i32
        } else {
            bpf_redirect(port.ifindex, 0) as i32
        }
    }
}

/// An Ethernet header as bytes, for `bpf_skb_store_bytes`.
#[repr(C)]
pub(crate) struct InnerEth {
    pub(crate) dst: [u8; 6],
    pub(crate) src: [u8; 6],
    /// Wire order.
    pub(crate) ethertype: u16,
}

/// Whether the frame's head can grow by the outer headers: grows it and
/// gives the room back, so that the frame is as received either way. Run
/// before the rewrites, so that a frame without the headroom (some drivers
/// give almost none) goes to userspace unchanged; after it the real growth
/// in [`encap_xdp`] cannot fail (a VLAN pop in between only adds room).
#[inline(always)]
pub(crate) fn probe_headroom(ctx: &mut XdpContext) -> Result<(), ()> {
    adjust_head(ctx, -(OVERHEAD as i32))?;
    adjust_head(ctx, OVERHEAD as i32)
}

/// Puts the (rewritten) frame behind the outer headers of `e`.
#[inline(always)]
pub(crate) fn encap_xdp(ctx: &mut XdpContext, e: &Encap) -> Result<(), ()> {
    let inner_len = total_len(ctx) as usize;
    adjust_head(ctx, -(OVERHEAD as i32))?;
    let f = Frame::new(ctx);
    let h = f.bytes::<OVERHEAD>(0).ok_or(())?;
    write_outer(h, e, inner_len);
    Ok(())
}

/// The XDP decapsulator (`UNDERLAY_XDP_PROGRAM`): a frame for a port of
/// the XDP executor is stripped and redirected here; one for a port of
/// the skb executor is passed on to the tc decapsulator (a redirect from
/// XDP into a veth is lost unless its peer runs XDP), as is everything
/// that is not ours, uncounted: the tc program counts it.
#[inline(always)]
pub(crate) fn underlay_xdp(mut ctx: XdpContext) -> u32 {
    let verdict = classify(&Frame::new(&ctx));
    let port = match verdict {
        Underlay::NotOurs => return XDP_PASS,
        Underlay::Drop(reason) => {
            count(reason);
            return XDP_DROP;
        }
        Underlay::Deliver { port, .. } => port,
    };
    if port.flags & tunnel::PORT_XDP == 0 {
        count(Reason::TunnelPassToTc);
        return XDP_PASS;
    }
    // Cannot fail: `classify` proved the frame holds the outer headers and
    // an inner Ethernet header.
    if adjust_head(&mut ctx, OVERHEAD as i32).is_err() {
        count(Reason::TunnelDecapFailed);
        return XDP_DROP;
    }
    count(Reason::TunnelDecap);
    // SAFETY: a helper call with plain values: XDP_REDIRECT (XDP_ABORTED
    // for flags, of which we pass none).
    unsafe { bpf_redirect(port.ifindex, 0) as u32 }
}
