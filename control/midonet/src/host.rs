//! This host as MidoNet sees it: a host id kept in
//! `/etc/midolman/host_uuid.properties` (the file MidoNet agents write and
//! CloudStack's KVM agent reads to bind taps), its name, and its network
//! interfaces (read from /sys/class/net at each request).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::ids::Uuid;

/// Where MidoNet agents keep their host id.
pub const DEFAULT_HOST_ID_FILE: &str = "/etc/midolman/host_uuid.properties";

#[derive(Clone, Debug)]
pub struct HostInfo {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading the host id from {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("writing the host id to {path}: {error} (give another --midonet-host-id-file, or create its directory)")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: the host_uuid line holds {value:?}, not a UUID: fix or remove the file")]
    Malformed { path: PathBuf, value: String },
    #[error("making a host id: {0}")]
    Random(std::io::Error),
}

/// The `host_uuid=` value of a Java properties file, if it has one.
fn parse_properties(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('!'))
        .find_map(|l| {
            let (k, v) = l.split_once(['=', ':'])?;
            (k.trim() == "host_uuid").then(|| v.trim())
        })
}

impl HostInfo {
    /// The host id of `path` if the file has one (kept, as a MidoNet agent
    /// keeps it), else a new random one written there.
    pub fn load_or_create(path: &Path) -> Result<HostInfo, HostError> {
        let id = match std::fs::read_to_string(path) {
            Ok(text) => match parse_properties(&text) {
                Some(v) => Some(v.parse::<Uuid>().map_err(|_| HostError::Malformed {
                    path: path.to_path_buf(),
                    value: v.to_string(),
                })?),
                None => None,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(HostError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        let id = match id {
            Some(id) => id,
            None => {
                let id = Uuid::random().map_err(HostError::Random)?;
                write_id(path, id).map_err(|error| HostError::Write {
                    path: path.to_path_buf(),
                    error,
                })?;
                id
            }
        };
        Ok(HostInfo {
            id,
            name: hostname(),
        })
    }
}

fn write_id(path: &Path, id: Uuid) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Through a temporary file and a rename: a reader never sees half.
    let tmp = path.with_extension("properties.tmp");
    std::fs::write(
        &tmp,
        format!("# Written by vnetd: the MidoNet host id of this host.\nhost_uuid={id}\n"),
    )?;
    std::fs::rename(&tmp, path)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The host's interfaces as MidoNet's `Interface` objects.
pub fn interfaces(host: &HostInfo, base: &str) -> Vec<Value> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let dir = Path::new("/sys/class/net").join(&name);
            let up = read(&dir.join("operstate")).is_some_and(|s| s == "up" || s == "unknown");
            let virtual_ = std::fs::canonicalize(&dir)
                .map(|p| p.to_string_lossy().contains("/virtual/"))
                .unwrap_or(false);
            let kind = if name == "lo" || virtual_ {
                "Virtual"
            } else {
                "Physical"
            };
            json!({
                "hostId": host.id.to_string(),
                "name": name,
                "mac": read(&dir.join("address")),
                "mtu": read(&dir.join("mtu")).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0),
                "type": kind,
                "endpoint": if name == "lo" { "LOCALHOST" } else if virtual_ { "UNKNOWN" } else { "PHYSICAL" },
                "portType": null,
                "addresses": [],
                // MidoNet's status bits: 1 = up, 2 = carrier.
                "status": if up { 3 } else { 0 },
                "uri": format!("{base}/hosts/{}/interfaces/{}", host.id, name),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_id_is_written_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("midolman/host_uuid.properties");
        let a = HostInfo::load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("host_uuid={}", a.id)), "{text}");
        let b = HostInfo::load_or_create(&path).unwrap();
        assert_eq!(a.id, b.id);
    }

    #[test]
    fn a_midonet_written_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_uuid.properties");
        std::fs::write(
            &path,
            "#Fri Apr 26 10:00:00 UTC 2019\nhost_uuid=5fd57e1c-6a1c-4b5c-9d43-8d5c3f0e1a2b\n",
        )
        .unwrap();
        let h = HostInfo::load_or_create(&path).unwrap();
        assert_eq!(h.id.to_string(), "5fd57e1c-6a1c-4b5c-9d43-8d5c3f0e1a2b");
        std::fs::write(&path, "host_uuid=nope\n").unwrap();
        let e = HostInfo::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("not a UUID"), "{e}");
    }
}
