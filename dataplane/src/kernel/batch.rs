//! Reading a BPF hash map in batches (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6):
//! one syscall per [`BATCH`] entries instead of one `get_next_key` and one
//! lookup per entry; and writing one in batches ([`update`],
//! `BPF_MAP_UPDATE_BATCH`): the worker installs a turn's new flows in one
//! syscall, which on this machine's mitigations costs about as much as the
//! map update itself. `vnetctl flows`, `stats` and the metrics read every
//! flow's counters this way, so a scrape of 100 000 flows costs ~200
//! syscalls, not 200 000, inside the worker's loop.
//!
//! aya 0.14 has no batch API; the command is issued directly. The attribute
//! is the `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h);
//! passing only its size is allowed (the kernel zero-fills the rest).

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries asked for per call.
pub const BATCH: usize = 512;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `visit` on every entry of the hash map `fd` (key type `K`, value
/// type `V`, both `repr(C)` plain data as the map was created with),
/// returns how many there were. Entries that change meanwhile may be seen
/// old or new; as with any walk of a hash map, callers reconcile.
///
/// An error that [`unsupported`] recognises means the kernel cannot batch
/// (before 5.6): the caller falls back to a walk.
pub fn for_each<K: Copy, V: Copy>(
    fd: BorrowedFd<'_>,
    mut visit: impl FnMut(&K, &V),
) -> io::Result<usize> {
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(BATCH);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(BATCH);
    keys.resize_with(BATCH, MaybeUninit::uninit);
    values.resize_with(BATCH, MaybeUninit::uninit);
    // The position token: a bucket index for hash maps; as large as a key
    // to be safe with any map type.
    let token_len = size_of::<K>().max(8);
    let mut token_in = vec![0u8; token_len];
    let mut token_out = vec![0u8; token_len];
    let mut first = true;
    let mut seen = 0;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                token_in.as_mut_ptr() as u64
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of BATCH keys and values and two
        // tokens of `token_len` bytes, all alive for the call; the kernel
        // writes at most `count` entries of the map's key and value sizes,
        // which are K's and V's.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let error = (r < 0).then(io::Error::last_os_error);
        // ENOENT: the walk is over; `count` still says how many entries
        // this last call filled.
        let done = match &error {
            None => false,
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Some(e) => return Err(io::Error::new(e.kind(), e.to_string())),
        };
        let n = (attr.count as usize).min(BATCH);
        for i in 0..n {
            // SAFETY: the kernel filled the first `n` entries.
            let (k, v) = unsafe { (keys[i].assume_init_ref(), values[i].assume_init_ref()) };
            visit(k, v);
        }
        seen += n;
        if done {
            return Ok(seen);
        }
        std::mem::swap(&mut token_in, &mut token_out);
        first = false;
    }
}

/// Writes `keys[i]` → `values[i]` into the map `fd` in one syscall
/// (`BPF_MAP_UPDATE_BATCH`, Linux 5.6; flags `BPF_ANY`). The kernel writes
/// the entries in order and stops at the first that fails, so the answer
/// is how many were written, and the error of the next one if it failed
/// (its index is that count). An error that [`unsupported`] recognises with
/// nothing written means the kernel cannot batch: the caller writes the
/// entries one by one.
///
/// Panics if `keys` and `values` differ in length (a caller's bug).
pub fn update<K: Copy, V: Copy>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> (usize, Option<io::Error>) {
    assert_eq!(keys.len(), values.len(), "one value per key");
    if keys.is_empty() {
        return (0, None);
    }
    let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` points at `count` keys and values of the map's key and
    // value sizes (K's and V's), alive and unchanged for the call; the
    // kernel only reads them and writes `attr.count`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    // On success `count` is unchanged (all written); on an error it says
    // how many were written before it.
    let written = (attr.count as usize).min(keys.len());
    if r < 0 {
        (written, Some(io::Error::last_os_error()))
    } else {
        (keys.len(), None)
    }
}

/// The kernel's internal ENOTSUPP, which reaches userspace for map types
/// without batch operations.
const ENOTSUPP: i32 = 524;

/// Whether `e` says the kernel has no batch operations for this map.
pub fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// `union bpf_attr`'s member for the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Writes `key` → `value` into the map `fd` (`BPF_MAP_UPDATE_ELEM`, flags
/// `BPF_ANY`): what a kernel without [`update`] is written with.
pub fn update_one<K: Copy, V: Copy>(fd: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: value as *const V as u64,
        ..ElemAttr::default()
    };
    // SAFETY: `attr` points at one key and one value of the map's key and
    // value sizes (K's and V's), alive for the call; the kernel only reads
    // them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &mut attr as *mut ElemAttr,
            size_of::<ElemAttr>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
