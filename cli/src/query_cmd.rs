//! `quarry query`: a question in the hunt query language (docs/queries.md)
//! over local log files, or its compiled plan with `--dry-run`.
//!
//! The files are read the way a worker ingests them (format detection,
//! EVTX flattening, timestamps) into a scratch shard, and the plan runs
//! over it as one shard with the `quarry-query` engine the `query` hunt
//! module will run beside the shards.

use clap::{Args, ValueEnum};
use quarry_query::{JsonEvent, Plan, Runner, Table, Value};
use quarry_worker::ingest::Format;
use quarry_worker::shard::ShardStore;
use std::io::Write as _;
use std::path::PathBuf;

/// The scratch shard's name.
const SHARD: &str = "query";

/// `quarry query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The query, e.g. `where EventID == 4625 | stats count() by
    /// TargetUserName` (the language: docs/queries.md).
    pub query: String,
    /// Log files to run it over (formats as `quarry worker ingest`:
    /// detected per file, or --format). Running a query on the cluster's
    /// shards comes with the `query` hunt module.
    #[arg(long, num_args = 1.., value_name = "FILE", required_unless_present = "dry_run")]
    pub logs: Vec<PathBuf>,
    /// Input format (jsonl, evtx, syslog, zeek-json, zeek-tsv, auditd);
    /// detected per file when omitted.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Output: an aligned table, JSON lines (one object per row) or CSV.
    #[arg(long, value_enum, default_value_t = QueryOutput::Table)]
    pub output: QueryOutput,
    /// Print the compiled plan (fields read, the clauses pushed down to the
    /// shards' block index, the stages run per shard and after the merge)
    /// and run nothing.
    #[arg(long)]
    pub dry_run: bool,
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
pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    // A parse error renders the query with a caret under the column.
    let plan = quarry_query::compile(&args.query).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.dry_run {
        print_plan(&plan);
        return Ok(());
    }
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
    let mut known = std::collections::BTreeSet::new();
    let mut path = String::new();
    let mut runner = Runner::new(&plan);
    if store.get(SHARD).is_some() {
        store.scan::<anyhow::Error, _>(SHARD, None, 4096, |batch| {
            for event in batch {
                if let Some(map) = event.doc.as_object() {
                    field_names(map, &mut path, 0, &mut known);
                    runner.observe(&JsonEvent {
                        map,
                        time_ms: (event.timestamp_ms != 0).then_some(event.timestamp_ms),
                    });
                }
            }
            Ok(())
        })?;
    }
    for unknown in plan.unknown_fields(known.iter().map(String::as_str)) {
        let hint = if unknown.closest.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", unknown.closest.join(", "))
        };
        eprintln!("warning: no event has the field `{}`{hint}", unknown.field);
    }
    let table = plan
        .finish(runner.finish())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("{events} events scanned, {} rows", table.rows.len());
    print_table(&table, args.output)?;
    if table.truncated {
        eprintln!(
            "warning: rows were cut at {} (add `head N` or aggregate)",
            quarry_query::MAX_ROWS
        );
    }
    Ok(())
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
