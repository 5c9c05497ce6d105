//! `quarry sigma`: Sigma rule packs, named and versioned in the cluster's
//! store (docs/sigma.md#rule-packs). `import` reads rule directories into
//! a pack, `list`, `show` and `delete` manage them; hunts and schedules
//! name a pack with `--rule-pack NAME[@VERSION]` and carry a reference to
//! it instead of the rules.

use crate::client_args::{ClientArgs, connect, out};
use crate::output::{Output, bytes, json_line, table, time};
use anyhow::{Context as _, bail};
use clap::Subcommand;
use quarry_proto::rule_pack;
use quarry_proto::v1;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `quarry sigma` subcommands.
#[derive(Subcommand)]
pub enum SigmaCommand {
    /// Import Sigma rule files and directories as a rule pack.
    ///
    /// The pack becomes the next version of NAME, unless the rules are the
    /// latest version's (then nothing changes). Every
    /// `.yml`/`.yaml` file below a directory is a rule, named by its path
    /// relative to that directory; other files and hidden entries are
    /// skipped and listed. At most 10,000 rules and 16 MiB per pack.
    #[command(after_help = "Examples:
  quarry sigma import sigma/rules/windows --name windows
  quarry sigma import rules/windows rules-threat-hunting/windows --name windows-all
  quarry sigma import my-rules/lsass.yml --name lsass

Then:
  quarry hunt submit sigma --selector os=windows --rule-pack windows
  quarry schedule create nightly-sigma sigma --selector os=windows --rule-pack windows@latest --cron '0 3 * * *'")]
    Import {
        /// Rule files or directories of them (several are one pack; a
        /// path that two of them hold is refused).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Pack name: 1-64 of a-z, 0-9, `_`, `-`.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The latest version of every rule pack.
    #[command(after_help = "Example:\n  quarry sigma list --output json")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One pack: digest, rules, size, versions kept, what uses it.
    ///
    /// Also who imported it, when and from where; with --rules, its rule
    /// files (path, title, level, size).
    #[command(after_help = "Examples:
  quarry sigma show windows
  quarry sigma show windows@2 --rules
  quarry sigma show windows --rules --output json")]
    Show {
        /// `NAME` (the latest version) or `NAME@VERSION`.
        #[arg(value_name = "NAME[@VERSION]")]
        pack: String,
        /// List the rule files (path, title, level, size).
        #[arg(long)]
        rules: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a pack (every version) or one version of it.
    ///
    /// Refused while a running hunt or a schedule uses what would go,
    /// unless --force.
    #[command(after_help = "Examples:
  quarry sigma delete windows@1
  quarry sigma delete windows
  quarry sigma delete windows --force   # hunts and schedules using it then fail, naming it")]
    Delete {
        /// `NAME` (every version) or `NAME@VERSION`.
        #[arg(value_name = "NAME[@VERSION]")]
        pack: String,
        /// Delete even while running hunts or schedules use it: their
        /// tasks and runs fail, naming the pack (workers that cached it
        /// may still finish tasks they started).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A file or directory entry an import left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The entry.
    pub path: PathBuf,
    /// Why.
    pub why: &'static str,
}

/// Rule files read for a pack.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    /// Relative path -> YAML text.
    pub files: BTreeMap<String, String>,
    /// What was left out.
    pub skipped: Vec<Skipped>,
}

fn is_rule(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
}

/// Reads rule files and directories into a pack's files, as `--rules`
/// names them: a directory's rules by their path relative to it, a file
/// by its name. Other files and hidden entries (`.git`, `.github`) are
/// skipped and reported; a path two arguments share is refused.
pub fn read_rules(paths: &[PathBuf]) -> anyhow::Result<Collected> {
    let mut collected = Collected::default();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    for root in paths {
        let meta = std::fs::metadata(root)
            .with_context(|| format!("cannot read Sigma rules at {}", root.display()))?;
        let mut found = Vec::new();
        if meta.is_dir() {
            walk(root, &mut found, &mut collected.skipped)?;
            found.sort();
        } else if is_rule(root) {
            found.push(root.clone());
        } else {
            bail!(
                "{} is not a Sigma rule file (.yml or .yaml) or a directory of them",
                root.display()
            );
        }
        for file in found {
            let relative = if meta.is_dir() {
                file.strip_prefix(root).unwrap_or(&file)
            } else {
                Path::new(file.file_name().unwrap_or(file.as_os_str()))
            };
            let name = relative
                .components()
                .map(|c| {
                    c.as_os_str().to_str().map(str::to_owned).with_context(|| {
                        format!("the name of {} is not UTF-8; rename it", file.display())
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join("/");
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!(
                    "Sigma rule {} is not UTF-8 text; save it as UTF-8",
                    file.display()
                )
            })?;
            if let Some(first) = origin.insert(name.clone(), file.clone()) {
                bail!(
                    "{} and {} would both be rule `{name}` of the pack; import their common parent directory instead, or rename one",
                    first.display(),
                    file.display()
                );
            }
            collected.files.insert(name, text);
        }
    }
    if collected.files.is_empty() {
        bail!(
            "no Sigma rules (.yml or .yaml files) under {}; pass rule files or directories of them",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    rule_pack::check_files(&collected.files).map_err(anyhow::Error::msg)?;
    Ok(collected)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        // Hidden entries are tooling (`.git`, `.github/workflows/*.yml`),
        // not rules.
        if entry.file_name().to_string_lossy().starts_with('.') {
            skipped.push(Skipped {
                path,
                why: "hidden",
            });
        } else if kind.is_dir() {
            walk(&path, out, skipped)?;
        } else if is_rule(&path) {
            out.push(path);
        } else {
            skipped.push(Skipped {
                path,
                why: "not a .yml or .yaml file",
            });
        }
    }
    Ok(())
}

/// `NAME` or `NAME@VERSION` (version 0: none named).
pub fn parse_pack(text: &str) -> anyhow::Result<(String, u32)> {
    let (name, version) = match text.split_once('@') {
        None => (text, 0),
        Some((name, version)) => match version.parse::<u32>() {
            Ok(v) if v > 0 => (name, v),
            _ => bail!(
                "`{text}`: a version is a number from `quarry sigma list` (NAME@3), or leave it out"
            ),
        },
    };
    rule_pack::check_name(name).map_err(anyhow::Error::msg)?;
    Ok((name.to_owned(), version))
}

fn pack_json(pack: &v1::RulePackInfo) -> serde_json::Value {
    json!({
        "name": pack.name, "version": pack.version, "digest": pack.digest,
        "rules": pack.rules, "bytes": pack.bytes, "source": pack.source,
        "imported_by": pack.imported_by, "imported": time(pack.imported_ms),
    })
}

fn packs_table(packs: &[v1::RulePackInfo]) {
    table(
        &[
            "NAME", "VERSION", "RULES", "SIZE", "DIGEST", "IMPORTED", "BY",
        ],
        packs
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.version.to_string(),
                    p.rules.to_string(),
                    bytes(p.bytes),
                    p.digest.chars().take(12).collect(),
                    time(p.imported_ms),
                    p.imported_by.clone(),
                ]
            })
            .collect(),
    );
}

/// A top-level `key: value` of a rule's YAML, for listings (the rule is
/// parsed by the module, not here).
fn top_level(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            Some(
                value
                    .trim()
                    .trim_matches(|c| c == '\'' || c == '"')
                    .to_owned(),
            )
        })
        .unwrap_or_default()
}

/// Runs a `quarry sigma` command.
pub async fn run(command: SigmaCommand) -> anyhow::Result<()> {
    match command {
        SigmaCommand::Import {
            paths,
            name,
            client: args,
        } => {
            rule_pack::check_name(&name).map_err(anyhow::Error::msg)?;
            let read = paths.clone();
            let collected = tokio::task::spawn_blocking(move || read_rules(&read)).await??;
            let source = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let files = collected
                .files
                .into_iter()
                .map(|(path, text)| v1::RuleFile { path, text })
                .collect();
            let imported = connect(&args)
                .await?
                .import_rule_pack(&name, files, &source)
                .await?;
            let pack = imported.pack.unwrap_or_default();
            match out(args.output) {
                Output::Json => {
                    let mut value = pack_json(&pack);
                    value["unchanged"] = json!(imported.unchanged);
                    value["skipped"] = json!(
                        collected
                            .skipped
                            .iter()
                            .map(|s| json!({"path": s.path.display().to_string(), "why": s.why}))
                            .collect::<Vec<_>>()
                    );
                    json_line(value);
                }
                Output::Table => {
                    for s in &collected.skipped {
                        eprintln!(
                            "skipped {}: {}",
                            crate::output::escape(&s.path.display().to_string()),
                            s.why
                        );
                    }
                    println!("name:    {}", pack.name);
                    println!("version: {}", pack.version);
                    println!("digest:  sha256:{}", pack.digest);
                    println!("rules:   {} ({})", pack.rules, bytes(pack.bytes));
                    if imported.unchanged {
                        eprintln!(
                            "unchanged: {}@{} already holds these rules; hunts keep using it",
                            pack.name, pack.version
                        );
                    } else {
                        eprintln!(
                            "imported {} rules as {}@{}; {} entries skipped. Use it: quarry hunt submit sigma --rule-pack {} ...",
                            pack.rules,
                            pack.name,
                            pack.version,
                            collected.skipped.len(),
                            pack.name
                        );
                    }
                }
            }
        }
        SigmaCommand::List { client: args } => {
            let packs = connect(&args).await?.list_rule_packs().await?;
            match out(args.output) {
                Output::Json => packs.iter().for_each(|p| json_line(pack_json(p))),
                Output::Table => packs_table(&packs),
            }
        }
        SigmaCommand::Show {
            pack,
            rules,
            client: args,
        } => {
            let (name, version) = parse_pack(&pack)?;
            let shown = connect(&args)
                .await?
                .get_rule_pack(&name, version, rules)
                .await?;
            let info = shown.pack.clone().unwrap_or_default();
            let listed: Vec<(String, String, String, usize)> = shown
                .files
                .iter()
                .map(|f| {
                    (
                        f.path.clone(),
                        top_level(&f.text, "title"),
                        top_level(&f.text, "level"),
                        f.text.len(),
                    )
                })
                .collect();
            match out(args.output) {
                Output::Json => {
                    let mut value = pack_json(&info);
                    value["versions"] = json!(shown.versions);
                    value["used_by"] = json!(shown.used_by);
                    if rules {
                        value["rule_files"] = json!(
                            listed
                                .iter()
                                .map(|(path, title, level, size)| json!({
                                    "path": path, "title": title, "level": level, "bytes": size,
                                }))
                                .collect::<Vec<_>>()
                        );
                    }
                    json_line(value);
                }
                Output::Table => {
                    let versions = shown
                        .versions
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    let used = if shown.used_by.is_empty() {
                        "-".to_owned()
                    } else {
                        shown.used_by.join(", ")
                    };
                    let escape = |t: &str| crate::output::escape(t).into_owned();
                    println!("name:     {}", info.name);
                    println!("version:  {} (kept: {versions})", info.version);
                    println!("digest:   sha256:{}", info.digest);
                    println!("rules:    {} ({})", info.rules, bytes(info.bytes));
                    println!("source:   {}", escape(&info.source));
                    println!(
                        "imported: {} by {}",
                        time(info.imported_ms),
                        escape(&info.imported_by)
                    );
                    println!("used by:  {used}");
                    if rules {
                        println!();
                        table(
                            &["PATH", "TITLE", "LEVEL", "SIZE"],
                            listed
                                .into_iter()
                                .map(|(path, title, level, size)| {
                                    vec![path, title, level, bytes(size as u64)]
                                })
                                .collect(),
                        );
                    }
                }
            }
        }
        SigmaCommand::Delete {
            pack,
            force,
            client: args,
        } => {
            let (name, version) = parse_pack(&pack)?;
            let deleted = connect(&args)
                .await?
                .delete_rule_pack(&name, version, force)
                .await?;
            let list = deleted
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            match out(args.output) {
                Output::Json => json_line(json!({"name": name, "deleted_versions": deleted})),
                Output::Table => println!("deleted rule pack {name} (versions {list})"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, text: &[u8]) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn directories_become_rules_by_relative_path_and_the_rest_is_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "windows/a.yml", b"title: A\nlevel: high\n");
        write(dir.path(), "windows/sub/b.YAML", b"title: 'B'\n");
        write(dir.path(), "README.md", b"# rules");
        write(dir.path(), ".github/workflows/ci.yml", b"on: push");
        let read = read_rules(&[dir.path().to_owned()]).expect("read");
        assert_eq!(
            read.files.keys().collect::<Vec<_>>(),
            ["windows/a.yml", "windows/sub/b.YAML"]
        );
        let skipped: Vec<(String, &str)> = read
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_string_lossy().into_owned(),
                    s.why,
                )
            })
            .collect();
        assert!(skipped.contains(&("README.md".into(), "not a .yml or .yaml file")));
        assert!(skipped.contains(&(".github".into(), "hidden")));
        assert_eq!(top_level(&read.files["windows/sub/b.YAML"], "title"), "B");
        assert_eq!(top_level(&read.files["windows/a.yml"], "level"), "high");

        // A single file is named by its file name; two roots may not both
        // hold a path.
        let single = read_rules(&[dir.path().join("windows/a.yml")]).expect("file");
        assert_eq!(single.files.keys().collect::<Vec<_>>(), ["a.yml"]);
        let other = tempfile::tempdir().expect("tempdir");
        write(other.path(), "a.yml", b"title: other A\n");
        let clash = read_rules(&[dir.path().join("windows"), other.path().to_owned()])
            .expect_err("a.yml twice");
        assert!(
            clash.to_string().contains("would both be rule `a.yml`")
                && clash.to_string().contains("common parent"),
            "{clash}"
        );
    }

    #[test]
    fn unusable_input_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = read_rules(&[dir.path().join("nope")]).expect_err("missing");
        assert!(
            missing.to_string().contains("cannot read Sigma rules at"),
            "{missing}"
        );
        let empty = read_rules(&[dir.path().to_owned()]).expect_err("empty");
        assert!(empty.to_string().contains("no Sigma rules"), "{empty}");
        write(dir.path(), "notes.txt", b"x");
        let not_rule = read_rules(&[dir.path().join("notes.txt")]).expect_err("txt");
        assert!(
            not_rule.to_string().contains("is not a Sigma rule file"),
            "{not_rule}"
        );
        write(dir.path(), "latin1.yml", b"title: caf\xe9\n");
        let latin1 = read_rules(&[dir.path().to_owned()]).expect_err("not UTF-8");
        assert!(latin1.to_string().contains("save it as UTF-8"), "{latin1}");

        assert_eq!(parse_pack("windows").expect("name"), ("windows".into(), 0));
        assert_eq!(
            parse_pack("windows@3").expect("version"),
            ("windows".into(), 3)
        );
        for bad in ["windows@", "windows@0", "windows@latest", "Windows", "a b"] {
            assert!(parse_pack(bad).is_err(), "{bad}");
        }
    }
}
