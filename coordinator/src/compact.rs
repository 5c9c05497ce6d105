//! Small sorted collections for what the state holds once per shard.
//!
//! A 100,000-shard cluster keeps 100,000 label maps and holder sets on every
//! replica, nearly all with one to three entries. A `BTreeMap` or `BTreeSet`
//! allocates a whole node (eleven slots, about 540 bytes for string pairs)
//! for its first entry; a sorted `Vec` allocates what it holds. Both
//! serialise exactly as the B-tree types did (a map, a sequence), so stored
//! rows and snapshots read back unchanged.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Labels of a shard (`host=ws01`), sorted by key, one value per key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|at| &self.0[at].1)
    }

    /// Every label, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// As a map (what triage takes).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

impl FromIterator<(String, String)> for Labels {
    /// Sorted by key; of repeated keys the last value wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        pairs.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Labels(map.into_iter().collect())
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(deserializer)?.into())
    }
}

/// A sorted set without repeats, for a handful of items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmallSet<T: Ord>(Vec<T>);

impl<T: Ord> Default for SmallSet<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Ord> SmallSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `item`; returns whether it was new.
    pub fn insert(&mut self, item: T) -> bool {
        match self.0.binary_search(&item) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, item);
                true
            }
        }
    }

    /// Removes `item`; returns whether it was there.
    pub fn remove(&mut self, item: &T) -> bool {
        match self.0.binary_search(item) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `item` is in the set.
    pub fn contains(&self, item: &T) -> bool {
        self.0.binary_search(item).is_ok()
    }

    /// The items, sorted.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Ord> FromIterator<T> for SmallSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut items: Vec<T> = items.into_iter().collect();
        items.sort();
        items.dedup();
        Self(items)
    }
}

impl<T: Ord + Serialize> Serialize for SmallSet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for SmallSet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<T>::deserialize(deserializer)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn labels_read_and_write_the_bytes_a_b_tree_map_did() {
        let map: BTreeMap<String, String> = [("site", "eu"), ("host", "ws01")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let old = bincode::serialize(&map).expect("encode");
        let labels: Labels = bincode::deserialize(&old).expect("decode");
        assert_eq!(labels.get("host").map(String::as_str), Some("ws01"));
        assert_eq!(labels.get("rack"), None);
        assert_eq!(bincode::serialize(&labels).expect("encode"), old);
        assert_eq!(labels.to_map(), map);
    }

    #[test]
    fn a_small_set_reads_and_writes_the_bytes_a_b_tree_set_did() {
        let set: BTreeSet<String> = ["w2", "w1"].map(String::from).into();
        let old = bincode::serialize(&set).expect("encode");
        let mut small: SmallSet<String> = bincode::deserialize(&old).expect("decode");
        assert_eq!(bincode::serialize(&small).expect("encode"), old);
        assert!(!small.insert("w1".into()));
        assert!(small.insert("w0".into()));
        assert!(small.remove(&"w2".to_owned()));
        assert!(!small.remove(&"w2".to_owned()));
        assert_eq!(
            small.iter().map(String::as_str).collect::<Vec<_>>(),
            ["w0", "w1"]
        );
        assert!(small.contains(&"w0".to_owned()));
    }
}
