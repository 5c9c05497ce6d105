//! Hunt module `bruteforce`: many failed logons for an account or from a
//! source, then a success (ATT&CK T1110, T1110.001, T1110.003).
//!
//! Reads Windows Security events 4625 ("An account failed to log on"), 4624
//! ("An account was successfully logged on"), 4768 and 4771 (Kerberos) and
//! 4776 (NTLM), flat (`TargetUserName`) or with the event data nested
//! (`EventData.TargetUserName`; evtx records are flattened by the worker's
//! ingest); sshd's `Failed`/`Accepted` lines of auth.log (as the worker's
//! syslog ingest fields them); and auditd `USER_AUTH`/`USER_LOGIN` records.
//! See [`logon`] for what counts.
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
//!   High when the spray was fast and at least `fast_spray_accounts` of its
//!   accounts failed with a wrong password.
//!
//! A fast spray also starts a source's burst whatever `source_threshold`
//! says: at least `fast_spray_accounts` distinct accounts failing from one
//! source at `spray_rate` accounts per minute or faster (the status of each
//! failure read from `Status`, or a 4625's `SubStatus`; failures for a
//! locked, disabled or expired account do not count towards the rate). A
//! source is the client's address, else its workstation name (NTLM 4776 on
//! a domain controller, local `LogonUser`), else, for a local logon type,
//! the machine that logged the event.
//!
//! Aggregates: `failures_by_account` and `failures_by_source` (counts),
//! `failed_accounts_by_source` (distinct accounts per source) and
//! `failure_times_by_source` (first and last failure per source, ms since
//! the epoch), merged by the coordinator across every shard of the hunt.
//!
//! Parameters (see `docs/modules.md`): `threshold` (1–100000, default 5),
//! `source_threshold` (1–100000, default 10), `spray_accounts` (2–100000,
//! default 3), `window_minutes` (1–10080, default 10), `ignore_sources`
//! (addresses or workstation names, comma-separated),
//! `report_internet_failures` (default false), `fast_spray_accounts`
//! (2–100000, default 5), `spray_rate` (accounts per minute, 1–1000000,
//! default 60).
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
/// Parameter: whether failures only from internet addresses, never followed
/// by a success, are reported.
pub const PARAM_REPORT_INTERNET_FAILURES: &str = "report_internet_failures";
/// Parameter: distinct accounts failing fast from one source that are a
/// spray whatever their number of failures.
pub const PARAM_FAST_SPRAY_ACCOUNTS: &str = "fast_spray_accounts";
/// Parameter: accounts per minute that make a source's failures fast.
pub const PARAM_SPRAY_RATE: &str = "spray_rate";

const PARAMS: [&str; 8] = [
    PARAM_THRESHOLD,
    PARAM_SOURCE_THRESHOLD,
    PARAM_SPRAY_ACCOUNTS,
    PARAM_WINDOW_MINUTES,
    PARAM_IGNORE_SOURCES,
    PARAM_REPORT_INTERNET_FAILURES,
    PARAM_FAST_SPRAY_ACCOUNTS,
    PARAM_SPRAY_RATE,
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
        /// 4768, 4771, 4776: the result code (`0x0` is success).
        STATUS = "EventData.Status",
        /// 4776: the client machine's name.
        WORKSTATION = "EventData.Workstation",
        /// auth.log: what sshd said (`failed_password`, `accepted_publickey`,
        /// ...), as the worker's syslog ingest names it.
        SSHD_EVENT = "sshd_event",
        /// auth.log: the account.
        USER = "user",
        /// auth.log: the client's address.
        SOURCE_IP = "source_ip",
        /// auth.log: `message repeated N times: [ ... ]`.
        REPEAT_COUNT = "repeat_count",
        /// auditd: the record type (`USER_AUTH`, `USER_LOGIN`).
        AUDIT_TYPE = "type",
        /// auditd: `success` or `failed`.
        AUDIT_RESULT = "res",
        /// auditd: the account.
        AUDIT_ACCOUNT = "acct",
        /// auditd: the client's address (`?` when none).
        AUDIT_ADDRESS = "addr",
        /// The canonical host the worker's ingest sets (syslog, auditd).
        HOST = "host",
        /// 4625: why the logon failed, when `Status` is the generic
        /// `0xC000006D` (`0xC000006A` wrong password, `0xC0000064` no such
        /// user, …).
        SUB_STATUS = "EventData.SubStatus",
    }
}

const EVENT_LOGON_SUCCESS: u64 = 4624;
const EVENT_LOGON_FAILURE: u64 = 4625;
const EVENT_KERBEROS_TGT: u64 = 4768;
const EVENT_KERBEROS_PREAUTH_FAILED: u64 = 4771;
const EVENT_NTLM_VALIDATION: u64 = 4776;
/// Most times one `message repeated N times` line counts (sshd repeats a
/// message a few times; a forged huge N must not stall the task).
const MAX_REPEAT: u64 = 1_000;

/// The hunt: a [`Detector`] fed from events.
pub struct Bruteforce {
    detector: Detector,
    /// Report failures without success from internet addresses only.
    report_internet_failures: bool,
    /// Sources of failed Linux logins (sshd, auditd), normalised.
    linux_sources: std::collections::BTreeSet<String>,
    /// Kerberos and NTLM validation failures held for [`SAME_ATTEMPT_MS`]:
    /// see [`Bruteforce::scan`].
    pending: std::collections::VecDeque<Held>,
}

/// Two records of one failed attempt (the validation, 4768/4771/4776, and
/// the logon, 4625, on the machine that did both) are at most this far
/// apart.
const SAME_ATTEMPT_MS: i64 = 2_000;
/// Validation failures held at once; beyond, the oldest is counted.
const MAX_HELD: usize = 10_000;
/// Linux login sources remembered; beyond, later ones are not treated as
/// background (they are reported).
const MAX_LINUX_SOURCES: usize = 100_000;

/// A validation failure waiting to see whether a 4625 repeats it.
#[derive(Clone, Debug)]
struct Held {
    timestamp_ms: i64,
    offset: u64,
    user: String,
    source_ip: Option<String>,
    workstation: Option<String>,
    host: Option<String>,
    status: Option<String>,
}

impl Held {
    fn of(logon: &Logon<'_>) -> Self {
        Held {
            timestamp_ms: logon.timestamp_ms,
            offset: logon.offset,
            user: logon.user.to_owned(),
            source_ip: logon.source_ip.map(str::to_owned),
            workstation: logon.workstation.map(str::to_owned),
            host: logon.host.map(str::to_owned),
            status: logon.status.map(str::to_owned),
        }
    }

    fn logon(&self) -> Logon<'_> {
        Logon {
            outcome: Outcome::Failure,
            timestamp_ms: self.timestamp_ms,
            offset: self.offset,
            domain: "",
            user: &self.user,
            source_ip: self.source_ip.as_deref(),
            logon_type: None,
            workstation: self.workstation.as_deref(),
            host: self.host.as_deref(),
            status: self.status.as_deref(),
        }
    }

    /// Whether the 4625 `logon` records the same attempt.
    fn repeated_by(&self, logon: &Logon<'_>) -> bool {
        self.user.eq_ignore_ascii_case(logon.user)
            && self.host.as_deref() == logon.host
            && (logon.timestamp_ms - self.timestamp_ms).abs() <= SAME_ATTEMPT_MS
    }
}

impl Bruteforce {
    /// Counts the held validation failures from before `before_ms`.
    fn release(&mut self, before_ms: i64, emit: &mut dyn FnMut(quarry_sdk::Finding)) {
        while self
            .pending
            .front()
            .is_some_and(|held| held.timestamp_ms < before_ms || before_ms == i64::MAX)
        {
            let Some(held) = self.pending.pop_front() else {
                break;
            };
            if let Some(finding) = self.detector.observe(&held.logon()) {
                emit(finding);
            }
        }
    }

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
            fast_spray_accounts: count(PARAM_FAST_SPRAY_ACCOUNTS, defaults.fast_spray_accounts, 2)?,
            spray_rate: params.u64_in_range_or(
                PARAM_SPRAY_RATE,
                defaults.spray_rate,
                1..=1_000_000,
            )?,
        })
    }
}

/// Reads the logon attempt an event describes, and how many attempts it
/// stands for (sshd's `message repeated N times`); `None` for other events.
///
/// - Windows: 4624/4625 (logon), 4768 (Kerberos TGT: `Status` 0x0 is a
///   success), 4771 (Kerberos pre-authentication failed), 4776 (NTLM
///   validation: `Status` 0x0 is a success). 4648 (explicit credentials)
///   says nothing of the outcome and is not read.
/// - auth.log: sshd `Failed <method>` (password, keyboard-interactive,
///   publickey, none) and `Accepted <method>`. sshd's `Invalid user` and PAM
///   `authentication failure` lines repeat what the `Failed` line of the
///   same attempt says, so they are not counted again.
/// - auditd: `USER_AUTH` with `res=failed` (a failed authentication, PAM
///   or sshd) and `USER_LOGIN` with `res=success`.
///
/// Linux accounts are per host: their account is `host\user`, as local
/// Windows accounts are `MACHINE\user`.
pub fn logon(event: &Event) -> Option<(Logon<'_>, u64)> {
    if let Some(id) = event.get_u64(field::EVENT_ID) {
        return windows_logon(event, id).map(|logon| (logon, 1));
    }
    if let Some(what) = meaningful(event, field::SSHD_EVENT) {
        return sshd_logon(event, what);
    }
    audit_logon(event).map(|logon| (logon, 1))
}

/// Whether `finding` is failures without a success that came only from
/// internet addresses (not private, loopback, link-local or shared
/// address space) against Linux logins (`linux_sources`: the sources of
/// sshd and auditd failures). A truncated or empty list of sources is not.
fn only_from_internet(
    finding: &quarry_sdk::Finding,
    linux_sources: &std::collections::BTreeSet<String>,
) -> bool {
    let sources = match finding.rule.as_str() {
        detector::RULE_FAILURES_WITHOUT_SUCCESS => finding.evidence_value("failure_source_ips"),
        detector::RULE_SOURCE_FAILURES_WITHOUT_SUCCESS => finding.evidence_value("source"),
        _ => None,
    };
    let Some(sources) = sources else {
        return false;
    };
    let mut any = false;
    for source in sources.split(", ") {
        match source.trim().parse::<std::net::IpAddr>() {
            Ok(ip) if is_internet(ip) && linux_sources.contains(&normalise_source(source)) => {
                any = true;
            }
            _ => return false,
        }
    }
    any
}

/// An address routed on the internet ([`quarry_sdk::net::is_private_ip`]
/// says which are not). Documentation ranges count as internet: they stand
/// for it in examples and tests.
fn is_internet(ip: std::net::IpAddr) -> bool {
    !quarry_sdk::net::is_private_ip(ip)
}

/// Whether `event` is a Kerberos or NTLM credential validation (4768,
/// 4771, 4776), which a 4625 on the same machine may repeat.
fn is_validation(event: &Event) -> bool {
    matches!(
        event.get_u64(field::EVENT_ID),
        Some(EVENT_KERBEROS_TGT | EVENT_KERBEROS_PREAUTH_FAILED | EVENT_NTLM_VALIDATION)
    )
}

fn windows_logon(event: &Event, id: u64) -> Option<Logon<'_>> {
    let meaningful = |f| meaningful(event, f);
    let status_ok = || {
        meaningful(field::STATUS).map(|s| {
            s.trim()
                .trim_start_matches("0x")
                .trim_start_matches('0')
                .is_empty()
        })
    };
    let (outcome, domain, workstation) = match id {
        EVENT_LOGON_SUCCESS => (
            Outcome::Success,
            meaningful(field::TARGET_DOMAIN_NAME),
            meaningful(field::WORKSTATION_NAME),
        ),
        EVENT_LOGON_FAILURE => (
            Outcome::Failure,
            meaningful(field::TARGET_DOMAIN_NAME),
            meaningful(field::WORKSTATION_NAME),
        ),
        // Kerberos names the account without its domain (4771 has none):
        // both events key it by name alone, so they count together.
        EVENT_KERBEROS_TGT => (outcome_of(status_ok()?), None, None),
        EVENT_KERBEROS_PREAUTH_FAILED => (Outcome::Failure, None, None),
        EVENT_NTLM_VALIDATION => (
            outcome_of(status_ok()?),
            None,
            meaningful(field::WORKSTATION),
        ),
        _ => return None,
    };
    Some(Logon {
        outcome,
        timestamp_ms: event.timestamp_ms,
        offset: event.offset,
        domain: domain.unwrap_or(""),
        user: meaningful(field::TARGET_USER_NAME)?,
        source_ip: meaningful(field::IP_ADDRESS),
        logon_type: event
            .get_u64(field::LOGON_TYPE)
            .and_then(|t| u32::try_from(t).ok()),
        workstation,
        host: meaningful(field::COMPUTER).or_else(|| meaningful(field::HOSTNAME)),
        status: failure_status(event, id),
    })
}

/// The status that says why a Windows logon failed: `SubStatus` of a 4625
/// when it is set (the `Status` of a wrong password or unknown user is the
/// generic `0xC000006D`), else `Status`.
fn failure_status(event: &Event, id: u64) -> Option<&str> {
    let sub = meaningful(event, field::SUB_STATUS).filter(|s| {
        !s.trim()
            .trim_start_matches("0x")
            .trim_start_matches('0')
            .is_empty()
    });
    match id {
        EVENT_LOGON_FAILURE => sub.or_else(|| meaningful(event, field::STATUS)),
        EVENT_LOGON_SUCCESS => None,
        _ => meaningful(event, field::STATUS),
    }
}

fn outcome_of(success: bool) -> Outcome {
    if success {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

/// The machine of a Linux record: the canonical `host`, else `Hostname`.
fn linux_host(event: &Event) -> Option<&str> {
    meaningful(event, field::HOST).or_else(|| meaningful(event, field::HOSTNAME))
}

fn sshd_logon<'a>(event: &'a Event, what: &str) -> Option<(Logon<'a>, u64)> {
    let outcome = if what.starts_with("failed_") {
        Outcome::Failure
    } else if what.starts_with("accepted_") {
        Outcome::Success
    } else {
        return None;
    };
    let host = linux_host(event);
    let times = event
        .get_u64(field::REPEAT_COUNT)
        .unwrap_or(1)
        .clamp(1, MAX_REPEAT);
    let logon = Logon {
        outcome,
        timestamp_ms: event.timestamp_ms,
        offset: event.offset,
        domain: host.unwrap_or(""),
        user: meaningful(event, field::USER)?,
        source_ip: meaningful(event, field::SOURCE_IP),
        logon_type: None,
        workstation: None,
        host,
        status: None,
    };
    Some((logon, times))
}

fn audit_logon(event: &Event) -> Option<Logon<'_>> {
    let result = meaningful(event, field::AUDIT_RESULT)?;
    let outcome = match (meaningful(event, field::AUDIT_TYPE)?, result) {
        ("USER_AUTH", "failed" | "no") => Outcome::Failure,
        ("USER_LOGIN", "success" | "yes") => Outcome::Success,
        _ => return None,
    };
    let host = linux_host(event);
    Some(Logon {
        outcome,
        timestamp_ms: event.timestamp_ms,
        offset: event.offset,
        domain: host.unwrap_or(""),
        user: meaningful(event, field::AUDIT_ACCOUNT).filter(|a| *a != "?")?,
        source_ip: meaningful(event, field::AUDIT_ADDRESS).filter(|a| *a != "?"),
        logon_type: None,
        workstation: None,
        host,
        status: None,
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
                "Many failed logons for an account or from a source, then a success: Windows 4625/4624, Kerberos 4768/4771, NTLM 4776, sshd in auth.log, auditd USER_AUTH/USER_LOGIN.",
            )
            .with_fields(field::NAMES)
            .with_any_of(vec![
                Predicate::equals("EventID", &["4624", "4625", "4768", "4771", "4776"]),
                Predicate::exists("sshd_event"),
                Predicate::equals("type", &["USER_AUTH", "USER_LOGIN"]),
            ])
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        Ok(Bruteforce {
            detector: Detector::new(Self::config(params)?),
            report_internet_failures: params.bool_or(PARAM_REPORT_INTERNET_FAILURES, false)?,
            linux_sources: std::collections::BTreeSet::new(),
            pending: std::collections::VecDeque::new(),
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        // A failed logon to the machine that validated the credentials is
        // logged twice, as a 4776 or 4771 and as a 4625: validation
        // failures wait a moment, and one a 4625 repeats is counted once,
        // as the 4625 (which says more: logon type, address).
        for event in batch {
            let Some((logon, times)) = logon(event) else {
                continue;
            };
            if logon.outcome == Outcome::Failure
                && event.get(field::EVENT_ID).is_none()
                && self.linux_sources.len() < MAX_LINUX_SOURCES
                && let Some(ip) = logon.source_ip
            {
                self.linux_sources.insert(normalise_source(ip));
            }
            if logon.outcome == Outcome::Failure && is_validation(event) {
                self.release(logon.timestamp_ms - SAME_ATTEMPT_MS, &mut |f| out.emit(f));
                if self.pending.len() >= MAX_HELD
                    && let Some(oldest) = self.pending.pop_front()
                    && let Some(finding) = self.detector.observe(&oldest.logon())
                {
                    out.emit(finding);
                }
                self.pending.push_back(Held::of(&logon));
                continue;
            }
            if logon.outcome == Outcome::Failure
                && let Some(same) = self.pending.iter().position(|h| h.repeated_by(&logon))
            {
                self.pending.remove(same);
            }
            // Held failures came before this attempt: a success is judged
            // with them counted.
            let release_before = match logon.outcome {
                Outcome::Success => i64::MAX,
                Outcome::Failure => logon.timestamp_ms - SAME_ATTEMPT_MS,
            };
            self.release(release_before, &mut |f| out.emit(f));
            for _ in 0..times {
                if let Some(finding) = self.detector.observe(&logon) {
                    out.emit(finding);
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, out: &mut Output) {
        self.release(i64::MAX, &mut |f| out.emit(f));
        let report = self.detector.finish();
        quarry_sdk::log::debug(&format!(
            "{} failed logons over {} accounts and {} sources; {} unresolved bursts",
            report.failures_by_account.total(),
            report.failures_by_account.len(),
            report.failures_by_source.len(),
            report.findings.len(),
        ));
        // An SSH server reachable from the internet is guessed at all day;
        // what matters there is a success, which the success rules report
        // whatever the source. Guessing of Linux logins only from internet
        // addresses that never got in stays in the aggregates. (Windows
        // logons from the internet stay reported: RDP or SMB open to it is
        // itself worth a look.)
        let mut background = 0u64;
        for finding in report.findings {
            if !self.report_internet_failures && only_from_internet(&finding, &self.linux_sources) {
                background += 1;
                continue;
            }
            out.emit(finding);
        }
        if background > 0 {
            quarry_sdk::log::info(&format!(
                "{background} bursts of failures from internet addresses without a success not reported (report_internet_failures=true reports them)"
            ));
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
                "Hostname",
                "EventData.Status",
                "EventData.Workstation",
                "sshd_event",
                "user",
                "source_ip",
                "repeat_count",
                "type",
                "res",
                "acct",
                "addr",
                "host",
                "EventData.SubStatus",
            ]
        );
        assert!(d.prefilter.is_empty());
        assert_eq!(d.any_of.len(), 1);
        let fields: Vec<&str> = d.any_of[0].iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["EventID", "sshd_event", "type"]);
        assert_eq!(
            d.any_of[0][0].values,
            ["4624", "4625", "4768", "4771", "4776"]
        );
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
                ..Config::default()
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
            "unknown parameter `window`; this module accepts `threshold`, `source_threshold`, `spray_accounts`, `window_minutes`, `ignore_sources`, `report_internet_failures`, `fast_spray_accounts`, `spray_rate`"
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
        let (logon, times) = logon(&failure).expect("a 4625 is a logon");
        assert_eq!(times, 1);
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

    /// Rule, entity and failures of each finding.
    fn summary(found: &[quarry_sdk::Finding]) -> Vec<(&str, &str, Option<&str>)> {
        found
            .iter()
            .map(|f| {
                (
                    f.rule.as_str(),
                    f.entity.as_str(),
                    f.evidence_value("failures"),
                )
            })
            .collect()
    }

    /// An event with `values` at the given fields, the rest absent.
    fn with(offset: u64, at_ms: i64, values: &[(Field, &str)]) -> Event {
        let mut all = vec![None; field::NAMES.len()];
        for (f, v) in values {
            all[f.index()] = Some((*v).to_owned());
        }
        Event::new(at_ms, offset, all)
    }

    fn sshd(offset: u64, what: &str, user: &str, ip: &str, repeat: Option<&str>) -> Event {
        let mut values = vec![
            (field::SSHD_EVENT, what),
            (field::USER, user),
            (field::SOURCE_IP, ip),
            (field::HOST, "web01"),
        ];
        if let Some(n) = repeat {
            values.push((field::REPEAT_COUNT, n));
        }
        with(offset, 1_700_000_000_000 + offset as i64 * 2_000, &values)
    }

    #[test]
    fn an_ssh_password_guessing_burst_is_found_and_a_mistyping_user_is_not() {
        let mut task = Task::<Bruteforce>::new();
        task.init(vec![]).unwrap();
        let batch = vec![
            // alice mistypes twice, then gets in: quiet.
            sshd(0, "failed_password", "alice", "10.0.0.8", None),
            sshd(1, "failed_password", "alice", "10.0.0.8", None),
            sshd(2, "accepted_password", "alice", "10.0.0.8", None),
            // A guessing burst on root, one line standing for three tries.
            sshd(3, "failed_password", "root", "203.0.113.5", None),
            sshd(4, "failed_password", "root", "203.0.113.5", Some("3")),
            // Lines that repeat what the `Failed` line says are not counted.
            sshd(5, "invalid_user", "root", "203.0.113.5", None),
            sshd(6, "auth_failure", "root", "203.0.113.5", None),
            sshd(
                7,
                "failed_keyboard_interactive",
                "root",
                "203.0.113.5",
                None,
            ),
        ];
        let found = task.scan(batch).unwrap();
        assert!(found.is_empty(), "{found:#?}");
        let found = task
            .scan(vec![sshd(
                8,
                "accepted_password",
                "root",
                "203.0.113.5",
                None,
            )])
            .unwrap();
        assert_eq!(
            summary(&found),
            [(
                detector::RULE_SUCCESS_AFTER_FAILURES,
                "user:WEB01\\root",
                Some("5")
            )]
        );
        assert!(task.finish().unwrap().findings.is_empty());
    }

    #[test]
    fn kerberos_ntlm_and_auditd_attempts_count() {
        let windows = |offset: u64, id: &str, user: &str, status: &str| {
            with(
                offset,
                1_700_000_000_000 + offset as i64 * 1_000,
                &[
                    (field::EVENT_ID, id),
                    (field::TARGET_USER_NAME, user),
                    (field::STATUS, status),
                    (field::IP_ADDRESS, "::ffff:10.23.123.11"),
                    (field::COMPUTER, "DC01"),
                ],
            )
        };
        fn outcome(e: &Event) -> Option<(Outcome, String, String)> {
            logon(e).map(|(l, _)| (l.outcome, l.domain.to_owned(), l.user.to_owned()))
        }
        let expect = |outcome: Outcome, domain: &str, user: &str| {
            Some((outcome, domain.to_owned(), user.to_owned()))
        };
        assert_eq!(
            outcome(&windows(0, "4771", "svc", "0x18")),
            expect(Outcome::Failure, "", "svc")
        );
        assert_eq!(
            outcome(&windows(1, "4768", "svc", "0x0")),
            expect(Outcome::Success, "", "svc")
        );
        assert_eq!(
            outcome(&windows(2, "4768", "svc", "0x6")),
            expect(Outcome::Failure, "", "svc")
        );
        assert_eq!(
            outcome(&windows(3, "4776", "bob", "0xC000006A")),
            expect(Outcome::Failure, "", "bob")
        );
        assert_eq!(
            outcome(&windows(4, "4776", "bob", "0x0")),
            expect(Outcome::Success, "", "bob")
        );
        // The reason of a failure: a 4625's sub-status when set.
        let with_sub = with(
            6,
            1_700_000_000_000,
            &[
                (field::EVENT_ID, "4625"),
                (field::TARGET_USER_NAME, "carol"),
                (field::STATUS, "0xC000006D"),
                (field::SUB_STATUS, "0xC0000064"),
            ],
        );
        assert_eq!(logon(&with_sub).unwrap().0.status, Some("0xC0000064"));
        let no_sub = with(
            7,
            1_700_000_000_000,
            &[
                (field::EVENT_ID, "4625"),
                (field::TARGET_USER_NAME, "carol"),
                (field::STATUS, "0xC0000234"),
                (field::SUB_STATUS, "0x0"),
            ],
        );
        assert_eq!(logon(&no_sub).unwrap().0.status, Some("0xC0000234"));
        assert_eq!(
            logon(&windows(8, "4771", "svc", "0x18")).unwrap().0.status,
            Some("0x18")
        );
        // 4648 says nothing of the outcome.
        assert_eq!(outcome(&windows(5, "4648", "bob", "0x0")), None);

        let audit = |offset: u64, kind: &str, res: &str| {
            with(
                offset,
                1_700_000_000_000 + offset as i64 * 1_000,
                &[
                    (field::AUDIT_TYPE, kind),
                    (field::AUDIT_RESULT, res),
                    (field::AUDIT_ACCOUNT, "root"),
                    (field::AUDIT_ADDRESS, "203.0.113.9"),
                    (field::HOST, "db01"),
                ],
            )
        };
        let mut task = Task::<Bruteforce>::new();
        task.init(vec![]).unwrap();
        let mut batch: Vec<Event> = (0..6).map(|i| audit(i, "USER_AUTH", "failed")).collect();
        // The login record of the failed attempts and an unrelated type.
        batch.push(audit(6, "USER_LOGIN", "failed"));
        batch.push(audit(7, "USER_ACCT", "success"));
        batch.push(audit(8, "USER_LOGIN", "success"));
        let found = task.scan(batch).unwrap();
        assert_eq!(
            summary(&found),
            [(
                detector::RULE_SUCCESS_AFTER_FAILURES,
                "user:DB01\\root",
                Some("6")
            )]
        );
    }

    #[test]
    fn guessing_only_from_the_internet_without_success_is_background() {
        let burst = |task: &mut Task<Bruteforce>, ip: &str, base: u64| {
            let batch: Vec<Event> = (0..12)
                .map(|i| {
                    let user = format!("guess{}", i % 6);
                    sshd(base + i, "failed_password", &user, ip, None)
                })
                .collect();
            task.scan(batch).unwrap()
        };
        // A scanner on the internet: quiet by default.
        let mut task = Task::<Bruteforce>::new();
        task.init(vec![]).unwrap();
        assert!(burst(&mut task, "198.51.100.99", 0).is_empty());
        assert!(task.finish().unwrap().findings.is_empty());
        // The same from inside the network is reported.
        let mut task = Task::<Bruteforce>::new();
        task.init(vec![]).unwrap();
        burst(&mut task, "10.1.2.3", 0);
        let found = task.finish().unwrap().findings;
        assert_eq!(
            found.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
            [detector::RULE_SOURCE_FAILURES_WITHOUT_SUCCESS]
        );
        // And from the internet when asked for.
        let mut task = Task::<Bruteforce>::new();
        task.init(params(&[("report_internet_failures", "true")]))
            .unwrap();
        burst(&mut task, "198.51.100.99", 0);
        assert_eq!(task.finish().unwrap().findings.len(), 1);
        // Windows logons guessed from the internet stay reported.
        let mut task = Task::<Bruteforce>::new();
        task.init(vec![]).unwrap();
        let batch: Vec<Event> = (0..12)
            .map(|i| {
                let user = format!("guess{}", i % 6);
                with(
                    i,
                    1_700_000_000_000 + i as i64 * 1_000,
                    &[
                        (field::EVENT_ID, "4625"),
                        (field::TARGET_USER_NAME, &user),
                        (field::IP_ADDRESS, "198.51.100.99"),
                    ],
                )
            })
            .collect();
        task.scan(batch).unwrap();
        assert_eq!(task.finish().unwrap().findings.len(), 1);
        assert!(is_internet("::ffff:203.0.113.5".parse().unwrap()));
        assert!(!is_internet("100.72.1.1".parse().unwrap()));
        assert!(!is_internet("fd00::1".parse().unwrap()));
    }
}
