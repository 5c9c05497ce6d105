//! Segments: the append-only files a shard's events live in.
//!
//! ```text
//! segment file (seg-00000001.qseg) = block*
//! block  = magic "QBK1" | header_len u32 LE | header_crc u32 LE
//!        | header (header_len bytes, JSON BlockHeader)
//!        | payload (header.payload_len bytes)
//! payload, header.format 2 (columns, written since issue 18):
//!          a column block (see crate::columnar), each column its own zstd frame
//! payload, header.format 1 (rows; a header without `format`):
//!          zstd level 3 of event*
//! event  = timestamp_ms i64 LE | doc_len u32 LE | doc (JSON object, doc_len bytes)
//! index  (seg-00000001.qidx, JSON SegmentIndex) = segment length + every
//!        block's offset and header; written atomically once the segment is
//!        sealed, so a scan reads block statistics without touching payloads.
//! ```
//!
//! `header_crc` is the CRC-32 of the header bytes, `header.payload_crc` the
//! CRC-32 of the compressed payload. A block is written with one `write_all`
//! and fsynced before its events count as acknowledged; a torn or corrupt
//! tail (a crash mid-write) is found by [`recover_segment`], which keeps every
//! complete, checksummed block before it and cuts the rest.
//!
//! Blocks of both formats may share a segment: shards written before column
//! blocks stay readable as they are, and `quarry worker migrate` rewrites
//! them ([`crate::shard::ShardStore::migrate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::value_text;
use crate::prefilter::{Clause, MatchOp};

/// Marks the start of every block.
pub const BLOCK_MAGIC: [u8; 4] = *b"QBK1";
/// Most events in one block.
pub const BLOCK_MAX_EVENTS: usize = 4096;
/// A block is closed once its events reach this size as JSON. Column
/// blocks compress better and carry their statistics header once for more
/// events when big; a scan holds one block at a time.
pub const BLOCK_MAX_BYTES: usize = 4 << 20;
/// A segment is sealed and a new one started past this size on disk.
pub const SEGMENT_MAX_BYTES: u64 = 64 << 20;
/// Fields with at most this many distinct values in a block keep the values.
pub const MAX_DISTINCT_VALUES: usize = 64;
/// Values longer than this are not kept in statistics (the field counts as
/// high-cardinality in that block).
pub const MAX_STAT_VALUE_BYTES: usize = 256;
/// zstd compression level.
pub const ZSTD_LEVEL: i32 = 3;
/// Longest header accepted when reading (a bigger one is damage).
const MAX_HEADER_BYTES: u32 = 64 << 20;
/// Longest payload accepted when reading.
const MAX_PAYLOAD_BYTES: u32 = 1 << 30;
/// Fixed prefix of a block: magic, header length, header crc.
const PREFIX_LEN: u64 = 12;

/// Per-field statistics of one block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldStats {
    /// Events of the block that have the field (non-null).
    pub present: u32,
    /// Distinct ASCII-lowercased text values of the field in the block (as
    /// the prefilter compares them), when there
    /// are at most [`MAX_DISTINCT_VALUES`] of them (each at most
    /// [`MAX_STAT_VALUE_BYTES`] long); `None` when the field has more (or
    /// holds arrays or objects), so any value may occur.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeSet<String>>,
}

/// What a block holds, known without decompressing it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    /// Events in the block.
    pub event_count: u32,
    /// Shard offset of the block's first event (offsets are consecutive).
    pub first_offset: u64,
    /// Earliest timestamp among events with one.
    pub min_ts_ms: Option<i64>,
    /// Latest timestamp among events with one.
    pub max_ts_ms: Option<i64>,
    /// Events without a recognisable timestamp (stored as 0).
    pub untimed: u32,
    /// Statistics of every field present in the block, by name.
    pub fields: BTreeMap<String, FieldStats>,
}

impl BlockStats {
    /// Whether any event of the block can have a timestamp in `[start, end)`.
    pub fn may_overlap(&self, start: i64, end: i64) -> bool {
        crate::event::time_bounds_overlap(
            self.min_ts_ms,
            self.max_ts_ms,
            u64::from(self.untimed),
            start,
            end,
        )
    }

    /// What the statistics say about the field an event path resolves to,
    /// following [`crate::event::lookup`]: the exact name, else a dotted
    /// prefix (an array or a name with dots: unknown), else the path without
    /// an EVTX prefix (`Event.EventData.`, `System.`, ...).
    pub fn resolve(&self, path: &str) -> FieldKnowledge<'_> {
        match self.resolve_in(path) {
            FieldKnowledge::Absent => crate::event::without_evtx_prefix(path)
                .map_or(FieldKnowledge::Absent, |rest| self.resolve_in(rest)),
            known => known,
        }
    }

    fn resolve_in(&self, path: &str) -> FieldKnowledge<'_> {
        if let Some(field) = self.fields.get(path) {
            return FieldKnowledge::Field(field);
        }
        if path
            .match_indices('.')
            .any(|(i, _)| self.fields.contains_key(&path[..i]))
        {
            return FieldKnowledge::Unknown;
        }
        FieldKnowledge::Absent
    }

    /// Whether some event of the block may have a non-null `field` (a path,
    /// as [`BlockStats::resolve`]). `false` only when it is certainly absent.
    pub fn has_field(&self, field: &str) -> bool {
        !matches!(self.resolve(field), FieldKnowledge::Absent)
    }

    /// The distinct ASCII-lowercased values of `field` in the block, when
    /// known (`None`: the field is absent, or has too many values to list).
    pub fn values(&self, field: &str) -> Option<&BTreeSet<String>> {
        match self.resolve(field) {
            FieldKnowledge::Field(f) => f.values.as_ref(),
            _ => None,
        }
    }

    /// Whether some event of the block may have a `field` value (as text,
    /// ASCII-lowercased) for which `pred` holds. `false` only when the
    /// statistics rule it out.
    pub fn may_match_value(&self, field: &str, pred: impl Fn(&str) -> bool) -> bool {
        match self.resolve(field) {
            FieldKnowledge::Absent => false,
            FieldKnowledge::Unknown | FieldKnowledge::Field(FieldStats { values: None, .. }) => {
                true
            }
            FieldKnowledge::Field(FieldStats {
                values: Some(values),
                ..
            }) => values.iter().any(|v| pred(v)),
        }
    }

    /// Whether some event of the block may have `field` equal to `value`
    /// (compared ASCII case-insensitively, as text, like the prefilter).
    pub fn may_equal(&self, field: &str, value: &str) -> bool {
        self.may_match_value(field, |v| v.eq_ignore_ascii_case(value))
    }

    /// Whether some event of the block may pass the prefilter `clause`
    /// (see [`crate::prefilter`]): `false` only when the block's statistics
    /// rule every event out, so the block can be skipped undecoded.
    pub fn may_match_clause(&self, clause: &Clause) -> bool {
        let needles: Vec<String> = clause
            .values
            .iter()
            .map(|v| v.to_ascii_lowercase())
            .collect();
        match clause.op {
            MatchOp::Exists => self.has_field(&clause.field),
            // Statistics cannot rule a pattern out, only a missing field.
            MatchOp::Regex => self.has_field(&clause.field),
            MatchOp::Equals => {
                self.may_match_value(&clause.field, |v| needles.iter().any(|n| n == v))
            }
            MatchOp::Contains => self.may_match_value(&clause.field, |v| {
                needles.iter().any(|n| v.contains(n.as_str()))
            }),
            MatchOp::StartsWith => self.may_match_value(&clause.field, |v| {
                needles.iter().any(|n| v.starts_with(n.as_str()))
            }),
            MatchOp::EndsWith => self.may_match_value(&clause.field, |v| {
                needles.iter().any(|n| v.ends_with(n.as_str()))
            }),
        }
    }

    /// Whether some event of the block may pass every clause (a prefilter is
    /// the AND of its clauses; no clauses: `true`).
    pub fn may_match_all(&self, clauses: &[Clause]) -> bool {
        clauses.iter().all(|c| self.may_match_clause(c))
    }

    /// Whether some event of the block may pass the prefilter: every clause
    /// and, in each any-of group, some clause.
    pub fn may_match_prefilter(&self, clauses: &[Clause], any_of: &[Vec<Clause>]) -> bool {
        self.may_match_all(clauses)
            && any_of
                .iter()
                .all(|group| group.iter().any(|c| self.may_match_clause(c)))
    }
}

/// What block statistics know about one field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKnowledge<'a> {
    /// No event of the block has it (non-null).
    Absent,
    /// It may be present inside a value the statistics do not describe (an
    /// array, a name with dots).
    Unknown,
    /// Its statistics.
    Field(&'a FieldStats),
}

/// How a block's payload holds its events ([`BlockHeader::format`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockFormat {
    /// Format 1: one JSON document per event, the payload zstd-compressed
    /// whole. Written before column blocks; read, never written by ingest.
    Rows,
    /// Format 2: a column block ([`crate::columnar`]), each column its own
    /// zstd frame so a scan decompresses only the columns it reads.
    #[default]
    Columns,
}

impl BlockFormat {
    /// The format new blocks are written in.
    pub const CURRENT: Self = Self::Columns;

    /// The number stored in block headers.
    pub fn number(self) -> u32 {
        match self {
            Self::Rows => 1,
            Self::Columns => 2,
        }
    }

    /// The format of a stored number; `None` for one this build does not
    /// know (a block written by a newer version).
    pub fn from_number(number: u32) -> Option<Self> {
        match number {
            1 => Some(Self::Rows),
            2 => Some(Self::Columns),
            _ => None,
        }
    }

    /// Short name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rows => "rows",
            Self::Columns => "columns",
        }
    }
}

fn rows_format() -> u32 {
    BlockFormat::Rows.number()
}

fn is_rows_format(format: &u32) -> bool {
    *format == rows_format()
}

/// A block's header as stored before its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The payload's format number ([`BlockFormat::number`]); absent in
    /// blocks written before column blocks existed, which are rows.
    #[serde(default = "rows_format", skip_serializing_if = "is_rows_format")]
    pub format: u32,
    /// Compressed payload length.
    pub payload_len: u32,
    /// CRC-32 of the compressed payload.
    pub payload_crc: u32,
    /// Uncompressed payload length (rows); the payload length (columns,
    /// whose chunks record their own).
    pub raw_len: u32,
    /// What the block holds.
    pub stats: BlockStats,
}

impl BlockHeader {
    /// The payload's format.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] for a format this build cannot read.
    pub fn block_format(&self) -> Result<BlockFormat, BlockError> {
        BlockFormat::from_number(self.format).ok_or_else(|| {
            BlockError::Invalid(format!(
                "block format {} is newer than this build reads (1 and 2); upgrade Quarry to \
                 read this shard",
                self.format
            ))
        })
    }
}

/// One block in a segment index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Byte offset of the block (its magic) in the segment file.
    pub offset: u64,
    /// Byte offset of the payload.
    pub payload_offset: u64,
    /// The block header.
    pub header: BlockHeader,
}

impl IndexEntry {
    /// Offset just past the block.
    pub fn end(&self) -> u64 {
        self.payload_offset + u64::from(self.header.payload_len)
    }
}

/// The index of a sealed segment (`.qidx`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentIndex {
    /// Length of the segment file the index describes.
    pub segment_len: u64,
    /// Every block, in file order.
    pub blocks: Vec<IndexEntry>,
}

impl SegmentIndex {
    /// Events in the segment.
    pub fn event_count(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| u64::from(b.header.stats.event_count))
            .sum()
    }

    /// Latest timestamp in the segment, among timed events.
    pub fn max_ts_ms(&self) -> Option<i64> {
        self.blocks
            .iter()
            .filter_map(|b| b.header.stats.max_ts_ms)
            .max()
    }

    /// Offset one past the segment's last event, if it has any.
    pub fn end_offset(&self) -> Option<u64> {
        self.blocks
            .last()
            .map(|b| b.header.stats.first_offset + u64::from(b.header.stats.event_count))
    }
}

/// Path of the index of segment `seg`.
pub fn index_path(seg: &Path) -> PathBuf {
    seg.with_extension("qidx")
}

/// Accumulates events into one block.
#[derive(Debug)]
pub struct BlockBuilder {
    format: BlockFormat,
    /// Rows: the encoded events so far.
    raw: Vec<u8>,
    /// Columns: the events so far and their timestamps (0 when untimed).
    events: Vec<Value>,
    timestamps: Vec<i64>,
    /// The events' size as JSON, which closes a block at
    /// [`BLOCK_MAX_BYTES`] whatever its format.
    json_bytes: usize,
    stats: BlockStats,
    doc_buf: Vec<u8>,
}

impl BlockBuilder {
    /// An empty block, in the current format, whose first event has shard
    /// offset `first_offset`.
    pub fn new(first_offset: u64) -> Self {
        Self::with_format(first_offset, BlockFormat::CURRENT)
    }

    /// An empty block in `format` (rows only to write shards as older
    /// versions did, in tests).
    pub fn with_format(first_offset: u64, format: BlockFormat) -> Self {
        Self {
            format,
            raw: Vec::new(),
            events: Vec::new(),
            timestamps: Vec::new(),
            json_bytes: 0,
            stats: BlockStats {
                first_offset,
                ..BlockStats::default()
            },
            doc_buf: Vec::new(),
        }
    }

    /// Events in the block so far.
    pub fn len(&self) -> usize {
        self.stats.event_count as usize
    }

    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.stats.event_count == 0
    }

    /// Whether the block is full and should be written.
    pub fn is_full(&self) -> bool {
        self.len() >= BLOCK_MAX_EVENTS || self.json_bytes >= BLOCK_MAX_BYTES
    }

    /// Shard offset the next event gets.
    pub fn next_offset(&self) -> u64 {
        self.stats.first_offset + u64::from(self.stats.event_count)
    }

    /// Adds one event (`timestamp_ms` is `None` when it has none).
    pub fn push(&mut self, timestamp_ms: Option<i64>, doc: &Value) -> io::Result<()> {
        self.push_owned(timestamp_ms, doc.clone())
    }

    /// As [`BlockBuilder::push`], taking the event.
    pub fn push_owned(&mut self, timestamp_ms: Option<i64>, doc: Value) -> io::Result<()> {
        let doc_len = match self.format {
            BlockFormat::Rows => {
                self.doc_buf.clear();
                serde_json::to_writer(&mut self.doc_buf, &doc)?;
                let len = u32::try_from(self.doc_buf.len())
                    .map_err(|_| io::Error::other("event larger than 4 GiB"))?;
                self.raw
                    .extend_from_slice(&timestamp_ms.unwrap_or(0).to_le_bytes());
                self.raw.extend_from_slice(&len.to_le_bytes());
                self.raw.extend_from_slice(&self.doc_buf);
                self.doc_buf.len()
            }
            // Estimated, not serialised: only the block's size depends on it.
            BlockFormat::Columns => crate::event::approx_json_len(&doc),
        };
        self.json_bytes += 12 + doc_len;
        let stats = &mut self.stats;
        match timestamp_ms {
            Some(ts) => {
                stats.min_ts_ms = Some(stats.min_ts_ms.map_or(ts, |m| m.min(ts)));
                stats.max_ts_ms = Some(stats.max_ts_ms.map_or(ts, |m| m.max(ts)));
            }
            None => stats.untimed += 1,
        }
        stats.event_count += 1;
        if let Value::Object(map) = &doc {
            for (key, value) in map {
                add_field_stats(stats, key, value);
            }
        }
        if self.format == BlockFormat::Columns {
            self.timestamps.push(timestamp_ms.unwrap_or(0));
            self.events.push(doc);
        }
        Ok(())
    }

    /// Encodes the block into its on-disk bytes and resets the builder for
    /// the next block.
    pub fn finish(&mut self) -> io::Result<(BlockHeader, Vec<u8>)> {
        let (payload, raw_len) = match self.format {
            BlockFormat::Rows => {
                let payload = zstd::bulk::compress(&self.raw, ZSTD_LEVEL)?;
                (payload, self.raw.len())
            }
            BlockFormat::Columns => {
                let payload = encode_columns(&self.events, &self.timestamps)?;
                let len = payload.len();
                (payload, len)
            }
        };
        let (header, bytes) = frame(
            self.format,
            &payload,
            raw_len,
            std::mem::take(&mut self.stats),
        )?;
        self.stats.first_offset = header.stats.first_offset + u64::from(header.stats.event_count);
        self.raw.clear();
        self.events.clear();
        self.timestamps.clear();
        self.json_bytes = 0;
        Ok((header, bytes))
    }
}

fn encode_columns(events: &[Value], timestamps: &[i64]) -> io::Result<Vec<u8>> {
    crate::columnar::ColumnBlock::encode(events, timestamps).map_err(|e| match e {
        BlockError::Io(e) => e,
        BlockError::Invalid(reason) => io::Error::new(io::ErrorKind::InvalidInput, reason),
    })
}

/// A block's on-disk bytes: prefix, header, payload.
fn frame(
    format: BlockFormat,
    payload: &[u8],
    raw_len: usize,
    stats: BlockStats,
) -> io::Result<(BlockHeader, Vec<u8>)> {
    let header = BlockHeader {
        format: format.number(),
        payload_len: u32::try_from(payload.len())
            .map_err(|_| io::Error::other("block payload larger than 4 GiB"))?,
        payload_crc: crc32fast::hash(payload),
        raw_len: u32::try_from(raw_len).map_err(|_| io::Error::other("block larger than 4 GiB"))?,
        stats,
    };
    let header_bytes = serde_json::to_vec(&header)?;
    let mut bytes = Vec::with_capacity(PREFIX_LEN as usize + header_bytes.len() + payload.len());
    bytes.extend_from_slice(&BLOCK_MAGIC);
    bytes.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&header_bytes).to_le_bytes());
    bytes.extend_from_slice(&header_bytes);
    bytes.extend_from_slice(payload);
    Ok((header, bytes))
}

/// Re-encodes a block's `events` (as [`Payload::decode_all`] gave them) in
/// `format`, keeping its statistics as they are: the events are the same,
/// and the stored timestamps (0 when untimed) cannot say which events had
/// none.
///
/// # Errors
/// When encoding fails (an event that is not an object, a block over 4 GiB).
pub fn reencode_block(
    stats: BlockStats,
    events: Vec<(i64, Value)>,
    format: BlockFormat,
) -> io::Result<(BlockHeader, Vec<u8>)> {
    let (payload, raw_len) = match format {
        BlockFormat::Rows => {
            let mut raw = Vec::new();
            for (ts, doc) in &events {
                let start = raw.len() + 12;
                raw.extend_from_slice(&ts.to_le_bytes());
                raw.extend_from_slice(&[0; 4]);
                serde_json::to_writer(&mut raw, doc)?;
                let len = u32::try_from(raw.len() - start)
                    .map_err(|_| io::Error::other("event larger than 4 GiB"))?;
                raw[start - 4..start].copy_from_slice(&len.to_le_bytes());
            }
            (zstd::bulk::compress(&raw, ZSTD_LEVEL)?, raw.len())
        }
        BlockFormat::Columns => {
            let (timestamps, docs): (Vec<i64>, Vec<Value>) = events.into_iter().unzip();
            let payload = encode_columns(&docs, &timestamps)?;
            let len = payload.len();
            (payload, len)
        }
    };
    frame(format, &payload, raw_len, stats)
}

/// Counts one top-level member of an event into the block's statistics.
fn add_field_stats(stats: &mut BlockStats, key: &str, value: &Value) {
    if value.is_null() {
        return;
    }
    let field = match stats.fields.get_mut(key) {
        Some(field) => field,
        None => stats.fields.entry(key.to_owned()).or_insert(FieldStats {
            present: 0,
            values: Some(BTreeSet::new()),
        }),
    };
    field.present += 1;
    let Some(values) = &mut field.values else {
        return;
    };
    let text = match value {
        Value::Array(_) | Value::Object(_) => None,
        other => value_text(other).filter(|t| t.len() <= MAX_STAT_VALUE_BYTES),
    };
    let Some(text) = text else {
        field.values = None;
        return;
    };
    // Most values are lowercase already (or digits): no allocation for
    // them when already known.
    let lower = if text.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(text.to_ascii_lowercase())
    } else {
        text
    };
    if !values.contains(lower.as_ref()) {
        if values.len() >= MAX_DISTINCT_VALUES {
            field.values = None;
        } else {
            values.insert(lower.into_owned());
        }
    }
}

/// Appends blocks to one segment file.
#[derive(Debug)]
pub struct SegmentWriter {
    path: PathBuf,
    file: File,
    index: SegmentIndex,
}

impl SegmentWriter {
    /// Creates a new, empty segment file (failing if it exists).
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = private_file().write(true).create_new(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            index: SegmentIndex::default(),
        })
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.index.segment_len
    }

    /// Whether no block was written yet.
    pub fn is_empty(&self) -> bool {
        self.index.blocks.is_empty()
    }

    /// Writes one block and fsyncs it: once this returns, the block's events
    /// are durable.
    pub fn write_block(&mut self, header: BlockHeader, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        let offset = self.index.segment_len;
        let payload_len = u64::from(header.payload_len);
        let end = offset + bytes.len() as u64;
        self.index.blocks.push(IndexEntry {
            offset,
            payload_offset: end - payload_len,
            header,
        });
        self.index.segment_len = end;
        Ok(())
    }

    /// Makes the segment durable without writing its index (a segment
    /// written under another name, renamed into place before its index is
    /// written). Returns the index.
    pub fn finish_unindexed(self) -> io::Result<SegmentIndex> {
        self.file.sync_all()?;
        Ok(self.index)
    }

    /// Seals the segment: writes its index atomically. Returns the index.
    pub fn seal(self) -> io::Result<SegmentIndex> {
        self.file.sync_all()?;
        write_index(&self.path, &self.index)?;
        Ok(self.index)
    }
}

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Writes the index of segment `seg` atomically (temp, fsync, rename, dir
/// fsync), zstd-compressed: it repeats every block header, statistics
/// included, and is read once per scan of the segment.
pub fn write_index(seg: &Path, index: &SegmentIndex) -> io::Result<()> {
    let path = index_path(seg);
    let json = serde_json::to_vec(index)?;
    write_atomic(&path, &zstd::bulk::compress(&json, ZSTD_LEVEL)?)
}

/// Options that create a file readable and writable by its owner only (0600,
/// whatever the umask): shards hold the logs being hunted through.
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

/// Creates `dir` and its missing parents, each new one accessible to its
/// owner only (0700, whatever the umask). Existing directories are left as
/// they are.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates the directory `dir` (its parent must exist) as
/// [`create_private_dir_all`] does, failing if it exists.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, and an
/// fsync of the directory, so a crash leaves either the old file or the new.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes renames and creations in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads the index of a sealed segment, if it exists, parses, and matches
/// the segment's length.
pub fn read_index(seg: &Path, segment_len: u64) -> Option<SegmentIndex> {
    let bytes = fs::read(index_path(seg)).ok()?;
    // Written zstd-compressed since column blocks; plain JSON before.
    let index: SegmentIndex = if bytes.starts_with(&ZSTD_MAGIC) {
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(bytes.as_slice())
            .ok()?
            .take(u64::from(MAX_HEADER_BYTES))
            .read_to_end(&mut json)
            .ok()?;
        serde_json::from_slice(&json).ok()?
    } else {
        serde_json::from_slice(&bytes).ok()?
    };
    (index.segment_len == segment_len && index.blocks.last().is_none_or(|b| b.end() == segment_len))
        .then_some(index)
}

/// Why a block could not be read.
#[derive(Debug)]
pub enum BlockError {
    /// The file could not be read.
    Io(io::Error),
    /// The bytes are not a valid block.
    Invalid(String),
}

impl From<io::Error> for BlockError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// Reads and checks the block at `offset` (header crc, payload crc), without
/// decompressing it. `file_len` bounds the block.
pub fn read_block_at(
    file: &mut File,
    offset: u64,
    file_len: u64,
) -> Result<IndexEntry, BlockError> {
    let invalid = |r: String| BlockError::Invalid(r);
    if offset + PREFIX_LEN > file_len {
        return Err(invalid(format!(
            "{} bytes at offset {offset} are too few for a block",
            file_len - offset
        )));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut prefix = [0u8; PREFIX_LEN as usize];
    file.read_exact(&mut prefix)?;
    if prefix[..4] != BLOCK_MAGIC {
        return Err(invalid(format!("no block magic at offset {offset}")));
    }
    let header_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    let header_crc = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if header_len > MAX_HEADER_BYTES || offset + PREFIX_LEN + u64::from(header_len) > file_len {
        return Err(invalid(format!(
            "block header at offset {offset} runs past the end of the segment"
        )));
    }
    let mut header_bytes = vec![0u8; header_len as usize];
    file.read_exact(&mut header_bytes)?;
    if crc32fast::hash(&header_bytes) != header_crc {
        return Err(invalid(format!(
            "block header at offset {offset} fails its checksum"
        )));
    }
    let header: BlockHeader = serde_json::from_slice(&header_bytes).map_err(|e| {
        invalid(format!(
            "block header at offset {offset} is unreadable: {e}"
        ))
    })?;
    let payload_offset = offset + PREFIX_LEN + u64::from(header_len);
    if header.payload_len > MAX_PAYLOAD_BYTES
        || payload_offset + u64::from(header.payload_len) > file_len
    {
        return Err(invalid(format!(
            "block payload at offset {payload_offset} runs past the end of the segment"
        )));
    }
    let mut payload = vec![0u8; header.payload_len as usize];
    file.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != header.payload_crc {
        return Err(invalid(format!(
            "block payload at offset {payload_offset} fails its checksum"
        )));
    }
    Ok(IndexEntry {
        offset,
        payload_offset,
        header,
    })
}

/// What [`recover_segment`] found.
#[derive(Debug)]
pub struct Recovery {
    /// The index of the valid blocks.
    pub index: SegmentIndex,
    /// Bytes cut from the tail (0: the segment was intact).
    pub truncated_bytes: u64,
    /// Why the tail was cut.
    pub reason: Option<String>,
}

/// Verifies a segment block by block, truncates a torn or corrupt tail
/// (fsynced), and writes its index. Every complete block before the first
/// invalid one is kept.
pub fn recover_segment(seg: &Path) -> io::Result<Recovery> {
    let mut file = OpenOptions::new().read(true).write(true).open(seg)?;
    let file_len = file.metadata()?.len();
    let mut index = SegmentIndex::default();
    let mut offset = 0u64;
    let mut reason = None;
    while offset < file_len {
        match read_block_at(&mut file, offset, file_len) {
            Ok(entry) => {
                offset = entry.end();
                index.blocks.push(entry);
            }
            Err(BlockError::Invalid(why)) => {
                reason = Some(why);
                break;
            }
            Err(BlockError::Io(e)) => return Err(e),
        }
    }
    let truncated_bytes = file_len - offset;
    if truncated_bytes > 0 {
        file.set_len(offset)?;
        file.sync_all()?;
    }
    index.segment_len = offset;
    write_index(seg, &index)?;
    Ok(Recovery {
        index,
        truncated_bytes,
        reason,
    })
}

/// A block's payload, read and checked against its checksum.
#[derive(Debug)]
pub enum Payload {
    /// Format 1: the decompressed events.
    Rows(Vec<u8>),
    /// Format 2: the column block, whose columns are decompressed when read.
    Columns(Vec<u8>),
}

impl Payload {
    /// Every event, whole: `(timestamp_ms, doc)`.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn decode_all(&self) -> Result<Vec<(i64, Value)>, BlockError> {
        match self {
            Self::Rows(raw) => decode_events(raw),
            Self::Columns(bytes) => crate::columnar::ColumnBlock::parse(bytes)?.decode_all(),
        }
    }
}

/// Reads and checks the payload of `entry`, decompressing a rows block.
pub fn read_payload(file: &mut File, entry: &IndexEntry) -> Result<Payload, BlockError> {
    let format = entry.header.block_format()?;
    file.seek(SeekFrom::Start(entry.payload_offset))?;
    let mut payload = vec![0u8; entry.header.payload_len as usize];
    file.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != entry.header.payload_crc {
        return Err(BlockError::Invalid(format!(
            "block payload at offset {} fails its checksum",
            entry.payload_offset
        )));
    }
    if format == BlockFormat::Columns {
        return Ok(Payload::Columns(payload));
    }
    let raw = zstd::bulk::decompress(&payload, entry.header.raw_len as usize)
        .map_err(|e| BlockError::Invalid(format!("block payload does not decompress: {e}")))?;
    if raw.len() != entry.header.raw_len as usize {
        return Err(BlockError::Invalid(format!(
            "block payload decompresses to {} bytes, header says {}",
            raw.len(),
            entry.header.raw_len
        )));
    }
    Ok(Payload::Rows(raw))
}

/// Decodes the events of a decompressed payload: `(timestamp_ms, doc)`.
pub fn decode_events(raw: &[u8]) -> Result<Vec<(i64, Value)>, BlockError> {
    let mut events = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(BlockError::Invalid("event record cut short".to_owned()));
        }
        let (ts, tail) = rest.split_at(8);
        let (len, tail) = tail.split_at(4);
        let ts = i64::from_le_bytes(ts.try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(len.try_into().unwrap_or([0; 4])) as usize;
        if tail.len() < len {
            return Err(BlockError::Invalid("event record cut short".to_owned()));
        }
        let (doc, tail) = tail.split_at(len);
        let doc: Value = serde_json::from_slice(doc)
            .map_err(|e| BlockError::Invalid(format!("stored event is not JSON: {e}")))?;
        events.push((ts, doc));
        rest = tail;
    }
    Ok(events)
}

/// Segment file name for sequence number `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("seg-{seq:08}.qseg")
}

/// Sequence number of a segment file name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".qseg")?
        .parse()
        .ok()
}

/// Segment files of a shard directory, by sequence number.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blocks_round_trip_and_keep_statistics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = dir.path().join(segment_file_name(1));
        let mut writer = SegmentWriter::create(&seg).expect("create");
        let mut builder = BlockBuilder::new(10);
        for i in 0..100i64 {
            let doc = json!({
                "EventID": 4624 + (i % 2),
                "User": format!("u{i}"),
                "Host": "DC01",
                "list": [1, 2],
            });
            builder
                .push((i != 0).then_some(i * 1000), &doc)
                .expect("push");
        }
        let (header, bytes) = builder.finish().expect("finish");
        assert_eq!(builder.next_offset(), 110);
        let stats = header.stats.clone();
        writer.write_block(header, &bytes).expect("write");
        let index = writer.seal().expect("seal");

        assert_eq!(stats.event_count, 100);
        assert_eq!(stats.untimed, 1);
        assert_eq!(
            (stats.min_ts_ms, stats.max_ts_ms),
            (Some(1000), Some(99_000))
        );
        assert!(stats.may_equal("EventID", "4625"));
        assert!(!stats.may_equal("EventID", "4688"));
        assert!(stats.may_equal("Host", "dc01"));
        assert!(stats.may_equal("User", "anything"), "high cardinality");
        assert!(stats.values("User").is_none());
        assert!(!stats.has_field("Nope"));
        assert!(
            stats.may_equal("Event.System.EventID", "4625"),
            "EVTX paths"
        );
        let clause = |field: &str, op, values: &[&str]| Clause::new(field, op, values.to_vec());
        assert!(stats.may_match_clause(&clause("EventID", MatchOp::Equals, &["1", "4624"])));
        assert!(!stats.may_match_clause(&clause("EventID", MatchOp::Equals, &["4688"])));
        assert!(stats.may_match_clause(&clause("Host", MatchOp::StartsWith, &["DC"])));
        assert!(!stats.may_match_clause(&clause("Host", MatchOp::Contains, &["srv"])));
        assert!(stats.may_match_clause(&clause("User", MatchOp::EndsWith, &["zz"])));
        assert!(!stats.may_match_clause(&clause("Image", MatchOp::Exists, &[])));
        assert!(!stats.may_match_all(&[
            clause("Host", MatchOp::Equals, &["dc01"]),
            clause("EventID", MatchOp::Equals, &["4688"]),
        ]));
        // An any-of group rules a block out only when none of its clauses may match.
        let connection_group = vec![
            clause("EventID", MatchOp::Equals, &["3"]),
            clause("DestinationIp", MatchOp::Exists, &[]),
        ];
        assert!(!stats.may_match_prefilter(&[], std::slice::from_ref(&connection_group)));
        let logon_group = vec![
            clause("EventID", MatchOp::Equals, &["3"]),
            clause("EventID", MatchOp::Equals, &["4625"]),
        ];
        assert!(stats.may_match_prefilter(&[], std::slice::from_ref(&logon_group)));
        assert!(!stats.may_match_prefilter(
            &[clause("Host", MatchOp::Equals, &["srv9"])],
            std::slice::from_ref(&logon_group)
        ));

        assert!(stats.may_equal("list.0", "7"), "inside an array: unknown");
        assert!(!stats.may_equal("nolist.0", "7"));

        let len = fs::metadata(&seg).expect("meta").len();
        assert_eq!(read_index(&seg, len), Some(index.clone()));
        let mut file = File::open(&seg).expect("open");
        let payload = read_payload(&mut file, &index.blocks[0]).expect("payload");
        assert!(matches!(payload, Payload::Columns(_)), "written as columns");
        let events = payload.decode_all().expect("decode");
        assert_eq!(events.len(), 100);
        assert_eq!(events[5].0, 5000);
        assert_eq!(events[5].1["User"], "u5");
    }

    /// A block as versions before column blocks wrote it: no `format` in
    /// its header, the JSON rows zstd-compressed whole. It is read as it is,
    /// beside column blocks in the same segment, and an unknown format is
    /// refused naming the upgrade.
    #[test]
    fn rows_blocks_of_older_versions_stay_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = dir.path().join(segment_file_name(1));
        let mut writer = SegmentWriter::create(&seg).expect("create");
        let docs: Vec<Value> = (0..50)
            .map(|i| json!({"n": i, "User": format!("u{}", i % 3), "list": [i, "x"]}))
            .collect();
        let mut rows = BlockBuilder::with_format(0, BlockFormat::Rows);
        let mut columns = BlockBuilder::with_format(50, BlockFormat::Columns);
        for (i, doc) in docs.iter().enumerate() {
            rows.push(Some(i as i64), doc).expect("push");
            columns.push(Some(i as i64), doc).expect("push");
        }
        let (rows_header, rows_bytes) = rows.finish().expect("finish");
        let (columns_header, columns_bytes) = columns.finish().expect("finish");
        // The rows block is byte for byte the old layout: its header has no
        // format, and the payload is one zstd frame of the event records.
        let header_len = u32::from_le_bytes(rows_bytes[4..8].try_into().expect("len")) as usize;
        let header_text = std::str::from_utf8(&rows_bytes[12..12 + header_len]).expect("utf8");
        assert!(!header_text.contains("format"), "{header_text}");
        assert!(
            header_text.starts_with(r#"{"payload_len":"#),
            "{header_text}"
        );
        let raw = zstd::decode_all(&rows_bytes[12 + header_len..]).expect("zstd");
        assert_eq!(decode_events(&raw).expect("records").len(), 50);
        assert_eq!(rows_header.stats, {
            let mut s = columns_header.stats.clone();
            s.first_offset = 0;
            s
        });
        writer.write_block(rows_header, &rows_bytes).expect("write");
        writer
            .write_block(columns_header, &columns_bytes)
            .expect("write");
        let index = writer.seal().expect("seal");
        let mut file = File::open(&seg).expect("open");
        let read = |file: &mut File, entry: &IndexEntry| {
            read_payload(file, entry)
                .expect("payload")
                .decode_all()
                .expect("decode")
        };
        let expected: Vec<(i64, Value)> = docs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, d)| (i as i64, d))
            .collect();
        assert_eq!(read(&mut file, &index.blocks[0]), expected);
        assert_eq!(read(&mut file, &index.blocks[1]), expected);
        let reread = read_block_at(&mut file, 0, index.segment_len).expect("block");
        assert_eq!(
            reread.header.block_format().expect("format"),
            BlockFormat::Rows
        );

        let mut newer = index.blocks[1].clone();
        newer.header.format = 3;
        let error = read_payload(&mut file, &newer).expect_err("newer format");
        assert!(error.to_string().contains("upgrade Quarry"), "{error}");
    }

    #[test]
    fn recovery_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = dir.path().join(segment_file_name(1));
        let mut writer = SegmentWriter::create(&seg).expect("create");
        let mut builder = BlockBuilder::new(0);
        for block in 0..3 {
            for i in 0..10 {
                builder
                    .push(Some(block * 100 + i), &json!({"i": i}))
                    .expect("push");
            }
            let (h, b) = builder.finish().expect("finish");
            writer.write_block(h, &b).expect("write");
        }
        let index = writer.seal().expect("seal");
        let full = index.segment_len;
        let cut = index.blocks[2].offset + 20;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        assert!(read_index(&seg, cut).is_none(), "stale index rejected");
        let rec = recover_segment(&seg).expect("recover");
        assert_eq!(rec.index.blocks.len(), 2);
        assert_eq!(rec.truncated_bytes, 20);
        assert!(rec.reason.is_some());
        assert_eq!(
            fs::metadata(&seg).expect("meta").len(),
            index.blocks[2].offset
        );
        assert!(full > cut);
    }
}
