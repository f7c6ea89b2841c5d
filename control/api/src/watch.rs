//! The Watch call's streams. Each watcher gets the store's changes through
//! its own queue, bounded in events and in bytes. A watcher that does not
//! read fast enough to keep its queue under the bounds is cut off: its
//! queue is dropped at once and its stream ends with RESOURCE_EXHAUSTED,
//! naming the last revision it was sent, so the server never holds a
//! backlog for a client that has stopped reading.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use prost::Message;
use tokio_stream::Stream;
use tonic::Status;

use super::documents::topology_to_pb;
use super::pb;
use super::server::store_status;
use super::views::change_to_pb;
use vnet_model::diff::diff;
use vnet_model::model::Topology;
use vnet_store::{Event, Store, StoreError};

/// Events a watcher's queue holds at most.
pub const QUEUE_EVENTS: usize = 64;
/// Bytes of (encoded) events a watcher's queue holds at most; one event
/// larger than this is still sent when the queue is empty (the whole
/// topology that starts a watch from 0 may be).
pub const QUEUE_BYTES: usize = 8 << 20;

type Item = Result<pb::WatchEvent, Status>;

#[derive(Default)]
struct Queue {
    items: VecDeque<(Item, usize)>,
    bytes: usize,
    /// No item will follow the ones queued.
    ended: bool,
    /// The revision of the last event the stream handed on.
    sent: u64,
    /// The stream, waiting for an item.
    waker: Option<Waker>,
    /// The stream is gone (the client left).
    dropped: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Tells the feeding task that the stream is gone.
    gone: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The feeding side of a watcher's queue.
struct Feed(Arc<Shared>);

impl Feed {
    /// Queues `event`, or cuts the watcher off when it does not fit.
    /// Returns whether to go on feeding (false: cut off, or nobody reads).
    fn push(&self, event: pb::WatchEvent) -> bool {
        let size = event.encoded_len();
        let mut q = self.0.lock();
        if q.dropped {
            return false;
        }
        let full = q.items.len() >= QUEUE_EVENTS || q.bytes + size > QUEUE_BYTES;
        if full && !q.items.is_empty() {
            cut_off(&mut q);
            return false;
        }
        q.bytes += size;
        q.items.push_back((Ok(event), size));
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        true
    }

    /// Ends the stream after what is queued, with `error` last if any.
    fn end(&self, error: Option<Status>) {
        end(&mut self.0.lock(), error);
    }
}

/// Drops what the watcher has not read and ends its stream with the
/// revision it has.
fn cut_off(q: &mut Queue) {
    let sent = q.sent;
    q.items.clear();
    q.bytes = 0;
    let status = Status::resource_exhausted(format!(
        "watcher fell behind at revision {sent}: watch again from revision {sent} or re-list"
    ));
    end(q, Some(status));
}

fn end(q: &mut Queue, error: Option<Status>) {
    if let Some(e) = error {
        q.items.push_back((Err(e), 0));
    }
    q.ended = true;
    if let Some(w) = q.waker.take() {
        w.wake();
    }
}

/// What the Watch call returns: the queue's receiving side.
pub struct WatchStream(Arc<Shared>);

impl Stream for WatchStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut q = self.0.lock();
        if let Some((item, size)) = q.items.pop_front() {
            q.bytes -= size;
            if let Ok(e) = &item {
                q.sent = e.revision;
            }
            return Poll::Ready(Some(item));
        }
        if q.ended {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.dropped = true;
        q.items.clear();
        drop(q);
        self.0.gone.notify_one();
    }
}

fn event_to_pb(e: &Event) -> pb::WatchEvent {
    pb::WatchEvent {
        revision: e.revision,
        changes: e.changes.iter().map(change_to_pb).collect(),
        changed: Some(topology_to_pb(&e.delta.changed)),
        removed: e.delta.removed.clone(),
    }
}

/// Starts watching `store` from revision `from` (0: the current topology
/// first). Fails at once when the store cannot serve `from`.
pub fn watch(store: Arc<dyn Store>, from: u64) -> Result<WatchStream, Status> {
    // Subscribe before reading, so that no change falls in between.
    let mut changed = store.subscribe();
    changed.borrow_and_update();
    let shared = Arc::new(Shared::default());
    shared.lock().sent = from;
    let feed = Feed(shared.clone());
    let mut last = from;
    if from == 0 {
        let cur = store.current().map_err(store_status)?;
        let first = pb::WatchEvent {
            revision: cur.revision,
            changes: diff(&Topology::default(), &cur.topology)
                .iter()
                .map(change_to_pb)
                .collect(),
            changed: Some(topology_to_pb(&cur.topology)),
            removed: Vec::new(),
        };
        // The queue is empty: the first event always fits.
        feed.push(first);
        last = cur.revision;
    } else {
        // Refuse a revision the store cannot serve now, not mid-stream.
        store.events_since(from).map_err(store_status)?;
    }
    tokio::spawn(async move {
        loop {
            match store.events_since(last) {
                Ok(events) => {
                    for e in &events {
                        last = e.revision;
                        if !feed.push(event_to_pb(e)) {
                            return;
                        }
                    }
                }
                // The store has compacted what this watcher still needed
                // (the feeding task itself could not keep up): behind too.
                Err(StoreError::Compacted { .. }) => return cut_off(&mut feed.0.lock()),
                Err(e) => return feed.end(Some(store_status(e))),
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return feed.end(None) },
                _ = feed.0.gone.notified() => return,
            }
        }
    });
    Ok(WatchStream(shared))
}
