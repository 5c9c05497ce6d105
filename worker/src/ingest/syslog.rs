//! Syslog and Linux auth.log: RFC 5424 and RFC 3164 (BSD) lines.
//!
//! * RFC 5424: `<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID [SD...] MSG`. `-`
//!   is the nil value; each structured-data parameter becomes a field named
//!   `<SD-ID>.<name>` (`origin.ip`, `exampleSDID@32473.eventID`), repeated
//!   parameters an array.
//! * RFC 3164: `<PRI>Mmm dd hh:mm:ss host tag[pid]: message`, with or without
//!   `<PRI>` (files such as `/var/log/auth.log` have none), and the RFC 3339
//!   timestamp that current rsyslog writes in its place. The BSD timestamp has
//!   no year and no zone: it is read as UTC in a reference year (the current
//!   year unless [`SyslogParser::with_year`] says otherwise), and a month that
//!   goes back by more than half a year (`Dec 31` then `Jan 1`) starts the
//!   next year.
//!
//! Fields: `@timestamp` (RFC 3339, UTC), `host`, `program` (and `app_name`
//! for RFC 5424), `pid`, `msgid`, `facility` and `severity` (names, with
//! `facility_code` / `severity_code`) when the line has a PRI, and `message`.
//! Messages of `sshd` get `sshd_event` (`failed_password`,
//! `accepted_publickey`, `invalid_user`, `connection_closed`, ...), `user`,
//! `source_ip`, `source_port` and, where the line says, `auth_method`,
//! `invalid_user`, `ssh_key_type`, `ssh_key_fingerprint`; `sudo` messages get
//! `sudo_event`, `user`, `sudo_target_user`, `sudo_command`, `sudo_tty`,
//! `sudo_pwd`; `CRON` messages `user` and `cron_command`. Linux audit records
//! forwarded through syslog (`audispd: type=EXECVE msg=audit(…): …`) get the
//! record's fields as the `auditd` reader parses them, its time as
//! `audit_time`.

use std::io::BufRead;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::jsonl::{LineRecords, ParseLine, overflow_error};
use crate::event::{format_rfc3339_ms, parse_iso8601_ms};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The current year (UTC).
pub fn current_year() -> i32 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    format_rfc3339_ms(now_ms)[..4].parse().unwrap_or(1970)
}

/// Parses syslog lines one at a time, carrying the year of BSD timestamps
/// from line to line.
#[derive(Debug, Clone)]
pub struct SyslogParser {
    year: i32,
    last_month: Option<u32>,
}

impl Default for SyslogParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SyslogParser {
    /// A parser whose BSD timestamps start in the current year.
    pub fn new() -> Self {
        Self::with_year(current_year())
    }

    /// A parser whose BSD timestamps start in `year`.
    pub fn with_year(year: i32) -> Self {
        SyslogParser {
            year,
            last_month: None,
        }
    }

    /// The year the next BSD timestamp is read in (before rollover).
    pub fn year(&self) -> i32 {
        self.year
    }

    /// Parses one line (without its line end) into an event document.
    pub fn parse_line(&mut self, line: &str) -> Result<Value, String> {
        let mut out = Map::new();
        let mut rest = line.trim_end();
        let pri = if rest.starts_with('<') {
            let (pri, after) = parse_pri(rest)?;
            rest = after;
            Some(pri)
        } else {
            None
        };
        if pri.is_some()
            && let Some(after) = rest.strip_prefix("1 ")
        {
            parse_5424(after, pri, &mut out)?;
        } else {
            self.parse_3164(rest, pri, &mut out)?;
        }
        enrich(&mut out);
        Ok(Value::Object(out))
    }

    fn parse_3164(
        &mut self,
        line: &str,
        pri: Option<u8>,
        out: &mut Map<String, Value>,
    ) -> Result<(), String> {
        let (ms, rest) = if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let (ts, rest) = line.split_once(' ').unwrap_or((line, ""));
            let ms =
                parse_iso8601_ms(ts).ok_or_else(|| format!("timestamp {ts:?} is not RFC 3339"))?;
            (ms, rest)
        } else {
            self.bsd_timestamp(line)?
        };
        out.insert("@timestamp".into(), format_rfc3339_ms(ms).into());
        let rest = rest.trim_start_matches(' ');
        // The host is absent when the first word is already the tag.
        let (first, after_first) = rest.split_once(' ').unwrap_or((rest, ""));
        let rest = if first.is_empty() || first.ends_with(':') || first.contains('[') {
            rest
        } else {
            out.insert("host".into(), first.into());
            after_first
        };
        insert_pri(pri, out);
        let (tag, message) = split_tag(rest);
        if let Some((program, pid)) = tag {
            out.insert("program".into(), program.into());
            if let Some(pid) = pid {
                out.insert("pid".into(), number_or_string(pid));
            }
        }
        out.insert("message".into(), message.into());
        Ok(())
    }

    /// Reads `Mmm dd hh:mm:ss` and returns its time and the rest of the line.
    fn bsd_timestamp<'a>(&mut self, line: &'a str) -> Result<(i64, &'a str), String> {
        let bad = || {
            format!(
                "no syslog timestamp: expected `<PRI>1 ...` (RFC 5424), `Mmm dd hh:mm:ss` \
                 (RFC 3164) or an RFC 3339 time at the start of {:?}",
                line.get(..line.len().min(40)).unwrap_or(line)
            )
        };
        let month = MONTHS
            .iter()
            .position(|m| line.get(..3) == Some(*m))
            .ok_or_else(bad)? as u32
            + 1;
        let rest = line[3..].strip_prefix(' ').ok_or_else(bad)?;
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let (day, rest) = rest.split_once(' ').ok_or_else(bad)?;
        let time = rest.get(..8).ok_or_else(bad)?;
        let mut rest = &rest[8..];
        // Some daemons add fractional seconds: `Mmm dd hh:mm:ss.ffffff`.
        let mut fraction = "";
        if let Some(after) = rest.strip_prefix('.') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                fraction = &rest[..digits + 1];
                rest = &after[digits..];
            }
        }
        let day: u32 = day.parse().map_err(|_| bad())?;
        if let Some(last) = self.last_month
            && month + 6 < last
        {
            self.year += 1;
        }
        self.last_month = Some(month);
        let iso = format!("{:04}-{month:02}-{day:02}T{time}{fraction}Z", self.year);
        let ms = parse_iso8601_ms(&iso).ok_or_else(|| {
            format!(
                "invalid date or time {:?} in year {}",
                &line[..line.len() - rest.len()],
                self.year
            )
        })?;
        Ok((ms, rest))
    }
}

fn parse_pri(line: &str) -> Result<(u8, &str), String> {
    let window = &line.as_bytes()[1..line.len().min(6)];
    let end = window
        .iter()
        .position(|&b| b == b'>')
        .ok_or_else(|| "`<` at the start of the line does not open a `<PRI>`".to_owned())?
        + 1;
    let digits = &line[1..end];
    let pri: u8 = digits
        .parse()
        .ok()
        .filter(|p| *p <= 191 && !digits.is_empty())
        .ok_or_else(|| format!("invalid PRI <{digits}>: expected 0 to 191"))?;
    Ok((pri, &line[end + 1..]))
}

fn insert_pri(pri: Option<u8>, out: &mut Map<String, Value>) {
    if let Some(pri) = pri {
        let (facility, severity) = (usize::from(pri / 8), usize::from(pri % 8));
        out.insert("facility".into(), FACILITIES[facility].into());
        out.insert("facility_code".into(), facility.into());
        out.insert("severity".into(), SEVERITIES[severity].into());
        out.insert("severity_code".into(), severity.into());
    }
}

fn number_or_string(s: &str) -> Value {
    s.parse::<u64>()
        .map_or_else(|_| Value::from(s), Value::from)
}

/// Splits `tag[pid]: message`; no tag when the line has none.
#[allow(clippy::type_complexity)]
fn split_tag(rest: &str) -> (Option<(&str, Option<&str>)>, &str) {
    let end = rest.find(['[', ':', ' ']).unwrap_or(rest.len());
    let tag = &rest[..end];
    if tag.is_empty() {
        return (None, rest);
    }
    let after = &rest[end..];
    if let Some(after) = after.strip_prefix('[')
        && let Some((pid, after)) = after.split_once(']')
        && let Some(message) = after.strip_prefix(':')
    {
        return (
            Some((tag, Some(pid))),
            message.strip_prefix(' ').unwrap_or(message),
        );
    }
    if let Some(message) = after.strip_prefix(':') {
        return (
            Some((tag, None)),
            message.strip_prefix(' ').unwrap_or(message),
        );
    }
    (None, rest)
}

fn parse_5424(line: &str, pri: Option<u8>, out: &mut Map<String, Value>) -> Result<(), String> {
    let mut parts = line.splitn(5, ' ');
    let mut next = |what: &str| {
        parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("RFC 5424 line ends before its {what}"))
    };
    let ts = next("TIMESTAMP")?;
    let host = next("HOSTNAME")?;
    let app = next("APP-NAME")?;
    let procid = next("PROCID")?;
    let rest = parts.next().unwrap_or("");
    let (msgid, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if msgid.is_empty() {
        return Err("RFC 5424 line ends before its MSGID".into());
    }
    if ts != "-" {
        let ms = parse_iso8601_ms(ts).ok_or_else(|| format!("TIMESTAMP {ts:?} is not RFC 3339"))?;
        out.insert("@timestamp".into(), format_rfc3339_ms(ms).into());
    }
    if host != "-" {
        out.insert("host".into(), host.into());
    }
    if app != "-" {
        out.insert("program".into(), app.into());
        out.insert("app_name".into(), app.into());
    }
    if procid != "-" {
        out.insert("pid".into(), number_or_string(procid));
    }
    if msgid != "-" {
        out.insert("msgid".into(), msgid.into());
    }
    insert_pri(pri, out);
    let message = if let Some(after) = rest.strip_prefix('-') {
        after
    } else if rest.starts_with('[') {
        parse_structured_data(rest, out)?
    } else {
        return Err("RFC 5424 STRUCTURED-DATA must be `-` or `[...]`".into());
    };
    let message = message.strip_prefix(' ').unwrap_or(message);
    let message = message.strip_prefix('\u{FEFF}').unwrap_or(message);
    out.insert("message".into(), message.into());
    Ok(())
}

/// Parses `[id name="value" ...]...` into fields; returns the rest.
fn parse_structured_data<'a>(
    mut rest: &'a str,
    out: &mut Map<String, Value>,
) -> Result<&'a str, String> {
    while let Some(element) = rest.strip_prefix('[') {
        let id_end = element
            .find([' ', ']'])
            .ok_or("unterminated STRUCTURED-DATA element")?;
        let id = &element[..id_end];
        if id.is_empty() {
            return Err("STRUCTURED-DATA element without an SD-ID".into());
        }
        let mut cur = &element[id_end..];
        loop {
            if let Some(after) = cur.strip_prefix(']') {
                rest = after;
                break;
            }
            cur = cur
                .strip_prefix(' ')
                .ok_or_else(|| format!("malformed STRUCTURED-DATA in [{id}"))?;
            let (name, after) = cur
                .split_once("=\"")
                .ok_or_else(|| format!("SD-PARAM in [{id}] is not name=\"value\""))?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => break,
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("unterminated value of {name} in [{id}]"))?;
            let key = format!("{id}.{name}");
            match out.get_mut(&key) {
                Some(Value::Array(values)) => values.push(value.into()),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value.into()]);
                }
                None => {
                    out.insert(key, value.into());
                }
            }
            cur = &after[end..];
        }
    }
    Ok(rest)
}

/// Adds the fields of the programs whose messages we understand.
fn enrich(out: &mut Map<String, Value>) {
    // Audit records forwarded by audispd/auditd's syslog plugin: the
    // record's own fields, as the auditd reader gives them (syslog's
    // `@timestamp` and `host` stay; the record's time is `audit_time`).
    if let Some(message) = out.get("message").and_then(Value::as_str)
        && super::auditd::looks_like_audit(message)
        && let Ok(Value::Object(mut record)) = super::auditd::parse_record(message)
    {
        if let Some(time) = record.remove("@timestamp") {
            record.insert("audit_time".into(), time);
        }
        for (key, value) in record {
            out.entry(key).or_insert(value);
        }
        return;
    }
    let Some(program) = out.get("program").and_then(Value::as_str) else {
        return;
    };
    let kind = match program {
        "sshd" | "sshd-session" => 1,
        "sudo" => 2,
        "CRON" | "cron" | "crond" => 3,
        _ => return,
    };
    let Some(message) = out
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return;
    };
    let mut fields = Map::new();
    match kind {
        1 => sshd_fields(&message, &mut fields),
        2 => sudo_fields(&message, &mut fields),
        _ => cron_fields(&message, &mut fields),
    }
    out.extend(fields);
}

fn parse_ip(token: &str) -> Option<IpAddr> {
    let t = token.trim_matches(|c| c == '[' || c == ']' || c == ',');
    t.parse()
        .ok()
        .or_else(|| t.strip_suffix(':').and_then(|t| t.parse().ok()))
}

fn parse_port(token: &str) -> Option<u64> {
    let end = token
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(token.len());
    token[..end].parse().ok()
}

/// `[qualifier ]user ip port N...`: finds the address, the user before it.
fn user_ip_port(text: &str, fields: &mut Map<String, Value>) {
    let mut text = text;
    for qualifier in ["authenticating user ", "invalid user ", "user "] {
        if let Some(rest) = text.strip_prefix(qualifier) {
            if qualifier == "invalid user " {
                fields.insert("invalid_user".into(), true.into());
            }
            text = rest;
            break;
        }
    }
    let tokens: Vec<&str> = text.split(' ').collect();
    // The address is the last token that parses as one and is followed by
    // `port` or ends the text, so user names with spaces stay whole.
    let at = (0..tokens.len()).rev().find(|&i| {
        parse_ip(tokens[i]).is_some()
            && (tokens
                .get(i + 1)
                .is_none_or(|t| *t == "port" || t.starts_with('[')))
    });
    let Some(at) = at else {
        return;
    };
    let mut user_tokens = &tokens[..at];
    if user_tokens.last() == Some(&"from") {
        user_tokens = &user_tokens[..user_tokens.len() - 1];
    }
    if !user_tokens.is_empty() {
        fields.insert("user".into(), user_tokens.join(" ").into());
    }
    insert_ip_port(&tokens[at..], fields);
}

/// `ip [port N]...` at the start of `tokens`.
fn insert_ip_port(tokens: &[&str], fields: &mut Map<String, Value>) {
    if let Some(ip) = tokens.first().and_then(|t| parse_ip(t)) {
        fields.insert("source_ip".into(), ip.to_string().into());
        if tokens.get(1) == Some(&"port")
            && let Some(port) = tokens.get(2).and_then(|t| parse_port(t))
        {
            fields.insert("source_port".into(), port.into());
        }
    }
}

/// `key=value` pairs of a PAM message (`rhost=1.2.3.4  user=root`).
fn pam_kv(text: &str, fields: &mut Map<String, Value>) {
    for pair in text.split([' ', ';']) {
        match pair.split_once('=') {
            Some(("rhost", v)) if !v.is_empty() => {
                let key = if parse_ip(v).is_some() {
                    "source_ip"
                } else {
                    "source_host"
                };
                fields.insert(key.into(), v.into());
            }
            Some(("user", v)) if !v.is_empty() => {
                fields.insert("user".into(), v.into());
            }
            Some(("ruser", v)) if !v.is_empty() => {
                fields.insert("remote_user".into(), v.into());
            }
            _ => {}
        }
    }
}

fn method_event(prefix: &str, method: &str) -> String {
    let method = method.split('/').next().unwrap_or(method).replace('-', "_");
    format!("{prefix}_{method}")
}

/// Recognises the sshd messages that matter for hunting.
fn sshd_fields(message: &str, fields: &mut Map<String, Value>) {
    let mut msg = message.trim();
    // `message repeated 3 times: [ Failed password for ...]`
    if let Some(rest) = msg.strip_prefix("message repeated ")
        && let Some((count, inner)) = rest.split_once(" times: [")
    {
        if let Ok(n) = count.parse::<u64>() {
            fields.insert("repeat_count".into(), n.into());
        }
        msg = inner.trim().trim_end_matches(']').trim();
    }
    let msg = msg.strip_suffix("[preauth]").unwrap_or(msg).trim_end();
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    let event: String = if let Some(rest) = msg
        .strip_prefix("Failed ")
        .map(|r| ("failed", r))
        .or_else(|| msg.strip_prefix("Accepted ").map(|r| ("accepted", r)))
        .map(|(kind, r)| (kind, r.split_once(" for ")))
    {
        let (kind, Some((method, rest))) = rest else {
            return;
        };
        fields.insert("auth_method".into(), method.into());
        user_ip_port(rest, fields);
        // `... ssh2: RSA SHA256:abc`
        if let Some((_, key)) = rest.split_once(": ")
            && let Some((key_type, fingerprint)) = key.split_once(' ')
        {
            fields.insert("ssh_key_type".into(), key_type.into());
            fields.insert("ssh_key_fingerprint".into(), fingerprint.trim().into());
        }
        method_event(kind, method)
    } else if let Some(rest) = msg.strip_prefix("Invalid user ") {
        fields.insert("invalid_user".into(), true.into());
        // The user may be empty: `Invalid user  from 1.2.3.4 port 22`.
        match rest.rsplit_once(" from ") {
            Some((user, addr)) => {
                fields.insert("user".into(), user.into());
                insert_ip_port(&addr.split(' ').collect::<Vec<_>>(), fields);
            }
            None => {
                fields.insert("user".into(), rest.into());
            }
        }
        "invalid_user".into()
    } else if let Some(user) = msg.strip_prefix("input_userauth_request: invalid user ") {
        fields.insert("invalid_user".into(), true.into());
        fields.insert("user".into(), user.into());
        "invalid_user".into()
    } else if let Some(rest) = msg.strip_prefix("User ")
        && rest.contains(" not allowed because ")
    {
        let head = rest.split(" not allowed because ").next().unwrap_or(rest);
        user_ip_port(head, fields);
        "user_not_allowed".into()
    } else if let Some(rest) = msg.strip_prefix("Connection closed by ") {
        user_ip_port(rest, fields);
        "connection_closed".into()
    } else if let Some(rest) = msg.strip_prefix("Disconnected from ") {
        user_ip_port(rest, fields);
        "disconnected".into()
    } else if let Some(rest) = msg.strip_prefix("Received disconnect from ") {
        insert_ip_port(&rest.split(' ').collect::<Vec<_>>(), fields);
        "received_disconnect".into()
    } else if let Some(rest) = msg.strip_prefix("Disconnecting ")
        && msg.contains("Too many authentication failures")
    {
        let head = rest.split(": ").next().unwrap_or(rest);
        user_ip_port(head, fields);
        "too_many_auth_failures".into()
    } else if let Some(rest) = msg.strip_prefix("maximum authentication attempts exceeded for ") {
        user_ip_port(rest, fields);
        "max_auth_attempts_exceeded".into()
    } else if let Some(rest) = msg.strip_prefix("Connection from ") {
        insert_ip_port(&rest.split(' ').collect::<Vec<_>>(), fields);
        "connection".into()
    } else if let Some(rest) = msg.strip_prefix("Did not receive identification string from ") {
        insert_ip_port(&rest.split(' ').collect::<Vec<_>>(), fields);
        "no_identification".into()
    } else if let Some(rest) = msg.strip_prefix("Unable to negotiate with ") {
        insert_ip_port(&rest.split(' ').collect::<Vec<_>>(), fields);
        "negotiation_failed".into()
    } else if msg.contains("authentication failure") && msg.contains(';') {
        pam_kv(msg.split_once(';').map_or("", |(_, kv)| kv), fields);
        if msg.starts_with("PAM ") {
            "auth_failures_repeated".into()
        } else {
            "auth_failure".into()
        }
    } else if let Some((_, rest)) = msg.split_once("session opened for user ") {
        let user = rest.split([' ', '(']).next().unwrap_or(rest);
        fields.insert("user".into(), user.into());
        "session_opened".into()
    } else if let Some((_, rest)) = msg.split_once("session closed for user ") {
        let user = rest.split([' ', '(']).next().unwrap_or(rest);
        fields.insert("user".into(), user.into());
        "session_closed".into()
    } else if msg.contains("POSSIBLE BREAK-IN ATTEMPT") {
        if let Some(ip) = msg
            .split(' ')
            .find_map(|t| t.starts_with('[').then(|| parse_ip(t)).flatten())
        {
            fields.insert("source_ip".into(), ip.to_string().into());
        }
        "possible_break_in".into()
    } else {
        return;
    };
    fields.insert("sshd_event".into(), event.into());
}

/// `bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/cat /etc/shadow`
fn sudo_fields(message: &str, fields: &mut Map<String, Value>) {
    let msg = message.trim();
    if msg.contains("authentication failure;") {
        pam_kv(msg.split_once(';').map_or("", |(_, kv)| kv), fields);
        fields.insert("sudo_event".into(), "auth_failure".into());
        return;
    }
    let Some((user, rest)) = msg.split_once(" : ") else {
        return;
    };
    fields.insert("user".into(), user.trim().into());
    let mut event = "command";
    // COMMAND is last and may itself contain ` ; `.
    let (head, command) = match rest.split_once("COMMAND=") {
        Some((head, command)) => (head, Some(command)),
        None => (rest, None),
    };
    for part in head.split(" ; ").map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("TTY", v)) => {
                fields.insert("sudo_tty".into(), v.into());
            }
            Some(("PWD", v)) => {
                fields.insert("sudo_pwd".into(), v.into());
            }
            Some(("USER", v)) => {
                fields.insert("sudo_target_user".into(), v.into());
            }
            Some(_) => {}
            None if part.contains("incorrect password") => event = "incorrect_password",
            None if part.contains("NOT in sudoers") => event = "not_in_sudoers",
            None if part.contains("command not allowed") => event = "command_not_allowed",
            None => {}
        }
    }
    if let Some(command) = command {
        fields.insert("sudo_command".into(), command.trim().into());
    }
    fields.insert("sudo_event".into(), event.into());
}

/// `(root) CMD (command)`
fn cron_fields(message: &str, fields: &mut Map<String, Value>) {
    if let Some(rest) = message.strip_prefix('(')
        && let Some((user, rest)) = rest.split_once(") CMD (")
    {
        fields.insert("user".into(), user.into());
        let command = rest.strip_suffix(')').unwrap_or(rest);
        fields.insert("cron_command".into(), command.into());
    }
}

/// Reads syslog lines.
pub type SyslogReader<R> = LineRecords<R, SyslogParser>;

impl ParseLine for SyslogParser {
    fn parse_line(&mut self, bytes: &[u8], overflow: bool) -> Result<Value, String> {
        if overflow {
            return Err(overflow_error());
        }
        self.parse_line(&String::from_utf8_lossy(bytes))
    }
}

impl<R: BufRead> SyslogReader<R> {
    /// Reads BSD timestamps starting in `year` instead of the current year.
    pub fn with_year(mut self, year: i32) -> Self {
        *self.parser_mut() = SyslogParser::with_year(year);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        SyslogParser::with_year(2024)
            .parse_line(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn data(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .expect("cargo sets CARGO_MANIFEST_DIR for tests"),
        )
        .join("tests/data")
        .join(name)
    }

    #[test]
    fn audit_records_forwarded_through_syslog_get_their_fields() {
        let doc = parse(
            r#"Nov 10 07:48:16 lab01 audispd: node=lab01 type=EXECVE msg=audit(1604994496.155:92733): argc=2 a0="arp" a1="-a""#,
        );
        assert_eq!(doc["program"], "audispd");
        assert_eq!(doc["type"], "EXECVE");
        assert_eq!(
            (doc["a0"].as_str(), doc["a1"].as_str()),
            (Some("arp"), Some("-a"))
        );
        assert_eq!(doc["audit_time"], "2020-11-10T07:48:16.155Z");
        assert_eq!(doc["host"], "lab01");
    }

    #[test]
    fn bsd_line_with_and_without_pri() {
        let doc =
            parse("<38>Mar  7 09:15:02 web01 sshd[2211]: Server listening on 0.0.0.0 port 22.");
        assert_eq!(doc["@timestamp"], "2024-03-07T09:15:02.000Z");
        assert_eq!(doc["host"], "web01");
        assert_eq!(doc["program"], "sshd");
        assert_eq!(doc["pid"], 2211);
        assert_eq!(doc["facility"], "auth");
        assert_eq!(doc["severity"], "info");
        assert_eq!(doc["message"], "Server listening on 0.0.0.0 port 22.");

        let doc = parse("Mar  7 09:15:02.250731 web01 systemd[1]: Started Session 4.");
        assert_eq!(doc["@timestamp"], "2024-03-07T09:15:02.250Z");
        assert_eq!(doc["host"], "web01");

        let doc = parse("Nov 30 23:59:01 db2 kernel: [ 12.345] eth0: link up");
        assert_eq!(doc["program"], "kernel");
        assert!(doc.get("pid").is_none() && doc.get("facility").is_none());
        assert_eq!(doc["message"], "[ 12.345] eth0: link up");

        let doc = parse(
            "2024-05-01T10:00:00.123456+02:00 host1 sudo: pam_unix(sudo:session): session closed for user root",
        );
        assert_eq!(doc["@timestamp"], "2024-05-01T08:00:00.123Z");
        assert_eq!(doc["host"], "host1");
    }

    #[test]
    fn year_rolls_over_after_december() {
        let mut p = SyslogParser::with_year(2023);
        let a = p.parse_line("Dec 31 23:59:59 h cron[1]: x").unwrap();
        let b = p.parse_line("Jan  1 00:00:01 h cron[1]: y").unwrap();
        let c = p.parse_line("Jan  1 00:00:00 h cron[1]: z").unwrap();
        assert_eq!(a["@timestamp"], "2023-12-31T23:59:59.000Z");
        assert_eq!(b["@timestamp"], "2024-01-01T00:00:01.000Z");
        assert_eq!(c["@timestamp"], "2024-01-01T00:00:00.000Z");
        // A month boundary going back a little is not a new year.
        let mut p = SyslogParser::with_year(2023);
        p.parse_line("Feb  1 00:00:00 h a: x").unwrap();
        let d = p.parse_line("Jan 31 23:59:59 h a: x").unwrap();
        assert_eq!(d["@timestamp"], "2023-01-31T23:59:59.000Z");
        // Feb 29 exists only in leap years.
        assert!(
            SyslogParser::with_year(2023)
                .parse_line("Feb 29 00:00:00 h a: x")
                .is_err()
        );
        assert!(
            SyslogParser::with_year(2024)
                .parse_line("Feb 29 00:00:00 h a: x")
                .is_ok()
        );
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let doc = parse(
            r#"<165>1 2024-08-24T05:14:15.003Z mymachine.example.com evntslog 4123 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][origin ip="192.0.2.1" ip="192.0.2.2" x="a\"b\]c"] BOMAn application event"#,
        );
        assert_eq!(doc["@timestamp"], "2024-08-24T05:14:15.003Z");
        assert_eq!(doc["host"], "mymachine.example.com");
        assert_eq!(doc["app_name"], "evntslog");
        assert_eq!(doc["program"], "evntslog");
        assert_eq!(doc["pid"], 4123);
        assert_eq!(doc["msgid"], "ID47");
        assert_eq!(doc["facility"], "local4");
        assert_eq!(doc["severity"], "notice");
        assert_eq!(doc["exampleSDID@32473.eventID"], "1011");
        assert_eq!(
            doc["origin.ip"],
            serde_json::json!(["192.0.2.1", "192.0.2.2"])
        );
        assert_eq!(doc["origin.x"], "a\"b]c");
        assert_eq!(doc["message"], "BOMAn application event");

        let doc =
            parse("<34>1 2003-10-11T22:14:15.003-07:00 - su - ID47 - \u{FEFF}'su root' failed");
        assert_eq!(doc["@timestamp"], "2003-10-12T05:14:15.003Z");
        assert!(doc.get("host").is_none() && doc.get("pid").is_none());
        assert_eq!(doc["message"], "'su root' failed");
    }

    #[test]
    fn sshd_message_shapes() {
        // message, sshd_event, user, source_ip, source_port
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<u64>,
        );
        let cases: &[Case] = &[
            (
                "Failed password for root from 203.0.113.5 port 52144 ssh2",
                "failed_password",
                Some("root"),
                Some("203.0.113.5"),
                Some(52144),
            ),
            (
                "Failed password for invalid user admin from 203.0.113.5 port 52146 ssh2",
                "failed_password",
                Some("admin"),
                Some("203.0.113.5"),
                Some(52146),
            ),
            (
                "Failed none for invalid user test from 2001:db8::7 port 4022 ssh2",
                "failed_none",
                Some("test"),
                Some("2001:db8::7"),
                Some(4022),
            ),
            (
                "Accepted password for alice from 10.0.0.8 port 50022 ssh2",
                "accepted_password",
                Some("alice"),
                Some("10.0.0.8"),
                Some(50022),
            ),
            (
                "Accepted publickey for deploy from 10.0.0.9 port 40100 ssh2: ED25519 SHA256:Zm9vYmFy",
                "accepted_publickey",
                Some("deploy"),
                Some("10.0.0.9"),
                Some(40100),
            ),
            (
                "Accepted keyboard-interactive/pam for bob from 10.0.0.10 port 1 ssh2",
                "accepted_keyboard_interactive",
                Some("bob"),
                Some("10.0.0.10"),
                Some(1),
            ),
            (
                "Invalid user oracle from 198.51.100.7 port 33210",
                "invalid_user",
                Some("oracle"),
                Some("198.51.100.7"),
                Some(33210),
            ),
            (
                "Invalid user  from 198.51.100.7 port 33211",
                "invalid_user",
                Some(""),
                Some("198.51.100.7"),
                Some(33211),
            ),
            (
                "Invalid user guest from 198.51.100.7",
                "invalid_user",
                Some("guest"),
                Some("198.51.100.7"),
                None,
            ),
            (
                "Connection closed by authenticating user root 203.0.113.5 port 52144 [preauth]",
                "connection_closed",
                Some("root"),
                Some("203.0.113.5"),
                Some(52144),
            ),
            (
                "Connection closed by invalid user admin 203.0.113.5 port 52146 [preauth]",
                "connection_closed",
                Some("admin"),
                Some("203.0.113.5"),
                Some(52146),
            ),
            (
                "Connection closed by 203.0.113.5 port 52150 [preauth]",
                "connection_closed",
                None,
                Some("203.0.113.5"),
                Some(52150),
            ),
            (
                "Disconnected from user alice 10.0.0.8 port 50022",
                "disconnected",
                Some("alice"),
                Some("10.0.0.8"),
                Some(50022),
            ),
            (
                "Received disconnect from 203.0.113.5 port 52144:11: Bye Bye [preauth]",
                "received_disconnect",
                None,
                Some("203.0.113.5"),
                Some(52144),
            ),
            (
                "error: maximum authentication attempts exceeded for root from 203.0.113.5 port 52160 ssh2 [preauth]",
                "max_auth_attempts_exceeded",
                Some("root"),
                Some("203.0.113.5"),
                Some(52160),
            ),
            (
                "Disconnecting authenticating user root 203.0.113.5 port 52160: Too many authentication failures [preauth]",
                "too_many_auth_failures",
                Some("root"),
                Some("203.0.113.5"),
                Some(52160),
            ),
            (
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root",
                "auth_failure",
                Some("root"),
                Some("203.0.113.5"),
                None,
            ),
            (
                "PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root",
                "auth_failures_repeated",
                Some("root"),
                Some("203.0.113.5"),
                None,
            ),
            (
                "pam_unix(sshd:session): session opened for user alice(uid=1000) by alice(uid=0)",
                "session_opened",
                Some("alice"),
                None,
                None,
            ),
            (
                "pam_unix(sshd:session): session closed for user alice",
                "session_closed",
                Some("alice"),
                None,
                None,
            ),
            (
                "User backup from 198.51.100.9 not allowed because not listed in AllowUsers",
                "user_not_allowed",
                Some("backup"),
                Some("198.51.100.9"),
                None,
            ),
            (
                "Did not receive identification string from 198.51.100.20 port 61000",
                "no_identification",
                None,
                Some("198.51.100.20"),
                Some(61000),
            ),
            (
                "Unable to negotiate with 198.51.100.21 port 61001: no matching key exchange method found.",
                "negotiation_failed",
                None,
                Some("198.51.100.21"),
                Some(61001),
            ),
            (
                "message repeated 3 times: [ Failed password for root from 203.0.113.5 port 52144 ssh2]",
                "failed_password",
                Some("root"),
                Some("203.0.113.5"),
                Some(52144),
            ),
        ];
        for (message, event, user, ip, port) in cases {
            let doc = parse(&format!("Jun  3 12:00:00 bastion sshd[900]: {message}"));
            assert_eq!(doc["sshd_event"], *event, "{message}");
            assert_eq!(doc.get("user").and_then(Value::as_str), *user, "{message}");
            assert_eq!(
                doc.get("source_ip").and_then(Value::as_str),
                *ip,
                "{message}"
            );
            assert_eq!(
                doc.get("source_port").and_then(Value::as_u64),
                *port,
                "{message}"
            );
        }
        let doc = parse(
            "Jun  3 12:00:00 bastion sshd[900]: Accepted publickey for deploy from 10.0.0.9 port 40100 ssh2: ED25519 SHA256:Zm9vYmFy",
        );
        assert_eq!(doc["ssh_key_type"], "ED25519");
        assert_eq!(doc["ssh_key_fingerprint"], "SHA256:Zm9vYmFy");
        let doc = parse("Jun  3 12:00:00 bastion sshd[900]: Received signal 15; terminating.");
        assert!(doc.get("sshd_event").is_none());
    }

    #[test]
    fn sudo_and_cron() {
        let doc = parse(
            "Jun  3 12:00:00 web01 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/cat /etc/shadow",
        );
        assert_eq!(doc["sudo_event"], "command");
        assert_eq!(doc["user"], "alice");
        assert_eq!(doc["sudo_target_user"], "root");
        assert_eq!(doc["sudo_command"], "/usr/bin/cat /etc/shadow");
        assert_eq!(doc["sudo_tty"], "pts/0");
        let doc = parse(
            "Jun  3 12:00:00 web01 sudo:   mallory : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/bash",
        );
        assert_eq!(doc["sudo_event"], "incorrect_password");
        assert_eq!(doc["user"], "mallory");
        let doc = parse(
            "Jun  3 12:17:01 web01 CRON[3321]: (root) CMD (   cd / && run-parts --report /etc/cron.hourly)",
        );
        assert_eq!(doc["user"], "root");
        assert_eq!(
            doc["cron_command"],
            "   cd / && run-parts --report /etc/cron.hourly"
        );
    }

    #[test]
    fn garbage_lines_are_malformed_with_position() {
        let input = b"Jun  3 12:00:00 h a: ok\nthis is not syslog\n<999>Jun  3 12:00:00 h a: x\nJun 33 12:00:00 h a: bad day\n<13>1 notatime h a - - - m\n";
        let out: Vec<_> = SyslogReader::new(&input[..], "t.log")
            .with_year(2024)
            .collect();
        assert_eq!(out.len(), 5);
        assert!(out[0].is_ok());
        let offsets = [24, 43, 71, 100];
        for (i, offset) in offsets.iter().enumerate() {
            let bad = out[i + 1].as_ref().unwrap_err();
            assert_eq!(bad.position.line, Some(i as u64 + 2), "{bad:?}");
            assert_eq!(bad.position.byte_offset, Some(*offset), "{bad:?}");
        }
        assert!(
            out[1]
                .as_ref()
                .unwrap_err()
                .error
                .contains("no syslog timestamp")
        );
        assert!(out[2].as_ref().unwrap_err().error.contains("PRI"));
    }

    #[test]
    fn sample_auth_log() {
        let reader = SyslogReader::open(&data("auth.log"))
            .unwrap()
            .with_year(2025);
        let docs: Vec<Value> = reader.map(|r| r.unwrap()).collect();
        assert!(docs.len() >= 30, "{}", docs.len());
        let failed = docs
            .iter()
            .filter(|d| d["sshd_event"] == "failed_password" && d["source_ip"] == "185.220.101.47")
            .count();
        assert!(failed >= 10, "{failed}");
        assert!(
            docs.iter()
                .any(|d| d["sshd_event"] == "accepted_password" && d["user"] == "deploy")
        );
        assert!(
            docs.iter()
                .any(|d| d["sudo_event"] == "command" && d["sudo_target_user"] == "root")
        );
        assert!(docs.iter().any(|d| d.get("cron_command").is_some()));
        // The file crosses new year.
        assert!(
            docs.first().unwrap()["@timestamp"]
                .as_str()
                .unwrap()
                .starts_with("2025-12-31")
        );
        assert!(
            docs.last().unwrap()["@timestamp"]
                .as_str()
                .unwrap()
                .starts_with("2026-01-01")
        );
    }

    #[test]
    fn sample_rfc5424_log() {
        let docs: Vec<Value> = SyslogReader::open(&data("rfc5424.log"))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(docs.len() >= 6);
        for d in &docs {
            assert!(d["@timestamp"].as_str().unwrap().ends_with('Z'), "{d}");
            assert!(d.get("facility").is_some() && d.get("app_name").is_some());
        }
        assert!(docs.iter().any(|d| d["sshd_event"] == "failed_password"));
        assert!(docs.iter().any(|d| d.get("meta.sequenceId").is_some()));
    }
}
