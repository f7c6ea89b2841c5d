//! Errors of reading and checking a topology.

use std::borrow::Cow;
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
    /// Path and message are made [`visible`] here, once: they quote names
    /// and values of the input, which may hold newlines or terminal escapes
    /// that would otherwise forge lines or drive the operator's terminal.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        let (path, message) = (path.into(), message.into());
        ValidationError {
            path: visible(&path).into_owned(),
            message: visible(&message).into_owned(),
        }
    }
}

/// `text` with every character that a terminal would not show as itself
/// written out as a Rust escape (`\n`, `\u{1b}`): control characters, and
/// the invisible format characters that reorder or hide text (bidi
/// overrides, zero-width spaces, the byte-order mark). Anything else, other
/// scripts included, stays as it is. A backslash is left alone, so that
/// escaping an escaped text changes nothing (client and server both do it).
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`visible`], keeping line breaks: for multi-line texts (a list of
/// errors) whose lines are each already escaped.
pub fn visible_lines(text: &str) -> String {
    text.split('\n')
        .map(|l| visible(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width spaces and marks
            | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{2069}' // word joiner, bidi isolates
            | '\u{feff}')
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
            // The parser quotes the offending key or value as written.
            message: visible(&e.to_string()).into_owned(),
        }
    }

    pub(crate) fn from_json(e: serde_json::Error) -> Self {
        // serde_json reports line 0 when it has no position.
        let known = e.line() > 0;
        TopologyError::Syntax {
            line: known.then_some(e.line()),
            column: known.then_some(e.column()),
            message: visible(&e.to_string()).into_owned(),
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
