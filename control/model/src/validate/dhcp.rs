//! DHCP subnets served by a bridge.

use super::{is_host_in, overlaps, FirstSeen, Validator};
use crate::model::*;

/// Options vnet always sets itself from other fields; a host entry may not
/// override them.
const RESERVED_OPTIONS: &[(u8, &str)] = &[
    (0, "is padding"),
    (255, "ends the option list"),
    (52, "(option overload) is managed by vnet"),
    (53, "(message type) is managed by vnet"),
    (54, "(server identifier) comes from server"),
];

impl Validator<'_> {
    pub(super) fn dhcp(&mut self, bridge_path: &str, bridge: &Bridge) {
        for (i, subnet) in bridge.dhcp.iter().enumerate() {
            self.dhcp_subnet(&format!("{bridge_path}.dhcp[{i}]"), subnet);
        }
        // A request must map to one subnet, so ranges served on one bridge
        // must not overlap.
        for (j, sj) in bridge.dhcp.iter().enumerate() {
            if let Some(i) = bridge.dhcp[..j]
                .iter()
                .position(|si| overlaps(&si.subnet, &sj.subnet))
            {
                self.err(
                    format!("{bridge_path}.dhcp[{j}].subnet"),
                    format!(
                        "{} overlaps dhcp[{i}] ({}); a bridge serves each address once",
                        sj.subnet, bridge.dhcp[i].subnet
                    ),
                );
            }
        }
    }

    fn dhcp_subnet(&mut self, path: &str, s: &DhcpSubnet) {
        let net = s.subnet;
        self.network(format!("{path}.subnet"), &net);
        if net.prefix_len() > 30 {
            self.err(
                format!("{path}.subnet"),
                format!("{net} is too small to serve DHCP on; use a /30 or larger subnet"),
            );
        }
        let inside = |addr| is_host_in(&net, addr);
        if !inside(s.server) {
            self.err(
                format!("{path}.server"),
                format!("{} is not a host address inside subnet {net}", s.server),
            );
        }
        if let Some(gw) = s.gateway {
            if !inside(gw) {
                self.err(
                    format!("{path}.gateway"),
                    format!("{gw} is not a host address inside subnet {net}"),
                );
            }
        }
        if let Some(mtu) = s.mtu {
            if mtu < 68 {
                self.err(
                    format!("{path}.mtu"),
                    format!("MTU {mtu} is below the IPv4 minimum of 68"),
                );
            }
        }
        if s.lease_seconds == Some(0) {
            self.err(
                format!("{path}.lease_seconds"),
                "a lease of 0 seconds expires at once; give at least 1 (usually 3600 or more)",
            );
        }
        if let Some(domain) = &s.domain {
            if let Some(why) = bad_dns_name(domain, 253) {
                self.err(format!("{path}.domain"), format!("`{domain}` {why}"));
            }
        }
        for (k, route) in s.routes.iter().enumerate() {
            let rpath = format!("{path}.routes[{k}]");
            self.network(format!("{rpath}.dst"), &route.dst);
            // RFC 3442: a router of 0.0.0.0 means the destination is on-link.
            if !route.via.is_unspecified() && !inside(route.via) {
                self.err(
                    format!("{rpath}.via"),
                    format!(
                        "{} is not inside subnet {net}; clients can only reach a next hop on their own subnet (0.0.0.0 means on-link)",
                        route.via
                    ),
                );
            }
        }
        if let Some(pool) = &s.pool {
            if pool.start > pool.end {
                self.err(
                    format!("{path}.pool"),
                    format!("range {pool} is empty: its start is after its end"),
                );
            } else if !inside(pool.start) || !inside(pool.end) {
                self.err(
                    format!("{path}.pool"),
                    format!("range {pool} is not made of host addresses inside subnet {net}"),
                );
            }
        }
        self.dhcp_hosts(path, s);
    }

    fn dhcp_hosts(&mut self, path: &str, s: &DhcpSubnet) {
        let mut macs = FirstSeen::new();
        let mut ips = FirstSeen::new();
        for (k, host) in s.hosts.iter().enumerate() {
            let hpath = format!("{path}.hosts[{k}]");
            if !host.mac.is_unicast() {
                self.err(
                    format!("{hpath}.mac"),
                    format!("{} is not a unicast MAC", host.mac),
                );
            }
            if let Some(first) = macs.check(host.mac, format!("hosts[{k}]")) {
                let msg = format!("{} is already given an address by {first}", host.mac);
                self.err(format!("{hpath}.mac"), msg);
            }
            if !is_host_in(&s.subnet, host.ip) {
                self.err(
                    format!("{hpath}.ip"),
                    format!(
                        "{} is not a host address inside subnet {}",
                        host.ip, s.subnet
                    ),
                );
            } else if host.ip == s.server || Some(host.ip) == s.gateway {
                let what = if host.ip == s.server {
                    "server"
                } else {
                    "gateway"
                };
                self.err(
                    format!("{hpath}.ip"),
                    format!("{} is the {what} address of this subnet", host.ip),
                );
            }
            if let Some(first) = ips.check(host.ip, format!("hosts[{k}]")) {
                let msg = format!("{} is already assigned to {first}", host.ip);
                self.err(format!("{hpath}.ip"), msg);
            }
            if let Some(name) = &host.name {
                if let Some(why) = bad_dns_name(name, 63) {
                    self.err(format!("{hpath}.name"), format!("`{name}` {why}"));
                }
            }
            for (o, opt) in host.options.iter().enumerate() {
                self.dhcp_option(&format!("{hpath}.options[{o}]"), opt);
            }
        }
    }

    fn dhcp_option(&mut self, path: &str, opt: &DhcpOption) {
        if let Some((code, why)) = RESERVED_OPTIONS.iter().find(|(c, _)| *c == opt.code) {
            self.err(
                format!("{path}.code"),
                format!("option {code} {why}; it cannot be set here"),
            );
        }
        let forms = usize::from(opt.text.is_some())
            + usize::from(opt.hex.is_some())
            + usize::from(!opt.ips.is_empty());
        if forms != 1 {
            self.err(path, "give the value in exactly one of text, hex or ips");
            return;
        }
        match opt.value() {
            None => self.err(
                format!("{path}.hex"),
                "not hex bytes: write an even number of hex digits, optionally with ':' between bytes",
            ),
            Some(v) if v.is_empty() || v.len() > 255 => self.err(
                path,
                format!("the value is {} bytes; a DHCP option holds 1 to 255", v.len()),
            ),
            Some(_) => {}
        }
    }
}

/// Why `name` is not a DNS name of at most `max` bytes, or `None`.
fn bad_dns_name(name: &str, max: usize) -> Option<String> {
    if name.is_empty() || name.len() > max {
        return Some(format!("must be 1 to {max} bytes long"));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        None
    } else {
        Some("is not a DNS name: use labels of letters, digits and '-' separated by '.'".into())
    }
}
