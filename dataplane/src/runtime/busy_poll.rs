//! How long the worker spins on its receive rings before it sleeps in
//! `poll` (vnetd's `--busy-poll-us`).
//!
//! A sleeping worker is woken by the kernel when a frame arrives; on these
//! VMs a wakeup from another CPU (an IPI to a halted vCPU) costs tens of µs,
//! paid by every first packet that finds the worker asleep. Spinning for a
//! short while after the last frame catches what follows closely (a ping's
//! reply, the next packets of a burst) without that wakeup. The price is
//! CPU: after each burst of traffic the worker's CPU stays busy for up to
//! the spin time, so a port receiving one first packet every millisecond
//! costs up to 5 % of a CPU at 50 µs.
//!
//! This is a spin in userspace on the rings' producer index, not the
//! socket's `SO_BUSY_POLL`/`SO_PREFER_BUSY_POLL`: those make the kernel
//! poll a device queue's NAPI context, and the sockets here are in copy
//! mode on veths and taps (no driver queue of their own to poll).
use std::fmt;

/// The longest spin accepted: beyond it the worker would hold its CPU
/// through gaps that are not bursts, for little gain.
pub const MAX_US: u32 = 1000;

/// The default spin, chosen by measurement (benches/RESULTS.md, "issue
/// 14: the miss path").
pub const DEFAULT_US: u32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    us: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusyPollError {
    #[error(
        "a busy poll of {0} µs is longer than the limit of {MAX_US} µs (the worker would keep \
         its CPU busy that long after every burst): give 0 (off) to {MAX_US}"
    )]
    TooLong(u64),
    #[error("`{0}` is not a number of microseconds: give 0 (off) to {MAX_US}")]
    NotANumber(String),
}

impl BusyPoll {
    /// No spin: the worker sleeps as soon as its rings are empty.
    pub const OFF: BusyPoll = BusyPoll { us: 0 };

    pub fn from_micros(us: u64) -> Result<BusyPoll, BusyPollError> {
        match u32::try_from(us) {
            Ok(us) if us <= MAX_US => Ok(BusyPoll { us }),
            _ => Err(BusyPollError::TooLong(us)),
        }
    }

    /// Parses a flag's value (µs).
    pub fn parse(s: &str) -> Result<BusyPoll, BusyPollError> {
        let us = s
            .trim()
            .parse::<u64>()
            .map_err(|_| BusyPollError::NotANumber(s.to_string()))?;
        BusyPoll::from_micros(us)
    }

    pub fn micros(self) -> u32 {
        self.us
    }

    pub fn ns(self) -> u64 {
        u64::from(self.us) * 1000
    }
}

impl Default for BusyPoll {
    fn default() -> Self {
        BusyPoll { us: DEFAULT_US }
    }
}

/// The number of µs, as the flag takes it (clap shows the default so).
impl fmt::Display for BusyPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_with_a_clear_error() {
        assert_eq!(BusyPoll::parse("0"), Ok(BusyPoll::OFF));
        assert_eq!(BusyPoll::parse("1000").map(BusyPoll::ns), Ok(1_000_000));
        assert_eq!(BusyPoll::parse(" 50 ").map(BusyPoll::micros), Ok(50));
        let e = BusyPoll::parse("1001").unwrap_err();
        assert_eq!(e, BusyPollError::TooLong(1001));
        let msg = e.to_string();
        assert!(
            msg.contains("1001 µs") && msg.contains("0 (off) to 1000"),
            "{msg}"
        );
        assert_eq!(
            BusyPoll::from_micros(u64::MAX),
            Err(BusyPollError::TooLong(u64::MAX))
        );
        for bad in ["-1", "5us", "", "1e3"] {
            let e = BusyPoll::parse(bad).unwrap_err();
            assert_eq!(e, BusyPollError::NotANumber(bad.to_string()));
            assert!(e.to_string().contains("not a number of microseconds"));
        }
        assert_eq!(BusyPoll::default().micros(), DEFAULT_US);
        let shown = BusyPoll::default().to_string();
        assert_eq!(
            BusyPoll::parse(&shown),
            Ok(BusyPoll::default()),
            "the default parses"
        );
        const { assert!(DEFAULT_US <= MAX_US) };
    }
}
