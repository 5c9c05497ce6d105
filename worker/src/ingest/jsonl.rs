//! JSON lines: one JSON object per line.
//!
//! Lines are read with a bound ([`MAX_LINE_BYTES`]), so one runaway line
//! cannot take unbounded memory. A UTF-8 byte-order mark on the first line and
//! CRLF line ends are accepted, blank lines are skipped, and every document
//! goes through [`crate::event::normalize`] (EVTX-JSON exports come out flat).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::{IngestError, MAX_LINE_BYTES, Malformed, Position, RecordResult};

/// One line as [`LineReader`] read it.
pub(crate) struct Line<'a> {
    /// 1-based line number.
    pub number: u64,
    /// Byte offset of the line's start in the input.
    pub offset: u64,
    /// The line without BOM (first line) and without its `\n` / `\r\n`.
    pub bytes: &'a [u8],
    /// The line was longer than the limit; `bytes` holds only its start.
    pub overflow: bool,
}

/// A bounded line reader shared by the line-oriented formats.
pub(crate) struct LineReader<R> {
    input: R,
    buf: Vec<u8>,
    max: usize,
    number: u64,
    offset: u64,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(input: R) -> Self {
        Self::with_limit(input, MAX_LINE_BYTES)
    }

    pub(crate) fn with_limit(input: R, max: usize) -> Self {
        LineReader {
            input,
            buf: Vec::with_capacity(4096),
            max,
            number: 0,
            offset: 0,
        }
    }

    /// The next line, `None` at end of input. After an I/O error the caller
    /// should stop: the position of the failure is `(number + 1, offset)`.
    pub(crate) fn next_line(&mut self) -> Option<io::Result<Line<'_>>> {
        self.buf.clear();
        let mut consumed = 0usize;
        let mut overflow = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e)),
            };
            if available.is_empty() {
                break;
            }
            let (chunk_len, done) = match memchr_newline(available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            let room = self.max.saturating_sub(self.buf.len());
            if chunk_len > room {
                self.buf.extend_from_slice(&available[..room]);
                overflow = true;
            } else {
                self.buf.extend_from_slice(&available[..chunk_len]);
            }
            self.input.consume(chunk_len);
            consumed += chunk_len;
            if done {
                break;
            }
        }
        if consumed == 0 {
            return None;
        }
        self.number += 1;
        let offset = self.offset;
        self.offset += consumed as u64;
        let mut bytes: &[u8] = &self.buf;
        if self.number == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if !overflow {
            bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        }
        Some(Ok(Line {
            number: self.number,
            offset,
            bytes,
            overflow,
        }))
    }

    /// Line number and byte offset where the next line would start.
    pub(crate) fn next_position(&self) -> (u64, u64) {
        (self.number + 1, self.offset)
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// The `Malformed` that ends a stream after an I/O error.
pub(crate) fn io_malformed(source: &str, (line, offset): (u64, u64), e: &io::Error) -> Malformed {
    Malformed::new(
        Position::line(source, line, offset),
        format!("I/O error while reading: {e}; the rest of the input was not read"),
        b"",
    )
}

/// The error for a line longer than [`MAX_LINE_BYTES`].
pub(crate) fn overflow_error() -> String {
    format!(
        "line is longer than {MAX_LINE_BYTES} bytes; split the record or check the file is text"
    )
}

/// How a line-oriented format turns one line into an event.
pub trait ParseLine {
    /// Parses `bytes`, the line without its end (only its first
    /// [`MAX_LINE_BYTES`] when `overflow`); the error says why the line is
    /// malformed.
    fn parse_line(&mut self, bytes: &[u8], overflow: bool) -> Result<Value, String>;
}

/// The records of a line-oriented input: every non-blank line parsed by `P`,
/// a bad line kept aside as a [`Malformed`] with its position, an I/O error
/// ending the stream.
pub struct LineRecords<R, P> {
    lines: LineReader<R>,
    source: String,
    parser: P,
    done: bool,
}

impl<P: ParseLine + Default> LineRecords<BufReader<File>, P> {
    /// Opens a file.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let file = File::open(path).map_err(IngestError::io("open", path))?;
        Ok(Self::new(
            BufReader::with_capacity(256 << 10, file),
            path.display().to_string(),
        ))
    }
}

impl<R: BufRead, P: ParseLine + Default> LineRecords<R, P> {
    /// Reads `input`; `source` names it in positions.
    pub fn new(input: R, source: impl Into<String>) -> Self {
        Self::with_parser(input, source, P::default())
    }
}

impl<R: BufRead, P: ParseLine> LineRecords<R, P> {
    /// Reads `input` with `parser`; `source` names it in positions.
    pub fn with_parser(input: R, source: impl Into<String>, parser: P) -> Self {
        LineRecords {
            lines: LineReader::new(input),
            source: source.into(),
            parser,
            done: false,
        }
    }

    /// The parser, to adjust its settings before reading.
    pub fn parser_mut(&mut self) -> &mut P {
        &mut self.parser
    }
}

impl<R: BufRead, P: ParseLine> Iterator for LineRecords<R, P> {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        if self.done {
            return None;
        }
        loop {
            let next = self.lines.next_position();
            let line = match self.lines.next_line()? {
                Ok(line) => line,
                Err(e) => {
                    self.done = true;
                    return Some(Err(io_malformed(&self.source, next, &e)));
                }
            };
            if !line.overflow && line.bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                self.parser
                    .parse_line(line.bytes, line.overflow)
                    .map_err(|error| {
                        let position = Position::line(&self.source, line.number, line.offset);
                        Malformed::new(position, error, line.bytes)
                    }),
            );
        }
    }
}

/// One JSON object per line, normalised ([`crate::event::normalize`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLine;

impl ParseLine for JsonLine {
    fn parse_line(&mut self, bytes: &[u8], overflow: bool) -> Result<Value, String> {
        parse_json_object(bytes, overflow).map(crate::event::normalize)
    }
}

/// Reads JSON lines from any buffered input.
pub type JsonLinesReader<R> = LineRecords<R, JsonLine>;

/// Parses one line as a JSON object; the error says why it is malformed.
pub fn parse_json_object(record: &[u8], overflow: bool) -> Result<Value, String> {
    if overflow {
        return Err(overflow_error());
    }
    let text = std::str::from_utf8(record)
        .map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))?;
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let found = match doc {
        Value::Object(ref map) => return crate::shard::check_flattening(map).map(|()| doc),
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Err(format!("expected a JSON object per line, found {found}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Vec<RecordResult> {
        JsonLinesReader::new(input, "test.jsonl").collect()
    }

    #[test]
    fn reads_objects_with_bom_crlf_and_blank_lines() {
        let out = read(b"\xEF\xBB\xBF{\"a\":1}\r\n\r\n   \n{\"b\":2}");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap()["a"], 1);
        assert_eq!(out[1].as_ref().unwrap()["b"], 2);
    }

    #[test]
    fn malformed_lines_report_line_and_offset() {
        let out = read(b"{\"a\":1}\ngarbage here\n[1,2]\n{\"b\":\n{\"c\":3}\n");
        assert_eq!(out.len(), 5);
        let bad = out[1].as_ref().unwrap_err();
        assert_eq!(bad.position.line, Some(2));
        assert_eq!(bad.position.byte_offset, Some(8));
        assert_eq!(bad.raw, "garbage here");
        assert!(bad.error.contains("not valid JSON"), "{}", bad.error);
        let arr = out[2].as_ref().unwrap_err();
        assert_eq!(arr.position.line, Some(3));
        assert_eq!(arr.position.byte_offset, Some(21));
        assert!(arr.error.contains("array"));
        assert_eq!(out[3].as_ref().unwrap_err().position.line, Some(4));
        assert_eq!(out[4].as_ref().unwrap()["c"], 3);
    }

    #[test]
    fn invalid_utf8_and_overlong_lines_are_malformed() {
        let out = read(b"{\"a\":\"\xFF\"}\n");
        assert!(out[0].as_ref().unwrap_err().error.contains("UTF-8"));

        let mut long = b"{\"a\":\"".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100));
        long.extend_from_slice(b"\"}\n{\"b\":1}\n");
        let reader = JsonLinesReader {
            lines: LineReader::with_limit(&long[..], 32),
            source: "long".into(),
            parser: JsonLine,
            done: false,
        };
        let out: Vec<_> = reader.collect();
        assert_eq!(out.len(), 2);
        let bad = out[0].as_ref().unwrap_err();
        assert!(bad.error.contains("longer than"));
        assert_eq!(bad.raw_len, 32);
        assert_eq!(out[1].as_ref().unwrap()["b"], 1);
    }

    #[test]
    fn evtx_json_documents_are_normalised() {
        let line = br#"{"Event":{"System":{"EventID":4625,"Channel":"Security","Computer":"PC1"},"EventData":{"TargetUserName":"bob"}}}"#;
        let out = read(line);
        let doc = out[0].as_ref().unwrap();
        assert_eq!(doc["EventID"], 4625);
        assert_eq!(doc["TargetUserName"], "bob");
    }

    #[test]
    fn reads_the_shared_syslog_jsonl_datasets() {
        for name in [
            "logs/linux/T1190_log4shell_jndi_auoms_auditd_syslog.jsonl",
            "logs/linux/T1190_log4shell_jndi_sysmon_for_linux_syslog.jsonl",
        ] {
            let Some(path) = quarry_testdata::shared_file(name) else {
                return;
            };
            let reader = JsonLinesReader::open(&path).unwrap();
            let mut n = 0;
            for record in reader {
                let doc = record.unwrap_or_else(|m| panic!("{}: {}", m.position, m.error));
                assert!(doc.get("SyslogMessage").is_some(), "{doc}");
                n += 1;
            }
            assert!(n > 10, "{name}: {n} records");
        }
    }
}
