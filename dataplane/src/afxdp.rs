//! One AF_XDP socket per receive queue of a bound interface, in copy mode:
//! the only mode veth supports. Built on `xdpilone`, which is pure Rust and needs no C
//! toolchain or libxdp/libbpf at build or run time (`xsk-rs` needs both).
//!
//! Each socket has its own UMEM: half of its frames feed the kernel's fill
//! ring (received frames), half are transmit buffers. Frames never move
//! between sockets: forwarding copies the bytes into the egress socket's
//! buffer, which on the slow path costs less than sharing a UMEM would
//! complicate (a shared UMEM needs one fill/completion owner per queue and
//! different bind flags per socket).
//!
//! Frames are [`XSK_FRAME_SIZE`] (4096) bytes, so every frame of a standard
//! MTU (and anything up to [`vnet_common::XSK_MAX_RX_FRAME`], the frame less
//! the kernel's headroom) reaches userspace; the XDP program drops longer
//! misses itself, counted. The kernel's own drops at the socket (ring full,
//! fill ring empty, too long) are read with [`Xsk::drops`].
use std::ffi::CString;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use vnet_common::{XSK_FRAME_SIZE, XSK_HEADROOM};
use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

const FRAME_SIZE: u32 = XSK_FRAME_SIZE;
/// 16 MiB of UMEM per socket: half receive, half transmit.
const FRAMES: u32 = 4096;
const RX_FRAMES: u32 = FRAMES / 2;
/// Every ring holds as many descriptors as there are receive (or
/// transmit) frames, so a burst is limited by the frames alone: the kernel
/// can queue 2048 first packets on a port while the worker serves the
/// others (at the worker's 150 k new flows/s, more than 10 ms of work)
/// before it drops any, and those drops are counted.
const RING_SIZE: u32 = RX_FRAMES;
/// Frames taken from one receive ring per call of [`Xsk::receive`]: the
/// worker's per-port share of one turn of its loop.
pub const BATCH: u32 = 64;
/// Frames the kernel transmits per kick in copy mode (`TX_BATCH_SIZE`).
const KERNEL_TX_BATCH: u32 = 32;
/// Kicks of the transmit ring per [`Kick`]: a few turns' worth of frames,
/// bounded so that a stuck device cannot hold the worker.
const MAX_KICKS: u32 = 16;

/// Kicks a socket's transmit ring: `sendto`, in copy mode the kernel
/// transmits up to [`KERNEL_TX_BATCH`] frames per call, in the caller. It
/// holds its own descriptor of the socket, so a kick that runs after the
/// worker unbound the port (with several workers, the kick runs outside
/// the runtime's lock) reaches that socket, never another that reused the
/// number; the kernel keeps the UMEM's pages pinned while the socket
/// lives.
pub struct Kick {
    fd: Arc<OwnedFd>,
    times: u32,
}

impl Kick {
    /// Kicks as many times as the kernel needs for the frames that were
    /// waiting (each call takes at most [`KERNEL_TX_BATCH`]). The kernel
    /// answers `EAGAIN` when it sent its batch and more wait (and `EBUSY`
    /// or `ENOBUFS` when the device or its queue is full for now): those
    /// are kicked again, up to `times`; any other error (the device went
    /// down or away) ends the kick, and the next turn kicks again.
    pub fn run(&self) {
        for _ in 0..self.times {
            // SAFETY: a zero-length sendto on a socket we hold open.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let again = matches!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR)
                );
                if !again {
                    break;
                }
            }
        }
    }
}

/// The kernel's drops at one socket's receive side since it was bound
/// (`getsockopt(SOL_XDP, XDP_STATISTICS)`), as running totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxDrops {
    /// The receive ring was full (the worker fell behind).
    pub ring_full: u64,
    /// The fill ring had no free frame.
    pub fill_ring_empty: u64,
    /// Dropped for another reason: a frame too long for a UMEM frame,
    /// mostly. (The kernel's `rx_dropped` also counts the fill-ring drops,
    /// which are taken out here so that no drop is counted twice.)
    pub other: u64,
}

impl RxDrops {
    /// What `self` counts beyond `earlier` (the socket's counters only
    /// grow; a smaller value counts as no change).
    pub fn since(&self, earlier: &RxDrops) -> RxDrops {
        RxDrops {
            ring_full: self.ring_full.saturating_sub(earlier.ring_full),
            fill_ring_empty: self.fill_ring_empty.saturating_sub(earlier.fill_ring_empty),
            other: self.other.saturating_sub(earlier.other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("interface {0}: {1}: {2} (is the interface up and XDP attached?)")]
    Setup(String, &'static str, String),
    #[error("interface {0}: binding AF_XDP socket: {1} (another socket holds the queue)")]
    Busy(String, String),
    #[error("allocating {0} bytes of UMEM for {1}: {2}")]
    Memory(usize, String, std::io::Error),
}

/// An mmap'ed, page-aligned UMEM area, unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize, ifname: &str) -> Result<Area, XskError> {
        // SAFETY: an anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XskError::Memory(
                len,
                ifname.to_string(),
                std::io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| {
            XskError::Memory(
                len,
                ifname.to_string(),
                std::io::Error::other("mmap returned NULL"),
            )
        })?;
        Ok(Area { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the sockets using it are dropped
        // first (field order of `Xsk`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A bound AF_XDP socket with its rings and frame bookkeeping.
pub struct Xsk {
    pub ifname: String,
    /// The receive queue the socket is bound to (the kernel hands it only
    /// that queue's frames).
    pub queue: u32,
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    /// Transmit buffers not in flight.
    tx_free: Vec<u64>,
    /// Received buffers to hand back to the fill ring (kept here when the
    /// ring reports no room yet).
    fill_spare: Vec<u64>,
    /// A descriptor of the socket of its own, for [`Kick`]s.
    kick_fd: Arc<OwnedFd>,
    /// Owns the UMEM registration; kept alive with the socket.
    _umem: Umem,
    // Declared last: dropped after the socket and the UMEM registration.
    area: Area,
}

impl XskError {
    /// Whether the queue was held by another socket (`EBUSY` at bind).
    pub fn is_busy(&self) -> bool {
        matches!(self, XskError::Busy(..))
    }
}

// SAFETY: an Xsk is used through `&mut` only (one thread at a time: the
// worker that holds the runtime, see `runtime::workers`). Its raw pointers
// (the UMEM area, xdpilone's `Umem` over it, the rings' mappings) point into
// mappings the Xsk itself owns, valid whichever thread drops them;
// xdpilone's rings are `Send` already.
unsafe impl Send for Xsk {}

fn setup_err(ifname: &str, what: &'static str, e: impl std::fmt::Debug) -> XskError {
    XskError::Setup(ifname.to_string(), what, format!("{e:?}"))
}

impl Xsk {
    /// Creates and binds a socket on queue `queue` of `ifname`.
    pub fn bind(ifname: &str, queue: u32) -> Result<Xsk, XskError> {
        let len = (FRAME_SIZE * FRAMES) as usize;
        let area = Area::new(len, ifname)?;
        let slice = NonNull::slice_from_raw_parts(area.ptr, len);
        let config = UmemConfig {
            fill_size: RING_SIZE,
            complete_size: RING_SIZE,
            frame_size: FRAME_SIZE,
            headroom: XSK_HEADROOM,
            flags: 0,
        };
        // SAFETY: the area is page aligned (mmap), of the given length, and
        // lives as long as the UMEM (both are fields of the returned Xsk).
        let umem = unsafe { Umem::new(config, slice) }
            .map_err(|e| setup_err(ifname, "registering UMEM", e))?;
        let mut info = IfInfo::invalid();
        let cname = CString::new(ifname).map_err(|e| setup_err(ifname, "interface name", e))?;
        info.from_name(&cname)
            .map_err(|e| setup_err(ifname, "looking up interface", e))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem)
            .map_err(|e| setup_err(ifname, "creating AF_XDP socket", e))?;
        let device = umem
            .fq_cq(&sock)
            .map_err(|e| setup_err(ifname, "mapping fill/completion rings", e))?;
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(RING_SIZE),
                    tx_size: NonZeroU32::new(RING_SIZE),
                    bind_flags: SocketConfig::XDP_BIND_COPY | SocketConfig::XDP_BIND_NEED_WAKEUP,
                },
            )
            .map_err(|e| setup_err(ifname, "creating rx/tx rings", e))?;
        let rx = user
            .map_rx()
            .map_err(|e| setup_err(ifname, "mapping rx ring", e))?;
        let tx = user
            .map_tx()
            .map_err(|e| setup_err(ifname, "mapping tx ring", e))?;
        umem.bind(&user).map_err(|e| {
            if e.get_raw() == libc::EBUSY {
                XskError::Busy(ifname.to_string(), e.to_string())
            } else {
                setup_err(ifname, "binding AF_XDP socket", e)
            }
        })?;

        // SAFETY: the socket's fd is open (just created); dup'ed, checked.
        let dup = unsafe { libc::fcntl(rx.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(setup_err(
                ifname,
                "duplicating the socket's descriptor",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `dup` is a new descriptor that nothing else owns.
        let kick_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(dup) });
        let fill_spare: Vec<u64> = (0..RX_FRAMES).map(|i| (i * FRAME_SIZE) as u64).collect();
        let tx_free = (RX_FRAMES..FRAMES)
            .map(|i| (i * FRAME_SIZE) as u64)
            .collect();
        let mut xsk = Xsk {
            ifname: ifname.to_string(),
            queue,
            rx,
            tx,
            device,
            tx_free,
            fill_spare,
            kick_fd,
            _umem: umem,
            area,
        };
        xsk.refill();
        Ok(xsk)
    }

    /// The socket's fd, for the XSKMAP and poll().
    pub fn fd(&self) -> i32 {
        self.rx.as_raw_fd()
    }

    fn frame_bytes(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if end > self.area.len as u64 || len > FRAME_SIZE {
            return None;
        }
        // SAFETY: in bounds of the area (checked above); the kernel wrote the
        // frame before publishing its descriptor and does not touch it until
        // we return it to the fill ring.
        Some(unsafe {
            std::slice::from_raw_parts(self.area.ptr.as_ptr().add(addr as usize), len as usize)
        })
    }

    /// The kernel's drop counters of this socket (none if the kernel does
    /// not say: the caller keeps its last reading).
    pub fn drops(&self) -> Option<RxDrops> {
        let s = self.device.statistics_v2().ok()?;
        Some(RxDrops {
            ring_full: s.rx_ring_full,
            fill_ring_empty: s.rx_fill_ring_empty_descs,
            other: s.rx_dropped.saturating_sub(s.rx_fill_ring_empty_descs),
        })
    }

    /// Whether the receive ring holds frames, without taking any: one
    /// relaxed load of the kernel's producer index, cheap enough to spin on
    /// (`runtime::busy_poll`). `receive` does the ordered read.
    pub fn has_frames(&self) -> bool {
        self.rx.available() > 0
    }

    /// Receives up to `BATCH` frames, calls `handle` on each, returns the
    /// frames to the fill ring. Returns how many were received.
    pub fn receive(&mut self, mut handle: impl FnMut(&[u8])) -> u32 {
        let mut descs = [XdpDesc::default(); BATCH as usize];
        let mut n = 0;
        {
            let mut reader = self.rx.receive(BATCH);
            while let Some(d) = reader.read() {
                descs[n] = d;
                n += 1;
            }
            reader.release();
        }
        for d in &descs[..n] {
            // In aligned mode the kernel may hand back an address inside the
            // chunk (headroom); the chunk is what the fill ring wants back.
            let chunk = d.addr - d.addr % FRAME_SIZE as u64;
            if let Some(bytes) = self.frame_bytes(d.addr, d.len) {
                handle(bytes);
            }
            self.fill_spare.push(chunk);
        }
        self.refill();
        n as u32
    }

    fn refill(&mut self) {
        if self.fill_spare.is_empty() {
            return;
        }
        let done = {
            let mut writer = self.device.fill(self.fill_spare.len() as u32);
            let done = writer.insert(self.fill_spare.iter().copied());
            writer.commit();
            done as usize
        };
        self.fill_spare.drain(..done);
        if self.device.needs_wakeup() {
            self.device.wake();
        }
    }

    /// Queues `frame` for transmission. Returns false when no buffer or ring
    /// slot is free (the caller counts it).
    pub fn send(&mut self, frame: &[u8]) -> bool {
        self.reap_completions();
        if frame.len() > FRAME_SIZE as usize {
            return false;
        }
        let Some(addr) = self.tx_free.pop() else {
            return false;
        };
        // SAFETY: `addr` is a transmit chunk we own (not in flight), in bounds.
        unsafe {
            let dst = self.area.ptr.as_ptr().add(addr as usize);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), dst, frame.len());
        }
        let desc = XdpDesc {
            addr,
            len: frame.len() as u32,
            options: 0,
        };
        let mut writer = self.tx.transmit(1);
        let sent = writer.insert_once(desc);
        writer.commit();
        if !sent {
            self.tx_free.push(addr);
            return false;
        }
        true
    }

    /// The kick that makes the kernel transmit what `send` queued, if
    /// anything waits; the caller runs it ([`Kick::run`]), with several
    /// workers after letting go of the runtime. Completions are reaped by
    /// the next `send`.
    pub fn kick(&mut self) -> Option<Kick> {
        self.reap_completions();
        // In copy mode the kernel transmits only when kicked, and its
        // need-wakeup flag stays set: kicking a ring with nothing the
        // kernel has not taken would cost a syscall per idle port per turn.
        let pending = self.tx.pending();
        if pending == 0 {
            return None;
        }
        Some(Kick {
            fd: self.kick_fd.clone(),
            times: pending.div_ceil(KERNEL_TX_BATCH).clamp(1, MAX_KICKS),
        })
    }

    fn reap_completions(&mut self) {
        let mut reader = self.device.complete(RING_SIZE);
        while let Some(addr) = reader.read() {
            self.tx_free.push(addr - addr % FRAME_SIZE as u64);
        }
        reader.release();
    }
}
