//! vnetctl's command line: the global flags, one variant per subcommand and
//! one struct of arguments for each, which its function in
//! [`crate::commands`] takes.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vnet_api::Target;

#[derive(Debug, Parser)]
#[command(
    name = "vnetctl",
    about = "Drive vnetd: apply topologies, inspect objects, trace packets, dump flows and counters"
)]
pub struct Cli {
    /// vnetd's API socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/run/vnet/vnetd.sock"
    )]
    pub socket: PathBuf,
    /// Use vnetd's TCP API instead (`http://host:port`); needs --token-file.
    #[arg(long, global = true, value_name = "URL", requires = "token_file")]
    pub server: Option<String>,
    /// File holding the bearer token for --server.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The server the flags name: vnetd's TCP API with the token read from
    /// --token-file, or else its Unix socket.
    pub fn target(&self) -> Result<Target, String> {
        match (&self.server, &self.token_file) {
            (Some(url), Some(path)) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
                Ok(Target::Tcp {
                    url: url.clone(),
                    token: token.trim().to_string(),
                })
            }
            _ => Ok(Target::Unix(self.socket.clone())),
        }
    }
}

/// How a command prints its answer (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Yaml,
    Json,
}

// `vnetctl flows`: the output flag and the page size. (A doc comment here
// would become the help of `flows`.)
#[derive(Debug, Args)]
pub struct FlowsArgs {
    #[command(flatten)]
    pub output: OutputArg,
    /// Flows asked for per request (the server sends at most 4096 at a
    /// time, in flow-key order; vnetctl reads every page and sorts them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub page_size: u32,
}

// The `-o` flag of every command that prints an answer. (A doc comment
// here would become the help of `flows`, `stats` and `status`.)
#[derive(Debug, Args)]
pub struct OutputArg {
    #[arg(
        short = 'o',
        long = "output",
        value_name = "OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make the running topology exactly FILE (objects it leaves out are
    /// removed); prints what changed.
    Apply(ApplyArgs),
    /// Show the topology, the objects of a kind, or one object.
    Get(GetArgs),
    /// Delete one object (the result must still be valid).
    Delete(DeleteArgs),
    /// Print every change as it is stored.
    Watch(WatchArgs),
    /// Simulate a packet entering a port and print every step (nothing live
    /// changes).
    Trace(TraceArgs),
    /// The installed flows with their kernel counters.
    Flows(FlowsArgs),
    /// Counters by reason, port and device.
    Stats(OutputArg),
    /// Revisions stored and running, bound interfaces, problems.
    Status(OutputArg),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Validate and show the diff; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// bridge, router, chain, ip_group or port_group (plural too), or
    /// hosts (the registered and declared hosts, alive or dead).
    pub kind: Option<String>,
    pub name: Option<String>,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Start after this revision (0: the current topology first).
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Ingress port, DEVICE/PORT.
    #[arg(long)]
    pub port: String,
    #[arg(long, value_parser = ["icmp", "tcp", "udp"])]
    pub proto: String,
    #[arg(long)]
    pub src: String,
    #[arg(long)]
    pub dst: String,
    #[arg(long)]
    pub sport: Option<u16>,
    #[arg(long)]
    pub dport: Option<u16>,
    #[arg(long)]
    pub src_mac: Option<String>,
    #[arg(long)]
    pub dst_mac: Option<String>,
    #[command(flatten)]
    pub output: OutputArg,
}
