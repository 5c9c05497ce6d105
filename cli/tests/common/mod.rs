//! Helpers shared by the tests that run `quarry` processes.

use std::process::Child;
use std::time::{Duration, Instant};

/// A child process killed and reaped when dropped, so a failing test
/// leaves no server behind.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Calls `probe` every 100 ms until it gives a value, or fails naming
/// `what` after `limit`.
pub async fn until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads the shipped `bruteforce` module, retrying while the group
/// settles (a fresh leader may not take writes yet).
pub async fn upload_bruteforce(client: &mut quarry_client::Client) -> anyhow::Result<()> {
    let module = quarry_hunt_modules::BRUTEFORCE;
    until("the module upload", Duration::from_secs(30), async || {
        client
            .upload_module(module.name, module.version, "", module.wasm)
            .await
            .ok()
    })
    .await
    .map(|_| ())
}

/// A worker data directory under `dir` holding the demo shards (with their
/// planted attacks), for a `quarry worker` process to serve.
pub fn demo_worker_dir(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let worker_dir = dir.join("worker");
    let store = quarry_worker::shard::ShardStore::open(&worker_dir.join("shards"))?;
    quarry_worker::demo::generate_demo_shards(&store, 0)?;
    Ok(worker_dir)
}
