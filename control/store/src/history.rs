//! The revisions kept for watchers: the change each one made, not the
//! topology, bounded by count and by bytes. Older ones are compacted: a
//! watcher that needs them re-lists the current topology.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vnet_model::diff::Change;

use crate::delta::Delta;
use crate::{Event, StoreError};

/// Revisions kept, at most.
pub const HISTORY: usize = 64;

/// Bytes of change records kept, at most (as encoded in the log; a parsed
/// record takes about five times that in memory). 16 MiB keeps 64 changes
/// of a few objects whatever the topology's size, and at least one
/// replacement of a 100k-rule topology (about 10 MiB), while what history
/// costs vnetd stays near 100 MB at worst. The newest revision is always
/// kept, however large: a watcher that is up to date must get it.
pub const HISTORY_BYTES: usize = 16 << 20;

/// One stored revision: what the log holds for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub revision: u64,
    /// What the revision changed, as `vnetctl apply` lists it.
    #[serde(with = "change_texts")]
    pub changes: Vec<Change>,
    #[serde(with = "shared")]
    pub delta: Arc<Delta>,
    /// Ids given to the objects this revision added, by path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub new_ids: BTreeMap<String, u64>,
}

/// The kept revisions, oldest first, each with its encoded size.
#[derive(Debug, Default)]
pub struct History {
    records: VecDeque<(Record, usize)>,
    bytes: usize,
}

impl History {
    /// Adds the newest revision and compacts what falls out of the bounds.
    pub fn push(&mut self, record: Record, bytes: usize) {
        self.bytes += bytes;
        self.records.push_back((record, bytes));
        while self.records.len() > HISTORY || (self.bytes > HISTORY_BYTES && self.records.len() > 1)
        {
            let Some((_, b)) = self.records.pop_front() else {
                break;
            };
            self.bytes -= b;
        }
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().map(|(r, _)| r)
    }

    /// The revisions after `revision` up to `current`, oldest first.
    pub fn since(&self, revision: u64, current: u64) -> Result<Vec<Event>, StoreError> {
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision == current {
            return Ok(Vec::new());
        }
        // Watching from a revision needs the change right after it.
        let oldest = self
            .records
            .front()
            .map_or(current, |(r, _)| r.revision - 1);
        if revision < oldest {
            return Err(StoreError::Compacted {
                requested: revision,
                oldest,
            });
        }
        Ok(self
            .records()
            .filter(|r| r.revision > revision)
            .map(|r| Event {
                revision: r.revision,
                changes: r.changes.clone(),
                delta: r.delta.clone(),
            })
            .collect())
    }
}

/// Changes as their text (`~ bridges.b.ports.p`), which is what they are.
mod change_texts {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(changes: &[Change], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(changes.iter().map(Change::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Change>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                Change::parse(t)
                    .ok_or_else(|| serde::de::Error::custom(format!("not a change: {t}")))
            })
            .collect()
    }
}

/// A delta shared between the history and the watchers that read it.
mod shared {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(delta: &Arc<Delta>, s: S) -> Result<S::Ok, S::Error> {
        delta.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Delta>, D::Error> {
        Delta::deserialize(d).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::diff::ChangeOp;

    fn record(revision: u64) -> Record {
        Record {
            revision,
            changes: vec![Change {
                op: ChangeOp::Changed,
                path: "bridges.b.ports.p q".into(),
            }],
            delta: Arc::new(Delta::default()),
            new_ids: BTreeMap::new(),
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let r = record(3);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"~ bridges.b.ports.p q\""), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }

    #[test]
    fn compacts_by_count() {
        let mut h = History::default();
        for rev in 1..=HISTORY as u64 + 10 {
            h.push(record(rev), 10);
        }
        assert_eq!(h.records().count(), HISTORY);
        let current = HISTORY as u64 + 10;
        assert!(matches!(
            h.since(9, current),
            Err(StoreError::Compacted {
                requested: 9,
                oldest: 10
            })
        ));
        assert_eq!(h.since(10, current).unwrap().len(), HISTORY);
        assert!(h.since(current, current).unwrap().is_empty());
        assert!(matches!(
            h.since(current + 1, current),
            Err(StoreError::FutureRevision { .. })
        ));
    }

    #[test]
    fn compacts_by_bytes_but_keeps_the_newest() {
        let mut h = History::default();
        let big = HISTORY_BYTES / 4 + 1;
        for rev in 1..=5 {
            h.push(record(rev), big);
        }
        // Four of a quarter each would be over: three stay.
        assert_eq!(
            h.records().map(|r| r.revision).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(matches!(
            h.since(1, 5),
            Err(StoreError::Compacted { oldest: 2, .. })
        ));
        assert_eq!(h.since(2, 5).unwrap().len(), 3);
        h.push(record(6), HISTORY_BYTES * 2);
        assert_eq!(h.records().map(|r| r.revision).collect::<Vec<_>>(), [6]);
        assert_eq!(h.since(5, 6).unwrap()[0].revision, 6);
    }

    #[test]
    fn an_empty_history_serves_only_the_current_revision() {
        let h = History::default();
        assert!(h.since(0, 0).unwrap().is_empty());
        assert!(matches!(
            h.since(3, 7),
            Err(StoreError::Compacted { oldest: 7, .. })
        ));
    }
}
