//! An in-process cluster: one coordinator and N workers, each serving its
//! real gRPC services on a loopback port and talking to the others through
//! them. Used by `quarry dev`, `quarry demo` and the cluster tests.

use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_proto::WorkerId;
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to lay out a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// Root of all state: `coordinator/` and `worker-N/` below it.
    pub data_dir: PathBuf,
    /// Coordinator address (port 0 = any free port).
    pub coordinator_listen: SocketAddr,
    /// Number of workers.
    pub workers: usize,
    /// Slots per worker.
    pub slots: u32,
    /// Fill each worker's store with the demo shards on first start.
    pub demo_data: bool,
}

impl LocalClusterConfig {
    /// Two workers with demo data under `data_dir`, coordinator on `listen`.
    pub fn demo(data_dir: &Path, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            coordinator_listen: listen,
            workers: 2,
            slots: 4,
            demo_data: true,
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    config: LocalClusterConfig,
    coordinator: Option<Coordinator>,
    workers: Vec<Worker>,
}

impl LocalCluster {
    /// Starts the coordinator, then the workers, and waits until every worker
    /// has registered its shards.
    pub async fn start(config: LocalClusterConfig) -> anyhow::Result<Self> {
        let coordinator = start_coordinator(&config.data_dir, config.coordinator_listen).await?;
        let url = format!("http://{}", coordinator.addr());
        let mut workers = Vec::new();
        for index in 0..config.workers {
            let dir = config.data_dir.join(format!("worker-{index}"));
            let store_dir = dir.join("shards");
            let demo = config.demo_data;
            let store = tokio::task::spawn_blocking(move || -> anyhow::Result<ShardStore> {
                let store = ShardStore::open(&store_dir)?;
                if demo {
                    quarry_worker::demo::generate_demo_shards(&store, index)?;
                }
                Ok(store)
            })
            .await??;
            let worker = Worker::start_with_store(
                WorkerConfig {
                    id: WorkerId::new(format!("worker-{index}")),
                    coordinator: url.clone(),
                    data_dir: dir,
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    slots: config.slots,
                    tls: None,
                },
                Arc::new(store),
            )
            .await?;
            workers.push(worker);
        }
        let cluster = Self {
            config,
            coordinator: Some(coordinator),
            workers,
        };
        cluster.wait_for_workers(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The coordinator's URL.
    pub fn url(&self) -> String {
        self.coordinator
            .as_ref()
            .map(|c| format!("http://{}", c.addr()))
            .unwrap_or_default()
    }

    /// The coordinator, while it runs.
    pub fn coordinator(&self) -> Option<&Coordinator> {
        self.coordinator.as_ref()
    }

    /// The workers.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// Waits until every worker is registered and live.
    pub async fn wait_for_workers(&self, timeout: Duration) -> anyhow::Result<()> {
        let expected = self.workers.len();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut client) = quarry_client::Client::connect(&self.url()).await
                && let Ok(status) = client.status().await
                && status.live_workers as usize >= expected
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{expected} workers did not register within {timeout:?}; see the log above"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the coordinator and starts it again on the same data directory
    /// and address (workers reconnect by themselves).
    pub async fn restart_coordinator(&mut self) -> anyhow::Result<()> {
        let Some(coordinator) = self.coordinator.take() else {
            anyhow::bail!("coordinator is not running")
        };
        let addr = coordinator.addr();
        coordinator.shutdown().await;
        self.coordinator = Some(start_coordinator(&self.config.data_dir, addr).await?);
        self.wait_for_workers(Duration::from_secs(30)).await
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for worker in self.workers.drain(..) {
            worker.shutdown().await;
        }
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.shutdown().await;
        }
    }
}

async fn start_coordinator(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<Coordinator> {
    let config = CoordinatorConfig::single_node(data_dir.join("coordinator"), listen);
    let coordinator = Coordinator::start(config).await?;
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await?;
    Ok(coordinator)
}

/// Uploads every module shipped in `hunt-modules/` (idempotent).
pub async fn upload_shipped_modules(client: &mut quarry_client::Client) -> anyhow::Result<()> {
    for module in quarry_hunt_modules::all() {
        client
            .upload_module(
                module.name,
                module.version,
                "shipped with Quarry",
                module.wasm,
            )
            .await?;
    }
    Ok(())
}
