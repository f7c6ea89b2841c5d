//! Cross-host figures for `benches/hosts.sh` (issue 16): established Mpps
//! from a guest on one host to a guest on another, and the latency a new
//! flow's first packet adds when its egress port is on the other host.
//!
//! hosts.sh owns the setup (two hosts as namespaces on an underlay, guests,
//! vnet or the Linux VXLAN device + bridge between them; see
//! scripts/two-hosts-lib.sh) and calls this once per system, on the same
//! namespaces, so both systems are measured on the same guests in one run.
//! This binary only drives traffic into namespaces it is given and reads
//! counters there; it creates and changes nothing in them (the guests keep
//! every setting they had).
//!
//! - `mpps`: 64-byte UDP frames of one established flow from the
//!   `BPF_PROG_TEST_RUN` live-frames generator of the single-host harness
//!   (`bench_generate`, `BenchPrograms::generate`), redirected into the
//!   sending guest's eth0 so that they enter its host's interface as the
//!   guest's own frames would. Counted in the receiving guest: its eth0's rx
//!   counter and its UDP layer's counters (datagrams whose checksum the
//!   guest verified). An XDP counter on the guest's eth0, as the single-host
//!   lane uses, would see nothing of vnet's traffic: vnet's decapsulator
//!   delivers with `bpf_redirect_peer`, which enters eth0 after its XDP
//!   hook; and it would change the guest (an XDP program on a veth turns
//!   GSO off on its peer).
//! - `latency`: runs of `ping -c 4` from one guest to the other, each a new
//!   process and so a new ICMP id, a new flow in both directions (as the
//!   single-host lane's `first_packet_latency`); the first RTT of a run
//!   against its later RTTs, medians and p99 over the runs.
//!
//! Each prints one JSON object on stdout, progress on stderr. Root only;
//! never part of CI (`sudo benches/hosts.sh` builds and runs it).
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::time::{Duration, Instant};
use vnet_benches::sys::{self, EnteredNetns};
use vnet_dataplane::kernel::bench::{BenchPrograms, MAX_LIVE_BATCH};
use vnet_dataplane::packet::Mac;

#[derive(Debug, Parser)]
#[command(
    name = "crosshost",
    about = "cross-host Mpps and first-packet latency between two guest namespaces (benches/hosts.sh)"
)]
struct Options {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Established Mpps: 64-byte UDP frames of one flow from --src-ns to
    /// --dst-ns, counted in --dst-ns.
    Mpps(MppsOptions),
    /// First-packet latency: ping runs from --ns to --dst, a new ICMP id
    /// (a new flow) per run.
    Latency(LatencyOptions),
}

#[derive(Debug, clap::Args)]
struct MppsOptions {
    /// What the JSON names this system (vnet, linux).
    #[arg(long)]
    label: String,
    /// The sending guest's namespace (the generator sends out of its eth0).
    #[arg(long)]
    src_ns: String,
    /// The receiving guest's namespace (its eth0 and UDP counters count).
    #[arg(long)]
    dst_ns: String,
    /// The sending guest's MAC (the frames' source).
    #[arg(long, value_parser = parse_mac)]
    src_mac: Mac,
    /// The receiving guest's MAC (the frames' destination: bridged across).
    #[arg(long, value_parser = parse_mac)]
    dst_mac: Mac,
    /// The sending guest's IPv4 address.
    #[arg(long, value_parser = parse_ip4)]
    src: [u8; 4],
    /// The receiving guest's IPv4 address.
    #[arg(long, value_parser = parse_ip4)]
    dst: [u8; 4],
    /// Seconds of traffic per repetition.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Frames per kernel batch of the live-frames generator (1..=256).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// The CPU the generator runs on: every hop of every frame runs in
    /// softirq there (hosts as namespaces share the machine).
    #[arg(long, default_value_t = 1)]
    cpu: usize,
}

#[derive(Debug, clap::Args)]
struct LatencyOptions {
    /// What the JSON names this system and placement.
    #[arg(long)]
    label: String,
    /// The pinging guest's namespace.
    #[arg(long)]
    ns: String,
    /// The address pinged (a guest on the other host).
    #[arg(long, value_parser = parse_ip4)]
    dst: [u8; 4],
    /// Ping runs (probes): each one's first echo is a new flow.
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// The CPU ping runs on.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
}

fn parse_mac(s: &str) -> Result<Mac, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?} is not a MAC address: write six hex bytes, 02:00:00:00:01:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

fn parse_ip4(s: &str) -> Result<[u8; 4], String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .map_err(|_| format!("{s:?} is not an IPv4 address: write four numbers, 10.0.0.12"))
}

fn ip4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn progress(msg: &str) {
    eprintln!("[crosshost] {msg}");
}

fn main() {
    let opts = Options::parse();
    // SAFETY: geteuid has no preconditions.
    let r = if unsafe { libc::geteuid() } != 0 {
        Err(anyhow::anyhow!(
            "needs root (BPF_PROG_TEST_RUN, entering network namespaces): run `sudo benches/hosts.sh`"
        ))
    } else {
        match &opts.what {
            What::Mpps(o) => mpps(o),
            What::Latency(o) => latency(o),
        }
    };
    if let Err(e) = r {
        eprintln!("crosshost: error: {e:#}");
        std::process::exit(1);
    }
}

/// What the receiving guest has counted so far.
#[derive(Clone, Copy, Debug, Default)]
struct GuestCounters {
    /// eth0's rx_packets (everything the interface received).
    rx_packets: u64,
    /// UDP datagrams that reached the UDP layer with a good checksum
    /// (InDatagrams + NoPorts: nothing listens, so most are NoPorts).
    udp_ok: u64,
    /// UDP datagrams dropped for a bad checksum.
    udp_csum_errors: u64,
}

impl GuestCounters {
    fn read(ns: &str) -> Result<GuestCounters> {
        let links: serde_json::Value = serde_json::from_str(&sys::run(&[
            "ip", "-n", ns, "-j", "-s", "link", "show", "eth0",
        ])?)
        .with_context(|| format!("parsing `ip -j -s link show eth0` in {ns}"))?;
        let rx_packets = links[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .with_context(|| format!("no rx packet counter for eth0 in {ns}"))?;
        let snmp = sys::run(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"])?;
        let udp = snmp_row(&snmp, "Udp")
            .with_context(|| format!("no Udp counters in /proc/net/snmp of {ns}"))?;
        let get = |name: &str| {
            udp.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| *v)
                .with_context(|| format!("no Udp {name} counter in /proc/net/snmp of {ns}"))
        };
        Ok(GuestCounters {
            rx_packets,
            udp_ok: get("InDatagrams")? + get("NoPorts")?,
            udp_csum_errors: get("InCsumErrors")?,
        })
    }

    fn since(self, before: GuestCounters) -> GuestCounters {
        GuestCounters {
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            udp_ok: self.udp_ok.saturating_sub(before.udp_ok),
            udp_csum_errors: self.udp_csum_errors.saturating_sub(before.udp_csum_errors),
        }
    }
}

/// The named counters of one protocol's two lines in /proc/net/snmp
/// (a header line of names, then a line of values).
fn snmp_row(text: &str, proto: &str) -> Option<Vec<(String, u64)>> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    Some(
        names
            .split_whitespace()
            .skip(1)
            .zip(values.split_whitespace().skip(1))
            .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
            .collect(),
    )
}

/// The generator, aimed at the sending guest's eth0.
struct Generator {
    progs: BenchPrograms,
    frame: Vec<u8>,
    ns: String,
    batch: u32,
}

impl Generator {
    fn new(o: &MppsOptions) -> Result<Generator> {
        // A fixed 5-tuple with a correct UDP checksum: one established
        // flow, which the receiving guest verifies.
        let frame = vnet_benches::udp64(o.src_mac, o.dst_mac, o.src, o.dst, 5000, 6000);
        let mut progs = BenchPrograms::load(1).context("loading the benchmark XDP programs")?;
        let links: serde_json::Value = serde_json::from_str(&sys::run(&[
            "ip", "-n", &o.src_ns, "-j", "link", "show", "eth0",
        ])?)?;
        let eth0 = links[0]["ifindex"]
            .as_u64()
            .with_context(|| format!("no ifindex for eth0 in {}", o.src_ns))?
            as u32;
        progs.set_target(eth0)?;
        progs.set_template(&frame)?;
        progs.set_sequence(false)?;
        Ok(Generator {
            progs,
            frame,
            ns: o.src_ns.clone(),
            batch: o.batch,
        })
    }

    /// Sends `frames` frames out of the sending guest's eth0.
    fn send(&self, frames: u32) -> Result<()> {
        // The redirect target is looked up in the calling thread's
        // namespace: the guest's.
        let _in = EnteredNetns::enter(&self.ns)?;
        self.progs
            .generate(&self.frame, frames, self.batch)
            .context("running the live-frames generator")?;
        Ok(())
    }
}

/// CPU time (s) this thread has used: the generator's test runs, and with
/// them every hop of every frame, which the kernel runs in softirq in this
/// thread's context (charged to it: this kernel accounts softirq time to
/// the task it interrupted).
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU time (s) of `ksoftirqd/CPU` so far: the softirq work the kernel
/// deferred to it rather than running it at the end of a test run.
fn ksoftirqd_secs(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The pid of `ksoftirqd/CPU`.
fn ksoftirqd_pid(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// Waits until the receiving guest's counters stop moving (frames still in
/// a softirq or NAPI queue land within milliseconds), at most one second.
fn settled(ns: &str) -> Result<GuestCounters> {
    let mut last = GuestCounters::read(ns)?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = GuestCounters::read(ns)?;
        if now.rx_packets == last.rx_packets || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

fn mpps(o: &MppsOptions) -> Result<()> {
    if !(1..=MAX_LIVE_BATCH).contains(&o.batch) {
        bail!(
            "--batch {} is out of range: use 1..={MAX_LIVE_BATCH}",
            o.batch
        );
    }
    if !(o.seconds > 0.0 && o.seconds <= 600.0) || o.reps == 0 {
        bail!("--seconds must be in (0, 600] and --reps at least 1");
    }
    sys::pin_current_thread(o.cpu)?;
    let gen = Generator::new(o)?;
    let (src, dst) = (ip4(o.src), ip4(o.dst));

    // The first frames: the path must deliver (vnet: the first is
    // simulated on the sending host and installs the flow). 10 s at most.
    progress(&format!(
        "{}: first frames {src} ({}) -> {dst} ({})",
        o.label, o.src_ns, o.dst_ns
    ));
    let start = GuestCounters::read(&o.dst_ns)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        gen.send(1)?;
        std::thread::sleep(Duration::from_millis(50));
        if GuestCounters::read(&o.dst_ns)?.since(start).udp_ok > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{}: no frame from {src} reached {dst}'s UDP layer in {} within 10 s: the path does not deliver",
                o.label,
                o.dst_ns
            );
        }
    }
    // Every frame of a short burst must now arrive, or the figure would
    // measure a path that drops (or a flow not installed yet).
    let before = settled(&o.dst_ns)?;
    let t = Instant::now();
    gen.send(10_000)?;
    let burst_secs = t.elapsed().as_secs_f64();
    let got = settled(&o.dst_ns)?.since(before);
    if got.udp_ok < 9_000 {
        bail!(
            "{}: only {} of 10000 frames of a test burst reached {dst} (eth0 received {}, {} checksum errors)",
            o.label,
            got.udp_ok,
            got.rx_packets,
            got.udp_csum_errors
        );
    }

    // Chunks of about 0.1 s of traffic at the burst's rate (the generator
    // returns once the path has taken a chunk's frames): the granularity
    // of a run's length.
    let chunk = (10_000.0 / burst_secs.max(1e-6) * 0.1).clamp(1_000.0, 2_000_000.0) as u32;
    progress(&format!(
        "{}: test burst delivered {} of 10000 at {:.3} Mpps offered; {chunk} frames per chunk",
        o.label,
        got.udp_ok,
        10_000.0 / burst_secs.max(1e-6) / 1e6
    ));
    let softirqd = ksoftirqd_pid(o.cpu);
    let mut runs = Vec::new();
    for rep in 0..o.reps {
        let before = settled(&o.dst_ns)?;
        let cpu0 = thread_cpu_secs() + ksoftirqd_secs(softirqd);
        let t0 = Instant::now();
        let mut sent = 0u64;
        while t0.elapsed().as_secs_f64() < o.seconds {
            gen.send(chunk)?;
            sent += u64::from(chunk);
        }
        let secs = t0.elapsed().as_secs_f64();
        let got = settled(&o.dst_ns)?.since(before);
        // After the settle: what was still queued ran meanwhile.
        let cpu_secs = thread_cpu_secs() + ksoftirqd_secs(softirqd) - cpu0;
        let r = json!({
            "sent": sent,
            "secs": secs,
            "rx_packets": got.rx_packets,
            "udp_ok": got.udp_ok,
            "udp_csum_errors": got.udp_csum_errors,
            "mpps": got.udp_ok as f64 / secs / 1e6,
            "offered_mpps": sent as f64 / secs / 1e6,
            "cpu_secs": cpu_secs,
            // Frames per CPU-second of the path: what another process on
            // the generator's CPU takes from the run does not count.
            "mpps_per_cpu_sec": if cpu_secs > 0.0 { got.udp_ok as f64 / cpu_secs / 1e6 } else { 0.0 },
        });
        progress(&format!(
            "{} rep {}/{}: {:.3} Mpps received by {dst}'s UDP layer ({:.3} offered; {:.3} per CPU-second of the path, {:.2} s of CPU in {:.2} s; eth0 received {}, {} checksum errors)",
            o.label,
            rep + 1,
            o.reps,
            r["mpps"].as_f64().unwrap_or(0.0),
            r["offered_mpps"].as_f64().unwrap_or(0.0),
            r["mpps_per_cpu_sec"].as_f64().unwrap_or(0.0),
            cpu_secs,
            secs,
            got.rx_packets,
            got.udp_csum_errors
        ));
        runs.push(r);
    }
    let mut mpps: Vec<f64> = runs.iter().filter_map(|r| r["mpps"].as_f64()).collect();
    let mut offered: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["offered_mpps"].as_f64())
        .collect();
    let csum: u64 = runs
        .iter()
        .filter_map(|r| r["udp_csum_errors"].as_u64())
        .sum();
    println!(
        "{}",
        json!({
            "label": o.label,
            "median_mpps": vnet_benches::median(&mut mpps),
            "min_mpps": mpps.first(),
            "max_mpps": mpps.last(),
            "median_offered_mpps": vnet_benches::median(&mut offered),
            "udp_csum_errors": csum,
            "runs": runs,
        })
    );
    Ok(())
}

/// RTTs (µs) by icmp_seq of one ping run's output.
fn ping_rtts(out: &str) -> Vec<(u32, f64)> {
    let field = |l: &str, name: &str| -> Option<String> {
        Some(l.split(name).nth(1)?.split_whitespace().next()?.to_string())
    };
    let mut rtts: Vec<(u32, f64)> = out
        .lines()
        .filter_map(|l| {
            let seq = field(l, "icmp_seq=")?.parse().ok()?;
            let ms: f64 = field(l, "time=")?.parse().ok()?;
            Some((seq, ms * 1000.0))
        })
        .collect();
    rtts.sort_by_key(|r| r.0);
    rtts
}

/// The p-th percentile (nearest rank) of `v`, sorted in place.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn latency(o: &LatencyOptions) -> Result<()> {
    if o.probes == 0 {
        bail!("--probes must be at least 1");
    }
    sys::pin_current_thread(o.cpu)?;
    let dst = ip4(o.dst);
    // One warm-up run: the guest's ARP entry for the far guest is fresh,
    // so no probe pays for neighbour resolution.
    let _ = sys::run(&[
        "ip", "netns", "exec", &o.ns, "ping", "-n", "-c", "2", "-i", "0.05", "-W", "1", &dst,
    ]);
    let (mut firsts, mut laters, mut added) = (Vec::new(), Vec::new(), Vec::new());
    let t0 = Instant::now();
    for i in 0..o.probes {
        // `ping` as root uses a raw socket and its pid as the ICMP id: a new
        // process, a new id, a new flow in both directions.
        let out = sys::run(&[
            "ip", "netns", "exec", &o.ns, "ping", "-n", "-c", "4", "-i", "0.05", "-W", "1", &dst,
        ])
        .with_context(|| format!("{}: probe {} of {}", o.label, i + 1, o.probes))?;
        let rtts = ping_rtts(&out);
        if rtts.len() < 4 || rtts[0].0 != 1 {
            bail!(
                "{}: ping from {} to {dst} lost replies:\n{out}",
                o.label,
                o.ns
            );
        }
        let mut later: Vec<f64> = rtts[1..].iter().map(|r| r.1).collect();
        let later = vnet_benches::median(&mut later);
        firsts.push(rtts[0].1);
        laters.push(later);
        added.push(rtts[0].1 - later);
        if (i + 1) % 25 == 0 || i + 1 == o.probes {
            progress(&format!(
                "{}: {}/{} probes ({:.0} s)",
                o.label,
                i + 1,
                o.probes,
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    let stats = |v: &Vec<f64>| {
        let (mut a, mut b) = (v.clone(), v.clone());
        json!({"median_us": vnet_benches::median(&mut a), "p99_us": percentile(&mut b, 99.0)})
    };
    let r = json!({
        "label": o.label,
        "probes": o.probes,
        "first": stats(&firsts),
        "later": stats(&laters),
        "added": stats(&added),
        // Per probe, so that hosts.sh can pool the probes of several
        // alternating rounds before taking medians and p99.
        "samples": {"first_us": firsts, "later_us": laters, "added_us": added},
    });
    progress(&format!(
        "{}: first RTT median {:.0} µs (p99 {:.0}), later {:.0} µs (p99 {:.0}), added {:.0} µs (p99 {:.0})",
        o.label,
        r["first"]["median_us"].as_f64().unwrap_or(0.0),
        r["first"]["p99_us"].as_f64().unwrap_or(0.0),
        r["later"]["median_us"].as_f64().unwrap_or(0.0),
        r["later"]["p99_us"].as_f64().unwrap_or(0.0),
        r["added"]["median_us"].as_f64().unwrap_or(0.0),
        r["added"]["p99_us"].as_f64().unwrap_or(0.0),
    ));
    println!("{r}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ping_output_by_sequence() {
        let out = "PING 10.0.0.12 (10.0.0.12) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.12: icmp_seq=2 ttl=64 time=0.070 ms\n\
                   64 bytes from 10.0.0.12: icmp_seq=1 ttl=64 time=0.412 ms\n\
                   64 bytes from 10.0.0.12: icmp_seq=3 ttl=64 time=0.068 ms\n";
        let r = ping_rtts(out);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].0, 1);
        assert!((r[0].1 - 412.0).abs() < 1e-6);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut [7.0], 99.0), 7.0);
        assert_eq!(percentile(&mut [], 99.0), 0.0);
    }

    #[test]
    fn reads_udp_counters_from_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
                    Udp: 5 10 0 3 0 0 2\n";
        let r = snmp_row(text, "Udp").unwrap();
        assert_eq!(r.iter().find(|(k, _)| k == "NoPorts").unwrap().1, 10);
        assert_eq!(r.iter().find(|(k, _)| k == "InCsumErrors").unwrap().1, 2);
        assert!(snmp_row(text, "Tcp").is_none());
    }

    #[test]
    fn refuses_bad_addresses_by_name() {
        assert_eq!(parse_mac("02:00:00:00:01:0a").unwrap()[5], 10);
        assert!(parse_mac("02:00:00").unwrap_err().contains("six hex bytes"));
        assert!(parse_ip4("10.0.0.300").unwrap_err().contains("IPv4"));
    }
}
