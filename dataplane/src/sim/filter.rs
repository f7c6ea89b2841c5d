//! Running a filter chain at a point of the pipeline: the packet the rules
//! see, connection-tracking state, and what a decision does to the walk.
use super::chain::{ChainId, Env, Frag, IpFields, Nat, Packet, Verdict};
use super::conntrack::{Conntrack, Direction, Tuple};
use super::{PortId, RouterIf, Step, Tag, Walk};
use crate::packet::{self, build, Frame, Headers, Mac, IPPROTO_ICMP, IPPROTO_TCP, L3, L4};
use vnet_common::Reason;
use vnet_model::RejectWith;

/// Where a filter runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Point {
    pub in_port: Option<PortId>,
    pub out_port: Option<PortId>,
    /// Connection-tracking zone.
    pub zone: Tag,
    /// On a router: the port the packet entered by and who sent it, where
    /// a REJECT answers. On a bridge, REJECT drops.
    pub reply_via: Option<(PortId, RouterIf, Mac)>,
}

/// The packet as rules see it.
pub(super) fn packet_of(h: &Headers, in_port: Option<PortId>, out_port: Option<PortId>) -> Packet {
    let ip = match h.l3 {
        L3::Ipv4(ip, l4) => Some(IpFields {
            proto: ip.proto,
            tos: ip.tos,
            src: ip.src,
            dst: ip.dst,
            frag: if ip.is_later_fragment() {
                Frag::Later
            } else if ip.is_fragment() {
                Frag::First
            } else {
                Frag::Unfragmented
            },
            l4: match l4 {
                L4::Ports { src, dst } => Some((src, dst)),
                L4::Icmp { kind, code, .. } => Some((kind as u16, code as u16)),
                L4::None => None,
            },
        }),
        _ => None,
    };
    Packet {
        in_port,
        out_port,
        ethertype: h.ethertype,
        eth_src: h.src,
        eth_dst: h.dst,
        ip,
    }
}

/// The connection-tracking tuple of a packet, and whether it is an ICMP
/// error (whose tuple is then the quoted packet's, parsed from `frame`
/// only then: a quote is not part of the frame's checked headers).
fn tuple_of(frame: &[u8], h: &Headers) -> Option<(Tuple, bool)> {
    let L3::Ipv4(ip, l4) = h.l3 else { return None };
    let tuple = |proto, src, dst, sport, dport| Tuple {
        proto,
        src,
        dst,
        sport,
        dport,
    };
    match l4 {
        L4::Ports { src, dst } => Some((tuple(ip.proto, ip.src, ip.dst, src, dst), false)),
        L4::Icmp {
            echo_id: Some(id), ..
        } => Some((tuple(IPPROTO_ICMP, ip.src, ip.dst, id, 0), false)),
        L4::Icmp {
            kind: 3 | 11 | 12, ..
        } => {
            let q = packet::icmp_quote(frame, &ip)?;
            Some((tuple(q.proto, q.src, q.dst, q.sport, q.dport), true))
        }
        _ => None,
    }
}

struct FilterEnv<'w, 'a> {
    walk: &'w mut Walk<'a>,
    frame: &'w mut Frame,
    zone: Tag,
    state: Option<Direction>,
}

impl Env for FilterEnv<'_, '_> {
    fn conn_state(&mut self) -> Direction {
        if let Some(s) = self.state {
            return s;
        }
        let h = super::fragments::view(self.walk, self.frame.headers());
        let state = match tuple_of(self.frame.bytes(), &h) {
            None => Direction::Forward,
            Some((t, true)) => {
                // An ICMP error belongs to the connection it quotes (in
                // either direction); an unrelated one is a new "forward"
                // packet, which return-only rules refuse. The flow key does
                // not hold the quoted packet, so this decision is never
                // installed: the next error between the same hosts may
                // quote another connection.
                self.walk
                    .not_installable("an ICMP error: the key does not hold the packet it quotes");
                let ct = &self.walk.state.conntrack;
                let related =
                    ct.is_known(self.zone, &t) || ct.classify(self.zone, &t) == Direction::Return;
                self.walk.tags.push(Conntrack::tag(self.zone, &t.reply()));
                self.walk.tags.push(Conntrack::tag(self.zone, &t));
                if related {
                    Direction::Return
                } else {
                    Direction::Forward
                }
            }
            Some((t, false)) => {
                self.walk.tags.push(Conntrack::tag(self.zone, &t));
                let d = self.walk.state.conntrack.classify(self.zone, &t);
                match d {
                    Direction::Return => {
                        self.walk
                            .state
                            .conntrack
                            .touch_reply(self.zone, &t, self.walk.now_ns)
                    }
                    Direction::Forward => self.walk.pending_conns.push((self.zone, t)),
                }
                d
            }
        };
        let zone = self.zone;
        self.walk.step(|| Step::Conntrack { zone, state });
        self.state = Some(state);
        state
    }
    fn dnat_rewritten(&self) -> bool {
        self.walk.path.dnat_rewritten
    }
    fn fragment_sensitive(&mut self) {
        self.walk
            .not_installable("a rule tells fragments apart, and all fragments share one flow");
    }
    fn depends_on(&mut self, tag: Tag) {
        self.walk.tags.push(tag);
    }
    fn nat(&mut self, packet: &mut Packet, nat: &Nat) -> Result<bool, Reason> {
        super::nat::apply(self.walk, self.frame, self.zone, packet, nat)
    }
}

/// Runs the filter `chains` in order on the frame (the first decision
/// other than ACCEPT ends the walk). Returns whether the packet goes on.
pub(super) fn run(walk: &mut Walk, chains: &[ChainId], frame: &mut Frame, at: Point) -> bool {
    chains.iter().all(|&chain| run_one(walk, chain, frame, at))
}

fn run_one(walk: &mut Walk, chain: ChainId, frame: &mut Frame, at: Point) -> bool {
    // Current after any earlier chain's NAT: rewrites keep the view.
    let h = super::fragments::view(walk, frame.headers());
    let mut p = packet_of(&h, at.in_port, at.out_port);
    let snap = walk.snap;
    let verdict = {
        let mut env = FilterEnv {
            walk,
            frame,
            zone: at.zone,
            state: None,
        };
        snap.chains.evaluate(chain, &mut p, &mut env)
    };
    walk.step(|| Step::Filter { chain, verdict });
    match verdict {
        Verdict::Accept => true,
        Verdict::Drop => {
            walk.drop(Reason::FilterDrop, true);
            false
        }
        Verdict::Error(reason) => {
            walk.drop(reason, false);
            false
        }
        Verdict::Reject(with) => {
            reject(walk, frame, with, at);
            false
        }
    }
}

/// REJECT: on a router, answer the sender (ICMP or TCP RST) from the
/// ingress port; on a bridge, answer as OVN's reject does, from the
/// original destination. Never installed: every rejected packet gets its
/// answer.
fn reject(walk: &mut Walk, frame: &Frame, with: RejectWith, at: Point) {
    walk.not_installable("REJECT answers every packet");
    let Some((port, via, sender)) = at.reply_via else {
        reject_on_bridge(walk, frame, with, at);
        return;
    };
    let (L3::Ipv4(ip, _), Some(original)) = (frame.headers().l3, frame.ipv4_packet()) else {
        walk.drop(Reason::FilterReject, false);
        return;
    };
    let answer = match with {
        RejectWith::TcpReset if ip.proto == IPPROTO_TCP => build::tcp_reset_for(original),
        RejectWith::IcmpPortUnreachable => Some(build::icmp_error(via.addr, 3, 3, 0, original)),
        _ => Some(build::icmp_error(via.addr, 3, 13, 0, original)),
    };
    if let Some(answer) = answer {
        walk.step(|| Step::Rejected { with });
        walk.inject(port, build::ethernet_ipv4(sender, via.mac, &answer));
    }
    walk.drop(Reason::FilterReject, false);
}

/// REJECT on a bridge (MidoNet dropped): TCP gets a RST, anything else ICMP
/// port unreachable (what `icmp-port-unreachable` asks for TCP too), sent
/// from the original destination's addresses back out of the ingress port,
/// so the sender sees what a host that refused would have said. Nothing is
/// answered where a host would stay silent (RFC 1812 4.3.2.7: ICMP errors,
/// later fragments, broadcast or multicast).
fn reject_on_bridge(walk: &mut Walk, frame: &Frame, with: RejectWith, at: Point) {
    let answer = (|| {
        let port = at.in_port?;
        let h = frame.headers();
        let L3::Ipv4(ip, l4) = h.l3 else { return None };
        let broadcast = packet::is_multicast(&h.dst) || ip.dst[0] >= 224 || ip.dst == [255; 4];
        if broadcast || !super::router::may_answer_with_error(&ip, l4) {
            return None;
        }
        let original = frame.ipv4_packet()?;
        let packet = if ip.proto == IPPROTO_TCP && with != RejectWith::IcmpPortUnreachable {
            build::tcp_reset_for(original)?
        } else {
            build::icmp_error(ip.dst, 3, 3, 0, original)
        };
        Some((port, build::ethernet_ipv4(h.src, h.dst, &packet)))
    })();
    if let Some((port, reply)) = answer {
        walk.step(|| Step::Rejected { with });
        walk.inject(port, reply);
    }
    walk.drop(Reason::FilterReject, false);
}
