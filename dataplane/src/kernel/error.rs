//! The one error type of the kernel module. Every variant names the call and
//! the object it was made on (interface, map, slot), and its message carries
//! the whole cause chain down to the errno, so a log line is enough to act.

use std::{error::Error as StdError, fmt, io};

use aya::{maps::MapError, programs::ProgramError, EbpfError};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Built with `AYA_BUILD_SKIP=1`: the embedded object is empty.
    #[error(
        "loading the XDP program: vnet-dataplane was built with AYA_BUILD_SKIP=1, so it \
         embeds no XDP object; rebuild without AYA_BUILD_SKIP (run scripts/bootstrap.sh first \
         if nightly or bpf-linker is missing)"
    )]
    NotBuilt,

    #[error("loading the XDP program: max_flows must be at least 1")]
    InvalidMaxFlows,

    /// The process lacks CAP_BPF / CAP_NET_ADMIN (or is not root).
    #[error("{call}: permission denied; vnetd needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): {}", chain(.error.as_ref()))]
    NotPermitted {
        call: String,
        error: Box<dyn StdError + Send + Sync>,
    },

    /// Parsing the object, creating its maps or the verifier's verdict.
    #[error("loading the XDP object (FLOWS with {max_flows} entries): {}", chain(.error))]
    Load { max_flows: u32, error: EbpfError },

    /// Parsing the benchmark object (`kernel::bench`) or creating its maps.
    #[error("loading the benchmark XDP object: {}", chain(.error))]
    LoadBench { error: EbpfError },

    #[error("pinning under {}: {error}", path.display())]
    Pin {
        path: std::path::PathBuf,
        error: std::io::Error,
    },

    #[error("the XDP object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },

    #[error("opening map {map} of the XDP object: {}", chain(.error))]
    MapType { map: &'static str, error: MapError },

    #[error("loading program {program} into the kernel: {}", chain(.error))]
    ProgramLoad {
        program: &'static str,
        error: ProgramError,
    },

    #[error("attaching a program to interface {ifname}: no such interface")]
    UnknownInterface { ifname: String },

    #[error("attaching {what}: {}", chain(.error))]
    Attach {
        /// The program, the hook and the interface: "XDP program vnet_xdp
        /// (native mode) to interface eth0".
        what: String,
        error: ProgramError,
    },

    /// A tunnel port (VNI → local port) that cannot be set.
    #[error("setting the local port of VNI {vni}: {why}")]
    InvalidTunnelPort { vni: u32, why: &'static str },

    #[error("detaching a program from interface {ifname}: vnetd did not attach it")]
    NotAttached { ifname: String },

    #[error("detaching a program from interface {ifname}: {}", chain(.error))]
    Detach { ifname: String, error: ProgramError },

    /// `bpf_map_update_elem` on FLOWS returned E2BIG: the table holds
    /// `max_flows` entries. The other entries are untouched.
    #[error("inserting a flow into map FLOWS: the table is full ({max_flows} flows)")]
    FlowTableFull { max_flows: u32 },

    /// Any other map call. `op` says what was done to which entry, e.g.
    /// "updating IFACES[ifindex 3]".
    #[error("{op} in map {map}: {}", chain(.error))]
    Map {
        op: String,
        map: &'static str,
        error: MapError,
    },

    #[error(
        "BPF_PROG_TEST_RUN of {program}: a frame of {len} bytes cannot be run \
         (the kernel takes 14..={max} bytes)"
    )]
    TestFrameSize {
        program: &'static str,
        len: usize,
        max: usize,
    },

    #[error("BPF_PROG_TEST_RUN of {program} (frame of {len} bytes, ingress ifindex {ifindex}): {}", chain(.error))]
    TestRun {
        program: &'static str,
        len: usize,
        ifindex: u32,
        error: ProgramError,
    },
}

impl KernelError {
    /// The errno at the bottom of the cause chain, if any: lets callers (and
    /// tests) tell EPERM from ENOENT without parsing messages.
    pub fn raw_os_error(&self) -> Option<i32> {
        let top: &(dyn StdError + 'static) = match self {
            KernelError::NotPermitted { error, .. } => error.as_ref(),
            KernelError::Load { error, .. } | KernelError::LoadBench { error } => error,
            KernelError::MapType { error, .. } | KernelError::Map { error, .. } => error,
            KernelError::ProgramLoad { error, .. }
            | KernelError::Attach { error, .. }
            | KernelError::Detach { error, .. }
            | KernelError::TestRun { error, .. } => error,
            _ => return None,
        };
        io_error(top).and_then(io::Error::raw_os_error)
    }
}

/// The first `io::Error` in the cause chain of `e` (aya wraps errno in
/// `SyscallError`, `LoadError`, `CreateError`...).
pub(crate) fn io_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// True when the chain ends in EPERM/EACCES: the process lacks privileges.
pub(crate) fn is_permission(e: &(dyn StdError + 'static)) -> bool {
    io_error(e)
        .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)))
}

/// `e` and all its causes, "outer: inner: errno" (aya's messages alone stop
/// at "`bpf_link_create` failed").
pub(crate) fn chain<'a>(e: &'a (dyn StdError + 'static)) -> impl fmt::Display + 'a {
    Chain(e)
}

struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut last = self.0.to_string();
        let mut cur = self.0.source();
        while let Some(e) = cur {
            let msg = e.to_string();
            // Transparent wrappers repeat their cause's message.
            if !last.contains(&msg) {
                write!(f, ": {msg}")?;
            }
            last = msg;
            cur = e.source();
        }
        Ok(())
    }
}
