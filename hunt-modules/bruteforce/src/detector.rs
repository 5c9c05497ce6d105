//! The detection logic, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! Per account, failed logons (4625) are kept in time order for the length of
//! the window. A successful logon (4624) for an account with at least
//! `threshold` failures in the window before it is a high finding, after which
//! the account starts over. Failures that reach the threshold but are never
//! followed by such a success are reported once per account by
//! [`Detector::finish`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use quarry_sdk::time::{MINUTE_MS, format_rfc3339_ms};
use quarry_sdk::{Counts, Finding, Severity};

/// Rule id of the high finding: failures, then a success.
pub const RULE_SUCCESS_AFTER_FAILURES: &str = "bruteforce/success-after-failures";
/// Rule id of the medium finding: failures that never led to a success.
pub const RULE_FAILURES_WITHOUT_SUCCESS: &str = "bruteforce/failures-without-success";
/// Name of the aggregate counting failed logons per account.
pub const AGGREGATE_FAILURES_BY_ACCOUNT: &str = "failures_by_account";
/// ATT&CK: Brute Force, and its Password Guessing sub-technique.
pub const TECHNIQUES: [&str; 2] = ["T1110", "T1110.001"];

/// Confidence of a success after failures.
const CONFIDENCE_SUCCESS: u8 = 80;
/// Confidence when the success came from an address that also failed: the
/// same source guessed and then got in, rather than a user who mistyped on
/// one machine and logged on from another.
const CONFIDENCE_SUCCESS_SAME_SOURCE: u8 = 90;
/// Confidence of failures without success: often a stale saved password or a
/// misconfigured service rather than an attack.
const CONFIDENCE_FAILURES_ONLY: u8 = 60;

/// Shard order and timestamps may disagree by this much (clock skew between
/// sources, events written late). Failures are kept this much longer than
/// the window, and a success counts failures stamped up to this much after it
/// (they were delivered before it).
pub const REORDER_TOLERANCE_MS: i64 = 2 * MINUTE_MS;

/// Most failures remembered per account. The oldest are forgotten first; they
/// are the first to leave the window anyway. Bounds memory under a flood.
const MAX_TRACKED_FAILURES: usize = 10_000;
/// Most shard offsets of failures attached to one finding.
const MAX_FINDING_OFFSETS: usize = 50;
/// Most distinct source addresses remembered per unresolved burst.
const MAX_BURST_ADDRESSES: usize = 256;
/// Most addresses, hosts or logon types listed in one evidence value.
const MAX_LISTED: usize = 10;
/// Accounts idle for longer than the window are dropped every this many
/// events, so a spray over many accounts does not grow memory without bound.
const SWEEP_EVERY: u32 = 4_096;

/// Tuning of the detection, from the hunt's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Failures within the window needed before a success is suspicious.
    pub threshold: usize,
    /// Length of the window, in milliseconds.
    pub window_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threshold: 5,
            window_ms: 10 * MINUTE_MS,
        }
    }
}

/// Whether a logon attempt succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Security event 4624, "An account was successfully logged on".
    Success,
    /// Security event 4625, "An account failed to log on".
    Failure,
}

/// One logon attempt, as read from an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logon<'a> {
    /// Success or failure.
    pub outcome: Outcome,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Position of the event in its shard.
    pub offset: u64,
    /// `TargetDomainName`; empty when absent.
    pub domain: &'a str,
    /// `TargetUserName`.
    pub user: &'a str,
    /// `IpAddress`, when the event has a real one.
    pub source_ip: Option<&'a str>,
    /// `LogonType` (2 interactive, 3 network, 10 remote interactive, …).
    pub logon_type: Option<u32>,
    /// `WorkstationName`: the client machine the attempt came from.
    pub workstation: Option<&'a str>,
    /// The machine that logged the event (`Computer` or `Hostname`).
    pub host: Option<&'a str>,
}

/// The name Windows uses for a logon type, for evidence.
pub fn logon_type_name(logon_type: u32) -> &'static str {
    match logon_type {
        0 => "System",
        2 => "Interactive",
        3 => "Network",
        4 => "Batch",
        5 => "Service",
        7 => "Unlock",
        8 => "NetworkCleartext",
        9 => "NewCredentials",
        10 => "RemoteInteractive",
        11 => "CachedInteractive",
        12 => "CachedRemoteInteractive",
        13 => "CachedUnlock",
        _ => "unknown",
    }
}

fn describe_logon_type(logon_type: u32) -> String {
    format!("{logon_type} ({})", logon_type_name(logon_type))
}

/// The account an attempt is for, normalised so that the same account
/// compares equal across events and shards (`WIN\admin`), or `None` for
/// attempts that say nothing about a person's password:
///
/// - `-` and empty user names (anonymous and malformed events);
/// - machine accounts (`WS01$`). Their passwords are long random secrets
///   rotated by the domain, so their failures come from stale secrets and
///   broken trusts rather than guessing, and their successes are constant
///   background noise. Both sides are skipped for them.
pub fn account_key(domain: &str, user: &str) -> Option<String> {
    let user = user.trim();
    if user.is_empty() || user == "-" || user.ends_with('$') {
        return None;
    }
    let domain = domain.trim();
    let user = user.to_lowercase();
    Some(if domain.is_empty() || domain == "-" {
        user
    } else {
        format!("{}\\{user}", domain.to_uppercase())
    })
}

#[derive(Clone, Debug)]
struct Failure {
    timestamp_ms: i64,
    offset: u64,
    source_ip: Option<String>,
    logon_type: Option<u32>,
    host: Option<String>,
    /// Already counted in the account's unresolved burst.
    in_burst: bool,
}

/// Failures that reached the threshold within the window and have not been
/// followed by a success yet (one per account; later bursts extend it).
#[derive(Clone, Debug, Default)]
struct Burst {
    failures: u64,
    first_ms: i64,
    last_ms: i64,
    source_ips: BTreeSet<String>,
    source_ips_truncated: bool,
    logon_types: BTreeSet<u32>,
    hosts: BTreeSet<String>,
    /// The latest offsets, at most `MAX_FINDING_OFFSETS`.
    offsets: BTreeSet<u64>,
}

impl Burst {
    fn add(&mut self, failure: &Failure) {
        if self.failures == 0 {
            self.first_ms = failure.timestamp_ms;
            self.last_ms = failure.timestamp_ms;
        }
        self.failures += 1;
        self.first_ms = self.first_ms.min(failure.timestamp_ms);
        self.last_ms = self.last_ms.max(failure.timestamp_ms);
        if let Some(ip) = &failure.source_ip {
            if self.source_ips.len() < MAX_BURST_ADDRESSES {
                self.source_ips.insert(ip.clone());
            } else if !self.source_ips.contains(ip) {
                self.source_ips_truncated = true;
            }
        }
        self.logon_types.extend(failure.logon_type);
        if let Some(host) = &failure.host
            && self.hosts.len() < MAX_BURST_ADDRESSES
        {
            self.hosts.insert(host.clone());
        }
        self.offsets.insert(failure.offset);
        if self.offsets.len() > MAX_FINDING_OFFSETS {
            self.offsets.pop_first();
        }
    }

    /// Whether a failure at `timestamp_ms` is part of the same attack.
    fn continues_with(&self, timestamp_ms: i64, window_ms: i64) -> bool {
        timestamp_ms >= self.first_ms.saturating_sub(window_ms)
            && timestamp_ms <= self.last_ms.saturating_add(window_ms)
    }
}

#[derive(Debug, Default)]
struct Account {
    /// Sorted by (timestamp, offset).
    failures: VecDeque<Failure>,
    burst: Option<Burst>,
}

impl Account {
    /// Inserts in time order: events may arrive slightly out of order.
    fn insert(&mut self, failure: Failure) {
        let key = (failure.timestamp_ms, failure.offset);
        let index = self
            .failures
            .partition_point(|f| (f.timestamp_ms, f.offset) <= key);
        self.failures.insert(index, failure);
        if self.failures.len() > MAX_TRACKED_FAILURES {
            self.failures.pop_front();
        }
    }

    fn newest_ms(&self) -> Option<i64> {
        self.failures.back().map(|f| f.timestamp_ms)
    }

    /// Forgets failures that no success can count any more.
    fn prune(&mut self, window_ms: i64) {
        let Some(newest) = self.newest_ms() else {
            return;
        };
        let keep_from = newest
            .saturating_sub(window_ms)
            .saturating_sub(REORDER_TOLERANCE_MS);
        let expired = self
            .failures
            .partition_point(|f| f.timestamp_ms < keep_from);
        self.failures.drain(..expired);
    }

    /// The first index of the failures within the window ending at the newest.
    fn window_start(&self, window_ms: i64) -> usize {
        let Some(newest) = self.newest_ms() else {
            return 0;
        };
        let start = newest.saturating_sub(window_ms);
        self.failures.partition_point(|f| f.timestamp_ms < start)
    }
}

/// Findings and aggregates of a whole task.
#[derive(Debug)]
pub struct Report {
    /// `failures-without-success` findings, one per account, in account order.
    pub findings: Vec<Finding>,
    /// Failed logons per account (all failures, not just bursts).
    pub failures_by_account: Counts,
}

/// The per-task detection state.
#[derive(Debug)]
pub struct Detector {
    config: Config,
    accounts: BTreeMap<String, Account>,
    failures_by_account: Counts,
    events_since_sweep: u32,
}

impl Detector {
    /// A detector with no history.
    ///
    /// A `threshold` of 0 is treated as 1: a success needs at least one
    /// failure before it to be "after failures".
    pub fn new(config: Config) -> Self {
        Detector {
            config: Config {
                threshold: config.threshold.max(1),
                window_ms: config.window_ms.max(0),
            },
            accounts: BTreeMap::new(),
            failures_by_account: Counts::new(AGGREGATE_FAILURES_BY_ACCOUNT),
            events_since_sweep: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Feeds one logon attempt; returns the high finding it completes, if any.
    pub fn observe(&mut self, logon: &Logon<'_>) -> Option<Finding> {
        self.events_since_sweep += 1;
        if self.events_since_sweep >= SWEEP_EVERY {
            self.events_since_sweep = 0;
            self.sweep(logon.timestamp_ms);
        }
        let account = account_key(logon.domain, logon.user)?;
        match logon.outcome {
            Outcome::Failure => {
                self.failure(account, logon);
                None
            }
            Outcome::Success => self.success(&account, logon),
        }
    }

    fn failure(&mut self, key: String, logon: &Logon<'_>) {
        let Config {
            threshold,
            window_ms,
        } = self.config;
        self.failures_by_account.increment(&key);
        let account = self.accounts.entry(key).or_default();
        let mut failure = Failure {
            timestamp_ms: logon.timestamp_ms,
            offset: logon.offset,
            source_ip: logon.source_ip.map(str::to_owned),
            logon_type: logon.logon_type,
            host: logon.host.map(str::to_owned),
            in_burst: false,
        };
        match account
            .burst
            .as_mut()
            .filter(|burst| burst.continues_with(logon.timestamp_ms, window_ms))
        {
            // The attack goes on: every further failure belongs to it.
            Some(burst) => {
                burst.add(&failure);
                failure.in_burst = true;
                account.insert(failure);
            }
            None => {
                account.insert(failure);
                let start = account.window_start(window_ms);
                if account.failures.len() - start >= threshold {
                    let burst = account.burst.get_or_insert_with(Burst::default);
                    for failure in account.failures.range_mut(start..) {
                        if !failure.in_burst {
                            burst.add(failure);
                            failure.in_burst = true;
                        }
                    }
                }
            }
        }
        account.prune(window_ms);
    }

    fn success(&mut self, key: &str, logon: &Logon<'_>) -> Option<Finding> {
        let Config {
            threshold,
            window_ms,
        } = self.config;
        let account = self.accounts.get(key)?;
        let from = logon.timestamp_ms.saturating_sub(window_ms);
        let to = logon.timestamp_ms.saturating_add(REORDER_TOLERANCE_MS);
        let failures: Vec<&Failure> = account
            .failures
            .iter()
            .filter(|f| (from..=to).contains(&f.timestamp_ms))
            .collect();
        // A success after fewer failures is a user who mistyped; the failures
        // are kept, so that a legitimate logon in the middle of an attack does
        // not hide it.
        if failures.len() < threshold {
            return None;
        }
        let finding = success_finding(key, logon, &failures, window_ms);
        // The account starts over: later successes (a logon often produces
        // several 4624s) must not repeat the finding, and this finding covers
        // any unresolved burst of the account.
        self.accounts.remove(key);
        Some(finding)
    }

    /// Drops accounts with no unresolved burst whose failures are all too
    /// old for any success to count, relative to `now_ms`.
    fn sweep(&mut self, now_ms: i64) {
        let keep_from = now_ms
            .saturating_sub(self.config.window_ms)
            .saturating_sub(REORDER_TOLERANCE_MS);
        self.accounts.retain(|_, account| {
            account.burst.is_some() || account.newest_ms().is_some_and(|n| n >= keep_from)
        });
    }

    /// Ends the task: unresolved bursts become `failures-without-success`
    /// findings (one per account), plus the failure counts.
    pub fn finish(self) -> Report {
        let Config {
            threshold,
            window_ms,
        } = self.config;
        let findings = self
            .accounts
            .iter()
            .filter_map(|(key, account)| {
                let burst = account.burst.as_ref()?;
                Some(failures_only_finding(key, burst, threshold, window_ms))
            })
            .collect();
        Report {
            findings,
            failures_by_account: self.failures_by_account,
        }
    }
}

fn success_finding(
    account: &str,
    success: &Logon<'_>,
    failures: &[&Failure],
    window_ms: i64,
) -> Finding {
    let source_ips: BTreeSet<&str> = failures
        .iter()
        .filter_map(|f| f.source_ip.as_deref())
        .collect();
    let same_source = success.source_ip.is_some_and(|ip| source_ips.contains(ip));
    let first_ms = failures.iter().map(|f| f.timestamp_ms).min();
    let last_ms = failures.iter().map(|f| f.timestamp_ms).max();
    // `failures` is in time order; the latest are the most relevant.
    let offsets = failures
        .iter()
        .rev()
        .take(MAX_FINDING_OFFSETS)
        .map(|f| f.offset);

    let mut finding = Finding::builder(
        RULE_SUCCESS_AFTER_FAILURES,
        format!(
            "Logon as {account} after {} failed attempts",
            failures.len()
        ),
    )
    .severity(Severity::High)
    .confidence(if same_source {
        CONFIDENCE_SUCCESS_SAME_SOURCE
    } else {
        CONFIDENCE_SUCCESS
    })
    .entity(format!("user:{account}"))
    .timestamp_ms(success.timestamp_ms)
    .evidence("account", account)
    .evidence("failures", failures.len())
    .evidence("window_minutes", window_ms / MINUTE_MS)
    .evidence("distinct_failure_source_ips", source_ips.len())
    .evidence("failure_source_ips", list(source_ips.iter(), false))
    .evidence("success_source_ip", success.source_ip.unwrap_or("none"))
    .evidence("success_from_failing_source", same_source)
    .evidence(
        "success_logon_type",
        success
            .logon_type
            .map_or_else(|| "unknown".to_owned(), describe_logon_type),
    )
    .evidence("host", success.host.unwrap_or("unknown"));
    if let Some(workstation) = success.workstation {
        finding = finding.evidence("success_workstation", workstation);
    }
    if let (Some(first), Some(last)) = (first_ms, last_ms) {
        finding = finding
            .evidence("first_failure", format_rfc3339_ms(first))
            .evidence("last_failure", format_rfc3339_ms(last));
    }
    finding
        .techniques(TECHNIQUES)
        .offsets(offsets)
        .offset(success.offset)
        .build()
}

fn failures_only_finding(
    account: &str,
    burst: &Burst,
    threshold: usize,
    window_ms: i64,
) -> Finding {
    let distinct_ips = if burst.source_ips_truncated {
        format!("more than {}", burst.source_ips.len())
    } else {
        burst.source_ips.len().to_string()
    };
    Finding::builder(
        RULE_FAILURES_WITHOUT_SUCCESS,
        format!(
            "{} failed logons for {account} without a success",
            burst.failures
        ),
    )
    .severity(Severity::Medium)
    .confidence(CONFIDENCE_FAILURES_ONLY)
    .entity(format!("user:{account}"))
    .timestamp_ms(burst.last_ms)
    .evidence("account", account)
    .evidence("failures", burst.failures)
    .evidence("threshold", threshold)
    .evidence("window_minutes", window_ms / MINUTE_MS)
    .evidence("distinct_failure_source_ips", distinct_ips)
    .evidence(
        "failure_source_ips",
        list(burst.source_ips.iter(), burst.source_ips_truncated),
    )
    .evidence(
        "logon_types",
        list(
            burst.logon_types.iter().map(|&t| describe_logon_type(t)),
            false,
        ),
    )
    .evidence("hosts", list(burst.hosts.iter(), false))
    .evidence("first_failure", format_rfc3339_ms(burst.first_ms))
    .evidence("last_failure", format_rfc3339_ms(burst.last_ms))
    .techniques(TECHNIQUES)
    .offsets(burst.offsets.iter().copied())
    .build()
}

/// `a, b, c` with at most `MAX_LISTED` items, `none` when empty.
fn list<T: std::fmt::Display>(items: impl ExactSizeIterator<Item = T>, truncated: bool) -> String {
    let total = items.len();
    if total == 0 {
        return "none".to_owned();
    }
    let shown: Vec<String> = items
        .take(MAX_LISTED)
        .map(|item| item.to_string())
        .collect();
    let mut text = shown.join(", ");
    if total > MAX_LISTED || truncated {
        text.push_str(", …");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::time::{SECOND_MS, parse_rfc3339_ms};

    const T0: &str = "2024-03-11T08:15:00Z";

    fn t0() -> i64 {
        parse_rfc3339_ms(T0).expect("valid test time")
    }

    struct Attempt {
        outcome: Outcome,
        at_ms: i64,
        offset: u64,
        domain: &'static str,
        user: &'static str,
        ip: Option<&'static str>,
        logon_type: u32,
    }

    fn failure(offset: u64, at_s: i64, user: &'static str, ip: &'static str) -> Attempt {
        Attempt {
            outcome: Outcome::Failure,
            at_ms: t0() + at_s * SECOND_MS,
            offset,
            domain: "CORP",
            user,
            ip: Some(ip),
            logon_type: 3,
        }
    }

    fn success(offset: u64, at_s: i64, user: &'static str, ip: &'static str) -> Attempt {
        Attempt {
            outcome: Outcome::Success,
            ..failure(offset, at_s, user, ip)
        }
    }

    fn run(config: Config, attempts: &[Attempt]) -> (Vec<Finding>, Report) {
        let mut detector = Detector::new(config);
        let mut findings = Vec::new();
        for a in attempts {
            let logon = Logon {
                outcome: a.outcome,
                timestamp_ms: a.at_ms,
                offset: a.offset,
                domain: a.domain,
                user: a.user,
                source_ip: a.ip,
                logon_type: Some(a.logon_type),
                workstation: Some("KALI"),
                host: Some("DC01.corp.example"),
            };
            findings.extend(detector.observe(&logon));
        }
        (findings, detector.finish())
    }

    /// `count` failures for `user`, one every `every_s` seconds from `start_s`.
    fn failures(
        first_offset: u64,
        start_s: i64,
        every_s: i64,
        count: u64,
        user: &'static str,
        ip: &'static str,
    ) -> Vec<Attempt> {
        (0..count)
            .map(|i| failure(first_offset + i, start_s + every_s * i as i64, user, ip))
            .collect()
    }

    #[test]
    fn brute_force_then_success_is_one_high_finding() {
        let mut attempts = failures(100, 0, 3, 12, "alice", "203.0.113.7");
        attempts.push(success(112, 40, "Alice", "203.0.113.7"));
        // The same logon often produces more 4624s; they must not repeat it.
        attempts.push(success(113, 41, "alice", "203.0.113.7"));
        let (findings, report) = run(Config::default(), &attempts);

        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.rule, RULE_SUCCESS_AFTER_FAILURES);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.confidence, CONFIDENCE_SUCCESS_SAME_SOURCE);
        assert_eq!(f.entity, "user:CORP\\alice");
        assert_eq!(f.timestamp_ms, t0() + 40 * SECOND_MS);
        assert_eq!(f.techniques, ["T1110", "T1110.001"]);
        assert_eq!(f.offsets, (100..=112).collect::<Vec<_>>());
        assert_eq!(f.evidence_value("failures"), Some("12"));
        assert_eq!(f.evidence_value("distinct_failure_source_ips"), Some("1"));
        assert_eq!(f.evidence_value("failure_source_ips"), Some("203.0.113.7"));
        assert_eq!(f.evidence_value("success_source_ip"), Some("203.0.113.7"));
        assert_eq!(f.evidence_value("success_logon_type"), Some("3 (Network)"));
        assert_eq!(f.evidence_value("host"), Some("DC01.corp.example"));
        assert_eq!(f.evidence_value("success_workstation"), Some("KALI"));
        assert_eq!(
            f.evidence_value("first_failure"),
            Some("2024-03-11T08:15:00.000Z")
        );
        // Resolved by the success: no failures-without-success finding.
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(report.failures_by_account.get("CORP\\alice"), 12);
    }

    #[test]
    fn success_from_another_source_has_base_confidence() {
        let mut attempts = failures(0, 0, 1, 5, "bob", "198.51.100.1");
        attempts.push(success(5, 10, "bob", "10.1.1.1"));
        let (findings, _) = run(Config::default(), &attempts);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].confidence, CONFIDENCE_SUCCESS);
        assert_eq!(
            findings[0].evidence_value("success_from_failing_source"),
            Some("false")
        );
    }

    #[test]
    fn failures_below_threshold_are_not_reported() {
        let mut attempts = failures(0, 0, 5, 4, "carol", "10.0.0.8");
        attempts.push(success(4, 30, "carol", "10.0.0.8"));
        let (findings, report) = run(Config::default(), &attempts);
        assert!(findings.is_empty(), "{findings:#?}");
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(report.failures_by_account.get("CORP\\carol"), 4);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        // Five failures spread over an hour: never five within 10 minutes.
        let mut attempts = failures(0, 0, 15 * 60, 5, "dave", "10.0.0.9");
        // The success comes 20 minutes after the last failure.
        attempts.push(success(5, 4 * 15 * 60 + 20 * 60, "dave", "10.0.0.9"));
        let (findings, report) = run(Config::default(), &attempts);
        assert!(findings.is_empty(), "{findings:#?}");
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
    }

    #[test]
    fn a_burst_long_before_the_success_is_failures_without_success() {
        let mut attempts = failures(0, 0, 2, 6, "erin", "10.0.0.10");
        attempts.push(success(6, 3_600, "erin", "10.0.0.10"));
        let (findings, report) = run(Config::default(), &attempts);
        assert!(findings.is_empty(), "{findings:#?}");
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].rule, RULE_FAILURES_WITHOUT_SUCCESS);
    }

    #[test]
    fn interleaved_accounts_are_tracked_separately() {
        // alice is brute-forced and gets in; bob only fails four times in the
        // same minutes from the same source.
        let mut attempts = Vec::new();
        for i in 0..6u64 {
            attempts.push(failure(2 * i, 2 * i as i64, "alice", "203.0.113.7"));
            if i < 4 {
                attempts.push(failure(2 * i + 1, 2 * i as i64 + 1, "bob", "203.0.113.7"));
            }
        }
        attempts.push(success(20, 30, "bob", "203.0.113.7"));
        attempts.push(success(21, 31, "alice", "203.0.113.7"));
        let (findings, report) = run(Config::default(), &attempts);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].entity, "user:CORP\\alice");
        assert_eq!(findings[0].evidence_value("failures"), Some("6"));
        assert_eq!(findings[0].offsets, [0, 2, 4, 6, 8, 10, 21]);
        assert!(report.findings.is_empty());
        assert_eq!(report.failures_by_account.get("CORP\\bob"), 4);
        assert_eq!(report.failures_by_account.get("CORP\\alice"), 6);
    }

    #[test]
    fn slightly_out_of_order_timestamps_are_handled() {
        // Shard order is 0..=6, but the clocks disagree by a few seconds and
        // the success is stamped before the last two failures.
        let times = [10, 4, 12, 3, 30, 29];
        let mut attempts: Vec<Attempt> = times
            .iter()
            .enumerate()
            .map(|(i, &s)| failure(i as u64, s, "frank", "192.0.2.44"))
            .collect();
        attempts.push(success(6, 25, "frank", "192.0.2.44"));
        let (findings, report) = run(Config::default(), &attempts);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].evidence_value("failures"), Some("6"));
        assert_eq!(
            findings[0].evidence_value("first_failure"),
            Some("2024-03-11T08:15:03.000Z")
        );
        assert_eq!(findings[0].offsets, [0, 1, 2, 3, 4, 5, 6]);
        assert!(report.findings.is_empty());
    }

    #[test]
    fn failures_without_success_are_reported_once_per_account() {
        // Two bursts an hour apart for the same account: one finding.
        let mut attempts = failures(0, 0, 1, 5, "grace", "10.9.9.9");
        attempts.extend(failures(5, 3_600, 1, 6, "grace", "10.9.9.8"));
        attempts.extend(failures(20, 0, 1, 2, "heidi", "10.9.9.9"));
        let (findings, report) = run(Config::default(), &attempts);
        assert!(findings.is_empty());
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        let f = &report.findings[0];
        assert_eq!(f.rule, RULE_FAILURES_WITHOUT_SUCCESS);
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.entity, "user:CORP\\grace");
        assert_eq!(f.evidence_value("failures"), Some("11"));
        assert_eq!(
            f.evidence_value("failure_source_ips"),
            Some("10.9.9.8, 10.9.9.9")
        );
        assert_eq!(f.evidence_value("logon_types"), Some("3 (Network)"));
        assert_eq!(f.timestamp_ms, t0() + 3_605 * SECOND_MS);
        assert_eq!(f.offsets, (0..11).collect::<Vec<_>>());
    }

    #[test]
    fn threshold_and_window_come_from_config() {
        let config = Config {
            threshold: 3,
            window_ms: MINUTE_MS,
        };
        let mut attempts = failures(0, 0, 10, 3, "ivan", "10.0.0.1");
        attempts.push(success(3, 25, "ivan", "10.0.0.1"));
        let (findings, _) = run(config, &attempts);
        assert_eq!(findings.len(), 1);
        // The same sequence with the success 2 minutes later is not linked.
        let mut attempts = failures(0, 0, 10, 3, "ivan", "10.0.0.1");
        attempts.push(success(3, 20 + 3 * 60, "ivan", "10.0.0.1"));
        let (findings, report) = run(config, &attempts);
        assert!(findings.is_empty());
        assert_eq!(report.findings.len(), 1);
    }

    #[test]
    fn accounts_are_case_insensitive_and_skip_anonymous_and_machines() {
        assert_eq!(account_key("corp", "Alice").as_deref(), Some("CORP\\alice"));
        assert_eq!(account_key("-", "Alice").as_deref(), Some("alice"));
        assert_eq!(account_key("", " bob ").as_deref(), Some("bob"));
        assert_eq!(account_key("CORP", "-"), None);
        assert_eq!(account_key("CORP", ""), None);
        assert_eq!(account_key("CORP", "WS01$"), None);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut detector = Detector::new(Config::default());
        for i in 0..(MAX_TRACKED_FAILURES as u64 + 500) {
            detector.observe(&Logon {
                outcome: Outcome::Failure,
                timestamp_ms: t0(),
                offset: i,
                domain: "CORP",
                user: "judy",
                source_ip: None,
                logon_type: None,
                workstation: None,
                host: None,
            });
        }
        let account = &detector.accounts["CORP\\judy"];
        assert_eq!(account.failures.len(), MAX_TRACKED_FAILURES);
        let report = detector.finish();
        assert_eq!(
            report.findings[0].evidence_value("failures"),
            Some(&*(MAX_TRACKED_FAILURES as u64 + 500).to_string())
        );
        assert_eq!(report.findings[0].offsets.len(), MAX_FINDING_OFFSETS);
        assert_eq!(
            report.findings[0].evidence_value("failure_source_ips"),
            Some("none")
        );
    }

    #[test]
    fn idle_accounts_are_swept() {
        let mut detector = Detector::new(Config::default());
        let logon = |user: &'static str, offset: u64, at_ms: i64| Logon {
            outcome: Outcome::Failure,
            timestamp_ms: at_ms,
            offset,
            domain: "CORP",
            user,
            source_ip: None,
            logon_type: None,
            workstation: None,
            host: None,
        };
        detector.observe(&logon("old", 0, t0()));
        for i in 1..u64::from(SWEEP_EVERY) {
            detector.observe(&logon("sprayed", i, t0() + 3_600 * SECOND_MS));
        }
        assert!(!detector.accounts.contains_key("CORP\\old"));
        assert!(detector.accounts.contains_key("CORP\\sprayed"));
    }
}
