//! Hunt module `bruteforce`: many failed Windows logons for an account or
//! from a source, then a success (ATT&CK T1110, T1110.001, T1110.003).
//!
//! Reads Security events 4625 ("An account failed to log on") and 4624 ("An
//! account was successfully logged on"), flat (`TargetUserName`) or with the
//! event data nested (`EventData.TargetUserName`; evtx records are
//! flattened by the worker's ingest).
//!
//! Findings:
//!
//! - `bruteforce/success-after-failures` (high): a 4624 for an account with
//!   at least `threshold` 4625s in the `window_minutes` before it.
//! - `bruteforce/failures-without-success` (medium, at the end of the task):
//!   at least `threshold` failures for an account within the window that no
//!   such success followed; once per account.
//! - `bruteforce/source-success-after-failures` (high): a 4624 from a source
//!   (`IpAddress`, or `WorkstationName` for local logons) with at least
//!   `source_threshold` 4625s from it, for any accounts, in the window
//!   before it: password spraying that found a password. Not reported when
//!   the account rule already reported that success.
//! - `bruteforce/source-failures-without-success` (medium, at the end of the
//!   task): at least `source_threshold` failures from one source over at
//!   least `spray_accounts` accounts, never followed by a success from it.
//!
//! Aggregates: `failures_by_account` and `failures_by_source` (counts),
//! `failed_accounts_by_source` (distinct accounts per source) and
//! `failure_times_by_source` (first and last failure per source, ms since
//! the epoch), merged by the coordinator across every shard of the hunt.
//!
//! Parameters (see `docs/modules.md`): `threshold` (1–100000, default 5),
//! `source_threshold` (1–100000, default 10), `spray_accounts` (2–100000,
//! default 3), `window_minutes` (1–10080, default 10), `ignore_sources`
//! (addresses or workstation names, comma-separated).
//!
//! The detection itself lives in [`detector`], independent of the component
//! glue.

#![warn(missing_docs)]

pub mod detector;

use detector::{Config, Detector, Logon, Outcome, TECHNIQUES, normalise_source};
use quarry_sdk::time::MINUTE_MS;
use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params, Predicate};

/// The module's name in the registry.
pub const NAME: &str = "bruteforce";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: failures for one account within the window needed to report.
pub const PARAM_THRESHOLD: &str = "threshold";
/// Parameter: failures from one source within the window needed to report.
pub const PARAM_SOURCE_THRESHOLD: &str = "source_threshold";
/// Parameter: distinct accounts a source must fail against to be reported
/// without a success.
pub const PARAM_SPRAY_ACCOUNTS: &str = "spray_accounts";
/// Parameter: length of the window, in minutes.
pub const PARAM_WINDOW_MINUTES: &str = "window_minutes";
/// Parameter: sources the source rules leave out (comma-separated).
pub const PARAM_IGNORE_SOURCES: &str = "ignore_sources";

const PARAMS: [&str; 5] = [
    PARAM_THRESHOLD,
    PARAM_SOURCE_THRESHOLD,
    PARAM_SPRAY_ACCOUNTS,
    PARAM_WINDOW_MINUTES,
    PARAM_IGNORE_SOURCES,
];

quarry_sdk::fields! {
    /// The event fields this module reads. Event data is declared with its
    /// `EventData.` prefix: the host resolves that path in events whose
    /// data is nested and falls back to the flat name in the others, so
    /// one declaration reads both shapes.
    pub mod field {
        /// `4624` (success) or `4625` (failure).
        EVENT_ID = "EventID",
        /// The account the logon was for.
        TARGET_USER_NAME = "EventData.TargetUserName",
        /// The domain (or local machine) of that account.
        TARGET_DOMAIN_NAME = "EventData.TargetDomainName",
        /// Source network address; `-` for local logons.
        IP_ADDRESS = "EventData.IpAddress",
        /// How the account logged on (2 interactive, 3 network, …).
        LOGON_TYPE = "EventData.LogonType",
        /// The client machine's name.
        WORKSTATION_NAME = "EventData.WorkstationName",
        /// The machine that logged the event, as evtx names it.
        COMPUTER = "Computer",
        /// The machine that logged the event, as some shippers name it.
        HOSTNAME = "Hostname",
    }
}

const EVENT_LOGON_SUCCESS: u64 = 4624;
const EVENT_LOGON_FAILURE: u64 = 4625;

/// The hunt: a [`Detector`] fed from events.
pub struct Bruteforce {
    detector: Detector,
}

impl Bruteforce {
    /// The detection configuration for the hunt's parameters.
    pub fn config(params: &Params) -> Result<Config, String> {
        params.ensure_known(&PARAMS)?;
        let defaults = Config::default();
        // Every bound is small, so the conversions cannot fail; the error
        // exists only to avoid a panic path.
        let overflow = |name: &str| format!("parameter `{name}` is out of range for this platform");
        let count = |name: &str, default: usize, min: u64| -> Result<usize, String> {
            let value = params.u64_in_range_or(name, default as u64, min..=100_000)?;
            usize::try_from(value).map_err(|_| overflow(name))
        };
        let window_minutes = params.u64_in_range_or(
            PARAM_WINDOW_MINUTES,
            (defaults.window_ms / MINUTE_MS) as u64,
            1..=10_080,
        )?;
        let mut ignore_sources = std::collections::BTreeSet::new();
        for source in params.list(PARAM_IGNORE_SOURCES) {
            if source.contains(char::is_whitespace) {
                return Err(format!(
                    "parameter `{PARAM_IGNORE_SOURCES}` must list addresses or workstation names separated by commas, got `{source}`"
                ));
            }
            ignore_sources.insert(normalise_source(source));
        }
        Ok(Config {
            threshold: count(PARAM_THRESHOLD, defaults.threshold, 1)?,
            source_threshold: count(PARAM_SOURCE_THRESHOLD, defaults.source_threshold, 1)?,
            spray_accounts: count(PARAM_SPRAY_ACCOUNTS, defaults.spray_accounts, 2)?,
            window_ms: i64::try_from(window_minutes).map_err(|_| overflow(PARAM_WINDOW_MINUTES))?
                * MINUTE_MS,
            ignore_sources,
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

impl Hunt for Bruteforce {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Many failed Windows logons (4625) for an account or from a source, then a success (4624).",
            )
            .with_fields(field::NAMES)
            .with_predicate(Predicate::equals("EventID", &["4624", "4625"]))
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        Ok(Bruteforce {
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
            "{} failed logons over {} accounts and {} sources; {} unresolved bursts",
            report.failures_by_account.total(),
            report.failures_by_account.len(),
            report.failures_by_source.len(),
            report.findings.len(),
        ));
        for finding in report.findings {
            out.emit(finding);
        }
        out.aggregate(report.failures_by_account);
        out.aggregate(report.failures_by_source);
        out.aggregate(report.accounts_by_source);
        out.aggregate(report.failure_times_by_source);
    }
}

quarry_sdk::export_hunt!(Bruteforce);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::{AggregateValue, Severity, Task};

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
        let d = Task::<Bruteforce>::describe();
        assert_eq!(d.name, "bruteforce");
        assert_eq!(d.version, VERSION);
        assert_eq!(
            d.fields,
            [
                "EventID",
                "EventData.TargetUserName",
                "EventData.TargetDomainName",
                "EventData.IpAddress",
                "EventData.LogonType",
                "EventData.WorkstationName",
                "Computer",
                "Hostname"
            ]
        );
        assert_eq!(d.prefilter.len(), 1);
        assert_eq!(d.prefilter[0].field, "EventID");
        assert_eq!(d.prefilter[0].values, ["4624", "4625"]);
        assert_eq!(d.techniques, ["T1110", "T1110.001", "T1110.003"]);
    }

    #[test]
    fn parameters_have_defaults_and_clear_errors() {
        assert_eq!(
            Bruteforce::config(&Params::default()),
            Ok(Config::default())
        );
        let p = Params::from_pairs([
            ("threshold", "3"),
            ("window_minutes", "60"),
            ("source_threshold", "25"),
            ("spray_accounts", "4"),
            ("ignore_sources", "::ffff:10.0.0.25, mail01"),
        ])
        .unwrap();
        assert_eq!(
            Bruteforce::config(&p),
            Ok(Config {
                threshold: 3,
                source_threshold: 25,
                spray_accounts: 4,
                window_ms: 60 * MINUTE_MS,
                ignore_sources: ["10.0.0.25".to_owned(), "MAIL01".to_owned()].into(),
            })
        );
        let mut task = Task::<Bruteforce>::new();
        assert_eq!(
            task.init(params(&[("threshold", "abc")])).unwrap_err(),
            "parameter `threshold` must be an integer from 1 to 100000, got `abc`"
        );
        assert_eq!(
            task.init(params(&[("window_minutes", "0")])).unwrap_err(),
            "parameter `window_minutes` must be an integer from 1 to 10080, got `0`"
        );
        assert_eq!(
            task.init(params(&[("spray_accounts", "1")])).unwrap_err(),
            "parameter `spray_accounts` must be an integer from 2 to 100000, got `1`"
        );
        assert_eq!(
            task.init(params(&[("ignore_sources", "10.0.0.1 10.0.0.2")]))
                .unwrap_err(),
            "parameter `ignore_sources` must list addresses or workstation names separated by commas, got `10.0.0.1 10.0.0.2`"
        );
        assert_eq!(
            task.init(params(&[("window", "5")])).unwrap_err(),
            "unknown parameter `window`; this module accepts `threshold`, `source_threshold`, `spray_accounts`, `window_minutes`, `ignore_sources`"
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
        let mut task = Task::<Bruteforce>::new();
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
        let names: Vec<&str> = output.aggregates.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "failures_by_account",
                "failures_by_source",
                "failed_accounts_by_source",
                "failure_times_by_source"
            ]
        );
        assert_eq!(
            output.aggregates[0].value,
            AggregateValue::Counts(vec![("CORP\\svc-backup".to_owned(), 3)])
        );
        assert_eq!(
            output.aggregates[1].value,
            AggregateValue::Counts(vec![("10.20.30.40".to_owned(), 3)])
        );
        // The coordinator merges them across shards as the SDK does.
        let merged = quarry_sdk::merge(output.aggregates).unwrap();
        let quarry_sdk::contract::AggregateValue::Distinct(accounts) =
            &merged["failed_accounts_by_source"]
        else {
            panic!("distinct accounts per source")
        };
        assert_eq!(accounts["10.20.30.40"].count(), 1);
        let quarry_sdk::contract::AggregateValue::Range(times) = &merged["failure_times_by_source"]
        else {
            panic!("first/last failure per source")
        };
        assert_eq!(
            (times["10.20.30.40"].min, times["10.20.30.40"].max),
            (1_700_000_000_000, 1_700_000_002_000)
        );
    }
}
