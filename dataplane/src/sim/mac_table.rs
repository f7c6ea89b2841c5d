//! The learned MAC table of all bridges: (bridge, MAC) → port.
//!
//! Bounded: when full, a new MAC is not learned (counted) and frames to it
//! are flooded; existing entries are never evicted to make room, so a flood
//! of spoofed source MACs cannot push out the hosts that are really there.
//! Each bridge (tenant) may also hold at most its share of the table
//! (`per_bridge`, by default a quarter of the capacity: 16 384 of 65 536),
//! so one bridge flooding spoofed source MACs leaves the rest of the table
//! to the others: over its share a MAC is not learned
//! ([`Learned::BridgeLimit`], counted as `device_mac_limit`).
//! Entries age out after `max_age_ns` without traffic, but an entry that an
//! installed flow still uses is kept (the kernel forwards that traffic, so
//! userspace does not see it to refresh the entry).
use super::Tag;
use crate::hash::HashMap;
use crate::packet::Mac;

/// Linux bridge's default ageing time.
pub const DEFAULT_MAX_AGE_NS: u64 = 300 * 1_000_000_000;
pub const DEFAULT_CAPACITY: usize = 64 * 1024;
/// Smallest per-bridge share [`MacTable::with_capacity`] gives (or the
/// whole table when it is smaller).
pub const MIN_PER_BRIDGE: usize = 1024;

/// The default share of one bridge in a table of `capacity` entries: a
/// quarter, at least [`MIN_PER_BRIDGE`], at most the whole table.
pub fn default_per_bridge(capacity: usize) -> usize {
    super::share::tenant_share(capacity, MIN_PER_BRIDGE)
}

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
    /// The bridge holds its share of the table: the MAC was not learned.
    BridgeLimit,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MacCounters {
    pub learned: u64,
    pub moved: u64,
    pub expired: u64,
    pub full: u64,
    /// MACs not learned because their bridge held its share.
    pub bridge_limit: u64,
}

#[derive(Debug, Clone)]
pub struct MacTable {
    entries: HashMap<(Tag, Mac), Entry>,
    /// Entries per bridge (no zero counts kept).
    per_bridge_len: HashMap<Tag, usize>,
    capacity: usize,
    per_bridge: usize,
    pub counters: MacCounters,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MacTable {
    /// A table of `capacity` entries with the default per-bridge share.
    pub fn with_capacity(capacity: usize) -> MacTable {
        MacTable::with_limits(capacity, default_per_bridge(capacity))
    }

    /// A table of `capacity` entries of which one bridge may hold
    /// `per_bridge`.
    pub fn with_limits(capacity: usize, per_bridge: usize) -> MacTable {
        MacTable {
            entries: HashMap::default(),
            per_bridge_len: HashMap::default(),
            capacity,
            per_bridge,
            counters: MacCounters::default(),
        }
    }

    /// How many MACs one bridge may hold.
    pub fn per_bridge(&self) -> usize {
        self.per_bridge
    }

    /// How many MACs `bridge` holds.
    pub fn bridge_len(&self, bridge: Tag) -> usize {
        self.per_bridge_len.get(&bridge).copied().unwrap_or(0)
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
        if self.bridge_len(bridge) >= self.per_bridge {
            self.counters.bridge_limit += 1;
            return Learned::BridgeLimit;
        }
        *self.per_bridge_len.entry(bridge).or_default() += 1;
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
        let mut gone = Vec::new();
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
            gone.push(*bridge);
            false
        });
        for bridge in gone {
            if let Some(held) = self.per_bridge_len.get_mut(&bridge) {
                *held -= 1;
                if *held == 0 {
                    self.per_bridge_len.remove(&bridge);
                }
            }
        }
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

    #[test]
    fn a_bridge_at_its_share_learns_nothing_new_and_the_others_still_learn() {
        let mut t = MacTable::with_limits(100, 2);
        let other_bridge = Tag(2);
        let mac = |n: u8| -> Mac { [2, 0, 0, 0, 1, n] };
        assert_eq!(t.learn(BR, mac(1), P1, 0), Learned::New);
        assert_eq!(t.learn(BR, mac(2), P1, 0), Learned::New);
        assert_eq!(t.learn(BR, mac(3), P1, 0), Learned::BridgeLimit);
        assert_eq!(t.lookup(BR, &mac(3)), None);
        assert_eq!(t.counters.bridge_limit, 1);
        // Its own hosts keep working: refreshed and moved as before.
        assert_eq!(t.learn(BR, mac(1), P1, 1), Learned::Refreshed);
        assert_eq!(t.learn(BR, mac(2), P2, 1), Learned::Moved { from: P1 });
        // Another bridge is not affected.
        assert_eq!(t.learn(other_bridge, mac(3), P1, 1), Learned::New);
        assert_eq!(t.learn(other_bridge, mac(4), P1, 1), Learned::New);
        assert_eq!((t.bridge_len(BR), t.bridge_len(other_bridge)), (2, 2));
        // An entry ageing out makes room again.
        t.learn(BR, mac(2), P2, 50);
        t.learn(other_bridge, mac(3), P1, 50);
        t.learn(other_bridge, mac(4), P1, 50);
        assert_eq!(t.expire(20, 10, |_| false), vec![Tag::mac(BR, &mac(1))]);
        assert_eq!(t.bridge_len(BR), 1);
        assert_eq!(t.learn(BR, mac(3), P1, 21), Learned::New);
    }

    #[test]
    fn the_default_share_is_a_quarter_with_a_floor() {
        assert_eq!(MacTable::default().per_bridge(), DEFAULT_CAPACITY / 4);
        assert_eq!(MacTable::with_capacity(2000).per_bridge(), MIN_PER_BRIDGE);
        assert_eq!(MacTable::with_capacity(10).per_bridge(), 10);
    }

    #[test]
    fn a_bridge_at_its_share_floods_to_macs_it_could_not_learn_on_real_frames() {
        use crate::packet::build::udp_frame;
        use crate::packet::BROADCAST;
        use crate::sim::{simulate, Snapshot, State, Verdict};
        let yaml = "version: 1\nbridges:\n  t1:\n    ports:\n      a: {interface: a1}\n      \
                    b: {interface: b1}\n  t2:\n    ports:\n      a: {interface: a2}\n      \
                    b: {interface: b2}\n";
        let snap = Snapshot::compile(&vnet_model::parse_str(yaml).expect("valid"), 1);
        let mut st = State {
            macs: MacTable::with_limits(100, 2).into(),
            ..State::default()
        };
        let mac = |n: u8| -> Mac { [2, 0, 0, 0, 7, n] };
        let send = |st: &mut State, p: &str, src: Mac, dst: Mac| {
            let f = udp_frame(src, dst, [10, 0, 0, 1], [10, 0, 0, 2], 9, 9, b"x");
            let port = snap.port_by_name(p).expect("port");
            simulate(&snap, st, port, &f, 1, false).verdict
        };
        for n in 1..=3 {
            send(&mut st, "t1/a", mac(n), BROADCAST);
        }
        assert_eq!(st.macs.counters.bridge_limit, 1, "mac(3) was not learned");
        // Frames to a MAC t1 learned are unicast; to the one it could not
        // learn they are flooded, as to any unknown MAC.
        assert_eq!(send(&mut st, "t1/b", mac(9), mac(1)), Verdict::Forwarded);
        assert_eq!(send(&mut st, "t1/b", mac(9), mac(3)), Verdict::Flooded);
        // The other tenant learns the same MACs.
        send(&mut st, "t2/a", mac(3), BROADCAST);
        assert_eq!(send(&mut st, "t2/b", mac(9), mac(3)), Verdict::Forwarded);
    }
}
