//! Many hosts on one machine (HOSTS.md §5): an underlay namespace with a
//! bridge and a throwaway etcd on it, and N hosts, each a [`World`] whose
//! namespace is joined to the bridge as 192.0.2.N and runs its own vnetd
//! with `--store etcd://... --host hN --tunnel-address 192.0.2.N`.
//!
//! Shared by tests/tests/etcd.rs (two hosts) and tests/tests/hosts3.rs
//! (three). Needs Debian's etcd-server: without it [`Hosts::new`] fails,
//! naming the package (a test of many hosts never skips for want of etcd).
use crate::{poll, run, Guest, World};
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::time::Duration;
use vnet_etcd::server::EtcdServer;

/// Where each host's vnetd serves its metrics, in its own namespace.
pub const METRICS: &str = "127.0.0.1:9469";
pub const METRICS_URL: &str = "http://127.0.0.1:9469/metrics";

/// Seconds of each host's lease (`--host-ttl`): short, so that a test sees
/// a dead host within seconds.
pub const TTL: u64 = 3;

/// etcd's address on the underlay bridge; host N is 192.0.2.N.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

/// The underlay MTU that leaves room for VXLAN's 50 bytes around a
/// guest's 1500, so that guests need no smaller MTU.
pub const ROOMY_MTU: u32 = 1550;

/// How long a first packet may wait for a host to see another register.
const REACH: Duration = Duration::from_secs(10);

/// The underlay: a namespace with a bridge `br0` (192.0.2.254/24) and etcd
/// on it; each host's namespace gets a veth onto the bridge.
pub struct Underlay {
    pub netns: String,
    etcd: Option<EtcdServer>,
}

impl Underlay {
    /// The namespace `<name>-u` with its bridge (no etcd yet).
    pub fn new(name: &str) -> Result<Underlay> {
        let netns = format!("{name}-u");
        run(&["ip", "netns", "add", &netns])?;
        // Built before anything else can fail, so that Drop removes it.
        let u = Underlay { netns, etcd: None };
        let ns = u.netns.as_str();
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])?;
        let addr = format!("{ETCD_IP}/24");
        run(&["ip", "-n", ns, "addr", "add", &addr, "dev", "br0"])?;
        run(&["ip", "-n", ns, "link", "set", "br0", "up"])?;
        Ok(u)
    }

    /// Joins `world`'s host namespace to the bridge as 192.0.2.`n` by the
    /// veth `<prefix>-ul` (its end on the bridge is `<prefix>-up`), both
    /// ends with `mtu`.
    pub fn join(&self, world: &World, n: u8, mtu: u32) -> Result<Ipv4Addr> {
        let (inner, outer) = (
            format!("{}-ul", world.prefix),
            format!("{}-up", world.prefix),
        );
        let mtu = mtu.to_string();
        run(&[
            "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
        ])?;
        run(&["ip", "link", "set", &inner, "netns", &world.host])?;
        run(&["ip", "link", "set", &outer, "netns", &self.netns])?;
        run(&[
            "ip",
            "-n",
            &self.netns,
            "link",
            "set",
            &outer,
            "mtu",
            &mtu,
            "master",
            "br0",
            "up",
        ])?;
        let ip = Ipv4Addr::new(192, 0, 2, n);
        let addr = format!("{ip}/24");
        run(&["ip", "-n", &world.host, "addr", "add", &addr, "dev", &inner])?;
        run(&[
            "ip",
            "-n",
            &world.host,
            "link",
            "set",
            &inner,
            "mtu",
            &mtu,
            "up",
        ])?;
        Ok(ip)
    }

    /// Starts etcd on the bridge address; returns its `etcd://` URL.
    pub fn start_etcd(&mut self) -> Result<String> {
        let etcd = EtcdServer::start_in(&self.netns, ETCD_IP)
            .map_err(|e| anyhow::anyhow!("cannot start etcd for this test: {e}"))?;
        let url = etcd.url();
        self.etcd = Some(etcd);
        Ok(url)
    }

    /// The running etcd, to kill and restart (an outage).
    pub fn etcd(&mut self) -> Result<&mut EtcdServer> {
        self.etcd
            .as_mut()
            .context("etcd was not started (Underlay::start_etcd)")
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        self.etcd = None;
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// N hosts on one underlay with etcd: host `hN` is `worlds[N-1]`, at
/// 192.0.2.N. Hosts are numbered from 1, as in the topologies.
pub struct Hosts {
    /// Dropped before the underlay: every vnetd stops while etcd still runs.
    pub worlds: Vec<World>,
    pub underlay: Underlay,
    /// etcd's `etcd://` URL, for `--store`.
    pub url: String,
    /// The hosts' tunnel addresses, `ips[N-1]` for `hN`.
    pub ips: Vec<String>,
}

impl Hosts {
    /// `n` hosts named after `test`, with an underlay MTU of [`ROOMY_MTU`].
    pub fn new(test: &str, n: usize) -> Result<Hosts> {
        Hosts::with_mtu(test, n, ROOMY_MTU)
    }

    /// `n` hosts whose underlay interfaces have `mtu` (1500: a tunnel MTU
    /// of 1450, smaller than a guest's default).
    pub fn with_mtu(test: &str, n: usize, mtu: u32) -> Result<Hosts> {
        if n == 0 || n > 250 {
            bail!("{n} hosts: the underlay 192.0.2.0/24 has room for 1 to 250");
        }
        let worlds = (1..=n)
            .map(|i| World::new(&format!("{test}-h{i}")))
            .collect::<Result<Vec<_>>>()?;
        let mut underlay = Underlay::new(&worlds[0].prefix)?;
        let ips = worlds
            .iter()
            .zip(1u8..)
            .map(|(w, i)| Ok(underlay.join(w, i, mtu)?.to_string()))
            .collect::<Result<Vec<_>>>()?;
        let url = underlay.start_etcd()?;
        Ok(Hosts {
            worlds,
            underlay,
            url,
            ips,
        })
    }

    /// Host `hN`.
    pub fn host(&self, n: usize) -> &World {
        &self.worlds[n - 1]
    }

    /// Host `hN`, to start or kill its vnetd.
    pub fn host_mut(&mut self, n: usize) -> &mut World {
        &mut self.worlds[n - 1]
    }

    /// A guest on host `hN` (veth `<name>-h` there) with `ip`/24 and, when
    /// given, a default route via `gateway`.
    pub fn guest(
        &mut self,
        n: usize,
        name: &str,
        mac: &str,
        ip: &str,
        gateway: Option<&str>,
    ) -> Result<Guest> {
        let w = self.host_mut(n);
        let g = w.guest(name, &format!("{name}-h"), mac, ip)?;
        if let Some(gw) = gateway {
            w.route(&g, &["default", "via", gw])?;
        }
        Ok(g)
    }

    /// Moves host `hN` to a subnet of its own behind the underlay
    /// namespace, which routes (a routed underlay): 198.51.100.N/24 on a
    /// second bridge `br1` (198.51.100.254); the other hosts reach it, and
    /// it reaches them and etcd, through the underlay namespace. Its tunnel
    /// address becomes 198.51.100.N. Before its vnetd starts.
    pub fn route_host(&mut self, n: usize) -> Result<Ipv4Addr> {
        let u = self.underlay.netns.clone();
        let ip = Ipv4Addr::new(198, 51, 100, n as u8);
        if run(&["ip", "-n", &u, "link", "show", "br1"]).is_err() {
            run(&["ip", "-n", &u, "link", "add", "br1", "type", "bridge"])?;
            run(&[
                "ip",
                "-n",
                &u,
                "addr",
                "add",
                "198.51.100.254/24",
                "dev",
                "br1",
            ])?;
            run(&["ip", "-n", &u, "link", "set", "br1", "up"])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &u,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
        }
        let moved = self.host(n);
        let (inner, outer) = (
            format!("{}-ul", moved.prefix),
            format!("{}-up", moved.prefix),
        );
        let host = moved.host.clone();
        run(&["ip", "-n", &u, "link", "set", &outer, "nomaster"])?;
        run(&["ip", "-n", &u, "link", "set", &outer, "master", "br1", "up"])?;
        run(&["ip", "-n", &host, "addr", "flush", "dev", &inner])?;
        run(&[
            "ip",
            "-n",
            &host,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &inner,
        ])?;
        run(&[
            "ip",
            "-n",
            &host,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "198.51.100.254",
        ])?;
        for (i, w) in self.worlds.iter().enumerate() {
            if i + 1 != n {
                run(&[
                    "ip",
                    "-n",
                    &w.host,
                    "route",
                    "add",
                    "198.51.100.0/24",
                    "via",
                    "192.0.2.254",
                ])?;
            }
        }
        self.ips[n - 1] = ip.to_string();
        Ok(ip)
    }

    /// The flags that make host `hN`'s vnetd one of these hosts (with its
    /// metrics on [`METRICS_URL`] in its namespace).
    pub fn vnetd_args(&self, n: usize) -> Vec<String> {
        [
            "--store",
            &self.url,
            "--host",
            &format!("h{n}"),
            "--tunnel-address",
            &self.ips[n - 1],
            "--host-ttl",
            &TTL.to_string(),
            // Each host is its own namespace: one address serves them all.
            "--metrics",
            METRICS,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Starts (or starts again) host `hN`'s vnetd on `yaml`, until it runs.
    pub fn start_vnetd(&mut self, n: usize, yaml: &str) -> Result<()> {
        let args = self.vnetd_args(n);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let w = self.host_mut(n);
        let file = w.topology_file(yaml)?;
        w.start_vnetd_args(&file, &args)
            .with_context(|| format!("vnetd on h{n}"))
    }

    /// Every host's vnetd on `yaml`, h1 first, until each lists all of
    /// them alive.
    pub fn start(&mut self, yaml: &str) -> Result<()> {
        for n in 1..=self.worlds.len() {
            self.start_vnetd(n, yaml)?;
        }
        let all = self.worlds.len();
        for (w, n) in self.worlds.iter().zip(1..) {
            poll(
                &format!("h{n} listing all {all} hosts alive"),
                REACH,
                || {
                    let rows = listed_hosts(w)?;
                    Ok((rows.iter().filter(|h| h.2).count() == all).then_some(()))
                },
            )?;
        }
        Ok(())
    }

    /// Waits until `from`, a guest on host `hN`, gets an answer from `ip`:
    /// a host reaches another's ports once it has seen it register (within
    /// a second of the registration).
    pub fn reach(&self, n: usize, from: &Guest, ip: &str) -> Result<()> {
        poll(
            &format!("{} on h{n} reaching {ip}", from.name),
            REACH,
            || Ok((self.host(n).ping(from, ip, 1)? == 1).then_some(())),
        )
    }
}

/// The text of `examples/<name>`, the topology a many-host test runs.
pub fn example(name: &str) -> Result<String> {
    let path = crate::repo_root().join("examples").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// One row of `vnetctl get hosts`: (name, tunnel address, alive, ports).
pub type HostRow = (String, String, bool, Vec<String>);

/// `vnetctl get hosts -o json` of `w`, in its order (by name).
pub fn listed_hosts(w: &World) -> Result<Vec<HostRow>> {
    let v = w.vnetctl_json(&["get", "hosts"])?;
    let list = v["hosts"]
        .as_array()
        .with_context(|| format!("no hosts array in vnetctl get hosts: {v}"))?;
    Ok(list
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_string(),
                h["tunnel_address"].as_str().unwrap_or_default().to_string(),
                h["alive"].as_bool().unwrap_or(false),
                h["ports"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect())
}
