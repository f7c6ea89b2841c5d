//! Errors of reading and checking a topology.

use std::fmt;
use std::path::PathBuf;

/// One problem found by validation: `path` names the object and field the way
/// the file spells it (`routers.edge.routes[2].via`), `message` says what is
/// wrong and, where it is not obvious, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why a topology could not be loaded.
///
/// Each variant's message is complete on its own (the wrapped error is part
/// of the text, not a separate `source()`), so printing it once is enough.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read the topology: {0}")]
    Io(std::io::Error),
    /// The text is not YAML/JSON of the topology's shape: bad syntax, an
    /// unknown or duplicate key, a value of the wrong type. `message` comes
    /// from the parser and already says where (path, line and column).
    #[error("syntax error: {message}")]
    Syntax {
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// The file is well-formed but its objects do not fit together.
    #[error("{}", InvalidList(.0))]
    Invalid(Vec<ValidationError>),
    /// An error of the named file.
    #[error("{}: {error}", path.display())]
    File {
        path: PathBuf,
        error: Box<TopologyError>,
    },
}

impl TopologyError {
    /// The validation errors, also when wrapped in [`TopologyError::File`];
    /// empty for other kinds of error.
    pub fn validation_errors(&self) -> &[ValidationError] {
        match self {
            TopologyError::Invalid(errors) => errors,
            TopologyError::File { error, .. } => error.validation_errors(),
            _ => &[],
        }
    }

    pub(crate) fn from_yaml(e: serde_yaml::Error) -> Self {
        let loc = e.location();
        TopologyError::Syntax {
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message: e.to_string(),
        }
    }

    pub(crate) fn from_json(e: serde_json::Error) -> Self {
        // serde_json reports line 0 when it has no position.
        let known = e.line() > 0;
        TopologyError::Syntax {
            line: known.then_some(e.line()),
            column: known.then_some(e.column()),
            message: e.to_string(),
        }
    }
}

/// Formats the validation errors one per line under a count.
struct InvalidList<'a>(&'a [ValidationError]);

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid topology ({n} error{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}
