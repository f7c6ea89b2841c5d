//! `vnetctl`: the operator's CLI for vnetd's API. Human output by default
//! (tables, diffs, numbered trace steps); `-o json` / `-o yaml` for
//! machines and for files that `apply -f` takes back.
//!
//! [`cli`] is the command line, [`commands`] holds one function per
//! subcommand, and [`output`] is everything vnetctl prints.
use std::io::Write;
use std::process::ExitCode;

// Every line vnetctl prints goes through these two, which shadow std's: a
// reader that goes away (`vnetctl flows | head`) ends vnetctl as it ends
// any Unix tool, by SIGPIPE, where std's would panic. (Defined before the
// modules, so that they are the ones in scope there.)
#[allow(unused_macros)] // so that a `println!` added later is safe too
macro_rules! println {
    () => { $crate::print_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::print_out(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { $crate::print_out(format_args!($($arg)*)) };
}

mod cli;
mod commands;
mod output;

use clap::Parser;
use cli::{Cli, Command};
use vnet_api::Client;

/// An error for the operator: says what to fix.
type Result<T> = std::result::Result<T, String>;

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

/// Connects to vnetd and runs the command.
async fn run(cli: Cli) -> Result<()> {
    let target = cli.target()?;
    let mut client = Client::connect(&target)
        .await
        .map_err(output::client_error)?;
    let client = &mut client;
    match cli.command {
        Command::Apply(args) => commands::apply(client, args).await,
        Command::Get(args) => commands::get(client, args).await,
        Command::Delete(args) => commands::delete(client, args).await,
        Command::Watch(args) => commands::watch(client, args).await,
        Command::Trace(args) => commands::trace(client, args).await,
        Command::Flows(args) => commands::flows(client, args.page_size, args.output.format).await,
        Command::Stats(args) => commands::stats(client, args.format).await,
        Command::Status(args) => commands::status(client, args.format).await,
    }
}
