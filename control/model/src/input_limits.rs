//! Limits checked on topology text before it is parsed.
//!
//! The YAML parser under serde_yaml (libyaml) does work proportional to the
//! nesting depth for every token inside nested flow collections, so a file
//! of nothing but `[` costs time quadratic in its size (200 KB: 48 s) before
//! serde_yaml's own recursion limit is ever reached. A single linear pass
//! over the text rejects such input first, with an error that names the
//! limit, so that parsing stays linear in the input whatever it holds.
//!
//! The pass is lexical: it follows quotes, comments and block scalars well
//! enough not to count brackets inside them, and estimates the depth as
//! open flow collections plus block indentation levels plus compact `- `
//! entries on a line. Real topologies nest about ten levels deep; the limit
//! leaves them ample room.

use crate::error::TopologyError;

/// The largest topology text accepted (a topology with a hundred thousand
/// rules is about 10 MiB of JSON).
pub const MAX_TOPOLOGY_BYTES: usize = 64 << 20;

/// The deepest nesting accepted.
pub const MAX_TOPOLOGY_DEPTH: usize = 64;

fn refuse(line: Option<usize>, column: Option<usize>, message: String) -> TopologyError {
    TopologyError::Syntax {
        line,
        column,
        message,
    }
}

/// Fails when `text` is larger than [`MAX_TOPOLOGY_BYTES`] or nests deeper
/// than [`MAX_TOPOLOGY_DEPTH`]. Linear in the length of `text`.
pub(crate) fn check(text: &str) -> Result<(), TopologyError> {
    if text.len() > MAX_TOPOLOGY_BYTES {
        return Err(refuse(
            None,
            None,
            format!(
                "the topology is {} bytes, over the limit of {} MiB",
                text.len(),
                MAX_TOPOLOGY_BYTES >> 20
            ),
        ));
    }
    let mut s = Scanner {
        line: 1,
        prev: '\n',
        at_line_start: true,
        ..Scanner::default()
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            s.new_line();
            continue;
        }
        s.column += 1;
        match s.quote {
            Some('\'') => {
                if c == '\'' {
                    // '' is a quote inside a single-quoted scalar.
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        s.column += 1;
                    } else {
                        s.quote = None;
                    }
                }
                s.prev = c;
                continue;
            }
            Some(_) => {
                match c {
                    // The escaped character cannot end the scalar.
                    '\\' if chars.peek().is_some_and(|&n| n != '\n') => {
                        chars.next();
                        s.column += 1;
                    }
                    '"' => s.quote = None,
                    _ => {}
                }
                s.prev = c;
                continue;
            }
            None => {}
        }
        if s.comment || s.in_block_scalar {
            continue;
        }
        if s.at_line_start {
            if c == ' ' {
                s.indent += 1;
                continue;
            }
            s.at_line_start = false;
            if c != '#' {
                s.line_content();
            }
        }
        let token_start = s.prev == '\n' || s.prev == ' ' || s.prev == '\t';
        match c {
            '#' if token_start => s.comment = true,
            '\'' | '"' if token_start || matches!(s.prev, '[' | '{' | ',') => s.quote = Some(c),
            '\'' | '"' if s.flow > 0 && s.prev == ':' => s.quote = Some(c),
            '[' | '{' => {
                s.flow += 1;
                s.dashes_open = false;
            }
            ']' | '}' => s.flow = s.flow.saturating_sub(1),
            '-' | '?' if s.dashes_open && chars.peek().is_none_or(|&n| n == ' ') => s.dashes += 1,
            '|' | '>' if token_start && s.flow == 0 => s.block_header = true,
            ' ' | '\t' => {}
            _ => {
                s.dashes_open = false;
                if !matches!(c, '-' | '+' | '0'..='9') {
                    s.block_header = false;
                }
            }
        }
        s.prev = c;
        if s.depth() > MAX_TOPOLOGY_DEPTH {
            return Err(refuse(
                Some(s.line),
                Some(s.column),
                format!(
                    "nesting deeper than {MAX_TOPOLOGY_DEPTH} levels at line {} column {} \
                     (the limit keeps parsing fast; no topology needs more)",
                    s.line, s.column
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Scanner {
    /// 1-based position, for the error.
    line: usize,
    column: usize,
    /// The quote character of the quoted scalar we are in.
    quote: Option<char>,
    comment: bool,
    prev: char,
    /// Open `[` and `{`.
    flow: usize,
    /// Indentation of the enclosing block collections.
    indents: Vec<usize>,
    at_line_start: bool,
    indent: usize,
    /// Compact nested entries (`- - a`) on this line so far, and whether
    /// more may follow.
    dashes: usize,
    dashes_open: bool,
    /// A `|` or `>` seen on this line: if nothing but its indicators
    /// follows, the more indented lines after it are a block scalar.
    block_header: bool,
    /// Indentation of the line that opened the block scalar we are in.
    block_scalar: Option<usize>,
    in_block_scalar: bool,
}

impl Scanner {
    fn new_line(&mut self) {
        if self.quote.is_none() && self.block_header && self.flow == 0 {
            self.block_scalar = Some(self.indent);
        }
        self.line += 1;
        self.column = 0;
        self.comment = false;
        self.prev = '\n';
        self.at_line_start = self.quote.is_none();
        self.indent = 0;
        self.dashes = 0;
        self.dashes_open = false;
        self.block_header = false;
        self.in_block_scalar = false;
    }

    /// The first character of a line that is not a comment.
    fn line_content(&mut self) {
        if let Some(header) = self.block_scalar {
            if self.indent > header {
                self.in_block_scalar = true;
                return;
            }
            self.block_scalar = None;
        }
        if self.flow == 0 {
            while self.indents.last().is_some_and(|&top| top > self.indent) {
                self.indents.pop();
            }
            if self.indents.last() != Some(&self.indent) {
                self.indents.push(self.indent);
            }
            self.dashes_open = true;
        }
    }

    fn depth(&self) -> usize {
        self.flow + self.indents.len() + self.dashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_nesting_passes_and_quoted_or_commented_brackets_do_not_count() {
        let deep_quoted = format!(
            "version: 1\nchains:\n  c: # {}\n    - {{action: drop, comment: '{}'}}\n    - {{action: drop, comment: \"{}\\\"\"}}\nx: |\n  {}\n",
            "[".repeat(500),
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        check(&deep_quoted).unwrap();
        let nested_flow = format!("{}{}", "[".repeat(60), "]".repeat(60));
        check(&nested_flow).unwrap();
    }

    #[test]
    fn deep_nesting_of_every_kind_is_refused_naming_the_limit() {
        let indented: String = (0..70).map(|d| format!("{}a:\n", " ".repeat(d))).collect();
        for text in [
            "[".repeat(65),
            "{\"a\":".repeat(65),
            "- ".repeat(65),
            indented,
            format!("a: 'it''s' [{}", "[".repeat(64)),
        ] {
            let e = check(&text).unwrap_err().to_string();
            assert!(e.contains("deeper than 64 levels"), "{e}");
        }
    }

    #[test]
    fn oversized_text_is_refused_naming_the_limit() {
        let text = " ".repeat(MAX_TOPOLOGY_BYTES + 1);
        let e = check(&text).unwrap_err().to_string();
        assert!(e.contains("over the limit of 64 MiB"), "{e}");
    }
}
