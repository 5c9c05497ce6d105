//! Reading log files into records for the shard store.
//!
//! Every reader turns its input into a stream of [`RecordResult`]: a JSON
//! document per event (flattened as Sigma expects, see `crate::event`), or a
//! [`Malformed`] that says where the bad record is and why. A reader never
//! aborts on a bad record and never panics; I/O errors end the stream with
//! a `Malformed` whose error names the I/O failure.

use serde::{Deserialize, Serialize};

/// Where a record came from, precise enough to find it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The input: a file path, or a stream name for gRPC ingest.
    pub source: String,
    /// 1-based line number, for line-oriented formats.
    pub line: Option<u64>,
    /// Byte offset of the record's start in the input.
    pub byte_offset: Option<u64>,
    /// 1-based record number, for record-oriented formats (EVTX).
    pub record: Option<u64>,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(record) = self.record {
            write!(f, " record {record}")?;
        }
        if let Some(offset) = self.byte_offset {
            write!(f, " (byte {offset})")?;
        }
        Ok(())
    }
}

/// A record that could not be read, kept aside with its position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Malformed {
    /// Where it is.
    pub position: Position,
    /// Why it was rejected.
    pub error: String,
    /// The raw record (lossy UTF-8), at most 4 KiB of it.
    pub raw: String,
    /// Length of the raw record in bytes.
    pub raw_len: u64,
}

/// One record of an input.
pub type RecordResult = Result<serde_json::Value, Malformed>;

pub mod auditd;
pub mod detect;
pub mod evtx;
pub mod jsonl;
pub mod syslog;
pub mod zeek;

pub use detect::{Format, detect, open};

use std::path::PathBuf;

/// Longest record (line) a line-oriented reader keeps: 16 MiB. A longer line
/// becomes a [`Malformed`] and only its first [`MAX_RAW_BYTES`] are kept.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// How much of a malformed record's raw bytes [`Malformed::raw`] keeps.
pub const MAX_RAW_BYTES: usize = 4 << 10;

/// Why an input could not be opened for ingest at all (as opposed to a bad
/// record inside it, which is a [`Malformed`]).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input file could not be opened or read.
    #[error("cannot {action} {}: {source}; check the path and its permissions", path.display())]
    Io {
        /// What was being done ("open", "read").
        action: &'static str,
        /// The input.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// `--format` named no known format.
    #[error(
        "unknown input format {given:?}; use one of: {} (or leave --format out to detect it)",
        Format::NAMES.join(", ")
    )]
    UnknownFormat {
        /// What was given.
        given: String,
    },
    /// The input is not an EVTX file the parser can read (bad file header).
    #[error(
        "{} is not a readable Windows event log (.evtx): {reason}; \
         check that the file is a complete .evtx export, or pass the right --format",
        path.display()
    )]
    Evtx {
        /// The input.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
}

impl IngestError {
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| IngestError::Io {
            action,
            path,
            source,
        }
    }
}

impl Malformed {
    /// A malformed record at `position`, keeping at most [`MAX_RAW_BYTES`] of
    /// `raw` (lossy UTF-8) and its full length.
    pub fn new(position: Position, error: impl Into<String>, raw: &[u8]) -> Self {
        let kept = raw.get(..MAX_RAW_BYTES).unwrap_or(raw);
        let mut text = String::from_utf8_lossy(kept).into_owned();
        // Cutting may split a character; drop the partial replacement char.
        if kept.len() < raw.len() && text.ends_with('\u{FFFD}') {
            text.pop();
        }
        Malformed {
            position,
            error: error.into(),
            raw: text,
            raw_len: raw.len() as u64,
        }
    }
}

impl Position {
    /// The position of a line: `source`, 1-based `line`, byte offset of its start.
    pub fn line(source: &str, line: u64, byte_offset: u64) -> Self {
        Position {
            source: source.to_owned(),
            line: Some(line),
            byte_offset: Some(byte_offset),
            record: None,
        }
    }
}
