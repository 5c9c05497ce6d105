//! End-to-end tests of one local cluster: a real coordinator (raft-rs over
//! RocksDB in a temp dir) and two real workers (wasmtime, on-disk shards),
//! all talking gRPC on loopback ports, running the wasm built from
//! hunt-modules/.

use quarry_cli::cluster::{LocalCluster, LocalClusterConfig, upload_shipped_modules};
use quarry_client::{Client, HuntRequest};
use quarry_proto::v1;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Logs go to the test's captured output; `RUST_LOG=info` shows them.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The coordinator's replicated state but for the audit trail, which
/// records every call (refused ones too) a second or so later.
fn state_but_audit(cluster: &LocalCluster) -> quarry_coordinator::state::State {
    let mut state = cluster
        .coordinator()
        .expect("coordinator")
        .node()
        .read(|replica| replica.state.clone())
        .expect("read");
    state.audit = Default::default();
    state
}

async fn demo_cluster(dir: &std::path::Path) -> anyhow::Result<(LocalCluster, Client)> {
    init_logs();
    let cluster = LocalCluster::start(LocalClusterConfig::demo(dir, loopback())).await?;
    let mut client = Client::connect(&cluster.url()).await?;
    upload_shipped_modules(&mut client).await?;
    Ok((cluster, client))
}

async fn run_demo_hunt(client: &mut Client) -> anyhow::Result<(v1::Hunt, Vec<v1::Finding>)> {
    let submitted = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("env", "demo"))
        .await?;
    let hunt = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        client.wait(&submitted.hunt_id, |_| {}),
    )
    .await??;
    let findings = client.findings(&hunt.hunt_id).await?;
    Ok((hunt, findings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_over_two_workers_finds_every_planted_attack() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, mut client) = demo_cluster(dir.path()).await?;

    // A dry run previews the scope and stores nothing.
    let before = state_but_audit(&cluster);
    let preview = HuntRequest::new("bruteforce")
        .selector("env", "demo")
        .dry_run(true);
    let preview = client.submit_hunt(preview).await?;
    assert!(preview.hunt_id.is_empty());
    assert_eq!((preview.task_count, preview.shards.len()), (4, 4));
    assert_eq!(
        preview.events_in_scope,
        preview.shards.iter().map(|s| s.event_count).sum::<u64>()
    );
    assert_eq!(
        preview.estimated_ms, 0,
        "no completed run to estimate from yet"
    );
    assert!(
        state_but_audit(&cluster) == before,
        "a dry run was committed"
    );

    let (hunt, findings) = run_demo_hunt(&mut client).await?;
    assert_eq!(
        hunt.events_scanned, preview.events_in_scope,
        "every event in scope was scanned"
    );
    let again = HuntRequest::new("bruteforce")
        .selector("env", "demo")
        .dry_run(true);
    assert!(
        client.submit_hunt(again).await?.estimated_ms > 0,
        "the completed run gives an estimate"
    );

    assert_eq!(
        hunt.state,
        v1::HuntState::Completed as i32,
        "hunt did not complete: {}",
        hunt.reason
    );
    assert_eq!(hunt.tasks.len(), 4, "one task per demo shard");
    let workers: BTreeSet<_> = hunt.tasks.iter().map(|t| t.worker_id.clone()).collect();
    let succeeded = hunt
        .tasks
        .iter()
        .filter(|t| t.state == v1::TaskState::Succeeded as i32)
        .count();
    assert_eq!(succeeded, 4, "{:?}", hunt.tasks);
    assert_eq!(
        workers.len(),
        2,
        "tasks should run on both workers: {workers:?}"
    );
    assert!(
        hunt.events_scanned > 1000,
        "scanned only {} events",
        hunt.events_scanned
    );

    let missed = quarry_cli::demo::missed_attacks(&findings);
    assert!(
        missed.is_empty(),
        "missed planted attacks: {missed:?}; findings: {findings:#?}"
    );
    // Benign noise (isolated typos) must not be reported.
    for finding in &findings {
        let planted = quarry_worker::demo::PLANTED.iter().any(|a| {
            finding
                .entity
                .to_ascii_lowercase()
                .contains(&a.account.to_ascii_lowercase())
        });
        assert!(planted, "finding about an unplanted entity: {finding:?}");
    }
    let high: Vec<_> = findings
        .iter()
        .filter(|f| f.severity == v1::Severity::High as i32)
        .collect();
    let successes = quarry_worker::demo::PLANTED
        .iter()
        .filter(|a| a.succeeded)
        .count();
    assert_eq!(
        high.len(),
        successes,
        "one high finding per successful brute force: {high:#?}"
    );
    assert!(
        high.iter()
            .all(|f| f.techniques.iter().any(|t| t.starts_with("T1110")))
    );
    assert!(
        hunt.aggregates
            .iter()
            .any(|a| a.name == "failures_by_account" && a.value.is_none() && !a.counts.is_empty()),
        "merged aggregates missing: {:?}",
        hunt.aggregates
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_keeps_hunts_and_results() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut cluster, mut client) = demo_cluster(dir.path()).await?;
    let (hunt, findings) = run_demo_hunt(&mut client).await?;
    assert!(!findings.is_empty());
    let modules = client.list_modules().await?;

    cluster.restart_coordinator().await?;
    let mut client = Client::connect(&cluster.url()).await?;
    let after = client.hunt(&hunt.hunt_id).await?;
    assert_eq!(after, hunt, "the hunt changed across a restart");
    assert_eq!(
        client.findings(&hunt.hunt_id).await?,
        findings,
        "findings changed across a restart"
    );
    assert_eq!(client.list_modules().await?, modules);

    // The restarted coordinator still schedules: a second hunt completes
    // with the same findings (new ids), and the first is untouched.
    let (second, second_findings) = run_demo_hunt(&mut client).await?;
    assert_ne!(second.hunt_id, hunt.hunt_id);
    assert_eq!(
        second.state,
        v1::HuntState::Completed as i32,
        "{}",
        second.reason
    );
    assert_eq!(second_findings.len(), findings.len());
    assert_eq!(client.hunt(&hunt.hunt_id).await?, hunt);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors_and_change_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, mut client) = demo_cluster(dir.path()).await?;
    let before_state = state_but_audit(&cluster);
    let before_modules = client.list_modules().await?;

    // A module that was never uploaded.
    let err = client
        .submit_hunt(HuntRequest::new("no-such-module@1.0.0").selector("env", "demo"))
        .await
        .expect_err("unknown module must be refused");
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");
    assert!(err.to_string().contains("no-such-module@1.0.0"), "{err}");
    assert!(
        err.to_string().contains("bruteforce@"),
        "error should list known modules: {err}"
    );

    // Bytes that are not a wasm component.
    let err = client
        .upload_module(
            "broken",
            "0.1.0",
            "",
            b"\0asm\x0d\0\x01\0garbage after the header",
        )
        .await
        .expect_err("malformed wasm must be refused");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("not a valid hunt module"), "{err}");
    let err = client
        .upload_module("text", "0.1.0", "", b"just some text")
        .await
        .expect_err("text");
    assert!(err.to_string().contains("magic"), "{err}");

    // An empty scope, and a selector that matches nothing.
    let err = client
        .submit_hunt(HuntRequest::new("bruteforce"))
        .await
        .expect_err("empty scope");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("scope is empty"), "{err}");
    let err = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("env", "prod"))
        .await
        .expect_err("unmatched selector");
    assert!(err.to_string().contains("env=prod"), "{err}");
    let err = client
        .submit_hunt(HuntRequest::new("bruteforce").shard("no-such-shard"))
        .await
        .expect_err("unknown shard");
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");

    // Nothing reached the state but the audit trail's records of the calls.
    assert!(
        state_but_audit(&cluster) == before_state,
        "a refused request was committed"
    );
    assert_eq!(client.list_modules().await?, before_modules);
    assert!(client.list_hunts(0).await?.is_empty());
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answers_health_checks_and_reflection() -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = tempfile::tempdir()?;
    let (cluster, _client) = demo_cluster(dir.path()).await?;
    let mut servers = vec![cluster.url()];
    servers.extend(
        cluster
            .workers()
            .iter()
            .map(|w| format!("http://{}", w.addr())),
    );
    for url in &servers {
        let channel = tonic::transport::Channel::from_shared(url.clone())?
            .connect()
            .await?;
        let mut health = HealthClient::new(channel.clone());
        let overall = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(overall.status, ServingStatus::Serving as i32, "{url}");

        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        let response = responses.message().await?.expect("one reflection response");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response from {url}");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{url}: {names:?}"
        );
    }
    // The coordinator names its own API too.
    let channel = tonic::transport::Channel::from_shared(cluster.url())?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    let hunts = health
        .check(HealthCheckRequest {
            service: "quarry.v1.HuntService".into(),
        })
        .await?
        .into_inner();
    assert_eq!(hunts.status, ServingStatus::Serving as i32);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_ingest_stores_events_reports_malformed_and_registers_the_shard() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (cluster, mut client) = demo_cluster(dir.path()).await?;
    let worker = format!("http://{}", cluster.workers()[0].addr());
    let auth_log = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests"),
    )
    .join("../worker/tests/data/auth.log");
    let labels: std::collections::HashMap<String, String> =
        [("env".to_owned(), "lab".to_owned())].into_iter().collect();

    let response =
        quarry_client::ingest_file(&worker, "gw-auth", labels.clone(), None, &auth_log).await?;
    assert_eq!(response.format, "syslog", "format detected from content");
    assert!(response.events_stored > 10, "{response:?}");
    assert_eq!(response.malformed, 0, "{:?}", response.malformed_records);

    // A JSON-lines file with a bad line in the middle: the rest is stored and
    // the bad line is reported with its position.
    let bad = dir.path().join("mixed.jsonl");
    let first = "{\"EventID\":4625,\"TargetUserName\":\"x\"}\n";
    std::fs::write(
        &bad,
        format!("{first}not json at all\n{{\"EventID\":4624}}\n"),
    )?;
    let response =
        quarry_client::ingest_file(&worker, "gw-json", labels.clone(), Some("jsonl"), &bad).await?;
    assert_eq!((response.events_stored, response.malformed), (2, 1));
    let record = &response.malformed_records[0];
    assert_eq!(
        (record.line, record.byte_offset),
        (2, first.len() as u64),
        "{record:?}"
    );
    assert!(record.source.ends_with("mixed.jsonl"), "{record:?}");

    // Bad requests name their cause and store nothing.
    let err = quarry_client::ingest_file(&worker, "gw-json", labels.clone(), Some("pcap"), &bad)
        .await
        .expect_err("format");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    assert!(
        err.to_string().contains("zeek-tsv"),
        "error should list the formats: {err}"
    );
    let err = quarry_client::ingest_file(&worker, "Bad Name", labels, None, &bad)
        .await
        .expect_err("name");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");

    // The worker registers again; the coordinator learns the new shards.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let shards = client
            .shards([("env".to_owned(), "lab".to_owned())].into_iter().collect())
            .await?;
        let names: BTreeSet<_> = shards.iter().map(|s| s.name.as_str()).collect();
        if names == BTreeSet::from(["gw-auth", "gw-json"]) {
            assert!(
                shards.iter().all(|s| s.worker_ids == ["worker-0"]),
                "{shards:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "coordinator never saw the new shards: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_recorded_command_log_rebuilds_the_identical_state() -> anyhow::Result<()> {
    use quarry_coordinator::state::State;
    use quarry_coordinator::storage::Store;

    let dir = tempfile::tempdir()?;
    let (cluster, mut client) = demo_cluster(dir.path()).await?;
    let (hunt, findings) = run_demo_hunt(&mut client).await?;
    assert!(!findings.is_empty());
    cluster.shutdown().await;

    // The command log a real coordinator recorded while it ran the cluster
    // (module uploads, registrations, the hunt, assignments, results),
    // replayed through the pure state machine from an empty state.
    let store = Store::open(&dir.path().join("coordinator"))?;
    assert_eq!(
        store.snapshot_metadata()?.index,
        1,
        "nothing was compacted, so the log holds every command"
    );
    let replica = store.load_replica()?;
    let commands = store.logged_commands()?;
    assert!(commands.len() >= 8, "{} commands", commands.len());
    let mut replayed = State::default();
    for (index, command) in commands {
        replayed.apply(index, command);
    }
    assert!(replayed.hunts.keys().any(|id| id.as_str() == hunt.hunt_id));
    assert!(
        replayed == replica.state,
        "replaying the log gave a different state from the one the coordinator stored"
    );
    Ok(())
}

/// Events of one shard for the `aggregates` test module: every host runs
/// `common.exe` twice and has one marker-only event; `extra` lists further
/// `(host, value)` events; noise events are filtered out by the prefilter.
fn aggregate_events(hosts: &[&str], extra: &[(&str, &str)], base_minute: u32) -> String {
    let mut lines = Vec::new();
    let mut minute = base_minute;
    let mut line = |host: &str, body: &str| {
        minute += 1;
        lines.push(format!(
            r#"{{"@timestamp":"2024-03-01T{:02}:{:02}:00.000Z","host":"{host}",{body}}}"#,
            minute / 60,
            minute % 60
        ));
    };
    for host in hosts {
        line(host, r#""value":"common.exe""#);
        line(host, r#""value":"common.exe""#);
        line(host, r#""marker":"keep""#);
        line(host, r#""other":"noise""#);
    }
    for (host, value) in extra {
        line(host, &format!(r#""value":"{value}""#));
    }
    lines.join("\n") + "\n"
}

/// The coordinator merges every aggregate kind across shards on different
/// workers without running guest code: a value rare in each shard but seen
/// on two hosts overall is not in the stack's tail, a value on one host is;
/// distinct counts, top-k and first/last seen span all shards; intel sets
/// passed as parameters reach the module through the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_of_every_kind_merge_across_shards() -> anyhow::Result<()> {
    use quarry_contract::aggregate::AggregateValue;
    use std::collections::HashMap;

    let dir = tempfile::tempdir()?;
    let (cluster, mut client) = demo_cluster(dir.path()).await?;
    let shards: [(&str, usize, String); 3] = [
        (
            "agg-a",
            0,
            aggregate_events(&["a1", "a2"], &[("a1", "pair.exe")], 0),
        ),
        (
            "agg-b",
            1,
            aggregate_events(&["b1", "b2"], &[("b1", "pair.exe")], 60),
        ),
        (
            "agg-c",
            0,
            aggregate_events(&["c1"], &[("c1", "lonely.exe"), ("c1", "lonely.exe")], 120),
        ),
    ];
    for (shard, worker, events) in &shards {
        let path = dir.path().join(format!("{shard}.jsonl"));
        std::fs::write(&path, events)?;
        let url = format!("http://{}", cluster.workers()[*worker].addr());
        let labels = HashMap::from([("set".to_owned(), "aggregates".to_owned())]);
        quarry_client::ingest_file(&url, shard, labels, Some("jsonl"), &path).await?;
    }
    let selector = HashMap::from([("set".to_owned(), "aggregates".to_owned())]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.shards(selector.clone()).await?.len() < 3 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the ingested shards were never registered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let module = quarry_hunt_modules::test_modules::AGGREGATES;
    client
        .upload_module(module.name, "0.1.0", "", module.wasm)
        .await?;

    let submitted = client
        .submit_hunt(
            HuntRequest::new(module.name)
                .selector("set", "aggregates")
                .param("max_hosts", "1")
                .param("intel.watch", "lonely.exe\nnot-seen.exe\n"),
        )
        .await?;
    let hunt = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        client.wait(&submitted.hunt_id, |_| {}),
    )
    .await??;
    assert_eq!(
        hunt.state,
        v1::HuntState::Completed as i32,
        "{}",
        hunt.reason
    );
    assert!(
        hunt.aggregate_errors.is_empty(),
        "{:?}",
        hunt.aggregate_errors
    );

    // The summaries a hunter reads, decoded by the same rules the
    // coordinator merged with.
    let merged: BTreeMap<String, AggregateValue> = hunt
        .aggregates
        .iter()
        .cloned()
        .map(|a| quarry_proto::aggregate::from_proto(a).map(|a| (a.name, a.value)))
        .collect::<Result<_, String>>()
        .map_err(anyhow::Error::msg)?;
    let AggregateValue::Counts(counts) = &merged["by_value"] else {
        panic!("counts")
    };
    assert_eq!(
        counts
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect::<Vec<_>>(),
        [
            ("-", 5),
            ("common.exe", 10),
            ("lonely.exe", 2),
            ("pair.exe", 2)
        ],
        "the any-of prefilter dropped the noise and nothing else"
    );
    let AggregateValue::Distinct(hosts) = &merged["hosts_by_value"] else {
        panic!("distinct")
    };
    let distinct: Vec<(&str, u64)> = hosts.iter().map(|(k, v)| (k.as_str(), v.count())).collect();
    assert_eq!(
        distinct,
        [
            ("-", 5),
            ("common.exe", 5),
            ("lonely.exe", 1),
            ("pair.exe", 2)
        ]
    );
    let AggregateValue::TopK(top) = &merged["top_values"] else {
        panic!("top-k")
    };
    let top: Vec<(&str, u64)> = top.top().into_iter().map(|(k, e)| (k, e.count)).collect();
    assert_eq!(top, [("common.exe", 10), ("-", 5)]);
    let AggregateValue::Range(seen) = &merged["seen"] else {
        panic!("range")
    };
    let common = seen["common.exe"];
    assert_eq!(common.count, 10);
    assert!(
        common.max - common.min >= 120 * 60_000,
        "first and last seen span the shards: {common:?}"
    );
    // `pair.exe` is on one host per shard, two overall: over the threshold.
    let stack = hunt
        .aggregates
        .iter()
        .find(|a| a.name == "stack")
        .expect("stack summary");
    assert_eq!(
        quarry_proto::aggregate::rare_values(stack),
        Some(vec![("lonely.exe", vec!["c1"])])
    );
    let Some(v1::aggregate::Value::Stack(summary)) = &stack.value else {
        panic!("stack")
    };
    assert_eq!(summary.common_values, 3);
    let AggregateValue::Counts(sets) = &merged["intel_sets"] else {
        panic!("counts")
    };
    assert_eq!(
        sets.get("watch"),
        Some(&6),
        "two indicators, seen by each of 3 tasks"
    );

    let findings = client.findings(&hunt.hunt_id).await?;
    let hits: Vec<&str> = findings.iter().map(|f| f.entity.as_str()).collect();
    assert_eq!(hits, ["value:lonely.exe", "value:lonely.exe"]);
    assert!(
        findings.iter().all(|f| f.tags == ["intel:watch"]),
        "tags travel from the module to the hunt's findings: {findings:?}"
    );
    cluster.shutdown().await;
    Ok(())
}

/// The demo's second hunt: `rare-process` over the four demo shards (two
/// workers) lists exactly the tools the planted intruders ran, each on one
/// host, and nothing the benign fleet runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacking_the_demo_fleet_lists_only_the_intruders_tools() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, mut client) = demo_cluster(dir.path()).await?;
    let submitted = client
        .submit_hunt(
            HuntRequest::new(quarry_cli::demo::STACK_MODULE)
                .selector("env", "demo")
                .param("max_hosts", "1"),
        )
        .await?;
    let hunt = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        client.wait(&submitted.hunt_id, |_| {}),
    )
    .await??;
    assert_eq!(
        hunt.state,
        v1::HuntState::Completed as i32,
        "{}",
        hunt.reason
    );
    assert!(
        quarry_cli::demo::missed_tools(&hunt).is_empty(),
        "{:?}",
        hunt.aggregates
    );
    let rare: Vec<(String, Vec<String>)> = hunt
        .aggregates
        .iter()
        .filter_map(quarry_proto::aggregate::rare_values)
        .flatten()
        .map(|(value, hosts)| {
            (
                value.to_owned(),
                hosts.into_iter().map(str::to_owned).collect(),
            )
        })
        .collect();
    assert_eq!(
        rare.len(),
        quarry_cli::demo::INTRUDER_TOOLS.len(),
        "only the intruders' tools are rare: {rare:?}"
    );
    assert!(rare.iter().all(|(_, hosts)| hosts.len() == 1), "{rare:?}");
    cluster.shutdown().await;
    Ok(())
}
