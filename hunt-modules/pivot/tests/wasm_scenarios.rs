//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox over one shard ingested by the worker's own readers from files
//! in four formats: Windows events as JSON lines (a Security 4624 in the
//! nested shape of an evtx conversion, Sysmon 1s flat as the Mordor data
//! sets have them, forwarded by a collector), an auth.log, and a Zeek
//! `conn.log` in Zeek's TSV format. Every pivot must report exactly the
//! events that name its entity, one finding each, with the right evidence,
//! and nothing for the look-alikes planted beside them (`WS10`, `alice2`,
//! `10.20.1.45`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use quarry_hunt_modules::PIVOT;
use quarry_module_testkit::{self as testkit, evidence as ev};
use quarry_sdk::contract::aggregate::AggregateValue;
use quarry_worker::runtime::TaskOutput;
use quarry_worker::runtime::types::{Finding, Severity};
use serde_json::json;

const ATTACKER: &str = "10.20.1.44";

fn windows_jsonl() -> String {
    let events = [
        // 0: a network logon to the file server from WS07 as CORP\alice,
        // as an evtx conversion writes it (nested).
        json!({"Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing",
                                             "Guid": "54849625-5478-4994-A5BA-3E3B0328C30D"}},
                "EventID": 4624, "Version": 2, "Level": 0, "Task": 12544,
                "TimeCreated": {"#attributes": {"SystemTime": "2024-03-04T08:00:01.000000Z"}},
                "EventRecordID": 1001, "Channel": "Security",
                "Computer": "SRV-FS01.corp.example", "Security": null
            },
            "EventData": {
                "SubjectUserSid": "S-1-0-0", "SubjectUserName": "-", "SubjectDomainName": "-",
                "TargetUserSid": "S-1-5-21-1-2-3-1104", "TargetUserName": "alice",
                "TargetDomainName": "CORP", "LogonType": 3, "LogonProcessName": "NtLmSsp ",
                "AuthenticationPackageName": "NTLM", "WorkstationName": "WS07",
                "IpAddress": "::ffff:10.20.1.44", "IpPort": "51234"
            }
        }}),
        // 1: the same server, another user from another workstation.
        json!({"Event": {
            "System": {
                "EventID": 4624, "Channel": "Security", "Computer": "SRV-FS01.corp.example",
                "TimeCreated": {"#attributes": {"SystemTime": "2024-03-04T08:00:02.000000Z"}}
            },
            "EventData": {
                "TargetUserName": "bob", "TargetDomainName": "CORP", "LogonType": 3,
                "WorkstationName": "WS10", "IpAddress": "::ffff:10.20.1.45", "IpPort": "51235"
            }
        }}),
        // 2: Sysmon 1 on WS07, flat and forwarded through a collector
        // (`host`) as in the Mordor data sets.
        json!({
            "@timestamp": "2024-03-04T08:00:03.000Z", "host": "wec.corp.example",
            "Hostname": "WS07.corp.example", "SourceName": "Microsoft-Windows-Sysmon",
            "Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
            "UtcTime": "2024-03-04 08:00:03.000", "ProcessId": "4242",
            "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd.exe /c whoami /all",
            "CurrentDirectory": "C:\\Users\\alice\\", "User": "CORP\\alice",
            "ParentImage": "C:\\Windows\\explorer.exe",
            "Hashes": "SHA1=0123456789ABCDEF0123456789ABCDEF01234567,MD5=0123456789ABCDEF0123456789ABCDEF"
        }),
        // 3: Sysmon 1 on WS10 by alice2.
        json!({
            "@timestamp": "2024-03-04T08:00:04.000Z", "host": "wec.corp.example",
            "Hostname": "WS10.corp.example", "SourceName": "Microsoft-Windows-Sysmon",
            "Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
            "Image": "C:\\Windows\\System32\\notepad.exe", "CommandLine": "notepad.exe",
            "User": "CORP\\alice2", "ParentImage": "C:\\Windows\\explorer.exe"
        }),
    ];
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// 4: alice over ssh from the attacker's address; 5: someone else from
/// elsewhere; 6: cron on WS07 itself (the syslog host).
const AUTH_LOG: &str = "\
2024-03-04T08:00:05.000000+00:00 web01 sshd[4242]: Accepted password for alice from 10.20.1.44 port 51514 ssh2
2024-03-04T08:00:06.000000+00:00 web01 sshd[4243]: Failed password for invalid user admin from 10.20.1.99 port 51515 ssh2
2024-03-04T08:00:07.000000+00:00 ws07 CRON[100]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)
";

/// 7: the attacker to the file server over SMB; 8: a neighbour; 9: RDP
/// back to the attacker's address.
const CONN_LOG: &str = "\
#separator \\x09
#set_separator\t,
#empty_field\t(empty)
#unset_field\t-
#path\tconn
#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state
#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring
1709539208.000000\tCa1\t10.20.1.44\t51300\t10.20.0.5\t445\ttcp\tsmb\t1.5\t4060\t1681\tSF
1709539209.000000\tCa2\t10.20.1.45\t51301\t10.20.0.5\t445\ttcp\tsmb\t1.5\t4060\t1681\tSF
1709539210.000000\tCa3\t10.20.0.9\t51302\t10.20.1.44\t3389\ttcp\t-\t9.0\t100\t200\tS1
";

struct Scenario {
    _dir: tempfile::TempDir,
    shard: testkit::TestShard,
}

fn scenario() -> Scenario {
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<PathBuf> = [
        ("windows.jsonl", windows_jsonl()),
        ("auth.log", AUTH_LOG.to_owned()),
        ("conn.log", CONN_LOG.to_owned()),
    ]
    .into_iter()
    .map(|(name, text)| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    })
    .collect();
    let shard = testkit::shard_of_files("mixed", "lab", &files);
    Scenario { _dir: dir, shard }
}

fn run(scenario: &Scenario, params: &[(&str, &str)]) -> TaskOutput {
    let output = testkit::run(PIVOT.wasm, &scenario.shard, params);
    assert_eq!(output.events_scanned, 10, "every event was ingested");
    // No prefilter: the module sees every event.
    assert_eq!(output.events_matched, 10);
    output
}

fn offsets(output: &TaskOutput) -> Vec<u64> {
    output
        .findings
        .iter()
        .flat_map(|f| f.offsets.iter().copied())
        .collect()
}

fn counts(output: &TaskOutput, name: &str) -> BTreeMap<String, u64> {
    let aggregate = output
        .aggregates
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no aggregate {name}"));
    let AggregateValue::Counts(counts) = &aggregate.value else {
        panic!("{name} is not counts")
    };
    counts.clone()
}

/// Every finding of a pivot is an informational, certain `pivot/event`
/// about the pivot's entity, for one event, at that event's time.
fn check_shape(output: &TaskOutput, entity: &str) {
    for f in &output.findings {
        assert_eq!(f.rule, "pivot/event");
        assert_eq!(f.severity, Severity::Informational);
        assert_eq!(f.confidence, 100);
        assert_eq!(f.entity, entity);
        assert_eq!(f.offsets.len(), 1, "{f:#?}");
        assert!(f.timestamp_ms >= 1_709_539_200_000, "{f:#?}");
        assert_eq!(f.tags, ["pivot"]);
    }
}

fn finding_at(output: &TaskOutput, offset: u64) -> &Finding {
    output
        .findings
        .iter()
        .find(|f| f.offsets == [offset])
        .unwrap_or_else(|| panic!("no finding for event {offset}: {:#?}", output.findings))
}

#[test]
fn a_host_pivot_reports_each_event_naming_the_host() {
    let s = scenario();
    let output = run(&s, &[("entity", "host:WS07.corp.example")]);
    check_shape(&output, "host:ws07");
    // The 4624 naming WS07 as the client, Sysmon on WS07 (not the
    // collector's `host`), and cron on ws07; not WS10, not web01.
    assert_eq!(offsets(&output), [0, 2, 6], "{:#?}", output.findings);

    let logon = finding_at(&output, 0);
    assert_eq!(
        logon.title,
        "Security 4624: CORP\\alice logon type 3 from ::ffff:10.20.1.44"
    );
    assert_eq!(logon.timestamp_ms, 1_709_539_201_000);
    assert_eq!(ev(logon, "matched_field"), Some("WorkstationName"));
    assert_eq!(ev(logon, "matched_value"), Some("WS07"));
    assert_eq!(ev(logon, "Computer"), Some("SRV-FS01.corp.example"));
    assert_eq!(ev(logon, "EventID"), Some("4624"));
    assert_eq!(ev(logon, "Channel"), Some("Security"));
    assert_eq!(ev(logon, "LogonType"), Some("3"));
    assert_eq!(ev(logon, "TargetUserName"), Some("alice"));
    assert_eq!(ev(logon, "IpAddress"), Some("::ffff:10.20.1.44"));
    assert_eq!(ev(logon, "source"), Some("lab"));

    let process = finding_at(&output, 2);
    assert_eq!(process.title, "Sysmon 1: cmd.exe /c whoami /all");
    assert_eq!(ev(process, "matched_field"), Some("Hostname"));
    assert_eq!(ev(process, "matched_value"), Some("WS07.corp.example"));
    assert_eq!(ev(process, "Hostname"), Some("WS07.corp.example"));
    assert_eq!(ev(process, "Image"), Some("C:\\Windows\\System32\\cmd.exe"));
    assert_eq!(ev(process, "CommandLine"), Some("cmd.exe /c whoami /all"));
    assert_eq!(
        ev(process, "ParentImage"),
        Some("C:\\Windows\\explorer.exe")
    );
    assert_eq!(ev(process, "User"), Some("CORP\\alice"));
    assert_eq!(ev(process, "host"), None, "the collector is not the host");

    let cron = finding_at(&output, 6);
    assert!(
        cron.title
            .starts_with("syslog CRON: pam_unix(cron:session)"),
        "{}",
        cron.title
    );
    assert_eq!(ev(cron, "matched_field"), Some("host"));
    assert_eq!(ev(cron, "program"), Some("CRON"));

    let events = counts(&output, "pivot_events");
    assert_eq!(events["matched"], 3);
    assert_eq!(events["reported"], 3);
    assert_eq!(events["not_reported"], 0);
    assert_eq!(
        counts(&output, "pivot_events_by_field"),
        BTreeMap::from([
            ("Hostname".to_owned(), 1),
            ("WorkstationName".to_owned(), 1),
            ("host".to_owned(), 1)
        ])
    );
}

#[test]
fn a_user_pivot_matches_with_or_without_the_domain() {
    let s = scenario();
    for entity in ["user:alice", "user:CORP\\Alice", "user:alice@corp.example"] {
        let output = run(&s, &[("entity", entity)]);
        let expected = format!("user:{}", entity.trim_start_matches("user:").to_lowercase());
        check_shape(&output, &expected);
        // The 4624 (TargetUserName), Sysmon's `CORP\alice` (User) and sshd's
        // `alice`; not `alice2`, not bob, not the invalid user.
        assert_eq!(
            offsets(&output),
            [0, 2, 4],
            "{entity}: {:#?}",
            output.findings
        );
        assert_eq!(
            ev(finding_at(&output, 0), "matched_field"),
            Some("TargetUserName")
        );
        assert_eq!(ev(finding_at(&output, 2), "matched_field"), Some("User"));
        let ssh = finding_at(&output, 4);
        assert_eq!(ev(ssh, "matched_field"), Some("user"));
        assert_eq!(
            ssh.title,
            "syslog sshd: Accepted password for alice from 10.20.1.44 port 51514 ssh2"
        );
        assert_eq!(ev(ssh, "host"), Some("web01"));
        assert_eq!(ev(ssh, "source_ip"), Some(ATTACKER));
        assert_eq!(ev(ssh, "sshd_event"), Some("accepted_password"));
    }
    // Another domain is another account.
    let output = run(&s, &[("entity", "user:OTHER\\alice")]);
    assert_eq!(offsets(&output), [4], "only sshd's alice names no domain");
}

#[test]
fn an_ip_pivot_matches_every_spelling_and_direction() {
    let s = scenario();
    let output = run(&s, &[("entity", &format!("ip:::ffff:{ATTACKER}"))]);
    check_shape(&output, &format!("ip:{ATTACKER}"));
    // The 4624's IPv4-mapped IpAddress, sshd's source, the Zeek connection
    // from it and the one to it; not .45, not .99.
    assert_eq!(offsets(&output), [0, 4, 7, 9], "{:#?}", output.findings);
    assert_eq!(
        ev(finding_at(&output, 0), "matched_field"),
        Some("IpAddress")
    );
    assert_eq!(
        ev(finding_at(&output, 4), "matched_field"),
        Some("source_ip")
    );

    let smb = finding_at(&output, 7);
    assert_eq!(
        smb.title,
        "zeek conn: 10.20.1.44 -> 10.20.0.5:445/tcp (smb)"
    );
    assert_eq!(smb.timestamp_ms, 1_709_539_208_000);
    // The Zeek field first, then the canonical host the worker derived
    // from it.
    assert_eq!(ev(smb, "matched_field"), Some("id.orig_h"));
    assert_eq!(ev(smb, "matched_fields"), Some("id.orig_h, host"));
    assert_eq!(ev(smb, "_path"), Some("conn"));
    assert_eq!(ev(smb, "id.orig_h"), Some(ATTACKER));
    assert_eq!(ev(smb, "id.resp_h"), Some("10.20.0.5"));
    assert_eq!(ev(smb, "id.resp_p"), Some("445"));
    assert_eq!(ev(smb, "proto"), Some("tcp"));
    assert_eq!(ev(smb, "service"), Some("smb"));

    let rdp = finding_at(&output, 9);
    assert_eq!(ev(rdp, "matched_field"), Some("id.resp_h"));
    assert_eq!(rdp.title, "zeek conn: 10.20.0.9 -> 10.20.1.44:3389/tcp");
}

#[test]
fn pivots_on_processes_and_hashes() {
    let s = scenario();
    let output = run(&s, &[("entity", "process:cmd.exe")]);
    assert_eq!(offsets(&output), [2]);
    assert_eq!(ev(&output.findings[0], "matched_field"), Some("Image"));
    let output = run(&s, &[("entity", "hash:0123456789abcdef0123456789abcdef")]);
    assert_eq!(offsets(&output), [2]);
    assert_eq!(ev(&output.findings[0], "matched_field"), Some("Hashes"));
    let output = run(&s, &[("entity", "host:ws1")]);
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
}

#[test]
fn max_events_cuts_the_timeline_and_says_so() {
    let s = scenario();
    let output = run(
        &s,
        &[("entity", &format!("ip:{ATTACKER}")), ("max_events", "2")],
    );
    let rules: Vec<&str> = output.findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, ["pivot/event", "pivot/event", "pivot/truncated"]);
    assert_eq!(offsets(&output), [0, 4]);
    let cut = &output.findings[2];
    assert_eq!(cut.entity, format!("ip:{ATTACKER}"));
    assert_eq!(ev(cut, "not_reported"), Some("2"));
    assert_eq!(ev(cut, "max_events"), Some("2"));
    assert_eq!(
        ev(cut, "first_not_reported"),
        Some("2024-03-04T08:00:08.000Z")
    );
    assert_eq!(
        ev(cut, "last_not_reported"),
        Some("2024-03-04T08:00:10.000Z")
    );
    let events = counts(&output, "pivot_events");
    assert_eq!(
        (
            events["matched"],
            events["reported"],
            events["not_reported"]
        ),
        (4, 2, 2)
    );
    assert!(
        output.log.iter().any(|l| l.contains("max_events reached")),
        "{:?}",
        output.log
    );
}

#[test]
fn a_missing_or_malformed_entity_fails_the_task_with_the_accepted_forms() {
    let s = scenario();
    let runtime_error = |params: &[(&str, &str)]| {
        // The compiled-module cache the testkit uses, so the module is not
        // compiled again.
        let cache = std::env::current_exe()
            .expect("test binary")
            .parent()
            .expect("deps directory")
            .join("../module-testkit-cache");
        let module = quarry_worker::runtime::Runtime::new(
            1,
            quarry_worker::runtime::RuntimeConfig::default(),
            Some(&cache),
        )
        .expect("runtime");
        let loaded = module
            .load(
                &quarry_worker::runtime::module_digest(PIVOT.wasm),
                PIVOT.wasm,
            )
            .expect("loads");
        let params: Vec<(String, String)> = params
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let task = quarry_worker::runtime::TaskInput {
            params: &params,
            limits: testkit::LIMITS,
            shard: &s.shard.name,
            time_range: None,
            hunt: None,
        };
        module
            .run(
                &loaded,
                &task,
                &s.shard.store,
                &std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            )
            .expect_err("init refuses the parameters")
            .to_string()
    };
    let missing = runtime_error(&[]);
    assert!(
        missing.contains("parameter `entity` is required") && missing.contains("`host:ws07`"),
        "{missing}"
    );
    let malformed = runtime_error(&[("entity", "ip:10.20.1")]);
    assert!(
        malformed.contains("got `ip:10.20.1`: `10.20.1` is not an IP address"),
        "{malformed}"
    );
}
