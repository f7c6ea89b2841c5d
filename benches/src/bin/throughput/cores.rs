//! More than one core (issue 14): the bridged path with guest a's veth made
//! with two queues at each end, frames pushed from both CPUs at once (each
//! CPU's frames arrive on its own receive queue of vm1-h). Two vnet lanes,
//! alike but for vnetd's `--workers` (1 and 2), measured alternately:
//!
//! - established Mpps from two CPUs against one (the kernel's work spread
//!   over two queues; a flow per CPU, as a NIC's RSS keeps a flow on one
//!   queue);
//! - new flows per second with two workers against one, the generator on
//!   both CPUs, paced ([`PACE`]), vnetd not pinned;
//! - then, on a third lane alike but routed+SNAT (+100 rules) with one
//!   worker, established Mpps from one CPU: the path with native XDP, as
//!   the two-queue lanes run it (the single-queue lanes run vnetd's SKB
//!   default on a veth).
use super::{interrupted, progress, Options};
use anyhow::Result;
use std::path::Path;
use vnet_benches::lane::{Lane, LaneOptions, PathKind, System};
use vnet_benches::median;

/// First packets each of the two generator threads offers per second in
/// the new-flows runs: together more than two workers take, and little
/// enough CPU that the workers have the machine (an unpaced generator
/// spins on its CPU).
const PACE: f64 = 200_000.0;

/// What the rows of the table say, measured.
#[derive(Debug, Default)]
pub struct Cores {
    /// Established Mpps: frames from one CPU, from two.
    pub mpps: Option<(f64, f64)>,
    /// New flows/s and per worker CPU-second: one worker, two workers.
    pub new_flows: Option<((f64, f64), (f64, f64))>,
    /// Two workers: time waiting for the other per time working.
    pub lock_wait: Option<f64>,
    /// Established Mpps, routed+SNAT, native XDP, frames from one CPU.
    pub routed_snat_native: Option<f64>,
}

pub fn measure(opts: &Options, prefix: &str, index: &mut usize, vnetd: &Path) -> Result<Cores> {
    let mut out = Cores::default();
    let mut lanes = Vec::new();
    for workers in [1, 2] {
        interrupted()?;
        progress(&format!(
            "2 queues: setting up a vnet lane with --workers {workers}"
        ));
        lanes.push(two_queue_lane(
            PathKind::Bridged,
            workers,
            prefix,
            index,
            vnetd,
        )?);
    }

    // Established: the lane of one worker (the workers see one first
    // packet per CPU), one flow per CPU as RSS would spread them.
    let lane = &mut lanes[0];
    lane.flow_per_cpu(true)?;
    let lane = &lanes[0];
    let frames = frames_per_run(lane, opts)?;
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for rep in 0..opts.reps {
        interrupted()?;
        let a = lane.measure_from(&[1], frames, opts.batch)?;
        let b = lane.measure_from(&[0, 1], frames, opts.batch)?;
        progress(&format!(
            "2 queues rep {}/{}: established {:.2} Mpps from one CPU, {:.2} from two",
            rep + 1,
            opts.reps,
            a.mpps(),
            b.mpps()
        ));
        one.push(a.mpps());
        two.push(b.mpps());
    }
    out.mpps = Some((median(&mut one), median(&mut two)));
    lanes[0].flow_per_cpu(false)?;

    if opts.new_flow_reps > 0 {
        let mut rates = [Vec::new(), Vec::new()];
        let mut per_cpu = [Vec::new(), Vec::new()];
        let mut waits = Vec::new();
        for rep in 0..opts.new_flow_reps {
            for (k, lane) in lanes.iter_mut().enumerate() {
                interrupted()?;
                let r = lane.new_flows_from(&[0, 1], Some(PACE), opts.seconds, opts.batch)?;
                progress(&format!(
                    "2 queues new flows {}/{}: --workers {}: {:.0} flows/s, {} per worker CPU-second",
                    rep + 1,
                    opts.new_flow_reps,
                    k + 1,
                    r.per_sec,
                    r.per_cpu_sec.map_or("?".into(), |v| format!("{v:.0}")),
                ));
                if let Some(s) = r.stats {
                    progress(&format!(
                        "2 queues new flows {}/{}: --workers {}: the workers worked {} ms and waited {} ms for each other",
                        rep + 1,
                        opts.new_flow_reps,
                        k + 1,
                        s.busy_ms,
                        s.lock_wait_ms,
                    ));
                    if k == 1 && s.busy_ms > 0 {
                        waits.push(s.lock_wait_ms as f64 / s.busy_ms as f64);
                    }
                }
                if let Some(n) = r.refused_by_limits() {
                    progress(&format!(
                        "2 queues new flows {}/{}: --workers {}: vnetd refused {n} first packets at a table limit (the run measured the limit)",
                        rep + 1,
                        opts.new_flow_reps,
                        k + 1,
                    ));
                }
                rates[k].push(r.per_sec);
                per_cpu[k].push(r.per_cpu_sec.unwrap_or(0.0));
            }
        }
        let [r1, r2] = &mut rates;
        let [c1, c2] = &mut per_cpu;
        out.new_flows = Some(((median(r1), median(c1)), (median(r2), median(c2))));
        if !waits.is_empty() {
            out.lock_wait = Some(median(&mut waits));
        }
    }
    progress("2 queues: tearing down");
    drop(lanes);

    interrupted()?;
    progress("2 queues: setting up a routed+SNAT vnet lane (native XDP, --workers 1)");
    let lane = two_queue_lane(PathKind::RoutedSnat, 1, prefix, index, vnetd)?;
    let frames = frames_per_run(&lane, opts)?;
    let mut mpps = Vec::new();
    for rep in 0..opts.reps {
        interrupted()?;
        let m = lane.measure_from(&[1], frames, opts.batch)?.mpps();
        progress(&format!(
            "routed+SNAT native rep {}/{}: established {m:.2} Mpps from one CPU",
            rep + 1,
            opts.reps
        ));
        mpps.push(m);
    }
    out.routed_snat_native = Some(median(&mut mpps));
    progress("routed+SNAT native: tearing down");
    Ok(out)
}

/// A vnet lane whose guests' veths have two queues, its vnetd running
/// `--workers workers` in native XDP mode, not pinned.
fn two_queue_lane(
    path: PathKind,
    workers: usize,
    prefix: &str,
    index: &mut usize,
    vnetd: &Path,
) -> Result<Lane> {
    let o = LaneOptions {
        prefix,
        index: *index,
        vnetd,
        worker_cpu: None,
        vnet_topology: None,
    };
    *index += 1;
    Lane::with_queues(System::Vnet, path, &o, 2, workers)
}

/// Frames for a run of `--seconds` from one CPU, from what a warm-up run
/// of a million offered.
fn frames_per_run(lane: &Lane, opts: &Options) -> Result<u32> {
    let s = lane.measure_from(&[1], 1_000_000, opts.batch)?;
    Ok((s.offered_mpps() * 1e6 * opts.seconds).clamp(100_000.0, 200_000_000.0) as u32)
}

/// The table rows; `routed_snat` is the single-queue lanes' (Linux,
/// ceiling) Mpps of routed+SNAT, when measured, for the native row's ratios.
pub fn print_rows(c: &Cores, routed_snat: (Option<f64>, Option<f64>)) {
    if let Some(native) = c.routed_snat_native {
        let vs = |other: Option<f64>| {
            other
                .filter(|v| *v > 0.0)
                .map_or("—".to_string(), |v| format!("{:.2}×", native / v))
        };
        println!(
            "| established Mpps, routed+SNAT (+100 rules), native XDP (a 2-queue lane's vnetd, frames from one CPU) | {native:.2} Mpps; {} ip_forward + nft masquerade, {} the ceiling (single-queue lanes) | ≥ 5× Linux; ≥ 0.7× ceiling |",
            vs(routed_snat.0),
            vs(routed_snat.1)
        );
    }
    if let Some((one, two)) = c.mpps {
        println!(
            "| established Mpps, bridged, 2 queues: frames from 2 CPUs vs 1 (a flow per CPU) | {two:.2} vs {one:.2} Mpps = {:.2}× | ≥ 1.7× |",
            two / one.max(1e-9)
        );
    }
    if let Some(((r1, c1), (r2, c2))) = c.new_flows {
        println!(
            "| new flows per second, bridged, 2 queues, generator on both CPUs (paced): 2 workers vs 1 | {:.0} k/s vs {:.0} k/s = {:.2}× ({:.0} k vs {:.0} k per worker CPU-second) | ≥ 1.7× |",
            r2 / 1e3,
            r1 / 1e3,
            r2 / r1.max(1e-9),
            c2 / 1e3,
            c1 / 1e3
        );
    }
    if let Some(w) = c.lock_wait {
        println!(
            "| new flows, 2 workers: time a worker waited for the other to let go of the runtime, per time working | {:.0} % | (the cause of a missed 1.7×) |",
            w * 100.0
        );
    }
}
