//! Packet bounds: the only place that touches packet memory.
//!
//! The verifier accepts a load or store at a packet address only after the
//! program compared that address plus the access size with `data_end`. Here
//! that comparison is the one way to get a handle on packet bytes:
//! [`Frame::bytes`] checks `N` bytes at an offset and returns [`Bytes<N>`],
//! whose reads and writes take their offset as a constant that the compiler
//! checks against `N`. So every access through a `Bytes` is covered by the
//! comparison that made it, and the callers need neither a check nor
//! `unsafe`.
//!
//! A `Bytes` borrows the context it came from, and [`adjust_head`], after
//! which every packet pointer is invalid (the verifier forgets them too),
//! takes the context mutably: no `Bytes` can outlive the head adjustment.
//!
//! Verifier notes. Offsets must be small bounded values, because the
//! verifier only accepts packet pointer arithmetic with a scalar whose range
//! it knows (L2 header 14 or 18 bytes, IPv4 header 20..=60); [`bounded`]
//! restores that range where it was lost.

use core::marker::PhantomData;

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_get_buff_len},
    programs::{TcContext, XdpContext},
};

/// The frame as the program received it: the bytes it may access,
/// `data..end`, and the length of the whole packet. They differ on the skb
/// path, where only the headers are linear (a GSO super-frame is 64 KB,
/// most of it in page fragments); for XDP they are the same.
pub(crate) struct Frame<'a> {
    data: usize,
    end: usize,
    len: usize,
    /// The context (or, in host tests, the buffer) the addresses belong to.
    _packet: PhantomData<&'a ()>,
}

impl<'a> Frame<'a> {
    #[inline(always)]
    pub(crate) fn new(ctx: &'a XdpContext) -> Self {
        let (data, end) = (ctx.data(), ctx.data_end());
        Self {
            data,
            end,
            len: end - data,
            _packet: PhantomData,
        }
    }

    /// The linear bytes of an skb (`data..data_end`, after the caller
    /// pulled the headers in) and its whole length.
    #[inline(always)]
    pub(crate) fn of_skb(ctx: &'a TcContext) -> Self {
        Self {
            data: ctx.data(),
            end: ctx.data_end(),
            len: ctx.len() as usize,
            _packet: PhantomData,
        }
    }

    /// A frame over a host buffer, for the unit tests. Mutable, as the
    /// handles it gives out may write.
    #[cfg(all(test, not(target_arch = "bpf")))]
    pub(crate) fn over(buf: &'a mut [u8]) -> Self {
        let data = buf.as_mut_ptr() as usize;
        Self {
            data,
            end: data + buf.len(),
            len: buf.len(),
            _packet: PhantomData,
        }
    }

    /// Length of the whole packet in bytes (not only of what is linear).
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `len` bytes at `off` are inside the frame: a precondition
    /// check that hands out no access (the accesses check again, see
    /// `rewrite::apply`).
    #[inline(always)]
    pub(crate) fn contains(&self, off: usize, len: usize) -> bool {
        self.data + off + len <= self.end
    }

    /// The `N` bytes at `off`, if they are inside the frame. This comparison
    /// of a packet pointer against `data_end` is the bounds proof the
    /// verifier needs before any access through the returned handle.
    #[inline(always)]
    pub(crate) fn bytes<const N: usize>(&self, off: usize) -> Option<Bytes<'a, N>> {
        let addr = self.data + off;
        if addr + N > self.end {
            return None;
        }
        Some(Bytes {
            addr,
            _packet: PhantomData,
        })
    }
}

/// `N` bytes of the frame, checked against its end. Reads and writes name
/// their offset as a constant `AT`; `AT` plus the access size exceeding `N`
/// is a compile error, so no access leaves the checked bytes.
///
/// Values are the wire bytes in native order (`raw16`, `raw32`), or
/// converted from big-endian (`be16`). Packet bytes are never borrowed as
/// Rust references, only read and written through these methods, so a
/// `Copy` handle that writes aliases nothing the compiler knows about.
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a, const N: usize> {
    addr: usize,
    _packet: PhantomData<&'a ()>,
}

// Packet loads and stores. BPF packet loads and stores have no alignment
// requirement (the verifier enforces none without BPF_F_STRICT_ALIGNMENT,
// and the x86-64/arm64 JITs emit plain moves), and the IPv4 header sits at
// offset 14 or 18, so its words are at best 2-aligned. LLVM's BPF backend
// assumes strict alignment and splits every unaligned Rust access
// (`read_unaligned`) into byte loads and shifts, or into a call to a
// byte-copy loop: three to eight instructions per field on the hot path.
// Writing the 16/32-bit accesses in assembly gives one instruction each and
// asks Rust for no alignment at all (no undefined behaviour on a
// misaligned address).
impl<'a, const N: usize> Bytes<'a, N> {
    /// The `LEN` bytes at `AT`, as a handle of their own.
    #[inline(always)]
    pub(crate) fn field<const AT: usize, const LEN: usize>(self) -> Bytes<'a, LEN> {
        const { assert!(AT + LEN <= N, "field outside the checked bytes") };
        Bytes {
            addr: self.addr + AT,
            _packet: PhantomData,
        }
    }

    #[inline(always)]
    pub(crate) fn u8<const AT: usize>(self) -> u8 {
        const { assert!(AT < N, "read outside the checked bytes") };
        // SAFETY: `addr..addr + N` is inside the frame (checked by
        // `Frame::bytes`) and AT < N.
        unsafe { *((self.addr + AT) as *const u8) }
    }

    #[inline(always)]
    pub(crate) fn set_u8<const AT: usize>(self, v: u8) {
        const { assert!(AT < N, "write outside the checked bytes") };
        // SAFETY: as in `u8`.
        unsafe { *((self.addr + AT) as *mut u8) = v };
    }

    /// Two wire bytes as a native-order u16: what one's-complement checksum
    /// arithmetic works on (the sum is byte-order independent, RFC 1071
    /// §2(B)), so checksums are updated without byte swaps.
    #[inline(always)]
    pub(crate) fn raw16<const AT: usize>(self) -> u16 {
        const { assert!(AT + 2 <= N, "read outside the checked bytes") };
        // SAFETY: `addr + AT .. + 2` is inside the checked bytes.
        unsafe { load16(self.addr + AT) }
    }

    /// Four wire bytes as a native-order u32.
    #[inline(always)]
    pub(crate) fn raw32<const AT: usize>(self) -> u32 {
        const { assert!(AT + 4 <= N, "read outside the checked bytes") };
        // SAFETY: `addr + AT .. + 4` is inside the checked bytes.
        unsafe { load32(self.addr + AT) }
    }

    #[inline(always)]
    pub(crate) fn set_raw16<const AT: usize>(self, v: u16) {
        const { assert!(AT + 2 <= N, "write outside the checked bytes") };
        // SAFETY: `addr + AT .. + 2` is inside the checked bytes.
        unsafe { store16(self.addr + AT, v) }
    }

    #[inline(always)]
    pub(crate) fn set_raw32<const AT: usize>(self, v: u32) {
        const { assert!(AT + 4 <= N, "write outside the checked bytes") };
        // SAFETY: `addr + AT .. + 4` is inside the checked bytes.
        unsafe { store32(self.addr + AT, v) }
    }

    /// Only the benchmarks' traffic generator (`bench.rs`) writes words of
    /// 8 bytes; the executor does not.
    #[allow(dead_code)]
    #[inline(always)]
    pub(crate) fn set_raw64<const AT: usize>(self, v: u64) {
        const { assert!(AT + 8 <= N, "write outside the checked bytes") };
        // SAFETY: `addr + AT .. + 8` is inside the checked bytes.
        unsafe { store64(self.addr + AT, v) }
    }

    /// A big-endian (wire order) u16 as a host value.
    #[inline(always)]
    pub(crate) fn be16<const AT: usize>(self) -> u16 {
        u16::from_be(self.raw16::<AT>())
    }

    #[inline(always)]
    pub(crate) fn mac<const AT: usize>(self) -> [u8; 6] {
        let a = self.raw32::<AT>().to_ne_bytes();
        let b = self.field::<AT, 6>().raw16::<4>().to_ne_bytes();
        [a[0], a[1], a[2], a[3], b[0], b[1]]
    }

    #[inline(always)]
    pub(crate) fn set_mac<const AT: usize>(self, m: [u8; 6]) {
        self.set_raw32::<AT>(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]));
        self.field::<AT, 6>()
            .set_raw16::<4>(u16::from_ne_bytes([m[4], m[5]]));
    }

    /// An IPv4 address, in wire order.
    #[inline(always)]
    pub(crate) fn ipv4<const AT: usize>(self) -> [u8; 4] {
        self.raw32::<AT>().to_ne_bytes()
    }
}

/// Moves the start of the frame by `delta` bytes (negative: grows the
/// head). Takes the context mutably because the helper invalidates every
/// packet pointer: the borrow checker then rejects any `Bytes` still in use
/// after it, as the verifier would reject the access.
#[inline(always)]
pub(crate) fn adjust_head(ctx: &mut XdpContext, delta: i32) -> Result<(), ()> {
    // SAFETY: a helper call on the program's own context; it checks `delta`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(());
    }
    Ok(())
}

/// Length of the whole frame, the fragments of a multi-buffer frame
/// included (a BPF_PROG_TEST_RUN can make one; attached, the program only
/// sees linear frames).
#[inline(always)]
pub(crate) fn total_len(ctx: &XdpContext) -> u64 {
    // SAFETY: a helper call on the program's own context.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) }
}

/// `x & MASK`, done in assembly so that LLVM, which can prove the mask
/// useless, cannot remove it: the verifier needs to see it. The callers
/// say at each use why the range was lost.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub(crate) fn bounded<const MASK: usize>(x: usize) -> usize {
    let mut x = x;
    // SAFETY: arithmetic on a register only.
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

/// The plain-Rust twin of the assembly above, for host builds.
#[cfg(not(target_arch = "bpf"))]
pub(crate) fn bounded<const MASK: usize>(x: usize) -> usize {
    x & MASK
}

// The single-instruction loads and stores behind `Bytes`.
//
// SAFETY (all five): the caller passes an address with the access's bytes
// inside the frame, that is inside a `Bytes` made by `Frame::bytes`.

#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn load16(addr: usize) -> u16 {
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

#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn load32(addr: usize) -> u32 {
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
unsafe fn store16(addr: usize, v: u16) {
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
unsafe fn store32(addr: usize, v: u32) {
    unsafe {
        core::arch::asm!(
            "*(u32 *)({a} + 0) = {v}",
            a = in(reg) addr,
            v = in(reg) v as u64,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(target_arch = "bpf")]
#[allow(dead_code)] // see `set_raw64`
#[inline(always)]
unsafe fn store64(addr: usize, v: u64) {
    unsafe {
        core::arch::asm!(
            "*(u64 *)({a} + 0) = {v}",
            a = in(reg) addr,
            v = in(reg) v,
            options(nostack, preserves_flags),
        );
    }
}

// Plain-Rust twins of the five, for host builds (the unit tests read
// buffers through `Frame::over`).

#[cfg(not(target_arch = "bpf"))]
unsafe fn load16(addr: usize) -> u16 {
    unsafe { core::ptr::read_unaligned(addr as *const u16) }
}

#[cfg(not(target_arch = "bpf"))]
unsafe fn load32(addr: usize) -> u32 {
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

#[cfg(not(target_arch = "bpf"))]
unsafe fn store16(addr: usize, v: u16) {
    unsafe { core::ptr::write_unaligned(addr as *mut u16, v) }
}

#[cfg(not(target_arch = "bpf"))]
unsafe fn store32(addr: usize, v: u32) {
    unsafe { core::ptr::write_unaligned(addr as *mut u32, v) }
}

#[cfg(not(target_arch = "bpf"))]
#[allow(dead_code)] // see `set_raw64`
unsafe fn store64(addr: usize, v: u64) {
    unsafe { core::ptr::write_unaligned(addr as *mut u64, v) }
}
