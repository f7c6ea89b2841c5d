//! Validation of a whole topology: everything that relates objects to each
//! other, or that the types alone cannot express.
//!
//! Every check runs and every problem is collected, so an operator fixes a
//! file in one pass. Paths name the object and field as the file spells them
//! (`routers.edge.routes[2].via`). The checks are split by concern:
//! devices (bridges, routers, ports, links, interfaces, routes), DHCP, chains
//! (rules, conditions, groups) and intents (NAT, firewall).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::ValidationError;
use crate::model::*;

mod chains;
mod devices;
mod dhcp;
mod intents;
mod port_security;

pub(crate) fn validate(topo: &Topology) -> Vec<ValidationError> {
    let mut v = Validator {
        topo,
        errors: Vec::new(),
    };
    if topo.version != FORMAT_VERSION {
        v.err(
            "version",
            format!(
                "unsupported format version {}; this vnet reads version {FORMAT_VERSION}",
                topo.version
            ),
        );
    }
    v.devices();
    v.chains();
    v.groups();
    v.nat();
    v.firewall();
    crate::tunnel_keys::validate(topo, &mut v.errors);
    v.errors
}

/// The topology under check and the errors found so far.
struct Validator<'a> {
    topo: &'a Topology,
    errors: Vec<ValidationError>,
}

impl Validator<'_> {
    fn err(&mut self, path: impl Display, message: impl Into<String>) {
        self.errors
            .push(ValidationError::new(path.to_string(), message.into()));
    }

    /// Names are used in references (`device/port`) and in error paths, so
    /// they are kept to characters that need no quoting in either.
    fn name(&mut self, path: impl Display, name: &str) {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            // A name of megabytes is quoted by its start and its length.
            let shown = match name.char_indices().nth(64) {
                Some((cut, _)) => format!("{}... ({} bytes)", &name[..cut], name.len()),
                None => name.to_string(),
            };
            self.err(
                path,
                format!(
                    "name `{shown}` is not valid: use 1 to 64 letters, digits, '-', '_' or '.'"
                ),
            );
        }
    }

    /// A filter field (`inbound_filter` / `outbound_filter`) must name a chain.
    fn chain_ref(&mut self, path: impl Display, chain: Option<&String>) {
        if let Some(c) = chain {
            if !self.topo.chains.contains_key(c) {
                self.err(
                    path,
                    format!("no chain named `{c}`; define it under chains"),
                );
            }
        }
    }

    /// A `device/port` reference must name an existing port. Returns whether
    /// it does.
    fn port_ref(&mut self, path: impl Display, r: &PortRef) -> bool {
        match self.topo.port(r) {
            Some(_) => true,
            None => {
                let msg = if self.topo.bridges.contains_key(&r.device) {
                    format!("bridge `{}` has no port `{}`", r.device, r.port)
                } else if self.topo.routers.contains_key(&r.device) {
                    format!("router `{}` has no port `{}`", r.device, r.port)
                } else {
                    format!("no bridge or router named `{}`", r.device)
                };
                self.err(path, msg);
                false
            }
        }
    }

    /// A prefix written with host bits (`10.0.0.5/24` where a network is
    /// meant) is almost always a typo for another prefix.
    fn network(&mut self, path: impl Display, net: &Ipv4Net) {
        if net.addr() != net.network() {
            self.err(
                path,
                format!(
                    "{net} has host bits set; write the network as {}",
                    net.trunc()
                ),
            );
        }
    }

    /// An address that one host can own (not 0.0.0.0, broadcast, multicast
    /// or loopback).
    fn unicast(&mut self, path: impl Display, addr: Ipv4Addr) -> bool {
        let ok = is_unicast(addr);
        if !ok {
            self.err(
                path,
                format!("{addr} is not a unicast address a host can own"),
            );
        }
        ok
    }

    fn ip_range(&mut self, path: impl Display, r: &Ipv4Range) {
        let path = path.to_string();
        if r.start > r.end {
            self.err(
                &path,
                format!("range {r} is empty: its start is after its end"),
            );
        } else if !is_unicast(r.start) || !is_unicast(r.end) {
            self.err(
                &path,
                format!("range {r} has an address that is not unicast"),
            );
        }
    }

    /// A port range of a match or a port forward: not empty, no port 0.
    fn port_range(&mut self, path: impl Display, r: &PortRange) {
        if r.start > r.end {
            self.err(
                path,
                format!("range {r} is empty: its start is after its end"),
            );
        } else if r.start == 0 {
            self.err(
                path,
                "port 0 cannot be matched or forwarded; ports start at 1",
            );
        }
    }

    /// A NAT port range: like [`Self::port_range`], except that `0` alone
    /// means "address only" (static NAT).
    fn nat_ports(&mut self, path: impl Display, r: &PortRange) {
        if r.start > r.end {
            self.err(
                path,
                format!("range {r} is empty: its start is after its end"),
            );
        } else if r.start == 0 && r.end != 0 {
            self.err(
                path,
                format!(
                    "range {r} includes port 0; use 0 alone for static (address-only) NAT, or start at 1"
                ),
            );
        }
    }
}

fn is_unicast(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

/// `addr` lies in `net` and is not its network or broadcast address (both
/// usable in /31 and /32, RFC 3021).
fn is_host_in(net: &Ipv4Net, addr: Ipv4Addr) -> bool {
    net.contains(&addr)
        && (net.prefix_len() >= 31 || (addr != net.network() && addr != net.broadcast()))
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The path of a port (`bridges.b.ports.p`), written out only when an
/// error names it: validation visits every port of a topology of thousands,
/// and nearly all of them have no error.
#[derive(Debug, Clone, Copy)]
struct PortPath<'a> {
    /// `bridges` or `routers`.
    section: &'static str,
    device: &'a str,
    port: &'a str,
}

impl<'a> PortPath<'a> {
    fn new(section: &'static str, device: &'a str, port: &'a str) -> Self {
        PortPath {
            section,
            device,
            port,
        }
    }
}

impl Display for PortPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.ports.{}", self.section, self.device, self.port)
    }
}

/// Remembers the first place a value was seen, to report the second.
struct FirstSeen<K>(BTreeMap<K, String>);

impl<K: Ord> FirstSeen<K> {
    fn new() -> Self {
        FirstSeen(BTreeMap::new())
    }

    /// Records `key` at `place`; returns the earlier place if it was seen.
    fn check(&mut self, key: K, place: impl Into<String>) -> Option<&String> {
        use std::collections::btree_map::Entry;
        match self.0.entry(key) {
            Entry::Vacant(e) => {
                e.insert(place.into());
                None
            }
            Entry::Occupied(e) => Some(e.into_mut()),
        }
    }
}
