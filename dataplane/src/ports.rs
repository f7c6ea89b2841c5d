//! The port registry: the exterior ports the worker has bound to an
//! interface and its AF_XDP socket, found by position (the worker's
//! round-robin), by snapshot port and by ifindex.
//!
//! The registry is the one owner of bound ports: [`crate::binding`] makes
//! and closes them, the worker registers and unregisters them here, and
//! the indexes are rebuilt by every change, so that no lookup ever sees a
//! port that is gone or misses one that was just bound.

use crate::afxdp::{RxDrops, Xsk};
use crate::sim::PortId;
use crate::upcalls;
use std::collections::HashMap;
use vnet_model::Executor;

/// The receive socket of one of a multi-queue interface's queues beyond 0.
pub struct QueueSocket {
    pub xsk: Xsk,
    /// The socket's drop counters at their last reading.
    pub drops: RxDrops,
}

impl QueueSocket {
    pub fn new(xsk: Xsk) -> QueueSocket {
        QueueSocket {
            xsk,
            drops: RxDrops::default(),
        }
    }
}

/// The receive sockets of a multi-queue interface, by queue: `first` is
/// queue 0's, `more` queue 1's on. (A bound port and the upcall path both
/// hold theirs so.)
pub(crate) fn queue_sockets<'a>(
    first: &'a Xsk,
    more: &'a [QueueSocket],
) -> impl Iterator<Item = (usize, &'a Xsk)> {
    std::iter::once(first)
        .chain(more.iter().map(|q| &q.xsk))
        .enumerate()
}

/// The socket of queue `queue` of [`queue_sockets`], if there is one.
pub(crate) fn queue_socket_mut<'a>(
    first: &'a mut Xsk,
    more: &'a mut [QueueSocket],
    queue: usize,
) -> Option<&'a mut Xsk> {
    match queue.checked_sub(1) {
        None => Some(first),
        Some(k) => more.get_mut(k).map(|q| &mut q.xsk),
    }
}

/// An exterior port bound to an interface with its socket.
pub struct BoundPort {
    /// Changed only through [`PortRegistry::retain`] (the indexes follow).
    pub port: PortId,
    pub ifindex: u32,
    /// The socket of receive queue 0, which also transmits what userspace
    /// forwards to the port.
    pub xsk: Xsk,
    /// The receive sockets of queues 1.. of a multi-queue interface (XDP
    /// ports only), in queue order: the kernel hands a socket only its own
    /// queue's frames.
    pub queues: Vec<QueueSocket>,
    /// XSKMAP slot of the socket of queue 0 (queue `q`'s is `slot + q`): XDP
    /// ports only (the socket of an skb port only transmits).
    pub slot: Option<u32>,
    /// The kernel program that runs the port's flows (`Xdp` or `Skb`,
    /// never `Auto`).
    pub executor: Executor,
    /// The executor the topology asks for (`Auto` included): a change of it
    /// binds the port again.
    pub wanted: Executor,
    /// A veth whose peer is in another namespace: the skb executor delivers
    /// into the peer directly (`act::REDIRECT_PEER`).
    pub redirect_peer: bool,
    /// Frames received from the kernel (misses) within the budget.
    pub rx: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// The port's upcall budget.
    pub(crate) upcalls: upcalls::TokenBucket,
    /// Frames over the budget, dropped.
    pub upcall_dropped: u64,
    /// The socket's drop counters at their last reading.
    pub drops: RxDrops,
}

impl BoundPort {
    /// How many receive sockets it has: queue 0's and the other queues'.
    pub fn socket_count(&self) -> u32 {
        1 + self.queues.len() as u32
    }

    /// Its receive sockets, by queue.
    pub fn receive_sockets(&self) -> impl Iterator<Item = (usize, &Xsk)> {
        queue_sockets(&self.xsk, &self.queues)
    }

    pub fn new(
        port: PortId,
        ifindex: u32,
        xsk: Xsk,
        slot: Option<u32>,
        executor: Executor,
        redirect_peer: bool,
    ) -> BoundPort {
        BoundPort {
            port,
            ifindex,
            xsk,
            queues: Vec::new(),
            slot,
            executor,
            wanted: executor,
            redirect_peer,
            rx: 0,
            rx_bytes: 0,
            upcalls: upcalls::TokenBucket::default(),
            upcall_dropped: 0,
            drops: RxDrops::default(),
        }
    }
}

#[derive(Default)]
pub struct PortRegistry {
    ports: Vec<BoundPort>,
    by_port: HashMap<PortId, usize>,
    by_ifindex: HashMap<u32, usize>,
}

impl PortRegistry {
    pub fn new(ports: Vec<BoundPort>) -> PortRegistry {
        let mut registry = PortRegistry {
            ports,
            ..PortRegistry::default()
        };
        registry.reindex();
        registry
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, BoundPort> {
        self.ports.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, BoundPort> {
        self.ports.iter_mut()
    }

    /// The port at `position` (0..len), for the worker's round-robin.
    pub fn at(&self, position: usize) -> &BoundPort {
        &self.ports[position]
    }

    pub fn at_mut(&mut self, position: usize) -> &mut BoundPort {
        &mut self.ports[position]
    }

    /// The position of snapshot port `port`, if it is bound.
    pub fn position(&self, port: PortId) -> Option<usize> {
        self.by_port.get(&port).copied()
    }

    pub fn by_port(&self, port: PortId) -> Option<&BoundPort> {
        self.position(port).map(|i| &self.ports[i])
    }

    pub fn by_port_mut(&mut self, port: PortId) -> Option<&mut BoundPort> {
        self.position(port).map(|i| &mut self.ports[i])
    }

    pub fn by_ifindex(&self, ifindex: u32) -> Option<&BoundPort> {
        self.by_ifindex.get(&ifindex).map(|&i| &self.ports[i])
    }

    /// The position of the port bound to `ifindex`.
    pub fn position_of_ifindex(&self, ifindex: u32) -> Option<usize> {
        self.by_ifindex.get(&ifindex).copied()
    }

    pub fn is_bound(&self, port: PortId) -> bool {
        self.by_port.contains_key(&port)
    }

    /// Registers a port the binder just bound.
    pub fn register(&mut self, bound: BoundPort) {
        let i = self.ports.len();
        self.by_port.insert(bound.port, i);
        self.by_ifindex.insert(bound.ifindex, i);
        self.ports.push(bound);
    }

    /// Keeps the ports for which `keep` returns true (it may renumber
    /// their snapshot port) and hands back the others, in order, for the
    /// binder to close.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut BoundPort) -> bool) -> Vec<BoundPort> {
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.ports.len());
        for mut b in std::mem::take(&mut self.ports) {
            if keep(&mut b) {
                kept.push(b);
            } else {
                removed.push(b);
            }
        }
        self.ports = kept;
        self.reindex();
        removed
    }

    fn reindex(&mut self) {
        self.by_port.clear();
        self.by_ifindex.clear();
        for (i, b) in self.ports.iter().enumerate() {
            self.by_port.insert(b.port, i);
            self.by_ifindex.insert(b.ifindex, i);
        }
    }
}

impl<'a> IntoIterator for &'a PortRegistry {
    type Item = &'a BoundPort;
    type IntoIter = std::slice::Iter<'a, BoundPort>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut PortRegistry {
    type Item = &'a mut BoundPort;
    type IntoIter = std::slice::IterMut<'a, BoundPort>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}
