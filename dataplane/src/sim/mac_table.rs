//! The learned MAC table of all bridges: (bridge, MAC) → port.
//!
//! Bounded: when full, a new MAC is not learned (counted) and frames to it
//! are flooded; existing entries are never evicted to make room, so a flood
//! of spoofed source MACs cannot push out the hosts that are really there.
//! Entries age out after `max_age_ns` without traffic, but an entry that an
//! installed flow still uses is kept (the kernel forwards that traffic, so
//! userspace does not see it to refresh the entry).
use super::Tag;
use crate::hash::HashMap;
use crate::packet::Mac;

/// Linux bridge's default ageing time.
pub const DEFAULT_MAX_AGE_NS: u64 = 300 * 1_000_000_000;
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    port: Tag,
    last_seen_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    /// The MAC was on another port: flows using the old location must go.
    Moved {
        from: Tag,
    },
    /// The table is full: the MAC was not learned.
    TableFull,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MacCounters {
    pub learned: u64,
    pub moved: u64,
    pub expired: u64,
    pub full: u64,
}

#[derive(Debug, Clone)]
pub struct MacTable {
    entries: HashMap<(Tag, Mac), Entry>,
    capacity: usize,
    pub counters: MacCounters,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MacTable {
    pub fn with_capacity(capacity: usize) -> MacTable {
        MacTable {
            entries: HashMap::default(),
            capacity,
            counters: MacCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn lookup(&self, bridge: Tag, mac: &Mac) -> Option<Tag> {
        self.entries.get(&(bridge, *mac)).map(|e| e.port)
    }

    pub fn learn(&mut self, bridge: Tag, mac: Mac, port: Tag, now_ns: u64) -> Learned {
        if let Some(e) = self.entries.get_mut(&(bridge, mac)) {
            e.last_seen_ns = now_ns;
            if e.port == port {
                return Learned::Refreshed;
            }
            let from = e.port;
            e.port = port;
            self.counters.moved += 1;
            return Learned::Moved { from };
        }
        if self.entries.len() >= self.capacity {
            self.counters.full += 1;
            return Learned::TableFull;
        }
        self.entries.insert(
            (bridge, mac),
            Entry {
                port,
                last_seen_ns: now_ns,
            },
        );
        self.counters.learned += 1;
        Learned::New
    }

    /// Removes entries idle for longer than `max_age_ns` unless `in_use`
    /// says a flow still depends on them (given the entry's MAC tag); those
    /// are refreshed. Returns the MAC tags of the removed entries.
    pub fn expire(
        &mut self,
        now_ns: u64,
        max_age_ns: u64,
        in_use: impl Fn(Tag) -> bool,
    ) -> Vec<Tag> {
        let mut removed = Vec::new();
        self.entries.retain(|(bridge, mac), e| {
            if now_ns.saturating_sub(e.last_seen_ns) <= max_age_ns {
                return true;
            }
            let tag = Tag::mac(*bridge, mac);
            if in_use(tag) {
                e.last_seen_ns = now_ns;
                return true;
            }
            removed.push(tag);
            false
        });
        self.counters.expired += removed.len() as u64;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BR: Tag = Tag(1);
    const P1: Tag = Tag(10);
    const P2: Tag = Tag(20);
    const M: Mac = [2, 0, 0, 0, 0, 1];

    #[test]
    fn learns_refreshes_and_moves() {
        let mut t = MacTable::default();
        assert_eq!(t.learn(BR, M, P1, 0), Learned::New);
        assert_eq!(t.learn(BR, M, P1, 5), Learned::Refreshed);
        assert_eq!(t.learn(BR, M, P2, 6), Learned::Moved { from: P1 });
        assert_eq!(t.lookup(BR, &M), Some(P2));
        assert_eq!(t.lookup(Tag(2), &M), None, "bridges do not share entries");
    }

    #[test]
    fn full_table_keeps_old_entries() {
        let mut t = MacTable::with_capacity(1);
        t.learn(BR, M, P1, 0);
        assert_eq!(t.learn(BR, [2, 0, 0, 0, 0, 2], P1, 0), Learned::TableFull);
        assert_eq!(t.lookup(BR, &M), Some(P1));
        assert_eq!(t.counters.full, 1);
    }

    #[test]
    fn ageing_spares_entries_in_use() {
        let mut t = MacTable::default();
        let other: Mac = [2, 0, 0, 0, 0, 9];
        t.learn(BR, M, P1, 0);
        t.learn(BR, other, P1, 0);
        let busy = Tag::mac(BR, &M);
        let removed = t.expire(100, 10, |tag| tag == busy);
        assert_eq!(removed, vec![Tag::mac(BR, &other)]);
        assert_eq!(t.lookup(BR, &M), Some(P1));
        assert!(
            t.expire(105, 10, |_| false).is_empty(),
            "in-use entry was refreshed at 100"
        );
    }
}
