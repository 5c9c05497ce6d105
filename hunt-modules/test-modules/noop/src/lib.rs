//! Test module `noop`: declares one field (`EventID`), no prefilter, and
//! emits nothing. The sandbox tests use it as the module that must still run
//! after a failure; the benchmark uses it to measure the guest-call overhead.
//! With the parameter `fields` (names separated by commas) it reads those
//! fields instead, touching every one: the benchmark's "module reading three
//! fields".

use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params};

/// The one field read by default.
pub const EVENT_ID: Field = Field::at(0);

/// The hunt.
pub struct Noop {
    fields: usize,
    seen: u64,
}

fn descriptor(fields: &[&str]) -> Descriptor {
    Descriptor::new("noop", env!("CARGO_PKG_VERSION"))
        .with_description("Reads one field (or the `fields` given) and reports nothing.")
        .with_fields(fields)
}

fn planned_fields(params: &Params) -> Option<Vec<&str>> {
    let fields: Vec<&str> = params
        .get("fields")?
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    (!fields.is_empty()).then_some(fields)
}

impl Hunt for Noop {
    fn describe() -> Descriptor {
        descriptor(&["EventID"])
    }

    fn plan(params: &Params) -> Result<Option<Descriptor>, String> {
        Ok(planned_fields(params).map(|fields| descriptor(&fields)))
    }

    fn new(params: &Params) -> Result<Self, String> {
        let fields = planned_fields(params).map_or(1, |f| f.len());
        Ok(Noop { fields, seen: 0 })
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        for event in batch {
            // Touch the fields so the projection is really read.
            for field in 0..self.fields {
                if event.get(Field::at(field)).is_some() {
                    self.seen += 1;
                }
            }
        }
        Ok(())
    }

    fn finish(self, _: &mut Output) {
        std::hint::black_box(self.seen);
    }
}

quarry_sdk::export_hunt!(Noop);
