//! Real virtual machines as guests: QEMU with virtio-net on a tap, booted
//! from the kernel and busybox initramfs `scripts/vm-image.sh` builds from
//! Debian packages, driven through its serial console.
//!
//! A VM is what libvirt starts on a cloud host: QEMU creates its tap itself
//! (`-netdev tap,ifname=...,script=no`) in the world's host namespace, where
//! vnetd runs, possibly long after vnetd started; the harness only brings
//! the tap up. Nothing inside a guest is changed: its offloads are virtio's
//! defaults (checksum offload, TSO, GSO).
//!
//! KVM is used when a probe boot works, TCG otherwise (on the PVM hosts of
//! this project /dev/kvm cannot run a stock kernel). `VNET_VM_ACCEL=kvm|tcg`
//! forces one; `VNET_VM_IMAGE=DIR` uses an image built elsewhere.
//!
//! The console is a unix socket. Each command is sent as one line framed by
//! two markers, the second carrying the exit status: `echo __S""_7__; {
//! CMD ; } </dev/null; echo __E""_7_$?__`. The quotes keep an echo of the
//! line (should the terminal echo it) from looking like the markers, and
//! the command's stdin is /dev/null so that the newlines sent to push the
//! UART's held-back output (see TOOLCHAIN.md) reach the shell, not the
//! command. Everything the console says is kept in a log next to the
//! world's other logs, whose tail every error quotes.
use crate::{repo_root, run, World};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What /init prints once the modules are loaded and the shell starts.
const READY: &str = "vnet-vm: ready";
/// Boot to the shell: 2–5 s under TCG here, with room for a loaded machine
/// booting two guests at once.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a KVM probe boot may take before KVM is taken as not working.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Console text kept for matching; older text is only in the log file.
const PENDING_MAX: usize = 1 << 20;
/// Quiet time on the console after which a newline is sent, because the
/// guest's UART holds back the end of its output until more input comes.
const NUDGE_AFTER: Duration = Duration::from_millis(300);

/// The kernel and initramfs the VMs boot.
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The image: `$VNET_VM_IMAGE`, or target/vm-image, built (or found up to
/// date) by `scripts/vm-image.sh` once per test process.
pub fn image() -> Result<Image> {
    static IMAGE: OnceLock<std::result::Result<Image, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_image().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_image() -> Result<Image> {
    let dir = match std::env::var_os("VNET_VM_IMAGE") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("target").join("vm-image"),
    };
    let script = repo_root().join("scripts").join("vm-image.sh");
    // The script is idempotent: it returns at once when the image is there
    // and made by this version of it.
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}); run it by hand to see why:\n{}{}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let image = Image {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    for f in [&image.kernel, &image.initrd] {
        if !f.is_file() {
            bail!(
                "{} is missing after {} ran: delete {} and run it again",
                f.display(),
                script.display(),
                dir.display()
            );
        }
    }
    Ok(image)
}

/// The accelerator QEMU runs the guests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            // thread=multi: one host thread per vCPU, the console and the
            // network in others.
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// KVM if `$VNET_VM_ACCEL` says so or a probe boot under KVM reaches the
/// shell, TCG otherwise; decided once per test process, and said on stderr.
pub fn accel() -> Result<Accel> {
    static ACCEL: OnceLock<std::result::Result<Accel, String>> = OnceLock::new();
    ACCEL
        .get_or_init(|| choose_accel().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn choose_accel() -> Result<Accel> {
    match std::env::var("VNET_VM_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) => bail!("VNET_VM_ACCEL={other}: use kvm, tcg, or leave it unset to probe"),
        Err(_) => {}
    }
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        eprintln!("vm: /dev/kvm cannot be opened: guests run under TCG");
        return Ok(Accel::Tcg);
    }
    let dir = std::env::temp_dir().join(format!("vnet-vm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let probe = Vm::launch(&VmSpec::probe(), None, &dir, Accel::Kvm)
        .and_then(|mut vm| vm.wait_ready(PROBE_TIMEOUT).map(|()| vm));
    match probe {
        Ok(vm) => {
            drop(vm);
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!(
                "vm: a KVM probe boot reached the shell in {:.1} s: guests run under KVM",
                started.elapsed().as_secs_f64()
            );
            Ok(Accel::Kvm)
        }
        Err(e) => {
            // The first line has QEMU's own complaint; the probe's files
            // are not kept (every run on these hosts fails the probe).
            let first: Vec<String> = e
                .chain()
                .map(|c| c.to_string().lines().next().unwrap_or("").to_string())
                .collect();
            let first = first.join(": ");
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("vm: a KVM probe boot failed ({first}): guests run under TCG");
            Ok(Accel::Tcg)
        }
    }
}

/// One VM to start: its name (for logs), the tap QEMU creates and the MAC
/// of the guest's virtio-net device.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub tap: Option<String>,
    pub mac: String,
    pub memory_mb: u32,
}

impl VmSpec {
    /// A VM with one NIC on tap `tap`.
    pub fn new(name: &str, tap: &str, mac: &str) -> VmSpec {
        VmSpec {
            name: name.into(),
            tap: Some(tap.into()),
            mac: mac.into(),
            memory_mb: 256,
        }
    }

    fn probe() -> VmSpec {
        VmSpec {
            name: "kvm-probe".into(),
            tap: None,
            mac: String::new(),
            memory_mb: 256,
        }
    }
}

/// A command's exit status and what it printed (stdout and stderr, `\r`
/// removed).
#[derive(Debug, Clone)]
pub struct Ran {
    pub status: i32,
    pub output: String,
}

/// A running VM; powered off (then killed) when dropped.
pub struct Vm {
    pub name: String,
    pub tap: Option<String>,
    pub mac: String,
    pub accel: Accel,
    child: Option<Child>,
    console: Console,
    qemu_log: PathBuf,
    next_marker: u64,
}

impl Vm {
    /// Starts a VM in the world's host namespace (where vnetd runs) on the
    /// accelerator [`accel`] chose, brings its tap up and waits for its
    /// shell.
    pub fn start(w: &World, spec: &VmSpec) -> Result<Vm> {
        let mut vms = Vm::start_all(w, std::slice::from_ref(spec))?;
        Ok(vms.remove(0))
    }

    /// Starts several VMs like [`Vm::start`], booting side by side: all
    /// are launched, then each is waited for.
    pub fn start_all(w: &World, specs: &[VmSpec]) -> Result<Vec<Vm>> {
        let accel = accel()?;
        let mut vms = Vec::with_capacity(specs.len());
        for spec in specs {
            vms.push(Vm::launch(spec, Some(&w.host), w.dir(), accel)?);
        }
        for vm in &mut vms {
            vm.wait_ready(BOOT_TIMEOUT)?;
        }
        Ok(vms)
    }

    fn launch(spec: &VmSpec, netns: Option<&str>, dir: &Path, accel: Accel) -> Result<Vm> {
        let image = image()?;
        let qemu = "qemu-system-x86_64";
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(qemu).is_file()));
        if !on_path {
            bail!("{qemu} is not on PATH: install Debian's qemu-system-x86 (scripts/bootstrap.sh does)");
        }
        let socket = dir.join(format!("{}.serial.sock", spec.name));
        let _ = std::fs::remove_file(&socket);
        let serial_log = dir.join(format!("{}.console.log", spec.name));
        let qemu_log = dir.join(format!("{}.qemu.log", spec.name));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, qemu]);
                c
            }
            None => Command::new(qemu),
        };
        cmd.args(["-name", &spec.name, "-nodefaults", "-no-user-config"])
            .args(["-machine", "pc"])
            .args(accel.args())
            .args(["-m", &spec.memory_mb.to_string(), "-smp", "1"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", "console=ttyS0 panic=-1"])
            .args(["-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", socket.display()));
        if let Some(tap) = &spec.tap {
            // As libvirt does: QEMU opens /dev/net/tun and creates the tap,
            // with the virtio-net header (so the guest's offloads) on.
            // romfile= skips the iPXE boot ROM, which -kernel boots do not
            // use.
            cmd.args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={},romfile=", spec.mac),
            ]);
        }
        let log = std::fs::File::create(&qemu_log)
            .with_context(|| format!("creating {}", qemu_log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches only this child.
        // QEMU dies with the test thread that started it, even if the test
        // process is killed before any Drop runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| {
            format!("starting {qemu}: is qemu-system-x86 installed (scripts/bootstrap.sh)?")
        })?;
        let mut child = Some(child);
        let console = match Console::connect(&socket, &serial_log, &mut child, &qemu_log) {
            Ok(c) => c,
            Err(e) => {
                kill(&mut child);
                return Err(e);
            }
        };
        let mut vm = Vm {
            name: spec.name.clone(),
            tap: spec.tap.clone(),
            mac: spec.mac.clone(),
            accel,
            child,
            console,
            qemu_log,
            next_marker: 1,
        };
        if let (Some(tap), Some(ns)) = (&spec.tap, netns) {
            vm.tap_up(ns, tap)?;
        }
        Ok(vm)
    }

    /// Brings the tap QEMU created up, as libvirt does.
    fn tap_up(&mut self, netns: &str, tap: &str) -> Result<()> {
        let name = self.name.clone();
        poll_fatal(
            &format!("{name}: QEMU creating tap {tap} in {netns}"),
            Duration::from_secs(10),
            || {
                self.check_alive()?;
                let out = Command::new("ip")
                    .args(["-n", netns, "link", "show", tap])
                    .output()?;
                Ok(out.status.success().then_some(()))
            },
        )?;
        run(&["ip", "-n", netns, "link", "set", tap, "up"])?;
        Ok(())
    }

    /// Waits for /init's banner, then until a command round-trips: the
    /// first line sent after boot can be lost, so a probe is repeated until
    /// one answers.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        self.expect_text(READY, timeout, false)
            .context("waiting for the guest's shell")?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{}: the shell did not answer within {timeout:?} of the boot{}",
                    self.name,
                    self.logs()
                );
            }
            match self.sh("true", left.min(Duration::from_secs(2))) {
                Ok(r) if r.status == 0 => return Ok(()),
                Ok(r) => bail!("{}: `true` exited {}{}", self.name, r.status, self.logs()),
                Err(_) => self.check_alive()?,
            }
        }
    }

    /// Runs `cmd` in the guest's shell; its exit status and output, or an
    /// error if none came within `timeout` (then the command is interrupted
    /// with ^C).
    pub fn sh(&mut self, cmd: &str, timeout: Duration) -> Result<Ran> {
        if cmd.contains('\n') {
            bail!("{}: one line per command, got {cmd:?}", self.name);
        }
        let n = self.next_marker;
        self.next_marker += 1;
        self.console
            .note(&format!("[harness → {}] {cmd}", self.name));
        self.console.send(framed_line(cmd, n).as_bytes())?;
        let found = self.console.wait(timeout, true, &mut self.child, |text| {
            framed_answer(text, n)
        });
        match found {
            Ok((status, output)) => Ok(Ran { status, output }),
            Err(e) => {
                // Interrupt whatever still runs, so later commands get the
                // shell.
                let _ = self.console.send(b"\x03\n");
                Err(e.context(format!(
                    "{}: `{cmd}` gave no exit status within {timeout:?}{}",
                    self.name,
                    self.logs()
                )))
            }
        }
    }

    /// Runs `cmd` like [`Vm::sh`] and returns its output, failing with it
    /// when the status is not 0.
    pub fn ok(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let r = self.sh(cmd, timeout)?;
        if r.status != 0 {
            bail!("{}: `{cmd}` exited {}:\n{}", self.name, r.status, r.output);
        }
        Ok(r.output)
    }

    /// Everything the console said so far.
    pub fn console_log(&self) -> String {
        std::fs::read_to_string(&self.console.log_path).unwrap_or_default()
    }

    /// Where the console's log is.
    pub fn console_log_path(&self) -> &Path {
        &self.console.log_path
    }

    /// The tails of the console's and QEMU's logs, for an error message.
    pub fn logs(&self) -> String {
        let console = std::fs::read_to_string(&self.console.log_path).unwrap_or_default();
        let qemu = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        format!(
            "\n--- last of {} ---\n{}\n--- {} ---\n{}",
            self.console.log_path.display(),
            tail(&console, 3000),
            self.qemu_log.display(),
            tail(&qemu, 2000)
        )
    }

    /// An error if QEMU has exited, with its status and logs.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                bail!("{}: QEMU exited ({status}){}", self.name, self.logs());
            }
        }
        Ok(())
    }

    /// Expects `text` on the console within `timeout`.
    fn expect_text(&mut self, text: &str, timeout: Duration, nudge: bool) -> Result<()> {
        let name = self.name.clone();
        let qemu_log = self.qemu_log.clone();
        self.console
            .wait(timeout, nudge, &mut self.child, |t| {
                t.find(text).map(|i| (i + text.len(), ()))
            })
            .with_context(|| {
                let qemu = std::fs::read_to_string(&qemu_log).unwrap_or_default();
                format!(
                    "{name}: waiting for `{text}` on the console\n--- QEMU ---\n{}",
                    tail(&qemu, 2000)
                )
            })
    }

    /// Powers the guest off (busybox `poweroff -f`) and waits for QEMU to
    /// exit; kills it if it does not within 10 s.
    pub fn shutdown(mut self) -> Result<()> {
        self.power_off()
    }

    fn power_off(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            self.child = None;
            return Ok(());
        }
        self.console
            .note(&format!("[harness → {}] poweroff -f", self.name));
        let _ = self.console.send(b"\npoweroff -f\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(&mut self.child);
        bail!(
            "{}: QEMU did not exit within 10 s of poweroff: killed",
            self.name
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "vm {}: console log kept at {}",
                self.name,
                self.console.log_path.display()
            );
        }
        let _ = self.power_off();
        kill(&mut self.child);
    }
}

/// The line that runs `cmd` as command number `n`: its output framed by a
/// start marker and an end marker with its exit status.
fn framed_line(cmd: &str, n: u64) -> String {
    // `{ a & ; }` is a syntax error: a command that ends in `&` is already
    // terminated.
    let sep = if cmd.trim_end().ends_with('&') {
        ""
    } else {
        " ;"
    };
    format!("echo __S\"\"_{n}__; {{ {cmd}{sep} }} </dev/null; echo __E\"\"_{n}_$?__\n")
}

/// In console text (`\r` removed), the answer to command number `n`: where
/// it ends, and its exit status and output.
fn framed_answer(text: &str, n: u64) -> Option<(usize, (i32, String))> {
    let start = format!("__S_{n}__\n");
    let end = format!("__E_{n}_");
    let body = text.find(&start)? + start.len();
    let e = body + text[body..].find(&end)?;
    let digits_at = e + end.len();
    let close = text[digits_at..].find("__")?;
    let status: i32 = text[digits_at..digits_at + close].parse().ok()?;
    Some((digits_at + close + 2, (status, text[body..e].to_string())))
}

/// Like [`crate::poll`], except that an error of `f` (QEMU exited) ends
/// the wait at once instead of being retried.
fn poll_fatal<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().with_context(|| what.to_string())? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The last `n` bytes of `s` (at a character boundary).
fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// What the reader thread has received and not yet handed over.
#[derive(Default)]
struct Inbox {
    bytes: Vec<u8>,
    closed: bool,
}

/// The serial console: a unix socket QEMU serves, a thread reading it into
/// an inbox and the log, and the text not yet matched.
struct Console {
    stream: UnixStream,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    pending: String,
    log: Arc<Mutex<std::fs::File>>,
    log_path: PathBuf,
}

impl Console {
    fn connect(
        socket: &Path,
        log_path: &Path,
        child: &mut Option<Child>,
        qemu_log: &Path,
    ) -> Result<Console> {
        let stream = poll_fatal(
            &format!("QEMU serving its console on {}", socket.display()),
            Duration::from_secs(10),
            || {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    let log = std::fs::read_to_string(qemu_log).unwrap_or_default();
                    bail!("QEMU exited ({status}): {}", tail(&log, 2000));
                }
                Ok(UnixStream::connect(socket).ok())
            },
        )?;
        let log = Arc::new(Mutex::new(
            std::fs::File::create(log_path)
                .with_context(|| format!("creating {}", log_path.display()))?,
        ));
        let inbox = Arc::new((Mutex::new(Inbox::default()), Condvar::new()));
        let mut reader = stream.try_clone()?;
        let (thread_inbox, thread_log) = (inbox.clone(), log.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let (lock, cv) = &*thread_inbox;
                let mut inbox = lock.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    inbox.closed = true;
                    cv.notify_all();
                    return;
                }
                if let Ok(mut f) = thread_log.lock() {
                    let _ = f.write_all(&buf[..n]);
                }
                // Bounded: a guest flooding its console while nobody waits
                // keeps only the latest text (all of it is in the log).
                if inbox.bytes.len() + n > PENDING_MAX {
                    let drop_n = (inbox.bytes.len() + n - PENDING_MAX).min(inbox.bytes.len());
                    inbox.bytes.drain(..drop_n);
                }
                inbox.bytes.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        Ok(Console {
            stream,
            inbox,
            pending: String::new(),
            log,
            log_path: log_path.to_path_buf(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .context("writing to the VM's serial console (QEMU gone?)")
    }

    /// Writes a line of the harness's own into the console log.
    fn note(&self, line: &str) {
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "\n{line}");
        }
    }

    /// Waits until `matcher` finds what it wants in the text received
    /// since the last match: it returns where its match ends (the text up
    /// to there is consumed) and a value. With `nudge`, a newline is sent
    /// whenever the console has been quiet for a while.
    fn wait<T>(
        &mut self,
        timeout: Duration,
        nudge: bool,
        child: &mut Option<Child>,
        matcher: impl Fn(&str) -> Option<(usize, T)>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last_input = Instant::now();
        loop {
            if let Some((end, v)) = matcher(&self.pending) {
                self.pending.drain(..end);
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("no answer within {timeout:?}");
            }
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                *child = None;
                bail!("QEMU exited ({status})");
            }
            let (bytes, closed) = {
                let (lock, cv) = &*self.inbox;
                let inbox = lock.lock().unwrap_or_else(|e| e.into_inner());
                let wait = (deadline - now).min(Duration::from_millis(100));
                let (mut inbox, _) = cv
                    .wait_timeout_while(inbox, wait, |i| i.bytes.is_empty() && !i.closed)
                    .unwrap_or_else(|e| e.into_inner());
                (std::mem::take(&mut inbox.bytes), inbox.closed)
            };
            if !bytes.is_empty() {
                last_input = Instant::now();
                self.pending
                    .push_str(&String::from_utf8_lossy(&bytes).replace('\r', ""));
                if self.pending.len() > PENDING_MAX {
                    let cut = tail(&self.pending, PENDING_MAX / 2).len();
                    let from = self.pending.len() - cut;
                    self.pending.drain(..from);
                }
            } else if closed {
                bail!("the console closed (QEMU gone)");
            } else if nudge && last_input.elapsed() >= NUDGE_AFTER {
                last_input = Instant::now();
                self.send(b"\n")?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_between_its_markers_and_an_echo_of_the_line_is_not_one() {
        let line = framed_line("md5sum /x", 7);
        assert_eq!(
            line,
            "echo __S\"\"_7__; { md5sum /x ; } </dev/null; echo __E\"\"_7_$?__\n"
        );
        // A terminal that echoed the line shows the quotes and `$?`.
        assert!(framed_answer(&line, 7).is_none());
        let text = format!("{line}# __S_7__\nabc  /x\n__E_7_0__\n# ");
        let (end, (status, output)) = framed_answer(&text, 7).expect("an answer");
        assert_eq!((status, output.as_str()), (0, "abc  /x\n"));
        assert_eq!(&text[end..], "\n# ");
        // Another command's markers, a status still arriving, a failure.
        assert!(framed_answer("__S_17__\n__E_17_0__\n", 1).is_none());
        assert!(framed_answer("__S_1__\nout\n__E_1_1", 1).is_none());
        let (_, (status, _)) = framed_answer("__S_3__\nno\n__E_3_127__", 3).expect("answer");
        assert_eq!(status, 127);
        assert_eq!(framed_line("httpd &", 2).matches("& ;").count(), 0);
    }

    #[test]
    fn a_tail_is_cut_at_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 10), "ab");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }
}
