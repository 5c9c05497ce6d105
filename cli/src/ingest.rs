//! `quarry worker ingest`: read log files into a shard, with progress on a
//! terminal and a summary that lists where the malformed records are.

use quarry_worker::ingest::{self, Format};
use quarry_worker::shard::{IngestProgress, ShardStore};
use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Malformed records listed in the summary (the shard's `malformed.jsonl`
/// keeps a bounded sample; every one is counted).
const MALFORMED_SHOWN: usize = 20;

/// Ingests `files` into shard `shard` of the store under `data_dir`.
pub async fn run(
    data_dir: &Path,
    shard: &str,
    labels: BTreeMap<String, String>,
    format: Option<&str>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let format: Option<Format> = format.map(str::parse).transpose()?;
    let (data_dir, shard, files) = (data_dir.to_owned(), shard.to_owned(), files.to_vec());
    tokio::task::spawn_blocking(move || ingest_files(&data_dir, &shard, labels, format, &files))
        .await?
}

/// Streams `files` to the running worker at `worker_url`, one
/// `IngestService.Ingest` call per file, and prints what it stored. Use this
/// while a worker runs on the data directory: it holds the directory locked.
pub async fn run_remote(
    worker_url: &str,
    credentials: &quarry_client::Credentials,
    shard: &str,
    labels: BTreeMap<String, String>,
    format: Option<&str>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    if let Some(format) = format {
        // Refuse a typo before uploading anything.
        format.parse::<Format>()?;
    }
    let labels: std::collections::HashMap<String, String> = labels.into_iter().collect();
    let started = Instant::now();
    let (mut events, mut malformed, mut shown, mut total) = (0u64, 0u64, 0usize, 0u64);
    for file in files {
        let response = quarry_client::ingest_file_with(
            worker_url,
            credentials,
            shard,
            labels.clone(),
            format,
            file,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "ingesting {} into worker {worker_url} failed: {e}",
                file.display()
            )
        })?;
        println!(
            "{} ({}): {} events stored, {} malformed, {} without a timestamp, {} written",
            escape(&file.display().to_string()),
            escape(&response.format),
            response.events_stored,
            response.malformed,
            response.without_timestamp,
            human_bytes(response.bytes_written),
        );
        for record in &response.malformed_records {
            if shown >= MALFORMED_SHOWN {
                break;
            }
            shown += 1;
            let place = if record.record > 0 {
                format!("record {}", record.record)
            } else {
                format!("line {}", record.line)
            };
            println!(
                "  {}: {place} (byte {}): {}",
                escape(&record.source),
                record.byte_offset,
                escape(&record.error)
            );
        }
        events += response.events_stored;
        malformed += response.malformed;
        total = response.shard_event_count;
    }
    println!(
        "shard {shard} on worker {worker_url}: {total} events in total; this ingest stored {events} events, {malformed} malformed, from {} file(s) in {:.1}s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Log-controlled text made safe for a terminal.
fn escape(text: &str) -> String {
    crate::output::escape(text).into_owned()
}

fn ingest_files(
    data_dir: &Path,
    shard: &str,
    labels: BTreeMap<String, String>,
    format: Option<Format>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let store = ShardStore::open(&data_dir.join("shards"))?;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut events, mut malformed, mut bytes) = (0u64, 0u64, 0u64);
    let mut sample = Vec::new();
    for file in files {
        let (format, records) = ingest::open(file, format)?;
        let source = file.display().to_string();
        let file_started = Instant::now();
        let mut last_print = Instant::now();
        let mut progress = |p: &IngestProgress| {
            if terminal && last_print.elapsed() >= Duration::from_millis(250) {
                last_print = Instant::now();
                let rate =
                    p.events_acknowledged as f64 / file_started.elapsed().as_secs_f64().max(1e-3);
                eprint!(
                    "\r{}: {} events stored, {} malformed, {} written, {:.0} events/s   ",
                    escape(&source),
                    p.events_acknowledged,
                    p.malformed,
                    human_bytes(p.bytes_written),
                    rate
                );
            }
        };
        let report = store.append_from(shard, labels.clone(), &source, records, &mut progress)?;
        if terminal {
            eprint!("\r{:120}\r", "");
        }
        let seconds = file_started.elapsed().as_secs_f64().max(1e-3);
        println!(
            "{} ({}): {} events stored, {} malformed, {} without a timestamp, {} written, {:.0} events/s",
            escape(&source),
            format.name(),
            report.events_stored,
            report.malformed,
            report.without_timestamp,
            human_bytes(report.bytes_written),
            report.events_stored as f64 / seconds
        );
        events += report.events_stored;
        malformed += report.malformed;
        let room = MALFORMED_SHOWN.saturating_sub(sample.len());
        sample.extend(report.malformed_sample.into_iter().take(room));
        bytes += report.bytes_written;
    }
    let meta = store
        .get(shard)
        .ok_or_else(|| anyhow::anyhow!("shard {shard} vanished after ingest"))?;
    println!(
        "shard {shard}: {} events in total; this ingest stored {events} events ({}, {:.1} bytes/event) from {} file(s) in {:.1}s",
        meta.event_count,
        human_bytes(bytes),
        if events == 0 {
            0.0
        } else {
            bytes as f64 / events as f64
        },
        files.len(),
        started.elapsed().as_secs_f64()
    );
    if malformed > 0 {
        println!(
            "{malformed} malformed record(s); the shard's first {} are kept in {}/malformed.jsonl, \
             the rest counted in its meta.json:",
            quarry_worker::shard::MAX_MALFORMED_KEPT,
            store.shard_dir(shard).display()
        );
        for record in &sample {
            let place = match record.record {
                Some(n) => format!("record {n}"),
                None => format!("line {}", record.line),
            };
            println!(
                "  {}: {place} (byte {}): {}",
                escape(&record.source),
                record.byte_offset,
                escape(&record.error)
            );
        }
        if malformed > sample.len() as u64 {
            println!("  ... and {} more", malformed - sample.len() as u64);
        }
    }
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
