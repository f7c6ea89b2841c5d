//! `vnetctl`: the operator's CLI for vnetd's API. Human output by default
//! (tables, diffs, numbered trace steps); `-o json` / `-o yaml` for
//! machines and for files that `apply -f` takes back.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// Every line vnetctl prints goes through these two, which shadow std's: a
// reader that goes away (`vnetctl flows | head`) ends vnetctl as it ends
// any Unix tool, by SIGPIPE, where std's would panic.
macro_rules! println {
    () => { print_out(format_args!("\n")) };
    ($($arg:tt)*) => { print_out(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { print_out(format_args!($($arg)*)) };
}

/// Writes to stdout; on a closed pipe, dies of SIGPIPE quietly (status
/// 141 in a shell), as `cat` or `ls` do. Rust ignores SIGPIPE so that a
/// write fails with EPIPE instead; it is raised here, once output is over.
fn print_out(args: std::fmt::Arguments) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        output_failed(e);
    }
}

fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: restoring the default action and raising a signal have
        // no preconditions; the process ends here.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    eprintln!("vnetctl: cannot write the output: {e}");
    std::process::exit(1);
}

use clap::{Parser, Subcommand, ValueEnum};
use vnet_api::{Client, ClientError, Target};
use vnet_model::objects::{Object, ObjectKind};
use vnet_model::reports::TraceRequest;
use vnet_model::{MacAddr, PortRef, Protocol, Topology};

#[derive(Debug, Parser)]
#[command(
    name = "vnetctl",
    about = "Drive vnetd: apply topologies, inspect objects, trace packets, dump flows and counters"
)]
struct Cli {
    /// vnetd's API socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/run/vnet/vnetd.sock"
    )]
    socket: PathBuf,
    /// Use vnetd's TCP API instead (`http://host:port`); needs --token-file.
    #[arg(long, global = true, value_name = "URL", requires = "token_file")]
    server: Option<String>,
    /// File holding the bearer token for --server.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the running topology exactly FILE (objects it leaves out are
    /// removed); prints what changed.
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Validate and show the diff; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show the topology, the objects of a kind, or one object.
    Get {
        /// bridge, router, chain, ip_group or port_group (plural too).
        kind: Option<String>,
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete one object (the result must still be valid).
    Delete { kind: String, name: String },
    /// Print every change as it is stored.
    Watch {
        /// Start after this revision (0: the current topology first).
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Simulate a packet entering a port and print every step (nothing live
    /// changes).
    Trace {
        /// Ingress port, DEVICE/PORT.
        #[arg(long)]
        port: String,
        #[arg(long, value_parser = ["icmp", "tcp", "udp"])]
        proto: String,
        #[arg(long)]
        src: String,
        #[arg(long)]
        dst: String,
        #[arg(long)]
        sport: Option<u16>,
        #[arg(long)]
        dport: Option<u16>,
        #[arg(long)]
        src_mac: Option<String>,
        #[arg(long)]
        dst_mac: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The installed flows with their kernel counters.
    Flows {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Counters by reason, port and device.
    Stats {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Revisions stored and running, bound interfaces, problems.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vnetctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => {
            // Output that std still buffers reaches the pipe here.
            if let Err(e) = std::io::stdout().flush() {
                output_failed(e);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vnetctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error for the operator: says what to fix.
type Result<T> = std::result::Result<T, String>;

fn target(cli: &Cli) -> Result<Target> {
    match (&cli.server, &cli.token_file) {
        (Some(url), Some(path)) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
            Ok(Target::Tcp {
                url: url.clone(),
                token: token.trim().to_string(),
            })
        }
        _ => Ok(Target::Unix(cli.socket.clone())),
    }
}

/// The error of a call that would have changed the topology.
fn change_err(e: ClientError) -> String {
    match e.code() {
        Some(tonic::Code::InvalidArgument) => format!("nothing changed: {}", err(e)),
        _ => err(e),
    }
}

/// The error of an apply: a server's list of validation errors stops where
/// a gRPC trailer is full; when it says there are more, the file is
/// validated here too, so that the operator sees every error at once.
fn apply_err(file: &Path, topology: &Topology, e: ClientError) -> String {
    let total = e.validation_error_count();
    let shown = change_err(e);
    format!("{}: {}", file.display(), all_errors(shown, total, topology))
}

/// `shown` (the server's error), or, when the server counted `total`
/// validation errors of `topology` but could list only the first ones, the
/// whole list as validated here. The server's text stays when this
/// vnetctl finds other errors than the server did (another version).
fn all_errors(shown: String, total: Option<usize>, topology: &Topology) -> String {
    let Some(total) = total.filter(|&n| n > 0) else {
        return shown;
    };
    match topology.validate() {
        // The same errors (the same count), of which the server's list
        // lacks the last.
        Err(all) if all.len() == total && !shown.contains(&all[total - 1].to_string()) => {
            let list: String = all.iter().map(|e| format!("\n  {e}")).collect();
            format!(
                "nothing changed: rejected: invalid topology ({total} errors; the server \
                 listed the first ones, all are checked here):{list}"
            )
        }
        _ => shown,
    }
}

fn err(e: ClientError) -> String {
    match &e {
        ClientError::Connect { .. } => {
            format!("{e}\n  (is vnetd running? pass its socket with --socket PATH; the socket is root's only)")
        }
        _ => e.to_string(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| format!("cannot print JSON: {e}"))
}

fn kind(s: &str) -> Result<ObjectKind> {
    s.parse()
}

async fn run(cli: Cli) -> Result<()> {
    let target = target(&cli)?;
    let mut client = Client::connect(&target).await.map_err(err)?;
    match cli.command {
        Command::Apply {
            file,
            dry_run,
            output,
        } => {
            let bytes =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let topology =
                vnet_model::parse_bytes(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
            let out = client
                .apply(&topology, dry_run, None)
                .await
                .map_err(|e| apply_err(&file, &topology, e))?;
            if output == Output::Json {
                let changes: Vec<String> = out.changes.iter().map(|c| c.to_string()).collect();
                println!(
                    "{}",
                    json(&serde_json::json!({
                        "revision": out.revision,
                        "dry_run": out.dry_run,
                        "running": out.running,
                        "changes": changes,
                        "warnings": out.warnings,
                    }))?
                );
                return Ok(());
            }
            for c in &out.changes {
                println!("{c}");
            }
            if dry_run {
                println!(
                    "dry run: {} change(s) against revision {}; nothing applied",
                    out.changes.len(),
                    out.revision
                );
            } else if out.changes.is_empty() {
                println!("no changes: revision {} stays", out.revision);
            } else {
                println!(
                    "applied: revision {}{}",
                    out.revision,
                    if out.running {
                        " (running)"
                    } else {
                        " (stored; the dataplane does not run it yet)"
                    }
                );
            }
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
        }
        Command::Get {
            kind: k,
            name,
            output,
        } => {
            let k = k.as_deref().map(kind).transpose()?;
            match (k, name) {
                (Some(k), Some(name)) => {
                    let (revision, id, object) = client.get(k, &name).await.map_err(err)?;
                    print_object(k, &name, id, revision, object, output)?;
                }
                (k, None) => {
                    let listed = client.list(k).await.map_err(err)?;
                    match output {
                        Output::Yaml => print!("{}", listed.topology.to_yaml()),
                        Output::Json => println!("{}", json(&listed.topology)?),
                        Output::Table => {
                            let rows = listed
                                .objects
                                .iter()
                                .map(|(k, n, id)| {
                                    vec![
                                        k.to_string(),
                                        n.clone(),
                                        id.to_string(),
                                        summary(&listed.topology, *k, n),
                                    ]
                                })
                                .collect();
                            table(&["KIND", "NAME", "ID", "SUMMARY"], rows);
                            if k.is_none() {
                                let t = &listed.topology;
                                if !t.nat.is_empty() || !t.firewall.is_empty() {
                                    println!(
                                        "{} NAT and {} firewall intent(s): -o yaml shows them",
                                        t.nat.len(),
                                        t.firewall.len()
                                    );
                                }
                            }
                            println!("revision {}", listed.revision);
                        }
                    }
                }
                (None, Some(_)) => unreachable!("clap gives NAME only after KIND"),
            }
        }
        Command::Delete { kind: k, name } => {
            let k = kind(&k)?;
            let out = match client.delete(k, &name).await {
                Ok(out) => out,
                Err(e) => {
                    let total = e.validation_error_count();
                    let shown = change_err(e);
                    if total.is_none() {
                        return Err(shown);
                    }
                    // What the server validated: the topology without it.
                    let Ok(listed) = client.list(None).await else {
                        return Err(shown);
                    };
                    let mut t = listed.topology;
                    t.remove_object(k, &name);
                    return Err(all_errors(shown, total, &t));
                }
            };
            for c in &out.changes {
                println!("{c}");
            }
            println!("deleted: revision {}", out.revision);
        }
        Command::Watch { from, output } => {
            let mut watch = client.watch(from).await.map_err(err)?;
            while let Some(event) = watch.next().await {
                let event = event.map_err(err)?;
                if output == Output::Json {
                    let changes: Vec<String> =
                        event.changes.iter().map(|c| c.to_string()).collect();
                    let line = serde_json::json!({
                        "revision": event.revision,
                        "changes": changes,
                        "topology": event.topology,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "revision {}: {} change(s)",
                        event.revision,
                        event.changes.len()
                    );
                    for c in &event.changes {
                        println!("  {c}");
                    }
                }
            }
        }
        Command::Trace {
            port,
            proto,
            src,
            dst,
            sport,
            dport,
            src_mac,
            dst_mac,
            output,
        } => {
            let ip = |flag: &str, v: &str| {
                v.parse()
                    .map_err(|_| format!("--{flag} {v}: not an IPv4 address like 10.0.0.1"))
            };
            let mac = |flag: &str, v: Option<String>| {
                v.map(|m| m.parse::<MacAddr>().map_err(|e| format!("--{flag}: {e}")))
                    .transpose()
            };
            let req = TraceRequest {
                port: port
                    .parse::<PortRef>()
                    .map_err(|e| format!("--port: {e}"))?,
                protocol: proto
                    .parse::<Protocol>()
                    .map_err(|e| format!("--proto: {e}"))?,
                src: ip("src", &src)?,
                dst: ip("dst", &dst)?,
                src_port: sport,
                dst_port: dport,
                src_mac: mac("src-mac", src_mac)?,
                dst_mac: mac("dst-mac", dst_mac)?,
            };
            let r = client.trace(&req).await.map_err(err)?;
            if output != Output::Table {
                let steps: Vec<_> = r
                    .steps
                    .iter()
                    .map(|s| serde_json::json!({"kind": s.kind, "detail": s.detail}))
                    .collect();
                println!(
                    "{}",
                    json(&serde_json::json!({
                        "revision": r.revision,
                        "packet": r.packet,
                        "steps": steps,
                        "verdict": r.verdict,
                        "emitted": r.emitted,
                        "flow": r.flow,
                    }))?
                );
                return Ok(());
            }
            println!("packet: {}", r.packet);
            for (i, s) in r.steps.iter().enumerate() {
                println!("{:>3}. {:<16} {}", i + 1, s.kind, s.detail);
            }
            println!("verdict: {}", r.verdict);
            if !r.emitted.is_empty() {
                println!("sent to: {}", r.emitted.join(", "));
            }
            match &r.flow {
                Some(f) => println!("flow: {f}"),
                None => println!("flow: none (not installed for this packet)"),
            }
            println!("(simulated on revision {}; nothing changed)", r.revision);
        }
        Command::Flows { output } => {
            let (revision, flows) = client.flows().await.map_err(err)?;
            if output != Output::Table {
                let list: Vec<_> = flows
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "in_port": f.in_port, "match": f.matches, "actions": f.actions,
                            "packets": f.packets, "bytes": f.bytes, "age_ms": f.age_ms,
                            "idle_ms": f.idle_ms, "tags": f.tags,
                        })
                    })
                    .collect();
                println!("{}", json(&list)?);
                return Ok(());
            }
            let rows = flows
                .iter()
                .map(|f| {
                    vec![
                        f.in_port.clone(),
                        f.matches.clone(),
                        f.actions.clone(),
                        f.packets.to_string(),
                        f.bytes.to_string(),
                        format!("{}s", f.idle_ms / 1000),
                    ]
                })
                .collect();
            table(
                &["IN", "MATCH", "ACTIONS", "PACKETS", "BYTES", "IDLE"],
                rows,
            );
            println!("{} flow(s), revision {revision}", flows.len());
        }
        Command::Stats { output } => {
            let c = client.counters().await.map_err(err)?;
            if output != Output::Table {
                let ports: Vec<_> = c
                    .ports
                    .iter()
                    .map(|(p, i, t)| {
                        serde_json::json!({
                            "port": p, "interface": i, "userspace_rx": t.userspace_rx,
                            "kernel_packets": t.kernel_packets, "kernel_bytes": t.kernel_bytes,
                            "flows": t.flows, "upcall_budget": t.upcall_budget,
                        })
                    })
                    .collect();
                let devices: Vec<_> = c
                    .devices
                    .iter()
                    .map(|(d, t)| {
                        serde_json::json!({
                            "device": d, "userspace_rx": t.userspace_rx,
                            "kernel_packets": t.kernel_packets, "kernel_bytes": t.kernel_bytes,
                            "flows": t.flows, "upcall_budget": t.upcall_budget,
                        })
                    })
                    .collect();
                let reasons: serde_json::Map<_, _> = c
                    .reasons
                    .iter()
                    .map(|(n, v)| (n.clone(), (*v).into()))
                    .collect();
                let totals: serde_json::Map<_, _> = c
                    .totals
                    .iter()
                    .map(|(n, v)| (n.clone(), (*v).into()))
                    .collect();
                println!(
                    "{}",
                    json(&serde_json::json!({
                        "revision": c.revision, "reasons": reasons, "totals": totals,
                        "ports": ports, "devices": devices,
                    }))?
                );
                return Ok(());
            }
            let traffic = |t: &vnet_model::reports::TrafficCounters| {
                vec![
                    t.userspace_rx.to_string(),
                    t.kernel_packets.to_string(),
                    t.kernel_bytes.to_string(),
                    t.flows.to_string(),
                    t.upcall_budget.to_string(),
                ]
            };
            let rows = c
                .ports
                .iter()
                .map(|(p, i, t)| {
                    let mut row = vec![p.clone(), i.clone()];
                    row.extend(traffic(t));
                    row
                })
                .collect();
            table(
                &[
                    "PORT",
                    "INTERFACE",
                    "USERSPACE_RX",
                    "KERNEL_PKTS",
                    "KERNEL_BYTES",
                    "FLOWS",
                    "OVER_BUDGET",
                ],
                rows,
            );
            println!();
            let rows = c
                .devices
                .iter()
                .map(|(d, t)| {
                    let mut row = vec![d.clone()];
                    row.extend(traffic(t));
                    row
                })
                .collect();
            table(
                &[
                    "DEVICE",
                    "USERSPACE_RX",
                    "KERNEL_PKTS",
                    "KERNEL_BYTES",
                    "FLOWS",
                    "OVER_BUDGET",
                ],
                rows,
            );
            println!();
            let rows = c
                .totals
                .iter()
                .chain(c.reasons.iter().filter(|(_, v)| *v > 0))
                .map(|(n, v)| vec![n.clone(), v.to_string()])
                .collect();
            table(&["COUNTER", "VALUE"], rows);
        }
        Command::Status { output } => {
            let h = client.health().await.map_err(err)?;
            if output != Output::Table {
                let ifs: Vec<_> = h
                    .interfaces
                    .iter()
                    .map(|(p, i, n)| serde_json::json!({"port": p, "interface": i, "ifindex": n}))
                    .collect();
                let ports: Vec<_> = h.ports.iter().map(port_status_json).collect();
                println!(
                    "{}",
                    json(&serde_json::json!({
                        "stored_revision": h.stored_revision,
                        "running_revision": h.running_revision,
                        "dataplane": h.dataplane,
                        "interfaces": ifs,
                        "ports": ports,
                        "problems": h.problems,
                    }))?
                );
                return Ok(());
            }
            println!("stored revision:  {}", h.stored_revision);
            if h.dataplane {
                println!("running revision: {}", h.running_revision);
                let rows = h.ports.iter().map(port_status_row).collect();
                table(&["PORT", "INTERFACE", "STATE", "IFINDEX", "WHY"], rows);
                for p in &h.problems {
                    println!("problem: {p}");
                }
            } else {
                println!("no dataplane behind this API");
            }
        }
    }
    Ok(())
}

fn port_status_json(p: &vnet_model::reports::PortStatus) -> serde_json::Value {
    use vnet_model::reports::PortState;
    let mut v = serde_json::json!({
        "port": p.port,
        "interface": p.interface,
        "state": p.state.name(),
    });
    match &p.state {
        PortState::Bound { ifindex } => v["ifindex"] = (*ifindex).into(),
        PortState::Failed(why) => v["error"] = why.clone().into(),
        PortState::Waiting => {}
    }
    v
}

fn port_status_row(p: &vnet_model::reports::PortStatus) -> Vec<String> {
    use vnet_model::reports::PortState;
    let (ifindex, why) = match &p.state {
        PortState::Bound { ifindex } => (ifindex.to_string(), String::new()),
        PortState::Waiting => ("-".into(), "waiting for the interface".into()),
        PortState::Failed(why) => ("-".into(), why.clone()),
    };
    vec![
        p.port.clone(),
        p.interface.clone(),
        p.state.name().into(),
        ifindex,
        why,
    ]
}

fn print_object(
    kind: ObjectKind,
    name: &str,
    id: u64,
    revision: u64,
    object: Object,
    output: Output,
) -> Result<()> {
    let topology = object.into_topology(name);
    match output {
        Output::Yaml => print!("{}", fragment_yaml(&topology)),
        Output::Json => println!("{}", json(&topology)?),
        Output::Table => {
            table(
                &["KIND", "NAME", "ID", "SUMMARY"],
                vec![vec![
                    kind.to_string(),
                    name.to_string(),
                    id.to_string(),
                    summary(&topology, kind, name),
                ]],
            );
            println!("revision {revision}");
        }
    }
    Ok(())
}

/// The object's section of a file, without the `version:` line.
fn fragment_yaml(t: &Topology) -> String {
    t.to_yaml()
        .lines()
        .filter(|l| !l.starts_with("version:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// One line about an object for tables.
fn summary(t: &Topology, kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Bridge => t.bridges.get(name).map(|b| {
            let down = b.ports.values().filter(|p| !p.up).count();
            let mut s = format!("{} ports", b.ports.len());
            if down > 0 {
                s.push_str(&format!(" ({down} down)"));
            }
            if !b.dhcp.is_empty() {
                s.push_str(&format!(", DHCP on {} subnet(s)", b.dhcp.len()));
            }
            s
        }),
        ObjectKind::Router => t
            .routers
            .get(name)
            .map(|r| format!("{} ports, {} routes", r.ports.len(), r.routes.len())),
        ObjectKind::Chain => t.chains.get(name).map(|c| format!("{} rules", c.len())),
        ObjectKind::IpGroup => t
            .ip_groups
            .get(name)
            .map(|g| format!("{} addresses", g.len())),
        ObjectKind::PortGroup => t
            .port_groups
            .get(name)
            .map(|g| format!("{} ports", g.ports.len())),
    }
    .unwrap_or_default()
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
