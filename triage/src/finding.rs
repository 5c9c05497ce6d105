//! What triage takes in: one committed finding with the context the
//! coordinator knows (shard labels, hunt, module), and the entities (host,
//! user, IP, process) it is about, parsed from the module's entity string and
//! evidence fields.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::ids::FindingRef;

/// Severity of a finding or an alert (same order and names as the
/// coordinator's).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Context only.
    #[default]
    #[serde(alias = "info")]
    Informational,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Informational,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of thing an entity is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    /// A host name (lowercase).
    Host,
    /// An account (lowercase, domain kept: `corp\alice`).
    User,
    /// An IP address (canonical text).
    Ip,
    /// A process image or name.
    Process,
    /// Anything else a module names (`domain`, `hash`): the kind as written.
    Other(String),
}

impl EntityKind {
    /// The kind as written before the `:` of an entity string.
    pub fn name(&self) -> &str {
        match self {
            EntityKind::Host => "host",
            EntityKind::User => "user",
            EntityKind::Ip => "ip",
            EntityKind::Process => "process",
            EntityKind::Other(kind) => kind,
        }
    }

    /// Reads a kind name (`host`, `User`, `ip`, `domain`).
    pub fn parse(name: &str) -> EntityKind {
        match name.trim().to_ascii_lowercase().as_str() {
            "host" | "hostname" | "computer" => EntityKind::Host,
            "user" | "account" => EntityKind::User,
            "ip" | "addr" | "address" => EntityKind::Ip,
            "process" | "image" => EntityKind::Process,
            other => EntityKind::Other(other.to_owned()),
        }
    }

    /// Whether entity risk and correlation track this kind (host, user, IP).
    pub fn carries_risk(&self) -> bool {
        matches!(self, EntityKind::Host | EntityKind::User | EntityKind::Ip)
    }
}

/// One thing a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    /// Its kind.
    pub kind: EntityKind,
    /// Its normalised value.
    pub value: String,
}

impl Entity {
    /// An entity with its value normalised for its kind, or `None` when the
    /// value is a placeholder (`-`, `unknown`, empty) or not valid for the
    /// kind (an IP that does not parse, a loopback address).
    pub fn new(kind: EntityKind, value: &str) -> Option<Entity> {
        let value = value.trim().trim_matches('"');
        if is_placeholder(value) {
            return None;
        }
        let value = match kind {
            EntityKind::Host => short_host(value),
            EntityKind::User => value.to_lowercase(),
            EntityKind::Ip => {
                let bare = value.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = bare.parse().ok()?;
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                if ip.is_loopback() || ip.is_unspecified() {
                    return None;
                }
                ip.to_string()
            }
            EntityKind::Process | EntityKind::Other(_) => value.to_owned(),
        };
        if value.is_empty() {
            return None;
        }
        Some(Entity { kind, value })
    }

    /// `kind:value`, the form modules write and suppressions match.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind.name(), self.value)
    }

    /// Reads `kind:value` (`host:WS07`, `user:CORP\alice`, `ip:fe80::1`).
    /// Text without a kind is an [`EntityKind::Other`] named `entity`.
    pub fn parse(text: &str) -> Option<Entity> {
        let text = text.trim();
        match text.split_once(':') {
            Some((kind, value))
                if !kind.is_empty()
                    && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Entity::new(EntityKind::parse(kind), value)
            }
            _ => Entity::new(EntityKind::Other("entity".into()), text),
        }
    }
}

/// A host by its short name, lower case: `WS07.corp.example.`, `\\WS07` and
/// `ws07` are one machine to the modules that name it (Windows logs give
/// the FQDN in `Computer`, the NetBIOS name in `WorkstationName`). An
/// address stays whole.
fn short_host(value: &str) -> String {
    let value = value.trim_start_matches('\\').trim_end_matches('.');
    if value.parse::<IpAddr>().is_ok() {
        return value.to_owned();
    }
    value
        .split('.')
        .next()
        .unwrap_or(value)
        .to_ascii_lowercase()
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.value)
    }
}

fn is_placeholder(value: &str) -> bool {
    value.is_empty()
        || [
            "-", "--", "unknown", "none", "null", "n/a", "na", "(null)", "?",
        ]
        .iter()
        .any(|p| value.eq_ignore_ascii_case(p))
}

/// The kind of entity an evidence field names, by the field's name in the
/// formats Quarry ingests (Windows security and Sysmon, auth.log, Zeek, and
/// the shipped modules' own evidence names). Case-insensitive.
pub fn field_kind(field: &str) -> Option<EntityKind> {
    let f = field.trim().to_ascii_lowercase();
    let f = f.as_str();
    const HOST: &[&str] = &[
        "host",
        "hostname",
        "host.name",
        "host_name",
        "computer",
        "computername",
        "computer_name",
        "workstation",
        "workstationname",
        "device",
        "devicename",
        "dvc",
    ];
    const USER: &[&str] = &[
        "user",
        "username",
        "user.name",
        "user_name",
        "account",
        "accountname",
        "account_name",
        "targetusername",
        "subjectusername",
        "samaccountname",
    ];
    const IP: &[&str] = &[
        "ip",
        "src_ip",
        "dst_ip",
        "source_ip",
        "destination_ip",
        "sourceip",
        "destinationip",
        "sourceaddress",
        "destinationaddress",
        "ipaddress",
        "ip_address",
        "client_ip",
        "clientip",
        "remote_ip",
        "srcip",
        "dstip",
        "source.ip",
        "destination.ip",
        "id.orig_h",
        "id.resp_h",
        "c-ip",
        "rhost",
    ];
    const PROCESS: &[&str] = &[
        "image",
        "process",
        "process_name",
        "processname",
        "newprocessname",
        "process.executable",
        "exe",
        "parent_image",
        "parentimage",
    ];
    if HOST.contains(&f) {
        Some(EntityKind::Host)
    } else if USER.contains(&f) {
        Some(EntityKind::User)
    } else if IP.contains(&f) {
        Some(EntityKind::Ip)
    } else if PROCESS.contains(&f) {
        Some(EntityKind::Process)
    } else {
        None
    }
}

/// The entities of a finding: its entity string (`host:WS07`) and every
/// evidence field whose name says what it holds ([`field_kind`]), normalised,
/// sorted and without duplicates.
pub fn parse_entities(entity: &str, evidence: &[(String, String)]) -> Vec<Entity> {
    let mut out: Vec<Entity> = Entity::parse(entity).into_iter().collect();
    for (field, value) in evidence {
        if let Some(kind) = field_kind(field)
            && let Some(e) = Entity::new(kind, value)
        {
            out.push(e);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The rule's author from the evidence, for rules whose licence requires
/// attribution to travel with alerts (Sigma's DRL): `sigma.author`,
/// `rule_author` or `author`, unless `unknown`.
pub fn rule_author(evidence: &[(String, String)]) -> Option<String> {
    ["sigma.author", "rule_author", "author"]
        .iter()
        .find_map(|key| {
            evidence
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.trim())
        })
        .filter(|v| !is_placeholder(v))
        .map(str::to_owned)
}

/// One committed finding as triage takes it. The coordinator builds it from
/// its `FindingRecord` plus what it knows of the hunt, shard and module.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageFinding {
    /// The hunt (`h-<n>`).
    pub hunt: String,
    /// The finding's number within the hunt (from 0, commit order).
    pub seq: u64,
    /// The finding's own id (`<task>#<attempt>.<n>`).
    pub finding_id: String,
    /// The shard it came from.
    pub shard: String,
    /// That shard's labels (`role=dc`, `criticality=high`).
    pub shard_labels: BTreeMap<String, String>,
    /// The host the events came from, when known.
    pub host: Option<String>,
    /// Detection rule id (`sigma/<uuid>`, `bruteforce/password-spray`).
    pub rule: String,
    /// The rule's author, carried to the alert (Sigma's DRL requires it).
    pub rule_author: Option<String>,
    /// The module that produced it (`name@version`).
    pub module: String,
    /// Title.
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// 0..=100.
    pub confidence: u8,
    /// The module's entity string (`host:WS07`).
    pub entity: String,
    /// Parsed entities ([`parse_entities`]); `host` is added to them.
    pub entities: Vec<Entity>,
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Evidence pairs (suppressions match fields of these).
    pub evidence: Vec<(String, String)>,
    /// ATT&CK technique ids (`T1059.001`).
    pub techniques: Vec<String>,
    /// The module's labels; `attack.*` tags name techniques and tactics,
    /// each `intel:*` tag counts as an intel match.
    pub tags: Vec<String>,
    /// Intel matches the coordinator found (indicator sets), added to the
    /// `intel:*` tags.
    pub intel_matches: u32,
}

impl TriageFinding {
    /// `hunt#seq`.
    pub fn reference(&self) -> FindingRef {
        FindingRef {
            hunt: self.hunt.clone(),
            seq: self.seq,
        }
    }

    /// Intel matches: the field plus one per `intel:*` tag.
    pub fn intel_count(&self) -> u32 {
        let tagged = self
            .tags
            .iter()
            .filter(|t| t.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("intel:")))
            .count();
        self.intel_matches
            .saturating_add(u32::try_from(tagged).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_known_by_their_short_name() {
        for text in [
            "WS07",
            "ws07.corp.example",
            "WS07.CORP.EXAMPLE.",
            "\\\\WS07",
        ] {
            let host = Entity::new(EntityKind::Host, text).expect("host");
            assert_eq!(host.key(), "host:ws07", "{text}");
        }
        let address = Entity::new(EntityKind::Host, "10.0.0.5").expect("address");
        assert_eq!(address.value, "10.0.0.5");
    }

    fn ev(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn entity_strings_parse_with_their_kind() {
        assert_eq!(
            Entity::parse("host:WS07.corp.example."),
            Entity::new(EntityKind::Host, "ws07.corp.example")
        );
        let user = Entity::parse("user:CORP\\svc-backup").expect("user");
        assert_eq!(
            (user.kind.clone(), user.value.as_str()),
            (EntityKind::User, "corp\\svc-backup")
        );
        assert_eq!(
            Entity::parse("ip:fe80::1").map(|e| e.key()),
            Some("ip:fe80::1".into())
        );
        assert_eq!(
            Entity::parse("ip:::ffff:10.0.0.1").map(|e| e.key()),
            Some("ip:10.0.0.1".into())
        );
        assert_eq!(Entity::parse("ip:127.0.0.1"), None);
        assert_eq!(Entity::parse("ip:not-an-ip"), None);
        assert_eq!(Entity::parse("host:-"), None);
        assert_eq!(
            Entity::parse("domain:evil.example").map(|e| e.key()),
            Some("domain:evil.example".into())
        );
        assert_eq!(
            Entity::parse("WS01").map(|e| e.key()),
            Some("entity:WS01".into())
        );
    }

    #[test]
    fn evidence_fields_name_entities_in_every_format() {
        let got = parse_entities(
            "host:WS01",
            &ev(&[
                ("Computer", "WS01"),
                ("TargetUserName", "Alice"),
                ("SubjectUserName", "-"),
                ("IpAddress", "10.1.2.3"),
                ("id.orig_h", "10.9.9.9"),
                ("Image", "C:\\Windows\\System32\\cmd.exe"),
                ("CommandLine", "cmd /c whoami"),
            ]),
        );
        let keys: Vec<String> = got.iter().map(Entity::key).collect();
        assert_eq!(
            keys,
            [
                "host:ws01",
                "user:alice",
                "ip:10.1.2.3",
                "ip:10.9.9.9",
                "process:C:\\Windows\\System32\\cmd.exe"
            ]
        );
    }

    #[test]
    fn author_and_intel_come_from_evidence_and_tags() {
        assert_eq!(
            rule_author(&ev(&[("sigma.author", "Florian Roth")])),
            Some("Florian Roth".into())
        );
        assert_eq!(rule_author(&ev(&[("sigma.author", "unknown")])), None);
        let f = TriageFinding {
            tags: vec!["intel:feodo".into(), "INTEL:abuse".into(), "sigma".into()],
            intel_matches: 1,
            ..TriageFinding::default()
        };
        assert_eq!(f.intel_count(), 3);
    }
}
