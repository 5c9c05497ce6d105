//! The scan benchmark behind `quarry bench scan` (issue 3, "Benchmark").
//!
//! [`scan_bench`] builds one shard of realistic mixed security events
//! (Windows Security 4624/4625/4688/4672, Sysmon process creation, Linux
//! auth.log sshd records, Zeek-style DNS queries) from a deterministic PRNG
//! and measures, in one run:
//!
//! - the ingest rate through [`ShardStore::append`] and the bytes on disk
//!   per event;
//! - the host-only rate: [`ShardStore::scan_with`] with no filter, which
//!   reads, decompresses and decodes every event into `serde_json`, touching
//!   one field (the limit without any module);
//! - the no-op module rate (the `noop` test module: one field, no
//!   prefilter) and its ratio to host-only (goal ≥ 0.80);
//! - the rare-match module rate (the `rare-match` test module, whose
//!   prefilter selects ~1% of the events) and its ratio to host-only
//!   (goal ≥ 3.0), with the blocks its prefilter skipped.
//!
//! - with the shipped `query` module: a selective query (the rare events'
//!   `where`, `| stats count() by Computer`) with its clauses pushed down to
//!   the host prefilter and without (`pushdown=false`), and the ratio of the
//!   two (goal ≥ 3.0); and `stats count() by EventID` over every event, as a
//!   ratio to the no-op module (goal ≥ 0.7).
//!
//! - when given a [`DetectionModule`] (the CLI gives `rare-process`): one
//!   realistic detection run twice over the same shard, as its shipped wasm
//!   module and compiled natively into the benchmark, and the ratio
//!   wasm / native (goal ≥ 0.85). The native pass does the host's work for
//!   the module the way a worker does ([`scan_for_module`]: the declared
//!   prefilter, block skipping and projection) and hands the same batches
//!   to the native code; both passes must give the same findings and
//!   aggregates.
//!
//! The rare events are an LSASS dump through `rundll32.exe
//! comsvcs.dll,MiniDump` (Sysmon event 1). They come in bursts, as an
//! attack does: in every window of 65,536 events one run of 1/50 of the
//! window holds them, each event of the run being one with probability 1/2,
//! so ~1% of all events. `Image` takes a few dozen values per block (under
//! the block index's limit of distinct values) and the background never runs
//! `rundll32.exe`, so the block index rules the prefilter out for every
//! block outside a burst: the module is fed ~1% of the events and most blocks
//! are skipped undecoded. Spread uniformly instead, 1% of events would put
//! ~40 of them in every 4,096-event block and no block could be skipped; the
//! rate would then only gain from not crossing into the guest.
//!
//! The modules are passed in as bytes ([`BenchModules`]): the worker crate
//! does not depend on the module bundle (the CLI and the tests do), nor on
//! the module crates (they dev-depend on it), so the native detection is
//! passed in as a [`NativeTask`] factory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::WorkerError;
use crate::event::{StoredEvent, format_rfc3339_ms, lookup};
use crate::ingest::RecordResult;
use crate::memory;
use crate::prefilter::Projection;
use crate::rng::SplitMix64 as Rng;
use crate::runtime::{
    BATCH_SIZE, ModuleDescription, Runtime, RuntimeConfig, TaskInput, TaskLimits, TaskOutput,
    module_digest, types,
};
pub use crate::shard::ProjectedEvent;
use crate::shard::{ScanFilter, ScanStats, ShardError, ShardStore};

/// Goal for no-op module rate / host-only rate.
pub const NOOP_RATIO_GOAL: f64 = 0.90;
/// Goal for rare-match module rate / host-only rate.
pub const RARE_RATIO_GOAL: f64 = 3.0;
/// Goal for the host-only decode of every field (issue 18), events/s on one
/// core of the release build.
pub const FULL_DECODE_GOAL: f64 = 500_000.0;
/// Goal for a module reading three fields with no prefilter (issue 18),
/// events/s on one core of the release build.
pub const THREE_FIELDS_GOAL: f64 = 2_000_000.0;
/// Goal for the shard's bytes on disk per event (issue 18).
pub const BYTES_PER_EVENT_GOAL: f64 = 60.0;
/// The three fields of the three-field pass.
pub const THREE_FIELDS: &str = "EventID,Computer,TargetUserName";
/// Goal for the selective query's rate with pushdown / without.
pub const QUERY_PUSHDOWN_GOAL: f64 = 3.0;
/// Goal for the `stats count() by` query's rate / the no-op module's.
pub const QUERY_STATS_GOAL: f64 = 0.7;
/// Goal for a detection's rate as its wasm module / compiled natively.
pub const WASM_NATIVE_GOAL: f64 = 0.85;
/// The selective query: the rare events' conditions, pushed down or not.
pub const SELECTIVE_QUERY: &str = r#"where Image endswith "\rundll32.exe" and CommandLine contains "comsvcs" | stats count() by Computer"#;
/// The aggregation over every event.
pub const STATS_QUERY: &str = "stats count() by EventID";
/// Goal for the peak RSS of a scan pass (issue 3: a 5 GB shard scans in under
/// 300 MB).
pub const SCAN_RSS_GOAL_BYTES: u64 = 300 * 1_000_000;
/// Field holding the incompressible padding of `--pad-bytes`.
pub const PADDING_FIELD: &str = "bench_padding";
/// Events in a shard when not told otherwise.
pub const DEFAULT_EVENTS: u64 = 2_000_000;
/// Name of the benchmark shard.
pub const SHARD: &str = "bench-scan";

/// Events per window holding one attack burst.
const BURST_WINDOW: u64 = 65_536;
/// A burst is `1 / BURST_DIVISOR` of its window.
const BURST_DIVISOR: u64 = 50;
/// Generous CPU deadline for the benchmark's tasks.
const TASK_CPU: Duration = Duration::from_secs(3 * 3600);

/// The two modules the benchmark runs, as component bytes
/// (`quarry_hunt_modules::test_modules::{NOOP, RARE_MATCH}`).
#[derive(Clone, Copy)]
pub struct BenchModules<'a> {
    /// Reads one field, no prefilter, emits nothing.
    pub noop: &'a [u8],
    /// Prefilter selecting the rare events; reports their count as the
    /// aggregate `rare-match` (key `matched`).
    pub rare_match: &'a [u8],
    /// The shipped `query` module, for the query passes (skipped without).
    pub query: Option<&'a [u8]>,
    /// A detection as wasm and native, for the wasm / native passes
    /// (skipped without).
    pub detection: Option<DetectionModule<'a>>,
}

/// Makes one task's native detection from the task's parameters.
pub type NativeFactory<'a> = &'a dyn Fn(&[(String, String)]) -> Result<Box<dyn NativeTask>, String>;

/// One detection module twice: its shipped wasm component and the same
/// crate's logic compiled into the benchmark binary.
#[derive(Clone, Copy)]
pub struct DetectionModule<'a> {
    /// The module's name, for the report.
    pub name: &'a str,
    /// The shipped component.
    pub wasm: &'a [u8],
    /// Parameters of both tasks.
    pub params: &'a [(String, String)],
    /// A fresh native task, initialised with the parameters.
    pub native: NativeFactory<'a>,
}

/// One task of a detection compiled natively: the calls a worker makes on
/// its wasm instance after `init`.
pub trait NativeTask {
    /// One batch of projected events, as the wasm `scan` gets it.
    ///
    /// # Errors
    ///
    /// The module's own error for the batch.
    fn scan(&mut self, batch: Vec<ProjectedEvent>) -> Result<(), String>;

    /// The end of the task: every finding (from `scan` and `finish`) and
    /// the aggregates.
    ///
    /// # Errors
    ///
    /// A call out of order, or an aggregate the contract refuses.
    fn finish(self: Box<Self>) -> Result<DetectionOutput, String>;
}

/// A finding, every field of the WIT record, comparable across the wasm
/// and the native build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FindingRecord {
    /// Rule id.
    pub rule: String,
    /// Title.
    pub title: String,
    /// Severity, lower-case.
    pub severity: &'static str,
    /// Confidence, 0..=100.
    pub confidence: u8,
    /// Entity.
    pub entity: String,
    /// Time of the completing event.
    pub timestamp_ms: i64,
    /// Evidence pairs, in order.
    pub evidence: Vec<(String, String)>,
    /// ATT&CK ids.
    pub techniques: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Shard offsets.
    pub offsets: Vec<u64>,
}

impl From<types::Finding> for FindingRecord {
    fn from(f: types::Finding) -> Self {
        FindingRecord {
            rule: f.rule,
            title: f.title,
            severity: match f.severity {
                types::Severity::Informational => "informational",
                types::Severity::Low => "low",
                types::Severity::Medium => "medium",
                types::Severity::High => "high",
                types::Severity::Critical => "critical",
            },
            confidence: f.confidence,
            entity: f.entity,
            timestamp_ms: f.timestamp_ms,
            evidence: f.evidence,
            techniques: f.techniques,
            tags: f.tags,
            offsets: f.offsets,
        }
    }
}

/// What one task of a detection returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectionOutput {
    /// Findings in the order returned.
    pub findings: Vec<FindingRecord>,
    /// Aggregates, checked and normalised as the worker does.
    pub aggregates: Vec<quarry_contract::Aggregate>,
}

/// The wasm / native passes of one detection.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionPasses {
    /// The module.
    pub module: String,
    /// The shipped wasm module, run by the worker's runtime.
    pub wasm: Pass,
    /// The same logic compiled natively, after the same host scan.
    pub native: Pass,
    /// Findings of the wasm task (kept and dropped).
    pub wasm_findings: u64,
    /// Findings of the native task.
    pub native_findings: u64,
    /// Aggregates of the wasm task.
    pub aggregates: usize,
    /// Whether both gave the same findings, in the same order, and the same
    /// aggregates.
    pub same_output: bool,
    /// `wasm.events_per_sec / native.events_per_sec`.
    pub ratio: f64,
    /// Goal for `ratio`.
    pub goal: f64,
}

impl DetectionPasses {
    /// Whether the ratio goal is met by passes that agree.
    pub fn met(&self) -> bool {
        self.same_output && self.ratio >= self.goal
    }
}

/// The passes of the `query` module.
#[derive(Debug, Clone, Serialize)]
pub struct QueryPasses {
    /// [`SELECTIVE_QUERY`] with its `where` pushed down to the prefilter.
    pub selective: Pass,
    /// The same with `pushdown=false`.
    pub selective_unpushed: Pass,
    /// Events the selective query counted (from its partial), pushed down
    /// and not: both must be the rare events.
    pub selective_counted: (u64, u64),
    /// [`STATS_QUERY`] over every event.
    pub stats: Pass,
    /// `selective.events_per_sec / selective_unpushed.events_per_sec`.
    pub pushdown_ratio: f64,
    /// `stats.events_per_sec / noop.events_per_sec`.
    pub stats_ratio: f64,
    /// Goal for `pushdown_ratio`.
    pub pushdown_goal: f64,
    /// Goal for `stats_ratio`.
    pub stats_goal: f64,
}

/// One timed pass.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    /// Wall time.
    pub seconds: f64,
    /// Events of the shard per second of wall time (all events of the shard,
    /// skipped or not, so passes compare).
    pub events_per_sec: f64,
    /// Events decoded by the host.
    pub events_decoded: u64,
    /// Events passed to the consumer (the closure or the guest).
    pub events_delivered: u64,
    /// Blocks decompressed.
    pub blocks_read: u64,
    /// Blocks skipped undecoded.
    pub blocks_skipped: u64,
    /// Highest resident set size of the process during the pass (the peak is
    /// reset before it), when the platform tells.
    pub peak_rss_bytes: Option<u64>,
}

/// What [`scan_bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScanBenchReport {
    /// Events in the shard.
    pub events: u64,
    /// Events that are the rare marker, as generated.
    pub rare_events: u64,
    /// Incompressible bytes added to every event (`--pad-bytes`).
    pub padding_bytes: usize,
    /// Average size of an event as compact JSON, sampled (1 in 64).
    pub json_bytes_per_event: f64,
    /// Wall time of the ingest, generation included.
    pub ingest_seconds: f64,
    /// Of which generating the events.
    pub generate_seconds: f64,
    /// Events per second through `append` (generation excluded).
    pub ingest_events_per_sec: f64,
    /// Bytes of the shard directory on disk.
    pub bytes_on_disk: u64,
    /// `bytes_on_disk / events`.
    pub bytes_per_event: f64,
    /// Blocks in the shard.
    pub blocks: u64,
    /// Highest resident set size during the ingest, when the platform tells.
    pub ingest_peak_rss_bytes: Option<u64>,
    /// Host-only scan: every column of every block decoded into typed
    /// values, no events built, no module.
    pub host: Pass,
    /// Every field of every event projected into the text a module
    /// declaring them all would get.
    pub every_field: Pass,
    /// Every event rebuilt whole as a JSON value (what pivots and evidence
    /// read), one field touched.
    pub whole_events: Pass,
    /// The no-op module reading the three fields of [`THREE_FIELDS`], no
    /// prefilter.
    pub three_fields: Pass,
    /// The no-op module with batches through `scan` instead of by column
    /// (contract 0.2.4's `columnar` turned off).
    pub noop_by_event: Pass,
    /// The no-op module.
    pub noop: Pass,
    /// The rare-match module.
    pub rare: Pass,
    /// Events the rare-match module counted (its aggregate).
    pub rare_matched_by_module: u64,
    /// The `query` module's passes, when it was given.
    pub query: Option<QueryPasses>,
    /// The detection's wasm / native passes, when it was given.
    pub detection: Option<DetectionPasses>,
    /// `noop.events_per_sec / host.events_per_sec`.
    pub noop_ratio: f64,
    /// `rare.events_per_sec / host.events_per_sec`.
    pub rare_ratio: f64,
    /// Goal for `noop_ratio`.
    pub noop_ratio_goal: f64,
    /// Goal for `rare_ratio`.
    pub rare_ratio_goal: f64,
    /// Goal for the highest scan pass peak RSS (met on a shard of any size
    /// when scans hold one block at a time).
    pub scan_rss_goal_bytes: u64,
    /// Time to compile and load both modules (not in the rates).
    pub module_load_seconds: f64,
    /// Whether this is an optimised build (`cfg!(debug_assertions)` off).
    pub optimized_build: bool,
}

impl ScanBenchReport {
    /// Whether both ratio goals and the memory goal are met.
    pub fn goals_met(&self) -> bool {
        self.noop_ratio >= self.noop_ratio_goal
            && self.rare_ratio >= self.rare_ratio_goal
            && self.query.as_ref().is_none_or(|q| {
                q.pushdown_ratio >= q.pushdown_goal && q.stats_ratio >= q.stats_goal
            })
            && self.detection.as_ref().is_none_or(DetectionPasses::met)
            && self.bytes_per_event <= BYTES_PER_EVENT_GOAL
            && (!self.optimized_build
                || (self.host.events_per_sec >= FULL_DECODE_GOAL
                    && self.three_fields.events_per_sec >= THREE_FIELDS_GOAL))
            && self.scan_rss_met().unwrap_or(true)
    }

    /// Highest peak RSS of the three scan passes.
    pub fn scan_peak_rss_bytes(&self) -> Option<u64> {
        [
            &self.host,
            &self.every_field,
            &self.whole_events,
            &self.noop,
            &self.noop_by_event,
            &self.three_fields,
            &self.rare,
        ]
        .iter()
        .filter_map(|p| p.peak_rss_bytes)
        .max()
    }

    /// Absolute rates are goals of the release build only.
    fn build_note(&self) -> &'static str {
        if self.optimized_build {
            ""
        } else {
            " (release build)"
        }
    }

    fn scan_rss_met(&self) -> Option<bool> {
        self.scan_peak_rss_bytes()
            .map(|peak| peak < self.scan_rss_goal_bytes)
    }
}

fn megabytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(bytes) => format!("{:.0} MB", bytes as f64 / 1e6),
        None => "unknown".to_owned(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

impl fmt::Display for ScanBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        writeln!(
            f,
            "quarry bench scan: {} events ({} rare, {:.2}%), ~{:.0} bytes of JSON each{}, {} blocks{}",
            self.events,
            self.rare_events,
            pct(self.rare_events, self.events),
            self.json_bytes_per_event,
            if self.padding_bytes > 0 {
                format!(" (with {} bytes of padding)", self.padding_bytes)
            } else {
                String::new()
            },
            self.blocks,
            if self.optimized_build {
                ""
            } else {
                " [unoptimised build]"
            }
        )?;
        writeln!(
            f,
            "  ingest           {:>12.0} events/s  ({:.1} s, of which {:.1} s generating the events)",
            self.ingest_events_per_sec, self.ingest_seconds, self.generate_seconds
        )?;
        writeln!(
            f,
            "  on disk          {:>12.1} bytes/event ({} bytes); ingest peak RSS {}",
            self.bytes_per_event,
            self.bytes_on_disk,
            megabytes(self.ingest_peak_rss_bytes)
        )?;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, p: &Pass| {
            writeln!(
                f,
                "  {name:<16} {:>12.0} events/s  ({:.1} s; {} events decoded, {} delivered; blocks {} read, {} skipped; peak RSS {})",
                p.events_per_sec,
                p.seconds,
                p.events_decoded,
                p.events_delivered,
                p.blocks_read,
                p.blocks_skipped,
                megabytes(p.peak_rss_bytes)
            )
        };
        line(f, "host-only", &self.host)?;
        line(f, "every field", &self.every_field)?;
        line(f, "whole events", &self.whole_events)?;
        line(f, "no-op module", &self.noop)?;
        line(f, "no-op, by event", &self.noop_by_event)?;
        line(f, "three fields", &self.three_fields)?;
        line(f, "rare-match", &self.rare)?;
        writeln!(
            f,
            "  rare-match prefilter selected {:.2}% of events; the module counted {}",
            pct(self.rare.events_delivered, self.events),
            self.rare_matched_by_module
        )?;
        writeln!(
            f,
            "  no-op / host     {:>12.2}   goal >= {:.2}: {}",
            self.noop_ratio,
            self.noop_ratio_goal,
            verdict(self.noop_ratio >= self.noop_ratio_goal)
        )?;
        writeln!(
            f,
            "  full decode      {:>12.0}   goal >= {:.0} events/s{}: {}",
            self.host.events_per_sec,
            FULL_DECODE_GOAL,
            self.build_note(),
            verdict(self.host.events_per_sec >= FULL_DECODE_GOAL)
        )?;
        writeln!(
            f,
            "  three fields     {:>12.0}   goal >= {:.0} events/s{}: {}",
            self.three_fields.events_per_sec,
            THREE_FIELDS_GOAL,
            self.build_note(),
            verdict(self.three_fields.events_per_sec >= THREE_FIELDS_GOAL)
        )?;
        writeln!(
            f,
            "  bytes/event      {:>12.1}   goal <= {:.0}: {}",
            self.bytes_per_event,
            BYTES_PER_EVENT_GOAL,
            verdict(self.bytes_per_event <= BYTES_PER_EVENT_GOAL)
        )?;
        writeln!(
            f,
            "  by column / by event {:>8.2}   (the no-op module: batches by column over batches through `scan`)",
            self.noop.events_per_sec / self.noop_by_event.events_per_sec.max(f64::MIN_POSITIVE)
        )?;
        writeln!(
            f,
            "  rare / host      {:>12.2}   goal >= {:.2}: {}",
            self.rare_ratio,
            self.rare_ratio_goal,
            verdict(self.rare_ratio >= self.rare_ratio_goal)
        )?;
        if let Some(q) = &self.query {
            line(f, "query, pushdown", &q.selective)?;
            line(f, "query, unpushed", &q.selective_unpushed)?;
            line(f, "query stats by", &q.stats)?;
            writeln!(
                f,
                "  selective query counted {} events pushed down, {} not (rare events: {})",
                q.selective_counted.0, q.selective_counted.1, self.rare_events
            )?;
            writeln!(
                f,
                "  pushdown / none  {:>12.2}   goal >= {:.2}: {}",
                q.pushdown_ratio,
                q.pushdown_goal,
                verdict(q.pushdown_ratio >= q.pushdown_goal)
            )?;
            writeln!(
                f,
                "  stats / no-op    {:>12.2}   goal >= {:.2}: {}",
                q.stats_ratio,
                q.stats_goal,
                verdict(q.stats_ratio >= q.stats_goal)
            )?;
        }
        if let Some(d) = &self.detection {
            line(f, "detection, wasm", &d.wasm)?;
            line(f, "detection, native", &d.native)?;
            writeln!(
                f,
                "  detection: {}; findings {} wasm, {} native; {} aggregates; outputs {}",
                d.module,
                d.wasm_findings,
                d.native_findings,
                d.aggregates,
                if d.same_output { "identical" } else { "DIFFER" }
            )?;
            writeln!(
                f,
                "  wasm / native    {:>12.2}   goal >= {:.2}: {}",
                d.ratio,
                d.goal,
                verdict(d.met())
            )?;
        }
        if let Some(met) = self.scan_rss_met() {
            writeln!(
                f,
                "  scan peak RSS    {:>12}   goal < {} (shard {:.2} GB on disk): {}",
                megabytes(self.scan_peak_rss_bytes()),
                megabytes(Some(self.scan_rss_goal_bytes)),
                self.bytes_on_disk as f64 / 1e9,
                verdict(met)
            )?;
        }
        write!(
            f,
            "  (module compile + load: {:.1} s, not counted in the rates)",
            self.module_load_seconds
        )
    }
}

/// Builds a shard of `events` generated events under `dir` (a fresh
/// directory is best: an existing benchmark shard there is appended to is
/// refused) and measures ingest, host-only scan, the no-op module and the
/// rare-match module, in that order. `progress` gets a line of text now and
/// then.
///
/// # Errors
///
/// A shard store failure, a module that does not load, or a task that fails.
pub fn scan_bench(
    dir: &Path,
    events: u64,
    padding_bytes: usize,
    modules: BenchModules<'_>,
    mut progress: impl FnMut(&str),
) -> Result<ScanBenchReport, WorkerError> {
    let shards_dir = dir.join("shards");
    let store = ShardStore::open(&shards_dir)?;
    if store.get(SHARD).is_some() {
        return Err(WorkerError::Task(format!(
            "{} already holds a shard `{SHARD}`; run the benchmark in an empty directory",
            shards_dir.display()
        )));
    }

    // Ingest.
    progress(&format!("generating and ingesting {events} events ..."));
    let mut generator = Generator::new(events);
    generator.padding = padding_bytes;
    memory::reset_peak();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let labels = BTreeMap::from([("source".to_owned(), "bench".to_owned())]);
    let report = store.append(SHARD, labels, &mut generator, &mut |p| {
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            progress(&format!(
                "  ingested {} / {events} events ({:.0} events/s)",
                p.events_acknowledged,
                p.events_acknowledged as f64 / secs.max(1e-9)
            ));
        }
    })?;
    let ingest_seconds = started.elapsed().as_secs_f64();
    let ingest_peak_rss_bytes = memory::peak_resident_bytes();
    let generate_seconds = generator.spent.as_secs_f64();
    if report.events_stored != events || report.malformed != 0 {
        return Err(WorkerError::Task(format!(
            "ingest stored {} of {events} events ({} malformed)",
            report.events_stored, report.malformed
        )));
    }
    let bytes_on_disk = dir_size(&store.shard_dir(SHARD))?;
    progress(&format!(
        "ingested in {ingest_seconds:.1} s; {:.1} bytes/event on disk",
        bytes_on_disk as f64 / events.max(1) as f64
    ));

    // Host only.
    let host_pass = |name: &str,
                     progress: &mut dyn FnMut(&str),
                     scan: &dyn Fn() -> Result<ScanStats, ShardError>|
     -> Result<Pass, WorkerError> {
        progress(&format!("{name} ..."));
        memory::reset_peak();
        let started = Instant::now();
        let stats = scan()?;
        let p = pass(
            started.elapsed(),
            events,
            stats.events_read,
            stats.events_emitted,
            stats.blocks_read,
            stats.blocks_skipped,
        );
        progress(&format!(
            "  {:.0} events/s ({:.1} s)",
            p.events_per_sec, p.seconds
        ));
        Ok(p)
    };
    let host = host_pass(
        "host-only scan (every column decoded)",
        &mut progress,
        &|| host_decode_columns(&store, SHARD),
    )?;
    let every_field = host_pass("every field projected", &mut progress, &|| {
        host_decode_every_field(&store, SHARD)
    })?;
    let whole_events = host_pass("whole events as JSON values", &mut progress, &|| {
        host_only_scan(&store, SHARD)
    })?;

    // Modules.
    progress("compiling the no-op and rare-match modules ...");
    let started = Instant::now();
    let config = RuntimeConfig {
        max_cpu: TASK_CPU,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(1, config, Some(&dir.join("module-cache")))?;
    let noop_module = runtime.load(&module_digest(modules.noop), modules.noop)?;
    let rare_module = runtime.load(&module_digest(modules.rare_match), modules.rare_match)?;
    let module_load_seconds = started.elapsed().as_secs_f64();
    let run_with =
        |module, params: &[(String, String)], name: &str, progress: &mut dyn FnMut(&str)| {
            progress(&format!("{name} over the shard ..."));
            timed_task(&runtime, module, params, &store, SHARD, events, progress)
        };
    let run =
        |module, name: &str, progress: &mut dyn FnMut(&str)| run_with(module, &[], name, progress);
    let (noop, _) = run(&noop_module, "no-op module", &mut progress)?;
    let three_params = vec![("fields".to_owned(), THREE_FIELDS.to_owned())];
    let (three_fields, _) = run_with(
        &noop_module,
        &three_params,
        "three-field module",
        &mut progress,
    )?;
    let by_event = Runtime::new(
        1,
        RuntimeConfig {
            max_cpu: TASK_CPU,
            column_batches: false,
            ..RuntimeConfig::default()
        },
        None,
    )?;
    let noop_by_event = {
        let module = by_event.load(&module_digest(modules.noop), modules.noop)?;
        progress("no-op module, batches by event ...");
        timed_task(
            &by_event,
            &module,
            &[],
            &store,
            SHARD,
            events,
            &mut progress,
        )?
        .0
    };
    let (rare, rare_output) = run(&rare_module, "rare-match module", &mut progress)?;
    let rare_matched_by_module = rare_output
        .aggregates
        .iter()
        .filter(|a| a.name == "rare-match")
        .filter_map(|a| match &a.value {
            quarry_contract::AggregateValue::Counts(counts) => counts.get("matched").copied(),
            _ => None,
        })
        .sum();

    let query = match modules.query {
        None => None,
        Some(wasm) => {
            progress("compiling the query module ...");
            let module = runtime.load(&module_digest(wasm), wasm)?;
            let params = |query: &str, pushdown: bool| {
                vec![
                    ("query".to_owned(), query.to_owned()),
                    ("pushdown".to_owned(), pushdown.to_string()),
                ]
            };
            let (selective, pushed) = run_with(
                &module,
                &params(SELECTIVE_QUERY, true),
                "selective query, pushed down",
                &mut progress,
            )?;
            let (selective_unpushed, unpushed) = run_with(
                &module,
                &params(SELECTIVE_QUERY, false),
                "selective query, not pushed down",
                &mut progress,
            )?;
            let (stats, _) = run_with(
                &module,
                &params(STATS_QUERY, true),
                "stats query",
                &mut progress,
            )?;
            let per =
                |a: &Pass, b: &Pass| a.events_per_sec / b.events_per_sec.max(f64::MIN_POSITIVE);
            Some(QueryPasses {
                pushdown_ratio: per(&selective, &selective_unpushed),
                stats_ratio: per(&stats, &noop),
                selective_counted: (query_events(&pushed), query_events(&unpushed)),
                selective,
                selective_unpushed,
                stats,
                pushdown_goal: QUERY_PUSHDOWN_GOAL,
                stats_goal: QUERY_STATS_GOAL,
            })
        }
    };

    let detection = match modules.detection {
        None => None,
        Some(detection) => {
            let run = detection_passes(&runtime, &store, SHARD, events, detection, &mut progress)?;
            Some(run.passes)
        }
    };

    let ratio = |p: &Pass| p.events_per_sec / host.events_per_sec.max(f64::MIN_POSITIVE);
    Ok(ScanBenchReport {
        events,
        rare_events: generator.rare,
        padding_bytes,
        json_bytes_per_event: generator.sampled_bytes as f64 / generator.sampled.max(1) as f64,
        ingest_seconds,
        generate_seconds,
        ingest_events_per_sec: events as f64 / (ingest_seconds - generate_seconds).max(1e-9),
        bytes_on_disk,
        bytes_per_event: bytes_on_disk as f64 / events.max(1) as f64,
        blocks: host.blocks_read + host.blocks_skipped,
        ingest_peak_rss_bytes,
        noop_ratio: ratio(&noop),
        rare_ratio: ratio(&rare),
        host,
        every_field,
        whole_events,
        three_fields,
        noop_by_event,
        noop,
        rare,
        rare_matched_by_module,
        query,
        detection,
        noop_ratio_goal: NOOP_RATIO_GOAL,
        rare_ratio_goal: RARE_RATIO_GOAL,
        scan_rss_goal_bytes: SCAN_RSS_GOAL_BYTES,
        module_load_seconds,
        optimized_build: !cfg!(debug_assertions),
    })
}

/// Limits of the benchmark's tasks: generous, so that they measure.
fn task_limits() -> TaskLimits {
    TaskLimits {
        cpu: TASK_CPU,
        memory_bytes: 256 * 1024 * 1024,
        max_findings: 1000,
        max_output_bytes: 16 * 1024 * 1024,
    }
}

/// Both passes of a detection and what each returned.
#[derive(Debug, Clone)]
pub struct DetectionRun {
    /// The timed passes and their comparison.
    pub passes: DetectionPasses,
    /// What the wasm task returned.
    pub wasm_output: DetectionOutput,
    /// What the native task returned.
    pub native_output: DetectionOutput,
}

/// Runs `detection` over `shard` as its wasm module in `runtime` (a task as
/// a worker runs it) and then natively: [`scan_for_module`] with the
/// description the wasm module declared, each batch handed to a
/// [`NativeTask`]. `events` (the shard's) is what the rates count. A module
/// whose `plan` changes its descriptor is refused: the native pass would
/// not project the same fields.
///
/// # Errors
///
/// A module that does not load, a task that fails either way, or a store
/// failure.
pub fn detection_passes(
    runtime: &Runtime,
    store: &ShardStore,
    shard: &str,
    events: u64,
    detection: DetectionModule<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<DetectionRun, WorkerError> {
    let name = detection.name;
    progress(&format!("compiling the {name} module ..."));
    let module = runtime.load(&module_digest(detection.wasm), detection.wasm)?;
    let description = module.description();

    progress(&format!("{name} as wasm over the shard ..."));
    let (wasm, output) = timed_task(
        runtime,
        &module,
        detection.params,
        store,
        shard,
        events,
        progress,
    )?;
    if output.fields_projected != description.fields.len() {
        return Err(WorkerError::Task(format!(
            "{name} planned {} fields instead of its {} declared ones; the native pass cannot follow a plan",
            output.fields_projected,
            description.fields.len()
        )));
    }
    let wasm_findings = output.findings.len() as u64 + output.findings_dropped;
    let wasm_truncated = output.findings_truncated;
    let wasm_output = DetectionOutput {
        findings: output
            .findings
            .into_iter()
            .map(FindingRecord::from)
            .collect(),
        aggregates: output.aggregates,
    };

    progress(&format!("{name} compiled natively over the shard ..."));
    let native_error = |e: String| WorkerError::Task(format!("native {name}: {e}"));
    memory::reset_peak();
    let started = Instant::now();
    let mut native = (detection.native)(detection.params).map_err(native_error)?;
    let (stats, delivered) = scan_for_module(store, shard, description, |batch| {
        native.scan(batch).map_err(native_error)
    })?;
    let native_output = native.finish().map_err(native_error)?;
    let native = pass(
        started.elapsed(),
        events,
        // In range, before the prefilter: what a task counts as scanned.
        stats.events_read - stats.events_skipped,
        delivered,
        stats.blocks_read,
        stats.blocks_skipped,
    );
    progress(&format!(
        "  {:.0} events/s ({:.1} s)",
        native.events_per_sec, native.seconds
    ));

    let passes = DetectionPasses {
        module: name.to_owned(),
        wasm_findings,
        native_findings: native_output.findings.len() as u64,
        aggregates: wasm_output.aggregates.len(),
        same_output: !wasm_truncated && wasm_output == native_output,
        ratio: wasm.events_per_sec / native.events_per_sec.max(f64::MIN_POSITIVE),
        goal: WASM_NATIVE_GOAL,
        wasm,
        native,
    };
    Ok(DetectionRun {
        passes,
        wasm_output,
        native_output,
    })
}

/// Runs one task of `module` over `shard` with the benchmark's limits and
/// times it (peak RSS reset first); reports the rate through `progress`.
fn timed_task(
    runtime: &Runtime,
    module: &crate::runtime::LoadedModule,
    params: &[(String, String)],
    store: &ShardStore,
    shard: &str,
    events: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<(Pass, TaskOutput), WorkerError> {
    let task = TaskInput {
        params,
        limits: task_limits(),
        shard,
        time_range: None,
        hunt: None,
    };
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    memory::reset_peak();
    let started = Instant::now();
    let output = runtime.run_task(module, &task, &Default::default(), store, &cancel)?;
    let p = pass(
        started.elapsed(),
        events,
        output.events_scanned,
        output.events_matched,
        output.blocks_read,
        output.blocks_skipped,
    );
    progress(&format!(
        "  {:.0} events/s ({:.1} s)",
        p.events_per_sec, p.seconds
    ));
    Ok((p, output))
}

/// The host's work for one task of a module, as a worker does it
/// (`Runtime::run_incremental`): `shard` scanned whole with
/// [`ShardStore::scan_projected`], blocks that the block index rules out of
/// the module's prefilter skipped undecoded, in batches of [`BATCH_SIZE`]
/// (the last one smaller) cut where the worker cuts them. Returns the
/// scan's statistics and the events handed to `consume`.
///
/// # Errors
///
/// A store failure, or `consume`'s error, which stops the scan.
pub fn scan_for_module<E: From<ShardError>>(
    store: &ShardStore,
    shard: &str,
    description: &ModuleDescription,
    mut consume: impl FnMut(Vec<ProjectedEvent>) -> Result<(), E>,
) -> Result<(ScanStats, u64), E> {
    let projection = Projection::new(&description.fields);
    let block_filter = |stats: &crate::shard::BlockStats| {
        stats.may_match_prefilter(&description.clauses, &description.any_of)
    };
    let filter = ScanFilter {
        time_range: None,
        block_filter: (!description.prefilter.is_empty()).then_some(&block_filter as _),
        min_offset: 0,
    };
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    let mut delivered = 0u64;
    let stats = store.scan_projected(
        shard,
        &filter,
        &description.prefilter,
        &projection,
        |_, events| -> Result<(), E> {
            for event in events {
                batch.push(event);
                if batch.len() >= BATCH_SIZE {
                    delivered += batch.len() as u64;
                    consume(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(BATCH_SIZE),
                    ))?;
                }
            }
            Ok(())
        },
    )?;
    if !batch.is_empty() {
        delivered += batch.len() as u64;
        consume(batch)?;
    }
    Ok((stats, delivered))
}

/// Events a `query` task kept (the sum of its `query:events` counts).
fn query_events(output: &TaskOutput) -> u64 {
    output
        .aggregates
        .iter()
        .filter(|a| a.name == "query:events")
        .filter_map(|a| match &a.value {
            quarry_contract::AggregateValue::Counts(counts) => Some(counts.values().sum::<u64>()),
            _ => None,
        })
        .sum()
}

fn pass(
    elapsed: Duration,
    events: u64,
    decoded: u64,
    delivered: u64,
    blocks_read: u64,
    blocks_skipped: u64,
) -> Pass {
    let seconds = elapsed.as_secs_f64();
    Pass {
        seconds,
        events_per_sec: events as f64 / seconds.max(1e-9),
        events_decoded: decoded,
        events_delivered: delivered,
        blocks_read,
        blocks_skipped,
        peak_rss_bytes: memory::peak_resident_bytes(),
    }
}

/// The host-only full decode of every field: every column of every block
/// of `shard` decompressed and decoded into typed values
/// ([`crate::columnar::ColumnBlock::decode_columns`]), as a column engine
/// decodes into arrays, without building events; a block in the rows
/// format decodes whole, into JSON values.
///
/// # Errors
///
/// As [`ShardStore::scan_payloads`].
pub fn host_decode_columns(store: &ShardStore, shard: &str) -> Result<ScanStats, ShardError> {
    let mut values = 0u64;
    let stats = store.scan_payloads(shard, &ScanFilter::default(), |block, payload| {
        let corrupt = |e: crate::shard::segment::BlockError| ShardError::Corrupt {
            shard: shard.to_owned(),
            path: store.shard_dir(shard),
            line: 0,
            reason: format!("block at offset {}: {e}", block.first_offset),
        };
        match payload {
            crate::shard::Payload::Columns(bytes) => {
                let columns = crate::columnar::ColumnBlock::parse(bytes).map_err(corrupt)?;
                values += columns.decode_columns().map_err(corrupt)?;
                Ok(columns.len() as u64)
            }
            crate::shard::Payload::Rows(_) => {
                Ok(payload.decode_all().map_err(corrupt)?.len() as u64)
            }
        }
    })?;
    std::hint::black_box(values);
    Ok(stats)
}

/// The host-only decode of every field: each event of `shard` projected
/// onto every field the shard's statistics name (at most
/// [`crate::shard::MAX_SHARD_FIELDS`]), as a module declaring them all
/// would get them, with no module.
///
/// # Errors
///
/// As [`ShardStore::scan_projected`].
pub fn host_decode_every_field(store: &ShardStore, shard: &str) -> Result<ScanStats, ShardError> {
    let fields: Vec<String> = store
        .get(shard)
        .map(|meta| meta.fields.into_keys().collect())
        .unwrap_or_default();
    let projection = Projection::new(&fields);
    let mut values = 0u64;
    let stats = store.scan_projected(
        shard,
        &ScanFilter::default(),
        &crate::prefilter::Prefilter::match_all(),
        &projection,
        |_, events| -> Result<(), ShardError> {
            values += events
                .iter()
                .map(|e| e.values.iter().flatten().count() as u64)
                .sum::<u64>();
            Ok(())
        },
    )?;
    std::hint::black_box(values);
    Ok(stats)
}

/// The host-only baseline of a scan benchmark: every event of `shard`
/// decoded and one field looked up, as a module's projection would at the
/// least. Timed by the caller.
pub fn host_only_scan(store: &ShardStore, shard: &str) -> Result<ScanStats, ShardError> {
    let mut touched = 0u64;
    let stats = store.scan_with(
        shard,
        &ScanFilter::default(),
        BATCH_SIZE,
        |batch: &[StoredEvent]| -> Result<(), ShardError> {
            for event in batch {
                if lookup(&event.doc, "EventID").is_some() {
                    touched += 1;
                }
            }
            Ok(())
        },
    )?;
    std::hint::black_box(touched);
    Ok(stats)
}

fn dir_size(dir: &Path) -> Result<u64, WorkerError> {
    let io = |e: std::io::Error| WorkerError::Task(format!("cannot size {}: {e}", dir.display()));
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// A deterministic hex string of `len` characters from `seed` (stable per
/// seed, as a binary's hash is).
fn hex_of(seed: u64, len: usize) -> String {
    let mut rng = Rng(seed ^ 0x5151_5151);
    let mut s = String::with_capacity(len);
    while s.len() < len {
        s.push_str(&format!("{:016X}", rng.next_u64()));
    }
    s.truncate(len);
    s
}

const HOSTS: &[&str] = &[
    "DC01.corp.example.com",
    "DC02.corp.example.com",
    "FS01.corp.example.com",
    "WS-0142.corp.example.com",
    "WS-0217.corp.example.com",
    "WS-0388.corp.example.com",
    "WS-0401.corp.example.com",
    "SQL01.corp.example.com",
];
const LINUX_HOSTS: &[&str] = &["bastion-1", "web-03", "web-04", "db-02", "build-07"];
const USERS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "svc_backup",
    "svc_sql",
    "administrator",
];
const LINUX_USERS: &[&str] = &[
    "root", "ubuntu", "deploy", "git", "admin", "alice", "postgres",
];
/// (Image, OriginalFileName, Description, Company)
const IMAGES: &[(&str, &str, &str, &str)] = &[
    (
        r"C:\Windows\System32\svchost.exe",
        "svchost.exe",
        "Host Process for Windows Services",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\cmd.exe",
        "Cmd.Exe",
        "Windows Command Processor",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        "PowerShell.EXE",
        "Windows PowerShell",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\conhost.exe",
        "CONHOST.EXE",
        "Console Window Host",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\explorer.exe",
        "EXPLORER.EXE",
        "Windows Explorer",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\taskhostw.exe",
        "taskhostw.exe",
        "Host Process for Windows Tasks",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\backgroundTaskHost.exe",
        "backgroundTaskHost.exe",
        "Background Task Host",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\RuntimeBroker.exe",
        "RuntimeBroker.exe",
        "Runtime Broker",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\SearchProtocolHost.exe",
        "SearchProtocolHost.exe",
        "Microsoft Windows Search Protocol Host",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\wbem\WmiPrvSE.exe",
        "Wmiprvse.exe",
        "WMI Provider Host",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\sc.exe",
        "sc.exe",
        "Service Control Manager Configuration Tool",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\net.exe",
        "net.exe",
        "Net Command",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\ipconfig.exe",
        "ipconfig.exe",
        "IP Configuration Utility",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\whoami.exe",
        "whoami.exe",
        "whoami - displays logged on user information",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\schtasks.exe",
        "schtasks.exe",
        "Task Scheduler Configuration Tool",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\msiexec.exe",
        "msiexec.exe",
        "Windows® installer",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\dllhost.exe",
        "dllhost.exe",
        "COM Surrogate",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\smartscreen.exe",
        "smartscreen.exe",
        "Windows Defender SmartScreen",
        "Microsoft Corporation",
    ),
    (
        r"C:\Program Files\Google\Chrome\Application\chrome.exe",
        "chrome.exe",
        "Google Chrome",
        "Google LLC",
    ),
    (
        r"C:\Program Files\Mozilla Firefox\firefox.exe",
        "firefox.exe",
        "Firefox",
        "Mozilla Corporation",
    ),
    (
        r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE",
        "Outlook.exe",
        "Microsoft Outlook",
        "Microsoft Corporation",
    ),
    (
        r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE",
        "WinWord.exe",
        "Microsoft Word",
        "Microsoft Corporation",
    ),
    (
        r"C:\Program Files\Microsoft Office\root\Office16\EXCEL.EXE",
        "Excel.exe",
        "Microsoft Excel",
        "Microsoft Corporation",
    ),
    (
        r"C:\Program Files\7-Zip\7z.exe",
        "7z.exe",
        "7-Zip Console",
        "Igor Pavlov",
    ),
    (
        r"C:\Program Files\Git\cmd\git.exe",
        "git.exe",
        "Git for Windows",
        "The Git Development Community",
    ),
    (
        r"C:\Program Files\Microsoft VS Code\Code.exe",
        "electron.exe",
        "Visual Studio Code",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\notepad.exe",
        "NOTEPAD.EXE",
        "Notepad",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\tasklist.exe",
        "tasklist.exe",
        "Lists the current running tasks",
        "Microsoft Corporation",
    ),
    (
        r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.24090.11-0\MsMpEng.exe",
        "MsMpEng.exe",
        "Antimalware Service Executable",
        "Microsoft Corporation",
    ),
    (
        r"C:\Windows\System32\gpupdate.exe",
        "GPUpdate.exe",
        "Microsoft® Windows Group Policy Update Utility",
        "Microsoft Corporation",
    ),
];
const ARGS: &[&str] = &[
    "",
    " -k netsvcs -p -s Schedule",
    " /c echo %TEMP%",
    " -NoProfile -ExecutionPolicy Bypass -File C:\\Scripts\\inventory.ps1",
    " 0xffffffff -ForceV1",
    " --type=renderer --field-trial-handle=1712,i,1099 --lang=en-US --renderer-client-id=7",
    " query wuauserv",
    " user /domain",
    " /all",
    " /query /fo LIST /v",
    " /target:computer /force",
    " status --porcelain",
    " a -tzip C:\\Users\\Public\\report.zip C:\\Users\\Public\\Documents",
];
const DOMAINS: &[&str] = &[
    "www.google.com",
    "outlook.office365.com",
    "login.microsoftonline.com",
    "update.microsoft.com",
    "github.com",
    "api.github.com",
    "slack.com",
    "cdn.jsdelivr.net",
    "corp.example.com",
    "dc01.corp.example.com",
    "wpad.corp.example.com",
    "time.windows.com",
    "ocsp.digicert.com",
    "s3.amazonaws.com",
    "telemetry.example-vendor.net",
];
const QTYPES: &[&str] = &["A", "A", "A", "AAAA", "AAAA", "PTR", "SRV", "TXT", "CNAME"];

/// The generated events, as records for [`ShardStore::append`].
pub(crate) struct Generator {
    rng: Rng,
    total: u64,
    index: u64,
    /// Current timestamp, epoch ms.
    ts_ms: i64,
    /// Burst of the current window: `[start, end)`, event indices.
    burst: (u64, u64),
    /// Rare events generated.
    rare: u64,
    /// Time spent generating.
    spent: Duration,
    sampled: u64,
    sampled_bytes: u64,
    /// Bytes of incompressible text added to every event (field
    /// [`PADDING_FIELD`]), to reach a large shard on disk with fewer events.
    padding: usize,
}

impl Generator {
    pub(crate) fn new(total: u64) -> Self {
        Self {
            rng: Rng(0x0051_5541_5252_5921),
            total,
            index: 0,
            // 2026-11-20T00:00:00Z.
            ts_ms: 1_795_132_800_000,
            burst: (0, 0),
            rare: 0,
            spent: Duration::ZERO,
            sampled: 0,
            sampled_bytes: 0,
            padding: 0,
        }
    }

    /// `len` characters of the base64 alphabet drawn from the PRNG, so zstd
    /// cannot shrink them.
    fn padding_text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut text = String::with_capacity(len);
        while text.len() < len {
            let mut bits = self.rng.next_u64();
            for _ in 0..10.min(len - text.len()) {
                text.push(char::from(ALPHABET[(bits & 63) as usize]));
                bits >>= 6;
            }
        }
        text
    }

    fn event(&mut self, i: u64) -> Value {
        if i.is_multiple_of(BURST_WINDOW) {
            let len = BURST_WINDOW.min(self.total - i);
            let burst_len = len / BURST_DIVISOR;
            let start = i + self.rng.below(len - burst_len + 1);
            self.burst = (start, start + burst_len);
        }
        self.ts_ms += 5 + self.rng.below(70) as i64;
        let timestamp = format_rfc3339_ms(self.ts_ms);
        let in_burst = self.burst.0 <= i && i < self.burst.1;
        if in_burst && self.rng.chance(1, 2) {
            self.rare += 1;
            return self.lsass_dump(timestamp);
        }
        match self.rng.below(100) {
            0..25 => self.logon(timestamp, true),
            25..30 => self.logon(timestamp, false),
            30..42 => self.process_4688(timestamp),
            42..47 => self.special_privileges(timestamp),
            47..67 => self.sysmon_process(timestamp),
            67..82 => self.sshd(timestamp),
            _ => self.dns(timestamp),
        }
    }

    fn windows_base(
        &mut self,
        timestamp: String,
        event_id: u32,
        channel: &str,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("@timestamp".into(), timestamp.into());
        m.insert("EventID".into(), event_id.into());
        m.insert("Channel".into(), channel.into());
        m.insert("Computer".into(), (*self.rng.pick(HOSTS)).into());
        m.insert("EventRecordID".into(), (self.index * 7 + 1_000_000).into());
        m
    }

    fn security(&mut self, timestamp: String, event_id: u32) -> Map<String, Value> {
        let mut m = self.windows_base(timestamp, event_id, "Security");
        m.insert(
            "Provider_Name".into(),
            "Microsoft-Windows-Security-Auditing".into(),
        );
        m.insert("SubjectUserSid".into(), "S-1-5-18".into());
        m.insert("SubjectUserName".into(), "DC01$".into());
        m.insert("SubjectDomainName".into(), "CORP".into());
        m.insert("SubjectLogonId".into(), "0x3e7".into());
        m
    }

    fn logon(&mut self, timestamp: String, success: bool) -> Value {
        let mut m = self.security(timestamp, if success { 4624 } else { 4625 });
        let user = *self.rng.pick(USERS);
        let ip = format!(
            "10.{}.{}.{}",
            self.rng.below(4),
            self.rng.below(40),
            2 + self.rng.below(250)
        );
        let logon_type = *self.rng.pick(&[2u32, 3, 3, 3, 5, 7, 10]);
        m.insert(
            "TargetUserSid".into(),
            format!(
                "S-1-5-21-3623811015-3361044348-30300820-{}",
                1100 + user.len()
            )
            .into(),
        );
        m.insert("TargetUserName".into(), user.into());
        m.insert("TargetDomainName".into(), "CORP".into());
        m.insert("LogonType".into(), logon_type.into());
        m.insert(
            "LogonProcessName".into(),
            if logon_type == 3 {
                "NtLmSsp "
            } else {
                "User32 "
            }
            .into(),
        );
        m.insert(
            "AuthenticationPackageName".into(),
            if logon_type == 3 { "NTLM" } else { "Negotiate" }.into(),
        );
        m.insert(
            "WorkstationName".into(),
            format!("WS-{:04}", self.rng.below(500)).into(),
        );
        m.insert("IpAddress".into(), ip.into());
        m.insert(
            "IpPort".into(),
            (49152 + self.rng.below(16000)).to_string().into(),
        );
        m.insert(
            "ProcessName".into(),
            r"C:\Windows\System32\lsass.exe".into(),
        );
        if success {
            m.insert(
                "TargetLogonId".into(),
                format!("0x{:x}", self.rng.below(1 << 28)).into(),
            );
            m.insert("ElevatedToken".into(), "%%1843".into());
            m.insert("ImpersonationLevel".into(), "%%1833".into());
        } else {
            m.insert("Status".into(), "0xc000006d".into());
            m.insert(
                "SubStatus".into(),
                (*self.rng.pick(&["0xc000006a", "0xc0000064", "0xc000006a"])).into(),
            );
            m.insert("FailureReason".into(), "%%2313".into());
        }
        Value::Object(m)
    }

    fn process_4688(&mut self, timestamp: String) -> Value {
        let mut m = self.security(timestamp, 4688);
        let (image, ..) = *self.rng.pick(IMAGES);
        let (parent, ..) = *self.rng.pick(&IMAGES[..6]);
        let args = *self.rng.pick(ARGS);
        m.insert(
            "NewProcessId".into(),
            format!("0x{:x}", self.rng.below(65536)).into(),
        );
        m.insert("NewProcessName".into(), image.into());
        m.insert("TokenElevationType".into(), "%%1936".into());
        m.insert(
            "ProcessId".into(),
            format!("0x{:x}", self.rng.below(65536)).into(),
        );
        m.insert("CommandLine".into(), format!("\"{image}\"{args}").into());
        m.insert("TargetUserName".into(), (*self.rng.pick(USERS)).into());
        m.insert("ParentProcessName".into(), parent.into());
        m.insert("MandatoryLabel".into(), "S-1-16-8192".into());
        Value::Object(m)
    }

    fn special_privileges(&mut self, timestamp: String) -> Value {
        let mut m = self.security(timestamp, 4672);
        m.insert("SubjectUserName".into(), (*self.rng.pick(USERS)).into());
        m.insert(
            "SubjectLogonId".into(),
            format!("0x{:x}", self.rng.below(1 << 28)).into(),
        );
        m.insert(
            "PrivilegeList".into(),
            "SeSecurityPrivilege\n\t\t\tSeBackupPrivilege\n\t\t\tSeRestorePrivilege\n\t\t\tSeDebugPrivilege".into(),
        );
        Value::Object(m)
    }

    fn sysmon_base(
        &mut self,
        timestamp: String,
        image_index: usize,
    ) -> (Map<String, Value>, &'static str) {
        let (image, original, description, company) = IMAGES[image_index];
        let mut m = self.windows_base(timestamp.clone(), 1, "Microsoft-Windows-Sysmon/Operational");
        m.insert("Provider_Name".into(), "Microsoft-Windows-Sysmon".into());
        m.insert("RuleName".into(), "-".into());
        m.insert(
            "UtcTime".into(),
            timestamp.replace('T', " ").trim_end_matches('Z').into(),
        );
        m.insert(
            "ProcessGuid".into(),
            format!(
                "{{4c1a9b2e-{:04x}-6745-{:04x}-{:012x}}}",
                self.rng.below(65536),
                self.rng.below(65536),
                self.rng.below(1 << 40)
            )
            .into(),
        );
        m.insert("ProcessId".into(), (4 * self.rng.below(16000)).into());
        m.insert("Image".into(), image.into());
        m.insert("Description".into(), description.into());
        m.insert("Company".into(), company.into());
        m.insert("OriginalFileName".into(), original.into());
        m.insert("CurrentDirectory".into(), r"C:\Windows\system32\".into());
        m.insert(
            "LogonGuid".into(),
            "{4c1a9b2e-0001-6745-e703-000000000000}".into(),
        );
        m.insert(
            "LogonId".into(),
            format!("0x{:x}", self.rng.below(1 << 24)).into(),
        );
        m.insert("TerminalSessionId".into(), self.rng.below(3).into());
        m.insert(
            "Hashes".into(),
            format!(
                "SHA256={},IMPHASH={}",
                hex_of(image_index as u64 + 200, 64),
                hex_of(image_index as u64 + 300, 32)
            )
            .into(),
        );
        (m, image)
    }

    fn sysmon_process(&mut self, timestamp: String) -> Value {
        let index = self.rng.below(IMAGES.len() as u64) as usize;
        let (mut m, image) = self.sysmon_base(timestamp, index);
        let (parent, ..) = *self.rng.pick(&IMAGES[..6]);
        let args = *self.rng.pick(ARGS);
        m.insert("CommandLine".into(), format!("\"{image}\"{args}").into());
        m.insert(
            "User".into(),
            format!("CORP\\{}", self.rng.pick(USERS)).into(),
        );
        m.insert(
            "IntegrityLevel".into(),
            (*self.rng.pick(&["Medium", "Medium", "High", "System"])).into(),
        );
        m.insert(
            "ParentProcessGuid".into(),
            "{4c1a9b2e-0000-6745-0b00-000000000a00}".into(),
        );
        m.insert("ParentProcessId".into(), (4 * self.rng.below(16000)).into());
        m.insert("ParentImage".into(), parent.into());
        m.insert("ParentCommandLine".into(), format!("\"{parent}\"").into());
        Value::Object(m)
    }

    /// The rare marker: `rundll32.exe comsvcs.dll, MiniDump <lsass pid>`.
    fn lsass_dump(&mut self, timestamp: String) -> Value {
        let (mut m, _) = self.sysmon_base(timestamp, 0);
        let pid = 600 + 4 * self.rng.below(100);
        m.insert("Image".into(), r"C:\Windows\System32\rundll32.exe".into());
        m.insert("OriginalFileName".into(), "RUNDLL32.EXE".into());
        m.insert(
            "Description".into(),
            "Windows host process (Rundll32)".into(),
        );
        m.insert("CommandLine".into(), format!(r"rundll32.exe C:\Windows\System32\comsvcs.dll, MiniDump {pid} C:\Windows\Temp\{:x}.dmp full", self.rng.below(1 << 32)).into());
        m.insert("User".into(), "CORP\\svc_backup".into());
        m.insert("IntegrityLevel".into(), "High".into());
        m.insert(
            "ParentProcessGuid".into(),
            "{4c1a9b2e-0000-6745-0b00-000000000b00}".into(),
        );
        m.insert("ParentProcessId".into(), 7312.into());
        m.insert(
            "ParentImage".into(),
            r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe".into(),
        );
        m.insert(
            "ParentCommandLine".into(),
            "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA".into(),
        );
        Value::Object(m)
    }

    fn sshd(&mut self, timestamp: String) -> Value {
        let host = *self.rng.pick(LINUX_HOSTS);
        let user = *self.rng.pick(LINUX_USERS);
        let ip = format!(
            "{}.{}.{}.{}",
            23 + self.rng.below(180),
            self.rng.below(256),
            self.rng.below(256),
            1 + self.rng.below(254)
        );
        let port = 1024 + self.rng.below(64000);
        let pid = 1000 + self.rng.below(60000);
        let (event, message) = match self.rng.below(10) {
            0..3 => (
                "accepted_publickey",
                format!(
                    "Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:{}",
                    hex_of(user.len() as u64, 43)
                ),
            ),
            3..4 => (
                "accepted_password",
                format!("Accepted password for {user} from {ip} port {port} ssh2"),
            ),
            4..7 => (
                "failed_password",
                format!("Failed password for {user} from {ip} port {port} ssh2"),
            ),
            7..8 => (
                "invalid_user",
                format!(
                    "Invalid user {user}{} from {ip} port {port}",
                    self.rng.below(100)
                ),
            ),
            _ => (
                "disconnect",
                format!("Received disconnect from {ip} port {port}:11: disconnected by user"),
            ),
        };
        json!({
            "@timestamp": timestamp,
            "host": host,
            "program": "sshd",
            "pid": pid,
            "facility": "auth",
            "severity": "info",
            "message": message,
            "sshd_event": event,
            "user": user,
            "source_ip": ip,
            "source_port": port,
            "auth_method": if event.contains("password") { "password" } else { "publickey" },
            "log_format": "rfc3164",
        })
    }

    fn dns(&mut self, timestamp: String) -> Value {
        let domain = *self.rng.pick(DOMAINS);
        let qtype = *self.rng.pick(QTYPES);
        let sub = self.rng.below(8);
        let query = if sub < 3 {
            format!("{}{sub}.{domain}", ["edge", "cdn", "api"][sub as usize])
        } else {
            domain.to_owned()
        };
        let answers: Vec<Value> = (0..1 + self.rng.below(3))
            .map(|_| {
                format!(
                    "{}.{}.{}.{}",
                    13 + self.rng.below(200),
                    self.rng.below(256),
                    self.rng.below(256),
                    1 + self.rng.below(254)
                )
                .into()
            })
            .collect();
        let ttls: Vec<Value> = answers
            .iter()
            .map(|_| (60 * (1 + self.rng.below(60))).into())
            .collect();
        json!({
            "@timestamp": timestamp,
            "_path": "dns",
            "uid": format!("C{}", hex_of(self.rng.next_u64(), 17)),
            "id.orig_h": format!("10.{}.{}.{}", self.rng.below(4), self.rng.below(40), 2 + self.rng.below(250)),
            "id.orig_p": 49152 + self.rng.below(16000),
            "id.resp_h": "10.0.0.53",
            "id.resp_p": 53,
            "proto": "udp",
            "trans_id": self.rng.below(65536),
            "rtt": (self.rng.below(90_000) as f64) / 1e6,
            "query": query,
            "qclass": 1,
            "qclass_name": "C_INTERNET",
            "qtype_name": qtype,
            "rcode": 0,
            "rcode_name": "NOERROR",
            "AA": false,
            "TC": false,
            "RD": true,
            "RA": true,
            "Z": 0,
            "answers": answers,
            "TTLs": ttls,
            "rejected": false,
        })
    }
}

impl Iterator for Generator {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        if self.index >= self.total {
            return None;
        }
        let started = Instant::now();
        let i = self.index;
        let mut event = self.event(i);
        if self.padding > 0 {
            let text = self.padding_text(self.padding);
            if let Some(fields) = event.as_object_mut() {
                fields.insert(PADDING_FIELD.to_owned(), Value::String(text));
            }
        }
        self.index += 1;
        if i.is_multiple_of(64) {
            self.sampled += 1;
            self.sampled_bytes += serde_json::to_vec(&event).map_or(0, |v| v.len() as u64);
        }
        self.spent += started.elapsed();
        Some(Ok(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_hunt_modules::test_modules::{NOOP, RARE_MATCH};

    #[test]
    fn generator_is_deterministic_and_mixed() {
        let take = |n| {
            let mut g = Generator::new(n);
            g.by_ref().map(|r| r.expect("ok")).collect::<Vec<_>>()
        };
        let a = take(2000);
        assert_eq!(a, take(2000));
        let sshd = a.iter().filter(|e| e["program"] == "sshd").count();
        let dns = a.iter().filter(|e| e["_path"] == "dns").count();
        let sysmon = a.iter().filter(|e| e["EventID"] == 1).count();
        let security = a.iter().filter(|e| e["Channel"] == "Security").count();
        for (name, n) in [
            ("sshd", sshd),
            ("dns", dns),
            ("sysmon", sysmon),
            ("security", security),
        ] {
            assert!(n > 100, "{name}: {n}");
        }
    }

    #[test]
    fn padding_is_incompressible_text_of_the_asked_length() {
        let mut g = Generator::new(3);
        g.padding = 700;
        let events: Vec<Value> = g.by_ref().map(|r| r.expect("ok")).collect();
        let pads: Vec<&str> = events
            .iter()
            .map(|e| e[PADDING_FIELD].as_str().expect("padding field"))
            .collect();
        assert!(pads.iter().all(|p| p.len() == 700));
        assert_ne!(pads[0], pads[1]);
        // Compression cannot take much off random base64 (6 of 8 bits used).
        let compressed = zstd::bulk::compress(pads[0].as_bytes(), 3).expect("zstd");
        assert!(compressed.len() > 500, "{}", compressed.len());
    }

    /// The `rare-match` test module's logic, natively (its crate is not a
    /// dependency of this one): checks the native pass's plumbing.
    struct NativeRareMatch(u64);

    impl NativeTask for NativeRareMatch {
        fn scan(&mut self, batch: Vec<ProjectedEvent>) -> Result<(), String> {
            for event in batch {
                let [image, command_line] = &event.values[..] else {
                    return Err(format!("{} values, not 2", event.values.len()));
                };
                let (image, command_line) = (
                    image.as_deref().unwrap_or_default().to_ascii_lowercase(),
                    command_line
                        .as_deref()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                );
                if image.ends_with("\\rundll32.exe") && command_line.contains("comsvcs") {
                    self.0 += 1;
                }
            }
            Ok(())
        }

        fn finish(self: Box<Self>) -> Result<DetectionOutput, String> {
            let counts = BTreeMap::from([("matched".to_owned(), self.0)]);
            Ok(DetectionOutput {
                findings: Vec::new(),
                aggregates: vec![quarry_contract::Aggregate {
                    name: "rare-match".to_owned(),
                    value: quarry_contract::AggregateValue::Counts(counts),
                }],
            })
        }
    }

    #[test]
    fn small_bench_is_consistent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = 20_000;
        let modules = BenchModules {
            noop: NOOP.wasm,
            rare_match: RARE_MATCH.wasm,
            query: Some(quarry_hunt_modules::QUERY.wasm),
            detection: Some(DetectionModule {
                name: "rare-match",
                wasm: RARE_MATCH.wasm,
                params: &[],
                native: &|_| Ok(Box::new(NativeRareMatch(0))),
            }),
        };
        let mut lines = Vec::new();
        let report = scan_bench(dir.path(), events, 0, modules, |l| lines.push(l.to_owned()))
            .expect("bench runs");
        assert!(!lines.is_empty());
        assert_eq!(report.events, events);
        assert!(report.bytes_on_disk > 0 && report.bytes_per_event.is_finite());
        assert!(
            (300.0..1000.0).contains(&report.json_bytes_per_event),
            "{}",
            report.json_bytes_per_event
        );
        // Host and no-op see every event in every block.
        for pass in [&report.host, &report.noop] {
            assert_eq!(pass.events_decoded, events);
            assert_eq!(pass.events_delivered, events);
            assert_eq!(pass.blocks_skipped, 0);
            assert_eq!(pass.blocks_read, report.blocks);
        }
        assert!(report.blocks >= events.div_ceil(4096));
        // The rare module gets exactly the rare events (~1%), and skips the
        // blocks outside the burst.
        let fraction = report.rare_events as f64 / events as f64;
        assert!((0.007..0.013).contains(&fraction), "{fraction}");
        assert_eq!(report.rare.events_delivered, report.rare_events);
        assert_eq!(report.rare_matched_by_module, report.rare_events);
        assert_eq!(
            report.rare.blocks_read + report.rare.blocks_skipped,
            report.blocks
        );
        assert!(
            report.rare.blocks_skipped >= report.blocks - 2,
            "{report:?}"
        );
        assert!(report.rare.events_decoded < events);
        for x in [
            report.noop_ratio,
            report.rare_ratio,
            report.host.events_per_sec,
            report.ingest_events_per_sec,
        ] {
            assert!(x.is_finite() && x > 0.0, "{report:?}");
        }
        // The selective query counts the rare events either way; pushed
        // down, the host hands it only those and skips the same blocks.
        let query = report.query.as_ref().expect("query passes");
        assert_eq!(
            query.selective_counted,
            (report.rare_events, report.rare_events)
        );
        assert_eq!(query.selective.events_delivered, report.rare_events);
        assert_eq!(query.selective.blocks_skipped, report.rare.blocks_skipped);
        assert_eq!(query.selective_unpushed.events_delivered, events);
        assert_eq!(query.stats.events_delivered, events);
        // The native pass gets the events and blocks the wasm task got,
        // and the same result.
        let detection = report.detection.as_ref().expect("detection passes");
        assert!(detection.same_output, "{detection:?}");
        for pass in [&detection.wasm, &detection.native] {
            assert_eq!(pass.events_delivered, report.rare_events);
            assert_eq!(pass.blocks_skipped, report.rare.blocks_skipped);
            assert_eq!(pass.events_decoded, report.rare.events_decoded);
        }
        assert!(detection.ratio.is_finite() && detection.ratio > 0.0);
        assert_eq!(detection.goal, WASM_NATIVE_GOAL);
        let text = report.to_string();
        assert!(
            text.contains("no-op / host")
                && text.contains("goal >= 3.00")
                && text.contains("pushdown / none")
                && text.contains("stats / no-op")
                && text.contains("wasm / native")
                && text.contains("outputs identical"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["events"], events);
        assert_eq!(json["detection"]["goal"], WASM_NATIVE_GOAL);
        assert_eq!(json["detection"]["same_output"], true);
        // A second run in the same directory is refused, not appended.
        assert!(scan_bench(dir.path(), 10, 0, modules, |_| {}).is_err());
    }
}
