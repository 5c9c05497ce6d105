//! The one way tests find the shared real-world data set (Sigma rules,
//! attack-simulation logs): `$QUARRY_SHARED_DATA`, defaulting to
//! `../shared/data` beside the repository.
//!
//! Where the folder is missing a test skips with a visible message, except
//! under `CI=true`, where a missing folder fails the run: CI has the data, so
//! its absence there is a broken set-up, not a reason to pass.

use std::path::PathBuf;

/// Environment variable naming the data folder.
pub const ENV: &str = "QUARRY_SHARED_DATA";

/// The data folder, or `None` (after printing why) when a test should skip.
///
/// # Panics
/// Under `CI=true` when the folder is missing.
pub fn shared_data() -> Option<PathBuf> {
    let path = match std::env::var_os(ENV) {
        Some(path) => PathBuf::from(path),
        None => default_path(),
    };
    if path.join("README.md").is_file() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "shared test data not found at {} (set {ENV}); CI must have it",
        path.display()
    );
    eprintln!(
        "SKIPPED: shared test data not found at {} (set {ENV} to run this test)",
        path.display()
    );
    None
}

/// `<workspace>/../shared/data`, the workspace found at run time from the
/// running test's package directory (cargo and nextest set
/// `CARGO_MANIFEST_DIR` for test processes) or the current directory. Not
/// from `env!` at build time: builds share a target directory across
/// checkouts, and a compiled-in path would point into whichever checkout
/// built this crate first.
fn default_path() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let workspace = start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(&start);
    workspace.join("../shared/data")
}

/// A file under the data folder, or `None` when the folder is missing.
///
/// # Panics
/// When the folder exists but the file does not (the data set changed), and
/// under `CI=true` when the folder is missing.
pub fn shared_file(relative: &str) -> Option<PathBuf> {
    let path = shared_data()?.join(relative);
    assert!(
        path.is_file(),
        "{} is missing from the shared data set",
        path.display()
    );
    Some(path)
}

/// The JSON-lines log files of the data set (`logs/**/*.jsonl` and the Zeek
/// JSON `.log` files), in path order, or `None` when the folder is missing.
///
/// # Panics
/// Under `CI=true` when the folder is missing.
pub fn shared_json_logs() -> Option<Vec<PathBuf>> {
    let mut stack = vec![shared_data()?.join("logs")];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let name = path.to_string_lossy();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".jsonl")
                || (name.contains("zeek_json") && name.ends_with(".log"))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    Some(files)
}

/// The Sigma rule files under `dir` as the sigma module's parameters, the
/// way its host-side loader builds them: `rule.<path relative to dir>` (with
/// `/` separators) and the file's text, in path order.
///
/// # Panics
/// When `dir` or a rule file cannot be read.
pub fn sigma_rule_params(dir: &std::path::Path) -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (format!("rule.{name}"), text)
        })
        .collect()
}
