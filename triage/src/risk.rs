//! Entity risk (risk-based alerting): every open alert adds risk to its
//! hosts, users and IPs, decaying with a half-life over event time; and when
//! one entity collects alerts of enough distinct rules, tactics or modules
//! within a window, those alerts become one correlated incident for it.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::config::CorrelationConfig;
use crate::finding::Entity;
use crate::ids::{AlertId, IncidentId};
use crate::time::{self, exp2_neg};
use crate::tracked::Tracked;

/// Alerts remembered per entity for correlation (the oldest go first).
pub const MAX_MEMBERS: usize = 64;
/// Entities tracked; past it, the lowest-risk ones are forgotten.
pub const MAX_TRACKED: usize = 50_000;
/// Risk (thousandths of a point) below which an entity is forgotten.
pub const FORGET_BELOW_MILLI: u64 = 10;

/// An entity's risk and recent alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRisk {
    /// The entity.
    pub entity: Entity,
    /// Risk in thousandths of a point, as of `as_of_ms`.
    pub risk_milli: u64,
    /// Event time the risk was last brought to.
    pub as_of_ms: i64,
    /// Recent alerts on it.
    pub members: BTreeMap<AlertId, Member>,
    /// Its open incident, if any: new alerts join it instead of raising another.
    pub incident: Option<IncidentId>,
}

/// What correlation needs of an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The alert's first finding (event time).
    pub first_seen_ms: i64,
    /// Its rule.
    pub rule: String,
    /// Its module.
    pub module: String,
    /// Its tactics.
    pub tactics: BTreeSet<String>,
}

impl EntityRisk {
    /// A new entity with no risk.
    pub fn new(entity: Entity) -> Self {
        EntityRisk {
            entity,
            risk_milli: 0,
            as_of_ms: i64::MIN,
            members: BTreeMap::new(),
            incident: None,
        }
    }

    /// Risk at event time `t`: decayed from `as_of_ms` when later; the
    /// stored value when earlier (risk does not grow back in time).
    pub fn risk_at(&self, t: i64, half_life_ms: i64) -> u64 {
        if t <= self.as_of_ms || self.risk_milli == 0 {
            return self.risk_milli;
        }
        decay(
            self.risk_milli,
            t.saturating_sub(self.as_of_ms),
            half_life_ms,
        )
    }

    /// Adds `milli` of risk at event time `t`. A contribution older than
    /// the entity's current time is decayed to it, so the order findings
    /// arrive in changes nothing but rounding.
    pub fn add(&mut self, milli: u64, t: i64, half_life_ms: i64) {
        if self.as_of_ms == i64::MIN || t >= self.as_of_ms {
            self.risk_milli = self.risk_at(t, half_life_ms).saturating_add(milli);
            self.as_of_ms = t;
        } else {
            let aged = decay(milli, self.as_of_ms - t, half_life_ms);
            self.risk_milli = self.risk_milli.saturating_add(aged);
        }
    }

    /// Remembers an alert, dropping the oldest past [`MAX_MEMBERS`].
    pub fn remember(&mut self, alert: AlertId, member: Member) {
        self.members.insert(alert, member);
        while self.members.len() > MAX_MEMBERS {
            let oldest = self
                .members
                .iter()
                .min_by_key(|(id, m)| (m.first_seen_ms, **id))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.members.remove(&id),
                None => break,
            };
        }
    }
}

fn decay(milli: u64, elapsed_ms: i64, half_life_ms: i64) -> u64 {
    let halves = elapsed_ms as f64 / half_life_ms.max(1) as f64;
    (milli as f64 * exp2_neg(halves)).floor() as u64
}

/// Every tracked entity, by `kind:value`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskBook {
    /// Entities.
    pub entities: Tracked<String, EntityRisk>,
}

impl RiskBook {
    /// Forgets entities whose risk at `now_event_ms` fell below
    /// [`FORGET_BELOW_MILLI`] and that have no open incident, then, past
    /// [`MAX_TRACKED`], the lowest-risk ones (ties by key).
    pub fn prune(
        &mut self,
        now_event_ms: i64,
        half_life_ms: i64,
        open_incident: impl Fn(IncidentId) -> bool,
    ) {
        self.entities.retain(|_, e| {
            e.risk_at(now_event_ms, half_life_ms) >= FORGET_BELOW_MILLI
                || e.incident.is_some_and(&open_incident)
        });
        if self.entities.len() > MAX_TRACKED {
            let keep = MAX_TRACKED - MAX_TRACKED / 10;
            let mut by_risk: Vec<(u64, String)> = self
                .entities
                .iter()
                .map(|(k, e)| (e.risk_at(now_event_ms, half_life_ms), k.clone()))
                .collect();
            by_risk.sort();
            let excess = by_risk.len() - keep;
            for (_, k) in by_risk.into_iter().take(excess) {
                self.entities.remove(&k);
            }
        }
    }
}

/// Alerts on one entity that together cross a correlation threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The alerts within the window.
    pub alerts: Vec<AlertId>,
    /// Why, for people (`3 distinct rules within 24h: a, b, c`).
    pub reason: String,
}

/// The first window (in time order) of `members` that crosses a threshold.
/// `members` are the entity's alerts that count (open or closed as a true
/// positive, not suppressed or judged noise). Tactics and modules count only
/// across at least two rules: one rule whose techniques span several
/// tactics is one detection, not activity that correlates.
pub fn correlate(members: &[(AlertId, &Member)], cfg: &CorrelationConfig) -> Option<Trigger> {
    if cfg.min_rules == 0 && cfg.min_tactics == 0 && cfg.min_modules == 0 {
        return None;
    }
    let mut sorted: Vec<&(AlertId, &Member)> = members.iter().collect();
    sorted.sort_by_key(|(id, m)| (m.first_seen_ms, *id));
    let window = time::format_duration(cfg.window_ms);
    for (i, (_, start)) in sorted.iter().enumerate() {
        let end = start.first_seen_ms.saturating_add(cfg.window_ms);
        let inside: Vec<&(AlertId, &Member)> = sorted[i..]
            .iter()
            .take_while(|(_, m)| m.first_seen_ms <= end)
            .copied()
            .collect();
        let rules: BTreeSet<&str> = inside.iter().map(|(_, m)| m.rule.as_str()).collect();
        let modules: BTreeSet<&str> = inside.iter().map(|(_, m)| m.module.as_str()).collect();
        let tactics: BTreeSet<&str> = inside
            .iter()
            .flat_map(|(_, m)| m.tactics.iter().map(String::as_str))
            .collect();
        let list = |set: &BTreeSet<&str>| set.iter().copied().collect::<Vec<_>>().join(", ");
        let reason = if cfg.min_rules > 0 && rules.len() >= cfg.min_rules as usize {
            Some(format!(
                "{} distinct rules within {window}: {}",
                rules.len(),
                list(&rules)
            ))
        } else if cfg.min_tactics > 0
            && tactics.len() >= cfg.min_tactics as usize
            && rules.len() >= 2
        {
            Some(format!(
                "{} distinct tactics within {window}: {}",
                tactics.len(),
                list(&tactics)
            ))
        } else if cfg.min_modules > 0
            && modules.len() >= cfg.min_modules as usize
            && rules.len() >= 2
        {
            Some(format!(
                "{} distinct modules within {window}: {}",
                modules.len(),
                list(&modules)
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Some(Trigger {
                alerts: inside.iter().map(|(id, _)| *id).collect(),
                reason,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::EntityKind;
    use crate::time::HOUR_MS;

    fn entity() -> EntityRisk {
        EntityRisk::new(Entity::new(EntityKind::Host, "ws01").expect("entity"))
    }

    #[test]
    fn risk_halves_after_one_half_life() {
        let mut e = entity();
        e.add(40_000, 0, HOUR_MS);
        assert_eq!(e.risk_at(0, HOUR_MS), 40_000);
        assert_eq!(e.risk_at(HOUR_MS, HOUR_MS), 20_000);
        assert_eq!(e.risk_at(2 * HOUR_MS, HOUR_MS), 10_000);
        // Earlier than the last update: no growing back.
        assert_eq!(e.risk_at(-HOUR_MS, HOUR_MS), 40_000);
    }

    #[test]
    fn arrival_order_does_not_matter() {
        let (mut a, mut b) = (entity(), entity());
        a.add(10_000, 0, HOUR_MS);
        a.add(10_000, HOUR_MS, HOUR_MS);
        b.add(10_000, HOUR_MS, HOUR_MS);
        b.add(10_000, 0, HOUR_MS);
        assert_eq!(a.risk_at(HOUR_MS, HOUR_MS), 15_000);
        assert_eq!(b.risk_at(HOUR_MS, HOUR_MS), 15_000);
    }

    fn member(t: i64, rule: &str, tactic: &str) -> Member {
        Member {
            first_seen_ms: t,
            rule: rule.into(),
            module: "m@1".into(),
            tactics: [tactic.to_owned()].into(),
        }
    }

    #[test]
    fn correlation_needs_the_threshold_within_one_window() {
        let cfg = CorrelationConfig {
            window_ms: 24 * HOUR_MS,
            min_rules: 3,
            min_tactics: 0,
            min_modules: 0,
            breadth_points: 10,
        };
        let (a, b, c) = (
            member(0, "r1", "x"),
            member(HOUR_MS, "r2", "x"),
            member(30 * HOUR_MS, "r3", "x"),
        );
        let spread = [(AlertId(1), &a), (AlertId(2), &b), (AlertId(3), &c)];
        assert_eq!(correlate(&spread, &cfg), None);
        let c = member(2 * HOUR_MS, "r3", "x");
        let close = [(AlertId(1), &a), (AlertId(2), &b), (AlertId(3), &c)];
        let t = correlate(&close, &cfg).expect("trigger");
        assert_eq!(t.alerts, [AlertId(1), AlertId(2), AlertId(3)]);
        assert!(
            t.reason
                .starts_with("3 distinct rules within 1d: r1, r2, r3"),
            "{}",
            t.reason
        );
        let same_rule = [(AlertId(1), &a), (AlertId(2), &a), (AlertId(3), &a)];
        assert_eq!(correlate(&same_rule, &cfg), None);
    }

    #[test]
    fn one_rule_spanning_several_tactics_does_not_correlate_with_itself() {
        let cfg = CorrelationConfig {
            window_ms: 24 * HOUR_MS,
            min_rules: 0,
            min_tactics: 3,
            min_modules: 0,
            breadth_points: 10,
        };
        // T1078 (valid accounts) alone names four tactics.
        let mut wide = member(0, "admin-logon", "initial-access");
        wide.tactics
            .extend(["persistence", "privilege-escalation", "defense-evasion"].map(String::from));
        let later = Member {
            first_seen_ms: HOUR_MS,
            ..wide.clone()
        };
        let one_rule = [(AlertId(1), &wide), (AlertId(2), &later)];
        assert_eq!(correlate(&one_rule, &cfg), None);
        let other = member(2 * HOUR_MS, "encoded-command", "execution");
        let two_rules = [(AlertId(1), &wide), (AlertId(3), &other)];
        let t = correlate(&two_rules, &cfg).expect("trigger");
        assert!(t.reason.starts_with("5 distinct tactics"), "{}", t.reason);
    }
}
