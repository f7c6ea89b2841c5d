//! The topology store: the current topology, numbered by revision, changed
//! only whole and only after validation, with a short history of changes to
//! serve watchers.
//!
//! [`Store`] is what the API and vnetd's control thread use; the embedded
//! store ([`EmbeddedStore`], files under vnetd's state directory) is the
//! single-host implementation, and a distributed one can follow behind the
//! same trait: its terms are etcd's (a revision per change, a watch from a
//! revision that gets every change after it, compaction that makes a
//! watcher re-list).
//!
//! Every change, whole (`apply`) or of one object (`create` / `update` /
//! `delete`), is a transaction on the whole model: read the current
//! topology, change it, validate the result as a whole, store it as the next
//! revision. A change that fails validation stores nothing. What a revision
//! keeps is its [`Delta`]: the objects it added or changed and the paths it
//! removed, so that history and watchers cost what the change costs, not
//! what the topology does.

use std::collections::BTreeMap;
use std::sync::Arc;

use vnet_model::diff::{diff, Change};
use vnet_model::model::Topology;
use vnet_model::objects::{Object, ObjectKind};
use vnet_model::ValidationError;

mod delta;
mod embedded;
mod history;
mod log;

pub use delta::{object_path, Delta, FIREWALL, HOSTS, NAT};
pub use embedded::EmbeddedStore;
pub use history::{HISTORY, HISTORY_BYTES};

/// A topology with the revision that stored it (0: nothing stored yet, the
/// empty topology).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisioned {
    pub revision: u64,
    pub topology: Topology,
}

/// The outcome of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The revision now current: a new one, or the old one when the change
    /// changed nothing.
    pub revision: u64,
    pub changes: Vec<Change>,
}

/// One stored revision, for watchers: what it changed, as the list of
/// changes `apply` prints and as the objects that turn the topology before
/// it into the topology after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub changes: Vec<Change>,
    /// Shared with the store's history: watchers do not copy it.
    pub delta: Arc<Delta>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resulting topology is not valid; nothing was stored.
    #[error("{}", vnet_model::TopologyError::Invalid(.0.clone()))]
    Invalid(Vec<ValidationError>),
    // Paths hold names as a request sent them: shown escaped.
    #[error("{} does not exist", vnet_model::visible(path))]
    NotFound { path: String },
    #[error(
        "{} already exists; use update to change it",
        vnet_model::visible(path)
    )]
    AlreadyExists { path: String },
    /// Optimistic concurrency: the topology changed since it was read.
    #[error("the topology is at revision {actual}, not {expected}: read it again and retry")]
    Conflict { expected: u64, actual: u64 },
    /// Watch from a revision older than the history kept.
    #[error("revision {requested} is no longer kept (oldest: {oldest}); watch from 0 to start from the current topology")]
    Compacted { requested: u64, oldest: u64 },
    #[error("revision {requested} is in the future (current: {current})")]
    FutureRevision { requested: u64, current: u64 },
    #[error("store {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("store {path}: {error}")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("store {path} is in use by another process (another vnetd on the same --state-dir?)")]
    Locked { path: String },
    /// Revision numbers never wrap: a store at the last one refuses changes.
    #[error("the store is at revision {current}, the last one it can number; no further change can be stored")]
    RevisionsExhausted { current: u64 },
}

/// A host that registered itself in a shared store (`vnetd --host NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredHost {
    pub name: String,
    /// The address it registered for tunnels.
    pub tunnel_address: String,
    /// Whether its registration is alive now (its lease not expired).
    pub alive: bool,
}

/// A host's claim of SNAT port blocks of one public address (many hosts:
/// each host gives dynamic SNAT ports only out of blocks it holds). Blocks
/// are 64 ports by absolute port (block `b`: ports `64·b ..= 64·b + 63`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatBlockClaim {
    pub host: String,
    pub address: std::net::Ipv4Addr,
    /// The ports the SNAT rules of this address translate to: new blocks
    /// are taken among those that overlap them.
    pub ports: (u16, u16),
    /// The blocks the host holds as far as it knows: kept (taken again
    /// under its current registration if they were lost with an expired
    /// one and nobody took them since).
    pub held: Vec<u16>,
    /// How many more to take.
    pub more: usize,
}

/// A topology store. Implementations serialise changes: each one sees the
/// result of the one before and gets the next revision.
pub trait Store: Send + Sync {
    /// The current topology and its revision.
    fn current(&self) -> Result<Revisioned, StoreError>;

    /// The current topology shared, not copied, and its revision: what
    /// vnetd's control thread compiles for every revision. Stores that keep
    /// no shared copy give a copy of [`Store::current`].
    fn current_shared(&self) -> Result<(u64, Arc<Topology>), StoreError> {
        let current = self.current()?;
        Ok((current.revision, Arc::new(current.topology)))
    }

    /// Runs `edit` on a copy of the current topology and stores the result
    /// as the next revision if it is valid and differs. With `expected`,
    /// fails with [`StoreError::Conflict`] unless the current revision is
    /// that one. Nothing is stored when `edit` fails.
    fn transact(
        &self,
        expected: Option<u64>,
        edit: &mut dyn FnMut(&mut Topology) -> Result<(), StoreError>,
    ) -> Result<Applied, StoreError>;

    /// Every stored revision after `revision`, oldest first, with its
    /// changes (etcd: a watch from `revision + 1`).
    /// [`StoreError::Compacted`] when the history no longer reaches back
    /// that far: the caller re-lists ([`Store::current`]) and goes on from
    /// there. Applying the events' deltas in order to the topology at
    /// `revision` gives the current one.
    fn events_since(&self, revision: u64) -> Result<Vec<Event>, StoreError>;

    /// The current revision now and after every change: when to ask
    /// [`Store::events_since`] again.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Stable ids of the named objects, by path (`bridges.tenant`): given
    /// when an object is created and kept while its name exists.
    fn object_ids(&self) -> Result<BTreeMap<String, u64>, StoreError>;

    /// The hosts that registered themselves in this store, alive or not
    /// (by name). The embedded store is one host's: none register in it.
    fn registered_hosts(&self) -> Result<Vec<RegisteredHost>, StoreError> {
        Ok(Vec::new())
    }

    /// Claims SNAT port blocks for a host ([`NatBlockClaim`]) and returns
    /// every block of the address the host holds afterwards (fewer new ones
    /// than asked when the others hold the rest). `None`: this store is one
    /// host's (the embedded store), which gives every port itself.
    fn claim_nat_blocks(&self, _claim: &NatBlockClaim) -> Result<Option<Vec<u16>>, StoreError> {
        Ok(None)
    }

    /// Whether the store answers (cached: never waits for it).
    fn health(&self) -> vnet_model::reports::StoreHealth {
        vnet_model::reports::StoreHealth {
            store: "embedded".into(),
            reachable: true,
            ..Default::default()
        }
    }

    /// Changes whenever this host's registration is a new one (a new etcd
    /// lease after an expired one): what it held under the old one must be
    /// claimed again.
    fn registration_epoch(&self) -> u64 {
        0
    }

    /// Makes the topology exactly `topology` (declarative apply).
    fn apply(&self, topology: Topology, expected: Option<u64>) -> Result<Applied, StoreError> {
        self.transact(expected, &mut |t| {
            *t = topology.clone();
            Ok(())
        })
    }

    /// What `apply` would change, without storing anything: validation
    /// errors, or the diff against the current topology.
    fn plan(&self, topology: &Topology) -> Result<Applied, StoreError> {
        let current = self.current()?;
        // As `transact` would store it: ports keep their tunnel keys.
        let mut topology = topology.clone();
        topology
            .keep_tunnel_keys(&current.topology)
            .map_err(StoreError::Invalid)?;
        topology.validate().map_err(StoreError::Invalid)?;
        self.check_rules(&topology)?;
        Ok(Applied {
            revision: current.revision,
            changes: diff(&current.topology, &topology),
        })
    }

    /// The store's own rules for a valid topology, beyond validation (etcd:
    /// with many hosts registered, a bound port must name its host): what
    /// a change must pass, and so what a dry run checks too.
    fn check_rules(&self, _topology: &Topology) -> Result<(), StoreError> {
        Ok(())
    }

    fn create(&self, name: &str, object: Object) -> Result<Applied, StoreError> {
        let kind = object.kind();
        self.transact(None, &mut |t| {
            if t.contains_object(kind, name) {
                return Err(StoreError::AlreadyExists {
                    path: kind.path(name),
                });
            }
            t.insert_object(name, object.clone());
            Ok(())
        })
    }

    fn update(&self, name: &str, object: Object) -> Result<Applied, StoreError> {
        let kind = object.kind();
        self.transact(None, &mut |t| {
            if !t.contains_object(kind, name) {
                return Err(StoreError::NotFound {
                    path: kind.path(name),
                });
            }
            t.insert_object(name, object.clone());
            Ok(())
        })
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<Applied, StoreError> {
        self.transact(None, &mut |t| {
            if t.remove_object(kind, name) {
                Ok(())
            } else {
                Err(StoreError::NotFound {
                    path: kind.path(name),
                })
            }
        })
    }
}
