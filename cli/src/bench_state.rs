//! `quarry bench state`: does the coordinators' state stay bounded at
//! scale? A real three-node raft group of `quarry coordinator` processes on
//! loopback (RocksDB with fsync, gRPC) and simulated workers in this
//! process, which report every task they are given at once. From one run:
//!
//! - a hunt whose tasks report `findings` findings in all (1,000,000 by
//!   default), streamed to this process with `StreamFindings` in follow
//!   mode while they commit: findings per second, end to end;
//! - a hunt over `shards` shards (100,000 by default), every task reported:
//!   from submit to completion;
//! - whether the leader changed during the run (it must not);
//! - each coordinator's peak RSS (`VmHWM`), against the 500 MB goal.

use anyhow::Context;
use futures::StreamExt;
use quarry_client::HuntRequest;
use quarry_hunt_modules::test_modules::NOOP;
use quarry_proto::v1;
use quarry_proto::v1::worker_service_client::WorkerServiceClient;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::bench_scheduler::{
    CHANNELS, PHASE_TIMEOUT, connect, connect_channels, registration, url_of, wait_for,
};
use crate::process_group::ProcessGroup;

/// Goal for each coordinator's peak RSS.
pub const RSS_GOAL_BYTES: u64 = 500 * 1000 * 1000;
/// Reports in flight from the simulated workers.
const REPORT_CONCURRENCY: usize = 8;
/// Findings per task of the findings hunt (under the per-task default of
/// 10,000, which the worker would otherwise enforce).
const FINDINGS_PER_TASK: u64 = 5_000;

/// What to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct StateBenchConfig {
    /// Findings the findings hunt produces in all.
    pub findings: u64,
    /// Shards of the large hunt (one task each).
    pub shards: usize,
    /// Simulated workers.
    pub workers: usize,
}

impl Default for StateBenchConfig {
    fn default() -> Self {
        Self {
            findings: 1_000_000,
            shards: 100_000,
            workers: 100,
        }
    }
}

/// One coordinator's memory.
#[derive(Debug, Clone, Serialize)]
pub struct NodeMemory {
    /// Raft id.
    pub node: u64,
    /// Peak resident set (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
}

/// What [`state_bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct StateBenchReport {
    /// The simulation.
    pub config: StateBenchConfig,
    /// Findings received on the follow stream.
    pub findings_streamed: u64,
    /// From the submit call to the end of the follow stream.
    pub findings_seconds: f64,
    /// `findings_streamed / findings_seconds`.
    pub findings_per_sec: f64,
    /// Tasks of the large hunt.
    pub tasks: u64,
    /// From the submit call to the large hunt's completion.
    pub large_hunt_seconds: f64,
    /// Leader and term at the start and the end.
    pub leader_before: (u64, u64),
    /// Leader and term at the end.
    pub leader_after: (u64, u64),
    /// Peak RSS per coordinator.
    pub memory: Vec<NodeMemory>,
    /// The goal for each.
    pub rss_goal_bytes: u64,
    /// Whether this is an optimised build.
    pub optimized_build: bool,
}

impl StateBenchReport {
    /// No leader change, and every coordinator under the memory goal.
    pub fn goals_met(&self) -> bool {
        self.leader_before == self.leader_after
            && self
                .memory
                .iter()
                .all(|m| m.peak_rss_bytes < self.rss_goal_bytes)
    }
}

impl fmt::Display for StateBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        writeln!(
            f,
            "quarry bench state: 3 coordinator processes (RocksDB, fsync), {} simulated workers{}",
            self.config.workers,
            if self.optimized_build {
                ""
            } else {
                " [unoptimised build]"
            }
        )?;
        writeln!(
            f,
            "  findings hunt    {} findings streamed (follow) in {:.1} s: {:.0} findings/s",
            self.findings_streamed, self.findings_seconds, self.findings_per_sec
        )?;
        writeln!(
            f,
            "  large hunt       {} tasks submitted, dispatched, reported and completed in {:.1} s",
            self.tasks, self.large_hunt_seconds
        )?;
        writeln!(
            f,
            "  leader           node {} term {} before, node {} term {} after: {}",
            self.leader_before.0,
            self.leader_before.1,
            self.leader_after.0,
            self.leader_after.1,
            if self.leader_before == self.leader_after {
                "no leader change"
            } else {
                "LEADER CHANGED"
            }
        )?;
        for m in &self.memory {
            writeln!(
                f,
                "  peak RSS         node {}: {:.0} MB   goal < {:.0} MB: {}",
                m.node,
                m.peak_rss_bytes as f64 / 1e6,
                self.rss_goal_bytes as f64 / 1e6,
                verdict(m.peak_rss_bytes < self.rss_goal_bytes)
            )?;
        }
        Ok(())
    }
}

/// A simulated worker's shards and name.
struct SimWorker {
    name: String,
    shards: Vec<v1::ShardInfo>,
}

fn shard(name: String, label: &str) -> v1::ShardInfo {
    v1::ShardInfo {
        name,
        labels: BTreeMap::from([("bench".to_owned(), label.to_owned())])
            .into_iter()
            .collect(),
        event_count: 1_000,
        ..Default::default()
    }
}

/// Shards spread round robin: the findings hunt's (`findings-N`) and the
/// large hunt's (`large-N`).
fn sim_workers(config: &StateBenchConfig, finding_tasks: usize) -> Vec<SimWorker> {
    let mut workers: Vec<SimWorker> = (0..config.workers)
        .map(|i| SimWorker {
            name: format!("state-worker-{i:04}"),
            shards: Vec::new(),
        })
        .collect();
    let n = workers.len();
    for t in 0..finding_tasks {
        workers[t % n]
            .shards
            .push(shard(format!("findings-{t:06}"), "findings"));
    }
    for s in 0..config.shards {
        workers[s % n]
            .shards
            .push(shard(format!("large-{s:06}"), "large"));
    }
    workers
}

/// The findings a simulated task reports: realistic sizes (a rule, a
/// title, an entity, three evidence pairs, a technique).
fn findings_for(task: &str, count: u64) -> Vec<v1::Finding> {
    (0..count)
        .map(|n| v1::Finding {
            rule: "bench.lsass_access".into(),
            title: "LSASS memory read by an unsigned process".into(),
            severity: v1::Severity::High as i32,
            confidence: 80,
            entity: format!("host-{:05}", n % 50_000),
            timestamp_ms: 1_700_000_000_000 + n as i64,
            evidence: vec![
                v1::Evidence {
                    key: "image".into(),
                    value: format!("C:\\Users\\u{n}\\AppData\\Local\\Temp\\x{n}.exe"),
                },
                v1::Evidence {
                    key: "target".into(),
                    value: "C:\\Windows\\System32\\lsass.exe".into(),
                },
                v1::Evidence {
                    key: "task".into(),
                    value: task.to_owned(),
                },
            ],
            techniques: vec!["T1003.001".into()],
            ..Default::default()
        })
        .collect()
}

/// Reports every assignment the worker receives, at once; reopens its task
/// stream when the coordinator ends it, as a real worker does.
async fn run_worker(
    channel: Channel,
    name: String,
    reports: Arc<Semaphore>,
    reported: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let worker = WorkerServiceClient::new(channel)
        .max_decoding_message_size(quarry_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(quarry_proto::MAX_MESSAGE_BYTES);
    loop {
        let mut stream = worker
            .clone()
            .task_stream(v1::TaskStreamRequest {
                worker_id: name.clone(),
            })
            .await
            .context("a simulated worker could not open its task stream")?
            .into_inner();
        while let Some(Ok(command)) = stream.next().await {
            let Some(v1::task_command::Command::Run(run)) = command.command else {
                continue;
            };
            let permit = reports.clone().acquire_owned().await?;
            let mut worker = worker.clone();
            let (name, reported) = (name.clone(), reported.clone());
            tokio::spawn(async move {
                let count = if run.shard.starts_with("findings-") {
                    FINDINGS_PER_TASK
                } else {
                    0
                };
                let request = v1::ReportTaskRequest {
                    worker_id: name,
                    findings: findings_for(&run.task_id, count),
                    task_id: run.task_id,
                    attempt: run.attempt,
                    outcome: v1::TaskOutcome::Succeeded as i32,
                    events_scanned: 1_000,
                    ..Default::default()
                };
                if worker.report_task(request).await.is_ok() {
                    reported.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps every simulated worker's lease alive.
async fn heartbeats(channels: Vec<Channel>, names: Vec<String>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        for (i, name) in names.iter().enumerate() {
            let mut worker = WorkerServiceClient::new(channels[i % CHANNELS].clone());
            let _ = worker
                .heartbeat(v1::HeartbeatRequest {
                    worker_id: name.clone(),
                    running_tasks: 0,
                    draining: false,
                })
                .await;
        }
    }
}

/// Peak resident set of process `pid`, from `/proc/PID/status`.
fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read the memory of process {pid}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line in /proc/PID/status")?;
    Ok(kib * 1024)
}

async fn leader_and_term(group: &ProcessGroup) -> anyhow::Result<(u64, u64)> {
    let (leader, mut client) = group.leader(Duration::from_secs(30)).await?;
    Ok((leader, client.status().await?.term))
}

/// Runs the benchmark with coordinators started from `binary` (a `quarry`
/// executable), data and logs under `dir`; `progress` gets a line now and
/// then.
///
/// # Errors
///
/// A coordinator that does not start, a write that fails, a stream that
/// breaks, or a phase that exceeds its time bound.
pub async fn state_bench(
    binary: &Path,
    dir: &Path,
    config: StateBenchConfig,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<StateBenchReport> {
    anyhow::ensure!(config.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(config.shards >= 1, "--shards must be at least 1");
    anyhow::ensure!(config.findings >= 1, "--findings must be at least 1");
    let finding_tasks = config.findings.div_ceil(FINDINGS_PER_TASK) as usize;
    progress("starting 3 coordinator processes ...");
    let group = ProcessGroup::start(binary, dir, 3)?;
    let leader_before = leader_and_term(&group).await?;
    let (mut client, leader_url) = {
        let (_, client) = group.leader(Duration::from_secs(30)).await?;
        (client, url_of(&group, leader_before.0)?)
    };
    progress(&format!(
        "leader is node {} ({leader_url})",
        leader_before.0
    ));
    client
        .upload_module("bench-noop", "0.1.0", "state benchmark", NOOP.wasm)
        .await?;

    let workers = sim_workers(&config, finding_tasks);
    let channels = connect_channels(&leader_url).await?;
    progress(&format!(
        "registering {} workers holding {} shards ...",
        workers.len(),
        finding_tasks + config.shards
    ));
    for (i, w) in workers.iter().enumerate() {
        let mut worker = WorkerServiceClient::new(channels[i % CHANNELS].clone())
            .max_encoding_message_size(quarry_proto::MAX_MESSAGE_BYTES);
        let slots = u32::try_from(w.shards.len()).unwrap_or(u32::MAX).max(1);
        worker
            .register_worker(registration(&w.name, w.shards.clone(), slots))
            .await
            .context("a simulated worker could not register")?;
    }
    let reports = Arc::new(Semaphore::new(REPORT_CONCURRENCY));
    let reported = Arc::new(AtomicU64::new(0));
    let mut background = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        background.push(tokio::spawn(run_worker(
            channels[i % CHANNELS].clone(),
            w.name.clone(),
            reports.clone(),
            reported.clone(),
        )));
    }
    let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
    let background_beats = tokio::spawn(heartbeats(channels.clone(), names));
    wait_for(PHASE_TIMEOUT, "the simulated workers to be live", || {
        let mut client = client.clone();
        let want = workers.len() as u32;
        async move { Ok(client.status().await.is_ok_and(|s| s.live_workers >= want)) }
    })
    .await?;

    // Findings, streamed while they commit.
    progress(&format!(
        "findings hunt: {finding_tasks} tasks x {FINDINGS_PER_TASK} findings, followed ..."
    ));
    let started = Instant::now();
    let hunt = client
        .submit_hunt(HuntRequest::new("bench-noop").selector("bench", "findings"))
        .await?;
    let mut hunts = v1::hunt_service_client::HuntServiceClient::new(connect(&leader_url).await?)
        .max_decoding_message_size(quarry_proto::MAX_MESSAGE_BYTES);
    let mut stream = hunts
        .stream_findings(v1::StreamFindingsRequest {
            hunt_id: hunt.hunt_id.clone(),
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let deadline = started + PHASE_TIMEOUT * 4;
    let mut findings_streamed = 0u64;
    let mut last_report = Instant::now();
    loop {
        let next = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .context("the findings stream did not end in time")?;
        match next {
            Some(finding) => {
                finding.context("the findings stream broke")?;
                findings_streamed += 1;
            }
            None => break,
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress(&format!("  {findings_streamed} findings streamed"));
        }
    }
    let findings_seconds = started.elapsed().as_secs_f64();
    let expected = finding_tasks as u64 * FINDINGS_PER_TASK;
    anyhow::ensure!(
        findings_streamed == expected,
        "the follow stream delivered {findings_streamed} findings, not {expected}"
    );
    progress(&format!(
        "{findings_streamed} findings streamed in {findings_seconds:.1} s"
    ));

    // The large hunt.
    progress(&format!("large hunt over {} shards ...", config.shards));
    let started = Instant::now();
    let large = client
        .submit_hunt(HuntRequest::new("bench-noop").selector("bench", "large"))
        .await?;
    let tasks = u64::from(large.task_count);
    // Progress comes from WatchHunt (counts), not from reading the hunt
    // with its 100,000 task statuses over and over.
    let mut last_report = Instant::now();
    let wait = client.wait(&large.hunt_id, |p| {
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress(&format!(
                "  {} / {} tasks done",
                p.tasks_done, p.tasks_total
            ));
        }
    });
    let done = tokio::time::timeout(PHASE_TIMEOUT * 4, wait)
        .await
        .context("the large hunt did not complete in time")??;
    anyhow::ensure!(
        done.state == v1::HuntState::Completed as i32,
        "the large hunt ended {:?}: {}",
        done.state,
        done.reason
    );
    let large_hunt_seconds = started.elapsed().as_secs_f64();
    progress(&format!(
        "{tasks} tasks completed in {large_hunt_seconds:.1} s"
    ));
    for task in background {
        task.abort();
    }
    background_beats.abort();

    let leader_after = leader_and_term(&group).await?;
    let memory = group
        .nodes
        .iter()
        .filter_map(|n| Some((n.id, n.pid()?)))
        .map(|(node, pid)| {
            Ok(NodeMemory {
                node,
                peak_rss_bytes: peak_rss(pid)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(StateBenchReport {
        findings_streamed,
        findings_seconds,
        findings_per_sec: findings_streamed as f64 / findings_seconds.max(1e-9),
        tasks,
        large_hunt_seconds,
        leader_before,
        leader_after,
        memory,
        rss_goal_bytes: RSS_GOAL_BYTES,
        optimized_build: !cfg!(debug_assertions),
        config,
    })
}
