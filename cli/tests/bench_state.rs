//! `quarry bench state` at a small scale: three real coordinator processes,
//! simulated workers that report every task, a findings hunt followed to its
//! end, a larger hunt run to completion, no leader change, and a peak RSS
//! read for every coordinator.

use quarry_cli::bench_state::{StateBenchConfig, state_bench};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_state_bench_streams_every_finding_and_completes_the_large_hunt() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let config = StateBenchConfig {
        findings: 20_000,
        shards: 2_000,
        workers: 8,
    };
    let report = state_bench(
        Path::new(env!("CARGO_BIN_EXE_quarry")),
        dir.path(),
        config,
        |_| {},
    )
    .await?;
    eprintln!("{report}");
    assert_eq!(report.findings_streamed, 20_000, "each finding once");
    assert_eq!(report.tasks, 2_000);
    assert_eq!(report.memory.len(), 3);
    assert!(report.memory.iter().all(|m| m.peak_rss_bytes > 0));
    assert_eq!(
        report.leader_before, report.leader_after,
        "no leader change"
    );
    Ok(())
}
