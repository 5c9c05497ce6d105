//! Compiled rule sets and their evaluation over events.
//!
//! [`RuleSet::compile`] parses each rule, maps its log source to
//! [alternatives](crate::logsource::Alternative), and compiles one variant of
//! the rule per alternative with every field resolved to its index in the
//! set's [field table](crate::fields::FieldTable) (planned: every field the
//! rules name; or the static catalogue) and every value to a
//! [`ValueTest`]. Variants are grouped by their log-source constraints
//! ("gates"): an event is checked against each distinct gate once, and only
//! the rules behind the gates it passes are evaluated. Of those, a variant
//! whose condition can only hold if some literal occurs in the event (most
//! Sigma rules: `CommandLine|contains: ...`) is evaluated only when one
//! Aho-Corasick pass over the event's lowercased values found one of its
//! literals ([`LiteralIndex`]). Rules that cannot be compiled are kept
//! aside with their [`RuleError`].

use std::collections::{HashMap, HashSet};

use quarry_sdk::correlation::{self as contract, Spec};

use crate::condition::{self, Cond};
use crate::fields::{self, FieldTable};
use crate::logsource::{self, Alternative, Constraint};
use crate::matcher::{FieldSource, Modifiers, RawValue, ValueTest, expand_placeholders};
use crate::rule::{self, Correlation, Document, Level, Rule, RuleError};

/// Longest group or counted value a correlation records, in bytes: every
/// distinct one is a key of the task's partial state (up to the contract's
/// `MAX_KEYS_PER_TASK`), so an unbounded command line would make the state
/// unbounded too. Hosts, accounts and addresses are far shorter.
const MAX_CORRELATION_VALUE: usize = 256;

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
    /// `None`: keywords, searched in every projected field (against the
    /// catalogue; a planned table reads `@values` instead).
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
    /// Ids in the set's [`LiteralIndex`] one of which the event must
    /// contain for the variant to match; `None`: always evaluated.
    required: Option<Vec<u32>>,
}

/// The literals some variants require, searched in one pass per event.
#[derive(Debug)]
struct LiteralIndex {
    automaton: aho_corasick::AhoCorasick,
    count: usize,
    /// Where `@values` is projected, if it is (fixed once the rules are
    /// compiled: only keyword searches add it).
    all_values: Option<usize>,
}

impl LiteralIndex {
    /// Which literals occur in the event's lowercased values. With
    /// `@values` projected, it holds the text of every
    /// scalar value, so only it and the values that are JSON objects or
    /// arrays (whose text, keys included, it does not hold) are searched.
    fn present(&self, event: &EventView<'_>) -> Vec<bool> {
        let all_values = self.all_values;
        let mut present = vec![false; self.count];
        let has_all = all_values.is_some_and(|i| event.lower.get(i).is_some_and(Option::is_some));
        for (i, text) in event.lower.iter().enumerate() {
            let Some(text) = text else { continue };
            if has_all && Some(i) != all_values && !text.starts_with(['{', '[']) {
                continue;
            }
            for found in self.automaton.find_overlapping_iter(text.as_str()) {
                present[found.pattern().as_usize()] = true;
            }
        }
        present
    }
}

/// The literal sets of a variant's parts, while it is compiled.
type Literals = Option<Vec<String>>;

/// Of two sets one of which must occur, the more selective: the one whose
/// shortest literal is longest, then the smaller.
fn best(a: Literals, b: Literals) -> Literals {
    let score = |set: &Vec<String>| {
        let shortest = set.iter().map(String::len).min().unwrap_or(0);
        (shortest.min(8), std::cmp::Reverse(set.len()))
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Either set may be what occurs: their union, unknown if either is.
fn union(a: Literals, b: Literals) -> Literals {
    let (mut a, b) = (a?, b?);
    a.extend(b);
    Some(a)
}

fn item_literals(item: &Item) -> Literals {
    let mut sets = item.tests.iter().map(ValueTest::required_literals);
    if item.all {
        sets.fold(None, best)
    } else {
        let first = sets.next()?;
        sets.fold(first, union)
    }
}

fn search_literals(search: &Search) -> Literals {
    let mut groups = search
        .any_of
        .iter()
        .map(|items| items.iter().map(item_literals).fold(None, best));
    let first = groups.next()?;
    groups.fold(first, union)
}

fn cond_literals(cond: &Cond, searches: &[Literals]) -> Literals {
    match cond {
        Cond::Search(i) => searches.get(*i).cloned().flatten(),
        Cond::Not(_) => None,
        Cond::And(parts) => parts
            .iter()
            .map(|c| cond_literals(c, searches))
            .fold(None, best),
        Cond::Or(parts) => {
            let mut sets = parts.iter().map(|c| cond_literals(c, searches));
            let first = sets.next()?;
            sets.fold(first, union)
        }
        // At least one of them must match.
        Cond::AtLeast(n, ids) if *n >= 1 => {
            let mut sets = ids.iter().map(|&i| searches.get(i).cloned().flatten());
            let first = sets.next()?;
            sets.fold(first, union)
        }
        Cond::AtLeast(..) => None,
    }
}

/// Literals one of which an event matching `variant` contains.
fn variant_literals(variant: &Variant) -> Literals {
    let searches: Vec<Literals> = variant.searches.iter().map(search_literals).collect();
    let mut sets = variant
        .conditions
        .iter()
        .map(|c| cond_literals(c, &searches));
    let first = sets.next()?;
    sets.fold(first, union)
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

/// Clauses in one any-of group of a module's prefilter (the worker's
/// `MAX_GROUP_CLAUSES`).
const MAX_GROUP_CLAUSES: usize = 64;
/// Values over all prefilter clauses (the worker's `MAX_PREFILTER_VALUES`).
const MAX_PREFILTER_VALUES: usize = 16 * 1024;

/// How a clause of [`RuleSet::any_of_prefilter`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrefilterOp {
    /// The field equals one of the values (ASCII case-insensitive).
    Equals,
    /// The field is present and not empty.
    Exists,
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
    /// A view of `values`, projected onto the rule set's
    /// [fields](RuleSet::fields).
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

/// One base rule of a compiled correlation.
#[derive(Debug)]
struct Series {
    /// Per group-by field, the event fields that may hold it (one per
    /// log-source rename of the base rule, then fallbacks); the first
    /// present wins.
    group: Vec<Vec<usize>>,
    /// The same for `value_count`'s field.
    value: Option<Vec<usize>>,
}

/// A correlation whose base rules compiled in the same set.
#[derive(Debug)]
struct CompiledCorrelation {
    spec: Spec,
    /// In `spec.series` order.
    series: Vec<Series>,
}

/// One document of the texts being compiled.
struct Doc {
    /// The parameter name, `#N` appended for the Nth of several documents.
    source: String,
    /// Index of the text (file) it came from.
    file: usize,
    parsed: Result<Document, RuleError>,
}

/// A compiled set of Sigma rules and the correlations over them.
#[derive(Debug, Default)]
pub struct RuleSet {
    fields: FieldTable,
    rules: Vec<CompiledRule>,
    literals: Option<LiteralIndex>,
    gates: Vec<Vec<Gate>>,
    /// Per gate: (rule, variant) pairs behind it.
    behind: Vec<Vec<(usize, usize)>>,
    /// Per rule: its gates.
    gates_of: Vec<Vec<usize>>,
    /// Per rule: whether its matches become findings (see
    /// [`RuleSet::reports`]).
    reports: Vec<bool>,
    correlations: Vec<CompiledCorrelation>,
    /// Per rule: the (correlation, series) pairs its matches feed.
    feeds: Vec<Vec<(usize, usize)>>,
    rejected: Vec<Rejected>,
}

impl RuleSet {
    /// Compiles rules given as `(source, YAML text)` into a planned field
    /// table: every field a rule reads is projected. Rules below
    /// `options.min_level` are left out (not rejected).
    pub fn compile<'a>(
        texts: impl IntoIterator<Item = (&'a str, &'a str)>,
        options: &CompileOptions,
    ) -> RuleSet {
        RuleSet::compile_onto(texts, options, FieldTable::planned())
    }

    /// As [`RuleSet::compile`], resolving fields in `fields`: a
    /// [planned](FieldTable::planned) table grows, the
    /// [catalogue](FieldTable::catalogue) refuses rules reading other fields.
    ///
    /// A text may hold several YAML documents, each compiled on its own
    /// under the source `<source>#<N>` (1-based). Correlations reference
    /// detection rules of any text by `name` or `id` (those of their own
    /// text first); a base rule below `options.min_level` is still compiled
    /// for a correlation that is not, and reports no findings of its own.
    pub fn compile_onto<'a>(
        texts: impl IntoIterator<Item = (&'a str, &'a str)>,
        options: &CompileOptions,
        fields: FieldTable,
    ) -> RuleSet {
        let mut set = RuleSet {
            fields,
            ..RuleSet::default()
        };
        // Every document first: a correlation may reference rules of a
        // later text, and its base rules are compiled whatever their level.
        let mut docs: Vec<Doc> = Vec::new();
        for (file, (source, text)) in texts.into_iter().enumerate() {
            match rule::parse_documents(text) {
                Ok(list) => {
                    let many = list.len() > 1;
                    for (n, parsed) in list.into_iter().enumerate() {
                        docs.push(Doc {
                            source: if many {
                                format!("{source}#{}", n + 1)
                            } else {
                                source.to_owned()
                            },
                            file,
                            parsed,
                        });
                    }
                }
                Err(error) => docs.push(Doc {
                    source: source.to_owned(),
                    file,
                    parsed: Err(error),
                }),
            }
        }
        // Each correlation in scope, with its references resolved to
        // document indexes (or why not).
        let mut wanted: Vec<(usize, Result<Resolved, RuleError>)> = Vec::new();
        for (at, doc) in docs.iter().enumerate() {
            if let Ok(Document::Correlation(c)) = &doc.parsed
                && c.level >= options.min_level
            {
                wanted.push((at, resolve_references(c, doc.file, &docs)));
            }
        }
        let needed: HashSet<usize> = wanted
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|r| r.series.iter().copied())
            .collect();

        let mut gate_ids: HashMap<Vec<Constraint>, usize> = HashMap::new();
        // Per document: the compiled rule, or why it was rejected.
        let mut compiled_as: HashMap<usize, Result<usize, RuleError>> = HashMap::new();
        let mut below_level: Vec<bool> = Vec::new();
        for (at, doc) in docs.iter().enumerate() {
            let rule = match &doc.parsed {
                Ok(Document::Rule(rule)) => rule,
                Ok(Document::Correlation(_)) => continue,
                Err(error) => {
                    set.rejected.push(Rejected {
                        source: doc.source.clone(),
                        title: None,
                        error: error.clone(),
                    });
                    continue;
                }
            };
            let below = rule.level < options.min_level;
            if below && !needed.contains(&at) {
                continue;
            }
            let mark = set.fields.len();
            match compile_rule(rule, &doc.source, options, &mut set.fields) {
                Ok((compiled, gates)) => {
                    let index = set.rules.len();
                    set.gates_of.push(Vec::new());
                    for (variant, constraints) in gates.into_iter().enumerate() {
                        let next = set.gates.len();
                        let gate = *gate_ids.entry(constraints.clone()).or_insert(next);
                        if gate == next {
                            set.gates.push(compile_gate(&constraints, &set.fields));
                            set.behind.push(Vec::new());
                        }
                        set.behind[gate].push((index, variant));
                        set.gates_of[index].push(gate);
                    }
                    set.rules.push(compiled);
                    below_level.push(below);
                    compiled_as.insert(at, Ok(index));
                }
                Err(error) => {
                    // Nothing of a rule that failed stays projected.
                    set.fields.truncate(mark);
                    compiled_as.insert(at, Err(error.clone()));
                    set.rejected.push(Rejected {
                        source: doc.source.clone(),
                        title: Some(rule.title.clone()),
                        error,
                    })
                }
            }
        }

        set.feeds = vec![Vec::new(); set.rules.len()];
        let mut silenced = vec![false; set.rules.len()];
        let mut generated = vec![false; set.rules.len()];
        let mut ids: HashSet<String> = HashSet::new();
        for (at, resolved) in wanted {
            let doc = &docs[at];
            let Ok(Document::Correlation(correlation)) = &doc.parsed else {
                continue;
            };
            let mark = set.fields.len();
            let compiled = resolved.and_then(|resolved| {
                if !ids.insert(correlation.id.clone()) {
                    return Err(RuleError::Invalid(format!(
                        "another correlation of the hunt has the id `{}`",
                        correlation.id
                    )));
                }
                set.compile_correlation(correlation, &resolved, &docs, &compiled_as)
            });
            match compiled {
                Ok((compiled, rules)) => {
                    let index = set.correlations.len();
                    for (series, &rule) in rules.iter().enumerate() {
                        set.feeds[rule].push((index, series));
                        if correlation.generate {
                            generated[rule] = true;
                        } else {
                            silenced[rule] = true;
                        }
                    }
                    set.correlations.push(compiled);
                }
                Err(error) => {
                    set.fields.truncate(mark);
                    set.rejected.push(Rejected {
                        source: doc.source.clone(),
                        title: Some(correlation.title.clone()),
                        error,
                    });
                }
            }
        }
        // A base rule reports its own matches unless a correlation that
        // uses it says not to (`generate: false`, the default) and none
        // asks for them (`generate: true`): see docs/sigma.md.
        set.reports = (0..set.rules.len())
            .map(|i| !below_level[i] && (generated[i] || !silenced[i]))
            .collect();
        set.index_literals();
        set
    }

    /// Compiles `correlation`, whose references `resolved` found: its spec
    /// and, per series, the rule index in the set and the event fields of
    /// its group and value (projected into the table).
    fn compile_correlation(
        &mut self,
        correlation: &Correlation,
        resolved: &Resolved,
        docs: &[Doc],
        compiled_as: &HashMap<usize, Result<usize, RuleError>>,
    ) -> Result<(CompiledCorrelation, Vec<usize>), RuleError> {
        let mut rules = Vec::new();
        let mut series = Vec::new();
        for (position, &at) in resolved.series.iter().enumerate() {
            let reference = &correlation.rules[position];
            let index = match compiled_as.get(&at) {
                Some(Ok(index)) => *index,
                Some(Err(error)) => {
                    return Err(RuleError::BaseRuleRejected {
                        reference: reference.clone(),
                        reason: error.to_string(),
                    });
                }
                None => {
                    return Err(RuleError::BaseRuleRejected {
                        reference: reference.clone(),
                        reason: "it was not compiled".to_owned(),
                    });
                }
            };
            let Ok(Document::Rule(rule)) = &docs[at].parsed else {
                return Err(RuleError::ChainedCorrelation(reference.clone()));
            };
            let alternatives = logsource::alternatives(&rule.logsource)?;
            // The field a group-by name stands for in this rule's events:
            // an alias's mapping for the rule, or the name itself.
            let field_of = |name: &str| -> Result<String, RuleError> {
                match resolved.aliases.iter().find(|(alias, _)| alias == name) {
                    Some((_, mapping)) => mapping
                        .iter()
                        .find(|(doc, _)| *doc == at)
                        .map(|(_, field)| field.clone())
                        .ok_or_else(|| {
                            RuleError::Invalid(format!(
                                "correlation alias `{name}` maps no field for rule `{reference}`"
                            ))
                        }),
                    None => Ok(name.to_owned()),
                }
            };
            let mut group = Vec::with_capacity(correlation.group_by.len());
            for name in &correlation.group_by {
                group.push(event_fields(
                    &alternatives,
                    &field_of(name)?,
                    &mut self.fields,
                )?);
            }
            let value = match &correlation.field {
                Some(name) => Some(event_fields(
                    &alternatives,
                    &field_of(name)?,
                    &mut self.fields,
                )?),
                None => None,
            };
            rules.push(index);
            series.push(Series { group, value });
        }
        let level = correlation.level;
        let base: Vec<&RuleMeta> = rules.iter().map(|&i| &self.rules[i].meta).collect();
        // The techniques of the correlation and of its base rules: the
        // specification lets only the outermost rule carry meta data, but
        // base rules keep their ATT&CK tags, and coverage should count them.
        let mut techniques = correlation.techniques();
        techniques.extend(base.iter().flat_map(|m| m.techniques.iter().cloned()));
        techniques.sort();
        techniques.dedup();
        let mut tags = vec!["sigma".to_owned(), "correlation".to_owned()];
        tags.extend(
            rule::other_tags(&correlation.tags)
                .into_iter()
                .map(str::to_owned),
        );
        let mut evidence = vec![
            ("sigma.id".to_owned(), correlation.id.clone()),
            ("sigma.title".to_owned(), correlation.title.clone()),
            ("sigma.level".to_owned(), level.name().to_owned()),
            (
                "sigma.status".to_owned(),
                correlation
                    .status
                    .clone()
                    .unwrap_or_else(|| "unknown".to_owned()),
            ),
            (
                "sigma.author".to_owned(),
                correlation
                    .author
                    .clone()
                    .unwrap_or_else(|| "unknown".to_owned()),
            ),
            ("sigma.license".to_owned(), "DRL-1.1".to_owned()),
            (
                "sigma.correlation".to_owned(),
                correlation.kind.name().to_owned(),
            ),
            ("sigma.timespan".to_owned(), correlation.timespan.clone()),
            (
                "sigma.rule_ids".to_owned(),
                base.iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ];
        // The Detection Rule License asks for every author's attribution,
        // the base rules' included.
        let mut authors: Vec<&str> = base.iter().filter_map(|m| m.author.as_deref()).collect();
        authors.sort_unstable();
        authors.dedup();
        authors.retain(|a| Some(*a) != correlation.author.as_deref());
        if !authors.is_empty() {
            evidence.push(("sigma.base_authors".to_owned(), authors.join("; ")));
        }
        let spec = Spec {
            id: correlation.id.clone(),
            rule: format!("sigma/{}", correlation.id),
            title: correlation.title.clone(),
            kind: correlation.kind,
            timespan_ms: correlation.timespan_ms,
            condition: correlation.condition.clone(),
            series: base.iter().map(|m| m.title.clone()).collect(),
            group_by: correlation.group_by.clone(),
            value_field: correlation.field.clone(),
            severity: level.name().to_owned(),
            confidence: crate::confidence(correlation.status.as_deref()),
            techniques,
            tags,
            evidence,
        };
        Ok((CompiledCorrelation { spec, series }, rules))
    }

    /// Builds the [`LiteralIndex`] of the variants' required literals.
    fn index_literals(&mut self) {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut literals: Vec<String> = Vec::new();
        for rule in &mut self.rules {
            for variant in &mut rule.variants {
                variant.required = variant_literals(variant).map(|set| {
                    let mut required: Vec<u32> = set
                        .into_iter()
                        .map(|literal| {
                            *ids.entry(literal.clone()).or_insert_with(|| {
                                literals.push(literal);
                                (literals.len() - 1) as u32
                            })
                        })
                        .collect();
                    required.sort_unstable();
                    required.dedup();
                    required
                });
            }
        }
        // A DFA: the fastest search, and the memory of a few thousand
        // short literals is small.
        self.literals = aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&literals)
            .ok()
            .filter(|_| !literals.is_empty())
            .map(|automaton| LiteralIndex {
                automaton,
                count: literals.len(),
                all_values: self.fields.index(fields::ALL_VALUES),
            });
        if self.literals.is_none() {
            // Without an automaton every variant is evaluated.
            for variant in self.rules.iter_mut().flat_map(|r| &mut r.variants) {
                variant.required = None;
            }
        }
    }

    /// The fields the rules read, in the order events carry them.
    pub fn fields(&self) -> &FieldTable {
        &self.fields
    }

    /// Indexes of `names` for the module's own use (finding entities and
    /// evidence), added to a planned table; names the table cannot take
    /// are left out.
    pub fn project_also(&mut self, names: &[&str]) -> Vec<usize> {
        names
            .iter()
            .filter_map(|name| self.fields.intern(name))
            .collect()
    }

    /// A host prefilter no stricter than the rules' log sources: one any-of
    /// group with, per log-source gate, its EventID constraint (or its
    /// first), merged by field. `None` when some rule applies to every
    /// event or the group would exceed the contract's limits; the guest's
    /// gates still decide exactly.
    pub fn any_of_prefilter(&self) -> Option<Vec<(String, PrefilterOp, Vec<String>)>> {
        use std::collections::{BTreeMap, BTreeSet};
        if self.gates.is_empty() {
            return None;
        }
        let mut clauses: BTreeMap<(usize, PrefilterOp), BTreeSet<String>> = BTreeMap::new();
        for gate in &self.gates {
            let pick = gate
                .iter()
                .find(|g| matches!(g, Gate::Equals(field, _) if self.fields.name(*field) == "EventID"))
                .or_else(|| gate.first())?;
            match pick {
                Gate::Equals(field, values) => {
                    clauses
                        .entry((*field, PrefilterOp::Equals))
                        .or_default()
                        .extend(values.iter().cloned());
                }
                Gate::AnyExists(fields) => {
                    if fields.is_empty() {
                        return None;
                    }
                    for &field in fields {
                        clauses.entry((field, PrefilterOp::Exists)).or_default();
                    }
                }
            }
        }
        let values: usize = clauses.values().map(BTreeSet::len).sum();
        if clauses.len() > MAX_GROUP_CLAUSES || values > MAX_PREFILTER_VALUES {
            return None;
        }
        Some(
            clauses
                .into_iter()
                .map(|((field, op), values)| {
                    (
                        self.fields.name(field).to_owned(),
                        op,
                        values.into_iter().collect(),
                    )
                })
                .collect(),
        )
    }

    /// Whether matches of rule `index` become findings: not when it is
    /// below the minimum level and compiled only for a correlation, nor
    /// when it is a base rule of correlations none of which has
    /// `generate: true`.
    pub fn reports(&self, index: usize) -> bool {
        self.reports.get(index).copied().unwrap_or(true)
    }

    /// The compiled correlations' specs, in rule order.
    pub fn correlations(&self) -> impl Iterator<Item = &Spec> {
        self.correlations.iter().map(|c| &c.spec)
    }

    /// Number of compiled correlations.
    pub fn correlation_count(&self) -> usize {
        self.correlations.len()
    }

    /// An empty partial state per compiled correlation, in order: what
    /// [`RuleSet::observe`] records into.
    pub fn correlation_states(&self) -> Vec<contract::Correlation> {
        self.correlations
            .iter()
            .map(|c| contract::Correlation::new(c.spec.clone()))
            .collect()
    }

    /// Records a match of rule `index` on `event` (at `timestamp_ms`) in
    /// every correlation that uses the rule (`states` from
    /// [`RuleSet::correlation_states`]). An event without a value for
    /// every group-by field (or, for `value_count`, the counted field) is
    /// left out of that correlation, as SIEM backends leave out events
    /// with a null group-by field: otherwise every event lacking, say, a
    /// user would fall into one fleet-wide group.
    pub fn observe(
        &self,
        index: usize,
        event: &EventView<'_>,
        timestamp_ms: i64,
        states: &mut [contract::Correlation],
    ) {
        let Some(feeds) = self.feeds.get(index) else {
            return;
        };
        for &(correlation, series) in feeds {
            let (Some(compiled), Some(state)) = (
                self.correlations.get(correlation),
                states.get_mut(correlation),
            ) else {
                continue;
            };
            let Some(fields) = compiled.series.get(series) else {
                continue;
            };
            let group: Option<Vec<&str>> = fields
                .group
                .iter()
                .map(|candidates| first_value(candidates, event))
                .collect();
            let Some(group) = group else { continue };
            let value = match &fields.value {
                Some(candidates) => match first_value(candidates, event) {
                    Some(value) => Some(value),
                    None => continue,
                },
                None => None,
            };
            state.observe(&group, series, timestamp_ms, value);
        }
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
        self.evaluate(event, true)
    }

    /// As [`RuleSet::matches`], evaluating every rule behind the passing
    /// gates without the literal index (to check the index against).
    pub fn matches_unindexed<'s>(&'s self, event: &EventView<'_>) -> Vec<Match<'s>> {
        self.evaluate(event, false)
    }

    /// Literals in the index, and variants the index can skip.
    pub fn indexed(&self) -> (usize, usize) {
        let variants = self
            .rules
            .iter()
            .flat_map(|r| &r.variants)
            .filter(|v| v.required.is_some())
            .count();
        (self.literals.as_ref().map_or(0, |l| l.count), variants)
    }

    fn evaluate<'s>(&'s self, event: &EventView<'_>, indexed: bool) -> Vec<Match<'s>> {
        let mut hits: Vec<Match<'s>> = Vec::new();
        let mut present: Option<Vec<bool>> = None;
        for (gate, pairs) in self.gates.iter().zip(&self.behind) {
            if !gate_passes(gate, event) {
                continue;
            }
            for &(index, variant) in pairs {
                if hits.iter().any(|m| m.index == index) {
                    continue;
                }
                let variant = &self.rules[index].variants[variant];
                if indexed
                    && let (Some(required), Some(literals)) = (&variant.required, &self.literals)
                {
                    let present = present.get_or_insert_with(|| literals.present(event));
                    if !required.iter().any(|&id| present[id as usize]) {
                        continue;
                    }
                }
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

/// A correlation's references, resolved to documents.
struct Resolved {
    /// Per entry of `rules:`, the document of the base rule.
    series: Vec<usize>,
    /// Per alias, (document of a base rule, its field).
    aliases: Vec<(String, Vec<(usize, String)>)>,
}

/// The document a correlation in text `file` means by `reference`: the
/// rule or correlation with that `name` or `id` in its own text, else in
/// the whole hunt, if exactly one.
fn resolve_reference(reference: &str, file: usize, docs: &[Doc]) -> Result<usize, RuleError> {
    let named = |doc: &Doc| match &doc.parsed {
        Ok(Document::Rule(r)) => r.id == reference || r.name.as_deref() == Some(reference),
        Ok(Document::Correlation(c)) => c.id == reference || c.name.as_deref() == Some(reference),
        Err(_) => false,
    };
    let candidates: Vec<usize> = (0..docs.len()).filter(|&i| named(&docs[i])).collect();
    let local: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| docs[i].file == file)
        .collect();
    match (local.as_slice(), candidates.as_slice()) {
        ([one], _) | ([], [one]) => Ok(*one),
        (_, []) => Err(RuleError::UnknownReference(reference.to_owned())),
        _ => Err(RuleError::AmbiguousReference(reference.to_owned())),
    }
}

/// Resolves the `rules:` and `aliases:` references of `correlation` (in
/// text `file`); a reference to a correlation is a chain, refused.
fn resolve_references(
    correlation: &Correlation,
    file: usize,
    docs: &[Doc],
) -> Result<Resolved, RuleError> {
    let mut series = Vec::with_capacity(correlation.rules.len());
    for reference in &correlation.rules {
        let at = resolve_reference(reference, file, docs)?;
        if let Ok(Document::Correlation(_)) = &docs[at].parsed {
            return Err(RuleError::ChainedCorrelation(reference.clone()));
        }
        series.push(at);
    }
    let mut aliases = Vec::with_capacity(correlation.aliases.len());
    for (alias, mapping) in &correlation.aliases {
        let mut fields = Vec::with_capacity(mapping.len());
        for (reference, field) in mapping {
            let at = resolve_reference(reference, file, docs)?;
            if !series.contains(&at) {
                return Err(RuleError::Invalid(format!(
                    "correlation alias `{alias}` maps rule `{reference}`, which is not in the \
                     correlation's `rules`"
                )));
            }
            fields.push((at, field.clone()));
        }
        aliases.push((alias.clone(), fields));
    }
    Ok(Resolved { series, aliases })
}

/// The event fields Sigma field `name` is read from in events of a rule
/// with log-source `alternatives` (one per distinct rename, then the
/// fields' fallbacks), projected into `table`.
fn event_fields(
    alternatives: &[Alternative],
    name: &str,
    table: &mut FieldTable,
) -> Result<Vec<usize>, RuleError> {
    let mut found = Vec::new();
    for alternative in alternatives {
        let field = alternative.event_field(name);
        let index = resolve_field(table, &field)?;
        if !found.contains(&index) {
            found.push(index);
        }
        for alias in fields::aliases(&field) {
            if let Some(index) = table.intern(alias)
                && !found.contains(&index)
            {
                found.push(index);
            }
        }
    }
    Ok(found)
}

/// The first non-empty value of `candidates` in `event`, cut to
/// [`MAX_CORRELATION_VALUE`].
fn first_value<'e>(candidates: &[usize], event: &'e EventView<'_>) -> Option<&'e str> {
    candidates
        .iter()
        .find_map(|&f| event.get(f).filter(|v| !v.is_empty()))
        .map(|v| crate::cut_to(v, MAX_CORRELATION_VALUE))
}

/// The gate of `constraints`, whose fields [`compile_rule`] has already
/// added to a planned `table`; against the catalogue, a constraint on a
/// field it lacks is left out.
fn compile_gate(constraints: &[Constraint], table: &FieldTable) -> Vec<Gate> {
    constraints
        .iter()
        .filter_map(|c| match c {
            Constraint::Equals(field, values) => Some(Gate::Equals(
                table.index(field)?,
                values.iter().map(|v| v.to_lowercase()).collect(),
            )),
            Constraint::AnyExists(names) => Some(Gate::AnyExists(
                names.iter().filter_map(|n| table.index(n)).collect(),
            )),
        })
        .collect()
}

/// Adds `name` to `table` for a rule: a growing table that cannot take it
/// is full; the catalogue lacks it.
fn resolve_field(table: &mut FieldTable, name: &str) -> Result<usize, RuleError> {
    table.intern(name).ok_or_else(|| {
        if table.is_growing() {
            RuleError::TooManyFields(name.to_owned())
        } else {
            RuleError::FieldNotProjected(name.to_owned())
        }
    })
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
    table: &mut FieldTable,
) -> Result<Compiled, RuleError> {
    let alternatives = logsource::alternatives(&rule.logsource)?;
    if table.is_growing() {
        for alternative in &alternatives {
            for constraint in &alternative.constraints {
                match constraint {
                    Constraint::Equals(field, _) => {
                        resolve_field(table, field)?;
                    }
                    Constraint::AnyExists(names) => {
                        for name in names {
                            resolve_field(table, name)?;
                        }
                    }
                }
            }
        }
    }
    let names: Vec<String> = rule.searches.iter().map(|(n, _)| n.clone()).collect();
    let conditions = rule
        .conditions
        .iter()
        .map(|c| condition::parse(c, &names))
        .collect::<Result<Vec<_>, _>>()?;
    let mut variants = Vec::new();
    let mut gates = Vec::new();
    for alternative in &alternatives {
        variants.push(compile_variant(
            rule,
            alternative,
            &conditions,
            options,
            table,
        )?);
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
    table: &mut FieldTable,
) -> Result<Variant, RuleError> {
    // Keywords search every value of the event: a planned table reads them
    // all at once from the host's `@values` (one value per line); against
    // the catalogue they search every projected field.
    let has_keywords = rule
        .searches
        .iter()
        .flat_map(|(_, search)| search.any_of.iter().flatten())
        .any(|item| item.field.is_none());
    let all_values = if has_keywords && table.is_growing() {
        Some(resolve_field(table, fields::ALL_VALUES)?)
    } else {
        None
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
                    modifiers = match all_values {
                        Some(_) => modifiers.for_keywords_over_lines(),
                        None => modifiers.for_keywords(),
                    };
                }
                let (field, fallbacks) = match &item.field {
                    Some(name) => {
                        let event_field = alternative.event_field(name);
                        let field = resolve_field(table, &event_field)?;
                        let fallbacks = fields::aliases(&event_field)
                            .iter()
                            .filter_map(|alias| table.intern(alias))
                            .collect();
                        (Some(field), fallbacks)
                    }
                    None => (all_values, Vec::new()),
                };
                let mut resolve = |name: &str| -> Result<usize, RuleError> {
                    resolve_field(table, &alternative.event_field(name))
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
        required: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pairs` projected onto the fields of `set`, as the host projects an
    /// event; fields the rules do not read are not projected.
    fn event(set: &RuleSet, pairs: &[(&str, &str)]) -> Vec<Option<String>> {
        let mut values = vec![None; set.fields().len()];
        for (name, value) in pairs {
            if let Some(index) = set.fields().index(name) {
                values[index] = Some((*value).to_owned());
            }
        }
        if let Some(index) = set.fields().index(fields::ALL_VALUES) {
            let all: Vec<&str> = pairs
                .iter()
                .map(|(_, v)| *v)
                .filter(|v| !v.is_empty())
                .collect();
            values[index] = (!all.is_empty()).then(|| all.join("\n"));
        }
        values
    }

    fn titles(set: &RuleSet, pairs: &[(&str, &str)]) -> Vec<String> {
        let values = event(set, pairs);
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
        let values = event(&set, &other);
        assert!(!set.applies(0, &EventView::new(&values)));
        let values = event(&set, &filtered);
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
        let values = event(&set, &security);
        let hits = set.matches(&EventView::new(&values));
        let names: Vec<&str> = hits[0]
            .fields
            .iter()
            .map(|&i| set.fields().name(i))
            .collect();
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
        // A wildcard match lies within one value, as searching field by
        // field: `Bad` in one and `protocol` in another is no match.
        assert!(
            titles(
                &set,
                &[
                    ("program", "sshd"),
                    ("message", "Bad"),
                    ("detail", "protocol")
                ]
            )
            .is_empty()
        );
        // Against the catalogue, keywords search each projected field.
        let set = RuleSet::compile_onto(
            [("k", rule)],
            &CompileOptions::default(),
            FieldTable::catalogue(),
        );
        assert_eq!(
            titles(
                &set,
                &[("program", "sshd"), ("message", "Bad packet protocol")]
            ),
            ["Keywords"]
        );
    }

    #[test]
    fn rejections_carry_reasons_and_levels_filter() {
        let unmapped = "title: U\nlogsource: {product: macos, category: process_creation}\ndetection:\n  s: {Image: x}\n  condition: s\n";
        let unknown_field = "title: F\nlogsource: {product: windows, service: security}\ndetection:\n  s: {NoSuchField: x}\n  condition: s\n";
        let low = "title: L\nlevel: low\nlogsource: {product: windows, service: security}\ndetection:\n  s: {EventID: 1}\n  condition: s\n";
        let set = RuleSet::compile_onto(
            [
                ("u", unmapped),
                ("f", unknown_field),
                ("l", low),
                ("bad", "x: ["),
            ],
            &CompileOptions::with_min_level(Level::Medium),
            FieldTable::catalogue(),
        );
        assert!(set.is_empty());
        let reasons: Vec<String> = set.rejected().iter().map(|r| r.error.reason()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons[0].starts_with("unmapped logsource [product:macos category:process_creation]"),
            "{reasons:?}"
        );
        assert_eq!(
            reasons[1..],
            ["field not in the module's projection", "not valid YAML"]
        );
    }

    /// A planned table projects exactly what the rules read (their fields,
    /// log-source fields and aliases), any field name included, and
    /// nothing of a rule that failed.
    #[test]
    fn planned_tables_hold_exactly_the_rules_fields() {
        let unusual = "title: F\nlogsource: {product: windows, service: security}\ndetection:\n  s: {EventID: 4662, NoSuchFieldYet: x}\n  condition: s\n";
        let broken = "title: B\nlogsource: {product: windows, service: security}\ndetection:\n  s: {OnlyInBroken|nosuchmodifier: x}\n  condition: s\n";
        let set = RuleSet::compile([("f", unusual), ("b", broken)], &CompileOptions::default());
        assert_eq!(set.len(), 1, "{:?}", set.rejected());
        assert_eq!(set.rejected().len(), 1);
        let mut names = set.fields().names().to_vec();
        names.sort();
        assert_eq!(names, ["Channel", "EventID", "NoSuchFieldYet"]);
        assert_eq!(
            titles(
                &set,
                &[
                    ("Channel", "Security"),
                    ("EventID", "4662"),
                    ("NoSuchFieldYet", "X")
                ]
            ),
            ["F"]
        );
        // The same rule against the catalogue is refused, naming the field.
        let set = RuleSet::compile_onto(
            [("f", unusual)],
            &CompileOptions::default(),
            FieldTable::catalogue(),
        );
        assert!(
            set.rejected()[0]
                .error
                .to_string()
                .contains("NoSuchFieldYet")
        );
    }

    /// The prefilter lets through every event some rule's log source takes
    /// (a superset: EventID where a gate has one, presence where it asks
    /// for it).
    #[test]
    fn any_of_prefilter_covers_every_log_source() {
        let set = RuleSet::compile([("p", PROC)], &CompileOptions::default());
        let clauses = set.any_of_prefilter().expect("a prefilter");
        let eventid = clauses
            .iter()
            .find(|(field, _, _)| field == "EventID")
            .expect("EventID clause");
        assert_eq!(eventid.1, PrefilterOp::Equals);
        assert!(
            eventid.2.contains(&"1".to_owned()) && eventid.2.contains(&"4688".to_owned()),
            "{eventid:?}"
        );
        let everything =
            "title: K\nlogsource: {product: linux}\ndetection:\n  k: [evil]\n  condition: k\n";
        let set = RuleSet::compile([("p", PROC), ("k", everything)], &CompileOptions::default());
        assert_eq!(set.len(), 2, "{:?}", set.rejected());
        let clauses = set.any_of_prefilter().expect("a prefilter");
        assert!(
            clauses.contains(&("program".to_owned(), PrefilterOp::Exists, vec![])),
            "{clauses:?}"
        );
        // Keywords read every value at once, not the whole catalogue.
        assert!(set.fields().index(fields::ALL_VALUES).is_some());
        assert!(set.fields().len() < 16, "{:?}", set.fields().names());
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
        let values = event(&set, &nxlog);
        let hits = set.matches(&EventView::new(&values));
        let names: Vec<&str> = hits[0]
            .fields
            .iter()
            .map(|&i| set.fields().name(i))
            .collect();
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

    const FAILED: &str = r#"
title: Failed logon
id: 11111111-0000-0000-0000-000000000001
name: failed_logon
author: Base Author
level: low
tags: [attack.t1110]
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4625
    condition: selection
"#;

    const SUCCESS: &str = r#"
title: Successful logon
id: 11111111-0000-0000-0000-000000000002
name: successful_logon
level: informational
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4624
    condition: selection
"#;

    fn many_failures(rules: &str, extra: &str) -> String {
        format!(
            "title: Many failed logons\nid: c-many\nlevel: high\nauthor: Corr Author\ncorrelation:\n  type: event_count\n  rules: {rules}\n  group-by: [TargetUserName]\n  timespan: 1m\n  condition: {{gte: 3}}\n{extra}"
        )
    }

    /// Feeds `events` (`(timestamp, fields)`) through `set` as the module
    /// does and evaluates each correlation's partial state as the
    /// coordinator does after the merge: per correlation, its hits'
    /// groups.
    fn correlate(set: &RuleSet, events: &[(i64, Vec<(&str, &str)>)]) -> Vec<Vec<Vec<String>>> {
        let mut states = set.correlation_states();
        for (at, pairs) in events {
            let values = event(set, pairs);
            let view = EventView::new(&values);
            for hit in set.matches(&view) {
                set.observe(hit.index, &view, *at, &mut states);
            }
        }
        states
            .into_iter()
            .map(|state| {
                let (name, value) = state.into_counts();
                let outcome = contract::evaluate(&name, &value)
                    .expect("a correlation aggregate")
                    .expect("evaluates");
                outcome.hits.into_iter().map(|hit| hit.group).collect()
            })
            .collect()
    }

    fn logon(id: &'static str, user: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("Channel", "Security"),
            ("EventID", id),
            ("TargetUserName", user),
        ]
    }

    /// References resolve by `name` and by `id`, in the correlation's own
    /// file first and then across the hunt; base rules report nothing of
    /// their own unless `generate: true`, and are compiled below the
    /// minimum level for a correlation that is not.
    #[test]
    fn correlations_resolve_references_by_name_and_id() {
        let pack = format!("{}---\n{FAILED}", many_failures("[failed_logon]", ""));
        let options = CompileOptions::with_min_level(Level::Medium);
        let set = RuleSet::compile([("pack.yml", pack.as_str())], &options);
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        assert_eq!((set.len(), set.correlation_count()), (1, 1));
        assert!(!set.reports(0), "a base rule without generate is silent");
        let spec = set.correlations().next().unwrap();
        assert_eq!(spec.id, "c-many");
        assert_eq!(spec.rule, "sigma/c-many");
        assert_eq!(spec.series, ["Failed logon"]);
        assert_eq!(spec.severity, "high");
        assert_eq!(spec.techniques, ["T1110"]);
        assert!(
            spec.evidence
                .contains(&("sigma.base_authors".into(), "Base Author".into()))
        );
        assert!(set.fields().index("TargetUserName").is_some());

        // By id, from another file; `generate: true` keeps the base
        // rule's own findings.
        let by_id = many_failures(
            "['11111111-0000-0000-0000-000000000001']",
            "  generate: true\n",
        );
        let set = RuleSet::compile(
            [("c.yml", by_id.as_str()), ("failed.yml", FAILED)],
            &CompileOptions::default(),
        );
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        assert!(set.reports(0));
        let groups = correlate(
            &set,
            &[
                (0, logon("4625", "alice")),
                (10_000, logon("4625", "alice")),
                (20_000, logon("4625", "bob")),
                (30_000, logon("4625", "alice")),
                (40_000, logon("4624", "alice")),
            ],
        );
        assert_eq!(groups, [[["alice"]]]);

        // Below the minimum level, the correlation and its base rule are
        // both left out.
        let set = RuleSet::compile(
            [("pack.yml", pack.as_str())],
            &CompileOptions::with_min_level(Level::Critical),
        );
        assert_eq!((set.len(), set.correlation_count()), (0, 0));
        assert!(set.rejected().is_empty());

        // The same name in two files: the correlation's own file wins; in
        // neither, the reference is ambiguous.
        let renamed = FAILED.replace("id: 11111111-0000-0000-0000-000000000001", "id: other");
        let set = RuleSet::compile(
            [("other.yml", renamed.as_str()), ("pack.yml", pack.as_str())],
            &CompileOptions::default(),
        );
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        assert!(set.reports(0), "the other file's rule is not a base rule");
        assert!(!set.reports(1));
        let alone = many_failures("[failed_logon]", "");
        let set = RuleSet::compile(
            [
                ("a.yml", FAILED),
                ("b.yml", renamed.as_str()),
                ("c.yml", alone.as_str()),
            ],
            &CompileOptions::default(),
        );
        assert_eq!(
            set.rejected()[0].error,
            RuleError::AmbiguousReference("failed_logon".into())
        );
        assert!(set.reports(0) && set.reports(1));
    }

    #[test]
    fn correlations_that_cannot_run_are_refused_with_a_reason() {
        let chained = format!(
            "{}---\n{}---\n{FAILED}",
            "title: Outer\ncorrelation:\n  type: temporal\n  rules: [many, failed_logon]\n  group-by: [TargetUserName]\n  timespan: 5m\n",
            many_failures("[failed_logon]", "name: many\n"),
        );
        let set = RuleSet::compile(
            [("chain.yml", chained.as_str())],
            &CompileOptions::default(),
        );
        // The inner correlation runs; the outer is refused, by its
        // document's source.
        assert_eq!(set.correlation_count(), 1);
        assert_eq!(set.rejected().len(), 1, "{:?}", set.rejected());
        assert_eq!(set.rejected()[0].source, "chain.yml#1");
        assert_eq!(
            set.rejected()[0].error,
            RuleError::ChainedCorrelation("many".into())
        );

        let unknown = many_failures("[nobody]", "");
        let set = RuleSet::compile([("u.yml", unknown.as_str())], &CompileOptions::default());
        assert_eq!(
            set.rejected()[0].error,
            RuleError::UnknownReference("nobody".into())
        );

        // A base rule that cannot be evaluated takes its correlation with
        // it; both are listed.
        let broken = FAILED.replace("EventID: 4625", "EventID|nosuch: 4625");
        let pack = format!("{}---\n{broken}", many_failures("[failed_logon]", ""));
        let set = RuleSet::compile([("p.yml", pack.as_str())], &CompileOptions::default());
        let reasons: Vec<String> = set.rejected().iter().map(|r| r.error.reason()).collect();
        assert_eq!(set.rejected()[0].source, "p.yml#2");
        assert_eq!(reasons[1], "correlation's base rule cannot be evaluated");

        // Against the catalogue, a group-by field outside it is refused
        // (a planned task would project it).
        let odd =
            many_failures("[failed_logon]", "").replace("[TargetUserName]", "[NoSuchGroupField]");
        let pack = format!("{odd}---\n{FAILED}");
        let set = RuleSet::compile_onto(
            [("p.yml", pack.as_str())],
            &CompileOptions::default(),
            FieldTable::catalogue(),
        );
        assert_eq!(
            set.rejected()[0].error,
            RuleError::FieldNotProjected("NoSuchGroupField".into())
        );
        // ...and then its base rule reports again.
        assert!(set.reports(0));

        // Two correlations with one id would merge into one aggregate.
        let twice = format!(
            "{}---\n{}---\n{FAILED}",
            many_failures("[failed_logon]", ""),
            many_failures("[failed_logon]", "")
        );
        let set = RuleSet::compile([("t.yml", twice.as_str())], &CompileOptions::default());
        assert_eq!(set.correlation_count(), 1);
        assert!(set.rejected()[0].error.to_string().contains("c-many"));

        // An alias must map every rule it is used for.
        let alias = "title: A\ncorrelation:\n  type: temporal\n  rules: [failed_logon, successful_logon]\n  group-by: [account]\n  timespan: 5m\n  aliases:\n    account:\n      failed_logon: TargetUserName\n";
        let pack = format!("{alias}---\n{FAILED}---\n{SUCCESS}");
        let set = RuleSet::compile([("a.yml", pack.as_str())], &CompileOptions::default());
        assert!(
            set.rejected()[0]
                .error
                .to_string()
                .contains("maps no field for rule `successful_logon`"),
            "{:?}",
            set.rejected()
        );
    }

    /// Each base rule's events give the group from its own fields (an
    /// alias, a log-source rename), value counts count distinct values,
    /// temporal_ordered follows the rules' order, and events without a
    /// group value are left out.
    #[test]
    fn matches_feed_their_correlations() {
        // Logon failures, then a process started by the same account
        // (Sysmon names it `User`, Security 4688 `SubjectUserName`, by the
        // alias), in order within a minute.
        let process = r#"
title: Whoami
name: whoami
logsource: {product: windows, category: process_creation}
detection:
    selection:
        Image|endswith: '\whoami.exe'
    condition: selection
"#;
        let ordered = "title: Fail then whoami\nid: c-ordered\ncorrelation:\n  type: temporal_ordered\n  rules: [failed_logon, whoami]\n  group-by: [account]\n  timespan: 1m\n  aliases:\n    account:\n      failed_logon: TargetUserName\n      whoami: User\n";
        let spray = "title: Spray\nid: c-spray\ncorrelation:\n  type: value_count\n  rules: [failed_logon]\n  group-by: [IpAddress]\n  timespan: 1m\n  condition: {field: TargetUserName, gte: 3}\n";
        let pack = format!("{ordered}---\n{spray}---\n{FAILED}---\n{process}");
        let set = RuleSet::compile([("p.yml", pack.as_str())], &CompileOptions::default());
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        assert_eq!(set.correlation_count(), 2);
        let failed = |user: &'static str, ip: &'static str| {
            let mut e = logon("4625", user);
            e.push(("IpAddress", ip));
            e
        };
        let sysmon_whoami = |user: &'static str| {
            vec![
                ("Channel", "Microsoft-Windows-Sysmon/Operational"),
                ("EventID", "1"),
                ("Image", r"C:\Windows\System32\whoami.exe"),
                ("User", user),
            ]
        };
        let groups = correlate(
            &set,
            &[
                // bob runs whoami before failing: not in order.
                (0, sysmon_whoami("bob")),
                (1_000, failed("bob", "10.0.0.9")),
                (2_000, failed("alice", "10.0.0.9")),
                (3_000, failed("carol", "10.0.0.9")),
                // No IpAddress: no group for the spray, still alice's.
                (4_000, logon("4625", "alice")),
                (50_000, sysmon_whoami("alice")),
                // dave from another address.
                (5_000, failed("dave", "10.0.0.7")),
            ],
        );
        assert_eq!(groups[0], [["alice"]], "ordered by account");
        assert_eq!(groups[1], [["10.0.0.9"]], "three accounts from .9");

        // Security 4688 carries the alias's field under its own name: the
        // rule's log-source rename decides which event field is read.
        let by_image = "title: Images\nid: c-images\ncorrelation:\n  type: value_count\n  rules: [whoami]\n  group-by: [Computer]\n  timespan: 1m\n  condition: {field: Image, gte: 2}\n";
        let pack = format!("{by_image}---\n{process}");
        let set = RuleSet::compile([("p.yml", pack.as_str())], &CompileOptions::default());
        assert!(set.rejected().is_empty(), "{:?}", set.rejected());
        for name in ["Image", "NewProcessName", "Computer"] {
            assert!(set.fields().index(name).is_some(), "{name} projected");
        }
        let groups = correlate(
            &set,
            &[
                (
                    0,
                    vec![
                        ("Channel", "Microsoft-Windows-Sysmon/Operational"),
                        ("EventID", "1"),
                        ("Image", r"C:\a\whoami.exe"),
                        ("Computer", "WS1"),
                    ],
                ),
                (
                    1_000,
                    vec![
                        ("Channel", "Security"),
                        ("EventID", "4688"),
                        ("NewProcessName", r"C:\b\whoami.exe"),
                        ("Computer", "WS1"),
                    ],
                ),
            ],
        );
        assert_eq!(groups, [[["WS1"]]]);
    }
}
