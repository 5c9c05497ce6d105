//! What a finding says about its event: a one-line title (where the event
//! comes from and the most telling thing in it) and a bounded set of
//! context fields for the evidence.

use quarry_sdk::{Event, Field};

use crate::{display_name, field, is_zeek_http, meaningful};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest evidence value, in characters; longer ones are cut with `…`.
pub const MAX_VALUE_CHARS: usize = 256;
/// Most context fields in a finding's evidence.
pub const MAX_CONTEXT_FIELDS: usize = 16;
/// Most bytes of context values in a finding's evidence; a field that does
/// not fit whole (clipped) is left out. With the keys and the matched
/// field, a finding stays under about 3 KiB.
pub const MAX_CONTEXT_BYTES: usize = 2048;

/// `text` cut to `max` characters, ending in `…` when cut; line breaks and
/// tabs become spaces.
pub fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// The short name of a Windows channel: `Sysmon` for
/// `Microsoft-Windows-Sysmon/Operational`, `Security`, `System`.
fn channel_name(channel: &str) -> &str {
    let head = channel.split('/').next().unwrap_or(channel);
    head.strip_prefix("Microsoft-Windows-").unwrap_or(head)
}

/// Where the event comes from: `Security 4624`, `Sysmon 1`, `zeek conn`,
/// `suricata alert`, `cloudtrail ConsoleLogin`, `auditd EXECVE`,
/// `syslog sshd`, else the event's `source`.
pub fn origin(event: &Event) -> String {
    let get = |f| meaningful(event, f);
    let event_id = get(field::EVENT_ID);
    if let Some(channel) = get(field::CHANNEL) {
        return match event_id {
            Some(id) => format!("{} {id}", channel_name(channel)),
            None => channel_name(channel).to_owned(),
        };
    }
    if let Some(id) = event_id {
        let provider = get(field::PROVIDER_NAME)
            .or_else(|| get(field::SOURCE_NAME))
            .map_or("Windows", channel_name);
        return format!("{provider} {id}");
    }
    if let Some(path) = get(field::PATH).or_else(|| get(field::STREAM)) {
        return format!("zeek {path}");
    }
    if get(field::ID_ORIG_H)
        .or_else(|| get(field::ID_ORIG_H_UNDERSCORE))
        .is_some()
    {
        let kind = if get(field::QUERY).is_some() {
            "dns"
        } else if is_zeek_http(event) {
            "http"
        } else if get(field::SERVER_NAME).is_some() {
            "ssl"
        } else if get(field::CONN_STATE).is_some() {
            "conn"
        } else {
            "record"
        };
        return format!("zeek {kind}");
    }
    if let Some(kind) = get(field::EVENT_TYPE) {
        return format!("suricata {kind}");
    }
    if let Some(name) = get(field::EVENT_NAME) {
        return format!("cloudtrail {name}");
    }
    if let (Some(kind), Some(_)) = (get(field::AUDIT_TYPE), get(field::AUDIT_SERIAL)) {
        return format!("auditd {kind}");
    }
    if let Some(program) = get(field::PROGRAM) {
        return format!("syslog {program}");
    }
    get(field::SOURCE).unwrap_or("event").to_owned()
}

/// `a -> b:port/proto (service)` from the parts that are present.
fn connection(
    event: &Event,
    from: Field,
    to: Field,
    port: Option<Field>,
    proto: Option<Field>,
) -> Option<String> {
    let get = |f| meaningful(event, f);
    let from = get(from)?;
    let to = get(to)?;
    let mut text = format!("{from} -> {to}");
    if let Some(port) = port.and_then(get) {
        text.push(':');
        text.push_str(port);
    }
    if let Some(proto) = proto.and_then(get) {
        text.push('/');
        text.push_str(&proto.to_ascii_lowercase());
    }
    if let Some(service) = get(field::SERVICE) {
        text.push_str(&format!(" ({service})"));
    }
    Some(text)
}

/// The most telling thing the event says, by its kind.
fn telling(event: &Event) -> Option<String> {
    let get = |f| meaningful(event, f);
    let first_line = |text: &str| text.lines().next().unwrap_or(text).trim().to_owned();
    // Sysmon 3: the process and its connection.
    if let Some(text) = connection(
        event,
        field::SOURCE_IP,
        field::DESTINATION_IP,
        Some(field::DESTINATION_PORT),
        None,
    ) {
        return Some(match get(field::IMAGE) {
            Some(image) => format!("{image} {text}"),
            None => text,
        });
    }
    // Processes, files, registry, DNS, services and shares (Windows).
    if let Some(text) = get(field::COMMAND_LINE)
        .or_else(|| get(field::IMAGE))
        .or_else(|| get(field::NEW_PROCESS_NAME))
        .or_else(|| get(field::TARGET_FILENAME))
        .or_else(|| get(field::TARGET_OBJECT))
        .or_else(|| get(field::QUERY_NAME))
    {
        return Some(text.to_owned());
    }
    // Sysmon 8/10: one process reaching into another.
    if let (Some(from), Some(to)) = (get(field::SOURCE_IMAGE), get(field::TARGET_IMAGE)) {
        return Some(format!("{from} -> {to}"));
    }
    if let Some(service) = get(field::SERVICE_NAME).filter(|_| get(field::IMAGE_PATH).is_some()) {
        return Some(format!(
            "service {service}: {}",
            get(field::IMAGE_PATH).unwrap_or_default()
        ));
    }
    if let Some(share) = get(field::SHARE_NAME) {
        return Some(match get(field::RELATIVE_TARGET_NAME) {
            Some(target) => format!("{share}\\{target}"),
            None => share.to_owned(),
        });
    }
    if let Some(task) = get(field::TASK_NAME) {
        return Some(format!("task {task}"));
    }
    // Logons.
    if let Some(user) = get(field::TARGET_USER_NAME).filter(|_| get(field::LOGON_TYPE).is_some()) {
        let mut text = match get(field::TARGET_DOMAIN_NAME) {
            Some(domain) => format!("{domain}\\{user}"),
            None => user.to_owned(),
        };
        if let Some(logon_type) = get(field::LOGON_TYPE) {
            text.push_str(&format!(" logon type {logon_type}"));
        }
        if let Some(from) = get(field::IP_ADDRESS).or_else(|| get(field::WORKSTATION_NAME)) {
            text.push_str(&format!(" from {from}"));
        }
        return Some(text);
    }
    // Network records with a telling field of their own.
    if let Some(query) = get(field::QUERY) {
        return Some(format!("query {query}"));
    }
    if is_zeek_http(event)
        && let Some(uri) = get(field::URI)
    {
        let method = get(field::METHOD).unwrap_or("");
        let host = get(field::HOST).unwrap_or("");
        let status = get(field::STATUS_CODE)
            .map(|s| format!(" -> {s}"))
            .unwrap_or_default();
        return Some(format!("{method} {host}{uri}{status}").trim().to_owned());
    }
    if let Some(name) = get(field::FILENAME) {
        return Some(format!("file {name}"));
    }
    if let Some(text) = get(field::ALERT_SIGNATURE)
        .or_else(|| get(field::SERVER_NAME).filter(|_| get(field::ID_RESP_H).is_none()))
        .or_else(|| get(field::MSG))
    {
        return Some(text.to_owned());
    }
    // Connections.
    let zeek = connection(
        event,
        field::ID_ORIG_H,
        field::ID_RESP_H,
        Some(field::ID_RESP_P),
        Some(field::PROTO),
    )
    .or_else(|| {
        connection(
            event,
            field::ID_ORIG_H_UNDERSCORE,
            field::ID_RESP_H_UNDERSCORE,
            Some(field::ID_RESP_P_UNDERSCORE),
            Some(field::PROTO),
        )
    });
    if let Some(text) = zeek
        .map(|text| match get(field::SERVER_NAME) {
            Some(name) => format!("{text} {name}"),
            None => text,
        })
        .or_else(|| {
            connection(
                event,
                field::SOURCE_ADDRESS,
                field::DEST_ADDRESS,
                Some(field::DEST_PORT),
                None,
            )
        })
        .or_else(|| {
            connection(
                event,
                field::SRC_IP,
                field::DEST_IP,
                Some(field::DEST_PORT_LOWER),
                Some(field::PROTO),
            )
        })
    {
        return Some(text);
    }
    // CloudTrail: who, from where.
    if get(field::EVENT_NAME).is_some() {
        let who = get(field::AWS_USER_NAME).or_else(|| get(field::AWS_ARN));
        let from = get(field::SOURCE_IP_ADDRESS);
        let mut text = String::new();
        if let Some(who) = who {
            text.push_str(&format!("by {who}"));
        }
        if let Some(from) = from {
            text.push_str(&format!(" from {from}"));
        }
        if let Some(error) = get(field::ERROR_CODE) {
            text.push_str(&format!(" failed: {error}"));
        }
        if !text.is_empty() {
            return Some(text.trim().to_owned());
        }
    }
    // Linux: the message, the command.
    if let Some(text) = get(field::SUDO_COMMAND)
        .or_else(|| get(field::MESSAGE))
        .or_else(|| get(field::PROCTITLE))
        .or_else(|| get(field::EXE))
    {
        return Some(text.to_owned());
    }
    // Windows: the rendered message's first line ("An account was
    // successfully logged on.").
    if let Some(message) = get(field::MESSAGE_WINDOWS) {
        return Some(first_line(message));
    }
    None
}

/// The finding's title: [`origin`] and the most telling field, at most
/// [`MAX_TITLE_CHARS`] characters on one line.
pub fn title(event: &Event) -> String {
    let origin = origin(event);
    let text = match telling(event) {
        Some(text) => format!("{origin}: {text}"),
        None => origin,
    };
    clip(&text, MAX_TITLE_CHARS)
}

/// Context fields, in the order they are shown: what the event is, where
/// it was logged, then what it is about. Only those present are shown.
const CONTEXT: &[Field] = &[
    // What and where.
    field::EVENT_ID,
    field::CHANNEL,
    field::PATH,
    field::STREAM,
    field::EVENT_TYPE,
    field::EVENT_SOURCE,
    field::EVENT_NAME,
    field::AUDIT_TYPE,
    field::PROGRAM,
    field::SOURCE,
    // Processes and files.
    field::IMAGE,
    field::NEW_PROCESS_NAME,
    field::COMMAND_LINE,
    field::PARENT_IMAGE,
    field::PARENT_PROCESS_NAME,
    field::SOURCE_IMAGE,
    field::TARGET_IMAGE,
    field::TARGET_FILENAME,
    field::TARGET_OBJECT,
    field::QUERY_NAME,
    field::SERVICE_NAME,
    field::IMAGE_PATH,
    field::SHARE_NAME,
    field::RELATIVE_TARGET_NAME,
    field::TASK_NAME,
    // Logons.
    field::LOGON_TYPE,
    field::TARGET_USER_NAME,
    field::TARGET_DOMAIN_NAME,
    field::SUBJECT_USER_NAME,
    field::USER,
    field::IP_ADDRESS,
    field::WORKSTATION_NAME,
    // Connections.
    field::SOURCE_IP,
    field::DESTINATION_IP,
    field::DESTINATION_PORT,
    field::SOURCE_ADDRESS,
    field::DEST_ADDRESS,
    field::DEST_PORT,
    field::ID_ORIG_H,
    field::ID_RESP_H,
    field::ID_RESP_P,
    field::ID_ORIG_H_UNDERSCORE,
    field::ID_RESP_H_UNDERSCORE,
    field::ID_RESP_P_UNDERSCORE,
    field::SRC_IP,
    field::DEST_IP,
    field::DEST_PORT_LOWER,
    field::PROTO,
    field::SERVICE,
    field::CONN_STATE,
    field::TX_HOSTS,
    field::RX_HOSTS,
    field::FILENAME,
    // DNS, HTTP, TLS, alerts.
    field::QUERY,
    field::METHOD,
    field::URI,
    field::STATUS_CODE,
    field::SERVER_NAME,
    field::NOTE,
    field::MSG,
    field::ALERT_SIGNATURE,
    // Linux.
    field::SSHD_EVENT,
    field::USER_LOWER,
    field::SOURCE_IP_LOWER,
    field::SUDO_COMMAND,
    field::MESSAGE,
    field::ACCT,
    field::ADDR,
    field::EXE,
    field::PROCTITLE,
    // Cloud.
    field::AWS_USER_NAME,
    field::SOURCE_IP_ADDRESS,
    field::ERROR_CODE,
];

/// The host that logged the event, as `(field name, value)`.
fn event_host(event: &Event) -> Option<(&'static str, &str)> {
    crate::OWN_HOST_FIELDS
        .iter()
        .copied()
        .chain(
            // `host` when no other field names the host, and it is not a
            // Zeek http Host header (shown as `http.host`).
            (!is_zeek_http(event)).then_some(field::HOST),
        )
        .chain([field::NODE])
        .find_map(|f| meaningful(event, f).map(|v| (display_name(f), v)))
}

/// The evidence context of a finding: `(field name, clipped value)` for the
/// fields of [`CONTEXT`] the event has, its host first, at most
/// [`MAX_CONTEXT_FIELDS`] of them and [`MAX_CONTEXT_BYTES`] of values.
pub fn context(event: &Event) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut bytes = 0;
    let mut push = |key: &'static str, value: &str| {
        if out.len() >= MAX_CONTEXT_FIELDS {
            return;
        }
        let value = clip(value, MAX_VALUE_CHARS);
        if bytes + value.len() > MAX_CONTEXT_BYTES {
            return;
        }
        bytes += value.len();
        out.push((key, value));
    };
    if let Some((key, host)) = event_host(event) {
        push(key, host);
    }
    if is_zeek_http(event)
        && let Some(host) = meaningful(event, field::HOST)
    {
        push("http.host", host);
    }
    for &f in CONTEXT {
        if let Some(value) = meaningful(event, f) {
            push(display_name(f), value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(values: &[(Field, &str)]) -> Event {
        Event::with_values(0, 0, field::NAMES, values)
    }

    #[test]
    fn values_are_clipped_on_one_line() {
        assert_eq!(clip("  short ", 10), "short");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abcd", 4), "abcd");
        assert_eq!(clip("é".repeat(10).as_str(), 3), "éé…");
        assert_eq!(clip("line one\r\nline two", 100), "line one  line two");
    }

    #[test]
    fn titles_name_the_source_and_the_telling_field() {
        assert_eq!(
            title(&event(&[
                (field::CHANNEL, "Microsoft-Windows-Sysmon/Operational"),
                (field::EVENT_ID, "1"),
                (field::IMAGE, "C:\\Windows\\System32\\cmd.exe"),
                (field::COMMAND_LINE, "cmd.exe /c whoami"),
            ])),
            "Sysmon 1: cmd.exe /c whoami"
        );
        assert_eq!(
            title(&event(&[
                (field::CHANNEL, "Security"),
                (field::EVENT_ID, "4624"),
                (field::TARGET_USER_NAME, "alice"),
                (field::TARGET_DOMAIN_NAME, "CORP"),
                (field::LOGON_TYPE, "3"),
                (field::IP_ADDRESS, "10.0.0.5"),
            ])),
            "Security 4624: CORP\\alice logon type 3 from 10.0.0.5"
        );
        assert_eq!(
            title(&event(&[
                (field::PATH, "conn"),
                (field::ID_ORIG_H, "10.0.0.5"),
                (field::ID_RESP_H, "10.0.0.9"),
                (field::ID_RESP_P, "445"),
                (field::PROTO, "tcp"),
                (field::SERVICE, "smb"),
            ])),
            "zeek conn: 10.0.0.5 -> 10.0.0.9:445/tcp (smb)"
        );
        assert_eq!(
            title(&event(&[
                (field::STREAM, "http"),
                (field::ID_ORIG_H_UNDERSCORE, "10.0.1.4"),
                (field::METHOD, "GET"),
                (field::HOST, "evil.example"),
                (field::URI, "/a.ps1"),
                (field::STATUS_CODE, "200"),
            ])),
            "zeek http: GET evil.example/a.ps1 -> 200"
        );
        assert_eq!(
            title(&event(&[
                (field::HOST, "web01"),
                (field::PROGRAM, "sshd"),
                (
                    field::MESSAGE,
                    "Accepted password for alice from 10.0.0.5 port 50000 ssh2"
                ),
            ])),
            "syslog sshd: Accepted password for alice from 10.0.0.5 port 50000 ssh2"
        );
        assert_eq!(
            title(&event(&[
                (field::EVENT_NAME, "ConsoleLogin"),
                (field::AWS_USER_NAME, "pedro"),
                (field::SOURCE_IP_ADDRESS, "1.2.3.4"),
            ])),
            "cloudtrail ConsoleLogin: by pedro from 1.2.3.4"
        );
        assert_eq!(
            title(&event(&[
                (field::SOURCE_NAME, "Microsoft-Windows-Eventlog"),
                (field::EVENT_ID, "1102"),
                (
                    field::MESSAGE_WINDOWS,
                    "The audit log was cleared.\r\nSubject: …"
                ),
            ])),
            "Eventlog 1102: The audit log was cleared."
        );
        assert_eq!(
            title(&event(&[
                (field::CHANNEL, "Microsoft-Windows-Sysmon/Operational"),
                (field::EVENT_ID, "3"),
                (field::IMAGE, "C:\\Windows\\System32\\svchost.exe"),
                (field::SOURCE_IP, "10.0.0.5"),
                (field::DESTINATION_IP, "10.0.0.9"),
                (field::DESTINATION_PORT, "445"),
            ])),
            "Sysmon 3: C:\\Windows\\System32\\svchost.exe 10.0.0.5 -> 10.0.0.9:445"
        );
        assert_eq!(
            title(&event(&[
                (field::CHANNEL, "Microsoft-Windows-Sysmon/Operational"),
                (field::EVENT_ID, "10"),
                (field::SOURCE_IMAGE, "C:\\Tools\\x.exe"),
                (field::TARGET_IMAGE, "C:\\Windows\\System32\\lsass.exe"),
                (field::MESSAGE_WINDOWS, "Process accessed:"),
            ])),
            "Sysmon 10: C:\\Tools\\x.exe -> C:\\Windows\\System32\\lsass.exe"
        );
        assert_eq!(
            title(&event(&[
                (field::STREAM, "files"),
                (field::TX_HOSTS, "[\"10.0.0.4\"]"),
                (field::FILENAME, "gpt.ini"),
            ])),
            "zeek files: file gpt.ini"
        );
        assert_eq!(title(&event(&[(field::SOURCE, "lab")])), "lab");
        let long = "x".repeat(1000);
        assert_eq!(
            title(&event(&[(field::PROGRAM, "p"), (field::MESSAGE, &long)]))
                .chars()
                .count(),
            MAX_TITLE_CHARS
        );
    }

    #[test]
    fn context_is_bounded_and_starts_with_the_host() {
        let long = "y".repeat(5000);
        let values: Vec<(Field, &str)> = CONTEXT.iter().map(|&f| (f, long.as_str())).collect();
        let mut all = values.clone();
        all.push((field::COMPUTER, "WS07"));
        let ctx = context(&event(&all));
        assert_eq!(ctx[0], ("Computer", "WS07".to_owned()));
        assert!(ctx.len() <= MAX_CONTEXT_FIELDS);
        let bytes: usize = ctx.iter().map(|(_, v)| v.len()).sum();
        assert!(bytes <= MAX_CONTEXT_BYTES, "{bytes}");
        assert!(
            ctx.iter()
                .all(|(_, v)| v.chars().count() <= MAX_VALUE_CHARS)
        );
        // A collector's `host` is not the event's host; a Host header is
        // shown as such.
        let forwarded = context(&event(&[
            (field::HOSTNAME, "WORKSTATION5"),
            (field::HOST, "wec"),
        ]));
        assert_eq!(forwarded, [("Hostname", "WORKSTATION5".to_owned())]);
        let http = context(&event(&[
            (field::PATH, "http"),
            (field::HOST, "evil.example"),
        ]));
        assert_eq!(
            http,
            [
                ("http.host", "evil.example".to_owned()),
                ("_path", "http".to_owned())
            ]
        );
    }
}
