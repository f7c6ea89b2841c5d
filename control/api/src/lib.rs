//! The gRPC topology API (`vnet.v1.Vnet`, control/proto/vnet.proto).
//!
//! Protobuf types stay inside this crate: topologies travel as documents in
//! the file format ([`documents`]), the views are converted at the edge
//! ([`views`]), and the client ([`Client`]) hands model types back. The server ([`serve`]) listens on a Unix socket
//! that only root can use, and on TCP only when asked, then with a bearer
//! token. It also serves gRPC reflection and the standard health service.

mod client;
mod documents;
mod latency;
mod listen;
mod server;
mod views;
mod watch;

mod pb {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("vnet.v1");
}

/// The compiled .proto, for gRPC reflection.
const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vnet_descriptor.bin"));

pub use client::{ApplyOutcome, Client, ClientError, Health, HostStatus, Listed, Target, Watch};
pub use documents::DocumentError;
pub use latency::request_latency;
pub use listen::{serve, serve_timed, ApiConfig, ApiError, Listeners};
pub use server::{VnetService, APPLY_WAIT};
pub use views::FieldError;
/// What a watch streams: the store's own event type.
pub use vnet_store::{Delta, Event};
