//! Correlations across shards: "10 failed logons for one account within 5
//! minutes", "one source probing 20 accounts in a minute", "a service
//! installed, then a log cleared, on one host within an hour".
//!
//! A task sees one shard, so it cannot decide such a condition when the
//! events fall on several shards (several hosts' logs, one day split over
//! blocks on two workers). Instead each task returns the partial state of
//! every group as an ordinary mergeable aggregate, and after the last task
//! the coordinator merges them and evaluates the condition
//! ([`evaluate`]), without running guest code: the findings come out of
//! the merge.
//!
//! # Encoding
//!
//! A correlation is a `counts` aggregate named `correlation:<id>`
//! ([`NAME_PREFIX`]), so it merges by the counts rule (adding) and needs no
//! new aggregate kind in the module contract. Its keys are:
//!
//! - one *spec* key, `\0spec` followed by the [`Spec`] (the condition, the
//!   window, the finding's title, severity and evidence); every task writes
//!   the same key, so after the merge its count is the number of tasks;
//! - one key per distinct observation `e␟<group>␟<series>␟<time ms>␟<value>`
//!   (␟ is U+001F; the group's values are joined by U+001D), counting the
//!   events that made it;
//! - `\0truncated`, counting observations a task dropped at
//!   [`MAX_KEYS_PER_TASK`].
//!
//! Control characters U+0000 and U+001C–U+001F inside values are replaced
//! by spaces.
//!
//! # Semantics
//!
//! Windows slide: for every observed event of a group, the window is the
//! events from its time to its time plus the timespan (inclusive).
//!
//! - [`Kind::EventCount`]: the events in a window, compared with the
//!   condition;
//! - [`Kind::ValueCount`]: the distinct values of the value field in a
//!   window (events without the field do not count);
//! - [`Kind::Temporal`]: every series (base rule) has an event in a window;
//! - [`Kind::TemporalOrdered`]: the series occur in their order within a
//!   window (each at or after the previous one).
//!
//! A group is reported once, for the first window that meets the
//! condition.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::aggregate::AggregateValue;

/// Prefix of a correlation aggregate's name; the rest is [`Spec::id`].
pub const NAME_PREFIX: &str = "correlation:";
/// Observations one task keeps per correlation; more are counted in the
/// `\0truncated` key and the finding says the result may be incomplete.
pub const MAX_KEYS_PER_TASK: usize = 100_000;
/// Bytes of observation keys one task keeps per correlation (long group
/// values would otherwise fill the task's output limit first); past it, as
/// past [`MAX_KEYS_PER_TASK`].
pub const MAX_BYTES_PER_TASK: usize = 8 * 1024 * 1024;
/// Groups reported per correlation and hunt.
pub const MAX_HITS: usize = 1_000;

const SPEC_KEY: &str = "\u{0}spec";
const TRUNCATED_KEY: &str = "\u{0}truncated";
const FIELD: char = '\u{1f}';
const RECORD: char = '\u{1e}';
const ITEM: char = '\u{1d}';
const PAIR: char = '\u{1c}';

/// What is counted in a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Events.
    EventCount,
    /// Distinct values of [`Spec::value_field`].
    ValueCount,
    /// Every series occurs, in any order.
    Temporal,
    /// Every series occurs, in [`Spec::series`] order.
    TemporalOrdered,
}

impl Kind {
    /// The Sigma name (`event_count`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::EventCount => "event_count",
            Kind::ValueCount => "value_count",
            Kind::Temporal => "temporal",
            Kind::TemporalOrdered => "temporal_ordered",
        }
    }

    /// The kind of a Sigma name.
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "event_count" => Kind::EventCount,
            "value_count" => Kind::ValueCount,
            "temporal" => Kind::Temporal,
            "temporal_ordered" => Kind::TemporalOrdered,
            _ => return None,
        })
    }
}

/// A comparison of a window's count with a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `eq`
    Eq,
    /// `neq`
    Neq,
}

impl Cmp {
    /// The Sigma name (`gte`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Cmp::Gt => "gt",
            Cmp::Gte => "gte",
            Cmp::Lt => "lt",
            Cmp::Lte => "lte",
            Cmp::Eq => "eq",
            Cmp::Neq => "neq",
        }
    }

    /// The comparison of a Sigma name.
    pub fn parse(name: &str) -> Option<Cmp> {
        Some(match name {
            "gt" => Cmp::Gt,
            "gte" => Cmp::Gte,
            "lt" => Cmp::Lt,
            "lte" => Cmp::Lte,
            "eq" => Cmp::Eq,
            "neq" => Cmp::Neq,
            _ => return None,
        })
    }

    /// Whether `count` compares so with `n`.
    pub fn holds(self, count: u64, n: u64) -> bool {
        match self {
            Cmp::Gt => count > n,
            Cmp::Gte => count >= n,
            Cmp::Lt => count < n,
            Cmp::Lte => count <= n,
            Cmp::Eq => count == n,
            Cmp::Neq => count != n,
        }
    }
}

/// A correlation: its condition and what its findings say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Unique within a hunt: the aggregate is `correlation:<id>`.
    pub id: String,
    /// The findings' rule id (`sigma/<correlation id>`).
    pub rule: String,
    /// The findings' title.
    pub title: String,
    /// What a window counts.
    pub kind: Kind,
    /// The window's length.
    pub timespan_ms: i64,
    /// All must hold for a window's count (event and value counts).
    pub condition: Vec<(Cmp, u64)>,
    /// The correlated series (base rules), in order; named in evidence.
    pub series: Vec<String>,
    /// The fields whose values make a group; named in evidence and entity.
    pub group_by: Vec<String>,
    /// The field whose distinct values [`Kind::ValueCount`] counts.
    pub value_field: Option<String>,
    /// `informational`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// 0..=100.
    pub confidence: u8,
    /// ATT&CK technique ids.
    pub techniques: Vec<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Evidence every finding carries (rule id, author, licence, ...).
    pub evidence: Vec<(String, String)>,
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{0}' | '\u{1c}'..='\u{1f}' => ' ',
            c => c,
        })
        .collect()
}

impl Spec {
    fn encode(&self) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|i| clean(i))
                .collect::<Vec<_>>()
                .join(&ITEM.to_string())
        };
        let condition: Vec<String> = self
            .condition
            .iter()
            .map(|(cmp, n)| format!("{}{PAIR}{n}", cmp.name()))
            .collect();
        let evidence: Vec<String> = self
            .evidence
            .iter()
            .map(|(k, v)| format!("{}{PAIR}{}", clean(k), clean(v)))
            .collect();
        let fields: [(&str, String); 14] = [
            ("id", clean(&self.id)),
            ("rule", clean(&self.rule)),
            ("title", clean(&self.title)),
            ("kind", self.kind.name().to_owned()),
            ("timespan_ms", self.timespan_ms.to_string()),
            ("condition", condition.join(&ITEM.to_string())),
            ("series", list(&self.series)),
            ("group_by", list(&self.group_by)),
            (
                "value_field",
                self.value_field.as_deref().map(clean).unwrap_or_default(),
            ),
            ("severity", clean(&self.severity)),
            ("confidence", self.confidence.to_string()),
            ("techniques", list(&self.techniques)),
            ("tags", list(&self.tags)),
            ("evidence", evidence.join(&ITEM.to_string())),
        ];
        let mut out = String::from(SPEC_KEY);
        for (name, value) in fields {
            out.push(RECORD);
            out.push_str(name);
            out.push(FIELD);
            out.push_str(&value);
        }
        out
    }

    fn decode(key: &str) -> Result<Spec, String> {
        let body = key
            .strip_prefix(SPEC_KEY)
            .ok_or_else(|| "not a correlation spec".to_owned())?;
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for record in body.split(RECORD).filter(|r| !r.is_empty()) {
            let (name, value) = record.split_once(FIELD).unwrap_or((record, ""));
            fields.insert(name, value);
        }
        let get = |name: &str| -> Result<&str, String> {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| format!("correlation spec without `{name}`"))
        };
        let list = |name: &str| -> Result<Vec<String>, String> {
            Ok(get(name)?
                .split(ITEM)
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect())
        };
        let number = |name: &str| -> Result<i64, String> {
            get(name)?
                .parse()
                .map_err(|_| format!("correlation spec `{name}` is not a number"))
        };
        let kind = Kind::parse(get("kind")?)
            .ok_or_else(|| format!("unknown correlation kind `{}`", get("kind").unwrap_or("")))?;
        let mut condition = Vec::new();
        for item in get("condition")?.split(ITEM).filter(|i| !i.is_empty()) {
            let (cmp, n) = item
                .split_once(PAIR)
                .ok_or_else(|| format!("bad correlation condition `{item}`"))?;
            let cmp =
                Cmp::parse(cmp).ok_or_else(|| format!("unknown correlation comparison `{cmp}`"))?;
            let n = n
                .parse()
                .map_err(|_| format!("bad correlation condition `{item}`"))?;
            condition.push((cmp, n));
        }
        let evidence = get("evidence")?
            .split(ITEM)
            .filter(|i| !i.is_empty())
            .map(|item| {
                let (k, v) = item.split_once(PAIR).unwrap_or((item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let value_field = Some(get("value_field")?.to_owned()).filter(|f| !f.is_empty());
        Ok(Spec {
            id: get("id")?.to_owned(),
            rule: get("rule")?.to_owned(),
            title: get("title")?.to_owned(),
            kind,
            timespan_ms: number("timespan_ms")?,
            condition,
            series: list("series")?,
            group_by: list("group_by")?,
            value_field,
            severity: get("severity")?.to_owned(),
            confidence: u8::try_from(number("confidence")?.clamp(0, 100)).unwrap_or(0),
            techniques: list("techniques")?,
            tags: list("tags")?,
            evidence,
        })
    }
}

/// One task's partial state of a correlation: its observations so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correlation {
    spec: Spec,
    keys: BTreeMap<String, u64>,
    bytes: usize,
    truncated: u64,
}

impl Correlation {
    /// No observation yet.
    pub fn new(spec: Spec) -> Correlation {
        Correlation {
            spec,
            keys: BTreeMap::new(),
            bytes: 0,
            truncated: 0,
        }
    }

    /// The correlation's spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The aggregate name: [`NAME_PREFIX`] and the spec's id.
    pub fn name(&self) -> String {
        format!("{NAME_PREFIX}{}", self.spec.id)
    }

    /// One event of series `series` (an index into [`Spec::series`]) in
    /// the group of values `group` (in [`Spec::group_by`] order, `""` for
    /// a missing field), at `timestamp_ms`, with `value` the value field's
    /// value (value counts). Past [`MAX_KEYS_PER_TASK`] distinct
    /// observations or [`MAX_BYTES_PER_TASK`] of them, new ones are only
    /// counted as dropped.
    pub fn observe(
        &mut self,
        group: &[&str],
        series: usize,
        timestamp_ms: i64,
        value: Option<&str>,
    ) {
        let group: Vec<String> = group.iter().map(|g| clean(g)).collect();
        let key = format!(
            "e{FIELD}{}{FIELD}{series}{FIELD}{timestamp_ms}{FIELD}{}",
            group.join(&ITEM.to_string()),
            value.map(clean).unwrap_or_default()
        );
        if let Some(count) = self.keys.get_mut(&key) {
            *count = count.saturating_add(1);
        } else if self.keys.len() < MAX_KEYS_PER_TASK
            && self.bytes + key.len() <= MAX_BYTES_PER_TASK
        {
            self.bytes += key.len();
            self.keys.insert(key, 1);
        } else {
            self.truncated = self.truncated.saturating_add(1);
        }
    }

    /// Observations kept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The partial state as a counts aggregate (name and value), for the
    /// task's output. Returned even when empty, so the coordinator knows
    /// the correlation ran.
    pub fn into_counts(self) -> (String, AggregateValue) {
        let name = self.name();
        let mut keys = self.keys;
        keys.insert(self.spec.encode(), 1);
        if self.truncated > 0 {
            keys.insert(TRUNCATED_KEY.to_owned(), self.truncated);
        }
        (name, AggregateValue::counts_from(keys))
    }
}

/// A group that met a correlation's condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The group's values, in [`Spec::group_by`] order.
    pub group: Vec<String>,
    /// The window: its first and last event's times.
    pub first_ms: i64,
    /// See `first_ms`.
    pub last_ms: i64,
    /// Events in the window.
    pub events: u64,
    /// Distinct values in the window (value counts).
    pub distinct: Option<u64>,
    /// Series seen in the window, by name.
    pub series: Vec<String>,
}

/// What [`evaluate`] found for one correlation aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The correlation.
    pub spec: Spec,
    /// Groups that met it (at most [`MAX_HITS`]).
    pub hits: Vec<Hit>,
    /// Observations tasks dropped: the result may miss groups.
    pub truncated: u64,
    /// Groups beyond [`MAX_HITS`] that met it but are not listed.
    pub more: u64,
}

impl Outcome {
    /// The entity of a hit's finding: `<field>:<value>` for one group-by
    /// field, else `group:<field>=<value>,...`.
    pub fn entity(&self, hit: &Hit) -> String {
        match (&self.spec.group_by[..], &hit.group[..]) {
            ([field], [value]) => format!("{}:{value}", field.to_ascii_lowercase()),
            _ => format!(
                "group:{}",
                self.spec
                    .group_by
                    .iter()
                    .zip(&hit.group)
                    .map(|(f, v)| format!("{f}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// A hit's evidence: the spec's, then the group, window and counts.
    pub fn evidence(&self, hit: &Hit) -> Vec<(String, String)> {
        let mut evidence = self.spec.evidence.clone();
        evidence.push(("correlation.type".into(), self.spec.kind.name().into()));
        for (field, value) in self.spec.group_by.iter().zip(&hit.group) {
            evidence.push((field.clone(), value.clone()));
        }
        evidence.push((
            "correlation.window".into(),
            format!(
                "{} ms to {} ms (timespan {} ms)",
                hit.first_ms, hit.last_ms, self.spec.timespan_ms
            ),
        ));
        evidence.push(("correlation.events".into(), hit.events.to_string()));
        if let Some(distinct) = hit.distinct {
            let field = self.spec.value_field.clone().unwrap_or_default();
            evidence.push((
                format!("correlation.distinct.{field}"),
                distinct.to_string(),
            ));
        }
        if !self.spec.condition.is_empty() {
            let condition: Vec<String> = self
                .spec
                .condition
                .iter()
                .map(|(cmp, n)| format!("{} {n}", cmp.name()))
                .collect();
            evidence.push(("correlation.condition".into(), condition.join(" and ")));
        }
        evidence.push(("correlation.rules".into(), hit.series.join(", ")));
        if self.truncated > 0 {
            evidence.push((
                "correlation.incomplete".into(),
                format!(
                    "{} observations dropped at the per-task limit of {MAX_KEYS_PER_TASK}",
                    self.truncated
                ),
            ));
        }
        evidence
    }
}

/// One observation after the merge.
#[derive(Clone, Debug)]
struct Observation {
    at: i64,
    series: usize,
    value: Option<String>,
    count: u64,
}

/// Evaluates the merged aggregate `name`: `None` when it is not a
/// correlation; an error when its spec is missing or tasks disagree on it.
pub fn evaluate(name: &str, value: &AggregateValue) -> Option<Result<Outcome, String>> {
    name.strip_prefix(NAME_PREFIX)?;
    let AggregateValue::Counts(counts) = value else {
        return Some(Err(format!(
            "correlation aggregate `{name}` is a {} aggregate, not counts",
            value.kind()
        )));
    };
    Some(evaluate_counts(name, counts))
}

fn evaluate_counts(name: &str, counts: &BTreeMap<String, u64>) -> Result<Outcome, String> {
    let specs: Vec<&String> = counts.keys().filter(|k| k.starts_with(SPEC_KEY)).collect();
    let spec = match specs[..] {
        [only] => Spec::decode(only)?,
        [] => return Err(format!("correlation aggregate `{name}` has no spec")),
        _ => {
            return Err(format!(
                "the tasks of correlation `{name}` disagree on its definition (were the rules changed during the hunt?)"
            ));
        }
    };
    let truncated = counts.get(TRUNCATED_KEY).copied().unwrap_or(0);
    let mut groups: BTreeMap<&str, Vec<Observation>> = BTreeMap::new();
    for (key, &count) in counts {
        let Some(rest) = key.strip_prefix('e').and_then(|k| k.strip_prefix(FIELD)) else {
            continue;
        };
        let mut parts = rest.splitn(4, FIELD);
        let (Some(group), Some(series), Some(at), Some(value)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("correlation `{name}`: malformed observation"));
        };
        let series: usize = series
            .parse()
            .map_err(|_| format!("correlation `{name}`: malformed observation"))?;
        let at: i64 = at
            .parse()
            .map_err(|_| format!("correlation `{name}`: malformed observation"))?;
        if series >= spec.series.len().max(1) {
            return Err(format!(
                "correlation `{name}`: observation of series {series}, which it does not have"
            ));
        }
        groups.entry(group).or_default().push(Observation {
            at,
            series,
            value: Some(value.to_owned()).filter(|v| !v.is_empty()),
            count,
        });
    }
    let mut hits = Vec::new();
    let mut more = 0u64;
    for (group, mut observations) in groups {
        observations.sort_by_key(|o| o.at);
        if let Some(mut hit) = first_window(&spec, &observations) {
            if hits.len() >= MAX_HITS {
                more += 1;
                continue;
            }
            hit.group = group.split(ITEM).map(str::to_owned).collect();
            hit.group
                .resize(spec.group_by.len().max(hit.group.len()), String::new());
            hits.push(hit);
        }
    }
    Ok(Outcome {
        spec,
        hits,
        truncated,
        more,
    })
}

/// The first window of a group (observations sorted by time) that meets
/// the spec.
fn first_window(spec: &Spec, observations: &[Observation]) -> Option<Hit> {
    let span = spec.timespan_ms.max(0);
    let series_names = |present: &BTreeSet<usize>| -> Vec<String> {
        present
            .iter()
            .filter_map(|&s| spec.series.get(s).cloned())
            .collect()
    };
    let holds = |n: u64| {
        spec.condition
            .iter()
            .all(|&(cmp, limit)| cmp.holds(n, limit))
    };
    if spec.kind == Kind::TemporalOrdered {
        return ordered_window(spec, observations, span);
    }
    // Sliding windows [start, start + span] over the sorted observations,
    // with running totals of what is in the window.
    let mut end = 0usize;
    let mut events = 0u64;
    let mut values: HashMap<&str, u64> = HashMap::new();
    let mut per_series: HashMap<usize, u64> = HashMap::new();
    for start in 0..observations.len() {
        let from = observations[start].at;
        while end < observations.len() && observations[end].at - from <= span {
            let o = &observations[end];
            events = events.saturating_add(o.count);
            if let Some(v) = &o.value {
                *values.entry(v.as_str()).or_default() += o.count;
            }
            *per_series.entry(o.series).or_default() += o.count;
            end += 1;
        }
        let met = match spec.kind {
            Kind::EventCount => holds(events),
            Kind::ValueCount => holds(values.len() as u64),
            Kind::Temporal => (0..spec.series.len()).all(|s| per_series.contains_key(&s)),
            Kind::TemporalOrdered => false,
        };
        if met {
            let present: BTreeSet<usize> = per_series.keys().copied().collect();
            return Some(Hit {
                group: Vec::new(),
                first_ms: from,
                last_ms: observations[end - 1].at,
                events,
                distinct: (spec.kind == Kind::ValueCount).then_some(values.len() as u64),
                series: series_names(&present),
            });
        }
        // `start` leaves the window.
        let o = &observations[start];
        events = events.saturating_sub(o.count);
        if let Some(v) = &o.value
            && let Some(n) = values.get_mut(v.as_str())
        {
            *n = n.saturating_sub(o.count);
            if *n == 0 {
                values.remove(v.as_str());
            }
        }
        if let Some(n) = per_series.get_mut(&o.series) {
            *n = n.saturating_sub(o.count);
            if *n == 0 {
                per_series.remove(&o.series);
            }
        }
    }
    None
}

/// The first window in which the series occur in order: from each event
/// of the first series, the earliest event of each next series at or
/// after the previous one, all within the timespan.
fn ordered_window(spec: &Spec, observations: &[Observation], span: i64) -> Option<Hit> {
    let times: Vec<Vec<i64>> = (0..spec.series.len())
        .map(|s| {
            observations
                .iter()
                .filter(|o| o.series == s)
                .map(|o| o.at)
                .collect()
        })
        .collect();
    let first = times.first()?;
    for &start in first {
        let mut at = start;
        let mut complete = true;
        for later in &times[1..] {
            let i = later.partition_point(|&t| t < at);
            match later.get(i) {
                Some(&t) if t - start <= span => at = t,
                _ => {
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            let events = observations
                .iter()
                .filter(|o| o.at >= start && o.at <= at)
                .map(|o| o.count)
                .sum();
            return Some(Hit {
                group: Vec::new(),
                first_ms: start,
                last_ms: at,
                events,
                distinct: None,
                series: spec.series.clone(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Aggregate;
    use crate::aggregate::{Merged, merge_into};

    fn spec(kind: Kind, condition: Vec<(Cmp, u64)>, series: &[&str]) -> Spec {
        Spec {
            id: "c1".into(),
            rule: "sigma/c1".into(),
            title: "Many failed logons".into(),
            kind,
            timespan_ms: 60_000,
            condition,
            series: series.iter().map(|s| s.to_string()).collect(),
            group_by: vec!["TargetUserName".into()],
            value_field: (kind == Kind::ValueCount).then(|| "IpAddress".into()),
            severity: "high".into(),
            confidence: 60,
            techniques: vec!["T1110".into()],
            tags: vec!["sigma".into()],
            evidence: vec![("sigma.author".into(), "Someone\u{1f}odd".into())],
        }
    }

    /// Merges tasks' partial states as the coordinator does.
    fn merged(parts: Vec<Correlation>) -> (String, AggregateValue) {
        let mut merged = Merged::new();
        let mut name = String::new();
        for part in parts {
            let (n, value) = part.into_counts();
            name = n.clone();
            merge_into(&mut merged, Aggregate::new(n, value)).expect("merge");
        }
        let value = merged.remove(&name).expect("merged aggregate");
        (name, value)
    }

    fn outcome(parts: Vec<Correlation>) -> Outcome {
        let (name, value) = merged(parts);
        evaluate(&name, &value)
            .expect("a correlation")
            .expect("evaluates")
    }

    #[test]
    fn the_spec_round_trips_through_its_key() {
        let spec = spec(
            Kind::ValueCount,
            vec![(Cmp::Gte, 3), (Cmp::Lt, 10)],
            &["a", "b"],
        );
        let decoded = Spec::decode(&spec.encode()).expect("decodes");
        let mut expected = spec.clone();
        expected.evidence[0].1 = "Someone odd".into();
        assert_eq!(decoded, expected);
        assert!(evaluate("counts", &AggregateValue::counts_from([])).is_none());
    }

    /// Ten failures for one account split over two shards meet `gte 10`
    /// only after the merge; one shard alone does not.
    #[test]
    fn event_counts_meet_the_condition_across_shards() {
        let s = spec(Kind::EventCount, vec![(Cmp::Gte, 10)], &["failed logon"]);
        let mut a = Correlation::new(s.clone());
        let mut b = Correlation::new(s.clone());
        for i in 0..6 {
            a.observe(&["alice"], 0, 1_000 + i * 1_000, None);
        }
        for i in 0..4 {
            b.observe(&["alice"], 0, 7_000 + i * 1_000, None);
        }
        // Bob's ten failures are spread over an hour: never ten in a minute.
        for i in 0..10 {
            b.observe(&["bob"], 0, i * 600_000, None);
        }
        assert!(outcome(vec![a.clone()]).hits.is_empty());
        let result = outcome(vec![a, b]);
        assert_eq!(result.hits.len(), 1, "{result:?}");
        let hit = &result.hits[0];
        assert_eq!(hit.group, ["alice"]);
        assert_eq!((hit.first_ms, hit.last_ms, hit.events), (1_000, 10_000, 10));
        assert_eq!(result.entity(hit), "targetusername:alice");
        let evidence = result.evidence(hit);
        assert!(evidence.contains(&("correlation.events".into(), "10".into())));
        assert!(evidence.contains(&("correlation.condition".into(), "gte 10".into())));
        assert!(evidence.contains(&("TargetUserName".into(), "alice".into())));
    }

    #[test]
    fn value_counts_count_distinct_values_in_the_window() {
        let s = spec(Kind::ValueCount, vec![(Cmp::Gte, 3)], &["logon"]);
        let mut a = Correlation::new(s.clone());
        let mut b = Correlation::new(s);
        a.observe(&["alice"], 0, 0, Some("10.0.0.1"));
        a.observe(&["alice"], 0, 1_000, Some("10.0.0.1"));
        b.observe(&["alice"], 0, 2_000, Some("10.0.0.2"));
        b.observe(&["alice"], 0, 3_000, None);
        assert!(outcome(vec![a.clone(), b.clone()]).hits.is_empty());
        b.observe(&["alice"], 0, 61_000, Some("10.0.0.3"));
        // 0 ms leaves the window at 61 s: 10.0.0.1 (1 s), .2, .3 remain.
        let result = outcome(vec![a, b]);
        assert_eq!(result.hits.len(), 1, "{result:?}");
        assert_eq!(result.hits[0].distinct, Some(3));
        assert_eq!(result.hits[0].first_ms, 1_000);
    }

    #[test]
    fn temporal_needs_every_series_in_one_window_and_ordered_their_order() {
        let names = ["service installed", "log cleared"];
        let unordered = spec(Kind::Temporal, vec![], &names);
        let ordered = spec(Kind::TemporalOrdered, vec![], &names);
        let observe = |s: &Spec, events: &[(usize, i64)]| {
            let mut c = Correlation::new(s.clone());
            for &(series, at) in events {
                c.observe(&["WS01"], series, at, None);
            }
            c
        };
        // Log cleared first, service installed 10 s later.
        let events = [(1, 0), (0, 10_000)];
        assert_eq!(outcome(vec![observe(&unordered, &events)]).hits.len(), 1);
        assert!(outcome(vec![observe(&ordered, &events)]).hits.is_empty());
        // Then cleared again 20 s after the install: in order.
        let events = [(1, 0), (0, 10_000), (1, 30_000)];
        let result = outcome(vec![
            observe(&ordered, &events[..2]),
            observe(&ordered, &events[2..]),
        ]);
        assert_eq!(result.hits.len(), 1);
        assert_eq!(
            (result.hits[0].first_ms, result.hits[0].last_ms),
            (10_000, 30_000)
        );
        // Too far apart.
        let events = [(0, 0), (1, 61_000)];
        assert!(outcome(vec![observe(&ordered, &events)]).hits.is_empty());
        assert!(outcome(vec![observe(&unordered, &events)]).hits.is_empty());
    }

    #[test]
    fn tasks_that_disagree_or_overflow_are_named() {
        let a = Correlation::new(spec(Kind::EventCount, vec![(Cmp::Gte, 2)], &["x"]));
        let mut other = spec(Kind::EventCount, vec![(Cmp::Gte, 3)], &["x"]);
        other.title = "changed".into();
        let b = Correlation::new(other);
        let (name, value) = merged(vec![a, b]);
        let err = evaluate(&name, &value).expect("a correlation").unwrap_err();
        assert!(err.contains("disagree"), "{err}");

        let mut full = Correlation::new(spec(Kind::EventCount, vec![(Cmp::Gte, 2)], &["x"]));
        for i in 0..(MAX_KEYS_PER_TASK as i64 + 5) {
            full.observe(&["g"], 0, i, None);
        }
        assert_eq!(full.len(), MAX_KEYS_PER_TASK);
        let mut wide = Correlation::new(spec(Kind::EventCount, vec![(Cmp::Gte, 2)], &["x"]));
        let long = "v".repeat(64 * 1024);
        for i in 0..200 {
            wide.observe(&[&long], 0, i, None);
        }
        assert!(wide.len() < 200 && wide.len() >= 120, "{}", wide.len());
        let result = outcome(vec![full]);
        assert_eq!(result.truncated, 5);
        assert!(
            result
                .evidence(&result.hits[0])
                .iter()
                .any(|(k, _)| k == "correlation.incomplete")
        );
    }
}
