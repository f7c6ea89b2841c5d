//! Applying a flow's rewrites to the frame, in the fixed order of
//! `vnet_common::act`: VLAN pop/push and MACs, then the transport header's
//! ports and checksum, then the IPv4 addresses, TTL and header checksum.

use aya_ebpf::programs::XdpContext;
use vnet_common::{act, FlowActions};

use crate::access::{adjust_head, bounded, Bytes, Frame};
use crate::checksum;
use crate::parse::Parsed;
use crate::wire::*;

/// Applies the rewrites of a flow that outputs. All preconditions are
/// checked before the first byte is written, so on `Err` the frame is still
/// exactly as received when it goes to userspace.
#[inline(always)]
pub(crate) fn apply(ctx: &mut XdpContext, p: &Parsed, a: &FlowActions) -> Result<(), ()> {
    let flags = a.flags;
    let proto = p.key.proto;
    let is_ip = p.key.ethertype == ETH_P_IP;
    // Verifier workaround: these lengths come back from the stack where the
    // verifier lost their range (it cannot track a narrow spill read back
    // wide), and packet pointer arithmetic needs a bounded offset. The masks
    // are no-ops on the real values (14/18 and 20..=60).
    let in_l2 = bounded::<0x1f>(p.l2_len);
    let ip_len = bounded::<0x3f>(p.ip_len);

    // --- preconditions -------------------------------------------------
    let tagged_in = in_l2 != ETH_HLEN;
    let mut tagged = tagged_in;
    if flags & act::POP_VLAN != 0 {
        if !tagged {
            return Err(());
        }
        tagged = false;
    }
    if flags & act::PUSH_VLAN != 0 {
        // We never build QinQ.
        if tagged {
            return Err(());
        }
        tagged = true;
    }
    if flags & (act::SET_IP_SRC | act::SET_IP_DST | act::DEC_TTL) != 0 && !is_ip {
        return Err(());
    }
    // L4 rewrites only where the transport header is: a later fragment has
    // none and keeps its bytes (its flow key carries the first fragment's
    // ports; the rewritten ports are in the first fragment).
    let set_l4 = flags & (act::SET_L4_SRC | act::SET_L4_DST);
    let l4_rewrite = set_l4 != 0 && p.has_l4;
    // Bytes of transport header the rewrites touch (checksum included).
    let mut l4_need = 0;
    if flags & (act::SET_IP_SRC | act::SET_IP_DST) != 0 && p.has_l4 {
        // The pseudo-header changes: TCP and UDP checksums follow.
        if proto == IPPROTO_TCP {
            l4_need = TCP_CSUM + 2;
        } else if proto == IPPROTO_UDP {
            l4_need = UDP_CSUM + 2;
        }
    }
    if l4_rewrite {
        match proto {
            IPPROTO_TCP => l4_need = TCP_CSUM + 2,
            IPPROTO_UDP => l4_need = UDP_CSUM + 2,
            // The echo identifier is the ICMP "source port"; an ICMP
            // packet has nothing that SET_L4_DST could mean.
            IPPROTO_ICMP if set_l4 == act::SET_L4_SRC && is_echo(p.key.l4_dst) => {
                l4_need = ICMP_ECHO_ID + 2
            }
            _ => return Err(()),
        }
    }
    {
        let f = Frame::new(ctx);
        if is_ip {
            let ip = f.bytes::<IPV4_MIN_HLEN>(in_l2).ok_or(())?;
            // A router must not forward what would leave with TTL 0
            // (RFC 1812 §5.3.1): userspace sends the ICMP time exceeded.
            if flags & act::DEC_TTL != 0 && ip.u8::<IP_TTL>() <= ttl_dec(a) {
                return Err(());
            }
            // Too big for the egress MTU: userspace fragments it or sends
            // ICMP fragmentation needed.
            if a.mtu != 0 && ip.be16::<IP_TOTAL_LEN>() > a.mtu {
                return Err(());
            }
        }
        if l4_need != 0 && !f.contains(in_l2 + ip_len, l4_need) {
            return Err(());
        }
    }

    // --- Ethernet header: VLAN pop/push and MAC rewrites ------------------
    let l2_len = if tagged {
        ETH_HLEN + VLAN_HLEN
    } else {
        ETH_HLEN
    };
    if flags & (act::POP_VLAN | act::PUSH_VLAN | act::SET_ETH_SRC | act::SET_ETH_DST) != 0 {
        if l2_len != in_l2 {
            // Grow (-4) or shrink (+4) the head; the L3 header stays where
            // it is in memory and the Ethernet header is rewritten whole
            // below. This is the only step that can fail after the checks,
            // and it comes before any write.
            adjust_head(ctx, in_l2 as i32 - l2_len as i32)?;
        }
        // adjust_head invalidated every packet pointer: start over (no
        // `Bytes` from before it can exist, they borrow `ctx`).
        let f = Frame::new(ctx);
        let eth = f.bytes::<ETH_HLEN>(0).ok_or(())?;
        let dst = if flags & act::SET_ETH_DST != 0 {
            a.eth_dst
        } else {
            p.key.eth_dst
        };
        let src = if flags & act::SET_ETH_SRC != 0 {
            a.eth_src
        } else {
            p.key.eth_src
        };
        eth.set_mac::<ETH_DST>(dst);
        eth.set_mac::<ETH_SRC>(src);
        if tagged {
            // The TPID, where an untagged frame has its EtherType, then the
            // tag: the TCI and the enclosed EtherType.
            let tpid_and_tag = f.bytes::<{ 2 + VLAN_HLEN }>(ETH_TYPE).ok_or(())?;
            let tag = tpid_and_tag.field::<2, VLAN_HLEN>();
            // Keep the tag of a frame that stays tagged (its PCP/DEI too);
            // a pushed tag has priority 0.
            if flags & act::PUSH_VLAN != 0 {
                tpid_and_tag.set_raw16::<0>(ETH_P_8021Q.to_be());
                tag.set_raw16::<VLAN_TCI>((a.vlan & 0x0fff).to_be());
            }
            tag.set_raw16::<VLAN_TYPE>(p.key.ethertype.to_be());
        } else {
            eth.set_raw16::<ETH_TYPE>(p.key.ethertype.to_be());
        }
    }
    if !is_ip {
        return Ok(());
    }

    // --- IPv4 and transport header ----------------------------------------
    let f = Frame::new(ctx);
    let ip = f.bytes::<IPV4_MIN_HLEN>(l2_len).ok_or(())?;
    // The transport header, when a checksum or port in it changes. Every
    // access below re-checks its own bytes although `l4_need` covered them
    // all: the verifier does not keep the link between `proto` and
    // `l4_need` once they are spilled, and would see a path where a TCP
    // checksum is read with only a UDP header proven (verifier workaround;
    // the checks cannot fail here).
    if l4_need != 0 {
        let l4_off = l2_len + ip_len;
        let csum_off = match proto {
            IPPROTO_TCP => TCP_CSUM,
            IPPROTO_UDP => UDP_CSUM,
            _ => ICMP_CSUM,
        };
        let csum_at = f.bytes::<2>(l4_off + csum_off).ok_or(())?;
        let mut l4_csum = csum_at.raw16::<0>();
        // A zero UDP checksum means "none" and stays zero.
        let csum_on = !(proto == IPPROTO_UDP && l4_csum == 0);
        // Only TCP and UDP have a pseudo-header; ICMP gets here only for an
        // echo id rewrite.
        if proto != IPPROTO_ICMP {
            if flags & act::SET_IP_SRC != 0 {
                l4_csum = replace_addr_in_sum(l4_csum, ip.field::<IP_SRC, 4>(), a.ip_src);
            }
            if flags & act::SET_IP_DST != 0 {
                l4_csum = replace_addr_in_sum(l4_csum, ip.field::<IP_DST, 4>(), a.ip_dst);
            }
        }
        if l4_rewrite {
            if proto == IPPROTO_ICMP {
                let id = f.bytes::<2>(l4_off + ICMP_ECHO_ID).ok_or(())?;
                l4_csum = set_port(id, a.l4_src, l4_csum);
            } else {
                let ports = f.bytes::<4>(l4_off).ok_or(())?;
                if flags & act::SET_L4_SRC != 0 {
                    l4_csum = set_port(ports.field::<L4_SRC, 2>(), a.l4_src, l4_csum);
                }
                if flags & act::SET_L4_DST != 0 {
                    l4_csum = set_port(ports.field::<L4_DST, 2>(), a.l4_dst, l4_csum);
                }
            }
        }
        if csum_on {
            // In a UDP checksum 0 means "none": a computed 0 is sent as its
            // one's-complement twin 0xffff (RFC 768).
            if proto == IPPROTO_UDP && l4_csum == 0 {
                l4_csum = 0xffff;
            }
            csum_at.set_raw16::<0>(l4_csum);
        }
    }
    // The IP header after the transport header: the pseudo-header update
    // above reads the old addresses from the packet.
    let mut ip_csum = ip.raw16::<IP_CSUM>();
    if flags & act::SET_IP_SRC != 0 {
        ip_csum = set_addr(ip.field::<IP_SRC, 4>(), a.ip_src, ip_csum);
    }
    if flags & act::SET_IP_DST != 0 {
        ip_csum = set_addr(ip.field::<IP_DST, 4>(), a.ip_dst, ip_csum);
    }
    if flags & act::DEC_TTL != 0 {
        // The checksum covers TTL as half of the 16-bit word (TTL, protocol).
        // TTL > ttl_dec was checked above.
        let ttl_proto = ip.field::<IP_TTL, 2>();
        let old = ttl_proto.raw16::<0>();
        let ttl = ttl_proto.u8::<0>();
        ttl_proto.set_u8::<0>(ttl.wrapping_sub(ttl_dec(a)));
        ip_csum = checksum::replace2(ip_csum, old, ttl_proto.raw16::<0>());
    }
    ip.set_raw16::<IP_CSUM>(ip_csum);
    Ok(())
}

/// TTL decrement of a flow: one per router on its path (0 means 1).
#[inline(always)]
pub(crate) fn ttl_dec(a: &FlowActions) -> u8 {
    if a.ttl_dec == 0 {
        1
    } else {
        a.ttl_dec
    }
}

/// ICMP echo reply (0) or request (8), from the key's `type << 8 | code`.
#[inline(always)]
pub(crate) fn is_echo(type_code: u16) -> bool {
    let kind = type_code >> 8;
    kind == 0 || kind == 8
}

/// `csum` updated for the IPv4 address in `addr` becoming `new`, without
/// writing it: the transport checksum's pseudo-header.
#[inline(always)]
fn replace_addr_in_sum(csum: u16, addr: Bytes<'_, 4>, new: [u8; 4]) -> u16 {
    checksum::replace4(csum, addr.raw16::<0>(), addr.raw16::<2>(), new)
}

/// Writes a new IPv4 address; returns the updated IP header checksum.
#[inline(always)]
fn set_addr(addr: Bytes<'_, 4>, new: [u8; 4], ip_csum: u16) -> u16 {
    let csum = replace_addr_in_sum(ip_csum, addr, new);
    addr.set_raw32::<0>(u32::from_ne_bytes(new));
    csum
}

/// Writes a new port (or echo id), given in host order; returns the updated
/// transport checksum.
#[inline(always)]
fn set_port(field: Bytes<'_, 2>, port: u16, csum: u16) -> u16 {
    let old = field.raw16::<0>();
    let new = port.to_be();
    field.set_raw16::<0>(new);
    checksum::replace2(csum, old, new)
}
