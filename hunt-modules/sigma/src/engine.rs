//! Compiled rule sets and their evaluation over events.
//!
//! [`RuleSet::compile`] parses each rule, maps its log source to
//! [alternatives](crate::logsource::Alternative), and compiles one variant of
//! the rule per alternative with every field resolved to its index in the
//! [field catalogue](crate::fields) and every value to a
//! [`ValueTest`]. Variants are grouped by their log-source constraints
//! ("gates"): an event is checked against each distinct gate once, and only
//! the rules behind the gates it passes are evaluated. Rules that cannot be
//! compiled are kept aside with their [`RuleError`].

use std::collections::HashMap;

use crate::condition::{self, Cond};
use crate::fields;
use crate::logsource::{self, Alternative, Constraint};
use crate::matcher::{FieldSource, Modifiers, RawValue, ValueTest, expand_placeholders};
use crate::rule::{Level, Rule, RuleError};

/// What a finding needs to know about a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMeta {
    /// Where the rule came from (parameter name or file path).
    pub source: String,
    /// Sigma `id`.
    pub id: String,
    /// Sigma `title`.
    pub title: String,
    /// Sigma `level`.
    pub level: Level,
    /// Sigma `status`.
    pub status: Option<String>,
    /// Sigma `author` (attribution required by the Detection Rule License).
    pub author: Option<String>,
    /// ATT&CK technique ids from the tags.
    pub techniques: Vec<String>,
    /// The other tags.
    pub other_tags: Vec<String>,
    /// The log source, as `[product:… category:… service:…]`.
    pub logsource: String,
}

#[derive(Debug)]
struct Item {
    /// `None`: keywords, searched in every projected field.
    field: Option<usize>,
    /// Read when the event does not have `field` (see [`fields::ALIASES`]).
    fallbacks: Vec<usize>,
    tests: Vec<ValueTest>,
    all: bool,
}

#[derive(Debug)]
struct Search {
    any_of: Vec<Vec<Item>>,
}

#[derive(Debug)]
struct Variant {
    searches: Vec<Search>,
    conditions: Vec<Cond>,
}

#[derive(Debug)]
struct CompiledRule {
    meta: RuleMeta,
    variants: Vec<Variant>,
}

#[derive(Debug, Clone)]
enum Gate {
    Equals(usize, Vec<String>),
    AnyExists(Vec<usize>),
}

/// How rules are compiled.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Rules below this level are left out.
    pub min_level: Level,
    /// Values of `%name%` placeholders for the `expand` modifier.
    pub placeholders: HashMap<String, Vec<String>>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            min_level: Level::Informational,
            placeholders: HashMap::new(),
        }
    }
}

impl CompileOptions {
    /// Default options with `min_level`.
    pub fn with_min_level(min_level: Level) -> Self {
        CompileOptions {
            min_level,
            ..CompileOptions::default()
        }
    }
}

/// A rule that could not be compiled, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Where the rule came from.
    pub source: String,
    /// Its title, when it got that far.
    pub title: Option<String>,
    /// Why.
    pub error: RuleError,
}

/// A rule that matched an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match<'a> {
    /// The rule.
    pub rule: &'a RuleMeta,
    /// Index of the rule in the set.
    pub index: usize,
    /// Fields (catalogue indexes) of the searches that matched.
    pub fields: Vec<usize>,
}

/// One event, as the engine reads it: the projected values plus their
/// lowercase forms (computed once per event).
pub struct EventView<'a> {
    values: &'a [Option<String>],
    lower: Vec<Option<String>>,
}

impl<'a> EventView<'a> {
    /// A view of `values`, projected onto [`fields::FIELDS`].
    pub fn new(values: &'a [Option<String>]) -> Self {
        let lower = values
            .iter()
            .map(|v| v.as_ref().map(|s| s.to_lowercase()))
            .collect();
        EventView { values, lower }
    }

    /// Value of catalogue field `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.values.get(index)?.as_deref()
    }
}

impl FieldSource for EventView<'_> {
    fn value(&self, index: usize) -> Option<(&str, &str)> {
        let value = self.values.get(index)?.as_deref()?;
        let lower = self.lower.get(index)?.as_deref()?;
        Some((value, lower))
    }
}

/// A compiled set of Sigma rules.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    gates: Vec<Vec<Gate>>,
    /// Per gate: (rule, variant) pairs behind it.
    behind: Vec<Vec<(usize, usize)>>,
    /// Per rule: its gates.
    gates_of: Vec<Vec<usize>>,
    rejected: Vec<Rejected>,
}

impl RuleSet {
    /// Compiles rules given as `(source, YAML text)`. Rules below
    /// `options.min_level` are left out (not rejected).
    pub fn compile<'a>(
        texts: impl IntoIterator<Item = (&'a str, &'a str)>,
        options: &CompileOptions,
    ) -> RuleSet {
        let mut set = RuleSet::default();
        let mut gate_ids: HashMap<Vec<Constraint>, usize> = HashMap::new();
        for (source, text) in texts {
            let rule = match Rule::parse(text) {
                Ok(rule) => rule,
                Err(error) => {
                    set.rejected.push(Rejected {
                        source: source.to_owned(),
                        title: None,
                        error,
                    });
                    continue;
                }
            };
            if rule.level < options.min_level {
                continue;
            }
            match compile_rule(&rule, source, options) {
                Ok((compiled, gates)) => {
                    let index = set.rules.len();
                    set.gates_of.push(Vec::new());
                    for (variant, constraints) in gates.into_iter().enumerate() {
                        let next = set.gates.len();
                        let gate = *gate_ids.entry(constraints.clone()).or_insert(next);
                        if gate == next {
                            set.gates.push(compile_gate(&constraints));
                            set.behind.push(Vec::new());
                        }
                        set.behind[gate].push((index, variant));
                        set.gates_of[index].push(gate);
                    }
                    set.rules.push(compiled);
                }
                Err(error) => set.rejected.push(Rejected {
                    source: source.to_owned(),
                    title: Some(rule.title.clone()),
                    error,
                }),
            }
        }
        set
    }

    /// Number of compiled (evaluable) rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule compiled.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Metadata of compiled rule `index`.
    pub fn rule(&self, index: usize) -> &RuleMeta {
        &self.rules[index].meta
    }

    /// The compiled rules' metadata.
    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.rules.iter().map(|r| &r.meta)
    }

    /// The rules that could not be compiled.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// Number of distinct log-source gates.
    pub fn gate_count(&self) -> usize {
        self.gates.len()
    }

    /// Whether `event` belongs to the log source of rule `index` (meets the
    /// constraints of one of its alternatives), whatever its detection says.
    pub fn applies(&self, index: usize, event: &EventView<'_>) -> bool {
        self.gates_of[index]
            .iter()
            .any(|&gate| gate_passes(&self.gates[gate], event))
    }

    /// Every rule that matches `event`, in rule order, each once.
    pub fn matches<'s>(&'s self, event: &EventView<'_>) -> Vec<Match<'s>> {
        let mut hits: Vec<Match<'s>> = Vec::new();
        for (gate, pairs) in self.gates.iter().zip(&self.behind) {
            if !gate_passes(gate, event) {
                continue;
            }
            for &(index, variant) in pairs {
                if hits.iter().any(|m| m.index == index) {
                    continue;
                }
                let variant = &self.rules[index].variants[variant];
                if let Some(fields) = eval_variant(variant, event) {
                    hits.push(Match {
                        rule: &self.rules[index].meta,
                        index,
                        fields,
                    });
                }
            }
        }
        hits.sort_by_key(|m| m.index);
        hits
    }
}

fn compile_gate(constraints: &[Constraint]) -> Vec<Gate> {
    constraints
        .iter()
        .filter_map(|c| match c {
            Constraint::Equals(field, values) => Some(Gate::Equals(
                fields::index(field)?,
                values.iter().map(|v| v.to_lowercase()).collect(),
            )),
            Constraint::AnyExists(names) => Some(Gate::AnyExists(
                names.iter().filter_map(|n| fields::index(n)).collect(),
            )),
        })
        .collect()
}

fn gate_passes(gate: &[Gate], event: &EventView<'_>) -> bool {
    gate.iter().all(|g| match g {
        Gate::Equals(field, values) => event
            .value(*field)
            .is_some_and(|(_, lower)| values.iter().any(|v| v == lower)),
        Gate::AnyExists(fields) => fields
            .iter()
            .any(|&f| event.get(f).is_some_and(|v| !v.is_empty())),
    })
}

fn eval_variant(variant: &Variant, event: &EventView<'_>) -> Option<Vec<usize>> {
    let mut memo: Vec<Option<bool>> = vec![None; variant.searches.len()];
    let mut search =
        |i: usize| *memo[i].get_or_insert_with(|| eval_search(&variant.searches[i], event));
    if !variant.conditions.iter().any(|c| c.eval(&mut search)) {
        return None;
    }
    // Evidence: the fields of the alternatives that matched in the searches
    // that matched.
    let mut fields: Vec<usize> = memo
        .iter()
        .enumerate()
        .filter(|(_, hit)| **hit == Some(true))
        .flat_map(|(i, _)| &variant.searches[i].any_of)
        .filter(|items| items.iter().all(|item| eval_item(item, event)))
        .flatten()
        .filter_map(|item| {
            let field = item.field?;
            if event.get(field).is_some() {
                return Some(field);
            }
            item.fallbacks
                .iter()
                .copied()
                .find(|&f| event.get(f).is_some())
                .or(Some(field))
        })
        .collect();
    fields.sort_unstable();
    fields.dedup();
    Some(fields)
}

fn eval_search(search: &Search, event: &EventView<'_>) -> bool {
    search
        .any_of
        .iter()
        .any(|items| items.iter().all(|item| eval_item(item, event)))
}

fn eval_item(item: &Item, event: &EventView<'_>) -> bool {
    let test = |t: &ValueTest| match item.field {
        Some(field) => {
            let value = event
                .value(field)
                .or_else(|| item.fallbacks.iter().find_map(|&f| event.value(f)));
            t.matches(value, event)
        }
        None => (0..event.values.len())
            .any(|f| event.value(f).is_some() && t.matches(event.value(f), event)),
    };
    if item.all {
        item.tests.iter().all(test)
    } else {
        item.tests.iter().any(test)
    }
}

type Compiled = (CompiledRule, Vec<Vec<Constraint>>);

fn compile_rule(
    rule: &Rule,
    source: &str,
    options: &CompileOptions,
) -> Result<Compiled, RuleError> {
    let alternatives = logsource::alternatives(&rule.logsource)?;
    let names: Vec<String> = rule.searches.iter().map(|(n, _)| n.clone()).collect();
    let conditions = rule
        .conditions
        .iter()
        .map(|c| condition::parse(c, &names))
        .collect::<Result<Vec<_>, _>>()?;
    let mut variants = Vec::new();
    let mut gates = Vec::new();
    for alternative in &alternatives {
        variants.push(compile_variant(rule, alternative, &conditions, options)?);
        gates.push(alternative.constraints.clone());
    }
    Ok((
        CompiledRule {
            meta: RuleMeta {
                source: source.to_owned(),
                id: rule.id.clone(),
                title: rule.title.clone(),
                level: rule.level,
                status: rule.status.clone(),
                author: rule.author.clone(),
                techniques: rule.techniques(),
                other_tags: rule.other_tags().into_iter().map(str::to_owned).collect(),
                logsource: rule.logsource.to_string(),
            },
            variants,
        },
        gates,
    ))
}

fn compile_variant(
    rule: &Rule,
    alternative: &Alternative,
    conditions: &[Cond],
    options: &CompileOptions,
) -> Result<Variant, RuleError> {
    let mut resolve = |name: &str| -> Result<usize, RuleError> {
        let event_field = alternative.event_field(name);
        fields::index(&event_field).ok_or(RuleError::FieldNotProjected(event_field))
    };
    let mut searches = Vec::new();
    for (_, search) in &rule.searches {
        let mut any_of = Vec::new();
        for group in &search.any_of {
            let mut items = Vec::new();
            for item in group {
                let names: Vec<&str> = item.modifiers.iter().map(String::as_str).collect();
                let mut modifiers = Modifiers::parse(&names)?;
                if item.field.is_none() {
                    modifiers = modifiers.for_keywords();
                }
                let (field, fallbacks) = match &item.field {
                    Some(name) => {
                        let fallbacks = fields::aliases(&alternative.event_field(name))
                            .iter()
                            .filter_map(|alias| fields::index(alias))
                            .collect();
                        (Some(resolve(name)?), fallbacks)
                    }
                    None => (None, Vec::new()),
                };
                let mut tests = Vec::with_capacity(item.values.len());
                for value in &item.values {
                    tests.push(match value {
                        RawValue::Str(text) if modifiers.expand => ValueTest::AnyOf(
                            expand_placeholders(text, &options.placeholders)?
                                .into_iter()
                                .map(|t| modifiers.compile(&RawValue::Str(t), &mut resolve))
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                        _ => modifiers.compile(value, &mut resolve)?,
                    });
                }
                items.push(Item {
                    field,
                    fallbacks,
                    tests,
                    all: modifiers.all,
                });
            }
            any_of.push(items);
        }
        searches.push(Search { any_of });
    }
    Ok(Variant {
        searches,
        conditions: conditions.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pairs: &[(&str, &str)]) -> Vec<Option<String>> {
        let mut values = vec![None; fields::FIELDS.len()];
        for (name, value) in pairs {
            let index = fields::index(name).unwrap_or_else(|| panic!("{name} not in catalogue"));
            values[index] = Some((*value).to_owned());
        }
        values
    }

    fn titles(set: &RuleSet, pairs: &[(&str, &str)]) -> Vec<String> {
        let values = event(pairs);
        set.matches(&EventView::new(&values))
            .iter()
            .map(|m| m.rule.title.clone())
            .collect()
    }

    const PROC: &str = r#"
title: Encoded PowerShell
id: p1
level: high
tags: [attack.t1059.001]
logsource: {product: windows, category: process_creation}
detection:
    selection_img:
        - Image|endswith: '\powershell.exe'
        - OriginalFileName: 'PowerShell.EXE'
    selection_cli:
        CommandLine|contains|windash: ' -enc '
    filter_main:
        ParentImage|endswith: '\legit.exe'
    condition: all of selection_* and not 1 of filter_*
"#;

    const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";

    #[test]
    fn process_creation_matches_sysmon_and_security_4688() {
        let set = RuleSet::compile([("p", PROC)], &CompileOptions::default());
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        let sysmon = [
            ("Channel", SYSMON),
            ("EventID", "1"),
            (
                "Image",
                r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
            ),
            ("CommandLine", "powershell /enc AAAA"),
        ];
        assert_eq!(titles(&set, &sysmon), ["Encoded PowerShell"]);
        // Filtered parent.
        let mut filtered = sysmon.to_vec();
        filtered.push(("ParentImage", r"C:\x\LEGIT.exe"));
        assert!(titles(&set, &filtered).is_empty());
        // Wrong event id: the log-source gate keeps the rule away.
        let mut other = sysmon.to_vec();
        other[1] = ("EventID", "3");
        assert!(titles(&set, &other).is_empty());
        let values = event(&other);
        assert!(!set.applies(0, &EventView::new(&values)));
        let values = event(&filtered);
        assert!(
            set.applies(0, &EventView::new(&values)),
            "filtered, but in scope"
        );
        // Security 4688 names the image NewProcessName.
        let security = [
            ("Channel", "Security"),
            ("EventID", "4688"),
            ("NewProcessName", r"C:\Windows\powershell.exe"),
            ("CommandLine", "powershell -enc AAAA"),
        ];
        assert_eq!(titles(&set, &security), ["Encoded PowerShell"]);
        let values = event(&security);
        let hits = set.matches(&EventView::new(&values));
        let names: Vec<&str> = hits[0].fields.iter().map(|&i| fields::FIELDS[i]).collect();
        assert_eq!(names, ["CommandLine", "NewProcessName"]);
    }

    #[test]
    fn keywords_search_every_field() {
        let rule = r#"
title: Keywords
logsource: {product: linux, service: sshd}
detection:
    keywords:
        - 'error: maximum authentication attempts exceeded'
        - 'Bad*protocol'
    condition: keywords
"#;
        let set = RuleSet::compile([("k", rule)], &CompileOptions::default());
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        let line = [
            ("program", "sshd"),
            (
                "message",
                "x ERROR: Maximum authentication attempts exceeded for root",
            ),
        ];
        assert_eq!(titles(&set, &line), ["Keywords"]);
        assert_eq!(
            titles(
                &set,
                &[("program", "sshd"), ("message", "Bad packet protocol")]
            ),
            ["Keywords"]
        );
        assert!(titles(&set, &[("program", "cron"), ("message", "Bad protocol")]).is_empty());
    }

    #[test]
    fn rejections_carry_reasons_and_levels_filter() {
        let unmapped = "title: U\nlogsource: {product: macos, category: process_creation}\ndetection:\n  s: {Image: x}\n  condition: s\n";
        let unknown_field = "title: F\nlogsource: {product: windows, service: security}\ndetection:\n  s: {NoSuchField: x}\n  condition: s\n";
        let low = "title: L\nlevel: low\nlogsource: {product: windows, service: security}\ndetection:\n  s: {EventID: 1}\n  condition: s\n";
        let set = RuleSet::compile(
            [
                ("u", unmapped),
                ("f", unknown_field),
                ("l", low),
                ("bad", "x: ["),
            ],
            &CompileOptions::with_min_level(Level::Medium),
        );
        assert!(set.is_empty());
        let reasons: Vec<String> = set.rejected().iter().map(|r| r.error.reason()).collect();
        assert_eq!(
            reasons,
            [
                "unmapped logsource [product:macos category:process_creation]",
                "field not in the module's projection",
                "not valid YAML"
            ]
        );
    }

    /// NXLog/Winlogbeat-era exports (the OTRF captures) name the provider
    /// `SourceName`; SigmaHQ's "Security Eventlog Cleared" reads
    /// `Provider_Name` and missed every 1102 event in them.
    #[test]
    fn provider_name_falls_back_to_sourcename_in_nxlog_exports() {
        let rule = r#"
title: Security Eventlog Cleared
logsource: {product: windows, service: security}
detection:
    selection_1102:
        EventID: 1102
        Provider_Name: Microsoft-Windows-Eventlog
    condition: 1 of selection_*
"#;
        let set = RuleSet::compile([("r", rule)], &CompileOptions::default());
        let evtx = [
            ("Channel", "Security"),
            ("EventID", "1102"),
            ("Provider_Name", "Microsoft-Windows-Eventlog"),
        ];
        assert_eq!(titles(&set, &evtx), ["Security Eventlog Cleared"]);
        let nxlog = [
            ("Channel", "Security"),
            ("EventID", "1102"),
            ("SourceName", "Microsoft-Windows-Eventlog"),
        ];
        assert_eq!(titles(&set, &nxlog), ["Security Eventlog Cleared"]);
        let values = event(&nxlog);
        let hits = set.matches(&EventView::new(&values));
        let names: Vec<&str> = hits[0].fields.iter().map(|&i| fields::FIELDS[i]).collect();
        assert_eq!(names, ["EventID", "SourceName"]);
        // The primary name wins when both are present.
        let both = [
            ("Channel", "Security"),
            ("EventID", "1102"),
            ("Provider_Name", "Other"),
            ("SourceName", "Microsoft-Windows-Eventlog"),
        ];
        assert!(titles(&set, &both).is_empty());
    }

    #[test]
    fn proxy_and_zeek_rules_read_zeek_names() {
        let proxy = r#"
title: PowerShell UA
logsource: {category: proxy}
detection:
    selection:
        c-useragent|startswith: 'Mozilla/5.0 (Windows NT; Windows NT'
        cs-method: GET
    condition: selection
"#;
        let zeek = r#"
title: SMB to host
logsource: {product: zeek, service: smb_files}
detection:
    selection:
        id.resp_h|cidr: 10.0.0.0/8
    condition: selection
"#;
        let set = RuleSet::compile([("p", proxy), ("z", zeek)], &CompileOptions::default());
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        let http = [
            ("@stream", "http"),
            (
                "user_agent",
                "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1",
            ),
            ("method", "GET"),
        ];
        assert_eq!(titles(&set, &http), ["PowerShell UA"]);
        // The same fields in a dns log are out of scope.
        let mut dns = http.to_vec();
        dns[0] = ("@stream", "dns");
        assert!(titles(&set, &dns).is_empty());
        // JSON streaming logs flatten `id.resp_h`; TSV logs keep the dot.
        assert_eq!(
            titles(&set, &[("@stream", "smb_files"), ("id_resp_h", "10.1.2.3")]),
            ["SMB to host"]
        );
        assert_eq!(
            titles(&set, &[("_path", "smb_files"), ("id.resp_h", "10.1.2.3")]),
            ["SMB to host"]
        );
        assert!(
            titles(
                &set,
                &[("_path", "smb_files"), ("id.resp_h", "192.168.1.1")]
            )
            .is_empty()
        );
    }

    #[test]
    fn expand_uses_placeholder_values() {
        let rule = r#"
title: Admin logon
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4624
        TargetUserName|expand: '%admins%'
    condition: selection
"#;
        let set = RuleSet::compile([("r", rule)], &CompileOptions::default());
        assert!(set.is_empty());
        assert!(
            set.rejected()[0]
                .error
                .to_string()
                .contains("placeholder.admins")
        );
        let mut options = CompileOptions::default();
        options
            .placeholders
            .insert("admins".into(), vec!["alice".into(), "bob".into()]);
        let set = RuleSet::compile([("r", rule)], &options);
        let logon = |user| {
            [
                ("Channel", "Security"),
                ("EventID", "4624"),
                ("TargetUserName", user),
            ]
        };
        assert_eq!(titles(&set, &logon("BOB")), ["Admin logon"]);
        assert!(titles(&set, &logon("carol")).is_empty());
    }

    #[test]
    fn fieldref_null_and_lists() {
        let rule = r#"
title: Refs
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: [4624, 4625]
        TargetUserName|fieldref: SubjectUserName
    filter:
        IpAddress: null
    condition: selection and not filter
"#;
        let set = RuleSet::compile([("r", rule)], &CompileOptions::default());
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        let base = [
            ("Channel", "Security"),
            ("EventID", "4625"),
            ("TargetUserName", "Admin"),
            ("SubjectUserName", "admin"),
        ];
        assert!(titles(&set, &base).is_empty(), "IpAddress is null");
        let mut with_ip = base.to_vec();
        with_ip.push(("IpAddress", "10.0.0.1"));
        assert_eq!(titles(&set, &with_ip), ["Refs"]);
        with_ip[3] = ("SubjectUserName", "other");
        assert!(titles(&set, &with_ip).is_empty());
    }
}
