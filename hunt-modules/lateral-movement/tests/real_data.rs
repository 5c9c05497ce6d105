//! The wasm build of the module over recorded Windows logs from the shared
//! data set (found through `quarry-testdata`), ingested with the worker's
//! own EVTX reader: a PsExec run against a member server must be one
//! remote-service finding attributed to its source, and recordings of other
//! techniques on single hosts must stay quiet.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use quarry_hunt_modules::LATERAL_MOVEMENT;
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
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lateral-movement-module-cache");
    let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&cache)).expect("runtime");
    let module = runtime
        .load(&module_digest(LATERAL_MOVEMENT.wasm), LATERAL_MOVEMENT.wasm)
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

#[test]
fn recorded_psexec_is_a_remote_service_from_its_source() {
    let Some(output) =
        run_over("logs/windows/evtx/T1021.002_psexec_admin_share_4688_4697_5140_5145.evtx")
    else {
        return;
    };
    assert_eq!(output.findings.len(), 1, "{:#?}", output.findings);
    let f = &output.findings[0];
    assert_eq!(f.rule, "lateral-movement/remote-service");
    assert_eq!(f.entity, "ip:10.23.42.22");
    let evidence: BTreeMap<&str, &str> = f
        .evidence
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(evidence["destination"], "srvdefender01.offsec.lan");
    assert_eq!(
        evidence["services"],
        "PSEXESVC (%SystemRoot%\\PSEXESVC.exe)"
    );
    assert_eq!(evidence["shares"], "ADMIN$, IPC$");
    assert!(evidence["share_targets"].contains("ADMIN$\\PSEXESVC.exe"));
    for technique in ["T1021.002", "T1569.002", "T1570"] {
        assert!(f.techniques.iter().any(|t| t == technique), "{technique}");
    }
}

#[test]
fn recordings_of_other_techniques_are_quiet() {
    for relative in [
        "logs/windows/evtx/T1110_accountrestore_local_bruteforce_4625.evtx",
        "logs/windows/evtx/T1558.003_kerberoast_rc4_ticket_4769.evtx",
        "logs/windows/evtx/T1003.006_mimikatz_dcsync_4662.evtx",
    ] {
        let Some(output) = run_over(relative) else {
            return;
        };
        assert!(
            output.findings.is_empty(),
            "{relative}: {:#?}",
            output.findings
        );
    }
}
