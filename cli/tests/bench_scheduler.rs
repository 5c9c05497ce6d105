//! `quarry bench scheduler` at a small scale: three real coordinator
//! processes, simulated workers, a hunt whose every task must reach a
//! worker, and a SIGKILLed leader whose successor commits a write.

use quarry_cli::bench_scheduler::{SchedulerBenchConfig, scheduler_bench};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_scheduler_bench_dispatches_everything_and_fails_over() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = SchedulerBenchConfig {
        workers: 20,
        shards: 300,
        replicas: 2,
        commits: 20,
    };
    let mut lines = Vec::new();
    let report = scheduler_bench(
        Path::new(env!("CARGO_BIN_EXE_quarry")),
        dir.path(),
        config,
        |line| lines.push(line.to_owned()),
    )
    .await?;
    eprintln!("{report}");
    assert_eq!(report.tasks, 300, "one task per shard");
    assert!(report.placements_per_sec > 0.0);
    assert!(report.commit_p50_ms > 0.0 && report.commit_p50_ms <= report.commit_p99_ms);
    assert_ne!(report.old_leader, report.new_leader);
    assert!(lines.iter().any(|l| l.contains("tasks dispatched")));
    Ok(())
}
