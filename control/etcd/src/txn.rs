//! Reads at one etcd revision and changes as one etcd Txn guarded by the
//! head's `mod_revision` (the crate's documentation says why).

use std::sync::Arc;

use std::collections::BTreeMap;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};
use vnet_model::diff::diff;
use vnet_model::model::Topology;
use vnet_store::{object_path, Applied, Delta, Event, StoreError, HISTORY, HISTORY_BYTES};

use crate::layout::{self, Bucket, Head, Ids, ObjectValue, Record, SECTIONS};
use crate::Shared;

/// Replies as large as a topology can be (the API accepts documents of
/// vnet_model::MAX_TOPOLOGY_BYTES); tonic's default is 4 MiB.
const MAX_REPLY: usize = 512 << 20;

fn kv(shared: &Shared) -> KvClient {
    shared
        .client
        .kv_client()
        .max_decoding_message_size(MAX_REPLY)
        .max_encoding_message_size(MAX_REPLY)
}

/// The end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn prefix(p: String) -> (String, Option<GetOptions>) {
    let end = prefix_end(&p);
    (p, Some(GetOptions::new().with_range(end)))
}

fn parse_head(shared: &Shared, bytes: &[u8]) -> Result<Head, StoreError> {
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| shared.corrupt(format!("{}: not a vnet head: {e}", shared.keys.head())))?;
    if head.format != layout::FORMAT {
        return Err(shared.corrupt(format!(
            "the topology in etcd is in format {}; this vnetd reads format {}",
            head.format,
            layout::FORMAT
        )));
    }
    Ok(head)
}

/// The head (default when absent), its mod_revision (0 when absent), from
/// a range response.
fn head_of(shared: &Shared, r: &etcd_client::GetResponse) -> Result<(Head, i64), StoreError> {
    match r.kvs().first() {
        Some(kv) => Ok((parse_head(shared, kv.value())?, kv.mod_revision())),
        None => Ok((Head::default(), 0)),
    }
}

fn gets(resp: &etcd_client::TxnResponse) -> Vec<etcd_client::GetResponse> {
    resp.op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect()
}

/// The head and the etcd revision it was read at.
pub async fn read_head(shared: Arc<Shared>) -> Result<(Head, i64), StoreError> {
    let r = kv(&shared)
        .get(shared.keys.head(), None)
        .await
        .map_err(|e| shared.error("reading the topology head", e))?;
    let at = r.header().map_or(0, |h| h.revision());
    Ok((head_of(&shared, &r)?.0, at))
}

/// The topology at one etcd revision.
pub struct Current {
    pub head: Head,
    pub head_mod_revision: i64,
    pub topology: Topology,
    pub ids: Ids,
    /// The named objects as stored, by bucket.
    pub buckets: BTreeMap<u32, Bucket>,
}

pub async fn read_current(shared: Arc<Shared>) -> Result<Current, StoreError> {
    let (okey, oopts) = prefix(shared.keys.objects());
    let (skey, sopts) = prefix(shared.keys.sections());
    let txn = Txn::new().and_then([
        TxnOp::get(shared.keys.head(), None),
        TxnOp::get(okey, oopts),
        TxnOp::get(skey, sopts),
    ]);
    let resp = kv(&shared)
        .txn(txn)
        .await
        .map_err(|e| shared.error("reading the topology", e))?;
    let [head, objects, sections]: [etcd_client::GetResponse; 3] =
        gets(&resp).try_into().map_err(|_| {
            shared.corrupt("etcd answered a read of three ranges with another number".into())
        })?;
    let (head, head_mod_revision) = head_of(&shared, &head)?;
    let mut topology = Topology {
        version: head.version,
        ..Topology::default()
    };
    let mut ids = Ids::new();
    let mut buckets = BTreeMap::new();
    let objects_prefix = shared.keys.objects();
    for kv in objects.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let bad = |why: String| shared.corrupt(format!("{key}: {why}"));
        let b: u32 = key
            .strip_prefix(&objects_prefix)
            .and_then(|n| n.parse().ok())
            .filter(|b| *b < layout::BUCKETS)
            .ok_or_else(|| bad("not a bucket of objects".into()))?;
        let bucket: Bucket =
            serde_json::from_slice(kv.value()).map_err(|e| bad(format!("not a bucket: {e}")))?;
        for (path, v) in &bucket {
            let (kind, name) = object_path(path).map_err(bad)?;
            layout::insert_json(&mut topology, kind.section(), name, v.value.clone())
                .map_err(|e| bad(format!("{path}: {e}")))?;
            ids.insert(path.clone(), v.id);
        }
        buckets.insert(b, bucket);
    }
    let sections_prefix = shared.keys.sections();
    for kv in sections.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let section = key.strip_prefix(&sections_prefix).unwrap_or(&key);
        layout::insert_section(&mut topology, section, kv.value())
            .map_err(|why| shared.corrupt(format!("{key}: {why}")))?;
    }
    Ok(Current {
        head,
        head_mod_revision,
        topology,
        ids,
        buckets,
    })
}

/// A validated change, ready to commit.
pub struct Change {
    revision: u64,
    changes: Vec<vnet_model::diff::Change>,
    ops: Vec<TxnOp>,
    bytes: usize,
}

impl Change {
    /// The operations that turn `current` into `new` (`None`: nothing to
    /// change).
    pub fn prepare(
        shared: &Shared,
        current: &Current,
        new: Topology,
    ) -> Result<Option<Change>, StoreError> {
        let old = &current.topology;
        let changes = diff(old, &new);
        if changes.is_empty() {
            return Ok(None);
        }
        let revision =
            current
                .head
                .revision
                .checked_add(1)
                .ok_or(StoreError::RevisionsExhausted {
                    current: current.head.revision,
                })?;
        let ser = |e: serde_json::Error| shared.corrupt(format!("cannot serialize: {e}"));
        let delta = Delta::between(old, &new);
        let keys = &shared.keys;
        let mut head = current.head.clone();
        head.tunnel_keys = head.tunnel_keys.max(new.highest_tunnel_key());
        let mut ops = Vec::new();
        let mut bytes = 0;
        let mut put = |ops: &mut Vec<TxnOp>, key: String, value: Vec<u8>| {
            bytes += key.len() + value.len();
            ops.push(TxnOp::put(key, value, None));
        };
        // The buckets this change touches, rewritten whole.
        let mut touched: BTreeMap<u32, Bucket> = BTreeMap::new();
        for path in delta.changed_paths() {
            let (kind, name) = object_path(&path).map_err(|e| shared.corrupt(e))?;
            let id = match current.ids.get(&path) {
                Some(id) => *id,
                None => {
                    let id = head.next_id;
                    head.next_id += 1;
                    id
                }
            };
            let value = layout::object_json(&new, kind, name)
                .ok_or_else(|| shared.corrupt(format!("{path} changed but is not there")))?
                .map_err(ser)?;
            bucket(&mut touched, current, &path).insert(path, ObjectValue { id, value });
        }
        for path in &delta.removed {
            if SECTIONS.contains(&path.as_str()) {
                ops.push(TxnOp::delete(keys.section(path), None));
            } else {
                bucket(&mut touched, current, path).remove(path);
            }
        }
        for (b, objects) in touched {
            if objects.is_empty() {
                ops.push(TxnOp::delete(keys.bucket(b), None));
            } else {
                let v = serde_json::to_vec(&objects).map_err(ser)?;
                put(&mut ops, keys.bucket(b), v);
            }
        }
        for section in SECTIONS {
            // The delta holds a section whole when it changed.
            if let Some(whole) = layout::section_json(&delta.changed, section).map_err(ser)? {
                put(&mut ops, keys.section(section), whole);
            }
        }
        let record = Record {
            revision,
            changes: changes.iter().map(ToString::to_string).collect(),
            delta,
        };
        let record = serde_json::to_vec(&record).map_err(ser)?;
        head.log.push((revision, record.len()));
        put(&mut ops, keys.record(revision), record);
        // The history's bounds, as the embedded store's: the newest record
        // is always kept.
        let mut kept: usize = head.log.iter().map(|(_, b)| b).sum();
        let mut dropped = 0;
        while head.log.len() - dropped > HISTORY
            || (kept > HISTORY_BYTES && head.log.len() - dropped > 1)
        {
            kept -= head.log[dropped].1;
            dropped += 1;
        }
        if dropped > 0 {
            // One operation however many: etcd bounds a Txn's operations.
            let (first, end) = (head.log[0].0, head.log[dropped].0);
            head.log.drain(..dropped);
            ops.push(TxnOp::delete(
                keys.record(first),
                Some(DeleteOptions::new().with_range(keys.record(end))),
            ));
        }
        head.revision = revision;
        head.version = new.version;
        let h = serde_json::to_vec(&head).map_err(ser)?;
        put(&mut ops, keys.head(), h);
        Ok(Some(Change {
            revision,
            changes,
            ops,
            bytes,
        }))
    }
}

/// The bucket of `path` among those a change rewrites, read from `current`
/// the first time.
fn bucket<'a>(
    touched: &'a mut BTreeMap<u32, Bucket>,
    current: &Current,
    path: &str,
) -> &'a mut Bucket {
    let b = layout::bucket_of(path);
    touched
        .entry(b)
        .or_insert_with(|| current.buckets.get(&b).cloned().unwrap_or_default())
}

pub enum Committed {
    Stored(Applied),
    /// Another writer changed the head first; it is now at `actual`.
    Lost {
        actual: u64,
    },
}

/// Commits `change` if the head is still at `head_mod_revision`.
pub async fn commit(
    shared: Arc<Shared>,
    head_mod_revision: i64,
    change: Change,
) -> Result<Committed, StoreError> {
    let head = shared.keys.head();
    let txn = Txn::new()
        .when([Compare::mod_revision(
            head.clone(),
            CompareOp::Equal,
            head_mod_revision,
        )])
        .and_then(change.ops)
        .or_else([TxnOp::get(head, None)]);
    let resp = kv(&shared).txn(txn).await.map_err(|e| {
        let text = e.to_string();
        // etcd says "request is too large"; its gRPC server, for requests past
        // --max-request-bytes plus its margin, "larger than max".
        if text.contains("too large") || text.contains("larger than max") {
            shared.error(
                "storing the change",
                format!(
                    "{text}: the change is about {} bytes, more than etcd accepts in one request; \
                     raise --max-request-bytes on the etcd servers, or apply the topology in smaller changes",
                    change.bytes
                ),
            )
        } else {
            shared.error("storing the change", e)
        }
    })?;
    if resp.succeeded() {
        return Ok(Committed::Stored(Applied {
            revision: change.revision,
            changes: change.changes,
        }));
    }
    let actual = match gets(&resp).first() {
        Some(g) => head_of(&shared, g)?.0.revision,
        None => 0,
    };
    Ok(Committed::Lost { actual })
}

pub async fn events_since(shared: Arc<Shared>, revision: u64) -> Result<Vec<Event>, StoreError> {
    let from = shared.keys.record(revision.saturating_add(1));
    let end = prefix_end(&shared.keys.log());
    let txn = Txn::new().and_then([
        TxnOp::get(shared.keys.head(), None),
        TxnOp::get(from, Some(GetOptions::new().with_range(end))),
    ]);
    let resp = kv(&shared)
        .txn(txn)
        .await
        .map_err(|e| shared.error("reading the topology's changes", e))?;
    let [head, records]: [etcd_client::GetResponse; 2] = gets(&resp).try_into().map_err(|_| {
        shared.corrupt("etcd answered a read of two ranges with another number".into())
    })?;
    let (head, _) = head_of(&shared, &head)?;
    let current = head.revision;
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
    let oldest = head.log.first().map_or(current, |(r, _)| r - 1);
    if revision < oldest {
        return Err(StoreError::Compacted {
            requested: revision,
            oldest,
        });
    }
    let mut events = Vec::new();
    let mut expected = revision + 1;
    for kv in records.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let record: Record = serde_json::from_slice(kv.value())
            .map_err(|e| shared.corrupt(format!("{key}: not a change record: {e}")))?;
        if record.revision != expected {
            return Err(shared.corrupt(format!(
                "{key}: the record of revision {} where {expected} was due",
                record.revision
            )));
        }
        expected += 1;
        let changes = record
            .changes
            .iter()
            .map(|t| {
                vnet_model::diff::Change::parse(t)
                    .ok_or_else(|| shared.corrupt(format!("{key}: `{t}` is not a change")))
            })
            .collect::<Result<_, _>>()?;
        events.push(Event {
            revision: record.revision,
            changes,
            delta: Arc::new(record.delta),
        });
    }
    if expected != current + 1 {
        return Err(shared.corrupt(format!(
            "the change records end at revision {}, the topology is at {current}",
            expected - 1
        )));
    }
    Ok(events)
}
