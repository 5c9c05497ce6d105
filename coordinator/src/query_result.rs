//! The result table of a `query` hunt (`quarry query`): the coordinator
//! reads the query's partials as its state machine merged them (by the
//! contract's rules, like every module's aggregates) and runs the stages
//! after the query's first aggregation over them.

use quarry_proto::v1;

use crate::error::CoordinatorError;
use crate::state::{FindingRecord, HuntRecord, MERGED_SHARD, Severity, State, TaskState};
use quarry_proto::{ShardId, TaskId};

/// The module that runs queries beside the shards.
pub const QUERY_MODULE: &str = "query";
/// Its parameter holding the query text.
pub const QUERY_PARAM: &str = "query";

/// Refuses a hunt of the `query` module (named so) whose query does not
/// compile or whose `findings` is not a severity, when it is submitted or
/// scheduled, rather than in every task (or every scheduled run).
pub fn check_params(
    module: &crate::state::ModuleSelector,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<(), CoordinatorError> {
    let crate::state::ModuleSelector::NameVersion { name, .. } = module else {
        return Ok(());
    };
    if name != QUERY_MODULE {
        return Ok(());
    }
    let text = params.get(QUERY_PARAM).ok_or_else(|| {
        CoordinatorError::InvalidArgument(format!(
            "a `{QUERY_MODULE}` hunt needs the parameter `{QUERY_PARAM}` (the query text); \
             `quarry query` sets it"
        ))
    })?;
    quarry_query::compile(text).map_err(|e| {
        CoordinatorError::InvalidArgument(format!("the query does not compile: {e}"))
    })?;
    if let Some(severity) = params.get(FINDINGS_PARAM)
        && Severity::from_name(severity).is_none()
    {
        return Err(CoordinatorError::InvalidArgument(format!(
            "`{FINDINGS_PARAM}` is `{severity}`; give a severity: informational, low, medium, high or critical"
        )));
    }
    Ok(())
}

/// The table of `hunt` as merged so far.
pub fn query_result(
    state: &State,
    hunt: &HuntRecord,
) -> Result<v1::QueryResultResponse, CoordinatorError> {
    let module = state.modules.get(&hunt.module).map(|m| m.name.as_str());
    let text = hunt.spec.params.get(QUERY_PARAM);
    let (Some(QUERY_MODULE), Some(text)) = (module, text) else {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "hunt {} is not a query (it runs module {}); its results are its findings \
             and aggregates: `quarry hunt results {}`, `quarry hunt status {}`",
            hunt.id,
            module.unwrap_or("?"),
            hunt.id,
            hunt.id
        )));
    };
    let failed = |e: quarry_query::Error| {
        CoordinatorError::FailedPrecondition(format!(
            "the results of query hunt {} cannot be read: {e}",
            hunt.id
        ))
    };
    let plan = quarry_query::compile(text).map_err(failed)?;
    if let Some(reason) = hunt
        .aggregate_errors
        .keys()
        .find(|name| name.starts_with("query:"))
    {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "the partial results of query hunt {} could not all be merged ({reason}: {}); \
             narrow the query (a `where`, fewer `by` fields) or raise --max-hunt-bytes",
            hunt.id, hunt.aggregate_errors[reason]
        )));
    }
    let partial = plan.partial_from_merged(&hunt.aggregates).map_err(failed)?;
    let table = plan.finish(partial).map_err(failed)?;
    let tasks_done = hunt
        .tasks
        .iter()
        .filter(|t| {
            matches!(
                state.tasks.get(t).map(|t| &t.state),
                Some(TaskState::Succeeded)
            )
        })
        .count();
    Ok(v1::QueryResultResponse {
        columns: table.columns,
        rows: table
            .rows
            .iter()
            .map(|row| {
                serde_json::Value::Array(row.iter().map(quarry_query::Value::to_json).collect())
                    .to_string()
            })
            .collect(),
        truncated: table.truncated,
        state: crate::convert::hunt_state(hunt.state) as i32,
        tasks_done: u32::try_from(tasks_done).unwrap_or(u32::MAX),
        tasks_total: u32::try_from(hunt.tasks.len()).unwrap_or(u32::MAX),
        events_scanned: hunt.events_scanned,
    })
}

/// The parameter that makes a query hunt's rows findings (`quarry schedule
/// create --query`): the findings' severity.
pub const FINDINGS_PARAM: &str = "findings";
/// The detection's name, in the findings' rule (`query/<name>`).
pub const NAME_PARAM: &str = "name";
/// Findings one query hunt's rows become at most; beyond, the hunt's
/// aggregate errors say how many rows were left out.
pub const MAX_ROW_FINDINGS: usize = 1_000;

/// The rows of a finished query hunt whose parameters ask for findings,
/// as findings of the merged shard: a pure function of the hunt's merged
/// aggregates and parameters, so replaying the log gives the same ones.
/// With them, a note when rows were left out; `Err` names why the table
/// could not be made.
pub fn row_findings(hunt: &HuntRecord) -> Result<(Vec<FindingRecord>, Option<String>), String> {
    let params = &hunt.spec.params;
    let (Some(text), Some(severity)) = (params.get(QUERY_PARAM), params.get(FINDINGS_PARAM)) else {
        return Ok((Vec::new(), None));
    };
    let severity = Severity::from_name(severity).ok_or_else(|| {
        format!("`{FINDINGS_PARAM}` is `{severity}`, not a severity (informational, low, medium, high, critical)")
    })?;
    let name = params.get(NAME_PARAM).map_or("query", String::as_str);
    let plan = quarry_query::compile(text).map_err(|e| e.to_string())?;
    let partial = plan
        .partial_from_merged(&hunt.aggregates)
        .map_err(|e| e.to_string())?;
    let table = plan.finish(partial).map_err(|e| e.to_string())?;
    let time_column = table.columns.iter().position(|c| c == "_time");
    let task = TaskId::new(format!("{}/{MERGED_SHARD}", hunt.id));
    let mut out = Vec::with_capacity(table.rows.len().min(MAX_ROW_FINDINGS));
    for (n, row) in table.rows.iter().take(MAX_ROW_FINDINGS).enumerate() {
        let cells: Vec<(String, String)> = table
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.clone(), v.text().unwrap_or_default()))
            .collect();
        let shown: Vec<String> = cells
            .iter()
            .filter(|(c, _)| c != "_time")
            .take(4)
            .map(|(c, v)| format!("{c}={v}"))
            .collect();
        let entity = cells
            .iter()
            .find(|(c, v)| c != "_time" && !v.is_empty())
            .map(|(c, v)| format!("{}:{v}", c.to_lowercase()))
            .unwrap_or_default();
        let timestamp_ms = time_column
            .and_then(|i| row.get(i))
            .and_then(quarry_query::Value::as_number)
            .map_or(hunt.finished_ms, |t| t as i64);
        let mut evidence = cells;
        evidence.push(("query".to_owned(), text.clone()));
        out.push(FindingRecord {
            id: format!("{task}#query.{n}"),
            task: task.clone(),
            shard: ShardId::new(MERGED_SHARD),
            rule: format!("query/{name}"),
            title: format!("{name}: {}", shown.join(", ")),
            severity,
            confidence: params
                .get("confidence")
                .and_then(|c| c.parse::<u8>().ok())
                .unwrap_or(50)
                .min(100),
            entity,
            timestamp_ms,
            evidence,
            techniques: Vec::new(),
            tags: vec!["query".to_owned(), format!("query:{name}")],
            offsets: Vec::new(),
        });
    }
    let note = (table.rows.len() > MAX_ROW_FINDINGS).then(|| {
        format!(
            "{} more rows than the {MAX_ROW_FINDINGS} findings a query hunt reports were left out; \
             narrow the query (a `where`, or `| head N`)",
            table.rows.len() - MAX_ROW_FINDINGS
        )
    });
    Ok((out, note))
}
