//! One worker that stops reading its task stream (as a SIGSTOPped process
//! does) must not stall the leader for everybody else, and a worker that
//! reconnects holding more assignments than a stream's queue must get its
//! stream. A real coordinator (raft, RocksDB, gRPC on loopback) and workers
//! speaking the real worker protocol, so the test controls exactly when each
//! one reads.

mod common;

use quarry_client::{Client, HuntRequest};
use quarry_coordinator::Coordinator;
use quarry_proto::v1::{self, worker_service_client::WorkerServiceClient};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// More tasks than a stream's queue (256) plus what HTTP/2 buffers.
const TASKS: usize = 600;

async fn coordinator(dir: &std::path::Path) -> (Coordinator, String) {
    let (coordinator, url) = common::start_single_node(dir, |config| {
        config.heartbeat_interval = Duration::from_millis(300);
        config.heartbeat_timeout = Duration::from_secs(2);
    })
    .await;
    common::commit_module_m1(coordinator.node()).await;
    (coordinator, url)
}

/// Registers a worker with `shards` shards labelled `owner=<id>`.
async fn register(url: &str, id: &str, shards: usize, slots: u32) -> WorkerServiceClient<Channel> {
    let mut worker = WorkerServiceClient::connect(url.to_owned())
        .await
        .expect("connect");
    let shards = (0..shards)
        .map(|i| v1::ShardInfo {
            name: format!("{id}-{i}"),
            labels: [("owner".to_owned(), id.to_owned())].into(),
            event_count: 1,
            time_range: Some(v1::TimeRange {
                start_ms: 1,
                end_ms: 2,
            }),
            size_bytes: 1,
            worker_ids: Vec::new(),
            ..Default::default()
        })
        .collect();
    worker
        .register_worker(v1::RegisterWorkerRequest {
            worker_id: id.to_owned(),
            address: "127.0.0.1:1".to_owned(),
            shards,
            slots,
        })
        .await
        .expect("register");
    worker
}

async fn open_stream(
    worker: &mut WorkerServiceClient<Channel>,
    id: &str,
) -> tonic::Streaming<v1::TaskCommand> {
    let open = worker.task_stream(v1::TaskStreamRequest {
        worker_id: id.to_owned(),
    });
    tokio::time::timeout(Duration::from_secs(10), open)
        .await
        .expect("the coordinator answers the stream request at once")
        .expect("stream")
        .into_inner()
}

/// A hunt over the shards of worker `owner`, with a parameter large enough
/// that each assignment weighs a few KiB.
async fn submit(url: &str, owner: &str) -> String {
    let mut client = Client::connect(url).await.expect("connect");
    client
        .submit_hunt(
            HuntRequest::new("m@1")
                .selector("owner", owner)
                .param("padding", &"x".repeat(8192)),
        )
        .await
        .expect("submit")
        .hunt_id
}

async fn next_run(
    stream: &mut tonic::Streaming<v1::TaskCommand>,
    within: Duration,
) -> v1::TaskAssignment {
    loop {
        let command = tokio::time::timeout(within, stream.message())
            .await
            .expect("an assignment in time")
            .expect("stream")
            .expect("open stream");
        if let Some(v1::task_command::Command::Run(run)) = command.command {
            return run;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_reading_does_not_stall_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;

    // The stuck worker takes every task of a large hunt and reads none.
    let mut stuck = register(&url, "stuck", TASKS, TASKS as u32).await;
    let _unread = open_stream(&mut stuck, "stuck").await;
    let mut good = register(&url, "good", 1, 1).await;
    let mut good_stream = open_stream(&mut good, "good").await;
    let heartbeats = {
        let mut good = good.clone();
        tokio::spawn(async move {
            loop {
                let beat = v1::HeartbeatRequest {
                    worker_id: "good".to_owned(),
                    running_tasks: 0,
                    draining: false,
                };
                let _ = good.heartbeat(beat).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let big = submit(&url, "stuck").await;
    // Let the leader try to push them all.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Another hunt still reaches the worker that reads.
    let small = submit(&url, "good").await;
    let run = next_run(&mut good_stream, Duration::from_secs(10)).await;
    assert_eq!(run.hunt_id, small);

    // The stuck worker sends no heartbeat: its lease expires and its tasks
    // wait, with the reason, for a holder of their shards.
    let mut client = Client::connect(&url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hunt = client.hunt(&big).await.expect("hunt");
        let waiting = hunt
            .tasks
            .iter()
            .filter(|t| {
                t.state == v1::TaskState::Pending as i32 && t.error.contains("stopped heartbeating")
            })
            .count();
        if waiting == TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck worker's tasks were not released: {waiting} of {TASKS}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    heartbeats.abort();
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reconnecting_with_more_assignments_than_the_queue_gets_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;
    let mut worker = register(&url, "big", TASKS, TASKS as u32).await;
    let first = open_stream(&mut worker, "big").await;
    let hunt = submit(&url, "big").await;
    let mut client = Client::connect(&url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .hunt(&hunt)
        .await
        .expect("hunt")
        .tasks
        .iter()
        .any(|t| t.state == v1::TaskState::Pending as i32)
    {
        assert!(Instant::now() < deadline, "tasks were not all assigned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep the worker live while it reconnects.
    let beat = worker
        .heartbeat(v1::HeartbeatRequest {
            worker_id: "big".to_owned(),
            running_tasks: 0,
            draining: false,
        })
        .await;
    assert!(beat.is_ok(), "{beat:?}");
    drop(first);
    let mut again = open_stream(&mut worker, "big").await;
    let mut runs = std::collections::BTreeSet::new();
    while runs.len() < TASKS {
        runs.insert(next_run(&mut again, Duration::from_secs(10)).await.task_id);
    }
    coordinator.shutdown().await;
}
