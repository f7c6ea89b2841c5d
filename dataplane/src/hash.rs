//! The hash maps of the per-packet path. Their keys (MACs, addresses,
//! 5-tuples, flow keys) are chosen by tenants, so the hasher must resist
//! crafted collisions, and it is on every first packet, so it must be fast:
//! aHash with random keys is both (std's SipHash is the first only, and
//! dominated flow installation in profiles).
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub type HashSet<T> = std::collections::HashSet<T, ahash::RandomState>;
