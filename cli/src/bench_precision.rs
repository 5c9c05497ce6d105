//! `quarry bench precision`: every shipped detection module over the real
//! data of `../shared/data` (issue 19), each log file one shard, each task
//! run in the worker's sandbox as a worker runs it (the shipped wasm through
//! [`quarry_worker::runtime`], the worker's default limits). The report gives
//! per module the events scanned, findings per million events by severity on
//! the data that is benign for the module, and its findings on the attack
//! datasets (by severity, and in which files).
//!
//! # Which data is benign
//!
//! Nothing in the shared data set is a pure baseline: every file comes from
//! an attack simulation (the README's "Known gaps": no benign Windows
//! baseline could be fetched). Its README and `MANIFEST.tsv` describe two
//! kinds of file, and the benchmark classes them so ([`classify`]):
//!
//! - **background** recordings, whole capture windows in which the attack is
//!   a handful of events among ordinary activity: `logs/windows/mordor/` (13
//!   OTRF recordings, Sysmon + Security + System; "the attack events sit
//!   among ordinary background noise … realistic for false-positive
//!   testing") and the two Zeek captures `logs/network/zeek_json_apt29_day1/`
//!   and `logs/network/zeek_tsv_lsass_campaign_01/` (all the lab's traffic
//!   over the window: connections, DNS, Kerberos, SMB, HTTP);
//! - **attack** recordings, the attack and little else:
//!   `logs/windows/evtx/` ("attack events only, little noise"),
//!   `logs/network/suricata/` (IDS alerts only, one per signature, from red
//!   team and training traffic), `logs/linux/` (the recorded commands and the
//!   Log4Shell exploitation) and `logs/cloud/` (the S3 exfiltration).
//!
//! Each background recording is labelled with the ATT&CK techniques its
//! operator exercised ([`BACKGROUND_LABELS`]: the `attack_mappings` of its
//! `logs/_metadata` description, plus the techniques of the tools its
//! `adversary_view` shows, e.g. PsExec's service and admin share in the LSA
//! secrets dump). A background recording is **benign for a module** when
//! none of those techniques is one the module reports
//! ([`module_techniques`]; for `sigma`, the techniques tagged in the rules it
//! loaded): there the module has nothing to find, and a finding is a false
//! positive. Otherwise the recording is one of the module's attack datasets,
//! as every attack recording is. A file outside these directories (a
//! `--data` folder of one's own logs) is background without labels: benign
//! for every module.
//!
//! The EVTX folder holds each recording twice, as the upstream `.evtx` and
//! as a `.jsonl` conversion of it; only the `.evtx` is read (a `.jsonl`
//! beside an `.evtx` of the same name is skipped). `logs/_metadata/` holds
//! descriptions, not logs.

use crate::module_tool::{default_limits, failure_kind, module_cache_dir};
use anyhow::Context;
use quarry_hunt_modules::ShippedModule;
use quarry_proto::v1;
use quarry_worker::runtime::{
    LoadedModule, ModuleCacheConfig, Runtime, RuntimeConfig, TaskInput, TaskOutput, module_digest,
    severity_value,
};
use quarry_worker::shard::ShardStore;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The data used when `--data` is not given (the shared data next to a
/// checkout).
pub const DEFAULT_DATA: &str = "../shared/data";

/// Directories (under `logs/`) of attack recordings: the attack and little
/// else.
pub const ATTACK_DIRS: &[&str] = &["windows/evtx/", "network/suricata/", "linux/", "cloud/"];

/// Background recordings of the shared data set (paths under `logs/`, a
/// file or a directory ending in `/`) and the ATT&CK techniques their
/// operators exercised: the `attack_mappings` of `logs/_metadata`, and the
/// techniques of the tools and interpreters the `adversary_view` shows.
pub const BACKGROUND_LABELS: &[(&str, &[&str])] = &[
    // rundll32 comsvcs.dll MiniDump, started from PowerShell.
    (
        "windows/mordor/T1003.001_lsass_dump_comsvcs_powershell.jsonl",
        &["T1003.001", "T1218.011", "T1059.001"],
    ),
    // Outflank-Dumpert.exe: direct system calls.
    (
        "windows/mordor/T1003.001_lsass_dump_dumpert_syscalls.jsonl",
        &["T1003.001", "T1106"],
    ),
    // esentutl.exe /y /vss of the SAM hive.
    (
        "windows/mordor/T1003.002_sam_copy_esentutl_vss.jsonl",
        &["T1003.002"],
    ),
    // `PsExec.exe -accepteula -s reg save …`: PsExec installs its PSEXESVC
    // service through the ADMIN$ and IPC$ shares (ATT&CK S0029).
    (
        "windows/mordor/T1003.004_psexec_reg_lsa_secrets_dump.jsonl",
        &["T1003.004", "T1569.002", "T1021.002", "T1570"],
    ),
    // Covenant's DCSync (mimikatz lsadump::dcsync).
    (
        "windows/mordor/T1003.006_covenant_dcsync.jsonl",
        &["T1003.006"],
    ),
    // `$host.UI.PromptForCredential` in PowerShell.
    (
        "windows/mordor/T1056.002_powershell_promptforcredential.jsonl",
        &["T1056.002", "T1059.001"],
    ),
    // `New-Object Net.HttpListener` in PowerShell.
    (
        "windows/mordor/T1059.001_powershell_httplistener.jsonl",
        &["T1059.001"],
    ),
    // `REG.exe ADD HKCU\Environment /v UserInitMprLogonScript …`.
    (
        "windows/mordor/T1037.001_userinitmprlogonscript_batch.jsonl",
        &["T1037.001", "T1112"],
    ),
    // `sc config Fax binPath= "…powershell.exe -noexit -c …"`.
    (
        "windows/mordor/T1543.003_service_modification_fax.jsonl",
        &["T1543.003", "T1059.001"],
    ),
    // `bitsadmin.exe /transfer … https://…` : a download.
    (
        "windows/mordor/T1197_bitsadmin_download_ps_script.jsonl",
        &["T1197", "T1105"],
    ),
    // `mshta vbscript:Execute(… powershell -noexit -command …)`.
    (
        "windows/mordor/T1218.005_mshta_vbscript_execute_powershell.jsonl",
        &["T1218.005", "T1059.005", "T1059.001"],
    ),
    // `schtasks /create … /S WORKSTATION6`: a task created remotely.
    (
        "windows/mordor/T1053.005_remote_scheduled_task_create.jsonl",
        &["T1053.005"],
    ),
    // mimikatz lsadump::zerologon against the domain controller.
    (
        "windows/mordor/T1210_zerologon_mimikatz_cve_2020_1472.jsonl",
        &["T1210"],
    ),
    // The README: the APT29 emulation, day 1: initial execution, C2 over
    // HTTPS/8443, discovery, lateral movement over SMB/DCE-RPC/Kerberos.
    (
        "network/zeek_json_apt29_day1/",
        &[
            "T1204.002",
            "T1071.001",
            "T1573",
            "T1082",
            "T1057",
            "T1021.002",
            "T1021.006",
            "T1570",
        ],
    ),
    // `logs/_metadata/LSASS_campaign_01.yaml`: a Metasploit payload run,
    // discovery, token theft, injection, then LSASS credential theft.
    (
        "network/zeek_tsv_lsass_campaign_01/",
        &[
            "T1587.001",
            "T1608.001",
            "T1204.002",
            "T1082",
            "T1033",
            "T1057",
            "T1134.001",
            "T1055.002",
            "T1003.001",
        ],
    ),
];

/// How a dataset file is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetClass {
    /// A capture window of mostly ordinary activity; benign for the modules
    /// that do not report the techniques of its attack.
    Background,
    /// An attack recording: the attack and little else.
    Attack,
}

/// The class of the file at `relative` (its path under `logs/`, `/`
/// separated) and the techniques exercised in it (for background files).
pub fn classify(relative: &str) -> (DatasetClass, Vec<String>) {
    if ATTACK_DIRS.iter().any(|dir| relative.starts_with(dir)) {
        return (DatasetClass::Attack, Vec::new());
    }
    let labels = BACKGROUND_LABELS
        .iter()
        .find(|(path, _)| {
            if path.ends_with('/') {
                relative.starts_with(path)
            } else {
                relative == *path
            }
        })
        .map(|(_, techniques)| techniques.iter().map(|t| (*t).to_owned()).collect())
        .unwrap_or_default();
    (DatasetClass::Background, labels)
}

/// The ATT&CK techniques a shipped module reports (docs/modules.md, each
/// module's "ATT&CK" line); `None` for `sigma`, whose techniques are its
/// rules' tags.
pub fn module_techniques(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        "beaconing" => &["T1071", "T1071.001", "T1573"],
        "bruteforce" => &["T1110", "T1110.001", "T1110.003"],
        "dns-tunnel" => &["T1071.004", "T1048"],
        "encoded-powershell" => &["T1059.001", "T1027", "T1027.010", "T1105", "T1562.001"],
        "lateral-movement" => &["T1021", "T1021.001", "T1021.002", "T1569.002", "T1570"],
        "rare-process" => &["T1204.002", "T1036"],
        _ => return None,
    })
}

/// Whether two technique ids name the same technique or one is a
/// sub-technique of the other (`T1021` and `T1021.002`).
pub fn techniques_related(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
    a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
}

/// The ATT&CK technique tags (`attack.t1003.001`) of Sigma rule texts, as
/// technique ids (block and flow lists alike).
pub fn sigma_rule_techniques<'a>(texts: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for text in texts {
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')) {
            let lower = token.to_ascii_lowercase();
            if let Some(id) = lower.strip_prefix("attack.t")
                && id.len() >= 4
                && id.chars().all(|c| c.is_ascii_digit() || c == '.')
            {
                out.insert(format!("T{id}"));
            }
        }
    }
    out
}

/// Why a shipped module is not run, or `None` when it is.
pub fn skip_reason(module: &str) -> Option<&'static str> {
    match module {
        "ioc-sweep" => Some(
            "matches the indicators of the intel sets shipped with a hunt: without a feed it has nothing to match, with one its findings measure the feed, not the module",
        ),
        "pivot" => Some(
            "the timeline of one entity given as a parameter, every finding informational by design: not a detection",
        ),
        "query" => Some("runs a `quarry query` pipeline and returns a table: not a detection"),
        _ => None,
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct PrecisionBenchConfig {
    /// The data folder (holding `logs/`, as `../shared/data` does), or a
    /// folder of log files.
    pub data: PathBuf,
    /// Sigma rules for the `sigma` module; `<data>/sigma/rules` when it
    /// exists and this is `None`.
    pub rules: Option<PathBuf>,
    /// Tasks run at once (and modules compiled at once).
    pub threads: usize,
}

impl Default for PrecisionBenchConfig {
    fn default() -> Self {
        PrecisionBenchConfig {
            data: PathBuf::from(DEFAULT_DATA),
            rules: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

/// Findings by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeverityCounts {
    /// Informational.
    pub info: u64,
    /// Low.
    pub low: u64,
    /// Medium.
    pub medium: u64,
    /// High.
    pub high: u64,
    /// Critical.
    pub critical: u64,
}

impl SeverityCounts {
    fn add(&mut self, severity: i32) {
        match v1::Severity::try_from(severity) {
            Ok(v1::Severity::Low) => self.low += 1,
            Ok(v1::Severity::Medium) => self.medium += 1,
            Ok(v1::Severity::High) => self.high += 1,
            Ok(v1::Severity::Critical) => self.critical += 1,
            _ => self.info += 1,
        }
    }

    fn merge(&mut self, other: &SeverityCounts) {
        self.info += other.info;
        self.low += other.low;
        self.medium += other.medium;
        self.high += other.high;
        self.critical += other.critical;
    }

    /// All findings.
    pub fn total(&self) -> u64 {
        self.info + self.low + self.medium + self.high + self.critical
    }

    /// High and critical findings.
    pub fn high_or_critical(&self) -> u64 {
        self.high + self.critical
    }

    /// Per million of `events`.
    pub fn per_million(&self, events: u64) -> SeverityRates {
        let rate = |n: u64| n as f64 * 1e6 / (events.max(1) as f64);
        SeverityRates {
            info: rate(self.info),
            low: rate(self.low),
            medium: rate(self.medium),
            high: rate(self.high),
            critical: rate(self.critical),
        }
    }
}

impl fmt::Display for SeverityCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            (self.critical, "critical"),
            (self.high, "high"),
            (self.medium, "medium"),
            (self.low, "low"),
            (self.info, "info"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n} {name}"))
        .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Findings per million events by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SeverityRates {
    /// Informational.
    pub info: f64,
    /// Low.
    pub low: f64,
    /// Medium.
    pub medium: f64,
    /// High.
    pub high: f64,
    /// Critical.
    pub critical: f64,
}

/// One dataset file.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    /// Its path under the data folder's `logs/`.
    pub file: String,
    /// Its class.
    pub class: DatasetClass,
    /// Techniques exercised in it (background recordings).
    pub techniques: Vec<String>,
    /// Events stored from it.
    pub events: u64,
    /// Records of it that were malformed (not stored).
    pub malformed: u64,
}

/// A module's findings in one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileFindings {
    /// The file (under `logs/`).
    pub file: String,
    /// Its findings by severity.
    pub findings: SeverityCounts,
    /// The rules of its high and critical findings, with counts.
    pub high_rules: Vec<(String, u64)>,
}

/// One module's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleFigures {
    /// Its name.
    pub module: String,
    /// Its version.
    pub version: String,
    /// Its parameters, when not the defaults (sigma's rules, summarised).
    pub params: String,
    /// Events scanned over all files.
    pub events_scanned: u64,
    /// Files benign for it.
    pub benign_files: usize,
    /// Events in them.
    pub benign_events: u64,
    /// Its findings there.
    pub benign: SeverityCounts,
    /// The same per million benign events.
    pub benign_per_million: SeverityRates,
    /// Files with findings on benign data (each a false positive).
    pub benign_files_with_findings: Vec<FileFindings>,
    /// Its attack datasets.
    pub attack_files: usize,
    /// Events in them.
    pub attack_events: u64,
    /// Its findings there.
    pub attack: SeverityCounts,
    /// The attack files with findings.
    pub attack_detections: Vec<FileFindings>,
    /// Of its findings on background recordings that are attack data for
    /// it, those tagged with none of the recording's techniques: found
    /// beside the recorded attack (not gated; see the module docs).
    pub beside_attack: SeverityCounts,
    /// The files of those, with their high and critical rules.
    pub beside_attack_files: Vec<FileFindings>,
    /// Tasks that failed: file and reason.
    pub failures: Vec<(String, String)>,
}

/// A shipped module not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedModule {
    /// Its name.
    pub module: String,
    /// Why.
    pub reason: String,
}

/// What [`precision_bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionReport {
    /// Whether this is an optimised build.
    pub optimized_build: bool,
    /// The data folder.
    pub data: String,
    /// The files, each one shard.
    pub datasets: Vec<Dataset>,
    /// Events in them.
    pub events: u64,
    /// The modules run.
    pub modules: Vec<ModuleFigures>,
    /// The shipped modules not run.
    pub skipped: Vec<SkippedModule>,
    /// Wall time of the run, seconds.
    pub seconds: f64,
}

impl PrecisionReport {
    /// High or critical findings on data benign for the module:
    /// `(module, file, count)`.
    pub fn benign_high_or_critical(&self) -> Vec<(String, String, u64)> {
        self.modules
            .iter()
            .flat_map(|m| {
                m.benign_files_with_findings
                    .iter()
                    .filter(|f| f.findings.high_or_critical() > 0)
                    .map(|f| {
                        (
                            m.module.clone(),
                            f.file.clone(),
                            f.findings.high_or_critical(),
                        )
                    })
            })
            .collect()
    }

    /// Every failed task: `(module, file, reason)`.
    pub fn failures(&self) -> Vec<(String, String, String)> {
        self.modules
            .iter()
            .flat_map(|m| {
                m.failures
                    .iter()
                    .map(|(file, why)| (m.module.clone(), file.clone(), why.clone()))
            })
            .collect()
    }
}

impl fmt::Display for PrecisionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let background = self
            .datasets
            .iter()
            .filter(|d| d.class == DatasetClass::Background)
            .count();
        writeln!(
            f,
            "quarry bench precision: shipped modules over {} ({} files, {} events; each file one shard, default parameters, worker sandbox); {}; {:.1} s",
            self.data,
            self.datasets.len(),
            self.events,
            if self.optimized_build {
                "release build"
            } else {
                "debug build"
            },
            self.seconds
        )?;
        writeln!(
            f,
            "  {} background recordings (benign for a module unless their attack is one it reports), {} attack recordings",
            background,
            self.datasets.len() - background
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "  SCANNED: events the module's tasks read (the prefilter's block index skips the rest); benign: findings per million events by severity"
        )?;
        writeln!(
            f,
            "  {:<28} | {:<53} | ATTACK RECORDINGS",
            "", "BENIGN DATA (per million events)",
        )?;
        writeln!(
            f,
            "  {:<20} {:>7} | {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>6} {:>6}  FINDINGS",
            "MODULE",
            "SCANNED",
            "FILES",
            "EVENTS",
            "CRIT/M",
            "HIGH/M",
            "MED/M",
            "LOW/M",
            "INFO/M",
            "FILES",
            "EVENTS",
        )?;
        for m in &self.modules {
            let r = &m.benign_per_million;
            writeln!(
                f,
                "  {:<20} {:>7} | {:>6} {:>6} {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>7.0} | {:>6} {:>6}  {}",
                m.module,
                m.events_scanned,
                m.benign_files,
                m.benign_events,
                r.critical,
                r.high,
                r.medium,
                r.low,
                r.info,
                m.attack_files,
                m.attack_events,
                m.attack
            )?;
        }
        for m in &self.modules {
            writeln!(f)?;
            write!(f, "  {} {}", m.module, m.version)?;
            if !m.params.is_empty() {
                write!(f, " ({})", m.params)?;
            }
            writeln!(f)?;
            writeln!(
                f,
                "    benign ({} files, {} events): {}",
                m.benign_files, m.benign_events, m.benign
            )?;
            for file in &m.benign_files_with_findings {
                writeln!(f, "      {}: {}{}", file.file, file.findings, rules(file))?;
            }
            writeln!(
                f,
                "    attack ({} files, {} events): {}",
                m.attack_files, m.attack_events, m.attack
            )?;
            for file in &m.attack_detections {
                writeln!(f, "      {}: {}{}", file.file, file.findings, rules(file))?;
            }
            if m.beside_attack.total() > 0 {
                writeln!(
                    f,
                    "    of which beside the recorded attack (background recordings, techniques not the attack's): {}",
                    m.beside_attack
                )?;
                for file in &m.beside_attack_files {
                    writeln!(f, "      {}: {}{}", file.file, file.findings, rules(file))?;
                }
            }
            for (file, why) in &m.failures {
                writeln!(f, "    FAILED on {file}: {why}")?;
            }
        }
        if !self.skipped.is_empty() {
            writeln!(f)?;
            for s in &self.skipped {
                writeln!(f, "  not run: {}: {}", s.module, s.reason)?;
            }
        }
        writeln!(f)?;
        let violations = self.benign_high_or_critical();
        if violations.is_empty() {
            write!(f, "  high or critical findings on benign data: none")
        } else {
            write!(
                f,
                "  high or critical findings on benign data: {}",
                violations
                    .iter()
                    .map(|(m, file, n)| format!("{m} {n} in {file}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    }
}

fn rules(file: &FileFindings) -> String {
    if file.high_rules.is_empty() {
        return String::new();
    }
    format!(
        " [high/critical: {}]",
        file.high_rules
            .iter()
            .map(|(rule, n)| format!("{rule} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The log files of the data folder: every file under `<data>/logs` (or
/// `data` itself when it has no `logs/`), sorted, with their paths relative
/// to it; hidden files, `_metadata/` and `.jsonl` conversions beside an
/// `.evtx` of the same name left out.
pub fn dataset_files(data: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let root = if data.join("logs").is_dir() {
        data.join("logs")
    } else {
        data.to_owned()
    };
    anyhow::ensure!(
        root.is_dir(),
        "--data {}: not a directory; pass the shared data folder (holding logs/) or a folder of log files",
        data.display()
    );
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "_metadata" {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if !(path.extension().is_some_and(|e| e == "jsonl")
                && path.with_extension("evtx").is_file())
            {
                files.push(path);
            }
        }
    }
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "--data {}: no log files under {}",
        data.display(),
        root.display()
    );
    Ok(files
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            (path, relative)
        })
        .collect())
}

/// A module to run.
struct Planned {
    shipped: &'static ShippedModule,
    params: Vec<(String, String)>,
    params_note: String,
    /// Techniques it reports.
    techniques: Vec<String>,
}

/// Runs the benchmark; `progress` gets a line now and then.
///
/// # Errors
///
/// A data folder without log files, a file that cannot be ingested, a
/// module that does not load. A failing task is not an error: it is in the
/// report ([`PrecisionReport::failures`]).
pub fn precision_bench(
    config: &PrecisionBenchConfig,
    progress: impl Fn(&str) + Sync,
) -> anyhow::Result<PrecisionReport> {
    let started = Instant::now();
    let threads = config.threads.max(1);
    let files = dataset_files(&config.data)?;

    // Modules and their parameters.
    let rules = config.rules.clone().or_else(|| {
        let default = config.data.join("sigma/rules");
        default.is_dir().then_some(default)
    });
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for shipped in quarry_hunt_modules::all() {
        if let Some(reason) = skip_reason(shipped.name) {
            skipped.push(SkippedModule {
                module: shipped.name.to_owned(),
                reason: reason.to_owned(),
            });
            continue;
        }
        if shipped.name == "sigma" {
            let Some(rules) = &rules else {
                skipped.push(SkippedModule {
                    module: "sigma".to_owned(),
                    reason: format!(
                        "needs rules: none at {}/sigma/rules; pass --rules PATH",
                        config.data.display()
                    ),
                });
                continue;
            };
            let mut params = sigma::loader::rule_params(rules)
                .with_context(|| format!("--rules {}", rules.display()))?;
            params.sort();
            let techniques = sigma_rule_techniques(params.iter().map(|(_, t)| t.as_str()))
                .into_iter()
                .collect();
            planned.push(Planned {
                shipped,
                params_note: format!("{} rule files from {}", params.len(), rules.display()),
                params,
                techniques,
            });
            continue;
        }
        planned.push(Planned {
            shipped,
            params: Vec::new(),
            params_note: String::new(),
            techniques: module_techniques(shipped.name)
                .unwrap_or_default()
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
        });
    }

    // Each file one shard.
    let scratch = tempfile::Builder::new()
        .prefix("quarry-bench-precision-")
        .tempdir()
        .context("cannot create a temporary directory for the shards")?;
    let store_dir = scratch.path().join("shards");
    let store = ShardStore::open(&store_dir)
        .with_context(|| format!("cannot open a shard store in {}", store_dir.display()))?;
    progress(&format!(
        "ingesting {} files of {} ...",
        files.len(),
        config.data.display()
    ));
    let mut datasets = Vec::new();
    for (index, (path, relative)) in files.iter().enumerate() {
        let (_, report) = crate::module_tool::ingest_file(&store, &shard_name(index), path, None)
            .map_err(|e| anyhow::anyhow!("cannot ingest {}: {e}", path.display()))?;
        let (class, techniques) = classify(relative);
        datasets.push(Dataset {
            file: relative.clone(),
            class,
            techniques,
            events: report.events_stored,
            malformed: report.malformed,
        });
    }
    let events = datasets.iter().map(|d| d.events).sum();

    // The runtime, with the per-user compiled-module cache `quarry module
    // test` uses: a module is compiled once per build of it.
    let cache = module_cache_dir().map(|dir| ModuleCacheConfig {
        max_disk_bytes: crate::module_tool::MODULE_CACHE_BYTES,
        ..ModuleCacheConfig::in_dir(&dir)
    });
    let runtime = Runtime::with_cache(threads as u32, RuntimeConfig::default(), cache)
        .or_else(|_| Runtime::new(threads as u32, RuntimeConfig::default(), None))
        .context("cannot start the wasm runtime")?;
    progress(&format!(
        "loading {} modules ({})...",
        planned.len(),
        planned
            .iter()
            .map(|p| p.shipped.name)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let loaded: Vec<Mutex<Option<anyhow::Result<Arc<LoadedModule>>>>> =
        planned.iter().map(|_| Mutex::new(None)).collect();
    // Largest first: compiling is most of a cold run (sigma and dns-tunnel
    // take longest), and the threads then finish together.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(planned[i].shipped.wasm.len()));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(planned.len()) {
            scope.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let plan = &planned[i];
                    let started = Instant::now();
                    let result = runtime
                        .load(&module_digest(plan.shipped.wasm), plan.shipped.wasm)
                        .with_context(|| {
                            format!("the shipped {} module does not load", plan.shipped.name)
                        });
                    progress(&format!(
                        "  {} loaded in {:.1} s",
                        plan.shipped.name,
                        started.elapsed().as_secs_f64()
                    ));
                    *loaded[i].lock().expect("not poisoned") = Some(result);
                }
            });
        }
    });
    let mut modules = Vec::new();
    for slot in loaded {
        modules.push(slot.into_inner().expect("not poisoned").expect("loaded")?);
    }

    // Every (module, file) task.
    let jobs: Vec<(usize, usize)> = (0..planned.len())
        .flat_map(|m| (0..datasets.len()).map(move |d| (m, d)))
        .collect();
    let results: Vec<Mutex<Option<Result<TaskOutput, String>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    progress(&format!(
        "running {} tasks ({} modules x {} files) on {threads} threads ...",
        jobs.len(),
        planned.len(),
        datasets.len()
    ));
    let limits = default_limits();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(m, d)) = jobs.get(i) else { break };
                    let plan = &planned[m];
                    let shard = shard_name(d);
                    let result = if store.get(&shard).is_some() {
                        let task = TaskInput {
                            params: &plan.params,
                            limits,
                            shard: &shard,
                            time_range: None,
                            hunt: None,
                        };
                        runtime
                            .run(
                                &modules[m],
                                &task,
                                &store,
                                &Arc::new(AtomicBool::new(false)),
                            )
                            .map_err(|failure| format!("{} ({})", failure, failure_kind(&failure)))
                    } else {
                        // No event in the file: nothing to scan.
                        Ok(TaskOutput::default())
                    };
                    *results[i].lock().expect("not poisoned") = Some(result);
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if finished.is_multiple_of(datasets.len()) || finished == jobs.len() {
                        progress(&format!("  {finished}/{} tasks", jobs.len()));
                    }
                }
            });
        }
    });

    // Figures.
    let mut figures: Vec<ModuleFigures> = planned
        .iter()
        .map(|plan| ModuleFigures {
            module: plan.shipped.name.to_owned(),
            version: plan.shipped.version.to_owned(),
            params: plan.params_note.clone(),
            events_scanned: 0,
            benign_files: 0,
            benign_events: 0,
            benign: SeverityCounts::default(),
            benign_per_million: SeverityRates::default(),
            benign_files_with_findings: Vec::new(),
            attack_files: 0,
            attack_events: 0,
            attack: SeverityCounts::default(),
            attack_detections: Vec::new(),
            beside_attack: SeverityCounts::default(),
            beside_attack_files: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    for (&(m, d), result) in jobs.iter().zip(results) {
        let plan = &planned[m];
        let dataset = &datasets[d];
        let figure = &mut figures[m];
        let benign = dataset.class == DatasetClass::Background
            && !dataset.techniques.iter().any(|label| {
                plan.techniques
                    .iter()
                    .any(|covered| techniques_related(label, covered))
            });
        if benign {
            figure.benign_files += 1;
            figure.benign_events += dataset.events;
        } else {
            figure.attack_files += 1;
            figure.attack_events += dataset.events;
        }
        let output = match result.into_inner().expect("not poisoned").expect("ran") {
            Ok(output) => output,
            Err(why) => {
                figure.failures.push((dataset.file.clone(), why));
                continue;
            }
        };
        figure.events_scanned += output.events_scanned;
        let mut counts = SeverityCounts::default();
        let mut high_rules: Vec<(String, u64)> = Vec::new();
        let mut beside = SeverityCounts::default();
        let mut beside_rules: Vec<(String, u64)> = Vec::new();
        for finding in &output.findings {
            let severity = severity_value(finding.severity);
            counts.add(severity);
            let high = severity >= v1::Severity::High as i32;
            // Sigma's rules are ids; their titles say more.
            let name = if finding.rule.starts_with("sigma/") {
                &finding.title
            } else {
                &finding.rule
            };
            if high {
                count_rule(&mut high_rules, name);
            }
            let outside = !benign
                && dataset.class == DatasetClass::Background
                && !finding.techniques.iter().any(|t| {
                    dataset
                        .techniques
                        .iter()
                        .any(|label| techniques_related(t, label))
                });
            if outside {
                beside.add(severity);
                if high {
                    count_rule(&mut beside_rules, name);
                }
            }
        }
        if beside.total() > 0 {
            figure.beside_attack.merge(&beside);
            figure.beside_attack_files.push(FileFindings {
                file: dataset.file.clone(),
                findings: beside,
                high_rules: beside_rules,
            });
        }
        if benign {
            figure.benign.merge(&counts);
        } else {
            figure.attack.merge(&counts);
        }
        if counts.total() > 0 {
            let file = FileFindings {
                file: dataset.file.clone(),
                findings: counts,
                high_rules,
            };
            if benign {
                figure.benign_files_with_findings.push(file);
            } else {
                figure.attack_detections.push(file);
            }
        }
    }
    for figure in &mut figures {
        figure.benign_per_million = figure.benign.per_million(figure.benign_events);
    }
    Ok(PrecisionReport {
        optimized_build: !cfg!(debug_assertions),
        data: config.data.display().to_string(),
        datasets,
        events,
        modules: figures,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn count_rule(rules: &mut Vec<(String, u64)>, name: &str) {
    match rules.iter_mut().find(|(r, _)| r == name) {
        Some((_, n)) => *n += 1,
        None => rules.push((name.to_owned(), 1)),
    }
}

fn shard_name(index: usize) -> String {
    format!("precision-{index:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_classed_by_the_readme() {
        assert_eq!(
            classify("windows/evtx/T1110_kerbrute_user_enumeration_4768_4771.evtx").0,
            DatasetClass::Attack
        );
        assert_eq!(classify("cloud/x.jsonl").0, DatasetClass::Attack);
        let (class, labels) =
            classify("windows/mordor/T1003.004_psexec_reg_lsa_secrets_dump.jsonl");
        assert_eq!(class, DatasetClass::Background);
        assert!(labels.iter().any(|t| t == "T1569.002"));
        let (class, labels) = classify("network/zeek_json_apt29_day1/NASHUA_dns.log");
        assert_eq!(class, DatasetClass::Background);
        assert!(labels.iter().any(|t| t == "T1071.001"));
        // Someone's own logs: background, benign for every module.
        assert_eq!(
            classify("dc01/security.evtx"),
            (DatasetClass::Background, Vec::new())
        );
    }

    #[test]
    fn techniques_match_their_sub_techniques() {
        assert!(techniques_related("T1021", "T1021.002"));
        assert!(techniques_related("t1021.002", "T1021"));
        assert!(techniques_related("T1059.001", "T1059.001"));
        assert!(!techniques_related("T1021.002", "T1021.001"));
        assert!(!techniques_related("T1110", "T1110000"));
    }

    #[test]
    fn sigma_tags_give_techniques() {
        let rule = "title: x\ntags:\n    - attack.credential-access\n    - attack.t1003.001\n    - 'attack.T1059'\n    - attack.s0002\n";
        let flow = "tags: [attack.discovery, attack.t1033]\n";
        let found: Vec<String> = sigma_rule_techniques([rule, flow]).into_iter().collect();
        assert_eq!(found, ["T1003.001", "T1033", "T1059"]);
    }
}
