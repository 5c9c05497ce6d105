//! Hunter tooling behind `quarry module new|build|test` and the client-side
//! check of `quarry module upload`: scaffold a module crate, build it to a
//! wasm32-wasip2 component, validate it the way a worker loads it, and run it
//! over local log files with the worker's own runtime and default limits.

mod template;

use quarry_proto::v1;
use quarry_worker::ingest::{self, Format};
use quarry_worker::runtime::{
    ModuleCacheConfig, ModuleDescription, Runtime, RuntimeConfig, TaskFailure, TaskInput,
    TaskLimits, TaskOutput, module_digest,
};
use quarry_worker::shard::ShardStore;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The target hunt modules are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";
/// The SDK crate, relative to a Quarry checkout's root.
const SDK_IN_REPO: &str = "sdk/quarry-sdk";
/// Shard name `quarry module test` ingests into.
pub const LOCAL_SHARD: &str = "local";

/// What went wrong in the module tooling; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModuleToolError {
    /// A module name that cannot be a crate and module name.
    #[error(
        "`{0}` is not a valid module name: use lowercase letters, digits and `-`, starting with a letter (e.g. `watch-admins`)"
    )]
    InvalidName(String),
    /// `quarry module new` would overwrite something.
    #[error("{} already exists; pick another name or --dir", .0.display())]
    AlreadyExists(PathBuf),
    /// Neither `--sdk` nor a Quarry checkout around the new crate.
    #[error(
        "cannot find quarry-sdk: run `quarry module new` inside a Quarry checkout (it then depends on `{SDK_IN_REPO}` by path), or pass --sdk PATH to the quarry-sdk crate"
    )]
    SdkNotFound,
    /// `--sdk` does not point at quarry-sdk.
    #[error(
        "{} is not the quarry-sdk crate (no Cargo.toml with `name = \"quarry-sdk\"`); pass --sdk PATH/TO/{SDK_IN_REPO}",
        .0.display()
    )]
    NotTheSdk(PathBuf),
    /// The wasm target is not installed.
    #[error(
        "the {WASM_TARGET} target is not installed for this Rust toolchain: run `rustup target add {WASM_TARGET}` and build again{}",
        if .0.is_empty() { String::new() } else { format!("\n\ncargo said:\n{}", .0) }
    )]
    TargetMissing(String),
    /// `cargo build` failed.
    #[error("`{command}` failed; fix the errors above and build again")]
    BuildFailed {
        /// What was run.
        command: String,
    },
    /// The build produced no `.wasm` (not a `cdylib`).
    #[error(
        "`cargo build` produced no .wasm for {}: add `[lib] crate-type = [\"cdylib\", \"rlib\"]` to its Cargo.toml",
        .0.display()
    )]
    NoArtifact(PathBuf),
    /// The component fails the checks a worker or the coordinator applies.
    #[error("{} is not a usable hunt module: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// `--params` / `--param` that cannot be parsed.
    #[error("{0}")]
    BadParams(String),
    /// A log file that cannot be read or ingested.
    #[error("cannot ingest {}: {detail}", path.display())]
    Ingest {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Reading or writing a file or running a program failed (the OS error
    /// is the source, which the binary prints after this).
    #[error("cannot {what} {}", path.display())]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// PATH holds no crate.
    #[error("{} holds no Cargo.toml; pass the module crate's directory (made by `quarry module new`)", .0.display())]
    NotACrate(PathBuf),
    /// The worker runtime could not start.
    #[error("cannot start the wasm runtime: {0}")]
    Runtime(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ModuleToolError {
    let path = path.to_owned();
    move |source| ModuleToolError::Io { what, path, source }
}

// ---------------------------------------------------------------- new

/// What `quarry module new` wrote.
#[derive(Debug)]
pub struct Scaffold {
    /// The crate directory.
    pub dir: PathBuf,
    /// The quarry-sdk path written into Cargo.toml.
    pub sdk: String,
    /// The files written, relative to `dir`.
    pub files: Vec<&'static str>,
}

/// Checks a module name: lowercase letters, digits and single `-`, starting
/// with a letter (it is both the crate name and the registry name).
pub fn validate_name(name: &str) -> Result<(), ModuleToolError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ModuleToolError::InvalidName(name.to_owned()))
    }
}

/// Creates crate `name` in `parent` (`<parent>/<name>`) depending on
/// quarry-sdk at `sdk`, or, without it, on the SDK of the Quarry checkout
/// that holds `parent` or `cwd`.
pub fn scaffold(
    name: &str,
    parent: &Path,
    sdk: Option<&Path>,
    cwd: &Path,
) -> Result<Scaffold, ModuleToolError> {
    validate_name(name)?;
    let parent = absolute(parent, cwd);
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ModuleToolError::AlreadyExists(dir));
    }
    let sdk_dir = match sdk {
        Some(sdk) => {
            let sdk = absolute(sdk, cwd);
            let is_sdk = std::fs::read_to_string(sdk.join("Cargo.toml"))
                .is_ok_and(|text| text.contains("name = \"quarry-sdk\""));
            if !is_sdk {
                return Err(ModuleToolError::NotTheSdk(sdk));
            }
            sdk
        }
        None => find_sdk(&parent)
            .or_else(|| find_sdk(cwd))
            .ok_or(ModuleToolError::SdkNotFound)?,
    };
    std::fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    let sdk_dir = sdk_dir.canonicalize().map_err(io("resolve", &sdk_dir))?;
    let parent = parent.canonicalize().map_err(io("resolve", &parent))?;
    let dir = parent.join(name);
    // Relative when it can be, so the crate can be committed to the
    // checkout and still build from another clone.
    let sdk_path = relative(&dir, &sdk_dir).unwrap_or_else(|| sdk_dir.clone());
    let sdk_text = sdk_path.to_string_lossy().replace('\\', "/");
    let crate_name = name.replace('-', "_");
    let render = |t: &str| template::render(t, name, &crate_name, &sdk_text);
    let mut files = vec![
        ("Cargo.toml", render(template::CARGO_TOML)),
        (".cargo/config.toml", render(template::CARGO_CONFIG)),
        (".gitignore", template::GITIGNORE.to_owned()),
        ("README.md", render(template::README)),
        ("src/lib.rs", render(template::LIB_RS)),
    ];
    // Inside a checkout: the checkout's lock file pins the SDK's dependencies
    // (wit-bindgen) to the versions Quarry itself builds with, which also
    // lets an offline machine build the module from its cargo cache.
    if let Some(root) = sdk_dir.parent().and_then(Path::parent)
        && let Ok(lock) = std::fs::read_to_string(root.join("Cargo.lock"))
    {
        files.push(("Cargo.lock", lock));
    }
    std::fs::create_dir(&dir).map_err(io("create", &dir))?;
    for (file, text) in &files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&path, text).map_err(io("write", &path))?;
    }
    Ok(Scaffold {
        dir,
        sdk: sdk_text,
        files: files.iter().map(|(f, _)| *f).collect(),
    })
}

fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        cwd.join(path)
    }
}

/// `sdk/quarry-sdk` of the nearest Quarry checkout at or above `start`.
fn find_sdk(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let sdk = dir.join(SDK_IN_REPO);
        std::fs::read_to_string(sdk.join("Cargo.toml"))
            .is_ok_and(|text| text.contains("name = \"quarry-sdk\""))
            .then_some(sdk)
    })
}

/// `to` relative to `from` (both canonical), when they share a root.
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    // Sharing only `/` is no relation worth writing down.
    if common <= 1 {
        return None;
    }
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    Some(path)
}

// ---------------------------------------------------------------- build

/// A built and validated module.
#[derive(Debug)]
pub struct Built {
    /// The component.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 (the digest the cluster knows it by).
    pub sha256: String,
    /// What it declared.
    pub description: ModuleDescription,
}

/// Builds the crate at `crate_dir` with `cargo build --release --target
/// wasm32-wasip2` (into `target_dir` when given), then validates the
/// component. Cargo's progress and errors go to this process's stderr.
pub fn build(crate_dir: &Path, target_dir: Option<&Path>) -> Result<Built, ModuleToolError> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(ModuleToolError::NotACrate(crate_dir.to_owned()));
    }
    if wasm_target_installed() == Some(false) {
        return Err(ModuleToolError::TargetMissing(String::new()));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "--target", WASM_TARGET])
        // Diagnostics rendered on stderr as usual; artifacts as JSON on stdout.
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = target_dir {
        command.arg("--target-dir").arg(dir);
    }
    let shown = format!(
        "cargo build --release --target {WASM_TARGET} --manifest-path {}",
        manifest.display()
    );
    let mut child = command.spawn().map_err(io("run cargo for", crate_dir))?;
    // Forward cargo's stderr live (a release build takes a while) and keep
    // it to recognise a missing target.
    let stderr = child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            let mut kept = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                kept.push_str(&line);
                kept.push('\n');
            }
            kept
        })
    });
    let mut wasm = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = wasm_artifact(&line) {
                wasm = Some(path);
            }
        }
    }
    let status = child
        .wait()
        .map_err(io("wait for cargo building", crate_dir))?;
    let stderr = stderr
        .and_then(|thread| thread.join().ok())
        .unwrap_or_default();
    if !status.success() {
        let missing = [
            "target may not be installed",
            "can't find crate for `core`",
            "can't find crate for `std`",
        ]
        .iter()
        .any(|needle| stderr.contains(needle));
        if missing {
            return Err(ModuleToolError::TargetMissing(String::new()));
        }
        return Err(ModuleToolError::BuildFailed { command: shown });
    }
    let path = wasm.ok_or_else(|| ModuleToolError::NoArtifact(crate_dir.to_owned()))?;
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    let description = validate(&path, &bytes)?;
    Ok(Built {
        size: bytes.len() as u64,
        sha256: module_digest(&bytes).to_string(),
        path,
        description,
    })
}

/// Whether rustup lists the wasm target as installed; `None` without rustup
/// (the build itself then says whether the target is there).
pub fn wasm_target_installed() -> Option<bool> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.trim() == WASM_TARGET),
    )
}

/// The `.wasm` of a `compiler-artifact` message of a cdylib.
fn wasm_artifact(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let kinds = message.get("target")?.get("kind")?.as_array()?;
    if !kinds.iter().any(|k| k.as_str() == Some("cdylib")) {
        return None;
    }
    message
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

// ---------------------------------------------------------------- validate

/// Checks `bytes` the way the cluster does: the coordinator's component
/// check (a component exporting the hunt interface), then the worker's load
/// (compiles, links against the WIT world and the deny-all WASI, instantiates
/// and answers `describe()`).
pub fn validate(path: &Path, bytes: &[u8]) -> Result<ModuleDescription, ModuleToolError> {
    let invalid = |detail: String| ModuleToolError::Invalid {
        path: path.to_owned(),
        detail,
    };
    quarry_coordinator::module_check::check_component(bytes).map_err(|e| invalid(e.to_string()))?;
    let runtime = local_runtime()?;
    let module = runtime
        .load(&module_digest(bytes), bytes)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(module.description().clone())
}

/// A runtime with a worker's default maximums and a single slot; no disk
/// cache (a local run compiles once).
/// Environment variable naming the per-user compiled-module cache
/// directory; `off` disables it.
pub const MODULE_CACHE_ENV: &str = "QUARRY_MODULE_CACHE";
/// Bytes of compiled modules the per-user cache keeps.
pub const MODULE_CACHE_BYTES: u64 = 1024 * 1024 * 1024;

/// Where `quarry module test` and `module check` keep compiled modules, so
/// a hunter's edit-test loop compiles a module once per build of it:
/// `$QUARRY_MODULE_CACHE`, else `$XDG_CACHE_HOME/quarry/compiled-modules`,
/// else `~/.cache/quarry/compiled-modules`. `None` when disabled
/// (`QUARRY_MODULE_CACHE=off`) or no home is known.
pub fn module_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(MODULE_CACHE_ENV) {
        if dir == "off" || dir.is_empty() {
            return None;
        }
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("quarry").join("compiled-modules"))
}

/// Whether the compiled form of module `digest` is in the cache `dir`.
fn cached_artifact(dir: &Path, digest: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with(digest))
    })
}

fn local_runtime() -> Result<Runtime, ModuleToolError> {
    let cache = module_cache_dir().map(|dir| ModuleCacheConfig {
        max_disk_bytes: MODULE_CACHE_BYTES,
        ..ModuleCacheConfig::in_dir(&dir)
    });
    match Runtime::with_cache(1, RuntimeConfig::default(), cache) {
        Ok(runtime) => Ok(runtime),
        // An unusable cache directory costs speed, not the run.
        Err(error) if module_cache_dir().is_some() => {
            tracing::warn!(%error, "compiled-module cache unusable; compiling without it");
            Runtime::new(1, RuntimeConfig::default(), None)
                .map_err(|e| ModuleToolError::Runtime(e.to_string()))
        }
        Err(error) => Err(ModuleToolError::Runtime(error.to_string())),
    }
}

// ---------------------------------------------------------------- test

/// Parameters from `--params`: each value is a JSON object
/// (`{"threshold": 5}`) or one `key=value`.
pub fn parse_params(values: &[String]) -> Result<Vec<(String, String)>, ModuleToolError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for value in values {
        let text = value.trim();
        if text.starts_with('{') {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|e| {
                    ModuleToolError::BadParams(format!(
                        "--params `{text}` is not a JSON object of parameters: {e}"
                    ))
                })?;
            for (key, value) in object {
                let value = match value {
                    serde_json::Value::String(s) => s,
                    // Lists travel as comma-separated text (`Params::list`).
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|item| match item {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                params.push((key, value));
            }
        } else {
            match text.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    params.push((k.trim().to_owned(), v.to_owned()))
                }
                _ => {
                    return Err(ModuleToolError::BadParams(format!(
                        "--params `{text}`: expected key=value or a JSON object like '{{\"threshold\": 5}}'"
                    )));
                }
            }
        }
    }
    // The worker hands parameters over sorted; do the same.
    params.sort();
    if let Some(pair) = params.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(ModuleToolError::BadParams(format!(
            "parameter `{}` is given more than once",
            pair[0].0
        )));
    }
    Ok(params)
}

/// One log file as ingested by `quarry module test`.
#[derive(Debug)]
pub struct IngestedFile {
    /// The file.
    pub path: PathBuf,
    /// Its format (given or detected).
    pub format: Format,
    /// Events stored.
    pub events: u64,
    /// Records kept aside as malformed.
    pub malformed: u64,
    /// Events without a recognisable timestamp.
    pub without_timestamp: u64,
}

/// Where each malformed record was, for the report.
#[derive(Debug)]
pub struct MalformedAt {
    /// The file.
    pub source: String,
    /// `line N` or `record N`.
    pub place: String,
    /// What is wrong with it.
    pub error: String,
}

/// The result of `quarry module test`.
#[derive(Debug)]
pub struct LocalRun {
    /// The module's digest.
    pub digest: String,
    /// What it declared.
    pub description: ModuleDescription,
    /// Parameters it ran with.
    pub params: Vec<(String, String)>,
    /// The files, in order.
    pub files: Vec<IngestedFile>,
    /// The first malformed records.
    pub malformed: Vec<MalformedAt>,
    /// The task's output, or why it failed.
    pub outcome: Result<TaskOutput, TaskFailure>,
    /// How the module was compiled: from the per-user cache, or now.
    pub compiled: Compiled,
}

/// Where a local run's compiled module came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Compiled {
    /// Loaded from the per-user cache ([`module_cache_dir`]).
    FromCache(PathBuf),
    /// Compiled now, in this long, and kept in the cache for the next run.
    Now {
        /// Compile time.
        seconds: f64,
        /// The cache it was written to, if any.
        cache: Option<PathBuf>,
    },
}

/// The limits a worker gives a task of a hunt submitted without limits (the
/// coordinator's defaults; no output cap beyond the worker's maximum).
pub fn default_limits() -> TaskLimits {
    use quarry_coordinator::state::{DEFAULT_CPU_MS, DEFAULT_MAX_FINDINGS, DEFAULT_MEMORY_BYTES};
    TaskLimits {
        cpu: Duration::from_millis(DEFAULT_CPU_MS),
        memory_bytes: DEFAULT_MEMORY_BYTES,
        max_findings: DEFAULT_MAX_FINDINGS as usize,
        max_output_bytes: u64::MAX,
    }
}

/// Malformed records listed in a report.
const MALFORMED_SHOWN: usize = 20;

/// Ingests `logs` into one temporary shard (as `quarry worker ingest
/// --shard local` would) and runs the module over it exactly as a worker
/// runs a task, with `limits` (see [`default_limits`]). A failing module is
/// a `LocalRun` whose outcome is the failure; an `Err` means the run could
/// not happen (unreadable module or log, invalid module).
/// Reads the log file `path` (in `format`, or the detected one) into
/// `shard` of a scratch store, the way a worker ingests it; the error says
/// what went wrong with the file.
pub fn ingest_file(
    store: &ShardStore,
    shard: &str,
    path: &Path,
    format: Option<Format>,
) -> Result<(Format, quarry_worker::shard::IngestReport), String> {
    let (format, records) = ingest::open(path, format).map_err(|e| e.to_string())?;
    let report = store
        .append_from(
            shard,
            Default::default(),
            &path.display().to_string(),
            records,
            &mut |_| {},
        )
        .map_err(|e| e.to_string())?;
    Ok((format, report))
}

pub fn run_local(
    module_path: &Path,
    logs: &[PathBuf],
    format: Option<Format>,
    params: Vec<(String, String)>,
    limits: TaskLimits,
) -> Result<LocalRun, ModuleToolError> {
    let bytes = std::fs::read(module_path).map_err(io("read", module_path))?;
    let digest = module_digest(&bytes);
    quarry_coordinator::module_check::check_component(&bytes).map_err(|e| {
        ModuleToolError::Invalid {
            path: module_path.to_owned(),
            detail: e.to_string(),
        }
    })?;
    let scratch = tempfile::tempdir()
        .map_err(io("create a temporary directory in", &std::env::temp_dir()))?;
    let store_dir = scratch.path().join("shards");
    let store = ShardStore::open(&store_dir).map_err(|e| ModuleToolError::Ingest {
        path: store_dir.clone(),
        detail: e.to_string(),
    })?;
    let mut files = Vec::new();
    for path in logs {
        let failed = |detail: String| ModuleToolError::Ingest {
            path: path.clone(),
            detail,
        };
        let (format, report) = ingest_file(&store, LOCAL_SHARD, path, format).map_err(failed)?;
        files.push(IngestedFile {
            path: path.clone(),
            format,
            events: report.events_stored,
            malformed: report.malformed,
            without_timestamp: report.without_timestamp,
        });
    }
    let malformed = store
        .malformed(LOCAL_SHARD)
        .unwrap_or_default()
        .into_iter()
        .take(MALFORMED_SHOWN)
        .map(|record| MalformedAt {
            source: record.source,
            place: match record.record {
                Some(n) => format!("record {n}"),
                None => format!("line {}", record.line),
            },
            error: record.error,
        })
        .collect();

    let runtime = local_runtime()?;
    let cache = module_cache_dir();
    let was_cached = cache
        .as_deref()
        .is_some_and(|dir| cached_artifact(dir, digest.as_str()));
    let started = std::time::Instant::now();
    let module = runtime
        .load(&digest, &bytes)
        .map_err(|e| ModuleToolError::Invalid {
            path: module_path.to_owned(),
            detail: e.to_string(),
        })?;
    let compiled = match cache {
        Some(dir) if was_cached => Compiled::FromCache(dir),
        cache => Compiled::Now {
            seconds: started.elapsed().as_secs_f64(),
            cache,
        },
    };
    let outcome = if store.get(LOCAL_SHARD).is_some() {
        let task = TaskInput {
            params: &params,
            limits,
            shard: LOCAL_SHARD,
            time_range: None,
            hunt: None,
        };
        runtime.run(&module, &task, &store, &Arc::new(AtomicBool::new(false)))
    } else {
        // No file held a single event: nothing to scan.
        Ok(TaskOutput::default())
    };
    Ok(LocalRun {
        digest: digest.to_string(),
        description: module.description().clone(),
        params,
        files,
        malformed,
        outcome,
        compiled,
    })
}

/// A short, stable name for a failure's kind (for scripts and the report).
pub fn failure_kind(failure: &TaskFailure) -> &'static str {
    match failure {
        TaskFailure::DeadlineExceeded { .. } => "deadline-exceeded",
        TaskFailure::MemoryLimit { .. } => "memory-limit",
        TaskFailure::Trap { .. } => "trap",
        TaskFailure::OutputLimit { .. } => "output-limit",
        TaskFailure::HostCallDenied { .. } => "host-call-denied",
        TaskFailure::HostCallLimit { .. } => "host-call-limit",
        TaskFailure::InvalidModule { .. } => "invalid-module",
        TaskFailure::Rejected(_) => "rejected-parameters",
        TaskFailure::BadIntel(_) => "bad-intel-sets",
        TaskFailure::BadOutput(_) => "malformed-output",
        TaskFailure::ModuleError(_) => "module-error",
        TaskFailure::Cancelled => "cancelled",
        TaskFailure::Host(_) => "host-error",
    }
}

/// The output's findings as the cluster reports them (shard `local`).
pub fn findings(output: &TaskOutput) -> Vec<v1::Finding> {
    output
        .findings
        .iter()
        .cloned()
        .map(|f| v1::Finding {
            shard: LOCAL_SHARD.to_owned(),
            ..quarry_worker::agent::finding(f)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "watch-admins", "dns2-tunnel"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "Abc", "a_b", "a-", "a--b", "a b", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_from_json_and_pairs() {
        let params = parse_params(&[
            r#"{"threshold": 5, "users": ["a", "b"], "on": true}"#.to_owned(),
            "window=10".to_owned(),
        ])
        .unwrap();
        assert_eq!(
            params,
            [
                ("on".to_owned(), "true".to_owned()),
                ("threshold".to_owned(), "5".to_owned()),
                ("users".to_owned(), "a,b".to_owned()),
                ("window".to_owned(), "10".to_owned()),
            ]
        );
        assert!(parse_params(&["novalue".to_owned()]).is_err());
        assert!(parse_params(&["{not json".to_owned()]).is_err());
        let err = parse_params(&["a=1".to_owned(), "a=2".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn relative_sdk_paths() {
        assert_eq!(
            relative(
                Path::new("/r/hunt-modules/x"),
                Path::new("/r/sdk/quarry-sdk")
            ),
            Some(PathBuf::from("../../sdk/quarry-sdk"))
        );
        assert_eq!(relative(Path::new("/tmp/x"), Path::new("/r/sdk")), None);
    }

    #[test]
    fn scaffold_needs_an_sdk_and_a_fresh_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = scaffold("x", dir.path(), None, dir.path()).unwrap_err();
        assert!(matches!(err, ModuleToolError::SdkNotFound), "{err}");
        let err = scaffold("x", dir.path(), Some(dir.path()), dir.path()).unwrap_err();
        assert!(matches!(err, ModuleToolError::NotTheSdk(_)), "{err}");
        // A fake checkout: only the SDK's manifest matters here.
        let sdk = dir.path().join("repo").join(SDK_IN_REPO);
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::write(sdk.join("Cargo.toml"), "[package]\nname = \"quarry-sdk\"\n").unwrap();
        let parent = dir.path().join("repo/hunt-modules");
        let made = scaffold("my-hunt", &parent, None, dir.path()).unwrap();
        assert_eq!(made.sdk, "../../sdk/quarry-sdk");
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("Descriptor::new(\"my-hunt\""));
        let err = scaffold("my-hunt", &parent, None, dir.path()).unwrap_err();
        assert!(matches!(err, ModuleToolError::AlreadyExists(_)), "{err}");
    }
}
