//! The history of the schedule a task runs for (contract 0.2.1,
//! `quarry:hunt/history`): the merged aggregates of the schedule's earlier
//! runs within its baseline window (`quarry schedule create
//! --baseline-days`). A first-seen or rarity hunt compares what it sees
//! with them; a one-off hunt, or a schedule's first run, has no history
//! ([`runs`] is 0).
//!
//! On the build machine there is no host: [`install_for_tests`] sets the
//! history the calls answer from on this thread, so a module's unit tests
//! run with a baseline exactly as on a worker.
//!
//! ```
//! use quarry_sdk::{contract, history};
//!
//! # #[cfg(not(target_arch = "wasm32"))]
//! # {
//! let mut seen = contract::aggregate::Merged::new();
//! seen.insert("images".into(), contract::aggregate::AggregateValue::counts_from([("c:\\windows\\system32\\cmd.exe".to_owned(), 3)]));
//! history::install_for_tests(2, seen);
//! assert_eq!(history::runs(), 2);
//! assert!(history::baseline("images").is_some());
//! assert!(history::baseline("other").is_none());
//! # }
//! ```

use quarry_contract::aggregate::AggregateValue;

#[cfg(not(target_arch = "wasm32"))]
use quarry_contract::aggregate::Merged;
#[cfg(not(target_arch = "wasm32"))]
use std::cell::RefCell;

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static HISTORY: RefCell<(u32, Merged)> = const { RefCell::new((0, Merged::new())) };
}

/// Earlier successful runs merged into the baseline (0: none).
pub fn runs() -> u32 {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::quarry::hunt::history::baseline_runs();

    #[cfg(not(target_arch = "wasm32"))]
    HISTORY.with_borrow(|(runs, _)| *runs)
}

/// The baseline's aggregate `name`, merged over the earlier runs; `None`
/// when no earlier run returned it (or it could not be decoded, which the
/// host rules out).
pub fn baseline(name: &str) -> Option<AggregateValue> {
    #[cfg(target_arch = "wasm32")]
    {
        let value = crate::bindings::quarry::hunt::history::baseline(name)?;
        let record = crate::Aggregate {
            name: name.to_owned(),
            value,
        };
        return crate::from_wit(record).ok().map(|a| a.value);
    }

    #[cfg(not(target_arch = "wasm32"))]
    HISTORY.with_borrow(|(_, merged)| merged.get(name).cloned())
}

/// Off wasm: sets the history [`runs`] and [`baseline`] answer from on
/// this thread, as the worker does for a scheduled task.
#[cfg(not(target_arch = "wasm32"))]
pub fn install_for_tests(runs: u32, aggregates: Merged) {
    HISTORY.with_borrow_mut(|history| *history = (runs, aggregates));
}

/// Off wasm: no history, as for a one-off hunt.
#[cfg(not(target_arch = "wasm32"))]
pub fn clear_for_tests() {
    install_for_tests(0, Merged::new());
}
