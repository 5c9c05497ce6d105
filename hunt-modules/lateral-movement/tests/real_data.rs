//! The wasm build of the module over recorded Windows logs from the shared
//! data set (found through `quarry-testdata`), ingested with the worker's
//! own EVTX reader: a PsExec run against a member server must be one
//! remote-service finding attributed to its source, and recordings of other
//! techniques on single hosts must stay quiet.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use std::collections::BTreeMap;

use quarry_hunt_modules::LATERAL_MOVEMENT;
use quarry_module_testkit as testkit;
use quarry_worker::runtime::TaskOutput;

fn run_over(relative: &str) -> Option<TaskOutput> {
    let files = testkit::shared_files(relative)?;
    let shard = testkit::shard_of_files("recording", "recording", &files);
    Some(testkit::run(LATERAL_MOVEMENT.wasm, &shard, &[]))
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
