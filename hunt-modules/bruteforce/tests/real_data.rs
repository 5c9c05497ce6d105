//! Runs the module over recorded Windows Security logs from the shared data
//! set, found through `quarry-testdata`. The logs are evtx records as nested JSON (`Event.System`,
//! `Event.EventData`); they are flattened here the way the worker's ingest
//! does, then projected onto the module's declared fields.
//!
//! Without the data set the tests print why and pass, except under `CI=true`,
//! where missing data is a failure.

use std::collections::HashMap;

use bruteforce::Bruteforce;
use bruteforce::detector::{
    RULE_FAILURES_WITHOUT_SUCCESS, RULE_SOURCE_FAILURES_WITHOUT_SUCCESS,
    RULE_SOURCE_SUCCESS_AFTER_FAILURES, RULE_SUCCESS_AFTER_FAILURES,
};
use quarry_sdk::time::parse_rfc3339_ms;
use quarry_sdk::{AggregateValue, Event, Hunt, Severity, Task};
use serde_json::Value;

const BRUTEFORCE_LOG: &str = "logs/windows/evtx/T1110_accountrestore_local_bruteforce_4625.jsonl";

/// The log's lines, or `None` when the shared data set is absent (the
/// helper says why, and fails instead under `CI=true`).
fn read_log(relative: &str) -> Option<String> {
    let path = quarry_testdata::shared_file(relative)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) => panic!("cannot read {}: {error}", path.display()),
    }
}

/// Leaf values by their own key, as the worker flattens evtx records:
/// `Event.System.Computer` → `Computer`, `Event.EventData.IpAddress` →
/// `IpAddress`. Numbers keep their JSON text; XML attributes are skipped.
fn flatten(value: &Value, out: &mut HashMap<String, String>) {
    if let Value::Object(map) = value {
        for (key, value) in map {
            match value {
                Value::Object(_) if key != "#attributes" => flatten(value, out),
                Value::String(text) => {
                    out.insert(key.clone(), text.clone());
                }
                Value::Number(number) => {
                    out.insert(key.clone(), number.to_string());
                }
                Value::Bool(flag) => {
                    out.insert(key.clone(), flag.to_string());
                }
                _ => {}
            }
        }
    }
}

fn events(log: &str) -> Vec<Event> {
    let fields = Bruteforce::describe().fields;
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(offset, line)| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {}: not JSON: {e}", offset + 1));
            let time = record["Event"]["System"]["TimeCreated"]["#attributes"]["SystemTime"]
                .as_str()
                .unwrap_or_else(|| panic!("line {}: no SystemTime", offset + 1));
            let mut flat = HashMap::new();
            flatten(&record["Event"], &mut flat);
            Event::new(
                parse_rfc3339_ms(time).unwrap_or_else(|e| panic!("line {}: {e}", offset + 1)),
                offset as u64,
                fields
                    .iter()
                    // The module declares event data as `EventData.X`,
                    // which the worker resolves to the flat `X` here.
                    .map(|name| {
                        flat.get(name.strip_prefix("EventData.").unwrap_or(name))
                            .cloned()
                    })
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn local_bruteforce_without_success_is_reported_per_account() {
    let Some(log) = read_log(BRUTEFORCE_LOG) else {
        return;
    };
    let events = events(&log);
    assert_eq!(events.len(), 16, "the sample holds 16 failed logons");

    let mut task = Task::<Bruteforce>::new();
    task.init(vec![]).expect("default parameters are valid");
    // Two batches, as the worker would send them.
    let (first, second) = events.split_at(7);
    assert!(task.scan(first.to_vec()).unwrap().is_empty());
    assert!(task.scan(second.to_vec()).unwrap().is_empty());
    let output = task.finish().unwrap();

    // AccountRestore guessed passwords for two local accounts, 8 times each,
    // all within a few milliseconds, and never got in.
    let summary: Vec<(&str, &str, Option<&str>)> = output
        .findings
        .iter()
        .map(|f| {
            (
                f.rule.as_str(),
                f.entity.as_str(),
                f.evidence_value("failures"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (RULE_FAILURES_WITHOUT_SUCCESS, "user:WIN\\admin", Some("8")),
            (
                RULE_FAILURES_WITHOUT_SUCCESS,
                "user:WIN\\administrator",
                Some("8")
            ),
        ]
    );
    let admin = &output.findings[0];
    assert_eq!(admin.severity, Severity::Medium);
    assert_eq!(admin.evidence_value("logon_types"), Some("2 (Interactive)"));
    assert_eq!(admin.evidence_value("hosts"), Some("WIN"));
    assert_eq!(admin.evidence_value("failure_source_ips"), Some("none"));
    assert_eq!(
        admin.evidence_value("first_failure"),
        Some("2023-09-25T20:39:50.822Z")
    );
    assert_eq!(admin.offsets, [0, 5, 10, 11, 12, 13, 14, 15]);
    assert_eq!(
        output.aggregates[0].value,
        AggregateValue::Counts(vec![
            ("WIN\\admin".to_owned(), 8),
            ("WIN\\administrator".to_owned(), 8)
        ])
    );
}

#[test]
fn recorded_failures_then_a_success_is_a_high_finding() {
    let Some(log) = read_log(BRUTEFORCE_LOG) else {
        return;
    };
    let mut events = events(&log);
    // Append a successful interactive logon of `Administrator` a minute after
    // the guessing, as if the tool had found the password.
    let last = events.last().expect("the sample is not empty").clone();
    let mut success = last.clone();
    success.offset = last.offset + 1;
    success.timestamp_ms = last.timestamp_ms + 60_000;
    success.values[0] = Some("4624".to_owned());
    success.values[1] = Some("Administrator".to_owned());
    events.push(success);

    let mut task = Task::<Bruteforce>::new();
    task.init(vec![]).unwrap();
    let findings = task.scan(events).unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].rule, RULE_SUCCESS_AFTER_FAILURES);
    assert_eq!(findings[0].entity, "user:WIN\\administrator");
    assert_eq!(findings[0].evidence_value("failures"), Some("8"));
    assert_eq!(
        findings[0].evidence_value("success_logon_type"),
        Some("2 (Interactive)")
    );
    // The success resolved Administrator; only admin is left unresolved.
    let output = task.finish().unwrap();
    assert_eq!(output.findings.len(), 1);
    assert_eq!(output.findings[0].entity, "user:WIN\\admin");
}

/// The wasm build over a recorded `.evtx` file read by the worker's own
/// ingest (nested `Event.EventData` flattened there): OpenSSH on Windows
/// refusing five passwords for a user that does not exist, from the local
/// machine (no address, the workstation `FS01`). Each try is logged twice,
/// as the NTLM validation (4776) and the failed logon (4625), and counts
/// once. Five failures reach the account threshold; one account is not a
/// spray, so the source rules stay quiet.
#[test]
fn recorded_openssh_guessing_is_one_account_finding_in_the_sandbox() {
    use quarry_hunt_modules::BRUTEFORCE;
    use quarry_module_testkit::{self as testkit, evidence};

    let Some(files) = testkit::shared_files(
        "logs/windows/evtx/T1110_openssh_bruteforce_nonexistent_users_4625.evtx",
    ) else {
        return;
    };
    let shard = testkit::shard_of_files("fs01-security", "evtx", &files);
    let output = testkit::run(BRUTEFORCE.wasm, &shard, &[]);
    assert_eq!(
        output.events_matched, 11,
        "five 4625s, the five 4776s that validated them, and one 4624"
    );
    let summary: Vec<(&str, &str, Option<&str>)> = output
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.entity.as_str(), evidence(f, "failures")))
        .collect();
    assert_eq!(
        summary,
        [(
            RULE_FAILURES_WITHOUT_SUCCESS,
            "user:FS01\\nouser",
            Some("5")
        )]
    );
    assert_eq!(
        evidence(&output.findings[0], "logon_types"),
        Some("8 (NetworkCleartext)")
    );
}

/// Recorded Kerberos password guessing against a domain controller: 54
/// pre-authentication failures (4771, status 0x18, wrong password) for one
/// valid account from one address, never followed by a ticket. The account
/// is reported; a single account is not a spray.
#[test]
fn recorded_kerberos_guessing_is_an_account_finding() {
    let Some(log) = read_log("logs/windows/evtx/T1110_kerberos_bruteforce_valid_user_4771.jsonl")
    else {
        return;
    };
    let events = events(&log);
    assert_eq!(events.len(), 54);
    let mut task = Task::<Bruteforce>::new();
    task.init(vec![]).unwrap();
    assert!(task.scan(events).unwrap().is_empty());
    let output = task.finish().unwrap();
    let summary: Vec<(&str, &str)> = output
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.entity.as_str()))
        .collect();
    assert_eq!(
        summary,
        [(RULE_FAILURES_WITHOUT_SUCCESS, "user:admin-hacker")],
        "{:#?}",
        output.findings
    );
    let failures: u64 = output.findings[0]
        .evidence_value("failures")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 5, "{failures}");
    assert_eq!(
        output.findings[0].evidence_value("failure_source_ips"),
        Some("::ffff:10.23.123.11")
    );
}

/// Runs the wasm build over a recorded `.evtx` file of the shared data set
/// (read by the worker's own ingest) with `params`; `None` without the data.
fn run_recording(
    relative: &str,
    params: &[(&str, &str)],
) -> Option<quarry_worker::runtime::TaskOutput> {
    use quarry_hunt_modules::BRUTEFORCE;
    use quarry_module_testkit as testkit;
    let files = testkit::shared_files(relative)?;
    let shard = testkit::shard_of_files("dc-security", "evtx", &files);
    Some(testkit::run(BRUTEFORCE.wasm, &shard, params))
}

/// The spray in the recorded kerbrute run against a domain controller
/// (4768/4771 from one address: wrong passwords for valid accounts at about
/// three a second, disabled accounts in between, then a ticket for `hack1`)
/// is found by its rate alone: with `source_threshold` at its maximum, no
/// count of failures can start the source's burst, and before the rate rule
/// this recording raised nothing at that setting.
#[test]
fn recorded_kerbrute_spray_is_found_by_its_rate_alone() {
    use quarry_module_testkit::evidence;
    let Some(output) = run_recording(
        "logs/windows/evtx/T1110_kerbrute_user_enumeration_4768_4771.evtx",
        &[("source_threshold", "100000")],
    ) else {
        return;
    };
    let summary: Vec<(&str, &str)> = output
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.entity.as_str()))
        .collect();
    assert_eq!(
        summary,
        [(RULE_SOURCE_SUCCESS_AFTER_FAILURES, "ip:10.23.123.11")],
        "{:#?}",
        output.findings
    );
    let f = &output.findings[0];
    assert_eq!(f.severity, quarry_worker::runtime::types::Severity::High);
    assert_eq!(evidence(f, "success_account"), Some("hack1"));
    let rate: f64 = evidence(f, "accounts_per_second")
        .and_then(|r| r.parse().ok())
        .expect("a fast spray says its rate");
    assert!(rate >= 1.0, "{rate}");
    // Disabled accounts (0x12) are in the failures, but not what made it fast.
    let kinds = evidence(f, "failure_kinds").unwrap();
    assert!(
        kinds.contains("wrong_password=") && kinds.contains("account_state="),
        "{kinds}"
    );
}

/// The recorded Kerberos user enumeration (4768 status 0x6: 46 names that
/// do not exist, tried by one address within a second and a half) is a
/// fast spray of unknown accounts: reported whatever `source_threshold`,
/// and medium, because the accounts it tried do not exist.
#[test]
fn recorded_kerberos_user_enumeration_is_a_medium_fast_spray() {
    use quarry_module_testkit::evidence;
    for params in [&[][..], &[("source_threshold", "100000")][..]] {
        let Some(output) = run_recording(
            "logs/windows/evtx/T1110_kerberos_bruteforce_nonexistent_users_4768_4771.evtx",
            params,
        ) else {
            return;
        };
        assert_eq!(output.findings.len(), 1, "{:#?}", output.findings);
        let f = &output.findings[0];
        assert_eq!(f.rule, RULE_SOURCE_FAILURES_WITHOUT_SUCCESS);
        assert_eq!(f.entity, "ip:10.23.123.11");
        assert_eq!(f.severity, quarry_worker::runtime::types::Severity::Medium);
        let kinds = evidence(f, "failure_kinds").unwrap();
        assert!(kinds.contains("unknown_account=46"), "{kinds}");
        let rate: f64 = evidence(f, "accounts_per_second")
            .and_then(|r| r.parse().ok())
            .expect("a fast spray says its rate");
        assert!(rate >= 10.0, "{rate}");
    }
}

/// Benign-heavy data: the 13 Mordor attack simulations hold a few thousand
/// events of ordinary Windows activity each (logons of users, services and
/// machine accounts among them) and no password guessing. Each recording is
/// a shard; none may raise a high or critical finding (issue 19: a module
/// that says "high" for routine activity teaches hunters to ignore it).
#[test]
fn mordor_recordings_raise_no_high_finding() {
    use quarry_module_testkit as testkit;
    let Some(files) = testkit::shared_files("logs/windows/mordor") else {
        return;
    };
    let mut events = 0;
    for file in &files {
        let shard = testkit::shard_of_files("mordor", "windows", std::slice::from_ref(file));
        let output = testkit::run(quarry_hunt_modules::BRUTEFORCE.wasm, &shard, &[]);
        events += output.events_scanned;
        let loud: Vec<_> = output
            .findings
            .iter()
            .filter(|f| {
                matches!(
                    f.severity,
                    quarry_worker::runtime::types::Severity::High
                        | quarry_worker::runtime::types::Severity::Critical
                )
            })
            .collect();
        assert!(loud.is_empty(), "{}: {loud:#?}", file.display());
    }
    assert!(events > 1_000, "the recordings were read: {events} events");
}
