//! vnetctl against a real API server (the harness of control/api/tests):
//! what it prints and how it exits.

#[path = "../../api/tests/common/mod.rs"]
mod common;

use common::{all_files, start, with_errors, Server};
use vnet_model::load_file;

/// Runs the vnetctl binary against `server` off the runtime's thread (the
/// server answers on it meanwhile).
async fn vnetctl(
    server: &Server,
    args: &[&str],
    stdout: std::process::Stdio,
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vnetctl"));
    cmd.arg("--socket")
        .arg(server.socket())
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// vnetctl lists every validation error, however many (the server sends
/// only as many as fit in its answer, and their count).
#[tokio::test]
async fn vnetctl_lists_every_validation_error() {
    let server = start("many-errors-cli").await;
    let mut c = server.client().await;
    let n = 2000;
    let file = server.dir.join("many.yaml");
    std::fs::write(&file, with_errors(n)).unwrap();
    let out = vnetctl(
        &server,
        &["apply", "-f", file.to_str().unwrap()],
        std::process::Stdio::piped(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for i in 0..n {
        assert!(
            err.contains(&format!("bridges.b.ports.port{i}.vlan:")),
            "port{i} missing from vnetctl's errors: {err}"
        );
    }
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(c.list(None).await.unwrap().revision, 0);
    server.stop().await;
}

#[tokio::test]
async fn vnetctl_ends_quietly_when_its_reader_goes_away() {
    use std::os::unix::process::ExitStatusExt;
    let server = start("epipe").await;
    let topo = load_file(&all_files()[0]).unwrap();
    server
        .client()
        .await
        .apply(&topo, false, None)
        .await
        .unwrap();
    for args in [
        &["get"][..],
        &["get", "-o", "yaml"],
        &["watch", "--from", "0"],
    ] {
        // `vnetctl get | head -0`: the reading end is closed before vnetctl
        // writes anything.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = vnetctl(&server, args, writer.into()).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "vnetctl {args:?}: {:?} {err}",
            out.status
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    server.stop().await;
}

/// Deleting an object that many others use: vnetctl lists every reference
/// the deletion breaks, not only the ones that fit in the server's answer.
#[tokio::test]
async fn vnetctl_delete_lists_every_broken_reference() {
    let server = start("many-refs").await;
    let n = 1000;
    let mut yaml = "version: 1\nchains:\n  c: []\nbridges:\n  b:\n    ports:\n".to_string();
    for i in 0..n {
        yaml.push_str(&format!(
            "      port{i}: {{interface: if{i}, inbound_filter: c}}\n"
        ));
    }
    let topo = vnet_model::load_str(&yaml).unwrap();
    let rev = server
        .client()
        .await
        .apply(&topo, false, None)
        .await
        .unwrap()
        .revision;
    let out = vnetctl(
        &server,
        &["delete", "chain", "c"],
        std::process::Stdio::piped(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for i in 0..n {
        assert!(
            err.contains(&format!("bridges.b.ports.port{i}.inbound_filter:")),
            "port{i} missing from vnetctl's errors: {err}"
        );
    }
    let listed = server.client().await.list(None).await.unwrap();
    assert_eq!((listed.revision, listed.topology), (rev, topo));
    server.stop().await;
}
