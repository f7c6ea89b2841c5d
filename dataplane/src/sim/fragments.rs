//! The simulation's fragment table: the transport header of a datagram's
//! first fragment, for its later fragments.
//!
//! A later fragment (offset > 0) carries no transport header, yet chains and
//! NAT must decide it as they decided its first fragment: a port forward, a
//! SNAT binding or a firewall rule on ports applies to the whole datagram,
//! or the receiver gets half of it translated and cannot reassemble it. The
//! kernel keeps such a table for the flows it runs (its FRAGS map), but the
//! first datagram of a flow is simulated before any flow exists, so its
//! later fragments come to userspace too, and the simulation needs its own.
//!
//! - Key: (ingress port, source, destination, protocol, IP id), RFC 791's
//!   datagram identity plus the port it entered by, so tenants with
//!   overlapping addresses never see each other's datagrams.
//! - Value: the first fragment's transport fields (ports, ICMP type, code
//!   and echo id), recorded when a first fragment is simulated.
//! - Entries expire `TIMEOUT_NS` after their first fragment (all fragments
//!   of a datagram travel together; Linux gives reassembly 30 s, but a
//!   lost datagram's entry must not hold a slot that long). Duplicates of
//!   a first fragment update the entry without extending it.
//! - Bounded: `capacity` entries in all and a share per zone (the ingress
//!   port's conntrack zone: its device or stateful port group), so one
//!   tenant sending fragments cannot take the table. The share defaults to
//!   a quarter of the capacity (at least 256 entries). A first fragment that
//!   finds the table or its zone's share full is dropped and counted
//!   (`FragmentTableFull`), as Linux drops fragments when its reassembly
//!   memory is full: its later fragments could not be decided like it.
//!   Existing entries are never evicted for a new one.
//!
//! During a walk, `Walk::datagram_l4` holds the datagram's transport
//! fields as they stand (NAT updates them when it rewrites ports), and
//! `view` gives a later fragment's headers those fields, so every device
//! (chains, conntrack, NAT) decides it as its datagram. A later fragment is
//! never installed (userspace has no flow key for it): the kernel's FRAGS
//! map gives it the first fragment's flow once that one is installed.
use super::{PortId, Tag, Walk};
use crate::hash::HashMap;
use crate::packet::{Headers, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, L3, L4};
use std::collections::VecDeque;
use vnet_common::Reason;

/// How long the later fragments of a datagram are recognised.
pub const TIMEOUT_NS: u64 = 5 * 1_000_000_000;
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    port: PortId,
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    l4: L4,
    zone: Tag,
    recorded_ns: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FragmentCounters {
    pub recorded: u64,
    pub expired: u64,
    /// First fragments refused because the table or a zone's share was full.
    pub full: u64,
    /// Later fragments whose first fragment was not (or no longer) known.
    pub unknown: u64,
}

#[derive(Debug, Clone)]
pub struct FragmentTable {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were recorded: entries never get younger, so
    /// the expired ones are always at the front.
    order: VecDeque<(u64, Key)>,
    per_zone: HashMap<Tag, usize>,
    capacity: usize,
    zone_share: usize,
    pub counters: FragmentCounters,
}

impl Default for FragmentTable {
    fn default() -> Self {
        FragmentTable::with_capacity(DEFAULT_CAPACITY)
    }
}

impl FragmentTable {
    /// A table of `capacity` entries, a quarter of it (at least 256) per zone.
    pub fn with_capacity(capacity: usize) -> FragmentTable {
        FragmentTable::with_limits(capacity, super::share::tenant_share(capacity, 256))
    }

    /// A table of `capacity` entries, at most `zone_share` of them per zone.
    pub fn with_limits(capacity: usize, zone_share: usize) -> FragmentTable {
        FragmentTable {
            entries: HashMap::default(),
            order: VecDeque::new(),
            per_zone: HashMap::default(),
            capacity,
            zone_share: zone_share.min(capacity),
            counters: FragmentCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets the datagrams whose first fragment is older than the timeout.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(at, key)) = self.order.front() {
            if now_ns.saturating_sub(at) <= TIMEOUT_NS {
                break;
            }
            self.order.pop_front();
            if let Some(e) = self.entries.remove(&key) {
                self.release(e.zone);
                self.counters.expired += 1;
            }
        }
    }

    fn release(&mut self, zone: Tag) {
        if let Some(n) = self.per_zone.get_mut(&zone) {
            *n -= 1;
            if *n == 0 {
                self.per_zone.remove(&zone);
            }
        }
    }

    /// Records a first fragment's transport fields. Fails when the table or
    /// the zone's share is full (nothing is evicted).
    fn record(&mut self, key: Key, zone: Tag, l4: L4, now_ns: u64) -> Result<(), Reason> {
        if let Some(e) = self.entries.get_mut(&key) {
            e.l4 = l4;
            return Ok(());
        }
        let used = self.per_zone.get(&zone).copied().unwrap_or(0);
        if self.entries.len() >= self.capacity || used >= self.zone_share {
            self.counters.full += 1;
            return Err(Reason::FragmentTableFull);
        }
        self.entries.insert(
            key,
            Entry {
                l4,
                zone,
                recorded_ns: now_ns,
            },
        );
        self.order.push_back((now_ns, key));
        *self.per_zone.entry(zone).or_default() += 1;
        self.counters.recorded += 1;
        Ok(())
    }

    /// The transport fields of the datagram a later fragment belongs to.
    fn lookup(&mut self, key: &Key, now_ns: u64) -> Option<L4> {
        let found = self
            .entries
            .get(key)
            .filter(|e| now_ns.saturating_sub(e.recorded_ns) <= TIMEOUT_NS)
            .map(|e| e.l4);
        if found.is_none() {
            self.counters.unknown += 1;
        }
        found
    }
}

/// Whether the protocol's first fragment has transport fields worth
/// recording (the ones chains, conntrack and NAT read).
pub(super) fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP)
}

/// At the start of a walk: notes the datagram's transport fields in the
/// walk (a later fragment's from its first fragment), recording a first
/// fragment's for the fragments that follow it. Returns false when the walk
/// ended (a first fragment the table had no room for).
pub(super) fn ingress(walk: &mut Walk, in_port: PortId, h: &Headers) -> bool {
    let Some(zone) = walk.snap.ports.get(in_port).map(|p| p.zone) else {
        return true;
    };
    let L3::Ipv4(ip, l4) = h.l3 else {
        return true;
    };
    walk.path.datagram_l4 = l4;
    if !ip.is_fragment() || !has_ports(ip.proto) {
        return true;
    }
    let key = Key {
        port: in_port,
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        id: ip.id,
    };
    let now = walk.now_ns;
    let table = &mut walk.state.fragments;
    table.expire(now);
    if ip.is_later_fragment() {
        walk.path.datagram_l4 = table.lookup(&key, now).unwrap_or(L4::None);
        return true;
    }
    match table.record(key, zone, l4, now) {
        Ok(()) => true,
        Err(reason) => {
            walk.drop(reason, false);
            false
        }
    }
}

/// The headers as devices see them: a later fragment gets its datagram's
/// transport fields (when its first fragment was seen), so it is decided as
/// its first fragment was.
pub(super) fn view(walk: &Walk, h: &Headers) -> Headers {
    match h.l3 {
        L3::Ipv4(ip, L4::None) if ip.is_later_fragment() => Headers {
            l3: L3::Ipv4(ip, walk.path.datagram_l4),
            ..*h
        },
        _ => *h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Tag = Tag(1);
    const B: Tag = Tag(2);

    fn key(id: u16) -> Key {
        Key {
            port: 0,
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
            proto: IPPROTO_UDP,
            id,
        }
    }

    const PORTS: L4 = L4::Ports { src: 1, dst: 2 };

    #[test]
    fn a_zone_at_its_share_leaves_room_for_the_others() {
        let mut t = FragmentTable::with_limits(3, 2);
        assert_eq!(t.record(key(1), A, PORTS, 0), Ok(()));
        assert_eq!(t.record(key(2), A, PORTS, 0), Ok(()));
        assert_eq!(
            t.record(key(3), A, PORTS, 0),
            Err(Reason::FragmentTableFull)
        );
        assert_eq!(t.record(key(3), B, PORTS, 0), Ok(()), "another zone");
        assert_eq!(
            t.record(key(4), B, PORTS, 0),
            Err(Reason::FragmentTableFull),
            "the whole table is full"
        );
        assert_eq!(t.counters.full, 2);
        assert_eq!(t.lookup(&key(1), 0), Some(PORTS), "old entries intact");
    }

    #[test]
    fn entries_expire_and_free_their_zone_share() {
        let mut t = FragmentTable::with_limits(4, 1);
        t.record(key(1), A, PORTS, 0).unwrap();
        // A duplicate first fragment does not make the entry younger.
        t.record(key(1), A, PORTS, TIMEOUT_NS).unwrap();
        assert_eq!(t.lookup(&key(1), TIMEOUT_NS + 1), None);
        t.expire(TIMEOUT_NS + 1);
        assert!(t.is_empty());
        assert_eq!(t.order.len(), 0, "the order queue is bounded by the table");
        assert_eq!(t.record(key(2), A, PORTS, TIMEOUT_NS + 1), Ok(()));
    }
}
