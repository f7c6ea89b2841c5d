//! vnetd's command line: --check, and clear errors instead of panics.
use anyhow::Result;
use std::process::Command;
use vnet_e2e::{have_root, repo_root, vnetd_path, World};

fn vnetd(args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(vnetd_path()?).args(args).output()?)
}

#[test]
fn check_accepts_every_example() -> Result<()> {
    for name in ["bridge.yaml", "router.yaml", "tenant-nat.yaml"] {
        let path = repo_root().join("examples").join(name);
        let out = vnetd(&["--check", path.to_str().unwrap()])?;
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
    Ok(())
}

#[test]
fn check_rejects_a_bad_file_naming_object_and_field() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vnet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nbridges:\n  tenant:\n    ports:\n      vm1: {peer: nowhere/p}\n      vm2: {interface: x-h, vlan: 5000}\n",
    )?;
    let out = vnetd(&["--check", bad.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bridges.tenant.ports.vm1.peer"),
        "names the peer field: {err}"
    );
    assert!(
        err.contains("bridges.tenant.ports.vm2.vlan"),
        "names the vlan field: {err}"
    );
    Ok(())
}

#[test]
fn a_missing_interface_is_a_clear_error() -> Result<()> {
    if !have_root("a_missing_interface_is_a_clear_error") {
        return Ok(());
    }
    let mut w = World::new("missing-if")?;
    let topo = w.topology_file(
        "version: 1\nbridges:\n  b:\n    ports:\n      p: {interface: nosuch-h}\n",
    )?;
    let err = w
        .start_vnetd(&topo)
        .expect_err("vnetd must refuse to start")
        .to_string();
    assert!(
        err.contains("interface nosuch-h (port b/p) does not exist"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

#[test]
fn running_without_root_is_a_clear_error() -> Result<()> {
    if !have_root("running_without_root_is_a_clear_error (drops to nobody)") {
        return Ok(());
    }
    let topo = repo_root().join("examples/bridge.yaml");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(vnetd_path()?)
        .args([
            "--topology",
            topo.to_str().unwrap(),
            "--state-dir",
            "/tmp/vnet-nobody",
        ])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vnetd must run as root"), "{err}");
    Ok(())
}
