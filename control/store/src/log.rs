//! The change log's framing: records appended one after the other, each
//! preceded by its length, a CRC-32 of that length, and a CRC-32 of its
//! bytes, so that a record that a crash cut short (or left half written)
//! is recognised when the log is read back.
//!
//! Only the end of the log can be torn: an append is the last write before
//! its fsync. A bad record anywhere else is corruption, not a crash, and
//! the log is refused rather than cut there: a length is trusted only with
//! its own checksum, so a corrupt length in the middle cannot pass for a
//! record that runs past the end (and get every later record cut off). A
//! tail of zeros (what some filesystems leave of an append a crash
//! interrupted) is torn, not corrupt.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Length, CRC-32 of the length, CRC-32 of the payload (u32s, little
/// endian).
const HEADER: usize = 12;

/// What a record of `payload_len` bytes takes in the log.
pub fn framed_len(payload_len: usize) -> u64 {
    (HEADER + payload_len) as u64
}

/// The bytes that frame `payload` as one record; a payload of 4 GiB or
/// more has no length to frame it with.
pub fn frame(payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a change record of {} bytes is over the log's 4 GiB limit",
                payload.len()
            ),
        )
    })?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&len.to_le_bytes()).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// A log read back.
#[derive(Debug, PartialEq, Eq)]
pub struct LogContents<'a> {
    /// The payloads of the whole records, in order.
    pub records: Vec<&'a [u8]>,
    /// Where the whole records end: the log's length once a torn end is cut.
    pub valid_len: u64,
    /// Why the bytes after `valid_len` are not a record, if there are any.
    pub torn: Option<String>,
}

/// Splits `bytes` into records. A bad record that reaches the end of the
/// bytes is a torn append (reported in `torn`); one followed by more
/// records is corruption (the error).
pub fn read(bytes: &[u8]) -> Result<LogContents<'_>, String> {
    let mut records = Vec::new();
    let mut at = 0;
    let torn = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        if rest.iter().all(|b| *b == 0) {
            break Some(format!("{} zero bytes after the last record", rest.len()));
        }
        if rest.len() < HEADER {
            break Some(format!("{} bytes of a record header", rest.len()));
        }
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let (len, len_crc, crc) = (word(0), word(4), word(8));
        if crc32fast::hash(&len.to_le_bytes()) != len_crc {
            return Err(format!(
                "the record header at byte {at} fails its checksum (and is not a torn end)"
            ));
        }
        let len = len as usize;
        let written = rest.len() - HEADER;
        if written < len {
            break Some(format!(
                "a record of {len} bytes with only {written} written"
            ));
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc32fast::hash(payload) != crc {
            if written > len {
                return Err(format!(
                    "the record at byte {at} fails its checksum and more records follow it"
                ));
            }
            break Some(format!("a record of {len} bytes that fails its checksum"));
        }
        records.push(payload);
        at += HEADER + len;
    };
    Ok(LogContents {
        records,
        valid_len: at as u64,
        torn,
    })
}

/// The log file, open for appending.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: File,
    /// The end of the last whole record: where the next one goes.
    len: u64,
    /// An append failed part way: bytes past `len` may be left to cut.
    dirty: bool,
}

impl Log {
    /// Opens (or creates) the log at `path` and returns it with its
    /// contents. The directory is synced when the file is new, so that the
    /// file itself survives a crash.
    pub fn open(path: &Path) -> std::io::Result<(Log, Vec<u8>)> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        if !existed {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let len = bytes.len() as u64;
        Ok((
            Log {
                path: path.to_path_buf(),
                file,
                len,
                dirty: false,
            },
            bytes,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole records.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Cuts the log to `len` bytes (a torn end, or everything once a
    /// snapshot holds it) and syncs that.
    pub fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.len = len;
        self.dirty = false;
        Ok(())
    }

    /// Appends one record and syncs it: once this returns, the record
    /// survives a crash. On failure the log's whole records are unchanged
    /// (a partial record left behind is cut before the next append, or
    /// read back as a torn end).
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if self.dirty {
            self.truncate(self.len)?;
        }
        let framed = frame(payload)?;
        let written = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&framed))
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += framed.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                // Best effort now (cut and synced: a record reported as
                // failed must not come back after a crash); the next
                // append cuts it otherwise.
                let len = self.len;
                if self.truncate(len).is_ok() {
                    self.dirty = false;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(payloads: &[&[u8]]) -> Vec<u8> {
        payloads.iter().flat_map(|p| frame(p).unwrap()).collect()
    }

    #[test]
    fn reads_back_what_was_framed() {
        let bytes = log_of(&[b"one", b"", b"three"]);
        let r = read(&bytes).unwrap();
        assert_eq!(r.records, [&b"one"[..], b"", b"three"]);
        assert_eq!((r.valid_len, r.torn), (bytes.len() as u64, None));
    }

    #[test]
    fn a_torn_end_is_dropped_and_said() {
        let whole = log_of(&[b"one", b"two"]);
        let first = frame(b"one").unwrap().len();
        // Cut anywhere in the second record: header or payload.
        for cut in first + 1..whole.len() {
            let r = read(&whole[..cut]).unwrap();
            assert_eq!(r.records, [&b"one"[..]], "cut at {cut}");
            assert_eq!(r.valid_len, first as u64);
            assert!(r.torn.is_some());
        }
        // The last record's bytes garbled (written out of order, then a crash).
        let mut garbled = whole.clone();
        *garbled.last_mut().unwrap() ^= 0xff;
        let r = read(&garbled).unwrap();
        assert_eq!(r.records, [&b"one"[..]]);
        assert!(r.torn.unwrap().contains("checksum"));
    }

    #[test]
    fn a_bad_record_in_the_middle_is_corruption() {
        let mut bytes = log_of(&[b"one", b"two"]);
        bytes[HEADER] ^= 0xff;
        assert!(read(&bytes).unwrap_err().contains("more records follow"));
    }

    /// A corrupt length that points past the end must not pass for a torn
    /// append (which would cut the records after it).
    #[test]
    fn a_corrupt_length_in_the_middle_is_corruption_not_a_torn_end() {
        let mut bytes = log_of(&[b"one", b"two", b"three"]);
        bytes[0] ^= 0x40;
        let e = read(&bytes).unwrap_err();
        assert!(e.contains("header at byte 0"), "{e}");
    }

    /// What a filesystem may leave of an interrupted append: zeros.
    #[test]
    fn a_zero_filled_tail_is_a_torn_end() {
        let mut bytes = log_of(&[b"one"]);
        let whole = bytes.len() as u64;
        bytes.extend([0u8; 100]);
        let r = read(&bytes).unwrap();
        assert_eq!(r.records, [&b"one"[..]]);
        assert_eq!(r.valid_len, whole);
        assert!(r.torn.unwrap().contains("zero bytes"));
    }
}
