//! Following the host's interfaces: a NETLINK_ROUTE socket subscribed to
//! link events (RTM_NEWLINK, RTM_DELLINK). The worker polls it with its
//! AF_XDP sockets and, when it becomes readable, compares every exterior
//! port's interface with what is bound ([`crate::binding::plan`]). The
//! events only say *when* to look: the comparison reads the interfaces
//! themselves, so a lost event (a receive buffer overrun) costs nothing but
//! a look, and the worker also looks every few seconds as a safety net.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// At most this many datagrams are read per call, so that a storm of link
/// events cannot hold the worker off its sockets; the rest wait for the
/// next poll (the socket stays readable).
const MAX_READS: usize = 64;
/// Receive buffer asked of the kernel: room for a burst of events (a host
/// starting many VMs) before it overruns.
const RCVBUF: libc::c_int = 1 << 20;
const NLMSG_HDRLEN: usize = 16;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;

/// What one link event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// RTM_NEWLINK (created or changed) rather than RTM_DELLINK.
    pub new: bool,
    pub ifindex: u32,
    /// IFLA_IFNAME, when the message carries it.
    pub name: Option<String>,
}

/// What [`LinkWatch::drain`] read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Link events read.
    pub events: usize,
    /// The kernel dropped events (ENOBUFS): every interface must be looked at.
    pub overrun: bool,
}

impl Drained {
    /// Whether the interfaces should be looked at again.
    pub fn changed(&self) -> bool {
        self.events > 0 || self.overrun
    }
}

/// The netlink socket, non-blocking.
pub struct LinkWatch {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl LinkWatch {
    /// Opens the socket in the caller's network namespace and subscribes
    /// it to link events.
    pub fn open() -> io::Result<LinkWatch> {
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: `addr` is a live sockaddr_nl of the length given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // A smaller buffer only means an overrun sooner, which is handled:
        // the result is ignored.
        // SAFETY: passes a live c_int of the length given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&RCVBUF as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(LinkWatch {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what is pending (at most [`MAX_READS`] datagrams) without
    /// blocking; each event is logged at debug level.
    pub fn drain(&mut self) -> Drained {
        let mut out = Drained::default();
        for _ in 0..MAX_READS {
            // SAFETY: receives into a live buffer of the length given.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::ENOBUFS) => {
                        out.overrun = true;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => break, // EAGAIN: nothing more
                }
            }
            if n == 0 {
                break;
            }
            for e in parse(&self.buf[..n as usize]) {
                tracing::debug!(new = e.new, ifindex = e.ifindex, name = ?e.name, "link event");
                out.events += 1;
            }
        }
        if out.overrun {
            tracing::warn!("link events were lost (netlink overrun): looking at every interface");
        }
        out
    }
}

/// The link events of one netlink datagram. Anything malformed ends the
/// walk: the datagram comes from the kernel, but nothing here may panic.
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(hdr) = buf.get(at..at + NLMSG_HDRLEN) {
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        if kind == libc::RTM_NEWLINK || kind == libc::RTM_DELLINK {
            if let Some(e) = link_event(kind == libc::RTM_NEWLINK, body) {
                events.push(e);
            }
        }
        at += align4(len);
    }
    events
}

fn link_event(new: bool, body: &[u8]) -> Option<LinkEvent> {
    let info = body.get(..IFINFOMSG_LEN)?;
    let ifindex = i32::from_ne_bytes([info[4], info[5], info[6], info[7]]);
    let mut name = None;
    // Attributes: rta_len (u16, header included), rta_type (u16), payload.
    let mut at = IFINFOMSG_LEN;
    while let Some(rta) = body.get(at..at + 4) {
        let len = u16::from_ne_bytes([rta[0], rta[1]]) as usize;
        let kind = u16::from_ne_bytes([rta[2], rta[3]]);
        if len < 4 || at + len > body.len() {
            break;
        }
        if kind == libc::IFLA_IFNAME {
            let value = &body[at + 4..at + len];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            name = Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        at += align4(len);
    }
    Some(LinkEvent {
        new,
        ifindex: u32::try_from(ifindex).ok()?,
        name,
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message of `kind` for `ifindex`, with IFLA_IFNAME `name`.
    fn message(kind: u16, ifindex: i32, name: Option<&str>) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        if let Some(name) = name {
            let mut value = name.as_bytes().to_vec();
            value.push(0);
            let len = 4 + value.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&libc::IFLA_IFNAME.to_ne_bytes());
            body.extend_from_slice(&value);
            body.resize(align4(body.len()), 0);
        }
        // Another attribute after the name (IFLA_MTU), to be skipped.
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&libc::IFLA_MTU.to_ne_bytes());
        body.extend_from_slice(&1500u32.to_ne_bytes());
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn reads_new_and_deleted_links_with_their_names() {
        let mut buf = message(libc::RTM_NEWLINK, 7, Some("vm1-h"));
        buf.extend(message(libc::RTM_NEWADDR, 7, None));
        buf.extend(message(libc::RTM_DELLINK, 9, Some("tap12345")));
        assert_eq!(
            parse(&buf),
            vec![
                LinkEvent {
                    new: true,
                    ifindex: 7,
                    name: Some("vm1-h".into())
                },
                LinkEvent {
                    new: false,
                    ifindex: 9,
                    name: Some("tap12345".into())
                },
            ]
        );
    }

    #[test]
    fn malformed_datagrams_end_the_walk_without_panicking() {
        let good = message(libc::RTM_NEWLINK, 3, Some("a"));
        // Every truncation of a valid message, and lengths that lie.
        for cut in 0..good.len() {
            let events = parse(&good[..cut]);
            assert!(events.is_empty(), "cut at {cut}: {events:?}");
        }
        let mut short = good.clone();
        short[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse(&short).is_empty());
        let mut long = good.clone();
        long[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse(&long).is_empty());
        // An attribute longer than the message: the event, without a name.
        let mut bad_attr = good.clone();
        let rta = NLMSG_HDRLEN + IFINFOMSG_LEN;
        bad_attr[rta..rta + 2].copy_from_slice(&1000u16.to_ne_bytes());
        assert_eq!(
            parse(&bad_attr),
            vec![LinkEvent {
                new: true,
                ifindex: 3,
                name: None
            }]
        );
    }

    /// The socket sees a veth pair come and go (root only: it creates one
    /// in the test's namespace, under names of its own).
    #[test]
    fn the_socket_reports_an_interface_created_and_deleted() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
            eprintln!("skipped: needs root to create an interface");
            return;
        }
        let mut watch = LinkWatch::open().expect("netlink socket");
        assert!(!watch.drain().changed(), "nothing happened yet");
        let name = format!("lw{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            let ok = std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?}");
        };
        let peer = format!("{name}p");
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        let seen = wait_for(&mut watch);
        ip(&["link", "del", &name]);
        let gone = wait_for(&mut watch);
        assert!(seen.changed() && gone.changed(), "{seen:?} {gone:?}");
    }

    fn wait_for(watch: &mut LinkWatch) -> Drained {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(watch.fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(2000u16));
        watch.drain()
    }
}
