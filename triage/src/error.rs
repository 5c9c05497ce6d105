//! The one error type of the crate. Every message names the input that was
//! wrong and says what to do instead.

use crate::ids::{AlertId, CaseId, IncidentId, ProposalId};

/// Why a triage operation was refused. Nothing in the state changes when an
/// operation returns an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TriageError {
    /// An id that does not parse.
    #[error("`{text}` is not a valid id: expected {expected}")]
    BadId {
        /// The text given.
        text: String,
        /// The expected form.
        expected: &'static str,
    },
    /// No alert with this id (never created, or pruned after retention).
    #[error(
        "there is no alert {0}: it never existed or was pruned after its retention; list alerts with include_closed to see what is kept"
    )]
    UnknownAlert(AlertId),
    /// No incident with this id.
    #[error(
        "there is no incident {0}: it never existed or was pruned after its retention; list incidents with include_closed to see what is kept"
    )]
    UnknownIncident(IncidentId),
    /// No proposal with this id.
    #[error("there is no suppression proposal {0}; list the proposals to see the pending ones")]
    UnknownProposal(ProposalId),
    /// The case is closed already.
    #[error("{case} is already closed ({how}); reopen it first to close it another way")]
    AlreadyClosed {
        /// The alert or incident.
        case: CaseId,
        /// How it was closed.
        how: String,
    },
    /// The case is open: there is nothing to reopen.
    #[error("{0} is open; only a closed alert or incident can be reopened")]
    NotClosed(CaseId),
    /// The proposal was accepted or rejected already.
    #[error("proposal {id} was already {status}; a new proposal appears if verdicts keep coming")]
    ProposalResolved {
        /// The proposal.
        id: ProposalId,
        /// `accepted by alice` or `rejected by bob`.
        status: String,
    },
    /// A finding triage cannot take.
    #[error("finding {finding} cannot be triaged: {reason}")]
    InvalidFinding {
        /// `hunt#seq`.
        finding: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A finding that was triaged before (same hunt, number not above the
    /// last one seen): ignoring it keeps a replayed command from doubling
    /// an alert's count.
    #[error(
        "finding {hunt}#{seq} was already triaged (findings of {hunt} up to #{last} are in); nothing was changed"
    )]
    DuplicateFinding {
        /// The hunt.
        hunt: String,
        /// The finding's number.
        seq: u64,
        /// The highest number triaged for the hunt.
        last: u64,
    },
    /// A request argument is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The argument.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The triage config is invalid.
    #[error("triage config, line {line}, column {column}: {message}")]
    Config {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The config changed since the version the change was based on.
    #[error(
        "the triage config is at version {actual}, not {expected} as this change assumed; read the current config, redo the change on it and apply again"
    )]
    ConfigConflict {
        /// The version the caller based its change on.
        expected: u64,
        /// The current version.
        actual: u64,
    },
    /// Bytes that are not the key of a triage row.
    #[error(
        "`{key}` is not a triage row key: {reason}; keys are written by RowKey::to_bytes (a/A-12, e/host:ws01, meta)"
    )]
    BadRowKey {
        /// The bytes, escaped.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Rows that do not make one triage state.
    #[error(
        "triage row `{key}` is inconsistent: {reason}; the rows were not written from one state by take_dirty and row"
    )]
    BadRow {
        /// The row's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A page token that this query did not produce.
    #[error("invalid page token: {0}; run the query again without a page token")]
    InvalidPageToken(String),
}
