//! The topology fixtures and helpers of the control crates' tests (the model's,
//! the API's and vnetctl's: each crate sits in control/<crate>, so the paths
//! below hold for all of them).
#![allow(dead_code)]

use std::path::PathBuf;

use vnet_model::{parse_str, ValidationError};

/// The project's example topologies (`/examples` at the workspace root).
pub fn example_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

/// Topology files of the tests: the examples plus the test data covering
/// every field of the format.
pub fn all_files() -> Vec<PathBuf> {
    let mut files = example_files();
    files.push(everything_file());
    files
}

/// The test topology that sets every field of the format.
pub fn everything_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/data/everything.yaml")
}

/// Validation errors of a text that must parse.
pub fn errors(yaml: &str) -> Vec<ValidationError> {
    let topo = parse_str(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{yaml}"));
    topo.validate().err().unwrap_or_default()
}

fn list(errors: &[ValidationError]) -> String {
    errors.iter().map(|e| format!("  {e}\n")).collect()
}

/// Asserts that validation reports an error at exactly `path` whose message
/// contains `fragment`.
#[track_caller]
pub fn assert_error(yaml: &str, path: &str, fragment: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "expected `{path}: ...{fragment}...`, got:\n{}",
        list(&errs)
    );
}

/// Like [`assert_error`], and that it is the only error.
#[track_caller]
pub fn assert_only_error(yaml: &str, path: &str, fragment: &str) {
    let errs = errors(yaml);
    assert!(
        errs.len() == 1 && errs[0].path == path && errs[0].message.contains(fragment),
        "expected only `{path}: ...{fragment}...`, got:\n{}",
        list(&errs)
    );
}

#[track_caller]
pub fn assert_valid(yaml: &str) {
    let errs = errors(yaml);
    assert!(errs.is_empty(), "expected no errors, got:\n{}", list(&errs));
}

/// The message of a text that must fail to parse.
#[track_caller]
pub fn parse_error(text: &str) -> String {
    match parse_str(text) {
        Ok(t) => panic!("expected a parse error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}
