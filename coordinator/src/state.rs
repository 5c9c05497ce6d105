//! The replicated state machine.
//!
//! [`State::apply`] is a pure function of the state, the raft index and a
//! [`Command`]: no clock, network or disk. Time enters only through the
//! commands (the leader stamps them), so every replica computes the same
//! state, and the whole machine is unit-tested without raft.

use crate::compact::{Labels, SmallSet};
use quarry_contract::aggregate::{Aggregate, Merged, merge_into_measured};
use quarry_contract::correlation;
use quarry_proto::{HuntId, ModuleDigest, RequestId, ShardId, TaskId, WorkerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Default per-task CPU budget.
pub const DEFAULT_CPU_MS: u64 = 60_000;
/// Default per-task linear memory cap.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap on findings kept per task.
pub const DEFAULT_MAX_FINDINGS: u32 = 10_000;
/// Default cap on findings kept per hunt.
pub const DEFAULT_MAX_FINDINGS_PER_HUNT: u64 = 1_000_000;
/// Default cap on the bytes of findings kept per hunt.
pub const DEFAULT_MAX_RESULT_BYTES_PER_HUNT: u64 = 256 * 1024 * 1024;
/// Default attempts per task (the first run and two retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default wait before the first retry; doubles at each further retry.
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 1_000;
/// Longest wait between two attempts, whatever the backoff doubling says.
pub const MAX_RETRY_BACKOFF_MS: u64 = 60_000;
/// Default time a hunt may take, from submission to its deadline.
pub const DEFAULT_DEADLINE_MS: u64 = 60 * 60 * 1000;
/// Default number of module failures (sandbox kills, traps, output limits)
/// after which a hunt pauses itself.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Failing tasks' errors kept in a hunt's status.
pub const MAX_RECENT_FAILURES: usize = 10;
/// Aggregate merge errors a hunt keeps.
pub const MAX_AGGREGATE_ERRORS: usize = 10;
/// How long the outcome of a write with a request id is remembered, so a
/// retry within this window is answered instead of applied again.
pub const REQUEST_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Most request outcomes remembered, whatever their age.
pub const MAX_REMEMBERED_REQUESTS: usize = 100_000;

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
    /// ATT&CK techniques its descriptor declares, as the uploader read them.
    pub techniques: Vec<String>,
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
    pub labels: Labels,
    /// Events stored.
    pub event_count: u64,
    /// Earliest event time.
    pub min_ts_ms: i64,
    /// Latest event time.
    pub max_ts_ms: i64,
    /// Bytes the shard takes on the worker's disk.
    pub size_bytes: u64,
}

/// A shard and the workers holding a replica of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// What its holders last reported.
    pub description: ShardDescription,
    /// Workers holding it.
    pub holders: SmallSet<WorkerId>,
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
    /// Findings kept for the whole hunt; the rest are counted and dropped.
    pub max_findings_per_hunt: u64,
    /// Bytes of findings kept for the whole hunt (as [`finding_bytes`] counts them).
    pub max_result_bytes_per_hunt: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_ms: DEFAULT_CPU_MS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_findings_per_task: DEFAULT_MAX_FINDINGS,
            max_output_bytes: 0,
            max_findings_per_hunt: DEFAULT_MAX_FINDINGS_PER_HUNT,
            max_result_bytes_per_hunt: DEFAULT_MAX_RESULT_BYTES_PER_HUNT,
        }
    }
}

/// Which of a hunt's shards run first, as a canary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Canary {
    /// Every shard at once.
    #[default]
    None,
    /// This many shards (at least one, at most all).
    Shards(u32),
    /// This percentage of the shards, rounded up (1..=100).
    Percent(u8),
}

impl Canary {
    /// How many of `tasks` tasks form the canary (0 = no canary stage).
    pub fn size(self, tasks: usize) -> usize {
        let n = match self {
            Self::None => return 0,
            Self::Shards(n) => n as usize,
            Self::Percent(p) => (tasks * usize::from(p.min(100))).div_ceil(100),
        };
        // A canary as large as the hunt is no canary stage at all.
        if n >= tasks { 0 } else { n.max(1) }
    }
}

/// How a hunt is run: retries, deadline, staged rollout, circuit breaker and
/// pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Attempts per task before its shard is reported failed (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles at each further one.
    pub retry_backoff_ms: u64,
    /// Time from submission after which unfinished shards are given up and
    /// the hunt ends (partially completed, naming them).
    pub deadline_ms: u64,
    /// Canary stage.
    pub canary: Canary,
    /// Module failures (sandbox kills, traps, output limits) that pause the
    /// hunt; counted again from zero on resume.
    pub failure_threshold: u32,
    /// Tasks of this hunt running at once; 0 = no cap.
    pub max_concurrency: u32,
    /// Task starts per second for this hunt; 0 = no cap.
    pub max_tasks_per_second: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS,
            deadline_ms: DEFAULT_DEADLINE_MS,
            canary: Canary::None,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            max_concurrency: 0,
            max_tasks_per_second: 0,
        }
    }
}

impl Policy {
    /// The wait before retrying after `failed` failed attempts (1 = the first
    /// failure): `retry_backoff_ms * 2^(failed-1)`, capped.
    pub fn backoff_ms(&self, failed: u32) -> u64 {
        let doublings = failed.saturating_sub(1).min(20);
        self.retry_backoff_ms
            .saturating_mul(1 << doublings)
            .min(MAX_RETRY_BACKOFF_MS)
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
    /// Retries, deadline, canary, circuit breaker, pacing.
    pub policy: Policy,
}

/// Where a hunt is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HuntState {
    /// Tasks are pending or running.
    Running,
    /// Stopped placing tasks (the circuit breaker tripped or a canary task
    /// failed); running tasks finish; `quarry hunt resume` goes on.
    Paused,
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
        !matches!(self, Self::Running | Self::Paused)
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
    /// Merged aggregates by name (merge rules: `quarry-contract`).
    pub aggregates: Merged,
    /// Aggregates whose partials could not be merged (a name returned with
    /// two kinds, or partials past the byte limit): name and the reason, at
    /// most [`MAX_AGGREGATE_ERRORS`].
    pub aggregate_errors: BTreeMap<String, String>,
    /// Absolute deadline (ms): unfinished shards are given up then.
    pub deadline_ms: i64,
    /// Tasks in the canary stage (0 = none).
    pub canary_tasks: u32,
    /// Whether tasks beyond the canary may run.
    pub widened: bool,
    /// Why the hunt is paused (set while [`HuntState::Paused`]).
    pub paused: Option<String>,
    /// Module failures since submission or the last resume (circuit breaker).
    pub failures: u32,
    /// The latest failing tasks' errors, newest last, at most [`MAX_RECENT_FAILURES`].
    pub recent_failures: Vec<FailureNote>,
    /// Bytes of the results kept: findings and merged aggregates
    /// ([`finding_bytes`], [`Aggregate::approx_bytes`]).
    pub result_bytes: u64,

    /// Findings dropped by a result limit.
    pub findings_dropped: u64,
    /// Which result limit the hunt hit, if any.
    pub result_limit: Option<String>,
    /// The schedule this hunt is a run of.
    pub schedule: Option<quarry_proto::ScheduleId>,
    /// The W3C trace context of the request that submitted the hunt, when
    /// it was traced: its tasks' spans join that trace. Not in the status
    /// row: stored with the definition (`storage`), so that rows written
    /// before it existed read back unchanged.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

/// One failed attempt, for a hunt's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNote {
    /// The task.
    pub task: TaskId,
    /// Its shard.
    pub shard: ShardId,
    /// The attempt.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// The worker's error.
    pub error: String,
}

/// One attempt of a task running on a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The worker.
    pub worker: WorkerId,
    /// The attempt number.
    pub attempt: u32,
    /// When it was assigned (leader time).
    pub started_ms: i64,
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
    /// The attempt of the primary run (the latest one assigned when none runs).
    pub attempt: u32,
    /// Attempts issued so far, speculative ones included: the next attempt
    /// is `issued + 1`, so every attempt number is used once.
    pub issued: u32,
    /// The worker of the latest attempt.
    pub worker: Option<WorkerId>,
    /// Why a pending task is waiting again (its worker was lost), shown to users.
    pub waiting: Option<String>,
    /// Events the module saw.
    pub events_scanned: u64,
    /// Findings it recorded.
    pub findings: u64,
    /// Part of the hunt's canary stage.
    pub canary: bool,
    /// When the primary run was assigned.
    pub started_ms: i64,
    /// A speculative second run on another holder of the shard.
    pub backup: Option<Run>,
    /// Attempts that failed (lost workers do not count).
    pub failed_attempts: u32,
    /// Not placed again before this time (retry backoff).
    pub not_before_ms: i64,
    /// Wall time of the winning run, once succeeded.
    pub duration_ms: i64,
    /// Why some of its findings were not kept.
    pub truncated: Option<String>,
    /// The first ingest offset it scans (a scheduled run's watermark).
    pub from_offset: u64,
    /// Where the winning scan ended: the shard's next ingest offset when
    /// it started.
    pub scanned_to: u64,
}

impl TaskRecord {
    /// The attempt `worker` runs for this task, if it runs one.
    pub fn attempt_on(&self, worker: &WorkerId) -> Option<u32> {
        if let Some(backup) = &self.backup
            && backup.worker == *worker
        {
            return Some(backup.attempt);
        }
        match &self.state {
            TaskState::Assigned { worker: w } if w == worker => Some(self.attempt),
            _ => None,
        }
    }

    /// Every live run: (worker, attempt).
    pub fn runs(&self) -> Vec<(WorkerId, u32)> {
        let mut runs = Vec::new();
        if let TaskState::Assigned { worker } = &self.state {
            runs.push((worker.clone(), self.attempt));
        }
        if let Some(b) = &self.backup {
            runs.push((b.worker.clone(), b.attempt));
        }
        runs
    }

    /// Makes the backup the primary run (the primary failed or was lost).
    fn promote_backup(&mut self) -> bool {
        let Some(backup) = self.backup.take() else {
            return false;
        };
        self.state = TaskState::Assigned {
            worker: backup.worker.clone(),
        };
        self.attempt = backup.attempt;
        self.worker = Some(backup.worker);
        self.started_ms = backup.started_ms;
        true
    }
}

/// Bytes a finding counts for against result limits: its strings and 8 bytes
/// per offset (as the worker counts output).
pub fn finding_bytes(f: &FindingRecord) -> u64 {
    let strings = f.rule.len()
        + f.title.len()
        + f.entity.len()
        + f.evidence
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + f.techniques.iter().map(String::len).sum::<usize>()
        + f.tags.iter().map(String::len).sum::<usize>();
    strings as u64 + 8 * f.offsets.len() as u64
}

/// Whether a worker's error text names a fault of the module or its sandbox
/// (deadline, memory, trap, output limit, module error, invalid module), for
/// reports that do not say (`FAILURE_KIND_UNSPECIFIED`). The patterns are the
/// worker's `TaskFailure` and `WorkerError::InvalidModule` messages.
pub fn is_module_fault(error: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "deadline exceeded",
        "memory limit",
        "trap in",
        "output limit",
        "invalid module",
        "module rejected",
        "module failed",
    ];
    PREFIXES.iter().any(|p| error.starts_with(p)) || error.contains("is not a usable hunt module")
}

/// The shard named by findings that come out of the merge of all shards
/// (correlations), which no single shard produced.
pub const MERGED_SHARD: &str = "*";

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

impl Severity {
    /// The severity of its lowercase name (`high`).
    pub fn from_name(name: &str) -> Option<Severity> {
        Some(match name {
            "informational" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
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
    /// The module's free-form labels.
    pub tags: Vec<String>,
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
    /// `Ok` with the partial result, or the failure.
    pub outcome: Result<PartialResult, TaskError>,
}

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// The worker's error, naming the cause.
    pub message: String,
    /// The module's fault (sandbox kill, trap, output limit, module error),
    /// counted by the circuit breaker; otherwise the host's.
    pub module_fault: bool,
}

impl TaskError {
    /// A failure of the module (counted by the circuit breaker).
    pub fn module(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            module_fault: true,
        }
    }

    /// A failure of the host (a shard that cannot be read, a broken sandbox).
    pub fn host(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            module_fault: false,
        }
    }
}

/// A task's partial result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialResult {
    /// Findings (ids are assigned on apply).
    pub findings: Vec<FindingRecord>,
    /// Partial aggregates, checked and normalised.
    pub aggregates: Vec<Aggregate>,
    /// Events scanned.
    pub events_scanned: u64,
    /// The worker kept only the task's maximum of findings.
    pub findings_truncated: bool,
    /// The shard's next ingest offset when the scan started.
    pub end_offset: u64,
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
        /// Leader time.
        now_ms: i64,
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
    // New variants go last: commands are stored in the raft log by their
    // bincode variant index.
    /// The leader started speculative second runs of straggling tasks.
    Speculate {
        /// One backup run per task, on another holder of its shard.
        assignments: Vec<Assignment>,
        /// Leader time.
        now_ms: i64,
    },
    /// The leader saw hunts pass their deadline: their unfinished shards are
    /// given up and the hunts end.
    ExpireHunts {
        /// Leader time.
        now_ms: i64,
    },
    /// A user resumed a paused hunt.
    ResumeHunt {
        /// The hunt.
        hunt: HuntId,
    },
    /// The leader's hunt clock, recorded while hunts run (see
    /// [`crate::lease::HuntClock`]): the evidence a later leader has of
    /// what time it is.
    Tick {
        /// The leader's hunt-clock reading.
        now_ms: i64,
    },
    /// Finished hunts are deleted with their tasks and findings (by a user,
    /// or by the retention policy).
    DeleteHunts {
        /// The hunts.
        hunts: Vec<HuntId>,
    },
    /// An uploaded module no hunt refers to is deleted.
    DeleteModule {
        /// The module.
        digest: ModuleDigest,
    },
    /// A worker's report whose findings the leader cut to the hunt's
    /// result limits before proposing (they would be dropped on apply, and
    /// need not travel through the log): `trimmed` more were offered.
    RecordTrimmedResult {
        /// The report, with the findings that may still fit.
        report: TaskReport,
        /// Findings cut from its end.
        trimmed: u64,
        /// Leader time.
        now_ms: i64,
    },
    /// A person's or an automation's triage action (`quarry triage ...`).
    Triage {
        /// What to do.
        op: crate::triage_state::TriageOp,
        /// Leader time.
        now_ms: i64,
    },
    /// A client write with a request id: applied once; a retry with the
    /// same id (within [`REQUEST_WINDOW_MS`]) gets the first outcome.
    Once {
        /// The client's id of the write.
        request: RequestId,
        /// The write.
        command: Box<Command>,
        /// Leader time, for the dedup window.
        now_ms: i64,
    },
    /// A new bearer token (hashed by the leader before proposing).
    CreateToken {
        /// The record to keep.
        token: TokenRecord,
    },
    /// Revokes a token: it authenticates nobody from then on.
    RevokeToken {
        /// Its id.
        id: String,
    },
    /// A node's batch of audit records (appended once per origin and
    /// batch number), then the trail's retention as of `now_ms`.
    AppendAudit {
        /// The node that collected them, `role:name`.
        origin: String,
        /// Its batch number.
        batch: u64,
        /// The records.
        records: Vec<crate::audit::AuditEntry>,
        /// The leader's retention settings.
        retention: crate::audit::AuditRetention,
        /// Leader time.
        now_ms: i64,
    },
    /// A module upload by `uploader`: checked against the name's owner and
    /// the signing policy, then stored like [`Command::UploadModule`]; the
    /// first upload of a name makes `uploader` its owner.
    UploadModuleAs {
        /// The module.
        module: ModuleRecord,
        /// `role:name` of the caller (`local` on a development server).
        uploader: String,
        /// Whether the caller is an admin (may publish under any name).
        admin: bool,
        /// An ed25519 signature of the module, to verify with a trusted key.
        signature: Option<Vec<u8>>,
    },
    /// Adds (or replaces) a trusted module-signing key.
    TrustKey {
        /// Its name.
        name: String,
        /// The ed25519 public key.
        public_key: Vec<u8>,
        /// The admin adding it.
        added_by: String,
        /// Leader time.
        now_ms: i64,
    },
    /// Removes a trusted key: modules it signed count as unsigned.
    UntrustKey {
        /// Its name.
        name: String,
    },
    /// Whether modules must be signed by a trusted key.
    SetModulePolicy {
        /// Refuse unsigned uploads; workers refuse to run unsigned modules.
        require_signed: bool,
    },
    /// A new version of an intel set (parsed by the coordinator that took
    /// the import; the version is given at apply).
    ImportIntel {
        /// The set.
        record: crate::intel_store::IntelSetRecord,
    },
    /// Deletes every version of an intel set no running hunt uses.
    DeleteIntel {
        /// Its name.
        name: String,
    },
    /// A new recurring hunt (built and checked by the leader).
    CreateSchedule {
        /// The schedule.
        record: Box<crate::schedules::ScheduleRecord>,
    },
    /// Pauses or resumes a schedule.
    SetSchedulePaused {
        /// The schedule.
        id: quarry_proto::ScheduleId,
        /// Paused or not.
        paused: bool,
    },
    /// Deletes a schedule (a run going on ends as a plain hunt).
    DeleteSchedule {
        /// The schedule.
        id: quarry_proto::ScheduleId,
    },
    /// The leader saw a schedule due: starts its run for `due_ms`, once.
    FireSchedule {
        /// The schedule.
        id: quarry_proto::ScheduleId,
        /// The due time fired (must still be the schedule's next one).
        due_ms: i64,
        /// Leader time.
        now_ms: i64,
    },
    /// A new version of a rule pack (checked and digested by the
    /// coordinator that took the import; the version is given at apply).
    ImportRulePack {
        /// The pack (boxed: up to 16 MiB of rules).
        record: Box<crate::rule_packs::RulePackRecord>,
    },
    /// Deletes one version of a rule pack, or all of them.
    DeleteRulePack {
        /// Its name.
        name: String,
        /// The version (`None`: every version).
        version: Option<u32>,
        /// Even while hunts or schedules use it.
        force: bool,
    },
    /// [`Command::SubmitHunt`] from a traced request: the hunt keeps the
    /// request's trace context (a variant of its own, so that log entries
    /// written before it existed read back unchanged).
    SubmitTracedHunt {
        /// The hunt.
        spec: HuntSpec,
        /// Leader time.
        now_ms: i64,
        /// The submit request's W3C `traceparent`.
        traceparent: String,
    },
    /// A worker shutting down gracefully gave back an attempt it had not
    /// finished: the task is placed again at once on another holder of its
    /// shard. Not a failure (no retry backoff, no failed attempt): nothing
    /// went wrong with the task. A hand-back of an attempt the worker no
    /// longer runs (finished, replaced, cancelled) changes nothing.
    HandBackTask {
        /// The task.
        task: TaskId,
        /// The attempt given back.
        attempt: u32,
        /// The worker that ran it.
        worker: WorkerId,
        /// Why, shown with the task while it waits.
        reason: String,
    },
}

/// Most bearer tokens kept, revoked ones included.
pub const MAX_TOKENS: usize = 10_000;

/// A bearer token (docs/security.md). Only the argon2id hash of the token
/// is kept; nobody can read the token back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, `tok-<hex>`.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Its role (an API role: admin, hunter, automation, viewer).
    pub role: String,
    /// argon2id PHC string of the whole token.
    pub hash: String,
    /// When it was made.
    pub created_ms: i64,
    /// When it stops working (0: never).
    pub expires_ms: i64,
    /// Revoked by an admin.
    pub revoked: bool,
    /// Who made it, `role:name`.
    pub created_by: String,
}

/// One run to stop: the attempt of a task on a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRun {
    /// The worker running it.
    pub worker: WorkerId,
    /// The task.
    pub task: TaskId,
    /// The attempt (a later attempt of the task on the same worker goes on).
    pub attempt: u32,
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
    /// A hunt's status (everything but its definition).
    Hunt(HuntId),
    /// A hunt's definition, its parameters and task list: written once,
    /// when it is submitted. Kept apart from its status because both can be
    /// large (rule packs, intel sets; one task per shard) and the status
    /// changes with every task report.
    HuntDefinition(HuntId),
    /// A task.
    Task(TaskId),
    /// A remembered request outcome.
    Request(RequestId),
    /// The replicated hunt clock.
    Clock,
    /// Every finding of a deleted hunt.
    FindingsOf(HuntId),
    /// A row of the triage state.
    Triage(quarry_triage::RowKey),
    /// A bearer token.
    Token(String),
    /// An audit record.
    Audit(u64),
    /// The audit trail's numbering.
    AuditMeta,
    /// A module name's owner.
    ModuleOwner(String),
    /// A trusted signing key.
    TrustedKey(String),
    /// A module's signature.
    ModuleSignature(ModuleDigest),
    /// The module-signing policy.
    ModulePolicy,
    /// One version of an intel set.
    IntelSet(String, u32),
    /// One version of a rule pack.
    RulePack(String, u32),
    /// A schedule (gone when it was deleted).
    Schedule(quarry_proto::ScheduleId),
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
    /// The caller may not do it (a module name it does not own, an
    /// unsigned module where signatures are required).
    #[error("{0}")]
    Denied(String),
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
    /// Bytes in scope, as the workers last reported their shards' sizes.
    pub bytes: u64,
    /// Estimated wall time, when a past run of the module gives a rate.
    pub estimated_ms: Option<u64>,
}

/// What applying a command produced, for the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Runs the leader must tell their workers to stop (a cancelled or
    /// expired hunt, the loser of a speculative race).
    Stop(Vec<StopRun>),
    /// What a triage action did.
    Triage(crate::triage_state::TriageAnswer),
    /// The version holding an imported rule pack's content.
    RulePack {
        /// The version.
        version: u32,
        /// It was already the latest version's content.
        unchanged: bool,
    },
}

/// The result of one `apply`.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// The response or the rejection.
    pub outcome: Result<Response, Rejection>,
    /// What changed.
    pub touched: Vec<Touched>,
    /// Findings committed by this command, for the persister to store
    /// (they are not kept in memory).
    pub findings: Vec<NewFinding>,
    /// What triage asks of the coordinator after this command: finding
    /// links to index, evicted alerts whose links go, follow-ups.
    pub triage: Vec<quarry_triage::Effect>,
}

/// A committed finding and its place in its hunt's results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFinding {
    /// The hunt.
    pub hunt: HuntId,
    /// Its number within the hunt's findings, from 0, in commit order.
    pub seq: u64,
    /// The finding.
    pub record: FindingRecord,
}

impl Applied {
    pub(crate) fn done(touched: Vec<Touched>) -> Self {
        Self {
            outcome: Ok(Response::Done),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    pub(crate) fn rejected(rejection: Rejection) -> Self {
        Self {
            outcome: Err(rejection),
            touched: Vec::new(),
            findings: Vec::new(),
            triage: Vec::new(),
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
    /// Outcomes of recent writes that carried a request id.
    pub requests: RequestLog,
    /// The latest hunt-clock reading a leader recorded ([`Command::Tick`]).
    pub clock_ms: i64,
    /// Alerts, incidents, entity risk, suppressions and verdicts
    /// (`docs/triage.md`): every committed finding passes through it.
    pub triage: quarry_triage::Triage,
    /// Bearer tokens by id.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// The audit trail.
    pub audit: crate::audit::AuditTrail,
    /// Module name owners, trusted signing keys, module signatures.
    pub trust: crate::module_trust::ModuleTrust,
    /// The intel store.
    pub intel: crate::intel_store::IntelStore,
    /// Sigma rule packs.
    pub rule_packs: crate::rule_packs::RulePackStore,
    /// Recurring hunts.
    pub schedules: crate::schedules::Schedules,
    /// Per running hunt, how many of its tasks (in list order) are known to
    /// have ended: ended tasks never run again, so each report resumes the
    /// check for "all ended" there instead of rescanning the list, which
    /// was quadratic in a hunt's tasks. Derived data: not stored, rebuilt
    /// by the first check after a start.
    #[serde(skip)]
    pub settle_cursors: SettleCursors,
}

/// See [`State::settle_cursors`]. Equal whatever it holds: it caches what
/// the tasks already say.
#[derive(Clone, Debug, Default)]
pub struct SettleCursors(BTreeMap<HuntId, usize>);

impl PartialEq for SettleCursors {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SettleCursors {}

/// The outcome of a write that carried a request id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Raft index it applied at.
    pub index: u64,
    /// Leader time it applied at.
    pub applied_ms: i64,
    /// What its proposer was told.
    pub outcome: Result<Response, Rejection>,
}

/// Outcomes of recent writes by request id, bounded by age
/// ([`REQUEST_WINDOW_MS`]) and count ([`MAX_REMEMBERED_REQUESTS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    by_id: BTreeMap<RequestId, RequestRecord>,
    /// The same ids by the index they applied at, oldest first.
    by_index: BTreeMap<u64, RequestId>,
}

impl RequestLog {
    /// The remembered outcome of `request`.
    pub fn get(&self, request: &RequestId) -> Option<&RequestRecord> {
        self.by_id.get(request)
    }

    /// How many outcomes are remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every remembered outcome.
    pub fn iter(&self) -> impl Iterator<Item = (&RequestId, &RequestRecord)> {
        self.by_id.iter()
    }

    /// Adds a remembered outcome (loading from storage or applying).
    pub fn insert(&mut self, request: RequestId, record: RequestRecord) {
        self.by_index.insert(record.index, request.clone());
        self.by_id.insert(request, record);
    }

    /// Forgets outcomes past the window or over the count, oldest first;
    /// returns the ids forgotten.
    fn expire(&mut self, now_ms: i64) -> Vec<RequestId> {
        let mut gone = Vec::new();
        while let Some((&index, request)) = self.by_index.first_key_value() {
            let old = self
                .by_id
                .get(request)
                .is_none_or(|r| now_ms.saturating_sub(r.applied_ms) > REQUEST_WINDOW_MS);
            if !old && self.by_id.len() <= MAX_REMEMBERED_REQUESTS {
                break;
            }
            if let Some(request) = self.by_index.remove(&index) {
                self.by_id.remove(&request);
                gone.push(request);
            }
        }
        gone
    }
}

impl State {
    /// Applies `command`, committed at raft `index`.
    pub fn apply(&mut self, index: u64, command: Command) -> Applied {
        let mut applied = self.apply_command(index, command);
        // Whatever ended a scheduled run's hunt, the run ends with it.
        if self.schedules.by_id.values().any(|s| s.active.is_some()) {
            let clock = self.clock_ms;
            applied.touched.extend(self.settle_schedules(clock));
        }
        // Whatever path changed triage, its rows are written with the rest.
        applied
            .touched
            .extend(self.triage.take_dirty().into_iter().map(Touched::Triage));
        applied
    }

    fn apply_command(&mut self, index: u64, command: Command) -> Applied {
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
            Command::SubmitTracedHunt {
                spec,
                now_ms,
                traceparent,
            } => {
                let applied = self.submit_hunt(index, spec, now_ms);
                if let Ok(Response::Hunt { id, .. }) = &applied.outcome
                    && let Some(hunt) = self.hunts.get_mut(id)
                {
                    hunt.traceparent = Some(traceparent);
                }
                applied
            }
            Command::AssignTasks {
                assignments,
                now_ms,
            } => self.assign_tasks(assignments, now_ms),
            Command::Speculate {
                assignments,
                now_ms,
            } => self.speculate(assignments, now_ms),
            Command::ExpireHunts { now_ms } => self.expire_hunts(index, now_ms),
            Command::ResumeHunt { hunt } => self.resume_hunt(&hunt),
            Command::RecordResult { report, now_ms } => {
                self.record_result(index, report, 0, now_ms)
            }
            Command::RecordTrimmedResult {
                report,
                trimmed,
                now_ms,
            } => self.record_result(index, report, trimmed, now_ms),
            Command::CancelHunt {
                hunt,
                reason,
                now_ms,
            } => self.cancel_hunt(&hunt, reason, now_ms),
            Command::ReleaseWorker { worker, reason } => self.release_worker(&worker, reason),
            Command::HandBackTask {
                task,
                attempt,
                worker,
                reason,
            } => self.hand_back_task(&task, attempt, &worker, reason),
            Command::Once {
                request,
                command,
                now_ms,
            } => self.apply_once(index, request, *command, now_ms),
            Command::DeleteHunts { hunts } => self.delete_hunts(&hunts),
            Command::DeleteModule { digest } => self.delete_module(&digest),
            Command::Tick { now_ms } => {
                if now_ms <= self.clock_ms {
                    return Applied::rejected(Rejection::Conflict(
                        "the hunt clock only moves forward".into(),
                    ));
                }
                self.clock_ms = now_ms;
                Applied {
                    outcome: Ok(Response::Done),
                    touched: vec![Touched::Clock],
                    findings: Vec::new(),
                    triage: self.triage_tick(now_ms),
                }
            }
            Command::Triage { op, now_ms } => self.apply_triage(op, now_ms),
            Command::CreateToken { token } => self.create_token(token),
            Command::RevokeToken { id } => self.revoke_token(&id),
            Command::AppendAudit {
                origin,
                batch,
                records,
                retention,
                now_ms,
            } => {
                if records.len() > crate::audit::MAX_BATCH {
                    return Applied::rejected(Rejection::Invalid(format!(
                        "an audit batch holds at most {} records",
                        crate::audit::MAX_BATCH
                    )));
                }
                let appended = self
                    .audit
                    .append(&origin, batch, records, retention, now_ms, index);
                let mut touched: Vec<Touched> = appended
                    .added
                    .into_iter()
                    .chain(appended.removed)
                    .map(Touched::Audit)
                    .collect();
                if appended.new {
                    touched.push(Touched::AuditMeta);
                }
                Applied {
                    outcome: Ok(Response::Done),
                    touched,
                    findings: Vec::new(),
                    triage: Vec::new(),
                }
            }
            Command::UploadModuleAs {
                module,
                uploader,
                admin,
                signature,
            } => self.upload_module_as(module, uploader, admin, signature),
            Command::TrustKey {
                name,
                public_key,
                added_by,
                now_ms,
            } => self.trust_key(name, public_key, added_by, now_ms),
            Command::UntrustKey { name } => {
                if self.trust.keys.remove(&name).is_none() {
                    return Applied::rejected(Rejection::NotFound(format!(
                        "no trusted key is named {name}; `quarry cluster trusted-keys` lists them"
                    )));
                }
                Applied::done(vec![Touched::TrustedKey(name)])
            }
            Command::SetModulePolicy { require_signed } => {
                self.trust.require_signed = require_signed;
                Applied::done(vec![Touched::ModulePolicy])
            }
            Command::ImportIntel { record } => {
                let name = record.name.clone();
                let bound = self.bound_intel();
                match self.intel.import(record, &bound) {
                    Ok((version, gone)) => Applied::done(
                        std::iter::once(version)
                            .chain(gone)
                            .map(|v| Touched::IntelSet(name.clone(), v))
                            .collect(),
                    ),
                    Err(why) => Applied::rejected(Rejection::Invalid(why)),
                }
            }
            Command::CreateSchedule { record } => self.create_schedule(*record),
            Command::SetSchedulePaused { id, paused } => self.set_schedule_paused(&id, paused),
            Command::DeleteSchedule { id } => self.delete_schedule(&id),
            Command::FireSchedule { id, due_ms, now_ms } => {
                self.fire_schedule(index, &id, due_ms, now_ms)
            }
            Command::ImportRulePack { record } => self.import_rule_pack(*record),
            Command::DeleteRulePack {
                name,
                version,
                force,
            } => self.delete_rule_pack(&name, version, force),
            Command::DeleteIntel { name } => {
                let bound = self.bound_intel();
                match self.intel.delete(&name, &bound) {
                    Ok(gone) => Applied::done(
                        gone.into_iter()
                            .map(|v| Touched::IntelSet(name.clone(), v))
                            .collect(),
                    ),
                    Err(why) if why.contains("running hunts") => {
                        Applied::rejected(Rejection::Conflict(why))
                    }
                    Err(why) => Applied::rejected(Rejection::NotFound(why)),
                }
            }
        }
    }

    /// The intel-set versions hunts that have not ended are bound to.
    pub fn bound_intel(&self) -> BTreeSet<(String, u32)> {
        self.hunts
            .values()
            .filter(|h| !h.state.is_terminal())
            .flat_map(|h| crate::intel_store::refs(&h.spec.params))
            .collect()
    }

    fn upload_module_as(
        &mut self,
        module: ModuleRecord,
        uploader: String,
        admin: bool,
        signature: Option<Vec<u8>>,
    ) -> Applied {
        let name = module.name.clone();
        let digest = module.digest.clone();
        let has_versions = self.modules.values().any(|m| m.name == name);
        if let Err(why) = self
            .trust
            .may_publish(&name, &uploader, admin, has_versions)
        {
            return Applied::rejected(Rejection::Denied(why));
        }
        let signer = match &signature {
            None => None,
            Some(signature) => match self.trust.signer(&digest, signature) {
                Some(key) => Some(key.to_owned()),
                None => {
                    return Applied::rejected(Rejection::Denied(format!(
                        "the signature of {name}@{} does not verify with any trusted key ({}); sign it with `quarry module sign` using a key an admin added with `quarry cluster trust-key`",
                        module.version,
                        if self.trust.keys.is_empty() {
                            "the cluster trusts none".to_owned()
                        } else {
                            self.trust
                                .keys
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    )));
                }
            },
        };
        if self.trust.require_signed && signer.is_none() {
            return Applied::rejected(Rejection::Denied(format!(
                "this cluster runs signed modules only and {name}@{} is unsigned: sign it with `quarry module sign --key KEY.key {name}.wasm` and upload the .sig beside it",
                module.version
            )));
        }
        let mut applied = self.upload_module(module);
        if applied.outcome.is_ok() {
            if !self.trust.owners.contains_key(&name) {
                self.trust.owners.insert(name.clone(), uploader);
                applied.touched.push(Touched::ModuleOwner(name));
            }
            if let (Some(key), Some(signature)) = (signer, signature) {
                self.trust.signatures.insert(
                    digest.clone(),
                    crate::module_trust::ModuleSignature { key, signature },
                );
                applied.touched.push(Touched::ModuleSignature(digest));
            }
        }
        applied
    }

    fn trust_key(
        &mut self,
        name: String,
        public_key: Vec<u8>,
        added_by: String,
        now_ms: i64,
    ) -> Applied {
        if public_key.len() != quarry_security::module_sign::PUBLIC_KEY_BYTES {
            return Applied::rejected(Rejection::Invalid(
                "an ed25519 public key is 32 bytes".to_owned(),
            ));
        }
        if !self.trust.keys.contains_key(&name)
            && self.trust.keys.len() >= crate::module_trust::MAX_TRUSTED_KEYS
        {
            return Applied::rejected(Rejection::Conflict(format!(
                "the cluster trusts at most {} keys; remove one first",
                crate::module_trust::MAX_TRUSTED_KEYS
            )));
        }
        self.trust.keys.insert(
            name.clone(),
            crate::module_trust::TrustedKey {
                public_key,
                added_by,
                added_ms: now_ms,
            },
        );
        Applied::done(vec![Touched::TrustedKey(name)])
    }

    fn create_token(&mut self, token: TokenRecord) -> Applied {
        if self.tokens.contains_key(&token.id) {
            return Applied::rejected(Rejection::Conflict(format!(
                "token {} exists already",
                token.id
            )));
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Applied::rejected(Rejection::Conflict(format!(
                "the cluster keeps at most {MAX_TOKENS} tokens; revoke and remove old ones first"
            )));
        }
        let id = token.id.clone();
        self.tokens.insert(id.clone(), token);
        Applied {
            outcome: Ok(Response::Done),
            touched: vec![Touched::Token(id)],
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    fn revoke_token(&mut self, id: &str) -> Applied {
        let Some(token) = self.tokens.get_mut(id) else {
            return Applied::rejected(Rejection::NotFound(format!(
                "token {id} does not exist; `quarry token list` shows the tokens"
            )));
        };
        token.revoked = true;
        Applied {
            outcome: Ok(Response::Done),
            touched: vec![Touched::Token(id.to_owned())],
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    /// Whether any hunt still runs (its deadline can still pass).
    pub fn has_running_hunts(&self) -> bool {
        self.hunts.values().any(|h| !h.state.is_terminal())
    }

    /// Applies a write at most once per request id: a retry of a write that
    /// already applied (its first proposal committed although the caller
    /// was told the outcome is unknown) gets the first outcome.
    fn apply_once(
        &mut self,
        index: u64,
        request: RequestId,
        command: Command,
        now_ms: i64,
    ) -> Applied {
        let mut touched: Vec<Touched> = self
            .requests
            .expire(now_ms)
            .into_iter()
            .map(Touched::Request)
            .collect();
        if let Some(seen) = self.requests.get(&request) {
            return Applied {
                outcome: seen.outcome.clone(),
                touched,
                findings: Vec::new(),
                triage: Vec::new(),
            };
        }
        if matches!(command, Command::Once { .. }) {
            return Applied {
                outcome: Err(Rejection::Invalid(
                    "a request id cannot wrap another".into(),
                )),
                touched,
                findings: Vec::new(),
                triage: Vec::new(),
            };
        }
        let applied = self.apply(index, command);
        self.requests.insert(
            request.clone(),
            RequestRecord {
                index,
                applied_ms: now_ms,
                outcome: applied.outcome.clone(),
            },
        );
        touched.extend(applied.touched);
        touched.push(Touched::Request(request));
        Applied {
            outcome: applied.outcome,
            touched,
            findings: applied.findings,
            triage: applied.triage,
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
                findings: Vec::new(),
                triage: Vec::new(),
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
            findings: Vec::new(),
            triage: Vec::new(),
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
                    holders: SmallSet::new(),
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
            findings: Vec::new(),
            triage: Vec::new(),
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
        let bytes = shards
            .iter()
            .filter_map(|(name, _)| self.shards.get(name))
            .map(|s| s.description.size_bytes)
            .sum();
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
            bytes,
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
        self.check_rule_pack_refs(spec)?;
        if spec.policy.max_attempts == 0 {
            return Err(Rejection::Invalid(
                "max attempts must be at least 1 (the first run counts)".to_owned(),
            ));
        }
        if spec.policy.deadline_ms == 0 {
            return Err(Rejection::Invalid(
                "the hunt's deadline must be positive (for example --deadline 30m)".to_owned(),
            ));
        }
        if let Canary::Percent(p) = spec.policy.canary
            && !(1..=100).contains(&p)
        {
            return Err(Rejection::Invalid(format!(
                "canary percentage {p} is outside 1..=100"
            )));
        }
        if spec.policy.canary == Canary::Shards(0) {
            return Err(Rejection::Invalid(
                "a canary of 0 shards is no canary; leave --canary out instead".to_owned(),
            ));
        }
        Ok((module, shards))
    }

    fn submit_hunt(&mut self, index: u64, spec: HuntSpec, now_ms: i64) -> Applied {
        self.create_hunt(HuntId::new(format!("h-{index}")), spec, now_ms)
    }

    /// Creates hunt `id` (which must be new) with one task per shard in scope.
    pub(crate) fn create_hunt(&mut self, id: HuntId, spec: HuntSpec, now_ms: i64) -> Applied {
        let (module, shards) = match self.validate_submit(&spec) {
            Ok(ok) => ok,
            Err(rejection) => return Applied::rejected(rejection),
        };
        let mut touched = vec![
            Touched::Hunt(id.clone()),
            Touched::HuntDefinition(id.clone()),
        ];
        let mut tasks = Vec::with_capacity(shards.len());
        let total = shards.len();
        let canary_tasks = spec.policy.canary.size(total);
        for (n, shard) in shards.into_iter().enumerate() {
            let task = TaskId::for_shard(&id, &shard);
            // The canary is spread evenly over the shards (in name order), so
            // it samples the whole scope rather than its alphabetical start.
            let canary = canary_tasks > 0 && (n * canary_tasks) % total < canary_tasks;
            self.tasks.insert(
                task.clone(),
                TaskRecord {
                    id: task.clone(),
                    hunt: id.clone(),
                    shard,
                    state: TaskState::Pending,
                    attempt: 0,
                    issued: 0,
                    worker: None,
                    waiting: None,
                    events_scanned: 0,
                    findings: 0,
                    canary,
                    started_ms: 0,
                    backup: None,
                    failed_attempts: 0,
                    not_before_ms: 0,
                    duration_ms: 0,
                    truncated: None,
                    from_offset: 0,
                    scanned_to: 0,
                },
            );
            touched.push(Touched::Task(task.clone()));
            tasks.push(task);
        }
        let count = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
        let deadline_ms =
            now_ms.saturating_add(i64::try_from(spec.policy.deadline_ms).unwrap_or(i64::MAX));
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
                aggregates: Merged::new(),
                aggregate_errors: BTreeMap::new(),
                deadline_ms,
                canary_tasks: u32::try_from(canary_tasks).unwrap_or(u32::MAX),
                widened: canary_tasks == 0,
                paused: None,
                failures: 0,
                recent_failures: Vec::new(),
                result_bytes: 0,
                findings_dropped: 0,
                result_limit: None,
                schedule: None,
                traceparent: None,
            },
        );
        Applied {
            outcome: Ok(Response::Hunt { id, tasks: count }),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    fn assign_tasks(&mut self, assignments: Vec<Assignment>, now_ms: i64) -> Applied {
        let mut touched = Vec::new();
        for Assignment { task, worker } in assignments {
            // A placement may race with a cancel, a pause or a result: apply
            // only to tasks still waiting, on workers that hold the shard.
            let Some(record) = self.tasks.get_mut(&task) else {
                continue;
            };
            if record.state != TaskState::Pending {
                continue;
            }
            let running = self
                .hunts
                .get(&record.hunt)
                .is_some_and(|h| h.state == HuntState::Running);
            let holds = self
                .workers
                .get(&worker)
                .is_some_and(|w| w.shards.contains(&record.shard));
            if !running || !holds {
                continue;
            }
            record.issued += 1;
            record.attempt = record.issued;
            record.worker = Some(worker.clone());
            record.waiting = None;
            record.started_ms = now_ms;
            record.state = TaskState::Assigned { worker };
            touched.push(Touched::Task(task));
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    fn speculate(&mut self, assignments: Vec<Assignment>, now_ms: i64) -> Applied {
        let mut touched = Vec::new();
        for Assignment { task, worker } in assignments {
            let Some(record) = self.tasks.get_mut(&task) else {
                continue;
            };
            // Only a running task without a backup, on another holder.
            let on_other =
                matches!(&record.state, TaskState::Assigned { worker: w } if *w != worker);
            let holds = self
                .workers
                .get(&worker)
                .is_some_and(|w| w.shards.contains(&record.shard));
            if !on_other || !holds || record.backup.is_some() {
                continue;
            }
            record.issued += 1;
            record.backup = Some(Run {
                worker,
                attempt: record.issued,
                started_ms: now_ms,
            });
            touched.push(Touched::Task(task));
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    /// How many leading findings of a report for `task` the hunt's result
    /// limits leave room for now. Findings and bytes kept by a hunt only
    /// grow, so whatever is past this is dropped on apply too: the leader
    /// cuts it before proposing ([`Command::RecordTrimmedResult`]).
    pub fn hunt_room_for(&self, task: &TaskId, findings: &[FindingRecord]) -> usize {
        let Some(hunt) = self.tasks.get(task).and_then(|t| self.hunts.get(&t.hunt)) else {
            return findings.len();
        };
        let limits = hunt.spec.limits;
        let mut bytes = hunt.result_bytes;
        for (n, f) in findings.iter().enumerate() {
            let size = finding_bytes(f);
            if hunt.findings + n as u64 >= limits.max_findings_per_hunt
                || bytes + size > limits.max_result_bytes_per_hunt
            {
                return n;
            }
            bytes += size;
        }
        findings.len()
    }

    fn record_result(
        &mut self,
        index: u64,
        report: TaskReport,
        trimmed: u64,
        now_ms: i64,
    ) -> Applied {
        let Some(task) = self.tasks.get_mut(&report.task) else {
            return Applied::rejected(Rejection::NotFound(format!(
                "task {} does not exist",
                report.task
            )));
        };
        let is_primary = matches!(&task.state, TaskState::Assigned { worker } if *worker == report.worker)
            && task.attempt == report.attempt;
        let is_backup = task
            .backup
            .as_ref()
            .is_some_and(|b| b.worker == report.worker && b.attempt == report.attempt);
        let Some(hunt) = self.hunts.get_mut(&task.hunt) else {
            return Applied::rejected(Rejection::NotFound(format!(
                "hunt {} of task {} does not exist",
                task.hunt, task.id
            )));
        };
        if !(is_primary || is_backup) {
            // A duplicate or stale report (or the loser of a speculative
            // race): the committed result stands alone.
            return Applied {
                outcome: Ok(Response::StaleReport),
                touched: Vec::new(),
                findings: Vec::new(),
                triage: Vec::new(),
            };
        }
        let mut touched = vec![
            Touched::Task(task.id.clone()),
            Touched::Hunt(hunt.id.clone()),
        ];
        let mut stop = Vec::new();
        let mut findings = Vec::new();
        match report.outcome {
            Ok(partial) => {
                // First result wins: the other run, if any, is stopped and
                // whatever it reports later is stale.
                if is_backup {
                    if let TaskState::Assigned { worker } = &task.state {
                        stop.push(StopRun {
                            worker: worker.clone(),
                            task: task.id.clone(),
                            attempt: task.attempt,
                        });
                    }
                    task.promote_backup();
                } else if let Some(backup) = task.backup.take() {
                    stop.push(StopRun {
                        worker: backup.worker,
                        task: task.id.clone(),
                        attempt: backup.attempt,
                    });
                }
                task.state = TaskState::Succeeded;
                task.waiting = None;
                task.duration_ms = now_ms.saturating_sub(task.started_ms);
                task.events_scanned = partial.events_scanned;
                task.scanned_to = partial.end_offset;
                let kept = Self::keep_findings(
                    hunt,
                    task,
                    partial.findings,
                    trimmed,
                    partial.findings_truncated,
                );
                task.findings = kept.len() as u64;
                let first = hunt.findings;
                hunt.findings += kept.len() as u64;
                hunt.events_scanned += partial.events_scanned;
                findings = (first..)
                    .zip(kept)
                    .map(|(seq, record)| NewFinding {
                        hunt: hunt.id.clone(),
                        seq,
                        record,
                    })
                    .collect();
                Self::merge_aggregates(hunt, partial.aggregates);
            }
            Err(TaskError {
                message: error,
                module_fault,
            }) => {
                let policy = hunt.spec.policy;
                if module_fault {
                    hunt.failures = hunt.failures.saturating_add(1);
                    hunt.recent_failures.push(FailureNote {
                        task: task.id.clone(),
                        shard: task.shard.clone(),
                        attempt: report.attempt,
                        worker: report.worker.clone(),
                        error: error.clone(),
                    });
                    let excess = hunt
                        .recent_failures
                        .len()
                        .saturating_sub(MAX_RECENT_FAILURES);
                    hunt.recent_failures.drain(..excess);
                }
                task.failed_attempts = task.failed_attempts.saturating_add(1);
                if is_backup {
                    task.backup = None; // the primary run goes on
                } else if !task.promote_backup() {
                    if task.failed_attempts < policy.max_attempts {
                        let wait = policy.backoff_ms(task.failed_attempts);
                        task.state = TaskState::Pending;
                        task.not_before_ms =
                            now_ms.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
                        task.waiting = Some(format!(
                            "attempt {} on {} failed: {error}; retrying (attempt {} of {}) after {wait} ms",
                            report.attempt,
                            report.worker,
                            task.failed_attempts + 1,
                            policy.max_attempts
                        ));
                    } else {
                        task.state = TaskState::Failed {
                            error: if policy.max_attempts > 1 {
                                format!("{error} (gave up after {} attempts)", task.failed_attempts)
                            } else {
                                error.clone()
                            },
                        };
                        task.waiting = None;
                    }
                }
                if hunt.state == HuntState::Running {
                    if hunt.failures >= policy.failure_threshold.max(1) {
                        hunt.state = HuntState::Paused;
                        hunt.paused = Some(format!(
                            "circuit breaker: {} module failures (sandbox kills, traps, output limits) reached the threshold of {}; fix the module or `quarry hunt resume {}` to go on",
                            hunt.failures, policy.failure_threshold, hunt.id
                        ));
                    } else if task.canary
                        && matches!(task.state, TaskState::Failed { .. })
                        && !hunt.widened
                    {
                        hunt.state = HuntState::Paused;
                        hunt.paused = Some(format!(
                            "canary task on shard {} failed, so the hunt did not widen to its other shards; `quarry hunt resume {}` widens it anyway",
                            task.shard, hunt.id
                        ));
                    }
                }
            }
        }
        Self::maybe_widen(hunt, &self.tasks);
        let was_terminal = hunt.state.is_terminal();
        Self::settle_hunt(hunt, &self.tasks, &mut self.settle_cursors, now_ms);
        if !was_terminal {
            findings.extend(Self::correlate(hunt));
        }
        let outcome = if stop.is_empty() {
            Response::Done
        } else {
            Response::Stop(stop)
        };
        let triage = self.triage_findings(index, &findings, now_ms, &mut touched);
        Applied {
            outcome: Ok(outcome),
            touched,
            findings,
            triage,
        }
    }

    /// The findings of a succeeded task that fit its and its hunt's limits;
    /// the rest are dropped, counted, and the limit named in the status.
    /// `trimmed` more were offered but cut by the leader for the hunt's
    /// limits before proposing ([`State::hunt_room_for`]).
    fn keep_findings(
        hunt: &mut HuntRecord,
        task: &mut TaskRecord,
        findings: Vec<FindingRecord>,
        trimmed: u64,
        worker_truncated: bool,
    ) -> Vec<FindingRecord> {
        let limits = hunt.spec.limits;
        let received = findings.len();
        let offered = received as u64 + trimmed;
        let mut kept = Vec::with_capacity(received.min(limits.max_findings_per_task as usize));
        let mut task_bytes = 0u64;
        let mut task_cut = worker_truncated.then(|| {
            format!(
                "the worker kept only {} findings (the per-task limit)",
                limits.max_findings_per_task
            )
        });
        // What the leader cut would not have fitted the hunt either, unless
        // the task's own limit comes first (then it counts there).
        let mut hunt_cut = trimmed;
        for (n, mut f) in findings.into_iter().enumerate() {
            let bytes = finding_bytes(&f);
            if kept.len() >= limits.max_findings_per_task as usize
                || (limits.max_output_bytes > 0 && task_bytes + bytes > limits.max_output_bytes)
            {
                task_cut = Some(format!(
                    "kept {} of {offered} findings: per-task limit of {} findings or {} bytes",
                    kept.len(),
                    limits.max_findings_per_task,
                    limits.max_output_bytes
                ));
                hunt_cut = 0;
                break;
            }
            if hunt.findings + kept.len() as u64 >= limits.max_findings_per_hunt
                || hunt.result_bytes + bytes > limits.max_result_bytes_per_hunt
            {
                hunt_cut = (received - n) as u64 + trimmed;
                break;
            }
            task_bytes += bytes;
            hunt.result_bytes += bytes;
            f.id = format!("{}#{}.{}", task.id, task.attempt, n);
            f.task = task.id.clone();
            f.shard = task.shard.clone();
            kept.push(f);
        }
        if task_cut.is_some() {
            task.truncated = task_cut;
        }
        if hunt_cut > 0 {
            hunt.findings_dropped += hunt_cut;
            hunt.result_limit = Some(format!(
                "result limit reached ({} findings, {} bytes kept; limits {} findings, {} bytes per hunt): {} findings dropped; narrow the scope or raise --max-hunt-findings / --max-hunt-bytes",
                hunt.findings + kept.len() as u64,
                hunt.result_bytes,
                limits.max_findings_per_hunt,
                limits.max_result_bytes_per_hunt,
                hunt.findings_dropped
            ));
            task.truncated = Some(format!(
                "{hunt_cut} findings dropped: the hunt's result limit was reached"
            ));
        }
        kept
    }

    /// Merges a task's partial aggregates into its hunt's. Merged aggregates
    /// count against the hunt's byte limit with its findings: a partial whose
    /// size does not fit what is left is dropped, and the aggregate is named
    /// incomplete. (A merge grows the merged aggregate by at most the
    /// partial's size, except when an exact distinct set turns into a 4 KiB
    /// sketch.)
    fn merge_aggregates(hunt: &mut HuntRecord, partials: Vec<Aggregate>) {
        let limit = hunt.spec.limits.max_result_bytes_per_hunt;
        for aggregate in partials {
            let name = aggregate.name.clone();
            let size = aggregate.approx_bytes() as u64;
            if hunt.result_bytes.saturating_add(size) > limit {
                hunt.result_limit = Some(format!(
                    "result limit reached ({} bytes of findings and aggregates kept; limit {limit} bytes per hunt): \
                     partials of aggregate `{name}` were dropped; narrow the scope or raise --max-hunt-bytes",
                    hunt.result_bytes
                ));
                if hunt.aggregate_errors.len() < MAX_AGGREGATE_ERRORS
                    || hunt.aggregate_errors.contains_key(&name)
                {
                    hunt.aggregate_errors.insert(
                        name,
                        format!(
                            "incomplete: partials that did not fit the hunt's byte limit of {limit} bytes were dropped"
                        ),
                    );
                }
                continue;
            }
            match merge_into_measured(&mut hunt.aggregates, aggregate) {
                Ok(change) => {
                    hunt.result_bytes = hunt.result_bytes.saturating_add_signed(change);
                }
                Err(mismatch) => {
                    if hunt.aggregate_errors.len() < MAX_AGGREGATE_ERRORS {
                        hunt.aggregate_errors
                            .entry(name)
                            .or_insert_with(|| mismatch.to_string());
                    }
                }
            }
        }
    }

    /// Opens a canary hunt to its other shards once every canary task succeeded.
    fn maybe_widen(hunt: &mut HuntRecord, tasks: &BTreeMap<TaskId, TaskRecord>) {
        if hunt.widened {
            return;
        }
        let canary_done = hunt
            .tasks
            .iter()
            .filter_map(|t| tasks.get(t))
            .filter(|t| t.canary)
            .all(|t| t.state == TaskState::Succeeded);
        if canary_done {
            hunt.widened = true;
        }
    }

    /// Ends a running or paused hunt whose tasks have all ended.
    fn settle_hunt(
        hunt: &mut HuntRecord,
        tasks: &BTreeMap<TaskId, TaskRecord>,
        cursors: &mut SettleCursors,
        now_ms: i64,
    ) {
        if hunt.state.is_terminal() {
            cursors.0.remove(&hunt.id);
            return;
        }
        let cursor = cursors.0.entry(hunt.id.clone()).or_default();
        while let Some(id) = hunt.tasks.get(*cursor)
            && tasks.get(id).is_some_and(|t| t.state.is_terminal())
        {
            *cursor += 1;
        }
        if *cursor < hunt.tasks.len() {
            return;
        }
        cursors.0.remove(&hunt.id);
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
        hunt.paused = None;
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
        if let Some(limit) = &hunt.result_limit {
            if !hunt.reason.is_empty() {
                hunt.reason.push_str("; ");
            }
            hunt.reason.push_str(limit);
        }
    }

    fn release_worker(&mut self, worker: &WorkerId, reason: String) -> Applied {
        let mut touched = Vec::new();
        for task in self.tasks.values_mut() {
            if task.backup.as_ref().is_some_and(|b| b.worker == *worker) {
                task.backup = None;
                touched.push(Touched::Task(task.id.clone()));
            }
            if matches!(&task.state, TaskState::Assigned { worker: w } if w == worker) {
                if !task.promote_backup() {
                    // The attempt number stays: the next assignment issues a
                    // new one, so a late report from the lost worker is stale.
                    task.state = TaskState::Pending;
                    task.waiting = Some(reason.clone());
                }
                touched.push(Touched::Task(task.id.clone()));
            }
        }
        touched.dedup();
        Applied {
            outcome: Ok(Response::Done),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    fn hand_back_task(
        &mut self,
        id: &TaskId,
        attempt: u32,
        worker: &WorkerId,
        reason: String,
    ) -> Applied {
        let Some(task) = self.tasks.get_mut(id) else {
            return Applied::rejected(Rejection::NotFound(format!("task {id} does not exist")));
        };
        let stale = Applied {
            outcome: Ok(Response::StaleReport),
            touched: Vec::new(),
            findings: Vec::new(),
            triage: Vec::new(),
        };
        if task
            .backup
            .as_ref()
            .is_some_and(|b| b.worker == *worker && b.attempt == attempt)
        {
            // The primary run goes on.
            task.backup = None;
        } else if matches!(&task.state, TaskState::Assigned { worker: w } if w == worker)
            && task.attempt == attempt
        {
            if !task.promote_backup() {
                // As for a lost worker: the attempt number stays and the
                // next placement issues a new one, so a late report of the
                // given-back attempt is stale. `not_before_ms` is left as
                // it was (in the past): it is placed at the next turn.
                task.state = TaskState::Pending;
                task.waiting = Some(reason);
            }
        } else {
            return stale;
        }
        Applied {
            outcome: Ok(Response::Done),
            touched: vec![Touched::Task(id.clone())],
            findings: Vec::new(),
            triage: Vec::new(),
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
        hunt.paused = None;
        self.settle_cursors.0.remove(id);
        hunt.finished_ms = now_ms;
        hunt.reason = if reason.is_empty() {
            "cancelled by a user".to_owned()
        } else {
            reason
        };
        let mut touched = vec![Touched::Hunt(id.clone())];
        let mut stop = Vec::new();
        for task_id in &hunt.tasks {
            if let Some(task) = self.tasks.get_mut(task_id)
                && !task.state.is_terminal()
            {
                stop.extend(task.runs().into_iter().map(|(worker, attempt)| StopRun {
                    worker,
                    task: task_id.clone(),
                    attempt,
                }));
                task.state = TaskState::Cancelled;
                task.backup = None;
                task.waiting = None;
                touched.push(Touched::Task(task_id.clone()));
            }
        }
        Applied {
            outcome: Ok(Response::Stop(stop)),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    /// Deletes finished hunts, their tasks and findings. All or nothing: a
    /// hunt that is missing or still runs refuses the whole command.
    fn delete_hunts(&mut self, ids: &[HuntId]) -> Applied {
        for id in ids {
            match self.hunts.get(id) {
                None => {
                    return Applied::rejected(Rejection::NotFound(format!(
                        "hunt {id} does not exist; `quarry hunt list` shows the hunts"
                    )));
                }
                Some(hunt) if !hunt.state.is_terminal() => {
                    return Applied::rejected(Rejection::Conflict(format!(
                        "hunt {id} is still {:?}; cancel it first (`quarry hunt cancel {id}`)",
                        hunt.state
                    )));
                }
                Some(_) => {}
            }
        }
        let mut touched = Vec::new();
        for id in ids {
            let Some(hunt) = self.hunts.remove(id) else {
                continue;
            };
            self.settle_cursors.0.remove(id);
            for task in &hunt.tasks {
                self.tasks.remove(task);
                touched.push(Touched::Task(task.clone()));
            }
            touched.push(Touched::Hunt(id.clone()));
            touched.push(Touched::HuntDefinition(id.clone()));
            touched.push(Touched::FindingsOf(id.clone()));
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    /// Deletes a module that no hunt (running or kept) refers to.
    fn delete_module(&mut self, digest: &ModuleDigest) -> Applied {
        let Some(module) = self.modules.get(digest) else {
            return Applied::rejected(Rejection::NotFound(format!(
                "module {digest} is not uploaded; `quarry module list` shows the modules"
            )));
        };
        let users: Vec<&HuntId> = self
            .hunts
            .values()
            .filter(|h| &h.module == digest)
            .map(|h| &h.id)
            .take(5)
            .collect();
        if !users.is_empty() {
            return Applied::rejected(Rejection::Conflict(format!(
                "module {}@{} is used by hunt(s) {}; delete those hunts first (`quarry hunt delete`)",
                module.name,
                module.version,
                users
                    .iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.modules.remove(digest);
        let mut touched = vec![Touched::Module(digest.clone())];
        if self.trust.signatures.remove(digest).is_some() {
            touched.push(Touched::ModuleSignature(digest.clone()));
        }
        Applied {
            outcome: Ok(Response::Done),
            touched,
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    /// Finished hunts the retention policy lets go at `now_ms`, oldest
    /// first: those finished longer than `max_age_ms` ago (0: no age limit),
    /// and beyond the newest `keep` finished ones (0: no count limit).
    pub fn hunts_past_retention(&self, keep: usize, max_age_ms: i64, now_ms: i64) -> Vec<HuntId> {
        let mut finished: Vec<&HuntRecord> = self
            .hunts
            .values()
            .filter(|h| h.state.is_terminal())
            .collect();
        // Newest first.
        finished.sort_by(|a, b| (b.finished_ms, &b.id).cmp(&(a.finished_ms, &a.id)));
        let mut out: Vec<HuntId> = finished
            .iter()
            .enumerate()
            .filter(|(rank, h)| {
                (keep > 0 && *rank >= keep)
                    || (max_age_ms > 0 && now_ms.saturating_sub(h.finished_ms) > max_age_ms)
            })
            .map(|(_, h)| h.id.clone())
            .collect();
        out.reverse();
        out
    }

    /// Hunts past their deadline that have not ended.
    pub fn expired_hunts(&self, now_ms: i64) -> Vec<&HuntId> {
        self.hunts
            .values()
            .filter(|h| !h.state.is_terminal() && h.deadline_ms <= now_ms)
            .map(|h| &h.id)
            .collect()
    }

    fn expire_hunts(&mut self, index: u64, now_ms: i64) -> Applied {
        let expired: Vec<HuntId> = self.expired_hunts(now_ms).into_iter().cloned().collect();
        let mut touched = Vec::new();
        let mut stop = Vec::new();
        let mut findings = Vec::new();
        for id in expired {
            let Some(hunt) = self.hunts.get_mut(&id) else {
                continue;
            };
            for task_id in &hunt.tasks {
                let Some(task) = self.tasks.get_mut(task_id) else {
                    continue;
                };
                let why = match (&task.state, task.waiting.take()) {
                    (TaskState::Pending, Some(waiting)) => format!("it was waiting: {waiting}"),
                    (TaskState::Pending, None) if hunt.state == HuntState::Paused => format!(
                        "the hunt was paused: {}",
                        hunt.paused.as_deref().unwrap_or_default()
                    ),
                    (TaskState::Pending, None) if !hunt.widened && !task.canary => {
                        "the canary stage never finished".to_owned()
                    }
                    (TaskState::Pending, None) => {
                        "no live worker holding the shard had room for it".to_owned()
                    }
                    (TaskState::Assigned { worker }, _) => format!("still running on {worker}"),
                    _ => continue,
                };
                let error = format!("not scanned by the hunt's deadline; {why}");
                stop.extend(task.runs().into_iter().map(|(worker, attempt)| StopRun {
                    worker,
                    task: task_id.clone(),
                    attempt,
                }));
                task.backup = None;
                task.state = TaskState::Failed { error };
                touched.push(Touched::Task(task_id.clone()));
            }
            touched.push(Touched::Hunt(id.clone()));
            Self::settle_hunt(hunt, &self.tasks, &mut self.settle_cursors, now_ms);
            hunt.reason = format!("deadline reached; {}", hunt.reason);
            findings.extend(Self::correlate(hunt));
        }
        let triage = self.triage_findings(index, &findings, now_ms, &mut touched);
        Applied {
            outcome: Ok(if stop.is_empty() {
                Response::Done
            } else {
                Response::Stop(stop)
            }),
            touched,
            findings,
            triage,
        }
    }

    /// The findings of a hunt's correlations (aggregates named
    /// `correlation:<id>`, see `quarry_contract::correlation`), evaluated
    /// once, when the hunt ends with results: every task's partial state is
    /// merged by then, so a group whose events fell on several shards is
    /// judged on all of them. They count against the hunt's result limits
    /// like any finding; a correlation that cannot be evaluated is named in
    /// the hunt's aggregate errors.
    /// The findings a hunt makes once it has ended, from its merged
    /// aggregates: correlations met over every shard, and the rows of a
    /// query hunt asked to report them ([`crate::query_result`]).
    fn correlate(hunt: &mut HuntRecord) -> Vec<NewFinding> {
        if !matches!(
            hunt.state,
            HuntState::Completed | HuntState::PartiallyCompleted
        ) {
            return Vec::new();
        }
        let mut out = Self::correlation_findings(hunt);
        match crate::query_result::row_findings(hunt) {
            Ok((rows, note)) => {
                if let Some(note) = note {
                    Self::note_aggregate_error(hunt, "query:rows", note);
                }
                let total = rows.len();
                for (n, record) in rows.into_iter().enumerate() {
                    if !Self::admit_merged_finding(hunt, record, &mut out, "query rows") {
                        hunt.findings_dropped += (total - n - 1) as u64;
                        break;
                    }
                }
            }
            Err(error) => Self::note_aggregate_error(hunt, "query", error),
        }
        out
    }

    fn note_aggregate_error(hunt: &mut HuntRecord, name: &str, error: String) {
        if hunt.aggregate_errors.len() < MAX_AGGREGATE_ERRORS {
            hunt.aggregate_errors.insert(name.to_owned(), error);
        }
    }

    /// Adds a finding of the merged shard to `out` if the hunt's result
    /// limits have room; otherwise records the limit (naming `what` was
    /// dropped) and says no.
    fn admit_merged_finding(
        hunt: &mut HuntRecord,
        record: FindingRecord,
        out: &mut Vec<NewFinding>,
        what: &str,
    ) -> bool {
        let limits = hunt.spec.limits;
        let bytes = finding_bytes(&record);
        if hunt.findings >= limits.max_findings_per_hunt
            || hunt.result_bytes + bytes > limits.max_result_bytes_per_hunt
        {
            hunt.findings_dropped += 1;
            hunt.result_limit = Some(format!(
                "result limit reached: findings of {what} dropped; raise --max-hunt-findings / --max-hunt-bytes"
            ));
            return false;
        }
        hunt.result_bytes += bytes;
        let seq = hunt.findings;
        hunt.findings += 1;
        out.push(NewFinding {
            hunt: hunt.id.clone(),
            seq,
            record,
        });
        true
    }

    fn correlation_findings(hunt: &mut HuntRecord) -> Vec<NewFinding> {
        let mut out = Vec::new();
        let names: Vec<String> = hunt
            .aggregates
            .keys()
            .filter(|name| name.starts_with(correlation::NAME_PREFIX))
            .cloned()
            .collect();
        for name in names {
            let Some(Some(result)) = hunt
                .aggregates
                .get(&name)
                .map(|value| correlation::evaluate(&name, value))
            else {
                continue;
            };
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(error) => {
                    if hunt.aggregate_errors.len() < MAX_AGGREGATE_ERRORS {
                        hunt.aggregate_errors.insert(name, error);
                    }
                    continue;
                }
            };
            let dropped_partials = hunt.aggregate_errors.get(&name).cloned();
            if outcome.more > 0 && hunt.aggregate_errors.len() < MAX_AGGREGATE_ERRORS {
                hunt.aggregate_errors.insert(
                    name.clone(),
                    format!(
                        "{} more groups met the correlation than the {} reported",
                        outcome.more,
                        correlation::MAX_HITS
                    ),
                );
            }
            let spec = &outcome.spec;
            for (n, hit) in outcome.hits.iter().enumerate() {
                let mut evidence = outcome.evidence(hit);
                if let Some(error) = &dropped_partials {
                    evidence.push(("correlation.incomplete".into(), error.clone()));
                }
                let task = TaskId::new(format!("{}/{MERGED_SHARD}", hunt.id));
                let record = FindingRecord {
                    id: format!("{task}#correlation.{}.{n}", spec.id),
                    task,
                    shard: ShardId::new(MERGED_SHARD),
                    rule: spec.rule.clone(),
                    title: spec.title.clone(),
                    severity: Severity::from_name(&spec.severity).unwrap_or(Severity::Medium),
                    confidence: spec.confidence.min(100),
                    entity: outcome.entity(hit),
                    timestamp_ms: hit.last_ms,
                    evidence,
                    techniques: spec.techniques.clone(),
                    tags: spec.tags.clone(),
                    offsets: Vec::new(),
                };
                if !Self::admit_merged_finding(
                    hunt,
                    record,
                    &mut out,
                    &format!("correlation `{}`", spec.id),
                ) {
                    hunt.findings_dropped += (outcome.hits.len() - n - 1) as u64;
                    break;
                }
            }
        }
        out
    }

    fn resume_hunt(&mut self, id: &HuntId) -> Applied {
        let Some(hunt) = self.hunts.get_mut(id) else {
            return Applied::rejected(Rejection::NotFound(format!("hunt {id} does not exist")));
        };
        if hunt.state != HuntState::Paused {
            return Applied::rejected(Rejection::Conflict(format!(
                "hunt {id} is not paused ({:?}); only a paused hunt can be resumed",
                hunt.state
            )));
        }
        hunt.state = HuntState::Running;
        hunt.paused = None;
        // The breaker counts again from zero; a canary that ended (failed)
        // no longer holds back the other shards.
        hunt.failures = 0;
        let canary_ended = hunt
            .tasks
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .filter(|t| t.canary)
            .all(|t| t.state.is_terminal());
        if canary_ended {
            hunt.widened = true;
        }
        Applied {
            outcome: Ok(Response::Done),
            touched: vec![Touched::Hunt(id.clone())],
            findings: Vec::new(),
            triage: Vec::new(),
        }
    }

    /// Tasks `worker` runs (a primary or a speculative run) with the attempt
    /// it runs, for re-dispatch when it (re)connects.
    pub fn assigned_to<'a>(
        &'a self,
        worker: &'a WorkerId,
    ) -> impl Iterator<Item = (&'a TaskRecord, u32)> + 'a {
        self.tasks
            .values()
            .filter_map(move |t| Some((t, t.attempt_on(worker)?)))
    }

    /// Runs (primary and speculative backup) per worker, in one pass over
    /// the tasks: asking [`State::assigned_to`] of every worker would be
    /// workers x tasks, too slow for 1,000 workers and 100,000 tasks.
    pub fn assignment_counts(&self) -> BTreeMap<&WorkerId, u32> {
        let mut counts: BTreeMap<&WorkerId, u32> = BTreeMap::new();
        for task in self.tasks.values() {
            if let TaskState::Assigned { worker } = &task.state {
                *counts.entry(worker).or_default() += 1;
            }
            if let Some(backup) = &task.backup {
                *counts.entry(&backup.worker).or_default() += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use quarry_contract::aggregate::AggregateValue;

    pub(crate) fn shard(name: &str, labels: &[(&str, &str)]) -> ShardDescription {
        ShardDescription {
            name: ShardId::new(name),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            event_count: 10,
            min_ts_ms: 1_000,
            max_ts_ms: 2_000,
            size_bytes: 100,
        }
    }

    pub(crate) fn module(name: &str, version: &str, byte: u8) -> ModuleRecord {
        ModuleRecord {
            digest: ModuleDigest::new(format!("{byte:064x}")),
            name: name.into(),
            version: version.into(),
            description: String::new(),
            uploaded_ms: 5,
            techniques: Vec::new(),
            bytes: vec![byte],
        }
    }

    pub(crate) fn spec(selector: &[(&str, &str)]) -> HuntSpec {
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
            policy: Policy::default(),
        }
    }

    /// Two workers with one shard each, and module m@1.
    /// A module `m@1` and two workers holding shards `a` and `b` (`env=demo`).
    pub(crate) fn cluster() -> State {
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

    pub(crate) fn submit(s: &mut State, index: u64) -> HuntId {
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

    fn submit_spec(s: &mut State, index: u64, spec: HuntSpec, now_ms: i64) -> HuntId {
        match s.apply(index, Command::SubmitHunt { spec, now_ms }).outcome {
            Ok(Response::Hunt { id, .. }) => id,
            other => panic!("submit failed: {other:?}"),
        }
    }

    pub(crate) fn report(task: &TaskId, worker: &str, attempt: u32, findings: usize) -> Command {
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
            tags: vec![],
            offsets: vec![],
        };
        let aggregates = vec![Aggregate::new(
            "by",
            AggregateValue::counts_from([("k".to_owned(), 2u64)]),
        )];
        Command::RecordResult {
            report: TaskReport {
                task: task.clone(),
                attempt,
                worker: WorkerId::new(worker),
                outcome: Ok(PartialResult {
                    findings: vec![finding; findings],
                    aggregates,
                    events_scanned: 10,
                    findings_truncated: false,
                    end_offset: 100,
                }),
            },
            now_ms: 30,
        }
    }

    pub(crate) fn assign_all(s: &mut State, hunt: &HuntId) {
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
        s.apply(
            100,
            Command::AssignTasks {
                assignments,
                now_ms: 0,
            },
        );
    }

    #[test]
    fn hunt_completes_when_every_task_reports_and_merges_results() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let tasks = s.hunts[&hunt].tasks.clone();
        let first = s.apply(101, report(&tasks[0], "w0", 1, 2));
        assert_eq!(s.hunts[&hunt].state, HuntState::Running);
        let second = s.apply(102, report(&tasks[1], "w1", 1, 1));
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::Completed);
        assert_eq!(h.findings, 3);
        assert_eq!(h.events_scanned, 20);
        assert_eq!(
            h.aggregates["by"],
            AggregateValue::counts_from([("k".to_owned(), 4u64)])
        );
        // Committed findings go to the persister, numbered in commit order
        // across the hunt's tasks.
        let committed: Vec<_> = first
            .findings
            .iter()
            .chain(&second.findings)
            .map(|f| (f.hunt.as_str(), f.seq, f.record.id.as_str()))
            .collect();
        assert_eq!(
            committed,
            vec![
                ("h-10", 0, "h-10/a#1.0"),
                ("h-10", 1, "h-10/a#1.1"),
                ("h-10", 2, "h-10/b#1.0")
            ]
        );
    }

    /// A correlation whose events fell on two shards is met only by the
    /// merge: each task's partial state alone is under the condition, and
    /// the finding comes out when the hunt completes, once, naming the
    /// merged shards; it goes to triage like any finding.
    #[test]
    fn correlations_are_evaluated_over_every_shard_when_the_hunt_ends() {
        use quarry_contract::correlation::{Cmp, Correlation, Kind, Spec};
        let spec = Spec {
            id: "spray".into(),
            rule: "sigma/spray".into(),
            title: "Failed logons for one account".into(),
            kind: Kind::EventCount,
            timespan_ms: 60_000,
            condition: vec![(Cmp::Gte, 5)],
            series: vec!["failed logon".into()],
            group_by: vec!["TargetUserName".into()],
            value_field: None,
            severity: "high".into(),
            confidence: 70,
            techniques: vec!["T1110".into()],
            tags: vec!["sigma".into()],
            evidence: vec![],
        };
        let partial = |times: std::ops::Range<i64>| {
            let mut c = Correlation::new(spec.clone());
            for t in times {
                c.observe(&["alice"], 0, t * 1_000, None);
            }
            let (name, value) = c.into_counts();
            Aggregate::new(name, value)
        };
        let with = |command: Command, aggregate: Aggregate| match command {
            Command::RecordResult { mut report, now_ms } => {
                if let Ok(partial) = &mut report.outcome {
                    partial.aggregates = vec![aggregate];
                }
                Command::RecordResult { report, now_ms }
            }
            other => other,
        };
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        assign_all(&mut s, &hunt);
        let tasks = s.hunts[&hunt].tasks.clone();
        let first = s.apply(101, with(report(&tasks[0], "w0", 1, 0), partial(0..3)));
        assert!(first.findings.is_empty());
        let second = s.apply(102, with(report(&tasks[1], "w1", 1, 0), partial(3..5)));
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::Completed);
        assert_eq!(h.findings, 1);
        assert_eq!(second.findings.len(), 1, "{:?}", h.aggregate_errors);
        let f = &second.findings[0].record;
        assert_eq!(f.rule, "sigma/spray");
        assert_eq!(f.shard.as_str(), MERGED_SHARD);
        assert_eq!(f.entity, "targetusername:alice");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.timestamp_ms, 4_000);
        assert!(
            f.evidence
                .contains(&("correlation.events".into(), "5".into()))
        );
        assert!(!second.triage.is_empty(), "the finding is triaged");
        // Replaying the log gives the same state: the evaluation is a pure
        // function of the merged aggregates.
        let mut again = cluster();
        let hunt_again = submit(&mut again, 10);
        assign_all(&mut again, &hunt_again);
        again.apply(101, with(report(&tasks[0], "w0", 1, 0), partial(0..3)));
        let replayed = again.apply(102, with(report(&tasks[1], "w1", 1, 0), partial(3..5)));
        assert_eq!(replayed.findings, second.findings);
    }

    /// A query hunt with `findings=SEVERITY` (what `quarry schedule create
    /// --query` submits) turns the rows of its merged table into findings
    /// when it ends: the `where` after the aggregation is only true over
    /// both shards' partials, so only the merge finds the row.
    #[test]
    fn a_query_hunt_asked_for_findings_reports_its_merged_rows() {
        let text =
            "where EventID == 4625 | stats count() as failures by IpAddress | where failures >= 4";
        let plan = quarry_query::compile(text).expect("query");
        let shard_partial = |events: &[(&str, i64)]| {
            let docs: Vec<serde_json::Value> = events
                .iter()
                .map(|(ip, id)| serde_json::json!({"EventID": id, "IpAddress": ip}))
                .collect();
            let json: Vec<quarry_query::JsonEvent<'_>> = docs
                .iter()
                .filter_map(|d| d.as_object())
                .map(|map| quarry_query::JsonEvent {
                    map,
                    time_ms: Some(1_000),
                })
                .collect();
            plan.partial_to_aggregates(&plan.run_shard(json.iter()))
        };
        let with = |command: Command, aggregates: Vec<Aggregate>| match command {
            Command::RecordResult { mut report, now_ms } => {
                if let Ok(partial) = &mut report.outcome {
                    partial.aggregates = aggregates;
                    partial.findings.clear();
                }
                Command::RecordResult { report, now_ms }
            }
            other => other,
        };
        let run = |findings_param: Option<&str>| {
            let mut s = cluster();
            let mut spec = spec(&[("env", "demo")]);
            spec.params.insert("query".into(), text.into());
            if let Some(severity) = findings_param {
                spec.params.insert("findings".into(), severity.into());
                spec.params.insert("name".into(), "ssh-spray".into());
            }
            let hunt = submit_spec(&mut s, 10, spec, 20);
            assign_all(&mut s, &hunt);
            let tasks = s.hunts[&hunt].tasks.clone();
            let a = shard_partial(&[
                ("10.0.0.9", 4625),
                ("10.0.0.9", 4625),
                ("10.0.0.7", 4625),
                ("10.0.0.9", 4624),
            ]);
            let b = shard_partial(&[("10.0.0.9", 4625), ("10.0.0.9", 4625), ("10.0.0.7", 4625)]);
            let first = s.apply(101, with(report(&tasks[0], "w0", 1, 0), a));
            assert!(first.findings.is_empty());
            let second = s.apply(102, with(report(&tasks[1], "w1", 1, 0), b));
            assert_eq!(s.hunts[&hunt].state, HuntState::Completed);
            (s, hunt, second)
        };
        let (s, hunt, applied) = run(Some("high"));
        assert_eq!(
            applied.findings.len(),
            1,
            "{:?}",
            s.hunts[&hunt].aggregate_errors
        );
        let f = &applied.findings[0].record;
        assert_eq!(f.rule, "query/ssh-spray");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.entity, "ipaddress:10.0.0.9");
        assert_eq!(f.shard.as_str(), MERGED_SHARD);
        assert!(
            f.evidence.contains(&("failures".into(), "4".into())),
            "{f:?}"
        );
        assert!(f.title.contains("IpAddress=10.0.0.9"), "{}", f.title);
        assert_eq!(s.hunts[&hunt].findings, 1);
        assert!(!applied.triage.is_empty(), "the finding is triaged");
        // Replaying gives the same findings.
        let (_, _, again) = run(Some("high"));
        assert_eq!(again.findings, applied.findings);
        // Without `findings` a query hunt only keeps its table.
        let (_, _, quiet) = run(None);
        assert!(quiet.findings.is_empty());
        // A bad severity is named in the hunt's aggregate errors.
        let (s, hunt, bad) = run(Some("urgent"));
        assert!(bad.findings.is_empty());
        assert!(
            s.hunts[&hunt].aggregate_errors["query"].contains("not a severity"),
            "{:?}",
            s.hunts[&hunt].aggregate_errors
        );
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
        let mut once = spec(&[("env", "demo")]);
        once.policy.max_attempts = 1;
        let hunt = submit_spec(&mut s, 10, once, 20);
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
                    outcome: Err(TaskError::module("module exceeded its CPU deadline")),
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
                now_ms: 0,
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
        s.apply(
            103,
            Command::AssignTasks {
                assignments: again,
                now_ms: 0,
            },
        );
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

    // ---- retries, deadline, speculation, canary, breaker, limits ----

    /// Three workers (w0, w1, w2, two slots each) and `n` shards s00..,
    /// each held by two of them (sK on wK%3 and w(K+1)%3), plus shard
    /// `lonely` on w2 alone when `lonely` is set.
    fn replicated(n: usize, lonely: bool) -> State {
        let mut s = State::default();
        s.apply(
            1,
            Command::UploadModule {
                module: module("m", "1", 1),
            },
        );
        for w in 0..3usize {
            let mut shards: Vec<ShardDescription> = (0..n)
                .filter(|k| k % 3 == w || (k + 1) % 3 == w)
                .map(|k| shard(&format!("s{k:02}"), &[("env", "demo")]))
                .collect();
            if lonely && w == 2 {
                shards.push(shard("lonely", &[("env", "demo")]));
            }
            s.apply(
                2 + w as u64,
                Command::RegisterWorker {
                    id: WorkerId::new(format!("w{w}")),
                    address: String::new(),
                    slots: 2,
                    shards,
                    now_ms: 0,
                },
            );
        }
        s
    }

    fn live(ids: &[&str]) -> BTreeSet<WorkerId> {
        ids.iter().map(|i| WorkerId::new(*i)).collect()
    }

    /// Plans with the scheduler and commits the plan, as the leader does.
    fn schedule(s: &mut State, index: u64, live: &BTreeSet<WorkerId>, now_ms: i64) -> usize {
        let plan = crate::scheduler::plan(s, live, now_ms);
        let n = plan.len();
        s.apply(
            index,
            Command::AssignTasks {
                assignments: plan,
                now_ms,
            },
        );
        n
    }

    fn fail(task: &TaskId, worker: &WorkerId, attempt: u32, error: &str, now_ms: i64) -> Command {
        Command::RecordResult {
            report: TaskReport {
                task: task.clone(),
                attempt,
                worker: worker.clone(),
                outcome: Err(TaskError {
                    message: error.to_owned(),
                    module_fault: is_module_fault(error),
                }),
            },
            now_ms,
        }
    }

    fn at(s: &State, task: &TaskId) -> (WorkerId, u32) {
        let t = &s.tasks[task];
        match &t.state {
            TaskState::Assigned { worker } => (worker.clone(), t.attempt),
            other => panic!("task {task} is not running: {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = Policy::default();
        assert_eq!(p.backoff_ms(1), 1_000);
        assert_eq!(p.backoff_ms(2), 2_000);
        assert_eq!(p.backoff_ms(3), 4_000);
        assert_eq!(p.backoff_ms(40), MAX_RETRY_BACKOFF_MS);
    }

    #[test]
    fn a_failed_attempt_is_retried_after_a_backoff_then_reported_failed_with_the_last_reason() {
        let mut s = cluster();
        let hunt = submit(&mut s, 10);
        let all = live(&["w0", "w1"]);
        schedule(&mut s, 11, &all, 1_000);
        let task = s.hunts[&hunt].tasks[0].clone(); // shard a on w0
        let other = s.hunts[&hunt].tasks[1].clone();
        s.apply(12, report(&other, "w1", 1, 0));

        let (w, a) = at(&s, &task);
        s.apply(13, fail(&task, &w, a, "host: shard read failed", 2_000));
        let t = &s.tasks[&task];
        assert_eq!(t.state, TaskState::Pending);
        assert_eq!(t.not_before_ms, 3_000, "first retry after 1 s");
        let waiting = t.waiting.as_deref().unwrap_or_default();
        assert!(
            waiting.contains("shard read failed") && waiting.contains("attempt 2 of 3"),
            "{waiting}"
        );
        assert_eq!(schedule(&mut s, 14, &all, 2_999), 0, "still backing off");
        assert_eq!(schedule(&mut s, 15, &all, 3_000), 1);

        let (w, a) = at(&s, &task);
        assert_eq!(a, 2);
        s.apply(16, fail(&task, &w, a, "host: second", 3_100));
        assert_eq!(
            s.tasks[&task].not_before_ms, 5_100,
            "second retry after 2 s"
        );
        schedule(&mut s, 17, &all, 5_100);
        let (w, a) = at(&s, &task);
        s.apply(18, fail(&task, &w, a, "host: third and last", 5_200));

        assert_eq!(
            s.tasks[&task].state,
            TaskState::Failed {
                error: "host: third and last (gave up after 3 attempts)".into()
            }
        );
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::PartiallyCompleted);
        assert!(h.reason.contains("a: host: third and last"), "{}", h.reason);
        assert_eq!(h.failures, 0, "host failures do not trip the breaker");
    }

    #[test]
    fn a_lost_workers_task_moves_to_a_live_replica() {
        let mut s = replicated(3, false);
        let hunt = submit_spec(&mut s, 10, spec(&[("env", "demo")]), 0);
        schedule(&mut s, 11, &live(&["w0", "w1", "w2"]), 0);
        let task = s.hunts[&hunt].tasks[0].clone();
        let (lost, _) = at(&s, &task);
        s.apply(
            12,
            Command::ReleaseWorker {
                worker: lost.clone(),
                reason: format!("worker {lost} lost"),
            },
        );
        let survivors: BTreeSet<WorkerId> = live(&["w0", "w1", "w2"])
            .into_iter()
            .filter(|w| *w != lost)
            .collect();
        schedule(&mut s, 13, &survivors, 100);
        let (now_on, attempt) = at(&s, &task);
        assert_ne!(now_on, lost);
        assert_eq!(attempt, 2);
        assert!(s.shards[&s.tasks[&task].shard].holders.contains(&now_on));
    }

    #[test]
    fn a_handed_back_task_is_placed_again_at_once_and_not_counted_as_failed() {
        let mut s = replicated(3, false);
        let hunt = submit_spec(&mut s, 10, spec(&[("env", "demo")]), 0);
        schedule(&mut s, 11, &live(&["w0", "w1", "w2"]), 0);
        let task = s.hunts[&hunt].tasks[0].clone();
        let (draining, attempt) = at(&s, &task);
        let hand_back = |attempt| Command::HandBackTask {
            task: task.clone(),
            attempt,
            worker: draining.clone(),
            reason: format!("worker {draining} shut down"),
        };
        // An attempt the worker does not run is not given back.
        assert_eq!(
            s.apply(12, hand_back(attempt + 7)).outcome,
            Ok(Response::StaleReport)
        );
        assert_eq!(at(&s, &task), (draining.clone(), attempt));

        assert_eq!(s.apply(13, hand_back(attempt)).outcome, Ok(Response::Done));
        let record = &s.tasks[&task];
        assert_eq!(record.state, TaskState::Pending);
        assert_eq!(record.failed_attempts, 0, "a hand-back is no failure");
        assert!(record.not_before_ms <= 100, "no retry backoff");
        assert!(
            record
                .waiting
                .as_deref()
                .unwrap_or_default()
                .contains("shut down")
        );
        let others: BTreeSet<WorkerId> = live(&["w0", "w1", "w2"])
            .into_iter()
            .filter(|w| *w != draining)
            .collect();
        schedule(&mut s, 14, &others, 100);
        let (now_on, next) = at(&s, &task);
        assert_ne!(now_on, draining);
        assert!(next > attempt);
        // The given-back attempt reporting late is stale; the new one counts.
        assert_eq!(
            s.apply(15, report(&task, draining.as_str(), attempt, 1))
                .outcome,
            Ok(Response::StaleReport)
        );
        assert_eq!(
            s.apply(16, hand_back(attempt)).outcome,
            Ok(Response::StaleReport),
            "a repeated hand-back changes nothing"
        );
        s.apply(17, report(&task, now_on.as_str(), next, 1));
        assert_eq!(s.tasks[&task].state, TaskState::Succeeded);
        assert_eq!(s.tasks[&task].failed_attempts, 0);
    }

    #[test]
    fn at_the_deadline_a_waiting_shard_is_given_up_and_the_hunt_ends_partial_naming_it() {
        let mut s = replicated(3, true);
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.deadline_ms = 10_000;
        let hunt = submit_spec(&mut s, 10, sp, 1_000);
        assert_eq!(s.hunts[&hunt].deadline_ms, 11_000);
        let all = live(&["w0", "w1", "w2"]);
        schedule(&mut s, 11, &all, 1_000);
        let lonely = TaskId::for_shard(&hunt, &ShardId::new("lonely"));
        // w2 dies: its replicated tasks move, `lonely` waits.
        s.apply(
            12,
            Command::ReleaseWorker {
                worker: WorkerId::new("w2"),
                reason: "worker w2 stopped heartbeating".into(),
            },
        );
        let survivors = live(&["w0", "w1"]);
        let mut index = 13;
        for _ in 0..4 {
            schedule(&mut s, index, &survivors, 2_000);
            index += 1;
            for t in s.hunts[&hunt].tasks.clone() {
                if let TaskState::Assigned { worker } = &s.tasks[&t].state {
                    let worker = worker.clone();
                    let attempt = s.tasks[&t].attempt;
                    s.apply(index, report(&t, worker.as_str(), attempt, 1));
                    index += 1;
                }
            }
        }
        assert_eq!(s.tasks[&lonely].state, TaskState::Pending);
        assert!(
            s.tasks[&lonely]
                .waiting
                .as_deref()
                .unwrap_or_default()
                .contains("w2")
        );
        assert_eq!(s.hunts[&hunt].state, HuntState::Running, "it waits visibly");
        assert!(s.expired_hunts(10_999).is_empty());
        assert_eq!(s.expired_hunts(11_000).len(), 1);

        s.apply(index, Command::ExpireHunts { now_ms: 11_000 });
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::PartiallyCompleted);
        assert!(
            h.reason.starts_with("deadline reached; 1 of 4 shards"),
            "{}",
            h.reason
        );
        assert!(
            h.reason
                .contains("lonely: not scanned by the hunt's deadline"),
            "{}",
            h.reason
        );
        assert!(h.reason.contains("w2 stopped heartbeating"), "{}", h.reason);
        assert_eq!(h.findings, 3);
        assert!(s.expired_hunts(99_000).is_empty());
    }

    #[test]
    fn a_worker_back_before_the_deadline_completes_the_hunt() {
        let mut s = cluster();
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.deadline_ms = 10_000;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        schedule(&mut s, 11, &live(&["w0", "w1"]), 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        s.apply(
            12,
            Command::ReleaseWorker {
                worker: WorkerId::new("w0"),
                reason: "lost".into(),
            },
        );
        s.apply(13, report(&tasks[1], "w1", 1, 0));
        schedule(&mut s, 14, &live(&["w0", "w1"]), 9_000); // w0 is back
        s.apply(15, report(&tasks[0], "w0", 2, 1));
        assert_eq!(s.hunts[&hunt].state, HuntState::Completed);
        assert!(s.expired_hunts(20_000).is_empty());
    }

    /// Six replicated shards; five succeed in 100 ms, the sixth straggles.
    fn straggler() -> (State, HuntId, TaskId) {
        let mut s = replicated(6, false);
        let hunt = submit_spec(&mut s, 10, spec(&[("env", "demo")]), 0);
        let all = live(&["w0", "w1", "w2"]);
        schedule(&mut s, 11, &all, 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        for (i, t) in tasks[..5].iter().enumerate() {
            let (w, a) = at(&s, t);
            s.apply(20 + i as u64, report(t, w.as_str(), a, 1));
        }
        (s, hunt, tasks[5].clone())
    }

    #[test]
    fn a_straggler_gets_a_backup_on_another_replica_and_the_first_result_wins() {
        let (mut s, hunt, slow) = straggler();
        let all = live(&["w0", "w1", "w2"]);
        let policy = crate::scheduler::Speculation::default();
        // Medians are 30 ms here: not yet a straggler at 2 s ...
        assert!(crate::scheduler::speculate(&s, &all, 2_000, &policy).is_empty());
        // ... but at 5 s it is.
        let backups = crate::scheduler::speculate(&s, &all, 5_000, &policy);
        assert_eq!(backups.len(), 1, "{backups:?}");
        let (primary, first) = at(&s, &slow);
        assert_ne!(backups[0].worker, primary);
        s.apply(
            40,
            Command::Speculate {
                assignments: backups.clone(),
                now_ms: 5_000,
            },
        );
        let backup = s.tasks[&slow].backup.clone().expect("a backup run");
        assert_eq!(backup.attempt, first + 1);
        assert!(
            crate::scheduler::speculate(&s, &all, 9_000, &policy).is_empty(),
            "one backup per task"
        );

        // The backup reports first: it wins, the primary is told to stop.
        let won = s.apply(41, report(&slow, backup.worker.as_str(), backup.attempt, 2));
        assert_eq!(
            won.outcome,
            Ok(Response::Stop(vec![StopRun {
                worker: primary.clone(),
                task: slow.clone(),
                attempt: first
            }]))
        );
        // The loser's result never counts.
        let late = s.apply(42, report(&slow, primary.as_str(), first, 7));
        assert_eq!(late.outcome, Ok(Response::StaleReport));
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::Completed);
        assert_eq!(h.findings, 5 + 2);
        let ids: Vec<&str> = won.findings.iter().map(|f| f.record.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                format!("{slow}#{}.0", backup.attempt),
                format!("{slow}#{}.1", backup.attempt)
            ]
        );
    }

    #[test]
    fn when_the_primary_wins_the_backup_is_stopped_and_ignored() {
        let (mut s, hunt, slow) = straggler();
        let all = live(&["w0", "w1", "w2"]);
        let backups =
            crate::scheduler::speculate(&s, &all, 5_000, &crate::scheduler::Speculation::default());
        s.apply(
            40,
            Command::Speculate {
                assignments: backups,
                now_ms: 5_000,
            },
        );
        let backup = s.tasks[&slow].backup.clone().expect("a backup run");
        let (primary, first) = at(&s, &slow);
        let won = s.apply(41, report(&slow, primary.as_str(), first, 1));
        assert_eq!(
            won.outcome,
            Ok(Response::Stop(vec![StopRun {
                worker: backup.worker.clone(),
                task: slow.clone(),
                attempt: backup.attempt
            }]))
        );
        assert_eq!(
            s.apply(42, report(&slow, backup.worker.as_str(), backup.attempt, 9))
                .outcome,
            Ok(Response::StaleReport)
        );
        assert_eq!(s.hunts[&hunt].findings, 6);
    }

    #[test]
    fn a_failed_or_lost_backup_leaves_the_primary_running_and_vice_versa() {
        let (mut s, _hunt, slow) = straggler();
        let all = live(&["w0", "w1", "w2"]);
        let backups =
            crate::scheduler::speculate(&s, &all, 5_000, &crate::scheduler::Speculation::default());
        s.apply(
            40,
            Command::Speculate {
                assignments: backups,
                now_ms: 5_000,
            },
        );
        let backup = s.tasks[&slow].backup.clone().expect("a backup run");
        let (primary, _) = at(&s, &slow);
        // The primary's worker is lost: the backup becomes the primary.
        s.apply(
            41,
            Command::ReleaseWorker {
                worker: primary,
                reason: "lost".into(),
            },
        );
        assert_eq!(at(&s, &slow), (backup.worker.clone(), backup.attempt));
        assert!(s.tasks[&slow].backup.is_none());
    }

    #[test]
    fn a_canary_runs_first_and_the_hunt_widens_once_it_succeeds() {
        let mut s = replicated(10, false);
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.canary = Canary::Percent(20);
        let hunt = submit_spec(&mut s, 10, sp, 0);
        assert_eq!(s.hunts[&hunt].canary_tasks, 2);
        assert!(!s.hunts[&hunt].widened);
        let all = live(&["w0", "w1", "w2"]);
        assert_eq!(schedule(&mut s, 11, &all, 0), 2, "only the canary");
        let canary: Vec<TaskId> = s.hunts[&hunt]
            .tasks
            .iter()
            .filter(|t| s.tasks[*t].canary)
            .cloned()
            .collect();
        assert_eq!(canary.len(), 2);
        assert_ne!(
            canary[0].as_str().chars().last(),
            canary[1].as_str().chars().last(),
            "spread over the scope"
        );
        let (w, a) = at(&s, &canary[0]);
        s.apply(12, report(&canary[0], w.as_str(), a, 0));
        assert_eq!(
            schedule(&mut s, 13, &all, 10),
            0,
            "half a canary is not enough"
        );
        let (w, a) = at(&s, &canary[1]);
        s.apply(14, report(&canary[1], w.as_str(), a, 0));
        assert!(s.hunts[&hunt].widened);
        assert_eq!(
            schedule(&mut s, 15, &all, 20),
            6,
            "the rest, within six slots"
        );
    }

    #[test]
    fn a_failed_canary_pauses_the_hunt_and_resume_widens_it() {
        let mut s = replicated(10, false);
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.canary = Canary::Shards(1);
        sp.policy.max_attempts = 1;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        let all = live(&["w0", "w1", "w2"]);
        schedule(&mut s, 11, &all, 0);
        let canary = s.hunts[&hunt]
            .tasks
            .iter()
            .find(|t| s.tasks[*t].canary)
            .cloned()
            .expect("canary");
        let (w, a) = at(&s, &canary);
        s.apply(12, fail(&canary, &w, a, "host: disk gone", 5));
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::Paused);
        assert!(
            h.paused
                .as_deref()
                .unwrap_or_default()
                .contains("canary task"),
            "{:?}",
            h.paused
        );
        assert_eq!(schedule(&mut s, 13, &all, 10), 0);
        assert!(
            s.apply(14, Command::ResumeHunt { hunt: hunt.clone() })
                .outcome
                .is_ok()
        );
        assert!(s.hunts[&hunt].widened);
        assert_eq!(schedule(&mut s, 15, &all, 20), 6);
        assert!(matches!(
            s.apply(16, Command::ResumeHunt { hunt }).outcome,
            Err(Rejection::Conflict(_))
        ));
    }

    #[test]
    fn module_failures_past_the_threshold_pause_the_hunt_with_their_errors() {
        let mut s = replicated(6, false);
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.failure_threshold = 3;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        let all = live(&["w0", "w1", "w2"]);
        schedule(&mut s, 11, &all, 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        for (i, t) in tasks[..3].iter().enumerate() {
            let (w, a) = at(&s, t);
            s.apply(
                20 + i as u64,
                fail(
                    t,
                    &w,
                    a,
                    "trap in scan: panicked at 'boom' (wasm trap: unreachable)",
                    100,
                ),
            );
        }
        let h = &s.hunts[&hunt];
        assert_eq!(h.state, HuntState::Paused);
        assert_eq!(h.failures, 3);
        assert!(
            h.paused
                .as_deref()
                .unwrap_or_default()
                .contains("circuit breaker: 3 module failures")
        );
        assert_eq!(h.recent_failures.len(), 3);
        assert!(h.recent_failures[0].error.contains("boom"));
        // Paused: retries wait; running tasks may still report.
        assert_eq!(schedule(&mut s, 30, &all, 60_000), 0);
        let (w, a) = at(&s, &tasks[3]);
        s.apply(31, report(&tasks[3], w.as_str(), a, 1));
        assert_eq!(s.hunts[&hunt].findings, 1);
        s.apply(32, Command::ResumeHunt { hunt: hunt.clone() });
        assert_eq!(s.hunts[&hunt].state, HuntState::Running);
        assert_eq!(s.hunts[&hunt].failures, 0);
        assert_eq!(
            schedule(&mut s, 33, &all, 60_000),
            3,
            "the failed tasks retry"
        );
    }

    #[test]
    fn a_hunt_that_hits_its_result_limit_says_so_and_stops_growing() {
        let mut s = cluster();
        let mut sp = spec(&[("env", "demo")]);
        sp.limits.max_findings_per_hunt = 3;
        sp.limits.max_findings_per_task = 2;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        schedule(&mut s, 11, &live(&["w0", "w1"]), 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        let first = s.apply(12, report(&tasks[0], "w0", 1, 5));
        assert_eq!(s.hunts[&hunt].findings, 2, "per-task limit");
        assert!(
            s.tasks[&tasks[0]]
                .truncated
                .as_deref()
                .unwrap_or_default()
                .contains("kept 2 of 5")
        );
        assert!(s.hunts[&hunt].result_limit.is_none());
        let second = s.apply(13, report(&tasks[1], "w1", 1, 2));
        let h = &s.hunts[&hunt];
        assert_eq!(h.findings, 3, "per-hunt limit");
        assert_eq!(h.findings_dropped, 1);
        assert_eq!(first.findings.len() + second.findings.len(), 3);
        let limit = h.result_limit.as_deref().unwrap_or_default();
        assert!(
            limit.contains("result limit reached") && limit.contains("1 findings dropped"),
            "{limit}"
        );
        assert_eq!(h.state, HuntState::Completed);
        assert!(h.reason.contains("result limit reached"), "{}", h.reason);
    }

    #[test]
    fn the_hunt_byte_limit_is_honoured() {
        let mut s = cluster();
        let mut sp = spec(&[("env", "demo")]);
        // Each test finding is "r" + "t" + "user:x" = 8 bytes.
        sp.limits.max_result_bytes_per_hunt = 20;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        schedule(&mut s, 11, &live(&["w0", "w1"]), 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        s.apply(12, report(&tasks[0], "w0", 1, 4));
        let h = &s.hunts[&hunt];
        assert_eq!((h.findings, h.result_bytes, h.findings_dropped), (2, 16, 2));
        assert!(h.result_limit.is_some());
        // The `by` aggregate (11 bytes) did not fit either.
        assert!(h.aggregates.is_empty(), "{:?}", h.aggregates);
        assert!(h.aggregate_errors.contains_key("by"));
    }

    #[test]
    fn merged_aggregates_count_against_the_hunt_byte_limit() {
        let mut s = cluster();
        let mut sp = spec(&[("env", "demo")]);
        sp.limits.max_result_bytes_per_hunt = 150;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        schedule(&mut s, 11, &live(&["w0", "w1"]), 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        let keyed = |task: &TaskId, worker: &str, keys: std::ops::Range<u32>| {
            let mut command = report(task, worker, 1, 0);
            if let Command::RecordResult { report, .. } = &mut command
                && let Ok(partial) = &mut report.outcome
            {
                partial.aggregates = vec![Aggregate::new(
                    "by",
                    AggregateValue::counts_from(keys.map(|k| (format!("k{k}"), 1u64))),
                )];
            }
            command
        };
        // Ten keys of 2 bytes + 8 for the count, and the name: 102 bytes.
        s.apply(12, keyed(&tasks[0], "w0", 0..10));
        assert_eq!(s.hunts[&hunt].result_bytes, 102);
        // The same keys again add nothing: the merged size is what counts.
        let again = s.hunts[&hunt].clone();
        assert_eq!(again.aggregates["by"].approx_bytes(), 100);
        // Ten new keys would make 202 bytes: the partial is dropped whole.
        s.apply(13, keyed(&tasks[1], "w1", 10..20));
        let h = &s.hunts[&hunt];
        assert_eq!(h.result_bytes, 102, "nothing past the limit is kept");
        let AggregateValue::Counts(counts) = &h.aggregates["by"] else {
            panic!("counts expected");
        };
        assert_eq!(counts.len(), 10);
        assert!(
            h.aggregate_errors["by"].contains("incomplete"),
            "{:?}",
            h.aggregate_errors
        );
        let limit = h.result_limit.as_deref().unwrap_or_default();
        assert!(limit.contains("aggregate `by`"), "{limit}");
        assert_eq!(h.state, HuntState::Completed);
    }

    #[test]
    fn findings_get_only_the_bytes_that_aggregates_left() {
        let mut s = cluster();
        let mut sp = spec(&[("env", "demo")]);
        // The first report: 1 finding (8 bytes) and the `by` aggregate (11).
        sp.limits.max_result_bytes_per_hunt = 35;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        schedule(&mut s, 11, &live(&["w0", "w1"]), 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        s.apply(12, report(&tasks[0], "w0", 1, 1));
        assert_eq!(s.hunts[&hunt].result_bytes, 19);
        // 16 bytes are left: two more findings fit, not three.
        let Command::RecordResult { report: next, .. } = report(&tasks[1], "w1", 1, 3) else {
            unreachable!()
        };
        let Ok(partial) = &next.outcome else {
            unreachable!()
        };
        assert_eq!(s.hunt_room_for(&tasks[1], &partial.findings), 2);
        s.apply(13, report(&tasks[1], "w1", 1, 3));
        let h = &s.hunts[&hunt];
        assert_eq!((h.findings, h.result_bytes, h.findings_dropped), (3, 35, 1));
    }

    #[test]
    fn invalid_policies_are_refused_before_the_log() {
        let s = cluster();
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.max_attempts = 0;
        assert!(matches!(s.validate_submit(&sp), Err(Rejection::Invalid(_))));
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.canary = Canary::Percent(101);
        assert!(matches!(s.validate_submit(&sp), Err(Rejection::Invalid(_))));
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.deadline_ms = 0;
        assert!(matches!(s.validate_submit(&sp), Err(Rejection::Invalid(_))));
    }

    #[test]
    fn canary_sizes() {
        assert_eq!(Canary::None.size(10), 0);
        assert_eq!(Canary::Shards(3).size(10), 3);
        assert_eq!(Canary::Shards(10).size(10), 0, "all of it is no canary");
        assert_eq!(Canary::Percent(5).size(10), 1, "rounded up");
        assert_eq!(Canary::Percent(50).size(10), 5);
    }

    #[test]
    fn preview_reports_bytes_in_scope() {
        let s = cluster();
        let preview = s.preview(&spec(&[("env", "demo")])).expect("valid");
        assert_eq!(preview.bytes, 200);
    }

    #[test]
    fn replaying_retries_speculation_and_expiry_gives_the_same_state() {
        let run = || {
            let (mut s, _hunt, _slow) = straggler();
            let all = live(&["w0", "w1", "w2"]);
            let backups = crate::scheduler::speculate(
                &s,
                &all,
                5_000,
                &crate::scheduler::Speculation::default(),
            );
            s.apply(
                40,
                Command::Speculate {
                    assignments: backups,
                    now_ms: 5_000,
                },
            );
            s.apply(41, Command::ExpireHunts { now_ms: i64::MAX });
            s
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        assert!(a.hunts.values().all(|h| h.state.is_terminal()));
    }

    #[test]
    fn worker_error_texts_are_classified_for_old_reports() {
        for fault in [
            "deadline exceeded: module ran past its CPU deadline of 100 ms in scan()",
            "memory limit: module tried to grow its memory past 1048576 bytes in scan()",
            "trap in scan(): boom (wasm trap: unreachable)",
            "output limit: module exceeded 10 bytes of findings in finish()",
            "module rejected its parameters: threshold must be a number",
            "module failed while scanning: bad field",
            "module 00ab is not a usable hunt module: invalid module: does not compile",
        ] {
            assert!(is_module_fault(fault), "{fault}");
        }
        for host in [
            "shard win-dc01 does not exist",
            "wasm runtime: cannot start",
            "coordinator http://x: cannot fetch module",
        ] {
            assert!(!is_module_fault(host), "{host}");
        }
    }

    #[test]
    fn the_deadline_stops_running_tasks_and_names_a_pause() {
        let mut s = replicated(6, false);
        let mut sp = spec(&[("env", "demo")]);
        sp.policy.deadline_ms = 1_000;
        sp.policy.failure_threshold = 1;
        sp.policy.max_concurrency = 2;
        let hunt = submit_spec(&mut s, 10, sp, 0);
        schedule(&mut s, 11, &live(&["w0", "w1", "w2"]), 0);
        let tasks = s.hunts[&hunt].tasks.clone();
        let (w, a) = at(&s, &tasks[0]);
        s.apply(12, fail(&tasks[0], &w, a, "trap in scan(): boom", 10));
        assert_eq!(s.hunts[&hunt].state, HuntState::Paused);
        let (running_on, _) = at(&s, &tasks[1]);
        let applied = s.apply(13, Command::ExpireHunts { now_ms: 1_000 });
        assert_eq!(
            applied.outcome,
            Ok(Response::Stop(vec![StopRun {
                worker: running_on.clone(),
                task: tasks[1].clone(),
                attempt: 1
            }]))
        );
        let error = |t: &TaskId| match &s.tasks[t].state {
            TaskState::Failed { error } => error.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            error(&tasks[1]),
            format!("not scanned by the hunt's deadline; still running on {running_on}")
        );
        assert!(error(&tasks[2]).contains("the hunt was paused: circuit breaker"));
        assert!(error(&tasks[0]).contains("it was waiting: attempt 1"));
        assert_eq!(s.hunts[&hunt].state, HuntState::Failed, "nothing succeeded");
    }

    fn once(request: &str, command: Command, now_ms: i64) -> Command {
        Command::Once {
            request: RequestId::new(request),
            command: Box::new(command),
            now_ms,
        }
    }

    #[test]
    fn a_retried_write_with_the_same_request_id_applies_once() {
        let mut s = cluster();
        let submit = || Command::SubmitHunt {
            spec: spec(&[("env", "demo")]),
            now_ms: 10,
        };
        let first = s.apply(100, once("r-1", submit(), 10));
        let Ok(Response::Hunt { id, tasks: 2 }) = first.outcome.clone() else {
            panic!("{first:?}");
        };
        assert!(
            first
                .touched
                .contains(&Touched::Request(RequestId::new("r-1")))
        );
        // The retry commits later, under another leader: same answer, no
        // second hunt, nothing written but the expiry of old ids.
        let retry = s.apply(104, once("r-1", submit(), 20));
        assert_eq!(retry.outcome, first.outcome);
        assert!(retry.touched.is_empty(), "{:?}", retry.touched);
        assert_eq!(s.hunts.len(), 1);
        assert!(s.hunts.contains_key(&id));
        // Another id is another write.
        let other = s.apply(105, once("r-2", submit(), 30));
        assert!(matches!(other.outcome, Ok(Response::Hunt { .. })));
        assert_eq!(s.hunts.len(), 2);
        // A rejection is remembered too: the retry of a cancel of a hunt
        // that does not exist is still "not found", not applied again.
        let cancel = || Command::CancelHunt {
            hunt: HuntId::new("h-missing"),
            reason: String::new(),
            now_ms: 40,
        };
        let refused = s.apply(106, once("r-3", cancel(), 40));
        assert!(matches!(refused.outcome, Err(Rejection::NotFound(_))));
        assert_eq!(
            s.apply(107, once("r-3", cancel(), 41)).outcome,
            refused.outcome
        );
    }

    #[test]
    fn request_outcomes_are_forgotten_after_the_window() {
        let mut s = cluster();
        let submit = || Command::SubmitHunt {
            spec: spec(&[("env", "demo")]),
            now_ms: 10,
        };
        s.apply(100, once("r-1", submit(), 10));
        assert_eq!(s.requests.len(), 1);
        // Past the window the id is forgotten (and its row deleted), so the
        // same id is a new write.
        let later = 10 + REQUEST_WINDOW_MS + 1;
        let again = s.apply(200, once("r-1", submit(), later));
        assert!(
            again
                .touched
                .contains(&Touched::Request(RequestId::new("r-1")))
        );
        assert_eq!(s.hunts.len(), 2);
        assert_eq!(s.requests.len(), 1);
        assert_eq!(
            s.requests.get(&RequestId::new("r-1")).map(|r| r.index),
            Some(200)
        );
    }

    #[test]
    fn the_recorded_hunt_clock_only_moves_forward() {
        let mut s = State::default();
        let tick = s.apply(1, Command::Tick { now_ms: 10_000 });
        // Besides the clock, a new state's first command writes triage's
        // own first rows.
        assert!(tick.touched.contains(&Touched::Clock));
        assert!(
            tick.touched
                .iter()
                .all(|t| matches!(t, Touched::Clock | Touched::Triage(_)))
        );
        assert_eq!(s.clock_ms, 10_000);
        // A leader with an earlier reading records nothing.
        let stale = s.apply(2, Command::Tick { now_ms: 9_000 });
        assert!(matches!(stale.outcome, Err(Rejection::Conflict(_))));
        assert!(stale.touched.is_empty());
        assert_eq!(s.clock_ms, 10_000);
    }

    #[test]
    fn finished_hunts_are_deleted_with_their_tasks_and_findings() {
        let mut s = cluster();
        let done = submit(&mut s, 10);
        assign_all(&mut s, &done);
        let tasks = s.hunts[&done].tasks.clone();
        s.apply(11, report(&tasks[0], "w0", 1, 2));
        s.apply(12, report(&tasks[1], "w1", 1, 1));
        assert_eq!(s.hunts[&done].state, HuntState::Completed);
        let running = submit(&mut s, 20);

        // A running hunt refuses the whole command.
        let refused = s.apply(
            21,
            Command::DeleteHunts {
                hunts: vec![done.clone(), running.clone()],
            },
        );
        assert!(
            matches!(&refused.outcome, Err(Rejection::Conflict(m)) if m.contains("cancel it first")),
            "{refused:?}"
        );
        assert!(s.hunts.contains_key(&done));
        // The module is in use: it stays.
        let digest = s.hunts[&done].module.clone();
        let in_use = s.apply(
            22,
            Command::DeleteModule {
                digest: digest.clone(),
            },
        );
        assert!(
            matches!(&in_use.outcome, Err(Rejection::Conflict(m)) if m.contains(done.as_str()))
        );

        let deleted = s.apply(
            23,
            Command::DeleteHunts {
                hunts: vec![done.clone()],
            },
        );
        assert_eq!(deleted.outcome, Ok(Response::Done));
        assert!(!s.hunts.contains_key(&done));
        assert!(tasks.iter().all(|t| !s.tasks.contains_key(t)));
        assert!(deleted.touched.contains(&Touched::FindingsOf(done.clone())));
        assert!(
            deleted
                .touched
                .contains(&Touched::HuntDefinition(done.clone()))
        );
        let missing = s.apply(24, Command::DeleteHunts { hunts: vec![done] });
        assert!(matches!(missing.outcome, Err(Rejection::NotFound(_))));

        // Once the running hunt is gone too, the module can go.
        s.apply(
            25,
            Command::CancelHunt {
                hunt: running.clone(),
                reason: String::new(),
                now_ms: 50,
            },
        );
        s.apply(
            26,
            Command::DeleteHunts {
                hunts: vec![running],
            },
        );
        let gone = s.apply(
            27,
            Command::DeleteModule {
                digest: digest.clone(),
            },
        );
        assert_eq!(gone.outcome, Ok(Response::Done));
        assert!(!s.modules.contains_key(&digest));
    }

    #[test]
    fn the_first_upload_of_a_name_owns_it_and_the_signing_policy_applies_at_apply_time() {
        let mut s = State::default();
        let upload = |module: ModuleRecord, who: &str, admin: bool| Command::UploadModuleAs {
            module,
            uploader: who.into(),
            admin,
            signature: None,
        };
        // Two first uploads race: the first applied owns the name.
        let first = s.apply(1, upload(module("m", "1", 1), "hunter:alice", false));
        assert!(first.outcome.is_ok());
        assert!(first.touched.contains(&Touched::ModuleOwner("m".into())));
        let second = s.apply(2, upload(module("m", "2", 2), "hunter:mallory", false));
        assert!(
            matches!(&second.outcome, Err(Rejection::Denied(m)) if m.contains("belongs to hunter:alice")),
            "{second:?}"
        );
        assert!(
            s.apply(3, upload(module("m", "2", 2), "hunter:alice", false))
                .outcome
                .is_ok()
        );
        assert!(
            s.apply(4, upload(module("m", "3", 3), "admin:ops", true))
                .outcome
                .is_ok()
        );
        assert_eq!(
            s.trust.owners["m"], "hunter:alice",
            "an admin does not take the name"
        );
        // Legacy rows: versions without an owner take admins only.
        s.apply(
            5,
            Command::UploadModule {
                module: module("old", "1", 9),
            },
        );
        let legacy = s.apply(6, upload(module("old", "2", 10), "hunter:alice", false));
        assert!(
            matches!(legacy.outcome, Err(Rejection::Denied(_))),
            "{legacy:?}"
        );
        // Signatures required: an unsigned upload is refused; a bad one always.
        s.apply(
            7,
            Command::SetModulePolicy {
                require_signed: true,
            },
        );
        let unsigned = s.apply(8, upload(module("n", "1", 11), "hunter:bob", false));
        assert!(
            matches!(&unsigned.outcome, Err(Rejection::Denied(m)) if m.contains("signed modules only")),
            "{unsigned:?}"
        );
        let bad = s.apply(
            9,
            Command::UploadModuleAs {
                module: module("n", "1", 11),
                uploader: "hunter:bob".into(),
                admin: false,
                signature: Some(vec![0; 64]),
            },
        );
        assert!(
            matches!(&bad.outcome, Err(Rejection::Denied(m)) if m.contains("does not verify")),
            "{bad:?}"
        );
        assert!(
            !s.trust.owners.contains_key("n"),
            "a refused upload claims nothing"
        );
    }

    #[test]
    fn retention_lets_go_of_the_oldest_finished_hunts_by_count_and_age() {
        let mut s = cluster();
        let mut ids = Vec::new();
        for (n, finished) in [(10, 1_000), (20, 2_000), (30, 3_000), (40, 4_000)] {
            let id = submit(&mut s, n);
            s.apply(
                n + 1,
                Command::CancelHunt {
                    hunt: id.clone(),
                    reason: String::new(),
                    now_ms: finished,
                },
            );
            ids.push(id);
        }
        let running = submit(&mut s, 50);
        // Keep the newest 2: the two oldest go, oldest first.
        assert_eq!(
            s.hunts_past_retention(2, 0, 5_000),
            vec![ids[0].clone(), ids[1].clone()]
        );
        // Finished more than 1.5 s before 4.5 s: the first two go as well.
        assert_eq!(
            s.hunts_past_retention(0, 1_500, 4_500),
            vec![ids[0].clone(), ids[1].clone()]
        );
        // Both limits: either one lets a hunt go.
        assert_eq!(
            s.hunts_past_retention(3, 2_500, 4_500),
            vec![ids[0].clone()]
        );
        // No limits: nothing; a running hunt never.
        assert!(s.hunts_past_retention(0, 0, i64::MAX).is_empty());
        assert!(!s.hunts_past_retention(1, 1, i64::MAX).contains(&running));
    }

    #[test]
    fn findings_the_leader_cuts_for_the_hunt_limit_are_counted_as_if_dropped_on_apply() {
        let mut base = cluster();
        let mut sp = spec(&[("env", "demo")]);
        sp.limits.max_findings_per_hunt = 3;
        let hunt = submit_spec(&mut base, 10, sp, 0);
        schedule(&mut base, 11, &live(&["w0", "w1"]), 0);
        let tasks = base.hunts[&hunt].tasks.clone();
        base.apply(12, report(&tasks[0], "w0", 1, 2));

        // As proposed before: all five findings go through the log.
        let mut whole = base.clone();
        let Command::RecordResult {
            report: full,
            now_ms,
        } = report(&tasks[1], "w1", 1, 5)
        else {
            unreachable!()
        };
        let mut cut = full.clone();
        let Ok(partial) = &mut cut.outcome else {
            unreachable!()
        };
        let room = base.hunt_room_for(&tasks[1], &partial.findings);
        assert_eq!(room, 1, "one more fits the hunt");
        partial.findings.truncate(room);
        let applied_whole = whole.apply(
            13,
            Command::RecordResult {
                report: full,
                now_ms,
            },
        );

        // As the leader proposes it now: one finding and a count.
        let mut trimmed = base.clone();
        let applied_cut = trimmed.apply(
            13,
            Command::RecordTrimmedResult {
                report: cut,
                trimmed: 4,
                now_ms,
            },
        );
        assert_eq!(applied_cut.findings, applied_whole.findings);
        assert_eq!(trimmed, whole, "the same state either way");
        let h = &trimmed.hunts[&hunt];
        assert_eq!((h.findings, h.findings_dropped), (3, 4));
        assert!(
            h.result_limit
                .as_deref()
                .unwrap_or_default()
                .contains("4 findings dropped")
        );
    }
}
