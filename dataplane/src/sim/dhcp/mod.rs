//! DHCP served by the bridge (SEMANTICS.md "DHCP"): the server itself,
//! knowing nothing of the walk or the snapshot. The bridge's stage that
//! hands it requests is [`super::dhcp_stage`].
//!
//! - [`message`]: the DHCP message on the wire.
//! - [`config`]: a bridge's subnets compiled for the server.
//! - [`leases`]: the lease table (bounds, expiry, counters).
//! - [`server`]: the state machine, request in, reply out.
pub mod config;
pub mod leases;
pub mod message;
pub mod server;

pub use config::{server_mac, Config};
pub use leases::Leases;
pub use message::{Message, MessageType};
pub use server::NoReply;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// The DHCP server's state: the leases and what it answered.
#[derive(Debug, Default, Clone)]
pub struct DhcpState {
    pub leases: Leases,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    /// Requests for the server that got no reply (RELEASE, DECLINE, unknown
    /// clients, exhausted pools, ...).
    pub unanswered: u64,
}
