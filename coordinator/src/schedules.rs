//! Recurring hunts: schedules in the replicated state (docs/schedules.md).
//!
//! A schedule is a hunt template plus a trigger (a cron expression in a time
//! zone, or a fixed interval). The leader proposes
//! [`Command::FireSchedule`](crate::state::Command::FireSchedule) for the
//! schedule's next due time; applying it is the only place a run starts, and
//! it starts one only while that due time is still the schedule's next one
//! and no run of it is going. So a due time fires once, whichever leader
//! proposed it and however often it was proposed (a new leader re-proposing
//! after a failover changes nothing).
//!
//! Runs are incremental: each task scans the events of its shard from the
//! shard's watermark (an ingest offset, so late-arriving events with old
//! timestamps are still seen) minus the schedule's overlap. When a run ends,
//! the watermark of every shard it scanned moves to where that scan ended;
//! a shard that failed keeps its old watermark and is scanned again by the
//! next run. The merged aggregates of successful runs are kept by day as the
//! schedule's history: the baseline a module compares the new events with.

use std::collections::{BTreeMap, VecDeque};

use chrono::{TimeZone, Utc};
use quarry_contract::aggregate::{AggregateValue, Merged};
use quarry_proto::{HuntId, ScheduleId, ShardId};
use serde::{Deserialize, Serialize};

use crate::state::{Applied, HuntSpec, HuntState, Rejection, Response, State, TaskState, Touched};

/// Most schedules in a cluster.
pub const MAX_SCHEDULES: usize = 1_000;
/// Runs kept in a schedule's history (the newest).
pub const RUNS_KEPT: usize = 100;
/// Longest baseline window.
pub const MAX_BASELINE_DAYS: u32 = 400;
/// Baseline window when none is given.
pub const DEFAULT_BASELINE_DAYS: u32 = 30;
/// Shortest interval between runs.
pub const MIN_INTERVAL_MS: i64 = 1_000;
/// A due time fired later than this (or than half the period, if shorter)
/// counts as missed and follows the schedule's [`MissedPolicy`].
pub const MISSED_GRACE_MS: i64 = 60_000;
/// Bytes of merged aggregates a schedule's history keeps; the oldest days
/// go first when a new run's would not fit.
pub const MAX_HISTORY_BYTES: u64 = 32 << 20;
/// Longest schedule name.
pub const MAX_NAME_LEN: usize = 64;
const DAY_MS: i64 = 86_400_000;

/// When a schedule is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// A five-field cron expression evaluated in an IANA time zone.
    Cron {
        /// `minute hour day-of-month month day-of-week`.
        expression: String,
        /// `Europe/Berlin`; empty: UTC.
        time_zone: String,
    },
    /// Every `interval_ms` from `anchor_ms` (the schedule's creation).
    Every {
        /// The period.
        interval_ms: i64,
        /// The first due time minus one period.
        anchor_ms: i64,
    },
}

fn time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    if name.is_empty() {
        return Ok(chrono_tz::UTC);
    }
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("unknown time zone `{name}`: use an IANA name such as `Europe/Berlin` or `UTC`")
    })
}

impl Trigger {
    /// Checks the expression, the time zone and the interval.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Trigger::Cron {
                expression,
                time_zone: tz,
            } => {
                let fields = expression.split_whitespace().count();
                if fields != 5 {
                    return Err(format!(
                        "cron expression `{expression}` has {fields} fields; use five: minute hour day-of-month month day-of-week (`0 3 * * *` is 03:00 daily)"
                    ));
                }
                let zone = time_zone(tz)?;
                let now = Utc::now().with_timezone(&zone);
                cron_parser::parse(expression, &now)
                    .map(|_| ())
                    .map_err(|e| format!("cron expression `{expression}` is invalid: {e}"))
            }
            Trigger::Every { interval_ms, .. } => {
                if *interval_ms < MIN_INTERVAL_MS {
                    Err(format!(
                        "the interval must be at least {MIN_INTERVAL_MS} ms (1s), not {interval_ms} ms"
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The first due time strictly after `after_ms`; `None` for an invalid
    /// trigger or one that never fires again.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Trigger::Cron {
                expression,
                time_zone: tz,
            } => {
                let zone = time_zone(tz).ok()?;
                let after = Utc.timestamp_millis_opt(after_ms).single()?;
                let next = cron_parser::parse(expression, &after.with_timezone(&zone)).ok()?;
                Some(next.timestamp_millis())
            }
            Trigger::Every {
                interval_ms,
                anchor_ms,
            } => {
                if *interval_ms <= 0 {
                    return None;
                }
                let periods = after_ms
                    .checked_sub(*anchor_ms)?
                    .div_euclid(*interval_ms)
                    .checked_add(1)?
                    .max(1);
                anchor_ms.checked_add(periods.checked_mul(*interval_ms)?)
            }
        }
    }

    /// `cron 0 3 * * * (Europe/Berlin)` or `every 6h`, for listings.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Cron {
                expression,
                time_zone,
            } => {
                let zone = if time_zone.is_empty() {
                    "UTC"
                } else {
                    time_zone
                };
                format!("cron {expression} ({zone})")
            }
            Trigger::Every { interval_ms, .. } => format!("every {}", duration_text(*interval_ms)),
        }
    }
}

/// `90s`, `15m`, `6h`, `2d`, or milliseconds when not whole seconds.
pub fn duration_text(ms: i64) -> String {
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= size && s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

/// What happens to due times that passed without a run (the cluster was
/// down, the schedule paused, the previous run still going).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissedPolicy {
    /// Catch up with one run, however many due times were missed.
    #[default]
    RunOnce,
    /// Record them as skipped; run at the next due time.
    Skip,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// Its hunt is going.
    Running,
    /// Every shard scanned.
    Completed,
    /// Some shards failed: they are scanned again by the next run.
    PartiallyCompleted,
    /// No shard scanned.
    Failed,
    /// Its hunt was cancelled (its shards are scanned again next run).
    Cancelled,
    /// Missed due times skipped by the [`MissedPolicy::Skip`] policy.
    Skipped,
    /// The hunt could not be created (the module or the shards are gone).
    NotStarted,
}

impl RunOutcome {
    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Completed => "completed",
            RunOutcome::PartiallyCompleted => "partially-completed",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Skipped => "skipped",
            RunOutcome::NotStarted => "not-started",
        }
    }
}

/// One run of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Numbered from 1 per schedule.
    pub number: u64,
    /// The due time it ran for (the latest of those it caught up with).
    pub due_ms: i64,
    /// Due times it stands for (missed ones included).
    pub due_times: u32,
    /// Its hunt (none for a skipped or not-started run).
    pub hunt: Option<HuntId>,
    /// When it started (leader time).
    pub started_ms: i64,
    /// When it ended (0 while running).
    pub finished_ms: i64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Why, when not plainly completed.
    pub reason: String,
    /// Findings it committed.
    pub findings: u64,
    /// Events it scanned.
    pub events_scanned: u64,
    /// Shards whose watermark it moved.
    pub shards_scanned: u32,
    /// Shards it could not scan: their watermark stays.
    pub shards_failed: Vec<ShardId>,
}

/// The merged aggregates of one day's successful runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayAggregates {
    /// Runs merged.
    pub runs: u32,
    /// Their aggregates, merged by name.
    pub aggregates: Merged,
    /// Their approximate size.
    pub bytes: u64,
}

/// A recurring hunt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// Its name.
    pub id: ScheduleId,
    /// What each run submits (the module is resolved at each run, so a
    /// bare name runs the latest version).
    pub template: HuntSpec,
    /// When it is due.
    pub trigger: Trigger,
    /// Events before a shard's watermark scanned again by each run.
    pub overlap_events: u64,
    /// What happens to missed due times.
    pub missed: MissedPolicy,
    /// Days of earlier runs in the baseline.
    pub baseline_days: u32,
    /// Paused schedules fire nothing.
    pub paused: bool,
    /// Creation time.
    pub created_ms: i64,
    /// `role:name` of its creator.
    pub created_by: String,
    /// The next due time.
    pub next_due_ms: i64,
    /// The run in progress.
    pub active: Option<HuntId>,
    /// Per shard, the next ingest offset to scan.
    pub watermarks: BTreeMap<ShardId, u64>,
    /// The newest runs, oldest first.
    pub runs: VecDeque<RunRecord>,
    /// Runs so far (skipped ones included).
    pub run_count: u64,
    /// Merged aggregates of successful runs by UTC day (days since the
    /// epoch) of their due time.
    pub history: BTreeMap<i64, DayAggregates>,
}

impl ScheduleRecord {
    /// A new schedule; its first due time is the trigger's first after
    /// `now_ms`.
    pub fn new(
        id: ScheduleId,
        template: HuntSpec,
        trigger: Trigger,
        now_ms: i64,
        created_by: String,
    ) -> Self {
        let next_due_ms = trigger.next_after(now_ms).unwrap_or(i64::MAX);
        Self {
            id,
            template,
            trigger,
            overlap_events: 0,
            missed: MissedPolicy::RunOnce,
            baseline_days: DEFAULT_BASELINE_DAYS,
            paused: false,
            created_ms: now_ms,
            created_by,
            next_due_ms,
            active: None,
            watermarks: BTreeMap::new(),
            runs: VecDeque::new(),
            run_count: 0,
            history: BTreeMap::new(),
        }
    }

    /// Checks what a user chose.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(self.id.as_str())?;
        self.trigger.validate()?;
        if self.baseline_days == 0 || self.baseline_days > MAX_BASELINE_DAYS {
            return Err(format!(
                "the baseline must cover 1 to {MAX_BASELINE_DAYS} days, not {}",
                self.baseline_days
            ));
        }
        if self.next_due_ms == i64::MAX {
            return Err(format!(
                "the trigger `{}` is never due",
                self.trigger.describe()
            ));
        }
        Ok(())
    }

    /// The latest run.
    pub fn last_run(&self) -> Option<&RunRecord> {
        self.runs.back()
    }

    /// Earlier runs in the baseline of a run due at `due_ms`, and their
    /// aggregates merged: the days within [`ScheduleRecord::baseline_days`]
    /// before it (its own day included; the run itself is not in the
    /// history until it ends).
    pub fn baseline(&self, due_ms: i64) -> (u32, Merged) {
        let mut runs = 0;
        let mut merged = Merged::new();
        for days in self.window(due_ms) {
            runs += days.runs;
            for (name, value) in &days.aggregates {
                merge_newest(&mut merged, name, value);
            }
        }
        (runs, merged)
    }

    /// Earlier runs in the baseline of a run due at `due_ms` (as
    /// [`ScheduleRecord::baseline`] counts them, without merging).
    pub fn baseline_runs(&self, due_ms: i64) -> u32 {
        self.window(due_ms).map(|d| d.runs).sum()
    }

    /// The days of history in the baseline window of a run due at `due_ms`.
    fn window(&self, due_ms: i64) -> impl Iterator<Item = &DayAggregates> {
        let day = due_ms.div_euclid(DAY_MS);
        let first = day.saturating_sub(i64::from(self.baseline_days));
        self.history.range(first..=day).map(|(_, d)| d)
    }

    fn push_run(&mut self, run: RunRecord) {
        self.runs.push_back(run);
        while self.runs.len() > RUNS_KEPT {
            self.runs.pop_front();
        }
    }

    /// Adds a finished run's aggregates to the history and drops days that
    /// left the window or do not fit.
    fn remember(&mut self, due_ms: i64, aggregates: &Merged) {
        let day = due_ms.div_euclid(DAY_MS);
        let entry = self.history.entry(day).or_default();
        entry.runs += 1;
        for (name, value) in aggregates {
            let change = merge_newest(&mut entry.aggregates, name, value);
            entry.bytes = entry.bytes.saturating_add_signed(change);
        }
        let first = day - i64::from(self.baseline_days);
        self.history.retain(|d, _| *d >= first);
        while self.history.values().map(|d| d.bytes).sum::<u64>() > MAX_HISTORY_BYTES
            && self.history.len() > 1
        {
            self.history.pop_first();
        }
    }
}

/// Merges `value` into `merged` under `name` and returns by how much the
/// merged size grew. Runs of one schedule return an aggregate with the same
/// kind; when a module changed one's kind, the newer value replaces the
/// older.
fn merge_newest(merged: &mut Merged, name: &str, value: &AggregateValue) -> i64 {
    let grown = || {
        let bytes = quarry_contract::Aggregate::new(name, value.clone()).approx_bytes();
        i64::try_from(bytes).unwrap_or(i64::MAX)
    };
    match merged.get_mut(name) {
        Some(into) => match into.merge_measured(value.clone()) {
            Ok(change) => change,
            Err(_) => {
                *into = value.clone();
                grown()
            }
        },
        None => {
            merged.insert(name.to_owned(), value.clone());
            grown()
        }
    }
}

/// Checks a schedule name: 1 to [`MAX_NAME_LEN`] of `a-z`, `0-9`, `-`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schedule name `{}` is invalid: use 1 to {MAX_NAME_LEN} of a-z, 0-9 and `-` (`nightly-rare-process`)",
            name.escape_debug()
        ))
    }
}

/// Every schedule of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedules {
    /// By name.
    pub by_id: BTreeMap<ScheduleId, ScheduleRecord>,
}

impl Schedules {
    /// Schedules due at `now_ms`: not paused, no run going, next due time
    /// passed. With the due time the leader proposes to fire.
    pub fn due(&self, now_ms: i64) -> Vec<(ScheduleId, i64)> {
        self.by_id
            .values()
            .filter(|s| !s.paused && s.active.is_none() && s.next_due_ms <= now_ms)
            .map(|s| (s.id.clone(), s.next_due_ms))
            .collect()
    }
}

impl State {
    pub(crate) fn create_schedule(&mut self, record: ScheduleRecord) -> Applied {
        if let Err(e) = record.validate() {
            return Applied::rejected(Rejection::Invalid(e));
        }
        if self.schedules.by_id.contains_key(&record.id) {
            return Applied::rejected(Rejection::Conflict(format!(
                "a schedule named {} exists; delete it first or choose another name",
                record.id
            )));
        }
        if self.schedules.by_id.len() >= MAX_SCHEDULES {
            return Applied::rejected(Rejection::Conflict(format!(
                "the cluster holds its maximum of {MAX_SCHEDULES} schedules; delete unused ones"
            )));
        }
        let id = record.id.clone();
        self.schedules.by_id.insert(id.clone(), record);
        Applied::done(vec![Touched::Schedule(id)])
    }

    pub(crate) fn set_schedule_paused(&mut self, id: &ScheduleId, paused: bool) -> Applied {
        let Some(schedule) = self.schedules.by_id.get_mut(id) else {
            return Applied::rejected(no_schedule(id));
        };
        schedule.paused = paused;
        Applied::done(vec![Touched::Schedule(id.clone())])
    }

    pub(crate) fn delete_schedule(&mut self, id: &ScheduleId) -> Applied {
        if self.schedules.by_id.remove(id).is_none() {
            return Applied::rejected(no_schedule(id));
        }
        Applied::done(vec![Touched::Schedule(id.clone())])
    }

    /// Starts the run of `id` due at `due_ms`, once: a due time that is no
    /// longer the schedule's next one, or a schedule with a run going or
    /// paused, changes nothing.
    pub(crate) fn fire_schedule(
        &mut self,
        index: u64,
        id: &ScheduleId,
        due_ms: i64,
        now_ms: i64,
    ) -> Applied {
        let Some(schedule) = self.schedules.by_id.get(id) else {
            return Applied::rejected(no_schedule(id));
        };
        if schedule.paused
            || schedule.active.is_some()
            || schedule.next_due_ms != due_ms
            || now_ms < due_ms
        {
            return Applied::done(Vec::new());
        }
        let trigger = schedule.trigger.clone();
        // Every due time up to now: one run stands for all of them.
        let mut latest = due_ms;
        let mut due_times = 1u32;
        while let Some(next) = trigger.next_after(latest)
            && next <= now_ms
        {
            latest = next;
            due_times = due_times.saturating_add(1);
            if due_times == u32::MAX {
                break;
            }
        }
        let next_due_ms = trigger.next_after(now_ms).unwrap_or(i64::MAX);
        let period = trigger.next_after(due_ms).map_or(i64::MAX, |n| n - due_ms);
        let late = now_ms - due_ms > MISSED_GRACE_MS.min(period / 2).max(1_000);
        let missed = due_times > 1 || late;
        let policy = schedule.missed;
        let number = schedule.run_count + 1;
        let mut touched = vec![Touched::Schedule(id.clone())];
        let mut run = RunRecord {
            number,
            due_ms: latest,
            due_times,
            hunt: None,
            started_ms: now_ms,
            finished_ms: now_ms,
            outcome: RunOutcome::Skipped,
            reason: String::new(),
            findings: 0,
            events_scanned: 0,
            shards_scanned: 0,
            shards_failed: Vec::new(),
        };
        if missed && policy == MissedPolicy::Skip {
            run.reason = format!(
                "{due_times} due time(s) from {} missed (the cluster was down, the schedule paused or the previous run still going); skipped by the schedule's policy",
                utc_text(due_ms)
            );
        } else {
            let hunt = HuntId::new(format!("h-{index}"));
            let mut spec = schedule.template.clone();
            spec.description = if spec.description.is_empty() {
                format!("schedule {id}, run {number}")
            } else {
                format!("{} (schedule {id}, run {number})", spec.description)
            };
            self.rebind_intel(&mut spec);
            self.rebind_rule_packs(&mut spec);
            let mut created = self.create_hunt(hunt.clone(), spec, now_ms);
            match created.outcome {
                Ok(_) => {
                    // Each task starts at its shard's watermark, minus the overlap.
                    let schedule = &self.schedules.by_id[id];
                    let overlap = schedule.overlap_events;
                    if let Some(record) = self.hunts.get_mut(&hunt) {
                        record.schedule = Some(id.clone());
                        for task in &record.tasks {
                            if let Some(task) = self.tasks.get_mut(task) {
                                task.from_offset = schedule
                                    .watermarks
                                    .get(&task.shard)
                                    .map_or(0, |w| w.saturating_sub(overlap));
                            }
                        }
                    }
                    touched.append(&mut created.touched);
                    run.hunt = Some(hunt.clone());
                    run.outcome = RunOutcome::Running;
                    run.finished_ms = 0;
                    if missed {
                        run.reason = format!(
                            "catches up with {due_times} due time(s) from {}",
                            utc_text(due_ms)
                        );
                    }
                }
                Err(rejection) => {
                    run.outcome = RunOutcome::NotStarted;
                    run.reason = format!("the hunt could not be created: {rejection}");
                }
            }
        }
        // Creating the hunt touched no schedule: it is still there.
        let Some(schedule) = self.schedules.by_id.get_mut(id) else {
            return Applied::rejected(no_schedule(id));
        };
        schedule.run_count = number;
        schedule.next_due_ms = next_due_ms;
        schedule.active = run
            .hunt
            .clone()
            .filter(|_| run.outcome == RunOutcome::Running);
        let response = match &run.hunt {
            Some(hunt) if run.outcome == RunOutcome::Running => Response::Hunt {
                id: hunt.clone(),
                tasks: self.hunts.get(hunt).map_or(0, |h| h.tasks.len() as u32),
            },
            _ => Response::Done,
        };
        schedule.push_run(run);
        Applied {
            outcome: Ok(response),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    /// Binds the template's intel sets to their latest versions: each run
    /// hunts with the intel of its day.
    fn rebind_intel(&self, spec: &mut HuntSpec) {
        let prefix = quarry_contract::intel::REF_PREFIX;
        let bound: Vec<(String, String)> = spec
            .params
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(prefix)?;
                let (set, _) = quarry_contract::intel::parse_ref(name, v)?;
                let latest = self.intel.latest(&set)?.version;
                Some((k.clone(), format!("{set}@{latest}")))
            })
            .collect();
        spec.params.extend(bound);
    }

    /// Ends the runs whose hunts ended: moves the watermarks of the shards
    /// they scanned, remembers their aggregates, records the outcome.
    pub(crate) fn settle_schedules(&mut self, now_ms: i64) -> Vec<Touched> {
        let mut touched = Vec::new();
        for schedule in self.schedules.by_id.values_mut() {
            let Some(hunt_id) = schedule.active.clone() else {
                continue;
            };
            let hunt = self.hunts.get(&hunt_id);
            if hunt.is_some_and(|h| !h.state.is_terminal()) {
                continue;
            }
            schedule.active = None;
            touched.push(Touched::Schedule(schedule.id.clone()));
            let Some(run) = schedule
                .runs
                .iter_mut()
                .rev()
                .find(|r| r.hunt.as_ref() == Some(&hunt_id))
            else {
                continue;
            };
            run.finished_ms = now_ms;
            let Some(hunt) = hunt else {
                run.outcome = RunOutcome::Cancelled;
                run.reason = "its hunt was deleted before it ended".to_owned();
                continue;
            };
            run.finished_ms = hunt.finished_ms.max(hunt.submitted_ms);
            run.findings = hunt.findings;
            run.events_scanned = hunt.events_scanned;
            run.reason = hunt.reason.clone();
            run.outcome = match hunt.state {
                HuntState::Completed => RunOutcome::Completed,
                HuntState::PartiallyCompleted => RunOutcome::PartiallyCompleted,
                HuntState::Cancelled => RunOutcome::Cancelled,
                _ => RunOutcome::Failed,
            };
            for task in hunt.tasks.iter().filter_map(|t| self.tasks.get(t)) {
                if task.state == TaskState::Succeeded {
                    schedule
                        .watermarks
                        .insert(task.shard.clone(), task.scanned_to.max(task.from_offset));
                    run.shards_scanned += 1;
                } else {
                    run.shards_failed.push(task.shard.clone());
                }
            }
            let due_ms = run.due_ms;
            if matches!(
                run.outcome,
                RunOutcome::Completed | RunOutcome::PartiallyCompleted
            ) {
                let aggregates = hunt.aggregates.clone();
                schedule.remember(due_ms, &aggregates);
            }
        }
        touched
    }

    /// The baseline of the scheduled hunt `hunt`: earlier runs merged and
    /// their aggregates (`None` for a hunt no schedule ran).
    pub fn baseline_of(&self, hunt: &HuntId) -> Option<(u32, Merged)> {
        let record = self.hunts.get(hunt)?;
        let schedule = self.schedules.by_id.get(record.schedule.as_ref()?)?;
        let due_ms = schedule
            .runs
            .iter()
            .rev()
            .find(|r| r.hunt.as_ref() == Some(hunt))
            .map_or(record.submitted_ms, |r| r.due_ms);
        Some(schedule.baseline(due_ms))
    }
}

/// `2026-12-03T02:00:00Z`, for messages.
pub fn utc_text(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().map_or_else(
        || format!("{ms} ms"),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

fn no_schedule(id: &ScheduleId) -> Rejection {
    Rejection::NotFound(format!(
        "no schedule named {id}; `quarry schedule list` shows the cluster's schedules"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{assign_all, cluster, report, spec};
    use crate::state::{Command, TaskError, TaskReport};
    use quarry_proto::WorkerId;

    fn every_second(policy: MissedPolicy) -> (State, ScheduleId) {
        let mut s = cluster();
        let mut template = spec(&[("env", "demo")]);
        template.policy.max_attempts = 1;
        let id = ScheduleId::new("nightly");
        let mut record = ScheduleRecord::new(
            id.clone(),
            template,
            Trigger::Every {
                interval_ms: 1_000,
                anchor_ms: 0,
            },
            0,
            "local".into(),
        );
        record.missed = policy;
        record.overlap_events = 10;
        let applied = s.apply(
            10,
            Command::CreateSchedule {
                record: Box::new(record),
            },
        );
        assert_eq!(applied.outcome, Ok(Response::Done));
        assert_eq!(s.schedules.by_id[&id].next_due_ms, 1_000);
        (s, id)
    }

    fn fire(
        s: &mut State,
        index: u64,
        id: &ScheduleId,
        due_ms: i64,
        now_ms: i64,
    ) -> Option<HuntId> {
        let command = Command::FireSchedule {
            id: id.clone(),
            due_ms,
            now_ms,
        };
        match s.apply(index, command).outcome {
            Ok(Response::Hunt { id, .. }) => Some(id),
            _ => None,
        }
    }

    /// Runs every task of `hunt`: shard `a` succeeds (its scan ended at
    /// offset 100), shard `b` succeeds too unless `fail_b`.
    fn finish(s: &mut State, index: u64, hunt: &HuntId, fail_b: bool) {
        assign_all(s, hunt);
        for (n, task) in s.hunts[hunt].tasks.clone().iter().enumerate() {
            let on_b = s.tasks[task].shard.as_str() == "b";
            let worker = if on_b { "w1" } else { "w0" };
            let attempt = s.tasks[task].attempt;
            let command = if on_b && fail_b {
                Command::RecordResult {
                    report: TaskReport {
                        task: task.clone(),
                        attempt,
                        worker: WorkerId::new(worker),
                        outcome: Err(TaskError::host("shard b is unreadable")),
                    },
                    now_ms: 2_000,
                }
            } else {
                report(task, worker, attempt, 1)
            };
            s.apply(index + n as u64, command);
        }
        assert!(
            s.hunts[hunt].state.is_terminal(),
            "{:?}",
            s.hunts[hunt].state
        );
    }

    #[test]
    fn a_due_time_fires_once_however_often_it_is_proposed() {
        let (mut s, id) = every_second(MissedPolicy::RunOnce);
        assert_eq!(s.schedules.due(999), vec![]);
        assert_eq!(s.schedules.due(1_000), vec![(id.clone(), 1_000)]);
        let hunt = fire(&mut s, 20, &id, 1_000, 1_000).expect("the first proposal starts a run");
        // A new leader (or a retry) proposing the same due time again, or
        // the next one while the run goes on: nothing more.
        assert_eq!(fire(&mut s, 21, &id, 1_000, 1_100), None);
        assert_eq!(fire(&mut s, 22, &id, 2_000, 2_100), None);
        assert_eq!(s.schedules.due(5_000), vec![], "a run is going on");
        assert_eq!(s.hunts.len(), 1);
        let schedule = &s.schedules.by_id[&id];
        assert_eq!(schedule.active, Some(hunt.clone()));
        assert_eq!(schedule.runs.len(), 1);
        assert_eq!(s.hunts[&hunt].schedule, Some(id.clone()));
        // The first run scans everything.
        assert!(
            s.hunts[&hunt]
                .tasks
                .iter()
                .all(|t| s.tasks[t].from_offset == 0)
        );
    }

    #[test]
    fn watermarks_move_for_scanned_shards_and_a_failed_shard_is_scanned_again() {
        let (mut s, id) = every_second(MissedPolicy::RunOnce);
        let first = fire(&mut s, 20, &id, 1_000, 1_000).expect("run 1");
        finish(&mut s, 30, &first, true);
        let schedule = &s.schedules.by_id[&id];
        assert_eq!(schedule.active, None);
        let run = schedule.last_run().expect("a run");
        assert_eq!(run.outcome, RunOutcome::PartiallyCompleted);
        assert_eq!(run.shards_failed, [ShardId::new("b")]);
        assert_eq!(run.shards_scanned, 1);
        assert!(run.reason.contains("unreadable"), "{}", run.reason);
        assert_eq!(
            schedule.watermarks,
            BTreeMap::from([(ShardId::new("a"), 100)])
        );
        // Run 2 (its due time passed while run 1 went on: caught up once).
        let due = schedule.next_due_ms;
        let second = fire(&mut s, 40, &id, due, due).expect("run 2");
        let from: BTreeMap<&str, u64> = s.hunts[&second]
            .tasks
            .iter()
            .map(|t| (s.tasks[t].shard.as_str(), s.tasks[t].from_offset))
            .collect();
        // `a` from its watermark minus the overlap, `b` again from the start.
        assert_eq!(from, BTreeMap::from([("a", 90), ("b", 0)]));
        finish(&mut s, 50, &second, false);
        let schedule = &s.schedules.by_id[&id];
        assert_eq!(
            schedule.last_run().map(|r| r.outcome),
            Some(RunOutcome::Completed)
        );
        assert_eq!(
            schedule.watermarks,
            BTreeMap::from([(ShardId::new("a"), 100), (ShardId::new("b"), 100)])
        );
    }

    #[test]
    fn missed_due_times_are_caught_up_once_or_skipped_by_policy() {
        let (mut s, id) = every_second(MissedPolicy::RunOnce);
        // Down from before 1s until 5.5s: due times 1s..5s were missed.
        let hunt = fire(&mut s, 20, &id, 1_000, 5_500).expect("one catch-up run");
        let schedule = &s.schedules.by_id[&id];
        let run = schedule.last_run().expect("a run");
        assert_eq!((run.due_ms, run.due_times), (5_000, 5));
        assert!(run.reason.contains("catches up with 5"), "{}", run.reason);
        assert_eq!(schedule.next_due_ms, 6_000);
        assert_eq!(s.hunts.len(), 1);
        assert_eq!(s.hunts[&hunt].schedule, Some(id.clone()));

        let (mut s, id) = every_second(MissedPolicy::Skip);
        assert_eq!(fire(&mut s, 20, &id, 1_000, 5_500), None);
        let schedule = &s.schedules.by_id[&id];
        let run = schedule.last_run().expect("a record of the skip");
        assert_eq!(run.outcome, RunOutcome::Skipped);
        assert!(
            run.reason.contains("skipped by the schedule's policy"),
            "{}",
            run.reason
        );
        assert_eq!(schedule.next_due_ms, 6_000);
        assert!(s.hunts.is_empty());
        // On time, a skip schedule runs.
        assert!(fire(&mut s, 21, &id, 6_000, 6_050).is_some());
    }

    #[test]
    fn the_baseline_merges_earlier_runs_and_paused_schedules_fire_nothing() {
        let (mut s, id) = every_second(MissedPolicy::RunOnce);
        let first = fire(&mut s, 20, &id, 1_000, 1_000).expect("run 1");
        assert_eq!(s.baseline_of(&first).map(|(runs, _)| runs), Some(0));
        finish(&mut s, 30, &first, false);
        let due = s.schedules.by_id[&id].next_due_ms;
        let second = fire(&mut s, 40, &id, due, due).expect("run 2");
        let (runs, merged) = s.baseline_of(&second).expect("a scheduled run");
        assert_eq!(runs, 1);
        // Both tasks of run 1 returned `by` = {k: 2}.
        assert_eq!(
            merged["by"],
            quarry_contract::aggregate::AggregateValue::counts_from([("k".to_owned(), 4u64)])
        );
        finish(&mut s, 50, &second, false);

        s.apply(
            60,
            Command::SetSchedulePaused {
                id: id.clone(),
                paused: true,
            },
        );
        assert_eq!(s.schedules.due(i64::MAX / 2), vec![]);
        let due = s.schedules.by_id[&id].next_due_ms;
        assert_eq!(fire(&mut s, 61, &id, due, due), None);
        // Deleted: gone, and its state with it.
        s.apply(62, Command::DeleteSchedule { id: id.clone() });
        assert!(s.schedules.by_id.is_empty());
        assert!(matches!(
            s.apply(63, Command::DeleteSchedule { id }).outcome,
            Err(Rejection::NotFound(_))
        ));
    }

    fn at(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .timestamp_millis()
    }

    #[test]
    fn cron_due_times_follow_the_time_zone_and_daylight_saving() {
        let daily = Trigger::Cron {
            expression: "0 3 * * *".into(),
            time_zone: "Europe/Berlin".into(),
        };
        daily.validate().expect("valid");
        // 03:00 in Berlin is 02:00 UTC in winter, 01:00 UTC in summer.
        assert_eq!(
            daily.next_after(at("2026-12-03T12:00:00Z")),
            Some(at("2026-12-04T02:00:00Z"))
        );
        assert_eq!(
            daily.next_after(at("2026-07-01T12:00:00Z")),
            Some(at("2026-07-02T01:00:00Z"))
        );
        // Strictly after: a due time is not its own successor.
        let due = at("2026-12-04T02:00:00Z");
        assert_eq!(daily.next_after(due), Some(at("2026-12-05T02:00:00Z")));
    }

    #[test]
    fn bad_triggers_are_refused_with_what_to_do() {
        let four = Trigger::Cron {
            expression: "0 3 * *".into(),
            time_zone: String::new(),
        };
        assert!(four.validate().unwrap_err().contains("five"));
        let zone = Trigger::Cron {
            expression: "0 3 * * *".into(),
            time_zone: "Mars/Olympus".into(),
        };
        assert!(zone.validate().unwrap_err().contains("IANA"));
        let bad = Trigger::Cron {
            expression: "61 3 * * *".into(),
            time_zone: String::new(),
        };
        assert!(bad.validate().unwrap_err().contains("invalid"));
        let fast = Trigger::Every {
            interval_ms: 10,
            anchor_ms: 0,
        };
        assert!(fast.validate().unwrap_err().contains("at least"));
        assert!(validate_name("Nightly").is_err());
        assert!(validate_name("nightly-rare-1").is_ok());
    }

    #[test]
    fn intervals_count_from_the_anchor() {
        let every = Trigger::Every {
            interval_ms: 1_000,
            anchor_ms: 10_500,
        };
        assert_eq!(every.next_after(10_500), Some(11_500));
        assert_eq!(every.next_after(11_499), Some(11_500));
        assert_eq!(every.next_after(11_500), Some(12_500));
        assert_eq!(every.next_after(0), Some(11_500));
        assert_eq!(every.describe(), "every 1s");
        assert_eq!(duration_text(6 * 3_600_000), "6h");
    }
}
