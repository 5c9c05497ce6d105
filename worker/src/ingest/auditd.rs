//! Linux audit logs: `/var/log/audit/audit.log`, `ausearch --raw` output and
//! audit records forwarded through syslog.
//!
//! A record is one line:
//! `[node=NAME ]type=TYPE msg=audit(SECONDS.MILLIS:SERIAL): key=value ...`,
//! optionally followed by the interpreted fields of `log_format=ENRICHED`
//! after a `0x1d` separator (`UID="root" SYSCALL=execve`). Every record
//! becomes one event, as Sigma's `product: linux, service: auditd` rules
//! expect (they test `type: EXECVE` with `a0`, `a1`, … of one record); the
//! records of one kernel event share `audit_serial`.
//!
//! Fields: `type`, `@timestamp`, `audit_serial`, `node` when given, and
//! every `key=value` of the record. Values in double quotes are unquoted;
//! the `msg='…'` of user-space records (`USER_AUTH`, `USER_LOGIN`, …) is
//! parsed into fields too (its own `msg`, if any, is kept as `msg`).
//! Untrusted strings that the kernel hex-encodes because they hold spaces or
//! control characters (`proctitle`, `EXECVE` arguments, `name`, `cwd`,
//! `comm`, `exe`, `key`) are decoded, with NUL separators (between
//! `proctitle` arguments) turned into spaces. On x86_64 records
//! (`arch=c000003e`) without an interpreted `SYSCALL`, the syscall number
//! is named in `SYSCALL` (`execve`, `connect`, `memfd_create`, …).

use serde_json::{Map, Value};

use super::jsonl::{LineRecords, ParseLine, overflow_error};
use crate::event::format_rfc3339_ms;

/// Fields whose unquoted value is the kernel's hex encoding of a string.
const ENCODED_FIELDS: &[&str] = &[
    "proctitle",
    "name",
    "cwd",
    "comm",
    "exe",
    "key",
    "data",
    "old-data",
];

/// x86_64 syscall numbers named in `SYSCALL` (the ones audit rules watch).
const X86_64_SYSCALLS: &[(u32, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (9, "mmap"),
    (10, "mprotect"),
    (41, "socket"),
    (42, "connect"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (49, "bind"),
    (50, "listen"),
    (56, "clone"),
    (57, "fork"),
    (58, "vfork"),
    (59, "execve"),
    (62, "kill"),
    (76, "truncate"),
    (77, "ftruncate"),
    (82, "rename"),
    (83, "mkdir"),
    (84, "rmdir"),
    (85, "creat"),
    (86, "link"),
    (87, "unlink"),
    (88, "symlink"),
    (90, "chmod"),
    (91, "fchmod"),
    (92, "chown"),
    (93, "fchown"),
    (94, "lchown"),
    (101, "ptrace"),
    (105, "setuid"),
    (106, "setgid"),
    (113, "setreuid"),
    (114, "setregid"),
    (117, "setresuid"),
    (119, "setresgid"),
    (126, "capset"),
    (157, "prctl"),
    (161, "chroot"),
    (165, "mount"),
    (166, "umount2"),
    (169, "reboot"),
    (170, "sethostname"),
    (175, "init_module"),
    (176, "delete_module"),
    (188, "setxattr"),
    (235, "utimes"),
    (250, "keyctl"),
    (257, "openat"),
    (260, "fchownat"),
    (263, "unlinkat"),
    (264, "renameat"),
    (268, "fchmodat"),
    (280, "utimensat"),
    (288, "accept4"),
    (310, "process_vm_readv"),
    (311, "process_vm_writev"),
    (313, "finit_module"),
    (316, "renameat2"),
    (319, "memfd_create"),
    (321, "bpf"),
    (322, "execveat"),
];

/// Whether `line` is an audit record (possibly after a `node=` prefix).
pub fn looks_like_audit(line: &str) -> bool {
    let line = strip_node(line).1;
    line.starts_with("type=") && line.contains(" msg=audit(")
}

fn strip_node(line: &str) -> (Option<&str>, &str) {
    match line
        .strip_prefix("node=")
        .and_then(|rest| rest.split_once(' '))
    {
        Some((node, rest)) => (Some(node), rest.trim_start()),
        None => (None, line),
    }
}

/// Parses one audit record into an event.
pub fn parse_record(line: &str) -> Result<Value, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (raw, enriched) = match line.split_once('\u{1d}') {
        Some((raw, enriched)) => (raw, Some(enriched)),
        None => (line, None),
    };
    let (node, rest) = strip_node(raw.trim());
    let rest = rest
        .strip_prefix("type=")
        .ok_or("an audit record starts with `type=`")?;
    let (record_type, rest) = rest
        .split_once(' ')
        .ok_or("an audit record has `msg=audit(…)` after its type")?;
    let rest = rest
        .trim_start()
        .strip_prefix("msg=audit(")
        .ok_or("an audit record has `msg=audit(SECONDS.MILLIS:SERIAL):` after its type")?;
    let (stamp, body) = rest
        .split_once("):")
        .ok_or("the audit stamp `msg=audit(SECONDS.MILLIS:SERIAL)` is not closed")?;
    let (time, serial) = stamp
        .split_once(':')
        .ok_or_else(|| format!("audit stamp {stamp:?} has no `:SERIAL`"))?;
    let timestamp_ms = parse_audit_time(time)
        .ok_or_else(|| format!("audit time {time:?} is not SECONDS.MILLIS"))?;
    let serial: u64 = serial
        .parse()
        .map_err(|_| format!("audit serial {serial:?} is not a number"))?;

    let mut doc = Map::new();
    doc.insert("type".into(), record_type.into());
    doc.insert("@timestamp".into(), format_rfc3339_ms(timestamp_ms).into());
    doc.insert("audit_serial".into(), serial.into());
    if let Some(node) = node {
        doc.insert("node".into(), node.into());
    }
    let is_execve = record_type == "EXECVE";
    for (key, value) in key_values(body) {
        match value {
            Token::Nested(inner) if key == "msg" => {
                for (inner_key, inner_value) in key_values(inner) {
                    let text = decode(inner_key, inner_value, false);
                    doc.entry(inner_key.to_owned()).or_insert(text.into());
                }
            }
            value => {
                let text = decode(key, value, is_execve);
                doc.insert(key.to_owned(), text.into());
            }
        }
    }
    if let Some(enriched) = enriched {
        for (key, value) in key_values(enriched) {
            doc.insert(key.to_owned(), decode(key, value, false).into());
        }
    }
    if !doc.contains_key("SYSCALL")
        && doc.get("arch").and_then(Value::as_str) == Some("c000003e")
        && let Some(name) = doc
            .get("syscall")
            .and_then(Value::as_str)
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(|n| X86_64_SYSCALLS.iter().find(|(number, _)| *number == n))
            .map(|(_, name)| *name)
    {
        doc.insert("SYSCALL".into(), name.into());
    }
    Ok(Value::Object(doc))
}

fn parse_audit_time(text: &str) -> Option<i64> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let seconds: i64 = seconds.parse().ok()?;
    let digits: String = fraction.chars().take(3).collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = format!("{digits:0<3}").parse().ok()?;
    seconds.checked_mul(1000)?.checked_add(millis)
}

/// A value as written in the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    /// `"text"`.
    Quoted(&'a str),
    /// `'k=v k=v'`: the fields of a user-space record.
    Nested(&'a str),
    /// Anything up to the next space.
    Bare(&'a str),
}

/// The `key=value` pairs of `text`, in order; stray words are skipped.
fn key_values(text: &str) -> Vec<(&str, Token<'_>)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let word_end = rest.find([' ', '=']).unwrap_or(rest.len());
        if rest[word_end..].starts_with('=') {
            let key = &rest[..word_end];
            let after = &rest[word_end + 1..];
            let (token, remaining) = match after.chars().next() {
                Some(quote @ ('"' | '\'')) => match after[1..].find(quote) {
                    Some(end) => {
                        let inner = &after[1..1 + end];
                        let token = if quote == '"' {
                            Token::Quoted(inner)
                        } else {
                            Token::Nested(inner)
                        };
                        (token, &after[end + 2..])
                    }
                    // An unclosed quote runs to the end of the record.
                    None => (Token::Quoted(&after[1..]), ""),
                },
                _ => {
                    let end = after.find(' ').unwrap_or(after.len());
                    (Token::Bare(&after[..end]), &after[end..])
                }
            };
            if !key.is_empty() {
                pairs.push((key, token));
            }
            rest = remaining.trim_start();
        } else {
            rest = rest[word_end..].trim_start();
        }
    }
    pairs
}

/// The text of a value: unquoted, and hex-decoded where the kernel encoded
/// an untrusted string.
fn decode(key: &str, token: Token<'_>, is_execve: bool) -> String {
    match token {
        Token::Quoted(text) | Token::Nested(text) => text.to_owned(),
        Token::Bare(text) => {
            let encoded = ENCODED_FIELDS.contains(&key) || (is_execve && is_execve_argument(key));
            match encoded.then(|| hex_string(text)).flatten() {
                Some(decoded) => decoded,
                None => text.to_owned(),
            }
        }
    }
}

/// `a0`, `a1`, … and the `a2[0]`, `a2_len` pieces of long arguments.
fn is_execve_argument(key: &str) -> bool {
    key.strip_prefix('a').is_some_and(|rest| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && (digits == rest.len() || rest[digits..].starts_with('['))
    })
}

/// `text` as hex-encoded bytes decoded to text (NULs as spaces), when it is
/// hex; `(null)` and odd-length or non-hex text stay as they are.
fn hex_string(text: &str) -> Option<String> {
    if text.is_empty()
        || !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let decoded = String::from_utf8_lossy(&bytes);
    Some(decoded.trim_end_matches('\0').replace('\0', " "))
}

/// One audit record per line.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditLine;

impl ParseLine for AuditLine {
    fn parse_line(&mut self, bytes: &[u8], overflow: bool) -> Result<Value, String> {
        if overflow {
            return Err(overflow_error());
        }
        parse_record(&String::from_utf8_lossy(bytes))
    }
}

/// Reads an audit log, one record per line.
pub type AuditdReader<R> = LineRecords<R, AuditLine>;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        parse_record(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn syscall_records_keep_every_field_and_name_the_syscall() {
        let doc = parse(
            r#"type=SYSCALL msg=audit(1604994496.155:92733): arch=c000003e syscall=59 success=yes exit=0 a0=558e251634a0 ppid=29002 pid=1631 auid=1000 uid=1000 tty=pts0 comm="arp" exe="/usr/sbin/arp" key=(null)"#,
        );
        assert_eq!(doc["type"], "SYSCALL");
        assert_eq!(doc["@timestamp"], "2020-11-10T07:48:16.155Z");
        assert_eq!(doc["audit_serial"], 92733);
        assert_eq!(doc["exe"], "/usr/sbin/arp");
        assert_eq!(doc["comm"], "arp");
        assert_eq!(
            doc["a0"], "558e251634a0",
            "SYSCALL arguments are numbers, not strings"
        );
        assert_eq!(doc["key"], "(null)");
        assert_eq!(doc["SYSCALL"], "execve");
        assert_eq!(doc["pid"], "1631");
    }

    #[test]
    fn execve_and_proctitle_strings_are_decoded() {
        let doc = parse(
            r#"type=EXECVE msg=audit(1604994496.155:92734): argc=3 a0="grep" a1="-v" a2=2F746D702F6D7920646972"#,
        );
        assert_eq!(
            (doc["a0"].as_str(), doc["a1"].as_str()),
            (Some("grep"), Some("-v"))
        );
        assert_eq!(doc["a2"], "/tmp/my dir", "hex-encoded because of the space");
        let doc = parse("type=PROCTITLE msg=audit(1604994496.155:92733): proctitle=617270002D61");
        assert_eq!(doc["proctitle"], "arp -a");
        let doc = parse(
            r#"type=PATH msg=audit(1.5:7): item=0 name="/usr/sbin/arp" inode=13181 mode=0100755"#,
        );
        assert_eq!(doc["@timestamp"], "1970-01-01T00:00:01.500Z");
        assert_eq!(doc["mode"], "0100755", "numbers stay as written");
    }

    #[test]
    fn user_space_records_enriched_fields_and_node_prefix() {
        let line = "node=web01 type=USER_AUTH msg=audit(1700000000.001:55): pid=812 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/sbin/sshd\" hostname=203.0.113.9 addr=203.0.113.9 terminal=ssh res=failed'\u{1d}UID=\"root\" AUID=\"unset\"";
        let doc = parse(line);
        assert_eq!(doc["node"], "web01");
        assert_eq!(doc["type"], "USER_AUTH");
        assert_eq!(doc["op"], "PAM:authentication");
        assert_eq!(doc["acct"], "root");
        assert_eq!(doc["addr"], "203.0.113.9");
        assert_eq!(doc["res"], "failed");
        assert_eq!(doc["UID"], "root");
        assert!(looks_like_audit(line));
        assert!(!looks_like_audit(
            "Nov 10 07:48:16 host sshd[1]: Accepted password"
        ));
    }

    #[test]
    fn broken_records_name_what_is_missing() {
        assert!(
            parse_record("hello")
                .unwrap_err()
                .contains("starts with `type=`")
        );
        assert!(
            parse_record("type=SYSCALL arch=x")
                .unwrap_err()
                .contains("msg=audit(")
        );
        assert!(
            parse_record("type=SYSCALL msg=audit(12.3:4 arch=x")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(
            parse_record("type=SYSCALL msg=audit(abc:4): arch=x")
                .unwrap_err()
                .contains("SECONDS.MILLIS")
        );
        assert!(
            parse_record("type=SYSCALL msg=audit(1.0:x): arch=x")
                .unwrap_err()
                .contains("serial")
        );
    }

    #[test]
    fn real_audit_logs_read_without_a_malformed_record() {
        for (file, command) in [
            (
                "logs/linux/T1018_arp_cache_discovery_auditd.log",
                ["arp", "-a"],
            ),
            (
                "logs/linux/T1027.001_binary_padding_dd_auditd.log",
                ["dd", "if=/dev/zero"],
            ),
        ] {
            let Some(path) = quarry_testdata::shared_file(file) else {
                return;
            };
            assert_eq!(
                super::super::detect(&path).unwrap(),
                super::super::Format::Auditd
            );
            let docs: Vec<Value> = AuditdReader::open(&path)
                .unwrap()
                .map(|r| r.unwrap_or_else(|m| panic!("{}: {}", m.position, m.error)))
                .collect();
            let lines = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count();
            assert_eq!(docs.len(), lines, "{file}");
            assert!(
                docs.iter().any(|d| d["type"] == "EXECVE"
                    && d["a0"] == command[0]
                    && d["a1"].as_str().is_some_and(|a| a.starts_with(command[1]))),
                "{file}: no EXECVE of {command:?}"
            );
            assert!(docs.iter().all(|d| {
                d["@timestamp"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("20"))
            }));
        }
    }

    #[test]
    fn the_reader_keeps_bad_lines_aside_with_their_position() {
        let input = "type=CWD msg=audit(1.0:1): cwd=\"/\"\n\ngarbage\ntype=CWD msg=audit(2.0:2): cwd=2F746D70\n";
        let records: Vec<super::super::RecordResult> =
            AuditdReader::new(input.as_bytes(), "audit.log").collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].as_ref().unwrap()["cwd"], "/");
        let bad = records[1].as_ref().unwrap_err();
        assert_eq!(bad.position.line, Some(3));
        assert_eq!(records[2].as_ref().unwrap()["cwd"], "/tmp");
    }
}
