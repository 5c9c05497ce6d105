//! The task log, through the host's `log` import.
//!
//! Lines go to the task's bounded log on the worker; the host drops and
//! counts lines beyond its limit, so do not log per event.
//!
//! On non-wasm targets (unit tests of a module's logic on the build machine)
//! there is no host; lines go to standard error instead, so code that logs
//! can still be tested there.

use crate::LogLevel;

/// Appends `message` to the task's log at `level`.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::quarry::hunt::host::log(level, message);

    // wit-bindgen compiles imports to `unreachable!()` off wasm; calling them
    // would abort a host test, so print instead.
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{}] {message}", level_name(level));
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
        assert_eq!(level_name(LogLevel::Error), "error");
    }
}
