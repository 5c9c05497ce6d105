//! Hunt module `logon-bruteforce`: repeated Windows logon failures followed by
//! a success for the same account (ATT&CK T1110, T1110.001).
//!
//! Reads Security events 4625 ("An account failed to log on") and 4624 ("An
//! account was successfully logged on"), with Sigma/Windows field names.
//!
//! Findings:
//!
//! - `logon-bruteforce/success-after-failures` (high): a 4624 for an account
//!   with at least `threshold` 4625s in the `window_minutes` before it.
//! - `logon-bruteforce/failures-without-success` (medium, at the end of the
//!   task): at least `threshold` failures within the window that no such
//!   success followed; once per account.
//!
//! Aggregate: `failures_by_account`, failed logons per `DOMAIN\user`.
//!
//! Parameters: `threshold` (failures needed, 1–100000, default 5) and
//! `window_minutes` (1–10080, default 10).
//!
//! The detection itself lives in [`detector`], independent of the component
//! glue.

#![warn(missing_docs)]

pub mod detector;

use detector::{Config, Detector, Logon, Outcome, TECHNIQUES};
use quarry_sdk::time::MINUTE_MS;
use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params, Predicate};

/// The module's name in the registry.
pub const NAME: &str = "logon-bruteforce";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: failures within the window needed to report.
pub const PARAM_THRESHOLD: &str = "threshold";
/// Parameter: length of the window, in minutes.
pub const PARAM_WINDOW_MINUTES: &str = "window_minutes";

quarry_sdk::fields! {
    /// The event fields this module reads, flat Sigma/Windows names.
    pub mod field {
        /// `4624` (success) or `4625` (failure).
        EVENT_ID = "EventID",
        /// The account the logon was for.
        TARGET_USER_NAME = "TargetUserName",
        /// The domain (or local machine) of that account.
        TARGET_DOMAIN_NAME = "TargetDomainName",
        /// Source network address; `-` for local logons.
        IP_ADDRESS = "IpAddress",
        /// How the account logged on (2 interactive, 3 network, …).
        LOGON_TYPE = "LogonType",
        /// The client machine's name.
        WORKSTATION_NAME = "WorkstationName",
        /// The machine that logged the event, as evtx names it.
        COMPUTER = "Computer",
        /// The machine that logged the event, as some shippers name it.
        HOSTNAME = "Hostname",
    }
}

const EVENT_LOGON_SUCCESS: u64 = 4624;
const EVENT_LOGON_FAILURE: u64 = 4625;

/// The hunt: a [`Detector`] fed from events.
pub struct LogonBruteforce {
    detector: Detector,
}

impl LogonBruteforce {
    /// The detection configuration for the hunt's parameters.
    pub fn config(params: &Params) -> Result<Config, String> {
        params.ensure_known(&[PARAM_THRESHOLD, PARAM_WINDOW_MINUTES])?;
        let defaults = Config::default();
        let threshold =
            params.u64_in_range_or(PARAM_THRESHOLD, defaults.threshold as u64, 1..=100_000)?;
        let window_minutes = params.u64_in_range_or(
            PARAM_WINDOW_MINUTES,
            (defaults.window_ms / MINUTE_MS) as u64,
            1..=10_080,
        )?;
        // Both bounds are small, so the conversions cannot fail; the error
        // exists only to avoid a panic path.
        let overflow = || "parameter out of range for this platform".to_owned();
        Ok(Config {
            threshold: usize::try_from(threshold).map_err(|_| overflow())?,
            window_ms: i64::try_from(window_minutes).map_err(|_| overflow())? * MINUTE_MS,
        })
    }
}

/// Reads the logon attempt an event describes; `None` for other events.
pub fn logon(event: &Event) -> Option<Logon<'_>> {
    let outcome = match event.get_u64(field::EVENT_ID)? {
        EVENT_LOGON_SUCCESS => Outcome::Success,
        EVENT_LOGON_FAILURE => Outcome::Failure,
        _ => return None,
    };
    let meaningful = |f| meaningful(event, f);
    Some(Logon {
        outcome,
        timestamp_ms: event.timestamp_ms,
        offset: event.offset,
        domain: meaningful(field::TARGET_DOMAIN_NAME).unwrap_or(""),
        user: meaningful(field::TARGET_USER_NAME)?,
        source_ip: meaningful(field::IP_ADDRESS),
        logon_type: event
            .get_u64(field::LOGON_TYPE)
            .and_then(|t| u32::try_from(t).ok()),
        workstation: meaningful(field::WORKSTATION_NAME),
        host: meaningful(field::COMPUTER).or_else(|| meaningful(field::HOSTNAME)),
    })
}

/// `field` unless absent, blank or `-` (Windows' "not applicable").
fn meaningful(event: &Event, field: Field) -> Option<&str> {
    event.get_nonempty(field).filter(|&value| value != "-")
}

impl Hunt for LogonBruteforce {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Repeated Windows logon failures (4625) followed by a success (4624) for the same account.",
            )
            .with_fields(field::NAMES)
            .with_predicate(Predicate::equals("EventID", &["4624", "4625"]))
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        Ok(LogonBruteforce {
            detector: Detector::new(Self::config(params)?),
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            if let Some(logon) = logon(event)
                && let Some(finding) = self.detector.observe(&logon)
            {
                out.emit(finding);
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let report = self.detector.finish();
        quarry_sdk::log::debug(&format!(
            "{} failed logons over {} accounts; {} accounts with failures and no success",
            report.failures_by_account.total(),
            report.failures_by_account.len(),
            report.findings.len(),
        ));
        for finding in report.findings {
            out.emit(finding);
        }
        out.aggregate(report.failures_by_account);
    }
}

quarry_sdk::export_hunt!(LogonBruteforce);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::{Severity, Task};

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A flat event in declared field order.
    fn event(offset: u64, at_ms: i64, values: [Option<&str>; 8]) -> Event {
        Event::new(
            at_ms,
            offset,
            values.iter().map(|v| v.map(str::to_owned)).collect(),
        )
    }

    #[test]
    fn descriptor_declares_fields_prefilter_and_techniques() {
        let d = Task::<LogonBruteforce>::describe();
        assert_eq!(d.name, "logon-bruteforce");
        assert_eq!(d.version, VERSION);
        assert_eq!(
            d.fields,
            [
                "EventID",
                "TargetUserName",
                "TargetDomainName",
                "IpAddress",
                "LogonType",
                "WorkstationName",
                "Computer",
                "Hostname"
            ]
        );
        assert_eq!(d.prefilter.len(), 1);
        assert_eq!(d.prefilter[0].field, "EventID");
        assert_eq!(d.prefilter[0].values, ["4624", "4625"]);
        assert_eq!(d.techniques, ["T1110", "T1110.001"]);
    }

    #[test]
    fn parameters_have_defaults_and_clear_errors() {
        assert_eq!(
            LogonBruteforce::config(&Params::default()),
            Ok(Config::default())
        );
        let p = Params::from_pairs([("threshold", "3"), ("window_minutes", "60")]).unwrap();
        assert_eq!(
            LogonBruteforce::config(&p),
            Ok(Config {
                threshold: 3,
                window_ms: 60 * MINUTE_MS
            })
        );
        let mut task = Task::<LogonBruteforce>::new();
        assert_eq!(
            task.init(params(&[("threshold", "abc")])).unwrap_err(),
            "parameter `threshold` must be an integer from 1 to 100000, got `abc`"
        );
        assert_eq!(
            task.init(params(&[("window_minutes", "0")])).unwrap_err(),
            "parameter `window_minutes` must be an integer from 1 to 10080, got `0`"
        );
        assert_eq!(
            task.init(params(&[("window", "5")])).unwrap_err(),
            "unknown parameter `window`; this module accepts `threshold`, `window_minutes`"
        );
    }

    #[test]
    fn reads_logons_from_flat_events() {
        let failure = event(
            7,
            1_000,
            [
                Some("4625"),
                Some("Admin"),
                Some("WIN"),
                Some("-"),
                Some("2"),
                Some("WIN"),
                None,
                Some("ws01.corp.example"),
            ],
        );
        let logon = logon(&failure).expect("a 4625 is a logon");
        assert_eq!(logon.outcome, Outcome::Failure);
        assert_eq!((logon.domain, logon.user), ("WIN", "Admin"));
        assert_eq!(logon.source_ip, None);
        assert_eq!(logon.logon_type, Some(2));
        assert_eq!(logon.host, Some("ws01.corp.example"));

        let other = event(
            8,
            1_000,
            [
                Some("4688"),
                Some("Admin"),
                None,
                None,
                None,
                None,
                None,
                None,
            ],
        );
        assert_eq!(super::logon(&other), None);
        let anonymous = event(
            9,
            1_000,
            [Some("4624"), Some("-"), None, None, None, None, None, None],
        );
        assert_eq!(super::logon(&anonymous), None);
    }

    #[test]
    fn task_reports_success_after_failures_and_aggregate() {
        let mut task = Task::<LogonBruteforce>::new();
        task.init(params(&[("threshold", "3")])).unwrap();
        let attempt = |offset: u64, id: &'static str| {
            event(
                offset,
                1_700_000_000_000 + offset as i64 * 1_000,
                [
                    Some(id),
                    Some("svc-backup"),
                    Some("CORP"),
                    Some("10.20.30.40"),
                    Some("3"),
                    Some("ATTACKER"),
                    Some("DC01"),
                    None,
                ],
            )
        };
        let first = task
            .scan(vec![attempt(0, "4625"), attempt(1, "4625")])
            .unwrap();
        assert!(first.is_empty());
        let second = task
            .scan(vec![attempt(2, "4625"), attempt(3, "4624")])
            .unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].severity, Severity::High);
        assert_eq!(second[0].entity, "user:CORP\\svc-backup");
        assert_eq!(second[0].offsets, [0, 1, 2, 3]);
        let output = task.finish().unwrap();
        assert!(output.findings.is_empty());
        assert_eq!(output.aggregates.len(), 1);
        assert_eq!(output.aggregates[0].name, "failures_by_account");
        assert_eq!(
            output.aggregates[0].counts(),
            [("CORP\\svc-backup".to_owned(), 3)]
        );
    }
}
