//! `quarry module test` as a hunter runs it, with the modules the bundle
//! built: findings and aggregates from a shipped module, format detection,
//! malformed records counted, and misbehaving modules failing with their
//! named reason and a non-zero exit.

use quarry_hunt_modules::{BRUTEFORCE, ShippedModule, test_modules};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `module` to `dir` and runs `quarry module test` on it with
/// `--output json`, its compiled-module cache in `dir`; the exit status and
/// the parsed report.
fn module_test(dir: &Path, module: &ShippedModule, extra: &[&str]) -> (bool, Value) {
    module_test_cached(
        dir,
        module,
        extra,
        &dir.join("module-cache").display().to_string(),
    )
}

/// As [`module_test`], with `QUARRY_MODULE_CACHE` set to `cache`.
fn module_test_cached(
    dir: &Path,
    module: &ShippedModule,
    extra: &[&str],
    cache: &str,
) -> (bool, Value) {
    let wasm = dir.join(format!("{}.wasm", module.name));
    std::fs::write(&wasm, module.wasm).expect("write module");
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .env("QUARRY_MODULE_CACHE", cache)
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

/// `--rules DIR` loads a directory of Sigma rules for the `sigma` module
/// (as `quarry hunt submit sigma --rules DIR` sends them); a path that does
/// not exist is refused with its name.
#[test]
fn sigma_rules_come_from_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules/process_creation");
    std::fs::create_dir_all(&rules).expect("mkdir");
    std::fs::write(
        rules.join("whoami.yml"),
        "title: Whoami Execution\nid: 7e4c1b1a-2f0e-4c4b-9a55-0c2d3e4f5a61\nstatus: test\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: '\\whoami.exe'\n  condition: selection\nlevel: medium\ntags:\n  - attack.t1033\n",
    )
    .expect("write rule");
    let logs = dir.path().join("sysmon.jsonl");
    std::fs::write(
        &logs,
        concat!(
            r#"{"@timestamp":"2024-03-01T10:00:00Z","EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"ws1","Image":"C:\\Windows\\System32\\whoami.exe","CommandLine":"whoami /all"}"#,
            "\n",
            r#"{"@timestamp":"2024-03-01T10:01:00Z","EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"ws1","Image":"C:\\Windows\\System32\\cmd.exe","CommandLine":"cmd"}"#,
            "\n"
        ),
    )
    .expect("write logs");
    let rules_dir = dir.path().join("rules").display().to_string();
    let (ok, report) = module_test(
        dir.path(),
        &quarry_hunt_modules::SIGMA,
        &["--logs", &logs.display().to_string(), "--rules", &rules_dir],
    );
    assert!(ok, "{report}");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(
        findings[0]["rule"],
        "sigma/7e4c1b1a-2f0e-4c4b-9a55-0c2d3e4f5a61"
    );

    let wasm = dir.path().join("sigma.wasm");
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["module", "test"])
        .arg(&wasm)
        .args(["--logs", &logs.display().to_string(), "--rules"])
        .arg(dir.path().join("no-such-rules"))
        .output()
        .expect("run quarry");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot load Sigma rules from") && stderr.contains("no-such-rules"),
        "{stderr}"
    );
}

/// The hunter's loop compiles a module once: the second `module test` of
/// the same build loads it from the per-user cache and finds the same;
/// `QUARRY_MODULE_CACHE=off` compiles every time.
#[test]
fn a_second_run_loads_the_compiled_module_from_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = bruteforce_logs(dir.path());
    let logs = logs.to_str().expect("utf-8 path");
    let cache = dir.path().join("cache").display().to_string();
    let (ok, first) = module_test_cached(dir.path(), &BRUTEFORCE, &["--logs", logs], &cache);
    assert!(ok, "{first}");
    assert_eq!(first["compiled_from_cache"], false);
    let (ok, second) = module_test_cached(dir.path(), &BRUTEFORCE, &["--logs", logs], &cache);
    assert!(ok, "{second}");
    assert_eq!(second["compiled_from_cache"], true);
    assert_eq!(first["findings"], second["findings"]);
    for _ in 0..2 {
        let (ok, off) = module_test_cached(dir.path(), &BRUTEFORCE, &["--logs", logs], "off");
        assert!(ok, "{off}");
        assert_eq!(off["compiled_from_cache"], false);
    }
}
