//! Anti-spoofing at the exterior ports of bridges (SEMANTICS.md "Port
//! security and router hygiene"), as Neutron's and MidoNet's anti-spoof
//! chains do it.
//!
//! - With port security on, a guest may send only from the MACs its port
//!   owns, IPv4 only from the addresses those MACs own (a DHCP client's
//!   0.0.0.0 to port 67 excepted), and ARP only with an owned sender MAC
//!   and address (0.0.0.0 allowed: RFC 5227 probes).
//! - Whatever the setting, no guest's ARP may claim an address the network
//!   owns on the bridge (a router port, its NAT addresses, the DHCP
//!   server), nor carry a multicast sender MAC: such ARP is dropped before
//!   it is learned or flooded, so it cannot steer other guests' gateway
//!   traffic.
//!
//! Every field read here is in the flow key for IPv4 (MACs, addresses, the
//! UDP destination port), so IPv4 decisions may be installed; an ARP
//! decision reads the sender hardware address, which the key does not
//! hold, so ARP is never installed (`bridge::process`).
use super::{PortId, Walk};
use crate::packet::{self, Headers, IPPROTO_UDP, L3, L4};
use vnet_common::Reason;

/// The DHCP server port a client sends to from 0.0.0.0.
const DHCP_SERVER_PORT: u16 = 67;

/// Checks a frame entering bridge `bridge` by exterior port `port`. On a
/// violation the walk is ended (dropped, counted) and false returned.
pub(super) fn admit(walk: &mut Walk, bridge: usize, port: PortId, h: &Headers) -> bool {
    // What a port owns can come from its bridge (DHCP host entries): a
    // change there must reach an installed drop too.
    walk.tags.push(walk.snap.bridges[bridge].tag);
    match check(walk, bridge, port, h) {
        Ok(()) => true,
        Err(reason) => {
            // IPv4 and plain-MAC verdicts depend on key fields only: a
            // spoofer's later packets are dropped in the kernel.
            let install = !matches!(h.l3, L3::Arp(_));
            walk.drop(reason, install);
            false
        }
    }
}

fn check(walk: &Walk, bridge: usize, port: PortId, h: &Headers) -> Result<(), Reason> {
    if let L3::Arp(arp) = h.l3 {
        if packet::is_multicast(&arp.sha) || packet::is_multicast(&h.src) {
            return Err(Reason::SpoofedArp);
        }
        if walk.snap.bridges[bridge].network_addrs.contains(&arp.spa) {
            return Err(Reason::ArpClaimsNetworkAddress);
        }
    }
    let Some(sec) = &walk.snap.ports[port].security else {
        return Ok(());
    };
    if !sec.owns_mac(&h.src) {
        return Err(Reason::SpoofedMac);
    }
    match h.l3 {
        L3::Arp(arp) => {
            let sender_owned = arp.spa == [0; 4] || sec.owns_ip(&arp.sha, arp.spa);
            if arp.sha != h.src || !sender_owned {
                return Err(Reason::SpoofedArp);
            }
        }
        L3::Ipv4(ip, l4) => {
            let dhcp_client = ip.src == [0; 4]
                && ip.proto == IPPROTO_UDP
                && matches!(
                    l4,
                    L4::Ports {
                        dst: DHCP_SERVER_PORT,
                        ..
                    }
                );
            if !dhcp_client && !sec.owns_ip(&h.src, ip.src) {
                return Err(Reason::SpoofedIp);
            }
        }
        L3::Other => {}
    }
    Ok(())
}
