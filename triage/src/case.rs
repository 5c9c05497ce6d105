//! What people and triage do to an alert or incident: its open/closed state
//! with who closed it and why, assignee, comments, verdict, and a short
//! history of every change (each automatic decision records its reason).

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::ids::SuppressionId;

/// Most comments a case keeps.
pub const MAX_COMMENTS: usize = 200;
/// Longest comment, reason or verdict note, in bytes.
pub const MAX_TEXT: usize = 4096;
/// History entries kept per case (the oldest are dropped, and counted).
pub const MAX_HISTORY: usize = 100;
/// Longest person name.
pub const MAX_WHO: usize = 128;

/// Open or closed, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseState {
    /// In the queue.
    #[default]
    Open,
    /// Out of the queue; kept until retention.
    Closed(Closure),
}

impl CaseState {
    /// Whether open.
    pub fn is_open(&self) -> bool {
        matches!(self, CaseState::Open)
    }

    /// The closure, if closed.
    pub fn closure(&self) -> Option<&Closure> {
        match self {
            CaseState::Open => None,
            CaseState::Closed(c) => Some(c),
        }
    }
}

/// How a case was closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// Who or what.
    pub by: ClosedBy,
    /// Why.
    pub reason: String,
    /// When (ms, leader time).
    pub at_ms: i64,
}

/// Who or what closed a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClosedBy {
    /// A person.
    Person(String),
    /// A suppression (automatic).
    Suppression(SuppressionId),
}

impl fmt::Display for ClosedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClosedBy::Person(who) => write!(f, "closed by {who}"),
            ClosedBy::Suppression(id) => write!(f, "auto-closed by suppression {id}"),
        }
    }
}

/// A verdict's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    /// A real threat.
    TruePositive,
    /// The detection was wrong.
    FalsePositive,
    /// Real activity, but expected and harmless (a backup job, an admin).
    BenignExpected,
}

impl VerdictKind {
    /// The name as written (`false-positive`).
    pub fn name(self) -> &'static str {
        match self {
            VerdictKind::TruePositive => "true-positive",
            VerdictKind::FalsePositive => "false-positive",
            VerdictKind::BenignExpected => "benign-expected",
        }
    }

    /// Whether the verdict says the alert needed no one (and closes it).
    pub fn is_noise(self) -> bool {
        !matches!(self, VerdictKind::TruePositive)
    }
}

impl std::str::FromStr for VerdictKind {
    type Err = crate::error::TriageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "true-positive" | "tp" => Ok(VerdictKind::TruePositive),
            "false-positive" | "fp" => Ok(VerdictKind::FalsePositive),
            "benign-expected" | "benign" => Ok(VerdictKind::BenignExpected),
            _ => Err(crate::error::TriageError::InvalidInput {
                field: "verdict",
                reason: format!(
                    "`{s}` is not a verdict: use true-positive, false-positive or benign-expected"
                ),
            }),
        }
    }
}

/// A person's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Which.
    pub kind: VerdictKind,
    /// Why.
    pub comment: String,
    /// Who.
    pub who: String,
    /// When.
    pub at_ms: i64,
}

/// A comment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Who.
    pub who: String,
    /// When.
    pub at_ms: i64,
    /// What.
    pub text: String,
}

/// Who did something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A person.
    Person(String),
    /// Triage itself.
    Triage,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Person(who) => f.write_str(who),
            Actor::Triage => f.write_str("triage"),
        }
    }
}

/// One change to a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    pub at_ms: i64,
    /// Who.
    pub actor: Actor,
    /// What happened and why.
    pub action: String,
}

/// The human side of an alert or incident.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Open or closed.
    pub state: CaseState,
    /// Who works on it.
    pub assignee: Option<String>,
    /// Comments, oldest first.
    pub comments: Vec<Comment>,
    /// The latest verdict.
    pub verdict: Option<Verdict>,
    /// Changes, oldest first (at most [`MAX_HISTORY`]).
    pub history: Vec<HistoryEntry>,
    /// History entries dropped to stay within [`MAX_HISTORY`].
    pub history_dropped: u64,
    /// A person reopened it: suppressions added later leave it open.
    pub held_by_person: bool,
}

impl Case {
    /// Records a change.
    pub fn log(&mut self, at_ms: i64, actor: Actor, action: impl Into<String>) {
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(0);
            self.history_dropped += 1;
        }
        self.history.push(HistoryEntry {
            at_ms,
            actor,
            action: action.into(),
        });
    }

    /// Closes it (the caller checked it is open).
    pub fn close(&mut self, by: ClosedBy, reason: String, at_ms: i64) {
        let actor = match &by {
            ClosedBy::Person(who) => Actor::Person(who.clone()),
            ClosedBy::Suppression(_) => Actor::Triage,
        };
        self.log(at_ms, actor, format!("{by}: {reason}"));
        self.state = CaseState::Closed(Closure { by, reason, at_ms });
    }

    /// Whether it was closed by a suppression (not by a person).
    pub fn auto_closed_by(&self) -> Option<&SuppressionId> {
        match self.state.closure().map(|c| &c.by) {
            Some(ClosedBy::Suppression(id)) => Some(id),
            _ => None,
        }
    }
}
