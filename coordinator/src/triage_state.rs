//! Triage in the state machine: every committed finding passes through
//! [`quarry_triage::Triage`] in `apply`, with the command's leader time, so
//! every replica holds the same alerts, incidents and risk; people's actions
//! (assign, verdicts, config) are raft commands like any other write. The
//! triage core is pure; this module feeds it what the state knows of each
//! finding (its shard's labels, its module) and maps its errors to
//! rejections.

use crate::state::{
    Applied, HuntSpec, Limits, ModuleSelector, NewFinding, Rejection, Response, Scope, State,
    Touched,
};
use quarry_proto::{HuntId, ShardId};
use quarry_triage::{
    CaseId, Effect, ProposalId, Severity as TriageSeverity, TriageConfig, TriageError,
    TriageFinding, VerdictKind,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hunts of this module gather context for an alert (a pivot on its
/// entity); their results are events, not detections, so they are not
/// triaged.
pub const PIVOT_MODULE: &str = "pivot";

/// The description of a follow-up hunt: how `quarry triage show` and
/// `quarry pivot --from-alert` find an alert's follow-ups.
pub fn follow_up_description(alert: &str, follow_up: &str, entity: &str, around_ms: i64) -> String {
    format!(
        "{} {alert}: follow-up {follow_up}, pivot on {entity} ±{} min",
        FOLLOW_UP_PREFIX,
        around_ms / 60_000
    )
}

/// Follow-up hunts that may run at once: a broad follow-up rule on a noisy
/// hunt would otherwise start one pivot over every shard per new alert.
/// Past it a follow-up is not started; `quarry pivot --from-alert` runs it
/// by hand.
pub const MAX_RUNNING_FOLLOW_UPS: usize = 16;

/// Every follow-up hunt's description starts with this and the alert id.
pub const FOLLOW_UP_PREFIX: &str = "follow-up for";

/// The alert a follow-up hunt was started for, from its description.
pub fn follow_up_alert(description: &str) -> Option<&str> {
    description
        .strip_prefix(FOLLOW_UP_PREFIX)?
        .trim_start()
        .split(':')
        .next()
}

/// A triage write, as it travels through the raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriageOp {
    /// Act on an alert or incident.
    Update {
        /// `A-12` or `I-3`.
        case: String,
        /// Who acts.
        actor: String,
        /// What they do.
        action: CaseAction,
    },
    /// Replace the config from YAML.
    ApplyConfig {
        /// The YAML text (parsed again on apply: same code, same result).
        yaml: String,
        /// Who applies it.
        actor: String,
        /// Why, for the history.
        message: String,
        /// Refuse unless this version is in force.
        base_version: Option<u64>,
    },
    /// Accept or reject a suppression proposal.
    DecideProposal {
        /// `P-4`.
        proposal: String,
        /// Accept (or reject).
        accept: bool,
        /// Who decides.
        actor: String,
    },
}

/// What a person does to a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseAction {
    /// Assign (`None`: unassign).
    Assign(Option<String>),
    /// Comment.
    Comment(String),
    /// Verdict with a comment.
    Verdict {
        /// The verdict.
        kind: VerdictKind,
        /// Why.
        comment: String,
    },
    /// Close with a reason.
    Close(String),
    /// Reopen with a reason.
    Reopen(String),
}

/// What a triage write did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriageAnswer {
    /// The case changed.
    Case(String),
    /// A config version is in force.
    Config {
        /// Its number.
        version: u64,
        /// What changed, in short.
        summary: String,
        /// Open alerts it changed: `(id, title, score before, after,
        /// closing suppression)`, scores in hundredths.
        changes: Vec<ConfigChange>,
        /// Open alerts left as they were.
        unchanged: u64,
    },
    /// A proposal was decided.
    Proposal {
        /// The suppression an accepted proposal became.
        suppression: Option<String>,
        /// The config version in force after it.
        version: u64,
    },
}

/// One open alert a config changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The alert.
    pub alert: String,
    /// Its title.
    pub title: String,
    /// Score before, in hundredths of a point.
    pub score_before: u32,
    /// Score after.
    pub score_after: u32,
    /// The suppression that closes it, if one does.
    pub closed_by: Option<String>,
}

/// What a config would change, for a dry run and for the answer to an apply.
pub fn config_changes(
    triage: &quarry_triage::Triage,
    config: &TriageConfig,
    now_ms: i64,
) -> (String, Vec<ConfigChange>, u64) {
    let dry = triage.dry_run(config, now_ms);
    let changes = dry
        .changes
        .into_iter()
        .map(|c| ConfigChange {
            alert: c.alert.to_string(),
            title: c.title,
            score_before: c.score_before.0,
            score_after: c.score_after.0,
            closed_by: c.closed_by.map(|s| s.to_string()),
        })
        .collect();
    (dry.summary, changes, dry.unchanged as u64)
}

fn rejection(error: TriageError) -> Rejection {
    match error {
        TriageError::UnknownAlert(_)
        | TriageError::UnknownIncident(_)
        | TriageError::UnknownProposal(_) => Rejection::NotFound(error.to_string()),
        TriageError::AlreadyClosed { .. }
        | TriageError::NotClosed(_)
        | TriageError::ProposalResolved { .. }
        | TriageError::ConfigConflict { .. }
        | TriageError::DuplicateFinding { .. } => Rejection::Conflict(error.to_string()),
        _ => Rejection::Invalid(error.to_string()),
    }
}

fn severity(severity: crate::state::Severity) -> TriageSeverity {
    use crate::state::Severity as S;
    match severity {
        S::Informational => TriageSeverity::Informational,
        S::Low => TriageSeverity::Low,
        S::Medium => TriageSeverity::Medium,
        S::High => TriageSeverity::High,
        S::Critical => TriageSeverity::Critical,
    }
}

/// Values of one finding looked up in the intel store, at most.
const MAX_INTEL_LOOKUPS: usize = 32;
/// Matches one finding is enriched with, at most.
const MAX_INTEL_MATCHES: usize = 8;

impl State {
    /// The intel-store matches of a finding's entities and evidence values
    /// that are addresses, domains, URLs or hashes: `intel_match` evidence
    /// (`indicator in set`) and their count, which feeds the alert's intel
    /// score. A finding whose module matched intel itself (`intel_set`
    /// evidence or `intel:` tags, as ioc-sweep's) is left as it is.
    fn intel_enrichment(
        &mut self,
        entity: &str,
        evidence: &[(String, String)],
        tags: &[String],
    ) -> (Vec<(String, String)>, u32) {
        let own = evidence.iter().any(|(k, _)| k == "intel_set")
            || tags
                .iter()
                .any(|t| t.to_ascii_lowercase().starts_with("intel:"));
        if own || self.intel.sets.is_empty() {
            return (Vec::new(), 0);
        }
        let values = entity
            .split_whitespace()
            .map(|part| part.split_once(':').map_or(part, |(_, v)| v))
            .chain(evidence.iter().map(|(_, v)| v.as_str()))
            .filter(|v| {
                let v = quarry_contract::intel::normalise(v);
                quarry_intel::indicator::classify(&v).is_some_and(|k| {
                    !matches!(
                        k,
                        quarry_intel::Kind::Cidr | quarry_intel::Kind::WildcardDomain
                    )
                })
            })
            .take(MAX_INTEL_LOOKUPS)
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let mut found = Vec::new();
        for value in values {
            for (set, indicator) in self.intel.matches(&value) {
                let text = format!("{indicator} in {set}");
                if !found.iter().any(|(_, t): &(String, String)| *t == text) {
                    found.push(("intel_match".to_owned(), text));
                }
            }
        }
        found.truncate(MAX_INTEL_MATCHES);
        let count = u32::try_from(found.len()).unwrap_or(0);
        (found, count)
    }

    /// Passes a command's committed findings through triage; returns what
    /// triage asks of the coordinator and starts the follow-up hunts it asks
    /// for (adding what they touched). A finding triage refuses (no rule, a
    /// replay) is left out of triage, not out of the hunt's results.
    pub(crate) fn triage_findings(
        &mut self,
        index: u64,
        findings: &[NewFinding],
        now_ms: i64,
        touched: &mut Vec<Touched>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(first) = findings.first() else {
            return effects;
        };
        let Some(hunt) = self.hunts.get(&first.hunt) else {
            return effects;
        };
        let module = self
            .modules
            .get(&hunt.module)
            .map(|m| (m.name.clone(), format!("{}@{}", m.name, m.version)))
            .unwrap_or_default();
        if module.0 == PIVOT_MODULE {
            return effects;
        }
        for finding in findings {
            let record = &finding.record;
            let labels = self
                .shards
                .get(&record.shard)
                .map(|s| s.description.labels.to_map())
                .unwrap_or_default();
            let (enrichment, intel_matches) =
                self.intel_enrichment(&record.entity, &record.evidence, &record.tags);
            let mut evidence = record.evidence.clone();
            evidence.extend(enrichment);
            let input = TriageFinding {
                hunt: finding.hunt.to_string(),
                seq: finding.seq,
                finding_id: record.id.clone(),
                shard: record.shard.to_string(),
                host: labels.get("host").cloned(),
                shard_labels: labels,
                rule: record.rule.clone(),
                rule_author: None,
                module: module.1.clone(),
                title: record.title.clone(),
                severity: severity(record.severity),
                confidence: record.confidence,
                entity: record.entity.clone(),
                entities: Vec::new(),
                timestamp_ms: record.timestamp_ms,
                evidence,
                techniques: record.techniques.clone(),
                tags: record.tags.clone(),
                intel_matches,
            };
            match self.triage.ingest(input, now_ms) {
                Ok(more) => effects.extend(more),
                Err(error) => {
                    tracing::debug!(hunt = %finding.hunt, seq = finding.seq, %error, "finding not triaged");
                }
            }
        }
        let mut started = 0u32;
        // Counted once, and only for a report whose alerts ask for a
        // follow-up: most reports ask for none.
        let mut running: Option<usize> = None;
        for effect in &effects {
            if let Effect::StartFollowUp {
                alert,
                follow_up,
                entity,
                around_ms,
                from_ms,
                to_ms,
                ..
            } = effect
            {
                let running = running.get_or_insert_with(|| {
                    self.hunts
                        .values()
                        .filter(|h| {
                            !h.state.is_terminal() && follow_up_alert(&h.spec.description).is_some()
                        })
                        .count()
                });
                if *running >= MAX_RUNNING_FOLLOW_UPS {
                    tracing::debug!(%alert, "follow-up not started: {MAX_RUNNING_FOLLOW_UPS} already run");
                    continue;
                }
                let id = HuntId::new(format!("h-{index}.{started}"));
                started += 1;
                let description = follow_up_description(
                    &alert.to_string(),
                    &follow_up.to_string(),
                    &entity.to_string(),
                    *around_ms,
                );
                if let Some(spec) =
                    self.follow_up_spec(&entity.to_string(), *from_ms, *to_ms, description)
                {
                    let applied = self.create_hunt(id.clone(), spec, now_ms);
                    match applied.outcome {
                        Ok(_) => {
                            *running += 1;
                            touched.extend(applied.touched);
                        }
                        Err(error) => {
                            tracing::debug!(%alert, %error, "follow-up hunt not started");
                        }
                    }
                }
            }
        }
        effects
    }

    /// A pivot hunt on `entity` over `[from_ms, to_ms)` on every shard whose
    /// events may fall in that range, with the newest `pivot` module; `None`
    /// when no such module or shard exists.
    fn follow_up_spec(
        &self,
        entity: &str,
        from_ms: i64,
        to_ms: i64,
        description: String,
    ) -> Option<HuntSpec> {
        let module = self
            .modules
            .values()
            .filter(|m| m.name == PIVOT_MODULE)
            .max_by(|a, b| {
                (a.uploaded_ms, &a.version, &a.digest).cmp(&(b.uploaded_ms, &b.version, &b.digest))
            })?;
        let shards: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, s)| {
                let d = &s.description;
                !s.holders.is_empty()
                    && (d.max_ts_ms == 0 || d.max_ts_ms >= from_ms)
                    && (d.min_ts_ms == 0 || d.min_ts_ms < to_ms)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if shards.is_empty() {
            return None;
        }
        Some(HuntSpec {
            module: ModuleSelector::Digest(module.digest.clone()),
            params: BTreeMap::from([("entity".to_owned(), entity.to_owned())]),
            scope: Scope {
                selector: BTreeMap::new(),
                shards,
                start_ms: from_ms,
                end_ms: to_ms,
            },
            limits: Limits::default(),
            priority: 0,
            description,
            policy: Default::default(),
        })
    }

    /// Periodic triage upkeep on the leader's tick: scores follow rarity,
    /// closed cases past retention go.
    pub(crate) fn triage_tick(&mut self, now_ms: i64) -> Vec<Effect> {
        self.triage.rescore_open();
        self.triage.prune(now_ms)
    }

    /// Applies a person's triage action.
    pub(crate) fn apply_triage(&mut self, op: TriageOp, now_ms: i64) -> Applied {
        let answer = match op {
            TriageOp::Update {
                case,
                actor,
                action,
            } => self.update_case(&case, &actor, action, now_ms),
            TriageOp::ApplyConfig {
                yaml,
                actor,
                message,
                base_version,
            } => self.apply_triage_config(&yaml, &actor, &message, base_version, now_ms),
            TriageOp::DecideProposal {
                proposal,
                accept,
                actor,
            } => self.decide_proposal(&proposal, accept, &actor, now_ms),
        };
        match answer {
            Ok((answer, triage)) => Applied {
                outcome: Ok(Response::Triage(answer)),
                touched: Vec::new(),
                findings: Vec::new(),
                triage,
            },
            Err(error) => Applied {
                outcome: Err(rejection(error)),
                touched: Vec::new(),
                findings: Vec::new(),
                triage: Vec::new(),
            },
        }
    }

    fn update_case(
        &mut self,
        case: &str,
        actor: &str,
        action: CaseAction,
        now_ms: i64,
    ) -> Result<(TriageAnswer, Vec<Effect>), TriageError> {
        let id: CaseId = case.parse()?;
        let t = &mut self.triage;
        let effects = match action {
            CaseAction::Assign(assignee) => {
                t.assign(id, assignee.as_deref(), actor, now_ms)?;
                Vec::new()
            }
            CaseAction::Comment(text) => {
                t.comment(id, &text, actor, now_ms)?;
                Vec::new()
            }
            CaseAction::Verdict { kind, comment } => {
                t.set_verdict(id, kind, &comment, actor, now_ms)?
            }
            CaseAction::Close(reason) => {
                t.close(id, &reason, actor, now_ms)?;
                Vec::new()
            }
            CaseAction::Reopen(reason) => {
                t.reopen(id, &reason, actor, now_ms)?;
                Vec::new()
            }
        };
        Ok((TriageAnswer::Case(id.to_string()), effects))
    }

    fn apply_triage_config(
        &mut self,
        yaml: &str,
        actor: &str,
        message: &str,
        base_version: Option<u64>,
        now_ms: i64,
    ) -> Result<(TriageAnswer, Vec<Effect>), TriageError> {
        let config = TriageConfig::from_yaml(yaml)?;
        let (_, changes, unchanged) = config_changes(&self.triage, &config, now_ms);
        let (version, effects) =
            self.triage
                .apply_config(config, actor, message, base_version, now_ms)?;
        Ok((
            TriageAnswer::Config {
                version: version.version,
                summary: version.summary,
                changes,
                unchanged,
            },
            effects,
        ))
    }

    fn decide_proposal(
        &mut self,
        proposal: &str,
        accept: bool,
        actor: &str,
        now_ms: i64,
    ) -> Result<(TriageAnswer, Vec<Effect>), TriageError> {
        let id: ProposalId = proposal.parse()?;
        if accept {
            let (suppression, effects) = self.triage.accept_proposal(id, actor, now_ms)?;
            Ok((
                TriageAnswer::Proposal {
                    suppression: Some(suppression.to_string()),
                    version: self.triage.config_version(),
                },
                effects,
            ))
        } else {
            self.triage.reject_proposal(id, actor, now_ms)?;
            Ok((
                TriageAnswer::Proposal {
                    suppression: None,
                    version: self.triage.config_version(),
                },
                Vec::new(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{module, shard, spec};
    use crate::state::{Assignment, Command, FindingRecord, PartialResult, Severity, TaskReport};
    use quarry_proto::{TaskId, WorkerId};

    /// A cluster with a `pivot` module, a follow-up rule for every alert of
    /// rule `r`, and a hunt whose one task reports `entities` findings, each
    /// on its own host (so each opens its own alert).
    fn noisy(entities: usize) -> State {
        let mut s = State::default();
        s.apply(
            1,
            Command::UploadModule {
                module: module("m", "1", 1),
            },
        );
        let mut pivot = module(PIVOT_MODULE, "1", 2);
        pivot.uploaded_ms = 2;
        s.apply(2, Command::UploadModule { module: pivot });
        s.apply(
            3,
            Command::RegisterWorker {
                id: WorkerId::new("w0"),
                address: String::new(),
                slots: 2,
                shards: vec![shard("a", &[("env", "demo")])],
                now_ms: 10,
            },
        );
        let yaml = "version: 1\nfollow_ups:\n  - id: every-r\n    when:\n      rules: [\"r\"]\n    pivot: primary\n    around: 1h\n";
        let applied = s.apply(
            4,
            Command::Triage {
                op: TriageOp::ApplyConfig {
                    yaml: yaml.into(),
                    actor: "carol".into(),
                    message: String::new(),
                    base_version: None,
                },
                now_ms: 20,
            },
        );
        assert!(applied.outcome.is_ok(), "{:?}", applied.outcome);
        let Ok(Response::Hunt { id: hunt, .. }) = s
            .apply(
                5,
                Command::SubmitHunt {
                    spec: spec(&[("env", "demo")]),
                    now_ms: 30,
                },
            )
            .outcome
        else {
            panic!("hunt");
        };
        let task = TaskId::for_shard(&hunt, &quarry_proto::ShardId::new("a"));
        s.apply(
            6,
            Command::AssignTasks {
                assignments: vec![Assignment {
                    task: task.clone(),
                    worker: WorkerId::new("w0"),
                }],
                now_ms: 40,
            },
        );
        let findings = (0..entities)
            .map(|n| FindingRecord {
                id: String::new(),
                task: task.clone(),
                shard: quarry_proto::ShardId::new("a"),
                rule: "r".into(),
                title: "t".into(),
                severity: Severity::High,
                confidence: 80,
                entity: format!("host:h{n}"),
                timestamp_ms: 1_000_000,
                evidence: Vec::new(),
                techniques: Vec::new(),
                tags: Vec::new(),
                offsets: vec![n as u64],
            })
            .collect();
        let report = Command::RecordResult {
            report: TaskReport {
                task,
                attempt: 1,
                worker: WorkerId::new("w0"),
                outcome: Ok(PartialResult {
                    findings,
                    ..PartialResult::default()
                }),
            },
            now_ms: 50,
        };
        let applied = s.apply(7, report);
        assert!(applied.outcome.is_ok(), "{:?}", applied.outcome);
        s
    }

    fn follow_ups(s: &State) -> Vec<&crate::state::HuntRecord> {
        s.hunts
            .values()
            .filter(|h| follow_up_alert(&h.spec.description).is_some())
            .collect()
    }

    #[test]
    fn an_alert_that_opens_under_a_follow_up_rule_starts_its_pivot_hunt_in_the_same_apply() {
        let s = noisy(1);
        let started = follow_ups(&s);
        assert_eq!(started.len(), 1);
        let hunt = started[0];
        assert_eq!(hunt.id.as_str(), "h-7.0");
        assert_eq!(hunt.spec.params["entity"], "host:h0");
        assert_eq!(follow_up_alert(&hunt.spec.description), Some("A-1"));
        assert_eq!(s.modules[&hunt.module].name, PIVOT_MODULE);
        // Its own findings are context: the pivot hunt is not triaged.
        assert_eq!(s.triage.summary().findings, 1);
    }

    #[test]
    fn alerts_whose_entities_match_a_stored_set_carry_the_set_and_indicator() {
        let mut s = State::default();
        let indicators = ["198.51.100.0/24", "evil.example"]
            .iter()
            .map(|v| quarry_intel::Indicator::parse(v).expect("indicator"))
            .collect();
        let record = crate::intel_store::IntelSetRecord {
            name: "apt-x".into(),
            version: 0,
            format: "lines".into(),
            source: "test".into(),
            imported_by: "hunter:a".into(),
            imported_ms: 1,
            indicators,
            problems: 0,
            skipped: 0,
        };
        assert!(s.apply(1, Command::ImportIntel { record }).outcome.is_ok());
        let (evidence, count) = s.intel_enrichment(
            "ip:198.51.100.9",
            &[
                ("QueryName".into(), "cdn.evil.example".into()),
                ("CommandLine".into(), "ping 198.51.100.9".into()),
            ],
            &[],
        );
        assert_eq!(count, 1, "{evidence:?}");
        assert_eq!(
            evidence,
            [(
                "intel_match".to_owned(),
                "198.51.100.0/24 in apt-x".to_owned()
            )]
        );
        // A module that matched intel itself is not counted twice.
        let own = s.intel_enrichment("ip:198.51.100.9", &[], &["intel:apt-x".into()]);
        assert_eq!(own.1, 0);
    }

    #[test]
    fn follow_up_hunts_are_capped_while_they_run() {
        let s = noisy(40);
        assert_eq!(s.triage.summary().alerts, 40);
        assert_eq!(follow_ups(&s).len(), MAX_RUNNING_FOLLOW_UPS);
    }
}
