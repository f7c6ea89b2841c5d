//! Attaching the programs to interfaces, owned or pinned.
//!
//! An interface has two places a program can run, and vnet uses each once:
//! the XDP hook (the XDP flow executor, or on the upcall pair's far end the
//! upcall program) and tc ingress (the skb flow executor, attached through
//! tcx, the kernel's BPF links for tc). Attached pinned, a link an earlier
//! vnetd left for the same interface, ifindex and hook gets this process's
//! program swapped in atomically (`BPF_LINK_UPDATE`): traffic never stops.
//!
//! The underlay interface (`vnetd --underlay`, not a port: it carries the
//! host's own traffic too) gets the VXLAN decapsulators in both places:
//! `UNDERLAY_XDP_PROGRAM` in its XDP hook and `UNDERLAY_PROGRAM` at tc
//! ingress ([`Kernel::attach_underlay`]).

use std::fmt;
use std::path::{Path, PathBuf};

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
    xdp::{XdpLink, XdpLinkId},
    LinkOrder, SchedClassifier, TcAttachType, Xdp,
};
use vnet_common::{
    TC_PROGRAM, UNDERLAY_PROGRAM, UNDERLAY_XDP_PROGRAM, UPCALL_PROGRAM, XDP_PROGRAM,
};

use super::{error, ifindex, pin, AttachMode, Kernel, KernelError};

/// A program and where it runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// The XDP flow executor (`XDP_PROGRAM`).
    Xdp(AttachMode),
    /// The skb flow executor (`TC_PROGRAM`) at tc ingress.
    Tc,
    /// The upcall program (`UPCALL_PROGRAM`), native XDP on the upcall
    /// pair's far end.
    Upcall,
    /// The tc VXLAN decapsulator (`UNDERLAY_PROGRAM`) at tc ingress of the
    /// underlay interface.
    Underlay,
    /// The XDP VXLAN decapsulator (`UNDERLAY_XDP_PROGRAM`) on the underlay
    /// interface.
    UnderlayXdp(AttachMode),
}

/// The two hooks of an interface: at most one program in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Slot {
    Xdp,
    Tc,
}

impl Hook {
    pub(super) fn slot(self) -> Slot {
        match self {
            Hook::Xdp(_) | Hook::Upcall | Hook::UnderlayXdp(_) => Slot::Xdp,
            Hook::Tc | Hook::Underlay => Slot::Tc,
        }
    }

    fn program(self) -> &'static str {
        match self {
            Hook::Xdp(_) => XDP_PROGRAM,
            Hook::Tc => TC_PROGRAM,
            Hook::Upcall => UPCALL_PROGRAM,
            Hook::Underlay => UNDERLAY_PROGRAM,
            Hook::UnderlayXdp(_) => UNDERLAY_XDP_PROGRAM,
        }
    }

    /// The hook's part of a link pin's name (`pin::PinDir::link`).
    pub(super) fn pin_name(self) -> &'static str {
        match self {
            Hook::Xdp(AttachMode::Native) => "native",
            Hook::Xdp(AttachMode::Skb) => "skb",
            Hook::Tc => "tc",
            Hook::Upcall => "upcall",
            Hook::Underlay => "underlay-tc",
            Hook::UnderlayXdp(AttachMode::Native) => "underlay-native",
            Hook::UnderlayXdp(AttachMode::Skb) => "underlay-skb",
        }
    }

    /// The slot a pin name's hook part belongs to.
    pub(super) fn slot_of_pin_name(name: &str) -> Option<Slot> {
        match name {
            "native" | "skb" | "upcall" | "underlay-native" | "underlay-skb" => Some(Slot::Xdp),
            "tc" | "underlay-tc" => Some(Slot::Tc),
            _ => None,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Xdp(mode) => write!(f, "XDP program {XDP_PROGRAM} ({mode} mode)"),
            Hook::Tc => write!(f, "tc program {TC_PROGRAM} (tcx ingress)"),
            Hook::Upcall => write!(f, "XDP program {UPCALL_PROGRAM} (native mode)"),
            Hook::Underlay => write!(f, "tc program {UNDERLAY_PROGRAM} (tcx ingress)"),
            Hook::UnderlayXdp(mode) => {
                write!(f, "XDP program {UNDERLAY_XDP_PROGRAM} ({mode} mode)")
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Attachment {
    pub(super) ifindex: u32,
    pub(super) hook: Hook,
    pub(super) link: AttachedLink,
}

#[derive(Debug)]
pub(super) enum AttachedLink {
    /// Owned by the program: detached when the `Kernel` goes.
    Owned(LinkId),
    /// Pinned at this path: stays attached after vnetd exits, until the
    /// pin is removed.
    Pinned(PathBuf),
}

#[derive(Debug)]
pub(super) enum LinkId {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

impl Kernel {
    /// Attaches the XDP flow executor to `ifname` and returns its ifindex.
    /// Attaching again replaces the attachment (so a mode change is one
    /// call).
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<u32, KernelError> {
        self.attach_hook(ifname, Hook::Xdp(mode))
    }

    /// Attaches the skb flow executor at tc ingress of `ifname`.
    pub fn attach_tc(&mut self, ifname: &str) -> Result<u32, KernelError> {
        self.attach_hook(ifname, Hook::Tc)
    }

    /// Attaches the upcall program to the upcall pair's far end.
    pub fn attach_upcall(&mut self, ifname: &str) -> Result<u32, KernelError> {
        self.attach_hook(ifname, Hook::Upcall)
    }

    /// Attaches the VXLAN decapsulators to the underlay interface `ifname`:
    /// the tc one at tc ingress, then (with `xdp`) the XDP one in that
    /// mode. Either all asked for are attached or, on an error (which names
    /// the interface and the program), none that this call attached. Attaching again replaces
    /// them (a mode change is one call); pinned (`load_pinned`), a vnetd
    /// restart swaps its programs into the links.
    ///
    /// `xdp`: the mode of the XDP decapsulator, or `None` for the tc one
    /// alone (a veth underlay: an XDP program on a veth turns off GSO on
    /// its peer, which would then segment every tunnel super-frame).
    pub fn attach_underlay(
        &mut self,
        ifname: &str,
        xdp: Option<AttachMode>,
    ) -> Result<u32, KernelError> {
        let ifindex = self.attach_hook(ifname, Hook::Underlay)?;
        let Some(mode) = xdp else {
            return Ok(ifindex);
        };
        if let Err(e) = self.attach_hook(ifname, Hook::UnderlayXdp(mode)) {
            if let Err(undo) = self.detach_slot(ifname, Slot::Tc) {
                tracing::warn!("{undo}");
            }
            return Err(e);
        }
        Ok(ifindex)
    }

    /// Detaches the VXLAN decapsulators from `ifname` (both hooks; one
    /// already gone is not an error, neither attached is).
    pub fn detach_underlay(&mut self, ifname: &str) -> Result<(), KernelError> {
        let mut found = false;
        for slot in [Slot::Xdp, Slot::Tc] {
            let key = (ifname.to_string(), slot);
            let ours = self
                .attached
                .get(&key)
                .is_some_and(|a| matches!(a.hook, Hook::Underlay | Hook::UnderlayXdp(_)));
            if ours {
                self.detach_slot(ifname, slot)?;
                found = true;
            }
        }
        if found {
            Ok(())
        } else {
            Err(KernelError::NotAttached {
                ifname: ifname.to_string(),
            })
        }
    }

    /// Detaches whatever XDP program this `Kernel` attached to `ifname`.
    pub fn detach(&mut self, ifname: &str) -> Result<(), KernelError> {
        self.detach_slot(ifname, Slot::Xdp)
    }

    /// Detaches the tc program from `ifname`.
    pub fn detach_tc(&mut self, ifname: &str) -> Result<(), KernelError> {
        self.detach_slot(ifname, Slot::Tc)
    }

    /// Interfaces this `Kernel` attached to, with their ifindex and hook.
    pub fn attached(&self) -> impl Iterator<Item = (&str, u32, Hook)> {
        self.attached
            .iter()
            .map(|((name, _), a)| (name.as_str(), a.ifindex, a.hook))
    }

    fn attach_hook(&mut self, ifname: &str, hook: Hook) -> Result<u32, KernelError> {
        let ifindex = ifindex(ifname).ok_or_else(|| KernelError::UnknownInterface {
            ifname: ifname.to_string(),
        })?;
        let key = (ifname.to_string(), hook.slot());
        if self.attached.contains_key(&key) {
            self.detach_slot(ifname, hook.slot())?;
        }
        let pin_error = |path: &Path, error: std::io::Error| KernelError::Pin {
            path: path.to_path_buf(),
            error,
        };
        let link = match self.pins.clone() {
            None => {
                let id = self.attach_fresh(ifname, ifindex, hook)?;
                tracing::info!(ifname, ifindex, "attached {hook}");
                AttachedLink::Owned(id)
            }
            Some(pins) => {
                let path = pins.link(ifname, ifindex, hook);
                // Links of this slot of an earlier ifindex (the interface
                // was recreated) or another hook cannot be reused.
                for (stale, slot) in pins.links_of(ifname).map_err(|e| pin_error(&path, e))? {
                    if stale != path && slot == Some(hook.slot()) {
                        pin::remove_pin(&stale).map_err(|e| pin_error(&stale, e))?;
                    }
                }
                let id = match self.adopt_pinned(&path, hook) {
                    Some(id) => {
                        tracing::info!(
                            ifname,
                            ifindex,
                            "took over the pinned link: {hook} swapped in"
                        );
                        id
                    }
                    None => {
                        pin::remove_pin(&path).map_err(|e| pin_error(&path, e))?;
                        let id = self.attach_fresh(ifname, ifindex, hook)?;
                        tracing::info!(ifname, ifindex, "attached {hook} (pinned)");
                        id
                    }
                };
                // The pin, not this process, keeps the link: our descriptor
                // closes here and the program stays attached.
                let fd_link = self.take_fd_link(id, hook, ifname)?;
                if !path.exists() {
                    fd_link.pin(&path).map_err(|e| KernelError::Pin {
                        path: path.clone(),
                        error: std::io::Error::other(error::chain(&e).to_string()),
                    })?;
                }
                AttachedLink::Pinned(path)
            }
        };
        self.attached.insert(
            key,
            Attachment {
                ifindex,
                hook,
                link,
            },
        );
        Ok(ifindex)
    }

    fn attach_error(ifname: &str, hook: Hook, error: aya::programs::ProgramError) -> KernelError {
        if error::is_permission(&error) {
            KernelError::NotPermitted {
                call: format!("attaching {hook} to interface {ifname}"),
                error: Box::new(error),
            }
        } else {
            KernelError::Attach {
                what: format!("{hook} to interface {ifname}"),
                error,
            }
        }
    }

    fn attach_fresh(
        &mut self,
        ifname: &str,
        ifindex: u32,
        hook: Hook,
    ) -> Result<LinkId, KernelError> {
        let fail = |e| Self::attach_error(ifname, hook, e);
        Ok(match hook {
            Hook::Xdp(mode) => LinkId::Xdp(
                self.xdp(XDP_PROGRAM)?
                    .attach_to_if_index(ifindex, mode.xdp_mode())
                    .map_err(fail)?,
            ),
            Hook::Upcall => LinkId::Xdp(
                self.xdp(UPCALL_PROGRAM)?
                    .attach_to_if_index(ifindex, AttachMode::Native.xdp_mode())
                    .map_err(fail)?,
            ),
            Hook::UnderlayXdp(mode) => LinkId::Xdp(
                self.xdp(UNDERLAY_XDP_PROGRAM)?
                    .attach_to_if_index(ifindex, mode.xdp_mode())
                    .map_err(fail)?,
            ),
            // tcx (a BPF link, kernel 6.6+): pinnable, and it neither needs
            // nor touches a clsact qdisc. First, before any tc program
            // someone else attached: tenant frames must meet ours before
            // anything that could pass them to the host stack.
            Hook::Tc | Hook::Underlay => LinkId::Tc(
                self.classifier(hook.program())?
                    .attach_with_options(
                        ifname,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::first()),
                    )
                    .map_err(fail)?,
            ),
        })
    }

    /// Swaps this process's program into the link pinned at `path`, if
    /// there is one that can take it.
    fn adopt_pinned(&mut self, path: &Path, hook: Hook) -> Option<LinkId> {
        let pinned = FdLink::from(PinnedLink::from_pin(path).ok()?);
        let adopted = match hook {
            Hook::Xdp(_) | Hook::Upcall | Hook::UnderlayXdp(_) => {
                let link = XdpLink::try_from(pinned).ok()?;
                self.xdp(hook.program())
                    .ok()?
                    .attach_to_link(link)
                    .map(LinkId::Xdp)
            }
            Hook::Tc | Hook::Underlay => {
                let link = SchedClassifierLink::try_from(pinned).ok()?;
                self.classifier(hook.program())
                    .ok()?
                    .attach_to_link(link)
                    .map(LinkId::Tc)
            }
        };
        match adopted {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(pin = %path.display(), error = %e, "cannot update the pinned link: attaching anew");
                None
            }
        }
    }

    fn take_fd_link(
        &mut self,
        id: LinkId,
        hook: Hook,
        ifname: &str,
    ) -> Result<FdLink, KernelError> {
        let fail = |e| Self::attach_error(ifname, hook, e);
        let not_a_link = |e: aya::programs::links::LinkError| KernelError::Pin {
            path: PathBuf::from(ifname),
            error: std::io::Error::other(format!(
                "this kernel attached {hook} without a BPF link, which cannot be pinned: {e}"
            )),
        };
        match id {
            LinkId::Xdp(id) => {
                let link = self.xdp(hook.program())?.take_link(id).map_err(fail)?;
                FdLink::try_from(link).map_err(not_a_link)
            }
            LinkId::Tc(id) => {
                let link = self
                    .classifier(hook.program())?
                    .take_link(id)
                    .map_err(fail)?;
                FdLink::try_from(link).map_err(not_a_link)
            }
        }
    }

    fn detach_slot(&mut self, ifname: &str, slot: Slot) -> Result<(), KernelError> {
        let attachment = self
            .attached
            .remove(&(ifname.to_string(), slot))
            .ok_or_else(|| KernelError::NotAttached {
                ifname: ifname.to_string(),
            })?;
        let hook = attachment.hook;
        let detach_error = |error| KernelError::Detach {
            ifname: ifname.to_string(),
            error,
        };
        match attachment.link {
            AttachedLink::Owned(LinkId::Xdp(id)) => {
                self.xdp(hook.program())?.detach(id).map_err(detach_error)?
            }
            AttachedLink::Owned(LinkId::Tc(id)) => self
                .classifier(hook.program())?
                .detach(id)
                .map_err(detach_error)?,
            AttachedLink::Pinned(path) => {
                pin::remove_pin(&path).map_err(|error| KernelError::Pin { path, error })?
            }
        }
        tracing::info!(ifname, ifindex = attachment.ifindex, "detached {hook}");
        Ok(())
    }

    /// Unpins the links of interfaces this `Kernel` did not attach to (an
    /// earlier vnetd's, for ports that are gone): their program detaches.
    pub fn release_stale_links(&mut self) {
        let Some(pins) = &self.pins else { return };
        let links = match pins.links() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing pinned links");
                return;
            }
        };
        for (ifname, _, path) in links {
            let ours = self
                .attached
                .values()
                .any(|a| matches!(&a.link, AttachedLink::Pinned(p) if *p == path));
            if !ours {
                tracing::info!(interface = %ifname, pin = %path.display(), "detaching an earlier vnetd's link (no port uses it now)");
                if let Err(e) = pin::remove_pin(&path) {
                    tracing::warn!(pin = %path.display(), error = %e, "unpinning");
                }
            }
        }
    }

    /// Detaches from every interface and removes the pinned maps and links
    /// (`vnetd --detach-on-exit`).
    pub fn detach_all_and_unpin(&mut self) -> Result<(), KernelError> {
        let keys: Vec<(String, Slot)> = self.attached.keys().cloned().collect();
        for (ifname, slot) in keys {
            self.detach_slot(&ifname, slot)?;
        }
        if let Some(pins) = self.pins.take() {
            pins.remove().map_err(|error| KernelError::Pin {
                path: pins.root().to_path_buf(),
                error,
            })?;
            tracing::info!(dir = %pins.root().display(), "removed the pinned maps and links");
        }
        Ok(())
    }

    /// Detaches what this `Kernel` owns (for `Drop`); pinned links stay.
    pub(super) fn detach_owned(&mut self) {
        let owned: Vec<(String, Slot)> = self
            .attached
            .iter()
            .filter(|(_, a)| matches!(a.link, AttachedLink::Owned(_)))
            .map(|(key, _)| key.clone())
            .collect();
        for (ifname, slot) in owned {
            if let Err(e) = self.detach_slot(&ifname, slot) {
                tracing::warn!("{e}");
            }
        }
    }

    pub(super) fn xdp(&mut self, name: &'static str) -> Result<&mut Xdp, KernelError> {
        super::program_mut(&mut self.ebpf, name)
    }

    fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier, KernelError> {
        super::program_mut(&mut self.ebpf, name)
    }
}
