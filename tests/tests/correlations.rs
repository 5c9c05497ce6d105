//! Sigma correlation rules across shards and workers, end to end: a real
//! local cluster (raft-rs coordinator over RocksDB, two wasmtime workers,
//! gRPC on loopback) runs the shipped `sigma` module with base rules and
//! correlations of every type. The events of each group are split over
//! three shards on two workers, so no task alone sees a correlation met;
//! the findings come out of the coordinator's merge and must be exactly
//! those of the same hunt over one shard holding all the events.

use quarry_cli::cluster::{LocalCluster, LocalClusterConfig, upload_shipped_modules};
use quarry_client::{Client, HuntRequest};
use quarry_proto::v1;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Failed logons (Security 4625), a service install (System 7045) and a
/// log clear (Security 1102), correlated four ways. Base rules and the
/// correlations that use them share a multi-document file, as SigmaHQ
/// ships them.
const RULES: &[(&str, &str)] = &[
    (
        "rule.logons.yml",
        r#"title: Failed logon
name: failed_logon
id: 9b1c3a11-0000-4000-8000-000000000001
level: low
logsource: {product: windows, service: security}
detection:
    selection: {EventID: 4625}
    condition: selection
---
title: Many failed logons for one account
id: 9b1c3a11-0000-4000-8000-0000000000c1
level: high
tags: [attack.credential-access, attack.t1110.001]
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [TargetUserName]
    timespan: 5m
    condition: {gte: 6}
---
title: One source failing on many accounts
id: 9b1c3a11-0000-4000-8000-0000000000c2
level: high
tags: [attack.credential-access, attack.t1110.003]
correlation:
    type: value_count
    rules: [failed_logon]
    group-by: [IpAddress]
    timespan: 1m
    condition: {gte: 4, field: TargetUserName}
"#,
    ),
    (
        "rule.tamper.yml",
        r#"title: Service installed
name: service_installed
id: 9b1c3a11-0000-4000-8000-000000000002
level: low
logsource: {product: windows, service: system}
detection:
    selection: {EventID: 7045}
    condition: selection
---
title: Security log cleared
name: log_cleared
id: 9b1c3a11-0000-4000-8000-000000000003
level: medium
logsource: {product: windows, service: security}
detection:
    selection: {EventID: 1102}
    condition: selection
---
title: Service installed, then the security log cleared
id: 9b1c3a11-0000-4000-8000-0000000000c3
level: critical
correlation:
    type: temporal_ordered
    rules: [service_installed, log_cleared]
    group-by: [Computer]
    timespan: 10m
---
title: Service install and log clear close together
id: 9b1c3a11-0000-4000-8000-0000000000c4
level: high
correlation:
    type: temporal
    rules: [service_installed, log_cleared]
    group-by: [Computer]
    timespan: 10m
"#,
    ),
];

fn event(minute: u32, second: u32, body: &str) -> String {
    format!(r#"{{"@timestamp":"2024-05-02T10:{minute:02}:{second:02}.000Z",{body}}}"#)
}

fn failed(minute: u32, second: u32, user: &str, ip: &str, dc: &str) -> String {
    event(
        minute,
        second,
        &format!(
            r#""Channel":"Security","EventID":4625,"Computer":"{dc}","TargetUserName":"{user}","IpAddress":"{ip}","LogonType":3"#
        ),
    )
}

/// Three shards' events: `(shard, worker, lines)`.
fn shards() -> Vec<(&'static str, usize, Vec<String>)> {
    vec![
        (
            "corr-dc1",
            0,
            vec![
                // alice: 3 of her 6 failures within 5 minutes.
                failed(0, 0, "alice", "10.0.0.5", "dc1"),
                failed(0, 40, "alice", "10.0.0.5", "dc1"),
                failed(1, 20, "alice", "10.0.0.5", "dc1"),
                // bob: 5 failures, all here: under the threshold everywhere.
                failed(2, 0, "bob", "10.0.0.6", "dc1"),
                failed(2, 10, "bob", "10.0.0.6", "dc1"),
                failed(2, 20, "bob", "10.0.0.6", "dc1"),
                failed(2, 30, "bob", "10.0.0.6", "dc1"),
                failed(2, 40, "bob", "10.0.0.6", "dc1"),
                // The spray: 10.0.0.66 on two accounts here...
                failed(5, 0, "carol", "10.0.0.66", "dc1"),
                failed(5, 5, "dave", "10.0.0.66", "dc1"),
                // ...and a slow prober: 4 accounts, one every 2 minutes.
                failed(6, 0, "erin", "10.0.0.77", "dc1"),
                failed(8, 0, "frank", "10.0.0.77", "dc1"),
                // WS01's service install.
                event(
                    20,
                    0,
                    r#""Channel":"System","EventID":7045,"Computer":"WS01","ServiceName":"evil","ImagePath":"C:\\x.exe""#,
                ),
            ],
        ),
        (
            "corr-dc2",
            1,
            vec![
                failed(2, 0, "alice", "10.0.0.5", "dc2"),
                failed(3, 0, "alice", "10.0.0.5", "dc2"),
                failed(3, 30, "alice", "10.0.0.5", "dc2"),
                // ...and on two more accounts here, within the minute.
                failed(5, 10, "grace", "10.0.0.66", "dc2"),
                failed(5, 20, "heidi", "10.0.0.66", "dc2"),
                failed(10, 0, "ivan", "10.0.0.77", "dc2"),
                failed(12, 0, "judy", "10.0.0.77", "dc2"),
                // WS02 clears its log first, installs later: not in order.
                event(
                    30,
                    0,
                    r#""Channel":"Security","EventID":1102,"Computer":"WS02""#,
                ),
            ],
        ),
        (
            "corr-ws",
            0,
            vec![
                // WS01 clears its log 5 minutes after the install (other shard).
                event(
                    25,
                    0,
                    r#""Channel":"Security","EventID":1102,"Computer":"WS01""#,
                ),
                event(
                    35,
                    0,
                    r#""Channel":"System","EventID":7045,"Computer":"WS02","ServiceName":"updater","ImagePath":"C:\\u.exe""#,
                ),
            ],
        ),
    ]
}

async fn ingest(
    cluster: &LocalCluster,
    dir: &std::path::Path,
    shard: &str,
    worker: usize,
    set: &str,
    lines: &[String],
) -> anyhow::Result<()> {
    let path = dir.join(format!("{shard}.jsonl"));
    std::fs::write(&path, lines.join("\n") + "\n")?;
    let url = format!("http://{}", cluster.workers()[worker].addr());
    let labels = HashMap::from([("set".to_owned(), set.to_owned())]);
    quarry_client::ingest_file(&url, shard, labels, Some("jsonl"), &path).await?;
    Ok(())
}

async fn wait_for_shards(client: &mut Client, set: &str, n: usize) -> anyhow::Result<()> {
    let selector = HashMap::from([("set".to_owned(), set.to_owned())]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.shards(selector.clone()).await?.len() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "shards of {set} never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Runs the rules over the shards labelled `set`; the hunt and the
/// correlation findings as `(rule, entity, events in window)`.
async fn hunt(
    client: &mut Client,
    set: &str,
) -> anyhow::Result<(v1::Hunt, BTreeSet<(String, String, String)>, usize)> {
    let mut request = HuntRequest::new("sigma").selector("set", set);
    for (name, text) in RULES {
        request = request.param(name, text);
    }
    let submitted = client.submit_hunt(request).await?;
    let hunt = tokio::time::timeout(
        Duration::from_secs(120),
        client.wait(&submitted.hunt_id, |_| {}),
    )
    .await??;
    anyhow::ensure!(
        hunt.state == v1::HuntState::Completed as i32,
        "hunt over {set} did not complete: {}",
        hunt.reason
    );
    anyhow::ensure!(
        hunt.aggregate_errors.is_empty(),
        "{:?}",
        hunt.aggregate_errors
    );
    let findings = client.findings(&hunt.hunt_id).await?;
    let base = findings.iter().filter(|f| f.shard != "*").count();
    let correlated = findings
        .iter()
        .filter(|f| f.shard == "*")
        .map(|f| {
            let events = f
                .evidence
                .iter()
                .find(|e| e.key == "correlation.events")
                .map(|e| e.value.clone())
                .unwrap_or_default();
            (f.rule.clone(), f.entity.clone(), events)
        })
        .collect();
    Ok((hunt, correlated, base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlations_over_two_workers_equal_one_shard_holding_every_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(LocalClusterConfig::demo(
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await?;
    let mut client = Client::connect(&cluster.url()).await?;
    upload_shipped_modules(&mut client).await?;

    let mut all = Vec::new();
    for (shard, worker, lines) in shards() {
        ingest(&cluster, dir.path(), shard, worker, "split", &lines).await?;
        all.extend(lines);
    }
    ingest(&cluster, dir.path(), "corr-all", 1, "one", &all).await?;
    wait_for_shards(&mut client, "split", 3).await?;
    wait_for_shards(&mut client, "one", 1).await?;

    let (split_hunt, split, split_base) = hunt(&mut client, "split").await?;
    let workers: BTreeSet<_> = split_hunt
        .tasks
        .iter()
        .map(|t| t.worker_id.clone())
        .collect();
    assert_eq!(workers.len(), 2, "the split hunt ran on both workers");
    let (_, one, one_base) = hunt(&mut client, "one").await?;

    let id = |n: u8| format!("sigma/9b1c3a11-0000-4000-8000-0000000000c{n}");
    let expected: BTreeSet<(String, String, String)> = [
        // alice: 3 + 3 failures on two domain controllers within 5 minutes.
        (id(1), "targetusername:alice".to_owned(), "6".to_owned()),
        // 10.0.0.66: 4 accounts within a minute over two shards.
        (id(2), "ipaddress:10.0.0.66".to_owned(), "4".to_owned()),
        // WS01: install on one shard, clear on another, in order.
        (id(3), "computer:WS01".to_owned(), "2".to_owned()),
        // Unordered: WS01, and WS02 (clear, then install 5 minutes later).
        (id(4), "computer:WS01".to_owned(), "2".to_owned()),
        (id(4), "computer:WS02".to_owned(), "2".to_owned()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        split, expected,
        "correlations over three shards on two workers"
    );
    assert_eq!(one, split, "the same as over one shard holding every event");
    // Bob (5 failures), the slow prober (4 accounts in 6 minutes) and
    // WS02's out-of-order pair are not reported; the base rules report
    // nothing of their own (no `generate: true`).
    assert_eq!((split_base, one_base), (0, 0));

    cluster.shutdown().await;
    Ok(())
}
