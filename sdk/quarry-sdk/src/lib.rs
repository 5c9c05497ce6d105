//! The guest library for Quarry hunt modules.
//!
//! A hunt module is a WebAssembly component implementing the WIT world
//! `quarry:hunt/planned-hunt@0.2.4` (`sdk/wit/hunt.wit`). The worker instantiates one
//! fresh instance per task (one shard scanned by one hunt), asks it to
//! [describe](Hunt::describe) itself, lets it [plan](Hunt::plan) the task's
//! projection from the parameters, [initialises](Hunt::new) it with the
//! hunt's parameters, feeds it every batch of events that passed its
//! prefilter ([`Hunt::scan`]) and finally collects its findings and
//! aggregates ([`Hunt::finish`]). A module whose set-up is expensive may
//! let the worker run the hunt's next task on the same instance
//! ([`Hunt::REUSABLE`]).
//!
//! This crate turns that contract into a Rust trait: implement [`Hunt`] and
//! invoke [`export_hunt!`]. The SDK keeps the per-task state in a guest
//! global, converts parameters, and generates the component exports, so a
//! module crate depends on `quarry-sdk` only (not on `wit-bindgen`).
//!
//! Helpers:
//!
//! - [`fields!`] declares the fields a module reads and gives each a
//!   [`Field`] index; [`Event::get`], [`Event::get_u64`], [`Event::first_of`]
//!   and friends read them.
//! - [`Params`] reads parameters with typed getters whose errors tell the
//!   hunter what to change.
//! - [`Finding::builder`] builds findings (severity, confidence, entity,
//!   evidence, ATT&CK techniques, shard offsets).
//! - Mergeable aggregates, merged by the coordinator across all tasks of a
//!   hunt without running guest code: [`Counts`] (count by key),
//!   [`Distinct`] (distinct count, exact then sketched), [`TopK`],
//!   [`MinMax`] (min/max, first/last seen) and [`Stack`] (values by the
//!   hosts they were seen on, with a post-merge threshold). [`merge`]
//!   merges task outputs as the coordinator does, for tests.
//! - [`correlation`] records events for conditions the coordinator
//!   evaluates over all shards after the merge (event counts, distinct
//!   values, sequences in a time window, per group).
//! - [`intel`] looks values up in the intel sets shipped with the task.
//! - [`history`] reads the merged aggregates of a schedule's earlier runs.
//! - [`log`] writes to the task's log; [`time`] converts timestamps.
//! - [`Task`] drives a [`Hunt`] exactly as the worker does, for unit tests on
//!   the build machine.
//!
//! # A complete module
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! quarry-sdk = { path = "../../sdk/quarry-sdk" }
//! ```
//!
//! `src/lib.rs`, built with `cargo build --release --target wasm32-wasip2`
//! into a component at `target/wasm32-wasip2/release/<crate>.wasm`:
//!
//! ```
//! use quarry_sdk::{
//!     Counts, Descriptor, Emitter, Event, Finding, Hunt, Output, Params, Predicate, Severity,
//! };
//!
//! quarry_sdk::fields! {
//!     /// The fields this module reads, in the order the host projects them.
//!     mod field {
//!         IMAGE = "Image",
//!         COMMAND_LINE = "CommandLine",
//!         COMPUTER = "Computer",
//!         HOSTNAME = "Hostname",
//!     }
//! }
//!
//! const TECHNIQUES: [&str; 2] = ["T1059.001", "T1027"];
//!
//! /// PowerShell started with a long encoded command.
//! pub struct EncodedPowerShell {
//!     min_length: usize,
//!     by_host: Counts,
//! }
//!
//! impl Hunt for EncodedPowerShell {
//!     fn describe() -> Descriptor {
//!         Descriptor::new("encoded-powershell", "0.1.0")
//!             .with_description("PowerShell started with a long base64-encoded command.")
//!             .with_fields(field::NAMES)
//!             // Evaluated by the host: the guest only sees PowerShell starts
//!             // with an `-e…`/`/e…` switch.
//!             .with_predicate(Predicate::ends_with("Image", &["\\powershell.exe", "\\pwsh.exe"]))
//!             .with_predicate(Predicate::contains("CommandLine", &[" -e", " /e"]))
//!             .with_techniques(&TECHNIQUES)
//!     }
//!
//!     fn new(params: &Params) -> Result<Self, String> {
//!         params.ensure_known(&["min_length"])?;
//!         let min_length = params.u64_in_range_or("min_length", 64, 1..=100_000)?;
//!         Ok(EncodedPowerShell {
//!             min_length: usize::try_from(min_length).unwrap_or(usize::MAX),
//!             by_host: Counts::new("encoded_powershell_by_host"),
//!         })
//!     }
//!
//!     fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
//!         for event in batch {
//!             let Some(command_line) = event.get(field::COMMAND_LINE) else {
//!                 continue;
//!             };
//!             // The payload is the longest token of the command line.
//!             let longest = command_line.split_whitespace().map(str::len).max();
//!             if longest.unwrap_or(0) < self.min_length {
//!                 continue;
//!             }
//!             let host = event
//!                 .first_of(&[field::COMPUTER, field::HOSTNAME])
//!                 .unwrap_or("unknown");
//!             self.by_host.increment(host);
//!             out.emit(
//!                 Finding::builder(
//!                     "encoded-powershell/long-encoded-command",
//!                     format!("Encoded PowerShell command on {host}"),
//!                 )
//!                 .severity(Severity::Medium)
//!                 .confidence(60)
//!                 .entity(format!("host:{host}"))
//!                 .timestamp_ms(event.timestamp_ms)
//!                 .evidence("command_line", command_line)
//!                 .techniques(TECHNIQUES)
//!                 .offset(event.offset),
//!             );
//!         }
//!         Ok(())
//!     }
//!
//!     fn finish(self, out: &mut Output) {
//!         quarry_sdk::log::debug(&format!("{} hosts ran encoded PowerShell", self.by_host.len()));
//!         out.aggregate(self.by_host);
//!     }
//! }
//!
//! quarry_sdk::export_hunt!(EncodedPowerShell);
//!
//! // A unit test drives the module the way the worker does:
//! let mut task = quarry_sdk::Task::<EncodedPowerShell>::new();
//! task.init(vec![("min_length".into(), "20".into())])?;
//! let event = Event::new(
//!     1_695_674_390_822,
//!     42,
//!     vec![
//!         Some("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe".into()),
//!         Some("powershell.exe -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIAA=".into()),
//!         Some("WS01".into()),
//!         None,
//!     ],
//! );
//! let findings = task.scan(vec![event])?;
//! assert_eq!(findings.len(), 1);
//! assert_eq!(findings[0].entity, "host:WS01");
//! let output = task.finish()?;
//! assert_eq!(
//!     output.aggregates[0].value,
//!     quarry_sdk::AggregateValue::Counts(vec![("WS01".to_owned(), 1)])
//! );
//!
//! // Parameter mistakes reach the hunter as a precise message.
//! let mut task = quarry_sdk::Task::<EncodedPowerShell>::new();
//! assert_eq!(
//!     task.init(vec![("min_length".into(), "0".into())]).unwrap_err(),
//!     "parameter `min_length` must be an integer from 1 to 100000, got `0`"
//! );
//! # Ok::<(), String>(())
//! ```
//!
//! # Host targets
//!
//! The crate also builds for the build machine, so a module's logic can be
//! unit-tested with `cargo test`. There the component exports are not
//! generated and [`log`] prints to standard error instead of calling the
//! (absent) host.

#![warn(missing_docs)]

// The generated export glue names this crate `quarry_sdk::…` (so that it
// resolves from a module crate); this makes the same path work in here.
extern crate self as quarry_sdk;

mod aggregates;
pub mod bindings;
/// Conditions over windows of events across shards (Sigma correlation
/// rules): a module records, per group, the events of each series it
/// correlates, returns the partial state as an aggregate
/// (`out.aggregate(correlation)`), and the coordinator evaluates the
/// condition after merging every task's. See `quarry_contract::correlation`.
pub mod correlation {
    pub use quarry_contract::correlation::*;
}
mod counts;
mod descriptor;
mod event;
mod finding;
pub mod history;
pub mod intel;
pub mod log;
pub mod net;
mod params;
pub mod time;

use std::fmt;

pub use aggregates::{Distinct, MinMax, Stack, TopK, from_wit, merge, to_wit, value_to_wit};
pub use bindings::quarry::hunt::types::{
    Aggregate, AggregateValue, Descriptor, Event, EventColumns, Finding, LogLevel, MatchOp, Output,
    Predicate, Severity,
};
pub use counts::Counts;
pub use event::Field;
pub use finding::{Emitter, FindingBuilder};
pub use params::{ParamError, Params};
/// The merge rules and sketches shared with the coordinator.
pub use quarry_contract as contract;

/// A hunt: what a module implements.
///
/// One value of the implementing type exists per task. It is created by
/// [`Hunt::new`] from the hunt's parameters, sees the task's events in shard
/// order through [`Hunt::scan`], and is consumed by [`Hunt::finish`]. Keep
/// whatever state the detection needs in it; the SDK stores it in a guest
/// global between calls.
pub trait Hunt: Sized + 'static {
    /// What the module reads and hunts for: name, version, fields, prefilter,
    /// ATT&CK techniques. Called once per task, before [`Hunt::new`]; it must
    /// return the same value every time.
    fn describe() -> Descriptor;

    /// The descriptor of one task, when what the module reads depends on
    /// its parameters (contract 0.2.2): a rule engine declares the fields
    /// and prefilter of the rules it was given instead of every field it
    /// might ever read. Called once per task, before [`Hunt::new`] and with
    /// the same parameters. `Ok(None)` (the default) keeps
    /// [`Hunt::describe`]'s; a returned descriptor must keep its name and
    /// version. An error fails the task with that message.
    ///
    /// A worker older than 0.2.2 never calls it and projects by
    /// `describe()`, so [`Hunt::new`] must also work with that projection.
    fn plan(params: &Params) -> Result<Option<Descriptor>, String> {
        let _ = params;
        Ok(None)
    }

    /// Whether the worker may run another task of the same hunt (same
    /// parameters and limits, another shard) on this instance once this
    /// one has finished (contract 0.2.3): [`Hunt::new`] is then called
    /// again on the same instance, skipping its instantiation and
    /// [`Hunt::plan`]. Worth it when [`Hunt::new`] is expensive (a rule
    /// engine compiling thousands of rules): keep what it built in a guest
    /// global (a `thread_local`) in [`Hunt::finish`] and take it back in
    /// [`Hunt::new`]. Everything else in guest globals must be per task.
    /// `false` (the default): a fresh instance per task.
    const REUSABLE: bool = false;

    /// Creates the per-task state from the hunt's parameters. An error fails
    /// the task with that message, so say what to change
    /// ([`Params`] getters do).
    fn new(params: &Params) -> Result<Self, String>;

    /// Looks at one batch of events (all passed the prefilter, in shard
    /// order). Findings known now go to `out`; they are returned to the host
    /// at the end of the call. An error fails the task with that message.
    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String>;

    /// Called once after the last batch: report the remaining findings and
    /// the aggregates.
    fn finish(self, out: &mut Output);
}

/// One task of a [`Hunt`]: the state machine behind the component exports.
///
/// [`export_hunt!`] keeps one `Task` in a guest global and forwards the WIT
/// calls to it. Tests use it directly to run a module exactly as the worker
/// does. Calls out of order (scan before init, init twice, anything after
/// finish) are errors, never undefined behaviour.
pub struct Task<H> {
    state: State<H>,
    /// The events of the last batch by column, reused by the next.
    events: Vec<Event>,
    /// Strings of values no event holds now, reused by the next batch.
    spare: Vec<String>,
}

enum State<H> {
    Created,
    Running(H),
    Finished,
}

/// A call to a [`Task`] that the contract does not allow at this point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractViolation(&'static str);

impl fmt::Display for ContractViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ContractViolation {}

impl From<ContractViolation> for String {
    fn from(violation: ContractViolation) -> String {
        violation.0.to_owned()
    }
}

impl<H: Hunt> Task<H> {
    /// A task that has not been initialised yet.
    pub const fn new() -> Self {
        Task {
            state: State::Created,
            events: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// The module's descriptor (WIT `describe`).
    pub fn describe() -> Descriptor {
        H::describe()
    }

    /// WIT `plan` (interface `planner`): the task's descriptor for
    /// `params`, or `None` to keep [`Task::describe`]'s.
    pub fn plan(&self, params: Vec<(String, String)>) -> Result<Option<Descriptor>, String> {
        if !matches!(self.state, State::Created) {
            return Err(
                "quarry-sdk: `plan` called after `init`; the host plans a task before initialising it"
                    .to_owned(),
            );
        }
        // On a worker the host has already taken the intel sets out.
        #[cfg(not(target_arch = "wasm32"))]
        let params = {
            let mut params = params;
            quarry_contract::intel::IntelSets::take_from_params(&mut params)?;
            params
        };
        H::plan(&Params::from_pairs(params)?)
    }

    /// WIT `init`: parses `params` and creates the hunt state.
    ///
    /// On error the task stays uninitialised.
    pub fn init(&mut self, params: Vec<(String, String)>) -> Result<(), String> {
        match self.state {
            State::Created => {}
            State::Running(_) => {
                return Err(
                    "quarry-sdk: `init` called twice; the host must call it once per instance"
                        .to_owned(),
                );
            }
            State::Finished => {
                return Err(
                    "quarry-sdk: `init` called after `finish` without a `reset`; use a fresh instance per task"
                        .to_owned(),
                );
            }
        }
        // On a worker the host has already taken the intel sets out; here
        // the SDK plays the host.
        #[cfg(not(target_arch = "wasm32"))]
        let params = intel::install_for_tests(params)?;
        let params = Params::from_pairs(params)?;
        self.state = State::Running(H::new(&params)?);
        Ok(())
    }

    /// WIT `scan`: runs [`Hunt::scan`] on `batch` and returns what it emitted.
    pub fn scan(&mut self, batch: Vec<Event>) -> Result<Vec<Finding>, String> {
        let State::Running(hunt) = &mut self.state else {
            return Err(self.not_running("scan").into());
        };
        let mut emitter = Emitter::new();
        hunt.scan(&batch, &mut emitter)?;
        Ok(emitter.into_findings())
    }

    /// WIT `scan-columns` (interface `columnar`, 0.2.4): the batch by
    /// column, rebuilt into the events [`Hunt::scan`] reads.
    pub fn scan_columns(&mut self, batch: EventColumns) -> Result<Vec<Finding>, String> {
        let State::Running(hunt) = &mut self.state else {
            return Err(self.not_running("scan").into());
        };
        let rows = batch.fill(&mut self.events, &mut self.spare)?;
        let mut emitter = Emitter::new();
        hunt.scan(&self.events[..rows], &mut emitter)?;
        Ok(emitter.into_findings())
    }

    /// WIT `finish`: consumes the hunt and returns its output.
    ///
    /// The WIT `finish` cannot return an error; the export traps with this
    /// error's message instead, which the worker reports as the task's
    /// failure reason.
    pub fn finish(&mut self) -> Result<Output, ContractViolation> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Running(hunt) => {
                // The batch scratch goes with the task's events.
                self.events = Vec::new();
                self.spare = Vec::new();
                let mut output = Output::new();
                hunt.finish(&mut output);
                Ok(output)
            }
            previous => {
                self.state = previous;
                Err(self.not_running("finish"))
            }
        }
    }

    /// WIT `reset` (interface `reuse`): after [`Task::finish`], makes the
    /// task ready for another [`Task::init`] when the hunt is
    /// [`Hunt::REUSABLE`]; `false` (the host drops the instance) otherwise,
    /// or when the task has not finished.
    pub fn reset(&mut self) -> bool {
        if !H::REUSABLE || !matches!(self.state, State::Finished) {
            return false;
        }
        self.state = State::Created;
        true
    }

    fn not_running(&self, call: &'static str) -> ContractViolation {
        ContractViolation(match (&self.state, call) {
            (State::Finished, "scan") => "quarry-sdk: `scan` called after `finish`",
            (State::Finished, _) => "quarry-sdk: `finish` called twice",
            (_, "scan") => "quarry-sdk: `scan` called before `init` succeeded",
            _ => "quarry-sdk: `finish` called before `init` succeeded",
        })
    }
}

impl<H: Hunt> Default for Task<H> {
    fn default() -> Self {
        Task::new()
    }
}

/// Exports a [`Hunt`] implementation as the component's `quarry:hunt/module`
/// interface. Invoke it once, in the module crate's root.
///
/// ```
/// # use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params};
/// # struct MyHunt;
/// # impl Hunt for MyHunt {
/// #     fn describe() -> Descriptor { Descriptor::new("my-hunt", "0.1.0") }
/// #     fn new(_: &Params) -> Result<Self, String> { Ok(MyHunt) }
/// #     fn scan(&mut self, _: &[Event], _: &mut Emitter) -> Result<(), String> { Ok(()) }
/// #     fn finish(self, _: &mut Output) {}
/// # }
/// quarry_sdk::export_hunt!(MyHunt);
/// ```
///
/// The task state lives in a `thread_local` (the guest is single-threaded and
/// an instance runs one task at a time). The component exports are only
/// generated for `wasm32` targets, so the same crate can be linked into host
/// test binaries.
#[macro_export]
macro_rules! export_hunt {
    ($hunt:ty) => {
        const _: () = {
            ::std::thread_local! {
                static QUARRY_TASK: ::core::cell::RefCell<$crate::Task<$hunt>> =
                    const { ::core::cell::RefCell::new($crate::Task::new()) };
            }

            // Never constructed: it only carries the `Guest` implementation
            // the generated exports call.
            #[allow(dead_code)]
            struct QuarryHuntExports;

            impl $crate::bindings::exports::quarry::hunt::module::Guest for QuarryHuntExports {
                fn describe() -> $crate::Descriptor {
                    $crate::Task::<$hunt>::describe()
                }

                fn init(
                    params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    QUARRY_TASK.with_borrow_mut(|task| task.init(params))
                }

                fn scan(
                    batch: ::std::vec::Vec<$crate::Event>,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Finding>, ::std::string::String>
                {
                    QUARRY_TASK.with_borrow_mut(|task| task.scan(batch))
                }

                fn finish() -> $crate::Output {
                    match QUARRY_TASK.with_borrow_mut(|task| task.finish()) {
                        ::core::result::Result::Ok(output) => output,
                        // A host that breaks the call order gets a trap with
                        // the reason rather than a made-up empty result.
                        ::core::result::Result::Err(violation) => ::core::panic!("{violation}"),
                    }
                }
            }

            impl $crate::bindings::exports::quarry::hunt::planner::Guest for QuarryHuntExports {
                fn plan(
                    params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<
                    ::core::option::Option<$crate::Descriptor>,
                    ::std::string::String,
                > {
                    QUARRY_TASK.with_borrow(|task| task.plan(params))
                }
            }

            impl $crate::bindings::exports::quarry::hunt::columnar::Guest for QuarryHuntExports {
                fn scan_columns(
                    batch: $crate::EventColumns,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Finding>, ::std::string::String>
                {
                    QUARRY_TASK.with_borrow_mut(|task| task.scan_columns(batch))
                }
            }

            impl $crate::bindings::exports::quarry::hunt::reuse::Guest for QuarryHuntExports {
                fn reset() -> bool {
                    QUARRY_TASK.with_borrow_mut(|task| task.reset())
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_hunt_world!(QuarryHuntExports with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fields! {
        mod f {
            USER = "User",
        }
    }

    /// Counts events per user and flags a user seen `limit` times.
    struct Repeats {
        limit: u64,
        seen: Counts,
    }

    impl Hunt for Repeats {
        fn describe() -> Descriptor {
            Descriptor::new("repeats", "0.0.1").with_fields(f::NAMES)
        }

        fn new(params: &Params) -> Result<Self, String> {
            params.ensure_known(&["limit"])?;
            Ok(Repeats {
                limit: params.positive_u64_or("limit", 2)?,
                seen: Counts::new("by_user"),
            })
        }

        fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
            for event in batch {
                let user = event
                    .get(f::USER)
                    .ok_or_else(|| format!("event at offset {} has no user", event.offset))?;
                self.seen.increment(user);
                if self.seen.get(user) == self.limit {
                    out.emit(Finding::builder("repeats/limit", user).offset(event.offset));
                }
            }
            Ok(())
        }

        fn finish(self, out: &mut Output) {
            out.aggregate(self.seen);
        }
    }

    // Expands the export glue on the host too, so the macro is type-checked
    // by `cargo test`.
    export_hunt!(Repeats);

    fn event(offset: u64, user: Option<&str>) -> Event {
        Event::new(0, offset, vec![user.map(str::to_owned)])
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn task_runs_the_hunt_across_batches() {
        assert_eq!(Task::<Repeats>::describe().fields, ["User"]);
        let mut task = Task::<Repeats>::new();
        task.init(pairs(&[("limit", "2")])).unwrap();
        assert!(task.scan(vec![event(0, Some("a"))]).unwrap().is_empty());
        let findings = task
            .scan(vec![event(1, Some("b")), event(2, Some("a"))])
            .unwrap();
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].offsets, [2]);
        let output = task.finish().unwrap();
        assert!(output.findings.is_empty());
        assert_eq!(
            output.aggregates[0].value,
            AggregateValue::Counts(vec![("a".to_owned(), 2), ("b".to_owned(), 1)])
        );
    }

    #[test]
    fn init_errors_leave_the_task_uninitialised() {
        let mut task = Task::<Repeats>::default();
        assert_eq!(
            task.init(pairs(&[("limit", "x")])).unwrap_err(),
            "parameter `limit` must be a positive integer, got `x`"
        );
        assert_eq!(
            task.init(pairs(&[("limt", "3")])).unwrap_err(),
            "unknown parameter `limt`; this module accepts `limit`"
        );
        assert!(
            task.init(pairs(&[("limit", "1"), ("limit", "2")]))
                .unwrap_err()
                .contains("more than once")
        );
        assert_eq!(
            task.scan(vec![]).unwrap_err(),
            "quarry-sdk: `scan` called before `init` succeeded"
        );
        assert_eq!(
            task.finish().unwrap_err().to_string(),
            "quarry-sdk: `finish` called before `init` succeeded"
        );
        task.init(vec![]).unwrap();
    }

    #[test]
    fn calls_out_of_order_are_errors() {
        let mut task = Task::<Repeats>::new();
        task.init(vec![]).unwrap();
        assert!(task.init(vec![]).unwrap_err().contains("called twice"));
        assert_eq!(
            task.scan(vec![event(0, None)]).unwrap_err(),
            "event at offset 0 has no user"
        );
        task.finish().unwrap();
        assert_eq!(
            String::from(task.finish().unwrap_err()),
            "quarry-sdk: `finish` called twice"
        );
        assert!(task.scan(vec![]).unwrap_err().contains("after `finish`"));
        assert!(task.init(vec![]).unwrap_err().contains("after `finish`"));
        // Not reusable: `reset` refuses and the task stays finished.
        assert!(!task.reset());
        assert!(task.init(vec![]).unwrap_err().contains("without a `reset`"));
    }

    /// Counts its events per task.
    struct Tally(u64);

    impl Hunt for Tally {
        const REUSABLE: bool = true;

        fn describe() -> Descriptor {
            Descriptor::new("tally", "0.1.0")
        }

        fn new(_: &Params) -> Result<Self, String> {
            Ok(Tally(0))
        }

        fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
            self.0 += batch.len() as u64;
            Ok(())
        }

        fn finish(self, out: &mut Output) {
            let mut counts = Counts::new("events");
            counts.add("all", self.0);
            out.aggregate(counts);
        }
    }

    #[test]
    fn a_reusable_task_runs_again_after_reset_with_fresh_state() {
        let mut task = Task::<Tally>::new();
        // Only a finished task resets.
        assert!(!task.reset());
        task.init(vec![]).unwrap();
        assert!(!task.reset());
        task.scan(vec![event(0, None), event(1, None)]).unwrap();
        let first = task.finish().unwrap();
        assert!(task.reset());
        task.init(vec![]).unwrap();
        task.scan(vec![event(2, None)]).unwrap();
        let second = task.finish().unwrap();
        let total = |output: &Output| output.aggregates[0].value.clone();
        assert_eq!(
            total(&first),
            AggregateValue::Counts(vec![("all".to_owned(), 2)])
        );
        assert_eq!(
            total(&second),
            AggregateValue::Counts(vec![("all".to_owned(), 1)])
        );
    }
}
