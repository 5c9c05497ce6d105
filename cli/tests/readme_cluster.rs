//! The README's "Running a real cluster" section runs as written: its one
//! shell block (certificates, three coordinators and a worker on mutual
//! TLS, an ingest, status, shards, a membership change) is executed by bash
//! with the `quarry` binary on PATH, in an empty directory holding only the
//! `auth.log` it ingests. Afterwards a caller without the right certificate
//! is refused, the audit trail shows what happened, and every process
//! started by the block is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_owned()
}

/// The first ```sh block after the heading `heading` in `text`.
fn shell_block(text: &str, heading: &str) -> String {
    let section = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?} section"))
        .1;
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = section[start..].find("```").expect("the block ends") + start;
    section[start..end].to_owned()
}

/// sshd failures, as the section's `auth.log`.
fn auth_log(path: &Path) {
    let mut text = String::new();
    for n in 0..40 {
        text.push_str(&format!(
            "Mar  3 10:{:02}:{:02} gw01 sshd[{}]: Failed password for root from 203.0.113.{} port {} ssh2\n",
            n / 60,
            n % 60,
            1000 + n,
            n % 7 + 1,
            40000 + n
        ));
    }
    std::fs::write(path, text).expect("write auth.log");
}

/// Kills the process group the block ran in (its background coordinators
/// and worker included) when dropped, pass or fail.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

#[test]
fn the_readme_tls_cluster_section_runs_as_written() {
    use std::os::unix::process::CommandExt as _;
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README");
    let block = shell_block(&readme, "## Running a real cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    auth_log(&dir.path().join("auth.log"));
    let quarry = PathBuf::from(env!("CARGO_BIN_EXE_quarry"));
    let path = format!(
        "{}:{}",
        quarry.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("QUARRY_COORDINATOR")
        .env_remove("QUARRY_TLS_CA")
        .env_remove("QUARRY_TLS_CERT")
        .env_remove("QUARRY_TLS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash");
    let _group = Group(child.id());
    let deadline = started + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the README block did not finish in 240 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: String = ["c1.log", "c2.log", "c3.log", "dc01.log"]
        .iter()
        .map(|log| {
            let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(15).collect();
            format!(
                "--- {log}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    assert!(
        status.success(),
        "the README block failed ({status}):\n{stdout}\n{stderr}\n{logs}"
    );
    println!("README block ran in {:.1?}:\n{stdout}", started.elapsed());
    assert!(
        stdout.contains("dc01-auth"),
        "the shard is listed:\n{stdout}"
    );
    assert!(
        stdout.contains("40 events"),
        "the second ingest stored 40 events:\n{stdout}"
    );

    // The cluster the block left running refuses a caller whose certificate
    // lacks the role, and one without a certificate.
    let quarry_as = |cert: &str| {
        Command::new(&quarry)
            .current_dir(dir.path())
            .args([
                "cluster",
                "add-coordinator",
                "--node-id",
                "9",
                "--url",
                "https://127.0.0.1:7719",
                "--coordinator",
                "https://127.0.0.1:7711",
                "--tls-ca",
                "pki/ca.pem",
                "--tls-cert",
                &format!("pki/{cert}.pem"),
                "--tls-key",
                &format!("pki/{cert}.key"),
            ])
            .output()
            .expect("quarry")
    };
    let refused = quarry_as("hunter-alice");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a hunter added a coordinator");
    assert!(text.contains("needs the role admin"), "{text}");
    // A hunter may not send logs to a worker: refused there, and recorded.
    let ingest = Command::new(&quarry)
        .current_dir(dir.path())
        .args([
            "worker",
            "ingest",
            "--worker",
            "https://127.0.0.1:7721",
            "--shard",
            "dc01-auth",
            "--tls-ca",
            "pki/ca.pem",
            "--tls-cert",
            "pki/hunter-alice.pem",
            "--tls-key",
            "pki/hunter-alice.key",
            "auth.log",
        ])
        .output()
        .expect("quarry");
    let text = String::from_utf8_lossy(&ingest.stderr);
    assert!(!ingest.status.success(), "a hunter ingested");
    assert!(text.contains("may not call"), "{text}");
    let plaintext = Command::new(&quarry)
        .args([
            "cluster",
            "status",
            "--coordinator",
            "http://127.0.0.1:7711",
        ])
        .output()
        .expect("quarry");
    assert!(
        !plaintext.status.success(),
        "a plaintext caller got an answer"
    );

    // The audit trail holds the worker's ingest (forwarded by the worker),
    // the token, the hunter's refusal and the plaintext caller's failed
    // handshake, whichever node saw them.
    let expected = [
        (
            "admin:ops",
            "/quarry.v1.IngestService/Ingest",
            "ok",
            "worker:dc01",
        ),
        (
            "hunter:alice",
            "/quarry.v1.IngestService/Ingest",
            "permission_denied",
            "worker:dc01",
        ),
        // Proposed at the leader, whichever it is.
        ("admin:ops", "/quarry.v1.TokenService/CreateToken", "ok", ""),
        (
            "hunter:alice",
            "/quarry.v1.ClusterService/AddCoordinator",
            "permission_denied",
            "coordinator:1",
        ),
        (
            "unknown",
            "(tls handshake)",
            "unauthenticated",
            "coordinator:1",
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let audit = Command::new(&quarry)
            .current_dir(dir.path())
            .args([
                "audit",
                "--since",
                "1h",
                "--output",
                "json",
                "--coordinator",
                "https://127.0.0.1:7711",
                "--tls-ca",
                "pki/ca.pem",
                "--tls-cert",
                "pki/admin-ops.pem",
                "--tls-key",
                "pki/admin-ops.key",
            ])
            .output()
            .expect("quarry audit");
        let text = String::from_utf8_lossy(&audit.stdout).into_owned();
        let records: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(who, rpc, outcome, node)| {
                !records.iter().any(|r| {
                    r["principal"] == *who
                        && r["rpc"] == *rpc
                        && r["outcome"] == *outcome
                        && (node.is_empty() || r["node"] == *node)
                })
            })
            .collect();
        if audit.status.success() && missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not in the audit trail: {missing:?}\n{text}\n{}",
            String::from_utf8_lossy(&audit.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
