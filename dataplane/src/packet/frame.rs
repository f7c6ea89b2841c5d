//! A frame parsed once: its bytes and its [`Headers`], kept in step.
//!
//! The simulation parses a received frame once and carries this view
//! through the walk; every device, filter and NAT rule reads the headers
//! from it. Rewrites go through its setters, which change the bytes, keep
//! the checksums valid (incrementally, as the XDP executor does) and update
//! the headers, so nothing is parsed again after a rewrite.
use super::rewrite::{self, Rewrite};
use super::{icmp_quote, parse, Headers, Mac, ParseError, Quote, L3, L4};
use crate::packet::layout::vlan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Vec<u8>,
    headers: Headers,
}

impl Frame {
    /// Checks and parses `bytes` ([`parse`]: the XDP program's checks).
    pub fn parse(bytes: Vec<u8>) -> Result<Frame, ParseError> {
        let headers = parse(&bytes)?;
        Ok(Frame { bytes, headers })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The end of the IPv4 packet in the frame (Ethernet padding follows);
    /// the frame's length when it holds no IPv4.
    fn ipv4_end(&self) -> usize {
        match self.headers.l3 {
            L3::Ipv4(ip, _) => (ip.offset + ip.total_len as usize).min(self.bytes.len()),
            _ => self.bytes.len(),
        }
    }

    /// The IPv4 packet the frame carries, without Ethernet padding.
    pub fn ipv4_packet(&self) -> Option<&[u8]> {
        match self.headers.l3 {
            L3::Ipv4(ip, _) => Some(&self.bytes[ip.offset..self.ipv4_end()]),
            _ => None,
        }
    }

    /// The frame without its 802.1Q tag (as it is inside the virtual
    /// network). Everything after the tag moves up by its length, so the
    /// headers only need their offsets moved.
    pub fn without_vlan(mut self) -> Frame {
        if self.headers.vlan_tci.is_none() {
            return self;
        }
        self.bytes.drain(vlan::AT..vlan::AT + vlan::TAG_LEN);
        let h = &mut self.headers;
        (h.vlan, h.vlan_tci) = (None, None);
        h.l3_offset -= vlan::TAG_LEN;
        if let L3::Ipv4(ip, _) = &mut h.l3 {
            ip.offset -= vlan::TAG_LEN;
        }
        self
    }

    /// Sets the Ethernet source and destination.
    pub fn set_macs(&mut self, src: Mac, dst: Mac) {
        rewrite::set_macs(&mut self.bytes, src, dst);
        self.headers.src = src;
        self.headers.dst = dst;
    }

    /// TTL − 1 on an IPv4 packet (the header checksum follows); nothing on
    /// anything else.
    pub fn decrement_ttl(&mut self) {
        if let L3::Ipv4(ip, _) = &mut self.headers.l3 {
            rewrite::decrement_ttl(&mut self.bytes, ip.offset);
            ip.ttl = ip.ttl.saturating_sub(1);
        }
    }

    /// Applies a NAT rewrite to the IPv4 packet ([`rewrite::rewrite_ipv4`]:
    /// IPv4, TCP, UDP and ICMP checksums follow). Returns false, changing
    /// nothing, when the frame holds no IPv4.
    pub fn rewrite_ipv4(&mut self, rw: &Rewrite) -> bool {
        let L3::Ipv4(ip, _) = self.headers.l3 else {
            return false;
        };
        let end = ip.offset + ip.total_len as usize;
        if !rewrite::rewrite_ipv4(&mut self.bytes, ip.offset, end, rw) {
            return false;
        }
        self.headers.apply(rw);
        true
    }

    /// The packet an ICMP error quotes, read within the packet (bytes past
    /// its total length are padding, not quote). The quote is parsed here,
    /// when asked for: it is another packet's truncated header, which the
    /// frame's own parse does not check.
    pub fn icmp_quote(&self) -> Option<Quote> {
        let L3::Ipv4(ip, L4::Icmp { .. }) = self.headers.l3 else {
            return None;
        };
        icmp_quote(&self.bytes[..self.ipv4_end()], &ip)
    }

    /// Rewrites an ICMP error: `quoted` in the packet it quotes (`q`, from
    /// [`Frame::icmp_quote`]) and `outer` in its own header, then its ICMP
    /// checksum, which covers the quote. False if a header is not there.
    pub fn rewrite_icmp_error(&mut self, q: &Quote, outer: &Rewrite, quoted: &Rewrite) -> bool {
        let L3::Ipv4(ip, _) = self.headers.l3 else {
            return false;
        };
        let end = self.ipv4_end();
        if !rewrite::rewrite_ipv4(&mut self.bytes, q.offset, end, quoted)
            || !self.rewrite_ipv4(outer)
        {
            return false;
        }
        rewrite::refresh_icmp_checksum(&mut self.bytes, ip.l4_offset(), end);
        true
    }
}

impl Headers {
    /// The headers after `rw` was applied to the bytes: exactly the fields
    /// [`rewrite::rewrite_ipv4`] changes in a packet the parser accepted
    /// (ports of a first or only fragment, an echo's identifier).
    fn apply(&mut self, rw: &Rewrite) {
        let L3::Ipv4(ip, l4) = &mut self.l3 else {
            return;
        };
        ip.src = rw.src.unwrap_or(ip.src);
        ip.dst = rw.dst.unwrap_or(ip.dst);
        match l4 {
            L4::Ports { src, dst } => {
                *src = rw.sport.unwrap_or(*src);
                *dst = rw.dport.unwrap_or(*dst);
            }
            L4::Icmp {
                echo_id: Some(id), ..
            } => *id = rw.sport.unwrap_or(*id),
            L4::Icmp { .. } | L4::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build::*;
    use crate::packet::layout::{self, get16, ipv4, put16, udp};
    use crate::packet::{checksum, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];
    const IP_A: [u8; 4] = [10, 0, 0, 1];
    const IP_B: [u8; 4] = [192, 168, 7, 2];

    fn frame(bytes: Vec<u8>) -> Frame {
        Frame::parse(bytes).expect("a valid frame")
    }

    /// Every checksum of `f` verified by a full computation, and its view
    /// equal to a fresh parse of its bytes.
    fn assert_consistent(f: &Frame, what: &str) {
        assert_eq!(Ok(f.headers), parse(&f.bytes), "{what}: view is stale");
        let L3::Ipv4(ip, _) = f.headers.l3 else {
            return;
        };
        let packet = f.ipv4_packet().unwrap();
        let header = &packet[..ip.header_len];
        assert_eq!(checksum::sum(header, 0), 0xffff, "{what}: IPv4 checksum");
        if ip.is_fragment() {
            return; // the transport checksum covers the whole datagram
        }
        let segment = &packet[ip.header_len..];
        let sum = match ip.proto {
            IPPROTO_UDP if get16(segment, udp::CHECKSUM) == 0 => return, // none
            IPPROTO_TCP | IPPROTO_UDP => {
                let pseudo =
                    checksum::pseudo_header(ip.src, ip.dst, ip.proto, segment.len() as u16);
                checksum::sum(segment, pseudo)
            }
            IPPROTO_ICMP => checksum::sum(segment, 0),
            _ => return,
        };
        assert_eq!(sum, 0xffff, "{what}: transport checksum");
    }

    fn nat(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Rewrite {
        Rewrite {
            src: Some(src),
            dst: Some(dst),
            sport: Some(sport),
            dport: Some(dport),
        }
    }

    #[test]
    fn nat_rewrite_equals_building_the_translated_packet() {
        let (ip_c, ip_d) = ([203, 0, 113, 9], [10, 1, 2, 3]);
        let cases = [
            (
                udp_frame(A, B, IP_A, IP_B, 1234, 53, b"query"),
                nat(ip_c, ip_d, 40001, 5353),
                udp_frame(A, B, ip_c, ip_d, 40001, 5353, b"query"),
            ),
            (
                tcp_frame(A, B, IP_A, IP_B, 40000, 80, 0x02),
                nat(ip_c, ip_d, 61000, 8080),
                tcp_frame(A, B, ip_c, ip_d, 61000, 8080, 0x02),
            ),
            (
                // An echo's identifier is its "source port"; it has no other.
                icmp_echo_frame(A, B, IP_A, IP_B, true, 0x4242, 7, b"ping"),
                nat(ip_c, ip_d, 40001, 9999),
                icmp_echo_frame(A, B, ip_c, ip_d, true, 40001, 7, b"ping"),
            ),
        ];
        for (before, rw, after) in cases {
            let mut f = frame(before);
            assert!(f.rewrite_ipv4(&rw));
            assert_eq!(f.bytes(), &after[..], "bytes as if built translated");
            assert_consistent(&f, "nat");
        }
    }

    #[test]
    fn rewrites_keep_every_checksum_valid() {
        let frames = [
            udp_frame(A, B, IP_A, IP_B, 1234, 53, b"odd length"),
            tcp_frame(A, B, IP_A, IP_B, 40000, 443, 0x12),
            icmp_echo_frame(A, B, IP_A, IP_B, false, 9, 1, &[0xa5; 33]),
            udp_frame_with_options(A, B, IP_A, IP_B, 7, 9, &[1, 1, 1, 0]),
            with_vlan(&udp_frame(A, B, IP_A, IP_B, 1, 2, b"x"), 42),
        ];
        // A spread of values, so that carries and the 0/0xffff corner come up.
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            x
        };
        for bytes in frames {
            for _ in 0..500 {
                let mut f = frame(bytes.clone());
                let (src, dst) = (next().to_be_bytes(), next().to_be_bytes());
                assert!(f.rewrite_ipv4(&nat(src, dst, next() as u16, next() as u16)));
                assert_consistent(&f, "random rewrite");
                f.decrement_ttl();
                f.set_macs(B, A);
                assert_consistent(&f, "ttl and macs");
            }
        }
    }

    #[test]
    fn a_udp_packet_without_checksum_stays_without() {
        let mut bytes = udp_frame(A, B, IP_A, IP_B, 1, 2, b"abc");
        let at = layout::at(ETH_HLEN_IP, udp::CHECKSUM);
        put16(&mut bytes, at.clone(), 0);
        let mut f = frame(bytes);
        assert!(f.rewrite_ipv4(&nat(IP_B, IP_A, 3, 4)));
        assert_eq!(get16(f.bytes(), at), 0);
        assert_consistent(&f, "no UDP checksum");
    }

    const ETH_HLEN_IP: usize = crate::packet::ETH_HLEN + ipv4::HEADER_LEN;

    #[test]
    fn ttl_decrement_is_the_header_rebuilt_with_ttl_63() {
        let mut f = frame(udp_frame(A, B, IP_A, IP_B, 1, 2, b""));
        f.decrement_ttl();
        let L3::Ipv4(ip, _) = f.headers.l3 else {
            panic!("not IPv4")
        };
        assert_eq!(ip.ttl, 63);
        let mut expected = udp_frame(A, B, IP_A, IP_B, 1, 2, b"");
        let header = crate::packet::ETH_HLEN..ETH_HLEN_IP;
        expected[header.start + ipv4::TTL] = 63;
        put16(&mut expected, layout::at(header.start, ipv4::CHECKSUM), 0);
        let c = checksum::ipv4_header(&expected[header.clone()]);
        put16(&mut expected, layout::at(header.start, ipv4::CHECKSUM), c);
        assert_eq!(f.bytes(), &expected[..]);
        assert_consistent(&f, "ttl");
    }

    #[test]
    fn later_fragments_get_addresses_only() {
        let whole = udp_frame(A, B, IP_A, IP_B, 1, 2, &[7; 64]);
        let packet = &whole[crate::packet::ETH_HLEN..];
        let pieces = fragment_ipv4(packet, 20 + 32).unwrap();
        let mut later = frame(ethernet_ipv4(B, A, &pieces[1]));
        assert!(later.rewrite_ipv4(&nat(IP_B, IP_A, 9, 9)));
        assert_consistent(&later, "later fragment");
        let L3::Ipv4(ip, L4::None) = later.headers.l3 else {
            panic!("a later fragment has no ports")
        };
        assert_eq!((ip.src, ip.dst), (IP_B, IP_A));
        assert_eq!(
            &later.bytes()[ETH_HLEN_IP..],
            &pieces[1][20..],
            "payload untouched"
        );
    }

    #[test]
    fn popping_the_tag_is_parsing_the_untagged_frame() {
        for inner in [
            udp_frame(A, B, IP_A, IP_B, 1, 2, b"x"),
            arp_frame(1, A, IP_A, [0; 6], IP_B, crate::packet::BROADCAST),
        ] {
            let popped = frame(with_vlan(&inner, 7)).without_vlan();
            assert_eq!(popped, frame(inner.clone()));
            assert_eq!(frame(inner.clone()).without_vlan(), frame(inner));
        }
    }

    #[test]
    fn icmp_error_rewrite_equals_the_error_about_the_translated_packet() {
        // A port unreachable about 10.0.0.1:1234 → 192.168.7.2:53, turned
        // into one about 203.0.113.9:40001 → 192.168.7.2:53, sent to it.
        let public = [203, 0, 113, 9];
        let about = |src, sport| {
            let original = udp_frame(A, B, src, IP_B, sport, 53, b"query");
            let error = icmp_error(IP_B, 3, 3, 0, &original[crate::packet::ETH_HLEN..]);
            ethernet_ipv4(A, B, &error)
        };
        let mut f = frame(about(IP_A, 1234));
        let q = f.icmp_quote().expect("a quote");
        assert_eq!(
            (q.proto, q.src, q.sport, q.dport),
            (IPPROTO_UDP, IP_A, 1234, 53)
        );
        let outer = Rewrite {
            dst: Some(public),
            ..Default::default()
        };
        let quoted = Rewrite {
            src: Some(public),
            sport: Some(40001),
            ..Default::default()
        };
        assert!(f.rewrite_icmp_error(&q, &outer, &quoted));
        assert_eq!(f.bytes(), &about(public, 40001)[..]);
        assert_consistent(&f, "icmp error");
    }
}
