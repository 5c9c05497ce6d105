//! `quarry bench sigma`: the shipped `sigma` module over real log files, in
//! the worker's sandbox, as a worker runs a task (one slot, so one core).
//!
//! From one run it reports:
//!
//! - the rules: files read, rules given (each file `--replicate` times as
//!   distinct rules), loaded and refused by reason, counted natively with
//!   [`sigma::RuleSet::compile`] (the code the guest runs), and the guest's
//!   own count from its log;
//! - the events: log files ingested with the worker's readers into one
//!   temporary shard (`--repeat` copies of them);
//! - the time to compile the component (once per digest: a worker caches
//!   it), the module's `init` (its rules compiled in the guest: a task over a
//!   one-event shard), and the scan: the task over the whole shard less that
//!   init;
//! - events per second of the scan and with init, and nanoseconds per
//!   event × loaded rule;
//! - the same shard scanned host-only (decode every event, touch one field)
//!   and by the no-op test module, with the sigma module's ratio to each;
//! - the findings and rule matches.
//!
//! `--replicate N` exists because the full SigmaHQ tree (~2,400 Windows
//! rules) is not at hand offline: each rule file is given N times, the copies
//! named `rule.replica-K/<file>` and with `-replica-K` appended to their `id`
//! (to their `title` when they have no `id`), so the module evaluates N times
//! as many distinct rules. Copies share their log source with the original,
//! as real rules of one category share theirs; the report says when the
//! rules are replicated.

use crate::module_tool::{default_limits, failure_kind};
use anyhow::Context;
use quarry_hunt_modules::SIGMA;
use quarry_hunt_modules::test_modules::NOOP;
use quarry_worker::ingest;
use quarry_worker::runtime::{
    LoadedModule, Runtime, RuntimeConfig, TaskInput, TaskLimits, TaskOutput, module_digest,
};
use quarry_worker::shard::ShardStore;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Rules used when `--rules` is not given and this path exists (the shared
/// data next to a checkout).
pub const DEFAULT_RULES: &str = "../shared/data/sigma/rules";
/// Logs used when `--logs` is not given and this path exists.
pub const DEFAULT_LOGS: &str = "../shared/data/logs/windows";
/// Goal of the issue: events per second per core…
pub const GOAL_EVENTS_PER_SEC: f64 = 20_000.0;
/// …with about this many Windows rules, in the release build.
pub const GOAL_RULES: usize = 2_400;
/// A scan shorter than this is reported as too short to time.
const MIN_TIMED_SECONDS: f64 = 0.05;

/// Most copies `--replicate` and `--repeat` accept.
pub const MAX_COPIES: usize = 1_000;

/// The shard the logs are ingested into.
const SHARD: &str = "bench-sigma";
/// A shard of one event, for timing the module's `init`.
const INIT_SHARD: &str = "bench-sigma-init";
/// CPU deadline of the benchmark's tasks (the worker's default maximum is
/// shorter; a large `--repeat` in a debug build may need more).
const TASK_CPU: Duration = Duration::from_secs(3 * 3600);

/// What to measure.
#[derive(Debug, Clone)]
pub struct SigmaBenchConfig {
    /// Sigma rule files and directories.
    pub rules: Vec<PathBuf>,
    /// Log files and directories.
    pub logs: Vec<PathBuf>,
    /// Times each rule file is given, as distinct rules.
    pub replicate: usize,
    /// Times the logs are ingested into the shard (the task scans them all).
    pub repeat: usize,
}

/// Refused rules of one reason.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// [`sigma::RuleError::reason`].
    pub reason: String,
    /// Rules refused for it.
    pub rules: usize,
    /// One of them (its parameter name).
    pub example: String,
}

/// What [`sigma_bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct SigmaBenchReport {
    /// Whether this is an optimised build (`cfg!(debug_assertions)` off).
    pub optimized_build: bool,
    /// The module's version.
    pub module_version: String,
    /// `--rules` paths.
    pub rule_paths: Vec<String>,
    /// Rule files read.
    pub rule_files: usize,
    /// `--replicate`.
    pub replicate: usize,
    /// Rules given to the module (`rule_files × replicate`).
    pub rules_given: usize,
    /// Rules that compiled.
    pub rules_loaded: usize,
    /// Correlation rules that compiled (evaluated by the coordinator after
    /// the merge; a single task only records their partial state).
    pub correlations_loaded: usize,
    /// Rules refused.
    pub rules_refused: usize,
    /// Refused rules by reason, most first.
    pub refused_by_reason: Vec<Refused>,
    /// The module's own summary line from its log (`N Sigma rules compiled
    /// …`), when it logged one.
    pub module_says: Option<String>,
    /// Log files ingested.
    pub log_files: usize,
    /// Events in them.
    pub events: u64,
    /// Records of them that were malformed (not stored).
    pub malformed: u64,
    /// `--repeat`.
    pub repeat: usize,
    /// Events the sigma task scanned (`events × repeat`).
    pub events_scanned: u64,
    /// Compiling the component to native code (a worker does it once per
    /// digest and caches it).
    pub module_compile_seconds: f64,
    /// A sigma task over one event: instantiation, `init` (the rules
    /// compiled in the guest), one event, `finish`.
    pub module_init_seconds: f64,
    /// The same task on the instance the hunt's previous task used
    /// (contract 0.2.3): the rules are already compiled.
    pub module_init_reused_seconds: f64,
    /// The sigma task over the whole shard.
    pub task_seconds: f64,
    /// `task_seconds - module_init_seconds`.
    pub scan_seconds: f64,
    /// `events_scanned / scan_seconds`.
    pub events_per_sec: f64,
    /// `events_scanned / task_seconds`.
    pub events_per_sec_with_init: f64,
    /// `scan_seconds / (events_scanned × rules_loaded)`, in nanoseconds.
    pub ns_per_event_rule: f64,
    /// Host-only pass over the shard: decode every event, touch one field.
    pub host_only_events_per_sec: f64,
    /// The no-op test module over the shard (its whole task).
    pub noop_events_per_sec: f64,
    /// `events_per_sec / noop_events_per_sec`.
    pub sigma_vs_noop: f64,
    /// `events_per_sec / host_only_events_per_sec`.
    pub sigma_vs_host_only: f64,
    /// Findings the task returned.
    pub findings: usize,
    /// Findings dropped at the task's limit.
    pub findings_dropped: u64,
    /// Event × rule matches (the module's `sigma_matches_by_rule` total,
    /// beyond its per-rule finding cap).
    pub matches: u64,
    /// The goal's rate.
    pub goal_events_per_sec: f64,
    /// The goal's rule count.
    pub goal_rules: usize,
}

impl SigmaBenchReport {
    /// Whether the rate reaches the goal's (whatever the build and rules).
    pub fn rate_reaches_goal(&self) -> bool {
        self.events_per_sec >= self.goal_events_per_sec
    }
}

impl fmt::Display for SigmaBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "quarry bench sigma: the shipped sigma module {} in the worker's sandbox, one task slot (one core); {}",
            self.module_version,
            if self.optimized_build {
                "release build"
            } else {
                "debug build [unoptimised: the goal is for the release build]"
            }
        )?;
        writeln!(
            f,
            "  rule files       {} read from {}",
            self.rule_files,
            self.rule_paths.join(", ")
        )?;
        if self.replicate > 1 {
            writeln!(
                f,
                "  replicated       each file given {} times as distinct rules (--replicate {}; ids suffixed -replica-K): {} rules given",
                self.replicate, self.replicate, self.rules_given
            )?;
        }
        if self.correlations_loaded > 0 {
            writeln!(
                f,
                "  rules loaded     {} (and {} correlations)",
                self.rules_loaded, self.correlations_loaded
            )?;
        } else {
            writeln!(f, "  rules loaded     {}", self.rules_loaded)?;
        }
        writeln!(f, "  rules refused    {}", self.rules_refused)?;
        for refused in &self.refused_by_reason {
            writeln!(
                f,
                "    {:>6}  {}  (e.g. {})",
                refused.rules, refused.reason, refused.example
            )?;
        }
        if let Some(says) = &self.module_says {
            writeln!(f, "  module log       {says}")?;
        }
        writeln!(
            f,
            "  events           {} in {} log files ({} malformed records not stored){}",
            self.events,
            self.log_files,
            self.malformed,
            if self.repeat > 1 {
                format!(
                    "; ingested {} times (--repeat {}): {} events scanned",
                    self.repeat, self.repeat, self.events_scanned
                )
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  module compile   {:.2} s (component to native code; once per module digest, a worker caches it)",
            self.module_compile_seconds
        )?;
        writeln!(
            f,
            "  module init      {:.3} s (a task over one event: instantiate, init compiles the rules in the guest, finish)",
            self.module_init_seconds
        )?;
        writeln!(
            f,
            "  reused instance  {:.3} s (the same task on the instance the hunt's previous task on this worker used: rules already compiled)",
            self.module_init_reused_seconds
        )?;
        writeln!(
            f,
            "  scan             {:.3} s (the task over {} events, {:.3} s, less init)",
            self.scan_seconds, self.events_scanned, self.task_seconds
        )?;
        if self.scan_seconds < MIN_TIMED_SECONDS {
            writeln!(
                f,
                "  (the scan took under {} ms: too short for its rates to mean anything; give more events or --repeat)",
                MIN_TIMED_SECONDS * 1000.0
            )?;
        }
        writeln!(
            f,
            "  sigma            {:>12.0} events/s ({:.0} events/s with init)   goal >= {:.0} events/s per core with ~{} rules, release build: {}{}",
            self.events_per_sec,
            self.events_per_sec_with_init,
            self.goal_events_per_sec,
            self.goal_rules,
            if self.rate_reaches_goal() {
                "met"
            } else {
                "NOT met"
            },
            self.goal_caveat()
        )?;
        writeln!(
            f,
            "  per event x rule {:>12.1} ns ({} rules loaded)",
            self.ns_per_event_rule, self.rules_loaded
        )?;
        writeln!(
            f,
            "  host-only        {:>12.0} events/s (decode every event, touch one field)",
            self.host_only_events_per_sec
        )?;
        writeln!(
            f,
            "  no-op module     {:>12.0} events/s",
            self.noop_events_per_sec
        )?;
        writeln!(
            f,
            "  sigma / no-op    {:>12.3}   sigma / host-only {:.3}",
            self.sigma_vs_noop, self.sigma_vs_host_only
        )?;
        write!(
            f,
            "  findings         {} ({} dropped at the task's limit); {} event x rule matches",
            self.findings, self.findings_dropped, self.matches
        )
    }
}

impl SigmaBenchReport {
    fn goal_caveat(&self) -> String {
        let mut notes = Vec::new();
        if !self.optimized_build {
            notes.push("debug build".to_owned());
        }
        let near = (GOAL_RULES * 4 / 5..=GOAL_RULES * 6 / 5).contains(&self.rules_loaded);
        if !near {
            notes.push(format!("{} rules loaded", self.rules_loaded));
        }
        if notes.is_empty() {
            String::new()
        } else {
            format!(" (this run: {}; not the goal's setting)", notes.join(", "))
        }
    }
}

/// Copies `params` (`rule.<name>` pairs) `times` times: the first as given,
/// copy K named `rule.replica-K/<name>` with `-replica-K` appended to its
/// `id` (see [`suffix_rule_id`]).
pub fn replicate_rules(params: &[(String, String)], times: usize) -> Vec<(String, String)> {
    let mut out = params.to_vec();
    for copy in 2..=times {
        for (name, text) in params {
            let rest = name
                .strip_prefix(sigma::loader::RULE_PARAM_PREFIX)
                .unwrap_or(name);
            out.push((
                format!("{}replica-{copy}/{rest}", sigma::loader::RULE_PARAM_PREFIX),
                suffix_document_ids(text, &format!("-replica-{copy}")),
            ));
        }
    }
    out
}

/// [`suffix_rule_id`] for every document of a multi-document file (`---`
/// lines between them): a correlation and its base rules each get their
/// own replica id, so replicas neither collide nor refer across copies.
pub fn suffix_document_ids(text: &str, suffix: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4 * suffix.len());
    let mut document = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            out.push_str(&suffix_rule_id(&document, suffix));
            out.push_str(line);
            document.clear();
        } else {
            document.push_str(line);
        }
    }
    out.push_str(&suffix_rule_id(&document, suffix));
    out
}

/// `text` with `suffix` appended to the value of its top-level `id:` line,
/// or, without one, of its `title:` line (the id then defaults to the
/// title); quotes and a trailing comment are kept in place. Unchanged when
/// it has neither on one line.
pub fn suffix_rule_id(text: &str, suffix: &str) -> String {
    for key in ["id:", "title:"] {
        let mut out = String::with_capacity(text.len() + suffix.len());
        let mut done = false;
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            let ending = &line[body.len()..];
            if !done
                && let Some(value) = body.strip_prefix(key)
                && let Some(value) = suffix_scalar(value, suffix)
            {
                out.push_str(key);
                out.push_str(&value);
                out.push_str(ending);
                done = true;
            } else {
                out.push_str(line);
            }
        }
        if done {
            return out;
        }
    }
    text.to_owned()
}

/// A one-line YAML scalar (with its leading space) with `suffix` appended
/// inside its quotes and before a comment; `None` when there is no value on
/// the line.
fn suffix_scalar(value: &str, suffix: &str) -> Option<String> {
    let start = value.len() - value.trim_start().len();
    let (lead, rest) = value.split_at(start);
    let rest = rest.trim_end();
    if rest.is_empty() || rest.starts_with('#') || rest.starts_with(['|', '>']) {
        return None;
    }
    if let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let close = rest.rfind(quote).filter(|&i| i > 0)?;
        return Some(format!(
            "{lead}{}{suffix}{}",
            &rest[..close],
            &rest[close..]
        ));
    }
    let (plain, comment) = match rest.find(" #") {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    Some(format!("{lead}{}{suffix}{comment}", plain.trim_end()))
}

/// The files of `path`: itself, or every file under it (recursively, sorted,
/// hidden ones left out).
fn log_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--logs {}: cannot read it", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("--logs: cannot list {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("--logs: cannot list {}", dir.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "--logs {}: the directory holds no files",
        path.display()
    );
    Ok(files)
}

/// `given`, or the default path when nothing was given and it exists.
fn paths_or_default(given: &[PathBuf], default: &str, flag: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let default = PathBuf::from(default);
    anyhow::ensure!(
        default.exists(),
        "no {flag} given and the default {} does not exist here; pass {flag} PATH",
        default.display()
    );
    Ok(vec![default])
}

/// Runs the benchmark; `progress` gets a line now and then.
///
/// # Errors
///
/// A rule or log path that cannot be read, logs without events, no rule
/// that loads, a module that fails to load, or a task that fails (with its
/// reason).
pub fn sigma_bench(
    config: &SigmaBenchConfig,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SigmaBenchReport> {
    anyhow::ensure!(
        (1..=MAX_COPIES).contains(&config.replicate),
        "--replicate must be between 1 and {MAX_COPIES}"
    );
    anyhow::ensure!(
        (1..=MAX_COPIES).contains(&config.repeat),
        "--repeat must be between 1 and {MAX_COPIES}"
    );
    let rule_paths = paths_or_default(&config.rules, DEFAULT_RULES, "--rules")?;
    let log_paths = paths_or_default(&config.logs, DEFAULT_LOGS, "--logs")?;

    // Rules.
    let mut files = Vec::new();
    for path in &rule_paths {
        files.extend(
            sigma::loader::rule_params(path)
                .with_context(|| format!("--rules {}", path.display()))?,
        );
    }
    let rule_files = files.len();
    let mut params = replicate_rules(&files, config.replicate);
    // The worker hands parameters over sorted; so does the benchmark.
    params.sort();
    if let Some(pair) = params.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        anyhow::bail!(
            "two rule files are both named `{}`: pass one --rules path that holds both, or rename one",
            pair[0].0
        );
    }
    progress(&format!(
        "compiling {} rules natively to count loaded and refused ...",
        params.len()
    ));
    let set = sigma::RuleSet::compile(
        params.iter().map(|(n, t)| (n.as_str(), t.as_str())),
        &sigma::CompileOptions::default(),
    );
    let rules_loaded = set.len();
    let correlations_loaded = set.correlation_count();
    let mut by_reason: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for rejected in set.rejected() {
        let entry = by_reason
            .entry(rejected.error.reason())
            .or_insert_with(|| (0, rejected.source.clone()));
        entry.0 += 1;
    }
    let rules_refused = set.rejected().len();
    drop(set);
    let mut refused_by_reason: Vec<Refused> = by_reason
        .into_iter()
        .map(|(reason, (rules, example))| Refused {
            reason,
            rules,
            example,
        })
        .collect();
    refused_by_reason.sort_by(|a, b| b.rules.cmp(&a.rules).then(a.reason.cmp(&b.reason)));
    anyhow::ensure!(
        rules_loaded > 0,
        "none of the {} rules could be loaded ({}); pass Sigma rules the module supports",
        params.len(),
        refused_by_reason
            .iter()
            .map(|r| format!("{} {}", r.rules, r.reason))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Logs.
    let mut logs = Vec::new();
    for path in &log_paths {
        logs.extend(log_files(path)?);
    }
    let scratch = tempfile::Builder::new()
        .prefix("quarry-bench-sigma-")
        .tempdir()
        .context("cannot create a temporary directory for the shard")?;
    let store_dir = scratch.path().join("shards");
    let store = ShardStore::open(&store_dir)
        .with_context(|| format!("cannot open a shard store in {}", store_dir.display()))?;
    progress(&format!(
        "ingesting {} log files{} ...",
        logs.len(),
        if config.repeat > 1 {
            format!(" {} times", config.repeat)
        } else {
            String::new()
        }
    ));
    let (mut events, mut malformed, mut events_scanned) = (0u64, 0u64, 0u64);
    let mut first_event = None;
    for copy in 0..config.repeat {
        for path in &logs {
            let (_, mut records) = ingest::open(path, None)
                .with_context(|| format!("--logs: cannot ingest {}", path.display()))?;
            if first_event.is_none() {
                // Kept for the init shard; stored below all the same.
                let mut head = Vec::new();
                for record in records.by_ref() {
                    let ok = record.is_ok();
                    head.push(record);
                    if ok {
                        break;
                    }
                }
                first_event = head.iter().rev().find_map(|r| r.as_ref().ok().cloned());
                records = Box::new(head.into_iter().chain(records));
            }
            let report = store
                .append_from(
                    SHARD,
                    Default::default(),
                    &path.display().to_string(),
                    records,
                    &mut |_| {},
                )
                .with_context(|| format!("--logs: cannot ingest {}", path.display()))?;
            if copy == 0 {
                events += report.events_stored;
                malformed += report.malformed;
            }
            events_scanned += report.events_stored;
        }
    }
    let Some(first_event) = first_event else {
        anyhow::bail!(
            "the {} log files hold no events ({malformed} malformed records); pass log files the worker can ingest (JSON lines, EVTX, syslog, Zeek, auditd)",
            logs.len()
        );
    };
    store
        .append_from(
            INIT_SHARD,
            Default::default(),
            "first event",
            std::iter::once(Ok(first_event)),
            &mut |_| {},
        )
        .context("cannot store the one-event shard")?;

    // Modules.
    progress("compiling the sigma and no-op modules ...");
    let runtime = Runtime::new(
        1,
        RuntimeConfig {
            max_cpu: TASK_CPU,
            ..RuntimeConfig::default()
        },
        None,
    )
    .context("cannot start the wasm runtime")?;
    let started = Instant::now();
    let sigma_module = runtime
        .load(&module_digest(SIGMA.wasm), SIGMA.wasm)
        .context("the shipped sigma module does not load")?;
    let module_compile_seconds = started.elapsed().as_secs_f64();
    let noop_module = runtime
        .load(&module_digest(NOOP.wasm), NOOP.wasm)
        .context("the no-op test module does not load")?;
    let limits = TaskLimits {
        cpu: TASK_CPU,
        ..default_limits()
    };

    // Host only.
    progress("host-only scan (decode every event, touch one field) ...");
    let started = Instant::now();
    quarry_worker::bench::host_only_scan(&store, SHARD)?;
    let host_only_events_per_sec = rate(events_scanned, started.elapsed());

    progress("no-op module over the shard ...");
    let (noop_elapsed, _) = run(
        &runtime,
        &noop_module,
        "no-op",
        &[],
        limits,
        SHARD,
        &store,
        None,
    )?;
    let noop_events_per_sec = rate(events_scanned, noop_elapsed);

    progress("sigma module over one event (init), on a fresh and on a reused instance ...");
    let init = |hunt| {
        run(
            &runtime,
            &sigma_module,
            "sigma",
            &params,
            limits,
            INIT_SHARD,
            &store,
            hunt,
        )
    };
    let (init_elapsed, _) = init(None)?;
    // Two tasks of one hunt: the second runs on the first's instance.
    let hunt = quarry_proto::HuntId::new("bench-sigma");
    init(Some(&hunt))?;
    let (reused_elapsed, reused) = init(Some(&hunt))?;
    if !reused.reused_instance {
        anyhow::bail!("the sigma module's second task of one hunt did not reuse its instance");
    }
    progress(&format!("sigma module over {events_scanned} events ..."));
    let (task_elapsed, output) = run(
        &runtime,
        &sigma_module,
        "sigma",
        &params,
        limits,
        SHARD,
        &store,
        None,
    )?;
    let scan = task_elapsed.saturating_sub(init_elapsed);
    let events_per_sec = rate(events_scanned, scan);
    let matches = output
        .aggregates
        .iter()
        .filter(|a| a.name == "sigma_matches_by_rule")
        .filter_map(|a| match &a.value {
            quarry_contract::AggregateValue::Counts(counts) => Some(counts.values().sum::<u64>()),
            _ => None,
        })
        .sum();
    let module_says = output
        .log
        .iter()
        .find(|line| line.contains("compiled into") && line.contains("Sigma rules"))
        .map(|line| line.trim().to_owned());
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    Ok(SigmaBenchReport {
        optimized_build: !cfg!(debug_assertions),
        module_version: SIGMA.version.to_owned(),
        rule_paths: rule_paths.iter().map(|p| p.display().to_string()).collect(),
        rule_files,
        replicate: config.replicate,
        rules_given: params.len(),
        rules_loaded,
        correlations_loaded,
        rules_refused,
        refused_by_reason,
        module_says,
        log_files: logs.len(),
        events,
        malformed,
        repeat: config.repeat,
        events_scanned,
        module_compile_seconds,
        module_init_seconds: init_elapsed.as_secs_f64(),
        module_init_reused_seconds: reused_elapsed.as_secs_f64(),
        task_seconds: task_elapsed.as_secs_f64(),
        scan_seconds: scan.as_secs_f64(),
        events_per_sec,
        events_per_sec_with_init: rate(events_scanned, task_elapsed),
        ns_per_event_rule: scan.as_secs_f64() * 1e9
            / (events_scanned as f64 * rules_loaded as f64).max(1.0),
        host_only_events_per_sec,
        noop_events_per_sec,
        sigma_vs_noop: ratio(events_per_sec, noop_events_per_sec),
        sigma_vs_host_only: ratio(events_per_sec, host_only_events_per_sec),
        findings: output.findings.len(),
        findings_dropped: output.findings_dropped,
        matches,
        goal_events_per_sec: GOAL_EVENTS_PER_SEC,
        goal_rules: GOAL_RULES,
    })
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// One task of `module` over `shard`, timed: on a fresh instance, or with
/// `hunt`, on the instance of the hunt's previous task if there is one.
#[allow(clippy::too_many_arguments)]
fn run(
    runtime: &Runtime,
    module: &LoadedModule,
    name: &str,
    params: &[(String, String)],
    limits: TaskLimits,
    shard: &str,
    store: &ShardStore,
    hunt: Option<&quarry_proto::HuntId>,
) -> anyhow::Result<(Duration, TaskOutput)> {
    let task = TaskInput {
        params,
        limits,
        shard,
        time_range: None,
        hunt,
    };
    let started = Instant::now();
    let output = runtime
        .run(module, &task, store, &Arc::new(AtomicBool::new(false)))
        .map_err(|failure| {
            anyhow::anyhow!(
                "the {name} module's task failed ({}): {failure}",
                failure_kind(&failure)
            )
        })?;
    Ok((started.elapsed(), output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_get_the_suffix_inside_quotes_and_before_comments() {
        let s = "-replica-2";
        assert_eq!(
            suffix_rule_id("title: T\nid: 5f3c-01\nlevel: high\n", s),
            "title: T\nid: 5f3c-01-replica-2\nlevel: high\n"
        );
        assert_eq!(suffix_rule_id("id: 'a1'\r\n", s), "id: 'a1-replica-2'\r\n");
        assert_eq!(
            suffix_document_ids(
                "id: a\nname: n\n---\nid: c\ncorrelation: {}\n---\ntitle: t\n",
                s
            ),
            "id: a-replica-2\nname: n\n---\nid: c-replica-2\ncorrelation: {}\n---\ntitle: t-replica-2\n"
        );
        assert_eq!(
            suffix_rule_id("id: \"a1\" # x\n", s),
            "id: \"a1-replica-2\" # x\n"
        );
        assert_eq!(suffix_rule_id("id: a1 # x", s), "id: a1-replica-2 # x");
        // Nested `id:` keys are not the rule's; without an id, the title.
        assert_eq!(
            suffix_rule_id("title: 'A #1'\nrelated:\n  - id: b\n", s),
            "title: 'A #1-replica-2'\nrelated:\n  - id: b\n"
        );
        assert_eq!(suffix_rule_id("foo: bar\n", s), "foo: bar\n");
    }

    #[test]
    fn replicas_are_distinct_rules() {
        let rule = "title: Whoami\nid: 11111111-2222-3333-4444-555555555555\nlogsource: {category: process_creation, product: windows}\ndetection:\n  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel\n";
        let params = vec![("rule.w.yml".to_owned(), rule.to_owned())];
        let copies = replicate_rules(&params, 3);
        let names: Vec<_> = copies.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["rule.w.yml", "rule.replica-2/w.yml", "rule.replica-3/w.yml"]
        );
        let set = sigma::RuleSet::compile(
            copies.iter().map(|(n, t)| (n.as_str(), t.as_str())),
            &sigma::CompileOptions::default(),
        );
        assert_eq!(set.len(), 3, "{:?}", set.rejected());
        assert!(copies[2].1.contains("555555555555-replica-3"));
    }
}
