//! `quarry.v1.ScheduleService` (recurring hunts, docs/schedules.md) and
//! the worker's `FetchBaseline`.

use crate::schedules::{MissedPolicy, RunRecord, ScheduleRecord, Trigger};
use crate::service::{Api, caller_of};
use crate::state::{Command, State};
use quarry_proto::{HuntId, ScheduleId, v1};
use tonic::{Request, Status};

fn trigger_proto(trigger: &Trigger) -> v1::ScheduleTrigger {
    let inner = match trigger {
        Trigger::Cron {
            expression,
            time_zone,
        } => v1::schedule_trigger::Trigger::Cron(v1::CronTrigger {
            expression: expression.clone(),
            time_zone: time_zone.clone(),
        }),
        Trigger::Every { interval_ms, .. } => {
            v1::schedule_trigger::Trigger::EveryMs(u64::try_from(*interval_ms).unwrap_or(0))
        }
    };
    v1::ScheduleTrigger {
        trigger: Some(inner),
    }
}

fn missed_proto(missed: MissedPolicy) -> v1::MissedRunPolicy {
    match missed {
        MissedPolicy::RunOnce => v1::MissedRunPolicy::RunOnce,
        MissedPolicy::Skip => v1::MissedRunPolicy::Skip,
    }
}

/// A run as protobuf.
pub fn run_proto(run: &RunRecord) -> v1::ScheduleRun {
    v1::ScheduleRun {
        number: run.number,
        due_ms: run.due_ms,
        hunt_id: run
            .hunt
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        started_ms: run.started_ms,
        finished_ms: run.finished_ms,
        outcome: run.outcome.as_str().to_owned(),
        reason: run.reason.clone(),
        findings: run.findings,
        events_scanned: run.events_scanned,
        shards_scanned: run.shards_scanned,
        shards_failed: run.shards_failed.iter().map(ToString::to_string).collect(),
        due_times: run.due_times,
    }
}

/// A schedule as protobuf.
pub fn schedule_proto(record: &ScheduleRecord) -> v1::Schedule {
    let baseline_runs = record.baseline_runs(record.next_due_ms);
    v1::Schedule {
        name: record.id.to_string(),
        template: Some(crate::convert::submit_request(&record.template)),
        trigger: Some(trigger_proto(&record.trigger)),
        overlap_events: record.overlap_events,
        missed: missed_proto(record.missed) as i32,
        baseline_days: record.baseline_days,
        paused: record.paused,
        created_ms: record.created_ms,
        created_by: record.created_by.clone(),
        next_due_ms: record.next_due_ms,
        active_hunt_id: record
            .active
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        watermarks: record
            .watermarks
            .iter()
            .map(|(shard, offset)| v1::ShardWatermark {
                shard: shard.to_string(),
                offset: *offset,
            })
            .collect(),
        runs: record.run_count,
        last_run: record.last_run().map(run_proto),
        baseline_runs,
        trigger_text: record.trigger.describe(),
    }
}

fn trigger_from(trigger: Option<v1::ScheduleTrigger>, now_ms: i64) -> Result<Trigger, Status> {
    match trigger.and_then(|t| t.trigger) {
        Some(v1::schedule_trigger::Trigger::Cron(cron)) => Ok(Trigger::Cron {
            expression: cron
                .expression
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            time_zone: cron.time_zone.trim().to_owned(),
        }),
        Some(v1::schedule_trigger::Trigger::EveryMs(ms)) => Ok(Trigger::Every {
            interval_ms: i64::try_from(ms).unwrap_or(i64::MAX),
            anchor_ms: now_ms,
        }),
        None => Err(Status::invalid_argument(
            "a schedule needs a trigger: a cron expression (`--cron '0 3 * * *'`) or an interval (`--every 6h`)",
        )),
    }
}

fn schedule_id(name: &str) -> Result<ScheduleId, Status> {
    crate::schedules::validate_name(name).map_err(Status::invalid_argument)?;
    Ok(ScheduleId::new(name))
}

impl Api {
    fn schedule(&self, id: &ScheduleId) -> Result<v1::Schedule, Status> {
        self.shared
            .read(|s| s.schedules.by_id.get(id).map(schedule_proto))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no schedule named {id}; `quarry schedule list` shows the cluster's schedules"
                ))
            })
    }

    async fn propose_schedule(&self, command: Command) -> Result<(), Status> {
        self.shared.propose_write("", command).await.map(|_| ())
    }
}

#[tonic::async_trait]
impl v1::schedule_service_server::ScheduleService for Api {
    #[tracing::instrument(skip_all, fields(schedule))]
    async fn create_schedule(
        &self,
        request: Request<v1::CreateScheduleRequest>,
    ) -> Result<tonic::Response<v1::Schedule>, Status> {
        let (created_by, _) = caller_of(&request);
        quarry_security::audit::set_target(
            &request,
            format!("schedule {}", request.get_ref().name),
        );
        let request = request.into_inner();
        tracing::Span::current().record("schedule", request.name.as_str());
        let id = schedule_id(&request.name)?;
        let template = request.template.ok_or_else(|| {
            Status::invalid_argument("a schedule needs a hunt template (module, scope, params)")
        })?;
        let intel_sets = template.intel_sets.clone();
        let rule_packs = template.rule_packs.clone();
        let mut spec = crate::convert::hunt_spec(template)?;
        self.bind_intel(&mut spec, &intel_sets)?;
        // A pack named without a version is pinned to today's latest;
        // `NAME@latest` follows the pack (bound again at each run).
        self.bind_rule_packs(&mut spec, &rule_packs, true)?;
        // Refuse a template that could not run now (unknown module, empty
        // scope) before it reaches the log.
        self.shared
            .read(|s| {
                let mut run = spec.clone();
                s.rebind_rule_packs(&mut run);
                s.validate_submit(&run).map(|_| ())
            })?
            .map_err(|r| Status::invalid_argument(r.to_string()))?;
        let now_ms = self.shared.clock.now_ms();
        let trigger = trigger_from(request.trigger, now_ms)?;
        let mut record = ScheduleRecord::new(id.clone(), spec, trigger, now_ms, created_by);
        record.overlap_events = request.overlap_events;
        record.missed = match v1::MissedRunPolicy::try_from(request.missed) {
            Ok(v1::MissedRunPolicy::Skip) => MissedPolicy::Skip,
            _ => MissedPolicy::RunOnce,
        };
        if request.baseline_days != 0 {
            record.baseline_days = request.baseline_days;
        }
        record.validate().map_err(Status::invalid_argument)?;
        self.shared
            .propose_write(
                &request.request_id,
                Command::CreateSchedule {
                    record: Box::new(record),
                },
            )
            .await?;
        tracing::info!("schedule created");
        self.schedule(&id).map(tonic::Response::new)
    }

    async fn list_schedules(
        &self,
        _request: Request<v1::ListSchedulesRequest>,
    ) -> Result<tonic::Response<v1::ListSchedulesResponse>, Status> {
        let schedules = self
            .shared
            .read(|s| s.schedules.by_id.values().map(schedule_proto).collect())?;
        Ok(tonic::Response::new(v1::ListSchedulesResponse {
            schedules,
        }))
    }

    async fn get_schedule(
        &self,
        request: Request<v1::GetScheduleRequest>,
    ) -> Result<tonic::Response<v1::Schedule>, Status> {
        let id = ScheduleId::new(request.into_inner().name);
        self.schedule(&id).map(tonic::Response::new)
    }

    #[tracing::instrument(skip_all, fields(schedule))]
    async fn set_schedule_paused(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
    ) -> Result<tonic::Response<v1::Schedule>, Status> {
        let verb = if request.get_ref().paused {
            "pause"
        } else {
            "resume"
        };
        quarry_security::audit::set_target(
            &request,
            format!("{verb} schedule {}", request.get_ref().name),
        );
        let request = request.into_inner();
        tracing::Span::current().record("schedule", request.name.as_str());
        let id = ScheduleId::new(request.name);
        self.propose_schedule(Command::SetSchedulePaused {
            id: id.clone(),
            paused: request.paused,
        })
        .await?;
        tracing::info!(paused = request.paused, "schedule updated");
        self.schedule(&id).map(tonic::Response::new)
    }

    #[tracing::instrument(skip_all, fields(schedule))]
    async fn delete_schedule(
        &self,
        request: Request<v1::DeleteScheduleRequest>,
    ) -> Result<tonic::Response<v1::DeleteScheduleResponse>, Status> {
        quarry_security::audit::set_target(
            &request,
            format!("schedule {}", request.get_ref().name),
        );
        let request = request.into_inner();
        tracing::Span::current().record("schedule", request.name.as_str());
        self.propose_schedule(Command::DeleteSchedule {
            id: ScheduleId::new(request.name),
        })
        .await?;
        tracing::info!("schedule deleted");
        Ok(tonic::Response::new(v1::DeleteScheduleResponse {}))
    }

    async fn list_runs(
        &self,
        request: Request<v1::ListScheduleRunsRequest>,
    ) -> Result<tonic::Response<v1::ListScheduleRunsResponse>, Status> {
        let request = request.into_inner();
        let id = ScheduleId::new(request.name);
        let limit = if request.limit == 0 {
            usize::MAX
        } else {
            request.limit as usize
        };
        let runs = self
            .shared
            .read(|s| {
                s.schedules.by_id.get(&id).map(|schedule| {
                    schedule
                        .runs
                        .iter()
                        .rev()
                        .take(limit)
                        .map(run_proto)
                        .collect::<Vec<_>>()
                })
            })?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no schedule named {id}; `quarry schedule list` shows the cluster's schedules"
                ))
            })?;
        Ok(tonic::Response::new(v1::ListScheduleRunsResponse { runs }))
    }
}

/// The worker's `FetchBaseline`: the merged aggregates of the earlier runs
/// of the schedule whose run `hunt_id` is.
pub fn fetch_baseline(
    api: &Api,
    request: v1::FetchBaselineRequest,
) -> Result<v1::FetchBaselineResponse, Status> {
    let hunt = HuntId::new(request.hunt_id);
    let found = api.shared.read(|s: &State| s.baseline_of(&hunt))?;
    let Some((runs, merged)) = found else {
        return Err(Status::not_found(format!(
            "hunt {hunt} is not a run of a schedule (or it was deleted): it has no baseline"
        )));
    };
    Ok(v1::FetchBaselineResponse {
        runs,
        aggregates: merged
            .into_iter()
            .map(|(name, value)| {
                quarry_proto::aggregate::to_proto(&quarry_contract::Aggregate::new(name, value))
            })
            .collect(),
    })
}
