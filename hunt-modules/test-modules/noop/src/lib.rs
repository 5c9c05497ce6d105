//! Test module `noop`: declares one field (`EventID`), no prefilter, and
//! emits nothing. The sandbox tests use it as the module that must still run
//! after a failure; the benchmark uses it to measure the guest-call overhead.

use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params};

/// The one field read.
pub const EVENT_ID: Field = Field::at(0);

/// The hunt.
pub struct Noop {
    seen: u64,
}

impl Hunt for Noop {
    fn describe() -> Descriptor {
        Descriptor::new("noop", env!("CARGO_PKG_VERSION"))
            .with_description("Reads one field and reports nothing.")
            .with_fields(&["EventID"])
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(Noop { seen: 0 })
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        for event in batch {
            // Touch the field so the projection is really read.
            if event.get(EVENT_ID).is_some() {
                self.seen += 1;
            }
        }
        Ok(())
    }

    fn finish(self, _: &mut Output) {
        std::hint::black_box(self.seen);
    }
}

quarry_sdk::export_hunt!(Noop);
