//! `quarry query` on a cluster: the shipped `query` module runs beside the
//! shards of two workers, the coordinator merges the partials by the
//! contract's rules and finishes the table (`QueryResult`). The same query
//! over one shard and over the same events split across six shards on two
//! workers gives the same table, which is also the table the engine gives
//! over the events in one process. Real coordinator, workers, gRPC, RocksDB
//! and wasm. (What the module reads and pushes down is tested with the
//! module, in hunt-modules/query/tests.)

use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::QUERY;
use quarry_proto::v1;
use quarry_query::{JsonEvent, Table, Value};
use quarry_worker::Worker;
use quarry_worker::shard::ShardStore;
use std::collections::BTreeMap;
use std::time::Duration;

const EVENTS: usize = 4_000;
const PARTS: usize = 6;

/// Events with the awkward parts of real logs: missing fields, numbers as
/// text and as numbers, nulls, mixed case, unicode, nested objects.
fn events() -> Vec<serde_json::Value> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    (0..EVENTS)
        .map(|i| {
            let second = i as u64 * 37 % 86_400;
            let mut event = serde_json::json!({
                "@timestamp": format!("2026-11-20T{:02}:{:02}:{:02}.{:03}Z", second / 3600, second / 60 % 60, second % 60, i % 1000),
                "EventID": ([4624, 4625, 4688, 1][next(4) as usize]),
                "Computer": format!("ws-{:02}.corp.example", next(30)),
                "TargetUserName": (["alice", "ALICE", "bob", "Ωmega", "svc_backup", "élodie"][next(6) as usize]),
                "Image": (["C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\rundll32.exe", "C:\\Users\\bob\\AppData\\x.exe", "C:\\WINDOWS\\system32\\NLTEST.EXE"][next(4) as usize]),
                "CommandLine": (["nltest /dclist:corp", "cmd /c whoami", "rundll32 x.dll,Start", ""][next(4) as usize]),
                "Bytes": (match next(4) { 0 => serde_json::json!(next(100_000)), 1 => serde_json::json!(next(5_000).to_string()), 2 => serde_json::Value::Null, _ => serde_json::json!(next(1000) as f64 / 4.0) }),
                "Session": format!("s-{}", next(3_000)),
                "net": {"src": format!("10.0.{}.{}", next(4), next(250))},
            });
            if next(6) == 0 {
                event.as_object_mut().map(|m| m.remove("Computer"));
            }
            event
        })
        .collect()
}

/// Queries that cover every stage and aggregate kind.
const QUERIES: &[&str] = &[
    r#"where EventID == 4688 and CommandLine contains "nltest" | stats count() by Computer"#,
    "stats count(), count(Computer), dc(Computer), sum(Bytes), avg(Bytes), min(Bytes), max(Bytes) by EventID",
    "stats values(TargetUserName), earliest(TargetUserName), latest(Computer) by EventID",
    r#"where Image endswith "\\cmd.exe" | top 5 Computer"#,
    "rare 3 Image by EventID",
    "timechart span=2h count() by EventID",
    "where TargetUserName in (\"alice\", \"élodie\") | stats count() by TargetUserName",
    r#"where net.src cidr "10.0.1.0/24" | stats dc(net.src) as sources by EventID | sort -sources"#,
    "eval u = lower(TargetUserName) | stats count() as n by u | where n > 10 | sort -n, u",
    "where EventID == 4625 | sort -Bytes, Session | head 20 | fields Session, Bytes, TargetUserName",
    "where exists(Computer) | dedup Computer | fields Computer, EventID",
    "stats dc(Session) as sessions",
];

async fn worker(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    shards: &[(String, &str, Vec<&serde_json::Value>)],
) -> Worker {
    let store = ShardStore::open(&dir.join(name).join("shards")).expect("store");
    for (shard, layout, events) in shards {
        let mut lines = String::new();
        for event in events {
            lines.push_str(&event.to_string());
            lines.push('\n');
        }
        let labels = BTreeMap::from([("layout".to_owned(), (*layout).to_owned())]);
        store
            .ingest_jsonl(shard, labels, lines.as_bytes())
            .expect("ingest");
    }
    quarry_tests::worker(dir, name, url, store).await
}

async fn query(client: &mut Client, text: &str, layout: &str) -> (Table, v1::QueryResultResponse) {
    let hunt = client
        .submit_hunt(
            HuntRequest::new(QUERY.name)
                .param("query", text)
                .selector("layout", layout),
        )
        .await
        .expect("submit")
        .hunt_id;
    let hunt = tokio::time::timeout(Duration::from_secs(300), client.wait(&hunt, |_| {}))
        .await
        .expect("the query hunt ends")
        .expect("hunt");
    assert_eq!(hunt.state(), v1::HuntState::Completed, "{text}: {hunt:?}");
    assert_eq!(hunt.findings, 0, "a query reports rows, not findings");
    let result = client.query_result(&hunt.hunt_id).await.expect("result");
    let table = quarry_cli::query_cmd::table_of(&result).expect("table");
    (table, result)
}

/// The engine's answer in this process, over JSON events.
fn local(text: &str, events: &[serde_json::Value]) -> Table {
    let plan = quarry_query::compile(text).expect("compile");
    let times: Vec<i64> = events
        .iter()
        .map(|e| quarry_worker::event::event_timestamp_ms(e).unwrap_or(0))
        .collect();
    let json: Vec<JsonEvent<'_>> = events
        .iter()
        .zip(&times)
        .filter_map(|(e, t)| {
            e.as_object().map(|map| JsonEvent {
                map,
                time_ms: Some(*t),
            })
        })
        .collect();
    plan.run(json.iter()).expect("run")
}

/// `dc` beyond the exact limit is a HyperLogLog estimate: within 5% (three
/// standard errors) of the engine's answer; every other cell is equal.
fn assert_same(text: &str, got: &Table, want: &Table) {
    assert_eq!(got.columns, want.columns, "{text}");
    assert_eq!(got.rows.len(), want.rows.len(), "{text}: {got:?}");
    for (g, w) in got.rows.iter().zip(&want.rows) {
        for ((cell_g, cell_w), column) in g.iter().zip(w).zip(&got.columns) {
            match (cell_g, cell_w) {
                (Value::Num(a), Value::Num(b))
                    if column.starts_with("dc(") || column == "sessions" =>
                {
                    assert!((a - b).abs() <= b * 0.05, "{text}: {column} {a} vs {b}")
                }
                _ => assert_eq!(cell_g, cell_w, "{text}: column {column}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_split_across_shards_on_two_workers_gives_the_one_shard_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = quarry_tests::coordinator(dir.path()).await;
    let mut client = Client::connect(&url).await.expect("client");
    client
        .upload_module(QUERY.name, QUERY.version, "", QUERY.wasm)
        .await
        .expect("upload");

    let events = events();
    let part =
        |p: usize| -> Vec<&serde_json::Value> { events.iter().skip(p).step_by(PARTS).collect() };
    let w1 = worker(
        dir.path(),
        "w1",
        &url,
        &[
            ("whole".to_owned(), "one", events.iter().collect()),
            ("part-0".to_owned(), "split", part(0)),
            ("part-2".to_owned(), "split", part(2)),
            ("part-4".to_owned(), "split", part(4)),
        ],
    )
    .await;
    let w2 = worker(
        dir.path(),
        "w2",
        &url,
        &[
            ("part-1".to_owned(), "split", part(1)),
            ("part-3".to_owned(), "split", part(3)),
            ("part-5".to_owned(), "split", part(5)),
        ],
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while client.status().await.expect("status").live_workers < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("two live workers");

    for text in QUERIES {
        let want = local(text, &events);
        assert!(!want.rows.is_empty(), "{text} has rows");
        let (one, one_result) = query(&mut client, text, "one").await;
        let (split, split_result) = query(&mut client, text, "split").await;
        assert_eq!((one_result.tasks_done, one_result.tasks_total), (1, 1));
        assert_eq!(
            (split_result.tasks_done, split_result.tasks_total),
            (PARTS as u32, PARTS as u32)
        );
        assert_same(text, &one, &want);
        assert_same(text, &split, &want);
        if !text.contains("dc(") {
            assert_eq!(one, split, "{text}: one shard and {PARTS} shards");
        }
    }

    // Not a query hunt: the error says where its results are.
    let noop = quarry_hunt_modules::test_modules::NOOP;
    client
        .upload_module(noop.name, noop.version, "", noop.wasm)
        .await
        .expect("upload");
    let other = client
        .submit_hunt(HuntRequest::new(noop.name).shard("whole"))
        .await
        .expect("submit")
        .hunt_id;
    client.wait(&other, |_| {}).await.expect("wait");
    let err = client.query_result(&other).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("quarry hunt results"), "{err}");
    let err = client.query_result("no-such-hunt").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");

    // A query that does not compile is refused when it is submitted, with
    // the caret under its column ...
    let refused = client
        .submit_hunt(
            HuntRequest::new(QUERY.name)
                .param("query", "where EventID ==")
                .shard("whole"),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code(),
        Some(tonic::Code::InvalidArgument),
        "{refused}"
    );
    assert!(refused.to_string().contains("column 17"), "{refused}");
    let refused = client
        .submit_hunt(
            HuntRequest::new(QUERY.name)
                .param("query", "stats count()")
                .param("findings", "urgent")
                .shard("whole"),
        )
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("`findings` is `urgent`"),
        "{refused}"
    );
    // ... and a hunt naming the module by digest, which the coordinator
    // does not take for a query, fails its tasks with the same error.
    let digest = quarry_worker::runtime::module_digest(QUERY.wasm);
    let bad = client
        .submit_hunt(
            HuntRequest::new(&format!("sha256:{digest}"))
                .param("query", "where EventID ==")
                .shard("whole")
                .retries(1, 0),
        )
        .await
        .expect("submit")
        .hunt_id;
    let bad = client.wait(&bad, |_| {}).await.expect("wait");
    assert_ne!(bad.state(), v1::HuntState::Completed);
    let text = format!("{bad:?}");
    assert!(
        text.contains("column"),
        "the parse error names its column: {text}"
    );

    w1.shutdown().await;
    w2.shutdown().await;
    coordinator.shutdown().await;
}
