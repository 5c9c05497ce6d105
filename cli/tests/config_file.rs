//! `--config FILE` for `quarry coordinator` and `quarry worker`, and
//! `quarry config check|example`, through the real binary: every flag is a
//! file key with a QUARRY_* variable, a flag beats the file, which beats the
//! environment, which beats the default; problems carry line numbers; a
//! coordinator starts from a file alone.

use quarry_client::Client;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROLES: [&str; 2] = ["coordinator", "worker"];

/// `quarry ARGS` with no QUARRY_* (or other) variable but `env`.
fn quarry(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run quarry")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

fn example(role: &str) -> String {
    let output = quarry(&["config", "example", role], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

/// The long flags `quarry ROLE --help` lists, but --help itself.
fn flags(role: &str) -> Vec<String> {
    let output = quarry(&[role, "--help"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut flags = Vec::new();
    for line in stdout(&output).lines() {
        let line = line.trim_start();
        let line = line
            .strip_prefix("-h, ")
            .or_else(|| line.strip_prefix("-V, "))
            .unwrap_or(line);
        if let Some(rest) = line.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name != "help" && !flags.contains(&name) {
                flags.push(name);
            }
        }
    }
    flags
}

#[test]
fn every_server_flag_is_a_file_key_with_a_quarry_variable() {
    for role in ROLES {
        // Help wraps: read it as one line.
        let help = stdout(&quarry(&[role, "--help"], &[]))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let example = example(role);
        // Comments wrap: read them as one text.
        let prose = example.replace("\n# ", " ");
        let flags = flags(role);
        assert!(flags.len() >= 6, "{role}: {flags:?}");
        for flag in &flags {
            // An action, not a setting.
            if flag == "print-config" {
                continue;
            }
            let env = format!("QUARRY_{}", flag.to_uppercase().replace('-', "_"));
            assert!(
                help.contains(&format!("[env: {env}")),
                "`quarry {role} --{flag}` has no environment variable {env}"
            );
            if flag == "config" {
                continue;
            }
            assert!(
                prose.contains(&format!("Flag --{flag}; environment {env}")),
                "`quarry config example {role}` does not document --{flag}"
            );
            let set = example.lines().any(|l| {
                l.trim_start_matches("# ")
                    .starts_with(&format!("{flag} = "))
            });
            assert!(set, "`quarry config example {role}` has no key {flag}");
        }
        // And the other way: every key of the example is a flag.
        for line in example.lines() {
            let line = line.strip_prefix("# ").unwrap_or(line);
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    flags.iter().any(|f| f == key),
                    "{role}: key {key} is no flag"
                );
            }
        }
    }
    let help = stdout(&quarry(&["coordinator", "--help"], &[]))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("then this file, then the setting's QUARRY_* environment variable"),
        "--config's help states the precedence:\n{help}"
    );
}

#[test]
fn the_configuration_doc_lists_every_key_with_its_variable() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/configuration.md");
    for role in ROLES {
        for flag in flags(role) {
            if flag == "config" || flag == "print-config" {
                continue;
            }
            let env = format!("QUARRY_{}", flag.to_uppercase().replace('-', "_"));
            assert!(
                doc.contains(&format!("| `{flag}` | `{env}` |")),
                "docs/configuration.md has no row for `{flag}` ({role})"
            );
        }
    }
}

#[test]
fn example_files_pass_check_alone_and_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut both = String::new();
    for role in ROLES {
        let text = example(role);
        both.push_str(&text);
        let path = write(dir.path(), &format!("{role}.toml"), &text);
        let path = path.to_str().expect("utf-8 path");
        for args in [
            vec!["config", "check", path],
            vec!["config", "check", path, "--role", role],
        ] {
            let output = quarry(&args, &[]);
            assert!(output.status.success(), "{args:?}: {}", stderr(&output));
            assert!(
                stdout(&output).starts_with(&format!("{path}: ok ({role}: ")),
                "{}",
                stdout(&output)
            );
        }
    }
    let path = write(dir.path(), "both.toml", &both);
    let path = path.to_str().expect("utf-8 path");
    let output = quarry(&["config", "check", path], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{path}: ok (coordinator: 9 keys, worker: 6 keys)\n")
    );
}

#[test]
fn check_names_unknown_keys_and_bad_values_with_their_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = "# one file for both roles\n\
                log = \"info\"\n\
                [coordinator]\n\
                listen = \"x\"\n\
                retain-for = \"30d\"\n\
                \n\
                [worker]\n\
                slot = 4\n\
                id = \"w1\"\n";
    let path = write(dir.path(), "quarry.toml", text);
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["config", "check", "quarry.toml"])
        .current_dir(dir.path())
        .output()
        .expect("run quarry");
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output),
        "quarry.toml:4: `listen`: invalid value \"x\": invalid socket address syntax\n\
         quarry.toml:8: unknown key `slot` in [worker]; did you mean `slots`?\n"
    );
    // The same problems stop a server at start, before it binds anything.
    let file = path.to_str().expect("utf-8 path");
    let output = quarry(&["worker", "--config", file], &[]);
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output),
        format!("error: {file}:8: unknown key `slot` in [worker]; did you mean `slots`?\n")
    );
    let output = quarry(&["coordinator", "--config", file], &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!(
            "{file}:4: `listen`: invalid value \"x\": invalid socket address syntax"
        )),
        "{}",
        stderr(&output)
    );
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().expect("utf-8 path");
    for args in [
        vec!["coordinator", "--config", missing],
        vec!["config", "check", missing],
    ] {
        let output = quarry(&args, &[]);
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(
            err.contains(missing) && err.contains("No such file"),
            "{args:?}: {err}"
        );
    }
}

/// `quarry worker --print-config` with `args` and `env`: key -> (value, source).
fn effective(args: &[&str], env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let mut all = vec!["worker", "--print-config"];
    all.extend_from_slice(args);
    let output = quarry(&all, env);
    assert!(output.status.success(), "{all:?}: {}", stderr(&output));
    stdout(&output)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| {
            let (setting, source) = l.split_once(" # ")?;
            let (key, value) = setting.split_once(" = ")?;
            Some((
                key.to_owned(),
                value.trim().to_owned(),
                source.trim().to_owned(),
            ))
        })
        .collect()
}

fn setting<'a>(settings: &'a [(String, String, String)], key: &str) -> (&'a str, &'a str) {
    settings
        .iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, v, s)| (v.as_str(), s.as_str()))
        .unwrap_or_else(|| panic!("no {key} in {settings:?}"))
}

#[test]
fn a_flag_beats_the_file_which_beats_the_environment_which_beats_the_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "worker.toml",
        "log = \"info\"\n[worker]\nid = \"from-file\"\nslots = 2\n",
    );
    let file = file.to_str().expect("utf-8 path");
    let env = [
        ("QUARRY_ID", "from-env"),
        ("QUARRY_SLOTS", "3"),
        ("QUARRY_LISTEN", "127.0.0.1:9"),
        ("QUARRY_LOG", "debug"),
    ];
    // Default only.
    let s = effective(&["--id", "w"], &[]);
    assert_eq!(setting(&s, "slots"), ("4", "default"));
    assert_eq!(setting(&s, "listen"), ("\"127.0.0.1:0\"", "default"));
    // The environment over the default.
    let s = effective(&[], &env);
    assert_eq!(setting(&s, "id"), ("\"from-env\"", "environment QUARRY_ID"));
    assert_eq!(setting(&s, "slots"), ("3", "environment QUARRY_SLOTS"));
    // The file over the environment; what it leaves out still comes from
    // the environment.
    let s = effective(&["--config", file], &env);
    assert_eq!(
        setting(&s, "id"),
        ("\"from-file\"", &*format!("file {file}:3"))
    );
    assert_eq!(setting(&s, "slots"), ("2", &*format!("file {file}:4")));
    assert_eq!(setting(&s, "log"), ("\"info\"", &*format!("file {file}:1")));
    assert_eq!(
        setting(&s, "listen"),
        ("\"127.0.0.1:9\"", "environment QUARRY_LISTEN")
    );
    // A flag over the file.
    let s = effective(&["--config", file, "--slots", "7", "--log", "warn"], &env);
    assert_eq!(setting(&s, "slots"), ("7", "flag"));
    assert_eq!(setting(&s, "log"), ("\"warn\"", "flag"));
    assert_eq!(
        setting(&s, "id"),
        ("\"from-file\"", &*format!("file {file}:3"))
    );
    // QUARRY_CONFIG names the file too.
    let s = effective(&[], &[("QUARRY_CONFIG", file)]);
    assert_eq!(
        setting(&s, "id"),
        ("\"from-file\"", &*format!("file {file}:3"))
    );

    // A repeatable flag: comma-separated in its variable, an array in the
    // file, and the file's array replaces the variable's list.
    let peers = "2=http://127.0.0.1:2,3=http://127.0.0.1:3";
    let output = quarry(
        &["coordinator", "--print-config"],
        &[("QUARRY_PEER", peers)],
    );
    assert!(
        stdout(&output).contains(
            "peer = [\"2=http://127.0.0.1:2\", \"3=http://127.0.0.1:3\"] # environment QUARRY_PEER"
        ),
        "{}",
        stdout(&output)
    );
    let coordinator = write(
        dir.path(),
        "coordinator.toml",
        "[coordinator]\npeer = [\"4=http://127.0.0.1:4\"]\n",
    );
    let coordinator = coordinator.to_str().expect("utf-8 path");
    let output = quarry(
        &["coordinator", "--print-config", "--config", coordinator],
        &[("QUARRY_PEER", peers)],
    );
    assert!(
        stdout(&output).contains("peer = [\"4=http://127.0.0.1:4\"]"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn a_coordinator_starts_from_a_config_file_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let data = dir.path().join("data");
    let text = format!(
        "log = \"warn\"\n\n[coordinator]\nlisten = \"127.0.0.1:{port}\"\ndata-dir = {:?}\nretain-for = \"7d\"\n",
        data.to_str().expect("utf-8 path")
    );
    let file = write(dir.path(), "quarry.toml", &text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .arg("coordinator")
        .arg("--config")
        .arg(&file)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the coordinator");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut first = String::new();
        let _ = out.read_line(&mut first);
        let _ = tx.send(first);
        // Keep reading: the coordinator's next lines must not meet a
        // closed pipe.
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    let first = rx.recv_timeout(Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{port}");
    if first.as_deref().map(str::trim_end) != Ok(&*format!("coordinator serving on {url}")) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the coordinator did not start from {}: {first:?}",
            file.display()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let leads = loop {
        if let Ok(mut client) = Client::connect(&url).await
            && client.status().await.is_ok_and(|s| s.is_leader)
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(leads, "the coordinator did not lead");
    assert!(data.is_dir(), "the data directory is the file's");
}
