//! The leases of all bridges' dynamic pools: (bridge, MAC) → address, with
//! the reverse index (bridge, address) → holder.
//!
//! Static host entries are configuration and never appear here. A lease is
//! either *offered* (held for [`OFFER_HOLD_NS`] so that the address a
//! client was offered is still free when it asks for it) or *bound* (until
//! the lease time runs out). An address a client declined (RFC 2131: it
//! found the address in use) is held back for [`DECLINE_HOLD_NS`].
//!
//! Each lease is charged to the bridge port its client asked from, and a
//! port may hold at most `per_port` leases, offers included
//! ([`DEFAULT_PER_PORT`]: a guest with a few interfaces or containers, not a
//! guest inventing client MACs to drain the pool). The offer hold is short
//! ([`OFFER_HOLD_NS`]): real clients ask for their offer within a second,
//! and one that asks later still gets the address if it is free, so
//! clients that never ask (spoofed DISCOVERs) hold nothing for long.
//!
//! Bounded: when the table is full no new address is handed out (counted);
//! existing leases are never evicted to make room. Expired entries are
//! free at once (lookups ignore them) and removed by [`Leases::expire`].
//! Times are the simulation's monotonic nanoseconds; the runtime converts
//! them to wall-clock time when it persists the bound leases.
use crate::packet::Mac;
use crate::sim::Tag;
use std::collections::HashMap;

pub const DEFAULT_CAPACITY: usize = 64 * 1024;
/// Leases (offered or bound) one bridge port may hold.
pub const DEFAULT_PER_PORT: usize = 4;
/// How long an offered address stays reserved for its client.
pub const OFFER_HOLD_NS: u64 = 10 * 1_000_000_000;
/// How long a declined address is not handed out (dnsmasq's choice).
pub const DECLINE_HOLD_NS: u64 = 600 * 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: [u8; 4],
    pub expires_ns: u64,
    pub bound: bool,
    /// The bridge's name, to write the lease out.
    pub bridge: String,
    /// The port the lease is charged to: the one its client last asked
    /// from (none for a lease loaded from the file until it is renewed).
    pub port: Option<Tag>,
}

/// Who holds an address of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Free,
    Client(Mac),
    Declined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Leased(Mac),
    Declined { until_ns: u64 },
}

/// Why a lease was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table is full.
    Full,
    /// The client's port holds as many leases as it may.
    PortLimit,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCounters {
    pub offered: u64,
    pub bound: u64,
    pub released: u64,
    pub declined: u64,
    pub expired: u64,
    pub full: u64,
    /// Leases refused because the client's port held its share.
    pub port_limit: u64,
}

/// A bound lease as the runtime persists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub bridge: String,
    pub mac: Mac,
    pub ip: [u8; 4],
    pub remaining_ns: u64,
}

#[derive(Debug, Clone)]
pub struct Leases {
    by_mac: HashMap<(Tag, Mac), Lease>,
    by_ip: HashMap<(Tag, [u8; 4]), Use>,
    /// Port → the clients (bridge, MAC) whose leases it is charged with
    /// (expired ones until [`Leases::expire`] runs; no empty lists kept).
    by_port: HashMap<Tag, Vec<(Tag, Mac)>>,
    capacity: usize,
    per_port: usize,
    /// Changes whenever the set of bound leases or their expiry changes:
    /// the runtime writes the leases out when it moved.
    revision: u64,
    pub counters: LeaseCounters,
}

impl Default for Leases {
    fn default() -> Self {
        Leases::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Leases {
    /// A table of `capacity` leases, [`DEFAULT_PER_PORT`] per port.
    pub fn with_capacity(capacity: usize) -> Leases {
        Leases::with_limits(capacity, DEFAULT_PER_PORT)
    }

    /// A table of `capacity` leases of which one port may hold `per_port`.
    pub fn with_limits(capacity: usize, per_port: usize) -> Leases {
        Leases {
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            by_port: HashMap::new(),
            capacity,
            per_port,
            revision: 0,
            counters: LeaseCounters::default(),
        }
    }

    /// How many leases one port may hold.
    pub fn per_port(&self) -> usize {
        self.per_port
    }

    /// The unexpired leases (offered or bound) charged to `port`.
    pub fn port_leases(&self, port: Tag, now_ns: u64) -> usize {
        self.by_port.get(&port).map_or(0, |clients| {
            clients
                .iter()
                .filter(|k| self.by_mac.get(k).is_some_and(|l| l.expires_ns > now_ns))
                .count()
        })
    }

    /// Leases and declined addresses held (expired ones until
    /// [`Leases::expire`] runs).
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The unexpired lease of `mac` on `bridge`.
    pub fn lease(&self, bridge: &str, mac: &Mac, now_ns: u64) -> Option<&Lease> {
        self.by_mac
            .get(&(Tag::device(bridge), *mac))
            .filter(|l| l.expires_ns > now_ns)
    }

    /// Who holds `ip` on `bridge` now.
    pub fn holder(&self, bridge: &str, ip: [u8; 4], now_ns: u64) -> Holder {
        let tag = Tag::device(bridge);
        match self.by_ip.get(&(tag, ip)) {
            None => Holder::Free,
            Some(Use::Declined { until_ns }) if *until_ns > now_ns => Holder::Declined,
            Some(Use::Declined { .. }) => Holder::Free,
            Some(Use::Leased(mac)) => match self.by_mac.get(&(tag, *mac)) {
                Some(l) if l.ip == ip && l.expires_ns > now_ns => Holder::Client(*mac),
                _ => Holder::Free,
            },
        }
    }

    /// Reserves `ip` for `mac`, asking from `port`, as an offer. A bound
    /// lease of the same address stays bound; a lease of another address
    /// is given up. The caller checked that `ip` is free or already the
    /// client's.
    pub fn offer(
        &mut self,
        bridge: &str,
        port: Tag,
        mac: Mac,
        ip: [u8; 4],
        now_ns: u64,
    ) -> Result<(), Refused> {
        let expires_ns = now_ns.saturating_add(OFFER_HOLD_NS);
        if let Some(l) = self.by_mac.get_mut(&(Tag::device(bridge), mac)) {
            if l.ip == ip && l.expires_ns > now_ns && l.port == Some(port) {
                if !l.bound {
                    l.expires_ns = expires_ns;
                }
                return Ok(());
            }
        }
        self.put(bridge, Some(port), mac, ip, expires_ns, false, now_ns)?;
        self.counters.offered += 1;
        Ok(())
    }

    /// Binds `ip` to `mac`, asking from `port`, for `lease_ns`, or extends
    /// the lease.
    pub fn bind(
        &mut self,
        bridge: &str,
        port: Tag,
        mac: Mac,
        ip: [u8; 4],
        lease_ns: u64,
        now_ns: u64,
    ) -> Result<(), Refused> {
        let expires_ns = now_ns.saturating_add(lease_ns);
        self.put(bridge, Some(port), mac, ip, expires_ns, true, now_ns)?;
        self.counters.bound += 1;
        self.revision += 1;
        Ok(())
    }

    /// Records (mac → ip) in both indexes, replacing the client's previous
    /// lease and any stale holder of the address, charged to `port`. A
    /// client new to `port` needs room there.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        bridge: &str,
        port: Option<Tag>,
        mac: Mac,
        ip: [u8; 4],
        expires_ns: u64,
        bound: bool,
        now_ns: u64,
    ) -> Result<(), Refused> {
        let tag = Tag::device(bridge);
        let previous = self.by_mac.get(&(tag, mac)).map(|l| (l.ip, l.port));
        let ip_known = self.by_ip.contains_key(&(tag, ip));
        if previous.is_none() && !ip_known && self.by_ip.len() >= self.capacity {
            self.counters.full += 1;
            return Err(Refused::Full);
        }
        let previous_port = previous.and_then(|(_, p)| p);
        let moves = previous_port != port;
        if let Some(p) = port.filter(|_| moves) {
            if self.port_leases(p, now_ns) >= self.per_port {
                self.counters.port_limit += 1;
                return Err(Refused::PortLimit);
            }
        }
        if let Some((old, _)) = previous.filter(|&(old, _)| old != ip) {
            self.by_ip.remove(&(tag, old));
        }
        // A stale lease of another client on this address loses it.
        if let Some(Use::Leased(other)) = self.by_ip.get(&(tag, ip)).copied() {
            if other != mac {
                self.remove_client(tag, other);
            }
        }
        if moves {
            if let Some(p) = previous_port {
                self.uncharge(p, (tag, mac));
            }
            if let Some(p) = port {
                self.by_port.entry(p).or_default().push((tag, mac));
            }
        }
        self.by_ip.insert((tag, ip), Use::Leased(mac));
        self.by_mac.insert(
            (tag, mac),
            Lease {
                ip,
                expires_ns,
                bound,
                bridge: bridge.to_string(),
                port,
            },
        );
        Ok(())
    }

    /// Removes the client's lease from `by_mac` and from its port's list
    /// (not from `by_ip`: the callers know what the address becomes).
    fn remove_client(&mut self, bridge: Tag, mac: Mac) -> Option<Lease> {
        let lease = self.by_mac.remove(&(bridge, mac))?;
        if let Some(p) = lease.port {
            self.uncharge(p, (bridge, mac));
        }
        Some(lease)
    }

    fn uncharge(&mut self, port: Tag, client: (Tag, Mac)) {
        if let Some(clients) = self.by_port.get_mut(&port) {
            clients.retain(|c| *c != client);
            if clients.is_empty() {
                self.by_port.remove(&port);
            }
        }
    }

    /// Withdraws an offer `mac` did not take (it chose another server).
    pub fn cancel_offer(&mut self, bridge: &str, mac: &Mac) {
        let tag = Tag::device(bridge);
        if let Some(l) = self.by_mac.get(&(tag, *mac)) {
            if !l.bound {
                let ip = l.ip;
                self.remove_client(tag, *mac);
                self.by_ip.remove(&(tag, ip));
            }
        }
    }

    /// Frees the lease of `mac` if it is for `ip`. Returns whether it was.
    pub fn release(&mut self, bridge: &str, mac: &Mac, ip: [u8; 4]) -> bool {
        let tag = Tag::device(bridge);
        match self.by_mac.get(&(tag, *mac)) {
            Some(l) if l.ip == ip => {
                if l.bound {
                    self.revision += 1;
                }
                self.remove_client(tag, *mac);
                self.by_ip.remove(&(tag, ip));
                self.counters.released += 1;
                true
            }
            _ => false,
        }
    }

    /// `mac` found `ip` in use: its lease of `ip` goes, and nobody gets
    /// `ip` for [`DECLINE_HOLD_NS`].
    pub fn decline(&mut self, bridge: &str, mac: &Mac, ip: [u8; 4], now_ns: u64) {
        let tag = Tag::device(bridge);
        if let Some(l) = self.by_mac.get(&(tag, *mac)) {
            if l.ip == ip {
                if l.bound {
                    self.revision += 1;
                }
                self.remove_client(tag, *mac);
                self.by_ip.remove(&(tag, ip));
            }
        }
        self.counters.declined += 1;
        if !self.by_ip.contains_key(&(tag, ip)) && self.by_ip.len() >= self.capacity {
            self.counters.full += 1;
            return;
        }
        if let Some(Use::Leased(other)) = self.by_ip.get(&(tag, ip)).copied() {
            self.remove_client(tag, other);
        }
        let until_ns = now_ns.saturating_add(DECLINE_HOLD_NS);
        self.by_ip.insert((tag, ip), Use::Declined { until_ns });
    }

    /// Removes expired leases and declines. Returns how many bound leases
    /// ran out.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let mut gone = Vec::new();
        self.by_mac.retain(|(tag, mac), l| {
            let keep = l.expires_ns > now_ns;
            if !keep {
                gone.push((*tag, *mac, l.ip, l.bound, l.port));
            }
            keep
        });
        let mut bound = 0;
        for (tag, mac, ip, was_bound, port) in gone {
            self.by_ip.remove(&(tag, ip));
            if let Some(p) = port {
                self.uncharge(p, (tag, mac));
            }
            bound += usize::from(was_bound);
        }
        self.by_ip.retain(|_, u| match u {
            Use::Declined { until_ns } => *until_ns > now_ns,
            Use::Leased(_) => true,
        });
        if bound > 0 {
            self.revision += 1;
        }
        self.counters.expired += bound as u64;
        bound
    }

    /// The unexpired bound leases, for persisting.
    pub fn records(&self, now_ns: u64) -> Vec<Record> {
        let mut v: Vec<Record> = self
            .by_mac
            .iter()
            .filter(|(_, l)| l.bound && l.expires_ns > now_ns)
            .map(|((_, mac), l)| Record {
                bridge: l.bridge.clone(),
                mac: *mac,
                ip: l.ip,
                remaining_ns: l.expires_ns - now_ns,
            })
            .collect();
        v.sort_by(|a, b| (&a.bridge, a.ip).cmp(&(&b.bridge, b.ip)));
        v
    }

    /// Loads persisted leases as bound. A record whose address is already
    /// held is skipped; so are records beyond the capacity. Returns how
    /// many were loaded. Does not count as a change to write out.
    pub fn restore(&mut self, records: &[Record], now_ns: u64) -> usize {
        let mut loaded = 0;
        for r in records.iter().filter(|r| r.remaining_ns > 0) {
            if self.holder(&r.bridge, r.ip, now_ns) != Holder::Free
                || self.lease(&r.bridge, &r.mac, now_ns).is_some()
            {
                continue;
            }
            let expires_ns = now_ns.saturating_add(r.remaining_ns);
            // Charged to no port: the file does not say which; the
            // client's next renewal charges its port.
            if self
                .put(&r.bridge, None, r.mac, r.ip, expires_ns, true, now_ns)
                .is_ok()
            {
                loaded += 1;
            }
        }
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BR: &str = "tenant";
    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];
    const IP1: [u8; 4] = [10, 0, 0, 100];
    const IP2: [u8; 4] = [10, 0, 0, 101];
    const S: u64 = 1_000_000_000;
    /// The port the clients ask from.
    const P: Tag = Tag(77);

    #[test]
    fn offer_then_bind_then_expire() {
        let mut t = Leases::default();
        t.offer(BR, P, A, IP1, 0).unwrap();
        assert_eq!(t.holder(BR, IP1, 1), Holder::Client(A));
        assert_eq!(t.revision(), 0, "offers are not written out");
        assert_eq!(
            t.holder(BR, IP1, OFFER_HOLD_NS),
            Holder::Free,
            "an offer not taken lapses"
        );
        t.bind(BR, P, A, IP1, 10 * S, S).unwrap();
        assert!(t.lease(BR, &A, 2 * S).unwrap().bound);
        assert_eq!(t.revision(), 1);
        t.offer(BR, P, A, IP1, 3 * S).unwrap();
        assert!(
            t.lease(BR, &A, 3 * S).unwrap().bound,
            "a new offer of the same address keeps it bound"
        );
        assert_eq!(t.expire(10 * S), 0);
        assert_eq!(t.expire(11 * S), 1);
        assert!(t.is_empty());
        assert_eq!(t.lease(BR, &A, 11 * S), None);
        assert_eq!(t.counters.expired, 1);
        assert_eq!(t.revision(), 2);
    }

    #[test]
    fn bridges_do_not_share_leases() {
        let mut t = Leases::default();
        t.bind(BR, P, A, IP1, 10 * S, 0).unwrap();
        assert_eq!(t.holder("other", IP1, 1), Holder::Free);
        assert_eq!(t.lease("other", &A, 1), None);
    }

    #[test]
    fn a_client_holds_one_address() {
        let mut t = Leases::default();
        t.bind(BR, P, A, IP1, 10 * S, 0).unwrap();
        t.bind(BR, P, A, IP2, 10 * S, 1).unwrap();
        assert_eq!(t.holder(BR, IP1, 2), Holder::Free);
        assert_eq!(t.holder(BR, IP2, 2), Holder::Client(A));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_expired_lease_is_free_for_another_client_at_once() {
        let mut t = Leases::default();
        t.bind(BR, P, A, IP1, S, 0).unwrap();
        assert_eq!(t.holder(BR, IP1, 2 * S), Holder::Free);
        t.bind(BR, P, B, IP1, S, 2 * S).unwrap();
        assert_eq!(t.lease(BR, &A, 2 * S), None, "A's stale lease is gone");
        assert_eq!(t.holder(BR, IP1, 2 * S), Holder::Client(B));
    }

    #[test]
    fn release_frees_only_the_clients_own_address() {
        let mut t = Leases::default();
        t.bind(BR, P, A, IP1, 10 * S, 0).unwrap();
        assert!(!t.release(BR, &A, IP2));
        assert!(!t.release(BR, &B, IP1));
        assert_eq!(t.holder(BR, IP1, 1), Holder::Client(A));
        assert!(t.release(BR, &A, IP1));
        assert_eq!(t.holder(BR, IP1, 1), Holder::Free);
        assert_eq!(t.revision(), 2);
    }

    #[test]
    fn a_declined_address_is_held_back_for_a_while() {
        let mut t = Leases::default();
        t.offer(BR, P, A, IP1, 0).unwrap();
        t.decline(BR, &A, IP1, S);
        assert_eq!(t.lease(BR, &A, S), None);
        assert_eq!(t.holder(BR, IP1, S), Holder::Declined);
        assert_eq!(t.holder(BR, IP1, S + DECLINE_HOLD_NS), Holder::Free);
        t.expire(S + DECLINE_HOLD_NS);
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_hands_out_nothing_new_and_keeps_what_it_has() {
        let mut t = Leases::with_capacity(1);
        t.bind(BR, P, A, IP1, 10 * S, 0).unwrap();
        assert_eq!(t.offer(BR, P, B, IP2, 1), Err(Refused::Full));
        assert_eq!(t.counters.full, 1);
        assert_eq!(t.holder(BR, IP1, 1), Holder::Client(A));
        t.bind(BR, P, A, IP1, 20 * S, 2).unwrap();
        assert_eq!(t.lease(BR, &A, 15 * S).unwrap().ip, IP1, "extending works");
    }

    #[test]
    fn records_round_trip_with_their_remaining_time() {
        let mut t = Leases::default();
        t.bind(BR, P, A, IP1, 10 * S, 0).unwrap();
        t.offer(BR, P, B, IP2, 0).unwrap();
        let records = t.records(4 * S);
        assert_eq!(
            records,
            vec![Record {
                bridge: BR.into(),
                mac: A,
                ip: IP1,
                remaining_ns: 6 * S
            }],
            "offers are not persisted"
        );
        let mut u = Leases::default();
        assert_eq!(u.restore(&records, 100 * S), 1);
        assert_eq!(u.lease(BR, &A, 105 * S).unwrap().ip, IP1);
        assert_eq!(u.lease(BR, &A, 106 * S), None);
        assert_eq!(u.revision(), 0);
        assert_eq!(u.restore(&records, 100 * S), 0, "already there");
    }

    fn mac(n: u8) -> Mac {
        [2, 0, 0, 0, 2, n]
    }

    fn ip(n: u8) -> [u8; 4] {
        [10, 0, 0, n]
    }

    #[test]
    fn a_port_holds_at_most_its_share_and_other_ports_are_not_affected() {
        let mut t = Leases::with_limits(100, 2);
        let q = Tag(88);
        t.offer(BR, P, mac(1), ip(1), 0).unwrap();
        t.bind(BR, P, mac(2), ip(2), 100 * S, 0).unwrap();
        assert_eq!(t.offer(BR, P, mac(3), ip(3), 0), Err(Refused::PortLimit));
        assert_eq!(
            t.bind(BR, P, mac(3), ip(3), 100 * S, 0),
            Err(Refused::PortLimit)
        );
        assert_eq!(t.holder(BR, ip(3), 0), Holder::Free, "nothing held");
        assert_eq!(t.counters.port_limit, 2);
        // The port's own clients go on: re-offered, bound, renewed.
        t.offer(BR, P, mac(1), ip(1), S).unwrap();
        t.bind(BR, P, mac(1), ip(1), 100 * S, S).unwrap();
        t.bind(BR, P, mac(2), ip(2), 100 * S, S).unwrap();
        // Another port is not affected.
        t.offer(BR, q, mac(3), ip(3), S).unwrap();
        t.offer(BR, q, mac(4), ip(4), S).unwrap();
        assert_eq!((t.port_leases(P, S), t.port_leases(q, S)), (2, 2));
        // A released lease makes room on its port.
        assert!(t.release(BR, &mac(2), ip(2)));
        assert_eq!(t.port_leases(P, S), 1);
        t.offer(BR, P, mac(5), ip(5), S).unwrap();
        // A client that moves is charged to its new port, which needs room.
        assert_eq!(t.offer(BR, q, mac(1), ip(1), S), Err(Refused::PortLimit));
        assert_eq!(t.lease(BR, &mac(1), S).unwrap().port, Some(P), "unchanged");
        t.cancel_offer(BR, &mac(4));
        t.bind(BR, q, mac(1), ip(1), 100 * S, S).unwrap();
        assert_eq!((t.port_leases(P, S), t.port_leases(q, S)), (1, 2));
    }

    #[test]
    fn offers_never_taken_lapse_quickly_and_free_their_port() {
        let mut t = Leases::with_limits(100, 4);
        for n in 1..=4 {
            t.offer(BR, P, mac(n), ip(n), 0).unwrap();
        }
        assert_eq!(t.offer(BR, P, mac(5), ip(5), S), Err(Refused::PortLimit));
        // Once they lapse, the addresses and the port's share are free,
        // before any sweep.
        assert_eq!(t.holder(BR, ip(1), OFFER_HOLD_NS), Holder::Free);
        t.offer(BR, P, mac(5), ip(5), OFFER_HOLD_NS).unwrap();
        assert_eq!(t.port_leases(P, OFFER_HOLD_NS), 1);
        t.expire(OFFER_HOLD_NS);
        assert_eq!(t.len(), 1, "the lapsed offers are gone");
        assert_eq!(t.by_port.get(&P).map(Vec::len), Some(1));
    }

    #[test]
    fn restored_leases_are_charged_to_the_port_that_renews_them() {
        let mut t = Leases::with_limits(100, 1);
        t.bind(BR, P, mac(1), ip(1), 100 * S, 0).unwrap();
        let mut u = Leases::with_limits(100, 1);
        assert_eq!(u.restore(&t.records(0), 0), 1);
        assert_eq!(u.port_leases(P, 0), 0);
        u.bind(BR, P, mac(1), ip(1), 100 * S, S).unwrap();
        assert_eq!(u.port_leases(P, S), 1);
        assert_eq!(u.offer(BR, P, mac(2), ip(2), S), Err(Refused::PortLimit));
    }
}
