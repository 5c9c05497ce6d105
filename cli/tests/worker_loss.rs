//! A worker process killed mid-hunt: its lease expires, its tasks go back to
//! pending with the reason in their status (the shards have no replica), and
//! when the worker returns the hunt completes with every finding, once.

use quarry_cli::process_group::{self, KillOnDrop};
use quarry_client::{Client, HuntRequest};
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_proto::v1;
use quarry_worker::shard::ShardStore;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn spawn_worker(dir: &Path, index: usize, url: &str) -> anyhow::Result<KillOnDrop> {
    let binary = Path::new(env!("CARGO_BIN_EXE_quarry"));
    process_group::spawn_worker(binary, dir, &format!("worker-{index}"), url, 2)
}

async fn until<T>(
    what: &str,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_tasks_wait_visibly_and_finish_when_it_returns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = CoordinatorConfig::single_node(
        dir.path().join("coordinator"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    config.heartbeat_interval = Duration::from_millis(300);
    config.heartbeat_timeout = Duration::from_secs(2);
    let coordinator = Coordinator::start(config).await?;
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await?;
    let url = format!("http://{}", coordinator.addr());
    let mut client = Client::connect(&url).await?;
    let module = quarry_hunt_modules::BRUTEFORCE;
    client
        .upload_module(module.name, module.version, "", module.wasm)
        .await?;

    let dirs = [dir.path().join("w0"), dir.path().join("w1")];
    for (index, worker_dir) in dirs.iter().enumerate() {
        let store = ShardStore::open(&worker_dir.join("shards"))?;
        quarry_worker::demo::generate_demo_shards(&store, index)?;
    }
    let _w0 = spawn_worker(&dirs[0], 0, &url)?;
    let mut w1 = Some(spawn_worker(&dirs[1], 1, &url)?);
    until("two live workers", async || {
        Ok((client.status().await?.live_workers == 2).then_some(()))
    })
    .await?;

    // worker-1 compiles the module first (seconds in this build): kill it
    // while its tasks are assigned and unreported.
    let hunt = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("env", "demo"))
        .await?;
    let lost: Vec<String> = until("worker-1's tasks to be assigned", async || {
        let h = client.hunt(&hunt.hunt_id).await?;
        let mine: Vec<String> = h
            .tasks
            .iter()
            .filter(|t| t.worker_id == "worker-1")
            .map(|t| t.task_id.clone())
            .collect();
        Ok((mine.len() == 2).then_some(mine))
    })
    .await?;
    drop(w1.take()); // SIGKILL

    let waiting = until("worker-1's tasks to wait with a reason", async || {
        let h = client.hunt(&hunt.hunt_id).await?;
        let pending: Vec<v1::TaskStatus> = h
            .tasks
            .into_iter()
            .filter(|t| lost.contains(&t.task_id) && t.state == v1::TaskState::Pending as i32)
            .collect();
        Ok((pending.len() == lost.len()).then_some(pending))
    })
    .await;
    // If worker-1 finished before the kill there is nothing to wait for.
    let finished_first = client
        .hunt(&hunt.hunt_id)
        .await?
        .tasks
        .iter()
        .filter(|t| lost.contains(&t.task_id))
        .all(|t| t.state == v1::TaskState::Succeeded as i32);
    eprintln!("worker-1 finished before the kill: {finished_first}");
    if !finished_first {
        let waiting = waiting?;
        for task in &waiting {
            assert!(
                task.error.contains("stopped heartbeating") && task.error.contains("worker-1"),
                "{task:?}"
            );
        }
        assert_eq!(
            client.hunt(&hunt.hunt_id).await?.state,
            v1::HuntState::Running as i32,
            "the hunt waits, it does not end"
        );
    }

    // The worker returns; its tasks run again (a new attempt) and the hunt completes.
    let _w1 = spawn_worker(&dirs[1], 1, &url)?;
    let done = until("the hunt to end", async || {
        let h = client.hunt(&hunt.hunt_id).await?;
        Ok((h.state != v1::HuntState::Running as i32).then_some(h))
    })
    .await?;
    assert_eq!(
        done.state,
        v1::HuntState::Completed as i32,
        "{}",
        done.reason
    );
    let findings = client.findings(&hunt.hunt_id).await?;
    assert_eq!(
        findings.len(),
        quarry_worker::demo::PLANTED.len(),
        "{findings:#?}"
    );
    if !finished_first {
        assert!(
            done.tasks
                .iter()
                .filter(|t| lost.contains(&t.task_id))
                .all(|t| t.attempt == 2),
            "{:?}",
            done.tasks
        );
    }
    coordinator.shutdown().await;
    Ok(())
}
