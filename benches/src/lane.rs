//! One "lane": a private set of namespaces (host, guest a, guest b joined to
//! the host by veth pairs vm1-h/vm2-h) with one system forwarding between
//! the guests, a traffic generator pushing into guest a's eth0 and a counter
//! on guest b's eth0. Every system gets an identical lane, so they can all
//! stay up and be measured alternately.
//!
//! ```text
//!  guest a            host                           guest b
//!  [generator]→eth0 ══ vm1-h →(system)→ vm2-h ══ eth0→[counter: count+drop UDP]
//! ```
//!
//! The generator runs in guest a's namespace, pinned to one CPU: every
//! frame's whole path (generator, vm1-h's XDP or stack, vm2-h, the counter)
//! runs in softirq on that CPU, so a figure is "one core".
use crate::sys::{self, Netns, VnetdFlows};
use crate::{key_of, router_mac, udp64_no_checksum, VM1_MAC, VM2_MAC};
use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use vnet_common::FlowKey;
use vnet_dataplane::kernel::bench::{BenchProgram, BenchPrograms};
use vnet_dataplane::kernel::AttachMode;
use vnet_dataplane::packet::Mac;
use vnet_dataplane::sim::Snapshot;

/// MACs of the host ends when Linux routes (its router ports).
const LINUX_VM1_H: Mac = [0x02, 0, 0, 0, 0x0a, 0x01];
const LINUX_VM2_H: Mac = [0x02, 0, 0, 0, 0x0a, 0x02];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Vnet,
    Linux,
    /// Raw XDP_REDIRECT vm1-h → vm2-h: the machine's ceiling.
    Ceiling,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Vnet => "vnet",
            System::Linux => "linux",
            System::Ceiling => "ceiling",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Bridged,
    Routed,
    /// Routed with source NAT of guest a's subnet to the router's address.
    RoutedSnat,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Bridged => "bridged",
            PathKind::Routed => "routed",
            PathKind::RoutedSnat => "routed+snat",
        }
    }
    fn routed(self) -> bool {
        self != PathKind::Bridged
    }
    /// Guest a's and guest b's addresses.
    fn addrs(self) -> ([u8; 4], [u8; 4]) {
        if self.routed() {
            (crate::RT_VM1, crate::RT_VM2)
        } else {
            (crate::BR_VM1, crate::BR_VM2)
        }
    }
    /// The topology vnetd runs on this path: the simulation fixtures'
    /// (`crate::BRIDGED_TOPOLOGY`, `crate::ROUTED_TOPOLOGY`), and for
    /// routed+snat SNAT plus a 100-rule indexed chain on the router, the
    /// "NAT + 100-rule chain" of PERFORMANCE.md's new-flows target.
    pub fn vnet_topology(self) -> String {
        let y = match self {
            PathKind::Bridged => crate::BRIDGED_TOPOLOGY.to_string(),
            PathKind::Routed => crate::ROUTED_TOPOLOGY.to_string(),
            PathKind::RoutedSnat => {
                crate::topo::routed_snat_chain_topology(100, crate::topo::ChainKind::Indexed)
            }
        };
        // The harness measures the XDP executor (its flows, its AF_XDP
        // sockets); `auto` would put these veths on the skb executor.
        y.replace("{interface: vm1-h}", "{interface: vm1-h, executor: xdp}")
            .replace("{interface: vm2-h}", "{interface: vm2-h, executor: xdp}")
    }

    /// What Linux does on this path.
    pub fn linux_name(self) -> &'static str {
        match self {
            PathKind::Bridged => "Linux bridge",
            PathKind::Routed => "ip_forward",
            PathKind::RoutedSnat => "ip_forward + nft masquerade (conntrack)",
        }
    }
}

fn ip4(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

fn mac(m: Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// vnetd in a lane's host namespace, pinned to `cpu`; stopped on drop.
pub struct Vnetd {
    child: Child,
    pub log: PathBuf,
}

impl Vnetd {
    fn start(
        host: &Netns,
        vnetd: &Path,
        topology: &Path,
        dir: &Path,
        cpu: Option<usize>,
        args: &[String],
    ) -> Result<Vnetd> {
        let log = dir.join("vnetd.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.name])
            .arg(vnetd)
            .arg("--topology")
            .arg(topology)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("vnetd.sock"))
            // A measurement leaves nothing attached behind it.
            .arg("--detach-on-exit")
            // New flows/s measures the worker, not the per-port upcall
            // budget (2 000/s by default; 0 is none) nor a tenant's share
            // of the tables: the lane's one bridge and router may hold
            // every flow, connection and NAT binding (by default a quarter
            // each, 65 536 connections, which a 1 s run at more than 65 k
            // flows/s would fill and then measure).
            .args(["--upcall-rate", "0"])
            .args([
                "--max-flows-per-device",
                &vnet_common::DEFAULT_MAX_FLOWS.to_string(),
            ])
            .args(["--max-conntrack-per-zone", &TABLE_CAPACITY.to_string()])
            .args(["--max-nat-per-zone", &TABLE_CAPACITY.to_string()])
            .args(args)
            // VNET_LOG=debug times each step of a change (store, compile,
            // worker) in the log, which VNET_BENCH_LOGS keeps (`Lane`'s drop).
            .env(
                "VNET_LOG",
                std::env::var("VNET_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(cpu) = cpu {
            // The worker gets a core of its own, away from the generator:
            // the "per core" of the new-flows figure is this one.
            unsafe {
                cmd.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().context("starting vnetd")?;
        let mut v = Vnetd { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&v.log).unwrap_or_default();
            if text.contains("vnetd running") {
                return Ok(v);
            }
            if let Ok(Some(status)) = v.child.try_wait() {
                bail!("vnetd exited ({status}) before it bound its interfaces; the end of its log:\n{}", log_tail(&v.log, 20));
            }
            if Instant::now() > deadline {
                v.stop();
                bail!(
                    "vnetd did not start within 30 s; the end of its log:\n{}",
                    log_tail(&v.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time (user + system, seconds) vnetd's workers — its main
    /// thread and the `vnet-worker-*` threads of `--workers` — have used so
    /// far.
    pub fn worker_cpu_secs(&self) -> Option<f64> {
        self.sum_over_workers(thread_cpu_secs)
    }

    /// Time (seconds) vnetd's workers have spent runnable but waiting
    /// for a CPU so far (the scheduler's run-queue delay): time they lost
    /// to other tasks, as opposed to time they slept in poll.
    pub fn worker_wait_secs(&self) -> Option<f64> {
        self.sum_over_workers(thread_run_queue_secs)
    }

    /// `per_thread` summed over the workers (the main thread and the
    /// `vnet-worker-*` threads); none if the main thread cannot be read.
    fn sum_over_workers(&self, per_thread: fn(u32, u32) -> Option<f64>) -> Option<f64> {
        let pid = self.child.id();
        let mut total = per_thread(pid, pid)?;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let Some(tid) = task
                .ok()
                .and_then(|t| t.file_name().to_str()?.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"));
            if comm.is_ok_and(|c| c.starts_with("vnet-worker-")) {
                total += per_thread(pid, tid).unwrap_or(0.0);
            }
        }
        Some(total)
    }
}

/// Runs `f` once on each of `cpus`, on a thread pinned there, all at once
/// (none: once, on the calling thread); their results.
fn on_each_cpu<T: Send>(cpus: &[usize], f: impl Fn() -> Result<T> + Sync) -> Result<Vec<T>> {
    if cpus.is_empty() {
        return Ok(vec![f()?]);
    }
    std::thread::scope(|s| {
        let f = &f;
        let threads: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || {
                    sys::pin_current_thread(cpu)?;
                    f()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| bail!("a generator thread panicked"))
            })
            .collect()
    })
}

/// CPU time (user + system, seconds) thread `tid` of `pid` has used.
fn thread_cpu_secs(pid: u32, tid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parens.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Attaches the generator (SKB mode) to an interface of `ns` that receives
/// nothing (one end of a veth pair left down; these kernels have no dummy
/// interfaces). Each `BPF_PROG_TEST_RUN` of an XDP program that is
/// not attached anywhere adds it to the kernel's XDP dispatcher and then
/// removes it, each change a `synchronize_rcu` (~8 ms on these VMs, the
/// generator off its CPU meanwhile): measured, the 50 000-frame chunks of a
/// new-flows run then sent nothing for 16 ms in every 40, and the worker
/// slept through it. Attached, the program stays in the dispatcher and a
/// test run changes nothing there.
fn hold_in_xdp_dispatcher(gen: &mut BenchPrograms, ns: &Netns) -> Result<()> {
    ns.ip(&[
        "link",
        "add",
        "gen-hold",
        "type",
        "veth",
        "peer",
        "name",
        "gen-hold-p",
    ])?;
    let _in = ns.enter()?;
    gen.attach(BenchProgram::Generate, "gen-hold", AttachMode::Skb)?;
    Ok(())
}

/// A thread's run-queue delay so far (seconds): the second field of
/// `/proc/PID/task/TID/schedstat`, in ns.
fn thread_run_queue_secs(pid: u32, tid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let waited_ns: u64 = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(waited_ns as f64 / 1e9)
}

impl Vnetd {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: plain syscall on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vnetd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new-flows run.
#[derive(Clone, Copy, Debug)]
pub struct NewFlows {
    /// Flows installed per second of the run.
    pub per_sec: f64,
    /// Flows installed per second of CPU time of vnetd's worker thread
    /// (the figure "per core", whatever else the machine ran meanwhile).
    pub per_cpu_sec: Option<f64>,
    /// Share of the run the worker thread was on a CPU (its own time;
    /// softirq work done on its behalf, such as transmitting into the
    /// far veth, is not in it).
    pub worker_busy: Option<f64>,
    /// Share of the run the worker thread was runnable but waited for a
    /// CPU (preempted or not yet woken onto one).
    pub worker_waited: Option<f64>,
    /// Share of the run the worker's CPU was busy (anything, softirq
    /// included; other processes too on a shared machine).
    pub cpu_busy: Option<f64>,
    /// First packets offered per second.
    pub offered: f64,
    /// What vnetd logged as it stopped, after the run (none if it logged
    /// nothing readable).
    pub stats: Option<StopStats>,
}

/// Capacity of vnetd's connection and NAT tables (`conntrack::` and
/// `nat::DEFAULT_CAPACITY`): the share the lanes give their one zone.
const TABLE_CAPACITY: usize = 256 * 1024;

/// What vnetd's last "stats" line (logged as it stops) says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopStats {
    /// Time its workers worked and waited for each other, in ms.
    pub busy_ms: u64,
    pub lock_wait_ms: u64,
    /// First packets a table limit refused (a full table or a device's
    /// share of it): a new-flows run that counts any measured the limit,
    /// not the worker.
    pub refused_by_limits: u64,
    /// Frames the kernel missed (sent towards the AF_XDP sockets), and
    /// those the workers received, and those dropped because the
    /// receive ring had no free frame (the worker behind): where a first
    /// packet that made no flow was lost.
    pub kernel_misses: u64,
    pub received: u64,
    pub fill_ring_empty: u64,
}

impl StopStats {
    /// The drop reasons (their Debug names in `drops={..}`) that are a
    /// table limit.
    const LIMITS: [&'static str; 6] = [
        "FlowTableFull",
        "DeviceFlowLimit",
        "ConntrackFull",
        "DeviceConntrackLimit",
        "NatExhausted",
        "DeviceNatLimit",
    ];

    fn parse(line: &str) -> Option<StopStats> {
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))?
                .parse()
                .ok()
        };
        // `drops={DeviceNatLimit: 5, NatExhausted: 2}`.
        let count = |reason: &str| -> u64 {
            ["{", " "]
                .iter()
                .find_map(|before| {
                    let rest = line.split(&format!("{before}{reason}: ")).nth(1)?;
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        Some(StopStats {
            busy_ms: field("busy_ms=")?,
            lock_wait_ms: field("lock_wait_ms=")?,
            refused_by_limits: Self::LIMITS.iter().map(|r| count(r)).sum(),
            kernel_misses: field("kernel_misses=")?,
            received: field("userspace_rx=")?,
            fill_ring_empty: count("FillRingEmpty"),
        })
    }
}

impl NewFlows {
    /// First packets a table limit refused during the run, if any.
    pub fn refused_by_limits(&self) -> Option<u64> {
        self.stats.map(|s| s.refused_by_limits).filter(|&n| n > 0)
    }
}

/// The last `n` lines of a log file, for error messages (the lane's
/// directory, and the log with it, is removed when the lane goes).
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One measurement.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub sent: u64,
    pub delivered: u64,
    pub secs: f64,
}

impl Sample {
    pub fn mpps(&self) -> f64 {
        self.delivered as f64 / self.secs / 1e6
    }
    pub fn offered_mpps(&self) -> f64 {
        self.sent as f64 / self.secs / 1e6
    }
}

pub struct Lane {
    pub system: System,
    pub path: PathKind,
    // Dropped first (fields drop in order): vnetd and the programs detach
    // before their interfaces' namespaces go.
    vnetd: Option<Vnetd>,
    ceiling: Option<BenchPrograms>,
    counter: BenchPrograms,
    gen: BenchPrograms,
    frame: Vec<u8>,
    /// vnet: the flow key of `frame` on vm1-h.
    key: Option<FlowKey>,
    topology: Option<PathBuf>,
    vnet_topology: Option<String>,
    vnetd_bin: PathBuf,
    worker_cpu: Option<usize>,
    /// vnetd's arguments beyond the lane's own (`--workers`, the XDP mode).
    vnetd_args: Vec<String>,
    pub dir: PathBuf,
    host: Netns,
    ga: Netns,
    gb: Netns,
}

pub struct LaneOptions<'a> {
    /// Namespace names start with `prefix` + `index` (keep them short:
    /// interface and namespace names are bounded).
    pub prefix: &'a str,
    pub index: usize,
    pub vnetd: &'a Path,
    /// The CPU vnetd runs on (its worker's core), if pinned.
    pub worker_cpu: Option<usize>,
    /// vnet lanes: the topology vnetd runs instead of the path's default
    /// ([`PathKind::vnet_topology`]). It must bind red/vm1 or tenant/vm1 to
    /// vm1-h and the far guest's port to vm2-h like the defaults.
    pub vnet_topology: Option<String>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        // vnetd and the programs go with the fields, right after this.
        // VNET_BENCH_LOGS=<dir>: vnetd's log outlives the lane there, as
        // <lane directory's name>.log (what it logged up to now).
        if let (Ok(keep), Some(name)) = (std::env::var("VNET_BENCH_LOGS"), self.dir.file_name()) {
            let to = Path::new(&keep).join(name).with_extension("log");
            if let Err(e) = std::fs::copy(self.dir.join("vnetd.log"), &to) {
                eprintln!("[lane] keeping vnetd's log as {}: {e}", to.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lane {
    pub fn new(system: System, path: PathKind, o: &LaneOptions) -> Result<Lane> {
        Lane::with_queues(system, path, o, 1, 1)
    }

    /// [`Lane::new`] with both guests' veth pairs made with `queues`
    /// transmit and receive queues at each end, and vnetd run with
    /// `--workers workers` (vnet lanes).
    pub fn with_queues(
        system: System,
        path: PathKind,
        o: &LaneOptions,
        queues: u32,
        workers: usize,
    ) -> Result<Lane> {
        let name = |s: &str| format!("{}{}{s}", o.prefix, o.index);
        let mut vnetd_args = vec!["--workers".to_string(), workers.to_string()];
        if queues > 1 {
            // Native XDP on vm1-h: the program runs in the queue's NAPI and
            // sees the frame's receive queue. In SKB mode every frame of
            // the live-frames generator (an XDP redirect into eth0) reads as
            // queue 0: the kernel builds its skb without recording one.
            vnetd_args.extend(["--xdp-mode".to_string(), "native".to_string()]);
        }
        let dir = std::env::temp_dir().join(format!("vnet-bench-{}{}", o.prefix, o.index));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let host = Netns::create(&name("h"))?;
        let ga = Netns::create(&name("a"))?;
        let gb = Netns::create(&name("b"))?;
        for (g, host_if, m) in [(&ga, "vm1-h", VM1_MAC), (&gb, "vm2-h", VM2_MAC)] {
            let mut args = vnet_dataplane::veth::add_pair_args(host_if, "eth0", queues);
            args.extend(["netns".to_string(), g.name.clone()]);
            host.ip(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            g.ip(&["link", "set", "eth0", "address", &mac(m)])?;
        }
        let (a, b) = path.addrs();
        ga.ip(&["addr", "add", &format!("{}/24", ip4(a)), "dev", "eth0"])?;
        gb.ip(&["addr", "add", &format!("{}/24", ip4(b)), "dev", "eth0"])?;
        if system == System::Linux {
            host.ip(&["link", "set", "vm1-h", "address", &mac(LINUX_VM1_H)])?;
            host.ip(&["link", "set", "vm2-h", "address", &mac(LINUX_VM2_H)])?;
        }
        for (ns, ifname) in [
            (&ga, "eth0"),
            (&gb, "eth0"),
            (&host, "vm1-h"),
            (&host, "vm2-h"),
        ] {
            ns.ip(&["link", "set", ifname, "up"])?;
        }

        // The routed fixture's router MACs, as vnetd derives them.
        let (gw_a, gw_b) = if path.routed() {
            match system {
                System::Linux => (LINUX_VM1_H, LINUX_VM2_H),
                _ => {
                    let topo = vnet_model::load_str(crate::ROUTED_TOPOLOGY)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let snap = Snapshot::compile(&topo, 1);
                    (
                        router_mac(&snap, "r1/red").map_err(anyhow::Error::msg)?,
                        router_mac(&snap, "r1/blue").map_err(anyhow::Error::msg)?,
                    )
                }
            }
        } else {
            (VM2_MAC, VM1_MAC)
        };
        // Guests never ARP during a run: their neighbours are permanent.
        if path.routed() {
            ga.ip(&[
                "neigh",
                "replace",
                "10.1.0.1",
                "lladdr",
                &mac(gw_a),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
            gb.ip(&[
                "neigh",
                "replace",
                "10.2.0.1",
                "lladdr",
                &mac(gw_b),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
            if path == PathKind::RoutedSnat && system == System::Vnet {
                // Replies go to the SNAT address, which the router owns.
                let snat = ip4(crate::topo::SNAT_IP);
                gb.ip(&[
                    "neigh",
                    "replace",
                    &snat,
                    "lladdr",
                    &mac(gw_b),
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ])?;
            }
            ga.ip(&["route", "add", "default", "via", "10.1.0.1"])?;
            gb.ip(&["route", "add", "default", "via", "10.2.0.1"])?;
        } else {
            ga.ip(&[
                "neigh",
                "replace",
                &ip4(b),
                "lladdr",
                &mac(VM2_MAC),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
            gb.ip(&[
                "neigh",
                "replace",
                &ip4(a),
                "lladdr",
                &mac(VM1_MAC),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        let frame = udp64_no_checksum(VM1_MAC, gw_a, a, b, 5000, 6000);

        // The far end: count and drop the generator's frames.
        let mut counter = BenchPrograms::load(1)?;
        {
            let _in = gb.enter()?;
            counter.attach(BenchProgram::Count, "eth0", AttachMode::Native)?;
        }
        // The generator, aimed at guest a's eth0 (so frames enter vm1-h).
        let mut gen = BenchPrograms::load(1)?;
        gen.set_target(ga.ifindex("eth0")?)?;
        gen.set_template(&frame)?;
        gen.set_sequence(false)?;
        hold_in_xdp_dispatcher(&mut gen, &ga)?;

        let mut lane = Lane {
            system,
            path,
            vnetd: None,
            ceiling: None,
            counter,
            gen,
            frame,
            key: None,
            topology: None,
            vnet_topology: o.vnet_topology.clone(),
            vnetd_bin: o.vnetd.to_path_buf(),
            worker_cpu: o.worker_cpu,
            vnetd_args,
            dir,
            host,
            ga,
            gb,
        };
        match system {
            System::Linux => lane.setup_linux()?,
            System::Ceiling => lane.setup_ceiling()?,
            System::Vnet => lane.setup_vnet()?,
        }
        lane.first_packets()?;
        Ok(lane)
    }

    /// Native XDP redirects into a veth are delivered only if the receiving
    /// end runs XDP or has GRO on (TOOLCHAIN.md); vm1-h runs no XDP when
    /// Linux forwards.
    fn setup_linux(&mut self) -> Result<()> {
        let h = &self.host;
        h.exec(&["ethtool", "-K", "vm1-h", "gro", "on"])?;
        match self.path {
            PathKind::Bridged => {
                h.ip(&["link", "add", "br0", "type", "bridge"])?;
                h.ip(&["link", "set", "vm1-h", "master", "br0"])?;
                h.ip(&["link", "set", "vm2-h", "master", "br0"])?;
                h.ip(&["link", "set", "br0", "up"])?;
                // Known unicast, as vnet's: guest b's MAC is in the FDB.
                sys::run(&[
                    "bridge",
                    "-n",
                    &h.name,
                    "fdb",
                    "replace",
                    &mac(VM2_MAC),
                    "dev",
                    "vm2-h",
                    "master",
                    "static",
                ])?;
            }
            PathKind::Routed | PathKind::RoutedSnat => {
                h.ip(&["addr", "add", "10.1.0.1/24", "dev", "vm1-h"])?;
                h.ip(&["addr", "add", "10.2.0.1/24", "dev", "vm2-h"])?;
                for s in [
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ] {
                    h.exec(&["sysctl", "-qw", s])?;
                }
                h.ip(&[
                    "neigh",
                    "replace",
                    "10.2.0.10",
                    "lladdr",
                    &mac(VM2_MAC),
                    "dev",
                    "vm2-h",
                    "nud",
                    "permanent",
                ])?;
                if self.path == PathKind::RoutedSnat {
                    let rules = self.dir.join("masquerade.nft");
                    std::fs::write(
                        &rules,
                        "table ip vnet_bench {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"vm2-h\" masquerade\n  }\n}\n",
                    )?;
                    h.exec(&["nft", "-f", &rules.to_string_lossy()])?;
                }
            }
        }
        Ok(())
    }

    fn setup_ceiling(&mut self) -> Result<()> {
        let mut p = BenchPrograms::load(1)?;
        p.set_target(self.host.ifindex("vm2-h")?)?;
        {
            let _in = self.host.enter()?;
            p.attach(BenchProgram::Redirect, "vm1-h", AttachMode::Native)?;
        }
        self.ceiling = Some(p);
        Ok(())
    }

    fn setup_vnet(&mut self) -> Result<()> {
        // vnetd runs XDP on a veth in SKB mode, so the generator's native
        // redirects reach vm1-h only with GRO on (as for Linux, above).
        self.host.exec(&["ethtool", "-K", "vm1-h", "gro", "on"])?;
        let text = self
            .vnet_topology
            .clone()
            .unwrap_or_else(|| self.path.vnet_topology());
        let topology = self.dir.join("topology.yaml");
        std::fs::write(&topology, text)?;
        self.topology = Some(topology);
        self.start_vnetd()
    }

    fn start_vnetd(&mut self) -> Result<()> {
        let topology = self.topology.clone().context("not a vnet lane")?;
        self.vnetd = None;
        let _ = std::fs::remove_dir_all(self.dir.join("state"));
        self.vnetd = Some(Vnetd::start(
            &self.host,
            &self.vnetd_bin,
            &topology,
            &self.dir,
            self.worker_cpu,
            &self.vnetd_args,
        )?);
        let vm1 = self.host.ifindex("vm1-h")?;
        self.key = key_of(&self.frame, vm1);
        Ok(())
    }

    /// vnetd's API socket (vnet lanes).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("vnetd.sock")
    }

    /// A fresh vnetd (empty tables: the new-flows runs leave up to a
    /// device's share of flows and NAT bindings, after which the next new
    /// flow of that device is dropped), with the lane's flow installed.
    pub fn restart_vnetd(&mut self) -> Result<()> {
        self.start_vnetd()?;
        self.first_packets()
    }

    /// Sends first packets until vnet has installed the lane's flow again
    /// (after a change invalidated it).
    pub fn ensure_flow(&mut self) -> Result<()> {
        self.first_packets()
    }

    /// Whether vnetd's kernel table holds the lane's flow.
    pub fn flow_installed(&self) -> Result<bool> {
        match &self.key {
            Some(k) => Ok(self.vnetd_flows()?.get(k).is_some()),
            None => Ok(false),
        }
    }

    /// Sends one frame; whether it arrived at the far end.
    pub fn delivers_one(&self) -> Result<bool> {
        let before = self.counter.count()?;
        self.generate(1, 1)?;
        std::thread::sleep(Duration::from_millis(50));
        Ok(self.counter.count()? > before)
    }

    /// vnetd's flow table (reopened each time: a restart makes a new one).
    pub fn vnetd_flows(&self) -> Result<VnetdFlows> {
        let id = self
            .host
            .xdp_prog_id("vm1-h")?
            .context("vnetd attached no XDP program to vm1-h")?;
        VnetdFlows::open(id)
    }

    pub fn vnetd_log(&self) -> Option<&Path> {
        self.vnetd.as_ref().map(|v| v.log.as_path())
    }

    /// Stops vnetd (the next measurement that needs it starts a fresh
    /// one) and reads the stats it logs as it stops.
    pub fn stop_vnetd_for_stats(&mut self) -> Option<StopStats> {
        let mut v = self.vnetd.take()?;
        v.stop();
        let text = std::fs::read_to_string(&v.log).ok()?;
        StopStats::parse(text.lines().rev().find(|l| l.contains("lock_wait_ms="))?)
    }

    /// Sends the first packets: vnet learns guest b's MAC (bridged) or
    /// resolves it by ARP (routed) and installs the flow; the others just
    /// have to deliver. Fails, saying what did not happen, after 5 s.
    fn first_packets(&mut self) -> Result<()> {
        if self.system == System::Vnet && !self.path.routed() {
            // Guest b speaks first, so the bridge knows where its MAC is.
            let (a, _) = self.path.addrs();
            let _ = self.gb.exec(&["ping", "-c", "1", "-W", "1", &ip4(a)]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let before = self.counter.count()?;
        loop {
            self.generate(1, 1)?;
            std::thread::sleep(Duration::from_millis(100));
            let done = match (self.system, &self.key) {
                (System::Vnet, Some(key)) => self.vnetd_flows()?.get(key).is_some(),
                _ => self.counter.count()? > before,
            };
            if done {
                break;
            }
            if Instant::now() > deadline {
                let log = self
                    .vnetd_log()
                    .map(|p| format!("; the end of vnetd's log:\n{}", log_tail(p, 20)))
                    .unwrap_or_default();
                bail!(
                    "{} {}: the first packets did not {} within 5 s{log}",
                    self.system.name(),
                    self.path.name(),
                    if self.system == System::Vnet {
                        "install a flow"
                    } else {
                        "arrive at the far end"
                    }
                );
            }
        }
        // Every frame of a burst must now arrive.
        let s = self.measure(10_000, 64)?;
        if s.delivered < s.sent * 9 / 10 {
            bail!(
                "{} {}: only {} of {} frames of a test burst arrived at the far end",
                self.system.name(),
                self.path.name(),
                s.delivered,
                s.sent
            );
        }
        Ok(())
    }

    /// Runs the generator for `frames` frames in guest a's namespace.
    fn generate(&self, frames: u32, batch: u32) -> Result<Duration> {
        let _in = self.ga.enter()?;
        Ok(self.gen.generate(&self.frame, frames, batch)?)
    }

    /// Makes the generator send one flow per CPU (the template's source
    /// port plus the CPU), or the template's own flow again.
    pub fn flow_per_cpu(&mut self, on: bool) -> Result<()> {
        if on {
            self.gen.set_flow_per_cpu()?;
        } else {
            self.gen.set_sequence(false)?;
        }
        Ok(())
    }

    /// Pushes `frames` frames and counts what arrives.
    pub fn measure(&self, frames: u32, batch: u32) -> Result<Sample> {
        self.measure_from(&[], frames, batch)
    }

    /// [`Lane::measure`] with `frames` pushed from each of `cpus` at once
    /// (none: from the calling thread), each CPU's frames arriving on its
    /// own receive queue of vm1-h (`cpu % queues`).
    pub fn measure_from(&self, cpus: &[usize], frames: u32, batch: u32) -> Result<Sample> {
        let before = self.counter.count()?;
        let start = Instant::now();
        on_each_cpu(cpus, || self.generate(frames, batch))?;
        let frames = frames * cpus.len().max(1) as u32;
        let secs = start.elapsed().as_secs_f64();
        // Frames still in a softirq queue land within microseconds.
        std::thread::sleep(Duration::from_millis(20));
        let delivered = self.counter.count()? - before;
        Ok(Sample {
            sent: u64::from(frames),
            delivered,
            secs,
        })
    }

    /// Packets the installed flow counted (vnet): whether frames took the
    /// kernel's flow and not the AF_XDP path.
    pub fn flow_packets(&self) -> Result<Option<u64>> {
        match &self.key {
            Some(k) if self.system == System::Vnet => {
                Ok(self.vnetd_flows()?.get(k).map(|v| v.packets))
            }
            _ => Ok(None),
        }
    }

    /// New flows per second: a fresh vnetd, then frames whose UDP ports
    /// change with every frame (each one a first packet) for `secs`; the
    /// rate is the flows installed over that time. vnetd is stopped after
    /// it, for its stats. The worker runs on its
    /// own core; the generator offers far more than it can take, so the
    /// worker is saturated and the excess is dropped at its AF_XDP ring.
    pub fn new_flows(&mut self, secs: f64, batch: u32) -> Result<NewFlows> {
        self.new_flows_from(&[], None, secs, batch)
    }

    /// [`Lane::new_flows`] with one generator thread on each of `cpus`
    /// (none: on the calling thread): the frames a CPU sends into guest a's
    /// veth arrive on receive queue `cpu % queues` of vm1-h. With `pace`,
    /// each thread offers that many first packets per second and sleeps in
    /// between, leaving the CPUs to the workers (a generator that never
    /// sleeps takes a CPU from them on a 2-CPU machine).
    pub fn new_flows_from(
        &mut self,
        cpus: &[usize],
        pace: Option<f64>,
        secs: f64,
        batch: u32,
    ) -> Result<NewFlows> {
        self.start_vnetd()?;
        self.first_packets()?;
        let flows = self.vnetd_flows()?;
        let before = flows.count();
        let cpu_before = self.vnetd.as_ref().and_then(Vnetd::worker_cpu_secs);
        let wait_before = self.vnetd.as_ref().and_then(Vnetd::worker_wait_secs);
        let ticks_before = self.worker_cpu.and_then(sys::cpu_ticks);
        self.gen.set_sequence(true)?;
        let start = Instant::now();
        let generate = || -> Result<u64> {
            let chunk = if pace.is_some() { 2_000 } else { 50_000 };
            let mut sent = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                self.generate(chunk, batch)?;
                sent += u64::from(chunk);
                if let Some(rate) = pace {
                    let due = Duration::from_secs_f64(sent as f64 / rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            Ok(sent)
        };
        let result = on_each_cpu(cpus, generate).map(|sent| sent.iter().sum::<u64>());
        let elapsed = start.elapsed().as_secs_f64();
        self.gen.set_sequence(false)?;
        let sent = result.as_ref().copied().unwrap_or(0);
        result?;
        // What is still in the AF_XDP ring (at most its 2048 frames).
        std::thread::sleep(Duration::from_millis(100));
        let cpu_after = self.vnetd.as_ref().and_then(Vnetd::worker_cpu_secs);
        let wait_after = self.vnetd.as_ref().and_then(Vnetd::worker_wait_secs);
        let ticks_after = self.worker_cpu.and_then(sys::cpu_ticks);
        let after = flows.count();
        let installed = after.saturating_sub(before) as f64;
        let stats = self.stop_vnetd_for_stats();
        Ok(NewFlows {
            stats,
            per_sec: installed / elapsed,
            per_cpu_sec: match (cpu_before, cpu_after) {
                (Some(a), Some(b)) if b > a => Some(installed / (b - a)),
                _ => None,
            },
            worker_busy: match (cpu_before, cpu_after) {
                (Some(a), Some(b)) => Some((b - a) / (elapsed + 0.1)),
                _ => None,
            },
            worker_waited: match (wait_before, wait_after) {
                (Some(a), Some(b)) => Some((b - a).max(0.0) / (elapsed + 0.1)),
                _ => None,
            },
            cpu_busy: match (ticks_before, ticks_after) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                    Some((b1 - b0) as f64 / (t1 - t0) as f64)
                }
                _ => None,
            },
            offered: sent as f64 / elapsed,
        })
    }

    /// First-packet latency: `pings` runs of `ping -c 4` from guest a to
    /// guest b, each with a new ICMP id (a new flow in both directions);
    /// returns the medians of the first RTT, of the later RTTs, and of
    /// their difference per run, in µs.
    pub fn first_packet_latency(&self, pings: usize) -> Result<(f64, f64, f64)> {
        let (_, b) = self.path.addrs();
        let (mut firsts, mut laters, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..pings {
            let out = self
                .ga
                .exec(&["ping", "-n", "-c", "4", "-i", "0.05", "-W", "1", &ip4(b)])?;
            let mut rtts: Vec<(u32, f64)> = out
                .lines()
                .filter_map(|l| {
                    let seq = l
                        .split("icmp_seq=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()?;
                    let ms: f64 = l
                        .split("time=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()?;
                    Some((seq, ms * 1000.0))
                })
                .collect();
            rtts.sort_by_key(|r| r.0);
            if rtts.len() < 4 || rtts[0].0 != 1 {
                bail!("ping from guest a to {} lost replies:\n{out}", ip4(b));
            }
            let mut later: Vec<f64> = rtts[1..].iter().map(|r| r.1).collect();
            let later = crate::median(&mut later);
            firsts.push(rtts[0].1);
            laters.push(later);
            diffs.push(rtts[0].1 - later);
        }
        Ok((
            crate::median(&mut firsts),
            crate::median(&mut laters),
            crate::median(&mut diffs),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::StopStats;

    /// A stats line as vnetd logs it (tracing's text format).
    const LINE: &str = "2026-12-02T20:19:54.778602Z  INFO vnet_dataplane::runtime: stats kernel_rx=1484244 \
        kernel_hits=167 kernel_misses=1484077 userspace_rx=12577 forwarded=12554 flows=12543 macs=4 \
        busy_ms=794 lock_wait_ms=6 drops={DeviceNatLimit: 65, FillRingEmpty: 191145, NatExhausted: 2} \
        upcall_budget_by_port=[(\"fl-h\", 9)]";

    #[test]
    fn stop_stats_sum_the_table_limits_only() {
        let s = StopStats::parse(LINE).expect("a stats line");
        assert_eq!(s.busy_ms, 794);
        assert_eq!(s.lock_wait_ms, 6);
        // FillRingEmpty is a ring's drop, not a table's.
        assert_eq!(s.refused_by_limits, 67);
        assert_eq!(
            (s.kernel_misses, s.received, s.fill_ring_empty),
            (1484077, 12577, 191145)
        );
    }

    #[test]
    fn stop_stats_without_drops_refuse_nothing() {
        let line = LINE.replace(
            "drops={DeviceNatLimit: 65, FillRingEmpty: 191145, NatExhausted: 2}",
            "drops={}",
        );
        assert_eq!(
            StopStats::parse(&line).map(|s| s.refused_by_limits),
            Some(0)
        );
        assert_eq!(StopStats::parse("stats flows=3"), None);
    }
}
