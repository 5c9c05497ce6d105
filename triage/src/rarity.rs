//! How often a rule fired and an entity showed up across the cluster's
//! recent findings: per-key counts in day buckets (event time) over the last
//! `window_days` days, with a ceiling on tracked keys. When the ceiling is
//! passed, the keys seen longest ago go first (ties by key), a tenth of the
//! ceiling at a time so eviction stays cheap.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::time::DAY_MS;
use crate::tracked::Tracked;

/// Most rules tracked.
pub const MAX_RULES: usize = 20_000;
/// Most entities tracked.
pub const MAX_ENTITIES: usize = 100_000;

/// Windowed counts per key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounter {
    pub(crate) keys: Tracked<String, KeyDays>,
}

/// One key's counts: at most one entry per day of the window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDays {
    /// Count per day number (days since the epoch).
    pub(crate) days: BTreeMap<i64, u64>,
    /// Latest day added to.
    pub(crate) last_day: i64,
}

/// The day of `ms`.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

impl DayCounter {
    /// Counts one at `ms` for `key`; drops days that left the window of
    /// `today` and, past `max_keys`, the stalest keys.
    pub fn add(&mut self, key: &str, ms: i64, today: i64, window_days: u32, max_keys: usize) {
        let day = day_of(ms);
        let oldest = today - i64::from(window_days) + 1;
        if day < oldest {
            return; // too old to ever count
        }
        let entry = self.keys.get_or_insert_with(key.to_owned(), || KeyDays {
            days: BTreeMap::new(),
            last_day: day,
        });
        *entry.days.entry(day).or_insert(0) += 1;
        entry.last_day = entry.last_day.max(day);
        entry.days.retain(|&d, _| d >= oldest);
        if self.keys.len() > max_keys {
            self.evict(max_keys - max_keys / 10);
        }
    }

    /// Findings for `key` within the window that ends at `today`.
    pub fn count(&self, key: &str, today: i64, window_days: u32) -> u64 {
        let oldest = today - i64::from(window_days) + 1;
        self.keys
            .get(key)
            .map_or(0, |k| k.days.range(oldest..).map(|(_, n)| n).sum())
    }

    /// Drops days outside the window ending at `today` and keys left empty.
    pub fn prune(&mut self, today: i64, window_days: u32) {
        let oldest = today - i64::from(window_days) + 1;
        self.keys.update_where(
            |_, k| k.days.keys().next().is_some_and(|&d| d < oldest),
            |_, k| k.days.retain(|&d, _| d >= oldest),
        );
        self.keys.retain(|_, k| !k.days.is_empty());
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn evict(&mut self, keep: usize) {
        let mut by_age: Vec<(i64, &String)> =
            self.keys.iter().map(|(k, v)| (v.last_day, k)).collect();
        by_age.sort();
        let drop: Vec<String> = by_age
            .iter()
            .take(self.keys.len().saturating_sub(keep))
            .map(|(_, k)| (*k).clone())
            .collect();
        for k in drop {
            self.keys.remove(&k);
        }
    }
}

/// Rarity counters of rules and entities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rarity {
    /// Findings per rule.
    pub rules: DayCounter,
    /// Findings per grouping entity.
    pub entities: DayCounter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_within_the_window() {
        let mut c = DayCounter::default();
        for day in 0..10 {
            c.add("r", day * DAY_MS, day, 7, 100);
        }
        assert_eq!(c.count("r", 9, 7), 7);
        assert_eq!(c.count("r", 20, 7), 0);
        c.prune(20, 7);
        assert!(c.is_empty());
        // A finding older than the window is not counted at all.
        c.add("r", 0, 20, 7, 100);
        assert_eq!(c.count("r", 20, 7), 0);
    }

    #[test]
    fn the_stalest_keys_go_first_past_the_ceiling() {
        let mut c = DayCounter::default();
        for i in 0..11 {
            c.add(&format!("k{i:02}"), i * DAY_MS, 10, 30, 10);
        }
        assert_eq!(c.len(), 9);
        assert_eq!(c.count("k00", 10, 30), 0);
        assert_eq!(c.count("k01", 10, 30), 0);
        assert_eq!(c.count("k10", 10, 30), 1);
    }
}
