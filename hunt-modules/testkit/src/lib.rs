//! What every hunt module's tests do: put events (generated, or read from
//! log files by the worker's own ingest) into a shard in a temporary
//! directory, then run the module's wasm build over it in the worker's
//! sandbox, as a worker would. Panics on set-up failures: this is test code.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use quarry_worker::ingest;
use quarry_worker::runtime::types::Finding;
use quarry_worker::runtime::{
    Runtime, RuntimeConfig, TaskInput, TaskLimits, TaskOutput, module_digest,
};
use quarry_worker::shard::ShardStore;
use serde_json::Value;

/// Limits of every test task: generous, like a worker's defaults.
pub const LIMITS: TaskLimits = TaskLimits {
    cpu: Duration::from_secs(60),
    memory_bytes: 128 * 1024 * 1024,
    max_findings: 10_000,
    max_output_bytes: 16 * 1024 * 1024,
};

/// One shard in a temporary directory (removed on drop).
pub struct TestShard {
    _dir: tempfile::TempDir,
    /// The store holding it.
    pub store: ShardStore,
    /// The shard's name.
    pub name: String,
}

fn empty_shard(name: &str) -> TestShard {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    TestShard {
        _dir: dir,
        store,
        name: name.to_owned(),
    }
}

fn labels(source: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("source".to_owned(), source.to_owned())])
}

/// A shard `name` (label `source`) of `events`, ingested as JSON lines; every
/// event must be well formed.
pub fn shard_of_events(name: &str, source: &str, events: &[Value]) -> TestShard {
    let shard = empty_shard(name);
    let jsonl: String = events.iter().map(|e| format!("{e}\n")).collect();
    let report = shard
        .store
        .ingest_jsonl(name, labels(source), jsonl.as_bytes())
        .expect("ingest");
    assert_eq!(report.malformed, 0, "the generated events are well formed");
    shard
}

/// A shard `name` (label `source`) of the records of `files`, each read by
/// the worker's ingest with its format detected.
pub fn shard_of_files(name: &str, source: &str, files: &[PathBuf]) -> TestShard {
    let shard = empty_shard(name);
    for file in files {
        let (_format, records) = ingest::open(file, None)
            .unwrap_or_else(|e| panic!("{} does not open: {e}", file.display()));
        shard
            .store
            .append(name, labels(source), records, &mut |_| {})
            .expect("ingest");
    }
    shard
}

/// The files of `relative` in the shared data set (a file, or a directory's
/// files in name order), or `None` when the data set is missing and the test
/// should skip (`quarry_testdata` says why; under `CI=true` it fails).
pub fn shared_files(relative: &str) -> Option<Vec<PathBuf>> {
    let path = quarry_testdata::shared_data()?.join(relative);
    assert!(
        path.exists(),
        "{} is missing from the shared data set",
        path.display()
    );
    if path.is_file() {
        return Some(vec![path]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .expect("data directory")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    Some(files)
}

/// Compiled modules are cached beside the test binaries, so each module is
/// compiled once per build rather than once per test.
fn module_cache() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .map(|deps| deps.join("../module-testkit-cache"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("quarry-module-testkit-cache"))
}

/// Runs the module `wasm` over `shard` with `params` and [`LIMITS`].
pub fn run(wasm: &[u8], shard: &TestShard, params: &[(&str, &str)]) -> TaskOutput {
    let cache = module_cache();
    let runtime =
        Runtime::new(1, RuntimeConfig::default(), Some(Path::new(&cache))).expect("runtime");
    let module = runtime
        .load(&module_digest(wasm), wasm)
        .expect("the module loads");
    let params: Vec<(String, String)> = params
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let task = TaskInput {
        params: &params,
        limits: LIMITS,
        shard: &shard.name,
        time_range: None,
        hunt: None,
    };
    runtime
        .run(
            &module,
            &task,
            &shard.store,
            &Arc::new(AtomicBool::new(false)),
        )
        .expect("the task runs")
}

/// The value of evidence `key` in `finding`.
pub fn evidence<'a>(finding: &'a Finding, key: &str) -> Option<&'a str> {
    finding
        .evidence
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A deterministic xorshift generator for generated scenarios: the same seed
/// gives the same events, so a failing test reproduces. `Rng(seed)` with a
/// non-zero seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next raw value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponentially distributed gap with the given mean, in ms (at least
    /// 1): human, bursty traffic.
    pub fn exp_ms(&mut self, mean_ms: f64) -> i64 {
        (-(1.0 - self.unit()).ln() * mean_ms) as i64 + 1
    }

    /// `len` random lower-case hex digits.
    pub fn hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8] = b"0123456789abcdef";
        (0..len)
            .map(|_| DIGITS[self.below(16) as usize] as char)
            .collect()
    }

    /// `len` random characters of `a-z0-9`.
    pub fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize] as char)
            .collect()
    }
}
