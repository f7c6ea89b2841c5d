//! The SNAT port blocks this host holds, with many hosts (HOSTS.md).
//!
//! Each host simulates the first packets that enter it and binds their
//! dynamic SNAT there, without asking the others; two hosts translating to
//! one public address must then never give the same public port. The ports
//! of an address are cut into blocks of [`BLOCK_PORTS`] (by absolute port:
//! block `b` is ports `64·b ..= 64·b + 63`), and a host takes a port only
//! from the blocks it leased through the store (etcd: a key per block under
//! the host's lease, created only if absent — MidoNet leased 64-port blocks
//! in ZooKeeper the same way). A host that dies frees its blocks when its
//! lease expires.
//!
//! The simulation never waits for the store: it allocates from the blocks
//! held now, and tells the leaser (vnetd's control thread) what it needs —
//! an address with no free port left ([`NatBlocks::want`], the packet is
//! dropped as `nat_exhausted` and its retransmission finds the new block),
//! and how many ports it handed out ([`NatBlocks::handed`]), so the leaser
//! takes more blocks before they run out. Without a `NatBlocks` (one host:
//! the embedded store, or no `--host`) every port of a range is this
//! host's.
//!
//! Concurrency: workers read `held` under a read lock (the leaser writes it
//! a few times a second at most) and add to `demand` under a mutex, once
//! per first packet that binds a dynamic SNAT; both are bounded by
//! [`MAX_ADDRESSES`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

/// Ports per block.
pub const BLOCK_PORTS: u16 = 64;
/// Blocks of one address (65536 / 64).
pub const BLOCKS: usize = 1024;
/// Addresses whose blocks or demand are kept; more are refused (their
/// SNAT fails, counted), so that a hostile range cannot grow these maps.
pub const MAX_ADDRESSES: usize = 4096;

/// The block of `port`.
pub fn block_of(port: u16) -> u16 {
    port / BLOCK_PORTS
}

/// The ports of block `b`.
pub fn ports_of(b: u16) -> std::ops::RangeInclusive<u16> {
    let lo = b.saturating_mul(BLOCK_PORTS);
    lo..=lo.saturating_add(BLOCK_PORTS - 1)
}

/// A set of blocks of one address: a bit per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSet([u64; BLOCKS / 64]);

impl Default for BlockSet {
    fn default() -> Self {
        BlockSet([0; BLOCKS / 64])
    }
}

impl BlockSet {
    pub fn contains(&self, b: u16) -> bool {
        let b = usize::from(b);
        b < BLOCKS && self.0[b / 64] & (1 << (b % 64)) != 0
    }

    /// Adds `b`; blocks past [`BLOCKS`] are ignored.
    pub fn insert(&mut self, b: u16) {
        let b = usize::from(b);
        if b < BLOCKS {
            self.0[b / 64] |= 1 << (b % 64);
        }
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The blocks, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..BLOCKS as u16).filter(|&b| self.contains(b))
    }

    /// The ports of these blocks within `lo..=hi`.
    pub fn ports_in(&self, lo: u16, hi: u16) -> usize {
        self.iter()
            .map(|b| {
                let r = ports_of(b);
                let (a, z) = ((*r.start()).max(lo), (*r.end()).min(hi));
                if a <= z {
                    usize::from(z - a) + 1
                } else {
                    0
                }
            })
            .sum()
    }
}

impl FromIterator<u16> for BlockSet {
    fn from_iter<I: IntoIterator<Item = u16>>(blocks: I) -> Self {
        let mut s = BlockSet::default();
        for b in blocks {
            s.insert(b);
        }
        s
    }
}

/// What the simulation asked for since the leaser last looked.
#[derive(Debug, Default)]
pub struct Demand {
    /// Addresses a binding found no free port of.
    pub wanted: BTreeSet<[u8; 4]>,
    /// Bindings made per address.
    pub handed: BTreeMap<[u8; 4], u64>,
}

/// The blocks this host holds, per public address, and the simulation's
/// demand for more (see the module's documentation).
#[derive(Debug, Default)]
pub struct NatBlocks {
    held: RwLock<BTreeMap<[u8; 4], BlockSet>>,
    demand: Mutex<Demand>,
    /// Set with every `want`: the leaser looks at once.
    urgent: AtomicBool,
}

impl NatBlocks {
    pub fn new() -> NatBlocks {
        NatBlocks::default()
    }

    /// The blocks held of `address` (empty when none).
    pub fn held(&self, address: [u8; 4]) -> BlockSet {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.get(&address).copied().unwrap_or_default()
    }

    /// Every address with blocks, and its blocks.
    pub fn all_held(&self) -> BTreeMap<[u8; 4], BlockSet> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the blocks held of `address` (the leaser, after the store
    /// answered). Refused (false) past [`MAX_ADDRESSES`] addresses.
    pub fn set_held(&self, address: [u8; 4], blocks: BlockSet) -> bool {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        if !held.contains_key(&address) && held.len() >= MAX_ADDRESSES {
            return false;
        }
        held.insert(address, blocks);
        true
    }

    /// A binding found no free port of `address`.
    pub fn want(&self, address: [u8; 4]) {
        let mut d = self.demand.lock().unwrap_or_else(|p| p.into_inner());
        if d.wanted.len() < MAX_ADDRESSES {
            d.wanted.insert(address);
        }
        self.urgent.store(true, Ordering::Release);
    }

    /// A binding took a port of `address`.
    pub fn handed(&self, address: [u8; 4]) {
        let mut d = self.demand.lock().unwrap_or_else(|p| p.into_inner());
        if d.handed.len() < MAX_ADDRESSES || d.handed.contains_key(&address) {
            *d.handed.entry(address).or_default() += 1;
        }
    }

    /// Whether something was wanted since the last [`NatBlocks::take_demand`].
    pub fn urgent(&self) -> bool {
        self.urgent.load(Ordering::Acquire)
    }

    /// The demand since the last call, emptied.
    pub fn take_demand(&self) -> Demand {
        self.urgent.store(false, Ordering::Release);
        std::mem::take(&mut *self.demand.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_port_space_without_overlap() {
        assert_eq!(ports_of(0), 0..=63);
        assert_eq!(ports_of(1023), 65472..=65535);
        assert_eq!(block_of(65535), 1023);
        assert_eq!(block_of(1024), 16);
        let s: BlockSet = [16, 17, 1023, 5000].into_iter().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![16, 17, 1023]);
        assert_eq!(s.len(), 3);
        // 16 and 17 are ports 1024..=1151; of them 1100..=1151 is 52.
        assert_eq!(s.ports_in(1100, 1200), 52);
    }

    #[test]
    fn demand_is_taken_once_and_bounded() {
        let n = NatBlocks::new();
        n.want([192, 0, 2, 10]);
        n.handed([192, 0, 2, 10]);
        n.handed([192, 0, 2, 10]);
        assert!(n.urgent());
        let d = n.take_demand();
        assert_eq!(d.wanted.len(), 1);
        assert_eq!(d.handed[&[192, 0, 2, 10]], 2);
        assert!(!n.urgent());
        assert!(n.take_demand().wanted.is_empty());
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            n.want(i.to_be_bytes());
            assert!(n.set_held(i.to_be_bytes(), BlockSet::default()) || i >= MAX_ADDRESSES as u32);
        }
        assert_eq!(n.take_demand().wanted.len(), MAX_ADDRESSES);
        assert_eq!(n.all_held().len(), MAX_ADDRESSES);
    }
}
