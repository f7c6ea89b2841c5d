use clap::Parser;
use std::process::ExitCode;
use vnet_dataplane::daemon::{self, Options};

fn main() -> ExitCode {
    let opts = Options::parse();
    if let Some(path) = &opts.check {
        return if daemon::check(path) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VNET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match daemon::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("vnetd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
