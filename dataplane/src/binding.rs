//! Binding exterior ports to host interfaces: XDP attached, an AF_XDP
//! socket, its XSKMAP slot and the interface's IFACES entry; and undoing all
//! of it. vnetd binds at start-up and the worker binds and unbinds on every
//! topology change.
use crate::afxdp::Xsk;
use crate::kernel::{AttachMode, Kernel};
use crate::runtime::BoundPort;
use crate::sim::PortId;
use crate::veth::{self, PeerOutcome};
use anyhow::Context;
use std::collections::BTreeSet;
use vnet_common::{IfaceConfig, MAX_IFACES};

/// The attach mode chosen at start-up, and the XSKMAP slots in use.
#[derive(Debug)]
pub struct Binder {
    pub mode: AttachMode,
    used: BTreeSet<u32>,
}

impl Binder {
    pub fn new(mode: AttachMode) -> Binder {
        Binder {
            mode,
            used: BTreeSet::new(),
        }
    }

    fn free_slot(&self) -> Option<u32> {
        (0..MAX_IFACES).find(|s| !self.used.contains(s))
    }

    /// Binds `port` to `ifname`. On failure nothing stays attached or set.
    pub fn bind(
        &mut self,
        kernel: &mut Kernel,
        port: PortId,
        ifname: &str,
    ) -> anyhow::Result<BoundPort> {
        if nix::net::if_::if_nametoindex(ifname).is_err() {
            anyhow::bail!("interface {ifname} does not exist");
        }
        let slot = self.free_slot().with_context(|| {
            format!("no free socket slot for {ifname} (at most {MAX_IFACES} interfaces)")
        })?;
        // A veth added while running needs its peer prepared like the ones
        // bound at start-up, or native redirects into it are lost.
        if self.mode == AttachMode::Native {
            match veth::prepare_peer(ifname) {
                PeerOutcome::NotVeth => {}
                PeerOutcome::Prepared(p) => tracing::info!(
                    interface = %ifname,
                    peer = %p.peer,
                    "veth peer: enabled GRO and turned tx checksum offload off"
                ),
                PeerOutcome::Unprepared(why) => tracing::warn!(
                    interface = %ifname,
                    "veth peer not prepared ({why}): native XDP redirects into {ifname} may be lost"
                ),
            }
        }
        let ifindex = match kernel.attach(ifname, self.mode) {
            // Native XDP takes no frame larger than a page on veth (ERANGE
            // for a jumbo MTU): such an interface runs the program in SKB
            // mode, which takes any MTU. Flow hits of any size are then
            // forwarded; misses too large for a socket are counted
            // (`xdp_too_big`).
            Err(e) if self.mode == AttachMode::Native && e.raw_os_error() == Some(libc::ERANGE) => {
                tracing::warn!(
                    interface = %ifname,
                    "its MTU is too large for native XDP; attaching in SKB mode instead"
                );
                kernel.attach(ifname, AttachMode::Skb)?
            }
            other => other?,
        };
        let undo = |kernel: &mut Kernel| {
            let _ = kernel.clear_xsk(slot);
            let _ = kernel.detach(ifname);
        };
        let result = (|| {
            let xsk = Xsk::bind(ifname)?;
            kernel.set_xsk(slot, xsk.fd())?;
            kernel.set_iface(
                ifindex,
                IfaceConfig {
                    xsk_slot: slot,
                    _pad: 0,
                },
            )?;
            anyhow::Ok(xsk)
        })();
        match result {
            Ok(xsk) => {
                self.used.insert(slot);
                Ok(BoundPort::new(port, ifindex, xsk, slot))
            }
            Err(e) => {
                undo(kernel);
                Err(e)
            }
        }
    }

    /// Unbinds: the IFACES entry first (misses stop going to the socket),
    /// then the slot, then XDP. Errors are logged: the interface may be
    /// gone already.
    pub fn unbind(&mut self, kernel: &mut Kernel, bound: BoundPort) {
        let ifname = bound.xsk.ifname.clone();
        if let Err(e) = kernel.remove_iface(bound.ifindex) {
            tracing::warn!(interface = %ifname, error = %e, "removing the interface entry");
        }
        if let Err(e) = kernel.clear_xsk(bound.slot) {
            tracing::warn!(interface = %ifname, error = %e, "clearing the socket slot");
        }
        if let Err(e) = kernel.detach(&ifname) {
            tracing::warn!(interface = %ifname, error = %e, "detaching XDP");
        }
        self.used.remove(&bound.slot);
        tracing::info!(interface = %ifname, "unbound");
    }
}
