//! `quarry bench scan`: the worker's scan benchmark
//! ([`quarry_worker::bench::scan_bench`]) with the no-op and rare-match test
//! modules of the bundle, the shipped `query` module, and `rare-process` as
//! its wasm module and compiled into this binary ([`NativeRareProcess`]); `quarry bench scheduler`: the coordinator's
//! ([`crate::bench_scheduler`]); `quarry bench sigma`: the shipped `sigma`
//! module over real logs ([`crate::bench_sigma`]); `quarry bench precision`:
//! every shipped detection module over the shared real data, findings per
//! million events on benign data and detections on the attack recordings
//! ([`crate::bench_precision`]). Progress goes to stderr, the report to
//! stdout.

use crate::bench_precision::{DEFAULT_DATA, PrecisionBenchConfig, precision_bench};
use crate::bench_scheduler::{SchedulerBenchConfig, scheduler_bench};
use crate::bench_sigma::{SigmaBenchConfig, sigma_bench};
use crate::bench_state::{StateBenchConfig, state_bench};
use clap::{Subcommand, ValueEnum};
use quarry_hunt_modules::test_modules::{NOOP, RARE_MATCH};
use quarry_worker::bench::{
    BenchModules, DEFAULT_EVENTS, DetectionModule, DetectionOutput, FindingRecord, NativeTask,
    ProjectedEvent, scan_bench,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Build a shard of generated security events (Windows Security, Sysmon,
    /// auth.log, DNS), then measure ingest, host-only scan, the no-op module,
    /// a module whose prefilter selects ~1% of the events, the `query`
    /// module, and `rare-process` as wasm against compiled natively.
    #[command(
        after_help = "Examples:\n  quarry bench scan\n  quarry bench scan --events 500000 --dir /var/tmp/quarry-bench --output json\n  # a shard of ~5 GB on disk, to check the scan's peak RSS:\n  quarry bench scan --events 5300000 --pad-bytes 1200 --dir /var/tmp/quarry-bench"
    )]
    Scan {
        /// Events in the generated shard.
        #[arg(long, default_value_t = DEFAULT_EVENTS)]
        events: u64,
        /// Add this many bytes of incompressible text to every event (field
        /// `bench_padding`), to build a large shard on disk from fewer events
        /// when measuring memory. Rates are then not comparable with an
        /// unpadded run.
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        pad_bytes: usize,
        /// Directory for the shard and the module cache (must not hold a
        /// benchmark shard already); a temporary directory, removed
        /// afterwards, when omitted.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = BenchOutput::Table)]
        output: BenchOutput,
    },
    /// Start a three-node coordinator group as processes on loopback and
    /// measure raft commit latency, task placements per second for a hunt
    /// over many shards on simulated workers, and leader failover time
    /// (SIGKILL of the leader to the first write committed by the next).
    #[command(
        after_help = "Examples:\n  quarry bench scheduler\n  quarry bench scheduler --workers 200 --shards 20000 --output json"
    )]
    Scheduler {
        /// Simulated workers (in this process).
        #[arg(long, default_value_t = SchedulerBenchConfig::default().workers)]
        workers: usize,
        /// Shards in the benchmark hunt; each is one task.
        #[arg(long, default_value_t = SchedulerBenchConfig::default().shards)]
        shards: usize,
        /// Simulated workers holding each shard.
        #[arg(long, default_value_t = SchedulerBenchConfig::default().replicas)]
        replicas: usize,
        /// Sequential writes timed for the commit latency.
        #[arg(long, default_value_t = SchedulerBenchConfig::default().commits)]
        commits: usize,
        /// Directory for the coordinators' data and logs; a temporary
        /// directory, removed afterwards, when omitted.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = BenchOutput::Table)]
        output: BenchOutput,
    },
    /// Start a 3-node coordinator group and simulated workers, stream a
    /// hunt's findings (1,000,000 by default) in follow mode while they
    /// commit, run a hunt over 100,000 shards to completion, and print each
    /// coordinator's peak RSS (goal: under 500 MB) and whether the leader
    /// changed.
    #[command(
        after_help = "Examples:\n  quarry bench state\n  quarry bench state --findings 100000 --shards 10000 --output json"
    )]
    State {
        /// Findings the findings hunt produces (5,000 per task).
        #[arg(long, default_value_t = StateBenchConfig::default().findings)]
        findings: u64,
        /// Shards of the large hunt; each is one task.
        #[arg(long, default_value_t = StateBenchConfig::default().shards)]
        shards: usize,
        /// Simulated workers (in this process).
        #[arg(long, default_value_t = StateBenchConfig::default().workers)]
        workers: usize,
        /// Directory for the coordinators' data and logs; a temporary
        /// directory, removed afterwards, when omitted.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = BenchOutput::Table)]
        output: BenchOutput,
    },
    /// Run the shipped `sigma` module over log files in the worker's
    /// sandbox, as a worker runs a task (one slot: one core), and print the
    /// rules loaded and refused (by reason), the events, the module's compile
    /// and init times, events/s of the scan, ns per event x rule, the
    /// host-only and no-op module rates over the same shard and the
    /// findings. Goal: 20,000 events/s per core with ~2,400 Windows rules in
    /// the release build.
    #[command(after_help = "Examples:\n  \
        # from a checkout next to shared/: the 510 shared rules over the Windows logs\n  \
        quarry bench sigma\n  \
        # each rule file loaded 5 times as distinct rules (~2,500 rules), the logs scanned 3 times\n  \
        quarry bench sigma --rules ../shared/data/sigma/rules --logs ../shared/data/logs/windows --replicate 5 --repeat 3\n  \
        quarry bench sigma --rules ./rules/windows --logs security.evtx --logs sysmon.jsonl --output json")]
    Sigma {
        /// A Sigma rule file or a directory of them (`.yml`/`.yaml`,
        /// recursively); repeatable. Default: ../shared/data/sigma/rules
        /// when it exists.
        #[arg(long, value_name = "PATH")]
        rules: Vec<PathBuf>,
        /// A log file or a directory of them (every file, recursively; the
        /// format of each is detected as `quarry worker ingest` does);
        /// repeatable. Default: ../shared/data/logs/windows when it exists.
        #[arg(long, value_name = "PATH")]
        logs: Vec<PathBuf>,
        /// Give each rule file N times as distinct rules (parameter
        /// `rule.replica-K/<file>`, `-replica-K` appended to its id), to
        /// measure a rule set N times larger; the report says so.
        #[arg(long, value_name = "N", default_value_t = 1)]
        replicate: usize,
        /// Ingest the logs N times into the shard, so the task scans N times
        /// the events (a steadier rate; init is counted once).
        #[arg(long, value_name = "N", default_value_t = 1)]
        repeat: usize,
        /// Report format.
        #[arg(long, value_enum, default_value_t = BenchOutput::Table)]
        output: BenchOutput,
    },
    /// Run every shipped detection module over the real data of the shared
    /// data set, each log file one shard in the worker's sandbox with the
    /// module's default parameters (`sigma` with the data set's rules), and
    /// print per module the events scanned, findings per million events by
    /// severity on the data benign for it (background recordings whose
    /// attack is not one the module reports) and its findings on the attack
    /// recordings, by file. `ioc-sweep`, `pivot` and `query` are not
    /// detections by themselves and are listed as not run.
    #[command(after_help = "Examples:\n  \
        # from a checkout next to shared/\n  \
        quarry bench precision\n  \
        quarry bench precision --data /srv/quarry/shared/data --output json\n  \
        # a folder of one's own logs (every file benign), with Sigma rules\n  \
        quarry bench precision --data ./baseline-logs --rules ./rules")]
    Precision {
        /// The shared data folder (its `logs/` are read), or a folder of
        /// log files (every file, recursively).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Sigma rules for the `sigma` module (a file or directory);
        /// default: DIR/sigma/rules when it exists, else `sigma` is not run.
        #[arg(long, value_name = "PATH")]
        rules: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = BenchOutput::Table)]
        output: BenchOutput,
    },
}

/// How the report is printed.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BenchOutput {
    /// Lines for people.
    Table,
    /// One JSON object.
    Json,
}

/// Runs a benchmark; the exit code is success when it ran (whether the goals
/// are met is in the report).
pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Scan {
            events,
            pad_bytes,
            dir,
            output,
        } => {
            tokio::task::spawn_blocking(move || scan(events, pad_bytes, dir, output)).await??;
        }
        BenchCommand::Scheduler {
            workers,
            shards,
            replicas,
            commits,
            dir,
            output,
        } => {
            let config = SchedulerBenchConfig {
                workers,
                shards,
                replicas,
                commits,
            };
            let (_temp, dir) = bench_dir(dir)?;
            let binary = std::env::current_exe()?;
            let report = scheduler_bench(&binary, &dir, config, |line| eprintln!("{line}")).await?;
            print_report(&report, output)?;
        }
        BenchCommand::State {
            findings,
            shards,
            workers,
            dir,
            output,
        } => {
            let config = StateBenchConfig {
                findings,
                shards,
                workers,
            };
            let (_temp, dir) = bench_dir(dir)?;
            let binary = std::env::current_exe()?;
            let report = state_bench(&binary, &dir, config, |line| eprintln!("{line}")).await?;
            print_report(&report, output)?;
        }
        BenchCommand::Sigma {
            rules,
            logs,
            replicate,
            repeat,
            output,
        } => {
            let config = SigmaBenchConfig {
                rules,
                logs,
                replicate,
                repeat,
            };
            let report = tokio::task::spawn_blocking(move || {
                sigma_bench(&config, |line| eprintln!("{line}"))
            })
            .await??;
            print_report(&report, output)?;
        }
        BenchCommand::Precision {
            data,
            rules,
            output,
        } => {
            let config = PrecisionBenchConfig {
                data,
                rules,
                ..PrecisionBenchConfig::default()
            };
            let report = tokio::task::spawn_blocking(move || {
                precision_bench(&config, |line| eprintln!("{line}"))
            })
            .await??;
            print_report(&report, output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn scan(
    events: u64,
    pad_bytes: usize,
    dir: Option<PathBuf>,
    output: BenchOutput,
) -> anyhow::Result<()> {
    anyhow::ensure!(events > 0, "--events must be at least 1");
    let (_temp, dir) = bench_dir(dir)?;
    let modules = BenchModules {
        noop: NOOP.wasm,
        rare_match: RARE_MATCH.wasm,
        query: Some(quarry_hunt_modules::QUERY.wasm),
        detection: Some(rare_process_detection(&[])),
    };
    let report = scan_bench(&dir, events, pad_bytes, modules, |line| eprintln!("{line}"))?;
    print_report(&report, output)
}

/// `rare-process` for the wasm / native passes: the shipped module and the
/// same crate compiled in, with `params`.
pub fn rare_process_detection(params: &[(String, String)]) -> DetectionModule<'_> {
    DetectionModule {
        name: rare_process::NAME,
        wasm: quarry_hunt_modules::RARE_PROCESS.wasm,
        params,
        native: &native_rare_process,
    }
}

fn native_rare_process(params: &[(String, String)]) -> Result<Box<dyn NativeTask>, String> {
    Ok(Box::new(NativeRareProcess::new(params)?))
}

/// A `rare-process` task compiled natively, driven through the SDK's
/// [`quarry_sdk::Task`]: the state machine the wasm exports forward to, so
/// both builds run the same code from `init` to `finish`.
pub struct NativeRareProcess {
    task: quarry_sdk::Task<rare_process::RareProcess>,
    findings: Vec<quarry_sdk::Finding>,
}

impl NativeRareProcess {
    /// A task initialised with `params`, as the worker calls `init`.
    ///
    /// # Errors
    ///
    /// The module's refusal of the parameters.
    pub fn new(params: &[(String, String)]) -> Result<Self, String> {
        let mut task = quarry_sdk::Task::new();
        task.init(params.to_vec())?;
        Ok(NativeRareProcess {
            task,
            findings: Vec::new(),
        })
    }
}

impl NativeTask for NativeRareProcess {
    fn scan(&mut self, batch: Vec<ProjectedEvent>) -> Result<(), String> {
        // Moves the projected values: no copy, unlike the wasm call.
        let batch = batch
            .into_iter()
            .map(|e| quarry_sdk::Event::new(e.timestamp_ms, e.offset, e.values))
            .collect();
        self.findings.extend(self.task.scan(batch)?);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<DetectionOutput, String> {
        let output = self.task.finish()?;
        let findings = self.findings.drain(..).chain(output.findings);
        Ok(DetectionOutput {
            findings: findings.map(finding_record).collect(),
            aggregates: output
                .aggregates
                .into_iter()
                .map(quarry_sdk::from_wit)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The SDK's finding as the worker's benchmark compares findings.
fn finding_record(f: quarry_sdk::Finding) -> FindingRecord {
    use quarry_sdk::Severity;
    FindingRecord {
        rule: f.rule,
        title: f.title,
        severity: match f.severity {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
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

/// The directory a benchmark works in: `dir` (created if needed), or a
/// temporary one that lives as long as the returned guard.
fn bench_dir(dir: Option<PathBuf>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    let (temp, dir) = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            (None, dir)
        }
        None => {
            let temp = tempfile::Builder::new().prefix("quarry-bench-").tempdir()?;
            let path = temp.path().to_owned();
            (Some(temp), path)
        }
    };
    eprintln!("benchmark directory: {}", dir.display());
    Ok((temp, dir))
}

fn print_report<R: std::fmt::Display + serde::Serialize>(
    report: &R,
    output: BenchOutput,
) -> anyhow::Result<()> {
    match output {
        BenchOutput::Table => println!("{report}"),
        BenchOutput::Json => println!("{}", serde_json::to_string(report)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_worker::bench::detection_passes;
    use quarry_worker::runtime::{Runtime, RuntimeConfig};
    use quarry_worker::shard::ShardStore;
    use rare_process::stacker::{AGGREGATE_IMAGES, RULE_SINGLE_HOST_USER_WRITABLE};
    use serde_json::{Value, json};

    /// Process starts on four hosts in both logs and both shapes (flat and
    /// evtx-nested), every common image on every host, two user-writable
    /// images on one host each, and other events the prefilter drops.
    fn events() -> Vec<Value> {
        const HOSTS: [&str; 4] = ["WS01", "WS02", "WS03", "WS04"];
        const COMMON: [&str; 3] = [
            r"C:\Windows\System32\svchost.exe",
            r"C:\Windows\System32\cmd.exe",
            r"C:\Program Files\Git\cmd\git.exe",
        ];
        let mut events = Vec::new();
        for i in 0..9000u64 {
            let timestamp = format!(
                "2026-11-20T{:02}:{:02}:{:02}Z",
                i / 3600 % 24,
                i / 60 % 60,
                i % 60
            );
            let host = HOSTS[(i % 4) as usize];
            let image = COMMON[(i / 4 % 3) as usize];
            events.push(match i % 5 {
                0 | 1 => json!({"@timestamp": timestamp, "EventID": 1, "Computer": host,
                    "Image": image, "User": "CORP\\alice", "CommandLine": image}),
                2 => json!({"@timestamp": timestamp, "EventID": 4688, "Computer": host,
                    "EventData": {"NewProcessName": image, "SubjectUserName": "bob",
                        "SubjectDomainName": "CORP"}}),
                3 => json!({"@timestamp": timestamp, "EventID": 4624, "Computer": host,
                    "TargetUserName": "carol"}),
                _ => json!({"@timestamp": timestamp, "_path": "dns", "query": "example.com"}),
            });
            if i == 4321 {
                events.push(
                    json!({"@timestamp": timestamp, "EventID": 1, "Computer": "WS02",
                    "Image": r"C:\Users\dave\AppData\Local\Temp\payload.exe",
                    "User": "CORP\\dave", "CommandLine": "payload.exe -q"}),
                );
            }
            if i == 7777 {
                events.push(
                    json!({"@timestamp": timestamp, "EventID": 4688, "Computer": "WS04",
                    "EventData": {"NewProcessName": r"C:\ProgramData\upd\upd.exe",
                        "SubjectUserName": "SYSTEM", "SubjectDomainName": "NT AUTHORITY"}}),
                );
            }
        }
        events
    }

    #[test]
    fn rare_process_gives_the_same_findings_as_wasm_and_natively() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(&dir.path().join("shards")).expect("store");
        let events = events();
        let count = events.len() as u64;
        let report = store
            .append(
                "native",
                Default::default(),
                events.into_iter().map(Ok),
                &mut |_| {},
            )
            .expect("append");
        assert_eq!(report.events_stored, count);
        let runtime = Runtime::new(1, RuntimeConfig::default(), None).expect("runtime");
        let run = detection_passes(
            &runtime,
            &store,
            "native",
            count,
            rare_process_detection(&[]),
            &mut |_| {},
        )
        .expect("both passes run");

        let findings = |output: &DetectionOutput| {
            output
                .findings
                .iter()
                .map(|f| (f.rule.clone(), f.entity.clone(), f.offsets.clone()))
                .collect::<Vec<_>>()
        };
        let wasm = findings(&run.wasm_output);
        assert_eq!(wasm.len(), 2, "{:#?}", run.wasm_output.findings);
        assert!(
            wasm.iter()
                .all(|(rule, ..)| rule == RULE_SINGLE_HOST_USER_WRITABLE)
        );
        let entities: Vec<&str> = wasm.iter().map(|(_, e, _)| e.as_str()).collect();
        // In image order: c:\programdata\... before c:\users\....
        assert_eq!(entities, ["host:ws04", "host:ws02"]);
        assert_eq!(findings(&run.native_output), wasm);
        // Every field of every finding, and the images stack, agree.
        assert_eq!(run.native_output, run.wasm_output);
        assert_eq!(run.wasm_output.aggregates.len(), 1);
        assert_eq!(run.wasm_output.aggregates[0].name, AGGREGATE_IMAGES);

        let passes = &run.passes;
        assert!(passes.same_output);
        assert_eq!((passes.wasm_findings, passes.native_findings), (2, 2));
        // Process starts only (3 of 5, and the two extra), in both passes.
        assert_eq!(passes.wasm.events_delivered, 9000 / 5 * 3 + 2);
        assert_eq!(passes.native.events_delivered, passes.wasm.events_delivered);
        assert_eq!(passes.native.events_decoded, passes.wasm.events_decoded);
        assert!(passes.ratio.is_finite() && passes.ratio > 0.0);
    }
}
