//! Rule packs (docs/sigma.md#rule-packs): named, versioned sets of Sigma
//! rule files in the cluster's store. A hunt is bound to one version of a
//! pack by a single small parameter, `rule-pack-ref.<pack>` =
//! `<version>:<sha256>`, instead of carrying the rules; the worker fetches
//! the pack by that digest once, checks it, and hands the module each file
//! as `rule.<pack>/<path>`.
//!
//! What the coordinator (which stores, binds and serves packs) and the
//! worker (which fetches and checks them) must agree on lives here: the
//! parameter's format, names and paths, the limits, and the canonical
//! content the digest is taken over. Both hash it with SHA-256 themselves
//! (this crate has no hashing dependency): [`canonical_parts`] feeds the
//! bytes in order.

use std::collections::BTreeMap;
use std::fmt;

/// Parameter-name prefix binding a hunt to a stored pack:
/// `rule-pack-ref.<pack>` = `<version>:<digest>` (see [`Ref`]).
pub const REF_PREFIX: &str = "rule-pack-ref.";

/// Prefix of the parameters the `sigma` module reads rules from; a pack's
/// files become `rule.<pack>/<path>`.
pub const RULE_PARAM_PREFIX: &str = "rule.";

/// The value a schedule's template holds for a pack it follows: each run is
/// bound to the version that is latest when it starts.
pub const LATEST: &str = "latest";

/// Most bytes of rule text one pack holds (16 MiB: the whole SigmaHQ tree
/// is about 4 MiB).
pub const MAX_PACK_BYTES: u64 = 16 * 1024 * 1024;

/// Most rule files one pack holds.
pub const MAX_PACK_RULES: usize = 10_000;

/// Longest relative path of a rule file, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// What the digest's input starts with, so that it can never be mistaken
/// for the digest of anything else (a module, a single file).
const DOMAIN: &[u8] = b"quarry-rule-pack-v1\n";

/// A hunt's binding to one stored version of a pack.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ref {
    /// The version (1, 2, ... per name).
    pub version: u32,
    /// The SHA-256 of the version's canonical content, lowercase hex.
    pub digest: String,
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.version, self.digest)
    }
}

/// What a `rule-pack-ref.<pack>` parameter holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// One version, with its digest (every hunt).
    Pinned(Ref),
    /// The latest version at each run (only a schedule's template).
    Latest,
}

/// Reads a `rule-pack-ref.<pack>` parameter's value: `<version>:<digest>`
/// or `latest`.
pub fn parse_ref(value: &str) -> Result<Binding, String> {
    if value == LATEST {
        return Ok(Binding::Latest);
    }
    let bad = || {
        format!(
            "a rule-pack binding is `<version>:<sha256>` (as `quarry sigma show` prints it) or `{LATEST}`, not `{value}`"
        )
    };
    let (version, digest) = value.split_once(':').ok_or_else(bad)?;
    let version: u32 = version.parse().map_err(|_| bad())?;
    if version == 0 {
        return Err(bad());
    }
    check_digest(digest).map_err(|_| bad())?;
    Ok(Binding::Pinned(Ref {
        version,
        digest: digest.to_owned(),
    }))
}

/// A digest as packs are named by: 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<(), String> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "`{digest}` is not a SHA-256 digest (64 lowercase hex digits)"
        ))
    }
}

/// A pack name: 1 to 64 of `a-z 0-9 _ -` (it becomes part of parameter
/// names and of every rule's name, so nothing that needs quoting).
pub fn check_name(name: &str) -> Result<(), String> {
    quarry_contract::check_name("rule pack", name)
}

/// A rule file's path inside a pack: relative, `/`-separated, no empty,
/// `.` or `..` parts, ending in `.yml` or `.yaml` (any case), at most
/// [`MAX_PATH_BYTES`] bytes, no control characters.
pub fn check_path(path: &str) -> Result<(), String> {
    let problem = if path.is_empty() {
        Some("is empty")
    } else if path.len() > MAX_PATH_BYTES {
        Some("is longer than 512 bytes")
    } else if path.starts_with('/') || path.contains('\\') {
        Some("must be relative, with `/` separators")
    } else if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        Some("has an empty, `.` or `..` part")
    } else if path.chars().any(char::is_control) {
        Some("holds a control character")
    } else if !path
        .rsplit_once('.')
        .is_some_and(|(_, ext)| ext.eq_ignore_ascii_case("yml") || ext.eq_ignore_ascii_case("yaml"))
    {
        Some("must end in .yml or .yaml")
    } else {
        None
    };
    match problem {
        Some(why) => Err(format!("rule file path `{path}` {why}")),
        None => Ok(()),
    }
}

/// The parameter the module sees rule file `path` of pack `pack` as.
pub fn param_name(pack: &str, path: &str) -> String {
    format!("{RULE_PARAM_PREFIX}{pack}/{path}")
}

/// Feeds the canonical content of a pack to `feed`, in order: a version
/// tag, then per file (in path order, as the map holds them) the path's
/// length (8 bytes, big-endian), the path, the text's length and the
/// text. Lengths make the encoding unambiguous whatever the texts hold.
/// The pack's digest is the SHA-256 of these bytes.
pub fn canonical_parts(files: &BTreeMap<String, String>, mut feed: impl FnMut(&[u8])) {
    feed(DOMAIN);
    for (path, text) in files {
        feed(&(path.len() as u64).to_be_bytes());
        feed(path.as_bytes());
        feed(&(text.len() as u64).to_be_bytes());
        feed(text.as_bytes());
    }
}

/// The digest of a pack's content: hex SHA-256 of [`canonical_parts`], as
/// the coordinator stores it and workers check it.
pub fn digest(files: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    canonical_parts(files, |part| hasher.update(part));
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes of rule text in `files`.
pub fn text_bytes(files: &BTreeMap<String, String>) -> u64 {
    files.values().map(|t| t.len() as u64).sum()
}

/// Checks a pack's content against the limits and the path rules.
pub fn check_files(files: &BTreeMap<String, String>) -> Result<(), String> {
    if files.is_empty() {
        return Err("a rule pack needs at least one rule file".to_owned());
    }
    if files.len() > MAX_PACK_RULES {
        return Err(format!(
            "the pack holds {} rule files, more than the {MAX_PACK_RULES} a pack may; split it into several packs",
            files.len()
        ));
    }
    let bytes = text_bytes(files);
    if bytes > MAX_PACK_BYTES {
        return Err(format!(
            "the pack holds {bytes} bytes of rules, more than the {MAX_PACK_BYTES} (16 MiB) a pack may; split it into several packs"
        ));
    }
    files.keys().try_for_each(|path| check_path(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn bindings_read_back_as_written() {
        let pinned = Ref {
            version: 3,
            digest: DIGEST.to_owned(),
        };
        assert_eq!(
            parse_ref(&pinned.to_string()),
            Ok(Binding::Pinned(pinned.clone()))
        );
        assert_eq!(parse_ref("latest"), Ok(Binding::Latest));
        for bad in [
            "3",
            "0:x",
            &format!("0:{DIGEST}"),
            "x:y",
            &DIGEST.to_uppercase(),
        ] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_stay_inside_the_pack() {
        for good in ["a.yml", "windows/process_creation/x.yaml", "B.YML"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/etc/x.yml",
            "../x.yml",
            "a//b.yml",
            "a/./b.yml",
            "a\\b.yml",
            "notes.txt",
            "a\nb.yml",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&format!("{}.yml", "a".repeat(MAX_PATH_BYTES))).is_err());
    }

    #[test]
    fn the_canonical_content_separates_paths_from_texts() {
        let collect = |files: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = files
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                .collect();
            let mut bytes = Vec::new();
            canonical_parts(&map, |part| bytes.extend_from_slice(part));
            bytes
        };
        // Moving bytes between a path and its text changes the content.
        assert_ne!(
            collect(&[("a.yml", "title: x")]),
            collect(&[("a.ymlt", "itle: x")])
        );
        // The order of insertion does not matter; the paths' order does.
        assert_eq!(
            collect(&[("b.yml", "2"), ("a.yml", "1")]),
            collect(&[("a.yml", "1"), ("b.yml", "2")])
        );
    }

    #[test]
    fn limits_are_named_in_the_refusal() {
        assert!(check_files(&BTreeMap::new()).is_err());
        let big = BTreeMap::from([("a.yml".to_owned(), "x".repeat(MAX_PACK_BYTES as usize + 1))]);
        assert!(check_files(&big).expect_err("too big").contains("16 MiB"));
        let many: BTreeMap<String, String> = (0..=MAX_PACK_RULES)
            .map(|n| (format!("r{n}.yml"), String::new()))
            .collect();
        assert!(check_files(&many).expect_err("too many").contains("10000"));
        assert!(check_name("windows-2026_q1").is_ok());
        assert!(check_name("Windows").is_err() && check_name("a/b").is_err());
    }
}
