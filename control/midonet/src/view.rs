//! What every resource needs to answer: the topology read, the index of its
//! ids, the base URI answers are built on (absolute: httplib2 needs them),
//! the host, and the client's generation.

use axum::http::StatusCode;
use serde_json::Value;
use vnet_model::model::Topology;

use crate::host::HostInfo;
use crate::ids::Uuid;
use crate::index::Index;

pub struct View<'a> {
    pub t: &'a Topology,
    pub idx: Index,
    /// `http://host:port/midonet-api`, no trailing slash.
    pub base: &'a str,
    pub host: &'a HostInfo,
    pub legacy: bool,
}

impl<'a> View<'a> {
    pub fn new(t: &'a Topology, base: &'a str, host: &'a HostInfo, legacy: bool) -> View<'a> {
        View {
            t,
            idx: Index::new(t),
            base,
            host,
            legacy,
        }
    }

    pub fn uri(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A chain's id, or null.
    pub fn chain_id(&self, name: &Option<String>) -> Value {
        match name {
            Some(n) => Value::String(crate::ids::chain(n).to_string()),
            None => Value::Null,
        }
    }
}

/// An answer: status, JSON body and its default media type, and where a
/// created object is.
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    /// `Bridge-v4`, `collection.Bridge-v4`: used when the client asked for
    /// no vendor type.
    pub media: &'static str,
    pub location: Option<String>,
}

impl Reply {
    pub fn ok(media: &'static str, body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Some(body),
            media,
            location: None,
        }
    }

    pub fn created(media: &'static str, location: String) -> Reply {
        Reply {
            status: StatusCode::CREATED,
            body: None,
            media,
            location: Some(location),
        }
    }

    pub fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: None,
            media: "",
            location: None,
        }
    }
}

/// `Some(id)` as a JSON string, or null.
pub fn id_or_null(id: Option<Uuid>) -> Value {
    id.map_or(Value::Null, |i| Value::String(i.to_string()))
}
