//! The routers' ARP caches: (router, IPv4) → MAC, and the packets waiting
//! for a next hop to resolve.
//!
//! - An entry is fresh for `REACHABLE_NS` after it was confirmed, then
//!   stale: still used, but the router sends one refresh request; it is
//!   removed `EXPIRE_NS` after the last confirmation (flows using it are
//!   invalidated through its tag).
//! - A next hop being resolved has a bounded queue of packets (not dropped
//!   on the first miss); the request is retried with doubling backoff and,
//!   after `MAX_REQUESTS`, the queued packets get ICMP host unreachable.
//! - Bounded: a full cache learns nothing new (counted); old entries stay.
use super::{PortId, Tag};
use crate::hash::HashMap;
use crate::packet::Mac;
use std::collections::VecDeque;

pub const REACHABLE_NS: u64 = 60 * 1_000_000_000;
pub const EXPIRE_NS: u64 = 300 * 1_000_000_000;
/// First retry after this; each later one waits twice as long.
pub const RETRY_NS: u64 = 500_000_000;
pub const MAX_REQUESTS: u32 = 3;
pub const QUEUE_PER_NEXT_HOP: usize = 8;
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    mac: Mac,
    confirmed_ns: u64,
    refresh_sent: bool,
}

/// A packet waiting for its next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// A packet from a guest, with what is needed to simulate it again from
    /// where it entered (its origin and bytes) or to answer it with ICMP
    /// host unreachable (where it entered the router, from whom, and its IP
    /// packet).
    Received {
        origin: PortId,
        frame: Vec<u8>,
        router_port: PortId,
        sender_mac: Mac,
        ip_packet: Vec<u8>,
    },
    /// A packet the router generated (an ICMP error going back through
    /// it), sent out of `port` once the next hop resolves; never answered
    /// with ICMP if it does not.
    Generated { port: PortId, frame: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct Pending {
    /// Router port the requests go out of.
    pub port: PortId,
    pub requests: u32,
    pub next_request_ns: u64,
    pub queue: VecDeque<Queued>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ArpCounters {
    pub learned: u64,
    pub changed: u64,
    pub expired: u64,
    pub full: u64,
    pub queue_full: u64,
    pub unresolved: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    New,
    Confirmed,
    /// The IP moved to another MAC: flows through the old one must go.
    Changed,
    TableFull,
}

#[derive(Debug, Clone)]
pub struct ArpCache {
    entries: HashMap<(Tag, [u8; 4]), Entry>,
    pending: HashMap<(Tag, [u8; 4]), Pending>,
    capacity: usize,
    pub counters: ArpCounters,
}

impl Default for ArpCache {
    fn default() -> Self {
        ArpCache::with_capacity(DEFAULT_CAPACITY)
    }
}

/// What the timers of the cache ask the router to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// (router, next hop, port): send an ARP request.
    pub requests: Vec<(Tag, [u8; 4], PortId)>,
    /// Packets whose next hop never answered.
    pub unresolved: Vec<(Tag, Queued)>,
    /// Tags of removed entries (their flows must go).
    pub expired: Vec<Tag>,
}

impl ArpCache {
    pub fn with_capacity(capacity: usize) -> ArpCache {
        ArpCache {
            entries: HashMap::default(),
            pending: HashMap::default(),
            capacity,
            counters: ArpCounters::default(),
        }
    }

    pub fn tag(router: Tag, ip: [u8; 4]) -> Tag {
        Tag::arp(router, ip)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn lookup(&self, router: Tag, ip: [u8; 4]) -> Option<Mac> {
        self.entries.get(&(router, ip)).map(|e| e.mac)
    }

    /// Records that `ip` is at `mac`. Returns the packets that waited for
    /// it, to be simulated again.
    pub fn update(
        &mut self,
        router: Tag,
        ip: [u8; 4],
        mac: Mac,
        now_ns: u64,
    ) -> (Update, Vec<Queued>) {
        let released = self
            .pending
            .remove(&(router, ip))
            .map(|p| p.queue.into())
            .unwrap_or_default();
        let full = self.entries.len() >= self.capacity;
        let update = match self.entries.get_mut(&(router, ip)) {
            Some(e) => {
                let changed = e.mac != mac;
                *e = Entry {
                    mac,
                    confirmed_ns: now_ns,
                    refresh_sent: false,
                };
                if changed {
                    self.counters.changed += 1;
                    Update::Changed
                } else {
                    Update::Confirmed
                }
            }
            None if full => {
                self.counters.full += 1;
                Update::TableFull
            }
            None => {
                self.entries.insert(
                    (router, ip),
                    Entry {
                        mac,
                        confirmed_ns: now_ns,
                        refresh_sent: false,
                    },
                );
                self.counters.learned += 1;
                Update::New
            }
        };
        (update, released)
    }

    /// Queues a packet for an unresolved next hop. Returns whether a request
    /// must be sent now (the first packet for this next hop), or `None` when
    /// the queue is full and the packet was dropped.
    pub fn enqueue(
        &mut self,
        router: Tag,
        ip: [u8; 4],
        port: PortId,
        packet: Queued,
        now_ns: u64,
    ) -> Option<bool> {
        let first = !self.pending.contains_key(&(router, ip));
        let p = self.pending.entry((router, ip)).or_insert_with(|| Pending {
            port,
            requests: 1,
            next_request_ns: now_ns + RETRY_NS,
            queue: VecDeque::new(),
        });
        if p.queue.len() >= QUEUE_PER_NEXT_HOP {
            self.counters.queue_full += 1;
            return None;
        }
        p.queue.push_back(packet);
        Some(first)
    }

    pub fn pending(&self, router: Tag, ip: [u8; 4]) -> Option<&Pending> {
        self.pending.get(&(router, ip))
    }

    /// Runs the timers: retries, give-ups, refreshes of stale entries and
    /// expiry. `port_of` gives the router port to refresh an entry from.
    pub fn tick(
        &mut self,
        now_ns: u64,
        mut refresh_port: impl FnMut(Tag, [u8; 4]) -> Option<PortId>,
    ) -> Due {
        let mut due = Due::default();
        let mut gave_up = Vec::new();
        for (&(router, ip), p) in self.pending.iter_mut() {
            if now_ns < p.next_request_ns {
                continue;
            }
            if p.requests >= MAX_REQUESTS {
                gave_up.push((router, ip));
                continue;
            }
            p.requests += 1;
            p.next_request_ns = now_ns + (RETRY_NS << (p.requests - 1));
            due.requests.push((router, ip, p.port));
        }
        for key in gave_up {
            if let Some(p) = self.pending.remove(&key) {
                self.counters.unresolved += p.queue.len() as u64;
                due.unresolved
                    .extend(p.queue.into_iter().map(|q| (key.0, q)));
            }
        }
        self.entries.retain(|&(router, ip), e| {
            let age = now_ns.saturating_sub(e.confirmed_ns);
            if age > EXPIRE_NS {
                due.expired.push(Tag::arp(router, ip));
                return false;
            }
            if age > REACHABLE_NS && !e.refresh_sent {
                if let Some(port) = refresh_port(router, ip) {
                    e.refresh_sent = true;
                    due.requests.push((router, ip, port));
                }
            }
            true
        });
        self.counters.expired += due.expired.len() as u64;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Tag = Tag(7);
    const IP: [u8; 4] = [10, 0, 0, 5];
    const MAC: Mac = [2, 0, 0, 0, 0, 5];

    fn queued(n: u8) -> Queued {
        Queued::Generated {
            port: 0,
            frame: vec![n],
        }
    }

    #[test]
    fn learns_confirms_and_detects_changes() {
        let mut c = ArpCache::default();
        assert_eq!(c.update(R, IP, MAC, 0).0, Update::New);
        assert_eq!(c.update(R, IP, MAC, 1).0, Update::Confirmed);
        assert_eq!(c.update(R, IP, [2, 0, 0, 0, 0, 6], 2).0, Update::Changed);
        assert_eq!(c.lookup(R, IP), Some([2, 0, 0, 0, 0, 6]));
        assert_eq!(c.lookup(Tag(8), IP), None, "routers do not share caches");
    }

    #[test]
    fn queue_is_bounded_and_released_on_resolution() {
        let mut c = ArpCache::default();
        assert_eq!(
            c.enqueue(R, IP, 3, queued(0), 0),
            Some(true),
            "first packet sends the request"
        );
        for n in 1..QUEUE_PER_NEXT_HOP as u8 {
            assert_eq!(c.enqueue(R, IP, 3, queued(n), 0), Some(false));
        }
        assert_eq!(c.enqueue(R, IP, 3, queued(99), 0), None, "queue full");
        assert_eq!(c.counters.queue_full, 1);
        let (_, released) = c.update(R, IP, MAC, 10);
        assert_eq!(released.len(), QUEUE_PER_NEXT_HOP);
        assert_eq!(released[0], queued(0), "in arrival order");
        assert!(c.pending(R, IP).is_none());
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let mut c = ArpCache::default();
        c.enqueue(R, IP, 3, queued(1), 0);
        assert!(c.tick(RETRY_NS - 1, |_, _| None).requests.is_empty());
        assert_eq!(c.tick(RETRY_NS, |_, _| None).requests, vec![(R, IP, 3)]);
        assert!(
            c.tick(RETRY_NS * 2, |_, _| None).requests.is_empty(),
            "backoff doubled"
        );
        assert_eq!(c.tick(RETRY_NS * 3, |_, _| None).requests.len(), 1);
        let due = c.tick(RETRY_NS * 20, |_, _| None);
        assert_eq!(
            due.unresolved.len(),
            1,
            "gave up after {MAX_REQUESTS} requests"
        );
        assert_eq!(c.counters.unresolved, 1);
    }

    #[test]
    fn stale_entries_are_refreshed_once_and_expire() {
        let mut c = ArpCache::default();
        c.update(R, IP, MAC, 0);
        assert_eq!(
            c.tick(REACHABLE_NS + 1, |_, _| Some(4)).requests,
            vec![(R, IP, 4)]
        );
        assert!(
            c.tick(REACHABLE_NS + 2, |_, _| Some(4)).requests.is_empty(),
            "one refresh"
        );
        assert_eq!(c.lookup(R, IP), Some(MAC), "stale entries are still used");
        let due = c.tick(EXPIRE_NS + 1, |_, _| Some(4));
        assert_eq!(due.expired, vec![Tag::arp(R, IP)]);
        assert_eq!(c.lookup(R, IP), None);
    }

    #[test]
    fn full_cache_keeps_old_entries() {
        let mut c = ArpCache::with_capacity(1);
        c.update(R, IP, MAC, 0);
        assert_eq!(c.update(R, [10, 0, 0, 6], MAC, 0).0, Update::TableFull);
        assert_eq!(c.lookup(R, IP), Some(MAC));
    }
}
