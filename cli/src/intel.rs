//! `--intel NAME=FILE`: an intel set read from a file into the hunt
//! parameter `intel.NAME`, which workers (and `quarry module test`) turn
//! into the set a module looks values up in (see `quarry_contract::intel`).

use quarry_contract::intel::{IntelSets, PARAM_PREFIX};
use sha2::{Digest as _, Sha256};

/// Reads `NAME=FILE` into the parameter `(intel.NAME, contents)`, checking
/// the name and the contents as a worker will, so a mistake shows here
/// rather than as a failed task.
pub fn intel_param(spec: &str) -> Result<(String, String), String> {
    let Some((name, path)) = spec.split_once('=') else {
        return Err(format!(
            "expected NAME=FILE (for example bad-hashes=hashes.txt), got `{spec}`"
        ));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read intel set `{name}` from {path}: {e}"))?;
    let mut sets = IntelSets::new();
    sets.add(name, &text)?;
    if sets.is_empty() {
        return Err(format!(
            "intel set `{name}` from {path} holds no indicators (one per line; `#` starts a comment)"
        ));
    }
    Ok((format!("{PARAM_PREFIX}{name}"), text))
}

/// Stores the text of `--intel NAME=FILE` (parameter `key` = `intel.NAME`)
/// as a one-off set named after its content (`oneoff-<12 hex of its
/// sha256>`; the same file again reuses it) and returns `NAME` and the
/// binding `oneoff-…@VERSION` for the hunt's `intel-ref.NAME` parameter.
pub async fn upload_one_off(
    client: &mut quarry_client::Client,
    key: &str,
    text: String,
) -> anyhow::Result<(String, String)> {
    let name = key.strip_prefix(PARAM_PREFIX).unwrap_or(key).to_owned();
    let digest = hex_prefix(&Sha256::digest(text.as_bytes()));
    let stored = format!("oneoff-{digest}");
    let existing = client
        .list_intel()
        .await?
        .into_iter()
        .find(|s| s.name == stored)
        .map(|s| s.version);
    let version = match existing {
        Some(version) => version,
        None => {
            let imported = client
                .import_intel(
                    &stored,
                    "lines",
                    text.into_bytes(),
                    &format!("--intel {name}"),
                )
                .await?;
            for problem in &imported.problems {
                eprintln!(
                    "intel set {name}: skipped {}: {}",
                    problem.position, problem.message
                );
            }
            imported.set.map_or(1, |s| s.version)
        }
    };
    Ok((name, format!("{stored}@{version}")))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_into_a_parameter_and_names_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ips.txt");
        std::fs::write(&path, "# feed\n203.0.113.7\n198.51.100.2\n").unwrap();
        let (key, text) = intel_param(&format!("bad-ips={}", path.display())).unwrap();
        assert_eq!(key, "intel.bad-ips");
        assert!(text.contains("203.0.113.7"));
        assert!(intel_param("bad-ips").unwrap_err().contains("NAME=FILE"));
        assert!(
            intel_param(&format!("Bad={}", path.display()))
                .unwrap_err()
                .contains("a-z, 0-9")
        );
        assert!(
            intel_param("x=/nonexistent/file")
                .unwrap_err()
                .contains("cannot read intel set `x`")
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing yet\n").unwrap();
        assert!(
            intel_param(&format!("x={}", empty.display()))
                .unwrap_err()
                .contains("no indicators")
        );
    }
}
