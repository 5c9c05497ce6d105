//! The coordinator as a real process: killed with SIGKILL mid-life and
//! started again on the same data directory, it still has every committed
//! hunt, task and finding, and keeps scheduling; stopped with SIGTERM (what
//! systemd and Kubernetes send), it shuts down cleanly.

use quarry_client::{Client, HuntRequest};
use quarry_proto::{WorkerId, v1};
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_coordinator(data_dir: &Path, port: u16) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args([
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// Connects once the coordinator answers and leads.
async fn connect_leader(url: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut client) = Client::connect(url).await
            && client.status().await.is_ok_and(|s| s.is_leader)
        {
            return Ok(client);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "coordinator at {url} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_worker(dir: &Path, index: usize, url: &str) -> anyhow::Result<Worker> {
    let store = ShardStore::open(&dir.join("shards"))?;
    quarry_worker::demo::generate_demo_shards(&store, index)?;
    Ok(Worker::start_with_store(
        WorkerConfig {
            id: WorkerId::new(format!("worker-{index}")),
            coordinator: url.to_owned(),
            data_dir: dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            slots: 2,
            tls: None,
        },
        Arc::new(store),
    )
    .await?)
}

async fn run_hunt(client: &mut Client) -> anyhow::Result<v1::Hunt> {
    let deadline = Instant::now() + Duration::from_secs(30);
    // Workers register asynchronously; wait until both have.
    while client.status().await?.live_workers < 2 {
        anyhow::ensure!(Instant::now() < deadline, "workers did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let submitted = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("env", "demo"))
        .await?;
    Ok(tokio::time::timeout(
        Duration::from_secs(120),
        client.wait(&submitted.hunt_id, |_| {}),
    )
    .await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_coordinator_process_restarts_with_every_committed_result() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("coordinator");
    let mut process = spawn_coordinator(&data, port)?;
    let mut client = connect_leader(&url).await?;
    let module = quarry_hunt_modules::BRUTEFORCE;
    client
        .upload_module(module.name, module.version, "", module.wasm)
        .await?;
    let workers = vec![
        start_worker(&dir.path().join("w0"), 0, &url).await?,
        start_worker(&dir.path().join("w1"), 1, &url).await?,
    ];
    let hunt = run_hunt(&mut client).await?;
    assert_eq!(
        hunt.state,
        v1::HuntState::Completed as i32,
        "{}",
        hunt.reason
    );
    let findings = client.findings(&hunt.hunt_id).await?;
    assert_eq!(findings.len(), quarry_worker::demo::PLANTED.len());

    // A crash, not a clean stop: nothing gets to flush on the way out.
    process.kill()?;
    process.wait()?;
    let mut process = spawn_coordinator(&data, port)?;
    let mut client = connect_leader(&url).await?;
    assert_eq!(
        client.hunt(&hunt.hunt_id).await?,
        hunt,
        "hunt changed across the crash"
    );
    assert_eq!(
        client.findings(&hunt.hunt_id).await?,
        findings,
        "findings changed across the crash"
    );
    assert_eq!(client.list_modules().await?.len(), 1);

    // Workers reconnect by themselves and the restarted node schedules again.
    let again = run_hunt(&mut client).await?;
    assert_eq!(
        again.state,
        v1::HuntState::Completed as i32,
        "{}",
        again.reason
    );
    assert_eq!(client.findings(&again.hunt_id).await?.len(), findings.len());

    for worker in workers {
        worker.shutdown().await;
    }
    process.kill()?;
    process.wait()?;
    Ok(())
}

/// SIGTERM stops the coordinator the way Ctrl-C does: a clean exit (status
/// 0, not death by the signal), and the same data directory opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_coordinator_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("coordinator");
    let mut process = spawn_coordinator(&data, port)?;
    connect_leader(&url).await?;
    let pid = i32::try_from(process.id())?;
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = process.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "SIGTERM did not stop the coordinator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "the coordinator died of SIGTERM: {status}"
    );
    let mut process = spawn_coordinator(&data, port)?;
    connect_leader(&url).await?;
    process.kill()?;
    process.wait()?;
    Ok(())
}
