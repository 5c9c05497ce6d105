//! The cluster's rule-pack store (docs/sigma.md#rule-packs): named,
//! versioned sets of Sigma rule files in the replicated state. A hunt is
//! bound to one version by one small parameter, `rule-pack-ref.<name>` =
//! `<version>:<sha256>`, so the raft log and every task assignment carry
//! the binding instead of megabytes of rules; workers fetch the pack by
//! digest once and cache it.
//!
//! Binding happens on the coordinator that takes the submit (the latest
//! version when none is named), so a pack imported later never changes a
//! hunt already submitted. A schedule pins the version current when it is
//! created, unless its template says `NAME@latest`: then each run is bound
//! to the version latest when it starts (resolved in `apply`, so every
//! replica agrees). Deterministic: versions are numbered in apply order.

use crate::state::{HuntSpec, Rejection, State};
use quarry_proto::rule_pack::{self, Binding, REF_PREFIX, Ref};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Most packs (names) the store keeps.
pub const MAX_PACKS: usize = 100;
/// Most bytes of rule text the store keeps, every kept version counted:
/// every coordinator holds the store in memory.
pub const MAX_STORE_BYTES: u64 = 256 * 1024 * 1024;
/// Versions of a pack kept besides those running hunts and schedules use.
pub const KEEP_VERSIONS: usize = 2;
/// Users named in a refusal, at most.
const USERS_NAMED: usize = 5;

/// One version of a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePackRecord {
    /// Pack name (`a-z 0-9 _ -`).
    pub name: String,
    /// 1, 2, ... per name, in import order (given at apply).
    pub version: u32,
    /// SHA-256 of the canonical content, lowercase hex.
    pub digest: String,
    /// Where it came from (the directories), for people.
    pub source: String,
    /// Who imported it, `role:name`.
    pub imported_by: String,
    /// When (leader time).
    pub imported_ms: i64,
    /// Relative path -> YAML text.
    pub files: BTreeMap<String, String>,
}

pub use rule_pack::digest;

impl RulePackRecord {
    /// A checked pack with its digest (version 0 until it is stored).
    pub fn new(
        name: &str,
        files: BTreeMap<String, String>,
        source: String,
        imported_by: String,
        imported_ms: i64,
    ) -> Result<Self, String> {
        rule_pack::check_name(name)?;
        rule_pack::check_files(&files)?;
        Ok(Self {
            name: name.to_owned(),
            version: 0,
            digest: digest(&files),
            source,
            imported_by,
            imported_ms,
            files,
        })
    }

    /// Rule files.
    pub fn rules(&self) -> usize {
        self.files.len()
    }

    /// Bytes of rule text.
    pub fn bytes(&self) -> u64 {
        rule_pack::text_bytes(&self.files)
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// What uses stored versions: hunts that have not ended and schedules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    /// `(pack, version)` -> the hunts bound to it.
    pub hunts: BTreeMap<(String, u32), Vec<String>>,
    /// Pack -> the schedules using it: pinned to a version, or following
    /// the latest (`None`).
    pub schedules: BTreeMap<String, Vec<(String, Option<u32>)>>,
}

impl Users {
    /// Whether a version must be kept: a hunt or a schedule is pinned to it.
    fn keeps(&self, name: &str, version: u32) -> bool {
        self.hunts.contains_key(&(name.to_owned(), version))
            || self
                .schedules
                .get(name)
                .is_some_and(|s| s.iter().any(|(_, v)| *v == Some(version)))
    }

    /// Who uses version `version` of `name` (`None`: any version), as
    /// `hunt h-12` and `schedule nightly`; `follows_latest` counts the
    /// schedules that follow the latest version.
    pub fn of(&self, name: &str, version: Option<u32>, follows_latest: bool) -> Vec<String> {
        let hunts = self
            .hunts
            .iter()
            .filter(|((pack, v), _)| pack == name && version.is_none_or(|want| *v == want))
            .flat_map(|(_, hunts)| hunts.iter().map(|h| format!("hunt {h}")));
        let schedules = self
            .schedules
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(_, pinned)| match (version, pinned) {
                (None, _) => true,
                (Some(want), Some(v)) => *v == want,
                (Some(_), None) => follows_latest,
            })
            .map(|(s, _)| format!("schedule {s}"));
        let mut out: Vec<String> = hunts.chain(schedules).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The version holding the content.
    pub version: u32,
    /// The content was already the latest version: nothing was stored.
    pub unchanged: bool,
    /// Older versions let go.
    pub gone: Vec<u32>,
}

/// Every pack's kept versions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePackStore {
    /// Name -> version -> record.
    pub packs: BTreeMap<String, BTreeMap<u32, RulePackRecord>>,
}

impl RulePackStore {
    /// The latest version of `name`.
    pub fn latest(&self, name: &str) -> Option<&RulePackRecord> {
        self.packs.get(name)?.values().next_back()
    }

    /// Version `version` of `name`.
    pub fn get(&self, name: &str, version: u32) -> Option<&RulePackRecord> {
        self.packs.get(name)?.get(&version)
    }

    /// The newest version of `name` with content `digest`.
    pub fn with_digest(&self, name: &str, digest: &str) -> Option<&RulePackRecord> {
        self.packs
            .get(name)?
            .values()
            .rev()
            .find(|r| r.digest == digest)
    }

    /// Any stored version, of any name, with content `digest` (content is
    /// content: a worker may be served a copy kept under another version).
    pub fn any_with_digest(&self, digest: &str) -> Option<&RulePackRecord> {
        self.packs
            .values()
            .flat_map(|versions| versions.values())
            .find(|r| r.digest == digest)
    }

    /// Bytes of rule text kept, every version counted.
    pub fn stored_bytes(&self) -> u64 {
        self.packs
            .values()
            .flat_map(|v| v.values())
            .map(RulePackRecord::bytes)
            .sum()
    }

    /// The versions of `name` kept, oldest first.
    pub fn versions(&self, name: &str) -> Vec<u32> {
        self.packs
            .get(name)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Stores `record` as the next version of its name, unless it is the
    /// latest version's content; lets go of versions older than the last
    /// [`KEEP_VERSIONS`] that nothing in `users` is pinned to.
    pub fn import(&mut self, record: RulePackRecord, users: &Users) -> Result<Imported, String> {
        self.import_within(record, users, MAX_STORE_BYTES)
    }

    /// [`RulePackStore::import`] with the store's byte bound given.
    fn import_within(
        &mut self,
        mut record: RulePackRecord,
        users: &Users,
        max_store_bytes: u64,
    ) -> Result<Imported, String> {
        rule_pack::check_name(&record.name)?;
        rule_pack::check_files(&record.files)?;
        if let Some(latest) = self.latest(&record.name)
            && latest.digest == record.digest
        {
            return Ok(Imported {
                version: latest.version,
                unchanged: true,
                gone: Vec::new(),
            });
        }
        if !self.packs.contains_key(&record.name) && self.packs.len() >= MAX_PACKS {
            return Err(format!(
                "the rule-pack store keeps at most {MAX_PACKS} packs; delete one first (`quarry sigma delete NAME`)"
            ));
        }
        let name = record.name.clone();
        let existing = self.packs.get(&name);
        let version = existing
            .and_then(|v| v.keys().next_back())
            .map_or(1, |last| last + 1);
        // The versions this import lets go: beyond the newest KEEP_VERSIONS
        // once it is stored, and not pinned by a hunt or schedule.
        let gone: Vec<u32> = existing
            .map(|versions| {
                let mut old: Vec<u32> = versions
                    .keys()
                    .rev()
                    .skip(KEEP_VERSIONS - 1)
                    .filter(|v| !users.keeps(&name, **v))
                    .copied()
                    .collect();
                old.sort_unstable();
                old
            })
            .unwrap_or_default();
        let freed: u64 = gone
            .iter()
            .filter_map(|v| self.get(&name, *v))
            .map(RulePackRecord::bytes)
            .sum();
        let after = self.stored_bytes() - freed + record.bytes();
        if after > max_store_bytes {
            return Err(format!(
                "the rule-pack store would hold {after} bytes of rules, more than the {max_store_bytes} it keeps; delete packs or versions no longer needed (`quarry sigma delete NAME@VERSION`)"
            ));
        }
        record.version = version;
        let versions = self.packs.entry(name).or_default();
        versions.insert(version, record);
        for v in &gone {
            versions.remove(v);
        }
        Ok(Imported {
            version,
            unchanged: false,
            gone,
        })
    }

    /// Deletes version `version` of `name` (`None`: every version).
    /// Refused while a hunt or schedule uses what would go, unless `force`.
    pub fn delete(
        &mut self,
        name: &str,
        version: Option<u32>,
        users: &Users,
        force: bool,
    ) -> Result<Vec<u32>, Rejection> {
        let Some(versions) = self.packs.get(name) else {
            return Err(Rejection::NotFound(format!(
                "no rule pack is named {name}; `quarry sigma list` shows the packs"
            )));
        };
        let gone: Vec<u32> = match version {
            None => versions.keys().copied().collect(),
            Some(v) if versions.contains_key(&v) => vec![v],
            Some(v) => {
                return Err(Rejection::NotFound(format!(
                    "rule pack {name} has no version {v}; it keeps {}",
                    list(versions.keys())
                )));
            }
        };
        // Deleting the only version leaves schedules that follow the
        // latest with nothing to run.
        let follows_latest = gone.len() == versions.len();
        let using = users.of(name, version, follows_latest);
        if !using.is_empty() && !force {
            let more = using.len().saturating_sub(USERS_NAMED);
            let mut advice = Vec::new();
            if using.iter().any(|u| u.starts_with("hunt ")) {
                advice.push("cancel those hunts or wait for them to end");
            }
            if using.iter().any(|u| u.starts_with("schedule ")) {
                advice.push("delete those schedules or create them with another pack");
            }
            return Err(Rejection::Conflict(format!(
                "rule pack {name}{} is in use by {}{}; {}, or delete with --force (their tasks and runs then fail, naming the pack)",
                version.map(|v| format!("@{v}")).unwrap_or_default(),
                using
                    .iter()
                    .take(USERS_NAMED)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                advice.join(" and ")
            )));
        }
        if let Some(versions) = self.packs.get_mut(name) {
            for v in &gone {
                versions.remove(v);
            }
            if versions.is_empty() {
                self.packs.remove(name);
            }
        }
        Ok(gone)
    }
}

fn list<'a>(versions: impl Iterator<Item = &'a u32>) -> String {
    versions.map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// The `(pack, binding)` pairs of `params`' `rule-pack-ref.*` entries
/// (unreadable ones left out: submits are checked before they are stored).
pub fn refs<'a>(
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> impl Iterator<Item = (&'a str, Binding)> {
    params.into_iter().filter_map(|(key, value)| {
        let name = key.strip_prefix(REF_PREFIX)?;
        Some((name, rule_pack::parse_ref(value).ok()?))
    })
}

/// Refuses a hunt that gets the same rule (the same text) from two
/// sources: a rule parameter (`--rules`) and a pack, or two packs. Each
/// copy would report every match again. Only looked for when rules come
/// from more than one source.
fn duplicate_rules(spec: &HuntSpec, packs: &[&RulePackRecord]) -> Result<(), Rejection> {
    let params: Vec<(&str, &str)> = spec
        .params
        .iter()
        .filter(|(k, _)| k.starts_with(rule_pack::RULE_PARAM_PREFIX))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if packs.len() + usize::from(!params.is_empty()) < 2 {
        return Ok(());
    }
    let mut seen: HashMap<&str, String> = HashMap::new();
    let sources = params
        .into_iter()
        .map(|(key, text)| (format!("parameter {key}"), text))
        .chain(packs.iter().flat_map(|pack| {
            pack.files.iter().map(move |(path, text)| {
                (
                    format!("{path} of rule pack {}", pack.label()),
                    text.as_str(),
                )
            })
        }));
    for (source, text) in sources {
        if let Some(first) = seen.insert(text, source.clone()) {
            return Err(Rejection::Invalid(format!(
                "the same rule is given twice: {first} and {source} hold the same text; leave one of them out"
            )));
        }
    }
    Ok(())
}

/// How a hunt names a pack to be bound to (`SubmitHuntRequest.rule_packs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `NAME`: the latest version now.
    Latest,
    /// `NAME@VERSION`.
    Version(u32),
    /// `NAME@sha256:DIGEST`: the version with that content.
    Digest(String),
    /// `NAME@latest`: each run of a schedule takes the latest version.
    Follow,
}

/// Reads `NAME`, `NAME@VERSION`, `NAME@sha256:DIGEST` or `NAME@latest`.
pub fn parse_selector(text: &str) -> Result<(String, Selector), String> {
    let (name, selector) = match text.split_once('@') {
        None => (text, Selector::Latest),
        Some((name, rule_pack::LATEST)) => (name, Selector::Follow),
        Some((name, rest)) => match rest.strip_prefix("sha256:") {
            Some(digest) => {
                rule_pack::check_digest(digest)?;
                (name, Selector::Digest(digest.to_owned()))
            }
            None => match rest.parse::<u32>() {
                Ok(v) if v > 0 => (name, Selector::Version(v)),
                _ => {
                    return Err(format!(
                        "`{text}` names no rule pack version: use NAME, NAME@VERSION (a number from `quarry sigma list`), NAME@sha256:DIGEST or NAME@latest"
                    ));
                }
            },
        },
    };
    rule_pack::check_name(name)?;
    Ok((name.to_owned(), selector))
}

impl State {
    /// What uses stored rule-pack versions.
    pub fn rule_pack_users(&self) -> Users {
        let mut users = Users::default();
        for hunt in self.hunts.values().filter(|h| !h.state.is_terminal()) {
            for (name, binding) in refs(&hunt.spec.params) {
                if let Binding::Pinned(r) = binding {
                    users
                        .hunts
                        .entry((name.to_owned(), r.version))
                        .or_default()
                        .push(hunt.id.to_string());
                }
            }
        }
        for schedule in self.schedules.by_id.values() {
            for (name, binding) in refs(&schedule.template.params) {
                let pinned = match binding {
                    Binding::Pinned(r) => Some(r.version),
                    Binding::Latest => None,
                };
                users
                    .schedules
                    .entry(name.to_owned())
                    .or_default()
                    .push((schedule.id.to_string(), pinned));
            }
        }
        users
    }

    /// Binds `spec` to the packs `selectors` name (`rule-pack-ref.NAME`
    /// parameters); `NAME@latest` is kept as `latest` only where
    /// `follow_latest` (a schedule's template), else bound like `NAME`.
    pub fn bind_rule_packs(
        &self,
        spec: &mut HuntSpec,
        selectors: &[String],
        follow_latest: bool,
    ) -> Result<(), Rejection> {
        for text in selectors {
            let (name, selector) = parse_selector(text).map_err(Rejection::Invalid)?;
            let key = format!("{REF_PREFIX}{name}");
            if spec.params.contains_key(&key) {
                return Err(Rejection::Invalid(format!(
                    "rule pack {name} is given twice; name each pack once"
                )));
            }
            let missing = || {
                Rejection::NotFound(format!(
                    "no rule pack is named {name}; `quarry sigma list` shows the packs, `quarry sigma import DIR --name {name}` adds one"
                ))
            };
            let latest = self.rule_packs.latest(&name).ok_or_else(missing)?;
            let record = match &selector {
                Selector::Latest => latest,
                Selector::Follow if follow_latest => {
                    spec.params.insert(key, rule_pack::LATEST.to_owned());
                    continue;
                }
                Selector::Follow => latest,
                Selector::Version(v) => self.rule_packs.get(&name, *v).ok_or_else(|| {
                    Rejection::NotFound(format!(
                        "rule pack {name} has no version {v}; it keeps {}",
                        list(self.rule_packs.versions(&name).iter())
                    ))
                })?,
                Selector::Digest(d) => self.rule_packs.with_digest(&name, d).ok_or_else(|| {
                    Rejection::NotFound(format!(
                        "rule pack {name} has no version with sha256 {d} here; import the same rules (`quarry sigma import DIR --name {name}`) or name a version"
                    ))
                })?,
            };
            let binding = Ref {
                version: record.version,
                digest: record.digest.clone(),
            };
            spec.params.insert(key, binding.to_string());
        }
        Ok(())
    }

    /// Binds the `latest` rule packs of a schedule's run to the versions
    /// latest now (a pack with no version stays `latest`, which
    /// [`State::check_rule_pack_refs`] then refuses, naming it).
    pub(crate) fn rebind_rule_packs(&self, spec: &mut HuntSpec) {
        let bound: Vec<(String, String)> = refs(&spec.params)
            .filter(|(_, b)| *b == Binding::Latest)
            .filter_map(|(name, _)| {
                let latest = self.rule_packs.latest(name)?;
                let binding = Ref {
                    version: latest.version,
                    digest: latest.digest.clone(),
                };
                Some((format!("{REF_PREFIX}{name}"), binding.to_string()))
            })
            .collect();
        spec.params.extend(bound);
    }

    /// Checks a hunt's rule-pack bindings: each names a stored version with
    /// that digest, and no rule of a pack is also given as a parameter.
    pub(crate) fn check_rule_pack_refs(&self, spec: &HuntSpec) -> Result<(), Rejection> {
        let mut packs: Vec<&RulePackRecord> = Vec::new();
        for (key, value) in &spec.params {
            let Some(name) = key.strip_prefix(REF_PREFIX) else {
                continue;
            };
            rule_pack::check_name(name).map_err(Rejection::Invalid)?;
            let binding = match rule_pack::parse_ref(value) {
                Ok(Binding::Pinned(r)) => r,
                Ok(Binding::Latest) => {
                    return Err(Rejection::NotFound(format!(
                        "rule pack {name}: `latest` is bound when a schedule's run starts, and no version of {name} is stored; import it again (`quarry sigma import DIR --name {name}`)"
                    )));
                }
                Err(why) => return Err(Rejection::Invalid(format!("{key}: {why}"))),
            };
            let record = self
                .rule_packs
                .get(name, binding.version)
                .ok_or_else(|| {
                    Rejection::NotFound(format!(
                        "rule pack {name} version {} (sha256 {}) is not stored (deleted, or let go as an old version); `quarry sigma list` shows the packs",
                        binding.version, binding.digest
                    ))
                })?;
            if record.digest != binding.digest {
                return Err(Rejection::Invalid(format!(
                    "rule pack {name} version {} has sha256 {}, not {}; bind it again (`--rule-pack {name}@{}`)",
                    binding.version, record.digest, binding.digest, binding.version
                )));
            }
            let prefix = rule_pack::param_name(name, "");
            if let Some((clash, _)) = spec
                .params
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .find(|(k, _)| {
                    k.strip_prefix(&prefix)
                        .is_some_and(|path| record.files.contains_key(path))
                })
            {
                return Err(Rejection::Invalid(format!(
                    "{clash} is given twice: as a parameter (--rules or --param) and in rule pack {}; leave one of them out",
                    record.label()
                )));
            }
            packs.push(record);
        }
        duplicate_rules(spec, &packs)
    }

    pub(crate) fn import_rule_pack(&mut self, record: RulePackRecord) -> crate::state::Applied {
        use crate::state::{Applied, Response, Touched};
        let name = record.name.clone();
        let users = self.rule_pack_users();
        match self.rule_packs.import(record, &users) {
            Ok(imported) => {
                let touched = if imported.unchanged {
                    Vec::new()
                } else {
                    std::iter::once(imported.version)
                        .chain(imported.gone)
                        .map(|v| Touched::RulePack(name.clone(), v))
                        .collect()
                };
                Applied {
                    outcome: Ok(Response::RulePack {
                        version: imported.version,
                        unchanged: imported.unchanged,
                    }),
                    ..Applied::done(touched)
                }
            }
            Err(why) => Applied::rejected(Rejection::Invalid(why)),
        }
    }

    pub(crate) fn delete_rule_pack(
        &mut self,
        name: &str,
        version: Option<u32>,
        force: bool,
    ) -> crate::state::Applied {
        use crate::state::{Applied, Touched};
        let users = self.rule_pack_users();
        match self.rule_packs.delete(name, version, &users, force) {
            Ok(gone) => Applied::done(
                gone.into_iter()
                    .map(|v| Touched::RulePack(name.to_owned(), v))
                    .collect(),
            ),
            Err(rejection) => Applied::rejected(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(name: &str, rules: &[(&str, &str)]) -> RulePackRecord {
        RulePackRecord::new(
            name,
            rules
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                .collect(),
            "test".into(),
            "hunter:a".into(),
            1,
        )
        .expect("a valid pack")
    }

    #[test]
    fn versions_count_up_and_the_same_content_keeps_its_version() {
        let mut store = RulePackStore::default();
        let none = Users::default();
        let v1 = store
            .import(pack("win", &[("a.yml", "title: a")]), &none)
            .expect("v1");
        assert_eq!((v1.version, v1.unchanged), (1, false));
        let again = store
            .import(pack("win", &[("a.yml", "title: a")]), &none)
            .expect("again");
        assert_eq!((again.version, again.unchanged), (1, true));
        let v2 = store
            .import(pack("win", &[("a.yml", "title: b")]), &none)
            .expect("v2");
        assert_eq!(v2.version, 2);
        let d1 = store.get("win", 1).expect("v1").digest.clone();
        let d2 = store.get("win", 2).expect("v2").digest.clone();
        assert_ne!(d1, d2);
        assert_eq!(d1.len(), 64);
        // A pack with v1's content again is a new version (not latest).
        let v3 = store
            .import(pack("win", &[("a.yml", "title: a")]), &none)
            .expect("v3");
        assert_eq!((v3.version, v3.gone), (3, vec![1]));
        assert_eq!(store.with_digest("win", &d1).map(|r| r.version), Some(3));
    }

    #[test]
    fn the_digest_is_of_paths_and_texts() {
        let a = pack("p", &[("a.yml", "x"), ("b.yml", "y")]);
        let b = pack("q", &[("b.yml", "y"), ("a.yml", "x")]);
        assert_eq!(a.digest, b.digest, "names and order do not count");
        assert_ne!(
            a.digest,
            pack("p", &[("a.yml", "x"), ("c.yml", "y")]).digest
        );
        assert_ne!(
            a.digest,
            pack("p", &[("a.yml", "x"), ("b.yml", "y ")]).digest
        );
        assert_eq!((a.rules(), a.bytes()), (2, 2));
    }

    #[test]
    fn old_versions_go_unless_a_hunt_or_schedule_is_pinned_to_them() {
        let mut store = RulePackStore::default();
        let none = Users::default();
        for n in 1..=2 {
            store
                .import(pack("win", &[("a.yml", &format!("title: {n}"))]), &none)
                .expect("import");
        }
        let pinned = Users {
            hunts: BTreeMap::from([(("win".to_owned(), 1), vec!["h-1".to_owned()])]),
            schedules: BTreeMap::from([("win".to_owned(), vec![("nightly".to_owned(), Some(2))])]),
        };
        let v3 = store
            .import(pack("win", &[("a.yml", "title: 3")]), &pinned)
            .expect("v3");
        assert!(v3.gone.is_empty(), "{v3:?}");
        let v4 = store
            .import(pack("win", &[("a.yml", "title: 4")]), &none)
            .expect("v4");
        assert_eq!(v4.gone, vec![1, 2]);
        assert_eq!(store.versions("win"), vec![3, 4]);
    }

    #[test]
    fn deleting_what_is_in_use_is_refused_unless_forced() {
        let mut store = RulePackStore::default();
        let none = Users::default();
        for n in 1..=2 {
            store
                .import(pack("win", &[("a.yml", &format!("title: {n}"))]), &none)
                .expect("import");
        }
        let users = Users {
            hunts: BTreeMap::from([(("win".to_owned(), 1), vec!["h-7".to_owned()])]),
            schedules: BTreeMap::from([("win".to_owned(), vec![("nightly".to_owned(), None)])]),
        };
        let refused = store
            .delete("win", Some(1), &users, false)
            .expect_err("a hunt uses v1");
        assert!(
            matches!(&refused, Rejection::Conflict(m) if m.contains("hunt h-7") && m.contains("--force")),
            "{refused:?}"
        );
        // v2 is the latest, but v1 stays for the schedule following it.
        assert_eq!(store.delete("win", Some(2), &users, false), Ok(vec![2]));
        let refused = store
            .delete("win", None, &users, false)
            .expect_err("in use");
        assert!(
            matches!(&refused, Rejection::Conflict(m) if m.contains("schedule nightly")),
            "{refused:?}"
        );
        assert!(matches!(
            store.delete("win", Some(9), &none, false),
            Err(Rejection::NotFound(m)) if m.contains("keeps 1")
        ));
        assert_eq!(store.delete("win", None, &users, true), Ok(vec![1]));
        assert!(store.packs.is_empty());
        assert!(matches!(
            store.delete("win", None, &none, false),
            Err(Rejection::NotFound(_))
        ));
    }

    #[test]
    fn the_store_is_bounded_in_packs_and_bytes() {
        let mut store = RulePackStore::default();
        let none = Users::default();
        for n in 0..MAX_PACKS {
            store
                .import(pack(&format!("p{n}"), &[("a.yml", "x")]), &none)
                .expect("room");
        }
        let refused = store
            .import(pack("one-more", &[("a.yml", "x")]), &none)
            .expect_err("full");
        assert!(refused.contains("at most 100 packs"), "{refused}");
        // Bytes (a small bound stands in for the 256 MiB): versions let go
        // by the import make room for it.
        let mut store = RulePackStore::default();
        let ten = "x".repeat(10);
        for n in 0..3 {
            store
                .import_within(pack(&format!("p{n}"), &[("a.yml", &ten)]), &none, 30)
                .expect("room");
        }
        let refused = store
            .import_within(pack("p3", &[("a.yml", "x")]), &none, 30)
            .expect_err("full");
        assert!(
            refused.contains("31 bytes") && refused.contains("delete"),
            "{refused}"
        );
        store.delete("p1", None, &none, false).expect("delete");
        store.delete("p2", None, &none, false).expect("delete");
        for n in 1..=4 {
            // Two versions of p0 fill 20 of 20 bytes; each further import
            // lets the oldest go and fits.
            let imported = store
                .import_within(
                    pack("p0", &[("a.yml", &format!("{n}").repeat(10))]),
                    &none,
                    20,
                )
                .expect("room");
            assert_eq!(imported.gone, if n >= 2 { vec![n - 1] } else { vec![] });
        }
        assert!(
            RulePackRecord::new("Bad Name", BTreeMap::new(), String::new(), String::new(), 0)
                .is_err()
        );
    }

    #[test]
    fn selectors_read_every_form() {
        let d = "ab".repeat(32);
        assert_eq!(parse_selector("win"), Ok(("win".into(), Selector::Latest)));
        assert_eq!(
            parse_selector("win@3"),
            Ok(("win".into(), Selector::Version(3)))
        );
        assert_eq!(
            parse_selector(&format!("win@sha256:{d}")),
            Ok(("win".into(), Selector::Digest(d.clone())))
        );
        assert_eq!(
            parse_selector("win@latest"),
            Ok(("win".into(), Selector::Follow))
        );
        for bad in ["win@0", "win@x", "Win", "win@sha256:12", "@3"] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    mod in_the_state_machine {
        use super::pack;
        use crate::schedules::{RunOutcome, ScheduleRecord, Trigger};
        use crate::state::tests::{cluster, spec};
        use crate::state::{Command, Rejection, Response, State, Touched};
        use quarry_proto::{HuntId, ScheduleId};

        fn import(s: &mut State, index: u64, text: &str) -> (u32, Vec<Touched>) {
            let applied = s.apply(
                index,
                Command::ImportRulePack {
                    record: Box::new(pack("win", &[("a.yml", text), ("b/c.yml", "title: c")])),
                },
            );
            match applied.outcome {
                Ok(Response::RulePack { version, .. }) => (version, applied.touched),
                other => panic!("import failed: {other:?}"),
            }
        }

        fn submit(s: &mut State, index: u64, packs: &[&str]) -> Result<HuntId, Rejection> {
            let mut hunt = spec(&[("env", "demo")]);
            let packs: Vec<String> = packs.iter().map(|p| (*p).to_owned()).collect();
            s.bind_rule_packs(&mut hunt, &packs, false)?;
            match s
                .apply(
                    index,
                    Command::SubmitHunt {
                        spec: hunt,
                        now_ms: 20,
                    },
                )
                .outcome
            {
                Ok(Response::Hunt { id, .. }) => Ok(id),
                Ok(other) => panic!("{other:?}"),
                Err(rejection) => Err(rejection),
            }
        }

        #[test]
        fn a_hunt_holds_one_small_binding_and_keeps_its_version() {
            let mut s = cluster();
            let (v1, touched) = import(&mut s, 5, "title: a");
            assert_eq!(touched, vec![Touched::RulePack("win".into(), 1)]);
            let digest = s.rule_packs.get("win", v1).expect("v1").digest.clone();
            let hunt = submit(&mut s, 6, &["win"]).expect("submit");
            let params = &s.hunts[&hunt].spec.params;
            assert_eq!(params.len(), 1, "{params:?}");
            assert_eq!(params["rule-pack-ref.win"], format!("1:{digest}"));
            // A later import does not change the hunt; the version it uses
            // is kept and cannot be deleted without force.
            let (v2, _) = import(&mut s, 7, "title: a2");
            assert_eq!(v2, 2);
            assert_eq!(
                s.hunts[&hunt].spec.params["rule-pack-ref.win"],
                format!("1:{digest}")
            );
            let users = s.rule_pack_users();
            assert_eq!(
                users.of("win", Some(1), false),
                vec![format!("hunt {hunt}")]
            );
            let refused = s.apply(
                8,
                Command::DeleteRulePack {
                    name: "win".into(),
                    version: Some(1),
                    force: false,
                },
            );
            assert!(
                matches!(refused.outcome, Err(Rejection::Conflict(_))),
                "{refused:?}"
            );
            // Named by version and by content.
            let by_version = submit(&mut s, 9, &["win@1"]).expect("v1");
            assert_eq!(
                s.hunts[&by_version].spec.params["rule-pack-ref.win"],
                format!("1:{digest}")
            );
            let by_digest = submit(&mut s, 10, &[&format!("win@sha256:{digest}")]).expect("digest");
            assert_eq!(
                s.hunts[&by_digest].spec.params["rule-pack-ref.win"],
                format!("1:{digest}")
            );
            assert!(
                matches!(submit(&mut s, 11, &["nope"]), Err(Rejection::NotFound(m)) if m.contains("quarry sigma import"))
            );
            assert!(
                matches!(submit(&mut s, 11, &["win@9"]), Err(Rejection::NotFound(m)) if m.contains("keeps 1, 2"))
            );
            assert!(
                matches!(submit(&mut s, 11, &["win", "win@1"]), Err(Rejection::Invalid(m)) if m.contains("twice"))
            );
        }

        #[test]
        fn a_rule_given_twice_or_a_stale_binding_is_refused() {
            let mut s = cluster();
            import(&mut s, 5, "title: a");
            let mut clash = spec(&[("env", "demo")]);
            clash
                .params
                .insert("rule.win/b/c.yml".into(), "title: c".into());
            s.bind_rule_packs(&mut clash, &["win".to_owned()], false)
                .expect("bind");
            let refused = s.apply(
                6,
                Command::SubmitHunt {
                    spec: clash,
                    now_ms: 20,
                },
            );
            assert!(
                matches!(&refused.outcome, Err(Rejection::Invalid(m)) if m.contains("rule.win/b/c.yml is given twice") && m.contains("win@1")),
                "{refused:?}"
            );
            // The same rule under another name is refused too.
            let mut same = spec(&[("env", "demo")]);
            same.params
                .insert("rule.local/c.yml".into(), "title: c".into());
            s.bind_rule_packs(&mut same, &["win".to_owned()], false)
                .expect("bind");
            let refused = s.apply(
                6,
                Command::SubmitHunt {
                    spec: same,
                    now_ms: 20,
                },
            );
            assert!(
                matches!(&refused.outcome, Err(Rejection::Invalid(m)) if m.contains("parameter rule.local/c.yml and b/c.yml of rule pack win@1")),
                "{refused:?}"
            );
            // Another rule under the pack's prefix is no clash.
            let mut other = spec(&[("env", "demo")]);
            other
                .params
                .insert("rule.win/z.yml".into(), "title: z".into());
            s.bind_rule_packs(&mut other, &["win".to_owned()], false)
                .expect("bind");
            assert!(
                s.apply(
                    7,
                    Command::SubmitHunt {
                        spec: other,
                        now_ms: 20
                    }
                )
                .outcome
                .is_ok()
            );
            // A binding given as a parameter must name stored content.
            let mut stale = spec(&[("env", "demo")]);
            stale
                .params
                .insert("rule-pack-ref.win".into(), format!("1:{}", "0".repeat(64)));
            let refused = s.apply(
                8,
                Command::SubmitHunt {
                    spec: stale.clone(),
                    now_ms: 20,
                },
            );
            assert!(
                matches!(&refused.outcome, Err(Rejection::Invalid(m)) if m.contains("has sha256")),
                "{refused:?}"
            );
            stale
                .params
                .insert("rule-pack-ref.win".into(), "latest".into());
            let refused = s.apply(
                9,
                Command::SubmitHunt {
                    spec: stale,
                    now_ms: 20,
                },
            );
            assert!(refused.outcome.is_err(), "a hunt is bound to one version");
        }

        fn schedule(s: &mut State, index: u64, name: &str, pack: &str) -> ScheduleId {
            let mut template = spec(&[("env", "demo")]);
            s.bind_rule_packs(&mut template, &[pack.to_owned()], true)
                .expect("bind");
            let id = ScheduleId::new(name);
            let record = ScheduleRecord::new(
                id.clone(),
                template,
                Trigger::Every {
                    interval_ms: 1_000,
                    anchor_ms: 0,
                },
                0,
                "local".into(),
            );
            let applied = s.apply(
                index,
                Command::CreateSchedule {
                    record: Box::new(record),
                },
            );
            assert_eq!(applied.outcome, Ok(Response::Done));
            id
        }

        fn fire(s: &mut State, index: u64, id: &ScheduleId, due_ms: i64) -> Option<HuntId> {
            match s
                .apply(
                    index,
                    Command::FireSchedule {
                        id: id.clone(),
                        due_ms,
                        now_ms: due_ms,
                    },
                )
                .outcome
            {
                Ok(Response::Hunt { id, .. }) => Some(id),
                _ => None,
            }
        }

        fn cancel(s: &mut State, index: u64, hunt: &HuntId) {
            let cancelled = s.apply(
                index,
                Command::CancelHunt {
                    hunt: hunt.clone(),
                    reason: "test".into(),
                    now_ms: 0,
                },
            );
            assert!(cancelled.outcome.is_ok(), "{cancelled:?}");
        }

        #[test]
        fn schedules_pin_a_version_unless_they_follow_the_latest() {
            let mut s = cluster();
            import(&mut s, 5, "title: a");
            let pinned = schedule(&mut s, 6, "pinned", "win");
            let follows = schedule(&mut s, 7, "follows", "win@latest");
            assert_eq!(
                s.schedules.by_id[&follows].template.params["rule-pack-ref.win"],
                "latest"
            );
            import(&mut s, 8, "title: a2");
            let d = |s: &State, v: u32| {
                format!("{v}:{}", s.rule_packs.get("win", v).expect("kept").digest)
            };
            let run = fire(&mut s, 9, &pinned, 1_000).expect("pinned run");
            assert_eq!(s.hunts[&run].spec.params["rule-pack-ref.win"], d(&s, 1));
            cancel(&mut s, 10, &run);
            let run = fire(&mut s, 11, &follows, 1_000).expect("following run");
            assert_eq!(s.hunts[&run].spec.params["rule-pack-ref.win"], d(&s, 2));
            cancel(&mut s, 12, &run);
            // Version 1 stays while the pinned schedule uses it.
            import(&mut s, 13, "title: a3");
            import(&mut s, 14, "title: a4");
            assert_eq!(s.rule_packs.versions("win"), vec![1, 3, 4]);
            // Both schedules use the pack: deleting it needs force, and
            // then their runs do not start, naming it.
            let refused = s.apply(
                15,
                Command::DeleteRulePack {
                    name: "win".into(),
                    version: None,
                    force: false,
                },
            );
            assert!(
                matches!(&refused.outcome, Err(Rejection::Conflict(m)) if m.contains("schedule follows") && m.contains("schedule pinned")),
                "{refused:?}"
            );
            let forced = s.apply(
                16,
                Command::DeleteRulePack {
                    name: "win".into(),
                    version: None,
                    force: true,
                },
            );
            assert_eq!(forced.touched.len(), 3, "{forced:?}");
            for (n, id) in [pinned, follows].iter().enumerate() {
                assert_eq!(fire(&mut s, 17 + n as u64, id, 2_000), None);
                let last = s.schedules.by_id[id].runs.back().expect("a run");
                assert_eq!(last.outcome, RunOutcome::NotStarted);
                assert!(last.reason.contains("rule pack win"), "{}", last.reason);
            }
            assert_eq!(s.rule_pack_users().of("win", None, true).len(), 2);
        }

        #[test]
        fn packs_survive_a_restart() {
            use crate::storage::{Replica, Store};
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path()).expect("open");
            let mut replica = Replica {
                state: cluster(),
                ..Replica::default()
            };
            for (n, text) in ["title: 1", "title: 2", "title: 3"].iter().enumerate() {
                let (_, touched) = import(&mut replica.state, 5 + n as u64, text);
                store
                    .persist_applied(&mut replica, &touched, &[], &[])
                    .expect("persist");
            }
            let deleted = replica.state.apply(
                9,
                Command::DeleteRulePack {
                    name: "win".into(),
                    version: Some(3),
                    force: false,
                },
            );
            store
                .persist_applied(&mut replica, &deleted.touched, &[], &[])
                .expect("persist");
            drop(store);
            let loaded = Store::open(dir.path())
                .expect("reopen")
                .load_replica()
                .expect("load");
            assert_eq!(loaded.state.rule_packs, replica.state.rule_packs);
            assert_eq!(loaded.state.rule_packs.versions("win"), vec![2]);
        }
    }
}
