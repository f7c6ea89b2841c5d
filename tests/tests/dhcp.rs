//! DHCP served by the dataplane, proven with real clients: ISC dhclient,
//! BusyBox udhcpc and dhcpcd configure guests on the example bridge.
//!
//! Clients run in the guest's namespace and in a UTS namespace of their own
//! (their scripts may set the host name). Their scripts write
//! /etc/resolv.conf: `ip netns exec` binds /etc/netns/<netns>/resolv.conf
//! over it, which [`ResolvConf`] creates and removes. No client outlives
//! its test: one-shot runs are under `timeout`, foreground ones are killed
//! on drop.
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use vnet_e2e::{have_root, repo_root, Guest, World};

const VM1_MAC: &str = "02:00:00:00:01:01";
const VM2_MAC: &str = "02:00:00:00:01:02";
/// Not in the example's host list: gets a pool address.
const VM3_MAC: &str = "02:00:00:00:01:03";

fn example_yaml() -> Result<String> {
    Ok(std::fs::read_to_string(
        repo_root().join("examples/bridge.yaml"),
    )?)
}

/// The example bridge with three guests without addresses and vnetd
/// running on `topology` (the example file itself when `None`).
fn example_world(test: &str, topology: Option<&str>) -> Result<(World, Guest, Guest, Guest)> {
    let mut w = World::new(test)?;
    let vm1 = w.guest_without_address("vm1", "vm1-h", VM1_MAC)?;
    let vm2 = w.guest_without_address("vm2", "vm2-h", VM2_MAC)?;
    let vm3 = w.guest_without_address("vm3", "vm3-h", VM3_MAC)?;
    let path = match topology {
        Some(yaml) => w.topology_file(yaml)?,
        None => repo_root().join("examples/bridge.yaml"),
    };
    w.start_vnetd(&path)?;
    Ok((w, vm1, vm2, vm3))
}

/// /etc/netns/<netns>/resolv.conf for one guest; removed on drop.
struct ResolvConf {
    dir: PathBuf,
}

impl ResolvConf {
    fn new(guest: &Guest) -> Result<ResolvConf> {
        let dir = PathBuf::from("/etc/netns").join(&guest.netns);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), "")?;
        Ok(ResolvConf { dir })
    }

    fn read(&self) -> String {
        std::fs::read_to_string(self.dir.join("resolv.conf")).unwrap_or_default()
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `args` in the guest's namespace, in a UTS namespace of its own.
fn in_guest(guest: &Guest, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &guest.netns, "unshare", "--uts", "--"]);
    c.args(args);
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A client in the foreground; SIGTERM then SIGKILL on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(mut cmd: Command, log: PathBuf) -> Result<Running> {
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the client")?;
        Ok(Running { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `n` lines containing `text`.
    fn wait_for(&mut self, text: &str, n: usize, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.lines().filter(|l| l.contains(text)).count() >= n {
                return Ok(log);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the client exited ({status}) before logging `{text}` {n} times:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("no `{text}` ({n} times) within {within:?}; the client's log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Running {
    /// Stops the client (SIGTERM) and returns its log.
    fn stop(mut self) -> String {
        self.terminate();
        self.log()
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// ISC dhclient in the foreground (`-d`), trying once (`-1`), with its
/// lease and pid files in the world's directory. It stays to renew.
fn dhclient(w: &World, guest: &Guest) -> Result<Running> {
    let file = |ext: &str| {
        w.dir()
            .join(format!("dhclient-{}.{ext}", guest.name))
            .display()
            .to_string()
    };
    let (pid, leases) = (file("pid"), file("leases"));
    let cmd = in_guest(
        guest,
        &[
            "dhclient", "-d", "-v", "-1", "-pf", &pid, "-lf", &leases, "eth0",
        ],
    );
    Running::spawn(cmd, PathBuf::from(file("log")))
}

fn dhclient_lease_file(w: &World, guest: &Guest) -> PathBuf {
    w.dir().join(format!("dhclient-{}.leases", guest.name))
}

/// The udhcpc script: records the variables udhcpc passes and applies them
/// (Debian's default script ignores option 121).
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
env | sort > "$(dirname "$0")/udhcpc-$interface-$1.env"
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    : > /etc/resolv.conf
    for s in $dns; do echo "nameserver $s" >> /etc/resolv.conf; done ;;
esac
"#;

/// The udhcpc command line (the binary is `udhcpc`, or BusyBox's applet)
/// in the foreground with the script above, then `extra`.
fn udhcpc_args(w: &World, extra: &[&str]) -> Result<Vec<String>> {
    let script = w.dir().join("udhcpc.sh");
    if !script.exists() {
        std::fs::write(&script, UDHCPC_SCRIPT)?;
        run_ok(Command::new("chmod").arg("+x").arg(&script))?;
    }
    let standalone = Command::new("sh")
        .args(["-c", "command -v udhcpc"])
        .output()?
        .status
        .success();
    let mut args: Vec<String> = if standalone {
        vec!["udhcpc".into()]
    } else {
        vec!["busybox".into(), "udhcpc".into()]
    };
    let script = script.display().to_string();
    for a in ["-f", "-i", "eth0", "-s", &script].iter().chain(extra) {
        args.push(a.to_string());
    }
    Ok(args)
}

/// The address in udhcpc's "lease of 10.0.0.135 obtained from ..." line.
fn udhcpc_lease(log: &str) -> Result<String> {
    log.lines()
        .find_map(|l| l.split("lease of ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .with_context(|| format!("no lease in udhcpc's output:\n{log}"))
}

/// BusyBox udhcpc, one shot: quits once it has a lease (`-q`), fails
/// when it gets none (`-n`). `extra` adds flags (`-r IP` asks for an
/// address). Returns the address it got.
fn udhcpc(w: &World, guest: &Guest, extra: &[&str]) -> Result<String> {
    let mut args = vec!["timeout".to_string(), "30".to_string()];
    args.extend(udhcpc_args(
        w,
        &[&["-q", "-n", "-t", "5", "-T", "2"], extra].concat(),
    )?);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_guest(guest, &args).output()?;
    let log = text(&out);
    if !out.status.success() {
        bail!("udhcpc failed ({}):\n{log}", out.status);
    }
    udhcpc_lease(&log)
}

/// dhcpcd, one shot in the foreground. Its pid file, control socket and
/// lease database live under /run and /var/lib/dhcpcd, which are shared
/// by every namespace: it gets private, empty ones (a mount namespace with
/// tmpfs over both), so guests neither collide nor leave files behind.
fn dhcpcd(guest: &Guest) -> Result<String> {
    let out = in_guest(
        guest,
        &[
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib/dhcpcd && \
             exec timeout 40 dhcpcd -B -1 -4 -t 30 eth0",
        ],
    )
    .output()?;
    let log = text(&out);
    if !out.status.success() {
        bail!("dhcpcd failed ({}):\n{log}", out.status);
    }
    Ok(log)
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", text(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a guest's eth0 ended up with.
struct NetConfig {
    /// `10.0.0.11/24`
    address: String,
    routes: String,
    link_mtu: String,
}

fn net_config(w: &World, guest: &Guest) -> Result<NetConfig> {
    let addr = text(&w.exec(guest, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?);
    let address = addr
        .split_whitespace()
        .skip_while(|t| *t != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let routes = text(&w.exec(guest, &["ip", "-4", "route", "show", "dev", "eth0"])?);
    let link = text(&w.exec(guest, &["ip", "-o", "link", "show", "dev", "eth0"])?);
    let link_mtu = link
        .split_whitespace()
        .skip_while(|t| *t != "mtu")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok(NetConfig {
        address,
        routes,
        link_mtu,
    })
}

fn pool_address(address: &str) -> bool {
    address
        .strip_prefix("10.0.0.")
        .and_then(|rest| rest.strip_suffix("/24"))
        .and_then(|host| host.parse::<u8>().ok())
        .is_some_and(|h| (100..=199).contains(&h))
}

/// The example's configuration: the default route via 10.0.0.1 and the
/// option-121 route, DNS 10.0.0.2, MTU 1450 (on the link, or on every
/// route for dhcpcd, which puts option 26 there).
fn assert_example_config(c: &NetConfig, resolv: &ResolvConf, mtu_on_routes: bool, client: &str) {
    let routes = &c.routes;
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("default via 10.0.0.1 ")),
        "{client}: default route via 10.0.0.1:\n{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("169.254.169.254 via 10.0.0.3 ")),
        "{client}: option-121 route:\n{routes}"
    );
    assert!(
        resolv
            .read()
            .lines()
            .any(|l| l.trim() == "nameserver 10.0.0.2"),
        "{client}: DNS server in resolv.conf:\n{}",
        resolv.read()
    );
    if mtu_on_routes {
        assert!(
            routes.lines().all(|l| l.contains(" mtu 1450")),
            "{client}: MTU 1450 on every route:\n{routes}"
        );
    } else {
        assert_eq!(c.link_mtu, "1450", "{client}: MTU of eth0");
    }
}

#[test]
fn dhclient_configures_a_static_host_and_a_pool_guest() -> Result<()> {
    if !have_root("dhclient_configures_a_static_host_and_a_pool_guest") {
        return Ok(());
    }
    let (w, vm1, _vm2, vm3) = example_world("dhclient", None)?;
    let (r1, r3) = (ResolvConf::new(&vm1)?, ResolvConf::new(&vm3)?);
    let mut c1 = dhclient(&w, &vm1)?;
    let mut c3 = dhclient(&w, &vm3)?;
    c1.wait_for("bound to 10.0.0.11 ", 1, Duration::from_secs(20))?;
    let log3 = c3.wait_for("bound to ", 1, Duration::from_secs(20))?;
    assert!(
        c1.log().contains("DHCPOFFER of 10.0.0.11 from 10.0.0.2"),
        "{}",
        c1.log()
    );

    let n1 = net_config(&w, &vm1)?;
    assert_eq!(n1.address, "10.0.0.11/24");
    assert_example_config(&n1, &r1, false, "dhclient on vm1");
    let n3 = net_config(&w, &vm3)?;
    assert!(pool_address(&n3.address), "vm3: {} ({log3})", n3.address);
    assert_example_config(&n3, &r3, false, "dhclient on vm3");
    // The host name (option 12) reached the client: in its lease file.
    let leases = std::fs::read_to_string(dhclient_lease_file(&w, &vm1))?;
    assert!(leases.contains("option host-name \"vm1\";"), "{leases}");

    // The configuration works: the guests reach each other.
    let vm3_ip = n3.address.trim_end_matches("/24");
    assert_eq!(w.ping(&vm1, vm3_ip, 3)?, 3, "vm1 -> vm3 at {vm3_ip}");
    Ok(())
}

#[test]
fn udhcpc_configures_a_static_host_and_a_pool_guest() -> Result<()> {
    if !have_root("udhcpc_configures_a_static_host_and_a_pool_guest") {
        return Ok(());
    }
    let (w, _vm1, vm2, vm3) = example_world("udhcpc", None)?;
    let (r2, r3) = (ResolvConf::new(&vm2)?, ResolvConf::new(&vm3)?);
    assert_eq!(udhcpc(&w, &vm2, &[])?, "10.0.0.12");
    let got = udhcpc(&w, &vm3, &[])?;

    let n2 = net_config(&w, &vm2)?;
    assert_eq!(n2.address, "10.0.0.12/24");
    assert_example_config(&n2, &r2, false, "udhcpc on vm2");
    let n3 = net_config(&w, &vm3)?;
    assert_eq!(n3.address, format!("{got}/24"));
    assert!(pool_address(&n3.address), "vm3: {}", n3.address);
    assert_example_config(&n3, &r3, false, "udhcpc on vm3");
    // What udhcpc decoded, as its script saw it.
    let env = std::fs::read_to_string(w.dir().join("udhcpc-eth0-bound.env"))?;
    for line in [
        "serverid=10.0.0.2",
        "lease=3600",
        "subnet=255.255.255.0",
        "router=10.0.0.1",
        "dns=10.0.0.2",
        "mtu=1450",
        "staticroutes=169.254.169.254/32 10.0.0.3 0.0.0.0/0 10.0.0.1",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in\n{env}");
    }
    Ok(())
}

#[test]
fn dhcpcd_configures_a_static_host_and_a_pool_guest() -> Result<()> {
    if !have_root("dhcpcd_configures_a_static_host_and_a_pool_guest") {
        return Ok(());
    }
    let (w, vm1, _vm2, vm3) = example_world("dhcpcd", None)?;
    let (r1, r3) = (ResolvConf::new(&vm1)?, ResolvConf::new(&vm3)?);
    let log1 = dhcpcd(&vm1)?;
    assert!(log1.contains("leased 10.0.0.11 "), "{log1}");
    let log3 = dhcpcd(&vm3)?;

    let n1 = net_config(&w, &vm1)?;
    assert_eq!(n1.address, "10.0.0.11/24", "{log1}");
    assert_example_config(&n1, &r1, true, "dhcpcd on vm1");
    let n3 = net_config(&w, &vm3)?;
    assert!(pool_address(&n3.address), "vm3: {} ({log3})", n3.address);
    assert_example_config(&n3, &r3, true, "dhcpcd on vm3");
    Ok(())
}

#[test]
fn a_client_with_another_clients_lease_is_naked_and_gets_its_own_quickly() -> Result<()> {
    if !have_root("a_client_with_another_clients_lease_is_naked_and_gets_its_own_quickly") {
        return Ok(());
    }
    let (w, vm1, _vm2, _vm3) = example_world("nak", None)?;
    let _resolv = ResolvConf::new(&vm1)?;
    // vm1 remembers vm2's address, as if its disk had been copied.
    std::fs::write(
        dhclient_lease_file(&w, &vm1),
        "lease {\n  interface \"eth0\";\n  fixed-address 10.0.0.12;\n  \
         option subnet-mask 255.255.255.0;\n  option dhcp-server-identifier 10.0.0.2;\n  \
         option dhcp-lease-time 3600;\n  renew 4 2037/01/01 00:00:00;\n  \
         rebind 4 2037/01/01 00:00:00;\n  expire 4 2037/01/01 00:00:00;\n}\n",
    )?;
    let started = Instant::now();
    let mut c = dhclient(&w, &vm1)?;
    let log = c.wait_for("bound to 10.0.0.11 ", 1, Duration::from_secs(20))?;
    let took = started.elapsed();
    let request = log
        .find("DHCPREQUEST for 10.0.0.12")
        .with_context(|| format!("dhclient did not ask for the remembered address:\n{log}"))?;
    let nak = log
        .find("DHCPNAK from 10.0.0.2")
        .with_context(|| format!("no NAK:\n{log}"))?;
    assert!(request < nak, "{log}");
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{log}");
    assert_eq!(net_config(&w, &vm1)?.address, "10.0.0.11/24");
    Ok(())
}

#[test]
fn dhclient_renews_a_short_lease_by_unicast_to_the_server() -> Result<()> {
    if !have_root("dhclient_renews_a_short_lease_by_unicast_to_the_server") {
        return Ok(());
    }
    let yaml = example_yaml()?.replace("lease_seconds: 3600", "lease_seconds: 10");
    assert!(yaml.contains("lease_seconds: 10"));
    let (w, vm1, _vm2, _vm3) = example_world("renew", Some(&yaml))?;
    let _resolv = ResolvConf::new(&vm1)?;
    let mut c = dhclient(&w, &vm1)?;
    c.wait_for("bound to 10.0.0.11 ", 1, Duration::from_secs(20))?;
    let bound = Instant::now();
    // RENEWING: unicast to the server's address, which needs the bridge to
    // answer ARP for it and the server to take frames sent to its MAC.
    let log = c.wait_for(
        "DHCPREQUEST for 10.0.0.11 on eth0 to 10.0.0.2 port 67",
        2,
        Duration::from_secs(30),
    )?;
    c.wait_for(
        "DHCPACK of 10.0.0.11 from 10.0.0.2",
        3,
        Duration::from_secs(10),
    )?;
    let broadcast_requests = log
        .lines()
        .filter(|l| l.contains("DHCPREQUEST for 10.0.0.11 on eth0 to 255.255.255.255"))
        .count();
    assert_eq!(
        broadcast_requests, 1,
        "only SELECTING broadcasts; no rebinding:\n{log}"
    );
    // Past the first lease's end, the address is still there.
    let past_lease = Duration::from_secs(11).saturating_sub(bound.elapsed());
    std::thread::sleep(past_lease);
    assert_eq!(net_config(&w, &vm1)?.address, "10.0.0.11/24", "{}", c.log());
    assert!(!c.log().contains("DHCPNAK"), "{}", c.log());
    Ok(())
}

#[test]
fn a_pool_lease_survives_a_restart_of_vnetd() -> Result<()> {
    if !have_root("a_pool_lease_survives_a_restart_of_vnetd") {
        return Ok(());
    }
    let (mut w, _vm1, _vm2, vm3) = example_world("restart", None)?;
    let _resolv = ResolvConf::new(&vm3)?;
    // The address the server picks for vm3 by itself, released when
    // udhcpc stops (-R: a RELEASE unicast to the server).
    let args = udhcpc_args(&w, &["-R"])?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut client = Running::spawn(in_guest(&vm3, &args), w.dir().join("udhcpc-release.log"))?;
    let own = udhcpc_lease(&client.wait_for("lease of ", 1, Duration::from_secs(20))?)?;
    let log = client.stop();
    assert!(
        log.contains(&format!("unicasting a release of {own} to 10.0.0.2")),
        "{log}"
    );
    // Take a different one, so that only a remembered lease gives it back.
    let own_host: u8 = own.rsplit('.').next().unwrap_or_default().parse()?;
    let other_host = if own_host < 199 {
        own_host + 1
    } else {
        own_host - 1
    };
    let other = format!("10.0.0.{other_host}");
    assert_eq!(udhcpc(&w, &vm3, &["-r", &other])?, other);

    let (status, log) = w.stop_vnetd()?;
    assert!(status.success(), "vnetd exit status {status}; log:\n{log}");
    let file = std::fs::read_to_string(w.state_dir().join("dhcp-leases.json"))?;
    assert!(
        file.contains(&format!("\"ip\": \"{other}\"")) && file.contains(VM3_MAC),
        "{file}"
    );
    w.start_vnetd(&repo_root().join("examples/bridge.yaml"))?;
    let log = std::fs::read_to_string(&w.log)?;
    assert!(log.contains("DHCP leases loaded leases=1"), "{log}");
    assert_eq!(
        udhcpc(&w, &vm3, &[])?,
        other,
        "after the restart vm3 is given its lease, not {own}"
    );
    Ok(())
}
