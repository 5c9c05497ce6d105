//! A new hunt's tasks that start together, one in every slot of a worker,
//! load their module once: the others wait for that download and compile
//! instead of each doing it (in a dev build, four slots compiling one
//! module made a first hunt take 78 s where one compile took 12 s). Real
//! coordinator, worker, gRPC and wasm.

use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::test_modules::NOOP;
use quarry_proto::{WorkerId, v1};
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SLOTS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_starting_together_load_their_module_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = quarry_tests::coordinator(dir.path()).await;
    let mut client = Client::connect(&url).await.expect("client");
    client
        .upload_module(NOOP.name, NOOP.version, "", NOOP.wasm)
        .await
        .expect("upload");

    // One shard per slot, so the hunt's tasks all start at once.
    let store = ShardStore::open(&dir.path().join("w").join("shards")).expect("store");
    let labels = BTreeMap::from([("env".to_owned(), "load".to_owned())]);
    for i in 0..SLOTS {
        let events = format!("{{\"@timestamp\":\"2026-12-01T10:00:0{i}Z\",\"host\":\"h{i}\"}}\n");
        store
            .ingest_jsonl(&format!("s{i}"), labels.clone(), events.as_bytes())
            .expect("ingest");
    }
    let worker = Worker::start_with_store(
        WorkerConfig {
            id: WorkerId::new("w"),
            coordinator: url.clone(),
            data_dir: dir.path().join("w"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            slots: SLOTS,
            tls: None,
        },
        Arc::new(store),
    )
    .await
    .expect("worker");
    tokio::time::timeout(Duration::from_secs(30), async {
        while client.status().await.expect("status").live_workers < 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a live worker");

    let hunt = client
        .submit_hunt(HuntRequest::new(NOOP.name).selector("env", "load"))
        .await
        .expect("submit")
        .hunt_id;
    let hunt = tokio::time::timeout(Duration::from_secs(180), client.wait(&hunt, |_| {}))
        .await
        .expect("the hunt ends")
        .expect("hunt");
    assert_eq!(hunt.state(), v1::HuntState::Completed, "{hunt:?}");
    assert_eq!(hunt.events_scanned, u64::from(SLOTS));
    assert_eq!(
        worker.modules_loaded(),
        1,
        "the {SLOTS} tasks loaded the module once between them"
    );
    worker.shutdown().await;
    coordinator.shutdown().await;
}
