//! Intel-set lookups: is this hash, address, domain or URL a known
//! indicator?
//!
//! The sets travel with the task; today a hunt passes them as `intel.<set>`
//! parameters (`quarry hunt submit --intel bad-hashes=hashes.txt`), which the
//! worker removes before [`Hunt::new`](crate::Hunt::new) sees the others. See
//! [`quarry_contract::intel`] for the text format and how values compare.
//!
//! On the build machine there is no host: [`Task::init`](crate::Task::init)
//! builds the sets from the same parameters, so a module's unit tests look
//! values up exactly as on a worker.
//!
//! ```
//! use quarry_sdk::intel;
//!
//! # #[cfg(not(target_arch = "wasm32"))]
//! intel::install_for_tests(vec![("intel.bad-ips".into(), "203.0.113.7".into())]).unwrap();
//! assert!(intel::contains("bad-ips", "203.0.113.7"));
//! assert!(!intel::contains("bad-ips", "192.0.2.1"));
//! assert_eq!(intel::sets(), [("bad-ips".to_owned(), 1)]);
//! ```

#[cfg(not(target_arch = "wasm32"))]
use std::cell::RefCell;

#[cfg(not(target_arch = "wasm32"))]
use quarry_contract::intel::IntelSets;

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static SETS: RefCell<IntelSets> = RefCell::new(IntelSets::new());
}

/// Whether the intel set `set` holds `value` (compared trimmed,
/// ASCII-lowercased and re-fanged). An unknown set holds nothing.
pub fn contains(set: &str, value: &str) -> bool {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::quarry::hunt::host::intel_contains(set, value);

    #[cfg(not(target_arch = "wasm32"))]
    SETS.with_borrow(|sets| sets.contains(set, value))
}

/// The sets shipped with the task: name and number of indicators, by name.
pub fn sets() -> Vec<(String, u64)> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::quarry::hunt::host::intel_sets();

    #[cfg(not(target_arch = "wasm32"))]
    SETS.with_borrow(IntelSets::sizes)
}

/// Off wasm: takes the `intel.<set>` parameters out of `params` and installs
/// them for this thread, as the worker does for a task; returns the other
/// parameters. [`Task::init`](crate::Task::init) calls it.
#[cfg(not(target_arch = "wasm32"))]
pub fn install_for_tests(
    mut params: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let sets = IntelSets::take_from_params(&mut params)?;
    SETS.with_borrow_mut(|installed| *installed = sets);
    Ok(params)
}
