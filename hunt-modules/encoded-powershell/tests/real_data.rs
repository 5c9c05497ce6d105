//! The wasm build of the module over the recorded Windows attack
//! simulations of the shared data set (Mordor captures, found through
//! `quarry-testdata`), ingested with the worker's own reader.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use quarry_hunt_modules::ENCODED_POWERSHELL;
use quarry_module_testkit as testkit;
use quarry_worker::runtime::TaskOutput;

fn run_over(relative: &str) -> Option<TaskOutput> {
    let files = testkit::shared_files(relative)?;
    let shard = testkit::shard_of_files("recording", "recording", &files);
    Some(testkit::run(ENCODED_POWERSHELL.wasm, &shard, &[]))
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
