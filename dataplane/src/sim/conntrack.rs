//! Connection tracking for IPv4 TCP, UDP and ICMP echo.
//!
//! A connection is keyed by its zone (the device whose filters track it, or
//! the stateful port group its port belongs to, so replies coming back
//! through another member are recognised) and its 5-tuple as first seen
//! (the forward direction). Its reply tuple is indexed too, so a packet is
//! classified in one lookup: forward (a new or known forward-direction
//! packet) or return (a reply). ICMP errors are related to the connection
//! of the packet they quote and count as its return traffic.
//!
//! Entries are created only when a forward packet is actually forwarded
//! (a dropped packet must not open a hole for "replies"). The table is
//! bounded: when full, new connections are refused (the packet is dropped
//! and counted, as Linux's conntrack does) and existing ones are untouched.
//! Each zone (tenant) may also hold at most its share of the table
//! (`per_zone`, by default a quarter of the capacity: 65 536 of 262 144), so
//! one zone opening connections as fast as it can refuses only its own new
//! connections (`device_conntrack_limit`) while the others still open theirs.
//! An entry lives while the kernel flows of its connection are used, and
//! expires after `IDLE_NS` without them.
use super::Tag;
use crate::hash::HashMap;

pub const IDLE_NS: u64 = 60 * 1_000_000_000;
pub const DEFAULT_CAPACITY: usize = 256 * 1024;
/// Smallest per-zone share [`Conntrack::with_capacity`] gives (or the whole
/// table when it is smaller).
pub const MIN_PER_ZONE: usize = 1024;

/// The default share of one zone in a table of `capacity` entries: a
/// quarter, at least [`MIN_PER_ZONE`], at most the whole table.
pub fn default_per_zone(capacity: usize) -> usize {
    super::share::tenant_share(capacity, MIN_PER_ZONE)
}

/// A directional 5-tuple. For ICMP echo the ports are (id, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    /// The tuple of a reply.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
    /// ICMP echo: a request (id, 0) is answered by a reply with the same id,
    /// so its reversed tuple keeps the id as the "source port".
    pub fn reply(&self) -> Tuple {
        if self.proto == crate::packet::IPPROTO_ICMP {
            Tuple {
                src: self.dst,
                dst: self.src,
                ..*self
            }
        } else {
            self.reversed()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Return,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    last_seen_ns: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackCounters {
    pub created: u64,
    pub expired: u64,
    pub full: u64,
    /// New connections refused because their zone held its share.
    pub zone_limit: u64,
}

/// Why a new connection cannot be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table is full.
    TableFull,
    /// The connection's zone holds its share of the table.
    ZoneLimit,
}

impl Refused {
    /// The reason the refused packet is dropped for.
    pub fn reason(self) -> vnet_common::Reason {
        match self {
            Refused::TableFull => vnet_common::Reason::ConntrackFull,
            Refused::ZoneLimit => vnet_common::Reason::DeviceConntrackLimit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Conntrack {
    /// Forward tuples → entry.
    entries: HashMap<(Tag, Tuple), Entry>,
    /// Reply tuples → forward tuple.
    replies: HashMap<(Tag, Tuple), Tuple>,
    /// Connections per zone (no zero counts kept).
    per_zone_len: HashMap<Tag, usize>,
    capacity: usize,
    per_zone: usize,
    pub counters: ConntrackCounters,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Conntrack {
    /// A table of `capacity` connections with the default per-zone share.
    pub fn with_capacity(capacity: usize) -> Conntrack {
        Conntrack::with_limits(capacity, default_per_zone(capacity))
    }

    /// A table of `capacity` connections of which one zone may hold
    /// `per_zone`.
    pub fn with_limits(capacity: usize, per_zone: usize) -> Conntrack {
        Conntrack {
            entries: HashMap::default(),
            replies: HashMap::default(),
            per_zone_len: HashMap::default(),
            capacity,
            per_zone,
            counters: Default::default(),
        }
    }

    /// How many connections one zone may hold.
    pub fn per_zone(&self) -> usize {
        self.per_zone
    }

    /// How many connections `zone` holds.
    pub fn zone_len(&self, zone: Tag) -> usize {
        self.per_zone_len.get(&zone).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tag of the flows whose decision depended on `tuple`'s state in
    /// `zone`.
    pub fn tag(zone: Tag, tuple: &Tuple) -> Tag {
        Tag::conn(zone, tuple)
    }

    /// Classifies a packet with `tuple` in `zone`.
    pub fn classify(&self, zone: Tag, tuple: &Tuple) -> Direction {
        if self.replies.contains_key(&(zone, *tuple)) {
            Direction::Return
        } else {
            Direction::Forward
        }
    }

    /// Whether `tuple` is the forward direction of a known connection.
    pub fn is_known(&self, zone: Tag, tuple: &Tuple) -> bool {
        self.entries.contains_key(&(zone, *tuple))
    }

    /// Records a forwarded forward-direction packet. Fails when the
    /// connection is new and the table is full or its zone holds its share;
    /// otherwise returns the tag of flows to invalidate (replies that were
    /// decided before the connection existed).
    pub fn commit(&mut self, zone: Tag, tuple: Tuple, now_ns: u64) -> Result<Option<Tag>, Refused> {
        if let Some(e) = self.entries.get_mut(&(zone, tuple)) {
            e.last_seen_ns = now_ns;
            return Ok(None);
        }
        if self.entries.len() >= self.capacity {
            self.counters.full += 1;
            return Err(Refused::TableFull);
        }
        if self.zone_len(zone) >= self.per_zone {
            self.counters.zone_limit += 1;
            return Err(Refused::ZoneLimit);
        }
        *self.per_zone_len.entry(zone).or_default() += 1;
        let reply = tuple.reply();
        self.entries.insert(
            (zone, tuple),
            Entry {
                last_seen_ns: now_ns,
            },
        );
        self.replies.insert((zone, reply), tuple);
        self.counters.created += 1;
        Ok(Some(Conntrack::tag(zone, &reply)))
    }

    /// Refreshes the connection a reply belongs to.
    pub fn touch_reply(&mut self, zone: Tag, reply: &Tuple, now_ns: u64) {
        if let Some(fwd) = self.replies.get(&(zone, *reply)) {
            if let Some(e) = self.entries.get_mut(&(zone, *fwd)) {
                e.last_seen_ns = now_ns;
            }
        }
    }

    /// Removes idle connections, sparing those whose flows `in_use` says are
    /// still used (those are refreshed). Returns the tags of the flows that
    /// depended on the removed connections.
    pub fn expire(&mut self, now_ns: u64, in_use: impl Fn(Tag) -> bool) -> Vec<Tag> {
        let mut gone = Vec::new();
        self.entries.retain(|(zone, fwd), e| {
            if now_ns.saturating_sub(e.last_seen_ns) <= IDLE_NS {
                return true;
            }
            let tags = [
                Conntrack::tag(*zone, fwd),
                Conntrack::tag(*zone, &fwd.reply()),
            ];
            if tags.iter().any(|t| in_use(*t)) {
                e.last_seen_ns = now_ns;
                return true;
            }
            gone.push((*zone, *fwd));
            false
        });
        let mut tags = Vec::with_capacity(gone.len() * 2);
        for (zone, fwd) in gone {
            if let Some(held) = self.per_zone_len.get_mut(&zone) {
                *held -= 1;
                if *held == 0 {
                    self.per_zone_len.remove(&zone);
                }
            }
            let reply = fwd.reply();
            self.replies.remove(&(zone, reply));
            tags.push(Conntrack::tag(zone, &fwd));
            tags.push(Conntrack::tag(zone, &reply));
        }
        self.counters.expired += tags.len() as u64 / 2;
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{IPPROTO_ICMP, IPPROTO_UDP};

    const Z: Tag = Tag(1);
    const T: Tuple = Tuple {
        proto: IPPROTO_UDP,
        src: [10, 0, 0, 1],
        dst: [8, 8, 8, 8],
        sport: 5000,
        dport: 53,
    };

    #[test]
    fn replies_are_return_traffic_after_commit_only() {
        let mut c = Conntrack::default();
        assert_eq!(
            c.classify(Z, &T.reversed()),
            Direction::Forward,
            "nothing tracked yet"
        );
        let invalidate = c.commit(Z, T, 0).unwrap();
        assert_eq!(invalidate, Some(Conntrack::tag(Z, &T.reversed())));
        assert_eq!(c.classify(Z, &T.reversed()), Direction::Return);
        assert_eq!(c.classify(Z, &T), Direction::Forward);
        assert_eq!(
            c.classify(Tag(2), &T.reversed()),
            Direction::Forward,
            "zones are separate"
        );
        assert_eq!(
            c.commit(Z, T, 5),
            Ok(None),
            "known connections are refreshed"
        );
    }

    #[test]
    fn icmp_echo_replies_keep_the_id() {
        let mut c = Conntrack::default();
        let echo = Tuple {
            proto: IPPROTO_ICMP,
            src: [10, 0, 0, 1],
            dst: [1, 1, 1, 1],
            sport: 77,
            dport: 0,
        };
        c.commit(Z, echo, 0).unwrap();
        let reply = Tuple {
            src: echo.dst,
            dst: echo.src,
            ..echo
        };
        assert_eq!(c.classify(Z, &reply), Direction::Return);
    }

    #[test]
    fn full_table_refuses_new_connections_and_keeps_old_ones() {
        let mut c = Conntrack::with_capacity(1);
        c.commit(Z, T, 0).unwrap();
        let other = Tuple { sport: 5001, ..T };
        assert_eq!(c.commit(Z, other, 0), Err(Refused::TableFull));
        assert_eq!(c.counters.full, 1);
        assert_eq!(c.classify(Z, &T.reversed()), Direction::Return);
    }

    #[test]
    fn idle_connections_expire_unless_their_flows_are_used() {
        let mut c = Conntrack::default();
        let busy = Tuple { sport: 6000, ..T };
        c.commit(Z, T, 0).unwrap();
        c.commit(Z, busy, 0).unwrap();
        let busy_tag = Conntrack::tag(Z, &busy);
        let gone = c.expire(IDLE_NS + 1, |t| t == busy_tag);
        assert_eq!(
            gone,
            vec![Conntrack::tag(Z, &T), Conntrack::tag(Z, &T.reversed())]
        );
        assert_eq!(c.classify(Z, &T.reversed()), Direction::Forward);
        assert_eq!(c.classify(Z, &busy.reversed()), Direction::Return);
    }

    #[test]
    fn a_zone_at_its_share_refuses_new_connections_and_others_still_open() {
        let mut c = Conntrack::with_limits(100, 2);
        let other_zone = Tag(2);
        let conn = |sport: u16| Tuple { sport, ..T };
        c.commit(Z, conn(1), 0).unwrap();
        c.commit(Z, conn(2), 0).unwrap();
        assert_eq!(c.commit(Z, conn(3), 0), Err(Refused::ZoneLimit));
        assert_eq!(
            Refused::ZoneLimit.reason(),
            vnet_common::Reason::DeviceConntrackLimit
        );
        assert_eq!(c.counters.zone_limit, 1);
        assert_eq!(c.classify(Z, &conn(3).reversed()), Direction::Forward);
        // Its existing connections keep working.
        assert_eq!(c.commit(Z, conn(1), 5), Ok(None));
        assert_eq!(c.classify(Z, &conn(2).reversed()), Direction::Return);
        // Another zone is not affected.
        assert!(c.commit(other_zone, conn(3), 5).is_ok());
        assert!(c.commit(other_zone, conn(4), 5).is_ok());
        assert_eq!((c.zone_len(Z), c.zone_len(other_zone)), (2, 2));
        // An expired connection makes room again.
        c.commit(Z, conn(1), IDLE_NS + 10).unwrap();
        c.commit(other_zone, conn(3), IDLE_NS + 10).unwrap();
        c.commit(other_zone, conn(4), IDLE_NS + 10).unwrap();
        assert_eq!(c.expire(IDLE_NS + 6, |_| false).len(), 2, "conn(2) went");
        assert_eq!(c.zone_len(Z), 1);
        assert!(c.commit(Z, conn(3), IDLE_NS + 7).is_ok());
    }

    #[test]
    fn the_default_share_is_a_quarter_with_a_floor() {
        assert_eq!(Conntrack::default().per_zone(), DEFAULT_CAPACITY / 4);
        assert_eq!(Conntrack::with_capacity(2000).per_zone(), MIN_PER_ZONE);
        assert_eq!(Conntrack::with_capacity(1).per_zone(), 1);
    }

    /// Two tenants' bridges tracking every connection (their own zones),
    /// on real frames through the simulation.
    fn two_tenants() -> crate::sim::Snapshot {
        let yaml = "version: 1\nchains:\n  track:\n    - {action: continue, match: {conntrack: forward}}\n\
                    bridges:\n  t1:\n    inbound_filter: track\n    ports:\n      a: {interface: a1}\n      \
                    b: {interface: b1}\n  t2:\n    inbound_filter: track\n    ports:\n      \
                    a: {interface: a2}\n      b: {interface: b2}\n";
        let topo = vnet_model::parse_str(yaml).expect("valid topology");
        crate::sim::Snapshot::compile(&topo, 1)
    }

    #[test]
    fn a_tenant_at_its_share_is_refused_new_connections_on_real_frames() {
        use crate::packet::build::udp_frame;
        use crate::sim::{simulate, State, Verdict};
        use vnet_common::Reason;
        const A: [u8; 6] = [2, 0, 0, 0, 0xa, 1];
        const B: [u8; 6] = [2, 0, 0, 0, 0xb, 1];
        let snap = two_tenants();
        let mut st = State {
            conntrack: Conntrack::with_limits(100, 2).into(),
            ..State::default()
        };
        let port = |n: &str| snap.port_by_name(n).expect("port");
        let send = |st: &mut State, p: &str, f: Vec<u8>| {
            simulate(&snap, st, port(p), &f, 1, false).verdict
        };
        let open = |sport| udp_frame(A, B, [10, 0, 0, 1], [10, 0, 0, 2], sport, 53, b"q");
        assert_eq!(send(&mut st, "t1/a", open(4000)), Verdict::Flooded);
        assert_eq!(send(&mut st, "t1/a", open(4001)), Verdict::Flooded);
        assert_eq!(
            send(&mut st, "t1/a", open(4002)),
            Verdict::Dropped(Reason::DeviceConntrackLimit)
        );
        // t1's existing connections keep working both ways.
        assert_eq!(send(&mut st, "t1/a", open(4000)), Verdict::Flooded);
        let reply = udp_frame(B, A, [10, 0, 0, 2], [10, 0, 0, 1], 53, 4001, b"r");
        assert_eq!(send(&mut st, "t1/b", reply), Verdict::Forwarded);
        // The other tenant, with the same addresses, opens its own.
        for sport in [4000, 4001] {
            assert_eq!(send(&mut st, "t2/a", open(sport)), Verdict::Flooded);
        }
        assert_eq!(st.conntrack.counters.zone_limit, 1);
    }
}
