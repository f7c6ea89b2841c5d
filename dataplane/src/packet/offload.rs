//! Frames as a guest with transmit checksum offload sends them.
//!
//! A guest's TCP/UDP stack with checksum offload on (every Linux guest's
//! default, veth or virtio) leaves the transport checksum *partial*: the
//! field holds the folded pseudo-header sum only, and the kernel
//! (`CHECKSUM_PARTIAL`) or the NIC finishes it later. The skb executor keeps
//! that state through its rewrites, but a first packet reaches userspace as
//! bytes, the state lost. Userspace sends what it forwards as complete
//! frames, so it finishes such a checksum on arrival: a frame whose
//! checksum does not verify but whose field equals the pseudo-header sum
//! gets its full checksum. Anything else is left as it came (a wrong
//! checksum stays wrong, for the receiver to drop, as a Linux bridge
//! would forward it).

use super::build::l4_checksum;
use super::checksum;
use super::layout::{at, ethernet, get16, get4, ipv4, tcp, udp, vlan};
use super::{ETHERTYPE_IPV4, ETHERTYPE_VLAN, IPPROTO_TCP, IPPROTO_UDP};

/// Finishes a partial TCP/UDP checksum in `frame` (Ethernet, an optional
/// 802.1Q tag, IPv4, not a fragment). Returns whether it wrote one.
pub fn complete_partial_checksum(frame: &mut [u8]) -> bool {
    let Some((l3, ihl, l4_len, proto)) = transport(frame) else {
        return false;
    };
    let l4 = l3 + ihl;
    let csum = l4
        + match proto {
            IPPROTO_TCP => tcp::CHECKSUM.start,
            _ => udp::CHECKSUM.start,
        };
    let src = get4(frame, at(l3, ipv4::SRC_ADDR));
    let dst = get4(frame, at(l3, ipv4::DST_ADDR));
    let segment = &frame[l4..l4 + l4_len];
    let stored = u16::from_be_bytes([frame[csum], frame[csum + 1]]);
    // UDP checksum 0: none was sent, none is owed.
    if proto == IPPROTO_UDP && stored == 0 {
        return false;
    }
    let pseudo = checksum::pseudo_header(src, dst, proto, l4_len as u16);
    if checksum::finish(checksum::sum(segment, pseudo)) == 0 {
        return false;
    }
    if stored != pseudo as u16 {
        return false;
    }
    frame[csum..csum + 2].copy_from_slice(&[0, 0]);
    let full = l4_checksum(src, dst, proto, &frame[l4..l4 + l4_len]);
    frame[csum..csum + 2].copy_from_slice(&full.to_be_bytes());
    true
}

/// The IPv4 header's offset and length, the transport length and protocol
/// of a TCP/UDP packet that is not a fragment and fits the frame.
fn transport(frame: &[u8]) -> Option<(usize, usize, usize, u8)> {
    let mut l3 = ethernet::HEADER_LEN;
    if frame.len() < l3 + vlan::TAG_LEN {
        return None;
    }
    let mut ethertype = get16(frame, ethernet::ETHERTYPE);
    if ethertype == ETHERTYPE_VLAN {
        ethertype = get16(frame, at(vlan::AT, vlan::ETHERTYPE));
        l3 += vlan::TAG_LEN;
    }
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(l3..l3 + ipv4::HEADER_LEN)?;
    let ver_ihl = ip[ipv4::VER_IHL];
    let ihl = ipv4::header_len(ver_ihl);
    let total = usize::from(get16(ip, ipv4::LENGTH));
    let frag = get16(ip, ipv4::FLAGS_FRAG);
    let proto = ip[ipv4::PROTOCOL];
    if ipv4::version(ver_ihl) != 4
        || ihl < ipv4::HEADER_LEN
        || total < ihl
        || l3 + total > frame.len()
    {
        return None;
    }
    // A fragment's checksum covers the whole datagram, which no one packet
    // holds.
    if frag & (ipv4::MORE_FRAGMENTS | ipv4::FRAG_OFFSET_MASK) != 0 {
        return None;
    }
    let l4_len = total - ihl;
    let min = match proto {
        IPPROTO_TCP => tcp::HEADER_LEN,
        IPPROTO_UDP => udp::HEADER_LEN,
        _ => return None,
    };
    (l4_len >= min).then_some((l3, ihl, l4_len, proto))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build;

    const SRC: [u8; 4] = [10, 0, 0, 1];
    const DST: [u8; 4] = [10, 0, 0, 2];

    /// The frame as a guest with offload sends it: the field holds the
    /// pseudo-header sum (`~csum_tcpudp_magic(...)`, Linux's
    /// `__tcp_v4_send_check` and `udp4_hwcsum`).
    fn partial(mut frame: Vec<u8>, proto: u8) -> Vec<u8> {
        let (l3, ihl, l4_len, _) = transport(&frame).unwrap();
        let at = l3 + ihl + if proto == IPPROTO_TCP { 16 } else { 6 };
        let pseudo = checksum::pseudo_header(SRC, DST, proto, l4_len as u16) as u16;
        frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        frame
    }

    #[test]
    fn partial_tcp_and_udp_checksums_are_finished() {
        let m1 = [2, 0, 0, 0, 0, 1];
        let m2 = [2, 0, 0, 0, 0, 2];
        let tcp = build::tcp_frame(m2, m1, SRC, DST, 40000, 80, tcp::ACK);
        let udp = build::udp_frame(m2, m1, SRC, DST, 5000, 53, b"query");
        for (full, proto) in [(tcp, IPPROTO_TCP), (udp, IPPROTO_UDP)] {
            let mut f = partial(full.clone(), proto);
            assert_ne!(f, full);
            assert!(complete_partial_checksum(&mut f), "proto {proto}");
            assert_eq!(f, full, "proto {proto}");
            // Complete now: nothing more to do.
            assert!(!complete_partial_checksum(&mut f));
            // Tagged frames too.
            let mut tagged = build::with_vlan(&partial(full.clone(), proto), 7);
            assert!(complete_partial_checksum(&mut tagged));
            assert_eq!(tagged, build::with_vlan(&full, 7));
        }
    }

    #[test]
    fn a_wrong_checksum_that_is_not_partial_stays_as_it_came() {
        let m1 = [2, 0, 0, 0, 0, 1];
        let m2 = [2, 0, 0, 0, 0, 2];
        let mut f = build::tcp_frame(m2, m1, SRC, DST, 40000, 80, tcp::ACK);
        let at = 14 + 20 + 16;
        f[at] ^= 0x55;
        let before = f.clone();
        assert!(!complete_partial_checksum(&mut f));
        assert_eq!(f, before);
        // Truncated and odd frames are left alone, never a panic.
        for len in 0..before.len() {
            let mut cut = before[..len].to_vec();
            complete_partial_checksum(&mut cut);
        }
    }
}
