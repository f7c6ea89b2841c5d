//! The header walk: Ethernet, an optional 802.1Q tag, then ARP or IPv4 and
//! its transport header, into a [`FlowKey`] by the rule written on
//! `FlowKey` (the same parser, field for field, as `dataplane/src/packet`).

use aya_ebpf::programs::XdpContext;
use vnet_common::{FlowKey, FragKey, FragPorts, Reason, FRAG_FRAGMENT, KEY_TAGGED};

use crate::access::{bounded, Frame};
use crate::checksum;
use crate::maps;
use crate::wire::*;

/// What the executor needs besides the key.
pub(crate) struct Parsed {
    pub(crate) key: FlowKey,
    /// Length of the Ethernet header as received: 14, or 18 with a tag.
    pub(crate) l2_len: usize,
    /// IPv4 header length (20..=60), 0 for a non-IPv4 frame.
    pub(crate) ip_len: usize,
    /// The IPv4 packet carries its transport header (not a later fragment).
    pub(crate) has_l4: bool,
    /// Frame length as received, for the byte counter.
    pub(crate) len: u64,
}

/// Builds the flow key. `Err` carries the reason the frame goes to
/// userspace unlooked-up: `XdpUnparsed` (the userspace parser decides what
/// it is), `XdpMalformed` (IPv4 that userspace drops as malformed: never
/// matched against a flow) or `XdpFragUnknown` (a later fragment whose first
/// one we did not see, so its ports are unknown).
#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Result<Parsed, Reason> {
    parse_frame(&Frame::new(ctx), ctx.ingress_ifindex() as u32, None)
}

/// [`parse`] of any frame: `ifindex` is the ingress interface, `outer_tci`
/// the 802.1Q tag the kernel took out of the bytes (the skb path: a
/// received tag is in the skb's metadata, not in the packet), which keys
/// exactly as the same tag in the bytes does.
#[inline(always)]
pub(crate) fn parse_frame(
    f: &Frame,
    ifindex: u32,
    outer_tci: Option<u16>,
) -> Result<Parsed, Reason> {
    const UNPARSED: Reason = Reason::XdpUnparsed;
    let eth = f.bytes::<ETH_HLEN>(0).ok_or(UNPARSED)?;
    // Zeroed first: every field the packet lacks is 0.
    let mut key = FlowKey {
        ifindex,
        eth_dst: eth.mac::<ETH_DST>(),
        eth_src: eth.mac::<ETH_SRC>(),
        ..FlowKey::default()
    };
    let mut ethertype = eth.be16::<ETH_TYPE>();
    let mut l2_len = ETH_HLEN;
    if let Some(tci) = outer_tci {
        key.vlan_tci = tci;
        key.flags |= KEY_TAGGED;
    } else if ethertype == ETH_P_8021Q {
        let tag = f.bytes::<VLAN_HLEN>(ETH_HLEN).ok_or(UNPARSED)?;
        // The whole TCI (a chain or a port may tell priorities apart), and
        // the presence of the tag: a priority tag (VID 0) is not untagged.
        key.vlan_tci = tag.be16::<VLAN_TCI>();
        key.flags |= KEY_TAGGED;
        ethertype = tag.be16::<VLAN_TYPE>();
        l2_len = ETH_HLEN + VLAN_HLEN;
    }
    // QinQ (an outer 802.1ad tag, or a second tag): not ours to parse.
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(UNPARSED);
    }
    key.ethertype = ethertype;
    let mut parsed = Parsed {
        key,
        l2_len,
        ip_len: 0,
        has_l4: false,
        len: f.len() as u64,
    };
    match ethertype {
        ETH_P_ARP => parse_arp(f, &mut parsed).ok_or(UNPARSED)?,
        ETH_P_IP => parse_ipv4(f, &mut parsed)?,
        // Any other EtherType is switched on its L2 fields alone.
        _ => {}
    }
    Ok(parsed)
}

/// Ethernet/IPv4 ARP only (htype 1, ptype 0x0800, hlen 6, plen 4): key
/// src/dst are the sender/target protocol addresses, l4_dst the whole
/// 16-bit opcode (proto stays 0).
#[inline(always)]
fn parse_arp(f: &Frame, p: &mut Parsed) -> Option<()> {
    let arp = f.bytes::<ARP_LEN>(p.l2_len)?;
    if arp.be16::<ARP_HTYPE>() != 1
        || arp.be16::<ARP_PTYPE>() != ETH_P_IP
        || arp.u8::<ARP_HLEN>() != 6
        || arp.u8::<ARP_PLEN>() != 4
    {
        return None;
    }
    p.key.l4_dst = arp.be16::<ARP_OPER>();
    p.key.src = arp.ipv4::<ARP_SPA>();
    p.key.dst = arp.ipv4::<ARP_TPA>();
    Some(())
}

/// Keys an IPv4 packet, or refuses it as the userspace parser does
/// (`packet::parse`): lengths first, then the header checksum, then the
/// transport header of a packet that carries one. The checks are those of
/// Linux's `ip_rcv_core` and `udp_rcv`/`tcp_v4_rcv`; a packet failing them
/// is `XdpMalformed`, for userspace to drop with the precise reason.
#[inline(always)]
fn parse_ipv4(f: &Frame, p: &mut Parsed) -> Result<(), Reason> {
    const UNPARSED: Reason = Reason::XdpUnparsed;
    const MALFORMED: Reason = Reason::XdpMalformed;
    let ip = f.bytes::<IPV4_MIN_HLEN>(p.l2_len).ok_or(UNPARSED)?;
    let vihl = ip.u8::<IP_VIHL>();
    if vihl >> 4 != 4 {
        return Err(UNPARSED);
    }
    // IHL 5..=15 words. The mask also tells the verifier the offset of the
    // transport header is bounded (at most 60 bytes past the IP header).
    let ip_len = ((vihl & 0x0f) as usize) * 4;
    if ip_len < IPV4_MIN_HLEN {
        return Err(MALFORMED);
    }
    // The packet must fit in the frame (Ethernet padding after it is legal)
    // and hold its own header; the options are then in the frame too.
    let total = ip.be16::<IP_TOTAL_LEN>() as usize;
    if total < ip_len || p.l2_len + total > f.len() {
        return Err(MALFORMED);
    }
    if !checksum::ipv4_header_ok(f, p.l2_len, ip_len) {
        return Err(MALFORMED);
    }
    p.ip_len = ip_len;
    let frag = ip.be16::<IP_FRAG>();
    let proto = ip.u8::<IP_PROTO>();
    p.key.proto = proto;
    p.key.tos = ip.u8::<IP_TOS>();
    p.key.src = ip.ipv4::<IP_SRC>();
    p.key.dst = ip.ipv4::<IP_DST>();

    let is_fragment = frag & (IP_MF | IP_OFFSET) != 0;
    if is_fragment {
        p.key.frag = FRAG_FRAGMENT;
    }
    let frag_key = FragKey {
        ifindex: p.key.ifindex,
        src: p.key.src,
        dst: p.key.dst,
        id: ip.be16::<IP_ID>(),
        proto,
        _pad: 0,
    };
    if frag & IP_OFFSET != 0 {
        // A later fragment has no transport header: its key takes the first
        // fragment's L4 fields, so every fragment of a datagram hits the
        // datagram's flow.
        let Some(ports) = maps::frag_ports(frag_key) else {
            return Err(Reason::XdpFragUnknown);
        };
        p.key.l4_src = ports.l4_src;
        p.key.l4_dst = ports.l4_dst;
        return Ok(());
    }

    p.has_l4 = true;
    // Verifier workaround: LLVM knows from the length checks above that
    // the transport header is inside the frame and would drop the bounds
    // checks below, which the verifier needs; the opaque mask (a no-op: at
    // most 18 + 60) keeps them.
    let l4_off = bounded::<0x7f>(p.l2_len + ip_len);
    // Transport bytes of this packet (not of the frame: padding is not
    // part of the packet).
    let l4_room = total - ip_len;
    match proto {
        IPPROTO_TCP => {
            // The whole fixed header, and the options its data offset
            // claims, inside the packet.
            if l4_room < TCP_MIN_HLEN {
                return Err(MALFORMED);
            }
            let tcp = f.bytes::<TCP_MIN_HLEN>(l4_off).ok_or(MALFORMED)?;
            let doff = ((tcp.u8::<TCP_DOFF>() >> 4) as usize) * 4;
            if doff < TCP_MIN_HLEN || doff > l4_room {
                return Err(MALFORMED);
            }
            p.key.l4_src = tcp.be16::<L4_SRC>();
            p.key.l4_dst = tcp.be16::<L4_DST>();
        }
        IPPROTO_UDP => {
            if l4_room < UDP_HLEN {
                return Err(MALFORMED);
            }
            let udp = f.bytes::<UDP_HLEN>(l4_off).ok_or(MALFORMED)?;
            // A first fragment's UDP length covers the whole datagram,
            // which this packet does not hold: only its floor is checked.
            let udp_len = udp.be16::<UDP_LEN>() as usize;
            if udp_len < UDP_HLEN || (!is_fragment && udp_len > l4_room) {
                return Err(MALFORMED);
            }
            p.key.l4_src = udp.be16::<L4_SRC>();
            p.key.l4_dst = udp.be16::<L4_DST>();
        }
        IPPROTO_ICMP => {
            if l4_room < ICMP_HLEN {
                return Err(UNPARSED);
            }
            let icmp = f.bytes::<ICMP_HLEN>(l4_off).ok_or(UNPARSED)?;
            let kind = icmp.u8::<ICMP_TYPE>();
            let code = icmp.u8::<ICMP_CODE>();
            if kind == 0 || kind == 8 {
                p.key.l4_src = icmp.be16::<ICMP_ECHO_ID>();
            }
            p.key.l4_dst = (kind as u16) << 8 | code as u16;
        }
        _ => {}
    }
    if is_fragment {
        // The first fragment (offset 0, MF set) records its L4 fields for
        // the later ones.
        let ports = FragPorts {
            l4_src: p.key.l4_src,
            l4_dst: p.key.l4_dst,
        };
        maps::record_frag(frag_key, ports);
    }
    Ok(())
}
