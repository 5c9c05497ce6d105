//! Every node serves its metrics and a real Prometheus scrapes them: a
//! three-coordinator group and a worker run as separate `quarry` processes
//! with `--metrics-listen`, a hunt runs and an ingest lands, then Debian's
//! `prometheus` scrapes all four endpoints. The test asks Prometheus (its
//! HTTP query API) for what a platform team's dashboard reads: one leader,
//! the hunt's tasks and scanned events; `promtool check metrics` lints each
//! node's exposition; every metric docs/observability.md lists is scraped;
//! every query of deploy/grafana/quarry.json parses and names only
//! scraped metrics.
//!
//! `scripts/dev test` installs Debian's `prometheus` package. Without it
//! the test is skipped with a message, except under `CI=true`.

mod common;

use common::{Process, demo_worker_dir, until, upload_bruteforce};
use quarry_client::Client;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
}

/// `prometheus` and `promtool` from PATH, or `None` (skip) outside CI.
fn prometheus_tools() -> Option<(PathBuf, PathBuf)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let find = |tool: &str| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    };
    match (find("prometheus"), find("promtool")) {
        (Some(server), Some(tool)) => Some((server, tool)),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "prometheus or promtool is missing; `scripts/dev test` installs Debian's prometheus package and CI must have it"
            );
            eprintln!(
                "SKIPPED: prometheus/promtool not installed (`scripts/dev test` installs Debian's prometheus package)"
            );
            None
        }
    }
}

fn quarry(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quarry"));
    command
        .args(args)
        .env("QUARRY_LOG", "warn")
        // Metrics over OTLP are not what this test is about.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header end in {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
    // Prometheus answers with chunked bodies: join the chunks.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("truncated chunked body"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(
            rest.get(..size)
                .ok_or_else(|| anyhow::anyhow!("short chunk"))?,
        );
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant PromQL query; the result vector, or the error Prometheus
/// gave.
async fn query(prometheus: &str, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let (status, body) = get(
        prometheus,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    )
    .await?;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    anyhow::ensure!(
        status == 200 && json["status"] == "success",
        "query {promql:?} failed ({status}): {body}"
    );
    Ok(json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The single value of a one-series result.
async fn scalar(prometheus: &str, promql: &str) -> Option<f64> {
    let result = query(prometheus, promql).await.ok()?;
    let [series] = result.as_slice() else {
        return None;
    };
    series["value"][1].as_str()?.parse().ok()
}

/// The metric names docs/observability.md lists in its metrics tables
/// (rows starting with a backquoted `quarry_` name).
fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/observability.md"))
        .expect("docs/observability.md");
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("quarry_"))
        .map(str::to_owned)
        .collect()
}

/// Metric names a PromQL expression mentions (`quarry_…`), with histogram
/// series suffixes taken back to the metric.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("quarry_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` in a Grafana dashboard, with its template variables given
/// values Prometheus accepts.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(dashboard, &mut exprs);
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("${__rate_interval}", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "5m")
                .replace("$job", ".*")
                .replace("${job}", ".*")
                .replace("$instance", ".*")
                .replace("${instance}", ".*")
                .replace("$module", ".*")
                .replace("${module}", ".*")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_and_promtool_accepts_the_exposition() -> anyhow::Result<()> {
    let Some((prometheus_bin, promtool)) = prometheus_tools() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let ports = quarry_cli::process_group::free_ports(9)?;
    let grpc: Vec<String> = ports[0..3]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let metrics: Vec<String> = ports[3..7]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let worker_grpc = format!("127.0.0.1:{}", ports[7]);
    let prometheus_addr = format!("127.0.0.1:{}", ports[8]);
    let urls: Vec<String> = grpc.iter().map(|a| format!("http://{a}")).collect();

    // A three-node group, each node with its metrics endpoint.
    let mut processes = Vec::new();
    for (i, listen) in grpc.iter().enumerate() {
        let id = i + 1;
        let mut command = quarry(&[
            "coordinator",
            "--node-id",
            &id.to_string(),
            "--listen",
            listen,
            "--metrics-listen",
            &metrics[i],
        ]);
        command
            .arg("--data-dir")
            .arg(dir.path().join(format!("c{id}")));
        for (j, url) in urls.iter().enumerate() {
            if j != i {
                command.arg("--peer").arg(format!("{}={url}", j + 1));
            }
        }
        processes.push(Process(command.spawn()?));
    }
    let (leader_url, mut client) = until("a leader", Duration::from_secs(60), async || {
        for url in &urls {
            let Ok(mut client) = Client::connect(url).await else {
                continue;
            };
            if client.status().await.ok()?.is_leader {
                return Some((url.clone(), client));
            }
        }
        None
    })
    .await?;
    upload_bruteforce(&mut client).await?;

    // A worker with the demo shards and its own endpoint.
    let worker_dir = demo_worker_dir(dir.path())?;
    let mut worker = quarry(&[
        "worker",
        "--id",
        "worker-0",
        "--coordinator",
        &urls.join(","),
        "--listen",
        &worker_grpc,
        "--metrics-listen",
        &metrics[3],
    ]);
    worker.arg("--data-dir").arg(&worker_dir);
    processes.push(Process(worker.spawn()?));
    until("a live worker", Duration::from_secs(60), async || {
        (client.status().await.ok()?.live_workers == 1).then_some(())
    })
    .await?;

    // A hunt, and an ingest with one malformed record, give the task,
    // module and ingest metrics values.
    let submit = quarry(&[
        "hunt",
        "submit",
        "bruteforce",
        "--selector",
        "env=demo",
        "--wait",
        "--coordinator",
        &leader_url,
    ]);
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || {
            let mut submit = submit;
            submit.output()
        }),
    )
    .await???;
    assert!(output.status.success(), "hunt submit failed: {output:?}");
    let logs = dir.path().join("extra.jsonl");
    std::fs::write(
        &logs,
        "{\"timestamp\":\"2026-12-01T10:00:00Z\",\"EventID\":4625,\"TargetUserName\":\"a\"}\nnot json at all\n",
    )?;
    let ingest = quarry(&[
        "worker",
        "ingest",
        "--worker",
        &format!("http://{worker_grpc}"),
        "--shard",
        "extra",
        "--format",
        "jsonl",
    ])
    .arg(&logs)
    .output()?;
    assert!(ingest.status.success(), "ingest failed: {ingest:?}");

    // Each endpoint's exposition passes promtool's lint.
    for addr in &metrics {
        let (status, body) = get(addr, "/metrics").await?;
        assert_eq!(status, 200, "{addr}: {body}");
        let mut lint = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            use std::io::Write as _;
            let mut stdin = lint.stdin.take().expect("stdin");
            stdin.write_all(body.as_bytes())?;
        }
        let lint = lint.wait_with_output()?;
        assert!(
            lint.status.success(),
            "promtool check metrics on {addr}:\n{}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
    }

    // A real Prometheus scrapes all four.
    let targets = |addrs: &[String]| {
        addrs
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: quarry-coordinator\n    static_configs:\n      - targets: [{}]\n  - job_name: quarry-worker\n    static_configs:\n      - targets: [{}]\n",
            targets(&metrics[0..3]),
            targets(&metrics[3..4]),
        ),
    )?;
    let check = Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config)
        .output()?;
    assert!(check.status.success(), "promtool check config: {check:?}");
    let _prometheus = Process(
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?)
            .spawn()?,
    );
    let prom = prometheus_addr.as_str();
    let scraped = until("four targets up", Duration::from_secs(60), async || {
        (scalar(prom, "sum(up)").await? == 4.0).then_some(())
    })
    .await;
    if let Err(e) = scraped {
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        let (_, targets) = get(prom, "/api/v1/targets").await.unwrap_or_default();
        panic!("{e}\nprometheus log:\n{log}\ntargets: {targets}");
    }

    // What a dashboard reads, through Prometheus.
    assert_eq!(scalar(prom, "sum(quarry_raft_leader)").await, Some(1.0));
    assert_eq!(
        scalar(prom, "count(quarry_raft_term)").await,
        Some(3.0),
        "every coordinator reports its term"
    );
    let succeeded = scalar(
        prom,
        "sum(quarry_tasks_finished_total{outcome=\"succeeded\"})",
    )
    .await;
    assert!(succeeded.is_some_and(|n| n >= 1.0), "{succeeded:?}");
    let scanned = scalar(
        prom,
        "sum(quarry_module_events_scanned_total{job=\"quarry-worker\",module=\"bruteforce\"})",
    )
    .await;
    assert!(scanned.is_some_and(|n| n > 0.0), "{scanned:?}");
    assert_eq!(
        scalar(prom, "sum(quarry_hunts_submitted_total)").await,
        Some(1.0)
    );
    assert_eq!(
        scalar(prom, "sum(quarry_ingest_events_total)").await,
        Some(1.0)
    );
    assert_eq!(
        scalar(prom, "sum(quarry_ingest_malformed_records_total)").await,
        Some(1.0)
    );
    let proposals = scalar(prom, "sum(quarry_raft_proposal_duration_seconds_count)").await;
    assert!(proposals.is_some_and(|n| n >= 1.0), "{proposals:?}");

    // Every documented metric is there, and every dashboard query parses
    // and reads only metrics that exist.
    let names: BTreeSet<String> = query(prom, "count by (__name__) ({__name__=~\"quarry_.+\"})")
        .await?
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(metrics_in))
        .flatten()
        .collect();
    let documented = documented_metrics();
    assert!(documented.len() >= 20, "docs list {documented:?}");
    let missing: Vec<&String> = documented.difference(&names).collect();
    assert!(
        missing.is_empty(),
        "documented but not scraped: {missing:?}; scraped: {names:?}"
    );
    let undocumented: Vec<&String> = names.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "scraped but not documented: {undocumented:?}"
    );
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        repo().join("deploy/grafana/quarry.json"),
    )?)?;
    let exprs = dashboard_queries(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        query(prom, expr).await?;
        let unknown: Vec<String> = metrics_in(expr).difference(&names).cloned().collect();
        assert!(
            unknown.is_empty(),
            "dashboard query {expr:?} reads unknown {unknown:?}"
        );
    }
    drop(processes);
    Ok(())
}
