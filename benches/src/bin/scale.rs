//! Scale runs (issue 8, PERFORMANCE.md "scale" and "topology change to
//! effect"):
//!
//! 1. 1 000 000 flows in the kernel table: insert rate, kernel memory per
//!    flow (the map's own accounting from fdinfo, and /proc/meminfo), and
//!    the XDP program's lookup cost with the full table (BPF_PROG_TEST_RUN,
//!    same key repeated and random keys), next to a table of one flow.
//! 2. A topology of 10 000 ports: parse + validate + Snapshot::compile,
//!    in process; one change (a port down) and its effect: in process
//!    (compile + changed tags + invalidation in the kernel table), and
//!    through vnetd's gRPC API (apply until the dataplane runs it, and until
//!    a packet is dropped).
//!
//! Root for the kernel parts (without root, only the in-process topology
//! figures are measured, with the in-memory flow backend):
//!     sudo benches/scale.sh
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vnet_benches::lane::{Lane, LaneOptions, PathKind, System};
use vnet_benches::topo::Ports;
use vnet_benches::{bridged_actions, key_of, median, sys, udp64, BR_VM1, BR_VM2, VM1_MAC, VM2_MAC};
use vnet_common::{FlowKey, DEFAULT_MAX_FLOWS};
use vnet_dataplane::flows::{FlowBackend, FlowTable, MemoryBackend};
use vnet_dataplane::kernel::Kernel;
use vnet_dataplane::packet::{build, Mac, BROADCAST};
use vnet_dataplane::reconfig::changed_tags;
use vnet_dataplane::sim::{self, PortId, Snapshot, State, Verdict};

#[derive(Debug, Parser)]
#[command(
    name = "scale",
    about = "1 000 000 kernel flows; a 10 000-port topology and one change to it"
)]
struct Options {
    /// Flows to install in the kernel table.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u32,
    /// Bridges × VMs of the big topology (100 × 99 = 10 000 bridge ports
    /// with the router links, plus 100 router ports).
    #[arg(long, default_value_t = 100)]
    bridges: usize,
    #[arg(long, default_value_t = 99)]
    vms: usize,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Skip the run through vnetd's API.
    #[arg(long)]
    no_vnetd: bool,
    /// The vnetd binary (default: next to this one).
    #[arg(long)]
    vnetd: Option<PathBuf>,
}

fn progress(msg: &str) {
    eprintln!("[scale] {msg}");
}

fn main() {
    let opts = Options::parse();
    if let Err(e) = run(&opts) {
        eprintln!("scale: error: {e:#}");
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run(opts: &Options) -> Result<()> {
    if opts.reps == 0 || opts.bridges == 0 || opts.vms < 2 {
        bail!("--reps must be at least 1, --bridges at least 1 and --vms at least 2");
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        progress("not root: skipping the kernel table and vnetd runs (sudo benches/scale.sh runs everything)");
    }
    if sys::cpus() >= 2 {
        sys::pin_current_thread(1)?;
    }
    let mut rows: Vec<(String, String, String)> = Vec::new();
    if root {
        million_flows(opts, &mut rows)?;
    }
    topology_in_process(opts, root, &mut rows)?;
    if root && !opts.no_vnetd {
        topology_through_vnetd(opts, false, &mut rows)?;
        topology_through_vnetd(opts, true, &mut rows)?;
    }

    println!();
    println!("## Scale ({})", sys::now_utc());
    println!();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The command as typed, to rerun it.
    let args = if args.is_empty() {
        String::new()
    } else {
        format!(" {}", args.join(" "))
    };
    println!(
        "Machine: {}. Command: `sudo benches/scale.sh{}`. Medians of {} runs.",
        sys::machine(),
        args,
        opts.reps
    );
    println!();
    println!("| figure | measured | target |");
    println!("| --- | --- | --- |");
    for (f, m, t) in rows {
        println!("| {f} | {m} | {t} |");
    }
    Ok(())
}

/// The frame of flow `n` (distinct UDP ports; up to 2^20 flows).
fn frame_of(n: u32) -> Vec<u8> {
    udp64(
        VM1_MAC,
        VM2_MAC,
        BR_VM1,
        BR_VM2,
        n as u16,
        1000 + (n >> 16) as u16,
    )
}

/// `memlock` (bytes) of this process's BPF map with these sizes, from
/// /proc/self/fdinfo: the kernel's own accounting of the map's memory.
fn map_memlock(key_size: u32, value_size: u32, max_entries: u32) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if field("map_type:").as_deref() == Some("1")
            && field("key_size:") == Some(key_size.to_string())
            && field("value_size:") == Some(value_size.to_string())
            && field("max_entries:") == Some(max_entries.to_string())
        {
            return field("memlock:").and_then(|v| v.parse().ok());
        }
    }
    None
}

/// Kernel memory that BPF hash map elements come from (slab, per-CPU), kB.
fn meminfo_kernel_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("SUnreclaim:") + field("Percpu:")
}

fn million_flows(opts: &Options, rows: &mut Vec<(String, String, String)>) -> Result<()> {
    let n = opts.flows.min(DEFAULT_MAX_FLOWS);
    progress(&format!("kernel table: installing {n} flows"));
    let mut full = Kernel::load(DEFAULT_MAX_FLOWS)?;
    let mut small = Kernel::load(1024)?;
    let actions = bridged_actions(1);
    let key = |i: u32| key_of(&frame_of(i), 1).expect("bench frames have keys");
    small.insert_flow(&key(0), &actions)?;
    let (k, v) = (
        std::mem::size_of::<FlowKey>() as u32,
        std::mem::size_of::<vnet_common::FlowValue>() as u32,
    );
    let memlock_before = map_memlock(k, v, DEFAULT_MAX_FLOWS);
    let mem_before = meminfo_kernel_kb();
    let start = Instant::now();
    for i in 0..n {
        full.insert_flow(&key(i), &actions)
            .with_context(|| format!("inserting flow {i}"))?;
        if (i + 1) % 200_000 == 0 {
            progress(&format!(
                "  {} flows, {:.0} inserts/s",
                i + 1,
                f64::from(i + 1) / start.elapsed().as_secs_f64()
            ));
        }
    }
    let insert_rate = f64::from(n) / start.elapsed().as_secs_f64();
    // Element frees and allocations settle (RCU, per-CPU caches).
    std::thread::sleep(Duration::from_millis(500));
    let memlock_after = map_memlock(k, v, DEFAULT_MAX_FLOWS);
    let mem_after = meminfo_kernel_kb();
    let per_flow_memlock = match (memlock_before, memlock_after) {
        (Some(a), Some(b)) => format!("{:.0} B", (b.saturating_sub(a)) as f64 / f64::from(n)),
        _ => "? (no fdinfo)".into(),
    };
    let per_flow_meminfo = mem_after.saturating_sub(mem_before) as f64 * 1024.0 / f64::from(n);
    let full_total = memlock_after.map_or("?".into(), |b| format!("{:.0} MB", b as f64 / 1e6));
    rows.push((
        format!("kernel memory per flow, {n} flows (map accounting: fdinfo memlock delta; /proc/meminfo SUnreclaim+Percpu delta, machine-wide)"),
        format!("{per_flow_memlock} (map total {full_total} incl. buckets); {per_flow_meminfo:.0} B"),
        "≤ 256 B".into(),
    ));
    rows.push((
        format!("flow inserts into the kernel table (bpf syscall per flow, up to {n})"),
        format!("{:.0} k/s", insert_rate / 1e3),
        "—".into(),
    ));

    progress("kernel table: lookups with the full table vs one flow (BPF_PROG_TEST_RUN)");
    let hot = frame_of(0);
    let (mut full_ns, mut small_ns) = (Vec::new(), Vec::new());
    for _ in 0..opts.reps.max(5) {
        full_ns.push(full.test_run(&hot, 1, 1 << 20)?.duration_ns as f64);
        small_ns.push(small.test_run(&hot, 1, 1 << 20)?.duration_ns as f64);
    }
    let (f, s) = (median(&mut full_ns), median(&mut small_ns));
    rows.push((
        format!("XDP flow hit, same key repeated, table of {n} vs 1 flow"),
        format!(
            "{f:.0} ns ({:.1} Mpps) vs {s:.0} ns: {:.2}×",
            1e3 / f,
            f / s
        ),
        "—".into(),
    ));
    // Random keys: one run per frame (the kernel times each run alone), so
    // every lookup walks to a bucket and an element that are likely not in
    // cache. The same loop on one hot frame is the reference.
    let mut seed = 0x9e37_79b9u32;
    let mut random_ns = Vec::new();
    let mut hot_ns = Vec::new();
    for _ in 0..20_000 {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let frame = frame_of(seed % n);
        random_ns.push(full.test_run(&frame, 1, 1)?.duration_ns as f64);
        hot_ns.push(full.test_run(&hot, 1, 1)?.duration_ns as f64);
    }
    let (r, h) = (median(&mut random_ns), median(&mut hot_ns));
    rows.push((
        format!("XDP flow hit, random keys over {n} flows (one run each, kernel-timed)"),
        format!(
            "{r:.0} ns vs {h:.0} ns for one hot key in the same loop: {:.2}×",
            r / h.max(1.0)
        ),
        "—".into(),
    ));
    Ok(())
}

/// Locally administered MAC of VM `v` on bridge `b`.
fn vm_mac(b: usize, v: usize) -> Mac {
    [0x02, 0x10, (b >> 8) as u8, b as u8, (v >> 8) as u8, v as u8]
}

/// Every VM speaks once (the bridges learn them all), then one flow per VM
/// to the next VM of its bridge is simulated and installed: flows with the
/// tags real ones carry. Returns the two flows of t0/vm0 (from it, to it).
fn install_vm_flows(
    snap: &Snapshot,
    state: &mut State,
    table: &mut FlowTable,
    backend: &mut impl FlowBackend,
    bridges: usize,
    vms: usize,
) -> Result<Vec<(FlowKey, PortId, Vec<u8>)>> {
    let port = |b: usize, v: usize| {
        snap.port_by_name(&format!("t{b}/vm{v}"))
            .with_context(|| format!("no port t{b}/vm{v}"))
    };
    for b in 0..bridges {
        for v in 0..vms {
            let hello = build::udp_frame(
                vm_mac(b, v),
                BROADCAST,
                [10, b as u8, 1, v as u8],
                [10, b as u8, 255, 255],
                68,
                67,
                b"hi",
            );
            sim::simulate(snap, state, port(b, v)?, &hello, 1, false);
        }
    }
    let mut watched = Vec::new();
    for b in 0..bridges {
        for v in 0..vms {
            let w = (v + 1) % vms;
            let frame = udp64(
                vm_mac(b, v),
                vm_mac(b, w),
                [10, b as u8, 1, v as u8],
                [10, b as u8, 1, w as u8],
                5000,
                6000,
            );
            let p = port(b, v)?;
            let d = sim::simulate(snap, state, p, &frame, 2, false);
            let Some(flow) = d.install else {
                bail!("t{b}/vm{v} → vm{w}: {:?}, no flow", d.verdict)
            };
            let key = key_of(&frame, 100 + p as u32).context("frame without key")?;
            let mut actions = flow.actions;
            actions.out_ifindex = flow.output.map_or(0, |o| 100 + o as u32);
            table
                .install(backend, key, &actions, &flow, 2)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if b == 0 && (v == 0 || w == 0) {
                watched.push((key, p, frame));
            }
        }
    }
    Ok(watched)
}

fn topology_in_process(
    opts: &Options,
    root: bool,
    rows: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let base = Ports::new(opts.bridges, opts.vms);
    let text = base.yaml();
    let changed = Ports {
        vm0_down: true,
        ..base
    }
    .yaml();
    let topo = vnet_model::load_str(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let snap = Snapshot::compile(&topo, 1);
    let ports = snap.ports.len();
    progress(&format!(
        "topology of {ports} ports: parse + validate + compile, {} runs",
        opts.reps
    ));
    let (mut parse, mut compile) = (Vec::new(), Vec::new());
    for _ in 0..opts.reps {
        let t = Instant::now();
        let topo = vnet_model::load_str(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t1 = Instant::now();
        let s = Snapshot::compile(&topo, 2);
        let t2 = Instant::now();
        std::hint::black_box(s);
        parse.push(ms(t1 - t));
        compile.push(ms(t2 - t1));
    }
    let (p, c) = (median(&mut parse), median(&mut compile));
    rows.push((
        format!("full load of a {ports}-port topology, in process (YAML parse + validate; Snapshot::compile)"),
        format!("{:.0} ms ({p:.0} + {c:.0} ms)", p + c),
        "≤ 1 s".into(),
    ));

    // One change (t0/vm0 down) and the work between it and its effect.
    let mut kernel = if root {
        Some(Kernel::load(1 << 16)?)
    } else {
        None
    };
    let mut memory = MemoryBackend::default();
    let backend_name = if root {
        "kernel table"
    } else {
        "in-memory backend (not root)"
    };
    let mut state = State::default();
    let mut table = FlowTable::default();
    progress(&format!(
        "topology of {ports} ports: installing one flow per VM ({backend_name})"
    ));
    let watched = match kernel.as_mut() {
        Some(k) => install_vm_flows(&snap, &mut state, &mut table, k, opts.bridges, opts.vms)?,
        None => install_vm_flows(
            &snap,
            &mut state,
            &mut table,
            &mut memory,
            opts.bridges,
            opts.vms,
        )?,
    };
    let installed = table.len();
    let (mut parse, mut compile, mut tags_ms, mut inval, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..opts.reps {
        let t0 = Instant::now();
        let new_topo = vnet_model::load_str(&changed).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t1 = Instant::now();
        let new_snap = Snapshot::compile(&new_topo, 2);
        let t2 = Instant::now();
        let tags = changed_tags(&topo, &new_topo);
        let t3 = Instant::now();
        let mut removed = 0;
        for tag in &tags {
            removed += match kernel.as_mut() {
                Some(k) => table.invalidate(k, *tag),
                None => table.invalidate(&mut memory, *tag),
            };
        }
        let t4 = Instant::now();
        // The effect: vm0's flows are gone, and its next packet, simulated
        // on the new snapshot, is dropped.
        for (key, _, _) in &watched {
            let gone = match kernel.as_ref() {
                Some(k) => k.flow(key)?.is_none(),
                None => !memory.flows.contains_key(key),
            };
            if !gone {
                bail!("the change did not invalidate flow {key:?}");
            }
        }
        let (_, p, frame) = &watched[0];
        let d = sim::simulate(&new_snap, &mut state.clone(), *p, frame, 3, false);
        if d.verdict != Verdict::Dropped(vnet_common::Reason::PortDown) {
            bail!(
                "after the change vm0's packet is {:?}, not dropped as port down",
                d.verdict
            );
        }
        if removed < watched.len() {
            bail!(
                "the change invalidated {removed} flows, fewer than vm0's {}",
                watched.len()
            );
        }
        parse.push(ms(t1 - t0));
        compile.push(ms(t2 - t1));
        tags_ms.push(ms(t3 - t2));
        inval.push(ms(t4 - t3));
        total.push(ms(t4 - t0));
        // Put vm0's flows back for the next round (untimed).
        for (key, p, frame) in &watched {
            let d = sim::simulate(&snap, &mut state, *p, frame, 2, false);
            let flow = d.install.context("vm0's flow back")?;
            let mut actions = flow.actions;
            actions.out_ifindex = flow.output.map_or(0, |o| 100 + o as u32);
            match kernel.as_mut() {
                Some(k) => table.install(k, *key, &actions, &flow, 2),
                None => table.install(&mut memory, *key, &actions, &flow, 2),
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    // The embedded store vnetd keeps the topology in: what an API change
    // costs before the dataplane hears of it (history, file, fsync).
    let store_dir = std::env::temp_dir().join(format!("vnet-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let mut store_ms = Vec::new();
    let mut api_path: [Vec<f64>; 5] = Default::default();
    {
        use vnet_store::{EmbeddedStore, Store};
        let store = EmbeddedStore::open(&store_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let down = vnet_model::load_str(&changed).map_err(|e| anyhow::anyhow!("{e}"))?;
        store
            .apply(topo.clone(), None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for _ in 0..opts.reps {
            let t = Instant::now();
            store
                .apply(down.clone(), None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store_ms.push(ms(t.elapsed()));
            store
                .apply(topo.clone(), None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        // vnetd's whole path for an Apply, on one thread: the document as
        // the API receives it (JSON) parsed, stored, then compiled and
        // diffed into tags from the store's shared copy, as the control
        // thread does.
        let document = serde_json::to_string(&down)?;
        for _ in 0..opts.reps {
            let (_, before) = store.current_shared().map_err(|e| anyhow::anyhow!("{e}"))?;
            let t0 = Instant::now();
            let parsed = vnet_model::parse_str(&document).map_err(|e| anyhow::anyhow!("{e}"))?;
            let t1 = Instant::now();
            store
                .apply(parsed, None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let t2 = Instant::now();
            let (revision, after) = store.current_shared().map_err(|e| anyhow::anyhow!("{e}"))?;
            let snap = Snapshot::compile(&after, revision);
            let t3 = Instant::now();
            let tags = changed_tags(&before, &after);
            let t4 = Instant::now();
            std::hint::black_box((snap, tags));
            api_path[0].push(ms(t1 - t0));
            api_path[1].push(ms(t2 - t1));
            api_path[2].push(ms(t3 - t2));
            api_path[3].push(ms(t4 - t3));
            api_path[4].push(ms(t4 - t0));
            store
                .apply(topo.clone(), None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let _ = std::fs::remove_dir_all(&store_dir);
    rows.push((
        format!("the same change stored in the embedded store (what vnetd's API does before the dataplane sees it; {ports} ports)"),
        format!("{:.1} ms", median(&mut store_ms)),
        "—".into(),
    ));
    let [p, st, c, tg, all] = &mut api_path;
    rows.push((
        format!("the same change through vnetd's path for an Apply, in process on one thread: JSON document parse, store (keep tunnel keys, validate, diff, log write + fsync), compile, changed tags ({ports} ports)"),
        format!(
            "{:.1} ms ({:.1} + {:.1} + {:.1} + {:.2} ms)",
            median(all),
            median(p),
            median(st),
            median(c),
            median(tg)
        ),
        "—".into(),
    ));
    rows.push((
        format!(
            "one change (a port down) to its effect, in process: parse + validate, compile, changed tags, invalidation in the {backend_name} ({installed} flows installed)"
        ),
        format!(
            "{:.1} ms ({:.1} + {:.1} + {:.2} + {:.3} ms)",
            median(&mut total),
            median(&mut parse),
            median(&mut compile),
            median(&mut tags_ms),
            median(&mut inval)
        ),
        "≤ 10 ms".into(),
    ));
    Ok(())
}

fn vnetd_path(opts: &Options) -> Result<PathBuf> {
    if let Some(p) = &opts.vnetd {
        return Ok(p.clone());
    }
    let p = std::env::current_exe()?
        .parent()
        .context("no directory for this binary")?
        .join("vnetd");
    if !p.exists() {
        bail!("{} not found: build it (cargo build --release -p vnet-dataplane --bin vnetd) or pass --vnetd", p.display());
    }
    Ok(p)
}

/// The big topology applied to a running vnetd through its API, then one
/// change (t0/vm0 down) and back, `reps` times. With `name_interfaces`, the
/// 9 898 ports not bound to the lane name interfaces that do not exist.
fn topology_through_vnetd(
    opts: &Options,
    name_interfaces: bool,
    rows: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let vnetd = vnetd_path(opts)?;
    let ports = Ports {
        lane: true,
        name_interfaces,
        ..Ports::new(opts.bridges, opts.vms)
    };
    let what = if name_interfaces {
        "other ports name missing interfaces"
    } else {
        "other ports name no interface"
    };
    progress(&format!("vnetd ({what}): a lane on bridge t0 (vm0 on vm1-h, vm1 on vm2-h), then the whole topology through the API"));
    let small = Ports {
        lane: true,
        ..Ports::new(1, 2)
    }
    .yaml();
    let prefix = format!("vs{}x", std::process::id() % 100_000);
    let worker_cpu = if sys::cpus() >= 2 { Some(0) } else { None };
    let o = LaneOptions {
        prefix: &prefix,
        index: usize::from(name_interfaces),
        vnetd: &vnetd,
        worker_cpu,
        vnet_topology: Some(small),
    };
    let mut lane = Lane::new(System::Vnet, PathKind::Bridged, &o)?;
    let socket = lane.socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let parse = |t: &str| vnet_model::load_str(t).map_err(|e| anyhow::anyhow!("{e}"));
    let (big, big_down) = (
        parse(&ports.yaml())?,
        parse(
            &Ports {
                vm0_down: true,
                ..ports
            }
            .yaml(),
        )?,
    );
    let count = Snapshot::compile(&big, 1).ports.len();
    let apply = |topo: &vnet_model::Topology| -> Result<(Duration, bool)> {
        rt.block_on(async {
            let mut c = vnet_api::Client::connect(&vnet_api::Target::Unix(socket.clone())).await?;
            let t = Instant::now();
            let out = c.apply(topo, false, None).await?;
            Ok::<_, anyhow::Error>((t.elapsed(), out.running))
        })
    };
    let (load, running) = apply(&big)?;
    if !running {
        bail!("vnetd did not run the {count}-port topology within the API's wait");
    }
    rows.push((
        format!("full load of the {count}-port topology through vnetd's API, {what} (Apply answered once the worker runs it)"),
        format!("{:.0} ms", ms(load)),
        "≤ 1 s".into(),
    ));
    // The change, two ways: the whole topology applied again with vm0
    // down (what `vnetctl apply` sends), and the one object that changed
    // (bridge t0) updated alone.
    let t0_down = big_down
        .object(vnet_model::objects::ObjectKind::Bridge, "t0")
        .context("no bridge t0 in the big topology")?;
    let ways: [(&str, Change); 2] = [
        ("Apply of the whole topology", Change::Apply(&big_down)),
        ("Update of bridge t0 alone", Change::Update("t0", &t0_down)),
    ];
    for (how, change) in ways {
        let (mut applied, mut effect) = (Vec::new(), Vec::new());
        for rep in 0..opts.reps {
            lane.ensure_flow()?;
            let (d, gone, running) = change_to_effect(&lane, &socket, &change)?;
            if !running {
                bail!("vnetd did not report the change as running");
            }
            if lane.delivers_one()? {
                bail!("a packet from t0/vm0 still arrived after the port went down");
            }
            progress(&format!(
                "  {how}, change {}/{}: Apply answered after {:.1} ms, flow gone after {:.1} ms, next packet dropped",
                rep + 1,
                opts.reps,
                ms(d),
                ms(gone)
            ));
            applied.push(ms(d));
            effect.push(ms(gone));
            apply(&big)?;
        }
        rows.push((
            format!("one change (t0/vm0 down) to its effect through vnetd's API, {how}, {what}: answered / kernel flow gone (then a packet is dropped)"),
            format!("{:.1} ms / {:.1} ms", median(&mut applied), median(&mut effect)),
            "≤ 10 ms".into(),
        ));
    }
    Ok(())
}

/// One change through the API.
enum Change<'a> {
    /// The whole topology, as `vnetctl apply` sends it.
    Apply(&'a vnet_model::Topology),
    /// One object (by name), as an orchestrator changes one thing.
    Update(&'a str, &'a vnet_model::objects::Object),
}

/// Makes `change` through vnetd's API and watches the lane's flows while
/// it is answered: how long the call took, how long until the lane's flow
/// was gone from the kernel table (the change's effect, which may come
/// before the answer), and whether vnetd said it runs the change.
fn change_to_effect(
    lane: &Lane,
    socket: &std::path::Path,
    change: &Change,
) -> Result<(Duration, Duration, bool)> {
    // Opened before the change: polling reads one map, no process spawned.
    let flows = lane.vnetd_flows()?;
    let before = flows.count();
    if !lane.flow_installed()? {
        bail!("the lane's flow is not installed before the change");
    }
    std::thread::scope(|s| {
        let (started_tx, started) = std::sync::mpsc::channel();
        let call = s.spawn(move || -> Result<(Duration, bool)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let target = vnet_api::Target::Unix(socket.to_path_buf());
                let mut c = vnet_api::Client::connect(&target).await?;
                let t = Instant::now();
                let _ = started_tx.send(t);
                let out = match change {
                    Change::Apply(topo) => c.apply(topo, false, None).await?,
                    Change::Update(name, object) => c.update(name, object).await?,
                };
                Ok((t.elapsed(), out.running))
            })
        });
        let t0 = started
            .recv()
            .map_err(|_| anyhow::anyhow!("the API call failed before it started"))?;
        // vm0 down takes the flows through vm0 (the lane's among them):
        // the table shrinks when the worker has invalidated them.
        let gone = loop {
            if flows.count() < before {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(5) {
                bail!("the flow of t0/vm0 was still installed 5 s after the change");
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let (answered, running) = call
            .join()
            .map_err(|_| anyhow::anyhow!("the API call panicked"))??;
        if lane.flow_installed()? {
            bail!("flows went, but not the lane's flow of t0/vm0");
        }
        Ok((answered, gone, running))
    })
}
