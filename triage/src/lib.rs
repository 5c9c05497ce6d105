//! Quarry's triage core (see `docs/triage.md`).

pub mod attack;
pub mod bounded;
pub mod error;
pub mod finding;
pub mod glob;
pub mod ids;
pub mod time;
pub mod yaml;
