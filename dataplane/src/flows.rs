//! The userspace side of the flow table: which flows are installed, the tags
//! each one depends on (tag → flows index), and idle expiry.
//!
//! The kernel map holds actions and counters; this table holds what the
//! kernel does not need. Both are changed only through [`FlowTable`], so a
//! flow is in the tag index exactly when it is in the kernel.
//!
//! Each flow is charged to the device (tenant) of its ingress port, and a
//! device may hold at most `per_device` flows: by default a quarter of the
//! kernel table ([`default_per_device`]: 262 144 of vnetd's 1 048 576), so a
//! tenant opening flows as fast as it can fills its share, not the table,
//! and the others' new flows are still installed. Over its share a packet
//! is forwarded as decided but its flow is not installed
//! ([`InstallError::DeviceLimit`], counted as `device_flow_limit`): the next
//! packet of that flow comes to userspace again.
//!
//! The worker queues the flows of one turn ([`FlowTable::queue_for`]) and
//! writes them with one batch ([`FlowTable::flush`], `BPF_MAP_UPDATE_BATCH`
//! in the kernel's backend): on these machines a syscall's entry and exit
//! cost about as much as the map update. A queued flow is neither in the
//! kernel nor in this table until the flush; whatever removes flows
//! (invalidation, expiry, clearing) writes the queue first, so a flow
//! decided before an invalidation cannot be installed after it.
use crate::hash::HashMap;
use crate::sim::{Flow, Tag};
use records::{Record, Records};

mod records;
use vnet_common::{FlowActions, FlowKey, DEFAULT_MAX_FLOWS};

/// Smallest per-device share [`default_per_device`] gives (or the whole
/// table when it is smaller).
pub const MIN_PER_DEVICE: usize = 4096;

/// The default share of one device in a kernel table of `capacity` flows:
/// a quarter, at least [`MIN_PER_DEVICE`], at most the whole table.
pub fn default_per_device(capacity: usize) -> usize {
    crate::sim::share::tenant_share(capacity, MIN_PER_DEVICE)
}

/// Where installed flows live: the kernel's FLOWS map, or a fake in tests.
pub trait FlowBackend {
    fn insert(&mut self, key: &FlowKey, actions: &FlowActions) -> Result<(), InstallError>;
    /// Writes `keys[i]` with `actions[i]` in order and stops at the first
    /// that fails: returns how many were written and that one's error (its
    /// index is the count). The default writes them one by one.
    fn insert_batch(
        &mut self,
        keys: &[FlowKey],
        actions: &[FlowActions],
    ) -> (usize, Option<InstallError>) {
        for (i, (key, a)) in keys.iter().zip(actions).enumerate() {
            if let Err(e) = self.insert(key, a) {
                return (i, Some(e));
            }
        }
        (keys.len().min(actions.len()), None)
    }
    fn remove(&mut self, key: &FlowKey);
    /// Monotonic time (ns) of the flow's last hit, 0 if never hit.
    fn last_used_ns(&self, key: &FlowKey) -> Option<u64>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error("the flow table is full")]
    Full,
    #[error("the ingress device holds its share of the flow table")]
    DeviceLimit,
    #[error("installing the flow failed: {0}")]
    Other(String),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowCounters {
    pub installed: u64,
    pub invalidated: u64,
    pub expired: u64,
    pub install_failed: u64,
    pub table_full: u64,
    /// Flows not installed because their device held its share.
    pub device_limit: u64,
}

impl FlowCounters {
    /// Counts a flow the backend refused, here and in `out`.
    fn refused(&mut self, out: &mut Flushed, e: &InstallError) {
        self.install_failed += 1;
        if *e == InstallError::Full {
            self.table_full += 1;
            out.full += 1;
        } else {
            out.other += 1;
            out.first_other.get_or_insert_with(|| e.clone());
        }
    }
}

/// Flows queued before [`FlowTable::queue_for`] writes them itself: a
/// turn of the worker queues at most one per frame it took (a few hundred),
/// so this only bounds a caller that never flushes.
pub const MAX_QUEUED: usize = 1024;

/// What [`FlowTable::flush`] wrote, and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flushed {
    pub installed: usize,
    /// Refused by a full kernel table ([`InstallError::Full`]).
    pub full: usize,
    /// Failed otherwise; the first such error.
    pub other: usize,
    pub first_other: Option<InstallError>,
}

impl Flushed {
    fn merge(&mut self, later: Flushed) {
        self.installed += later.installed;
        self.full += later.full;
        self.other += later.other;
        if self.first_other.is_none() {
            self.first_other = later.first_other;
        }
    }
}

/// The flows of a turn taken out of the table to be written by the caller
/// ([`FlowTable::take_batch`]): keys and actions in arrays of their own,
/// as the batch write wants them. Kept with its capacity from turn to
/// turn.
#[derive(Debug, Default)]
pub struct Batch {
    pub keys: Vec<FlowKey>,
    pub actions: Vec<FlowActions>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A flow decided and not yet written.
#[derive(Debug)]
struct Queued {
    device: Option<Tag>,
    flow: Flow,
    now_ns: u64,
}

/// The flows of a turn, as the batch write wants them: keys and actions in
/// arrays of their own. Kept with their capacity from flush to flush.
#[derive(Debug, Default)]
struct Queue {
    keys: Vec<FlowKey>,
    actions: Vec<FlowActions>,
    queued: Vec<Queued>,
    /// New flows (not replacements of the device's own) queued per device,
    /// charged to its share as if installed.
    per_device: HashMap<Tag, usize>,
}

#[derive(Debug)]
pub struct FlowTable {
    /// The flows and the tag → flows index ([`records`]).
    records: Records,
    /// Flows charged to each device (no zero counts kept).
    per_device_len: HashMap<Tag, usize>,
    per_device: usize,
    pub counters: FlowCounters,
    queue: Queue,
    /// What flushes the caller did not ask for (a full queue, a removal)
    /// wrote, reported by its next [`FlowTable::flush`].
    unreported: Flushed,
}

impl Default for FlowTable {
    /// A table for vnetd's default kernel capacity.
    fn default() -> Self {
        FlowTable::with_device_limit(default_per_device(DEFAULT_MAX_FLOWS as usize))
    }
}

impl FlowTable {
    /// A table in which one device may hold `per_device` flows.
    pub fn with_device_limit(per_device: usize) -> FlowTable {
        FlowTable {
            records: Records::default(),
            per_device_len: HashMap::default(),
            per_device,
            counters: FlowCounters::default(),
            queue: Queue::default(),
            unreported: Flushed::default(),
        }
    }

    /// How many flows are queued, not yet written.
    pub fn queued(&self) -> usize {
        self.queue.keys.len()
    }

    /// Queues the flow for `key`, charged to `device` (the device of its
    /// ingress port, or none), for the next [`FlowTable::flush`]. The
    /// device's share is checked now, counting its queued new flows: a new
    /// flow of a device at its share is refused here, as by
    /// [`FlowTable::install_for`]. A full queue ([`MAX_QUEUED`]) is written
    /// at once.
    pub fn queue_for(
        &mut self,
        backend: &mut impl FlowBackend,
        device: Option<Tag>,
        key: FlowKey,
        actions: &FlowActions,
        flow: Flow,
        now_ns: u64,
    ) -> Result<(), InstallError> {
        if let Some(d) = device {
            let replacing = self.records.get(&key).is_some_and(|r| r.device == device);
            if !replacing {
                let queued = self.queue.per_device.get(&d).copied().unwrap_or(0);
                if self.device_len(d) + queued >= self.per_device {
                    self.counters.device_limit += 1;
                    return Err(InstallError::DeviceLimit);
                }
                *self.queue.per_device.entry(d).or_default() += 1;
            }
        }
        self.queue.keys.push(key);
        self.queue.actions.push(*actions);
        self.queue.queued.push(Queued {
            device,
            flow,
            now_ns,
        });
        if self.queue.keys.len() >= MAX_QUEUED {
            self.write_queue(backend);
        }
        Ok(())
    }

    /// Writes the queued flows in as few batches as the backend allows and
    /// records those written; returns what this and any flush since the
    /// last call wrote and refused. When the backend stops at a flow that
    /// fails, that flow is counted (a full table as `table_full`) and the
    /// rest are written after it: one refusal loses one flow, and the flows
    /// already installed stay as they were.
    pub fn flush(&mut self, backend: &mut impl FlowBackend) -> Flushed {
        self.write_queue(backend);
        std::mem::take(&mut self.unreported)
    }

    /// [`FlowTable::flush`], its report kept for the next one.
    fn write_queue(&mut self, backend: &mut impl FlowBackend) {
        if self.queue.keys.is_empty() {
            return;
        }
        let mut q = std::mem::take(&mut self.queue);
        let mut out = Flushed::default();
        let len = q.keys.len();
        let mut queued = q.queued.drain(..);
        let mut at = 0;
        while at < len {
            let (n, error) = backend.insert_batch(&q.keys[at..], &q.actions[at..]);
            let n = n.min(len - at);
            for key in &q.keys[at..at + n] {
                let Some(f) = queued.next() else { break };
                self.record_installed(
                    *key,
                    f.device,
                    f.flow.tags,
                    f.flow.idle_timeout_ns,
                    f.now_ns,
                );
                out.installed += 1;
            }
            at += n;
            if at == len {
                break;
            }
            // The backend stopped at `at`: that flow failed (or, with no
            // error, the backend wrote less than asked: the same).
            let e = error.unwrap_or_else(|| {
                InstallError::Other("the backend stopped without an error".into())
            });
            queued.next();
            self.counters.refused(&mut out, &e);
            at += 1;
        }
        drop(queued);
        q.keys.clear();
        q.actions.clear();
        q.per_device.clear();
        self.queue = q;
        self.unreported.merge(out);
    }

    /// Takes the queued flows out as `batch`, for the caller to write
    /// after it let go of this table (several workers: the write runs
    /// while another worker holds the runtime, see
    /// `kernel::flow_writer`). They are recorded now, as if installed, so
    /// that whatever removes flows from here on finds them; the caller
    /// reports those it could not write ([`FlowTable::not_written`]).
    pub fn take_batch(&mut self, batch: &mut Batch) {
        batch.keys.clear();
        batch.actions.clear();
        std::mem::swap(&mut self.queue.keys, &mut batch.keys);
        std::mem::swap(&mut self.queue.actions, &mut batch.actions);
        let mut queued = std::mem::take(&mut self.queue.queued);
        for (key, f) in batch.keys.iter().zip(queued.drain(..)) {
            self.record_installed(
                *key,
                f.device,
                f.flow.tags,
                f.flow.idle_timeout_ns,
                f.now_ns,
            );
        }
        self.queue.queued = queued;
        self.queue.per_device.clear();
    }

    /// The flows of a taken batch that were not written (`failed`: index
    /// in the batch, error): each is removed, from here and from the
    /// kernel (a failed replacement would leave the old flow there under
    /// the new one's tags), and counted; the next packet of such a flow
    /// is decided again. Returns the count, as [`FlowTable::flush`] does.
    pub fn not_written(
        &mut self,
        backend: &mut impl FlowBackend,
        batch: &Batch,
        failed: &[(usize, InstallError)],
    ) -> Flushed {
        let mut out = Flushed::default();
        for (at, e) in failed {
            let Some(key) = batch.keys.get(*at) else {
                continue;
            };
            backend.remove(key);
            self.forget(key);
            self.counters.installed = self.counters.installed.saturating_sub(1);
            self.counters.refused(&mut out, e);
        }
        out.installed = batch.keys.len().saturating_sub(failed.len());
        out
    }

    /// How many flows one device may hold.
    pub fn per_device(&self) -> usize {
        self.per_device
    }

    /// How many flows are charged to `device`.
    pub fn device_len(&self, device: Tag) -> usize {
        self.per_device_len.get(&device).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.len() == 0
    }

    pub fn contains(&self, key: &FlowKey) -> bool {
        self.records.get(key).is_some()
    }

    pub fn keys(&self) -> impl Iterator<Item = &FlowKey> {
        self.records.keys()
    }

    /// The tags and install time (ns) of the flow `key`.
    pub fn record(&self, key: &FlowKey) -> Option<(&[Tag], u64)> {
        self.records
            .get(key)
            .map(|r| (r.tags.as_slice(), r.installed_ns))
    }

    /// Whether any installed flow depends on `tag`.
    pub fn uses(&self, tag: Tag) -> bool {
        self.records.uses(tag)
    }

    /// Installs (or replaces) the flow for `key`, charged to no device (for
    /// callers with a single tenant: benchmarks, tests of the table).
    /// `actions` are the flow's actions with the output interface resolved.
    pub fn install(
        &mut self,
        backend: &mut impl FlowBackend,
        key: FlowKey,
        actions: &FlowActions,
        flow: &Flow,
        now_ns: u64,
    ) -> Result<(), InstallError> {
        self.charge_and_install(backend, None, key, actions, flow, now_ns)
    }

    /// Installs (or replaces) the flow for `key`, charged to `device`, the
    /// device of its ingress port. A new flow of a device that holds its
    /// share is refused (nothing changes, in the kernel or here).
    pub fn install_for(
        &mut self,
        backend: &mut impl FlowBackend,
        device: Tag,
        key: FlowKey,
        actions: &FlowActions,
        flow: &Flow,
        now_ns: u64,
    ) -> Result<(), InstallError> {
        self.charge_and_install(backend, Some(device), key, actions, flow, now_ns)
    }

    fn charge_and_install(
        &mut self,
        backend: &mut impl FlowBackend,
        device: Option<Tag>,
        key: FlowKey,
        actions: &FlowActions,
        flow: &Flow,
        now_ns: u64,
    ) -> Result<(), InstallError> {
        // Queued flows first: they were decided before this one.
        self.write_queue(backend);
        if let Some(d) = device {
            // Replacing one of the device's own flows needs no room.
            let replacing = self.records.get(&key).is_some_and(|r| r.device == device);
            if !replacing && self.device_len(d) >= self.per_device {
                self.counters.device_limit += 1;
                return Err(InstallError::DeviceLimit);
            }
        }
        if let Err(e) = backend.insert(&key, actions) {
            self.counters.install_failed += 1;
            if e == InstallError::Full {
                self.counters.table_full += 1;
            }
            return Err(e);
        }
        self.record_installed(key, device, flow.tags.clone(), flow.idle_timeout_ns, now_ns);
        Ok(())
    }

    /// Records a flow just written to the kernel.
    fn record_installed(
        &mut self,
        key: FlowKey,
        device: Option<Tag>,
        tags: Vec<Tag>,
        idle_timeout_ns: u64,
        now_ns: u64,
    ) {
        self.adopt(key, device, tags, idle_timeout_ns, now_ns);
        self.counters.installed += 1;
    }

    /// Records a flow that is already in the kernel (installed by an
    /// earlier vnetd, see `runtime/adoption.rs`), charged to `device`, as
    /// if installed now. Nothing is written to the kernel.
    pub fn adopt(
        &mut self,
        key: FlowKey,
        device: Option<Tag>,
        tags: Vec<Tag>,
        idle_timeout_ns: u64,
        now_ns: u64,
    ) {
        self.forget(&key);
        if let Some(d) = device {
            *self.per_device_len.entry(d).or_default() += 1;
        }
        self.records.insert(Record {
            key,
            tags,
            device,
            idle_timeout_ns,
            installed_ns: now_ns,
            seen_ns: now_ns,
        });
    }

    /// Removes every flow tagged with `tag`; returns how many.
    pub fn invalidate(&mut self, backend: &mut impl FlowBackend, tag: Tag) -> usize {
        self.write_queue(backend);
        let keys = self.records.take_tag(tag);
        for key in &keys {
            backend.remove(key);
            self.forget(key);
        }
        self.counters.invalidated += keys.len() as u64;
        keys.len()
    }

    /// Removes every flow.
    pub fn clear(&mut self, backend: &mut impl FlowBackend) {
        self.write_queue(backend);
        for key in self.records.keys() {
            backend.remove(key);
        }
        self.records.clear();
        self.per_device_len.clear();
    }

    /// Removes flows idle for longer than their timeout. A flow never hit
    /// counts as used when it was installed.
    ///
    /// The kernel is asked only about flows whose last known use is older
    /// than their timeout, so each flow costs at most one map lookup per
    /// idle period, however often the sweep runs and however many flows
    /// there are.
    pub fn expire(&mut self, backend: &mut impl FlowBackend, now_ns: u64) -> usize {
        self.write_queue(backend);
        let mut idle = Vec::new();
        for r in self.records.iter_mut() {
            if now_ns.saturating_sub(r.seen_ns) <= r.idle_timeout_ns {
                continue;
            }
            r.seen_ns = r.seen_ns.max(backend.last_used_ns(&r.key).unwrap_or(0));
            if now_ns.saturating_sub(r.seen_ns) > r.idle_timeout_ns {
                idle.push(r.key);
            }
        }
        for key in &idle {
            backend.remove(key);
            self.forget(key);
        }
        self.counters.expired += idle.len() as u64;
        idle.len()
    }

    /// Drops `key` from the records, the tag index and its device's count
    /// (not from the kernel).
    fn forget(&mut self, key: &FlowKey) {
        let Some(Record {
            device: Some(d), ..
        }) = self.records.remove(key)
        else {
            return;
        };
        if let Some(held) = self.per_device_len.get_mut(&d) {
            *held -= 1;
            if *held == 0 {
                self.per_device_len.remove(&d);
            }
        }
    }
}

/// An in-memory backend for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    pub flows: HashMap<FlowKey, (FlowActions, u64)>,
    pub capacity: Option<usize>,
}

impl FlowBackend for MemoryBackend {
    fn insert(&mut self, key: &FlowKey, actions: &FlowActions) -> Result<(), InstallError> {
        if let Some(cap) = self.capacity {
            if self.flows.len() >= cap && !self.flows.contains_key(key) {
                return Err(InstallError::Full);
            }
        }
        self.flows.insert(*key, (*actions, 0));
        Ok(())
    }
    fn remove(&mut self, key: &FlowKey) {
        self.flows.remove(key);
    }
    fn last_used_ns(&self, key: &FlowKey) -> Option<u64> {
        self.flows.get(key).map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_common::act;

    fn key(n: u32) -> FlowKey {
        FlowKey {
            ifindex: n,
            ..FlowKey::default()
        }
    }

    fn flow(tags: &[u64], idle: u64) -> Flow {
        Flow {
            actions: FlowActions {
                flags: act::OUTPUT,
                ..Default::default()
            },
            output: None,
            tags: tags.iter().map(|t| Tag(*t)).collect(),
            idle_timeout_ns: idle,
        }
    }

    #[test]
    fn invalidation_removes_exactly_the_tagged_flows() {
        let (mut t, mut k) = (FlowTable::default(), MemoryBackend::default());
        let a = FlowActions::default();
        t.install(&mut k, key(1), &a, &flow(&[1, 2], 100), 0)
            .unwrap();
        t.install(&mut k, key(2), &a, &flow(&[2, 3], 100), 0)
            .unwrap();
        t.install(&mut k, key(3), &a, &flow(&[3], 100), 0).unwrap();
        assert_eq!(t.invalidate(&mut k, Tag(2)), 2);
        assert!(!k.flows.contains_key(&key(1)) && !k.flows.contains_key(&key(2)));
        assert!(k.flows.contains_key(&key(3)) && t.contains(&key(3)));
        assert!(!t.uses(Tag(1)), "index entries of removed flows are gone");
        assert!(t.uses(Tag(3)));
        assert_eq!(t.invalidate(&mut k, Tag(2)), 0);
    }

    #[test]
    fn reinstall_replaces_tags() {
        let (mut t, mut k) = (FlowTable::default(), MemoryBackend::default());
        let a = FlowActions::default();
        t.install(&mut k, key(1), &a, &flow(&[1], 100), 0).unwrap();
        t.install(&mut k, key(1), &a, &flow(&[2], 100), 0).unwrap();
        assert!(!t.uses(Tag(1)));
        assert_eq!(t.invalidate(&mut k, Tag(2)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn idle_flows_expire_and_used_ones_stay() {
        let (mut t, mut k) = (FlowTable::default(), MemoryBackend::default());
        let a = FlowActions::default();
        t.install(&mut k, key(1), &a, &flow(&[1], 10), 0).unwrap();
        t.install(&mut k, key(2), &a, &flow(&[1], 10), 0).unwrap();
        k.flows.get_mut(&key(2)).unwrap().1 = 50; // hit by the kernel at 50
        assert_eq!(t.expire(&mut k, 55), 1);
        assert!(t.contains(&key(2)) && !t.contains(&key(1)));
        assert_eq!(t.counters.expired, 1);
    }

    /// Counts kernel lookups.
    #[derive(Default)]
    struct Counting {
        inner: MemoryBackend,
        lookups: std::cell::Cell<usize>,
    }

    impl FlowBackend for Counting {
        fn insert(&mut self, key: &FlowKey, actions: &FlowActions) -> Result<(), InstallError> {
            self.inner.insert(key, actions)
        }
        fn remove(&mut self, key: &FlowKey) {
            self.inner.remove(key)
        }
        fn last_used_ns(&self, key: &FlowKey) -> Option<u64> {
            self.lookups.set(self.lookups.get() + 1);
            self.inner.last_used_ns(key)
        }
    }

    #[test]
    fn sweeps_ask_the_kernel_once_per_idle_period_per_flow() {
        let (mut t, mut k) = (FlowTable::default(), Counting::default());
        let a = FlowActions::default();
        for n in 0..100 {
            t.install(&mut k, key(n), &a, &flow(&[1], 10), 0).unwrap();
        }
        for now in 1..=10 {
            t.expire(&mut k, now);
        }
        assert_eq!(
            k.lookups.get(),
            0,
            "recently installed flows are not looked up"
        );
        for n in 0..100 {
            k.inner.flows.get_mut(&key(n)).unwrap().1 = 10; // all hit at 10
        }
        t.expire(&mut k, 11);
        assert_eq!(k.lookups.get(), 100, "each flow once when it might be idle");
        for now in 12..=20 {
            t.expire(&mut k, now);
        }
        assert_eq!(
            k.lookups.get(),
            100,
            "then not again until its new idle period ends"
        );
        assert_eq!(t.expire(&mut k, 21), 100, "never hit again: all expire");
    }

    #[test]
    fn full_backend_is_counted_and_leaves_old_flows() {
        let mut k = MemoryBackend {
            capacity: Some(1),
            ..Default::default()
        };
        let mut t = FlowTable::default();
        let a = FlowActions::default();
        t.install(&mut k, key(1), &a, &flow(&[1], 10), 0).unwrap();
        assert_eq!(
            t.install(&mut k, key(2), &a, &flow(&[1], 10), 0),
            Err(InstallError::Full)
        );
        assert_eq!(t.counters.table_full, 1);
        assert!(t.contains(&key(1)) && !t.contains(&key(2)));
    }

    #[test]
    fn a_device_at_its_share_installs_nothing_new_and_the_others_still_do() {
        let (mut t, mut k) = (FlowTable::with_device_limit(2), MemoryBackend::default());
        let (a, b) = (Tag(100), Tag(200));
        let acts = FlowActions::default();
        let f = flow(&[1], 10);
        t.install_for(&mut k, a, key(1), &acts, &f, 0).unwrap();
        t.install_for(&mut k, a, key(2), &acts, &f, 0).unwrap();
        assert_eq!(
            t.install_for(&mut k, a, key(3), &acts, &f, 0),
            Err(InstallError::DeviceLimit)
        );
        assert!(!k.flows.contains_key(&key(3)), "nothing reached the kernel");
        assert_eq!(t.counters.device_limit, 1);
        // Its own flows can still be replaced (a re-decided flow).
        t.install_for(&mut k, a, key(2), &acts, &flow(&[2], 10), 1)
            .unwrap();
        // Another device is not affected.
        t.install_for(&mut k, b, key(3), &acts, &f, 1).unwrap();
        t.install_for(&mut k, b, key(4), &acts, &f, 1).unwrap();
        assert_eq!((t.device_len(a), t.device_len(b)), (2, 2));
        // Flows going (invalidated, expired) make room again.
        assert_eq!(t.invalidate(&mut k, Tag(2)), 1);
        assert_eq!(t.device_len(a), 1);
        t.install_for(&mut k, a, key(5), &acts, &f, 2).unwrap();
        k.flows.get_mut(&key(5)).unwrap().1 = 20;
        for n in [3, 4] {
            k.flows.get_mut(&key(n)).unwrap().1 = 20;
        }
        assert_eq!(t.expire(&mut k, 25), 1, "key(1) was idle");
        assert_eq!(t.device_len(a), 1);
        t.clear(&mut k);
        assert_eq!((t.device_len(a), t.device_len(b)), (0, 0));
    }

    /// Writes batches as the kernel does (in order, stopping at the first
    /// failure), refusing the keys in `refuse` with an error other than a
    /// full table, and counts the batch calls.
    #[derive(Default)]
    struct Batching {
        inner: MemoryBackend,
        refuse: Vec<FlowKey>,
        calls: usize,
        /// Flows written one by one (direct installs).
        singles: usize,
    }

    impl FlowBackend for Batching {
        fn insert(&mut self, key: &FlowKey, actions: &FlowActions) -> Result<(), InstallError> {
            self.singles += 1;
            self.inner.insert(key, actions)
        }
        fn insert_batch(
            &mut self,
            keys: &[FlowKey],
            actions: &[FlowActions],
        ) -> (usize, Option<InstallError>) {
            self.calls += 1;
            for (i, (k, a)) in keys.iter().zip(actions).enumerate() {
                if self.refuse.contains(k) {
                    return (i, Some(InstallError::Other("EFAULT".into())));
                }
                if let Err(e) = self.inner.insert(k, a) {
                    return (i, Some(e));
                }
            }
            (keys.len(), None)
        }
        fn remove(&mut self, key: &FlowKey) {
            self.inner.remove(key)
        }
        fn last_used_ns(&self, key: &FlowKey) -> Option<u64> {
            self.inner.last_used_ns(key)
        }
    }

    /// The table's flows are exactly the backend's.
    fn same_flows(t: &FlowTable, k: &MemoryBackend) {
        let mut ours: Vec<_> = t.keys().copied().collect();
        let mut theirs: Vec<_> = k.flows.keys().copied().collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "the table and the kernel disagree");
    }

    #[test]
    fn a_turn_of_flows_is_written_in_one_batch() {
        let (mut t, mut k) = (FlowTable::default(), Batching::default());
        let a = FlowActions::default();
        for n in 0..100 {
            t.queue_for(&mut k, Some(Tag(9)), key(n), &a, flow(&[n as u64], 10), 5)
                .unwrap();
        }
        assert_eq!((t.queued(), t.len(), k.inner.flows.len()), (100, 0, 0));
        let done = t.flush(&mut k);
        assert_eq!(
            done,
            Flushed {
                installed: 100,
                ..Flushed::default()
            }
        );
        assert_eq!((k.calls, k.singles), (1, 0), "one batch");
        assert_eq!((t.queued(), t.len(), t.device_len(Tag(9))), (0, 100, 100));
        assert!(t.uses(Tag(42)) && t.record(&key(42)) == Some((&[Tag(42)][..], 5)));
        same_flows(&t, &k.inner);
        assert_eq!(t.flush(&mut k), Flushed::default(), "nothing left");
        assert_eq!(k.calls, 1, "an empty queue makes no call");
    }

    #[test]
    fn a_batch_stopped_by_an_error_loses_that_flow_only() {
        let mut k = Batching {
            refuse: vec![key(3), key(7)],
            ..Batching::default()
        };
        let mut t = FlowTable::default();
        let a = FlowActions::default();
        for n in 0..10 {
            t.queue_for(&mut k, None, key(n), &a, flow(&[1], 10), 0)
                .unwrap();
        }
        let done = t.flush(&mut k);
        assert_eq!((done.installed, done.full, done.other), (8, 0, 2));
        assert_eq!(done.first_other, Some(InstallError::Other("EFAULT".into())));
        assert_eq!(k.calls, 3, "written again after each refusal");
        assert!(!t.contains(&key(3)) && !t.contains(&key(7)) && t.contains(&key(9)));
        assert_eq!(t.counters.install_failed, 2);
        assert_eq!(t.counters.installed, 8);
        same_flows(&t, &k.inner);
    }

    #[test]
    fn a_full_table_in_a_batch_is_counted_and_old_flows_stay() {
        let mut k = Batching::default();
        k.inner.capacity = Some(3);
        let mut t = FlowTable::default();
        let old = FlowActions {
            out_ifindex: 1,
            ..FlowActions::default()
        };
        let new = FlowActions {
            out_ifindex: 2,
            ..FlowActions::default()
        };
        for n in 0..2 {
            t.install(&mut k, key(n), &old, &flow(&[1], 10), 0).unwrap();
        }
        // Three new flows for one free slot, then a replacement of an old
        // one: written after the refusals.
        for n in [10, 11, 12, 0] {
            t.queue_for(&mut k, None, key(n), &new, flow(&[2], 10), 1)
                .unwrap();
        }
        let done = t.flush(&mut k);
        assert_eq!((done.installed, done.full, done.other), (2, 2, 0));
        assert_eq!(t.counters.table_full, 2);
        assert!(t.contains(&key(10)) && !t.contains(&key(11)) && !t.contains(&key(12)));
        assert_eq!(k.inner.flows[&key(1)].0, old, "an old flow untouched");
        assert_eq!(k.inner.flows[&key(0)].0, new, "the replacement written");
        assert_eq!(t.record(&key(0)), Some((&[Tag(2)][..], 1)));
        same_flows(&t, &k.inner);
    }

    #[test]
    fn queued_flows_are_written_before_whatever_removes_flows() {
        let (mut t, mut k) = (FlowTable::default(), MemoryBackend::default());
        let a = FlowActions::default();
        t.queue_for(&mut k, None, key(1), &a, flow(&[7], 10), 0)
            .unwrap();
        t.queue_for(&mut k, None, key(2), &a, flow(&[8], 10), 0)
            .unwrap();
        // Decided before the invalidation of tag 7: it must not survive it.
        assert_eq!(t.invalidate(&mut k, Tag(7)), 1);
        assert!(!k.flows.contains_key(&key(1)) && k.flows.contains_key(&key(2)));
        same_flows(&t, &k);
        assert_eq!(t.flush(&mut k).installed, 2, "reported by the next flush");
        t.queue_for(&mut k, None, key(3), &a, flow(&[9], 10), 0)
            .unwrap();
        t.clear(&mut k);
        assert!(k.flows.is_empty() && t.is_empty() && t.queued() == 0);
        // A direct install after a queued one of the same key wins.
        t.queue_for(&mut k, None, key(4), &a, flow(&[1], 10), 0)
            .unwrap();
        let later = FlowActions {
            out_ifindex: 4,
            ..FlowActions::default()
        };
        t.install(&mut k, key(4), &later, &flow(&[2], 10), 1)
            .unwrap();
        assert_eq!(k.flows[&key(4)].0, later);
        assert_eq!(t.record(&key(4)), Some((&[Tag(2)][..], 1)));
    }

    #[test]
    fn queued_flows_count_against_the_device_share_and_the_queue_is_bounded() {
        let (mut t, mut k) = (FlowTable::with_device_limit(3), Batching::default());
        let (d, e) = (Tag(100), Tag(200));
        let a = FlowActions::default();
        t.install_for(&mut k, d, key(1), &a, &flow(&[1], 10), 0)
            .unwrap();
        for n in [2, 3] {
            t.queue_for(&mut k, Some(d), key(n), &a, flow(&[1], 10), 0)
                .unwrap();
        }
        assert_eq!(
            t.queue_for(&mut k, Some(d), key(4), &a, flow(&[1], 10), 0),
            Err(InstallError::DeviceLimit)
        );
        // Its own installed flow can be re-decided; another device is not
        // affected.
        t.queue_for(&mut k, Some(d), key(1), &a, flow(&[2], 10), 0)
            .unwrap();
        t.queue_for(&mut k, Some(e), key(5), &a, flow(&[1], 10), 0)
            .unwrap();
        assert_eq!(t.flush(&mut k).installed, 4);
        assert_eq!((t.device_len(d), t.device_len(e)), (3, 1));
        assert_eq!(t.counters.device_limit, 1);
        let mut big = FlowTable::default();
        for n in 0..MAX_QUEUED as u32 + 10 {
            big.queue_for(&mut k, None, key(1000 + n), &a, flow(&[1], 10), 0)
                .unwrap();
            assert!(big.queued() < MAX_QUEUED, "the queue is written when full");
        }
        assert_eq!(big.len(), MAX_QUEUED);
        assert_eq!(big.flush(&mut k).installed, MAX_QUEUED + 10);
    }

    #[test]
    fn a_taken_batch_is_recorded_before_it_is_written_and_its_failures_go() {
        let (mut t, mut k) = (FlowTable::with_device_limit(100), MemoryBackend::default());
        let (a, d) = (FlowActions::default(), Tag(100));
        let mut batch = Batch::default();
        for n in 0..4 {
            t.queue_for(&mut k, Some(d), key(n), &a, flow(&[n as u64], 10), 3)
                .unwrap();
        }
        t.take_batch(&mut batch);
        assert_eq!(
            (t.queued(), batch.keys.len(), batch.actions.len()),
            (0, 4, 4)
        );
        assert!(k.flows.is_empty(), "taking writes nothing");
        assert_eq!((t.len(), t.device_len(d)), (4, 4), "recorded at once");
        // A removal decided before the write finds the flows (the write
        // order then keeps its kernel removal after the write).
        assert_eq!(t.invalidate(&mut k, Tag(0)), 1);
        for (key, actions) in batch.keys.iter().zip(&batch.actions) {
            k.insert(key, actions).unwrap();
        }
        k.remove(&key(0));
        // Key 2 was refused; key 3 failed as the replacement of an older
        // flow, which must not stay under the new flow's tags.
        k.flows.remove(&key(2));
        let failed = [
            (2, InstallError::Full),
            (3, InstallError::Other("EFAULT".into())),
        ];
        let done = t.not_written(&mut k, &batch, &failed);
        assert_eq!((done.installed, done.full, done.other), (2, 1, 1));
        assert_eq!(done.first_other, Some(InstallError::Other("EFAULT".into())));
        assert!(!k.flows.contains_key(&key(3)), "the old flow goes too");
        assert!(t.contains(&key(1)) && !t.contains(&key(2)) && !t.contains(&key(3)));
        assert_eq!((t.counters.table_full, t.counters.install_failed), (1, 2));
        assert_eq!(t.device_len(d), 1);
        same_flows(&t, &k);
        // The batch's capacity comes back to the queue at the next take.
        t.queue_for(&mut k, None, key(9), &a, flow(&[9], 10), 4)
            .unwrap();
        t.take_batch(&mut batch);
        assert_eq!(batch.keys, vec![key(9)]);
    }

    #[test]
    fn the_default_share_is_a_quarter_with_a_floor() {
        assert_eq!(
            FlowTable::default().per_device(),
            DEFAULT_MAX_FLOWS as usize / 4
        );
        assert_eq!(default_per_device(10_000), MIN_PER_DEVICE);
        assert_eq!(default_per_device(100), 100);
    }
}
