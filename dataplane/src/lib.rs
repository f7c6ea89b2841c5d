//! The vnet dataplane: everything `vnetd` runs.
//!
//! - [`packet`]: zero-copy views over frames, builders, checksums, flow keys.
//! - [`sim`]: the simulation of the virtual topology (pure: packet in,
//!   [`sim::Decision`] out), with its state tables.
//! - [`flows`]: the userspace side of the flow table: tag index and expiry.
//! - [`kernel`]: the XDP loader and the kernel maps.
//! - [`afxdp`]: AF_XDP sockets and the worker loop.
pub mod kernel;
