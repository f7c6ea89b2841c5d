//! Copy-on-write state tables: what lets `vnetctl trace` run on an overlay
//! of the worker's state instead of a copy of it.
//!
//! The worker is a table's only owner, so its writes never copy anything
//! (`Arc::make_mut` on a unique `Arc` is a check, not a clone). A trace
//! clones the `State` — six reference counts — and simulates on that: the
//! tables it only reads stay shared, and the first write to one (a trace
//! that learns a MAC, commits a connection, binds a NAT port) copies that
//! table alone, for the trace, and drops the copy when the trace ends.
//! Nothing the trace does reaches the live tables.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Shared<T>(Arc<T>);

impl<T> Clone for Shared<T> {
    /// Shares the table (no copy).
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> From<T> for Shared<T> {
    fn from(table: T) -> Self {
        Shared(Arc::new(table))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> DerefMut for Shared<T> {
    /// The table, copied first if another `State` shares it.
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_shares_until_it_writes_and_never_writes_through() {
        let mut live: Shared<Vec<u32>> = vec![1, 2].into();
        let mut trace = live.clone();
        assert!(Arc::ptr_eq(&live.0, &trace.0), "cloning copies nothing");
        trace.push(3);
        assert_eq!(
            (live.as_slice(), trace.as_slice()),
            (&[1, 2][..], &[1, 2, 3][..])
        );
        assert!(!Arc::ptr_eq(&live.0, &trace.0));
        drop(trace);
        // The live table is the only owner again: writing copies nothing.
        let before = Arc::as_ptr(&live.0);
        live.push(4);
        assert_eq!(Arc::as_ptr(&live.0), before);
        assert_eq!(*live, vec![1, 2, 4]);
    }
}
