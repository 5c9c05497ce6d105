//! The score: one formula for every alert (see `docs/triage.md`).
//!
//! Each term has a factor `x` in [0, 1] and a weight `w`; its contribution
//! is `floor(10000 · w · x / W) / 100` points, where `W` is the sum of the
//! weights, and the score is the sum of the contributions: between 0 and
//! 100, and the terms an alert shows add up to its score exactly. Scores are
//! kept in hundredths of a point (integers), so replicas and snapshots agree
//! to the bit.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::enrich::Criticality;
use crate::finding::Severity;

/// A score in hundredths of a point, 0..=10000 (shown as `0.00`..`100.00`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Score(pub u32);

impl Score {
    /// The highest score.
    pub const MAX: Score = Score(10_000);

    /// A whole number of points.
    pub fn points(points: u32) -> Score {
        Score(points.saturating_mul(100).min(10_000))
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Relative weights of the alert score's terms, 0..=100 each; only their
/// ratios matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// The alert's highest severity.
    pub severity: u32,
    /// The highest confidence of its findings.
    pub confidence: u32,
    /// Criticality of the assets involved.
    pub criticality: u32,
    /// How rarely the rule fired elsewhere recently.
    pub rule_rarity: u32,
    /// How rarely the entity showed up elsewhere recently.
    pub entity_rarity: u32,
    /// Intel matches.
    pub intel: u32,
    /// Risk accumulated by the alert's entities.
    pub entity_risk: u32,
}

impl Weights {
    /// Their sum.
    pub fn total(&self) -> u32 {
        self.severity
            + self.confidence
            + self.criticality
            + self.rule_rarity
            + self.entity_rarity
            + self.intel
            + self.entity_risk
    }
}

/// Which term of a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermName {
    /// Alert: severity.
    Severity,
    /// Alert: confidence.
    Confidence,
    /// Alert: asset criticality.
    Criticality,
    /// Alert: rule rarity.
    RuleRarity,
    /// Alert: entity rarity.
    EntityRarity,
    /// Alert: intel matches.
    Intel,
    /// Alert: entity risk.
    EntityRisk,
    /// Incident: its highest-scoring alert.
    StrongestAlert,
    /// Incident: how many different rules and tactics it spans.
    Breadth,
}

impl TermName {
    /// The name as written in docs and output.
    pub fn name(self) -> &'static str {
        match self {
            TermName::Severity => "severity",
            TermName::Confidence => "confidence",
            TermName::Criticality => "criticality",
            TermName::RuleRarity => "rule_rarity",
            TermName::EntityRarity => "entity_rarity",
            TermName::Intel => "intel",
            TermName::EntityRisk => "entity_risk",
            TermName::StrongestAlert => "strongest_alert",
            TermName::Breadth => "breadth",
        }
    }
}

/// One term of a score: what went in and what it added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreTerm {
    /// Which term.
    pub name: TermName,
    /// The input, for people (`high`, `3 other findings of this rule in 7d`).
    pub input: String,
    /// The factor in thousandths (0..=1000), rounded down; 0 for incident terms.
    pub factor_permille: u32,
    /// Its weight (0 for incident terms).
    pub weight: u32,
    /// What it added to the score.
    pub contribution: Score,
}

/// What an alert's score is computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertFactors {
    /// Highest severity.
    pub severity: Severity,
    /// Highest confidence.
    pub confidence: u8,
    /// Highest criticality of the assets involved, and why.
    pub criticality: (Criticality, String),
    /// Findings of the rule in the rarity window, outside this alert.
    pub rule_others: u64,
    /// Findings on the entity in the rarity window, outside this alert.
    pub entity_others: u64,
    /// Intel matches.
    pub intel: u32,
    /// Highest risk of the alert's entities, in thousandths of a point.
    pub risk_milli: u64,
}

/// Constants of the factors, from the config.
#[derive(Clone, Copy, Debug)]
pub struct FactorParams {
    /// Findings elsewhere at which rule rarity is 0.5.
    pub rule_half_count: u32,
    /// Findings elsewhere at which entity rarity is 0.5.
    pub entity_half_count: u32,
    /// Risk points at which the entity risk factor is 0.5.
    pub risk_half_score: u32,
    /// Rarity window, days (for the term's text).
    pub rarity_days: u32,
}

/// Severity factor: informational 0, low 0.25, medium 0.5, high 0.75, critical 1.
pub fn severity_factor(s: Severity) -> f64 {
    f64::from(s as u8) / 4.0
}

/// `k / (k + n)`: 1 when nothing else was seen, 0.5 at `k`, toward 0 after.
pub fn rarity_factor(others: u64, half_count: u32) -> f64 {
    let k = f64::from(half_count.max(1));
    k / (k + others as f64)
}

/// `m / (m + 1)`: 0, 0.5, 0.67, 0.75, …
pub fn intel_factor(matches: u32) -> f64 {
    let m = f64::from(matches);
    m / (m + 1.0)
}

/// `R / (R + H)`, R the risk in points, H the half score.
pub fn risk_factor(risk_milli: u64, half_score: u32) -> f64 {
    let r = risk_milli as f64 / 1000.0;
    let h = f64::from(half_score.max(1));
    r / (r + h)
}

/// The score of an alert and its terms.
pub fn alert_score(f: &AlertFactors, w: &Weights, p: &FactorParams) -> (Score, Vec<ScoreTerm>) {
    let total = f64::from(w.total().max(1));
    let term = |name, input: String, x: f64, weight: u32| {
        let x = x.clamp(0.0, 1.0);
        ScoreTerm {
            name,
            input,
            factor_permille: (x * 1000.0).floor() as u32,
            weight,
            contribution: Score((10_000.0 * f64::from(weight) * x / total).floor() as u32),
        }
    };
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let terms = vec![
        term(
            TermName::Severity,
            f.severity.name().to_owned(),
            severity_factor(f.severity),
            w.severity,
        ),
        term(
            TermName::Confidence,
            format!("{}%", f.confidence.min(100)),
            f64::from(f.confidence.min(100)) / 100.0,
            w.confidence,
        ),
        term(
            TermName::Criticality,
            format!("{} ({})", f.criticality.0.name(), f.criticality.1),
            f.criticality.0.factor(),
            w.criticality,
        ),
        term(
            TermName::RuleRarity,
            format!(
                "{} other finding{} of this rule in {}d",
                f.rule_others,
                plural(f.rule_others),
                p.rarity_days
            ),
            rarity_factor(f.rule_others, p.rule_half_count),
            w.rule_rarity,
        ),
        term(
            TermName::EntityRarity,
            format!(
                "{} other finding{} on this entity in {}d",
                f.entity_others,
                plural(f.entity_others),
                p.rarity_days
            ),
            rarity_factor(f.entity_others, p.entity_half_count),
            w.entity_rarity,
        ),
        term(
            TermName::Intel,
            format!(
                "{} intel match{}",
                f.intel,
                if f.intel == 1 { "" } else { "es" }
            ),
            intel_factor(f.intel),
            w.intel,
        ),
        term(
            TermName::EntityRisk,
            format!(
                "{}.{:03} risk points",
                f.risk_milli / 1000,
                f.risk_milli % 1000
            ),
            risk_factor(f.risk_milli, p.risk_half_score),
            w.entity_risk,
        ),
    ];
    let score = Score(
        terms
            .iter()
            .map(|t| t.contribution.0)
            .sum::<u32>()
            .min(10_000),
    );
    (score, terms)
}

/// The score of an incident: its strongest alert's score, plus
/// `breadth_points` for each distinct rule beyond the first and each
/// distinct tactic beyond the first, up to 100 in all.
pub fn incident_score(
    strongest: Score,
    rules: usize,
    tactics: usize,
    breadth_points: u32,
) -> (Score, Vec<ScoreTerm>) {
    let extra = rules.saturating_sub(1) + tactics.saturating_sub(1);
    let breadth = u32::try_from(extra)
        .unwrap_or(u32::MAX)
        .saturating_mul(breadth_points)
        .saturating_mul(100)
        .min(10_000 - strongest.0.min(10_000));
    let terms = vec![
        ScoreTerm {
            name: TermName::StrongestAlert,
            input: format!("strongest alert scores {strongest}"),
            factor_permille: 0,
            weight: 0,
            contribution: strongest,
        },
        ScoreTerm {
            name: TermName::Breadth,
            input: format!("{rules} distinct rules, {tactics} distinct tactics"),
            factor_permille: 0,
            weight: 0,
            contribution: Score(breadth),
        },
    ];
    (Score(strongest.0 + breadth), terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> FactorParams {
        FactorParams {
            rule_half_count: 20,
            entity_half_count: 20,
            risk_half_score: 100,
            rarity_days: 7,
        }
    }

    const W: Weights = Weights {
        severity: 25,
        confidence: 10,
        criticality: 20,
        rule_rarity: 15,
        entity_rarity: 5,
        intel: 10,
        entity_risk: 15,
    };

    fn factors() -> AlertFactors {
        AlertFactors {
            severity: Severity::High,
            confidence: 80,
            criticality: (Criticality::Low, "default".into()),
            rule_others: 20,
            entity_others: 0,
            intel: 1,
            risk_milli: 100_000,
        }
    }

    #[test]
    fn terms_sum_to_the_score() {
        let (score, terms) = alert_score(&factors(), &W, &params());
        assert_eq!(terms.iter().map(|t| t.contribution.0).sum::<u32>(), score.0);
        // 18.75 + 8 + 5 + 7.5 + 5 + 5 + 7.5
        assert_eq!(score, Score(5_675));
        assert_eq!(score.to_string(), "56.75");
    }

    #[test]
    fn the_maximum_is_100() {
        let f = AlertFactors {
            severity: Severity::Critical,
            confidence: 100,
            criticality: (Criticality::Critical, "x".into()),
            rule_others: 0,
            entity_others: 0,
            intel: u32::MAX,
            risk_milli: u64::MAX,
        };
        let (score, _) = alert_score(&f, &W, &params());
        assert!(score <= Score::MAX && score.0 >= 9_990, "{score}");
    }

    #[test]
    fn incident_breadth_is_capped_at_100() {
        let (s, terms) = incident_score(Score(4_000), 3, 2, 10);
        assert_eq!(s, Score(7_000));
        assert_eq!(terms.iter().map(|t| t.contribution.0).sum::<u32>(), s.0);
        let (s, _) = incident_score(Score(9_000), 10, 10, 10);
        assert_eq!(s, Score::MAX);
    }
}
