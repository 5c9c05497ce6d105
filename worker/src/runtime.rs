//! The wasm sandbox: one shared wasmtime `Engine` with a pooling allocator
//! and epoch interruption, modules compiled once per digest into an
//! `InstancePre`, and a fresh `Store` per task with memory, CPU and output
//! limits. Guests reach WASI only through a deny-all context (nothing
//! preopened, no sockets, no environment; stdout/stderr captured into
//! bounded buffers that become the task's log).

use crate::error::WorkerError;
use crate::event::StoredEvent;
use crate::prefilter::{Clause, MatchOp, Prefilter};
use crate::shard::ShardStore;
use quarry_proto::ModuleDigest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
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
/// Events handed to the guest per call.
pub const BATCH_SIZE: usize = 1024;
/// Largest linear memory any task may ask for.
pub const MAX_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;
/// Bytes of stdout+stderr kept per task.
const STDIO_CAPTURE_BYTES: usize = 64 * 1024;
/// Lines of `host.log` kept per task.
const MAX_LOG_LINES: usize = 500;

/// What a task may use.
#[derive(Clone, Copy, Debug)]
pub struct TaskLimits {
    /// Guest CPU time (wall time inside guest calls).
    pub cpu: Duration,
    /// Linear memory cap.
    pub memory_bytes: u64,
    /// Findings kept; more are counted and dropped.
    pub max_findings: usize,
}

/// What a module said about itself.
#[derive(Clone, Debug)]
pub struct ModuleDescription {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Fields it reads, in `event.values` order.
    pub fields: Vec<String>,
    /// Host-side prefilter.
    pub prefilter: Prefilter,
    /// ATT&CK ids.
    pub techniques: Vec<String>,
}

/// A compiled module ready to instantiate.
pub struct LoadedModule {
    digest: ModuleDigest,
    pre: HuntPre<TaskData>,
    description: ModuleDescription,
}

impl LoadedModule {
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
}

/// The result of a task that ran to the end.
#[derive(Debug, Default)]
pub struct TaskOutput {
    /// Findings (at most the limit).
    pub findings: Vec<wit::Finding>,
    /// Aggregates from `finish`.
    pub aggregates: Vec<wit::Aggregate>,
    /// Events read from the shard.
    pub events_scanned: u64,
    /// Events that passed the prefilter.
    pub events_matched: u64,
    /// Whether findings beyond the limit were dropped.
    pub findings_truncated: bool,
    /// Module log lines and captured stdout/stderr.
    pub log: Vec<String>,
}

/// Per-task host state.
struct TaskData {
    wasi: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    table: ResourceTable,
    limits: MemoryLimiter,
    log: Vec<String>,
    log_dropped: usize,
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

impl quarry::hunt::host::Host for TaskData {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        // Host calls are not interrupted by epochs: keep this bounded.
        if self.log.len() >= MAX_LOG_LINES {
            self.log_dropped += 1;
            return;
        }
        let mut message = message;
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
}

/// Caps linear memory and tables, remembering whether the cap was hit so the
/// trap can be reported as what it is.
struct MemoryLimiter {
    memory_bytes: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The worker's wasm engine and module cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TaskData>,
    cache: Mutex<HashMap<ModuleDigest, Arc<LoadedModule>>>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine for up to `slots` concurrent tasks.
    pub fn new(slots: u32) -> Result<Self, WorkerError> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = slots.max(1) * 2;
        pool.total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 4)
            .total_tables(instances * 16)
            .max_memory_size(usize::try_from(MAX_MEMORY_BYTES).unwrap_or(usize::MAX));
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(1024 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| WorkerError::Runtime(format!("cannot create the wasm engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| WorkerError::Runtime(format!("cannot link WASI: {e}")))?;
        Hunt::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| WorkerError::Runtime(format!("cannot link the host interface: {e}")))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| WorkerError::Runtime(format!("cannot start the epoch thread: {e}")))?;
        }
        Ok(Self {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
            stop_ticker,
        })
    }

    /// A module from the cache, if compiled already.
    pub fn cached(&self, digest: &ModuleDigest) -> Option<Arc<LoadedModule>> {
        self.cache.lock().ok()?.get(digest).cloned()
    }

    /// Compiles `bytes` (once per digest), links it and asks it to describe itself.
    pub fn load(
        &self,
        digest: &ModuleDigest,
        bytes: &[u8],
    ) -> Result<Arc<LoadedModule>, WorkerError> {
        if let Some(module) = self.cached(digest) {
            return Ok(module);
        }
        let invalid = |detail: String| WorkerError::InvalidModule {
            digest: digest.clone(),
            detail,
        };
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| invalid(format!("does not compile: {e}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("imports something the sandbox does not offer: {e}")))?;
        let pre = HuntPre::new(instance_pre)
            .map_err(|e| invalid(format!("does not implement the hunt world: {e}")))?;
        let limits = TaskLimits {
            cpu: Duration::from_secs(5),
            memory_bytes: 64 * 1024 * 1024,
            max_findings: 0,
        };
        let mut store = self.store(&limits);
        let hunt = pre
            .instantiate(&mut store)
            .map_err(|e| invalid(format!("cannot be instantiated: {e}")))?;
        store.set_epoch_deadline(ticks(limits.cpu));
        let descriptor = hunt
            .quarry_hunt_module()
            .call_describe(&mut store)
            .map_err(|e| {
                invalid(format!(
                    "describe() failed: {}",
                    explain_trap(&e, &store, &limits)
                ))
            })?;
        let description = describe(descriptor);
        let module = Arc::new(LoadedModule {
            digest: digest.clone(),
            pre,
            description,
        });
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(digest.clone(), module.clone());
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
            table: ResourceTable::new(),
            limits: MemoryLimiter {
                memory_bytes: usize::try_from(limits.memory_bytes.min(MAX_MEMORY_BYTES))
                    .unwrap_or(usize::MAX),
                hit: false,
            },
            log: Vec::new(),
            log_dropped: 0,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|data| &mut data.limits);
        // The default deadline has already passed; every call sets its own.
        store.set_epoch_deadline(ticks(limits.cpu));
        store
    }

    /// Runs `module` over one shard: a fresh instance, `init(params)`, the
    /// prefiltered events in batches, then `finish`.
    pub fn run_task(
        &self,
        module: &LoadedModule,
        task: &TaskInput<'_>,
        shards: &ShardStore,
        cancel: &AtomicBool,
    ) -> Result<TaskOutput, WorkerError> {
        let TaskInput {
            params,
            limits,
            shard,
            time_range,
        } = *task;
        let mut store = self.store(&limits);
        let hunt = module.pre.instantiate(&mut store).map_err(|e| {
            WorkerError::Task(format!(
                "module could not be instantiated: {}",
                explain_trap(&e, &store, &limits)
            ))
        })?;
        let exports = hunt.quarry_hunt_module();
        let mut budget = Guest::new(limits.cpu);

        budget.arm(&mut store)?;
        let init = exports.call_init(&mut store, params);
        budget.spent();
        match init {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Err(WorkerError::Task(format!(
                    "module rejected its parameters: {message}"
                )));
            }
            Err(e) => {
                return Err(WorkerError::Task(format!(
                    "init() {}",
                    explain_trap(&e, &store, &limits)
                )));
            }
        }

        let description = &module.description;
        let mut output = TaskOutput::default();
        let mut batch: Vec<wit::Event> = Vec::with_capacity(BATCH_SIZE);
        let mut findings = Vec::new();
        let mut truncated = false;
        let keep =
            |new: Vec<wit::Finding>, findings: &mut Vec<wit::Finding>, truncated: &mut bool| {
                let room = limits.max_findings.saturating_sub(findings.len());
                if new.len() > room {
                    *truncated = true;
                }
                findings.extend(new.into_iter().take(room));
            };
        let stats = shards.scan(
            shard,
            time_range,
            BATCH_SIZE,
            |events: &[StoredEvent]| -> Result<(), WorkerError> {
                if cancel.load(Ordering::Relaxed) {
                    return Err(WorkerError::Cancelled);
                }
                output.events_scanned += events.len() as u64;
                for event in events {
                    if !description.prefilter.matches(&event.doc) {
                        continue;
                    }
                    batch.push(wit::Event {
                        timestamp_ms: event.timestamp_ms,
                        offset: event.offset,
                        values: crate::prefilter::project(&event.doc, &description.fields),
                    });
                }
                if batch.len() >= BATCH_SIZE {
                    output.events_matched += batch.len() as u64;
                    let found = scan(exports, &mut store, &batch, &mut budget, &limits)?;
                    keep(found, &mut findings, &mut truncated);
                    batch.clear();
                }
                Ok(())
            },
        )?;
        let _ = stats;
        if !batch.is_empty() {
            output.events_matched += batch.len() as u64;
            let found = scan(exports, &mut store, &batch, &mut budget, &limits)?;
            keep(found, &mut findings, &mut truncated);
        }
        budget.arm(&mut store)?;
        let finished = exports.call_finish(&mut store);
        budget.spent();
        let finished = finished.map_err(|e| {
            WorkerError::Task(format!("finish() {}", explain_trap(&e, &store, &limits)))
        })?;
        keep(finished.findings, &mut findings, &mut truncated);
        output.findings = findings;
        output.findings_truncated = truncated;
        output.aggregates = finished.aggregates;
        output.log = task_log(&mut store);
        Ok(output)
    }
}

fn scan(
    exports: &guest::Guest,
    store: &mut Store<TaskData>,
    batch: &[wit::Event],
    budget: &mut Guest,
    limits: &TaskLimits,
) -> Result<Vec<wit::Finding>, WorkerError> {
    budget.arm(store)?;
    let result = exports.call_scan(&mut *store, batch);
    budget.spent();
    match result {
        Ok(Ok(findings)) => Ok(findings),
        Ok(Err(message)) => Err(WorkerError::Task(format!(
            "module failed while scanning: {message}"
        ))),
        Err(e) => Err(WorkerError::Task(format!(
            "scan() {}",
            explain_trap(&e, store, limits)
        ))),
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

    fn arm(&mut self, store: &mut Store<TaskData>) -> Result<(), WorkerError> {
        if self.remaining.is_zero() {
            return Err(WorkerError::Task(format!(
                "module exceeded its CPU deadline of {} ms",
                self.total.as_millis()
            )));
        }
        store.set_epoch_deadline(ticks(self.remaining));
        self.started = Some(Instant::now());
        Ok(())
    }

    fn spent(&mut self) {
        if let Some(started) = self.started.take() {
            self.remaining = self.remaining.saturating_sub(started.elapsed());
        }
    }
}

fn ticks(budget: Duration) -> u64 {
    (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Names the cause of a guest failure: deadline, memory cap, trap kind.
fn explain_trap(error: &wasmtime::Error, store: &Store<TaskData>, limits: &TaskLimits) -> String {
    if store.data().limits.hit {
        return format!(
            "failed: module exceeded its memory limit of {} bytes ({error})",
            limits.memory_bytes
        );
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            format!(
                "failed: module exceeded its CPU deadline of {} ms",
                limits.cpu.as_millis()
            )
        }
        Some(wasmtime::Trap::UnreachableCodeReached) => {
            let stderr = store.data().wasi_stderr_hint();
            format!(
                "failed: module trapped (unreachable instruction; a Rust panic or abort){stderr}"
            )
        }
        Some(wasmtime::Trap::StackOverflow) => "failed: module overflowed its stack".to_owned(),
        Some(wasmtime::Trap::MemoryOutOfBounds) => {
            "failed: module trapped (out-of-bounds memory access)".to_owned()
        }
        Some(trap) => format!("failed: module trapped ({trap})"),
        None => format!("failed: {error:#}"),
    }
}

impl TaskData {
    /// The last line the guest wrote to stderr (a Rust panic message lands
    /// there), for the failure reason.
    fn wasi_stderr_hint(&self) -> String {
        let stderr = self.stderr.contents();
        let text = String::from_utf8_lossy(&stderr);
        match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!(": {}", line.trim()),
            None => String::new(),
        }
    }
}

fn task_log(store: &mut Store<TaskData>) -> Vec<String> {
    let data = store.data_mut();
    let mut log = std::mem::take(&mut data.log);
    for (stream, pipe) in [("stdout", &data.stdout), ("stderr", &data.stderr)] {
        let bytes = pipe.contents();
        log.extend(
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| format!("[{stream}] {line}")),
        );
    }
    if data.log_dropped > 0 {
        log.push(format!("({} more log lines dropped)", data.log_dropped));
    }
    log
}

fn describe(descriptor: wit::Descriptor) -> ModuleDescription {
    let clauses = descriptor
        .prefilter
        .into_iter()
        .map(|p| Clause {
            field: p.field,
            op: match p.op {
                wit::MatchOp::Equals => MatchOp::Equals,
                wit::MatchOp::Contains => MatchOp::Contains,
                wit::MatchOp::StartsWith => MatchOp::StartsWith,
                wit::MatchOp::EndsWith => MatchOp::EndsWith,
                wit::MatchOp::Exists => MatchOp::Exists,
            },
            values: p.values,
        })
        .collect();
    ModuleDescription {
        name: descriptor.name,
        version: descriptor.version,
        fields: descriptor.fields,
        prefilter: Prefilter::new(clauses),
        techniques: descriptor.techniques,
    }
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
    pub use super::wit::{Aggregate, Finding, Severity};
}
