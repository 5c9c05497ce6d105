//! Triage as a hunter uses it, through the `quarry` binary, on a local
//! cluster (real coordinator, two real workers running the shipped wasm
//! modules over the demo shards): a triage config with a follow-up rule is
//! applied from YAML (dry run first), a brute-force hunt raises alerts, each
//! alert's follow-up pivot hunt starts by itself, `quarry pivot
//! --from-alert` prints its timeline as CSV with the alert's own findings
//! marked, and a verdict closes the alert.

use quarry_cli::cluster::{LocalCluster, LocalClusterConfig, upload_shipped_modules};
use quarry_client::{Client, HuntRequest};
use quarry_proto::v1;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = "\
version: 1
follow_ups:
  - id: pivot-on-bruteforce
    when:
      rules: [\"bruteforce/*\"]
    pivot: primary
    around: 1h
";

/// Runs `quarry ARGS --coordinator URL`; returns stdout, failing with
/// stderr when the command fails. Writes act `--as alice`.
fn quarry(url: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(args)
        .args(["--coordinator", url])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "quarry {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn json_lines(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_start_their_pivot_and_the_cli_prints_the_marked_timeline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(LocalClusterConfig::demo(
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await?;
    let url = cluster.url();
    let mut client = Client::connect(&url).await?;
    upload_shipped_modules(&mut client).await?;

    let file = dir.path().join("triage.yaml");
    std::fs::write(&file, CONFIG)?;
    let file = file.to_string_lossy().into_owned();
    let dry = quarry(
        &url,
        &["triage", "apply", &file, "--dry-run", "--as", "alice"],
    )?;
    assert!(dry.contains("dry run against version 0"), "{dry}");
    assert_eq!(
        client.triage_config().await?.version,
        0,
        "a dry run changes nothing"
    );
    quarry(
        &url,
        &[
            "triage",
            "apply",
            &file,
            "--message",
            "pivot on brute force",
            "--as",
            "alice",
        ],
    )?;
    let config = client.triage_config().await?;
    assert_eq!(config.version, 1);
    assert_eq!(config.history[0].author, "alice");

    let hunt = client
        .submit_hunt(HuntRequest::new("bruteforce").selector("env", "demo"))
        .await?;
    let hunt = tokio::time::timeout(Duration::from_secs(120), client.wait(&hunt.hunt_id, |_| {}))
        .await??;
    assert_eq!(
        hunt.state,
        v1::HuntState::Completed as i32,
        "{}",
        hunt.reason
    );

    let alerts = json_lines(&quarry(
        &url,
        &["triage", "list", "--kind", "alerts", "--output", "json"],
    )?)?;
    assert!(!alerts.is_empty(), "the hunt raised no alert");
    let id = alerts[0]["id"].as_str().unwrap_or_default().to_owned();
    assert!(
        alerts[0]["rule"]
            .as_str()
            .unwrap_or_default()
            .starts_with("bruteforce/")
    );

    // The follow-up hunt was started by triage itself; wait for it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let follow_up = loop {
        let case = client.case(&id).await?;
        if let Some(f) = case.follow_ups.first() {
            let hunt = client.hunt_tasks(&f.hunt_id, 0, &[]).await?;
            if hunt.state == v1::HuntState::Completed as i32 {
                break hunt;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no completed follow-up for {id}: {case:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        follow_up.findings > 0,
        "the pivot found no event of the alert's entity"
    );
    let shown = quarry(&url, &["triage", "show", &id])?;
    assert!(shown.contains(&follow_up.hunt_id), "{shown}");

    // The timeline: reuses the follow-up, time-ordered, alert findings marked.
    let csv = quarry(
        &url,
        &["pivot", "--from-alert", &id, "--around", "1h", "--csv"],
    )?;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("time,host,shard,entity,event,fields,alert_finding")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len() as u64, follow_up.findings, "{csv}");
    let times: Vec<&str> = rows
        .iter()
        .map(|r| r.split(',').next().unwrap_or_default())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {times:?}"
    );
    assert!(
        rows.iter().any(|r| r.ends_with(",true")),
        "no row marked as the alert's own finding: {csv}"
    );
    assert!(rows.iter().any(|r| r.ends_with(",false")), "{csv}");

    // A verdict closes it; the open queue no longer shows it.
    let closed = json_lines(&quarry(
        &url,
        &[
            "triage",
            "verdict",
            &id,
            "true-positive",
            "--comment",
            "confirmed",
            "--output",
            "json",
            "--as",
            "alice",
        ],
    )?)?;
    assert_eq!(closed[0]["verdict"]["kind"], "true-positive");
    assert_eq!(closed[0]["verdict"]["who"], "alice");
    let summary = json_lines(&quarry(&url, &["triage", "summary", "--output", "json"])?)?;
    assert_eq!(summary[0]["findings"].as_u64(), Some(hunt.findings));

    cluster.shutdown().await;
    Ok(())
}
