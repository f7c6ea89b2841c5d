//! End-to-end test harness: real `vnetd`, network namespaces, real tools.
//!
//! Every test builds a private world: a "host" namespace where `vnetd` runs
//! with the host ends of the guests' veth pairs (so the examples' interface
//! names `vm1-h`, ... can be used unchanged and tests can run side by side),
//! and one namespace per guest. Everything is deleted on drop, vnetd first.
//!
//! The tests need root (namespaces, XDP). Without it they print why they
//! skip and pass, except under CI (`CI` set), where they fail.
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod hosts;
pub mod vm;

/// True when the tests can run; prints the reason when they cannot.
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // Under CI a test that cannot run is a failure, not a skip.
    assert!(
        root || std::env::var_os("CI").is_none(),
        "{test} needs root (network namespaces, XDP, AF_XDP) and CI must run it as root"
    );
    if !root {
        eprintln!(
            "skipped {test}: needs root (network namespaces, XDP, AF_XDP); CI runs it as root"
        );
    }
    root
}

/// Runs a command, failing with its output when it fails.
pub fn run(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Runs a command that prints JSON and parses it, failing with the output
/// when it is not JSON.
pub fn json_of(args: &[&str]) -> Result<serde_json::Value> {
    let out = run(args)?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{} printed no JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The repository root (for examples/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The vnetd binary: $VNETD, or the one cargo built next to this test.
pub fn vnetd_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VNETD") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/vnetd
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let p = dir.join("vnetd");
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build -p vnetd) or set VNETD",
            p.display()
        );
    }
    Ok(p)
}

/// The vnetctl binary: $VNETCTL, or the one cargo built next to vnetd.
pub fn vnetctl_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VNETCTL") {
        return Ok(PathBuf::from(p));
    }
    let p = vnetd_path()?.with_file_name("vnetctl");
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build -p vnetctl) or set VNETCTL",
            p.display()
        );
    }
    Ok(p)
}

static WORLDS: AtomicU32 = AtomicU32::new(0);

/// Polls `f` every 50 ms until it gives a value, for at most `timeout`: the
/// one readiness wait of the end-to-end tests. The error names `what` and
/// the last answer (or failure) `f` gave.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::from("not yet"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?} (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A guest: a namespace with one interface `eth0` whose peer `host_if`
/// lives in the world's host namespace.
#[derive(Debug, Clone)]
pub struct Guest {
    pub name: String,
    pub netns: String,
    pub mac: String,
    pub ip: String,
}

pub struct World {
    pub prefix: String,
    pub host: String,
    pub guests: Vec<Guest>,
    vnetd: Option<Child>,
    pub log: PathBuf,
    dir: PathBuf,
}

impl World {
    /// A new world named after the test.
    pub fn new(test: &str) -> Result<World> {
        let n = WORLDS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("vt{}{}", std::process::id() % 100_000, n);
        let host = format!("{prefix}-host");
        run(&["ip", "netns", "add", &host])?;
        run(&["ip", "-n", &host, "link", "set", "lo", "up"])?;
        let dir = std::env::temp_dir().join(format!("vnet-e2e-{prefix}"));
        std::fs::create_dir_all(&dir)?;
        // A bpffs of the world's own, for vnetd's pins (--bpffs-dir): `ip
        // netns exec` hides /sys/fs/bpf, and unmounting it at the end frees
        // whatever a test left pinned.
        let bpffs = dir.join("bpffs");
        std::fs::create_dir_all(&bpffs)?;
        run(&["mount", "-t", "bpf", "bpf", &bpffs.to_string_lossy()])?;
        let log = dir.join(format!("vnetd-{test}.log"));
        Ok(World {
            prefix,
            host,
            guests: Vec::new(),
            vnetd: None,
            log,
            dir,
        })
    }

    /// Adds a guest with a veth pair: `host_if` in the host namespace,
    /// `eth0` (with `mac` and `ip`/24) in the guest's.
    pub fn guest(&mut self, name: &str, host_if: &str, mac: &str, ip: &str) -> Result<Guest> {
        self.guest_with_queues(name, host_if, mac, ip, 1)
    }

    /// [`World::guest`] on a veth pair with `queues` transmit and receive
    /// queues at each end (a multi-queue interface, as a NIC with RSS or a
    /// multi-queue tap).
    pub fn guest_with_queues(
        &mut self,
        name: &str,
        host_if: &str,
        mac: &str,
        ip: &str,
        queues: u32,
    ) -> Result<Guest> {
        let netns = format!("{}-{name}", self.prefix);
        run(&["ip", "netns", "add", &netns])?;
        let q = queues.to_string();
        run(&[
            "ip",
            "-n",
            &self.host,
            "link",
            "add",
            host_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &netns,
        ])?;
        run(&["ip", "-n", &netns, "link", "set", "eth0", "address", mac])?;
        run(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &netns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &self.host, "link", "set", host_if, "up"])?;
        let g = Guest {
            name: name.into(),
            netns,
            mac: mac.into(),
            ip: ip.into(),
        };
        self.guests.push(g.clone());
        Ok(g)
    }

    /// The outside network of a tenant router's uplink: `out` (192.0.2.1,
    /// the uplink's gateway, behind `uplink-h`) routes to `far`
    /// (198.18.0.2, default route via 198.18.0.1), one hop further, where
    /// tests run their servers.
    pub fn outside(&mut self) -> Result<(Guest, Guest)> {
        let out = self.guest("out", "uplink-h", "02:00:00:00:09:01", "192.0.2.1")?;
        let far = self.guest("far", "far-h", "02:00:00:00:09:02", "198.18.0.2")?;
        // far's link goes to `out`, which routes between it and the uplink.
        run(&[
            "ip", "-n", &self.host, "link", "set", "far-h", "netns", &out.netns,
        ])?;
        run(&[
            "ip",
            "-n",
            &out.netns,
            "addr",
            "add",
            "198.18.0.1/24",
            "dev",
            "far-h",
        ])?;
        run(&["ip", "-n", &out.netns, "link", "set", "far-h", "up"])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &out.netns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        self.route(&far, &["default", "via", "198.18.0.1"])?;
        Ok((out, far))
    }

    /// Adds a guest like [`World::guest`] whose `eth0` has no address, for
    /// a DHCP client to configure.
    pub fn guest_without_address(&mut self, name: &str, host_if: &str, mac: &str) -> Result<Guest> {
        let netns = format!("{}-{name}", self.prefix);
        run(&["ip", "netns", "add", &netns])?;
        run(&[
            "ip", "-n", &self.host, "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
            "netns", &netns,
        ])?;
        run(&["ip", "-n", &netns, "link", "set", "eth0", "address", mac])?;
        run(&["ip", "-n", &netns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &self.host, "link", "set", host_if, "up"])?;
        let g = Guest {
            name: name.into(),
            netns,
            mac: mac.into(),
            ip: String::new(),
        };
        self.guests.push(g.clone());
        Ok(g)
    }

    /// The world's private directory: topology files, logs, vnetd's state
    /// directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// vnetd's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Writes `yaml` to a file in the world's directory.
    pub fn topology_file(&self, yaml: &str) -> Result<PathBuf> {
        let p = self.dir.join("topology.yaml");
        std::fs::write(&p, yaml)?;
        Ok(p)
    }

    /// Starts vnetd in the host namespace on `topology` and waits until it
    /// has bound its interfaces.
    pub fn start_vnetd(&mut self, topology: &Path) -> Result<()> {
        self.start_vnetd_with(Some(topology), &[])
    }

    /// Starts vnetd like [`World::start_vnetd`], with more flags.
    pub fn start_vnetd_args(&mut self, topology: &Path, args: &[&str]) -> Result<()> {
        self.start_vnetd_with(Some(topology), args)
    }

    /// Starts vnetd on the topology its state directory stored (from an
    /// earlier run or `vnetctl apply`).
    pub fn start_vnetd_stored(&mut self) -> Result<()> {
        self.start_vnetd_with(None, &[])
    }

    fn start_vnetd_with(&mut self, topology: Option<&Path>, args: &[&str]) -> Result<()> {
        let vnetd = vnetd_path()?;
        let log = std::fs::File::create(&self.log)?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.host]).arg(&vnetd);
        if let Some(topology) = topology {
            command.arg("--topology").arg(topology);
        }
        let child = command
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--socket")
            .arg(self.dir.join("vnetd.sock"))
            .arg("--bpffs-dir")
            .arg(self.bpffs_dir())
            .args(args)
            .env("VNET_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting vnetd")?;
        self.vnetd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains("vnetd running") {
                return Ok(());
            }
            if let Some(status) = self
                .vnetd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("vnetd exited ({status}) before binding; its log:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("vnetd did not start within 20 s; its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where this world's vnetd pins its maps and links.
    pub fn bpffs_dir(&self) -> PathBuf {
        self.dir.join("bpffs").join("vnet")
    }

    /// vnetd's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("vnetd.sock")
    }

    /// Runs `vnetctl --socket <this world's> args...`.
    pub fn vnetctl(&self, args: &[&str]) -> Result<Output> {
        Command::new(vnetctl_path()?)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .context("running vnetctl")
    }

    /// `vnetctl apply -f` of `yaml`; fails with vnetctl's output if it does.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let path = self.dir.join("applied.yaml");
        std::fs::write(&path, yaml)?;
        let out = self.vnetctl(&["apply", "-f", path.to_str().context("path")?])?;
        if !out.status.success() {
            bail!(
                "vnetctl apply failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `args` run in the host namespace.
    pub fn in_host(&self, args: &[&str]) -> Result<Output> {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.host])
            .args(args)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.host))
    }

    /// GET of `url` from the host namespace (curl); the body, or why not.
    pub fn http_get(&self, url: &str) -> Result<String> {
        let out = self.in_host(&["curl", "-sS", "-f", "--max-time", "5", url])?;
        if !out.status.success() {
            bail!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// A packet counter of `vnetctl stats` (a drop, hit or miss reason:
    /// `tunnel_encap`, `no_egress`, ...).
    pub fn reason(&self, name: &str) -> Result<u64> {
        let stats = self.vnetctl_json(&["stats"])?;
        stats["reasons"][name]
            .as_u64()
            .with_context(|| format!("no {name} in vnetctl stats: {stats}"))
    }

    /// The frames port `port` sent to userspace (first packets), from
    /// `vnetctl stats`.
    pub fn userspace_rx(&self, port: &str) -> Result<u64> {
        port_userspace_rx(&self.vnetctl_json(&["stats"])?, port)
    }

    /// `vnetctl <args> -o json`, parsed.
    pub fn vnetctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.vnetctl(&all)?;
        if !out.status.success() {
            bail!(
                "vnetctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The pid of vnetd (the `ip netns exec` process execs it).
    pub fn vnetd_pid(&self) -> Option<u32> {
        self.vnetd.as_ref().map(Child::id)
    }

    /// Kills vnetd with SIGKILL (a crash: nothing of it runs) and reaps it.
    pub fn kill_vnetd(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.vnetd.take().context("vnetd is not running")?;
        // `ip netns exec` execs vnetd: the child is vnetd itself.
        child.kill()?;
        Ok(child.wait()?)
    }

    /// The log of the running (or last) vnetd.
    pub fn vnetd_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops vnetd with SIGTERM; returns its exit status and log.
    pub fn stop_vnetd(&mut self) -> Result<(std::process::ExitStatus, String)> {
        let mut child = self.vnetd.take().context("vnetd is not running")?;
        run(&["kill", "-TERM", &child.id().to_string()])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("vnetd did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok((status, std::fs::read_to_string(&self.log)?))
    }

    /// Runs a command inside a guest.
    pub fn exec(&self, guest: &Guest, args: &[&str]) -> Result<Output> {
        let mut full = vec!["ip", "netns", "exec", guest.netns.as_str()];
        full.extend_from_slice(args);
        let out = Command::new(full[0]).args(&full[1..]).output()?;
        Ok(out)
    }

    /// Pings `to` from `from`; returns how many replies came back.
    pub fn ping(&self, from: &Guest, to: &str, count: u32) -> Result<u32> {
        let out = self.exec(
            from,
            &[
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.05",
                "-W",
                "1",
                to,
            ],
        )?;
        // A ping that could not run ("Network is unreachable", no such
        // command) has no summary: that is an error, not zero replies.
        received_count(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
            format!(
                "ping {to} from {}: no \"N received\" summary in its output:\n{}{}",
                from.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Starts tcpdump in a guest, writing what it captures to a file;
    /// returns a handle that stops it and reads the capture.
    pub fn capture(&self, guest: &Guest, filter: &str) -> Result<Capture> {
        let path = self.dir.join(format!(
            "{}-{}.txt",
            guest.name,
            WORLDS.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path)?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &guest.netns,
                "tcpdump",
                "-l",
                "-n",
                "-e",
                "-i",
                "eth0",
                filter,
            ])
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()?;
        let mut cap = Capture { child, path };
        cap.wait_listening()?;
        Ok(cap)
    }

    /// Packets counted by the kernel's flow entries of this world's vnetd
    /// (packets that never left the kernel), read with bpftool from the
    /// FLOWS map of the program attached to `ifname`.
    pub fn kernel_flow_packets(&self, ifname: &str) -> Result<u64> {
        let prog = self
            .programs_on(ifname)?
            .into_iter()
            .next()
            .map(|(_, id)| id)
            .with_context(|| format!("no vnet program attached to {ifname}"))?;
        let info = json_of(&["bpftool", "-j", "prog", "show", "id", &prog.to_string()])?;
        let mut total = 0;
        let mut found = false;
        for id in info["map_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_u64())
        {
            let map = json_of(&["bpftool", "-j", "map", "show", "id", &id.to_string()])?;
            if map["name"].as_str() != Some("FLOWS") {
                continue;
            }
            let dump = json_of(&["bpftool", "-j", "map", "dump", "id", &id.to_string()])?;
            let entries = dump
                .as_array()
                .with_context(|| format!("bpftool map dump id {id}: not a list: {dump}"))?;
            for entry in entries {
                total += flow_packets(entry)
                    .with_context(|| format!("FLOWS entry without a packet counter: {entry}"))?;
            }
            found = true;
        }
        if !found {
            bail!("no FLOWS map among the maps of program {prog} on {ifname}: {info}");
        }
        Ok(total)
    }

    /// The programs vnetd attached to `ifname` (XDP and tc), as (name,
    /// id): from the links it pinned (`<bpffs>/layout-N/links/<ifname>@<ifindex>@<hook>`),
    /// read with bpftool. (Debian's bpftool 7.1 lists tcx links without
    /// their interface, so the pins are what names them.)
    pub fn programs_on(&self, ifname: &str) -> Result<Vec<(String, u64)>> {
        let mut programs = Vec::new();
        let Ok(layouts) = std::fs::read_dir(self.bpffs_dir()) else {
            return Ok(programs);
        };
        for layout in layouts {
            let links = layout?.path().join("links");
            let Ok(entries) = std::fs::read_dir(&links) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if name.rsplitn(3, '@').nth(2) != Some(ifname) {
                    continue;
                }
                let link = json_of(&[
                    "bpftool",
                    "-j",
                    "link",
                    "show",
                    "pinned",
                    &path.to_string_lossy(),
                ])?;
                let id = link["prog_id"].as_u64().with_context(|| {
                    format!("pinned link {} without a program: {link}", path.display())
                })?;
                let prog = json_of(&["bpftool", "-j", "prog", "show", "id", &id.to_string()])?;
                let prog_name = prog["name"].as_str().unwrap_or_default().to_string();
                programs.push((prog_name, id));
            }
        }
        programs.sort();
        Ok(programs)
    }
}

/// The `N received` of ping's summary line
/// (`3 packets transmitted, 3 received, 0% packet loss`).
fn received_count(text: &str) -> Option<u32> {
    text.lines()
        .find(|l| l.contains(" received"))?
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))?
        .trim()
        .parse()
        .ok()
}

/// The packet counter of one dumped FLOWS entry: bytes 40..48 of the value
/// (`FlowValue::packets`, little endian). bpftool prints BTF-formatted
/// values when it can, raw hex bytes otherwise.
fn flow_packets(entry: &serde_json::Value) -> Option<u64> {
    let value = entry.get("value")?;
    if let Some(p) = value.get("packets").and_then(|p| p.as_u64()) {
        return Some(p);
    }
    let bytes: Vec<u8> = value
        .as_array()?
        .iter()
        .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
        .collect();
    // Raw bytes: the `packets` field where the shared layout puts it.
    let at = std::mem::offset_of!(vnet_common::FlowValue, packets);
    let b = bytes.get(at..at + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut c) = self.vnetd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for g in &self.guests {
            let _ = Command::new("ip").args(["netns", "del", &g.netns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .status();
        let _ = Command::new("umount").arg(self.dir.join("bpffs")).status();
    }
}

pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    fn wait_listening(&mut self) -> Result<()> {
        // tcpdump prints "listening on ..." to stderr once the socket is open.
        use std::io::{BufRead, BufReader};
        let stderr = self.child.stderr.take().context("tcpdump stderr")?;
        let mut reader = BufReader::new(stderr);
        let mut said = String::new();
        while !said.contains("listening on") {
            if reader.read_line(&mut said)? == 0 {
                bail!("tcpdump did not start: {said}");
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || for _ in reader.lines() {});
        Ok(())
    }

    /// Stops tcpdump and returns the captured lines.
    pub fn finish(mut self) -> Result<Vec<String>> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.path)?;
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// How long a process [`World::spawn`] starts may take to open its socket.
const SPAWN_READY: Duration = Duration::from_secs(10);

/// Whether process `pid` has a socket ready for its work: a TCP socket
/// listening, a UDP socket bound to a port, or a raw, ICMP or packet
/// socket. Read from `/proc/<pid>/net`, which shows the sockets of the
/// process's own network namespace, matched to its descriptors by inode.
fn socket_ready(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    // (table, column of the inode, whether a row of it means ready)
    type Ready = fn(&[&str]) -> bool;
    let tables: [(&str, usize, Ready); 5] = [
        ("tcp", 9, |f| f[3] == "0A"), // LISTEN
        ("udp", 9, |f| !f[1].ends_with(":0000")),
        ("raw", 9, |_| true),
        ("icmp", 9, |_| true),
        ("packet", 8, |_| true),
    ];
    tables.iter().any(|(table, inode_at, ready)| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > *inode_at && inodes.contains(f[*inode_at]) && ready(&f)
        })
    })
}

/// A process running inside a guest, killed when dropped.
pub struct Background {
    child: Child,
}

impl Background {
    /// Waits (at most `timeout`) for it to exit; returns its stdout.
    pub fn finish(mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            use std::io::Read;
            s.read_to_string(&mut out)?;
        }
        Ok(out)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl World {
    /// Starts `args` inside a guest in the background (a server, a ping, a
    /// flood) and returns once it is ready: once it has a socket to serve
    /// or send on (see [`socket_ready`]), or has already ended.
    pub fn spawn(&self, guest: &Guest, args: &[&str]) -> Result<Background> {
        let child = Command::new("ip")
            .args(["netns", "exec", &guest.netns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {args:?} in {}", guest.name))?;
        let mut bg = Background { child };
        // `ip netns exec` execs the command in place: the pid is its own.
        let pid = bg.child.id();
        let deadline = Instant::now() + SPAWN_READY;
        loop {
            if socket_ready(pid) || bg.child.try_wait()?.is_some() {
                return Ok(bg);
            }
            if Instant::now() > deadline {
                bail!(
                    "{args:?} in {} opened no socket within {} s",
                    guest.name,
                    SPAWN_READY.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `ip route add ARGS` inside a guest.
    pub fn route(&self, guest: &Guest, args: &[&str]) -> Result<()> {
        let mut cmd = vec!["ip", "route", "add"];
        cmd.extend_from_slice(args);
        let out = self.exec(guest, &cmd)?;
        if !out.status.success() {
            bail!(
                "ip route add {args:?} in {}: {}",
                guest.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs a Python snippet inside a guest with Debian's python3 (which has
    /// python3-scapy); returns its stdout, failing with stderr if it fails.
    pub fn python(&self, guest: &Guest, code: &str) -> Result<String> {
        let out = self.exec(guest, &["/usr/bin/python3", "-c", code])?;
        if !out.status.success() {
            bail!(
                "python in {}: {}",
                guest.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A TCP stream of `mib` MiB of a fixed pattern from `from` to
    /// `host:port`, received by `to` on `listen_port`: the receiver must
    /// count every byte and get the sender's SHA-256.
    pub fn tcp_stream(
        &self,
        from: &Guest,
        to: &Guest,
        (host, port): (&str, u16),
        listen_port: u16,
        mib: usize,
    ) -> Result<()> {
        let sink = self.spawn(
            to,
            &["/usr/bin/python3", "-c", TCP_SINK, &listen_port.to_string()],
        )?;
        let send = format!(
            "import socket,hashlib\nb=bytes(i%251 for i in range(1<<20))*{mib}\n\
             s=socket.create_connection(('{host}',{port}),timeout=10)\ns.sendall(b)\ns.close()\n\
             print(len(b),hashlib.sha256(b).hexdigest())\n"
        );
        let sent = self.python(from, &send)?;
        let got = sink.finish(Duration::from_secs(30))?;
        ensure!(
            got.trim() == sent.trim(),
            "TCP {} → {host}:{port}: sent {} received {}",
            from.name,
            sent.trim(),
            got.trim()
        );
        Ok(())
    }
}

/// Receives one TCP stream on the port in argv[1], prints its length and
/// SHA-256.
pub const TCP_SINK: &str = "import socket,hashlib,sys\n\
s=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',int(sys.argv[1])))\ns.listen()\nc,_=s.accept()\nh=hashlib.sha256()\nn=0\n\
while True:\n    d=c.recv(1<<16)\n    if not d: break\n    h.update(d)\n    n+=len(d)\n\
print(n,h.hexdigest())\n";

/// The frames `port` sent to userspace in `vnetctl stats -o json`'s
/// output.
pub fn port_userspace_rx(stats: &serde_json::Value, port: &str) -> Result<u64> {
    stats["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"] == port)
        .and_then(|p| p["userspace_rx"].as_u64())
        .with_context(|| format!("no userspace_rx of {port} in vnetctl stats: {stats}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summaries_are_read_and_anything_else_is_no_count() {
        let ok =
            "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n--- 10.0.0.2 ping statistics ---\n\
                  3 packets transmitted, 3 received, 0% packet loss, time 102ms\n";
        assert_eq!(received_count(ok), Some(3));
        let none = "2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms\n";
        assert_eq!(received_count(none), Some(0));
        assert_eq!(
            received_count("ping: connect: Network is unreachable\n"),
            None
        );
        assert_eq!(received_count(""), None);
    }

    #[test]
    fn a_process_is_ready_once_its_socket_listens_not_before() {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import socket, time\ntime.sleep(0.5)\ns = socket.socket()\n\
                 s.bind(('127.0.0.1', 0))\ns.listen()\ntime.sleep(30)\n",
            ])
            .spawn()
            .expect("python3");
        let pid = child.id();
        assert!(!socket_ready(pid), "ready before it listens");
        let started = Instant::now();
        while !socket_ready(pid) {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        let _ = child.kill();
        let _ = child.wait();
    }
}
