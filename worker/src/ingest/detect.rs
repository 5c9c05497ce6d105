//! Input formats, their detection, and one entry point to read any of them.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use super::auditd::{AuditdReader, looks_like_audit};
use super::evtx::EvtxReader;
use super::jsonl::JsonLinesReader;
use super::syslog::SyslogReader;
use super::zeek::{ZeekJsonReader, ZeekTsvReader};
use super::{IngestError, RecordResult};

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One JSON object per line (`jsonl`).
    JsonLines,
    /// Windows event log file (`evtx`).
    Evtx,
    /// Syslog / auth.log, RFC 3164 or RFC 5424 (`syslog`).
    Syslog,
    /// Zeek JSON log (`zeek-json`).
    ZeekJson,
    /// Zeek TSV log with its `#` header lines (`zeek-tsv`).
    ZeekTsv,
    /// Linux audit log, one `type=… msg=audit(…)` record per line (`auditd`).
    Auditd,
}

impl Format {
    /// Every format, in the order of [`Format::NAMES`].
    pub const ALL: [Format; 6] = [
        Format::JsonLines,
        Format::Evtx,
        Format::Syslog,
        Format::ZeekJson,
        Format::ZeekTsv,
        Format::Auditd,
    ];

    /// The names `--format` accepts.
    pub const NAMES: [&'static str; 6] =
        ["jsonl", "evtx", "syslog", "zeek-json", "zeek-tsv", "auditd"];

    /// The format's name, as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::JsonLines => "jsonl",
            Format::Evtx => "evtx",
            Format::Syslog => "syslog",
            Format::ZeekJson => "zeek-json",
            Format::ZeekTsv => "zeek-tsv",
            Format::Auditd => "auditd",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = IngestError;

    fn from_str(s: &str) -> Result<Self, IngestError> {
        let given = s.trim().to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.name() == given)
            .ok_or_else(|| IngestError::UnknownFormat {
                given: s.to_owned(),
            })
    }
}

/// How much of a file detection looks at.
const SNIFF_BYTES: usize = 64 << 10;

/// Detects the format of a file from its first bytes.
pub fn detect(path: &Path) -> Result<Format, IngestError> {
    let file = File::open(path).map_err(IngestError::io("open", path))?;
    let mut head = Vec::with_capacity(8192);
    file.take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(IngestError::io("read", path))?;
    Ok(detect_bytes(&head))
}

/// Detects the format of an input from its first bytes (up to 64 KiB are
/// enough): the EVTX magic `ElfFile\0`; a `#separator` (or `#fields`) header
/// line for Zeek TSV; a JSON object with `ts` and `uid` or `id.orig_h` for
/// Zeek JSON; a `<PRI>`, `Mmm dd hh:mm:ss` or RFC 3339 time followed by text
/// for syslog; `type=… msg=audit(` for a Linux audit log; anything else is
/// read as JSON lines.
pub fn detect_bytes(head: &[u8]) -> Format {
    if head.starts_with(b"ElfFile\0") {
        return Format::Evtx;
    }
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let text = String::from_utf8_lossy(head);
    let Some(first) = text
        .lines()
        .map(str::trim_end)
        .find(|l| !l.trim().is_empty())
    else {
        return Format::JsonLines;
    };
    if first.starts_with("#separator") || first.starts_with("#fields") {
        return Format::ZeekTsv;
    }
    if first.starts_with('{') {
        if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str(first)
            && doc.contains_key("ts")
            && ["uid", "id.orig_h", "id_orig_h", "id"]
                .iter()
                .any(|k| doc.contains_key(*k))
        {
            return Format::ZeekJson;
        }
        return Format::JsonLines;
    }
    if looks_like_audit(first) {
        return Format::Auditd;
    }
    if looks_like_syslog(first) {
        return Format::Syslog;
    }
    Format::JsonLines
}

fn looks_like_syslog(line: &str) -> bool {
    let bytes = line.as_bytes();
    // <PRI>
    if bytes.first() == Some(&b'<') {
        let digits = bytes[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        return (1..=3).contains(&digits) && bytes.get(1 + digits) == Some(&b'>');
    }
    // Mmm dd hh:mm:ss
    const MONTHS: [&str; 12] = [
        "Jan ", "Feb ", "Mar ", "Apr ", "May ", "Jun ", "Jul ", "Aug ", "Sep ", "Oct ", "Nov ",
        "Dec ",
    ];
    if let Some(month) = line.get(..4)
        && MONTHS.contains(&month)
    {
        let rest = line[4..].trim_start_matches(' ');
        let Some((day, rest)) = rest.split_once(' ') else {
            return false;
        };
        let time = rest.as_bytes();
        return day.parse::<u8>().is_ok_and(|d| (1..=31).contains(&d))
            && time.len() >= 8
            && time[2] == b':'
            && time[5] == b':'
            && [0, 1, 3, 4, 6, 7].iter().all(|&i| time[i].is_ascii_digit());
    }
    // RFC 3339 time, then a host and a message.
    if let Some((ts, rest)) = line.split_once(' ') {
        return ts.contains('T')
            && crate::event::parse_iso8601_ms(ts).is_some()
            && !rest.trim().is_empty();
    }
    false
}

/// Opens `path` in `format`, or in the detected format when `format` is
/// `None`, and returns the format and its records.
pub fn open(
    path: &Path,
    format: Option<Format>,
) -> Result<(Format, Box<dyn Iterator<Item = RecordResult> + Send>), IngestError> {
    let format = match format {
        Some(format) => format,
        None => detect(path)?,
    };
    let records: Box<dyn Iterator<Item = RecordResult> + Send> = match format {
        Format::JsonLines => Box::new(JsonLinesReader::open(path)?),
        Format::Evtx => Box::new(EvtxReader::open(path)?),
        Format::Syslog => Box::new(SyslogReader::open(path)?),
        Format::ZeekJson => Box::new(ZeekJsonReader::open(path)?),
        Format::ZeekTsv => Box::new(ZeekTsvReader::open(path)?),
        Format::Auditd => Box::new(AuditdReader::open(path)?),
    };
    Ok((format, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_lists_them() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        let err = "csv".parse::<Format>().unwrap_err().to_string();
        assert!(err.contains("\"csv\""), "{err}");
        for name in Format::NAMES {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn detects_from_first_bytes() {
        assert_eq!(detect_bytes(b"ElfFile\0\0\0"), Format::Evtx);
        assert_eq!(
            detect_bytes(b"type=SYSCALL msg=audit(1604994496.155:92733): arch=c000003e\n"),
            Format::Auditd
        );
        assert_eq!(
            detect_bytes(b"node=web01 type=EXECVE msg=audit(1.0:1): argc=1 a0=\"id\"\n"),
            Format::Auditd
        );
        assert_eq!(
            detect_bytes(b"#separator \\x09\n#set_separator\t,\n"),
            Format::ZeekTsv
        );
        assert_eq!(
            detect_bytes(b"{\"ts\":1.5,\"uid\":\"C1\",\"id.orig_h\":\"1.2.3.4\"}\n"),
            Format::ZeekJson
        );
        assert_eq!(
            detect_bytes(b"\xEF\xBB\xBF{\"EventID\":4625}\n"),
            Format::JsonLines
        );
        assert_eq!(
            detect_bytes(b"<34>1 2003-10-11T22:14:15.003Z h su - - - x\n"),
            Format::Syslog
        );
        assert_eq!(
            detect_bytes(b"Jan  5 01:02:03 host sshd[1]: x\n"),
            Format::Syslog
        );
        assert_eq!(
            detect_bytes(b"\n2024-05-01T10:00:00.123+02:00 host sudo: x\n"),
            Format::Syslog
        );
        assert_eq!(detect_bytes(b""), Format::JsonLines);
        assert_eq!(detect_bytes(b"hello world\n"), Format::JsonLines);
    }

    #[test]
    fn detects_and_opens_real_files() {
        let Some(data) = quarry_testdata::shared_data() else {
            return;
        };
        let local = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .expect("cargo sets CARGO_MANIFEST_DIR for tests"),
        )
        .join("tests/data");
        let cases = [
            (
                data.join("logs/windows/evtx/T1078_failed_logon_account_restriction_4625.evtx"),
                Format::Evtx,
            ),
            (
                data.join("logs/windows/evtx/T1078_failed_logon_account_restriction_4625.jsonl"),
                Format::JsonLines,
            ),
            (
                data.join("logs/network/zeek_tsv_lsass_campaign_01/conn.log"),
                Format::ZeekTsv,
            ),
            (
                data.join("logs/network/zeek_json_apt29_day1/NASHUA_conn.log"),
                Format::ZeekJson,
            ),
            (
                data.join("logs/linux/T1190_log4shell_jndi_sysmon_for_linux_syslog.jsonl"),
                Format::JsonLines,
            ),
            (local.join("auth.log"), Format::Syslog),
            (local.join("rfc5424.log"), Format::Syslog),
        ];
        for (path, format) in cases {
            assert_eq!(detect(&path).unwrap(), format, "{}", path.display());
            let (got, records) = open(&path, None).unwrap();
            assert_eq!(got, format);
            let mut n = 0;
            for r in records {
                r.unwrap_or_else(|m| panic!("{}: {}", m.position, m.error));
                n += 1;
            }
            assert!(n > 0, "{}", path.display());
        }
        let err = open(Path::new("/nonexistent/x.log"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/x.log"), "{err}");
        let err = open(&local.join("auth.log"), Some(Format::Evtx))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a readable Windows event log"), "{err}");
    }
}
