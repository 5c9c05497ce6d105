//! Enrichment: how critical the assets an alert touches are (shard labels,
//! declared crown jewels), and the ATT&CK names of its techniques and tactics.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::attack::{self, AttackTag, TechniqueInfo};
use crate::glob::Glob;

/// How much an asset matters.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// An ordinary asset.
    #[default]
    Low,
    /// Matters.
    Medium,
    /// Matters a lot.
    High,
    /// A crown jewel: domain controllers, payment systems.
    Critical,
}

impl Criticality {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    /// The score factor: low 0.25, medium 0.5, high 0.75, critical 1.
    pub fn factor(self) -> f64 {
        f64::from(self as u8 + 1) / 4.0
    }

    /// Reads a name, as in a shard label (`criticality=high`).
    pub fn parse(text: &str) -> Option<Criticality> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Criticality::Low),
            "medium" => Some(Criticality::Medium),
            "high" => Some(Criticality::High),
            "critical" => Some(Criticality::Critical),
            _ => None,
        }
    }
}

/// A declared set of important assets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrownJewel {
    /// Its name, shown as the reason for the criticality.
    pub name: String,
    /// Host patterns; empty: any host.
    pub hosts: Vec<Glob>,
    /// Shard labels that must all be present with a matching value; empty: any shard.
    pub labels: BTreeMap<String, Glob>,
    /// The criticality of what matches.
    pub criticality: Criticality,
}

impl CrownJewel {
    /// Whether the asset (a host, if known, on a shard with `labels`) is one.
    pub fn matches(&self, host: Option<&str>, labels: &BTreeMap<String, String>) -> bool {
        let host_ok =
            self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|g| g.matches(h)));
        let labels_ok = self
            .labels
            .iter()
            .all(|(k, g)| labels.get(k).is_some_and(|v| g.matches(v)));
        host_ok && labels_ok
    }
}

/// Where asset criticality comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetsConfig {
    /// A shard label whose value names a criticality (`criticality: high`);
    /// `None` to ignore labels.
    pub criticality_label: Option<String>,
    /// The criticality of assets nothing says anything about.
    pub default_criticality: Criticality,
    /// Declared crown jewels.
    pub crown_jewels: Vec<CrownJewel>,
}

impl AssetsConfig {
    /// The highest criticality that applies to an asset, and why.
    pub fn criticality_of(
        &self,
        host: Option<&str>,
        shard: &str,
        labels: &BTreeMap<String, String>,
    ) -> (Criticality, String) {
        let mut best = (self.default_criticality, "default".to_owned());
        if let Some(label) = &self.criticality_label
            && let Some(c) = labels.get(label).and_then(|v| Criticality::parse(v))
            && c > best.0
        {
            best = (c, format!("shard {shard} label {label}={}", c.name()));
        }
        for jewel in &self.crown_jewels {
            if jewel.criticality > best.0 && jewel.matches(host, labels) {
                best = (jewel.criticality, format!("crown jewel {}", jewel.name));
            }
        }
        best
    }
}

/// The techniques (with names and tactics) and tactics a finding names
/// through its technique ids and `attack.*` tags.
pub fn attack_of(techniques: &[String], tags: &[String]) -> (Vec<TechniqueInfo>, BTreeSet<String>) {
    let catalog = attack::catalog();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut tactics = BTreeSet::new();
    for id in techniques {
        if let Some(id) = attack::normalize_technique(id) {
            ids.insert(id);
        }
    }
    for tag in tags {
        match attack::parse_tag(tag) {
            Some(AttackTag::Technique(id)) => {
                ids.insert(id);
            }
            Some(AttackTag::Tactic(t)) => {
                tactics.insert(t);
            }
            None => {}
        }
    }
    let infos: Vec<TechniqueInfo> = ids.iter().filter_map(|id| catalog.technique(id)).collect();
    for info in &infos {
        tactics.extend(info.tactics.iter().cloned());
    }
    (infos, tactics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> AssetsConfig {
        AssetsConfig {
            criticality_label: Some("criticality".into()),
            default_criticality: Criticality::Low,
            crown_jewels: vec![
                CrownJewel {
                    name: "domain-controllers".into(),
                    hosts: vec![Glob::new("dc*").expect("glob")],
                    labels: BTreeMap::new(),
                    criticality: Criticality::Critical,
                },
                CrownJewel {
                    name: "finance".into(),
                    hosts: vec![],
                    labels: [("dept".to_owned(), Glob::new("fin*").expect("glob"))].into(),
                    criticality: Criticality::High,
                },
            ],
        }
    }

    #[test]
    fn the_highest_source_wins_and_says_why() {
        let a = assets();
        let none = BTreeMap::new();
        assert_eq!(
            a.criticality_of(Some("ws01"), "s1", &none),
            (Criticality::Low, "default".into())
        );
        assert_eq!(
            a.criticality_of(Some("DC01.corp"), "s1", &none),
            (
                Criticality::Critical,
                "crown jewel domain-controllers".into()
            )
        );
        let labels = [("criticality".to_owned(), "medium".to_owned())].into();
        assert_eq!(
            a.criticality_of(Some("ws01"), "s1", &labels),
            (
                Criticality::Medium,
                "shard s1 label criticality=medium".into()
            )
        );
        let fin = [("dept".to_owned(), "Finance".to_owned())].into();
        assert_eq!(a.criticality_of(None, "s2", &fin).0, Criticality::High);
    }

    #[test]
    fn attack_names_from_ids_and_tags() {
        let (techniques, tactics) = attack_of(
            &["T1059.001".into(), "bogus".into()],
            &[
                "attack.t1003.001".into(),
                "attack.persistence".into(),
                "sigma".into(),
            ],
        );
        let ids: Vec<&str> = techniques.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["T1003.001", "T1059.001"]);
        assert!(tactics.contains("execution"));
        assert!(tactics.contains("credential-access"));
        assert!(tactics.contains("persistence"));
    }
}
