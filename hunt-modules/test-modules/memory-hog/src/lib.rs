//! Test module `memory-hog`: allocates (and touches) 1 MiB blocks without
//! bound in `scan`. The worker's memory limiter must refuse to grow its
//! linear memory past the task's cap.

use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params};

/// The hunt.
pub struct MemoryHog {
    hoard: Vec<Vec<u8>>,
}

impl Hunt for MemoryHog {
    fn describe() -> Descriptor {
        Descriptor::new("memory-hog", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(MemoryHog { hoard: Vec::new() })
    }

    fn scan(&mut self, _: &[Event], _: &mut Emitter) -> Result<(), String> {
        loop {
            self.hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
        }
    }

    fn finish(self, _: &mut Output) {
        std::hint::black_box(self.hoard.len());
    }
}

quarry_sdk::export_hunt!(MemoryHog);
