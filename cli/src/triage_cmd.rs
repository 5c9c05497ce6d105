//! `quarry triage ...`: the ranked queue of alerts and incidents, the human
//! side of triage, and triage as code.

use crate::client_args::{ClientArgs, connect, out};
use crate::output::triage as print;
use clap::{Args, Subcommand, ValueEnum};
use quarry_proto::v1;
use quarry_proto::v1::update_case_request::Action;
use std::path::PathBuf;

/// Who acts, for the case history.
#[derive(Args, Clone)]
pub struct Actor {
    /// Your name in the case history (default: $USER).
    #[arg(long = "as", value_name = "NAME")]
    actor: Option<String>,
}

impl Actor {
    fn name(&self) -> String {
        self.actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// Which cases `list` shows.
#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Alerts and incidents, ranked together.
    All,
    /// Alerts only.
    Alerts,
    /// Incidents only.
    Incidents,
}

/// A case state to filter on.
#[derive(Clone, Copy, ValueEnum)]
pub enum CaseState {
    /// In the queue.
    Open,
    /// Closed by a person or a suppression.
    Closed,
    /// Closed by a suppression.
    AutoClosed,
    /// Open and closed.
    All,
}

/// A severity floor.
#[derive(Clone, Copy, ValueEnum)]
pub enum SeverityArg {
    /// Informational and above.
    Info,
    /// Low and above.
    Low,
    /// Medium and above.
    Medium,
    /// High and above.
    High,
    /// Critical only.
    Critical,
}

/// `quarry triage`'s subcommands.
#[derive(Subcommand)]
pub enum TriageCommand {
    /// The queue, highest score first (open cases unless told otherwise).
    #[command(
        after_help = "Examples:\n  quarry triage list\n  quarry triage list --kind incidents --severity high\n  quarry triage list --entity host:ws07 --include-closed\n  quarry triage list --state auto-closed --output json"
    )]
    List {
        /// Alerts, incidents or both.
        #[arg(long, value_enum, default_value_t = Kind::All)]
        kind: Kind,
        /// Only cases in this state (default: open).
        #[arg(long, value_enum)]
        state: Option<CaseState>,
        /// Open and closed cases (auto-closed ones too): `--state all`.
        #[arg(long, conflicts_with = "state")]
        include_closed: bool,
        /// Only cases at or above this severity.
        #[arg(long, value_enum)]
        severity: Option<SeverityArg>,
        /// Only cases about this entity (`host:ws07`, `user:alice`, or a bare value).
        #[arg(long)]
        entity: Option<String>,
        /// Only cases of rules matching this glob (`sigma/*`).
        #[arg(long)]
        rule: Option<String>,
        /// Only cases assigned to this person.
        #[arg(long)]
        assignee: Option<String>,
        /// Show at most this many (0: all, fetched 1000 at a time).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One alert or incident in full: score terms, history, first findings.
    #[command(
        after_help = "Examples:\n  quarry triage show A-12\n  quarry triage show I-3 --output json"
    )]
    Show {
        /// `A-12` or `I-3`.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Assign a case to someone (no name: unassign).
    #[command(
        after_help = "Examples:\n  quarry triage assign A-12 alice\n  quarry triage assign A-12"
    )]
    Assign {
        /// `A-12` or `I-3`.
        id: String,
        /// Who takes it.
        assignee: Option<String>,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Comment on a case.
    #[command(
        after_help = "Example:\n  quarry triage comment A-12 \"checked with the owner: planned change\""
    )]
    Comment {
        /// `A-12` or `I-3`.
        id: String,
        /// The comment.
        text: String,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Give a verdict: true-positive, false-positive or benign-expected (tp, fp, benign).
    /// A false-positive or benign verdict closes the case and feeds suppression proposals.
    #[command(
        after_help = "Examples:\n  quarry triage verdict A-12 false-positive --comment \"backup job\"\n  quarry triage verdict I-3 tp --comment \"confirmed intrusion, escalated\""
    )]
    Verdict {
        /// `A-12` or `I-3`.
        id: String,
        /// true-positive, false-positive or benign-expected.
        kind: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Close a case by hand.
    #[command(after_help = "Example:\n  quarry triage close A-12 --reason \"duplicate of I-3\"")]
    Close {
        /// `A-12` or `I-3`.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reopen a closed (or auto-closed) case.
    #[command(
        after_help = "Example:\n  quarry triage reopen A-12 --reason \"the suppression was too broad\""
    )]
    Reopen {
        /// `A-12` or `I-3`.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Apply a triage config (suppressions, crown jewels, score weights,
    /// follow-ups) from YAML; `--dry-run` shows which open alerts would change.
    #[command(
        after_help = "Examples:\n  quarry triage apply triage.yaml --dry-run\n  quarry triage apply triage.yaml --message \"suppress the nightly backup\""
    )]
    Apply {
        /// The YAML file (docs/triage.md).
        file: PathBuf,
        /// Validate and show the effect; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why, for the version history.
        #[arg(long, default_value = "")]
        message: String,
        /// Refuse unless this version is in force (guards concurrent edits).
        #[arg(long)]
        base_version: Option<u64>,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The config in force (JSON) and who changed what.
    #[command(after_help = "Example:\n  quarry triage config")]
    Config {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Suppressions proposed from verdict history.
    #[command(after_help = "Examples:\n  quarry triage proposals\n  quarry triage proposals --all")]
    Proposals {
        /// Accepted and rejected ones too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Accept a proposal: it becomes a suppression in a new config version.
    #[command(after_help = "Example:\n  quarry triage accept P-1")]
    Accept {
        /// `P-1`.
        id: String,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reject a proposal.
    #[command(after_help = "Example:\n  quarry triage reject P-1")]
    Reject {
        /// `P-1`.
        id: String,
        #[command(flatten)]
        actor: Actor,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queue counts and false-positive rates per rule and module.
    #[command(after_help = "Example:\n  quarry triage summary")]
    Summary {
        #[command(flatten)]
        client: ClientArgs,
    },
}

async fn update(
    client: &ClientArgs,
    id: &str,
    actor: &Actor,
    action: Action,
) -> anyhow::Result<()> {
    let case = connect(client)
        .await?
        .update_case(id, &actor.name(), action)
        .await?;
    print::case(out(client.output), &case);
    Ok(())
}

/// Runs a `quarry triage` subcommand.
pub async fn run(command: TriageCommand) -> anyhow::Result<()> {
    match command {
        TriageCommand::List {
            kind,
            state,
            include_closed,
            severity,
            entity,
            rule,
            assignee,
            limit,
            client,
        } => {
            let state = if include_closed {
                Some(CaseState::All)
            } else {
                state
            };
            let request = v1::ListCasesRequest {
                kinds: match kind {
                    Kind::All => "",
                    Kind::Alerts => "alerts",
                    Kind::Incidents => "incidents",
                }
                .to_owned(),
                state: match state {
                    None | Some(CaseState::Open) => "open",
                    Some(CaseState::Closed) => "closed",
                    Some(CaseState::AutoClosed) => "auto-closed",
                    Some(CaseState::All) => "all",
                }
                .to_owned(),
                min_severity: match severity {
                    None => v1::Severity::Unspecified,
                    Some(SeverityArg::Info) => v1::Severity::Informational,
                    Some(SeverityArg::Low) => v1::Severity::Low,
                    Some(SeverityArg::Medium) => v1::Severity::Medium,
                    Some(SeverityArg::High) => v1::Severity::High,
                    Some(SeverityArg::Critical) => v1::Severity::Critical,
                } as i32,
                entity: entity.unwrap_or_default(),
                rule: rule.unwrap_or_default(),
                assignee: assignee.unwrap_or_default(),
                page_size: if limit == 0 {
                    1000
                } else {
                    limit.min(1000) as u32
                },
                page_token: String::new(),
            };
            let cases = connect(&client).await?.all_cases(request, limit).await?;
            print::cases(out(client.output), &cases.cases, cases.total);
        }
        TriageCommand::Show { id, client } => {
            let case = connect(&client).await?.case(&id).await?;
            print::case(out(client.output), &case);
        }
        TriageCommand::Assign {
            id,
            assignee,
            actor,
            client,
        } => {
            update(
                &client,
                &id,
                &actor,
                Action::Assign(assignee.unwrap_or_default()),
            )
            .await?
        }
        TriageCommand::Comment {
            id,
            text,
            actor,
            client,
        } => update(&client, &id, &actor, Action::Comment(text)).await?,
        TriageCommand::Verdict {
            id,
            kind,
            comment,
            actor,
            client,
        } => {
            update(
                &client,
                &id,
                &actor,
                Action::Verdict(v1::SetVerdict { kind, comment }),
            )
            .await?
        }
        TriageCommand::Close {
            id,
            reason,
            actor,
            client,
        } => update(&client, &id, &actor, Action::Close(reason)).await?,
        TriageCommand::Reopen {
            id,
            reason,
            actor,
            client,
        } => update(&client, &id, &actor, Action::Reopen(reason)).await?,
        TriageCommand::Apply {
            file,
            dry_run,
            message,
            base_version,
            actor,
            client,
        } => {
            let yaml = std::fs::read_to_string(&file).map_err(|e| {
                anyhow::anyhow!("cannot read the triage config {}: {e}", file.display())
            })?;
            let response = connect(&client)
                .await?
                .apply_triage_config(v1::ApplyTriageConfigRequest {
                    yaml,
                    actor: actor.name(),
                    message,
                    base_version: base_version.unwrap_or(0),
                    dry_run,
                    request_id: String::new(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print::applied(out(client.output), &response, dry_run);
        }
        TriageCommand::Config { client } => {
            let info = connect(&client).await?.triage_config().await?;
            if out(client.output) == crate::output::Output::Json {
                let config: serde_json::Value = serde_json::from_str(&info.config_json)?;
                println!(
                    "{}",
                    serde_json::json!({
                        "version": info.version,
                        "config": config,
                        "history": info.history.iter().map(|v| serde_json::json!({
                            "version": v.version, "author": v.author,
                            "applied": crate::output::time(v.applied_ms),
                            "summary": v.summary, "message": v.message,
                        })).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!("version {}", info.version);
                for v in &info.history {
                    println!(
                        "  v{} {} by {}: {} {}",
                        v.version,
                        crate::output::time(v.applied_ms),
                        crate::output::escape(&v.author),
                        crate::output::escape(&v.summary),
                        crate::output::escape(&v.message)
                    );
                }
                for line in info.config_json.lines() {
                    println!("{}", crate::output::escape(line));
                }
            }
        }
        TriageCommand::Proposals { all, client } => {
            let proposals = connect(&client).await?.proposals(all).await?;
            print::proposals(out(client.output), &proposals);
        }
        TriageCommand::Accept { id, actor, client } => {
            let r = connect(&client)
                .await?
                .decide_proposal(&id, true, &actor.name())
                .await?;
            println!(
                "{id} accepted: suppression {} in config version {}",
                r.suppression_id, r.config_version
            );
        }
        TriageCommand::Reject { id, actor, client } => {
            connect(&client)
                .await?
                .decide_proposal(&id, false, &actor.name())
                .await?;
            println!("{id} rejected");
        }
        TriageCommand::Summary { client } => {
            let summary = connect(&client).await?.triage_summary().await?;
            print::summary(out(client.output), &summary);
        }
    }
    Ok(())
}
