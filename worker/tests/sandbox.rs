//! The sandbox against real misbehaving modules (built from
//! `hunt-modules/test-modules/*` by the bundle): every failure is named, and
//! the same `Runtime` keeps serving well-behaved modules afterwards.
//!
//! The tests run one at a time (`SERIAL`): the leak test reads the process's
//! RSS, which other tests running alongside would disturb.
//!
//! Decision for a module flooding stdout: the capture of stdout (and of
//! stderr) is bounded at `STDIO_CAPTURE_BYTES`; a module that writes past it
//! fails with `TaskFailure::OutputLimit` naming the stream, rather than
//! printing into a void until its CPU deadline.

use quarry_hunt_modules::test_modules;
use quarry_hunt_modules::{BRUTEFORCE, ShippedModule};
use quarry_proto::ModuleDigest;
use quarry_worker::WorkerError;
use quarry_worker::runtime::{
    Call, LoadedModule, MAX_HOSTCALL_BYTES, ModuleCacheConfig, OutputKind, Runtime, RuntimeConfig,
    STDIO_CAPTURE_BYTES, TaskFailure, TaskInput, TaskLimits, TaskOutput, module_digest,
};
use quarry_worker::shard::ShardStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// How long after its CPU deadline a hostile task may take to end.
const GRACE: Duration = Duration::from_secs(1);

/// Aborts the test process (nextest runs each test in its own) when a task
/// has not ended in time: a task stuck in a host call never returns, so a
/// plain assertion after it would never run.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn arm(limit: Duration, what: &'static str) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < limit {
                if seen.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !seen.load(Ordering::Relaxed) {
                eprintln!("{what}: the task did not end within {limit:?}; it is stuck in the host");
                std::process::abort();
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

const SHARD: &str = "win-dc01";

/// A runtime, a small real shard, and the temp dir holding them.
struct Sandbox {
    runtime: Runtime,
    store: ShardStore,
    _dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

/// Six failed logons for `alice` a minute apart, then a success, and some
/// other events: enough for `bruteforce` to report one finding.
fn events() -> String {
    let mut lines = Vec::new();
    let logon = |minute: u32, id: u32, user: &str| {
        format!(
            r#"{{"@timestamp":"2024-03-01T10:{minute:02}:00.000Z","EventID":{id},"TargetUserName":"{user}","TargetDomainName":"CORP","IpAddress":"10.0.0.5","LogonType":3,"Computer":"dc01.corp.local"}}"#
        )
    };
    for minute in 0..6 {
        lines.push(logon(minute, 4625, "alice"));
    }
    lines.push(logon(7, 4624, "alice"));
    for minute in 10..20 {
        lines.push(logon(minute, 4624, "bob"));
        lines.push(format!(
            r#"{{"@timestamp":"2024-03-01T10:{minute:02}:30.000Z","EventID":4688,"NewProcessName":"C:\\Windows\\System32\\cmd.exe","Computer":"dc01.corp.local"}}"#
        ));
    }
    lines.join("\n") + "\n"
}

/// Compiled modules persist across test runs here (the disk cache under test).
fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-module-cache")
}

fn sandbox_with(config: RuntimeConfig) -> Sandbox {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("open shard store");
    let mut labels = BTreeMap::new();
    labels.insert("source".to_owned(), "windows-security".to_owned());
    store
        .ingest_jsonl(SHARD, labels, events().as_bytes())
        .expect("ingest");
    let runtime = Runtime::new(2, config, Some(&shared_cache_dir())).expect("runtime");
    Sandbox {
        runtime,
        store,
        _dir: dir,
        _serial: serial,
    }
}

fn sandbox() -> Sandbox {
    sandbox_with(RuntimeConfig::default())
}

fn limits() -> TaskLimits {
    TaskLimits {
        cpu: Duration::from_secs(10),
        memory_bytes: 64 * 1024 * 1024,
        max_findings: 1000,
        max_output_bytes: 16 * 1024 * 1024,
    }
}

impl Sandbox {
    fn load(&self, module: &ShippedModule) -> Arc<LoadedModule> {
        self.runtime
            .load(&module_digest(module.wasm), module.wasm)
            .unwrap_or_else(|e| panic!("{} loads: {e}", module.name))
    }

    fn run(
        &self,
        module: &ShippedModule,
        params: &[(&str, &str)],
        limits: TaskLimits,
    ) -> Result<TaskOutput, TaskFailure> {
        let loaded = self.load(module);
        let params: Vec<(String, String)> = params
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let task = TaskInput {
            params: &params,
            limits,
            shard: SHARD,
            time_range: None,
            hunt: None,
        };
        self.runtime.run(
            &loaded,
            &task,
            &self.store,
            &Arc::new(AtomicBool::new(false)),
        )
    }

    /// The worker still serves: the shipped module finds the brute force and
    /// the no-op module runs clean.
    fn still_serves(&self) {
        let output = self
            .run(&BRUTEFORCE, &[], limits())
            .expect("bruteforce runs after the failure");
        assert_eq!(output.events_scanned, 27);
        assert!(
            output
                .findings
                .iter()
                .any(|f| f.rule == "bruteforce/success-after-failures"),
            "{:?}",
            output.findings
        );
        let output = self
            .run(&test_modules::NOOP, &[], limits())
            .expect("noop runs after the failure");
        assert!(output.findings.is_empty());
        assert_eq!(output.events_matched, 27);
    }
}

#[test]
fn runaway_loop_is_stopped_at_its_deadline() {
    let sandbox = sandbox();
    let failure = sandbox
        .run(
            &test_modules::RUNAWAY_LOOP,
            &[],
            TaskLimits {
                cpu: Duration::from_millis(100),
                ..limits()
            },
        )
        .expect_err("a runaway loop cannot finish");
    assert!(
        matches!(failure, TaskFailure::DeadlineExceeded { limit, .. } if limit == Duration::from_millis(100)),
        "{failure:?}"
    );
    let text = failure.to_string();
    assert!(
        text.contains("deadline exceeded") && text.contains("100 ms") && text.contains("scan()"),
        "{text}"
    );
    // The agent's view: the same text.
    assert_eq!(WorkerError::from(failure).to_string(), text);
    sandbox.still_serves();
}

/// Cancelling stops guest code that never returns, within about a second,
/// long before its CPU deadline: the epoch-deadline callback reads the
/// task's cancel flag.
#[test]
fn a_cancelled_runaway_loop_stops_within_a_second() {
    let sandbox = sandbox();
    let loaded = sandbox.load(&test_modules::RUNAWAY_LOOP);
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        std::time::Instant::now()
    });
    let task = TaskInput {
        params: &[],
        limits: TaskLimits {
            cpu: Duration::from_secs(60),
            ..limits()
        },
        shard: SHARD,
        time_range: None,
        hunt: None,
    };
    let failure = sandbox
        .runtime
        .run(&loaded, &task, &sandbox.store, &cancel)
        .expect_err("a runaway loop cannot finish");
    let stopped = std::time::Instant::now();
    let cancelled_at = canceller.join().expect("canceller");
    let took = stopped.duration_since(cancelled_at);
    eprintln!("runaway loop stopped {took:?} after cancel (its CPU deadline was 60 s)");
    assert!(matches!(failure, TaskFailure::Cancelled), "{failure:?}");
    assert_eq!(failure.to_string(), "task cancelled");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    sandbox.still_serves();
}

#[test]
fn worker_maximum_clamps_the_deadline_a_hunt_asks_for() {
    let sandbox = sandbox_with(RuntimeConfig {
        max_cpu: Duration::from_millis(50),
        ..RuntimeConfig::default()
    });
    let failure = sandbox
        .run(
            &test_modules::RUNAWAY_LOOP,
            &[],
            TaskLimits {
                cpu: Duration::from_secs(3600),
                ..limits()
            },
        )
        .expect_err("a runaway loop cannot finish");
    assert!(
        matches!(failure, TaskFailure::DeadlineExceeded { limit, .. } if limit == Duration::from_millis(50)),
        "{failure:?}"
    );
}

#[test]
fn memory_hog_hits_the_memory_limit() {
    let sandbox = sandbox();
    let cap = 32 * 1024 * 1024;
    let failure = sandbox
        .run(
            &test_modules::MEMORY_HOG,
            &[],
            TaskLimits {
                memory_bytes: cap,
                ..limits()
            },
        )
        .expect_err("a memory hog cannot finish");
    assert!(
        matches!(failure, TaskFailure::MemoryLimit { limit_bytes, .. } if limit_bytes == cap),
        "{failure:?}"
    );
    let text = failure.to_string();
    assert!(
        text.contains("memory limit") && text.contains(&cap.to_string()),
        "{text}"
    );
    sandbox.still_serves();
}

#[test]
fn panic_is_a_trap_with_the_panic_message_and_a_backtrace() {
    let sandbox = sandbox();
    let failure = sandbox
        .run(&test_modules::TRAP_PANIC, &[], limits())
        .expect_err("the module panics");
    let TaskFailure::Trap {
        message, backtrace, ..
    } = &failure
    else {
        panic!("not a trap: {failure:?}");
    };
    assert!(
        message.contains(test_modules::TRAP_PANIC_MESSAGE),
        "{message}"
    );
    let backtrace = backtrace.as_deref().expect("a wasm backtrace");
    assert!(!backtrace.is_empty());
    assert!(backtrace.lines().count() <= 25, "bounded: {backtrace}");
    let text = failure.to_string();
    assert!(text.starts_with("trap in scan():"), "{text}");
    assert!(text.contains("wasm backtrace"), "{text}");
    eprintln!("{text}");
    sandbox.still_serves();
}

#[test]
fn output_flood_hits_the_output_byte_limit() {
    let sandbox = sandbox();
    let cap = 1024 * 1024;
    // 64 findings of 64 KiB of evidence each: 4 MiB against a 1 MiB cap.
    let failure = sandbox
        .run(
            &test_modules::OUTPUT_FLOOD,
            &[("findings", "64"), ("evidence_bytes", "65536")],
            TaskLimits {
                max_output_bytes: cap,
                ..limits()
            },
        )
        .expect_err("4 MiB of output against a 1 MiB cap");
    assert!(
        matches!(
            failure,
            TaskFailure::OutputLimit { kind: OutputKind::Findings, limit_bytes, .. } if limit_bytes == cap
        ),
        "{failure:?}"
    );
    assert!(failure.to_string().contains("output limit"), "{failure}");
    sandbox.still_serves();
}

#[test]
fn too_many_findings_are_truncated_and_reported() {
    let sandbox = sandbox();
    let output = sandbox
        .run(
            &test_modules::OUTPUT_FLOOD,
            &[("findings", "10000")],
            TaskLimits {
                max_findings: 100,
                ..limits()
            },
        )
        .expect("truncation is not a failure");
    assert_eq!(output.findings.len(), 100);
    assert!(output.findings_truncated);
    assert_eq!(output.findings_dropped, 9_900);
    assert!(output.output_bytes > 0);
    assert!(
        output
            .log
            .iter()
            .any(|line| line.contains("9900 findings beyond the limit of 100 dropped")),
        "{:?}",
        output.log
    );
    sandbox.still_serves();
}

#[test]
fn stdout_flood_is_an_output_limit_with_a_bounded_log() {
    let sandbox = sandbox();
    let failure = sandbox
        .run(&test_modules::STDOUT_FLOOD, &[], limits())
        .expect_err("the module prints forever");
    eprintln!("stdout flood: {failure}");
    assert!(
        matches!(
            failure,
            TaskFailure::OutputLimit { kind: OutputKind::Stdout, limit_bytes, .. }
                if limit_bytes == STDIO_CAPTURE_BYTES as u64
        ),
        "{failure:?}"
    );
    assert!(
        failure.to_string().contains("output limit") && failure.to_string().contains("stdout"),
        "{failure}"
    );
    sandbox.still_serves();
}

#[test]
fn garbage_and_core_modules_are_invalid() {
    let sandbox = sandbox();
    let garbage = b"definitely not wasm".as_slice();
    // A valid, empty core module: wasm, but not a component.
    let core = b"\0asm\x01\0\0\0".as_slice();
    for bytes in [garbage, core] {
        let error = match sandbox.runtime.load(&module_digest(bytes), bytes) {
            Ok(_) => panic!("{bytes:?} loaded"),
            Err(e) => e,
        };
        assert!(
            matches!(error, WorkerError::InvalidModule { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("invalid module"), "{error}");
        assert!(matches!(
            TaskFailure::from(error),
            TaskFailure::InvalidModule { .. }
        ));
    }
    sandbox.still_serves();
}

#[test]
fn compiled_modules_are_cached_on_disk() {
    let sandbox = sandbox();
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = cache.path().join("module-cache");
    let digest = module_digest(test_modules::NOOP.wasm);
    {
        let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&dir)).expect("runtime");
        runtime
            .load(&digest, test_modules::NOOP.wasm)
            .expect("load");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir)
            .expect("cache dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let files: Vec<String> = std::fs::read_dir(&dir)
        .expect("read cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with(&format!("{digest}-")) && files[0].ends_with(".cwasm"),
        "{files:?}"
    );
    // A fresh runtime (a restarted worker) loads the artifact and runs it.
    let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&dir)).expect("runtime");
    let module = runtime
        .load(&digest, test_modules::NOOP.wasm)
        .expect("load");
    assert_eq!(module.description().name, "noop");
    let task = TaskInput {
        params: &[],
        limits: limits(),
        shard: SHARD,
        time_range: None,
        hunt: None,
    };
    let output = runtime
        .run(
            &module,
            &task,
            &sandbox.store,
            &Arc::new(AtomicBool::new(false)),
        )
        .expect("runs from the cached artifact");
    assert_eq!(output.events_matched, 27);
    // A digest that is not the module's sha256 never names a cache file.
    let wrong = ModuleDigest::new("0".repeat(64));
    runtime.load(&wrong, test_modules::NOOP.wasm).expect("load");
    assert_eq!(std::fs::read_dir(&dir).expect("read cache").count(), 1);
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    quarry_worker::memory::resident_bytes().expect("VmRSS in /proc/self/status") / 1024
}

#[test]
fn a_thousand_runaway_tasks_do_not_leak() {
    let sandbox = sandbox();
    let tiny = TaskLimits {
        cpu: Duration::from_millis(5),
        ..limits()
    };
    let mut after_ten = 0;
    for i in 1..=1000 {
        let failure = sandbox
            .run(&test_modules::RUNAWAY_LOOP, &[], tiny)
            .expect_err("a runaway loop cannot finish");
        assert!(
            matches!(failure, TaskFailure::DeadlineExceeded { .. }),
            "task {i}: {failure:?}"
        );
        if i == 10 {
            after_ten = rss_kib();
        }
    }
    let after_all = rss_kib();
    eprintln!("VmRSS after 10 runaway tasks: {after_ten} KiB; after 1000: {after_all} KiB");
    assert!(
        after_all as f64 <= after_ten as f64 * 1.2,
        "RSS grew from {after_ten} KiB to {after_all} KiB over 1000 tasks"
    );
    sandbox.still_serves();
}

impl Sandbox {
    /// Runs a hostile module with CPU deadline `cpu`, asserting that its
    /// task ends (either way) within the deadline plus [`GRACE`].
    fn run_hostile(
        &self,
        module: &ShippedModule,
        params: &[(&str, &str)],
        limits: TaskLimits,
    ) -> Result<TaskOutput, TaskFailure> {
        // Loading (compiling) is not part of the task's time.
        self.load(module);
        let limit = limits.cpu + GRACE;
        let started = Instant::now();
        let outcome = {
            let _watchdog = Watchdog::arm(limit, module.name);
            self.run(module, params, limits)
        };
        let took = started.elapsed();
        eprintln!("{}: ended after {took:?}", module.name);
        assert!(took < limit, "{} took {took:?}", module.name);
        outcome
    }
}

fn hostile(cpu: Duration) -> TaskLimits {
    TaskLimits { cpu, ..limits() }
}

/// `std::thread::sleep(Duration::MAX)` used to block inside the host's
/// real `wasi:clocks`, where no epoch deadline or cancel reaches.
#[test]
fn a_sleeping_module_is_refused_the_clock_within_its_deadline() {
    let sandbox = sandbox();
    let failure = sandbox
        .run_hostile(
            &test_modules::SLEEPER,
            &[],
            hostile(Duration::from_millis(500)),
        )
        .expect_err("a module sleeping forever cannot finish");
    let text = failure.to_string();
    assert!(
        text.contains("host call refused in scan()")
            && text.contains("wasi:clocks/monotonic-clock.subscribe-duration")
            && text.contains("no clock"),
        "{text}"
    );
    sandbox.still_serves();
}

/// Polling a clock pollable that is never ready used to block in the host.
#[test]
fn a_module_polling_a_clock_forever_is_refused_within_its_deadline() {
    let sandbox = sandbox();
    let failure = sandbox
        .run_hostile(
            &test_modules::POLL_FOREVER,
            &[("on", "clock")],
            hostile(Duration::from_millis(500)),
        )
        .expect_err("a module polling forever cannot finish");
    let text = failure.to_string();
    assert!(
        text.contains("host call refused")
            && text.contains("wasi:clocks/monotonic-clock.subscribe-duration"),
        "{text}"
    );
    sandbox.still_serves();
}

/// Every pollable a guest can get (stdin's, stdout's) is ready at once, so a
/// guest polling in a loop is guest code the CPU deadline stops.
#[test]
fn a_module_polling_stdin_forever_meets_its_deadline() {
    let sandbox = sandbox();
    let cpu = Duration::from_millis(300);
    let failure = sandbox
        .run_hostile(
            &test_modules::POLL_FOREVER,
            &[("on", "stdin")],
            hostile(cpu),
        )
        .expect_err("a module polling forever cannot finish");
    assert!(
        matches!(failure, TaskFailure::DeadlineExceeded { limit, .. } if limit == cpu),
        "{failure:?}"
    );
    sandbox.still_serves();
}

/// `get-random-bytes(len)` allocated `len` bytes on the host (up to
/// wasmtime-wasi's 64 MiB default) for any guest that asked.
#[test]
fn huge_random_requests_are_refused_by_name() {
    let sandbox = sandbox();
    for (call, function) in [
        ("random", "wasi:random/random.get-random-bytes"),
        (
            "insecure-random",
            "wasi:random/insecure.get-insecure-random-bytes",
        ),
    ] {
        for len in [1u64 << 20, 1 << 40] {
            let len = len.to_string();
            let failure = sandbox
                .run_hostile(
                    &test_modules::HOST_ABUSE,
                    &[("call", call), ("len", &len)],
                    hostile(Duration::from_secs(2)),
                )
                .expect_err("the host refuses");
            let text = failure.to_string();
            assert!(
                text.contains("host call refused")
                    && text.contains(function)
                    && text.contains("65536"),
                "{call} {len}: {text}"
            );
        }
    }
    sandbox.still_serves();
}

/// A `host.log` call with millions of empty fields made the host copy each
/// (48 bytes apiece) before keeping 16 of them.
#[test]
fn a_host_call_with_millions_of_fields_hits_the_host_call_limit() {
    let sandbox = sandbox();
    let failure = sandbox
        .run_hostile(
            &test_modules::HOST_ABUSE,
            &[("call", "log"), ("fields", "2000000"), ("times", "3")],
            TaskLimits {
                cpu: Duration::from_secs(5),
                memory_bytes: 256 * 1024 * 1024,
                ..limits()
            },
        )
        .expect_err("the host stops copying");
    let text = failure.to_string();
    assert!(
        text.contains("host call limit") && text.contains("scan()"),
        "{text}"
    );
    sandbox.still_serves();
}

/// A log line of a megabyte with no fields is within the bounds: the line
/// is kept truncated and the task completes.
#[test]
fn a_long_log_message_is_truncated() {
    let sandbox = sandbox();
    let output = sandbox
        .run_hostile(
            &test_modules::HOST_ABUSE,
            &[("call", "log"), ("fields", "0"), ("times", "600")],
            hostile(Duration::from_secs(5)),
        )
        .expect("bounded logging is fine");
    assert!(output.log.len() <= 502, "{}", output.log.len());
    assert!(output.log.iter().all(|line| line.len() <= 1100));
    assert!(
        output
            .log
            .iter()
            .any(|line| line.contains("more log lines dropped")),
        "{:?}",
        output.log.last()
    );
    sandbox.still_serves();
}

/// The shipped modules still link, instantiate and describe themselves
/// against exactly the host functions the sandbox offers.
#[test]
fn every_shipped_module_loads() {
    let sandbox = sandbox();
    for module in quarry_hunt_modules::all() {
        let loaded = sandbox.load(module);
        assert_eq!(loaded.description().name, module.name);
    }
}

/// Millions of empty evidence items: zero bytes of strings, but the host
/// copied every element (48 bytes each) and charged nothing for them.
#[test]
fn an_empty_evidence_flood_hits_the_output_limit() {
    let sandbox = sandbox();
    let cap = 1024 * 1024;
    let failure = sandbox
        .run_hostile(
            &test_modules::EMPTY_FLOOD,
            &[("findings", "4"), ("items", "500000")],
            TaskLimits {
                cpu: Duration::from_secs(5),
                memory_bytes: 256 * 1024 * 1024,
                max_output_bytes: cap,
                ..limits()
            },
        )
        .expect_err("two million empty evidence items against a 1 MiB cap");
    assert!(
        matches!(
            failure,
            TaskFailure::OutputLimit { kind: OutputKind::Findings, limit_bytes, .. } if limit_bytes == cap
        ),
        "{failure:?}"
    );
    sandbox.still_serves();
}

/// Thousands of declared fields, clauses and any-of groups: the host would
/// project and evaluate every one of them for every event, outside the
/// guest's CPU budget. Refused at load, naming the limit.
#[test]
fn a_module_declaring_thousands_of_fields_and_clauses_is_refused_at_load() {
    let sandbox = sandbox();
    let module = &test_modules::WIDE_DESCRIPTOR;
    let error = match sandbox
        .runtime
        .load(&module_digest(module.wasm), module.wasm)
    {
        Ok(_) => panic!("a descriptor with 10000 fields loaded"),
        Err(e) => e,
    };
    assert!(
        matches!(error, WorkerError::InvalidModule { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("declares 10000 fields") && text.contains("at most"),
        "{text}"
    );
    sandbox.still_serves();
}

/// Empty elements are charged against the output cap too.
#[test]
fn empty_output_elements_are_not_free() {
    let sandbox = sandbox();
    let output = sandbox
        .run(
            &test_modules::EMPTY_FLOOD,
            &[("findings", "10"), ("items", "1000")],
            limits(),
        )
        .expect("well under the cap");
    assert_eq!(output.findings.len(), 10);
    assert!(
        output.output_bytes >= 10 * 1000 * 16,
        "10 000 empty evidence items charged only {} bytes",
        output.output_bytes
    );
}

/// Where a test module misbehaves: in `scan()` or in `finish()`.
const PHASES: [(&str, Call); 2] = [("scan", Call::Scan), ("finish", Call::Finish)];

/// One host call may receive at most `MAX_HOSTCALL_BYTES`, in `scan()` and
/// `finish()` alike. It used to be bounded by what was left of the output
/// cap (16 MiB here), so a 2 MiB log message was copied whole.
#[test]
fn a_host_call_over_its_bound_fails_whatever_output_budget_is_left() {
    let sandbox = sandbox();
    let message_bytes = (2 * MAX_HOSTCALL_BYTES).to_string();
    for (at, call) in PHASES {
        let failure = sandbox
            .run_hostile(
                &test_modules::HOST_ABUSE,
                &[
                    ("call", "log"),
                    ("fields", "0"),
                    ("times", "1"),
                    ("message_bytes", &message_bytes),
                    ("at", at),
                ],
                hostile(Duration::from_secs(5)),
            )
            .expect_err("a 2 MiB host call is over the bound");
        assert!(
            matches!(
                failure,
                TaskFailure::HostCallLimit { call: c, limit_bytes }
                    if c == call && limit_bytes == MAX_HOSTCALL_BYTES as u64
            ),
            "{at}: {failure:?}"
        );
        assert!(failure.to_string().contains("host call limit"), "{failure}");
    }
    sandbox.still_serves();
}

/// Host calls and the returned result have separate bounds: a module that
/// passes its whole host-call bound to the host 64 times still returns
/// output up to the output cap.
#[test]
fn host_call_floods_leave_the_whole_output_budget() {
    let sandbox = sandbox();
    let cap: u64 = 1024 * 1024;
    let message_bytes = MAX_HOSTCALL_BYTES.to_string();
    for (at, _) in PHASES {
        let output = sandbox
            .run_hostile(
                &test_modules::HOST_ABUSE,
                &[
                    ("call", "log"),
                    ("fields", "0"),
                    ("times", "64"),
                    ("message_bytes", &message_bytes),
                    ("at", at),
                    // 15 findings of 64 KiB: about 94% of the cap.
                    ("findings", "15"),
                    ("evidence_bytes", "65536"),
                ],
                TaskLimits {
                    cpu: Duration::from_secs(5),
                    max_output_bytes: cap,
                    ..limits()
                },
            )
            .unwrap_or_else(|e| panic!("{at}: host calls cost no output budget: {e}"));
        assert_eq!(output.findings.len(), 15, "{at}");
        assert!(
            output.output_bytes > 15 * 65536 && output.output_bytes <= cap,
            "{at}: {} output bytes",
            output.output_bytes
        );
    }
    sandbox.still_serves();
}

/// A returned result is copied only up to what is left of the output cap.
/// With a 64 KiB cap, ~800 KB of findings used to be copied whole (the
/// bound was at least 1 MiB) and all but 10 then dropped, so the task
/// succeeded; now the copy stops at the cap and the task fails by name.
#[test]
fn a_result_over_the_output_cap_is_not_copied_even_if_its_findings_would_be_dropped() {
    let sandbox = sandbox();
    let cap: u64 = 64 * 1024;
    for (at, call) in PHASES {
        let failure = sandbox
            .run_hostile(
                &test_modules::OUTPUT_FLOOD,
                &[("findings", "1000"), ("evidence_bytes", "512"), ("at", at)],
                TaskLimits {
                    cpu: Duration::from_secs(5),
                    max_findings: 10,
                    max_output_bytes: cap,
                    ..limits()
                },
            )
            .expect_err("~800 KB of result against a 64 KiB cap");
        assert!(
            matches!(
                failure,
                TaskFailure::OutputLimit { call: c, kind: OutputKind::Findings, limit_bytes }
                    if c == call && limit_bytes == cap
            ),
            "{at}: {failure:?}"
        );
    }
    sandbox.still_serves();
}

/// Empty elements count toward the copy bound too: 10,000 empty evidence
/// items are ~480 KB for the host to copy, refused under a 64 KiB cap even
/// though every finding would be dropped (`max_findings` 0).
#[test]
fn empty_elements_count_toward_the_result_copy_bound() {
    let sandbox = sandbox();
    let cap: u64 = 64 * 1024;
    let failure = sandbox
        .run_hostile(
            &test_modules::EMPTY_FLOOD,
            &[("findings", "1"), ("items", "10000")],
            TaskLimits {
                cpu: Duration::from_secs(5),
                max_findings: 0,
                max_output_bytes: cap,
                ..limits()
            },
        )
        .expect_err("~480 KB of empty elements against a 64 KiB cap");
    assert!(
        matches!(
            failure,
            TaskFailure::OutputLimit { call: Call::Scan, kind: OutputKind::Findings, limit_bytes }
                if limit_bytes == cap
        ),
        "{failure:?}"
    );
    sandbox.still_serves();
}

/// What a task is charged for its output is exactly what the host copies:
/// a result that costs N bytes is accepted under a cap of N and refused
/// under a cap of N - 1.
#[test]
fn the_output_cap_holds_to_the_byte() {
    let sandbox = sandbox();
    for (at, call) in PHASES {
        let params = [("findings", "20"), ("evidence_bytes", "1000"), ("at", at)];
        let cost = sandbox
            .run(&test_modules::OUTPUT_FLOOD, &params, limits())
            .expect("well under the default cap")
            .output_bytes;
        assert!(cost > 20 * 1000, "{at}: {cost}");
        let capped = |cap| TaskLimits {
            max_output_bytes: cap,
            ..limits()
        };
        let output = sandbox
            .run(&test_modules::OUTPUT_FLOOD, &params, capped(cost))
            .unwrap_or_else(|e| panic!("{at}: a cap of exactly {cost} bytes fits: {e}"));
        assert_eq!(output.output_bytes, cost, "{at}");
        assert_eq!(output.findings.len(), 20, "{at}");
        let failure = sandbox
            .run(&test_modules::OUTPUT_FLOOD, &params, capped(cost - 1))
            .expect_err("one byte short");
        assert!(
            matches!(
                failure,
                TaskFailure::OutputLimit { call: c, kind: OutputKind::Findings, .. } if c == call
            ),
            "{at}: {failure:?}"
        );
    }
}

/// `component` with core sections appended at its top level: a core module
/// defining one memory of each of `pages` (64 KiB pages) and an instance of
/// it, which instantiating the component creates (nothing uses it).
fn with_extra_memories(component: &[u8], pages: &[u32]) -> Vec<u8> {
    fn leb(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn read_leb(bytes: &[u8], at: &mut usize) -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    // Core modules already in the component (one per section 1).
    let mut modules = 0;
    let mut at = 8;
    while at < component.len() {
        let id = component[at];
        at += 1;
        let size = read_leb(component, &mut at) as usize;
        if id == 1 {
            modules += 1;
        }
        at += size;
    }
    let mut memories = Vec::new();
    leb(pages.len() as u64, &mut memories);
    for &min in pages {
        memories.push(0x00);
        leb(u64::from(min), &mut memories);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(5, &memories, &mut module);
    let mut instance = Vec::new();
    leb(1, &mut instance);
    instance.push(0x00);
    leb(modules, &mut instance);
    leb(0, &mut instance);
    let mut out = component.to_vec();
    section(1, &module, &mut out);
    section(2, &instance, &mut out);
    out
}

/// A component with many memories took the shared pool's memory slots
/// (other hunts' tasks then failed to instantiate). Refused by name.
#[test]
fn a_component_with_many_memories_is_refused() {
    let sandbox = sandbox();
    let wasm = with_extra_memories(test_modules::NOOP.wasm, &[1; 8]);
    let outcome = sandbox.runtime.load(&module_digest(&wasm), &wasm);
    let error = match outcome {
        Ok(_) => panic!("a component with 9 memories loaded"),
        Err(e) => e,
    };
    let text = error.to_string();
    assert!(
        matches!(error, WorkerError::InvalidModule { .. }) && text.contains("memor"),
        "{text}"
    );
    sandbox.still_serves();
}

/// Two memories, each under the task's cap, that together exceed it: the
/// cap is per task, not per memory.
#[test]
fn the_memory_cap_is_per_task_across_memories() {
    let sandbox = sandbox();
    let cap: u64 = 32 * 1024 * 1024;
    // 31 MiB, plus the module's own memory (over a megabyte).
    let wasm = with_extra_memories(test_modules::NOOP.wasm, &[496]);
    let digest = module_digest(&wasm);
    let loaded = sandbox
        .runtime
        .load(&digest, &wasm)
        .expect("loads under 64 MiB");
    let task = TaskInput {
        params: &[],
        limits: TaskLimits {
            memory_bytes: cap,
            ..limits()
        },
        shard: SHARD,
        time_range: None,
        hunt: None,
    };
    let failure = sandbox
        .runtime
        .run(
            &loaded,
            &task,
            &sandbox.store,
            &Arc::new(AtomicBool::new(false)),
        )
        .expect_err("two memories over the cap together");
    assert!(
        matches!(failure, TaskFailure::MemoryLimit { limit_bytes, .. } if limit_bytes == cap),
        "{failure:?}"
    );
    sandbox.still_serves();
}

/// Whoever could write the cache directory could put any native code under
/// a module's name: `deserialize_file` trusted the file name. Cached
/// artifacts are now authenticated with a per-node key kept outside it.
#[test]
fn a_tampered_cache_file_is_refused_and_recompiled() {
    let sandbox = sandbox();
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = cache.path().join("module-cache");
    let noop = module_digest(test_modules::NOOP.wasm);
    let other = module_digest(test_modules::RUNAWAY_LOOP.wasm);
    {
        let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&dir)).expect("runtime");
        runtime.load(&noop, test_modules::NOOP.wasm).expect("load");
        runtime
            .load(&other, test_modules::RUNAWAY_LOOP.wasm)
            .expect("load");
    }
    // Another module's genuine artifact under noop's name, then garbage.
    let tampered = cache_file(&dir, &noop);
    let genuine = std::fs::read(&tampered).expect("read artifact");
    std::fs::copy(cache_file(&dir, &other), &tampered).expect("substitute");
    for round in 0..2 {
        let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&dir)).expect("runtime");
        let module = runtime
            .load(&noop, test_modules::NOOP.wasm)
            .expect("recompiled");
        assert_eq!(module.description().name, "noop", "round {round}");
        let task = TaskInput {
            params: &[],
            limits: limits(),
            shard: SHARD,
            time_range: None,
            hunt: None,
        };
        let output = runtime
            .run(
                &module,
                &task,
                &sandbox.store,
                &Arc::new(AtomicBool::new(false)),
            )
            .expect("runs");
        assert_eq!(output.events_matched, 27);
        // Rewritten with a good artifact.
        assert_eq!(std::fs::read(&tampered).expect("read artifact"), genuine);
        let mut garbage = genuine.clone();
        let middle = garbage.len() / 2;
        garbage[middle] ^= 0xff;
        std::fs::write(&tampered, &garbage).expect("corrupt");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.with_extension("key");
        let mode = std::fs::metadata(&key)
            .expect("the node's cache key, beside the cache directory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// The cache file of `digest` in `dir`.
fn cache_file(dir: &Path, digest: &ModuleDigest) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("read cache")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{digest}-")))
        })
        .unwrap_or_else(|| panic!("no cache file for {digest} in {}", dir.display()))
}

/// The disk cache keeps at most its bound (the newest artifact always), the
/// memory cache likewise; an evicted module is simply compiled again.
#[test]
fn module_caches_evict_the_least_recently_used_past_their_bounds() {
    let _sandbox = sandbox();
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = cache.path().join("module-cache");
    let config = RuntimeConfig {
        max_loaded_module_bytes: 1,
        ..RuntimeConfig::default()
    };
    let disk = ModuleCacheConfig {
        max_disk_bytes: 1,
        ..ModuleCacheConfig::in_dir(&dir)
    };
    let runtime = Runtime::with_cache(1, config, Some(disk)).expect("runtime");
    let noop = module_digest(test_modules::NOOP.wasm);
    let other = module_digest(test_modules::RUNAWAY_LOOP.wasm);
    let count = || std::fs::read_dir(&dir).expect("read cache").count();
    runtime.load(&noop, test_modules::NOOP.wasm).expect("load");
    assert_eq!(count(), 1);
    runtime
        .load(&other, test_modules::RUNAWAY_LOOP.wasm)
        .expect("load");
    assert_eq!(count(), 1, "the older artifact is evicted");
    cache_file(&dir, &other);
    assert!(runtime.cached(&noop).is_none(), "evicted from memory");
    assert!(runtime.cached(&other).is_some());
    let again = runtime
        .load(&noop, test_modules::NOOP.wasm)
        .expect("reload");
    assert_eq!(again.description().name, "noop");
    cache_file(&dir, &noop);
    assert_eq!(count(), 1);
}

/// The host evaluates the prefilter (and projects fields) for the guest:
/// that time counts against the task's CPU deadline. 250,000 events no
/// block statistics can rule out and none of which passes `rare-match`'s
/// prefilter used to cost the task nothing, however long they took.
#[test]
fn host_prefilter_work_counts_against_the_cpu_deadline() {
    let sandbox = sandbox();
    let lines: String = (0..250_000)
        .map(|i| format!("{{\"Image\":\"C:\\\\bin\\\\p{i}.exe\",\"CommandLine\":\"p{i} -x\"}}\n"))
        .collect();
    sandbox
        .store
        .ingest_jsonl("busy", BTreeMap::new(), lines.as_bytes())
        .expect("ingest");
    let loaded = sandbox.load(&test_modules::RARE_MATCH);
    let cpu = Duration::from_millis(5);
    let task = TaskInput {
        params: &[],
        limits: TaskLimits { cpu, ..limits() },
        shard: "busy",
        time_range: None,
        hunt: None,
    };
    let started = Instant::now();
    let failure = sandbox
        .runtime
        .run(
            &loaded,
            &task,
            &sandbox.store,
            &Arc::new(AtomicBool::new(false)),
        )
        .expect_err("a quarter of a million prefilter evaluations take more than 5 ms");
    eprintln!("stopped after {:?}: {failure}", started.elapsed());
    assert!(
        matches!(failure, TaskFailure::DeadlineExceeded { call: Call::Scan, limit } if limit == cpu),
        "{failure:?}"
    );
    sandbox.still_serves();
}
