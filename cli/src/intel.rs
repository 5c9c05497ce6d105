//! `--intel NAME=FILE`: an intel set read from a file into the hunt
//! parameter `intel.NAME`, which workers (and `quarry module test`) turn
//! into the set a module looks values up in (see `quarry_contract::intel`).

use quarry_contract::intel::{IntelSets, PARAM_PREFIX};

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
