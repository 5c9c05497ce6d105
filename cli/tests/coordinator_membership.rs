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

use quarry_cli::process_group::free_ports;
use quarry_client::{Client, HuntRequest};
use quarry_proto::{WorkerId, v1};
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
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
        .env("QUARRY_LOG", "warn,quarry_coordinator=info,raft=info")
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
/// committed when called, and lists `members` as the group's voters.
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
                // Joined nodes start as learners; wait for their promotion.
                let have: BTreeSet<u64> = s
                    .coordinators
                    .iter()
                    .filter(|c| c.voter)
                    .map(|c| c.node_id)
                    .collect();
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
            tls: None,
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

/// Runs `op` until it succeeds or a minute passes. On a loaded machine a
/// leader can lose its lease and a write or a linearizable read in flight
/// then fails with UNAVAILABLE; every operation retried here is idempotent.
async fn retry<T, F, Fut>(what: &str, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying {what}: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context(format!("{what} kept failing"))),
        }
    }
}

async fn upload(url: &str, name: &str, wasm: &[u8]) -> anyhow::Result<v1::ModuleInfo> {
    retry(&format!("upload of {name}"), || async {
        Ok(Client::connect(url)
            .await?
            .upload_module(name, "1", "", wasm)
            .await?)
    })
    .await
}

async fn get_hunt(url: &str, id: &str) -> anyhow::Result<v1::Hunt> {
    retry(&format!("read of hunt {id} on {url}"), || async {
        Ok(Client::connect(url).await?.hunt(id).await?)
    })
    .await
}

async fn findings(url: &str, id: &str) -> anyhow::Result<Vec<v1::Finding>> {
    retry(&format!("read of findings of {id} on {url}"), || async {
        Ok(Client::connect(url).await?.findings(id).await?)
    })
    .await
}

/// Submits the demo hunt through `url` and waits until it ends, completed.
async fn run_hunt(url: &str) -> anyhow::Result<v1::Hunt> {
    let hunt = retry("hunt submission", || async {
        Ok(Client::connect(url)
            .await?
            .submit_hunt(HuntRequest::new("bruteforce").selector("env", "demo"))
            .await?)
    })
    .await?;
    let id = hunt.hunt_id;
    let done = wait_until(
        &format!("hunt {id} to end"),
        Duration::from_secs(120),
        || {
            let id = id.clone();
            async move {
                let hunt = Client::connect(url).await.ok()?.hunt(&id).await.ok()?;
                (hunt.state != v1::HuntState::Running as i32).then_some(hunt)
            }
        },
    )
    .await?;
    anyhow::ensure!(
        done.state == v1::HuntState::Completed as i32,
        "hunt {id} ended {:?}: {}",
        done.state,
        done.reason
    );
    Ok(done)
}

fn url_of(nodes: &[Node], id: u64) -> String {
    nodes
        .iter()
        .find(|n| n.id == id)
        .map(|n| n.url.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_member_rejoins_and_catches_up_through_a_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Compact every 10 applied entries so the log is cut long before the end.
    let (mut nodes, _) = start_group(dir.path(), 10)?;
    let (leader_id, _) = leader(&nodes).await?;
    let entry = url_of(&nodes, leader_id);
    let module = quarry_hunt_modules::BRUTEFORCE;
    upload(&entry, module.name, module.wasm).await?;
    // Snapshots carry modules: a 6 MiB one makes the snapshot span chunks.
    let big = padded_module(quarry_hunt_modules::test_modules::NOOP.wasm, 6 << 20, 1);
    upload(&entry, "padded", &big).await?;

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
        let nodes = &nodes;
        async move {
            let (_, mut client) = leader(nodes).await.ok()?;
            (client.status().await.ok()?.live_workers >= 2).then_some(())
        }
    })
    .await?;
    let mut hunts = vec![run_hunt(&entry).await?, run_hunt(&entry).await?];

    // Remove a follower through another follower (the CLI follows the
    // leader), then wipe its data directory.
    let (leader_id, _) = leader(&nodes).await?;
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
    let victim_id = victim.to_string();
    retry("remove-coordinator", || async {
        let members = cli(&[
            "cluster",
            "remove-coordinator",
            "--node-id",
            &victim_id,
            "--coordinator",
            &via,
            "--output",
            "json",
        ])
        .or_else(|e| {
            // A retry after a removal that did commit finds it gone.
            if e.to_string().contains("is not a member") {
                Ok(String::new())
            } else {
                Err(e)
            }
        })?;
        anyhow::ensure!(
            !members.contains(&format!("\"node_id\":{victim},")),
            "{members}"
        );
        Ok(())
    })
    .await?;
    let node = nodes.iter_mut().find(|n| n.id == victim).expect("victim");
    node.kill()?;
    std::fs::remove_dir_all(&node.dir)?;

    // The rest of the group goes on without it.
    hunts.push(run_hunt(&via).await?);
    let (leader_id, _) = leader(&nodes).await?;
    let leader_url = url_of(&nodes, leader_id);
    let leader_status = status(&leader_url).await.expect("leader status");
    assert!(
        leader_status.first_log_index > 10,
        "the leader's log should be compacted by now: {leader_status:?}"
    );

    // Rejoin with an empty data directory, through a follower.
    let node = nodes.iter_mut().find(|n| n.id == victim).expect("victim");
    node.process = Some(spawn(node, Membership::Join(&via), 10)?);
    let members: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    let victim_url = url_of(&nodes, victim);
    let rejoined = caught_up(&victim_url, &leader_url, &members).await?;
    assert!(
        rejoined.first_log_index > 2,
        "the rejoined node's log must start after a snapshot: {rejoined:?}"
    );
    assert_eq!(rejoined.modules, 2);

    // Linearizable reads on the rejoined node serve what was committed before.
    for hunt in &hunts {
        let there = get_hunt(&victim_url, &hunt.hunt_id).await?;
        assert_eq!(there.state, hunt.state, "{}", hunt.hunt_id);
        assert_eq!(
            findings(&victim_url, &hunt.hunt_id).await?,
            findings(&leader_url, &hunt.hunt_id).await?,
            "{}",
            hunt.hunt_id
        );
    }
    let listed = retry("hunt list on the rejoined node", || async {
        Ok(Client::connect(&victim_url).await?.list_hunts(0).await?)
    })
    .await?;
    assert_eq!(listed.len(), hunts.len());

    // And it takes part in new writes: a hunt submitted through it completes.
    let after = run_hunt(&victim_url).await?;
    assert!(!findings(&leader_url, &after.hunt_id).await?.is_empty());
    hunts.push(after);

    // Every process restarted from compacted logs: raft resumes from the
    // compacted point and every hunt and finding is still there.
    let mut before = Vec::new();
    for hunt in &hunts {
        before.push(findings(&leader_url, &hunt.hunt_id).await?);
    }
    for node in &mut nodes {
        node.kill()?;
    }
    let founders: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id, n.url.clone())).collect();
    for node in &mut nodes {
        let membership = if node.id == victim {
            Membership::Join(&via) // ignored: the data directory is not empty
        } else {
            Membership::Founder(&founders)
        };
        node.process = Some(spawn(node, membership, 10)?);
    }
    let (leader_id, _) = leader(&nodes).await?;
    let leader_url = url_of(&nodes, leader_id);
    for node in &nodes {
        let s = caught_up(&node.url, &leader_url, &members).await?;
        assert!(
            s.first_log_index > 10,
            "node {} restarted compacted: {s:?}",
            node.id
        );
    }
    for (hunt, expected) in hunts.iter().zip(&before) {
        assert_eq!(&findings(&victim_url, &hunt.hunt_id).await?, expected);
    }
    run_hunt(&leader_url).await?;

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
    let (leader_id, _) = leader(&nodes).await?;
    let leader_url = url_of(&nodes, leader_id);
    let noop = quarry_hunt_modules::test_modules::NOOP;
    upload(&leader_url, "m", noop.wasm).await?;

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
    let fourth_url = fourth.url.clone();
    nodes.push(fourth);
    let status4 = caught_up(&fourth_url, &leader_url, &[1, 2, 3, 4]).await?;
    assert_eq!(status4.modules, 1);
    assert!(
        status4
            .coordinators
            .iter()
            .all(|c| !c.url.is_empty() && c.voter),
        "every member's URL is replicated to the new node: {:?}",
        status4.coordinators
    );

    // Membership changes that make no sense are refused with the reason.
    let err = cli(&[
        "cluster",
        "remove-coordinator",
        "--node-id",
        "9",
        "--coordinator",
        &fourth_url,
    ])
    .expect_err("9 is not a member");
    assert!(err.to_string().contains("not a member"), "{err:#}");
    // A second process may not take over a member's id.
    let err = cli(&[
        "cluster",
        "add-coordinator",
        "--node-id",
        "2",
        "--url",
        "http://127.0.0.1:1",
        "--coordinator",
        &fourth_url,
    ])
    .expect_err("2 is a member at another URL");
    assert!(err.to_string().contains("already a member"), "{err:#}");

    // Reads on a follower are linearizable (ReadIndex): a write acknowledged
    // by the leader is visible there at once, without waiting for it.
    for i in 0..5u8 {
        let info = upload(
            &leader_url,
            &format!("lin-{i}"),
            &padded_module(noop.wasm, 64, 10 + i),
        )
        .await?;
        let seen = retry("module list on node 4", || async {
            Ok(Client::connect(&fourth_url).await?.list_modules().await?)
        })
        .await?;
        assert!(
            seen.iter().any(|m| m.digest == info.digest),
            "follower 4 missed module lin-{i} right after it was acknowledged"
        );
    }

    // Remove the leader through the new node; leadership moves first.
    let (leader_id, _) = leader(&nodes).await?;
    let leader_arg = leader_id.to_string();
    retry("remove-coordinator of the leader", || async {
        let out = cli(&[
            "cluster",
            "remove-coordinator",
            "--node-id",
            &leader_arg,
            "--coordinator",
            &fourth_url,
        ])
        .or_else(|e| {
            if e.to_string().contains("is not a member") {
                Ok("voter".to_owned())
            } else {
                Err(e)
            }
        })?;
        anyhow::ensure!(out.contains("voter"), "{out}");
        Ok(())
    })
    .await?;
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
    upload(&fourth_url, "m2", &padded_module(noop.wasm, 1024, 2)).await?;
    let modules = 7;
    let new_leader_url = url_of(&nodes, new_leader);
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
    let (restarted_leader, _) = leader(&nodes).await?;
    let restarted_url = url_of(&nodes, restarted_leader);
    let s = caught_up(&restarted_url, &restarted_url, &remaining).await?;
    assert_eq!(s.modules, modules);
    upload(&restarted_url, "m3", &padded_module(noop.wasm, 1024, 3)).await?;
    let listed = retry("module list", || async {
        Ok(Client::connect(&restarted_url)
            .await?
            .list_modules()
            .await?)
    })
    .await?;
    assert_eq!(listed.len(), modules as usize + 1);

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
    let last_url = url_of(&nodes, last);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_removed_without_being_killed_hands_its_workers_to_the_new_leader()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (nodes, _) = start_group(dir.path(), 5000)?;
    let (leader_id, _) = leader(&nodes).await?;
    let leader_url = url_of(&nodes, leader_id);
    let module = quarry_hunt_modules::BRUTEFORCE;
    upload(&leader_url, module.name, module.wasm).await?;
    let all_urls = nodes
        .iter()
        .map(|n| n.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut workers = Vec::new();
    for index in 0..2 {
        let worker_dir = dir.path().join(format!("worker-{index}"));
        workers.push(start_worker(&worker_dir, index, &all_urls).await?);
    }
    let live_on = |url: String| async move {
        let workers = Client::connect(&url).await.ok()?.workers().await.ok()?;
        (workers.len() == 2 && workers.iter().all(|w| w.live)).then_some(())
    };
    wait_until(
        "both workers live on the leader",
        Duration::from_secs(60),
        || live_on(leader_url.clone()),
    )
    .await?;

    // A hunt in flight while the leader is removed from the group; the
    // removed process keeps running, as after a partition or an operator
    // who forgot to stop it.
    let first = retry("hunt submission", || async {
        Ok(Client::connect(&leader_url)
            .await?
            .submit_hunt(HuntRequest::new("bruteforce").selector("env", "demo"))
            .await?)
    })
    .await?;
    let other = nodes
        .iter()
        .find(|n| n.id != leader_id)
        .expect("a follower")
        .url
        .clone();
    let leader_arg = leader_id.to_string();
    retry("remove-coordinator of the leader", || async {
        cli(&[
            "cluster",
            "remove-coordinator",
            "--node-id",
            &leader_arg,
            "--coordinator",
            &other,
        ])
        .map(|_| ())
        .or_else(|e| {
            if e.to_string().contains("is not a member") {
                Ok(())
            } else {
                Err(e)
            }
        })
    })
    .await?;
    let others: Vec<(u64, String)> = nodes
        .iter()
        .filter(|n| n.id != leader_id)
        .map(|n| (n.id, n.url.clone()))
        .collect();
    let new_leader = wait_until(
        "a leader among the remaining members",
        Duration::from_secs(30),
        || {
            let others = others.clone();
            async move {
                for (id, url) in others {
                    if status(&url).await.is_some_and(|s| s.is_leader && !s.stale) {
                        return Some(id);
                    }
                }
                None
            }
        },
    )
    .await?;
    let new_url = url_of(&nodes, new_leader);

    // The hunt in flight completes, and a new one runs, through the new
    // leader: the workers followed it.
    let done = wait_until(
        &format!("hunt {} to end", first.hunt_id),
        Duration::from_secs(120),
        || {
            let (url, id) = (new_url.clone(), first.hunt_id.clone());
            async move {
                let hunt = Client::connect(&url).await.ok()?.hunt(&id).await.ok()?;
                (hunt.state != v1::HuntState::Running as i32).then_some(hunt)
            }
        },
    )
    .await?;
    assert_eq!(
        done.state,
        v1::HuntState::Completed as i32,
        "{}",
        done.reason
    );
    run_hunt(&new_url).await?;
    wait_until(
        "both workers live on the new leader",
        Duration::from_secs(30),
        || live_on(new_url.clone()),
    )
    .await?;
    let old = nodes
        .iter()
        .find(|n| n.id == leader_id)
        .expect("old leader");
    assert!(
        old.process.is_some(),
        "the removed leader was never stopped"
    );
    for worker in workers {
        worker.shutdown().await;
    }
    Ok(())
}
