//! The docs tell the truth about the CLI: every `quarry …` command shown in
//! README.md and docs/*.md (in code blocks and inline code) names
//! subcommands that exist, and every `--flag` it uses is one that command's
//! `--help` lists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_owned()
}

/// Every `quarry …` command line in `text`: lines of fenced code blocks
/// (joined across trailing backslashes, comments cut) and inline code spans.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let code = line.split(" #").next().unwrap_or_default().trim();
            let code = code.strip_prefix("$ ").unwrap_or(code);
            if let Some(rest) = code.strip_suffix('\\') {
                pending.push_str(rest);
                pending.push(' ');
                continue;
            }
            pending.push_str(code);
            let full = std::mem::take(&mut pending);
            if full.starts_with("quarry ") {
                out.push(full);
            }
        } else {
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 && span.starts_with("quarry ") {
                    out.push(span.to_owned());
                }
            }
        }
    }
    out
}

struct Cli {
    help: HashMap<Vec<String>, Option<String>>,
}

impl Cli {
    /// `quarry PATH --help`, or `None` when that is no command.
    fn help(&mut self, path: &[String]) -> Option<String> {
        self.help
            .entry(path.to_vec())
            .or_insert_with(|| {
                let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
                    .args(path)
                    .arg("--help")
                    .output()
                    .expect("run quarry");
                output
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
            })
            .clone()
    }

    fn subcommands(&mut self, path: &[String]) -> Vec<String> {
        let Some(help) = self.help(path) else {
            return Vec::new();
        };
        help.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// What is wrong with a documented command, if anything.
    fn check(&mut self, command: &str) -> Option<String> {
        let tokens: Vec<&str> = command.split_whitespace().skip(1).collect();
        let mut path: Vec<String> = Vec::new();
        for token in &tokens {
            if token.starts_with('-') {
                break;
            }
            if self.subcommands(&path).iter().any(|s| s == token) {
                path.push((*token).to_owned());
            } else {
                break;
            }
        }
        let Some(help) = self.help(&path) else {
            return Some(format!("`quarry {}` is not a command", path.join(" ")));
        };
        if path.is_empty() && tokens.iter().any(|t| !t.starts_with('-')) {
            return Some(format!("`{}` is not a subcommand", tokens[0]));
        }
        for flag in tokens.iter().filter(|t| t.starts_with("--")) {
            let name = flag.split('=').next().unwrap_or(flag);
            let name = name.trim_end_matches([',', ';', ')', '.']);
            if name == "--help" || name == "--" {
                continue;
            }
            let listed = help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '<')
                .any(|word| word == name);
            if !listed {
                return Some(format!("`quarry {}` has no flag {name}", path.join(" ")));
            }
        }
        None
    }
}

#[test]
fn every_documented_command_and_flag_exists() {
    let root = workspace();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut cli = Cli {
        help: HashMap::new(),
    };
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read doc");
        for command in commands(&text) {
            checked += 1;
            if let Some(problem) = cli.check(&command) {
                wrong.push(format!(
                    "{}: {command}\n    {problem}",
                    file.strip_prefix(&root).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(checked > 50, "only {checked} documented commands found");
    assert!(
        wrong.is_empty(),
        "documented commands that do not exist:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_command_extractor_reads_blocks_continuations_and_inline_code() {
    let text = "Run `quarry hunt list --limit 5` now.\n```sh\n$ quarry worker --id a \\\n    --slots 2   # two\nquarry demo\necho quarry\n```\n";
    assert_eq!(
        commands(text),
        vec![
            "quarry hunt list --limit 5",
            "quarry worker --id a  --slots 2",
            "quarry demo"
        ]
    );
}
