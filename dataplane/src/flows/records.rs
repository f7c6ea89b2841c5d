//! The flow table's records and its tag → flows index, laid out for a
//! stream of first packets (issue 14).
//!
//! Every flow of a bridge carries the same few tags (its ports, the
//! bridge, the two MACs), so each of those tags indexes every flow. As
//! sets of keys (`HashSet<FlowKey>` per tag) that cost five inserts into
//! tables of every flow's 48-byte key per new flow: at 100 000 flows a
//! sixth of the worker's time, mostly cache misses and rehashing, and
//! ~250 bytes of index per flow and tag.
//!
//! Here a record lives in a slot of one vector, found from its key by one
//! map (key → slot), and a tag lists the slots of its flows in a vector
//! that is only appended to: a new flow pushes 8 bytes per tag. Removing a
//! flow does not search those lists; it frees the slot, whose generation
//! changes, so the list entry goes stale and is skipped when read. Each
//! tag counts its live flows (`uses` and dropping the tag with its last
//! flow need nothing else), and a list is compacted when stale entries
//! outnumber live ones, so it stays within twice its live flows (plus a
//! constant) and the work of compacting is paid by the pushes that made it
//! necessary.
//!
//! A slot's generation is 32 bits: a stale entry could name a later flow
//! only after its slot was reused 2³² times while the entry stayed. The
//! worst that does is remove that flow with the tag (its next packet is
//! decided again): never a flow kept that should go.

use crate::hash::HashMap;
use crate::sim::Tag;
use vnet_common::FlowKey;

#[derive(Debug, Clone)]
pub(super) struct Record {
    pub key: FlowKey,
    pub tags: Vec<Tag>,
    /// The device the flow is charged to.
    pub device: Option<Tag>,
    pub idle_timeout_ns: u64,
    pub installed_ns: u64,
    /// When the flow was last known to be used: its installation, or the
    /// kernel's last-hit time as read by the last sweep that asked.
    pub seen_ns: u64,
}

/// A flow's slot and the slot's generation when the flow was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotRef {
    slot: u32,
    generation: u32,
}

#[derive(Debug, Default)]
struct Slot {
    /// Changed each time the slot is freed.
    generation: u32,
    record: Option<Record>,
}

/// The flows that depend on one tag: every one of them is in `slots`, with
/// stale entries of removed ones; `live` counts the others.
#[derive(Debug, Default)]
struct TagFlows {
    slots: Vec<SlotRef>,
    live: usize,
}

/// Stale entries a tag's list may hold beyond its live ones before it is
/// compacted (a small list is not worth compacting).
const SLACK: usize = 32;

#[derive(Debug, Default)]
pub(super) struct Records {
    by_key: HashMap<FlowKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_tag: HashMap<Tag, TagFlows>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Record> {
        let slot = *self.by_key.get(key)?;
        self.slots.get(slot as usize)?.record.as_ref()
    }

    pub fn keys(&self) -> impl Iterator<Item = &FlowKey> {
        self.by_key.keys()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Record> {
        self.slots.iter_mut().filter_map(|s| s.record.as_mut())
    }

    /// Whether a recorded flow depends on `tag`.
    pub fn uses(&self, tag: Tag) -> bool {
        self.by_tag.get(&tag).is_some_and(|t| t.live > 0)
    }

    /// Records `record`, whose key must not be recorded (the caller
    /// removes an earlier flow of the key first).
    pub fn insert(&mut self, record: Record) {
        debug_assert!(!self.by_key.contains_key(&record.key));
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                // More slots than u32 counts: the kernel table (u32
                // max_flows) refuses such flows long before.
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        let at = SlotRef {
            slot,
            generation: entry.generation,
        };
        for tag in &record.tags {
            let flows = self.by_tag.entry(*tag).or_default();
            flows.slots.push(at);
            flows.live += 1;
            if flows.slots.len() > 2 * flows.live + SLACK {
                let slots = &self.slots;
                flows.slots.retain(|r| is_current(slots, *r) || *r == at);
            }
        }
        self.by_key.insert(record.key, slot);
        self.slots[slot as usize].record = Some(record);
    }

    /// Removes the flow of `key`, returning its record.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Record> {
        let slot = self.by_key.remove(key)?;
        let entry = self.slots.get_mut(slot as usize)?;
        let record = entry.record.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(slot);
        for tag in &record.tags {
            if let Some(flows) = self.by_tag.get_mut(tag) {
                flows.live = flows.live.saturating_sub(1);
                if flows.live == 0 {
                    self.by_tag.remove(tag);
                }
            }
        }
        Some(record)
    }

    /// The keys of the flows that depend on `tag`, which is dropped from
    /// the index (the caller removes the flows).
    pub fn take_tag(&mut self, tag: Tag) -> Vec<FlowKey> {
        let Some(flows) = self.by_tag.remove(&tag) else {
            return Vec::new();
        };
        let mut keys: Vec<FlowKey> = flows
            .slots
            .iter()
            .filter(|r| is_current(&self.slots, **r))
            .filter_map(|r| self.slots[r.slot as usize].record.as_ref())
            .map(|record| record.key)
            .collect();
        // A flow that lists the tag twice is listed twice.
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    pub fn clear(&mut self) {
        *self = Records::default();
    }
}

/// Whether `r` still names the flow it was recorded for.
fn is_current(slots: &[Slot], r: SlotRef) -> bool {
    slots
        .get(r.slot as usize)
        .is_some_and(|s| s.generation == r.generation && s.record.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, tags: &[u64]) -> Record {
        Record {
            key: FlowKey {
                ifindex: n,
                ..FlowKey::default()
            },
            tags: tags.iter().map(|t| Tag(*t)).collect(),
            device: None,
            idle_timeout_ns: 1,
            installed_ns: 0,
            seen_ns: 0,
        }
    }

    fn key(n: u32) -> FlowKey {
        record(n, &[]).key
    }

    #[test]
    fn a_tag_names_exactly_its_live_flows_through_removals_and_reused_slots() {
        let mut r = Records::default();
        for n in 0..10 {
            r.insert(record(n, &[1, 100 + n as u64]));
        }
        for n in 0..5 {
            assert!(r.remove(&key(n)).is_some());
        }
        assert!(!r.uses(Tag(100)) && r.uses(Tag(105)) && r.uses(Tag(1)));
        // Reused slots with other tags: the stale entries of tag 1 must not
        // name them.
        for n in 20..25 {
            r.insert(record(n, &[2]));
        }
        assert_eq!(r.slots.len(), 10, "freed slots are reused");
        let mut with_1 = r.take_tag(Tag(1));
        with_1.sort();
        assert_eq!(with_1, (5..10).map(key).collect::<Vec<_>>());
        assert!(!r.uses(Tag(1)));
        assert!(r.take_tag(Tag(1)).is_empty(), "the tag is gone");
        // Flows keep their other tags.
        assert!(r.uses(Tag(107)) && r.uses(Tag(2)));
        assert_eq!(r.len(), 10);
    }

    #[test]
    fn a_tag_list_stays_within_twice_its_live_flows() {
        let mut r = Records::default();
        // A long-lived flow, and a stream of short ones on the same tag.
        r.insert(record(0, &[7]));
        for n in 1..10_000 {
            r.insert(record(n, &[7]));
            r.remove(&key(n));
        }
        let flows = &r.by_tag[&Tag(7)];
        assert_eq!(flows.live, 1);
        assert!(flows.slots.len() <= 2 * 2 + SLACK, "{}", flows.slots.len());
        assert_eq!(r.take_tag(Tag(7)), vec![key(0)]);
    }

    #[test]
    fn a_tag_listed_twice_counts_twice_and_goes_with_its_flow() {
        let mut r = Records::default();
        r.insert(record(1, &[5, 5]));
        assert!(r.uses(Tag(5)));
        assert_eq!(r.take_tag(Tag(5)), vec![key(1)], "listed once");
        r.insert(record(2, &[6, 6]));
        r.remove(&key(1));
        r.remove(&key(2));
        assert!(!r.uses(Tag(6)) && r.by_tag.is_empty());
    }
}
