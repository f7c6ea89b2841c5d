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
}

impl StateEntry {
    /// Whether every other host needs it (not only the packet's egress
    /// host): ARP entries, since the host that asked is not known.
    pub fn for_every_host(&self) -> bool {
        matches!(self, StateEntry::Arp { .. })
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
            _ => StateEntry::Arp {
                router: zone,
                ip: body[8..12].try_into().expect("4 bytes"),
                mac: body[12..18].try_into().expect("6 bytes"),
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

/// Adds what another host recorded to this host's tables, within their
/// bounds (a full table or zone keeps its entries and takes none). The
/// decision holds what the worker must then do: the flows to invalidate
/// (replies decided before the state was known, dropped by a `conntrack:
/// return` rule, say) and the packets that waited for an ARP entry. It
/// records no state of its own: imported state is not sent on.
pub fn import(snap: &Snapshot, state: &mut State, entries: &[StateEntry], now_ns: u64) -> Decision {
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
        let d = import(&snap, &mut st, &entries, 1);
        assert_eq!(d.invalidate.len(), 1, "replies decided before must go");
        assert!(d.state_out.is_empty(), "imported state is not sent on");
        assert!(st.conntrack.is_known(Tag(7), &tuple(40000)));
        assert_eq!(
            st.arp.lookup(router, [10, 0, 0, 5]),
            Some([2, 0, 0, 0, 0, 5])
        );
        assert_eq!(st.arp.lookup(Tag(99), [10, 0, 0, 6]), None);
        let again = import(&snap, &mut st, &entries[..1], 2);
        assert!(again.invalidate.is_empty(), "known already");
    }
}
