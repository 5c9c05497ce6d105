//! The triage state as rows, for row-by-row persistence.
//!
//! **Why rows.** The coordinator persists its state machine to RocksDB, and
//! after every applied raft entry it writes what the entry changed in the
//! same write batch as the applied index: state and index can never
//! disagree after a crash. The triage state holds up to 500,000 alerts, so
//! it cannot be rewritten whole for every task report. Instead it is a set
//! of small rows ([`RowKey`] → [`Row`]); every mutation records which rows
//! it changed, and the coordinator writes just those:
//!
//! ```text
//! let effects = triage.ingest(finding, now_ms)?;          // inside apply
//! for key in triage.take_dirty() {
//!     match triage.row(&key) {
//!         Some(row) => batch.put(cf, key.to_bytes(), bincode::serialize(&row)?),
//!         None => batch.delete(cf, key.to_bytes()),
//!     }
//! }
//! batch.put(meta_cf, b"applied_index", index);           // same batch
//! ```
//!
//! On start, read every row back and call [`Triage::from_rows`]; derived
//! indexes (the group key → alert index) are rebuilt, not stored.
//!
//! **How changes are recorded.** Every map of the state is a
//! [`Tracked`] map, which can only be changed
//! through methods that record the key, so a mutation cannot forget its
//! row. The singleton rows (meta, config, config versions) are compared
//! with what they were at the previous [`Triage::take_dirty`]. The record
//! is not part of the state: equality and serde ignore it, so replicas
//! that drain at different times still compare equal.
//!
//! **Rows and their bounds.** No row grows with the number of alerts or
//! findings:
//!
//! | key (bytes) | row | bound |
//! |---|---|---|
//! | `meta` | [`Meta`]: config version, id counters, event clock, stats | fixed size |
//! | `config` | [`ConfigRow`]: the config in force and when its undated suppressions were first applied | the config document |
//! | `v/<n>` | [`ConfigVersion`]: one applied version (last 100 kept) | message ≤ 1 KiB, summary of one change |
//! | `a/A-<n>` | [`Alert`] | per-alert caps: 100 links, 32 hosts/entities/hunts/assets/tags, 64 evidence pairs, 200 comments, 100 history entries |
//! | `i/I-<n>` | [`Incident`] | 500 alert ids, 64 rules, 32 modules |
//! | `p/P-<n>` | [`Proposal`] | 20 alert ids |
//! | `e/<kind:value>` | [`EntityRisk`] of one entity | 64 remembered alerts |
//! | `rr/<rule>`, `re/<entity>` | [`KeyDays`]: rarity counts of one rule / grouping entity | one count per day of the rarity window (≤ 90) |
//! | `vr/<rule>`, `vm/<module>` | [`VerdictCounts`] | three counters |
//! | `n/<h\|e>/<len>:<subject>/<rule>` | [`NoiseLog`]: noise verdicts of one rule on one host (`h`) or entity (`e`); `len` is the subject's length in bytes | 1,000 verdicts |
//! | `h/<hunt>` | [`HuntCursor`] | two integers |
//! | `s/<shard>` | the shard's labels | the labels the coordinator passes |
//!
//! The numbers of rows are bounded as the state is (see `docs/triage.md`).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::TriageConfig;
use crate::error::TriageError;
use crate::group::{Alert, GroupKey};
use crate::ids::{AlertId, IncidentId, ProposalId, SuppressionId};
use crate::incident::Incident;
use crate::rarity::{DayCounter, KeyDays, Rarity};
use crate::risk::{EntityRisk, RiskBook};
use crate::tracked::{Dirty, Tracked};
use crate::triage::{ConfigVersion, HuntCursor, Store, Triage, TriageStats};
use crate::verdict::{
    NoiseLog, Proposal, ProposalKey, ProposalSubject, VerdictBook, VerdictCounts,
};

/// One persisted piece of triage state. Keys order deterministically
/// (by kind, then id); [`RowKey::to_bytes`] is their stable encoding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RowKey {
    /// Counters, clocks and stats (`meta`).
    Meta,
    /// The config in force (`config`).
    Config,
    /// One record of the config history (`v/<n>`).
    ConfigVersion(u64),
    /// An alert (`a/A-<n>`).
    Alert(AlertId),
    /// An incident (`i/I-<n>`).
    Incident(IncidentId),
    /// A suppression proposal (`p/P-<n>`).
    Proposal(ProposalId),
    /// An entity's risk, by `kind:value` (`e/host:ws01`).
    Risk(String),
    /// Rarity counts of a rule (`rr/<rule>`).
    RuleRarity(String),
    /// Rarity counts of a grouping entity (`re/<entity>`).
    EntityRarity(String),
    /// Verdict counts of a rule (`vr/<rule>`).
    RuleVerdicts(String),
    /// Verdict counts of a module (`vm/<name@version>`).
    ModuleVerdicts(String),
    /// Noise verdicts of a rule on a host or entity
    /// (`n/h/<len>:<host>/<rule>`, `n/e/<len>:<entity>/<rule>`).
    Noise(ProposalKey),
    /// The last finding number of a hunt (`h/<hunt>`).
    Hunt(String),
    /// A shard's labels (`s/<shard>`).
    Shard(String),
}

/// An owned row value. Every type in it round-trips through serde (JSON
/// and bincode 1.x).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Row {
    /// For [`RowKey::Meta`].
    Meta(Meta),
    /// For [`RowKey::Config`].
    Config(Box<ConfigRow>),
    /// For [`RowKey::ConfigVersion`].
    ConfigVersion(ConfigVersion),
    /// For [`RowKey::Alert`].
    Alert(Box<Alert>),
    /// For [`RowKey::Incident`].
    Incident(Box<Incident>),
    /// For [`RowKey::Proposal`].
    Proposal(Proposal),
    /// For [`RowKey::Risk`].
    Risk(EntityRisk),
    /// For [`RowKey::RuleRarity`].
    RuleRarity(KeyDays),
    /// For [`RowKey::EntityRarity`].
    EntityRarity(KeyDays),
    /// For [`RowKey::RuleVerdicts`].
    RuleVerdicts(VerdictCounts),
    /// For [`RowKey::ModuleVerdicts`].
    ModuleVerdicts(VerdictCounts),
    /// For [`RowKey::Noise`].
    Noise(NoiseLog),
    /// For [`RowKey::Hunt`].
    Hunt(HuntCursor),
    /// For [`RowKey::Shard`].
    Shard(BTreeMap<String, String>),
}

/// The scalars of the state: fixed size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The config version in force.
    pub config_version: u64,
    /// The last alert number given.
    pub next_alert: u64,
    /// The last incident number given.
    pub next_incident: u64,
    /// The last proposal number given.
    pub next_proposal: u64,
    /// The latest event time seen.
    pub event_clock_ms: i64,
    /// Counters.
    pub stats: TriageStats,
}

/// The config in force, with when each of its suppressions that gives no
/// date of its own was first applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRow {
    /// The config.
    pub config: TriageConfig,
    /// Creation time of the undated suppressions.
    pub suppression_created: BTreeMap<SuppressionId, i64>,
}

/// The singleton rows as of the last [`Triage::take_dirty`].
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    meta: Meta,
    config: ConfigRow,
    versions: BTreeSet<u64>,
}

impl RowKey {
    /// The key's kind, as in its byte prefix.
    fn prefix(&self) -> &'static str {
        match self {
            RowKey::Meta => "meta",
            RowKey::Config => "config",
            RowKey::ConfigVersion(_) => "v",
            RowKey::Alert(_) => "a",
            RowKey::Incident(_) => "i",
            RowKey::Proposal(_) => "p",
            RowKey::Risk(_) => "e",
            RowKey::RuleRarity(_) => "rr",
            RowKey::EntityRarity(_) => "re",
            RowKey::RuleVerdicts(_) => "vr",
            RowKey::ModuleVerdicts(_) => "vm",
            RowKey::Noise(_) => "n",
            RowKey::Hunt(_) => "h",
            RowKey::Shard(_) => "s",
        }
    }

    /// Stable byte encoding: a printable ASCII prefix, `/`, and the id
    /// (`a/A-12`, `e/host:ws01`, `n/h/4:ws01/sigma/x`); `meta` and
    /// `config` alone.
    pub fn to_bytes(&self) -> Vec<u8> {
        let id = match self {
            RowKey::Meta | RowKey::Config => return self.prefix().as_bytes().to_vec(),
            RowKey::ConfigVersion(v) => v.to_string(),
            RowKey::Alert(id) => id.to_string(),
            RowKey::Incident(id) => id.to_string(),
            RowKey::Proposal(id) => id.to_string(),
            RowKey::Risk(s)
            | RowKey::RuleRarity(s)
            | RowKey::EntityRarity(s)
            | RowKey::RuleVerdicts(s)
            | RowKey::ModuleVerdicts(s)
            | RowKey::Hunt(s)
            | RowKey::Shard(s) => s.clone(),
            RowKey::Noise(k) => {
                let (kind, subject) = match &k.subject {
                    ProposalSubject::Host(h) => ('h', h),
                    ProposalSubject::Entity(e) => ('e', e),
                };
                format!("{kind}/{}:{subject}/{}", subject.len(), k.rule)
            }
        };
        let mut out = Vec::with_capacity(self.prefix().len() + 1 + id.len());
        out.extend_from_slice(self.prefix().as_bytes());
        out.push(b'/');
        out.extend_from_slice(id.as_bytes());
        out
    }

    /// The key `bytes` encode ([`RowKey::to_bytes`] inverted). Only the
    /// canonical encoding is accepted; errors name the bad key.
    pub fn from_bytes(bytes: &[u8]) -> Result<RowKey, TriageError> {
        let bad = |reason: &str| TriageError::BadRowKey {
            key: bytes.escape_ascii().to_string(),
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not UTF-8"))?;
        let key =
            match text.split_once('/') {
                None => match text {
                    "meta" => RowKey::Meta,
                    "config" => RowKey::Config,
                    _ => return Err(bad("no `/` after the kind and not `meta` or `config`")),
                },
                Some((prefix, id)) => {
                    let string = || id.to_owned();
                    let number = |what: &str| {
                        id.strip_prefix(what)
                            .unwrap_or(id)
                            .parse::<u64>()
                            .map_err(|_| bad("the id is not a number"))
                    };
                    match prefix {
                        "v" => RowKey::ConfigVersion(number("")?),
                        "a" => RowKey::Alert(AlertId(number("A-")?)),
                        "i" => RowKey::Incident(IncidentId(number("I-")?)),
                        "p" => RowKey::Proposal(ProposalId(number("P-")?)),
                        "e" => RowKey::Risk(string()),
                        "rr" => RowKey::RuleRarity(string()),
                        "re" => RowKey::EntityRarity(string()),
                        "vr" => RowKey::RuleVerdicts(string()),
                        "vm" => RowKey::ModuleVerdicts(string()),
                        "h" => RowKey::Hunt(string()),
                        "s" => RowKey::Shard(string()),
                        "n" => RowKey::Noise(noise_key(id).ok_or_else(|| {
                            bad("a noise key is n/<h|e>/<length>:<subject>/<rule>")
                        })?),
                        _ => return Err(bad("unknown kind")),
                    }
                }
            };
        if key.to_bytes() != bytes {
            return Err(bad("not the canonical encoding of its key"));
        }
        Ok(key)
    }
}

fn noise_key(id: &str) -> Option<ProposalKey> {
    let (kind, rest) = id.split_once('/')?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let subject = rest.get(..len)?.to_owned();
    let rule = rest.get(len..)?.strip_prefix('/')?.to_owned();
    let subject = match kind {
        "h" => ProposalSubject::Host(subject),
        "e" => ProposalSubject::Entity(subject),
        _ => return None,
    };
    Some(ProposalKey { rule, subject })
}

impl fmt::Display for RowKey {
    /// The byte encoding, as text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl Row {
    /// What kind of row it is, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Row::Meta(_) => "meta",
            Row::Config(_) => "config",
            Row::ConfigVersion(_) => "config version",
            Row::Alert(_) => "alert",
            Row::Incident(_) => "incident",
            Row::Proposal(_) => "proposal",
            Row::Risk(_) => "entity risk",
            Row::RuleRarity(_) => "rule rarity",
            Row::EntityRarity(_) => "entity rarity",
            Row::RuleVerdicts(_) => "rule verdicts",
            Row::ModuleVerdicts(_) => "module verdicts",
            Row::Noise(_) => "noise log",
            Row::Hunt(_) => "hunt",
            Row::Shard(_) => "shard labels",
        }
    }
}

/// Moves the keys a map recorded as changed into `out`.
fn drain<K: Ord, V>(map: &mut Tracked<K, V>, out: &mut BTreeSet<RowKey>, key: fn(K) -> RowKey) {
    out.extend(map.take_dirty().into_iter().map(key));
}

impl Triage {
    fn meta_row(&self) -> Meta {
        Meta {
            config_version: self.config_version,
            next_alert: self.st.next_alert,
            next_incident: self.st.next_incident,
            next_proposal: self.st.verdicts.next_proposal,
            event_clock_ms: self.st.event_clock_ms,
            stats: self.st.stats.clone(),
        }
    }

    fn config_row(&self) -> ConfigRow {
        ConfigRow {
            config: self.config.clone(),
            suppression_created: self.st.suppression_created.clone(),
        }
    }

    /// The keys whose rows changed (or were deleted) since the last call,
    /// in [`RowKey`] order; clears the record. For each, write
    /// [`Triage::row`] or, when it is `None`, delete the key. The first
    /// call on a state made by [`Triage::new`] or deserialized from a
    /// snapshot also names `meta`, `config` and the config versions (write
    /// [`Triage::rows`] in full when adopting such a state).
    pub fn take_dirty(&mut self) -> Vec<RowKey> {
        let mut keys = BTreeSet::new();
        let meta = self.meta_row();
        let versions: BTreeSet<u64> = self.config_history.iter().map(|v| v.version).collect();
        let config_same = |seen: &Seen| {
            seen.config.config == self.config
                && seen.config.suppression_created == self.st.suppression_created
        };
        let config = match self.seen.0.take() {
            Some(seen) => {
                if seen.meta != meta {
                    keys.insert(RowKey::Meta);
                }
                keys.extend(
                    seen.versions
                        .symmetric_difference(&versions)
                        .map(|v| RowKey::ConfigVersion(*v)),
                );
                if config_same(&seen) {
                    seen.config
                } else {
                    keys.insert(RowKey::Config);
                    self.config_row()
                }
            }
            None => {
                keys.extend([RowKey::Meta, RowKey::Config]);
                keys.extend(versions.iter().map(|v| RowKey::ConfigVersion(*v)));
                self.config_row()
            }
        };
        self.seen = Dirty(Some(Seen {
            meta,
            config,
            versions,
        }));
        let st = &mut self.st;
        drain(&mut st.alerts, &mut keys, RowKey::Alert);
        drain(&mut st.incidents, &mut keys, RowKey::Incident);
        drain(&mut st.verdicts.proposals, &mut keys, RowKey::Proposal);
        drain(&mut st.risk.entities, &mut keys, RowKey::Risk);
        drain(&mut st.rarity.rules.keys, &mut keys, RowKey::RuleRarity);
        drain(
            &mut st.rarity.entities.keys,
            &mut keys,
            RowKey::EntityRarity,
        );
        drain(&mut st.verdicts.by_rule, &mut keys, RowKey::RuleVerdicts);
        drain(
            &mut st.verdicts.by_module,
            &mut keys,
            RowKey::ModuleVerdicts,
        );
        drain(&mut st.verdicts.noise, &mut keys, RowKey::Noise);
        drain(&mut st.hunts, &mut keys, RowKey::Hunt);
        drain(&mut st.shard_labels, &mut keys, RowKey::Shard);
        keys.into_iter().collect()
    }

    /// The row for `key` as it is now; `None`: it does not exist (delete it).
    pub fn row(&self, key: &RowKey) -> Option<Row> {
        let st = &self.st;
        Some(match key {
            RowKey::Meta => Row::Meta(self.meta_row()),
            RowKey::Config => Row::Config(Box::new(self.config_row())),
            RowKey::ConfigVersion(v) => Row::ConfigVersion(
                self.config_history
                    .iter()
                    .find(|c| c.version == *v)?
                    .clone(),
            ),
            RowKey::Alert(id) => Row::Alert(Box::new(st.alerts.get(id)?.clone())),
            RowKey::Incident(id) => Row::Incident(Box::new(st.incidents.get(id)?.clone())),
            RowKey::Proposal(id) => Row::Proposal(st.verdicts.proposals.get(id)?.clone()),
            RowKey::Risk(k) => Row::Risk(st.risk.entities.get(k)?.clone()),
            RowKey::RuleRarity(k) => Row::RuleRarity(st.rarity.rules.keys.get(k)?.clone()),
            RowKey::EntityRarity(k) => Row::EntityRarity(st.rarity.entities.keys.get(k)?.clone()),
            RowKey::RuleVerdicts(k) => Row::RuleVerdicts(*st.verdicts.by_rule.get(k)?),
            RowKey::ModuleVerdicts(k) => Row::ModuleVerdicts(*st.verdicts.by_module.get(k)?),
            RowKey::Noise(k) => Row::Noise(st.verdicts.noise.get(k)?.clone()),
            RowKey::Hunt(h) => Row::Hunt(st.hunts.get(h)?.clone()),
            RowKey::Shard(s) => Row::Shard(st.shard_labels.get(s)?.clone()),
        })
    }

    /// Every row of the current state, in [`RowKey`] order (for a first
    /// write, a snapshot install, or tests).
    pub fn rows(&self) -> Vec<(RowKey, Row)> {
        fn all<'a, K: Ord + Clone + 'a, V: Clone + 'a>(
            out: &mut Vec<(RowKey, Row)>,
            map: &'a BTreeMap<K, V>,
            key: fn(K) -> RowKey,
            row: fn(V) -> Row,
        ) {
            out.extend(map.iter().map(|(k, v)| (key(k.clone()), row(v.clone()))));
        }
        let st = &self.st;
        let mut out = vec![
            (RowKey::Meta, Row::Meta(self.meta_row())),
            (RowKey::Config, Row::Config(Box::new(self.config_row()))),
        ];
        out.extend(self.config_history.iter().map(|v| {
            (
                RowKey::ConfigVersion(v.version),
                Row::ConfigVersion(v.clone()),
            )
        }));
        all(&mut out, &st.alerts, RowKey::Alert, |a| {
            Row::Alert(Box::new(a))
        });
        all(&mut out, &st.incidents, RowKey::Incident, |i| {
            Row::Incident(Box::new(i))
        });
        all(
            &mut out,
            &st.verdicts.proposals,
            RowKey::Proposal,
            Row::Proposal,
        );
        all(&mut out, &st.risk.entities, RowKey::Risk, Row::Risk);
        all(
            &mut out,
            &st.rarity.rules.keys,
            RowKey::RuleRarity,
            Row::RuleRarity,
        );
        all(
            &mut out,
            &st.rarity.entities.keys,
            RowKey::EntityRarity,
            Row::EntityRarity,
        );
        all(
            &mut out,
            &st.verdicts.by_rule,
            RowKey::RuleVerdicts,
            Row::RuleVerdicts,
        );
        all(
            &mut out,
            &st.verdicts.by_module,
            RowKey::ModuleVerdicts,
            Row::ModuleVerdicts,
        );
        all(&mut out, &st.verdicts.noise, RowKey::Noise, Row::Noise);
        all(&mut out, &st.hunts, RowKey::Hunt, Row::Hunt);
        all(&mut out, &st.shard_labels, RowKey::Shard, Row::Shard);
        out
    }

    /// Rebuilds the state from its rows, in any order. Derived indexes
    /// (each alert's group key) are rebuilt. Nothing is recorded as
    /// changed: [`Triage::take_dirty`] right after returns nothing. Errors
    /// name the row that is missing, repeated, of the wrong kind, or
    /// inconsistent with the others.
    pub fn from_rows(rows: impl IntoIterator<Item = (RowKey, Row)>) -> Result<Triage, TriageError> {
        let mut meta = None;
        let mut config = None;
        let mut history = BTreeMap::new();
        let mut alerts = BTreeMap::new();
        let mut incidents = BTreeMap::new();
        let mut proposals = BTreeMap::new();
        let mut risk = BTreeMap::new();
        let mut rule_rarity = BTreeMap::new();
        let mut entity_rarity = BTreeMap::new();
        let mut by_rule = BTreeMap::new();
        let mut by_module = BTreeMap::new();
        let mut noise = BTreeMap::new();
        let mut hunts = BTreeMap::new();
        let mut shards = BTreeMap::new();
        let mut seen_keys = BTreeSet::new();
        for (key, row) in rows {
            let bad = |reason: String| TriageError::BadRow {
                key: key.to_string(),
                reason,
            };
            if !seen_keys.insert(key.clone()) {
                return Err(bad("the key appears twice".into()));
            }
            let mismatch =
                |what: &str, found: String| bad(format!("it holds the row of {what} {found}"));
            match (&key, row) {
                (RowKey::Meta, Row::Meta(m)) => meta = Some(m),
                (RowKey::Config, Row::Config(c)) => config = Some(*c),
                (RowKey::ConfigVersion(v), Row::ConfigVersion(c)) => {
                    if c.version != *v {
                        return Err(mismatch("version", c.version.to_string()));
                    }
                    history.insert(*v, c);
                }
                (RowKey::Alert(id), Row::Alert(a)) => {
                    if a.id != *id {
                        return Err(mismatch("alert", a.id.to_string()));
                    }
                    alerts.insert(*id, *a);
                }
                (RowKey::Incident(id), Row::Incident(i)) => {
                    if i.id != *id {
                        return Err(mismatch("incident", i.id.to_string()));
                    }
                    incidents.insert(*id, *i);
                }
                (RowKey::Proposal(id), Row::Proposal(p)) => {
                    if p.id != *id {
                        return Err(mismatch("proposal", p.id.to_string()));
                    }
                    proposals.insert(*id, p);
                }
                (RowKey::Risk(k), Row::Risk(r)) => {
                    if r.entity.key() != *k {
                        return Err(mismatch("entity", r.entity.key()));
                    }
                    risk.insert(k.clone(), r);
                }
                (RowKey::RuleRarity(k), Row::RuleRarity(d)) => {
                    rule_rarity.insert(k.clone(), d);
                }
                (RowKey::EntityRarity(k), Row::EntityRarity(d)) => {
                    entity_rarity.insert(k.clone(), d);
                }
                (RowKey::RuleVerdicts(k), Row::RuleVerdicts(c)) => {
                    by_rule.insert(k.clone(), c);
                }
                (RowKey::ModuleVerdicts(k), Row::ModuleVerdicts(c)) => {
                    by_module.insert(k.clone(), c);
                }
                (RowKey::Noise(k), Row::Noise(n)) => {
                    noise.insert(k.clone(), n);
                }
                (RowKey::Hunt(h), Row::Hunt(c)) => {
                    hunts.insert(h.clone(), c);
                }
                (RowKey::Shard(s), Row::Shard(l)) => {
                    shards.insert(s.clone(), l);
                }
                (_, row) => {
                    return Err(bad(format!(
                        "it holds a {} row, not a {} row",
                        row.kind(),
                        key.kind_name()
                    )));
                }
            }
        }
        let missing = |key: RowKey| TriageError::BadRow {
            key: key.to_string(),
            reason: "missing: every triage state has one".into(),
        };
        let meta = meta.ok_or_else(|| missing(RowKey::Meta))?;
        let config = config.ok_or_else(|| missing(RowKey::Config))?;
        let bad = |key: RowKey, reason: String| TriageError::BadRow {
            key: key.to_string(),
            reason,
        };

        // The config history is the versions up to the one in force, the
        // oldest dropped.
        let mut expect = history.keys().next().copied();
        for v in history.keys() {
            if Some(*v) != expect || *v > meta.config_version {
                return Err(bad(
                    RowKey::ConfigVersion(*v),
                    format!(
                        "config versions must run without gaps up to the one in force ({}) and the meta row",
                        meta.config_version
                    ),
                ));
            }
            expect = Some(v + 1);
        }
        if meta.config_version > 0 && history.keys().next_back() != Some(&meta.config_version) {
            return Err(bad(
                RowKey::ConfigVersion(meta.config_version),
                "missing: the config version in force (meta row) has a record".into(),
            ));
        }
        let beyond = |key: RowKey, n: u64, counter: &str| {
            bad(
                key,
                format!(
                    "its number is above the last {counter} number given ({n}) in the meta row"
                ),
            )
        };
        if let Some(id) = alerts.keys().next_back().filter(|a| a.0 > meta.next_alert) {
            return Err(beyond(RowKey::Alert(*id), meta.next_alert, "alert"));
        }
        if let Some(id) = incidents
            .keys()
            .next_back()
            .filter(|i| i.0 > meta.next_incident)
        {
            return Err(beyond(
                RowKey::Incident(*id),
                meta.next_incident,
                "incident",
            ));
        }
        if let Some(id) = proposals
            .keys()
            .next_back()
            .filter(|p| p.0 > meta.next_proposal)
        {
            return Err(beyond(
                RowKey::Proposal(*id),
                meta.next_proposal,
                "proposal",
            ));
        }

        // Derived: the group key of each alert.
        let mut alert_keys = BTreeMap::new();
        for a in alerts.values() {
            let key = GroupKey {
                rule: a.rule.clone(),
                entity: a.entity.clone(),
                window_start_ms: a.window_start_ms,
            };
            if let Some(other) = alert_keys.insert(key, a.id) {
                return Err(bad(
                    RowKey::Alert(a.id),
                    format!("it has the rule, entity and window of alert {other}"),
                ));
            }
        }

        // Every field is named (no `..Default::default()`): a field added
        // to the state does not compile here until it has a row.
        let st = Store {
            suppression_created: config.suppression_created.clone(),
            alerts: alerts.into(),
            alert_keys,
            next_alert: meta.next_alert,
            incidents: incidents.into(),
            next_incident: meta.next_incident,
            rarity: Rarity {
                rules: DayCounter {
                    keys: rule_rarity.into(),
                },
                entities: DayCounter {
                    keys: entity_rarity.into(),
                },
            },
            risk: RiskBook {
                entities: risk.into(),
            },
            verdicts: VerdictBook {
                by_rule: by_rule.into(),
                by_module: by_module.into(),
                noise: noise.into(),
                proposals: proposals.into(),
                next_proposal: meta.next_proposal,
            },
            shard_labels: shards.into(),
            hunts: hunts.into(),
            event_clock_ms: meta.event_clock_ms,
            stats: meta.stats.clone(),
        };
        let versions = history.keys().copied().collect();
        Ok(Triage {
            config: config.config.clone(),
            config_version: meta.config_version,
            config_history: history.into_values().collect(),
            st,
            seen: Dirty(Some(Seen {
                meta,
                config,
                versions,
            })),
        })
    }
}

impl RowKey {
    fn kind_name(&self) -> &'static str {
        match self {
            RowKey::Meta => "meta",
            RowKey::Config => "config",
            RowKey::ConfigVersion(_) => "config version",
            RowKey::Alert(_) => "alert",
            RowKey::Incident(_) => "incident",
            RowKey::Proposal(_) => "proposal",
            RowKey::Risk(_) => "entity risk",
            RowKey::RuleRarity(_) => "rule rarity",
            RowKey::EntityRarity(_) => "entity rarity",
            RowKey::RuleVerdicts(_) => "rule verdicts",
            RowKey::ModuleVerdicts(_) => "module verdicts",
            RowKey::Noise(_) => "noise log",
            RowKey::Hunt(_) => "hunt",
            RowKey::Shard(_) => "shard labels",
        }
    }
}
