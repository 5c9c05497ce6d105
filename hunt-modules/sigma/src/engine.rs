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

use std::collections::HashMap;

use crate::condition::{self, Cond};
use crate::fields::{self, FieldTable};
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
}

impl LiteralIndex {
    /// Which literals occur in the event's lowercased values. With
    /// `@values` projected (at `all_values`), it holds the text of every
    /// scalar value, so only it and the values that are JSON objects or
    /// arrays (whose text, keys included, it does not hold) are searched.
    fn present(&self, event: &EventView<'_>, all_values: Option<usize>) -> Vec<bool> {
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

/// A compiled set of Sigma rules.
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
    pub fn compile_onto<'a>(
        texts: impl IntoIterator<Item = (&'a str, &'a str)>,
        options: &CompileOptions,
        fields: FieldTable,
    ) -> RuleSet {
        let mut set = RuleSet {
            fields,
            ..RuleSet::default()
        };
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
            let mark = set.fields.len();
            match compile_rule(&rule, source, options, &mut set.fields) {
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
                }
                Err(error) => {
                    // Nothing of a rule that failed stays projected.
                    set.fields.truncate(mark);
                    set.rejected.push(Rejected {
                        source: source.to_owned(),
                        title: Some(rule.title.clone()),
                        error,
                    })
                }
            }
        }
        set.index_literals();
        set
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
        let all_values = self.fields.index(fields::ALL_VALUES);
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
                    let present =
                        present.get_or_insert_with(|| literals.present(event, all_values));
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
}
