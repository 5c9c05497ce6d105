//! Test module `spinner`: a task that takes a while and then succeeds.
//! `finish` turns a loop `spins` times (default 0) and reports one finding,
//! `spinner/done`, whose entity is the `host` of the first event scanned
//! (so each shard's finding is told apart) and whose evidence names the
//! events seen. The sandbox has no clock, so a test sets the duration in loop
//! turns (measured against its own machine first).

use quarry_sdk::{Descriptor, Emitter, Event, Field, Finding, Hunt, Output, Params};

/// The one field read.
pub const HOST: Field = Field::at(0);

/// The hunt.
pub struct Spinner {
    spins: u64,
    host: Option<String>,
    seen: u64,
}

impl Hunt for Spinner {
    fn describe() -> Descriptor {
        Descriptor::new("spinner", env!("CARGO_PKG_VERSION")).with_fields(&["host"])
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&["spins"])?;
        Ok(Spinner {
            spins: params.u64_or("spins", 0)?,
            host: None,
            seen: 0,
        })
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        if self.host.is_none() {
            self.host = batch.iter().find_map(|e| e.get(HOST)).map(str::to_owned);
        }
        self.seen += batch.len() as u64;
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let mut x = self.seen;
        for i in 0..self.spins {
            // A turn the optimiser cannot fold away.
            x = std::hint::black_box(x.rotate_left(5) ^ i);
        }
        std::hint::black_box(x);
        out.emit(
            Finding::builder("spinner/done", format!("spun {} times", self.spins))
                .entity(self.host.unwrap_or_default())
                .evidence("events", self.seen.to_string()),
        );
    }
}

quarry_sdk::export_hunt!(Spinner);
