//! vnetd: the per-host agent. The dataplane (`vnet-dataplane`) forwards;
//! this crate joins it to the store and the API ([`control_thread`]) and
//! owns start-up, the command line and shutdown ([`daemon`]).

use clap::Parser;
use std::process::ExitCode;
mod control_thread;
mod daemon;
mod nat_leaser;

use daemon::{LogFormat, Options};

fn main() -> ExitCode {
    let opts = Options::parse();
    if let Some(path) = &opts.check {
        return if daemon::check(path) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    init_logging(opts.log_format);
    match daemon::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // The JSON log already carries the error as one record; a
            // second, plain line would break a shipper's parsing.
            if opts.log_format == LogFormat::Text {
                eprintln!("vnetd: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (systemd's journal takes them from there), filtered by
/// `VNET_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("VNET_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Flattened: the event's fields sit next to "message" at the top
        // level, where shippers look for them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
