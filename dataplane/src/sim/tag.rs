//! Flow tags (MidoNet's flow tagging): every object and state entry a
//! decision read is named by a tag on the installed flow, so a change to that
//! object invalidates exactly the flows that depended on it.
//!
//! A tag is a 64-bit FNV-1a hash of the object's kind and name, so it stays
//! the same across topology snapshots (ids inside a snapshot do not).
use crate::packet::Mac;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl Tag {
    /// Flows a restarted vnetd took over from the one before it
    /// (`runtime/adoption.rs`): it does not know what each decision read,
    /// so any topology change invalidates them all. (A name hashes to 0
    /// with odds of 2^-64.)
    pub const ADOPTED: Tag = Tag(0);

    fn of(kind: u8, parts: &[&[u8]]) -> Tag {
        let mut h = fnv(FNV_OFFSET, &[kind]);
        for p in parts {
            // A separator that cannot occur in names keeps ("ab","c") != ("a","bc").
            h = fnv(fnv(h, p), &[0xff]);
        }
        Tag(h)
    }
    /// A port, by its qualified name `device/port`.
    pub fn port(qualified_name: &str) -> Tag {
        Tag::of(1, &[qualified_name.as_bytes()])
    }
    /// The tunnel to another host's address, with the next hop's MAC the
    /// flows towards it were installed with (invalidated when it changes).
    pub fn tunnel_peer(addr: [u8; 4]) -> Tag {
        Tag::of(10, &[&addr])
    }
    /// A bridge or router (its configuration, filters, tables).
    pub fn device(name: &str) -> Tag {
        Tag::of(2, &[name.as_bytes()])
    }
    /// A MAC address as learned on (or configured for) a bridge.
    pub fn mac(bridge: Tag, mac: &Mac) -> Tag {
        Tag::of(3, &[&bridge.0.to_be_bytes(), mac])
    }
    /// A rule chain (its rules), an IP address group, a port group.
    pub fn chain(name: &str) -> Tag {
        Tag::of(5, &[name.as_bytes()])
    }
    pub fn ip_group(name: &str) -> Tag {
        Tag::of(6, &[name.as_bytes()])
    }
    pub fn port_group(name: &str) -> Tag {
        Tag::of(7, &[name.as_bytes()])
    }
    /// The connection-tracking state of `tuple` in `zone`.
    pub fn conn(zone: Tag, tuple: &super::conntrack::Tuple) -> Tag {
        let ports = [tuple.sport.to_be_bytes(), tuple.dport.to_be_bytes()].concat();
        Tag::of(
            8,
            &[
                &zone.0.to_be_bytes(),
                &[tuple.proto],
                &tuple.src,
                &tuple.dst,
                &ports,
            ],
        )
    }
    /// The NAT binding of connection `original` in `zone`.
    pub fn nat(zone: Tag, original: &super::conntrack::Tuple) -> Tag {
        let ports = [original.sport.to_be_bytes(), original.dport.to_be_bytes()].concat();
        Tag::of(
            9,
            &[
                &zone.0.to_be_bytes(),
                &[original.proto],
                &original.src,
                &original.dst,
                &ports,
            ],
        )
    }
    /// A router's ARP cache entry for `ip`.
    pub fn arp(router: Tag, ip: [u8; 4]) -> Tag {
        Tag::of(4, &[&router.0.to_be_bytes(), &ip])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_kind_and_name_and_are_stable() {
        assert_eq!(Tag::port("a/b"), Tag::port("a/b"));
        assert_ne!(Tag::port("a/b"), Tag::device("a/b"));
        assert_ne!(Tag::port("ab/c"), Tag::port("a/bc"));
        let b = Tag::device("tenant");
        assert_ne!(Tag::mac(b, &[1; 6]), Tag::mac(b, &[2; 6]));
        assert_ne!(
            Tag::mac(b, &[1; 6]),
            Tag::mac(Tag::device("other"), &[1; 6])
        );
    }
}
