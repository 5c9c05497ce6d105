//! Running a plan: per shard over events into a partial, merging partials,
//! and finishing the merged partial into a table on the coordinator.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use quarry_contract::AggregateValue;
use quarry_contract::aggregate::{DistinctValues, RangeStats};
use serde::{Deserialize, Serialize};

use crate::ast::{Agg, AggFunc, Stage, TIME_FIELD};
use crate::error::Error;
use crate::eval::{Scope, eval};
use crate::plan::Plan;
use crate::value::{Value, compare, f64_to_ordered, format_number, ordered_to_f64, parse_number};

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

    /// The field's text, as `field(slot, name).text()`. Groupings read key
    /// and aggregated fields through it: an event that holds the text can
    /// lend it rather than build a [`Value`] to copy it from.
    fn field_text(&self, slot: usize, name: &str) -> Option<Cow<'_, str>> {
        self.field(slot, name).text().map(Cow::Owned)
    }

    /// The field as a number, as `field(slot, name).as_number()` (for
    /// `sum`, `avg`, `min`, `max`); an event may parse its text in place.
    fn field_number(&self, slot: usize, name: &str) -> Option<f64> {
        self.field(slot, name).as_number()
    }
}

/// Prefixes under which EVTX exports nest a field: `EventData.Image` is
/// found as `Image` in a flat event, as the worker finds it.
pub(crate) const EVTX_PREFIXES: [&str; 5] = [
    "Event.EventData.",
    "Event.System.",
    "Event.UserData.",
    "EventData.",
    "System.",
];

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
        self.find(name).map_or(Value::Null, Value::from_json)
    }

    fn field_text(&self, _slot: usize, name: &str) -> Option<Cow<'_, str>> {
        match self.find(name)? {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
            other => Value::from_json(other).text().map(Cow::Owned),
        }
    }

    fn field_number(&self, _slot: usize, name: &str) -> Option<f64> {
        match self.find(name)? {
            serde_json::Value::String(s) => parse_number(s),
            other => Value::from_json(other).as_number(),
        }
    }
}

impl<'a> JsonEvent<'a> {
    fn find(&self, name: &str) -> Option<&'a serde_json::Value> {
        lookup(self.map, name).or_else(|| {
            EVTX_PREFIXES
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .filter(|r| !r.is_empty())
                .and_then(|r| lookup(self.map, r))
        })
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
    // Inlined into the runner a module monomorphises: called per event.
    #[inline]
    fn time_ms(&self) -> Option<i64> {
        self.time_ms
    }

    fn field(&self, slot: usize, _name: &str) -> Value {
        match self.values.get(slot) {
            Some(Some(text)) => Value::from_text(text),
            _ => Value::Null,
        }
    }

    #[inline]
    fn field_text(&self, slot: usize, _name: &str) -> Option<Cow<'_, str>> {
        match self.values.get(slot) {
            // Only text starting with `[` can read as a list (whose text is
            // its compact JSON); any other reads as itself.
            Some(Some(text)) if text.starts_with('[') => {
                Value::from_text(text).text().map(Cow::Owned)
            }
            Some(Some(text)) => Some(Cow::Borrowed(text)),
            _ => None,
        }
    }

    #[inline]
    fn field_number(&self, slot: usize, _name: &str) -> Option<f64> {
        match self.values.get(slot) {
            // A list is no number, and neither is any text starting with
            // `[`, so the text parses the same whether it reads as a list.
            Some(Some(text)) => parse_number(text),
            _ => None,
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

struct EventScope<'a, E: ?Sized> {
    event: &'a E,
    slots: &'a HashMap<String, usize>,
}

impl<E: Event + ?Sized> Scope for EventScope<'_, E> {
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

/// A field a grouping reads: its name, and where [`EventScope`] finds it,
/// resolved once per plan rather than looked up by name per event.
#[derive(Clone, Copy, Debug)]
struct FieldRef<'p> {
    name: &'p str,
    at: Slot,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    /// `_time`, the event's time.
    Time,
    /// Position in the plan's fields.
    Field(usize),
    /// Not a field the plan reads: null.
    Missing,
}

impl<'p> FieldRef<'p> {
    /// `name` resolved as [`EventScope::get`] resolves it.
    fn resolve(name: &'p str, slots: &HashMap<String, usize>) -> FieldRef<'p> {
        let at = if name == TIME_FIELD {
            Slot::Time
        } else if let Some(&slot) = slots.get(name) {
            Slot::Field(slot)
        } else {
            Slot::Missing
        };
        FieldRef { name, at }
    }
}

/// What a grouping reads of a field, borrowing where the scope can: the
/// same as [`Value::text`], [`Value::as_number`] and "not null" of
/// [`Scope::get`].
trait GroupScope {
    fn text(&self, field: &FieldRef) -> Option<Cow<'_, str>>;
    fn number(&self, field: &FieldRef) -> Option<f64>;
    fn present(&self, field: &FieldRef) -> bool;
}

impl Row {
    fn value(&self, name: &str) -> Cow<'_, Value> {
        match self.cols.iter().find(|(n, _)| n == name) {
            Some((_, v)) => Cow::Borrowed(v),
            None => Cow::Owned(self.get(name)),
        }
    }
}

impl GroupScope for Row {
    fn text(&self, field: &FieldRef) -> Option<Cow<'_, str>> {
        match self.value(field.name) {
            Cow::Borrowed(Value::Str(s)) => Some(Cow::Borrowed(s)),
            value => value.text().map(Cow::Owned),
        }
    }

    fn number(&self, field: &FieldRef) -> Option<f64> {
        self.value(field.name).as_number()
    }

    fn present(&self, field: &FieldRef) -> bool {
        !self.value(field.name).is_null()
    }
}

impl<E: Event + ?Sized> GroupScope for EventScope<'_, E> {
    #[inline]
    fn text(&self, field: &FieldRef) -> Option<Cow<'_, str>> {
        match field.at {
            Slot::Time => self
                .event
                .time_ms()
                .map(|t| Cow::Owned(format_number(t as f64))),
            Slot::Field(slot) => self.event.field_text(slot, field.name),
            Slot::Missing => None,
        }
    }

    fn number(&self, field: &FieldRef) -> Option<f64> {
        match field.at {
            Slot::Time => self.event.time_ms().map(|t| t as f64),
            Slot::Field(slot) => self.event.field_number(slot, field.name),
            Slot::Missing => None,
        }
    }

    fn present(&self, field: &FieldRef) -> bool {
        match field.at {
            Slot::Time => self.event.time_ms().is_some(),
            Slot::Field(slot) => self.event.field_text(slot, field.name).is_some(),
            Slot::Missing => false,
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
    /// The field each of `aggs` reads.
    agg_fields: Vec<Option<FieldRef<'p>>>,
    /// Whether a key or an aggregate reads the event's time.
    needs_time: bool,
}

enum KeyPart<'p> {
    Field(FieldRef<'p>),
    Bucket(i64),
}

impl<'p> GroupSpec<'p> {
    /// The grouping of `stage`, its fields resolved against `slots` (the
    /// plan's fields; rows find fields by name and ignore them).
    fn of(stage: &'p Stage, slots: &HashMap<String, usize>) -> Option<GroupSpec<'p>> {
        let field = |f: &'p String| KeyPart::Field(FieldRef::resolve(f, slots));
        let (keys, aggs) = match stage {
            Stage::Stats { aggs, by } => (by.iter().map(field).collect(), aggs.as_slice()),
            Stage::Top { field: top, by, .. } => {
                let mut keys: Vec<KeyPart<'p>> = by.iter().map(field).collect();
                keys.push(field(top));
                (keys, &[][..])
            }
            Stage::Timechart { span_ms, aggs, by } => {
                let mut keys = vec![KeyPart::Bucket(*span_ms)];
                keys.extend(by.iter().map(field));
                (keys, aggs.as_slice())
            }
            _ => return None,
        };
        let agg_fields = aggs
            .iter()
            .map(|agg| agg.field.as_deref().map(|f| FieldRef::resolve(f, slots)))
            .collect();
        let needs_time = keys.iter().any(|k| matches!(k, KeyPart::Bucket(_)))
            || aggs
                .iter()
                .any(|a| matches!(a.func, AggFunc::Earliest | AggFunc::Latest));
        Some(GroupSpec {
            keys,
            aggs,
            agg_fields,
            needs_time,
        })
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

    /// The state of a group not seen before, whose key is `key`.
    fn new_group(&self, key: String) -> GroupState {
        let aggs = self
            .aggs
            .iter()
            .map(|agg| match agg.func {
                AggFunc::Count => AggState::Count(None),
                AggFunc::Dc => AggState::Dc(None),
                AggFunc::Min | AggFunc::Max => AggState::Range(None),
                AggFunc::Sum | AggFunc::Avg => AggState::Sum(None),
                AggFunc::Values => AggState::Values(None),
                AggFunc::Earliest | AggFunc::Latest => AggState::Timed(None),
            })
            .collect();
        GroupState {
            key,
            events: 0,
            aggs,
        }
    }

    /// Adds one event or row to `groups`.
    fn observe<S: GroupScope>(&self, groups: &mut Groups, scope: &S, time: Option<i64>) {
        // Groups are found by their key values as read: one value as it
        // is, several end to end with their lengths. The group key's JSON
        // text is written once per group, not per event.
        let Groups { map, key } = groups;
        let one;
        let lookup: &[u8] = if let [part] = self.keys.as_slice() {
            match key_value(part, scope, time) {
                Some(value) => one = value,
                // Like SPL: an event without a `by` field is in no group.
                None => return,
            }
            one.as_bytes()
        } else {
            key.clear();
            for part in &self.keys {
                let Some(value) = key_value(part, scope, time) else {
                    return;
                };
                let bytes = value.as_bytes();
                key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                key.extend_from_slice(bytes);
            }
            key.as_slice()
        };
        match map.get_mut(lookup) {
            Some(group) => self.add(group, scope, time),
            None => {
                let Some(parts) = self.key_parts(scope, time) else {
                    return;
                };
                let mut group = self.new_group(group_key(&parts));
                self.add(&mut group, scope, time);
                map.insert(lookup.to_vec(), group);
            }
        }
    }

    /// The texts of the key values, as the group key holds them.
    fn key_parts<S: GroupScope>(&self, scope: &S, time: Option<i64>) -> Option<Vec<String>> {
        self.keys
            .iter()
            .map(|part| match part {
                KeyPart::Field(f) => scope.text(f).map(Cow::into_owned),
                KeyPart::Bucket(span) => time.map(|t| (t.div_euclid(*span) * span).to_string()),
            })
            .collect()
    }

    fn add<S: GroupScope>(&self, group: &mut GroupState, scope: &S, time: Option<i64>) {
        group.events = group.events.saturating_add(1);
        for ((agg, field), state) in self.aggs.iter().zip(&self.agg_fields).zip(&mut group.aggs) {
            observe_agg(agg.func, state, field.as_ref(), scope, time);
        }
    }

    /// The partial of the groups observed.
    fn partial(&self, groups: Groups) -> GroupsPartial {
        let mut partial = self.empty();
        let mut events = BTreeMap::new();
        for group in groups.map.into_values() {
            let key = group.key;
            for (state, into) in group.aggs.into_iter().zip(&mut partial.aggs) {
                match (state, into) {
                    (AggState::Count(Some(n)), AggPartial::Count(AggregateValue::Counts(m))) => {
                        m.insert(key.clone(), n);
                    }
                    (AggState::Dc(Some(d)), AggPartial::Dc(AggregateValue::Distinct(m))) => {
                        m.insert(key.clone(), d);
                    }
                    (AggState::Range(Some(r)), AggPartial::Range(AggregateValue::Range(m))) => {
                        m.insert(key.clone(), r);
                    }
                    (AggState::Sum(Some(sum)), AggPartial::Sum(m)) => {
                        m.insert(key.clone(), sum);
                    }
                    (AggState::Values(Some(v)), AggPartial::Values(m)) => {
                        m.insert(key.clone(), v);
                    }
                    (AggState::Timed(Some(t)), AggPartial::Earliest(m) | AggPartial::Latest(m)) => {
                        m.insert(key.clone(), t);
                    }
                    // Never observed in this group (or pairs never built).
                    _ => {}
                }
            }
            events.insert(key, group.events);
        }
        partial.events = AggregateValue::Counts(events);
        partial
    }
}

/// One key value of an event, as [`GroupSpec::observe`] looks groups up.
enum KeyValue<'a> {
    Text(Cow<'a, str>),
    Bucket([u8; 8]),
}

impl KeyValue<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            KeyValue::Text(text) => text.as_bytes(),
            KeyValue::Bucket(bytes) => bytes,
        }
    }
}

/// The value of `part` in `scope`; `None` when the event has none.
#[inline]
fn key_value<'s, S: GroupScope>(
    part: &KeyPart<'_>,
    scope: &'s S,
    time: Option<i64>,
) -> Option<KeyValue<'s>> {
    match part {
        KeyPart::Field(f) => scope.text(f).map(KeyValue::Text),
        KeyPart::Bucket(span) => {
            time.map(|t| KeyValue::Bucket((t.div_euclid(*span) * span).to_le_bytes()))
        }
    }
}

/// The groups of a stage while events or rows are observed: each group's
/// whole state under its key values ([`GroupSpec::observe`]), turned into a
/// [`GroupsPartial`] at the end. The map hashes with foldhash (seeded per
/// process: keys come from the logs), several times cheaper than SipHash
/// on short keys.
#[derive(Default)]
struct Groups {
    map: hashbrown::HashMap<Vec<u8>, GroupState>,
    /// Scratch space for the key values of the event being observed.
    key: Vec<u8>,
}

/// One group: its events, and one state per aggregate (`None` until a
/// value counts, as the group then has no entry in that aggregate).
struct GroupState {
    /// The group key ([`group_key`]).
    key: String,
    events: u64,
    aggs: Vec<AggState>,
}

enum AggState {
    Count(Option<u64>),
    Dc(Option<DistinctValues>),
    Range(Option<RangeStats>),
    Sum(Option<SumState>),
    Values(Option<ValuesState>),
    /// `earliest`, `latest`.
    Timed(Option<TimedValue>),
}

/// A group's key: the JSON array of its key values' texts, exactly as
/// `serde_json::to_string` writes a `Vec<String>` (partials from shards
/// running other versions merge by it; a test pins the two together).
fn group_key(parts: &[String]) -> String {
    let mut key = String::from("[");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        push_json_str(&mut key, part);
    }
    key.push(']');
    key
}

/// Appends `text` as a JSON string the way serde_json escapes it: `"` and
/// `\\`, the control characters below U+0020 as `\b`, `\t`, `\n`, `\f`, `\r`
/// or `\u00xx` (lowercase hex), everything else as is.
fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so a character boundary.
        out.push_str(&text[plain..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

fn parse_key(key: &str) -> Vec<String> {
    serde_json::from_str(key).unwrap_or_default()
}

/// Updates `state` with `update`, or sets it to `new()` if it has none.
fn upsert<V>(state: &mut Option<V>, new: impl FnOnce() -> V, update: impl FnOnce(&mut V)) {
    match state {
        Some(state) => update(state),
        None => *state = Some(new()),
    }
}

fn observe_agg<S: GroupScope>(
    func: AggFunc,
    state: &mut AggState,
    field: Option<&FieldRef>,
    scope: &S,
    time: Option<i64>,
) {
    let text = || field.and_then(|f| scope.text(f));
    let number = || field.and_then(|f| scope.number(f));
    match state {
        AggState::Count(count) => {
            // `count()` counts every event, `count(f)` those with `f`.
            if field.is_none_or(|f| scope.present(f)) {
                upsert(count, || 1, |n| *n = n.saturating_add(1));
            }
        }
        AggState::Dc(distinct) => {
            if let Some(text) = text() {
                let new = || {
                    let mut values = DistinctValues::default();
                    values.insert(&text);
                    values
                };
                upsert(distinct, new, |values| values.insert(&text));
            }
        }
        AggState::Range(range) => {
            if let Some(n) = number() {
                let ordered = f64_to_ordered(n);
                upsert(range, || RangeStats::of(ordered), |r| r.observe(ordered));
            }
        }
        AggState::Sum(sum) => {
            if let Some(n) = number() {
                let new = || {
                    let mut sum = SumState::default();
                    sum.add(n);
                    sum
                };
                upsert(sum, new, |sum| sum.add(n));
            }
        }
        AggState::Values(values) => {
            if let Some(text) = text() {
                let add = |state: &mut ValuesState| {
                    // Copied only when new; a kept set is already bounded.
                    if !state.values.contains(text.as_ref()) {
                        state.values.insert(text.as_ref().to_owned());
                        state.bound();
                    }
                };
                let new = || {
                    let mut state = ValuesState::default();
                    add(&mut state);
                    state
                };
                upsert(values, new, add);
            }
        }
        AggState::Timed(kept) => {
            let (Some(time), Some(text)) = (time, text()) else {
                return;
            };
            let earliest = func == AggFunc::Earliest;
            let seen = || TimedValue {
                time,
                value: text.as_ref().to_owned(),
            };
            upsert(kept, seen, |kept| {
                // `TimedValue`'s order, without building one per event.
                let order = (time, text.as_ref()).cmp(&(kept.time, kept.value.as_str()));
                if (earliest && order.is_lt()) || (!earliest && order.is_gt()) {
                    *kept = seen();
                }
            });
        }
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
    /// With `spec`: the groups so far (`state` stays empty until `finish`).
    groups: Groups,
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
        let spec = plan
            .aggregation
            .as_ref()
            .and_then(|stage| GroupSpec::of(stage, &slots));
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
            groups: Groups::default(),
        }
    }

    /// Runs the per-event stages on `event` and adds what survives.
    ///
    /// Generic over the event type, so that reading a field compiles to
    /// the event's own code rather than a call through a vtable per field.
    pub fn observe<E: Event + ?Sized>(&mut self, event: &E) {
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
        // Filled in place: moving the row through a match costs a copy.
        if row.is_none() && matches!(self.state, PartialData::Rows { .. }) {
            row = Some(self.materialize(event));
        }
        match (&mut self.state, &self.spec) {
            (PartialData::Groups(_), Some(spec)) => {
                let time = if spec.needs_time {
                    event.time_ms()
                } else {
                    None
                };
                match &row {
                    Some(row) => spec.observe(&mut self.groups, row, time),
                    None => spec.observe(&mut self.groups, &scope, time),
                }
            }
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
    fn materialize<E: Event + ?Sized>(&self, event: &E) -> Row {
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
        if let (PartialData::Groups(state), Some(spec)) = (&mut self.state, &self.spec) {
            *state = spec.partial(std::mem::take(&mut self.groups));
        }
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
            // Rows find fields by name: no slots.
            aggregation => match GroupSpec::of(aggregation, &HashMap::new()) {
                Some(spec) => {
                    let mut groups = Groups::default();
                    for row in &rows {
                        let time = row
                            .time
                            .or_else(|| row.get(TIME_FIELD).as_number().map(|t| t as i64));
                        spec.observe(&mut groups, row, time);
                    }
                    let state = spec.partial(groups);
                    group_rows(aggregation, &state)
                }
                None => rows,
            },
        };
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts that need escaping or might read as something else.
    fn awkward() -> Vec<String> {
        let mut texts: Vec<String> = [
            "",
            "plain",
            "a\"b",
            "back\\slash\\",
            "\\\"",
            "tab\tnl\ncr\rff\u{c}bs\u{8}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "ünïcødé ✓ 🦀 \u{2028}\u{2029}",
            "/slash/",
            "[1, \"x\"]",
            "[ 1 , [2], {\"k\": \"\\u0041\"} ]",
            "[]",
            "[not json",
            "[1,",
            "-3.25",
            "\"quoted\"",
        ]
        .map(String::from)
        .to_vec();
        // Every ASCII character alone, and one long text of them all.
        texts.extend((0u8..0x80).map(|b| char::from(b).to_string()));
        texts.push((0u8..0x80).map(char::from).collect());
        texts
    }

    #[test]
    fn group_keys_are_serde_json_of_the_texts() {
        let texts = awkward();
        let mut cases: Vec<Vec<String>> = vec![Vec::new()];
        cases.extend(texts.iter().map(|t| vec![t.clone()]));
        cases.extend(texts.windows(3).map(<[String]>::to_vec));
        for parts in &cases {
            let old = serde_json::to_string(parts).expect("strings serialise");
            assert_eq!(group_key(parts), old, "{parts:?}");
            assert_eq!(parse_key(&group_key(parts)), *parts);
        }
    }

    #[test]
    fn events_lend_the_text_and_number_they_would_give() {
        let texts = awkward();
        let values: Vec<Option<String>> = texts.iter().cloned().map(Some).chain([None]).collect();
        let event = TextEvent {
            time_ms: None,
            values: &values,
        };
        let json: serde_json::Map<String, serde_json::Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("f{i}"), serde_json::Value::String(t.clone())))
            .chain([
                ("n".to_owned(), serde_json::json!(4688)),
                ("x".to_owned(), serde_json::json!(0.5)),
                ("a".to_owned(), serde_json::json!([1, "x", null])),
                ("o".to_owned(), serde_json::json!({"k": [1]})),
                ("b".to_owned(), serde_json::json!(true)),
                ("z".to_owned(), serde_json::Value::Null),
            ])
            .collect();
        let json_event = JsonEvent {
            map: &json,
            time_ms: None,
        };
        for slot in 0..=values.len() {
            let name = format!("f{slot}");
            assert_eq!(
                event.field_text(slot, &name).map(Cow::into_owned),
                event.field(slot, &name).text(),
                "{slot}"
            );
            assert_eq!(
                event.field_number(slot, &name),
                event.field(slot, &name).as_number()
            );
        }
        for name in json.keys().map(String::as_str).chain(["absent"]) {
            assert_eq!(
                json_event.field_text(0, name).map(Cow::into_owned),
                json_event.field(0, name).text(),
                "{name}"
            );
            assert_eq!(
                json_event.field_number(0, name),
                json_event.field(0, name).as_number()
            );
        }
    }

    /// The keys a shard's partial holds are the `serde_json` encoding of
    /// the key values' texts, whichever path read them, and equal keys
    /// make one group.
    #[test]
    fn groups_are_told_apart_by_each_key_value() {
        let plan = crate::compile("stats count() by A, B").expect("compiles");
        let mut runner = Runner::new(&plan);
        for (a, b) in [
            ("a", "bc"),
            ("ab", "c"),
            ("ab", "c"),
            // One list in two spellings is one value.
            ("[1, 2]", "x"),
            ("[1,2]", "x"),
        ] {
            runner.observe(&TextEvent {
                time_ms: None,
                values: &[Some(a.to_owned()), Some(b.to_owned())],
            });
        }
        let PartialData::Groups(groups) = runner.finish().data else {
            panic!("a stats plan has groups");
        };
        let expected: BTreeMap<String, u64> = [
            (r#"["a","bc"]"#, 1),
            (r#"["ab","c"]"#, 2),
            (r#"["[\"1\",\"2\"]","x"]"#, 2),
        ]
        .map(|(k, n)| (k.to_owned(), n))
        .into();
        assert_eq!(groups.events, AggregateValue::Counts(expected));
    }

    #[test]
    fn partial_keys_of_awkward_events_are_unchanged() {
        let texts = awkward();
        let plan = crate::compile("stats count(), values(B) by A, B").expect("compiles");
        assert_eq!(plan.fields_read(), ["A", "B"]);
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        let mut runner = Runner::new(&plan);
        for (i, a) in texts.iter().enumerate() {
            let b = &texts[(i * 7) % texts.len()];
            // Every pair twice; a missing key field puts the event in no group.
            for values in [
                vec![Some(a.clone()), Some(b.clone())],
                vec![Some(a.clone()), Some(b.clone())],
                vec![Some(a.clone()), None],
                vec![None, Some(b.clone())],
            ] {
                runner.observe(&TextEvent {
                    time_ms: Some(0),
                    values: &values,
                });
            }
            let parts: Vec<String> = [a, b]
                .iter()
                .filter_map(|t| Value::from_text(t).text())
                .collect();
            let key = serde_json::to_string(&parts).expect("strings serialise");
            *expected.entry(key).or_default() += 2;
        }
        let PartialData::Groups(groups) = runner.finish().data else {
            panic!("a stats plan has groups");
        };
        assert_eq!(groups.events, AggregateValue::Counts(expected.clone()));
        assert_eq!(
            groups.aggs[0],
            AggPartial::Count(AggregateValue::Counts(expected))
        );
        // A text that is a JSON array groups by its compact JSON.
        let AggPartial::Values(values) = &groups.aggs[1] else {
            panic!("values(B) keeps values");
        };
        let i = texts
            .iter()
            .position(|t| t == "[1, \"x\"]")
            .expect("listed");
        let b = serde_json::to_string(&texts[(i * 7) % texts.len()]).expect("serialises");
        let key = format!(r#"["[\"1\",\"x\"]",{b}]"#);
        assert!(values.contains_key(&key), "{key} in {:?}", values.keys());
    }
}
