//! Hunt module `query`: runs a `quarry query` pipeline (docs/queries.md)
//! beside each shard.
//!
//! Parameters: `query`, the query text; `pushdown=false` keeps the host
//! prefilter off (to measure what it saves, or to rule it out while
//! debugging a query; the answer is the same); `findings` (a severity),
//! `name` and `confidence` are read by the coordinator, which turns the
//! rows of the finished query into findings (`quarry schedule create
//! --query`). Each task compiles it
//! ([`quarry_query::compile`]) and plans its projection from it (contract
//! 0.2.2's `planner`): it declares exactly the fields the query reads, and
//! the `where` conditions the host prefilter understands become the task's
//! prefilter, so the host skips the blocks and events the query would drop
//! without decoding them for the guest.
//!
//! The task runs the query's per-event stages over its events and returns
//! the shard's partial result as the contract's aggregates, named
//! `query:…` ([`quarry_query::Plan::partial_to_aggregates`]): counts,
//! distinct values (exact, then a HyperLogLog sketch) and ranges that the
//! coordinator merges across all shards by the contract's rules. The
//! coordinator then finishes the merged partial with the stages after the
//! first aggregation. The module reports no findings.
//!
//! A query without aggregation returns the shard's rows, bounded by its
//! leading `sort`/`dedup`/`head`; at most [`MAX_ROW_BYTES`] of rows leave a
//! task, the rest are cut and the result says it is truncated.

#![warn(missing_docs)]

use quarry_query::{Clause, Partial, PartialData, Plan, Runner, TextEvent};
use quarry_sdk::{Descriptor, Emitter, Event, Hunt, LogLevel, MatchOp, Output, Params, Predicate};

/// Bytes of rows (as JSON) one task returns at most, well inside what the
/// host accepts from one `finish` call.
pub const MAX_ROW_BYTES: usize = 512 * 1024;

/// The module's name, as `quarry query` submits it.
pub const NAME: &str = "query";
/// The module's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One task of a query.
pub struct Query {
    plan: &'static Plan,
    runner: Runner<'static>,
    events: u64,
}

fn compile(params: &Params) -> Result<Plan, String> {
    params
        .ensure_known(&["query", "pushdown", "findings", "name", "confidence"])
        .map_err(|e| e.message().to_owned())?;
    let text = params
        .get("query")
        .filter(|q| !q.trim().is_empty())
        .ok_or("parameter `query` is missing: pass the query text, as `quarry query` does")?;
    quarry_query::compile(text).map_err(|e| e.to_string())
}

fn predicate(clause: &Clause) -> Predicate {
    let op = match clause.op {
        quarry_query::MatchOp::Equals => MatchOp::Equals,
        quarry_query::MatchOp::Contains => MatchOp::Contains,
        quarry_query::MatchOp::StartsWith => MatchOp::StartsWith,
        quarry_query::MatchOp::EndsWith => MatchOp::EndsWith,
        quarry_query::MatchOp::Exists => MatchOp::Exists,
        quarry_query::MatchOp::Regex => MatchOp::Regex,
    };
    let values: Vec<&str> = clause.values.iter().map(String::as_str).collect();
    Predicate::new(clause.field.clone(), op, &values)
}

/// The task's descriptor for `plan`: its fields and, with `pushdown`, the
/// prefilter of its pushed-down clauses.
pub fn descriptor(plan: &Plan, pushdown: bool) -> Descriptor {
    let mut descriptor = Query::describe();
    descriptor.fields = plan.fields.clone();
    if !pushdown {
        return descriptor;
    }
    for clause in &plan.pushdown.clauses {
        descriptor = descriptor.with_predicate(predicate(clause));
    }
    for group in &plan.pushdown.any_of {
        descriptor = descriptor.with_any_of(group.iter().map(predicate).collect());
    }
    descriptor
}

/// Cuts a row partial to [`MAX_ROW_BYTES`], keeping the first rows in the
/// order the shard bound left them; says whether it cut.
fn bound_bytes(partial: &mut Partial) -> bool {
    if let PartialData::Rows { rows, truncated } = &mut partial.data {
        let mut bytes = 0;
        let keep = rows
            .iter()
            .position(|row| {
                bytes += approx_row_bytes(row);
                bytes > MAX_ROW_BYTES
            })
            .unwrap_or(rows.len());
        if keep < rows.len() {
            rows.truncate(keep);
            *truncated = true;
            return true;
        }
    }
    false
}

fn approx_row_bytes(row: &quarry_query::Row) -> usize {
    // A row's columns as the aggregate carries them; names and texts
    // dominate.
    row.cols
        .iter()
        .map(|(name, value)| name.len() + value.text().map_or(4, |t| t.len()) + 8)
        .sum::<usize>()
        + 24
}

impl Hunt for Query {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION).with_description(
            "Runs a `quarry query` pipeline beside each shard and returns its mergeable partial result.",
        )
    }

    fn plan(params: &Params) -> Result<Option<Descriptor>, String> {
        let pushdown = match params.get("pushdown") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(format!(
                    "parameter `pushdown` is `{other}`; use true (the default) or false"
                ));
            }
        };
        Ok(Some(descriptor(&compile(params)?, pushdown)))
    }

    fn new(params: &Params) -> Result<Self, String> {
        // One plan per task on a fresh instance (the module is not
        // reusable), so leaking it lets the runner borrow it for the task.
        let plan: &'static Plan = Box::leak(Box::new(compile(params)?));
        Ok(Query {
            plan,
            runner: Runner::new(plan),
            events: 0,
        })
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        self.events += batch.len() as u64;
        for event in batch {
            self.runner.observe(&TextEvent {
                time_ms: (event.timestamp_ms != 0).then_some(event.timestamp_ms),
                values: &event.values,
            });
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let mut partial = self.runner.finish();
        let cut = bound_bytes(&mut partial);
        let (what, n) = match &partial.data {
            PartialData::Rows { rows, .. } => ("rows", rows.len()),
            PartialData::Groups(groups) => ("groups", groups.group_count()),
        };
        let (events, n) = (self.events.to_string(), n.to_string());
        quarry_sdk::log::with_fields(
            LogLevel::Info,
            "query partial",
            &[("events", &events), (what, &n)],
        );
        if cut {
            quarry_sdk::log::warn(&format!(
                "rows cut at {MAX_ROW_BYTES} bytes: add `head N` or aggregate"
            ));
        }
        for aggregate in self.plan.partial_to_aggregates(&partial) {
            out.aggregate(quarry_sdk::to_wit(aggregate));
        }
    }
}

quarry_sdk::export_hunt!(Query);
