//! A raft group of `quarry coordinator` processes on loopback, each with its
//! own data directory: what `quarry bench scheduler` measures, and what
//! process tests kill with SIGKILL.

use anyhow::Context;
use quarry_client::Client;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One coordinator process of a [`ProcessGroup`].
pub struct GroupNode {
    /// Raft node id.
    pub id: u64,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    process: Option<Child>,
}

impl GroupNode {
    /// Whether the process was started and not killed.
    pub fn running(&self) -> bool {
        self.process.is_some()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }
}

/// Coordinator processes forming one raft group; every process still
/// running is killed when this is dropped.
pub struct ProcessGroup {
    binary: PathBuf,
    dir: PathBuf,
    urls: BTreeMap<u64, String>,
    /// The nodes, by id order.
    pub nodes: Vec<GroupNode>,
}

impl ProcessGroup {
    /// Starts `size` coordinators (ids 1..=size) from `binary` (a `quarry`
    /// executable) with data and logs under `dir`, on free loopback ports.
    pub fn start(binary: &Path, dir: &Path, size: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(size >= 1, "a group needs at least one coordinator");
        let urls: BTreeMap<u64, String> = free_ports(size)?
            .iter()
            .enumerate()
            .map(|(i, port)| (i as u64 + 1, format!("http://127.0.0.1:{port}")))
            .collect();
        let mut group = Self {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            urls: urls.clone(),
            nodes: Vec::new(),
        };
        for (id, url) in urls {
            let process = Some(group.spawn(id)?);
            group.nodes.push(GroupNode { id, url, process });
        }
        Ok(group)
    }

    fn spawn(&self, id: u64) -> anyhow::Result<Child> {
        let url = &self.urls[&id];
        let log_path = self.dir.join(format!("coordinator-{id}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args(["coordinator", "--node-id", &id.to_string()])
            .args(["--listen", url.trim_start_matches("http://")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("coordinator-{id}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (peer, peer_url) in self.urls.iter().filter(|(p, _)| **p != id) {
            command.args(["--peer", &format!("{peer}={peer_url}")]);
        }
        command
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))
    }

    /// Every node's URL, comma-separated, as workers and clients take them.
    pub fn urls(&self) -> String {
        self.urls.values().cloned().collect::<Vec<_>>().join(",")
    }

    /// The node that reports itself leader, once one does, with a client
    /// connected to it.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<(u64, Client)> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in self.nodes.iter().filter(|n| n.running()) {
                if let Ok(mut client) = Client::connect(&node.url).await
                    && client.status().await.is_ok_and(|s| s.is_leader)
                {
                    return Ok((node.id, client));
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no coordinator became leader within {timeout:?}; see the logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no coordinator {id} in the group"))?;
        if let Some(mut child) = node.process.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `n` distinct free loopback ports (all listeners are held at once so the
/// ports differ).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// A child process that is SIGKILLed and reaped when dropped.
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary worker` (a `quarry` executable) as worker `id` with its
/// data in `dir`, talking to `coordinator` (comma-separated URLs), with
/// `slots` task slots; its stderr goes to ours.
pub fn spawn_worker(
    binary: &Path,
    dir: &Path,
    id: &str,
    coordinator: &str,
    slots: u32,
) -> anyhow::Result<KillOnDrop> {
    let child = Command::new(binary)
        .args(["worker", "--id", id, "--coordinator", coordinator])
        .args(["--slots", &slots.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(KillOnDrop(child))
}
