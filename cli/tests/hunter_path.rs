//! The whole hunter path through the real `quarry` binary: `module new` →
//! `module build` (a fresh crate compiled to wasm32-wasip2) → `module test`
//! over a log file → `module upload` → a hunt on a local cluster holding the
//! same log → the same findings as the local test.
//!
//! The nested cargo runs (the new crate's own `cargo test`, then its wasm
//! build) compile quarry-sdk and wit-bindgen natively and for wasm (about two
//! minutes on two cores the first time); their target directory lives under
//! `CARGO_TARGET_TMPDIR`, so later runs only rebuild the new crate. Without
//! the wasm32-wasip2 target the test skips with a visible message, except
//! under `CI`, where that is a broken set-up and fails.

use quarry_cli::cluster::{LocalCluster, LocalClusterConfig};
use quarry_cli::module_tool;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

const MODULE: &str = "hunter-path-e2e";
const SHARD: &str = "hunter-logs";

/// Runs `quarry ARGS` in `cwd` on a blocking thread; stdout on success.
async fn quarry(cwd: &Path, args: Vec<String>) -> anyhow::Result<String> {
    let cwd = cwd.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
            .args(&args)
            .current_dir(&cwd)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "`quarry {}` failed ({}):\n{stdout}\n{stderr}",
            args.join(" "),
            output.status
        );
        Ok(String::from_utf8(output.stdout)?)
    })
    .await?
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Forty logons over four accounts (eight of alice's are successful), and
/// one broken line that must be counted as malformed.
fn write_logs(path: &Path) -> anyhow::Result<()> {
    let users = ["alice", "bob", "Administrator", "carol"];
    let mut lines: Vec<String> = (0..40)
        .map(|i| {
            serde_json::json!({
                "@timestamp": format!("2026-11-20T10:{i:02}:00Z"),
                "EventID": if i % 5 == 0 { 4625 } else { 4624 },
                "TargetUserName": users[i % 4],
                "TargetDomainName": "CORP",
                "IpAddress": format!("10.0.0.{i}"),
                "Computer": "dc01.corp.example",
            })
            .to_string()
        })
        .collect();
    lines.insert(7, r#"{"broken": "#.to_owned());
    std::fs::write(path, lines.join("\n") + "\n")?;
    Ok(())
}

/// What makes two findings the same, leaving out where they were stored
/// (shard name, hunt and finding ids).
fn identity(finding: &Value) -> String {
    let keep = [
        "rule",
        "title",
        "severity",
        "confidence",
        "entity",
        "timestamp_ms",
        "techniques",
        "evidence",
        "offsets",
    ];
    keep.iter()
        .map(|k| format!("{k}={}", finding[*k]))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_test_upload_hunt_gives_the_same_findings() -> anyhow::Result<()> {
    if module_tool::wasm_target_installed() == Some(false) {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "the wasm32-wasip2 target is missing; CI must have it");
        eprintln!(
            "SKIPPED: the wasm32-wasip2 target is not installed (rustup target add wasm32-wasip2)"
        );
        return Ok(());
    }
    // The checkout, found at run time (see tests/testdata): `module new` run
    // inside it finds its quarry-sdk.
    let repo = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|cli| cli.parent().map(Path::to_owned))
        .ok_or_else(|| anyhow::anyhow!("CARGO_MANIFEST_DIR is not set; run through cargo"))?;
    let dir = tempfile::tempdir()?;
    let work = dir.path();

    // new
    let out = quarry(
        &repo,
        vec![
            "module".into(),
            "new".into(),
            MODULE.into(),
            "--dir".into(),
            work.display().to_string(),
        ],
    )
    .await?;
    let crate_dir = work.join(MODULE);
    assert!(out.contains("created module crate"), "{out}");
    assert!(crate_dir.join("src/lib.rs").is_file());

    // The scaffold's own unit tests pass natively (`cargo test` in the crate).
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hunter-path-wasm");
    {
        let (crate_dir, target_dir) = (crate_dir.clone(), target_dir.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .arg("test")
                .arg("--manifest-path")
                .arg(crate_dir.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir)
                .output()
        })
        .await??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("2 passed"),
            "cargo test in the new crate:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // build
    let out = quarry(
        work,
        vec![
            "module".into(),
            "build".into(),
            crate_dir.display().to_string(),
            "--target-dir".into(),
            target_dir.display().to_string(),
            "--output".into(),
            "json".into(),
        ],
    )
    .await?;
    let built: Value = serde_json::from_str(out.trim())?;
    assert_eq!(built["name"], MODULE);
    let wasm = built["path"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no path in {out}"))?
        .to_owned();
    let sha256 = built["sha256"].as_str().unwrap_or_default().to_owned();
    assert_eq!(sha256.len(), 64, "{out}");

    // test, locally
    let logs = work.join("security.jsonl");
    write_logs(&logs)?;
    let out = quarry(
        work,
        args(&[
            "module",
            "test",
            &wasm,
            "--logs",
            &logs.display().to_string(),
            "--params",
            "account=alice",
            "--output",
            "json",
        ]),
    )
    .await?;
    let local: Value = serde_json::from_str(out.trim())?;
    assert_eq!(local["failure"], Value::Null, "{out}");
    assert_eq!(local["sha256"], sha256.as_str());
    assert_eq!(
        (local["events_stored"].as_u64(), local["malformed"].as_u64()),
        (Some(40), Some(1))
    );
    let local_findings: BTreeSet<String> = local["findings"]
        .as_array()
        .map(|f| f.iter().map(identity).collect())
        .unwrap_or_default();
    assert_eq!(local_findings.len(), 8, "alice's successful logons: {out}");
    assert_eq!(local["aggregates"]["logons_by_account"]["counts"]["bob"], 8);

    // A module failure is named and exits non-zero.
    let failed = quarry(
        work,
        args(&[
            "module",
            "test",
            &wasm,
            "--logs",
            &logs.display().to_string(),
            "--params",
            "acount=alice",
        ]),
    )
    .await
    .expect_err("an unknown parameter fails the run");
    let failed = failed.to_string();
    assert!(
        failed.contains("FAILED (rejected-parameters)")
            && failed.contains("unknown parameter `acount`"),
        "{failed}"
    );

    // The same log on a local cluster's worker, through `quarry worker ingest`.
    let cluster_dir = work.join("cluster");
    quarry(
        work,
        args(&[
            "worker",
            "ingest",
            "--data-dir",
            &cluster_dir.join("worker-0").display().to_string(),
            "--shard",
            SHARD,
            "--label",
            "env=hunter",
            &logs.display().to_string(),
        ]),
    )
    .await?;
    let cluster = LocalCluster::start(LocalClusterConfig {
        data_dir: cluster_dir.clone(),
        coordinator_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: 1,
        slots: 2,
        demo_data: false,
    })
    .await?;
    let url = cluster.url();
    let result = async {
        // The coordinator refuses a module that is not a component, even
        // from a client that skips the CLI's own validation.
        let mut client = quarry_client::Client::connect(&url).await?;
        let refused = client
            .upload_module("junk", "0.1.0", "", b"\0asm\x01\0\0\0")
            .await
            .expect_err("a core module is refused");
        assert!(
            refused.to_string().contains("core WebAssembly module"),
            "{refused}"
        );
        // The CLI refuses it before connecting.
        let junk = work.join("junk.wasm");
        std::fs::write(&junk, b"\0asm\x01\0\0\0")?;
        let refused = quarry(
            work,
            args(&[
                "module",
                "upload",
                &junk.display().to_string(),
                "--coordinator",
                &url,
            ]),
        )
        .await
        .expect_err("the CLI refuses a core module");
        assert!(
            refused.to_string().contains("not a usable hunt module"),
            "{refused}"
        );

        // upload: name and version from the module's own description
        let out = quarry(
            work,
            args(&[
                "module",
                "upload",
                &wasm,
                "--coordinator",
                &url,
                "--output",
                "json",
            ]),
        )
        .await?;
        assert!(out.contains(&sha256), "{out}");

        // hunt
        let out = quarry(
            work,
            args(&[
                "hunt",
                "submit",
                MODULE,
                "--shard",
                SHARD,
                "--param",
                "account=alice",
                "--wait",
                "--output",
                "json",
                "--coordinator",
                &url,
            ]),
        )
        .await?;
        let mut cluster_findings = BTreeSet::new();
        for line in out.lines() {
            let value: Value = serde_json::from_str(line)?;
            if value.get("finding_id").is_some() {
                assert_eq!(value["shard"], SHARD);
                cluster_findings.insert(identity(&value));
            }
        }
        assert_eq!(
            cluster_findings, local_findings,
            "the cluster found what `module test` found"
        );
        anyhow::Ok(())
    }
    .await;
    cluster.shutdown().await;
    result
}
