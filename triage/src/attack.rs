//! MITRE ATT&CK Enterprise v18.1 technique and tactic names, embedded from
//! `data/` (see `data/NOTICE.md` for the licence), and the ways findings name
//! them: technique ids (`T1059.001`) and Sigma tags (`attack.t1059.001`,
//! `attack.execution`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const TECHNIQUES_TSV: &str = include_str!("../data/enterprise-techniques-v18.1.tsv");
const TACTICS_TSV: &str = include_str!("../data/enterprise-tactics-v18.1.tsv");

/// The ATT&CK version the names come from.
pub const ATTACK_VERSION: &str = "enterprise-v18.1";

/// A technique as the catalog knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TechniqueEntry {
    /// Name (`PowerShell`).
    pub name: String,
    /// Tactic shortnames (`execution`).
    pub tactics: Vec<String>,
}

/// A tactic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TacticEntry {
    /// `TA0002`.
    pub id: String,
    /// `Execution`.
    pub name: String,
}

/// Technique and tactic names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttackCatalog {
    techniques: BTreeMap<String, TechniqueEntry>,
    tactics: BTreeMap<String, TacticEntry>,
    /// Tactic shortnames in the order of the table, which is the matrix's
    /// kill-chain order (reconnaissance first): reports list tactics so.
    tactic_order: Vec<String>,
}

/// A technique of a finding with what the catalog says about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TechniqueInfo {
    /// `T1059.001`.
    pub id: String,
    /// `PowerShell`, or `None` for an id the catalog does not know.
    pub name: Option<String>,
    /// Tactic shortnames; a sub-technique without its own takes its parent's.
    pub tactics: Vec<String>,
}

/// What one `attack.*` tag names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttackTag {
    /// `attack.t1059.001`.
    Technique(String),
    /// `attack.execution`, `attack.privilege_escalation` (as `privilege-escalation`).
    Tactic(String),
}

/// The embedded catalog, parsed once.
pub fn catalog() -> &'static AttackCatalog {
    static CATALOG: OnceLock<AttackCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| AttackCatalog::parse(TECHNIQUES_TSV, TACTICS_TSV))
}

impl AttackCatalog {
    /// Parses the two TSV tables. Lines that are blank, a header, or short
    /// of columns are skipped: names are an enrichment, and a damaged line
    /// must not stop triage.
    pub fn parse(techniques: &str, tactics: &str) -> AttackCatalog {
        let mut catalog = AttackCatalog::default();
        for line in techniques.lines() {
            let cols: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
            let (Some(id), Some(name)) = (cols.first(), cols.get(1)) else {
                continue;
            };
            let Some(id) = normalize_technique(id) else {
                continue; // header or damaged line
            };
            let tactics = cols
                .get(3)
                .map(|t| {
                    t.split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            catalog.techniques.insert(
                id,
                TechniqueEntry {
                    name: name.trim().to_owned(),
                    tactics,
                },
            );
        }
        for line in tactics.lines() {
            let cols: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
            let (Some(id), Some(short), Some(name)) = (cols.first(), cols.get(1), cols.get(2))
            else {
                continue;
            };
            let id = id.trim();
            if !(id.len() == 6
                && id.starts_with("TA")
                && id[2..].bytes().all(|b| b.is_ascii_digit()))
            {
                continue;
            }
            let short = short.trim().to_ascii_lowercase();
            if !catalog.tactics.contains_key(&short) {
                catalog.tactic_order.push(short.clone());
            }
            catalog.tactics.insert(
                short,
                TacticEntry {
                    id: id.to_owned(),
                    name: name.trim().to_owned(),
                },
            );
        }
        catalog
    }

    /// How many techniques are known.
    pub fn technique_count(&self) -> usize {
        self.techniques.len()
    }

    /// How many tactics are known.
    pub fn tactic_count(&self) -> usize {
        self.tactics.len()
    }

    /// Every tactic as `(shortname, entry)`, in the matrix's order.
    pub fn tactics(&self) -> impl Iterator<Item = (&str, &TacticEntry)> {
        self.tactic_order
            .iter()
            .filter_map(|short| self.tactics.get_key_value(short))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// A technique by id (any case); `None` when the id is malformed.
    /// Unknown well-formed ids are kept without a name; a sub-technique
    /// without tactics of its own takes its parent's.
    pub fn technique(&self, id: &str) -> Option<TechniqueInfo> {
        let id = normalize_technique(id)?;
        let own = self.techniques.get(&id);
        let parent = id.split_once('.').and_then(|(p, _)| self.techniques.get(p));
        let tactics = own
            .map(|t| t.tactics.clone())
            .filter(|t| !t.is_empty())
            .or_else(|| parent.map(|p| p.tactics.clone()))
            .unwrap_or_default();
        Some(TechniqueInfo {
            name: own.map(|t| t.name.clone()),
            tactics,
            id,
        })
    }

    /// A tactic by shortname (`execution`, `privilege_escalation`) or id (`TA0002`).
    pub fn tactic(&self, name: &str) -> Option<(&str, &TacticEntry)> {
        let key = name.trim().to_ascii_lowercase().replace('_', "-");
        if let Some((k, v)) = self.tactics.get_key_value(&key) {
            return Some((k.as_str(), v));
        }
        self.tactics
            .iter()
            .find(|(_, t)| t.id.eq_ignore_ascii_case(name.trim()))
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// `t1059.001` → `T1059.001`; `None` unless `T` + 4 digits (+ `.` + 3 digits).
pub fn normalize_technique(id: &str) -> Option<String> {
    let id = id.trim().to_ascii_uppercase();
    let (main, sub) = match id.split_once('.') {
        Some((m, s)) => (m, Some(s)),
        None => (id.as_str(), None),
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let ok = main.len() == 5
        && main.starts_with('T')
        && digits(&main[1..], 4)
        && sub.is_none_or(|s| digits(s, 3));
    ok.then_some(id)
}

/// What an `attack.*` tag names, if anything triage uses (groups `g0016`
/// and software `s0002` are not).
pub fn parse_tag(tag: &str) -> Option<AttackTag> {
    let rest = tag.trim();
    let rest = rest
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("attack."))
        .map(|_| &rest[7..])?;
    if let Some(id) = normalize_technique(rest) {
        return Some(AttackTag::Technique(id));
    }
    catalog()
        .tactic(rest)
        .map(|(short, _)| AttackTag::Tactic(short.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_tables_are_complete() {
        let c = catalog();
        assert_eq!(c.technique_count(), 691);
        assert_eq!(c.tactic_count(), 14);
        let order: Vec<&str> = c.tactics().map(|(short, _)| short).collect();
        assert_eq!(order.len(), 14);
        assert_eq!(order.first(), Some(&"reconnaissance"));
        assert_eq!(order.last(), Some(&"impact"));
    }

    #[test]
    fn techniques_have_names_and_tactics_with_parent_fallback() {
        let ps = catalog().technique("t1059.001").expect("well-formed");
        assert_eq!(ps.id, "T1059.001");
        assert_eq!(ps.name.as_deref(), Some("PowerShell"));
        assert_eq!(ps.tactics, ["execution"]);
        let unknown_sub = catalog().technique("T1059.999").expect("well-formed");
        assert_eq!(unknown_sub.name, None);
        assert_eq!(unknown_sub.tactics, ["execution"]);
        assert!(catalog().technique("T105").is_none());
        assert!(catalog().technique("attack.t1059").is_none());
    }

    #[test]
    fn sigma_tags_name_techniques_and_tactics() {
        assert_eq!(
            parse_tag("attack.t1059.001"),
            Some(AttackTag::Technique("T1059.001".into()))
        );
        assert_eq!(
            parse_tag("attack.execution"),
            Some(AttackTag::Tactic("execution".into()))
        );
        assert_eq!(
            parse_tag("attack.privilege_escalation"),
            Some(AttackTag::Tactic("privilege-escalation".into()))
        );
        assert_eq!(parse_tag("attack.g0016"), None);
        assert_eq!(parse_tag("cve.2021-44228"), None);
        assert_eq!(
            catalog().tactic("TA0002").map(|(s, _)| s),
            Some("execution")
        );
    }

    #[test]
    fn damaged_lines_are_skipped() {
        let c = AttackCatalog::parse(
            "technique_id\tname\n\nT1000\tGood\tfalse\texecution\r\nbroken line\nT2\tBad\n",
            "tactic_id\tshortname\tname\nTA0002\texecution\tExecution\nTAx\n",
        );
        assert_eq!(c.technique_count(), 1);
        assert_eq!(c.tactic_count(), 1);
    }
}
