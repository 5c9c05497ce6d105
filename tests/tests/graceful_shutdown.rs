//! A worker stopped gracefully (what `quarry worker` does on SIGTERM) while
//! it runs two tasks: one ends within the grace period and completes on
//! it; the other runs longer, is handed back when the grace period ends and
//! completes on the other holder of its shard, placed at once (the lease,
//! 30 s here, does not run out first), not counted as a failed attempt, its
//! finding committed once. Real coordinator, workers, gRPC and wasm (the
//! `spinner` test module, whose run time is set in loop turns measured on
//! this machine first).

use quarry_client::{Client, HuntRequest};
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_hunt_modules::test_modules::SPINNER;
use quarry_proto::v1;
use quarry_worker::Worker;
use quarry_worker::shard::ShardStore;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The draining worker's grace period.
const GRACE: Duration = Duration::from_secs(4);
/// How long the task that fits in the grace period runs.
const QUICK: Duration = Duration::from_millis(1_500);
/// How long the task that does not fit runs.
const LONG: Duration = Duration::from_secs(12);
/// Loop turns of the calibration run.
const CALIBRATION_SPINS: u64 = 400_000_000;
/// The coordinator's worker lease: far longer than the drain takes, so a
/// task that moves within it moved by the hand-back.
const LEASE: Duration = Duration::from_secs(30);

async fn start_worker(dir: &Path, url: &str, id: &str, shards: &[&str]) -> Worker {
    let store = ShardStore::open(&dir.join(id).join("shards")).expect("store");
    for shard in shards {
        let events: String = (0..3)
            .map(|i| {
                format!("{{\"@timestamp\":\"2026-12-01T10:00:0{i}Z\",\"host\":\"{shard}-host\"}}\n")
            })
            .collect();
        store
            .ingest_jsonl(shard, BTreeMap::new(), events.as_bytes())
            .expect("ingest");
    }
    quarry_tests::worker(dir, id, url, store).await
}

async fn submit(client: &mut Client, shard: &str, spins: u64) -> String {
    let request = HuntRequest::new("spinner")
        .shard(shard)
        .param("spins", &spins.to_string());
    client.submit_hunt(request).await.expect("submit").hunt_id
}

async fn finished(client: &mut Client, hunt: &str, within: Duration) -> v1::Hunt {
    tokio::time::timeout(within, client.wait(hunt, |_| {}))
        .await
        .unwrap_or_else(|_| panic!("hunt {hunt} did not end within {within:?}"))
        .expect("hunt")
}

/// The hunt's one task.
async fn task(client: &mut Client, hunt: &str) -> v1::TaskStatus {
    let mut hunt = client.hunt_tasks(hunt, 0, &[]).await.expect("hunt");
    assert_eq!(hunt.tasks.len(), 1, "one shard, one task");
    hunt.tasks.remove(0)
}

/// Waits until the hunt's task is assigned to `worker`; how long it took.
async fn assigned_to(client: &mut Client, hunt: &str, worker: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let task = task(client, hunt).await;
        if task.state == v1::TaskState::Assigned as i32 && task.worker_id == worker {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "hunt {hunt}'s task was not assigned to {worker} within {within:?}: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn live_workers(client: &mut Client, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status().await.expect("status").live_workers < n {
        assert!(Instant::now() < deadline, "workers did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The entities of the hunt's findings, sorted.
async fn entities(client: &mut Client, hunt: &str) -> Vec<String> {
    let mut entities: Vec<String> = client
        .findings(hunt)
        .await
        .expect("findings")
        .into_iter()
        .map(|f| f.entity)
        .collect();
    entities.sort();
    entities
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_finishes_what_fits_the_grace_period_and_hands_back_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config =
        CoordinatorConfig::single_node(dir.path().join("c"), SocketAddr::from(([127, 0, 0, 1], 0)));
    config.heartbeat_timeout = LEASE;
    let coordinator = Coordinator::start(config).await.expect("coordinator");
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await
        .expect("leader");
    let url = format!("http://{}", coordinator.addr());
    // `a` holds both shards; `b`, started later, a replica of `slow`.
    let a = start_worker(dir.path(), &url, "a", &["slow", "quick"]).await;
    let mut client = Client::connect(&url).await.expect("client");
    client
        .upload_module(SPINNER.name, SPINNER.version, "", SPINNER.wasm)
        .await
        .expect("upload");
    live_workers(&mut client, 1).await;

    // How fast the module turns here (the first run compiles it).
    let warm = submit(&mut client, "quick", 0).await;
    finished(&mut client, &warm, Duration::from_secs(60)).await;
    let started = Instant::now();
    let calibration = submit(&mut client, "quick", CALIBRATION_SPINS).await;
    finished(&mut client, &calibration, Duration::from_secs(120)).await;
    // Scheduling is in the measured time too: the rate is an underestimate,
    // so the quick task takes at most QUICK and the long one a bit less
    // than LONG (still far more than GRACE).
    let per_second = CALIBRATION_SPINS as f64 / started.elapsed().as_secs_f64();
    let spins = |d: Duration| (per_second * d.as_secs_f64()) as u64;

    let long = submit(&mut client, "slow", spins(LONG)).await;
    let quick = submit(&mut client, "quick", spins(QUICK)).await;
    assigned_to(&mut client, &long, "a", Duration::from_secs(10)).await;
    assigned_to(&mut client, &quick, "a", Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.running_tasks() < 2 {
        assert!(Instant::now() < deadline, "the tasks did not start on a");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = start_worker(dir.path(), &url, "b", &["slow"]).await;
    live_workers(&mut client, 2).await;

    let draining = Instant::now();
    let drain = tokio::spawn(a.shutdown_gracefully(GRACE));
    // The leader knows at once, and shows it.
    loop {
        let workers = client.workers().await.expect("workers");
        if workers.iter().any(|w| w.worker_id == "a" && w.draining) {
            break;
        }
        assert!(
            draining.elapsed() < GRACE,
            "the leader did not learn that a drains: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handed_back = drain.await.expect("drain");
    let drained = draining.elapsed();
    assert_eq!(
        handed_back, 1,
        "the long task goes back, the quick one finished"
    );
    assert!(
        drained >= GRACE && drained < GRACE + Duration::from_secs(10),
        "the drain waits out the grace period for the long task, then stops: {drained:?}"
    );

    // The long one moved to `b` at once: not after the lease expired.
    let moved = assigned_to(&mut client, &long, "b", LEASE / 4).await;

    // The quick task ended on `a` within the grace period.
    let hunt = finished(&mut client, &quick, Duration::from_secs(10)).await;
    assert_eq!(
        hunt.state,
        v1::HuntState::Completed as i32,
        "{}",
        hunt.reason
    );
    let quick_task = task(&mut client, &quick).await;
    assert_eq!(
        (
            quick_task.worker_id.as_str(),
            quick_task.attempt,
            quick_task.failed_attempts
        ),
        ("a", 1, 0)
    );
    assert_eq!(entities(&mut client, &quick).await, ["quick-host"]);

    let hunt = finished(&mut client, &long, Duration::from_secs(120)).await;
    assert_eq!(
        hunt.state,
        v1::HuntState::Completed as i32,
        "{}",
        hunt.reason
    );
    let long_task = task(&mut client, &long).await;
    assert_eq!(long_task.worker_id, "b", "{long_task:?}");
    assert_eq!(
        long_task.attempt, 2,
        "a's attempt was given back: {long_task:?}"
    );
    assert_eq!(long_task.failed_attempts, 0, "a hand-back is not a failure");
    assert_eq!(
        entities(&mut client, &long).await,
        ["slow-host"],
        "the finding is committed once, by b's attempt"
    );
    eprintln!(
        "spin rate {per_second:.0}/s; drain took {drained:?}; the long task was on b {moved:?} after it"
    );

    b.shutdown().await;
    coordinator.shutdown().await;
}
