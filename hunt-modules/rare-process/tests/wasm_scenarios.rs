//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox over several generated shards, one task per shard, and the task
//! outputs merged by the contract's merge rules exactly as the coordinator
//! merges them: five shards of four Windows hosts each (a day of Sysmon 1
//! and Security 4688 process starts, flat and with nested `EventData`, in
//! the spellings real logs use), with and without one planted binary on one
//! host.

use std::collections::BTreeSet;

use quarry_hunt_modules::RARE_PROCESS;
use quarry_module_testkit::{self as testkit, Rng, evidence as ev};
use quarry_sdk::contract::aggregate::{AggregateValue, Merged, Stack, merge_into};
use quarry_sdk::time::format_rfc3339_ms;
use quarry_worker::runtime::TaskOutput;
use serde_json::{Value, json};

/// 2024-03-04T08:00:00Z.
const START_MS: i64 = 1_709_539_200_000;
const SHARDS: usize = 5;
const HOSTS_PER_SHARD: usize = 4;
/// The planted binary, as logged, and where.
const PLANTED_IMAGE: &str = "C:\\Users\\bob\\AppData\\Roaming\\Microsoft\\Windows\\updater.exe";
const PLANTED_KEY: &str = "c:\\users\\*\\appdata\\roaming\\microsoft\\windows\\updater.exe";
const PLANTED_SHARD: usize = 3;
const PLANTED_HOST: &str = "ws31";

/// A Sysmon process creation, flat (as OTRF and most SIEM exports have it).
fn sysmon(t: i64, host: &str, image: &str, user: &str) -> Value {
    json!({
        "@timestamp": format_rfc3339_ms(t),
        "EventID": 1,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Computer": format!("{host}.corp.example"),
        "Image": image,
        "CommandLine": format!("\"{image}\""),
        "ParentImage": "C:\\Windows\\explorer.exe",
        "User": format!("CORP\\{user}"),
    })
}

/// A Security 4688 with its event data nested, as some JSON exports keep it.
fn security(t: i64, host: &str, image: &str, user: &str) -> Value {
    json!({
        "@timestamp": format_rfc3339_ms(t),
        "EventID": 4688,
        "Channel": "Security",
        "Computer": host.to_uppercase(),
        "EventData": {
            "NewProcessName": image,
            "SubjectUserName": user,
            "SubjectDomainName": "CORP",
            "ParentProcessName": "C:\\Windows\\System32\\services.exe",
            "CommandLine": "",
        },
    })
}

/// One host's day: the common binaries in several spellings, a per-user
/// install under the host's user, network events (not process starts).
fn host_day(rng: &mut Rng, host: &str, user: &str, events: &mut Vec<Value>) {
    let common = [
        "C:\\Windows\\System32\\svchost.exe",
        "%SystemRoot%\\System32\\svchost.exe",
        "\\\\?\\C:\\Windows\\System32\\conhost.exe",
        "C:\\Windows\\explorer.exe",
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        "C:\\PROGRA~2\\Microsoft\\Edge\\Application\\msedge.exe",
        "\\Device\\HarddiskVolume3\\Windows\\System32\\RuntimeBroker.exe",
    ];
    let teams = format!("C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe");
    let mut t = START_MS + rng.below(600_000) as i64;
    for round in 0..30 {
        let image = if round % 7 == 6 {
            teams.as_str()
        } else {
            common[rng.below(common.len() as u64) as usize]
        };
        if rng.below(2) == 0 {
            events.push(sysmon(t, host, image, user));
        } else {
            events.push(security(t, host, image, user));
        }
        // A network connection of a process: not a start, never stacked.
        events.push(json!({
            "@timestamp": format_rfc3339_ms(t + 5),
            "EventID": 3,
            "Computer": host,
            "Image": "C:\\Users\\Public\\netonly.exe",
            "DestinationIp": "93.184.216.34",
        }));
        t += 60_000 + rng.below(600_000) as i64;
    }
    // Every common image at least once, so each is on every host.
    for (i, image) in common.iter().enumerate() {
        events.push(sysmon(t + i as i64, host, image, user));
    }
    events.push(security(t + 50, host, &teams, user));
}

/// The shards' events, planted or not.
fn shards(planted: bool) -> Vec<Vec<Value>> {
    let mut rng = Rng(0x5eed_57ac);
    (0..SHARDS)
        .map(|s| {
            let mut events = Vec::new();
            for h in 0..HOSTS_PER_SHARD {
                let host = format!("ws{s}{h}");
                let user = format!("user{s}{h}");
                host_day(&mut rng, &host, &user, &mut events);
            }
            // An admin tool on one host of shards 0, 2 and 4: on one host
            // in each shard, on three of the hunt. Not in a user-writable
            // place, so no shard reports it, and the merge makes it common.
            if s % 2 == 0 {
                events.push(sysmon(
                    START_MS + 3_600_000,
                    &format!("ws{s}0"),
                    "C:\\Program Files\\Sysinternals\\procexp64.exe",
                    "admin",
                ));
            }
            if planted && s == PLANTED_SHARD {
                for k in 0..3 {
                    events.push(sysmon(
                        START_MS + 5 * 3_600_000 + k * 900_000,
                        PLANTED_HOST,
                        PLANTED_IMAGE,
                        "bob",
                    ));
                }
            }
            events.sort_by_key(|e| {
                e["@timestamp"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_default()
            });
            events
        })
        .collect()
}

/// Runs the module over every shard, one task each.
fn run_all(planted: bool) -> Vec<TaskOutput> {
    shards(planted)
        .iter()
        .enumerate()
        .map(|(i, events)| {
            let shard = testkit::shard_of_events(&format!("win-{i}"), "windows", events);
            let output = testkit::run(RARE_PROCESS.wasm, &shard, &[]);
            assert_eq!(output.events_scanned, events.len() as u64);
            let starts = events
                .iter()
                .filter(|e| e["EventID"] == 1 || e["EventID"] == 4688)
                .count() as u64;
            assert_eq!(
                output.events_matched, starts,
                "shard {i}: the prefilter passes process starts only"
            );
            output
        })
        .collect()
}

/// The task outputs' aggregates merged as the coordinator merges them.
fn merged_stack(outputs: &[TaskOutput]) -> Stack {
    let mut merged = Merged::new();
    for output in outputs {
        for aggregate in &output.aggregates {
            merge_into(&mut merged, aggregate.clone()).expect("one kind per name");
        }
    }
    match merged.remove("rare_process_images") {
        Some(AggregateValue::Stack(stack)) => stack,
        other => panic!("the stack aggregate is missing: {other:?}"),
    }
}

#[test]
fn planted_binary_on_one_host_is_in_the_merged_rare_tail() {
    let outputs = run_all(true);
    let stack = merged_stack(&outputs);
    let rare: Vec<(&str, Vec<&str>)> = stack
        .rare()
        .into_iter()
        .map(|(image, entry)| (image, entry.hosts.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(rare, [(PLANTED_KEY, vec![PLANTED_HOST])]);
    assert_eq!(stack.entries[PLANTED_KEY].events, 3);
    // The common binaries, whatever their spelling, are one value each and
    // common: normalisation lines them up across hosts and log sources.
    for image in [
        "c:\\windows\\system32\\svchost.exe",
        "c:\\windows\\system32\\conhost.exe",
        "c:\\windows\\system32\\runtimebroker.exe",
        "c:\\program files (x86)\\microsoft\\edge\\application\\msedge.exe",
        "c:\\users\\*\\appdata\\local\\microsoft\\teams\\current\\teams.exe",
        "c:\\program files\\sysinternals\\procexp64.exe",
    ] {
        assert!(
            stack.entries.get(image).is_some_and(|e| e.common),
            "{image}: {:?}",
            stack.entries.get(image)
        );
    }
    let values: BTreeSet<&str> = stack.entries.keys().map(String::as_str).collect();
    assert!(
        !values.iter().any(|v| v.contains("netonly")),
        "network events are not process starts: {values:?}"
    );
    assert_eq!(stack.max_hosts, 2);

    // Only the planted shard reports, and only the planted binary.
    for (i, output) in outputs.iter().enumerate() {
        if i == PLANTED_SHARD {
            assert_eq!(output.findings.len(), 1, "{:#?}", output.findings);
            let f = &output.findings[0];
            assert_eq!(f.rule, "rare-process/single-host-user-writable");
            assert_eq!(f.entity, format!("host:{PLANTED_HOST}"));
            assert_eq!(ev(f, "image"), Some(PLANTED_KEY));
            assert_eq!(ev(f, "logged_image"), Some(PLANTED_IMAGE));
            assert_eq!(ev(f, "location"), Some("a user's AppData"));
            assert_eq!(ev(f, "starts"), Some("3"));
            assert_eq!(f.offsets.len(), 3);
        } else {
            assert!(
                output.findings.is_empty(),
                "shard {i}: {:#?}",
                output.findings
            );
        }
    }
}

#[test]
fn benign_fleet_has_no_rare_binary() {
    let outputs = run_all(false);
    let stack = merged_stack(&outputs);
    assert!(stack.rare().is_empty(), "{:#?}", stack.rare());
    assert!(stack.common_values() >= 8, "{}", stack.common_values());
    for (i, output) in outputs.iter().enumerate() {
        assert!(
            output.findings.is_empty(),
            "shard {i}: {:#?}",
            output.findings
        );
    }
    // Each shard alone sees the admin tool on one host: only the merge
    // across shards shows it is not rare, which is what the stack is for.
    let mut alone = Merged::new();
    for aggregate in &outputs[0].aggregates {
        merge_into(&mut alone, aggregate.clone()).expect("one kind per name");
    }
    let Some(AggregateValue::Stack(first)) = alone.get("rare_process_images") else {
        panic!("the stack aggregate is missing")
    };
    let rare_in_one: Vec<&str> = first.rare().into_iter().map(|(v, _)| v).collect();
    assert_eq!(
        rare_in_one,
        ["c:\\program files\\sysinternals\\procexp64.exe"]
    );
}

#[test]
fn a_lower_threshold_makes_the_admin_tool_rare_too() {
    // With max_hosts=3 the tool (3 hosts) is in the tail as well: the
    // threshold travels with the partials and the merge applies it.
    let events = shards(false);
    let mut merged = Merged::new();
    for (i, events) in events.iter().enumerate() {
        let shard = testkit::shard_of_events(&format!("win-{i}"), "windows", events);
        let output = testkit::run(RARE_PROCESS.wasm, &shard, &[("max_hosts", "3")]);
        for aggregate in output.aggregates {
            merge_into(&mut merged, aggregate).expect("one kind per name");
        }
    }
    let Some(AggregateValue::Stack(stack)) = merged.get("rare_process_images") else {
        panic!("the stack aggregate is missing")
    };
    let rare: Vec<&str> = stack.rare().into_iter().map(|(v, _)| v).collect();
    assert_eq!(rare, ["c:\\program files\\sysinternals\\procexp64.exe"]);
}
