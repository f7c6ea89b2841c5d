//! SNAT port blocks leased per host: `nat/<address>/<block>` holds the
//! name of the host that may give that block's 64 ports, under the host's
//! lease, so a host that dies frees its blocks when its lease expires.
//!
//! A claim reads the address's blocks (one range read), then in one Txn
//! creates the blocks it takes only if absent (`create_revision == 0`):
//! two hosts racing for a block cannot both get it — the loser's compare
//! fails, it reads again and picks others. New blocks are taken in order
//! from a place that depends on the host's name alone, so hosts rarely
//! race, and a host whose lease expired (etcd unreachable, or a restart:
//! a restarted vnetd registers once its old lease has run out) takes back
//! the same blocks if nobody took them meanwhile — the ports of the
//! connections its kernel flows still translate. Blocks are never given
//! back while their host lives (they hold the ports of connections that
//! may still be open).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use vnet_store::{NatBlockClaim, StoreError};

use crate::layout::fnv1a;
use crate::txn::prefix_end;
use crate::Shared;

/// Blocks of an address (65536 ports / 64).
const BLOCKS: u16 = 1024;
const BLOCK_PORTS: u32 = 64;
/// Writes of one Txn, under etcd's `--max-txn-ops` (128 by default).
const MAX_OPS: usize = 100;
/// Reads again after losing a race, at most.
const RETRIES: usize = 8;

/// Claims blocks for `claim.host` under `lease`; returns every block of
/// the address the host holds afterwards.
pub async fn claim(
    shared: Arc<Shared>,
    lease: i64,
    claim: NatBlockClaim,
) -> Result<Vec<u16>, StoreError> {
    let what = format!(
        "leasing SNAT ports of {} for host {}",
        claim.address, claim.host
    );
    if lease == 0 {
        return Err(shared.error(&what, "this vnetd is not registered as a host (--host)"));
    }
    let mut more = claim.more.min(usize::from(BLOCKS));
    let mut client = shared.client.clone();
    // Ends: a pass that commits writes at least one new key (at most
    // BLOCKS of them), and lost races are counted.
    let mut lost_races = 0;
    loop {
        let prefix = shared.keys.nat_blocks(claim.address);
        let resp = client
            .get(
                prefix.clone(),
                Some(GetOptions::new().with_range(prefix_end(&prefix))),
            )
            .await
            .map_err(|e| shared.error(&what, e))?;
        // block → its holder
        let mut taken: BTreeMap<u16, String> = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let Some(block) = key
                .strip_prefix(&prefix)
                .and_then(|b| b.parse::<u16>().ok())
                .filter(|&b| b < BLOCKS)
            else {
                tracing::warn!(%key, "ignoring a key that is not a SNAT port block");
                continue;
            };
            let holder = String::from_utf8_lossy(kv.value()).into_owned();
            taken.insert(block, holder);
        }
        let mine: BTreeSet<u16> = taken
            .iter()
            .filter(|(_, h)| **h == claim.host)
            .map(|(&b, _)| b)
            .collect();
        let put = |b: u16| {
            TxnOp::put(
                shared.keys.nat_block(claim.address, b),
                claim.host.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
        };
        let (mut compares, mut puts, mut gained) = (Vec::new(), Vec::new(), BTreeSet::new());
        // Held as far as the host knows, lost with an expired lease, and
        // free still: taken again. Then the new ones.
        let lost = claim
            .held
            .iter()
            .copied()
            .filter(|b| *b < BLOCKS && !taken.contains_key(b));
        // In order from the host's own block number, wrapping.
        let start = (fnv1a(&claim.host) % u64::from(BLOCKS)) as u16;
        let free: Vec<u16> = (0..BLOCKS)
            .map(|k| (start + k) % BLOCKS)
            .filter(|b| !taken.contains_key(b) && overlaps(*b, claim.ports))
            .collect();
        let new = free.iter().copied().take(more);
        for b in lost.chain(new) {
            if puts.len() >= MAX_OPS || gained.contains(&b) {
                continue;
            }
            let key = shared.keys.nat_block(claim.address, b);
            compares.push(Compare::create_revision(key, CompareOp::Equal, 0));
            puts.push(put(b));
            gained.insert(b);
        }
        if puts.is_empty() {
            return Ok(mine.into_iter().collect());
        }
        let puts_len = puts.len();
        let resp = client
            .txn(Txn::new().when(compares).and_then(puts))
            .await
            .map_err(|e| shared.error(&what, e))?;
        if resp.succeeded() {
            let newly = gained.iter().filter(|b| !claim.held.contains(b)).count();
            more = more.saturating_sub(newly);
            let held: Vec<u16> = mine.union(&gained).copied().collect();
            // A full batch may have left blocks to take back or to take:
            // go on from a fresh read.
            let batch_full = puts_len >= MAX_OPS;
            if (more == 0 || free.len() <= newly) && !batch_full {
                return Ok(held);
            }
            continue;
        }
        lost_races += 1;
        if lost_races >= RETRIES {
            return Err(shared.error(
                &what,
                format!(
                    "lost the race for SNAT port blocks to other hosts {RETRIES} times in a row"
                ),
            ));
        }
        tracing::debug!(address = %claim.address, "another host took a SNAT block first; reading again");
    }
}

/// Whether block `b` has a port in `ports`.
fn overlaps(b: u16, (lo, hi): (u16, u16)) -> bool {
    let first = u32::from(b) * BLOCK_PORTS;
    let last = first + BLOCK_PORTS - 1;
    first <= u32::from(hi.max(lo)) && last >= u32::from(lo.min(hi))
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn a_block_overlaps_the_ranges_it_shares_a_port_with() {
        assert!(overlaps(16, (1024, 65535)));
        assert!(!overlaps(15, (1024, 65535)));
        assert!(overlaps(1023, (65535, 65535)));
        assert!(overlaps(78, (5000, 5010)));
        assert!(!overlaps(79, (5000, 5010)));
    }
}
