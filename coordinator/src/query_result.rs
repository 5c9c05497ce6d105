//! The result table of a `query` hunt (`quarry query`): the coordinator
//! reads the query's partials as its state machine merged them (by the
//! contract's rules, like every module's aggregates) and runs the stages
//! after the query's first aggregation over them.

use quarry_proto::v1;

use crate::error::CoordinatorError;
use crate::state::{HuntRecord, State, TaskState};

/// The module that runs queries beside the shards.
pub const QUERY_MODULE: &str = "query";
/// Its parameter holding the query text.
pub const QUERY_PARAM: &str = "query";

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
