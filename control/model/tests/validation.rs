//! One test per validation rule, each asserting the exact path of the error.

mod common;

use common::{assert_error, assert_only_error, assert_valid, errors};
use vnet_model::{parse_str, TopologyError};

/// Two bridges joined by a router (`examples/router.yaml`), valid as
/// written; tests append to it.
const BASE: &str = include_str!("../../../examples/router.yaml");

/// BASE with top-level sections appended.
fn base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// A router `edge` with one port, extra port lines and routes.
fn edge(ports: &str, routes: &str) -> String {
    format!(
        "version: 1\nrouters:\n  edge:\n    ports:\n      uplink: {{address: 192.0.2.2/24, interface: up-h}}\n{ports}    routes:\n{routes}"
    )
}

/// A bridge `b` with ports vm1, vm2 and the given extra bridge fields.
fn bridge(fields: &str) -> String {
    format!("version: 1\nbridges:\n  b:\n    ports:\n      vm1: {{interface: vm1-h}}\n      vm2: {{interface: vm2-h}}\n{fields}")
}

/// A chain `c` with the given rules (one per line, already indented).
fn chain(rules: &str) -> String {
    base(&format!("chains:\n  c:\n{rules}"))
}

#[test]
fn base_fixtures_are_valid() {
    assert_valid(BASE);
    assert_valid(&edge(
        "",
        "      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}\n",
    ));
    assert_valid(&bridge(""));
    assert_valid(&chain("    - {action: accept}\n"));
}

// --- version and names -------------------------------------------------------

#[test]
fn version_must_be_1() {
    assert_only_error(
        &BASE.replace("version: 1", "version: 2"),
        "version",
        "unsupported format version 2",
    );
}

#[test]
fn names_are_restricted() {
    assert_only_error(
        &bridge("").replace("  b:", "  \"b b\":"),
        "bridges.b b",
        "name `b b` is not valid",
    );
    assert_only_error(
        &bridge("").replace("vm2: {", "\"vm/2\": {"),
        "bridges.b.ports.vm/2",
        "is not valid",
    );
    assert_only_error(
        &chain("    - {action: accept}\n").replace("  c:", "  \"\":"),
        "chains.",
        "name `` is not valid",
    );
}

#[test]
fn bridge_and_router_names_must_differ() {
    let yaml = "version: 1\nbridges:\n  x: {}\nrouters:\n  x: {}\n";
    assert_only_error(yaml, "routers.x", "also the name of a bridge");
}

// --- references --------------------------------------------------------------

#[test]
fn filters_must_name_chains() {
    let yaml = base("").replace("  red:\n", "  red:\n    inbound_filter: nope\n");
    assert_only_error(&yaml, "bridges.red.inbound_filter", "no chain named `nope`");
    let yaml = base("").replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, outbound_filter: nope}",
    );
    assert_only_error(
        &yaml,
        "bridges.red.ports.vm1.outbound_filter",
        "no chain named `nope`",
    );
    let yaml = base("").replace("  r1:\n", "  r1:\n    outbound_filter: post\n");
    assert_only_error(&yaml, "routers.r1.outbound_filter", "no chain named `post`");
    let yaml = base("").replace("peer: red/gw}", "peer: red/gw, inbound_filter: x}");
    assert_only_error(
        &yaml,
        "routers.r1.ports.red.inbound_filter",
        "no chain named `x`",
    );
}

#[test]
fn peer_must_exist() {
    let yaml = BASE.replace("gw: {peer: r1/red}", "gw: {peer: r9/red}");
    assert_error(
        &yaml,
        "bridges.red.ports.gw.peer",
        "no bridge or router named `r9`",
    );
    let yaml = BASE.replace("gw: {peer: r1/red}", "gw: {peer: r1/green}");
    assert_error(
        &yaml,
        "bridges.red.ports.gw.peer",
        "router `r1` has no port `green`",
    );
}

#[test]
fn peer_links_must_be_symmetric() {
    // The router port forgets its side of the link.
    let yaml = BASE.replace(
        "red: {address: 10.1.0.1/24, peer: red/gw}",
        "red: {address: 10.1.0.1/24}",
    );
    assert_only_error(
        &yaml,
        "bridges.red.ports.gw.peer",
        "r1/red does not link back; set peer: red/gw on routers.r1.ports.red",
    );
    // The two sides disagree.
    let yaml = BASE.replace("peer: red/gw}", "peer: blue/gw}");
    assert_error(
        &yaml,
        "bridges.red.ports.gw.peer",
        "r1/red is linked to blue/gw, not to red/gw",
    );
}

#[test]
fn port_linked_twice() {
    let yaml = BASE.replace("vm1: {interface: vm1-h}", "vm1: {peer: r1/red}");
    assert_error(
        &yaml,
        "routers.r1.ports.red",
        "linked from several ports (red/gw, red/vm1)",
    );
    assert_error(
        &yaml,
        "bridges.red.ports.vm1.peer",
        "r1/red is linked to red/gw, not to red/vm1",
    );
}

#[test]
fn port_cannot_link_to_itself() {
    let yaml = BASE.replace("gw: {peer: r1/red}", "gw: {peer: red/gw}");
    assert_error(
        &yaml,
        "bridges.red.ports.gw.peer",
        "cannot be linked to itself",
    );
}

#[test]
fn port_cannot_link_to_its_own_device() {
    let yaml = "version: 1\nrouters:\n  a:\n    ports:\n      p: {address: 10.0.0.0/31, peer: a/q}\n      q: {address: 10.0.1.1/31, peer: a/p}\n";
    assert_error(
        yaml,
        "routers.a.ports.p.peer",
        "a/q is a port of the same device",
    );
    assert_error(
        yaml,
        "routers.a.ports.q.peer",
        "a/p is a port of the same device",
    );
}

#[test]
fn bridge_ports_cannot_link_to_each_other() {
    let yaml = bridge("").replace("vm1: {interface: vm1-h}", "vm1: {peer: c/p}")
        + "  c:\n    ports:\n      p: {peer: b/vm1}\n";
    assert_error(
        &yaml,
        "bridges.b.ports.vm1.peer",
        "bridges cannot be linked to each other",
    );
    assert_error(
        &yaml,
        "bridges.c.ports.p.peer",
        "bridges cannot be linked to each other",
    );
}

#[test]
fn router_to_router_links_are_fine() {
    let yaml = "version: 1\nrouters:\n  a:\n    ports:\n      p: {address: 10.0.0.0/31, peer: b/p}\n  b:\n    ports:\n      p: {address: 10.0.0.1/31, peer: a/p}\n";
    assert_valid(yaml);
}

#[test]
fn static_mac_port_must_exist() {
    let yaml = bridge("    mac_table: [{mac: \"02:00:00:00:00:01\", port: vm9}]\n");
    assert_only_error(
        &yaml,
        "bridges.b.mac_table[0].port",
        "bridge `b` has no port `vm9`",
    );
}

#[test]
fn port_group_members_must_exist() {
    let yaml = base("port_groups:\n  g: {ports: [r1/red, r1/nope, red/vm1, r1/red]}\n");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "port_groups.g.ports[1]: router `r1` has no port `nope`"
    );
    assert_eq!(
        errs[1].to_string(),
        "port_groups.g.ports[3]: r1/red is already listed at port_groups.g.ports[0]"
    );
}

#[test]
fn condition_references_must_resolve() {
    let yaml = chain(
        "    - action: drop\n      match: {src_group: g1, dst_group: g2, port_group: pg, in_ports: [r1/x], out_ports: [zz/y]}\n",
    ) + "ip_groups:\n  g1: [10.0.0.1]\n";
    let errs = errors(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "chains.c[0].match.in_ports[0]",
            "chains.c[0].match.out_ports[0]",
            "chains.c[0].match.port_group",
            "chains.c[0].match.dst_group",
        ]
    );
    assert!(errs[3].message.contains("no IP group named `g2`"));
    assert!(errs[2].message.contains("no port group named `pg`"));
}

#[test]
fn jump_target_must_exist() {
    assert_only_error(
        &chain("    - {action: jump, chain: nowhere}\n"),
        "chains.c[0].chain",
        "no chain named `nowhere`",
    );
}

#[test]
fn jump_cycles_are_errors() {
    let yaml = base(
        "chains:\n  a:\n    - {action: accept, match: {protocol: tcp}}\n    - {action: jump, chain: b}\n  b:\n    - {action: jump, chain: a}\n",
    );
    assert_only_error(
        &yaml,
        "chains.b[0].chain",
        "jump to a closes a cycle (a → b → a)",
    );
    let yaml = base("chains:\n  a:\n    - {action: jump, chain: a}\n");
    assert_only_error(&yaml, "chains.a[0].chain", "closes a cycle (a → a)");
    // A diamond is not a cycle.
    let yaml = base(
        "chains:\n  a:\n    - {action: jump, chain: b}\n    - {action: jump, chain: c}\n  b:\n    - {action: jump, chain: c}\n  c: []\n",
    );
    assert_valid(&yaml);
}

#[test]
fn nat_and_firewall_must_name_router_and_port() {
    let yaml = base(
        "nat:\n  - {router: edge, type: floating_ip, public: 192.0.2.50, private: 10.1.0.5, port: uplink}\n  - {router: r1, type: floating_ip, public: 192.0.2.51, private: 10.1.0.6, port: uplink}\nfirewall:\n  - {router: nope, public: 192.0.2.50}\n",
    );
    let errs = errors(&yaml);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "nat[0].router: no router named `edge`",
            "nat[1].port: router r1 has no port `uplink`",
            "firewall[0].router: no router named `nope`",
        ]
    );
}

#[test]
fn route_port_must_exist() {
    let yaml = BASE.replace(
        "{dst: 10.2.0.0/24, port: blue}",
        "{dst: 10.2.0.0/24, port: green}",
    );
    assert_only_error(
        &yaml,
        "routers.r1.routes[1].port",
        "router r1 has no port `green`",
    );
}

// --- ports and interfaces ------------------------------------------------------

#[test]
fn interface_or_peer_not_both() {
    let yaml = BASE.replace("gw: {peer: r1/red}", "gw: {peer: r1/red, interface: gw-h}");
    assert_only_error(
        &yaml,
        "bridges.red.ports.gw",
        "set either interface (exterior port) or peer (interior port), not both",
    );
}

#[test]
fn unbound_ports_are_allowed() {
    assert_valid(&bridge("").replace("vm2: {interface: vm2-h}", "vm2: {}"));
}

#[test]
fn interface_bound_twice() {
    let yaml = edge("", "      []\n") + "bridges:\n  b:\n    ports:\n      p: {interface: up-h}\n";
    assert_only_error(
        &yaml,
        "routers.edge.ports.uplink.interface",
        "interface up-h is already bound to bridges.b.ports.p",
    );
}

#[test]
fn interface_names_follow_linux_rules() {
    for (name, why) in [
        ("\"\"", "it is empty"),
        ("abcdefghijklmnop", "longer than 15 bytes"),
        ("a/b", "contains '/'"),
        ("\"a b\"", "whitespace"),
        ("\"..\"", "reserved"),
    ] {
        let yaml = bridge("").replace("vm1-h", name);
        assert_only_error(&yaml, "bridges.b.ports.vm1.interface", why);
    }
    assert_valid(&bridge("").replace("vm1-h", "abcdefghijklmno"));
}

#[test]
fn vlan_range() {
    for vlan in [0, 4095] {
        let yaml = bridge("").replace(
            "vm1: {interface: vm1-h}",
            &format!("vm1: {{interface: vm1-h, vlan: {vlan}}}"),
        );
        assert_only_error(&yaml, "bridges.b.ports.vm1.vlan", "out of range 1-4094");
    }
    assert_valid(&bridge("").replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, vlan: 4094}",
    ));
}

#[test]
fn mtu_range() {
    let yaml = edge("      x: {address: 10.0.0.1/24, mtu: 67}\n", "      []\n");
    assert_only_error(
        &yaml,
        "routers.edge.ports.x.mtu",
        "below the IPv4 minimum of 68",
    );
    assert_valid(&edge(
        "      x: {address: 10.0.0.1/24, mtu: 68}\n",
        "      []\n",
    ));
    // 65536 does not fit the type: a parse error that names the field.
    let text = edge(
        "      x: {address: 10.0.0.1/24, mtu: 65536}\n",
        "      []\n",
    );
    let err = parse_str(&text).unwrap_err().to_string();
    assert!(err.contains("routers.edge.ports.x.mtu"), "{err}");
}

#[test]
fn router_port_subnets_must_not_overlap() {
    let yaml = edge(
        "      a: {address: 10.0.0.1/16}\n      b: {address: 10.0.3.1/24}\n",
        "      []\n",
    );
    assert_only_error(
        &yaml,
        "routers.edge.ports.b.address",
        "subnet 10.0.3.0/24 overlaps subnet 10.0.0.0/16 of port a",
    );
}

#[test]
fn router_port_needs_a_host_address() {
    let yaml = edge("      a: {address: 10.0.0.0/24}\n", "      []\n");
    assert_only_error(&yaml, "routers.edge.ports.a.address", "10.0.0.0 is the network address of 10.0.0.0/24; give the port a host address of the subnet, such as 10.0.0.1/24");
    let yaml = edge("      a: {address: 10.0.0.255/24}\n", "      []\n");
    assert_only_error(&yaml, "routers.edge.ports.a.address", "broadcast address");
    // /31 and /32 have no network or broadcast address.
    assert_valid(&edge(
        "      a: {address: 10.0.0.0/31}\n      b: {address: 10.0.1.0/32}\n",
        "      []\n",
    ));
}

#[test]
fn router_port_macs_must_be_unicast_and_distinct() {
    let yaml = edge("      a: {address: 10.0.0.1/24, mac: \"02:00:00:00:00:01\"}\n      b: {address: 10.0.1.1/24, mac: \"02:00:00:00:00:01\"}\n      c: {address: 10.0.2.1/24, mac: \"01:00:00:00:00:01\"}\n", "      []\n");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "routers.edge.ports.c.mac");
    assert!(errs[0].message.contains("not a unicast MAC"));
    assert_eq!(errs[1].path, "routers.edge.ports.b.mac");
    assert!(errs[1]
        .message
        .contains("also the MAC of routers.edge.ports.a"));
}

// --- routes ------------------------------------------------------------------

#[test]
fn route_via_outside_any_port_subnet_is_the_documented_error() {
    let yaml = edge(
        "      tenant: {address: 10.0.0.1/24}\n",
        "      - {dst: 10.0.0.0/24, port: tenant}\n      - {dst: 192.0.2.0/24, port: uplink}\n      - {dst: 10.9.0.0/16, via: 10.9.0.1}\n",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1, "{errs:?}");
    // Word for word the example of TOPOLOGY.md.
    assert_eq!(
        errs[0].to_string(),
        "routers.edge.routes[2].via: 10.9.0.1 is not inside any port subnet of router edge"
    );
}

#[test]
fn route_via_finds_its_port_when_port_is_omitted() {
    let text = edge("", "      - {dst: 0.0.0.0/0, via: 192.0.2.1}\n");
    assert_valid(&text);
    let topo = parse_str(&text).unwrap();
    let r = &topo.routers["edge"];
    assert_eq!(r.route_port(&r.routes[0]), Some("uplink"));
}

#[test]
fn route_via_must_be_in_its_ports_subnet() {
    let yaml = edge(
        "      tenant: {address: 10.0.0.1/24}\n",
        "      - {dst: 0.0.0.0/0, port: tenant, via: 192.0.2.1}\n",
    );
    assert_only_error(
        &yaml,
        "routers.edge.routes[0].via",
        "192.0.2.1 is not a host address inside subnet 10.0.0.0/24 of port tenant",
    );
    let yaml = edge(
        "",
        "      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.255}\n",
    );
    assert_only_error(
        &yaml,
        "routers.edge.routes[0].via",
        "not a host address inside",
    );
    let yaml = edge(
        "",
        "      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.2}\n",
    );
    assert_only_error(
        &yaml,
        "routers.edge.routes[0].via",
        "the router's own address on port uplink",
    );
}

#[test]
fn normal_route_needs_a_port() {
    let yaml = edge("", "      - {dst: 10.0.0.0/8}\n");
    assert_only_error(
        &yaml,
        "routers.edge.routes[0].port",
        "a normal route needs port",
    );
}

#[test]
fn blackhole_and_reject_routes_take_no_port_or_via() {
    let yaml = edge("", "      - {dst: 10.0.0.0/8, type: blackhole, port: uplink}\n      - {dst: 10.0.0.0/8, type: reject, via: 192.0.2.1}\n");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "routers.edge.routes[0].port");
    assert!(errs[0]
        .message
        .contains("a blackhole route sends nothing out, so it takes no port"));
    assert_eq!(errs[1].path, "routers.edge.routes[1].via");
    assert!(errs[1].message.contains("a reject route"));
}

#[test]
fn route_prefixes_must_not_have_host_bits() {
    let yaml = edge(
        "",
        "      - {dst: 10.1.2.3/16, src: 10.0.0.1/24, type: blackhole}\n",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].to_string(), "routers.edge.routes[0].dst: 10.1.2.3/16 has host bits set; write the network as 10.1.0.0/16");
    assert_eq!(errs[1].path, "routers.edge.routes[0].src");
}

// --- ranges -------------------------------------------------------------------

#[test]
fn port_ranges_start_before_end() {
    let yaml = chain("    - {action: drop, match: {protocol: tcp, dst_ports: 90-80}}\n");
    assert_only_error(
        &yaml,
        "chains.c[0].match.dst_ports",
        "range 90-80 is empty: its start is after its end",
    );
    let yaml = chain("    - {action: drop, match: {protocol: udp, src_ports: 0-10}}\n");
    assert_only_error(&yaml, "chains.c[0].match.src_ports", "port 0");
}

#[test]
fn nat_rule_target_ranges() {
    let yaml = chain("    - {action: dnat, to: {ip: 10.0.0.9-10.0.0.1, ports: 2000-1000}}\n");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "chains.c[0].to.ip");
    assert!(errs[0].message.contains("range 10.0.0.9-10.0.0.1 is empty"));
    assert_eq!(errs[1].path, "chains.c[0].to.ports");
    let yaml = chain("    - {action: snat, to: {ip: 192.0.2.1, ports: 0-100}}\n");
    assert_only_error(&yaml, "chains.c[0].to.ports", "use 0 alone for static");
    let yaml = chain("    - {action: snat, to: {ip: 0.0.0.0}}\n");
    assert_only_error(&yaml, "chains.c[0].to.ip", "not unicast");
    assert_valid(&chain(
        "    - {action: snat, to: {ip: 192.0.2.1, ports: 0}}\n",
    ));
}

// --- conditions ---------------------------------------------------------------

#[test]
fn not_names_must_be_set_and_invertible() {
    let yaml =
        chain("    - {action: drop, match: {src: 10.0.0.0/8, not: [src, dst, src, fragments]}}\n");
    let errs = errors(&yaml);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "chains.c[0].match.not[1]: dst is not set in this condition, so there is nothing to invert; set dst or remove it from not",
            "chains.c[0].match.not[2]: src is listed twice",
            "chains.c[0].match.not[3]: fragments cannot be inverted; choose the fragment policy you want instead",
        ]
    );
}

#[test]
fn icmp_fields_need_protocol_icmp() {
    let yaml = chain("    - {action: drop, match: {icmp_type: 8}}\n");
    assert_only_error(
        &yaml,
        "chains.c[0].match.icmp_type",
        "icmp_type needs protocol: icmp",
    );
    let yaml = chain("    - {action: drop, match: {protocol: tcp, icmp_code: 0}}\n");
    assert_only_error(
        &yaml,
        "chains.c[0].match.icmp_code",
        "icmp_code needs protocol: icmp",
    );
}

#[test]
fn ports_need_a_protocol_with_ports() {
    let yaml = chain("    - {action: drop, match: {protocol: icmp, dst_ports: 80}}\n");
    assert_only_error(
        &yaml,
        "chains.c[0].match.dst_ports",
        "ICMP has no ports; match icmp_type and icmp_code instead",
    );
    let yaml = chain("    - {action: drop, match: {protocol: 47, src_ports: 80}}\n");
    assert_only_error(
        &yaml,
        "chains.c[0].match.src_ports",
        "protocol 47 has no ports",
    );
    // Without a protocol, ports match TCP and UDP alike.
    assert_valid(&chain("    - {action: drop, match: {dst_ports: 80}}\n"));
}

#[test]
fn condition_prefixes_and_ethertype() {
    let yaml = chain("    - {action: drop, match: {src: 10.0.0.1/8, ethertype: 0x05ff}}\n");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "chains.c[0].match.ethertype");
    assert!(errs[0].message.contains("0x05ff is a frame length"));
    assert_eq!(errs[1].path, "chains.c[0].match.src");
}

// --- bridges: static tables and DHCP -----------------------------------------------

#[test]
fn duplicate_static_macs() {
    let yaml = bridge("    mac_table:\n      - {mac: \"02:00:00:00:00:01\", port: vm1}\n      - {mac: \"02:00:00:00:00:01\", port: vm2}\n");
    assert_only_error(
        &yaml,
        "bridges.b.mac_table[1].mac",
        "02:00:00:00:00:01 is already in mac_table[0]",
    );
    let yaml = bridge("    mac_table: [{mac: \"ff:ff:ff:ff:ff:ff\", port: vm1}]\n");
    assert_only_error(&yaml, "bridges.b.mac_table[0].mac", "not a unicast MAC");
}

#[test]
fn duplicate_static_arp_entries() {
    let yaml = bridge("    arp_table:\n      - {ip: 10.0.0.5, mac: \"02:00:00:00:00:01\"}\n      - {ip: 10.0.0.5, mac: \"02:00:00:00:00:02\"}\n");
    assert_only_error(
        &yaml,
        "bridges.b.arp_table[1].ip",
        "10.0.0.5 is already in arp_table[0]",
    );
}

fn dhcp(subnet_fields: &str) -> String {
    bridge(&format!(
        "    dhcp:\n      - subnet: 10.0.0.0/24\n{subnet_fields}"
    ))
}

#[test]
fn dhcp_addresses_must_be_inside_the_subnet() {
    let yaml = dhcp("        server: 10.0.1.2\n        gateway: 10.0.0.255\n");
    let errs = errors(&yaml);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "bridges.b.dhcp[0].server: 10.0.1.2 is not a host address inside subnet 10.0.0.0/24",
            "bridges.b.dhcp[0].gateway: 10.0.0.255 is not a host address inside subnet 10.0.0.0/24",
        ]
    );
    let yaml = dhcp(
        "        server: 10.0.0.2\n        hosts: [{mac: \"02:00:00:00:00:01\", ip: 10.0.5.1}]\n",
    );
    assert_only_error(
        &yaml,
        "bridges.b.dhcp[0].hosts[0].ip",
        "10.0.5.1 is not a host address inside subnet 10.0.0.0/24",
    );
    let yaml = dhcp(
        "        server: 10.0.0.2\n        hosts: [{mac: \"02:00:00:00:00:01\", ip: 10.0.0.2}]\n",
    );
    assert_only_error(
        &yaml,
        "bridges.b.dhcp[0].hosts[0].ip",
        "is the server address",
    );
    let yaml =
        dhcp("        server: 10.0.0.2\n        routes: [{dst: 10.9.0.0/16, via: 10.1.0.1}]\n");
    assert_only_error(
        &yaml,
        "bridges.b.dhcp[0].routes[0].via",
        "10.1.0.1 is not inside subnet 10.0.0.0/24",
    );
}

#[test]
fn dhcp_pool() {
    let yaml = dhcp("        server: 10.0.0.2\n        pool: 10.0.0.200-10.0.0.100\n");
    assert_only_error(
        &yaml,
        "bridges.b.dhcp[0].pool",
        "range 10.0.0.200-10.0.0.100 is empty",
    );
    let yaml = dhcp("        server: 10.0.0.2\n        pool: 10.0.0.100-10.0.1.10\n");
    assert_only_error(
        &yaml,
        "bridges.b.dhcp[0].pool",
        "not made of host addresses inside subnet 10.0.0.0/24",
    );
}

#[test]
fn dhcp_duplicate_hosts() {
    let yaml = dhcp(
        "        server: 10.0.0.2\n        hosts:\n          - {mac: \"02:00:00:00:00:01\", ip: 10.0.0.10}\n          - {mac: \"02:00:00:00:00:01\", ip: 10.0.0.11}\n          - {mac: \"02:00:00:00:00:03\", ip: 10.0.0.10}\n",
    );
    let errs = errors(&yaml);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "bridges.b.dhcp[0].hosts[1].mac: 02:00:00:00:00:01 is already given an address by hosts[0]",
            "bridges.b.dhcp[0].hosts[2].ip: 10.0.0.10 is already assigned to hosts[0]",
        ]
    );
}

#[test]
fn dhcp_subnets_of_a_bridge_must_not_overlap() {
    let yaml =
        dhcp("        server: 10.0.0.2\n      - {subnet: 10.0.0.128/25, server: 10.0.0.130}\n");
    assert_only_error(
        &yaml,
        "bridges.b.dhcp[1].subnet",
        "10.0.0.128/25 overlaps dhcp[0] (10.0.0.0/24)",
    );
}

#[test]
fn dhcp_subnet_shape_and_settings() {
    let yaml = bridge("    dhcp:\n      - {subnet: 10.0.0.5/24, server: 10.0.0.2, mtu: 40, lease_seconds: 0, domain: \"a..b\"}\n");
    let errs = errors(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bridges.b.dhcp[0].subnet",
            "bridges.b.dhcp[0].mtu",
            "bridges.b.dhcp[0].lease_seconds",
            "bridges.b.dhcp[0].domain",
        ]
    );
}

#[test]
fn dhcp_host_options() {
    let yaml = dhcp(
        "        server: 10.0.0.2\n        hosts:\n          - mac: \"02:00:00:00:00:01\"\n            ip: 10.0.0.10\n            name: \"bad name\"\n            options:\n              - {code: 53, text: x}\n              - {code: 100, text: x, hex: \"00\"}\n              - {code: 101, hex: \"abc\"}\n",
    );
    let errs = errors(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bridges.b.dhcp[0].hosts[0].name",
            "bridges.b.dhcp[0].hosts[0].options[0].code",
            "bridges.b.dhcp[0].hosts[0].options[1]",
            "bridges.b.dhcp[0].hosts[0].options[2].hex",
        ]
    );
}

// --- groups --------------------------------------------------------------------

#[test]
fn ip_group_duplicates() {
    let yaml = base("ip_groups:\n  web: [10.0.0.1, 10.0.0.2, 10.0.0.1]\n");
    assert_only_error(
        &yaml,
        "ip_groups.web[2]",
        "10.0.0.1 is already listed at ip_groups.web[0]",
    );
}

// --- NAT and firewall intents -------------------------------------------------------

fn nat(entries: &str) -> String {
    edge(
        "      tenant: {address: 10.0.0.1/24}\n",
        "      - {dst: 0.0.0.0/0, port: uplink, via: 192.0.2.1}\n",
    ) + "nat:\n"
        + entries
}

#[test]
fn nat_addresses_well_formed() {
    let yaml =
        nat("  - {router: edge, type: snat, from: 10.0.0.7/24, to: 192.0.2.10, port: uplink}\n");
    assert_only_error(
        &yaml,
        "nat[0].from",
        "10.0.0.7/24 has host bits set; write the network as 10.0.0.0/24",
    );
    let yaml = nat("  - {router: edge, type: floating_ip, public: 0.0.0.0, private: 224.0.0.1, port: uplink}\n");
    let errs = errors(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["nat[0].public", "nat[0].private"]);
    let yaml = nat("  - {router: edge, type: snat, from: 10.0.0.0/24, to: 192.0.2.20-192.0.2.10, ports: 2000-1000, port: uplink}\n");
    let errs = errors(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["nat[0].to", "nat[0].ports"]);
}

#[test]
fn port_forward_ranges_must_have_the_same_size() {
    let yaml = nat("  - {router: edge, type: port_forward, protocol: tcp, public: 192.0.2.10, public_ports: 8000-8009, private: 10.0.0.12, private_ports: 80-85, port: uplink}\n");
    assert_only_error(
        &yaml,
        "nat[0].private_ports",
        "80-85 has 6 ports but public_ports 8000-8009 has 10",
    );
}

#[test]
fn port_forward_protocol_is_tcp_or_udp() {
    let yaml = nat("  - {router: edge, type: port_forward, protocol: icmp, public: 192.0.2.10, public_ports: 80, private: 10.0.0.12, private_ports: 80, port: uplink}\n");
    assert_only_error(
        &yaml,
        "nat[0].protocol",
        "cannot forward ports of protocol icmp; use tcp or udp",
    );
}

#[test]
fn port_forwards_must_not_overlap() {
    let yaml = nat(
        "  - {router: edge, type: port_forward, protocol: tcp, public: 192.0.2.10, public_ports: 8000-8009, private: 10.0.0.12, private_ports: 80-89, port: uplink}\n  - {router: edge, type: port_forward, protocol: udp, public: 192.0.2.10, public_ports: 8005, private: 10.0.0.13, private_ports: 53, port: uplink}\n  - {router: edge, type: port_forward, protocol: tcp, public: 192.0.2.10, public_ports: 8005, private: 10.0.0.13, private_ports: 80, port: uplink}\n",
    );
    assert_only_error(
        &yaml,
        "nat[2].public_ports",
        "tcp 192.0.2.10:8005 overlaps nat[0] (8000-8009)",
    );
}

#[test]
fn floating_ips_are_one_to_one() {
    let yaml = nat(
        "  - {router: edge, type: floating_ip, public: 192.0.2.50, private: 10.0.0.11, port: uplink}\n  - {router: edge, type: floating_ip, public: 192.0.2.50, private: 10.0.0.12, port: uplink}\n  - {router: edge, type: floating_ip, public: 192.0.2.51, private: 10.0.0.11, port: uplink}\n  - {router: edge, type: port_forward, protocol: tcp, public: 192.0.2.51, public_ports: 22, private: 10.0.0.12, private_ports: 22, port: uplink}\n",
    );
    let errs = errors(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["nat[1].public", "nat[2].private", "nat[3].public"],
        "{errs:?}"
    );
}

#[test]
fn firewall_entries() {
    let yaml = nat("  - {router: edge, type: floating_ip, public: 192.0.2.50, private: 10.0.0.11, port: uplink}\n")
        + "firewall:\n  - {router: edge, public: 192.0.2.50, allow: [{ports: 22}, {protocol: icmp, ports: 1}, {protocol: tcp, from: 10.0.0.1/8}]}\n  - {router: edge, public: 192.0.2.50}\n";
    let errs = errors(&yaml);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "firewall[0].allow[0].ports: ports need a protocol: add protocol: tcp or protocol: udp",
            "firewall[0].allow[1].ports: protocol icmp has no ports; ports apply to tcp and udp",
            "firewall[0].allow[2].from: 10.0.0.1/8 has host bits set; write the network as 10.0.0.0/8",
            "firewall[1].public: firewall[0] already guards 192.0.2.50 on router edge; merge the allow lists into one entry",
        ]
    );
}

// --- the whole ------------------------------------------------------------------------

#[test]
fn all_errors_are_collected_and_listed_one_per_line() {
    let yaml = BASE
        .replace("version: 1", "version: 3")
        .replace(
            "vm1: {interface: vm1-h}",
            "vm1: {interface: vm2-h, vlan: 0}",
        )
        .replace(
            "{dst: 10.2.0.0/24, port: blue}",
            "{dst: 10.2.0.0/24, port: blue, via: 10.9.9.9}",
        );
    let errs = parse_str(&yaml).unwrap().validate().unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "version: unsupported format version 3; this vnet reads version 1",
            "bridges.red.ports.vm1.vlan: VLAN id 0 is out of range 1-4094",
            "routers.r1.routes[1].via: 10.9.9.9 is not a host address inside subnet 10.2.0.0/24 of port blue; the next hop must be reachable on that port",
            "bridges.red.ports.vm1.interface: interface vm2-h is already bound to bridges.blue.ports.vm2; a host interface can back one port only",
        ]
    );
    let shown = TopologyError::Invalid(errs).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[0], "invalid topology (4 errors):");
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[1],
        "  version: unsupported format version 3; this vnet reads version 1"
    );
}

// --- port security --------------------------------------------------------

#[test]
fn port_security_addresses_need_a_mac_and_one_owner() {
    let t = bridge("").replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, addresses: [\"10.0.0.11\"]}",
    );
    assert_only_error(&t, "bridges.b.ports.vm1.addresses[0]", "has no MAC");
    let t = bridge("")
        .replace(
            "vm1: {interface: vm1-h}",
            "vm1: {interface: vm1-h, addresses: [\"02:00:00:00:01:01 10.0.0.11\"]}",
        )
        .replace(
            "vm2: {interface: vm2-h}",
            "vm2: {interface: vm2-h, addresses: [\"02:00:00:00:01:01 10.0.0.12\"]}",
        );
    assert_only_error(
        &t,
        "bridges.b.ports.vm2.addresses[0]",
        "already owned by port vm1",
    );
    let t = bridge("").replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, allowed_address_pairs: [\"ff:ff:ff:ff:ff:ff 10.0.0.9\"]}",
    );
    assert_only_error(
        &t,
        "bridges.b.ports.vm1.allowed_address_pairs[0]",
        "not a unicast MAC",
    );
}

#[test]
fn no_guest_port_may_own_the_networks_addresses() {
    let t = BASE.replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, allowed_address_pairs: [\"10.1.0.0/24\"]}",
    );
    assert_only_error(
        &t,
        "bridges.red.ports.vm1.allowed_address_pairs[0]",
        "10.1.0.1 belongs to router port r1/red",
    );
    let t = BASE.replace(
        "gw: {peer: r1/red}",
        "gw: {peer: r1/red, port_security: true}",
    );
    assert_only_error(&t, "bridges.red.ports.gw.port_security", "exterior ports");
}

#[test]
fn a_port_address_of_the_wrong_form_is_a_parse_error() {
    let t = bridge("").replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, addresses: [\"02:00:00:00:01:01 10.0.0.300\"]}",
    );
    let err = parse_str(&t).unwrap_err().to_string();
    assert!(err.contains("MAC IP"), "{err}");
    let t = edge(
        "      lan: {address: 10.0.0.1/24, interface: lan-h, reverse_path: sometimes}\n",
        "",
    );
    let err = parse_str(&t).unwrap_err().to_string();
    assert!(
        err.contains("reverse_path") || err.contains("sometimes"),
        "{err}"
    );
}

#[test]
fn an_executor_needs_an_interface_and_is_one_of_three() {
    for executor in ["auto", "xdp", "skb"] {
        assert_valid(&bridge("").replace(
            "vm1: {interface: vm1-h}",
            &format!("vm1: {{interface: vm1-h, executor: {executor}}}"),
        ));
    }
    assert_only_error(
        &bridge("").replace("vm2: {interface: vm2-h}", "vm2: {executor: skb}"),
        "bridges.b.ports.vm2.executor",
        "applies to an exterior port",
    );
    let unknown = bridge("").replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, executor: ebpf}",
    );
    let e = parse_str(&unknown).expect_err("executor: ebpf is refused");
    assert!(
        matches!(e, TopologyError::Syntax { .. }) && e.to_string().contains("executor"),
        "{e}"
    );
}

/// Two hosts and a bridge whose ports are placed on them.
fn hosts(ports: &str) -> String {
    format!(
        "version: 1\nhosts:\n  h1: {{tunnel_address: 192.0.2.1}}\n  h2: {{tunnel_address: 192.0.2.2}}\nbridges:\n  b:\n    ports:\n{ports}"
    )
}

#[test]
fn a_port_host_must_be_declared_and_interfaces_are_per_host() {
    // The same interface name on two hosts is two interfaces.
    assert_valid(&hosts(
        "      vm1: {interface: vm1-h, host: h1}\n      vm2: {interface: vm1-h, host: h2}\n",
    ));
    assert_only_error(
        &hosts("      vm1: {interface: vm1-h, host: h3}\n"),
        "bridges.b.ports.vm1.host",
        "no host named `h3`; declare it under hosts",
    );
    assert_only_error(
        &hosts(
            "      vm1: {interface: vm1-h, host: h1}\n      vm2: {interface: vm1-h, host: h1}\n",
        ),
        "bridges.b.ports.vm2.interface",
        "already bound to bridges.b.ports.vm1",
    );
    assert_only_error(
        &hosts("      vm1: {host: h1}\n"),
        "bridges.b.ports.vm1.host",
        "applies to an exterior port",
    );
    assert_only_error(
        "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\nrouters:\n  r:\n    ports:\n      up: {address: 192.0.2.9/24, interface: up-h, host: h9}\n",
        "routers.r.ports.up.host",
        "no host named `h9`",
    );
}

#[test]
fn hosts_have_valid_names_and_distinct_unicast_tunnel_addresses() {
    assert_only_error(
        "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  h2: {tunnel_address: 192.0.2.1}\n",
        "hosts.h2.tunnel_address",
        "already the tunnel address of hosts.h1",
    );
    assert_only_error(
        "version: 1\nhosts:\n  h1: {tunnel_address: 0.0.0.0}\n",
        "hosts.h1.tunnel_address",
        "not a unicast address",
    );
    assert_only_error(
        "version: 1\nhosts:\n  h/1: {tunnel_address: 192.0.2.1}\n",
        "hosts.h/1",
        "is not valid",
    );
    // The address is required, and an unknown field is an error.
    assert!(parse_str("version: 1\nhosts:\n  h1: {}\n").is_err());
    assert!(parse_str("version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1, x: 1}\n").is_err());
}
