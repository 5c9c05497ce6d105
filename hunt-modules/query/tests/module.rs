//! The wasm build of `query` in the worker's sandbox: it declares exactly
//! the fields its query reads, pushes the `where` clauses the host
//! understands down to the prefilter, and its partials, merged by the
//! contract's rules as the coordinator merges them, give the table the
//! engine gives over the same events in one process — on generated events
//! and on the recorded attack simulations of the shared data set.

use quarry_hunt_modules::QUERY;
use quarry_module_testkit as testkit;
use quarry_query::{JsonEvent, Table};
use quarry_sdk::contract::aggregate::{Merged, merge_into};
use quarry_worker::shard::ShardError;

/// Every event of a test shard as JSON, with its time, as the worker
/// stored it.
fn stored(shard: &testkit::TestShard) -> Vec<(i64, serde_json::Value)> {
    let mut events = Vec::new();
    shard
        .store
        .scan::<ShardError, _>(&shard.name, None, 4096, |batch| {
            events.extend(batch.iter().map(|e| (e.timestamp_ms, e.doc.clone())));
            Ok(())
        })
        .expect("scan");
    events
}

/// The engine's table over the events of `shards`, in this process.
fn native(query: &str, shards: &[&testkit::TestShard]) -> Table {
    let plan = quarry_query::compile(query).expect("compile");
    let events: Vec<(i64, serde_json::Value)> = shards.iter().flat_map(|s| stored(s)).collect();
    let json: Vec<JsonEvent<'_>> = events
        .iter()
        .filter_map(|(t, doc)| {
            doc.as_object().map(|map| JsonEvent {
                map,
                time_ms: (*t != 0).then_some(*t),
            })
        })
        .collect();
    plan.run(json.iter()).expect("run")
}

/// The module over each shard, merged as the coordinator merges.
fn in_sandbox(
    query: &str,
    shards: &[&testkit::TestShard],
) -> (Table, Vec<quarry_worker::runtime::TaskOutput>) {
    let plan = quarry_query::compile(query).expect("compile");
    let mut merged = Merged::new();
    let mut outputs = Vec::new();
    for shard in shards {
        let output = testkit::run(QUERY.wasm, shard, &[("query", query)]);
        assert!(output.findings.is_empty(), "a query reports no findings");
        for aggregate in output.aggregates.clone() {
            merge_into(&mut merged, aggregate).expect("one kind per name");
        }
        outputs.push(output);
    }
    let partial = plan.partial_from_merged(&merged).expect("partial");
    (plan.finish(partial).expect("finish"), outputs)
}

#[test]
fn the_module_reads_only_the_query_fields_and_the_host_drops_what_the_where_drops() {
    let events: Vec<serde_json::Value> = (0..5_000)
        .map(|i| {
            serde_json::json!({
                "@timestamp": format!("2026-11-20T10:{:02}:{:02}Z", i / 60 % 60, i % 60),
                "EventID": if i % 10 == 0 { 4688 } else { 4624 },
                "CommandLine": if i % 50 == 0 { "NLTEST /dclist:corp" } else { "svchost -k netsvcs" },
                "Computer": format!("ws-{}", i % 7),
                "Unread": "x".repeat(40),
            })
        })
        .collect();
    let shard = testkit::shard_of_events("s", "generated", &events);
    let query =
        r#"where EventID == 4688 and CommandLine startswith "nltest" | stats count() by Computer"#;
    let (table, outputs) = in_sandbox(query, &[&shard]);
    assert_eq!(table, native(query, &[&shard]));
    let total: f64 = table
        .rows
        .iter()
        .map(|r| r[1].as_number().unwrap_or(0.0))
        .sum();
    assert_eq!(total, 100.0, "{table:?}");
    let output = &outputs[0];
    assert_eq!(output.fields_projected, 3, "EventID, CommandLine, Computer");
    assert_eq!(output.events_scanned, 5_000);
    assert_eq!(
        output.events_matched, 100,
        "the host's prefilter passes only the events the `where` keeps"
    );

    // A `where` the host cannot express (arithmetic) is not pushed down:
    // every event reaches the module, and the answer is the same.
    let unpushed = "where EventID - 4000 == 688 and CommandLine startswith \"nltest\" | stats count() by Computer";
    let (same, outputs) = in_sandbox(unpushed, &[&shard]);
    assert_eq!(same.rows, table.rows);
    assert_eq!(outputs[0].events_matched, 100, "the `startswith` still is");
    let (_, outputs) = in_sandbox("where EventID - 4000 == 688 | stats count()", &[&shard]);
    assert_eq!(outputs[0].events_matched, 5_000, "nothing to push down");
}

/// Windows attack recordings, one shard each.
const RECORDINGS: [&str; 4] = [
    "logs/windows/mordor/T1003.001_lsass_dump_comsvcs_powershell.jsonl",
    "logs/windows/mordor/T1003.004_psexec_reg_lsa_secrets_dump.jsonl",
    "logs/windows/mordor/T1053.005_remote_scheduled_task_create.jsonl",
    "logs/windows/mordor/T1218.005_mshta_vbscript_execute_powershell.jsonl",
];

#[test]
fn recorded_attacks_give_the_same_tables_in_the_sandbox_as_in_process() {
    let mut shards = Vec::new();
    for (i, relative) in RECORDINGS.iter().enumerate() {
        let Some(files) = testkit::shared_files(relative) else {
            return;
        };
        shards.push(testkit::shard_of_files(
            &format!("rec-{i}"),
            "mordor",
            &files,
        ));
    }
    let shards: Vec<&testkit::TestShard> = shards.iter().collect();
    let queries = [
        "stats count(), dc(Hostname) as hosts, earliest(_time), latest(_time) by EventID | sort -count | head 15",
        r#"where EventID == 1 | stats count() by Image | sort -count, Image | head 10"#,
        r#"where EventID == 4688 or EventID == 1 | rare 5 ParentImage"#,
        r#"where EventID == 4624 | stats count() by LogonType, TargetUserName"#,
        r#"where CommandLine contains "powershell" | fields _time, Hostname, CommandLine | head 20"#,
        "timechart span=1h count() by Hostname | head 50",
        "where EventID == 3 | stats dc(DestinationIp) as destinations, values(DestinationPort) by Image",
    ];
    for query in queries {
        let want = native(query, &shards);
        assert!(
            !want.rows.is_empty(),
            "{query} has rows over the recordings"
        );
        let (got, _) = in_sandbox(query, &shards);
        assert_eq!(got, want, "{query}");
    }
}

#[test]
fn rows_beyond_the_byte_bound_are_cut_and_the_table_says_so() {
    let events: Vec<serde_json::Value> = (0..2_000)
        .map(|i| {
            serde_json::json!({
                "@timestamp": format!("2026-11-20T10:{:02}:{:02}Z", i / 60 % 60, i % 60),
                "Script": format!("{i:05}{}", "A".repeat(1_000)),
            })
        })
        .collect();
    let shard = testkit::shard_of_events("big", "generated", &events);
    let (table, outputs) = in_sandbox("fields Script", &[&shard]);
    assert!(table.truncated, "the table says rows were cut");
    assert!(
        (400..2_000).contains(&table.rows.len()),
        "{} rows kept of 2000",
        table.rows.len()
    );
    let log = outputs[0].log.join("\n");
    assert!(log.contains("rows cut at"), "{log}");
    assert!(log.contains("events=2000"), "{log}");
    // A bound of its own keeps the query whole.
    let (table, _) = in_sandbox("fields Script | head 100", &[&shard]);
    assert!(!table.truncated);
    assert_eq!(table.rows.len(), 100);
}
