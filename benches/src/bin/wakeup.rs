//! The floor under the first-packet latency (issue 14): how long this
//! machine takes to wake a thread that sleeps in `poll(2)`, as vnetd's
//! worker sleeps between first packets.
//!
//! A first packet that finds the worker asleep pays one such wake-up before
//! the simulation starts (its reply, caught by the turn right after, does
//! not). Two threads ping-pong through two eventfds, each waiting in
//! `poll`; half a round trip is one wake-up, the write and the read
//! included. Three placements: both threads on one CPU (the worker on the
//! pinging process's CPU), on two CPUs (the figure PERFORMANCE.md asks for:
//! ping from another CPU than the worker's), and on two CPUs with both
//! threads spinning on their eventfd instead of sleeping (what vnetd's
//! `--busy-poll-us` buys while it spins: no wake-up at all); and the first
//! two again with both threads idle 20 ms before each round trip, as a
//! worker is between pings 50 ms apart. Each round trip is
//! timed; medians and 90th percentiles are printed as table rows.
//!
//! `cargo run --release -p vnet-benches --bin wakeup [-- --rounds N]`; no
//! root needed.
use anyhow::{bail, Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// One way of placing the two threads.
#[derive(Clone, Copy)]
struct Placement {
    name: &'static str,
    /// CPUs of the waking thread and of the woken one.
    cpus: (usize, usize),
    /// Both threads spin on their eventfd instead of sleeping in poll.
    spin: bool,
    /// Idle time before each round trip: a CPU that has been idle for a
    /// while (a worker between two pings 50 ms apart) may be in a deeper
    /// sleep, or its vCPU descheduled, than one woken back to back.
    gap_ms: u64,
}

/// Round trips of the placements with an idle gap (each costs the gap).
const GAPPED_ROUNDS: usize = 200;

const PLACEMENTS: [Placement; 5] = [
    Placement {
        name: "one CPU, woken thread asleep in poll",
        cpus: (0, 0),
        spin: false,
        gap_ms: 0,
    },
    Placement {
        name: "two CPUs, woken thread asleep in poll",
        cpus: (0, 1),
        spin: false,
        gap_ms: 0,
    },
    Placement {
        name: "two CPUs, both threads spinning (busy-poll)",
        cpus: (0, 1),
        spin: true,
        gap_ms: 0,
    },
    Placement {
        name: "one CPU, asleep 20 ms before each (as between pings)",
        cpus: (0, 0),
        spin: false,
        gap_ms: 20,
    },
    Placement {
        name: "two CPUs, asleep 20 ms before each (as between pings)",
        cpus: (0, 1),
        spin: false,
        gap_ms: 20,
    },
];

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the fd is owned here.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        bail!("eventfd: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64.
    unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

/// Takes the eventfd's count; false if it was zero.
fn take(fd: RawFd) -> bool {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) == 8 }
}

/// Waits for `fd`'s count, asleep in poll or spinning.
fn wait(fd: RawFd, spin: bool) {
    if spin {
        while !take(fd) {
            std::hint::spin_loop();
        }
        return;
    }
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 1000) };
        if take(fd) {
            return;
        }
    }
}

fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for
    // cpu < CPU_SETSIZE, which sched_setaffinity then checks.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        bail!(
            "pinning a thread to CPU {cpu}: {} (this harness needs 2 CPUs)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Round trips in ns, `rounds` of them after `rounds / 10` of warm-up.
fn measure(p: Placement, rounds: usize) -> Result<Vec<u64>> {
    let (ping, pong) = (eventfd()?, eventfd()?);
    let (ping_fd, pong_fd) = (ping.as_raw_fd(), pong.as_raw_fd());
    let warm = rounds / 10;
    let woken = std::thread::spawn(move || -> Result<()> {
        pin(p.cpus.1)?;
        for _ in 0..warm + rounds {
            wait(ping_fd, p.spin);
            signal(pong_fd);
        }
        Ok(())
    });
    pin(p.cpus.0)?;
    let mut rtts = Vec::with_capacity(rounds);
    let gap = std::time::Duration::from_millis(p.gap_ms);
    for i in 0..warm + rounds {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        signal(ping_fd);
        wait(pong_fd, p.spin);
        if i >= warm {
            rtts.push(t.elapsed().as_nanos() as u64);
        }
    }
    woken
        .join()
        .map_err(|_| anyhow::anyhow!("the woken thread panicked"))??;
    drop((ping, pong));
    Ok(rtts)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

fn main() -> Result<()> {
    let mut rounds = 20_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds: not a number")?;
            }
            other => bail!("unknown argument {other:?} (usage: wakeup [--rounds N])"),
        }
    }
    if rounds < 10 {
        bail!("--rounds {rounds}: give at least 10");
    }
    println!("| wake-up of a thread (half a round trip through two eventfds) | median | 90th percentile |");
    println!("| --- | --- | --- |");
    for p in PLACEMENTS {
        let rounds = if p.gap_ms > 0 {
            rounds.min(GAPPED_ROUNDS)
        } else {
            rounds
        };
        eprintln!("[wakeup] {}: {rounds} round trips", p.name);
        let mut rtts = measure(p, rounds)?;
        rtts.sort_unstable();
        println!(
            "| {} | {:.1} µs | {:.1} µs |",
            p.name,
            percentile(&rtts, 0.5) / 2e3,
            percentile(&rtts, 0.9) / 2e3
        );
    }
    Ok(())
}
