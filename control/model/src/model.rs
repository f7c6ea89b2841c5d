//! The topology model: serde types for the whole topology file format
//! (TOPOLOGY.md, format version 1).
//!
//! The types mirror the file one to one, so that a file read, applied and
//! read back (`vnetctl get -o yaml`) is equivalent to the original. Every
//! struct denies unknown fields: a misspelt key is an error, not a silently
//! ignored setting. Serialization skips absent, empty and default fields, so
//! `parse(to_yaml(parse(x))) == parse(x)`.
//!
//! Parsing checks shape only (types, required fields, field combinations of a
//! rule or NAT intent); everything that relates objects to each other is
//! checked by [`Topology::validate`](crate::Topology::validate).
//!
//! Where TOPOLOGY.md is silent, this model chose:
//! - A rule's `then` defaults to `accept`; `reject_with` defaults to
//!   `icmp-admin-prohibited` (MidoNet's REJECT, ICMP 3/13). A field that does
//!   not belong to the rule's action (`chain` on `accept`) is an error.
//! - A normal route may leave out `port` when `via` lies in a port's subnet;
//!   the port is then the one of that subnet ([`Router::route_port`]).
//! - A DHCP subnet requires `server` (option 54: dhcpcd ignores replies
//!   without it). Static hosts may carry extra `options` (SEMANTICS.md).
//! - A NAT intent requires `port`, the router port on the public side.
//! - `not` may list any condition field except `fragments`, and only fields
//!   the condition sets.
//! - Device, port, chain and group names are 1 to 64 of `A-Z a-z 0-9 - _ .`
//!   (validation), so that `device/port` references and error paths need no
//!   quoting.
//! - A map of named objects with a name given twice is an error (serde would
//!   silently keep the last).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

mod serde_util;
mod values;

use serde_util::{cidr, cidr_opt, default_true, is_false, is_true, unique_map};
pub use values::*;

/// The format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// A whole topology file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub version: u32,
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub bridges: BTreeMap<String, Bridge>,
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub routers: BTreeMap<String, Router>,
    /// Rule chains by name; rules run in order.
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// IP address groups by name, for `src_group` / `dst_group`.
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub ip_groups: BTreeMap<String, Vec<Ipv4Addr>>,
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_groups: BTreeMap<String, PortGroup>,
    /// High-level NAT intents, compiled into rules on the router's chains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat: Vec<NatIntent>,
    /// Ingress firewalls on public addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firewall: Vec<FirewallIntent>,
    // Last, so that errors listing the sections name the older ones first.
    /// The hosts (vnetd agents) ports may be placed on, by name: a port's
    /// `host` names one. Hosts also register themselves in a shared store
    /// (`vnetd --host NAME`); listing one here makes it known (and shown
    /// dead) before it does.
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub hosts: BTreeMap<String, Host>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            version: FORMAT_VERSION,
            hosts: BTreeMap::new(),
            bridges: BTreeMap::new(),
            routers: BTreeMap::new(),
            chains: BTreeMap::new(),
            ip_groups: BTreeMap::new(),
            port_groups: BTreeMap::new(),
            nat: Vec::new(),
            firewall: Vec::new(),
        }
    }
}

/// A host of the `hosts:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Its address on the underlay: where VXLAN from the other hosts goes.
    pub tunnel_address: Ipv4Addr,
}

/// A port of either kind, as found by [`Topology::port`].
#[derive(Debug, Clone, Copy)]
pub enum AnyPort<'a> {
    Bridge(&'a BridgePort),
    Router(&'a RouterPort),
}

impl AnyPort<'_> {
    pub fn peer(&self) -> Option<&PortRef> {
        match self {
            AnyPort::Bridge(p) => p.peer.as_ref(),
            AnyPort::Router(p) => p.peer.as_ref(),
        }
    }

    pub fn interface(&self) -> Option<&str> {
        match self {
            AnyPort::Bridge(p) => p.interface.as_deref(),
            AnyPort::Router(p) => p.interface.as_deref(),
        }
    }

    /// The host whose vnetd binds the port's interface (absent: any).
    pub fn host(&self) -> Option<&str> {
        match self {
            AnyPort::Bridge(p) => p.host.as_deref(),
            AnyPort::Router(p) => p.host.as_deref(),
        }
    }

    /// The port's VXLAN network identifier (see `BridgePort::tunnel_key`).
    pub fn tunnel_key(&self) -> Option<u32> {
        match self {
            AnyPort::Bridge(p) => p.tunnel_key,
            AnyPort::Router(p) => p.tunnel_key,
        }
    }
}

impl Topology {
    /// Every port of every device: (its section, `bridges` or `routers`,
    /// the device's name, the port's name, the port).
    pub fn ports(&self) -> impl Iterator<Item = (&'static str, &str, &str, AnyPort<'_>)> {
        let bridges = self.bridges.iter().flat_map(|(d, b)| {
            b.ports
                .iter()
                .map(move |(p, port)| ("bridges", d.as_str(), p.as_str(), AnyPort::Bridge(port)))
        });
        let routers = self.routers.iter().flat_map(|(d, r)| {
            r.ports
                .iter()
                .map(move |(p, port)| ("routers", d.as_str(), p.as_str(), AnyPort::Router(port)))
        });
        bridges.chain(routers)
    }

    /// Looks up `device/port` among bridges, then routers.
    pub fn port(&self, r: &PortRef) -> Option<AnyPort<'_>> {
        if let Some(b) = self.bridges.get(&r.device) {
            return b.ports.get(&r.port).map(AnyPort::Bridge);
        }
        self.routers
            .get(&r.device)?
            .ports
            .get(&r.port)
            .map(AnyPort::Router)
    }
}

// ---------------------------------------------------------------------------
// Bridges

/// A virtual L2 bridge (MidoNet "Network").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_filter: Option<String>,
    /// Static MAC → port entries (never aged out, never moved by learning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mac_table: Vec<StaticMac>,
    /// IP → MAC entries the bridge answers ARP requests for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arp_table: Vec<StaticArp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcp: Vec<DhcpSubnet>,
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub ports: BTreeMap<String, BridgePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMac {
    pub mac: MacAddr,
    /// A port of the same bridge.
    pub port: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticArp {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// A bridge port: exterior (bound to `interface`), interior (linked to a
/// router port by `peer`), or unbound (neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The host (of `hosts:`) whose vnetd binds `interface`; absent: any
    /// vnetd (the single-host case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The VXLAN network identifier other hosts reach this port by (issue
    /// 16): given by the store to every port placed on a host (`host:`)
    /// and kept while the port exists, so it is the same on every host and
    /// across restarts (`Topology::keep_tunnel_keys`). May be written
    /// (1-16777214, unique); an apply without it keeps the one given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_key: Option<u32>,
    /// Which kernel program runs the port's flows (see [`Executor`]).
    #[serde(default, skip_serializing_if = "Executor::is_auto")]
    pub executor: Executor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PortRef>,
    /// 802.1Q VLAN id (1-4094) of the traffic of this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_filter: Option<String>,
    /// Administrative state; a down port neither receives nor sends.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub up: bool,
    /// Anti-spoofing: frames whose source MAC or IPv4 address (and ARP
    /// whose sender) the port does not own are dropped. Absent: on when
    /// the port owns addresses (`addresses` or `allowed_address_pairs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<bool>,
    /// The MAC/IP pairs the port owns (`"MAC IP"`, or `"MAC"` alone: its IPs
    /// are then the bridge's DHCP host entries for that MAC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<PortAddress>,
    /// More sources the port may use (`"IP"`, `"IP/LEN"` or `"MAC IP"`), as
    /// Neutron's allowed address pairs (a VIP shared by two VMs, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_address_pairs: Vec<PortAddress>,
    /// The VIF (a cloud's NIC id) this port is for, MidoNet's `vifId`: a
    /// label the orchestrator finds the port by to bind the NIC's tap
    /// (docs/MIDONET.md). Forwarding does not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vif_id: Option<String>,
}

impl BridgePort {
    /// Whether port security applies (see `port_security`).
    pub fn port_security_on(&self) -> bool {
        self.port_security
            .unwrap_or(!self.addresses.is_empty() || !self.allowed_address_pairs.is_empty())
    }
}

impl Default for BridgePort {
    fn default() -> Self {
        BridgePort {
            interface: None,
            host: None,
            tunnel_key: None,
            executor: Executor::Auto,
            peer: None,
            vlan: None,
            inbound_filter: None,
            outbound_filter: None,
            up: true,
            port_security: None,
            addresses: Vec::new(),
            allowed_address_pairs: Vec::new(),
            vif_id: None,
        }
    }
}

// ---------------------------------------------------------------------------
// DHCP

/// A subnet a bridge serves DHCP on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpSubnet {
    #[serde(deserialize_with = "cidr")]
    pub subnet: Ipv4Net,
    /// Server identifier (option 54) and source address of replies.
    pub server: Ipv4Addr,
    /// Default gateway (option 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Interface MTU (option 26).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u32>,
    /// Classless static routes (option 121).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<DhcpRoute>,
    /// Static MAC → IP assignments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<DhcpHost>,
    /// Dynamic address pool (vnet extension over MidoNet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Ipv4Range>,
    /// A disabled subnet answers nothing.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpRoute {
    #[serde(deserialize_with = "cidr")]
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpHost {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Host name (option 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extra options sent to this host (vnet extension: SEMANTICS.md's "extra
    /// options" of a static host entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<DhcpOption>,
}

/// One extra DHCP option. The value is given in exactly one of three forms:
/// `text` (sent as its bytes), `hex` (bytes as hex digits, `:` allowed
/// between bytes) or `ips` (a list of IPv4 addresses, 4 bytes each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpOption {
    pub code: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Ipv4Addr>,
}

impl DhcpOption {
    /// The option's value bytes, or `None` if the value is not given in
    /// exactly one well-formed form (validation reports why).
    pub fn value(&self) -> Option<Vec<u8>> {
        match (&self.text, &self.hex, self.ips.is_empty()) {
            (Some(t), None, true) => Some(t.as_bytes().to_vec()),
            (None, Some(h), true) => decode_hex(h),
            (None, None, false) => Some(self.ips.iter().flat_map(|ip| ip.octets()).collect()),
            _ => None,
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b':').collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Routers

/// A virtual L3 router.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Pre-routing chain (DNAT, reverse SNAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_filter: Option<String>,
    /// Post-routing chain (SNAT, reverse DNAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_filter: Option<String>,
    #[serde(
        default,
        deserialize_with = "unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub ports: BTreeMap<String, RouterPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

impl Router {
    /// The port whose subnet contains `addr`, if any (port subnets of a valid
    /// router do not overlap, so there is at most one).
    pub fn port_for(&self, addr: Ipv4Addr) -> Option<(&str, &RouterPort)> {
        self.ports
            .iter()
            .find(|(_, p)| p.address.contains(&addr))
            .map(|(name, p)| (name.as_str(), p))
    }

    /// The egress port of a normal route: its `port`, or else the port whose
    /// subnet contains `via`.
    pub fn route_port<'a>(&'a self, route: &'a Route) -> Option<&'a str> {
        if route.kind != RouteType::Normal {
            return None;
        }
        match (&route.port, route.via) {
            (Some(p), _) => Some(p.as_str()),
            (None, Some(via)) => self.port_for(via).map(|(name, _)| name),
            (None, None) => None,
        }
    }
}

pub const DEFAULT_MTU: u16 = 1500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterPort {
    /// The port's own address and the prefix of its subnet.
    #[serde(deserialize_with = "cidr")]
    pub address: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The host (of `hosts:`) whose vnetd binds `interface`; absent: any
    /// vnetd (the single-host case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The VXLAN network identifier other hosts reach this port by (issue
    /// 16): given by the store to every port placed on a host (`host:`)
    /// and kept while the port exists, so it is the same on every host and
    /// across restarts (`Topology::keep_tunnel_keys`). May be written
    /// (1-16777214, unique); an apply without it keeps the one given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_key: Option<u32>,
    /// Which kernel program runs the port's flows (see [`Executor`]).
    #[serde(default, skip_serializing_if = "Executor::is_auto")]
    pub executor: Executor,
    /// A bridge port or another router's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_filter: Option<String>,
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub up: bool,
    /// Reverse-path check on packets entering through this port. Absent:
    /// `loose` on a port the router's default route leaves by (an uplink:
    /// anything may arrive there, and paths may be asymmetric), `strict`
    /// elsewhere (only the networks routed through a port, and its own
    /// subnet, may send from behind it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_path: Option<ReversePath>,
}

/// The kernel program that executes the flows of an exterior port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Executor {
    /// `skb` on veth and tap (guest interfaces), `xdp` on anything else
    /// (physical NICs, uplinks).
    #[default]
    Auto,
    /// XDP: fastest per packet, but it sees neither GSO super-frames nor
    /// partial checksums, and on a veth it turns GSO off on the peer.
    Xdp,
    /// tc (skb): keeps a guest's offloads (GSO, partial checksums).
    Skb,
}

impl Executor {
    pub fn is_auto(&self) -> bool {
        *self == Executor::Auto
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Auto => "auto",
            Executor::Xdp => "xdp",
            Executor::Skb => "skb",
        }
    }
}

/// RFC 3704 reverse-path filtering of a router port's incoming packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReversePath {
    /// The route back to the source must leave by the ingress port.
    Strict,
    /// Some route back to the source must exist (not a blackhole/reject).
    Loose,
    Off,
}

impl ReversePath {
    pub fn as_str(self) -> &'static str {
        match self {
            ReversePath::Strict => "strict",
            ReversePath::Loose => "loose",
            ReversePath::Off => "off",
        }
    }
}

impl std::fmt::Display for ReversePath {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReversePath {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "strict" => Ok(ReversePath::Strict),
            "loose" => Ok(ReversePath::Loose),
            "off" => Ok(ReversePath::Off),
            _ => Err(ValueError(format!("`{s}` is not strict, loose or off"))),
        }
    }
}

impl RouterPort {
    /// A port with this address and every other field at its default.
    pub fn new(address: Ipv4Net) -> Self {
        RouterPort {
            address,
            mac: None,
            mtu: None,
            interface: None,
            host: None,
            tunnel_key: None,
            executor: Executor::Auto,
            peer: None,
            inbound_filter: None,
            outbound_filter: None,
            up: true,
            reverse_path: None,
        }
    }

    /// The reverse-path check in force (see `reverse_path`).
    pub fn effective_reverse_path(&self, router: &Router, name: &str) -> ReversePath {
        self.reverse_path.unwrap_or_else(|| {
            let default_route_here = router
                .routes
                .iter()
                .any(|r| r.dst.prefix_len() == 0 && router.route_port(r) == Some(name));
            if default_route_here {
                ReversePath::Loose
            } else {
                ReversePath::Strict
            }
        })
    }

    /// The configured MAC, or one derived from the names.
    ///
    /// The derived MAC is `02:` followed by the low 40 bits (big-endian) of
    /// the 64-bit FNV-1a hash of `"<router>/<port>"`. `02` makes it a locally
    /// administered unicast address; hashing the names (not a store id or a
    /// counter) keeps it stable across restarts, re-applies and hosts, so
    /// neighbours' ARP caches stay right.
    pub fn effective_mac(&self, router: &str, port: &str) -> MacAddr {
        self.mac.unwrap_or_else(|| derived_mac(router, port))
    }

    pub fn effective_mtu(&self) -> u16 {
        self.mtu.unwrap_or(DEFAULT_MTU)
    }
}

fn derived_mac(router: &str, port: &str) -> MacAddr {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for b in router.bytes().chain([b'/']).chain(port.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    let b = h.to_be_bytes();
    MacAddr([0x02, b[3], b[4], b[5], b[6], b[7]])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteType {
    /// Forward out of a port, to `via` or on-link.
    #[default]
    Normal,
    /// Drop silently.
    Blackhole,
    /// Drop and answer ICMP 3/13 (administratively prohibited).
    Reject,
}

impl RouteType {
    fn is_normal(&self) -> bool {
        *self == RouteType::Normal
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(deserialize_with = "cidr")]
    pub dst: Ipv4Net,
    #[serde(
        default,
        deserialize_with = "cidr_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub src: Option<Ipv4Net>,
    /// Egress port; may be omitted when `via` lies in a port's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Next-hop gateway; absent means the destination is on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Ipv4Addr>,
    #[serde(rename = "type", default, skip_serializing_if = "RouteType::is_normal")]
    pub kind: RouteType,
    /// Among routes with the same prefix, the lowest weight wins; equal
    /// weights share the traffic (ECMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Route {
    pub fn new(dst: Ipv4Net) -> Self {
        Route {
            dst,
            src: None,
            port: None,
            via: None,
            kind: RouteType::Normal,
            weight: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Chains and rules

/// One rule of a chain: a condition and what to do when it matches.
///
/// In the file a rule is a flat map (`action`, `match`, and the fields the
/// action takes); here the action carries exactly its own fields, so an
/// impossible rule (a `jump` without `chain`) cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RuleRepr", into = "RuleRepr")]
pub struct Rule {
    pub action: Action,
    /// The file's `match`; empty matches every packet.
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    /// Router: ICMP 3/13 by default, or what `with` asks; bridge: drop.
    Reject {
        with: RejectWith,
    },
    Continue,
    Return,
    Jump {
        chain: String,
    },
    Dnat {
        to: NatTarget,
        then: FlowAction,
    },
    Snat {
        to: NatTarget,
        then: FlowAction,
    },
    RevDnat {
        then: FlowAction,
    },
    RevSnat {
        then: FlowAction,
    },
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Accept => ActionKind::Accept,
            Action::Drop => ActionKind::Drop,
            Action::Reject { .. } => ActionKind::Reject,
            Action::Continue => ActionKind::Continue,
            Action::Return => ActionKind::Return,
            Action::Jump { .. } => ActionKind::Jump,
            Action::Dnat { .. } => ActionKind::Dnat,
            Action::Snat { .. } => ActionKind::Snat,
            Action::RevDnat { .. } => ActionKind::RevDnat,
            Action::RevSnat { .. } => ActionKind::RevSnat,
        }
    }
}

/// The `action:` keyword of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Accept,
    Drop,
    Reject,
    Continue,
    Return,
    Jump,
    Dnat,
    Snat,
    RevDnat,
    RevSnat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectWith {
    /// ICMP 3/13, MidoNet's REJECT.
    #[default]
    IcmpAdminProhibited,
    /// ICMP 3/3 (vnet extension).
    IcmpPortUnreachable,
    /// TCP RST (vnet extension).
    TcpReset,
}

/// What happens after a NAT rule rewrote the packet (MidoNet's flow action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowAction {
    #[default]
    Accept,
    Continue,
    Return,
}

/// The target of a `dnat` / `snat` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatTarget {
    pub ip: Ipv4Range,
    /// Absent or `0`: static 1:1 NAT (address only, stateless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

impl NatTarget {
    /// Static (floating-IP style) NAT: only the address is rewritten.
    pub fn is_static(&self) -> bool {
        self.ports.is_none_or(|p| p.is_zero())
    }
}

/// The flat form of a rule in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleRepr {
    pub(crate) action: ActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reject_with: Option<RejectWith>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) to: Option<NatTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) then: Option<FlowAction>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub(crate) condition: Option<Condition>,
}

impl TryFrom<RuleRepr> for Rule {
    type Error = String;

    fn try_from(r: RuleRepr) -> Result<Rule, String> {
        use ActionKind as K;
        let kind = r.action;
        let name = serde_name(kind);
        // Fields that belong to another action are errors rather than being
        // ignored: they usually mean the operator chose the wrong action.
        if r.reject_with.is_some() && kind != K::Reject {
            return Err(format!(
                "reject_with is only valid with action reject, not {name}"
            ));
        }
        if r.chain.is_some() && kind != K::Jump {
            return Err(format!("chain is only valid with action jump, not {name}"));
        }
        if r.to.is_some() && !matches!(kind, K::Dnat | K::Snat) {
            return Err(format!(
                "to is only valid with actions dnat and snat, not {name}"
            ));
        }
        let nat = matches!(kind, K::Dnat | K::Snat | K::RevDnat | K::RevSnat);
        if r.then.is_some() && !nat {
            return Err(format!(
                "then is only valid with actions dnat, snat, rev_dnat and rev_snat, not {name}"
            ));
        }
        let then = r.then.unwrap_or_default();
        let need_to = |to: Option<NatTarget>| {
            to.ok_or_else(|| {
                format!("action {name} needs `to: {{ip: .., ports: ..}}`, the translated address")
            })
        };
        let action = match kind {
            K::Accept => Action::Accept,
            K::Drop => Action::Drop,
            K::Reject => Action::Reject {
                with: r.reject_with.unwrap_or_default(),
            },
            K::Continue => Action::Continue,
            K::Return => Action::Return,
            K::Jump => Action::Jump {
                chain: r
                    .chain
                    .ok_or("action jump needs `chain`, the name of the chain to jump to")?,
            },
            K::Dnat => Action::Dnat {
                to: need_to(r.to)?,
                then,
            },
            K::Snat => Action::Snat {
                to: need_to(r.to)?,
                then,
            },
            K::RevDnat => Action::RevDnat { then },
            K::RevSnat => Action::RevSnat { then },
        };
        Ok(Rule {
            action,
            condition: r.condition.unwrap_or_default(),
        })
    }
}

impl From<Rule> for RuleRepr {
    fn from(rule: Rule) -> RuleRepr {
        let mut r = RuleRepr {
            action: rule.action.kind(),
            reject_with: None,
            chain: None,
            to: None,
            then: None,
            condition: (!rule.condition.is_empty()).then_some(rule.condition),
        };
        // Defaults (reject_with icmp-admin-prohibited, then accept) are left
        // out, as an operator would leave them out.
        let then = |t: FlowAction| (t != FlowAction::Accept).then_some(t);
        match rule.action {
            Action::Reject { with } => {
                r.reject_with = (with != RejectWith::default()).then_some(with);
            }
            Action::Jump { chain } => r.chain = Some(chain),
            Action::Dnat { to, then: t } | Action::Snat { to, then: t } => {
                r.to = Some(to);
                r.then = then(t);
            }
            Action::RevDnat { then: t } | Action::RevSnat { then: t } => r.then = then(t),
            Action::Accept | Action::Drop | Action::Continue | Action::Return => {}
        }
        r
    }
}

fn serde_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Accept => "accept",
        ActionKind::Drop => "drop",
        ActionKind::Reject => "reject",
        ActionKind::Continue => "continue",
        ActionKind::Return => "return",
        ActionKind::Jump => "jump",
        ActionKind::Dnat => "dnat",
        ActionKind::Snat => "snat",
        ActionKind::RevDnat => "rev_dnat",
        ActionKind::RevSnat => "rev_snat",
    }
}

/// Connection-tracking state a condition can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Forward direction of a tracked connection (the first packet creates it).
    Forward,
    /// A reply of a tracked connection.
    Return,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragmentPolicy {
    Any,
    /// Unfragmented packets and first fragments.
    Header,
    /// Later fragments.
    Nonheader,
    Unfragmented,
}

/// The condition of a rule (`match`). Every field is optional and an unset
/// field matches everything; fields named in `not` are inverted one by one,
/// and `invert` inverts the whole condition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_ports: Vec<PortRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_ports: Vec<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_src: Option<MacMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_dst: Option<MacMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos: Option<u8>,
    #[serde(
        default,
        deserialize_with = "cidr_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub src: Option<Ipv4Net>,
    #[serde(
        default,
        deserialize_with = "cidr_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub dst: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConnState>,
    /// Matches packets whose destination was (or, when false, was not)
    /// rewritten by DNAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnat_rewritten: Option<bool>,
    /// Default: `header` when L4 fields are set, otherwise `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragments: Option<FragmentPolicy>,
    /// Fields of this condition that are inverted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not: Vec<ConditionField>,
    /// Inverts the whole condition.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert: bool,
}

impl Condition {
    /// True for the empty condition, which matches every packet.
    pub fn is_empty(&self) -> bool {
        *self == Condition::default()
    }

    /// Whether the field has a value (an empty port list counts as unset).
    pub fn is_set(&self, field: ConditionField) -> bool {
        use ConditionField as F;
        match field {
            F::InPorts => !self.in_ports.is_empty(),
            F::OutPorts => !self.out_ports.is_empty(),
            F::PortGroup => self.port_group.is_some(),
            F::Ethertype => self.ethertype.is_some(),
            F::EthSrc => self.eth_src.is_some(),
            F::EthDst => self.eth_dst.is_some(),
            F::Protocol => self.protocol.is_some(),
            F::Tos => self.tos.is_some(),
            F::Src => self.src.is_some(),
            F::Dst => self.dst.is_some(),
            F::SrcGroup => self.src_group.is_some(),
            F::DstGroup => self.dst_group.is_some(),
            F::SrcPorts => self.src_ports.is_some(),
            F::DstPorts => self.dst_ports.is_some(),
            F::IcmpType => self.icmp_type.is_some(),
            F::IcmpCode => self.icmp_code.is_some(),
            F::Conntrack => self.conntrack.is_some(),
            F::DnatRewritten => self.dnat_rewritten.is_some(),
            F::Fragments => self.fragments.is_some(),
        }
    }

    /// Whether `not` lists the field.
    pub fn is_inverted(&self, field: ConditionField) -> bool {
        self.not.contains(&field)
    }
}

/// The name of a field of [`Condition`], as listed in `not`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionField {
    InPorts,
    OutPorts,
    PortGroup,
    Ethertype,
    EthSrc,
    EthDst,
    Protocol,
    Tos,
    Src,
    Dst,
    SrcGroup,
    DstGroup,
    SrcPorts,
    DstPorts,
    IcmpType,
    IcmpCode,
    Conntrack,
    DnatRewritten,
    Fragments,
}

impl ConditionField {
    /// The field's name in the file.
    pub fn name(&self) -> &'static str {
        use ConditionField as F;
        match self {
            F::InPorts => "in_ports",
            F::OutPorts => "out_ports",
            F::PortGroup => "port_group",
            F::Ethertype => "ethertype",
            F::EthSrc => "eth_src",
            F::EthDst => "eth_dst",
            F::Protocol => "protocol",
            F::Tos => "tos",
            F::Src => "src",
            F::Dst => "dst",
            F::SrcGroup => "src_group",
            F::DstGroup => "dst_group",
            F::SrcPorts => "src_ports",
            F::DstPorts => "dst_ports",
            F::IcmpType => "icmp_type",
            F::IcmpCode => "icmp_code",
            F::Conntrack => "conntrack",
            F::DnatRewritten => "dnat_rewritten",
            F::Fragments => "fragments",
        }
    }
}

// ---------------------------------------------------------------------------
// Groups

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroup {
    /// Member ports, `device/port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRef>,
    /// Members share connection-tracking and NAT state (asymmetric return
    /// paths).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stateful: bool,
}

// ---------------------------------------------------------------------------
// Intents

/// A high-level NAT request, compiled into rules on the router's chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NatIntent {
    /// Source NAT of a private prefix to a public address (range).
    Snat(SnatIntent),
    /// Static 1:1 NAT of a private address to a public one.
    FloatingIp(FloatingIpIntent),
    /// A public port range forwarded to a private one of the same size,
    /// offset-preserving.
    PortForward(PortForwardIntent),
}

impl NatIntent {
    pub fn router(&self) -> &str {
        match self {
            NatIntent::Snat(n) => &n.router,
            NatIntent::FloatingIp(n) => &n.router,
            NatIntent::PortForward(n) => &n.router,
        }
    }

    /// The router port on the public side.
    pub fn port(&self) -> &str {
        match self {
            NatIntent::Snat(n) => &n.port,
            NatIntent::FloatingIp(n) => &n.port,
            NatIntent::PortForward(n) => &n.port,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatIntent {
    pub router: String,
    /// Private sources to translate.
    #[serde(deserialize_with = "cidr")]
    pub from: Ipv4Net,
    pub to: Ipv4Range,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    pub port: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpIntent {
    pub router: String,
    pub public: Ipv4Addr,
    pub private: Ipv4Addr,
    pub port: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForwardIntent {
    pub router: String,
    /// tcp or udp.
    pub protocol: Protocol,
    pub public: Ipv4Addr,
    pub public_ports: PortRange,
    pub private: Ipv4Addr,
    pub private_ports: PortRange,
    pub port: String,
}

/// An ingress firewall on a public address of a router: traffic towards it
/// from outside is dropped unless an `allow` entry matches; replies of
/// connections opened from inside always pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallIntent {
    pub router: String,
    pub public: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<FirewallAllow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallAllow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Destination ports (tcp/udp only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    /// Allowed sources; absent means anywhere.
    #[serde(
        default,
        deserialize_with = "cidr_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<Ipv4Net>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_mac_is_stable_local_unicast_and_name_dependent() {
        let p = RouterPort::new("10.0.0.1/24".parse().unwrap());
        let a = p.effective_mac("edge", "uplink");
        assert_eq!(a, p.effective_mac("edge", "uplink"));
        assert_eq!(a.0[0], 0x02);
        assert!(a.is_unicast() && a.is_locally_administered());
        assert_ne!(a, p.effective_mac("edge", "tenant"));
        // Pin the derivation: changing it would change every derived MAC in
        // deployed networks.
        assert_eq!(p.effective_mac("r", "p").to_string(), "02:19:61:c9:a6:da");
        let configured = RouterPort {
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            ..p.clone()
        };
        assert_eq!(
            configured.effective_mac("edge", "uplink").to_string(),
            "02:00:00:00:00:01"
        );
        assert_eq!(p.effective_mtu(), 1500);
    }

    #[test]
    fn dhcp_option_value_forms() {
        let opt = |text: Option<&str>, hex: Option<&str>, ips: Vec<Ipv4Addr>| DhcpOption {
            code: 252,
            text: text.map(String::from),
            hex: hex.map(String::from),
            ips,
        };
        assert_eq!(opt(Some("ab"), None, vec![]).value(), Some(b"ab".to_vec()));
        assert_eq!(
            opt(None, Some("0a:0b0c"), vec![]).value(),
            Some(vec![10, 11, 12])
        );
        assert_eq!(
            opt(None, None, vec![Ipv4Addr::new(1, 2, 3, 4)]).value(),
            Some(vec![1, 2, 3, 4])
        );
        assert_eq!(opt(None, Some("0"), vec![]).value(), None);
        assert_eq!(opt(None, Some("zz"), vec![]).value(), None);
        assert_eq!(opt(Some("a"), Some("00"), vec![]).value(), None);
        assert_eq!(opt(None, None, vec![]).value(), None);
    }
}
