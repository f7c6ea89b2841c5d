//! Builds the XDP program (`ebpf/xdp`, package `vnet-ebpf`, binary
//! `vnet-xdp`) with the nightly toolchain into `$OUT_DIR/vnet-xdp`, which
//! `src/kernel` embeds. `AYA_BUILD_SKIP=1` skips the eBPF build (for hosts
//! without nightly or bpf-linker): an empty object is embedded instead and
//! `Kernel::load` reports that.
//!
//! It also sets `VNET_GIT_REVISION` (for `vnetd --version` and the
//! metrics' build info): `git rev-parse --short HEAD`, or "unknown" outside
//! a git checkout or without git. It does so before the eBPF build, so
//! `AYA_BUILD_SKIP=1` builds carry it too.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, Context as _};

const PACKAGE: &str = "vnet-ebpf";
const OBJECT: &str = "vnet-xdp";
/// The benchmark programs (`ebpf/xdp/src/bench.rs`), embedded by
/// `src/kernel/bench.rs`; built by the same aya-build call (it builds every
/// binary of the package).
const BENCH_OBJECT: &str = "vnet-xdp-bench";
const BOOTSTRAP_HINT: &str = "run scripts/bootstrap.sh (installs nightly with rust-src and \
     bpf-linker), or set AYA_BUILD_SKIP=1 to build without the XDP program";

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join(OBJECT);
    let bench_object = out_dir.join(BENCH_OBJECT);
    let root_dir = manifest_dir
        .join("../ebpf/xdp")
        .canonicalize()
        .context("locating ebpf/xdp next to dataplane/")?;
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", root_dir.display()))?;
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    git_revision(&manifest_dir);

    if skipped() {
        println!(
            "cargo:warning=AYA_BUILD_SKIP is set: the XDP program is not built and \
             Kernel::load will return KernelError::NotBuilt"
        );
        // The embedded object must still exist for include_bytes_aligned!.
        // An empty one (rather than a stale earlier build) makes
        // Kernel::load fail with a clear error instead of loading an
        // outdated program.
        for o in [&object, &bench_object] {
            fs::write(o, b"").with_context(|| format!("writing {}", o.display()))?;
        }
        return Ok(());
    }

    check_toolchain()?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: PACKAGE,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .with_context(|| {
        format!(
            "building the XDP program ({PACKAGE}) with nightly failed: the compiler's \
             messages are in the warnings above"
        )
    })?;
    for o in [&object, &bench_object] {
        if !o.exists() {
            return Err(anyhow!("aya-build did not produce {}", o.display()));
        }
    }
    Ok(())
}

/// Sets `VNET_GIT_REVISION` and reruns this script when HEAD moves. A
/// failure of git is no build failure: the revision is then "unknown".
fn git_revision(manifest_dir: &Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(manifest_dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let revision = git(&["rev-parse", "--short", "HEAD"]);
    println!(
        "cargo:rustc-env=VNET_GIT_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
    // HEAD names a branch whose ref file (or packed-refs) moves on commit;
    // watching all three catches checkouts and commits alike.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        let mut watched = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(git_dir.join(branch));
        }
        for p in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}

/// Same test as aya-build's, which we cannot ask.
fn skipped() -> bool {
    env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Fails early, with the fix in the message, when what aya-build needs is
/// missing (its own errors are a cargo command line and an exit status).
fn check_toolchain() -> anyhow::Result<()> {
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .map_err(|e| anyhow!("cannot run rustup ({e}): the XDP program needs rustup's nightly toolchain; {BOOTSTRAP_HINT}"))?;
    if !sysroot.status.success() {
        return Err(anyhow!(
            "the nightly toolchain is not installed ({}); {BOOTSTRAP_HINT}",
            String::from_utf8_lossy(&sysroot.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Err(anyhow!(
            "nightly has no rust-src (needed for -Z build-std=core); {BOOTSTRAP_HINT}"
        ));
    }
    if !on_path("bpf-linker") {
        return Err(anyhow!("bpf-linker is not on PATH; {BOOTSTRAP_HINT}"));
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| is_executable(&dir.join(program))))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
