//! The detection logic, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! Failed logons (4625) are kept in time order for the length of the window
//! twice: per account and per source (the client's address, or its
//! workstation name when the event has no usable address).
//!
//! - Per account: a successful logon (4624) for an account with at least
//!   `threshold` failures in the window before it is a high finding, after
//!   which the account starts over. Failures that reach the threshold but
//!   are never followed by such a success are reported once per account by
//!   [`Detector::finish`].
//! - Per source: a success from a source with at least `source_threshold`
//!   failures in the window before it (for any accounts: password spraying
//!   tries one or two passwords on many accounts, so no single account
//!   reaches `threshold`) is a high finding, unless the account rule already
//!   reported that success. Failures from one source that reach
//!   `source_threshold` over at least `spray_accounts` distinct accounts and
//!   are never followed by a success from it are reported once per source by
//!   [`Detector::finish`]; a burst against one account is the account rule's.
//!
//! - Fast spray, per source: at least `fast_spray_accounts` distinct
//!   accounts failing from one source at `spray_rate` accounts per minute or
//!   faster (distinct accounts over the time between their first and last
//!   failure, at least a second) start the source's burst whatever
//!   `source_threshold` says, so seven accounts failing within a second are
//!   a spray while ten failures of three accounts over ten minutes are not
//!   yet. Only failures that say a password was tried count here (wrong
//!   password, unknown account, or a status the module does not know);
//!   failures for the account's state (locked out, disabled, expired,
//!   outside its hours) are what stale saved credentials and old services
//!   produce, and are left out of the rate. See [`FailureKind`].
//!
//! One success is reported once: when the account rule fires, the source of
//! the success starts over too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use quarry_sdk::time::{MINUTE_MS, format_rfc3339_ms};
use quarry_sdk::{Counts, Distinct, Finding, MinMax, Severity};

/// Rule id of the high finding: failures for an account, then a success.
pub const RULE_SUCCESS_AFTER_FAILURES: &str = "bruteforce/success-after-failures";
/// Rule id of the medium finding: failures for an account that never led to
/// a success.
pub const RULE_FAILURES_WITHOUT_SUCCESS: &str = "bruteforce/failures-without-success";
/// Rule id of the high finding: many failures from one source (for any
/// accounts), then a success from it.
pub const RULE_SOURCE_SUCCESS_AFTER_FAILURES: &str = "bruteforce/source-success-after-failures";
/// Rule id of the medium finding: one source failed against many accounts
/// (password spraying) and never got in.
pub const RULE_SOURCE_FAILURES_WITHOUT_SUCCESS: &str = "bruteforce/source-failures-without-success";
/// Name of the aggregate counting failed logons per account.
pub const AGGREGATE_FAILURES_BY_ACCOUNT: &str = "failures_by_account";
/// Name of the aggregate counting failed logons per source.
pub const AGGREGATE_FAILURES_BY_SOURCE: &str = "failures_by_source";
/// Name of the aggregate of distinct accounts that failed from each source.
pub const AGGREGATE_ACCOUNTS_BY_SOURCE: &str = "failed_accounts_by_source";
/// Name of the aggregate of the first and last failure (ms since the epoch)
/// per source.
pub const AGGREGATE_FAILURE_TIMES_BY_SOURCE: &str = "failure_times_by_source";
/// ATT&CK: Brute Force, Password Guessing, Password Spraying.
pub const TECHNIQUES: [&str; 3] = ["T1110", "T1110.001", "T1110.003"];
/// The techniques of a finding about one account.
const TECHNIQUES_GUESSING: [&str; 2] = ["T1110", "T1110.001"];
/// The techniques of a finding about a source that tried several accounts.
const TECHNIQUES_SPRAYING: [&str; 2] = ["T1110", "T1110.003"];

/// Confidence of a success after failures.
const CONFIDENCE_SUCCESS: u8 = 80;
/// Confidence when the success came from an address that also failed: the
/// same source guessed and then got in, rather than a user who mistyped on
/// one machine and logged on from another.
const CONFIDENCE_SUCCESS_SAME_SOURCE: u8 = 90;
/// Confidence of failures without success: often a stale saved password or a
/// misconfigured service rather than an attack.
const CONFIDENCE_FAILURES_ONLY: u8 = 60;
/// Confidence of a success from a source that failed for many accounts: a
/// shared gateway (mail, VPN, NAT) also looks like this, so slightly below
/// the same-account case.
const CONFIDENCE_SOURCE_SUCCESS: u8 = 75;
/// ... and when the account that got in is one of those that failed.
const CONFIDENCE_SOURCE_SUCCESS_FAILED_ACCOUNT: u8 = 85;
/// Confidence of a spray without success.
const CONFIDENCE_SPRAY_ONLY: u8 = 65;
/// Added to a spray's confidence when it was fast (see [`Config::spray_rate`]).
const CONFIDENCE_FAST_BONUS: u8 = 10;
/// Added when most of the spray's failures were wrong passwords for
/// existing accounts: the sprayer holds a list of real accounts.
const CONFIDENCE_WRONG_PASSWORD_BONUS: u8 = 10;
/// Taken off when most failures were about the accounts' state (locked,
/// disabled, expired): more like stale credentials than guessing.
const CONFIDENCE_ACCOUNT_STATE_PENALTY: u8 = 15;
/// Most failures looked at, newest first, when checking a source for a fast
/// spray: bounds the work per failure under a flood.
const MAX_FAST_WALK: usize = 256;

/// Shard order and timestamps may disagree by this much (clock skew between
/// sources, events written late). Failures are kept this much longer than
/// the window, and a success counts failures stamped up to this much after it
/// (they were delivered before it).
pub const REORDER_TOLERANCE_MS: i64 = 2 * MINUTE_MS;

/// Most failures remembered per account or source. The oldest are forgotten
/// first; they are the first to leave the window anyway. Bounds memory under
/// a flood.
const MAX_TRACKED_FAILURES: usize = 10_000;
/// Most shard offsets of failures attached to one finding.
const MAX_FINDING_OFFSETS: usize = 50;
/// Most distinct source addresses (or accounts) remembered per unresolved
/// burst.
const MAX_BURST_ADDRESSES: usize = 256;
/// Most addresses, hosts or logon types listed in one evidence value.
const MAX_LISTED: usize = 10;
/// Accounts and sources idle for longer than the window are dropped every
/// this many events, so a spray over many accounts does not grow memory
/// without bound.
const SWEEP_EVERY: u32 = 4_096;

/// Tuning of the detection, from the hunt's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Failures for one account within the window needed before a success
    /// is suspicious.
    pub threshold: usize,
    /// Failures from one source within the window needed before a success
    /// from it is suspicious.
    pub source_threshold: usize,
    /// Distinct accounts a source's failures must cover to be reported
    /// without a success.
    pub spray_accounts: usize,
    /// Length of the window, in milliseconds.
    pub window_ms: i64,
    /// Sources (normalised by [`normalise_source`]) the source rules leave
    /// out: gateways that relay many users' logons.
    pub ignore_sources: BTreeSet<String>,
    /// Distinct accounts failing from one source at [`Config::spray_rate`]
    /// or faster that are a spray on their own, whatever
    /// `source_threshold` says.
    pub fast_spray_accounts: usize,
    /// Accounts per minute that make a source's failures a fast spray:
    /// distinct accounts divided by the time from their first failure to
    /// their last (at least one second).
    pub spray_rate: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threshold: 5,
            source_threshold: 10,
            spray_accounts: 3,
            window_ms: 10 * MINUTE_MS,
            ignore_sources: BTreeSet::new(),
            fast_spray_accounts: 5,
            spray_rate: 60,
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
    /// Why a failure failed: the event's status code (`0xC000006A`,
    /// Kerberos `0x18`, …), when it says; see [`FailureKind::of`].
    pub status: Option<&'a str>,
}

/// What a failed attempt's status says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// A wrong password for an account that exists (NTSTATUS `0xC000006A`,
    /// Kerberos `0x18` KDC_ERR_PREAUTH_FAILED).
    WrongPassword,
    /// No such account (`0xC0000064`, Kerberos `0x6`
    /// KDC_ERR_C_PRINCIPAL_UNKNOWN): guessing names, or a list with stale
    /// ones.
    UnknownAccount,
    /// The account's state refused the logon before or whatever the
    /// password: locked out, disabled, expired, password expired or to be
    /// changed, outside its hours or workstations, logon type not granted
    /// (`0xC0000234`, `0xC0000072`, `0xC0000193`, `0xC0000071`,
    /// `0xC0000224`, `0xC000006F`, `0xC0000070`, `0xC000015B`,
    /// `0xC0000413`; Kerberos `0x12` KDC_ERR_CLIENT_REVOKED, `0x17`
    /// KDC_ERR_KEY_EXPIRED).
    AccountState,
    /// Anything else, or no status (sshd, auditd, `0xC000006D` without a
    /// sub-status).
    Other,
}

impl FailureKind {
    /// The kind of a status code, as Windows writes it (`0xc000006a`,
    /// `0x18`, `0x6`), case-insensitive.
    pub fn of(status: Option<&str>) -> FailureKind {
        let Some(status) = status else {
            return FailureKind::Other;
        };
        let hex = status.trim();
        let hex = hex
            .strip_prefix("0x")
            .or_else(|| hex.strip_prefix("0X"))
            .unwrap_or(hex);
        match u32::from_str_radix(hex, 16) {
            Ok(0xC000_006A | 0x18) => FailureKind::WrongPassword,
            Ok(0xC000_0064 | 0x6) => FailureKind::UnknownAccount,
            Ok(
                0xC000_0234 | 0xC000_0072 | 0xC000_0193 | 0xC000_0071 | 0xC000_0224 | 0xC000_006F
                | 0xC000_0070 | 0xC000_015B | 0xC000_0413 | 0x12 | 0x17,
            ) => FailureKind::AccountState,
            _ => FailureKind::Other,
        }
    }

    /// Whether the failure says a password (or an account name) was tried:
    /// what a spray's rate counts.
    pub fn is_guess(self) -> bool {
        self != FailureKind::AccountState
    }

    fn name(self) -> &'static str {
        match self {
            FailureKind::WrongPassword => "wrong_password",
            FailureKind::UnknownAccount => "unknown_account",
            FailureKind::AccountState => "account_state",
            FailureKind::Other => "other",
        }
    }
}

/// Logon types that happen on the machine that logs them (interactive,
/// batch, service, unlock, cached interactive and unlock): with no address
/// and no workstation name, that machine is the source.
const LOCAL_LOGON_TYPES: [u32; 6] = [2, 4, 5, 7, 11, 13];

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

/// A source address or workstation name in the form sources are compared
/// in: addresses canonical (IPv4-mapped IPv6 as IPv4, IPv6 lowercased and
/// compressed, a `%zone` dropped), names upper-cased without a leading `\\`.
pub fn normalise_source(source: &str) -> String {
    let source = source.trim();
    let unzoned = source.split('%').next().unwrap_or(source);
    match unzoned.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Ok(ip) => ip.to_string(),
        Err(_) => source.trim_start_matches('\\').to_uppercase(),
    }
}

/// The source an attempt came from, normalised ([`normalise_source`]): its
/// address, or the client's workstation name when the address is missing
/// or only says "this machine" (loopback, unspecified), as for local and
/// some NTLM logons. `None` when neither is known.
pub fn source_key(source_ip: Option<&str>, workstation: Option<&str>) -> Option<String> {
    let usable = |value: &&str| !value.trim().is_empty() && value.trim() != "-";
    if let Some(ip) = source_ip.filter(usable) {
        let ip = normalise_source(ip);
        let local = ip
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
        if !local {
            return Some(ip);
        }
    }
    workstation.filter(usable).map(normalise_source)
}

/// The source of `logon` ([`source_key`]), or for a local logon (see
/// [`LOCAL_LOGON_TYPES`]) with neither address nor workstation, the machine
/// that logged it: `LogonUser` on a server names no client.
pub fn logon_source(logon: &Logon<'_>) -> Option<String> {
    source_key(logon.source_ip, logon.workstation).or_else(|| {
        logon
            .logon_type
            .filter(|t| LOCAL_LOGON_TYPES.contains(t))
            .and(logon.host)
            .filter(|h| !h.trim().is_empty() && h.trim() != "-")
            .map(normalise_source)
    })
}

/// The entity of a source: `ip:` for an address, `host:` for a name.
fn source_entity(source: &str) -> String {
    if source.parse::<IpAddr>().is_ok() {
        format!("ip:{source}")
    } else {
        format!("host:{source}")
    }
}

#[derive(Clone, Debug)]
struct Failure {
    timestamp_ms: i64,
    offset: u64,
    account: String,
    source_ip: Option<String>,
    logon_type: Option<u32>,
    host: Option<String>,
    kind: FailureKind,
    /// Already counted in the tracker's unresolved burst.
    in_burst: bool,
}

/// Failures that reached the threshold within the window and have not been
/// followed by a success yet (one per account or source; later bursts
/// extend it).
#[derive(Clone, Debug, Default)]
struct Burst {
    failures: u64,
    first_ms: i64,
    last_ms: i64,
    source_ips: BTreeSet<String>,
    source_ips_truncated: bool,
    accounts: BTreeSet<String>,
    accounts_truncated: bool,
    logon_types: BTreeSet<u32>,
    hosts: BTreeSet<String>,
    /// The latest offsets, at most `MAX_FINDING_OFFSETS`.
    offsets: BTreeSet<u64>,
    /// Failures by [`FailureKind`].
    kinds: BTreeMap<FailureKind, u64>,
    /// Accounts with a wrong password among the failures (bounded).
    wrong_password_accounts: BTreeSet<String>,
    wrong_password_truncated: bool,
    /// The fastest spray seen, when the failures were one.
    fast: Option<FastSpray>,
}

/// A fast spray: distinct accounts tried over a short span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FastSpray {
    /// Distinct accounts (guesses only, see [`FailureKind::is_guess`]).
    accounts: usize,
    /// From their first failure to their last, in ms.
    span_ms: i64,
}

impl FastSpray {
    /// Accounts per minute, the span taken as at least a second.
    fn per_minute(self) -> u64 {
        (self.accounts as u64 * 60_000) / self.span_ms.max(1_000) as u64
    }

    /// Accounts per second, for evidence.
    fn per_second(self) -> String {
        format!(
            "{:.1}",
            self.accounts as f64 * 1_000.0 / self.span_ms.max(1_000) as f64
        )
    }
}

/// The fast-spray rule of the source trackers.
#[derive(Clone, Copy, Debug)]
struct FastRule {
    accounts: usize,
    per_minute: u64,
}

/// Inserts `value` into a bounded set, remembering when it had to leave one
/// out.
fn insert_bounded(set: &mut BTreeSet<String>, truncated: &mut bool, value: &str) {
    if set.len() < MAX_BURST_ADDRESSES {
        set.insert(value.to_owned());
    } else if !set.contains(value) {
        *truncated = true;
    }
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
            insert_bounded(&mut self.source_ips, &mut self.source_ips_truncated, ip);
        }
        insert_bounded(
            &mut self.accounts,
            &mut self.accounts_truncated,
            &failure.account,
        );
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
        *self.kinds.entry(failure.kind).or_default() += 1;
        if failure.kind == FailureKind::WrongPassword {
            insert_bounded(
                &mut self.wrong_password_accounts,
                &mut self.wrong_password_truncated,
                &failure.account,
            );
        }
    }

    /// Keeps the faster of the known and the `seen` spray.
    fn note_fast(&mut self, seen: Option<FastSpray>) {
        if let Some(seen) = seen
            && self.fast.is_none_or(|f| seen.per_minute() > f.per_minute())
        {
            self.fast = Some(seen);
        }
    }

    /// The share of failures of `kind`.
    fn share(&self, kind: FailureKind) -> f64 {
        self.kinds.get(&kind).copied().unwrap_or(0) as f64 / self.failures.max(1) as f64
    }

    /// Whether a failure at `timestamp_ms` is part of the same attack.
    fn continues_with(&self, timestamp_ms: i64, window_ms: i64) -> bool {
        timestamp_ms >= self.first_ms.saturating_sub(window_ms)
            && timestamp_ms <= self.last_ms.saturating_add(window_ms)
    }
}

/// The recent failures of one account or one source.
#[derive(Debug, Default)]
struct Tracker {
    /// Sorted by (timestamp, offset).
    failures: VecDeque<Failure>,
    burst: Option<Burst>,
}

impl Tracker {
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

    /// The fastest spray among the latest failures (at most
    /// [`MAX_FAST_WALK`], within the window): going back from the newest,
    /// the first set of at least `rule.accounts` distinct guessed accounts
    /// whose rate reaches `rule.per_minute`, or `None`.
    fn fast_spray(&self, rule: FastRule, window_ms: i64) -> Option<FastSpray> {
        let newest = self.newest_ms()?;
        let mut accounts: BTreeSet<&str> = BTreeSet::new();
        let mut best: Option<FastSpray> = None;
        for (walked, failure) in self.failures.iter().rev().take(MAX_FAST_WALK).enumerate() {
            let span_ms = newest - failure.timestamp_ms;
            // Even if every failure left to look at were a new account, the
            // rate could not be reached any more.
            let reachable = (accounts.len() + MAX_FAST_WALK - walked) as u64 * 60_000;
            if span_ms > window_ms || reachable < rule.per_minute * span_ms.max(1_000) as u64 {
                break;
            }
            if !failure.kind.is_guess() {
                continue;
            }
            accounts.insert(&failure.account);
            let spray = FastSpray {
                accounts: accounts.len(),
                span_ms,
            };
            if spray.accounts >= rule.accounts
                && spray.per_minute() >= rule.per_minute
                && best.is_none_or(|b| spray.accounts > b.accounts)
            {
                best = Some(spray);
            }
        }
        best
    }

    /// Records a failure; once `threshold` failures fall within the window,
    /// or the failures are a fast spray by `fast` (source trackers), they
    /// and every later failure of the same attack join the burst.
    fn record(
        &mut self,
        mut failure: Failure,
        threshold: usize,
        window_ms: i64,
        fast: Option<FastRule>,
    ) {
        // A failure after the newest that adds no account to the latest
        // ones (not a guess, or the same account as the newest guess) only
        // lengthens every span ending at it: no spray can be faster than
        // the last check found, so the check is skipped (a flood against
        // one account costs nothing here).
        let adds_nothing = self.failures.back().is_some_and(|last| {
            last.timestamp_ms <= failure.timestamp_ms
                && (!failure.kind.is_guess()
                    || (last.kind.is_guess() && last.account == failure.account))
        });
        let fast = fast.filter(|_| !adds_nothing);
        match self
            .burst
            .as_mut()
            .filter(|burst| burst.continues_with(failure.timestamp_ms, window_ms))
        {
            // The attack goes on: every further failure belongs to it.
            Some(burst) => {
                burst.add(&failure);
                failure.in_burst = true;
                self.insert(failure);
                if let Some(rule) = fast {
                    let seen = self.fast_spray(rule, window_ms);
                    if let Some(burst) = self.burst.as_mut() {
                        burst.note_fast(seen);
                    }
                }
            }
            None => {
                self.insert(failure);
                let start = self.window_start(window_ms);
                let seen = fast.and_then(|rule| self.fast_spray(rule, window_ms));
                if self.failures.len() - start >= threshold || seen.is_some() {
                    let burst = self.burst.get_or_insert_with(Burst::default);
                    burst.note_fast(seen);
                    for failure in self.failures.range_mut(start..) {
                        if !failure.in_burst {
                            burst.add(failure);
                            failure.in_burst = true;
                        }
                    }
                }
            }
        }
        self.prune(window_ms);
    }

    /// The failures a success at `timestamp_ms` follows.
    fn before(&self, timestamp_ms: i64, window_ms: i64) -> Vec<&Failure> {
        let from = timestamp_ms.saturating_sub(window_ms);
        let to = timestamp_ms.saturating_add(REORDER_TOLERANCE_MS);
        self.failures
            .iter()
            .filter(|f| (from..=to).contains(&f.timestamp_ms))
            .collect()
    }

    /// Whether a fast spray from this source ended within the window
    /// before `timestamp_ms`.
    fn fast_before(&self, timestamp_ms: i64, window_ms: i64) -> bool {
        self.burst.as_ref().is_some_and(|b| {
            b.fast.is_some()
                && b.first_ms <= timestamp_ms.saturating_add(REORDER_TOLERANCE_MS)
                && b.last_ms >= timestamp_ms.saturating_sub(window_ms)
        })
    }

    /// Whether a sweep at `keep_from` may drop it.
    fn idle(&self, keep_from: i64) -> bool {
        self.burst.is_none() && self.newest_ms().is_none_or(|n| n < keep_from)
    }
}

/// Findings and aggregates of a whole task.
#[derive(Debug)]
pub struct Report {
    /// `failures-without-success` findings, one per account, in account
    /// order, then `source-failures-without-success` findings, one per
    /// source, in source order.
    pub findings: Vec<Finding>,
    /// Failed logons per account (all failures, not just bursts).
    pub failures_by_account: Counts,
    /// Failed logons per source.
    pub failures_by_source: Counts,
    /// Distinct accounts that failed from each source.
    pub accounts_by_source: Distinct,
    /// First and last failure per source.
    pub failure_times_by_source: MinMax,
}

/// The per-task detection state.
#[derive(Debug)]
pub struct Detector {
    config: Config,
    accounts: BTreeMap<String, Tracker>,
    sources: BTreeMap<String, Tracker>,
    failures_by_account: Counts,
    failures_by_source: Counts,
    accounts_by_source: Distinct,
    failure_times_by_source: MinMax,
    events_since_sweep: u32,
}

impl Detector {
    /// A detector with no history.
    ///
    /// Thresholds of 0 are treated as 1: a success needs at least one
    /// failure before it to be "after failures".
    pub fn new(config: Config) -> Self {
        Detector {
            config: Config {
                threshold: config.threshold.max(1),
                source_threshold: config.source_threshold.max(1),
                spray_accounts: config.spray_accounts.max(1),
                window_ms: config.window_ms.max(0),
                ignore_sources: config.ignore_sources,
                fast_spray_accounts: config.fast_spray_accounts.max(2),
                spray_rate: config.spray_rate.max(1),
            },
            accounts: BTreeMap::new(),
            sources: BTreeMap::new(),
            failures_by_account: Counts::new(AGGREGATE_FAILURES_BY_ACCOUNT),
            failures_by_source: Counts::new(AGGREGATE_FAILURES_BY_SOURCE),
            accounts_by_source: Distinct::new(AGGREGATE_ACCOUNTS_BY_SOURCE),
            failure_times_by_source: MinMax::new(AGGREGATE_FAILURE_TIMES_BY_SOURCE),
            events_since_sweep: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feeds one logon attempt; returns the high finding it completes, if any.
    pub fn observe(&mut self, logon: &Logon<'_>) -> Option<Finding> {
        self.events_since_sweep += 1;
        if self.events_since_sweep >= SWEEP_EVERY {
            self.events_since_sweep = 0;
            self.sweep(logon.timestamp_ms);
        }
        let account = account_key(logon.domain, logon.user)?;
        let source = logon_source(logon);
        match logon.outcome {
            Outcome::Failure => {
                self.failure(account, source, logon);
                None
            }
            Outcome::Success => self.success(&account, source.as_deref(), logon),
        }
    }

    /// Whether the source rules look at `source`.
    fn tracks_source(&self, source: &str) -> bool {
        !self.config.ignore_sources.contains(source)
    }

    fn failure(&mut self, account: String, source: Option<String>, logon: &Logon<'_>) {
        let window_ms = self.config.window_ms;
        self.failures_by_account.increment(&account);
        if let Some(source) = &source {
            // Aggregates cover every source, ignored ones too: they describe
            // the shard, not the findings.
            self.failures_by_source.increment(source);
            self.accounts_by_source.insert(source, &account);
            self.failure_times_by_source
                .observe(source, logon.timestamp_ms);
        }
        let failure = Failure {
            timestamp_ms: logon.timestamp_ms,
            offset: logon.offset,
            account: account.clone(),
            source_ip: logon.source_ip.map(str::to_owned),
            logon_type: logon.logon_type,
            host: logon.host.map(str::to_owned),
            kind: FailureKind::of(logon.status),
            in_burst: false,
        };
        let fast = FastRule {
            accounts: self.config.fast_spray_accounts,
            per_minute: self.config.spray_rate,
        };
        if let Some(source) = source.filter(|s| self.tracks_source(s)) {
            self.sources.entry(source).or_default().record(
                failure.clone(),
                self.config.source_threshold,
                window_ms,
                Some(fast),
            );
        }
        self.accounts.entry(account).or_default().record(
            failure,
            self.config.threshold,
            window_ms,
            None,
        );
    }

    fn success(
        &mut self,
        account: &str,
        source: Option<&str>,
        logon: &Logon<'_>,
    ) -> Option<Finding> {
        let window_ms = self.config.window_ms;
        if let Some(tracker) = self.accounts.get(account) {
            let failures = tracker.before(logon.timestamp_ms, window_ms);
            // A success after fewer failures is a user who mistyped; the
            // failures are kept, so that a legitimate logon in the middle of
            // an attack does not hide it.
            if failures.len() >= self.config.threshold {
                let finding = success_finding(account, logon, &failures, window_ms);
                // The account starts over: later successes (a logon often
                // produces several 4624s) must not repeat the finding, and
                // this finding covers any unresolved burst of the account.
                // So does the source: the same success is reported once.
                self.accounts.remove(account);
                if let Some(source) = source {
                    self.sources.remove(source);
                }
                return Some(finding);
            }
        }
        let source = source?;
        let tracker = self.sources.get(source)?;
        let failures = tracker.before(logon.timestamp_ms, window_ms);
        let fast = tracker
            .fast_before(logon.timestamp_ms, window_ms)
            .then(|| tracker.burst.as_ref().and_then(|b| b.fast))
            .flatten();
        if failures.len() < self.config.source_threshold && fast.is_none() {
            return None;
        }
        let finding = source_success_finding(source, account, logon, &failures, window_ms, fast);
        self.sources.remove(source);
        Some(finding)
    }

    /// Drops accounts and sources with no unresolved burst whose failures
    /// are all too old for any success to count, relative to `now_ms`.
    fn sweep(&mut self, now_ms: i64) {
        let keep_from = now_ms
            .saturating_sub(self.config.window_ms)
            .saturating_sub(REORDER_TOLERANCE_MS);
        self.accounts.retain(|_, tracker| !tracker.idle(keep_from));
        self.sources.retain(|_, tracker| !tracker.idle(keep_from));
    }

    /// Ends the task: unresolved account bursts become
    /// `failures-without-success` findings (one per account), unresolved
    /// source bursts over at least `spray_accounts` accounts
    /// `source-failures-without-success` findings (one per source), plus the
    /// aggregates.
    pub fn finish(self) -> Report {
        let config = &self.config;
        let mut findings: Vec<Finding> = self
            .accounts
            .iter()
            .filter_map(|(key, tracker)| {
                let burst = tracker.burst.as_ref()?;
                Some(failures_only_finding(
                    key,
                    burst,
                    config.threshold,
                    config.window_ms,
                ))
            })
            .collect();
        findings.extend(self.sources.iter().filter_map(|(source, tracker)| {
            let burst = tracker.burst.as_ref()?;
            // A burst against fewer accounts is guessing, which the account
            // rule reports per account.
            let accounts = burst.accounts.len();
            (accounts >= config.spray_accounts.max(2) || burst.fast.is_some())
                .then(|| spray_only_finding(source, burst, config))
        }));
        Report {
            findings,
            failures_by_account: self.failures_by_account,
            failures_by_source: self.failures_by_source,
            accounts_by_source: self.accounts_by_source,
            failure_times_by_source: self.failure_times_by_source,
        }
    }
}

/// The latest offsets of `failures` (in time order), at most
/// `MAX_FINDING_OFFSETS`.
fn latest_offsets<'a>(failures: &'a [&Failure]) -> impl Iterator<Item = u64> + 'a {
    failures
        .iter()
        .rev()
        .take(MAX_FINDING_OFFSETS)
        .map(|f| f.offset)
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
        .techniques(TECHNIQUES_GUESSING)
        .offsets(latest_offsets(failures))
        .offset(success.offset)
        .build()
}

fn source_success_finding(
    source: &str,
    account: &str,
    success: &Logon<'_>,
    failures: &[&Failure],
    window_ms: i64,
    fast: Option<FastSpray>,
) -> Finding {
    let accounts: BTreeSet<&str> = failures.iter().map(|f| f.account.as_str()).collect();
    let hosts: BTreeSet<&str> = failures.iter().filter_map(|f| f.host.as_deref()).collect();
    let account_failed = accounts.contains(account);
    let first_ms = failures.iter().map(|f| f.timestamp_ms).min();
    let last_ms = failures.iter().map(|f| f.timestamp_ms).max();
    let mut finding = Finding::builder(
        RULE_SOURCE_SUCCESS_AFTER_FAILURES,
        format!(
            "Logon as {account} from {source} after {} failed logons for {} accounts from it",
            failures.len(),
            accounts.len()
        ),
    )
    .severity(Severity::High)
    .confidence(if account_failed {
        CONFIDENCE_SOURCE_SUCCESS_FAILED_ACCOUNT
    } else {
        CONFIDENCE_SOURCE_SUCCESS
    })
    .entity(source_entity(source))
    .timestamp_ms(success.timestamp_ms)
    .evidence("source", source)
    .evidence("success_account", account)
    .evidence("success_account_failed", account_failed)
    .evidence("failures", failures.len())
    .evidence("distinct_accounts", accounts.len())
    .evidence("accounts", list(accounts.iter(), false))
    .evidence("window_minutes", window_ms / MINUTE_MS)
    .evidence(
        "success_logon_type",
        success
            .logon_type
            .map_or_else(|| "unknown".to_owned(), describe_logon_type),
    )
    .evidence("host", success.host.unwrap_or("unknown"))
    .evidence("failure_hosts", list(hosts.iter(), false));
    if let Some(workstation) = success.workstation {
        finding = finding.evidence("success_workstation", workstation);
    }
    if let (Some(first), Some(last)) = (first_ms, last_ms) {
        finding = finding
            .evidence("first_failure", format_rfc3339_ms(first))
            .evidence("last_failure", format_rfc3339_ms(last));
    }
    if let Some(fast) = fast {
        finding = finding
            .evidence("fast_spray_accounts", fast.accounts)
            .evidence(
                "fast_spray_seconds",
                format!("{:.3}", fast.span_ms as f64 / 1_000.0),
            )
            .evidence("accounts_per_second", fast.per_second());
    }
    let mut kinds: BTreeMap<FailureKind, usize> = BTreeMap::new();
    for failure in failures {
        *kinds.entry(failure.kind).or_default() += 1;
    }
    finding = finding.evidence("failure_kinds", kinds_text(kinds.into_iter()));
    let techniques = if accounts.len() > 1 {
        TECHNIQUES_SPRAYING
    } else {
        TECHNIQUES_GUESSING
    };
    finding
        .techniques(techniques)
        .offsets(latest_offsets(failures))
        .offset(success.offset)
        .build()
}

fn failures_only_finding(
    account: &str,
    burst: &Burst,
    threshold: usize,
    window_ms: i64,
) -> Finding {
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
    .evidence(
        "distinct_failure_source_ips",
        bounded_count(&burst.source_ips, burst.source_ips_truncated),
    )
    .evidence(
        "failure_source_ips",
        list(burst.source_ips.iter(), burst.source_ips_truncated),
    )
    .techniques(TECHNIQUES_GUESSING)
    .with_burst(burst)
}

/// What every source finding says about its burst of failures: logon
/// types, hosts, first and last failure, and the events' offsets.
trait WithBurst {
    fn with_burst(self, burst: &Burst) -> Finding;
}

impl WithBurst for quarry_sdk::FindingBuilder {
    fn with_burst(self, burst: &Burst) -> Finding {
        self.evidence(
            "logon_types",
            list(
                burst.logon_types.iter().map(|&t| describe_logon_type(t)),
                false,
            ),
        )
        .evidence("hosts", list(burst.hosts.iter(), false))
        .evidence("first_failure", format_rfc3339_ms(burst.first_ms))
        .evidence("last_failure", format_rfc3339_ms(burst.last_ms))
        .offsets(burst.offsets.iter().copied())
        .build()
    }
}

/// `wrong_password=7, unknown_account=2`: failures per kind, in kind order.
fn kinds_text<N: std::fmt::Display>(kinds: impl Iterator<Item = (FailureKind, N)>) -> String {
    let parts: Vec<String> = kinds.map(|(k, n)| format!("{}={n}", k.name())).collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Severity and confidence of a spray that never got in.
///
/// High when it was fast (see [`Config::spray_rate`]) and at least
/// `fast_spray_accounts` of its accounts failed with a wrong password: many
/// real accounts tried within seconds, which no user and no stale setting
/// does. Medium otherwise. Confidence starts at 65; +10 when fast, +10 when
/// most failures were wrong passwords, −15 when most were about the
/// accounts' state (locked, disabled, expired).
fn spray_assessment(burst: &Burst, config: &Config) -> (Severity, u8) {
    let fast = burst.fast.is_some();
    let wrong = burst.wrong_password_accounts.len();
    let severity = if fast && wrong >= config.fast_spray_accounts {
        Severity::High
    } else {
        Severity::Medium
    };
    let mut confidence = CONFIDENCE_SPRAY_ONLY;
    if fast {
        confidence += CONFIDENCE_FAST_BONUS;
    }
    if burst.share(FailureKind::WrongPassword) > 0.5 {
        confidence += CONFIDENCE_WRONG_PASSWORD_BONUS;
    }
    if burst.share(FailureKind::AccountState) > 0.5 {
        confidence -= CONFIDENCE_ACCOUNT_STATE_PENALTY;
    }
    (severity, confidence)
}

fn spray_only_finding(source: &str, burst: &Burst, config: &Config) -> Finding {
    let (severity, confidence) = spray_assessment(burst, config);
    let mut finding = Finding::builder(
        RULE_SOURCE_FAILURES_WITHOUT_SUCCESS,
        format!(
            "{} failed logons for {} accounts from {source} without a success",
            burst.failures,
            bounded_count(&burst.accounts, burst.accounts_truncated)
        ),
    )
    .severity(severity)
    .confidence(confidence)
    .entity(source_entity(source))
    .timestamp_ms(burst.last_ms)
    .evidence("source", source)
    .evidence("failures", burst.failures)
    .evidence(
        "distinct_accounts",
        bounded_count(&burst.accounts, burst.accounts_truncated),
    )
    .evidence(
        "accounts",
        list(burst.accounts.iter(), burst.accounts_truncated),
    )
    .evidence(
        "failure_kinds",
        kinds_text(burst.kinds.iter().map(|(k, n)| (*k, n))),
    )
    .evidence(
        "wrong_password_accounts",
        bounded_count(
            &burst.wrong_password_accounts,
            burst.wrong_password_truncated,
        ),
    )
    .evidence("source_threshold", config.source_threshold)
    .evidence("window_minutes", config.window_ms / MINUTE_MS);
    if let Some(fast) = burst.fast {
        finding = finding
            .evidence("fast_spray_accounts", fast.accounts)
            .evidence(
                "fast_spray_seconds",
                format!("{:.3}", fast.span_ms as f64 / 1_000.0),
            )
            .evidence("accounts_per_second", fast.per_second());
    }
    finding.techniques(TECHNIQUES_SPRAYING).with_burst(burst)
}

/// The size of a bounded set: `more than N` once something was left out.
fn bounded_count(set: &BTreeSet<String>, truncated: bool) -> String {
    if truncated {
        format!("more than {}", set.len())
    } else {
        set.len().to_string()
    }
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
                status: None,
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
        // same minutes from the same source. With the source rule out of the
        // way (its threshold above the 10 failures), bob's success is a
        // user who mistyped.
        let mut attempts = Vec::new();
        for i in 0..6u64 {
            attempts.push(failure(2 * i, 2 * i as i64, "alice", "203.0.113.7"));
            if i < 4 {
                attempts.push(failure(2 * i + 1, 2 * i as i64 + 1, "bob", "203.0.113.7"));
            }
        }
        attempts.push(success(20, 30, "bob", "203.0.113.7"));
        attempts.push(success(21, 31, "alice", "203.0.113.7"));
        let config = Config {
            source_threshold: 11,
            ..Config::default()
        };
        let (findings, report) = run(config, &attempts);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].entity, "user:CORP\\alice");
        assert_eq!(findings[0].evidence_value("failures"), Some("6"));
        assert_eq!(findings[0].offsets, [0, 2, 4, 6, 8, 10, 21]);
        assert!(report.findings.is_empty());
        assert_eq!(report.failures_by_account.get("CORP\\bob"), 4);
        assert_eq!(report.failures_by_account.get("CORP\\alice"), 6);

        // With the default source threshold (10), the ten failures from one
        // source make bob's success a source finding, and alice's success
        // is still reported once, by the account rule.
        let (findings, report) = run(Config::default(), &attempts);
        let summary: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.rule.as_str(), f.entity.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (RULE_SOURCE_SUCCESS_AFTER_FAILURES, "ip:203.0.113.7"),
                (RULE_SUCCESS_AFTER_FAILURES, "user:CORP\\alice"),
            ]
        );
        assert_eq!(
            findings[0].evidence_value("success_account"),
            Some("CORP\\bob")
        );
        assert_eq!(findings[0].evidence_value("distinct_accounts"), Some("2"));
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
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
            ..Config::default()
        };
        let mut attempts = failures(0, 0, 10, 3, "ivan", "10.0.0.1");
        attempts.push(success(3, 25, "ivan", "10.0.0.1"));
        let (findings, _) = run(config.clone(), &attempts);
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
                status: None,
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
            status: None,
        };
        detector.observe(&logon("old", 0, t0()));
        for i in 1..u64::from(SWEEP_EVERY) {
            detector.observe(&logon("sprayed", i, t0() + 3_600 * SECOND_MS));
        }
        assert!(!detector.accounts.contains_key("CORP\\old"));
        assert!(detector.accounts.contains_key("CORP\\sprayed"));
    }

    /// One failure for each of `accounts` users from `ip`, `every_s` apart.
    fn spray(
        first_offset: u64,
        start_s: i64,
        every_s: i64,
        accounts: u64,
        ip: &'static str,
    ) -> Vec<Attempt> {
        const USERS: [&str; 30] = [
            "u00", "u01", "u02", "u03", "u04", "u05", "u06", "u07", "u08", "u09", "u10", "u11",
            "u12", "u13", "u14", "u15", "u16", "u17", "u18", "u19", "u20", "u21", "u22", "u23",
            "u24", "u25", "u26", "u27", "u28", "u29",
        ];
        (0..accounts)
            .map(|i| {
                failure(
                    first_offset + i,
                    start_s + every_s * i as i64,
                    USERS[i as usize],
                    ip,
                )
            })
            .collect()
    }

    #[test]
    fn password_spray_then_a_success_from_the_source_is_one_high_finding() {
        // One password tried on 20 accounts in 40 seconds; u07 had it.
        let mut attempts = spray(0, 0, 2, 20, "198.51.100.9");
        attempts.push(success(20, 45, "u07", "198.51.100.9"));
        attempts.push(success(21, 46, "u07", "198.51.100.9"));
        let (findings, report) = run(Config::default(), &attempts);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.rule, RULE_SOURCE_SUCCESS_AFTER_FAILURES);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.confidence, CONFIDENCE_SOURCE_SUCCESS_FAILED_ACCOUNT);
        assert_eq!(f.entity, "ip:198.51.100.9");
        assert_eq!(f.techniques, ["T1110", "T1110.003"]);
        assert_eq!(f.evidence_value("success_account"), Some("CORP\\u07"));
        assert_eq!(f.evidence_value("success_account_failed"), Some("true"));
        assert_eq!(f.evidence_value("failures"), Some("20"));
        assert_eq!(f.evidence_value("distinct_accounts"), Some("20"));
        assert_eq!(f.offsets, (0..=20).collect::<Vec<_>>());
        // Resolved: no spray-without-success finding, and no account has
        // enough failures of its own.
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(report.failures_by_source.get("198.51.100.9"), 20);
        assert_eq!(report.accounts_by_source.count("198.51.100.9"), 20);
        let times = report
            .failure_times_by_source
            .get("198.51.100.9")
            .expect("first/last failure of the source");
        assert_eq!(
            (times.min, times.max, times.count),
            (t0(), t0() + 38 * SECOND_MS, 20)
        );
    }

    #[test]
    fn spray_below_the_source_threshold_or_from_elsewhere_is_quiet() {
        // Nine failures from the source: one short of the threshold.
        let mut attempts = spray(0, 0, 2, 9, "198.51.100.9");
        attempts.push(success(9, 30, "u03", "198.51.100.9"));
        let (findings, report) = run(Config::default(), &attempts);
        assert!(findings.is_empty(), "{findings:#?}");
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        // Twenty failures, but the success comes from another address.
        let mut attempts = spray(0, 0, 2, 20, "198.51.100.9");
        attempts.push(success(20, 45, "u03", "10.1.1.1"));
        let (findings, report) = run(Config::default(), &attempts);
        assert!(findings.is_empty(), "{findings:#?}");
        assert_eq!(report.findings.len(), 1, "the spray itself is reported");
        assert_eq!(
            report.findings[0].rule,
            RULE_SOURCE_FAILURES_WITHOUT_SUCCESS
        );
    }

    #[test]
    fn spray_without_success_is_reported_once_per_source() {
        let mut attempts = spray(0, 0, 3, 12, "192.0.2.50");
        // A second wave an hour later from the same source: same finding.
        attempts.extend(spray(100, 3_600, 3, 12, "192.0.2.50"));
        // Another source guesses one account twelve times: the account
        // rule's, not a spray.
        attempts.extend(failures(200, 0, 3, 12, "root", "192.0.2.51"));
        let (findings, report) = run(Config::default(), &attempts);
        assert!(findings.is_empty(), "{findings:#?}");
        let summary: Vec<(&str, &str, Option<&str>)> = report
            .findings
            .iter()
            .map(|f| {
                (
                    f.rule.as_str(),
                    f.entity.as_str(),
                    f.evidence_value("failures"),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (RULE_FAILURES_WITHOUT_SUCCESS, "user:CORP\\root", Some("12")),
                (
                    RULE_SOURCE_FAILURES_WITHOUT_SUCCESS,
                    "ip:192.0.2.50",
                    Some("24")
                ),
            ]
        );
        let spray = &report.findings[1];
        assert_eq!(spray.severity, Severity::Medium);
        assert_eq!(spray.evidence_value("distinct_accounts"), Some("12"));
        assert_eq!(spray.techniques, ["T1110", "T1110.003"]);
        assert_eq!(spray.offsets.len(), MAX_FINDING_OFFSETS.min(24));
    }

    #[test]
    fn spray_accounts_and_ignored_sources_come_from_config() {
        let attempts = spray(0, 0, 3, 12, "192.0.2.50");
        let config = Config {
            spray_accounts: 13,
            ..Config::default()
        };
        assert!(run(config, &attempts).1.findings.is_empty());
        // A mail gateway relays everybody's typos: ignored, but still in
        // the aggregates.
        let mut attempts = spray(0, 0, 3, 12, "10.0.0.25");
        attempts.push(success(12, 40, "u01", "10.0.0.25"));
        let config = Config {
            ignore_sources: [normalise_source("::ffff:10.0.0.25")].into(),
            ..Config::default()
        };
        let (findings, report) = run(config, &attempts);
        assert!(findings.is_empty(), "{findings:#?}");
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(report.failures_by_source.get("10.0.0.25"), 12);
    }

    #[test]
    fn sources_are_normalised_and_fall_back_to_the_workstation() {
        assert_eq!(
            source_key(Some("::ffff:10.1.2.3"), None).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            source_key(Some("FE80::1%12"), None).as_deref(),
            Some("fe80::1")
        );
        assert_eq!(
            source_key(Some("127.0.0.1"), Some("\\\\ws01")).as_deref(),
            Some("WS01"),
            "loopback means this machine: the workstation names it"
        );
        assert_eq!(source_key(Some("::1"), None), None);
        assert_eq!(source_key(Some("-"), Some("Kali")).as_deref(), Some("KALI"));
        assert_eq!(source_key(None, Some("-")), None);
        assert_eq!(source_entity("10.1.2.3"), "ip:10.1.2.3");
        assert_eq!(source_entity("KALI"), "host:KALI");
    }

    #[test]
    fn local_spray_is_keyed_by_workstation() {
        // Local logons carry no address: the workstation is the source.
        let mut detector = Detector::new(Config::default());
        let mut findings = Vec::new();
        for (i, &user) in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .iter()
            .enumerate()
        {
            findings.extend(detector.observe(&Logon {
                outcome: Outcome::Failure,
                timestamp_ms: t0() + i as i64 * SECOND_MS,
                offset: i as u64,
                domain: "WIN",
                user,
                source_ip: Some("-"),
                logon_type: Some(2),
                workstation: Some("win"),
                host: Some("WIN"),
                status: None,
            }));
        }
        findings.extend(detector.observe(&Logon {
            outcome: Outcome::Success,
            timestamp_ms: t0() + 20 * SECOND_MS,
            offset: 10,
            domain: "WIN",
            user: "admin",
            source_ip: Some("-"),
            logon_type: Some(2),
            workstation: Some("WIN"),
            host: Some("WIN"),
            status: None,
        }));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].entity, "host:WIN");
        assert_eq!(findings[0].confidence, CONFIDENCE_SOURCE_SUCCESS);
        assert_eq!(
            findings[0].evidence_value("success_account_failed"),
            Some("false")
        );
    }

    /// A failed NTLM validation (4776) on a domain controller: no address,
    /// only the client's workstation name, and the status.
    fn ntlm_failure(
        offset: u64,
        at_ms: i64,
        user: &'static str,
        status: &'static str,
    ) -> Logon<'static> {
        Logon {
            outcome: Outcome::Failure,
            timestamp_ms: at_ms,
            offset,
            domain: "",
            user,
            source_ip: None,
            logon_type: None,
            workstation: Some("WS-FIN-07"),
            host: Some("DC01.corp.example"),
            status: Some(status),
        }
    }

    const SEVEN: [&str; 7] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];

    fn observe_all(detector: &mut Detector, logons: &[Logon<'_>]) -> Vec<Finding> {
        logons.iter().filter_map(|l| detector.observe(l)).collect()
    }

    #[test]
    fn seven_accounts_failing_within_a_second_from_a_workstation_are_a_spray() {
        let logons: Vec<Logon<'static>> = SEVEN
            .iter()
            .enumerate()
            .map(|(i, &user)| ntlm_failure(i as u64, t0() + i as i64 * 140, user, "0xC000006A"))
            .collect();
        let mut detector = Detector::new(Config::default());
        assert!(observe_all(&mut detector, &logons).is_empty());
        let report = detector.finish();
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        let f = &report.findings[0];
        assert_eq!(f.rule, RULE_SOURCE_FAILURES_WITHOUT_SUCCESS);
        assert_eq!(f.entity, "host:WS-FIN-07");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(
            f.confidence,
            CONFIDENCE_SPRAY_ONLY + CONFIDENCE_FAST_BONUS + CONFIDENCE_WRONG_PASSWORD_BONUS
        );
        assert_eq!(f.evidence_value("distinct_accounts"), Some("7"));
        assert_eq!(f.evidence_value("fast_spray_accounts"), Some("7"));
        assert_eq!(f.evidence_value("fast_spray_seconds"), Some("0.840"));
        assert_eq!(f.evidence_value("accounts_per_second"), Some("7.0"));
        assert_eq!(f.evidence_value("failure_kinds"), Some("wrong_password=7"));
        assert_eq!(f.techniques, ["T1110", "T1110.003"]);
        // Then one of them logs on from that workstation: the spray got in.
        let mut detector = Detector::new(Config::default());
        observe_all(&mut detector, &logons);
        let found = detector.observe(&Logon {
            outcome: Outcome::Success,
            status: None,
            ..ntlm_failure(7, t0() + 5_000, "erin", "0x0")
        });
        let found = found.expect("a success after a fast spray");
        assert_eq!(found.rule, RULE_SOURCE_SUCCESS_AFTER_FAILURES);
        assert_eq!(found.severity, Severity::High);
        assert_eq!(found.evidence_value("accounts_per_second"), Some("7.0"));
        assert!(detector.finish().findings.is_empty());
    }

    #[test]
    fn a_user_mistyping_and_slow_or_few_accounts_are_not_a_spray() {
        let mut detector = Detector::new(Config {
            window_ms: 60 * MINUTE_MS,
            ..Config::default()
        });
        // One user mistypes three times in an hour, then gets in.
        let mut logons: Vec<Logon<'static>> = (0..3)
            .map(|i| ntlm_failure(i, t0() + i as i64 * 20 * MINUTE_MS, "alice", "0xC000006A"))
            .collect();
        logons.push(Logon {
            outcome: Outcome::Success,
            ..ntlm_failure(3, t0() + 61 * MINUTE_MS, "alice", "0x0")
        });
        assert!(observe_all(&mut detector, &logons).is_empty());
        assert!(detector.finish().findings.is_empty());
        // Four users behind one gateway within a second: fewer than
        // `fast_spray_accounts`.
        let mut detector = Detector::new(Config::default());
        let four: Vec<Logon<'static>> = SEVEN[..4]
            .iter()
            .enumerate()
            .map(|(i, &u)| ntlm_failure(i as u64, t0() + i as i64 * 200, u, "0xC000006A"))
            .collect();
        observe_all(&mut detector, &four);
        assert!(detector.finish().findings.is_empty());
        // Seven accounts over seven minutes: slower than `spray_rate`, and
        // fewer failures than `source_threshold`.
        let mut detector = Detector::new(Config::default());
        let slow: Vec<Logon<'static>> = SEVEN
            .iter()
            .enumerate()
            .map(|(i, &u)| ntlm_failure(i as u64, t0() + i as i64 * MINUTE_MS, u, "0xC000006A"))
            .collect();
        observe_all(&mut detector, &slow);
        assert!(detector.finish().findings.is_empty());
        // A faster rate setting finds them.
        let mut detector = Detector::new(Config {
            spray_rate: 1,
            ..Config::default()
        });
        observe_all(&mut detector, &slow);
        assert_eq!(detector.finish().findings.len(), 1);
    }

    #[test]
    fn the_failure_status_weighs_in() {
        // Locked-out and disabled accounts within a second: a server's stale
        // credentials, not guesses.
        let locked: Vec<Logon<'static>> = SEVEN
            .iter()
            .enumerate()
            .map(|(i, &u)| ntlm_failure(i as u64, t0() + i as i64 * 100, u, "0xc0000234"))
            .collect();
        let mut detector = Detector::new(Config::default());
        observe_all(&mut detector, &locked);
        assert!(detector.finish().findings.is_empty());
        // Unknown accounts (a guessed user list): a spray, but medium.
        let unknown: Vec<Logon<'static>> = SEVEN
            .iter()
            .enumerate()
            .map(|(i, &u)| ntlm_failure(i as u64, t0() + i as i64 * 100, u, "0xC0000064"))
            .collect();
        let mut detector = Detector::new(Config::default());
        observe_all(&mut detector, &unknown);
        let report = detector.finish();
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].severity, Severity::Medium);
        assert_eq!(
            report.findings[0].confidence,
            CONFIDENCE_SPRAY_ONLY + CONFIDENCE_FAST_BONUS
        );
        assert_eq!(
            report.findings[0].evidence_value("failure_kinds"),
            Some("unknown_account=7")
        );
        assert_eq!(FailureKind::of(Some("0x18")), FailureKind::WrongPassword);
        assert_eq!(
            FailureKind::of(Some("0xc000006a")),
            FailureKind::WrongPassword
        );
        assert_eq!(FailureKind::of(Some("0x6")), FailureKind::UnknownAccount);
        assert_eq!(FailureKind::of(Some("0x12")), FailureKind::AccountState);
        assert_eq!(
            FailureKind::of(Some("0xC0000072")),
            FailureKind::AccountState
        );
        assert_eq!(FailureKind::of(Some("0xC000006D")), FailureKind::Other);
        assert_eq!(FailureKind::of(Some("garbage")), FailureKind::Other);
        assert_eq!(FailureKind::of(None), FailureKind::Other);
    }

    #[test]
    fn a_local_logon_without_address_or_workstation_comes_from_its_host() {
        let logon = Logon {
            outcome: Outcome::Failure,
            timestamp_ms: t0(),
            offset: 0,
            domain: "SRV01",
            user: "admin",
            source_ip: Some("-"),
            logon_type: Some(2),
            workstation: None,
            host: Some("srv01.corp.example"),
            status: None,
        };
        assert_eq!(logon_source(&logon).as_deref(), Some("SRV01.CORP.EXAMPLE"));
        // A network logon names no client: its source stays unknown.
        let network = Logon {
            logon_type: Some(3),
            ..logon
        };
        assert_eq!(logon_source(&network), None);
        // The workstation, when named, wins.
        let named = Logon {
            workstation: Some("ws01"),
            ..logon
        };
        assert_eq!(logon_source(&named).as_deref(), Some("WS01"));
    }

    #[test]
    fn a_flood_from_one_source_stays_cheap_and_is_not_a_spray() {
        // 200,000 failures for two accounts from one address, 5 ms apart:
        // the rate check walks at most a bounded number of failures, and
        // mostly none (a repeat of the newest account adds nothing).
        let mut detector = Detector::new(Config::default());
        let started = std::time::Instant::now();
        for i in 0..200_000u64 {
            let user = if i % 1_000 == 0 { "bob" } else { "judy" };
            detector.observe(&Logon {
                outcome: Outcome::Failure,
                timestamp_ms: t0() + i as i64 * 5,
                offset: i,
                domain: "CORP",
                user,
                source_ip: Some("10.9.9.9"),
                logon_type: Some(3),
                workstation: None,
                host: None,
                status: Some("0xC000006A"),
            });
        }
        let elapsed = started.elapsed();
        let report = detector.finish();
        // Two accounts are guessing (the account rule's), not a spray.
        assert!(
            report
                .findings
                .iter()
                .all(|f| f.rule == RULE_FAILURES_WITHOUT_SUCCESS),
            "{:#?}",
            report.findings
        );
        assert!(elapsed.as_secs() < 30, "{elapsed:?}");
    }
}
