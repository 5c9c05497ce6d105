//! `quarry worker ingest` beside a running worker: writing the worker's data
//! directory is refused (naming the process that holds it), and `--worker
//! URL` streams the files into the running worker's shard instead.
//! `quarry worker migrate` rewrites a shard of the old block format once the
//! worker is stopped.

use quarry_worker::{Worker, WorkerConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

/// Runs the `quarry` binary on a blocking thread (the worker under test is
/// served by this test's runtime).
async fn quarry(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_quarry"))
            .args(&args)
            .output()
            .expect("run quarry")
    })
    .await
    .expect("quarry thread")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn worker(data_dir: &Path) -> Worker {
    Worker::start(WorkerConfig {
        id: quarry_proto::WorkerId::new("w-ingest".to_owned()),
        // Nothing listens there: the worker keeps retrying, which is fine.
        coordinator: "http://127.0.0.1:9".to_owned(),
        data_dir: data_dir.to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        slots: 1,
        tls: None,
    })
    .await
    .expect("worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_beside_a_running_worker_is_refused_and_goes_through_worker_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("worker");
    let worker = worker(&data_dir).await;
    let logs = dir.path().join("auth.jsonl");
    std::fs::write(
        &logs,
        "{\"@timestamp\":\"2024-03-01T10:00:00Z\",\"EventID\":4624}\n\
         {\"@timestamp\":\"2024-03-01T10:01:00Z\",\"EventID\":4625}\n\
         not json\n",
    )
    .expect("logs");
    let logs = logs.display().to_string();

    let refused = quarry(args(&[
        "worker",
        "ingest",
        "--data-dir",
        &data_dir.display().to_string(),
        "--shard",
        "auth",
        &logs,
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains(&format!("process {}", std::process::id())),
        "names the worker's process: {stderr}"
    );
    assert!(stderr.contains("--worker URL"), "says what to do: {stderr}");
    assert!(worker.store().get("auth").is_none());

    let url = format!("http://{}", worker.addr());
    let sent = quarry(args(&[
        "worker", "ingest", "--worker", &url, "--shard", "auth", "--label", "env=test", &logs,
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(stdout.contains("2 events stored, 1 malformed"), "{stdout}");
    assert!(
        stdout.contains("line 3"),
        "the malformed record's position: {stdout}"
    );
    let meta = worker
        .store()
        .get("auth")
        .expect("the running worker's shard");
    assert_eq!((meta.event_count, meta.malformed_count), (2, 1));
    assert_eq!(meta.labels.get("env").map(String::as_str), Some("test"));
    worker.shutdown().await;
}

/// Events read back whole: offset, timestamp, JSON text.
fn stored_events(store: &quarry_worker::shard::ShardStore, shard: &str) -> Vec<(u64, i64, String)> {
    let mut out = Vec::new();
    store
        .scan(shard, None, 1000, |events| {
            out.extend(
                events
                    .iter()
                    .map(|e| (e.offset, e.timestamp_ms, e.doc.to_string())),
            );
            Ok::<_, quarry_worker::shard::ShardError>(())
        })
        .expect("scan");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::result_large_err)] // the store's record type, as ingest takes it
async fn migrate_rewrites_an_old_format_shard_once_the_worker_is_stopped() {
    use quarry_worker::shard::{BlockFormat, ShardStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("worker");
    let data = data_dir.display().to_string();
    let original = {
        // A shard as older versions wrote it: rows blocks.
        let store = ShardStore::open(&data_dir.join("shards")).expect("store");
        let records = (0..20_000u64).map(|i| {
            Ok(serde_json::json!({
                "@timestamp": 1_795_161_600_000u64 + i,
                "EventID": 4624 + i % 3,
                "Computer": format!("HOST{}", i % 9),
                "CommandLine": format!("cmd.exe /c echo {i}"),
            }))
        });
        store
            .append(
                "old",
                std::collections::BTreeMap::new(),
                records,
                &mut |_| {},
            )
            .expect("append");
        store
            .migrate("old", BlockFormat::Rows, &mut |_| {})
            .expect("as rows");
        stored_events(&store, "old")
    };

    let worker = worker(&data_dir).await;
    assert_eq!(
        stored_events(worker.store(), "old"),
        original,
        "a running worker reads it"
    );
    let refused = quarry(args(&["worker", "migrate", "--data-dir", &data])).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("stop the worker"),
        "says what to do: {stderr}"
    );
    worker.shutdown().await;

    let migrated = quarry(args(&["worker", "migrate", "--data-dir", &data])).await;
    let stdout = String::from_utf8_lossy(&migrated.stdout);
    let stderr = String::from_utf8_lossy(&migrated.stderr);
    assert!(migrated.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("old: segment 1/1"), "progress: {stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("old "))
        .unwrap_or_else(|| panic!("a row for the shard: {stdout}"));
    let cells: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().expect("number"))
        .collect();
    assert!(
        cells[0] >= 2 && cells[1] == 0 && cells[2] == 20_000,
        "{row}"
    );
    assert!(cells[4] < cells[3], "smaller: {row}");

    let store = ShardStore::open(&data_dir.join("shards")).expect("reopen");
    assert_eq!(stored_events(&store, "old"), original, "nothing lost");
    let again = store
        .migrate("old", BlockFormat::CURRENT, &mut |_| {})
        .expect("probe");
    assert_eq!(again.blocks_rewritten, 0, "every block is columns now");
}
