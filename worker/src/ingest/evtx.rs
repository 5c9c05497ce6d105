//! Windows event logs (`.evtx`) through the `evtx` crate.
//!
//! The file is read one 64 KiB chunk at a time (the unit the format and the
//! crate work in), each record rendered to the crate's JSON and passed through
//! [`crate::event::normalize`], so System fields and EventData come out flat
//! under their own names (`EventID`, `Channel`, `Computer`, `TargetUserName`,
//! `IpAddress`, `Image`, `CommandLine`, ...), exactly as the `.jsonl` exports
//! of the same logs do.
//!
//! A record that cannot be read becomes a [`Malformed`] whose
//! [`Position::record`] is the record's `EventRecordID` when the crate knows
//! it, and whose [`Position::byte_offset`] is the chunk's (or the record's)
//! offset in the file. A file cut short inside a chunk yields the records
//! before the cut and a `Malformed` that says where the file ends.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use evtx::err::EvtxError;
use evtx::{EvtxChunkData, ParserSettings};

use super::{IngestError, Malformed, Position, RecordResult};

/// Size of the file header before the first chunk.
const FILE_HEADER_SIZE: u64 = 4096;
/// Size of a chunk.
const CHUNK_SIZE: usize = 64 << 10;
/// Smallest piece of a chunk that holds its header.
const CHUNK_HEADER_SIZE: usize = 512;

/// Streams the records of an EVTX file.
pub struct EvtxReader<R = File> {
    input: R,
    source: String,
    settings: Arc<ParserSettings>,
    next_chunk: u64,
    pending: VecDeque<RecordResult>,
    done: bool,
}

impl EvtxReader<File> {
    /// Opens an EVTX file, checking its file header.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let file = File::open(path).map_err(IngestError::io("open", path))?;
        Self::new(file, path.display().to_string()).map_err(|reason| IngestError::Evtx {
            path: path.to_path_buf(),
            reason,
        })
    }
}

impl<R: Read + Seek> EvtxReader<R> {
    /// Reads an EVTX file from a seekable input; `source` names it in
    /// positions. Fails (with the reason) when the file header is unreadable.
    pub fn new(mut input: R, source: impl Into<String>) -> Result<Self, String> {
        input
            .seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot seek: {e}"))?;
        evtx::EvtxFileHeader::from_stream(&mut input).map_err(|e| error_chain(&e))?;
        Ok(EvtxReader {
            input,
            source: source.into(),
            settings: Arc::new(ParserSettings::default().indent(false)),
            next_chunk: 0,
            pending: VecDeque::new(),
            done: false,
        })
    }

    fn pos_at(&self, record: Option<u64>, byte_offset: u64) -> Position {
        Position {
            source: self.source.clone(),
            line: None,
            byte_offset: Some(byte_offset),
            record,
        }
    }

    /// Reads the next non-empty chunk into `pending`; false at end of file.
    fn fill(&mut self) -> bool {
        loop {
            let number = self.next_chunk;
            let offset = FILE_HEADER_SIZE + number * CHUNK_SIZE as u64;
            let mut data = Vec::with_capacity(CHUNK_SIZE);
            let read = self.input.seek(SeekFrom::Start(offset)).and_then(|_| {
                (&mut self.input)
                    .take(CHUNK_SIZE as u64)
                    .read_to_end(&mut data)
            });
            self.next_chunk += 1;
            match read {
                Err(e) => {
                    self.pending.push_back(Err(self.io_error(offset, &e)));
                    self.done = true;
                    return true;
                }
                Ok(0) => return false,
                Ok(_) => {}
            }
            if data.iter().all(|&b| b == 0) {
                // Unused chunk space in a log that is not full.
                if data.len() < CHUNK_SIZE {
                    return false;
                }
                continue;
            }
            let truncated = data.len() < CHUNK_SIZE;
            let got = data.len();
            if truncated {
                self.done = true;
                if got < CHUNK_HEADER_SIZE {
                    self.pending.push_back(Err(Malformed::new(
                        self.pos_at(None, offset),
                        format!(
                            "file is truncated: it ends {got} bytes into chunk {number}, \
                             inside the chunk header; the records of this chunk are lost"
                        ),
                        &data,
                    )));
                    return true;
                }
                // Read what the partial chunk holds: the records before the
                // cut are intact.
                data.resize(CHUNK_SIZE, 0);
            }
            self.read_chunk(number, offset, data);
            if truncated {
                self.pending.push_back(Err(Malformed::new(
                    self.pos_at(None, offset + got as u64),
                    format!(
                        "file is truncated: it ends {got} bytes into chunk {number} \
                         (a chunk is {CHUNK_SIZE} bytes); records past the cut are lost"
                    ),
                    b"",
                )));
            }
            return true;
        }
    }

    fn read_chunk(&mut self, number: u64, offset: u64, data: Vec<u8>) {
        let mut chunk_data = match EvtxChunkData::new(data, false) {
            Ok(chunk) => chunk,
            Err(e) => {
                let error = format!("chunk {number} is unreadable: {}", error_chain(&e));
                self.pending
                    .push_back(Err(Malformed::new(self.pos_at(None, offset), error, b"")));
                return;
            }
        };
        chunk_data.number = Some(number);
        let mut chunk = match chunk_data.parse(self.settings.clone()) {
            Ok(chunk) => chunk,
            Err(e) => {
                let error = format!("chunk {number} is unreadable: {}", error_chain(&e));
                let position = self.pos_at(None, offset);
                self.pending
                    .push_back(Err(Malformed::new(position, error, b"")));
                return;
            }
        };
        let mut out = Vec::new();
        for record in chunk.iter() {
            let result = match record {
                Ok(record) => {
                    let id = record.event_record_id;
                    let record_offset = offset + record.binxml_offset;
                    match record.into_json_value() {
                        Ok(json) => Ok(crate::event::normalize(json.data)),
                        Err(e) => Err((Some(id), record_offset, error_chain(&e))),
                    }
                }
                Err(e) => {
                    let (id, at) = error_location(&e);
                    Err((id, at.map_or(offset, |at| offset + at), error_chain(&e)))
                }
            };
            out.push(result);
        }
        drop(chunk);
        for result in out {
            let item = result.map_err(|(id, at, error)| {
                Malformed::new(
                    self.pos_at(id, at),
                    format!("record cannot be read: {error}"),
                    b"",
                )
            });
            self.pending.push_back(item);
        }
    }

    fn io_error(&self, offset: u64, e: &io::Error) -> Malformed {
        Malformed::new(
            self.pos_at(None, offset),
            format!("I/O error while reading: {e}; the rest of the file was not read"),
            b"",
        )
    }
}

/// The record id and in-chunk offset an error names, where it names them.
fn error_location(e: &EvtxError) -> (Option<u64>, Option<u64>) {
    match e {
        EvtxError::FailedToParseRecord { record_id, .. } => (Some(*record_id), None),
        EvtxError::FailedToReadRecordAt { offset, .. } => (None, Some(*offset)),
        _ => (None, None),
    }
}

/// An error and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.truncate(text.trim_end_matches('.').len());
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

impl<R: Read + Seek> Iterator for EvtxReader<R> {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done || !self.fill() {
                self.done = true;
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use serde_json::Value;

    use super::*;
    use crate::ingest::jsonl::JsonLinesReader;

    const SIGMA_FIELDS: &[&str] = &[
        "EventID",
        "Channel",
        "Computer",
        "Provider_Name",
        "EventRecordID",
        "Level",
        "Task",
        "Keywords",
        "TargetUserName",
        "TargetDomainName",
        "SubjectUserName",
        "IpAddress",
        "IpPort",
        "LogonType",
        "Status",
        "SubStatus",
        "ProcessName",
        "NewProcessName",
        "CommandLine",
        "ServiceName",
        "ShareName",
        "RelativeTargetName",
        "ObjectName",
        "Properties",
        "TicketEncryptionType",
        "ServiceFileName",
        "Data",
    ];

    fn evtx_files() -> Vec<std::path::PathBuf> {
        let Some(dir) = quarry_testdata::shared_data() else {
            return Vec::new();
        };
        let mut files: Vec<_> = std::fs::read_dir(dir.join("logs/windows/evtx"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "evtx"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn real_evtx_files_match_their_jsonl_conversions() {
        let files = evtx_files();
        for path in &files {
            let evtx: Vec<Value> = EvtxReader::open(path)
                .unwrap()
                .map(|r| r.unwrap_or_else(|m| panic!("{}: {}", m.position, m.error)))
                .collect();
            let jsonl: Vec<Value> = JsonLinesReader::open(&path.with_extension("jsonl"))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert!(!evtx.is_empty(), "{}", path.display());
            assert_eq!(evtx.len(), jsonl.len(), "{}", path.display());
            for (a, b) in evtx.iter().zip(&jsonl) {
                // The crate renders SystemTime with 100 ns precision, the
                // conversions were made with microseconds: same instant.
                let time = |d: &Value| {
                    d["TimeCreated"]
                        .as_str()
                        .and_then(crate::event::parse_iso8601_ms)
                };
                assert_eq!(time(a), time(b), "{} TimeCreated", path.display());
                assert!(time(a).is_some());
                for field in SIGMA_FIELDS {
                    assert_eq!(
                        a.get(*field),
                        b.get(*field),
                        "{} field {field}",
                        path.display()
                    );
                }
                // Field for field: every field of the conversion, same value.
                // GUID-typed values are the one rendering difference: the
                // crate writes them as Windows does (`{54849625-...-3e3b0328c30d}`),
                // the conversions (an older crate) as `54849625-...-3E3B0328C30D`.
                let b_map = b.as_object().unwrap();
                for (key, value) in b_map {
                    if key == "TimeCreated" {
                        continue;
                    }
                    let got = a.get(key);
                    let same = got == Some(value)
                        || got
                            .and_then(Value::as_str)
                            .zip(value.as_str())
                            .is_some_and(|(x, y)| {
                                x.len() == 38
                                    && x.starts_with('{')
                                    && x[1..37].eq_ignore_ascii_case(y)
                            });
                    assert!(same, "{} field {key}: {got:?} vs {value:?}", path.display());
                }
                assert_eq!(
                    a.as_object().unwrap().len(),
                    b_map.len(),
                    "{}",
                    path.display()
                );
                assert!(a.get("EventID").is_some() && a.get("Channel").is_some());
                assert!(a.get("Event").is_none(), "not flattened: {a}");
            }
        }
    }

    #[test]
    fn truncated_evtx_keeps_records_before_the_cut_and_reports_it() {
        let Some(path) = evtx_files().into_iter().next() else {
            return;
        };
        let bytes = std::fs::read(&path).unwrap();
        let whole = EvtxReader::new(Cursor::new(bytes.clone()), "whole")
            .unwrap()
            .count();
        let cut = 4096 + 10_000;
        let out: Vec<_> = EvtxReader::new(Cursor::new(bytes[..cut].to_vec()), "cut")
            .unwrap()
            .collect();
        let last = out.last().unwrap().as_ref().unwrap_err();
        assert!(last.error.contains("truncated"), "{}", last.error);
        assert_eq!(last.position.byte_offset, Some(cut as u64));
        let kept = out.iter().filter(|r| r.is_ok()).count();
        assert!(kept > 0 && kept < whole, "{kept} of {whole}");
        // Cut inside the chunk header: one Malformed at the chunk.
        let out: Vec<_> = EvtxReader::new(Cursor::new(bytes[..4096 + 100].to_vec()), "hdr")
            .unwrap()
            .collect();
        assert_eq!(out.len(), 1);
        let bad = out[0].as_ref().unwrap_err();
        assert_eq!(bad.position.byte_offset, Some(4096));
        assert!(bad.error.contains("chunk 0"), "{}", bad.error);
    }

    #[test]
    fn corrupt_chunk_and_bad_header_are_reported() {
        let Some(path) = evtx_files().into_iter().next() else {
            return;
        };
        let mut bytes = std::fs::read(&path).unwrap();
        // Overwrite the chunk magic.
        bytes[4096..4104].copy_from_slice(b"garbage!");
        let out: Vec<_> = EvtxReader::new(Cursor::new(bytes.clone()), "bad")
            .unwrap()
            .collect();
        let bad = out[0].as_ref().unwrap_err();
        assert_eq!(bad.position.byte_offset, Some(4096));
        assert!(bad.error.contains("chunk 0"), "{}", bad.error);

        // Damage the records of a chunk: every record still ends as a result.
        let mut damaged = std::fs::read(&path).unwrap();
        for b in &mut damaged[4096 + 0x2000..4096 + 0x2400] {
            *b = 0xAB;
        }
        let out: Vec<_> = EvtxReader::new(Cursor::new(damaged), "damaged")
            .unwrap()
            .collect();
        let whole = EvtxReader::new(Cursor::new(std::fs::read(&path).unwrap()), "x")
            .unwrap()
            .count();
        let errors: Vec<&Malformed> = out.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(!errors.is_empty() && out.len() < whole + errors.len());
        assert!(out.iter().filter(|r| r.is_ok()).count() > 0);
        for bad in &errors {
            assert!(bad.position.record.is_some() || bad.position.byte_offset > Some(4096 + 512));
            assert!(
                bad.error.starts_with("record cannot be read"),
                "{}",
                bad.error
            );
        }

        assert!(EvtxReader::new(Cursor::new(b"not an evtx file".to_vec()), "x").is_err());
    }
}
