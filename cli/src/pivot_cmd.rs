//! `quarry pivot`: every event that mentions one entity, around a time or an
//! alert, across hosts and sources, in time order: the context a hunter
//! gathers before deciding on an alert. It runs the shipped `pivot` module
//! as a hunt over every shard whose events may fall in the window; with
//! `--from-alert`, the alert's own findings are marked, and a follow-up hunt
//! triage already started for the alert is reused.

use crate::client_args::{ClientArgs, connect, out};
use crate::output::{self, Output};
use clap::Args;
use quarry_client::{Client, HuntRequest};
use quarry_proto::v1;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// `quarry pivot`'s flags.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  quarry pivot --entity host=ws07 --around 1h --at 2026-11-20T10:15:00Z\n  quarry pivot --from-alert A-12 --around 1h\n  quarry pivot --entity user=alice --around 30m --from-alert A-12 --csv > timeline.csv"
)]
pub struct PivotArgs {
    /// What to pivot on: host=NAME, user=NAME or ip=ADDRESS (default with
    /// --from-alert: the alert's entity).
    #[arg(long, value_name = "KIND=VALUE")]
    entity: Option<String>,
    /// How far before and after to look.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    around: Duration,
    /// Centre of the window (RFC 3339); default: now, or the alert's first
    /// and last finding with --from-alert.
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    at: Option<std::time::SystemTime>,
    /// Pivot around an alert: its window, its entity, its findings marked.
    #[arg(long, value_name = "ID")]
    from_alert: Option<String>,
    /// Print CSV (time, host, shard, entity, event, fields, alert finding),
    /// which timeline tools import, instead of --output's format.
    #[arg(long)]
    csv: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn entity_param(text: &str) -> anyhow::Result<String> {
    let (kind, value) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| anyhow::anyhow!("--entity `{text}`: write KIND=VALUE, for example host=ws07, user=alice or ip=10.0.0.5"))?;
    let kind = kind.trim().to_ascii_lowercase();
    anyhow::ensure!(
        matches!(kind.as_str(), "host" | "user" | "ip"),
        "--entity `{text}`: the kind must be host, user or ip"
    );
    anyhow::ensure!(!value.trim().is_empty(), "--entity `{text}` has no value");
    Ok(format!("{kind}:{}", value.trim()))
}

fn ms(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Shards whose events may fall in `[from, to)`.
async fn shards_in(client: &mut Client, from: i64, to: i64) -> anyhow::Result<Vec<String>> {
    let shards = client.shards(HashMap::new()).await?;
    Ok(shards
        .into_iter()
        .filter(|s| {
            let range = s.time_range.unwrap_or_default();
            (range.end_ms == 0 || range.end_ms >= from)
                && (range.start_ms == 0 || range.start_ms < to)
        })
        .map(|s| s.name)
        .collect())
}

/// Runs `quarry pivot`.
pub async fn run(args: PivotArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let around = i64::try_from(args.around.as_millis()).unwrap_or(i64::MAX);
    let alert = match &args.from_alert {
        Some(id) => Some(client.case(id).await?),
        None => None,
    };
    if let Some(alert) = &alert {
        anyhow::ensure!(
            alert.kind == "alert",
            "--from-alert {}: that is an incident; pivot from one of its alerts ({})",
            alert.id,
            alert.related.join(", ")
        );
    }
    let entity = match (&args.entity, &alert) {
        (Some(text), _) => entity_param(text)?,
        (None, Some(alert)) => alert.entity.clone(),
        (None, None) => {
            anyhow::bail!("say what to pivot on: --entity KIND=VALUE, or --from-alert ID")
        }
    };
    let (from, to) = match (&alert, args.at) {
        (_, Some(at)) => (ms(at).saturating_sub(around), ms(at).saturating_add(around)),
        (Some(alert), None) => (
            alert.first_seen_ms.saturating_sub(around),
            alert.last_seen_ms.saturating_add(around).saturating_add(1),
        ),
        (None, None) => {
            let now = ms(std::time::SystemTime::now());
            (now.saturating_sub(around), now.saturating_add(around))
        }
    };
    // A follow-up triage started for this alert on the same entity already
    // holds the timeline.
    let reuse = alert.as_ref().and_then(|a| {
        a.follow_ups
            .iter()
            .rev()
            .find(|f| f.description.contains(&format!("pivot on {entity} ")))
            .map(|f| f.hunt_id.clone())
    });
    let hunt_id = match reuse {
        Some(hunt) => {
            eprintln!("using follow-up hunt {hunt} that triage started for this alert");
            hunt
        }
        None => {
            let shards = shards_in(&mut client, from, to).await?;
            anyhow::ensure!(
                !shards.is_empty(),
                "no shard holds events between {} and {}",
                output::time(from),
                output::time(to)
            );
            let mut request = HuntRequest::new("pivot")
                .param("entity", &entity)
                .time_range(from, to)
                .description(&format!("pivot on {entity}"));
            for shard in &shards {
                request = request.shard(shard);
            }
            let submitted = client.submit_hunt(request).await?;
            eprintln!(
                "pivot hunt {} over {} shards, {} to {}",
                submitted.hunt_id,
                shards.len(),
                output::time(from),
                output::time(to)
            );
            submitted.hunt_id
        }
    };
    let hunt = client.wait(&hunt_id, |_| {}).await?;
    if !hunt.reason.is_empty() {
        eprintln!("{}", output::escape(&hunt.reason));
    }
    let mut events = client.findings(&hunt_id).await?;
    events.sort_by(|a, b| {
        (a.timestamp_ms, &a.shard, a.offsets.first()).cmp(&(
            b.timestamp_ms,
            &b.shard,
            b.offsets.first(),
        ))
    });
    let marked: BTreeSet<(String, u64)> = alert
        .iter()
        .flat_map(|a| &a.finding_details)
        .flat_map(|f| f.offsets.iter().map(|o| (f.shard.clone(), *o)))
        .collect();
    let is_marked = |f: &v1::Finding| {
        f.offsets
            .iter()
            .any(|o| marked.contains(&(f.shard.clone(), *o)))
    };
    if args.csv {
        print_csv(&events, &is_marked)?;
    } else {
        timeline(out(args.client.output), &events, &is_marked);
    }
    Ok(())
}

fn host_of(f: &v1::Finding) -> String {
    const HOST_FIELDS: [&str; 5] = ["Computer", "Hostname", "host", "ComputerName", "hostname"];
    f.evidence
        .iter()
        .find(|e| HOST_FIELDS.contains(&e.key.as_str()))
        .map(|e| e.value.clone())
        .unwrap_or_default()
}

fn fields(f: &v1::Finding) -> String {
    f.evidence
        .iter()
        .map(|e| format!("{}={}", e.key, e.value))
        .collect::<Vec<_>>()
        .join("; ")
}

fn timeline(format: Output, events: &[v1::Finding], is_marked: &dyn Fn(&v1::Finding) -> bool) {
    match format {
        Output::Json => {
            for f in events {
                let mut value = output::finding_json(f);
                if let Some(object) = value.as_object_mut() {
                    object.insert("alert_finding".to_owned(), is_marked(f).into());
                }
                println!("{value}");
            }
        }
        Output::Table => {
            let rows = events
                .iter()
                .map(|f| {
                    vec![
                        if is_marked(f) { "*" } else { "" }.to_owned(),
                        output::time(f.timestamp_ms),
                        host_of(f),
                        f.shard.clone(),
                        f.title.clone(),
                    ]
                })
                .collect();
            output::table(&["", "TIME", "HOST", "SHARD", "EVENT"], rows);
            println!(
                "{} events{}",
                events.len(),
                if events.iter().any(is_marked) {
                    "; * marks the alert's own findings"
                } else {
                    ""
                }
            );
        }
    }
}

/// CSV as RFC 4180 has it: fields with a comma, quote or line break are
/// quoted, quotes doubled. Cells starting with `=`, `+`, `-` or `@` get a
/// leading `'` so spreadsheets do not run log-controlled text as formulas.
fn print_csv(
    events: &[v1::Finding],
    is_marked: &dyn Fn(&v1::Finding) -> bool,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    fn cell(text: &str) -> String {
        let text = if text.starts_with(['=', '+', '-', '@']) {
            format!("'{text}")
        } else {
            text.to_owned()
        };
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "time,host,shard,entity,event,fields,alert_finding")?;
    for f in events {
        let row = [
            output::time(f.timestamp_ms),
            host_of(f),
            f.shard.clone(),
            f.entity.clone(),
            f.title.clone(),
            fields(f),
            is_marked(f).to_string(),
        ];
        let line: Vec<String> = row.iter().map(|c| cell(c)).collect();
        writeln!(stdout, "{}", line.join(","))?;
    }
    Ok(())
}
