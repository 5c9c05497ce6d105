//! Test module `wide-descriptor`: declares 5000 fields (each twice), 5000
//! prefilter clauses and 1000 any-of groups of 10 clauses. The host would
//! project every field and evaluate every clause for every event before the
//! guest runs; it must refuse the module at load, naming the limit.

use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params, Predicate};

/// Distinct fields declared (each twice).
pub const FIELDS: usize = 5000;
/// Prefilter clauses declared.
pub const CLAUSES: usize = 5000;
/// Any-of groups declared.
pub const GROUPS: usize = 1000;

/// The hunt.
pub struct WideDescriptor;

impl Hunt for WideDescriptor {
    fn describe() -> Descriptor {
        let names: Vec<String> = (0..FIELDS).map(|i| format!("field{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut descriptor = Descriptor::new("wide-descriptor", env!("CARGO_PKG_VERSION"))
            .with_fields(&names)
            .with_fields(&names);
        for name in names.iter().take(CLAUSES) {
            descriptor = descriptor.with_predicate(Predicate::exists(*name));
        }
        for group in 0..GROUPS {
            descriptor = descriptor.with_any_of(
                (0..10)
                    .map(|i| Predicate::equals(names[(group * 10 + i) % FIELDS], &["x"]))
                    .collect(),
            );
        }
        descriptor
    }

    fn new(_: &Params) -> Result<Self, String> {
        Ok(WideDescriptor)
    }

    fn scan(&mut self, _: &[Event], _: &mut Emitter) -> Result<(), String> {
        Ok(())
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(WideDescriptor);
