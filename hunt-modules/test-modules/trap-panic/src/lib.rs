//! Test module `trap-panic`: panics in `scan` with [`MESSAGE`]. The worker
//! must report a trap carrying that message.

use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params};

/// The panic message the sandbox tests look for.
pub const MESSAGE: &str = "trap-panic: deliberate panic in scan (quarry sandbox test)";

/// The hunt.
pub struct TrapPanic;

impl Hunt for TrapPanic {
    fn describe() -> Descriptor {
        Descriptor::new("trap-panic", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(TrapPanic)
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        if std::hint::black_box(!batch.is_empty()) {
            panic!("{MESSAGE}");
        }
        Ok(())
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(TrapPanic);
