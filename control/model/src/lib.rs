//! vnet's topology model: the one description of a topology (the types in
//! [`model`], which are also the topology file format of TOPOLOGY.md), its
//! validation, diffs between revisions ([`diff`]), the intents compiled to
//! chains ([`intents`]), named objects ([`objects`]) and the reports a
//! running dataplane gives ([`reports`]). No I/O beyond reading a file, no
//! RPC: the store, the API and the dataplane all depend on this crate.
//!
//! ```no_run
//! let topo = vnet_model::load_file(std::path::Path::new("examples/router.yaml"))?;
//! print!("{}", topo.to_yaml());
//! # Ok::<(), vnet_model::TopologyError>(())
//! ```

use std::path::Path;

pub mod diff;
mod error;
mod input_limits;
pub mod intents;
pub mod model;
pub mod objects;
pub mod reports;
pub mod tunnel_keys;
mod validate;

pub use error::{visible, visible_lines, TopologyError, ValidationError};
pub use input_limits::{MAX_TOPOLOGY_BYTES, MAX_TOPOLOGY_DEPTH};
pub use model::*;

/// Parses a topology from YAML or JSON text. Checks the shape only (types,
/// names of fields, required fields); call [`Topology::validate`] or use
/// [`load_str`] to check that the objects fit together.
///
/// Text larger than [`MAX_TOPOLOGY_BYTES`] or nested deeper than
/// [`MAX_TOPOLOGY_DEPTH`] is refused before parsing, so that the time spent
/// is linear in the length of the text.
pub fn parse_str(text: &str) -> Result<Topology, TopologyError> {
    // A byte-order mark is invisible in editors; do not let it break parsing.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    input_limits::check(text)?;
    // JSON is valid YAML too, but serde_json's messages about JSON syntax are
    // clearer than YAML's for a file that is plainly JSON.
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(TopologyError::from_json)
    } else {
        serde_yaml::from_str(text).map_err(TopologyError::from_yaml)
    }
}

/// [`parse_str`] for bytes (as read from a file or received over the API):
/// text that is not UTF-8 is a syntax error, not a panic.
pub fn parse_bytes(bytes: &[u8]) -> Result<Topology, TopologyError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_str(text),
        Err(e) => Err(TopologyError::Syntax {
            line: None,
            column: None,
            message: format!(
                "the topology is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        }),
    }
}

/// Parses and validates a topology: what `apply` accepts.
pub fn load_str(text: &str) -> Result<Topology, TopologyError> {
    let topo = parse_str(text)?;
    topo.validate().map_err(TopologyError::Invalid)?;
    Ok(topo)
}

/// Reads, parses and validates a topology file. Every error names the file.
pub fn load_file(path: &Path) -> Result<Topology, TopologyError> {
    let in_file = |error| TopologyError::File {
        path: path.to_path_buf(),
        error: Box::new(error),
    };
    let bytes = std::fs::read(path).map_err(|e| in_file(TopologyError::Io(e)))?;
    let topo = parse_bytes(&bytes).map_err(in_file)?;
    topo.validate()
        .map_err(|errors| in_file(TopologyError::Invalid(errors)))?;
    Ok(topo)
}

impl Topology {
    /// Checks the topology as a whole and returns every problem found, not
    /// just the first.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let errors = validate::validate(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The topology as a YAML file that parses back to an equal topology.
    /// Absent, empty and default fields are left out.
    pub fn to_yaml(&self) -> String {
        // Cannot fail: every map key is a string and no Serialize impl of the
        // model returns an error.
        serde_yaml::to_string(self).expect("the topology model always serializes to YAML")
    }
}
