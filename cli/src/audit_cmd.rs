//! `quarry audit`: the cluster's audit trail (admins): who called which
//! mutating RPC, accepted or refused, and every refused call.

use crate::client_args::{ClientArgs, connect, out};
use crate::output::{Output, json_line, table, time};
use clap::Args;
use quarry_proto::v1;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most records one `quarry audit` prints.
const MAX_LIMIT: usize = 1_000_000;

/// `quarry audit` arguments.
#[derive(Args)]
pub struct AuditArgs {
    /// Records from this long ago (`24h`, `7d`), from a time
    /// (`2026-12-01T00:00:00Z`), or `all`.
    #[arg(long, default_value = "24h", value_parser = parse_since)]
    since: Since,
    /// Only this caller: `role:name` (`hunter:alice`) or just the name.
    #[arg(long)]
    principal: Option<String>,
    /// Only refused or failed calls.
    #[arg(long)]
    refused: bool,
    /// Print at most this many records (the oldest that match first).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT as u64))]
    limit: u64,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where a listing starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Duration),
    /// At this time (unix ms).
    At(i64),
    /// The oldest record kept.
    All,
}

fn parse_since(text: &str) -> Result<Since, String> {
    if text == "all" {
        return Ok(Since::All);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(Since::Ago(ago));
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!("`{text}` is neither a duration (24h, 7d), a time (2026-12-01T00:00:00Z) nor `all`")
    })?;
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis();
    Ok(Since::At(i64::try_from(ms).map_err(|e| e.to_string())?))
}

impl Since {
    fn as_ms(self) -> i64 {
        match self {
            Since::All => 0,
            Since::At(ms) => ms,
            Since::Ago(ago) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                i64::try_from(now.saturating_sub(ago).as_millis()).unwrap_or(0)
            }
        }
    }
}

fn record_json(r: &v1::AuditRecord) -> serde_json::Value {
    json!({
        "seq": r.seq, "time": time(r.time_ms), "time_ms": r.time_ms,
        "principal": r.principal, "role": r.role, "rpc": r.rpc, "target": r.target,
        "outcome": r.outcome, "detail": r.detail, "node": r.node, "remote": r.remote,
        "count": r.count,
    })
}

/// `/quarry.v1.HuntService/SubmitHunt` -> `HuntService/SubmitHunt`.
fn short_rpc(rpc: &str) -> &str {
    rpc.strip_prefix("/quarry.v1.").unwrap_or(rpc)
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Runs `quarry audit`.
pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let limit = usize::try_from(args.limit).unwrap_or(MAX_LIMIT);
    let mut request = v1::ListAuditRequest {
        since_ms: args.since.as_ms(),
        principal: args.principal.clone().unwrap_or_default(),
        after_seq: 0,
        limit: 0,
        refused_only: args.refused,
    };
    let mut records = Vec::new();
    let mut more = false;
    while records.len() < limit {
        request.limit = u32::try_from((limit - records.len()).min(10_000)).unwrap_or(10_000);
        let page = client.list_audit(request.clone()).await?;
        more = page.more;
        let Some(last) = page.records.last() else {
            break;
        };
        request.after_seq = last.seq;
        records.extend(page.records);
        if !more {
            break;
        }
    }
    match out(args.client.output) {
        Output::Json => records.iter().for_each(|r| json_line(record_json(r))),
        Output::Table => {
            table(
                &[
                    "SEQ",
                    "TIME",
                    "PRINCIPAL",
                    "RPC",
                    "TARGET",
                    "OUTCOME",
                    "N",
                    "NODE",
                    "DETAIL",
                ],
                records
                    .iter()
                    .map(|r| {
                        vec![
                            r.seq.to_string(),
                            time(r.time_ms),
                            r.principal.clone(),
                            short_rpc(&r.rpc).to_owned(),
                            short(&r.target, 40),
                            r.outcome.clone(),
                            r.count.to_string(),
                            r.node.clone(),
                            short(&r.detail, 80),
                        ]
                    })
                    .collect(),
            );
            if records.is_empty() {
                eprintln!("no audit records match; `--since all` looks back to the oldest kept");
            }
        }
    }
    if more {
        eprintln!("more records match; raise --limit (now {limit}) or narrow --since/--principal");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_times_and_all_and_explains_anything_else() {
        assert_eq!(parse_since("all"), Ok(Since::All));
        assert_eq!(
            parse_since("90m"),
            Ok(Since::Ago(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse_since("2026-12-01T00:00:00Z"),
            Ok(Since::At(1_796_083_200_000))
        );
        let bad = parse_since("yesterday").expect_err("refused");
        assert!(bad.contains("neither a duration"), "{bad}");
    }
}
