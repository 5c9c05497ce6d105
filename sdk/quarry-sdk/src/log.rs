//! The task log, through the host's `log` import.
//!
//! Lines go to the task's bounded log on the worker; the host drops and
//! counts lines beyond its limit, so do not log per event. A line has a
//! level, a message and optional structured fields, which the host keeps
//! apart from the message:
//!
//! ```
//! use quarry_sdk::{LogLevel, log};
//!
//! log::info("scan finished");
//! log::with_fields(LogLevel::Warn, "skipped malformed events", &[("count", "3"), ("field", "EventID")]);
//! ```
//!
//! On non-wasm targets (unit tests of a module's logic on the build machine)
//! there is no host; lines go to standard error instead, so code that logs
//! can still be tested there.

use crate::LogLevel;

/// Appends `message` to the task's log at `level`.
pub fn log(level: LogLevel, message: &str) {
    with_fields(level, message, &[]);
}

/// Appends `message` with structured `fields` (key, value) to the task's
/// log at `level`. The host keeps the first 16 fields.
pub fn with_fields(level: LogLevel, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|&(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        crate::bindings::quarry::hunt::host::log(level, message, &fields);
    }

    // wit-bindgen compiles imports to `unreachable!()` off wasm; calling them
    // would abort a host test, so print instead.
    #[cfg(not(target_arch = "wasm32"))]
    {
        let fields: String = fields.iter().map(|(k, v)| format!(" {k}={v:?}")).collect();
        eprintln!("[{}] {message}{fields}", level_name(level));
    }
}

/// Logs at [`LogLevel::Trace`].
pub fn trace(message: &str) {
    log(LogLevel::Trace, message);
}

/// Logs at [`LogLevel::Debug`].
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// Logs at [`LogLevel::Info`].
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at [`LogLevel::Warn`].
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Logs at [`LogLevel::Error`].
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// The lower-case name of `level` (`warn`), as in the WIT.
pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_off_wasm_does_not_reach_the_missing_host() {
        // Would abort with `unreachable` if it called the generated import.
        info("host test");
        warn("host test");
        with_fields(LogLevel::Debug, "host test", &[("k", "v w")]);
        assert_eq!(level_name(LogLevel::Error), "error");
    }
}
