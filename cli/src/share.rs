//! Findings in forms other tools read (`quarry export findings`): JSON
//! lines, CSV, and a STIX 2.1 bundle.
//!
//! In STIX, a finding becomes what the spec has words for: the addresses,
//! domains, URLs, hashes and accounts it names are cyber observables in an
//! `observed-data` object; the host it was seen on is an `identity` of
//! class `system`; an intel indicator it matched (ioc-sweep's evidence) is
//! an `indicator` with a `sighting` of it there; an ATT&CK technique it
//! names is an `attack-pattern` with a `sighting`. Quarry's own details
//! (rule, title, severity, confidence, hunt) ride as `x_quarry_*`
//! properties. Identifiers are deterministic: exporting twice gives the
//! same bundle but its timestamps.

use crate::output::severity;
use quarry_proto::v1;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The UUIDv5 namespace STIX 2.1 gives for cyber-observable identifiers.
const SCO_NAMESPACE: uuid::Uuid = uuid::uuid!("00abedb4-aa42-466c-9c01-fed23315a9b7");
/// Quarry's namespace for the other objects' identifiers.
const QUARRY_NAMESPACE: uuid::Uuid = uuid::uuid!("6f0c5a3e-2b1d-5c7e-9a41-3e8f7d2c1b60");

fn stix_time(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The CSV header and one row per finding.
pub fn csv(findings: &[v1::Finding]) -> String {
    let mut out = String::from(
        "time,severity,confidence,rule,title,entity,shard,hunt_id,finding_id,techniques,evidence\n",
    );
    for f in findings {
        let evidence = f
            .evidence
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect::<Vec<_>>()
            .join("; ");
        let fields = [
            stix_time(f.timestamp_ms),
            severity(f.severity).to_owned(),
            f.confidence.to_string(),
            f.rule.clone(),
            f.title.clone(),
            f.entity.clone(),
            f.shard.clone(),
            f.hunt_id.clone(),
            f.finding_id.clone(),
            f.techniques.join(" "),
            evidence,
        ];
        let row: Vec<String> = fields.iter().map(|v| csv_field(v)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting; a leading `=`, `+`, `-` or `@` is prefixed with `'`
/// so a spreadsheet shows log text instead of evaluating it.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// A random-looking (version 4) UUID derived from `name`: the spec asks
/// for UUIDv4 on domain objects, and a derived one keeps exports
/// deterministic.
fn v4_of(name: &[u8]) -> uuid::Uuid {
    uuid::Builder::from_random_bytes(*uuid::Uuid::new_v5(&QUARRY_NAMESPACE, name).as_bytes())
        .into_uuid()
}

/// The extension that declares Quarry's `x_quarry_*` properties.
fn extension_id() -> String {
    format!(
        "extension-definition--{}",
        v4_of(b"quarry finding properties")
    )
}

/// Builds STIX objects, each once.
struct Bundle {
    objects: BTreeMap<String, Value>,
    created: String,
    creator: String,
}

impl Bundle {
    fn new(created: String) -> Self {
        let creator = format!("identity--{}", v4_of(b"quarry"));
        let mut bundle = Self {
            objects: BTreeMap::new(),
            created,
            creator: creator.clone(),
        };
        bundle.add(json!({
            "type": "identity", "id": creator, "name": "Quarry",
            "identity_class": "system",
            "description": "Quarry threat-hunting platform (findings export)",
        }));
        bundle.add(json!({
            "type": "extension-definition", "id": extension_id(),
            "name": "Quarry finding",
            "description": "What Quarry knows of the finding an object stands for.",
            "schema": "x_quarry_rule (the detection rule), x_quarry_title, x_quarry_severity (info, low, medium, high, critical), x_quarry_confidence (0-100), x_quarry_hunt (hunt id), x_quarry_finding (finding id), x_quarry_shard (log shard), x_quarry_alert (triage case id), x_quarry_score (0-100), x_quarry_state (triage state); see Quarry's docs/intel.md",
            "version": "1.0.0",
            "extension_types": ["toplevel-property-extension"],
            "extension_properties": [
                "x_quarry_rule", "x_quarry_title", "x_quarry_severity", "x_quarry_confidence",
                "x_quarry_hunt", "x_quarry_finding", "x_quarry_shard",
                "x_quarry_alert", "x_quarry_score", "x_quarry_state",
            ],
        }));
        bundle
    }

    /// Adds a domain object (SDO/SRO) with the common properties.
    fn add(&mut self, mut object: Value) -> String {
        let id = object["id"].as_str().unwrap_or_default().to_owned();
        object["spec_version"] = json!("2.1");
        object["created"] = json!(self.created);
        object["modified"] = json!(self.created);
        if object["type"] != "identity" || id != self.creator {
            object["created_by_ref"] = json!(self.creator);
        }
        self.objects.entry(id.clone()).or_insert(object);
        id
    }

    /// Adds a cyber observable; its id is a UUIDv5 of its identifying
    /// properties, as the spec asks.
    fn observable(&mut self, kind: &str, properties: Value) -> String {
        let key = serde_json::to_string(&properties).unwrap_or_default();
        let id = format!(
            "{kind}--{}",
            uuid::Uuid::new_v5(&SCO_NAMESPACE, key.as_bytes())
        );
        let mut object = properties;
        object["type"] = json!(kind);
        object["id"] = json!(id);
        object["spec_version"] = json!("2.1");
        self.objects.entry(id.clone()).or_insert(object);
        id
    }

    fn id(&self, kind: &str, name: &str) -> String {
        format!("{kind}--{}", v4_of(format!("{kind}/{name}").as_bytes()))
    }
}

/// An observable for `value` of ioc-sweep kind `kind` (`ip`, `domain`,
/// `url`, `hash (SHA256)`), with the STIX pattern of an indicator for it.
fn observable_of(bundle: &mut Bundle, kind: &str, value: &str) -> Option<(String, String)> {
    let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
    if kind == "ip" || kind.starts_with("ip") {
        let v6 = value.contains(':');
        let sco = if v6 { "ipv6-addr" } else { "ipv4-addr" };
        let id = bundle.observable(sco, json!({"value": value}));
        return Some((id, format!("[{sco}:value = '{quoted}']")));
    }
    if kind.starts_with("domain") {
        let id = bundle.observable("domain-name", json!({"value": value}));
        return Some((id, format!("[domain-name:value = '{quoted}']")));
    }
    if kind.starts_with("url") {
        let id = bundle.observable("url", json!({"value": value}));
        return Some((id, format!("[url:value = '{quoted}']")));
    }
    let algorithm = if kind.contains("SHA256") {
        "SHA-256"
    } else if kind.contains("SHA1") {
        "SHA-1"
    } else if kind.contains("MD5") {
        "MD5"
    } else {
        return None;
    };
    let id = bundle.observable("file", json!({"hashes": {algorithm: value}}));
    Some((id, format!("[file:hashes.'{algorithm}' = '{quoted}']")))
}

/// The observables an entity (`ip:…`, `user:…`, `domain:…`) names.
fn entity_observable(bundle: &mut Bundle, entity: &str) -> Option<String> {
    let (kind, value) = entity.split_once(':')?;
    match kind {
        "ip" => observable_of(bundle, "ip", value).map(|(id, _)| id),
        "domain" => observable_of(bundle, "domain", value).map(|(id, _)| id),
        "user" => Some(bundle.observable("user-account", json!({"account_login": value}))),
        _ => None,
    }
}

/// The STIX 2.1 bundle of `findings`; also how many findings had nothing
/// STIX can carry (no observable, indicator, technique or host).
pub fn stix(findings: &[v1::Finding], now_ms: i64) -> (Value, usize) {
    let mut bundle = Bundle::new(stix_time(now_ms));
    let mut left_out = 0;
    for f in findings {
        let when = stix_time(f.timestamp_ms);
        let evidence: BTreeMap<&str, &str> = f
            .evidence
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        let mut observables = Vec::new();
        let mut indicator = None;
        if let (Some(value), Some(kind)) =
            (evidence.get("indicator"), evidence.get("indicator_type"))
            && let Some((sco, pattern)) = observable_of(&mut bundle, kind, value)
        {
            observables.push(sco);
            let set = evidence.get("intel_set").copied().unwrap_or("intel");
            let id = bundle.id("indicator", &format!("{set}/{pattern}"));
            bundle.add(json!({
                "type": "indicator", "id": id,
                "name": format!("{value} (intel set {set})"),
                "description": format!("Indicator {value} from Quarry intel set {set}, matched by a hunt."),
                "indicator_types": ["malicious-activity"],
                "pattern": pattern, "pattern_type": "stix", "valid_from": when,
            }));
            indicator = Some(id);
        }
        if let Some(sco) = entity_observable(&mut bundle, &f.entity)
            && !observables.contains(&sco)
        {
            observables.push(sco);
        }
        let host = f
            .entity
            .strip_prefix("host:")
            .or_else(|| evidence.get("host").copied())
            .map(|name| {
                let id = bundle.id("identity", &format!("host/{name}"));
                bundle.add(json!({
                    "type": "identity", "id": id, "name": name, "identity_class": "system",
                }))
            });
        let quarry = json!({
            "x_quarry_rule": f.rule, "x_quarry_title": f.title,
            "x_quarry_severity": severity(f.severity), "x_quarry_confidence": f.confidence,
            "x_quarry_hunt": f.hunt_id, "x_quarry_finding": f.finding_id, "x_quarry_shard": f.shard,
            "extensions": {extension_id(): {"extension_type": "toplevel-property-extension"}},
        });
        let observed = (!observables.is_empty()).then(|| {
            let mut object = json!({
                "type": "observed-data", "id": bundle.id("observed-data", &f.finding_id),
                "first_observed": when, "last_observed": when, "number_observed": 1,
                "object_refs": observables,
            });
            merge(&mut object, &quarry);
            bundle.add(object)
        });
        let mut sighted = Vec::new();
        if let Some(indicator) = indicator {
            sighted.push(indicator);
        }
        for technique in &f.techniques {
            let id = bundle.id("attack-pattern", technique);
            sighted.push(bundle.add(json!({
                "type": "attack-pattern", "id": id, "name": technique,
                "external_references": [{
                    "source_name": "mitre-attack", "external_id": technique,
                    "url": format!("https://attack.mitre.org/techniques/{}/", technique.replace('.', "/")),
                }],
            })));
        }
        for (n, what) in sighted.iter().enumerate() {
            let mut sighting = json!({
                "type": "sighting",
                "id": bundle.id("sighting", &format!("{}/{n}", f.finding_id)),
                "sighting_of_ref": what, "first_seen": when, "last_seen": when, "count": 1,
            });
            if let Some(observed) = &observed {
                sighting["observed_data_refs"] = json!([observed]);
            }
            if let Some(host) = &host {
                sighting["where_sighted_refs"] = json!([host]);
            }
            merge(&mut sighting, &quarry);
            bundle.add(sighting);
        }
        if observed.is_none() && sighted.is_empty() {
            left_out += 1;
        }
    }
    let id = format!(
        "bundle--{}",
        v4_of(
            findings
                .iter()
                .map(|f| f.finding_id.as_str())
                .collect::<Vec<_>>()
                .join(",")
                .as_bytes()
        )
    );
    let objects: Vec<Value> = bundle.objects.into_values().collect();
    (
        json!({"type": "bundle", "id": id, "objects": objects}),
        left_out,
    )
}

/// The STIX 2.1 bundle of triage alerts and incidents: each one's hosts as
/// `identity` objects, its entity as observed data (`number_observed` its
/// finding count), and each ATT&CK technique as an `attack-pattern` with a
/// `sighting` over the case's first and last time seen.
pub fn stix_alerts(cases: &[v1::TriageCase], now_ms: i64) -> Value {
    let mut bundle = Bundle::new(stix_time(now_ms));
    for case in cases {
        let (first, last) = (
            stix_time(case.first_seen_ms),
            stix_time(case.last_seen_ms.max(case.first_seen_ms)),
        );
        let hosts: Vec<String> = case
            .hosts
            .iter()
            .map(|name| {
                let id = bundle.id("identity", &format!("host/{name}"));
                bundle.add(
                    json!({"type": "identity", "id": id, "name": name, "identity_class": "system"}),
                )
            })
            .collect();
        let quarry = json!({
            "x_quarry_alert": case.id, "x_quarry_title": case.title, "x_quarry_rule": case.rule,
            "x_quarry_severity": severity(case.severity), "x_quarry_score": case.score,
            "x_quarry_state": case.state,
            "extensions": {extension_id(): {"extension_type": "toplevel-property-extension"}},
        });
        let count = case.count.clamp(1, 999_999_999);
        let observed = entity_observable(&mut bundle, &case.entity).map(|sco| {
            let mut object = json!({
                "type": "observed-data", "id": bundle.id("observed-data", &format!("case/{}", case.id)),
                "first_observed": first, "last_observed": last, "number_observed": count,
                "object_refs": [sco],
            });
            merge(&mut object, &quarry);
            bundle.add(object)
        });
        for technique in &case.techniques {
            let pattern = bundle.id("attack-pattern", &technique.id);
            let name = if technique.name.is_empty() {
                &technique.id
            } else {
                &technique.name
            };
            bundle.add(json!({
                "type": "attack-pattern", "id": pattern, "name": name,
                "external_references": [{
                    "source_name": "mitre-attack", "external_id": technique.id,
                    "url": format!("https://attack.mitre.org/techniques/{}/", technique.id.replace('.', "/")),
                }],
            }));
            let mut sighting = json!({
                "type": "sighting", "id": bundle.id("sighting", &format!("case/{}/{}", case.id, technique.id)),
                "sighting_of_ref": pattern, "first_seen": first, "last_seen": last, "count": count,
            });
            if let Some(observed) = &observed {
                sighting["observed_data_refs"] = json!([observed]);
            }
            if !hosts.is_empty() {
                sighting["where_sighted_refs"] = json!(hosts);
            }
            merge(&mut sighting, &quarry);
            bundle.add(sighting);
        }
    }
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    let objects: Vec<Value> = bundle.objects.into_values().collect();
    json!({"type": "bundle", "id": format!("bundle--{}", v4_of(ids.join(",").as_bytes())), "objects": objects})
}

/// Triage cases as CSV: a header row, then one row per case.
pub fn csv_alerts(cases: &[v1::TriageCase]) -> String {
    let mut out = String::from(
        "id,kind,state,score,severity,title,rule,entity,count,first_seen,last_seen,hosts,techniques,intel_matches\n",
    );
    for c in cases {
        let fields = [
            c.id.clone(),
            c.kind.clone(),
            c.state.clone(),
            format!("{:.1}", c.score),
            severity(c.severity).to_owned(),
            c.title.clone(),
            c.rule.clone(),
            c.entity.clone(),
            c.count.to_string(),
            stix_time(c.first_seen_ms),
            stix_time(c.last_seen_ms),
            c.hosts.join(" "),
            c.techniques
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            c.intel_matches.to_string(),
        ];
        let row: Vec<String> = fields.iter().map(|v| csv_field(v)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

fn merge(object: &mut Value, extra: &Value) {
    if let (Some(object), Some(extra)) = (object.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            object.insert(k.clone(), v.clone());
        }
    }
}

/// `quarry export` subcommands.
#[derive(clap::Subcommand)]
pub enum ExportCommand {
    /// Triage alerts and incidents (open ones, or all) as JSON lines, CSV,
    /// or a STIX 2.1 bundle.
    #[command(
        after_help = "Examples:\n  quarry export alerts --format stix > alerts.stix.json\n  quarry export alerts --state all --format csv > alerts.csv"
    )]
    Alerts {
        /// open, closed or all.
        #[arg(long, default_value = "open")]
        state: String,
        /// jsonl, csv or stix.
        #[arg(long, value_enum, default_value_t = ShareFormat::Jsonl)]
        format: ShareFormat,
        #[command(flatten)]
        client: crate::client_args::ClientArgs,
    },
    /// A hunt's findings as JSON lines, CSV, or a STIX 2.1 bundle.
    #[command(
        after_help = "Examples:\n  quarry export findings h-12 --format stix > h-12.stix.json\n  quarry export findings h-12 --format csv > h-12.csv\n  quarry export findings h-12 --format jsonl"
    )]
    Findings {
        /// Hunt id.
        hunt: String,
        /// jsonl, csv or stix.
        #[arg(long, value_enum, default_value_t = ShareFormat::Jsonl)]
        format: ShareFormat,
        #[command(flatten)]
        client: crate::client_args::ClientArgs,
    },
}

/// What `quarry export` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ShareFormat {
    /// One JSON object per finding.
    Jsonl,
    /// A header row, then one row per finding.
    Csv,
    /// A STIX 2.1 bundle.
    Stix,
}

/// Runs a `quarry export` command.
pub async fn run(command: ExportCommand) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    match command {
        ExportCommand::Alerts {
            state,
            format,
            client,
        } => {
            let request = v1::ListCasesRequest {
                state,
                page_size: 1000,
                ..Default::default()
            };
            let cases = crate::client_args::connect(&client)
                .await?
                .all_cases(request, 0)
                .await?
                .cases;
            match format {
                ShareFormat::Jsonl => {
                    for c in &cases {
                        println!("{}", crate::output::triage::case_json(c));
                    }
                }
                ShareFormat::Csv => print!("{}", csv_alerts(&cases)),
                ShareFormat::Stix => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&stix_alerts(&cases, now))?
                    );
                }
            }
        }
        ExportCommand::Findings {
            hunt,
            format,
            client,
        } => {
            let findings = crate::client_args::connect(&client)
                .await?
                .findings(&hunt)
                .await?;
            match format {
                ShareFormat::Jsonl => {
                    for f in &findings {
                        println!("{}", crate::output::finding_json(f));
                    }
                }
                ShareFormat::Csv => print!("{}", csv(&findings)),
                ShareFormat::Stix => {
                    let (bundle, left_out) = stix(&findings, now);
                    println!("{}", serde_json::to_string_pretty(&bundle)?);
                    if left_out > 0 {
                        eprintln!(
                            "{left_out} of {} findings name no observable, indicator, technique or host and are not in the bundle",
                            findings.len()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(
        id: &str,
        entity: &str,
        evidence: &[(&str, &str)],
        techniques: &[&str],
    ) -> v1::Finding {
        v1::Finding {
            finding_id: id.into(),
            hunt_id: "h-1".into(),
            shard: "dc01".into(),
            rule: "ioc-sweep/ip-match".into(),
            title: "=cmd,\"quoted\"".into(),
            severity: v1::Severity::High as i32,
            confidence: 90,
            entity: entity.into(),
            timestamp_ms: 1_764_547_200_000,
            evidence: evidence
                .iter()
                .map(|(k, v)| v1::Evidence {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            techniques: techniques.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let text = csv(&[finding("f1", "host:ws1", &[("a", "b")], &[])]);
        let row = text.lines().nth(1).expect("row");
        assert!(row.contains("\"'=cmd,\"\"quoted\"\"\""), "{row}");
    }

    #[test]
    fn stix_has_sightings_of_matched_indicators_and_techniques_with_deterministic_ids() {
        let findings = [
            finding(
                "f1",
                "host:WS07",
                &[
                    ("indicator", "203.0.113.66"),
                    ("indicator_type", "ip"),
                    ("intel_set", "apt-x"),
                ],
                &["T1071.001"],
            ),
            finding("f2", "user:CORP\\bob", &[], &[]),
            finding("f3", "something-else", &[], &[]),
        ];
        let (bundle, left_out) = stix(&findings, 1_764_547_300_000);
        assert_eq!(left_out, 1);
        let objects = bundle["objects"].as_array().expect("objects");
        let of = |kind: &str| objects.iter().filter(|o| o["type"] == kind).count();
        assert_eq!(of("indicator"), 1);
        assert_eq!(of("sighting"), 2, "the indicator and the technique");
        assert_eq!(of("observed-data"), 2);
        assert_eq!(of("ipv4-addr"), 1);
        assert_eq!(of("user-account"), 1);
        assert_eq!(of("identity"), 2, "Quarry and the host");
        let indicator = objects
            .iter()
            .find(|o| o["type"] == "indicator")
            .expect("indicator");
        assert_eq!(indicator["pattern"], "[ipv4-addr:value = '203.0.113.66']");
        let again = stix(&findings, 1_764_547_300_000).0;
        assert_eq!(bundle, again, "identifiers are deterministic");
    }
}
