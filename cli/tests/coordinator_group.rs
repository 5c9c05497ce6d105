//! A three-coordinator raft group as real processes: the leader is killed
//! with SIGKILL right after a hunt over 20 shards is submitted; a follower takes over, the
//! workers follow it, and the hunt completes with the same findings as an
//! undisturbed run, each triaged into exactly one alert on every replica.

use quarry_cli::process_group::free_ports;
use quarry_client::{Client, HuntRequest};
use quarry_proto::{WorkerId, v1};
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Copies of each demo shard each worker holds besides the original.
const COPIES: usize = 4;
/// Shards in the hunt: the 4 demo shards and their copies.
const SHARDS: usize = 4 * (1 + COPIES);

struct Node {
    id: u64,
    url: String,
    process: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_node(dir: &Path, id: u64, urls: &BTreeMap<u64, String>) -> anyhow::Result<Child> {
    let url = &urls[&id];
    let mut command = Command::new(env!("CARGO_BIN_EXE_quarry"));
    command
        .args(["coordinator", "--node-id", &id.to_string()])
        .args(["--listen", url.trim_start_matches("http://")])
        .arg("--data-dir")
        .arg(dir.join(format!("coordinator-{id}")))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (peer, peer_url) in urls.iter().filter(|(p, _)| **p != id) {
        command.args(["--peer", &format!("{peer}={peer_url}")]);
    }
    Ok(command.spawn()?)
}

fn start_group(dir: &Path) -> anyhow::Result<(Vec<Node>, BTreeMap<u64, String>)> {
    let ports = free_ports(3)?;
    let urls: BTreeMap<u64, String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("http://127.0.0.1:{p}")))
        .collect();
    let mut nodes = Vec::new();
    for (&id, url) in &urls {
        nodes.push(Node {
            id,
            url: url.clone(),
            process: Some(spawn_node(dir, id, &urls)?),
        });
    }
    Ok((nodes, urls))
}

/// The node that reports itself leader, once one does.
async fn leader(nodes: &[Node]) -> anyhow::Result<(u64, Client)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in nodes.iter().filter(|n| n.process.is_some()) {
            if let Ok(mut client) = Client::connect(&node.url).await
                && client.status().await.is_ok_and(|s| s.is_leader)
            {
                return Ok((node.id, client));
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no coordinator became leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_worker(dir: &Path, index: usize, urls: &str) -> anyhow::Result<Worker> {
    let store = ShardStore::open(&dir.join("shards"))?;
    // The demo's two shards per worker, plus copies under other names, so
    // the hunt spans 4 x (1 + COPIES) = 20 shards.
    for meta in quarry_worker::demo::generate_demo_shards(&store, index)? {
        let events = quarry_worker::demo::demo_events(&meta.name)
            .ok_or_else(|| anyhow::anyhow!("{} is not a demo shard", meta.name))?;
        for copy in 1..=COPIES {
            let name = format!("{}-copy{copy}", meta.name);
            if store.get(&name).is_none() {
                let records = events.iter().cloned().map(Ok);
                store.append(&name, meta.labels.clone(), records, &mut |_| {})?;
            }
        }
    }
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

/// What makes two findings the same across hunts (ids differ per hunt).
fn essence(findings: &[v1::Finding]) -> BTreeSet<(String, String, String, i64)> {
    findings
        .iter()
        .map(|f| {
            (
                f.shard.clone(),
                f.rule.clone(),
                f.entity.clone(),
                f.timestamp_ms,
            )
        })
        .collect()
}

/// Every alert, open or closed.
fn every_alert() -> v1::ListCasesRequest {
    v1::ListCasesRequest {
        kinds: "alerts".into(),
        state: "all".into(),
        ..v1::ListCasesRequest::default()
    }
}

async fn wait_live_workers(client: &mut Client, n: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status().await?.live_workers < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "workers did not register with the leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The group, with bruteforce uploaded and two workers live: the nodes,
/// their URLs by id, a client of the leader and the workers.
async fn start_bruteforce_cluster(
    dir: &Path,
) -> anyhow::Result<(Vec<Node>, BTreeMap<u64, String>, Client, Vec<Worker>)> {
    let (nodes, group) = start_group(dir)?;
    let urls = nodes
        .iter()
        .map(|n| n.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let (_, mut client) = leader(&nodes).await?;
    let module = quarry_hunt_modules::BRUTEFORCE;
    client
        .upload_module(module.name, module.version, "", module.wasm)
        .await?;
    let workers = vec![
        start_worker(&dir.join("w0"), 0, &urls).await?,
        start_worker(&dir.join("w1"), 1, &urls).await?,
    ];
    wait_live_workers(&mut client, 2).await?;
    Ok((nodes, group, client, workers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_hunt_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut nodes, group, mut client, workers) = start_bruteforce_cluster(dir.path()).await?;

    // The undisturbed run.
    let request = || HuntRequest::new("bruteforce").selector("env", "demo");
    let baseline = client.submit_hunt(request()).await?;
    let baseline = tokio::time::timeout(
        Duration::from_secs(120),
        client.wait(&baseline.hunt_id, |_| {}),
    )
    .await??;
    assert_eq!(
        baseline.state,
        v1::HuntState::Completed as i32,
        "{}",
        baseline.reason
    );
    assert_eq!(baseline.tasks.len(), SHARDS, "the hunt spans every shard");
    let expected = essence(&client.findings(&baseline.hunt_id).await?);
    assert_eq!(
        expected.len(),
        quarry_worker::demo::PLANTED.len() * (1 + COPIES)
    );

    // Submit, then kill the leader at once.
    let (old_leader, mut client) = leader(&nodes).await?;
    let hunt = client.submit_hunt(request()).await?;
    let at_kill = client.hunt(&hunt.hunt_id).await?;
    assert_eq!(
        at_kill.state,
        v1::HuntState::Running as i32,
        "the leader must die mid-hunt"
    );
    let node = nodes
        .iter_mut()
        .find(|n| n.id == old_leader)
        .expect("leader is a node");
    if let Some(mut child) = node.process.take() {
        child.kill()?;
        child.wait()?;
    }

    let (new_leader, mut client) = leader(&nodes).await?;
    assert_ne!(new_leader, old_leader);
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            // The watch stream ends early if the answering node loses leadership.
            let hunt = client.hunt(&hunt.hunt_id).await?;
            if hunt.state != v1::HuntState::Running as i32 {
                return anyhow::Ok(hunt);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await??;
    assert_eq!(
        done.state,
        v1::HuntState::Completed as i32,
        "{}",
        done.reason
    );
    let findings = client.findings(&hunt.hunt_id).await?;
    assert_eq!(
        essence(&findings),
        expected,
        "findings differ from the undisturbed run"
    );
    assert_eq!(findings.len(), expected.len(), "a finding was duplicated");
    // Triage ran in the state machine through the failover: every committed
    // finding of both hunts is in exactly one alert, none lost or doubled.
    // Both runs found the same events, so each alert holds as many findings
    // of one hunt as of the other.
    let triage = client.triage_summary().await?;
    assert_eq!(triage.findings, 2 * expected.len() as u64);
    let alerts = client.all_cases(every_alert(), 0).await?.cases;
    assert_eq!(
        alerts.iter().map(|a| a.count).sum::<u64>(),
        2 * expected.len() as u64
    );
    for alert in &alerts {
        assert_eq!(alert.hunts.len(), 2, "{} {:?}", alert.id, alert.hunts);
        assert_eq!(alert.count % 2, 0, "{} holds {}", alert.id, alert.count);
    }
    // The earlier hunt survived the failover too.
    assert_eq!(
        essence(&client.findings(&baseline.hunt_id).await?),
        expected
    );

    for worker in workers {
        worker.shutdown().await;
    }

    // Every coordinator killed and restarted from disk: every hunt and
    // finding is still there.
    let before = client.list_hunts(0).await?;
    let mut findings_before = Vec::new();
    for hunt in &before {
        findings_before.push(client.findings(&hunt.hunt_id).await?);
    }
    for node in &mut nodes {
        if let Some(mut child) = node.process.take() {
            child.kill()?;
            child.wait()?;
        }
    }
    for node in &mut nodes {
        node.process = Some(spawn_node(dir.path(), node.id, &group)?);
    }
    let (_, mut client) = leader(&nodes).await?;
    let after = client.list_hunts(0).await?;
    assert_eq!(after.len(), before.len());
    // Every replica restored the same triage queue from its own RocksDB.
    for node in &nodes {
        let mut replica = Client::connect(&node.url).await?;
        assert_eq!(
            replica.all_cases(every_alert(), 0).await?.cases,
            alerts,
            "coordinator {}",
            node.id
        );
    }
    for (hunt, findings) in before.iter().zip(&findings_before) {
        let restored = client.hunt(&hunt.hunt_id).await?;
        assert_eq!(restored.state, hunt.state, "{}", hunt.hunt_id);
        assert_eq!(
            &client.findings(&hunt.hunt_id).await?,
            findings,
            "{}",
            hunt.hunt_id
        );
    }
    Ok(())
}

/// A worker given only a follower's URL follows the `quarry-leader` hint to
/// a leader it was never told about (as with a coordinator added to the
/// group after the worker started) and runs a hunt there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_knows_only_a_follower_follows_it_to_the_leader() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (nodes, _) = start_group(dir.path())?;
    let (leader_id, mut client) = leader(&nodes).await?;
    let follower = nodes
        .iter()
        .find(|n| n.id != leader_id)
        .map(|n| n.url.clone())
        .ok_or_else(|| anyhow::anyhow!("a group of three has followers"))?;
    let module = quarry_hunt_modules::BRUTEFORCE;
    client
        .upload_module(module.name, module.version, "", module.wasm)
        .await?;
    let worker = start_worker(&dir.path().join("w0"), 0, &follower).await?;
    wait_live_workers(&mut client, 1).await?;
    let hunt = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("env", "demo"))
        .await?;
    let done = tokio::time::timeout(Duration::from_secs(120), client.wait(&hunt.hunt_id, |_| {}))
        .await??;
    assert_eq!(
        done.state,
        v1::HuntState::Completed as i32,
        "{}",
        done.reason
    );
    assert!(!client.findings(&hunt.hunt_id).await?.is_empty());
    worker.shutdown().await;
    Ok(())
}

/// Polls `name` until `done` holds for it.
async fn wait_schedule(
    client: &mut Client,
    name: &str,
    what: &str,
    done: impl Fn(&v1::Schedule, &[v1::ScheduleRun]) -> bool,
) -> anyhow::Result<(v1::Schedule, Vec<v1::ScheduleRun>)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let schedule = client.schedule(name).await?;
        let runs = client.schedule_runs(name, 0).await?;
        if done(&schedule, &runs) {
            return Ok((schedule, runs));
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: {schedule:?} {runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_scheduled_run_runs_it_once_and_the_next_starts_at_the_watermarks()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut nodes, _, mut client, workers) = start_bruteforce_cluster(dir.path()).await?;

    let name = "brute-every-second";
    client
        .create_schedule(v1::CreateScheduleRequest {
            name: name.into(),
            template: Some(
                HuntRequest::new("bruteforce")
                    .selector("env", "demo")
                    .into_proto(),
            ),
            trigger: Some(v1::ScheduleTrigger {
                trigger: Some(v1::schedule_trigger::Trigger::EveryMs(1_000)),
            }),
            missed: v1::MissedRunPolicy::RunOnce as i32,
            ..Default::default()
        })
        .await?;
    // The first run starts: kill the leader while its hunt runs.
    let (schedule, _) = wait_schedule(&mut client, name, "the first run did not start", |s, _| {
        !s.active_hunt_id.is_empty()
    })
    .await?;
    let first = schedule.active_hunt_id.clone();
    let (old_leader, mut old_client) = leader(&nodes).await?;
    assert_eq!(
        old_client.hunt(&first).await?.state,
        v1::HuntState::Running as i32,
        "the leader must die mid-run"
    );
    let node = nodes
        .iter_mut()
        .find(|n| n.id == old_leader)
        .expect("leader is a node");
    if let Some(mut child) = node.process.take() {
        child.kill()?;
        child.wait()?;
    }
    let (new_leader, mut client) = leader(&nodes).await?;
    assert_ne!(new_leader, old_leader);
    let (_, runs) = wait_schedule(&mut client, name, "the first run did not end", |_, runs| {
        runs.iter()
            .any(|r| r.hunt_id == first && r.outcome != "running")
    })
    .await?;
    client.set_schedule_paused(name, true).await?;
    let (schedule, runs_after) = wait_schedule(&mut client, name, "a run did not end", |s, _| {
        s.active_hunt_id.is_empty()
    })
    .await?;
    let run = runs.iter().find(|r| r.hunt_id == first).expect("run 1");
    assert_eq!(
        (run.number, run.outcome.as_str()),
        (1, "completed"),
        "{run:?}"
    );
    assert_eq!(run.shards_scanned as usize, SHARDS);
    // Once per due time: no due time twice, no hunt twice, and every hunt
    // in the cluster is one run's.
    let dues: BTreeSet<i64> = runs_after.iter().map(|r| r.due_ms).collect();
    assert_eq!(dues.len(), runs_after.len(), "{runs_after:?}");
    let run_hunts: BTreeSet<&str> = runs_after.iter().map(|r| r.hunt_id.as_str()).collect();
    let hunts: BTreeSet<String> = client
        .list_hunts(0)
        .await?
        .into_iter()
        .map(|h| h.hunt_id)
        .collect();
    assert_eq!(
        hunts.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        run_hunts
    );
    // The watermarks are where every shard's scan ended: its ingest offset.
    let offsets = |workers: &[Worker]| -> BTreeMap<String, u64> {
        workers
            .iter()
            .flat_map(|w| w.store().list())
            .map(|meta| (meta.name, meta.next_offset))
            .collect()
    };
    let watermarks = |s: &v1::Schedule| -> BTreeMap<String, u64> {
        s.watermarks
            .iter()
            .map(|w| (w.shard.clone(), w.offset))
            .collect()
    };
    assert_eq!(watermarks(&schedule), offsets(&workers));

    // New events on one shard: the next run scans those and nothing else.
    let store = workers[0].store().clone();
    let shard = store.list().into_iter().next().expect("a shard");
    let fresh: String = (0..7)
        .map(|i| {
            format!(
                "{{\"@timestamp\":\"2026-12-01T10:00:0{i}Z\",\"EventID\":4625,\"Computer\":\"dc01\",\"TargetUserName\":\"late{i}\",\"IpAddress\":\"192.0.2.{i}\"}}\n"
            )
        })
        .collect();
    store.ingest_jsonl(&shard.name, shard.labels.clone(), fresh.as_bytes())?;
    let last = schedule.runs;
    client.set_schedule_paused(name, false).await?;
    let (_, runs) = wait_schedule(&mut client, name, "the next run did not end", |s, runs| {
        // The schedule and its runs are read by two calls: a run can start
        // between them, so wait for the run itself to have ended, then read
        // the schedule's watermarks after it.
        s.active_hunt_id.is_empty()
            && runs
                .iter()
                .any(|r| r.number > last && r.outcome != "running")
    })
    .await?;
    let schedule = client.schedule(name).await?;
    let next = runs
        .iter()
        .find(|r| r.number == last + 1)
        .expect("the next run");
    assert_eq!(next.outcome, "completed", "{next:?}");
    assert_eq!(next.events_scanned, 7, "{next:?}");
    assert_eq!(
        watermarks(&schedule)[&shard.name],
        shard.next_offset + 7,
        "{schedule:?}"
    );
    client.delete_schedule(name).await?;
    for worker in workers {
        worker.shutdown().await;
    }
    Ok(())
}
