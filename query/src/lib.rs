//! The Quarry hunt query language.
//!
//! A pipeline in the SPL/KQL family, compiled into a [`Plan`] that runs the
//! Quarry way: the per-event part beside the shards, the first aggregation
//! as a mergeable per-shard [`Partial`], the rest on the coordinator over
//! the merged table.
//!
//! ```
//! use quarry_query::{compile, JsonEvent};
//!
//! let plan = compile(r#"where EventID == 4688 and CommandLine contains "nltest" | stats count() by Computer"#)?;
//! assert_eq!(plan.fields_read(), ["EventID", "CommandLine", "Computer"]);
//! let event = serde_json::json!({"EventID": 4688, "CommandLine": "NLTEST /dclist:", "Computer": "WS01"});
//! let map = event.as_object().unwrap();
//! let table = plan.run([&JsonEvent { map, time_ms: Some(0) }])?;
//! assert_eq!(table.columns, ["Computer", "count"]);
//! # Ok::<(), quarry_query::Error>(())
//! ```
//!
//! The language is documented in `docs/queries.md`. Pure Rust, no I/O;
//! builds for `wasm32-wasip2`.

#![warn(missing_docs)]

pub mod ast;
mod carry;
mod error;
mod eval;
mod exec;
mod lexer;
mod parser;
pub mod plan;
pub mod value;

pub use ast::Stage;
pub use error::Error;
pub use exec::{
    AggPartial, Event, GroupsPartial, JsonEvent, MAX_BUCKETS, MAX_ROWS, MAX_VALUES, Partial,
    PartialData, Row, Runner, SumState, Table, TextEvent, TimedValue, ValuesState,
};
pub use plan::{Clause, MatchOp, Plan, Pushdown, UnknownField, compile};
pub use value::Value;

#[cfg(test)]
mod tests;
