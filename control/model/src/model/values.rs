//! Value types written as text in the topology file: MAC addresses (with an
//! optional mask), `device/port` references, L4 port ranges, IPv4 address
//! ranges and IP protocol numbers.
//!
//! Each type parses with `FromStr` and prints with `Display` in the exact form
//! TOPOLOGY.md documents, and (de)serializes through that form, so the file,
//! the API and error messages all spell values the same way.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value in the file that does not have the documented form. The message
/// says what was expected, so it can be shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn value_error(input: &str, expected: &str) -> ValueError {
    ValueError(format!("`{input}` is not {expected}"))
}

/// Implements Serialize/Deserialize through Display/FromStr for types that are
/// always written as strings.
macro_rules! string_serde {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

// ---------------------------------------------------------------------------
// MAC addresses

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const ZERO: MacAddr = MacAddr([0; 6]);
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group bit set: multicast or broadcast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// An address a single interface can own (not group, not all-zero).
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Self::ZERO
    }

    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || value_error(s, "a MAC address like 02:00:00:00:00:01");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            // Exactly two hex digits per byte: `2:0:...` is more likely a typo
            // than a MAC, and the canonical form is what `get` prints back.
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

string_serde!(MacAddr, "a MAC address like 02:00:00:00:00:01");

/// A MAC address with an optional mask, written `aa:..:ff` or
/// `aa:..:ff/ff:..:00`, for rule conditions. Without a mask every bit counts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MacMatch {
    pub addr: MacAddr,
    pub mask: MacAddr,
}

impl MacMatch {
    pub fn exact(addr: MacAddr) -> Self {
        MacMatch {
            addr,
            mask: MacAddr::BROADCAST,
        }
    }

    pub fn matches(&self, mac: MacAddr) -> bool {
        (0..6).all(|i| mac.0[i] & self.mask.0[i] == self.addr.0[i] & self.mask.0[i])
    }
}

impl fmt::Display for MacMatch {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.mask == MacAddr::BROADCAST {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.mask)
        }
    }
}

impl FromStr for MacMatch {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || {
            value_error(
                s,
                "a MAC address with an optional mask, like 01:00:00:00:00:00/01:00:00:00:00:00",
            )
        };
        match s.split_once('/') {
            None => Ok(MacMatch::exact(s.parse().map_err(|_| bad())?)),
            Some((addr, mask)) => Ok(MacMatch {
                addr: addr.parse().map_err(|_| bad())?,
                mask: mask.parse().map_err(|_| bad())?,
            }),
        }
    }
}

string_serde!(
    MacMatch,
    "a MAC address with an optional mask, like 01:00:00:00:00:00/01:00:00:00:00:00"
);

// ---------------------------------------------------------------------------
// Port references

/// A reference to a port of a bridge or router, written `device/port`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRef {
    pub device: String,
    pub port: String,
}

impl PortRef {
    pub fn new(device: impl Into<String>, port: impl Into<String>) -> Self {
        PortRef {
            device: device.into(),
            port: port.into(),
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.device, self.port)
    }
}

impl fmt::Debug for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PortRef {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.split_once('/') {
            Some((device, port))
                if !device.is_empty() && !port.is_empty() && !port.contains('/') =>
            {
                Ok(PortRef::new(device, port))
            }
            _ => Err(value_error(
                s,
                "a port reference like router/port or bridge/port",
            )),
        }
    }
}

string_serde!(PortRef, "a port reference like router/port or bridge/port");

// ---------------------------------------------------------------------------
// L4 port ranges

/// An inclusive range of TCP/UDP ports, written `80` or `8000-8009`. The YAML
/// may give a single port as an integer or a string.
///
/// Parsing accepts `start > end` so that validation can report it with the
/// field's path together with every other error.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Number of ports in the range (0 when `start > end`).
    pub fn len(&self) -> u32 {
        if self.start > self.end {
            0
        } else {
            u32::from(self.end) - u32::from(self.start) + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// `0` (or `0-0`): in a NAT target it means "rewrite the address only".
    pub fn is_zero(&self) -> bool {
        self.start == 0 && self.end == 0
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortRange {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| value_error(s, "a port (0-65535) or a port range like 8000-8009"))
        };
        match s.split_once('-') {
            None => Ok(PortRange::single(port(s)?)),
            Some((a, b)) => Ok(PortRange {
                start: port(a)?,
                end: port(b)?,
            }),
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A single port is written as a number, as operators write it.
        if self.start == self.end {
            s.serialize_u16(self.start)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port (0-65535) or a port range like 8000-8009")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                u16::try_from(v)
                    .map(PortRange::single)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0-65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                u16::try_from(v)
                    .map(PortRange::single)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0-65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// IPv4 address ranges

/// An inclusive range of IPv4 addresses, written `a.b.c.d` or
/// `a.b.c.d-a.b.c.e`. Like [`PortRange`], `start > end` parses and is
/// reported by validation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Ipv4Range {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Ipv4Range {
    pub fn single(addr: Ipv4Addr) -> Self {
        Ipv4Range {
            start: addr,
            end: addr,
        }
    }

    /// Number of addresses in the range (0 when `start > end`).
    pub fn len(&self) -> u64 {
        let (a, b) = (u32::from(self.start), u32::from(self.end));
        if a > b {
            0
        } else {
            u64::from(b - a) + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.start <= addr && addr <= self.end
    }
}

impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for Ipv4Range {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let addr = |a: &str| {
            a.trim().parse::<Ipv4Addr>().map_err(|_| {
                value_error(
                    s,
                    "an IPv4 address or an address range like 10.0.0.100-10.0.0.199",
                )
            })
        };
        match s.split_once('-') {
            None => Ok(Ipv4Range::single(addr(s)?)),
            Some((a, b)) => Ok(Ipv4Range {
                start: addr(a)?,
                end: addr(b)?,
            }),
        }
    }
}

string_serde!(
    Ipv4Range,
    "an IPv4 address or an address range like 10.0.0.100-10.0.0.199"
);

// ---------------------------------------------------------------------------
// Addresses a port owns (port security)

/// A MAC and/or IPv4 address (or prefix) that a bridge port may use as a
/// source, written `MAC`, `IP`, `IP/LEN`, `MAC IP` or `MAC IP/LEN`
/// (Neutron's fixed IPs and allowed address pairs). A missing part means
/// "the port's own": an IP without a MAC goes with any MAC the port owns,
/// a MAC without an IP takes the port's addresses from the bridge's DHCP
/// host entries for that MAC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortAddress {
    pub mac: Option<MacAddr>,
    pub ip: Option<ipnet::Ipv4Net>,
}

impl fmt::Display for PortAddress {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ip = |f: &mut fmt::Formatter, n: &ipnet::Ipv4Net| {
            if n.prefix_len() == 32 {
                write!(f, "{}", n.addr())
            } else {
                write!(f, "{n}")
            }
        };
        match (&self.mac, &self.ip) {
            (Some(m), Some(n)) => {
                write!(f, "{m} ")?;
                ip(f, n)
            }
            (Some(m), None) => write!(f, "{m}"),
            (None, Some(n)) => ip(f, n),
            (None, None) => Ok(()),
        }
    }
}

impl FromStr for PortAddress {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || {
            value_error(
                s,
                "`MAC`, `IP`, `IP/LEN` or `MAC IP` (like \"02:00:00:00:00:11 10.0.0.11\")",
            )
        };
        let ip = |t: &str| -> Result<ipnet::Ipv4Net, ValueError> {
            if t.contains('/') {
                t.parse::<ipnet::Ipv4Net>().map_err(|_| bad())
            } else {
                t.parse::<Ipv4Addr>()
                    .map(ipnet::Ipv4Net::from)
                    .map_err(|_| bad())
            }
        };
        let parts: Vec<&str> = s.split_whitespace().collect();
        match parts.as_slice() {
            [one] if one.contains(':') => Ok(PortAddress {
                mac: Some(one.parse().map_err(|_| bad())?),
                ip: None,
            }),
            [one] => Ok(PortAddress {
                mac: None,
                ip: Some(ip(one)?),
            }),
            [mac, addr] => Ok(PortAddress {
                mac: Some(mac.parse().map_err(|_| bad())?),
                ip: Some(ip(addr)?),
            }),
            _ => Err(bad()),
        }
    }
}

string_serde!(
    PortAddress,
    "a port address: `MAC`, `IP`, `IP/LEN` or `MAC IP`"
);

// ---------------------------------------------------------------------------
// IP protocol

/// An IP protocol number, written as a name (`tcp`, `udp`, `icmp`) or a
/// number. Numbers without a name are values, not errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);

    pub fn name(&self) -> Option<&'static str> {
        match *self {
            Self::ICMP => Some("icmp"),
            Self::TCP => Some("tcp"),
            Self::UDP => Some("udp"),
            _ => None,
        }
    }

    /// TCP and UDP: the protocols whose headers carry ports.
    pub fn has_ports(&self) -> bool {
        *self == Self::TCP || *self == Self::UDP
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Protocol {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.to_ascii_lowercase().as_str() {
            "icmp" => Ok(Self::ICMP),
            "tcp" => Ok(Self::TCP),
            "udp" => Ok(Self::UDP),
            n => n
                .parse::<u8>()
                .map(Protocol)
                .map_err(|_| value_error(s, "a protocol: tcp, udp, icmp or a number 0-255")),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a protocol: tcp, udp, icmp or a number 0-255")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol)
                    .map_err(|_| E::custom(format!("protocol {v} is out of range 0-255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol)
                    .map_err(|_| E::custom(format!("protocol {v} is out of range 0-255")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        let m: MacAddr = "02:00:0A:bb:cc:ff".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0xa, 0xbb, 0xcc, 0xff]);
        assert_eq!(m.to_string(), "02:00:0a:bb:cc:ff");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:00",
            "02-00-00-00-00-01",
            "+2:00:00:00:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(m.is_unicast() && m.is_locally_administered());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::ZERO.is_unicast());
    }

    #[test]
    fn mac_match_with_and_without_mask() {
        let m: MacMatch = "01:00:00:00:00:00/01:00:00:00:00:00".parse().unwrap();
        assert!(m.matches("33:33:00:00:00:01".parse().unwrap()));
        assert!(!m.matches("02:00:00:00:00:01".parse().unwrap()));
        assert_eq!(m.to_string(), "01:00:00:00:00:00/01:00:00:00:00:00");
        let e: MacMatch = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(e.mask, MacAddr::BROADCAST);
        assert_eq!(e.to_string(), "02:00:00:00:00:01");
        assert!("02:00:00:00:00:01/".parse::<MacMatch>().is_err());
    }

    #[test]
    fn port_ref_needs_exactly_one_slash() {
        let p: PortRef = "edge/uplink".parse().unwrap();
        assert_eq!((p.device.as_str(), p.port.as_str()), ("edge", "uplink"));
        assert_eq!(p.to_string(), "edge/uplink");
        for bad in ["edge", "/uplink", "edge/", "a/b/c", ""] {
            assert!(bad.parse::<PortRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_range_forms() {
        assert_eq!("80".parse::<PortRange>().unwrap(), PortRange::single(80));
        let r: PortRange = "8000-8009".parse().unwrap();
        assert_eq!((r.start, r.end, r.len()), (8000, 8009, 10));
        assert_eq!(r.to_string(), "8000-8009");
        assert_eq!(PortRange::single(80).to_string(), "80");
        // start > end parses; validation reports it.
        assert!("9-1".parse::<PortRange>().unwrap().is_empty());
        for bad in ["", "-", "80-", "70000", "a-b", "1-2-3"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_range_from_yaml_int_or_string() {
        let r: PortRange = serde_yaml::from_str("8080").unwrap();
        assert_eq!(r, PortRange::single(8080));
        let r: PortRange = serde_yaml::from_str("1024-65535").unwrap();
        assert_eq!((r.start, r.end), (1024, 65535));
        let r: PortRange = serde_yaml::from_str("\"22\"").unwrap();
        assert_eq!(r, PortRange::single(22));
        assert!(serde_yaml::from_str::<PortRange>("70000").is_err());
        assert!(serde_yaml::from_str::<PortRange>("-1").is_err());
        assert_eq!(serde_json::to_string(&r).unwrap(), "22");
    }

    #[test]
    fn ipv4_range_forms() {
        let r: Ipv4Range = "10.0.0.100-10.0.0.199".parse().unwrap();
        assert_eq!(r.len(), 100);
        assert!(r.contains("10.0.0.150".parse().unwrap()));
        assert_eq!(r.to_string(), "10.0.0.100-10.0.0.199");
        let s: Ipv4Range = "192.0.2.10".parse().unwrap();
        assert_eq!((s.len(), s.to_string()), (1, "192.0.2.10".to_string()));
        for bad in ["", "10.0.0.1-", "10.0.0.256", "10.0.0.0/24"] {
            assert!(bad.parse::<Ipv4Range>().is_err(), "{bad}");
        }
    }

    #[test]
    fn protocol_names_and_numbers() {
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::TCP);
        assert_eq!("47".parse::<Protocol>().unwrap(), Protocol(47));
        assert_eq!(
            serde_yaml::from_str::<Protocol>("17").unwrap(),
            Protocol::UDP
        );
        assert_eq!(
            serde_yaml::from_str::<Protocol>("icmp").unwrap(),
            Protocol::ICMP
        );
        assert!(serde_yaml::from_str::<Protocol>("256").is_err());
        assert!(serde_yaml::from_str::<Protocol>("sctpp").is_err());
        assert_eq!(serde_yaml::to_string(&Protocol(47)).unwrap().trim(), "47");
        assert_eq!(serde_yaml::to_string(&Protocol::TCP).unwrap().trim(), "tcp");
    }
}
