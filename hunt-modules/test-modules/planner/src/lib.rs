//! Test module `planner`: plans each task from its parameters (contract
//! 0.2.2's `planner.plan`).
//!
//! - `fields`: comma-separated field names to declare for this task (the
//!   descriptor of `describe` declares none); `match_field`/`match_value`
//!   add an equals prefilter clause.
//! - `plan_error`: `plan` fails with this message.
//! - `plan_name`: `plan` returns a descriptor with this name instead of the
//!   module's.
//! - `plan_fields`: `plan` declares this many fields `f0`, `f1`, ...
//! - `plan_none=true`: `plan` keeps the descriptor of `describe`.
//!
//! - `fail_on`: `scan` fails on an event carrying this value in a
//!   declared field.
//! - `print=true`: `init` prints `task N on this instance` to stdout.
//!
//! `scan` counts, per declared field, the events that carried it, in the
//! `present` counts aggregate (key: the field name), and the events seen
//! in `events`, so a test sees exactly what the host projected.
//!
//! It lets the host run the hunt's next task on its instance (contract
//! 0.2.3's `reuse`): the `instance` counts aggregate says how many tasks
//! (`tasks`) and plans (`plans`) this instance has run, so a test sees
//! whether its task ran on a fresh instance.

use quarry_sdk::{Counts, Descriptor, Emitter, Event, Hunt, Output, Params, Predicate};
use std::cell::Cell;

thread_local! {
    /// Tasks initialised on this instance.
    static TASKS: Cell<u64> = const { Cell::new(0) };
    /// Plans made on this instance.
    static PLANS: Cell<u64> = const { Cell::new(0) };
}

/// The hunt.
pub struct Planner {
    fields: Vec<String>,
    fail_on: Option<String>,
    present: Counts,
    events: u64,
}

fn planned_fields(params: &Params) -> Vec<String> {
    if let Some(n) = params.get("plan_fields") {
        let n: usize = n.parse().unwrap_or(0);
        return (0..n).map(|i| format!("f{i}")).collect();
    }
    params
        .get("fields")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Hunt for Planner {
    const REUSABLE: bool = true;

    fn describe() -> Descriptor {
        Descriptor::new("planner", env!("CARGO_PKG_VERSION"))
            .with_description("Plans its fields from its parameters (sandbox test module).")
    }

    fn plan(params: &Params) -> Result<Option<Descriptor>, String> {
        PLANS.set(PLANS.get() + 1);
        if let Some(message) = params.get("plan_error") {
            return Err(message.to_owned());
        }
        if params.get("plan_none") == Some("true") {
            return Ok(None);
        }
        let mut descriptor = Self::describe();
        if let Some(name) = params.get("plan_name") {
            descriptor.name = name.to_owned();
        }
        descriptor.fields = planned_fields(params);
        if let (Some(field), Some(value)) = (params.get("match_field"), params.get("match_value")) {
            descriptor = descriptor.with_predicate(Predicate::equals(field, &[value]));
        }
        Ok(Some(descriptor))
    }

    fn new(params: &Params) -> Result<Self, String> {
        TASKS.set(TASKS.get() + 1);
        if params.get("print") == Some("true") {
            println!("task {} on this instance", TASKS.get());
        }
        Ok(Planner {
            fields: planned_fields(params),
            fail_on: params.get("fail_on").map(str::to_owned),
            present: Counts::new("present"),
            events: 0,
        })
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        for event in batch {
            self.events += 1;
            for (name, value) in self.fields.iter().zip(&event.values) {
                if value.is_some() && *value == self.fail_on {
                    return Err(format!(
                        "event at offset {} carries {name} = {value:?}",
                        event.offset
                    ));
                }
                if value.is_some() {
                    self.present.add(name, 1);
                }
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let mut events = Counts::new("events");
        events.add("events", self.events);
        out.aggregate(events);
        out.aggregate(self.present);
        let mut instance = Counts::new("instance");
        instance.add("tasks", TASKS.get());
        instance.add("plans", PLANS.get());
        out.aggregate(instance);
    }
}

quarry_sdk::export_hunt!(Planner);
