//! NAT: the rule actions `snat`, `dnat`, `rev_snat`, `rev_dnat`, and the
//! bindings of dynamic translations (SEMANTICS.md "NAT").
//!
//! - Static targets (ports 0) rewrite the address only, statelessly.
//! - Dynamic targets allocate a binding once per connection: SNAT picks a
//!   source port in the target range (the original one when in range and
//!   free; an ICMP echo id is treated as a port) that is free for (target
//!   address, protocol, remote address, remote port) and that no DNAT rule
//!   owns (a port forward on the same public address would take the
//!   replies); DNAT keeps the offset of the destination port within the
//!   matched range (public 8001 → private 81 when 8000-8009 maps to 80-89).
//!   Replies are translated back through the reverse index. A reverse NAT
//!   that finds no binding leaves the packet alone and is not installed:
//!   the binding may appear later, and the flow would skip it.
//! - Bindings are bounded (allocation failure is counted and the packet
//!   dropped, never mis-translated) and expire with their connection. A
//!   rewrite that cannot be made drops the packet (`Malformed`), so no flow
//!   is installed that would do what this packet did not get. Each
//!   zone (the router, a tenant's) may hold at most `zone_share` of them —
//!   by default a quarter of the table, at least 1024 — so one tenant
//!   opening connections as fast as it can leaves room for the others
//!   (`DeviceNatLimit`); the whole table full is `NatExhausted`.
//! - Fragments: a later fragment is translated as its datagram (its first
//!   fragment's ports come from sim/fragments.rs). Only its addresses are
//!   rewritten, since the ports and the transport checksum are in the first
//!   fragment, which gets the same translation. A later fragment whose
//!   first fragment is unknown cannot name its binding: meeting a dynamic
//!   NAT rule it is dropped (`FragmentUnknown`) rather than sent with its
//!   untranslated private address (the receiver could not reassemble it
//!   anyway); a static rule needs no ports and translates it.
//! - ICMP errors are translated by the binding of the connection they
//!   quote, whatever rule they meet, as Linux's conntrack relates them,
//!   before the router's chains: at pre-routing (`translate_related_error`)
//!   when the error's destination changes (it goes back to a translated
//!   sender, and routing must see the real one), else at post-routing
//!   (`translate_related_error_out`: an inside host's error leaves with
//!   the NAT address, which the ingress checks must not see, as Linux
//!   changes sources after routing). For a binding original O → translated T, an error quoting T (coming
//!   back to the translated sender) becomes one quoting O, and an error
//!   quoting O's reply as the inside host received it (port unreachable,
//!   fragmentation needed, sent by that host) becomes one quoting T's
//!   reply; the outer addresses that are the quoted packet's are mapped
//!   the same way, and the quoted and ICMP checksums are fixed. Static
//!   translations (floating IPs) have no binding: their rules translate
//!   the errors they match, in the outer header and mirrored in the quote.
//!   Neither is ever installed: the flow key does not hold the quote.
use super::chain::{Forwarded, Nat, Packet};
use super::conntrack::Tuple;
use super::flow_state::StateEntry;
use super::nat_blocks::{self, BlockSet, NatBlocks};
use super::{fragments, Step, Tag, Walk};
use crate::hash::HashMap;
use crate::packet::layout::icmp;
use crate::packet::{self, Frame, Rewrite, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, L3, L4};
use vnet_common::{act, Reason};

pub const IDLE_NS: u64 = super::conntrack::IDLE_NS;
pub const DEFAULT_CAPACITY: usize = 256 * 1024;
/// The least share of the table a zone may use, whatever the capacity.
pub const MIN_ZONE_SHARE: usize = 1024;

/// The default share of one zone in a table of `capacity` bindings: a
/// quarter of it, at least [`MIN_ZONE_SHARE`].
pub fn default_per_zone(capacity: usize) -> usize {
    super::share::tenant_share(capacity, MIN_ZONE_SHARE)
}

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
    /// Allocations refused because the zone held its share.
    pub zone_limited: u64,
}

#[derive(Debug, Clone)]
pub struct NatTable {
    /// (zone, original tuple) → translation.
    forward: HashMap<(Tag, Tuple), Binding>,
    /// (zone, reply tuple as it arrives) → original tuple.
    reverse: HashMap<(Tag, Tuple), Tuple>,
    /// Bindings per zone (only zones that hold some).
    per_zone: HashMap<Tag, usize>,
    capacity: usize,
    zone_share: usize,
    pub counters: NatCounters,
}

impl Default for NatTable {
    fn default() -> Self {
        NatTable::with_capacity(DEFAULT_CAPACITY)
    }
}

impl NatTable {
    /// A table of `capacity` bindings, a quarter of it (at least
    /// `MIN_ZONE_SHARE`) per zone.
    pub fn with_capacity(capacity: usize) -> NatTable {
        NatTable::with_limits(capacity, default_per_zone(capacity))
    }

    /// A table of `capacity` bindings, at most `zone_share` per zone.
    pub fn with_limits(capacity: usize, zone_share: usize) -> NatTable {
        NatTable {
            forward: HashMap::default(),
            reverse: HashMap::default(),
            per_zone: HashMap::default(),
            capacity,
            zone_share: zone_share.min(capacity),
            counters: NatCounters::default(),
        }
    }

    /// The most bindings one zone may hold.
    pub fn zone_share(&self) -> usize {
        self.zone_share
    }

    /// The number of bindings `zone` holds.
    pub fn zone_len(&self, zone: Tag) -> usize {
        self.per_zone.get(&zone).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// Whether the table holds as many bindings as it may.
    pub fn is_full(&self) -> bool {
        self.forward.len() >= self.capacity
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
        if self.zone_len(zone) >= self.zone_share {
            self.counters.zone_limited += 1;
            return Err(Reason::DeviceNatLimit);
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
            *self.per_zone.entry(zone).or_default() += 1;
            self.counters.allocated += 1;
            return Ok(t);
        }
        self.counters.exhausted += 1;
        Err(Reason::NatExhausted)
    }

    /// The original tuple of a connection whose reply is `reply`.
    fn original_of_reply(&mut self, zone: Tag, reply: &Tuple, now_ns: u64) -> Option<Tuple> {
        self.binding_of_reply(zone, reply, now_ns).map(|(o, _)| o)
    }

    /// (original, translated) of the connection whose reply is `reply`.
    fn binding_of_reply(
        &mut self,
        zone: Tag,
        reply: &Tuple,
        now_ns: u64,
    ) -> Option<(Tuple, Tuple)> {
        let original = *self.reverse.get(&(zone, *reply))?;
        let b = self.forward.get_mut(&(zone, original))?;
        b.last_seen_ns = now_ns;
        Some((original, b.translated))
    }

    /// The translation of connection `original`, if it has a binding.
    fn translation_of(&mut self, zone: Tag, original: &Tuple, now_ns: u64) -> Option<Tuple> {
        let b = self.forward.get_mut(&(zone, *original))?;
        b.last_seen_ns = now_ns;
        Some(b.translated)
    }

    /// Takes a binding another host allocated (`flow_state`), so that the
    /// replies of its connection, simulated here, are translated back.
    /// Refused (false) when this table has a binding for either direction
    /// already (this host's own decisions win), or has no room for it.
    pub fn import(&mut self, zone: Tag, original: Tuple, translated: Tuple, now_ns: u64) -> bool {
        let reply = translated.reply();
        if self.forward.contains_key(&(zone, original)) || self.reverse.contains_key(&(zone, reply))
        {
            return false;
        }
        if self.forward.len() >= self.capacity || self.zone_len(zone) >= self.zone_share {
            return false;
        }
        self.forward.insert(
            (zone, original),
            Binding {
                translated,
                last_seen_ns: now_ns,
            },
        );
        self.reverse.insert((zone, reply), original);
        *self.per_zone.entry(zone).or_default() += 1;
        true
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
            if let Some(n) = self.per_zone.get_mut(zone) {
                *n -= 1;
                if *n == 0 {
                    self.per_zone.remove(zone);
                }
            }
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

/// The port ranges of `t`'s protocol that DNAT rules own on `addr`,
/// sorted and merged, for a binary search.
fn owned_ranges(forwarded: &[Forwarded], addr: [u8; 4], proto: u8) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = forwarded
        .iter()
        .filter_map(|f| f.owned(addr, proto))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

fn in_ranges(ranges: &[(u16, u16)], port: u16) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= port);
    i > 0 && ranges[i - 1].1 >= port
}

/// Candidate translations of `t`'s source within a target range: each
/// address, and for each the preferred port first (the original one if in
/// range, else one derived from it), then the rest of the range, skipping
/// the ports DNAT rules own on that address. An ICMP echo id is a port
/// here: it keeps its value only inside the range.
///
/// With many hosts (`held`: the SNAT port blocks this host leased, see
/// [`nat_blocks`](super::nat_blocks)), only the ports of this host's blocks
/// of each address are candidates, each block from the preferred port's
/// offset on, starting at the preferred port's block: two hosts
/// translating to one address never give two connections the same public
/// port, each deciding alone where the first packet enters. An address of
/// which this host holds no block has no candidate.
fn snat_candidates<'f>(
    t: Tuple,
    start: [u8; 4],
    end: [u8; 4],
    ports: (u16, u16),
    forwarded: &'f [Forwarded],
    held: Option<&'f NatBlocks>,
) -> impl Iterator<Item = Tuple> + 'f {
    let (lo, hi) = (ip_u32(start), ip_u32(end).max(ip_u32(start)));
    let (plo, phi) = (ports.0.min(ports.1), ports.0.max(ports.1));
    let span = (phi - plo) as u32 + 1;
    let first = if (plo..=phi).contains(&t.sport) {
        (t.sport - plo) as u32
    } else {
        rotate(t.sport as u64, span as u64) as u32
    };
    let preferred = plo + first as u16;
    (lo..=hi).flat_map(move |addr| {
        let src = addr.to_be_bytes();
        let owned = owned_ranges(forwarded, src, t.proto);
        let order: Box<dyn Iterator<Item = u16>> = match held {
            None => Box::new((0..span).map(move |k| plo + ((first + k) % span) as u16)),
            Some(blocks) => Box::new(held_ports(blocks.held(src), plo, phi, preferred)),
        };
        order
            .filter(move |&port| !in_ranges(&owned, port))
            .map(move |port| Tuple {
                src,
                sport: port,
                ..t
            })
    })
}

/// The ports of `held` within `plo..=phi`: the blocks from `preferred`'s
/// (or the next held one) on, wrapping, each block's ports from
/// `preferred`'s offset in a block on, wrapping within the block.
fn held_ports(held: BlockSet, plo: u16, phi: u16, preferred: u16) -> impl Iterator<Item = u16> {
    let first = nat_blocks::block_of(preferred);
    let all = nat_blocks::BLOCKS as u16;
    let offset = preferred % nat_blocks::BLOCK_PORTS;
    (first..all)
        .chain(0..first)
        .filter(move |&b| {
            let r = nat_blocks::ports_of(b);
            held.contains(b) && *r.start() <= phi && *r.end() >= plo
        })
        .flat_map(move |b| {
            let base = *nat_blocks::ports_of(b).start();
            (0..nat_blocks::BLOCK_PORTS)
                .map(move |j| base + (offset + j) % nat_blocks::BLOCK_PORTS)
                .filter(move |p| (plo..=phi).contains(p))
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

/// Whether the translation is static (address only, no binding).
fn is_static(nat: &Nat) -> bool {
    matches!(
        nat,
        Nat::Snat { ports: None, .. } | Nat::Dnat { ports: None, .. }
    )
}

/// Applies a NAT action to the frame, the packet view and the walk's flow.
/// `Ok(false)`: the rule does not apply to this packet (see
/// `reply_of_a_translated_connection`).
pub(super) fn apply(
    walk: &mut Walk,
    frame: &mut Frame,
    zone: Tag,
    p: &mut Packet,
    nat: &Nat,
) -> Result<bool, Reason> {
    // A later fragment is translated as its datagram.
    let h = fragments::view(walk, frame.headers());
    let L3::Ipv4(ip, l4) = h.l3 else {
        return Ok(true);
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
    if icmp_error && !ip.is_later_fragment() {
        return apply_to_error(walk, frame, nat).map(|()| true);
    }
    let t = match tuple_of(p, echo_id) {
        Some(t) => t,
        // A static translation needs the addresses only.
        None if is_static(nat) => Tuple {
            proto: ip.proto,
            src: ip.src,
            dst: ip.dst,
            sport: 0,
            dport: 0,
        },
        // Its binding cannot be named: dropped rather than sent with an
        // untranslated address (see the module comment).
        None if ip.is_later_fragment() && l4 == L4::None && fragments::has_ports(ip.proto) => {
            return Err(Reason::FragmentUnknown)
        }
        // An ICMP query other than echo has no identifier to bind: a
        // dynamic translation cannot be undone for its reply, and sending
        // it on would leak the private address.
        None if matches!(nat, Nat::Snat { .. } | Nat::Dnat { .. }) => {
            return Err(Reason::NatUntranslatable)
        }
        None => return Ok(true),
    };
    let now = walk.now_ns;
    if reply_of_a_translated_connection(walk, zone, nat, &t) {
        return Ok(false);
    }
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
            ref forwarded,
        } => {
            // Protocols without ports get the address only, still bound.
            let range = if matches!(t.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
                range
            } else {
                (0, 0)
            };
            let blocks = walk.snap.nat_blocks.clone();
            let candidates = snat_candidates(t, start, end, range, forwarded, blocks.as_deref());
            let bound = bind_recorded(walk, zone, t, candidates);
            if let Some(blocks) = &blocks {
                // A full table is not helped by more ports.
                if !walk.state.nat.is_full() {
                    tell_the_leaser(blocks, &bound, start, end);
                }
            }
            (bound?.0, Some(t))
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
            let (new, _) = bind_recorded(walk, zone, t, std::iter::once(target))?;
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
                // Nothing to undo: the packet goes on as it is. Not as a
                // flow, though: a binding for this tuple may appear (a
                // port forward's connection), and the flow would skip it.
                walk.not_installable("a reverse NAT found no binding (one may appear later)");
                return Ok(true);
            }
        },
    };
    if let Some(original) = binding {
        walk.tags.push(NatTable::tag(zone, &original));
    }
    if matches!(nat, Nat::Dnat { .. }) {
        walk.path.dnat_rewritten = true;
    }
    let rw = Rewrite {
        src: (new.src != t.src).then_some(new.src),
        dst: (new.dst != t.dst).then_some(new.dst),
        sport: (new.sport != t.sport && t.proto != 0).then_some(new.sport),
        dport: (new.dport != t.dport && t.proto != IPPROTO_ICMP).then_some(new.dport),
    };
    // The flow must do what was done to this packet: a rewrite that could
    // not be made drops the packet instead of installing it untranslated.
    if !frame.rewrite_ipv4(&rw) {
        return Err(Reason::Malformed);
    }
    record(walk, &rw);
    // The datagram's ports as they now are, for its later fragments (a
    // later fragment's own bytes hold no ports: they live in the first).
    walk.path.datagram_l4 = match l4 {
        L4::Ports { .. } => L4::Ports {
            src: new.sport,
            dst: new.dport,
        },
        L4::Icmp {
            kind,
            code,
            echo_id: Some(_),
        } => L4::Icmp {
            kind,
            code,
            echo_id: Some(new.sport),
        },
        other => other,
    };
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
    Ok(true)
}

/// The binding of connection `t`, allocated from `candidates` if it has
/// none; a new one is recorded in the decision for the host the packet goes
/// to (`flow_state`): its replies may be simulated there.
/// The translation of `t` and whether this packet made the binding.
fn bind_recorded(
    walk: &mut Walk,
    zone: Tag,
    t: Tuple,
    candidates: impl Iterator<Item = Tuple>,
) -> Result<(Tuple, bool), Reason> {
    let now = walk.now_ns;
    let known = walk.state.nat.translation_of(zone, &t, now).is_some();
    let translated = walk.state.nat.bind(zone, t, now, candidates)?;
    if !known {
        walk.decision.state_out.push(StateEntry::NatBinding {
            zone,
            original: t,
            translated,
        });
    }
    Ok((translated, !known))
}

/// What a dynamic SNAT binding tells the leaser of this host's port
/// blocks: a port handed out of an address, or no free port in the
/// blocks held of the range's addresses (the first few: a range's first
/// addresses are tried first).
fn tell_the_leaser(
    blocks: &NatBlocks,
    bound: &Result<(Tuple, bool), Reason>,
    start: [u8; 4],
    end: [u8; 4],
) {
    match bound {
        Ok((translated, true)) => blocks.handed(translated.src),
        Ok(_) => {}
        Err(Reason::NatExhausted) => {
            let (lo, hi) = (ip_u32(start), ip_u32(end).max(ip_u32(start)));
            for addr in (lo..=hi).take(WANTED_PER_RANGE) {
                blocks.want(addr.to_be_bytes());
            }
        }
        Err(_) => {}
    }
}

/// Addresses of a range asked for at once when none had a free port.
const WANTED_PER_RANGE: usize = 4;

/// Whether a dynamic forward rule (`snat`, `dnat` with ports) meets a reply
/// of a connection this zone has already translated. Such a packet belongs
/// to that connection, which has its binding: a forward rule binds once per
/// connection (SEMANTICS.md), the reverse rules undo it, and the forward
/// rule passes over the packet as if it had not matched. As in Linux, where
/// only a connection's first packet traverses the NAT rules. MidoNet bound
/// it again, which breaks CloudStack's recipe: its post-routing chain has
/// the source-NAT `snat` ahead of `rev_dnat`, so the replies of a port
/// forward would leave source-NATed. The flow depends on the binding (its
/// tag): when it expires, the packet is a new connection's again.
fn reply_of_a_translated_connection(walk: &mut Walk, zone: Tag, nat: &Nat, t: &Tuple) -> bool {
    if is_static(nat) || !matches!(nat, Nat::Snat { .. } | Nat::Dnat { .. }) {
        return false;
    }
    match walk.state.nat.original_of_reply(zone, t, walk.now_ns) {
        Some(original) => {
            walk.tags.push(NatTable::tag(zone, &original));
            true
        }
        None => false,
    }
}

/// Adds a rewrite to the flow's actions.
fn record(walk: &mut Walk, rw: &Rewrite) {
    let a = &mut walk.path.actions;
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

/// The ICMP error in `frame` and the connection it quotes: (outer header,
/// quote). The quote is read within the packet only (bytes past its total
/// length are not part of it).
fn icmp_error_of(frame: &Frame) -> Option<(packet::Ipv4, packet::Quote)> {
    let L3::Ipv4(ip, L4::Icmp { kind, .. }) = frame.headers().l3 else {
        return None;
    };
    if !icmp::is_error(kind) {
        return None;
    }
    Some((ip, frame.icmp_quote()?))
}

/// Rewrites an ICMP error: `quoted` in the quoted packet and `outer` in
/// its own header, then its ICMP checksum, which covers the quote.
fn rewrite_error(
    frame: &mut Frame,
    q: &packet::Quote,
    (outer, quoted): (Rewrite, Rewrite),
) -> Result<(), Reason> {
    if frame.rewrite_icmp_error(q, &outer, &quoted) {
        Ok(())
    } else {
        Err(Reason::Malformed)
    }
}

/// Where a router translates related ICMP errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    PreRouting,
    PostRouting,
}

/// Translates an ICMP error by the NAT binding (in `zone`) of the
/// connection it quotes, as Linux's conntrack relates errors to their
/// connection (see the module comment). Returns whether it did. Run at a
/// router's pre-routing point, before its chains, for the errors whose
/// destination changes (coming back to a translated sender): routing and
/// the rules then see the error as it travels on, and it reaches the host
/// it is for, not the router that owns the NAT address. Never installed.
pub(super) fn translate_related_error(
    walk: &mut Walk,
    frame: &mut Frame,
    zone: Tag,
) -> Result<bool, Reason> {
    translate_error_at(walk, frame, zone, Hook::PreRouting)
}

/// The same at a router's post-routing point, before its outbound chains,
/// for the errors whose destination stays (an inside host's error leaving
/// with the NAT address as source): as Linux changes sources after
/// routing, so the ingress checks (reverse path) see the sender's own.
pub(super) fn translate_related_error_out(
    walk: &mut Walk,
    frame: &mut Frame,
    zone: Tag,
) -> Result<bool, Reason> {
    translate_error_at(walk, frame, zone, Hook::PostRouting)
}

fn translate_error_at(
    walk: &mut Walk,
    frame: &mut Frame,
    zone: Tag,
    hook: Hook,
) -> Result<bool, Reason> {
    if walk.state.nat.is_empty() {
        return Ok(false);
    }
    let Some((ip, q)) = icmp_error_of(frame) else {
        return Ok(false);
    };
    let quoted = Tuple {
        proto: q.proto,
        src: q.src,
        dst: q.dst,
        sport: q.sport,
        dport: q.dport,
    };
    let now = walk.now_ns;
    let nat = &mut walk.state.nat;
    // What the quoted packet becomes: the quote is either a translated
    // packet T (its reply names the binding in the reverse index: it
    // becomes the original O), or a reply of O as the inside host got it
    // (its reply is O, in the forward index: it becomes T's reply).
    let to = match nat.binding_of_reply(zone, &quoted.reply(), now) {
        Some((original, _)) => original,
        None => match nat.translation_of(zone, &quoted.reply(), now) {
            Some(translated) => translated.reply(),
            None => return Ok(false),
        },
    };
    let from = quoted;
    // The outer addresses that are the quoted packet's follow it: the
    // error's destination is the quoted sender, and its source may be the
    // quoted destination; a router in between keeps its own address.
    let map = |a: [u8; 4]| {
        if a == from.src {
            to.src
        } else if a == from.dst {
            to.dst
        } else {
            a
        }
    };
    let (src, dst) = (map(ip.src), map(ip.dst));
    // Each error is translated at exactly one of the two points: both
    // compute the same mapping from the same binding.
    let here = if dst != ip.dst {
        Hook::PreRouting
    } else {
        Hook::PostRouting
    };
    if hook != here {
        return Ok(false);
    }
    walk.not_installable("NAT of an ICMP error rewrites the quoted packet");
    let outer = Rewrite {
        src: (src != ip.src).then_some(src),
        dst: (dst != ip.dst).then_some(dst),
        ..Default::default()
    };
    let inner = Rewrite {
        src: (to.src != from.src).then_some(to.src),
        dst: (to.dst != from.dst).then_some(to.dst),
        sport: (to.sport != from.sport).then_some(to.sport),
        dport: (to.dport != from.dport && to.proto != IPPROTO_ICMP).then_some(to.dport),
    };
    rewrite_error(frame, &q, (outer, inner))?;
    walk.step(|| Step::Nat {
        src,
        dst,
        sport: 0,
        dport: 0,
    });
    Ok(true)
}

/// An ICMP error meeting a static NAT rule: the outer header is translated
/// as the connection's reply, the quoted packet as the connection's own
/// packet. Dynamic translations and their reverse have nothing to do here:
/// the router's pre-routing point translated the error by its binding
/// already (`translate_related_error`), and a second translation would
/// undo it. The kernel executor does not rewrite quoted headers, so this
/// is never installed.
fn apply_to_error(walk: &mut Walk, frame: &mut Frame, nat: &Nat) -> Result<(), Reason> {
    walk.not_installable("NAT of an ICMP error rewrites the quoted packet");
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
        _ => return Ok(()),
    };
    let Some((ip, q)) = icmp_error_of(frame) else {
        return Ok(());
    };
    rewrite_error(frame, &q, (outer, quoted))?;
    if matches!(nat, Nat::Dnat { .. }) {
        walk.path.dnat_rewritten = true;
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
