//! Real VMs on vnet: QEMU guests (Debian's cloud kernel, a busybox
//! initramfs, virtio-net on a tap, the guest's default offloads) whose taps
//! QEMU creates after vnetd started, as libvirt does. They get their
//! addresses from vnet's DHCP, ping, and download files over TCP (md5
//! compared) bridged, routed, through SNAT, and from each other.
//!
//! The guests' offloads are never touched: virtio's defaults send TCP with
//! partial checksums (and 64 KB GSO frames) through the tap, which is what
//! a cloud's VMs do. Each download test checks that they are on.
//!
//! The topology: VMs vm1 (vm1-tap) and vm2 (vm2-tap) and the namespace
//! guest `ns` (10.0.0.20) on bridge `tenant` (DHCP: vm1 10.0.0.11, vm2
//! 10.0.0.12, gateway 10.0.0.1); the namespace guest `srv` (10.0.1.10) on
//! bridge `servers`; router `edge` between them and the uplink to the
//! namespace `out` (192.0.2.1), with SNAT of 10.0.0.0/24 to 192.0.2.10.
//! `out` has no route to 10.0.0.0/24: only SNAT brings its answers back.
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use vnet_e2e::vm::{Vm, VmSpec};
use vnet_e2e::{have_root, poll, run, Background, Guest, World};

const TOPOLOGY: &str = r#"
version: 1
bridges:
  tenant:
    dhcp:
      - subnet: 10.0.0.0/24
        server: 10.0.0.2
        gateway: 10.0.0.1
        dns: [192.0.2.1]
        hosts:
          - {mac: "52:54:00:00:01:01", ip: 10.0.0.11, name: vm1}
          - {mac: "52:54:00:00:01:02", ip: 10.0.0.12, name: vm2}
    ports:
      vm1: {interface: vm1-tap}
      vm2: {interface: vm2-tap}
      ns: {interface: ns-h}
      gw: {peer: edge/tenant}
  servers:
    ports:
      srv: {interface: srv-h}
      gw: {peer: edge/servers}
routers:
  edge:
    ports:
      tenant: {address: 10.0.0.1/24, peer: tenant/gw}
      servers: {address: 10.0.1.1/24, peer: servers/gw}
      uplink: {address: 192.0.2.2/24, interface: uplink-h}
    routes:
      - {dst: 10.0.0.0/24, port: tenant}
      - {dst: 10.0.1.0/24, port: servers}
      - {dst: 192.0.2.0/24, port: uplink}
nat:
  - {router: edge, type: snat, from: 10.0.0.0/24, to: 192.0.2.10, ports: 1024-65535, port: uplink}
"#;

const VM1: (&str, &str, &str, &str) = ("vm1", "vm1-tap", "52:54:00:00:01:01", "10.0.0.11");
const VM2: (&str, &str, &str, &str) = ("vm2", "vm2-tap", "52:54:00:00:01:02", "10.0.0.12");

/// Size of the files downloaded: several hundred full-sized segments, and
/// many 64 KB GSO frames from a VM.
const BLOB_BYTES: usize = 4 << 20;
/// One download of BLOB_BYTES, TCG guests included (they move 0.6–1.3
/// Gbit/s here): a working path takes well under a second.
const DOWNLOAD_TIMEOUT_S: u32 = 20;
const CMD: Duration = Duration::from_secs(20);

struct Net {
    w: World,
    ns: Guest,
    srv: Guest,
    out: Guest,
}

/// The world above with vnetd running and no VM yet: vnetd starts with no
/// topology, the topology is applied (the taps do not exist yet: their
/// ports wait), then the VMs' QEMUs create the taps.
fn net(test: &str) -> Result<Net> {
    let mut w = World::new(test)?;
    let ns = w.guest("ns", "ns-h", "02:00:00:00:02:20", "10.0.0.20")?;
    let srv = w.guest("srv", "srv-h", "02:00:00:00:03:10", "10.0.1.10")?;
    let out = w.guest("out", "uplink-h", "02:00:00:00:09:01", "192.0.2.1")?;
    w.route(&ns, &["default", "via", "10.0.0.1"])?;
    w.route(&srv, &["default", "via", "10.0.1.1"])?;
    // The servers stand for the network, not for guests: they send full
    // checksums, as traffic from a real NIC arrives, so the VMs verify every
    // checksum vnet rewrote on the way (a partial one would be trusted, and
    // a wrong seed would go unseen).
    for server in [&ns, &srv, &out] {
        run(&[
            "ip",
            "netns",
            "exec",
            &server.netns,
            "ethtool",
            "-K",
            "eth0",
            "tx",
            "off",
        ])?;
    }
    w.start_vnetd_stored()?;
    w.apply(TOPOLOGY)?;
    for port in ["tenant/ns", "servers/srv"] {
        wait_bound(&w, port, None)?;
    }
    Ok(Net { w, ns, srv, out })
}

/// `port`'s entry in `vnetctl status -o json`.
fn port_status(w: &World, port: &str) -> Result<serde_json::Value> {
    let status = w.vnetctl_json(&["status"])?;
    status["ports"]
        .as_array()
        .context("status has ports")?
        .iter()
        .find(|p| p["port"] == port)
        .cloned()
        .with_context(|| format!("{port} in {status}"))
}

/// Waits until vnetd has bound `port` (to `interface`, when given).
fn wait_bound(w: &World, port: &str, interface: Option<&str>) -> Result<serde_json::Value> {
    poll(
        &format!("vnetd binding {port}"),
        Duration::from_secs(10),
        || {
            let p = port_status(w, port)?;
            let right_if = interface.is_none_or(|i| p["interface"] == i);
            Ok((p["state"] == "bound" && right_if).then_some(p))
        },
    )
    .with_context(|| format!("vnetd's log:\n{}", w.vnetd_log()))
}

/// Starts the VMs `specs` (name, tap, MAC, expected address), waits until
/// vnetd has bound their taps, and configures each by DHCP.
fn vms(n: &Net, specs: &[(&str, &str, &str, &str)]) -> Result<Vec<Vm>> {
    let list: Vec<VmSpec> = specs
        .iter()
        .map(|(name, tap, mac, _)| VmSpec::new(name, tap, mac))
        .collect();
    let mut vms = Vm::start_all(&n.w, &list)?;
    for (vm, (name, tap, _, ip)) in vms.iter_mut().zip(specs) {
        wait_bound(&n.w, &format!("tenant/{name}"), Some(tap))?;
        let got = dhcp(vm)?;
        if got != *ip {
            bail!("{name} got {got} by DHCP, not its host entry's {ip}");
        }
    }
    Ok(vms)
}

/// Runs busybox udhcpc in the guest (the image's hook configures eth0);
/// returns the address it bound.
fn dhcp(vm: &mut Vm) -> Result<String> {
    vm.ok("ip link set eth0 up", CMD)?;
    vm.ok(
        "udhcpc -i eth0 -n -q -t 10 -T 1 -s /usr/share/udhcpc/default.script",
        Duration::from_secs(30),
    )
    .context("no DHCP lease from vnet")?;
    let env = vm.ok("cat /run/udhcpc.eth0.bound", CMD)?;
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    let ip = var("ip").with_context(|| format!("udhcpc passed no ip:\n{env}"))?;
    let addrs = vm.ok("ip -4 -o addr show dev eth0", CMD)?;
    if !addrs.contains(&format!("{ip}/24")) {
        bail!(
            "{}: eth0 does not have {ip}/24 after the lease:\n{addrs}",
            vm.name
        );
    }
    Ok(ip)
}

/// busybox ping from the VM: the number of replies.
fn vm_ping(vm: &mut Vm, to: &str, count: u32) -> Result<u32> {
    let r = vm.sh(&format!("ping -c {count} -W 2 {to}"), CMD)?;
    // "3 packets transmitted, 3 packets received, 0% packet loss"
    r.output
        .lines()
        .find_map(|l| {
            l.split(", ")
                .find_map(|p| p.strip_suffix(" packets received"))?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{}: ping {to} printed no summary:\n{}", vm.name, r.output))
}

/// The guest's offloads as `ethtool -k` shows them (read only): the tests
/// must run with virtio's defaults, transmit checksum offload and TSO on.
fn assert_default_offloads(vm: &mut Vm) -> Result<()> {
    let k = vm.ok("ethtool -k eth0", CMD)?;
    for feature in ["tx-checksumming: on", "tcp-segmentation-offload: on"] {
        if !k.lines().any(|l| l.trim() == feature) {
            bail!("{}: expected `{feature}` (virtio's default):\n{k}", vm.name);
        }
    }
    Ok(())
}

/// A file of random bytes in the world's directory and its md5.
fn blob(w: &World, name: &str) -> Result<(PathBuf, String)> {
    let dir = w.dir().join(format!("www-{name}"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("blob");
    let mut bytes = vec![0u8; BLOB_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    std::fs::write(&path, &bytes)?;
    let out = vnet_e2e::run(&["md5sum", path.to_str().context("path")?])?;
    let md5 = first_word(&String::from_utf8_lossy(&out.stdout))?;
    Ok((path, md5))
}

fn first_word(s: &str) -> Result<String> {
    s.split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("no md5 in {s:?}"))
}

/// Python's HTTP server in `g` on port 8000, serving `dir`, its request
/// log (the client addresses it saw) in `log`.
fn http_server(w: &World, g: &Guest, dir: &std::path::Path) -> Result<(Background, PathBuf)> {
    let log = w.dir().join(format!("http-{}.log", g.name));
    let cmd = format!(
        "exec /usr/bin/python3 -m http.server 8000 --bind 0.0.0.0 --directory '{}' 2>>'{}'",
        dir.display(),
        log.display()
    );
    // `exec`: the shell becomes the server, whose socket spawn waits for.
    let bg = w.spawn(g, &["sh", "-c", &cmd])?;
    Ok((bg, log))
}

/// The TCP checksum errors a host counted (InCsumErrors of /proc/net/snmp).
fn in_csum_errors(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "InCsumErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

fn netns_snmp(g: &Guest) -> String {
    Command::new("ip")
        .args(["netns", "exec", &g.netns, "cat", "/proc/net/snmp"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn vm_snmp(vm: &mut Vm) -> String {
    vm.ok("cat /proc/net/snmp", CMD).unwrap_or_default()
}

/// What a failed transfer leaves to look at: both ends' TCP checksum
/// errors (a partial checksum that reached a receiver unfinished), vnetd's
/// drop counters, the end of vnetd's log.
fn why(w: &World, client: &mut Vm, server: Server<'_>) -> String {
    let (server_name, server_snmp) = match server {
        Server::Netns(g) => (g.name.clone(), netns_snmp(g)),
        Server::Vm(vm) => (vm.name.clone(), vm_snmp(vm)),
    };
    let client_snmp = vm_snmp(client);
    let stats = w
        .vnetctl(&["stats"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let log = w.vnetd_log();
    let log_tail: Vec<&str> = log.lines().rev().take(30).collect();
    format!(
        "TCP InCsumErrors: {server_name} {:?}, {} {:?}\n{}'s console: {}\n\
         vnetctl stats:\n{stats}\nend of vnetd's log:\n{}",
        in_csum_errors(&server_snmp),
        client.name,
        in_csum_errors(&client_snmp),
        client.name,
        client.console_log_path().display(),
        log_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

enum Server<'a> {
    Netns(&'a Guest),
    Vm(&'a mut Vm),
}

/// The VM downloads `url` with busybox wget (under `timeout`: busybox
/// 1.35's `wget -T` segfaults) and returns the md5 of what it got.
fn vm_download(vm: &mut Vm, url: &str) -> Result<String> {
    let started = Instant::now();
    let out = vm.ok(
        &format!(
            "rm -f /tmp/got && timeout {DOWNLOAD_TIMEOUT_S} wget -q -O /tmp/got {url} && md5sum /tmp/got"
        ),
        Duration::from_secs(u64::from(DOWNLOAD_TIMEOUT_S) + 15),
    )?;
    eprintln!(
        "{}: downloaded {url} in {:.2} s",
        vm.name,
        started.elapsed().as_secs_f64()
    );
    first_word(&out)
}

/// vm1 (on vnet's `tenant` bridge) downloads a file from the namespace
/// guest `pick` names, at the address it gives.
fn download_from_namespace(
    test: &str,
    pick: impl Fn(&Net) -> (Guest, &'static str),
    seen_as: &str,
) -> Result<()> {
    let n = net(test)?;
    let (server, ip) = pick(&n);
    let mut vms = vms(&n, &[VM1])?;
    download_from(&n.w, &mut vms[0], &server, ip, seen_as)
}

/// `vm` downloads a file from the namespace guest `server` at `ip` and
/// compares its md5; the server must have seen the client as `seen_as`.
fn download_from(w: &World, vm: &mut Vm, server: &Guest, ip: &str, seen_as: &str) -> Result<()> {
    assert_default_offloads(vm)?;
    let (path, md5) = blob(w, &server.name)?;
    let (_http, log) = http_server(w, server, path.parent().context("dir")?)?;
    let got = match vm_download(vm, &format!("http://{ip}:8000/blob")) {
        Ok(got) => got,
        Err(e) => {
            let why = why(w, vm, Server::Netns(server));
            return Err(e.context(format!("the download failed\n{why}")));
        }
    };
    assert_eq!(
        got, md5,
        "the file {} downloaded from {ip} is not the one served",
        vm.name
    );
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        seen.lines()
            .any(|l| l.starts_with(&format!("{seen_as} ")) && l.contains("GET /blob")),
        "{} should have seen the request from {seen_as}:\n{seen}",
        server.name
    );
    Ok(())
}

/// Random bytes made in the guest, served by busybox httpd on port 8000
/// (which puts itself in the background once it listens; the loop waits
/// for that, 5 s at most); returns their md5.
fn serve_from_vm(vm: &mut Vm) -> Result<String> {
    let out = vm.ok(
        "mkdir -p /www && dd if=/dev/urandom of=/www/blob bs=64k count=64 2>/dev/null \
         && httpd -p 8000 -h /www && md5sum /www/blob \
         && for i in $(seq 50); do netstat -ltn | grep -q ':8000 ' && break; sleep 0.1; done \
         && netstat -ltn | grep -q ':8000 '",
        CMD,
    )?;
    first_word(&out)
}

/// `client` downloads the blob `server` (at `ip`) serves; its md5 must be
/// `md5`.
fn fetch_from_vm(w: &World, client: &mut Vm, server: &mut Vm, ip: &str, md5: &str) -> Result<()> {
    let got = match vm_download(client, &format!("http://{ip}:8000/blob")) {
        Ok(got) => got,
        Err(e) => {
            let why = why(w, client, Server::Vm(server));
            return Err(e.context(format!("the download failed\n{why}")));
        }
    };
    assert_eq!(got, md5, "{} got another file from {ip}", client.name);
    Ok(())
}

#[test]
fn a_vm_whose_tap_appears_after_vnetd_started_gets_its_address_by_dhcp_and_pings() -> Result<()> {
    if !have_root("a_vm_whose_tap_appears_after_vnetd_started_gets_its_address_by_dhcp_and_pings") {
        return Ok(());
    }
    let n = net("vm-dhcp")?;
    // No tap yet: the VM's port waits for QEMU to create it.
    assert_eq!(port_status(&n.w, "tenant/vm1")?["state"], "waiting");
    let mut vms = vms(&n, &[VM1])?;
    let vm = &mut vms[0];
    let lease = vm.ok("cat /run/udhcpc.eth0.bound", CMD)?;
    for want in ["ip=10.0.0.11", "router=10.0.0.1", "serverid=10.0.0.2"] {
        assert!(
            lease.lines().any(|l| l == want),
            "udhcpc's lease has {want}:\n{lease}"
        );
    }
    let route = vm.ok("ip route show default", CMD)?;
    assert!(route.contains("via 10.0.0.1"), "default route: {route}");
    assert_eq!(vm_ping(vm, "10.0.0.1", 3)?, 3, "vm1 pings its gateway");
    assert_eq!(vm_ping(vm, "10.0.0.20", 3)?, 3, "vm1 pings ns");
    assert_eq!(n.w.ping(&n.ns, "10.0.0.11", 3)?, 3, "ns pings vm1");
    assert_eq!(
        vm_ping(vm, "10.0.1.10", 3)?,
        3,
        "vm1 pings srv across the router"
    );
    Ok(())
}

#[test]
fn a_vm_downloads_a_file_bridged_with_its_checksum_intact() -> Result<()> {
    if !have_root("a_vm_downloads_a_file_bridged_with_its_checksum_intact") {
        return Ok(());
    }
    download_from_namespace("vm-bridged", |n| (n.ns.clone(), "10.0.0.20"), "10.0.0.11")
}

#[test]
fn a_vm_downloads_a_file_routed_with_its_checksum_intact() -> Result<()> {
    if !have_root("a_vm_downloads_a_file_routed_with_its_checksum_intact") {
        return Ok(());
    }
    download_from_namespace("vm-routed", |n| (n.srv.clone(), "10.0.1.10"), "10.0.0.11")
}

#[test]
fn a_vm_downloads_a_file_through_snat_with_its_checksum_intact() -> Result<()> {
    if !have_root("a_vm_downloads_a_file_through_snat_with_its_checksum_intact") {
        return Ok(());
    }
    // `out` has no route to 10.0.0.0/24: it answers 192.0.2.10, SNAT's
    // address, and only SNAT brings the answers back to vm1.
    download_from_namespace("vm-snat", |n| (n.out.clone(), "192.0.2.1"), "192.0.2.10")
}

#[test]
fn two_vms_exchange_files_over_tcp_with_their_checksums_intact() -> Result<()> {
    if !have_root("two_vms_exchange_files_over_tcp_with_their_checksums_intact") {
        return Ok(());
    }
    let n = net("vm-pair")?;
    let mut vms = vms(&n, &[VM1, VM2])?;
    let (vm1, vm2) = match vms.as_mut_slice() {
        [a, b] => (a, b),
        _ => unreachable!("two VMs were started"),
    };
    assert_default_offloads(vm1)?;
    assert_default_offloads(vm2)?;
    let served1 = serve_from_vm(vm1)?;
    let served2 = serve_from_vm(vm2)?;
    fetch_from_vm(&n.w, vm2, vm1, "10.0.0.11", &served1)?;
    fetch_from_vm(&n.w, vm1, vm2, "10.0.0.12", &served2)?;
    Ok(())
}

#[test]
fn control_the_same_transfers_work_through_a_linux_bridge() -> Result<()> {
    if !have_root("control_the_same_transfers_work_through_a_linux_bridge") {
        return Ok(());
    }
    // Not vnet: the same VMs, namespace and transfers on a Linux bridge,
    // which handles partial checksums. It shows that the image, the
    // harness and the checks work with virtio's default offloads, so that
    // a failure of the tests above is vnet's.
    let mut w = World::new("vm-linux-bridge")?;
    let ns = w.guest("ns", "ns-h", "02:00:00:00:02:20", "10.0.0.20")?;
    run(&["ip", "-n", &w.host, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", &w.host, "link", "set", "br0", "up"])?;
    run(&["ip", "-n", &w.host, "link", "set", "ns-h", "master", "br0"])?;
    let specs = [VM1, VM2].map(|(name, tap, mac, _)| VmSpec::new(name, tap, mac));
    let mut vms = Vm::start_all(&w, &specs)?;
    for (vm, (_, tap, _, ip)) in vms.iter_mut().zip([VM1, VM2]) {
        run(&["ip", "-n", &w.host, "link", "set", tap, "master", "br0"])?;
        vm.ok(
            &format!("ip link set eth0 up && ip addr add {ip}/24 dev eth0"),
            CMD,
        )?;
    }
    let (vm1, vm2) = match vms.as_mut_slice() {
        [a, b] => (a, b),
        _ => unreachable!("two VMs were started"),
    };
    download_from(&w, vm1, &ns, "10.0.0.20", "10.0.0.11")?;
    let served1 = serve_from_vm(vm1)?;
    fetch_from_vm(&w, vm2, vm1, "10.0.0.11", &served1)?;
    Ok(())
}

#[test]
fn snmp_checksum_errors_are_read_from_the_tcp_lines() {
    let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                Tcp: RtoAlgorithm RtoMin InCsumErrors\nTcp: 1 200 7\n\
                Udp: InDatagrams InCsumErrors\nUdp: 3 9\n";
    assert_eq!(in_csum_errors(snmp), Some(7));
    assert_eq!(in_csum_errors("Ip: a\nIp: 1\n"), None);
}
