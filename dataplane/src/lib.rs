//! The vnet dataplane: what forwards packets on a host. `vnetd` (control/vnetd)
//! joins it to the store and the API.
//!
//! - [`packet`]: frame parsing (mirroring the XDP parser), flow keys,
//!   builders, checksums.
//! - [`sim`]: the simulation of the virtual topology (pure: frame in,
//!   [`sim::Decision`] out), with its state tables.
//! - [`flows`]: the userspace side of the flow table: tag index and expiry.
//! - [`kernel`]: the XDP loader and the kernel maps.
//! - [`lease_file`]: the DHCP leases in the state directory.
//! - [`afxdp`]: AF_XDP sockets.
//! - [`runtime`]: the worker loop joining them.
//! - [`veth`]: preparing veth peers for native XDP redirects.
//! - [`binding`]: binding ports to interfaces (XDP, socket, maps).
//! - [`ports`]: the registry of bound ports (by position, port, ifindex).
//! - [`upcalls`]: each port's budget of first packets per second.
//! - [`link_watch`]: netlink link events: interfaces appearing and vanishing.
//! - [`reconfig`]: which flows a topology change touches.
//! - [`tunnel`]: sending to ports on other hosts (VXLAN over the underlay).
//! - [`views`]: text forms of traces, flow keys and actions.
//! - [`metrics`]: the Prometheus endpoint (`vnetd --metrics`).
pub mod afxdp;
pub mod binding;
pub mod flows;
pub mod hash;
pub mod kernel;
pub mod lease_file;
pub mod link_watch;
pub mod metrics;
pub mod packet;
pub mod ports;
pub mod reconfig;
pub mod runtime;
pub mod sim;
pub mod tunnel;
pub mod upcall_path;
pub mod upcalls;
pub mod veth;
pub mod views;
