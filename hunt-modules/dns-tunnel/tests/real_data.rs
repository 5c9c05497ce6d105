//! The wasm build of the module over the recorded Zeek captures of the
//! shared data set (found through `quarry-testdata`), each capture's logs
//! ingested with the worker's own readers (Zeek JSON and TSV) into one
//! shard: small lab captures of attack emulations (minutes of traffic, no
//! timer-driven C2 and no DNS tunnel in them). The module, run with the default parameters,
//! must read their records (the task log counts them, in both the JSON
//! spelling `id_orig_h` and the TSV one `id.orig_h`) and stay quiet.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use quarry_hunt_modules::DNS_TUNNEL;
use quarry_worker::ingest;
use quarry_worker::runtime::{
    Runtime, RuntimeConfig, TaskInput, TaskLimits, TaskOutput, module_digest,
};
use quarry_worker::shard::ShardStore;

const CAPTURES: [&str; 2] = [
    "logs/network/zeek_json_apt29_day1",
    "logs/network/zeek_tsv_lsass_campaign_01",
];

fn run_over(relative: &str, params: &[(String, String)]) -> Option<TaskOutput> {
    let dir_path = quarry_testdata::shared_data()?.join(relative);
    assert!(
        dir_path.is_dir(),
        "{} is missing from the shared data set",
        dir_path.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    let mut files: Vec<_> = std::fs::read_dir(&dir_path)
        .expect("capture directory")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let (_format, records) = ingest::open(&file, None).expect("the log opens");
        let mut labels = BTreeMap::new();
        labels.insert("source".to_owned(), "zeek".to_owned());
        store
            .append("capture", labels, records, &mut |_| {})
            .expect("ingest");
    }
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-data-module-cache");
    let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&cache)).expect("runtime");
    let module = runtime
        .load(&module_digest(DNS_TUNNEL.wasm), DNS_TUNNEL.wasm)
        .expect("the module loads");
    let task = TaskInput {
        params,
        limits: TaskLimits {
            cpu: Duration::from_secs(60),
            memory_bytes: 128 * 1024 * 1024,
            max_findings: 10_000,
            max_output_bytes: 16 * 1024 * 1024,
        },
        shard: "capture",
        time_range: None,
    };
    Some(
        runtime
            .run(&module, &task, &store, &Arc::new(AtomicBool::new(false)))
            .expect("the task runs"),
    )
}

#[test]
fn recorded_zeek_captures_are_read_and_quiet() {
    for capture in CAPTURES {
        let Some(output) = run_over(capture, &[]) else {
            return;
        };
        println!(
            "{capture}: {} events, {} matched",
            output.events_scanned, output.events_matched
        );
        for f in &output.findings {
            println!("  {} {} {:?}", f.rule, f.title, f.evidence);
        }
        for line in &output.log {
            println!("  log: {line}");
        }
        assert!(
            output.findings.is_empty(),
            "{capture}: {:#?}",
            output.findings
        );
        assert!(
            output.log.iter().any(|l| l.contains("[debug]"))
                && !output.log.iter().any(|l| l.contains("] 0 DNS queries")),
            "{capture}: the module read no records: {:?}",
            output.log
        );
    }
}
