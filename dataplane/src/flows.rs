//! The userspace side of the flow table: which flows are installed, the tags
//! each one depends on (tag → flows index), and idle expiry.
//!
//! The kernel map holds actions and counters; this table holds what the
//! kernel does not need. Both are changed only through [`FlowTable`], so a
//! flow is in the tag index exactly when it is in the kernel.
use crate::hash::{HashMap, HashSet};
use crate::sim::{Flow, Tag};
use vnet_common::{FlowActions, FlowKey};

/// Where installed flows live: the kernel's FLOWS map, or a fake in tests.
pub trait FlowBackend {
    fn insert(&mut self, key: &FlowKey, actions: &FlowActions) -> Result<(), InstallError>;
    fn remove(&mut self, key: &FlowKey);
    /// Monotonic time (ns) of the flow's last hit, 0 if never hit.
    fn last_used_ns(&self, key: &FlowKey) -> Option<u64>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error("the flow table is full")]
    Full,
    #[error("installing the flow failed: {0}")]
    Other(String),
}

#[derive(Debug, Clone)]
struct Record {
    tags: Vec<Tag>,
    idle_timeout_ns: u64,
    installed_ns: u64,
    /// When the flow was last known to be used: its installation, or the
    /// kernel's last-hit time as read by the last sweep that asked.
    seen_ns: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowCounters {
    pub installed: u64,
    pub invalidated: u64,
    pub expired: u64,
    pub install_failed: u64,
    pub table_full: u64,
}

#[derive(Debug, Default)]
pub struct FlowTable {
    records: HashMap<FlowKey, Record>,
    by_tag: HashMap<Tag, HashSet<FlowKey>>,
    pub counters: FlowCounters,
}

impl FlowTable {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn contains(&self, key: &FlowKey) -> bool {
        self.records.contains_key(key)
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
        self.by_tag.get(&tag).is_some_and(|s| !s.is_empty())
    }

    /// Installs (or replaces) the flow for `key`. `actions` are the flow's
    /// actions with the output interface resolved.
    pub fn install(
        &mut self,
        backend: &mut impl FlowBackend,
        key: FlowKey,
        actions: &FlowActions,
        flow: &Flow,
        now_ns: u64,
    ) -> Result<(), InstallError> {
        if let Err(e) = backend.insert(&key, actions) {
            self.counters.install_failed += 1;
            if e == InstallError::Full {
                self.counters.table_full += 1;
            }
            return Err(e);
        }
        self.forget(&key);
        for tag in &flow.tags {
            self.by_tag.entry(*tag).or_default().insert(key);
        }
        self.records.insert(
            key,
            Record {
                tags: flow.tags.clone(),
                idle_timeout_ns: flow.idle_timeout_ns,
                installed_ns: now_ns,
                seen_ns: now_ns,
            },
        );
        self.counters.installed += 1;
        Ok(())
    }

    /// Removes every flow tagged with `tag`; returns how many.
    pub fn invalidate(&mut self, backend: &mut impl FlowBackend, tag: Tag) -> usize {
        let Some(keys) = self.by_tag.remove(&tag) else {
            return 0;
        };
        for key in &keys {
            backend.remove(key);
            self.forget(key);
        }
        self.counters.invalidated += keys.len() as u64;
        keys.len()
    }

    /// Removes every flow.
    pub fn clear(&mut self, backend: &mut impl FlowBackend) {
        for key in self.records.keys() {
            backend.remove(key);
        }
        self.records.clear();
        self.by_tag.clear();
    }

    /// Removes flows idle for longer than their timeout. A flow never hit
    /// counts as used when it was installed.
    ///
    /// The kernel is asked only about flows whose last known use is older
    /// than their timeout, so each flow costs at most one map lookup per
    /// idle period, however often the sweep runs and however many flows
    /// there are.
    pub fn expire(&mut self, backend: &mut impl FlowBackend, now_ns: u64) -> usize {
        let mut idle = Vec::new();
        for (key, r) in self.records.iter_mut() {
            if now_ns.saturating_sub(r.seen_ns) <= r.idle_timeout_ns {
                continue;
            }
            r.seen_ns = r.seen_ns.max(backend.last_used_ns(key).unwrap_or(0));
            if now_ns.saturating_sub(r.seen_ns) > r.idle_timeout_ns {
                idle.push(*key);
            }
        }
        for key in &idle {
            backend.remove(key);
            self.forget(key);
        }
        self.counters.expired += idle.len() as u64;
        idle.len()
    }

    /// Drops `key` from the records and the tag index (not from the kernel).
    fn forget(&mut self, key: &FlowKey) {
        if let Some(r) = self.records.remove(key) {
            for tag in r.tags {
                if let Some(set) = self.by_tag.get_mut(&tag) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_tag.remove(&tag);
                    }
                }
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
}
