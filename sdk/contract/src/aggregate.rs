//! Mergeable aggregates and their merge rules.
//!
//! A task returns partial aggregates; the coordinator merges the partials of
//! every task of a hunt by name, without running guest code, so the merge
//! rules live here, in one place, used by the SDK (to build partials), the
//! worker (to check what a module returned) and the coordinator (to merge).
//! Counts, distinct sets, ranges and stacks merge exactly: commutatively and
//! associatively, so the result does not depend on the order in which tasks
//! finish. Top-k is approximate: the counts of its listed keys are exact
//! sums, but the error bounds of keys near the cut can depend on the merge
//! order. Every coordinator applies reports in the raft log's order, so all
//! replicas still agree.
//!
//! | Kind | Per key | Merge | Bounded by |
//! |---|---|---|---|
//! | [`AggregateValue::Counts`] | count | sum | keys |
//! | [`AggregateValue::Distinct`] | distinct values | union | exact up to [`EXACT_DISTINCT_LIMIT`] values, then a 4 KiB [`Sketch`] |
//! | [`AggregateValue::TopK`] | count (+ error bound) | sum, keep the heaviest | [`TopK::capacity`] keys |
//! | [`AggregateValue::Range`] | min, max, count | min, max, sum | keys |
//! | [`AggregateValue::Stack`] | hosts a value was seen on | union, then the threshold | `max_hosts + 1` hosts per value |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::hll::Sketch;

/// A distinct set stays exact up to this many values; a larger set becomes a
/// [`Sketch`] (about 1.6% error).
pub const EXACT_DISTINCT_LIMIT: usize = 1_000;

/// Largest `k` of a [`TopK`].
pub const MAX_TOP_K: u32 = 10_000;

/// One named aggregate of a task or of a whole hunt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Aggregate {
    /// Aggregates with the same name are merged.
    pub name: String,
    /// What is aggregated.
    pub value: AggregateValue,
}

/// The kinds of aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AggregateValue {
    /// Count per key (failed logons per account); merged by adding.
    Counts(BTreeMap<String, u64>),
    /// Distinct values per key (destinations per source); merged by union.
    Distinct(BTreeMap<String, DistinctValues>),
    /// The `k` keys with the highest counts, approximately.
    TopK(TopK),
    /// Minimum, maximum and number of observations of a number per key; with
    /// timestamps: first and last seen.
    Range(BTreeMap<String, RangeStats>),
    /// Values stacked by the hosts they were seen on, for long-tail analysis.
    Stack(Stack),
}

/// Partials of one name that cannot be merged because their kinds differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindMismatch {
    /// The kind already merged.
    pub merged: &'static str,
    /// The kind of the partial that was refused.
    pub partial: &'static str,
}

impl fmt::Display for KindMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a partial result of kind `{}` cannot be merged into an aggregate of kind `{}`; \
             return each aggregate name with one kind from every task",
            self.partial, self.merged
        )
    }
}

impl std::error::Error for KindMismatch {}

impl AggregateValue {
    /// The kind's name, as in the WIT (`counts`, `distinct`, `top-k`,
    /// `range`, `stack`).
    pub fn kind(&self) -> &'static str {
        match self {
            AggregateValue::Counts(_) => "counts",
            AggregateValue::Distinct(_) => "distinct",
            AggregateValue::TopK(_) => "top-k",
            AggregateValue::Range(_) => "range",
            AggregateValue::Stack(_) => "stack",
        }
    }

    /// Merges the partial `other` into `self`. Partials of another kind are
    /// refused and leave `self` unchanged.
    pub fn merge(&mut self, other: AggregateValue) -> Result<(), KindMismatch> {
        match (self, other) {
            (AggregateValue::Counts(into), AggregateValue::Counts(from)) => {
                for (key, n) in from {
                    let count = into.entry(key).or_insert(0);
                    *count = count.saturating_add(n);
                }
            }
            (AggregateValue::Distinct(into), AggregateValue::Distinct(from)) => {
                for (key, values) in from {
                    match into.get_mut(&key) {
                        Some(merged) => merged.merge(values),
                        None => {
                            into.insert(key, values);
                        }
                    }
                }
            }
            (AggregateValue::TopK(into), AggregateValue::TopK(from)) => into.merge(from),
            (AggregateValue::Range(into), AggregateValue::Range(from)) => {
                for (key, stats) in from {
                    into.entry(key)
                        .and_modify(|merged| merged.merge(stats))
                        .or_insert(stats);
                }
            }
            (AggregateValue::Stack(into), AggregateValue::Stack(from)) => into.merge(from),
            (merged, partial) => {
                return Err(KindMismatch {
                    merged: merged.kind(),
                    partial: partial.kind(),
                });
            }
        }
        Ok(())
    }

    /// Brings a value built outside this crate (received from a module or
    /// over the network) to the form the merge rules keep: oversized exact
    /// sets become sketches, stacks mark values over the threshold as
    /// common, top-k lists are cut to their capacity. Refuses what no
    /// Quarry component produces, with the reason.
    pub fn normalise(&mut self) -> Result<(), String> {
        match self {
            AggregateValue::Counts(_) => {}
            AggregateValue::Distinct(keys) => {
                for values in keys.values_mut() {
                    values.normalise();
                }
            }
            AggregateValue::TopK(top) => {
                if top.k == 0 || top.k > MAX_TOP_K {
                    return Err(format!(
                        "top-k needs k from 1 to {MAX_TOP_K}, got {}",
                        top.k
                    ));
                }
                top.truncate();
            }
            AggregateValue::Range(ranges) => {
                if let Some((key, _)) = ranges.iter().find(|(_, r)| r.min > r.max) {
                    return Err(format!(
                        "range of key `{key}` has its minimum above its maximum"
                    ));
                }
            }
            AggregateValue::Stack(stack) => stack.normalise(),
        }
        Ok(())
    }

    /// Approximate size in bytes (its strings and numbers), for result limits.
    pub fn approx_bytes(&self) -> usize {
        match self {
            AggregateValue::Counts(counts) => counts.keys().map(|k| k.len() + 8).sum(),
            AggregateValue::Distinct(keys) => keys
                .iter()
                .map(|(key, values)| key.len() + values.approx_bytes())
                .sum(),
            AggregateValue::TopK(top) => {
                16 + top.entries.keys().map(|k| k.len() + 16).sum::<usize>()
            }
            AggregateValue::Range(ranges) => ranges.keys().map(|k| k.len() + 24).sum(),
            AggregateValue::Stack(stack) => stack
                .entries
                .iter()
                .map(|(value, entry)| {
                    value.len() + 9 + entry.hosts.iter().map(String::len).sum::<usize>()
                })
                .sum(),
        }
    }
}

impl Aggregate {
    /// An aggregate named `name`.
    pub fn new(name: impl Into<String>, value: AggregateValue) -> Self {
        Aggregate {
            name: name.into(),
            value,
        }
    }

    /// The counts, for a counts aggregate.
    pub fn counts(&self) -> Option<&BTreeMap<String, u64>> {
        match &self.value {
            AggregateValue::Counts(counts) => Some(counts),
            _ => None,
        }
    }

    /// Approximate size in bytes, name included.
    pub fn approx_bytes(&self) -> usize {
        self.name.len() + self.value.approx_bytes()
    }
}

/// Merged aggregates by name, as a hunt holds them.
pub type Merged = BTreeMap<String, AggregateValue>;

/// Merges the partial `aggregate` into `merged` under its name.
pub fn merge_into(merged: &mut Merged, aggregate: Aggregate) -> Result<(), KindMismatch> {
    merge_into_measured(merged, aggregate).map(|_| ())
}

/// Merges like [`merge_into`] and returns by how much the merged
/// aggregates' [`Aggregate::approx_bytes`] changed (negative when a set
/// became a smaller sketch). Costs the partial's size, not the merged
/// aggregate's, for counts and ranges, whose merged key sets grow without
/// bound; the other kinds are bounded per key or in all, so they are
/// measured before and after.
pub fn merge_into_measured(merged: &mut Merged, aggregate: Aggregate) -> Result<i64, KindMismatch> {
    match merged.get_mut(&aggregate.name) {
        Some(into) => into.merge_measured(aggregate.value),
        None => {
            let grown = aggregate.approx_bytes();
            merged.insert(aggregate.name, aggregate.value);
            Ok(signed(grown))
        }
    }
}

fn signed(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl AggregateValue {
    /// [`AggregateValue::merge`], returning the change of
    /// [`AggregateValue::approx_bytes`] (see [`merge_into_measured`]).
    pub fn merge_measured(&mut self, other: AggregateValue) -> Result<i64, KindMismatch> {
        match (&mut *self, other) {
            (AggregateValue::Counts(into), AggregateValue::Counts(from)) => {
                let mut grown = 0usize;
                for (key, n) in from {
                    let len = key.len();
                    let count = into.entry(key).or_insert_with(|| {
                        grown += len + 8;
                        0
                    });
                    *count = count.saturating_add(n);
                }
                Ok(signed(grown))
            }
            (AggregateValue::Range(into), AggregateValue::Range(from)) => {
                let mut grown = 0usize;
                for (key, stats) in from {
                    match into.get_mut(&key) {
                        Some(merged) => merged.merge(stats),
                        None => {
                            grown += key.len() + 24;
                            into.insert(key, stats);
                        }
                    }
                }
                Ok(signed(grown))
            }
            (AggregateValue::Distinct(into), AggregateValue::Distinct(from)) => {
                let mut change = 0i64;
                for (key, values) in from {
                    match into.get_mut(&key) {
                        Some(merged) => {
                            let before = signed(merged.approx_bytes());
                            merged.merge(values);
                            change += signed(merged.approx_bytes()) - before;
                        }
                        None => {
                            change += signed(key.len() + values.approx_bytes());
                            into.insert(key, values);
                        }
                    }
                }
                Ok(change)
            }
            (me, other) => {
                let before = signed(me.approx_bytes());
                me.merge(other)?;
                Ok(signed(me.approx_bytes()) - before)
            }
        }
    }
}

/// Constructors from the flat records of the WIT and protobuf forms, shared
/// by every decoder so that all of them treat repeated keys alike (merged
/// by the kind's rule) and refuse the same malformed input.
impl AggregateValue {
    /// Counts from `(key, count)` pairs; a repeated key's counts are added.
    pub fn counts_from(pairs: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut counts = BTreeMap::new();
        for (key, n) in pairs {
            let count: &mut u64 = counts.entry(key).or_default();
            *count = count.saturating_add(n);
        }
        AggregateValue::Counts(counts)
    }

    /// Distinct values from `(key, values)` pairs; a repeated key's values
    /// are merged.
    pub fn distinct_from(pairs: impl IntoIterator<Item = (String, DistinctValues)>) -> Self {
        let mut keys: BTreeMap<String, DistinctValues> = BTreeMap::new();
        for (key, values) in pairs {
            keys.entry(key).or_default().merge(values);
        }
        AggregateValue::Distinct(keys)
    }

    /// A top-k from `(key, count, error)` entries.
    pub fn top_k_from(
        k: u32,
        floor: u64,
        entries: impl IntoIterator<Item = (String, u64, u64)>,
    ) -> Self {
        let mut top = TopK::new(k);
        top.floor = floor;
        for (key, count, error) in entries {
            let kept = top.entries.entry(key).or_default();
            kept.count = kept.count.saturating_add(count);
            kept.error = kept.error.saturating_add(error);
        }
        AggregateValue::TopK(top)
    }

    /// Ranges from `(key, stats)` pairs; a repeated key's stats are merged.
    pub fn ranges_from(pairs: impl IntoIterator<Item = (String, RangeStats)>) -> Self {
        let mut keys: BTreeMap<String, RangeStats> = BTreeMap::new();
        for (key, stats) in pairs {
            keys.entry(key)
                .and_modify(|s| s.merge(stats))
                .or_insert(stats);
        }
        AggregateValue::Range(keys)
    }

    /// A stack from `(value, entry)` pairs; a repeated value's entries are
    /// merged.
    pub fn stack_from(
        max_hosts: u32,
        entries: impl IntoIterator<Item = (String, StackEntry)>,
    ) -> Self {
        let mut stack = Stack::new(max_hosts);
        for (value, entry) in entries {
            let kept = stack.entries.entry(value).or_default();
            kept.hosts.extend(entry.hosts);
            kept.common |= entry.common;
            kept.events = kept.events.saturating_add(entry.events);
        }
        AggregateValue::Stack(stack)
    }

    /// For each kind, the flat records back: what the WIT and protobuf
    /// encoders walk.
    pub fn parts(&self) -> Parts<'_> {
        match self {
            AggregateValue::Counts(counts) => {
                Parts::Counts(counts.iter().map(|(k, n)| (k.as_str(), *n)).collect())
            }
            AggregateValue::Distinct(keys) => {
                Parts::Distinct(keys.iter().map(|(k, v)| (k.as_str(), v)).collect())
            }
            AggregateValue::TopK(top) => Parts::TopK(top),
            AggregateValue::Range(keys) => {
                Parts::Range(keys.iter().map(|(k, r)| (k.as_str(), *r)).collect())
            }
            AggregateValue::Stack(stack) => Parts::Stack(stack),
        }
    }
}

/// Converts a WIT `aggregate` record into an [`Aggregate`], checked and
/// normalised: `aggregate_from_wit!(value, path::to::wit::types)`.
///
/// The guest (wit-bindgen) and the host (wasmtime) generate their own Rust
/// types from the same WIT, with the same names; this one macro decodes
/// both, so guest tests and workers accept and refuse exactly the same
/// aggregates. Evaluates to `Result<Aggregate, String>`.
#[macro_export]
macro_rules! aggregate_from_wit {
    ($aggregate:expr, $($wit:ident)::+) => {{
        use $crate::aggregate::{AggregateValue as Value, DistinctValues, RangeStats, StackEntry};
        let aggregate = $aggregate;
        let name = aggregate.name;
        let decoded: ::core::result::Result<Value, ::std::string::String> = match aggregate.value {
            $($wit)::+::AggregateValue::Counts(pairs) => Ok(Value::counts_from(pairs)),
            $($wit)::+::AggregateValue::Distinct(pairs) => pairs
                .into_iter()
                .map(|(key, values)| match values {
                    $($wit)::+::DistinctValues::Exact(values) => Ok((key, DistinctValues::exact(values))),
                    $($wit)::+::DistinctValues::Sketch(registers) => {
                        DistinctValues::sketch(registers).map(|values| (key, values))
                    }
                })
                .collect::<::core::result::Result<::std::vec::Vec<_>, _>>()
                .map(Value::distinct_from),
            $($wit)::+::AggregateValue::TopK(top) => Ok(Value::top_k_from(
                top.k,
                top.floor,
                top.entries.into_iter().map(|e| (e.key, e.count, e.error)),
            )),
            $($wit)::+::AggregateValue::Range(ranges) => Ok(Value::ranges_from(ranges.into_iter().map(|r| {
                let stats = RangeStats { min: r.min, max: r.max, count: r.count };
                (r.key, stats)
            }))),
            $($wit)::+::AggregateValue::Stack(stack) => Ok(Value::stack_from(
                stack.max_hosts,
                stack.entries.into_iter().map(|e| {
                    let entry = StackEntry { hosts: e.hosts.into_iter().collect(), common: e.common, events: e.events };
                    (e.value, entry)
                }),
            )),
        };
        decoded
            .and_then(|mut value| value.normalise().map(|()| value))
            .map(|value| $crate::aggregate::Aggregate::new(name.clone(), value))
            .map_err(|reason| ::std::format!("aggregate `{name}`: {reason}"))
    }};
}

/// Converts an [`AggregateValue`] into the WIT `aggregate-value` variant:
/// `aggregate_value_to_wit!(value, path::to::wit::types)`, the inverse of
/// [`aggregate_from_wit!`] for the guest's and the host's generated types.
#[macro_export]
macro_rules! aggregate_value_to_wit {
    ($value:expr, $($wit:ident)::+) => {{
        use $crate::aggregate::{AggregateValue as Value, DistinctValues};
        match $value {
            Value::Counts(counts) => $($wit)::+::AggregateValue::Counts(counts.into_iter().collect()),
            Value::Distinct(keys) => $($wit)::+::AggregateValue::Distinct(
                keys.into_iter()
                    .map(|(key, values)| {
                        let values = match values {
                            DistinctValues::Exact(values) => {
                                $($wit)::+::DistinctValues::Exact(values.into_iter().collect())
                            }
                            DistinctValues::Sketch(sketch) => {
                                $($wit)::+::DistinctValues::Sketch(sketch.into_registers())
                            }
                        };
                        (key, values)
                    })
                    .collect(),
            ),
            Value::TopK(top) => $($wit)::+::AggregateValue::TopK($($wit)::+::TopK {
                k: top.k,
                entries: top
                    .entries
                    .into_iter()
                    .map(|(key, entry)| $($wit)::+::TopEntry {
                        key,
                        count: entry.count,
                        error: entry.error,
                    })
                    .collect(),
                floor: top.floor,
            }),
            Value::Range(keys) => $($wit)::+::AggregateValue::Range(
                keys.into_iter()
                    .map(|(key, stats)| $($wit)::+::Range {
                        key,
                        min: stats.min,
                        max: stats.max,
                        count: stats.count,
                    })
                    .collect(),
            ),
            Value::Stack(stack) => $($wit)::+::AggregateValue::Stack($($wit)::+::Stack {
                max_hosts: stack.max_hosts,
                entries: stack
                    .entries
                    .into_iter()
                    .map(|(value, entry)| $($wit)::+::StackEntry {
                        value,
                        hosts: entry.hosts.into_iter().collect(),
                        common: entry.common,
                        events: entry.events,
                    })
                    .collect(),
            }),
        }
    }};
}

/// An aggregate value's records, borrowed (see [`AggregateValue::parts`]).
#[derive(Debug)]
pub enum Parts<'a> {
    /// `(key, count)`.
    Counts(Vec<(&'a str, u64)>),
    /// `(key, values)`.
    Distinct(Vec<(&'a str, &'a DistinctValues)>),
    /// The top-k.
    TopK(&'a TopK),
    /// `(key, stats)`.
    Range(Vec<(&'a str, RangeStats)>),
    /// The stack.
    Stack(&'a Stack),
}

/// The distinct values of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DistinctValues {
    /// The values themselves, at most [`EXACT_DISTINCT_LIMIT`].
    Exact(BTreeSet<String>),
    /// A sketch of a larger set.
    Sketch(Sketch),
}

impl Default for DistinctValues {
    fn default() -> Self {
        DistinctValues::Exact(BTreeSet::new())
    }
}

impl DistinctValues {
    /// Exact values (a set over the limit becomes a sketch).
    pub fn exact(values: impl IntoIterator<Item = String>) -> Self {
        let mut set = DistinctValues::Exact(values.into_iter().collect());
        set.normalise();
        set
    }

    /// A sketch from its registers; refuses registers no Quarry component
    /// builds.
    pub fn sketch(registers: Vec<u8>) -> Result<Self, String> {
        Sketch::from_registers(registers).map(DistinctValues::Sketch)
    }

    /// Adds a value.
    pub fn insert(&mut self, value: &str) {
        match self {
            DistinctValues::Exact(values) => {
                if !values.contains(value) {
                    values.insert(value.to_owned());
                    self.normalise();
                }
            }
            DistinctValues::Sketch(sketch) => sketch.insert(value),
        }
    }

    /// Makes `self` the distinct values of the union.
    pub fn merge(&mut self, other: DistinctValues) {
        match (&mut *self, other) {
            (DistinctValues::Exact(mine), DistinctValues::Exact(theirs)) => {
                mine.extend(theirs);
                self.normalise();
            }
            (DistinctValues::Sketch(mine), DistinctValues::Sketch(theirs)) => mine.merge(&theirs),
            (DistinctValues::Sketch(mine), DistinctValues::Exact(theirs)) => {
                theirs.iter().for_each(|value| mine.insert(value));
            }
            (DistinctValues::Exact(mine), DistinctValues::Sketch(mut theirs)) => {
                mine.iter().for_each(|value| theirs.insert(value));
                *self = DistinctValues::Sketch(theirs);
            }
        }
    }

    /// The number of distinct values: exact, or the sketch's estimate.
    pub fn count(&self) -> u64 {
        match self {
            DistinctValues::Exact(values) => values.len() as u64,
            DistinctValues::Sketch(sketch) => sketch.estimate(),
        }
    }

    /// Whether [`DistinctValues::count`] is exact.
    pub fn is_exact(&self) -> bool {
        matches!(self, DistinctValues::Exact(_))
    }

    /// Turns an exact set over [`EXACT_DISTINCT_LIMIT`] into a sketch.
    pub fn normalise(&mut self) {
        if let DistinctValues::Exact(values) = self
            && values.len() > EXACT_DISTINCT_LIMIT
        {
            let mut sketch = Sketch::new();
            values.iter().for_each(|value| sketch.insert(value));
            *self = DistinctValues::Sketch(sketch);
        }
    }

    fn approx_bytes(&self) -> usize {
        match self {
            DistinctValues::Exact(values) => values.iter().map(String::len).sum(),
            DistinctValues::Sketch(sketch) => sketch.registers().len(),
        }
    }
}

/// Count and error bound of one [`TopK`] key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TopEntry {
    /// Counted occurrences (a lower bound of the true count).
    pub count: u64,
    /// The true count is at most `count + error`: occurrences that partials
    /// which had cut the key from their lists may have held.
    pub error: u64,
}

/// The heaviest keys by count, mergeable with bounded size.
///
/// Each partial keeps its [`capacity`](TopK::capacity) heaviest keys (a
/// multiple of `k`, so keys just outside one shard's top still merge
/// correctly) and remembers in `floor` the largest count it cut. Merging
/// adds counts and, for a key a partial had cut, adds that partial's floor
/// to the key's error bound, as distributed search engines do for their
/// terms aggregations: the true count of every listed key lies in
/// `count ..= count + error`, and no unlisted key exceeds `floor`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TopK {
    /// How many keys the result lists.
    pub k: u32,
    /// Kept keys.
    pub entries: BTreeMap<String, TopEntry>,
    /// Upper bound of the count of any key not in `entries`.
    pub floor: u64,
}

impl TopK {
    /// An empty top-`k`.
    pub fn new(k: u32) -> Self {
        TopK {
            k,
            entries: BTreeMap::new(),
            floor: 0,
        }
    }

    /// How many keys a partial keeps: `4k`, at least 16.
    pub fn capacity(&self) -> usize {
        (self.k as usize).saturating_mul(4).max(16)
    }

    /// Adds `n` occurrences of `key`. Call [`TopK::truncate`] (done by
    /// [`AggregateValue::normalise`]) before returning it.
    pub fn add(&mut self, key: &str, n: u64) {
        match self.entries.get_mut(key) {
            Some(entry) => entry.count = entry.count.saturating_add(n),
            None => {
                self.entries.insert(
                    key.to_owned(),
                    TopEntry {
                        count: n,
                        error: self.floor,
                    },
                );
            }
        }
    }

    /// Merges the partial `other`.
    pub fn merge(&mut self, other: TopK) {
        let floor = self.floor.saturating_add(other.floor);
        for (key, entry) in &mut self.entries {
            if !other.entries.contains_key(key) {
                entry.error = entry.error.saturating_add(other.floor);
            }
        }
        for (key, theirs) in other.entries {
            match self.entries.get_mut(&key) {
                Some(mine) => {
                    mine.count = mine.count.saturating_add(theirs.count);
                    mine.error = mine.error.saturating_add(theirs.error);
                }
                None => {
                    self.entries.insert(
                        key,
                        TopEntry {
                            count: theirs.count,
                            error: theirs.error.saturating_add(self.floor),
                        },
                    );
                }
            }
        }
        self.k = self.k.max(other.k);
        self.floor = floor;
        self.truncate();
    }

    /// Keeps the [`capacity`](TopK::capacity) heaviest keys and raises
    /// `floor` to cover the ones cut.
    pub fn truncate(&mut self) {
        let capacity = self.capacity();
        if self.entries.len() <= capacity {
            return;
        }
        let mut ranked: Vec<(String, TopEntry)> =
            std::mem::take(&mut self.entries).into_iter().collect();
        ranked.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        for (_, cut) in ranked.drain(capacity..) {
            self.floor = self.floor.max(cut.count.saturating_add(cut.error));
        }
        self.entries = ranked.into_iter().collect();
    }

    /// The `k` heaviest keys, heaviest first (ties by key).
    pub fn top(&self) -> Vec<(&str, TopEntry)> {
        let mut ranked: Vec<(&str, TopEntry)> = self
            .entries
            .iter()
            .map(|(key, entry)| (key.as_str(), *entry))
            .collect();
        ranked.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        ranked.truncate(self.k as usize);
        ranked
    }
}

/// Minimum, maximum and number of observations of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RangeStats {
    /// Smallest value observed (first seen, for timestamps).
    pub min: i64,
    /// Largest value observed (last seen, for timestamps).
    pub max: i64,
    /// Number of observations.
    pub count: u64,
}

impl RangeStats {
    /// The stats of one observation.
    pub fn of(value: i64) -> Self {
        RangeStats {
            min: value,
            max: value,
            count: 1,
        }
    }

    /// Adds one observation.
    pub fn observe(&mut self, value: i64) {
        self.merge(RangeStats::of(value));
    }

    /// Merges another key's stats.
    pub fn merge(&mut self, other: RangeStats) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count = self.count.saturating_add(other.count);
    }
}

/// Values stacked by the hosts they were seen on: after the merge, the
/// values seen on at most `max_hosts` hosts across the whole hunt are its
/// long tail (a binary that runs on two machines of ten thousand).
///
/// A value seen on more than `max_hosts` hosts can never come back under the
/// threshold, so it is marked common and its hosts are forgotten: each value
/// holds at most `max_hosts + 1` host names, whatever the fleet size.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stack {
    /// The post-merge threshold: values on at most this many hosts are rare.
    pub max_hosts: u32,
    /// Stacked values.
    pub entries: BTreeMap<String, StackEntry>,
}

/// The hosts one stacked value was seen on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StackEntry {
    /// The hosts, while at most `max_hosts`; empty once common.
    pub hosts: BTreeSet<String>,
    /// Seen on more than `max_hosts` hosts.
    pub common: bool,
    /// Events with this value.
    pub events: u64,
}

impl Stack {
    /// An empty stack with the threshold `max_hosts`.
    pub fn new(max_hosts: u32) -> Self {
        Stack {
            max_hosts,
            entries: BTreeMap::new(),
        }
    }

    /// Records that `value` was seen on `host`.
    pub fn observe(&mut self, value: &str, host: &str) {
        self.observe_many(value, [host], 1);
    }

    /// Records that `value` was seen in `events` events on `hosts`: what
    /// that many [`Stack::observe`] calls over those hosts record, for a
    /// producer that counts per value first and stacks once at the end.
    pub fn observe_many<'h>(
        &mut self,
        value: &str,
        hosts: impl IntoIterator<Item = &'h str>,
        events: u64,
    ) {
        let max_hosts = self.max_hosts as usize;
        let entry = match self.entries.get_mut(value) {
            Some(entry) => entry,
            None => self.entries.entry(value.to_owned()).or_default(),
        };
        entry.events = entry.events.saturating_add(events);
        for host in hosts {
            if entry.common {
                break;
            }
            if !entry.hosts.contains(host) {
                entry.hosts.insert(host.to_owned());
                if entry.hosts.len() > max_hosts {
                    entry.common = true;
                    entry.hosts.clear();
                }
            }
        }
    }

    /// Merges the partial `other`; the stricter threshold wins.
    pub fn merge(&mut self, other: Stack) {
        self.max_hosts = self.max_hosts.min(other.max_hosts);
        for (value, theirs) in other.entries {
            let mine = self.entries.entry(value).or_default();
            mine.events = mine.events.saturating_add(theirs.events);
            mine.common |= theirs.common;
            mine.hosts.extend(theirs.hosts);
        }
        self.normalise();
    }

    /// Marks values over the threshold as common.
    pub fn normalise(&mut self) {
        let max_hosts = self.max_hosts as usize;
        for entry in self.entries.values_mut() {
            if entry.common || entry.hosts.len() > max_hosts {
                entry.common = true;
                entry.hosts.clear();
            }
        }
    }

    /// The long tail: values seen on at most `max_hosts` hosts, fewest hosts
    /// first (ties by value).
    pub fn rare(&self) -> Vec<(&str, &StackEntry)> {
        let mut rare: Vec<(&str, &StackEntry)> = self
            .entries
            .iter()
            .filter(|(_, entry)| !entry.common)
            .map(|(value, entry)| (value.as_str(), entry))
            .collect();
        rare.sort_by(|a, b| {
            a.1.hosts
                .len()
                .cmp(&b.1.hosts.len())
                .then_with(|| a.0.cmp(b.0))
        });
        rare
    }

    /// Number of values seen on more than `max_hosts` hosts.
    pub fn common_values(&self) -> usize {
        self.entries.values().filter(|entry| entry.common).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> AggregateValue {
        AggregateValue::Counts(pairs.iter().map(|&(k, n)| (k.to_owned(), n)).collect())
    }

    fn stack(max_hosts: u32, seen: &[(&str, &str)]) -> Stack {
        let mut stack = Stack::new(max_hosts);
        for (value, host) in seen {
            stack.observe(value, host);
        }
        stack
    }

    /// Merges partials in the given order and returns the result.
    fn merge_all(parts: Vec<AggregateValue>) -> AggregateValue {
        let mut parts = parts.into_iter();
        let mut merged = parts.next().expect("at least one partial");
        for part in parts {
            merged.merge(part).expect("same kind");
        }
        merged
    }

    #[test]
    fn a_measured_merge_reports_the_change_of_the_merged_size_for_every_kind() {
        let distinct = |from: usize, to: usize| {
            AggregateValue::Distinct(BTreeMap::from([(
                "src".to_owned(),
                DistinctValues::exact((from..to).map(|i| format!("10.0.{i}"))),
            )]))
        };
        let range = |keys: &[&str]| {
            AggregateValue::Range(
                keys.iter()
                    .map(|k| {
                        (
                            (*k).to_owned(),
                            RangeStats {
                                min: 1,
                                max: 2,
                                count: 1,
                            },
                        )
                    })
                    .collect(),
            )
        };
        let top = |keys: &[&str]| {
            let mut top = TopK::new(3);
            keys.iter().for_each(|k| top.add(k, 1));
            AggregateValue::TopK(top)
        };
        let cases = vec![
            (
                counts(&[("a", 1), ("bb", 1)]),
                counts(&[("bb", 2), ("ccc", 1)]),
            ),
            (range(&["x", "y"]), range(&["y", "zz"])),
            // 900 + 900 overlapping by 400 crosses the exact limit: the set
            // becomes a sketch, and the size may shrink.
            (distinct(0, 900), distinct(500, 1_400)),
            (distinct(0, 10), distinct(5, 20)),
            (top(&["a", "b"]), top(&["c", "d", "e"])),
            (
                AggregateValue::Stack(stack(1, &[("cmd.exe", "h1")])),
                AggregateValue::Stack(stack(1, &[("cmd.exe", "h2"), ("rare.exe", "h3")])),
            ),
        ];
        for (first, second) in cases {
            let mut merged = Merged::new();
            let grown = merge_into_measured(&mut merged, Aggregate::new("n", first)).unwrap();
            // A new name counts its own length too.
            assert_eq!(grown, merged["n"].approx_bytes() as i64 + 1);
            let before = merged["n"].approx_bytes() as i64;
            let change = merge_into_measured(&mut merged, Aggregate::new("n", second)).unwrap();
            assert_eq!(
                change,
                merged["n"].approx_bytes() as i64 - before,
                "{}",
                merged["n"].kind()
            );
        }
    }

    #[test]
    fn counts_add_and_mismatched_kinds_are_refused_unchanged() {
        let mut merged = Merged::new();
        merge_into(
            &mut merged,
            Aggregate::new("by", counts(&[("a", 1), ("b", u64::MAX)])),
        )
        .unwrap();
        merge_into(
            &mut merged,
            Aggregate::new("by", counts(&[("b", 1), ("c", 2)])),
        )
        .unwrap();
        assert_eq!(merged["by"], counts(&[("a", 1), ("b", u64::MAX), ("c", 2)]));
        let err = merge_into(
            &mut merged,
            Aggregate::new("by", AggregateValue::Stack(Stack::new(2))),
        )
        .unwrap_err();
        assert_eq!((err.merged, err.partial), ("counts", "stack"));
        assert!(err.to_string().contains("one kind from every task"));
        assert_eq!(merged["by"], counts(&[("a", 1), ("b", u64::MAX), ("c", 2)]));
    }

    #[test]
    fn distinct_is_exact_while_small_and_a_sketch_beyond() {
        let mut a = DistinctValues::default();
        let mut b = DistinctValues::default();
        for i in 0..600 {
            a.insert(&format!("10.1.{i}"));
            b.insert(&format!("10.1.{}", i + 500));
        }
        assert!(a.is_exact() && b.is_exact());
        let mut small = a.clone();
        small.merge(DistinctValues::Exact(
            ["10.1.0".to_owned(), "x".to_owned()].into(),
        ));
        assert_eq!(small.count(), 601);
        assert!(small.is_exact());
        a.merge(b.clone());
        assert!(!a.is_exact(), "1100 values exceed the exact limit");
        let estimate = a.count() as f64;
        assert!((estimate - 1100.0).abs() < 55.0, "{estimate}");
        // Mixing a sketch and an exact set in either order gives the same sketch.
        let mut big = DistinctValues::default();
        for i in 0..2_000 {
            big.insert(&format!("v{i}"));
        }
        assert!(!big.is_exact());
        let mut left = big.clone();
        left.merge(b.clone());
        let mut right = b;
        right.merge(big);
        assert_eq!(left, right);
    }

    #[test]
    fn top_k_lists_the_heaviest_keys_with_sound_error_bounds() {
        // Three shards; key `spread` is light everywhere but heavy overall.
        let mut shards = Vec::new();
        for shard in 0..3u64 {
            let mut top = TopK::new(2);
            for key in 0..40u64 {
                top.add(&format!("noise-{shard}-{key}"), 5 + key % 3);
            }
            top.add("heavy", 100 + shard);
            top.add("spread", 30);
            let mut value = AggregateValue::TopK(top);
            value.normalise().unwrap();
            shards.push(value);
        }
        let forward = merge_all(shards.clone());
        shards.reverse();
        let (AggregateValue::TopK(top), AggregateValue::TopK(backward)) =
            (forward, merge_all(shards))
        else {
            panic!("top-k merges to top-k")
        };
        assert_eq!(
            top.top(),
            backward.top(),
            "the listed keys do not depend on the order"
        );
        let listed = top.top();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0],
            (
                "heavy",
                TopEntry {
                    count: 303,
                    error: 0
                }
            )
        );
        assert_eq!(
            listed[1],
            (
                "spread",
                TopEntry {
                    count: 90,
                    error: 0
                }
            )
        );
        assert!(top.entries.len() <= top.capacity());
        assert!(
            top.floor <= 7 * 3,
            "no cut key can exceed three shards' floors: {}",
            top.floor
        );
    }

    #[test]
    fn top_k_error_covers_what_a_partial_cut() {
        let mut a = TopK::new(1);
        for i in 0..16 {
            a.add(&format!("k{i:02}"), 10);
        }
        a.add("late", 9);
        a.truncate();
        assert_eq!(a.floor, 9, "`late` was cut with 9");
        let mut b = TopK::new(1);
        b.add("late", 50);
        a.merge(b);
        let late = a.entries["late"];
        assert_eq!(
            late,
            TopEntry {
                count: 50,
                error: 9
            }
        );
        let true_count = 9 + 50;
        assert!(late.count <= true_count && true_count <= late.count + late.error);
        let mut value = AggregateValue::TopK(TopK::new(0));
        assert!(value.normalise().unwrap_err().contains("k from 1"));
    }

    #[test]
    fn range_keeps_first_and_last_seen() {
        let mut a = BTreeMap::new();
        a.insert("host".to_owned(), RangeStats::of(50));
        let mut b = BTreeMap::new();
        let mut stats = RangeStats::of(70);
        stats.observe(-5);
        b.insert("host".to_owned(), stats);
        let merged = merge_all(vec![AggregateValue::Range(a), AggregateValue::Range(b)]);
        let AggregateValue::Range(ranges) = merged else {
            panic!()
        };
        assert_eq!(
            ranges["host"],
            RangeStats {
                min: -5,
                max: 70,
                count: 3
            }
        );
        let mut bad = AggregateValue::Range(
            [(
                "k".to_owned(),
                RangeStats {
                    min: 2,
                    max: 1,
                    count: 1,
                },
            )]
            .into(),
        );
        assert!(
            bad.normalise()
                .unwrap_err()
                .contains("minimum above its maximum")
        );
    }

    #[test]
    fn stacking_finds_values_rare_across_all_shards_only() {
        // `tool.exe` is on one host in each of two shards: rare in each,
        // and still rare (2 hosts) after the merge. `cmd.exe` is on two
        // hosts per shard: rare in each shard, common across the hunt.
        let a = stack(
            2,
            &[
                ("cmd.exe", "h1"),
                ("cmd.exe", "h2"),
                ("tool.exe", "h1"),
                ("tool.exe", "h1"),
            ],
        );
        let b = stack(
            2,
            &[("cmd.exe", "h3"), ("cmd.exe", "h4"), ("tool.exe", "h3")],
        );
        let c = stack(2, &[("odd.exe", "h5")]);
        let parts = vec![
            AggregateValue::Stack(a),
            AggregateValue::Stack(b),
            AggregateValue::Stack(c),
        ];
        let merged = merge_all(parts.clone());
        let mut reversed = parts;
        reversed.reverse();
        assert_eq!(merge_all(reversed), merged);
        let AggregateValue::Stack(stack) = merged else {
            panic!()
        };
        let rare: Vec<(&str, Vec<&str>)> = stack
            .rare()
            .into_iter()
            .map(|(value, entry)| (value, entry.hosts.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            rare,
            [("odd.exe", vec!["h5"]), ("tool.exe", vec!["h1", "h3"])]
        );
        assert_eq!(stack.common_values(), 1);
        assert_eq!(stack.entries["cmd.exe"].events, 4);
        assert!(
            stack.entries["cmd.exe"].hosts.is_empty(),
            "common values forget their hosts"
        );
        assert_eq!(stack.entries["tool.exe"].events, 3);
    }

    #[test]
    fn stacks_with_different_thresholds_merge_under_the_stricter() {
        let mut a = stack(5, &[("x", "h1"), ("x", "h2"), ("x", "h3")]);
        a.merge(stack(2, &[("y", "h1")]));
        assert_eq!(a.max_hosts, 2);
        assert!(a.entries["x"].common);
        assert_eq!(a.rare().len(), 1);
    }

    #[test]
    fn observing_many_events_at_once_records_what_one_by_one_does() {
        let seen = [
            ("x", "h1"),
            ("x", "h1"),
            ("x", "h2"),
            ("y", "h1"),
            ("z", "h1"),
            ("z", "h2"),
            ("z", "h3"),
            ("z", "h3"),
        ];
        let one_by_one = stack(2, &seen);
        let mut at_once = Stack::new(2);
        at_once.observe_many("x", ["h2", "h1"], 3);
        at_once.observe_many("y", ["h1"], 1);
        at_once.observe_many("z", ["h3", "h1", "h2"], 4);
        assert_eq!(at_once, one_by_one);
        assert!(at_once.entries["z"].common);
        assert!(at_once.entries["z"].hosts.is_empty());
        assert_eq!(at_once.entries["x"].events, 3);
        // Adding to an existing value keeps counting from it.
        at_once.observe_many("y", ["h1", "h4"], 2);
        assert_eq!(at_once.entries["y"].events, 3);
        assert_eq!(at_once.entries["y"].hosts.len(), 2);
    }

    #[test]
    fn normalise_bounds_foreign_values() {
        let hosts: BTreeSet<String> = (0..10).map(|i| format!("h{i}")).collect();
        let mut value = AggregateValue::Stack(Stack {
            max_hosts: 3,
            entries: [(
                "v".to_owned(),
                StackEntry {
                    hosts,
                    common: false,
                    events: 10,
                },
            )]
            .into(),
        });
        value.normalise().unwrap();
        let AggregateValue::Stack(stack) = &value else {
            panic!()
        };
        assert!(stack.entries["v"].common);
        let many: BTreeSet<String> = (0..5_000).map(|i| format!("v{i}")).collect();
        let mut value =
            AggregateValue::Distinct([("k".to_owned(), DistinctValues::Exact(many))].into());
        value.normalise().unwrap();
        let AggregateValue::Distinct(keys) = &value else {
            panic!()
        };
        assert!(!keys["k"].is_exact());
        assert!(value.approx_bytes() >= 4096);
    }
}
