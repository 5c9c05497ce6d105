//! Test module `stdout-flood`: prints to stdout forever in `scan`. The
//! worker's capture of stdout is bounded; the task fails with an output
//! limit naming stdout.

use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params};

/// The hunt.
pub struct StdoutFlood;

impl Hunt for StdoutFlood {
    fn describe() -> Descriptor {
        Descriptor::new("stdout-flood", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(StdoutFlood)
    }

    fn scan(&mut self, _: &[Event], _: &mut Emitter) -> Result<(), String> {
        let mut line = 0u64;
        loop {
            println!("stdout-flood line {line}: the quick brown fox jumps over the lazy dog");
            line += 1;
        }
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(StdoutFlood);
