//! `quarry schedule`: recurring hunts (docs/schedules.md). The subcommands
//! other than `create` live here; `create` takes the hunt flags of `quarry
//! hunt submit`, which the binary parses, and calls [`create`].

use crate::client_args::{ClientArgs, connect, out};
use crate::output::{Output, json_line, table, time};
use clap::{Subcommand, ValueEnum};
use quarry_proto::v1;
use serde_json::json;
use std::time::Duration;

/// What happens to due times that passed without a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Missed {
    /// Catch up with one run, however many were missed.
    #[default]
    RunOnce,
    /// Skip them; run at the next due time.
    Skip,
}

/// The schedule flags `quarry schedule create` adds to the hunt flags.
#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {
    /// Schedule name: 1-64 of a-z, 0-9 and `-`.
    pub name: String,
    /// Cron expression, five fields: minute hour day-of-month month
    /// day-of-week (`0 3 * * *`: 03:00 every day).
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    pub cron: Option<String>,
    /// IANA time zone the cron expression is read in (default UTC).
    #[arg(long = "tz", requires = "cron")]
    pub time_zone: Option<String>,
    /// Run at a fixed interval instead (`15m`, `6h`, `1d`; at least 1s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// Events before each shard's watermark scanned again by every run, so
    /// a module that looks back (a burst spanning two runs) sees them.
    #[arg(long, default_value_t = 0)]
    pub overlap_events: u64,
    /// Due times missed while the cluster was down, the schedule paused or
    /// the previous run still going.
    #[arg(long, value_enum, default_value_t = Missed::RunOnce)]
    pub missed: Missed,
    /// Days of earlier runs a module's baseline covers (1-400, default 30).
    #[arg(long)]
    pub baseline_days: Option<u32>,
    /// Instead of a module: a query (docs/queries.md) run on every due time
    /// over the new events, each row of its table reported as a finding
    /// (rule `query/NAME`) that triage takes up.
    #[arg(long)]
    pub query: Option<String>,
    /// Severity of the findings a --query reports.
    #[arg(long, requires = "query", default_value = "medium", value_parser = ["informational", "low", "medium", "high", "critical"])]
    pub severity: String,
}

/// `quarry schedule` subcommands other than `create`.
#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Every schedule: trigger, next due time, last run.
    #[command(after_help = "Example:\n  quarry schedule list --output json")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One schedule: its template, watermarks and last run.
    #[command(after_help = "Example:\n  quarry schedule show nightly-rare")]
    Show {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop firing runs (a run going on finishes).
    #[command(after_help = "Example:\n  quarry schedule pause nightly-rare")]
    Pause {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fire runs again; due times missed meanwhile follow the schedule's
    /// --missed policy.
    #[command(after_help = "Example:\n  quarry schedule resume nightly-rare")]
    Resume {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a schedule (a run going on finishes as a plain hunt).
    #[command(after_help = "Example:\n  quarry schedule delete nightly-rare")]
    Delete {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A schedule's runs, newest first: due time, hunt, outcome, findings,
    /// shards that failed (scanned again by the next run).
    #[command(
        after_help = "Examples:\n  quarry schedule runs nightly-rare\n  quarry schedule runs nightly-rare --limit 5 --output json"
    )]
    Runs {
        /// Schedule name.
        name: String,
        /// At most this many (0: all kept, the last 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The create request for `template` and the schedule flags.
pub fn create_request(
    args: &ScheduleArgs,
    template: v1::SubmitHuntRequest,
) -> anyhow::Result<v1::CreateScheduleRequest> {
    let trigger = match (&args.cron, args.every) {
        (Some(expression), None) => v1::schedule_trigger::Trigger::Cron(v1::CronTrigger {
            expression: expression.clone(),
            time_zone: args.time_zone.clone().unwrap_or_default(),
        }),
        (None, Some(every)) => v1::schedule_trigger::Trigger::EveryMs(
            u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
        ),
        _ => anyhow::bail!("give either --cron EXPRESSION or --every DURATION"),
    };
    Ok(v1::CreateScheduleRequest {
        name: args.name.clone(),
        template: Some(template),
        trigger: Some(v1::ScheduleTrigger {
            trigger: Some(trigger),
        }),
        overlap_events: args.overlap_events,
        missed: match args.missed {
            Missed::RunOnce => v1::MissedRunPolicy::RunOnce,
            Missed::Skip => v1::MissedRunPolicy::Skip,
        } as i32,
        baseline_days: args.baseline_days.unwrap_or(0),
        request_id: String::new(),
    })
}

fn module_text(template: Option<&v1::SubmitHuntRequest>) -> String {
    match template
        .and_then(|t| t.module.as_ref())
        .and_then(|m| m.r#ref.as_ref())
    {
        Some(v1::module_ref::Ref::NameVersion(name)) => name.clone(),
        Some(v1::module_ref::Ref::Digest(digest)) => format!("sha256:{digest}"),
        None => "-".to_owned(),
    }
}

fn run_json(run: &v1::ScheduleRun) -> serde_json::Value {
    json!({
        "number": run.number, "due": time(run.due_ms), "due_times": run.due_times,
        "hunt_id": run.hunt_id, "started": time(run.started_ms),
        "finished": time(run.finished_ms), "outcome": run.outcome, "reason": run.reason,
        "findings": run.findings, "events_scanned": run.events_scanned,
        "shards_scanned": run.shards_scanned, "shards_failed": run.shards_failed,
    })
}

fn schedule_json(s: &v1::Schedule) -> serde_json::Value {
    json!({
        "name": s.name, "module": module_text(s.template.as_ref()), "trigger": s.trigger_text,
        "paused": s.paused, "next_due": time(s.next_due_ms), "active_hunt_id": s.active_hunt_id,
        "overlap_events": s.overlap_events,
        "missed": if s.missed == v1::MissedRunPolicy::Skip as i32 { "skip" } else { "run-once" },
        "baseline_days": s.baseline_days, "baseline_runs": s.baseline_runs,
        "runs": s.runs, "created": time(s.created_ms), "created_by": s.created_by,
        "watermarks": s.watermarks.iter().map(|w| json!({"shard": w.shard, "offset": w.offset})).collect::<Vec<_>>(),
        "last_run": s.last_run.as_ref().map(run_json),
    })
}

fn last_run_text(s: &v1::Schedule) -> String {
    match &s.last_run {
        Some(run) => format!(
            "#{} {} ({} findings)",
            run.number, run.outcome, run.findings
        ),
        None => "-".to_owned(),
    }
}

/// Prints schedules.
pub fn schedules(format: Output, schedules: &[v1::Schedule]) {
    match format {
        Output::Json => schedules.iter().for_each(|s| json_line(schedule_json(s))),
        Output::Table => table(
            &[
                "NAME", "MODULE", "TRIGGER", "STATE", "NEXT DUE", "RUNS", "LAST RUN",
            ],
            schedules
                .iter()
                .map(|s| {
                    let state = if s.paused {
                        "paused".to_owned()
                    } else if s.active_hunt_id.is_empty() {
                        "waiting".to_owned()
                    } else {
                        format!("running {}", s.active_hunt_id)
                    };
                    vec![
                        s.name.clone(),
                        module_text(s.template.as_ref()),
                        s.trigger_text.clone(),
                        state,
                        time(s.next_due_ms),
                        s.runs.to_string(),
                        last_run_text(s),
                    ]
                })
                .collect(),
        ),
    }
}

fn show(format: Output, s: &v1::Schedule) {
    if format == Output::Json {
        json_line(schedule_json(s));
        return;
    }
    schedules(format, std::slice::from_ref(s));
    let missed = if s.missed == v1::MissedRunPolicy::Skip as i32 {
        "skip"
    } else {
        "run once"
    };
    println!();
    println!(
        "created {} by {}; missed due times: {missed}; overlap {} events; baseline {} days ({} earlier runs)",
        time(s.created_ms),
        s.created_by,
        s.overlap_events,
        s.baseline_days,
        s.baseline_runs
    );
    if let Some(template) = &s.template {
        let mut scope: Vec<String> = template
            .scope
            .iter()
            .flat_map(|scope| {
                let labels = scope
                    .selector
                    .iter()
                    .flat_map(|l| l.match_labels.iter().map(|(k, v)| format!("{k}={v}")));
                labels.chain(scope.shards.iter().map(|s| format!("shard {s}")))
            })
            .collect();
        scope.sort();
        println!("scope: {}", scope.join(", "));
        let mut params: Vec<String> = template
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        params.sort();
        if !params.is_empty() {
            println!("params: {}", params.join(" "));
        }
    }
    if !s.watermarks.is_empty() {
        println!();
        table(
            &["SHARD", "WATERMARK (next ingest offset)"],
            s.watermarks
                .iter()
                .map(|w| vec![w.shard.clone(), w.offset.to_string()])
                .collect(),
        );
    }
}

fn runs(format: Output, runs: &[v1::ScheduleRun]) {
    match format {
        Output::Json => runs.iter().for_each(|r| json_line(run_json(r))),
        Output::Table => table(
            &[
                "RUN", "DUE", "HUNT", "OUTCOME", "FINDINGS", "EVENTS", "SHARDS", "FAILED", "NOTE",
            ],
            runs.iter()
                .map(|r| {
                    vec![
                        r.number.to_string(),
                        time(r.due_ms),
                        if r.hunt_id.is_empty() {
                            "-".to_owned()
                        } else {
                            r.hunt_id.clone()
                        },
                        r.outcome.clone(),
                        r.findings.to_string(),
                        r.events_scanned.to_string(),
                        r.shards_scanned.to_string(),
                        r.shards_failed.join(","),
                        r.reason.clone(),
                    ]
                })
                .collect(),
        ),
    }
}

/// `quarry schedule create`: stores the schedule and prints it.
pub async fn create(
    args: &ClientArgs,
    client: &mut quarry_client::Client,
    request: v1::CreateScheduleRequest,
) -> anyhow::Result<()> {
    let created = client.create_schedule(request).await?;
    let format = out(args.output);
    if format == Output::Table {
        eprintln!(
            "schedule {} created: {}, first run due {}",
            created.name,
            created.trigger_text,
            time(created.next_due_ms)
        );
    }
    schedules(format, std::slice::from_ref(&created));
    Ok(())
}

/// Runs a `quarry schedule` command other than `create`.
pub async fn run(command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::List { client: args } => {
            let all = connect(&args).await?.list_schedules().await?;
            schedules(out(args.output), &all);
        }
        ScheduleCommand::Show { name, client: args } => {
            let schedule = connect(&args).await?.schedule(&name).await?;
            show(out(args.output), &schedule);
        }
        ScheduleCommand::Pause { name, client: args } => {
            let schedule = connect(&args)
                .await?
                .set_schedule_paused(&name, true)
                .await?;
            schedules(out(args.output), std::slice::from_ref(&schedule));
        }
        ScheduleCommand::Resume { name, client: args } => {
            let schedule = connect(&args)
                .await?
                .set_schedule_paused(&name, false)
                .await?;
            schedules(out(args.output), std::slice::from_ref(&schedule));
        }
        ScheduleCommand::Delete { name, client: args } => {
            connect(&args).await?.delete_schedule(&name).await?;
            if out(args.output) == Output::Json {
                json_line(json!({"deleted": name}));
            } else {
                println!("schedule {name} deleted");
            }
        }
        ScheduleCommand::Runs {
            name,
            limit,
            client: args,
        } => {
            let list = connect(&args).await?.schedule_runs(&name, limit).await?;
            runs(out(args.output), &list);
        }
    }
    Ok(())
}
