//! Quarry's triage core: turns committed findings into a short, ranked,
//! explained queue. A pure library: no network, disk, threads or clock of
//! its own. The coordinator's state machine owns a [`Triage`] in its
//! replicated state and calls it with each committed finding and the
//! leader's clock (`now_ms`); triage answers with [`Effect`]s for the
//! coordinator to carry out. Same calls, same state, on every replica.
//!
//! The pipeline (see `docs/triage.md`):
//!
//! 1. **Group** ([`group`]): findings of one rule on one entity within one
//!    window are one [`Alert`].
//! 2. **Enrich** ([`enrich`], [`attack`], [`rarity`]): asset criticality,
//!    ATT&CK names, how rare the rule and entity are.
//! 3. **Score** ([`score`]): one formula; each alert carries its terms.
//! 4. **Entity risk** ([`risk`]): alerts add decaying risk to their hosts,
//!    users and IPs; enough distinct rules or tactics on one entity raise
//!    one [`Incident`].
//! 5. **Suppress** ([`suppress`]): matching alerts close themselves, with
//!    provenance.
//! 6. **Follow up** ([`followup`]): matching alerts ask for a pivot hunt.
//!
//! People then assign, comment, give verdicts, close and reopen
//! ([`human`]); verdicts feed statistics and suppression proposals
//! ([`verdict`]); the config is YAML ([`config`]), versioned and
//! previewable ([`apply`]); the queue is ranked and paginated ([`query`]).
//!
//! The coordinator persists the state as small rows ([`rows`]): after each
//! applied command it writes only the rows [`Triage::take_dirty`] names.

#![warn(missing_docs)]

pub mod apply;
pub mod attack;
pub mod bounded;
pub mod case;
pub mod config;
pub mod effect;
pub mod enrich;
pub mod error;
pub mod finding;
pub mod followup;
pub mod glob;
pub mod group;
pub mod human;
pub mod ids;
pub mod incident;
pub mod query;
pub mod rarity;
pub mod risk;
pub mod rows;
pub mod scope;
pub mod score;
pub mod suppress;
pub mod time;
pub mod tracked;
pub mod triage;
pub mod verdict;
pub mod yaml;

pub use apply::{AlertChange, DryRun};
pub use case::{Case, CaseState, ClosedBy, Closure, VerdictKind};
pub use config::TriageConfig;
pub use effect::Effect;
pub use error::TriageError;
pub use finding::{Entity, EntityKind, Severity, TriageFinding};
pub use group::Alert;
pub use ids::{AlertId, CaseId, FindingRef, FollowUpId, IncidentId, ProposalId, SuppressionId};
pub use incident::Incident;
pub use query::{CaseView, Kinds, Page, Query, StateFilter};
pub use rows::{ConfigRow, Meta, Row, RowKey};
pub use score::{Score, ScoreTerm};
pub use triage::{ConfigVersion, Triage, TriageStats, TriageSummary};
pub use verdict::{Proposal, ProposalStatus, VerdictCounts};
