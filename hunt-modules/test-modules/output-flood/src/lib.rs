//! Test module `output-flood`: returns `findings` findings (default 10000),
//! each with an evidence value of `evidence_bytes` bytes (default 16), from
//! its first `scan`, or from `finish` with `at=finish`. The worker must cap
//! the findings it keeps and the bytes of output it accepts, and stop
//! copying a result at the output cap.

use quarry_sdk::{Descriptor, Emitter, Event, Finding, Hunt, Output, Params};

/// The hunt.
pub struct OutputFlood {
    findings: u64,
    evidence_bytes: u64,
    in_finish: bool,
    done: bool,
}

impl OutputFlood {
    fn flood(&self) -> impl Iterator<Item = Finding> {
        let evidence = "x".repeat(self.evidence_bytes as usize);
        (0..self.findings).map(move |i| {
            Finding::builder("output-flood/flood", format!("flood {i}"))
                .evidence("blob", &evidence)
                .into()
        })
    }
}

impl Hunt for OutputFlood {
    fn describe() -> Descriptor {
        Descriptor::new("output-flood", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&["findings", "evidence_bytes", "at"])?;
        let in_finish = match params.str_or("at", "scan") {
            "scan" => false,
            "finish" => true,
            other => return Err(format!("at: expected scan or finish, got {other}")),
        };
        Ok(OutputFlood {
            findings: params.u64_or("findings", 10_000)?,
            evidence_bytes: params.u64_or("evidence_bytes", 16)?,
            in_finish,
            done: false,
        })
    }

    fn scan(&mut self, _: &[Event], out: &mut Emitter) -> Result<(), String> {
        if self.done || self.in_finish {
            return Ok(());
        }
        self.done = true;
        for finding in self.flood() {
            out.emit(finding);
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        if self.in_finish {
            for finding in self.flood() {
                out.emit(finding);
            }
        }
    }
}

quarry_sdk::export_hunt!(OutputFlood);
