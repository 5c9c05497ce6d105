//! `quarry query` over local log files: the table in each output format,
//! the plan of `--dry-run`, a parse error pointing at its column, the
//! unknown-field warning, and ten hunts over real attack recordings from
//! ../shared/data whose answers were counted independently (Python over
//! the recordings' JSON exports). And on a local cluster: the same
//! recordings ingested into two workers' shards give, through the `query`
//! hunt module and the coordinator's merge, the tables `--logs` prints.

use std::path::Path;
use std::process::{Command, Output};

fn quarry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(args)
        .env("QUARRY_LOG", "warn")
        .output()
        .expect("quarry runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "quarry failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

const EVENTS: &str = r#"{"@timestamp":"2026-12-01T10:00:00Z","EventID":4625,"TargetUserName":"alice","IpAddress":"10.0.0.5"}
{"@timestamp":"2026-12-01T10:00:01Z","EventID":"4625","TargetUserName":"ALICE","IpAddress":"10.0.0.5"}
{"@timestamp":"2026-12-01T10:00:02Z","EventID":4625,"TargetUserName":"bob, jr","IpAddress":"10.0.0.6"}
{"@timestamp":"2026-12-01T10:00:03Z","EventID":4624,"TargetUserName":"alice","IpAddress":"10.0.0.5"}
{"@timestamp":"2026-12-01T10:00:04Z","EventID":4688,"CommandLine":"nltest /dclist:corp"}
"#;

fn fixture(dir: &Path) -> String {
    let path = dir.join("events.jsonl");
    std::fs::write(&path, EVENTS).expect("write");
    path.display().to_string()
}

#[test]
fn a_query_over_local_files_prints_its_table_as_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = fixture(dir.path());
    let query = "where EventID == 4625 | stats count() as failures, dc(TargetUserName) as users by IpAddress | sort -failures";

    let table = stdout(&quarry(&["query", query, "--logs", &logs]));
    assert_eq!(
        table, "IpAddress  failures  users\n10.0.0.5   2         2\n10.0.0.6   1         1\n",
        "the numeric string \"4625\" equals 4625; dc counts values as written (alice, ALICE)"
    );
    let json = stdout(&quarry(&[
        "query", query, "--logs", &logs, "--output", "json",
    ]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["IpAddress"], "10.0.0.5");
    assert_eq!(rows[0]["failures"], 2);
    let csv = stdout(&quarry(&[
        "query",
        "where EventID == 4625 | fields TargetUserName | head 3",
        "--logs",
        &logs,
        "--output",
        "csv",
    ]));
    assert_eq!(csv, "TargetUserName\nalice\nALICE\n\"bob, jr\"\n");
}

#[test]
fn dry_run_shows_the_fields_and_the_pushdown_without_files() {
    let plan = stdout(&quarry(&[
        "query",
        r#"where EventID == 4688 and CommandLine contains "nltest" | stats count() by Computer"#,
        "--dry-run",
    ]));
    assert!(
        plan.contains("fields read: EventID, CommandLine, Computer"),
        "{plan}"
    );
    assert!(
        plan.contains("nltest"),
        "the contains clause is pushed down: {plan}"
    );
}

#[test]
fn a_parse_error_points_at_its_column_and_fails() {
    let output = quarry(&["query", "where EventID = 4625", "--dry-run"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("where EventID = 4625"), "{stderr}");
    assert!(
        stderr.contains("\n                ^"),
        "caret under `=`: {stderr}"
    );
    assert!(stderr.contains("=="), "the hint names `==`: {stderr}");
    // Without --logs a query runs on the cluster; with none there, the
    // error says so and names --logs.
    let output = quarry(&[
        "query",
        "where EventID == 1",
        "--coordinator",
        "http://127.0.0.1:9",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the coordinator at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(stderr.contains("--logs"), "{stderr}");
}

#[test]
fn a_field_no_event_has_is_a_warning_with_the_closest_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = fixture(dir.path());
    let output = quarry(&[
        "query",
        "where EventId == 4625 | stats count()",
        "--logs",
        &logs,
    ]);
    let table = stdout(&output);
    assert_eq!(table, "count\n0\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no event in the files has the field `EventId`; did you mean EventID"),
        "{stderr}"
    );
}

/// The example hunts of docs/queries.md over real attack recordings
/// (../shared/data/logs/windows/evtx): each answer was counted
/// independently, by a Python script over the recordings' JSON exports,
/// while these queries read the EVTX files.
const REAL_HUNTS: &[(&str, &str, &str)] = &[
    (
        "T1110_openssh_bruteforce_nonexistent_users_4625",
        "where EventID == 4625 | stats count() by TargetUserName",
        "TargetUserName  count\nNOUSER          5\n",
    ),
    (
        "T1078_failed_logon_account_restriction_4625",
        "where EventID == 4625 | stats count() by SubStatus, TargetUserName",
        "SubStatus  TargetUserName  count\n0x0        -               2\n",
    ),
    (
        "T1558.003_kerberoast_rc4_ticket_4769",
        r#"where EventID == 4769 and TicketEncryptionType == "0x17" | stats count() by ServiceName"#,
        "ServiceName   count\nSvc-SQL-DB01  1\n",
    ),
    (
        "T1558.004_asrep_roasting_4768",
        "where EventID == 4768 and PreAuthType == 0 | fields TargetUserName, TicketEncryptionType",
        "TargetUserName  TicketEncryptionType\nadmin-test      0x17\n",
    ),
    (
        "T1021.002_psexec_admin_share_4688_4697_5140_5145",
        "where EventID == 5145 | stats count() by ShareName | sort -count",
        "ShareName   count\n\\\\*\\ADMIN$  5\n\\\\*\\IPC$    4\n",
    ),
    (
        "T1021.002_psexec_admin_share_4688_4697_5140_5145",
        "where EventID == 4697 | fields ServiceName, ServiceFileName",
        "ServiceName  ServiceFileName\nPSEXESVC     %SystemRoot%\\PSEXESVC.exe\n",
    ),
    (
        "T1003.006_mimikatz_dcsync_4662",
        r#"where EventID == 4662 and Properties contains "1131f6aa-9c07-11d1-f79f-00c04fc2dcd2" | stats count() by SubjectUserName | sort -count"#,
        "SubjectUserName  count\nadmmig           2\nROOTDC2$         1\n",
    ),
    (
        "T1110_kerbrute_user_enumeration_4768_4771",
        "where EventID == 4768 | stats dc(TargetUserName) as users, count() by IpAddress",
        "IpAddress            users  count\n::ffff:10.23.123.11  20     20\n",
    ),
    (
        "T1110_kerberos_bruteforce_valid_user_4771",
        r#"where EventID == 4771 and Status == "0x18" | stats count() by TargetUserName"#,
        "TargetUserName  count\nadmin-hacker    54\n",
    ),
    (
        "T1550.002_mimikatz_pass_the_hash_4624",
        "where EventID == 4624 and LogonType == 9 | stats count() by LogonProcessName, AuthenticationPackageName",
        "LogonProcessName  AuthenticationPackageName  count\nseclogo           Negotiate                  1\n",
    ),
];

#[test]
fn ten_hunts_over_real_recordings_give_the_independently_counted_answers() {
    for (recording, query, expected) in REAL_HUNTS {
        let Some(evtx) =
            quarry_testdata::shared_file(&format!("logs/windows/evtx/{recording}.evtx"))
        else {
            eprintln!("SKIPPED: ../shared/data is missing");
            return;
        };
        let table = stdout(&quarry(&[
            "query",
            query,
            "--logs",
            &evtx.display().to_string(),
        ]));
        assert_eq!(table, *expected, "{query} over {recording}");
    }
}

/// `quarry query QUERY` (with `--dry-run` if `dry`) over the `env=lab`
/// shards of the cluster at `url`.
async fn query_on_lab(url: &str, query: &str, dry: bool) -> Output {
    let mut args = vec!["query".to_owned(), query.to_owned()];
    if dry {
        args.push("--dry-run".to_owned());
    }
    args.extend(["--selector", "env=lab", "--coordinator", url].map(str::to_owned));
    quarry_async(args).await
}

/// Runs `quarry ARGS` on a blocking thread (the cluster runs on this one).
async fn quarry_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        quarry(&args)
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_query_module_gives_the_tables_of_local_files() {
    let recordings = [
        "logs/windows/mordor/T1003.004_psexec_reg_lsa_secrets_dump.jsonl",
        "logs/windows/mordor/T1053.005_remote_scheduled_task_create.jsonl",
    ];
    let mut files = Vec::new();
    for relative in recordings {
        let Some(path) = quarry_testdata::shared_file(relative) else {
            return;
        };
        files.push(path.display().to_string());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_dir = dir.path().join("cluster");
    // One recording per worker, through `quarry worker ingest`.
    for (i, file) in files.iter().enumerate() {
        let data_dir = cluster_dir
            .join(format!("worker-{i}"))
            .display()
            .to_string();
        let shard = format!("rec-{i}");
        stdout(&quarry(&[
            "worker",
            "ingest",
            "--data-dir",
            &data_dir,
            "--shard",
            &shard,
            "--label",
            "env=lab",
            file,
        ]));
    }
    let cluster =
        quarry_cli::cluster::LocalCluster::start(quarry_cli::cluster::LocalClusterConfig {
            data_dir: cluster_dir,
            coordinator_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 2,
            slots: 2,
            demo_data: false,
        })
        .await
        .expect("cluster");
    cluster
        .wait_for_workers(std::time::Duration::from_secs(30))
        .await
        .expect("workers");
    let url = cluster.url();

    // The dry run shows the plan and the shards in scope, and uploads nothing.
    let query = "where EventID == 4624 | stats count(), dc(IpAddress) as sources by LogonType | sort LogonType";
    let dry = query_on_lab(&url, query, true).await;
    let dry_text =
        String::from_utf8_lossy(&dry.stdout).into_owned() + &String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{dry_text}");
    assert!(
        dry_text.contains("fields read: EventID, LogonType, IpAddress"),
        "{dry_text}"
    );
    assert!(
        dry_text.contains("is not uploaded"),
        "before the first query the cluster has no `query` module: {dry_text}"
    );

    let queries = [
        query,
        "stats count() by EventID | sort -count, EventID | head 8",
        r#"where EventID == 4688 or EventID == 1 | rare 4 Image"#,
        r#"where CommandLine contains "reg" | fields _time, Hostname, CommandLine | head 5"#,
    ];
    for (n, query) in queries.iter().enumerate() {
        let mut local = vec!["query".to_owned(), (*query).to_owned(), "--logs".to_owned()];
        local.extend(files.iter().cloned());
        let want = stdout(&quarry_async(local).await);
        let on_cluster = query_on_lab(&url, query, false).await;
        let stderr = String::from_utf8_lossy(&on_cluster.stderr).into_owned();
        let got = stdout(&on_cluster);
        assert_eq!(got, want, "{query}: cluster vs --logs\n{stderr}");
        assert!(stderr.contains("2 shards"), "{stderr}");
        if n == 0 {
            assert!(stderr.contains("uploading the `query` module"), "{stderr}");
        } else {
            assert!(!stderr.contains("uploading"), "uploaded once: {stderr}");
        }
    }

    // A misspelt field: the workers' field statistics name the closest.
    let misspelt = query_on_lab(&url, "stats count() by Hostnme", false).await;
    let stderr = String::from_utf8_lossy(&misspelt.stderr).into_owned();
    assert!(
        stderr.contains(
            "warning: no event in the 2 shards in scope has the field `Hostnme`; did you mean Hostname"
        ),
        "{stderr}"
    );

    // After the first query the dry run shows the shards in scope.
    let dry = query_on_lab(&url, query, true).await;
    let dry_text = stdout(&dry);
    assert!(dry_text.contains("dry run: 2 shards"), "{dry_text}");
    assert!(
        dry_text.contains("rec-0") && dry_text.contains("rec-1"),
        "{dry_text}"
    );

    // A question made a recurring detection: each row of a run's table is
    // a finding (rule `query/NAME`) for triage. (The first run is due one
    // interval after the schedule is made.)
    let detection = "where EventID == 4624 | stats count() as logons by LogonType";
    let created = quarry_async(vec![
        "schedule".into(),
        "create".into(),
        "logon-types".into(),
        "--query".into(),
        detection.into(),
        "--severity".into(),
        "low".into(),
        "--every".into(),
        "2s".into(),
        "--selector".into(),
        "env=lab".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await;
    stdout(&created);
    let mut client = quarry_client::Client::connect(&url).await.expect("client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let run = loop {
        // The first run scans every event; later ones only new events.
        let runs = client.schedule_runs("logon-types", 0).await.expect("runs");
        match runs.iter().find(|r| r.number == 1) {
            Some(run) if run.outcome == "completed" => break run.clone(),
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no completed run: {other:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let table = stdout(
        &quarry_async(vec![
            "query".into(),
            detection.into(),
            "--logs".into(),
            files[0].clone(),
            files[1].clone(),
        ])
        .await,
    );
    let rows = table.lines().count() - 1;
    assert!(rows > 0, "{table}");
    let findings = client.findings(&run.hunt_id).await.expect("findings");
    assert_eq!(findings.len(), rows, "one finding per row of\n{table}");
    for finding in &findings {
        assert_eq!(finding.rule, "query/logon-types");
        assert!(
            finding.entity.starts_with("logontype:"),
            "{}",
            finding.entity
        );
    }
    // Both ways of naming what to run is refused, before anything is made.
    let both = quarry_async(vec![
        "schedule".into(),
        "create".into(),
        "x".into(),
        "bruteforce".into(),
        "--query".into(),
        detection.into(),
        "--every".into(),
        "1h".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await;
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("not both"));
    cluster.shutdown().await;
}
