//! `quarry bench sigma` as run from the command line, small: two rule
//! files (one holds a rule and a correlation over it, one has a log source
//! ingest cannot carry) given twice each, over a three-event log; the report
//! names the loaded and refused counts, the refusal's reason, the events
//! and the rate lines. Timings are never asserted. Bad input fails before any module is compiled, naming
//! the cause.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WHOAMI: &str = r"title: Whoami Execution
id: 11111111-2222-3333-4444-555555555555
name: whoami
status: test
author: Someone
level: medium
tags: [attack.discovery, attack.t1033]
logsource: {category: process_creation, product: windows}
detection:
    selection:
        Image|endswith: '\whoami.exe'
    condition: selection
";

const MACOS: &str = r"title: macOS whoami
id: 77777777-2222-3333-4444-555555555555
logsource: {category: process_creation, product: macos}
detection:
    selection:
        Image|endswith: '/whoami'
    condition: selection
";

const CORRELATION: &str = r"title: Many whoami
id: 66666666-2222-3333-4444-555555555555
correlation:
    type: event_count
    rules: [whoami]
    group-by: [User]
    timespan: 1h
    condition: {gte: 10}
";

fn quarry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["bench", "sigma"])
        .args(args)
        .output()
        .expect("run quarry")
}

fn rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(rules.join("windows")).expect("rules dir");
    // A correlation and its base rule share a file, as SigmaHQ ships them:
    // each replica's correlation refers to its own copy of the rule.
    std::fs::write(
        rules.join("windows/proc_whoami.yml"),
        format!("{WHOAMI}---\n{CORRELATION}"),
    )
    .expect("write rule");
    std::fs::write(rules.join("windows/macos_whoami.yml"), MACOS).expect("write rule");
    rules
}

/// Three Sysmon process creations, one of them `whoami.exe`.
fn logs(dir: &Path) -> PathBuf {
    let event = |minute: u32, image: &str| {
        format!(
            r#"{{"@timestamp":"2024-03-01T10:{minute:02}:00.000Z","Channel":"Microsoft-Windows-Sysmon/Operational","EventID":1,"Image":"C:\\Windows\\System32\\{image}","CommandLine":"{image}","Computer":"ws01.corp.local","User":"CORP\\alice"}}"#
        )
    };
    let lines = [
        event(0, "cmd.exe"),
        event(1, "whoami.exe"),
        event(2, "notepad.exe"),
    ];
    let path = dir.join("sysmon.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write logs");
    path
}

fn line<'a>(report: &'a str, start: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{report}"))
}

#[test]
fn bench_sigma_reports_rules_events_and_rates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = rules(dir.path());
    let logs = logs(dir.path());
    let output = quarry(&[
        "--rules",
        &rules.display().to_string(),
        "--logs",
        &logs.display().to_string(),
        "--replicate",
        "2",
    ]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(line(&report, "quarry bench sigma:").contains("sigma module"));
    assert!(
        line(&report, "rule files").contains("2 read from"),
        "{report}"
    );
    assert!(
        line(&report, "replicated").contains("2 times") && report.contains("4 rules given"),
        "{report}"
    );
    assert!(
        line(&report, "rules loaded").ends_with(" 2 (and 2 correlations)"),
        "{report}"
    );
    assert!(line(&report, "rules refused").ends_with(" 2"), "{report}");
    let reason = line(&report, "2  unmapped logsource [product:macos");
    assert!(reason.contains("macos_whoami.yml"), "{report}");
    assert!(
        line(&report, "events").contains("3 in 1 log files"),
        "{report}"
    );
    for rate in ["sigma", "host-only", "no-op module"] {
        assert!(line(&report, rate).contains("events/s"), "{report}");
    }
    assert!(line(&report, "sigma ").contains("goal >="), "{report}");
    assert!(
        line(&report, "per event x rule").contains(" ns ("),
        "{report}"
    );
    assert!(line(&report, "module compile").contains(" s ("), "{report}");
    assert!(line(&report, "module init").contains(" s ("), "{report}");
    // One whoami, matched by both copies of the rule, whose findings the
    // correlations over them silence (no `generate: true`); the matches
    // are counted all the same.
    assert!(
        line(&report, "findings").contains("0 (0 dropped")
            && report.contains("2 event x rule matches"),
        "{report}"
    );
}

#[test]
fn bench_sigma_names_what_is_wrong_with_its_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = rules(dir.path());
    let rules = rules.display().to_string();

    let missing = dir.path().join("no-such-logs");
    let output = quarry(&["--rules", &rules, "--logs", &missing.display().to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--logs") && stderr.contains("no-such-logs"),
        "{stderr}"
    );

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    let output = quarry(&["--rules", &rules, "--logs", &empty.display().to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("hold no events"), "{stderr}");

    let output = quarry(&["--rules", &rules, "--replicate", "0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--replicate"), "{stderr}");
}
