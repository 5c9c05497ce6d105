//! The replicated state machine.
//!
//! [`State::apply`] is a pure function of the state, the raft index and a
//! [`Command`]: no clock, network or disk. Time enters only through the
//! commands (the leader stamps them), so every replica computes the same
//! state, and the whole machine is unit-tested without raft.

use quarry_proto::{HuntId, ModuleDigest, ShardId, TaskId, WorkerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Default per-task CPU budget.
pub const DEFAULT_CPU_MS: u64 = 60_000;
/// Default per-task linear memory cap.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap on findings kept per task.
pub const DEFAULT_MAX_FINDINGS: u32 = 10_000;

/// An uploaded module, content-addressed by its sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// sha256 of `bytes`.
    pub digest: ModuleDigest,
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// One line for listings.
    pub description: String,
    /// Upload time.
    pub uploaded_ms: i64,
    /// The component's bytes.
    #[serde(with = "crate::storage::raw_bytes")]
    pub bytes: Vec<u8>,
}

/// A worker known to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Its id.
    pub id: WorkerId,
    /// Its gRPC address.
    pub address: String,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Shards it holds.
    pub shards: BTreeSet<ShardId>,
    /// Last registration time.
    pub registered_ms: i64,
}

/// What a worker says about one of its shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardDescription {
    /// Shard name.
    pub name: ShardId,
    /// Labels for scope selectors.
    pub labels: BTreeMap<String, String>,
    /// Events stored.
    pub event_count: u64,
    /// Earliest event time.
    pub min_ts_ms: i64,
    /// Latest event time.
    pub max_ts_ms: i64,
}

/// A shard and the workers holding a replica of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// What its holders last reported.
    pub description: ShardDescription,
    /// Workers holding it.
    pub holders: BTreeSet<WorkerId>,
}

/// How a hunt names its module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleSelector {
    /// `name@version`, or `name` alone for the most recent upload of that name.
    NameVersion {
        /// Name.
        name: String,
        /// Version; `None` = latest upload.
        version: Option<String>,
    },
    /// A digest.
    Digest(ModuleDigest),
}

impl std::fmt::Display for ModuleSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NameVersion {
                name,
                version: Some(v),
            } => write!(f, "{name}@{v}"),
            Self::NameVersion {
                name,
                version: None,
            } => f.write_str(name),
            Self::Digest(d) => write!(f, "sha256:{d}"),
        }
    }
}

/// Which shards and events a hunt covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Every label must match.
    pub selector: BTreeMap<String, String>,
    /// Explicit shard names, unioned with the selector's matches.
    pub shards: Vec<ShardId>,
    /// Half-open [start, end) in ms; 0 = open bound.
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
}

/// Per-task resource limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU deadline per task.
    pub cpu_ms: u64,
    /// Linear memory cap per task.
    pub memory_bytes: u64,
    /// Findings kept per task.
    pub max_findings_per_task: u32,
    /// Output bytes per task; 0 = the worker's maximum.
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_ms: DEFAULT_CPU_MS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_findings_per_task: DEFAULT_MAX_FINDINGS,
            max_output_bytes: 0,
        }
    }
}

/// A hunt as submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntSpec {
    /// The module.
    pub module: ModuleSelector,
    /// Parameters passed to the module's `init`.
    pub params: BTreeMap<String, String>,
    /// Shards and time range.
    pub scope: Scope,
    /// Limits per task.
    pub limits: Limits,
    /// Higher first.
    pub priority: i32,
    /// Free text.
    pub description: String,
}

/// Where a hunt is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HuntState {
    /// Tasks are pending or running.
    Running,
    /// Every task succeeded.
    Completed,
    /// Some tasks succeeded, some failed; `reason` names the failed shards.
    PartiallyCompleted,
    /// No task succeeded.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl HuntState {
    /// Whether the hunt has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// A hunt and its merged result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntRecord {
    /// Its id.
    pub id: HuntId,
    /// As submitted, with the module resolved.
    pub spec: HuntSpec,
    /// The resolved module.
    pub module: ModuleDigest,
    /// One task per shard in scope.
    pub tasks: Vec<TaskId>,
    /// Lifecycle state.
    pub state: HuntState,
    /// Why it ended as it did.
    pub reason: String,
    /// Submission time.
    pub submitted_ms: i64,
    /// End time (0 while running).
    pub finished_ms: i64,
    /// Findings recorded.
    pub findings: u64,
    /// Events scanned by all tasks.
    pub events_scanned: u64,
    /// Merged aggregates: name -> key -> count.
    pub aggregates: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Where a task is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for a worker.
    Pending,
    /// Sent to a worker.
    Assigned {
        /// The worker running it.
        worker: WorkerId,
    },
    /// Done; its partial result is merged.
    Succeeded,
    /// Failed with a named cause.
    Failed {
        /// The cause.
        error: String,
    },
    /// Its hunt was cancelled.
    Cancelled,
}

impl TaskState {
    /// Whether the task has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed { .. } | Self::Cancelled
        )
    }
}

/// One shard scanned by one hunt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id.
    pub id: TaskId,
    /// Its hunt.
    pub hunt: HuntId,
    /// The shard it scans.
    pub shard: ShardId,
    /// Lifecycle state.
    pub state: TaskState,
    /// Incremented at each assignment; results of older attempts are ignored.
    pub attempt: u32,
    /// The worker of the latest attempt.
    pub worker: Option<WorkerId>,
    /// Why a pending task is waiting again (its worker was lost), shown to users.
    pub waiting: Option<String>,
    /// Events the module saw.
    pub events_scanned: u64,
    /// Findings it recorded.
    pub findings: u64,
}

/// Severity of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Context only.
    Informational,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

/// A finding as committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRecord {
    /// `<task>#<attempt>.<n>`: unique, and stable across a retried report.
    pub id: String,
    /// The task that produced it.
    pub task: TaskId,
    /// The shard it came from.
    pub shard: ShardId,
    /// Detection rule id.
    pub rule: String,
    /// Title.
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// 0..=100.
    pub confidence: u8,
    /// Entity the finding is about.
    pub entity: String,
    /// Event time.
    pub timestamp_ms: i64,
    /// Evidence pairs.
    pub evidence: Vec<(String, String)>,
    /// ATT&CK ids.
    pub techniques: Vec<String>,
    /// Shard offsets of the events involved.
    pub offsets: Vec<u64>,
}

/// What a worker reported for a task attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task.
    pub task: TaskId,
    /// Which attempt this reports.
    pub attempt: u32,
    /// The reporting worker.
    pub worker: WorkerId,
    /// `Ok` with the partial result, or the failure cause.
    pub outcome: Result<PartialResult, String>,
}

/// A task's partial result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialResult {
    /// Findings (ids are assigned on apply).
    pub findings: Vec<FindingRecord>,
    /// Aggregates: name -> key -> count.
    pub aggregates: BTreeMap<String, BTreeMap<String, u64>>,
    /// Events scanned.
    pub events_scanned: u64,
}

/// One task placement decided by the scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub task: TaskId,
    /// The worker.
    pub worker: WorkerId,
}

/// Every change to the replicated state goes through one of these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store a module (idempotent by digest).
    UploadModule {
        /// The module.
        module: ModuleRecord,
    },
    /// A worker (re)registers with the shards it holds.
    RegisterWorker {
        /// Worker id.
        id: WorkerId,
        /// Its address.
        address: String,
        /// Its slots.
        slots: u32,
        /// Its shards.
        shards: Vec<ShardDescription>,
        /// Leader time.
        now_ms: i64,
    },
    /// Create a hunt and one task per shard in scope.
    SubmitHunt {
        /// The hunt.
        spec: HuntSpec,
        /// Leader time.
        now_ms: i64,
    },
    /// The leader's scheduler placed tasks.
    AssignTasks {
        /// Placements.
        assignments: Vec<Assignment>,
    },
    /// A worker reported a task attempt.
    RecordResult {
        /// The report.
        report: TaskReport,
        /// Leader time.
        now_ms: i64,
    },
    /// The leader lost a worker (its lease expired): its unfinished tasks
    /// wait for another holder of their shard, or for the worker's return.
    ReleaseWorker {
        /// The worker.
        worker: WorkerId,
        /// Why, for the tasks' status.
        reason: String,
    },
    /// A user cancelled a hunt.
    CancelHunt {
        /// The hunt.
        hunt: HuntId,
        /// Why.
        reason: String,
        /// Leader time.
        now_ms: i64,
    },
}

/// A storage key of the state machine, returned by `apply` so the persister
/// writes exactly what changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Touched {
    /// A module.
    Module(ModuleDigest),
    /// A worker.
    Worker(WorkerId),
    /// A shard.
    Shard(ShardId),
    /// A hunt.
    Hunt(HuntId),
    /// A task.
    Task(TaskId),
    /// The findings of a task.
    Findings(TaskId),
}

/// Why a command changed nothing. Deterministic, so every replica agrees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    /// The request named something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The state does not allow it.
    #[error("{0}")]
    Conflict(String),
}

/// A dry run's answer ([`State::preview`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// The resolved module.
    pub module: ModuleDigest,
    /// Shards in scope with their event counts.
    pub shards: Vec<(ShardId, u64)>,
    /// Events in scope.
    pub events: u64,
    /// Estimated wall time, when a past run of the module gives a rate.
    pub estimated_ms: Option<u64>,
}

/// What applying a command produced, for the proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Nothing to report.
    Done,
    /// The module's digest.
    Module(ModuleDigest),
    /// A new hunt and its task count.
    Hunt {
        /// Id.
        id: HuntId,
        /// Tasks created.
        tasks: u32,
    },
    /// A report of an attempt that is no longer current (ignored, not an error:
    /// the report may have been retried after a commit).
    StaleReport,
}

/// The result of one `apply`.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// The response or the rejection.
    pub outcome: Result<Response, Rejection>,
    /// What changed.
    pub touched: Vec<Touched>,
}

impl Applied {
    fn rejected(rejection: Rejection) -> Self {
        Self {
            outcome: Err(rejection),
            touched: Vec::new(),
        }
    }
}

/// The whole replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Modules by digest.
    pub modules: BTreeMap<ModuleDigest, ModuleRecord>,
    /// Workers by id.
    pub workers: BTreeMap<WorkerId, WorkerRecord>,
    /// Shards by name.
    pub shards: BTreeMap<ShardId, ShardRecord>,
    /// Hunts by id.
    pub hunts: BTreeMap<HuntId, HuntRecord>,
    /// Tasks by id.
    pub tasks: BTreeMap<TaskId, TaskRecord>,
    /// Committed findings by task.
    pub findings: BTreeMap<TaskId, Vec<FindingRecord>>,
}

impl State {
    /// Applies `command`, committed at raft `index`.
    pub fn apply(&mut self, index: u64, command: Command) -> Applied {
        match command {
            Command::UploadModule { module } => self.upload_module(module),
            Command::RegisterWorker {
                id,
                address,
                slots,
                shards,
                now_ms,
            } => self.register_worker(id, address, slots, shards, now_ms),
            Command::SubmitHunt { spec, now_ms } => self.submit_hunt(index, spec, now_ms),
            Command::AssignTasks { assignments } => self.assign_tasks(assignments),
            Command::RecordResult { report, now_ms } => self.record_result(report, now_ms),
            Command::CancelHunt {
                hunt,
                reason,
                now_ms,
            } => self.cancel_hunt(&hunt, reason, now_ms),
            Command::ReleaseWorker { worker, reason } => self.release_worker(&worker, reason),
        }
    }

    fn upload_module(&mut self, module: ModuleRecord) -> Applied {
        let digest = module.digest.clone();
        if let Some(existing) = self.modules.get(&digest) {
            // Same bytes uploaded again: idempotent, keep the first name.
            let _ = existing;
            return Applied {
                outcome: Ok(Response::Module(digest)),
                touched: Vec::new(),
            };
        }
        if let Some(other) = self
            .modules
            .values()
            .find(|m| m.name == module.name && m.version == module.version)
        {
            return Applied::rejected(Rejection::Conflict(format!(
                "module {}@{} already exists with different content (sha256 {}); bump the version",
                module.name, module.version, other.digest
            )));
        }
        self.modules.insert(digest.clone(), module);
        Applied {
            outcome: Ok(Response::Module(digest.clone())),
            touched: vec![Touched::Module(digest)],
        }
    }

    fn register_worker(
        &mut self,
        id: WorkerId,
        address: String,
        slots: u32,
        shards: Vec<ShardDescription>,
        now_ms: i64,
    ) -> Applied {
        let mut touched = vec![Touched::Worker(id.clone())];
        let new_names: BTreeSet<ShardId> = shards.iter().map(|s| s.name.clone()).collect();
        // Shards the worker no longer holds lose it as a holder.
        if let Some(previous) = self.workers.get(&id) {
            for gone in previous.shards.difference(&new_names) {
                if let Some(shard) = self.shards.get_mut(gone) {
                    shard.holders.remove(&id);
                    touched.push(Touched::Shard(gone.clone()));
                }
            }
        }
        for description in shards {
            let name = description.name.clone();
            let record = self
                .shards
                .entry(name.clone())
                .or_insert_with(|| ShardRecord {
                    description: description.clone(),
                    holders: BTreeSet::new(),
                });
            record.description = description;
            record.holders.insert(id.clone());
            touched.push(Touched::Shard(name));
        }
        self.workers.insert(
            id.clone(),
            WorkerRecord {
                id,
                address,
                slots: slots.max(1),
                shards: new_names,
                registered_ms: now_ms,
            },
        );
        Applied {
            outcome: Ok(Response::Done),
            touched,
        }
    }

    /// Resolves a module selector against the uploaded modules.
    pub fn resolve_module(&self, selector: &ModuleSelector) -> Result<&ModuleRecord, Rejection> {
        let found = match selector {
            ModuleSelector::Digest(digest) => self.modules.get(digest),
            ModuleSelector::NameVersion {
                name,
                version: Some(version),
            } => self
                .modules
                .values()
                .find(|m| &m.name == name && &m.version == version),
            ModuleSelector::NameVersion {
                name,
                version: None,
            } => self
                .modules
                .values()
                .filter(|m| &m.name == name)
                .max_by_key(|m| (m.uploaded_ms, m.digest.clone())),
        };
        found.ok_or_else(|| {
            let known: Vec<String> =
                self.modules.values().map(|m| format!("{}@{}", m.name, m.version)).collect();
            Rejection::NotFound(format!(
                "module {selector} is not uploaded (known: {}); upload it with `quarry module upload`",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ))
        })
    }

    /// The shards a scope covers, or why it covers none.
    pub fn expand_scope(&self, scope: &Scope) -> Result<Vec<ShardId>, Rejection> {
        if scope.end_ms != 0 && scope.start_ms != 0 && scope.end_ms <= scope.start_ms {
            return Err(Rejection::Invalid(format!(
                "time range is empty: end {} is not after start {}",
                scope.end_ms, scope.start_ms
            )));
        }
        if scope.selector.is_empty() && scope.shards.is_empty() {
            return Err(Rejection::Invalid(
                "scope is empty: name shards or give a label selector (for example --selector env=demo)"
                    .to_owned(),
            ));
        }
        let mut names = BTreeSet::new();
        for name in &scope.shards {
            if !self.shards.contains_key(name) {
                return Err(Rejection::NotFound(format!(
                    "shard `{name}` is not known to the cluster; `quarry shard list` shows the shards workers hold"
                )));
            }
            names.insert(name.clone());
        }
        if !scope.selector.is_empty() {
            let matched = self.shards.iter().filter(|(_, shard)| {
                scope
                    .selector
                    .iter()
                    .all(|(k, v)| shard.description.labels.get(k) == Some(v))
            });
            let before = names.len();
            names.extend(matched.map(|(name, _)| name.clone()));
            if names.len() == before && scope.shards.is_empty() {
                let selector: Vec<String> = scope
                    .selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                return Err(Rejection::Invalid(format!(
                    "scope matches no shards: no shard has labels {}",
                    selector.join(",")
                )));
            }
        }
        // Shards whose events all lie outside the time range need no task.
        let in_range: Vec<ShardId> = names
            .into_iter()
            .filter(|name| {
                self.shards.get(name).is_some_and(|s| {
                    let d = &s.description;
                    (scope.end_ms == 0 || d.min_ts_ms < scope.end_ms)
                        && (scope.start_ms == 0 || d.max_ts_ms >= scope.start_ms)
                })
            })
            .collect();
        if in_range.is_empty() {
            return Err(Rejection::Invalid(
                "scope matches shards, but none holds events in the requested time range"
                    .to_owned(),
            ));
        }
        Ok(in_range)
    }

    /// What a submission would cover: its shards with their event counts,
    /// and an estimate of its wall time from the most recent completed hunt
    /// of the same module (events per millisecond), if any.
    pub fn preview(&self, spec: &HuntSpec) -> Result<Preview, Rejection> {
        let (module, shards) = self.validate_submit(spec)?;
        let shards: Vec<(ShardId, u64)> = shards
            .into_iter()
            .map(|s| {
                let events = self.shards.get(&s).map_or(0, |r| r.description.event_count);
                (s, events)
            })
            .collect();
        let events: u64 = shards.iter().map(|(_, n)| n).sum();
        let rate = self
            .hunts
            .values()
            .filter(|h| {
                h.module == module && h.state == HuntState::Completed && h.events_scanned > 0
            })
            .max_by_key(|h| h.finished_ms)
            .and_then(|h| {
                let ms = h.finished_ms - h.submitted_ms;
                (ms > 0).then(|| h.events_scanned as f64 / ms as f64)
            });
        let estimated_ms = rate.map(|r| (events as f64 / r).ceil() as u64);
        Ok(Preview {
            module,
            shards,
            events,
            estimated_ms,
        })
    }

    /// Checks a submission without changing anything; the leader calls this
    /// before proposing so that a bad request never reaches the log.
    pub fn validate_submit(
        &self,
        spec: &HuntSpec,
    ) -> Result<(ModuleDigest, Vec<ShardId>), Rejection> {
        let module = self.resolve_module(&spec.module)?.digest.clone();
        let shards = self.expand_scope(&spec.scope)?;
        Ok((module, shards))
    }

    fn submit_hunt(&mut self, index: u64, spec: HuntSpec, now_ms: i64) -> Applied {
        let (module, shards) = match self.validate_submit(&spec) {
            Ok(ok) => ok,
            Err(rejection) => return Applied::rejected(rejection),
        };
        let id = HuntId::new(format!("h-{index}"));
        let mut touched = vec![Touched::Hunt(id.clone())];
        let mut tasks = Vec::with_capacity(shards.len());
        for shard in shards {
            let task = TaskId::for_shard(&id, &shard);
            self.tasks.insert(
                task.clone(),
                TaskRecord {
                    id: task.clone(),
                    hunt: id.clone(),
                    shard,
                    state: TaskState::Pending,
                    attempt: 0,
                    worker: None,
                    waiting: None,
                    events_scanned: 0,
                    findings: 0,
                },
            );
            touched.push(Touched::Task(task.clone()));
            tasks.push(task);
        }
        let count = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
        self.hunts.insert(
            id.clone(),
            HuntRecord {
                id: id.clone(),
                spec,
                module,
                tasks,
                state: HuntState::Running,
                reason: String::new(),
                submitted_ms: now_ms,
                finished_ms: 0,
                findings: 0,
                events_scanned: 0,
                aggregates: BTreeMap::new(),
            },
        );
        Applied {
            outcome: Ok(Response::Hunt { id, tasks: count }),
            touched,
        }
    }

    fn assign_tasks(&mut self, assignments: Vec<Assignment>) -> Applied {
        let mut touched = Vec::new();
        for Assignment { task, worker } in assignments {
            // A placement may race with a cancel or a result: apply only to
            // tasks still waiting, on workers that hold the shard.
            let Some(record) = self.tasks.get_mut(&task) else {
                continue;
            };
            if record.state != TaskState::Pending {
                continue;
            }
            let holds = self
                .workers
                .get(&worker)
                .is_some_and(|w| w.shards.contains(&record.shard));
            if !holds {
                continue;
            }
            record.attempt += 1;
            record.worker = Some(worker.clone());
            record.waiting = None;
            record.state = TaskState::Assigned { worker };
            touched.push(Touched::Task(task));
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
        }
    }

    fn record_result(&mut self, report: TaskReport, now_ms: i64) -> Applied {
        let Some(task) = self.tasks.get_mut(&report.task) else {
            return Applied::rejected(Rejection::NotFound(format!(
                "task {} does not exist",
                report.task
            )));
        };
        let current = matches!(&task.state, TaskState::Assigned { worker } if *worker == report.worker)
            && task.attempt == report.attempt;
        if !current {
            // A duplicate or stale report: the committed result stands alone.
            return Applied {
                outcome: Ok(Response::StaleReport),
                touched: Vec::new(),
            };
        }
        let hunt_id = task.hunt.clone();
        let mut touched = vec![
            Touched::Task(task.id.clone()),
            Touched::Hunt(hunt_id.clone()),
        ];
        let mut merged = None;
        match report.outcome {
            Ok(partial) => {
                task.state = TaskState::Succeeded;
                task.events_scanned = partial.events_scanned;
                task.findings = partial.findings.len() as u64;
                let findings: Vec<FindingRecord> = partial
                    .findings
                    .into_iter()
                    .enumerate()
                    .map(|(n, mut f)| {
                        f.id = format!("{}#{}.{}", task.id, task.attempt, n);
                        f.task = task.id.clone();
                        f.shard = task.shard.clone();
                        f
                    })
                    .collect();
                touched.push(Touched::Findings(task.id.clone()));
                merged = Some((
                    partial.events_scanned,
                    findings.len() as u64,
                    partial.aggregates,
                ));
                self.findings.insert(task.id.clone(), findings);
            }
            Err(error) => task.state = TaskState::Failed { error },
        }
        if let Some(hunt) = self.hunts.get_mut(&hunt_id) {
            if let Some((events, findings, aggregates)) = merged {
                hunt.events_scanned += events;
                hunt.findings += findings;
                for (name, counts) in aggregates {
                    let into = hunt.aggregates.entry(name).or_default();
                    for (key, count) in counts {
                        *into.entry(key).or_default() += count;
                    }
                }
            }
            Self::settle_hunt(hunt, &self.tasks, now_ms);
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
        }
    }

    /// Ends a running hunt whose tasks have all ended.
    fn settle_hunt(hunt: &mut HuntRecord, tasks: &BTreeMap<TaskId, TaskRecord>, now_ms: i64) {
        if hunt.state != HuntState::Running {
            return;
        }
        let mut succeeded = 0usize;
        let mut failed = Vec::new();
        for id in &hunt.tasks {
            match tasks.get(id).map(|t| &t.state) {
                Some(TaskState::Succeeded) => succeeded += 1,
                Some(TaskState::Failed { error }) => {
                    let shard = tasks
                        .get(id)
                        .map(|t| t.shard.to_string())
                        .unwrap_or_default();
                    failed.push(format!("{shard}: {error}"));
                }
                Some(TaskState::Cancelled) => {}
                Some(TaskState::Pending | TaskState::Assigned { .. }) | None => return,
            }
        }
        hunt.finished_ms = now_ms;
        if failed.is_empty() {
            hunt.state = HuntState::Completed;
        } else {
            hunt.state = if succeeded > 0 {
                HuntState::PartiallyCompleted
            } else {
                HuntState::Failed
            };
            hunt.reason = format!(
                "{} of {} shards could not be scanned: {}",
                failed.len(),
                hunt.tasks.len(),
                failed.join("; ")
            );
        }
    }

    fn release_worker(&mut self, worker: &WorkerId, reason: String) -> Applied {
        let mut touched = Vec::new();
        for task in self.tasks.values_mut() {
            if matches!(&task.state, TaskState::Assigned { worker: w } if w == worker) {
                // The attempt number stays: the next assignment bumps it, so a
                // late report from the lost worker is stale.
                task.state = TaskState::Pending;
                task.waiting = Some(reason.clone());
                touched.push(Touched::Task(task.id.clone()));
            }
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
        }
    }

    fn cancel_hunt(&mut self, id: &HuntId, reason: String, now_ms: i64) -> Applied {
        let Some(hunt) = self.hunts.get_mut(id) else {
            return Applied::rejected(Rejection::NotFound(format!("hunt {id} does not exist")));
        };
        if hunt.state.is_terminal() {
            return Applied::rejected(Rejection::Conflict(format!(
                "hunt {id} already ended ({:?}); nothing to cancel",
                hunt.state
            )));
        }
        hunt.state = HuntState::Cancelled;
        hunt.finished_ms = now_ms;
        hunt.reason = if reason.is_empty() {
            "cancelled by a user".to_owned()
        } else {
            reason
        };
        let mut touched = vec![Touched::Hunt(id.clone())];
        for task_id in &hunt.tasks {
            if let Some(task) = self.tasks.get_mut(task_id)
                && !task.state.is_terminal()
            {
                task.state = TaskState::Cancelled;
                touched.push(Touched::Task(task_id.clone()));
            }
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
        }
    }

    /// Findings of a hunt, in task then production order.
    pub fn hunt_findings(&self, hunt: &HuntRecord) -> Vec<&FindingRecord> {
        hunt.tasks
            .iter()
            .filter_map(|t| self.findings.get(t))
            .flatten()
            .collect()
    }

    /// Tasks assigned to `worker` that have not ended, for re-dispatch when it
    /// (re)connects.
    pub fn assigned_to<'a>(
        &'a self,
        worker: &'a WorkerId,
    ) -> impl Iterator<Item = &'a TaskRecord> + 'a {
        self.tasks
            .values()
            .filter(move |t| matches!(&t.state, TaskState::Assigned { worker: w } if w == worker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str, labels: &[(&str, &str)]) -> ShardDescription {
        ShardDescription {
            name: ShardId::new(name),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            event_count: 10,
            min_ts_ms: 1_000,
            max_ts_ms: 2_000,
        }
    }

    fn module(name: &str, version: &str, byte: u8) -> ModuleRecord {
        ModuleRecord {
            digest: ModuleDigest::new(format!("{byte:064x}")),
            name: name.into(),
            version: version.into(),
            description: String::new(),
            uploaded_ms: 5,
            bytes: vec![byte],
        }
    }

    fn spec(selector: &[(&str, &str)]) -> HuntSpec {
        HuntSpec {
            module: ModuleSelector::NameVersion {
                name: "m".into(),
                version: Some("1".into()),
            },
            params: BTreeMap::new(),
            scope: Scope {
                selector: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Scope::default()
            },
            limits: Limits::default(),
            priority: 0,
            description: String::new(),
        }
    }

    /// Two workers with one shard each, and module m@1.
    fn cluster() -> State {
        let mut s = State::default();
        s.apply(
            1,
            Command::UploadModule {
                module: module("m", "1", 1),
            },
        );
        for (i, name) in ["a", "b"].iter().enumerate() {
            let applied = s.apply(
                2 + i as u64,
                Command::RegisterWorker {
                    id: WorkerId::new(format!("w{i}")),
                    address: String::new(),
                    slots: 2,
                    shards: vec![shard(name, &[("env", "demo")])],
                    now_ms: 10,
                },
            );
            assert!(applied.outcome.is_ok());
        }
        s
    }

    fn submit(s: &mut State, index: u64) -> HuntId {
        match s
            .apply(
                index,
                Command::SubmitHunt {
                    spec: spec(&[("env", "demo")]),
                    now_ms: 20,
                },
            )
            .outcome
        {
            Ok(Response::Hunt { id, tasks }) => {
                assert_eq!(tasks, 2);
                id
            }
            other => panic!("submit failed: {other:?}"),
        }
    }

    fn report(task: &TaskId, worker: &str, attempt: u32, findings: usize) -> Command {
        let finding = FindingRecord {
            id: String::new(),
            task: task.clone(),
            shard: ShardId::new(""),
            rule: "r".into(),
            title: "t".into(),
            severity: Severity::High,
            confidence: 80,
            entity: "user:x".into(),
            timestamp_ms: 1,
            evidence: vec![],
            techniques: vec![],
            offsets: vec![],
        };
        let mut aggregates = BTreeMap::new();
        aggregates.insert("by".to_owned(), BTreeMap::from([("k".to_owned(), 2u64)]));
        Command::RecordResult {
            report: TaskReport {
                task: task.clone(),
                attempt,
                worker: WorkerId::new(worker),
                outcome: Ok(PartialResult {
                    findings: vec![finding; findings],
                    aggregates,
                    events_scanned: 10,
                }),
            },
            now_ms: 30,
        }
    }

    fn assign_all(s: &mut State, hunt: &HuntId) {
        let assignments = s.hunts[hunt]
            .tasks
            .iter()
            .map(|t| {
                let shard = &s.tasks[t].shard;
                let worker = if shard.as_str() == "a" { "w0" } else { "w1" };
                Assignment {
                    task: t.clone(),
                    worker: WorkerId::new(worker),
                }
            })
            .collect();
        s.apply(100, Command::AssignTasks { assignments });
    }

    #[test]
    fn hunt_completes_when_every_task_reports_and_merges_results() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let tasks = s.hunts[&hunt].tasks.clone();
        s.apply(101, report(&tasks[0], "w0", 1, 2));
        assert_eq!(s.hunts[&hunt].state, HuntState::Running);
        s.apply(102, report(&tasks[1], "w1", 1, 1));
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::Completed);
        assert_eq!(h.findings, 3);
        assert_eq!(h.events_scanned, 20);
        assert_eq!(h.aggregates["by"]["k"], 4);
        let ids: Vec<_> = s.hunt_findings(h).iter().map(|f| f.id.clone()).collect();
        assert_eq!(ids, vec!["h-10/a#1.0", "h-10/a#1.1", "h-10/b#1.0"]);
    }

    #[test]
    fn a_retried_report_never_doubles_a_result() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let task = s.hunts[&hunt].tasks[0].clone();
        s.apply(101, report(&task, "w0", 1, 2));
        let before = s.clone();
        let again = s.apply(102, report(&task, "w0", 1, 2));
        assert_eq!(again.outcome, Ok(Response::StaleReport));
        assert!(again.touched.is_empty());
        assert_eq!(s, before);
    }

    #[test]
    fn report_from_another_worker_or_attempt_is_ignored() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let task = s.hunts[&hunt].tasks[0].clone();
        assert_eq!(
            s.apply(101, report(&task, "w1", 1, 1)).outcome,
            Ok(Response::StaleReport)
        );
        assert_eq!(
            s.apply(102, report(&task, "w0", 2, 1)).outcome,
            Ok(Response::StaleReport)
        );
        assert_eq!(s.hunts[&hunt].findings, 0);
    }

    #[test]
    fn failed_task_makes_hunt_partially_completed_naming_the_shard() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let tasks = s.hunts[&hunt].tasks.clone();
        s.apply(101, report(&tasks[0], "w0", 1, 1));
        s.apply(
            102,
            Command::RecordResult {
                report: TaskReport {
                    task: tasks[1].clone(),
                    attempt: 1,
                    worker: WorkerId::new("w1"),
                    outcome: Err("module exceeded its CPU deadline".into()),
                },
                now_ms: 40,
            },
        );
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::PartiallyCompleted);
        assert!(
            h.reason.contains("b: module exceeded its CPU deadline"),
            "{}",
            h.reason
        );
    }

    #[test]
    fn unknown_module_is_rejected_and_changes_nothing() {
        let mut s = cluster();
        let before = s.clone();
        let mut bad = spec(&[("env", "demo")]);
        bad.module = ModuleSelector::NameVersion {
            name: "nope".into(),
            version: Some("9".into()),
        };
        let applied = s.apply(
            10,
            Command::SubmitHunt {
                spec: bad,
                now_ms: 1,
            },
        );
        match applied.outcome {
            Err(Rejection::NotFound(msg)) => {
                assert!(msg.contains("nope@9") && msg.contains("m@1"), "{msg}")
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(s, before);
    }

    #[test]
    fn empty_scope_and_unmatched_selector_are_rejected() {
        let mut s = cluster();
        let before = s.clone();
        let empty = s.apply(
            10,
            Command::SubmitHunt {
                spec: spec(&[]),
                now_ms: 1,
            },
        );
        assert!(
            matches!(empty.outcome, Err(Rejection::Invalid(ref m)) if m.contains("scope is empty"))
        );
        let none = s.apply(
            11,
            Command::SubmitHunt {
                spec: spec(&[("env", "prod")]),
                now_ms: 1,
            },
        );
        assert!(matches!(none.outcome, Err(Rejection::Invalid(ref m)) if m.contains("env=prod")));
        assert_eq!(s, before);
    }

    #[test]
    fn time_range_outside_all_shards_is_rejected() {
        let mut s = cluster();
        let mut late = spec(&[("env", "demo")]);
        late.scope.start_ms = 5_000;
        let applied = s.apply(
            10,
            Command::SubmitHunt {
                spec: late,
                now_ms: 1,
            },
        );
        assert!(matches!(applied.outcome, Err(Rejection::Invalid(_))));
    }

    #[test]
    fn same_name_version_with_other_bytes_is_a_conflict_and_same_bytes_are_idempotent() {
        let mut s = cluster();
        let again = s.apply(
            20,
            Command::UploadModule {
                module: module("m", "1", 1),
            },
        );
        assert_eq!(
            again.outcome,
            Ok(Response::Module(ModuleDigest::new(format!("{:064x}", 1))))
        );
        assert!(again.touched.is_empty());
        let clash = s.apply(
            21,
            Command::UploadModule {
                module: module("m", "1", 2),
            },
        );
        assert!(matches!(clash.outcome, Err(Rejection::Conflict(_))));
    }

    #[test]
    fn cancel_ends_open_tasks_and_later_reports_are_stale() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let task = s.hunts[&hunt].tasks[0].clone();
        let applied = s.apply(
            101,
            Command::CancelHunt {
                hunt: hunt.clone(),
                reason: String::new(),
                now_ms: 50,
            },
        );
        assert!(applied.outcome.is_ok());
        assert_eq!(s.hunts[&hunt].state, HuntState::Cancelled);
        assert_eq!(
            s.apply(102, report(&task, "w0", 1, 1)).outcome,
            Ok(Response::StaleReport)
        );
        let twice = s.apply(
            103,
            Command::CancelHunt {
                hunt,
                reason: String::new(),
                now_ms: 51,
            },
        );
        assert!(matches!(twice.outcome, Err(Rejection::Conflict(_))));
    }

    #[test]
    fn assignment_to_a_worker_without_the_shard_is_ignored() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        let task = s.hunts[&hunt].tasks[0].clone(); // shard a, held by w0
        s.apply(
            11,
            Command::AssignTasks {
                assignments: vec![Assignment {
                    task: task.clone(),
                    worker: WorkerId::new("w1"),
                }],
            },
        );
        assert_eq!(s.tasks[&task].state, TaskState::Pending);
    }

    #[test]
    fn replaying_the_same_commands_gives_the_same_state() {
        let run = || {
            let mut s = cluster();
            let hunt = submit(&mut s, 10);
            assign_all(&mut s, &hunt);
            let tasks = s.hunts[&hunt].tasks.clone();
            s.apply(101, report(&tasks[0], "w0", 1, 3));
            s
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_lost_workers_tasks_wait_and_its_late_report_is_stale() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let task = s.hunts[&hunt].tasks[0].clone(); // on w0
        let applied = s.apply(
            101,
            Command::ReleaseWorker {
                worker: WorkerId::new("w0"),
                reason: "worker w0 lost".into(),
            },
        );
        assert_eq!(applied.touched, vec![Touched::Task(task.clone())]);
        assert_eq!(s.tasks[&task].state, TaskState::Pending);
        assert_eq!(s.tasks[&task].waiting.as_deref(), Some("worker w0 lost"));
        // The lost worker's late report of attempt 1 changes nothing.
        assert_eq!(
            s.apply(102, report(&task, "w0", 1, 1)).outcome,
            Ok(Response::StaleReport)
        );
        // Reassigned (attempt 2), its report counts once.
        let again = vec![Assignment {
            task: task.clone(),
            worker: WorkerId::new("w0"),
        }];
        s.apply(103, Command::AssignTasks { assignments: again });
        assert_eq!(s.tasks[&task].attempt, 2);
        assert!(s.tasks[&task].waiting.is_none());
        s.apply(104, report(&task, "w0", 2, 1));
        assert_eq!(s.hunts[&hunt].findings, 1);
    }

    #[test]
    fn preview_counts_scope_and_estimates_from_the_last_completed_run() {
        let mut s = cluster();
        let first = s.preview(&spec(&[("env", "demo")])).expect("valid");
        assert_eq!(first.shards.len(), 2);
        assert_eq!(first.events, 20);
        assert_eq!(first.estimated_ms, None, "no history yet");
        let hunt = submit(&mut s, 10); // submitted at 20 ms
        assign_all(&mut s, &hunt);
        let tasks = s.hunts[&hunt].tasks.clone();
        s.apply(101, report(&tasks[0], "w0", 1, 0));
        s.apply(102, report(&tasks[1], "w1", 1, 0)); // finished at 30 ms, 20 events
        let again = s.preview(&spec(&[("env", "demo")])).expect("valid");
        assert_eq!(again.estimated_ms, Some(10));
        assert!(
            s.preview(&spec(&[])).is_err(),
            "an empty scope is refused as on submit"
        );
    }

    #[test]
    fn re_registration_drops_shards_the_worker_no_longer_holds() {
        let mut s = cluster();
        s.apply(
            20,
            Command::RegisterWorker {
                id: WorkerId::new("w0"),
                address: String::new(),
                slots: 2,
                shards: vec![],
                now_ms: 30,
            },
        );
        assert!(s.shards[&ShardId::new("a")].holders.is_empty());
    }
}
