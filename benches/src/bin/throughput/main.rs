//! The throughput harness (issue 8): vnet against the Linux kernel doing the
//! same job, and against the machine's raw XDP_REDIRECT ceiling, on
//! identical namespace lanes (see `lane.rs`), with 64-byte frames from the
//! `BPF_PROG_TEST_RUN` live-frames generator. Measurements alternate
//! between systems, N repetitions, medians; then new flows per second,
//! first-packet latency and the XDP program's per-packet cost. Prints one
//! table (markdown) for benches/RESULTS.md.
//!
//! Root only; a manual command, never part of CI:
//!     benches/throughput.sh            (builds vnetd and this, then runs it)
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use vnet_benches::lane::{Lane, LaneOptions, PathKind, Sample, System};
use vnet_benches::sys;
use vnet_benches::xdp::{Case, XdpBench};

mod cores;

#[derive(Debug, Parser)]
#[command(
    name = "throughput",
    about = "vnet vs Linux vs raw XDP_REDIRECT, on one core, with live frames"
)]
pub(crate) struct Options {
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Seconds of traffic per measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Paths to measure (bridged, routed, routed+snat).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bridged,routed,routed+snat"
    )]
    paths: Vec<String>,
    /// Frames per kernel batch of the live-frames generator (1..=256).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Repetitions of the new-flows run (each on a fresh vnetd; 0 skips).
    #[arg(long, default_value_t = 3)]
    new_flow_reps: usize,
    /// Measure more than one core (two queues, one worker against two).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cores: bool,
    /// Ping runs of the first-packet latency (0 skips).
    #[arg(long, default_value_t = 20)]
    pings: usize,
    /// The vnetd binary (default: next to this one, from the same build).
    #[arg(long)]
    vnetd: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(crate) fn interrupted() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}

pub(crate) fn progress(msg: &str) {
    eprintln!("[throughput] {msg}");
}

fn main() {
    let opts = Options::parse();
    match run(&opts) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("throughput: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn vnetd_path(opts: &Options) -> Result<PathBuf> {
    if let Some(p) = &opts.vnetd {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("no directory for this binary")?
        .join("vnetd");
    if !p.exists() {
        bail!("{} not found: build it (cargo build --release -p vnet-dataplane --bin vnetd) or pass --vnetd", p.display());
    }
    Ok(p)
}

fn parse_paths(names: &[String]) -> Result<Vec<PathKind>> {
    names
        .iter()
        // `--paths ''`: none (only the other parts of the run).
        .filter(|n| !n.is_empty())
        .map(|n| match n.as_str() {
            "bridged" => Ok(PathKind::Bridged),
            "routed" => Ok(PathKind::Routed),
            "routed+snat" | "snat" => Ok(PathKind::RoutedSnat),
            other => bail!("unknown path {other:?}: use bridged, routed or routed+snat"),
        })
        .collect()
}

/// Medians per (path, system), and what the run found along the way.
#[derive(Default)]
struct Results {
    mpps: BTreeMap<(String, &'static str), f64>,
    offered: BTreeMap<(String, &'static str), f64>,
    skipped: BTreeMap<(String, &'static str), String>,
    /// (flows/s, flows per worker CPU-second, first packets offered/s)
    new_flows: BTreeMap<String, (f64, f64, f64)>,
    /// (first RTT, later RTTs, added) by (path, where ping ran)
    latency: BTreeMap<(String, &'static str), (f64, f64, f64)>,
    xdp: Option<Vec<(Case, f64)>>,
    cores: Option<cores::Cores>,
    notes: Vec<String>,
}

fn run(opts: &Options) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces, XDP, BPF_PROG_TEST_RUN): run `sudo benches/throughput.sh`");
    }
    if !(1..=256).contains(&opts.batch) {
        bail!("--batch must be 1..=256");
    }
    let paths = parse_paths(&opts.paths)?;
    let vnetd = vnetd_path(opts)?;
    {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        // Ctrl-C finishes the current measurement, then everything the
        // harness created (vnetd, programs, namespaces) is removed.
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { sigaction(sig, &action) }
                .with_context(|| format!("installing the {sig} handler"))?;
        }
    }
    let have_nft = sys::have_program("nft");
    for p in ["ip", "ethtool", "ping", "bridge", "sysctl"] {
        if !sys::have_program(p) {
            bail!("{p} is missing: run scripts/bootstrap.sh");
        }
    }
    // One core for the traffic (generator + every hop in softirq), one for
    // vnetd's worker and this process's waiting. With a single CPU both
    // share it and the figures say so.
    let cpus = sys::cpus();
    let (traffic_cpu, worker_cpu) = if cpus >= 2 { (1, Some(0)) } else { (0, None) };
    sys::pin_current_thread(traffic_cpu)?;
    progress(&format!(
        "{}; traffic on cpu {traffic_cpu}, vnetd's worker on {}; {} reps of {} s, batch {}",
        sys::machine(),
        worker_cpu.map_or("the same cpu".into(), |c| format!("cpu {c}")),
        opts.reps,
        opts.seconds,
        opts.batch
    ));

    let mut results = Results::default();
    let prefix = format!("vb{}x", std::process::id() % 100_000);
    let mut index = 0;
    for path in &paths {
        interrupted()?;
        measure_path(
            opts,
            *path,
            &prefix,
            &mut index,
            &vnetd,
            (traffic_cpu, worker_cpu),
            have_nft,
            &mut results,
        )?;
    }
    interrupted()?;
    if opts.cores && cpus >= 2 {
        results.cores = Some(cores::measure(opts, &prefix, &mut index, &vnetd)?);
    } else if opts.cores {
        results
            .notes
            .push("more than one core not measured: this machine has one CPU".into());
    }
    interrupted()?;
    progress("XDP program per packet: BPF_PROG_TEST_RUN, 21 alternating rounds of 2^20 runs");
    match XdpBench::load().and_then(|b| b.side_by_side(21, 1 << 20)) {
        Ok(m) => results.xdp = Some(m),
        Err(e) => results
            .notes
            .push(format!("XDP per-packet cost not measured: {e}")),
    }
    print_table(opts, &paths, &results, cpus);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure_path(
    opts: &Options,
    path: PathKind,
    prefix: &str,
    index: &mut usize,
    vnetd: &std::path::Path,
    (traffic_cpu, worker_cpu): (usize, Option<usize>),
    have_nft: bool,
    results: &mut Results,
) -> Result<()> {
    let pname = path.name().to_string();
    let mut systems = vec![System::Vnet, System::Linux, System::Ceiling];
    if path == PathKind::RoutedSnat && !have_nft {
        systems.retain(|s| *s != System::Linux);
        results.skipped.insert(
            (pname.clone(), "linux"),
            "nft missing: run scripts/bootstrap.sh".into(),
        );
    }
    let mut lanes = Vec::new();
    for system in systems {
        interrupted()?;
        progress(&format!(
            "{pname}: setting up {} (namespaces, first packets)",
            system.name()
        ));
        let o = LaneOptions {
            prefix,
            index: *index,
            vnetd,
            worker_cpu,
            vnet_topology: None,
        };
        *index += 1;
        lanes.push(
            Lane::new(system, path, &o)
                .with_context(|| format!("setting up {} on the {pname} path", system.name()))?,
        );
    }

    // Calibrate: frames per measurement for about `seconds` of traffic.
    let mut frames = Vec::new();
    for lane in &lanes {
        let s = lane.measure(1_000_000, opts.batch)?;
        let n = (s.offered_mpps() * 1e6 * opts.seconds).clamp(100_000.0, 200_000_000.0) as u32;
        progress(&format!(
            "{pname}: {} calibrated at {:.2} Mpps offered, {n} frames per run",
            lane.system.name(),
            s.offered_mpps()
        ));
        frames.push(n);
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); lanes.len()];
    for rep in 0..opts.reps {
        // Rotate the order so that no system always runs first.
        for k in 0..lanes.len() {
            interrupted()?;
            let i = (rep + k) % lanes.len();
            let lane = &lanes[i];
            let flow_before = lane.flow_packets()?;
            let s = lane.measure(frames[i], opts.batch)?;
            let mut line = format!(
                "{pname} rep {}/{}: {:<8} {:6.2} Mpps delivered ({:.2} offered, {:.1}% lost)",
                rep + 1,
                opts.reps,
                lane.system.name(),
                s.mpps(),
                s.offered_mpps(),
                100.0 * (s.sent - s.delivered.min(s.sent)) as f64 / s.sent as f64
            );
            if let (Some(b), Some(a)) = (flow_before, lane.flow_packets()?) {
                // Frames that took the kernel flow, not AF_XDP.
                line.push_str(&format!(
                    ", {:.1}% on the kernel flow",
                    100.0 * (a - b) as f64 / s.delivered.max(1) as f64
                ));
            }
            progress(&line);
            samples[i].push(s);
        }
    }
    for (lane, s) in lanes.iter().zip(samples.iter()) {
        let mut mpps: Vec<f64> = s.iter().map(Sample::mpps).collect();
        let mut offered: Vec<f64> = s.iter().map(Sample::offered_mpps).collect();
        results.mpps.insert(
            (pname.clone(), lane.system.name()),
            vnet_benches::median(&mut mpps),
        );
        results.offered.insert(
            (pname.clone(), lane.system.name()),
            vnet_benches::median(&mut offered),
        );
    }

    // New flows and first-packet latency, on the vnet lane.
    if let Some(lane) = lanes.iter_mut().find(|l| l.system == System::Vnet) {
        if opts.new_flow_reps > 0 {
            let (mut rates, mut per_cpu, mut offered) = (Vec::new(), Vec::new(), Vec::new());
            for rep in 0..opts.new_flow_reps {
                interrupted()?;
                let r = lane.new_flows(opts.seconds, opts.batch)?;
                progress(&format!(
                    "{pname} new flows {}/{}: {:.0} flows/s installed, {} per worker CPU-second (worker thread on a CPU {} of the time, waiting for one {}, its CPU busy {}; {:.2} Mpps of first packets offered)",
                    rep + 1,
                    opts.new_flow_reps,
                    r.per_sec,
                    r.per_cpu_sec.map_or("?".into(), |v| format!("{v:.0}")),
                    r.worker_busy.map_or("?".into(), |v| format!("{:.0}%", v * 100.0)),
                    r.worker_waited.map_or("?".into(), |v| format!("{:.0}%", v * 100.0)),
                    r.cpu_busy.map_or("?".into(), |v| format!("{:.0}%", v * 100.0)),
                    r.offered / 1e6
                ));
                if let Some(s) = r.stats {
                    progress(&format!(
                        "{pname} new flows {}/{}: the kernel missed {} frames, the worker received {}, {} found its ring full",
                        rep + 1,
                        opts.new_flow_reps,
                        s.kernel_misses,
                        s.received,
                        s.fill_ring_empty
                    ));
                }
                if let Some(n) = r.refused_by_limits() {
                    let note = format!(
                        "{pname} new flows {}/{}: vnetd refused {n} first packets at a table limit, so that run measured the limit, not the worker",
                        rep + 1,
                        opts.new_flow_reps
                    );
                    progress(&note);
                    results.notes.push(note);
                }
                rates.push(r.per_sec);
                per_cpu.push(r.per_cpu_sec.unwrap_or(0.0));
                offered.push(r.offered);
            }
            results.new_flows.insert(
                pname.clone(),
                (
                    vnet_benches::median(&mut rates),
                    vnet_benches::median(&mut per_cpu),
                    vnet_benches::median(&mut offered),
                ),
            );
        }
        if opts.pings > 0 {
            interrupted()?;
            if opts.new_flow_reps > 0 {
                // The new-flows runs filled the device's NAT share (routed+
                // SNAT): the pings would find no free binding.
                lane.restart_vnetd()?;
            }
            progress(&format!(
                "{pname}: first-packet latency, {} ping runs from the traffic cpu",
                opts.pings
            ));
            let other = lane.first_packet_latency(opts.pings)?;
            progress(&format!(
                "{pname}: first RTT {:.0} µs, later RTTs {:.0} µs, added {:.0} µs",
                other.0, other.1, other.2
            ));
            results.latency.insert(
                (pname.clone(), "ping on another cpu than the worker's"),
                other,
            );
            if let Some(cpu) = worker_cpu {
                // The same with ping on the worker's CPU: no cross-CPU
                // wakeup of the worker (an IPI to a halted vCPU on a VM).
                progress(&format!(
                    "{pname}: first-packet latency, {} ping runs from the worker's cpu",
                    opts.pings
                ));
                sys::pin_current_thread(cpu)?;
                let same = lane.first_packet_latency(opts.pings);
                sys::pin_current_thread(traffic_cpu)?;
                let same = same?;
                progress(&format!(
                    "{pname}: first RTT {:.0} µs, later RTTs {:.0} µs, added {:.0} µs",
                    same.0, same.1, same.2
                ));
                results
                    .latency
                    .insert((pname.clone(), "ping on the worker's cpu"), same);
            }
        }
    }
    progress(&format!("{pname}: tearing down"));
    drop(lanes);
    Ok(())
}

fn fmt_mpps(r: &Results, path: &str, system: &'static str) -> String {
    match (
        r.mpps.get(&(path.to_string(), system)),
        r.skipped.get(&(path.to_string(), system)),
    ) {
        (Some(v), _) => format!("{v:.2}"),
        (None, Some(why)) => why.clone(),
        (None, None) => "—".into(),
    }
}

fn ratio(r: &Results, path: &str, a: &'static str, b: &'static str) -> String {
    match (
        r.mpps.get(&(path.to_string(), a)),
        r.mpps.get(&(path.to_string(), b)),
    ) {
        (Some(x), Some(y)) if *y > 0.0 => format!("{:.2}×", x / y),
        _ => "—".into(),
    }
}

fn print_table(opts: &Options, paths: &[PathKind], r: &Results, cpus: usize) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The command as typed, to rerun it.
    let args = if args.is_empty() {
        String::new()
    } else {
        format!(" {}", args.join(" "))
    };
    println!();
    println!("## Throughput ({})", sys::now_utc());
    println!();
    println!(
        "Machine: {}. Command: `sudo benches/throughput.sh{}`.",
        sys::machine(),
        args
    );
    println!(
        "64-byte UDP frames from the BPF_PROG_TEST_RUN live-frames generator (batch {}), {} traffic; medians of {} alternating runs of {} s.",
        opts.batch,
        if cpus >= 2 { "one core for all" } else { "one CPU (shared with vnetd)" },
        opts.reps,
        opts.seconds
    );
    println!();
    println!("| path | vnet Mpps | Linux Mpps (what Linux does) | ceiling Mpps (raw XDP_REDIRECT) | vnet / Linux | vnet / ceiling | target |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for path in paths {
        let p = path.name();
        let target = match path {
            PathKind::Bridged => "≥ 10 Mpps; ≥ 70 % of ceiling; ≥ 3.5× Linux bridge",
            PathKind::Routed => "(no target of its own)",
            PathKind::RoutedSnat => "≥ 8 Mpps; ≥ 5× Linux",
        };
        println!(
            "| {p} | {} | {} ({}) | {} | {} | {} | {target} |",
            fmt_mpps(r, p, "vnet"),
            fmt_mpps(r, p, "linux"),
            path.linux_name(),
            fmt_mpps(r, p, "ceiling"),
            ratio(r, p, "vnet", "linux"),
            ratio(r, p, "vnet", "ceiling"),
        );
    }
    println!();
    println!("| figure | measured | target |");
    println!("| --- | --- | --- |");
    if let Some(m) = &r.xdp {
        let get = |c: Case| m.iter().find(|(k, _)| *k == c).map_or(0.0, |(_, v)| *v);
        let base = get(Case::EmptyPlusLookup);
        println!(
            "| XDP program per packet, flow hit (BPF_PROG_TEST_RUN) | {:.0} ns vs {:.0} ns for empty + one lookup ({:.0} ns empty): {:.2}× | ≤ 1.8× |",
            get(Case::Hit),
            base,
            get(Case::Empty),
            get(Case::Hit) / base.max(1.0)
        );
        println!(
            "| XDP program per packet, flow hit with MAC rewrites / miss to AF_XDP | {:.0} ns / {:.0} ns | — |",
            get(Case::HitRewrite),
            get(Case::Miss)
        );
    }
    for (path, (rate, per_cpu, offered)) in &r.new_flows {
        let target = match path.as_str() {
            "bridged" => "≥ 300 k/s per core",
            "routed+snat" => "≥ 150 k/s per core (NAT + 100-rule chain)",
            _ => "—",
        };
        println!(
            "| new flows per second, {path} (AF_XDP + simulation + install) | {:.0} k/s; {:.0} k per worker CPU-second ({:.2} Mpps of first packets offered) | {target} |",
            rate / 1e3,
            per_cpu / 1e3,
            offered / 1e6
        );
    }
    for ((path, wher), (first, later, added)) in &r.latency {
        println!(
            "| first-packet latency added, {path}, {wher} (first ping RTT − later RTTs; both directions are first packets) | {added:.0} µs (first {first:.0} µs, later {later:.0} µs) | ≤ 50 µs |"
        );
    }
    if let Some(c) = &r.cores {
        let get = |system: &'static str| {
            r.mpps
                .get(&(PathKind::RoutedSnat.name().to_string(), system))
                .copied()
        };
        cores::print_rows(c, (get("linux"), get("ceiling")));
    }
    for n in &r.notes {
        println!();
        println!("Note: {n}");
    }
    for ((p, s), off) in &r.offered {
        if let Some(got) = r.mpps.get(&(p.clone(), *s)) {
            if *got < off * 0.9 {
                println!();
                println!("Note: {p}/{s} delivered {got:.2} of {off:.2} Mpps offered: the path, not the generator, is the limit there.");
            }
        }
    }
}
