//! vnetd's MidoNet REST API driven by MidoNet's own client: `midonet-cli`
//! and the `midonetclient` Python API, version 5.2.0 from PyPI, installed
//! by scripts/midonet-client.sh.
//!
//! midonetclient 5.2.0 is Python 2 code: the script converts the installed
//! copy with the standard library's lib2to3 (`python3 -m lib2to3 -w -n`) so
//! that it runs on Python 3.11; nothing else of the client changes. Its
//! login is broken on Python 3, so the cli runs with `-A` and no user
//! (vnetd's default is no authentication, as MidoNet's).
//!
//! Networks are built only through the client, against a live vnetd that
//! started with an empty topology; traffic between guests proves that what
//! the client built is what the dataplane runs.
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use vnet_e2e::{poll, repo_root, Guest, World};

/// Where the API listens inside the world's host namespace (each world has
/// its own loopback, so worlds do not collide).
const URL: &str = "http://127.0.0.1:8181/midonet-api";

/// The client's venv (scripts/midonet-client.sh, which bootstrap.sh runs;
/// idempotent): `$MIDONET_CLIENT_DIR` or its default.
fn client_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("MIDONET_CLIENT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/vnet-midonet-client"));
    let out = Command::new(repo_root().join("scripts/midonet-client.sh"))
        .arg(&dir)
        .output()
        .context("running scripts/midonet-client.sh")?;
    if !out.status.success() {
        bail!(
            "scripts/midonet-client.sh failed (it installs midonetclient 5.2.0 from PyPI): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dir)
}

/// These tests need root (namespaces, XDP): without it they fail, saying
/// so, rather than pass having tested nothing.
fn need_root(test: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{test} needs root (network namespaces, XDP, AF_XDP): run it as root");
    }
    Ok(())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A world whose vnetd serves the MidoNet API, and the client.
struct Mido {
    w: World,
    client: PathBuf,
}

impl Mido {
    fn new(test: &str, guests: &[(&str, &str, &str, Option<&str>)]) -> Result<Mido> {
        let client = client_dir()?;
        let mut w = World::new(test)?;
        for (name, host_if, mac, ip) in guests {
            match ip {
                Some(ip) => w.guest(name, host_if, mac, ip)?,
                None => w.guest_without_address(name, host_if, mac)?,
            };
        }
        let empty = w.topology_file("version: 1\n")?;
        let host_file = w.dir().join("host_uuid.properties");
        let host_file = host_file.to_string_lossy().into_owned();
        w.start_vnetd_args(
            &empty,
            &[
                "--midonet-api",
                "127.0.0.1:8181",
                "--midonet-host-id-file",
                &host_file,
            ],
        )?;
        Ok(Mido { w, client })
    }

    /// `midonet-cli -A --midonet-url URL -e ARGS` in vnetd's namespace, with
    /// no ~/.midonetrc and no MIDO_USER (so -A sends no credentials).
    fn cli_output(&self, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.w.host, "env", "-u", "MIDO_USER"])
            .arg(format!("HOME={}", self.w.dir().display()))
            .arg(self.client.join("bin/midonet-cli"))
            .args(["-A", "--midonet-url", URL, "-e"])
            .args(args)
            .output()
            .context("running midonet-cli")
    }

    /// A cli command that must succeed; its output, trimmed.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.cli_output(args)?;
        if !out.status.success() {
            bail!(
                "midonet-cli {} failed ({}): {}\nvnetd's log:\n{}",
                args.join(" "),
                out.status,
                text(&out),
                self.w.vnetd_log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A create: the UUID it printed.
    fn create(&self, args: &[&str]) -> Result<String> {
        let id = self.cli(args)?;
        if id.len() != 36 || id.matches('-').count() != 4 {
            bail!("midonet-cli {} printed no UUID: {id:?}", args.join(" "));
        }
        Ok(id)
    }

    /// A cli command written as in the design note's sessions (words
    /// separated by spaces).
    fn run(&self, line: &str) -> Result<String> {
        self.cli(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// A create written as a line: the UUID it printed.
    fn make(&self, line: &str) -> Result<String> {
        self.create(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// A Python snippet with `api = MidonetApi(URL, None, None)` (no
    /// login); its stdout.
    fn python(&self, code: &str) -> Result<String> {
        let prelude = format!(
            "from midonetclient.api import MidonetApi\napi = MidonetApi({URL:?}, None, None)\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.w.host])
            .arg(self.client.join("bin/python"))
            .args(["-c", &(prelude + code)])
            .output()
            .context("running the midonetclient Python API")?;
        if !out.status.success() {
            bail!("midonetclient snippet failed: {}", text(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The running topology, as gRPC shows it.
    fn topology(&self) -> Result<serde_json::Value> {
        self.w.vnetctl_json(&["get"])
    }

    fn host_id(&self) -> Result<String> {
        let hosts = self.cli(&["list", "host"])?;
        hosts
            .split_whitespace()
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no host in `list host`: {hosts}"))
    }
}

/// The udhcpc script: applies the lease and records the variables udhcpc
/// passed (to check the options the REST-built subnet serves).
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    env | sort > "$(dirname "$0")/udhcpc-$ip.env"
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface" ;;
esac
"#;

/// BusyBox udhcpc, one shot, in a guest: the address it got and the
/// variables of the lease.
fn udhcpc(w: &World, guest: &Guest) -> Result<(String, String)> {
    let script = w.dir().join("udhcpc.sh");
    if !script.exists() {
        std::fs::write(&script, UDHCPC_SCRIPT)?;
        vnet_e2e::run(&["chmod", "+x", &script.to_string_lossy()])?;
    }
    let standalone = Command::new("sh")
        .args(["-c", "command -v udhcpc"])
        .output()?
        .status
        .success();
    let mut args = vec!["timeout", "30"];
    if !standalone {
        args.push("busybox");
    }
    let script_s = script.to_string_lossy().into_owned();
    args.extend([
        "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-i", "eth0", "-s", &script_s,
    ]);
    let out = w.exec(guest, &args)?;
    let log = text(&out);
    if !out.status.success() {
        bail!("udhcpc in {} failed ({}):\n{log}", guest.name, out.status);
    }
    let ip = log
        .lines()
        .find_map(|l| l.split("lease of ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .with_context(|| format!("no lease in udhcpc's output:\n{log}"))?;
    let env = std::fs::read_dir(w.dir())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&format!("-{ip}.env")))
        .map(std::fs::read_to_string)
        .transpose()?
        .with_context(|| format!("udhcpc's script recorded no lease for {ip}"))?;
    Ok((ip, env))
}

/// Design note session 1: a bridge, two ports bound to the guests' veths by
/// host bindings, a DHCP subnet with two hosts. The guests get their
/// addresses by DHCP and ping each other; gRPC sees the same topology, and
/// a gRPC change is seen through REST.
#[test]
fn midonet_cli_builds_a_dhcp_bridge_whose_guests_ping() -> Result<()> {
    need_root("midonet_cli_builds_a_dhcp_bridge_whose_guests_ping")?;
    let m = Mido::new(
        "midonet-bridge",
        &[
            ("vm1", "vm1-h", "aa:bb:cc:00:00:01", None),
            ("vm2", "vm2-h", "aa:bb:cc:00:00:02", None),
        ],
    )?;
    // The host id the cli lists is the one vnetd wrote for CloudStack's
    // agent, and its interfaces are vnetd's.
    let h = m.host_id()?;
    let file = std::fs::read_to_string(m.w.dir().join("host_uuid.properties"))?;
    assert!(
        file.lines().any(|l| l == format!("host_uuid={h}")),
        "{file}"
    );
    let interfaces = m.run(&format!("host {h} list interface"))?;
    assert!(
        interfaces.contains("vm1-h"),
        "host interfaces: {interfaces}"
    );

    let b = m.make("create bridge name tenant-net")?;
    let p1 = m.make(&format!("bridge {b} add port"))?;
    let p2 = m.make(&format!("bridge {b} add port"))?;
    m.run(&format!("host {h} add binding port {p1} interface vm1-h"))?;
    m.run(&format!("host {h} add binding port {p2} interface vm2-h"))?;
    m.run(&format!(
        "bridge {b} add dhcp subnet 10.0.0.0/24 gw 10.0.0.1 dns-servers 8.8.8.8 interface-mtu 1450"
    ))?;
    m.run(&format!(
        "bridge {b} dhcp subnet 10.0.0.0/24 add host name vm1 address 10.0.0.11 mac aa:bb:cc:00:00:01"
    ))?;
    m.run(&format!(
        "bridge {b} dhcp subnet 10.0.0.0/24 add host name vm2 address 10.0.0.12 mac aa:bb:cc:00:00:02"
    ))?;
    let hosts = m.run(&format!("bridge {b} dhcp subnet 10.0.0.0/24 list host"))?;
    assert!(
        hosts.contains("10.0.0.12") && hosts.contains("aa:bb:cc:00:00:01"),
        "{hosts}"
    );

    // The same topology through gRPC, at once.
    let t = m.topology()?;
    let bridge = &t["bridges"]["tenant-net"];
    let mut bound: Vec<&str> = bridge["ports"]
        .as_object()
        .context("no ports")?
        .values()
        .filter_map(|p| p["interface"].as_str())
        .collect();
    bound.sort();
    assert_eq!(bound, ["vm1-h", "vm2-h"], "{t}");
    assert_eq!(bridge["dhcp"][0]["server"], "10.0.0.1", "{t}");
    assert_eq!(bridge["dhcp"][0]["mtu"], 1450, "{t}");

    let vm1 = m.w.guests[0].clone();
    let vm2 = m.w.guests[1].clone();
    let (ip1, env1) = udhcpc(&m.w, &vm1)?;
    let (ip2, _) = udhcpc(&m.w, &vm2)?;
    assert_eq!((ip1.as_str(), ip2.as_str()), ("10.0.0.11", "10.0.0.12"));
    assert!(
        env1.contains("dns=8.8.8.8"),
        "DNS server of the subnet: {env1}"
    );
    assert!(env1.contains("mtu=1450"), "MTU of the subnet: {env1}");
    assert!(env1.contains("router=10.0.0.1"), "gateway: {env1}");
    assert_eq!(m.w.ping(&vm1, "10.0.0.12", 3)?, 3);
    assert_eq!(m.w.ping(&vm2, "10.0.0.11", 3)?, 3);

    // A gRPC change is visible through REST: a chain made by the cli and
    // deleted by vnetctl is gone from `list chain`.
    let c = m.make("create chain name scratch")?;
    assert!(m.run("list chain")?.contains(&c));
    let out = m.w.vnetctl(&["delete", "chain", "scratch"])?;
    assert!(out.status.success(), "vnetctl delete chain: {}", text(&out));
    assert!(!m.run("list chain")?.contains(&c));

    // Deleting a host binding (Python API) takes the guest off the network.
    m.python(&format!(
        "for b in api.get_host({h:?}).get_ports():\n    if b.get_port_id() == {p2:?}:\n        b.delete()"
    ))?;
    let t = m.topology()?;
    let ports = t["bridges"]["tenant-net"]["ports"]
        .as_object()
        .context("no ports")?;
    assert!(ports.values().all(|p| p["interface"] != "vm2-h"), "{t}");
    poll(
        "vm2 unreachable once unbound",
        Duration::from_secs(10),
        || Ok((m.w.ping(&vm1, "10.0.0.12", 1)? == 0).then_some(())),
    )?;
    Ok(())
}

/// Design note sessions 2 and 3: a router linked to two bridges with
/// routes (routed ping, traceroute), then a chain with rules as a port's
/// inbound filter: its rules take effect, and deleting one undoes it.
#[test]
fn midonet_cli_routes_between_bridges_and_filters_with_chains() -> Result<()> {
    need_root("midonet_cli_routes_between_bridges_and_filters_with_chains")?;
    let m = Mido::new(
        "midonet-router",
        &[
            ("vm1", "vm1-h", "02:00:00:00:01:01", Some("10.0.1.10")),
            ("vm2", "vm2-h", "02:00:00:00:01:02", Some("10.0.2.10")),
        ],
    )?;
    let vm1 = m.w.guests[0].clone();
    let vm2 = m.w.guests[1].clone();
    m.w.route(&vm1, &["default", "via", "10.0.1.1"])?;
    m.w.route(&vm2, &["default", "via", "10.0.2.1"])?;
    let h = m.host_id()?;

    let b1 = m.make("create bridge name net1")?;
    let b2 = m.make("create bridge name net2")?;
    let vp1 = m.make(&format!("bridge {b1} add port"))?;
    let vp2 = m.make(&format!("bridge {b2} add port"))?;
    m.run(&format!("host {h} add binding port {vp1} interface vm1-h"))?;
    m.run(&format!("host {h} add binding port {vp2} interface vm2-h"))?;

    let r = m.make("create router name tenant-r")?;
    let rp1 = m.make(&format!(
        "router {r} add port address 10.0.1.1 net 10.0.1.0/24"
    ))?;
    let rp2 = m.make(&format!(
        "router {r} add port address 10.0.2.1 net 10.0.2.0/24"
    ))?;
    let bp1 = m.make(&format!("bridge {b1} add port"))?;
    let bp2 = m.make(&format!("bridge {b2} add port"))?;
    m.run(&format!("router {r} port {rp1} set peer {bp1}"))?;
    m.run(&format!("router {r} port {rp2} set peer {bp2}"))?;
    m.run(&format!(
        "router {r} add route src 0.0.0.0/0 dst 10.0.1.0/24 type normal port {rp1} weight 100"
    ))?;
    m.run(&format!(
        "router {r} add route src 0.0.0.0/0 dst 10.0.2.0/24 type normal port {rp2} weight 100"
    ))?;
    let routes = m.run(&format!("router {r} list route"))?;
    assert_eq!(routes.lines().count(), 2, "{routes}");
    // Both ends of a link show it.
    let port = m.run(&format!("bridge {b1} port {bp1} show"))?;
    assert!(port.contains(&format!("peer {rp1}")), "{port}");
    let port = m.run(&format!("router {r} port {rp1} show"))?;
    assert!(port.contains(&format!("peer {bp1}")), "{port}");

    assert_eq!(m.w.ping(&vm1, "10.0.1.1", 2)?, 2, "the gateway");
    assert_eq!(m.w.ping(&vm1, "10.0.2.10", 3)?, 3, "routed");
    let ttl = text(&m.w.exec(&vm1, &["ping", "-c", "1", "10.0.2.10"])?);
    assert!(ttl.contains("ttl=63"), "one router hop: {ttl}");
    let trace = text(&m.w.exec(
        &vm1,
        &[
            "traceroute",
            "-n",
            "-q",
            "2",
            "-w",
            "1",
            "-m",
            "4",
            "10.0.2.10",
        ],
    )?);
    let hop = |n: usize| {
        trace
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{n} ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(hop(1).contains("10.0.1.1"), "hop 1 is the router: {trace}");
    assert!(hop(2).contains("10.0.2.10"), "hop 2 is vm2: {trace}");

    // Session 3, the chain on vm1's port: ICMP (IPv4, ethertype 2048) from
    // vm1 is dropped; TCP to port 22 is accepted before the drop.
    let c = m.make("create chain name web-in")?;
    let j = m.make("create chain name extra")?;
    m.run(&format!(
        "chain {c} add rule type accept flow return-flow pos 1"
    ))?;
    m.run(&format!(
        "chain {c} add rule type accept proto 6 dst-port 22 pos 2"
    ))?;
    m.run(&format!("chain {c} add rule type jump jump-to {j} pos 3"))?;
    let drop = m.make(&format!(
        "chain {c} add rule type drop ethertype 2048 pos 4"
    ))?;
    let rules = m.run(&format!("chain {c} list rule"))?;
    assert_eq!(rules.lines().count(), 4, "{rules}");
    assert!(rules.contains("pos 4 type drop"), "{rules}");
    m.run(&format!("bridge {b1} port {vp1} set infilter {c}"))?;
    let t = m.topology()?;
    let filtered = t["bridges"]["net1"]["ports"]
        .as_object()
        .context("no ports")?
        .values()
        .filter(|p| p["inbound_filter"] == "web-in")
        .count();
    assert_eq!(filtered, 1, "{t}");

    assert_eq!(
        m.w.ping(&vm1, "10.0.2.10", 3)?,
        0,
        "ICMP from vm1 is dropped"
    );
    let server = m.w.spawn(&vm2, &["nc", "-l", "-p", "22"])?;
    let nc =
        m.w.exec(&vm1, &["nc", "-z", "-w", "3", "10.0.2.10", "22"])?;
    assert!(
        nc.status.success(),
        "TCP 22 passes the chain: {}",
        text(&nc)
    );
    drop_server(server);

    m.run(&format!("chain {c} rule {drop} delete"))?;
    assert_eq!(m.run(&format!("chain {c} list rule"))?.lines().count(), 3);
    assert_eq!(m.w.ping(&vm1, "10.0.2.10", 3)?, 3, "the drop rule is gone");
    Ok(())
}

fn drop_server(b: vnet_e2e::Background) {
    let _ = b.finish(Duration::from_millis(0));
}

/// Errors as the client sees them: an unknown id is 404, a bad field 400
/// (with MidoNet's error JSON), a field vnet cannot represent 400 saying
/// so; and nothing was changed by them.
#[test]
fn midonet_client_sees_404_and_400() -> Result<()> {
    need_root("midonet_client_sees_404_and_400")?;
    let m = Mido::new("midonet-errors", &[])?;
    let out = m.python(
        r#"
import webob.exc
def code(f):
    try:
        f()
        return 'ok'
    except webob.exc.HTTPError as e:
        return str(e.code)
r = api.add_router().name('r1').create()
print('unknown', code(lambda: api.get_bridge('11111111-2222-4333-8444-555555555555')))
print('bad-net', code(lambda: r.add_port().port_address('10.0.9.1').network_address('10.0.8.0').network_length(24).create()))
print('bad-len', code(lambda: r.add_port().port_address('10.0.9.1').network_address('10.0.9.0').network_length(40).create()))
print('bad-name', code(lambda: api.add_bridge().name('bad name!').create()))
print('redirect', code(lambda: api.add_chain().name('c').create().add_rule().type('redirect').create()))
print('good', code(lambda: r.add_port().port_address('10.0.9.1').network_address('10.0.9.0').network_length(24).create()))
print('ports', len(r.get_ports()))
"#,
    )?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "unknown 404",
            "bad-net 400",
            "bad-len 400",
            "bad-name 400",
            "redirect 400",
            "good ok",
            "ports 1"
        ],
        "{out}"
    );
    // The error JSON names the field and says what is wrong.
    let out = Command::new("ip")
        .args(["netns", "exec", &m.w.host, "curl", "-s", "-X", "POST"])
        .args([
            "-H",
            "Content-Type: application/vnd.org.midonet.Bridge-v4+json",
        ])
        .args(["-d", r#"{"name":"bad name!"}"#])
        .arg(format!("{URL}/bridges"))
        .output()?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("error body is not JSON: {}", text(&out)))?;
    assert_eq!(body["code"], 400, "{body}");
    assert_eq!(
        body["violations"][0]["property"], "bridges.bad name!",
        "{body}"
    );
    // The cli's own view of a missing id.
    let out = m.cli_output(&["bridge", "11111111-2222-4333-8444-555555555555", "show"])?;
    assert!(!out.status.success(), "{}", text(&out));
    Ok(())
}

/// `--midonet-api-token-file`: requests need the token, `/login` hands it
/// out for Basic credentials whose password is the token; beyond loopback
/// the token is required.
#[test]
fn midonet_api_token_guards_every_request() -> Result<()> {
    need_root("midonet_api_token_guards_every_request")?;
    let mut w = World::new("midonet-token")?;
    let token = "s3cret-token-for-midonet-api";
    let token_file = w.dir().join("midonet-token");
    std::fs::write(&token_file, format!("{token}\n"))?;
    let empty = w.topology_file("version: 1\n")?;
    let host_file = w.dir().join("host_uuid.properties");
    w.start_vnetd_args(
        &empty,
        &[
            "--midonet-api",
            "127.0.0.1:8181",
            "--midonet-api-token-file",
            &token_file.to_string_lossy(),
            "--midonet-host-id-file",
            &host_file.to_string_lossy(),
        ],
    )?;
    let curl = |args: &[&str]| -> Result<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &w.host,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %header{set-cookie}",
            ])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(curl(&[&format!("{URL}/bridges")])?, "401");
    assert_eq!(
        curl(&[
            "-H",
            "X-Auth-Token: wrong-token-wrong-token",
            &format!("{URL}/bridges")
        ])?,
        "401"
    );
    assert_eq!(
        curl(&[
            "-H",
            &format!("X-Auth-Token: {token}"),
            &format!("{URL}/bridges")
        ])?,
        "200"
    );
    let login = curl(&[
        "-X",
        "POST",
        "-u",
        &format!("admin:{token}"),
        &format!("{URL}/login"),
    ])?;
    assert!(
        login.starts_with("200 sessionId=") && login.contains(token),
        "{login}"
    );
    assert!(curl(&["-X", "POST", "-u", "admin:nope", &format!("{URL}/login")])?.starts_with("401"));
    w.stop_vnetd()?;

    // Beyond loopback without a token: refused before anything starts.
    let out = Command::new("ip")
        .args(["netns", "exec", &w.host])
        .arg(vnet_e2e::vnetd_path()?)
        .args(["--state-dir", &w.state_dir().to_string_lossy()])
        .args(["--socket", &w.socket().to_string_lossy()])
        .args(["--bpffs-dir", &w.bpffs_dir().to_string_lossy()])
        .args(["--midonet-api", "0.0.0.0:8181"])
        .args(["--midonet-host-id-file", &host_file.to_string_lossy()])
        .output()?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs --midonet-api-token-file"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// A Python server in a guest: accepts one connection and sends `reply`.
fn serve_once(w: &World, guest: &Guest, port: u16, reply: &str) -> Result<vnet_e2e::Background> {
    let code = format!(
        // SO_REUSEADDR: an earlier server's connection on the port may be
        // in TIME_WAIT, and the bind would fail.
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{port}))\ns.listen()\n\
         c,_=s.accept()\nc.sendall({reply:?}.encode())\nc.close()"
    );
    w.spawn(guest, &["/usr/bin/python3", "-c", &code])
}

/// What `nc` read from `addr port` (empty when it could not connect).
fn fetch(w: &World, guest: &Guest, addr: &str, port: u16) -> Result<String> {
    let out = w.exec(
        guest,
        &["sh", "-c", &format!("nc -w 3 {addr} {port} </dev/null")],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rules and routes CloudStack's MidoNet provider (MidoNetElement.java)
/// writes for a guest network, sent through the cli: a provider router with
/// the outside network; a tenant router `VPC7` whose pre-routing chain
/// jumps to pre-filter and pre-nat, linked to the provider router; routes
/// over that link that name only the port, as CloudStack sends them. Then
/// the three recipes, each carrying traffic: a port forward (dnat with
/// ports, the firewall's drop and allow, rev_dnat), source NAT (rev_snat,
/// snat), and a floating IP (static dnat/snat with the pre-filter jumps,
/// drop and firewall allow).
///
/// CloudStack puts its source-NAT `snat` rule ahead of `rev_dnat` in
/// post-routing; the port forward is tried again once that rule is there:
/// its replies must still leave from the forwarded address (MidoNet would
/// have bound them to the SNAT address; vnet's forward rules pass over the
/// replies of a connection already translated).
#[test]
fn cloudstack_recipes_carry_traffic() -> Result<()> {
    need_root("cloudstack_recipes_carry_traffic")?;
    let m = Mido::new(
        "midonet-cloudstack",
        &[
            ("vm1", "vm1-h", "02:00:00:00:07:05", Some("10.0.1.5")),
            ("vm2", "vm2-h", "02:00:00:00:07:06", Some("10.0.1.6")),
            ("out", "ext-h", "02:00:00:00:07:99", Some("192.0.2.2")),
        ],
    )?;
    let vm1 = m.w.guests[0].clone();
    let vm2 = m.w.guests[1].clone();
    let out = m.w.guests[2].clone();
    m.w.route(&vm1, &["default", "via", "10.0.1.1"])?;
    m.w.route(&vm2, &["default", "via", "10.0.1.1"])?;
    m.w.route(&out, &["203.0.113.0/24", "via", "192.0.2.1"])?;
    let h = m.host_id()?;
    let route = |r: &str, dst: &str, port: &str| {
        m.run(&format!(
            "router {r} add route src 0.0.0.0/0 dst {dst} type normal port {port} weight 100"
        ))
    };

    // The provider router, made by the administrator, with the outside.
    let pr = m.make("create router name provider")?;
    let ext = m.make(&format!(
        "router {pr} add port address 192.0.2.1 net 192.0.2.0/24"
    ))?;
    m.run(&format!("host {h} add binding port {ext} interface ext-h"))?;
    route(&pr, "192.0.2.0/24", &ext)?;

    // The guest network: bridge, tenant router, chains, the link.
    let net = m.make("create bridge name net7")?;
    for ifname in ["vm1-h", "vm2-h"] {
        let p = m.make(&format!("bridge {net} add port"))?;
        m.run(&format!("host {h} add binding port {p} interface {ifname}"))?;
    }
    let tr = m.make("create router name VPC7")?;
    let tp = m.make(&format!(
        "router {tr} add port address 10.0.1.1 net 10.0.1.0/24"
    ))?;
    let bp = m.make(&format!("bridge {net} add port"))?;
    m.run(&format!("router {tr} port {tp} set peer {bp}"))?;
    route(&tr, "10.0.1.0/24", &tp)?;
    let pre = m.make("create chain name VPC7-tenantrouter-pre-routing")?;
    let filter = m.make("create chain name VPC7-tenantrouter-pre-filter")?;
    let nat = m.make("create chain name VPC7-tenantrouter-pre-nat")?;
    let post = m.make("create chain name VPC7-tenantrouter-post-routing")?;
    m.run(&format!(
        "chain {pre} add rule type jump jump-to {filter} pos 1"
    ))?;
    m.run(&format!(
        "chain {pre} add rule type jump jump-to {nat} pos 2"
    ))?;
    m.run(&format!("router {tr} set infilter {pre} outfilter {post}"))?;
    let down = m.make(&format!(
        "router {pr} add port address 169.254.255.1 net 169.254.255.0/30"
    ))?;
    let up = m.make(&format!(
        "router {tr} add port address 169.254.255.2 net 169.254.255.0/30"
    ))?;
    m.run(&format!("router {pr} port {down} set peer {up}"))?;
    route(&tr, "0.0.0.0/0", &up)?;

    // Port forwarding (applyPFRules): TCP 203.0.113.30:8080 → vm2:80, the
    // provider's route, the firewall's default drop and an allow (jump to
    // pre-nat at position 1); rev_dnat in post-routing (applySourceNat's
    // "accept traffic that has been DNATed").
    let pf = "203.0.113.30/32";
    m.run(&format!(
        "chain {nat} add rule type dnat action accept dst {pf} proto 6 dst-port 8080 target 10.0.1.6:80 pos 1"
    ))?;
    route(&pr, pf, &down)?;
    m.run(&format!("chain {filter} add rule type drop dst {pf}"))?;
    m.run(&format!(
        "chain {filter} add rule type jump jump-to {nat} src 0.0.0.0/0 dst {pf} proto 6 dst-port 8080 pos 1"
    ))?;
    m.run(&format!(
        "chain {post} add rule type rev_dnat action accept"
    ))?;
    let server = serve_once(&m.w, &vm2, 80, "forwarded")?;
    assert_eq!(
        fetch(&m.w, &out, "203.0.113.30", 8080)?,
        "forwarded",
        "port forward to vm2"
    );
    drop_server(server);
    let _listener = serve_once(&m.w, &vm2, 81, "not forwarded")?;
    assert_eq!(
        fetch(&m.w, &out, "203.0.113.30", 81)?,
        "",
        "the firewall drops other ports"
    );

    // Source NAT (applySourceNat): rev_snat at pre-nat 1, snat at
    // post-routing 1, the provider's route to the address.
    m.run(&format!(
        "chain {nat} add rule type rev_snat action accept dst 203.0.113.10/32 in-ports {up} pos 1"
    ))?;
    m.run(&format!(
        "chain {post} add rule type snat action accept out-ports {up} target 203.0.113.10:1-65535 pos 1"
    ))?;
    route(&pr, "203.0.113.10/32", &down)?;
    let cap = m.w.capture(&out, "icmp")?;
    assert_eq!(
        m.w.ping(&vm2, "192.0.2.2", 3)?,
        3,
        "vm2 reaches the outside by SNAT"
    );
    let lines = cap.finish()?;
    assert!(
        lines.iter().any(|l| l.contains("203.0.113.10 > 192.0.2.2")),
        "the outside sees the SNAT address: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("10.0.1.6")),
        "no private address leaves: {lines:?}"
    );
    let server = serve_once(&m.w, &vm2, 80, "still forwarded")?;
    assert_eq!(
        fetch(&m.w, &out, "203.0.113.30", 8080)?,
        "still forwarded",
        "the port forward's replies leave from 203.0.113.30:8080 with the snat rule ahead of rev_dnat"
    );
    drop_server(server);

    // A floating IP 203.0.113.20 for vm1 (addMidonetStaticNAT): return
    // traffic and ICMP replies jump to pre-nat, the rest to the address is
    // dropped; a firewall allow for TCP 22 (applyFWRules) at position 1.
    let fip = "203.0.113.20/32";
    m.run(&format!(
        "chain {filter} add rule type jump jump-to {nat} dst {fip} flow return-flow pos 1"
    ))?;
    m.run(&format!(
        "chain {filter} add rule type jump jump-to {nat} dst {fip} proto 1 src-port 0 dst-port 0 pos 2"
    ))?;
    m.run(&format!(
        "chain {filter} add rule type drop dst {fip} pos 3"
    ))?;
    m.run(&format!(
        "chain {nat} add rule type dnat action accept dst {fip} in-ports {up} target 10.0.1.5 pos 1"
    ))?;
    m.run(&format!(
        "chain {post} add rule type snat action accept flow fwd-flow src 10.0.1.5/32 out-ports {up} target 203.0.113.20 pos 1"
    ))?;
    m.run(&format!(
        "chain {post} add rule type snat action accept flow return-flow src 10.0.1.5/32 out-ports {up} target 203.0.113.20 pos 2"
    ))?;
    route(&pr, fip, &down)?;
    m.run(&format!(
        "chain {filter} add rule type jump jump-to {nat} src 0.0.0.0/0 dst {fip} proto 6 dst-port 22 pos 1"
    ))?;

    let cap = m.w.capture(&out, "icmp")?;
    assert_eq!(
        m.w.ping(&vm1, "192.0.2.2", 3)?,
        3,
        "vm1 goes out as its floating IP"
    );
    let lines = cap.finish()?;
    assert!(
        lines.iter().any(|l| l.contains("203.0.113.20 > 192.0.2.2")),
        "the outside sees the floating IP: {lines:?}"
    );
    assert_eq!(
        m.w.ping(&out, "203.0.113.20", 2)?,
        0,
        "the firewall drops pings in"
    );
    let ssh = serve_once(&m.w, &vm1, 22, "ssh")?;
    assert_eq!(
        fetch(&m.w, &out, "203.0.113.20", 22)?,
        "ssh",
        "TCP 22 is allowed in"
    );
    drop_server(ssh);
    let _web = serve_once(&m.w, &vm1, 80, "web")?;
    assert_eq!(
        fetch(&m.w, &out, "203.0.113.20", 80)?,
        "",
        "TCP 80 is dropped"
    );

    // gRPC shows the chains CloudStack named, their rules in its order; the
    // route over the router link got the peer's address as its gateway.
    let t = m.topology()?;
    let filters = t["chains"]["VPC7-tenantrouter-pre-filter"]
        .as_array()
        .context("no pre-filter chain")?;
    assert_eq!(filters.len(), 6, "{t}");
    assert_eq!(filters[0]["match"]["dst_ports"], 22, "{t}");
    let default = t["routers"]["VPC7"]["routes"]
        .as_array()
        .context("no routes")?
        .iter()
        .find(|r| r["dst"] == "0.0.0.0/0")
        .cloned()
        .context("no default route")?;
    assert_eq!(default["via"], "169.254.255.1", "{t}");
    Ok(())
}

/// Through the midonetclient Python API: CloudStack's NIC flow (the NIC id
/// as a port's `vifId`, then the agent finds the port by it and binds its
/// tap on the host the host_uuid file names), an IP address group and a
/// port group used by a bridge's inbound chain, each rule taking effect.
#[test]
fn midonet_client_groups_and_vif_bindings_take_effect() -> Result<()> {
    need_root("midonet_client_groups_and_vif_bindings_take_effect")?;
    let m = Mido::new(
        "midonet-groups",
        &[
            ("vm1", "vm1-h", "02:00:00:00:05:01", Some("10.0.5.1")),
            ("vm2", "vm2-h", "02:00:00:00:05:02", Some("10.0.5.2")),
            ("vm3", "vm3-h", "02:00:00:00:05:03", Some("10.0.5.3")),
        ],
    )?;
    let vm1 = m.w.guests[0].clone();
    let vm2 = m.w.guests[1].clone();
    let host_file = std::fs::read_to_string(m.w.dir().join("host_uuid.properties"))?;
    let host_id = host_file
        .lines()
        .find_map(|l| l.strip_prefix("host_uuid="))
        .context("no host_uuid line")?;
    let out = m.python(&format!(
        r#"
nics = ['0b0c0d0e-1111-4222-8333-44445555000%d' % i for i in (1, 2, 3)]
b = api.add_bridge().name('groups').tenant_id('acct').create()
ports = [b.add_port().create() for _ in nics]
for p, nic in zip(ports, nics):
    p.vif_id(nic).update()
# The KVM agent: its host from host_uuid.properties, the port by vifId.
host = [h for h in api.get_hosts() if h.get_id() == {host_id:?}][0]
for i, nic in enumerate(nics):
    for p in b.get_ports():
        if p.get_vif_id() == nic:
            host.add_host_interface_port().port_id(p.get_id()).interface_name('vm%d-h' % (i + 1)).create()
print(len(host.get_ports()))
"#
    ))?;
    assert_eq!(out, "3", "three bindings");
    assert_eq!(m.w.ping(&vm1, "10.0.5.2", 3)?, 3, "bound by vifId");
    assert_eq!(m.w.ping(&vm2, "10.0.5.3", 3)?, 3);

    let out = m.python(
        r#"
b = [b for b in api.get_bridges() if b.get_name() == 'groups'][0]
g = api.add_ip_addr_group().name('blocked').create()
g.add_ipv4_addr().addr('10.0.5.1').create()
c = api.add_chain().name('groups-in').create()
c.add_rule().type('drop').ip_addr_group_src(g.get_id()).position(1).create()
b.inbound_filter_id(c.get_id()).update()
print([a.get_addr() for a in g.get_addrs()])
"#,
    )?;
    assert_eq!(out, "['10.0.5.1']");
    assert_eq!(
        m.w.ping(&vm1, "10.0.5.2", 3)?,
        0,
        "vm1's address is in the dropped group"
    );
    assert_eq!(m.w.ping(&vm2, "10.0.5.3", 3)?, 3, "others pass");

    let out = m.python(
        r#"
b = [b for b in api.get_bridges() if b.get_name() == 'groups'][0]
vm3 = [p for p in b.get_ports() if p.get_interface_name() == 'vm3-h'][0]
pg = api.add_port_group().name('quiet').stateful(False).create()
pg.add_port_group_port().port_id(vm3.get_id()).create()
c = [c for c in api.get_chains() if c.get_name() == 'groups-in'][0]
c.add_rule().type('drop').port_group(pg.get_id()).nw_proto(1).position(2).create()
print(len(pg.get_ports()), [r.get_position() for r in c.get_rules()])
"#,
    )?;
    assert_eq!(out, "1 [1, 2]");
    assert_eq!(
        m.w.ping(&vm2, "10.0.5.3", 3)?,
        0,
        "ICMP from the port group is dropped"
    );

    let t = m.topology()?;
    assert_eq!(
        t["port_groups"]["quiet"]["ports"].as_array().map(Vec::len),
        Some(1),
        "{t}"
    );
    assert_eq!(t["ip_groups"]["blocked"][0], "10.0.5.1", "{t}");
    let vifs = t["bridges"]["groups"]["ports"]
        .as_object()
        .context("no ports")?
        .values()
        .filter(|p| p["vif_id"].is_string())
        .count();
    assert_eq!(vifs, 3, "{t}");
    Ok(())
}
