//! The worker's on-disk shard store.
//!
//! A shard is a named, labelled, immutable collection of events. This is the
//! simple, durable layout (format [`FORMAT_JSONL_V1`]); a later version replaces
//! the event file with compressed segments and a block index, behind the same
//! API.
//!
//! ```text
//! <root>/
//!   <shard-name>/
//!     meta.json         ShardMeta, written last and atomically
//!     events.jsonl      normalised events, one per line, in ingest order
//!     malformed.jsonl   records that failed to parse (MalformedRecord per line)
//!   .ingest-<process>-<seq>-<shard-name>/   an ingest in progress
//! ```
//!
//! Crash safety: an ingest writes everything into a temporary directory, fsyncs
//! the files and the directory, then renames the directory into place and
//! fsyncs the root. A crash before the rename leaves only a temporary directory,
//! which the next [`ShardStore::open`] by another process removes; a crash
//! after it leaves a complete shard. There is never half a shard under a shard
//! name.
//!
//! Damaged shards on open: a shard directory whose `meta.json` is missing or
//! unreadable, whose meta names another shard, or that has no `events.jsonl`
//! is *skipped* with a `tracing::warn` and listed by [`ShardStore::skipped`],
//! rather than failing [`ShardStore::open`]. One damaged shard must not keep a
//! worker from serving all the others; the agent reports the skipped ones so an
//! operator can re-ingest them. The directory is left untouched (nothing
//! already stored is deleted) and its name stays taken until it is removed.
//!
//! A root directory belongs to one worker process at a time.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{StoredEvent, event_timestamp_ms, normalize};

/// File holding a shard's events.
pub const EVENTS_FILE: &str = "events.jsonl";
/// File holding a shard's [`ShardMeta`].
pub const META_FILE: &str = "meta.json";
/// File holding a shard's [`MalformedRecord`]s.
pub const MALFORMED_FILE: &str = "malformed.jsonl";
/// The storage format written by this version: JSON lines.
pub const FORMAT_JSONL_V1: &str = "jsonl-v1";
/// Longest shard name.
pub const MAX_SHARD_NAME_LEN: usize = 128;
/// How much of a malformed line is kept aside (the rest is counted, not kept).
pub const MAX_MALFORMED_RAW_BYTES: usize = 4096;
/// Longest input line accepted as one record. Longer lines are malformed:
/// this bounds the memory one bad input can take.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// Prefix of in-progress ingest directories. Shard names cannot start with a
/// dot, so these never collide with a shard.
const TEMP_PREFIX: &str = ".ingest-";

/// Numbers this process's temporary ingest directories.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Tells this process's temporary directories from those of earlier ones.
///
/// A pid alone is not enough: in a container the worker is often pid 1 on
/// every start, and a crashed ingest's directory would then look like one of
/// ours forever. Hex only, so it cannot contain the `-` separator.
fn process_nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{:x}{nanos:x}", std::process::id())
    })
}

/// Errors of the shard store.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A shard name does not follow `[a-z0-9][a-z0-9._-]{0,127}`.
    #[error(
        "invalid shard name {name:?}: {reason}; a shard name is 1 to 128 characters from \
         a-z, 0-9, '.', '_' and '-', starting with a letter or a digit"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A label is unusable.
    #[error("invalid label {key:?} for shard {shard:?}: {reason}")]
    InvalidLabel {
        /// The shard being ingested.
        shard: String,
        /// The offending label key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Ingest into a name that is taken.
    #[error(
        "shard {name:?} already exists at {}; shards are immutable: ingest under a new \
         name, or stop the worker and remove that directory to replace it",
        path.display()
    )]
    AlreadyExists {
        /// The shard name.
        name: String,
        /// The existing shard directory.
        path: PathBuf,
    },

    /// No shard by that name.
    #[error("no shard named {name:?} in {}; known shards: {known}", root.display())]
    NotFound {
        /// The requested name.
        name: String,
        /// The store's root directory.
        root: PathBuf,
        /// Comma-separated names of the shards the store holds (or `none`).
        known: String,
    },

    /// A file-system operation failed.
    #[error(
        "could not {action} {}: {source}; check that the path exists, that the disk is not \
         full and that the worker may read and write there",
        path.display()
    )]
    Io {
        /// What the store was doing (`create`, `read`, `rename`, …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Reading the ingest input failed (not a malformed record: the input
    /// itself could not be read).
    #[error(
        "reading the input for shard {shard:?} failed at line {line}: {source}; nothing was \
         stored, fix the input and ingest it again"
    )]
    Input {
        /// The shard being ingested.
        shard: String,
        /// 1-based line number being read.
        line: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A stored shard file does not hold what the store wrote.
    #[error(
        "shard {shard:?} is damaged: {} line {line}: {reason}; it cannot be scanned, \
         remove its directory and ingest it again from the source",
        path.display()
    )]
    Corrupt {
        /// The shard.
        shard: String,
        /// The damaged file.
        path: PathBuf,
        /// 1-based line number where the damage was found (0: the whole file).
        line: u64,
        /// What was found.
        reason: String,
    },

    /// Serialising store metadata failed (not expected with valid inputs).
    #[error("could not encode {what} for shard {shard:?}: {source}")]
    Encode {
        /// The shard.
        shard: String,
        /// What was being encoded.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ShardError {
    move |source| ShardError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What the store knows about one shard (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// The shard name (also its directory name).
    pub name: String,
    /// Labels for scope selectors and triage enrichment (`env=prod`, `host=DC01`).
    pub labels: BTreeMap<String, String>,
    /// Storage format of the shard's files ([`FORMAT_JSONL_V1`]).
    pub format: String,
    /// Events stored.
    pub event_count: u64,
    /// Earliest event time (ms since the epoch, UTC) among events with a
    /// recognisable timestamp; `None` when no event has one.
    pub min_ts_ms: Option<i64>,
    /// Latest event time, as [`ShardMeta::min_ts_ms`].
    pub max_ts_ms: Option<i64>,
    /// Events stored without a recognisable timestamp (timestamp 0). They are
    /// not part of `min_ts_ms..=max_ts_ms`.
    pub untimed_count: u64,
    /// Input records that failed to parse, kept in `malformed.jsonl`.
    pub malformed_count: u64,
    /// When the shard was written (ms since the epoch, UTC).
    pub created_at_ms: i64,
}

impl ShardMeta {
    /// Whether any stored event can have a timestamp in `[start, end)`.
    pub fn may_overlap(&self, start: i64, end: i64) -> bool {
        if start >= end {
            return false;
        }
        let timed = match (self.min_ts_ms, self.max_ts_ms) {
            (Some(min), Some(max)) => start <= max && min < end,
            _ => false,
        };
        // Untimed events are stored with timestamp 0.
        timed || (self.untimed_count > 0 && start <= 0 && 0 < end)
    }
}

/// One input record that could not be stored, as kept in `malformed.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MalformedRecord {
    /// 1-based line number in the input.
    pub line: u64,
    /// Byte offset of the line's start in the input.
    pub byte_offset: u64,
    /// Why it was rejected.
    pub error: String,
    /// The raw line (lossily decoded as UTF-8), at most
    /// [`MAX_MALFORMED_RAW_BYTES`] bytes of it.
    pub raw: String,
    /// Length of the raw line in bytes (larger than `raw` when truncated).
    pub raw_len: u64,
}

/// The outcome of [`ShardStore::ingest_jsonl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// The new shard's metadata.
    pub meta: ShardMeta,
    /// Input lines read, blank ones included.
    pub lines_read: u64,
    /// Blank lines skipped (they hold no record).
    pub blank_lines: u64,
    /// Events stored.
    pub events_stored: u64,
    /// Records kept aside as malformed.
    pub malformed: u64,
    /// Events stored without a recognisable timestamp (given timestamp 0).
    pub without_timestamp: u64,
}

/// The outcome of [`ShardStore::scan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Events read and decoded from disk.
    pub events_read: u64,
    /// Events read but outside the time range.
    pub events_skipped: u64,
    /// Events handed to the callback.
    pub events_emitted: u64,
    /// Callback invocations.
    pub batches: u64,
    /// True when the shard's time bounds showed that no event could be in
    /// range, so nothing was read at all.
    pub pruned: bool,
}

/// A shard directory that [`ShardStore::open`] could not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedShard {
    /// The directory.
    pub path: PathBuf,
    /// Why it was skipped, with what to do about it.
    pub reason: String,
}

/// The shard store, rooted at one directory.
///
/// Metadata of every shard is held in memory; events are streamed from disk.
/// Methods take `&self`, so one store can be shared between tasks.
#[derive(Debug)]
pub struct ShardStore {
    root: PathBuf,
    metas: RwLock<BTreeMap<String, ShardMeta>>,
    skipped: Vec<SkippedShard>,
}

impl ShardStore {
    /// Opens (creating if needed) the store at `root` and loads every shard's
    /// metadata.
    ///
    /// Damaged shard directories are skipped, not fatal (see the module
    /// documentation and [`ShardStore::skipped`]). Leftover temporary ingest
    /// directories of other processes (crashed ingests) are removed. Fails
    /// only when the root itself cannot be created or listed.
    ///
    /// # Errors
    ///
    /// [`ShardError::Io`] when the root cannot be created or listed.
    pub fn open(root: &Path) -> Result<Self, ShardError> {
        fs::create_dir_all(root).map_err(io_err("create the shard root", root))?;
        let entries = fs::read_dir(root).map_err(io_err("list the shard root", root))?;
        let our_temp_prefix = format!("{TEMP_PREFIX}{}-", process_nonce());
        let mut metas = BTreeMap::new();
        let mut skipped = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list the shard root", root))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "ignoring a non-UTF-8 name in the shard root");
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if file_name.starts_with(TEMP_PREFIX) {
                // Another process's unfinished ingest: it crashed before the
                // rename, so the directory holds no shard. Our own process's
                // temporaries may belong to an ingest running right now.
                if is_dir && !file_name.starts_with(&our_temp_prefix) {
                    tracing::warn!(path = %path.display(), "removing an interrupted ingest");
                    if let Err(error) = fs::remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), %error, "could not remove an interrupted ingest");
                    }
                }
                continue;
            }
            if !is_dir || file_name.starts_with('.') {
                continue;
            }
            match load_shard_dir(&path, &file_name) {
                Ok(meta) => {
                    metas.insert(file_name, meta);
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping a damaged shard");
                    skipped.push(SkippedShard { path, reason });
                }
            }
        }
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            root: root.to_path_buf(),
            metas: RwLock::new(metas),
            skipped,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of shard `name` (whether or not it exists).
    pub fn shard_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Metadata of every shard, sorted by name.
    pub fn list(&self) -> Vec<ShardMeta> {
        self.read_metas().values().cloned().collect()
    }

    /// Metadata of shard `name`.
    pub fn get(&self, name: &str) -> Option<ShardMeta> {
        self.read_metas().get(name).cloned()
    }

    /// Shard directories that [`ShardStore::open`] skipped as damaged.
    pub fn skipped(&self) -> &[SkippedShard] {
        &self.skipped
    }

    /// Ingests JSON lines as a new shard.
    ///
    /// Each non-blank line must be one JSON object; it is normalised
    /// ([`normalize`]) and stored with its timestamp ([`event_timestamp_ms`];
    /// 0 and counted when there is none). A line that is not valid UTF-8, not
    /// JSON, not an object or longer than [`MAX_RECORD_BYTES`] is kept aside in
    /// `malformed.jsonl` with its line number and byte offset, and counted.
    /// Blank lines are skipped; `\r\n` endings and a leading byte-order mark
    /// are accepted.
    ///
    /// # Errors
    ///
    /// Fails, leaving nothing behind: [`ShardError::InvalidName`] or
    /// [`ShardError::InvalidLabel`] for bad arguments,
    /// [`ShardError::AlreadyExists`] when the name is taken,
    /// [`ShardError::Input`] when the input cannot be read, and
    /// [`ShardError::Io`] when the disk fails. Malformed records are not
    /// errors.
    pub fn ingest_jsonl(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        mut input: impl BufRead,
    ) -> Result<IngestReport, ShardError> {
        validate_shard_name(name)?;
        for key in labels.keys() {
            if key.is_empty() || key.chars().any(char::is_control) {
                return Err(ShardError::InvalidLabel {
                    shard: name.to_owned(),
                    key: key.clone(),
                    reason: "label keys must be non-empty and free of control characters"
                        .to_owned(),
                });
            }
        }
        let final_dir = self.shard_dir(name);
        // Checked here for a fast, clear error; the rename below is the real
        // guard against two ingests racing for the same name.
        if self.read_metas().contains_key(name) || fs::symlink_metadata(&final_dir).is_ok() {
            return Err(ShardError::AlreadyExists {
                name: name.to_owned(),
                path: final_dir,
            });
        }

        let seq = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let temp_dir = self
            .root
            .join(format!("{TEMP_PREFIX}{}-{seq}-{name}", process_nonce()));
        fs::create_dir(&temp_dir).map_err(io_err("create", &temp_dir))?;
        let mut guard = TempDirGuard {
            path: Some(temp_dir.clone()),
        };

        let events_path = temp_dir.join(EVENTS_FILE);
        let malformed_path = temp_dir.join(MALFORMED_FILE);
        let mut events = BufWriter::with_capacity(
            256 << 10,
            File::create(&events_path).map_err(io_err("create", &events_path))?,
        );
        let mut malformed = BufWriter::new(
            File::create(&malformed_path).map_err(io_err("create", &malformed_path))?,
        );

        let mut report = IngestReport {
            meta: ShardMeta {
                name: name.to_owned(),
                labels,
                format: FORMAT_JSONL_V1.to_owned(),
                event_count: 0,
                min_ts_ms: None,
                max_ts_ms: None,
                untimed_count: 0,
                malformed_count: 0,
                created_at_ms: now_ms(),
            },
            lines_read: 0,
            blank_lines: 0,
            events_stored: 0,
            malformed: 0,
            without_timestamp: 0,
        };
        let mut line = Vec::with_capacity(4096);
        let mut byte_offset = 0u64;
        loop {
            let read =
                read_line_bounded(&mut input, &mut line, MAX_RECORD_BYTES).map_err(|source| {
                    ShardError::Input {
                        shard: name.to_owned(),
                        line: report.lines_read + 1,
                        source,
                    }
                })?;
            let (consumed, overflow) = (read.consumed, read.overflow);
            if consumed == 0 {
                break;
            }
            report.lines_read += 1;
            let line_no = report.lines_read;
            let line_offset = byte_offset;
            byte_offset += consumed as u64;

            let mut record: &[u8] = &line;
            if line_no == 1 {
                record = record.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(record);
            }
            record = record.strip_suffix(b"\n").unwrap_or(record);
            record = record.strip_suffix(b"\r").unwrap_or(record);
            if !overflow && record.iter().all(u8::is_ascii_whitespace) {
                report.blank_lines += 1;
                continue;
            }

            match parse_record(record, overflow) {
                Ok(doc) => {
                    let doc = normalize(doc);
                    match event_timestamp_ms(&doc) {
                        Some(ts) => {
                            let meta = &mut report.meta;
                            meta.min_ts_ms = Some(meta.min_ts_ms.map_or(ts, |m| m.min(ts)));
                            meta.max_ts_ms = Some(meta.max_ts_ms.map_or(ts, |m| m.max(ts)));
                        }
                        None => report.without_timestamp += 1,
                    }
                    serde_json::to_writer(&mut events, &doc)
                        .map_err(io::Error::from)
                        .and_then(|()| events.write_all(b"\n"))
                        .map_err(io_err("write", &events_path))?;
                    report.events_stored += 1;
                }
                Err(error) => {
                    let kept = record.get(..MAX_MALFORMED_RAW_BYTES).unwrap_or(record);
                    let mut raw = String::from_utf8_lossy(kept).into_owned();
                    // Cutting at 4 KiB may split a character; drop the partial
                    // replacement character rather than keep noise.
                    if kept.len() < record.len() && raw.ends_with('\u{FFFD}') {
                        raw.pop();
                    }
                    let entry = MalformedRecord {
                        line: line_no,
                        byte_offset: line_offset,
                        error,
                        raw,
                        // An overflowing line was only partly kept: its length
                        // is what was consumed, less the newline.
                        raw_len: if overflow {
                            (consumed - usize::from(read.newline)) as u64
                        } else {
                            record.len() as u64
                        },
                    };
                    serde_json::to_writer(&mut malformed, &entry)
                        .map_err(io::Error::from)
                        .and_then(|()| malformed.write_all(b"\n"))
                        .map_err(io_err("write", &malformed_path))?;
                    report.malformed += 1;
                }
            }
        }

        report.meta.event_count = report.events_stored;
        report.meta.untimed_count = report.without_timestamp;
        report.meta.malformed_count = report.malformed;

        finish_file(events, &events_path)?;
        finish_file(malformed, &malformed_path)?;
        let meta_bytes =
            serde_json::to_vec_pretty(&report.meta).map_err(|source| ShardError::Encode {
                shard: name.to_owned(),
                what: "meta.json",
                source,
            })?;
        write_atomic(&temp_dir.join(META_FILE), &meta_bytes)?;
        sync_dir(&temp_dir)?;

        // Publish: one rename makes the whole shard visible at once. Renaming
        // a directory onto an existing non-empty one fails, so a racing ingest
        // of the same name cannot replace a finished shard.
        if let Err(source) = fs::rename(&temp_dir, &final_dir) {
            if fs::symlink_metadata(&final_dir).is_ok() {
                return Err(ShardError::AlreadyExists {
                    name: name.to_owned(),
                    path: final_dir,
                });
            }
            return Err(ShardError::Io {
                action: "rename the ingested shard into place at",
                path: final_dir,
                source,
            });
        }
        guard.path = None;
        sync_dir(&self.root)?;

        self.write_metas()
            .insert(name.to_owned(), report.meta.clone());
        tracing::info!(
            shard = name,
            events = report.events_stored,
            malformed = report.malformed,
            without_timestamp = report.without_timestamp,
            "shard ingested"
        );
        Ok(report)
    }

    /// Streams the events of shard `name` to `f` in batches of up to
    /// `batch_size` (at least 1), in offset order.
    ///
    /// With a `time_range` `(start, end)`, only events with
    /// `start <= timestamp_ms < end` are passed on; events without a timestamp
    /// have timestamp 0. When the shard's bounds rule the range out, nothing is
    /// read ([`ScanStats::pruned`]).
    ///
    /// # Errors
    ///
    /// An error from `f` stops the scan and is returned as is.
    /// [`ShardError::NotFound`] for an unknown shard, [`ShardError::Io`] when
    /// the event file cannot be read, and [`ShardError::Corrupt`] when it does
    /// not hold what was stored (a line that is not JSON, or fewer or more
    /// events than `meta.json` records), converted into `E`.
    pub fn scan<E, F>(
        &self,
        name: &str,
        time_range: Option<(i64, i64)>,
        batch_size: usize,
        mut f: F,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
        F: FnMut(&[StoredEvent]) -> Result<(), E>,
    {
        let meta = self.get(name).ok_or_else(|| self.not_found(name))?;
        let mut stats = ScanStats::default();
        if let Some((start, end)) = time_range
            && !meta.may_overlap(start, end)
        {
            stats.pruned = true;
            return Ok(stats);
        }

        let path = self.shard_dir(name).join(EVENTS_FILE);
        let file = File::open(&path).map_err(io_err("open", &path))?;
        let mut reader = BufReader::with_capacity(256 << 10, file);
        let batch_size = batch_size.max(1);
        let mut batch: Vec<StoredEvent> = Vec::with_capacity(batch_size.min(65_536));
        let mut line = Vec::with_capacity(4096);
        let corrupt = |line_no: u64, reason: String| ShardError::Corrupt {
            shard: name.to_owned(),
            path: path.clone(),
            line: line_no,
            reason,
        };
        loop {
            // Stored lines were at most MAX_RECORD_BYTES of input; normalising
            // and re-encoding can make them somewhat longer, hence the margin.
            let read = read_line_bounded(&mut reader, &mut line, 2 * MAX_RECORD_BYTES)
                .map_err(io_err("read", &path))?;
            if read.consumed == 0 {
                break;
            }
            let line_no = stats.events_read + 1;
            if read.overflow {
                return Err(corrupt(line_no, "line is longer than any stored event".into()).into());
            }
            let record = line.strip_suffix(b"\n").unwrap_or(&line);
            let doc: Value = serde_json::from_slice(record)
                .map_err(|e| corrupt(line_no, format!("not a JSON event ({e})")))?;
            let offset = stats.events_read;
            stats.events_read += 1;
            let timestamp_ms = event_timestamp_ms(&doc).unwrap_or(0);
            if let Some((start, end)) = time_range
                && !(start <= timestamp_ms && timestamp_ms < end)
            {
                stats.events_skipped += 1;
                continue;
            }
            batch.push(StoredEvent {
                offset,
                timestamp_ms,
                doc,
            });
            if batch.len() >= batch_size {
                stats.events_emitted += batch.len() as u64;
                stats.batches += 1;
                f(&batch)?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            stats.events_emitted += batch.len() as u64;
            stats.batches += 1;
            f(&batch)?;
        }
        // A file that ends early (truncated by a disk fault) must not pass for
        // a complete scan.
        if stats.events_read != meta.event_count {
            return Err(corrupt(
                0,
                format!(
                    "meta.json records {} events but the file holds {}",
                    meta.event_count, stats.events_read
                ),
            )
            .into());
        }
        Ok(stats)
    }

    /// The malformed records kept aside when shard `name` was ingested.
    ///
    /// # Errors
    ///
    /// [`ShardError::NotFound`], [`ShardError::Io`] or
    /// [`ShardError::Corrupt`] when the file cannot be read back.
    pub fn malformed(&self, name: &str) -> Result<Vec<MalformedRecord>, ShardError> {
        if self.get(name).is_none() {
            return Err(self.not_found(name));
        }
        let path = self.shard_dir(name).join(MALFORMED_FILE);
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| ShardError::Corrupt {
                    shard: name.to_owned(),
                    path: path.clone(),
                    line: i as u64 + 1,
                    reason: format!("not a malformed-record entry ({e})"),
                })
            })
            .collect()
    }

    fn not_found(&self, name: &str) -> ShardError {
        let names: Vec<String> = self.read_metas().keys().cloned().collect();
        ShardError::NotFound {
            name: name.to_owned(),
            root: self.root.clone(),
            known: if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            },
        }
    }

    // A poisoned lock only means another thread panicked while holding it; the
    // map is updated by a single insert, so it is still consistent.
    fn read_metas(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ShardMeta>> {
        self.metas.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_metas(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ShardMeta>> {
        self.metas.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks a shard name against `[a-z0-9][a-z0-9._-]{0,127}`.
///
/// # Errors
///
/// [`ShardError::InvalidName`], saying what is wrong.
pub fn validate_shard_name(name: &str) -> Result<(), ShardError> {
    let invalid = |reason: String| ShardError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let Some(first) = name.chars().next() else {
        return Err(invalid("it is empty".to_owned()));
    };
    if name.len() > MAX_SHARD_NAME_LEN {
        return Err(invalid(format!("it is {} characters long", name.len())));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid(format!("it starts with {first:?}")));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!("it contains {bad:?}")));
    }
    Ok(())
}

/// Loads and checks one shard directory; the error is a reason for skipping it.
fn load_shard_dir(dir: &Path, dir_name: &str) -> Result<ShardMeta, String> {
    const FIX: &str = "stop the worker, remove the directory and ingest the shard again";
    if let Err(e) = validate_shard_name(dir_name) {
        return Err(format!("{e}; this directory is not a shard"));
    }
    let meta_path = dir.join(META_FILE);
    let bytes = match fs::read(&meta_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "{} is missing, so the shard is incomplete or was not written by Quarry; {FIX}",
                meta_path.display()
            ));
        }
        Err(e) => return Err(format!("could not read {}: {e}", meta_path.display())),
    };
    let meta: ShardMeta = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not valid shard metadata ({e}); {FIX}",
            meta_path.display()
        )
    })?;
    if meta.name != dir_name {
        return Err(format!(
            "{} names shard {:?}, not {dir_name:?}; {FIX}",
            meta_path.display(),
            meta.name
        ));
    }
    if meta.format != FORMAT_JSONL_V1 {
        return Err(format!(
            "{} has format {:?}, which this worker cannot read (it reads {FORMAT_JSONL_V1:?}); \
             run a worker version that supports it",
            meta_path.display(),
            meta.format
        ));
    }
    let events_path = dir.join(EVENTS_FILE);
    if !events_path.is_file() {
        return Err(format!("{} is missing; {FIX}", events_path.display()));
    }
    Ok(meta)
}

/// Parses one input record; the error says why it is malformed.
fn parse_record(record: &[u8], overflow: bool) -> Result<Value, String> {
    if overflow {
        return Err(format!(
            "record is longer than {MAX_RECORD_BYTES} bytes; split it or raise the limit"
        ));
    }
    let text = std::str::from_utf8(record)
        .map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))?;
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    match doc {
        Value::Object(_) => Ok(doc),
        Value::Array(_) => Err("expected a JSON object per line, found an array".to_owned()),
        Value::String(_) => Err("expected a JSON object per line, found a string".to_owned()),
        Value::Number(_) => Err("expected a JSON object per line, found a number".to_owned()),
        Value::Bool(_) => Err("expected a JSON object per line, found a boolean".to_owned()),
        Value::Null => Err("expected a JSON object per line, found null".to_owned()),
    }
}

/// What [`read_line_bounded`] read.
#[derive(Debug, Clone, Copy)]
struct LineRead {
    /// Bytes consumed from the input, newline included; 0 at end of input.
    consumed: usize,
    /// The line was longer than the limit; only its start is in the buffer.
    overflow: bool,
    /// The line ended with `\n` (the last line of an input may not).
    newline: bool,
}

/// Reads one line (through `\n`, or to end of input) into `buf`, keeping at
/// most `max` bytes of it and discarding the rest of an overlong line, so one
/// bad input cannot take unbounded memory.
fn read_line_bounded(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut consumed = 0;
    let mut overflow = false;
    let mut newline = false;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let (chunk_len, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk_len > room {
            buf.extend_from_slice(&available[..room]);
            overflow = true;
        } else {
            buf.extend_from_slice(&available[..chunk_len]);
        }
        input.consume(chunk_len);
        consumed += chunk_len;
        if done {
            newline = true;
            break;
        }
    }
    Ok(LineRead {
        consumed,
        overflow,
        newline,
    })
}

/// Flushes and fsyncs a written file.
fn finish_file(writer: BufWriter<File>, path: &Path) -> Result<(), ShardError> {
    let file = writer.into_inner().map_err(|e| ShardError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err("fsync", path))
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, and an
/// fsync of the directory, so a crash leaves either the old file or the new.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ShardError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = File::create(&temp).map_err(io_err("create", &temp))?;
    file.write_all(bytes).map_err(io_err("write", &temp))?;
    file.sync_all().map_err(io_err("fsync", &temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io_err("rename into place", path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ShardError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", dir))?;
    }
    // Other platforms cannot open a directory as a file; their file systems
    // order metadata updates without it.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Removes an ingest's temporary directory unless the ingest published it.
struct TempDirGuard {
    path: Option<PathBuf>,
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(error) = fs::remove_dir_all(&path)
        {
            tracing::warn!(path = %path.display(), %error, "could not remove a failed ingest's temporary directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Read};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const MIXED: &str = concat!(
        r#"{"EventID":4625,"TargetUserName":"a","@timestamp":"2026-11-20T08:00:00.000Z"}"#,
        "\n",
        "not json at all\n",
        "\n",
        r#"{"EventID":4624,"TargetUserName":"b","@timestamp":"2026-11-20T08:00:01.000Z"}"#,
        "\r\n",
        "[1,2,3]\n",
        r#"{"EventID":1,"note":"no time"}"#,
        "\n",
        r##"{"Event":{"System":{"EventID":4634,"Computer":"X","TimeCreated":{"#attributes":{"SystemTime":"2026-11-20T08:00:02Z"}}},"EventData":{"TargetUserName":"c"}}}"##,
        "\n",
        r#"{"truncated":"#,
    );

    fn collect(
        store: &ShardStore,
        name: &str,
        range: Option<(i64, i64)>,
        batch: usize,
    ) -> (Vec<StoredEvent>, ScanStats, Vec<usize>) {
        let mut events = Vec::new();
        let mut sizes = Vec::new();
        let stats = store
            .scan::<ShardError, _>(name, range, batch, |b| {
                sizes.push(b.len());
                events.extend_from_slice(b);
                Ok(())
            })
            .expect("scan succeeds");
        (events, stats, sizes)
    }

    #[test]
    fn ingest_stores_events_and_keeps_malformed_records_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let report = store
            .ingest_jsonl("mixed", labels(&[("env", "test")]), Cursor::new(MIXED))
            .expect("ingest");
        assert_eq!(report.lines_read, 8);
        assert_eq!(report.blank_lines, 1);
        assert_eq!(report.events_stored, 4);
        assert_eq!(report.malformed, 3);
        assert_eq!(report.without_timestamp, 1);
        let meta = &report.meta;
        assert_eq!(meta.event_count, 4);
        assert_eq!(meta.untimed_count, 1);
        assert_eq!(meta.malformed_count, 3);
        assert_eq!(meta.min_ts_ms, Some(1_795_161_600_000));
        assert_eq!(meta.max_ts_ms, Some(1_795_161_602_000));
        assert_eq!(meta.labels, labels(&[("env", "test")]));
        assert_eq!(meta.format, FORMAT_JSONL_V1);
        assert_eq!(store.get("mixed").as_ref(), Some(meta));

        let bad = store.malformed("mixed").expect("malformed records");
        assert_eq!(bad.len(), 3);
        assert_eq!((bad[0].line, bad[0].raw.as_str()), (2, "not json at all"));
        let first_len = MIXED.find('\n').expect("newline") as u64 + 1;
        assert_eq!(bad[0].byte_offset, first_len);
        assert!(bad[0].error.contains("not valid JSON"), "{}", bad[0].error);
        assert_eq!(bad[1].line, 5);
        assert!(bad[1].error.contains("found an array"));
        assert_eq!(bad[2].line, 8);
        assert_eq!(bad[2].raw, r#"{"truncated":"#);

        let (events, stats, _) = collect(&store, "mixed", None, 10);
        assert_eq!(stats.events_read, 4);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(events[2].timestamp_ms, 0);
        // The EVTX record was normalised at ingest.
        assert_eq!(events[3].doc["TargetUserName"], "c");
        assert_eq!(events[3].doc["EventID"], 4634);
        assert_eq!(events[3].timestamp_ms, 1_795_161_602_000);
    }

    #[test]
    fn malformed_raw_text_is_truncated_to_4_kib_and_bad_utf8_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let long = format!("{{\"x\": \"{}\"", "é".repeat(5000));
        let mut input = long.clone().into_bytes();
        input.extend_from_slice(b"\n{\"bad\": \"\xff\xfe\"}\n{\"ok\":1}\n");
        let report = store
            .ingest_jsonl("edge", BTreeMap::new(), Cursor::new(input))
            .expect("ingest");
        assert_eq!((report.events_stored, report.malformed), (1, 2));
        let bad = store.malformed("edge").expect("malformed");
        assert!(bad[0].raw.len() <= MAX_MALFORMED_RAW_BYTES);
        assert!(bad[0].raw.len() > MAX_MALFORMED_RAW_BYTES - 4);
        assert!(!bad[0].raw.ends_with('\u{FFFD}'));
        assert_eq!(bad[0].raw_len, long.len() as u64);
        assert!(bad[1].error.contains("UTF-8"), "{}", bad[1].error);
        assert_eq!(bad[1].line, 2);
    }

    #[test]
    fn overlong_lines_are_malformed_not_fatal() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"a\":\"");
        input.resize(MAX_RECORD_BYTES + 100, b'x');
        input.extend_from_slice(b"\"}\n{\"after\":1}\n");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let report = store
            .ingest_jsonl("big", BTreeMap::new(), Cursor::new(input))
            .expect("ingest");
        assert_eq!((report.events_stored, report.malformed), (1, 1));
        let bad = store.malformed("big").expect("malformed");
        assert!(bad[0].error.contains("longer than"));
        assert_eq!(bad[0].raw_len, MAX_RECORD_BYTES as u64 + 102);
        assert_eq!(bad[0].raw.len(), MAX_MALFORMED_RAW_BYTES);
    }

    #[test]
    fn bom_and_crlf_are_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let input = "\u{FEFF}{\"a\":1}\r\n{\"a\":2}\r\n";
        let report = store
            .ingest_jsonl("bom", BTreeMap::new(), Cursor::new(input))
            .expect("ingest");
        assert_eq!((report.events_stored, report.malformed), (2, 0));
    }

    #[test]
    fn shard_names_are_validated() {
        for good in ["a", "0", "win-dc01-security", "a.b_c-d", &"a".repeat(128)] {
            assert!(validate_shard_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a/b",
            "a b",
            "ä",
            "..",
            &"a".repeat(129),
        ] {
            let err = validate_shard_name(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid shard name"), "{err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let err = store
            .ingest_jsonl("../escape", BTreeMap::new(), Cursor::new("{}\n"))
            .expect_err("rejected");
        assert!(matches!(err, ShardError::InvalidName { .. }));
        let err = store
            .ingest_jsonl("ok", labels(&[("", "v")]), Cursor::new("{}\n"))
            .expect_err("rejected");
        assert!(matches!(err, ShardError::InvalidLabel { .. }));
        assert!(store.list().is_empty());
    }

    #[test]
    fn existing_shards_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        store
            .ingest_jsonl("one", BTreeMap::new(), Cursor::new("{\"v\":1}\n"))
            .expect("first ingest");
        let err = store
            .ingest_jsonl("one", BTreeMap::new(), Cursor::new("{\"v\":2}\n"))
            .expect_err("second ingest refused");
        assert!(matches!(err, ShardError::AlreadyExists { .. }));
        assert!(err.to_string().contains("already exists"), "{err}");
        let (events, _, _) = collect(&store, "one", None, 1);
        assert_eq!(events[0].doc["v"], 1);

        // A second store on the same root (as after a restart) refuses too.
        let again = ShardStore::open(dir.path()).expect("reopen");
        let err = again
            .ingest_jsonl("one", BTreeMap::new(), Cursor::new("{\"v\":3}\n"))
            .expect_err("refused");
        assert!(matches!(err, ShardError::AlreadyExists { .. }));
    }

    /// An input that fails part-way, like a dropped upload.
    struct FailingReader {
        data: Cursor<Vec<u8>>,
    }

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.read(buf)?;
            if n == 0 {
                Err(io::Error::other("connection reset"))
            } else {
                Ok(n)
            }
        }
    }

    #[test]
    fn a_failed_ingest_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let reader = BufReader::with_capacity(
            8,
            FailingReader {
                data: Cursor::new(b"{\"a\":1}\n{\"a\":2}\n{\"a\"".to_vec()),
            },
        );
        let err = store
            .ingest_jsonl("broken", BTreeMap::new(), reader)
            .expect_err("input error");
        assert!(matches!(err, ShardError::Input { line: 3, .. }), "{err}");
        assert!(store.get("broken").is_none());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // The name is still free.
        store
            .ingest_jsonl("broken", BTreeMap::new(), Cursor::new("{}\n"))
            .expect("retry succeeds");
    }

    #[test]
    fn scan_batches_in_offset_order_and_filters_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let base = 1_795_161_600_000i64;
        let input: String = (0..10)
            .map(|i| {
                format!(
                    "{{\"i\":{i},\"@timestamp\":\"{}\"}}\n",
                    crate::event::format_rfc3339_ms(base + i * 1000)
                )
            })
            .collect();
        store
            .ingest_jsonl("ten", BTreeMap::new(), Cursor::new(input))
            .expect("ingest");

        let (events, stats, sizes) = collect(&store, "ten", None, 4);
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(stats.batches, 3);
        assert_eq!(
            (
                stats.events_read,
                stats.events_emitted,
                stats.events_skipped
            ),
            (10, 10, 0)
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.offset, i as u64);
            assert_eq!(e.doc["i"], i);
            assert_eq!(e.timestamp_ms, base + i as i64 * 1000);
        }

        // [start, end): start inclusive, end exclusive.
        let (events, stats, _) = collect(&store, "ten", Some((base + 2000, base + 5000)), 100);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(
            (
                stats.events_read,
                stats.events_skipped,
                stats.events_emitted
            ),
            (10, 7, 3)
        );
        assert!(!stats.pruned);

        // A range outside the shard's bounds reads nothing.
        let (events, stats, _) = collect(&store, "ten", Some((0, base)), 100);
        assert!(events.is_empty());
        assert!(stats.pruned);
        assert_eq!(stats.events_read, 0);

        // Batch size 0 is treated as 1.
        let (_, stats, sizes) = collect(&store, "ten", None, 0);
        assert_eq!(stats.batches, 10);
        assert!(sizes.iter().all(|&s| s == 1));
    }

    #[test]
    fn untimed_events_are_in_ranges_that_contain_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        store
            .ingest_jsonl("untimed", BTreeMap::new(), Cursor::new("{\"a\":1}\n"))
            .expect("ingest");
        let (events, stats, _) = collect(&store, "untimed", Some((-10, 10)), 8);
        assert_eq!(events.len(), 1);
        assert!(!stats.pruned);
        let (events, stats, _) = collect(&store, "untimed", Some((1, 10)), 8);
        assert!(events.is_empty());
        assert!(stats.pruned);
    }

    #[derive(Debug)]
    enum TaskError {
        Shard(ShardError),
        Stop,
    }

    impl From<ShardError> for TaskError {
        fn from(e: ShardError) -> Self {
            Self::Shard(e)
        }
    }

    #[test]
    fn scan_stops_at_the_first_callback_error_and_reports_unknown_shards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        store
            .ingest_jsonl("s", BTreeMap::new(), Cursor::new("{}\n{}\n{}\n"))
            .expect("ingest");
        let mut calls = 0;
        let result = store.scan::<TaskError, _>("s", None, 1, |_| {
            calls += 1;
            Err(TaskError::Stop)
        });
        assert!(matches!(result, Err(TaskError::Stop)));
        assert_eq!(calls, 1);

        let err = store
            .scan::<TaskError, _>("nope", None, 1, |_| Ok(()))
            .expect_err("unknown shard");
        let TaskError::Shard(err) = err else {
            panic!("expected a shard error, got {err:?}");
        };
        assert!(matches!(err, ShardError::NotFound { .. }));
        assert!(err.to_string().contains("known shards: s"), "{err}");
    }

    #[test]
    fn damaged_event_files_are_reported_not_scanned_silently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        store
            .ingest_jsonl(
                "d",
                BTreeMap::new(),
                Cursor::new("{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"),
            )
            .expect("ingest");
        let events = store.shard_dir("d").join(EVENTS_FILE);

        // Truncated: fewer events than meta.json records.
        fs::write(&events, "{\"a\":1}\n").expect("truncate");
        let err = store
            .scan::<ShardError, _>("d", None, 8, |_| Ok(()))
            .expect_err("count mismatch");
        assert!(
            err.to_string()
                .contains("records 3 events but the file holds 1"),
            "{err}"
        );

        // Garbage in the middle.
        fs::write(&events, "{\"a\":1}\n{garbage\n{\"a\":3}\n").expect("corrupt");
        let err = store
            .scan::<ShardError, _>("d", None, 8, |_| Ok(()))
            .expect_err("corrupt line");
        assert!(matches!(err, ShardError::Corrupt { line: 2, .. }), "{err}");
    }

    #[test]
    fn the_store_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input: String = (0..25)
            .map(|i| format!("{{\"n\":{i},\"ts\":{}}}\n", 1_600_000_000 + i))
            .collect();
        let (before_list, before_events) = {
            let store = ShardStore::open(dir.path()).expect("open");
            store
                .ingest_jsonl(
                    "b-shard",
                    labels(&[("os", "linux")]),
                    Cursor::new(input.clone()),
                )
                .expect("ingest b");
            store
                .ingest_jsonl("a-shard", labels(&[("os", "windows")]), Cursor::new(input))
                .expect("ingest a");
            let (events, _, _) = collect(
                &store,
                "b-shard",
                Some((1_600_000_005_000, 1_600_000_010_000)),
                3,
            );
            (store.list(), events)
        };
        assert_eq!(
            before_list
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["a-shard", "b-shard"]
        );

        let reopened = ShardStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.list(), before_list);
        assert!(reopened.skipped().is_empty());
        let (events, _, _) = collect(
            &reopened,
            "b-shard",
            Some((1_600_000_005_000, 1_600_000_010_000)),
            3,
        );
        assert_eq!(events, before_events);
        assert_eq!(events.len(), 5);
        assert_eq!(
            reopened.get("a-shard").map(|m| m.labels),
            Some(labels(&[("os", "windows")]))
        );
    }

    #[test]
    fn open_skips_damaged_shards_and_removes_interrupted_ingests() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = ShardStore::open(dir.path()).expect("open");
            store
                .ingest_jsonl("good", BTreeMap::new(), Cursor::new("{}\n"))
                .expect("ingest");
            store
                .ingest_jsonl("renamed", BTreeMap::new(), Cursor::new("{}\n"))
                .expect("ingest");
        }
        let root = dir.path();
        // No meta.json.
        fs::create_dir(root.join("no-meta")).expect("mkdir");
        fs::write(root.join("no-meta").join(EVENTS_FILE), "{}\n").expect("write");
        // Corrupt meta.json.
        fs::create_dir(root.join("bad-meta")).expect("mkdir");
        fs::write(root.join("bad-meta").join(META_FILE), "{not json").expect("write");
        // A meta that names another shard.
        fs::rename(root.join("renamed"), root.join("moved")).expect("rename");
        // An interrupted ingest of a process that no longer exists.
        let stale = root.join(".ingest-0-7-half");
        fs::create_dir(&stale).expect("mkdir");
        fs::write(stale.join(EVENTS_FILE), "{}\n").expect("write");
        // One of an earlier process that had our pid (containers reuse pid 1).
        let same_pid = root.join(format!(".ingest-{:x}-0-half", std::process::id()));
        fs::create_dir(&same_pid).expect("mkdir");
        // One of this process, possibly still running: left alone.
        let ours = root.join(format!(".ingest-{}-999-busy", process_nonce()));
        fs::create_dir(&ours).expect("mkdir");
        // Stray files and directories that are not shards.
        fs::write(root.join("README"), "hello").expect("write");
        fs::create_dir(root.join("Not-A-Shard")).expect("mkdir");

        let store = ShardStore::open(root).expect("open survives damage");
        assert_eq!(
            store
                .list()
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["good"]
        );
        let skipped: Vec<String> = store
            .skipped()
            .iter()
            .map(|s| {
                s.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(skipped, ["Not-A-Shard", "bad-meta", "moved", "no-meta"]);
        let reason = |name: &str| {
            store
                .skipped()
                .iter()
                .find(|s| s.path.ends_with(name))
                .map(|s| s.reason.clone())
                .unwrap_or_default()
        };
        assert!(reason("no-meta").contains("meta.json is missing"));
        assert!(reason("bad-meta").contains("not valid shard metadata"));
        assert!(reason("moved").contains("names shard \"renamed\""));
        assert!(!stale.exists(), "stale ingest directory removed");
        assert!(
            !same_pid.exists(),
            "stale ingest directory with our pid removed"
        );
        assert!(ours.exists(), "this process's ingest directory kept");
        // Damaged directories are left in place, and their names stay taken.
        assert!(root.join("no-meta").exists());
        let err = store
            .ingest_jsonl("no-meta", BTreeMap::new(), Cursor::new("{}\n"))
            .expect_err("name taken");
        assert!(matches!(err, ShardError::AlreadyExists { .. }));
    }

    #[test]
    fn meta_json_round_trips() {
        let meta = ShardMeta {
            name: "x".into(),
            labels: labels(&[("env", "demo")]),
            format: FORMAT_JSONL_V1.into(),
            event_count: 3,
            min_ts_ms: Some(1),
            max_ts_ms: Some(2),
            untimed_count: 0,
            malformed_count: 1,
            created_at_ms: 5,
        };
        let text = serde_json::to_string(&meta).expect("encode");
        let back: ShardMeta = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, meta);
        assert!(meta.may_overlap(2, 3));
        assert!(!meta.may_overlap(3, 4));
        assert!(!meta.may_overlap(0, 1));
        assert!(!meta.may_overlap(2, 2));
    }
}
