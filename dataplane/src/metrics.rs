//! `vnetd --metrics ADDR`: the worker's counters in the Prometheus text
//! format (0.0.4) on `GET /metrics`.
//!
//! A scrape asks the worker for the same [`CounterReport`] `vnetctl stats`
//! shows (a command on its channel, answered between two polls), so the
//! worker stays the only owner of its tables and no counter is kept twice.
//! Each scrape renders a fresh registry from that report: ports and devices
//! that went away disappear from the output instead of lingering.
//!
//! The HTTP side is a small HTTP/1.1 responder on one thread: one request
//! per connection, answered in turn, with read and write timeouts and a cap
//! on the request size, so a slow or hostile client costs at most a few
//! seconds of the endpoint and no memory. It serves read-only counters
//! without authentication; vnetd binds it to loopback unless told otherwise.
use crate::runtime::{Command, Commands, Limits};
use crate::sim::{conntrack, mac_table, nat};
use anyhow::Context;
use prometheus::core::{AtomicU64, GenericCounterVec, GenericGaugeVec};
use prometheus::{Encoder, Opts, Registry, TextEncoder};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vnet_model::reports::{CounterReport, StoreHealth, TrafficCounters};

/// Prefix of every metric name.
const NAMESPACE: &str = "vnet";
/// The largest request head read; metrics requests are a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request, and to read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the worker (it answers after the packets it
/// is handling; the API waits as long).
const WORKER_WAIT: Duration = Duration::from_secs(3);
/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// The crate version and the git revision it was built from (build.rs).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_REVISION: &str = env!("VNET_GIT_REVISION");
/// What `vnetd --version` prints.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("VNET_GIT_REVISION"),
    ")"
);

/// What a scrape shows besides the worker's report: configuration, and the
/// store's revision (which may be ahead of the one the worker runs).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub max_flows: u32,
    pub limits: Limits,
}

/// Renders `report` (and `config`, `stored_revision`) in the Prometheus
/// text format.
pub fn render(report: &CounterReport, config: &Config, stored_revision: u64) -> String {
    render_with(report, config, stored_revision, None, None)
}

/// [`render`], with the API's request latency histogram (which the API
/// observes and vnetd hands to both).
pub fn render_with(
    report: &CounterReport,
    config: &Config,
    stored_revision: u64,
    api_latency: Option<&prometheus::HistogramVec>,
    store: Option<&StoreHealth>,
) -> String {
    let families = Families::new().and_then(|f| {
        if let Some(h) = api_latency {
            f.registry.register(Box::new(h.clone()))?;
        }
        Ok(f)
    });
    let filled = families.and_then(|f| {
        if let Some(s) = store {
            f.store(s)?;
        }
        f.fill(report, config, stored_revision)
    });
    match filled {
        Ok(text) => text,
        // Only a programming error (a bad name, a duplicate family) gets
        // here; say so in the output rather than panic in the daemon.
        Err(e) => format!("# vnetd could not render its metrics: {e}\n"),
    }
}

type Counters = GenericCounterVec<AtomicU64>;
type Gauges = GenericGaugeVec<AtomicU64>;

/// The metric families of one scrape, registered in one registry.
struct Families {
    registry: Registry,
}

impl Families {
    fn new() -> prometheus::Result<Families> {
        Ok(Families {
            registry: Registry::new_custom(Some(NAMESPACE.into()), None)?,
        })
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Counters> {
        let c = Counters::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Gauges> {
        let g = Gauges::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    /// Whether the topology store answers: `store_up` 1 or 0, the
    /// outages since start and how long the current one has lasted.
    fn store(&self, s: &StoreHealth) -> prometheus::Result<()> {
        let up = self.gauges(
            "store_up",
            "1 while the topology store answers, 0 during an outage (forwarding goes on).",
            &["store"],
        )?;
        up.with_label_values(&[s.store.as_str()])
            .set(u64::from(s.reachable));
        let outages = self.counters(
            "store_outages_total",
            "Times the topology store stopped answering since vnetd started.",
            &["store"],
        )?;
        outages
            .with_label_values(&[s.store.as_str()])
            .inc_by(s.outages);
        let down = self.gauges(
            "store_down_seconds",
            "How long the topology store has not answered (0 while it does).",
            &["store"],
        )?;
        down.with_label_values(&[s.store.as_str()])
            .set(s.down_for_secs);
        Ok(())
    }

    fn fill(
        self,
        report: &CounterReport,
        config: &Config,
        stored_revision: u64,
    ) -> prometheus::Result<String> {
        let build = self.gauges(
            "build_info",
            "Always 1: the version and git revision of this vnetd.",
            &["version", "revision"],
        )?;
        build.with_label_values(&[VERSION, GIT_REVISION]).set(1);

        let revision = self.gauges(
            "topology_revision",
            "Topology revisions: the one the worker runs, and the newest one stored.",
            &["state"],
        )?;
        revision
            .with_label_values(&["running"])
            .set(report.revision);
        revision.with_label_values(&["stored"]).set(stored_revision);

        let reasons = self.counters(
            "packets_by_reason_total",
            "Packets by the reason the XDP program (hits, misses, drops) or the worker \
             (drops, limits) counted them under; names as in vnetctl stats.",
            &["reason"],
        )?;
        for (reason, n) in &report.reasons {
            reasons.with_label_values(&[reason.as_str()]).inc_by(*n);
        }

        let totals = Totals::new(&self)?;
        for (name, n) in &report.totals {
            totals.set(name, *n);
        }

        let ports = Traffic::new(&self, "port", &["port", "interface"])?;
        for (port, interface, t) in &report.ports {
            ports.set(&[port, interface], t);
        }
        let devices = Traffic::new(&self, "device", &["device"])?;
        for (device, t) in &report.devices {
            devices.set(&[device], t);
        }

        let limits = self.gauges(
            "limit",
            "Configured table sizes and shares (vnetd's flags and built-in capacities).",
            &["limit"],
        )?;
        let l = &config.limits;
        for (name, value) in [
            ("max_flows", u64::from(config.max_flows)),
            ("flows_per_device", l.flows_per_device as u64),
            ("macs", mac_table::DEFAULT_CAPACITY as u64),
            ("macs_per_bridge", l.macs_per_bridge as u64),
            ("conntrack", conntrack::DEFAULT_CAPACITY as u64),
            ("conntrack_per_zone", l.conntrack_per_zone as u64),
            ("nat", nat::DEFAULT_CAPACITY as u64),
            ("nat_per_zone", l.nat_per_zone as u64),
            ("dhcp_leases_per_port", l.dhcp_leases_per_port as u64),
            ("upcall_rate_per_port", u64::from(l.upcalls.per_sec)),
            ("upcall_burst_per_port", u64::from(l.upcalls.burst)),
        ] {
            limits.with_label_values(&[name]).set(value);
        }

        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The report's totals: the ones vnetd knows get their own family (a
/// counter or a gauge, as they behave); any other is kept as a gauge in
/// `vnet_stat{name}`, so a total added to `vnetctl stats` later is never
/// lost from the metrics.
struct Totals {
    known: Vec<(&'static str, Gauges)>,
    counted: Vec<(&'static str, Counters)>,
    seconds: Vec<(&'static str, prometheus::CounterVec)>,
    other: Gauges,
}

/// (total's name in the report, in ns; metric name, help): counters of
/// seconds.
const SECONDS: &[(&str, &str, &str)] = &[(
    "worker_busy_ns",
    "worker_busy_seconds_total",
    "Time the worker spent handling frames, commands and timers rather than waiting \
     in poll: its rate is the worker's load (1 = one core saturated).",
)];

/// (total's name in the report, metric name, help): counters.
const COUNTED: &[(&str, &str, &str)] = &[
    (
        "userspace_rx",
        "userspace_received_total",
        "Frames the worker read from the AF_XDP sockets (first packets, floods, ARP, DHCP).",
    ),
    (
        "forwarded",
        "userspace_forwarded_total",
        "Frames the worker simulated and sent on to one port.",
    ),
    (
        "flooded",
        "userspace_flooded_total",
        "Frames the worker flooded to the ports of a bridge.",
    ),
    (
        "answered",
        "userspace_answered_total",
        "Frames the worker answered itself (ARP, ICMP, DHCP replies).",
    ),
    (
        "flows_installed",
        "flows_installed_total",
        "Flows installed in the kernel flow table.",
    ),
    (
        "flows_invalidated",
        "flows_invalidated_total",
        "Flows removed because something they depended on changed.",
    ),
    (
        "flows_expired",
        "flows_expired_total",
        "Flows removed after being idle.",
    ),
    (
        "flow_table_full",
        "flow_table_full_total",
        "Decisions not installed because the kernel flow table was full.",
    ),
];

/// (total's name in the report, metric name, help): gauges (table sizes).
const SIZES: &[(&str, &str, &str)] = &[
    ("flows", "flows", "Flows installed in the kernel now."),
    ("macs", "macs", "Learned MAC entries, all bridges."),
    (
        "arp_entries",
        "arp_entries",
        "Router ARP cache entries, all routers.",
    ),
    (
        "conntrack",
        "conntrack_entries",
        "Tracked connections, all zones.",
    ),
    (
        "nat_bindings",
        "nat_bindings",
        "Dynamic NAT bindings, all zones.",
    ),
    (
        "fragments",
        "fragment_entries",
        "First fragments remembered for their later fragments.",
    ),
];

impl Totals {
    fn new(f: &Families) -> prometheus::Result<Totals> {
        let mut counted = Vec::new();
        for (total, name, help) in COUNTED {
            counted.push((*total, f.counters(name, help, &[])?));
        }
        let mut known = Vec::new();
        for (total, name, help) in SIZES {
            known.push((*total, f.gauges(name, help, &[])?));
        }
        let mut seconds = Vec::new();
        for (total, name, help) in SECONDS {
            let c = prometheus::CounterVec::new(Opts::new(*name, *help), &[])?;
            f.registry.register(Box::new(c.clone()))?;
            seconds.push((*total, c));
        }
        let other = f.gauges("stat", "Other totals of vnetctl stats, by name.", &["name"])?;
        Ok(Totals {
            known,
            counted,
            seconds,
            other,
        })
    }

    fn set(&self, total: &str, n: u64) {
        if let Some((_, c)) = self.counted.iter().find(|(t, _)| *t == total) {
            c.with_label_values::<&str>(&[]).inc_by(n);
        } else if let Some((_, g)) = self.known.iter().find(|(t, _)| *t == total) {
            g.with_label_values::<&str>(&[]).set(n);
        } else if let Some((_, c)) = self.seconds.iter().find(|(t, _)| *t == total) {
            c.with_label_values::<&str>(&[]).inc_by(n as f64 / 1e9);
        } else {
            self.other.with_label_values(&[total]).set(n);
        }
    }
}

/// Traffic of ports or devices: kernel flow counters, userspace frames,
/// upcall drops, installed flows.
struct Traffic {
    kernel_packets: Gauges,
    kernel_bytes: Gauges,
    userspace: Counters,
    userspace_bytes: Counters,
    upcall_budget: Counters,
    flows: Gauges,
}

impl Traffic {
    fn new(f: &Families, what: &str, labels: &[&str]) -> prometheus::Result<Traffic> {
        // The kernel figures are the sums of the counters of the flows
        // installed now: a flow that expires takes its packets with it, so
        // they can fall, and are gauges, not counters.
        Ok(Traffic {
            kernel_packets: f.gauges(
                &format!("{what}_kernel_packets"),
                &format!(
                    "Packets the installed kernel flows entering by this {what} forwarded \
                     or dropped without userspace (falls when flows expire)."
                ),
                labels,
            )?,
            kernel_bytes: f.gauges(
                &format!("{what}_kernel_bytes"),
                &format!("Bytes of the packets counted by {NAMESPACE}_{what}_kernel_packets."),
                labels,
            )?,
            userspace: f.counters(
                &format!("{what}_userspace_packets_total"),
                &format!("Frames of this {what} the worker received (flow misses)."),
                labels,
            )?,
            userspace_bytes: f.counters(
                &format!("{what}_userspace_bytes_total"),
                &format!(
                    "Bytes of the frames counted by {NAMESPACE}_{what}_userspace_packets_total."
                ),
                labels,
            )?,
            upcall_budget: f.counters(
                &format!("{what}_upcall_budget_drops_total"),
                &format!(
                    "Frames of this {what} over its upcall budget, dropped before the worker."
                ),
                labels,
            )?,
            flows: f.gauges(
                &format!("{what}_flows"),
                &format!("Kernel flows installed for packets entering by this {what}."),
                labels,
            )?,
        })
    }

    fn set(&self, labels: &[&str], t: &TrafficCounters) {
        self.kernel_packets
            .with_label_values(labels)
            .set(t.kernel_packets);
        self.kernel_bytes
            .with_label_values(labels)
            .set(t.kernel_bytes);
        self.userspace
            .with_label_values(labels)
            .inc_by(t.userspace_rx);
        self.userspace_bytes
            .with_label_values(labels)
            .inc_by(t.userspace_bytes);
        self.upcall_budget
            .with_label_values(labels)
            .inc_by(t.upcall_budget);
        self.flows.with_label_values(labels).set(u64::from(t.flows));
    }
}

/// Where a scrape gets its figures: the worker (over its command channel)
/// and the store's current revision.
pub struct WorkerSource {
    pub commands: Commands,
    pub stored_revision: tokio::sync::watch::Receiver<u64>,
    pub config: Config,
    /// The API's request latency (`vnet_api::request_latency`).
    pub api_latency: Option<prometheus::HistogramVec>,
    /// Whether the store answers (`Store::health`, cached there).
    pub store_health: Option<Box<dyn Fn() -> StoreHealth + Send + Sync>>,
}

impl WorkerSource {
    /// The text of one scrape, or why there is none.
    pub fn scrape(&self) -> Result<String, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Counters(tx))
            .map_err(|_| "the worker has stopped".to_string())?;
        let report = rx.recv_timeout(WORKER_WAIT).map_err(|_| {
            format!(
                "the worker did not answer within {} s",
                WORKER_WAIT.as_secs()
            )
        })?;
        let stored = *self.stored_revision.borrow();
        let store = self.store_health.as_ref().map(|f| f());
        Ok(render_with(
            &report,
            &self.config,
            stored,
            self.api_latency.as_ref(),
            store.as_ref(),
        ))
    }
}

/// Whether `addr` may serve metrics: loopback always, anything else only
/// when the operator asked for it explicitly.
pub fn check_address(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || allow_remote {
        return Ok(());
    }
    anyhow::bail!(
        "--metrics {addr} is not a loopback address: the metrics endpoint has no \
         authentication; add --metrics-allow-remote to serve it there anyway"
    )
}

/// Binds the metrics endpoint's address, refusing one beyond loopback
/// unless `allow_remote`. vnetd binds it before it attaches anything, so a
/// taken port or a refused address stops it cleanly.
pub fn bind(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<TcpListener> {
    check_address(addr, allow_remote)?;
    TcpListener::bind(addr).with_context(|| format!("binding the metrics endpoint to {addr}"))
}

/// The metrics endpoint's thread; [`Server::stop`] ends it.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl Server {
    /// Serves `scrape` on `listener` (from [`bind`]) on a thread of its own.
    pub fn start(
        listener: TcpListener,
        scrape: impl Fn() -> Result<String, String> + Send + 'static,
    ) -> anyhow::Result<Server> {
        let addr = listener.local_addr()?;
        // Non-blocking, so the loop can look at the stop flag between polls.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vnetd-metrics".into())
            .spawn(move || serve(&listener, &flag, &scrape))?;
        Ok(Server {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// The address it listens on (the port chosen when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool, scrape: &dyn Fn() -> Result<String, String>) {
    use std::os::fd::AsFd;
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout =
            nix::poll::PollTimeout::try_from(STOP_POLL).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("metrics endpoint: poll failed, stopping it: {e}");
                return;
            }
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = answer(stream, scrape) {
                    tracing::debug!(%peer, "metrics request: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Out of descriptors and the like: try again at the next poll
            // rather than spin.
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                std::thread::sleep(STOP_POLL);
            }
        }
    }
}

/// The answer to one request head.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Reads one request (its head only: GET has no body) and answers it.
fn answer(
    mut stream: TcpStream,
    scrape: &dyn Fn() -> Result<String, String>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let response = match head {
        Some(head) => respond(&head, scrape),
        None => Response::text("431 Request Header Fields Too Large", "request too large\n"),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    out.extend_from_slice(response.body.as_bytes());
    stream.write_all(&out)?;
    stream.flush()
}

/// The request head up to its blank line; `None` when it is larger than
/// [`MAX_REQUEST`].
fn read_head(stream: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            // The client closed early: answer what it sent (a bad request).
            return Ok(Some(head));
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

fn respond(head: &[u8], scrape: &dyn Fn() -> Result<String, String>) -> Response {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::text("400 Bad Request", "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text("505 HTTP Version Not Supported", "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => match scrape() {
            Ok(body) => Response {
                status: "200 OK",
                content_type: prometheus::TEXT_FORMAT,
                body,
            },
            Err(e) => Response::text("503 Service Unavailable", format!("{e}\n")),
        },
        ("GET", "/") => Response::text("200 OK", "vnetd: metrics are at /metrics\n"),
        ("GET", _) => Response::text("404 Not Found", "not found: try /metrics\n"),
        _ => Response::text("405 Method Not Allowed", "GET only\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> CounterReport {
        CounterReport {
            revision: 3,
            reasons: vec![("port_down".into(), 7), ("xdp_hit_redirect".into(), 40)],
            totals: vec![
                ("userspace_rx".into(), 12),
                ("worker_busy_ns".into(), 1_500_000_000),
                ("flows".into(), 4),
                ("flows_installed".into(), 9),
                ("macs".into(), 2),
                ("something_new".into(), 5),
            ],
            ports: vec![(
                "tenant/vm1".into(),
                "vm1-h".into(),
                TrafficCounters {
                    userspace_rx: 6,
                    userspace_bytes: 600,
                    kernel_packets: 20,
                    kernel_bytes: 1960,
                    flows: 2,
                    upcall_budget: 1,
                },
            )],
            devices: vec![(
                "tenant".into(),
                TrafficCounters {
                    userspace_rx: 12,
                    userspace_bytes: 1200,
                    kernel_packets: 40,
                    kernel_bytes: 3920,
                    flows: 4,
                    upcall_budget: 1,
                },
            )],
        }
    }

    fn config() -> Config {
        Config {
            max_flows: 1000,
            limits: Limits {
                flows_per_device: 250,
                ..Limits::for_max_flows(1000)
            },
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn renders_every_part_of_the_report() {
        let text = render(&report(), &config(), 5);
        let samples = lines(&text);
        for want in [
            r#"vnet_packets_by_reason_total{reason="port_down"} 7"#,
            r#"vnet_packets_by_reason_total{reason="xdp_hit_redirect"} 40"#,
            "vnet_userspace_received_total 12",
            "vnet_flows 4",
            "vnet_flows_installed_total 9",
            "vnet_macs 2",
            r#"vnet_stat{name="something_new"} 5"#,
            r#"vnet_port_kernel_packets{interface="vm1-h",port="tenant/vm1"} 20"#,
            r#"vnet_port_kernel_bytes{interface="vm1-h",port="tenant/vm1"} 1960"#,
            r#"vnet_port_userspace_packets_total{interface="vm1-h",port="tenant/vm1"} 6"#,
            r#"vnet_port_userspace_bytes_total{interface="vm1-h",port="tenant/vm1"} 600"#,
            r#"vnet_device_userspace_bytes_total{device="tenant"} 1200"#,
            "vnet_worker_busy_seconds_total 1.5",
            r#"vnet_port_upcall_budget_drops_total{interface="vm1-h",port="tenant/vm1"} 1"#,
            r#"vnet_port_flows{interface="vm1-h",port="tenant/vm1"} 2"#,
            r#"vnet_device_kernel_packets{device="tenant"} 40"#,
            r#"vnet_device_userspace_packets_total{device="tenant"} 12"#,
            r#"vnet_topology_revision{state="running"} 3"#,
            r#"vnet_topology_revision{state="stored"} 5"#,
            r#"vnet_limit{limit="max_flows"} 1000"#,
            r#"vnet_limit{limit="flows_per_device"} 250"#,
        ] {
            assert!(samples.contains(&want), "missing {want:?} in:\n{text}");
        }
        assert!(text.contains("# TYPE vnet_packets_by_reason_total counter"));
        assert!(text.contains("# TYPE vnet_port_kernel_packets gauge"));
        assert!(
            text.contains(&format!(
                r#"vnet_build_info{{revision="{GIT_REVISION}",version="{VERSION}"}} 1"#
            )),
            "{text}"
        );
    }

    #[test]
    fn a_store_outage_is_shown() {
        let down = StoreHealth {
            store: "etcd://192.0.2.254:2379".into(),
            reachable: false,
            down_for_secs: 12,
            outages: 2,
            error: Some("connection refused".into()),
        };
        let text = render_with(&report(), &config(), 5, None, Some(&down));
        let samples = lines(&text);
        for want in [
            r#"vnet_store_up{store="etcd://192.0.2.254:2379"} 0"#,
            r#"vnet_store_outages_total{store="etcd://192.0.2.254:2379"} 2"#,
            r#"vnet_store_down_seconds{store="etcd://192.0.2.254:2379"} 12"#,
        ] {
            assert!(samples.contains(&want), "{want} not in:\n{text}");
        }
        let up = StoreHealth {
            reachable: true,
            down_for_secs: 0,
            error: None,
            ..down
        };
        let text = render_with(&report(), &config(), 5, None, Some(&up));
        assert!(lines(&text).contains(&r#"vnet_store_up{store="etcd://192.0.2.254:2379"} 1"#));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = report();
        r.ports[0].0 = "b/\"q\"\nx\\".into();
        let text = render(&r, &config(), 0);
        assert!(
            text.contains(r#"port="b/\"q\"\nx\\""#),
            "quotes, newlines and backslashes escaped:\n{text}"
        );
        // Every sample stays on one line.
        for l in lines(&text) {
            assert!(l.starts_with("vnet_"), "{l:?}");
        }
    }

    #[test]
    fn a_port_that_is_gone_is_not_shown() {
        let mut r = report();
        let before = render(&r, &config(), 0);
        assert!(before.contains("vm1-h"));
        r.ports.clear();
        assert!(!render(&r, &config(), 0).contains("vm1-h"));
    }

    #[test]
    fn only_loopback_without_the_explicit_flag() {
        assert!(check_address("127.0.0.1:9469".parse().unwrap(), false).is_ok());
        assert!(check_address("[::1]:9469".parse().unwrap(), false).is_ok());
        let err = check_address("0.0.0.0:9469".parse().unwrap(), false).unwrap_err();
        assert!(err.to_string().contains("--metrics-allow-remote"), "{err}");
        assert!(check_address("0.0.0.0:9469".parse().unwrap(), true).is_ok());
    }

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_over_http_and_refuses_the_rest() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let server = Server::start(listener, || Ok(render(&report(), &config(), 3))).unwrap();
        let addr = server.addr();
        let ok = get(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains(r#"vnet_packets_by_reason_total{reason="port_down"} 7"#));

        let with_query = get(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(with_query.starts_with("HTTP/1.1 200 OK"), "{with_query}");
        assert!(get(addr, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, b"garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        // Just over the limit, so the server has read all of it when it
        // answers (unread bytes would make its close a reset).
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST + 1, b'a');
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        // After all that it still answers.
        assert!(get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        server.stop();
        assert!(
            TcpStream::connect(addr).is_err(),
            "stopped: nothing listens"
        );
    }

    #[test]
    fn a_worker_that_cannot_answer_is_a_503() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let server = Server::start(listener, || Err("the worker has stopped".into())).unwrap();
        let out = get(server.addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.ends_with("the worker has stopped\n"), "{out}");
        server.stop();
    }
}
