//! The wasm build of the module over a recorded attack simulation of the
//! shared data set (the Mordor Covenant DCSync capture, found through
//! `quarry-testdata`): 869 Sysmon and Security events from two
//! workstations and a domain controller, every one forwarded by a Windows
//! event collector whose name the export put in `host`.
//!
//! The expectation is computed from the recording independently of the
//! module, on the fields where the entities plainly sit (`Hostname`, the
//! logon and subject accounts, Sysmon's `User`, `IpAddress`): every such
//! event must be reported, and every reported event must name the entity
//! in its matched field (no look-alike, no substring).
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use std::collections::BTreeSet;

use quarry_hunt_modules::PIVOT;
use quarry_module_testkit::{self as testkit, evidence as ev};
use quarry_worker::runtime::TaskOutput;
use serde_json::Value;

const RECORDING: &str = "logs/windows/mordor/T1003.006_covenant_dcsync.jsonl";

struct Recording {
    events: Vec<Value>,
    shard: testkit::TestShard,
}

fn recording() -> Option<Recording> {
    let files = testkit::shared_files(RECORDING)?;
    let text = std::fs::read_to_string(&files[0]).expect("read the recording");
    let events: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON event"))
        .collect();
    let shard = testkit::shard_of_files("dcsync", "mordor", &files);
    Some(Recording { events, shard })
}

impl Recording {
    fn run(&self, entity: &str) -> TaskOutput {
        let output = testkit::run(PIVOT.wasm, &self.shard, &[("entity", entity)]);
        // One shard offset per line, in file order.
        assert_eq!(output.events_scanned, self.events.len() as u64);
        for f in &output.findings {
            assert_eq!(f.rule, "pivot/event", "{f:#?}");
            assert_eq!(f.offsets.len(), 1, "{f:#?}");
        }
        output
    }

    /// Offsets of the events for which `mentions` holds.
    fn expected(&self, mentions: impl Fn(&Value) -> bool) -> BTreeSet<u64> {
        (0u64..)
            .zip(&self.events)
            .filter(|(_, e)| mentions(e))
            .map(|(i, _)| i)
            .collect()
    }
}

fn text<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event.get(key).and_then(Value::as_str)
}

fn reported(output: &TaskOutput) -> BTreeSet<u64> {
    output.findings.iter().map(|f| f.offsets[0]).collect()
}

fn check(output: &TaskOutput, expected: &BTreeSet<u64>, names_entity: impl Fn(&str) -> bool) {
    let reported = reported(output);
    assert_eq!(
        reported.len(),
        output.findings.len(),
        "one finding per event"
    );
    let missed: Vec<_> = expected.difference(&reported).collect();
    assert!(missed.is_empty(), "events not reported: {missed:?}");
    for f in &output.findings {
        let value = ev(f, "matched_value").expect("matched_value");
        assert!(
            names_entity(value),
            "event {} matched on {:?} = {value:?}",
            f.offsets[0],
            ev(f, "matched_field")
        );
    }
}

#[test]
fn a_host_of_the_recording_gets_its_events_and_the_collector_none() {
    let Some(recording) = recording() else {
        return;
    };
    let short = |v: &str| v.split('.').next().unwrap_or(v).to_ascii_lowercase();
    let expected =
        recording.expected(|e| text(e, "Hostname").is_some_and(|h| short(h) == "mordordc"));
    assert_eq!(expected.len(), 129, "the recording changed");
    let output = recording.run("host:MORDORDC");
    check(&output, &expected, |v| short(v) == "mordordc");
    assert!(output.findings.iter().all(|f| f.entity == "host:mordordc"));
    // The DC's own events name it in `Hostname`; the title says what each
    // event is.
    let first = &output.findings[0];
    assert_eq!(ev(first, "matched_field"), Some("Hostname"));
    assert_eq!(ev(first, "Hostname"), Some("MORDORDC.theshire.local"));
    assert!(first.title.starts_with("Sysmon ") || first.title.starts_with("Security "));

    // Every event carries the collector's name in `host`: not a mention.
    assert!(
        recording
            .events
            .iter()
            .all(|e| text(e, "host") == Some("wec.internal.cloudapp.net"))
    );
    let output = recording.run("host:wec");
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
}

#[test]
fn a_user_of_the_recording_is_found_in_every_spelling() {
    let Some(recording) = recording() else {
        return;
    };
    let names_pgustavo = |v: &str| {
        let v = v.to_lowercase();
        let v = v.strip_prefix("theshire\\").unwrap_or(&v);
        let v = v.strip_suffix("@theshire.local").unwrap_or(v);
        v == "pgustavo"
    };
    let expected = recording.expected(|e| {
        ["SubjectUserName", "TargetUserName", "User"]
            .iter()
            .any(|k| text(e, k).is_some_and(names_pgustavo))
    });
    assert!(expected.len() >= 20, "the recording changed: {expected:?}");
    let output = recording.run("user:THESHIRE\\pgustavo");
    check(&output, &expected, names_pgustavo);
    // The Kerberos UPN form (`pgustavo@THESHIRE.LOCAL`) is among them.
    assert!(
        output
            .findings
            .iter()
            .any(|f| ev(f, "matched_value") == Some("pgustavo@THESHIRE.LOCAL")),
        "{:#?}",
        output.findings
    );
}

#[test]
fn an_address_of_the_recording_is_found_mapped_or_not() {
    let Some(recording) = recording() else {
        return;
    };
    let is_address = |v: &str| v.trim_start_matches("::ffff:") == "172.18.39.5";
    let expected = recording.expected(|e| text(e, "IpAddress").is_some_and(is_address));
    assert_eq!(expected.len(), 4, "the recording changed");
    let output = recording.run("ip:172.18.39.5");
    check(&output, &expected, is_address);
    assert!(
        output
            .findings
            .iter()
            .any(|f| ev(f, "matched_value") == Some("::ffff:172.18.39.5"))
    );
}
