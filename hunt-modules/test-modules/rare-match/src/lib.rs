//! Test module `rare-match`: the benchmark's selective module. Its prefilter
//! (`Image` ends with `\rundll32.exe` and `CommandLine` contains `comsvcs`,
//! the LSASS dump through `comsvcs.dll,MiniDump`, ATT&CK T1003.001) selects
//! about 1% of the events `quarry bench scan` generates; the host skips the
//! rest, whole blocks at a time where the block index rules `Image` out. It
//! re-checks what reaches it and reports the count as the aggregate
//! `rare-match` (key `matched`), no findings.

use quarry_sdk::{Counts, Descriptor, Emitter, Event, Field, Hunt, Output, Params, Predicate};

/// `Image`.
pub const IMAGE: Field = Field::at(0);
/// `CommandLine`.
pub const COMMAND_LINE: Field = Field::at(1);

/// The hunt.
pub struct RareMatch {
    matched: u64,
}

impl Hunt for RareMatch {
    fn describe() -> Descriptor {
        Descriptor::new("rare-match", env!("CARGO_PKG_VERSION"))
            .with_description("Counts rundll32 comsvcs.dll process creations (benchmark module).")
            .with_fields(&["Image", "CommandLine"])
            .with_predicate(Predicate::ends_with("Image", &["\\rundll32.exe"]))
            .with_predicate(Predicate::contains("CommandLine", &["comsvcs"]))
            .with_techniques(&["T1003.001"])
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(RareMatch { matched: 0 })
    }

    fn scan(&mut self, batch: &[Event], _: &mut Emitter) -> Result<(), String> {
        for event in batch {
            let image = event.get(IMAGE).unwrap_or_default();
            let command_line = event.get(COMMAND_LINE).unwrap_or_default();
            if image.to_ascii_lowercase().ends_with("\\rundll32.exe")
                && command_line.to_ascii_lowercase().contains("comsvcs")
            {
                self.matched += 1;
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let mut counts = Counts::new("rare-match");
        counts.add("matched", self.matched);
        out.aggregate(counts);
    }
}

quarry_sdk::export_hunt!(RareMatch);
