//! Test module `sleeper`: sleeps forever in `scan`
//! (`std::thread::sleep(Duration::MAX)`). Rust's std sleeps through
//! `wasi:clocks/monotonic-clock.subscribe-duration` and
//! `wasi:io/poll`; the sandbox offers no clock, so the task must end with a
//! named reason right away instead of blocking inside the host, where no
//! epoch deadline reaches.

use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params};
use std::time::Duration;

/// The hunt.
pub struct Sleeper;

impl Hunt for Sleeper {
    fn describe() -> Descriptor {
        Descriptor::new("sleeper", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(Sleeper)
    }

    fn scan(&mut self, _: &[Event], _: &mut Emitter) -> Result<(), String> {
        std::thread::sleep(Duration::MAX);
        Ok(())
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(Sleeper);
