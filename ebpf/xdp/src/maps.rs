//! The program's maps, and the only code that reads or writes their values.
//!
//! Map names are the statics' names (`#[map]` exports the identifier), which
//! must equal the constants in `vnet_common::maps`; their key and value types
//! are `vnet_common`'s, shared with vnetd (`dataplane/src/kernel`).
//!
//! A value returned by a lookup stays valid until the program returns, even
//! if userspace deletes the entry meanwhile: the kernel frees hash map
//! elements only after an RCU grace period, and XDP runs inside one.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, XskMap},
};
use vnet_common::{
    tunnel::{self, TunnelPort},
    FlowActions, FlowKey, FlowValue, FragKey, FragPorts, IfaceConfig, Reason, UpcallBudget,
    DEFAULT_MAX_FLOWS, MAX_FRAGS, MAX_IFACES,
};

/// The flow table. Written by vnetd only (install, replace, invalidate,
/// expire); the program looks flows up and updates their counters in place.
/// Userspace may replace an entry while a packet executes it: [`Flow::actions`]
/// copies the actions once, so each packet runs one consistent set. Several
/// CPUs may hit one flow: its counters are updated atomically.
///
/// Not preallocated so that memory grows with the number of flows; the
/// loader sets the real capacity (`Kernel::load(max_flows)`).
#[map]
pub(crate) static FLOWS: HashMap<FlowKey, FlowValue> =
    HashMap::with_max_entries(DEFAULT_MAX_FLOWS, BPF_F_NO_PREALLOC);

/// First fragment's L4 key fields by datagram, for the later fragments.
/// Written and read by the program only (vnetd never opens it): the first
/// fragment inserts, later ones look up. Two CPUs may write the same
/// datagram's entry; each writes whole values, and the reader copies one.
/// LRU: stale datagrams (lost fragments) age out by themselves.
#[map]
pub(crate) static FRAGS: LruHashMap<FragKey, FragPorts> =
    LruHashMap::with_max_entries(MAX_FRAGS, 0);

/// Ingress ifindex → the interface's AF_XDP socket slot in `XSKS`. Written
/// by vnetd when it binds or unbinds a port; read by the program for every
/// frame it hands to userspace. A frame racing an unbind finds no entry and
/// is dropped, counted (`XdpNoSocket`).
#[map]
pub(crate) static IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_IFACES, 0);

/// The AF_XDP sockets, by slot. Written by vnetd (a socket per bound
/// interface), used by the program to redirect into them; the kernel keeps
/// a reference to each socket, so a redirect never reaches a closed one.
#[map]
pub(crate) static XSKS: XskMap = XskMap::with_max_entries(MAX_IFACES, 0);

/// Per-CPU counters indexed by `Reason` (the `Xdp*` group). Incremented by
/// the program on the CPU it runs on; vnetd reads and sums them.
#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::XDP_COUNT, 0);

/// Slot 0: the ifindex of the upcall pair's near end (`vnet_common::upcall`),
/// where the tc program sends first packets; 0 while vnetd has not set it
/// up. Written by vnetd at start-up, read by the tc program on every miss.
#[map]
pub(crate) static UPCALL: Array<u32> = Array::with_max_entries(1, 0);

/// The skb ports' budgets of first packets, by ifindex (see
/// `UpcallBudget`). Written by vnetd at bind and removed at unbind; charged
/// by the tc program on every frame it sends up. Two CPUs charging one port
/// at once may both read the same tokens and both write: the bucket then
/// lets a frame or two more through, which bounds nothing worse.
#[map]
pub(crate) static UPCALL_BUDGETS: HashMap<u32, UpcallBudget> =
    HashMap::with_max_entries(MAX_IFACES, 0);

/// VNI → the local port its frames are delivered to (`TunnelPort`).
/// Written by vnetd when it binds a port that other hosts reach through
/// the tunnel, removed at unbind; read by the underlay programs for every
/// VXLAN frame to us. A frame racing a removal finds no entry and is
/// dropped, counted (`TunnelUnknownVni`); one racing a replacement reads
/// the old or the new value whole (a hash map update swaps the element).
#[map]
pub(crate) static TUNNEL_PORTS: HashMap<u32, TunnelPort> =
    HashMap::with_max_entries(tunnel::MAX_PORTS, 0);

/// The other hosts' tunnel addresses (wire order) → an id of vnetd's (the
/// program reads only the key's presence). Written by vnetd as hosts join
/// and leave; read by the underlay programs: VXLAN from any other source
/// is dropped (`TunnelUnknownPeer`), as the underlay is shared.
#[map]
pub(crate) static TUNNEL_PEERS: HashMap<[u8; 4], u32> =
    HashMap::with_max_entries(tunnel::MAX_PEERS, 0);

/// This host's tunnel addresses (wire order) → an id of vnetd's (presence
/// only, as above). Written by vnetd at start-up; read by the underlay
/// programs: only VXLAN to one of them is ours, everything else is the
/// host's own traffic.
#[map]
pub(crate) static TUNNEL_LOCAL: HashMap<[u8; 4], u32> =
    HashMap::with_max_entries(tunnel::MAX_LOCAL, 0);

/// The local port of `vni`, copied out (userspace may replace it).
#[inline(always)]
pub(crate) fn tunnel_port(vni: u32) -> Option<TunnelPort> {
    // SAFETY: the reference is read at once, within this run.
    unsafe { TUNNEL_PORTS.get(vni) }.copied()
}

/// Whether `addr` is a known peer's tunnel address.
#[inline(always)]
pub(crate) fn is_tunnel_peer(addr: [u8; 4]) -> bool {
    TUNNEL_PEERS.get_ptr(addr).is_some()
}

/// Whether `addr` is one of this host's tunnel addresses.
#[inline(always)]
pub(crate) fn is_tunnel_local(addr: [u8; 4]) -> bool {
    TUNNEL_LOCAL.get_ptr(addr).is_some()
}

/// An installed flow, found by [`flow`].
pub(crate) struct Flow {
    value: *mut FlowValue,
}

/// The flow installed for `key`, if any.
#[inline(always)]
pub(crate) fn flow(key: FlowKey) -> Option<Flow> {
    FLOWS.get_ptr_mut(key).map(|value| Flow { value })
}

impl Flow {
    /// The flow's actions, copied out of the map value: userspace may
    /// replace the entry concurrently, and one consistent copy is what this
    /// packet executes.
    #[inline(always)]
    pub(crate) fn actions(&self) -> FlowActions {
        // SAFETY: `value` came from a lookup in this run (see the module doc).
        unsafe { (*self.value).actions }
    }

    /// Counts one packet of `len` bytes: atomic adds, as several CPUs may
    /// hit the same flow.
    ///
    /// "Last used" is the coarse clock (`CLOCK_MONOTONIC_COARSE`, a tick's
    /// resolution: flows expire after seconds), stored only when it moved:
    /// most hits of a busy flow read it and write nothing, as Cilium keeps
    /// its conntrack's last-seen.
    #[inline(always)]
    pub(crate) fn account(&self, len: u64) {
        let flow = self.value;
        // SAFETY: `value` came from a lookup in this run; the counters are
        // 8-aligned u64s of the map value.
        unsafe {
            atomic_add(&raw mut (*flow).packets, 1);
            atomic_add(&raw mut (*flow).bytes, len);
            let now = bpf_ktime_get_coarse_ns();
            let last = &raw mut (*flow).last_used_ns;
            // One aligned 64-bit load or store (BPF LDX/STX DW) cannot tear,
            // and the latest writer winning is what "last used" means.
            // Volatile, not atomic: LLVM's BPF backend cannot select atomic
            // loads and stores for the generic CPU that bpf-linker targets.
            if last.read_volatile() != now {
                last.write_volatile(now);
            }
        }
    }
}

/// The L4 key fields the first fragment of datagram `key` recorded.
#[inline(always)]
pub(crate) fn frag_ports(key: FragKey) -> Option<FragPorts> {
    // SAFETY: the reference is read at once, within this run.
    unsafe { FRAGS.get(key) }.copied()
}

/// Records the first fragment's L4 key fields for the later ones. A full
/// LRU map evicts; a failed insert only makes the later fragments go to
/// userspace, so the result is ignored.
#[inline(always)]
pub(crate) fn record_frag(key: FragKey, ports: FragPorts) {
    let _ = FRAGS.insert(key, ports, 0);
}

/// The `XSKS` slot of the AF_XDP socket of interface `ifindex`'s receive
/// queue `queue`, if it has one.
#[inline(always)]
pub(crate) fn xsk_slot(ifindex: u32, queue: u32) -> Option<u32> {
    // SAFETY: the reference is read at once, within this run.
    unsafe { IFACES.get(ifindex) }.and_then(|cfg| cfg.slot_of_queue(queue))
}

/// The interface first packets of the skb path go out of, if vnetd set one.
#[inline(always)]
pub(crate) fn upcall_ifindex() -> Option<u32> {
    UPCALL.get(0).copied().filter(|&i| i != 0)
}

/// Charges one frame to `ifindex`'s budget of first packets: whether it may
/// go up. A port without a budget is not limited.
#[inline(always)]
pub(crate) fn take_upcall_token(ifindex: u32) -> bool {
    let Some(b) = UPCALL_BUDGETS.get_ptr_mut(ifindex) else {
        return true;
    };
    // SAFETY: a value of this map found in this run (see the module doc).
    unsafe {
        let per_sec = u64::from((*b).per_sec);
        if per_sec == 0 {
            return true;
        }
        let now = bpf_ktime_get_coarse_ns();
        // At most a second's refill per charge, so that the product stays
        // in 64 bits (4.3e9 tokens/s × 1e9 ns) with no overflow check,
        // which the BPF target lacks; a bucket idle longer fills up over
        // the next few charges.
        let mut elapsed = now.wrapping_sub((*b).last_ns);
        if elapsed > 1_000_000_000 {
            elapsed = 1_000_000_000;
        }
        let cap = u64::from((*b).burst) * UpcallBudget::TOKEN;
        let mut tokens = (*b).tokens + elapsed * per_sec;
        if tokens > cap {
            tokens = cap;
        }
        (*b).last_ns = now;
        if tokens < UpcallBudget::TOKEN {
            (*b).tokens = tokens;
            return false;
        }
        (*b).tokens = tokens - UpcallBudget::TOKEN;
        true
    }
}

#[inline(always)]
pub(crate) fn count(reason: Reason) {
    // Per-CPU slot: no other CPU writes it, and XDP runs with migration
    // disabled, so a plain add is exact.
    if let Some(c) = STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a value of this CPU's slot, found in this run.
        unsafe { *c += 1 };
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

/// The plain-Rust twin of the assembly above, for host builds.
#[cfg(not(target_arch = "bpf"))]
unsafe fn atomic_add(addr: *mut u64, v: u64) {
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(addr)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed)
    };
}
