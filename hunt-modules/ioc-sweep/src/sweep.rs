//! Matching one event's indicator values against the intel sets, and the
//! per-task bookkeeping, in plain Rust: the set lookup is passed in, so the
//! logic is unit-tested on the build machine without a host.

use std::collections::{BTreeMap, BTreeSet};

use quarry_sdk::{Counts, Distinct, Finding, MinMax, Severity};

use crate::indicators::Kind;

/// Name of the aggregate counting matching events per intel set.
pub const AGGREGATE_MATCHES_BY_SET: &str = "intel_matches_by_set";
/// Name of the aggregate counting matching events per indicator
/// (`kind:indicator`).
pub const AGGREGATE_MATCHES_BY_INDICATOR: &str = "intel_matches_by_indicator";
/// Name of the aggregate of the first and last match (ms since the epoch)
/// per indicator.
pub const AGGREGATE_INDICATOR_SEEN: &str = "intel_indicator_first_last_seen";
/// Name of the aggregate of the distinct hosts per indicator.
pub const AGGREGATE_HOSTS_BY_INDICATOR: &str = "intel_hosts_by_indicator";

/// Confidence of a match: the value is on a list someone vetted; what is
/// left is the list's own quality.
const CONFIDENCE: u8 = 90;
/// Most matches listed in one finding's evidence.
const MAX_LISTED_MATCHES: usize = 10;

/// The rule id of a finding whose first match is of `kind`.
pub fn rule(kind: Kind) -> &'static str {
    match kind {
        Kind::Hash => "ioc-sweep/hash-match",
        Kind::Url => "ioc-sweep/url-match",
        Kind::Domain => "ioc-sweep/domain-match",
        Kind::Ip => "ioc-sweep/ip-match",
    }
}

/// A value of an event that may be an indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// What kind of indicator it would be.
    pub kind: Kind,
    /// The value as the event has it (normalised), for evidence.
    pub observed: String,
    /// The values to look up, most specific first (a domain and its
    /// parents, the forms of a URL).
    pub lookups: Vec<String>,
    /// The field it came from.
    pub field: &'static str,
    /// A qualifier for evidence: the hash algorithm.
    pub detail: Option<&'static str>,
}

impl Candidate {
    /// A candidate looked up as observed.
    pub fn exact(kind: Kind, value: String, field: &'static str) -> Self {
        Candidate {
            kind,
            lookups: vec![value.clone()],
            observed: value,
            field,
            detail: None,
        }
    }
}

/// One match: which lookup of which candidate was in which set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match<'a> {
    /// The candidate.
    pub candidate: &'a Candidate,
    /// The value found in the set.
    pub indicator: &'a str,
    /// The set.
    pub set: &'a str,
}

impl Match<'_> {
    /// `kind:indicator`, the key of the per-indicator aggregates.
    pub fn key(&self) -> String {
        format!("{}:{}", self.candidate.kind, self.indicator)
    }

    fn kind_label(&self) -> String {
        match self.candidate.detail {
            Some(detail) => format!("{} ({detail})", self.candidate.kind),
            None => self.candidate.kind.to_string(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} in {} ({})",
            self.kind_label(),
            self.indicator,
            self.set,
            self.candidate.field
        )
    }
}

/// Which sets hold which kind of indicator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sets {
    /// Sets of file hashes.
    pub hash: Vec<String>,
    /// Sets of IP addresses.
    pub ip: Vec<String>,
    /// Sets of domain names.
    pub domain: Vec<String>,
    /// Sets of URLs.
    pub url: Vec<String>,
}

impl Sets {
    /// The sets of `kind`.
    pub fn of(&self, kind: Kind) -> &[String] {
        match kind {
            Kind::Hash => &self.hash,
            Kind::Ip => &self.ip,
            Kind::Domain => &self.domain,
            Kind::Url => &self.url,
        }
    }

    /// Whether no kind has a set.
    pub fn is_empty(&self) -> bool {
        self.hash.is_empty() && self.ip.is_empty() && self.domain.is_empty() && self.url.is_empty()
    }
}

/// Tuning, from the hunt's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The sets to look each kind up in (only sets that were shipped).
    pub sets: Sets,
    /// Findings per indicator and task; later matches are only counted.
    pub max_findings_per_indicator: u64,
}

/// The event an indicator was seen in, for the finding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Shard offset.
    pub offset: u64,
    /// The host that logged the event, if known.
    pub host: Option<String>,
    /// The client address (Zeek `id.orig_h`, Sysmon `SourceIp`), if known.
    pub source: Option<String>,
    /// Further evidence (process image, user, …), in order.
    pub evidence: Vec<(&'static str, String)>,
}

/// The per-task state.
#[derive(Debug)]
pub struct Sweep {
    config: Config,
    matches_by_set: Counts,
    matches_by_indicator: Counts,
    indicator_seen: MinMax,
    hosts_by_indicator: Distinct,
    /// Findings so far per `kind:indicator`.
    findings_by_indicator: BTreeMap<String, u64>,
    /// Matching events not reported because of the cap.
    suppressed: u64,
    events_checked: u64,
    lookups: u64,
}

/// What a task returns besides its findings.
#[derive(Debug)]
pub struct Report {
    /// Matching events per set.
    pub matches_by_set: Counts,
    /// Matching events per indicator.
    pub matches_by_indicator: Counts,
    /// First and last match per indicator.
    pub indicator_seen: MinMax,
    /// Distinct hosts per indicator.
    pub hosts_by_indicator: Distinct,
    /// Matching events not reported because of the cap.
    pub suppressed: u64,
    /// Events with at least one candidate.
    pub events_checked: u64,
    /// Set lookups made.
    pub lookups: u64,
}

impl Sweep {
    /// No matches yet.
    pub fn new(config: Config) -> Self {
        Sweep {
            config,
            matches_by_set: Counts::new(AGGREGATE_MATCHES_BY_SET),
            matches_by_indicator: Counts::new(AGGREGATE_MATCHES_BY_INDICATOR),
            indicator_seen: MinMax::new(AGGREGATE_INDICATOR_SEEN),
            hosts_by_indicator: Distinct::new(AGGREGATE_HOSTS_BY_INDICATOR),
            findings_by_indicator: BTreeMap::new(),
            suppressed: 0,
            events_checked: 0,
            lookups: 0,
        }
    }

    /// Looks the candidates of one event up (`contains(set, value)`) and
    /// returns the event's finding, if anything matched and the cap allows.
    pub fn check(
        &mut self,
        candidates: &[Candidate],
        context: &Context,
        mut contains: impl FnMut(&str, &str) -> bool,
    ) -> Option<Finding> {
        if candidates.is_empty() {
            return None;
        }
        self.events_checked += 1;
        let mut matches: Vec<Match<'_>> = Vec::new();
        for candidate in candidates {
            // One match per candidate and set: the most specific lookup.
            for set in self.config.sets.of(candidate.kind) {
                for lookup in &candidate.lookups {
                    self.lookups += 1;
                    if contains(set, lookup) {
                        matches.push(Match {
                            candidate,
                            indicator: lookup,
                            set,
                        });
                        break;
                    }
                }
            }
        }
        if matches.is_empty() {
            return None;
        }
        // The most specific kind leads: a hash names the file, a URL the
        // request; an address may be shared infrastructure.
        matches.sort_by_key(|m| m.candidate.kind);
        // The same indicator in two fields of the event is one match.
        let mut seen = BTreeSet::new();
        matches.retain(|m| seen.insert((m.set, m.key())));

        let mut sets: Vec<&str> = matches.iter().map(|m| m.set).collect();
        sets.sort_unstable();
        sets.dedup();
        for set in sets {
            self.matches_by_set.increment(set);
        }
        let mut keys: Vec<String> = matches.iter().map(Match::key).collect();
        keys.sort_unstable();
        keys.dedup();
        let host = context
            .host
            .as_deref()
            .or(context.source.as_deref())
            .unwrap_or("unknown");
        for key in &keys {
            self.matches_by_indicator.increment(key);
            self.indicator_seen.observe(key, context.timestamp_ms);
            self.hosts_by_indicator.insert(key, host);
        }

        let primary = &matches[0];
        let reported = self.findings_by_indicator.entry(primary.key()).or_insert(0);
        if *reported >= self.config.max_findings_per_indicator {
            self.suppressed += 1;
            return None;
        }
        *reported += 1;
        Some(finding(&matches, context))
    }

    /// Ends the task.
    pub fn finish(self) -> Report {
        Report {
            matches_by_set: self.matches_by_set,
            matches_by_indicator: self.matches_by_indicator,
            indicator_seen: self.indicator_seen,
            hosts_by_indicator: self.hosts_by_indicator,
            suppressed: self.suppressed,
            events_checked: self.events_checked,
            lookups: self.lookups,
        }
    }
}

fn finding(matches: &[Match<'_>], context: &Context) -> Finding {
    let primary = &matches[0];
    let candidate = primary.candidate;
    let mut title = format!(
        "Known-bad {} {} (intel set {}) in {}",
        primary.kind_label(),
        primary.indicator,
        primary.set,
        candidate.field
    );
    if matches.len() > 1 {
        title.push_str(&format!(" and {} more", matches.len() - 1));
    }
    let entity = match (&context.host, &context.source) {
        (Some(host), _) => format!("host:{host}"),
        (None, Some(source)) => format!("ip:{source}"),
        (None, None) => "unknown".to_owned(),
    };
    let listed: Vec<String> = matches
        .iter()
        .take(MAX_LISTED_MATCHES)
        .map(Match::describe)
        .collect();
    let mut all = listed.join("; ");
    if matches.len() > MAX_LISTED_MATCHES {
        all.push_str("; …");
    }
    let mut builder = Finding::builder(rule(candidate.kind), title)
        .severity(Severity::High)
        .confidence(CONFIDENCE)
        .entity(entity)
        .timestamp_ms(context.timestamp_ms)
        .evidence("indicator", primary.indicator)
        .evidence("indicator_type", primary.kind_label())
        .evidence("intel_set", primary.set)
        .tag("ioc")
        .tags(matches.iter().map(|m| format!("intel:{}", m.set)))
        .evidence("field", candidate.field)
        .evidence("observed_value", &candidate.observed)
        .evidence("matches", all);
    if let Some(host) = &context.host {
        builder = builder.evidence("host", host);
    }
    if let Some(source) = &context.source {
        builder = builder.evidence("source", source);
    }
    for (key, value) in &context.evidence {
        builder = builder.evidence(*key, value);
    }
    builder.offset(context.offset).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: u64) -> Config {
        Config {
            sets: Sets {
                hash: vec!["hashes".into()],
                ip: vec!["ips".into(), "c2".into()],
                domain: vec!["domains".into()],
                url: vec![],
            },
            max_findings_per_indicator: max,
        }
    }

    /// A lookup over fixed (set, value) pairs.
    struct Intel(BTreeSet<(&'static str, &'static str)>);

    impl Intel {
        fn contains(&self, set: &str, value: &str) -> bool {
            self.0.iter().any(|&(s, v)| s == set && v == value)
        }
    }

    fn intel() -> Intel {
        Intel(
            [
                ("ips", "203.0.113.7"),
                ("c2", "203.0.113.7"),
                ("domains", "evil.example"),
                ("hashes", "2e5a8590cf6848968fc23de3fa1e25f1"),
            ]
            .into(),
        )
    }

    fn context(offset: u64, host: Option<&str>) -> Context {
        Context {
            timestamp_ms: 1_000 + offset as i64,
            offset,
            host: host.map(str::to_owned),
            source: Some("10.0.0.5".into()),
            evidence: vec![("image", "c:\\x.exe".into())],
        }
    }

    fn domain(observed: &str, lookups: &[&str]) -> Candidate {
        Candidate {
            kind: Kind::Domain,
            observed: observed.into(),
            lookups: lookups.iter().map(|s| (*s).to_owned()).collect(),
            field: "QueryName",
            detail: None,
        }
    }

    #[test]
    fn one_finding_per_event_led_by_the_most_specific_match() {
        let intel = intel();
        let mut sweep = Sweep::new(config(10));
        let candidates = vec![
            Candidate::exact(Kind::Ip, "203.0.113.7".into(), "DestinationIp"),
            Candidate {
                detail: Some("MD5"),
                ..Candidate::exact(
                    Kind::Hash,
                    "2e5a8590cf6848968fc23de3fa1e25f1".into(),
                    "Hashes",
                )
            },
            Candidate::exact(Kind::Ip, "10.0.0.5".into(), "SourceIp"),
        ];
        let f = sweep
            .check(&candidates, &context(7, Some("ws01")), |s, v| {
                intel.contains(s, v)
            })
            .expect("a match");
        assert_eq!(f.rule, "ioc-sweep/hash-match");
        assert_eq!(f.severity, Severity::High);
        assert!(f.confidence >= 80);
        assert_eq!(f.entity, "host:ws01");
        assert_eq!(f.offsets, [7]);
        assert_eq!(
            f.evidence_value("indicator"),
            Some("2e5a8590cf6848968fc23de3fa1e25f1")
        );
        assert_eq!(f.evidence_value("indicator_type"), Some("hash (MD5)"));
        assert_eq!(f.evidence_value("intel_set"), Some("hashes"));
        assert_eq!(f.evidence_value("field"), Some("Hashes"));
        assert_eq!(f.evidence_value("image"), Some("c:\\x.exe"));
        assert_eq!(
            f.evidence_value("matches"),
            Some(
                "hash (MD5) 2e5a8590cf6848968fc23de3fa1e25f1 in hashes (Hashes); \
                 ip 203.0.113.7 in ips (DestinationIp); ip 203.0.113.7 in c2 (DestinationIp)"
            )
        );
        assert!(f.title.ends_with("and 2 more"), "{}", f.title);
        let report = sweep.finish();
        assert_eq!(report.matches_by_set.get("c2"), 1);
        assert_eq!(report.matches_by_set.get("hashes"), 1);
        assert_eq!(report.matches_by_indicator.get("ip:203.0.113.7"), 1);
        assert_eq!(report.hosts_by_indicator.count("ip:203.0.113.7"), 1);
    }

    #[test]
    fn a_listed_parent_domain_matches_its_subdomains() {
        let intel = intel();
        let mut sweep = Sweep::new(config(10));
        let candidates = vec![domain(
            "cdn.a.evil.example",
            &["cdn.a.evil.example", "a.evil.example", "evil.example"],
        )];
        let f = sweep
            .check(&candidates, &context(1, None), |s, v| intel.contains(s, v))
            .expect("a match");
        assert_eq!(f.rule, "ioc-sweep/domain-match");
        assert_eq!(f.entity, "ip:10.0.0.5", "no host: the client");
        assert_eq!(f.evidence_value("indicator"), Some("evil.example"));
        assert_eq!(
            f.evidence_value("observed_value"),
            Some("cdn.a.evil.example")
        );
        // A look-alike is not a subdomain.
        let candidates = vec![domain("notevil.example", &["notevil.example"])];
        assert_eq!(
            sweep.check(&candidates, &context(2, None), |s, v| intel.contains(s, v)),
            None
        );
        assert_eq!(sweep.check(&[], &context(3, None), |_, _| true), None);
        let report = sweep.finish();
        assert_eq!(report.events_checked, 2);
        assert_eq!(report.lookups, 4);
    }

    #[test]
    fn findings_per_indicator_are_capped_but_counted() {
        let intel = intel();
        let mut sweep = Sweep::new(config(2));
        let candidates = vec![Candidate::exact(
            Kind::Ip,
            "203.0.113.7".into(),
            "id.resp_h",
        )];
        let reported = (0..5)
            .filter_map(|i| {
                sweep.check(&candidates, &context(i, Some("h")), |s, v| {
                    intel.contains(s, v)
                })
            })
            .count();
        assert_eq!(reported, 2);
        let report = sweep.finish();
        assert_eq!(report.suppressed, 3);
        assert_eq!(report.matches_by_indicator.get("ip:203.0.113.7"), 5);
        let seen = report.indicator_seen.get("ip:203.0.113.7").expect("seen");
        assert_eq!((seen.min, seen.max, seen.count), (1_000, 1_004, 5));
    }
}
