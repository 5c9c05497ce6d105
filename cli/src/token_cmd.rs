//! `quarry token`: bearer tokens for API callers without a client
//! certificate (automation, scripts). Admins only.

use crate::client_args::{ClientArgs, connect, out};
use crate::output::{Output, json_line, table, time};
use clap::Subcommand;
use quarry_proto::v1;
use serde_json::json;
use std::time::Duration;

/// `quarry token` subcommands.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token with a role; prints it once (only a hash is kept).
    #[command(
        after_help = "Example:\n  quarry token create --name nightly-ci --role automation --expires 90d\n  QUARRY_TOKEN=tok-... quarry hunt list --tls-ca ca.pem --coordinator https://10.0.0.5:7700"
    )]
    Create {
        /// What it is for (letters, digits, `-`, `_`, `.`, `@`).
        #[arg(long)]
        name: String,
        /// admin, hunter, automation or viewer.
        #[arg(long)]
        role: String,
        /// It stops working after this long, e.g. 90d (0s: never).
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        expires: Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every token: id, name, role, expiry, whether revoked.
    #[command(after_help = "Example:\n  quarry token list --output json")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token: it authenticates nobody from then on.
    #[command(after_help = "Example:\n  quarry token revoke tok-3f9a1c0d5e7b2a41")]
    Revoke {
        /// The token's id (`quarry token list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn token_json(token: &v1::TokenInfo) -> serde_json::Value {
    json!({
        "id": token.id, "name": token.name, "role": token.role,
        "created": time(token.created_ms), "expires": time(token.expires_ms),
        "revoked": token.revoked, "created_by": token.created_by,
    })
}

fn tokens(format: Output, tokens: &[v1::TokenInfo]) {
    match format {
        Output::Json => {
            for token in tokens {
                json_line(token_json(token));
            }
        }
        Output::Table => table(
            &["ID", "NAME", "ROLE", "EXPIRES", "STATE", "CREATED BY"],
            tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.role.clone(),
                        if t.expires_ms == 0 {
                            "never".to_owned()
                        } else {
                            time(t.expires_ms)
                        },
                        if t.revoked { "revoked" } else { "active" }.to_owned(),
                        t.created_by.clone(),
                    ]
                })
                .collect(),
        ),
    }
}

/// Runs a `quarry token` command.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            role,
            expires,
            client: args,
        } => {
            let created = connect(&args)
                .await?
                .create_token(&name, &role, expires)
                .await?;
            let info = created.token.unwrap_or_default();
            match out(args.output) {
                Output::Json => {
                    let mut value = token_json(&info);
                    value["token"] = json!(created.secret);
                    json_line(value);
                }
                Output::Table => {
                    println!("{}", created.secret);
                    eprintln!(
                        "token {} for {}:{} (expires {}); shown once: store it now, send it with --token or QUARRY_TOKEN",
                        info.id,
                        info.role,
                        info.name,
                        if info.expires_ms == 0 {
                            "never".to_owned()
                        } else {
                            time(info.expires_ms)
                        }
                    );
                }
            }
        }
        TokenCommand::List { client: args } => {
            let list = connect(&args).await?.list_tokens().await?;
            tokens(out(args.output), &list);
        }
        TokenCommand::Revoke { id, client: args } => {
            let revoked = connect(&args).await?.revoke_token(&id).await?;
            tokens(out(args.output), &[revoked]);
        }
    }
    Ok(())
}
