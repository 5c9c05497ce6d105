//! Test module `output-flood`: on its first `scan`, returns `findings`
//! findings (default 10000), each with an evidence value of `evidence_bytes`
//! bytes (default 16). The worker must cap the findings it keeps and the
//! bytes of output it accepts.

use quarry_sdk::{Descriptor, Emitter, Event, Finding, Hunt, Output, Params};

/// The hunt.
pub struct OutputFlood {
    findings: u64,
    evidence_bytes: u64,
    done: bool,
}

impl Hunt for OutputFlood {
    fn describe() -> Descriptor {
        Descriptor::new("output-flood", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&["findings", "evidence_bytes"])?;
        Ok(OutputFlood {
            findings: params.u64_or("findings", 10_000)?,
            evidence_bytes: params.u64_or("evidence_bytes", 16)?,
            done: false,
        })
    }

    fn scan(&mut self, _: &[Event], out: &mut Emitter) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let evidence = "x".repeat(self.evidence_bytes as usize);
        for i in 0..self.findings {
            out.emit(
                Finding::builder("output-flood/flood", format!("flood {i}"))
                    .evidence("blob", &evidence),
            );
        }
        Ok(())
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(OutputFlood);
