//! The cluster's intel store (docs/intel.md): named, versioned sets of
//! indicators in the replicated state. A hunt names a set and is bound to
//! its version at submit time (the parameter `intel-ref.<name>`); workers
//! fetch that version once and cache it, so the raft log holds a set once,
//! not once per hunt and task. Deterministic: versions are numbered in
//! apply order.

use quarry_intel::{Indicator, Kind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

pub use quarry_contract::intel::REF_PREFIX;
/// Most indicators one set holds.
pub const MAX_SET_INDICATORS: usize = 500_000;
/// Most sets (names) the store keeps.
pub const MAX_SETS: usize = 1_000;
/// Versions of a set kept besides those running hunts are bound to.
pub const KEEP_VERSIONS: usize = 2;

/// One version of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelSetRecord {
    /// Set name (`a-z 0-9 _ -`, as intel sets are named everywhere).
    pub name: String,
    /// 1, 2, ... per name, in import order.
    pub version: u32,
    /// What it was read from: `stix`, `misp`, `csv:<column>`, `lines`.
    pub format: String,
    /// The file or feed it came from, for people.
    pub source: String,
    /// Who imported it, `role:name`.
    pub imported_by: String,
    /// When (leader time).
    pub imported_ms: i64,
    /// The indicators.
    pub indicators: Vec<Indicator>,
    /// Entries the import could not use.
    pub problems: u32,
    /// Entries left out on purpose (not for detection, expired, other objects).
    pub skipped: u32,
}

/// Every set's kept versions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelStore {
    /// Name -> version -> record.
    pub sets: BTreeMap<String, BTreeMap<u32, IntelSetRecord>>,
    /// Lookups over the latest versions (derived: rebuilt after a change).
    #[serde(skip)]
    index: Index,
}

/// Where each indicator of the sets' latest versions is: exact values,
/// address ranges, wildcard domains, each with its set.
#[derive(Clone, Debug, Default)]
struct Index {
    built: bool,
    exact: HashMap<String, Vec<String>>,
    ranges: Vec<((IpAddr, u8), String, String)>,
    wildcards: HashMap<String, Vec<String>>,
}

/// Equal whatever it holds: it caches what the sets say.
impl PartialEq for Index {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Index {}

impl Index {
    fn build(sets: &BTreeMap<String, BTreeMap<u32, IntelSetRecord>>) -> Self {
        let mut index = Index {
            built: true,
            ..Index::default()
        };
        for record in sets.values().filter_map(|v| v.values().next_back()) {
            for i in &record.indicators {
                match i.kind {
                    Kind::Cidr => {
                        if let Some(range) = quarry_contract::intel::cidr(&i.value) {
                            index
                                .ranges
                                .push((range, i.value.clone(), record.name.clone()));
                        }
                    }
                    Kind::WildcardDomain => index
                        .wildcards
                        .entry(i.value.trim_start_matches("*.").to_owned())
                        .or_default()
                        .push(record.name.clone()),
                    _ => index
                        .exact
                        .entry(i.value.clone())
                        .or_default()
                        .push(record.name.clone()),
                }
            }
        }
        index
    }
}

impl IntelStore {
    /// The stored indicators `value` matches, as `(set, indicator)`, over
    /// the latest version of every set: listed as it is, inside a listed
    /// range, or a subdomain of a listed `*.` domain.
    pub fn matches(&mut self, value: &str) -> Vec<(String, String)> {
        if self.sets.is_empty() {
            return Vec::new();
        }
        if !self.index.built {
            self.index = Index::build(&self.sets);
        }
        let value = quarry_contract::intel::normalise(value);
        let index = &self.index;
        let mut out: Vec<(String, String)> = index
            .exact
            .get(&value)
            .into_iter()
            .flatten()
            .map(|set| (set.clone(), value.clone()))
            .collect();
        if let Ok(address) = value.parse::<IpAddr>() {
            for (range, text, set) in &index.ranges {
                if quarry_contract::intel::in_range(address, *range) {
                    out.push((set.clone(), text.clone()));
                }
            }
        }
        for (at, _) in value.match_indices('.') {
            if let Some(sets) = index.wildcards.get(&value[at + 1..]) {
                for set in sets {
                    out.push((set.clone(), format!("*.{}", &value[at + 1..])));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The latest version of `name`.
    pub fn latest(&self, name: &str) -> Option<&IntelSetRecord> {
        self.sets.get(name)?.values().next_back()
    }

    /// Version `version` of `name`.
    pub fn get(&self, name: &str, version: u32) -> Option<&IntelSetRecord> {
        self.sets.get(name)?.get(&version)
    }

    /// Stores `record` as the next version of its name; returns the
    /// version and the versions let go (older than the last
    /// [`KEEP_VERSIONS`] and not in `bound`, the versions running hunts use).
    pub fn import(
        &mut self,
        mut record: IntelSetRecord,
        bound: &BTreeSet<(String, u32)>,
    ) -> Result<(u32, Vec<u32>), String> {
        if record.indicators.len() > MAX_SET_INDICATORS {
            return Err(format!(
                "intel set {} holds {} indicators, more than the {MAX_SET_INDICATORS} a set may; split it",
                record.name,
                record.indicators.len()
            ));
        }
        if !self.sets.contains_key(&record.name) && self.sets.len() >= MAX_SETS {
            return Err(format!(
                "the intel store keeps at most {MAX_SETS} sets; delete one first (`quarry intel delete`)"
            ));
        }
        let versions = self.sets.entry(record.name.clone()).or_default();
        let version = versions.keys().next_back().map_or(1, |last| last + 1);
        record.version = version;
        let name = record.name.clone();
        versions.insert(version, record);
        self.index = Index::default();
        let mut old: Vec<u32> = versions
            .keys()
            .rev()
            .skip(KEEP_VERSIONS)
            .filter(|v| !bound.contains(&(name.clone(), **v)))
            .copied()
            .collect();
        old.sort_unstable();
        for v in &old {
            versions.remove(v);
        }
        Ok((version, old))
    }

    /// Deletes every version of `name` no running hunt is bound to; refuses
    /// while one is.
    pub fn delete(
        &mut self,
        name: &str,
        bound: &BTreeSet<(String, u32)>,
    ) -> Result<Vec<u32>, String> {
        let Some(versions) = self.sets.get(name) else {
            return Err(format!(
                "no intel set is named {name}; `quarry intel list` shows the sets"
            ));
        };
        if let Some((_, v)) = bound.iter().find(|(set, _)| set == name) {
            return Err(format!(
                "running hunts use version {v} of intel set {name}; cancel them or wait for them to end"
            ));
        }
        let gone = versions.keys().copied().collect();
        self.sets.remove(name);
        self.index = Index::default();
        Ok(gone)
    }
}

/// The stored `(set, version)` pairs hunt parameters `params` are bound to.
pub fn refs<'a>(params: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<(String, u32)> {
    params
        .into_iter()
        .filter_map(|(key, value)| {
            quarry_contract::intel::parse_ref(key.strip_prefix(REF_PREFIX)?, value)
        })
        .collect()
}

/// The text of an intel set as a task's `intel.<name>` parameter carries
/// it: the indicators valid at `now_ms`, one per line.
pub fn set_text(record: &IntelSetRecord, now_ms: i64) -> String {
    let mut text = String::new();
    for indicator in record.indicators.iter().filter(|i| i.valid_at(now_ms)) {
        text.push_str(&indicator.value);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, values: &[&str]) -> IntelSetRecord {
        IntelSetRecord {
            name: name.into(),
            version: 0,
            format: "lines".into(),
            source: "test".into(),
            imported_by: "hunter:a".into(),
            imported_ms: 1,
            indicators: values
                .iter()
                .map(|v| Indicator::parse(v).expect("indicator"))
                .collect(),
            problems: 0,
            skipped: 0,
        }
    }

    #[test]
    fn versions_count_up_old_ones_go_unless_a_running_hunt_is_bound_to_them() {
        let mut store = IntelStore::default();
        let none = BTreeSet::new();
        assert_eq!(
            store.import(record("ips", &["10.0.0.1"]), &none),
            Ok((1, vec![]))
        );
        assert_eq!(
            store.import(record("ips", &["10.0.0.2"]), &none),
            Ok((2, vec![]))
        );
        let bound = BTreeSet::from([("ips".to_owned(), 1)]);
        assert_eq!(
            store.import(record("ips", &["10.0.0.3"]), &bound),
            Ok((3, vec![]))
        );
        assert_eq!(
            store.import(record("ips", &["10.0.0.4"]), &none),
            Ok((4, vec![1, 2]))
        );
        assert_eq!(store.latest("ips").map(|r| r.version), Some(4));
        let refused = store.delete("ips", &BTreeSet::from([("ips".to_owned(), 3)]));
        assert!(refused.expect_err("bound").contains("running hunts"));
        assert_eq!(store.delete("ips", &none), Ok(vec![3, 4]));
        assert!(store.delete("ips", &none).is_err());
    }

    #[test]
    fn values_match_exact_indicators_ranges_and_wildcards_of_the_latest_versions() {
        let mut store = IntelStore::default();
        let none = BTreeSet::new();
        store
            .import(record("feed", &["10.9.9.9"]), &none)
            .expect("v1");
        assert_eq!(
            store.matches("10.9.9.9"),
            [("feed".to_owned(), "10.9.9.9".to_owned())]
        );
        store
            .import(
                record("feed", &["198.51.100.0/24", "*.c2.example", "EVIL.example"]),
                &none,
            )
            .expect("v2");
        assert!(
            store.matches("10.9.9.9").is_empty(),
            "only the latest version counts"
        );
        assert_eq!(store.matches("198.51.100.7")[0].1, "198.51.100.0/24");
        assert_eq!(store.matches("a.b.c2.example")[0].1, "*.c2.example");
        assert!(store.matches("c2.example").is_empty());
        assert_eq!(store.matches("evil[.]example").len(), 1);
        store.delete("feed", &none).expect("delete");
        assert!(store.matches("198.51.100.7").is_empty());
    }

    #[test]
    fn a_task_gets_the_indicators_valid_at_its_time() {
        let mut r = record("ips", &["10.0.0.1", "10.0.0.2"]);
        r.indicators[1].valid_until_ms = Some(100);
        assert_eq!(set_text(&r, 50), "10.0.0.1\n10.0.0.2\n");
        assert_eq!(set_text(&r, 100), "10.0.0.1\n");
        let params = BTreeMap::from([
            ("intel-ref.ips".to_owned(), "3".to_owned()),
            ("window".to_owned(), "60".to_owned()),
        ]);
        assert_eq!(refs(&params), vec![("ips".to_owned(), 3)]);
    }
}
