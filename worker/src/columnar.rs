//! Column blocks: a block's events stored field by field (issue 18, first
//! increment; not yet used by segments or the scan path).
//!
//! ```text
//! block    = magic "QCOL" | version u8 (= 1) | body_crc u32 LE | body
//! body     = event_count varint
//!          | ts chunk dir | shape chunk dir
//!          | column_count varint | (name_len varint, name, chunk dir)*
//!          | chunk data, in directory order (ts, shapes, columns)
//! chunk dir = compressed_len varint | raw_len varint
//! ```
//!
//! `body_crc` is the CRC-32 of the body. Every chunk is a zstd frame of its
//! own (level [`ZSTD_LEVEL`]), so a projection decompresses only the columns
//! it names. A column is one top-level member of the events; nested objects
//! and arrays are kept whole as their compact JSON text (a dotted path into
//! them parses that text for the rows that have it).
//!
//! ```text
//! ts chunk     = (zigzag delta varint)*event_count
//! shape chunk  = shape_count varint | (len varint, column index varint*)*
//!              | (shape index varint)*event_count
//! column chunk = presence bitmap (ceil(event_count/8) bytes, bit i of byte
//!                i/8 for event i: the member exists, `null` included)
//!              | tag u8 per present value (null, false, true, int, uint,
//!                float, string, json)
//!              | ints: zigzag delta varint each (i64)
//!              | uints: u64 LE each (above i64::MAX)
//!              | floats: f64 bits LE each
//!              | texts (strings and json texts, in row order):
//!                mode 0 (plain): (len varint, bytes)*
//!                mode 1 (dictionary): dict_len varint, (len varint, bytes)*,
//!                then a code varint per text
//! ```
//!
//! A shape is the ordered list of members of an event: events of one source
//! share a handful, so member order round-trips for a few bytes per block.
//! Decoding is bounds-checked throughout; damage is a [`BlockError::Invalid`]
//! naming it, never a panic.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use crate::event::{ALL_VALUES_FIELD, lookup, value_text, without_evtx_prefix};
use crate::shard::segment::BlockError;

/// Marks the start of a column block.
pub const MAGIC: [u8; 4] = *b"QCOL";
/// The format version this module writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// zstd level of every chunk (the segments' level).
pub const ZSTD_LEVEL: i32 = crate::shard::segment::ZSTD_LEVEL;
/// Most events a block may claim when read.
const MAX_EVENTS: u64 = 1 << 20;
/// Most columns a block may claim when read.
const MAX_COLUMNS: u64 = 1 << 16;
/// Largest decompressed chunk accepted when read.
const MAX_CHUNK_RAW: u64 = 256 << 20;
/// A column's texts are dictionary-encoded when at most one in this many is
/// distinct.
const DICT_RATIO: usize = 2;

const TAG_NULL: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_UINT: u8 = 4;
const TAG_FLOAT: u8 = 5;
const TAG_STRING: u8 = 6;
const TAG_JSON: u8 = 7;

fn invalid(reason: impl Into<String>) -> BlockError {
    BlockError::Invalid(reason.into())
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One column being built.
#[derive(Default)]
struct ColumnBuilder {
    present: Vec<u8>,
    tags: Vec<u8>,
    ints: Vec<u8>,
    last_int: i64,
    uints: Vec<u8>,
    floats: Vec<u8>,
    texts: Vec<String>,
}

impl ColumnBuilder {
    fn push(&mut self, row: usize, value: &Value) {
        if self.present.len() <= row / 8 {
            self.present.resize(row / 8 + 1, 0);
        }
        self.present[row / 8] |= 1 << (row % 8);
        let tag = match value {
            Value::Null => TAG_NULL,
            Value::Bool(false) => TAG_FALSE,
            Value::Bool(true) => TAG_TRUE,
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    put_varint(&mut self.ints, zigzag(i.wrapping_sub(self.last_int)));
                    self.last_int = i;
                    TAG_INT
                } else if let Some(u) = n.as_u64() {
                    self.uints.extend_from_slice(&u.to_le_bytes());
                    TAG_UINT
                } else {
                    let f = n.as_f64().unwrap_or(0.0);
                    self.floats.extend_from_slice(&f.to_bits().to_le_bytes());
                    TAG_FLOAT
                }
            }
            Value::String(s) => {
                self.texts.push(s.clone());
                TAG_STRING
            }
            Value::Array(_) | Value::Object(_) => {
                self.texts.push(value.to_string());
                TAG_JSON
            }
        };
        self.tags.push(tag);
    }

    fn finish(mut self, event_count: usize) -> Vec<u8> {
        self.present.resize(event_count.div_ceil(8), 0);
        let mut out = self.present;
        out.extend_from_slice(&self.tags);
        out.extend_from_slice(&self.ints);
        out.extend_from_slice(&self.uints);
        out.extend_from_slice(&self.floats);
        let mut codes: HashMap<&str, u64> = HashMap::new();
        let mut dict: Vec<&str> = Vec::new();
        let mut dictionary = true;
        for text in &self.texts {
            if !codes.contains_key(text.as_str()) {
                if (dict.len() + 1) * DICT_RATIO > self.texts.len() {
                    dictionary = false;
                    break;
                }
                codes.insert(text, dict.len() as u64);
                dict.push(text);
            }
        }
        if dictionary {
            out.push(1);
            put_varint(&mut out, dict.len() as u64);
            for text in &dict {
                put_bytes(&mut out, text.as_bytes());
            }
            for text in &self.texts {
                put_varint(&mut out, codes[text.as_str()]);
            }
        } else {
            out.push(0);
            for text in &self.texts {
                put_bytes(&mut out, text.as_bytes());
            }
        }
        out
    }
}

/// A column block, parsed (header checked) but not decoded: chunks are
/// decompressed on demand.
#[derive(Debug)]
pub struct ColumnBlock<'a> {
    event_count: usize,
    timestamps: &'a [u8],
    timestamps_raw: usize,
    shapes: &'a [u8],
    shapes_raw: usize,
    /// Name, compressed bytes, decompressed length; in column order.
    columns: Vec<(&'a str, &'a [u8], usize)>,
    by_name: HashMap<&'a str, usize>,
}

fn compress(raw: &[u8]) -> Result<Vec<u8>, BlockError> {
    zstd::bulk::compress(raw, ZSTD_LEVEL).map_err(BlockError::Io)
}

impl ColumnBlock<'_> {
    /// Encodes `events` (JSON objects) with their timestamps (ms, 0 when
    /// untimed) into a column block.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] when an event is not an object or the
    /// lengths differ; [`BlockError::Io`] when compression fails.
    pub fn encode(events: &[Value], timestamps: &[i64]) -> Result<Vec<u8>, BlockError> {
        if events.len() != timestamps.len() {
            return Err(invalid(format!(
                "{} events but {} timestamps",
                events.len(),
                timestamps.len()
            )));
        }
        if events.len() as u64 > MAX_EVENTS {
            return Err(invalid(format!(
                "{} events in one block, at most {MAX_EVENTS}",
                events.len()
            )));
        }
        let mut ts_raw = Vec::with_capacity(timestamps.len() * 2);
        let mut last = 0i64;
        for &ts in timestamps {
            put_varint(&mut ts_raw, zigzag(ts.wrapping_sub(last)));
            last = ts;
        }
        let mut names: Vec<&str> = Vec::new();
        let mut column_of: HashMap<&str, usize> = HashMap::new();
        let mut builders: Vec<ColumnBuilder> = Vec::new();
        let mut shape_of: HashMap<Vec<usize>, usize> = HashMap::new();
        let mut shapes: Vec<Vec<usize>> = Vec::new();
        let mut rows_shape = Vec::with_capacity(events.len() * 2);
        let mut shape = Vec::new();
        for (row, event) in events.iter().enumerate() {
            let Value::Object(members) = event else {
                return Err(invalid(format!("event {row} is not a JSON object")));
            };
            shape.clear();
            for (key, value) in members {
                let col = *column_of.entry(key.as_str()).or_insert_with(|| {
                    names.push(key.as_str());
                    builders.push(ColumnBuilder::default());
                    names.len() - 1
                });
                builders[col].push(row, value);
                shape.push(col);
            }
            let id = match shape_of.get(&shape) {
                Some(&id) => id,
                None => {
                    shapes.push(shape.clone());
                    shape_of.insert(shape.clone(), shapes.len() - 1);
                    shapes.len() - 1
                }
            };
            put_varint(&mut rows_shape, id as u64);
        }
        let mut shapes_raw = Vec::new();
        put_varint(&mut shapes_raw, shapes.len() as u64);
        for shape in &shapes {
            put_varint(&mut shapes_raw, shape.len() as u64);
            for &col in shape {
                put_varint(&mut shapes_raw, col as u64);
            }
        }
        shapes_raw.extend_from_slice(&rows_shape);

        let mut dir = Vec::new();
        let mut data = Vec::new();
        put_varint(&mut dir, events.len() as u64);
        let mut chunk = |dir: &mut Vec<u8>, raw: &[u8]| -> Result<(), BlockError> {
            let packed = compress(raw)?;
            put_varint(dir, packed.len() as u64);
            put_varint(dir, raw.len() as u64);
            data.extend_from_slice(&packed);
            Ok(())
        };
        chunk(&mut dir, &ts_raw)?;
        chunk(&mut dir, &shapes_raw)?;
        put_varint(&mut dir, names.len() as u64);
        for (name, builder) in names.iter().zip(builders) {
            put_bytes(&mut dir, name.as_bytes());
            chunk(&mut dir, &builder.finish(events.len()))?;
        }
        dir.extend_from_slice(&data);
        let mut out = Vec::with_capacity(dir.len() + 9);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&crc32fast::hash(&dir).to_le_bytes());
        out.extend_from_slice(&dir);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// A bounds-checked cursor over bytes; `what` names the part for errors.
struct Reader<'a, 'w> {
    bytes: &'a [u8],
    pos: usize,
    what: &'w str,
}

impl<'a, 'w> Reader<'a, 'w> {
    fn new(bytes: &'a [u8], what: &'w str) -> Self {
        Self {
            bytes,
            pos: 0,
            what,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BlockError> {
        if n > self.remaining() {
            return Err(invalid(format!(
                "{} cut short: {n} bytes needed at byte {}, {} left",
                self.what,
                self.pos,
                self.remaining()
            )));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, BlockError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid(format!(
            "{}: varint at byte {} overflows 64 bits",
            self.what, self.pos
        )))
    }

    /// A varint that must be at most `max`; `name` says what it counts.
    fn bounded(&mut self, max: u64, name: &str) -> Result<usize, BlockError> {
        let v = self.varint()?;
        if v > max {
            return Err(invalid(format!(
                "{}: {name} {v} exceeds the limit {max}",
                self.what
            )));
        }
        usize::try_from(v).map_err(|_| invalid(format!("{}: {name} {v} too large", self.what)))
    }

    fn text(&mut self) -> Result<&'a str, BlockError> {
        let len = self.bounded(self.remaining() as u64, "text length")?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map_err(|e| invalid(format!("{}: text is not UTF-8: {e}", self.what)))
    }

    fn u64_le(&mut self) -> Result<u64, BlockError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn expect_end(&self) -> Result<(), BlockError> {
        if self.remaining() != 0 {
            return Err(invalid(format!(
                "{}: {} unexpected trailing bytes",
                self.what,
                self.remaining()
            )));
        }
        Ok(())
    }
}

fn decompress(packed: &[u8], raw_len: usize, what: &str) -> Result<Vec<u8>, BlockError> {
    match zstd::zstd_safe::get_frame_content_size(packed) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        Ok(Some(n)) => {
            return Err(invalid(format!(
                "{what}: frame holds {n} bytes, directory says {raw_len}"
            )));
        }
        _ => return Err(invalid(format!("{what}: not a zstd frame with its size"))),
    }
    let raw = zstd::bulk::decompress(packed, raw_len)
        .map_err(|e| invalid(format!("{what}: does not decompress: {e}")))?;
    if raw.len() != raw_len {
        return Err(invalid(format!(
            "{what}: decompresses to {} bytes, directory says {raw_len}",
            raw.len()
        )));
    }
    Ok(raw)
}

/// One decoded value of a column (texts share the dictionary's strings
/// until materialised).
enum Cell<'d> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'d, str>),
    Json(Cow<'d, str>),
}

impl Cell<'_> {
    fn into_value(self, column: &str) -> Result<Value, BlockError> {
        Ok(match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::Int(i) => Value::from(i),
            Cell::UInt(u) => Value::from(u),
            Cell::Float(f) => Value::Number(float(f, column)?),
            Cell::Str(s) => Value::String(s.into_owned()),
            Cell::Json(text) => match serde_json::from_str(&text) {
                Ok(v @ (Value::Array(_) | Value::Object(_))) => v,
                Ok(_) => {
                    return Err(invalid(format!(
                        "column `{column}`: a nested value is not an array or object"
                    )));
                }
                Err(e) => {
                    return Err(invalid(format!(
                        "column `{column}`: a nested value is not JSON: {e}"
                    )));
                }
            },
        })
    }

    /// As [`value_text`] on the value.
    /// Appends the cell's text ([`Cell::into_text`]) to `out`, borrowing
    /// strings rather than copying them into one of their own.
    fn push_text(self, column: &str, out: &mut FieldTexts) -> Result<(), BlockError> {
        match self {
            Cell::Str(s) | Cell::Json(s) => out.push(Some(&s)),
            other => out.push(other.into_text(column)?.as_deref()),
        }
        Ok(())
    }

    fn into_text(self, column: &str) -> Result<Option<String>, BlockError> {
        Ok(match self {
            Cell::Null => None,
            Cell::Bool(b) => Some(if b { "true" } else { "false" }.to_owned()),
            Cell::Int(i) => Some(i.to_string()),
            Cell::UInt(u) => Some(u.to_string()),
            Cell::Float(f) => Some(float(f, column)?.to_string()),
            Cell::Str(s) | Cell::Json(s) => Some(s.into_owned()),
        })
    }
}

fn float(f: f64, column: &str) -> Result<Number, BlockError> {
    Number::from_f64(f).ok_or_else(|| invalid(format!("column `{column}`: a float is not finite")))
}

/// A decompressed column chunk, split into its parts.
struct ColumnData {
    raw: Vec<u8>,
    event_count: usize,
}

/// The values of one column, in row order of the rows that have it, with
/// the presence bitmap.
struct DecodedColumn<'d> {
    present: &'d [u8],
    cells: Vec<Cell<'d>>,
    /// For a dictionary-encoded column, each cell's dictionary code
    /// ([`NO_CODE`] for a cell that is not text); empty otherwise.
    codes: Vec<u32>,
}

/// The code of a cell that has none.
const NO_CODE: u32 = u32::MAX;

/// Whether bit `row` of a presence bitmap is set.
fn has(present: &[u8], row: usize) -> bool {
    present
        .get(row / 8)
        .is_some_and(|b| b & (1 << (row % 8)) != 0)
}

impl ColumnData {
    fn decode<'d>(&'d self, column: &str) -> Result<DecodedColumn<'d>, BlockError> {
        let what = format!("column `{column}`");
        let mut r = Reader::new(&self.raw, &what);
        let present = r.take(self.event_count.div_ceil(8))?;
        let count: usize = present.iter().map(|b| b.count_ones() as usize).sum();
        if !self.event_count.is_multiple_of(8)
            && present
                .last()
                .is_some_and(|b| b >> (self.event_count % 8) != 0)
        {
            return Err(invalid(format!(
                "{what}: presence bits set past the last event"
            )));
        }
        let tags = r.take(count)?;
        let mut cells: Vec<Cell<'d>> = Vec::with_capacity(count);
        let mut last_int = 0i64;
        let mut texts = 0usize;
        for &tag in tags {
            cells.push(match tag {
                TAG_NULL => Cell::Null,
                TAG_FALSE => Cell::Bool(false),
                TAG_TRUE => Cell::Bool(true),
                TAG_INT => {
                    last_int = last_int.wrapping_add(unzigzag(r.varint()?));
                    Cell::Int(last_int)
                }
                TAG_UINT | TAG_FLOAT => Cell::Null, // filled below
                TAG_STRING | TAG_JSON => {
                    texts += 1;
                    Cell::Null
                }
                other => return Err(invalid(format!("{what}: unknown value tag {other}"))),
            });
        }
        for (cell, &tag) in cells.iter_mut().zip(tags) {
            if tag == TAG_UINT {
                let u = r.u64_le()?;
                if u <= i64::MAX as u64 {
                    return Err(invalid(format!(
                        "{what}: unsigned value {u} should be stored as an int"
                    )));
                }
                *cell = Cell::UInt(u);
            }
        }
        for (cell, &tag) in cells.iter_mut().zip(tags) {
            if tag == TAG_FLOAT {
                *cell = Cell::Float(f64::from_bits(r.u64_le()?));
            }
        }
        let mode = if texts > 0 || r.remaining() > 0 {
            r.take(1)?[0]
        } else {
            0
        };
        let mut codes = Vec::new();
        let text_at = |cell: &mut Cell<'d>, tag: u8, text: Cow<'d, str>| {
            *cell = if tag == TAG_STRING {
                Cell::Str(text)
            } else {
                Cell::Json(text)
            };
        };
        match mode {
            0 => {
                for (cell, &tag) in cells.iter_mut().zip(tags) {
                    if tag == TAG_STRING || tag == TAG_JSON {
                        text_at(cell, tag, Cow::Borrowed(r.text()?));
                    }
                }
            }
            1 => {
                let len = r.bounded(
                    (r.remaining() as u64).min(u64::from(NO_CODE - 1)),
                    "dictionary length",
                )?;
                let mut dict = Vec::with_capacity(len);
                for _ in 0..len {
                    dict.push(r.text()?);
                }
                codes = vec![NO_CODE; cells.len()];
                for ((cell, &tag), slot) in cells.iter_mut().zip(tags).zip(&mut codes) {
                    if tag == TAG_STRING || tag == TAG_JSON {
                        let code = r.varint()?;
                        let text = usize::try_from(code)
                            .ok()
                            .and_then(|c| dict.get(c))
                            .ok_or_else(|| {
                                invalid(format!(
                                    "{what}: dictionary code {code} out of {} entries",
                                    dict.len()
                                ))
                            })?;
                        text_at(cell, tag, Cow::Borrowed(text));
                        // In range of the dictionary, whose length is a u32.
                        *slot = u32::try_from(code).unwrap_or(NO_CODE);
                    }
                }
            }
            other => return Err(invalid(format!("{what}: unknown text mode {other}"))),
        }
        r.expect_end()?;
        Ok(DecodedColumn {
            present,
            cells,
            codes,
        })
    }
}

impl<'a> ColumnBlock<'a> {
    /// Checks a block's header, version, checksum and chunk directory.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BlockError> {
        let mut r = Reader::new(bytes, "column block header");
        if r.take(4)? != MAGIC {
            return Err(invalid("no column block magic"));
        }
        let version = r.take(1)?[0];
        if version != FORMAT_VERSION {
            return Err(invalid(format!(
                "column block format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let crc = u32::from_le_bytes([r.take(1)?[0], r.take(1)?[0], r.take(1)?[0], r.take(1)?[0]]);
        let body = &bytes[r.pos..];
        if crc32fast::hash(body) != crc {
            return Err(invalid("column block fails its checksum"));
        }
        let mut r = Reader::new(body, "column block directory");
        let event_count = r.bounded(MAX_EVENTS, "event count")?;
        let mut dirs = Vec::new();
        let dir = |r: &mut Reader<'_, '_>| -> Result<(usize, usize), BlockError> {
            let packed = r.bounded(body.len() as u64, "chunk length")?;
            let raw = r.bounded(MAX_CHUNK_RAW, "decompressed chunk length")?;
            Ok((packed, raw))
        };
        let ts = dir(&mut r)?;
        let shapes = dir(&mut r)?;
        let column_count = r.bounded(MAX_COLUMNS, "column count")?;
        let mut names = Vec::with_capacity(column_count.min(r.remaining()));
        for _ in 0..column_count {
            names.push(r.text()?);
            dirs.push(dir(&mut r)?);
        }
        let total = [ts, shapes]
            .iter()
            .chain(&dirs)
            .try_fold(0usize, |sum, (packed, _)| sum.checked_add(*packed));
        if total != Some(r.remaining()) {
            return Err(invalid(format!(
                "column block chunks take {total:?} bytes, {} follow the directory",
                r.remaining()
            )));
        }
        let timestamps = r.take(ts.0)?;
        let shape_bytes = r.take(shapes.0)?;
        let mut columns = Vec::with_capacity(names.len());
        let mut by_name = HashMap::with_capacity(names.len());
        for (name, (packed, raw)) in names.into_iter().zip(dirs) {
            if by_name.insert(name, columns.len()).is_some() {
                return Err(invalid(format!("column `{name}` appears twice")));
            }
            columns.push((name, r.take(packed)?, raw));
        }
        Ok(Self {
            event_count,
            timestamps,
            timestamps_raw: ts.1,
            shapes: shape_bytes,
            shapes_raw: shapes.1,
            columns,
            by_name,
        })
    }

    /// Events in the block.
    pub fn len(&self) -> usize {
        self.event_count
    }

    /// Whether the block holds no event.
    pub fn is_empty(&self) -> bool {
        self.event_count == 0
    }

    /// The columns (top-level member names), in first-seen order.
    pub fn column_names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.columns.iter().map(|(name, _, _)| *name)
    }

    /// Each event's timestamp (ms; 0 when untimed).
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn timestamps(&self) -> Result<Vec<i64>, BlockError> {
        let raw = decompress(self.timestamps, self.timestamps_raw, "timestamps")?;
        let mut r = Reader::new(&raw, "timestamps");
        let mut out = Vec::with_capacity(self.event_count.min(raw.len()));
        let mut last = 0i64;
        for _ in 0..self.event_count {
            last = last.wrapping_add(unzigzag(r.varint()?));
            out.push(last);
        }
        r.expect_end()?;
        Ok(out)
    }

    fn column(&self, index: usize) -> Result<ColumnData, BlockError> {
        let (name, packed, raw_len) = self.columns[index];
        Ok(ColumnData {
            raw: decompress(packed, raw_len, &format!("column `{name}`"))?,
            event_count: self.event_count,
        })
    }

    /// Every event, whole, with its timestamp, members in their original
    /// order.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn decode_all(&self) -> Result<Vec<(i64, Value)>, BlockError> {
        let timestamps = self.timestamps()?;
        let raw = decompress(self.shapes, self.shapes_raw, "shapes")?;
        let mut r = Reader::new(&raw, "shapes");
        let shape_count = r.bounded(r.remaining() as u64, "shape count")?;
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(shape_count);
        for _ in 0..shape_count {
            let len = r.bounded(self.columns.len() as u64, "shape length")?;
            let mut shape = Vec::with_capacity(len);
            let mut seen = vec![false; self.columns.len()];
            for _ in 0..len {
                let col = r.bounded(self.columns.len().saturating_sub(1) as u64, "column index")?;
                if col >= self.columns.len() || std::mem::replace(&mut seen[col], true) {
                    return Err(invalid(format!("shapes: column {col} repeated or unknown")));
                }
                shape.push(col);
            }
            shapes.push(shape);
        }
        let data: Vec<ColumnData> = (0..self.columns.len())
            .map(|i| self.column(i))
            .collect::<Result<_, _>>()?;
        let decoded: Vec<DecodedColumn<'_>> = data
            .iter()
            .zip(&self.columns)
            .map(|(d, (name, _, _))| d.decode(name))
            .collect::<Result<_, _>>()?;
        let mut cursors: Vec<(&[u8], std::vec::IntoIter<Cell<'_>>)> = decoded
            .into_iter()
            .map(|c| (c.present, c.cells.into_iter()))
            .collect();
        let mut out = Vec::with_capacity(self.event_count);
        for (row, ts) in timestamps.into_iter().enumerate() {
            let id = r.varint()?;
            let shape = usize::try_from(id)
                .ok()
                .and_then(|i| shapes.get(i))
                .ok_or_else(|| invalid(format!("shapes: event {row} has unknown shape {id}")))?;
            let mut members = Map::with_capacity(shape.len());
            for &col in shape {
                let name = self.columns[col].0;
                let (present, cells) = &mut cursors[col];
                let cell = cells.next().filter(|_| has(present, row)).ok_or_else(|| {
                    invalid(format!(
                        "column `{name}`: event {row} has the member but the column does not"
                    ))
                })?;
                members.insert(name.to_owned(), cell.into_value(name)?);
            }
            out.push((ts, Value::Object(members)));
        }
        r.expect_end()?;
        for (col, (_, cells)) in cursors.iter_mut().enumerate() {
            if cells.next().is_some() {
                return Err(invalid(format!(
                    "column `{}`: holds values for events whose shape lacks it",
                    self.columns[col].0
                )));
            }
        }
        Ok(out)
    }

    /// Decompresses and decodes every column (and the timestamps) into
    /// typed values, texts borrowed from the decompressed chunk or its
    /// dictionary, without building events: the full decode of every field
    /// that `quarry bench scan` measures. Returns the values decoded.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn decode_columns(&self) -> Result<u64, BlockError> {
        let mut values = self.timestamps()?.len() as u64;
        for (index, (name, _, _)) in self.columns.iter().enumerate() {
            let data = self.column(index)?;
            let column = data.decode(name)?;
            values += std::hint::black_box(&column.cells).len() as u64;
        }
        Ok(values)
    }

    /// Events `rows` selects (every event without `rows`).
    fn selected(&self, rows: Option<&[bool]>) -> usize {
        rows.map_or(self.event_count, |rows| {
            rows.iter().take(self.event_count).filter(|&&r| r).count()
        })
    }

    /// One column as text per selected event (`None`: absent or null), as
    /// [`value_text`] gives it.
    fn column_texts(
        &self,
        name: &str,
        rows: Option<&[bool]>,
    ) -> Result<Vec<Option<String>>, BlockError> {
        self.column_rows(name, rows, |cell| cell.into_text(name))
    }

    /// One column as values per selected event (`None`: absent).
    fn column_values(
        &self,
        name: &str,
        rows: Option<&[bool]>,
    ) -> Result<Vec<Option<Value>>, BlockError> {
        self.column_rows(name, rows, |cell| cell.into_value(name).map(Some))
    }

    /// One column through `convert`, one entry per event that `rows`
    /// selects (every event without `rows`), `None` where the event has no
    /// such member. Unselected values are decoded but not converted.
    fn column_rows<T: Clone>(
        &self,
        name: &str,
        rows: Option<&[bool]>,
        mut convert: impl FnMut(Cell<'_>) -> Result<Option<T>, BlockError>,
    ) -> Result<Vec<Option<T>>, BlockError> {
        let mut out = Vec::with_capacity(self.selected(rows));
        self.for_each_cell(name, rows, |cell| {
            out.push(match cell {
                Some(cell) => convert(cell)?,
                None => None,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with one column's cell for each event that `rows` selects
    /// (every event without `rows`), `None` where the event has no such
    /// member.
    fn for_each_cell(
        &self,
        name: &str,
        rows: Option<&[bool]>,
        mut f: impl FnMut(Option<Cell<'_>>) -> Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        let selected = |row: usize| rows.is_none_or(|rows| rows.get(row) == Some(&true));
        let Some(&index) = self.by_name.get(name) else {
            return (0..self.selected(rows)).try_for_each(|_| f(None));
        };
        let data = self.column(index)?;
        let DecodedColumn { present, cells, .. } = data.decode(name)?;
        let mut cells = cells.into_iter();
        for row in 0..self.event_count {
            let cell =
                if has(present, row) {
                    Some(cells.next().ok_or_else(|| {
                        invalid(format!("column `{name}`: fewer values than rows"))
                    })?)
                } else {
                    None
                };
            if selected(row) {
                f(cell)?;
            }
        }
        Ok(())
    }

    /// The top-level members [`crate::event::lookup`] can touch resolving
    /// `field`: the path itself and each prefix before a dot, and the same
    /// for the path without an EVTX prefix; only those the block has.
    fn reach<'f>(&self, field: &'f str) -> Reach<'f> {
        if field.is_empty() {
            return Reach::Nothing;
        }
        let mut candidates: Vec<&str> = Vec::new();
        for path in std::iter::once(field).chain(without_evtx_prefix(field)) {
            candidates.push(path);
            candidates.extend(path.match_indices('.').map(|(i, _)| &path[..i]));
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|name| self.by_name.contains_key(name));
        match candidates.as_slice() {
            [] => Reach::Nothing,
            // The member itself, or (an EVTX path like `EventData.Image`
            // over flat events) the member its prefix-less name is, with
            // no other member the path could reach: lookup returns it as is.
            [only] if *only == field || without_evtx_prefix(field) == Some(*only) => {
                Reach::Column(only)
            }
            _ => Reach::Members(candidates),
        }
    }

    /// Rebuilds, per selected event, an object of just `members` and passes
    /// it to `f`: [`crate::event::lookup`] on it resolves a path as on the
    /// whole event, since lookup reads no other member.
    fn with_members(
        &self,
        members: &[&str],
        rows: Option<&[bool]>,
        mut f: impl FnMut(usize, &Value),
    ) -> Result<(), BlockError> {
        let columns: Vec<(&str, Vec<Option<Value>>)> = members
            .iter()
            .map(|name| Ok((*name, self.column_values(name, rows)?)))
            .collect::<Result<_, BlockError>>()?;
        let mut at = 0;
        for row in 0..self.event_count {
            if rows.is_some_and(|rows| rows.get(row) != Some(&true)) {
                continue;
            }
            let mut object = Map::new();
            for (name, values) in &columns {
                if let Some(Some(v)) = values.get(at) {
                    object.insert((*name).to_owned(), v.clone());
                }
            }
            f(row, &Value::Object(object));
            at += 1;
        }
        Ok(())
    }

    /// The texts of one field path (as [`crate::event::lookup`] resolves it
    /// in each event), for the events `rows` selects, decoding only the
    /// columns the path can reach.
    fn field_texts(
        &self,
        field: &str,
        rows: Option<&[bool]>,
    ) -> Result<Vec<Option<String>>, BlockError> {
        match self.reach(field) {
            Reach::Nothing => Ok(vec![None; self.selected(rows)]),
            Reach::Column(name) => self.column_texts(name, rows),
            Reach::Members(members) => {
                let mut out = Vec::new();
                self.with_members(&members, rows, |_, doc| {
                    out.push(lookup(doc, field).and_then(value_text).map(Cow::into_owned));
                })?;
                Ok(out)
            }
        }
    }

    /// Calls `f` with each selected event's non-null value of `field` (as
    /// [`crate::event::lookup`] resolves it), without building the event:
    /// scalars as their text ([`value_text`]), with the dictionary code of
    /// a dictionary-encoded string (equal codes, equal texts, so a caller
    /// can decide once per code), arrays and objects as values.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn for_each_found(
        &self,
        field: &str,
        rows: &[bool],
        mut f: impl FnMut(usize, Found<'_>, Option<u32>),
    ) -> Result<(), BlockError> {
        let name = match self.reach(field) {
            Reach::Nothing => return Ok(()),
            Reach::Column(name) => name,
            Reach::Members(members) => {
                return self.with_members(&members, Some(rows), |row, doc| {
                    match lookup(doc, field) {
                        None | Some(Value::Null) => {}
                        Some(v @ (Value::Array(_) | Value::Object(_))) => {
                            f(row, Found::Value(v), None);
                        }
                        Some(scalar) => {
                            if let Some(text) = value_text(scalar) {
                                f(row, Found::Text(&text), None);
                            }
                        }
                    }
                });
            }
        };
        let Some(&index) = self.by_name.get(name) else {
            return Ok(());
        };
        let data = self.column(index)?;
        let DecodedColumn {
            present,
            cells,
            codes,
        } = data.decode(name)?;
        let mut cells = cells.into_iter().zip(
            codes
                .into_iter()
                .map(|c| (c != NO_CODE).then_some(c))
                .chain(std::iter::repeat(None)),
        );
        let mut scratch = String::new();
        for (row, &wanted) in rows.iter().enumerate().take(self.event_count) {
            if !has(present, row) {
                continue;
            }
            let (cell, code) = cells
                .next()
                .ok_or_else(|| invalid(format!("column `{name}`: fewer values than rows")))?;
            if !wanted {
                continue;
            }
            use std::fmt::Write as _;
            scratch.clear();
            match cell {
                Cell::Null => {}
                Cell::Bool(b) => f(row, Found::Text(if b { "true" } else { "false" }), None),
                Cell::Int(i) => {
                    let _ = write!(scratch, "{i}");
                    f(row, Found::Text(&scratch), None);
                }
                Cell::UInt(u) => {
                    let _ = write!(scratch, "{u}");
                    f(row, Found::Text(&scratch), None);
                }
                Cell::Float(x) => {
                    let _ = write!(scratch, "{}", float(x, name)?);
                    f(row, Found::Text(&scratch), None);
                }
                Cell::Str(text) => f(row, Found::Text(&text), code),
                json @ Cell::Json(_) => f(row, Found::Value(&json.into_value(name)?), None),
            }
        }
        Ok(())
    }

    /// The declared `fields` of every event, one entry per declared field
    /// (repeats included), exactly as [`crate::prefilter::Projection::project`] gives them on
    /// the whole event; only the columns the fields reach are decompressed.
    /// [`ALL_VALUES_FIELD`] needs every value, so it decodes whole events.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn project(&self, fields: &[String]) -> Result<Vec<Vec<Option<String>>>, BlockError> {
        self.project_rows(fields, None)
    }

    /// As [`ColumnBlock::project`], for the events `rows` selects only (in
    /// order): the others' values are never turned into text.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] naming the damage.
    pub fn project_rows(
        &self,
        fields: &[String],
        rows: Option<&[bool]>,
    ) -> Result<Vec<Vec<Option<String>>>, BlockError> {
        let selected = self.selected(rows);
        let mut distinct: HashMap<&str, usize> = HashMap::new();
        let mut per_field: Vec<Vec<Option<String>>> = Vec::new();
        let mut slots = Vec::with_capacity(fields.len());
        let mut whole: Option<Vec<(i64, Value)>> = None;
        for field in fields {
            let slot = match distinct.get(field.as_str()) {
                Some(&slot) => slot,
                None => {
                    let texts = if field == ALL_VALUES_FIELD {
                        if whole.is_none() {
                            whole = Some(self.decode_all()?);
                        }
                        whole
                            .iter()
                            .flatten()
                            .enumerate()
                            .filter(|(row, _)| rows.is_none_or(|r| r.get(*row) == Some(&true)))
                            .map(|(_, (_, doc))| crate::event::all_values_text(doc))
                            .collect()
                    } else {
                        self.field_texts(field, rows)?
                    };
                    per_field.push(texts);
                    distinct.insert(field, per_field.len() - 1);
                    per_field.len() - 1
                }
            };
            slots.push(slot);
        }
        let mut iters: Vec<std::vec::IntoIter<Option<String>>> =
            per_field.into_iter().map(Vec::into_iter).collect();
        let repeats = slots.len() > iters.len();
        let mut out = Vec::with_capacity(selected);
        for _ in 0..selected {
            let distinct_row: Vec<Option<String>> =
                iters.iter_mut().map(|it| it.next().flatten()).collect();
            out.push(if repeats {
                slots.iter().map(|&s| distinct_row[s].clone()).collect()
            } else {
                // Distinct fields in declared order: the row as it is.
                distinct_row
            });
        }
        Ok(out)
    }

    /// The texts of `fields` (distinct) for the events `rows` selects,
    /// field by field, as [`ColumnBlock::project_rows`] gives them but
    /// without a string per value: a batch by column copies them once more
    /// and not again.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] when a column is damaged.
    pub fn project_texts(
        &self,
        fields: &[String],
        rows: &[bool],
    ) -> Result<Vec<FieldTexts>, BlockError> {
        let mut whole: Option<Vec<(i64, Value)>> = None;
        let mut out = Vec::with_capacity(fields.len());
        for field in fields {
            let mut texts = FieldTexts::default();
            if field == ALL_VALUES_FIELD {
                if whole.is_none() {
                    whole = Some(self.decode_all()?);
                }
                for (_, (_, doc)) in whole
                    .iter()
                    .flatten()
                    .enumerate()
                    .filter(|(row, _)| rows.get(*row) == Some(&true))
                {
                    texts.push(crate::event::all_values_text(doc).as_deref());
                }
            } else {
                match self.reach(field) {
                    Reach::Nothing => texts.lengths = vec![ABSENT; self.selected(Some(rows))],
                    Reach::Column(name) => self.for_each_cell(name, Some(rows), |cell| {
                        match cell {
                            Some(cell) => cell.push_text(name, &mut texts)?,
                            None => texts.push(None),
                        }
                        Ok(())
                    })?,
                    Reach::Members(members) => {
                        self.with_members(&members, Some(rows), |_, doc| {
                            texts.push(lookup(doc, field).and_then(value_text).as_deref());
                        })?;
                    }
                }
            }
            out.push(texts);
        }
        Ok(out)
    }
}

/// The length of an absent value in [`FieldTexts`], as in a batch by
/// column (contract 0.2.4's `event-columns`).
pub const ABSENT: u32 = u32::MAX;

/// One field's values for a run of events, as a batch by column carries
/// them: a length per event ([`ABSENT`] for none) and the texts end to end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldTexts {
    /// Per event, its value's length in bytes, or [`ABSENT`].
    pub lengths: Vec<u32>,
    /// The values, end to end.
    pub text: String,
}

impl FieldTexts {
    /// Appends one event's value.
    pub fn push(&mut self, value: Option<&str>) {
        match value {
            Some(value) => {
                // A value is far below 4 GiB: a block's size bounds it.
                self.lengths
                    .push(u32::try_from(value.len()).unwrap_or(ABSENT - 1));
                self.text.push_str(value);
            }
            None => self.lengths.push(ABSENT),
        }
    }

    /// Events.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Each event's value, in order.
    pub fn values(&self) -> impl Iterator<Item = Option<&str>> {
        let mut at = 0usize;
        self.lengths.iter().map(move |&len| {
            if len == ABSENT {
                return None;
            }
            let end = at + len as usize;
            let value = self.text.get(at..end);
            at = end;
            value
        })
    }

    /// Appends `count` events of `from`, starting at the one whose text
    /// begins at byte `from_text` of `from.text` and event `from_event`;
    /// returns the byte after them.
    pub fn extend_from(
        &mut self,
        from: &FieldTexts,
        from_event: usize,
        count: usize,
        from_text: usize,
    ) -> usize {
        let lengths = from
            .lengths
            .get(from_event..from_event + count)
            .unwrap_or(&[]);
        let bytes: usize = lengths
            .iter()
            .filter(|&&len| len != ABSENT)
            .map(|&len| len as usize)
            .sum();
        self.lengths.extend_from_slice(lengths);
        let end = from_text + bytes;
        self.text
            .push_str(from.text.get(from_text..end).unwrap_or(""));
        end
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.lengths.clear();
        self.text.clear();
    }
}

/// Which columns a field path can reach in a block.
enum Reach<'f> {
    /// None: no event has it.
    Nothing,
    /// Exactly the top-level member of that name.
    Column(&'f str),
    /// Several members (dotted paths, EVTX prefixes): resolved per event.
    Members(Vec<&'f str>),
}

/// One event's non-null value of a field ([`ColumnBlock::for_each_found`]).
#[derive(Debug, Clone, Copy)]
pub enum Found<'v> {
    /// A scalar, as its text ([`value_text`]).
    Text(&'v str),
    /// An array or an object.
    Value(&'v Value),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Generator;
    use crate::event::event_timestamp_ms;
    use crate::prefilter::Projection;
    use crate::shard::segment::{BlockBuilder, decode_events};
    use serde_json::json;
    use std::time::Instant;

    fn generated(n: u64) -> Vec<Value> {
        Generator::new(n).map(|r| r.expect("generated")).collect()
    }

    fn timestamps(events: &[Value]) -> Vec<i64> {
        events
            .iter()
            .map(|e| event_timestamp_ms(e).unwrap_or(0))
            .collect()
    }

    /// Splits `events` as the store does: a block closes at
    /// [`crate::shard::segment::BLOCK_MAX_EVENTS`] events or
    /// [`crate::shard::segment::BLOCK_MAX_BYTES`] of JSON. Returns each block's
    /// events and its JSON block (on-disk bytes, payload length).
    fn store_blocks(events: &[Value]) -> Vec<(Vec<Value>, Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut builder = BlockBuilder::new(0);
        let mut current = Vec::new();
        for event in events {
            builder
                .push(event_timestamp_ms(event), event)
                .expect("push");
            current.push(event.clone());
            if builder.is_full() {
                let (header, bytes) = builder.finish().expect("finish");
                out.push((
                    std::mem::take(&mut current),
                    bytes,
                    header.payload_len as usize,
                ));
            }
        }
        if !builder.is_empty() {
            let (header, bytes) = builder.finish().expect("finish");
            out.push((current, bytes, header.payload_len as usize));
        }
        out
    }

    /// Text form of every event: serde_json's `Map` equality ignores member
    /// order, the text does not.
    fn texts(events: &[Value]) -> Vec<String> {
        events.iter().map(Value::to_string).collect()
    }

    fn assert_round_trip(events: &[Value]) -> Vec<u8> {
        let ts = timestamps(events);
        let bytes = ColumnBlock::encode(events, &ts).expect("encode");
        let block = ColumnBlock::parse(&bytes).expect("parse");
        assert_eq!(block.len(), events.len());
        let decoded = block.decode_all().expect("decode");
        let (got_ts, got): (Vec<i64>, Vec<Value>) = decoded.into_iter().unzip();
        assert_eq!(got_ts, ts);
        assert_eq!(got, events);
        assert_eq!(texts(&got), texts(events));
        assert_eq!(block.timestamps().expect("timestamps"), ts);
        bytes
    }

    fn assert_projects_like_json(events: &[Value], fields: &[&str]) {
        let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        let bytes = ColumnBlock::encode(events, &timestamps(events)).expect("encode");
        let block = ColumnBlock::parse(&bytes).expect("parse");
        let got = block.project(&fields).expect("project");
        let projection = Projection::new(&fields);
        assert_eq!(got.len(), events.len());
        for (row, (got, event)) in got.iter().zip(events).enumerate() {
            assert_eq!(
                got,
                &projection.project(event),
                "event {row} {event} fields {fields:?}"
            );
        }
    }

    fn edge_cases() -> Vec<Value> {
        vec![
            json!({"b": 1, "a": -2, "c": 1.5, "d": i64::MIN, "e": u64::MAX, "f": -0.0}),
            json!({"a": 3, "b": "x", "c": 1e300, "d": 9_007_199_254_740_993_i64, "e": 0.1}),
            json!({}),
            json!({"nested": {"z": 1, "a": [1, {"k": null}], "y": {}},
                   "arr": [], "s": "", "n": null, "t": true, "u": false}),
            json!({"id.orig_h": "10.0.0.1", "id": {"orig_h": "10.9.9.9", "resp_p": 53}}),
            json!({"id": {"orig_h": "10.9.9.9"}, "answers": ["a.example", "b.example"]}),
            json!({"userIdentity": {"userName": "pedro", "type": "IAMUser"},
                   "resources": [{"ARN": "arn:aws:s3:::b"}], "Computer": "PC1"}),
            json!({"Event": {"System": {"Computer": "RAW"}}, "Computer": "FLAT",
                   "TargetUserName": "bob", "EventID": 4625}),
            json!({"Computer": "PC2", "EventID": "4624", "unicode": "Jörg \u{1F600} \"q\"\n"}),
            json!({"a": [1, 2], "b": {"c": "d"}, "Computer": 7}),
            json!({"b": null, "a": null}),
            // An empty member name: no path (not even "") reaches it.
            json!({"": "empty name", "Computer": "PC3"}),
        ]
    }

    const FIELD_LISTS: &[&[&str]] = &[
        &["EventID", "Computer", "TargetUserName"],
        &[
            "a", "b", "c", "d", "e", "f", "n", "t", "u", "s", "arr", "nested",
        ],
        &[
            "id.orig_h",
            "id.resp_p",
            "id",
            "answers.0",
            "answers.1",
            "answers.2",
        ],
        &[
            "userIdentity.userName",
            "resources.0.ARN",
            "nested.a.1.k",
            "nested.y",
        ],
        &[
            "Event.System.Computer",
            "System.Computer",
            "EventData.TargetUserName",
            "Event.EventData.TargetUserName",
        ],
        &[
            "@values",
            "",
            "missing",
            "missing.deeper",
            "EventID",
            "EventID",
            "a.b",
        ],
    ];

    #[test]
    fn columnar_round_trips_edge_cases_in_member_order() {
        let events = edge_cases();
        assert_round_trip(&events);
        // Same members, different order: both orders survive.
        assert_round_trip(&[json!({"x": 1, "y": 2}), json!({"y": 2, "x": 1})]);
        assert_round_trip(&[]);
        // Many distinct strings (plain texts) next to few (dictionary).
        let many: Vec<Value> = (0..500)
            .map(|i| {
                let few = ["x", "y"][i % 2];
                json!({"uniq": format!("value-{i}"), "few": few, "i": i})
            })
            .collect();
        assert_round_trip(&many);
        let float = assert_round_trip(&[json!({"v": 1.0}), json!({"v": 1})]);
        let block = ColumnBlock::parse(&float).expect("parse");
        let decoded = block.decode_all().expect("decode");
        assert!(decoded[0].1["v"].is_f64() && decoded[1].1["v"].is_u64());
    }

    #[test]
    fn columnar_rejects_what_it_cannot_store() {
        assert!(ColumnBlock::encode(&[json!([1])], &[0]).is_err());
        assert!(ColumnBlock::encode(&[json!({})], &[]).is_err());
    }

    #[test]
    fn columnar_round_trips_generated_events_in_store_blocks() {
        let events = generated(6000);
        let blocks = store_blocks(&events);
        assert!(blocks.len() >= 2, "{}", blocks.len());
        for (block_events, _, _) in &blocks {
            assert_round_trip(block_events);
        }
    }

    #[test]
    fn columnar_projection_equals_projection_on_json() {
        let events = edge_cases();
        for fields in FIELD_LISTS {
            assert_projects_like_json(&events, fields);
        }
        let generated = generated(3000);
        let mut names: Vec<&str> = generated
            .iter()
            .flat_map(|e| e.as_object().into_iter().flat_map(|m| m.keys()))
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > 20, "{names:?}");
        assert_projects_like_json(&generated, &names);
        for fields in FIELD_LISTS {
            assert_projects_like_json(&generated, fields);
        }
        assert_projects_like_json(
            &generated,
            &[
                "Image",
                "CommandLine",
                "answers.0",
                "TTLs.1",
                "query",
                "@timestamp",
            ],
        );
    }

    /// Every JSON-lines log of the shared data set (normalised as ingest
    /// does), in store-sized blocks: whole events round-trip and every
    /// member, plus dotted and EVTX paths, projects as on the JSON.
    #[test]
    fn columnar_round_trips_and_projects_the_shared_data_set() {
        let Some(files) = quarry_testdata::shared_json_logs() else {
            return;
        };
        let mut events = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).expect("readable");
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let doc: Value = serde_json::from_str(line).expect("JSON line");
                events.push(crate::event::normalize(doc));
            }
        }
        assert!(events.len() > 1000, "only {} events", events.len());
        let mut names: Vec<String> = events
            .iter()
            .flat_map(|e| e.as_object().into_iter().flat_map(|m| m.keys().cloned()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut dotted: Vec<&str> = vec![
            "id.orig_h",
            "id.resp_h",
            "userIdentity.userName",
            "userIdentity.arn",
            "requestParameters.bucketName",
            "resources.0.ARN",
            "alert.signature",
            "Event.System.Computer",
            "Event.EventData.TargetUserName",
            "System.EventID",
            "@values",
        ];
        dotted.extend(["EventID", "Computer", "Image"]);
        let (mut checked, mut blocks) = (0, 0);
        for (block_events, _, _) in store_blocks(&events) {
            let bytes = assert_round_trip(&block_events);
            let block = ColumnBlock::parse(&bytes).expect("parse");
            for fields in [
                names.clone(),
                dotted.iter().map(|f| (*f).to_owned()).collect(),
            ] {
                let got = block.project(&fields).expect("project");
                let projection = Projection::new(&fields);
                for (got, event) in got.iter().zip(&block_events) {
                    assert_eq!(got, &projection.project(event), "{event}");
                    checked += 1;
                }
            }
            blocks += 1;
        }
        eprintln!(
            "columnar: {} shared events in {blocks} blocks, {checked} projections checked",
            events.len()
        );
    }

    fn try_everything(bytes: &[u8]) -> Result<(), BlockError> {
        let block = ColumnBlock::parse(bytes)?;
        block.timestamps()?;
        block.decode_all()?;
        let fields: Vec<String> = ["EventID", "id.orig_h", "answers.0", "Computer", "a"]
            .iter()
            .map(|f| (*f).to_owned())
            .collect();
        block.project(&fields)?;
        Ok(())
    }

    fn reseal(bytes: &mut [u8]) {
        let crc = crc32fast::hash(&bytes[9..]);
        bytes[5..9].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn columnar_damage_is_an_error_never_a_panic() {
        let mut events = edge_cases();
        events.extend(generated(300));
        let good = ColumnBlock::encode(&events, &timestamps(&events)).expect("encode");
        try_everything(&good).expect("intact block decodes");

        // Every truncation.
        for len in 0..good.len() {
            let err = try_everything(&good[..len]).expect_err("truncated block accepted");
            assert!(!err.to_string().is_empty());
        }
        // Flipped bytes: caught by the checksum (or the magic/version).
        let mut rng = crate::rng::SplitMix64(0x00C0_1A4B);
        for _ in 0..3000 {
            let mut bad = good.clone();
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] ^= 1 + rng.below(255) as u8;
            assert!(try_everything(&bad).is_err(), "flip at {at} accepted");
        }
        // The same with the checksum recomputed, so the structural checks
        // meet the damage: no panic, and most of it is found.
        let (mut found, mut tried) = (0, 0);
        for _ in 0..3000 {
            let mut bad = good.clone();
            for _ in 0..1 + rng.below(3) {
                let at = 9 + rng.below(bad.len() as u64 - 9) as usize;
                bad[at] ^= 1 + rng.below(255) as u8;
            }
            reseal(&mut bad);
            tried += 1;
            if try_everything(&bad).is_err() {
                found += 1;
            }
        }
        assert!(
            found * 2 > tried,
            "only {found} of {tried} damaged blocks refused"
        );

        // Damage the messages name.
        let mut versioned = good.clone();
        versioned[4] = 2;
        let err = try_everything(&versioned).expect_err("version 2");
        assert!(err.to_string().contains("version 2"), "{err}");
        let mut crc = good.clone();
        crc[20] ^= 0x40;
        let err = try_everything(&crc).expect_err("checksum");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(
            try_everything(b"QBK1")
                .expect_err("magic")
                .to_string()
                .contains("magic")
        );
    }

    /// Damage inside chunks, re-compressed and re-sealed, so only the
    /// chunk-level checks can catch it.
    #[test]
    fn columnar_damaged_chunk_contents_are_errors() {
        let events = vec![
            json!({"s": "x", "n": 5, "o": {"k": 1}}),
            json!({"s": "y", "n": -5, "f": 0.5}),
        ];
        let good = ColumnBlock::encode(&events, &[1, 2]).expect("encode");
        // Rebuild the block with one column chunk's raw bytes changed.
        let with_chunk = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| -> Vec<u8> {
            let block = ColumnBlock::parse(&good).expect("parse");
            let mut dir = Vec::new();
            let mut data = Vec::new();
            put_varint(&mut dir, block.len() as u64);
            let mut push = |dir: &mut Vec<u8>, raw: Vec<u8>| {
                let packed = compress(&raw).expect("zstd");
                put_varint(dir, packed.len() as u64);
                put_varint(dir, raw.len() as u64);
                data.extend_from_slice(&packed);
            };
            push(
                &mut dir,
                decompress(block.timestamps, block.timestamps_raw, "t").expect("t"),
            );
            push(
                &mut dir,
                decompress(block.shapes, block.shapes_raw, "s").expect("s"),
            );
            put_varint(&mut dir, block.columns.len() as u64);
            for (i, (n, _, _)) in block.columns.iter().enumerate() {
                put_bytes(&mut dir, n.as_bytes());
                let mut raw = block.column(i).expect("column").raw;
                if *n == name {
                    edit(&mut raw);
                }
                push(&mut dir, raw);
            }
            dir.extend_from_slice(&data);
            let mut out = MAGIC.to_vec();
            out.push(FORMAT_VERSION);
            out.extend_from_slice(&crc32fast::hash(&dir).to_le_bytes());
            out.extend_from_slice(&dir);
            out
        };
        // Unchanged rebuild decodes: the edits below are what breaks it.
        try_everything(&with_chunk("s", &|_| {})).expect("rebuilt block");
        type Edit = dyn Fn(&mut Vec<u8>);
        let cases: [(&str, &Edit, &str); 6] = [
            ("s", &|raw| raw[1] = 9, "unknown value tag 9"),
            ("s", &|raw| raw[0] = 0b111, "presence bits set past"),
            ("s", &|raw| raw.push(0), "trailing bytes"),
            ("s", &|raw| raw.truncate(raw.len() - 1), "cut short"),
            ("f", &|raw| raw[0] = 0b11, "shape lacks it"),
            ("o", &|raw| *raw.last_mut().expect("b") = b'x', "not JSON"),
        ];
        for (column, edit, message) in cases {
            let err = try_everything(&with_chunk(column, edit)).expect_err(message);
            assert!(err.to_string().contains(message), "{message}: {err}");
        }
    }

    /// Bytes per event and decode rates, columnar against the store's JSON
    /// blocks, on the benchmark generator's events in store-sized blocks.
    /// `QUARRY_COLUMNAR_BENCH_EVENTS` sets the event count (default 100,000).
    /// Prints the figures; run with `--run-ignored only` (dev or release).
    #[test]
    #[ignore = "measurement, prints figures"]
    fn columnar_bench_against_json_blocks() {
        let n: u64 = std::env::var("QUARRY_COLUMNAR_BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let events = generated(n);
        let blocks = store_blocks(&events);
        let encoded: Vec<Vec<u8>> = blocks
            .iter()
            .map(|(evs, _, _)| ColumnBlock::encode(evs, &timestamps(evs)).expect("encode"))
            .collect();
        let payloads: Vec<(&[u8], usize)> = blocks
            .iter()
            .map(|(_, bytes, payload_len)| {
                let payload = &bytes[bytes.len() - payload_len..];
                let raw_len = zstd::zstd_safe::get_frame_content_size(payload)
                    .expect("frame")
                    .expect("size") as usize;
                (payload, raw_len)
            })
            .collect();
        let json_payload: usize = blocks.iter().map(|(_, _, p)| p).sum();
        let json_block: usize = blocks.iter().map(|(_, b, _)| b.len()).sum();
        let stats_header = json_block - json_payload;
        let columnar: usize = encoded.iter().map(Vec::len).sum();
        let per = |bytes: usize| bytes as f64 / n as f64;
        let rate = |started: Instant| n as f64 / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut seen = 0;
        for (payload, raw_len) in &payloads {
            let raw = zstd::bulk::decompress(payload, *raw_len).expect("zstd");
            seen += decode_events(&raw).expect("json decode").len();
        }
        let json_rate = rate(started);
        assert_eq!(seen as u64, n);

        let started = Instant::now();
        let mut seen = 0;
        for bytes in &encoded {
            seen += ColumnBlock::parse(bytes)
                .and_then(|b| b.decode_all())
                .expect("columnar decode")
                .len();
        }
        let full_rate = rate(started);
        assert_eq!(seen as u64, n);

        let fields: Vec<String> = ["EventID", "Computer", "TargetUserName"]
            .iter()
            .map(|f| (*f).to_owned())
            .collect();
        let started = Instant::now();
        let mut seen = 0;
        for bytes in &encoded {
            seen += ColumnBlock::parse(bytes)
                .and_then(|b| b.project(&fields))
                .expect("columnar projection")
                .len();
        }
        let project_rate = rate(started);
        assert_eq!(seen as u64, n);

        let projection = Projection::new(&fields);
        let started = Instant::now();
        let mut seen = 0;
        for (payload, raw_len) in &payloads {
            let raw = zstd::bulk::decompress(payload, *raw_len).expect("zstd");
            for (_, doc) in decode_events(&raw).expect("json decode") {
                seen += projection.project(&doc).len();
            }
        }
        let json_project_rate = rate(started);
        assert_eq!(seen as u64, n * 3);

        let build = if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        };
        println!(
            "columnar bench ({build} build): {n} generated events in {} store blocks\n\
             bytes/event: JSON payload {:.1} (+{:.1} block header with statistics), \
             columnar {:.1}\n\
             full decode: JSON {json_rate:.0} events/s, columnar {full_rate:.0} events/s \
             ({:.2}x)\n\
             3-field projection (EventID, Computer, TargetUserName): JSON decode + \
             Projection {json_project_rate:.0} events/s, columnar {project_rate:.0} events/s \
             ({:.2}x)",
            blocks.len(),
            per(json_payload),
            per(stats_header),
            per(columnar),
            full_rate / json_rate,
            project_rate / json_project_rate,
        );
    }
}
