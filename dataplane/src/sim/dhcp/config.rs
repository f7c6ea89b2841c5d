//! A bridge's DHCP configuration compiled for the server: only enabled
//! subnets (a disabled one answers nothing, so it is left out), hosts
//! indexed by MAC, and the options every client of a subnet gets encoded
//! once, in the order they are sent.
use super::message::opt;
use crate::packet::Mac;
use std::collections::{HashMap, HashSet};
use vnet_model::DhcpSubnet;

/// Lease time of a subnet that gives none: one day, what MidoNet sent.
pub const DEFAULT_LEASE_SECS: u32 = 86_400;

/// Clients that get option 26 with an MTU of 576 or less may lower their
/// MTU below what IPv4 guarantees to work, so vnet sends it only above.
const MIN_ADVERTISED_MTU: u16 = 576;

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Source MAC of every reply, and the MAC the bridge answers ARP with
    /// for the server addresses: see [`server_mac`].
    pub server_mac: Mac,
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone)]
pub struct Subnet {
    network: u32,
    prefix_len: u8,
    pub server: [u8; 4],
    pub lease_secs: u32,
    /// Inclusive range of the dynamic pool.
    pub pool: Option<(u32, u32)>,
    pub hosts: HashMap<Mac, Host>,
    /// Addresses the pool never hands out: static hosts, server, gateway.
    reserved: HashSet<u32>,
    /// Options for every client, in sending order: 1, 28, 3, 6, 15, 26, 121.
    pub options: Vec<(u8, Vec<u8>)>,
}

/// A static host entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub ip: [u8; 4],
    /// Option 12, then the entry's extra options (which replace a subnet
    /// option with the same code).
    pub options: Vec<(u8, Vec<u8>)>,
}

/// The server's MAC on bridge `bridge`: `02:` followed by the low 40 bits
/// (big-endian) of the 64-bit FNV-1a hash of `dhcp:<bridge>`. `02` makes it
/// locally administered unicast; hashing the name keeps it the same across
/// restarts and hosts (clients' ARP caches stay right), and the `:` (never
/// part of a name) keeps it apart from the derived MACs of router ports,
/// which hash `<router>/<port>`.
pub fn server_mac(bridge: &str) -> Mac {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for b in "dhcp:".bytes().chain(bridge.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    let b = h.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

fn prefix_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l.min(32))),
    }
}

/// RFC 3442: prefix length, the significant octets of the destination,
/// then the router.
fn classless_route(dst: [u8; 4], prefix_len: u8, via: [u8; 4], out: &mut Vec<u8>) {
    out.push(prefix_len);
    out.extend_from_slice(&dst[..usize::from(prefix_len).div_ceil(8)]);
    out.extend_from_slice(&via);
}

impl Config {
    /// Compiles the `dhcp:` list of bridge `bridge` (already validated).
    pub fn compile(bridge: &str, subnets: &[DhcpSubnet]) -> Config {
        Config {
            server_mac: server_mac(bridge),
            subnets: subnets
                .iter()
                .filter(|s| s.enabled)
                .map(Subnet::compile)
                .collect(),
        }
    }

    /// Whether the bridge answers DHCP at all.
    pub fn is_serving(&self) -> bool {
        !self.subnets.is_empty()
    }

    /// The subnet whose server address is `ip`.
    pub fn subnet_of_server(&self, ip: [u8; 4]) -> Option<usize> {
        self.subnets.iter().position(|s| s.server == ip)
    }

    /// The subnet that contains `ip`.
    pub fn subnet_containing(&self, ip: [u8; 4]) -> Option<usize> {
        self.subnets.iter().position(|s| s.contains(ip))
    }

    /// The static host entry of `mac`, with its subnet.
    pub fn static_host(&self, mac: &Mac) -> Option<(usize, &Host)> {
        self.subnets
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.hosts.get(mac).map(|h| (i, h)))
    }

    pub fn has_pool(&self) -> bool {
        self.subnets.iter().any(|s| s.pool.is_some())
    }

    /// The subnet whose pool may hand out `ip` (inside the pool, not
    /// reserved for a static host, the server or the gateway).
    pub fn pool_subnet(&self, ip: [u8; 4]) -> Option<usize> {
        self.subnets.iter().position(|s| s.pool_may_use(ip))
    }
}

impl Subnet {
    /// Tells clients MTU `mtu` (option 26) unless the subnet says its own:
    /// guests whose frames may cross a tunnel must leave room for it.
    pub fn advertise_mtu(&mut self, mtu: u16) {
        if mtu <= MIN_ADVERTISED_MTU || self.options.iter().any(|(c, _)| *c == opt::INTERFACE_MTU) {
            return;
        }
        // In sending order: before the classless routes (121), if any.
        let at = self
            .options
            .iter()
            .position(|(c, _)| *c > opt::INTERFACE_MTU)
            .unwrap_or(self.options.len());
        self.options
            .insert(at, (opt::INTERFACE_MTU, mtu.to_be_bytes().to_vec()));
    }

    fn compile(s: &DhcpSubnet) -> Subnet {
        let network = u32::from(s.subnet.network());
        let prefix_len = s.subnet.prefix_len();
        let mask = prefix_mask(prefix_len);
        let mut options = vec![
            (opt::SUBNET_MASK, mask.to_be_bytes().to_vec()),
            (opt::BROADCAST, (network | !mask).to_be_bytes().to_vec()),
        ];
        if let Some(gw) = s.gateway {
            options.push((opt::ROUTER, gw.octets().to_vec()));
        }
        if !s.dns.is_empty() {
            let dns = s.dns.iter().flat_map(|a| a.octets()).collect();
            options.push((opt::DNS, dns));
        }
        if let Some(domain) = &s.domain {
            options.push((opt::DOMAIN_NAME, domain.as_bytes().to_vec()));
        }
        if let Some(mtu) = s.mtu.filter(|&m| m > MIN_ADVERTISED_MTU) {
            options.push((opt::INTERFACE_MTU, mtu.to_be_bytes().to_vec()));
        }
        if !s.routes.is_empty() {
            let mut routes = Vec::new();
            for r in &s.routes {
                classless_route(
                    r.dst.network().octets(),
                    r.dst.prefix_len(),
                    r.via.octets(),
                    &mut routes,
                );
            }
            // RFC 3442: a client that receives option 121 ignores option 3,
            // so the default route goes in 121 too (as MidoNet did), unless
            // the routes already give one.
            let has_default = s.routes.iter().any(|r| r.dst.prefix_len() == 0);
            if let (Some(gw), false) = (s.gateway, has_default) {
                classless_route([0; 4], 0, gw.octets(), &mut routes);
            }
            options.push((opt::CLASSLESS_ROUTES, routes));
        }

        let mut reserved: HashSet<u32> = HashSet::new();
        reserved.insert(u32::from(s.server));
        reserved.extend(s.gateway.map(u32::from));
        let mut hosts = HashMap::new();
        for h in &s.hosts {
            reserved.insert(u32::from(h.ip));
            let mut host_options = Vec::new();
            if let Some(name) = &h.name {
                host_options.push((opt::HOST_NAME, name.as_bytes().to_vec()));
            }
            for o in &h.options {
                // Validation refused values that do not encode.
                let Some(value) = o.value() else { continue };
                host_options.retain(|(c, _)| *c != o.code);
                host_options.push((o.code, value));
            }
            hosts.insert(
                h.mac.0,
                Host {
                    ip: h.ip.octets(),
                    options: host_options,
                },
            );
        }
        Subnet {
            network,
            prefix_len,
            server: s.server.octets(),
            lease_secs: s.lease_seconds.unwrap_or(DEFAULT_LEASE_SECS),
            pool: s.pool.map(|p| (u32::from(p.start), u32::from(p.end))),
            hosts,
            reserved,
            options,
        }
    }

    pub fn contains(&self, ip: [u8; 4]) -> bool {
        u32::from_be_bytes(ip) & prefix_mask(self.prefix_len) == self.network
    }

    pub fn pool_may_use(&self, ip: [u8; 4]) -> bool {
        let a = u32::from_be_bytes(ip);
        self.pool.is_some_and(|(lo, hi)| (lo..=hi).contains(&a)) && !self.reserved.contains(&a)
    }

    /// The addresses of the pool, starting at the `start`-th and wrapping
    /// around, without the reserved ones.
    pub fn pool_from(&self, start: u64) -> impl Iterator<Item = [u8; 4]> + '_ {
        let (lo, hi) = self.pool.unwrap_or((1, 0));
        let len = if lo <= hi { u64::from(hi - lo) + 1 } else { 0 };
        (0..len)
            .map(move |i| (lo as u64 + (start + i) % len) as u32)
            .filter(|a| !self.reserved.contains(a))
            .map(u32::to_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> Config {
        let topo = vnet_model::parse_str(yaml).expect("valid topology");
        let (name, bridge) = topo.bridges.iter().next().unwrap();
        Config::compile(name, &bridge.dhcp)
    }

    const TOPO: &str = r#"
version: 1
bridges:
  tenant:
    dhcp:
      - subnet: 10.0.0.0/24
        server: 10.0.0.2
        gateway: 10.0.0.1
        dns: [10.0.0.2, 8.8.8.8]
        domain: tenant.example
        mtu: 1450
        routes: [{dst: 169.254.169.254/32, via: 10.0.0.3}, {dst: 172.16.0.0/12, via: 10.0.0.3}]
        hosts:
          - mac: "02:00:00:00:01:01"
            ip: 10.0.0.11
            name: vm1
            options: [{code: 42, ips: [10.0.0.5]}, {code: 3, ips: [10.0.0.9]}]
        pool: 10.0.0.10-10.0.0.12
      - subnet: 10.1.0.0/24
        server: 10.1.0.2
        enabled: false
    ports: {}
"#;

    #[test]
    fn options_are_encoded_once_in_sending_order() {
        let c = compile(TOPO);
        assert_eq!(c.subnets.len(), 1, "the disabled subnet is left out");
        let s = &c.subnets[0];
        let codes: Vec<u8> = s.options.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, [1, 28, 3, 6, 15, 26, 121]);
        let get = |code| {
            s.options
                .iter()
                .find(|(c, _)| *c == code)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(get(1), [255, 255, 255, 0]);
        assert_eq!(get(28), [10, 0, 0, 255]);
        assert_eq!(get(3), [10, 0, 0, 1]);
        assert_eq!(get(6), [10, 0, 0, 2, 8, 8, 8, 8]);
        assert_eq!(get(15), b"tenant.example");
        assert_eq!(get(26), 1450u16.to_be_bytes());
        assert_eq!(
            get(121),
            [
                32, 169, 254, 169, 254, 10, 0, 0, 3, // 169.254.169.254/32
                12, 172, 16, 10, 0, 0, 3, // 172.16.0.0/12: two octets
                0, 10, 0, 0, 1, // the default route via the gateway
            ]
        );
        assert_eq!(s.lease_secs, DEFAULT_LEASE_SECS);
    }

    #[test]
    fn host_options_start_with_the_name_and_keep_extras() {
        let c = compile(TOPO);
        let (subnet, host) = c.static_host(&[2, 0, 0, 0, 1, 1]).unwrap();
        assert_eq!(subnet, 0);
        assert_eq!(host.ip, [10, 0, 0, 11]);
        assert_eq!(
            host.options,
            vec![
                (12, b"vm1".to_vec()),
                (42, vec![10, 0, 0, 5]),
                (3, vec![10, 0, 0, 9])
            ]
        );
    }

    #[test]
    fn the_pool_skips_static_server_and_gateway_addresses() {
        let c = compile(TOPO);
        let s = &c.subnets[0];
        // Pool 10.0.0.10-12 holds the static 10.0.0.11.
        let all: Vec<[u8; 4]> = s.pool_from(2).collect();
        assert_eq!(all, [[10, 0, 0, 12], [10, 0, 0, 10]]);
        assert!(s.pool_may_use([10, 0, 0, 10]));
        assert!(!s.pool_may_use([10, 0, 0, 11]), "static host");
        assert!(!s.pool_may_use([10, 0, 0, 13]), "outside the pool");
        assert_eq!(c.pool_subnet([10, 0, 0, 12]), Some(0));
        assert_eq!(c.subnet_of_server([10, 0, 0, 2]), Some(0));
        assert_eq!(c.subnet_of_server([10, 1, 0, 2]), None, "disabled");
        assert_eq!(c.subnet_containing([10, 0, 0, 200]), Some(0));
    }

    #[test]
    fn small_mtu_no_routes_no_gateway_send_no_options() {
        let c = compile(
            "version: 1\nbridges:\n  b:\n    dhcp:\n      - {subnet: 10.0.0.0/30, server: 10.0.0.1, mtu: 576}\n",
        );
        let codes: Vec<u8> = c.subnets[0].options.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, [1, 28]);
        assert!(!c.has_pool());
    }

    #[test]
    fn server_mac_is_stable_local_unicast_and_per_bridge() {
        let m = server_mac("tenant");
        assert_eq!(m, server_mac("tenant"));
        assert_ne!(m, server_mac("other"));
        assert_eq!(m[0], 0x02, "locally administered, unicast");
        // Pinned: clients cache it, so it must never change.
        assert_eq!(m, [0x02, 0x17, 0x44, 0x54, 0x18, 0x10]);
        assert_eq!(compile(TOPO).server_mac, m);
    }
}
