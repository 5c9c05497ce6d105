//! `quarry worker migrate`: rewrite a worker's shards in the current block
//! format (column blocks), segment by segment, crash-safe; shards written
//! by older versions are read as they are until then.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use quarry_worker::shard::{BlockFormat, MigrateReport, ShardStore};

/// Migrates `shards` (every shard when empty) of the store under `data_dir`.
/// The store is opened, and so locked: a worker running on it makes this
/// fail naming its pid.
pub async fn run(data_dir: &Path, shards: &[String]) -> anyhow::Result<()> {
    let (data_dir, shards) = (data_dir.to_owned(), shards.to_vec());
    tokio::task::spawn_blocking(move || migrate(&data_dir, &shards)).await?
}

fn migrate(data_dir: &Path, shards: &[String]) -> anyhow::Result<()> {
    // The worker keeps its shard store there (see the worker's agent).
    let root = data_dir.join("shards");
    if !root.is_dir() {
        anyhow::bail!(
            "{} holds no shard store ({} is missing); give the worker's --data-dir",
            data_dir.display(),
            root.display()
        );
    }
    let store = ShardStore::open(&root).with_context(|| {
        format!(
            "could not open {}; stop the worker that uses it first",
            data_dir.display()
        )
    })?;
    for skipped in store.skipped() {
        eprintln!(
            "warning: {} is not a readable shard and is left as it is: {}",
            skipped.path.display(),
            skipped.reason
        );
    }
    let names: Vec<String> = if shards.is_empty() {
        store.list().into_iter().map(|meta| meta.name).collect()
    } else {
        shards.to_vec()
    };
    if names.is_empty() {
        println!("{} holds no shard; nothing to migrate", data_dir.display());
        return Ok(());
    }
    let format = BlockFormat::CURRENT;
    let started = Instant::now();
    let mut reports: Vec<MigrateReport> = Vec::new();
    for name in &names {
        let report = store
            .migrate(name, format, &mut |p| {
                eprintln!(
                    "{}: segment {}/{} ({} blocks rewritten, {} already {})",
                    p.shard,
                    p.segments_done,
                    p.segments_total,
                    p.blocks_rewritten,
                    p.blocks_kept,
                    p.format.name()
                );
            })
            .with_context(|| format!("migrating shard {name}"))?;
        reports.push(report);
    }
    println!(
        "{:<32} {:>8} {:>8} {:>12} {:>14} {:>14}",
        "SHARD", "BLOCKS", "KEPT", "EVENTS", "BYTES BEFORE", "BYTES AFTER"
    );
    for r in &reports {
        println!(
            "{:<32} {:>8} {:>8} {:>12} {:>14} {:>14}",
            r.shard, r.blocks_rewritten, r.blocks_kept, r.events, r.bytes_before, r.bytes_after
        );
    }
    let rewritten: u64 = reports.iter().map(|r| r.blocks_rewritten).sum();
    println!(
        "{} shards in {} format, {rewritten} blocks rewritten in {:.1}s",
        reports.len(),
        format.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
