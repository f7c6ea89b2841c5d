//! Flow state between hosts (issue 16), MidoNet's way: the host that
//! simulates a connection's first packet records its state (a tracked
//! connection, a NAT binding) and sends it to the host the packet goes to
//! *before* the packet, so that when the reply is simulated there (its
//! ingress host) a `conntrack: return` match and a reverse NAT find what the
//! forward direction did. Entries are plain data keyed like the tables
//! (zones are tags of names, the same on every host). A router's ARP
//! entries too: the reply to a request one host sent may arrive at another
//! (the next hop's port is there), so every host hears what each learns.
//!
//! The wire form is a small fixed-size binary message sent over UDP between
//! tunnel addresses (see `tunnel::Tunnel::send_state`), every field checked
//! when read: a message is accepted whole or refused.
use super::conntrack::Tuple;
use super::{Decision, Snapshot, State, Tag, Walk};
use crate::packet::Mac;

/// What one decision recorded that the reply's host needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateEntry {
    /// A forward-direction connection tracked in `zone`.
    Connection { zone: Tag, tuple: Tuple },
    /// A dynamic NAT binding of `zone`: connection `original` leaves as
    /// `translated`.
    NatBinding {
        zone: Tag,
        original: Tuple,
        translated: Tuple,
    },
    /// Router `router` learned that `ip` is at `mac`.
    Arp { router: Tag, ip: [u8; 4], mac: Mac },
    /// Bridge `bridge` learned `mac` on `port`, a port of the sending host:
    /// the other hosts send frames for it to that port instead of flooding
    /// them (the egress host delivers a tunnelled frame without simulating
    /// it, so it never learns the MACs of the other hosts' guests itself).
    Mac { bridge: Tag, mac: Mac, port: Tag },
}

impl StateEntry {
    /// Whether every other host needs it (not only the packet's egress
    /// host): ARP entries, since the host that asked is not known.
    pub fn for_every_host(&self) -> bool {
        matches!(self, StateEntry::Arp { .. })
    }

    /// The conntrack or NAT zone it was recorded in.
    pub fn zone(&self) -> Option<Tag> {
        match *self {
            StateEntry::Connection { zone, .. } | StateEntry::NatBinding { zone, .. } => Some(zone),
            _ => None,
        }
    }
}

/// "VNFS", version 1.
const MAGIC: [u8; 4] = *b"VNFS";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 6;
const TUPLE_LEN: usize = 13;
const CONNECTION_LEN: usize = 1 + 8 + TUPLE_LEN;
const NAT_LEN: usize = 1 + 8 + 2 * TUPLE_LEN;
const ARP_LEN: usize = 1 + 8 + 4 + 6;
const MAC_LEN: usize = 1 + 8 + 6 + 8;
/// At most this many entries in one message (one decision records a few;
/// the bound keeps a message inside one unfragmented datagram).
pub const MAX_ENTRIES: usize = 32;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a flow-state message (bad magic or version)")]
    NotFlowState,
    #[error("flow-state message cut short or with trailing bytes")]
    BadLength,
    #[error("flow-state message with more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("flow-state entry of unknown kind {0}")]
    UnknownKind(u8),
}

/// The message carrying `entries` (at most [`MAX_ENTRIES`]; the rest are
/// left out, which costs only a reply simulated without them).
pub fn encode(entries: &[StateEntry]) -> Vec<u8> {
    let entries = &entries[..entries.len().min(MAX_ENTRIES)];
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * NAT_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(entries.len() as u8);
    for e in entries {
        match e {
            StateEntry::Connection { zone, tuple } => {
                out.push(1);
                out.extend_from_slice(&zone.0.to_be_bytes());
                put_tuple(&mut out, tuple);
            }
            StateEntry::NatBinding {
                zone,
                original,
                translated,
            } => {
                out.push(2);
                out.extend_from_slice(&zone.0.to_be_bytes());
                put_tuple(&mut out, original);
                put_tuple(&mut out, translated);
            }
            StateEntry::Arp { router, ip, mac } => {
                out.push(3);
                out.extend_from_slice(&router.0.to_be_bytes());
                out.extend_from_slice(ip);
                out.extend_from_slice(mac);
            }
            StateEntry::Mac { bridge, mac, port } => {
                out.push(4);
                out.extend_from_slice(&bridge.0.to_be_bytes());
                out.extend_from_slice(mac);
                out.extend_from_slice(&port.0.to_be_bytes());
            }
        }
    }
    out
}

/// The entries of a message.
pub fn decode(bytes: &[u8]) -> Result<Vec<StateEntry>, Refused> {
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(Refused::NotFlowState);
    }
    let count = bytes[5] as usize;
    if count > MAX_ENTRIES {
        return Err(Refused::TooMany);
    }
    let mut rest = &bytes[HEADER_LEN..];
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let (&kind, body) = rest.split_first().ok_or(Refused::BadLength)?;
        let len = match kind {
            1 => CONNECTION_LEN,
            2 => NAT_LEN,
            3 => ARP_LEN,
            4 => MAC_LEN,
            other => return Err(Refused::UnknownKind(other)),
        };
        if rest.len() < len {
            return Err(Refused::BadLength);
        }
        let zone = Tag(u64::from_be_bytes(body[..8].try_into().expect("8 bytes")));
        entries.push(match kind {
            1 => StateEntry::Connection {
                zone,
                tuple: get_tuple(&body[8..8 + TUPLE_LEN]),
            },
            2 => StateEntry::NatBinding {
                zone,
                original: get_tuple(&body[8..8 + TUPLE_LEN]),
                translated: get_tuple(&body[8 + TUPLE_LEN..8 + 2 * TUPLE_LEN]),
            },
            3 => StateEntry::Arp {
                router: zone,
                ip: body[8..12].try_into().expect("4 bytes"),
                mac: body[12..18].try_into().expect("6 bytes"),
            },
            _ => StateEntry::Mac {
                bridge: zone,
                mac: body[8..14].try_into().expect("6 bytes"),
                port: Tag(u64::from_be_bytes(
                    body[14..22].try_into().expect("8 bytes"),
                )),
            },
        });
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(Refused::BadLength);
    }
    Ok(entries)
}

fn put_tuple(out: &mut Vec<u8>, t: &Tuple) {
    out.push(t.proto);
    out.extend_from_slice(&t.src);
    out.extend_from_slice(&t.dst);
    out.extend_from_slice(&t.sport.to_be_bytes());
    out.extend_from_slice(&t.dport.to_be_bytes());
}

/// `b` is exactly `TUPLE_LEN` bytes (checked by the caller).
fn get_tuple(b: &[u8]) -> Tuple {
    Tuple {
        proto: b[0],
        src: [b[1], b[2], b[3], b[4]],
        dst: [b[5], b[6], b[7], b[8]],
        sport: u16::from_be_bytes([b[9], b[10]]),
        dport: u16::from_be_bytes([b[11], b[12]]),
    }
}

/// Adds what the host at `from` recorded to this host's tables, within
/// their bounds (a full table or zone keeps its entries and takes none).
/// The decision holds what the worker must then do: the flows to
/// invalidate (replies decided before the state was known, dropped by a
/// `conntrack: return` rule, say; flows to a MAC that moved) and the
/// packets that waited for an ARP entry. It records no state of its own:
/// imported state is not sent on.
pub fn import(
    snap: &Snapshot,
    state: &mut State,
    from: [u8; 4],
    entries: &[StateEntry],
    now_ns: u64,
) -> Decision {
    let mut walk = Walk::new(snap, state, now_ns, false, None);
    for e in entries {
        match *e {
            StateEntry::Connection { zone, tuple } => {
                if let Ok(Some(tag)) = walk.state.conntrack.commit(zone, tuple, now_ns) {
                    walk.decision.invalidate.push(tag);
                }
            }
            StateEntry::NatBinding {
                zone,
                original,
                translated,
            } => {
                // Nothing was installed for want of it (a reverse NAT that
                // finds no binding is never installed): no flow to go.
                walk.state.nat.import(zone, original, translated, now_ns);
            }
            StateEntry::Arp { router, ip, mac } => {
                // Only for a router of this topology: the table is not
                // filled with entries nothing here would read.
                if snap.routers.iter().any(|r| r.tag == router) {
                    super::router::learn(&mut walk, router, ip, mac);
                }
            }
            StateEntry::Mac { bridge, mac, port } => {
                super::bridge::learn_remote(&mut walk, from, bridge, mac, port);
            }
        }
    }
    let mut decision = walk.decision;
    decision.state_out.clear();
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(sport: u16) -> Tuple {
        Tuple {
            proto: 6,
            src: [10, 0, 0, 11],
            dst: [10, 0, 0, 12],
            sport,
            dport: 80,
        }
    }

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let entries = vec![
            StateEntry::Connection {
                zone: Tag(7),
                tuple: tuple(40000),
            },
            StateEntry::NatBinding {
                zone: Tag(9),
                original: tuple(40001),
                translated: Tuple {
                    src: [192, 0, 2, 10],
                    sport: 1024,
                    ..tuple(40001)
                },
            },
            StateEntry::Arp {
                router: Tag(3),
                ip: [192, 0, 2, 1],
                mac: [2, 0, 0, 0, 9, 1],
            },
            StateEntry::Mac {
                bridge: Tag(4),
                mac: [2, 0, 0, 0, 9, 2],
                port: Tag(5),
            },
        ];
        let m = encode(&entries);
        assert_eq!(decode(&m), Ok(entries));
        assert_eq!(decode(&m[..m.len() - 1]), Err(Refused::BadLength));
        let mut longer = m.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(Refused::BadLength));
        let mut kind = m.clone();
        kind[HEADER_LEN] = 9;
        assert_eq!(decode(&kind), Err(Refused::UnknownKind(9)));
        let mut count = m.clone();
        count[5] = 200;
        assert_eq!(decode(&count), Err(Refused::TooMany));
        assert_eq!(decode(b"VXLAN"), Err(Refused::NotFlowState));
        assert_eq!(decode(&[]), Err(Refused::NotFlowState));
        // Every truncation of a valid message is refused, none panics.
        for n in 0..m.len() {
            assert!(decode(&m[..n]).is_err(), "{n} bytes accepted");
        }
    }

    #[test]
    fn imported_state_is_what_the_other_host_recorded() {
        let topology = vnet_model::load_str(
            "version: 1\nrouters:\n  r:\n    ports:\n      p: {address: 10.0.0.1/24}\n",
        )
        .unwrap();
        let snap = Snapshot::compile(&topology, 1);
        let router = snap.routers[0].tag;
        let mut st = State::default();
        let entries = [
            StateEntry::Connection {
                zone: Tag(7),
                tuple: tuple(40000),
            },
            StateEntry::Arp {
                router,
                ip: [10, 0, 0, 5],
                mac: [2, 0, 0, 0, 0, 5],
            },
            // A router this host does not have: not taken.
            StateEntry::Arp {
                router: Tag(99),
                ip: [10, 0, 0, 6],
                mac: [2, 0, 0, 0, 0, 6],
            },
        ];
        let d = import(&snap, &mut st, [192, 0, 2, 2], &entries, 1);
        assert_eq!(d.invalidate.len(), 1, "replies decided before must go");
        assert!(d.state_out.is_empty(), "imported state is not sent on");
        assert!(st.conntrack.is_known(Tag(7), &tuple(40000)));
        assert_eq!(
            st.arp.lookup(router, [10, 0, 0, 5]),
            Some([2, 0, 0, 0, 0, 5])
        );
        assert_eq!(st.arp.lookup(Tag(99), [10, 0, 0, 6]), None);
        let again = import(&snap, &mut st, [192, 0, 2, 2], &entries[..1], 2);
        assert!(again.invalidate.is_empty(), "known already");
    }

    const HOSTS: &str = "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  \
        h2: {tunnel_address: 192.0.2.2}\n  h3: {tunnel_address: 192.0.2.3}\nbridges:\n  \
        b:\n    ports:\n      vm1: {interface: vm1-h, host: h1, tunnel_key: 1}\n      \
        vm2: {interface: vm2-h, host: h2, tunnel_key: 2}\n      \
        fixed: {interface: f-h, host: h2, tunnel_key: 3, addresses: [\"02:00:00:00:00:03\"]}\n  \
        other:\n    ports:\n      vm3: {interface: vm3-h, host: h2, tunnel_key: 4}\n";

    /// A MAC another host learned is taken only for a port of that bridge
    /// placed on that host, and never over a static MAC.
    #[test]
    fn a_mac_is_learned_only_on_a_port_of_the_host_that_sent_it() {
        let topology = vnet_model::load_str(HOSTS).unwrap();
        let snap = Snapshot::compile(&topology, 1).placed_on(Some("h1"));
        let tag = |name: &str| snap.ports[snap.port_by_name(name).unwrap()].tag;
        let bridge = snap.bridges.iter().find(|b| b.name == "b").unwrap().tag;
        let (h2, h3) = ([192, 0, 2, 2], [192, 0, 2, 3]);
        let mac = [2, 0, 0, 0, 0, 2];
        let entry = |mac, port| StateEntry::Mac { bridge, mac, port };
        let mut st = State::default();
        // From h3 about h2's port, or about this host's own port: refused.
        import(&snap, &mut st, h3, &[entry(mac, tag("b/vm2"))], 1);
        import(&snap, &mut st, h2, &[entry(mac, tag("b/vm1"))], 1);
        // A port of another bridge, a multicast MAC, a static one: refused.
        import(&snap, &mut st, h2, &[entry(mac, tag("other/vm3"))], 1);
        import(
            &snap,
            &mut st,
            h2,
            &[entry([1, 0, 0x5e, 0, 0, 1], tag("b/vm2"))],
            1,
        );
        import(
            &snap,
            &mut st,
            h2,
            &[entry([2, 0, 0, 0, 0, 3], tag("b/vm2"))],
            1,
        );
        assert_eq!(st.macs.lookup(bridge, &mac), None);
        assert_eq!(st.macs.lookup(bridge, &[2, 0, 0, 0, 0, 3]), None);
        // From h2 about its own port of that bridge: learned.
        let d = import(&snap, &mut st, h2, &[entry(mac, tag("b/vm2"))], 1);
        assert_eq!(st.macs.lookup(bridge, &mac), Some(tag("b/vm2")));
        assert!(d.invalidate.is_empty());
        assert!(d.state_out.is_empty(), "imported state is not sent on");
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    /// A stateful port group's state goes to every other host with one of
    /// its members (its return traffic may enter through any), and only
    /// the group's own zone has peers.
    #[test]
    fn a_stateful_groups_state_goes_to_the_hosts_of_its_members() {
        let yaml = "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  \
            h2: {tunnel_address: 192.0.2.2}\n  h3: {tunnel_address: 192.0.2.3}\n\
            bridges:\n  b:\n    ports:\n      \
            u1: {interface: u1-h, host: h1, tunnel_key: 1}\n      \
            u2: {interface: u2-h, host: h2, tunnel_key: 2}\n      \
            u3: {interface: u3-h, host: h3, tunnel_key: 3}\n      \
            u4: {interface: u4-h, host: h3, tunnel_key: 4}\n      \
            other: {interface: o-h, host: h2, tunnel_key: 5}\n\
            port_groups:\n  ups: {ports: [b/u1, b/u2, b/u3, b/u4], stateful: true}\n";
        let topology = vnet_model::load_str(yaml).unwrap();
        let snap = Snapshot::compile(&topology, 1).placed_on(Some("h1"));
        let zone = |name: &str| snap.ports[snap.port_by_name(name).unwrap()].zone;
        let ups = zone("b/u1");
        assert_eq!(zone("b/u2"), ups);
        let mut peers = snap.group_peers(ups).to_vec();
        peers.sort();
        assert_eq!(peers, vec![[192, 0, 2, 2], [192, 0, 2, 3]]);
        assert!(snap.group_peers(zone("b/other")).is_empty());
        let entry = StateEntry::Connection {
            zone: ups,
            tuple: Tuple {
                proto: 6,
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
                sport: 1,
                dport: 2,
            },
        };
        assert_eq!(entry.zone(), Some(ups));
    }
}
