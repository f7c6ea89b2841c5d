//! Upcall budgets: a token bucket per ingress port, as MidoNet's, checked
//! for every frame the kernel hands to userspace before anything else is
//! done with it (no copy, no parse, no simulation).
//!
//! Every miss of the kernel's flow table costs the one worker a simulation
//! and an install (a few µs; benches/RESULTS.md: 150 k new flows/s). A guest
//! opening new flows as fast as it can would otherwise take all of that and
//! delay every other port's first packets; with a budget it takes at most
//! its rate, and its excess first packets are dropped and counted
//! (`upcall_budget`), like packets lost on a congested link: TCP and DNS
//! retry. The default (2 000/s, bursts of 500) is far above what a guest
//! opening connections normally needs, and 75 ports at their full rate
//! still fit in what one worker sustains.

/// The rate and burst of every port's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpcallLimit {
    /// Upcalls per second a port is granted; 0 means no limit.
    pub per_sec: u32,
    /// How many upcalls a port that was quiet may send at once.
    pub burst: u32,
}

pub const DEFAULT_PER_SEC: u32 = 2000;
pub const DEFAULT_BURST: u32 = 500;

/// How many guests' worth of budget a router's exterior port (an uplink)
/// gets: the first packets of every tenant's inbound connections and
/// replies arrive there, so a guest's budget would cap the whole host,
/// while an unbounded one would let the outside flood the worker.
pub const UPLINK_FACTOR: u32 = 16;

impl Default for UpcallLimit {
    fn default() -> Self {
        UpcallLimit {
            per_sec: DEFAULT_PER_SEC,
            burst: DEFAULT_BURST,
        }
    }
}

impl UpcallLimit {
    /// The budget of an uplink (`UPLINK_FACTOR` guests' worth).
    pub fn for_uplink(self) -> UpcallLimit {
        UpcallLimit {
            per_sec: self.per_sec.saturating_mul(UPLINK_FACTOR),
            burst: self.burst.saturating_mul(UPLINK_FACTOR),
        }
    }
}

/// One token is this many units: with time in ns, a rate of `per_sec`
/// tokens a second adds exactly `per_sec` units per ns, so the arithmetic
/// stays in integers without rounding.
const UNIT: u64 = 1_000_000_000;

/// A token bucket; full when new.
#[derive(Debug, Clone, Default)]
pub struct TokenBucket {
    /// Tokens in units; `None` until the first frame (then full).
    units: Option<u64>,
    last_ns: u64,
}

impl TokenBucket {
    /// Takes one token at `now_ns` if there is one.
    pub fn take(&mut self, now_ns: u64, limit: &UpcallLimit) -> bool {
        if limit.per_sec == 0 {
            return true;
        }
        let cap = u64::from(limit.burst.max(1)) * UNIT;
        let units = match self.units {
            None => cap,
            Some(u) => {
                let elapsed = now_ns.saturating_sub(self.last_ns);
                u.saturating_add(elapsed.saturating_mul(u64::from(limit.per_sec)))
                    .min(cap)
            }
        };
        self.last_ns = now_ns;
        if units >= UNIT {
            self.units = Some(units - UNIT);
            true
        } else {
            self.units = Some(units);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn taken(b: &mut TokenBucket, now_ns: u64, n: u32, limit: &UpcallLimit) -> u32 {
        (0..n).filter(|_| b.take(now_ns, limit)).count() as u32
    }

    #[test]
    fn an_uplink_gets_sixteen_guests_worth() {
        let limit = UpcallLimit::default().for_uplink();
        assert_eq!((limit.per_sec, limit.burst), (32_000, 8_000));
        let off = UpcallLimit {
            per_sec: 0,
            burst: 0,
        }
        .for_uplink();
        assert_eq!(off.per_sec, 0, "no limit stays no limit");
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limit = UpcallLimit {
            per_sec: 1000,
            burst: 50,
        };
        let mut b = TokenBucket::default();
        assert_eq!(taken(&mut b, 0, 80, &limit), 50, "the burst");
        assert_eq!(taken(&mut b, 10 * MS, 80, &limit), 10, "1 per ms");
        assert_eq!(taken(&mut b, 10 * MS + MS / 2, 1, &limit), 0);
        assert_eq!(taken(&mut b, 11 * MS, 1, &limit), 1, "half tokens add up");
        // A long quiet time refills to the burst, not beyond.
        assert_eq!(taken(&mut b, 3600 * 1000 * MS, 80, &limit), 50);
    }

    #[test]
    fn a_flooding_port_gets_its_rate_over_a_second() {
        let limit = UpcallLimit::default();
        let mut b = TokenBucket::default();
        // 100 000 first packets over one second, one every 10 µs.
        let got = (0..100_000u64)
            .filter(|i| b.take(i * 10_000, &limit))
            .count() as u32;
        assert!(
            (DEFAULT_PER_SEC + DEFAULT_BURST - 2..=DEFAULT_PER_SEC + DEFAULT_BURST).contains(&got),
            "{got}"
        );
    }

    #[test]
    fn buckets_are_per_port_and_zero_means_no_limit() {
        let limit = UpcallLimit {
            per_sec: 10,
            burst: 1,
        };
        let (mut flooder, mut quiet) = (TokenBucket::default(), TokenBucket::default());
        assert_eq!(taken(&mut flooder, 0, 1000, &limit), 1);
        assert!(quiet.take(0, &limit), "another port's bucket is untouched");
        let off = UpcallLimit {
            per_sec: 0,
            burst: 0,
        };
        assert_eq!(taken(&mut flooder, 0, 1000, &off), 1000);
    }
}
