//! Test module `aggregates`: exercises the contract's newer parts end to end.
//!
//! - Prefilter: only events with a `value`, or with `marker = keep`, reach it
//!   (an any-of group).
//! - Aggregates, all keyed by `value`: `by_value` (counts), `hosts_by_value`
//!   (distinct hosts), `top_values` (top-2), `seen` (first/last timestamp),
//!   `stack` (values by host, `max_hosts` from the parameter, default 1),
//!   and `intel_sets` (counts: each intel set's size as the host reports it).
//! - Intel: one finding `aggregates/intel-hit` per event whose value is in
//!   the intel set `watch`.
//! - Log: one structured line at `finish`, `values` (distinct values seen)
//!   and `note` (a value with spaces).
//! - `malformed=true` adds an aggregate with a sketch no SDK builds, which
//!   the host must refuse.

use quarry_sdk::{
    Aggregate, AggregateValue, Counts, Descriptor, Distinct, Emitter, Event, Field, Finding, Hunt,
    LogLevel, MinMax, Output, Params, Predicate, Stack, TopK,
    bindings::quarry::hunt::types::DistinctValues, intel,
};

/// `host`.
const HOST: Field = Field::at(0);
/// `value`.
const VALUE: Field = Field::at(1);

/// The hunt.
pub struct Aggregates {
    malformed: bool,
    by_value: Counts,
    hosts: Distinct,
    top: TopK,
    seen: MinMax,
    stack: Stack,
}

impl Hunt for Aggregates {
    fn describe() -> Descriptor {
        Descriptor::new("aggregates", env!("CARGO_PKG_VERSION"))
            .with_description("Returns every aggregate kind (test module).")
            .with_fields(&["host", "value"])
            .with_any_of(vec![
                Predicate::exists("value"),
                Predicate::equals("marker", &["keep"]),
            ])
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&["max_hosts", "malformed"])?;
        let max_hosts = params.u64_in_range_or("max_hosts", 1, 1..=1000)?;
        Ok(Aggregates {
            malformed: params.bool_or("malformed", false)?,
            by_value: Counts::new("by_value"),
            hosts: Distinct::new("hosts_by_value"),
            top: TopK::new("top_values", 2),
            seen: MinMax::new("seen"),
            stack: Stack::new("stack", u32::try_from(max_hosts).unwrap_or(1)),
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            let host = event.get(HOST).unwrap_or("?");
            let value = event.get(VALUE).unwrap_or("-");
            self.by_value.increment(value);
            self.hosts.insert(value, host);
            self.top.increment(value);
            self.seen.observe(value, event.timestamp_ms);
            self.stack.observe(value, host);
            if intel::contains("watch", value) {
                out.emit(
                    Finding::builder(
                        "aggregates/intel-hit",
                        format!("{value} is on the watch list"),
                    )
                    .entity(format!("value:{value}"))
                    .evidence("host", host)
                    .tag("intel:watch")
                    .offset(event.offset),
                );
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        quarry_sdk::log::with_fields(
            LogLevel::Info,
            "aggregated",
            &[
                ("values", &self.by_value.len().to_string()),
                ("note", "two words"),
            ],
        );
        out.aggregate(self.by_value);
        out.aggregate(self.hosts);
        out.aggregate(self.top);
        out.aggregate(self.seen);
        out.aggregate(self.stack);
        let mut sets = Counts::new("intel_sets");
        for (name, size) in intel::sets() {
            sets.add(&name, size);
        }
        out.aggregate(sets);
        if self.malformed {
            out.aggregate(Aggregate {
                name: "broken".to_owned(),
                value: AggregateValue::Distinct(vec![(
                    "k".to_owned(),
                    DistinctValues::Sketch(vec![1, 2, 3]),
                )]),
            });
        }
    }
}

quarry_sdk::export_hunt!(Aggregates);
