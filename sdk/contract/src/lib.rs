//! The parts of the Quarry module contract that guests (hunt modules, through
//! `quarry-sdk`) and hosts (workers, the coordinator, `quarry module test`)
//! must compute identically:
//!
//! - [`aggregate`]: the mergeable aggregates a task returns and the rules by
//!   which the coordinator merges partial results of many tasks without
//!   running guest code (counts, distinct counts with a HyperLogLog sketch,
//!   top-k, ranges, stacking);
//! - [`correlation`]: conditions over windows of events across shards
//!   (event counts, distinct values, sequences per group), whose partial
//!   state merges as counts and which the coordinator evaluates after the
//!   merge;
//! - [`intel`]: named indicator sets shipped with a task, how they are parsed
//!   from hunt parameters and how values are compared with them;
//! - [`predicate`]: the prefilter clauses a host checks before the guest
//!   sees an event (a module's descriptor, a query's pushdown).
//!
//! The crate has no dependencies (serde is optional, for the coordinator's
//! state) and builds for `wasm32-wasip2`.

#![warn(missing_docs)]

pub mod aggregate;
pub mod correlation;
mod hll;
pub mod intel;
pub mod predicate;

pub use aggregate::{
    Aggregate, AggregateValue, DistinctValues, RangeStats, Stack, StackEntry, TopEntry, TopK,
};
pub use hll::Sketch;

/// Checks the name of a named cluster object travelling in parameter names
/// (an intel set, a rule pack): 1 to 64 of `a-z 0-9 _ -`, so nothing in it
/// needs quoting. `what` names the kind in the error.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}` must be 1 to 64 characters of a-z, 0-9, `_` and `-`"
        ))
    }
}
