//! The topology on the wire: documents in the topology file format.
//!
//! The serde model of `vnet-model` is the one description of a topology;
//! gRPC carries its text (`pb::Document`) instead of a protobuf copy of
//! every field. Requests are parsed by the file parser itself
//! ([`vnet_model::parse_str`]: the same size and depth limits, the same
//! errors naming line, column and field), answers are JSON. A single object
//! travels as a topology document that holds only that object, so that it
//! reads exactly as it would in a file.

use super::pb;
use vnet_model::objects::{Object, ObjectKind};
use vnet_model::{visible, Topology, TopologyError};

/// A request's document that is not a topology of the right shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DocumentError {
    /// The request field holding the document (`topology`, `object`).
    pub field: &'static str,
    pub message: String,
}

impl DocumentError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        DocumentError {
            field,
            message: message.into(),
        }
    }
}

pub(crate) fn topology_to_pb(topology: &Topology) -> pb::Document {
    pb::Document {
        // Cannot fail: every map key of the model is a string.
        text: serde_json::to_string(topology).unwrap_or_default(),
    }
}

/// Parses the topology a request (or an answer, for the client) carries.
pub(crate) fn topology_from_pb(
    field: &'static str,
    document: Option<pb::Document>,
) -> Result<Topology, DocumentError> {
    let document = document.ok_or_else(|| DocumentError::new(field, "is required"))?;
    vnet_model::parse_str(&document.text).map_err(|e| match e {
        TopologyError::Syntax { message, .. } => DocumentError::new(field, message),
        other => DocumentError::new(field, other.to_string()),
    })
}

pub(crate) fn object_to_pb(name: &str, object: Object) -> pb::Document {
    topology_to_pb(&object.into_topology(name))
}

/// The one named object a document holds: its name and the object.
pub(crate) fn object_from_pb(
    field: &'static str,
    document: Option<pb::Document>,
) -> Result<(String, Object), DocumentError> {
    let topology = topology_from_pb(field, document)?;
    if !topology.nat.is_empty() || !topology.firewall.is_empty() {
        return Err(DocumentError::new(
            field,
            "holds NAT or firewall intents, which have no names: change them with apply",
        ));
    }
    let mut named = ObjectKind::ALL.into_iter().flat_map(|kind| {
        topology
            .names(kind)
            .map(move |name| (kind, name.to_string()))
    });
    let (kind, name) = named.next().ok_or_else(|| {
        DocumentError::new(
            field,
            "holds no object: send a topology document with one bridge, router, chain, \
             IP group or port group",
        )
    })?;
    if let Some((other_kind, other)) = named.next() {
        return Err(DocumentError::new(
            field,
            format!(
                "holds more than one object ({} and {}): send one at a time, or apply the \
                 whole topology",
                visible(&kind.path(&name)),
                visible(&other_kind.path(&other)),
            ),
        ));
    }
    let object = topology
        .object(kind, &name)
        .ok_or_else(|| DocumentError::new(field, "holds no object"))?;
    Ok((name, object))
}

pub(crate) fn kind_from_pb(kind: i32) -> Result<Option<ObjectKind>, DocumentError> {
    match pb::Kind::try_from(kind) {
        Ok(pb::Kind::Unspecified) => Ok(None),
        Ok(pb::Kind::Bridge) => Ok(Some(ObjectKind::Bridge)),
        Ok(pb::Kind::Router) => Ok(Some(ObjectKind::Router)),
        Ok(pb::Kind::Chain) => Ok(Some(ObjectKind::Chain)),
        Ok(pb::Kind::IpGroup) => Ok(Some(ObjectKind::IpGroup)),
        Ok(pb::Kind::PortGroup) => Ok(Some(ObjectKind::PortGroup)),
        Err(_) => Err(DocumentError::new(
            "kind",
            format!("{kind} is not one of the values vnet.v1.Kind defines"),
        )),
    }
}

pub(crate) fn kind_to_pb(kind: Option<ObjectKind>) -> pb::Kind {
    match kind {
        None => pb::Kind::Unspecified,
        Some(ObjectKind::Bridge) => pb::Kind::Bridge,
        Some(ObjectKind::Router) => pb::Kind::Router,
        Some(ObjectKind::Chain) => pb::Kind::Chain,
        Some(ObjectKind::IpGroup) => pb::Kind::IpGroup,
        Some(ObjectKind::PortGroup) => pb::Kind::PortGroup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(text: &str) -> Option<pb::Document> {
        Some(pb::Document { text: text.into() })
    }

    fn everything() -> Topology {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        vnet_model::load_file(&dir.join("../model/tests/data/everything.yaml"))
            .expect("the fixture is valid")
    }

    #[test]
    fn every_field_survives_the_wire() {
        let topology = everything();
        let back = topology_from_pb("topology", Some(topology_to_pb(&topology))).unwrap();
        assert_eq!(back, topology);
        for kind in ObjectKind::ALL {
            for name in topology.names(kind) {
                let object = topology.object(kind, name).unwrap();
                let (n, o) =
                    object_from_pb("object", Some(object_to_pb(name, object.clone()))).unwrap();
                assert_eq!((n.as_str(), o), (name, object));
            }
        }
    }

    /// Corrupted documents are errors, never a panic.
    #[test]
    fn corrupted_documents_never_panic() {
        let text = topology_to_pb(&everything()).text.into_bytes();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut parsed = 0;
        for _ in 0..3000 {
            let mut b = text.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % b.len() as u64) as usize;
                b[i] = next() as u8;
            }
            // The wire carries a string: invalid UTF-8 never reaches the parser.
            let Ok(s) = String::from_utf8(b) else {
                continue;
            };
            if let Ok(t) = topology_from_pb("topology", document(&s)) {
                parsed += 1;
                let _ = t.validate();
                let _ = t.to_yaml();
            }
        }
        assert!(parsed > 10, "{parsed} corrupted documents parsed");
    }

    #[test]
    fn errors_name_the_field_inside_the_topology() {
        let err = topology_from_pb(
            "topology",
            document("version: 1\nbridges:\n  tenant:\n    ports:\n      vm1: {vlan: 70000}\n"),
        )
        .unwrap_err();
        assert_eq!(err.field, "topology");
        assert!(
            err.message.contains("bridges.tenant.ports.vm1") && err.message.contains("line 5"),
            "{err}"
        );
        let err = topology_from_pb(
            "topology",
            document(r#"{"version": 1, "chains": {"c": [{"action": "accept", "match": {"src": "10.0.0.300/24"}}]}}"#),
        )
        .unwrap_err();
        assert!(err.message.contains("10.0.0.300/24"), "{err}");
        let err = topology_from_pb("topology", None).unwrap_err();
        assert_eq!(err.to_string(), "topology: is required");
    }

    #[test]
    fn an_object_document_holds_exactly_one_object() {
        let two = "version: 1\nbridges: {a: {}, b: {}}\n";
        let err = object_from_pb("object", document(two)).unwrap_err();
        assert!(err.message.contains("bridges.a and bridges.b"), "{err}");
        let err = object_from_pb("object", document("version: 1\n")).unwrap_err();
        assert!(err.message.contains("holds no object"), "{err}");
        let (name, object) =
            object_from_pb("object", document("version: 1\nrouters: {edge: {}}\n")).unwrap();
        assert_eq!(name, "edge");
        assert_eq!(object.kind(), ObjectKind::Router);
    }
}
