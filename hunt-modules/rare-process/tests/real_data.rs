//! The wasm build of the module over the recorded Windows attack
//! simulations of the shared data set (Mordor captures, found through
//! `quarry-testdata`), each recording ingested into its own shard with the
//! worker's reader and scanned by its own task, the stacks merged as the
//! coordinator merges them. The recordings log the same processes in
//! Sysmon 1 and Security 4688, with the host as `WORKSTATION5` in some and
//! `WORKSTATION5.theshire.local` in others.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use quarry_hunt_modules::RARE_PROCESS;
use quarry_module_testkit as testkit;
use quarry_sdk::contract::aggregate::{AggregateValue, Merged, merge_into};

const RECORDINGS: [&str; 8] = [
    "logs/windows/mordor/T1003.001_lsass_dump_comsvcs_powershell.jsonl",
    "logs/windows/mordor/T1003.001_lsass_dump_dumpert_syscalls.jsonl",
    "logs/windows/mordor/T1003.004_psexec_reg_lsa_secrets_dump.jsonl",
    "logs/windows/mordor/T1053.005_remote_scheduled_task_create.jsonl",
    "logs/windows/mordor/T1197_bitsadmin_download_ps_script.jsonl",
    "logs/windows/mordor/T1210_zerologon_mimikatz_cve_2020_1472.jsonl",
    "logs/windows/mordor/T1218.005_mshta_vbscript_execute_powershell.jsonl",
    "logs/windows/mordor/T1543.003_service_modification_fax.jsonl",
];

#[test]
fn recorded_process_starts_stack_across_recordings() {
    let mut merged = Merged::new();
    for (i, relative) in RECORDINGS.iter().enumerate() {
        let Some(files) = testkit::shared_files(relative) else {
            return;
        };
        let shard = testkit::shard_of_files(&format!("recording-{i}"), "mordor", &files);
        // max_hosts=1: the recordings come from two workstations, so the
        // tail is "on one of them only".
        let output = testkit::run(RARE_PROCESS.wasm, &shard, &[("max_hosts", "1")]);
        assert!(
            output.events_matched > 0,
            "{relative}: no process starts read"
        );
        // No recording holds three hosts: no per-shard findings.
        assert!(
            output.findings.is_empty(),
            "{relative}: {:#?}",
            output.findings
        );
        for aggregate in output.aggregates {
            merge_into(&mut merged, aggregate).expect("one kind per name");
        }
    }
    let Some(AggregateValue::Stack(stack)) = merged.get("rare_process_images") else {
        panic!("the stack aggregate is missing: {merged:?}")
    };
    // conhost and cscript ran on both workstations; the host spellings
    // (`WORKSTATION5`, `workstation5.theshire.local`) are one host.
    for common in [
        "c:\\windows\\system32\\conhost.exe",
        "c:\\windows\\system32\\cscript.exe",
    ] {
        assert!(
            stack.entries[common].common,
            "{common}: {:?}",
            stack.entries[common]
        );
    }
    let on = |image: &str| -> Vec<&str> {
        stack.entries[image]
            .hosts
            .iter()
            .map(String::as_str)
            .collect()
    };
    assert_eq!(on("c:\\windows\\system32\\mshta.exe"), ["workstation5"]);
    assert_eq!(
        on("c:\\windows\\system32\\searchprotocolhost.exe"),
        ["workstation6"]
    );
    // Tools run from a user's profile stack under `*`, whoever ran them.
    assert_eq!(
        on("c:\\users\\*\\downloads\\mimikatz_trunk\\x64\\mimikatz.exe"),
        ["workstation5"]
    );
    assert_eq!(
        stack.entries["c:\\windows\\system32\\mshta.exe"].events, 2,
        "one start logged by Sysmon and by 4688 is one image"
    );
}
