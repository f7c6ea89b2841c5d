//! System plumbing for the harnesses: commands, network namespaces, CPU
//! pinning, and reading vnetd's flow table from outside.
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use vnet_common::{maps, FlowKey, FlowValue};

/// Runs a command; returns its stdout, or an error with the command line,
/// its status and its stderr (everything needed to redo it by hand).
pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running `{}` (is {} installed?)", args.join(" "), args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on PATH.
pub fn have_program(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A network namespace this process created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        // A leftover of an interrupted run with the same name goes first.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `ip netns exec NAME ARGS...`
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Ifindex of `ifname` in this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let links: serde_json::Value =
            serde_json::from_str(&self.ip(&["-j", "link", "show", ifname])?)?;
        links[0]["ifindex"]
            .as_u64()
            .map(|i| i as u32)
            .with_context(|| format!("no ifindex for {ifname} in {}", self.name))
    }

    /// Id of the XDP program attached to `ifname`, if any.
    pub fn xdp_prog_id(&self, ifname: &str) -> Result<Option<u32>> {
        let links: serde_json::Value =
            serde_json::from_str(&self.ip(&["-j", "link", "show", ifname])?)?;
        Ok(links[0]["xdp"]["prog"]["id"].as_u64().map(|i| i as u32))
    }

    /// Makes the calling thread enter this namespace until the guard drops.
    pub fn enter(&self) -> Result<EnteredNetns> {
        EnteredNetns::enter(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The calling thread inside another network namespace; back where it was
/// on drop. (setns changes only the calling thread.)
pub struct EnteredNetns {
    home: File,
}

impl EnteredNetns {
    pub fn enter(name: &str) -> Result<EnteredNetns> {
        let home = File::open("/proc/thread-self/ns/net")
            .context("opening this thread's network namespace")?;
        let target = File::open(format!("/run/netns/{name}"))
            .with_context(|| format!("opening namespace {name}"))?;
        nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering namespace {name}"))?;
        Ok(EnteredNetns { home })
    }
}

impl Drop for EnteredNetns {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(self.home.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
            // Staying in the wrong namespace would make every later step
            // act on the wrong interfaces: stop here.
            eprintln!("fatal: cannot return to the original network namespace: {e}");
            std::process::exit(2);
        }
    }
}

/// Number of CPUs online (not the affinity mask: the harness pins itself,
/// and what it reports is the machine).
pub fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// Busy and total time of `cpu` so far (USER_HZ ticks), from /proc/stat:
/// busy is everything but idle and iowait (so softirq work counts).
pub fn cpu_ticks(cpu: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&name))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Pins the calling thread (and what it spawns later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("cpu {cpu} out of range"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning to cpu {cpu}"))?;
    Ok(())
}

/// vnetd's flow table, opened by the id of the XDP program it attached
/// (the map is found among the program's maps by name).
pub struct VnetdFlows {
    map: aya::maps::HashMap<aya::maps::MapData, FlowKey, FlowValue>,
}

impl VnetdFlows {
    pub fn open(prog_id: u32) -> Result<VnetdFlows> {
        let info = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == prog_id)
            .with_context(|| format!("no loaded program with id {prog_id}"))?;
        let ids = info
            .map_ids()
            .context("listing the program's maps")?
            .unwrap_or_default();
        for id in ids {
            let data =
                aya::maps::MapData::from_id(id).with_context(|| format!("opening map id {id}"))?;
            let is_flows = data
                .info()
                .ok()
                .and_then(|i| i.name_as_str().map(|n| n == maps::FLOWS))
                .unwrap_or(false);
            if is_flows {
                let map = aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))
                    .context("FLOWS is not a hash map")?;
                return Ok(VnetdFlows { map });
            }
        }
        bail!("program {prog_id} has no map named {}", maps::FLOWS)
    }

    pub fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.map.get(key, 0).ok()
    }

    /// Number of flows (walks the map: one syscall per flow).
    pub fn count(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }
}

/// What a results file names the machine by: CPUs, CPU model, kernel.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = run(&["uname", "-r"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown kernel".into());
    format!("{} CPUs ({model}), Linux {kernel}", cpus())
}

/// Today's date and time in UTC, for the results.
pub fn now_utc() -> String {
    run(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
