//! Sigma rule documents: YAML text to a [`Rule`].
//!
//! Only what evaluation and findings need is kept: identity (id, title,
//! author, level, status, tags), the log source, and the detection section
//! (selections and condition). A file must hold exactly one YAML document:
//! Sigma 1.x multi-document rules (`action: global` / `repeat`) and Sigma 2
//! correlation rules are rejected with a named reason.

use std::fmt;

use yaml_rust2::{Yaml, YamlLoader};

use crate::matcher::RawValue;

/// Why a rule cannot be parsed or evaluated. [`RuleError::reason`] gives a
/// short, stable label for grouping (coverage reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleError {
    /// The text is not YAML.
    Yaml(String),
    /// The file holds more (or fewer) than one YAML document.
    DocumentCount(usize),
    /// A correlation rule (Sigma 2 `correlation:`), which needs state across
    /// events and other rules.
    Correlation,
    /// A required key is missing or has the wrong type.
    Missing(&'static str),
    /// The rule breaks the Sigma specification.
    Invalid(String),
    /// Valid Sigma that this evaluator does not support.
    Unsupported(String),
    /// A `re` value that does not compile.
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex crate's reason.
        reason: String,
    },
    /// The log source has no mapping to Quarry's event fields.
    UnmappedLogsource(String),
    /// The rule reads a field the module does not project.
    FieldNotProjected(String),
    /// The rules of the hunt read more fields than a module may declare.
    TooManyFields(String),
}

impl RuleError {
    /// A short label of the error's kind, without rule-specific detail
    /// except for the unsupported feature or log source, which is the point.
    pub fn reason(&self) -> String {
        match self {
            RuleError::Yaml(_) => "not valid YAML".to_owned(),
            RuleError::DocumentCount(n) => {
                format!("{n} YAML documents in one rule file (multi-document rules)")
            }
            RuleError::Correlation => "correlation rule".to_owned(),
            RuleError::Missing(key) => format!("missing `{key}`"),
            RuleError::Invalid(_) => "invalid rule".to_owned(),
            RuleError::Unsupported(what) => format!("unsupported: {what}"),
            RuleError::InvalidRegex { .. } => {
                "regular expression not supported by Rust regex".to_owned()
            }
            RuleError::UnmappedLogsource(ls) => format!("unmapped logsource {ls}"),
            RuleError::FieldNotProjected(_) => "field not in the module's projection".to_owned(),
            RuleError::TooManyFields(_) => format!(
                "the rules read more than {} fields",
                crate::fields::MAX_PLANNED_FIELDS
            ),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::Yaml(e) => write!(f, "not valid YAML: {e}"),
            RuleError::DocumentCount(n) => write!(
                f,
                "the file holds {n} YAML documents; pass one rule per parameter \
                 (multi-document Sigma 1 rules with `action: global` are not supported)"
            ),
            RuleError::Correlation => write!(
                f,
                "correlation rules (`correlation:`) are not supported; pass the base rules alone"
            ),
            RuleError::Missing(key) => write!(f, "the rule has no valid `{key}`"),
            RuleError::Invalid(e) => write!(f, "invalid rule: {e}"),
            RuleError::Unsupported(e) => write!(f, "not supported: {e}"),
            RuleError::InvalidRegex { pattern, reason } => {
                write!(
                    f,
                    "regular expression `{pattern}` does not compile: {reason}"
                )
            }
            RuleError::UnmappedLogsource(ls) => write!(
                f,
                "no mapping of logsource {ls} to Quarry event fields (see docs/sigma.md)"
            ),
            RuleError::FieldNotProjected(field) => write!(
                f,
                "field `{field}` is not in the module's field catalogue, so events never carry it \
                 (a worker that plans tasks, contract 0.2.2, projects any field)"
            ),
            RuleError::TooManyFields(field) => write!(
                f,
                "field `{field}` would be field number {} the rules read, more than a module may \
                 declare (or its name is longer than {} bytes); split the rules over several hunts",
                crate::fields::MAX_PLANNED_FIELDS + 1,
                crate::fields::MAX_FIELD_NAME_BYTES
            ),
        }
    }
}

impl std::error::Error for RuleError {}

/// Sigma `level`, mapped to a finding severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `informational`
    Informational,
    /// `low`
    Low,
    /// `medium` (also the default when a rule has no level)
    Medium,
    /// `high`
    High,
    /// `critical`
    Critical,
}

impl Level {
    /// Parses a Sigma level name.
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "informational" | "info" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            _ => return None,
        })
    }

    /// The Sigma name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// The `logsource` of a rule (lowercased).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LogSource {
    /// `product` (windows, linux, zeek, aws, ...).
    pub product: Option<String>,
    /// `category` (process_creation, proxy, ...).
    pub category: Option<String>,
    /// `service` (security, sysmon, auditd, ...).
    pub service: Option<String>,
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("product", &self.product),
            ("category", &self.category),
            ("service", &self.service),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}:{v}")))
        .collect();
        write!(f, "[{}]", parts.join(" "))
    }
}

/// One detection item: `Field|modifiers: values`, or keywords when `field`
/// is `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The field name without modifiers; `None` for keywords.
    pub field: Option<String>,
    /// The modifier names.
    pub modifiers: Vec<String>,
    /// The values (any one matches, all with the `all` modifier).
    pub values: Vec<RawValue>,
}

/// A named search of the detection section: an OR of AND-groups of items.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    /// Alternatives (a list of maps, or keywords); each is an AND of items.
    pub any_of: Vec<Vec<Item>>,
}

/// A parsed Sigma rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `id` (a UUID); the title when the rule has none.
    pub id: String,
    /// `title`.
    pub title: String,
    /// `status` (stable, test, experimental, ...).
    pub status: Option<String>,
    /// `level`.
    pub level: Level,
    /// `author`: the Detection Rule License requires it to travel with alerts.
    pub author: Option<String>,
    /// `tags` (`attack.t1059.001`, `attack.execution`, `cve.2021-44228`, ...).
    pub tags: Vec<String>,
    /// `logsource`.
    pub logsource: LogSource,
    /// Named searches, in rule order.
    pub searches: Vec<(String, Search)>,
    /// The condition(s); a list of conditions means any of them.
    pub conditions: Vec<String>,
}

impl Rule {
    /// Parses one rule file's text.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| RuleError::Yaml(e.to_string()))?;
        let docs: Vec<&Yaml> = docs.iter().filter(|d| !d.is_null()).collect();
        if docs.iter().any(|d| !d["correlation"].is_badvalue()) {
            return Err(RuleError::Correlation);
        }
        let [doc] = docs.as_slice() else {
            return Err(RuleError::DocumentCount(docs.len()));
        };
        if !doc["action"].is_badvalue() {
            return Err(RuleError::Unsupported(
                "`action` (Sigma 1 multi-document rule)".to_owned(),
            ));
        }
        let title = scalar_text(&doc["title"]).ok_or(RuleError::Missing("title"))?;
        let id = scalar_text(&doc["id"]).unwrap_or_else(|| title.clone());
        let level = match scalar_text(&doc["level"]) {
            Some(l) => Level::parse(&l)
                .ok_or_else(|| RuleError::Invalid(format!("unknown level `{l}`")))?,
            None => Level::Medium,
        };
        let author = scalar_text(&doc["author"]);
        let status = scalar_text(&doc["status"]);
        let tags = match &doc["tags"] {
            Yaml::Array(items) => items.iter().filter_map(scalar_text).collect(),
            _ => Vec::new(),
        };
        let logsource = match &doc["logsource"] {
            Yaml::Hash(_) => LogSource {
                product: scalar_text(&doc["logsource"]["product"]).map(|s| s.to_lowercase()),
                category: scalar_text(&doc["logsource"]["category"]).map(|s| s.to_lowercase()),
                service: scalar_text(&doc["logsource"]["service"]).map(|s| s.to_lowercase()),
            },
            _ => return Err(RuleError::Missing("logsource")),
        };
        let Yaml::Hash(detection) = &doc["detection"] else {
            return Err(RuleError::Missing("detection"));
        };
        let mut searches = Vec::new();
        let mut conditions = Vec::new();
        for (key, value) in detection {
            let Some(name) = key.as_str() else {
                return Err(RuleError::Invalid(format!(
                    "detection key {key:?} is not a name"
                )));
            };
            match name {
                "condition" => match value {
                    Yaml::Array(list) => {
                        for c in list {
                            conditions.push(scalar_text(c).ok_or(RuleError::Missing("condition"))?);
                        }
                    }
                    other => {
                        conditions.push(scalar_text(other).ok_or(RuleError::Missing("condition"))?)
                    }
                },
                "timeframe" => {
                    return Err(RuleError::Unsupported(
                        "`timeframe` (aggregation over time)".to_owned(),
                    ));
                }
                _ => searches.push((name.to_owned(), parse_search(name, value)?)),
            }
        }
        if conditions.is_empty() {
            return Err(RuleError::Missing("condition"));
        }
        Ok(Rule {
            id,
            title,
            status,
            level,
            author,
            tags,
            logsource,
            searches,
            conditions,
        })
    }

    /// ATT&CK technique ids from `attack.tNNNN[.NNN]` tags, upper-cased.
    pub fn techniques(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .tags
            .iter()
            .filter_map(|tag| {
                let rest = tag.to_ascii_lowercase();
                let rest = rest.strip_prefix("attack.t")?.to_owned();
                let (main, sub) = match rest.split_once('.') {
                    Some((m, s)) => (m.to_owned(), Some(s.to_owned())),
                    None => (rest, None),
                };
                if main.len() != 4 || !main.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                match sub {
                    Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => {
                        Some(format!("T{main}.{s}"))
                    }
                    Some(_) => None,
                    None => Some(format!("T{main}")),
                }
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Tags that are not ATT&CK technique ids (tactics, CVEs, detection
    /// classes, ...).
    pub fn other_tags(&self) -> Vec<&str> {
        self.tags
            .iter()
            .filter(|tag| {
                let lower = tag.to_ascii_lowercase();
                !(lower.starts_with("attack.t")
                    && lower[8..].starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(String::as_str)
            .collect()
    }
}

/// The text of a scalar (strings, numbers, booleans); `None` otherwise.
fn scalar_text(yaml: &Yaml) -> Option<String> {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn raw_value(yaml: &Yaml, search: &str) -> Result<RawValue, RuleError> {
    Ok(match yaml {
        Yaml::String(s) => RawValue::Str(s.clone()),
        Yaml::Integer(i) => RawValue::Num(i.to_string()),
        Yaml::Real(r) => RawValue::Num(r.clone()),
        Yaml::Boolean(b) => RawValue::Bool(*b),
        Yaml::Null => RawValue::Null,
        other => {
            return Err(RuleError::Invalid(format!(
                "search `{search}` has a value that is not a scalar: {other:?}"
            )));
        }
    })
}

fn parse_search(name: &str, value: &Yaml) -> Result<Search, RuleError> {
    let mut any_of = Vec::new();
    match value {
        Yaml::Hash(map) => any_of.push(parse_map(name, map)?),
        Yaml::Array(list) => {
            let mut keywords = Vec::new();
            for entry in list {
                match entry {
                    Yaml::Hash(map) => any_of.push(parse_map(name, map)?),
                    scalar => keywords.push(raw_value(scalar, name)?),
                }
            }
            if !keywords.is_empty() {
                // Each keyword is its own alternative.
                for keyword in keywords {
                    any_of.push(vec![Item {
                        field: None,
                        modifiers: Vec::new(),
                        values: vec![keyword],
                    }]);
                }
            }
        }
        scalar => any_of.push(vec![Item {
            field: None,
            modifiers: Vec::new(),
            values: vec![raw_value(scalar, name)?],
        }]),
    }
    Ok(Search { any_of })
}

fn parse_map(name: &str, map: &yaml_rust2::yaml::Hash) -> Result<Vec<Item>, RuleError> {
    let mut items = Vec::new();
    for (key, value) in map {
        let key = scalar_text(key).ok_or_else(|| {
            RuleError::Invalid(format!("search `{name}` has a key that is not text"))
        })?;
        let mut parts = key.split('|');
        let field = parts.next().unwrap_or_default().to_owned();
        let modifiers: Vec<String> = parts.map(str::to_owned).collect();
        let values = match value {
            Yaml::Array(list) => list
                .iter()
                .map(|v| raw_value(v, name))
                .collect::<Result<Vec<_>, _>>()?,
            Yaml::Hash(_) => {
                return Err(RuleError::Invalid(format!(
                    "search `{name}` field `{field}` has a map as its value"
                )));
            }
            scalar => vec![raw_value(scalar, name)?],
        };
        items.push(Item {
            // `'|contains': [...]` is a keyword search with modifiers.
            field: (!field.is_empty()).then_some(field),
            modifiers,
            values,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = r#"
title: Test Rule
id: 1234
status: test
author: Jane Doe, John Roe
level: high
tags:
    - attack.execution
    - attack.t1059.001
    - attack.T1027
    - cve.2021-44228
logsource:
    product: Windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\powershell.exe'
        CommandLine|contains:
            - ' -enc '
            - ' -e '
    keywords:
        - 'evil'
        - 42
    condition: selection or keywords
"#;

    #[test]
    fn parses_metadata_and_detection() {
        let rule = Rule::parse(RULE).unwrap();
        assert_eq!(rule.id, "1234");
        assert_eq!(rule.title, "Test Rule");
        assert_eq!(rule.level, Level::High);
        assert_eq!(rule.author.as_deref(), Some("Jane Doe, John Roe"));
        assert_eq!(rule.techniques(), ["T1027", "T1059.001"]);
        assert_eq!(rule.other_tags(), ["attack.execution", "cve.2021-44228"]);
        assert_eq!(rule.logsource.product.as_deref(), Some("windows"));
        assert_eq!(rule.searches.len(), 2);
        let selection = &rule.searches[0].1;
        assert_eq!(selection.any_of.len(), 1);
        assert_eq!(selection.any_of[0][1].modifiers, ["contains"]);
        assert_eq!(selection.any_of[0][1].values.len(), 2);
        let keywords = &rule.searches[1].1;
        assert_eq!(keywords.any_of.len(), 2);
        assert_eq!(keywords.any_of[1][0].values, [RawValue::Num("42".into())]);
        assert_eq!(rule.conditions, ["selection or keywords"]);
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        assert_eq!(
            Rule::parse("title: a\n---\ntitle: b\n").unwrap_err(),
            RuleError::DocumentCount(2)
        );
        assert_eq!(
            Rule::parse("title: a\ncorrelation:\n  type: event_count\n").unwrap_err(),
            RuleError::Correlation
        );
        assert_eq!(
            Rule::parse("title: a\nlogsource: {}\n").unwrap_err(),
            RuleError::Missing("detection")
        );
        assert!(matches!(
            Rule::parse("title: [a").unwrap_err(),
            RuleError::Yaml(_)
        ));
        let timeframe = "title: a\nlogsource: {product: windows}\ndetection:\n  sel: {a: 1}\n  timeframe: 5m\n  condition: sel\n";
        assert!(matches!(
            Rule::parse(timeframe).unwrap_err(),
            RuleError::Unsupported(_)
        ));
    }
}
