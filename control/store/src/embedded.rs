//! The embedded store: files under vnetd's state directory.
//!
//! - `topology-store.json`, the snapshot: the topology at one revision, the
//!   object ids and the history kept for watchers. It is written whole to a
//!   temporary file, fsynced, renamed over the old one and the directory
//!   fsynced, so a crash at any point leaves the old snapshot or the new one.
//! - `topology-store.log`, the change log: one record per revision after the
//!   snapshot's (what it changed, see [`Delta`]), appended and fsynced. A
//!   change costs its own size on disk, whatever the topology's.
//!
//! Opening replays the log onto the snapshot. A record cut short by a crash
//! mid-append is dropped (with a log line): its change was never
//! acknowledged. The snapshot is rewritten, and the log emptied, when the log
//! has grown past the snapshot's size (and [`LOG_MIN_BYTES`]), so replaying
//! costs at most about one more snapshot read and rewriting is paid for by
//! the appends before it.
//!
//! A lock file (`flock`) keeps a second process from using the same store.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Applied, Event, Revisioned, Store, StoreError};
use crate::delta::Delta;
use crate::history::{History, Record};
use crate::log::{self, Log};
use vnet_model::diff::diff;
use vnet_model::model::Topology;

const FILE: &str = "topology-store.json";
const TMP: &str = "topology-store.json.tmp";
const LOG: &str = "topology-store.log";
const LOCK: &str = "topology-store.lock";
/// Format 1 kept the whole topology of every revision in the one file; it
/// is still read (and replaced by format 2 at the next change).
const FORMAT: u32 = 2;

/// The log may grow to this before the snapshot is rewritten, however
/// small the snapshot: small topologies need not be rewritten every change.
pub const LOG_MIN_BYTES: u64 = 1 << 20;

/// Object ids: given when an object is created, kept while its name exists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ids {
    next_id: u64,
    by_path: BTreeMap<String, u64>,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            next_id: 1,
            by_path: BTreeMap::new(),
        }
    }

    /// The ids `delta` gives to the objects it adds (in path order, as
    /// [`Delta::changed_paths`] lists them).
    fn given_by(&self, delta: &Delta) -> BTreeMap<String, u64> {
        let mut next = self.next_id;
        let mut given = BTreeMap::new();
        for path in delta.changed_paths() {
            if !self.by_path.contains_key(&path) {
                given.insert(path, next);
                next += 1;
            }
        }
        given
    }

    fn commit(&mut self, record: &Record) {
        for path in &record.delta.removed {
            self.by_path.remove(path);
        }
        for (path, id) in &record.new_ids {
            self.by_path.insert(path.clone(), *id);
            self.next_id = self.next_id.max(id + 1);
        }
    }
}

/// What the store holds in memory: the current topology once, the recent
/// changes, the ids.
#[derive(Debug)]
struct State {
    revision: u64,
    /// Shared with readers ([`Store::current_shared`]): vnetd's control
    /// thread takes each revision without copying it.
    topology: Arc<Topology>,
    history: History,
    ids: Ids,
}

impl State {
    fn empty() -> State {
        State {
            revision: 0,
            topology: Arc::default(),
            history: History::default(),
            ids: Ids::new(),
        }
    }

    /// Makes `record` (of `bytes` in the log) the current revision, whose
    /// topology is `topology`.
    fn commit(&mut self, record: Record, bytes: usize, topology: Arc<Topology>) {
        self.revision = record.revision;
        self.topology = topology;
        self.ids.commit(&record);
        self.history.push(record, bytes);
    }
}

/// The snapshot file (format 2).
#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    revision: u64,
    topology: &'a Topology,
    ids: &'a Ids,
    history: Vec<&'a Record>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    revision: u64,
    topology: Topology,
    ids: Ids,
    history: Vec<Record>,
}

/// Format 1: every kept revision's whole topology.
#[derive(Deserialize)]
struct Format1 {
    history: Vec<Format1Entry>,
    next_id: u64,
    ids: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Format1Entry {
    revision: u64,
    topology: Topology,
}

#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// The files.
#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    log: Log,
    /// The size of the snapshot in the current format; `None` until one is
    /// written (a new store, or one in format 1).
    snapshot_bytes: Option<u64>,
}

impl Disk {
    /// Whether appending a record of `bytes` should first fold the log into
    /// a new snapshot.
    fn needs_snapshot(&self, bytes: usize) -> bool {
        match self.snapshot_bytes {
            None => true,
            Some(snapshot) => self.log.len() + log::framed_len(bytes) > snapshot.max(LOG_MIN_BYTES),
        }
    }

    /// Writes `state` as the snapshot so that a crash leaves the old
    /// snapshot or this one, then empties the log it now holds.
    fn write_snapshot(&mut self, state: &State) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP);
        let path = self.dir.join(FILE);
        let bytes = serde_json::to_vec(&SnapshotOut {
            format: FORMAT,
            revision: state.revision,
            topology: state.topology.as_ref(),
            ids: &state.ids,
            history: state.history.records().collect(),
        })
        .map_err(|e| StoreError::Corrupt {
            path: path.display().to_string(),
            message: format!("cannot serialize: {e}"),
        })?;
        let written = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .map_err(io(&tmp))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(io(&path)));
        if let Err(e) = written {
            // A partial temporary file (a full disk) would hold the space
            // that the next attempt, or anything else on the disk, needs.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable only once the directory is synced.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        self.snapshot_bytes = Some(bytes.len() as u64);
        // Records the snapshot holds are skipped when replaying, so a crash
        // before this leaves a store that opens the same.
        let log_path = self.log.path().to_path_buf();
        self.log.truncate(0).map_err(io(&log_path))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |error| StoreError::Io { path, error }
}

pub struct EmbeddedStore {
    dir: PathBuf,
    inner: Mutex<(State, Disk)>,
    notify: tokio::sync::watch::Sender<u64>,
    /// Holds the flock for the store's lifetime.
    _lock: File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked {
                path: dir.display().to_string(),
            });
        }
        // A temporary file is a write that never got renamed: the old file
        // is the truth.
        let _ = std::fs::remove_file(dir.join(TMP));
        let path = dir.join(FILE);
        let (mut state, snapshot_bytes) = match std::fs::read(&path) {
            Ok(bytes) => read_snapshot(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::empty(), None),
            Err(e) => return Err(io(&path)(e)),
        };
        let log_path = dir.join(LOG);
        let (mut log, bytes) = Log::open(&log_path).map_err(io(&log_path))?;
        let valid_len = replay(&log_path, &bytes, &mut state)?;
        drop(bytes);
        if valid_len < log.len() {
            log.truncate(valid_len).map_err(io(&log_path))?;
        }
        // Only valid topologies are ever stored; anything else was changed
        // by hand and is refused rather than run.
        state
            .topology
            .validate()
            .map_err(|errors| StoreError::Corrupt {
                path: path.display().to_string(),
                message: vnet_model::TopologyError::Invalid(errors).to_string(),
            })?;
        let (notify, _) = tokio::sync::watch::channel(state.revision);
        Ok(EmbeddedStore {
            dir: dir.to_path_buf(),
            inner: Mutex::new((
                state,
                Disk {
                    dir: dir.to_path_buf(),
                    log,
                    snapshot_bytes,
                },
            )),
            notify,
            _lock: lock,
        })
    }

    /// The snapshot file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Stores `make(current)` as the next revision if it is valid and
    /// differs (see [`Store::transact`]). Each step is timed at debug
    /// level: this is most of what a change costs before the dataplane
    /// hears of it.
    fn change(
        &self,
        expected: Option<u64>,
        make: impl FnOnce(&Topology) -> Result<Topology, StoreError>,
    ) -> Result<Applied, StoreError> {
        let start = Instant::now();
        let mut guard = self.lock();
        let (state, disk) = &mut *guard;
        if let Some(expected) = expected {
            if expected != state.revision {
                return Err(StoreError::Conflict {
                    expected,
                    actual: state.revision,
                });
            }
        }
        let mut topology = make(&state.topology)?;
        let made = start.elapsed();
        topology
            .keep_tunnel_keys(&state.topology)
            .map_err(StoreError::Invalid)?;
        topology.validate().map_err(StoreError::Invalid)?;
        let validated = start.elapsed();
        let changes = diff(&state.topology, &topology);
        if changes.is_empty() {
            return Ok(Applied {
                revision: state.revision,
                changes,
            });
        }
        // A revision number that wrapped would hand watchers and the
        // dataplane an older number for a newer topology.
        let revision = state
            .revision
            .checked_add(1)
            .ok_or(StoreError::RevisionsExhausted {
                current: state.revision,
            })?;
        let topology = Arc::new(topology);
        let delta = Delta::between(&state.topology, &topology);
        let record = Record {
            revision,
            changes: changes.clone(),
            new_ids: state.ids.given_by(&delta),
            delta: Arc::new(delta),
        };
        let payload = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt {
            path: disk.log.path().display().to_string(),
            message: format!("cannot serialize: {e}"),
        })?;
        let compared = start.elapsed();
        // Memory changes only once the disk has the new revision.
        if disk.needs_snapshot(payload.len()) {
            disk.write_snapshot(state)?;
        }
        let log_path = disk.log.path().to_path_buf();
        disk.log.append(&payload).map_err(io(&log_path))?;
        let written = start.elapsed();
        // The old topology is freed by its last holder (vnetd's control
        // thread holds it too), not necessarily here.
        state.commit(record, payload.len(), topology);
        // Published under the lock: two transactions cannot announce their
        // revisions out of order.
        self.notify.send_replace(revision);
        drop(guard);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            revision,
            changes = changes.len(),
            made_ms = ms(made),
            validated_ms = ms(validated - made),
            compared_ms = ms(compared - validated),
            written_ms = ms(written - compared),
            total_ms = ms(start.elapsed()),
            "stored a change"
        );
        Ok(Applied { revision, changes })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Disk)> {
        // The state changes only once a change is on disk, in steps that
        // cannot fail: a panic elsewhere leaves it whole, so a poisoned
        // lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn corrupt(path: &Path, message: String) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        message,
    }
}

/// The size of `record` in the log, which is what history counts.
fn encoded_len(record: &Record) -> usize {
    serde_json::to_vec(record).map_or(0, |b| b.len())
}

/// The state a snapshot holds, and its size (`None` for format 1, which
/// the next change replaces).
fn read_snapshot(path: &Path, bytes: &[u8]) -> Result<(State, Option<u64>), StoreError> {
    let format = serde_json::from_slice::<FormatOnly>(bytes)
        .map_err(|e| corrupt(path, format!("not a vnet store: {e}")))?
        .format;
    match format {
        FORMAT => {
            let s: SnapshotIn = serde_json::from_slice(bytes)
                .map_err(|e| corrupt(path, format!("not a vnet store: {e}")))?;
            let mut history = History::default();
            let mut expected = s.revision.checked_sub(s.history.len() as u64);
            for r in s.history {
                // History ends at the snapshot's revision, without gaps.
                expected = expected.and_then(|e| e.checked_add(1));
                if Some(r.revision) != expected {
                    return Err(corrupt(path, "revisions out of order".into()));
                }
                let bytes = encoded_len(&r);
                history.push(r, bytes);
            }
            let state = State {
                revision: s.revision,
                topology: Arc::new(s.topology),
                history,
                ids: s.ids,
            };
            Ok((state, Some(bytes.len() as u64)))
        }
        1 => Ok((read_format1(path, bytes)?, None)),
        other => Err(corrupt(
            path,
            format!("format {other} is not the one this vnetd reads ({FORMAT})"),
        )),
    }
}

/// A format 1 file: the last topology is the current one; the ones before
/// it become changes.
fn read_format1(path: &Path, bytes: &[u8]) -> Result<State, StoreError> {
    let old: Format1 = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, format!("not a vnet store: {e}")))?;
    if !old
        .history
        .iter()
        .zip(old.history.iter().skip(1))
        .all(|(a, b)| a.revision < b.revision)
    {
        return Err(corrupt(path, "revisions out of order".into()));
    }
    let mut state = State::empty();
    state.ids = Ids {
        next_id: old.next_id,
        by_path: old.ids,
    };
    let empty = Topology::default();
    let mut before: Option<&Format1Entry> = None;
    for e in &old.history {
        let base = match before {
            Some(b) if b.revision.checked_add(1) == Some(e.revision) => Some(&b.topology),
            None if e.revision == 1 => Some(&empty),
            _ => None,
        };
        match base {
            Some(base) => {
                let record = Record {
                    revision: e.revision,
                    changes: diff(base, &e.topology),
                    delta: Arc::new(Delta::between(base, &e.topology)),
                    new_ids: BTreeMap::new(),
                };
                let bytes = encoded_len(&record);
                state.history.push(record, bytes);
            }
            // What came before is not known: history starts after it.
            None => state.history = History::default(),
        }
        before = Some(e);
    }
    if let Some(last) = old.history.into_iter().next_back() {
        state.revision = last.revision;
        state.topology = Arc::new(last.topology);
    }
    Ok(state)
}

/// Applies the log's records after the snapshot's revision to `state`;
/// returns where its whole records end.
fn replay(path: &Path, bytes: &[u8], state: &mut State) -> Result<u64, StoreError> {
    let read = log::read(bytes).map_err(|e| corrupt(path, e))?;
    if let Some(why) = &read.torn {
        tracing::warn!(
            log = %path.display(),
            at = read.valid_len,
            "the store's change log ends in a record cut short by a crash ({why}); \
             that change was never acknowledged and is dropped"
        );
    }
    for payload in read.records {
        let record: Record = serde_json::from_slice(payload)
            .map_err(|e| corrupt(path, format!("a change record that cannot be read: {e}")))?;
        // Records the snapshot already holds (a crash between writing it
        // and emptying the log).
        if record.revision <= state.revision {
            continue;
        }
        if Some(record.revision) != state.revision.checked_add(1) {
            return Err(corrupt(
                path,
                format!(
                    "the record of revision {} follows revision {}",
                    record.revision, state.revision
                ),
            ));
        }
        // Opening holds the only reference: taken, not copied.
        let mut topology = std::mem::take(&mut state.topology);
        record
            .delta
            .apply_to(Arc::make_mut(&mut topology))
            .map_err(|e| corrupt(path, format!("revision {}: {e}", record.revision)))?;
        state.commit(record, payload.len(), topology);
    }
    Ok(read.valid_len)
}

impl Store for EmbeddedStore {
    fn current(&self) -> Result<Revisioned, StoreError> {
        let guard = self.lock();
        Ok(Revisioned {
            revision: guard.0.revision,
            topology: Topology::clone(&guard.0.topology),
        })
    }

    fn current_shared(&self) -> Result<(u64, Arc<Topology>), StoreError> {
        let guard = self.lock();
        Ok((guard.0.revision, guard.0.topology.clone()))
    }

    fn transact(
        &self,
        expected: Option<u64>,
        edit: &mut dyn FnMut(&mut Topology) -> Result<(), StoreError>,
    ) -> Result<Applied, StoreError> {
        self.change(expected, |current| {
            let mut topology = current.clone();
            edit(&mut topology)?;
            Ok(topology)
        })
    }

    /// A whole topology replaces the current one: it is stored as given,
    /// not copied into a copy of the current one.
    fn apply(&self, topology: Topology, expected: Option<u64>) -> Result<Applied, StoreError> {
        self.change(expected, |_| Ok(topology))
    }

    fn events_since(&self, revision: u64) -> Result<Vec<Event>, StoreError> {
        let guard = self.lock();
        guard.0.history.since(revision, guard.0.revision)
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn object_ids(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self.lock().0.ids.by_path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HISTORY, HISTORY_BYTES};
    use vnet_model::objects::{Object, ObjectKind};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vnet-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn topo(yaml: &str) -> Topology {
        vnet_model::load_str(yaml).unwrap()
    }

    const A: &str = "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: a}\n";
    const B: &str = "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: a, up: false}\n";

    #[test]
    fn revisions_persist_and_ids_stay() {
        let d = dir("persist");
        {
            let s = EmbeddedStore::open(&d).unwrap();
            assert_eq!(s.current().unwrap().revision, 0);
            assert_eq!(s.apply(topo(A), None).unwrap().revision, 1);
            // Same topology again: nothing new.
            let same = s.apply(topo(A), None).unwrap();
            assert_eq!((same.revision, same.changes.len()), (1, 0));
            assert_eq!(s.apply(topo(B), Some(1)).unwrap().revision, 2);
            assert!(matches!(
                s.apply(topo(A), Some(1)),
                Err(StoreError::Conflict {
                    expected: 1,
                    actual: 2
                })
            ));
            assert!(matches!(
                EmbeddedStore::open(&d),
                Err(StoreError::Locked { .. })
            ));
        }
        let s = EmbeddedStore::open(&d).unwrap();
        let cur = s.current().unwrap();
        assert_eq!((cur.revision, cur.topology), (2, topo(B)));
        let ids = s.object_ids().unwrap();
        assert_eq!(ids.get("bridges.b"), Some(&1));
        let events = s.events_since(0).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].changes[0].to_string(), "~ bridges.b.ports.p");
        assert!(s.events_since(2).unwrap().is_empty());
        assert!(s.events_since(3).is_err());
    }

    /// The shared current topology is the current one; a reader that holds
    /// it keeps its revision while later changes are stored.
    #[test]
    fn the_shared_topology_is_the_current_one() {
        let d = dir("shared");
        let s = EmbeddedStore::open(&d).unwrap();
        assert_eq!(*s.current_shared().unwrap().1, Topology::default());
        s.apply(topo(A), None).unwrap();
        let (revision, held) = s.current_shared().unwrap();
        assert_eq!((revision, &*held), (1, &topo(A)));
        s.update("b", topo(B).object(ObjectKind::Bridge, "b").unwrap())
            .unwrap();
        let (revision, now) = s.current_shared().unwrap();
        assert_eq!((revision, &*now), (2, &topo(B)));
        assert_eq!(*now, s.current().unwrap().topology);
        assert_eq!(*held, topo(A));
    }

    /// Tunnel keys are given by the store and kept: re-applying the file
    /// (which has none) changes nothing, in the plan or the apply, and the
    /// keys survive a restart.
    #[test]
    fn tunnel_keys_are_given_once_and_kept() {
        let d = dir("tunnel-keys");
        let placed = "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\nbridges:\n  b:\n    \
                      ports:\n      p: {interface: a, host: h1}\n      q: {interface: b, host: h1}\n";
        let key = |t: &Topology, p: &str| t.bridges["b"].ports[p].tunnel_key;
        {
            let s = EmbeddedStore::open(&d).unwrap();
            s.apply(topo(placed), None).unwrap();
            let t = s.current().unwrap().topology;
            assert_eq!((key(&t, "p"), key(&t, "q")), (Some(1), Some(2)));
            assert!(s.plan(&topo(placed)).unwrap().changes.is_empty());
            let again = s.apply(topo(placed), None).unwrap();
            assert!(again.changes.is_empty(), "{:?}", again.changes);
        }
        let s = EmbeddedStore::open(&d).unwrap();
        let t = s.current().unwrap().topology;
        assert_eq!((key(&t, "p"), key(&t, "q")), (Some(1), Some(2)));
    }

    #[test]
    fn invalid_changes_store_nothing() {
        let d = dir("invalid");
        let s = EmbeddedStore::open(&d).unwrap();
        s.apply(topo(A), None).unwrap();
        let bad = vnet_model::parse_str(
            "version: 1\nbridges:\n  b:\n    ports:\n      p: {vlan: 5000}\n",
        )
        .unwrap();
        let err = s.apply(bad, None).unwrap_err();
        assert!(err.to_string().contains("bridges.b.ports.p.vlan"), "{err}");
        assert!(matches!(
            s.create("b", Object::Bridge(Default::default())),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(matches!(
            s.delete(ObjectKind::Chain, "nope"),
            Err(StoreError::NotFound { .. })
        ));
        // Deleting a chain that a port uses breaks a reference.
        s.apply(
            topo("version: 1\nchains:\n  c: []\nbridges:\n  b:\n    ports:\n      p: {interface: a, inbound_filter: c}\n"),
            None,
        )
        .unwrap();
        let err = s.delete(ObjectKind::Chain, "c").unwrap_err();
        assert!(
            err.to_string().contains("bridges.b.ports.p.inbound_filter"),
            "{err}"
        );
        assert_eq!(s.current().unwrap().revision, 2);
        drop(s);
        assert_eq!(
            EmbeddedStore::open(&d).unwrap().current().unwrap().revision,
            2
        );
    }

    #[test]
    fn history_is_bounded_and_old_watchers_are_told() {
        let d = dir("history");
        let s = EmbeddedStore::open(&d).unwrap();
        for i in 0..(HISTORY as u64 + 5) {
            let yaml = format!("version: 1\nip_groups:\n  g: [10.0.0.{}]\n", i % 200 + 1);
            s.apply(topo(&yaml), None).unwrap();
        }
        assert!(matches!(
            s.events_since(1),
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(s.events_since(60).unwrap().len(), HISTORY + 5 - 60);
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file() {
        let d = dir("full");
        let s = EmbeddedStore::open(&d).unwrap();
        // The temporary file lands on a full disk: /dev/full fails every
        // write with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", d.join(TMP)).unwrap();
        let err = s.apply(topo(A), None).unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(
            std::fs::symlink_metadata(d.join(TMP)).is_err(),
            "the temporary file is removed"
        );
        assert_eq!(s.current().unwrap().revision, 0, "nothing changed");
        // The next write, with space, succeeds.
        assert_eq!(s.apply(topo(A), None).unwrap().revision, 1);
        assert!(std::fs::symlink_metadata(d.join(TMP)).is_err());
    }

    #[test]
    fn the_last_revision_number_refuses_changes_instead_of_wrapping() {
        let d = dir("last-revision");
        std::fs::create_dir_all(&d).unwrap();
        let ids = Ids::new();
        let snapshot = SnapshotOut {
            format: FORMAT,
            revision: u64::MAX,
            topology: &topo(A),
            ids: &ids,
            history: Vec::new(),
        };
        std::fs::write(d.join(FILE), serde_json::to_vec(&snapshot).unwrap()).unwrap();
        let s = EmbeddedStore::open(&d).unwrap();
        let err = s.apply(topo(B), None).unwrap_err();
        assert!(
            matches!(err, StoreError::RevisionsExhausted { current: u64::MAX }),
            "{err}"
        );
        let cur = s.current().unwrap();
        assert_eq!((cur.revision, cur.topology), (u64::MAX, topo(A)));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_store() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(FILE), b"{not json").unwrap();
        let err = EmbeddedStore::open(&d).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    /// A topology of `n` IP groups of `addresses` each; `version` changes
    /// the first one.
    fn groups(n: usize, addresses: usize, version: usize) -> Topology {
        let mut t = Topology {
            version: 1,
            ..Topology::default()
        };
        for g in 0..n {
            let offset = if g == 0 { version } else { 0 };
            let group = (0..addresses)
                .map(|a| std::net::Ipv4Addr::from(0x0a00_0000 + (offset + a) as u32))
                .collect();
            t.ip_groups.insert(format!("g{g}"), group);
        }
        t
    }

    fn log_len(d: &Path) -> u64 {
        std::fs::metadata(d.join(LOG)).unwrap().len()
    }

    #[test]
    fn a_change_costs_the_disk_its_own_size_and_replays_at_open() {
        let d = dir("replay");
        let s = EmbeddedStore::open(&d).unwrap();
        s.apply(groups(50, 20, 0), None).unwrap();
        let snapshot = std::fs::metadata(d.join(FILE)).unwrap().len();
        let before = log_len(&d);
        for v in 1..=10 {
            s.apply(groups(50, 20, v), None).unwrap();
        }
        // Ten one-chain changes: about ten chains' worth of log, and the
        // snapshot is not rewritten.
        let per_change = (log_len(&d) - before) / 10;
        let whole = serde_json::to_vec(&groups(50, 20, 0)).unwrap().len() as u64;
        assert!(
            per_change * 20 < whole,
            "{per_change} bytes per change, topology {whole}"
        );
        assert_eq!(std::fs::metadata(d.join(FILE)).unwrap().len(), snapshot);
        let ids = s.object_ids().unwrap();
        drop(s);
        let s = EmbeddedStore::open(&d).unwrap();
        let cur = s.current().unwrap();
        assert_eq!((cur.revision, cur.topology), (11, groups(50, 20, 10)));
        assert_eq!(s.object_ids().unwrap(), ids, "ids survive a restart");
        let events = s.events_since(0).unwrap();
        assert_eq!(events.len(), 11);
        assert_eq!(events[5].changes[0].to_string(), "~ ip_groups.g0");
        // Replaying the events from the empty topology gives the current one.
        let mut t = Topology::default();
        for e in &events {
            e.delta.apply_to(&mut t).unwrap();
        }
        assert_eq!(t, groups(50, 20, 10));
        // A new object after the restart gets a new id.
        s.create("late", Object::Chain(vec![])).unwrap();
        let late = s.object_ids().unwrap()["chains.late"];
        assert!(ids.values().all(|id| *id < late));
    }

    #[test]
    fn a_torn_last_record_is_dropped() {
        let d = dir("torn");
        {
            let s = EmbeddedStore::open(&d).unwrap();
            s.apply(topo(A), None).unwrap();
            s.apply(topo(B), None).unwrap();
        }
        // A crash in the middle of appending revision 2.
        let len = log_len(&d);
        let f = OpenOptions::new().write(true).open(d.join(LOG)).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let s = EmbeddedStore::open(&d).unwrap();
        let cur = s.current().unwrap();
        assert_eq!((cur.revision, cur.topology), (1, topo(A)));
        // The torn bytes are cut: the next change follows revision 1.
        assert_eq!(s.apply(topo(B), None).unwrap().revision, 2);
        drop(s);
        let s = EmbeddedStore::open(&d).unwrap();
        assert_eq!(s.current().unwrap().revision, 2);
        assert_eq!(s.events_since(0).unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_record_before_others_is_an_error() {
        let d = dir("corrupt-log");
        {
            let s = EmbeddedStore::open(&d).unwrap();
            s.apply(topo(A), None).unwrap();
            s.apply(topo(B), None).unwrap();
        }
        let mut bytes = std::fs::read(d.join(LOG)).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(d.join(LOG), bytes).unwrap();
        let err = EmbeddedStore::open(&d).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn the_log_folds_into_a_new_snapshot_when_it_outgrows_it() {
        let d = dir("fold");
        let s = EmbeddedStore::open(&d).unwrap();
        // Each change replaces a big group: the log passes LOG_MIN_BYTES.
        let mut last = 0;
        let mut folded = false;
        for v in 0..40 {
            s.apply(groups(2, 10_000, v * 10_000), None).unwrap();
            let len = log_len(&d);
            folded |= len < last;
            last = len;
            let snapshot = std::fs::metadata(d.join(FILE)).unwrap().len();
            assert!(len <= snapshot.max(LOG_MIN_BYTES), "log of {len} bytes");
        }
        assert!(folded, "the log was folded into the snapshot");
        let ids = s.object_ids().unwrap();
        let events = s.events_since(30).unwrap();
        drop(s);
        let s = EmbeddedStore::open(&d).unwrap();
        let cur = s.current().unwrap();
        assert_eq!(
            (cur.revision, cur.topology),
            (40, groups(2, 10_000, 39 * 10_000))
        );
        assert_eq!(s.object_ids().unwrap(), ids);
        // The history survives the fold and the restart.
        assert_eq!(s.events_since(30).unwrap(), events);
    }

    #[test]
    fn history_is_bounded_by_bytes() {
        let d = dir("history-bytes");
        let s = EmbeddedStore::open(&d).unwrap();
        // Each change replaces a group of about 1 MiB.
        let addresses = 80_000;
        for v in 0..24 {
            s.apply(groups(1, addresses, v * addresses), None).unwrap();
        }
        let kept = 24
            - match s.events_since(0) {
                Err(StoreError::Compacted { oldest, .. }) => oldest,
                other => panic!("not compacted: {other:?}"),
            };
        let events = s.events_since(24 - kept).unwrap();
        let bytes: usize = events
            .iter()
            .map(|e| serde_json::to_vec(e.delta.as_ref()).unwrap().len())
            .sum();
        assert!(kept < HISTORY as u64, "{kept} kept");
        assert!(bytes <= HISTORY_BYTES, "{bytes} bytes kept");
        assert!(kept >= 2, "{kept} kept");
    }

    #[test]
    fn a_format_1_store_opens_with_its_history() {
        let d = dir("format1");
        std::fs::create_dir_all(&d).unwrap();
        let a = serde_json::to_value(topo(A)).unwrap();
        let b = serde_json::to_value(topo(B)).unwrap();
        let old = serde_json::json!({
            "format": 1,
            "history": [{"revision": 1, "topology": a}, {"revision": 2, "topology": b}],
            "next_id": 3,
            "ids": {"bridges.b": 1, "chains.x": 2},
        });
        std::fs::write(d.join(FILE), serde_json::to_vec(&old).unwrap()).unwrap();
        let s = EmbeddedStore::open(&d).unwrap();
        let cur = s.current().unwrap();
        assert_eq!((cur.revision, cur.topology), (2, topo(B)));
        assert_eq!(s.object_ids().unwrap()["bridges.b"], 1);
        let events = s.events_since(0).unwrap();
        assert_eq!(events[1].changes[0].to_string(), "~ bridges.b.ports.p");
        // The next change writes the current format.
        s.apply(topo(A), None).unwrap();
        drop(s);
        let text = std::fs::read_to_string(d.join(FILE)).unwrap();
        assert!(text.starts_with("{\"format\":2"), "{}", &text[..40]);
        let s = EmbeddedStore::open(&d).unwrap();
        assert_eq!(s.current().unwrap().revision, 3);
        assert_eq!(s.events_since(0).unwrap().len(), 3);
    }

    #[test]
    fn a_crash_between_a_new_snapshot_and_emptying_the_log_is_harmless() {
        let d = dir("fold-crash");
        let s = EmbeddedStore::open(&d).unwrap();
        s.apply(topo(A), None).unwrap();
        s.apply(topo(B), None).unwrap();
        let stale = std::fs::read(d.join(LOG)).unwrap();
        {
            let mut guard = s.lock();
            let (state, disk) = &mut *guard;
            disk.write_snapshot(state).unwrap();
        }
        drop(s);
        // The log still holds revisions 1 and 2, which the snapshot has.
        std::fs::write(d.join(LOG), &stale).unwrap();
        let s = EmbeddedStore::open(&d).unwrap();
        let cur = s.current().unwrap();
        assert_eq!((cur.revision, cur.topology), (2, topo(B)));
        assert_eq!(s.events_since(0).unwrap().len(), 2);
        assert_eq!(s.apply(topo(A), None).unwrap().revision, 3);
        drop(s);
        let s = EmbeddedStore::open(&d).unwrap();
        let cur = s.current().unwrap();
        assert_eq!((cur.revision, cur.topology), (3, topo(A)));
        assert_eq!(s.object_ids().unwrap()["bridges.b"], 1);
    }
}
