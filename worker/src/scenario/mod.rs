//! A realistic week of enterprise logs with planted intrusions and benign
//! look-alikes, and its ground truth: the dataset that automated triage is
//! measured on (see `docs/scenario.md`).
//!
//! [`generate`] writes, for 2026-11-16 (a Monday) to 2026-11-23, the logs of
//! a small company (`corp.local`): Windows Security + System and Sysmon
//! events of two domain controllers, five servers, a jump host and ten
//! workstations (mordor-style JSON lines), the auth.log of two Linux web
//! servers (RFC 3339 syslog), and the conn, dns and http logs of the Zeek
//! sensor at the core switch (TSV). One file per host and source; the
//! manifest proposes shards (one per server file, five workstations per
//! shard as a Windows Event Forwarding collector holds them, one per Zeek
//! log) and ships an intel feed.
//!
//! Into a week of routine activity it plants three multi-step intrusions
//! (phishing to a server with credential theft and beaconing; SSH brute
//! force to a root backdoor and cron persistence; a trojanised download with
//! Kerberoasting and a DNS tunnel) and fifteen kinds of benign activity that
//! a naive system escalates (management agents' encoded PowerShell, the IT
//! team's scheduled PsExec, the weekly vulnerability scan, backups, updaters
//! creating scheduled tasks, monitoring heartbeats, anti-virus DNS lookups,
//! a legacy RC4 service, a stale saved password, …). The returned
//! [`ScenarioManifest`] (also written as `manifest.json`) says which records
//! are which.
//!
//! Generation is deterministic: the same options give the same bytes on
//! every machine (each activity draws from its own splitmix64 stream seeded
//! from the options' seed; JSON is written field by field in a fixed order).

mod attacks;
mod benign;
mod emit;
mod out;
mod truth;
mod world;

pub use truth::{IngestedShard, Owner, Owners, ingest_shard};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::format_rfc3339_ms;
use out::{FileFormat, Label, Stream, ZEEK_CONN, ZEEK_DNS, ZEEK_HTTP};
use world::{DOMAIN, HOSTS};

/// Start of the scenario: 2026-11-16T00:00:00Z, a Monday, in ms since the
/// epoch.
pub const SCENARIO_START_MS: i64 = 1_794_787_200_000;
/// Length of the scenario in days.
pub const SCENARIO_DAYS: i64 = 7;
/// The default seed.
pub const DEFAULT_SEED: u64 = 20_261_116;
/// Version of the manifest's format.
pub const MANIFEST_VERSION: u32 = 1;
/// The manifest's file name in the output directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The shipped modules that detect (as opposed to helpers that need an
/// entity or a question to run, such as a pivot): what a hunter runs over
/// the scenario, `sigma` with the shared rule set and `ioc-sweep` with the
/// dataset's intel feed.
pub const DETECTORS: &[&str] = &[
    "beaconing",
    "bruteforce",
    "dns-tunnel",
    "encoded-powershell",
    "ioc-sweep",
    "lateral-movement",
    "rare-process",
    "sigma",
];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioOptions {
    /// Seed of every random choice (times, ports, jitter, who does what).
    /// The planted intrusions and look-alikes are there whatever the seed.
    pub seed: u64,
    /// Routine background activity in percent of the default amount
    /// (100). Look-alikes and intrusions are not scaled.
    pub noise_percent: u32,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            seed: DEFAULT_SEED,
            noise_percent: 100,
        }
    }
}

/// Why a dataset could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Writing a file or creating a directory failed.
    #[error("cannot {action} {}: {source}; check that the directory is writable and has space", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The manifest could not be serialised.
    #[error("cannot serialise the scenario manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    /// A generated file could not be ingested as the manifest describes it.
    #[error(
        "cannot ingest scenario file {path}: {reason}; regenerate the dataset with the same version"
    )]
    Ingest {
        /// The file, relative to the dataset directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The ground truth of a generated dataset: hosts, files, proposed shards,
/// intel, planted intrusions and benign look-alikes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioManifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The dataset's name.
    pub name: String,
    /// The seed it was generated with.
    pub seed: u64,
    /// The background activity it was generated with, in percent.
    pub noise_percent: u32,
    /// First instant covered (RFC 3339).
    pub start: String,
    /// End of the covered time, exclusive (RFC 3339).
    pub end: String,
    /// `start` in ms since the epoch.
    pub start_ms: i64,
    /// `end` in ms since the epoch.
    pub end_ms: i64,
    /// The Windows domain (NetBIOS name).
    pub domain: String,
    /// Hosts whose logs the dataset holds.
    pub hosts: Vec<ManifestHost>,
    /// Every log file, in the order the proposed shards list them.
    pub files: Vec<ManifestFile>,
    /// How to ingest the files: each shard's files in order (a record's
    /// shard offset is the events of the shard's earlier files plus its
    /// index in its file).
    pub shards: Vec<ManifestShard>,
    /// The intel feed shipped with the dataset (for `ioc-sweep`).
    pub intel: Vec<IntelSet>,
    /// The planted intrusions.
    pub intrusions: Vec<Intrusion>,
    /// Benign activity that looks malicious to a naive system.
    pub lookalikes: Vec<LookAlike>,
    /// Events in all files.
    pub total_events: u64,
    /// Bytes of all log files.
    pub total_bytes: u64,
}

/// A host with logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestHost {
    /// Short name (`WS04`, `web01`).
    pub name: String,
    /// Name as the logs write it (`WS04.corp.local`).
    pub fqdn: String,
    /// Address.
    pub ip: String,
    /// `windows` or `linux`.
    pub os: String,
    /// `workstation`, `domain-controller`, `web-server`, ….
    pub role: String,
}

/// One log file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the output directory (`windows/WS04/sysmon.jsonl`).
    pub path: String,
    /// The host whose log it is; none for the network sensor's logs.
    pub host: Option<String>,
    /// `wineventlog` (Security and System channels), `sysmon`, `auth`,
    /// `zeek-conn`, `zeek-dns` or `zeek-http`.
    pub source: String,
    /// The worker's ingest format (`jsonl`, `syslog`, `zeek-tsv`).
    pub format: String,
    /// The proposed shard.
    pub shard: String,
    /// Events (records) in the file; Zeek's `#` header lines are not events.
    pub events: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// A proposed shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestShard {
    /// Shard name.
    pub name: String,
    /// Labels (`env`, `os`, `source`, and `host` or `group`).
    pub labels: BTreeMap<String, String>,
    /// Its files, in ingest order.
    pub files: Vec<String>,
}

/// One intel set file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntelSet {
    /// Set name, as `ioc-sweep` takes it (`intel.<name>` parameter).
    pub name: String,
    /// `ip`, `domain` or `hash`.
    pub kind: String,
    /// Path relative to the output directory.
    pub path: String,
    /// Indicators in the file.
    pub indicators: u64,
}

/// Records of one file: 0-based indexes of events in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRefs {
    /// The file (a [`ManifestFile::path`]).
    pub file: String,
    /// Indexes of its events (0 is the file's first event).
    pub records: Vec<u64>,
}

/// One planted step of an intrusion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// When (RFC 3339).
    pub time: String,
    /// When, ms since the epoch.
    pub time_ms: i64,
    /// Where.
    pub host: String,
    /// ATT&CK technique.
    pub technique: String,
    /// What the intruder did.
    pub description: String,
}

/// A planted intrusion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intrusion {
    /// Stable id (`intrusion-1`).
    pub id: String,
    /// Short name.
    pub name: String,
    /// What happens, in a paragraph.
    pub description: String,
    /// Hosts involved (short names).
    pub hosts: Vec<String>,
    /// Accounts involved.
    pub users: Vec<String>,
    /// Addresses involved (victims' and attackers').
    pub ips: Vec<String>,
    /// Domain names involved.
    pub domains: Vec<String>,
    /// File hashes involved (SHA-256).
    pub hashes: Vec<String>,
    /// ATT&CK techniques of its steps.
    pub techniques: Vec<String>,
    /// First planted record (RFC 3339).
    pub start: String,
    /// Last planted record (RFC 3339).
    pub end: String,
    /// First planted record, ms since the epoch.
    pub start_ms: i64,
    /// Last planted record, ms since the epoch.
    pub end_ms: i64,
    /// The steps, in time order.
    pub steps: Vec<Step>,
    /// Every planted record, per file.
    pub events: Vec<EventRefs>,
    /// How many records were planted.
    pub event_count: u64,
}

/// A benign activity that looks malicious to a naive system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookAlike {
    /// Stable id (`sccm-encoded-powershell`).
    pub id: String,
    /// What kind of activity (`management-agent`, `admin-tool`,
    /// `vulnerability-scanner`, `backup-job`, `scheduled-task`, …).
    pub kind: String,
    /// The main entity (`host:*`, `ip:10.10.30.5`, `user:CORP\heidi`).
    pub entity: String,
    /// Every entity that appears in it.
    pub entities: Vec<String>,
    /// Hosts where it is logged.
    pub hosts: Vec<String>,
    /// What it is.
    pub description: String,
    /// Why it is benign, and what tells it apart.
    pub why_benign: String,
    /// ATT&CK techniques it resembles.
    pub resembles: Vec<String>,
    /// Its records, per file.
    pub events: Vec<EventRefs>,
    /// How many records.
    pub event_count: u64,
}

/// Static description of an intrusion; times and records are filled in by
/// the generator.
struct IntrusionInfo {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    hosts: &'static [&'static str],
    users: &'static [&'static str],
    ips: &'static [&'static str],
    domains: &'static [&'static str],
}

const INTRUSIONS: &[IntrusionInfo] = &[
    IntrusionInfo {
        id: "intrusion-1",
        name: "Phishing to a server: encoded PowerShell, rare binary, LSASS dump, PsExec, beaconing",
        description: "On Tuesday dave opens a macro document from an email on WS04; Word starts an encoded, hidden PowerShell download cradle that fetches a script and then msupdate.exe into C:\\Users\\Public\\Libraries from a .xyz stage server. The implant calls home over HTTPS every ten minutes for the rest of the week, persists as a SYSTEM scheduled task, and runs discovery commands. On Wednesday, as SYSTEM, it dumps LSASS with comsvcs.dll and saves the SAM and SYSTEM hives, harvesting the credentials of admin-frank, who had helped dave over RDP the day before. It then uses PsExec with admin-frank's password to copy itself to APP01 (type 3 logon from the workstation, ADMIN$ write, PSEXESVC service), which beacons too. On Thursday it reaches FS01's C$ and finance share from APP01, stages the files and uploads them to the C2 server.",
        hosts: &["WS04", "APP01", "FS01"],
        users: &["dave", "admin-frank"],
        ips: &["10.10.20.14", "10.10.5.30", "203.0.113.45", "203.0.113.47"],
        domains: &["static.cdn-msftupdate.xyz", "api.telemetry-cloudsvc.com"],
    },
    IntrusionInfo {
        id: "intrusion-2",
        name: "SSH brute force on web01, root backdoor account and cron persistence",
        description: "On Thursday night an internet host guesses SSH passwords on web01 for two hours (hundreds of attempts over many user names) until the password of the deploy account works. It uses deploy's sudo rights to create sysupdate, a second UID 0 account, and installs a root crontab entry that downloads and runs a shell script from the attacker every ten minutes (a periodic plain-HTTP fetch to one external address). It logs in again as sysupdate on Friday and Saturday.",
        hosts: &["web01"],
        users: &["deploy", "sysupdate"],
        ips: &["198.51.100.77", "172.16.10.11"],
        domains: &[],
    },
    IntrusionInfo {
        id: "intrusion-3",
        name: "Trojanised download: known-bad installer, Kerberoasting, DNS tunnel, lateral logon",
        description: "On Friday grace downloads a PDF converter over plain HTTP from a .top domain listed in the intel feed and runs it on WS07; its hash, its download address and its check-in server are known indicators. It drops a stealer into AppData with a Run key, checks in every half hour with heavy jitter, discovers SPNs and requests RC4 service tickets for every service account at once (Kerberoasting), then exfiltrates data through long base32 DNS labels under a tunnel zone. On Saturday evening it uses the cracked svc_sql password to reach SQL01's C$ from the workstation.",
        hosts: &["WS07", "SQL01", "DC01"],
        users: &["grace", "svc_sql"],
        ips: &["10.10.20.17", "198.51.100.140", "192.0.2.200"],
        domains: &[
            "dl.pdf-converter-free.top",
            "cdn-static-assets.net",
            "cloud-sync-cdn.net",
        ],
    },
];

/// Static description of a look-alike.
struct LookAlikeInfo {
    id: &'static str,
    kind: &'static str,
    entity: &'static str,
    entities: &'static [&'static str],
    description: &'static str,
    why_benign: &'static str,
    resembles: &'static [&'static str],
}

/// Look-alike indexes, in [`LOOKALIKES`] order.
pub(crate) mod lookalike {
    pub const SCCM_ENCODED_POWERSHELL: usize = 0;
    pub const IT_PSEXEC: usize = 1;
    pub const VULNERABILITY_SCANNER: usize = 2;
    pub const BACKUP_JOBS: usize = 3;
    pub const UPDATER_TASKS: usize = 4;
    pub const STALE_PASSWORD: usize = 5;
    pub const USER_TYPOS: usize = 6;
    pub const MONITORING_HEARTBEAT: usize = 7;
    pub const AV_DNS_LOOKUPS: usize = 8;
    pub const LEGACY_RC4: usize = 9;
    pub const ADMIN_REMOTE_ACCESS: usize = 10;
    pub const SERVICE_ACCOUNT_POLLING: usize = 11;
    pub const ADMIN_SCRIPT_DOWNLOADS: usize = 12;
    pub const STALE_INTEL: usize = 13;
    pub const INTERNET_SSH_NOISE: usize = 14;
}

const LOOKALIKES: &[LookAlikeInfo] = &[
    LookAlikeInfo {
        id: "sccm-encoded-powershell",
        kind: "management-agent",
        entity: "host:*",
        entities: &["host:*"],
        description: "The Configuration Manager client (C:\\Windows\\CCM\\CcmExec.exe) runs inventory, compliance and health scripts as SYSTEM on every Windows host several times a day with powershell.exe -NoProfile -ExecutionPolicy Bypass -EncodedCommand.",
        why_benign: "Parent is CcmExec.exe on every host at the agent's schedule; the decoded scripts only read inventory (hotfixes, installed software, BitLocker state, service state); no download, no IEX.",
        resembles: &["T1059.001", "T1027"],
    },
    LookAlikeInfo {
        id: "it-psexec-maintenance",
        kind: "admin-tool",
        entity: "ip:10.10.30.5",
        entities: &["host:JUMP01", "ip:10.10.30.5", "user:CORP\\svc_itops"],
        description: "Every weeknight at 01:30 a scheduled task on the jump host runs PsExec as svc_itops against each maintained server (-s cmd /c collect-health.cmd): network logon, ADMIN$ write of PSEXESVC.exe, svcctl pipe, PSEXESVC service install.",
        why_benign: "Always from JUMP01 (10.10.30.5) as svc_itops at 01:30 on weekdays, PsExec from C:\\Tools\\Sysinternals, running the same health script; documented IT maintenance.",
        resembles: &["T1021.002", "T1569.002", "T1570"],
    },
    LookAlikeInfo {
        id: "vulnerability-scanner",
        kind: "vulnerability-scanner",
        entity: "ip:10.10.40.15",
        entities: &["ip:10.10.40.15", "user:CORP\\svc_nessus"],
        description: "The weekly credentialed scan on Wednesday evening from SCAN01 (10.10.40.15): a port sweep of every host, default-credential checks (bursts of failed NTLM logons for administrator, admin, guest, root, test) followed by the scan account's logon, remote registry and admin-share access on every Windows host, SSH password checks and web probes (/cgi-bin/*.sh, /.env, …) on the web servers.",
        why_benign: "The scanner's fixed address and account, inside its weekly window; it touches every host and port alike instead of a chain of hosts.",
        resembles: &["T1046", "T1110.001", "T1110.003", "T1021.002"],
    },
    LookAlikeInfo {
        id: "backup-jobs",
        kind: "backup-job",
        entity: "ip:10.10.5.40",
        entities: &[
            "host:BKP01",
            "ip:10.10.5.40",
            "user:CORP\\svc_backup",
            "host:web01",
            "host:web02",
        ],
        description: "Nightly backups: at 22:00 the backup agent on BKP01 logs on to every server as svc_backup (privileged) and reads C$; on every server its local agent exports the SYSTEM and SOFTWARE registry hives with reg.exe save for the system-state backup; BKP01 then replicates to the off-site provider; the web servers rsync /var/www to the backup appliance from cron.",
        why_benign: "Every night at the same time from the backup server and its service account; reg.exe is started by the backup agent and writes to its own folder; transfers go to the known off-site provider.",
        resembles: &["T1003.002", "T1021.002", "T1048", "T1105"],
    },
    LookAlikeInfo {
        id: "updater-scheduled-tasks",
        kind: "scheduled-task",
        entity: "host:*",
        entities: &["host:*"],
        description: "Software updaters register scheduled tasks with schtasks.exe /Create: Adobe's updater (AdobeARM) as SYSTEM, Zoom's per-user updater from the user's AppData on the two machines that have Zoom.",
        why_benign: "Parent is the vendor's installer or updater, the task runs the vendor's signed updater, on the vendor's usual schedule; Zoom's updater is rare only because two people installed Zoom.",
        resembles: &["T1053.005", "T1204.002"],
    },
    LookAlikeInfo {
        id: "stale-saved-password",
        kind: "stale-credential",
        entity: "user:CORP\\heidi",
        entities: &[
            "user:CORP\\heidi",
            "host:WS08",
            "ip:10.10.20.18",
            "host:FS01",
        ],
        description: "heidi changed her password on Monday morning; the drive mapping saved on WS08 still holds the old one, so every weekday morning until Thursday it fails six times against FS01 before she reconnects the drive with the right password.",
        why_benign: "Her own workstation, her own account, at her logon time, stopping on Thursday; the successful logon is her interactive reconnect.",
        resembles: &["T1110.001"],
    },
    LookAlikeInfo {
        id: "user-typos",
        kind: "mistyped-password",
        entity: "user:*",
        entities: &["user:*"],
        description: "People mistype their password at the lock screen or when mapping a drive: one or two failures, then success.",
        why_benign: "One or two failures from the user's own workstation followed by success.",
        resembles: &["T1110"],
    },
    LookAlikeInfo {
        id: "monitoring-heartbeat",
        kind: "periodic-agent",
        entity: "ip:192.0.2.10",
        entities: &["ip:192.0.2.10", "host:web01", "host:web02", "host:APP01"],
        description: "The SaaS monitoring agent on web01, web02 and APP01 posts metrics to ingest.saasmon.net (192.0.2.10:443) every ten minutes, all week.",
        why_benign: "The vendor's documented endpoint and interval, from the agent's own binary, on the servers it is installed on.",
        resembles: &["T1071.001", "T1573"],
    },
    LookAlikeInfo {
        id: "av-cloud-lookups",
        kind: "security-product-dns",
        entity: "domain:avcloud-lookup.net",
        entities: &["domain:avcloud-lookup.net", "host:*"],
        description: "The endpoint protection agent looks up file reputations by sending SHA-1 hashes as DNS labels under sxl.avcloud-lookup.net from every Windows host.",
        why_benign: "The vendor's reputation zone, queried by its agent (avcsvc.exe) on every host; the labels are hashes of local files, not data.",
        resembles: &["T1071.004", "T1048.003"],
    },
    LookAlikeInfo {
        id: "legacy-rc4-service",
        kind: "legacy-kerberos",
        entity: "user:CORP\\svc_legacyapp",
        entities: &["user:CORP\\svc_legacyapp", "host:DC01", "host:DC02"],
        description: "The intranet application's service account svc_legacyapp only has RC4 keys, so every user who opens the intranet gets an RC4 (0x17) service ticket for HTTP/intranet.corp.local.",
        why_benign: "One service name, requested by every user at their normal working hours, one ticket at a time.",
        resembles: &["T1558.003"],
    },
    LookAlikeInfo {
        id: "admin-remote-access",
        kind: "admin-remote-access",
        entity: "user:CORP\\admin-frank",
        entities: &[
            "user:CORP\\admin-frank",
            "user:CORP\\admin-ivan",
            "host:JUMP01",
            "ip:10.10.30.5",
        ],
        description: "The IT admins log on to the jump host over RDP with their admin-* accounts every weekday, RDP from there to servers and helpdesk workstations (admin-frank helped dave on WS04 on Tuesday afternoon), open admin shares on workstations, and use runas /netonly on frank's workstation.",
        why_benign: "Named admin accounts of the IT team, from their workstations to the jump host and from the jump host onwards, during working hours.",
        resembles: &["T1021.001", "T1021.002", "T1550.002", "T1078.002"],
    },
    LookAlikeInfo {
        id: "service-account-polling",
        kind: "service-account-logons",
        entity: "user:CORP\\svc_monitor",
        entities: &["user:CORP\\svc_monitor", "ip:10.10.5.50", "host:SCCM01"],
        description: "The monitoring service account logs on from SCCM01 to every Windows host every two hours to poll performance counters.",
        why_benign: "A fixed service account from the management server on a fixed schedule, to every host alike.",
        resembles: &["T1021", "T1078.002"],
    },
    LookAlikeInfo {
        id: "admin-script-downloads",
        kind: "admin-script",
        entity: "host:SCCM01",
        entities: &["host:SCCM01", "ip:192.0.2.70"],
        description: "A scheduled script on SCCM01 downloads the vendor's agent installers every night with Invoke-WebRequest (PowerShell user agent, .msi and .exe over plain HTTP).",
        why_benign: "The management server, the vendor's download site, at the script's schedule.",
        resembles: &["T1105", "T1059.001"],
    },
    LookAlikeInfo {
        id: "stale-intel-cdn",
        kind: "intel-false-positive",
        entity: "ip:203.0.113.80",
        entities: &["ip:203.0.113.80"],
        description: "The intel feed lists 203.0.113.80, a shared CDN edge that hosted a phishing kit months ago; it now serves static.newsfeed-cdn.net, which news sites load in everyone's browser.",
        why_benign: "Browser traffic to a CDN name many sites embed, from every workstation, during browsing; a stale indicator.",
        resembles: &["T1071.001"],
    },
    LookAlikeInfo {
        id: "internet-ssh-noise",
        kind: "internet-background-noise",
        entity: "host:web01",
        entities: &["host:web01", "host:web02"],
        description: "Internet-wide SSH scanners try common user names on the web servers all day; a few of their addresses are in the intel feed's abuse section. None succeeds.",
        why_benign: "Short bursts from many addresses, no success, the same on both web servers.",
        resembles: &["T1110.001", "T1110.003"],
    },
];

/// Writes the dataset into `dir` (created if needed; files of an earlier
/// run are overwritten) and returns its manifest, also written as
/// `dir/manifest.json`.
///
/// # Errors
///
/// [`ScenarioError::Io`] when a directory or file cannot be written.
pub fn generate(dir: &Path, options: &ScenarioOptions) -> Result<ScenarioManifest, ScenarioError> {
    let (manifest, files) = build(options);
    for (path, bytes) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScenarioError::Io {
                action: "create directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&full, bytes).map_err(|source| ScenarioError::Io {
            action: "write",
            path: full.clone(),
            source,
        })?;
    }
    let json = serde_json::to_vec_pretty(&manifest)?;
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, json).map_err(|source| ScenarioError::Io {
        action: "write",
        path,
        source,
    })?;
    Ok(manifest)
}

/// Builds the dataset in memory: the manifest and every file (relative
/// path, bytes), intel included.
fn build(options: &ScenarioOptions) -> (ScenarioManifest, Vec<(String, Vec<u8>)>) {
    let start = SCENARIO_START_MS;
    let (streams, host_streams, zeek) = plan_streams();
    let mut g = emit::Gen::new(
        start,
        SCENARIO_DAYS,
        options.seed,
        streams,
        host_streams,
        zeek,
    );
    g.background(options.noise_percent);
    g.lookalikes();
    g.intrusions();
    let steps = std::mem::take(&mut g.steps);

    // Time windows of the labelled records, before the drafts are consumed.
    let mut windows: BTreeMap<Label, (i64, i64)> = BTreeMap::new();
    for stream in &g.streams {
        for d in &stream.drafts {
            if d.label != Label::Noise {
                let w = windows.entry(d.label).or_insert((d.t, d.t));
                w.0 = w.0.min(d.t);
                w.1 = w.1.max(d.t);
            }
        }
    }

    let end = g.end();
    let mut files = Vec::new();
    let mut manifest_files = Vec::new();
    let mut refs: BTreeMap<Label, Vec<EventRefs>> = BTreeMap::new();
    let streams = std::mem::take(&mut g.streams);
    for (index, stream) in streams.into_iter().enumerate() {
        let path = stream.path.clone();
        let host = stream.host.map(|h| HOSTS[h].name.to_owned());
        let source = stream.source;
        let format = stream.format.ingest_name();
        let shard = stream.shard.clone();
        // Record numbers continue a log that was running before the week.
        let base = 100_000
            + u64::from_str_radix(
                &emit::digest_hex(&format!("{}:{path}", options.seed), 5),
                16,
            )
            .unwrap_or(0)
                % 4_000_000
            + index as u64;
        let written = stream.write(start, end, base);
        for (label, records) in written.labels {
            refs.entry(label).or_default().push(EventRefs {
                file: path.clone(),
                records,
            });
        }
        manifest_files.push(ManifestFile {
            path: path.clone(),
            host,
            source: source.to_owned(),
            format: format.to_owned(),
            shard,
            events: written.events,
            bytes: written.bytes.len() as u64,
            sha256: written.sha256,
        });
        files.push((path, written.bytes));
    }

    let intel = benign::intel_feed();
    let mut intel_sets = Vec::new();
    for (name, kind, text) in intel {
        let path = format!("intel/{name}.txt");
        let indicators = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count() as u64;
        intel_sets.push(IntelSet {
            name: name.to_owned(),
            kind: kind.to_owned(),
            path: path.clone(),
            indicators,
        });
        files.push((path, text.into_bytes()));
    }

    let window = |label: Label| windows.get(&label).copied().unwrap_or((start, start));
    let count = |events: &[EventRefs]| events.iter().map(|e| e.records.len() as u64).sum();
    let intrusions = INTRUSIONS
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let label = Label::Intrusion(i);
            let (first, last) = window(label);
            let mut steps: Vec<Step> = steps
                .get(i)
                .map(|s| {
                    s.iter()
                        .map(|s| Step {
                            time: format_rfc3339_ms(s.t),
                            time_ms: s.t,
                            host: s.host.clone(),
                            technique: s.technique.to_owned(),
                            description: s.description.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            steps.sort_by_key(|s| s.time_ms);
            let mut techniques: Vec<String> = steps.iter().map(|s| s.technique.clone()).collect();
            techniques.sort();
            techniques.dedup();
            let events = refs.remove(&label).unwrap_or_default();
            Intrusion {
                id: info.id.to_owned(),
                name: info.name.to_owned(),
                description: info.description.to_owned(),
                hosts: info.hosts.iter().map(|s| (*s).to_owned()).collect(),
                users: info.users.iter().map(|s| (*s).to_owned()).collect(),
                ips: info.ips.iter().map(|s| (*s).to_owned()).collect(),
                domains: info.domains.iter().map(|s| (*s).to_owned()).collect(),
                hashes: attacks::hashes(i),
                techniques,
                start: format_rfc3339_ms(first),
                end: format_rfc3339_ms(last),
                start_ms: first,
                end_ms: last,
                steps,
                event_count: count(&events),
                events,
            }
        })
        .collect();
    let lookalikes = LOOKALIKES
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let events = refs.remove(&Label::LookAlike(i)).unwrap_or_default();
            let mut hosts: Vec<String> = events
                .iter()
                .filter_map(|e| manifest_files.iter().find(|f| f.path == e.file))
                .filter_map(|f| f.host.clone())
                .collect();
            hosts.sort();
            hosts.dedup();
            LookAlike {
                id: info.id.to_owned(),
                kind: info.kind.to_owned(),
                entity: info.entity.to_owned(),
                entities: info.entities.iter().map(|s| (*s).to_owned()).collect(),
                hosts,
                description: info.description.to_owned(),
                why_benign: info.why_benign.to_owned(),
                resembles: info.resembles.iter().map(|s| (*s).to_owned()).collect(),
                event_count: count(&events),
                events,
            }
        })
        .collect();

    // Files in shard order, shards in first-file order.
    let mut shards: Vec<ManifestShard> = Vec::new();
    for f in &manifest_files {
        match shards.iter_mut().find(|s| s.name == f.shard) {
            Some(shard) => shard.files.push(f.path.clone()),
            None => shards.push(ManifestShard {
                name: f.shard.clone(),
                labels: shard_labels(f),
                files: vec![f.path.clone()],
            }),
        }
    }
    let order: Vec<String> = shards.iter().flat_map(|s| s.files.clone()).collect();
    manifest_files.sort_by_key(|f| order.iter().position(|p| *p == f.path));

    let manifest = ScenarioManifest {
        version: MANIFEST_VERSION,
        name: "quarry-enterprise-week".to_owned(),
        seed: options.seed,
        noise_percent: options.noise_percent,
        start: format_rfc3339_ms(start),
        end: format_rfc3339_ms(end),
        start_ms: start,
        end_ms: end,
        domain: DOMAIN.to_owned(),
        hosts: HOSTS
            .iter()
            .map(|h| ManifestHost {
                name: h.name.to_owned(),
                fqdn: h.fqdn(),
                ip: h.ip.to_owned(),
                os: (if h.windows { "windows" } else { "linux" }).to_owned(),
                role: h.role.name().to_owned(),
            })
            .collect(),
        total_events: manifest_files.iter().map(|f| f.events).sum(),
        total_bytes: manifest_files.iter().map(|f| f.bytes).sum(),
        files: manifest_files,
        shards,
        intel: intel_sets,
        intrusions,
        lookalikes,
    };
    (manifest, files)
}

fn shard_labels(file: &ManifestFile) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("env".to_owned(), "scenario".to_owned());
    let os = match file.source.as_str() {
        "wineventlog" | "sysmon" => "windows",
        "auth" => "linux",
        _ => "network",
    };
    labels.insert("os".to_owned(), os.to_owned());
    labels.insert("source".to_owned(), file.source.clone());
    if let Some(group) = file
        .shard
        .strip_prefix("win-ws-")
        .and_then(|rest| rest.split('-').next())
    {
        labels.insert("group".to_owned(), format!("ws-{group}"));
    } else if let Some(host) = &file.host {
        labels.insert("host".to_owned(), host.clone());
    }
    labels
}

/// The output files, their shards, and each host's streams.
fn plan_streams() -> (Vec<Stream>, Vec<emit::HostStreams>, (usize, usize, usize)) {
    let mut streams = Vec::new();
    let mut host_streams = vec![emit::HostStreams::default(); HOSTS.len()];
    let add = |streams: &mut Vec<Stream>,
               path: String,
               host: Option<usize>,
               source: &'static str,
               format: FileFormat,
               shard: String| {
        streams.push(Stream {
            path,
            host,
            source,
            format,
            shard,
            syslog_host: host.map(|h| HOSTS[h].name.to_owned()).unwrap_or_default(),
            drafts: Vec::new(),
        });
        streams.len() - 1
    };
    for (i, h) in HOSTS.iter().enumerate() {
        if h.windows {
            let shard = |source: &str| match h.group {
                Some(group) => format!("win-ws-{group}-{source}"),
                None => format!("win-{}-{source}", h.name.to_ascii_lowercase()),
            };
            host_streams[i].winlog = Some(add(
                &mut streams,
                format!("windows/{}/wineventlog.jsonl", h.name),
                Some(i),
                "wineventlog",
                FileFormat::WindowsJson,
                shard("wineventlog"),
            ));
            host_streams[i].sysmon = Some(add(
                &mut streams,
                format!("windows/{}/sysmon.jsonl", h.name),
                Some(i),
                "sysmon",
                FileFormat::WindowsJson,
                shard("sysmon"),
            ));
        } else {
            host_streams[i].auth = Some(add(
                &mut streams,
                format!("linux/{}/auth.log", h.name),
                Some(i),
                "auth",
                FileFormat::Syslog,
                format!("lnx-{}-auth", h.name),
            ));
        }
    }
    let conn = add(
        &mut streams,
        "zeek/conn.log".into(),
        None,
        "zeek-conn",
        FileFormat::ZeekTsv(&ZEEK_CONN),
        "zeek-conn".into(),
    );
    let dns = add(
        &mut streams,
        "zeek/dns.log".into(),
        None,
        "zeek-dns",
        FileFormat::ZeekTsv(&ZEEK_DNS),
        "zeek-dns".into(),
    );
    let http = add(
        &mut streams,
        "zeek/http.log".into(),
        None,
        "zeek-http",
        FileFormat::ZeekTsv(&ZEEK_HTTP),
        "zeek-http".into(),
    );
    (streams, host_streams, (conn, dns, http))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest;

    /// Digest of every file of the default dataset (their SHA-256s in
    /// manifest order). It pins "the same bytes on every machine": when a
    /// change to the generator is meant to change the data, update it to
    /// the value the failing test prints.
    const DEFAULT_DIGEST: &str = "f86f43f2464f0297266f159c6a59d1db6f68f4fcddbd388e4b06ce29f66589c6";

    fn digest(manifest: &ScenarioManifest) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for f in &manifest.files {
            h.update(f.path.as_bytes());
            h.update(f.sha256.as_bytes());
        }
        hex::encode(h.finalize())
    }

    fn text<'a>(files: &'a [(String, Vec<u8>)], path: &str) -> &'a str {
        let bytes = &files.iter().find(|(p, _)| p == path).expect("file").1;
        std::str::from_utf8(bytes).expect("UTF-8")
    }

    /// The file's event lines (Zeek's `#` lines are not events).
    fn events<'a>(files: &'a [(String, Vec<u8>)], path: &str) -> Vec<&'a str> {
        text(files, path)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn scenario_starts_on_the_documented_monday() {
        assert_eq!(
            crate::event::parse_iso8601_ms("2026-11-16T00:00:00Z"),
            Some(SCENARIO_START_MS)
        );
        // 1970-01-01 was a Thursday: day 0 of the scenario is a Monday.
        assert_eq!((SCENARIO_START_MS / 86_400_000 + 3) % 7, 0);
    }

    #[test]
    fn every_record_ingests_inside_the_week_and_matches_the_manifest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let started = std::time::Instant::now();
        let manifest = generate(dir.path(), &ScenarioOptions::default()).expect("generate");
        eprintln!(
            "generated {} events, {} bytes in {:?}",
            manifest.total_events,
            manifest.total_bytes,
            started.elapsed()
        );
        assert!((30_000..300_000).contains(&manifest.total_events));
        assert!(manifest.total_bytes < 100_000_000);
        let written: ScenarioManifest = serde_json::from_slice(
            &std::fs::read(dir.path().join(MANIFEST_FILE)).expect("manifest.json"),
        )
        .expect("manifest parses");
        assert_eq!(written, manifest);
        for f in &manifest.files {
            let path = dir.path().join(&f.path);
            let bytes = std::fs::read(&path).expect("file");
            assert_eq!(bytes.len() as u64, f.bytes, "{}", f.path);
            let (format, records) = ingest::open(&path, None).expect("open");
            assert_eq!(format.name(), f.format, "{}: detected format", f.path);
            let mut n = 0;
            for record in records {
                let doc = record.unwrap_or_else(|m| panic!("{}: malformed {m:?}", f.path));
                let ts = crate::event::event_timestamp_ms(&doc)
                    .unwrap_or_else(|| panic!("{}: no timestamp in {doc}", f.path));
                assert!(
                    (manifest.start_ms..manifest.end_ms).contains(&ts),
                    "{}: {doc}",
                    f.path
                );
                n += 1;
            }
            assert_eq!(n, f.events, "{}", f.path);
        }
        for set in &manifest.intel {
            assert!(dir.path().join(&set.path).is_file(), "{}", set.path);
            assert!(set.indicators >= 40, "{set:?}");
        }
    }

    #[test]
    fn same_options_give_the_same_bytes() {
        let (first, files) = build(&ScenarioOptions::default());
        let (second, again) = build(&ScenarioOptions::default());
        assert_eq!(first, second);
        assert_eq!(files, again);
        let digest = digest(&first);
        assert_eq!(
            digest, DEFAULT_DIGEST,
            "the default dataset changed; if that is intended, set DEFAULT_DIGEST to {digest}"
        );
    }

    #[test]
    fn another_seed_changes_the_noise_not_the_plan() {
        let (default, _) = build(&ScenarioOptions::default());
        let (other, _) = build(&ScenarioOptions {
            seed: 7,
            noise_percent: 100,
        });
        assert_ne!(digest(&default), digest(&other));
        for (a, b) in default.intrusions.iter().zip(&other.intrusions) {
            assert_eq!(
                (&a.id, &a.hosts, &a.techniques, a.steps.len()),
                (&b.id, &b.hosts, &b.techniques, b.steps.len())
            );
        }
        let (quiet, _) = build(&ScenarioOptions {
            seed: DEFAULT_SEED,
            noise_percent: 50,
        });
        assert!(quiet.total_events < default.total_events * 9 / 10);
        assert_eq!(quiet.intrusions.len(), 3);
    }

    #[test]
    fn ground_truth_is_consistent() {
        let (manifest, files) = build(&ScenarioOptions::default());
        assert_eq!(manifest.intrusions.len(), 3);
        assert_eq!(manifest.lookalikes.len(), LOOKALIKES.len());
        assert!(manifest.hosts.len() >= 20);
        let file = |path: &str| {
            manifest
                .files
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("{path} not in the manifest"))
        };
        // Files are listed shard by shard, in ingest order.
        let order: Vec<&String> = manifest.shards.iter().flat_map(|s| &s.files).collect();
        let listed: Vec<&String> = manifest.files.iter().map(|f| &f.path).collect();
        assert_eq!(order, listed);
        for intrusion in &manifest.intrusions {
            assert!(intrusion.event_count >= 100, "{}", intrusion.id);
            assert!(intrusion.steps.len() >= 5, "{}", intrusion.id);
            assert!(intrusion.start_ms < intrusion.end_ms);
            // A multi-day chain.
            assert!(
                intrusion.end_ms - intrusion.start_ms > 24 * 3_600_000,
                "{}",
                intrusion.id
            );
            let mut last = i64::MIN;
            for step in &intrusion.steps {
                assert!(
                    step.time_ms >= last,
                    "{}: steps in time order",
                    intrusion.id
                );
                last = step.time_ms;
                assert!(step.technique.starts_with('T'), "{step:?}");
                assert!(intrusion.hosts.contains(&step.host), "{step:?}");
            }
            // Across hosts and sources.
            let sources: std::collections::BTreeSet<&str> = intrusion
                .events
                .iter()
                .map(|e| file(&e.file).source.as_str())
                .collect();
            let network = sources.iter().any(|s| s.starts_with("zeek"));
            assert!(
                sources.len() >= 2 && network,
                "{}: {sources:?}",
                intrusion.id
            );
            for refs in &intrusion.events {
                let f = file(&refs.file);
                assert!(!refs.records.is_empty());
                assert!(refs.records.windows(2).all(|w| w[0] < w[1]));
                assert!(refs.records.iter().all(|&r| r < f.events), "{}", refs.file);
                assert_eq!(events(&files, &refs.file).len() as u64, f.events);
            }
            for host in &intrusion.hosts {
                assert!(
                    intrusion
                        .events
                        .iter()
                        .any(|e| file(&e.file).host.as_deref() == Some(host.as_str())),
                    "{}: no record on {host}",
                    intrusion.id
                );
            }
        }
        for lookalike in &manifest.lookalikes {
            assert!(lookalike.event_count > 0, "{}", lookalike.id);
            assert!(!lookalike.why_benign.is_empty());
        }
    }

    #[test]
    fn attacker_indicators_appear_only_in_planted_records() {
        let (manifest, files) = build(&ScenarioOptions::default());
        let indicators: [&[&str]; 3] = [
            &[
                "msupdate.exe",
                "203.0.113.47",
                "203.0.113.45",
                "cdn-msftupdate",
                "telemetry-cloudsvc",
                "Autumn#2026",
            ],
            &["198.51.100.77", "sysupdate"],
            &[
                "pdfconvsvc",
                "PDFConverterSetup",
                "pdf-converter-free",
                "cdn-static-assets",
                "192.0.2.200",
                "198.51.100.140",
                "cloud-sync-cdn",
                "Summer2019!",
            ],
        ];
        for (i, intrusion) in manifest.intrusions.iter().enumerate() {
            for f in &manifest.files {
                let planted: std::collections::BTreeSet<u64> = intrusion
                    .events
                    .iter()
                    .filter(|e| e.file == f.path)
                    .flat_map(|e| e.records.iter().copied())
                    .collect();
                for (r, line) in events(&files, &f.path).iter().enumerate() {
                    if indicators[i].iter().any(|needle| line.contains(needle)) {
                        assert!(
                            planted.contains(&(r as u64)),
                            "{}: record {r} of {} names the intrusion but is not listed: {line}",
                            intrusion.id,
                            f.path
                        );
                    }
                }
            }
        }
    }
}
