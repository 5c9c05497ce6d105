//! `quarry intel`: the cluster's intel store: import STIX 2.1 bundles, MISP
//! events, CSV columns or plain lists as named, versioned sets; list, show
//! and delete them. Hunts name them with `--intel-set`.

use crate::client_args::{ClientArgs, connect, out};
use crate::output::{Output, json_line, table, time};
use anyhow::Context as _;
use clap::Subcommand;
use quarry_proto::v1;
use serde_json::json;
use std::path::PathBuf;

/// `quarry intel` subcommands.
#[derive(Subcommand)]
pub enum IntelCommand {
    /// Import a file as a set (a new version if the name exists). Entries
    /// that cannot be used are listed with their position; the rest is
    /// imported.
    #[command(
        after_help = "Examples:\n  quarry intel import feodo-ips --format csv:ip_address feodo.csv\n  quarry intel import apt-x --format stix apt-x-bundle.json\n  quarry intel import phishing --format misp misp-event.json\n  quarry intel import bad-hashes hashes.txt          # one indicator per line\n\nThen: quarry hunt submit ioc-sweep --selector env=prod --intel-set apt-x"
    )]
    Import {
        /// Set name: 1-64 of a-z, 0-9, `_`, `-`.
        name: String,
        /// The file.
        file: PathBuf,
        /// stix (a STIX 2.1 bundle), misp (a MISP event), csv:COLUMN (the
        /// header of the column holding the indicators), or lines.
        #[arg(long, default_value = "lines")]
        format: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The latest version of every set.
    #[command(after_help = "Example:\n  quarry intel list --output json")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One set: where it came from, its indicators by kind, the first ones.
    #[command(
        after_help = "Examples:\n  quarry intel show apt-x\n  quarry intel show apt-x --version 2 --limit 1000"
    )]
    Show {
        /// Set name.
        name: String,
        /// A version (default: the latest).
        #[arg(long, default_value_t = 0)]
        version: u32,
        /// Indicators to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete every version of a set (refused while a running hunt uses it).
    #[command(after_help = "Example:\n  quarry intel delete apt-x")]
    Delete {
        /// Set name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn kinds(set: &v1::IntelSetInfo) -> String {
    set.kinds
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn set_json(set: &v1::IntelSetInfo) -> serde_json::Value {
    json!({
        "name": set.name, "version": set.version, "format": set.format, "source": set.source,
        "imported_by": set.imported_by, "imported": time(set.imported_ms),
        "indicators": set.indicators, "kinds": set.kinds,
        "problems": set.problems, "skipped": set.skipped,
    })
}

fn sets(format: Output, sets: &[v1::IntelSetInfo]) {
    match format {
        Output::Json => sets.iter().for_each(|s| json_line(set_json(s))),
        Output::Table => table(
            &[
                "NAME",
                "VERSION",
                "INDICATORS",
                "KINDS",
                "FORMAT",
                "IMPORTED",
                "BY",
            ],
            sets.iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.version.to_string(),
                        s.indicators.to_string(),
                        kinds(s),
                        s.format.clone(),
                        time(s.imported_ms),
                        s.imported_by.clone(),
                    ]
                })
                .collect(),
        ),
    }
}

/// Runs a `quarry intel` command.
pub async fn run(command: IntelCommand) -> anyhow::Result<()> {
    match command {
        IntelCommand::Import {
            name,
            file,
            format,
            client: args,
        } => {
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let source = file.display().to_string();
            let imported = connect(&args)
                .await?
                .import_intel(&name, &format, data, &source)
                .await?;
            let set = imported.set.unwrap_or_default();
            match out(args.output) {
                Output::Json => {
                    let mut value = set_json(&set);
                    value["problem_list"] = json!(
                        imported
                            .problems
                            .iter()
                            .map(|p| json!({"position": p.position, "message": p.message}))
                            .collect::<Vec<_>>()
                    );
                    json_line(value);
                }
                Output::Table => {
                    sets(Output::Table, std::slice::from_ref(&set));
                    for problem in &imported.problems {
                        eprintln!("skipped {}: {}", problem.position, problem.message);
                    }
                    eprintln!(
                        "imported {} indicators as {}@{}; {} entries unusable, {} left out on purpose",
                        set.indicators, set.name, set.version, set.problems, set.skipped
                    );
                }
            }
        }
        IntelCommand::List { client: args } => {
            let list = connect(&args).await?.list_intel().await?;
            sets(out(args.output), &list);
        }
        IntelCommand::Show {
            name,
            version,
            limit,
            client: args,
        } => {
            let set = connect(&args)
                .await?
                .get_intel(&name, version, limit)
                .await?;
            match out(args.output) {
                Output::Json => {
                    let mut value = set_json(&set);
                    value["sample"] = json!(set
                        .sample
                        .iter()
                        .map(|i| json!({
                            "kind": i.kind, "value": i.value,
                            "valid_from": time(i.valid_from_ms), "valid_until": time(i.valid_until_ms),
                        }))
                        .collect::<Vec<_>>());
                    json_line(value);
                }
                Output::Table => {
                    sets(Output::Table, std::slice::from_ref(&set));
                    println!();
                    table(
                        &["KIND", "VALUE", "VALID FROM", "VALID UNTIL"],
                        set.sample
                            .iter()
                            .map(|i| {
                                vec![
                                    i.kind.clone(),
                                    i.value.clone(),
                                    time(i.valid_from_ms),
                                    time(i.valid_until_ms),
                                ]
                            })
                            .collect(),
                    );
                }
            }
        }
        IntelCommand::Delete { name, client: args } => {
            let versions = connect(&args).await?.delete_intel(&name).await?;
            eprintln!(
                "deleted intel set {name} (versions {})",
                versions
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}
