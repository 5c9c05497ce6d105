//! Which alerts a suppression or follow-up rule applies to. A scope lists
//! criteria; every criterion given must match (a list matches when any of
//! its patterns does). Patterns are case-insensitive globs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::finding::Severity;
use crate::glob::Glob;

/// Criteria an alert or finding must meet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Rule ids (`sigma/5f1d*`).
    pub rules: Vec<Glob>,
    /// Modules (`name@version`: `rare-process@*`).
    pub modules: Vec<Glob>,
    /// Entities as `kind:value` (`user:corp\svc-*`), matched against the
    /// alert's entity and every entity parsed from its evidence.
    pub entities: Vec<Glob>,
    /// Host names.
    pub hosts: Vec<Glob>,
    /// Module tags.
    pub tags: Vec<Glob>,
    /// Evidence fields: each named field must be present with a value the
    /// glob matches (field names compare case-insensitively).
    pub fields: BTreeMap<String, Glob>,
    /// Severity at least this.
    pub min_severity: Option<Severity>,
    /// Severity at most this.
    pub max_severity: Option<Severity>,
}

/// What a scope is matched against: one finding, or an alert's summary.
#[derive(Clone, Debug, Default)]
pub struct Subject<'a> {
    /// Rule id.
    pub rule: &'a str,
    /// Modules (`name@version`).
    pub modules: Vec<&'a str>,
    /// The grouping entity (`host:ws01`).
    pub entity: &'a str,
    /// Every entity as `kind:value`.
    pub entities: Vec<String>,
    /// Host names.
    pub hosts: Vec<&'a str>,
    /// Tags.
    pub tags: Vec<&'a str>,
    /// Evidence pairs.
    pub fields: Vec<(&'a str, &'a str)>,
    /// Severity.
    pub severity: Severity,
}

impl Scope {
    /// Whether the scope names anything to match on besides severity (a
    /// suppression without one would silence everything).
    pub fn is_targeted(&self) -> bool {
        !(self.rules.is_empty()
            && self.modules.is_empty()
            && self.entities.is_empty()
            && self.hosts.is_empty()
            && self.tags.is_empty()
            && self.fields.is_empty())
    }

    /// Whether `subject` meets every criterion.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        fn any<'t>(globs: &[Glob], mut texts: impl Iterator<Item = &'t str>) -> bool {
            globs.is_empty() || texts.any(|t| globs.iter().any(|g| g.matches(t)))
        }
        self.min_severity.is_none_or(|min| subject.severity >= min)
            && self.max_severity.is_none_or(|max| subject.severity <= max)
            && any(&self.rules, std::iter::once(subject.rule))
            && any(&self.modules, subject.modules.iter().copied())
            && any(
                &self.entities,
                std::iter::once(subject.entity).chain(subject.entities.iter().map(String::as_str)),
            )
            && any(&self.hosts, subject.hosts.iter().copied())
            && any(&self.tags, subject.tags.iter().copied())
            && self.fields.iter().all(|(name, glob)| {
                subject
                    .fields
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case(name) && glob.matches(v))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(p: &[&str]) -> Vec<Glob> {
        p.iter().map(|p| Glob::new(p).expect("glob")).collect()
    }

    #[test]
    fn every_given_criterion_must_match() {
        let scope = Scope {
            rules: globs(&["sigma/vss-*"]),
            hosts: globs(&["bkp-*"]),
            fields: [(
                "ParentImage".to_owned(),
                Glob::new("*\\veeam*.exe").expect("glob"),
            )]
            .into(),
            ..Scope::default()
        };
        let mut s = Subject {
            rule: "sigma/vss-delete",
            hosts: vec!["bkp-01"],
            fields: vec![("parentimage", "C:\\Veeam\\VeeamAgent.exe")],
            severity: Severity::High,
            ..Subject::default()
        };
        assert!(scope.is_targeted());
        assert!(scope.matches(&s));
        s.hosts = vec!["ws-01"];
        assert!(!scope.matches(&s));
        s.hosts = vec!["ws-01", "bkp-02"];
        assert!(scope.matches(&s));
        s.fields = vec![("ParentImage", "C:\\evil.exe")];
        assert!(!scope.matches(&s));
    }

    #[test]
    fn entities_and_severity_bounds() {
        let scope = Scope {
            entities: globs(&["user:corp\\svc-*"]),
            max_severity: Some(Severity::Medium),
            ..Scope::default()
        };
        let s = Subject {
            entity: "host:ws01",
            entities: vec!["user:corp\\svc-backup".into()],
            severity: Severity::Low,
            ..Subject::default()
        };
        assert!(scope.matches(&s));
        assert!(!scope.matches(&Subject {
            severity: Severity::High,
            ..s.clone()
        }));
        assert!(!Scope::default().is_targeted());
        assert!(Scope::default().matches(&s));
    }
}
