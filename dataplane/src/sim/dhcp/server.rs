//! The DHCP server's state machine (RFC 2131 §4.3): a request and the
//! lease table in, the reply (or the reason for silence) out. It knows
//! nothing of frames; `super::process` parses and addresses them.
use super::config::{Config, Host};
use super::leases::{Holder, Leases, Refused};
use super::message::{opt, Message, MessageType, HEADER_LEN, OP_REPLY};
use crate::packet::Mac;
use crate::sim::Tag;

/// What the server did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply.
    Reply(Message),
    /// The request was for this server and needs no reply (RELEASE,
    /// DECLINE).
    Consumed(NoReply),
    /// Not for vnet to answer: as in MidoNet, the frame goes on through the
    /// bridge, where another DHCP server may answer it.
    Pass(NoReply),
    /// For this server, which will not answer it: the frame is dropped
    /// (passing it on would flood every port with a guest's excess).
    Refused(NoReply),
}

/// Why no reply was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    Released,
    Declined,
    /// No static entry and no pool to give an address from.
    UnknownClient,
    /// Every address of every pool is taken.
    PoolExhausted,
    /// The lease table is full.
    LeaseTableFull,
    /// The client's port holds as many leases as it may.
    PortLeaseLimit,
    /// The client named another server (option 54).
    OtherServer,
    /// A REQUEST without requested address or ciaddr, a DECLINE without
    /// requested address: nothing to act on.
    NoAddress,
    /// An INFORM from an address outside every served subnet.
    NotOnSubnet,
    /// A message type a server does not answer (OFFER, ACK, ...).
    NotServed(MessageType),
}

/// The address a client has now.
struct Current<'c> {
    subnet: usize,
    ip: [u8; 4],
    /// `None` for a pool lease.
    host: Option<&'c Host>,
}

/// Everything the server needs besides the request.
pub struct Server<'a> {
    pub config: &'a Config,
    pub leases: &'a mut Leases,
    pub bridge: &'a str,
    /// The bridge port the request came in by, charged with its lease.
    pub port: Tag,
    pub now_ns: u64,
}

const UNSPECIFIED: [u8; 4] = [0; 4];

/// Smallest message every client must accept (RFC 2131 §2: 576-byte IP
/// datagrams).
const MIN_MAX_MESSAGE: usize = 576;

impl<'a> Server<'a> {
    /// Answers `req`, whose type is `kind` (checked by the caller).
    pub fn handle(&mut self, req: &Message, kind: MessageType) -> Outcome {
        match kind {
            MessageType::Discover => self.discover(req),
            MessageType::Request => self.request(req),
            MessageType::Decline => self.decline(req),
            MessageType::Release => self.release(req),
            MessageType::Inform => self.inform(req),
            other => Outcome::Pass(NoReply::NotServed(other)),
        }
    }

    fn current(&self, mac: &Mac) -> Option<Current<'a>> {
        let config: &'a Config = self.config;
        if let Some((subnet, host)) = config.static_host(mac) {
            return Some(Current {
                subnet,
                ip: host.ip,
                host: Some(host),
            });
        }
        let lease = self.leases.lease(self.bridge, mac, self.now_ns)?;
        // A lease whose address left the pools (a topology change) is void.
        let subnet = config.pool_subnet(lease.ip)?;
        Some(Current {
            subnet,
            ip: lease.ip,
            host: None,
        })
    }

    /// The subnet whose pool can give `ip` to `mac` now.
    fn can_take(&self, mac: &Mac, ip: [u8; 4]) -> Option<usize> {
        let subnet = self.config.pool_subnet(ip)?;
        match self.leases.holder(self.bridge, ip, self.now_ns) {
            Holder::Free => Some(subnet),
            Holder::Client(m) if m == *mac => Some(subnet),
            _ => None,
        }
    }

    /// Picks a free pool address for `mac`: the one it asked for if it can
    /// have it, otherwise the first free one from a point derived from the
    /// MAC, so that a client tends to get the same address back.
    fn allocate(&self, mac: &Mac, wanted: Option<[u8; 4]>) -> Result<(usize, [u8; 4]), NoReply> {
        if let Some(ip) = wanted {
            if let Some(subnet) = self.can_take(mac, ip) {
                return Ok((subnet, ip));
            }
        }
        if !self.config.has_pool() {
            return Err(NoReply::UnknownClient);
        }
        let start = mac_hash(mac);
        for (i, s) in self.config.subnets.iter().enumerate() {
            let free = s
                .pool_from(start)
                .find(|&ip| self.leases.holder(self.bridge, ip, self.now_ns) == Holder::Free);
            if let Some(ip) = free {
                return Ok((i, ip));
            }
        }
        Err(NoReply::PoolExhausted)
    }

    fn discover(&mut self, req: &Message) -> Outcome {
        let mac = req.client_mac();
        let (subnet, ip, host) = match self.current(&mac) {
            Some(c) => (c.subnet, c.ip, c.host),
            None => match self.allocate(&mac, req.requested_ip()) {
                Ok((s, ip)) => (s, ip, None),
                Err(why) => return Outcome::Pass(why),
            },
        };
        if host.is_none() {
            let offered = self
                .leases
                .offer(self.bridge, self.port, mac, ip, self.now_ns);
            if let Err(refused) = offered {
                return not_recorded(refused);
            }
        }
        Outcome::Reply(self.reply(req, MessageType::Offer, subnet, ip, host))
    }

    fn request(&mut self, req: &Message) -> Outcome {
        let mac = req.client_mac();
        if let Some(sid) = req.server_id() {
            if self.config.subnet_of_server(sid).is_none() {
                // SELECTING another server's offer: ours is free again.
                self.leases.cancel_offer(self.bridge, &mac);
                return Outcome::Pass(NoReply::OtherServer);
            }
        }
        // SELECTING and INIT-REBOOT name the address in option 50;
        // RENEWING and REBINDING in ciaddr.
        let wanted = match (req.requested_ip(), req.ciaddr) {
            (Some(ip), _) => ip,
            (None, ci) if ci != UNSPECIFIED => ci,
            _ => return Outcome::Pass(NoReply::NoAddress),
        };
        match self.current(&mac) {
            Some(c) if c.ip == wanted => self.ack(req, c.subnet, wanted, c.host),
            Some(c) => self.nak(req, c.subnet, wanted),
            // No address yet (the offer lapsed, or the lease ran out or was
            // lost): the client may have the one it asks for if it is free.
            None => match self.can_take(&mac, wanted) {
                Some(subnet) => self.ack(req, subnet, wanted, None),
                None if self.config.has_pool() => {
                    let subnet = self.nak_subnet(req, wanted);
                    self.nak(req, subnet, wanted)
                }
                None => Outcome::Pass(NoReply::UnknownClient),
            },
        }
    }

    fn ack(&mut self, req: &Message, subnet: usize, ip: [u8; 4], host: Option<&Host>) -> Outcome {
        let config: &'a Config = self.config;
        let s = &config.subnets[subnet];
        if host.is_none() {
            let lease_ns = u64::from(s.lease_secs) * 1_000_000_000;
            let mac = req.client_mac();
            let bound = self
                .leases
                .bind(self.bridge, self.port, mac, ip, lease_ns, self.now_ns);
            if let Err(refused) = bound {
                return not_recorded(refused);
            }
        }
        let mut reply = self.reply(req, MessageType::Ack, subnet, ip, host);
        // RFC 2131 table 3: an ACK carries the request's ciaddr.
        reply.ciaddr = req.ciaddr;
        Outcome::Reply(reply)
    }

    /// The subnet to name as server in a NAK to a client with no address.
    fn nak_subnet(&self, req: &Message, wanted: [u8; 4]) -> usize {
        req.server_id()
            .and_then(|sid| self.config.subnet_of_server(sid))
            .or_else(|| self.config.subnet_containing(wanted))
            .unwrap_or(0)
    }

    fn nak(&self, req: &Message, subnet: usize, wanted: [u8; 4]) -> Outcome {
        let s = &self.config.subnets[subnet];
        let text = format!(
            "{} is not the address of this client",
            std::net::Ipv4Addr::from(wanted)
        );
        Outcome::Reply(Message {
            op: OP_REPLY,
            options: vec![
                (opt::MESSAGE_TYPE, vec![MessageType::Nak.into()]),
                (opt::SERVER_ID, s.server.to_vec()),
                (opt::MESSAGE, text.into_bytes()),
            ],
            ..reply_header(req)
        })
    }

    fn release(&mut self, req: &Message) -> Outcome {
        if let Some(why) = self.for_another_server(req) {
            return Outcome::Pass(why);
        }
        self.leases
            .release(self.bridge, &req.client_mac(), req.ciaddr);
        Outcome::Consumed(NoReply::Released)
    }

    fn decline(&mut self, req: &Message) -> Outcome {
        if let Some(why) = self.for_another_server(req) {
            return Outcome::Pass(why);
        }
        let Some(ip) = req.requested_ip() else {
            return Outcome::Pass(NoReply::NoAddress);
        };
        // Only pool addresses can be held back; a static address stays the
        // host's (the operator has to sort out the conflict).
        if self.config.pool_subnet(ip).is_some() {
            self.leases
                .decline(self.bridge, &req.client_mac(), ip, self.now_ns);
        }
        Outcome::Consumed(NoReply::Declined)
    }

    fn for_another_server(&self, req: &Message) -> Option<NoReply> {
        match req.server_id() {
            Some(sid) if self.config.subnet_of_server(sid).is_none() => Some(NoReply::OtherServer),
            _ => None,
        }
    }

    fn inform(&self, req: &Message) -> Outcome {
        let Some(subnet) = self.config.subnet_containing(req.ciaddr) else {
            return Outcome::Pass(NoReply::NotOnSubnet);
        };
        let host = self.config.subnets[subnet].hosts.get(&req.client_mac());
        let mut reply = self.reply(req, MessageType::Ack, subnet, UNSPECIFIED, host);
        reply.ciaddr = req.ciaddr;
        Outcome::Reply(reply)
    }

    /// An OFFER or ACK giving `ip`. 0.0.0.0 answers an INFORM: the client
    /// configured its address itself, so no lease times (RFC 2131 §4.3.5)
    /// and none of the address's own options (mask, broadcast).
    fn reply(
        &self,
        req: &Message,
        kind: MessageType,
        subnet: usize,
        ip: [u8; 4],
        host: Option<&Host>,
    ) -> Message {
        let s = &self.config.subnets[subnet];
        let gives_address = ip != UNSPECIFIED;
        let host_options: &[(u8, Vec<u8>)] = host.map(|h| h.options.as_slice()).unwrap_or(&[]);
        let host_sets = |code: u8| host_options.iter().any(|(c, _)| *c == code);

        let mut must: Vec<(u8, Vec<u8>)> = vec![
            (opt::MESSAGE_TYPE, vec![kind.into()]),
            (opt::SERVER_ID, s.server.to_vec()),
        ];
        if gives_address {
            let lease = host_options
                .iter()
                .find(|(c, v)| *c == opt::LEASE_TIME && v.len() == 4)
                .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                .unwrap_or(s.lease_secs);
            for (code, secs) in [
                (opt::LEASE_TIME, lease),
                // RFC 2131 §4.4.5: T1 at 50% and T2 at 87.5% of the lease.
                (opt::RENEWAL_TIME, lease / 2),
                (opt::REBINDING_TIME, (u64::from(lease) * 7 / 8) as u32),
            ] {
                if !host_sets(code) {
                    must.push((code, secs.to_be_bytes().to_vec()));
                }
            }
        }
        let address_only = |code: u8| matches!(code, opt::SUBNET_MASK | opt::BROADCAST);
        let mut rest: Vec<&(u8, Vec<u8>)> = s
            .options
            .iter()
            .filter(|(c, _)| !host_sets(*c) && (gives_address || !address_only(*c)))
            .collect();
        rest.extend(host_options.iter().filter(|(c, _)| {
            gives_address
                || !matches!(
                    *c,
                    opt::LEASE_TIME | opt::RENEWAL_TIME | opt::REBINDING_TIME
                )
        }));
        if gives_address {
            // The mask goes with the address, whatever the room.
            if let Some(i) = rest.iter().position(|(c, _)| *c == opt::SUBNET_MASK) {
                must.push(rest.remove(i).clone());
            }
        }

        Message {
            op: OP_REPLY,
            yiaddr: ip,
            options: fit(req, must, rest),
            ..reply_header(req)
        }
    }
}

/// What the server does when the lease table refuses a lease: a full
/// table is the server's own limit (another server may answer); a port
/// over its share is the guest's, dropped.
fn not_recorded(refused: Refused) -> Outcome {
    match refused {
        Refused::Full => Outcome::Pass(NoReply::LeaseTableFull),
        Refused::PortLimit => Outcome::Refused(NoReply::PortLeaseLimit),
    }
}

/// The fields every reply copies from the request (RFC 2131 table 3).
fn reply_header(req: &Message) -> Message {
    Message {
        op: OP_REPLY,
        htype: req.htype,
        hlen: req.hlen,
        xid: req.xid,
        flags: req.flags,
        giaddr: req.giaddr,
        chaddr: req.chaddr,
        ..Message::default()
    }
}

/// The options that fit in the client's maximum message size (57, at
/// least 576): all of `must`, then the options of `rest` the client asked
/// for (55), then the others, each as long as it fits.
fn fit(req: &Message, must: Vec<(u8, Vec<u8>)>, rest: Vec<&(u8, Vec<u8>)>) -> Vec<(u8, Vec<u8>)> {
    use super::message::option_wire_len;
    let max = usize::from(req.max_message_size().unwrap_or(0)).max(MIN_MAX_MESSAGE);
    // IPv4 and UDP headers, the fixed header, the END option.
    let mut room = max.saturating_sub(20 + 8 + HEADER_LEN + 1);
    let mut out = Vec::with_capacity(must.len() + rest.len());
    for o in must {
        room = room.saturating_sub(option_wire_len(o.1.len()));
        out.push(o);
    }
    let (asked, unasked): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(c, _)| req.requests(*c));
    for (code, value) in asked.into_iter().chain(unasked) {
        let need = option_wire_len(value.len());
        if need <= room {
            room -= need;
            out.push((*code, value.clone()));
        }
    }
    out
}

/// FNV-1a of the MAC: where a client's search for a free address starts.
fn mac_hash(mac: &Mac) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mac {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
