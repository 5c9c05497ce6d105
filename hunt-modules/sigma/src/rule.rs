//! Sigma rule documents: YAML text to [`Rule`]s and [`Correlation`]s.
//!
//! Only what evaluation and findings need is kept: identity (id, name,
//! title, author, level, status, tags), the log source, and the detection
//! section (selections and condition) of a detection rule; the
//! `correlation:` section of a Sigma 2 correlation rule. A file may hold
//! several YAML documents (`---`), each a detection rule or a correlation
//! ([`parse_documents`]): that is how correlations usually travel with
//! their base rules. Sigma 1.x multi-document rules (`action: global` /
//! `repeat`) are rejected with a named reason.

use std::fmt;

use quarry_sdk::correlation::{Cmp, Kind};
use yaml_rust2::{Yaml, YamlLoader};

use crate::matcher::RawValue;

/// Why a rule cannot be parsed or evaluated. [`RuleError::reason`] gives a
/// short, stable label for grouping (coverage reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleError {
    /// The text is not YAML.
    Yaml(String),
    /// The file holds more (or fewer) than one YAML document where one
    /// was expected ([`Rule::parse`]; [`parse_documents`] takes several).
    DocumentCount(usize),
    /// A correlation rule (Sigma 2 `correlation:`) where a detection rule
    /// was expected ([`Rule::parse`]; [`parse_documents`] takes both).
    Correlation,
    /// A correlation's `type` is not one of `event_count`, `value_count`,
    /// `temporal`, `temporal_ordered`.
    UnknownCorrelationType(String),
    /// A correlation lacks a key its type requires (`rules`, `group-by`,
    /// `timespan`, `condition`).
    CorrelationMissing(&'static str),
    /// A `value_count` correlation without `condition.field`: there is
    /// nothing to count the distinct values of.
    ValueCountWithoutField,
    /// A `timespan` that is not a positive number and a unit (`30s`, `5m`,
    /// `1h`, `1d`, `1w`).
    BadTimespan(String),
    /// A correlation `condition` that is not a map of `gt`/`gte`/`lt`/
    /// `lte`/`eq`/`neq` to counts.
    BadCorrelationCondition(String),
    /// A correlation references (in `rules:` or `aliases:`) a rule that no
    /// document of the hunt has as its `name` or `id`.
    UnknownReference(String),
    /// A correlation reference that is the `name` or `id` of several
    /// rules of the hunt (and of none or several in the correlation's own
    /// file).
    AmbiguousReference(String),
    /// A correlation that references another correlation (a chain): each
    /// task emits the observations of base rules, and the coordinator
    /// evaluates a correlation only after the merge, so there is nothing
    /// for an outer correlation to observe during the scan.
    ChainedCorrelation(String),
    /// A correlation whose base rule could not be compiled.
    BaseRuleRejected {
        /// The reference, as the correlation names the rule.
        reference: String,
        /// Why the base rule was rejected.
        reason: String,
    },
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
            RuleError::Correlation => {
                "correlation rule where a detection rule was expected".to_owned()
            }
            RuleError::UnknownCorrelationType(_) => "unknown correlation type".to_owned(),
            RuleError::CorrelationMissing(key) => format!("correlation without `{key}`"),
            RuleError::ValueCountWithoutField => {
                "value_count correlation without `condition.field`".to_owned()
            }
            RuleError::BadTimespan(_) => "invalid correlation timespan".to_owned(),
            RuleError::BadCorrelationCondition(_) => "invalid correlation condition".to_owned(),
            RuleError::UnknownReference(_) => "correlation references an unknown rule".to_owned(),
            RuleError::AmbiguousReference(_) => {
                "correlation reference names several rules".to_owned()
            }
            RuleError::ChainedCorrelation(_) => {
                "unsupported: correlation of correlations (chained)".to_owned()
            }
            RuleError::BaseRuleRejected { .. } => {
                "correlation's base rule cannot be evaluated".to_owned()
            }
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
                "a correlation rule (`correlation:`) where one detection rule was expected"
            ),
            RuleError::UnknownCorrelationType(t) => write!(
                f,
                "unknown correlation type `{t}`; Sigma defines event_count, value_count, temporal \
                 and temporal_ordered"
            ),
            RuleError::CorrelationMissing(key) => {
                write!(
                    f,
                    "the correlation has no valid `{key}`, which its type requires"
                )
            }
            RuleError::ValueCountWithoutField => write!(
                f,
                "a value_count correlation needs `condition.field`, the field whose distinct \
                 values it counts"
            ),
            RuleError::BadTimespan(t) => write!(
                f,
                "timespan `{t}` is not a positive number followed by s, m, h, d or w \
                 (e.g. 30s, 5m, 1h)"
            ),
            RuleError::BadCorrelationCondition(e) => {
                write!(f, "invalid correlation condition: {e}")
            }
            RuleError::UnknownReference(r) => write!(
                f,
                "the correlation references `{r}`, which is the `name` or `id` of no rule of the \
                 hunt that parses; pass its base rules with it (in the same file or as other `rule.` \
                 parameters)"
            ),
            RuleError::AmbiguousReference(r) => write!(
                f,
                "the correlation references `{r}`, which names several rules of the hunt; give \
                 them distinct names or reference one by its id"
            ),
            RuleError::ChainedCorrelation(r) => write!(
                f,
                "the correlation references `{r}`, another correlation: chained correlations are \
                 not supported (correlations are evaluated only after every task's partial \
                 state is merged); correlate the base rules directly"
            ),
            RuleError::BaseRuleRejected { reference, reason } => write!(
                f,
                "the correlation's base rule `{reference}` cannot be evaluated: {reason}"
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
    /// `name`: how correlations reference the rule, beside its id.
    pub name: Option<String>,
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
    /// Parses one rule file's text, which must be exactly one detection
    /// rule (see [`parse_documents`] for files of several documents and
    /// correlations).
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let docs = load_documents(text)?;
        let [doc] = docs.as_slice() else {
            return Err(RuleError::DocumentCount(docs.len()));
        };
        if !doc["correlation"].is_badvalue() {
            return Err(RuleError::Correlation);
        }
        Rule::from_yaml(doc)
    }

    /// Parses one YAML document of a detection rule.
    fn from_yaml(doc: &Yaml) -> Result<Rule, RuleError> {
        let title = scalar_text(&doc["title"]).ok_or(RuleError::Missing("title"))?;
        let id = scalar_text(&doc["id"]).unwrap_or_else(|| title.clone());
        let name = scalar_text(&doc["name"]);
        let level = parse_level(doc)?;
        let author = scalar_text(&doc["author"]);
        let status = scalar_text(&doc["status"]);
        let tags = parse_tags(doc);
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
            name,
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
        techniques(&self.tags)
    }

    /// Tags that are not ATT&CK technique ids (tactics, CVEs, detection
    /// classes, ...).
    pub fn other_tags(&self) -> Vec<&str> {
        other_tags(&self.tags)
    }
}

/// ATT&CK technique ids from `attack.tNNNN[.NNN]` tags, upper-cased,
/// sorted and without duplicates.
pub fn techniques(tags: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = tags
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
pub fn other_tags(tags: &[String]) -> Vec<&str> {
    tags.iter()
        .filter(|tag| {
            let lower = tag.to_ascii_lowercase();
            !(lower.starts_with("attack.t") && lower[8..].starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(String::as_str)
        .collect()
}

/// One document of a rule file.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    /// A detection rule.
    Rule(Rule),
    /// A Sigma 2 correlation rule.
    Correlation(Correlation),
}

/// Parses every YAML document of a rule file: each is a detection rule or
/// a correlation, parsed (or refused) on its own, in file order. The file
/// as a whole fails when it is not YAML, holds no document, or is a
/// Sigma 1 multi-document rule (`action: global`), whose documents are
/// fragments that mean nothing alone.
pub fn parse_documents(text: &str) -> Result<Vec<Result<Document, RuleError>>, RuleError> {
    Ok(load_documents(text)?
        .iter()
        .map(|doc| {
            if doc["correlation"].is_badvalue() {
                Rule::from_yaml(doc).map(Document::Rule)
            } else {
                Correlation::from_yaml(doc).map(Document::Correlation)
            }
        })
        .collect())
}

/// The non-empty YAML documents of a rule file; an error for no YAML, no
/// document, or a Sigma 1 multi-document rule.
fn load_documents(text: &str) -> Result<Vec<Yaml>, RuleError> {
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| RuleError::Yaml(e.to_string()))?;
    docs.retain(|d| !d.is_null());
    if docs.is_empty() {
        return Err(RuleError::DocumentCount(0));
    }
    if docs.iter().any(|d| !d["action"].is_badvalue()) {
        return Err(RuleError::Unsupported(
            "`action` (Sigma 1 multi-document rule)".to_owned(),
        ));
    }
    Ok(docs)
}

/// A Sigma 2 correlation rule: a condition over the events of other rules
/// (its base rules), per group of field values, within a timespan.
#[derive(Clone, Debug, PartialEq)]
pub struct Correlation {
    /// `id`; the title when it has none.
    pub id: String,
    /// `name`: correlations can be referenced too (chains, refused at
    /// compile time).
    pub name: Option<String>,
    /// `title`.
    pub title: String,
    /// `status`.
    pub status: Option<String>,
    /// `level` (medium when absent): the severity of its findings, usually
    /// above its base rules'.
    pub level: Level,
    /// `author`.
    pub author: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// `correlation.type`.
    pub kind: Kind,
    /// `correlation.rules`: `name`s or `id`s of the base rules, in order.
    pub rules: Vec<String>,
    /// `correlation.group-by`: field names or aliases.
    pub group_by: Vec<String>,
    /// `correlation.timespan` as written (`5m`).
    pub timespan: String,
    /// The timespan in milliseconds.
    pub timespan_ms: i64,
    /// `correlation.condition` without `field`: all must hold (a range is
    /// two). Empty for temporal kinds without a condition.
    pub condition: Vec<(Cmp, u64)>,
    /// `correlation.condition.field`: what `value_count` counts.
    pub field: Option<String>,
    /// `correlation.aliases`: per alias, `(rule reference, field)` pairs.
    pub aliases: Aliases,
    /// `correlation.generate` (or a top-level `generate`): whether the base
    /// rules also report their own matches. Default `false`.
    pub generate: bool,
}

impl Correlation {
    /// Parses one YAML document with a `correlation:` section.
    fn from_yaml(doc: &Yaml) -> Result<Correlation, RuleError> {
        let title = scalar_text(&doc["title"]).ok_or(RuleError::Missing("title"))?;
        let id = scalar_text(&doc["id"]).unwrap_or_else(|| title.clone());
        let section = &doc["correlation"];
        if !matches!(section, Yaml::Hash(_)) {
            return Err(RuleError::Invalid("`correlation` is not a map".to_owned()));
        }
        let type_name =
            scalar_text(&section["type"]).ok_or(RuleError::CorrelationMissing("type"))?;
        let kind =
            Kind::parse(type_name.trim()).ok_or(RuleError::UnknownCorrelationType(type_name))?;
        let rules = text_list(&section["rules"], "rules")?;
        if rules.is_empty() {
            return Err(RuleError::CorrelationMissing("rules"));
        }
        // The specification lists `group-by` among what every type
        // requires: without it a correlation would lump the whole fleet
        // into one group.
        let group_by = text_list(&section["group-by"], "group-by")?;
        if group_by.is_empty() {
            return Err(RuleError::CorrelationMissing("group-by"));
        }
        let timespan =
            scalar_text(&section["timespan"]).ok_or(RuleError::CorrelationMissing("timespan"))?;
        let timespan_ms = parse_timespan(&timespan)?;
        let (condition, field) = match &section["condition"] {
            Yaml::BadValue | Yaml::Null => match kind {
                Kind::Temporal | Kind::TemporalOrdered => (Vec::new(), None),
                Kind::EventCount | Kind::ValueCount => {
                    return Err(RuleError::CorrelationMissing("condition"));
                }
            },
            Yaml::Hash(map) => parse_condition(map)?,
            other => {
                return Err(RuleError::BadCorrelationCondition(format!(
                    "expected a map such as `gte: 10`, got {other:?}"
                )));
            }
        };
        if kind == Kind::ValueCount && field.is_none() {
            return Err(RuleError::ValueCountWithoutField);
        }
        let condition = match kind {
            Kind::Temporal | Kind::TemporalOrdered if !condition.is_empty() => {
                temporal_condition(condition, rules.len())?
            }
            _ => condition,
        };
        let aliases = match &section["aliases"] {
            Yaml::BadValue | Yaml::Null => Vec::new(),
            Yaml::Hash(map) => parse_aliases(map)?,
            _ => {
                return Err(RuleError::Invalid(
                    "correlation `aliases` is not a map of alias to rule-to-field maps".to_owned(),
                ));
            }
        };
        let generate = match (&section["generate"], &doc["generate"]) {
            (Yaml::Boolean(b), _) => *b,
            (Yaml::BadValue, Yaml::Boolean(b)) => *b,
            (Yaml::BadValue, Yaml::BadValue) => false,
            _ => {
                return Err(RuleError::Invalid(
                    "correlation `generate` is not true or false".to_owned(),
                ));
            }
        };
        Ok(Correlation {
            id,
            name: scalar_text(&doc["name"]),
            title,
            status: scalar_text(&doc["status"]),
            level: parse_level(doc)?,
            author: scalar_text(&doc["author"]),
            tags: parse_tags(doc),
            kind,
            rules,
            group_by,
            timespan,
            timespan_ms,
            condition,
            field,
            aliases,
            generate,
        })
    }

    /// ATT&CK technique ids from its tags.
    pub fn techniques(&self) -> Vec<String> {
        techniques(&self.tags)
    }

    /// The field alias `alias` maps the rule referenced as `reference` to.
    pub fn alias(&self, alias: &str, reference: &str) -> Option<&str> {
        let (_, fields) = self.aliases.iter().find(|(name, _)| name == alias)?;
        fields
            .iter()
            .find(|(r, _)| r == reference)
            .map(|(_, field)| field.as_str())
    }
}

/// Correlation field aliases: per alias name, `(rule reference, field)`
/// pairs.
pub type Aliases = Vec<(String, Vec<(String, String)>)>;

/// The comparisons of a correlation condition and its `field`.
type Condition = (Vec<(Cmp, u64)>, Option<String>);

/// A Sigma timespan (`30s`, `5m`, `1h`, `1d`, `1w`) in milliseconds.
pub fn parse_timespan(text: &str) -> Result<i64, RuleError> {
    let bad = || RuleError::BadTimespan(text.to_owned());
    let text = text.trim();
    let unit = text.chars().last().ok_or_else(bad)?;
    let unit_ms: i64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        // Not in the specification's list, but pySigma (the reference
        // implementation) takes weeks.
        'w' => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: i64 = digits.parse().map_err(|_| bad())?;
    match count.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

/// A correlation condition map: comparisons (all must hold) and `field`.
fn parse_condition(map: &yaml_rust2::yaml::Hash) -> Result<Condition, RuleError> {
    let mut condition = Vec::new();
    let mut field = None;
    for (key, value) in map {
        let key = scalar_text(key).unwrap_or_default();
        if key == "field" {
            field = Some(scalar_text(value).ok_or_else(|| {
                RuleError::BadCorrelationCondition("`field` is not a field name".to_owned())
            })?);
            continue;
        }
        let cmp = Cmp::parse(&key).ok_or_else(|| {
            RuleError::BadCorrelationCondition(format!(
                "unknown key `{key}` (expected gt, gte, lt, lte, eq, neq or field)"
            ))
        })?;
        let n = match value {
            Yaml::Integer(n) => u64::try_from(*n).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            RuleError::BadCorrelationCondition(format!(
                "`{key}` is not a count (a whole number, 0 or more)"
            ))
        })?;
        condition.push((cmp, n));
    }
    if condition.is_empty() {
        return Err(RuleError::BadCorrelationCondition(
            "no comparison (gt, gte, lt, lte, eq or neq)".to_owned(),
        ));
    }
    Ok((condition, field))
}

/// The condition of a temporal correlation counts the distinct base rules
/// seen in a window. The partial state's evaluation asks for all of them,
/// so only a condition that means exactly that (it holds for `rules` and
/// for no smaller count: `gte: 3` of three rules) is taken, as none;
/// anything else would silently change what the rule finds.
fn temporal_condition(
    condition: Vec<(Cmp, u64)>,
    rules: usize,
) -> Result<Vec<(Cmp, u64)>, RuleError> {
    let holds = |count: u64| condition.iter().all(|&(cmp, n)| cmp.holds(count, n));
    let all = rules as u64;
    if holds(all) && (0..all).all(|count| !holds(count)) {
        return Ok(Vec::new());
    }
    Err(RuleError::Unsupported(format!(
        "a temporal condition other than \"all {rules} rules\" (such as `gte: {rules}`)"
    )))
}

/// `aliases: {alias: {rule reference: field}}`.
fn parse_aliases(map: &yaml_rust2::yaml::Hash) -> Result<Aliases, RuleError> {
    let bad = |what: String| RuleError::Invalid(format!("correlation alias {what}"));
    let mut aliases = Vec::new();
    for (alias, mapping) in map {
        let alias = scalar_text(alias).ok_or_else(|| bad("name is not text".to_owned()))?;
        let Yaml::Hash(mapping) = mapping else {
            return Err(bad(format!("`{alias}` is not a map of rule to field")));
        };
        let mut fields = Vec::new();
        for (rule, field) in mapping {
            let (Some(rule), Some(field)) = (scalar_text(rule), scalar_text(field)) else {
                return Err(bad(format!(
                    "`{alias}` maps something other than a rule to a field"
                )));
            };
            fields.push((rule, field));
        }
        aliases.push((alias, fields));
    }
    Ok(aliases)
}

/// A string or a list of strings.
fn text_list(yaml: &Yaml, key: &'static str) -> Result<Vec<String>, RuleError> {
    match yaml {
        Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
        Yaml::Array(items) => items
            .iter()
            .map(|item| scalar_text(item).ok_or(RuleError::CorrelationMissing(key)))
            .collect(),
        scalar => Ok(vec![
            scalar_text(scalar).ok_or(RuleError::CorrelationMissing(key))?,
        ]),
    }
}

fn parse_level(doc: &Yaml) -> Result<Level, RuleError> {
    match scalar_text(&doc["level"]) {
        Some(l) => {
            Level::parse(&l).ok_or_else(|| RuleError::Invalid(format!("unknown level `{l}`")))
        }
        None => Ok(Level::Medium),
    }
}

fn parse_tags(doc: &Yaml) -> Vec<String> {
    match &doc["tags"] {
        Yaml::Array(items) => items.iter().filter_map(scalar_text).collect(),
        _ => Vec::new(),
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

    /// The specification's example: a chain of a temporal_ordered
    /// correlation over an event_count one, and two base rules, in one
    /// multi-document file.
    const PACK: &str = r#"
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
author: Florian Roth (Nextron Systems)
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
"#;

    fn correlation(text: &str) -> Result<Correlation, RuleError> {
        let mut docs = parse_documents(text)?;
        assert_eq!(docs.len(), 1);
        match docs.remove(0)? {
            Document::Correlation(c) => Ok(c),
            Document::Rule(r) => panic!("a rule, not a correlation: {r:?}"),
        }
    }

    #[test]
    fn multi_document_files_hold_rules_and_correlations() {
        let docs = parse_documents(PACK).unwrap();
        assert_eq!(docs.len(), 4);
        let Ok(Document::Correlation(outer)) = &docs[0] else {
            panic!("{:?}", docs[0]);
        };
        assert_eq!(outer.kind, Kind::TemporalOrdered);
        assert_eq!(outer.rules, ["multiple_failed_login", "successful_login"]);
        assert_eq!(outer.group_by, ["User"]);
        assert_eq!(
            (outer.timespan.as_str(), outer.timespan_ms),
            ("10m", 600_000)
        );
        assert!(outer.condition.is_empty());
        assert_eq!(outer.level, Level::High);
        assert!(!outer.generate);
        let Ok(Document::Correlation(inner)) = &docs[1] else {
            panic!("{:?}", docs[1]);
        };
        assert_eq!(inner.kind, Kind::EventCount);
        assert_eq!(inner.name.as_deref(), Some("multiple_failed_login"));
        assert_eq!(inner.condition, [(Cmp::Gte, 10)]);
        let Ok(Document::Rule(base)) = &docs[2] else {
            panic!("{:?}", docs[2]);
        };
        assert_eq!(base.name.as_deref(), Some("failed_login"));
        assert_eq!(base.id, "53ba33fd-3a50-4468-a5ef-c583635cfa92");
        // One rule per file is still what `Rule::parse` takes.
        assert_eq!(Rule::parse(PACK).unwrap_err(), RuleError::DocumentCount(4));
        // A broken document is refused alone.
        let docs = parse_documents("title: a\nlogsource: {}\n---\ntitle: b\nlogsource: {product: windows}\ndetection: {s: {a: 1}, condition: s}\n").unwrap();
        assert_eq!(docs[0], Err(RuleError::Missing("detection")));
        assert!(docs[1].is_ok());
        // Sigma 1 collections are refused as a whole.
        assert!(matches!(
            parse_documents("action: global\ntitle: a\n---\nlogsource: {product: windows}\n"),
            Err(RuleError::Unsupported(_))
        ));
        assert_eq!(parse_documents("---\n"), Err(RuleError::DocumentCount(0)));
    }

    #[test]
    fn each_correlation_type_parses() {
        let value_count = correlation(
            r#"
title: Spray
name: spray
level: critical
tags: [attack.t1110.003, attack.credential-access]
correlation:
    type: value_count
    rules: failed_login
    group-by: IpAddress
    timespan: 1h
    condition:
        field: TargetUserName
        gt: 20
        lte: 500
    generate: true
"#,
        )
        .unwrap();
        assert_eq!(value_count.kind, Kind::ValueCount);
        assert_eq!(value_count.rules, ["failed_login"]);
        assert_eq!(value_count.group_by, ["IpAddress"]);
        assert_eq!(value_count.timespan_ms, 3_600_000);
        assert_eq!(value_count.field.as_deref(), Some("TargetUserName"));
        assert_eq!(value_count.condition, [(Cmp::Gt, 20), (Cmp::Lte, 500)]);
        assert!(value_count.generate);
        assert_eq!(value_count.id, "Spray");
        assert_eq!(value_count.techniques(), ["T1110.003"]);

        let temporal = correlation(
            r#"
title: Recon
generate: true
correlation:
    type: temporal
    rules: [recon_a, recon_b, recon_c]
    group-by: [ComputerName, User]
    timespan: 30s
    condition:
        gte: 3
    aliases:
        User:
            recon_a: SubjectUserName
            recon_b: TargetUserName
"#,
        )
        .unwrap();
        assert_eq!(temporal.kind, Kind::Temporal);
        // "All three rules" is what a temporal correlation evaluates.
        assert!(temporal.condition.is_empty());
        // A top-level `generate` counts too.
        assert!(temporal.generate);
        assert_eq!(temporal.alias("User", "recon_b"), Some("TargetUserName"));
        assert_eq!(temporal.alias("User", "recon_c"), None);
        assert_eq!(temporal.timespan_ms, 30_000);
    }

    #[test]
    fn malformed_correlations_name_what_is_wrong() {
        let base = |section: &str| format!("title: c\ncorrelation:\n{section}");
        let cases: [(&str, RuleError); 11] = [
            (
                "  type: event_sum\n  rules: [a]\n  group-by: [x]\n  timespan: 5m\n  condition: {gte: 2}\n",
                RuleError::UnknownCorrelationType("event_sum".into()),
            ),
            (
                "  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: 2}\n",
                RuleError::CorrelationMissing("group-by"),
            ),
            (
                "  type: temporal\n  group-by: [x]\n  timespan: 5m\n",
                RuleError::CorrelationMissing("rules"),
            ),
            (
                "  type: event_count\n  rules: [a]\n  group-by: [x]\n  condition: {gte: 2}\n",
                RuleError::CorrelationMissing("timespan"),
            ),
            (
                "  type: event_count\n  rules: [a]\n  group-by: [x]\n  timespan: 5m\n",
                RuleError::CorrelationMissing("condition"),
            ),
            (
                "  type: event_count\n  rules: [a]\n  group-by: [x]\n  timespan: 5 minutes\n  condition: {gte: 2}\n",
                RuleError::BadTimespan("5 minutes".into()),
            ),
            (
                "  type: event_count\n  rules: [a]\n  group-by: [x]\n  timespan: 0s\n  condition: {gte: 2}\n",
                RuleError::BadTimespan("0s".into()),
            ),
            (
                "  type: value_count\n  rules: [a]\n  group-by: [x]\n  timespan: 5m\n  condition: {gte: 2}\n",
                RuleError::ValueCountWithoutField,
            ),
            (
                "  type: event_count\n  rules: [a]\n  group-by: [x]\n  timespan: 5m\n  condition: {more: 2}\n",
                RuleError::BadCorrelationCondition(
                    "unknown key `more` (expected gt, gte, lt, lte, eq, neq or field)".into(),
                ),
            ),
            (
                "  type: event_count\n  rules: [a]\n  group-by: [x]\n  timespan: 5m\n  condition: {gte: -1}\n",
                RuleError::BadCorrelationCondition(
                    "`gte` is not a count (a whole number, 0 or more)".into(),
                ),
            ),
            (
                "  type: temporal\n  rules: [a, b, c]\n  group-by: [x]\n  timespan: 5m\n  condition: {gte: 2}\n",
                RuleError::Unsupported(
                    "a temporal condition other than \"all 3 rules\" (such as `gte: 3`)".into(),
                ),
            ),
        ];
        for (section, expected) in cases {
            let err = correlation(&base(section)).unwrap_err();
            assert_eq!(err, expected, "{section}");
            // Every refusal has a reason line and a message.
            assert!(!err.reason().is_empty() && !err.to_string().is_empty());
        }
        assert_eq!(parse_timespan("1w"), Ok(7 * 86_400_000));
        assert_eq!(parse_timespan("90m"), Ok(5_400_000));
        assert!(parse_timespan("99999999999999999d").is_err());
        assert!(parse_timespan("m").is_err());
        assert!(parse_timespan("5M").is_err());
    }
}
