//! The wasm sandbox: one shared wasmtime `Engine` with a pooling allocator
//! and epoch interruption, modules compiled once per digest (the compiled
//! artifact cached on disk) into an `InstancePre`, and a fresh `Store` per
//! task with memory, CPU and output limits.
//!
//! Guests reach only the host functions [`link`] lists: the hunt host
//! interface and the part of WASI a Rust std `wasm32-wasip2` guest imports
//! (stdio, environment, exit, poll, random), each bounded. Clocks are linked
//! only to refuse by name: epoch deadlines do not interrupt a host call, so
//! a host function that waits (a sleep, a poll on a timer) would let a guest
//! outlive its deadline. Filesystem, sockets and HTTP are not linked at all:
//! a module importing them is refused at load.
//!
//! What wasmtime copies out of the guest has two separate bounds: each host
//! call receives at most [`MAX_HOSTCALL_BYTES`], and the value a `scan()` or
//! `finish()` call returns is copied only up to what is left of the task's
//! output limit. wasmtime has one "hostcall fuel" setting for both; a call
//! hook on the store switches it at every crossing (see [`bound_copies`]).
//!
//! Every way a task can fail has its own [`TaskFailure`] variant: deadline
//! exceeded, memory limit, trap, output limit, invalid module, plus the
//! module's own errors and cancellation.

use crate::error::WorkerError;
pub use crate::module_cache::ModuleCacheConfig;
use crate::module_cache::{DiskCache, MemoryCache};
use crate::prefilter::{Clause, MatchOp, Prefilter, Projection};
use crate::shard::{ColumnBatcher, ProjectedColumns, ShardStore};
use quarry_contract::intel::IntelSets;
use quarry_proto::{HuntId, ModuleDigest};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{
    Component, ComponentExportIndex, HasData, HasSelf, Linker, Resource, ResourceTable,
};
use wasmtime::{
    CallHook, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    WasmBacktrace,
};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "hunt",
});

use exports::quarry::hunt::module as guest;
use quarry::hunt::types as wit;

/// How often the epoch advances; the CPU deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Epoch ticks between two looks at a running task's cancel flag (and its
/// CPU deadline): a cancelled guest stops within about this long, even in
/// the middle of a call that never returns.
const CANCEL_CHECK_TICKS: u64 = 10;
/// Events handed to the guest per call.
pub const BATCH_SIZE: usize = 1024;
/// Largest linear memory any task may ask for.
pub const MAX_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;
/// Linear memories one task (component) may define; a Rust std component
/// defines one.
pub const MAX_MEMORIES_PER_TASK: u32 = 2;
/// Core module instances one task (component) may create.
pub const MAX_CORE_INSTANCES_PER_TASK: u32 = 16;
/// Tables one task (component) may define.
pub const MAX_TABLES_PER_TASK: u32 = 16;
/// Table elements over all of a task's tables.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Bytes of stdout (and, separately, of stderr) kept per task. A module that
/// writes more fails with [`TaskFailure::OutputLimit`] naming the stream: the
/// log stays bounded and a module stuck printing does not burn its whole CPU
/// budget.
pub const STDIO_CAPTURE_BYTES: usize = 64 * 1024;
/// Lines of `host.log` kept per task.
const MAX_LOG_LINES: usize = 500;
/// Structured fields kept per `host.log` line.
const MAX_LOG_FIELDS: usize = 16;
/// Frames of a wasm backtrace kept in a trap reason.
const MAX_BACKTRACE_FRAMES: usize = 24;
/// Characters of a module's trap message kept in a trap reason.
const MAX_TRAP_MESSAGE: usize = 2048;
/// Bytes one `wasi:random` call may ask for (std asks for 16 to seed a
/// `HashMap`).
pub const MAX_RANDOM_BYTES: u64 = 64 * 1024;
/// What one host call may receive from the guest, counted as wasmtime
/// counts the host's copies (string bytes plus the size of every list
/// element on the host): wasmtime's "hostcall fuel". Copying stops there and
/// the task fails with [`TaskFailure::HostCallLimit`]. The same in every
/// guest call, whatever is left of the task's output limit.
pub const MAX_HOSTCALL_BYTES: usize = 1024 * 1024;
/// What `describe()` may return, counted the same way.
pub const MAX_DESCRIPTOR_BYTES: usize = 4 * 1024 * 1024;
/// Most fields a module may declare: each is projected for every event
/// that passes the prefilter (`sigma` reads about 500).
pub const MAX_FIELDS: usize = 1024;
/// Most prefilter clauses a module may declare.
pub const MAX_PREFILTER_CLAUSES: usize = 256;
/// Most any-of groups a module may declare.
pub const MAX_ANY_OF_GROUPS: usize = 64;
/// Most clauses in one any-of group.
pub const MAX_GROUP_CLAUSES: usize = 64;
/// Most values over all prefilter clauses and groups.
pub const MAX_PREFILTER_VALUES: usize = 16 * 1024;
/// Longest field name (a dotted path) in `fields` or a clause.
pub const MAX_FIELD_NAME_BYTES: usize = 256;
/// The optional export through which a module plans a task's projection
/// from its parameters (contract 0.2.2). Looked up by name, so modules
/// without it (0.2.0, 0.2.1, or the plain `hunt` world) still load; the
/// lookup matches any semver-compatible version.
const PLANNER_INTERFACE: &str = "quarry:hunt/planner@0.2.2";
/// The optional export through which a module lets the host run another
/// task of the same hunt on its instance (contract 0.2.3).
const REUSE_INTERFACE: &str = "quarry:hunt/reuse@0.2.3";
/// The optional export through which a module takes its batches by column
/// (contract 0.2.4): a few copies into guest memory per batch instead of
/// an allocation per value.
const COLUMNAR_INTERFACE: &str = "quarry:hunt/columnar@0.2.4";
/// `columnar.scan-columns`.
type ScanColumnsFn =
    wasmtime::component::TypedFunc<(wit::EventColumns,), (Result<Vec<wit::Finding>, String>,)>;
/// Set to `1`, the engine writes a perf map naming the compiled guest
/// functions, so `perf record` / `perf report` show where a module spends
/// its time (docs/module-contract.md).
pub const PERFMAP_ENV: &str = "QUARRY_WASM_PERFMAP";

/// How long an instance kept for its hunt's next task waits for it before
/// it is dropped. A hunt's tasks on one worker follow each other within
/// milliseconds while it has shards left there.
pub const WARM_IDLE: Duration = Duration::from_secs(30);
/// Why clocks are refused, for the hunter.
const NO_CLOCK: &str = "the sandbox offers no clock (a module must not sleep, wait or read the time; use event timestamps)";

/// What a task may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLimits {
    /// Guest CPU time (wall time inside guest calls).
    pub cpu: Duration,
    /// Cap on the task's linear memory, all its memories together.
    pub memory_bytes: u64,
    /// Findings kept; more are counted and dropped.
    pub max_findings: usize,
    /// Bytes of findings and aggregates a task may return, each element
    /// charged for its host copy as well as its strings (so empty strings
    /// are not free); more fails the task with [`TaskFailure::OutputLimit`].
    /// It also bounds the host's copy of each result: what is left of it.
    pub max_output_bytes: u64,
}

/// The worker's own maximums: whatever a hunt asks for is clamped to these.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeConfig {
    /// Longest CPU deadline.
    pub max_cpu: Duration,
    /// Largest linear memory (never above [`MAX_MEMORY_BYTES`], which the
    /// pooling allocator reserves per memory).
    pub max_memory_bytes: u64,
    /// Most findings kept per task.
    pub max_findings: usize,
    /// Most output bytes per task.
    pub max_output_bytes: u64,
    /// Compiled modules kept loaded in memory (about their code size); the
    /// least recently used are dropped beyond it and reloaded when needed.
    pub max_loaded_module_bytes: u64,
    /// Hand batches by column to modules that export `columnar` (contract
    /// 0.2.4); `false` uses `scan` for every module (to measure the
    /// difference: the events a module sees are the same).
    pub column_batches: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_cpu: Duration::from_secs(600),
            max_memory_bytes: 512 * 1024 * 1024,
            max_findings: 100_000,
            max_output_bytes: 64 * 1024 * 1024,
            max_loaded_module_bytes: 512 * 1024 * 1024,
            column_batches: true,
        }
    }
}

impl RuntimeConfig {
    /// `asked`, with every limit clamped to this worker's maximum.
    pub fn clamp(&self, asked: TaskLimits) -> TaskLimits {
        TaskLimits {
            cpu: asked.cpu.min(self.max_cpu),
            memory_bytes: asked
                .memory_bytes
                .min(self.max_memory_bytes)
                .min(MAX_MEMORY_BYTES),
            max_findings: asked.max_findings.min(self.max_findings),
            max_output_bytes: asked.max_output_bytes.min(self.max_output_bytes),
        }
    }
}

/// The digest a module's bytes are known by: the lowercase hex sha256.
pub fn module_digest(bytes: &[u8]) -> ModuleDigest {
    ModuleDigest::new(hex::encode(Sha256::digest(bytes)))
}

/// The guest export a failure happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Instantiation (the component's start-up code).
    Instantiate,
    /// `describe()`.
    Describe,
    /// `plan(params)` (the optional `planner` export).
    Plan,
    /// `init(params)`.
    Init,
    /// `scan(batch)`.
    Scan,
    /// `finish()`.
    Finish,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Instantiate => "instantiation",
            Call::Describe => "describe()",
            Call::Plan => "plan()",
            Call::Init => "init()",
            Call::Scan => "scan()",
            Call::Finish => "finish()",
        })
    }
}

/// Which output a module overran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// The bytes of its findings and aggregates.
    Findings,
    /// What it wrote to stdout.
    Stdout,
    /// What it wrote to stderr.
    Stderr,
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputKind::Findings => "findings and aggregates",
            OutputKind::Stdout => "stdout",
            OutputKind::Stderr => "stderr",
        })
    }
}

/// Why a task did not produce a result. Each cause has its own variant; the
/// text names it (it becomes the task's error for the hunter).
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    /// The guest ran past its CPU deadline and was interrupted.
    #[error("deadline exceeded: module ran past its CPU deadline of {} ms in {call}", limit.as_millis())]
    DeadlineExceeded {
        /// Where.
        call: Call,
        /// The deadline.
        limit: Duration,
    },
    /// The guest tried to grow its linear memory past the cap.
    #[error("memory limit: module tried to grow its memory past {limit_bytes} bytes in {call}")]
    MemoryLimit {
        /// Where.
        call: Call,
        /// The cap.
        limit_bytes: u64,
    },
    /// The guest trapped (a Rust panic, an abort, an out-of-bounds access…).
    #[error("trap in {call}: {message}{}", backtrace.as_deref().map(|b| format!("\nwasm backtrace:\n{b}")).unwrap_or_default())]
    Trap {
        /// Where.
        call: Call,
        /// The module's own message (a panic's text from stderr) or the trap kind.
        message: String,
        /// The wasm backtrace, bounded, when wasmtime captured one.
        backtrace: Option<String>,
    },
    /// The guest produced more output than the task allows.
    #[error("output limit: module exceeded {limit_bytes} bytes of {kind} in {call}")]
    OutputLimit {
        /// Where.
        call: Call,
        /// Which output.
        kind: OutputKind,
        /// The cap.
        limit_bytes: u64,
    },
    /// The guest called a host function the sandbox refuses (a clock), or
    /// asked one for more than its bound (`wasi:random` bytes).
    #[error("host call refused in {call}: {function}: {reason}")]
    HostCallDenied {
        /// Where.
        call: Call,
        /// The host function, as `interface.function`.
        function: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The guest passed more data to one host call than the sandbox copies
    /// ([`MAX_HOSTCALL_BYTES`]).
    #[error(
        "host call limit: module passed more than {limit_bytes} bytes to one host call in {call}"
    )]
    HostCallLimit {
        /// Where.
        call: Call,
        /// The bound.
        limit_bytes: u64,
    },
    /// The module cannot be used at all (does not compile, link or describe
    /// itself, or cannot be instantiated).
    #[error("invalid module {digest}: {detail}")]
    InvalidModule {
        /// The module.
        digest: ModuleDigest,
        /// What is wrong.
        detail: String,
    },
    /// `init` returned an error for the hunt's parameters.
    #[error("module rejected its parameters: {0}")]
    Rejected(String),
    /// The hunt's `intel.<set>` parameters cannot be parsed.
    #[error("intel sets in the hunt's parameters: {0}")]
    BadIntel(String),
    /// `finish` returned an aggregate no SDK builds (a malformed sketch, a
    /// top-k with k out of range).
    #[error("module returned a malformed aggregate: {0}")]
    BadOutput(String),
    /// `scan` returned an error.
    #[error("module failed while scanning: {0}")]
    ModuleError(String),
    /// The task was cancelled.
    #[error("task cancelled")]
    Cancelled,
    /// The host failed (the shard could not be read, the sandbox is broken).
    #[error(transparent)]
    Host(WorkerError),
}

impl From<WorkerError> for TaskFailure {
    fn from(error: WorkerError) -> Self {
        match error {
            WorkerError::Cancelled => TaskFailure::Cancelled,
            WorkerError::InvalidModule { digest, detail } => {
                TaskFailure::InvalidModule { digest, detail }
            }
            other => TaskFailure::Host(other),
        }
    }
}

impl From<crate::shard::ShardError> for TaskFailure {
    fn from(error: crate::shard::ShardError) -> Self {
        TaskFailure::Host(WorkerError::Shard(error))
    }
}

impl From<TaskFailure> for WorkerError {
    fn from(failure: TaskFailure) -> Self {
        match failure {
            TaskFailure::Cancelled => WorkerError::Cancelled,
            TaskFailure::Host(error) => error,
            TaskFailure::InvalidModule { digest, detail } => WorkerError::InvalidModule {
                digest,
                detail: format!("invalid module: {detail}"),
            },
            other => WorkerError::Task(other.to_string()),
        }
    }
}
/// What a module said about itself.
#[derive(Clone, Debug)]
pub struct ModuleDescription {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Its one-sentence description.
    pub description: String,
    /// Fields it reads, in `event.values` order.
    pub fields: Vec<String>,
    /// Host-side prefilter.
    pub prefilter: Prefilter,
    /// The prefilter's clauses as declared, for skipping whole blocks by
    /// their index statistics.
    pub clauses: Vec<Clause>,
    /// The prefilter's any-of groups as declared, for the same.
    pub any_of: Vec<Vec<Clause>>,
    /// ATT&CK ids.
    pub techniques: Vec<String>,
}

/// A compiled module ready to instantiate.
pub struct LoadedModule {
    digest: ModuleDigest,
    pre: HuntPre<TaskData>,
    description: ModuleDescription,
    /// The declared fields, deduplicated for projecting events.
    projection: Projection,
    /// It imports `quarry:hunt/history`: scheduled runs fetch its baseline.
    uses_history: bool,
    /// Its `planner.plan` export, if it has one.
    planner: Option<ComponentExportIndex>,
    /// Its `reuse.reset` export, if it has one.
    reuse: Option<ComponentExportIndex>,
    /// Its `columnar.scan-columns` export, if it has one.
    columnar: Option<ComponentExportIndex>,
}

impl LoadedModule {
    /// Whether the module reads its schedule's history.
    pub fn uses_history(&self) -> bool {
        self.uses_history
    }

    /// The module's digest.
    pub fn digest(&self) -> &ModuleDigest {
        &self.digest
    }

    /// What the module declared.
    pub fn description(&self) -> &ModuleDescription {
        &self.description
    }
}

/// What one task runs over.
#[derive(Clone, Copy, Debug)]
pub struct TaskInput<'a> {
    /// Parameters for the module's `init`.
    pub params: &'a [(String, String)],
    /// Resource limits.
    pub limits: TaskLimits,
    /// The shard to scan.
    pub shard: &'a str,
    /// Only events in `[start, end)`.
    pub time_range: Option<(i64, i64)>,
    /// The hunt the task belongs to. Tasks of one hunt with the same
    /// module, parameters and limits run one after another on one instance
    /// when the module allows it (contract 0.2.3's `reuse`), which spares
    /// them instantiation, `plan` and most of `init`. `None`: a fresh
    /// instance.
    pub hunt: Option<&'a HuntId>,
}

/// What a scheduled run adds to a task (docs/schedules.md).
#[derive(Clone, Debug, Default)]
pub struct Incremental {
    /// Scan only events at or after this ingest offset (the shard's
    /// watermark); 0: all.
    pub from_offset: u64,
    /// The schedule's history (`quarry:hunt/history`); `None` for a
    /// one-off hunt.
    pub baseline: Option<Arc<Baseline>>,
}

/// The merged aggregates of a schedule's earlier runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    /// Runs merged.
    pub runs: u32,
    /// Their aggregates by name.
    pub aggregates: quarry_contract::aggregate::Merged,
}

/// The result of a task that ran to the end.
#[derive(Debug, Default)]
pub struct TaskOutput {
    /// The shard's next ingest offset when the scan started (where the
    /// next scheduled run starts).
    pub end_offset: u64,
    /// Findings (at most the limit).
    pub findings: Vec<wit::Finding>,
    /// Aggregates from `finish`, checked and normalised.
    pub aggregates: Vec<quarry_contract::Aggregate>,
    /// Events read from the shard.
    pub events_scanned: u64,
    /// Shard blocks decoded.
    pub blocks_read: u64,
    /// Shard blocks skipped undecoded (time range or prefilter ruled them out).
    pub blocks_skipped: u64,
    /// Compressed bytes of the blocks read from disk.
    pub bytes_read: u64,
    /// Events that passed the prefilter.
    pub events_matched: u64,
    /// Fields projected for each of them: the module's declared fields, or
    /// those its `plan` chose for this task.
    pub fields_projected: usize,
    /// Whether findings beyond the limit were dropped.
    pub findings_truncated: bool,
    /// How many findings beyond the limit were dropped.
    pub findings_dropped: u64,
    /// What the findings and aggregates returned cost against
    /// [`TaskLimits::max_output_bytes`]: their strings' bytes plus the host's
    /// copy of every element (see [`finding_bytes`]).
    pub output_bytes: u64,
    /// Module log lines and captured stdout/stderr.
    pub log: Vec<String>,
    /// The task ran on an instance an earlier task of its hunt had used
    /// (see [`TaskInput::hunt`]).
    pub reused_instance: bool,
    /// The batches went to the module by column (`columnar.scan-columns`,
    /// contract 0.2.4) rather than through `scan`.
    pub batches_by_column: bool,
}

/// Per-task host state.
struct TaskData {
    wasi: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Bytes of stdout and stderr that earlier tasks on this instance have
    /// already reported.
    stdio_reported: [usize; 2],
    table: ResourceTable,
    limits: MemoryLimiter,
    log: Vec<String>,
    log_dropped: usize,
    /// Set by the agent to stop the task; read by the epoch-deadline callback.
    cancel: Arc<AtomicBool>,
    /// When the current guest call runs out of CPU budget (set by
    /// `Guest::arm`; `None` outside tasks).
    cpu_deadline: Option<Instant>,
    /// The callback stopped the guest because the task was cancelled.
    cancelled: bool,
    /// A host function refused the guest (the trap it returned says the
    /// same; kept here so the failure is named whatever wraps the error).
    refused: Option<Refusal>,
    /// The intel sets shipped with the task.
    intel: IntelSets,
    /// The schedule's history, for a scheduled run.
    baseline: Option<Arc<Baseline>>,
    /// What wasmtime may copy of the value the current guest export returns
    /// (its hostcall fuel outside host calls; see [`bound_copies`]).
    result_bound: usize,
}

impl TaskData {
    /// Clears what one task left behind, before the next task of the same
    /// hunt runs on this instance.
    fn next_task(&mut self) {
        self.log.clear();
        self.log_dropped = 0;
        self.cancelled = false;
        self.refused = None;
        self.cpu_deadline = None;
        self.result_bound = MAX_HOSTCALL_BYTES;
    }
}

impl WasiView for TaskData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for TaskData {}

/// A host function's refusal: which function and why.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{function}: {reason}")]
struct Refusal {
    function: &'static str,
    reason: String,
}

impl TaskData {
    /// Records and returns the refusal of `function`, as the trap that ends
    /// the guest call.
    fn refuse(&mut self, function: &'static str, reason: impl Into<String>) -> wasmtime::Error {
        let refusal = Refusal {
            function,
            reason: reason.into(),
        };
        tracing::debug!(%refusal, "host call refused");
        self.refused = Some(refusal.clone());
        wasmtime::Error::new(refusal)
    }

    fn bounded_random(&mut self, function: &'static str, len: u64) -> wasmtime::Result<()> {
        if len > MAX_RANDOM_BYTES {
            return Err(self.refuse(
                function,
                format!("asked for {len} random bytes; at most {MAX_RANDOM_BYTES} per call"),
            ));
        }
        Ok(())
    }
}

// No clock: every function refuses, so nothing can wait in the host.
impl monotonic_clock::Host for TaskData {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Err(self.refuse("wasi:clocks/monotonic-clock.now", NO_CLOCK))
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Err(self.refuse("wasi:clocks/monotonic-clock.resolution", NO_CLOCK))
    }

    fn subscribe_instant(
        &mut self,
        _when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        Err(self.refuse("wasi:clocks/monotonic-clock.subscribe-instant", NO_CLOCK))
    }

    fn subscribe_duration(
        &mut self,
        _when: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        Err(self.refuse("wasi:clocks/monotonic-clock.subscribe-duration", NO_CLOCK))
    }
}

impl wall_clock::Host for TaskData {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Err(self.refuse("wasi:clocks/wall-clock.now", NO_CLOCK))
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Err(self.refuse("wasi:clocks/wall-clock.resolution", NO_CLOCK))
    }
}

// Random bytes are generated on the host: bound how many one call may ask.
impl random::Host for TaskData {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bounded_random("wasi:random/random.get-random-bytes", len)?;
        random::Host::get_random_bytes(self.wasi.random(), len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        random::Host::get_random_u64(self.wasi.random())
    }
}

impl insecure::Host for TaskData {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bounded_random("wasi:random/insecure.get-insecure-random-bytes", len)?;
        insecure::Host::get_insecure_random_bytes(self.wasi.random(), len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        insecure::Host::get_insecure_random_u64(self.wasi.random())
    }
}

impl insecure_seed::Host for TaskData {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        insecure_seed::Host::insecure_seed(self.wasi.random())
    }
}

/// `wasi:io` host state: the resource table.
struct IoTable;

impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links every host function a module can reach, and nothing else
/// (docs/module-contract.md lists them with their bounds):
///
/// - `quarry:hunt/host`: `log` (lines and fields capped), `intel-contains`,
///   `intel-sets`;
/// - `quarry:hunt/history` (0.2.1): the schedule's baseline, empty for a
///   one-off hunt;
/// - `wasi:io/{error,poll,streams}` and `wasi:cli/{stdin,stdout,stderr}`:
///   stdin is closed and stdout/stderr are bounded in-memory pipes, so every
///   pollable a guest can get is ready at once and neither `poll` nor a
///   blocking read or write ever waits;
/// - `wasi:cli/{environment,exit,terminal-*}`: empty environment and
///   arguments, no terminals; `exit` ends the task;
/// - `wasi:random/{random,insecure,insecure-seed}`: at most
///   [`MAX_RANDOM_BYTES`] per call;
/// - `wasi:clocks/{monotonic-clock,wall-clock}`: every function refuses
///   ([`TaskFailure::HostCallDenied`]), as std's `sleep` would otherwise
///   block in the host where no deadline reaches.
///
/// What one call may copy in from the guest is bounded by the store's
/// hostcall fuel, [`MAX_HOSTCALL_BYTES`] in every host call
/// ([`bound_copies`]).
fn link(linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random as rand, sync::io};

    let l = linker;
    io::error::add_to_linker::<TaskData, IoTable>(l, |t| &mut t.table)?;
    io::poll::add_to_linker::<TaskData, IoTable>(l, |t| &mut t.table)?;
    io::streams::add_to_linker::<TaskData, IoTable>(l, |t| &mut t.table)?;
    cli::environment::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::exit::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::stdin::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::stdout::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::stderr::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::terminal_input::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::terminal_output::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::terminal_stdin::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::terminal_stdout::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    cli::terminal_stderr::add_to_linker::<TaskData, WasiCli>(l, WasiCliView::cli)?;
    clocks::monotonic_clock::add_to_linker::<TaskData, HasSelf<TaskData>>(l, |t| t)?;
    clocks::wall_clock::add_to_linker::<TaskData, HasSelf<TaskData>>(l, |t| t)?;
    rand::random::add_to_linker::<TaskData, HasSelf<TaskData>>(l, |t| t)?;
    rand::insecure::add_to_linker::<TaskData, HasSelf<TaskData>>(l, |t| t)?;
    rand::insecure_seed::add_to_linker::<TaskData, HasSelf<TaskData>>(l, |t| t)?;
    Hunt::add_to_linker::<_, HasSelf<_>>(l, |state| state)
}

impl quarry::hunt::host::Host for TaskData {
    fn log(&mut self, level: wit::LogLevel, message: String, fields: Vec<(String, String)>) {
        // Host calls are not interrupted by epochs: keep this bounded.
        if self.log.len() >= MAX_LOG_LINES {
            self.log_dropped += 1;
            return;
        }
        let mut message = message;
        // Fields in logfmt after the message; values quoted when they
        // contain spaces, quotes or `=`, so a line parses back.
        for (key, value) in fields.iter().take(MAX_LOG_FIELDS) {
            let key: String = key
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if value.is_empty() || value.contains([' ', '"', '=', '\n', '\t']) {
                message.push_str(&format!(" {key}={value:?}"));
            } else {
                message.push_str(&format!(" {key}={value}"));
            }
        }
        message.truncate(message.floor_char_boundary(1024));
        let level = match level {
            wit::LogLevel::Trace => "trace",
            wit::LogLevel::Debug => "debug",
            wit::LogLevel::Info => "info",
            wit::LogLevel::Warn => "warn",
            wit::LogLevel::Error => "error",
        };
        self.log.push(format!("[{level}] {message}"));
    }

    fn intel_contains(&mut self, set: String, value: String) -> bool {
        self.intel.contains(&set, &value)
    }

    fn intel_sets(&mut self) -> Vec<(String, u64)> {
        self.intel.sizes()
    }
}

impl quarry::hunt::history::Host for TaskData {
    fn baseline_runs(&mut self) -> u32 {
        self.baseline.as_ref().map_or(0, |b| b.runs)
    }

    fn baseline(&mut self, name: String) -> Option<wit::AggregateValue> {
        let value = self.baseline.as_ref()?.aggregates.get(&name)?.clone();
        Some(quarry_contract::aggregate_value_to_wit!(value, wit))
    }
}

/// Caps the task's linear memory and table elements, summed over all its
/// memories and tables (a component may define several), remembering
/// whether the memory cap was hit so the trap can be reported as what it is.
#[derive(Default)]
struct MemoryLimiter {
    /// The cap on all memories together.
    memory_bytes: usize,
    /// Bytes of all memories so far (memories only grow, and live as long
    /// as the store).
    memory_total: usize,
    /// Elements of all tables so far.
    table_total: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    // Called with `current == 0` when a memory is created, then on each
    // growth.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_total
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_total
            .saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_total = total;
        Ok(true)
    }
}

/// Counts live instances so that instantiation waits instead of failing when
/// the pooling allocator's instance pool is exhausted.
///
/// The pool holds `2 × slots` component instances. The agent runs at most
/// `slots` tasks at once (its own semaphore) and each task holds one
/// instance, and `load` holds one briefly to ask a new module to describe
/// itself; so in the agent the pool cannot run out. This gate makes the
/// `Runtime` safe on its own too (tests, benchmarks, a caller with more
/// threads than slots): the `2 × slots + 1`-th instance waits for one to be
/// dropped.
struct InstanceGate {
    free: Mutex<u32>,
    freed: Condvar,
}

impl InstanceGate {
    fn try_acquire(self: &Arc<Self>) -> Option<InstancePermit> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(InstancePermit(self.clone()))
    }

    fn acquire(self: &Arc<Self>) -> InstancePermit {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        InstancePermit(self.clone())
    }
}

/// One instance's place in the pool; returned when dropped (after the
/// `Store` holding the instance, which is declared after it).
struct InstancePermit(Arc<InstanceGate>);

impl Drop for InstancePermit {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// An instance kept after a task of a hunt whose module allows reuse
/// (contract 0.2.3), for that hunt's next task on this worker.
struct Warm {
    hunt: HuntId,
    digest: ModuleDigest,
    /// What `init` got (the intel sets taken out) and the clamped limits:
    /// only a task with the same may take the instance.
    params: Vec<(String, String)>,
    limits: TaskLimits,
    /// The first task's plan, which holds for the hunt.
    planned: Option<(ModuleDescription, Projection)>,
    instance: wasmtime::component::Instance,
    live: Live,
    idle_since: Instant,
}

/// A store and its place in the instance pool, dropped in that order.
struct Live {
    store: Store<TaskData>,
    _permit: InstancePermit,
}

/// Instances waiting for their hunt's next task, at most one per slot.
#[derive(Default)]
struct WarmPool {
    idle: Mutex<Vec<Warm>>,
}

impl WarmPool {
    fn take(
        &self,
        hunt: &HuntId,
        digest: &ModuleDigest,
        params: &[(String, String)],
        limits: &TaskLimits,
    ) -> Option<Warm> {
        let mut idle = self.idle.lock().ok()?;
        let at = idle.iter().position(|warm| {
            warm.hunt == *hunt
                && warm.digest == *digest
                && warm.limits == *limits
                && warm.params == params
        })?;
        Some(idle.swap_remove(at))
    }

    /// Keeps `warm`, dropping expired instances and, past `max`, the one
    /// idle longest.
    fn keep(&self, warm: Warm, max: usize) {
        // Instances given up here are dropped after the lock is released,
        // as in `drop_expired`: dropping a store frees its pool slot.
        let mut given_up = Vec::new();
        {
            let Ok(mut idle) = self.idle.lock() else {
                return;
            };
            let (expired, kept): (Vec<Warm>, Vec<Warm>) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|warm| warm.idle_since.elapsed() >= WARM_IDLE);
            *idle = kept;
            given_up.extend(expired);
            while idle.len() >= max.max(1) {
                match Self::take_oldest(&mut idle) {
                    Some(oldest) => given_up.push(oldest),
                    None => break,
                }
            }
            idle.push(warm);
        }
        drop(given_up);
    }

    /// Drops the instance idle longest; `false` if none was idle.
    fn drop_oldest(&self) -> bool {
        let oldest = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| Self::take_oldest(&mut idle));
        oldest.is_some()
    }

    fn take_oldest(idle: &mut Vec<Warm>) -> Option<Warm> {
        let at = idle
            .iter()
            .enumerate()
            .min_by_key(|(_, warm)| warm.idle_since)
            .map(|(at, _)| at)?;
        Some(idle.swap_remove(at))
    }

    fn drop_expired(&self) {
        let expired: Vec<Warm> = match self.idle.lock() {
            Ok(mut idle) => {
                let (expired, kept) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|warm| warm.idle_since.elapsed() >= WARM_IDLE);
                *idle = kept;
                expired
            }
            Err(_) => return,
        };
        // Dropped outside the lock.
        drop(expired);
    }

    fn len(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

/// The worker's wasm engine and module cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TaskData>,
    config: RuntimeConfig,
    /// Loaded modules, least recently used dropped past
    /// [`RuntimeConfig::max_loaded_module_bytes`].
    cache: Mutex<MemoryCache<Arc<LoadedModule>>>,
    disk_cache: Option<DiskCache>,
    gate: Arc<InstanceGate>,
    /// Instances kept for their hunt's next task (contract 0.2.3).
    warm: Arc<WarmPool>,
    /// Most instances kept warm: one per slot.
    max_warm: usize,
    stop_ticker: Arc<AtomicBool>,
    /// Modules loaded (compiled, or read from the disk cache) since start.
    loads: std::sync::atomic::AtomicU64,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine for up to `slots` concurrent tasks, with the
    /// worker's maximums, caching compiled modules in `cache_dir` (created
    /// with mode 0700, its key beside it: [`ModuleCacheConfig::in_dir`])
    /// when given.
    pub fn new(
        slots: u32,
        config: RuntimeConfig,
        cache_dir: Option<&Path>,
    ) -> Result<Self, WorkerError> {
        Self::with_cache(slots, config, cache_dir.map(ModuleCacheConfig::in_dir))
    }

    /// As [`Runtime::new`], with the disk cache fully configured.
    pub fn with_cache(
        slots: u32,
        config: RuntimeConfig,
        cache: Option<ModuleCacheConfig>,
    ) -> Result<Self, WorkerError> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = slots.max(1) * 2;
        // Per-component maximums, and pools of exactly that many per
        // instance: a component with more is refused when compiled, so no
        // task can take another task's share of the pool (which would make
        // their instantiation fail).
        pool.total_component_instances(instances)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_TASK)
            .total_core_instances(instances * MAX_CORE_INSTANCES_PER_TASK)
            .max_memories_per_component(MAX_MEMORIES_PER_TASK)
            .max_memories_per_module(MAX_MEMORIES_PER_TASK)
            .total_memories(instances * MAX_MEMORIES_PER_TASK)
            .max_tables_per_component(MAX_TABLES_PER_TASK)
            .max_tables_per_module(MAX_TABLES_PER_TASK)
            .total_tables(instances * MAX_TABLES_PER_TASK)
            .max_memory_size(usize::try_from(MAX_MEMORY_BYTES).unwrap_or(usize::MAX));
        let mut wasm_config = Config::new();
        wasm_config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Capturing is bounded too: a deep recursion does not make a
            // trap expensive.
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(MAX_BACKTRACE_FRAMES))
            .max_wasm_stack(1024 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os(PERFMAP_ENV).is_some_and(|v| v == "1") {
            // Names compiled guest functions for `perf` (/tmp/perf-<pid>.map).
            wasm_config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm_config)
            .map_err(|e| WorkerError::Runtime(format!("cannot create the wasm engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        link(&mut linker)
            .map_err(|e| WorkerError::Runtime(format!("cannot link the host functions: {e}")))?;
        let disk_cache = cache
            .map(|cache| DiskCache::open(&cache, &engine))
            .transpose()?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let warm = Arc::new(WarmPool::default());
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            let warm = warm.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    let mut ticks = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                        // About once a second: instances whose hunt has
                        // moved on give their memory back.
                        ticks = ticks.wrapping_add(1);
                        if ticks.is_multiple_of(100) {
                            warm.drop_expired();
                        }
                    }
                })
                .map_err(|e| WorkerError::Runtime(format!("cannot start the epoch thread: {e}")))?;
        }
        Ok(Self {
            engine,
            linker,
            config,
            cache: Mutex::new(MemoryCache::new(
                usize::try_from(config.max_loaded_module_bytes).unwrap_or(usize::MAX),
            )),
            disk_cache,
            gate: Arc::new(InstanceGate {
                free: Mutex::new(instances),
                freed: Condvar::new(),
            }),
            warm,
            max_warm: slots.max(1) as usize,
            stop_ticker,
            loads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The worker's maximums.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Instances kept for their hunt's next task right now.
    pub fn warm_instances(&self) -> usize {
        self.warm.len()
    }

    /// A place in the instance pool. Instances kept warm hold places too:
    /// when none is free the one idle longest gives its place up, so a
    /// waiting task never waits for a hunt that has moved on.
    fn permit(&self) -> InstancePermit {
        loop {
            if let Some(permit) = self.gate.try_acquire() {
                return permit;
            }
            if !self.warm.drop_oldest() {
                return self.gate.acquire();
            }
        }
    }

    /// Modules loaded (compiled, or read from the disk cache) since start;
    /// a module already in memory is not loaded again.
    pub fn modules_loaded(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// A module from the cache, if compiled already.
    pub fn cached(&self, digest: &ModuleDigest) -> Option<Arc<LoadedModule>> {
        self.cache.lock().ok()?.get(digest)
    }

    /// The compiled component for `bytes`: from the disk cache when this
    /// process (or an earlier run of it) compiled it already, else compiled
    /// now and written to the cache.
    fn component(&self, digest: &ModuleDigest, bytes: &[u8]) -> Result<Component, String> {
        // Only a digest that really is the sha256 of these bytes may name a
        // cache file; otherwise a wrong digest could pair one module's name
        // with another module's code.
        let cache = self
            .disk_cache
            .as_ref()
            .filter(|_| digest.is_well_formed() && module_digest(bytes) == *digest);
        let Some(cache) = cache else {
            return Component::new(&self.engine, bytes)
                .map_err(|e| format!("does not compile: {e:#}"));
        };
        if let Some(component) = cache.load(&self.engine, digest) {
            return Ok(component);
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| format!("does not compile: {e:#}"))?;
        match component.serialize() {
            Ok(artifact) => cache.store(digest, &artifact),
            Err(e) => tracing::warn!(error = %e, "cannot serialize the compiled module"),
        }
        Ok(component)
    }

    /// Compiles `bytes` (once per digest), links it and asks it to describe
    /// itself. A module that cannot be used fails with
    /// [`WorkerError::InvalidModule`].
    pub fn load(
        &self,
        digest: &ModuleDigest,
        bytes: &[u8],
    ) -> Result<Arc<LoadedModule>, WorkerError> {
        if let Some(module) = self.cached(digest) {
            return Ok(module);
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        let invalid = |detail: String| WorkerError::InvalidModule {
            digest: digest.clone(),
            detail: format!("invalid module: {detail}"),
        };
        let component = self.component(digest, bytes).map_err(invalid)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("imports something the sandbox does not offer: {e}")))?;
        let pre = HuntPre::new(instance_pre)
            .map_err(|e| invalid(format!("does not implement the hunt world: {e}")))?;
        let limits = self.config.clamp(TaskLimits {
            cpu: Duration::from_secs(5),
            memory_bytes: 64 * 1024 * 1024,
            max_findings: 0,
            max_output_bytes: 0,
        });
        let _permit = self.permit();
        let mut store = self.store(&limits);
        let hunt = pre.instantiate(&mut store).map_err(|e| {
            invalid(format!(
                "cannot be instantiated: {}",
                explain(Call::Instantiate, e, &store, &limits)
            ))
        })?;
        store.set_epoch_deadline(ticks(limits.cpu));
        store.data_mut().result_bound = MAX_DESCRIPTOR_BYTES;
        let descriptor = hunt
            .quarry_hunt_module()
            .call_describe(&mut store)
            .map_err(|e| {
                if is_hostcall_fuel(&e) && !in_host_call(&e) {
                    return invalid(format!(
                        "its descriptor is larger than {MAX_DESCRIPTOR_BYTES} bytes; declare fewer fields and prefilter clauses"
                    ));
                }
                invalid(explain(Call::Describe, e, &store, &limits).to_string())
            })?;
        let description = describe(descriptor).map_err(invalid)?;
        let uses_history = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("quarry:hunt/history@"));
        let planner = component
            .get_export_index(None, PLANNER_INTERFACE)
            .and_then(|interface| component.get_export_index(Some(&interface), "plan"));
        let reuse = component
            .get_export_index(None, REUSE_INTERFACE)
            .and_then(|interface| component.get_export_index(Some(&interface), "reset"));
        let columnar = component
            .get_export_index(None, COLUMNAR_INTERFACE)
            .and_then(|interface| component.get_export_index(Some(&interface), "scan-columns"));
        let module = Arc::new(LoadedModule {
            digest: digest.clone(),
            uses_history,
            planner,
            reuse,
            columnar,
            pre,
            projection: Projection::new(&description.fields),
            description,
        });
        // About what the module holds in memory: its compiled code.
        let image = component.image_range();
        let bytes = (image.end as usize).saturating_sub(image.start as usize);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(digest.clone(), module.clone(), bytes);
        }
        Ok(module)
    }

    fn store(&self, limits: &TaskLimits) -> Store<TaskData> {
        let stdout = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let data = TaskData {
            wasi,
            stdout,
            stderr,
            stdio_reported: [0, 0],
            table: ResourceTable::new(),
            limits: MemoryLimiter {
                memory_bytes: usize::try_from(limits.memory_bytes.min(MAX_MEMORY_BYTES))
                    .unwrap_or(usize::MAX),
                ..MemoryLimiter::default()
            },
            log: Vec::new(),
            log_dropped: 0,
            cancel: Arc::new(AtomicBool::new(false)),
            cpu_deadline: None,
            cancelled: false,
            refused: None,
            intel: IntelSets::new(),
            baseline: None,
            // Instantiation and `init()` return at most an error string.
            result_bound: MAX_HOSTCALL_BYTES,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|data| &mut data.limits);
        bound_copies(&mut store);
        // The default deadline has already passed; every call sets its own.
        store.set_epoch_deadline(ticks(limits.cpu));
        store
    }

    /// As [`Runtime::run`], with the failure as a [`WorkerError`] (for the
    /// agent, which reports its text).
    pub fn run_task(
        &self,
        module: &LoadedModule,
        task: &TaskInput<'_>,
        incremental: &Incremental,
        shards: &ShardStore,
        cancel: &Arc<AtomicBool>,
    ) -> Result<TaskOutput, WorkerError> {
        let started = std::time::Instant::now();
        let result = self.run_incremental(module, task, incremental, shards, cancel);
        crate::metrics::instruments().task_ran(
            &module.description.name,
            started.elapsed(),
            &result,
        );
        result.map_err(Into::into)
    }

    /// Runs `module` over one shard: a fresh instance, `init(params)`, the
    /// prefiltered events in batches, then `finish`. The task's limits are
    /// first clamped to the worker's maximums.
    pub fn run(
        &self,
        module: &LoadedModule,
        task: &TaskInput<'_>,
        shards: &ShardStore,
        cancel: &Arc<AtomicBool>,
    ) -> Result<TaskOutput, TaskFailure> {
        self.run_incremental(module, task, &Incremental::default(), shards, cancel)
    }

    /// As [`Runtime::run`], for a scheduled run: only the events from the
    /// shard's watermark, with the schedule's history.
    pub fn run_incremental(
        &self,
        module: &LoadedModule,
        task: &TaskInput<'_>,
        incremental: &Incremental,
        shards: &ShardStore,
        cancel: &Arc<AtomicBool>,
    ) -> Result<TaskOutput, TaskFailure> {
        let TaskInput {
            params,
            limits,
            shard,
            time_range,
            hunt: hunt_id,
        } = *task;
        let limits = self.config.clamp(limits);
        // Cancelled while it waited for a slot or its module: do not start.
        if cancel.load(Ordering::Relaxed) {
            return Err(TaskFailure::Cancelled);
        }
        // The intel sets travel as `intel.<set>` parameters; the module sees
        // them through the host calls, not in its parameters.
        let mut params = params.to_vec();
        let intel = IntelSets::take_from_params(&mut params).map_err(TaskFailure::BadIntel)?;
        let hunt_id = hunt_id.filter(|_| module.reuse.is_some());
        let warm = hunt_id.and_then(|id| self.warm.take(id, &module.digest, &params, &limits));
        let reused_instance = warm.is_some();
        let mut budget = Guest::new(limits.cpu);
        let (mut live, instance, planned) = match warm {
            Some(warm) => {
                let mut live = warm.live;
                live.store.data_mut().next_task();
                watch_cancel(&mut live.store, cancel.clone(), limits.cpu);
                (live, warm.instance, warm.planned)
            }
            None => {
                let mut live = Live {
                    _permit: self.permit(),
                    store: self.store(&limits),
                };
                let store = &mut live.store;
                watch_cancel(store, cancel.clone(), limits.cpu);
                let instance = module
                    .pre
                    .instance_pre()
                    .instantiate(&mut *store)
                    .map_err(|e| explain(Call::Instantiate, e, store, &limits))?;
                let planned = match module.planner {
                    Some(planner) => plan(
                        module,
                        &instance,
                        planner,
                        store,
                        &params,
                        &mut budget,
                        &limits,
                    )?,
                    None => None,
                };
                (live, instance, planned)
            }
        };
        let store = &mut live.store;
        let hunt = Hunt::new(&mut *store, &instance)
            .map_err(|e| explain(Call::Instantiate, e, store, &limits))?;
        let exports = hunt.quarry_hunt_module();
        let columnar = module.columnar.filter(|_| self.config.column_batches);
        let scan_columns: Option<ScanColumnsFn> = match columnar {
            Some(index) => Some(instance.get_typed_func(&mut *store, index).map_err(|e| {
                TaskFailure::InvalidModule {
                    digest: module.digest.clone(),
                    detail: format!(
                        "invalid module: its scan-columns has the wrong signature for \
                         {COLUMNAR_INTERFACE}: {e:#}"
                    ),
                }
            })?),
            None => None,
        };
        let guest_scan = GuestScan {
            exports,
            columns: scan_columns.as_ref(),
        };
        store.data_mut().intel = intel;
        store.data_mut().baseline = incremental.baseline.clone();
        budget.arm(store, Call::Init)?;
        let init = exports.call_init(&mut *store, &params);
        budget.spent();
        match init {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(TaskFailure::Rejected(message)),
            Err(e) => return Err(explain(Call::Init, e, &*store, &limits)),
        }

        let (description, projection) = match &planned {
            Some((description, projection)) => (description, projection),
            None => (&module.description, &module.projection),
        };
        let mut output = TaskOutput {
            fields_projected: description.fields.len(),
            ..TaskOutput::default()
        };
        let mut kept = Kept {
            limits,
            findings: Vec::new(),
            dropped: 0,
            bytes: 0,
        };
        // Blocks whose index rules the prefilter out are skipped undecoded.
        let block_filter = |stats: &crate::shard::BlockStats| {
            stats.may_match_prefilter(&description.clauses, &description.any_of)
        };
        let filter = crate::shard::ScanFilter {
            time_range,
            block_filter: (!description.prefilter.is_empty()).then_some(&block_filter as _),
            min_offset: incremental.from_offset,
        };
        let mut delivery = Delivery {
            guest_scan: &guest_scan,
            store: &mut *store,
            budget: &mut budget,
            kept: &mut kept,
            output: &mut output,
            limits: &limits,
            cancel,
            host_work: Instant::now(),
        };
        let stats = match guest_scan.columns {
            // Batches by column, straight from the column blocks.
            Some(columns_fn) => {
                let mut batcher = ColumnBatcher::new(projection.len(), BATCH_SIZE);
                let stats = shards.scan_projected_columns(
                    shard,
                    &filter,
                    &description.prefilter,
                    projection,
                    |in_range, columns| -> Result<(), TaskFailure> {
                        delivery.block_read(in_range)?;
                        batcher.add(&columns, |batch| {
                            delivery.batch(Batch::Columns(columns_fn, batch))
                        })?;
                        delivery.block_done();
                        Ok(())
                    },
                )?;
                if !batcher.batch.is_empty() {
                    delivery.batch(Batch::Columns(columns_fn, &batcher.batch))?;
                }
                stats
            }
            None => {
                let mut batch: Vec<wit::Event> = Vec::with_capacity(BATCH_SIZE);
                let stats = shards.scan_projected(
                    shard,
                    &filter,
                    &description.prefilter,
                    projection,
                    |in_range, events| -> Result<(), TaskFailure> {
                        delivery.block_read(in_range)?;
                        for event in events {
                            batch.push(wit::Event {
                                timestamp_ms: event.timestamp_ms,
                                offset: event.offset,
                                values: event.values,
                            });
                            if batch.len() >= BATCH_SIZE {
                                delivery.batch(Batch::Events(&batch))?;
                                batch.clear();
                            }
                        }
                        delivery.block_done();
                        Ok(())
                    },
                )?;
                if !batch.is_empty() {
                    delivery.batch(Batch::Events(&batch))?;
                }
                stats
            }
        };
        output.blocks_read = stats.blocks_read;
        output.blocks_skipped = stats.blocks_skipped;
        output.bytes_read = stats.bytes_read;
        output.end_offset = stats.end_offset;
        budget.arm(&mut *store, Call::Finish)?;
        store.data_mut().result_bound = kept.result_bound();
        let finished = exports.call_finish(&mut *store);
        budget.spent();
        let finished = finished.map_err(|e| explain(Call::Finish, e, &*store, &limits))?;
        kept.add(finished.findings, Call::Finish)?;
        for aggregate in finished.aggregates {
            let elements = aggregate_elements(&aggregate);
            let aggregate = aggregate_from_wit(aggregate).map_err(TaskFailure::BadOutput)?;
            kept.charge(
                AGGREGATE_OVERHEAD + elements * ELEMENT_OVERHEAD + aggregate.approx_bytes(),
                Call::Finish,
            )?;
            output.aggregates.push(aggregate);
        }
        output.findings = kept.findings;
        output.findings_truncated = kept.dropped > 0;
        output.findings_dropped = kept.dropped;
        output.output_bytes = kept.bytes;
        output.log = task_log(&mut *store);
        if kept.dropped > 0 {
            output.log.push(format!(
                "({} findings beyond the limit of {} dropped)",
                kept.dropped, limits.max_findings
            ));
        }
        output.reused_instance = reused_instance;
        output.batches_by_column = scan_columns.is_some();
        if let (Some(hunt_id), Some(reset)) = (hunt_id, module.reuse)
            && reset_for_reuse(&instance, reset, store, &mut budget)
        {
            self.warm.keep(
                Warm {
                    hunt: hunt_id.clone(),
                    digest: module.digest.clone(),
                    params,
                    limits,
                    planned,
                    instance,
                    live,
                    idle_since: Instant::now(),
                },
                self.max_warm,
            );
        }
        Ok(output)
    }
}

/// Asks a finished task's module whether its instance may run the hunt's
/// next task (`reuse.reset`, contract 0.2.3). Not when the task's CPU
/// budget is spent, when half its stdio capture is used (a later task
/// could not print), or when `reset` fails: the instance is dropped then.
fn reset_for_reuse(
    instance: &wasmtime::component::Instance,
    reset: ComponentExportIndex,
    store: &mut Store<TaskData>,
    budget: &mut Guest,
) -> bool {
    let data = store.data();
    if data.stdout.contents().len() > STDIO_CAPTURE_BYTES / 2
        || data.stderr.contents().len() > STDIO_CAPTURE_BYTES / 2
        || budget.arm(store, Call::Finish).is_err()
    {
        return false;
    }
    let reset = instance.get_typed_func::<(), (bool,)>(&mut *store, reset);
    let reusable = reset.and_then(|reset| reset.call(&mut *store, ()));
    budget.spent();
    match reusable {
        Ok((reusable,)) => reusable,
        Err(e) => {
            tracing::debug!(error = %e, "the module's reset() failed; its instance is dropped");
            false
        }
    }
}

/// Asks the module to plan this task (`planner.plan(params)`): `Some` with
/// the task's own description and projection, `None` to keep the module's.
fn plan(
    module: &LoadedModule,
    instance: &wasmtime::component::Instance,
    planner: ComponentExportIndex,
    store: &mut Store<TaskData>,
    params: &[(String, String)],
    budget: &mut Guest,
    limits: &TaskLimits,
) -> Result<Option<(ModuleDescription, Projection)>, TaskFailure> {
    // Parameters go in by reference: a rule pack's can be megabytes.
    type PlanFn<'a> = wasmtime::component::TypedFunc<
        (&'a [(String, String)],),
        (Result<Option<wit::Descriptor>, String>,),
    >;
    let invalid = |detail: String| TaskFailure::InvalidModule {
        digest: module.digest.clone(),
        detail: format!("invalid module: its plan(): {detail}"),
    };
    let func: PlanFn = instance.get_typed_func(&mut *store, planner).map_err(|e| {
        invalid(format!(
            "has the wrong signature for {PLANNER_INTERFACE}: {e:#}"
        ))
    })?;
    budget.arm(store, Call::Plan)?;
    store.data_mut().result_bound = MAX_DESCRIPTOR_BYTES;
    let planned = func.call(&mut *store, (params,));
    budget.spent();
    store.data_mut().result_bound = MAX_HOSTCALL_BYTES;
    let (planned,) = planned.map_err(|e| {
        if is_hostcall_fuel(&e) && !in_host_call(&e) {
            return invalid(format!(
                "returned a descriptor larger than {MAX_DESCRIPTOR_BYTES} bytes; declare fewer fields and prefilter clauses"
            ));
        }
        explain(Call::Plan, e, store, limits)
    })?;
    let descriptor = match planned {
        Ok(Some(descriptor)) => descriptor,
        Ok(None) => return Ok(None),
        Err(message) => return Err(TaskFailure::Rejected(message)),
    };
    let declared = &module.description;
    if descriptor.name != declared.name || descriptor.version != declared.version {
        return Err(invalid(format!(
            "planned as {} {} but describes itself as {} {}; a plan must keep the name and version",
            descriptor.name, descriptor.version, declared.name, declared.version
        )));
    }
    let description = describe(descriptor).map_err(invalid)?;
    let projection = Projection::new(&description.fields);
    Ok(Some((description, projection)))
}

/// The findings a task keeps, and the output bytes it has used.
struct Kept {
    limits: TaskLimits,
    findings: Vec<wit::Finding>,
    dropped: u64,
    bytes: u64,
}

impl Kept {
    /// Keeps findings up to the limit (counting the rest as dropped) and
    /// charges the kept ones' bytes against the output cap.
    fn add(&mut self, new: Vec<wit::Finding>, call: Call) -> Result<(), TaskFailure> {
        let room = self.limits.max_findings.saturating_sub(self.findings.len());
        if new.len() > room {
            self.dropped += (new.len() - room) as u64;
        }
        for finding in new.into_iter().take(room) {
            self.charge(finding_bytes(&finding), call)?;
            self.findings.push(finding);
        }
        Ok(())
    }

    /// What wasmtime may copy of the next `scan()` or `finish()` result:
    /// exactly what is left of the output limit, whatever the guest's host
    /// calls took (they have their own bound). wasmtime charges each element
    /// its host size before copying it, so copying stops at the limit
    /// however many (empty) elements the guest returns; and as
    /// [`finding_bytes`] charges a finding what its copy cost, a result that
    /// was copied whole also fits the limit (findings beyond `max_findings`
    /// are copied, then dropped uncharged).
    fn result_bound(&self) -> usize {
        let left = self.limits.max_output_bytes.saturating_sub(self.bytes);
        usize::try_from(left).unwrap_or(usize::MAX)
    }

    fn charge(&mut self, bytes: usize, call: Call) -> Result<(), TaskFailure> {
        self.bytes = self.bytes.saturating_add(bytes as u64);
        if self.bytes > self.limits.max_output_bytes {
            return Err(TaskFailure::OutputLimit {
                call,
                kind: OutputKind::Findings,
                limit_bytes: self.limits.max_output_bytes,
            });
        }
        Ok(())
    }
}

/// What an aggregate costs against the output cap beyond its elements.
const AGGREGATE_OVERHEAD: usize = 64;
/// What one element of an aggregate's lists costs beyond its strings.
const ELEMENT_OVERHEAD: usize = 16;

/// What a finding costs against the output cap: its strings' bytes plus
/// the host's copy of every element (the finding itself, each evidence
/// pair, technique, tag and offset), as wasmtime's hostcall fuel counts
/// them, so a flood of empty strings is not free.
pub fn finding_bytes(finding: &wit::Finding) -> usize {
    let strings =
        |list: &[String]| std::mem::size_of_val(list) + list.iter().map(String::len).sum::<usize>();
    std::mem::size_of::<wit::Finding>()
        + finding.rule.len()
        + finding.title.len()
        + finding.entity.len()
        + std::mem::size_of_val(finding.evidence.as_slice())
        + finding
            .evidence
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
        + strings(&finding.techniques)
        + strings(&finding.tags)
        + std::mem::size_of_val(finding.offsets.as_slice())
}

/// Elements in an aggregate's lists (each charged [`ELEMENT_OVERHEAD`]).
fn aggregate_elements(aggregate: &wit::Aggregate) -> usize {
    match &aggregate.value {
        wit::AggregateValue::Counts(counts) => counts.len(),
        wit::AggregateValue::Distinct(keys) => keys
            .iter()
            .map(|(_, values)| {
                1 + match values {
                    wit::DistinctValues::Exact(values) => values.len(),
                    wit::DistinctValues::Sketch(registers) => registers.len() / 16,
                }
            })
            .sum(),
        wit::AggregateValue::TopK(top) => top.entries.len(),
        wit::AggregateValue::Range(ranges) => ranges.len(),
        wit::AggregateValue::Stack(stack) => stack
            .entries
            .iter()
            .map(|entry| 1 + entry.hosts.len())
            .sum(),
    }
}

/// How a task hands batches to its module: `module.scan`, or
/// `columnar.scan-columns` when the module exports it.
struct GuestScan<'a> {
    exports: &'a guest::Guest,
    columns: Option<&'a ScanColumnsFn>,
}

/// Hands a task's events to its module: each block read is checked for
/// cancellation and its host work charged to the CPU budget, each batch is
/// a guest call whose findings are kept.
struct Delivery<'a, 'g> {
    guest_scan: &'a GuestScan<'g>,
    store: &'a mut Store<TaskData>,
    budget: &'a mut Guest,
    kept: &'a mut Kept,
    output: &'a mut TaskOutput,
    limits: &'a TaskLimits,
    cancel: &'a AtomicBool,
    /// Decoding, the prefilter and the projection run on the host for the
    /// guest: their time, from the end of one block's guest work to the
    /// next block's delivery, counts against the task's CPU budget.
    host_work: Instant,
}

impl Delivery<'_, '_> {
    /// A block was read, `in_range` of its events in the task's range.
    fn block_read(&mut self, in_range: u64) -> Result<(), TaskFailure> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(TaskFailure::Cancelled);
        }
        self.budget.charge(self.host_work.elapsed(), Call::Scan)?;
        self.output.events_scanned += in_range;
        Ok(())
    }

    /// The block's events are handed on: host work starts again.
    fn block_done(&mut self) {
        self.host_work = Instant::now();
    }

    /// One guest call with `batch`.
    fn batch(&mut self, batch: Batch<'_>) -> Result<(), TaskFailure> {
        self.output.events_matched += batch.len() as u64;
        let found = scan(
            self.guest_scan,
            self.store,
            batch,
            self.budget,
            self.limits,
            self.kept.result_bound(),
        )?;
        self.kept.add(found, Call::Scan)
    }
}

/// A batch for the guest: events for `module.scan`, or by column for
/// `columnar.scan-columns`.
enum Batch<'a> {
    Events(&'a [wit::Event]),
    Columns(&'a ScanColumnsFn, &'a ProjectedColumns),
}

impl Batch<'_> {
    fn len(&self) -> usize {
        match self {
            Batch::Events(events) => events.len(),
            Batch::Columns(_, columns) => columns.len(),
        }
    }
}

/// `batch` as contract 0.2.4's `event-columns`: the lengths field by field,
/// each field's texts end to end.
fn to_wit_columns(batch: &ProjectedColumns) -> wit::EventColumns {
    let bytes = batch.fields.iter().map(|f| f.text.len()).sum();
    let mut lengths = Vec::with_capacity(batch.len() * batch.fields.len());
    let mut text = String::with_capacity(bytes);
    for field in &batch.fields {
        lengths.extend_from_slice(&field.lengths);
        text.push_str(&field.text);
    }
    wit::EventColumns {
        timestamps: batch.timestamps.clone(),
        offsets: batch.offsets.clone(),
        lengths,
        text,
    }
}

fn scan(
    guest_scan: &GuestScan<'_>,
    store: &mut Store<TaskData>,
    batch: Batch<'_>,
    budget: &mut Guest,
    limits: &TaskLimits,
    result_bound: usize,
) -> Result<Vec<wit::Finding>, TaskFailure> {
    budget.arm(store, Call::Scan)?;
    store.data_mut().result_bound = result_bound;
    let result = match batch {
        Batch::Columns(func, columns) => func
            .call(&mut *store, (to_wit_columns(columns),))
            .map(|(r,)| r),
        Batch::Events(events) => guest_scan.exports.call_scan(&mut *store, events),
    };
    budget.spent();
    match result {
        Ok(Ok(findings)) => Ok(findings),
        Ok(Err(message)) => Err(TaskFailure::ModuleError(message)),
        Err(e) => Err(explain(Call::Scan, e, store, limits)),
    }
}

/// Tracks guest time against the task's CPU budget.
struct Guest {
    remaining: Duration,
    started: Option<Instant>,
    total: Duration,
}

impl Guest {
    fn new(total: Duration) -> Self {
        Self {
            remaining: total,
            started: None,
            total,
        }
    }

    fn arm(&mut self, store: &mut Store<TaskData>, call: Call) -> Result<(), TaskFailure> {
        if self.remaining.is_zero() {
            return Err(TaskFailure::DeadlineExceeded {
                call,
                limit: self.total,
            });
        }
        let now = Instant::now();
        store.data_mut().cpu_deadline = Some(now + self.remaining);
        store.set_epoch_deadline(ticks(self.remaining).min(CANCEL_CHECK_TICKS));
        self.started = Some(now);
        Ok(())
    }

    fn spent(&mut self) {
        if let Some(started) = self.started.take() {
            self.remaining = self.remaining.saturating_sub(started.elapsed());
        }
    }

    /// Charges host work done for the guest (prefilter, projection); fails
    /// once the budget is spent.
    fn charge(&mut self, work: Duration, call: Call) -> Result<(), TaskFailure> {
        self.remaining = self.remaining.saturating_sub(work);
        if self.remaining.is_zero() {
            return Err(TaskFailure::DeadlineExceeded {
                call,
                limit: self.total,
            });
        }
        Ok(())
    }
}

/// Makes the store's epoch deadline a periodic check rather than a single
/// trap: every [`CANCEL_CHECK_TICKS`] the callback stops the guest if the
/// task was cancelled, traps with `Interrupt` (named as the CPU deadline by
/// [`explain`]) once the call's budget is spent, and lets it run on
/// otherwise. Epochs do not interrupt host calls; those are bounded apart.
fn watch_cancel(store: &mut Store<TaskData>, cancel: Arc<AtomicBool>, cpu: Duration) {
    let data = store.data_mut();
    data.cancel = cancel;
    data.cpu_deadline = Some(Instant::now() + cpu);
    store.set_epoch_deadline(ticks(cpu).min(CANCEL_CHECK_TICKS));
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut();
        if data.cancel.load(Ordering::Relaxed) {
            data.cancelled = true;
            return Err(wasmtime::Error::msg("task cancelled"));
        }
        let now = Instant::now();
        match data.cpu_deadline {
            Some(at) if now >= at => Err(wasmtime::Trap::Interrupt.into()),
            Some(at) => Ok(wasmtime::UpdateDeadline::Continue(
                ticks(at - now).min(CANCEL_CHECK_TICKS),
            )),
            None => Ok(wasmtime::UpdateDeadline::Continue(CANCEL_CHECK_TICKS)),
        }
    });
}

/// Points wasmtime's hostcall fuel (one setting, read afresh by every copy
/// out of the guest) at the bound of the copy about to happen:
/// [`MAX_HOSTCALL_BYTES`] for a host call's arguments (copied after
/// `CallingHost`), the current export's [`TaskData::result_bound`] for its
/// result (copied after `ReturningFromWasm`). Without the switch one value
/// bounded both, so a host call could take as much as the output budget.
fn bound_copies(store: &mut Store<TaskData>) {
    store.set_hostcall_fuel(store.data().result_bound);
    store.call_hook(|mut store, hook| {
        let fuel = match hook {
            CallHook::CallingHost => MAX_HOSTCALL_BYTES,
            CallHook::ReturningFromHost | CallHook::CallingWasm | CallHook::ReturningFromWasm => {
                store.data().result_bound
            }
        };
        store.set_hostcall_fuel(fuel);
        Ok(())
    });
}

fn ticks(budget: Duration) -> u64 {
    (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Names the cause of a guest failure: memory cap, deadline, a full stdio
/// capture, or a trap with the module's message and backtrace.
fn explain(
    call: Call,
    error: wasmtime::Error,
    store: &Store<TaskData>,
    limits: &TaskLimits,
) -> TaskFailure {
    let data = store.data();
    if data.cancelled {
        return TaskFailure::Cancelled;
    }
    if let Some(refusal) = &data.refused {
        return TaskFailure::HostCallDenied {
            call,
            function: refusal.function.to_owned(),
            reason: refusal.reason.clone(),
        };
    }
    if is_hostcall_fuel(&error) {
        // With guest frames on the stack the guest was calling the host;
        // without, wasmtime was copying what the guest returned.
        return if in_host_call(&error) {
            TaskFailure::HostCallLimit {
                call,
                limit_bytes: MAX_HOSTCALL_BYTES as u64,
            }
        } else {
            TaskFailure::OutputLimit {
                call,
                kind: OutputKind::Findings,
                limit_bytes: limits.max_output_bytes,
            }
        };
    }
    if data.limits.hit {
        return TaskFailure::MemoryLimit {
            call,
            limit_bytes: limits.memory_bytes,
        };
    }
    let trap = error.downcast_ref::<wasmtime::Trap>().copied();
    if trap == Some(wasmtime::Trap::Interrupt) {
        return TaskFailure::DeadlineExceeded {
            call,
            limit: limits.cpu,
        };
    }
    // A full capture buffer: the pipe traps on a write past it, or the
    // stream reports itself closed and the guest's std panics ("failed
    // printing to stdout") and aborts. A module that merely had written a
    // lot before failing for another reason keeps that reason.
    let pipe_overrun = format!("{error:#}").contains("beyond capacity of MemoryOutputPipe");
    let panic = data.panic_message();
    let full = |pipe: &MemoryOutputPipe| pipe.contents().len() + 4096 > STDIO_CAPTURE_BYTES;
    let std_gave_up = |stream: &str| {
        panic
            .as_deref()
            .is_some_and(|p| p.contains(&format!("failed printing to {stream}")))
    };
    let overrun = if full(&data.stdout) && (pipe_overrun || std_gave_up("stdout")) {
        Some(OutputKind::Stdout)
    } else if full(&data.stderr) && (pipe_overrun || trap.is_some()) {
        // With stderr full, the panic message itself was lost.
        Some(OutputKind::Stderr)
    } else {
        None
    };
    if let Some(kind) = overrun {
        return TaskFailure::OutputLimit {
            call,
            kind,
            limit_bytes: STDIO_CAPTURE_BYTES as u64,
        };
    }
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(bounded_backtrace);
    // The root cause, not the whole chain: the chain carries the backtrace
    // as context, reported apart and bounded.
    let cause = || {
        let mut cause = error.root_cause().to_string();
        cause.truncate(cause.floor_char_boundary(MAX_TRAP_MESSAGE));
        cause
    };
    let message = match (panic, trap) {
        (Some(panic), Some(trap)) => format!("{panic} ({trap})"),
        (Some(panic), None) => format!("{panic} ({})", cause()),
        (None, Some(trap)) => trap.to_string(),
        (None, None) => cause(),
    };
    TaskFailure::Trap {
        call,
        message,
        backtrace,
    }
}

/// Whether wasmtime stopped copying data between guest and host because the
/// store's hostcall fuel ran out (its error type is private: match its text).
fn is_hostcall_fuel(error: &wasmtime::Error) -> bool {
    format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted")
}

/// Whether `error` rose inside a guest call (wasm frames on its backtrace),
/// as opposed to while copying a guest call's results.
fn in_host_call(error: &wasmtime::Error) -> bool {
    error
        .downcast_ref::<WasmBacktrace>()
        .is_some_and(|backtrace| !backtrace.frames().is_empty())
}

/// The first frames of a backtrace, one per line.
fn bounded_backtrace(backtrace: &WasmBacktrace) -> String {
    let frames = backtrace.frames();
    let mut lines: Vec<String> = frames
        .iter()
        .take(MAX_BACKTRACE_FRAMES)
        .enumerate()
        .map(|(i, frame)| {
            let name = frame.func_name().unwrap_or("<unnamed>");
            let mut name = name.to_owned();
            name.truncate(name.floor_char_boundary(200));
            format!("  {i}: {name}")
        })
        .collect();
    if frames.len() > MAX_BACKTRACE_FRAMES {
        lines.push(format!(
            "  ... {} more frames",
            frames.len() - MAX_BACKTRACE_FRAMES
        ));
    }
    lines.join("\n")
}

impl TaskData {
    /// What the guest wrote to stderr about its failure: a Rust panic's
    /// message (from "panicked at" on, without the `RUST_BACKTRACE` note), or
    /// else the last line; bounded.
    fn panic_message(&self) -> Option<String> {
        let stderr = self.stderr.contents();
        let text = String::from_utf8_lossy(&stderr);
        let text = match text.rfind("panicked at") {
            Some(at) => text[at..]
                .lines()
                .filter(|line| !line.starts_with("note: "))
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            None => text
                .lines()
                .rev()
                .find(|line| !line.trim().is_empty())?
                .trim()
                .to_owned(),
        };
        let mut text = text;
        text.truncate(text.floor_char_boundary(MAX_TRAP_MESSAGE));
        (!text.is_empty()).then_some(text)
    }
}

fn task_log(store: &mut Store<TaskData>) -> Vec<String> {
    let data = store.data_mut();
    let mut log = std::mem::take(&mut data.log);
    let streams = [("stdout", &data.stdout), ("stderr", &data.stderr)];
    for ((stream, pipe), reported) in streams.into_iter().zip(&mut data.stdio_reported) {
        // An instance reused by the hunt's next task keeps its pipes: only
        // what this task printed is its log.
        let bytes = pipe.contents();
        let new = bytes.get(*reported..).unwrap_or_default();
        *reported = bytes.len();
        log.extend(
            String::from_utf8_lossy(new)
                .lines()
                .map(|line| format!("[{stream}] {line}")),
        );
    }
    if data.log_dropped > 0 {
        log.push(format!("({} more log lines dropped)", data.log_dropped));
    }
    log
}

/// Refuses a descriptor whose fields or prefilter would make the host's
/// per-event work (projection, prefilter) or memory unreasonable.
fn check_descriptor(descriptor: &wit::Descriptor) -> Result<(), String> {
    let too_many = |count: usize, what: &str, max: usize, fix: &str| {
        if count > max {
            Err(format!(
                "declares {count} {what}; at most {max} are allowed ({fix})"
            ))
        } else {
            Ok(())
        }
    };
    too_many(
        descriptor.fields.len(),
        "fields",
        MAX_FIELDS,
        "declare only the fields the module reads; each is projected for every event",
    )?;
    too_many(
        descriptor.prefilter.len(),
        "prefilter clauses",
        MAX_PREFILTER_CLAUSES,
        "merge clauses on one field into one clause with several values",
    )?;
    too_many(
        descriptor.any_of.len(),
        "any-of groups",
        MAX_ANY_OF_GROUPS,
        "merge groups, or filter further in scan()",
    )?;
    for group in &descriptor.any_of {
        too_many(
            group.len(),
            "clauses in one any-of group",
            MAX_GROUP_CLAUSES,
            "merge clauses on one field into one clause with several values",
        )?;
    }
    let clauses = || {
        descriptor
            .prefilter
            .iter()
            .chain(descriptor.any_of.iter().flatten())
    };
    too_many(
        clauses().map(|clause| clause.values.len()).sum(),
        "prefilter values",
        MAX_PREFILTER_VALUES,
        "match long lists in scan(), or ship them as an intel set",
    )?;
    if let Some(clause) = clauses().find(|clause| clause.field == crate::event::ALL_VALUES_FIELD) {
        return Err(format!(
            "has a prefilter clause on `{}`, which can only be projected (declare it as a field and test it in scan())",
            clause.field
        ));
    }
    let names = descriptor
        .fields
        .iter()
        .chain(clauses().map(|clause| &clause.field));
    for name in names {
        if name.len() > MAX_FIELD_NAME_BYTES {
            return Err(format!(
                "declares a field name of {} bytes; at most {MAX_FIELD_NAME_BYTES} are allowed",
                name.len()
            ));
        }
    }
    Ok(())
}

fn describe(descriptor: wit::Descriptor) -> Result<ModuleDescription, String> {
    check_descriptor(&descriptor)?;
    let clauses: Vec<Clause> = descriptor.prefilter.into_iter().map(clause).collect();
    let any_of: Vec<Vec<Clause>> = descriptor
        .any_of
        .into_iter()
        .map(|group| group.into_iter().map(clause).collect())
        .collect();
    Ok(ModuleDescription {
        name: descriptor.name,
        version: descriptor.version,
        description: descriptor.description,
        fields: descriptor.fields,
        prefilter: Prefilter::compile_with_groups(clauses.clone(), any_of.clone())?,
        clauses,
        any_of,
        techniques: descriptor.techniques,
    })
}

fn clause(predicate: wit::Predicate) -> Clause {
    Clause {
        field: predicate.field,
        op: match predicate.op {
            wit::MatchOp::Equals => MatchOp::Equals,
            wit::MatchOp::Contains => MatchOp::Contains,
            wit::MatchOp::StartsWith => MatchOp::StartsWith,
            wit::MatchOp::EndsWith => MatchOp::EndsWith,
            wit::MatchOp::Exists => MatchOp::Exists,
            wit::MatchOp::Regex => MatchOp::Regex,
        },
        values: predicate.values,
    }
}

/// A module's aggregate in the form the coordinator merges, checked and
/// normalised by the same rules as the SDK's (`quarry-contract`).
fn aggregate_from_wit(aggregate: wit::Aggregate) -> Result<quarry_contract::Aggregate, String> {
    quarry_contract::aggregate_from_wit!(aggregate, quarry::hunt::types)
}

/// Severity as the protobuf enum value.
pub fn severity_value(severity: wit::Severity) -> i32 {
    use quarry_proto::v1::Severity as S;
    (match severity {
        wit::Severity::Informational => S::Informational,
        wit::Severity::Low => S::Low,
        wit::Severity::Medium => S::Medium,
        wit::Severity::High => S::High,
        wit::Severity::Critical => S::Critical,
    }) as i32
}

/// Re-exported generated types the agent converts from.
pub mod types {
    pub use super::wit::{Finding, Severity};
    pub use quarry_contract::Aggregate;
}
