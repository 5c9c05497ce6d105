//! The detection logic, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! Three kinds of activity are collected per (source, destination) pair,
//! where the destination is the host that logged the event and the source
//! the remote address:
//!
//! - remote logons (4624, logon type 3 or 10) of user accounts (machine
//!   accounts and anonymous logons are left out), each marked new when it is
//!   the pair's first in the scan;
//! - admin-share access (5140/5145 on `ADMIN$`, `C$` and other drive shares,
//!   or `IPC$` to the service-control and task-scheduler pipes or PsExec's
//!   pipes);
//! - remote service installs (7045/4697 with an image on a UNC path, PsExec
//!   and its clones, or a command interpreter as the service binary). These
//!   events name no source: they are attributed to the last source with a
//!   remote logon or share access on the same destination within the
//!   correlation window.
//!
//! At the end of the task, a pair with a service install or admin-share
//! access is one finding; a service install with no source in the window is
//! one finding about its destination; and a source with new remote logons to
//! many destinations is one fan-out finding.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use quarry_sdk::time::{MINUTE_MS, format_rfc3339_ms};
use quarry_sdk::{Finding, Severity};

/// Rule id: a remote service install, with its source when known.
pub const RULE_REMOTE_SERVICE: &str = "lateral-movement/remote-service";
/// Rule id: admin-share access from a source.
pub const RULE_ADMIN_SHARE: &str = "lateral-movement/admin-share";
/// Rule id: new remote logons from one source to many destinations.
pub const RULE_LOGON_FANOUT: &str = "lateral-movement/remote-logon-fanout";

/// ATT&CK: SMB/Windows Admin Shares.
pub const T_ADMIN_SHARES: &str = "T1021.002";
/// ATT&CK: Service Execution.
pub const T_SERVICE_EXECUTION: &str = "T1569.002";
/// ATT&CK: Remote Desktop Protocol.
pub const T_RDP: &str = "T1021.001";
/// ATT&CK: Lateral Tool Transfer.
pub const T_TOOL_TRANSFER: &str = "T1570";
/// ATT&CK: Remote Services (fan-out of network logons).
pub const T_REMOTE_SERVICES: &str = "T1021";
/// Every technique a finding may carry.
pub const TECHNIQUES: [&str; 5] = [
    T_REMOTE_SERVICES,
    T_RDP,
    T_ADMIN_SHARES,
    T_SERVICE_EXECUTION,
    T_TOOL_TRANSFER,
];

/// Most pairs tracked.
pub const MAX_PAIRS: usize = 100_000;
/// Recent remote accesses remembered per destination, for attribution.
const MAX_RECENT: usize = 64;
/// Most values listed in one evidence item.
const MAX_LISTED: usize = 10;
/// Most offsets attached to a finding.
const MAX_OFFSETS: usize = 50;

/// Tuning of the detection, from the hunt's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How long after a remote access a service install is attributed to it.
    pub correlation_window_ms: i64,
    /// Distinct destinations of new remote logons from one source that make
    /// a fan-out finding.
    pub fanout_threshold: usize,
    /// Sources never reported (management servers, jump hosts), nor the
    /// service installs attributed to them.
    pub ignore_sources: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            correlation_window_ms: 10 * MINUTE_MS,
            fanout_threshold: 5,
            ignore_sources: Vec::new(),
        }
    }
}

/// One event of interest, as read from a Windows event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    /// 4624 of logon type 3 or 10.
    Logon {
        /// `DOMAIN\user`.
        user: String,
        /// 3 (network) or 10 (remote interactive).
        logon_type: u32,
    },
    /// 5140/5145 on an admin share.
    Share {
        /// `ADMIN$`, `C$`, `IPC$` …
        share: String,
        /// The file or pipe (5145), if any.
        target: Option<String>,
        /// `DOMAIN\user`.
        user: String,
    },
    /// 7045/4697 of a suspicious service.
    Service {
        /// The service name.
        name: String,
        /// Its binary.
        image: String,
        /// Why it looks remote-installed.
        reason: &'static str,
    },
}

/// An activity with where and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Shard offset.
    pub offset: u64,
    /// The host that logged it (lowercase).
    pub destination: String,
    /// The remote address, when the event has one.
    pub source: Option<String>,
    /// What happened.
    pub activity: Activity,
}

/// The share part of `\\*\ADMIN$`, uppercased.
pub fn share_name(raw: &str) -> String {
    raw.rsplit('\\')
        .next()
        .unwrap_or(raw)
        .trim()
        .to_ascii_uppercase()
}

/// Whether an access to `share` (and `target` in it) is admin-share use.
pub fn is_admin_share(share: &str, target: Option<&str>) -> bool {
    if share == "ADMIN$" {
        return true;
    }
    // Drive shares: `C$`, `D$`.
    if share.len() == 2 && share.ends_with('$') && share.as_bytes()[0].is_ascii_alphabetic() {
        return true;
    }
    if share == "IPC$" {
        let target = target.unwrap_or("").to_ascii_lowercase();
        return ["svcctl", "atsvc", "psexesvc", "remcom", "paexec", "csexec"]
            .iter()
            .any(|pipe| target.starts_with(pipe));
    }
    false
}

/// Why a service install looks like remote execution, or `None`.
pub fn suspicious_service(name: &str, image: &str) -> Option<&'static str> {
    let lower_name = name.to_ascii_lowercase();
    let lower = image.trim().trim_matches('"').to_ascii_lowercase();
    if lower.starts_with("\\\\") {
        return Some("service binary on a network path");
    }
    let tools = ["psexesvc", "paexec", "remcomsvc", "csexecsvc", "winexesvc"];
    if tools
        .iter()
        .any(|t| lower_name.starts_with(t) || lower.contains(t))
    {
        return Some("PsExec-like remote execution service");
    }
    if [
        "cmd.exe /c",
        "cmd /c",
        "%comspec%",
        "powershell",
        "cmd.exe /q",
    ]
    .iter()
    .any(|t| lower.contains(t))
    {
        return Some("command interpreter as service binary");
    }
    if lower.contains("\\admin$\\") || lower.contains("\\c$\\") {
        return Some("service binary on an admin share");
    }
    None
}

/// Whether `address` is empty, `-`, a loopback address (all of
/// 127.0.0.0/8 and `::1`) or the unspecified address, in any spelling the
/// standard library's `IpAddr` reads (`0:0:0:0:0:0:0:1`, IPv4-mapped
/// `::ffff:127.0.0.2`, a `%zone` suffix): none of them says anything about a
/// remote source. Host names and other text are not local.
pub fn is_local_address(address: &str) -> bool {
    let address = address.trim();
    if address.is_empty() || address == "-" {
        return true;
    }
    let unzoned = address.split('%').next().unwrap_or(address);
    let Ok(ip) = unzoned.parse::<IpAddr>() else {
        return false;
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

#[derive(Debug, Default)]
struct PairState {
    logons: u64,
    new_logon_at: Option<i64>,
    users: BTreeSet<String>,
    logon_types: BTreeSet<u32>,
    shares: BTreeSet<String>,
    share_targets: BTreeSet<String>,
    tool_transfer: bool,
    services: BTreeSet<String>,
    service_reasons: BTreeSet<&'static str>,
    first_ms: i64,
    last_ms: i64,
    offsets: BTreeSet<u64>,
}

impl PairState {
    fn touch(&mut self, at: i64, offset: u64) {
        if self.offsets.is_empty() && self.logons == 0 {
            self.first_ms = at;
            self.last_ms = at;
        }
        self.first_ms = self.first_ms.min(at);
        self.last_ms = self.last_ms.max(at);
        if self.offsets.len() < MAX_OFFSETS {
            self.offsets.insert(offset);
        }
    }
}

/// The per-task detection state.
#[derive(Debug)]
pub struct Detector {
    config: Config,
    /// (source, destination) → state.
    pairs: BTreeMap<(String, String), PairState>,
    /// destination → recent (time, source, ignored) remote accesses, oldest
    /// first.
    recent: BTreeMap<String, Vec<(i64, String, bool)>>,
    /// Service installs no source could be found for: (destination, state).
    orphans: BTreeMap<String, PairState>,
    dropped: u64,
}

impl Detector {
    /// A detector with no history.
    pub fn new(config: Config) -> Self {
        Detector {
            config,
            pairs: BTreeMap::new(),
            recent: BTreeMap::new(),
            orphans: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Observations beyond [`MAX_PAIRS`] that were not tracked.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn pair(&mut self, source: &str, destination: &str) -> Option<&mut PairState> {
        let key = (source.to_owned(), destination.to_owned());
        if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_PAIRS {
            self.dropped += 1;
            return None;
        }
        Some(self.pairs.entry(key).or_default())
    }

    fn remember(&mut self, destination: &str, at: i64, source: &str, ignored: bool) {
        let recent = self.recent.entry(destination.to_owned()).or_default();
        recent.push((at, source.to_owned(), ignored));
        if recent.len() > MAX_RECENT {
            recent.remove(0);
        }
    }

    /// Feeds one observation.
    pub fn observe(&mut self, o: &Observation) {
        let source = o.source.as_deref().filter(|s| !is_local_address(s));
        let ignored = source.is_some_and(|s| {
            self.config
                .ignore_sources
                .iter()
                .any(|i| i.eq_ignore_ascii_case(s))
        });
        if let (Some(source), true) = (source, ignored) {
            // Remembered, so that its service installs are recognised.
            if !matches!(o.activity, Activity::Service { .. }) {
                self.remember(&o.destination, o.timestamp_ms, source, true);
            }
            return;
        }
        match &o.activity {
            Activity::Logon { user, logon_type } => {
                let Some(source) = source else { return };
                self.remember(&o.destination, o.timestamp_ms, source, false);
                let Some(pair) = self.pair(source, &o.destination) else {
                    return;
                };
                if pair.logons == 0 {
                    pair.new_logon_at = Some(o.timestamp_ms);
                }
                pair.touch(o.timestamp_ms, o.offset);
                pair.logons += 1;
                if pair.users.len() < MAX_LISTED {
                    pair.users.insert(user.clone());
                }
                pair.logon_types.insert(*logon_type);
            }
            Activity::Share {
                share,
                target,
                user,
            } => {
                let Some(source) = source else { return };
                self.remember(&o.destination, o.timestamp_ms, source, false);
                let Some(pair) = self.pair(source, &o.destination) else {
                    return;
                };
                pair.touch(o.timestamp_ms, o.offset);
                pair.shares.insert(share.clone());
                if pair.users.len() < MAX_LISTED {
                    pair.users.insert(user.clone());
                }
                if let Some(target) = target.as_deref().filter(|t| !t.is_empty() && *t != "\\") {
                    let lower = target.to_ascii_lowercase();
                    if share != "IPC$"
                        && [".exe", ".dll", ".ps1", ".bat", ".vbs", ".sys"]
                            .iter()
                            .any(|ext| lower.ends_with(ext))
                    {
                        pair.tool_transfer = true;
                    }
                    if pair.share_targets.len() < MAX_LISTED {
                        pair.share_targets.insert(format!("{share}\\{target}"));
                    }
                }
            }
            Activity::Service {
                name,
                image,
                reason,
            } => {
                let window = self.config.correlation_window_ms;
                let attributed = self.recent.get(&o.destination).and_then(|recent| {
                    recent
                        .iter()
                        .rev()
                        .find(|(at, _, _)| {
                            o.timestamp_ms - *at <= window && *at - o.timestamp_ms <= MINUTE_MS
                        })
                        .map(|(_, s, ignored)| (s.clone(), *ignored))
                });
                let state = match attributed {
                    Some((_, true)) => return,
                    Some((source, false)) => match self.pair(&source, &o.destination) {
                        Some(pair) => pair,
                        None => return,
                    },
                    None => self.orphans.entry(o.destination.clone()).or_default(),
                };
                state.touch(o.timestamp_ms, o.offset);
                if state.services.len() < MAX_LISTED {
                    state.services.insert(format!("{name} ({image})"));
                }
                state.service_reasons.insert(reason);
            }
        }
    }

    /// Ends the task: findings per pair, per orphan service and per fan-out.
    pub fn finish(self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for ((source, destination), pair) in &self.pairs {
            if !pair.services.is_empty() || !pair.shares.is_empty() {
                findings.push(pair_finding(Some(source), destination, pair));
            }
        }
        for (destination, state) in &self.orphans {
            findings.push(pair_finding(None, destination, state));
        }
        // Fan-out: new remote logons from one source to many destinations.
        let mut by_source: BTreeMap<&str, Vec<(&str, &PairState)>> = BTreeMap::new();
        for ((source, destination), pair) in &self.pairs {
            if pair.new_logon_at.is_some() {
                by_source
                    .entry(source)
                    .or_default()
                    .push((destination, pair));
            }
        }
        for (source, destinations) in by_source {
            if destinations.len() >= self.config.fanout_threshold {
                findings.push(fanout_finding(source, &destinations));
            }
        }
        findings
    }
}

fn list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .take(MAX_LISTED)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn pair_finding(source: Option<&str>, destination: &str, pair: &PairState) -> Finding {
    let service = !pair.services.is_empty();
    let rule = if service {
        RULE_REMOTE_SERVICE
    } else {
        RULE_ADMIN_SHARE
    };
    let mut what = Vec::new();
    if service {
        what.push(format!(
            "remote service {}",
            list(
                pair.services
                    .iter()
                    .map(|s| s.split(" (").next().unwrap_or(s))
            )
        ));
    }
    if !pair.shares.is_empty() {
        what.push(format!("{} access", list(&pair.shares)));
    }
    if pair.logons > 0 {
        what.push(format!(
            "{} remote logons as {}",
            pair.logons,
            list(&pair.users)
        ));
    }
    let from = source.unwrap_or("an unknown source");
    let (severity, confidence) = match (service, source.is_some(), pair.tool_transfer) {
        (true, true, _) => (Severity::High, 85),
        (true, false, _) => (Severity::High, 70),
        (false, _, true) => (Severity::High, 75),
        _ => (Severity::Medium, 55),
    };
    let mut techniques = vec![T_ADMIN_SHARES];
    if service {
        techniques.push(T_SERVICE_EXECUTION);
    }
    if pair.tool_transfer {
        techniques.push(T_TOOL_TRANSFER);
    }
    if pair.logon_types.contains(&10) {
        techniques.push(T_RDP);
    }
    let entity = match source {
        Some(source) => format!("ip:{source}"),
        None => format!("host:{destination}"),
    };
    let mut builder = Finding::builder(
        rule,
        format!(
            "Lateral movement {from} → {destination}: {}",
            what.join(", ")
        ),
    )
    .severity(severity)
    .confidence(confidence)
    .entity(entity)
    .timestamp_ms(pair.last_ms)
    .evidence("source", from)
    .evidence("destination", destination);
    if !pair.users.is_empty() {
        builder = builder.evidence("users", list(&pair.users));
    }
    if pair.logons > 0 {
        builder = builder
            .evidence("remote_logons", pair.logons)
            .evidence("logon_types", list(&pair.logon_types))
            .evidence(
                "new_pair_since",
                pair.new_logon_at.map_or("-".to_owned(), format_rfc3339_ms),
            );
    }
    if !pair.shares.is_empty() {
        builder = builder.evidence("shares", list(&pair.shares));
    }
    if !pair.share_targets.is_empty() {
        builder = builder.evidence("share_targets", list(&pair.share_targets));
    }
    if service {
        builder = builder
            .evidence("services", list(&pair.services))
            .evidence("service_reasons", list(&pair.service_reasons));
    }
    builder
        .evidence("first_seen", format_rfc3339_ms(pair.first_ms))
        .evidence("last_seen", format_rfc3339_ms(pair.last_ms))
        .techniques(techniques)
        .offsets(pair.offsets.iter().copied())
        .build()
}

fn fanout_finding(source: &str, destinations: &[(&str, &PairState)]) -> Finding {
    let users: BTreeSet<&str> = destinations
        .iter()
        .flat_map(|(_, p)| p.users.iter().map(String::as_str))
        .collect();
    let types: BTreeSet<u32> = destinations
        .iter()
        .flat_map(|(_, p)| p.logon_types.iter().copied())
        .collect();
    let first = destinations
        .iter()
        .filter_map(|(_, p)| p.new_logon_at)
        .min()
        .unwrap_or(0);
    let last = destinations
        .iter()
        .map(|(_, p)| p.last_ms)
        .max()
        .unwrap_or(0);
    let mut techniques = vec![T_REMOTE_SERVICES];
    if types.contains(&10) {
        techniques.push(T_RDP);
    }
    if types.contains(&3) {
        techniques.push(T_ADMIN_SHARES);
    }
    Finding::builder(
        RULE_LOGON_FANOUT,
        format!(
            "{source} logged on remotely to {} hosts as {}",
            destinations.len(),
            list(&users)
        ),
    )
    .severity(Severity::Medium)
    .confidence(50)
    .entity(format!("ip:{source}"))
    .timestamp_ms(last)
    .evidence("source", source)
    .evidence("destinations", list(destinations.iter().map(|(d, _)| *d)))
    .evidence("destination_count", destinations.len())
    .evidence("users", list(&users))
    .evidence("logon_types", list(&types))
    .evidence("first_seen", format_rfc3339_ms(first))
    .evidence("last_seen", format_rfc3339_ms(last))
    .techniques(techniques)
    .offsets(
        destinations
            .iter()
            .flat_map(|(_, p)| p.offsets.iter().copied())
            .take(MAX_OFFSETS),
    )
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn obs(t: i64, dest: &str, source: Option<&str>, activity: Activity) -> Observation {
        Observation {
            timestamp_ms: T0 + t,
            offset: t as u64,
            destination: dest.to_owned(),
            source: source.map(str::to_owned),
            activity,
        }
    }

    fn logon(user: &str, logon_type: u32) -> Activity {
        Activity::Logon {
            user: user.to_owned(),
            logon_type,
        }
    }

    fn share(name: &str, target: Option<&str>) -> Activity {
        Activity::Share {
            share: name.to_owned(),
            target: target.map(str::to_owned),
            user: "CORP\\admin".to_owned(),
        }
    }

    fn service(name: &str, image: &str) -> Activity {
        Activity::Service {
            name: name.to_owned(),
            image: image.to_owned(),
            reason: suspicious_service(name, image).expect("suspicious"),
        }
    }

    #[test]
    fn share_and_service_classification() {
        assert_eq!(share_name("\\\\*\\ADMIN$"), "ADMIN$");
        assert_eq!(share_name("\\\\*\\c$"), "C$");
        assert!(is_admin_share("ADMIN$", None));
        assert!(is_admin_share("C$", Some("Windows\\x.exe")));
        assert!(is_admin_share("IPC$", Some("svcctl")));
        assert!(is_admin_share("IPC$", Some("PSEXESVC-WS1-1-stdin")));
        assert!(!is_admin_share("IPC$", Some("lsarpc")));
        assert!(!is_admin_share("IPC$", None));
        assert!(!is_admin_share("SYSVOL", None));
        assert!(!is_admin_share("PRINT$", None));
        assert!(suspicious_service("PSEXESVC", "%SystemRoot%\\PSEXESVC.exe").is_some());
        assert!(suspicious_service("upd", "\\\\10.0.0.5\\share\\x.exe").is_some());
        assert!(
            suspicious_service(
                "abcdefgh",
                "%COMSPEC% /Q /c echo whoami > \\\\127.0.0.1\\C$\\out"
            )
            .is_some()
        );
        assert!(suspicious_service("Spooler", "C:\\Windows\\System32\\spoolsv.exe").is_none());
        assert!(
            suspicious_service(
                "WinDefend",
                "\"C:\\ProgramData\\Microsoft\\Windows Defender\\platform\\MsMpEng.exe\""
            )
            .is_none()
        );
        assert!(is_local_address("::1") && is_local_address("-") && !is_local_address("10.0.0.1"));
    }

    /// The list of spellings this check used to compare against missed
    /// loopback addresses other than 127.0.0.1 and other spellings of the
    /// same addresses, so a logon from one of them became a "remote" source.
    #[test]
    fn loopback_and_unspecified_addresses_are_local_in_every_spelling() {
        for local in [
            "",
            "-",
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "::1",
            "0:0:0:0:0:0:0:1",
            "::ffff:127.0.0.1",
            "::FFFF:127.0.0.1",
            "::ffff:7f00:2",
            "0.0.0.0",
            "::",
            "0:0:0:0:0:0:0:0",
            " ::1 ",
            "::1%1",
        ] {
            assert!(is_local_address(local), "{local:?} is local");
        }
        for remote in [
            "10.0.0.1",
            "::ffff:10.0.0.5",
            "fe80::1%12",
            "128.0.0.1",
            "126.255.255.255",
            "2001:db8::1",
            "localhost",
            "WS01",
            "127.0.0.1.example",
        ] {
            assert!(!is_local_address(remote), "{remote:?} is not local");
        }
    }

    #[test]
    fn a_logon_from_another_loopback_address_is_not_a_source() {
        let mut d = Detector::new(Config::default());
        for (at, source) in [(0, "127.0.0.2"), (10, "0:0:0:0:0:0:0:1")] {
            d.observe(&obs(at, "srv01", Some(source), logon("CORP\\admin", 3)));
            d.observe(&obs(
                at + 1,
                "srv01",
                Some(source),
                share("ADMIN$", Some("PSEXESVC.exe")),
            ));
        }
        // Loopback share access says nothing about another machine.
        let findings = d.finish();
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn psexec_chain_is_one_high_finding_attributed_to_its_source() {
        let mut d = Detector::new(Config::default());
        d.observe(&obs(0, "srv01", Some("10.0.0.5"), logon("CORP\\admin", 3)));
        d.observe(&obs(
            10,
            "srv01",
            Some("10.0.0.5"),
            share("ADMIN$", Some("PSEXESVC.exe")),
        ));
        d.observe(&obs(
            20,
            "srv01",
            Some("10.0.0.5"),
            share("IPC$", Some("svcctl")),
        ));
        d.observe(&obs(
            30,
            "srv01",
            None,
            service("PSEXESVC", "%SystemRoot%\\PSEXESVC.exe"),
        ));
        let f = d.finish();
        assert_eq!(f.len(), 1, "{f:#?}");
        let f = &f[0];
        assert_eq!(f.rule, RULE_REMOTE_SERVICE);
        assert_eq!(f.entity, "ip:10.0.0.5");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.evidence_value("shares"), Some("ADMIN$, IPC$"));
        assert_eq!(
            f.evidence_value("share_targets"),
            Some("ADMIN$\\PSEXESVC.exe, IPC$\\svcctl")
        );
        assert_eq!(f.evidence_value("remote_logons"), Some("1"));
        assert_eq!(f.techniques, ["T1021.002", "T1569.002", "T1570"]);
        assert_eq!(f.offsets, [0, 10, 20, 30]);
        assert!(
            f.title
                .starts_with("Lateral movement 10.0.0.5 → srv01: remote service PSEXESVC"),
            "{}",
            f.title
        );
    }

    #[test]
    fn service_outside_the_window_has_no_source() {
        let mut d = Detector::new(Config::default());
        d.observe(&obs(0, "srv01", Some("10.0.0.5"), logon("CORP\\admin", 3)));
        d.observe(&obs(
            11 * MINUTE_MS,
            "srv01",
            None,
            service("x", "\\\\10.0.0.5\\s\\x.exe"),
        ));
        let f = d.finish();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].entity, "host:srv01");
        assert_eq!(f[0].evidence_value("source"), Some("an unknown source"));
    }

    #[test]
    fn plain_logons_are_quiet_until_they_fan_out() {
        let mut d = Detector::new(Config::default());
        for (i, dest) in ["a", "b", "c", "d"].iter().enumerate() {
            d.observe(&obs(
                i as i64,
                dest,
                Some("10.0.0.7"),
                logon("CORP\\bob", 3),
            ));
            d.observe(&obs(
                100 + i as i64,
                dest,
                Some("10.0.0.7"),
                logon("CORP\\bob", 3),
            ));
        }
        assert!(d.finish().is_empty());
        let mut d = Detector::new(Config::default());
        for (i, dest) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            d.observe(&obs(
                i as i64,
                dest,
                Some("10.0.0.7"),
                logon("CORP\\bob", 10),
            ));
        }
        let f = d.finish();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, RULE_LOGON_FANOUT);
        assert_eq!(f[0].evidence_value("destination_count"), Some("5"));
        assert_eq!(f[0].techniques, ["T1021", "T1021.001"]);
    }

    #[test]
    fn local_and_ignored_sources_are_quiet() {
        let config = Config {
            ignore_sources: vec!["10.0.0.9".to_owned()],
            ..Config::default()
        };
        let mut d = Detector::new(config);
        d.observe(&obs(0, "srv01", Some("127.0.0.1"), share("C$", None)));
        d.observe(&obs(0, "srv01", Some("10.0.0.9"), share("ADMIN$", None)));
        // Its install is not reported either, not even as an orphan.
        d.observe(&obs(
            5,
            "srv01",
            None,
            service("ccmsetup", "\\\\deploy\\c$\\ccmsetup.exe"),
        ));
        for dest in ["a", "b", "c", "d", "e", "f"] {
            d.observe(&obs(0, dest, Some("10.0.0.9"), logon("CORP\\sccm", 3)));
        }
        assert!(d.finish().is_empty());
    }

    #[test]
    fn share_access_alone_is_a_medium_finding() {
        let mut d = Detector::new(Config::default());
        d.observe(&obs(
            0,
            "srv02",
            Some("10.0.0.5"),
            share("C$", Some("Users\\x\\notes.txt")),
        ));
        let f = d.finish();
        assert_eq!(f[0].rule, RULE_ADMIN_SHARE);
        assert_eq!(f[0].severity, Severity::Medium);
    }
}
