//! `quarry module test` as a hunter runs it, with the modules the bundle
//! built: findings and aggregates from a shipped module, format detection,
//! malformed records counted, and misbehaving modules failing with their
//! named reason and a non-zero exit.

use quarry_hunt_modules::{BRUTEFORCE, ShippedModule, test_modules};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `module` to `dir` and runs `quarry module test` on it with
/// `--output json`; the exit status and the parsed report.
fn module_test(dir: &Path, module: &ShippedModule, extra: &[&str]) -> (bool, Value) {
    let wasm = dir.join(format!("{}.wasm", module.name));
    std::fs::write(&wasm, module.wasm).expect("write module");
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["module", "test"])
        .arg(&wasm)
        .args(extra)
        .args(["--output", "json"])
        .output()
        .expect("run quarry");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

/// Six failed logons for alice a minute apart, then her success; one broken
/// line.
fn bruteforce_logs(dir: &Path) -> PathBuf {
    let logon = |minute: u32, id: u32| {
        format!(
            r#"{{"@timestamp":"2024-03-01T10:{minute:02}:00.000Z","EventID":{id},"TargetUserName":"alice","TargetDomainName":"CORP","IpAddress":"10.0.0.5","LogonType":3,"Computer":"dc01.corp.local"}}"#
        )
    };
    let mut lines: Vec<String> = (0..6).map(|m| logon(m, 4625)).collect();
    lines.push("{not json".to_owned());
    lines.push(logon(7, 4624));
    let path = dir.join("security.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write logs");
    path
}

fn repo_file(relative: &str) -> PathBuf {
    let cli = std::env::var_os("CARGO_MANIFEST_DIR").expect("run through cargo");
    Path::new(&cli).join("..").join(relative)
}

#[test]
fn shipped_module_reports_findings_aggregates_and_malformed_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = bruteforce_logs(dir.path());
    let (ok, report) = module_test(
        dir.path(),
        &BRUTEFORCE,
        &[
            "--logs",
            &logs.display().to_string(),
            "--params",
            "threshold=5",
        ],
    );
    assert!(ok, "{report}");
    assert_eq!(report["module"], "bruteforce");
    assert_eq!(report["files"][0]["format"], "jsonl");
    assert_eq!(report["events_stored"], 7);
    assert_eq!(report["malformed"], 1);
    assert_eq!(report["malformed_records"][0]["place"], "line 7");
    assert_eq!(report["events_scanned"], 7);
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["rule"], "bruteforce/success-after-failures");
    assert_eq!(findings[0]["entity"], "user:CORP\\alice");
    assert_eq!(
        report["aggregates"]["failures_by_account"]["counts"]["CORP\\alice"],
        6
    );
    assert_eq!(report["failure"], Value::Null);
}

#[test]
fn formats_are_detected_per_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = repo_file("worker/tests/data/auth.log");
    let (ok, report) = module_test(
        dir.path(),
        &test_modules::NOOP,
        &["--logs", &auth.display().to_string()],
    );
    assert!(ok, "{report}");
    assert_eq!(report["files"][0]["format"], "syslog");
    assert!(report["events_stored"].as_u64() > Some(0), "{report}");
}

#[test]
fn failing_modules_exit_non_zero_with_the_named_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = bruteforce_logs(dir.path());
    let logs = logs.display().to_string();
    for (module, extra, kind) in [
        (&test_modules::TRAP_PANIC, vec![], "trap"),
        (
            &test_modules::RUNAWAY_LOOP,
            vec!["--cpu", "200ms"],
            "deadline-exceeded",
        ),
        (
            &test_modules::MEMORY_HOG,
            vec!["--memory-mib", "32"],
            "memory-limit",
        ),
        (
            &BRUTEFORCE,
            vec!["--params", "window=5"],
            "rejected-parameters",
        ),
    ] {
        let mut args = vec!["--logs", logs.as_str()];
        args.extend(extra);
        let (ok, report) = module_test(dir.path(), module, &args);
        assert!(!ok, "{} must fail: {report}", module.name);
        assert_eq!(report["failure"]["kind"], kind, "{report}");
        assert!(
            report["failure"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{report}"
        );
    }
}
