#![recursion_limit = "256"]
//! MidoNet's REST API (`/midonet-api`) served as a view of vnet's topology:
//! `midonet-cli`, the `midonetclient` Python API and CloudStack's MidoNet
//! provider drive vnet unchanged.
//!
//! Reads answer from the store's current revision; every write is one
//! transaction on the same [`vnet_store::Store`] the gRPC API uses, so the
//! same validation applies (its errors come back as MidoNet's 400 with
//! `violations`), changes are visible at once through `vnetctl get`, and
//! gRPC changes through REST. MidoNet concepts vnet lacks are mapped where
//! vnet has an equivalent and refused with 400 where it has none; the
//! mapping is docs/MIDONET.md.
//!
//! Modules: [`server`] (HTTP, authentication, negotiation), [`conn`]
//! (connection bounds), [`routes`] (the
//! endpoint table), one module per resource family ([`devices`],
//! [`chains`], [`dhcp`], [`groups`], [`host`]), and the shared pieces:
//! [`ids`] (UUIDs of named objects), [`index`] (id → object), [`media`]
//! (media types of both client generations), [`input`] (lenient field
//! readers), [`error`] (MidoNet's error JSON), [`view`].

pub mod chains;
pub mod conn;
pub mod devices;
pub mod dhcp;
pub mod error;
pub mod groups;
pub mod host;
pub mod ids;
pub mod index;
pub mod input;
pub mod media;
pub mod routes;
pub mod server;
pub mod view;

pub use host::{HostInfo, DEFAULT_HOST_ID_FILE};
pub use server::{bind, read_token, Ctx, Server, ServerError, PREFIX};
