//! Host-side helper: Sigma rule files and directories to module parameters.
//!
//! The module has no filesystem, so rules travel as hunt parameters: one
//! parameter per rule file, named `rule.<relative path>` (see
//! [`RULE_PARAM_PREFIX`]), holding the file's YAML text. This module turns a
//! file or a directory tree of `.yml` / `.yaml` files into those pairs, in a
//! stable (sorted) order, for `quarry module test --rules DIR`, hunt
//! submission tools and tests.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Prefix of the parameters that carry rules: `rule.windows/proc_x.yml`.
pub const RULE_PARAM_PREFIX: &str = "rule.";

/// Why rules could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// A file or directory could not be read.
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// A rule file is not UTF-8 text.
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// The path holds no `.yml`/`.yaml` file.
    NoRules {
        /// The path.
        path: PathBuf,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, source } => {
                write!(f, "cannot read Sigma rules at {}: {source}", path.display())
            }
            LoadError::NotUtf8 { path } => write!(
                f,
                "Sigma rule {} is not UTF-8 text; save it as UTF-8",
                path.display()
            ),
            LoadError::NoRules { path } => write!(
                f,
                "no Sigma rules (.yml or .yaml files) at {}; pass a rule file or a directory of them",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads a rule file, or every `.yml`/`.yaml` file under a directory
/// (recursively, sorted by path), into `(rule.<name>, text)` parameters.
///
/// The name is the path relative to `path` with `/` separators (the file
/// name for a single file), so rules with the same file name in different
/// directories stay distinct.
///
/// ```no_run
/// let params = sigma::loader::rule_params("rules/windows".as_ref())?;
/// assert!(params.iter().all(|(name, _)| name.starts_with("rule.")));
/// # Ok::<(), sigma::loader::LoadError>(())
/// ```
pub fn rule_params(path: &Path) -> Result<Vec<(String, String)>, LoadError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    let meta = std::fs::metadata(path).map_err(io_error(path))?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        collect(path, &mut files)?;
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(LoadError::NoRules {
            path: path.to_path_buf(),
        });
    }
    let mut params = Vec::with_capacity(files.len());
    for file in files {
        let bytes = std::fs::read(&file).map_err(io_error(&file))?;
        let text =
            String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8 { path: file.clone() })?;
        let name = if meta.is_dir() {
            file.strip_prefix(path)
                .unwrap_or(&file)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        } else {
            file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        params.push((format!("{RULE_PARAM_PREFIX}{name}"), text));
    }
    Ok(params)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            collect(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_trees() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        std::fs::write(dir.path().join("b/c/z.yml"), "title: z").unwrap();
        std::fs::write(dir.path().join("a.yaml"), "title: a").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
        let params = rule_params(dir.path()).unwrap();
        assert_eq!(
            params,
            [
                ("rule.a.yaml".to_owned(), "title: a".to_owned()),
                ("rule.b/c/z.yml".to_owned(), "title: z".to_owned()),
            ]
        );
        let single = rule_params(&dir.path().join("b/c/z.yml")).unwrap();
        assert_eq!(single[0].0, "rule.z.yml");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            rule_params(empty.path()).unwrap_err(),
            LoadError::NoRules { .. }
        ));
        assert!(matches!(
            rule_params(&dir.path().join("missing")).unwrap_err(),
            LoadError::Io { .. }
        ));
    }
}
