//! `quarry.v1.TriageService`: the ranked queue of alerts and incidents and
//! the human side of triage. Reads are linearizable (a read index, as for
//! hunts); writes are raft commands ([`TriageOp`]) with optional request
//! ids, so a retried verdict applies once.

use crate::convert;
use crate::error::CoordinatorError;
use crate::service::Api;
use crate::state::{Command, Response, State};
use crate::triage_state::{
    CaseAction, ConfigChange, TriageAnswer, TriageOp, config_changes, follow_up_alert,
};
use quarry_proto::v1;
use quarry_triage::query::{Kinds, Query, StateFilter};
use quarry_triage::{Alert, CaseId, CaseView, Incident, Score, Severity, TriageConfig};
use tonic::{Request, Status};

/// Findings of an alert sent with it by `GetCase`.
const CASE_FINDINGS: usize = 100;

fn points(score: Score) -> f64 {
    f64::from(score.0) / 100.0
}

fn severity(severity: Severity) -> v1::Severity {
    match severity {
        Severity::Informational => v1::Severity::Informational,
        Severity::Low => v1::Severity::Low,
        Severity::Medium => v1::Severity::Medium,
        Severity::High => v1::Severity::High,
        Severity::Critical => v1::Severity::Critical,
    }
}

fn severity_from(value: i32) -> Option<Severity> {
    match v1::Severity::try_from(value).ok()? {
        v1::Severity::Unspecified => None,
        v1::Severity::Informational => Some(Severity::Informational),
        v1::Severity::Low => Some(Severity::Low),
        v1::Severity::Medium => Some(Severity::Medium),
        v1::Severity::High => Some(Severity::High),
        v1::Severity::Critical => Some(Severity::Critical),
    }
}

fn human(case: &quarry_triage::Case, out: &mut v1::TriageCase) {
    out.state = if case.state.is_open() {
        "open"
    } else {
        "closed"
    }
    .to_owned();
    if let Some(closure) = case.state.closure() {
        out.closed_by = closure.by.to_string();
        out.close_reason = closure.reason.clone();
    }
    out.assignee = case.assignee.clone().unwrap_or_default();
    out.verdict = case.verdict.as_ref().map(|v| v1::CaseVerdict {
        kind: v.kind.name().to_owned(),
        comment: v.comment.clone(),
        who: v.who.clone(),
        at_ms: v.at_ms,
    });
    out.comments = case
        .comments
        .iter()
        .map(|c| v1::CaseComment {
            who: c.who.clone(),
            at_ms: c.at_ms,
            text: c.text.clone(),
        })
        .collect();
    out.history = case
        .history
        .iter()
        .map(|h| v1::CaseHistory {
            at_ms: h.at_ms,
            actor: h.actor.to_string(),
            action: h.action.clone(),
        })
        .collect();
}

fn terms(terms: &[quarry_triage::ScoreTerm]) -> Vec<v1::ScoreTerm> {
    terms
        .iter()
        .map(|t| v1::ScoreTerm {
            name: t.name.name().to_owned(),
            input: t.input.clone(),
            factor: f64::from(t.factor_permille) / 1000.0,
            weight: t.weight,
            contribution: points(t.contribution),
        })
        .collect()
}

fn alert_case(a: &Alert) -> v1::TriageCase {
    let mut out = v1::TriageCase {
        id: a.id.to_string(),
        kind: "alert".to_owned(),
        title: a.title.clone(),
        rule: a.rule.clone(),
        rule_author: a.rule_author.clone().unwrap_or_default(),
        module: a.module.clone(),
        entity: a.entity.clone(),
        severity: severity(a.severity) as i32,
        score: points(a.score),
        score_terms: terms(&a.score_terms),
        count: a.count,
        first_seen_ms: a.first_seen_ms,
        last_seen_ms: a.last_seen_ms,
        hosts: a.hosts.iter().cloned().collect(),
        hunts: a.hunts.iter().cloned().collect(),
        techniques: a
            .techniques
            .iter()
            .map(|t| v1::Technique {
                id: t.id.clone(),
                name: t.name.clone().unwrap_or_default(),
                tactics: t.tactics.clone(),
            })
            .collect(),
        tactics: a.tactics.iter().cloned().collect(),
        findings: a
            .links
            .iter()
            .map(|l| v1::FindingRef {
                hunt_id: l.hunt.clone(),
                seq: l.seq,
            })
            .collect(),
        related: a.incidents.iter().map(ToString::to_string).collect(),
        criticality: a.criticality.name().to_owned(),
        criticality_reason: a.criticality_reason.clone(),
        intel_matches: a.intel_matches,
        suppressed_count: a.suppressed_count,
        fields: a.fields.iter().cloned().collect(),
        ..v1::TriageCase::default()
    };
    human(&a.case, &mut out);
    out
}

fn incident_case(i: &Incident) -> v1::TriageCase {
    let mut out = v1::TriageCase {
        id: i.id.to_string(),
        kind: "incident".to_owned(),
        title: format!("{} rules on {}", i.rules.len(), i.entity),
        entity: i.entity.to_string(),
        severity: severity(i.severity) as i32,
        score: points(i.score),
        score_terms: terms(&i.score_terms),
        count: i.alerts.len() as u64,
        first_seen_ms: i.first_seen_ms,
        last_seen_ms: i.last_seen_ms,
        tactics: i.tactics.iter().cloned().collect(),
        related: i.alerts.iter().map(ToString::to_string).collect(),
        rules: i.rules.iter().cloned().collect(),
        reason: i.reason.clone(),
        ..v1::TriageCase::default()
    };
    human(&i.case, &mut out);
    out
}

/// A case as the API shows it.
pub fn case(view: CaseView<'_>) -> v1::TriageCase {
    match view {
        CaseView::Alert(a) => alert_case(a),
        CaseView::Incident(i) => incident_case(i),
    }
}

fn find(state: &State, id: CaseId) -> Option<v1::TriageCase> {
    match id {
        CaseId::Alert(a) => state.triage.alert(a).map(|alert| {
            let mut case = alert_case(alert);
            let name = a.to_string();
            case.follow_ups = state
                .hunts
                .values()
                .filter(|h| follow_up_alert(&h.spec.description) == Some(name.as_str()))
                .map(|h| v1::FollowUpHunt {
                    description: h.spec.description.clone(),
                    hunt_id: h.id.to_string(),
                })
                .collect();
            case
        }),
        CaseId::Incident(i) => state.triage.incident(i).map(incident_case),
    }
}

fn case_id(text: &str) -> Result<CaseId, Status> {
    text.parse::<CaseId>()
        .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()).into())
}

fn changes(changes: Vec<ConfigChange>) -> Vec<v1::CaseChange> {
    changes
        .into_iter()
        .map(|c| v1::CaseChange {
            id: c.alert,
            title: c.title,
            score_before: f64::from(c.score_before) / 100.0,
            score_after: f64::from(c.score_after) / 100.0,
            closed_by: c.closed_by.unwrap_or_default(),
        })
        .collect()
}

fn actor(actor: &str) -> Result<String, Status> {
    if actor.trim().is_empty() {
        return Err(CoordinatorError::InvalidArgument(
            "say who acts (`actor`; the CLI takes --as NAME, default $USER): triage records it in the case history"
                .to_owned(),
        )
        .into());
    }
    Ok(actor.to_owned())
}

impl Api {
    async fn triage_write(&self, request_id: &str, op: TriageOp) -> Result<TriageAnswer, Status> {
        let now_ms = self.shared.clock.now_ms();
        match self
            .shared
            .propose_write(request_id, Command::Triage { op, now_ms })
            .await?
        {
            Response::Triage(answer) => Ok(answer),
            other => Err(Status::internal(format!(
                "a triage write answered {other:?}"
            ))),
        }
    }
}

#[tonic::async_trait]
impl v1::triage_service_server::TriageService for Api {
    #[tracing::instrument(skip_all)]
    async fn list_cases(
        &self,
        request: Request<v1::ListCasesRequest>,
    ) -> Result<tonic::Response<v1::ListCasesResponse>, Status> {
        self.shared.node.read_index().await?;
        let r = request.into_inner();
        let kinds = match r.kinds.as_str() {
            "" | "all" | "both" => Kinds::Both,
            "alerts" | "alert" => Kinds::Alerts,
            "incidents" | "incident" => Kinds::Incidents,
            other => {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "kinds `{other}`: use alerts, incidents or nothing for both"
                ))
                .into());
            }
        };
        let (state, include_closed) = match r.state.as_str() {
            "" | "open" => (Some(StateFilter::Open), false),
            "closed" => (Some(StateFilter::Closed), true),
            "auto-closed" => (Some(StateFilter::AutoClosed), true),
            "all" => (None, true),
            other => {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "state `{other}`: use open, closed, auto-closed or all"
                ))
                .into());
            }
        };
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let query = Query {
            kinds,
            state,
            include_closed,
            min_severity: severity_from(r.min_severity),
            entity: non_empty(r.entity),
            rule: non_empty(r.rule),
            assignee: non_empty(r.assignee),
            page_size: r.page_size,
            page_token: non_empty(r.page_token),
        };
        let response = self.shared.read(|s| {
            s.triage.list(&query).map(|page| v1::ListCasesResponse {
                cases: page.items.into_iter().map(case).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
                total: page.total as u64,
            })
        })?;
        response
            .map(tonic::Response::new)
            .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()).into())
    }

    #[tracing::instrument(skip_all, fields(case))]
    async fn get_case(
        &self,
        request: Request<v1::GetCaseRequest>,
    ) -> Result<tonic::Response<v1::TriageCase>, Status> {
        self.shared.node.read_index().await?;
        let id = case_id(&request.into_inner().id)?;
        tracing::Span::current().record("case", tracing::field::display(id));
        let Some(mut found) = self.shared.read(|s| find(s, id))? else {
            return Err(CoordinatorError::NotFound(format!(
                "{id} does not exist (closed cases are kept for the retention period); `quarry triage list --state all` lists them"
            ))
            .into());
        };
        if let CaseId::Alert(_) = id {
            let node = self.shared.node.clone();
            let alert = found.id.clone();
            let rows =
                tokio::task::spawn_blocking(move || node.alert_findings(&alert, 0, CASE_FINDINGS))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))??;
            found.finding_details = rows
                .iter()
                .map(|(hunt, seq, f)| convert::finding(hunt, *seq, f))
                .collect();
        }
        Ok(tonic::Response::new(found))
    }

    #[tracing::instrument(skip_all, fields(case))]
    async fn update_case(
        &self,
        request: Request<v1::UpdateCaseRequest>,
    ) -> Result<tonic::Response<v1::TriageCase>, Status> {
        use v1::update_case_request::Action;
        quarry_security::audit::set_target(&request, format!("case {}", request.get_ref().id));
        let r = request.into_inner();
        let id = case_id(&r.id)?;
        tracing::Span::current().record("case", tracing::field::display(id));
        let action = match r.action {
            Some(Action::Assign(who)) => {
                CaseAction::Assign((!who.trim().is_empty()).then_some(who))
            }
            Some(Action::Comment(text)) => CaseAction::Comment(text),
            Some(Action::Verdict(v)) => CaseAction::Verdict {
                kind: v.kind.parse().map_err(|e: quarry_triage::TriageError| {
                    CoordinatorError::InvalidArgument(e.to_string())
                })?,
                comment: v.comment,
            },
            Some(Action::Close(reason)) => CaseAction::Close(reason),
            Some(Action::Reopen(reason)) => CaseAction::Reopen(reason),
            None => {
                return Err(CoordinatorError::InvalidArgument(
                    "no action: assign, comment, verdict, close or reopen".to_owned(),
                )
                .into());
            }
        };
        self.triage_write(
            &r.request_id,
            TriageOp::Update {
                case: id.to_string(),
                actor: actor(&r.actor)?,
                action,
            },
        )
        .await?;
        tracing::info!("case updated");
        let found = self.shared.read(|s| find(s, id))?;
        found
            .map(tonic::Response::new)
            .ok_or_else(|| Status::not_found(format!("{id} is gone")))
    }

    #[tracing::instrument(skip_all)]
    async fn apply_config(
        &self,
        request: Request<v1::ApplyTriageConfigRequest>,
    ) -> Result<tonic::Response<v1::ApplyTriageConfigResponse>, Status> {
        quarry_security::audit::set_target(&request, "triage config");
        let r = request.into_inner();
        // Parsed here first so a bad file is refused with its line numbers
        // without a trip through the log.
        let config = TriageConfig::from_yaml(&r.yaml)
            .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?;
        let base_version = (r.base_version > 0).then_some(r.base_version);
        if r.dry_run {
            self.shared.node.read_index().await?;
            let now_ms = self.shared.clock.now_ms();
            let (version, (summary, changed, unchanged)) = self.shared.read(|s| {
                (
                    s.triage.config_version(),
                    config_changes(&s.triage, &config, now_ms),
                )
            })?;
            if let Some(base) = base_version
                && base != version
            {
                return Err(Status::failed_precondition(format!(
                    "the config in force is version {version}, not {base}; fetch it again and redo your change"
                )));
            }
            return Ok(tonic::Response::new(v1::ApplyTriageConfigResponse {
                version,
                summary,
                changes: changes(changed),
                unchanged,
            }));
        }
        let answer = self
            .triage_write(
                &r.request_id,
                TriageOp::ApplyConfig {
                    yaml: r.yaml,
                    actor: actor(&r.actor)?,
                    message: r.message,
                    base_version,
                },
            )
            .await?;
        let TriageAnswer::Config {
            version,
            summary,
            changes: changed,
            unchanged,
        } = answer
        else {
            return Err(Status::internal("a config apply answered something else"));
        };
        tracing::info!(version, "triage config applied");
        Ok(tonic::Response::new(v1::ApplyTriageConfigResponse {
            version,
            summary,
            changes: changes(changed),
            unchanged,
        }))
    }

    async fn get_config(
        &self,
        _: Request<v1::GetTriageConfigRequest>,
    ) -> Result<tonic::Response<v1::TriageConfigInfo>, Status> {
        self.shared.node.read_index().await?;
        let info = self.shared.read(|s| {
            let t = &s.triage;
            serde_json::to_string_pretty(t.config()).map(|config_json| v1::TriageConfigInfo {
                version: t.config_version(),
                config_json,
                history: t
                    .config_history()
                    .iter()
                    .map(|v| v1::TriageConfigVersion {
                        version: v.version,
                        author: v.author.clone(),
                        applied_ms: v.applied_ms,
                        summary: v.summary.clone(),
                        message: v.message.clone(),
                    })
                    .collect(),
            })
        })?;
        info.map(tonic::Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn list_proposals(
        &self,
        request: Request<v1::ListProposalsRequest>,
    ) -> Result<tonic::Response<v1::ListProposalsResponse>, Status> {
        self.shared.node.read_index().await?;
        let all = request.into_inner().all;
        let proposals = self.shared.read(|s| {
            s.triage
                .proposals()
                .filter(|p| all || p.status == quarry_triage::ProposalStatus::Pending)
                .map(|p| v1::Proposal {
                    id: p.id.to_string(),
                    rule: p.rule.clone(),
                    subject: p.subject.to_string(),
                    verdicts: p.verdicts,
                    window_ms: p.window_ms,
                    alerts: p.alerts.iter().map(ToString::to_string).collect(),
                    created_ms: p.created_ms,
                    status: format!("{:?}", p.status).to_lowercase(),
                    summary: p.summary.clone(),
                })
                .collect()
        })?;
        Ok(tonic::Response::new(v1::ListProposalsResponse {
            proposals,
        }))
    }

    #[tracing::instrument(skip_all, fields(proposal))]
    async fn decide_proposal(
        &self,
        request: Request<v1::DecideProposalRequest>,
    ) -> Result<tonic::Response<v1::DecideProposalResponse>, Status> {
        quarry_security::audit::set_target(&request, format!("proposal {}", request.get_ref().id));
        let r = request.into_inner();
        tracing::Span::current().record("proposal", r.id.as_str());
        let answer = self
            .triage_write(
                &r.request_id,
                TriageOp::DecideProposal {
                    proposal: r.id,
                    accept: r.accept,
                    actor: actor(&r.actor)?,
                },
            )
            .await?;
        let TriageAnswer::Proposal {
            suppression,
            version,
        } = answer
        else {
            return Err(Status::internal(
                "a proposal decision answered something else",
            ));
        };
        tracing::info!(accepted = r.accept, "proposal decided");
        Ok(tonic::Response::new(v1::DecideProposalResponse {
            suppression_id: suppression.unwrap_or_default(),
            config_version: version,
        }))
    }

    async fn summary(
        &self,
        _: Request<v1::TriageSummaryRequest>,
    ) -> Result<tonic::Response<v1::TriageSummaryResponse>, Status> {
        self.shared.node.read_index().await?;
        let response = self.shared.read(|s| {
            let t = &s.triage;
            let summary = t.summary();
            let stats = |map: &std::collections::BTreeMap<String, quarry_triage::VerdictCounts>| {
                map.iter()
                    .map(|(name, c)| {
                        let total = c.true_positive + c.false_positive + c.benign_expected;
                        v1::VerdictStats {
                            name: name.clone(),
                            true_positive: c.true_positive,
                            false_positive: c.false_positive,
                            benign_expected: c.benign_expected,
                            false_positive_rate: if total == 0 {
                                0.0
                            } else {
                                (c.false_positive + c.benign_expected) as f64 / total as f64
                            },
                        }
                    })
                    .collect()
            };
            v1::TriageSummaryResponse {
                findings: summary.findings,
                alerts: summary.alerts as u64,
                open_alerts: summary.open_alerts as u64,
                auto_closed_alerts: summary.auto_closed_alerts as u64,
                incidents: summary.incidents as u64,
                open_incidents: summary.open_incidents as u64,
                pending_proposals: summary.pending_proposals as u64,
                config_version: t.config_version(),
                by_rule: stats(t.verdicts_by_rule()),
                by_module: stats(t.verdicts_by_module()),
            }
        })?;
        Ok(tonic::Response::new(response))
    }
}
