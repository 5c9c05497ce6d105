//! Mergeable aggregates beyond plain counts: distinct counts, top-k,
//! min/max (first/last seen) and stacking. Each builds its partial with the
//! merge rules of [`quarry_contract::aggregate`], the same code the
//! coordinator merges with, and converts into a WIT [`Aggregate`] for
//! [`Output::aggregate`](crate::Output::aggregate).

use std::collections::BTreeMap;

use quarry_contract::aggregate::{self as contract, DistinctValues, RangeStats};

use crate::{Aggregate, AggregateValue};

/// Distinct values per key, for example destination addresses per source.
/// Exact up to 1000 values per key, a HyperLogLog sketch (about 1.6% error)
/// beyond; the coordinator merges partials by union.
///
/// ```
/// use quarry_sdk::Distinct;
///
/// let mut destinations = Distinct::new("destinations_by_source");
/// destinations.insert("10.0.0.5", "192.0.2.1");
/// destinations.insert("10.0.0.5", "192.0.2.2");
/// destinations.insert("10.0.0.5", "192.0.2.1");
/// assert_eq!(destinations.count("10.0.0.5"), 2);
/// assert_eq!(destinations.count("10.0.0.6"), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distinct {
    name: String,
    keys: BTreeMap<String, DistinctValues>,
}

impl Distinct {
    /// No values yet, returned under the aggregate name `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Distinct {
            name: name.into(),
            keys: BTreeMap::new(),
        }
    }

    /// Records `value` for `key`.
    pub fn insert(&mut self, key: &str, value: &str) {
        match self.keys.get_mut(key) {
            Some(values) => values.insert(value),
            None => {
                let mut values = DistinctValues::default();
                values.insert(value);
                self.keys.insert(key.to_owned(), values);
            }
        }
    }

    /// Distinct values of `key` so far (estimated once past the exact limit).
    pub fn count(&self, key: &str) -> u64 {
        self.keys.get(key).map_or(0, DistinctValues::count)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl From<Distinct> for Aggregate {
    fn from(distinct: Distinct) -> Aggregate {
        to_wit(contract::Aggregate::new(
            distinct.name,
            contract::AggregateValue::Distinct(distinct.keys),
        ))
    }
}

/// The `k` keys with the most occurrences across the hunt (approximate: each
/// task returns its 4k heaviest keys with an error bound, see
/// [`quarry_contract::TopK`]).
///
/// ```
/// use quarry_sdk::TopK;
///
/// let mut talkers = TopK::new("top_talkers", 2);
/// talkers.add("10.0.0.5", 40);
/// talkers.increment("10.0.0.6");
/// talkers.add("10.0.0.7", 7);
/// assert_eq!(talkers.top(), [("10.0.0.5", 40), ("10.0.0.7", 7)]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopK {
    name: String,
    top: contract::TopK,
}

impl TopK {
    /// An empty top-`k` named `name`; `k` is clamped to 1..=10000.
    pub fn new(name: impl Into<String>, k: u32) -> Self {
        TopK {
            name: name.into(),
            top: contract::TopK::new(k.clamp(1, contract::MAX_TOP_K)),
        }
    }

    /// Adds `n` occurrences of `key`.
    pub fn add(&mut self, key: &str, n: u64) {
        self.top.add(key, n);
    }

    /// Adds one occurrence of `key`.
    pub fn increment(&mut self, key: &str) {
        self.add(key, 1);
    }

    /// This task's `k` heaviest keys and their counts, heaviest first.
    pub fn top(&self) -> Vec<(&str, u64)> {
        self.top
            .top()
            .into_iter()
            .map(|(key, entry)| (key, entry.count))
            .collect()
    }
}

impl From<TopK> for Aggregate {
    fn from(top: TopK) -> Aggregate {
        let mut top_k = top.top;
        // A task keeps counts of every key it saw; only its heaviest travel.
        top_k.truncate();
        to_wit(contract::Aggregate::new(
            top.name,
            contract::AggregateValue::TopK(top_k),
        ))
    }
}

/// Minimum, maximum and number of observations per key. With event
/// timestamps it gives first and last seen (of an account, a host pair, a
/// domain) across the whole hunt.
///
/// ```
/// use quarry_sdk::MinMax;
///
/// let mut seen = MinMax::new("logon_first_last_seen");
/// seen.observe("alice", 1_700_000_060_000);
/// seen.observe("alice", 1_700_000_000_000);
/// let alice = seen.get("alice").unwrap();
/// assert_eq!((alice.min, alice.max, alice.count), (1_700_000_000_000, 1_700_000_060_000, 2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinMax {
    name: String,
    keys: BTreeMap<String, RangeStats>,
}

impl MinMax {
    /// No observations yet, returned under the aggregate name `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MinMax {
            name: name.into(),
            keys: BTreeMap::new(),
        }
    }

    /// Records `value` for `key`.
    pub fn observe(&mut self, key: &str, value: i64) {
        match self.keys.get_mut(key) {
            Some(stats) => stats.observe(value),
            None => {
                self.keys.insert(key.to_owned(), RangeStats::of(value));
            }
        }
    }

    /// The stats of `key`, if observed.
    pub fn get(&self, key: &str) -> Option<RangeStats> {
        self.keys.get(key).copied()
    }
}

impl From<MinMax> for Aggregate {
    fn from(min_max: MinMax) -> Aggregate {
        to_wit(contract::Aggregate::new(
            min_max.name,
            contract::AggregateValue::Range(min_max.keys),
        ))
    }
}

/// Stacking: values (process images, service names, autorun entries) by the
/// hosts they were seen on. After merging every task, the coordinator reports
/// the values seen on at most `max_hosts` hosts across the hunt: the long
/// tail that no single shard can see.
///
/// ```
/// use quarry_sdk::Stack;
///
/// let mut images = Stack::new("process_images", 2);
/// images.observe("c:\\windows\\system32\\svchost.exe", "ws01");
/// images.observe("c:\\users\\bob\\appdata\\x.exe", "ws02");
/// assert_eq!(images.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    name: String,
    stack: contract::Stack,
}

impl Stack {
    /// An empty stack named `name` whose merged result lists values seen on
    /// at most `max_hosts` hosts.
    pub fn new(name: impl Into<String>, max_hosts: u32) -> Self {
        Stack {
            name: name.into(),
            stack: contract::Stack::new(max_hosts),
        }
    }

    /// Records that `value` was seen on `host`. Normalise both (case, path
    /// form) so that partials of different shards line up.
    pub fn observe(&mut self, value: &str, host: &str) {
        self.stack.observe(value, host);
    }

    /// Records that `value` was seen in `events` events on `hosts`, as
    /// that many [`Stack::observe`] calls would: for a module that counts
    /// per value while it scans and stacks once in `finish`.
    pub fn observe_many<'h>(
        &mut self,
        value: &str,
        hosts: impl IntoIterator<Item = &'h str>,
        events: u64,
    ) {
        self.stack.observe_many(value, hosts, events);
    }

    /// Number of distinct values.
    pub fn len(&self) -> usize {
        self.stack.entries.len()
    }

    /// Whether nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.stack.entries.is_empty()
    }
}

impl From<Stack> for Aggregate {
    fn from(stack: Stack) -> Aggregate {
        to_wit(contract::Aggregate::new(
            stack.name,
            contract::AggregateValue::Stack(stack.stack),
        ))
    }
}

impl Aggregate {
    /// The counts of a counts aggregate (empty for other kinds): for tests.
    pub fn counts(&self) -> &[(String, u64)] {
        match &self.value {
            AggregateValue::Counts(counts) => counts,
            _ => &[],
        }
    }
}

/// Merges the aggregates of several tasks by name, exactly as the
/// coordinator does: for tests that run a module over several shards.
/// Fails on a name returned with two kinds, or on a malformed aggregate.
pub fn merge(aggregates: impl IntoIterator<Item = Aggregate>) -> Result<contract::Merged, String> {
    let mut merged = contract::Merged::new();
    for aggregate in aggregates {
        let name = aggregate.name.clone();
        let aggregate = from_wit(aggregate)?;
        contract::merge_into(&mut merged, aggregate)
            .map_err(|mismatch| format!("aggregate `{name}`: {mismatch}"))?;
    }
    Ok(merged)
}

/// The WIT form of a contract aggregate.
pub fn to_wit(aggregate: contract::Aggregate) -> Aggregate {
    Aggregate {
        name: aggregate.name,
        value: value_to_wit(aggregate.value),
    }
}

/// The WIT form of a contract aggregate's value.
pub fn value_to_wit(value: contract::AggregateValue) -> AggregateValue {
    quarry_contract::aggregate_value_to_wit!(value, crate::bindings::quarry::hunt::types)
}

/// A correlation's partial state (see [`crate::correlation`]) as the
/// task's aggregate: `out.aggregate(correlation)` in `finish`.
impl From<quarry_contract::correlation::Correlation> for Aggregate {
    fn from(correlation: quarry_contract::correlation::Correlation) -> Self {
        let (name, value) = correlation.into_counts();
        Aggregate {
            name,
            value: value_to_wit(value),
        }
    }
}

/// The contract form of a WIT aggregate, normalised; refuses what no SDK
/// builds (a malformed sketch, k out of range), as the worker does.
pub fn from_wit(aggregate: Aggregate) -> Result<contract::Aggregate, String> {
    quarry_contract::aggregate_from_wit!(aggregate, crate::bindings::quarry::hunt::types)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counts;
    use crate::bindings::quarry::hunt::types as wit;

    #[test]
    fn every_kind_survives_the_wit_round_trip() {
        let mut distinct = Distinct::new("d");
        for i in 0..1_500 {
            distinct.insert("big", &format!("v{i}"));
        }
        distinct.insert("small", "x");
        let mut top = TopK::new("t", 1);
        for i in 0..40 {
            top.add(&format!("k{i}"), i);
        }
        let mut min_max = MinMax::new("m");
        min_max.observe("a", 5);
        let mut stack = Stack::new("s", 1);
        stack.observe("v", "h1");
        stack.observe("v", "h2");
        stack.observe("w", "h1");
        let mut counts = Counts::new("c");
        counts.increment("a");
        for aggregate in [
            Aggregate::from(distinct),
            top.into(),
            min_max.into(),
            stack.into(),
            counts.into(),
        ] {
            let contract = from_wit(aggregate.clone()).unwrap();
            assert_eq!(to_wit(contract), aggregate);
        }
    }

    #[test]
    fn merge_combines_tasks_and_names_kind_conflicts() {
        let mut a = Stack::new("images", 1);
        a.observe("rare.exe", "h1");
        a.observe("cmd.exe", "h1");
        let mut b = Stack::new("images", 1);
        b.observe("cmd.exe", "h2");
        let merged = merge([a.into(), b.into()]).unwrap();
        let contract::AggregateValue::Stack(stack) = &merged["images"] else {
            panic!("a stack merges to a stack")
        };
        let rare: Vec<&str> = stack.rare().into_iter().map(|(value, _)| value).collect();
        assert_eq!(rare, ["rare.exe"]);
        let err = merge([Counts::new("x").into(), Stack::new("x", 1).into()]).unwrap_err();
        assert!(
            err.starts_with("aggregate `x`: a partial result of kind `stack`"),
            "{err}"
        );
        let bad = Aggregate {
            name: "d".into(),
            value: AggregateValue::Distinct(vec![(
                "k".into(),
                wit::DistinctValues::Sketch(vec![1, 2]),
            )]),
        };
        assert!(merge([bad]).unwrap_err().contains("4096 registers"));
    }
}
