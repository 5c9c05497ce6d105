//! `quarry query`: a question in the hunt query language (docs/queries.md),
//! run on the cluster as a hunt of the shipped `query` module, over local
//! log files (`--logs`), or only compiled (`--dry-run`).
//!
//! On the cluster each shard's task runs the per-event stages beside the
//! shard and returns a mergeable partial; the coordinator merges them and
//! finishes the table (`QueryResult`). With `--logs` the files are read the
//! way a worker ingests them (format detection, EVTX flattening,
//! timestamps) into a scratch shard, and the same engine runs over it as
//! one shard.

use crate::client_args::{ConnectArgs, parse_pair, parse_time};
use crate::output::Output;
use clap::{Args, ValueEnum};
use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::QUERY;
use quarry_proto::v1;
use quarry_query::{JsonEvent, Plan, Runner, Table, Value};
use quarry_worker::ingest::Format;
use quarry_worker::shard::ShardStore;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// The scratch shard's name.
const SHARD: &str = "query";

/// `quarry query`.
#[derive(Args)]
pub struct QueryArgs {
    /// The query, e.g. `where EventID == 4625 | stats count() by
    /// TargetUserName` (the language: docs/queries.md).
    pub query: String,
    /// Run over these log files instead of the cluster's shards (formats as
    /// `quarry worker ingest`: detected per file, or --format).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub logs: Vec<PathBuf>,
    /// Input format of --logs (jsonl, evtx, syslog, zeek-json, zeek-tsv,
    /// auditd); detected per file when omitted.
    #[arg(long, value_parser = parse_format, requires = "logs")]
    pub format: Option<Format>,
    /// Shard label selector `key=value` (repeatable; all must match).
    #[arg(long = "selector", value_parser = parse_pair, conflicts_with = "logs")]
    pub selectors: Vec<(String, String)>,
    /// Shard name (repeatable); default: every shard the selectors match.
    #[arg(long = "shard", conflicts_with = "logs")]
    pub shards: Vec<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-11-20T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// Time after which unfinished shards are given up and the table is
    /// made of the others, saying so (default 1h).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "logs")]
    pub deadline: Option<Duration>,
    /// Output: an aligned table, JSON lines (one object per row) or CSV.
    #[arg(long, value_enum, default_value_t = QueryOutput::Table)]
    pub output: QueryOutput,
    /// Print the compiled plan (fields read, the clauses pushed down to the
    /// shards' block index, the stages run per shard and after the merge)
    /// and, on the cluster, the shards, events and bytes in scope; run
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How `quarry query` prints its table.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QueryOutput {
    Table,
    Json,
    Csv,
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse::<Format>().map_err(|e| e.to_string())
}

/// Runs `quarry query`.
pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    // A parse error renders the query with a caret under the column.
    let plan = quarry_query::compile(&args.query).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.dry_run {
        print_plan(&plan);
        if args.logs.is_empty() {
            // The plan stands on its own; the scope needs the cluster.
            match preview(&args).await {
                Ok(preview) => crate::output::dry_run(Output::Table, &preview),
                Err(e) => eprintln!("shards in scope: unknown ({e:#})"),
            }
        }
        return Ok(());
    }
    if !args.logs.is_empty() {
        return tokio::task::spawn_blocking(move || run_local(&plan, &args)).await?;
    }
    run_on_cluster(&plan, &args).await
}

/// What the query would cover on the cluster: shards, events and bytes.
/// A dry run changes nothing, so it does not upload the `query` module.
async fn preview(args: &QueryArgs) -> anyhow::Result<v1::SubmitHuntResponse> {
    let mut client = args.connect.connect().await?;
    Ok(client.submit_hunt(hunt_request(args).dry_run(true)).await?)
}

fn hunt_request(args: &QueryArgs) -> HuntRequest {
    let mut request = HuntRequest::new(&query_module())
        .param("query", &args.query)
        .description(&format!("quarry query: {}", args.query));
    for (k, v) in &args.selectors {
        request = request.selector(k, v);
    }
    for shard in &args.shards {
        request = request.shard(shard);
    }
    if args.since.is_some() || args.until.is_some() {
        request = request.time_range(args.since.unwrap_or(0), args.until.unwrap_or(0));
    }
    if let Some(deadline) = args.deadline {
        request = request.deadline(deadline);
    }
    request
}

async fn run_on_cluster(plan: &Plan, args: &QueryArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await.map_err(|e| {
        anyhow::anyhow!("{e:#}\n  (to query log files without a cluster: --logs FILE...)")
    })?;
    ensure_query_module(&mut client).await?;
    warn_unknown_fields(&mut client, plan, args).await;
    let submitted = client.submit_hunt(hunt_request(args)).await?;
    let id = submitted.hunt_id.clone();
    eprintln!(
        "query hunt {id} submitted: {} shards; reading {}",
        submitted.task_count,
        plan.fields_read().join(", ")
    );
    // A paused hunt (its circuit breaker tripped) waits for a person to
    // resume it; a question asked once is better cancelled, saying why.
    let (paused_tx, mut paused_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = client.clone();
    let waited = tokio::select! {
        hunt = watcher.wait(&id, |p| {
            crate::output::progress(Output::Table, p);
            if p.state == v1::HuntState::Paused as i32 {
                let _ = paused_tx.send(p.paused_reason.clone());
            }
        }) => hunt?,
        Some(reason) = paused_rx.recv() => {
            client.cancel_hunt(&id, "quarry query: the hunt paused").await?;
            anyhow::bail!("query hunt {id} paused and was cancelled: {reason}");
        }
        _ = tokio::signal::ctrl_c() => {
            client.cancel_hunt(&id, "quarry query was interrupted").await?;
            anyhow::bail!("interrupted: query hunt {id} cancelled");
        }
    };
    let state = v1::HuntState::try_from(waited.state).unwrap_or_default();
    match state {
        v1::HuntState::Completed => {}
        v1::HuntState::PartiallyCompleted => eprintln!(
            "warning: the table covers only the shards that finished: {}",
            waited.reason
        ),
        _ => anyhow::bail!(
            "query hunt {id} ended {}: {}{}",
            crate::output::hunt_state(waited.state),
            waited.reason,
            waited
                .recent_failures
                .last()
                .map(|f| format!(" (latest failure on shard {}: {})", f.shard, f.error))
                .unwrap_or_default()
        ),
    }
    let result = client.query_result(&id).await?;
    let table = table_of(&result)?;
    eprintln!(
        "{} events scanned on {} shards, {} rows",
        result.events_scanned,
        result.tasks_done,
        table.rows.len()
    );
    finish_output(&table, args.output)
}

/// Warns about each field the query reads that no shard in scope has,
/// with the closest names they have, from the field statistics workers
/// report (kept by the leader: a follower's answer has none, and then
/// nothing is said).
async fn warn_unknown_fields(client: &mut Client, plan: &Plan, args: &QueryArgs) {
    let Ok(preview) = client.submit_hunt(hunt_request(args).dry_run(true)).await else {
        return;
    };
    let in_scope: std::collections::HashSet<&str> =
        preview.shards.iter().map(|s| s.name.as_str()).collect();
    let Ok(shards) = client.shards(Default::default()).await else {
        return;
    };
    let mut known = std::collections::BTreeSet::new();
    let mut described = 0;
    for shard in shards.iter().filter(|s| in_scope.contains(s.name.as_str())) {
        if !shard.field_counts.is_empty() {
            described += 1;
            known.extend(shard.field_counts.keys().cloned());
        }
    }
    if described > 0 {
        print_unknown_fields(plan, &known, &format!("in the {described} shards in scope"));
    }
}

/// One warning per field of `plan` not in `known`, with the closest names.
fn print_unknown_fields(plan: &Plan, known: &std::collections::BTreeSet<String>, where_: &str) {
    for unknown in plan.unknown_fields(known.iter().map(String::as_str)) {
        let hint = if unknown.closest.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", unknown.closest.join(", "))
        };
        eprintln!(
            "warning: no event {where_} has the field `{}`{hint}",
            unknown.field
        );
    }
}

/// The `query` module this binary ships, as hunts name it (`query@VERSION`).
pub fn query_module() -> String {
    format!("{}@{}", QUERY.name, QUERY.version)
}

/// Uploads the `query` module this binary ships if the cluster does not
/// have that version yet (once per cluster; uploading needs the author
/// role, running queries only the hunter's).
pub async fn ensure_query_module(client: &mut Client) -> anyhow::Result<()> {
    let modules = client.list_modules().await?;
    if modules
        .iter()
        .any(|m| m.name == QUERY.name && m.version == QUERY.version)
    {
        return Ok(());
    }
    eprintln!(
        "uploading the `query` module {} (shipped with this quarry; once per cluster)",
        QUERY.version
    );
    client
        .upload_module(QUERY.name, QUERY.version, "shipped with Quarry", QUERY.wasm)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the cluster does not have the `query` module {} and uploading it failed: {e}; \
                 an author can upload it (`quarry dev` and deploy/local-cluster.sh do)",
                QUERY.version
            )
        })?;
    Ok(())
}

/// The coordinator's answer as a table.
pub fn table_of(result: &v1::QueryResultResponse) -> anyhow::Result<Table> {
    let rows = result
        .rows
        .iter()
        .map(|row| match serde_json::from_str(row)? {
            serde_json::Value::Array(cells) => Ok(cells.iter().map(json_value).collect()),
            other => anyhow::bail!("a result row is not a JSON array: {other}"),
        })
        .collect::<anyhow::Result<Vec<Vec<Value>>>>()?;
    Ok(Table {
        columns: result.columns.clone(),
        rows,
        truncated: result.truncated,
    })
}

/// A result cell as the query engine's value (numbers stay numbers).
fn json_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n.as_f64().map_or(Value::Null, Value::Num),
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(json_value).collect()),
        serde_json::Value::Object(_) => Value::Str(json.to_string()),
    }
}

fn finish_output(table: &Table, output: QueryOutput) -> anyhow::Result<()> {
    print_table(table, output)?;
    if table.truncated {
        eprintln!(
            "warning: rows were cut at a row limit (docs/queries.md, \"Limits\"); \
             add `head N` or aggregate"
        );
    }
    Ok(())
}

fn run_local(plan: &Plan, args: &QueryArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let store = ShardStore::open(&scratch.path().join("shards"))?;
    let mut events = 0u64;
    for path in &args.logs {
        let (format, report) = crate::module_tool::ingest_file(&store, SHARD, path, args.format)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        events += report.events_stored;
        eprintln!(
            "{}: {} events ({format}){}",
            path.display(),
            report.events_stored,
            if report.malformed > 0 {
                format!(", {} malformed records skipped", report.malformed)
            } else {
                String::new()
            }
        );
    }
    let in_range = |t: i64| args.since.is_none_or(|s| t >= s) && args.until.is_none_or(|u| t < u);
    let mut known = std::collections::BTreeSet::new();
    let mut path = String::new();
    let mut runner = Runner::new(plan);
    if store.get(SHARD).is_some() {
        store.scan::<anyhow::Error, _>(SHARD, None, 4096, |batch| {
            for event in batch {
                if let Some(map) = event.doc.as_object() {
                    field_names(map, &mut path, 0, &mut known);
                    if in_range(event.timestamp_ms) {
                        runner.observe(&JsonEvent {
                            map,
                            time_ms: (event.timestamp_ms != 0).then_some(event.timestamp_ms),
                        });
                    }
                }
            }
            Ok(())
        })?;
    }
    print_unknown_fields(plan, &known, "in the files");
    let table = plan
        .finish(runner.finish())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("{events} events scanned, {} rows", table.rows.len());
    finish_output(&table, args.output)
}

/// Most field names collected for the unknown-field warnings.
const MAX_FIELD_NAMES: usize = 10_000;

/// Adds the names of `map`'s fields, nested ones as dotted paths (three
/// levels deep), to `names`. `path` is a scratch buffer holding the prefix:
/// a name already known costs a lookup, not an allocation (this runs for
/// every event).
fn field_names(
    map: &serde_json::Map<String, serde_json::Value>,
    path: &mut String,
    depth: usize,
    names: &mut std::collections::BTreeSet<String>,
) {
    let prefix = path.len();
    for (key, value) in map {
        path.truncate(prefix);
        path.push_str(key);
        if names.len() < MAX_FIELD_NAMES && !names.contains(path.as_str()) {
            names.insert(path.clone());
        }
        if let (serde_json::Value::Object(inner), true) = (value, depth < 3) {
            path.push('.');
            field_names(inner, path, depth + 1, names);
        }
    }
    path.truncate(prefix);
}

fn print_plan(plan: &Plan) {
    println!("fields read: {}", plan.fields_read().join(", "));
    println!(
        "pushed down to the block index: {}",
        serde_json::to_string(plan.pushdown()).unwrap_or_default()
    );
    println!("plan:");
    println!("{}", plan.to_json());
}

/// A cell as text: strings bare, the rest as JSON.
fn cell(value: &Value) -> String {
    match value.to_json() {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_table(table: &Table, output: QueryOutput) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match output {
        QueryOutput::Json => {
            for row in &table.rows {
                let object: serde_json::Map<String, serde_json::Value> = table
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.clone(), v.to_json()))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Object(object))?;
            }
        }
        QueryOutput::Csv => {
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .map(|c| {
                        if c.contains([',', '"', '\n', '\r']) {
                            format!("\"{}\"", c.replace('"', "\"\""))
                        } else {
                            c.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            writeln!(out, "{}", line(table.columns.clone()))?;
            for row in &table.rows {
                writeln!(out, "{}", line(row.iter().map(cell).collect()))?;
            }
        }
        QueryOutput::Table => {
            let rows: Vec<Vec<String>> = table
                .rows
                .iter()
                .map(|row| row.iter().map(cell).collect())
                .collect();
            let widths: Vec<usize> = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    rows.iter()
                        .filter_map(|r| r.get(i))
                        .map(|s| s.chars().count())
                        .chain([c.chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            writeln!(out, "{}", line(&table.columns))?;
            for row in &rows {
                writeln!(out, "{}", line(row))?;
            }
        }
    }
    Ok(())
}
