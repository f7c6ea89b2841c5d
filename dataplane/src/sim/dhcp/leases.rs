//! The leases of all bridges' dynamic pools: (bridge, MAC) → address, with
//! the reverse index (bridge, address) → holder.
//!
//! Static host entries are configuration and never appear here. A lease is
//! either *offered* (held for [`OFFER_HOLD_NS`] so that the address a
//! client was offered is still free when it asks for it) or *bound* (until
//! the lease time runs out). An address a client declined (RFC 2131: it
//! found the address in use) is held back for [`DECLINE_HOLD_NS`].
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
/// How long an offered address stays reserved for its client.
pub const OFFER_HOLD_NS: u64 = 60 * 1_000_000_000;
/// How long a declined address is not handed out (dnsmasq's choice).
pub const DECLINE_HOLD_NS: u64 = 600 * 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: [u8; 4],
    pub expires_ns: u64,
    pub bound: bool,
    /// The bridge's name, to write the lease out.
    pub bridge: String,
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

/// The table is full: nothing new can be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCounters {
    pub offered: u64,
    pub bound: u64,
    pub released: u64,
    pub declined: u64,
    pub expired: u64,
    pub full: u64,
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
    capacity: usize,
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
    pub fn with_capacity(capacity: usize) -> Leases {
        Leases {
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            capacity,
            revision: 0,
            counters: LeaseCounters::default(),
        }
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

    /// Reserves `ip` for `mac` as an offer. A bound lease of the same
    /// address stays bound; a lease of another address is given up. The
    /// caller checked that `ip` is free or already the client's.
    pub fn offer(&mut self, bridge: &str, mac: Mac, ip: [u8; 4], now_ns: u64) -> Result<(), Full> {
        let expires_ns = now_ns.saturating_add(OFFER_HOLD_NS);
        if let Some(l) = self.by_mac.get_mut(&(Tag::device(bridge), mac)) {
            if l.ip == ip && l.expires_ns > now_ns {
                if !l.bound {
                    l.expires_ns = expires_ns;
                }
                return Ok(());
            }
        }
        self.put(bridge, mac, ip, expires_ns, false)?;
        self.counters.offered += 1;
        Ok(())
    }

    /// Binds `ip` to `mac` for `lease_ns`, or extends the lease.
    pub fn bind(
        &mut self,
        bridge: &str,
        mac: Mac,
        ip: [u8; 4],
        lease_ns: u64,
        now_ns: u64,
    ) -> Result<(), Full> {
        self.put(bridge, mac, ip, now_ns.saturating_add(lease_ns), true)?;
        self.counters.bound += 1;
        self.revision += 1;
        Ok(())
    }

    /// Records (mac → ip) in both indexes, replacing the client's previous
    /// lease and any stale holder of the address.
    fn put(
        &mut self,
        bridge: &str,
        mac: Mac,
        ip: [u8; 4],
        expires_ns: u64,
        bound: bool,
    ) -> Result<(), Full> {
        let tag = Tag::device(bridge);
        let previous = self.by_mac.get(&(tag, mac)).map(|l| l.ip);
        let ip_known = self.by_ip.contains_key(&(tag, ip));
        if previous.is_none() && !ip_known && self.by_ip.len() >= self.capacity {
            self.counters.full += 1;
            return Err(Full);
        }
        if let Some(old) = previous.filter(|&old| old != ip) {
            self.by_ip.remove(&(tag, old));
        }
        // A stale lease of another client on this address loses it.
        if let Some(Use::Leased(other)) = self.by_ip.get(&(tag, ip)).copied() {
            if other != mac {
                self.by_mac.remove(&(tag, other));
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
            },
        );
        Ok(())
    }

    /// Withdraws an offer `mac` did not take (it chose another server).
    pub fn cancel_offer(&mut self, bridge: &str, mac: &Mac) {
        let tag = Tag::device(bridge);
        if let Some(l) = self.by_mac.get(&(tag, *mac)) {
            if !l.bound {
                let ip = l.ip;
                self.by_mac.remove(&(tag, *mac));
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
                self.by_mac.remove(&(tag, *mac));
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
                self.by_mac.remove(&(tag, *mac));
                self.by_ip.remove(&(tag, ip));
            }
        }
        self.counters.declined += 1;
        if !self.by_ip.contains_key(&(tag, ip)) && self.by_ip.len() >= self.capacity {
            self.counters.full += 1;
            return;
        }
        if let Some(Use::Leased(other)) = self.by_ip.get(&(tag, ip)).copied() {
            self.by_mac.remove(&(tag, other));
        }
        let until_ns = now_ns.saturating_add(DECLINE_HOLD_NS);
        self.by_ip.insert((tag, ip), Use::Declined { until_ns });
    }

    /// Removes expired leases and declines. Returns how many bound leases
    /// ran out.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let mut gone = Vec::new();
        self.by_mac.retain(|(tag, _), l| {
            let keep = l.expires_ns > now_ns;
            if !keep {
                gone.push((*tag, l.ip, l.bound));
            }
            keep
        });
        let mut bound = 0;
        for (tag, ip, was_bound) in gone {
            self.by_ip.remove(&(tag, ip));
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
            if self.put(&r.bridge, r.mac, r.ip, expires_ns, true).is_ok() {
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

    #[test]
    fn offer_then_bind_then_expire() {
        let mut t = Leases::default();
        t.offer(BR, A, IP1, 0).unwrap();
        assert_eq!(t.holder(BR, IP1, 1), Holder::Client(A));
        assert_eq!(t.revision(), 0, "offers are not written out");
        assert_eq!(
            t.holder(BR, IP1, OFFER_HOLD_NS),
            Holder::Free,
            "an offer not taken lapses"
        );
        t.bind(BR, A, IP1, 10 * S, S).unwrap();
        assert!(t.lease(BR, &A, 2 * S).unwrap().bound);
        assert_eq!(t.revision(), 1);
        t.offer(BR, A, IP1, 3 * S).unwrap();
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
        t.bind(BR, A, IP1, 10 * S, 0).unwrap();
        assert_eq!(t.holder("other", IP1, 1), Holder::Free);
        assert_eq!(t.lease("other", &A, 1), None);
    }

    #[test]
    fn a_client_holds_one_address() {
        let mut t = Leases::default();
        t.bind(BR, A, IP1, 10 * S, 0).unwrap();
        t.bind(BR, A, IP2, 10 * S, 1).unwrap();
        assert_eq!(t.holder(BR, IP1, 2), Holder::Free);
        assert_eq!(t.holder(BR, IP2, 2), Holder::Client(A));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_expired_lease_is_free_for_another_client_at_once() {
        let mut t = Leases::default();
        t.bind(BR, A, IP1, S, 0).unwrap();
        assert_eq!(t.holder(BR, IP1, 2 * S), Holder::Free);
        t.bind(BR, B, IP1, S, 2 * S).unwrap();
        assert_eq!(t.lease(BR, &A, 2 * S), None, "A's stale lease is gone");
        assert_eq!(t.holder(BR, IP1, 2 * S), Holder::Client(B));
    }

    #[test]
    fn release_frees_only_the_clients_own_address() {
        let mut t = Leases::default();
        t.bind(BR, A, IP1, 10 * S, 0).unwrap();
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
        t.offer(BR, A, IP1, 0).unwrap();
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
        t.bind(BR, A, IP1, 10 * S, 0).unwrap();
        assert_eq!(t.offer(BR, B, IP2, 1), Err(Full));
        assert_eq!(t.counters.full, 1);
        assert_eq!(t.holder(BR, IP1, 1), Holder::Client(A));
        t.bind(BR, A, IP1, 20 * S, 2).unwrap();
        assert_eq!(t.lease(BR, &A, 15 * S).unwrap().ip, IP1, "extending works");
    }

    #[test]
    fn records_round_trip_with_their_remaining_time() {
        let mut t = Leases::default();
        t.bind(BR, A, IP1, 10 * S, 0).unwrap();
        t.offer(BR, B, IP2, 0).unwrap();
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
}
