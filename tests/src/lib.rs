//! Cluster tests live in `tests/`; this library holds what several of them
//! start.

use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_security::TlsFiles;
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A single-node coordinator and one worker, `w1`, on loopback ports.
pub struct OneWorker {
    /// The coordinator.
    pub coordinator: Coordinator,
    /// The worker.
    pub worker: Worker,
    /// The coordinator's URL (`https://` with TLS).
    pub url: String,
}

/// Starts a single-node coordinator with data under `dir/c` on a loopback
/// port, once it leads; returns it and its URL.
pub async fn coordinator(dir: &Path) -> (Coordinator, String) {
    let coordinator = Coordinator::start(CoordinatorConfig::single_node(
        dir.join("c"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await
    .expect("coordinator");
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await
        .expect("leader");
    let url = format!("http://{}", coordinator.addr());
    (coordinator, url)
}

/// Starts worker `id` (data under `dir/ID`, on a loopback port, 2 slots,
/// no TLS) serving `store`, talking to the coordinator at `url`.
pub async fn worker(dir: &Path, id: &str, url: &str, store: ShardStore) -> Worker {
    Worker::start_with_store(
        WorkerConfig {
            id: quarry_proto::WorkerId::new(id),
            coordinator: url.to_owned(),
            data_dir: dir.join(id),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            slots: 2,
            tls: None,
        },
        Arc::new(store),
    )
    .await
    .expect("worker")
}

/// Starts a coordinator (data under `dir/c`) and worker `w1` (under
/// `dir/w1`) holding shard `shard` with the JSON-lines `events`; on mutual
/// TLS when `tls` gives the coordinator's and the worker's files.
pub async fn one_worker(
    dir: &Path,
    shard: &str,
    events: &str,
    tls: Option<(TlsFiles, TlsFiles)>,
) -> OneWorker {
    let (coordinator_tls, worker_tls) = tls.map_or((None, None), |(c, w)| (Some(c), Some(w)));
    let scheme = if coordinator_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut config =
        CoordinatorConfig::single_node(dir.join("c"), SocketAddr::from(([127, 0, 0, 1], 0)));
    config.tls = coordinator_tls;
    let coordinator = Coordinator::start(config).await.expect("coordinator");
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await
        .expect("leader");
    let url = format!("{scheme}://{}", coordinator.addr());
    let store = Arc::new(ShardStore::open(&dir.join("w1/shards")).expect("store"));
    store
        .ingest_jsonl(shard, BTreeMap::new(), events.as_bytes())
        .expect("ingest");
    let worker = Worker::start_with_store(
        WorkerConfig {
            id: quarry_proto::WorkerId::new("w1".to_owned()),
            coordinator: url.clone(),
            data_dir: dir.join("w1"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            slots: 1,
            tls: worker_tls,
        },
        store,
    )
    .await
    .expect("worker");
    OneWorker {
        coordinator,
        worker,
        url,
    }
}

impl OneWorker {
    /// Stops both.
    pub async fn shutdown(self) {
        self.worker.shutdown().await;
        self.coordinator.shutdown().await;
    }
}
