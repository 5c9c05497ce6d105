//! `quarry query` over local log files: the table in each output format,
//! the plan of `--dry-run`, a parse error pointing at its column, the
//! unknown-field warning, and ten hunts over real attack recordings from
//! ../shared/data whose answers were counted independently (Python over
//! the recordings' JSON exports).

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
    // Without --logs a query has nothing to run over.
    let output = quarry(&["query", "where EventID == 1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--logs"));
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
        stderr.contains("no event has the field `EventId`; did you mean EventID"),
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
