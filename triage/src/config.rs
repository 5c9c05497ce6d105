//! Triage as code: the YAML file people write (rules, crown jewels, score
//! weights, windows, thresholds), read in two steps: a raw serde layer that
//! rejects unknown keys and bad values at their line, then a validated
//! [`TriageConfig`] that lives in the replicated state. `docs/triage.md`
//! documents the format; its defaults block is checked against
//! [`TriageConfig::default`] by a test.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::enrich::{AssetsConfig, Criticality, CrownJewel};
use crate::error::TriageError;
use crate::finding::Severity;
use crate::followup::{FollowUp, Pivot};
use crate::glob::Glob;
use crate::ids::{FollowUpId, SuppressionId};
use crate::scope::Scope;
use crate::score::{Score, Weights};
use crate::suppress::{Expiry, Suppression};
use crate::time::{self, DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};
use crate::yaml::{self, Mark, Spanned};

/// The config format this build reads (`version:` in the file).
pub const FORMAT_VERSION: u32 = 1;

/// Default values; `docs/triage.md` states these numbers.
pub mod defaults {
    use super::*;

    /// Grouping window of rules without their own.
    pub const GROUP_WINDOW_MS: i64 = HOUR_MS;
    /// Shard label naming a criticality.
    pub const CRITICALITY_LABEL: &str = "criticality";
    /// Criticality of assets nothing describes.
    pub const DEFAULT_CRITICALITY: Criticality = Criticality::Low;
    /// Score weights.
    pub const WEIGHTS: Weights = Weights {
        severity: 25,
        confidence: 10,
        criticality: 20,
        rule_rarity: 15,
        entity_rarity: 5,
        intel: 10,
        entity_risk: 15,
    };
    /// Days of findings rarity counts.
    pub const RARITY_DAYS: u32 = 7;
    /// Other findings of a rule at which its rarity is 0.5.
    pub const RULE_HALF_COUNT: u32 = 20;
    /// Other findings on an entity at which its rarity is 0.5.
    pub const ENTITY_HALF_COUNT: u32 = 20;
    /// Entity risk half-life.
    pub const RISK_HALF_LIFE_MS: i64 = 24 * HOUR_MS;
    /// Risk points an alert adds to each of its entities, by severity
    /// (informational, low, medium, high, critical), times its confidence / 100.
    pub const RISK_POINTS: SeverityPoints = SeverityPoints {
        informational: 1,
        low: 5,
        medium: 15,
        high: 40,
        critical: 80,
    };
    /// Risk points at which the entity risk factor is 0.5.
    pub const RISK_HALF_SCORE: u32 = 100;
    /// Entities that never carry risk: built-in service and machine accounts.
    pub const RISK_IGNORE: &[&str] = &[
        "user:system",
        "user:nt authority\\*",
        "user:local service",
        "user:network service",
        "user:anonymous logon",
        "user:*$",
    ];
    /// Correlation window.
    pub const CORRELATION_WINDOW_MS: i64 = 24 * HOUR_MS;
    /// Distinct rules on one entity within the window that raise an incident.
    pub const MIN_RULES: u32 = 3;
    /// Distinct tactics on one entity within the window that raise an incident.
    pub const MIN_TACTICS: u32 = 3;
    /// Distinct modules on one entity within the window that raise an
    /// incident (0: not used).
    pub const MIN_MODULES: u32 = 0;
    /// Incident score points per distinct rule and tactic beyond the first.
    pub const BREADTH_POINTS: u32 = 10;
    /// Benign or false-positive verdicts on one rule and host that make a proposal.
    pub const PROPOSAL_MIN_VERDICTS: u32 = 5;
    /// Window those verdicts are counted in.
    pub const PROPOSAL_WINDOW_MS: i64 = 30 * DAY_MS;
    /// How long a suppression from an accepted proposal lasts.
    pub const PROPOSAL_SUPPRESSION_TTL_MS: i64 = 90 * DAY_MS;
    /// How long closed alerts and incidents are kept after closing.
    pub const CLOSED_RETENTION_MS: i64 = 30 * DAY_MS;
    /// A follow-up's window before the first and after the last finding.
    pub const FOLLOW_UP_AROUND_MS: i64 = HOUR_MS;
}

/// Points per severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityPoints {
    /// Informational.
    pub informational: u32,
    /// Low.
    pub low: u32,
    /// Medium.
    pub medium: u32,
    /// High.
    pub high: u32,
    /// Critical.
    pub critical: u32,
}

impl SeverityPoints {
    /// The points of `s`.
    pub fn of(&self, s: Severity) -> u32 {
        match s {
            Severity::Informational => self.informational,
            Severity::Low => self.low,
            Severity::Medium => self.medium,
            Severity::High => self.high,
            Severity::Critical => self.critical,
        }
    }
}

/// How findings group into alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupingConfig {
    /// Window of rules without their own.
    pub default_window_ms: i64,
    /// Per-rule windows; the first matching pattern wins.
    pub windows: Vec<WindowRule>,
}

/// A rule pattern's grouping window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRule {
    /// Rule ids.
    pub rule: Glob,
    /// Its window.
    pub window_ms: i64,
}

impl GroupingConfig {
    /// The window of `rule`.
    pub fn window_for(&self, rule: &str) -> i64 {
        self.windows
            .iter()
            .find(|w| w.rule.matches(rule))
            .map_or(self.default_window_ms, |w| w.window_ms)
    }
}

/// Rarity counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RarityConfig {
    /// Days counted.
    pub window_days: u32,
    /// Other findings of a rule at which its rarity is 0.5.
    pub rule_half_count: u32,
    /// Other findings on an entity at which its rarity is 0.5.
    pub entity_half_count: u32,
}

/// Entity risk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskConfig {
    /// Risk halves every this long (event time).
    pub half_life_ms: i64,
    /// Points an alert adds by severity (times confidence / 100).
    pub points: SeverityPoints,
    /// Risk points at which the score's risk factor is 0.5.
    pub half_score: u32,
    /// `kind:value` patterns of entities that carry no risk.
    pub ignore: Vec<Glob>,
}

/// When entity activity becomes an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelationConfig {
    /// Window the distinct rules, tactics or modules must fall in.
    pub window_ms: i64,
    /// Distinct rules (0: not used).
    pub min_rules: u32,
    /// Distinct tactics (0: not used).
    pub min_tactics: u32,
    /// Distinct modules (0: not used).
    pub min_modules: u32,
    /// Incident score points per distinct rule and tactic beyond the first.
    pub breadth_points: u32,
}

/// Suppression proposals from verdict history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalConfig {
    /// Benign or false-positive verdicts on one rule and host.
    pub min_verdicts: u32,
    /// Within this long.
    pub window_ms: i64,
    /// An accepted proposal's suppression lasts this long.
    pub suppression_ttl_ms: i64,
}

/// How long things are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionConfig {
    /// Closed alerts and incidents, after closing.
    pub closed_ms: i64,
}

/// The validated triage config, as it lives in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageConfig {
    /// Grouping.
    pub grouping: GroupingConfig,
    /// Asset criticality.
    pub assets: AssetsConfig,
    /// Score weights.
    pub weights: Weights,
    /// Rarity.
    pub rarity: RarityConfig,
    /// Entity risk.
    pub risk: RiskConfig,
    /// Correlation into incidents.
    pub correlation: CorrelationConfig,
    /// Suppressions, in match order.
    pub suppressions: Vec<Suppression>,
    /// Follow-up rules.
    pub follow_ups: Vec<FollowUp>,
    /// Suppression proposals.
    pub proposals: ProposalConfig,
    /// Retention.
    pub retention: RetentionConfig,
}

impl Default for TriageConfig {
    fn default() -> Self {
        use defaults::*;
        TriageConfig {
            grouping: GroupingConfig {
                default_window_ms: GROUP_WINDOW_MS,
                windows: Vec::new(),
            },
            assets: AssetsConfig {
                criticality_label: Some(CRITICALITY_LABEL.to_owned()),
                default_criticality: DEFAULT_CRITICALITY,
                crown_jewels: Vec::new(),
            },
            weights: WEIGHTS,
            rarity: RarityConfig {
                window_days: RARITY_DAYS,
                rule_half_count: RULE_HALF_COUNT,
                entity_half_count: ENTITY_HALF_COUNT,
            },
            risk: RiskConfig {
                half_life_ms: RISK_HALF_LIFE_MS,
                points: RISK_POINTS,
                half_score: RISK_HALF_SCORE,
                ignore: RISK_IGNORE
                    .iter()
                    .filter_map(|p| Glob::new(p).ok())
                    .collect(),
            },
            correlation: CorrelationConfig {
                window_ms: CORRELATION_WINDOW_MS,
                min_rules: MIN_RULES,
                min_tactics: MIN_TACTICS,
                min_modules: MIN_MODULES,
                breadth_points: BREADTH_POINTS,
            },
            suppressions: Vec::new(),
            follow_ups: Vec::new(),
            proposals: ProposalConfig {
                min_verdicts: PROPOSAL_MIN_VERDICTS,
                window_ms: PROPOSAL_WINDOW_MS,
                suppression_ttl_ms: PROPOSAL_SUPPRESSION_TTL_MS,
            },
            retention: RetentionConfig {
                closed_ms: CLOSED_RETENTION_MS,
            },
        }
    }
}

impl TriageConfig {
    /// Reads and validates a YAML config. Every key left out takes its
    /// default; unknown keys and invalid values are errors with their line.
    pub fn from_yaml(text: &str) -> Result<TriageConfig, TriageError> {
        let raw: RawConfig = yaml::from_str(text).map_err(config_error)?;
        raw.validate()
    }

    /// A short description of what changed from `old` to `self`, for the
    /// config history (`suppressions +backup-vss; weights`).
    pub fn change_summary(&self, old: &TriageConfig) -> String {
        let mut parts = Vec::new();
        let ids = |v: &[Suppression]| -> BTreeMap<String, Suppression> {
            v.iter().map(|s| (s.id.to_string(), s.clone())).collect()
        };
        named_diff(
            "suppressions",
            &ids(&old.suppressions),
            &ids(&self.suppressions),
            &mut parts,
        );
        let fids = |v: &[FollowUp]| -> BTreeMap<String, FollowUp> {
            v.iter().map(|f| (f.id.to_string(), f.clone())).collect()
        };
        named_diff(
            "follow_ups",
            &fids(&old.follow_ups),
            &fids(&self.follow_ups),
            &mut parts,
        );
        let jewels = |v: &[CrownJewel]| -> BTreeMap<String, CrownJewel> {
            v.iter().map(|j| (j.name.clone(), j.clone())).collect()
        };
        named_diff(
            "crown_jewels",
            &jewels(&old.assets.crown_jewels),
            &jewels(&self.assets.crown_jewels),
            &mut parts,
        );
        let mut changed = |name: &str, differs: bool| {
            if differs {
                parts.push(name.to_owned());
            }
        };
        changed("grouping", old.grouping != self.grouping);
        changed(
            "assets",
            old.assets.criticality_label != self.assets.criticality_label
                || old.assets.default_criticality != self.assets.default_criticality,
        );
        changed("weights", old.weights != self.weights);
        changed("rarity", old.rarity != self.rarity);
        changed("risk", old.risk != self.risk);
        changed("correlation", old.correlation != self.correlation);
        changed("proposals", old.proposals != self.proposals);
        changed("retention", old.retention != self.retention);
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join("; ")
        }
    }
}

fn named_diff<T: PartialEq>(
    section: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    parts: &mut Vec<String>,
) {
    let mut items = Vec::new();
    for (id, item) in new {
        match old.get(id) {
            None => items.push(format!("+{id}")),
            Some(o) if o != item => items.push(format!("~{id}")),
            Some(_) => {}
        }
    }
    for id in old.keys().filter(|id| !new.contains_key(*id)) {
        items.push(format!("-{id}"));
    }
    if !items.is_empty() {
        parts.push(format!("{section} {}", items.join(" ")));
    }
}

fn config_error(e: yaml::Error) -> TriageError {
    let mark = e.mark.unwrap_or(Mark { line: 1, column: 1 });
    TriageError::Config {
        line: mark.line,
        column: mark.column,
        message: e.message,
    }
}

fn at(mark: Mark, message: impl Into<String>) -> TriageError {
    TriageError::Config {
        line: mark.line,
        column: mark.column,
        message: message.into(),
    }
}

// ---- raw layer: what the file says, each value checked where it is read ----

/// A duration written with a unit (`1h`, `30d`), positive.
#[derive(Clone, Copy, Debug)]
struct Dur(i64);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let ms = time::parse_duration(&text).map_err(serde::de::Error::custom)?;
        if ms <= 0 {
            return Err(serde::de::Error::custom(format!(
                "duration `{text}` must be longer than zero"
            )));
        }
        Ok(Dur(ms))
    }
}

/// A date (`2026-06-30`, `2026-06-30T12:00:00Z`).
#[derive(Clone, Copy, Debug)]
struct Date(i64);

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        time::parse_date(&text)
            .map(Date)
            .map_err(serde::de::Error::custom)
    }
}

/// `never`, a date, or a duration after creation.
#[derive(Clone, Copy, Debug)]
struct RawExpiry(Expiry);

impl<'de> Deserialize<'de> for RawExpiry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let t = text.trim();
        if t.eq_ignore_ascii_case("never") {
            return Ok(RawExpiry(Expiry::Never));
        }
        if let Ok(at) = time::parse_date(t) {
            return Ok(RawExpiry(Expiry::At(at)));
        }
        match time::parse_duration(t) {
            Ok(ms) if ms > 0 => Ok(RawExpiry(Expiry::After(ms))),
            _ => Err(serde::de::Error::custom(format!(
                "`{t}` is not an expiry: write a UTC date (`2026-06-30`), a duration after creation (`90d`), or `never`"
            ))),
        }
    }
}

/// A weight, 0..=100.
#[derive(Clone, Copy, Debug)]
struct Weight(u32);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n > 100 {
            return Err(serde::de::Error::custom(format!(
                "weight {n} is out of range: weights are 0 to 100 (only their ratios matter)"
            )));
        }
        Ok(Weight(n))
    }
}

/// A correlation threshold: 0 (not used) or at least 2.
#[derive(Clone, Copy, Debug)]
struct Threshold(u32);

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n == 1 || n > 1000 {
            return Err(serde::de::Error::custom(format!(
                "threshold {n} is out of range: use 0 to turn it off, or 2 to 1000 (1 would make every alert an incident)"
            )));
        }
        Ok(Threshold(n))
    }
}

/// A count at least 1.
#[derive(Clone, Copy, Debug)]
struct Count(u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if !(1..=1_000_000).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "{n} is out of range: use 1 to 1000000"
            )));
        }
        Ok(Count(n))
    }
}

/// A name: 1 to 64 letters, digits, `.`, `_` or `-`.
#[derive(Clone, Debug)]
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let ok = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Name(text))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{text}` is not a valid name: use 1 to 64 letters, digits, `.`, `_` or `-`"
            )))
        }
    }
}

/// Text that must not be empty.
#[derive(Clone, Debug)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let t = text.trim();
        if t.is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        if t.len() > 1024 {
            return Err(serde::de::Error::custom(
                "is longer than 1024 bytes; shorten it",
            ));
        }
        Ok(Text(t.to_owned()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    version: Option<Spanned<u32>>,
    #[serde(default)]
    grouping: Option<RawGrouping>,
    #[serde(default)]
    assets: Option<RawAssets>,
    #[serde(default)]
    weights: Option<Spanned<RawWeights>>,
    #[serde(default)]
    rarity: Option<RawRarity>,
    #[serde(default)]
    risk: Option<RawRisk>,
    #[serde(default)]
    correlation: Option<RawCorrelation>,
    #[serde(default)]
    suppressions: Vec<Spanned<RawSuppression>>,
    #[serde(default)]
    follow_ups: Vec<Spanned<RawFollowUp>>,
    #[serde(default)]
    proposals: Option<RawProposals>,
    #[serde(default)]
    retention: Option<RawRetention>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrouping {
    #[serde(default)]
    default_window: Option<Spanned<Dur>>,
    #[serde(default)]
    windows: Vec<RawWindow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    rule: Glob,
    window: Spanned<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssets {
    #[serde(default)]
    criticality_label: Option<String>,
    #[serde(default)]
    default_criticality: Option<Criticality>,
    #[serde(default)]
    crown_jewels: Vec<Spanned<RawJewel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJewel {
    name: Name,
    #[serde(default)]
    hosts: Vec<Glob>,
    #[serde(default)]
    labels: BTreeMap<String, Glob>,
    criticality: Criticality,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    #[serde(default)]
    severity: Option<Weight>,
    #[serde(default)]
    confidence: Option<Weight>,
    #[serde(default)]
    criticality: Option<Weight>,
    #[serde(default)]
    rule_rarity: Option<Weight>,
    #[serde(default)]
    entity_rarity: Option<Weight>,
    #[serde(default)]
    intel: Option<Weight>,
    #[serde(default)]
    entity_risk: Option<Weight>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRarity {
    #[serde(default)]
    window: Option<Spanned<Dur>>,
    #[serde(default)]
    rule_half_count: Option<Count>,
    #[serde(default)]
    entity_half_count: Option<Count>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    #[serde(default)]
    half_life: Option<Spanned<Dur>>,
    #[serde(default)]
    points: Option<RawPoints>,
    #[serde(default)]
    half_score: Option<Count>,
    #[serde(default)]
    ignore: Option<Vec<Glob>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoints {
    #[serde(default)]
    informational: Option<Spanned<u32>>,
    #[serde(default)]
    low: Option<Spanned<u32>>,
    #[serde(default)]
    medium: Option<Spanned<u32>>,
    #[serde(default)]
    high: Option<Spanned<u32>>,
    #[serde(default)]
    critical: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorrelation {
    #[serde(default)]
    window: Option<Spanned<Dur>>,
    #[serde(default)]
    min_rules: Option<Threshold>,
    #[serde(default)]
    min_tactics: Option<Threshold>,
    #[serde(default)]
    min_modules: Option<Threshold>,
    #[serde(default)]
    breadth_points: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    rules: Vec<Glob>,
    #[serde(default)]
    modules: Vec<Glob>,
    #[serde(default)]
    entities: Vec<Glob>,
    #[serde(default)]
    hosts: Vec<Glob>,
    #[serde(default)]
    tags: Vec<Glob>,
    #[serde(default)]
    fields: BTreeMap<String, Glob>,
    #[serde(default)]
    min_severity: Option<Severity>,
    #[serde(default)]
    max_severity: Option<Severity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuppression {
    id: Spanned<Name>,
    author: Text,
    reason: Text,
    #[serde(default)]
    created: Option<Date>,
    expires: Option<RawExpiry>,
    scope: Spanned<RawScope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFollowUp {
    id: Spanned<Name>,
    #[serde(default)]
    when: Option<Spanned<RawScope>>,
    #[serde(default)]
    min_score: Option<Spanned<u32>>,
    #[serde(default)]
    pivot: Option<Pivot>,
    #[serde(default)]
    around: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProposals {
    #[serde(default)]
    min_verdicts: Option<Count>,
    #[serde(default)]
    window: Option<Spanned<Dur>>,
    #[serde(default)]
    suppression_ttl: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    #[serde(default)]
    closed: Option<Spanned<Dur>>,
}

/// Checks a duration is within `[min, max]`.
fn bounded(d: &Spanned<Dur>, what: &str, min: i64, max: i64) -> Result<i64, TriageError> {
    let ms = d.value.0;
    if ms < min || ms > max {
        return Err(at(
            d.mark,
            format!(
                "{what} `{}` is out of range: use {} to {}",
                time::format_duration(ms),
                time::format_duration(min),
                time::format_duration(max)
            ),
        ));
    }
    Ok(ms)
}

impl RawScope {
    fn validate(self, mark: Mark) -> Result<Scope, TriageError> {
        if let (Some(min), Some(max)) = (self.min_severity, self.max_severity)
            && min > max
        {
            return Err(at(
                mark,
                format!("min_severity {min} is above max_severity {max}; nothing could match"),
            ));
        }
        Ok(Scope {
            rules: self.rules,
            modules: self.modules,
            entities: self.entities,
            hosts: self.hosts,
            tags: self.tags,
            fields: self.fields,
            min_severity: self.min_severity,
            max_severity: self.max_severity,
        })
    }
}

impl RawConfig {
    fn validate(self) -> Result<TriageConfig, TriageError> {
        let d = TriageConfig::default();
        if let Some(v) = &self.version
            && v.value != FORMAT_VERSION
        {
            return Err(at(
                v.mark,
                format!(
                    "config version {} is not supported: this build reads version {FORMAT_VERSION}",
                    v.value
                ),
            ));
        }

        let grouping = match self.grouping {
            None => d.grouping,
            Some(g) => {
                let (lo, hi) = (SECOND_MS, 30 * DAY_MS);
                GroupingConfig {
                    default_window_ms: match &g.default_window {
                        Some(w) => bounded(w, "grouping window", lo, hi)?,
                        None => d.grouping.default_window_ms,
                    },
                    windows: g
                        .windows
                        .into_iter()
                        .map(|w| {
                            Ok(WindowRule {
                                window_ms: bounded(&w.window, "grouping window", lo, hi)?,
                                rule: w.rule,
                            })
                        })
                        .collect::<Result<_, TriageError>>()?,
                }
            }
        };

        let assets = match self.assets {
            None => d.assets,
            Some(a) => {
                let mut names = BTreeSet::new();
                let mut crown_jewels = Vec::new();
                for j in a.crown_jewels {
                    let (mark, j) = (j.mark, j.value);
                    if j.hosts.is_empty() && j.labels.is_empty() {
                        return Err(at(
                            mark,
                            format!(
                                "crown jewel `{}` names no hosts and no labels, so it would match every asset; add `hosts:` or `labels:`",
                                j.name.0
                            ),
                        ));
                    }
                    if !names.insert(j.name.0.clone()) {
                        return Err(at(
                            mark,
                            format!("crown jewel `{}` is declared twice; keep one", j.name.0),
                        ));
                    }
                    crown_jewels.push(CrownJewel {
                        name: j.name.0,
                        hosts: j.hosts,
                        labels: j.labels,
                        criticality: j.criticality,
                    });
                }
                AssetsConfig {
                    criticality_label: match a.criticality_label {
                        Some(l) if l.trim().is_empty() => None,
                        Some(l) => Some(l.trim().to_owned()),
                        None => d.assets.criticality_label,
                    },
                    default_criticality: a
                        .default_criticality
                        .unwrap_or(d.assets.default_criticality),
                    crown_jewels,
                }
            }
        };

        let weights = match self.weights {
            None => d.weights,
            Some(w) => {
                let (mark, w) = (w.mark, w.value);
                let pick = |v: Option<Weight>, default: u32| v.map_or(default, |w| w.0);
                let dw = d.weights;
                let weights = Weights {
                    severity: pick(w.severity, dw.severity),
                    confidence: pick(w.confidence, dw.confidence),
                    criticality: pick(w.criticality, dw.criticality),
                    rule_rarity: pick(w.rule_rarity, dw.rule_rarity),
                    entity_rarity: pick(w.entity_rarity, dw.entity_rarity),
                    intel: pick(w.intel, dw.intel),
                    entity_risk: pick(w.entity_risk, dw.entity_risk),
                };
                if weights.total() == 0 {
                    return Err(at(
                        mark,
                        "all weights are 0, so every alert would score 0; give at least one weight",
                    ));
                }
                weights
            }
        };

        let rarity = match self.rarity {
            None => d.rarity,
            Some(r) => RarityConfig {
                window_days: match &r.window {
                    Some(w) => {
                        let ms = bounded(w, "rarity window", DAY_MS, 90 * DAY_MS)?;
                        if ms % DAY_MS != 0 {
                            return Err(at(
                                w.mark,
                                "the rarity window counts whole days: write it in days, like `7d`",
                            ));
                        }
                        u32::try_from(ms / DAY_MS).unwrap_or(90)
                    }
                    None => d.rarity.window_days,
                },
                rule_half_count: r.rule_half_count.map_or(d.rarity.rule_half_count, |c| c.0),
                entity_half_count: r
                    .entity_half_count
                    .map_or(d.rarity.entity_half_count, |c| c.0),
            },
        };

        let risk = match self.risk {
            None => d.risk,
            Some(r) => {
                let dp = d.risk.points;
                let points = match r.points {
                    None => dp,
                    Some(p) => {
                        let pick =
                            |v: Option<Spanned<u32>>, default: u32| -> Result<u32, TriageError> {
                                match v {
                                    Some(s) if s.value > 1000 => Err(at(
                                        s.mark,
                                        format!(
                                            "{} risk points is out of range: use 0 to 1000",
                                            s.value
                                        ),
                                    )),
                                    Some(s) => Ok(s.value),
                                    None => Ok(default),
                                }
                            };
                        SeverityPoints {
                            informational: pick(p.informational, dp.informational)?,
                            low: pick(p.low, dp.low)?,
                            medium: pick(p.medium, dp.medium)?,
                            high: pick(p.high, dp.high)?,
                            critical: pick(p.critical, dp.critical)?,
                        }
                    }
                };
                RiskConfig {
                    half_life_ms: match &r.half_life {
                        Some(h) => bounded(h, "risk half-life", MINUTE_MS, 90 * DAY_MS)?,
                        None => d.risk.half_life_ms,
                    },
                    points,
                    half_score: r.half_score.map_or(d.risk.half_score, |c| c.0),
                    ignore: r.ignore.unwrap_or(d.risk.ignore),
                }
            }
        };

        let correlation = match self.correlation {
            None => d.correlation,
            Some(c) => {
                let dc = d.correlation;
                CorrelationConfig {
                    window_ms: match &c.window {
                        Some(w) => bounded(w, "correlation window", MINUTE_MS, 30 * DAY_MS)?,
                        None => dc.window_ms,
                    },
                    min_rules: c.min_rules.map_or(dc.min_rules, |t| t.0),
                    min_tactics: c.min_tactics.map_or(dc.min_tactics, |t| t.0),
                    min_modules: c.min_modules.map_or(dc.min_modules, |t| t.0),
                    breadth_points: match c.breadth_points {
                        Some(b) if b.value > 50 => {
                            return Err(at(
                                b.mark,
                                format!("breadth_points {} is out of range: use 0 to 50", b.value),
                            ));
                        }
                        Some(b) => b.value,
                        None => dc.breadth_points,
                    },
                }
            }
        };

        let mut ids = BTreeMap::new();
        let mut suppressions = Vec::new();
        for s in self.suppressions {
            let (mark, s) = (s.mark, s.value);
            let id = s.id.value.0.clone();
            if let Some(first) = ids.insert(id.clone(), s.id.mark) {
                return Err(at(
                    s.id.mark,
                    format!(
                        "suppression id `{id}` is used twice (first at line {}); ids must be unique",
                        first.line
                    ),
                ));
            }
            let Some(RawExpiry(expires)) = s.expires else {
                return Err(at(
                    mark,
                    format!(
                        "suppression `{id}` needs `expires:` — a UTC date (`2026-06-30`), a duration after creation (`90d`), or `never`"
                    ),
                ));
            };
            let scope = s.scope.value.validate(s.scope.mark)?;
            if !scope.is_targeted() {
                return Err(at(
                    s.scope.mark,
                    format!(
                        "suppression `{id}` scope names no rules, modules, entities, hosts, tags or fields, so it would close every alert; narrow it"
                    ),
                ));
            }
            if let (Some(Date(created)), Expiry::At(until)) = (s.created, expires)
                && until <= created
            {
                return Err(at(
                    mark,
                    format!("suppression `{id}` expires before it is created"),
                ));
            }
            suppressions.push(Suppression {
                id: SuppressionId::new(id),
                author: s.author.0,
                reason: s.reason.0,
                scope,
                created_ms: s.created.map(|d| d.0),
                expires,
            });
        }

        let mut fids = BTreeMap::new();
        let mut follow_ups = Vec::new();
        for f in self.follow_ups {
            let f = f.value;
            let id = f.id.value.0.clone();
            if let Some(first) = fids.insert(id.clone(), f.id.mark) {
                return Err(at(
                    f.id.mark,
                    format!(
                        "follow-up id `{id}` is used twice (first at line {}); ids must be unique",
                        first.line
                    ),
                ));
            }
            let when = match f.when {
                Some(w) => w.value.validate(w.mark)?,
                None => Scope::default(),
            };
            let min_score = match f.min_score {
                Some(s) if s.value > 100 => {
                    return Err(at(
                        s.mark,
                        format!("min_score {} is out of range: scores are 0 to 100", s.value),
                    ));
                }
                Some(s) => Some(Score::points(s.value)),
                None => None,
            };
            follow_ups.push(FollowUp {
                id: FollowUpId::new(id),
                when,
                min_score,
                pivot: f.pivot.unwrap_or_default(),
                around_ms: match &f.around {
                    Some(a) => bounded(a, "follow-up window", MINUTE_MS, 7 * DAY_MS)?,
                    None => defaults::FOLLOW_UP_AROUND_MS,
                },
            });
        }

        let proposals = match self.proposals {
            None => d.proposals,
            Some(p) => ProposalConfig {
                min_verdicts: p.min_verdicts.map_or(d.proposals.min_verdicts, |c| c.0),
                window_ms: match &p.window {
                    Some(w) => bounded(w, "proposal window", HOUR_MS, 365 * DAY_MS)?,
                    None => d.proposals.window_ms,
                },
                suppression_ttl_ms: match &p.suppression_ttl {
                    Some(w) => bounded(w, "suppression lifetime", HOUR_MS, 365 * DAY_MS)?,
                    None => d.proposals.suppression_ttl_ms,
                },
            },
        };

        let retention = match self.retention {
            None => d.retention,
            Some(r) => RetentionConfig {
                closed_ms: match &r.closed {
                    Some(c) => bounded(c, "retention", HOUR_MS, 3650 * DAY_MS)?,
                    None => d.retention.closed_ms,
                },
            },
        };

        Ok(TriageConfig {
            grouping,
            assets,
            weights,
            rarity,
            risk,
            correlation,
            suppressions,
            follow_ups,
            proposals,
            retention,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String) {
        match TriageConfig::from_yaml(text) {
            Err(TriageError::Config { line, message, .. }) => (line, message),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(
            TriageConfig::from_yaml("").ok(),
            Some(TriageConfig::default())
        );
        assert_eq!(
            TriageConfig::from_yaml("version: 1\n").ok(),
            Some(TriageConfig::default())
        );
    }

    #[test]
    fn errors_carry_the_line_of_the_mistake() {
        let (line, msg) = err("version: 1\nweights:\n  severity: 30\n  wieghts: 2\n");
        assert_eq!(line, 4);
        assert!(msg.contains("unknown field `wieghts`"), "{msg}");
        let (line, msg) = err("weights:\n  severity: 300\n");
        assert_eq!(line, 2);
        assert!(msg.contains("0 to 100"), "{msg}");
        let (line, msg) = err("grouping:\n  default_window: 1 hour\n");
        assert_eq!(line, 2);
        assert!(msg.contains("write a number and a unit"), "{msg}");
        let (line, msg) = err("grouping:\n  windows:\n    - rule: \"dc[0-9\"\n      window: 1h\n");
        assert_eq!(line, 3);
        assert!(msg.contains("never closed"), "{msg}");
        let (line, msg) = err("rarity:\n  window: 36h\n");
        assert_eq!(line, 2);
        assert!(msg.contains("whole days"), "{msg}");
        let (line, msg) = err("version: 2\n");
        assert_eq!(line, 1);
        assert!(msg.contains("version 1"), "{msg}");
        let (line, msg) = err("correlation:\n  min_rules: 1\n");
        assert_eq!(line, 2);
        assert!(msg.contains("every alert an incident"), "{msg}");
        let (line, msg) = err(
            "weights:\n  severity: 0\n  confidence: 0\n  criticality: 0\n  rule_rarity: 0\n  entity_rarity: 0\n  intel: 0\n  entity_risk: 0\n",
        );
        assert_eq!(line, 2);
        assert!(msg.contains("all weights are 0"), "{msg}");
    }

    const SUPPRESSION: &str = "\
suppressions:
  - id: backup-vss
    author: alice
    reason: nightly backup deletes shadow copies
    expires: 90d
    scope:
      rules: [\"sigma/vss-*\"]
      hosts: [\"bkp-*\"]
";

    #[test]
    fn suppressions_are_checked() {
        let c = TriageConfig::from_yaml(SUPPRESSION).expect("valid");
        assert_eq!(c.suppressions[0].expires, Expiry::After(90 * DAY_MS));
        let twice = format!("{SUPPRESSION}{}", &SUPPRESSION["suppressions:\n".len()..]);
        let (line, msg) = err(&twice);
        assert_eq!(line, 9);
        assert!(msg.contains("used twice (first at line 2)"), "{msg}");
        let (line, msg) = err(&SUPPRESSION.replace("    expires: 90d\n", ""));
        assert_eq!(line, 2);
        assert!(msg.contains("needs `expires:`"), "{msg}");
        let (line, msg) = err(&SUPPRESSION.replace("expires: 90d", "expires: soon"));
        assert_eq!(line, 5);
        assert!(msg.contains("not an expiry"), "{msg}");
        let (line, msg) = err(
            "suppressions:\n  - id: all\n    author: a\n    reason: r\n    expires: never\n    scope:\n      min_severity: low\n",
        );
        assert_eq!(line, 7);
        assert!(msg.contains("close every alert"), "{msg}");
        let (line, msg) = err(&SUPPRESSION.replace("author: alice", "author: \"\""));
        assert_eq!(line, 3);
        assert!(msg.contains("must not be empty"), "{msg}");
        let (line, _) = err(&SUPPRESSION.replace("id: backup-vss", "id: backup vss"));
        assert_eq!(line, 2);
    }

    #[test]
    fn change_summary_names_what_changed() {
        let old = TriageConfig::default();
        let new = TriageConfig::from_yaml(&format!("{SUPPRESSION}weights:\n  intel: 20\n"))
            .expect("valid");
        assert_eq!(
            new.change_summary(&old),
            "suppressions +backup-vss; weights"
        );
        assert_eq!(
            old.change_summary(&new),
            "suppressions -backup-vss; weights"
        );
        assert_eq!(old.change_summary(&old), "no change");
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/triage.md");

    /// The fenced YAML block of `docs/triage.md` whose first line is `marker`.
    fn block(marker: &str) -> String {
        let start = DOC
            .find(&format!("```yaml\n{marker}\n"))
            .expect("block in docs/triage.md");
        let body = &DOC[start + "```yaml\n".len()..];
        body[..body.find("```").expect("closing fence")].to_owned()
    }

    #[test]
    fn the_documented_defaults_are_the_code_defaults() {
        let parsed = TriageConfig::from_yaml(&block("# defaults")).expect("defaults block parses");
        assert_eq!(parsed, TriageConfig::default());
    }

    #[test]
    fn the_documented_example_is_valid() {
        let c = TriageConfig::from_yaml(&block("# example")).expect("example parses");
        assert_eq!(c.suppressions.len(), 3);
        assert_eq!(
            c.suppressions[0].expires,
            Expiry::At(time::parse_date("2026-12-31").expect("date"))
        );
        assert_eq!(c.suppressions[1].expires, Expiry::After(90 * DAY_MS));
        assert_eq!(c.suppressions[2].expires, Expiry::Never);
        assert!(
            c.suppressions[0]
                .scope
                .fields
                .get("ParentImage")
                .is_some_and(|g| g.matches("C:\\Program Files\\Veeam\\Backup\\VeeamAgent.exe"))
        );
        assert_eq!(c.assets.crown_jewels.len(), 2);
        assert_eq!(c.grouping.window_for("bruteforce/spray"), 6 * HOUR_MS);
        assert_eq!(c.follow_ups[0].min_score, Some(Score::points(50)));
        assert_eq!(c.correlation.min_tactics, 2);
        assert_eq!(c.weights.total(), 100);
    }

    #[test]
    fn the_documented_error_is_what_the_code_says() {
        let err = TriageConfig::from_yaml("version: 1\nweights:\n  severity: 30\n  wieghts: 2\n")
            .expect_err("unknown key")
            .to_string();
        let line = DOC
            .lines()
            .find(|l| l.starts_with("triage config, line 4"))
            .expect("error line in docs");
        assert_eq!(err, line);
    }

    #[test]
    fn the_documented_bounds_are_the_code_bounds() {
        use crate::{case, group, incident, query, rarity, risk, triage, verdict};
        // Each number as docs/triage.md states it.
        assert_eq!(triage::MAX_FUTURE_MS, DAY_MS);
        assert_eq!(group::MAX_LINKS, 10);
        assert_eq!(
            (
                group::MAX_MEMBERS,
                group::MAX_MODULES,
                group::MAX_TECHNIQUES
            ),
            (32, 8, 32)
        );
        assert_eq!((group::MAX_FIELDS, group::MAX_FIELD_VALUE), (64, 512));
        assert_eq!(incident::MAX_INCIDENT_ALERTS, 500);
        assert_eq!(triage::MAX_ALERTS, 500_000);
        assert_eq!((rarity::MAX_RULES, rarity::MAX_ENTITIES), (20_000, 100_000));
        assert_eq!(
            (
                risk::FORGET_BELOW_MILLI,
                risk::MAX_TRACKED,
                risk::MAX_MEMBERS
            ),
            (10, 50_000, 64)
        );
        assert_eq!(triage::MAX_HUNTS, 10_000);
        assert_eq!(
            (case::MAX_COMMENTS, case::MAX_TEXT, case::MAX_HISTORY),
            (200, 4096, 100)
        );
        assert_eq!(verdict::MAX_NOISE_KEYS, 10_000);
        assert_eq!(triage::MAX_CONFIG_HISTORY, 100);
        assert_eq!(
            (query::DEFAULT_PAGE_SIZE, query::MAX_PAGE_SIZE),
            (100, 1000)
        );
        assert_eq!(defaults::FOLLOW_UP_AROUND_MS, HOUR_MS);
        for number in [
            "first 100",
            "500,000",
            "20,000 rules, 100,000 entities",
            "0.01 points",
            "50,000",
            "10,000",
            "200, each at most 4096 bytes",
            "64 most recent",
            "more than 1 day ahead",
            "the last 100 records",
        ] {
            assert!(
                DOC.contains(number),
                "docs/triage.md no longer says `{number}`"
            );
        }
    }
}
