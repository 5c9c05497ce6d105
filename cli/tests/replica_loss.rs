//! Worker processes killed mid-hunt, with replicas: 21 shards each held by
//! two of three worker processes, plus one shard held by a single worker.
//! SIGKILL that worker while its tasks run: the hunt over the replicated
//! shards completes with findings equal, finding for finding, to an
//! undisturbed run; a hunt that includes the unreplicated shard ends
//! partially completed at its deadline, naming that shard.

use quarry_cli::process_group::{self, KillOnDrop};
use quarry_client::{Client, HuntRequest};
use quarry_coordinator::scheduler::Speculation;
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_proto::v1;
use quarry_worker::shard::ShardStore;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Replicated shards r00..r20.
const REPLICATED: usize = 21;
/// The worker that dies, and the only holder of `lonely`.
const VICTIM: usize = 2;

fn spawn_worker(dir: &Path, index: usize, url: &str) -> anyhow::Result<KillOnDrop> {
    let binary = Path::new(env!("CARGO_BIN_EXE_quarry"));
    process_group::spawn_worker(binary, dir, &format!("worker-{index}"), url, 2)
}

async fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events of shard number `k`: `1 + k % 3` accounts each brute-forced (six
/// failed logons a minute apart, then a success), among benign logons.
fn shard_events(k: usize) -> (String, usize) {
    let logon = |hour: usize, minute: usize, id: u32, user: &str| {
        format!(
            r#"{{"@timestamp":"2024-03-01T{hour:02}:{minute:02}:00.000Z","EventID":{id},"TargetUserName":"{user}","TargetDomainName":"CORP","IpAddress":"10.0.{k}.5","LogonType":3,"Computer":"host{k}.corp.local"}}"#
        )
    };
    let attacked = 1 + k % 3;
    let mut lines = Vec::new();
    for a in 0..attacked {
        let user = format!("victim{k}-{a}");
        for minute in 0..6 {
            lines.push(logon(10 + a, minute, 4625, &user));
        }
        lines.push(logon(10 + a, 7, 4624, &user));
        for minute in 10..20 {
            lines.push(logon(10 + a, minute, 4624, &format!("user{k}-{a}")));
        }
    }
    (lines.join("\n") + "\n", attacked)
}

/// Compiles the module into the disk cache of each worker directory in
/// `dirs`, as the worker would (the cache file names carry the module's
/// digest and the engine's compatibility hash; the workers share one cache
/// key).
async fn prewarm(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let caches: Vec<PathBuf> = dirs.iter().map(|d| d.join("module-cache")).collect();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use quarry_worker::runtime::{Runtime, RuntimeConfig, module_digest};
        let module = quarry_hunt_modules::BRUTEFORCE;
        let runtime = Runtime::new(2, RuntimeConfig::default(), Some(&caches[0]))?;
        runtime.load(&module_digest(module.wasm), module.wasm)?;
        for cache in &caches[1..] {
            // Creates the cache directory as a worker would.
            drop(Runtime::new(2, RuntimeConfig::default(), Some(cache))?);
            // Artifacts are authenticated with the node's cache key (kept
            // beside the directory): share it, or the copies are refused.
            std::fs::copy(caches[0].with_extension("key"), cache.with_extension("key"))?;
            for entry in std::fs::read_dir(&caches[0])? {
                let entry = entry?;
                std::fs::copy(entry.path(), cache.join(entry.file_name()))?;
            }
        }
        Ok(())
    })
    .await?
}

/// The lease of the tests that kill workers: they are declared dead soon.
const SHORT_LEASE: Duration = Duration::from_millis(1500);

/// A coordinator with `heartbeat_timeout` leases (and `speculation`), the
/// module uploaded.
async fn coordinator(
    dir: &Path,
    speculation: Speculation,
    heartbeat_timeout: Duration,
) -> anyhow::Result<(Coordinator, String, Client)> {
    let mut config = CoordinatorConfig::single_node(
        dir.join("coordinator"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    config.heartbeat_interval = Duration::from_millis(250);
    config.heartbeat_timeout = heartbeat_timeout;
    config.speculation = speculation;
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
    Ok((coordinator, url, client))
}

/// A finding without its ids (which name the hunt and the attempt).
fn key(f: &v1::Finding) -> String {
    let mut evidence: Vec<_> = f
        .evidence
        .iter()
        .map(|e| format!("{}={}", e.key, e.value))
        .collect();
    evidence.sort();
    format!(
        "{} {} {} {} {:?} {:?} {:?}",
        f.shard, f.rule, f.entity, f.timestamp_ms, f.offsets, evidence, f.techniques
    )
}

fn keys(findings: &[v1::Finding]) -> Vec<String> {
    let mut keys: Vec<String> = findings.iter().map(key).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_with_replicas_loses_nothing_and_a_lone_shard_ends_partial_at_the_deadline()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (coordinator, url, mut client) =
        coordinator(dir.path(), Speculation::default(), SHORT_LEASE).await?;

    // Shard rK lives on workers K%3 and (K+1)%3; `lonely` on the victim only.
    let dirs: Vec<_> = (0..3).map(|w| dir.path().join(format!("w{w}"))).collect();
    let stores: Vec<ShardStore> = dirs
        .iter()
        .map(|d| ShardStore::open(&d.join("shards")))
        .collect::<Result<_, _>>()?;
    let mut expected = 0;
    for k in 0..REPLICATED {
        let (events, attacked) = shard_events(k);
        expected += attacked;
        for w in [k % 3, (k + 1) % 3] {
            let labels = BTreeMap::from([("set".to_owned(), "replicated".to_owned())]);
            stores[w].ingest_jsonl(&format!("r{k:02}"), labels, events.as_bytes())?;
        }
    }
    let (events, _) = shard_events(99);
    stores[VICTIM].ingest_jsonl("lonely", BTreeMap::new(), events.as_bytes())?;
    drop(stores);
    // The survivors find the module compiled in their disk cache and run
    // tasks at once; the victim compiles it (seconds in this build), which
    // is the window in which it is killed holding unreported tasks.
    prewarm(&dirs[..2]).await?;

    let mut workers: Vec<Option<KillOnDrop>> = Vec::new();
    for (w, worker_dir) in dirs.iter().enumerate() {
        workers.push(Some(spawn_worker(worker_dir, w, &url)?));
    }
    until("three live workers", Duration::from_secs(60), async || {
        Ok((client.status().await?.live_workers == 3).then_some(()))
    })
    .await?;

    // Hunt A covers the replicated shards; hunt B two of them and `lonely`,
    // with a short deadline. B first, so `lonely` is on the victim at once.
    let started = Instant::now();
    let deadline = Duration::from_secs(8);
    let b = client
        .submit_hunt(
            HuntRequest::new("bruteforce")
                .shard("lonely")
                .shard("r00")
                .shard("r01")
                .priority(1)
                .deadline(deadline),
        )
        .await?;
    let a = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("set", "replicated"))
        .await?;
    assert_eq!(a.task_count as usize, REPLICATED);

    // The victim compiles the module first (seconds in this build): kill it
    // while it holds tasks of both hunts, none reported.
    let victim = format!("worker-{VICTIM}");
    let lost: Vec<String> = until(
        "the victim to hold tasks of both hunts",
        Duration::from_secs(30),
        async || {
            let on_victim = |h: &v1::Hunt| -> Vec<String> {
                h.tasks
                    .iter()
                    .filter(|t| t.worker_id == victim && t.state == v1::TaskState::Assigned as i32)
                    .map(|t| t.task_id.clone())
                    .collect()
            };
            let in_a = on_victim(&client.hunt(&a.hunt_id).await?);
            let in_b = on_victim(&client.hunt(&b.hunt_id).await?);
            Ok((!in_a.is_empty() && !in_b.is_empty()).then(|| [in_a, in_b].concat()))
        },
    )
    .await?;
    drop(workers[VICTIM].take()); // SIGKILL
    eprintln!(
        "killed {victim} at {:?} holding {lost:?}",
        started.elapsed()
    );

    // B waits visibly for `lonely`, until its deadline.
    let waiting = until(
        "`lonely` to wait visibly",
        Duration::from_secs(30),
        async || {
            let h = client.hunt(&b.hunt_id).await?;
            Ok(h.tasks.into_iter().find(|t| {
                t.shard == "lonely"
                    && t.state == v1::TaskState::Pending as i32
                    && !t.error.is_empty()
            }))
        },
    )
    .await?;
    assert!(waiting.error.contains(&victim), "{}", waiting.error);
    let done_a =
        tokio::time::timeout(Duration::from_secs(90), client.wait(&a.hunt_id, |_| {})).await??;
    eprintln!("hunt A ended at {:?}", started.elapsed());
    assert_eq!(
        done_a.state,
        v1::HuntState::Completed as i32,
        "{}",
        done_a.reason
    );
    let moved: Vec<&v1::TaskStatus> = done_a
        .tasks
        .iter()
        .filter(|t| lost.contains(&t.task_id))
        .collect();
    assert!(!moved.is_empty());
    for task in &moved {
        assert_ne!(task.worker_id, victim, "{task:?}");
        assert!(task.attempt >= 2, "{task:?}");
    }
    let findings_a = client.findings(&a.hunt_id).await?;
    assert_eq!(findings_a.len(), expected, "one finding per planted attack");

    let done_b =
        tokio::time::timeout(Duration::from_secs(60), client.wait(&b.hunt_id, |_| {})).await??;
    let ended = started.elapsed();
    eprintln!(
        "hunt B ended at {ended:?} (deadline {deadline:?}): {}",
        done_b.reason
    );
    assert_eq!(
        done_b.state,
        v1::HuntState::PartiallyCompleted as i32,
        "{}",
        done_b.reason
    );
    assert!(ended >= deadline, "ended before its deadline");
    assert!(
        done_b
            .reason
            .starts_with("deadline reached; 1 of 3 shards could not be scanned: lonely: "),
        "{}",
        done_b.reason
    );
    assert_eq!(
        done_b.findings as usize,
        shard_events(0).1 + shard_events(1).1
    );

    // The same hunt, undisturbed, on the two survivors: the same findings.
    let c = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("set", "replicated"))
        .await?;
    let done_c =
        tokio::time::timeout(Duration::from_secs(90), client.wait(&c.hunt_id, |_| {})).await??;
    assert_eq!(done_c.state, v1::HuntState::Completed as i32);
    assert!(done_c.tasks.iter().all(|t| t.attempt == 1));
    let findings_c = client.findings(&c.hunt_id).await?;
    assert_eq!(keys(&findings_a), keys(&findings_c), "finding for finding");
    assert_eq!(done_a.aggregates, done_c.aggregates);
    assert_eq!(done_a.events_scanned, done_c.events_scanned);
    eprintln!(
        "{} findings over {REPLICATED} replicated shards, equal to the undisturbed run",
        findings_a.len()
    );
    drop(workers);
    coordinator.shutdown().await;
    Ok(())
}

/// A straggler: one worker is stopped (SIGSTOP) once the hunt is submitted,
/// as a worker stalls on a slow disk or a starved CPU, while its lease has
/// not run out, so its tasks run far longer than the hunt's median. Each
/// gets a backup run on the other replica (seen in the hunt's status while
/// the slow worker is still stopped); the first result wins and the hunt's
/// findings are those of an undisturbed run. The stopped worker then
/// resumes, and its late results are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_get_a_backup_on_another_replica_and_the_first_result_wins() -> anyhow::Result<()>
{
    const SHARDS: usize = 8;
    let dir = tempfile::tempdir()?;
    let speculation = Speculation {
        min_completed: 3,
        factor: 3,
        min_excess_ms: 300,
    };
    // A lease long enough that the stopped worker is never declared dead:
    // its tasks move by speculation, not by failover.
    let (coordinator, url, mut client) =
        coordinator(dir.path(), speculation, Duration::from_secs(20)).await?;
    let dirs: Vec<_> = (0..2).map(|w| dir.path().join(format!("w{w}"))).collect();
    let mut expected = 0;
    for worker_dir in &dirs {
        let store = ShardStore::open(&worker_dir.join("shards"))?;
        expected = 0;
        for k in 0..SHARDS {
            let (events, attacked) = shard_events(k);
            expected += attacked;
            store.ingest_jsonl(&format!("r{k:02}"), BTreeMap::new(), events.as_bytes())?;
        }
    }
    prewarm(&dirs).await?;
    let spawn = |w: usize| -> anyhow::Result<KillOnDrop> {
        let binary = Path::new(env!("CARGO_BIN_EXE_quarry"));
        process_group::spawn_worker(
            binary,
            &dirs[w],
            &format!("worker-{w}"),
            &url,
            SHARDS as u32,
        )
    };
    let _workers = [spawn(0)?, spawn(1)?];
    until("two live workers", Duration::from_secs(60), async || {
        Ok((client.status().await?.live_workers == 2).then_some(()))
    })
    .await?;

    let started = Instant::now();
    // SAFETY: sends SIGSTOP to a child process this test started.
    let stop = |pid: u32, signal: i32| unsafe { libc::kill(pid as i32, signal) };
    let slow = _workers[1].pid();
    anyhow::ensure!(stop(slow, libc::SIGSTOP) == 0, "cannot stop worker-1");
    let hunt = client
        .submit_hunt(
            HuntRequest::new("bruteforce")
                .shard("r00")
                .shard("r01")
                .shard("r02")
                .shard("r03")
                .shard("r04")
                .shard("r05")
                .shard("r06")
                .shard("r07"),
        )
        .await?;
    let backups = until(
        "backup runs on worker-0",
        Duration::from_secs(15),
        async || {
            let h = client.hunt(&hunt.hunt_id).await?;
            let backed: Vec<String> = h
                .tasks
                .iter()
                .filter(|t| {
                    t.backup_worker_id == "worker-0"
                        || (t.attempt == 2 && t.worker_id == "worker-0")
                })
                .map(|t| t.shard.clone())
                .collect();
            Ok((!backed.is_empty()).then_some(backed))
        },
    )
    .await;
    // Resume the slow worker whatever happened, before asserting.
    anyhow::ensure!(stop(slow, libc::SIGCONT) == 0, "cannot resume worker-1");
    let backups = backups?;
    eprintln!("backups started for {backups:?}");
    let done =
        tokio::time::timeout(Duration::from_secs(90), client.wait(&hunt.hunt_id, |_| {})).await??;
    eprintln!("hunt ended at {:?}", started.elapsed());
    assert_eq!(
        done.state,
        v1::HuntState::Completed as i32,
        "{}",
        done.reason
    );
    for task in &done.tasks {
        eprintln!(
            "{} won by {} attempt {}",
            task.shard, task.worker_id, task.attempt
        );
    }
    // The slow worker's tasks were won by their backups on the fast one.
    let won_by_backup: Vec<_> = done.tasks.iter().filter(|t| t.attempt == 2).collect();
    assert!(!won_by_backup.is_empty(), "{:?}", done.tasks);
    assert!(won_by_backup.iter().all(|t| t.worker_id == "worker-0"));
    let findings = client.findings(&hunt.hunt_id).await?;
    assert_eq!(findings.len(), expected, "each task's result counted once");
    for f in &findings {
        let attempt = done
            .tasks
            .iter()
            .find(|t| t.task_id == f.task_id)
            .map(|t| t.attempt)
            .unwrap_or(0);
        assert!(
            f.finding_id.contains(&format!("#{attempt}.")),
            "{} vs attempt {attempt}",
            f.finding_id
        );
    }
    coordinator.shutdown().await;
    Ok(())
}
