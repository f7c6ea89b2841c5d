//! The vnet XDP flow executor.
//!
//! One program, attached to every bound interface, that knows no topology:
//!
//! 1. parse the frame into a [`FlowKey`](vnet_common::FlowKey) by the rule
//!    written on `FlowKey` (`parse`); IPv4 that the userspace parser rejects
//!    as malformed (bad header checksum, lengths that disagree with the
//!    frame, a bad TCP/UDP header) is not keyed at all, so no installed flow
//!    ever applies to it;
//! 2. look the key up in `FLOWS` (`maps`);
//! 3. hit: apply the flow's actions in the fixed order of `vnet_common::act`
//!    (`rewrite`), update the flow's counters, then redirect (`OUTPUT`) or
//!    drop;
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
//! A flow to a port on another host also encapsulates (`act::ENCAP_VXLAN`,
//! after the rewrites); the underlay programs (`vnet_underlay`,
//! `vnet_underlay_xdp`) decapsulate on the egress host (`tunnel`).
//!
//! Modules: `access` (the only code that touches packet bytes: handles that
//! exist only after a bounds check against `data_end`, what the verifier
//! needs before every access), `wire` (header layouts), `parse`,
//! `checksum`, `rewrite`, `skb` (the tc executor), `tunnel` (VXLAN), and
//! `maps` (the maps and who writes and reads them).
//!
//! The crate also compiles for the host (`cargo build --workspace`, clippy,
//! the unit tests in `checksum`): the assembly helpers then have plain-Rust
//! twins and `main` only says what this binary is.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// For the BPF assembly in `access` and `maps`.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod access;
mod checksum;
mod maps;
mod parse;
mod rewrite;
mod skb;
mod tunnel;
mod wire;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use vnet_common::{act, Reason, XSK_MAX_RX_FRAME};

use maps::count;

#[xdp]
pub fn vnet_xdp(mut ctx: XdpContext) -> u32 {
    // No `XdpRx` count: every frame ends in exactly one of the outcome
    // counters below, and vnetd sums them (`Kernel::stats`).
    let parsed = match parse::parse(&ctx) {
        Ok(p) => p,
        Err(reason) => {
            count(reason);
            return to_userspace(&ctx);
        }
    };
    let Some(flow) = maps::flow(parsed.key) else {
        count(Reason::XdpMiss);
        return to_userspace(&ctx);
    };
    let actions = flow.actions();
    let flags = actions.flags;

    // A flow without OUTPUT drops, like an empty OVS/MidoNet action list.
    // Rewrites before a drop are unobservable, so they are skipped (a drop
    // must not turn into an upcall because a rewrite could not be applied).
    if flags & act::DROP != 0 || flags & act::OUTPUT == 0 {
        flow.account(parsed.len);
        count(Reason::XdpHitDrop);
        return XDP_DROP;
    }
    // The egress is on the skb path: the tc program on this interface
    // executes the flow on the skb the kernel builds (and counts the hit).
    if flags & act::VIA_TC != 0 {
        count(Reason::XdpPassToTc);
        return XDP_PASS;
    }
    // Encapsulation: checked before the rewrites, so that a frame that
    // cannot be encapsulated goes to userspace as received.
    let encap = flags & act::ENCAP_VXLAN != 0;
    if encap && (flags & act::PUSH_VLAN != 0 || tunnel::probe_headroom(&mut ctx).is_err()) {
        count(Reason::XdpActionFailed);
        count(Reason::TunnelEncapFailed);
        return to_userspace(&ctx);
    }
    if rewrite::apply(&mut ctx, &parsed, &actions).is_err() {
        count(Reason::XdpActionFailed);
        return to_userspace(&ctx);
    }
    if encap {
        if tunnel::encap_xdp(&mut ctx, &actions.encap).is_err() {
            // After the probe this cannot fail; the frame is rewritten,
            // so it is dropped rather than sent up half-done.
            count(Reason::XdpActionFailed);
            count(Reason::TunnelEncapFailed);
            return XDP_DROP;
        }
        count(Reason::TunnelEncap);
    }
    flow.account(parsed.len);
    count(Reason::XdpHitRedirect);
    // XDP_REDIRECT, or XDP_ABORTED for invalid flags (we pass none).
    // SAFETY: a helper call with plain values.
    unsafe { bpf_redirect(actions.out_ifindex, 0) as u32 }
}

/// The skb executor, attached at tc ingress (tcx) of guest-facing
/// interfaces and of interfaces whose XDP program passes it flows
/// (`act::VIA_TC`). See `skb`.
#[classifier]
pub fn vnet_tc(ctx: TcContext) -> i32 {
    skb::run(ctx)
}

/// The VXLAN decapsulator at tc ingress (tcx) of the underlay interface.
/// See `tunnel`.
#[classifier]
pub fn vnet_underlay(ctx: TcContext) -> i32 {
    tunnel::underlay_tc(ctx)
}

/// The VXLAN decapsulator in the XDP hook of the underlay interface. See
/// `tunnel`.
#[xdp]
pub fn vnet_underlay_xdp(ctx: XdpContext) -> u32 {
    tunnel::underlay_xdp(ctx)
}

/// On the far end of vnetd's upcall pair (`vnet_common::upcall`): every
/// frame is a first packet from the skb executor, for the upcall socket.
#[xdp]
pub fn vnet_upcall(ctx: XdpContext) -> u32 {
    count(Reason::UpcallRx);
    to_userspace(&ctx)
}

/// Hands the frame to the ingress interface's AF_XDP socket; drops it when
/// the interface has none (never `XDP_PASS`: the host stack must not see
/// tenant traffic), or when it is larger than the socket's frames: the
/// redirect would succeed and the socket drop it (`rx_dropped`), where no
/// reason is kept.
#[inline(always)]
fn to_userspace(ctx: &XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` is the kernel's xdp_md for this run.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    let Some(slot) = maps::xsk_slot(ctx.ingress_ifindex() as u32, queue) else {
        count(Reason::XdpNoSocket);
        return XDP_DROP;
    };
    if access::total_len(ctx) > u64::from(XSK_MAX_RX_FRAME) {
        count(Reason::XdpTooBig);
        return XDP_DROP;
    }
    // An empty slot returns the fallback action in the flags: XDP_DROP.
    match maps::XSKS.redirect(slot, XDP_DROP as u64) {
        Ok(_) => XDP_REDIRECT,
        Err(_) => {
            count(Reason::XdpNoSocket);
            XDP_DROP
        }
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
