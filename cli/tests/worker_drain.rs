//! `quarry worker` as a real process given SIGTERM (what systemd and
//! Kubernetes send) while it runs a task longer than its `--shutdown-grace`:
//! it says it drains, waits out the grace period, hands the task back and
//! exits 0; the coordinator places the task on the other holder of the
//! shard at once (its lease, 30 s here, has not run out), as attempt 2 and
//! with no failed attempt.

use quarry_client::{Client, HuntRequest};
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_hunt_modules::test_modules::SPINNER;
use quarry_proto::{WorkerId, v1};
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(30);

fn fill(dir: &Path) -> anyhow::Result<ShardStore> {
    let store = ShardStore::open(&dir.join("shards"))?;
    let events = "{\"@timestamp\":\"2026-12-01T10:00:00Z\",\"host\":\"h1\"}\n";
    store.ingest_jsonl("slow", BTreeMap::new(), events.as_bytes())?;
    Ok(store)
}

async fn task(client: &mut Client, hunt: &str) -> anyhow::Result<v1::TaskStatus> {
    let mut hunt = client.hunt_tasks(hunt, 0, &[]).await?;
    anyhow::ensure!(hunt.tasks.len() == 1, "one shard, one task");
    Ok(hunt.tasks.remove(0))
}

async fn assigned_to(
    client: &mut Client,
    hunt: &str,
    worker: &str,
    within: Duration,
) -> anyhow::Result<v1::TaskStatus> {
    let deadline = Instant::now() + within;
    loop {
        let task = task(client, hunt).await?;
        if task.state == v1::TaskState::Assigned as i32 && task.worker_id == worker {
            return Ok(task);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the task was not assigned to {worker} within {within:?}: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_worker_and_hands_its_task_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config =
        CoordinatorConfig::single_node(dir.path().join("c"), SocketAddr::from(([127, 0, 0, 1], 0)));
    config.heartbeat_timeout = LEASE;
    let coordinator = Coordinator::start(config).await?;
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await?;
    let url = format!("http://{}", coordinator.addr());
    let mut client = Client::connect(&url).await?;
    client
        .upload_module(SPINNER.name, SPINNER.version, "", SPINNER.wasm)
        .await?;

    drop(fill(&dir.path().join("a"))?);
    let log = dir.path().join("a.log");
    let mut process = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["worker", "--id", "a", "--coordinator", &url, "--slots", "1"])
        .args(["--shutdown-grace", &format!("{}ms", GRACE.as_millis())])
        .arg("--data-dir")
        .arg(dir.path().join("a"))
        .env("QUARRY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status().await?.live_workers < 1 {
        anyhow::ensure!(Instant::now() < deadline, "worker a did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Far more loop turns than the test waits for: the task is still
    // running on `a` when the grace period ends.
    let hunt = client
        .submit_hunt(
            HuntRequest::new("spinner")
                .shard("slow")
                .param("spins", "100000000000"),
        )
        .await?
        .hunt_id;
    assigned_to(&mut client, &hunt, "a", Duration::from_secs(30)).await?;
    let b = Worker::start_with_store(
        WorkerConfig {
            id: WorkerId::new("b"),
            coordinator: url.clone(),
            data_dir: dir.path().join("b"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            slots: 1,
            tls: None,
        },
        Arc::new(fill(&dir.path().join("b"))?),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status().await?.live_workers < 2 {
        anyhow::ensure!(Instant::now() < deadline, "worker b did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = i32::try_from(process.id())?;
    let sent = Instant::now();
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + GRACE + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = process.try_wait()? {
            break status;
        }
        anyhow::ensure!(Instant::now() < deadline, "SIGTERM did not stop the worker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped = sent.elapsed();
    assert!(status.success(), "the worker died of SIGTERM: {status}");
    assert!(
        stopped >= GRACE,
        "it waited out the grace period: {stopped:?}"
    );
    let text = std::fs::read_to_string(&log)?;
    for line in [
        "draining: 1 tasks running, waiting up to 1s",
        "handed back 1 tasks",
    ] {
        assert!(
            text.contains(line),
            "the worker's log says {line:?}:\n{text}"
        );
    }

    let moved = assigned_to(&mut client, &hunt, "b", LEASE / 4).await?;
    assert_eq!(
        (moved.attempt, moved.failed_attempts),
        (2, 0),
        "handed back, not failed: {moved:?}"
    );
    client.cancel_hunt(&hunt, "test done").await?;
    b.shutdown().await;
    coordinator.shutdown().await;
    Ok(())
}
