//! Changing the config: apply a new version (recorded with who, when and
//! what changed; open alerts its suppressions match are closed, scores are
//! recomputed), or preview one without changing anything.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::case::ClosedBy;
use crate::config::TriageConfig;
use crate::effect::Effect;
use crate::error::TriageError;
use crate::human::check_who;
use crate::ids::{AlertId, SuppressionId};
use crate::score::Score;
use crate::suppress::first_match;
use crate::triage::{ConfigVersion, MAX_CONFIG_HISTORY, Triage};

/// What applying a config would do to the open alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRun {
    /// The version it would replace.
    pub current_version: u64,
    /// What changes in the config.
    pub summary: String,
    /// Open alerts that would change, by id.
    pub changes: Vec<AlertChange>,
    /// Open alerts that would not.
    pub unchanged: usize,
}

/// How one open alert would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertChange {
    /// The alert.
    pub alert: AlertId,
    /// Its title.
    pub title: String,
    /// Its score under the current config.
    pub score_before: Score,
    /// Under the new one.
    pub score_after: Score,
    /// The suppression that would close it.
    pub closed_by: Option<SuppressionId>,
}

impl Triage {
    /// When each suppression of `config` counts as created if applied at
    /// `now_ms`: its own date, else when its id was first applied, else now.
    fn created_times(&self, config: &TriageConfig, now_ms: i64) -> BTreeMap<SuppressionId, i64> {
        config
            .suppressions
            .iter()
            .filter(|s| s.created_ms.is_none())
            .map(|s| {
                let t = self
                    .st
                    .suppression_created
                    .get(&s.id)
                    .copied()
                    .unwrap_or(now_ms);
                (s.id.clone(), t)
            })
            .collect()
    }

    /// Makes `config` the config in force as a new version by `author`.
    /// With `base_version`, refuses if the config changed since that
    /// version (two people editing at once). Open alerts a suppression
    /// matches are closed, except those a person reopened; every open
    /// alert and incident is rescored.
    pub fn apply_config(
        &mut self,
        config: TriageConfig,
        author: &str,
        message: &str,
        base_version: Option<u64>,
        now_ms: i64,
    ) -> Result<(ConfigVersion, Vec<Effect>), TriageError> {
        let author = check_who(author)?;
        if let Some(expected) = base_version
            && expected != self.config_version
        {
            return Err(TriageError::ConfigConflict {
                expected,
                actual: self.config_version,
            });
        }
        let created = self.created_times(&config, now_ms);
        let record = ConfigVersion {
            version: self.config_version + 1,
            author,
            applied_ms: now_ms,
            summary: config.change_summary(&self.config),
            message: crate::bounded::clip(message.trim(), 1024),
        };
        self.st.suppression_created = created;
        self.config = config;
        self.config_version = record.version;
        self.config_history.push(record.clone());
        if self.config_history.len() > MAX_CONFIG_HISTORY {
            self.config_history.remove(0);
        }

        let mut effects = Vec::new();
        let st = &mut self.st;
        let mut closing = Vec::new();
        for alert in st.alerts.values() {
            if !alert.case.state.is_open() || alert.case.held_by_person {
                continue;
            }
            let Some(s) = first_match(
                &self.config.suppressions,
                &st.suppression_created,
                &alert.subject(),
                now_ms,
            ) else {
                continue;
            };
            closing.push((
                alert.id,
                s.id.clone(),
                format!("suppression {} by {}: {}", s.id, s.author, s.reason),
            ));
        }
        for (id, sid, reason) in closing {
            if let Some(alert) = st.alerts.get_mut(&id) {
                alert
                    .case
                    .close(ClosedBy::Suppression(sid.clone()), reason, now_ms);
            }
            st.stats.alerts_auto_closed += 1;
            effects.push(Effect::AlertAutoClosed {
                alert: id,
                suppression: sid,
            });
        }
        self.st.rescore_open(&self.config);
        Ok((record, effects))
    }

    /// What applying `config` at `now_ms` would change, without changing
    /// anything: open alerts a suppression would close, and open alerts
    /// whose score would move.
    pub fn dry_run(&self, config: &TriageConfig, now_ms: i64) -> DryRun {
        let created = self.created_times(config, now_ms);
        let mut changes = Vec::new();
        let mut unchanged = 0;
        for alert in self.st.alerts.values().filter(|a| a.case.state.is_open()) {
            let closed_by = (!alert.case.held_by_person)
                .then(|| first_match(&config.suppressions, &created, &alert.subject(), now_ms))
                .flatten()
                .map(|s| s.id.clone());
            let (_, _, before, _) = self.st.evaluate(&self.config, alert);
            let (_, _, after, _) = self.st.evaluate(config, alert);
            if closed_by.is_some() || before != after {
                changes.push(AlertChange {
                    alert: alert.id,
                    title: alert.title.clone(),
                    score_before: before,
                    score_after: after,
                    closed_by,
                });
            } else {
                unchanged += 1;
            }
        }
        DryRun {
            current_version: self.config_version,
            summary: config.change_summary(&self.config),
            changes,
            unchanged,
        }
    }
}
