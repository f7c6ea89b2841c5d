//! The DHCP leases on disk: `<state-dir>/dhcp-leases.json`, read when vnetd
//! starts and written when the bound leases changed, so that clients keep
//! their pool addresses across restarts.
//!
//! Writes are atomic (a temporary file, fsync, rename over the old file,
//! fsync of the directory): a crash leaves the old file or the new one,
//! never half of one. The simulation's clock is monotonic and restarts
//! with the host, so the file holds wall-clock expiry times.
use crate::sim::dhcp::leases::{Leases, Record};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use vnet_model::MacAddr;

pub const FILE_NAME: &str = "dhcp-leases.json";
const FORMAT_VERSION: u32 = 1;
const NS: u64 = 1_000_000_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFileV1 {
    version: u32,
    leases: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    bridge: String,
    mac: MacAddr,
    ip: Ipv4Addr,
    /// Seconds since the Unix epoch.
    expires_unix: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a lease file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has format version {found}; this vnetd reads version {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The lease file of one state directory and the lease table revision it
/// last wrote.
#[derive(Debug)]
pub struct LeaseFile {
    path: PathBuf,
    saved_revision: Option<u64>,
}

impl LeaseFile {
    pub fn new(state_dir: &Path) -> LeaseFile {
        LeaseFile {
            path: state_dir.join(FILE_NAME),
            saved_revision: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file into `leases`; no file is no lease. Returns how many
    /// leases were loaded (expired ones are not).
    pub fn load(
        &mut self,
        leases: &mut Leases,
        now_ns: u64,
        now_unix: u64,
    ) -> Result<usize, LeaseFileError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(LeaseFileError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let file: LeaseFileV1 =
            serde_json::from_slice(&text).map_err(|source| LeaseFileError::Parse {
                path: self.path.clone(),
                source,
            })?;
        if file.version != FORMAT_VERSION {
            return Err(LeaseFileError::Version {
                path: self.path.clone(),
                found: file.version,
            });
        }
        let records: Vec<Record> = file
            .leases
            .into_iter()
            .map(|e| Record {
                bridge: e.bridge,
                mac: e.mac.0,
                ip: e.ip.octets(),
                remaining_ns: e.expires_unix.saturating_sub(now_unix).saturating_mul(NS),
            })
            .collect();
        let loaded = leases.restore(&records, now_ns);
        // What is on disk is what the table holds now.
        self.saved_revision = Some(leases.revision());
        Ok(loaded)
    }

    /// Writes the bound leases if they changed since the last write (or
    /// load). Returns whether it wrote.
    pub fn save_if_changed(
        &mut self,
        leases: &Leases,
        now_ns: u64,
        now_unix: u64,
    ) -> Result<bool, LeaseFileError> {
        if self.saved_revision == Some(leases.revision()) {
            return Ok(false);
        }
        let file = LeaseFileV1 {
            version: FORMAT_VERSION,
            leases: leases
                .records(now_ns)
                .into_iter()
                .map(|r| Entry {
                    bridge: r.bridge,
                    mac: MacAddr(r.mac),
                    ip: Ipv4Addr::from(r.ip),
                    // Rounded up: a lease must not come back shorter.
                    expires_unix: now_unix + r.remaining_ns.div_ceil(NS),
                })
                .collect(),
        };
        let write_error = |source| LeaseFileError::Write {
            path: self.path.clone(),
            source,
        };
        let mut text =
            serde_json::to_vec_pretty(&file).map_err(|e| write_error(std::io::Error::other(e)))?;
        text.push(b'\n');
        write_atomically(&self.path, &text).map_err(write_error)?;
        self.saved_revision = Some(leases.revision());
        Ok(true)
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either file whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vnet-leasefile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn leases_survive_a_write_and_a_load_across_clocks() {
        let dir = temp_dir("roundtrip");
        let mut leases = Leases::default();
        leases
            .bind(
                "tenant",
                crate::sim::Tag::port("tenant/vm1"),
                [2, 0, 0, 0, 0, 9],
                [10, 0, 0, 150],
                100 * S,
                5 * S,
            )
            .unwrap();
        let mut file = LeaseFile::new(&dir);
        assert!(file.save_if_changed(&leases, 5 * S, 1_000).unwrap());
        assert!(
            !file.save_if_changed(&leases, 6 * S, 1_001).unwrap(),
            "nothing changed"
        );
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert!(text.contains("\"mac\": \"02:00:00:00:00:09\""), "{text}");
        assert!(text.contains("\"ip\": \"10.0.0.150\""), "{text}");
        assert!(text.contains("\"expires_unix\": 1100"), "{text}");
        assert!(!dir.join("dhcp-leases.json.tmp").exists());

        // A restart: a new monotonic clock, 40 s of wall time later.
        let mut after = Leases::default();
        let mut file = LeaseFile::new(&dir);
        assert_eq!(file.load(&mut after, 7 * S, 1_040).unwrap(), 1);
        let l = after.lease("tenant", &[2, 0, 0, 0, 0, 9], 7 * S).unwrap();
        assert_eq!(
            (l.ip, l.bound, l.expires_ns),
            ([10, 0, 0, 150], true, 67 * S)
        );
        assert!(!file.save_if_changed(&after, 8 * S, 1_041).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expired_leases_are_not_loaded_and_no_file_is_no_lease() {
        let dir = temp_dir("expired");
        let mut leases = Leases::default();
        let mut file = LeaseFile::new(&dir);
        assert_eq!(file.load(&mut leases, 0, 1_000).unwrap(), 0);
        leases
            .bind(
                "tenant",
                crate::sim::Tag::port("tenant/vm1"),
                [2, 0, 0, 0, 0, 9],
                [10, 0, 0, 150],
                10 * S,
                0,
            )
            .unwrap();
        file.save_if_changed(&leases, 0, 1_000).unwrap();
        let mut after = Leases::default();
        assert_eq!(LeaseFile::new(&dir).load(&mut after, 0, 1_011).unwrap(), 0);
        assert!(after.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let dir = temp_dir("bad");
        std::fs::write(dir.join(FILE_NAME), "{\"version\": 1, \"leases\": [{}]}").unwrap();
        let err = LeaseFile::new(&dir)
            .load(&mut Leases::default(), 0, 0)
            .unwrap_err();
        assert!(matches!(err, LeaseFileError::Parse { .. }));
        assert!(
            err.to_string()
                .contains("dhcp-leases.json is not a lease file"),
            "{err}"
        );
        std::fs::write(dir.join(FILE_NAME), "{\"version\": 7, \"leases\": []}").unwrap();
        let err = LeaseFile::new(&dir)
            .load(&mut Leases::default(), 0, 0)
            .unwrap_err();
        assert!(
            matches!(err, LeaseFileError::Version { found: 7, .. }),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
