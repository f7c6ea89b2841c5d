//! Sending to ports on other hosts (issue 16): VXLAN over the underlay.
//!
//! The ingress host simulates the whole path; when the egress port is on
//! another host (`sim::Binding::Remote`), what userspace emits there (first
//! packets, floods, ARP answers) leaves through [`Tunnel::send`], a plain
//! UDP socket bound to this host's tunnel address: the host stack routes
//! it and resolves the next hop, so a first packet needs nothing of ours
//! on the underlay. The flow installed for the rest of the connection
//! encapsulates in the kernel (`act::ENCAP_VXLAN`) with the outer headers
//! [`Tunnel::encap`] works out: this needs the next hop's MAC, read from
//! the host's neighbour table, which the socket's first send fills; until
//! it is there, the flow is not installed and packets keep coming up.
//!
//! Flow state (`sim::flow_state`: connections and NAT bindings another host
//! will need for the replies) goes to the egress host's [`STATE_PORT`]
//! ahead of the packet, from the same host, so it is there first; the
//! underlay programs leave it to the host stack (it is not VXLAN).
//!
//! A peer on another subnet (a routed underlay) is reached through the
//! gateway of the underlay's route towards it ([`next_hop_in`], the main
//! routing table of `/proc/net/route`): the flow's outer Ethernet header is
//! addressed to that gateway's MAC, as the host stack would send it.
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use vnet_common::tunnel::{OVERHEAD, VXLAN_PORT};
use vnet_common::{Encap, FlowKey};

/// The UDP port flow-state messages go to on the tunnel addresses.
pub const STATE_PORT: u16 = 4799;

/// The VXLAN header (RFC 7348): flags with the I bit, reserved, the VNI in
/// the top 24 bits of the second word.
pub fn vxlan_header(vni: u32) -> [u8; 8] {
    let v = (vni << 8).to_be_bytes();
    [vnet_common::tunnel::FLAG_I, 0, 0, 0, v[0], v[1], v[2], v[3]]
}

/// The UDP source port of a flow's tunnel packets: a hash of its key, in
/// the dynamic range (RFC 7348 §5), so the underlay's ECMP spreads flows
/// and keeps each in order.
pub fn source_port(key: &FlowKey) -> u16 {
    // FNV-1a over the key's fields.
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    };
    eat(&key.ifindex.to_ne_bytes());
    eat(&key.eth_src);
    eat(&key.eth_dst);
    eat(&key.src);
    eat(&key.dst);
    eat(&[key.proto]);
    eat(&key.l4_src.to_ne_bytes());
    eat(&key.l4_dst.to_ne_bytes());
    49152 + (h & 0x3fff) as u16
}

/// The underlay interface: where tunnel packets leave and arrive.
#[derive(Debug, Clone)]
pub struct Underlay {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// How flows out of it are executed, as for a port of `executor: auto`
    /// (a veth underlay, as in the tests, takes the skb executor's
    /// redirects; XDP's would be lost unless its peer ran XDP).
    pub executor: vnet_model::Executor,
}

impl Underlay {
    /// Reads the interface's index, MAC and MTU.
    pub fn open(name: &str) -> Result<Underlay, String> {
        let ifindex = nix::net::if_::if_nametoindex(name).map_err(|e| {
            format!("underlay interface {name}: {e}; give an existing interface (--underlay)")
        })?;
        let read = |what: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{name}/{what}"))
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("underlay interface {name}: reading its {what}: {e}"))
        };
        let mac = parse_mac(&read("address")?)
            .ok_or_else(|| format!("underlay interface {name} has no Ethernet address"))?;
        let mtu = read("mtu")?
            .parse()
            .map_err(|e| format!("underlay interface {name}: its MTU: {e}"))?;
        let (executor, _) = crate::binding::resolve_executor(
            vnet_model::Executor::Auto,
            crate::veth::describe(name).as_ref(),
        );
        Ok(Underlay {
            name: name.to_string(),
            ifindex,
            mac,
            mtu,
            executor,
        })
    }

    /// The largest inner IPv4 packet a tunnel packet of this underlay
    /// carries (the inner Ethernet header is part of the overhead).
    pub fn inner_mtu(&self) -> u16 {
        self.mtu.saturating_sub(OVERHEAD).min(u32::from(u16::MAX)) as u16
    }
}

/// This host's end of the tunnels.
pub struct Tunnel {
    pub local: [u8; 4],
    pub underlay: Underlay,
    socket: UdpSocket,
    /// Bound to [`STATE_PORT`]: where the other hosts' flow state arrives.
    state: UdpSocket,
}

impl Tunnel {
    /// Opens the sending socket on `local`, this host's tunnel address,
    /// which must be an address of the host (on `underlay`).
    pub fn open(local: Ipv4Addr, underlay: Underlay) -> Result<Tunnel, String> {
        let socket = UdpSocket::bind(SocketAddrV4::new(local, 0)).map_err(|e| {
            format!(
                "cannot send tunnel packets from {local}: {e}; --tunnel-address must be an address of this host (on {})",
                underlay.name
            )
        })?;
        let state = UdpSocket::bind(SocketAddrV4::new(local, STATE_PORT)).map_err(|e| {
            format!("cannot receive flow state on {local}:{STATE_PORT}: {e}; is another vnetd running with this --tunnel-address?")
        })?;
        for s in [&socket, &state] {
            s.set_nonblocking(true)
                .map_err(|e| format!("tunnel socket: {e}"))?;
        }
        dont_fragment(&socket)?;
        Ok(Tunnel {
            local: local.octets(),
            underlay,
            socket,
            state,
        })
    }

    /// Sends `frame` to the host at `peer` for the port of tunnel key
    /// `vni`. False when the socket would block or failed (counted by the
    /// caller as a transmit drop).
    pub fn send(&self, peer: [u8; 4], vni: u32, frame: &[u8]) -> bool {
        let mut packet = Vec::with_capacity(8 + frame.len());
        packet.extend_from_slice(&vxlan_header(vni));
        packet.extend_from_slice(frame);
        let to = SocketAddrV4::new(Ipv4Addr::from(peer), VXLAN_PORT);
        self.socket.send_to(&packet, to).is_ok()
    }

    /// Sends a flow-state message to the host at `peer`.
    pub fn send_state(&self, peer: [u8; 4], message: &[u8]) -> bool {
        let to = SocketAddrV4::new(Ipv4Addr::from(peer), STATE_PORT);
        self.socket.send_to(message, to).is_ok()
    }

    /// The next flow-state message waiting, with its sender's address;
    /// `None` when there is none. `buf` must hold a whole message.
    pub fn receive_state<'b>(&self, buf: &'b mut [u8]) -> Option<([u8; 4], &'b [u8])> {
        match self.state.recv_from(buf) {
            Ok((n, std::net::SocketAddr::V4(from))) => Some((from.ip().octets(), &buf[..n])),
            Ok(_) | Err(_) => None,
        }
    }

    /// The flow-state socket, for the worker's poll.
    pub fn state_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.state.as_fd()
    }

    /// The outer headers of a flow towards the port of `vni` at `peer`, or
    /// `None` while the next hop's MAC is unknown (see the module comment).
    /// `known`: the next hop's MAC as the worker last checked it (every
    /// second, `moved_peers`), saving a read of the neighbour table per
    /// flow.
    pub fn encap(
        &self,
        peer: [u8; 4],
        vni: u32,
        key: &FlowKey,
        known: Option<[u8; 6]>,
    ) -> Option<Encap> {
        let eth_dst = known.or_else(|| neighbour(&self.underlay.name, peer))?;
        Some(Encap {
            vni,
            src: self.local,
            dst: peer,
            eth_src: self.underlay.mac,
            eth_dst,
            sport: source_port(key),
            _pad: [0; 6],
        })
    }
}

/// Sets DF on what `socket` sends and never fragments it: the receiving
/// decapsulator takes no fragments, so a frame too big for the underlay is
/// refused here (the send fails, counted `tunnel_tx_failed`) instead of
/// being lost there.
fn dont_fragment(socket: &UdpSocket) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: a valid socket and a c_int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "tunnel socket: setting IP_MTU_DISCOVER: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// The MAC of the next hop towards `peer` out of `dev`, from the host's
/// neighbour table (`/proc/net/arp`, complete entries only).
fn neighbour(dev: &str, peer: [u8; 4]) -> Option<[u8; 6]> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    neighbour_in(&table, dev, next_hop(dev, peer))
}

/// The next hop towards `peer` out of `dev` ([`next_hop_in`]).
fn next_hop(dev: &str, peer: [u8; 4]) -> [u8; 4] {
    match std::fs::read_to_string("/proc/net/route") {
        Ok(routes) => next_hop_in(&routes, dev, peer),
        Err(_) => peer,
    }
}

/// The gateway of the most specific route of `dev` holding `peer` (lowest
/// metric among equals) in the text of `/proc/net/route`, or `peer` itself
/// when that route is on-link or there is none. The file's addresses are
/// the kernel's network-order words printed as native integers in hex.
fn next_hop_in(routes: &str, dev: &str, peer: [u8; 4]) -> [u8; 4] {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let peer_u = u32::from_be_bytes(peer);
    let mut best: Option<(u32, u32, [u8; 4], bool)> = None; // (mask, metric, gw, via)
    for line in routes.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != dev {
            continue;
        }
        let (Some(dst), Some(gw), Some(mask)) = (word(f[1]), word(f[2]), word(f[7])) else {
            continue;
        };
        let (Ok(flags), Ok(metric)) = (u32::from_str_radix(f[3], 16), f[6].parse::<u32>()) else {
            continue;
        };
        let (dst, mask_u) = (u32::from_be_bytes(dst), u32::from_be_bytes(mask));
        if flags & RTF_UP == 0 || peer_u & mask_u != dst & mask_u {
            continue;
        }
        let better = match best {
            None => true,
            Some((m, met, ..)) => {
                mask_u.count_ones() > m.count_ones() || (mask_u == m && metric < met)
            }
        };
        if better {
            best = Some((mask_u, metric, gw, flags & RTF_GATEWAY != 0));
        }
    }
    match best {
        Some((_, _, gw, true)) => gw,
        _ => peer,
    }
}

impl Tunnel {
    /// Which of `peers` (address → the MAC flows were installed with) no
    /// longer have that MAC on the underlay: their flows must go. `None`
    /// when the table cannot be read (nothing is judged then).
    pub fn moved_peers(&self, peers: &[([u8; 4], [u8; 6])]) -> Option<Vec<[u8; 4]>> {
        let table = std::fs::read_to_string("/proc/net/arp").ok()?;
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let dev = &self.underlay.name;
        Some(
            peers
                .iter()
                .filter(|(ip, mac)| {
                    neighbour_in(&table, dev, next_hop_in(&routes, dev, *ip)) != Some(*mac)
                })
                .map(|(ip, _)| *ip)
                .collect(),
        )
    }
}

/// [`neighbour`] on the text of `/proc/net/arp`: "IP address, HW type,
/// Flags, HW address, Mask, Device", a header line first; flag 0x2 is a
/// complete entry.
fn neighbour_in(table: &str, dev: &str, ip: [u8; 4]) -> Option<[u8; 6]> {
    let want = Ipv4Addr::from(ip).to_string();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let complete = f
            .get(2)
            .and_then(|x| u32::from_str_radix(x.trim_start_matches("0x"), 16).ok())
            .is_some_and(|flags| flags & 0x2 != 0);
        if f.len() >= 6 && f[0] == want && f[5] == dev && complete {
            parse_mac(f[3])
        } else {
            None
        }
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vxlan_header_carries_the_i_flag_and_the_vni() {
        assert_eq!(
            vxlan_header(0x12_3456),
            [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]
        );
    }

    #[test]
    fn source_ports_are_dynamic_and_follow_the_flow() {
        let a = FlowKey {
            l4_src: 1000,
            ..FlowKey::default()
        };
        let b = FlowKey { l4_src: 1001, ..a };
        assert!(source_port(&a) >= 49152 && source_port(&b) >= 49152);
        assert_eq!(source_port(&a), source_port(&a.clone()));
        assert_ne!(source_port(&a), source_port(&b));
    }

    #[test]
    fn only_complete_entries_on_the_underlay_count() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     192.0.2.2        0x1         0x2         02:00:00:00:00:02     *        u1\n\
                     192.0.2.3        0x1         0x0         00:00:00:00:00:00     *        u1\n\
                     192.0.2.4        0x1         0x2         02:00:00:00:00:04     *        eth9\n";
        assert_eq!(
            neighbour_in(table, "u1", [192, 0, 2, 2]),
            Some([2, 0, 0, 0, 0, 2])
        );
        assert_eq!(
            neighbour_in(table, "u1", [192, 0, 2, 3]),
            None,
            "incomplete"
        );
        assert_eq!(
            neighbour_in(table, "u1", [192, 0, 2, 4]),
            None,
            "another interface"
        );
        assert_eq!(neighbour_in(table, "u1", [192, 0, 2, 9]), None);
    }

    #[test]
    fn a_peer_on_another_subnet_is_reached_through_its_routes_gateway() {
        // 192.0.2.0/24 on-link, 198.51.100.0/24 via 192.0.2.254, a default
        // via 192.0.2.1, a more specific /32 via .253, another device's
        // route, and a route that is down.
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            u1\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            u1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            u1\t006433C6\tFE0200C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            u1\t096433C6\tFD0200C0\t0003\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
            eth9\t000071CB\t0A0A0A0A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            u1\t000071CB\t070200C0\t0002\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let hop = |ip| next_hop_in(routes, "u1", ip);
        assert_eq!(hop([192, 0, 2, 7]), [192, 0, 2, 7], "on-link");
        assert_eq!(hop([198, 51, 100, 5]), [192, 0, 2, 254]);
        assert_eq!(hop([198, 51, 100, 9]), [192, 0, 2, 253], "the /32 wins");
        assert_eq!(
            hop([203, 0, 113, 5]),
            [192, 0, 2, 1],
            "down route, other device: default"
        );
        assert_eq!(next_hop_in("", "u1", [203, 0, 113, 5]), [203, 0, 113, 5]);
    }
}
