//! What triage asks of the coordinator. Triage holds no I/O: the
//! coordinator's state machine applies a triage call and acts on the
//! effects it returns (index links in RocksDB, start follow-up hunts, emit
//! events). Effects come out in a deterministic order.

use serde::{Deserialize, Serialize};

use crate::finding::Entity;
use crate::ids::{AlertId, FollowUpId, IncidentId, ProposalId, SuppressionId};

/// One thing for the coordinator to do or know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Finding `hunt#seq` belongs to `alert`: index it (every finding
    /// gets one; the alert keeps only its first links in memory).
    Link {
        /// The alert.
        alert: AlertId,
        /// The finding's hunt.
        hunt: String,
        /// The finding's number in the hunt.
        seq: u64,
    },
    /// A new alert is in the open queue.
    AlertOpened {
        /// The alert.
        alert: AlertId,
    },
    /// An alert was closed by a suppression (new alerts are born closed
    /// when their first finding matches one).
    AlertAutoClosed {
        /// The alert.
        alert: AlertId,
        /// Which suppression.
        suppression: SuppressionId,
    },
    /// An auto-closed alert got a finding its suppression does not cover
    /// and is open again.
    AlertReopened {
        /// The alert.
        alert: AlertId,
    },
    /// A correlated incident was raised.
    IncidentOpened {
        /// The incident.
        incident: IncidentId,
        /// Its entity.
        entity: Entity,
    },
    /// An alert joined an open incident.
    IncidentUpdated {
        /// The incident.
        incident: IncidentId,
        /// The alert that joined.
        alert: AlertId,
    },
    /// Start a follow-up (pivot) hunt for an alert: events of `entity`
    /// from `from_ms` to `to_ms` on the shards that may hold them.
    StartFollowUp {
        /// The alert the results attach to.
        alert: AlertId,
        /// The follow-up rule.
        follow_up: FollowUpId,
        /// What to pivot on.
        entity: Entity,
        /// The alert's first finding (event time).
        at_ms: i64,
        /// How far around the alert to look.
        around_ms: i64,
        /// Start of the time range (`first seen - around`).
        from_ms: i64,
        /// End of the time range (`last seen + around`).
        to_ms: i64,
        /// Shards the alert's findings came from (a hint: the entity may be
        /// on others).
        shards: Vec<String>,
    },
    /// Verdict history produced a suppression proposal.
    ProposalCreated {
        /// The proposal.
        proposal: ProposalId,
    },
    /// A closed alert passed its retention and was dropped: its link index
    /// can go.
    AlertEvicted {
        /// The alert.
        alert: AlertId,
    },
    /// A closed incident passed its retention and was dropped.
    IncidentEvicted {
        /// The incident.
        incident: IncidentId,
    },
}
