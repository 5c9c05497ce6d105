//! Grouping: findings of one rule on one entity within one time window are
//! one alert. Windows are aligned to the epoch (`[k·w, (k+1)·w)` of event
//! time), so a finding's alert does not depend on the order findings arrive
//! in, which matters when a hunt replays days of history out of order.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::attack::TechniqueInfo;
use crate::bounded::{BoundedSet, clip};
use crate::case::Case;
use crate::enrich::Criticality;
use crate::finding::{Entity, Severity, TriageFinding, rule_author};
use crate::ids::{AlertId, FindingRef, FollowUpId, IncidentId};
use crate::scope::Subject;
use crate::score::{Score, ScoreTerm};

/// Finding links an alert keeps in memory (all of them go out as
/// [`crate::Effect::Link`] for the coordinator to index).
pub const MAX_LINKS: usize = 10;
/// Hosts, entities, hunts, assets and tags an alert keeps (each).
pub const MAX_MEMBERS: u32 = 32;
/// Modules an alert keeps.
pub const MAX_MODULES: u32 = 8;
/// Techniques an alert keeps.
pub const MAX_TECHNIQUES: usize = 32;
/// Evidence pairs of its first finding an alert keeps for matching.
pub const MAX_FIELDS: usize = 64;
/// Longest evidence value kept, in bytes.
pub const MAX_FIELD_VALUE: usize = 512;
/// Longest title kept, in bytes.
pub const MAX_TITLE: usize = 512;

/// What makes findings the same alert.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    /// Rule id.
    pub rule: String,
    /// Grouping entity (`host:ws01`).
    pub entity: String,
    /// Start of the window (event time).
    pub window_start_ms: i64,
}

/// A host on a shard: what asset criticality is worked out from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Asset {
    /// The host, if known.
    pub host: Option<String>,
    /// The shard.
    pub shard: String,
}

/// Findings of one rule on one entity in one window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Its id.
    pub id: AlertId,
    /// Rule id.
    pub rule: String,
    /// The rule's author (attribution some rule licences require).
    pub rule_author: Option<String>,
    /// Title of its first finding.
    pub title: String,
    /// Module of its first finding (`name@version`).
    pub module: String,
    /// Every module that contributed.
    pub modules: BoundedSet<String>,
    /// The grouping entity (`host:ws01`, or `-` when findings name none).
    pub entity: String,
    /// Every entity of its findings.
    pub entities: BoundedSet<Entity>,
    /// Start of its window (event time).
    pub window_start_ms: i64,
    /// Its window's length.
    pub window_ms: i64,
    /// Findings in it (suppressed ones included).
    pub count: u64,
    /// Findings that a suppression matched.
    pub suppressed_count: u64,
    /// Earliest finding (event time).
    pub first_seen_ms: i64,
    /// Latest finding (event time).
    pub last_seen_ms: i64,
    /// When it was created (leader time).
    pub opened_ms: i64,
    /// Last finding or change (leader time).
    pub updated_ms: i64,
    /// Highest severity.
    pub severity: Severity,
    /// Highest confidence.
    pub confidence: u8,
    /// Hosts.
    pub hosts: BoundedSet<String>,
    /// Hosts with their shards.
    pub assets: BoundedSet<Asset>,
    /// Hunts that found it.
    pub hunts: BoundedSet<String>,
    /// Its first [`MAX_LINKS`] findings; `count` says how many there are.
    pub links: Vec<FindingRef>,
    /// ATT&CK techniques with names.
    pub techniques: Vec<TechniqueInfo>,
    /// ATT&CK tactic shortnames.
    pub tactics: BTreeSet<String>,
    /// Module tags.
    pub tags: BoundedSet<String>,
    /// Evidence of its first finding (what suppressions added later match).
    pub fields: Vec<(String, String)>,
    /// Intel matches over its findings.
    pub intel_matches: u32,
    /// Asset criticality.
    pub criticality: Criticality,
    /// Where the criticality comes from.
    pub criticality_reason: String,
    /// Score.
    pub score: Score,
    /// The terms that made it; they add up to `score`.
    pub score_terms: Vec<ScoreTerm>,
    /// State, assignee, comments, verdict, history.
    pub case: Case,
    /// Incidents it belongs to.
    pub incidents: BTreeSet<IncidentId>,
    /// Follow-up rules started for it.
    pub follow_ups: BTreeSet<FollowUpId>,
}

impl Alert {
    /// An empty alert for `key`; [`Alert::absorb`] adds its first finding.
    pub fn new(
        id: AlertId,
        key: &GroupKey,
        window_ms: i64,
        f: &TriageFinding,
        now_ms: i64,
    ) -> Alert {
        Alert {
            id,
            rule: key.rule.clone(),
            rule_author: f.rule_author.clone().or_else(|| rule_author(&f.evidence)),
            title: clip(&f.title, MAX_TITLE),
            module: f.module.clone(),
            modules: BoundedSet::new(MAX_MODULES),
            entity: key.entity.clone(),
            entities: BoundedSet::new(MAX_MEMBERS),
            window_start_ms: key.window_start_ms,
            window_ms,
            count: 0,
            suppressed_count: 0,
            first_seen_ms: i64::MAX,
            last_seen_ms: i64::MIN,
            opened_ms: now_ms,
            updated_ms: now_ms,
            severity: f.severity,
            confidence: 0,
            hosts: BoundedSet::new(MAX_MEMBERS),
            assets: BoundedSet::new(MAX_MEMBERS),
            hunts: BoundedSet::new(MAX_MEMBERS),
            links: Vec::new(),
            techniques: Vec::new(),
            tactics: BTreeSet::new(),
            tags: BoundedSet::new(MAX_MEMBERS),
            fields: f
                .evidence
                .iter()
                .take(MAX_FIELDS)
                .map(|(k, v)| (clip(k, MAX_FIELD_VALUE), clip(v, MAX_FIELD_VALUE)))
                .collect(),
            intel_matches: 0,
            criticality: Criticality::default(),
            criticality_reason: String::new(),
            score: Score::default(),
            score_terms: Vec::new(),
            case: Case::default(),
            incidents: BTreeSet::new(),
            follow_ups: BTreeSet::new(),
        }
    }

    /// Adds a finding (its entities, host, ATT&CK names already worked out).
    pub fn absorb(&mut self, f: &Finding<'_>, now_ms: i64) {
        self.count += 1;
        self.first_seen_ms = self.first_seen_ms.min(f.timestamp_ms);
        self.last_seen_ms = self.last_seen_ms.max(f.timestamp_ms);
        self.updated_ms = now_ms;
        self.severity = self.severity.max(f.finding.severity);
        self.confidence = self.confidence.max(f.finding.confidence.min(100));
        if self.rule_author.is_none() {
            self.rule_author = f
                .finding
                .rule_author
                .clone()
                .or_else(|| rule_author(&f.finding.evidence));
        }
        self.modules.insert(f.finding.module.clone());
        for e in f.entities {
            self.entities.insert(e.clone());
        }
        if let Some(h) = f.host {
            self.hosts.insert(h.to_owned());
        }
        self.assets.insert(Asset {
            host: f.host.map(str::to_owned),
            shard: f.finding.shard.clone(),
        });
        self.hunts.insert(f.finding.hunt.clone());
        if self.links.len() < MAX_LINKS {
            self.links.push(f.finding.reference());
        }
        for t in f.techniques {
            if self.techniques.len() < MAX_TECHNIQUES
                && !self.techniques.iter().any(|k| k.id == t.id)
            {
                self.techniques.push(t.clone());
                self.techniques.sort();
            }
        }
        self.tactics.extend(f.tactics.iter().cloned());
        for t in &f.finding.tags {
            self.tags.insert(t.clone());
        }
        self.intel_matches = self.intel_matches.saturating_add(f.finding.intel_count());
    }

    /// The alert's own entity, when its entity string parses.
    pub fn primary_entity(&self) -> Option<Entity> {
        Entity::parse(&self.entity)
    }

    /// What suppressions and follow-up rules match against.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            rule: &self.rule,
            modules: self.modules.iter().map(String::as_str).collect(),
            entity: &self.entity,
            entities: self.entities.iter().map(Entity::key).collect(),
            hosts: self.hosts.iter().map(String::as_str).collect(),
            tags: self.tags.iter().map(String::as_str).collect(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            severity: self.severity,
        }
    }
}

/// A finding with what triage derived from it.
pub struct Finding<'a> {
    /// The finding.
    pub finding: &'a TriageFinding,
    /// Its event time, clamped to the leader's clock.
    pub timestamp_ms: i64,
    /// Its entities.
    pub entities: &'a [Entity],
    /// Its host.
    pub host: Option<&'a str>,
    /// Its techniques.
    pub techniques: &'a [TechniqueInfo],
    /// Its tactics.
    pub tactics: &'a BTreeSet<String>,
}

impl Finding<'_> {
    /// What suppressions match against.
    pub fn subject<'b>(&'b self, entity: &'b str) -> Subject<'b> {
        Subject {
            rule: &self.finding.rule,
            modules: vec![self.finding.module.as_str()],
            entity,
            entities: self.entities.iter().map(Entity::key).collect(),
            hosts: self.host.into_iter().collect(),
            tags: self.finding.tags.iter().map(String::as_str).collect(),
            fields: self
                .finding
                .evidence
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            severity: self.finding.severity,
        }
    }
}

/// The grouping entity of a finding: its entity string normalised
/// (`host:ws01`); else its first host, user or IP; else `-`.
pub fn group_entity(f: &TriageFinding, entities: &[Entity]) -> String {
    Entity::parse(&f.entity)
        .or_else(|| entities.iter().find(|e| e.kind.carries_risk()).cloned())
        .map_or_else(|| "-".to_owned(), |e| e.key())
}

/// The key of a finding's alert.
pub fn key_for(rule: &str, entity: &str, timestamp_ms: i64, window_ms: i64) -> GroupKey {
    let w = window_ms.max(1);
    GroupKey {
        rule: rule.to_owned(),
        entity: entity.to_owned(),
        window_start_ms: timestamp_ms.div_euclid(w) * w,
    }
}

/// Labels of a shard, as last seen (for criticality of alerts kept over time).
pub type ShardLabels = BTreeMap<String, BTreeMap<String, String>>;
