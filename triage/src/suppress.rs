//! Suppressions: a person's statement that alerts in a scope are known and
//! need no human ("the nightly backup deletes shadow copies on bkp-*"). A
//! matching alert is closed automatically and records which suppression
//! closed it and why; nothing is deleted. A suppression applies from its
//! creation until it expires.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::SuppressionId;
use crate::scope::{Scope, Subject};

/// A suppression rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// Its name.
    pub id: SuppressionId,
    /// Who wrote it.
    pub author: String,
    /// Why these alerts are benign; copied onto every alert it closes.
    pub reason: String,
    /// What it matches.
    pub scope: Scope,
    /// When it was created, if the config says; otherwise the time the
    /// config that introduced it was applied.
    pub created_ms: Option<i64>,
    /// When it stops applying.
    pub expires: Expiry,
}

/// When a suppression stops applying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Never (written `never`: an explicit choice, not a default).
    Never,
    /// At this time (ms since the epoch).
    At(i64),
    /// This long after its creation.
    After(i64),
}

impl Suppression {
    /// When it was created: its own date, else the apply time recorded in
    /// `applied`, else 0 (always created).
    pub fn created(&self, applied: &BTreeMap<SuppressionId, i64>) -> i64 {
        self.created_ms
            .or_else(|| applied.get(&self.id).copied())
            .unwrap_or(0)
    }

    /// When it expires, if ever.
    pub fn expires_at(&self, created_ms: i64) -> Option<i64> {
        match self.expires {
            Expiry::Never => None,
            Expiry::At(t) => Some(t),
            Expiry::After(d) => Some(created_ms.saturating_add(d)),
        }
    }

    /// Whether it applies at `now_ms`: created, and not yet expired.
    pub fn is_active(&self, created_ms: i64, now_ms: i64) -> bool {
        created_ms <= now_ms && self.expires_at(created_ms).is_none_or(|t| now_ms < t)
    }
}

/// The first active suppression (in config order) whose scope matches.
pub fn first_match<'a>(
    suppressions: &'a [Suppression],
    applied: &BTreeMap<SuppressionId, i64>,
    subject: &Subject<'_>,
    now_ms: i64,
) -> Option<&'a Suppression> {
    suppressions
        .iter()
        .find(|s| s.is_active(s.created(applied), now_ms) && s.scope.matches(subject))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::Glob;

    #[test]
    fn active_between_creation_and_expiry() {
        let s = Suppression {
            id: SuppressionId::new("x"),
            author: "alice".into(),
            reason: "backup".into(),
            scope: Scope {
                rules: vec![Glob::new("r").expect("glob")],
                ..Scope::default()
            },
            created_ms: None,
            expires: Expiry::After(100),
        };
        let applied = [(SuppressionId::new("x"), 1_000)].into();
        let created = s.created(&applied);
        assert_eq!(created, 1_000);
        assert!(!s.is_active(created, 999));
        assert!(s.is_active(created, 1_000));
        assert!(s.is_active(created, 1_099));
        assert!(!s.is_active(created, 1_100));
        let subject = Subject {
            rule: "r",
            ..Subject::default()
        };
        let list = [s];
        assert!(first_match(&list, &applied, &subject, 1_050).is_some());
        assert!(first_match(&list, &applied, &subject, 1_100).is_none());
    }
}
