//! `sigma`: a hunt module that evaluates Sigma detection rules.
//!
//! The evaluator is a plain library ([`RuleSet`] and the modules below) with
//! native tests; [`SigmaHunt`] is the thin [`Hunt`] implementation that the
//! wasm component exports. See `docs/sigma.md` for the parameter format, the
//! supported modifiers, the log-source mapping and the coverage of the
//! SigmaHQ rules.
//!
//! # Parameters
//!
//! | name | value |
//! | --- | --- |
//! | `rule.<name>` | the YAML text of one rule file (one or several documents: detection rules and correlations); any number of them ([`loader::rule_params`] builds them from files and directories) |
//! | `min_level` | skip rules below this level: `informational` (default), `low`, `medium`, `high`, `critical` |
//! | `max_findings_per_rule` | findings per rule and task (default 100); further matches are only counted in the `sigma_matches_by_rule` aggregate |
//! | `strict` | `true`: fail the task when any rule cannot be evaluated (default `false`: skip it and log why) |
//! | `placeholder.<name>` | values of the `%name%` placeholder for the `expand` modifier, one per line |
//!
//! # Findings
//!
//! One finding per matching event and rule: rule `sigma/<rule id>`, the
//! rule's title, severity from its level, entity `host:<computer>`, the
//! ATT&CK techniques of its `attack.tNNNN` tags, and evidence: the rule's id,
//! title, level, status and author (the Detection Rule License
//! requires the author's attribution to travel with alerts), the log source,
//! the event fields of the searches that matched, and the event's who and
//! where when it has them (accounts, source address and workstation,
//! process and parent: `CONTEXT_FIELDS`).
//!
//! # Correlations
//!
//! A Sigma 2 correlation rule among the parameters references base rules
//! of the hunt by `name` or `id`. Each task records every match of a base
//! rule, with its group-by values and time, in the correlation's partial
//! state (`quarry_sdk::correlation`), returned as the aggregate
//! `correlation:<id>`; the coordinator merges the tasks' states and
//! evaluates the condition, so the findings (rule `sigma/<correlation
//! id>`) come out of the merge, across hosts and shards. Base rules report
//! no findings of their own unless a correlation using them has
//! `generate: true`.

#![warn(missing_docs)]

pub mod condition;
pub mod engine;
pub mod fields;
pub mod loader;
pub mod logsource;
pub mod matcher;
pub mod rule;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use quarry_sdk::{
    Counts, Descriptor, Emitter, Event, Finding, Hunt, MatchOp, Output, Params, Predicate, Severity,
};

pub use engine::{CompileOptions, EventView, Match, PrefilterOp, Rejected, RuleMeta, RuleSet};
pub use fields::FieldTable;
pub use rule::{Level, Rule, RuleError};

/// The module's name, as its descriptor reports it.
pub const NAME: &str = "sigma";

/// The module's version (its crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest evidence value, in bytes; longer field values are cut.
const MAX_EVIDENCE_VALUE: usize = 1024;

/// Fields that name the host an event came from, best first.
const HOST_FIELDS: [&str; 5] = ["Computer", "Hostname", "HostName", "host", "@system"];

/// Who and where of an event, added to each finding's evidence when the
/// event has them, beside the fields the rule matched: the accounts, the
/// source address and workstation, the service a ticket is for, the process
/// and its parent. The matched
/// fields alone (a pipe name, an encryption type) cannot tell an
/// administrator's PsExec from an intruder's; these let a hunter, and a
/// triage suppression, tell them apart.
const CONTEXT_FIELDS: [&str; 9] = [
    "SubjectUserName",
    "TargetUserName",
    "User",
    "IpAddress",
    "SourceIp",
    "WorkstationName",
    "ServiceName",
    "Image",
    "ParentImage",
];

/// Prefix of the parameters that give placeholder values.
pub const PLACEHOLDER_PARAM_PREFIX: &str = "placeholder.";

/// The module's options (everything but the rules and placeholders).
const OPTIONS: [&str; 3] = ["min_level", "max_findings_per_rule", "strict"];

thread_local! {
    /// The rule set `plan` compiled, or the one the last task on this
    /// instance used (contract 0.2.3's reuse: the hunt's next task), keyed
    /// by a hash of its parameters, for `init` to take instead of
    /// compiling the rules again.
    static PLANNED: RefCell<Option<Compiled>> = const { RefCell::new(None) };
}

/// A compiled rule set kept between calls.
struct Compiled {
    key: u64,
    rules: RuleSet,
    /// An earlier task ran with it (rather than `plan` for this one).
    used: bool,
}

fn params_key(params: &Params) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for name in params.names() {
        name.hash(&mut hasher);
        params.get(name).hash(&mut hasher);
    }
    hasher.finish()
}

/// The module's options and its rules compiled onto `fields`.
fn compile(params: &Params, fields: FieldTable) -> Result<(RuleSet, u64), String> {
    if let Some(unknown) = params.names().find(|n| {
        !n.starts_with(loader::RULE_PARAM_PREFIX)
            && !n.starts_with(PLACEHOLDER_PARAM_PREFIX)
            && !OPTIONS.contains(n)
    }) {
        return Err(format!(
            "unknown parameter `{unknown}`; this module accepts `rule.<name>` (one Sigma rule each), `placeholder.<name>`, {}",
            OPTIONS.map(|o| format!("`{o}`")).join(", ")
        ));
    }
    let min_level = match params.get("min_level") {
        None => Level::Informational,
        Some(text) => Level::parse(text).ok_or_else(|| {
            format!(
                "parameter `min_level` must be informational, low, medium, high or critical, got `{text}`"
            )
        })?,
    };
    let max_findings_per_rule =
        params.u64_in_range_or("max_findings_per_rule", 100, 0..=1_000_000)?;
    let strict = params.bool_or("strict", false)?;
    let texts: Vec<(&str, &str)> = params
        .names()
        .filter(|n| n.starts_with(loader::RULE_PARAM_PREFIX))
        .filter_map(|n| Some((n, params.get(n)?)))
        .collect();
    if texts.is_empty() {
        return Err(
            "no rules: pass each Sigma rule file as a parameter `rule.<name>` holding its YAML"
                .to_owned(),
        );
    }
    let mut options = CompileOptions::with_min_level(min_level);
    for name in params.names() {
        if let Some(placeholder) = name.strip_prefix(PLACEHOLDER_PARAM_PREFIX) {
            let values = params
                .get(name)
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect();
            options.placeholders.insert(placeholder.to_owned(), values);
        }
    }
    let mut rules = RuleSet::compile_onto(texts, &options, fields);
    for rejected in rules.rejected() {
        quarry_sdk::log::warn(&format!(
            "skipping Sigma rule {}: {}",
            rejected.source, rejected.error
        ));
    }
    if strict && let Some(first) = rules.rejected().first() {
        return Err(format!(
            "{} Sigma rules cannot be evaluated (strict); first: {}: {}",
            rules.rejected().len(),
            first.source,
            first.error
        ));
    }
    // Findings name the host and carry the event's who and where.
    rules.project_also(&HOST_FIELDS);
    rules.project_also(&CONTEXT_FIELDS);
    quarry_sdk::log::info(&format!(
        "{} Sigma rules and {} correlations compiled into {} log-source groups reading {} fields, {} skipped",
        rules.len(),
        rules.correlation_count(),
        rules.gate_count(),
        rules.fields().len(),
        rules.rejected().len()
    ));
    Ok((rules, max_findings_per_rule))
}

/// The hunt: a compiled rule set, per-rule match counts and the partial
/// state of each correlation.
pub struct SigmaHunt {
    /// Its parameters' hash, under which `finish` keeps the rules.
    key: u64,
    rules: RuleSet,
    max_findings_per_rule: u64,
    matches: Vec<u64>,
    by_rule: Counts,
    hosts: Vec<usize>,
    context: Vec<usize>,
    correlations: Vec<quarry_sdk::correlation::Correlation>,
}

impl SigmaHunt {
    /// The compiled rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }
}

/// The finding severity of a Sigma level.
pub fn severity(level: Level) -> Severity {
    match level {
        Level::Informational => Severity::Informational,
        Level::Low => Severity::Low,
        Level::Medium => Severity::Medium,
        Level::High => Severity::High,
        Level::Critical => Severity::Critical,
    }
}

/// Confidence from the rule's maturity: stable rules have been tuned on
/// real data, experimental ones not.
fn confidence(status: Option<&str>) -> u8 {
    match status {
        Some("stable") => 70,
        Some("test") => 60,
        Some("experimental") => 50,
        _ => 40,
    }
}

fn cut(value: &str) -> &str {
    cut_to(value, MAX_EVIDENCE_VALUE)
}

/// `value` cut to at most `max` bytes, at a character boundary.
fn cut_to(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

impl Hunt for SigmaHunt {
    /// Compiling thousands of rules is most of a task's set-up: the hunt's
    /// next task on this instance takes them from `finish`.
    const REUSABLE: bool = true;

    fn describe() -> Descriptor {
        // No prefilter: the rules arrive with the parameters, after the
        // host has read the descriptor, so any static prefilter could hide
        // events a rule needs. A host that plans gets the rules' own.
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Evaluates Sigma detection rules, passed as `rule.<name>` parameters, against events.",
            )
            .with_fields(fields::FIELDS)
    }

    /// Compiles the rules and declares exactly the fields they read, and
    /// an any-of prefilter of their log sources (see
    /// [`RuleSet::any_of_prefilter`]).
    fn plan(params: &Params) -> Result<Option<Descriptor>, String> {
        let (rules, _) = compile(params, FieldTable::planned())?;
        let mut descriptor = Self::describe();
        descriptor.fields = rules.fields().names().to_vec();
        if let Some(clauses) = rules.any_of_prefilter() {
            let group = clauses
                .iter()
                .map(|(field, op, values)| {
                    let values: Vec<&str> = values.iter().map(String::as_str).collect();
                    match op {
                        PrefilterOp::Equals => {
                            Predicate::new(field.as_str(), MatchOp::Equals, &values)
                        }
                        PrefilterOp::Exists => Predicate::exists(field.as_str()),
                    }
                })
                .collect();
            descriptor = descriptor.with_any_of(group);
        }
        let key = params_key(params);
        PLANNED.with_borrow_mut(|planned| {
            *planned = Some(Compiled {
                key,
                rules,
                used: false,
            })
        });
        Ok(Some(descriptor))
    }

    fn new(params: &Params) -> Result<Self, String> {
        let key = params_key(params);
        let planned = PLANNED
            .with_borrow_mut(Option::take)
            .filter(|compiled| compiled.key == key);
        let (mut rules, max_findings_per_rule) = match planned {
            // `plan` (or the first task) has checked the options; only the
            // cap is read again.
            Some(Compiled { rules, used, .. }) => {
                if used {
                    quarry_sdk::log::info(&format!(
                        "{} Sigma rules and {} correlations reused from this hunt's previous task on this instance",
                        rules.len(),
                        rules.correlation_count()
                    ));
                }
                (
                    rules,
                    params.u64_in_range_or("max_findings_per_rule", 100, 0..=1_000_000)?,
                )
            }
            // A host that does not plan projects the catalogue.
            None => compile(params, FieldTable::catalogue())?,
        };
        let hosts = rules.project_also(&HOST_FIELDS);
        let context = rules.project_also(&CONTEXT_FIELDS);
        Ok(SigmaHunt {
            key,
            matches: vec![0; rules.len()],
            correlations: rules.correlation_states(),
            rules,
            max_findings_per_rule,
            by_rule: Counts::new("sigma_matches_by_rule"),
            hosts,
            context,
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        let mut counted: HashMap<usize, u64> = HashMap::new();
        for event in batch {
            let view = EventView::new(&event.values);
            for hit in self.rules.matches(&view) {
                *counted.entry(hit.index).or_default() += 1;
                // Correlations see every match, whether or not the rule
                // reports it or has reached its findings cap.
                self.rules
                    .observe(hit.index, &view, event.timestamp_ms, &mut self.correlations);
                if !self.rules.reports(hit.index) {
                    continue;
                }
                self.matches[hit.index] += 1;
                if self.matches[hit.index] > self.max_findings_per_rule {
                    continue;
                }
                out.emit(finding(
                    hit,
                    &view,
                    event,
                    self.rules.fields(),
                    &self.hosts,
                    &self.context,
                ));
            }
        }
        for (index, n) in counted {
            let meta = self.rules.rule(index);
            self.by_rule
                .add(&format!("{} ({})", meta.title, meta.id), n);
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        for (index, &n) in self.matches.iter().enumerate() {
            if n > self.max_findings_per_rule {
                quarry_sdk::log::info(&format!(
                    "Sigma rule {} matched {n} events; {} findings reported",
                    self.rules.rule(index).title,
                    self.max_findings_per_rule
                ));
            }
        }
        out.aggregate(self.by_rule);
        // Every correlation's partial state, even empty, so the coordinator
        // knows it ran; it evaluates them after the merge.
        for correlation in self.correlations {
            out.aggregate(correlation);
        }
        // For the hunt's next task, if the host reuses this instance; the
        // per-task state (matches, counts, correlations) is gone with self.
        PLANNED.with_borrow_mut(|planned| {
            *planned = Some(Compiled {
                key: self.key,
                rules: self.rules,
                used: true,
            })
        });
    }
}

fn finding(
    hit: Match<'_>,
    view: &EventView<'_>,
    event: &Event,
    table: &FieldTable,
    hosts: &[usize],
    context: &[usize],
) -> Finding {
    let meta = hit.rule;
    let host = hosts
        .iter()
        .find_map(|&i| view.get(i).filter(|h| !h.is_empty()))
        .unwrap_or("unknown");
    let mut builder = Finding::builder(format!("sigma/{}", meta.id), meta.title.clone())
        .severity(severity(meta.level))
        .confidence(confidence(meta.status.as_deref()))
        .entity(format!("host:{host}"))
        .timestamp_ms(event.timestamp_ms)
        .techniques(meta.techniques.iter().cloned())
        .offset(event.offset)
        .evidence("sigma.id", &meta.id)
        .evidence("sigma.title", &meta.title)
        .evidence("sigma.level", meta.level.name())
        .evidence("sigma.status", meta.status.as_deref().unwrap_or("unknown"))
        .evidence("sigma.author", meta.author.as_deref().unwrap_or("unknown"))
        .evidence("sigma.license", "DRL-1.1")
        .evidence("sigma.logsource", &meta.logsource);
    // The rule's tags other than ATT&CK techniques (`attack.discovery`,
    // `cve.2021-44228`, `detection.threat-hunting`) become finding tags.
    builder = builder.tag("sigma").tags(meta.other_tags.iter().cloned());
    for &field in &hit.fields {
        if let Some(value) = view.get(field) {
            builder = builder.evidence(table.name(field), cut(value));
        }
    }
    for &field in context.iter().filter(|f| !hit.fields.contains(f)) {
        if let Some(value) = view.get(field).filter(|v| !v.is_empty()) {
            builder = builder.evidence(table.name(field), cut(value));
        }
    }
    builder.build()
}

quarry_sdk::export_hunt!(SigmaHunt);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::Task;

    const RULE: &str = r#"
title: Whoami Execution
id: 11111111-2222-3333-4444-555555555555
status: stable
author: Someone
level: medium
tags: [attack.discovery, attack.t1033]
logsource: {category: process_creation, product: windows}
detection:
    selection:
        Image|endswith: '\whoami.exe'
    condition: selection
"#;

    /// An event projected onto the static catalogue, as a host that does
    /// not plan projects it.
    fn event(offset: u64, image: &str) -> Event {
        let mut values = vec![None; fields::FIELDS.len()];
        let mut set = |name: &str, value: &str| {
            values[fields::index(name).unwrap()] = Some(value.to_owned());
        };
        set("Channel", "Microsoft-Windows-Sysmon/Operational");
        set("EventID", "1");
        set("Image", image);
        set("Computer", "WS01");
        set("User", r"CORP\alice");
        set("ParentImage", "");
        Event::new(1_000 + offset as i64, offset, values)
    }

    /// [`event`] projected onto a planned descriptor's fields, as the host
    /// does for a planned task.
    fn planned_event(descriptor: &Descriptor, offset: u64, image: &str) -> Event {
        let catalogue = event(offset, image);
        let values = descriptor
            .fields
            .iter()
            .map(|name| fields::index(name).and_then(|i| catalogue.values[i].clone()))
            .collect();
        Event::new(catalogue.timestamp_ms, offset, values)
    }

    fn params(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut list = vec![("rule.whoami.yml".to_owned(), RULE.to_owned())];
        list.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        list
    }

    #[test]
    fn findings_carry_rule_identity_and_attribution() {
        let mut task = Task::<SigmaHunt>::new();
        task.init(params(&[])).unwrap();
        let found = task
            .scan(vec![
                event(0, r"C:\Windows\System32\whoami.exe"),
                event(1, r"C:\Windows\System32\cmd.exe"),
            ])
            .unwrap();
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(f.rule, "sigma/11111111-2222-3333-4444-555555555555");
        assert_eq!(f.title, "Whoami Execution");
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.confidence, 70);
        assert_eq!(f.entity, "host:WS01");
        assert_eq!(f.techniques, ["T1033"]);
        assert_eq!(f.offsets, [0]);
        assert_eq!(f.evidence_value("sigma.author"), Some("Someone"));
        assert_eq!(f.tags, ["attack.discovery", "sigma"]);
        assert_eq!(
            f.evidence_value("Image"),
            Some(r"C:\Windows\System32\whoami.exe")
        );
        // The event's who comes along, once; an empty context field does not.
        assert_eq!(f.evidence_value("User"), Some(r"CORP\alice"));
        assert_eq!(f.evidence.iter().filter(|(k, _)| k == "Image").count(), 1);
        assert_eq!(f.evidence_value("ParentImage"), None);
        let output = task.finish().unwrap();
        assert_eq!(
            output.aggregates[0].counts(),
            [(
                "Whoami Execution (11111111-2222-3333-4444-555555555555)".to_owned(),
                1
            )]
        );
    }

    /// A planned task reads only the rule's fields plus the finding's
    /// host and context fields, prefilters by the rule's log source, and
    /// finds the same as an unplanned one.
    #[test]
    fn planned_tasks_project_only_what_the_rules_read() {
        let mut task = Task::<SigmaHunt>::new();
        let descriptor = task
            .plan(params(&[]))
            .unwrap()
            .expect("a planned descriptor");
        assert_eq!(descriptor.name, NAME);
        assert!(descriptor.fields.len() < 20, "{:?}", descriptor.fields);
        for name in [
            "Image",
            "Channel",
            "EventID",
            "Computer",
            "User",
            "ParentImage",
        ] {
            assert!(descriptor.fields.iter().any(|f| f == name), "{name}");
        }
        assert_eq!(descriptor.any_of.len(), 1, "{:?}", descriptor.any_of);
        task.init(params(&[])).unwrap();
        let project = |offset: u64, image: &str| planned_event(&descriptor, offset, image);
        let found = task
            .scan(vec![
                project(0, r"C:\Windows\System32\whoami.exe"),
                project(1, r"C:\x\cmd.exe"),
            ])
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].entity, "host:WS01");
        assert_eq!(found[0].evidence_value("User"), Some(r"CORP\alice"));
        // Bad parameters fail the plan, as they would fail init.
        let err = Task::<SigmaHunt>::new()
            .plan(params(&[("rules", "x")]))
            .unwrap_err();
        assert!(err.contains("unknown parameter `rules`"), "{err}");
    }

    /// The hunt's next task on the same instance (contract 0.2.3) runs on
    /// the rules the first compiled, with fresh counts: the same events
    /// give the same findings and aggregates, and the plan's projection
    /// still fits.
    #[test]
    fn a_reused_instance_keeps_its_rules_and_starts_counting_afresh() {
        let mut task = Task::<SigmaHunt>::new();
        let descriptor = task.plan(params(&[])).unwrap().expect("planned");
        let project = |offset: u64, image: &str| planned_event(&descriptor, offset, image);
        let run = |task: &mut Task<SigmaHunt>| {
            task.init(params(&[])).unwrap();
            let found = task
                .scan(vec![
                    project(0, r"C:\Windows\System32\whoami.exe"),
                    project(1, r"C:\x\cmd.exe"),
                ])
                .unwrap();
            (found, task.finish().unwrap().aggregates)
        };
        let first = run(&mut task);
        assert!(task.reset());
        let fields_before = PLANNED.with_borrow(|p| p.as_ref().map(|c| c.rules.fields().len()));
        let second = run(&mut task);
        assert_eq!(first, second);
        assert_eq!(first.0.len(), 1);
        assert_eq!(first.1[0].counts()[0].1, 1);
        // Taking the rules again interns no new fields.
        let fields_after = PLANNED.with_borrow(|p| p.as_ref().map(|c| c.rules.fields().len()));
        assert_eq!(fields_before, fields_after);
        assert!(PLANNED.with_borrow(|p| p.as_ref().is_some_and(|c| c.used)));
    }

    #[test]
    fn findings_per_rule_are_capped_but_counted() {
        let mut task = Task::<SigmaHunt>::new();
        task.init(params(&[("max_findings_per_rule", "2")]))
            .unwrap();
        let batch = (0..5).map(|i| event(i, r"C:\x\whoami.exe")).collect();
        assert_eq!(task.scan(batch).unwrap().len(), 2);
        let output = task.finish().unwrap();
        assert_eq!(output.aggregates[0].counts()[0].1, 5);
    }

    #[test]
    fn parameter_errors_are_precise() {
        let mut task = Task::<SigmaHunt>::new();
        assert!(task.init(vec![]).unwrap_err().contains("no rules"));
        let err = task.init(params(&[("rules", "x")])).unwrap_err();
        assert!(err.contains("unknown parameter `rules`"), "{err}");
        let err = task.init(params(&[("min_level", "severe")])).unwrap_err();
        assert!(err.contains("min_level"), "{err}");
        let bad = vec![
            ("rule.a.yml".to_owned(), RULE.to_owned()),
            ("rule.b.yml".to_owned(), "title: [".to_owned()),
        ];
        let err = task
            .init(
                bad.iter()
                    .cloned()
                    .chain([("strict".to_owned(), "true".to_owned())])
                    .collect(),
            )
            .unwrap_err();
        assert!(err.contains("rule.b.yml"), "{err}");
        // Not strict: the bad rule is skipped.
        task.init(bad).unwrap();
    }

    /// A correlation and its base rule in one file: "three failed logons
    /// for one account within a minute".
    const CORRELATION_PACK: &str = r#"
title: Many failed logons
id: c-many
level: high
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [TargetUserName]
    timespan: 1m
    condition:
        gte: 3
---
title: Failed logon
id: f-1
name: failed_logon
level: low
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4625
    condition: selection
"#;

    fn failed_logon(offset: u64, at: i64, user: &str) -> Event {
        let mut values = vec![None; fields::FIELDS.len()];
        let mut set = |name: &str, value: &str| {
            values[fields::index(name).unwrap()] = Some(value.to_owned());
        };
        set("Channel", "Security");
        set("EventID", "4625");
        set("TargetUserName", user);
        set("Computer", "DC01");
        Event::new(at, offset, values)
    }

    /// Each task (shard) emits its partial state; the condition holds
    /// only across both, after the merge, as the coordinator evaluates it.
    /// The base rule reports no findings of its own (no `generate`).
    #[test]
    fn correlations_emit_partial_state_that_meets_the_condition_after_the_merge() {
        let params = vec![("rule.pack.yml".to_owned(), CORRELATION_PACK.to_owned())];
        let shard = |events: Vec<Event>| {
            let mut task = Task::<SigmaHunt>::new();
            task.init(params.clone()).unwrap();
            assert_eq!(task.scan(events).unwrap(), [], "no base-rule findings");
            task.finish().unwrap().aggregates
        };
        let a = shard(vec![
            failed_logon(0, 1_000, "alice"),
            failed_logon(1, 2_000, "alice"),
        ]);
        let b = shard(vec![
            failed_logon(0, 30_000, "alice"),
            failed_logon(1, 31_000, "bob"),
        ]);
        let evaluate = |aggregates: Vec<quarry_sdk::Aggregate>| {
            let merged = quarry_sdk::merge(aggregates).unwrap();
            let name = "correlation:c-many";
            quarry_sdk::correlation::evaluate(name, &merged[name])
                .expect("a correlation")
                .expect("evaluates")
        };
        assert!(
            evaluate(a.clone()).hits.is_empty(),
            "one shard is not enough"
        );
        let outcome = evaluate(a.into_iter().chain(b).collect());
        assert_eq!(outcome.hits.len(), 1, "{outcome:?}");
        assert_eq!(outcome.hits[0].group, ["alice"]);
        assert_eq!(outcome.hits[0].events, 3);
        assert_eq!(outcome.spec.rule, "sigma/c-many");
        assert_eq!(outcome.spec.severity, "high");
        assert_eq!(outcome.spec.series, ["Failed logon"]);
        // A planned task declares the group-by field (planned last: `init`
        // on this thread would take the planned rule set, whose fields are
        // not the catalogue these events are projected on).
        let descriptor = Task::<SigmaHunt>::new()
            .plan(params)
            .unwrap()
            .expect("a planned descriptor");
        assert!(descriptor.fields.iter().any(|f| f == "TargetUserName"));
    }
}
