//! The XDP loader and the kernel maps.
//!
//! [`Kernel`] owns the loaded XDP flow executor (`ebpf/xdp`, embedded at
//! build time by `build.rs`) and its maps, and is the only place that talks
//! to the kernel's BPF side: attach/detach on interfaces, the interface and
//! AF_XDP socket tables, the flow table, the counters, and
//! `BPF_PROG_TEST_RUN` for packet tests and benchmarks. Every call returns a
//! [`KernelError`] naming the call and the object.
//!
//! What the program does with these maps is documented in
//! `ebpf/xdp/src/maps.rs`; the types are `vnet_common`'s.

mod attach;
pub mod batch;
pub mod bench;
mod error;
pub mod flow_writer;
pub mod pin;

use std::{collections::BTreeMap, ffi::CString, fmt, net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, XskMap},
    programs::{Program, SchedClassifier, Xdp, XdpMode},
    Ebpf, EbpfLoader, TestRun as _, TestRunOptions,
};
use vnet_common::{
    maps,
    tunnel::{self, TunnelPort},
    FlowActions, FlowKey, FlowValue, IfaceConfig, Reason, UpcallBudget, TC_PROGRAM,
    UNDERLAY_PROGRAM, UNDERLAY_XDP_PROGRAM, UPCALL_PROGRAM, XDP_PROGRAM,
};

pub use attach::Hook;
use attach::{Attachment, Slot};
pub use error::KernelError;
pub use flow_writer::{FlowWriter, WriteOrder};
use pin::PinDir;

/// The XDP object built by `build.rs` (empty when built with
/// `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vnet-xdp"));

/// Number of counters the XDP program keeps (the `Reason::Xdp*` group).
pub const XDP_STATS: usize = Reason::XDP_COUNT as usize;

/// Largest frame a test run hands the program in one piece (`data` to
/// `data_end`): a page minus the XDP headroom (256) and `skb_shared_info`
/// (320), as the kernel's test run computes it. The benchmark programs
/// (live frames) take no larger one.
pub const MAX_TEST_FRAME: usize = 4096 - 256 - 320;

/// Largest frame [`Kernel::test_run`] takes: a jumbo frame (MTU 9000 with
/// an 802.1Q tag). The kernel builds one over [`MAX_TEST_FRAME`] as a
/// multi-buffer frame: `MAX_TEST_FRAME` bytes linear, the rest in page
/// fragments. Attached, the program never sees one (it does not declare
/// multi-buffer support, so drivers and generic XDP hand it linear frames),
/// but the length checks that must hold for any frame size can be tested.
pub const MAX_TEST_JUMBO_FRAME: usize = 9000 + 18;

/// Smallest frame `BPF_PROG_TEST_RUN` accepts: an Ethernet header.
pub const MIN_TEST_FRAME: usize = 14;

/// How XDP is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`). On veth, frames redirected
    /// into a veth are only delivered if its peer runs XDP or has GRO on.
    Native,
    /// Generic XDP on the skb (`XDP_FLAGS_SKB_MODE`): works everywhere,
    /// slower.
    Skb,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        })
    }
}

/// Result of one [`Kernel::test_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The XDP verdict (`XDP_DROP` = 1, `XDP_REDIRECT` = 4, ...).
    pub action: u32,
    /// The frame as the program left it (after rewrites, VLAN push/pop).
    pub data: Vec<u8>,
    /// Average time of one run, as the kernel measured it over `repeat`.
    pub duration_ns: u64,
}

/// tc verdicts, for callers of [`Kernel::test_run_tc`].
pub mod tc_action {
    pub const TC_ACT_SHOT: u32 = 2;
    pub const TC_ACT_REDIRECT: u32 = 7;
}

/// XDP verdicts, for callers of [`Kernel::test_run`].
pub mod xdp_action {
    pub const XDP_ABORTED: u32 = 0;
    pub const XDP_DROP: u32 = 1;
    pub const XDP_PASS: u32 = 2;
    pub const XDP_TX: u32 = 3;
    pub const XDP_REDIRECT: u32 = 4;
}

/// The loaded XDP flow executor and its maps. Dropping it detaches the
/// program from every interface it attached it to, unless it was loaded
/// pinned ([`Kernel::load_pinned`]): then the program stays attached and
/// the maps stay, for the next vnetd to adopt.
pub struct Kernel {
    ebpf: Ebpf,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    /// The flow map's descriptor again, for batch reads and writes
    /// ([`batch`]), shared with the workers' [`FlowWriter`]s.
    flows_fd: std::sync::Arc<std::os::fd::OwnedFd>,
    /// The values of a batch of flows being installed (kept for its
    /// capacity).
    flow_values: Vec<FlowValue>,
    /// Taken by every write to the flow map ([`flow_writer`]).
    write_order: WriteOrder,
    ifaces: HashMap<MapData, u32, IfaceConfig>,
    xsks: XskMap<MapData>,
    stats: PerCpuArray<MapData, u64>,
    upcall: Array<MapData, u32>,
    upcall_budgets: HashMap<MapData, u32, UpcallBudget>,
    tunnel_ports: HashMap<MapData, u32, TunnelPort>,
    tunnel_peers: HashMap<MapData, [u8; 4], u32>,
    tunnel_local: HashMap<MapData, [u8; 4], u32>,
    max_flows: u32,
    /// What this `Kernel` attached, by interface and hook slot.
    attached: BTreeMap<(String, Slot), Attachment>,
    /// Where the maps and links are pinned, if they are.
    pins: Option<PinDir>,
    /// The maps were pinned by an earlier vnetd and are reused.
    adopted_maps: bool,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("max_flows", &self.max_flows)
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// Loads the XDP program and creates its maps, with room for
    /// `max_flows` flows (the flow table is not preallocated: memory grows
    /// with the flows actually installed). Needs root (CAP_BPF, CAP_NET_ADMIN).
    pub fn load(max_flows: u32) -> Result<Kernel, KernelError> {
        Kernel::load_with(max_flows, None)
    }

    /// [`Kernel::load`] with the maps and links pinned under `base` (on
    /// bpffs; see [`pin`]): maps an earlier vnetd pinned there are reused if
    /// they have this build's layout and size, and replaced (with a log
    /// line) otherwise.
    pub fn load_pinned(max_flows: u32, base: &Path) -> Result<Kernel, KernelError> {
        let pins = PinDir::prepare(base).map_err(|error| KernelError::Pin {
            path: base.to_path_buf(),
            error,
        })?;
        let existed = pins.has_maps();
        let mut kernel = Kernel::load_with(max_flows, Some(pins.clone()))?;
        match kernel.layout_mismatch() {
            None => {
                kernel.adopted_maps = existed;
                Ok(kernel)
            }
            Some(why) => {
                tracing::warn!(
                    dir = %pins.root().display(),
                    "pinned maps do not fit this vnetd ({why}): replacing them; their flows \
                     are dropped and traffic stops until the ports are bound again"
                );
                drop(kernel);
                pins.remove_maps().map_err(|error| KernelError::Pin {
                    path: pins.root().to_path_buf(),
                    error,
                })?;
                Kernel::load_with(max_flows, Some(pins))
            }
        }
    }

    fn load_with(max_flows: u32, pins: Option<PinDir>) -> Result<Kernel, KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NotBuilt);
        }
        if max_flows == 0 {
            return Err(KernelError::InvalidMaxFlows);
        }
        raise_memlock_rlimit();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::FLOWS, max_flows);
        if let Some(pins) = &pins {
            for name in maps::ALL {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(|error| {
            if error::is_permission(&error) {
                KernelError::NotPermitted {
                    call: "loading the XDP object (creating its maps)".into(),
                    error: Box::new(error),
                }
            } else {
                KernelError::Load { max_flows, error }
            }
        })?;

        for name in [XDP_PROGRAM, UPCALL_PROGRAM, UNDERLAY_XDP_PROGRAM] {
            program_mut::<Xdp>(&mut ebpf, name)?
                .load()
                .map_err(|e| load_error(name, e))?;
        }
        for name in [TC_PROGRAM, UNDERLAY_PROGRAM] {
            program_mut::<SchedClassifier>(&mut ebpf, name)?
                .load()
                .map_err(|e| load_error(name, e))?;
        }

        // The typed maps own their file descriptors; the program keeps its
        // own references, so taking them out of `Ebpf` changes nothing for it.
        let flows_map = ebpf.take_map(maps::FLOWS).ok_or(KernelError::Missing {
            what: "map",
            name: maps::FLOWS,
        })?;
        let flows_fd = match &flows_map {
            aya::maps::Map::HashMap(data) => {
                use std::os::fd::AsFd;
                data.fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| KernelError::Map {
                        op: "duplicating the flow map's descriptor".into(),
                        map: maps::FLOWS,
                        error: MapError::SyscallError(aya::sys::SyscallError {
                            call: "fcntl(F_DUPFD_CLOEXEC)",
                            io_error: e,
                        }),
                    })?
            }
            _ => {
                return Err(KernelError::Missing {
                    what: "hash map",
                    name: maps::FLOWS,
                })
            }
        };
        let flows = HashMap::try_from(flows_map).map_err(|error| KernelError::MapType {
            map: maps::FLOWS,
            error,
        })?;
        let ifaces = take_map(&mut ebpf, maps::IFACES, HashMap::try_from)?;
        let xsks = take_map(&mut ebpf, maps::XSKS, XskMap::try_from)?;
        let stats = take_map(&mut ebpf, maps::STATS, PerCpuArray::try_from)?;
        let upcall = take_map(&mut ebpf, maps::UPCALL, Array::try_from)?;
        let upcall_budgets = take_map(&mut ebpf, maps::UPCALL_BUDGETS, HashMap::try_from)?;
        let tunnel_ports = take_map(&mut ebpf, maps::TUNNEL_PORTS, HashMap::try_from)?;
        let tunnel_peers = take_map(&mut ebpf, maps::TUNNEL_PEERS, HashMap::try_from)?;
        let tunnel_local = take_map(&mut ebpf, maps::TUNNEL_LOCAL, HashMap::try_from)?;
        Ok(Kernel {
            ebpf,
            flows,
            flows_fd: flows_fd.into(),
            flow_values: Vec::new(),
            write_order: WriteOrder::default(),
            ifaces,
            xsks,
            stats,
            upcall,
            upcall_budgets,
            tunnel_ports,
            tunnel_peers,
            tunnel_local,
            max_flows,
            attached: BTreeMap::new(),
            pins,
            adopted_maps: false,
        })
    }

    /// Why the (reused) maps do not have the size and types this build
    /// needs, if they do not.
    fn layout_mismatch(&self) -> Option<String> {
        let info = self
            .flows_fd
            .try_clone()
            .ok()
            .and_then(|fd| MapData::from_fd(fd).ok())
            .and_then(|map| map.info().ok());
        let Some(info) = info else {
            return Some("the flow map's info cannot be read".into());
        };
        let have = (info.key_size(), info.value_size(), info.max_entries());
        let want = (
            std::mem::size_of::<FlowKey>() as u32,
            std::mem::size_of::<FlowValue>() as u32,
            self.max_flows,
        );
        (have != want).then(|| {
            format!(
                "flows: key {} B, value {} B, {} entries; this vnetd: {} B, {} B, {} entries                  (--max-flows)",
                have.0, have.1, have.2, want.0, want.1, want.2
            )
        })
    }

    /// The maps were pinned by an earlier vnetd and are reused: the flows
    /// in them are its, for [`crate::runtime`] to adopt or flush.
    pub fn adopted_maps(&self) -> bool {
        self.adopted_maps
    }

    /// Where the maps and links are pinned, if they are.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(PinDir::root)
    }

    /// Capacity of the flow table, as given to [`Kernel::load`].
    pub fn max_flows(&self) -> u32 {
        self.max_flows
    }

    fn program_ref(&self) -> Result<&Xdp, KernelError> {
        self.ebpf
            .program(XDP_PROGRAM)
            .ok_or(KernelError::Missing {
                what: "program",
                name: XDP_PROGRAM,
            })?
            .try_into()
            .map_err(|error| KernelError::ProgramLoad {
                program: XDP_PROGRAM,
                error,
            })
    }

    /// Tells the tc program where first packets go: the upcall pair's near
    /// end (`vnet_common::upcall`), or nowhere (0: they are dropped, counted
    /// `tc_no_upcall`).
    pub fn set_upcall_ifindex(&mut self, ifindex: u32) -> Result<(), KernelError> {
        self.upcall
            .set(0, ifindex, 0)
            .map_err(|error| KernelError::Map {
                op: format!("setting the upcall interface (ifindex {ifindex})"),
                map: maps::UPCALL,
                error,
            })
    }

    /// Gives skb port `ifindex` a full bucket of first packets (see
    /// `UpcallBudget`); `per_sec` 0 lifts its limit.
    pub fn set_upcall_budget(
        &mut self,
        ifindex: u32,
        per_sec: u32,
        burst: u32,
    ) -> Result<(), KernelError> {
        self.upcall_budgets
            .insert(ifindex, UpcallBudget::full(per_sec, burst), 0)
            .map_err(|error| KernelError::Map {
                op: format!("setting the upcall budget of ifindex {ifindex}"),
                map: maps::UPCALL_BUDGETS,
                error,
            })
    }

    /// Removes the budget of `ifindex`; absent is not an error.
    pub fn remove_upcall_budget(&mut self, ifindex: u32) -> Result<(), KernelError> {
        match self.upcall_budgets.remove(&ifindex) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(error) => Err(KernelError::Map {
                op: format!("removing the upcall budget of ifindex {ifindex}"),
                map: maps::UPCALL_BUDGETS,
                error,
            }),
        }
    }

    /// Delivers VXLAN frames with `vni` (from a peer, to a local tunnel
    /// address) to the local port `port` (see `vnet_common::tunnel`).
    /// Replaces an earlier entry of `vni`. `vni` must be a 24-bit VNI
    /// other than the flow-state one, and the port an interface.
    pub fn set_tunnel_port(&mut self, vni: u32, port: TunnelPort) -> Result<(), KernelError> {
        check_vni(vni)?;
        if port.ifindex == 0 {
            return Err(KernelError::InvalidTunnelPort {
                vni,
                why: "ifindex 0 names no interface",
            });
        }
        let known = tunnel::PORT_REDIRECT_PEER | tunnel::PORT_XDP;
        if port.flags & !known != 0 {
            return Err(KernelError::InvalidTunnelPort {
                vni,
                why: "unknown flags (only tunnel::PORT_REDIRECT_PEER and tunnel::PORT_XDP exist)",
            });
        }
        self.tunnel_ports
            .insert(vni, port, 0)
            .map_err(|error| KernelError::Map {
                op: format!(
                    "setting VNI {vni} to ifindex {} (flags {:#x})",
                    port.ifindex, port.flags
                ),
                map: maps::TUNNEL_PORTS,
                error,
            })
    }

    /// Stops delivering `vni`; absent is not an error.
    pub fn remove_tunnel_port(&mut self, vni: u32) -> Result<(), KernelError> {
        match self.tunnel_ports.remove(&vni) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(error) => Err(KernelError::Map {
                op: format!("removing VNI {vni}"),
                map: maps::TUNNEL_PORTS,
                error,
            }),
        }
    }

    /// The local port of `vni`, if set.
    pub fn tunnel_port(&self, vni: u32) -> Result<Option<TunnelPort>, KernelError> {
        match self.tunnel_ports.get(&vni, 0) {
            Ok(p) => Ok(Some(p)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(KernelError::Map {
                op: format!("looking up VNI {vni}"),
                map: maps::TUNNEL_PORTS,
                error,
            }),
        }
    }

    /// Accepts VXLAN from `addr`, another host's tunnel address; `id` is
    /// the caller's (the kernel only looks at the key).
    pub fn set_tunnel_peer(&mut self, addr: Ipv4Addr, id: u32) -> Result<(), KernelError> {
        self.tunnel_peers
            .insert(addr.octets(), id, 0)
            .map_err(|error| KernelError::Map {
                op: format!("adding tunnel peer {addr}"),
                map: maps::TUNNEL_PEERS,
                error,
            })
    }

    /// Stops accepting VXLAN from `addr`; absent is not an error.
    pub fn remove_tunnel_peer(&mut self, addr: Ipv4Addr) -> Result<(), KernelError> {
        match self.tunnel_peers.remove(&addr.octets()) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(error) => Err(KernelError::Map {
                op: format!("removing tunnel peer {addr}"),
                map: maps::TUNNEL_PEERS,
                error,
            }),
        }
    }

    /// Makes `addr` one of this host's tunnel addresses: VXLAN to it is
    /// decapsulated, VXLAN to any other address is the host's own.
    pub fn set_tunnel_local(&mut self, addr: Ipv4Addr) -> Result<(), KernelError> {
        self.tunnel_local
            .insert(addr.octets(), 0, 0)
            .map_err(|error| KernelError::Map {
                op: format!("adding local tunnel address {addr}"),
                map: maps::TUNNEL_LOCAL,
                error,
            })
    }

    /// Removes a local tunnel address; absent is not an error.
    pub fn remove_tunnel_local(&mut self, addr: Ipv4Addr) -> Result<(), KernelError> {
        match self.tunnel_local.remove(&addr.octets()) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(error) => Err(KernelError::Map {
                op: format!("removing local tunnel address {addr}"),
                map: maps::TUNNEL_LOCAL,
                error,
            }),
        }
    }

    /// What the three tunnel maps hold: (VNI → port, peer → id, local →
    /// id). Pinned maps outlive vnetd, so a new one starts from what the
    /// last one wrote, and removes what its topology no longer has (a VNI
    /// of a port deleted since, whose ifindex may now be another tenant's
    /// interface; a host removed since).
    #[allow(clippy::type_complexity)]
    pub fn tunnel_entries(
        &self,
    ) -> Result<
        (
            Vec<(u32, TunnelPort)>,
            Vec<([u8; 4], u32)>,
            Vec<([u8; 4], u32)>,
        ),
        KernelError,
    > {
        let fail = |map: &'static str| {
            move |error| KernelError::Map {
                op: "reading the tunnel maps".to_string(),
                map,
                error,
            }
        };
        let ports = self
            .tunnel_ports
            .iter()
            .collect::<Result<_, _>>()
            .map_err(fail(maps::TUNNEL_PORTS))?;
        let peers = self
            .tunnel_peers
            .iter()
            .collect::<Result<_, _>>()
            .map_err(fail(maps::TUNNEL_PEERS))?;
        let local = self
            .tunnel_local
            .iter()
            .collect::<Result<_, _>>()
            .map_err(fail(maps::TUNNEL_LOCAL))?;
        Ok((ports, peers, local))
    }

    /// Declares the AF_XDP socket slot of interface `ifindex`: misses on it
    /// go to `XSKS[cfg.xsk_slot]`. Without an entry they are dropped.
    pub fn set_iface(&mut self, ifindex: u32, cfg: IfaceConfig) -> Result<(), KernelError> {
        self.ifaces
            .insert(ifindex, cfg, 0)
            .map_err(|error| KernelError::Map {
                op: format!("setting ifindex {ifindex} (xsk slot {})", cfg.xsk_slot),
                map: maps::IFACES,
                error,
            })
    }

    /// Removes the entry of `ifindex`; absent is not an error.
    pub fn remove_iface(&mut self, ifindex: u32) -> Result<(), KernelError> {
        match self.ifaces.remove(&ifindex) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(error) => Err(KernelError::Map {
                op: format!("removing ifindex {ifindex}"),
                map: maps::IFACES,
                error,
            }),
        }
    }

    /// Puts AF_XDP socket `fd` in XSKMAP slot `slot` (`0..MAX_IFACES`).
    /// The map holds its own reference to the socket.
    pub fn set_xsk(&mut self, slot: u32, fd: impl AsRawFd) -> Result<(), KernelError> {
        self.xsks
            .set(slot, fd.as_raw_fd(), 0)
            .map_err(|error| KernelError::Map {
                op: format!("setting slot {slot}"),
                map: maps::XSKS,
                error,
            })
    }

    /// Empties XSKMAP slot `slot`; an empty slot is not an error.
    pub fn clear_xsk(&mut self, slot: u32) -> Result<(), KernelError> {
        match self.xsks.unset(slot) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(error) => Err(KernelError::Map {
                op: format!("clearing slot {slot}"),
                map: maps::XSKS,
                error,
            }),
        }
    }

    /// Installs (or replaces) the flow `key` with `actions`; its counters
    /// start at zero. A full table gives [`KernelError::FlowTableFull`] and
    /// leaves every other flow as it was.
    pub fn insert_flow(&mut self, key: &FlowKey, actions: &FlowActions) -> Result<(), KernelError> {
        let value = FlowValue {
            actions: *actions,
            ..FlowValue::default()
        };
        let _order = self.write_order.lock();
        self.flows
            .insert(key, value, 0)
            .map_err(|error| match os_error(&error) {
                // A non-preallocated hash map refuses a new key at
                // max_entries with E2BIG (replacing a key still works).
                Some(libc::E2BIG) => KernelError::FlowTableFull {
                    max_flows: self.max_flows,
                },
                _ => KernelError::Map {
                    op: format!("inserting flow {key:?}"),
                    map: maps::FLOWS,
                    error,
                },
            })
    }

    /// Installs (or replaces) `keys[i]` with `actions[i]`, in order, in one
    /// `BPF_MAP_UPDATE_BATCH` ([`batch::update`]); on a kernel without
    /// batch updates, one by one. Stops at the first flow that fails:
    /// returns how many were written and that one's error (a full table is
    /// [`KernelError::FlowTableFull`], the flows before it written and
    /// every other flow as it was).
    pub fn insert_flows(
        &mut self,
        keys: &[FlowKey],
        actions: &[FlowActions],
    ) -> (usize, Option<KernelError>) {
        let _order = self.write_order.lock();
        flow_writer::write_flows(
            &self.flows_fd,
            &mut self.flow_values,
            keys,
            actions,
            self.max_flows,
        )
    }

    /// A handle for writing batches of flows from a worker that does not
    /// hold this `Kernel` ([`flow_writer`]).
    pub fn flow_writer(&self) -> FlowWriter {
        FlowWriter::new(
            self.flows_fd.clone(),
            self.write_order.clone(),
            self.max_flows,
        )
    }

    /// Removes the flow `key`; `false` if there was none.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<bool, KernelError> {
        let _order = self.write_order.lock();
        match self.flows.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_enoent(&e) => Ok(false),
            Err(error) => Err(KernelError::Map {
                op: format!("removing flow {key:?}"),
                map: maps::FLOWS,
                error,
            }),
        }
    }

    /// The flow `key` with its counters, if installed.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, KernelError> {
        match self.flows.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(KernelError::Map {
                op: format!("looking up flow {key:?}"),
                map: maps::FLOWS,
                error,
            }),
        }
    }

    /// Every installed flow with its counters, read in batches of
    /// [`batch::BATCH`] (a walk of the keys on kernels without batch
    /// operations). A flow removed meanwhile may be missing.
    pub fn all_flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, KernelError> {
        use std::os::fd::AsFd;
        let mut out = Vec::new();
        match batch::for_each(self.flows_fd.as_fd(), |k: &FlowKey, v: &FlowValue| {
            out.push((*k, *v))
        }) {
            Ok(_) => return Ok(out),
            Err(e) if batch::unsupported(&e) => {}
            Err(e) => tracing::debug!(error = %e, "batch read of the flows failed: walking them"),
        }
        let mut out = Vec::new();
        for key in self.flow_keys()? {
            if let Some(v) = self.flow(&key)? {
                out.push((key, v));
            }
        }
        Ok(out)
    }

    /// Keys of all installed flows. Walking a hash map that changes
    /// meanwhile (the kernel never adds flows, but userspace may remove some)
    /// can repeat keys or miss ones: callers reconcile, e.g. in a set.
    pub fn flow_keys(&self) -> Result<Vec<FlowKey>, KernelError> {
        self.flows
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| KernelError::Map {
                op: "listing flows".into(),
                map: maps::FLOWS,
                error,
            })
    }

    /// The program's counters summed over CPUs, indexed by `Reason as usize`.
    pub fn stats(&self) -> Result<[u64; XDP_STATS], KernelError> {
        let mut out = [0u64; XDP_STATS];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self
                .stats
                .get(&(i as u32), 0)
                .map_err(|error| KernelError::Map {
                    op: format!("reading counter {i} ({})", Reason::ALL[i].name()),
                    map: maps::STATS,
                    error,
                })?;
            *slot = per_cpu.iter().sum();
        }
        // The programs count outcomes only; what entered is their sum.
        let sum = |c: &[u64; XDP_STATS], outcomes: &[Reason]| {
            outcomes.iter().map(|&r| c[r as usize]).sum::<u64>()
        };
        out[Reason::XdpRx as usize] = sum(&out, &Reason::XDP_OUTCOMES);
        out[Reason::TcRx as usize] = sum(&out, &Reason::TC_OUTCOMES);
        out[Reason::UnderlayRx as usize] = sum(&out, &Reason::UNDERLAY_OUTCOMES);
        Ok(out)
    }

    /// Runs the program on `frame` with `BPF_PROG_TEST_RUN`, as if received
    /// on `ifindex`, `repeat` times (0 counts as 1), and returns the verdict
    /// and output frame of the last run and the average time of one run.
    ///
    /// - The run uses the real maps: flows are looked up and their counters
    ///   updated, STATS counted, FRAGS filled.
    /// - `ifindex` must be an existing interface in this network namespace
    ///   (the kernel resolves it, ENODEV otherwise); `1` (lo) always is, and
    ///   flow keys then carry ifindex 1. `0` is accepted too.
    /// - Verdicts are returned, not carried out: XDP_REDIRECT sends nothing.
    /// - With `repeat > 1` every run sees the frame as the previous run left
    ///   it (the kernel does not reset it), so benchmark flows that rewrite
    ///   nothing, or whose rewrites leave the key unchanged.
    /// - `frame` must be `MIN_TEST_FRAME..=MAX_TEST_JUMBO_FRAME` bytes;
    ///   beyond `MAX_TEST_FRAME` it is a multi-buffer frame (see there).
    pub fn test_run(
        &self,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<TestRun, KernelError> {
        if !(MIN_TEST_FRAME..=MAX_TEST_JUMBO_FRAME).contains(&frame.len()) {
            return Err(KernelError::TestFrameSize {
                program: XDP_PROGRAM,
                len: frame.len(),
                max: MAX_TEST_JUMBO_FRAME,
            });
        }
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex }: the kernel wants data = 0 (no
        // metadata), data_end = the frame length, egress 0.
        let program = self.program_ref()?;
        run_test(
            XDP_PROGRAM,
            frame,
            ifindex,
            &xdp_md(frame, ifindex),
            repeat,
            |o| program.test_run(o),
        )
    }
    /// Runs the tc (skb) executor on `frame` with `BPF_PROG_TEST_RUN`, as if
    /// received at tc ingress of `ifindex` (`1`, lo, or an interface of the
    /// caller's namespace; the kernel builds the skb on it). `gso_size`, when
    /// not 0, makes it a GSO frame of segments of that size (what the flow's
    /// MTU check is on). The verdict is the tc action (`TC_ACT_REDIRECT` = 7,
    /// `TC_ACT_SHOT` = 2), returned, not carried out; the skb is a plain one
    /// (`CHECKSUM_NONE`, no VLAN tag in its metadata). `frame` is
    /// `MIN_TEST_FRAME..=MAX_TEST_FRAME` bytes.
    pub fn test_run_tc(
        &mut self,
        frame: &[u8],
        ifindex: u32,
        gso_size: u32,
    ) -> Result<TestRun, KernelError> {
        if !(MIN_TEST_FRAME..=MAX_TEST_FRAME).contains(&frame.len()) {
            return Err(KernelError::TestFrameSize {
                program: TC_PROGRAM,
                len: frame.len(),
                max: MAX_TEST_FRAME,
            });
        }
        // struct __sk_buff (192 bytes): the kernel takes only a few fields
        // from a test run's context, all others must be 0: `ifindex` at 40,
        // `gso_segs` at 164, `gso_size` at 176.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        if gso_size != 0 {
            let segs = (frame.len() as u32).div_ceil(gso_size);
            ctx[164..168].copy_from_slice(&segs.to_ne_bytes());
            ctx[176..180].copy_from_slice(&gso_size.to_ne_bytes());
        }
        let program = program_mut::<SchedClassifier>(&mut self.ebpf, TC_PROGRAM)?;
        run_test(TC_PROGRAM, frame, ifindex, &ctx, 1, |o| program.test_run(o))
    }

    /// Runs the tc VXLAN decapsulator (`UNDERLAY_PROGRAM`) on `frame` as
    /// received at tc ingress of `ifindex`, like [`Kernel::test_run_tc`].
    /// A test run's verdict is `TC_ACT_REDIRECT`, `TC_ACT_SHOT`, or
    /// `TC_ACT_UNSPEC` (-1 as u32: the host's own traffic goes on).
    pub fn test_run_underlay(
        &mut self,
        frame: &[u8],
        ifindex: u32,
    ) -> Result<TestRun, KernelError> {
        if !(MIN_TEST_FRAME..=MAX_TEST_FRAME).contains(&frame.len()) {
            return Err(KernelError::TestFrameSize {
                program: UNDERLAY_PROGRAM,
                len: frame.len(),
                max: MAX_TEST_FRAME,
            });
        }
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let program = program_mut::<SchedClassifier>(&mut self.ebpf, UNDERLAY_PROGRAM)?;
        run_test(UNDERLAY_PROGRAM, frame, ifindex, &ctx, 1, |o| {
            program.test_run(o)
        })
    }

    /// Runs the XDP VXLAN decapsulator (`UNDERLAY_XDP_PROGRAM`) on `frame`
    /// as received on `ifindex`, like [`Kernel::test_run`] (once).
    pub fn test_run_underlay_xdp(
        &self,
        frame: &[u8],
        ifindex: u32,
    ) -> Result<TestRun, KernelError> {
        if !(MIN_TEST_FRAME..=MAX_TEST_FRAME).contains(&frame.len()) {
            return Err(KernelError::TestFrameSize {
                program: UNDERLAY_XDP_PROGRAM,
                len: frame.len(),
                max: MAX_TEST_FRAME,
            });
        }
        let program: &Xdp = self
            .ebpf
            .program(UNDERLAY_XDP_PROGRAM)
            .ok_or(KernelError::Missing {
                what: "program",
                name: UNDERLAY_XDP_PROGRAM,
            })?
            .try_into()
            .map_err(|error| KernelError::ProgramLoad {
                program: UNDERLAY_XDP_PROGRAM,
                error,
            })?;
        run_test(
            UNDERLAY_XDP_PROGRAM,
            frame,
            ifindex,
            &xdp_md(frame, ifindex),
            1,
            |o| program.test_run(o),
        )
    }
}

/// A VNI vnetd may deliver: 24 bits, not the flow-state one.
fn check_vni(vni: u32) -> Result<(), KernelError> {
    if vni > tunnel::MAX_VNI {
        return Err(KernelError::InvalidTunnelPort {
            vni,
            why: "a VNI has 24 bits (at most 16777215)",
        });
    }
    if vni == tunnel::RESERVED_VNI {
        return Err(KernelError::InvalidTunnelPort {
            vni,
            why: "VNI 16777215 (0xFFFFFF) is reserved for flow state",
        });
    }
    Ok(())
}

impl Drop for Kernel {
    /// Detaches what this `Kernel` owns; pinned links stay attached (the
    /// point of pinning them).
    fn drop(&mut self) {
        self.detach_owned();
    }
}

/// The `xdp_md` context of an XDP test run of `frame` received on
/// `ifindex`: { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex }, where the kernel wants data = 0 (no metadata),
/// data_end = the frame length, egress 0.
pub(super) fn xdp_md(frame: &[u8], ifindex: u32) -> Vec<u8> {
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    md.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// One `BPF_PROG_TEST_RUN` of `program` on `frame` with context `ctx`:
/// `run` calls the program with the options; the output buffer has room
/// for what the program may add (a VLAN tag, the upcall header).
pub(super) fn run_test(
    program: &'static str,
    frame: &[u8],
    ifindex: u32,
    ctx: &[u8],
    repeat: u32,
    run: impl FnOnce(TestRunOptions<'_>) -> Result<aya::TestRunResult, aya::programs::ProgramError>,
) -> Result<TestRun, KernelError> {
    let mut out = vec![0u8; frame.len() + 64];
    let result = run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(ctx),
        repeat: repeat.max(1),
        ..TestRunOptions::default()
    })
    .map_err(|error| KernelError::TestRun {
        program,
        len: frame.len(),
        ifindex,
        error,
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRun {
        action: result.return_value,
        data: out,
        duration_ns: result.duration.as_nanos() as u64,
    })
}

/// Program `name` of `ebpf`, as its type.
fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(KernelError::Missing {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|error| KernelError::ProgramLoad {
            program: name,
            error,
        })
}

fn load_error(program: &'static str, error: aya::programs::ProgramError) -> KernelError {
    if error::is_permission(&error) {
        KernelError::NotPermitted {
            call: format!("loading program {program}"),
            error: Box::new(error),
        }
    } else {
        KernelError::ProgramLoad { program, error }
    }
}

/// Takes map `name` out of `ebpf` as the typed map `convert` makes of it.
pub(super) fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<M, MapError>,
) -> Result<M, KernelError> {
    let map = ebpf
        .take_map(name)
        .ok_or(KernelError::Missing { what: "map", name })?;
    convert(map).map_err(|error| KernelError::MapType { map: name, error })
}

pub(super) fn ifindex(ifname: &str) -> Option<u32> {
    // A name with a NUL byte cannot exist (and would make CString fail).
    let c = CString::new(ifname).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn os_error(e: &MapError) -> Option<i32> {
    error::io_error(e).and_then(std::io::Error::raw_os_error)
}

fn is_enoent(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound | MapError::ElementNotFound)
        || os_error(e) == Some(libc::ENOENT)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones (this
/// project's 6.x) use memory cgroups. Raising the limit costs nothing and
/// keeps older kernels working; failure (no CAP_SYS_RESOURCE) is not fatal,
/// the map creation then reports the real error.
fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "setrlimit(RLIMIT_MEMLOCK, unlimited) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}
