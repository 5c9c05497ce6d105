//! The wasm build of the module over the recorded Windows attack
//! simulations of the shared data set (Mordor captures, found through
//! `quarry-testdata`), ingested with the worker's own reader.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use quarry_hunt_modules::ENCODED_POWERSHELL;
use quarry_worker::ingest;
use quarry_worker::runtime::{
    Runtime, RuntimeConfig, TaskInput, TaskLimits, TaskOutput, module_digest,
};
use quarry_worker::shard::ShardStore;

fn run_over(relative: &str) -> Option<TaskOutput> {
    let path = quarry_testdata::shared_file(relative)?;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    let (_format, records) = ingest::open(&path, None).expect("the recording opens");
    let mut labels = BTreeMap::new();
    labels.insert("source".to_owned(), "recording".to_owned());
    store
        .append("recording", labels, records, &mut |_| {})
        .expect("ingest");
    let cache =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("encoded-powershell-module-cache");
    let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&cache)).expect("runtime");
    let module = runtime
        .load(
            &module_digest(ENCODED_POWERSHELL.wasm),
            ENCODED_POWERSHELL.wasm,
        )
        .expect("the module loads");
    let task = TaskInput {
        params: &[],
        limits: TaskLimits {
            cpu: Duration::from_secs(60),
            memory_bytes: 128 * 1024 * 1024,
            max_findings: 10_000,
            max_output_bytes: 16 * 1024 * 1024,
        },
        shard: "recording",
        time_range: None,
    };
    Some(
        runtime
            .run(&module, &task, &store, &Arc::new(AtomicBool::new(false)))
            .expect("the task runs"),
    )
}

/// The recordings whose PowerShell starts are plain commands (mshta running
/// `powershell -noexit -command Get-Service sysmon`, a Fax service binPath of
/// `powershell -noexit -c "write-host …"`, in Sysmon 1 and 4688): the module
/// sees them (they pass the prefilter) and reports nothing. The shared set
/// has no encoded or obfuscated PowerShell; the generated scenarios in
/// `wasm_scenarios.rs` cover those.
#[test]
fn recorded_plain_powershell_starts_are_seen_and_quiet() {
    for relative in [
        "logs/windows/mordor/T1218.005_mshta_vbscript_execute_powershell.jsonl",
        "logs/windows/mordor/T1543.003_service_modification_fax.jsonl",
    ] {
        let Some(output) = run_over(relative) else {
            return;
        };
        assert_eq!(
            output.events_matched, 4,
            "{relative}: the PowerShell starts reach the module"
        );
        assert!(
            output.findings.is_empty(),
            "{relative}: {:#?}",
            output.findings
        );
    }
}
