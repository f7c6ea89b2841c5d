//! Writing a worker's batch of flows into the kernel's flow map after the
//! worker let go of the runtime (issue 14: more than one core).
//!
//! With several workers, the `BPF_MAP_UPDATE_BATCH` of a turn (about a
//! sixth of a first packet's worker time) runs while another worker holds
//! the runtime. What keeps that correct is one lock, the *write order*,
//! which every write to the flow map takes: this writer's batches and the
//! runtime's own inserts and removals ([`super::Kernel::insert_flow`],
//! [`super::Kernel::insert_flows`], [`super::Kernel::remove_flow`]).
//!
//! - The flow table records a batch's flows when the batch is taken, under
//!   the runtime (`FlowTable::take_batch`), so an invalidation decided
//!   later finds them.
//! - The worker takes the write order *before* it lets go of the runtime,
//!   and holds it until the syscall returns. A removal (invalidation,
//!   expiry) runs under the runtime and waits for the order: it happens
//!   after the batch is in the kernel, never before it (a flow written
//!   after its invalidation would stay for good, untracked).
//! - Batches are written in the order they were taken: a flow decided
//!   later replaces one decided earlier, as with one worker.
//!
//! A removal waits at most one batch write (tens of µs); nothing that holds
//! the write order waits for the runtime, so the two locks cannot deadlock.

use super::batch;
use super::{maps, KernelError};
use aya::maps::MapError;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use vnet_common::{FlowActions, FlowKey, FlowValue};

/// The lock every write to the flow map takes (see the module's notes).
#[derive(Debug, Clone, Default)]
pub struct WriteOrder(Arc<Mutex<()>>);

impl WriteOrder {
    /// Waits for the batch being written, if any.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        // Poisoned only by a panic during a write, which stops vnetd.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A worker's handle on the flow map for its batches
/// ([`super::Kernel::flow_writer`]).
#[derive(Debug)]
pub struct FlowWriter {
    fd: Arc<OwnedFd>,
    order: WriteOrder,
    max_flows: u32,
    /// The values of the batch being written (kept for their capacity).
    values: Vec<FlowValue>,
}

/// A batch write that holds the write order: taken while the runtime is
/// still held ([`FlowWriter::begin`]), written once it is not.
pub struct PendingWrite<'a> {
    fd: &'a OwnedFd,
    values: &'a mut Vec<FlowValue>,
    max_flows: u32,
    _order: MutexGuard<'a, ()>,
}

impl FlowWriter {
    pub(super) fn new(fd: Arc<OwnedFd>, order: WriteOrder, max_flows: u32) -> FlowWriter {
        FlowWriter {
            fd,
            order,
            max_flows,
            values: Vec::new(),
        }
    }

    /// Takes the write order for the next batch (waiting for another
    /// worker's write, if one is under way): call it before letting go of
    /// the runtime that recorded the batch.
    pub fn begin(&mut self) -> PendingWrite<'_> {
        let FlowWriter {
            fd,
            order,
            max_flows,
            values,
        } = self;
        PendingWrite {
            fd,
            values,
            max_flows: *max_flows,
            _order: order.lock(),
        }
    }
}

impl PendingWrite<'_> {
    /// Writes the batch and lets go of the write order. Every flow is
    /// tried: a flow that fails is reported (its index and error) and the
    /// ones after it are still written.
    pub fn write(
        self,
        keys: &[FlowKey],
        actions: &[FlowActions],
        failed: &mut Vec<(usize, KernelError)>,
    ) {
        let n = keys.len().min(actions.len());
        let mut at = 0;
        while at < n {
            let (written, error) = write_flows(
                self.fd,
                self.values,
                &keys[at..n],
                &actions[at..n],
                self.max_flows,
            );
            at += written;
            if at >= n {
                break;
            }
            // Stopped at `at`: that flow failed (or, with no error, the
            // kernel wrote less than asked: the same).
            let error = error.unwrap_or_else(|| KernelError::Map {
                op: format!("inserting flow {:?} (in a batch)", keys[at]),
                map: maps::FLOWS,
                error: MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_batch",
                    io_error: std::io::Error::other("stopped without an error"),
                }),
            });
            failed.push((at, error));
            at += 1;
        }
    }
}

/// Writes `keys[i]` → `actions[i]` (counters zero) into the flow map `fd`
/// in one `BPF_MAP_UPDATE_BATCH`, one by one on a kernel without batch
/// updates. Stops at the first flow that fails: returns how many were
/// written and that one's error (a full table is
/// [`KernelError::FlowTableFull`]; the flows before it stay written).
pub(super) fn write_flows(
    fd: &OwnedFd,
    values: &mut Vec<FlowValue>,
    keys: &[FlowKey],
    actions: &[FlowActions],
    max_flows: u32,
) -> (usize, Option<KernelError>) {
    let n = keys.len().min(actions.len());
    values.clear();
    values.extend(actions[..n].iter().map(|a| FlowValue {
        actions: *a,
        ..FlowValue::default()
    }));
    let (mut written, mut error) = batch::update(fd.as_fd(), &keys[..n], &values[..]);
    if written == 0 && error.as_ref().is_some_and(batch::unsupported) {
        (written, error) = (0, None);
        for (key, value) in keys[..n].iter().zip(values.iter()) {
            if let Err(e) = batch::update_one(fd.as_fd(), key, value) {
                error = Some(e);
                break;
            }
            written += 1;
        }
    }
    let Some(error) = error else {
        return (written, None);
    };
    let error = match error.raw_os_error() {
        // A non-preallocated hash map refuses a new key at max_entries
        // with E2BIG (replacing a key still works).
        Some(libc::E2BIG) => KernelError::FlowTableFull { max_flows },
        _ => KernelError::Map {
            op: format!("inserting flow {:?} (in a batch)", keys[written.min(n - 1)]),
            map: maps::FLOWS,
            error: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_batch",
                io_error: error,
            }),
        },
    };
    (written, Some(error))
}
