//! Typed identifiers of what triage creates, so an alert id is never passed
//! where an incident id is expected.
//!
//! Alerts, incidents and proposals are numbered from a counter in the
//! replicated state (`A-1`, `I-1`, `P-1`): every replica assigns the same
//! number to the same thing. Suppressions and follow-up rules are named by
//! the person who writes them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::TriageError;

macro_rules! seq_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The letter the id is written with.
            pub const PREFIX: &'static str = $prefix;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-{}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = TriageError;

            /// Reads `A-12` (any case) or a bare `12`.
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_seq(text, $prefix).map($name).ok_or_else(|| TriageError::BadId {
                    text: text.to_owned(),
                    expected: concat!($prefix, "-<number>, for example ", $prefix, "-12"),
                })
            }
        }
    };
}

fn parse_seq(text: &str, prefix: &str) -> Option<u64> {
    let text = text.trim();
    let digits = match text.split_once('-') {
        Some((p, rest)) if p.eq_ignore_ascii_case(prefix) => rest,
        Some(_) => return None,
        None => text,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

seq_id!(
    /// An alert: findings of one rule on one entity within one window.
    AlertId,
    "A"
);
seq_id!(
    /// A correlated incident: several alerts on one entity.
    IncidentId,
    "I"
);
seq_id!(
    /// A suppression proposed from verdict history.
    ProposalId,
    "P"
);

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a name (validated where it enters: config, proposals).
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_id!(
    /// A suppression rule, named in the triage config (`backup-vss`) or
    /// derived from the proposal it came from (`from-P-3`).
    SuppressionId
);
name_id!(
    /// A follow-up rule, named in the triage config.
    FollowUpId
);

/// Something a person works on: an alert or an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CaseId {
    /// An alert.
    Alert(AlertId),
    /// An incident.
    Incident(IncidentId),
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseId::Alert(id) => id.fmt(f),
            CaseId::Incident(id) => id.fmt(f),
        }
    }
}

impl FromStr for CaseId {
    type Err = TriageError;

    /// Reads `A-12` or `I-3` (any case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || TriageError::BadId {
            text: text.to_owned(),
            expected: "A-<number> for an alert or I-<number> for an incident",
        };
        let (prefix, _) = text.trim().split_once('-').ok_or_else(bad)?;
        if prefix.eq_ignore_ascii_case(AlertId::PREFIX) {
            text.parse().map(CaseId::Alert).map_err(|_| bad())
        } else if prefix.eq_ignore_ascii_case(IncidentId::PREFIX) {
            text.parse().map(CaseId::Incident).map_err(|_| bad())
        } else {
            Err(bad())
        }
    }
}

impl From<AlertId> for CaseId {
    fn from(id: AlertId) -> Self {
        CaseId::Alert(id)
    }
}

impl From<IncidentId> for CaseId {
    fn from(id: IncidentId) -> Self {
        CaseId::Incident(id)
    }
}

/// A committed finding: its hunt and its number among the hunt's findings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FindingRef {
    /// The hunt (`h-<n>`).
    pub hunt: String,
    /// The finding's number within the hunt, from 0, in commit order.
    pub seq: u64,
}

impl fmt::Display for FindingRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.hunt, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_with_their_letter() {
        assert_eq!(AlertId(12).to_string(), "A-12");
        assert_eq!("a-12".parse::<AlertId>().ok(), Some(AlertId(12)));
        assert_eq!("12".parse::<AlertId>().ok(), Some(AlertId(12)));
        assert!("I-12".parse::<AlertId>().is_err());
        assert!("A-".parse::<AlertId>().is_err());
        assert!("A-1x".parse::<AlertId>().is_err());
        assert_eq!(
            "I-3".parse::<CaseId>().ok(),
            Some(CaseId::Incident(IncidentId(3)))
        );
        assert_eq!(
            "A-3".parse::<CaseId>().ok(),
            Some(CaseId::Alert(AlertId(3)))
        );
        let err = "X-3".parse::<CaseId>().unwrap_err().to_string();
        assert!(err.contains("A-<number>"), "{err}");
    }
}
