//! Raft snapshots as files, so that no node ever holds a whole snapshot in
//! memory.
//!
//! A snapshot is every replicated row (state, findings, membership, triage
//! links), written from one RocksDB snapshot into a file under the data
//! directory's `snapshots/`. The raft message carries only a
//! [`SnapshotRef`]: index, term, length and SHA-256 of that file. The
//! leader's transport streams the file; the follower receives it into its
//! own `snapshots/` ([`Incoming`]), checks length and digest, and installs
//! it row by row in bounded batches (`Store::install_snapshot`).
//!
//! File layout: the magic `QSNAP`, the format as a little-endian `u32`,
//! then rows, each `family: u8, key length: u32 LE, key, value length:
//! u32 LE, value`, to the end of the file.

use crate::error::{CoordinatorError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// 5: rows streamed to a file, the message carries a [`SnapshotRef`].
pub const SNAPSHOT_FORMAT: u32 = 5;

const MAGIC: &[u8; 5] = b"QSNAP";
const HEADER_BYTES: u64 = 9;
/// Name prefix and suffix of complete snapshot files.
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".qsnap";
/// Suffix of files still being written (removed at start-up).
const PARTIAL: &str = ".part";

/// Buffer for reading and writing snapshot files.
const IO_BUFFER: usize = 256 * 1024;

/// Family tags of the rows.
pub const ROW_STATE: u8 = 0;
/// Rows of the findings family.
pub const ROW_FINDINGS: u8 = 1;
/// Rows of the membership family.
pub const ROW_CONF: u8 = 2;
/// Rows of the triage links family.
pub const ROW_TRIAGE_LINKS: u8 = 3;

/// What a snapshot message's data holds: which file, and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// [`SNAPSHOT_FORMAT`] of the writer.
    pub format: u32,
    /// Raft index the rows include everything up to.
    pub index: u64,
    /// Raft term of that entry.
    pub term: u64,
    /// File length.
    pub bytes: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

impl SnapshotRef {
    /// The file's name in a `snapshots/` directory; the same on every node,
    /// since replicas hold the same rows at the same index.
    pub fn file_name(&self) -> String {
        format!("{PREFIX}{:020}-{:020}{SUFFIX}", self.index, self.term)
    }

    /// The bytes a MsgSnapshot carries.
    pub fn encode(&self) -> Result<Vec<u8>> {
        crate::storage::encode(self)
    }

    /// Reads a MsgSnapshot's data, refusing other formats by name.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let reference: Self = crate::storage::decode(b"snapshot", data).map_err(|_| {
            CoordinatorError::Corrupt {
                key: "snapshot".to_owned(),
                detail: format!(
                    "the snapshot message is not a format-{SNAPSHOT_FORMAT} snapshot reference; run the same coordinator version on every node"
                ),
            }
        })?;
        if reference.format != SNAPSHOT_FORMAT {
            return Err(CoordinatorError::Corrupt {
                key: "snapshot".to_owned(),
                detail: format!(
                    "snapshot format {} is not {SNAPSHOT_FORMAT}; run the same coordinator version on every node",
                    reference.format
                ),
            });
        }
        Ok(reference)
    }
}

/// The snapshot directory of a coordinator data directory.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> CoordinatorError {
    move |source| CoordinatorError::Io { context, source }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Corrupt {
        key: path.display().to_string(),
        detail: detail.into(),
    }
}

/// A file being written under a temporary name, hashed as it is written;
/// it takes its final name only once complete and synced.
pub struct Incoming {
    dir: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Incoming {
    /// Starts a file in `dir` (created if needed, mode 0700).
    pub fn create(dir: &Path) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(format!(
                "cannot create the snapshot directory {}",
                dir.display()
            )))?;
        let name = format!(
            "incoming-{}-{}{PARTIAL}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = File::create(&path).map_err(io(format!(
            "cannot create the snapshot file {}",
            path.display()
        )))?;
        Ok(Self {
            dir: dir.to_owned(),
            path,
            file: BufWriter::with_capacity(IO_BUFFER, file),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.file.write_all(bytes).map_err(io(format!(
            "cannot write the snapshot file {} (is the disk full?)",
            self.path.display()
        )))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Syncs the file and gives it `reference`'s name, if its length and
    /// digest are `reference`'s; otherwise removes it.
    pub fn finish(mut self, reference: &SnapshotRef) -> Result<PathBuf> {
        let sha256 = self.sync()?;
        if self.bytes != reference.bytes || sha256 != reference.sha256 {
            return Err(corrupt(
                &self.path,
                format!(
                    "the snapshot at index {} arrived damaged ({} bytes, expected {}; digest {})",
                    reference.index,
                    self.bytes,
                    reference.bytes,
                    if sha256 == reference.sha256 {
                        "matches"
                    } else {
                        "differs"
                    }
                ),
            ));
        }
        place(&self.dir, &self.path, reference)
    }

    /// Flushes and syncs the file; returns the digest of everything written.
    fn sync(&mut self) -> Result<[u8; 32]> {
        let context = format!("cannot sync the snapshot file {}", self.path.display());
        self.file.flush().map_err(io(context.clone()))?;
        self.file.get_ref().sync_all().map_err(io(context))?;
        Ok(std::mem::take(&mut self.hasher).finalize().into())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Still under its temporary name: `finish` failed or never ran (a
        // cut stream), and the partial file is useless.
        if self.path.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Renames a synced file to `reference`'s name and syncs the directory.
fn place(dir: &Path, from: &Path, reference: &SnapshotRef) -> Result<PathBuf> {
    let to = dir.join(reference.file_name());
    std::fs::rename(from, &to).map_err(io(format!(
        "cannot move the snapshot file {} into place",
        from.display()
    )))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!(
            "cannot sync the snapshot directory {}",
            dir.display()
        )))?;
    Ok(to)
}

/// Writes rows into a new snapshot file.
pub struct RowWriter {
    incoming: Incoming,
}

impl RowWriter {
    /// Starts a snapshot file in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let mut incoming = Incoming::create(dir)?;
        incoming.write(MAGIC)?;
        incoming.write(&SNAPSHOT_FORMAT.to_le_bytes())?;
        Ok(Self { incoming })
    }

    /// Appends one row.
    pub fn row(&mut self, family: u8, key: &[u8], value: &[u8]) -> Result<()> {
        let too_big = || {
            CoordinatorError::InvalidArgument(format!(
                "a row of {} bytes cannot go into a snapshot (4 GiB at most)",
                key.len() + value.len()
            ))
        };
        let key_len = u32::try_from(key.len()).map_err(|_| too_big())?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_big())?;
        self.incoming.write(&[family])?;
        self.incoming.write(&key_len.to_le_bytes())?;
        self.incoming.write(key)?;
        self.incoming.write(&value_len.to_le_bytes())?;
        self.incoming.write(value)
    }

    /// Syncs the file, names it for `index` and `term`, and returns its
    /// reference.
    pub fn finish(self, index: u64, term: u64) -> Result<SnapshotRef> {
        let mut incoming = self.incoming;
        let sha256 = incoming.sync()?;
        let reference = SnapshotRef {
            format: SNAPSHOT_FORMAT,
            index,
            term,
            bytes: incoming.bytes,
            sha256,
        };
        place(&incoming.dir, &incoming.path, &reference)?;
        Ok(reference)
    }
}

/// Reads a snapshot file's rows, after checking it is the file its
/// reference describes.
pub struct RowReader {
    path: PathBuf,
    file: BufReader<File>,
    left: u64,
}

/// One row: family tag, key, value.
pub type Row = (u8, Vec<u8>, Vec<u8>);

impl RowReader {
    /// Opens `reference`'s file in `dir`, checking length and digest first
    /// (one pass over the file) so a damaged file is refused before
    /// anything is replaced.
    pub fn open(dir: &Path, reference: &SnapshotRef) -> Result<Self> {
        let path = dir.join(reference.file_name());
        let open = || {
            File::open(&path).map_err(io(format!(
                "cannot open the snapshot file {}",
                path.display()
            )))
        };
        let mut file = open()?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; IO_BUFFER];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buffer).map_err(io(format!(
                "cannot read the snapshot file {}",
                path.display()
            )))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            bytes += n as u64;
        }
        let sha256: [u8; 32] = hasher.finalize().into();
        if bytes != reference.bytes || sha256 != reference.sha256 {
            return Err(corrupt(
                &path,
                format!(
                    "the snapshot file does not match its reference ({bytes} bytes, expected {}{})",
                    reference.bytes,
                    if sha256 == reference.sha256 {
                        ""
                    } else {
                        "; digest differs"
                    }
                ),
            ));
        }
        let mut file = BufReader::with_capacity(IO_BUFFER, open()?);
        let mut header = [0u8; HEADER_BYTES as usize];
        file.read_exact(&mut header)
            .map_err(|_| corrupt(&path, "shorter than a snapshot header"))?;
        if &header[..5] != MAGIC {
            return Err(corrupt(&path, "not a Quarry snapshot file"));
        }
        let format = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        if format != SNAPSHOT_FORMAT {
            return Err(corrupt(
                &path,
                format!("snapshot format {format} is not {SNAPSHOT_FORMAT}"),
            ));
        }
        Ok(Self {
            path,
            file,
            left: bytes - HEADER_BYTES,
        })
    }

    /// The file this reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn take(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.left {
            return Err(corrupt(&self.path, "a row runs past the end of the file"));
        }
        let mut out = vec![0u8; n as usize];
        self.file.read_exact(&mut out).map_err(io(format!(
            "cannot read the snapshot file {}",
            self.path.display()
        )))?;
        self.left -= n;
        Ok(out)
    }

    fn take_len(&mut self) -> Result<u64> {
        let bytes = self.take(4)?;
        Ok(u64::from(u32::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3],
        ])))
    }

    /// The next row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        if self.left == 0 {
            return Ok(None);
        }
        let family = self.take(1)?[0];
        let key_len = self.take_len()?;
        let key = self.take(key_len)?;
        let value_len = self.take_len()?;
        let value = self.take(value_len)?;
        Ok(Some((family, key, value)))
    }
}

/// The index a snapshot file's name gives, if it is one.
fn index_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    rest.split('-').next()?.parse().ok()
}

/// Removes snapshot files at or below `index` and, with `partial`, files
/// left half-written by a crash. Files above `index` may still be
/// installed. Errors are logged: a stale file only costs disk space.
pub fn remove_up_to(dir: &Path, index: u64, partial: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale =
            index_of(name).is_some_and(|i| i <= index) || (partial && name.ends_with(PARTIAL));
        if stale && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an old snapshot file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rows: &[Row]) -> SnapshotRef {
        let mut writer = RowWriter::create(dir).expect("create");
        for (family, key, value) in rows {
            writer.row(*family, key, value).expect("row");
        }
        writer.finish(42, 3).expect("finish")
    }

    fn read_all(dir: &Path, reference: &SnapshotRef) -> Result<Vec<Row>> {
        let mut reader = RowReader::open(dir, reference)?;
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row()? {
            rows.push(row);
        }
        Ok(rows)
    }

    #[test]
    fn rows_round_trip_through_a_named_synced_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = vec![
            (ROW_STATE, b"h/1".to_vec(), vec![1, 2, 3]),
            (ROW_FINDINGS, b"f/1/0".to_vec(), Vec::new()),
            (ROW_CONF, Vec::new(), vec![9; 70_000]),
        ];
        let reference = write(dir.path(), &rows);
        assert_eq!(reference.index, 42);
        let path = dir.path().join(reference.file_name());
        assert_eq!(
            std::fs::metadata(&path).expect("file").len(),
            reference.bytes
        );
        assert_eq!(read_all(dir.path(), &reference).expect("read"), rows);
        let back = SnapshotRef::decode(&reference.encode().expect("encode")).expect("decode");
        assert_eq!(back, reference);
        // Nothing half-written is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(reference.file_name())]);
    }

    #[test]
    fn a_damaged_or_truncated_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reference = write(dir.path(), &[(ROW_STATE, b"k".to_vec(), vec![5; 1000])]);
        let path = dir.path().join(reference.file_name());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let err = read_all(dir.path(), &reference).expect_err("damaged");
        assert!(err.to_string().contains("digest differs"), "{err}");
        assert!(err.to_string().contains(&reference.file_name()), "{err}");
        bytes.truncate(50);
        std::fs::write(&path, &bytes).expect("write");
        let err = read_all(dir.path(), &reference).expect_err("truncated");
        assert!(err.to_string().contains("expected"), "{err}");
    }

    #[test]
    fn a_received_file_takes_its_name_only_when_length_and_digest_match() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let reference = write(from.path(), &[(ROW_FINDINGS, b"k".to_vec(), vec![7; 5000])]);
        let bytes = std::fs::read(from.path().join(reference.file_name())).expect("read");

        let mut cut = Incoming::create(to.path()).expect("incoming");
        cut.write(&bytes[..bytes.len() - 1]).expect("write");
        let err = cut.finish(&reference).expect_err("short");
        assert!(err.to_string().contains("arrived damaged"), "{err}");

        let mut whole = Incoming::create(to.path()).expect("incoming");
        for chunk in bytes.chunks(1000) {
            whole.write(chunk).expect("write");
        }
        whole.finish(&reference).expect("finish");
        let names: Vec<_> = std::fs::read_dir(to.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(reference.file_name())]);
        assert_eq!(read_all(to.path(), &reference).expect("read").len(), 1);
    }

    #[test]
    fn old_snapshot_files_and_partial_ones_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut names = Vec::new();
        for index in [10u64, 20, 30] {
            let mut writer = RowWriter::create(dir.path()).expect("create");
            writer.row(ROW_STATE, b"k", b"v").expect("row");
            names.push(writer.finish(index, 1).expect("finish").file_name());
        }
        std::fs::write(dir.path().join("incoming-1-1.part"), b"half").expect("write");
        remove_up_to(dir.path(), 20, true);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        assert_eq!(left, vec![names[2].clone()]);
    }
}
