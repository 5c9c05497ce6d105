//! What verdicts teach: counts per rule and module (and their false-positive
//! rate), and suppression proposals from history ("rule R on host H was
//! marked benign or false-positive 5 times in 30 days: suppress?"), which a
//! person accepts (a new config version with the suppression) or rejects.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::case::VerdictKind;
use crate::config::TriageConfig;
use crate::effect::Effect;
use crate::error::TriageError;
use crate::finding::EntityKind;
use crate::glob::Glob;
use crate::group::Alert;
use crate::human::check_who;
use crate::ids::{AlertId, ProposalId, SuppressionId};
use crate::scope::Scope;
use crate::suppress::{Expiry, Suppression};
use crate::time::format_duration;
use crate::tracked::Tracked;
use crate::triage::Triage;

/// (rule, host) pairs whose noise verdicts are remembered.
pub const MAX_NOISE_KEYS: usize = 10_000;
/// Noise verdicts remembered per pair.
pub const MAX_NOISE_PER_KEY: usize = 1_000;
/// Alerts a proposal lists as its evidence.
pub const MAX_PROPOSAL_ALERTS: usize = 20;

/// Verdict counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    /// True positives.
    pub true_positive: u64,
    /// False positives.
    pub false_positive: u64,
    /// Benign, expected.
    pub benign_expected: u64,
}

impl VerdictCounts {
    fn slot(&mut self, kind: VerdictKind) -> &mut u64 {
        match kind {
            VerdictKind::TruePositive => &mut self.true_positive,
            VerdictKind::FalsePositive => &mut self.false_positive,
            VerdictKind::BenignExpected => &mut self.benign_expected,
        }
    }

    /// All verdicts.
    pub fn total(&self) -> u64 {
        self.true_positive + self.false_positive + self.benign_expected
    }

    /// False positives per thousand verdicts; `None` without verdicts.
    pub fn false_positive_rate_permille(&self) -> Option<u64> {
        let total = self.total();
        (total > 0).then(|| self.false_positive * 1000 / total)
    }

    /// False-positive and benign verdicts per thousand: how much of what
    /// the rule raises needed no one.
    pub fn noise_rate_permille(&self) -> Option<u64> {
        let total = self.total();
        (total > 0).then(|| (self.false_positive + self.benign_expected) * 1000 / total)
    }
}

/// What a proposal would suppress the rule on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProposalSubject {
    /// A host.
    Host(String),
    /// An entity (`kind:value`), for alerts without a host.
    Entity(String),
}

impl fmt::Display for ProposalSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposalSubject::Host(h) => write!(f, "host {h}"),
            ProposalSubject::Entity(e) => write!(f, "entity {e}"),
        }
    }
}

/// A rule on a host (or entity).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalKey {
    /// Rule id.
    pub rule: String,
    /// Host or entity.
    pub subject: ProposalSubject,
}

/// Noise verdicts on one rule and host (at most [`MAX_NOISE_PER_KEY`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseLog {
    /// Alerts judged noise, with when.
    pub(crate) alerts: BTreeMap<AlertId, i64>,
    /// The pending proposal, if any.
    pub(crate) pending: Option<ProposalId>,
    /// When the last proposal was accepted or rejected: only later verdicts count.
    pub(crate) resolved_ms: Option<i64>,
    /// Last change.
    pub(crate) last_ms: i64,
}

/// A suppression proposed from verdict history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Its id.
    pub id: ProposalId,
    /// The rule.
    pub rule: String,
    /// Where.
    pub subject: ProposalSubject,
    /// Noise verdicts counted.
    pub verdicts: u32,
    /// The window they were counted in.
    pub window_ms: i64,
    /// Some of the alerts judged noise.
    pub alerts: Vec<AlertId>,
    /// When it was made (leader time).
    pub created_ms: i64,
    /// Pending, accepted or rejected.
    pub status: ProposalStatus,
    /// The question for people.
    pub summary: String,
}

/// Where a proposal stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalStatus {
    /// Waiting for a person.
    Pending,
    /// Turned into a suppression.
    Accepted {
        /// The suppression.
        suppression: SuppressionId,
        /// Who accepted.
        by: String,
        /// When.
        at_ms: i64,
    },
    /// Declined.
    Rejected {
        /// Who rejected.
        by: String,
        /// When.
        at_ms: i64,
    },
}

/// Verdict statistics, noise history and proposals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictBook {
    pub(crate) by_rule: Tracked<String, VerdictCounts>,
    pub(crate) by_module: Tracked<String, VerdictCounts>,
    #[serde(with = "crate::tracked::pairs")]
    pub(crate) noise: Tracked<ProposalKey, NoiseLog>,
    pub(crate) proposals: Tracked<ProposalId, Proposal>,
    pub(crate) next_proposal: u64,
}

/// Where a proposal for `alert` would suppress its rule: its own entity
/// when that is a host, else its first host, else its entity.
pub fn proposal_subject(alert: &Alert) -> ProposalSubject {
    match alert.primary_entity() {
        Some(e) if e.kind == EntityKind::Host => ProposalSubject::Host(e.value),
        _ => match alert.hosts.iter().next() {
            Some(h) => ProposalSubject::Host(h.clone()),
            None => ProposalSubject::Entity(alert.entity.clone()),
        },
    }
}

impl VerdictBook {
    /// Counts a verdict on `alert` (replacing `old`, if it had one) and
    /// makes a proposal if the rule and host crossed the threshold.
    pub(crate) fn record(
        &mut self,
        cfg: &TriageConfig,
        alert: &Alert,
        old: Option<VerdictKind>,
        new: VerdictKind,
        now_ms: i64,
    ) -> Option<ProposalId> {
        for (map, key) in [
            (&mut self.by_rule, &alert.rule),
            (&mut self.by_module, &alert.module),
        ] {
            let counts = map.get_or_insert_with(key.clone(), VerdictCounts::default);
            if let Some(old) = old {
                let slot = counts.slot(old);
                *slot = slot.saturating_sub(1);
            }
            *counts.slot(new) += 1;
        }
        let key = ProposalKey {
            rule: alert.rule.clone(),
            subject: proposal_subject(alert),
        };
        let log = self
            .noise
            .get_or_insert_with(key.clone(), NoiseLog::default);
        log.last_ms = now_ms;
        if new.is_noise() {
            log.alerts.insert(alert.id, now_ms);
            while log.alerts.len() > MAX_NOISE_PER_KEY {
                let oldest = log
                    .alerts
                    .iter()
                    .min_by_key(|(id, t)| (**t, **id))
                    .map(|(id, _)| *id);
                if let Some(id) = oldest {
                    log.alerts.remove(&id);
                }
            }
        } else {
            log.alerts.remove(&alert.id);
        }
        let made = self.maybe_propose(cfg, &key, now_ms);
        if self.noise.len() > MAX_NOISE_KEYS {
            let mut by_age: Vec<(i64, ProposalKey)> = self
                .noise
                .iter()
                .filter(|(_, l)| l.pending.is_none())
                .map(|(k, l)| (l.last_ms, k.clone()))
                .collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(MAX_NOISE_KEYS / 10) {
                self.noise.remove(&k);
            }
        }
        made
    }

    fn maybe_propose(
        &mut self,
        cfg: &TriageConfig,
        key: &ProposalKey,
        now_ms: i64,
    ) -> Option<ProposalId> {
        let log = self.noise.get(key)?;
        if log.pending.is_some() {
            return None;
        }
        let since = now_ms.saturating_sub(cfg.proposals.window_ms);
        let recent: Vec<AlertId> = log
            .alerts
            .iter()
            .filter(|(_, t)| **t >= since && log.resolved_ms.is_none_or(|r| **t > r))
            .map(|(id, _)| *id)
            .collect();
        if recent.len() < cfg.proposals.min_verdicts as usize {
            return None;
        }
        self.next_proposal += 1;
        let id = ProposalId(self.next_proposal);
        let window = format_duration(cfg.proposals.window_ms);
        let proposal = Proposal {
            id,
            rule: key.rule.clone(),
            subject: key.subject.clone(),
            verdicts: u32::try_from(recent.len()).unwrap_or(u32::MAX),
            window_ms: cfg.proposals.window_ms,
            alerts: recent.iter().take(MAX_PROPOSAL_ALERTS).copied().collect(),
            created_ms: now_ms,
            status: ProposalStatus::Pending,
            summary: format!(
                "rule {} on {} was marked benign or false-positive {} times in {window}: suppress it?",
                key.rule,
                key.subject,
                recent.len()
            ),
        };
        self.proposals.insert(id, proposal);
        if let Some(log) = self.noise.get_mut(key) {
            log.pending = Some(id);
        }
        Some(id)
    }

    /// Forgets noise verdicts older than the proposal window, and resolved
    /// proposals older than the retention.
    pub(crate) fn prune(&mut self, now_ms: i64, cfg: &TriageConfig) {
        let since = now_ms.saturating_sub(cfg.proposals.window_ms);
        self.noise.update_where(
            |_, log| log.alerts.values().any(|t| *t < since),
            |_, log| log.alerts.retain(|_, t| *t >= since),
        );
        self.noise
            .retain(|_, log| !log.alerts.is_empty() || log.pending.is_some());
        let keep_after = now_ms.saturating_sub(cfg.retention.closed_ms);
        self.proposals.retain(|_, p| match &p.status {
            ProposalStatus::Pending => true,
            ProposalStatus::Accepted { at_ms, .. } | ProposalStatus::Rejected { at_ms, .. } => {
                *at_ms > keep_after
            }
        });
    }

    fn resolve(&mut self, id: ProposalId, status: ProposalStatus, now_ms: i64) {
        let Some(p) = self.proposals.get_mut(&id) else {
            return;
        };
        p.status = status;
        let key = ProposalKey {
            rule: p.rule.clone(),
            subject: p.subject.clone(),
        };
        if let Some(log) = self.noise.get_mut(&key) {
            log.pending = None;
            log.resolved_ms = Some(now_ms);
            log.last_ms = now_ms;
        }
    }
}

impl Triage {
    /// Verdict counts per rule.
    pub fn verdicts_by_rule(&self) -> &BTreeMap<String, VerdictCounts> {
        &self.st.verdicts.by_rule
    }

    /// Verdict counts per module (`name@version`).
    pub fn verdicts_by_module(&self) -> &BTreeMap<String, VerdictCounts> {
        &self.st.verdicts.by_module
    }

    /// Every proposal kept, by id.
    pub fn proposals(&self) -> impl Iterator<Item = &Proposal> {
        self.st.verdicts.proposals.values()
    }

    /// A proposal.
    pub fn proposal(&self, id: ProposalId) -> Option<&Proposal> {
        self.st.verdicts.proposals.get(&id)
    }

    fn pending(&self, id: ProposalId) -> Result<&Proposal, TriageError> {
        let p = self
            .st
            .verdicts
            .proposals
            .get(&id)
            .ok_or(TriageError::UnknownProposal(id))?;
        match &p.status {
            ProposalStatus::Pending => Ok(p),
            ProposalStatus::Accepted { by, .. } => Err(TriageError::ProposalResolved {
                id,
                status: format!("accepted by {by}"),
            }),
            ProposalStatus::Rejected { by, .. } => Err(TriageError::ProposalResolved {
                id,
                status: format!("rejected by {by}"),
            }),
        }
    }

    /// Turns a pending proposal into a suppression (`from-P-<n>`, lasting
    /// the configured suppression lifetime) by applying a new config
    /// version that adds it; open alerts it matches are closed. Returns the
    /// suppression's id and the effects.
    pub fn accept_proposal(
        &mut self,
        id: ProposalId,
        who: &str,
        now_ms: i64,
    ) -> Result<(SuppressionId, Vec<Effect>), TriageError> {
        let who = check_who(who)?;
        let p = self.pending(id)?;
        let sid = SuppressionId::new(format!("from-{id}"));
        let mut scope = Scope {
            rules: vec![Glob::literal(&p.rule)],
            ..Scope::default()
        };
        match &p.subject {
            ProposalSubject::Host(h) => scope.hosts.push(Glob::literal(h)),
            ProposalSubject::Entity(e) => scope.entities.push(Glob::literal(e)),
        }
        let suppression = Suppression {
            id: sid.clone(),
            author: who.clone(),
            reason: format!("accepted proposal {id}: {}", p.summary),
            scope,
            created_ms: Some(now_ms),
            expires: Expiry::After(self.config.proposals.suppression_ttl_ms),
        };
        let mut config = self.config.clone();
        config.suppressions.retain(|s| s.id != sid);
        config.suppressions.push(suppression);
        let (_, effects) =
            self.apply_config(config, &who, &format!("accept proposal {id}"), None, now_ms)?;
        self.st.verdicts.resolve(
            id,
            ProposalStatus::Accepted {
                suppression: sid.clone(),
                by: who,
                at_ms: now_ms,
            },
            now_ms,
        );
        Ok((sid, effects))
    }

    /// Declines a pending proposal; only verdicts after now count toward
    /// the next one.
    pub fn reject_proposal(
        &mut self,
        id: ProposalId,
        who: &str,
        now_ms: i64,
    ) -> Result<(), TriageError> {
        let who = check_who(who)?;
        self.pending(id)?;
        self.st.verdicts.resolve(
            id,
            ProposalStatus::Rejected {
                by: who,
                at_ms: now_ms,
            },
            now_ms,
        );
        Ok(())
    }
}
