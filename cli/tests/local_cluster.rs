//! `deploy/local-cluster.sh` works: it starts three coordinators and three
//! workers as separate `quarry` processes on loopback with mutual TLS,
//! gives the workers shards and uploads a module, and says "ready" only
//! once the group has a leader and every worker is live. A hunt submitted
//! over TLS with `quarry hunt submit --wait` then completes with the
//! findings the generated data holds; every metrics URL it prints answers
//! with Prometheus text (when this build has `--metrics-listen`);
//! `local-cluster.sh --stop` stops all six processes, and the script that
//! started them ends.
//!
//! Every step has a deadline; on failure (or panic) the script's process
//! group and every process it recorded are SIGKILLed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const NODES: [&str; 6] = [
    "coordinator-1",
    "coordinator-2",
    "coordinator-3",
    "worker-1",
    "worker-2",
    "worker-3",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_owned()
}

fn script() -> PathBuf {
    workspace().join("deploy/local-cluster.sh")
}

/// The script's run, killed with everything it started when dropped.
struct Cluster {
    script: Child,
    dir: PathBuf,
}

impl Cluster {
    /// The pids the script recorded, by node name.
    fn pids(&self) -> Vec<(&'static str, u32)> {
        NODES
            .iter()
            .filter_map(|name| {
                let text =
                    std::fs::read_to_string(self.dir.join(format!("run/{name}.pid"))).ok()?;
                Some((*name, text.trim().parse().ok()?))
            })
            .collect()
    }

    /// The end of every node's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in NODES.iter().chain(&["setup"]) {
            let text = std::fs::read_to_string(self.dir.join(format!("logs/{name}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(12)..];
            out.push_str(&format!("--- {name}.log\n{}\n", tail.join("\n")));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let group = self.script.id();
        // SAFETY: kill(2) with a negative pid signals the process group the
        // script leads (it was spawned with process_group(0)).
        unsafe {
            libc::kill(-(group as i32), libc::SIGKILL);
        }
        for (_, pid) in self.pids() {
            if running(pid) {
                // SAFETY: SIGKILL to a node this test's script started.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        let _ = self.script.wait();
    }
}

/// Whether process `pid` runs (a zombie waiting to be reaped does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Polls `check` every 200 ms until it gives a value or `timeout` passes.
fn within<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `command` to the end, killing it after `timeout`.
fn run(mut command: Command, what: &str, timeout: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out file"))
        .stderr(std::fs::File::create(&err).expect("err file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: not done within {timeout:?}\n{}\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}

/// A base port whose twelve ports of the script's layout (B+1..3, B+11..13,
/// B+21..23, B+31..33) are free now: below Linux's ephemeral range
/// (32768 and up), where the ports other tests bind to port 0 come from.
fn free_base_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed + attempt * 7919) % 1_200) as u16 * 10;
        let ports = [1, 2, 3, 11, 12, 13, 21, 22, 23, 31, 32, 33].map(|o| base + o);
        let held: Vec<_> = ports
            .iter()
            .map_while(|p| TcpListener::bind(("127.0.0.1", *p)).ok())
            .collect();
        if held.len() == ports.len() {
            return base;
        }
    }
    panic!("no free range of loopback ports found");
}

/// The status line and body of `GET url` (plain HTTP on loopback).
fn http_get(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (addr, path) = rest.split_once('/').ok_or("no path")?;
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

/// Whether this build's servers take `--metrics-listen` (being added).
fn has_metrics_flag(quarry: &str) -> bool {
    ["coordinator", "worker"].iter().all(|role| {
        Command::new(quarry)
            .args([role, "--help"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--metrics-listen"))
    })
}

#[test]
fn local_cluster_script_runs_a_tls_cluster_a_hunt_and_stops() {
    use std::os::unix::process::CommandExt as _;
    let started = Instant::now();
    let quarry = env!("CARGO_BIN_EXE_quarry");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let stdout_path = tmp.path().join("script.out");
    let stderr_path = tmp.path().join("script.err");
    let base = free_base_port();

    // Start: the shipped modules are found next to this build's binary;
    // only bruteforce is uploaded (each upload compiles the module first).
    // One slot per worker: a worker compiles a new module in every slot
    // that starts a task of it before the first compile is cached, which on
    // two cores and a debug build makes the first hunt take a minute with
    // the default four slots and seconds with one.
    let mut command = Command::new("bash");
    command
        .arg(script())
        .arg("--dir")
        .arg(&dir)
        .args(["--base-port", &base.to_string()])
        .args(["--module", "bruteforce", "--slots", "1", "--timeout", "180"])
        .env("QUARRY", quarry)
        .env("TMPDIR", tmp.path())
        .env("QUARRY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .process_group(0);
    for (key, _) in std::env::vars() {
        if key.starts_with("QUARRY_") && key != "QUARRY_LOG" {
            command.env_remove(key);
        }
    }
    let mut cluster = Cluster {
        script: command.spawn().expect("bash runs the script"),
        dir: dir.clone(),
    };
    let script_output = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };

    let printed = within("the script prints ready", Duration::from_secs(300), || {
        if let Ok(Some(status)) = cluster.script.try_wait() {
            panic!(
                "the script ended ({status}) before it was ready:\n{}\n{}",
                script_output(),
                cluster.logs()
            );
        }
        let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        out.lines().any(|l| l.starts_with("Stop:")).then_some(out)
    });
    let ready_after = started.elapsed();
    println!("ready after {ready_after:.1?}:\n{printed}");
    let ready = printed
        .lines()
        .find(|l| l.starts_with("ready:"))
        .expect("a ready line");
    assert!(
        ready.contains("3 coordinators") && ready.contains("3 workers"),
        "{ready}"
    );
    let pids = cluster.pids();
    assert_eq!(pids.len(), 6, "six pid files in {}", dir.display());
    for (name, pid) in &pids {
        assert!(running(*pid), "{name} (pid {pid}) runs once ready");
    }
    let client_env = std::fs::read_to_string(dir.join("client.env")).expect("client.env");
    let coordinator = client_env
        .lines()
        .find_map(|l| l.strip_prefix("export QUARRY_COORDINATOR="))
        .expect("client.env names the coordinator")
        .to_owned();
    assert!(
        coordinator.starts_with("https://127.0.0.1:"),
        "{coordinator}"
    );

    // A hunt over TLS, as the hunter whose certificate the script made.
    let hunt_started = Instant::now();
    let pki = dir.join("pki");
    let mut hunt = Command::new(quarry);
    hunt.args(["hunt", "submit", "bruteforce", "--selector", "env=local"])
        .args(["--wait", "--output", "json", "--coordinator", &coordinator])
        .arg("--tls-ca")
        .arg(pki.join("ca.pem"))
        .arg("--tls-cert")
        .arg(pki.join("hunter-alice.pem"))
        .arg("--tls-key")
        .arg(pki.join("hunter-alice.key"));
    for (key, _) in std::env::vars() {
        if key.starts_with("QUARRY_") {
            hunt.env_remove(key);
        }
    }
    let output = run(hunt, "quarry hunt submit --wait", Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the hunt failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = lines
        .iter()
        .find(|v| v.get("module").is_some() && v.get("task_counts").is_some())
        .unwrap_or_else(|| panic!("no hunt summary in:\n{stdout}"));
    assert_eq!(summary["state"], "completed", "{summary}");
    let findings: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v.get("finding_id").is_some())
        .collect();
    // The scenario's credentialed vulnerability scan: failed NTLM logons
    // for default names from 10.10.40.15, then the scan account's success.
    assert!(
        findings.iter().any(|f| f["entity"] == "ip:10.10.40.15"),
        "the scanner's logons are found among {} findings:\n{stdout}",
        findings.len()
    );
    println!(
        "hunt: {} findings in {:.1?}",
        findings.len(),
        hunt_started.elapsed()
    );

    // Metrics: every URL printed answers, once the servers have the flag.
    let urls: Vec<&str> = printed
        .split_whitespace()
        .filter(|w| w.starts_with("http://") && w.ends_with("/metrics"))
        .collect();
    if has_metrics_flag(quarry) {
        assert_eq!(urls.len(), 6, "six metrics URLs printed:\n{printed}");
        for url in &urls {
            let (status, body) = within(&format!("{url} answers"), Duration::from_secs(30), || {
                http_get(url).ok()
            });
            assert!(status.contains(" 200"), "{url}: {status}");
            assert!(
                body.lines().any(|l| l.starts_with("quarry_")),
                "{url} serves quarry_ metrics:\n{body}"
            );
        }
        println!("metrics: {} endpoints answer", urls.len());
    } else {
        assert!(urls.is_empty(), "{printed}");
        assert!(printed.contains("Metrics: off"), "{printed}");
        eprintln!(
            "metrics not checked: this quarry has no --metrics-listen yet (the script leaves metrics off)"
        );
    }

    // Stop from outside, as a user would: the processes end, so does the
    // script that started them.
    let stop_started = Instant::now();
    let mut stop = Command::new("bash");
    stop.arg(script()).arg("--stop").arg("--dir").arg(&dir);
    let output = run(stop, "local-cluster.sh --stop", Duration::from_secs(90));
    assert!(
        output.status.success(),
        "--stop failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let status = within(
        "the script ends after --stop",
        Duration::from_secs(30),
        || cluster.script.try_wait().expect("wait"),
    );
    assert!(
        status.success(),
        "the script ended with {status}:\n{}",
        script_output()
    );
    for (name, pid) in &pids {
        assert!(!running(*pid), "{name} (pid {pid}) still runs after --stop");
    }
    println!(
        "stopped in {:.1?}; whole run {:.1?}",
        stop_started.elapsed(),
        started.elapsed()
    );
}
