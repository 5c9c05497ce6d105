//! Recurring hunts end to end, on a real coordinator and worker on
//! loopback: a `rare-process` schedule over three days of process starts.
//! Each run scans only the events ingested since the previous one (by the
//! shard's ingest offsets) and compares them with the merged image stacks
//! of the earlier runs (`quarry:hunt/history`), so the binary first seen on
//! day 3 is reported and the ones seen since day 1 are not.

use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::RARE_PROCESS;
use quarry_proto::v1;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SHARD: &str = "fleet";
const RULE_FIRST_SEEN: &str = "rare-process/first-seen-on-fleet";

/// Sysmon process starts on three hosts on `day` (1-based), common
/// binaries on every host, plus `extra` images on one host each.
fn day(day: u32, extra: &[(&str, &str)]) -> String {
    let common = [
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\explorer.exe",
        "C:\\Windows\\System32\\cmd.exe",
    ];
    let mut lines = Vec::new();
    for (h, host) in ["ws1", "ws2", "ws3"].iter().enumerate() {
        for (i, image) in common.iter().enumerate() {
            lines.push(serde_json::json!({
                "@timestamp": format!("2026-11-{:02}T{:02}:{:02}:00Z", 19 + day, 8 + h, i),
                "EventID": 1, "Computer": host, "Image": image, "User": "CORP\\alice",
                "CommandLine": image, "ParentImage": "C:\\Windows\\explorer.exe",
            }));
        }
    }
    for (i, (host, image)) in extra.iter().enumerate() {
        lines.push(serde_json::json!({
            "@timestamp": format!("2026-11-{:02}T15:{:02}:00Z", 19 + day, i),
            "EventID": 1, "Computer": host, "Image": image, "User": "CORP\\bob",
            "CommandLine": image, "ParentImage": "C:\\Windows\\explorer.exe",
        }));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Waits until the schedule has no run going and its last run is number
/// `run`; returns the schedule.
async fn wait_for_run(client: &mut Client, name: &str, run: u64) -> v1::Schedule {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let schedule = client.schedule(name).await.expect("schedule");
        let last = schedule.last_run.as_ref().map_or(0, |r| r.number);
        if schedule.active_hunt_id.is_empty() && last >= run {
            return schedule;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} of {name} did not end: {schedule:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resumes the paused schedule until it has run once more (it runs at
/// once: its due times passed while paused), pauses it again; returns it
/// and the runs after run `before`.
async fn next_runs(
    client: &mut Client,
    name: &str,
    before: u64,
) -> (v1::Schedule, Vec<v1::ScheduleRun>) {
    client
        .set_schedule_paused(name, false)
        .await
        .expect("resume");
    wait_for_run(client, name, before + 1).await;
    client.set_schedule_paused(name, true).await.expect("pause");
    let schedule = wait_for_run(client, name, before + 1).await;
    let runs = client.schedule_runs(name, 0).await.expect("runs");
    let after = runs.into_iter().filter(|r| r.number > before).collect();
    (schedule, after)
}

/// Findings of a run by rule, with the image each names.
async fn findings_of(client: &mut Client, hunt: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = client
        .findings(hunt)
        .await
        .expect("findings")
        .into_iter()
        .map(|f| {
            let image = f
                .evidence
                .iter()
                .find(|e| e.key == "image")
                .map(|e| e.value.clone())
                .unwrap_or_default();
            (f.rule, image)
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_rare_process_reports_the_binary_first_seen_on_day_three() {
    let dir = tempfile::tempdir().expect("tempdir");
    let day1 = day(1, &[("ws2", "C:\\Tools\\inventory.exe")]);
    let cluster = quarry_tests::one_worker(dir.path(), SHARD, &day1, None).await;
    let mut client = Client::connect(&cluster.url).await.expect("client");
    client
        .upload_module(
            RARE_PROCESS.name,
            RARE_PROCESS.version,
            "",
            RARE_PROCESS.wasm,
        )
        .await
        .expect("upload");

    let template = HuntRequest::new("rare-process")
        .shard(SHARD)
        .param("report_user_writable", "false")
        .into_proto();
    let name = "daily-rare";
    let create = |every_ms: u64| v1::CreateScheduleRequest {
        name: name.into(),
        template: Some(template.clone()),
        trigger: Some(v1::ScheduleTrigger {
            trigger: Some(v1::schedule_trigger::Trigger::EveryMs(every_ms)),
        }),
        missed: v1::MissedRunPolicy::RunOnce as i32,
        ..Default::default()
    };
    // Refused: a bad name, an interval below a second, a missing trigger.
    let mut bad = create(1_000);
    bad.name = "Daily Rare".into();
    let err = client.create_schedule(bad).await.expect_err("bad name");
    assert!(err.to_string().contains("a-z, 0-9"), "{err}");
    let err = client
        .create_schedule(create(10))
        .await
        .expect_err("too fast");
    assert!(err.to_string().contains("at least 1000 ms"), "{err}");

    // Day 1: the first run has no history, so nothing is new to it.
    let created = client.create_schedule(create(1_000)).await.expect("create");
    assert_eq!(created.trigger_text, "every 1s");
    let err = client
        .create_schedule(create(1_000))
        .await
        .expect_err("taken");
    assert!(err.to_string().contains("exists"), "{err}");
    let schedule = wait_for_run(&mut client, name, 1).await;
    client.set_schedule_paused(name, true).await.expect("pause");
    let schedule = wait_for_run(&mut client, name, schedule.runs).await;
    let runs = client.schedule_runs(name, 0).await.expect("runs");
    let first = runs.last().expect("run 1");
    assert_eq!((first.number, first.outcome.as_str()), (1, "completed"));
    assert_eq!(first.events_scanned, 10);
    assert!(findings_of(&mut client, &first.hunt_id).await.is_empty());
    let watermark = |s: &v1::Schedule| {
        s.watermarks
            .iter()
            .map(|w| (w.shard.clone(), w.offset))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        watermark(&schedule),
        BTreeMap::from([(SHARD.to_owned(), 10)])
    );
    // Runs after the first with nothing new scanned nothing.
    assert!(runs.iter().rev().skip(1).all(|r| r.events_scanned == 0));

    // Day 2: the same binaries again.
    let store = cluster.worker.store().clone();
    let ingest = |text: String| {
        store
            .ingest_jsonl(SHARD, BTreeMap::new(), text.as_bytes())
            .expect("ingest");
    };
    ingest(day(2, &[("ws3", "C:\\Tools\\inventory.exe")]));
    let (schedule, day2) = next_runs(&mut client, name, schedule.runs).await;
    assert_eq!(
        day2.iter().map(|r| r.events_scanned).sum::<u64>(),
        10,
        "only day 2's events: {day2:?}"
    );
    for run in &day2 {
        assert!(findings_of(&mut client, &run.hunt_id).await.is_empty());
    }
    assert_eq!(
        watermark(&schedule),
        BTreeMap::from([(SHARD.to_owned(), 20)])
    );

    // Day 3: a binary no earlier run saw, beside the known ones.
    ingest(day(
        3,
        &[
            ("ws1", "C:\\Tools\\inventory.exe"),
            ("ws1", "C:\\Users\\eve\\AppData\\Local\\Temp\\updater.exe"),
        ],
    ));
    let (schedule, runs) = next_runs(&mut client, name, schedule.runs).await;
    let mut day3 = Vec::new();
    for run in &runs {
        day3.extend(findings_of(&mut client, &run.hunt_id).await);
    }
    assert_eq!(
        day3,
        [(
            RULE_FIRST_SEEN.to_owned(),
            "c:\\users\\*\\appdata\\local\\temp\\updater.exe".to_owned()
        )]
    );
    assert!(schedule.baseline_runs >= 2, "{schedule:?}");
    // The finding went to triage like any hunt's.
    let cases = client
        .all_cases(
            v1::ListCasesRequest {
                kinds: "alerts".into(),
                state: "all".into(),
                ..Default::default()
            },
            0,
        )
        .await
        .expect("cases");
    assert!(
        cases.cases.iter().any(|c| c.title.contains("updater.exe")),
        "{:?}",
        cases.cases.iter().map(|c| &c.title).collect::<Vec<_>>()
    );

    client.delete_schedule(name).await.expect("delete");
    let err = client.schedule(name).await.expect_err("gone");
    assert!(err.to_string().contains("no schedule named"), "{err}");
    cluster.shutdown().await;
}
