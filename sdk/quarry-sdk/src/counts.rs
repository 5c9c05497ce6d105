//! Mergeable counts by key, returned as a WIT `aggregate`.

use std::collections::BTreeMap;

use crate::{Aggregate, AggregateValue};

/// Counts by key, for example failed logons per account.
///
/// Each task returns its partial counts; the coordinator adds the partial
/// counts of all tasks with the same aggregate name, without running guest
/// code. Counts saturate at `u64::MAX` instead of overflowing.
///
/// Keys are compared exactly: normalise them (case, domain prefixes) before
/// counting so that the partial results of different shards line up.
///
/// ```
/// use quarry_sdk::Counts;
///
/// let mut counts = Counts::new("failures_by_account");
/// counts.increment("WIN\\admin");
/// counts.add("WIN\\admin", 2);
/// counts.increment("WIN\\bob");
/// assert_eq!(counts.get("WIN\\admin"), 3);
/// assert_eq!(counts.total(), 4);
///
/// let aggregate: quarry_sdk::Aggregate = counts.into();
/// assert_eq!(aggregate.name, "failures_by_account");
/// let quarry_sdk::AggregateValue::Counts(counts) = aggregate.value else { unreachable!() };
/// assert_eq!(counts[0], ("WIN\\admin".to_owned(), 3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    name: String,
    counts: BTreeMap<String, u64>,
}

impl Counts {
    /// Empty counts, returned under the aggregate name `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Counts {
            name: name.into(),
            counts: BTreeMap::new(),
        }
    }

    /// The aggregate name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `n` to the count of `key`.
    pub fn add(&mut self, key: &str, n: u64) {
        // Look up by `&str` first so that counting an existing key does not
        // allocate; that is the hot path.
        match self.counts.get_mut(key) {
            Some(count) => *count = count.saturating_add(n),
            None => {
                self.counts.insert(key.to_owned(), n);
            }
        }
    }

    /// Adds one to the count of `key`.
    pub fn increment(&mut self, key: &str) {
        self.add(key, 1);
    }

    /// The count of `key` (zero when never counted).
    pub fn get(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// The sum of all counts (saturating).
    pub fn total(&self) -> u64 {
        self.counts
            .values()
            .fold(0u64, |sum, &count| sum.saturating_add(count))
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Keys and counts, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts
            .iter()
            .map(|(key, &count)| (key.as_str(), count))
    }

    /// Adds all counts of `other` into `self`, as the coordinator does with
    /// partial results; `self` keeps its name.
    pub fn merge(&mut self, other: &Counts) {
        for (key, count) in other.iter() {
            self.add(key, count);
        }
    }

    /// Counts from a WIT aggregate; counts of a key listed twice are added.
    /// `None` when the aggregate holds another kind.
    pub fn from_aggregate(aggregate: Aggregate) -> Option<Self> {
        let AggregateValue::Counts(pairs) = aggregate.value else {
            return None;
        };
        let mut counts = Counts::new(aggregate.name);
        for (key, count) in pairs {
            counts.add(&key, count);
        }
        Some(counts)
    }

    /// The WIT aggregate, keys in sorted order (so output is deterministic).
    pub fn into_aggregate(self) -> Aggregate {
        Aggregate {
            name: self.name,
            value: AggregateValue::Counts(self.counts.into_iter().collect()),
        }
    }
}

impl From<Counts> for Aggregate {
    fn from(counts: Counts) -> Aggregate {
        counts.into_aggregate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_partial_counts() {
        let mut a = Counts::new("by_host");
        a.add("ws01", 2);
        a.increment("ws02");
        let mut b = Counts::new("by_host");
        b.add("ws02", 5);
        b.increment("ws03");
        a.merge(&b);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("ws01", 2), ("ws02", 6), ("ws03", 1)]
        );
        assert_eq!(a.len(), 3);
        assert_eq!(a.total(), 9);
        assert_eq!(a.get("nope"), 0);
    }

    #[test]
    fn counts_saturate() {
        let mut c = Counts::new("x");
        c.add("k", u64::MAX);
        c.increment("k");
        c.increment("j");
        assert_eq!(c.get("k"), u64::MAX);
        assert_eq!(c.total(), u64::MAX);
    }

    #[test]
    fn aggregate_round_trip_merges_duplicate_keys() {
        let aggregate = Aggregate {
            name: "x".to_owned(),
            value: AggregateValue::Counts(vec![
                ("b".to_owned(), 1),
                ("a".to_owned(), 2),
                ("b".to_owned(), 3),
            ]),
        };
        let counts = Counts::from_aggregate(aggregate).unwrap();
        assert_eq!(counts.name(), "x");
        assert!(!counts.is_empty());
        assert_eq!(
            counts.into_aggregate().value,
            AggregateValue::Counts(vec![("a".to_owned(), 2), ("b".to_owned(), 4)])
        );
    }
}
