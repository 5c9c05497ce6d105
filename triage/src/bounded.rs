//! Containers with a ceiling, so that one loud rule or entity cannot grow the
//! replicated state without bound, and a serde helper for maps whose keys are
//! not strings (JSON objects only take string keys).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A sorted set that keeps at most `cap` items: the first ones inserted
/// (later ones are counted, not kept), so what an alert shows never changes
/// once it is there.
///
/// A sorted `Vec`, not a `BTreeSet`: an alert holds six of these, mostly
/// with one or two items, and a B-tree allocates a whole node (eleven
/// slots) for its first item. Serialised as a sequence either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct BoundedSet<T: Ord> {
    #[serde(deserialize_with = "sorted")]
    items: Vec<T>,
    cap: u32,
    /// Distinct items refused because the set was full (an item seen twice
    /// after the set filled up is counted twice: the set no longer knows it).
    overflow: u64,
}

impl<T: Ord> BoundedSet<T> {
    /// An empty set holding at most `cap` items.
    pub fn new(cap: u32) -> Self {
        Self {
            items: Vec::new(),
            cap,
            overflow: 0,
        }
    }

    /// Adds `item`; returns whether it was new and kept.
    pub fn insert(&mut self, item: T) -> bool {
        let Err(at) = self.items.binary_search(&item) else {
            return false;
        };
        if self.items.len() >= self.cap as usize {
            self.overflow += 1;
            return false;
        }
        self.items.insert(at, item);
        true
    }

    /// Whether `item` is kept.
    pub fn contains(&self, item: &T) -> bool {
        self.items.binary_search(item).is_ok()
    }

    /// The kept items, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items refused because the set was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Removes `item`.
    pub fn remove(&mut self, item: &T) -> bool {
        match self.items.binary_search(item) {
            Ok(at) => {
                self.items.remove(at);
                true
            }
            Err(_) => false,
        }
    }
}

/// Reads a set's items back sorted and without repeats, whatever wrote them.
fn sorted<'de, T, D>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    T: Deserialize<'de> + Ord,
    D: serde::Deserializer<'de>,
{
    let mut items: Vec<T> = Vec::deserialize(deserializer)?;
    items.sort();
    items.dedup();
    items.shrink_to_fit();
    Ok(items)
}

/// `#[serde(with = "crate::bounded::pairs")]`: a `BTreeMap` as a list of
/// `[key, value]` pairs, for keys that are structs or tuples.
pub mod pairs {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Writes the map as pairs, in key order.
    pub fn serialize<K, V, S>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        S: Serializer,
    {
        serializer.collect_seq(map.iter())
    }

    /// Reads the pairs back.
    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, V)> = Vec::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the
/// cut with `…`.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_set_keeps_the_first_items() {
        let mut s = BoundedSet::new(2);
        assert!(s.insert("b"));
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        assert!(!s.insert("c"));
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s.overflow(), 1);
    }

    #[test]
    fn a_set_reads_back_sorted_from_what_a_b_tree_wrote() {
        // Rows written when the items were a `BTreeSet` read back the same.
        let old = r#"{"items":["b","a","b"],"cap":3,"overflow":0}"#;
        let s: BoundedSet<String> = serde_json::from_str(old).expect("reads");
        assert_eq!(s.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
        assert!(s.contains(&"a".to_owned()) && !s.contains(&"c".to_owned()));
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("ééééé", 6), "é…");
        assert!(clip(&"x".repeat(100), 10).len() <= 10);
    }
}
