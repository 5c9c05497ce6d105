//! Maps that remember which keys changed, so the coordinator can persist
//! only the rows a command touched (see [`crate::rows`]).
//!
//! A [`Tracked`] map reads like a `BTreeMap` (it derefs to one) but can only
//! be changed through methods that record the key: there is no `iter_mut`,
//! `values_mut` or `entry`, so a mutation that forgets to mark its row does
//! not compile. The record of changed keys is not part of the value: it is
//! ignored by equality and by serde, so two replicas that applied the same
//! calls are equal whenever they drained their records.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Deref;

/// Bookkeeping that is not part of the state: always equal, never
/// serialized (a field of this type takes `#[serde(skip)]`), printed as
/// `Dirty`.
#[derive(Clone, Default)]
pub struct Dirty<T>(pub(crate) T);

impl<T> PartialEq for Dirty<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Dirty<T> {}

impl<T> fmt::Debug for Dirty<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dirty")
    }
}

/// A `BTreeMap` that records every key inserted, changed or removed since
/// its record was last taken.
#[derive(Clone)]
pub struct Tracked<K: Ord, V> {
    map: BTreeMap<K, V>,
    dirty: Dirty<BTreeSet<K>>,
}

impl<K: Ord, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            dirty: Dirty(BTreeSet::new()),
        }
    }
}

impl<K: Ord, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Ord, V: Eq> Eq for Tracked<K, V> {}

impl<K: Ord + fmt::Debug, V: fmt::Debug> fmt::Debug for Tracked<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.map.fmt(f)
    }
}

impl<K: Ord, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: Ord, V> From<BTreeMap<K, V>> for Tracked<K, V> {
    /// Wraps a map with nothing recorded as changed.
    fn from(map: BTreeMap<K, V>) -> Self {
        Tracked {
            map,
            dirty: Dirty(BTreeSet::new()),
        }
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for Tracked<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Tracked::from(iter.into_iter().collect::<BTreeMap<K, V>>())
    }
}

impl<K: Ord + Clone, V> Tracked<K, V> {
    /// The value of `key` to change; records `key` if it is there.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let value = self.map.get_mut(key)?;
        self.dirty.0.insert(key.to_owned());
        Some(value)
    }

    /// The value of `key` to change, inserting `make()` if there is none;
    /// records `key`.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.dirty.0.insert(key.clone());
        self.map.entry(key).or_insert_with(make)
    }

    /// Inserts or replaces; records `key`.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.dirty.0.insert(key.clone());
        self.map.insert(key, value)
    }

    /// Removes `key`; records it if it was there.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let value = self.map.remove(key)?;
        self.dirty.0.insert(key.to_owned());
        Some(value)
    }

    /// Keeps the entries `keep` accepts (it sees them read-only); records
    /// the removed keys.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let dirty = &mut self.dirty.0;
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                dirty.insert(k.clone());
            }
            kept
        });
    }

    /// Changes, with `change`, the entries `needs` selects (both see each
    /// entry; only the selected ones are recorded). Returns how many.
    pub fn update_where(
        &mut self,
        mut needs: impl FnMut(&K, &V) -> bool,
        mut change: impl FnMut(&K, &mut V),
    ) -> usize {
        let mut n = 0;
        for (k, v) in self.map.iter_mut() {
            if needs(k, v) {
                change(k, v);
                self.dirty.0.insert(k.clone());
                n += 1;
            }
        }
        n
    }
}

impl<K: Ord, V> Tracked<K, V> {
    /// The keys changed since the last call, in order; clears the record.
    pub fn take_dirty(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.dirty.0)
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for Tracked<K, V> {
    /// Exactly as the plain map (the record is not part of the state).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(serializer)
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Tracked<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Tracked::from)
    }
}

/// `#[serde(with = "crate::tracked::pairs")]`: a [`Tracked`] map as a list
/// of `[key, value]` pairs, for keys that are structs (JSON objects only
/// take string keys); the same bytes as [`crate::bounded::pairs`].
pub mod pairs {
    use super::*;

    /// Writes the map as pairs, in key order.
    pub fn serialize<K, V, S>(map: &Tracked<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Ord + Serialize,
        V: Serialize,
        S: Serializer,
    {
        crate::bounded::pairs::serialize(&map.map, serializer)
    }

    /// Reads the pairs back, with nothing recorded as changed.
    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<Tracked<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        crate::bounded::pairs::deserialize(deserializer).map(Tracked::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_recorded_and_equality_ignores_the_record() {
        let mut a: Tracked<u32, u32> = Tracked::default();
        a.insert(1, 10);
        a.insert(2, 20);
        a.insert(3, 30);
        let b: Tracked<u32, u32> = [(1, 10), (2, 20), (3, 30)].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.take_dirty(), [1, 2, 3].into());
        assert!(a.take_dirty().is_empty());
        assert!(a.get_mut(&9).is_none());
        *a.get_mut(&2).expect("2") += 1;
        a.remove(&8);
        a.retain(|k, _| *k != 3);
        assert_eq!(a.update_where(|_, v| *v == 10, |_, v| *v = 11), 1);
        *a.get_or_insert_with(4, || 0) += 1;
        assert_eq!(a.take_dirty(), [1, 2, 3, 4].into());
        assert_eq!(*a, BTreeMap::from([(1, 11), (2, 21), (4, 1)]));
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(json, r#"{"1":11,"2":21,"4":1}"#);
        let back: Tracked<u32, u32> = serde_json::from_str(&json).expect("back");
        assert_eq!(back, a);
    }
}
