//! MidoNet ids (UUIDs) for vnet objects, which have names.
//!
//! The mapping: an object's UUID is a hash of its path in the topology
//! (`bridges.tenant`, `routers.edge.ports.uplink`, `chains.web-in`), so it is
//! the same on every read, across restarts and for objects written by files
//! or gRPC, with nothing stored beside the topology. Rules and routes have no
//! names: theirs hash the chain or router, the item's content and how many
//! equal items come before it, so inserting or deleting other rules does not
//! change them. Renaming an object would change its id, so renames are
//! refused (a MidoNet id never changes).
//!
//! The hash is 128-bit FNV-1a (stable by definition, unlike std's hasher)
//! with the version nibble set to 8 (RFC 9562's custom UUID) and the RFC
//! variant bits, so the ids are well-formed UUIDs that cannot collide with
//! the random (version 4) ones MidoNet itself made.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Uuid(pub u128);

impl Uuid {
    /// The id of the object at `path`.
    pub fn derived(path: &str) -> Uuid {
        const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
        const PRIME: u128 = 0x0000000001000000000000000000013B;
        let mut h = OFFSET;
        for b in b"vnet-midonet:".iter().chain(path.as_bytes()) {
            h ^= u128::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        Uuid::with_version(h, 8)
    }

    /// A random (version 4) UUID, from the kernel's random source.
    pub fn random() -> std::io::Result<Uuid> {
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
        Ok(Uuid::with_version(u128::from_be_bytes(b), 4))
    }

    fn with_version(v: u128, version: u128) -> Uuid {
        let v = (v & !(0xf << 76)) | (version << 76);
        let v = (v & !(0x3 << 62)) | (0x2 << 62);
        Uuid(v)
    }

    /// The first 8 hex digits: enough to tell generated names apart.
    pub fn short(&self) -> String {
        format!("{:08x}", (self.0 >> 96) as u32)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl FromStr for Uuid {
    type Err = String;
    fn from_str(s: &str) -> Result<Uuid, String> {
        let bad = || {
            format!(
                "`{}` is not a UUID (8-4-4-4-12 hex digits)",
                s.escape_debug()
            )
        };
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u128::from_str_radix(&hex, 16).map(Uuid).map_err(|_| bad())
    }
}

// The paths the ids hash. They are the store's object paths, extended to the
// parts of objects MidoNet addresses on their own.

pub fn bridge(name: &str) -> Uuid {
    Uuid::derived(&format!("bridges.{name}"))
}

pub fn router(name: &str) -> Uuid {
    Uuid::derived(&format!("routers.{name}"))
}

pub fn chain(name: &str) -> Uuid {
    Uuid::derived(&format!("chains.{name}"))
}

pub fn bridge_port(bridge: &str, port: &str) -> Uuid {
    Uuid::derived(&format!("bridges.{bridge}.ports.{port}"))
}

pub fn router_port(router: &str, port: &str) -> Uuid {
    Uuid::derived(&format!("routers.{router}.ports.{port}"))
}

pub fn port_group(name: &str) -> Uuid {
    Uuid::derived(&format!("port_groups.{name}"))
}

pub fn ip_group(name: &str) -> Uuid {
    Uuid::derived(&format!("ip_groups.{name}"))
}

/// A rule: its chain, its content (the file form), and the number of equal
/// rules before it in the chain.
pub fn rule(chain: &str, content: &str, nth: usize) -> Uuid {
    Uuid::derived(&format!("chains.{chain}.rules.{content}#{nth}"))
}

pub fn route(router: &str, content: &str, nth: usize) -> Uuid {
    Uuid::derived(&format!("routers.{router}.routes.{content}#{nth}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_well_formed_and_distinct() {
        let a = bridge("tenant");
        assert_eq!(a, bridge("tenant"));
        assert_ne!(a, router("tenant"));
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "8", "version nibble");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "variant");
        assert_eq!(s.parse::<Uuid>().unwrap(), a);
        // Pinned (computed independently from the FNV-1a 128 definition):
        // changing the derivation would change every id clients hold.
        assert_eq!(a.to_string(), "b81d0485-5faf-8552-8305-0a6c1e61a397");
    }

    #[test]
    fn random_ids_are_version_4() {
        let r = Uuid::random().unwrap();
        assert_eq!(&r.to_string()[14..15], "4");
        assert_ne!(r, Uuid::random().unwrap());
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "",
            "x",
            "0000000-0000-0000-0000-000000000000",
            "zzzzzzzz-0000-0000-0000-000000000000",
        ] {
            assert!(bad.parse::<Uuid>().is_err(), "{bad}");
        }
    }
}
