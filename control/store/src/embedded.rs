//! The embedded store: one JSON file under vnetd's state directory.
//!
//! The file holds the current revision, the last [`HISTORY`] topologies
//! (the current one last) and the object ids. Each change writes a complete
//! new file next to it, fsyncs it, renames it over the old one and fsyncs
//! the directory, so a crash (kill -9, power loss) at any point leaves
//! either the old file or the new one, never a mix. The file is small (a
//! few topologies), so rewriting it whole is cheaper than any log.
//!
//! A lock file (`flock`) keeps a second process from using the same store.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Applied, Event, Revisioned, Store, StoreError};
use vnet_model::diff::diff;
use vnet_model::model::Topology;
use vnet_model::objects::ObjectKind;

/// Revisions kept for watchers that fall behind (and for `events_since`).
pub const HISTORY: usize = 64;

const FILE: &str = "topology-store.json";
const TMP: &str = "topology-store.json.tmp";
const LOCK: &str = "topology-store.lock";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    revision: u64,
    topology: Topology,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Contents {
    format: u32,
    /// Oldest first; the last entry is the current topology. Empty before
    /// the first change (revision 0, the empty topology).
    history: VecDeque<Entry>,
    next_id: u64,
    ids: BTreeMap<String, u64>,
}

impl Contents {
    fn empty() -> Contents {
        Contents {
            format: FORMAT,
            history: VecDeque::new(),
            next_id: 1,
            ids: BTreeMap::new(),
        }
    }

    fn current(&self) -> Revisioned {
        match self.history.back() {
            Some(e) => Revisioned {
                revision: e.revision,
                topology: e.topology.clone(),
            },
            None => Revisioned {
                revision: 0,
                topology: Topology::default(),
            },
        }
    }

    /// Keeps the ids of objects that stay, gives new objects new ids.
    fn assign_ids(&mut self, topology: &Topology) {
        let mut ids = BTreeMap::new();
        for kind in ObjectKind::ALL {
            for name in topology.names(kind) {
                let path = kind.path(name);
                let id = match self.ids.get(&path) {
                    Some(id) => *id,
                    None => {
                        self.next_id += 1;
                        self.next_id - 1
                    }
                };
                ids.insert(path, id);
            }
        }
        self.ids = ids;
    }
}

pub struct EmbeddedStore {
    dir: PathBuf,
    contents: Mutex<Contents>,
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
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |error| StoreError::Io { path, error }
        };
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
        let contents = match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::empty(),
            Err(e) => return Err(io(&path)(e)),
        };
        let (notify, _) = tokio::sync::watch::channel(contents.current().revision);
        Ok(EmbeddedStore {
            dir: dir.to_path_buf(),
            contents: Mutex::new(contents),
            notify,
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contents> {
        // A panic while holding the lock cannot leave the contents half
        // changed (they are replaced whole), so a poisoned lock is usable.
        self.contents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `contents` so that a crash leaves the old file or this one.
    fn persist(&self, contents: &Contents) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP);
        let path = self.dir.join(FILE);
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |error| StoreError::Io { path, error }
        };
        let bytes = serde_json::to_vec(contents).map_err(|e| StoreError::Corrupt {
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
        Ok(())
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Contents, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.display().to_string(),
        message,
    };
    let contents: Contents =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a vnet store: {e}")))?;
    if contents.format != FORMAT {
        return Err(corrupt(format!(
            "format {} is not the one this vnetd reads ({FORMAT})",
            contents.format
        )));
    }
    if !contents
        .history
        .iter()
        .zip(contents.history.iter().skip(1))
        .all(|(a, b)| a.revision < b.revision)
    {
        return Err(corrupt("revisions out of order".into()));
    }
    // Only valid topologies are ever stored; anything else was changed by
    // hand and is refused rather than run.
    if let Some(e) = contents.history.back() {
        e.topology
            .validate()
            .map_err(|errors| corrupt(vnet_model::TopologyError::Invalid(errors).to_string()))?;
    }
    Ok(contents)
}

impl Store for EmbeddedStore {
    fn current(&self) -> Result<Revisioned, StoreError> {
        Ok(self.lock().current())
    }

    fn transact(
        &self,
        expected: Option<u64>,
        edit: &mut dyn FnMut(&mut Topology) -> Result<(), StoreError>,
    ) -> Result<Applied, StoreError> {
        let mut guard = self.lock();
        let current = guard.current();
        if let Some(expected) = expected {
            if expected != current.revision {
                return Err(StoreError::Conflict {
                    expected,
                    actual: current.revision,
                });
            }
        }
        let mut topology = current.topology.clone();
        edit(&mut topology)?;
        topology.validate().map_err(StoreError::Invalid)?;
        let changes = diff(&current.topology, &topology);
        if changes.is_empty() {
            return Ok(Applied {
                revision: current.revision,
                changes,
            });
        }
        // A revision number that wrapped would hand watchers and the
        // dataplane an older number for a newer topology.
        let revision = current
            .revision
            .checked_add(1)
            .ok_or(StoreError::RevisionsExhausted {
                current: current.revision,
            })?;
        let mut next = guard.clone();
        next.history.push_back(Entry {
            revision,
            topology: topology.clone(),
        });
        while next.history.len() > HISTORY {
            next.history.pop_front();
        }
        next.assign_ids(&topology);
        // Memory changes only once the disk has the new revision.
        self.persist(&next)?;
        *guard = next;
        drop(guard);
        self.notify.send_replace(revision);
        Ok(Applied { revision, changes })
    }

    fn events_since(&self, revision: u64) -> Result<Vec<Event>, StoreError> {
        let guard = self.lock();
        let current = guard.current().revision;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision == current {
            return Ok(Vec::new());
        }
        // The base to diff the first event against: the topology at
        // `revision` (the empty one at 0).
        let oldest = guard.history.front().map(|e| e.revision).unwrap_or(0);
        let empty = Topology::default();
        let base = if revision == 0 && oldest == 1 {
            &empty
        } else {
            match guard.history.iter().find(|e| e.revision == revision) {
                Some(e) => &e.topology,
                None => {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        oldest,
                    })
                }
            }
        };
        let mut prev = base;
        let mut out = Vec::new();
        for e in guard.history.iter().filter(|e| e.revision > revision) {
            out.push(Event {
                revision: e.revision,
                changes: diff(prev, &e.topology),
                topology: e.topology.clone(),
            });
            prev = &e.topology;
        }
        Ok(out)
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn object_ids(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self.lock().ids.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::objects::Object;

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
        let mut contents = Contents::empty();
        contents.history.push_back(Entry {
            revision: u64::MAX,
            topology: topo(A),
        });
        std::fs::write(d.join(FILE), serde_json::to_vec(&contents).unwrap()).unwrap();
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
}
