//! `vnetd`: runs the topology of its store (or of `--topology FILE`, which
//! it stores first), attaches the XDP program to every bound interface,
//! opens their AF_XDP sockets, serves the API from its control thread and
//! runs the worker until SIGINT or SIGTERM, then detaches everything it
//! attached.
use crate::control_thread::{ControlThread, Placement};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use vnet_api::{ApiConfig, Listeners};
use vnet_dataplane::binding::Binder;
use vnet_dataplane::kernel::{AttachMode, Kernel, KernelError};
use vnet_dataplane::runtime::{adoption, BusyPoll, Limits, Link, Runtime};
use vnet_dataplane::sim::Snapshot;
use vnet_dataplane::tunnel::{Tunnel, Underlay};
use vnet_dataplane::upcalls::{self, UpcallLimit};
use vnet_store::{EmbeddedStore, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Native (driver) mode; SKB mode on veths (native redirects into a
    /// veth need its peer changed, which vnetd does not do).
    Auto,
    Native,
    Skb,
}

/// How vnetd writes its log (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (timestamp, level, fields, target), for log
    /// shippers.
    Json,
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "vnetd",
    about = "vnet dataplane agent: virtual bridges on XDP and AF_XDP",
    version = vnet_dataplane::metrics::VERSION_LINE
)]
pub struct Options {
    /// Topology file (YAML or JSON) to store and run. Without it vnetd runs
    /// the topology stored in --state-dir (empty on first start) and takes
    /// new ones through the API (`vnetctl apply -f FILE`).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Validate FILE, print its errors, and exit 0 (valid) or 1 (invalid).
    #[arg(long, value_name = "FILE", conflicts_with = "topology")]
    pub check: Option<PathBuf>,
    /// Directory for vnetd's persistent state (the topology store).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vnet")]
    pub state_dir: PathBuf,
    /// Unix socket of the gRPC API (mode 0600: root only).
    #[arg(long, value_name = "PATH", default_value = "/run/vnet/vnetd.sock")]
    pub socket: PathBuf,
    /// Also serve the API on this TCP address (needs --token-file).
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token TCP clients must present.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpMode,
    /// Capacity of the kernel flow table.
    #[arg(long, default_value_t = vnet_common::DEFAULT_MAX_FLOWS)]
    pub max_flows: u32,
    /// First packets (upcalls to the worker) each port may send per second;
    /// the excess is dropped and counted (`upcall_budget`). 0: no limit.
    #[arg(long, value_name = "N", default_value_t = upcalls::DEFAULT_PER_SEC)]
    pub upcall_rate: u32,
    /// First packets a quiet port may send at once, over its rate.
    #[arg(long, value_name = "N", default_value_t = upcalls::DEFAULT_BURST)]
    pub upcall_burst: u32,
    /// Microseconds the worker spins on its receive rings before it sleeps
    /// (0: off, at most 1000): saves a first packet the cost of waking it,
    /// for that much CPU after each burst.
    #[arg(long, value_name = "US", default_value_t = BusyPoll::default(),
          value_parser = BusyPoll::parse)]
    pub busy_poll_us: BusyPoll,
    /// Worker threads running the simulation (1 to 8). Each receive queue
    /// of a multi-queue interface (a NIC's RSS queues, a veth or tap made
    /// with several) has its own socket, and the upcall path of the skb
    /// ports a queue per worker; worker w serves queue q of every port and
    /// of the upcall path when q % N == w. The workers take turns on one set of state
    /// tables, so a second one helps by the transmit and wait time it runs
    /// beside the first (benches/RESULTS.md).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = vnet_dataplane::runtime::workers::parse_workers)]
    pub workers: usize,
    /// Installed flows one device (bridge or router) may hold, charged to
    /// the flow's ingress device [default: a quarter of --max-flows].
    #[arg(long, value_name = "N")]
    pub max_flows_per_device: Option<usize>,
    /// Learned MACs one bridge may hold.
    #[arg(long, value_name = "N", default_value_t = Limits::default().macs_per_bridge)]
    pub max_macs_per_bridge: usize,
    /// Tracked connections one zone (device or stateful port group) may hold.
    #[arg(long, value_name = "N", default_value_t = Limits::default().conntrack_per_zone)]
    pub max_conntrack_per_zone: usize,
    /// Dynamic NAT bindings (SNAT ports, DNAT port ranges) one zone may
    /// hold.
    #[arg(long, value_name = "N", default_value_t = Limits::default().nat_per_zone)]
    pub max_nat_per_zone: usize,
    /// Dynamic DHCP leases (offers included) one bridge port may hold.
    #[arg(long, value_name = "N", default_value_t = Limits::default().dhcp_leases_per_port)]
    pub dhcp_leases_per_port: usize,
    /// Serve Prometheus metrics on http://ADDR/metrics (read-only, no
    /// authentication). ADDR must be a loopback address unless
    /// --metrics-allow-remote is given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Allow --metrics on an address other than loopback: anyone who can
    /// reach it can read every counter and port name.
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Where the XDP program's maps and links are pinned (on bpffs), so
    /// that established flows keep forwarding while vnetd restarts and the
    /// next vnetd takes them over. Not on bpffs: vnetd runs unpinned and
    /// says so.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/vnet")]
    pub bpffs_dir: PathBuf,
    /// On exit, detach XDP from every interface and remove the pinned maps
    /// and links (traffic stops), instead of leaving them for the next
    /// vnetd.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Also serve MidoNet's REST API on http://ADDR/midonet-api (for
    /// midonet-cli, midonetclient, CloudStack's MidoNet provider); a view of
    /// the same store as the gRPC API (docs/MIDONET.md). Beyond loopback it
    /// needs --midonet-api-token-file.
    #[arg(long, value_name = "ADDR")]
    pub midonet_api: Option<SocketAddr>,
    /// File holding the token every MidoNet API request must send
    /// (X-Auth-Token); POST /midonet-api/login hands it out.
    #[arg(long, value_name = "FILE", requires = "midonet_api")]
    pub midonet_api_token_file: Option<PathBuf>,
    /// Where the MidoNet host id is kept (read if present, else written),
    /// as MidoNet agents keep it: CloudStack's KVM agent reads it.
    #[arg(long, value_name = "FILE", default_value = vnet_midonet::DEFAULT_HOST_ID_FILE)]
    pub midonet_host_id_file: PathBuf,
    /// Where the topology is kept: `etcd://HOST:PORT[,HOST:PORT...]` (a
    /// store shared by many hosts' vnetds; needs --host and
    /// --tunnel-address). Default: the embedded store under --state-dir.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// This host's name in a shared store: it registers under a lease
    /// (`vnetctl get hosts`). Its ports are those whose `host` is this one
    /// or absent: it binds only them (--topology checks only their
    /// interfaces).
    #[arg(long, value_name = "NAME", requires = "store")]
    pub host: Option<String>,
    /// This host's underlay address, where other hosts' tunnels reach it.
    #[arg(long, value_name = "IP", requires = "host")]
    pub tunnel_address: Option<std::net::Ipv4Addr>,
    /// The interface VXLAN to and from the other hosts goes through.
    /// Default: the interface that holds --tunnel-address.
    #[arg(long, value_name = "IFACE", requires = "tunnel_address")]
    pub underlay: Option<String>,
    /// TTL in seconds of this host's registration lease: how long after a
    /// crash the others see it dead.
    #[arg(long, value_name = "SECONDS", default_value_t = vnet_etcd::DEFAULT_HOST_TTL)]
    pub host_ttl: i64,
}

impl Options {
    /// The per-tenant limits the flags ask for.
    pub fn limits(&self) -> Limits {
        let defaults = Limits::for_max_flows(self.max_flows);
        Limits {
            upcalls: UpcallLimit {
                per_sec: self.upcall_rate,
                burst: self.upcall_burst,
            },
            flows_per_device: self
                .max_flows_per_device
                .unwrap_or(defaults.flows_per_device),
            macs_per_bridge: self.max_macs_per_bridge,
            conntrack_per_zone: self.max_conntrack_per_zone,
            nat_per_zone: self.max_nat_per_zone,
            dhcp_leases_per_port: self.dhcp_leases_per_port,
        }
    }
}

/// `vnetd --check FILE`: prints the verdict; returns whether it is valid.
pub fn check(path: &std::path::Path) -> bool {
    match vnet_model::load_file(path) {
        Ok(t) => {
            println!(
                "{}: valid ({} bridges, {} routers, {} chains)",
                path.display(),
                t.bridges.len(),
                t.routers.len(),
                t.chains.len()
            );
            true
        }
        Err(e) => {
            eprintln!("{e}");
            false
        }
    }
}

/// This host's end of the tunnels: the underlay interface (--underlay, or
/// the one holding `address`) with the decapsulators on it, and the socket
/// first packets for other hosts' ports leave by.
fn open_tunnel(
    kernel: &mut Kernel,
    mode: AttachMode,
    address: std::net::Ipv4Addr,
    opts: &Options,
) -> anyhow::Result<Tunnel> {
    let name = match &opts.underlay {
        Some(name) => name.clone(),
        None => interface_holding(address)?,
    };
    let underlay = Underlay::open(&name).map_err(anyhow::Error::msg)?;
    // As for a port of `executor: auto`: XDP on a NIC; on a veth (or tap)
    // the tc decapsulator alone, since XDP there would turn off GSO on the
    // veth's peer and every tunnel super-frame would arrive segmented.
    let xdp = (underlay.executor == vnet_model::Executor::Xdp).then_some(mode);
    kernel
        .attach_underlay(&name, xdp)
        .with_context(|| format!("attaching the VXLAN decapsulators to the underlay {name}"))?;
    let tunnel = Tunnel::open(address, underlay).map_err(anyhow::Error::msg)?;
    tracing::info!(
        underlay = %name,
        %address,
        inner_mtu = tunnel.underlay.inner_mtu(),
        executor = ?tunnel.underlay.executor,
        "VXLAN tunnels to the other hosts"
    );
    Ok(tunnel)
}

/// The interface `address` is configured on.
fn interface_holding(address: std::net::Ipv4Addr) -> anyhow::Result<String> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing the host's addresses")?;
    for a in addrs {
        let holds = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .is_some_and(|sin| sin.ip() == address);
        if holds {
            return Ok(a.interface_name);
        }
    }
    bail!(
        "no interface of this host has --tunnel-address {address}: configure it on the underlay \
         interface, or give another address"
    )
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing the {sig} handler"))?;
    }
    Ok(())
}

/// The binder for `--xdp-mode`: native or SKB-mode XDP for the ports on the
/// XDP executor (`auto`: native, SKB mode on veths).
fn binder_for(requested: XdpMode) -> Binder {
    match requested {
        XdpMode::Auto => Binder::native_with_fallback(),
        XdpMode::Native => Binder::new(AttachMode::Native),
        XdpMode::Skb => Binder::new(AttachMode::Skb),
    }
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("vnetd must run as root: it loads XDP programs and opens AF_XDP sockets (try sudo)");
    }
    // Bound before anything is attached, so a refused address or a taken
    // port stops vnetd before it changes the host.
    let metrics_listener = opts
        .metrics
        .map(|addr| vnet_dataplane::metrics::bind(addr, opts.metrics_allow_remote))
        .transpose()?;
    let midonet_listener = match opts.midonet_api {
        Some(addr) => {
            let token = opts
                .midonet_api_token_file
                .as_deref()
                .map(vnet_midonet::read_token)
                .transpose()?;
            let host = vnet_midonet::HostInfo::load_or_create(&opts.midonet_host_id_file)?;
            Some((vnet_midonet::bind(addr, token.is_some())?, token, host))
        }
        None => None,
    };
    let store = open_store(opts)?;
    if let Some(path) = &opts.topology {
        let topology = vnet_model::load_file(path)?;
        // A file naming an interface this host lacks is refused before it
        // is stored (a stored topology with one runs without that port).
        let snap = Snapshot::compile(&topology, 0);
        for (port, ifname) in snap.interfaces() {
            if !on_this_host(&topology, &snap.ports[port].name, opts.host.as_deref()) {
                continue;
            }
            if nix::net::if_::if_nametoindex(ifname).is_err() {
                bail!(
                    "interface {ifname} (port {}) does not exist: create it, or bind the port to another interface",
                    snap.ports[port].name
                );
            }
        }
        let applied = store
            .apply(topology, None)
            .with_context(|| format!("storing {}", path.display()))?;
        tracing::info!(
            revision = applied.revision,
            changes = applied.changes.len(),
            "stored the topology of {}",
            path.display()
        );
    }
    let current = store.current()?;
    if let (Some(host), Some(address)) = (&opts.host, opts.tunnel_address) {
        if let Some(why) = crate::control_thread::address_mismatch(&current.topology, host, address)
        {
            bail!("{why}");
        }
    }
    if current.revision == 0 {
        tracing::info!(
            "no topology stored yet: running an empty one until `vnetctl apply -f FILE`"
        );
    }

    // Read before anything runs: the revision the kernel's flows (left by an
    // earlier vnetd, if any) were installed under.
    let installed_under = adoption::recorded_revision(&opts.state_dir);
    let mut kernel = load_kernel(opts)?;
    install_signal_handlers()?;
    // The worker binds the ports when it connects to the control thread
    // (before "vnetd running"), and later ones as their interfaces appear;
    // a failed bind is shown in `vnetctl status` rather than fatal.
    let mut binder = binder_for(opts.xdp_mode);
    tracing::info!(mode = ?binder.mode, "XDP attach mode (ports on the XDP executor)");
    // Before any port: the skb ports' first packets come through it.
    // A queue of the pair per worker: each serves its share of the skb
    // ports' first packets too.
    let upcall_path = binder
        .bind_upcall_path(&mut kernel, opts.workers as u32)
        .context(
            "setting up the upcall path (the veth pair vnet-up/vnet-up-x that carries the \
         first packets of skb ports to vnetd); vnetd needs iproute2 and CAP_NET_ADMIN",
        )?;
    let listeners = Listeners::bind(&ApiConfig {
        socket: opts.socket.clone(),
        listen: opts.listen,
        token_file: opts.token_file.clone(),
    })?;

    let (commands, inbox, wake) =
        vnet_dataplane::runtime::channel().context("creating the worker's wake-up eventfd")?;
    let running = Arc::new(AtomicU64::new(current.revision));
    let limits = opts.limits();
    tracing::info!(?limits, "per-port and per-device limits");
    let tunnel = match opts.tunnel_address {
        Some(address) => Some(open_tunnel(&mut kernel, binder.mode, address, opts)?),
        None => None,
    };
    // This host's ports only (`host:`), the others' through the tunnels.
    let placement = Placement {
        host: opts.host.clone(),
        tunnel_address: opts.tunnel_address,
        tunnel_mtu: tunnel.as_ref().map(|t| t.underlay.inner_mtu()),
        // Hosts sharing one store lease SNAT ports in blocks; a vnetd of
        // its own store gives every port.
        nat: (opts.host.is_some() && opts.store.is_some())
            .then(|| Arc::new(crate::nat_leaser::NatLeasing::new())),
    };
    let snap = Arc::new(placement.compile(&current.topology, current.revision));
    let mut runtime = Runtime::new(snap.clone(), kernel, Vec::new(), limits);
    runtime.attach_upcall_path(upcall_path);
    runtime.set_busy_poll(opts.busy_poll_us);
    if let Some(tunnel) = tunnel {
        runtime
            .attach_tunnel(tunnel)
            .context("clearing the tunnel maps an earlier vnetd left")?;
    }
    runtime.keep_leases_in(&opts.state_dir);
    let topology = Arc::new(current.topology);
    runtime.attach_control(Link::new(
        inbox,
        wake,
        running.clone(),
        binder,
        topology.clone(),
    ));
    // The ports are bound: the earlier vnetd's flows can be judged.
    runtime
        .take_over_kernel_flows(installed_under)
        .with_context(|| {
            format!(
                "taking over the flows an earlier vnetd pinned under {}: remove them \
             (rm -r that directory) or start once with a new --bpffs-dir",
                opts.bpffs_dir.display()
            )
        })?;
    runtime.record_revisions_in(&opts.state_dir);
    let api_latency = vnet_api::request_latency().context("creating the API latency histogram")?;
    let metrics = match metrics_listener {
        Some(listener) => {
            let source = vnet_dataplane::metrics::WorkerSource {
                commands: commands.clone(),
                stored_revision: store.subscribe(),
                config: vnet_dataplane::metrics::Config {
                    max_flows: opts.max_flows,
                    limits,
                },
                api_latency: Some(api_latency.clone()),
                store_health: Some({
                    let store = store.clone();
                    Box::new(move || store.health())
                }),
            };
            let server = vnet_dataplane::metrics::Server::start(listener, move || source.scrape())?;
            tracing::info!(address = %server.addr(), "serving metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let midonet = match midonet_listener {
        Some((listener, token, host)) => {
            let ctx = vnet_midonet::Ctx {
                store: store.clone(),
                running: Some(running.clone()),
                token,
                host,
            };
            let server = vnet_midonet::Server::start(listener, ctx)?;
            tracing::info!(address = %server.addr(), "serving the MidoNet API on http://{}/midonet-api", server.addr());
            Some(server)
        }
        None => None,
    };
    let control = ControlThread::start(
        store,
        listeners,
        commands,
        running,
        topology,
        api_latency,
        placement,
    )?;
    tracing::info!(
        revision = current.revision,
        socket = %opts.socket.display(),
        bridges = snap.bridges.len(),
        routers = snap.routers.len(),
        ports = runtime.ports.len(),
        workers = opts.workers,
        "vnetd running; SIGINT or SIGTERM stops it"
    );

    let ran = runtime.run_workers(opts.workers, &STOP);
    if let Err(e) = &ran {
        tracing::error!("{e}");
    }
    if let Some(m) = metrics {
        m.stop();
    }
    if let Some(m) = midonet {
        m.stop();
    }
    control.stop();
    runtime.save_leases();
    runtime.log_stats();
    let pinned = runtime.kernel.pin_dir().map(Path::to_path_buf);
    match pinned {
        Some(dir) if !opts.detach_on_exit => {
            tracing::info!(
                dir = %dir.display(),
                "stopped; XDP stays attached and its maps pinned: established flows keep \
                 forwarding until the next vnetd takes them over (--detach-on-exit removes them)"
            );
        }
        _ => {
            if let Err(e) = runtime.kernel.detach_all_and_unpin() {
                tracing::warn!(error = %e, "detaching the programs and removing the pinned maps");
            }
            vnet_dataplane::upcall_path::remove_pair();
            tracing::info!(
                "stopped; the programs detached from every interface, the upcall pair removed"
            );
        }
    }
    ran?;
    Ok(())
}

/// The store of `--store` (the embedded one without it); with etcd, this
/// host registered in it.
fn open_store(opts: &Options) -> anyhow::Result<Arc<dyn Store>> {
    let Some(url) = &opts.store else {
        return Ok(Arc::new(EmbeddedStore::open(&opts.state_dir)?));
    };
    let (Some(host), Some(tunnel_address)) = (&opts.host, opts.tunnel_address) else {
        bail!(
            "--store {url} is shared by many hosts: give this one's name and underlay address \
             (--host NAME --tunnel-address IP)"
        );
    };
    let store = vnet_etcd::EtcdStore::connect(url)?;
    store.register_host(host, tunnel_address, opts.host_ttl)?;
    tracing::info!(store = %url, %host, %tunnel_address, ttl = opts.host_ttl, "topology in etcd; this host registered");
    Ok(Arc::new(store))
}

/// Whether port `device/port` of `topology` is this host's to bind: its
/// `host` is `host` or absent.
fn on_this_host(topology: &vnet_model::Topology, qualified: &str, host: Option<&str>) -> bool {
    let Some((device, port)) = qualified.split_once('/') else {
        return true;
    };
    let r = vnet_model::PortRef::new(device, port);
    let placed = topology.port(&r).and_then(|p| p.host().map(str::to_owned));
    match (placed, host) {
        (None, _) => true,
        (Some(h), Some(me)) => h == me,
        (Some(_), None) => false,
    }
}

/// The XDP program, pinned under --bpffs-dir if that can be done.
fn load_kernel(opts: &Options) -> anyhow::Result<Kernel> {
    match Kernel::load_pinned(opts.max_flows, &opts.bpffs_dir) {
        Ok(kernel) => {
            tracing::info!(
                dir = %opts.bpffs_dir.display(),
                adopted_maps = kernel.adopted_maps(),
                "XDP maps and links pinned: a restart keeps established flows"
            );
            Ok(kernel)
        }
        Err(e @ KernelError::Pin { .. }) => {
            tracing::warn!("{e}: running unpinned, so a restart of vnetd drops traffic");
            Ok(Kernel::load(opts.max_flows)?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::Options;
    use clap::Parser;

    #[test]
    fn table_share_flags_reach_the_limits() {
        let opts = Options::try_parse_from([
            "vnetd",
            "--max-conntrack-per-zone",
            "5",
            "--max-nat-per-zone",
            "7",
        ])
        .expect("valid flags");
        let limits = opts.limits();
        assert_eq!((limits.conntrack_per_zone, limits.nat_per_zone), (5, 7));
        let defaults = Options::try_parse_from(["vnetd"])
            .expect("no flags")
            .limits();
        assert_eq!(defaults.nat_per_zone, 65_536);
        assert!(Options::try_parse_from(["vnetd", "--max-nat-per-zone", "many"]).is_err());
    }
}
