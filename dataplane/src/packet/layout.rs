//! The header layout (`vnet_common::wire`, shared with the XDP program)
//! and the slice accessors the dataplane reads and writes fields with.
pub use vnet_common::wire::*;

/// The big-endian 16-bit field `f` of `b` (the caller checked its length).
pub fn get16(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

pub fn put16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// The 4-byte field `f` (an IPv4 address, a sequence number).
pub fn get4(b: &[u8], f: Field) -> [u8; 4] {
    [b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3]]
}

/// The 6-byte field `f` (a MAC address).
pub fn get6(b: &[u8], f: Field) -> [u8; 6] {
    let mut m = [0; 6];
    m.copy_from_slice(&b[f.start..f.start + 6]);
    m
}

/// The field `f` of the header starting at `at`.
pub fn at(at: usize, f: Field) -> Field {
    at + f.start..at + f.end
}
