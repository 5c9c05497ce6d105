//! Test module `empty-flood`: on its first `scan`, returns `findings`
//! findings (default 4) with empty rule, title and entity, each carrying
//! `items` (default 500,000) empty evidence items. Their strings add up to
//! zero bytes, but each element costs the host memory to copy: the output
//! cap must charge for elements, not only for their bytes.

use quarry_sdk::{Descriptor, Emitter, Event, Finding, Hunt, Output, Params};

/// The hunt.
pub struct EmptyFlood {
    findings: u64,
    items: u64,
    done: bool,
}

impl Hunt for EmptyFlood {
    fn describe() -> Descriptor {
        Descriptor::new("empty-flood", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&["findings", "items"])?;
        Ok(EmptyFlood {
            findings: params.u64_or("findings", 4)?,
            items: params.u64_or("items", 500_000)?,
            done: false,
        })
    }

    fn scan(&mut self, _: &[Event], out: &mut Emitter) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        for _ in 0..self.findings {
            let mut finding = Finding::builder("", "");
            for _ in 0..self.items {
                finding = finding.evidence("", "");
            }
            out.emit(finding);
        }
        Ok(())
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(EmptyFlood);
