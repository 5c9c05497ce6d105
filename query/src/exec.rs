//! Running a plan: per shard over events into a partial, merging partials,
//! and finishing the merged partial into a table on the coordinator.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use quarry_contract::AggregateValue;
use quarry_contract::aggregate::{DistinctValues, RangeStats};
use serde::{Deserialize, Serialize};

use crate::ast::{Agg, AggFunc, Stage, TIME_FIELD};
use crate::error::Error;
use crate::eval::{Scope, eval};
use crate::plan::Plan;
use crate::value::{Value, compare, f64_to_ordered, ordered_to_f64};

/// Most rows a partial or a result holds; beyond, it is cut and marked
/// truncated. Bounds a worker's and the coordinator's memory.
pub const MAX_ROWS: usize = 100_000;
/// Most values `values(f)` keeps per group (the first in order).
pub const MAX_VALUES: usize = 100;
/// Most time buckets `timechart` fills between its first and last.
pub const MAX_BUCKETS: usize = 10_000;

/// An event as the query reads it.
///
/// `slot` is the field's position in [`Plan::fields_read`] and `name` its
/// name: a projected event (the module's view) answers by position, a JSON
/// event by name.
pub trait Event {
    /// Event time, milliseconds since the Unix epoch, if known.
    fn time_ms(&self) -> Option<i64>;
    /// The field at `slot` of the plan's fields (named `name`); null when
    /// the event does not have it.
    fn field(&self, slot: usize, name: &str) -> Value;
}

/// An event as a JSON object. Fields are found by exact name, then as a
/// dotted path into nested objects (`id.orig_h`), then without an EVTX
/// prefix (`Event.EventData.Image` is `Image`), as the worker finds them.
#[derive(Clone, Copy, Debug)]
pub struct JsonEvent<'a> {
    /// The event.
    pub map: &'a serde_json::Map<String, serde_json::Value>,
    /// Its time.
    pub time_ms: Option<i64>,
}

impl Event for JsonEvent<'_> {
    fn time_ms(&self) -> Option<i64> {
        self.time_ms
    }

    fn field(&self, _slot: usize, name: &str) -> Value {
        lookup(self.map, name)
            .or_else(|| {
                const EVTX: [&str; 5] = [
                    "Event.EventData.",
                    "Event.System.",
                    "Event.UserData.",
                    "EventData.",
                    "System.",
                ];
                EVTX.iter()
                    .find_map(|p| name.strip_prefix(p))
                    .filter(|r| !r.is_empty())
                    .and_then(|r| lookup(self.map, r))
            })
            .map_or(Value::Null, Value::from_json)
    }
}

fn lookup<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = map.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    // A name with dots may be a key itself (`a.b` in `{"a.b": 1}`) at any level.
    match map.get(head) {
        Some(serde_json::Value::Object(inner)) => lookup(inner, rest),
        _ => {
            let mut split = path.match_indices('.').skip(1);
            split.find_map(|(i, _)| match map.get(&path[..i]) {
                Some(serde_json::Value::Object(inner)) => lookup(inner, &path[i + 1..]),
                _ => None,
            })
        }
    }
}

/// An event projected onto the plan's fields, as the host hands it to a
/// module: one text per field of [`Plan::fields_read`], in order.
#[derive(Clone, Copy, Debug)]
pub struct TextEvent<'a> {
    /// Event time.
    pub time_ms: Option<i64>,
    /// One value per field read.
    pub values: &'a [Option<String>],
}

impl Event for TextEvent<'_> {
    fn time_ms(&self) -> Option<i64> {
        self.time_ms
    }

    fn field(&self, slot: usize, _name: &str) -> Value {
        match self.values.get(slot) {
            Some(Some(text)) => Value::from_text(text),
            _ => Value::Null,
        }
    }
}

/// One result row: its columns in order, and the time of the event it
/// came from (for the default order of rows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Event time, when the row is an event.
    pub time: Option<i64>,
    /// `(column, value)` in column order.
    pub cols: Vec<(String, Value)>,
}

impl Row {
    fn set(&mut self, name: &str, value: Value) {
        match self.cols.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.cols.push((name.to_owned(), value)),
        }
    }

    fn project(&mut self, names: &[String]) {
        let mut cols = Vec::with_capacity(names.len());
        for name in names {
            if cols.iter().any(|(n, _): &(String, Value)| n == name) {
                continue;
            }
            cols.push((name.clone(), self.get(name)));
        }
        self.cols = cols;
    }
}

impl Scope for Row {
    fn get(&self, name: &str) -> Value {
        match self.cols.iter().find(|(n, _)| n == name) {
            Some((_, v)) => v.clone(),
            None if name == TIME_FIELD => self.time.map_or(Value::Null, |t| Value::Num(t as f64)),
            None => Value::Null,
        }
    }
}

struct EventScope<'a> {
    event: &'a dyn Event,
    slots: &'a HashMap<String, usize>,
}

impl Scope for EventScope<'_> {
    fn get(&self, name: &str) -> Value {
        if name == TIME_FIELD {
            return self
                .event
                .time_ms()
                .map_or(Value::Null, |t| Value::Num(t as f64));
        }
        match self.slots.get(name) {
            Some(&slot) => self.event.field(slot, name),
            None => Value::Null,
        }
    }
}

/// The result of a query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<Value>>,
    /// Some shard or the merge cut rows at [`MAX_ROWS`].
    pub truncated: bool,
}

// ---- partials ----

/// What one shard (or a merge of shards) computed: rows, or the first
/// aggregation's mergeable state. Tagged with the plan's fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// [`Plan::fingerprint`] of the plan that built it.
    pub plan: String,
    /// The state.
    pub data: PartialData,
}

/// The state of a [`Partial`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialData {
    /// A query without aggregation: the shard's rows, bounded by the plan's
    /// `shard_bound`.
    Rows {
        /// The rows.
        rows: Vec<Row>,
        /// Cut at [`MAX_ROWS`].
        truncated: bool,
    },
    /// The first aggregation's state.
    Groups(GroupsPartial),
}

/// Per-group state of a `stats`, `top`/`rare` or `timechart`. Groups are
/// keyed by the JSON array of their key values' texts (`["WS01","alice"]`;
/// for `timechart` the bucket start in ms comes first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupsPartial {
    /// Events per group: the contract's `counts`.
    pub events: AggregateValue,
    /// One state per aggregate, in the stage's order.
    pub aggs: Vec<AggPartial>,
}

/// The mergeable state of one aggregate over all groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggPartial {
    /// `count()`, `count(f)`: the contract's `counts`.
    Count(AggregateValue),
    /// `dc(f)`: the contract's `distinct` (exact to 1,000 values, then a
    /// HyperLogLog sketch).
    Dc(AggregateValue),
    /// `min(f)`, `max(f)`: the contract's `range`, each double mapped to an
    /// `i64` in order ([`f64_to_ordered`]).
    Range(AggregateValue),
    /// `sum(f)`, `avg(f)`: exact fixed-point sums (not in the contract).
    Sum(BTreeMap<String, SumState>),
    /// `values(f)` (not in the contract).
    Values(BTreeMap<String, ValuesState>),
    /// `earliest(f)` (not in the contract).
    Earliest(BTreeMap<String, TimedValue>),
    /// `latest(f)` (not in the contract).
    Latest(BTreeMap<String, TimedValue>),
}

/// A sum in fixed point (2^-32 units) so that adding is exact and the
/// result the same in any merge order; values of magnitude 2^63 or more
/// make it `overflow` (the result is then null).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SumState {
    /// The sum, in units of 2^-32 (as a decimal string: JSON numbers lose
    /// digits beyond 2^53).
    #[serde(with = "i128_text")]
    pub fixed: i128,
    /// Numeric values added.
    pub count: u64,
    /// A value or the sum left the representable range.
    pub overflow: bool,
}

mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

const FIXED_ONE: f64 = 4_294_967_296.0;

impl SumState {
    fn add(&mut self, x: f64) {
        self.count += 1;
        if !x.is_finite() || x.abs() >= 9.223_372_036_854_776e18 {
            self.overflow = true;
            return;
        }
        // Exact scaling by a power of two; truncation is per value, so the
        // total does not depend on the order of additions.
        let units = (x * FIXED_ONE) as i128;
        self.merge(SumState {
            fixed: units,
            count: 0,
            overflow: false,
        });
    }

    fn merge(&mut self, other: SumState) {
        self.count = self.count.saturating_add(other.count);
        match self.fixed.checked_add(other.fixed) {
            Some(sum) => self.fixed = sum,
            None => self.overflow = true,
        }
        self.overflow |= other.overflow;
    }

    fn value(&self) -> Option<f64> {
        (!self.overflow && self.count > 0).then(|| self.fixed as f64 / FIXED_ONE)
    }
}

/// The first [`MAX_VALUES`] distinct values in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValuesState {
    /// The values.
    pub values: BTreeSet<String>,
    /// More values were seen than kept.
    pub truncated: bool,
}

impl ValuesState {
    pub(crate) fn bound(&mut self) {
        while self.values.len() > MAX_VALUES {
            self.values.pop_last();
            self.truncated = true;
        }
    }
}

/// A value and the time it was seen; ties in time go to the smaller text
/// (earliest) or the larger (latest), so merges agree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimedValue {
    /// Event time in ms.
    pub time: i64,
    /// The value's text.
    pub value: String,
}

/// How a stage groups and what it computes, normalised from `stats`,
/// `top`/`rare` and `timechart`.
struct GroupSpec<'p> {
    keys: Vec<KeyPart<'p>>,
    aggs: &'p [Agg],
}

enum KeyPart<'p> {
    Field(&'p str),
    Bucket(i64),
}

impl<'p> GroupSpec<'p> {
    fn of(stage: &'p Stage) -> Option<GroupSpec<'p>> {
        match stage {
            Stage::Stats { aggs, by } => Some(GroupSpec {
                keys: by.iter().map(|f| KeyPart::Field(f)).collect(),
                aggs,
            }),
            Stage::Top { field, by, .. } => {
                let mut keys: Vec<KeyPart<'p>> = by.iter().map(|f| KeyPart::Field(f)).collect();
                keys.push(KeyPart::Field(field));
                Some(GroupSpec { keys, aggs: &[] })
            }
            Stage::Timechart { span_ms, aggs, by } => {
                let mut keys = vec![KeyPart::Bucket(*span_ms)];
                keys.extend(by.iter().map(|f| KeyPart::Field(f)));
                Some(GroupSpec { keys, aggs })
            }
            _ => None,
        }
    }

    fn empty(&self) -> GroupsPartial {
        let aggs = self
            .aggs
            .iter()
            .map(|agg| match agg.func {
                AggFunc::Count => AggPartial::Count(AggregateValue::Counts(BTreeMap::new())),
                AggFunc::Dc => AggPartial::Dc(AggregateValue::Distinct(BTreeMap::new())),
                AggFunc::Min | AggFunc::Max => {
                    AggPartial::Range(AggregateValue::Range(BTreeMap::new()))
                }
                AggFunc::Sum | AggFunc::Avg => AggPartial::Sum(BTreeMap::new()),
                AggFunc::Values => AggPartial::Values(BTreeMap::new()),
                AggFunc::Earliest => AggPartial::Earliest(BTreeMap::new()),
                AggFunc::Latest => AggPartial::Latest(BTreeMap::new()),
            })
            .collect();
        GroupsPartial {
            events: AggregateValue::Counts(BTreeMap::new()),
            aggs,
        }
    }

    /// Adds one event or row to `state`.
    fn observe(&self, state: &mut GroupsPartial, scope: &dyn Scope, time: Option<i64>) {
        let mut parts = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            match key {
                KeyPart::Field(f) => match scope.get(f).text() {
                    Some(text) => parts.push(text),
                    // Like SPL: an event without a `by` field is in no group.
                    None => return,
                },
                KeyPart::Bucket(span) => match time {
                    Some(t) => parts.push((t.div_euclid(*span) * span).to_string()),
                    None => return,
                },
            }
        }
        let key = group_key(&parts);
        if let AggregateValue::Counts(events) = &mut state.events {
            let n = events.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
        }
        for (agg, partial) in self.aggs.iter().zip(&mut state.aggs) {
            let value = agg.field.as_deref().map(|f| scope.get(f));
            observe_agg(agg.func, partial, &key, value, time);
        }
    }
}

fn group_key(parts: &[String]) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

fn parse_key(key: &str) -> Vec<String> {
    serde_json::from_str(key).unwrap_or_default()
}

fn observe_agg(
    func: AggFunc,
    partial: &mut AggPartial,
    key: &str,
    value: Option<Value>,
    time: Option<i64>,
) {
    let present = value.as_ref().is_none_or(|v| !v.is_null());
    match partial {
        AggPartial::Count(AggregateValue::Counts(counts)) if present => {
            let n = counts.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
        }
        AggPartial::Dc(AggregateValue::Distinct(keys)) => {
            if let Some(text) = value.and_then(|v| v.text()) {
                keys.entry(key.to_owned()).or_default().insert(&text);
            }
        }
        AggPartial::Range(AggregateValue::Range(ranges)) => {
            if let Some(n) = value.and_then(|v| v.as_number()) {
                let ordered = f64_to_ordered(n);
                ranges
                    .entry(key.to_owned())
                    .and_modify(|r| r.observe(ordered))
                    .or_insert(RangeStats::of(ordered));
            }
        }
        AggPartial::Sum(sums) => {
            if let Some(n) = value.and_then(|v| v.as_number()) {
                sums.entry(key.to_owned()).or_default().add(n);
            }
        }
        AggPartial::Values(values) => {
            if let Some(text) = value.and_then(|v| v.text()) {
                let state = values.entry(key.to_owned()).or_default();
                state.values.insert(text);
                state.bound();
            }
        }
        AggPartial::Earliest(firsts) | AggPartial::Latest(firsts) => {
            let (Some(time), Some(text)) = (time, value.and_then(|v| v.text())) else {
                return;
            };
            let seen = TimedValue { time, value: text };
            let earliest = func == AggFunc::Earliest;
            match firsts.get_mut(key) {
                Some(kept) if (earliest && seen < *kept) || (!earliest && seen > *kept) => {
                    *kept = seen
                }
                Some(_) => {}
                None => {
                    firsts.insert(key.to_owned(), seen);
                }
            }
        }
        // `count(f)` of an absent value; other pairs `GroupSpec::empty` never builds.
        _ => {}
    }
}

impl GroupsPartial {
    fn merge(&mut self, other: GroupsPartial) -> Result<(), Error> {
        let kind = |e: quarry_contract::aggregate::KindMismatch| Error::Merge(e.to_string());
        self.events.merge(other.events).map_err(kind)?;
        if self.aggs.len() != other.aggs.len() {
            return Err(Error::Merge(
                "partials with different aggregates".to_owned(),
            ));
        }
        for (mine, theirs) in self.aggs.iter_mut().zip(other.aggs) {
            match (mine, theirs) {
                (AggPartial::Count(a), AggPartial::Count(b))
                | (AggPartial::Dc(a), AggPartial::Dc(b))
                | (AggPartial::Range(a), AggPartial::Range(b)) => a.merge(b).map_err(kind)?,
                (AggPartial::Sum(a), AggPartial::Sum(b)) => {
                    for (k, s) in b {
                        a.entry(k).or_default().merge(s);
                    }
                }
                (AggPartial::Values(a), AggPartial::Values(b)) => {
                    for (k, v) in b {
                        let kept = a.entry(k).or_default();
                        kept.values.extend(v.values);
                        kept.truncated |= v.truncated;
                        kept.bound();
                    }
                }
                (AggPartial::Earliest(a), AggPartial::Earliest(b)) => {
                    for (k, v) in b {
                        a.entry(k)
                            .and_modify(|kept| *kept = (*kept).clone().min(v.clone()))
                            .or_insert(v);
                    }
                }
                (AggPartial::Latest(a), AggPartial::Latest(b)) => {
                    for (k, v) in b {
                        a.entry(k)
                            .and_modify(|kept| *kept = (*kept).clone().max(v.clone()))
                            .or_insert(v);
                    }
                }
                _ => {
                    return Err(Error::Merge(
                        "partials with different aggregates".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The value of aggregate `i` for group `key`.
    fn result(&self, i: usize, func: AggFunc, key: &str) -> Value {
        let Some(partial) = self.aggs.get(i) else {
            return Value::Null;
        };
        match partial {
            AggPartial::Count(AggregateValue::Counts(c)) => {
                Value::Num(c.get(key).copied().unwrap_or(0) as f64)
            }
            AggPartial::Dc(AggregateValue::Distinct(d)) => {
                Value::Num(d.get(key).map_or(0, DistinctValues::count) as f64)
            }
            AggPartial::Range(AggregateValue::Range(r)) => r.get(key).map_or(Value::Null, |r| {
                Value::Num(ordered_to_f64(if func == AggFunc::Min {
                    r.min
                } else {
                    r.max
                }))
            }),
            AggPartial::Sum(s) => match (s.get(key).and_then(SumState::value), s.get(key)) {
                (Some(sum), Some(state)) if func == AggFunc::Avg => {
                    Value::Num(sum / state.count as f64)
                }
                (Some(sum), _) => Value::Num(sum),
                _ => Value::Null,
            },
            AggPartial::Values(v) => v.get(key).map_or(Value::Null, |s| {
                Value::List(s.values.iter().cloned().map(Value::Str).collect())
            }),
            AggPartial::Earliest(f) | AggPartial::Latest(f) => f
                .get(key)
                .map_or(Value::Null, |t| Value::Str(t.value.clone())),
            _ => Value::Null,
        }
    }

    /// Groups seen.
    pub fn group_count(&self) -> usize {
        match &self.events {
            AggregateValue::Counts(c) => c.len(),
            _ => 0,
        }
    }

    fn event_counts(&self) -> BTreeMap<String, u64> {
        match &self.events {
            AggregateValue::Counts(c) => c.clone(),
            _ => BTreeMap::new(),
        }
    }
}

// ---- running ----

/// Runs a plan's per-shard part over one shard's events.
pub struct Runner<'p> {
    plan: &'p Plan,
    slots: HashMap<String, usize>,
    spec: Option<GroupSpec<'p>>,
    state: PartialData,
    compact_at: usize,
}

impl<'p> Runner<'p> {
    /// A runner for `plan`, with nothing observed.
    pub fn new(plan: &'p Plan) -> Runner<'p> {
        let slots = plan
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        let spec = plan.aggregation.as_ref().and_then(GroupSpec::of);
        let state = match &spec {
            Some(spec) => PartialData::Groups(spec.empty()),
            None => PartialData::Rows {
                rows: Vec::new(),
                truncated: false,
            },
        };
        let head = plan.shard_bound.iter().find_map(|s| match s {
            Stage::Head(n) => Some(*n),
            _ => None,
        });
        let compact_at = head.map_or(MAX_ROWS, |n| n.saturating_mul(2).clamp(1024, MAX_ROWS));
        Runner {
            plan,
            slots,
            spec,
            state,
            compact_at,
        }
    }

    /// Runs the per-event stages on `event` and adds what survives.
    pub fn observe(&mut self, event: &dyn Event) {
        let scope = EventScope {
            event,
            slots: &self.slots,
        };
        let mut row: Option<Row> = None;
        for stage in &self.plan.per_event {
            match stage {
                Stage::Where(expr) => {
                    let keep = match &row {
                        None => eval(expr, &scope).truthy(),
                        Some(row) => eval(expr, row).truthy(),
                    };
                    if !keep {
                        return;
                    }
                }
                Stage::Eval(assignments) => {
                    let row = row.get_or_insert_with(|| self.materialize(event));
                    for (name, expr) in assignments {
                        let value = eval(expr, row);
                        row.set(name, value);
                    }
                }
                Stage::Fields(names) => row
                    .get_or_insert_with(|| self.materialize(event))
                    .project(names),
                _ => {}
            }
        }
        let row = match (&self.state, row) {
            (PartialData::Rows { .. }, None) => Some(self.materialize(event)),
            (_, row) => row,
        };
        match (&mut self.state, &self.spec) {
            (PartialData::Groups(state), Some(spec)) => match &row {
                Some(row) => spec.observe(state, row, event.time_ms()),
                None => spec.observe(state, &scope, event.time_ms()),
            },
            (PartialData::Rows { rows, .. }, _) => {
                rows.extend(row);
                if rows.len() >= self.compact_at {
                    self.compact();
                }
            }
            _ => {}
        }
    }

    /// The row of an event: `_time`, then every field read.
    fn materialize(&self, event: &dyn Event) -> Row {
        let time = event.time_ms();
        let mut cols = Vec::with_capacity(self.plan.fields.len() + 1);
        cols.push((
            TIME_FIELD.to_owned(),
            time.map_or(Value::Null, |t| Value::Num(t as f64)),
        ));
        for (slot, name) in self.plan.fields.iter().enumerate() {
            cols.push((name.clone(), event.field(slot, name)));
        }
        Row { time, cols }
    }

    fn compact(&mut self) {
        if let PartialData::Rows { rows, truncated } = &mut self.state {
            bound_rows(self.plan, rows, truncated);
            // Compact again only once as many rows again have arrived, so
            // a shard with more rows than the cap costs O(n log n), not a
            // sort per event.
            self.compact_at = self.compact_at.max(rows.len().saturating_mul(2));
        }
    }

    /// The shard's partial.
    pub fn finish(mut self) -> Partial {
        self.compact();
        Partial {
            plan: self.plan.fingerprint(),
            data: self.state,
        }
    }
}

/// Applies the plan's shard bound to rows in the default order, then the
/// row cap.
fn bound_rows(plan: &Plan, rows: &mut Vec<Row>, truncated: &mut bool) {
    default_order(rows);
    let taken = std::mem::take(rows);
    *rows = run_stages(&plan.shard_bound, taken);
    if rows.len() > MAX_ROWS {
        rows.truncate(MAX_ROWS);
        *truncated = true;
    }
}

/// The order of rows before any `sort`: by event time (rows without one
/// last), then by content, so that it does not depend on how the events
/// were split into shards.
fn default_order(rows: &mut [Row]) {
    rows.sort_by_cached_key(|row| {
        let text = serde_json::to_string(&row.cols).unwrap_or_default();
        (row.time.is_none(), row.time.unwrap_or(0), text)
    });
}

impl Plan {
    /// Runs the per-shard part over `events` into a partial.
    pub fn run_shard<'e, E: Event + 'e>(&self, events: impl IntoIterator<Item = &'e E>) -> Partial {
        let mut runner = Runner::new(self);
        for event in events {
            runner.observe(event);
        }
        runner.finish()
    }

    /// Merges the partial `other` into `into`; refuses partials of
    /// another plan.
    pub fn merge(&self, into: &mut Partial, other: Partial) -> Result<(), Error> {
        let fingerprint = self.fingerprint();
        if into.plan != fingerprint || other.plan != fingerprint {
            return Err(Error::Merge(format!(
                "a partial of plan {} cannot merge into plan {fingerprint}",
                if into.plan != fingerprint {
                    &into.plan
                } else {
                    &other.plan
                }
            )));
        }
        match (&mut into.data, other.data) {
            (
                PartialData::Rows { rows, truncated },
                PartialData::Rows {
                    rows: more,
                    truncated: cut,
                },
            ) => {
                rows.extend(more);
                *truncated |= cut;
                bound_rows(self, rows, truncated);
                Ok(())
            }
            (PartialData::Groups(a), PartialData::Groups(b)) => a.merge(b),
            _ => Err(Error::Merge(
                "row and aggregate partials do not mix".to_owned(),
            )),
        }
    }

    /// Bounds rows merged from many shards as [`Plan::merge`] does.
    pub(crate) fn bound_merged_rows(&self, rows: &mut Vec<Row>, truncated: &mut bool) {
        bound_rows(self, rows, truncated);
    }

    /// An empty partial of this plan (the merge of no shards).
    pub fn empty_partial(&self) -> Partial {
        Runner::new(self).finish()
    }

    /// Finishes the merged partial into the result table: the aggregation's
    /// rows (or the merged rows), then the coordinator's stages.
    pub fn finish(&self, partial: Partial) -> Result<Table, Error> {
        if partial.plan != self.fingerprint() {
            return Err(Error::Merge("the partial is of another plan".to_owned()));
        }
        let (rows, truncated) = match partial.data {
            PartialData::Rows {
                mut rows,
                truncated,
            } => {
                default_order(&mut rows);
                (rows, truncated)
            }
            PartialData::Groups(groups) => {
                let stage = self.aggregation.as_ref().ok_or_else(|| {
                    Error::Merge("an aggregate partial for a plan without aggregation".to_owned())
                })?;
                (group_rows(stage, &groups), false)
            }
        };
        let mut rows = run_stages(&self.after, rows);
        let truncated = truncated || rows.len() > MAX_ROWS;
        rows.truncate(MAX_ROWS);
        Ok(to_table(rows, truncated))
    }

    /// Runs the whole query over `events` as one shard.
    pub fn run<'e, E: Event + 'e>(
        &self,
        events: impl IntoIterator<Item = &'e E>,
    ) -> Result<Table, Error> {
        self.finish(self.run_shard(events))
    }
}

fn to_table(rows: Vec<Row>, truncated: bool) -> Table {
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (name, _) in &row.cols {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    let rows = rows
        .iter()
        .map(|row| columns.iter().map(|c| row.get(c)).collect())
        .collect();
    Table {
        columns,
        rows,
        truncated,
    }
}

/// The rows of a finished aggregation.
fn group_rows(stage: &Stage, groups: &GroupsPartial) -> Vec<Row> {
    let mut events = groups.event_counts();
    match stage {
        Stage::Stats { aggs, by } => {
            // Like SPL, `stats count()` over nothing is one row of zero.
            if by.is_empty() && events.is_empty() {
                events.insert(group_key(&[]), 0);
            }
            stats_rows(aggs, by, groups, &events)
        }
        Stage::Top { n, field, by, rare } => top_rows(*n, field, by, *rare, &events),
        Stage::Timechart { span_ms, aggs, by } => {
            timechart_rows(*span_ms, aggs, by.as_deref(), groups, &events)
        }
        _ => Vec::new(),
    }
}

fn stats_rows(
    aggs: &[Agg],
    by: &[String],
    groups: &GroupsPartial,
    events: &BTreeMap<String, u64>,
) -> Vec<Row> {
    events
        .keys()
        .map(|key| {
            let parts = parse_key(key);
            let mut cols: Vec<(String, Value)> = by
                .iter()
                .cloned()
                .zip(parts.into_iter().map(Value::Str))
                .collect();
            for (i, agg) in aggs.iter().enumerate() {
                let value = groups.result(i, agg.func, key);
                set_col(&mut cols, &agg.name, value);
            }
            Row { time: None, cols }
        })
        .collect()
}

fn top_rows(
    n: usize,
    field: &str,
    by: &[String],
    rare: bool,
    events: &BTreeMap<String, u64>,
) -> Vec<Row> {
    let mut per_group: BTreeMap<Vec<String>, Vec<(String, u64)>> = BTreeMap::new();
    for (key, count) in events {
        let mut parts = parse_key(key);
        let Some(value) = parts.pop() else { continue };
        per_group.entry(parts).or_default().push((value, *count));
    }
    let mut rows = Vec::new();
    for (group, mut values) in per_group {
        let total: u64 = values.iter().map(|(_, c)| c).sum();
        values.sort_by(|a, b| {
            if rare { a.1.cmp(&b.1) } else { b.1.cmp(&a.1) }.then_with(|| a.0.cmp(&b.0))
        });
        for (value, count) in values.into_iter().take(n) {
            let mut cols: Vec<(String, Value)> = by
                .iter()
                .cloned()
                .zip(group.iter().cloned().map(Value::Str))
                .collect();
            set_col(&mut cols, field, Value::Str(value));
            set_col(&mut cols, "count", Value::Num(count as f64));
            let percent = (count as f64 * 100.0 / total as f64 * 100.0).round() / 100.0;
            set_col(&mut cols, "percent", Value::Num(percent));
            rows.push(Row { time: None, cols });
        }
    }
    rows
}

fn set_col(cols: &mut Vec<(String, Value)>, name: &str, value: Value) {
    match cols.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value,
        None => cols.push((name.to_owned(), value)),
    }
}

fn timechart_rows(
    span: i64,
    aggs: &[Agg],
    by: Option<&str>,
    groups: &GroupsPartial,
    events: &BTreeMap<String, u64>,
) -> Vec<Row> {
    // bucket -> series -> group key
    let mut buckets: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    for key in events.keys() {
        let parts = parse_key(key);
        let Some(bucket) = parts.first().and_then(|b| b.parse::<i64>().ok()) else {
            continue;
        };
        let name = parts.get(1).cloned().unwrap_or_default();
        series.insert(name.clone());
        buckets.entry(bucket).or_default().insert(name, key.clone());
    }
    let (Some(&first), Some(&last)) = (buckets.keys().next(), buckets.keys().next_back()) else {
        return Vec::new();
    };
    // Empty buckets between the first and the last are shown (as zero
    // counts), unless there would be too many.
    let filled = (last - first) / span < MAX_BUCKETS as i64;
    let times: Vec<i64> = if filled {
        (0..=(last - first) / span)
            .map(|i| first + i * span)
            .collect()
    } else {
        buckets.keys().copied().collect()
    };
    let column = |agg: &Agg, series_name: &str| match by {
        None => agg.name.clone(),
        Some(_) if aggs.len() == 1 => series_name.to_owned(),
        Some(_) => format!("{}: {series_name}", agg.name),
    };
    let empty = BTreeMap::new();
    times
        .into_iter()
        .map(|t| {
            let mut cols = vec![(TIME_FIELD.to_owned(), Value::Num(t as f64))];
            let in_bucket = buckets.get(&t).unwrap_or(&empty);
            for name in &series {
                for (i, agg) in aggs.iter().enumerate() {
                    let value = match in_bucket.get(name) {
                        Some(key) => groups.result(i, agg.func, key),
                        None if matches!(agg.func, AggFunc::Count | AggFunc::Dc) => Value::Num(0.0),
                        None => Value::Null,
                    };
                    set_col(&mut cols, &column(agg, name), value);
                }
            }
            Row {
                time: Some(t),
                cols,
            }
        })
        .collect()
}

/// Runs stages over rows (the coordinator's part, and a shard's bound).
fn run_stages(stages: &[Stage], mut rows: Vec<Row>) -> Vec<Row> {
    for stage in stages {
        rows = match stage {
            Stage::Where(expr) => rows
                .into_iter()
                .filter(|row| eval(expr, row).truthy())
                .collect(),
            Stage::Eval(assignments) => {
                for row in &mut rows {
                    for (name, expr) in assignments {
                        let value = eval(expr, row);
                        row.set(name, value);
                    }
                }
                rows
            }
            Stage::Fields(names) => {
                rows.iter_mut().for_each(|row| row.project(names));
                rows
            }
            Stage::Sort(keys) => {
                // Stable: ties keep the previous order.
                rows.sort_by(|a, b| {
                    keys.iter()
                        .map(|key| {
                            let (x, y) = (a.get(&key.field), b.get(&key.field));
                            match (x.is_null(), y.is_null()) {
                                // Nulls last, either direction.
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ if key.desc => compare(&y, &x),
                                _ => compare(&x, &y),
                            }
                        })
                        .find(|o| o.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                rows
            }
            Stage::Head(n) => {
                rows.truncate(*n);
                rows
            }
            Stage::Dedup(names) => {
                let mut seen = BTreeSet::new();
                rows.into_iter()
                    .filter(|row| {
                        let parts: Option<Vec<String>> =
                            names.iter().map(|n| row.get(n).text()).collect();
                        // As SPL: rows without a dedup field are dropped.
                        parts.is_some_and(|p| seen.insert(group_key(&p)))
                    })
                    .collect()
            }
            aggregation => match GroupSpec::of(aggregation) {
                Some(spec) => {
                    let mut state = spec.empty();
                    for row in &rows {
                        let time = row
                            .time
                            .or_else(|| row.get(TIME_FIELD).as_number().map(|t| t as i64));
                        spec.observe(&mut state, row, time);
                    }
                    group_rows(aggregation, &state)
                }
                None => rows,
            },
        };
    }
    rows
}
