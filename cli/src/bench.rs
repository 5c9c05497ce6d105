//! `quarry bench scan`: the worker's scan benchmark
//! ([`quarry_worker::bench::scan_bench`]) with the no-op and rare-match test
//! modules of the bundle. Progress goes to stderr, the report to stdout.

use clap::{Subcommand, ValueEnum};
use quarry_hunt_modules::test_modules::{NOOP, RARE_MATCH};
use quarry_worker::bench::{BenchModules, DEFAULT_EVENTS, scan_bench};
use std::path::PathBuf;
use std::process::ExitCode;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Build a shard of generated security events (Windows Security, Sysmon,
    /// auth.log, DNS), then measure ingest, host-only scan, the no-op module
    /// and a module whose prefilter selects ~1% of the events.
    #[command(
        after_help = "Examples:\n  quarry bench scan\n  quarry bench scan --events 500000 --dir /var/tmp/quarry-bench --output json\n  # a shard of ~5 GB on disk, to check the scan's peak RSS:\n  quarry bench scan --events 4000000 --pad-bytes 1200 --dir /var/tmp/quarry-bench"
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
    let temp;
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            dir
        }
        None => {
            temp = tempfile::Builder::new().prefix("quarry-bench-").tempdir()?;
            temp.path().to_owned()
        }
    };
    eprintln!("benchmark directory: {}", dir.display());
    let modules = BenchModules {
        noop: NOOP.wasm,
        rare_match: RARE_MATCH.wasm,
    };
    let report = scan_bench(&dir, events, pad_bytes, modules, |line| eprintln!("{line}"))?;
    match output {
        BenchOutput::Table => println!("{report}"),
        BenchOutput::Json => println!("{}", serde_json::to_string(&report)?),
    }
    Ok(())
}
