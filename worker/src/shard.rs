//! The worker's on-disk shard store.
//!
//! A shard is a named, labelled collection of events stored as append-only,
//! zstd-compressed segments split into blocks, each block with a header of
//! statistics (event count, time range, per-field presence and low-cardinality
//! values) so a scan skips blocks it need not decode (format
//! [`FORMAT_SEGMENTS_V1`]; the block and segment layout is described in
//! [`segment`]).
//!
//! ```text
//! <root>/
//!   <shard-name>/
//!     meta.json          ShardMeta, always replaced atomically
//!     seg-00000001.qseg  a segment: checksummed, compressed blocks of events
//!     seg-00000001.qidx  its index (every block's offset and header), written
//!                        atomically when the segment is sealed
//!     seg-00000002.qseg  the next append's segment, ...
//!     malformed.jsonl    the first MAX_MALFORMED_KEPT records that failed to
//!                        parse (MalformedRecord per line); the rest are only
//!                        counted in meta.json
//!   .ingest-<process>-<seq>-<shard-name>/   a shard being created
//! ```
//!
//! Ingest ([`ShardStore::append`]) creates the shard if needed (an empty
//! shard with its `meta.json` is published with one directory rename) and
//! appends new segments to it. An event is *acknowledged* once its block has
//! been written and fsynced (and the segment file's directory entry too).
//!
//! Crash safety: on [`ShardStore::open`], every segment without a valid index
//! (the one being written when a process died), and the last block of every
//! other segment, are verified block by block against their checksums; a torn
//! or corrupt tail is truncated, reported ([`ShardStore::recovered`], a
//! `tracing::warn`, and [`ShardMeta::recovered_bytes`]) and the segment
//! sealed. Blocks before it, every acknowledged block among them, are kept.
//! `meta.json`'s counts are recomputed from the segment indexes, so a crash
//! between a block and the final `meta.json` update loses nothing.
//!
//! Damaged shards on open: a shard directory whose `meta.json` is missing or
//! unreadable, whose meta names another shard, or whose segments cannot be
//! read is *skipped* with a `tracing::warn` and listed by
//! [`ShardStore::skipped`], rather than failing [`ShardStore::open`]. One
//! damaged shard must not keep a worker from serving all the others; the
//! agent reports the skipped ones so an operator can re-ingest them. The
//! directory is left untouched (nothing already stored is deleted) and its
//! name stays taken until it is removed.
//!
//! A root directory belongs to one process at a time: [`ShardStore::open`]
//! takes an exclusive `flock` on `<root>/.lock` (holding the pid of the
//! process that has it) and keeps it for the store's life. A second process,
//! such as `quarry worker ingest` beside a running worker, would otherwise run
//! crash recovery on the live writer's unsealed segment and remove its
//! in-progress directories.

#[path = "segment.rs"]
pub mod segment;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::columnar::{ColumnBlock, FieldTexts};
use crate::event::{StoredEvent, event_timestamp_ms, format_rfc3339_ms, normalize};
use crate::ingest::{Malformed, Position, RecordResult};
use crate::prefilter::{Prefilter, Projection};
use segment::{
    BlockBuilder, BlockError, SegmentIndex, SegmentWriter, index_path, list_segments,
    read_block_at, read_index, read_payload, recover_segment, segment_file_name,
};
pub use segment::{BlockFormat, BlockStats, FieldKnowledge, FieldStats, Payload};

/// File holding a shard's events in the old format ([`FORMAT_JSONL_V1`]).
pub const EVENTS_FILE: &str = "events.jsonl";
/// File holding a shard's [`ShardMeta`].
pub const META_FILE: &str = "meta.json";
/// File holding a shard's [`MalformedRecord`]s.
pub const MALFORMED_FILE: &str = "malformed.jsonl";
/// The old, single-file storage format (no longer written, not read).
pub const FORMAT_JSONL_V1: &str = "jsonl-v1";
/// The storage format written and read by this version: segments of blocks.
pub const FORMAT_SEGMENTS_V1: &str = "segments-v1";
/// Longest shard name.
pub const MAX_SHARD_NAME_LEN: usize = 128;
/// How much of a malformed line is kept aside (the rest is counted, not kept).
pub const MAX_MALFORMED_RAW_BYTES: usize = 1024;
/// Malformed records a shard keeps in `malformed.jsonl`: the first ones over
/// its life. Later ones are counted (per source in [`ShardMeta`]) but not
/// kept, so a file of garbage cannot grow the disk by more than this sample.
pub const MAX_MALFORMED_KEPT: u64 = 1000;
/// Malformed records of one ingest returned in its [`IngestReport`].
pub const MAX_MALFORMED_REPORTED: usize = 100;
/// Sources counted separately in [`ShardMeta::malformed_by_source`]; the
/// malformed records of further sources are counted under
/// [`OTHER_SOURCES`].
pub const MAX_MALFORMED_SOURCES: usize = 64;
/// The key counting malformed records of sources past
/// [`MAX_MALFORMED_SOURCES`].
pub const OTHER_SOURCES: &str = "(other sources)";
/// Longest source name kept with a malformed record (a gRPC client names it).
const MAX_SOURCE_BYTES: usize = 256;
/// Longest input line accepted as one record. Longer lines are malformed:
/// this bounds the memory one bad input can take.
pub const MAX_RECORD_BYTES: usize = 16 << 20;
/// Deepest nesting of objects in an event. Events are flattened to dotted
/// field names at ingest; logs nest a few levels, and a deeper record is
/// malformed rather than flattened.
pub const MAX_NESTING_DEPTH: usize = 32;
/// Most bytes the flattened field names of one event may take. Every leaf's
/// name repeats its whole path, so a record of long keys nested deep would
/// otherwise flatten to the square of its size.
pub const MAX_FLATTENED_KEY_BYTES: usize = 1 << 20;
/// Fields a canonical `host` is taken from, in order, when an event has no
/// `host` of its own.
pub const HOST_FIELDS: &[&str] = &[
    "Computer",
    "Hostname",
    "hostname",
    "host.name",
    "host.hostname",
    "HostName",
    "ComputerName",
    "DeviceName",
    "agent.hostname",
    "id.orig_h",
    // Linux audit records (`node=NAME type=…`).
    "node",
];

/// File in the shard root that [`ShardStore::open`] locks; it holds the pid
/// of the process holding the lock. A dot file, so it is never a shard.
pub const LOCK_FILE: &str = ".lock";

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

    /// Ingest into a name whose directory exists but holds no usable shard
    /// (a damaged shard skipped on open, or a stray directory).
    #[error(
        "shard {name:?} already exists at {} but could not be loaded (see the shards skipped \
         on open); stop the worker and remove or repair that directory, or ingest under a \
         new name",
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

    /// Another process has the store open (its lock is held).
    #[error(
        "{} is in use by {}: its lock {} is held. Two processes must not write one \
         worker's data directory; stop that one first, or, to add logs to a running \
         worker, send them to it with `quarry worker ingest --worker URL`",
        root.display(),
        match pid { Some(pid) => format!("process {pid}"), None => "another process".to_owned() },
        root.join(LOCK_FILE).display()
    )]
    Locked {
        /// The store's root directory.
        root: PathBuf,
        /// The pid written in the lock file by the holder, when readable.
        pid: Option<u32>,
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
    /// itself could not be read). The store itself no longer returns it (a
    /// failing input ends the ingest with a malformed record naming the
    /// failure, and what was read before is kept); kept for callers that read
    /// input themselves.
    #[error(
        "reading the input for shard {shard:?} failed at line {line}: {source}; fix the input \
         and ingest the rest again"
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
        "shard {shard:?} is damaged: {}{}: {reason}; it cannot be scanned, \
         remove its directory and ingest it again from the source",
        path.display(),
        at_line(*line)
    )]
    Corrupt {
        /// The shard.
        shard: String,
        /// The damaged file.
        path: PathBuf,
        /// 1-based line number where the damage was found (0: the whole file,
        /// or a segment block, which the reason names).
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

fn at_line(line: u64) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    }
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
    /// Storage format of the shard's files ([`FORMAT_SEGMENTS_V1`]).
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
    /// Input records that failed to parse (the first [`MAX_MALFORMED_KEPT`]
    /// are kept in `malformed.jsonl`).
    pub malformed_count: u64,
    /// Malformed records kept in `malformed.jsonl`. `None` in shards written
    /// before the sample was bounded: their file may hold up to
    /// `malformed_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed_kept: Option<u64>,
    /// Malformed records per input source (at most
    /// [`MAX_MALFORMED_SOURCES`] keys plus [`OTHER_SOURCES`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub malformed_by_source: BTreeMap<String, u64>,
    /// When the shard was created (ms since the epoch, UTC).
    pub created_at_ms: i64,
    /// How long events are kept (ms): [`ShardStore::apply_retention`] drops
    /// whole segments whose newest event is older. `None`: forever.
    #[serde(default)]
    pub retention_ms: Option<i64>,
    /// Segments stored.
    #[serde(default)]
    pub segment_count: u64,
    /// Offset the next appended event gets (offsets stay unique after
    /// retention drops segments).
    #[serde(default)]
    pub next_offset: u64,
    /// Bytes cut from torn or corrupt segment tails by crash recovery, over
    /// the shard's life.
    #[serde(default)]
    pub recovered_bytes: u64,
    /// Events that have each field (dotted paths as the block index keeps
    /// them), at most [`MAX_SHARD_FIELDS`] fields, the most present: what
    /// `quarry query` suggests a misspelt field from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, u64>,
}

/// Most field names a shard's metadata keeps (the most present).
pub const MAX_SHARD_FIELDS: usize = 2_000;

/// Adds each field's presence in a block to `fields`.
fn count_fields(fields: &mut BTreeMap<String, u64>, stats: &BlockStats) {
    for (name, field) in &stats.fields {
        match fields.get_mut(name.as_str()) {
            Some(n) => *n += u64::from(field.present),
            None => {
                fields.insert(name.clone(), u64::from(field.present));
            }
        }
    }
}

/// Keeps the [`MAX_SHARD_FIELDS`] most present fields (ties by name).
fn bound_fields(fields: &mut BTreeMap<String, u64>) {
    if fields.len() <= MAX_SHARD_FIELDS {
        return;
    }
    let mut ranked: Vec<(u64, String)> = std::mem::take(fields)
        .into_iter()
        .map(|(name, n)| (n, name))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    ranked.truncate(MAX_SHARD_FIELDS);
    *fields = ranked.into_iter().map(|(n, name)| (name, n)).collect();
}

impl ShardMeta {
    /// Whether any stored event can have a timestamp in `[start, end)`.
    pub fn may_overlap(&self, start: i64, end: i64) -> bool {
        crate::event::time_bounds_overlap(
            self.min_ts_ms,
            self.max_ts_ms,
            self.untimed_count,
            start,
            end,
        )
    }
}

/// One input record that could not be stored, as kept in `malformed.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MalformedRecord {
    /// 1-based line number in the input (0: not a line-oriented input).
    pub line: u64,
    /// Byte offset of the record's start in the input (0 when unknown).
    pub byte_offset: u64,
    /// Why it was rejected.
    pub error: String,
    /// The raw record (lossily decoded as UTF-8), at most
    /// [`MAX_MALFORMED_RAW_BYTES`] bytes of it.
    pub raw: String,
    /// Length of the raw record in bytes (larger than `raw` when truncated).
    pub raw_len: u64,
    /// The input it came from (a file path or stream name), when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// 1-based record number, for record-oriented inputs (EVTX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
}

impl MalformedRecord {
    fn from_malformed(m: Malformed) -> Self {
        let mut raw = m.raw;
        truncate_at_char(&mut raw, MAX_MALFORMED_RAW_BYTES);
        let mut source = m.position.source;
        truncate_at_char(&mut source, MAX_SOURCE_BYTES);
        Self {
            line: m.position.line.unwrap_or(0),
            byte_offset: m.position.byte_offset.unwrap_or(0),
            error: m.error,
            raw,
            raw_len: m.raw_len,
            source,
            record: m.position.record,
        }
    }
}

fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// Adds `n` malformed records of `source` to `counts`, folding new sources
/// past [`MAX_MALFORMED_SOURCES`] into [`OTHER_SOURCES`].
fn count_source(counts: &mut BTreeMap<String, u64>, source: &str, n: u64) {
    let known = counts.len() - usize::from(counts.contains_key(OTHER_SOURCES));
    let key = if counts.contains_key(source) || known < MAX_MALFORMED_SOURCES {
        source
    } else {
        OTHER_SOURCES
    };
    *counts.entry(key.to_owned()).or_default() += n;
}

/// The outcome of [`ShardStore::append`] and [`ShardStore::ingest_jsonl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// The shard's metadata after the ingest.
    pub meta: ShardMeta,
    /// Input lines read, blank ones included ([`ShardStore::ingest_jsonl`]
    /// only; 0 for other inputs).
    pub lines_read: u64,
    /// Blank lines skipped (they hold no record).
    pub blank_lines: u64,
    /// Events stored (all acknowledged) by this ingest.
    pub events_stored: u64,
    /// Records kept aside as malformed by this ingest.
    pub malformed: u64,
    /// The first [`MAX_MALFORMED_REPORTED`] of them, with their positions
    /// (whether or not the shard's bounded sample on disk has room).
    pub malformed_sample: Vec<MalformedRecord>,
    /// Events stored without a recognisable timestamp (given timestamp 0).
    pub without_timestamp: u64,
    /// Whether this ingest created the shard.
    pub created: bool,
    /// Blocks written.
    pub blocks_written: u64,
    /// Segments written.
    pub segments_written: u64,
    /// Bytes written to segments (compressed, headers included).
    pub bytes_written: u64,
}

/// Progress of an ingest, passed to [`ShardStore::append`]'s callback after
/// every fsynced block (and once at the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestProgress {
    /// Records taken from the input (events and malformed).
    pub records: u64,
    /// Events written and fsynced: they survive a crash from now on.
    pub events_acknowledged: u64,
    /// Events read but not yet in an fsynced block.
    pub events_pending: u64,
    /// Records kept aside as malformed.
    pub malformed: u64,
    /// Blocks written.
    pub blocks_written: u64,
    /// Bytes written to segments.
    pub bytes_written: u64,
}

/// The outcome of [`ShardStore::scan`] and [`ShardStore::scan_with`].
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
    /// The shard's next ingest offset when the scan started: every event
    /// before it was considered (a later scan from here misses nothing).
    pub end_offset: u64,
    /// Blocks decompressed and decoded.
    pub blocks_read: u64,
    /// Blocks skipped from their headers alone (time range or block filter).
    pub blocks_skipped: u64,
    /// Compressed bytes of the blocks read, as stored on disk.
    pub bytes_read: u64,
}

/// What a scan reads: a time range and a block filter over block statistics.
#[derive(Clone, Copy, Default)]
pub struct ScanFilter<'a> {
    /// `[start, end)` in ms since the epoch; `None`: all events.
    pub time_range: Option<(i64, i64)>,
    /// Called with each block's statistics; `false` skips the block
    /// undecoded. It must only return `false` for blocks that cannot hold an
    /// event the scan wants (a prefilter ruled out by the field values).
    pub block_filter: Option<&'a dyn Fn(&BlockStats) -> bool>,
    /// Only events at or after this ingest offset (a scheduled run's
    /// watermark); 0: all.
    pub min_offset: u64,
}

impl ScanFilter<'_> {
    /// Whether the event at `offset` with `timestamp_ms` is in the scan's
    /// offset and time range.
    fn wants(&self, offset: u64, timestamp_ms: i64) -> bool {
        offset >= self.min_offset
            && self
                .time_range
                .is_none_or(|(start, end)| start <= timestamp_ms && timestamp_ms < end)
    }
}

/// Where a [`ShardStore::migrate`] stands, and what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// The shard.
    pub shard: String,
    /// The format its blocks are now in.
    pub format: BlockFormat,
    /// Segments in the shard.
    pub segments_total: u64,
    /// Segments handled so far.
    pub segments_done: u64,
    /// Segments rewritten (the others were in the format already).
    pub segments_rewritten: u64,
    /// Blocks rewritten.
    pub blocks_rewritten: u64,
    /// Blocks already in the format, kept as they were.
    pub blocks_kept: u64,
    /// Events in the rewritten segments.
    pub events: u64,
    /// Segment bytes before.
    pub bytes_before: u64,
    /// Segment bytes after.
    pub bytes_after: u64,
}

/// The events of one block that a scan's range and prefilter keep, not
/// yet projected ([`ShardStore::scan_projected`]).
enum Kept<'b> {
    /// From a rows block: offset, timestamp and the whole event.
    Rows(Vec<(u64, i64, Value)>),
    /// From a column block: the events `rows` marks, with their offsets
    /// and timestamps.
    Columns {
        block: ColumnBlock<'b>,
        rows: Vec<bool>,
        offsets: Vec<u64>,
        timestamps: Vec<i64>,
    },
}

/// Events as a module's scan reads them by column
/// ([`ShardStore::scan_projected_columns`]): offsets, timestamps and one
/// [`FieldTexts`] per declared field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectedColumns {
    /// Shard offsets.
    pub offsets: Vec<u64>,
    /// Timestamps (ms; 0 when untimed).
    pub timestamps: Vec<i64>,
    /// The values, field by field.
    pub fields: Vec<FieldTexts>,
}

impl ProjectedColumns {
    /// No events, `fields` fields.
    pub fn new(fields: usize) -> Self {
        ProjectedColumns {
            offsets: Vec::new(),
            timestamps: Vec::new(),
            fields: vec![FieldTexts::default(); fields],
        }
    }

    /// Events.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The events one by one, as [`ShardStore::scan_projected`] gives them.
    pub fn to_events(&self) -> Vec<ProjectedEvent> {
        let mut values: Vec<_> = self.fields.iter().map(FieldTexts::values).collect();
        self.offsets
            .iter()
            .zip(&self.timestamps)
            .map(|(&offset, &timestamp_ms)| ProjectedEvent {
                offset,
                timestamp_ms,
                values: values
                    .iter_mut()
                    .map(|v| v.next().flatten().map(str::to_owned))
                    .collect(),
            })
            .collect()
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.offsets.clear();
        self.timestamps.clear();
        self.fields.iter_mut().for_each(FieldTexts::clear);
    }
}

/// Moves events from blocks' [`ProjectedColumns`] into batches of at most
/// a given size, for a module that takes batches by column.
#[derive(Debug)]
pub struct ColumnBatcher {
    /// The batch being filled.
    pub batch: ProjectedColumns,
    limit: usize,
}

impl ColumnBatcher {
    /// Batches of at most `limit` events (at least one) of `fields` fields.
    pub fn new(fields: usize, limit: usize) -> Self {
        ColumnBatcher {
            batch: ProjectedColumns::new(fields),
            limit: limit.max(1),
        }
    }

    /// Adds `block`'s events, calling `full` with each batch that reaches
    /// the limit (then emptied).
    ///
    /// # Errors
    /// `full`'s.
    pub fn add<E>(
        &mut self,
        block: &ProjectedColumns,
        mut full: impl FnMut(&ProjectedColumns) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut next = 0;
        let mut text_at = vec![0usize; block.fields.len()];
        while next < block.len() {
            let count = (self.limit - self.batch.len()).min(block.len() - next);
            let range = next..next + count;
            self.batch
                .offsets
                .extend_from_slice(&block.offsets[range.clone()]);
            self.batch
                .timestamps
                .extend_from_slice(&block.timestamps[range]);
            for ((into, from), at) in self
                .batch
                .fields
                .iter_mut()
                .zip(&block.fields)
                .zip(&mut text_at)
            {
                *at = into.extend_from(from, next, count, *at);
            }
            next += count;
            if self.batch.len() >= self.limit {
                full(&self.batch)?;
                self.batch.clear();
            }
        }
        Ok(())
    }
}

/// One event as a module's scan reads it ([`ShardStore::scan_projected`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedEvent {
    /// Its shard offset.
    pub offset: u64,
    /// Its timestamp (ms; 0 when untimed).
    pub timestamp_ms: i64,
    /// Its values, one per declared field.
    pub values: Vec<Option<String>>,
}

impl std::fmt::Debug for ScanFilter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanFilter")
            .field("time_range", &self.time_range)
            .field("block_filter", &self.block_filter.is_some())
            .field("min_offset", &self.min_offset)
            .finish()
    }
}

/// A shard directory that [`ShardStore::open`] could not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedShard {
    /// The directory.
    pub path: PathBuf,
    /// Why it was skipped, with what to do about it.
    pub reason: String,
}

/// A torn or corrupt segment tail that [`ShardStore::open`] cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTail {
    /// The shard.
    pub shard: String,
    /// The segment file.
    pub segment: PathBuf,
    /// Complete, checksummed blocks kept.
    pub blocks_kept: u64,
    /// Bytes cut from the end of the file.
    pub truncated_bytes: u64,
    /// What was wrong with the first block cut.
    pub reason: String,
}

/// The outcome of [`ShardStore::apply_retention`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments dropped, as `(shard, segment file)`.
    pub dropped: Vec<(String, PathBuf)>,
    /// Events in them.
    pub events_dropped: u64,
}

/// One shard in memory: its metadata and its sealed segments.
#[derive(Debug, Clone)]
struct ShardState {
    meta: ShardMeta,
    segments: Vec<PathBuf>,
}

/// Counts recomputed from segment indexes.
#[derive(Debug, Default)]
struct Summary {
    event_count: u64,
    min_ts_ms: Option<i64>,
    max_ts_ms: Option<i64>,
    untimed_count: u64,
    end_offset: u64,
    fields: BTreeMap<String, u64>,
}

impl Summary {
    fn add(&mut self, index: &SegmentIndex) {
        for block in &index.blocks {
            let s = &block.header.stats;
            count_fields(&mut self.fields, s);
            self.event_count += u64::from(s.event_count);
            self.untimed_count += u64::from(s.untimed);
            self.min_ts_ms = min_opt(self.min_ts_ms, s.min_ts_ms);
            self.max_ts_ms = max_opt(self.max_ts_ms, s.max_ts_ms);
        }
        if let Some(end) = index.end_offset() {
            self.end_offset = self.end_offset.max(end);
        }
    }

    fn apply(&self, meta: &mut ShardMeta, segments: usize) {
        meta.fields = self.fields.clone();
        bound_fields(&mut meta.fields);
        meta.event_count = self.event_count;
        meta.min_ts_ms = self.min_ts_ms;
        meta.max_ts_ms = self.max_ts_ms;
        meta.untimed_count = self.untimed_count;
        meta.segment_count = segments as u64;
        meta.next_offset = meta.next_offset.max(self.end_offset);
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The shard store, rooted at one directory.
///
/// Metadata of every shard is held in memory; events are streamed from disk.
/// Methods take `&self`, so one store can be shared between tasks; appends
/// (and retention) are serialised.
#[derive(Debug)]
pub struct ShardStore {
    root: PathBuf,
    shards: RwLock<BTreeMap<String, ShardState>>,
    skipped: Vec<SkippedShard>,
    recovered: Vec<RecoveredTail>,
    writer: Mutex<()>,
    /// The open, locked [`LOCK_FILE`]; the lock goes when the store does.
    _lock: File,
}

impl ShardStore {
    /// Opens (creating if needed) the store at `root` and loads every shard,
    /// verifying and, after a crash, repairing its segment tails (see the
    /// module documentation and [`ShardStore::recovered`]).
    ///
    /// Damaged shard directories are skipped, not fatal (see
    /// [`ShardStore::skipped`]). Leftover temporary ingest directories of
    /// other processes (crashed shard creations) are removed. Fails only when
    /// the root itself cannot be created or listed.
    ///
    /// # Errors
    ///
    /// [`ShardError::Locked`] when another store (in this or another
    /// process) has `root` open; [`ShardError::Io`] when the root cannot be
    /// created, locked or listed.
    pub fn open(root: &Path) -> Result<Self, ShardError> {
        segment::create_private_dir_all(root).map_err(io_err("create the shard root", root))?;
        // Before anything is repaired or removed: those belong to the holder.
        let lock = lock_root(root)?;
        let entries = fs::read_dir(root).map_err(io_err("list the shard root", root))?;
        let our_temp_prefix = format!("{TEMP_PREFIX}{}-", process_nonce());
        let mut shards = BTreeMap::new();
        let mut skipped = Vec::new();
        let mut recovered = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list the shard root", root))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "ignoring a non-UTF-8 name in the shard root");
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if file_name.starts_with(TEMP_PREFIX) {
                // Another process's unfinished shard creation: it crashed
                // before the rename, so the directory holds no shard. Our own
                // process's temporaries may belong to an ingest running now.
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
                Ok((state, tails)) => {
                    recovered.extend(tails);
                    shards.insert(file_name, state);
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping a damaged shard");
                    skipped.push(SkippedShard { path, reason });
                }
            }
        }
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        recovered.sort_by(|a: &RecoveredTail, b| a.segment.cmp(&b.segment));
        Ok(Self {
            root: root.to_path_buf(),
            shards: RwLock::new(shards),
            skipped,
            recovered,
            writer: Mutex::new(()),
            _lock: lock,
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

    /// Bytes shard `name` takes on disk (its files, one level deep); 0 when
    /// it does not exist. The coordinator's catalogue and dry runs report it.
    pub fn size_bytes(&self, name: &str) -> u64 {
        let Ok(entries) = fs::read_dir(self.shard_dir(name)) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    /// Metadata of every shard, sorted by name.
    pub fn list(&self) -> Vec<ShardMeta> {
        self.read_shards()
            .values()
            .map(|s| s.meta.clone())
            .collect()
    }

    /// Metadata of shard `name`.
    pub fn get(&self, name: &str) -> Option<ShardMeta> {
        self.read_shards().get(name).map(|s| s.meta.clone())
    }

    /// Shard directories that [`ShardStore::open`] skipped as damaged.
    pub fn skipped(&self) -> &[SkippedShard] {
        &self.skipped
    }

    /// Torn or corrupt segment tails that [`ShardStore::open`] truncated.
    pub fn recovered(&self) -> &[RecoveredTail] {
        &self.recovered
    }

    /// Ingests JSON lines into shard `name` (created if missing, appended to
    /// otherwise): a thin wrapper over [`ShardStore::append`].
    ///
    /// Each non-blank line must be one JSON object. A line that is not valid
    /// UTF-8, not JSON, not an object or longer than [`MAX_RECORD_BYTES`] is
    /// kept aside in `malformed.jsonl` with its line number and byte offset,
    /// and counted. Blank lines are skipped; `\r\n` endings and a leading
    /// byte-order mark are accepted. An input that fails to read ends the
    /// ingest with a malformed record naming the failure; what was read
    /// before it is stored.
    ///
    /// # Errors
    ///
    /// As [`ShardStore::append`].
    pub fn ingest_jsonl(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        input: impl BufRead,
    ) -> Result<IngestReport, ShardError> {
        let source = labels.get("source").cloned().unwrap_or_default();
        let mut lines = JsonLines {
            input,
            source,
            line: Vec::with_capacity(4096),
            lines_read: 0,
            blank_lines: 0,
            byte_offset: 0,
            done: false,
        };
        let mut report = self.append(name, labels, &mut lines, &mut |_| {})?;
        report.lines_read = lines.lines_read;
        report.blank_lines = lines.blank_lines;
        Ok(report)
    }

    /// Appends records to shard `name`, creating it (with `labels`) if it
    /// does not exist, or merging `labels` into its labels if it does. The
    /// canonical `source` of events that have none is the `source` label, or
    /// else the shard name (see [`ShardStore::append_from`]).
    ///
    /// # Errors
    ///
    /// As [`ShardStore::append_from`].
    pub fn append(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        records: impl IntoIterator<Item = RecordResult>,
        progress: &mut dyn FnMut(&IngestProgress),
    ) -> Result<IngestReport, ShardError> {
        let source = labels
            .get("source")
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        self.append_from(name, labels, &source, records, progress)
    }

    /// Appends records to shard `name` (see [`ShardStore::append`]), giving
    /// events without a `source` field the canonical source `source`.
    ///
    /// Each event is normalised ([`normalize`], then nested objects
    /// flattened to dotted names) and gets the canonical fields
    /// `@timestamp` (RFC 3339 UTC, when it has a recognisable time; a
    /// different original is kept as `@timestamp_original`), `host` (from
    /// [`HOST_FIELDS`], unless it has one) and `source`. Events are written
    /// in blocks to new segments; `progress` is called after every fsynced
    /// block with the acknowledged count. [`Malformed`] records go to
    /// `malformed.jsonl` with their position.
    ///
    /// # Errors
    ///
    /// [`ShardError::InvalidName`] or [`ShardError::InvalidLabel`] for bad
    /// arguments (nothing is written), [`ShardError::AlreadyExists`] when a
    /// directory that is not a loadable shard holds the name, and
    /// [`ShardError::Io`] when the disk fails; blocks acknowledged before a
    /// failure stay stored (and counted in `meta.json`).
    pub fn append_from(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        source: &str,
        records: impl IntoIterator<Item = RecordResult>,
        progress: &mut dyn FnMut(&IngestProgress),
    ) -> Result<IngestReport, ShardError> {
        validate_shard_name(name)?;
        validate_labels(name, &labels)?;
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.shard_dir(name);
        let (mut meta, created) = match self.get(name) {
            Some(mut meta) => {
                meta.labels.extend(labels);
                (meta, false)
            }
            None => (self.create_shard(name, labels)?, true),
        };
        let mut next_seq = list_segments(&dir)
            .map_err(io_err("list the segments of", &dir))?
            .last()
            .map_or(1, |(seq, _)| seq + 1);

        let malformed_path = dir.join(MALFORMED_FILE);
        let mut run = AppendRun {
            dir: &dir,
            malformed_path: &malformed_path,
            malformed: None,
            kept_room: MAX_MALFORMED_KEPT
                .saturating_sub(meta.malformed_kept.unwrap_or(meta.malformed_count)),
            kept: 0,
            sample: Vec::new(),
            by_source: BTreeMap::new(),
            builder: BlockBuilder::new(meta.next_offset),
            writer: None,
            sealed: Vec::new(),
            summary: Summary::default(),
            progress: IngestProgress::default(),
        };
        let result = run.ingest(records, source, &mut next_seq, progress);
        // Whatever happened, what was acknowledged is sealed and counted.
        let finished = run.finish(progress);
        let result = result.and(finished);

        let AppendRun {
            sealed,
            summary,
            progress: done,
            kept,
            sample,
            by_source,
            ..
        } = run;
        meta.event_count += summary.event_count;
        meta.untimed_count += summary.untimed_count;
        meta.min_ts_ms = min_opt(meta.min_ts_ms, summary.min_ts_ms);
        meta.max_ts_ms = max_opt(meta.max_ts_ms, summary.max_ts_ms);
        meta.next_offset = meta.next_offset.max(summary.end_offset);
        for (name, n) in summary.fields {
            *meta.fields.entry(name).or_insert(0) += n;
        }
        bound_fields(&mut meta.fields);
        meta.malformed_count += done.malformed;
        // A shard from before the bounded sample may hold up to all its
        // malformed records in the file.
        let kept_before = meta
            .malformed_kept
            .unwrap_or(meta.malformed_count - done.malformed);
        meta.malformed_kept = Some(kept_before + kept);
        for (source, n) in by_source {
            count_source(&mut meta.malformed_by_source, &source, n);
        }
        meta.segment_count += sealed.len() as u64;
        let meta_result = write_meta(&dir, &meta);
        {
            let mut shards = self.write_shards();
            let state = shards.entry(name.to_owned()).or_insert_with(|| ShardState {
                meta: meta.clone(),
                segments: Vec::new(),
            });
            state.meta = meta.clone();
            state.segments.extend(sealed.iter().cloned());
        }
        result?;
        meta_result?;
        tracing::info!(
            shard = name,
            events = done.events_acknowledged,
            malformed = done.malformed,
            blocks = done.blocks_written,
            "events appended"
        );
        Ok(IngestReport {
            meta,
            lines_read: 0,
            blank_lines: 0,
            events_stored: done.events_acknowledged,
            malformed: done.malformed,
            malformed_sample: sample,
            without_timestamp: summary.untimed_count,
            created,
            blocks_written: done.blocks_written,
            segments_written: sealed.len() as u64,
            bytes_written: done.bytes_written,
        })
    }

    /// Creates an empty shard: a temporary directory with `meta.json`,
    /// renamed into place, so a shard directory always has its metadata.
    fn create_shard(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<ShardMeta, ShardError> {
        let final_dir = self.shard_dir(name);
        if fs::symlink_metadata(&final_dir).is_ok() {
            return Err(ShardError::AlreadyExists {
                name: name.to_owned(),
                path: final_dir,
            });
        }
        let meta = ShardMeta {
            name: name.to_owned(),
            labels,
            format: FORMAT_SEGMENTS_V1.to_owned(),
            event_count: 0,
            min_ts_ms: None,
            max_ts_ms: None,
            untimed_count: 0,
            malformed_count: 0,
            malformed_kept: Some(0),
            malformed_by_source: BTreeMap::new(),
            created_at_ms: now_ms(),
            retention_ms: None,
            segment_count: 0,
            next_offset: 0,
            recovered_bytes: 0,
            fields: BTreeMap::new(),
        };
        let seq = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let temp_dir = self
            .root
            .join(format!("{TEMP_PREFIX}{}-{seq}-{name}", process_nonce()));
        segment::create_private_dir(&temp_dir).map_err(io_err("create", &temp_dir))?;
        let mut guard = TempDirGuard {
            path: Some(temp_dir.clone()),
        };
        write_meta(&temp_dir, &meta)?;
        // Renaming a directory onto an existing non-empty one fails, so a
        // racing creation of the same name cannot replace a shard.
        if let Err(source) = fs::rename(&temp_dir, &final_dir) {
            if fs::symlink_metadata(&final_dir).is_ok() {
                return Err(ShardError::AlreadyExists {
                    name: name.to_owned(),
                    path: final_dir,
                });
            }
            return Err(ShardError::Io {
                action: "rename the new shard into place at",
                path: final_dir,
                source,
            });
        }
        guard.path = None;
        segment::sync_dir(&self.root).map_err(io_err("fsync directory", &self.root))?;
        self.write_shards().insert(
            name.to_owned(),
            ShardState {
                meta: meta.clone(),
                segments: Vec::new(),
            },
        );
        Ok(meta)
    }

    /// Sets how long shard `name` keeps events (see
    /// [`ShardStore::apply_retention`]).
    ///
    /// # Errors
    ///
    /// [`ShardError::NotFound`], or [`ShardError::Io`] writing `meta.json`.
    pub fn set_retention(
        &self,
        name: &str,
        retention_ms: Option<i64>,
    ) -> Result<ShardMeta, ShardError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut meta = self.get(name).ok_or_else(|| self.not_found(name))?;
        meta.retention_ms = retention_ms;
        write_meta(&self.shard_dir(name), &meta)?;
        if let Some(state) = self.write_shards().get_mut(name) {
            state.meta = meta.clone();
        }
        Ok(meta)
    }

    /// Drops, in every shard with a retention, the whole segments whose
    /// newest event is older than `now_ms - retention_ms`. Segments with no
    /// timed event are kept. The shard's counts are recomputed.
    ///
    /// # Errors
    ///
    /// [`ShardError::Io`] or [`ShardError::Corrupt`] when a segment index
    /// cannot be read or a file removed; shards handled before stay done.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, ShardError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = RetentionReport::default();
        let states: Vec<ShardState> = self.read_shards().values().cloned().collect();
        for state in states {
            let Some(retention) = state.meta.retention_ms else {
                continue;
            };
            let cutoff = now_ms.saturating_sub(retention);
            let name = state.meta.name.clone();
            let mut kept = Vec::new();
            let mut summary = Summary::default();
            let mut dropped_any = false;
            for seg in &state.segments {
                let index = self.load_index(&name, seg)?;
                if index.max_ts_ms().is_some_and(|max| max < cutoff) {
                    fs::remove_file(seg).map_err(io_err("remove", seg))?;
                    let idx = index_path(seg);
                    fs::remove_file(&idx).map_err(io_err("remove", &idx))?;
                    report.events_dropped += index.event_count();
                    report.dropped.push((name.clone(), seg.clone()));
                    dropped_any = true;
                } else {
                    summary.add(&index);
                    kept.push(seg.clone());
                }
            }
            if !dropped_any {
                continue;
            }
            let dir = self.shard_dir(&name);
            segment::sync_dir(&dir).map_err(io_err("fsync directory", &dir))?;
            let mut meta = state.meta.clone();
            summary.apply(&mut meta, kept.len());
            write_meta(&dir, &meta)?;
            tracing::info!(shard = %name, events = meta.event_count, "retention dropped segments");
            if let Some(s) = self.write_shards().get_mut(&name) {
                s.meta = meta;
                s.segments = kept;
            }
        }
        Ok(report)
    }

    /// Rewrites the blocks of shard `name` that are not in `format` (the
    /// current format, [`BlockFormat::CURRENT`], but for tests), segment by
    /// segment, keeping every event, offset and block statistic. Appends
    /// wait meanwhile; run it with no scan in flight (`quarry worker
    /// migrate` opens the store itself, so the worker must be stopped).
    ///
    /// Crash-safe like ingest: a segment is rewritten under a temporary
    /// name and fsynced, its old index removed, and the new file renamed
    /// over the old one before its index is written. A crash at any point
    /// leaves the old segment or the new one, and opening the store rebuilds
    /// a missing index and removes the temporary file.
    /// `progress` is called after each segment.
    ///
    /// # Errors
    ///
    /// [`ShardError::NotFound`]; [`ShardError::Io`] when a file cannot be
    /// read or written; [`ShardError::Corrupt`] when a block does not hold
    /// what its header says. Segments migrated before stay migrated.
    pub fn migrate(
        &self,
        name: &str,
        format: BlockFormat,
        progress: &mut dyn FnMut(&MigrateReport),
    ) -> Result<MigrateReport, ShardError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.state(name)?;
        let mut report = MigrateReport {
            shard: name.to_owned(),
            format,
            segments_total: state.segments.len() as u64,
            ..MigrateReport::default()
        };
        for seg in &state.segments {
            let index = self.load_index(name, seg)?;
            report.bytes_before += index.segment_len;
            let pending = index
                .blocks
                .iter()
                .filter(|b| b.header.format != format.number())
                .count();
            if pending == 0 {
                report.blocks_kept += index.blocks.len() as u64;
                report.bytes_after += index.segment_len;
                report.segments_done += 1;
                progress(&report);
                continue;
            }
            let rewritten = self.rewrite_segment(name, seg, &index, format)?;
            report.blocks_rewritten += pending as u64;
            report.blocks_kept += (index.blocks.len() - pending) as u64;
            report.events += index.event_count();
            report.bytes_after += rewritten.segment_len;
            report.segments_rewritten += 1;
            report.segments_done += 1;
            progress(&report);
        }
        Ok(report)
    }

    /// One segment of [`ShardStore::migrate`]; returns its new index.
    fn rewrite_segment(
        &self,
        name: &str,
        seg: &Path,
        index: &SegmentIndex,
        format: BlockFormat,
    ) -> Result<SegmentIndex, ShardError> {
        let mut temp = seg.as_os_str().to_owned();
        temp.push(".migrate.tmp");
        let temp = PathBuf::from(temp);
        remove_if_exists(&temp)?;
        let mut file = File::open(seg).map_err(io_err("open", seg))?;
        let mut writer = SegmentWriter::create(&temp).map_err(io_err("create", &temp))?;
        for (block_no, entry) in index.blocks.iter().enumerate() {
            let corrupt = |reason: String| block_corrupt(name, seg, block_no, entry, reason);
            let (header, bytes) = if entry.header.format == format.number() {
                // Already in the format: copied as it is, once its payload
                // checks out.
                let mut bytes = vec![0u8; (entry.end() - entry.offset) as usize];
                use std::io::{Read as _, Seek as _, SeekFrom};
                file.seek(SeekFrom::Start(entry.offset))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(io_err("read", seg))?;
                let payload = &bytes[(entry.payload_offset - entry.offset) as usize..];
                if crc32fast::hash(payload) != entry.header.payload_crc {
                    return Err(corrupt("its payload fails its checksum".to_owned()));
                }
                (entry.header.clone(), bytes)
            } else {
                let payload = read_block_payload(&mut file, entry, seg, &corrupt)?;
                let events = payload.decode_all().map_err(|e| corrupt(e.to_string()))?;
                if events.len() != entry.header.stats.event_count as usize {
                    return Err(corrupt(format!(
                        "holds {} events, its header says {}",
                        events.len(),
                        entry.header.stats.event_count
                    )));
                }
                segment::reencode_block(entry.header.stats.clone(), events, format)
                    .map_err(|e| corrupt(format!("cannot be re-encoded: {e}")))?
            };
            writer
                .write_block(header, &bytes)
                .map_err(io_err("write", &temp))?;
        }
        let new_index = writer.finish_unindexed().map_err(io_err("write", &temp))?;
        let dir = seg.parent().unwrap_or(Path::new("."));
        let old_index = index_path(seg);
        remove_if_exists(&old_index)?;
        segment::sync_dir(dir).map_err(io_err("sync", dir))?;
        fs::rename(&temp, seg).map_err(io_err("replace", seg))?;
        segment::sync_dir(dir).map_err(io_err("sync", dir))?;
        segment::write_index(seg, &new_index).map_err(io_err("write the index of", seg))?;
        Ok(new_index)
    }

    /// Streams the events of shard `name` to `f` in batches of up to
    /// `batch_size` (at least 1), in offset order: [`ShardStore::scan_with`]
    /// with only a time range.
    ///
    /// # Errors
    ///
    /// As [`ShardStore::scan_with`].
    pub fn scan<E, F>(
        &self,
        name: &str,
        time_range: Option<(i64, i64)>,
        batch_size: usize,
        f: F,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
        F: FnMut(&[StoredEvent]) -> Result<(), E>,
    {
        let filter = ScanFilter {
            time_range,
            ..ScanFilter::default()
        };
        self.scan_with(name, &filter, batch_size, f)
    }

    /// Streams the events of shard `name` to `f` in batches of up to
    /// `batch_size` (at least 1), in offset order, one block in memory at a
    /// time.
    ///
    /// With a time range `(start, end)`, only events with
    /// `start <= timestamp_ms < end` are passed on; events without a timestamp
    /// have timestamp 0. When the shard's bounds rule the range out, nothing is
    /// read ([`ScanStats::pruned`]); blocks whose bounds rule it out, or that
    /// the block filter rejects, are skipped undecoded
    /// ([`ScanStats::blocks_skipped`]). Segments being written by a running
    /// append are not seen.
    ///
    /// # Errors
    ///
    /// An error from `f` stops the scan and is returned as is.
    /// [`ShardError::NotFound`] for an unknown shard, [`ShardError::Io`] when
    /// a segment cannot be read, and [`ShardError::Corrupt`] when it does not
    /// hold what was stored (a checksum or decoding failure), converted into
    /// `E`.
    pub fn scan_with<E, F>(
        &self,
        name: &str,
        filter: &ScanFilter<'_>,
        batch_size: usize,
        mut f: F,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
        F: FnMut(&[StoredEvent]) -> Result<(), E>,
    {
        let batch_size = batch_size.max(1);
        let mut batch: Vec<StoredEvent> = Vec::with_capacity(batch_size.min(65_536));
        let mut stats = self.scan_blocks(
            name,
            filter,
            |block, payload, stats, corrupt| -> Result<(), E> {
                let events = payload.decode_all().map_err(|e| corrupt(e.to_string()))?;
                for (i, (timestamp_ms, doc)) in events.into_iter().enumerate() {
                    stats.events_read += 1;
                    let offset = block.first_offset + i as u64;
                    if !filter.wants(offset, timestamp_ms) {
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
                Ok(())
            },
        )?;
        if !batch.is_empty() {
            stats.events_emitted += batch.len() as u64;
            stats.batches += 1;
            f(&batch)?;
        }
        Ok(stats)
    }

    /// Streams, block by block, the events of shard `name` that pass
    /// `prefilter`, each projected onto `projection`'s fields, in offset
    /// order: what a module's scan reads. `f` gets, per block read, the
    /// number of its events in range (before the prefilter) and the
    /// projected events that pass.
    ///
    /// In a column block only the columns of the prefilter's clauses are
    /// decoded for every event in range, strings compared once per
    /// dictionary value, and the projected columns only for the events that
    /// pass; nothing is parsed as JSON but nested values. Blocks in the rows
    /// format (written before column blocks) are decoded whole, as
    /// [`ShardStore::scan_with`] does. Either way the events and values are
    /// those of [`Prefilter::matches`] and [`Projection::project`] on the
    /// whole events.
    ///
    /// # Errors
    ///
    /// As [`ShardStore::scan_with`].
    pub fn scan_projected<E, F>(
        &self,
        name: &str,
        filter: &ScanFilter<'_>,
        prefilter: &Prefilter,
        projection: &Projection,
        mut f: F,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
        F: FnMut(u64, Vec<ProjectedEvent>) -> Result<(), E>,
    {
        self.scan_kept(name, filter, prefilter, |in_range, kept, damaged| {
            let events: Vec<ProjectedEvent> = match kept {
                Kept::Rows(events) => events
                    .into_iter()
                    .map(|(offset, timestamp_ms, doc)| ProjectedEvent {
                        offset,
                        timestamp_ms,
                        values: projection.project(&doc),
                    })
                    .collect(),
                Kept::Columns {
                    block,
                    rows,
                    offsets,
                    timestamps,
                } => {
                    let values = projection.project_columns(&block, &rows).map_err(damaged)?;
                    offsets
                        .into_iter()
                        .zip(timestamps)
                        .zip(values)
                        .map(|((offset, timestamp_ms), values)| ProjectedEvent {
                            offset,
                            timestamp_ms,
                            values,
                        })
                        .collect()
                }
            };
            let emitted = events.len();
            f(in_range, events)?;
            Ok(emitted)
        })
    }

    /// As [`ShardStore::scan_projected`], the events of each block by
    /// column ([`ProjectedColumns`]): what a module that takes batches by
    /// column reads. No value gets a string of its own on the way.
    ///
    /// # Errors
    ///
    /// As [`ShardStore::scan_with`].
    pub fn scan_projected_columns<E, F>(
        &self,
        name: &str,
        filter: &ScanFilter<'_>,
        prefilter: &Prefilter,
        projection: &Projection,
        mut f: F,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
        F: FnMut(u64, ProjectedColumns) -> Result<(), E>,
    {
        self.scan_kept(name, filter, prefilter, |in_range, kept, damaged| {
            let columns = match kept {
                Kept::Rows(events) => {
                    let mut columns = ProjectedColumns::new(projection.len());
                    for (offset, timestamp_ms, doc) in events {
                        columns.offsets.push(offset);
                        columns.timestamps.push(timestamp_ms);
                        let values = projection.project(&doc);
                        for (field, value) in columns.fields.iter_mut().zip(&values) {
                            field.push(value.as_deref());
                        }
                    }
                    columns
                }
                Kept::Columns {
                    block,
                    rows,
                    offsets,
                    timestamps,
                } => ProjectedColumns {
                    fields: projection.project_texts(&block, &rows).map_err(damaged)?,
                    offsets,
                    timestamps,
                },
            };
            let emitted = columns.len();
            f(in_range, columns)?;
            Ok(emitted)
        })
    }

    /// Hands `on_block`, per block read, the number of its events in the
    /// range and the events that pass `prefilter` ([`Kept`]); `on_block`
    /// returns how many it emitted.
    fn scan_kept<E>(
        &self,
        name: &str,
        filter: &ScanFilter<'_>,
        prefilter: &Prefilter,
        mut on_block: impl FnMut(u64, Kept<'_>, &dyn Fn(BlockError) -> ShardError) -> Result<usize, E>,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
    {
        self.scan_blocks(
            name,
            filter,
            |block, payload, stats, corrupt| -> Result<(), E> {
                let damaged = |e: BlockError| corrupt(e.to_string());
                let mut in_range = 0u64;
                let mut decoded = u64::from(block.event_count);
                let kept = match &payload {
                    Payload::Rows(_) => {
                        let events = payload.decode_all().map_err(|e| corrupt(e.to_string()))?;
                        decoded = events.len() as u64;
                        let mut kept = Vec::new();
                        for (i, (timestamp_ms, doc)) in events.into_iter().enumerate() {
                            let offset = block.first_offset + i as u64;
                            if !filter.wants(offset, timestamp_ms) {
                                continue;
                            }
                            in_range += 1;
                            if prefilter.matches(&doc) {
                                kept.push((offset, timestamp_ms, doc));
                            }
                        }
                        Kept::Rows(kept)
                    }
                    Payload::Columns(bytes) => {
                        let columns = ColumnBlock::parse(bytes).map_err(damaged)?;
                        if columns.len() != block.event_count as usize {
                            return Err(corrupt(format!(
                                "holds {} events, its header says {}",
                                columns.len(),
                                block.event_count
                            ))
                            .into());
                        }
                        let timestamps = columns.timestamps().map_err(damaged)?;
                        let mut rows: Vec<bool> = timestamps
                            .iter()
                            .enumerate()
                            .map(|(i, &ts)| filter.wants(block.first_offset + i as u64, ts))
                            .collect();
                        in_range = rows.iter().filter(|&&r| r).count() as u64;
                        prefilter
                            .retain_columns(&columns, &mut rows)
                            .map_err(damaged)?;
                        let (offsets, timestamps) = rows
                            .iter()
                            .zip(timestamps)
                            .enumerate()
                            .filter(|(_, (keep, _))| **keep)
                            .map(|(i, (_, ts))| (block.first_offset + i as u64, ts))
                            .unzip();
                        Kept::Columns {
                            block: columns,
                            rows,
                            offsets,
                            timestamps,
                        }
                    }
                };
                let emitted = on_block(in_range, kept, &damaged)?;
                stats.events_read += decoded;
                stats.events_skipped += decoded - in_range;
                stats.events_emitted += emitted as u64;
                stats.batches += 1;
                Ok(())
            },
        )
    }

    /// Hands each block of shard `name` that `filter` may want to `f`, with
    /// its statistics, read and checked but not decoded (one in memory at a
    /// time): for tools that decode blocks their own way (the benchmark's
    /// decode of every column). Offsets and times inside a block are not
    /// filtered.
    ///
    /// # Errors
    ///
    /// As [`ShardStore::scan_with`].
    pub fn scan_payloads<E>(
        &self,
        name: &str,
        filter: &ScanFilter<'_>,
        mut f: impl FnMut(&BlockStats, &Payload) -> Result<u64, E>,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
    {
        self.scan_blocks(name, filter, |block, payload, stats, _| -> Result<(), E> {
            let events = f(block, &payload)?;
            stats.events_read += events;
            stats.events_emitted += events;
            stats.batches += 1;
            Ok(())
        })
    }

    /// Reads the blocks of shard `name` that `filter` may want, in offset
    /// order, one in memory at a time, and hands each to `on_block` with
    /// its statistics, the scan's counters and a maker of corruption errors
    /// naming the block. Counts blocks read and skipped and bytes read.
    fn scan_blocks<E>(
        &self,
        name: &str,
        filter: &ScanFilter<'_>,
        mut on_block: impl FnMut(
            &BlockStats,
            Payload,
            &mut ScanStats,
            &dyn Fn(String) -> ShardError,
        ) -> Result<(), E>,
    ) -> Result<ScanStats, E>
    where
        E: From<ShardError>,
    {
        let state = self.state(name)?;
        let mut stats = ScanStats {
            end_offset: state.meta.next_offset,
            ..ScanStats::default()
        };
        let time_range = filter.time_range;
        let min_offset = filter.min_offset;
        if (min_offset > 0 && min_offset >= state.meta.next_offset)
            || time_range.is_some_and(|(start, end)| !state.meta.may_overlap(start, end))
        {
            stats.pruned = true;
            return Ok(stats);
        }
        for seg in &state.segments {
            let mut file = match File::open(seg) {
                Ok(file) => file,
                // Dropped by retention since the scan started.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open", seg)(e).into()),
            };
            let index = match self.load_index(name, seg) {
                Ok(index) => index,
                // Dropped by retention since the scan started.
                Err(_) if !seg.exists() => continue,
                Err(e) => return Err(e.into()),
            };
            for (block_no, entry) in index.blocks.iter().enumerate() {
                let block = &entry.header.stats;
                let in_range = time_range.is_none_or(|(s, e)| block.may_overlap(s, e))
                    && block.first_offset + u64::from(block.event_count) > min_offset;
                if !in_range || filter.block_filter.is_some_and(|keep| !keep(block)) {
                    stats.blocks_skipped += 1;
                    continue;
                }
                let corrupt = |reason: String| block_corrupt(name, seg, block_no, entry, reason);
                let payload = read_block_payload(&mut file, entry, seg, &corrupt)?;
                stats.blocks_read += 1;
                stats.bytes_read += u64::from(entry.header.payload_len);
                let events_before = stats.events_read;
                on_block(block, payload, &mut stats, &corrupt)?;
                if stats.events_read - events_before != u64::from(block.event_count) {
                    return Err(corrupt(format!(
                        "holds {} events, its header says {}",
                        stats.events_read - events_before,
                        block.event_count
                    ))
                    .into());
                }
            }
        }
        Ok(stats)
    }

    /// The sample of malformed records kept aside by the ingests of shard
    /// `name`: the first [`MAX_MALFORMED_KEPT`] (the counts are in its
    /// [`ShardMeta`]). Reads the file line by line and stops there, so a
    /// large file left by an older version is never read whole.
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
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut input = io::BufReader::new(file);
        let mut line = Vec::new();
        let mut records = Vec::new();
        let mut line_no = 0u64;
        // A kept record is at most ~1 KiB of raw text plus its position; a
        // line much longer than that is not one this store wrote.
        const MAX_ENTRY_BYTES: usize = 64 << 10;
        while (records.len() as u64) < MAX_MALFORMED_KEPT {
            let read = read_line_bounded(&mut input, &mut line, MAX_ENTRY_BYTES)
                .map_err(io_err("read", &path))?;
            if read.consumed == 0 {
                break;
            }
            line_no += 1;
            let corrupt = |reason: String| ShardError::Corrupt {
                shard: name.to_owned(),
                path: path.clone(),
                line: line_no,
                reason,
            };
            if read.overflow {
                return Err(corrupt(format!(
                    "longer than {MAX_ENTRY_BYTES} bytes, not a malformed-record entry"
                )));
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.is_empty() {
                continue;
            }
            records.push(
                serde_json::from_slice(text)
                    .map_err(|e| corrupt(format!("not a malformed-record entry ({e})")))?,
            );
        }
        Ok(records)
    }

    fn load_index(&self, name: &str, seg: &Path) -> Result<SegmentIndex, ShardError> {
        let len = fs::metadata(seg).map_err(io_err("read", seg))?.len();
        read_index(seg, len).ok_or_else(|| ShardError::Corrupt {
            shard: name.to_owned(),
            path: index_path(seg),
            line: 0,
            reason: format!(
                "the segment index is missing, unreadable or does not match the {len}-byte \
                 segment; restart the worker to rebuild it"
            ),
        })
    }

    /// A copy of shard `name`'s state (its segments as they are now).
    fn state(&self, name: &str) -> Result<ShardState, ShardError> {
        self.read_shards()
            .get(name)
            .cloned()
            .ok_or_else(|| self.not_found(name))
    }

    fn not_found(&self, name: &str) -> ShardError {
        let names: Vec<String> = self.read_shards().keys().cloned().collect();
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
    // map is updated by single inserts, so it is still consistent.
    fn read_shards(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ShardState>> {
        self.shards.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_shards(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ShardState>> {
        self.shards.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The state of one [`ShardStore::append_from`] call.
struct AppendRun<'a> {
    dir: &'a Path,
    malformed_path: &'a Path,
    malformed: Option<BufWriter<File>>,
    /// Malformed records the shard's sample file still has room for.
    kept_room: u64,
    /// Malformed records written to the sample file by this run.
    kept: u64,
    /// This run's first malformed records, for its report.
    sample: Vec<MalformedRecord>,
    /// This run's malformed records per source.
    by_source: BTreeMap<String, u64>,
    builder: BlockBuilder,
    writer: Option<SegmentWriter>,
    sealed: Vec<PathBuf>,
    /// Acknowledged events only.
    summary: Summary,
    progress: IngestProgress,
}

impl AppendRun<'_> {
    fn ingest(
        &mut self,
        records: impl IntoIterator<Item = RecordResult>,
        source: &str,
        next_seq: &mut u64,
        progress: &mut dyn FnMut(&IngestProgress),
    ) -> Result<(), ShardError> {
        for record in records {
            self.progress.records += 1;
            let malformed = match record {
                // Readers of line formats check this already and name the
                // line; this catches every other reader.
                Ok(Value::Object(doc)) if let Err(error) = check_flattening(&doc) => {
                    rejected_record(source, self.progress.records, error, &Value::Object(doc))
                }
                Ok(Value::Object(doc)) => {
                    let (ts, doc) = prepare_event(doc, source);
                    self.builder
                        .push_owned(ts, doc)
                        .map_err(io_err("encode an event for", self.dir))?;
                    self.progress.events_pending += 1;
                    if self.builder.is_full() {
                        self.write_block(next_seq, progress)?;
                    }
                    continue;
                }
                Ok(other) => Malformed {
                    position: Position {
                        source: source.to_owned(),
                        record: Some(self.progress.records),
                        ..Position::default()
                    },
                    error: "expected a JSON object".to_owned(),
                    raw: other.to_string(),
                    raw_len: other.to_string().len() as u64,
                },
                Err(malformed) => malformed,
            };
            self.progress.malformed += 1;
            let record = MalformedRecord::from_malformed(malformed);
            let source = if record.source.is_empty() {
                source
            } else {
                &record.source
            };
            count_source(&mut self.by_source, source, 1);
            if self.kept >= self.kept_room {
                // Counted only: the sample on disk is full. Nothing is
                // written, so garbage input costs no disk beyond the sample.
                if self.sample.len() < MAX_MALFORMED_REPORTED {
                    self.sample.push(record);
                }
                continue;
            }
            let writer = match &mut self.malformed {
                Some(writer) => writer,
                None => {
                    let file = segment::private_file()
                        .create(true)
                        .append(true)
                        .open(self.malformed_path)
                        .map_err(io_err("open", self.malformed_path))?;
                    self.malformed.insert(BufWriter::new(file))
                }
            };
            serde_json::to_writer(&mut *writer, &record)
                .map_err(io::Error::from)
                .and_then(|()| writer.write_all(b"\n"))
                .map_err(io_err("write", self.malformed_path))?;
            self.kept += 1;
            if self.sample.len() < MAX_MALFORMED_REPORTED {
                self.sample.push(record);
            }
        }
        if !self.builder.is_empty() {
            self.write_block(next_seq, progress)?;
        }
        Ok(())
    }

    /// Writes the pending block, fsynced: its events are acknowledged.
    fn write_block(
        &mut self,
        next_seq: &mut u64,
        progress: &mut dyn FnMut(&IngestProgress),
    ) -> Result<(), ShardError> {
        let (header, bytes) = self
            .builder
            .finish()
            .map_err(io_err("compress a block for", self.dir))?;
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let path = self.dir.join(segment_file_name(*next_seq));
                *next_seq += 1;
                let writer = SegmentWriter::create(&path).map_err(io_err("create", &path))?;
                // The new file's directory entry must be durable before any
                // of its blocks is acknowledged.
                segment::sync_dir(self.dir).map_err(io_err("fsync directory", self.dir))?;
                self.writer.insert(writer)
            }
        };
        let stats = header.stats.clone();
        let path = writer.path().to_path_buf();
        writer
            .write_block(header, &bytes)
            .map_err(io_err("write", &path))?;
        if let Some(malformed) = &mut self.malformed {
            malformed
                .flush()
                .map_err(io_err("write", self.malformed_path))?;
        }
        let events = u64::from(stats.event_count);
        self.summary.event_count += events;
        self.summary.untimed_count += u64::from(stats.untimed);
        self.summary.min_ts_ms = min_opt(self.summary.min_ts_ms, stats.min_ts_ms);
        self.summary.max_ts_ms = max_opt(self.summary.max_ts_ms, stats.max_ts_ms);
        self.summary.end_offset = stats.first_offset + events;
        count_fields(&mut self.summary.fields, &stats);
        self.progress.events_acknowledged += events;
        self.progress.events_pending = self.progress.events_pending.saturating_sub(events);
        self.progress.blocks_written += 1;
        self.progress.bytes_written += bytes.len() as u64;
        progress(&self.progress);
        if writer.len() >= segment::SEGMENT_MAX_BYTES {
            self.seal()?;
        }
        Ok(())
    }

    fn seal(&mut self) -> Result<(), ShardError> {
        if let Some(writer) = self.writer.take() {
            let path = writer.path().to_path_buf();
            writer.seal().map_err(io_err("seal", &path))?;
            self.sealed.push(path);
        }
        Ok(())
    }

    /// Seals the open segment and fsyncs the malformed records.
    fn finish(&mut self, progress: &mut dyn FnMut(&IngestProgress)) -> Result<(), ShardError> {
        let sealed = self.seal();
        let malformed = match self.malformed.take() {
            Some(writer) => finish_file(writer, self.malformed_path),
            None => Ok(()),
        };
        progress(&self.progress);
        sealed.and(malformed)
    }
}

/// Reads JSON lines as records for [`ShardStore::append`].
struct JsonLines<R> {
    input: R,
    source: String,
    line: Vec<u8>,
    lines_read: u64,
    blank_lines: u64,
    byte_offset: u64,
    done: bool,
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        while !self.done {
            let position = |line: u64, byte_offset: u64, source: &str| Position {
                source: source.to_owned(),
                line: Some(line),
                byte_offset: Some(byte_offset),
                record: None,
            };
            let read = match read_line_bounded(&mut self.input, &mut self.line, MAX_RECORD_BYTES) {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Some(Err(Malformed {
                        position: position(self.lines_read + 1, self.byte_offset, &self.source),
                        error: format!(
                            "reading the input failed: {e}; the rest of the input was not read"
                        ),
                        raw: String::new(),
                        raw_len: 0,
                    }));
                }
            };
            if read.consumed == 0 {
                self.done = true;
                break;
            }
            self.lines_read += 1;
            let line_no = self.lines_read;
            let line_offset = self.byte_offset;
            self.byte_offset += read.consumed as u64;
            let mut record: &[u8] = &self.line;
            if line_no == 1 {
                record = record.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(record);
            }
            record = record.strip_suffix(b"\n").unwrap_or(record);
            record = record.strip_suffix(b"\r").unwrap_or(record);
            if !read.overflow && record.iter().all(u8::is_ascii_whitespace) {
                self.blank_lines += 1;
                continue;
            }
            return Some(match parse_record(record, read.overflow) {
                Ok(doc) => Ok(doc),
                Err(error) => {
                    let kept = record.get(..MAX_MALFORMED_RAW_BYTES).unwrap_or(record);
                    let mut raw = String::from_utf8_lossy(kept).into_owned();
                    // Cutting at 4 KiB may split a character; drop the partial
                    // replacement character rather than keep noise.
                    if kept.len() < record.len() && raw.ends_with('\u{FFFD}') {
                        raw.pop();
                    }
                    Err(Malformed {
                        position: position(line_no, line_offset, &self.source),
                        error,
                        raw,
                        // An overflowing line was only partly kept: its length
                        // is what was consumed, less the newline.
                        raw_len: if read.overflow {
                            (read.consumed - usize::from(read.newline)) as u64
                        } else {
                            record.len() as u64
                        },
                    })
                }
            });
        }
        None
    }
}

/// Normalises one event for storage: EVTX flattening ([`normalize`]), nested
/// objects flattened to dotted names, and the canonical `@timestamp`, `host`
/// and `source` fields. Returns the event's timestamp too.
pub fn prepare_event(doc: Map<String, Value>, source: &str) -> (Option<i64>, Value) {
    let doc = normalize(Value::Object(doc));
    let ts = event_timestamp_ms(&doc);
    let Value::Object(map) = doc else {
        return (ts, doc);
    };
    let mut flat = Map::new();
    flatten_into("", map, &mut flat);
    if let Some(ts) = ts {
        let canonical = Value::String(format_rfc3339_ms(ts));
        if let Some(original) = flat.remove("@timestamp")
            && original != canonical
        {
            flat.entry("@timestamp_original").or_insert(original);
        }
        flat.insert("@timestamp".to_owned(), canonical);
    }
    if !flat.contains_key("host")
        && let Some(host) = HOST_FIELDS.iter().find_map(|field| {
            flat.get(*field)
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
        })
    {
        let host = host.to_owned();
        flat.insert("host".to_owned(), Value::String(host));
    }
    if !flat.contains_key("source") && !source.is_empty() {
        flat.insert("source".to_owned(), Value::String(source.to_owned()));
    }
    (ts, Value::Object(flat))
}

/// Flattens nested objects into dotted names; arrays and other values are
/// kept as they are. A name that is already taken keeps its first value.
/// Checks that flattening `doc` to dotted names stays within
/// [`MAX_NESTING_DEPTH`] and [`MAX_FLATTENED_KEY_BYTES`], without building
/// the names; the error says why the record is malformed.
///
/// # Errors
///
/// The reason, for a [`Malformed`] record.
pub fn check_flattening(doc: &Map<String, Value>) -> Result<(), String> {
    fn walk(
        map: &Map<String, Value>,
        depth: usize,
        prefix_len: usize,
        total: &mut usize,
    ) -> Result<(), String> {
        if depth > MAX_NESTING_DEPTH {
            return Err(format!(
                "objects are nested more than {MAX_NESTING_DEPTH} deep; flatten the record or \
                 drop its deep part before ingesting"
            ));
        }
        for (key, value) in map {
            let len = if depth == 1 {
                key.len()
            } else {
                prefix_len + 1 + key.len()
            };
            match value {
                Value::Object(inner) if !inner.is_empty() => walk(inner, depth + 1, len, total)?,
                _ => {
                    *total += len;
                    if *total > MAX_FLATTENED_KEY_BYTES {
                        return Err(format!(
                            "its nested field names flatten to more than \
                             {MAX_FLATTENED_KEY_BYTES} bytes of dotted names; shorten or \
                             unnest its keys before ingesting"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
    walk(doc, 1, 0, &mut 0)
}

/// Counts the bytes written and keeps the first [`MAX_MALFORMED_RAW_BYTES`].
struct BoundedText {
    kept: Vec<u8>,
    len: u64,
}

impl Write for BoundedText {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = MAX_MALFORMED_RAW_BYTES.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&buf[..room.min(buf.len())]);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A parsed record that cannot be stored, as a [`Malformed`] at record
/// number `record` of `source`, its raw text re-encoded (and bounded).
fn rejected_record(source: &str, record: u64, error: String, doc: &Value) -> Malformed {
    let mut text = BoundedText {
        kept: Vec::new(),
        len: 0,
    };
    // Writing to memory cannot fail; the length is what counts.
    let _ = serde_json::to_writer(&mut text, doc);
    let mut raw = String::from_utf8_lossy(&text.kept).into_owned();
    if text.len > text.kept.len() as u64 && raw.ends_with('\u{FFFD}') {
        raw.pop();
    }
    Malformed {
        position: Position {
            source: source.to_owned(),
            record: Some(record),
            ..Position::default()
        },
        error,
        raw,
        raw_len: text.len,
    }
}

fn flatten_into(prefix: &str, map: Map<String, Value>, out: &mut Map<String, Value>) {
    for (key, value) in map {
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten_into(&name, inner, out),
            other => {
                out.entry(name).or_insert(other);
            }
        }
    }
}

fn validate_labels(name: &str, labels: &BTreeMap<String, String>) -> Result<(), ShardError> {
    for key in labels.keys() {
        if key.is_empty() || key.chars().any(char::is_control) {
            return Err(ShardError::InvalidLabel {
                shard: name.to_owned(),
                key: key.clone(),
                reason: "label keys must be non-empty and free of control characters".to_owned(),
            });
        }
    }
    Ok(())
}

/// Takes the exclusive lock on `root`'s [`LOCK_FILE`] and writes our pid in it.
fn lock_root(root: &Path) -> Result<File, ShardError> {
    use std::io::{Read as _, Seek as _};
    let path = root.join(LOCK_FILE);
    let mut file = segment::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open the lock file", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            // The holder wrote its pid right after locking; a few bytes at most.
            let mut text = String::new();
            let _ = (&file).take(32).read_to_string(&mut text);
            return Err(ShardError::Locked {
                root: root.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io_err("write the lock file", &path))?;
    Ok(file)
}

fn write_meta(dir: &Path, meta: &ShardMeta) -> Result<(), ShardError> {
    let bytes = serde_json::to_vec_pretty(meta).map_err(|source| ShardError::Encode {
        shard: meta.name.clone(),
        what: "meta.json",
        source,
    })?;
    let path = dir.join(META_FILE);
    segment::write_atomic(&path, &bytes).map_err(io_err("write atomically", &path))
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

/// Loads and checks one shard directory, recovering torn segment tails; the
/// error is a reason for skipping it.
fn load_shard_dir(dir: &Path, dir_name: &str) -> Result<(ShardState, Vec<RecoveredTail>), String> {
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
    let mut meta: ShardMeta = serde_json::from_slice(&bytes).map_err(|e| {
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
    if meta.format != FORMAT_SEGMENTS_V1 {
        return Err(format!(
            "{} has format {:?}, which this worker cannot read (it reads \
             {FORMAT_SEGMENTS_V1:?}); ingest the shard again from its source, or run a worker \
             version that reads it",
            meta_path.display(),
            meta.format
        ));
    }
    let before = meta.clone();
    let segments =
        list_segments(dir).map_err(|e| format!("could not list {}: {e}", dir.display()))?;
    let mut tails = Vec::new();
    let mut kept = Vec::new();
    let mut summary = Summary::default();
    for (_, seg) in segments {
        let (index, tail) = load_segment(dir_name, &seg)
            .map_err(|e| format!("could not verify segment {}: {e}; {FIX}", seg.display()))?;
        if let Some(tail) = tail {
            tracing::warn!(
                shard = dir_name,
                segment = %seg.display(),
                truncated_bytes = tail.truncated_bytes,
                blocks_kept = tail.blocks_kept,
                reason = %tail.reason,
                "cut a torn or corrupt segment tail"
            );
            meta.recovered_bytes += tail.truncated_bytes;
            tails.push(tail);
        }
        if index.blocks.is_empty() {
            // Created by an append that died before its first block.
            for path in [index_path(&seg), seg.clone()] {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove an empty segment");
                }
            }
            continue;
        }
        summary.add(&index);
        kept.push(seg);
    }
    // Leftovers of interrupted atomic writes and indexes of removed segments.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stale_index = name.ends_with(".qidx") && !path.with_extension("qseg").exists();
            if name.ends_with(".tmp") || stale_index {
                let _ = fs::remove_file(&path);
            }
        }
    }
    summary.apply(&mut meta, kept.len());
    meta.malformed_count = count_lines(&dir.join(MALFORMED_FILE));
    if meta != before {
        write_meta(dir, &meta).map_err(|e| e.to_string())?;
    }
    Ok((
        ShardState {
            meta,
            segments: kept,
        },
        tails,
    ))
}

/// The index of one segment: its sealed index when that matches the file and
/// the last block checks out, otherwise rebuilt by verifying every block and
/// cutting a torn or corrupt tail.
/// Removes `path`; one already gone is fine.
fn remove_if_exists(path: &Path) -> Result<(), ShardError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Block `block_no` (from 0) of segment `seg` of shard `shard` does not hold
/// what was stored.
fn block_corrupt(
    shard: &str,
    seg: &Path,
    block_no: usize,
    entry: &segment::IndexEntry,
    reason: String,
) -> ShardError {
    ShardError::Corrupt {
        shard: shard.to_owned(),
        path: seg.to_path_buf(),
        line: 0,
        reason: format!(
            "block {} at offset {}: {reason}",
            block_no + 1,
            entry.offset
        ),
    }
}

/// Reads and checks the payload of `entry` in `seg`; damage goes through
/// `corrupt`.
fn read_block_payload(
    file: &mut File,
    entry: &segment::IndexEntry,
    seg: &Path,
    corrupt: &dyn Fn(String) -> ShardError,
) -> Result<Payload, ShardError> {
    read_payload(file, entry).map_err(|e| match e {
        BlockError::Io(e) => io_err("read", seg)(e),
        BlockError::Invalid(reason) => corrupt(reason),
    })
}

fn load_segment(shard: &str, seg: &Path) -> io::Result<(SegmentIndex, Option<RecoveredTail>)> {
    let len = fs::metadata(seg)?.len();
    if let Some(index) = read_index(seg, len) {
        let last_ok = match index.blocks.last() {
            None => true,
            Some(last) => {
                let mut file = File::open(seg)?;
                match read_block_at(&mut file, last.offset, len) {
                    Ok(entry) => entry == *last,
                    Err(BlockError::Io(e)) => return Err(e),
                    Err(BlockError::Invalid(_)) => false,
                }
            }
        };
        if last_ok {
            return Ok((index, None));
        }
    }
    let recovery = recover_segment(seg)?;
    let tail = (recovery.truncated_bytes > 0).then(|| RecoveredTail {
        shard: shard.to_owned(),
        segment: seg.to_path_buf(),
        blocks_kept: recovery.index.blocks.len() as u64,
        truncated_bytes: recovery.truncated_bytes,
        reason: recovery.reason.clone().unwrap_or_default(),
    });
    Ok((recovery.index, tail))
}

/// Complete (newline-terminated) lines of a file; 0 when it is missing.
fn count_lines(path: &Path) -> u64 {
    use std::io::Read;
    let Ok(mut file) = File::open(path) else {
        return 0;
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut count = 0;
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        count += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    count
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
        Value::Object(ref map) => check_flattening(map).map(|()| doc),
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
    use std::fs::OpenOptions;
    use std::io::{BufReader, Cursor, Read};

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
        assert_eq!(meta.format, FORMAT_SEGMENTS_V1);
        assert!(report.created);
        assert_eq!(meta.segment_count, 1);
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
    fn malformed_raw_text_is_truncated_and_bad_utf8_is_kept() {
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
    fn ingest_into_an_existing_shard_appends_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        store
            .ingest_jsonl("one", labels(&[("env", "a")]), Cursor::new("{\"v\":1}\n"))
            .expect("first ingest");
        let report = store
            .ingest_jsonl(
                "one",
                labels(&[("os", "linux")]),
                Cursor::new("{\"v\":2}\nnope\n"),
            )
            .expect("second ingest appends");
        assert!(!report.created);
        assert_eq!((report.events_stored, report.malformed), (1, 1));
        assert_eq!(report.meta.event_count, 2);
        assert_eq!(report.meta.segment_count, 2);
        assert_eq!(report.meta.malformed_count, 1);
        assert_eq!(report.meta.labels, labels(&[("env", "a"), ("os", "linux")]));
        let (events, _, _) = collect(&store, "one", None, 1);
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].doc["v"].clone(), events[0].offset),
            (1.into(), 0)
        );
        assert_eq!(
            (events[1].doc["v"].clone(), events[1].offset),
            (2.into(), 1)
        );

        // A second store on the same root (as after a restart) appends too,
        // with offsets continuing where they were.
        drop(store);
        let again = ShardStore::open(dir.path()).expect("reopen");
        assert_eq!(again.get("one").map(|m| m.event_count), Some(2));
        again
            .ingest_jsonl("one", BTreeMap::new(), Cursor::new("{\"v\":3}\n"))
            .expect("third ingest");
        let (events, _, _) = collect(&again, "one", None, 10);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(events[2].doc["v"], 3);
        assert_eq!(again.malformed("one").expect("malformed").len(), 1);
        let list = again.list();
        drop(again);
        let reopened = ShardStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.list(), list);
        assert!(reopened.recovered().is_empty());
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
    fn a_failed_input_keeps_what_was_read_and_reports_the_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let reader = BufReader::with_capacity(
            8,
            FailingReader {
                data: Cursor::new(b"{\"a\":1}\n{\"a\":2}\n{\"a\"".to_vec()),
            },
        );
        let report = store
            .ingest_jsonl("broken", BTreeMap::new(), reader)
            .expect("ingest");
        assert_eq!((report.events_stored, report.malformed), (2, 1));
        let bad = store.malformed("broken").expect("malformed");
        assert_eq!(bad[0].line, 3);
        assert!(
            bad[0].error.contains("connection reset"),
            "{}",
            bad[0].error
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
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
        assert_eq!((stats.blocks_read, stats.blocks_skipped), (1, 0));
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

    fn segment_of(store: &ShardStore, name: &str, seq: u64) -> PathBuf {
        store.shard_dir(name).join(segment::segment_file_name(seq))
    }

    #[test]
    fn damaged_segments_are_reported_not_scanned_silently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        store
            .ingest_jsonl(
                "d",
                BTreeMap::new(),
                Cursor::new("{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"),
            )
            .expect("ingest");
        let seg = segment_of(&store, "d", 1);
        let mut bytes = fs::read(&seg).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&seg, &bytes).expect("corrupt");
        let err = store
            .scan::<ShardError, _>("d", None, 8, |_| Ok(()))
            .expect_err("checksum");
        assert!(matches!(err, ShardError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("fails its checksum"), "{err}");

        fs::remove_file(segment::index_path(&seg)).expect("remove index");
        let err = store
            .scan::<ShardError, _>("d", None, 8, |_| Ok(()))
            .expect_err("no index");
        assert!(err.to_string().contains("index is missing"), "{err}");
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
        // The old single-file format.
        fs::create_dir(root.join("old-format")).expect("mkdir");
        fs::write(
            root.join("old-format").join(META_FILE),
            r#"{"name":"old-format","labels":{},"format":"jsonl-v1","event_count":0,"min_ts_ms":null,"max_ts_ms":null,"untimed_count":0,"malformed_count":0,"created_at_ms":0}"#,
        )
        .expect("write");
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
        assert_eq!(
            skipped,
            ["Not-A-Shard", "bad-meta", "moved", "no-meta", "old-format"]
        );
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
        assert!(reason("old-format").contains("cannot read"));
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
    fn records_that_would_flatten_out_of_bounds_are_malformed_from_any_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let mut deep = serde_json::json!({"leaf": 1});
        for _ in 0..MAX_NESTING_DEPTH {
            deep = serde_json::json!({"a": deep});
        }
        let wide_key = "k".repeat(MAX_FLATTENED_KEY_BYTES / 4);
        let mut wide = serde_json::Map::new();
        for i in 0..5 {
            wide.insert(format!("{i}{wide_key}"), serde_json::json!({"x": 1}));
        }
        let report = store
            .append(
                "bounded",
                BTreeMap::new(),
                vec![
                    Ok(deep),
                    Ok(serde_json::json!({"fine": {"x": 1}})),
                    Ok(Value::Object(wide)),
                ],
                &mut |_| {},
            )
            .expect("append");
        assert_eq!((report.events_stored, report.malformed), (1, 2));
        let bad = &report.malformed_sample;
        assert_eq!((bad[0].record, bad[1].record), (Some(1), Some(3)));
        assert!(
            bad[0].error.contains("nested more than"),
            "{}",
            bad[0].error
        );
        assert!(
            bad[1].error.contains("flatten to more than"),
            "{}",
            bad[1].error
        );
        assert!(bad[1].raw.len() <= MAX_MALFORMED_RAW_BYTES);
        assert!(bad[1].raw_len > MAX_FLATTENED_KEY_BYTES as u64);
        assert!(bad[1].raw.starts_with("{\"0kkk"), "{}", &bad[1].raw[..20]);
    }

    #[test]
    fn malformed_counts_per_source_are_bounded() {
        let mut counts = BTreeMap::new();
        for i in 0..MAX_MALFORMED_SOURCES + 10 {
            count_source(&mut counts, &format!("file-{i}"), 2);
        }
        count_source(&mut counts, "file-0", 1);
        assert_eq!(counts.len(), MAX_MALFORMED_SOURCES + 1);
        assert_eq!(counts.get(OTHER_SOURCES), Some(&20));
        assert_eq!(counts.get("file-0"), Some(&3));
        assert_eq!(
            counts.values().sum::<u64>(),
            (MAX_MALFORMED_SOURCES as u64 + 10) * 2 + 1
        );
    }

    #[test]
    fn meta_json_round_trips() {
        let meta = ShardMeta {
            name: "x".into(),
            labels: labels(&[("env", "demo")]),
            format: FORMAT_SEGMENTS_V1.into(),
            event_count: 3,
            min_ts_ms: Some(1),
            max_ts_ms: Some(2),
            untimed_count: 0,
            malformed_count: 1,
            malformed_kept: Some(1),
            malformed_by_source: BTreeMap::from([("a.log".to_owned(), 1)]),
            created_at_ms: 5,
            retention_ms: Some(7),
            segment_count: 1,
            next_offset: 3,
            recovered_bytes: 0,
            fields: BTreeMap::new(),
        };
        let text = serde_json::to_string(&meta).expect("encode");
        let back: ShardMeta = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, meta);
        // meta.json written before retention and recovery existed still reads.
        let old = r#"{"name":"x","labels":{},"format":"segments-v1","event_count":0,"min_ts_ms":null,"max_ts_ms":null,"untimed_count":0,"malformed_count":0,"created_at_ms":0}"#;
        let old: ShardMeta = serde_json::from_str(old).expect("decode old");
        assert_eq!(old.retention_ms, None);
        assert_eq!(old.malformed_kept, None);
        assert!(meta.may_overlap(2, 3));
        assert!(!meta.may_overlap(3, 4));
        assert!(!meta.may_overlap(0, 1));
        assert!(!meta.may_overlap(2, 2));
    }

    const BASE: i64 = 1_795_161_600_000;

    /// `n` events one second apart from `start`, EventID 4624, or 4625 for
    /// every `fail_every`-th (0: never).
    #[allow(clippy::result_large_err)]
    fn events(start: i64, n: usize, fail_every: usize) -> Vec<RecordResult> {
        (0..n)
            .map(|i| {
                let id = if fail_every > 0 && i % fail_every == 0 {
                    4625
                } else {
                    4624
                };
                Ok(serde_json::json!({
                    "EventID": id,
                    "Computer": "DC01",
                    "seq": i,
                    "@timestamp": format_rfc3339_ms(start + i as i64 * 1000),
                }))
            })
            .collect()
    }

    fn append(store: &ShardStore, name: &str, records: Vec<RecordResult>) -> IngestReport {
        let mut acked = Vec::new();
        let report = store
            .append(name, BTreeMap::new(), records, &mut |p| {
                acked.push(p.events_acknowledged)
            })
            .expect("append");
        assert!(acked.windows(2).all(|w| w[0] <= w[1]), "{acked:?}");
        assert_eq!(acked.last().copied(), Some(report.events_stored));
        report
    }

    /// The metadata counts the events per field (what `quarry query`
    /// suggests misspelt fields from), across appends, and the same again
    /// when recomputed from the segment indexes on open.
    #[test]
    fn shard_metadata_counts_events_per_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let first = "{\"EventID\":4625,\"TargetUserName\":\"alice\",\"net\":{\"src\":\"10.0.0.1\"}}\n{\"EventID\":4624}\n";
        store
            .ingest_jsonl("s", BTreeMap::new(), first.as_bytes())
            .expect("ingest");
        store
            .ingest_jsonl(
                "s",
                BTreeMap::new(),
                &b"{\"EventID\":1,\"Image\":\"x.exe\"}\n"[..],
            )
            .expect("ingest");
        let fields = store.get("s").expect("shard").fields;
        assert_eq!(fields.get("EventID"), Some(&3), "{fields:?}");
        assert_eq!(fields.get("TargetUserName"), Some(&1));
        assert_eq!(fields.get("Image"), Some(&1));
        assert_eq!(
            fields.get("net.src"),
            Some(&1),
            "nested fields by path: {fields:?}"
        );
        drop(store);
        let again = ShardStore::open(dir.path()).expect("reopen");
        assert_eq!(again.get("s").expect("shard").fields, fields);

        let mut many: BTreeMap<String, u64> = (0..MAX_SHARD_FIELDS as u64 + 10)
            .map(|i| (format!("f{i:05}"), i))
            .collect();
        bound_fields(&mut many);
        assert_eq!(many.len(), MAX_SHARD_FIELDS);
        assert!(!many.contains_key("f00000"), "the least present go first");
    }

    #[test]
    fn events_round_trip_through_blocks_with_canonical_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let n = segment::BLOCK_MAX_EVENTS * 2 + 10;
        let report = append(&store, "rt", events(BASE, n, 0));
        assert_eq!(report.events_stored, n as u64);
        assert_eq!(report.blocks_written, 3);
        assert_eq!(report.segments_written, 1);
        let (stored, stats, _) = collect(&store, "rt", None, 1000);
        assert_eq!(stats.blocks_read, 3);
        assert_eq!(stored.len(), n);
        for (i, e) in stored.iter().enumerate() {
            assert_eq!(e.offset, i as u64);
            assert_eq!(e.doc["seq"], i);
            assert_eq!(e.timestamp_ms, BASE + i as i64 * 1000);
        }
        assert_eq!(stored[0].doc["host"], "DC01");
        assert_eq!(stored[0].doc["source"], "rt");

        // Nested objects are flattened, originals kept, canonical fields added.
        let doc = serde_json::json!({
            "ts": 1_600_000_000,
            "id": {"orig_h": "10.0.0.1", "resp_p": 53},
            "tags": [{"a": 1}],
            "empty": {},
        });
        let mut labels = BTreeMap::new();
        labels.insert("source".to_owned(), "zeek".to_owned());
        store
            .append("nested", labels, vec![Ok(doc)], &mut |_| {})
            .expect("append");
        let (stored, _, _) = collect(&store, "nested", None, 10);
        let doc = &stored[0].doc;
        assert_eq!(doc["id.orig_h"], "10.0.0.1");
        assert_eq!(doc["id.resp_p"], 53);
        assert_eq!(doc["tags"], serde_json::json!([{"a": 1}]));
        assert_eq!(doc["empty"], serde_json::json!({}));
        assert_eq!(doc["ts"], 1_600_000_000);
        assert_eq!(doc["@timestamp"], "2020-09-13T12:26:40.000Z");
        assert_eq!(doc["host"], "10.0.0.1");
        assert_eq!(doc["source"], "zeek");
        assert!(doc.get("id").is_none());

        // A differently written original timestamp is kept aside.
        let (_, doc) = prepare_event(
            serde_json::json!({"@timestamp": "2020-09-13T14:26:40+02:00", "host": "h", "source": "s"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            "other",
        );
        assert_eq!(doc["@timestamp"], "2020-09-13T12:26:40.000Z");
        assert_eq!(doc["@timestamp_original"], "2020-09-13T14:26:40+02:00");
        assert_eq!(
            (doc["host"].as_str(), doc["source"].as_str()),
            (Some("h"), Some("s"))
        );
    }

    #[test]
    fn scans_from_an_ingest_offset_see_only_later_events_and_say_where_they_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let per = segment::BLOCK_MAX_EVENTS;
        append(&store, "inc", events(BASE, per + 10, 0));
        let scan_from = |from: u64| {
            let filter = ScanFilter {
                min_offset: from,
                ..ScanFilter::default()
            };
            let mut offsets = Vec::new();
            let stats = store
                .scan_with::<ShardError, _>("inc", &filter, 512, |batch| {
                    offsets.extend(batch.iter().map(|e| e.offset));
                    Ok(())
                })
                .expect("scan");
            (offsets, stats)
        };
        let (all, stats) = scan_from(0);
        assert_eq!(all.len(), per + 10);
        assert_eq!(stats.end_offset, (per + 10) as u64);
        // From inside the second block: the first block is skipped undecoded.
        let from = per as u64 + 4;
        let (later, stats) = scan_from(from);
        assert_eq!(later, (from..(per + 10) as u64).collect::<Vec<_>>());
        assert_eq!(stats.blocks_skipped, 1);
        // Events ingested later, whatever their timestamps (older here),
        // are after the end of the last scan.
        append(&store, "inc", events(BASE - 3_600_000, 3, 0));
        let (late, stats) = scan_from((per + 10) as u64);
        assert_eq!(late.len(), 3);
        assert_eq!(stats.end_offset, (per + 13) as u64);
        // Nothing new: nothing read.
        let (none, stats) = scan_from(stats.end_offset);
        assert!(none.is_empty() && stats.pruned);
    }

    #[test]
    fn scans_skip_blocks_by_time_range_and_block_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let per = segment::BLOCK_MAX_EVENTS;
        // Block 0 and 2: only 4624; block 1 has 4625s. Each block covers its
        // own hour.
        let mut records = events(BASE, per, 0);
        records.extend(events(BASE + 3_600_000 * 10, per, 100));
        records.extend(events(BASE + 3_600_000 * 20, per, 0));
        append(&store, "skip", records);

        let block1 = (BASE + 3_600_000 * 10, BASE + 3_600_000 * 12);
        let (got, stats, _) = collect(&store, "skip", Some(block1), 10_000);
        assert_eq!((stats.blocks_read, stats.blocks_skipped), (1, 2));
        assert_eq!(got.len(), per);
        assert_eq!(got[0].offset, per as u64);

        let only_4625 = |b: &BlockStats| b.may_equal("EventID", "4625");
        let filter = ScanFilter {
            block_filter: Some(&only_4625),
            ..ScanFilter::default()
        };
        let mut seen = 0;
        let stats = store
            .scan_with::<ShardError, _>("skip", &filter, 512, |batch| {
                seen += batch.len();
                Ok(())
            })
            .expect("scan");
        assert_eq!((stats.blocks_read, stats.blocks_skipped), (1, 2));
        assert_eq!(seen, per);
        assert_eq!(stats.events_read, per as u64);

        let none = |b: &BlockStats| b.has_field("NoSuchField");
        let filter = ScanFilter {
            block_filter: Some(&none),
            ..ScanFilter::default()
        };
        let stats = store
            .scan_with::<ShardError, _>("skip", &filter, 512, |_| Ok(()))
            .expect("scan");
        assert_eq!(
            (stats.blocks_read, stats.blocks_skipped, stats.events_read),
            (0, 3, 0)
        );
    }

    /// Writes three blocks in one segment and returns the store's root, the
    /// segment path and its index.
    fn three_blocks() -> (tempfile::TempDir, PathBuf, SegmentIndex) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        append(&store, "t", events(BASE, segment::BLOCK_MAX_EVENTS * 3, 0));
        let seg = segment_of(&store, "t", 1);
        let len = fs::metadata(&seg).expect("meta").len();
        let index = read_index(&seg, len).expect("index");
        assert_eq!(index.blocks.len(), 3);
        (dir, seg, index)
    }

    fn check_two_blocks_left(root: &Path, seg: &Path, index: &SegmentIndex, why: &str) {
        let store = ShardStore::open(root).expect("reopen after damage");
        assert!(store.skipped().is_empty(), "{:?}", store.skipped());
        let recovered = store.recovered();
        assert_eq!(recovered.len(), 1, "{recovered:?}");
        assert_eq!(recovered[0].blocks_kept, 2);
        assert_eq!(recovered[0].segment, seg);
        assert!(recovered[0].reason.contains(why), "{}", recovered[0].reason);
        assert_eq!(
            fs::metadata(seg).expect("meta").len(),
            index.blocks[2].offset
        );
        let kept = 2 * segment::BLOCK_MAX_EVENTS;
        let meta = store.get("t").expect("shard");
        assert_eq!(meta.event_count, kept as u64);
        assert!(meta.recovered_bytes > 0);
        let (got, stats, _) = collect(&store, "t", None, 4096);
        assert_eq!(got.len(), kept);
        assert_eq!(stats.blocks_read, 2);
        assert!(got.iter().enumerate().all(|(i, e)| e.offset == i as u64));
        // Recovery is done once: the next open finds a clean shard, and
        // appends continue after the kept events (offsets recorded in
        // meta.json are never reused).
        drop(store);
        let store = ShardStore::open(root).expect("reopen again");
        assert!(store.recovered().is_empty());
        append(&store, "t", events(BASE, 1, 0));
        let (got, _, _) = collect(&store, "t", None, 4096);
        let next = got.last().map(|e| e.offset).expect("appended");
        assert!(next >= kept as u64, "{next}");
    }

    #[test]
    fn a_torn_tail_is_cut_on_open_and_earlier_blocks_kept() {
        let (dir, seg, index) = three_blocks();
        let torn = index.blocks[2].payload_offset + 10;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .and_then(|f| f.set_len(torn))
            .expect("truncate");
        check_two_blocks_left(dir.path(), &seg, &index, "past the end");
    }

    #[test]
    fn a_torn_tail_without_an_index_is_cut_on_open() {
        let (dir, seg, index) = three_blocks();
        // As after a kill during an append: no index, half a block.
        fs::remove_file(segment::index_path(&seg)).expect("remove index");
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .and_then(|f| f.set_len(index.blocks[2].offset + 5))
            .expect("truncate");
        check_two_blocks_left(dir.path(), &seg, &index, "too few");
    }

    #[test]
    fn a_corrupt_last_block_is_cut_on_open() {
        let (dir, seg, index) = three_blocks();
        let mut bytes = fs::read(&seg).expect("read");
        let at = (index.blocks[2].payload_offset + 3) as usize;
        bytes[at] ^= 0x55;
        fs::write(&seg, &bytes).expect("corrupt");
        check_two_blocks_left(dir.path(), &seg, &index, "checksum");
    }

    #[test]
    fn retention_drops_whole_old_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = 86_400_000;
        {
            let store = ShardStore::open(dir.path()).expect("open");
            append(&store, "r", events(BASE - 10 * day, 100, 0));
            append(&store, "r", events(BASE, 50, 0));
            append(&store, "r", vec![Ok(serde_json::json!({"untimed": true}))]);
            // Without a retention nothing goes.
            assert_eq!(
                store.apply_retention(BASE).expect("retention"),
                RetentionReport::default()
            );
            let meta = store.set_retention("r", Some(day)).expect("set");
            assert_eq!(meta.retention_ms, Some(day));
            let report = store.apply_retention(BASE + 1000).expect("retention");
            assert_eq!(report.events_dropped, 100);
            assert_eq!(report.dropped.len(), 1);
            assert!(!report.dropped[0].1.exists());
            let meta = store.get("r").expect("shard");
            assert_eq!(meta.event_count, 51);
            assert_eq!(meta.segment_count, 2);
            assert_eq!(meta.min_ts_ms, Some(BASE));
            let (got, _, _) = collect(&store, "r", None, 1000);
            assert_eq!(got.len(), 51);
            // Offsets are stable: the dropped events' offsets are not reused.
            assert_eq!(got[0].offset, 100);
        }
        let store = ShardStore::open(dir.path()).expect("reopen");
        let meta = store.get("r").expect("shard");
        assert_eq!((meta.event_count, meta.retention_ms), (51, Some(day)));
        append(&store, "r", events(BASE, 1, 0));
        let (got, _, _) = collect(&store, "r", None, 1000);
        assert_eq!(got.last().map(|e| e.offset), Some(151));
    }
}
