//! A throwaway etcd server for tests and demos: Debian's `etcd` (package
//! etcd-server) on its own address and ports, data on tmpfs, stopped and
//! removed when dropped. Never the system's etcd on 127.0.0.1:2379.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SERVERS: AtomicU32 = AtomicU32::new(0);

/// How long etcd may take to answer its health check.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct EtcdServer {
    child: Option<Child>,
    data: PathBuf,
    /// The client address (`IP:PORT`).
    pub client: SocketAddr,
    peer: SocketAddr,
    netns: Option<String>,
    pub log: PathBuf,
}

impl EtcdServer {
    /// Starts etcd on 127.0.0.1 with ports the kernel picked free.
    pub fn start() -> Result<EtcdServer, String> {
        let client = free_port()?;
        let peer = free_port()?;
        EtcdServer::spawn(None, client, peer)
    }

    /// Starts etcd inside network namespace `netns` on `ip` (ports 2379 and
    /// 2380 there: the namespace is the test's own).
    pub fn start_in(netns: &str, ip: std::net::Ipv4Addr) -> Result<EtcdServer, String> {
        EtcdServer::spawn(
            Some(netns.to_string()),
            SocketAddr::from((ip, 2379)),
            SocketAddr::from((ip, 2380)),
        )
    }

    fn spawn(
        netns: Option<String>,
        client: SocketAddr,
        peer: SocketAddr,
    ) -> Result<EtcdServer, String> {
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("vnet-etcd-{}-{n}", std::process::id());
        // tmpfs: etcd 3.4 has no --unsafe-no-fsync, and fsyncs every write.
        let data = PathBuf::from("/dev/shm").join(&tag);
        let _ = std::fs::remove_dir_all(&data);
        let log = std::env::temp_dir().join(format!("{tag}.log"));
        let _ = std::fs::remove_file(&log);
        let mut server = EtcdServer {
            child: None,
            data,
            client,
            peer,
            netns,
            log,
        };
        server.run()?;
        Ok(server)
    }

    /// Starts etcd again on the same data and addresses (after
    /// [`EtcdServer::kill`]: an outage).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.run()
    }

    fn run(&mut self) -> Result<(), String> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let etcd = which("etcd").ok_or(
            "etcd is not installed: install Debian's etcd-server (scripts/bootstrap.sh does)",
        )?;
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&etcd);
                c
            }
            None => Command::new(&etcd),
        };
        let (c, p) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        command
            .args(["--name", "t", "--data-dir"])
            .arg(&self.data)
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("t={p}")])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", etcd.display()))?;
        self.child = Some(child);
        self.wait_healthy()
    }

    /// `etcd://IP:PORT`, for [`crate::EtcdStore::connect`] and `vnetd --store`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.client)
    }

    /// Polls `/health` until etcd says it is healthy.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.healthy() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "etcd exited ({status}) before it was healthy; its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd was not healthy within {} s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET /health from inside etcd's namespace (a thread that enters it).
    pub fn healthy(&self) -> bool {
        let addr = self.client;
        let netns = self.netns.clone();
        std::thread::spawn(move || {
            if let Some(ns) = netns {
                if enter_netns(&ns).is_err() {
                    return false;
                }
            }
            http_health(addr)
        })
        .join()
        .unwrap_or(false)
    }

    /// Stops etcd (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn http_health(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.contains("\"health\":\"true\"")
}

/// Moves the calling thread into network namespace `ns` (`ip netns`'s
/// /run/netns/NS).
pub fn enter_netns(ns: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns on a namespace file we hold open; it changes only the
    // calling thread.
    if unsafe { libc_setns(f.as_raw_fd(), CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const CLONE_NEWNET: i32 = 0x4000_0000;

extern "C" {
    #[link_name = "setns"]
    fn libc_setns(fd: i32, nstype: i32) -> i32;
}

fn free_port() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}
