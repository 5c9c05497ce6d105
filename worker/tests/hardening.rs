//! Regression tests for the worker's ingest and data-directory hardening
//! (issue 11): bounded malformed samples, one process per data directory,
//! private file permissions, and refusal of input that would amplify.

use quarry_worker::ingest::zeek::ZeekTsvReader;
use quarry_worker::shard::{
    MALFORMED_FILE, MAX_MALFORMED_KEPT, MAX_MALFORMED_REPORTED, ShardStore,
};
use quarry_worker::{Worker, WorkerConfig};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

#[test]
fn garbage_lines_keep_a_bounded_malformed_sample_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("open");
    let lines = 200_000u64;
    let input = "x\n".repeat(lines as usize);
    let mut labels = BTreeMap::new();
    labels.insert("source".to_owned(), "junk.log".to_owned());
    let report = store
        .ingest_jsonl("junk", labels.clone(), input.as_bytes())
        .expect("ingest");
    assert_eq!(report.malformed, lines, "every garbage line is counted");
    assert_eq!(report.events_stored, 0);
    // Again: the counts add up, the disk does not grow.
    let size_once = std::fs::metadata(store.shard_dir("junk").join(MALFORMED_FILE))
        .expect("sample file")
        .len();
    let report = store
        .ingest_jsonl("junk", labels, input.as_bytes())
        .expect("ingest again");
    assert_eq!(report.meta.malformed_count, 2 * lines);
    assert_eq!(report.meta.malformed_kept, Some(MAX_MALFORMED_KEPT));
    assert_eq!(
        report.meta.malformed_by_source,
        BTreeMap::from([("junk.log".to_owned(), 2 * lines)]),
        "counted per source"
    );
    // This ingest's own sample is in its report, positions included, even
    // though the shard's sample on disk is full.
    assert_eq!(report.malformed_sample.len(), MAX_MALFORMED_REPORTED);
    assert_eq!(
        (
            report.malformed_sample[9].line,
            report.malformed_sample[9].byte_offset
        ),
        (10, 18)
    );
    let size = std::fs::metadata(store.shard_dir("junk").join(MALFORMED_FILE))
        .expect("sample file")
        .len();
    assert_eq!(size, size_once, "a full sample does not grow");
    assert!(
        size < 1_000_000,
        "{size} bytes of malformed records kept for {} bytes of input",
        input.len()
    );
    let sample = store.malformed("junk").expect("sample");
    assert_eq!(
        sample.len() as u64,
        MAX_MALFORMED_KEPT,
        "the first ones are kept"
    );
    assert_eq!((sample[0].line, sample[0].byte_offset), (1, 0));
    assert_eq!((sample[1].line, sample[1].byte_offset), (2, 2));
    assert_eq!(sample[1].raw, "x");
}

#[test]
fn a_second_open_of_a_locked_data_dir_is_refused_naming_the_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("shards");
    let first = ShardStore::open(&root).expect("first open");
    let error = ShardStore::open(&root).expect_err("the directory is in use");
    let text = error.to_string();
    assert!(
        text.contains(&std::process::id().to_string()),
        "names the holder's pid: {text}"
    );
    assert!(text.contains("--worker"), "says what to do instead: {text}");
    drop(first);
    ShardStore::open(&root).expect("free again once the first store is gone");
}

fn assert_private(path: &Path) {
    for entry in std::fs::read_dir(path).expect("list") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is {mode:o}: readable by group or others",
            entry.path().display()
        );
        if meta.is_dir() {
            assert_private(&entry.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_files_are_private_under_a_permissive_umask() {
    // SAFETY: umask(2) cannot fail; this test binary's other tests do not
    // depend on the mask (nextest runs each test in its own process).
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("worker");
    let worker = Worker::start(WorkerConfig {
        id: quarry_proto::WorkerId::new("w-perm".to_owned()),
        // Nothing listens there: the worker keeps retrying, which is fine.
        coordinator: "http://127.0.0.1:9".to_owned(),
        data_dir: data_dir.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        slots: 1,
        tls: None,
    })
    .await
    .expect("worker starts");
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"a\":1,\"@timestamp\":\"2024-01-01T00:00:00Z\"}\nnot json\n",
    )
    .expect("input");
    let response = quarry_client::ingest_file(
        &format!("http://{}", worker.addr()),
        "perm",
        HashMap::new(),
        None,
        &input,
    )
    .await
    .expect("ingest over gRPC");
    assert_eq!((response.events_stored, response.malformed), (1, 1));
    assert!(data_dir.join("shards/perm").join(MALFORMED_FILE).exists());
    assert_private(&data_dir);
    let mode = std::fs::metadata(&data_dir)
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the data dir itself is {mode:o}");
    worker.shutdown().await;
}

/// The directives every deployed unit must set, and their values.
const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("UMask", "0077"),
    ("StateDirectoryMode", "0700"),
    ("CapabilityBoundingSet", ""),
    ("RestrictSUIDSGID", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectControlGroups", "yes"),
];

#[test]
fn systemd_units_are_hardened() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    for (unit, data_dir) in [
        ("quarry-worker.service", "/var/lib/quarry/worker"),
        ("quarry-coordinator.service", "/var/lib/quarry/coordinator"),
    ] {
        let path = units.join(unit);
        let text = std::fs::read_to_string(&path).expect("unit");
        let settings: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let value = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        for (key, want) in HARDENING {
            assert_eq!(value(key), Some(*want), "{unit}: {key}");
        }
        assert_eq!(value("ReadWritePaths"), Some(data_dir), "{unit}");
        assert!(
            value("ExecStart").is_some_and(|cmd| cmd.contains(&format!("--data-dir {data_dir}"))),
            "{unit}: the data directory it may write is the one it uses"
        );
        // systemd's own assessment, where systemd is installed (not required).
        let Ok(out) = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=25"])
            .arg(&path)
            .output()
        else {
            continue;
        };
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{unit}: systemd-analyze rates it above 2.5: {}",
            report.lines().last().unwrap_or_default()
        );
    }
}

#[test]
fn an_empty_zeek_set_separator_is_refused() {
    let input = "#separator \\x09\n#set_separator\t\n#fields\tts\ttags\n#types\ttime\tset[string]\n1700000000.0\ta,b\n";
    let records: Vec<_> = ZeekTsvReader::new(input.as_bytes(), "conn.log").collect();
    let errors: Vec<String> = records
        .iter()
        .filter_map(|r| r.as_ref().err().map(|m| m.error.clone()))
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("#set_separator is empty")),
        "the header is refused by name: {errors:?}"
    );
    assert!(
        records.iter().all(|r| r.is_err()),
        "no row is split with an empty separator: {records:?}"
    );
}

/// `{"k0…": {"k1…": … {"leaf": 1}, "s": 1}, "s": 1}`: every level has a long
/// key and a sibling, so flattening writes every prefix again per level.
fn nested(depth: usize, key_len: usize) -> String {
    let mut doc = "{\"leaf\":1}".to_owned();
    for level in 0..depth {
        let key = format!("{level}{}", "k".repeat(key_len));
        doc = format!("{{\"{key}\":{doc},\"s\":1}}");
    }
    doc
}

#[test]
fn deep_or_wide_nested_json_is_malformed_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("open");
    // 100 KiB of line, about 5 MB of flattened keys.
    let wide = nested(100, 1000);
    // Deep but short.
    let deep = nested(100, 1);
    let ok = nested(5, 10);
    let input = format!("{wide}\n{deep}\n{ok}\n");
    let report = store
        .ingest_jsonl("nest", BTreeMap::new(), input.as_bytes())
        .expect("ingest");
    assert_eq!((report.events_stored, report.malformed), (1, 2));
    let bad = store.malformed("nest").expect("sample");
    assert_eq!(bad.len(), 2);
    assert!(bad.iter().all(|b| b.error.contains("nested")), "{bad:?}");
    assert_eq!((bad[0].line, bad[1].line), (1, 2));
}
