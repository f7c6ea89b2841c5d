//! The leaser of this host's SNAT port blocks (many hosts; the blocks and
//! why: `vnet_dataplane::sim::nat_blocks`). It runs on the control thread,
//! takes blocks through the store and hands them to the simulation, which
//! never waits for it:
//!
//! - every public address of the dynamic SNAT rules (the first
//!   [`PRELEASED`]) gets one block as soon as the topology names it, so a
//!   first connection finds a port;
//! - an address that had no free port left (`NatBlocks::want`) gets as many
//!   blocks again as it holds, at once;
//! - an address that handed out half of its ports within a second gets as
//!   many again too, before it runs out;
//! - when this host's registration is a new one (its etcd lease expired
//!   and was granted again) every address's blocks are claimed again under
//!   it: the store kept none of them, and another host may have taken some.
//!
//! With etcd unreachable nothing is leased: the host gives ports out of
//! what it holds, and tries again every [`RETRY`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vnet_dataplane::sim::nat_blocks::{BlockSet, Demand, NatBlocks};
use vnet_store::{NatBlockClaim, Store};

/// The public addresses of dynamic SNAT rules and their port ranges.
pub type Targets = BTreeMap<[u8; 4], (u16, u16)>;

/// Addresses given a block before any connection asks.
pub const PRELEASED: usize = 256;
/// How often the simulation's demand is looked at.
const TICK: Duration = Duration::from_millis(100);
/// The window of "half its ports within a second".
const WINDOW: Duration = Duration::from_secs(1);
/// Claims per tick, so that a topology of many addresses is leased over a
/// few ticks rather than in one long burst on the store.
const CLAIMS_PER_TICK: usize = 32;
/// After a failed claim, the next try of that address.
const RETRY: Duration = Duration::from_secs(1);
/// After a claim that found no free block, the next try of that address
/// (the other hosts hold them all: asking every 100 ms would only load
/// etcd).
const NONE_FREE: Duration = Duration::from_secs(5);
/// The most blocks one claim asks for (1024 ports): growth doubles what an
/// address holds, but no faster than this per claim.
const MAX_MORE: usize = 16;

/// What the leaser shares with the compiler of snapshots: the blocks (put
/// into every snapshot) and the targets of the latest one.
#[derive(Debug)]
pub struct NatLeasing {
    pub blocks: Arc<NatBlocks>,
    pub targets: tokio::sync::watch::Sender<Targets>,
}

impl NatLeasing {
    pub fn new() -> NatLeasing {
        NatLeasing {
            blocks: Arc::new(NatBlocks::new()),
            targets: tokio::sync::watch::channel(Targets::new()).0,
        }
    }
}

/// Leases blocks for `host` until `stop`.
pub async fn run(
    store: Arc<dyn Store>,
    host: String,
    leasing: Arc<NatLeasing>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut targets = leasing.targets.subscribe();
    let blocks = leasing.blocks.clone();
    // The registration epoch each address was last claimed under.
    let mut claimed: BTreeMap<[u8; 4], u64> = BTreeMap::new();
    let mut failed: BTreeMap<[u8; 4], Instant> = BTreeMap::new();
    let mut demand = Demand::default();
    let mut window = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        let urgent = blocks.urgent();
        if !urgent && now.duration_since(window) < WINDOW && !targets.has_changed().unwrap_or(false)
        {
            continue;
        }
        let d = blocks.take_demand();
        demand.wanted.extend(d.wanted);
        for (a, n) in d.handed {
            *demand.handed.entry(a).or_default() += n;
        }
        let window_over = now.duration_since(window) >= WINDOW;
        let wanted_targets = targets.borrow_and_update().clone();
        let claims = plan(
            &host,
            &wanted_targets,
            &blocks.all_held(),
            &demand,
            window_over,
            store.registration_epoch(),
            &claimed,
        );
        let claims: Vec<NatBlockClaim> = claims
            .into_iter()
            .filter(|c| failed.get(&c.address.octets()).is_none_or(|t| now >= *t))
            .take(CLAIMS_PER_TICK)
            .collect();
        demand.wanted.clear();
        if window_over {
            demand.handed.clear();
            window = now;
        }
        if claims.is_empty() {
            continue;
        }
        let epoch = store.registration_epoch();
        let store = store.clone();
        let answers = tokio::task::spawn_blocking(move || {
            claims
                .into_iter()
                .map(|c| {
                    let got = store.claim_nat_blocks(&c);
                    (c, got)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (c, got) in answers {
            let address = c.address.octets();
            match got {
                Ok(Some(held)) => {
                    let before = blocks.held(address).len();
                    if !blocks.set_held(address, held.iter().copied().collect::<BlockSet>()) {
                        tracing::warn!(address = %c.address, "too many SNAT addresses to lease ports of; this one gets none");
                        continue;
                    }
                    claimed.insert(address, epoch);
                    failed.remove(&address);
                    if held.len() != before {
                        tracing::info!(address = %c.address, blocks = held.len(), ports = held.len() * 64, "SNAT port blocks held");
                    }
                    if held.len() < before + c.more {
                        tracing::debug!(address = %c.address, asked = c.more, "fewer SNAT port blocks free than asked");
                    }
                    if c.more > 0 && held.len() <= before {
                        failed.insert(address, now + NONE_FREE);
                    }
                }
                // A store of one host: every port is ours; never asked again.
                Ok(None) => {
                    claimed.insert(address, epoch);
                }
                Err(e) => {
                    tracing::warn!(address = %c.address, "leasing SNAT port blocks: {e}; retrying in {} s", RETRY.as_secs());
                    failed.insert(address, now + RETRY);
                }
            }
        }
    }
}

/// The claims to make now (see the module's documentation).
fn plan(
    host: &str,
    targets: &Targets,
    held: &BTreeMap<[u8; 4], BlockSet>,
    demand: &Demand,
    window_over: bool,
    epoch: u64,
    claimed: &BTreeMap<[u8; 4], u64>,
) -> Vec<NatBlockClaim> {
    let addresses: BTreeSet<[u8; 4]> = targets
        .keys()
        .take(PRELEASED)
        .chain(demand.wanted.iter())
        .chain(held.keys())
        .copied()
        .collect();
    let mut claims = Vec::new();
    for address in addresses {
        let ports = targets.get(&address).copied().unwrap_or((1024, 65535));
        let mine = held.get(&address).copied().unwrap_or_default();
        let n = mine.len();
        let mut more = 0;
        if n == 0 && (targets.contains_key(&address) || demand.wanted.contains(&address)) {
            more = 1;
        }
        if n > 0 && demand.wanted.contains(&address) {
            more = n;
        }
        let handed = demand.handed.get(&address).copied().unwrap_or(0);
        if window_over && n > 0 && handed as usize * 2 >= mine.ports_in(ports.0, ports.1) {
            more = more.max(n);
        }
        let stale = claimed.get(&address) != Some(&epoch);
        let more = more.min(MAX_MORE);
        if more > 0 || (stale && n > 0) {
            claims.push(NatBlockClaim {
                host: host.to_string(),
                address: Ipv4Addr::from(address),
                ports,
                held: mine.iter().collect(),
                more,
            });
        }
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 4] = [192, 0, 2, 10];

    fn targets() -> Targets {
        [(A, (1024, 65535))].into_iter().collect()
    }

    #[test]
    fn a_target_gets_one_block_then_nothing_until_it_needs_more() {
        let (none, unclaimed) = (BTreeMap::new(), BTreeMap::new());
        let c = plan(
            "h1",
            &targets(),
            &none,
            &Demand::default(),
            true,
            7,
            &unclaimed,
        );
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].more, c[0].held.len()), (1, 0));
        let held: BTreeMap<_, _> = [(A, [16u16].into_iter().collect::<BlockSet>())].into();
        let claimed: BTreeMap<_, _> = [(A, 7u64)].into();
        assert!(plan(
            "h1",
            &targets(),
            &held,
            &Demand::default(),
            true,
            7,
            &claimed
        )
        .is_empty());
        // Half of its 64 ports handed out within the window: as many again.
        let mut d = Demand::default();
        d.handed.insert(A, 32);
        let c = plan("h1", &targets(), &held, &d, true, 7, &claimed);
        assert_eq!((c.len(), c[0].more, c[0].held.clone()), (1, 1, vec![16]));
        // Not before the window is over.
        assert!(plan("h1", &targets(), &held, &d, false, 7, &claimed).is_empty());
    }

    #[test]
    fn wanted_doubles_and_a_new_registration_claims_again() {
        let held: BTreeMap<_, _> = [(A, [16u16, 17].into_iter().collect::<BlockSet>())].into();
        let claimed: BTreeMap<_, _> = [(A, 7u64)].into();
        let mut d = Demand::default();
        d.wanted.insert(A);
        let c = plan("h1", &targets(), &held, &d, false, 7, &claimed);
        assert_eq!((c.len(), c[0].more), (1, 2));
        // A new lease (epoch 8): claimed again, asking nothing more.
        let c = plan(
            "h1",
            &targets(),
            &held,
            &Demand::default(),
            false,
            8,
            &claimed,
        );
        assert_eq!(
            (c.len(), c[0].more, c[0].held.clone()),
            (1, 0, vec![16, 17])
        );
    }
}
