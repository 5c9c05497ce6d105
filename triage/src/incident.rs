//! Correlated incidents: one per entity at a time, listing the alerts that
//! together crossed a correlation threshold and every later alert on the
//! entity while the incident stays open.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::bounded::BoundedSet;
use crate::case::Case;
use crate::finding::{Entity, Severity};
use crate::ids::{AlertId, IncidentId};
use crate::score::{Score, ScoreTerm};

/// Alerts an incident lists (more are counted in `alerts.overflow()`).
pub const MAX_INCIDENT_ALERTS: u32 = 500;

/// A correlated incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Its id.
    pub id: IncidentId,
    /// The entity.
    pub entity: Entity,
    /// Why it was raised (`3 distinct rules within 1d: …`).
    pub reason: String,
    /// Its alerts.
    pub alerts: BoundedSet<AlertId>,
    /// Distinct rules of its alerts.
    pub rules: BoundedSet<String>,
    /// Distinct modules.
    pub modules: BoundedSet<String>,
    /// Distinct tactics.
    pub tactics: BTreeSet<String>,
    /// Highest severity of its alerts.
    pub severity: Severity,
    /// Earliest finding (event time).
    pub first_seen_ms: i64,
    /// Latest finding (event time).
    pub last_seen_ms: i64,
    /// When it was raised (leader time).
    pub opened_ms: i64,
    /// Last change (leader time).
    pub updated_ms: i64,
    /// Score.
    pub score: Score,
    /// The terms that made it.
    pub score_terms: Vec<ScoreTerm>,
    /// State, assignee, comments, verdict, history.
    pub case: Case,
}
