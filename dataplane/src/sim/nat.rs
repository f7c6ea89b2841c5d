//! NAT: the rule actions `snat`, `dnat`, `rev_snat`, `rev_dnat`, and the
//! bindings of dynamic translations (SEMANTICS.md "NAT").
//!
//! - Static targets (ports 0) rewrite the address only, statelessly.
//! - Dynamic targets allocate a binding once per connection: SNAT picks a
//!   source port (the original one when free, for ICMP echo the original
//!   id) that is free for (target address, protocol, remote address, remote
//!   port); DNAT keeps the offset of the destination port within the
//!   matched range (public 8001 → private 81 when 8000-8009 maps to 80-89).
//!   Replies are translated back through the reverse index. Bindings are
//!   bounded (allocation failure is counted and the packet dropped, never
//!   mis-translated) and expire with their connection.
//! - An ICMP error is translated in its outer header and, mirrored, in the
//!   packet it quotes, with the checksums of both.
use super::chain::{Nat, Packet};
use super::conntrack::Tuple;
use super::{Step, Tag, Walk};
use crate::hash::HashMap;
use crate::packet::{self, checksum, Rewrite, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, L3, L4};
use vnet_common::{act, Reason};

pub const IDLE_NS: u64 = super::conntrack::IDLE_NS;
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    translated: Tuple,
    last_seen_ns: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NatCounters {
    pub allocated: u64,
    pub expired: u64,
    pub exhausted: u64,
}

#[derive(Debug, Clone)]
pub struct NatTable {
    /// (zone, original tuple) → translation.
    forward: HashMap<(Tag, Tuple), Binding>,
    /// (zone, reply tuple as it arrives) → original tuple.
    reverse: HashMap<(Tag, Tuple), Tuple>,
    capacity: usize,
    pub counters: NatCounters,
}

impl Default for NatTable {
    fn default() -> Self {
        NatTable::with_capacity(DEFAULT_CAPACITY)
    }
}

impl NatTable {
    pub fn with_capacity(capacity: usize) -> NatTable {
        NatTable {
            forward: HashMap::default(),
            reverse: HashMap::default(),
            capacity,
            counters: NatCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.forward.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    /// The tag of flows that use the binding of `original` in `zone`.
    pub fn tag(zone: Tag, original: &Tuple) -> Tag {
        Tag::nat(zone, original)
    }

    /// The binding of a connection, allocating one with `choose` (which
    /// proposes candidate translations in order of preference).
    fn bind(
        &mut self,
        zone: Tag,
        original: Tuple,
        now_ns: u64,
        candidates: impl Iterator<Item = Tuple>,
    ) -> Result<Tuple, Reason> {
        if let Some(b) = self.forward.get_mut(&(zone, original)) {
            b.last_seen_ns = now_ns;
            return Ok(b.translated);
        }
        if self.forward.len() >= self.capacity {
            self.counters.exhausted += 1;
            return Err(Reason::NatExhausted);
        }
        for t in candidates {
            if self.reverse.contains_key(&(zone, t.reply())) {
                continue;
            }
            self.forward.insert(
                (zone, original),
                Binding {
                    translated: t,
                    last_seen_ns: now_ns,
                },
            );
            self.reverse.insert((zone, t.reply()), original);
            self.counters.allocated += 1;
            return Ok(t);
        }
        self.counters.exhausted += 1;
        Err(Reason::NatExhausted)
    }

    /// The original tuple of a connection whose reply is `reply`.
    fn original_of_reply(&mut self, zone: Tag, reply: &Tuple, now_ns: u64) -> Option<Tuple> {
        let original = *self.reverse.get(&(zone, *reply))?;
        if let Some(b) = self.forward.get_mut(&(zone, original)) {
            b.last_seen_ns = now_ns;
        }
        Some(original)
    }

    /// Removes idle bindings whose flows are unused; returns their tags.
    pub fn expire(&mut self, now_ns: u64, in_use: impl Fn(Tag) -> bool) -> Vec<Tag> {
        let mut gone = Vec::new();
        self.forward.retain(|(zone, original), b| {
            if now_ns.saturating_sub(b.last_seen_ns) <= IDLE_NS {
                return true;
            }
            let tag = NatTable::tag(*zone, original);
            if in_use(tag) {
                b.last_seen_ns = now_ns;
                return true;
            }
            gone.push((*zone, b.translated.reply(), tag));
            false
        });
        for (zone, reply, _) in &gone {
            self.reverse.remove(&(*zone, *reply));
        }
        self.counters.expired += gone.len() as u64;
        gone.into_iter().map(|(_, _, tag)| tag).collect()
    }
}

/// Picks among `n` candidates starting at an offset derived from `seed`.
fn rotate(seed: u64, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        seed % n
    }
}

fn ip_u32(a: [u8; 4]) -> u32 {
    u32::from_be_bytes(a)
}

/// Candidate translations of `t`'s source within a target range: each
/// address, and for each the preferred port first (the original one if in
/// range — for ICMP echo the original id whatever the range, since an echo
/// keeps its id unless it collides), then the rest of the range.
fn snat_candidates(
    t: Tuple,
    start: [u8; 4],
    end: [u8; 4],
    ports: (u16, u16),
) -> impl Iterator<Item = Tuple> {
    let (lo, hi) = (ip_u32(start), ip_u32(end).max(ip_u32(start)));
    let (plo, phi) = (ports.0.min(ports.1), ports.0.max(ports.1));
    let span = (phi - plo) as u32 + 1;
    let first = if (plo..=phi).contains(&t.sport) {
        (t.sport - plo) as u32
    } else {
        rotate(t.sport as u64, span as u64) as u32
    };
    let keep_id = (t.proto == IPPROTO_ICMP && !(plo..=phi).contains(&t.sport)).then_some(t.sport);
    (lo..=hi).flat_map(move |addr| {
        let kept = keep_id.map(|id| Tuple {
            src: addr.to_be_bytes(),
            sport: id,
            ..t
        });
        kept.into_iter().chain((0..span).map(move |k| {
            let port = plo + ((first + k) % span) as u16;
            Tuple {
                src: addr.to_be_bytes(),
                sport: port,
                ..t
            }
        }))
    })
}

/// The transport tuple of a packet (None without one).
fn tuple_of(p: &Packet, echo_id: Option<u16>) -> Option<Tuple> {
    let ip = p.ip?;
    let (sport, dport) = match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => ip.l4?,
        IPPROTO_ICMP => (echo_id?, 0),
        _ => (0, 0),
    };
    Some(Tuple {
        proto: ip.proto,
        src: ip.src,
        dst: ip.dst,
        sport,
        dport,
    })
}

/// Applies a NAT action to the frame, the packet view and the walk's flow.
pub(super) fn apply(
    walk: &mut Walk,
    frame: &mut [u8],
    zone: Tag,
    p: &mut Packet,
    nat: &Nat,
) -> Result<(), Reason> {
    let Ok(h) = packet::parse(frame) else {
        return Err(Reason::Malformed);
    };
    let L3::Ipv4(ip, l4) = h.l3 else {
        return Ok(());
    };
    let echo_id = match l4 {
        L4::Icmp { echo_id, .. } => echo_id,
        _ => None,
    };
    let icmp_error = matches!(
        l4,
        L4::Icmp {
            kind: 3 | 11 | 12,
            ..
        }
    );
    if icmp_error {
        return apply_to_error(walk, frame, zone, &h, &ip, nat);
    }
    let Some(t) = tuple_of(p, echo_id) else {
        return Ok(());
    };
    let now = walk.now_ns;
    // The translated tuple and the binding the flow depends on.
    let (new, binding): (Tuple, Option<Tuple>) = match *nat {
        Nat::Snat {
            start, ports: None, ..
        } => (Tuple { src: start, ..t }, None),
        Nat::Dnat {
            start, ports: None, ..
        } => (Tuple { dst: start, ..t }, None),
        Nat::Snat {
            start,
            end,
            ports: Some(range),
        } => {
            // Protocols without ports get the address only, still bound.
            let range = if matches!(t.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
                range
            } else {
                (0, 0)
            };
            let new = walk
                .state
                .nat
                .bind(zone, t, now, snat_candidates(t, start, end, range))?;
            (new, Some(t))
        }
        Nat::Dnat {
            start,
            end,
            ports: Some((plo, phi)),
            match_ports,
        } => {
            // Offset-preserving: the destination port keeps its distance
            // from the start of the range the rule matched.
            let offset = match_ports
                .map(|(mlo, _)| t.dport.saturating_sub(mlo))
                .unwrap_or(0);
            let port = if t.proto == IPPROTO_ICMP {
                t.sport
            } else {
                plo.saturating_add(offset).min(phi)
            };
            let n = ip_u32(end).saturating_sub(ip_u32(start)) as u64 + 1;
            let addr = (ip_u32(start)
                + rotate(u64::from(ip_u32(t.src)) ^ t.sport as u64, n) as u32)
                .to_be_bytes();
            let target = if t.proto == IPPROTO_ICMP {
                Tuple { dst: addr, ..t }
            } else {
                Tuple {
                    dst: addr,
                    dport: port,
                    ..t
                }
            };
            let new = walk.state.nat.bind(zone, t, now, std::iter::once(target))?;
            (new, Some(t))
        }
        Nat::RevSnat | Nat::RevDnat => match walk.state.nat.original_of_reply(zone, &t, now) {
            // The reply becomes the reverse of the original connection.
            Some(original) => {
                let back = original.reply();
                walk.tags.push(NatTable::tag(zone, &original));
                (back, None)
            }
            None => {
                walk.step(|| Step::Drop {
                    reason: Reason::NatNoBinding,
                });
                return Ok(());
            }
        },
    };
    if let Some(original) = binding {
        walk.tags.push(NatTable::tag(zone, &original));
    }
    if matches!(nat, Nat::Dnat { .. }) {
        walk.dnat_rewritten = true;
    }
    let rw = Rewrite {
        src: (new.src != t.src).then_some(new.src),
        dst: (new.dst != t.dst).then_some(new.dst),
        sport: (new.sport != t.sport && t.proto != 0).then_some(new.sport),
        dport: (new.dport != t.dport && t.proto != IPPROTO_ICMP).then_some(new.dport),
    };
    let end = h.l3_offset + ip.total_len as usize;
    packet::rewrite_ipv4(frame, h.l3_offset, end, &rw);
    record(walk, &rw);
    if let Some(ipf) = p.ip.as_mut() {
        ipf.src = new.src;
        ipf.dst = new.dst;
        if let (Some(l4), false) = (ipf.l4.as_mut(), t.proto == IPPROTO_ICMP) {
            *l4 = (new.sport, new.dport);
        }
    }
    walk.step(|| Step::Nat {
        src: new.src,
        dst: new.dst,
        sport: new.sport,
        dport: new.dport,
    });
    Ok(())
}

/// Adds a rewrite to the flow's actions.
fn record(walk: &mut Walk, rw: &Rewrite) {
    let a = &mut walk.actions;
    if let Some(v) = rw.src {
        a.flags |= act::SET_IP_SRC;
        a.ip_src = v;
    }
    if let Some(v) = rw.dst {
        a.flags |= act::SET_IP_DST;
        a.ip_dst = v;
    }
    if let Some(v) = rw.sport {
        a.flags |= act::SET_L4_SRC;
        a.l4_src = v;
    }
    if let Some(v) = rw.dport {
        a.flags |= act::SET_L4_DST;
        a.l4_dst = v;
    }
}

/// An ICMP error: the outer header is translated as the connection's
/// reply, the quoted packet as the connection's own packet. The kernel
/// executor does not rewrite quoted headers, so this is never installed.
fn apply_to_error(
    walk: &mut Walk,
    frame: &mut [u8],
    zone: Tag,
    h: &packet::Headers,
    ip: &packet::Ipv4,
    nat: &Nat,
) -> Result<(), Reason> {
    walk.not_installable("NAT of an ICMP error rewrites the quoted packet");
    let Some(q) = packet::icmp_quote(frame, ip) else {
        return Ok(());
    };
    let inner = Tuple {
        proto: q.proto,
        src: q.src,
        dst: q.dst,
        sport: q.sport,
        dport: q.dport,
    };
    let (outer, quoted) = match *nat {
        // Static: the outer destination and the quoted source are the same
        // address (the error travels back to the quoted packet's sender).
        Nat::Dnat {
            start, ports: None, ..
        } => (
            Rewrite {
                dst: Some(start),
                ..Default::default()
            },
            Rewrite {
                src: Some(start),
                ..Default::default()
            },
        ),
        Nat::Snat {
            start, ports: None, ..
        } => (
            Rewrite {
                src: Some(start),
                ..Default::default()
            },
            Rewrite {
                dst: Some(start),
                ..Default::default()
            },
        ),
        Nat::RevSnat | Nat::RevDnat => {
            // The quoted packet is the translated connection as it was
            // sent; its reply tuple names the binding.
            let Some(original) =
                walk.state
                    .nat
                    .original_of_reply(zone, &inner.reply(), walk.now_ns)
            else {
                return Ok(());
            };
            if matches!(nat, Nat::RevSnat) {
                let outer = Rewrite {
                    dst: Some(original.src),
                    ..Default::default()
                };
                let quoted = Rewrite {
                    src: Some(original.src),
                    sport: Some(original.sport),
                    ..Default::default()
                };
                (outer, quoted)
            } else {
                let outer = Rewrite {
                    src: Some(original.dst),
                    ..Default::default()
                };
                let quoted = Rewrite {
                    dst: Some(original.dst),
                    dport: Some(original.dport),
                    ..Default::default()
                };
                (outer, quoted)
            }
        }
        // A new connection does not start with an ICMP error.
        Nat::Snat { .. } | Nat::Dnat { .. } => return Ok(()),
    };
    let end = (h.l3_offset + ip.total_len as usize).min(frame.len());
    packet::rewrite_ipv4(frame, q.offset, end, &quoted);
    packet::rewrite_ipv4(frame, h.l3_offset, end, &outer);
    // The ICMP checksum covers the quoted packet: recompute it whole.
    let icmp = ip.l4_offset();
    if icmp + 4 <= end {
        frame[icmp + 2] = 0;
        frame[icmp + 3] = 0;
        let c = checksum::finish(checksum::sum(&frame[icmp..end], 0));
        frame[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    }
    if matches!(nat, Nat::Dnat { .. }) {
        walk.dnat_rewritten = true;
    }
    let (src, dst) = (outer.src.unwrap_or(ip.src), outer.dst.unwrap_or(ip.dst));
    walk.step(|| Step::Nat {
        src,
        dst,
        sport: 0,
        dport: 0,
    });
    Ok(())
}
