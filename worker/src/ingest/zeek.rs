//! Zeek logs, in both of Zeek's writers' formats.
//!
//! * JSON (`LogAscii::use_json`): one object per line, read like JSON lines;
//!   `ts` (epoch seconds, or an ISO-8601 string) also becomes `@timestamp`.
//! * TSV, the classic ASCII writer: `#separator`, `#set_separator`,
//!   `#empty_field`, `#unset_field`, `#path`, `#fields` and `#types` header
//!   lines, then one tab-separated row per entry. A field whose value is the
//!   unset marker (`-`) is left out; the empty marker (`(empty)`) is an empty
//!   string (an empty array for containers); `set[...]` and `vector[...]` are
//!   split into arrays; `time`, `interval` and `double` are numbers (and `ts`
//!   also `@timestamp`, RFC 3339 UTC); `count`, `int` and `port` are integers;
//!   `bool` `T`/`F` are booleans; `\xHH` escapes are decoded. Field names are
//!   kept as Zeek writes them (`id.orig_h`), and `#path` becomes `_path`. A
//!   file may hold several header blocks (concatenated logs).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{Map, Number, Value};

use super::jsonl::{JsonLinesReader, LineReader, io_malformed, overflow_error};
use super::{IngestError, Malformed, Position, RecordResult};
use crate::event::{format_rfc3339_ms, parse_timestamp_ms};

/// Adds `@timestamp` from `ts` when the document has none.
fn add_timestamp(doc: &mut Map<String, Value>) {
    if doc.contains_key("@timestamp") {
        return;
    }
    let ms = match doc.get("ts") {
        Some(Value::Number(n)) => n.as_f64().map(|s| (s * 1000.0).round() as i64),
        Some(Value::String(s)) => parse_timestamp_ms(s),
        _ => None,
    };
    if let Some(ms) = ms {
        doc.insert("@timestamp".into(), format_rfc3339_ms(ms).into());
    }
}

/// Reads Zeek JSON logs.
pub struct ZeekJsonReader<R> {
    inner: JsonLinesReader<R>,
}

impl ZeekJsonReader<BufReader<File>> {
    /// Opens a Zeek JSON log.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        Ok(ZeekJsonReader {
            inner: JsonLinesReader::open(path)?,
        })
    }
}

impl<R: BufRead> ZeekJsonReader<R> {
    /// Reads `input`; `source` names it in positions.
    pub fn new(input: R, source: impl Into<String>) -> Self {
        ZeekJsonReader {
            inner: JsonLinesReader::new(input, source),
        }
    }
}

impl<R: BufRead> Iterator for ZeekJsonReader<R> {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        Some(self.inner.next()?.map(|mut doc| {
            if let Value::Object(map) = &mut doc {
                add_timestamp(map);
            }
            doc
        }))
    }
}

/// The header state of a TSV log.
#[derive(Debug, Clone)]
struct Header {
    separator: String,
    set_separator: String,
    empty: String,
    unset: String,
    path: Option<String>,
    fields: Vec<String>,
    types: Vec<String>,
    /// Why this block's header was refused, if it was.
    refused: Option<String>,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            separator: "\t".into(),
            set_separator: ",".into(),
            empty: "(empty)".into(),
            unset: "-".into(),
            path: None,
            fields: Vec::new(),
            types: Vec::new(),
            refused: None,
        }
    }
}

/// Decodes Zeek's `\xHH` escapes.
fn unescape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains("\\x") {
        return s.into();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && let Some(hex) = s.get(i + 2..i + 4)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

/// Converts one value of Zeek type `ty`.
fn convert(ty: &str, raw: &str) -> Result<Value, String> {
    let text = unescape(raw);
    let text = text.as_ref();
    match ty {
        "time" | "interval" | "double" => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{text:?} is not a number")),
        "count" | "port" => text
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("{text:?} is not a non-negative integer")),
        "int" => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{text:?} is not an integer")),
        "bool" => match text {
            "T" => Ok(true.into()),
            "F" => Ok(false.into()),
            _ => Err(format!("{text:?} is not a bool (T or F)")),
        },
        _ => Ok(text.into()),
    }
}

/// Reads Zeek TSV logs.
pub struct ZeekTsvReader<R> {
    lines: LineReader<R>,
    source: String,
    header: Header,
    done: bool,
}

impl ZeekTsvReader<BufReader<File>> {
    /// Opens a Zeek TSV log.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let file = File::open(path).map_err(IngestError::io("open", path))?;
        Ok(Self::new(
            BufReader::with_capacity(256 << 10, file),
            path.display().to_string(),
        ))
    }
}

impl<R: BufRead> ZeekTsvReader<R> {
    /// Reads `input`; `source` names it in positions.
    pub fn new(input: R, source: impl Into<String>) -> Self {
        ZeekTsvReader {
            lines: LineReader::new(input),
            source: source.into(),
            header: Header::default(),
            done: false,
        }
    }

    /// Applies a `#` header line; an error says why it is malformed.
    fn header_line(&mut self, line: &str) -> Result<(), String> {
        if let Some(value) = line.strip_prefix("#separator ") {
            // A new block starts: forget the previous block's header.
            self.header = Header {
                separator: unescape(value.trim()).into_owned(),
                ..Header::default()
            };
            if self.header.separator.is_empty() {
                return Err(self.refuse("#separator is empty"));
            }
            return Ok(());
        }
        if let Some(reason) = &self.header.refused {
            return Err(format!("header line ignored: {reason}"));
        }
        let sep = self.header.separator.as_str();
        let (name, value) = line.split_once(sep).unwrap_or((line, ""));
        match name {
            "#set_separator" => {
                self.header.set_separator = unescape(value).into_owned();
                // An empty separator would split every set into characters.
                if self.header.set_separator.is_empty() {
                    return Err(self.refuse("#set_separator is empty"));
                }
            }
            "#empty_field" => self.header.empty = unescape(value).into_owned(),
            "#unset_field" => self.header.unset = unescape(value).into_owned(),
            "#path" => self.header.path = Some(unescape(value).into_owned()),
            "#fields" => {
                self.header.fields = value.split(sep).map(|f| unescape(f).into_owned()).collect();
                self.header.types.clear();
            }
            "#types" => {
                let types: Vec<String> = value.split(sep).map(str::to_owned).collect();
                if types.len() != self.header.fields.len() {
                    return Err(format!(
                        "#types has {} entries but #fields has {}",
                        types.len(),
                        self.header.fields.len()
                    ));
                }
                self.header.types = types;
            }
            // #open, #close and comments carry nothing for the events.
            _ => {}
        }
        Ok(())
    }

    /// Refuses the current header block: its rows are malformed until the
    /// next `#separator` line starts a new block.
    fn refuse(&mut self, what: &str) -> String {
        let reason = format!(
            "{what}; the rows of this header block cannot be split, fix the header and \
             ingest the file again"
        );
        self.header.refused = Some(reason.clone());
        reason
    }

    fn row(&self, line: &str) -> Result<Value, String> {
        let header = &self.header;
        if let Some(reason) = &header.refused {
            return Err(format!("the header of this block was refused: {reason}"));
        }
        if header.fields.is_empty() {
            return Err(
                "data row before any #fields header line; is this a Zeek TSV log with its header?"
                    .into(),
            );
        }
        let values: Vec<&str> = line.split(header.separator.as_str()).collect();
        if values.len() != header.fields.len() {
            return Err(format!(
                "row has {} columns but #fields names {}",
                values.len(),
                header.fields.len()
            ));
        }
        let mut doc = Map::new();
        if let Some(path) = &header.path {
            doc.insert("_path".into(), path.clone().into());
        }
        for (i, (name, raw)) in header.fields.iter().zip(values).enumerate() {
            if raw == header.unset {
                continue;
            }
            let ty = header.types.get(i).map_or("string", String::as_str);
            let container = ty
                .strip_prefix("set[")
                .or_else(|| ty.strip_prefix("vector["))
                .and_then(|t| t.strip_suffix(']'));
            let value = match container {
                Some(_) if raw == header.empty => Value::Array(Vec::new()),
                Some(inner) => Value::Array(
                    raw.split(header.set_separator.as_str())
                        .map(|item| convert(inner, item))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("field {name} ({ty}): {e}"))?,
                ),
                None if raw == header.empty => Value::String(String::new()),
                None => convert(ty, raw).map_err(|e| format!("field {name} ({ty}): {e}"))?,
            };
            doc.insert(name.clone(), value);
        }
        add_timestamp(&mut doc);
        Ok(Value::Object(doc))
    }
}

impl<R: BufRead> Iterator for ZeekTsvReader<R> {
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
            let position = Position::line(&self.source, line.number, line.offset);
            if line.overflow {
                return Some(Err(Malformed::new(position, overflow_error(), line.bytes)));
            }
            if line.bytes.is_empty() {
                continue;
            }
            let raw = line.bytes.to_vec();
            let text = String::from_utf8_lossy(&raw);
            let result = if text.starts_with('#') {
                self.header_line(&text).map(|()| None)
            } else {
                self.row(&text).map(Some)
            };
            match result {
                Ok(None) => continue,
                Ok(Some(doc)) => return Some(Ok(doc)),
                Err(error) => return Some(Err(Malformed::new(position, error, &raw))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tduration\tlocal_orig\ttunnel_parents\tservice\tnote\n#types\ttime\tstring\taddr\tport\tinterval\tbool\tset[string]\tstring\tstring\n";

    fn read(body: &str) -> Vec<RecordResult> {
        let input = format!("{HEADER}{body}");
        ZeekTsvReader::new(input.as_bytes(), "conn.log").collect::<Vec<_>>()
    }

    #[test]
    fn tsv_types_unset_empty_and_sets() {
        let out = read(
            "1692161622.036086\tCabc\t10.0.0.1\t52605\t-\tT\ta,b\\x2cc\t(empty)\tx\\x09y\n#close\t2023\n",
        );
        assert_eq!(out.len(), 1);
        let doc = out[0].as_ref().unwrap();
        assert_eq!(doc["ts"].as_f64(), Some(1692161622.036086));
        assert_eq!(doc["@timestamp"], "2023-08-16T04:53:42.036Z");
        assert_eq!(doc["id.orig_p"], 52605);
        assert!(doc.get("duration").is_none());
        assert_eq!(doc["local_orig"], true);
        assert_eq!(doc["tunnel_parents"], serde_json::json!(["a", "b,c"]));
        assert_eq!(doc["service"], "");
        assert_eq!(doc["note"], "x\ty");
        assert_eq!(doc["_path"], "conn");
    }

    #[test]
    fn tsv_malformed_rows_report_their_line() {
        let out = read(
            "1.0\tC1\t10.0.0.1\t1\t-\tF\t-\t-\t-\n1.0\tC2\ttoo few\n1.0\tC3\t10.0.0.1\tnotaport\t-\tF\t-\t-\t-\n2.0\tC4\t10.0.0.1\t1\t-\tX\t-\t-\t-\n3.0\tC5\t10.0.0.1\t1\t0.5\tF\t(empty)\t-\t-\n",
        );
        assert_eq!(out.len(), 5);
        assert!(out[0].is_ok());
        let header_len = HEADER.len() as u64;
        let bad = out[1].as_ref().unwrap_err();
        assert_eq!(bad.position.line, Some(9));
        assert_eq!(bad.position.byte_offset, Some(header_len + 28));
        assert!(
            bad.error.contains("3 columns but #fields names 9"),
            "{}",
            bad.error
        );
        assert_eq!(bad.raw, "1.0\tC2\ttoo few");
        let bad = out[2].as_ref().unwrap_err();
        assert_eq!(bad.position.line, Some(10));
        assert!(bad.error.contains("id.orig_p (port)"), "{}", bad.error);
        assert!(out[3].as_ref().unwrap_err().error.contains("bool"));
        let doc = out[4].as_ref().unwrap();
        assert_eq!(doc["tunnel_parents"], serde_json::json!([]));
        assert_eq!(doc["duration"], 0.5);
    }

    #[test]
    fn rows_without_header_are_malformed() {
        let out: Vec<_> = ZeekTsvReader::new(&b"1.0\tC1\n"[..], "x").collect();
        let bad = out[0].as_ref().unwrap_err();
        assert_eq!(bad.position.line, Some(1));
        assert!(bad.error.contains("#fields"));
    }

    #[test]
    fn json_lines_get_a_timestamp() {
        let input = b"{\"ts\":1588205199.82437,\"uid\":\"C1\",\"id_orig_h\":\"10.0.1.6\"}\nnot json\n{\"ts\":\"2020-04-30T00:06:39.824Z\",\"uid\":\"C2\"}\n";
        let out: Vec<_> = ZeekJsonReader::new(&input[..], "z").collect();
        assert_eq!(
            out[0].as_ref().unwrap()["@timestamp"],
            "2020-04-30T00:06:39.824Z"
        );
        assert_eq!(out[1].as_ref().unwrap_err().position.line, Some(2));
        assert_eq!(
            out[2].as_ref().unwrap()["@timestamp"],
            "2020-04-30T00:06:39.824Z"
        );
    }

    #[test]
    fn real_zeek_tsv_logs() {
        let Some(dir) = quarry_testdata::shared_data() else {
            return;
        };
        let dir = dir.join("logs/network/zeek_tsv_lsass_campaign_01");
        let mut total = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let rows = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count();
            let docs: Vec<Value> = ZeekTsvReader::open(&path)
                .unwrap()
                .map(|r| r.unwrap_or_else(|m| panic!("{}: {}", m.position, m.error)))
                .collect();
            assert_eq!(docs.len(), rows, "{}", path.display());
            for doc in &docs {
                assert!(
                    doc["@timestamp"]
                        .as_str()
                        .unwrap()
                        .starts_with("2023-08-16"),
                    "{doc}"
                );
                assert!(doc.get("_path").is_some());
            }
            total += docs.len();
        }
        assert!(total > 200, "{total}");
        let conn: Vec<Value> = ZeekTsvReader::open(&dir.join("conn.log"))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(conn[0]["id.orig_h"], "192.168.1.41");
        assert_eq!(conn[0]["id.resp_p"], 53);
        assert_eq!(conn[0]["local_orig"], true);
        assert!(conn[0].get("duration").is_none());
        let dns: Vec<Value> = ZeekTsvReader::open(&dir.join("dns.log"))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(dns.iter().any(|d| d["answers"].is_array()));
    }

    #[test]
    fn real_zeek_json_logs() {
        let Some(dir) = quarry_testdata::shared_data() else {
            return;
        };
        let dir = dir.join("logs/network/zeek_json_apt29_day1");
        let mut total = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            for r in ZeekJsonReader::open(&path).unwrap() {
                let doc = r.unwrap_or_else(|m| panic!("{}: {}", m.position, m.error));
                assert!(
                    doc["@timestamp"].as_str().unwrap().starts_with("2020-0"),
                    "{doc}"
                );
                total += 1;
            }
        }
        assert!(total > 500, "{total}");
    }
}
