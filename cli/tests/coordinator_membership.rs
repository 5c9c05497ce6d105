//! Coordinator membership, log compaction and snapshots with real
//! `quarry coordinator` processes (RocksDB in temp dirs, gRPC on loopback):
//!
//! - a member is removed, its data directory wiped after the group compacted
//!   its log, and it rejoins with `--join`: it catches up through a snapshot
//!   streamed in chunks and serves, through linearizable reads, every hunt
//!   and finding committed before;
//! - a fourth coordinator joins through a follower, the leader is removed
//!   with `quarry cluster remove-coordinator`, writes keep working, and the
//!   new membership survives a restart of every process.

use quarry_client::{Client, HuntRequest};
use quarry_proto::{WorkerId, v1};
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Node {
    id: u64,
    url: String,
    dir: PathBuf,
    process: Option<Child>,
}

impl Node {
    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.process.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // Hold all listeners at once so the ports differ.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// How a coordinator process finds its group.
enum Membership<'a> {
    /// A founding member; the map holds every founder's URL.
    Founder(&'a BTreeMap<u64, String>),
    /// A new member joining through this URL.
    Join(&'a str),
}

fn spawn(node: &Node, membership: Membership, compact_after: u64) -> anyhow::Result<Child> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quarry"));
    command
        .args(["coordinator", "--node-id", &node.id.to_string()])
        .args(["--listen", node.url.trim_start_matches("http://")])
        .args(["--log-compact-after", &compact_after.to_string()])
        .arg("--data-dir")
        .arg(&node.dir)
        .env("QUARRY_LOG", "warn,quarry_coordinator=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match membership {
        Membership::Founder(urls) => {
            for (peer, url) in urls.iter().filter(|(p, _)| **p != node.id) {
                command.args(["--peer", &format!("{peer}={url}")]);
            }
        }
        Membership::Join(url) => {
            command.args(["--join", url]);
        }
    }
    Ok(command.spawn()?)
}

fn start_group(
    dir: &Path,
    compact_after: u64,
) -> anyhow::Result<(Vec<Node>, BTreeMap<u64, String>)> {
    let ports = free_ports(3)?;
    let urls: BTreeMap<u64, String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("http://127.0.0.1:{p}")))
        .collect();
    let mut nodes = Vec::new();
    for (&id, url) in &urls {
        let mut node = Node {
            id,
            url: url.clone(),
            dir: dir.join(format!("coordinator-{id}")),
            process: None,
        };
        node.process = Some(spawn(&node, Membership::Founder(&urls), compact_after)?);
        nodes.push(node);
    }
    Ok((nodes, urls))
}

async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(url: &str) -> Option<v1::StatusResponse> {
    Client::connect(url).await.ok()?.status().await.ok()
}

/// The running node that reports itself leader, once one does.
async fn leader(nodes: &[Node]) -> anyhow::Result<(u64, Client)> {
    let urls: Vec<(u64, String)> = nodes
        .iter()
        .filter(|n| n.process.is_some())
        .map(|n| (n.id, n.url.clone()))
        .collect();
    let id = wait_until("a leader", Duration::from_secs(30), || {
        let urls = urls.clone();
        async move {
            for (id, url) in urls {
                if status(&url).await.is_some_and(|s| s.is_leader && !s.stale) {
                    return Some(id);
                }
            }
            None
        }
    })
    .await?;
    let url = &nodes
        .iter()
        .find(|n| n.id == id)
        .expect("leader is a node")
        .url;
    Ok((id, Client::connect(url).await?))
}

/// Waits until the node at `url` has applied everything the leader had
/// committed when called, and lists `members` as the group.
async fn caught_up(
    url: &str,
    leader_url: &str,
    members: &[u64],
) -> anyhow::Result<v1::StatusResponse> {
    let commit = status(leader_url)
        .await
        .ok_or_else(|| anyhow::anyhow!("leader at {leader_url} does not answer"))?
        .commit_index;
    let members: BTreeSet<u64> = members.iter().copied().collect();
    wait_until(
        &format!("{url} to apply index {commit} with members {members:?}"),
        Duration::from_secs(60),
        || {
            let members = members.clone();
            async move {
                let s = status(url).await?;
                let have: BTreeSet<u64> = s.coordinators.iter().map(|c| c.node_id).collect();
                (s.applied_index >= commit
                    && s.commit_index >= commit
                    && have == members
                    && !s.stale)
                    .then_some(s)
            }
        },
    )
    .await
}

async fn start_worker(dir: &Path, index: usize, urls: &str) -> anyhow::Result<Worker> {
    let store = ShardStore::open(&dir.join("shards"))?;
    quarry_worker::demo::generate_demo_shards(&store, index)?;
    Ok(Worker::start_with_store(
        WorkerConfig {
            id: WorkerId::new(format!("worker-{index}")),
            coordinator: urls.to_owned(),
            data_dir: dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            slots: 2,
        },
        Arc::new(store),
    )
    .await?)
}

/// A valid module component made `extra` bytes larger by a custom section,
/// so it has its own digest and makes the snapshot span many chunks.
fn padded_module(wasm: &[u8], extra: usize, tag: u8) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"quarry-test-padding";
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend(std::iter::repeat_n(tag, extra));
    let mut bytes = wasm.to_vec();
    bytes.push(0); // custom section id
    leb128(payload.len(), &mut bytes);
    bytes.extend_from_slice(&payload);
    bytes
}

/// Runs the `quarry` CLI and returns its stdout, failing on a non-zero exit.
fn cli(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "quarry {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

async fn run_hunt(client: &mut Client) -> anyhow::Result<v1::Hunt> {
    let hunt = client
        .submit_hunt(HuntRequest::new("logon-bruteforce").selector("env", "demo"))
        .await?;
    let done = tokio::time::timeout(Duration::from_secs(120), client.wait(&hunt.hunt_id, |_| {}))
        .await??;
    anyhow::ensure!(
        done.state == v1::HuntState::Completed as i32,
        "hunt {} ended {:?}: {}",
        done.hunt_id,
        done.state,
        done.reason
    );
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_member_rejoins_and_catches_up_through_a_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Compact every 10 applied entries so the log is cut long before the end.
    let (mut nodes, _) = start_group(dir.path(), 10)?;
    let (leader_id, mut client) = leader(&nodes).await?;
    let module = quarry_hunt_modules::LOGON_BRUTEFORCE;
    client
        .upload_module(module.name, module.version, "", module.wasm)
        .await?;
    // Snapshots carry modules: a 6 MiB one makes the snapshot span chunks.
    let big = padded_module(quarry_hunt_modules::test_modules::NOOP.wasm, 6 << 20, 1);
    client.upload_module("padded", "1", "", &big).await?;

    let urls = nodes
        .iter()
        .map(|n| n.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let workers = vec![
        start_worker(&dir.path().join("w0"), 0, &urls).await?,
        start_worker(&dir.path().join("w1"), 1, &urls).await?,
    ];
    wait_until("two live workers", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { (client.status().await.ok()?.live_workers >= 2).then_some(()) }
    })
    .await?;
    let mut hunts = vec![run_hunt(&mut client).await?, run_hunt(&mut client).await?];

    // Remove a follower through another follower (the CLI follows the
    // leader), then wipe its data directory.
    let victim = nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader_id)
        .expect("a follower");
    let via = nodes
        .iter()
        .find(|n| n.id != leader_id && n.id != victim)
        .expect("another follower")
        .url
        .clone();
    let removed = cli(&[
        "cluster",
        "remove-coordinator",
        "--node-id",
        &victim.to_string(),
        "--coordinator",
        &via,
        "--output",
        "json",
    ])?;
    assert!(
        !removed.contains(&format!("\"node_id\":{victim},")),
        "{removed}"
    );
    let node = nodes.iter_mut().find(|n| n.id == victim).expect("victim");
    node.kill()?;
    std::fs::remove_dir_all(&node.dir)?;

    // The rest of the group goes on without it.
    let (leader_id, mut client) = leader(&nodes).await?;
    hunts.push(run_hunt(&mut client).await?);
    let leader_url = nodes
        .iter()
        .find(|n| n.id == leader_id)
        .expect("leader")
        .url
        .clone();
    let leader_status = status(&leader_url).await.expect("leader status");
    assert!(
        leader_status.first_log_index > 10,
        "the leader's log should be compacted by now: {leader_status:?}"
    );

    // Rejoin with an empty data directory, through a follower.
    let node = nodes.iter_mut().find(|n| n.id == victim).expect("victim");
    node.process = Some(spawn(node, Membership::Join(&via), 10)?);
    let members: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    let rejoined = caught_up(
        &nodes.iter().find(|n| n.id == victim).expect("victim").url,
        &leader_url,
        &members,
    )
    .await?;
    assert!(
        rejoined.first_log_index > 2,
        "the rejoined node's log must start after a snapshot: {rejoined:?}"
    );
    assert_eq!(rejoined.modules, 2);

    // Linearizable reads on the rejoined node serve what was committed before.
    let victim_url = nodes
        .iter()
        .find(|n| n.id == victim)
        .expect("victim")
        .url
        .clone();
    let mut on_victim = Client::connect(&victim_url).await?;
    for hunt in &hunts {
        let there = on_victim.hunt(&hunt.hunt_id).await?;
        assert_eq!(there.state, hunt.state, "{}", hunt.hunt_id);
        assert_eq!(
            on_victim.findings(&hunt.hunt_id).await?,
            client.findings(&hunt.hunt_id).await?,
            "{}",
            hunt.hunt_id
        );
    }
    assert_eq!(on_victim.list_hunts(0).await?.len(), hunts.len());

    // And it takes part in new writes: a hunt submitted through it completes.
    let after = run_hunt(&mut on_victim).await?;
    assert!(!client.findings(&after.hunt_id).await?.is_empty());

    for worker in workers {
        worker.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_coordinator_joins_and_the_leader_leaves_while_writes_continue() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (mut nodes, founders) = start_group(dir.path(), 5000)?;
    let (leader_id, mut client) = leader(&nodes).await?;
    let noop = quarry_hunt_modules::test_modules::NOOP;
    client.upload_module("m", "1", "", noop.wasm).await?;

    // Node 4 joins through a follower.
    let follower = nodes
        .iter()
        .find(|n| n.id != leader_id)
        .expect("follower")
        .url
        .clone();
    let port = free_ports(1)?[0];
    let mut fourth = Node {
        id: 4,
        url: format!("http://127.0.0.1:{port}"),
        dir: dir.path().join("coordinator-4"),
        process: None,
    };
    fourth.process = Some(spawn(&fourth, Membership::Join(&follower), 5000)?);
    nodes.push(fourth);
    let leader_url = nodes
        .iter()
        .find(|n| n.id == leader_id)
        .expect("leader")
        .url
        .clone();
    let status4 = caught_up(&nodes[3].url, &leader_url, &[1, 2, 3, 4]).await?;
    assert_eq!(status4.modules, 1);
    assert!(
        status4
            .coordinators
            .iter()
            .all(|c| !c.url.is_empty() && c.voter),
        "every member's URL is replicated to the new node: {:?}",
        status4.coordinators
    );
    let mut on_fourth = Client::connect(&nodes[3].url).await?;
    assert_eq!(on_fourth.list_modules().await?.len(), 1);

    // Reads on a follower are linearizable (ReadIndex): a write acknowledged
    // by the leader is visible there at once, without waiting for it.
    for i in 0..5u8 {
        let info = client
            .upload_module(
                &format!("lin-{i}"),
                "1",
                "",
                &padded_module(noop.wasm, 64, 10 + i),
            )
            .await?;
        let seen = on_fourth.list_modules().await?;
        assert!(
            seen.iter().any(|m| m.digest == info.digest),
            "follower 4 missed module lin-{i} right after it was acknowledged"
        );
    }

    // Remove the leader through the new node; leadership moves first.
    let out = cli(&[
        "cluster",
        "remove-coordinator",
        "--node-id",
        &leader_id.to_string(),
        "--coordinator",
        &nodes[3].url,
    ])?;
    assert!(out.contains("voter"), "{out}");
    let old = nodes
        .iter_mut()
        .find(|n| n.id == leader_id)
        .expect("old leader");
    old.kill()?;
    let remaining: Vec<u64> = nodes
        .iter()
        .filter(|n| n.process.is_some())
        .map(|n| n.id)
        .collect();

    // Writes keep working, through any member.
    let (new_leader, _) = leader(&nodes).await?;
    assert_ne!(new_leader, leader_id);
    on_fourth
        .upload_module("m2", "1", "", &padded_module(noop.wasm, 1024, 2))
        .await?;
    let modules = 7;
    let new_leader_url = nodes
        .iter()
        .find(|n| n.id == new_leader)
        .expect("leader")
        .url
        .clone();
    for node in nodes.iter().filter(|n| n.process.is_some()) {
        let s = caught_up(&node.url, &new_leader_url, &remaining).await?;
        assert_eq!(s.modules, modules, "node {}", node.id);
    }

    // Every process restarted from disk keeps the new membership.
    for node in &mut nodes {
        node.kill()?;
    }
    for node in nodes.iter_mut().filter(|n| remaining.contains(&n.id)) {
        let membership = if node.id == 4 {
            Membership::Join(&follower) // ignored: the data directory is not empty
        } else {
            Membership::Founder(&founders)
        };
        node.process = Some(spawn(node, membership, 5000)?);
    }
    let (restarted_leader, mut client) = leader(&nodes).await?;
    let restarted_url = nodes
        .iter()
        .find(|n| n.id == restarted_leader)
        .expect("leader")
        .url
        .clone();
    let s = caught_up(&restarted_url, &restarted_url, &remaining).await?;
    assert_eq!(s.modules, modules);
    client
        .upload_module("m3", "1", "", &padded_module(noop.wasm, 1024, 3))
        .await?;
    assert_eq!(client.list_modules().await?.len(), modules as usize + 1);

    // Without a quorum nothing is confirmed: the last node standing flags
    // its status as stale and refuses linearizable reads.
    let last = nodes
        .iter()
        .find(|n| n.id != restarted_leader && n.process.is_some())
        .expect("a follower")
        .id;
    for node in nodes.iter_mut().filter(|n| n.id != last) {
        node.kill()?;
    }
    let last_url = nodes
        .iter()
        .find(|n| n.id == last)
        .expect("last")
        .url
        .clone();
    wait_until("a stale status", Duration::from_secs(30), || {
        let url = last_url.clone();
        async move { status(&url).await.filter(|s| s.stale) }
    })
    .await?;
    let refused = Client::connect(&last_url).await?.list_modules().await;
    assert!(
        refused.is_err(),
        "a read without a quorum must fail: {refused:?}"
    );
    Ok(())
}
