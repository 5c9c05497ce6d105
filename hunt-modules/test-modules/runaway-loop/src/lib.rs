//! Test module `runaway-loop`: never returns from `scan`. The worker must stop
//! it at its CPU deadline (epoch interruption).

use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params};

/// The hunt.
pub struct RunawayLoop;

impl Hunt for RunawayLoop {
    fn describe() -> Descriptor {
        Descriptor::new("runaway-loop", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(RunawayLoop)
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        let mut spins = batch.len() as u64;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(RunawayLoop);
