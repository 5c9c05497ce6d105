//! Output files: events are collected per file as drafts (time, label,
//! body), then sorted by time, numbered and written in their format —
//! mordor-style JSON lines for Windows, RFC 3339 syslog for auth.log, Zeek's
//! TSV for Zeek — while the label of every record is collected for the
//! manifest.
//!
//! JSON is written field by field in the order the generator gave, not
//! through `serde_json::Map` (whose order depends on a cargo feature another
//! crate of the build may switch on), so the bytes are the same in every
//! build.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::format_rfc3339_ms;

/// What produced a record: background noise, a planted intrusion or a
/// benign look-alike (indexes into the manifest's lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Label {
    Noise,
    Intrusion(usize),
    LookAlike(usize),
}

/// The Windows event log channel of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Channel {
    Security,
    System,
    Sysmon,
}

/// A record before it has its final timestamp and record number.
#[derive(Debug)]
pub(crate) enum Body {
    /// A Windows event: its channel and fields (`EventID`, `Channel`,
    /// `Hostname`, … in order); `@timestamp`, `RecordNumber` and, for
    /// Sysmon, `UtcTime` are added when written.
    Win {
        channel: Channel,
        fields: Vec<(&'static str, Value)>,
    },
    /// A syslog line: program, pid and message (time and host are added).
    Syslog {
        program: &'static str,
        pid: u32,
        message: String,
    },
    /// A Zeek row: every column after `ts`, already formatted.
    Zeek(Vec<String>),
}

#[derive(Debug)]
pub(crate) struct Draft {
    /// Event time, ms since the epoch.
    pub t: i64,
    /// Microseconds within the millisecond (Zeek and syslog show them).
    pub us: u16,
    /// Generation order: ties keep it.
    pub seq: u64,
    pub label: Label,
    pub body: Body,
}

/// The format of an output file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FileFormat {
    /// Windows events, one flat JSON object per line.
    WindowsJson,
    /// RFC 3339 syslog (`/var/log/auth.log` as current rsyslog writes it).
    Syslog,
    /// A Zeek log in the classic TSV format.
    ZeekTsv(&'static ZeekLog),
}

impl FileFormat {
    /// The worker's name for the format (`quarry worker ingest --format`).
    pub(crate) fn ingest_name(self) -> &'static str {
        match self {
            FileFormat::WindowsJson => "jsonl",
            FileFormat::Syslog => "syslog",
            FileFormat::ZeekTsv(_) => "zeek-tsv",
        }
    }
}

/// The header of one Zeek log.
#[derive(Debug)]
pub(crate) struct ZeekLog {
    pub path: &'static str,
    pub fields: &'static [&'static str],
    pub types: &'static [&'static str],
}

pub(crate) const ZEEK_CONN: ZeekLog = ZeekLog {
    path: "conn",
    fields: &[
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
        "service",
        "duration",
        "orig_bytes",
        "resp_bytes",
        "conn_state",
        "local_orig",
        "local_resp",
        "missed_bytes",
        "history",
        "orig_pkts",
        "orig_ip_bytes",
        "resp_pkts",
        "resp_ip_bytes",
        "tunnel_parents",
    ],
    types: &[
        "time",
        "string",
        "addr",
        "port",
        "addr",
        "port",
        "enum",
        "string",
        "interval",
        "count",
        "count",
        "string",
        "bool",
        "bool",
        "count",
        "string",
        "count",
        "count",
        "count",
        "count",
        "set[string]",
    ],
};

pub(crate) const ZEEK_DNS: ZeekLog = ZeekLog {
    path: "dns",
    fields: &[
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
        "trans_id",
        "rtt",
        "query",
        "qclass",
        "qclass_name",
        "qtype",
        "qtype_name",
        "rcode",
        "rcode_name",
        "AA",
        "TC",
        "RD",
        "RA",
        "Z",
        "answers",
        "TTLs",
        "rejected",
    ],
    types: &[
        "time",
        "string",
        "addr",
        "port",
        "addr",
        "port",
        "enum",
        "count",
        "interval",
        "string",
        "count",
        "string",
        "count",
        "string",
        "count",
        "string",
        "bool",
        "bool",
        "bool",
        "bool",
        "count",
        "vector[string]",
        "vector[interval]",
        "bool",
    ],
};

pub(crate) const ZEEK_HTTP: ZeekLog = ZeekLog {
    path: "http",
    fields: &[
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "trans_depth",
        "method",
        "host",
        "uri",
        "referrer",
        "version",
        "user_agent",
        "origin",
        "request_body_len",
        "response_body_len",
        "status_code",
        "status_msg",
        "info_code",
        "info_msg",
        "tags",
        "username",
        "password",
        "proxied",
        "orig_fuids",
        "orig_filenames",
        "orig_mime_types",
        "resp_fuids",
        "resp_filenames",
        "resp_mime_types",
    ],
    types: &[
        "time",
        "string",
        "addr",
        "port",
        "addr",
        "port",
        "count",
        "string",
        "string",
        "string",
        "string",
        "string",
        "string",
        "string",
        "count",
        "count",
        "count",
        "string",
        "count",
        "string",
        "set[enum]",
        "string",
        "string",
        "set[string]",
        "vector[string]",
        "vector[string]",
        "vector[string]",
        "vector[string]",
        "vector[string]",
        "vector[string]",
    ],
};

/// One output file while it is generated.
#[derive(Debug)]
pub(crate) struct Stream {
    /// Path relative to the output directory.
    pub path: String,
    /// Index of the host whose log it is (`None` for the network sensor).
    pub host: Option<usize>,
    /// Log source (`wineventlog`, `sysmon`, `auth`, `zeek-conn`, …).
    pub source: &'static str,
    pub format: FileFormat,
    /// The shard the file belongs in.
    pub shard: String,
    /// The host name written into syslog lines.
    pub syslog_host: String,
    pub drafts: Vec<Draft>,
}

/// A written file.
#[derive(Debug)]
pub(crate) struct Written {
    pub bytes: Vec<u8>,
    pub events: u64,
    pub sha256: String,
    /// Record indexes (0-based, in file order) of every labelled record.
    pub labels: BTreeMap<Label, Vec<u64>>,
}

/// `2026-11-16T09:42:10.123456+00:00`, as rsyslog's high-precision format.
fn rfc3339_us(t: i64, us: u16) -> String {
    let ms = format_rfc3339_ms(t);
    let base = ms.strip_suffix('Z').unwrap_or(&ms);
    format!("{base}{us:03}+00:00")
}

/// `2026-11-16 09:42:10.123`, Sysmon's `UtcTime`.
pub(crate) fn sysmon_time(t: i64) -> String {
    let ms = format_rfc3339_ms(t);
    ms.trim_end_matches('Z').replacen('T', " ", 1)
}

/// `1794787200.123456`, Zeek's `ts`.
pub(crate) fn zeek_time(t: i64, us: u16) -> String {
    format!("{}.{:03}{:03}", t.div_euclid(1000), t.rem_euclid(1000), us)
}

/// `2026-11-16-00-00-00`, Zeek's `#open`/`#close`.
fn zeek_stamp(t: i64) -> String {
    let ms = format_rfc3339_ms(t);
    ms.get(..19).unwrap_or(&ms).replace(['T', ':'], "-")
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json writes a `&str` as a JSON string; it cannot fail into a Vec.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl Stream {
    /// Sorts, numbers and writes the records. `open`/`close` bound the
    /// capture for Zeek's header; `record_base` is the first record number
    /// of each Windows channel.
    pub(crate) fn write(mut self, open: i64, close: i64, record_base: u64) -> Written {
        self.drafts.sort_by_key(|d| (d.t, d.us, d.seq));
        let mut out: Vec<u8> = Vec::with_capacity(self.drafts.len() * 400);
        let mut labels: BTreeMap<Label, Vec<u64>> = BTreeMap::new();
        if let FileFormat::ZeekTsv(log) = self.format {
            out.extend_from_slice(
                b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n",
            );
            out.extend_from_slice(
                format!("#path\t{}\n#open\t{}\n", log.path, zeek_stamp(open)).as_bytes(),
            );
            out.extend_from_slice(
                format!(
                    "#fields\t{}\n#types\t{}\n",
                    log.fields.join("\t"),
                    log.types.join("\t")
                )
                .as_bytes(),
            );
        }
        let mut records: BTreeMap<Channel, u64> = BTreeMap::new();
        let events = self.drafts.len() as u64;
        for (index, draft) in self.drafts.into_iter().enumerate() {
            if draft.label != Label::Noise {
                labels.entry(draft.label).or_default().push(index as u64);
            }
            match draft.body {
                Body::Win { channel, fields } => {
                    let record = records.entry(channel).or_insert(record_base);
                    *record += 1;
                    out.extend_from_slice(b"{\"@timestamp\":");
                    push_json_string(&mut out, &format_rfc3339_ms(draft.t));
                    for (key, value) in &fields {
                        out.push(b',');
                        push_json_string(&mut out, key);
                        out.push(b':');
                        let _ = serde_json::to_writer(&mut out, value);
                    }
                    out.extend_from_slice(format!(",\"RecordNumber\":{record}").as_bytes());
                    if channel == Channel::Sysmon {
                        out.extend_from_slice(b",\"UtcTime\":");
                        push_json_string(&mut out, &sysmon_time(draft.t));
                    }
                    out.extend_from_slice(b"}\n");
                }
                Body::Syslog {
                    program,
                    pid,
                    message,
                } => {
                    out.extend_from_slice(
                        format!(
                            "{} {} {program}[{pid}]: {message}\n",
                            rfc3339_us(draft.t, draft.us),
                            self.syslog_host
                        )
                        .as_bytes(),
                    );
                }
                Body::Zeek(columns) => {
                    out.extend_from_slice(zeek_time(draft.t, draft.us).as_bytes());
                    for column in &columns {
                        out.push(b'\t');
                        out.extend_from_slice(column.as_bytes());
                    }
                    out.push(b'\n');
                }
            }
        }
        if matches!(self.format, FileFormat::ZeekTsv(_)) {
            out.extend_from_slice(format!("#close\t{}\n", zeek_stamp(close)).as_bytes());
        }
        let sha256 = hex::encode(Sha256::digest(&out));
        Written {
            bytes: out,
            events,
            sha256,
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats_are_the_real_ones() {
        let t = 1_794_787_200_000 + 9 * 3_600_000 + 42 * 60_000 + 10_123;
        assert_eq!(rfc3339_us(t, 456), "2026-11-16T09:42:10.123456+00:00");
        assert_eq!(sysmon_time(t), "2026-11-16 09:42:10.123");
        assert_eq!(zeek_time(t, 7), "1794822130.123007");
        assert_eq!(zeek_stamp(t), "2026-11-16-09-42-10");
    }
}
