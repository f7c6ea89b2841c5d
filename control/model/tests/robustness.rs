//! Damaged input gives an error, never a panic.

mod common;

use vnet_model::{parse_bytes, parse_str, Topology};

/// Parses, and when that succeeds exercises validation and the round trip
/// too: a mutation may well produce a different valid-looking file.
fn exercise(text: &str) {
    if let Ok(topo) = parse_str(text) {
        let _ = topo.validate();
        let again: Topology = parse_str(&topo.to_yaml())
            .unwrap_or_else(|e| panic!("output of a parsed file does not parse: {e}\n{text}"));
        assert_eq!(topo, again);
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const NASTY: &[&str] = &[
    ":",
    "-",
    " ",
    "\n",
    "\t",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "&a",
    "*a",
    "!!binary",
    "%",
    "#",
    "0x",
    "999999999999",
    "-1",
    "~",
    "null",
    "/",
    "..",
    "\u{0}",
    "é",
    "? ",
    "|",
    ">",
];

#[test]
fn mutated_examples_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for path in common::all_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Truncation at 40 points.
        for k in 0..40 {
            let mut cut = text.len() * k / 40;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            exercise(&text[..cut]);
        }
        for _ in 0..60 {
            let mut t = text.clone();
            match rng.below(5) {
                // Replace a character with something YAML cares about.
                0 | 1 => {
                    let at = rng.below(t.len());
                    if t.is_char_boundary(at) && t.is_char_boundary(at + 1) {
                        t.replace_range(at..at + 1, NASTY[rng.below(NASTY.len())]);
                    }
                }
                // Delete a line.
                2 => {
                    let mut l = lines.clone();
                    l.remove(rng.below(l.len()));
                    t = l.join("\n");
                }
                // Duplicate a line (duplicate keys, repeated entries).
                3 => {
                    let mut l = lines.clone();
                    let i = rng.below(l.len());
                    l.insert(i, lines[i]);
                    t = l.join("\n");
                }
                // Re-indent a line.
                _ => {
                    let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                    let i = rng.below(l.len());
                    l[i] = format!("{}{}", " ".repeat(rng.below(7)), l[i].trim_start());
                    t = l.join("\n");
                }
            }
            exercise(&t);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for len in [0, 1, 2, 7, 64, 513] {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = parse_bytes(&bytes);
            let printable: String = bytes.iter().map(|b| char::from(b' ' + b % 95)).collect();
            exercise(&printable);
        }
    }
}

#[test]
fn garbage_is_an_error() {
    for text in [
        "",
        " ",
        "\n",
        "null",
        "~",
        "[]",
        "{}",
        "42",
        "version",
        "version:",
        "version: one",
        "version: -1",
        "version: 1\nbridges: 5\n",
        "version: 1\nbridges: [a, b]\n",
        "version: 1\nchains:\n  c: {action: drop}\n",
        "---\nversion: 1\n---\nversion: 1\n",
        "{\"version\": 1",
        "{\"version\": 1}}",
        "\u{0}\u{1}\u{2}",
        "version: 1\nbridges:\n  b:\n    ports:\n      p: !!binary aGVsbG8=\n",
    ] {
        assert!(parse_str(text).is_err(), "{text:?} parsed");
    }
}

#[test]
fn deep_nesting_and_alias_bombs_are_errors() {
    for text in [
        "[".repeat(100_000),
        "{\"a\":".repeat(100_000),
        format!("version: 1\nbridges: {}", "[".repeat(10_000)),
    ] {
        assert!(parse_str(&text).is_err());
    }
    let bomb = "version: 1\nip_groups:\n  a: &a [1.1.1.1,1.1.1.1,1.1.1.1,1.1.1.1,1.1.1.1,1.1.1.1,1.1.1.1,1.1.1.1,1.1.1.1]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n  g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
    assert!(parse_str(bomb).is_err());
}

/// Deep nesting used to cost time quadratic in the input inside libyaml
/// (200 KB of `[` after a key: 48 s); it is refused up front, in linear
/// time, naming the limit.
#[test]
fn deep_nesting_is_refused_quickly_naming_the_limit() {
    for text in [
        format!("version: 1\nbridges: {}", "[".repeat(200_000)),
        "[".repeat(200_000),
        format!("version: 1\nip_groups:\n  g: {}", "{a: ".repeat(50_000)),
        "- ".repeat(100_000),
    ] {
        let started = std::time::Instant::now();
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert!(e.contains("deeper than 64 levels"), "{e}");
    }
}

/// Keys and values that hold terminal escapes or newlines are shown escaped
/// in parse errors, never raw.
#[test]
fn parse_errors_show_control_characters_escaped() {
    let e = parse_str("version: 1\n\"evil\\e[31m\\nkey\": 1\n")
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\u{1b}') && !e.contains('\n'), "{e:?}");
    assert!(e.contains("evil\\u{1b}[31m\\nkey"), "{e}");
}
