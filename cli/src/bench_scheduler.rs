//! `quarry bench scheduler`: the coordinator's benchmark (issue 4). It starts
//! a real three-node raft group of `quarry coordinator` processes on loopback
//! (RocksDB with fsync, gRPC), simulates workers in this process, and
//! measures from one run:
//!
//! - raft commit latency: sequential writes (worker registrations, the
//!   smallest write there is) to the leader over gRPC, p50 and p99;
//! - placement throughput: a hunt over `shards` shards held by `workers`
//!   simulated workers (each shard on `replicas` of them), from the submit
//!   call to the last task assignment received over the workers' task
//!   streams. Simulated workers never finish a task, so each declares as
//!   many slots as it holds shards: the figure measures placement (plan,
//!   commit through raft, dispatch), not task run time;
//! - leader failover: SIGKILL of the leader process to the first write
//!   committed by the new leader, with default election settings.

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
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::process_group::ProcessGroup;

/// Goal for dispatching the whole hunt.
pub const DISPATCH_GOAL: Duration = Duration::from_secs(10);
/// Goal for leader failover.
pub const FAILOVER_GOAL: Duration = Duration::from_secs(3);
/// Registrations in flight while simulated workers sign up.
const REGISTER_CONCURRENCY: usize = 32;
/// Heartbeats in flight.
const HEARTBEAT_CONCURRENCY: usize = 64;
/// Connections the simulated workers share (HTTP/2 limits streams per
/// connection).
pub(crate) const CHANNELS: usize = 8;
/// How long any one phase may take before the benchmark gives up.
pub(crate) const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
const LABEL: (&str, &str) = ("bench", "scheduler");

/// What to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerBenchConfig {
    /// Simulated workers.
    pub workers: usize,
    /// Shards in the hunt.
    pub shards: usize,
    /// Workers holding each shard.
    pub replicas: usize,
    /// Sequential writes timed for the commit latency.
    pub commits: usize,
}

impl Default for SchedulerBenchConfig {
    fn default() -> Self {
        Self {
            workers: 1000,
            shards: 100_000,
            replicas: 2,
            commits: 500,
        }
    }
}

/// What [`scheduler_bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerBenchReport {
    /// The simulation.
    pub config: SchedulerBenchConfig,
    /// Commit latency percentiles, milliseconds.
    pub commit_p50_ms: f64,
    /// 99th percentile.
    pub commit_p99_ms: f64,
    /// Slowest write.
    pub commit_max_ms: f64,
    /// Time to register every simulated worker (with its shards).
    pub register_seconds: f64,
    /// Tasks of the hunt.
    pub tasks: u64,
    /// From the submit call to its answer (the hunt and its tasks committed).
    pub submit_seconds: f64,
    /// From the submit call to the last assignment received by a worker.
    pub dispatch_seconds: f64,
    /// `tasks / dispatch_seconds`.
    pub placements_per_sec: f64,
    /// Goal for `dispatch_seconds`.
    pub dispatch_goal_seconds: f64,
    /// From SIGKILL of the leader to the first write the new leader committed.
    pub failover_seconds: f64,
    /// Goal for `failover_seconds`.
    pub failover_goal_seconds: f64,
    /// Old and new leader ids.
    pub old_leader: u64,
    /// The node that committed the first write after the kill.
    pub new_leader: u64,
    /// Whether this is an optimised build.
    pub optimized_build: bool,
}

impl SchedulerBenchReport {
    /// Whether the dispatch and failover goals are met.
    pub fn goals_met(&self) -> bool {
        self.dispatch_seconds < self.dispatch_goal_seconds
            && self.failover_seconds < self.failover_goal_seconds
    }
}

impl fmt::Display for SchedulerBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        writeln!(
            f,
            "quarry bench scheduler: 3 coordinator processes (RocksDB, fsync), {} simulated workers, {} shards x {} replicas{}",
            self.config.workers,
            self.config.shards,
            self.config.replicas,
            if self.optimized_build {
                ""
            } else {
                " [unoptimised build]"
            }
        )?;
        writeln!(
            f,
            "  raft commit      p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} sequential writes to the leader over gRPC)",
            self.commit_p50_ms, self.commit_p99_ms, self.commit_max_ms, self.config.commits
        )?;
        writeln!(
            f,
            "  registration     {:.1} s for {} workers",
            self.register_seconds, self.config.workers
        )?;
        writeln!(
            f,
            "  placement        {:.0} placements/s: {} tasks dispatched in {:.2} s (submit answered after {:.2} s)   goal < {:.0} s: {}",
            self.placements_per_sec,
            self.tasks,
            self.dispatch_seconds,
            self.submit_seconds,
            self.dispatch_goal_seconds,
            verdict(self.dispatch_seconds < self.dispatch_goal_seconds)
        )?;
        write!(
            f,
            "  failover         {:.2} s from SIGKILL of leader {} to a write committed by leader {}   goal < {:.0} s: {}",
            self.failover_seconds,
            self.old_leader,
            self.new_leader,
            self.failover_goal_seconds,
            verdict(self.failover_seconds < self.failover_goal_seconds)
        )
    }
}

/// Runs the benchmark with coordinators started from `binary` (a `quarry`
/// executable), data and logs under `dir`. `progress` gets a line now and
/// then.
///
/// # Errors
///
/// A coordinator that does not start or elect a leader, a write that
/// fails, or a phase that exceeds its time bound.
pub async fn scheduler_bench(
    binary: &Path,
    dir: &Path,
    config: SchedulerBenchConfig,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SchedulerBenchReport> {
    anyhow::ensure!(config.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(config.shards >= 1, "--shards must be at least 1");
    anyhow::ensure!(config.commits >= 1, "--commits must be at least 1");
    anyhow::ensure!(
        (1..=config.workers).contains(&config.replicas),
        "--replicas must be between 1 and --workers"
    );
    progress("starting 3 coordinator processes ...");
    let mut group = ProcessGroup::start(binary, dir, 3)?;
    let (leader_id, mut client) = group.leader(Duration::from_secs(30)).await?;
    let leader_url = url_of(&group, leader_id)?;
    progress(&format!("leader is node {leader_id} ({leader_url})"));

    // Commit latency.
    progress(&format!("timing {} sequential writes ...", config.commits));
    let mut writer = worker_client(&leader_url).await?;
    let mut latencies = Vec::with_capacity(config.commits);
    for _ in 0..config.commits {
        let started = Instant::now();
        writer
            .register_worker(registration("bench-latency", Vec::new(), 1))
            .await
            .context("a timed write failed")?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];

    // Placement.
    client
        .upload_module("bench-noop", "0.1.0", "scheduler benchmark", NOOP.wasm)
        .await?;
    let channels = connect_channels(&leader_url).await?;
    let holdings = holdings(&config);
    progress(&format!(
        "registering {} workers holding {} shards x {} ...",
        config.workers, config.shards, config.replicas
    ));
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(holdings.iter().enumerate())
        .map(|(i, shards)| {
            let mut worker = WorkerServiceClient::new(channels[i % CHANNELS].clone());
            let request = registration(
                &worker_name(i),
                shards.iter().map(|&s| shard_info(s)).collect(),
                shards.len() as u32,
            );
            async move { worker.register_worker(request).await }
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .collect()
        .await;
    for result in results {
        result.context("a simulated worker could not register")?;
    }
    let register_seconds = started.elapsed().as_secs_f64();

    let received = Arc::new(AtomicU64::new(0));
    let arrived = Arc::new(Notify::new());
    let mut background = Vec::new();
    for i in 0..config.workers {
        let mut worker = WorkerServiceClient::new(channels[i % CHANNELS].clone());
        let mut stream = worker
            .task_stream(v1::TaskStreamRequest {
                worker_id: worker_name(i),
            })
            .await
            .context("a simulated worker could not open its task stream")?
            .into_inner();
        let (received, arrived) = (received.clone(), arrived.clone());
        background.push(tokio::spawn(async move {
            while let Some(Ok(command)) = stream.next().await {
                if matches!(command.command, Some(v1::task_command::Command::Run(_))) {
                    received.fetch_add(1, Ordering::Relaxed);
                    arrived.notify_one();
                }
            }
        }));
    }
    background.push(tokio::spawn(heartbeats(channels.clone(), config.workers)));
    wait_for(PHASE_TIMEOUT, "the simulated workers to be live", || {
        let mut client = client.clone();
        let want = config.workers as u32;
        async move { Ok(client.status().await.is_ok_and(|s| s.live_workers >= want)) }
    })
    .await?;

    progress("submitting the hunt ...");
    let started = Instant::now();
    let submitted = client
        .submit_hunt(HuntRequest::new("bench-noop").selector(LABEL.0, LABEL.1))
        .await?;
    let submit_seconds = started.elapsed().as_secs_f64();
    let tasks = u64::from(submitted.task_count);
    let deadline = started + PHASE_TIMEOUT;
    let mut last_report = Instant::now();
    while received.load(Ordering::Relaxed) < tasks {
        let now = Instant::now();
        anyhow::ensure!(
            now < deadline,
            "only {} of {tasks} tasks were dispatched within {PHASE_TIMEOUT:?}",
            received.load(Ordering::Relaxed)
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), arrived.notified()).await;
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            progress(&format!(
                "  {} / {tasks} tasks dispatched",
                received.load(Ordering::Relaxed)
            ));
        }
    }
    let dispatch_seconds = started.elapsed().as_secs_f64();
    progress(&format!(
        "{tasks} tasks dispatched in {dispatch_seconds:.2} s"
    ));
    for task in background {
        task.abort();
    }
    drop(channels);

    // Failover.
    progress(&format!("SIGKILL leader {leader_id} ..."));
    let survivors: Vec<(u64, String)> = group
        .nodes
        .iter()
        .filter(|n| n.id != leader_id)
        .map(|n| (n.id, n.url.clone()))
        .collect();
    group.kill(leader_id)?;
    let killed = Instant::now();
    let new_leader = first_write(&survivors, killed + PHASE_TIMEOUT).await?;
    let failover_seconds = killed.elapsed().as_secs_f64();
    progress(&format!(
        "node {new_leader} committed a write {failover_seconds:.2} s after the kill"
    ));

    Ok(SchedulerBenchReport {
        commit_p50_ms: percentile(0.50),
        commit_p99_ms: percentile(0.99),
        commit_max_ms: latencies.last().copied().unwrap_or_default(),
        register_seconds,
        tasks,
        submit_seconds,
        dispatch_seconds,
        placements_per_sec: tasks as f64 / dispatch_seconds.max(1e-9),
        dispatch_goal_seconds: DISPATCH_GOAL.as_secs_f64(),
        failover_seconds,
        failover_goal_seconds: FAILOVER_GOAL.as_secs_f64(),
        old_leader: leader_id,
        new_leader,
        optimized_build: !cfg!(debug_assertions),
        config,
    })
}

pub(crate) fn url_of(group: &ProcessGroup, id: u64) -> anyhow::Result<String> {
    group
        .nodes
        .iter()
        .find(|n| n.id == id)
        .map(|n| n.url.clone())
        .with_context(|| format!("no node {id}"))
}

fn worker_name(i: usize) -> String {
    format!("sim-worker-{i:04}")
}

fn shard_name(s: usize) -> String {
    format!("bench-{s:06}")
}

fn shard_info(s: usize) -> v1::ShardInfo {
    v1::ShardInfo {
        name: shard_name(s),
        labels: BTreeMap::from([(LABEL.0.to_owned(), LABEL.1.to_owned())])
            .into_iter()
            .collect(),
        event_count: 100_000,
        ..Default::default()
    }
}

pub(crate) fn registration(
    id: &str,
    shards: Vec<v1::ShardInfo>,
    slots: u32,
) -> v1::RegisterWorkerRequest {
    v1::RegisterWorkerRequest {
        worker_id: id.to_owned(),
        address: String::new(),
        shards,
        slots,
    }
}

/// Shard numbers each worker holds: shard `s` lives on workers
/// `s, s + stride, ...` (mod workers), so replicas are spread apart.
fn holdings(config: &SchedulerBenchConfig) -> Vec<Vec<usize>> {
    let mut holdings = vec![Vec::new(); config.workers];
    let stride = (config.workers / config.replicas).max(1);
    for s in 0..config.shards {
        for r in 0..config.replicas {
            holdings[(s + r * stride) % config.workers].push(s);
        }
    }
    holdings
}

async fn worker_client(url: &str) -> anyhow::Result<WorkerServiceClient<Channel>> {
    Ok(WorkerServiceClient::new(connect(url).await?))
}

pub(crate) async fn connect(url: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

pub(crate) async fn connect_channels(url: &str) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        channels.push(connect(url).await?);
    }
    Ok(channels)
}

/// Keeps every simulated worker's lease alive.
async fn heartbeats(channels: Vec<Channel>, workers: usize) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        futures::stream::iter(0..workers)
            .for_each_concurrent(HEARTBEAT_CONCURRENCY, |i| {
                let mut worker = WorkerServiceClient::new(channels[i % CHANNELS].clone());
                async move {
                    let _ = worker
                        .heartbeat(v1::HeartbeatRequest {
                            worker_id: worker_name(i),
                            running_tasks: 0,
                            draining: false,
                        })
                        .await;
                }
            })
            .await;
    }
}

/// Polls `check` until it answers true or `timeout` passes.
pub(crate) async fn wait_for<F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    while !check().await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Tries a write on every survivor in turn until one commits it; answers
/// that node's id.
async fn first_write(survivors: &[(u64, String)], deadline: Instant) -> anyhow::Result<u64> {
    loop {
        for (id, url) in survivors {
            let Ok(channel) = connect(url).await else {
                continue;
            };
            let mut worker = WorkerServiceClient::new(channel);
            let request = tonic::Request::new(registration("bench-failover", Vec::new(), 1));
            let attempt =
                tokio::time::timeout(Duration::from_millis(500), worker.register_worker(request))
                    .await;
            if matches!(attempt, Ok(Ok(_))) {
                return Ok(*id);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no surviving coordinator committed a write after the leader was killed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_spread_every_shard_over_distinct_workers() {
        let config = SchedulerBenchConfig {
            workers: 10,
            shards: 95,
            replicas: 3,
            commits: 1,
        };
        let holdings = holdings(&config);
        let mut holders: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (w, shards) in holdings.iter().enumerate() {
            for &s in shards {
                holders.entry(s).or_default().push(w);
            }
        }
        assert_eq!(holders.len(), 95);
        for (s, workers) in &holders {
            let mut distinct = workers.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "shard {s}: {workers:?}");
        }
        let sizes: Vec<usize> = holdings.iter().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 3), "{sizes:?}");
    }
}
