//! The DHCP message (RFC 2131 §2, RFC 2132 options) on the wire, in
//! smoltcp's style: [`Packet`] is a view over the bytes whose accessors
//! cannot go out of bounds once `new_checked` accepted the buffer;
//! [`Message`] is the value that parses from a view and emits itself.
//!
//! Nothing here trusts the packet: every length is checked before it is
//! used, and each way a message can be wrong is its own [`Error`], which
//! maps to a counted drop reason.
use crate::packet::Mac;
use vnet_common::Reason;

/// Byte offsets of the fixed BOOTP header (RFC 2131 figure 1).
mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Range<usize> = 4..8;
    pub const SECS: Range<usize> = 8..10;
    pub const FLAGS: Range<usize> = 10..12;
    pub const CIADDR: Range<usize> = 12..16;
    pub const YIADDR: Range<usize> = 16..20;
    pub const SIADDR: Range<usize> = 20..24;
    pub const GIADDR: Range<usize> = 24..28;
    pub const CHADDR: Range<usize> = 28..44;
    // sname 44..108 and file 108..236 carry nothing vnet uses (option
    // overload, which would put options there, is refused).
    pub const COOKIE: Range<usize> = 236..240;
    pub const OPTIONS: usize = 240;
}

/// The fixed header with the magic cookie: the shortest DHCP message.
pub const HEADER_LEN: usize = field::OPTIONS;
/// RFC 1542 §2.1: relay agents and old clients expect at least the 300
/// bytes of a BOOTP message, so replies are padded to it.
pub const MIN_MESSAGE_LEN: usize = 300;
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The broadcast bit of `flags` (RFC 2131 figure 2).
pub const FLAG_BROADCAST: u16 = 0x8000;
pub const OP_REQUEST: u8 = 1;
pub const OP_REPLY: u8 = 2;
/// ARP hardware type of Ethernet.
pub const HTYPE_ETHERNET: u8 = 1;

/// Option codes used by vnet (RFC 2132, RFC 3442).
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const INTERFACE_MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// Option 53. Unknown values are values, not errors: a server ignores
/// message types it does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    Other(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            other => MessageType::Other(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
            MessageType::Other(v) => v,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{len} bytes: shorter than the 240-byte BOOTP header with its magic cookie")]
    Truncated { len: usize },
    #[error("the options end without the END option (255): the message was cut short")]
    NoEnd,
    #[error("no DHCP magic cookie: a plain BOOTP message")]
    NoCookie,
    #[error("option {code} claims {len} bytes, more than the message has left")]
    OptionOverrun { code: u8, len: usize },
    #[error("option {code} has {len} bytes; it must have {want}")]
    OptionLength {
        code: u8,
        len: usize,
        want: &'static str,
    },
    #[error(
        "option 52 (overload) puts options in the sname/file fields, which vnet does not read"
    )]
    Overload,
    #[error("op {op}, htype {htype}, hlen {hlen}: not a BOOTREQUEST from an Ethernet client")]
    BadHeader { op: u8, htype: u8, hlen: u8 },
    #[error("no message type (option 53): a BOOTP request, which vnet does not serve")]
    NoMessageType,
}

impl Error {
    /// The drop reason this error is counted under.
    pub fn reason(self) -> Reason {
        match self {
            Error::Truncated { .. } | Error::NoEnd => Reason::DhcpTruncated,
            Error::NoCookie => Reason::DhcpNoCookie,
            Error::OptionOverrun { .. } | Error::OptionLength { .. } | Error::NoMessageType => {
                Reason::DhcpBadOption
            }
            Error::Overload => Reason::DhcpOverload,
            Error::BadHeader { .. } => Reason::DhcpBadHeader,
        }
    }
}

/// A view over the bytes of a DHCP message (the UDP payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn ip4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks: only for buffers known to hold a header.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view over a received message: long enough for every fixed field,
    /// with the DHCP magic cookie.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { len });
        }
        if p.buffer.as_ref()[field::COOKIE] != MAGIC_COOKIE {
            return Err(Error::NoCookie);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn op(&self) -> u8 {
        self.b()[field::OP]
    }
    pub fn htype(&self) -> u8 {
        self.b()[field::HTYPE]
    }
    pub fn hlen(&self) -> u8 {
        self.b()[field::HLEN]
    }
    pub fn hops(&self) -> u8 {
        self.b()[field::HOPS]
    }
    pub fn xid(&self) -> u32 {
        u32::from_be_bytes(ip4(&self.b()[field::XID]))
    }
    pub fn secs(&self) -> u16 {
        let s = &self.b()[field::SECS];
        u16::from_be_bytes([s[0], s[1]])
    }
    pub fn flags(&self) -> u16 {
        let s = &self.b()[field::FLAGS];
        u16::from_be_bytes([s[0], s[1]])
    }
    pub fn ciaddr(&self) -> [u8; 4] {
        ip4(&self.b()[field::CIADDR])
    }
    pub fn yiaddr(&self) -> [u8; 4] {
        ip4(&self.b()[field::YIADDR])
    }
    pub fn siaddr(&self) -> [u8; 4] {
        ip4(&self.b()[field::SIADDR])
    }
    pub fn giaddr(&self) -> [u8; 4] {
        ip4(&self.b()[field::GIADDR])
    }
    pub fn chaddr(&self) -> [u8; 16] {
        let mut c = [0; 16];
        c.copy_from_slice(&self.b()[field::CHADDR]);
        c
    }
    /// The options area (everything after the cookie).
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.b()[field::OPTIONS..],
            done: false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_op(&mut self, v: u8) {
        self.m()[field::OP] = v;
    }
    pub fn set_htype(&mut self, v: u8) {
        self.m()[field::HTYPE] = v;
    }
    pub fn set_hlen(&mut self, v: u8) {
        self.m()[field::HLEN] = v;
    }
    pub fn set_hops(&mut self, v: u8) {
        self.m()[field::HOPS] = v;
    }
    pub fn set_xid(&mut self, v: u32) {
        self.m()[field::XID].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_secs(&mut self, v: u16) {
        self.m()[field::SECS].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_flags(&mut self, v: u16) {
        self.m()[field::FLAGS].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ciaddr(&mut self, v: [u8; 4]) {
        self.m()[field::CIADDR].copy_from_slice(&v);
    }
    pub fn set_yiaddr(&mut self, v: [u8; 4]) {
        self.m()[field::YIADDR].copy_from_slice(&v);
    }
    pub fn set_siaddr(&mut self, v: [u8; 4]) {
        self.m()[field::SIADDR].copy_from_slice(&v);
    }
    pub fn set_giaddr(&mut self, v: [u8; 4]) {
        self.m()[field::GIADDR].copy_from_slice(&v);
    }
    pub fn set_chaddr(&mut self, v: [u8; 16]) {
        self.m()[field::CHADDR].copy_from_slice(&v);
    }
    pub fn set_cookie(&mut self) {
        self.m()[field::COOKIE].copy_from_slice(&MAGIC_COOKIE);
    }
}

/// Iterator over the options of a message: `(code, value)` for each option
/// up to END; pads are skipped. An error ends the iteration.
pub struct Options<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some((&code, after)) = self.rest.split_first() else {
                self.done = true;
                return Some(Err(Error::NoEnd));
            };
            match code {
                opt::PAD => self.rest = after,
                opt::END => self.done = true,
                _ => {
                    let Some((&len, value)) = after.split_first() else {
                        self.done = true;
                        return Some(Err(Error::NoEnd));
                    };
                    let len = len as usize;
                    if value.len() < len {
                        self.done = true;
                        return Some(Err(Error::OptionOverrun { code, len }));
                    }
                    let (value, rest) = value.split_at(len);
                    self.rest = rest;
                    return Some(Ok((code, value)));
                }
            }
        }
        None
    }
}

/// A DHCP message as a value. `options` keeps the order of the wire, with
/// an option split over several occurrences joined into one (RFC 3396).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: [u8; 4],
    pub yiaddr: [u8; 4],
    pub siaddr: [u8; 4],
    pub giaddr: [u8; 4],
    pub chaddr: [u8; 16],
    pub options: Vec<(u8, Vec<u8>)>,
}

/// The exact length an option must have, for the options vnet reads.
fn fixed_len(code: u8) -> Option<(usize, &'static str)> {
    match code {
        opt::MESSAGE_TYPE => Some((1, "1")),
        opt::MAX_MESSAGE_SIZE => Some((2, "2")),
        opt::SUBNET_MASK
        | opt::BROADCAST
        | opt::REQUESTED_IP
        | opt::SERVER_ID
        | opt::LEASE_TIME
        | opt::RENEWAL_TIME
        | opt::REBINDING_TIME => Some((4, "4")),
        _ => None,
    }
}

impl Message {
    /// Parses a checked view. Fixed-length options are checked here, so the
    /// typed accessors below can read them without failing.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Message, Error> {
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        for o in p.options() {
            let (code, value) = o?;
            if code == opt::OVERLOAD {
                return Err(Error::Overload);
            }
            match options.iter_mut().find(|(c, _)| *c == code) {
                Some((_, v)) => v.extend_from_slice(value),
                None => options.push((code, value.to_vec())),
            }
        }
        for (code, value) in &options {
            if let Some((len, want)) = fixed_len(*code) {
                if value.len() != len {
                    return Err(Error::OptionLength {
                        code: *code,
                        len: value.len(),
                        want,
                    });
                }
            }
        }
        Ok(Message {
            op: p.op(),
            htype: p.htype(),
            hlen: p.hlen(),
            hops: p.hops(),
            xid: p.xid(),
            secs: p.secs(),
            flags: p.flags(),
            ciaddr: p.ciaddr(),
            yiaddr: p.yiaddr(),
            siaddr: p.siaddr(),
            giaddr: p.giaddr(),
            chaddr: p.chaddr(),
            options,
        })
    }

    /// Parses the bytes of a message (a UDP payload).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Message, Error> {
        Message::parse(&Packet::new_checked(bytes)?)
    }

    /// What a server requires of a request beyond a well-formed message:
    /// a BOOTREQUEST from an Ethernet client, with a message type.
    pub fn check_request(&self) -> Result<MessageType, Error> {
        if self.op != OP_REQUEST || self.htype != HTYPE_ETHERNET || self.hlen != 6 {
            return Err(Error::BadHeader {
                op: self.op,
                htype: self.htype,
                hlen: self.hlen,
            });
        }
        self.message_type().ok_or(Error::NoMessageType)
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    fn ip_option(&self, code: u8) -> Option<[u8; 4]> {
        self.option(code)
            .filter(|v| v.len() == 4)
            .map(|v| [v[0], v[1], v[2], v[3]])
    }

    fn u32_option(&self, code: u8) -> Option<u32> {
        self.ip_option(code).map(u32::from_be_bytes)
    }

    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(opt::MESSAGE_TYPE) {
            Some([t]) => Some(MessageType::from(*t)),
            _ => None,
        }
    }
    pub fn requested_ip(&self) -> Option<[u8; 4]> {
        self.ip_option(opt::REQUESTED_IP)
    }
    pub fn server_id(&self) -> Option<[u8; 4]> {
        self.ip_option(opt::SERVER_ID)
    }
    pub fn lease_time(&self) -> Option<u32> {
        self.u32_option(opt::LEASE_TIME)
    }
    pub fn renewal_time(&self) -> Option<u32> {
        self.u32_option(opt::RENEWAL_TIME)
    }
    pub fn rebinding_time(&self) -> Option<u32> {
        self.u32_option(opt::REBINDING_TIME)
    }
    pub fn max_message_size(&self) -> Option<u16> {
        match self.option(opt::MAX_MESSAGE_SIZE) {
            Some([a, b]) => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }
    /// Whether the client listed `code` in its parameter request list (55).
    pub fn requests(&self, code: u8) -> bool {
        self.option(opt::PARAMETER_REQUEST)
            .is_some_and(|l| l.contains(&code))
    }
    pub fn broadcast_flag(&self) -> bool {
        self.flags & FLAG_BROADCAST != 0
    }
    /// The client's Ethernet address (the first 6 bytes of chaddr).
    pub fn client_mac(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        m
    }

    /// The message as bytes: the header, the cookie, the options (split in
    /// pieces of 255 bytes when longer, RFC 3396), END, then pads up to
    /// [`MIN_MESSAGE_LEN`].
    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        {
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_op(self.op);
            p.set_htype(self.htype);
            p.set_hlen(self.hlen);
            p.set_hops(self.hops);
            p.set_xid(self.xid);
            p.set_secs(self.secs);
            p.set_flags(self.flags);
            p.set_ciaddr(self.ciaddr);
            p.set_yiaddr(self.yiaddr);
            p.set_siaddr(self.siaddr);
            p.set_giaddr(self.giaddr);
            p.set_chaddr(self.chaddr);
            p.set_cookie();
        }
        for (code, value) in &self.options {
            emit_option(&mut b, *code, value);
        }
        b.push(opt::END);
        if b.len() < MIN_MESSAGE_LEN {
            b.resize(MIN_MESSAGE_LEN, opt::PAD);
        }
        b
    }
}

/// Bytes `emit_option` takes for a value of `len` bytes.
pub fn option_wire_len(len: usize) -> usize {
    // An empty value still takes one code and one length byte.
    len + 2 * len.div_ceil(255).max(1)
}

fn emit_option(b: &mut Vec<u8>, code: u8, value: &[u8]) {
    if value.is_empty() {
        b.extend_from_slice(&[code, 0]);
        return;
    }
    for piece in value.chunks(255) {
        b.push(code);
        b.push(piece.len() as u8);
        b.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Message {
        Message {
            op: OP_REQUEST,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            xid: 0x1234_5678,
            secs: 3,
            flags: FLAG_BROADCAST,
            ciaddr: [10, 0, 0, 5],
            giaddr: [10, 9, 9, 9],
            chaddr: [2, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            options: vec![
                (opt::MESSAGE_TYPE, vec![3]),
                (opt::REQUESTED_IP, vec![10, 0, 0, 11]),
                (opt::SERVER_ID, vec![10, 0, 0, 2]),
                (opt::PARAMETER_REQUEST, vec![1, 3, 6, 121]),
                (opt::MAX_MESSAGE_SIZE, vec![5, 220]),
            ],
            ..Message::default()
        }
    }

    #[test]
    fn emitted_message_parses_back_field_by_field() {
        let m = request();
        let bytes = m.emit();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN, "padded to the BOOTP minimum");
        assert_eq!(&bytes[236..240], &MAGIC_COOKIE);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.op(), p.htype(), p.hlen(), p.hops()), (1, 1, 6, 0));
        assert_eq!((p.xid(), p.secs(), p.flags()), (0x1234_5678, 3, 0x8000));
        assert_eq!((p.ciaddr(), p.giaddr()), ([10, 0, 0, 5], [10, 9, 9, 9]));
        let back = Message::parse(&p).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.message_type(), Some(MessageType::Request));
        assert_eq!(back.requested_ip(), Some([10, 0, 0, 11]));
        assert_eq!(back.server_id(), Some([10, 0, 0, 2]));
        assert_eq!(back.max_message_size(), Some(1500));
        assert!(back.requests(121) && !back.requests(26));
        assert!(back.broadcast_flag());
        assert_eq!(back.client_mac(), [2, 0, 0, 0, 1, 1]);
        assert_eq!(back.check_request(), Ok(MessageType::Request));
    }

    #[test]
    fn long_options_are_split_and_joined_again() {
        let mut m = request();
        let long: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        m.options.push((opt::CLASSLESS_ROUTES, long.clone()));
        let bytes = m.emit();
        let pieces = Packet::new_checked(&bytes[..])
            .unwrap()
            .options()
            .filter(|o| matches!(o, Ok((121, _))))
            .count();
        assert_eq!(pieces, 3, "600 bytes go out as 255 + 255 + 90");
        assert_eq!(
            option_wire_len(600),
            bytes.len() - 240 - 1 - option_bytes(&request())
        );
        let back = Message::parse_bytes(&bytes).unwrap();
        assert_eq!(back.option(opt::CLASSLESS_ROUTES), Some(&long[..]));
    }

    fn option_bytes(m: &Message) -> usize {
        m.options
            .iter()
            .map(|(_, v)| option_wire_len(v.len()))
            .sum()
    }

    #[test]
    fn unknown_message_types_are_values() {
        let mut m = request();
        m.options[0].1 = vec![42];
        let back = Message::parse_bytes(&m.emit()).unwrap();
        assert_eq!(back.message_type(), Some(MessageType::Other(42)));
        assert_eq!(u8::from(MessageType::Other(42)), 42);
        for t in 1..=8u8 {
            assert_eq!(u8::from(MessageType::from(t)), t);
        }
    }

    #[test]
    fn every_truncation_is_an_error_or_a_complete_message() {
        let bytes = request().emit();
        // The END option is the last byte that matters; after it come pads.
        let end = HEADER_LEN + option_bytes(&request());
        assert_eq!(bytes[end], opt::END);
        for len in 0..bytes.len() {
            let got = Message::parse_bytes(&bytes[..len]);
            if len <= end {
                let err = got.expect_err("a message cut before its END is refused");
                assert!(
                    matches!(
                        err,
                        Error::Truncated { .. } | Error::NoEnd | Error::OptionOverrun { .. }
                    ),
                    "length {len}: {err:?}"
                );
            } else {
                assert_eq!(got.unwrap(), request(), "length {len}: only pads were cut");
            }
        }
        assert_eq!(
            Message::parse_bytes(&bytes[..100]),
            Err(Error::Truncated { len: 100 })
        );
        assert_eq!(
            Message::parse_bytes(&bytes[..HEADER_LEN]),
            Err(Error::NoEnd)
        );
        assert_eq!(
            Message::parse_bytes(&bytes[..HEADER_LEN + 2]),
            Err(Error::OptionOverrun { code: 53, len: 1 })
        );
    }

    #[test]
    fn a_missing_cookie_is_bootp() {
        let mut bytes = request().emit();
        bytes[236] = 0;
        assert_eq!(Message::parse_bytes(&bytes), Err(Error::NoCookie));
        assert_eq!(Error::NoCookie.reason(), Reason::DhcpNoCookie);
    }

    #[test]
    fn bad_option_lengths_are_refused() {
        for (code, value) in [
            (opt::MESSAGE_TYPE, vec![1, 1]),
            (opt::REQUESTED_IP, vec![10, 0, 0]),
            (opt::SERVER_ID, vec![10, 0, 0, 2, 0]),
            (opt::MAX_MESSAGE_SIZE, vec![2]),
            (opt::LEASE_TIME, vec![]),
        ] {
            let mut m = request();
            m.options.retain(|(c, _)| *c != code);
            m.options.push((code, value.clone()));
            let err = Message::parse_bytes(&m.emit()).unwrap_err();
            assert_eq!(
                err,
                Error::OptionLength {
                    code,
                    len: value.len(),
                    want: fixed_len(code).unwrap().1
                }
            );
            assert_eq!(err.reason(), Reason::DhcpBadOption);
        }
        // A length byte running past the end of the message.
        let mut bytes = request().emit();
        let at = HEADER_LEN + option_bytes(&request());
        bytes.truncate(at);
        bytes.extend_from_slice(&[12, 200, b'x']);
        assert_eq!(
            Message::parse_bytes(&bytes),
            Err(Error::OptionOverrun { code: 12, len: 200 })
        );
    }

    #[test]
    fn option_overload_is_refused() {
        let mut m = request();
        m.options.push((opt::OVERLOAD, vec![3]));
        let err = Message::parse_bytes(&m.emit()).unwrap_err();
        assert_eq!(err, Error::Overload);
        assert_eq!(err.reason(), Reason::DhcpOverload);
    }

    #[test]
    fn requests_must_be_bootrequests_from_ethernet_with_a_type() {
        let mut m = request();
        m.op = OP_REPLY;
        assert!(matches!(
            m.check_request(),
            Err(Error::BadHeader { op: 2, .. })
        ));
        let mut m = request();
        m.hlen = 16;
        assert_eq!(
            m.check_request().unwrap_err().reason(),
            Reason::DhcpBadHeader
        );
        let mut m = request();
        m.options.remove(0);
        assert_eq!(m.check_request(), Err(Error::NoMessageType));
    }

    #[test]
    fn pads_between_options_are_skipped() {
        let mut bytes = request().emit()[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&[0, 0, 53, 1, 1, 0, 255]);
        let m = Message::parse_bytes(&bytes).unwrap();
        assert_eq!(m.options, vec![(53, vec![1])]);
    }
}
