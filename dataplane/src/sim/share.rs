//! How much of a bounded table one tenant (bridge, router, zone) may hold.

/// The default share: a quarter of `capacity`, at least `floor`, at most
/// the whole table. One tenant cannot fill a table, and a small table is
/// not cut down to nothing.
pub fn tenant_share(capacity: usize, floor: usize) -> usize {
    (capacity / 4).max(floor).min(capacity)
}
