//! The generator's state and the record builders every activity uses:
//! Windows Security, System and Sysmon events with the fields and value
//! shapes of real ones, auth.log lines, and Zeek conn/dns/http rows.
//!
//! Builders take the values of the record they write as arguments (some
//! take eight): a struct per builder would only rename those fields, so
//! `clippy::too_many_arguments` is allowed on them.

use serde_json::Value;

use super::out::{Body, Channel, Draft, Label, Stream};
use super::world::{Account, DAY, DNS_SUFFIX, DOMAIN, HOSTS, REALM, SECOND};
use crate::rng::SplitMix64;

/// One planted step, for the manifest.
#[derive(Debug, Clone)]
pub(crate) struct StepDraft {
    pub t: i64,
    pub host: String,
    pub technique: &'static str,
    pub description: String,
}

/// A running process, as the events about it and its children name it.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub image: String,
    pub pid: u32,
    pub guid: String,
    pub cmd: String,
    pub who: Who,
}

/// Who a process runs as.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    /// Sysmon's `User` (`CORP\dave`, `NT AUTHORITY\SYSTEM`).
    pub user: String,
    pub sid: String,
    /// 4688's subject: the account name (`WS04$` for SYSTEM).
    pub name: String,
    pub domain: String,
    pub logon_id: String,
    /// `Medium`, `High` or `System`.
    pub integrity: &'static str,
}

impl Who {
    pub(crate) fn system(host: usize) -> Self {
        Who {
            user: "NT AUTHORITY\\SYSTEM".into(),
            sid: "S-1-5-18".into(),
            name: format!("{}$", HOSTS[host].name),
            domain: DOMAIN.into(),
            logon_id: "0x3e7".into(),
            integrity: "System",
        }
    }

    pub(crate) fn account(account: &Account, logon_id: &str, integrity: &'static str) -> Self {
        Who {
            user: account.qualified(),
            sid: account.sid.clone(),
            name: account.name.clone(),
            domain: DOMAIN.into(),
            logon_id: logon_id.into(),
            integrity,
        }
    }
}

/// Where a logon comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct From<'a> {
    pub ip: &'a str,
    pub workstation: &'a str,
}

/// The processes every Windows host always runs.
#[derive(Debug, Clone)]
pub(crate) struct HostProcs {
    pub services: Proc,
    pub lsass: Proc,
    pub svchost: Proc,
    pub ccmexec: Proc,
    pub defender: Proc,
}

#[derive(Debug)]
struct HostState {
    next_pid: u32,
    guid_prefix: String,
    procs: Option<HostProcs>,
}

/// A workstation owner's working day, for activities that happen inside
/// it (the intrusion's phishing mail opens in this Outlook).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub host: usize,
    pub person: usize,
    pub day: i64,
    pub start: i64,
    pub end: i64,
    pub logon_id: String,
    pub who: Who,
    pub explorer: Proc,
    pub outlook: Proc,
    pub chrome: Proc,
}

/// Per-host stream indexes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HostStreams {
    pub winlog: Option<usize>,
    pub sysmon: Option<usize>,
    pub auth: Option<usize>,
}

/// The generator.
pub(crate) struct Gen {
    pub start: i64,
    pub days: i64,
    seed: u64,
    pub rng: SplitMix64,
    /// The label every record pushed now gets.
    pub label: Label,
    seq: u64,
    pub streams: Vec<Stream>,
    pub host_streams: Vec<HostStreams>,
    zeek_conn: usize,
    zeek_dns: usize,
    zeek_http: usize,
    hosts: Vec<HostState>,
    /// Planted steps per intrusion.
    pub steps: Vec<Vec<StepDraft>>,
    /// Workstation owners' working days.
    pub sessions: Vec<Session>,
}

/// Known binaries: (file name lowercase, description, product, company,
/// original file name, file version).
const IMAGE_META: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "powershell.exe",
        "Windows PowerShell",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "PowerShell.EXE",
        "10.0.19041.3996 (WinBuild.160101.0800)",
    ),
    (
        "cmd.exe",
        "Windows Command Processor",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "Cmd.Exe",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "conhost.exe",
        "Console Window Host",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "CONHOST.EXE",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "rundll32.exe",
        "Windows host process (Rundll32)",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "RUNDLL32.EXE",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "reg.exe",
        "Registry Console Tool",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "reg.exe",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "schtasks.exe",
        "Task Scheduler Configuration Tool",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "schtasks.exe",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "svchost.exe",
        "Host Process for Windows Services",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "svchost.exe",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "taskhostw.exe",
        "Host Process for Windows Tasks",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "taskhostw.exe",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "wmiprvse.exe",
        "WMI Provider Host",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "Wmiprvse.exe",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "whoami.exe",
        "whoami - displays logged on user information",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "whoami.exe",
        "10.0.19041.1 (WinBuild.160101.0800)",
    ),
    (
        "net.exe",
        "Net Command",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "net.exe",
        "10.0.19041.1 (WinBuild.160101.0800)",
    ),
    (
        "nltest.exe",
        "Microsoft® Logon Server Test Utility",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "nltestrk.exe",
        "10.0.19041.1 (WinBuild.160101.0800)",
    ),
    (
        "setspn.exe",
        "Query or reset the computer's SPN attribute",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "setspn.exe",
        "10.0.19041.1 (WinBuild.160101.0800)",
    ),
    (
        "psexec.exe",
        "Execute processes remotely",
        "Sysinternals PsExec",
        "Sysinternals - www.sysinternals.com",
        "psexec.c",
        "2.43",
    ),
    (
        "psexesvc.exe",
        "PsExec Service",
        "Sysinternals PsExec",
        "Sysinternals - www.sysinternals.com",
        "psexesvc.exe",
        "2.43",
    ),
    (
        "chrome.exe",
        "Google Chrome",
        "Google Chrome",
        "Google LLC",
        "chrome.exe",
        "131.0.6778.86",
    ),
    (
        "outlook.exe",
        "Microsoft Outlook",
        "Microsoft Outlook",
        "Microsoft Corporation",
        "Outlook.exe",
        "16.0.18129.20116",
    ),
    (
        "winword.exe",
        "Microsoft Word",
        "Microsoft Office",
        "Microsoft Corporation",
        "WinWord.exe",
        "16.0.18129.20116",
    ),
    (
        "excel.exe",
        "Microsoft Excel",
        "Microsoft Office",
        "Microsoft Corporation",
        "Excel.exe",
        "16.0.18129.20116",
    ),
    (
        "ms-teams.exe",
        "Microsoft Teams",
        "Microsoft Teams",
        "Microsoft Corporation",
        "ms-teams.exe",
        "24295.605.3225.8804",
    ),
    (
        "onedrive.exe",
        "Microsoft OneDrive",
        "Microsoft OneDrive",
        "Microsoft Corporation",
        "OneDrive.exe",
        "24.211.1020.0001",
    ),
    (
        "msmpeng.exe",
        "Antimalware Service Executable",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "MsMpEng.exe",
        "4.18.24090.11",
    ),
    (
        "ccmexec.exe",
        "CCM Executive",
        "System Center Configuration Manager",
        "Microsoft Corporation",
        "CcmExec.exe",
        "5.0.9128.1007",
    ),
    (
        "explorer.exe",
        "Windows Explorer",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "EXPLORER.EXE",
        "10.0.19041.4355 (WinBuild.160101.0800)",
    ),
    (
        "mmc.exe",
        "Microsoft Management Console",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        "MMC.EXE",
        "10.0.19041.3636 (WinBuild.160101.0800)",
    ),
    (
        "googleupdate.exe",
        "Google Installer",
        "Google Update",
        "Google LLC",
        "GoogleUpdate.exe",
        "1.3.36.372",
    ),
    (
        "w3wp.exe",
        "IIS Worker Process",
        "Internet Information Services",
        "Microsoft Corporation",
        "w3wp.exe",
        "10.0.17763.1 (WinBuild.160101.0800)",
    ),
    (
        "sqlservr.exe",
        "SQL Server Windows NT - 64 Bit",
        "Microsoft SQL Server",
        "Microsoft Corporation",
        "sqlservr.exe",
        "2022.160.4135.4",
    ),
];

/// `(description, product, company, original name, version)` of an image.
fn image_meta(
    image: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    String,
    &'static str,
) {
    let file = image
        .rsplit('\\')
        .next()
        .unwrap_or(image)
        .to_ascii_lowercase();
    match IMAGE_META.iter().find(|m| m.0 == file) {
        Some(&(_, description, product, company, original, version)) => {
            (description, product, company, original.to_owned(), version)
        }
        // Other Windows binaries carry Microsoft's version resource; a
        // binary without one (most third-party tools, every implant here)
        // shows `-`, as Sysmon writes it.
        None if image.to_ascii_lowercase().starts_with("c:\\windows\\") => (
            "Windows host process",
            "Microsoft® Windows® Operating System",
            "Microsoft Corporation",
            image.rsplit('\\').next().unwrap_or(image).to_owned(),
            "10.0.19041.1 (WinBuild.160101.0800)",
        ),
        None => ("-", "-", "-", "-".to_owned(), "-"),
    }
}

/// Deterministic hex of `len` digits derived from `text`: the same binary
/// has the same hashes on every host, as it should.
pub(crate) fn digest_hex(text: &str, len: usize) -> String {
    let mut rng = SplitMix64::seeded(text);
    let mut out = String::with_capacity(len);
    while out.len() < len {
        out.push_str(&format!("{:016X}", rng.next_u64()));
    }
    out.truncate(len);
    out
}

/// Sysmon's `Hashes` value of an image (of its contents: the attackers'
/// binaries get their own through `hash_key`).
pub(crate) fn hashes(hash_key: &str) -> String {
    format!(
        "SHA1={},MD5={},SHA256={},IMPHASH={}",
        digest_hex(&format!("sha1:{hash_key}"), 40),
        digest_hex(&format!("md5:{hash_key}"), 32),
        digest_hex(&format!("sha256:{hash_key}"), 64),
        digest_hex(&format!("imphash:{hash_key}"), 32),
    )
}

/// The SHA256 that [`hashes`] gives `hash_key`, lowercase (as intel feeds
/// write it).
pub(crate) fn sha256_of(hash_key: &str) -> String {
    digest_hex(&format!("sha256:{hash_key}"), 64).to_ascii_lowercase()
}

/// A GUID in braces, lowercase, derived from `text`.
pub(crate) fn guid_from(text: &str) -> String {
    let hex = digest_hex(text, 32).to_ascii_lowercase();
    format!(
        "{{{}-{}-{}-{}-{}}}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn is_local(ip: &str) -> bool {
    ip.starts_with("10.") || ip.starts_with("172.16.") || ip.starts_with("192.168.")
}

fn tf(b: bool) -> String {
    if b { "T" } else { "F" }.to_owned()
}

/// `-` for an absent Zeek value.
fn or_unset(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".to_owned())
}

impl Gen {
    pub(crate) fn new(
        start: i64,
        days: i64,
        seed: u64,
        streams: Vec<Stream>,
        host_streams: Vec<HostStreams>,
        zeek: (usize, usize, usize),
    ) -> Self {
        let hosts = HOSTS
            .iter()
            .map(|h| HostState {
                next_pid: 0,
                guid_prefix: digest_hex(&format!("{seed}:guid:{}", h.name), 8).to_ascii_lowercase(),
                procs: None,
            })
            .collect();
        let mut g = Gen {
            start,
            days,
            seed,
            rng: SplitMix64::seeded(&format!("{seed}")),
            label: Label::Noise,
            seq: 0,
            streams,
            host_streams,
            zeek_conn: zeek.0,
            zeek_dns: zeek.1,
            zeek_http: zeek.2,
            hosts,
            steps: Vec::new(),
            sessions: Vec::new(),
        };
        for (h, host) in HOSTS.iter().enumerate() {
            if host.windows {
                g.boot(h);
            }
        }
        g
    }

    /// A fresh random stream for one activity, so that changing one
    /// activity does not reshuffle every other.
    pub(crate) fn reseed(&mut self, activity: &str) {
        self.rng = SplitMix64::seeded(&format!("{}:{activity}", self.seed));
    }

    pub(crate) fn end(&self) -> i64 {
        self.start + self.days * DAY
    }

    /// Start of day `d` (0-based).
    pub(crate) fn day(&self, d: i64) -> i64 {
        self.start + d * DAY
    }

    /// Whether day `d` is Monday to Friday (the scenario starts on a Monday).
    pub(crate) fn weekday(d: i64) -> bool {
        d.rem_euclid(7) < 5
    }

    /// A random time within `[from, to)`.
    pub(crate) fn between(&mut self, from: i64, to: i64) -> i64 {
        self.rng.range(from, (to - 1).max(from))
    }

    /// Records a planted step of intrusion `intrusion`.
    pub(crate) fn step(
        &mut self,
        intrusion: usize,
        t: i64,
        host: &str,
        technique: &'static str,
        description: impl Into<String>,
    ) {
        while self.steps.len() <= intrusion {
            self.steps.push(Vec::new());
        }
        self.steps[intrusion].push(StepDraft {
            t,
            host: host.to_owned(),
            technique,
            description: description.into(),
        });
    }

    fn push(&mut self, stream: usize, t: i64, body: Body) {
        // Records outside the capture are dropped: the week ends at the
        // end, and nothing was logged before the start.
        if t < self.start || t >= self.end() {
            return;
        }
        self.seq += 1;
        let us = self.rng.below(1000) as u16;
        let draft = Draft {
            t,
            us,
            seq: self.seq,
            label: self.label,
            body,
        };
        self.streams[stream].drafts.push(draft);
    }

    // ------------------------------------------------------------------
    // Processes
    // ------------------------------------------------------------------

    fn new_pid(&mut self, host: usize) -> u32 {
        let step = 4 * (1 + self.rng.below(60) as u32);
        let state = &mut self.hosts[host];
        state.next_pid = (state.next_pid + step) % 60_000;
        1000 + state.next_pid
    }

    fn new_guid(&mut self, host: usize) -> String {
        let prefix = self.hosts[host].guid_prefix.clone();
        format!(
            "{{{prefix}-{:04x}-{:04x}-{:04x}-{:012x}}}",
            self.rng.below(0x10000),
            self.rng.below(0x10000),
            self.rng.below(0x10000),
            self.rng.below(0x1_0000_0000_0000)
        )
    }

    /// A process that exists before the capture starts (no events).
    pub(crate) fn resident(&mut self, host: usize, image: &str, cmd: &str, who: Who) -> Proc {
        Proc {
            image: image.to_owned(),
            pid: self.new_pid(host),
            guid: self.new_guid(host),
            cmd: cmd.to_owned(),
            who,
        }
    }

    fn boot(&mut self, host: usize) {
        let system = Who::system(host);
        let services = self.resident(
            host,
            "C:\\Windows\\System32\\services.exe",
            "C:\\Windows\\system32\\services.exe",
            system.clone(),
        );
        let lsass = self.resident(
            host,
            "C:\\Windows\\System32\\lsass.exe",
            "C:\\Windows\\system32\\lsass.exe",
            system.clone(),
        );
        let svchost = self.resident(
            host,
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k netsvcs -p",
            system.clone(),
        );
        let ccmexec = self.resident(
            host,
            "C:\\Windows\\CCM\\CcmExec.exe",
            "C:\\Windows\\CCM\\CcmExec.exe",
            system.clone(),
        );
        let defender = self.resident(host, "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe", "\"C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe\"", system);
        self.hosts[host].procs = Some(HostProcs {
            services,
            lsass,
            svchost,
            ccmexec,
            defender,
        });
    }

    /// The resident processes of a Windows host.
    ///
    /// # Panics
    /// For a Linux host: callers only ask Windows hosts.
    pub(crate) fn procs(&self, host: usize) -> HostProcs {
        self.hosts[host]
            .procs
            .clone()
            .unwrap_or_else(|| panic!("{} is not a Windows host", HOSTS[host].name))
    }

    /// A process an interactive user's session runs as its shell, started
    /// without events (the logon that starts it is logged by the caller).
    pub(crate) fn shell(&mut self, host: usize, who: Who) -> Proc {
        self.resident(
            host,
            "C:\\Windows\\explorer.exe",
            "C:\\Windows\\Explorer.EXE",
            who,
        )
    }

    // ------------------------------------------------------------------
    // Windows events
    // ------------------------------------------------------------------

    fn win_header(
        host: usize,
        event_id: u32,
        channel: &'static str,
        source_name: &'static str,
    ) -> Vec<(&'static str, Value)> {
        let fqdn = HOSTS[host].fqdn();
        let mut f: Vec<(&'static str, Value)> = Vec::with_capacity(32);
        f.push(("EventID", event_id.into()));
        f.push(("Channel", channel.into()));
        f.push(("Hostname", fqdn.clone().into()));
        f.push(("Computer", fqdn.into()));
        f.push(("SourceName", source_name.into()));
        f
    }

    /// A Security event.
    pub(crate) fn security(
        &mut self,
        host: usize,
        t: i64,
        event_id: u32,
        success: bool,
        task: u32,
        fields: Vec<(&'static str, Value)>,
    ) {
        let Some(stream) = self.host_streams[host].winlog else {
            return;
        };
        let mut f = Self::win_header(
            host,
            event_id,
            "Security",
            "Microsoft-Windows-Security-Auditing",
        );
        f.push((
            "ProviderGuid",
            "{54849625-5478-4994-A5BA-3E3B0328C30D}".into(),
        ));
        f.push((
            "EventType",
            (if success {
                "AUDIT_SUCCESS"
            } else {
                "AUDIT_FAILURE"
            })
            .into(),
        ));
        f.push(("Task", task.into()));
        f.extend(fields);
        self.push(
            stream,
            t,
            Body::Win {
                channel: Channel::Security,
                fields: f,
            },
        );
    }

    /// A System event from `provider`.
    pub(crate) fn system(
        &mut self,
        host: usize,
        t: i64,
        event_id: u32,
        provider: &'static str,
        fields: Vec<(&'static str, Value)>,
    ) {
        let Some(stream) = self.host_streams[host].winlog else {
            return;
        };
        let mut f = Self::win_header(host, event_id, "System", provider);
        f.push(("EventType", "INFO".into()));
        f.push(("Task", 0.into()));
        f.extend(fields);
        self.push(
            stream,
            t,
            Body::Win {
                channel: Channel::System,
                fields: f,
            },
        );
    }

    /// A Sysmon event.
    pub(crate) fn sysmon(
        &mut self,
        host: usize,
        t: i64,
        event_id: u32,
        fields: Vec<(&'static str, Value)>,
    ) {
        let Some(stream) = self.host_streams[host].sysmon else {
            return;
        };
        let mut f = Self::win_header(
            host,
            event_id,
            "Microsoft-Windows-Sysmon/Operational",
            "Microsoft-Windows-Sysmon",
        );
        f.push((
            "ProviderGuid",
            "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}".into(),
        ));
        f.push(("Task", event_id.into()));
        f.push(("RuleName", "-".into()));
        f.extend(fields);
        self.push(
            stream,
            t,
            Body::Win {
                channel: Channel::Sysmon,
                fields: f,
            },
        );
    }

    /// Starts a process: Sysmon 1 and Security 4688. `hash_key` names the
    /// binary's contents (the image path for ordinary binaries).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn_with_hash(
        &mut self,
        host: usize,
        t: i64,
        parent: &Proc,
        image: &str,
        cmd: &str,
        who: &Who,
        hash_key: &str,
    ) -> Proc {
        let child = Proc {
            image: image.to_owned(),
            pid: self.new_pid(host),
            guid: self.new_guid(host),
            cmd: cmd.to_owned(),
            who: who.clone(),
        };
        let (description, product, company, original, version) = image_meta(image);
        let directory = match who.user.split('\\').nth(1) {
            Some(user) if who.integrity != "System" && !who.user.starts_with("NT AUTHORITY") => {
                format!("C:\\Users\\{user}\\")
            }
            _ => "C:\\Windows\\system32\\".to_owned(),
        };
        let logon_guid = guid_from(&format!("{}{}", HOSTS[host].name, who.logon_id));
        self.sysmon(
            host,
            t,
            1,
            vec![
                ("ProcessGuid", child.guid.clone().into()),
                ("ProcessId", child.pid.to_string().into()),
                ("Image", image.into()),
                ("FileVersion", version.into()),
                ("Description", description.into()),
                ("Product", product.into()),
                ("Company", company.into()),
                ("OriginalFileName", original.into()),
                ("CommandLine", cmd.into()),
                ("CurrentDirectory", directory.into()),
                ("User", who.user.clone().into()),
                ("LogonGuid", logon_guid.into()),
                ("LogonId", who.logon_id.clone().into()),
                (
                    "TerminalSessionId",
                    (if who.integrity == "System" { "0" } else { "1" }).into(),
                ),
                ("IntegrityLevel", who.integrity.into()),
                ("Hashes", hashes(hash_key).into()),
                ("ParentProcessGuid", parent.guid.clone().into()),
                ("ParentProcessId", parent.pid.to_string().into()),
                ("ParentImage", parent.image.clone().into()),
                ("ParentCommandLine", parent.cmd.clone().into()),
                ("ParentUser", parent.who.user.clone().into()),
            ],
        );
        let system = who.logon_id == "0x3e7";
        self.security(
            host,
            t,
            4688,
            true,
            13312,
            vec![
                ("SubjectUserSid", who.sid.clone().into()),
                ("SubjectUserName", who.name.clone().into()),
                ("SubjectDomainName", who.domain.clone().into()),
                ("SubjectLogonId", who.logon_id.clone().into()),
                ("NewProcessId", format!("0x{:x}", child.pid).into()),
                ("NewProcessName", image.into()),
                (
                    "TokenElevationType",
                    (if system || who.integrity == "High" {
                        "%%1936"
                    } else {
                        "%%1938"
                    })
                    .into(),
                ),
                ("ProcessId", format!("0x{:x}", parent.pid).into()),
                ("CommandLine", cmd.into()),
                ("TargetUserSid", "S-1-0-0".into()),
                ("TargetUserName", "-".into()),
                ("TargetDomainName", "-".into()),
                ("TargetLogonId", "0x0".into()),
                ("ParentProcessName", parent.image.clone().into()),
                (
                    "MandatoryLabel",
                    (match who.integrity {
                        "System" => "S-1-16-16384",
                        "High" => "S-1-16-12288",
                        _ => "S-1-16-8192",
                    })
                    .into(),
                ),
            ],
        );
        child
    }

    /// [`Gen::spawn_with_hash`] for an ordinary binary.
    pub(crate) fn spawn(
        &mut self,
        host: usize,
        t: i64,
        parent: &Proc,
        image: &str,
        cmd: &str,
        who: &Who,
    ) -> Proc {
        let key = image.to_ascii_lowercase();
        self.spawn_with_hash(host, t, parent, image, cmd, who, &key)
    }

    /// A process ends (Sysmon 5).
    pub(crate) fn exit(&mut self, host: usize, t: i64, p: &Proc) {
        self.sysmon(
            host,
            t,
            5,
            vec![
                ("ProcessGuid", p.guid.clone().into()),
                ("ProcessId", p.pid.to_string().into()),
                ("Image", p.image.clone().into()),
                ("User", p.who.user.clone().into()),
            ],
        );
    }

    /// A file written (Sysmon 11).
    pub(crate) fn file_created(&mut self, host: usize, t: i64, p: &Proc, path: &str) {
        self.sysmon(
            host,
            t,
            11,
            vec![
                ("ProcessGuid", p.guid.clone().into()),
                ("ProcessId", p.pid.to_string().into()),
                ("Image", p.image.clone().into()),
                ("TargetFilename", path.into()),
                ("CreationUtcTime", super::out::sysmon_time(t).into()),
                ("User", p.who.user.clone().into()),
            ],
        );
    }

    /// A registry value set (Sysmon 13).
    pub(crate) fn registry_set(&mut self, host: usize, t: i64, p: &Proc, key: &str, details: &str) {
        self.sysmon(
            host,
            t,
            13,
            vec![
                ("EventType", "SetValue".into()),
                ("ProcessGuid", p.guid.clone().into()),
                ("ProcessId", p.pid.to_string().into()),
                ("Image", p.image.clone().into()),
                ("TargetObject", key.into()),
                ("Details", details.into()),
                ("User", p.who.user.clone().into()),
            ],
        );
    }

    /// One process opens another (Sysmon 10).
    pub(crate) fn process_access(
        &mut self,
        host: usize,
        t: i64,
        source: &Proc,
        target: &Proc,
        access: &str,
        call_trace: &str,
    ) {
        let thread = 1000 + self.rng.below(9000);
        self.sysmon(
            host,
            t,
            10,
            vec![
                ("SourceProcessGUID", source.guid.clone().into()),
                ("SourceProcessId", source.pid.to_string().into()),
                ("SourceThreadId", thread.to_string().into()),
                ("SourceImage", source.image.clone().into()),
                ("TargetProcessGUID", target.guid.clone().into()),
                ("TargetProcessId", target.pid.to_string().into()),
                ("TargetImage", target.image.clone().into()),
                ("GrantedAccess", access.into()),
                ("CallTrace", call_trace.into()),
                ("SourceUser", source.who.user.clone().into()),
                ("TargetUser", target.who.user.clone().into()),
            ],
        );
    }

    /// A named pipe created (17) or connected to (18).
    pub(crate) fn pipe(&mut self, host: usize, t: i64, p: &Proc, event_id: u32, name: &str) {
        self.sysmon(
            host,
            t,
            event_id,
            vec![
                (
                    "EventType",
                    (if event_id == 17 {
                        "CreatePipe"
                    } else {
                        "ConnectPipe"
                    })
                    .into(),
                ),
                ("ProcessGuid", p.guid.clone().into()),
                ("ProcessId", p.pid.to_string().into()),
                ("PipeName", name.into()),
                ("Image", p.image.clone().into()),
                ("User", p.who.user.clone().into()),
            ],
        );
    }

    /// A new logon id.
    pub(crate) fn logon_id(&mut self) -> String {
        format!("0x{:x}", self.rng.range(0x10_0000, 0x3ff_ffff))
    }

    /// A successful logon (4624), its special-privileges logon (4672) for a
    /// privileged account, and the logoff (4634) after `session` if any.
    /// Returns the logon id.
    pub(crate) fn logon(
        &mut self,
        host: usize,
        t: i64,
        who: &Account,
        logon_type: u32,
        from: From<'_>,
        session: Option<i64>,
    ) -> String {
        let logon_id = self.logon_id();
        self.logon_with(host, t, who, logon_type, from, session, &logon_id, None);
        logon_id
    }

    /// [`Gen::logon`] with a given logon id and, for NTLM, the package.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn logon_with(
        &mut self,
        host: usize,
        t: i64,
        who: &Account,
        logon_type: u32,
        from: From<'_>,
        session: Option<i64>,
        logon_id: &str,
        ntlm: Option<bool>,
    ) {
        let network = logon_type == 3;
        let machine_name = format!("{}$", HOSTS[host].name);
        let ntlm = ntlm.unwrap_or(false);
        let (process, process_id, logon_process, package, lm, key_length) = match logon_type {
            3 if ntlm => ("-", "0x0", "NtLmSsp ", "NTLM", "NTLM V2", "128"),
            3 => ("-", "0x0", "Kerberos", "Kerberos", "-", "0"),
            9 => (
                "C:\\Windows\\System32\\svchost.exe",
                "0x4f0",
                "seclogo",
                "Negotiate",
                "-",
                "0",
            ),
            4 => (
                "C:\\Windows\\System32\\svchost.exe",
                "0x4a8",
                "Advapi  ",
                "Negotiate",
                "-",
                "0",
            ),
            5 => (
                "C:\\Windows\\System32\\services.exe",
                "0x2b0",
                "Advapi  ",
                "Negotiate",
                "-",
                "0",
            ),
            _ => (
                "C:\\Windows\\System32\\svchost.exe",
                "0x5cc",
                "User32 ",
                "Negotiate",
                "-",
                "0",
            ),
        };
        let port = if network || logon_type == 10 {
            self.rng.range(49152, 65535).to_string()
        } else {
            "0".to_owned()
        };
        let (subject_sid, subject_name, subject_domain, subject_logon) = if network {
            (
                "S-1-0-0".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "0x0".to_owned(),
            )
        } else {
            (
                "S-1-5-18".to_owned(),
                machine_name,
                DOMAIN.to_owned(),
                "0x3e7".to_owned(),
            )
        };
        let logon_guid = if ntlm {
            "{00000000-0000-0000-0000-000000000000}".to_owned()
        } else {
            guid_from(&format!("{logon_id}{t}"))
        };
        self.security(
            host,
            t,
            4624,
            true,
            12544,
            vec![
                ("SubjectUserSid", subject_sid.into()),
                ("SubjectUserName", subject_name.into()),
                ("SubjectDomainName", subject_domain.into()),
                ("SubjectLogonId", subject_logon.into()),
                ("TargetUserSid", who.sid.clone().into()),
                ("TargetUserName", who.name.clone().into()),
                ("TargetDomainName", DOMAIN.into()),
                ("TargetLogonId", logon_id.into()),
                ("LogonType", logon_type.to_string().into()),
                ("LogonProcessName", logon_process.into()),
                ("AuthenticationPackageName", package.into()),
                ("WorkstationName", from.workstation.into()),
                ("LogonGuid", logon_guid.into()),
                ("TransmittedServices", "-".into()),
                ("LmPackageName", lm.into()),
                ("KeyLength", key_length.into()),
                ("ProcessId", process_id.into()),
                ("ProcessName", process.into()),
                ("IpAddress", from.ip.into()),
                ("IpPort", port.into()),
                ("ImpersonationLevel", "%%1833".into()),
                ("RestrictedAdminMode", "-".into()),
                ("TargetOutboundUserName", "-".into()),
                ("TargetOutboundDomainName", "-".into()),
                ("VirtualAccount", "%%1843".into()),
                ("TargetLinkedLogonId", "0x0".into()),
                (
                    "ElevatedToken",
                    (if who.privileged { "%%1842" } else { "%%1843" }).into(),
                ),
            ],
        );
        if who.privileged {
            self.security(host, t, 4672, true, 12548, vec![
                ("SubjectUserSid", who.sid.clone().into()),
                ("SubjectUserName", who.name.clone().into()),
                ("SubjectDomainName", DOMAIN.into()),
                ("SubjectLogonId", logon_id.into()),
                ("PrivilegeList", "SeSecurityPrivilege\n\t\t\tSeBackupPrivilege\n\t\t\tSeRestorePrivilege\n\t\t\tSeTakeOwnershipPrivilege\n\t\t\tSeDebugPrivilege\n\t\t\tSeSystemEnvironmentPrivilege\n\t\t\tSeLoadDriverPrivilege\n\t\t\tSeImpersonatePrivilege\n\t\t\tSeDelegateSessionUserImpersonatePrivilege".into()),
            ]);
        }
        if let Some(session) = session {
            self.security(
                host,
                t + session,
                4634,
                true,
                12545,
                vec![
                    ("TargetUserSid", who.sid.clone().into()),
                    ("TargetUserName", who.name.clone().into()),
                    ("TargetDomainName", DOMAIN.into()),
                    ("TargetLogonId", logon_id.into()),
                    ("LogonType", logon_type.to_string().into()),
                ],
            );
        }
    }

    /// A failed logon (4625) with a wrong password (or an unknown user).
    pub(crate) fn failed_logon(
        &mut self,
        host: usize,
        t: i64,
        user: &str,
        logon_type: u32,
        from: From<'_>,
        unknown_user: bool,
    ) {
        let network = logon_type == 3;
        let port = if network {
            self.rng.range(49152, 65535).to_string()
        } else {
            "0".to_owned()
        };
        let (sid, name, domain, lid) = if network {
            (
                "S-1-0-0".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "0x0".to_owned(),
            )
        } else {
            (
                "S-1-5-18".to_owned(),
                format!("{}$", HOSTS[host].name),
                DOMAIN.to_owned(),
                "0x3e7".to_owned(),
            )
        };
        let (process, logon_process, package) = if network {
            ("-", "NtLmSsp ", "NTLM")
        } else {
            ("C:\\Windows\\System32\\svchost.exe", "User32 ", "Negotiate")
        };
        self.security(
            host,
            t,
            4625,
            false,
            12544,
            vec![
                ("SubjectUserSid", sid.into()),
                ("SubjectUserName", name.into()),
                ("SubjectDomainName", domain.into()),
                ("SubjectLogonId", lid.into()),
                ("TargetUserSid", "S-1-0-0".into()),
                ("TargetUserName", user.into()),
                // What the client sent: the domain, except for the names a
                // guesser makes up.
                (
                    "TargetDomainName",
                    (if unknown_user { "" } else { DOMAIN }).into(),
                ),
                ("Status", "0xc000006d".into()),
                ("FailureReason", "%%2313".into()),
                (
                    "SubStatus",
                    (if unknown_user {
                        "0xc0000064"
                    } else {
                        "0xc000006a"
                    })
                    .into(),
                ),
                ("LogonType", logon_type.to_string().into()),
                ("LogonProcessName", logon_process.into()),
                ("AuthenticationPackageName", package.into()),
                ("WorkstationName", from.workstation.into()),
                ("TransmittedServices", "-".into()),
                ("LmPackageName", "-".into()),
                ("KeyLength", "0".into()),
                ("ProcessId", (if network { "0x0" } else { "0x5cc" }).into()),
                ("ProcessName", process.into()),
                ("IpAddress", from.ip.into()),
                ("IpPort", port.into()),
            ],
        );
    }

    /// A network share accessed: 5140, or with `target` a 5145 detailed
    /// check for a file or pipe in it. `write` asks for write access.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn share_access(
        &mut self,
        host: usize,
        t: i64,
        who: &Account,
        logon_id: &str,
        ip: &str,
        share: &str,
        target: Option<&str>,
        write: bool,
    ) {
        let share_name = format!("\\\\*\\{share}");
        let local_path = match share {
            "IPC$" => String::new(),
            "ADMIN$" => "\\??\\C:\\Windows".to_owned(),
            "C$" => "\\??\\C:\\".to_owned(),
            "SYSVOL" => "\\??\\C:\\Windows\\SYSVOL\\sysvol".to_owned(),
            "NETLOGON" => format!("\\??\\C:\\Windows\\SYSVOL\\sysvol\\{DNS_SUFFIX}\\SCRIPTS"),
            other => format!("\\??\\D:\\Shares\\{other}"),
        };
        let port = self.rng.range(49152, 65535).to_string();
        let mut fields = vec![
            ("SubjectUserSid", who.sid.clone().into()),
            ("SubjectUserName", who.name.clone().into()),
            ("SubjectDomainName", DOMAIN.into()),
            ("SubjectLogonId", logon_id.into()),
            ("ObjectType", "File".into()),
            ("IpAddress", ip.into()),
            ("IpPort", port.into()),
            ("ShareName", share_name.into()),
            ("ShareLocalPath", local_path.into()),
        ];
        match target {
            None => {
                fields.push(("AccessMask", "0x1".into()));
                fields.push(("AccessList", "%%4416\n\t\t\t\t".into()));
                self.security(host, t, 5140, true, 12808, fields);
            }
            Some(target) => {
                fields.push(("RelativeTargetName", target.into()));
                if write {
                    fields.push(("AccessMask", "0x12019f".into()));
                    fields.push(("AccessList", "%%1538\n\t\t\t\t%%1541\n\t\t\t\t%%4416\n\t\t\t\t%%4417\n\t\t\t\t%%4418\n\t\t\t\t%%4419\n\t\t\t\t%%4420\n\t\t\t\t%%4423\n\t\t\t\t%%4424\n\t\t\t\t".into()));
                    fields.push(("AccessReason", "-".into()));
                } else {
                    fields.push(("AccessMask", "0x120089".into()));
                    fields.push(("AccessList", "%%1538\n\t\t\t\t%%1541\n\t\t\t\t%%4416\n\t\t\t\t%%4419\n\t\t\t\t%%4423\n\t\t\t\t".into()));
                    fields.push(("AccessReason", "-".into()));
                }
                self.security(host, t, 5145, true, 12811, fields);
            }
        }
    }

    /// A service installed: System 7045 and Security 4697.
    pub(crate) fn service_installed(
        &mut self,
        host: usize,
        t: i64,
        who: &Account,
        logon_id: &str,
        name: &str,
        image: &str,
    ) {
        self.system(
            host,
            t,
            7045,
            "Service Control Manager",
            vec![
                ("ServiceName", name.into()),
                ("ImagePath", image.into()),
                ("ServiceType", "user mode service".into()),
                ("StartType", "demand start".into()),
                ("AccountName", "LocalSystem".into()),
            ],
        );
        self.security(
            host,
            t,
            4697,
            true,
            12289,
            vec![
                ("SubjectUserSid", who.sid.clone().into()),
                ("SubjectUserName", who.name.clone().into()),
                ("SubjectDomainName", DOMAIN.into()),
                ("SubjectLogonId", logon_id.into()),
                ("ServiceName", name.into()),
                ("ServiceFileName", image.into()),
                ("ServiceType", "0x10".into()),
                ("ServiceStartType", "3".into()),
                ("ServiceAccount", "LocalSystem".into()),
            ],
        );
    }

    /// A service changed state (System 7036).
    pub(crate) fn service_state(&mut self, host: usize, t: i64, display_name: &str, running: bool) {
        self.system(
            host,
            t,
            7036,
            "Service Control Manager",
            vec![
                ("param1", display_name.into()),
                (
                    "param2",
                    (if running { "running" } else { "stopped" }).into(),
                ),
            ],
        );
    }

    /// A Kerberos TGT issued (4768) on a domain controller.
    pub(crate) fn tgt(&mut self, dc: usize, t: i64, who: &Account, client_ip: &str) {
        let port = self.rng.range(49152, 65535).to_string();
        self.security(
            dc,
            t,
            4768,
            true,
            14339,
            vec![
                ("TargetUserName", who.name.clone().into()),
                ("TargetDomainName", REALM.into()),
                ("TargetSid", who.sid.clone().into()),
                ("ServiceName", "krbtgt".into()),
                (
                    "ServiceSid",
                    format!("{}-502", super::world::DOMAIN_SID).into(),
                ),
                ("TicketOptions", "0x40810010".into()),
                ("Status", "0x0".into()),
                ("TicketEncryptionType", "0x12".into()),
                ("PreAuthType", "2".into()),
                ("IpAddress", format!("::ffff:{client_ip}").into()),
                ("IpPort", port.into()),
                ("CertIssuerName", "".into()),
                ("CertSerialNumber", "".into()),
                ("CertThumbprint", "".into()),
            ],
        );
    }

    /// A Kerberos service ticket issued (4769) on a domain controller, with
    /// encryption type `encryption` (`0x12` AES256, `0x17` RC4).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tgs(
        &mut self,
        dc: usize,
        t: i64,
        who: &Account,
        service: &str,
        service_sid: &str,
        client_ip: &str,
        encryption: &str,
    ) {
        let port = self.rng.range(49152, 65535).to_string();
        let logon_guid = guid_from(&format!("lg{}{t}", who.name));
        self.security(
            dc,
            t,
            4769,
            true,
            14337,
            vec![
                ("TargetUserName", format!("{}@{REALM}", who.name).into()),
                ("TargetDomainName", REALM.into()),
                ("ServiceName", service.into()),
                ("ServiceSid", service_sid.into()),
                ("TicketOptions", "0x40810000".into()),
                ("TicketEncryptionType", encryption.into()),
                ("IpAddress", format!("::ffff:{client_ip}").into()),
                ("IpPort", port.into()),
                ("Status", "0x0".into()),
                ("LogonGuid", logon_guid.into()),
                ("TransmittedServices", "-".into()),
            ],
        );
    }

    /// Kerberos pre-authentication failed (4771): a mistyped password.
    pub(crate) fn preauth_failed(&mut self, dc: usize, t: i64, who: &Account, client_ip: &str) {
        let port = self.rng.range(49152, 65535).to_string();
        self.security(
            dc,
            t,
            4771,
            false,
            14339,
            vec![
                ("TargetUserName", who.name.clone().into()),
                ("TargetSid", who.sid.clone().into()),
                ("ServiceName", format!("krbtgt/{REALM}").into()),
                ("TicketOptions", "0x40810010".into()),
                ("Status", "0x18".into()),
                ("PreAuthType", "2".into()),
                ("IpAddress", format!("::ffff:{client_ip}").into()),
                ("IpPort", port.into()),
            ],
        );
    }

    /// A workstation locked (4800) or unlocked (4801).
    pub(crate) fn lock(
        &mut self,
        host: usize,
        t: i64,
        who: &Account,
        logon_id: &str,
        locked: bool,
    ) {
        self.security(
            host,
            t,
            if locked { 4800 } else { 4801 },
            true,
            12551,
            vec![
                ("TargetUserSid", who.sid.clone().into()),
                ("TargetUserName", who.name.clone().into()),
                ("TargetDomainName", DOMAIN.into()),
                ("TargetLogonId", logon_id.into()),
                ("SessionId", "1".into()),
            ],
        );
    }

    // ------------------------------------------------------------------
    // Network: Sysmon 3 / 22 and Zeek
    // ------------------------------------------------------------------

    /// An outbound TCP connection from a process on a Windows host: Sysmon 3
    /// and, with `zeek` set, the Zeek conn row. Returns the Zeek uid.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn connect(
        &mut self,
        host: usize,
        t: i64,
        p: &Proc,
        dst_ip: &str,
        dst_port: u16,
        dst_name: Option<&str>,
        zeek: Option<(&str, u64, u64, i64)>,
    ) -> Option<String> {
        let src_port = self.rng.range(49152, 65535) as u16;
        let port_name = match dst_port {
            443 => "https",
            80 => "http",
            445 => "microsoft-ds",
            53 => "domain",
            3389 => "ms-wbt-server",
            _ => "-",
        };
        self.sysmon(
            host,
            t,
            3,
            vec![
                ("ProcessGuid", p.guid.clone().into()),
                ("ProcessId", p.pid.to_string().into()),
                ("Image", p.image.clone().into()),
                ("User", p.who.user.clone().into()),
                ("Protocol", "tcp".into()),
                ("Initiated", "true".into()),
                ("SourceIsIpv6", "false".into()),
                ("SourceIp", HOSTS[host].ip.into()),
                ("SourceHostname", HOSTS[host].fqdn().into()),
                ("SourcePort", src_port.to_string().into()),
                ("SourcePortName", "-".into()),
                ("DestinationIsIpv6", "false".into()),
                ("DestinationIp", dst_ip.into()),
                ("DestinationHostname", dst_name.unwrap_or("-").into()),
                ("DestinationPort", dst_port.to_string().into()),
                ("DestinationPortName", port_name.into()),
            ],
        );
        zeek.map(|(service, out, inn, dur)| {
            self.zconn_port(
                t,
                HOSTS[host].ip,
                src_port,
                dst_ip,
                dst_port,
                "tcp",
                service,
                out,
                inn,
                dur,
                "SF",
            )
        })
    }

    /// A DNS lookup by a process on a Windows host (Sysmon 22) and the
    /// query to the domain controller the sensor sees (Zeek dns + conn).
    pub(crate) fn lookup(
        &mut self,
        host: usize,
        t: i64,
        p: &Proc,
        name: &str,
        answer: Option<&str>,
        zeek: bool,
    ) {
        let results = match answer {
            Some(ip) => format!("::ffff:{ip};"),
            None => "-".to_owned(),
        };
        self.sysmon(
            host,
            t,
            22,
            vec![
                ("ProcessGuid", p.guid.clone().into()),
                ("ProcessId", p.pid.to_string().into()),
                ("QueryName", name.into()),
                (
                    "QueryStatus",
                    (if answer.is_some() { "0" } else { "9003" }).into(),
                ),
                ("QueryResults", results.into()),
                ("Image", p.image.clone().into()),
                ("User", p.who.user.clone().into()),
            ],
        );
        if zeek {
            let resolver = if self.rng.percent(70) {
                "10.10.1.10"
            } else {
                "10.10.1.11"
            };
            self.zdns(
                t,
                HOSTS[host].ip,
                resolver,
                name,
                "A",
                answer.map(str::to_owned),
            );
        }
    }

    /// A Zeek conn row; returns its uid.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn zconn(
        &mut self,
        t: i64,
        orig: &str,
        resp: &str,
        resp_port: u16,
        proto: &str,
        service: &str,
        orig_bytes: u64,
        resp_bytes: u64,
        duration_ms: i64,
        state: &str,
    ) -> String {
        let orig_port = self.rng.range(49152, 65535) as u16;
        self.zconn_port(
            t,
            orig,
            orig_port,
            resp,
            resp_port,
            proto,
            service,
            orig_bytes,
            resp_bytes,
            duration_ms,
            state,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn zconn_port(
        &mut self,
        t: i64,
        orig: &str,
        orig_port: u16,
        resp: &str,
        resp_port: u16,
        proto: &str,
        service: &str,
        orig_bytes: u64,
        resp_bytes: u64,
        duration_ms: i64,
        state: &str,
    ) -> String {
        let uid = self.zeek_uid('C');
        let (history, orig_pkts, resp_pkts) = match (proto, state) {
            ("udp", _) => (
                "Dd".to_owned(),
                1 + orig_bytes / 1400,
                1 + resp_bytes / 1400,
            ),
            (_, "SF") => (
                "ShADadFf".to_owned(),
                4 + orig_bytes / 1400,
                3 + resp_bytes / 1400,
            ),
            (_, "REJ") => ("Sr".to_owned(), 1, 1),
            (_, "S0") => ("S".to_owned(), 1, 0),
            (_, "RSTO") => (
                "ShADadR".to_owned(),
                4 + orig_bytes / 1400,
                3 + resp_bytes / 1400,
            ),
            _ => ("ShADad".to_owned(), 3, 2),
        };
        let connected = matches!(state, "SF" | "RSTO" | "S1");
        let dur = if connected || proto == "udp" {
            let ms = duration_ms.max(1);
            format!(
                "{}.{:06}",
                ms / 1000,
                (ms % 1000) * 1000 + self.rng.below(1000) as i64
            )
        } else {
            "-".to_owned()
        };
        let header = if proto == "udp" { 28 } else { 40 };
        let columns = vec![
            uid.clone(),
            orig.to_owned(),
            orig_port.to_string(),
            resp.to_owned(),
            resp_port.to_string(),
            proto.to_owned(),
            if service.is_empty() {
                "-".to_owned()
            } else {
                service.to_owned()
            },
            dur,
            if connected || proto == "udp" {
                orig_bytes.to_string()
            } else {
                "-".to_owned()
            },
            if connected || proto == "udp" {
                resp_bytes.to_string()
            } else {
                "-".to_owned()
            },
            state.to_owned(),
            tf(is_local(orig)),
            tf(is_local(resp)),
            "0".to_owned(),
            history,
            orig_pkts.to_string(),
            (orig_bytes + orig_pkts * header).to_string(),
            resp_pkts.to_string(),
            (resp_bytes + resp_pkts * header).to_string(),
            "-".to_owned(),
        ];
        let stream = self.zeek_conn;
        self.push(stream, t, Body::Zeek(columns));
        uid
    }

    /// A DNS query and its answer (Zeek dns and conn).
    pub(crate) fn zdns(
        &mut self,
        t: i64,
        client: &str,
        server: &str,
        query: &str,
        qtype: &str,
        answer: Option<String>,
    ) {
        let resp_len = 60 + query.len() as u64 + if answer.is_some() { 16 } else { 0 };
        let orig_port = self.rng.range(49152, 65535) as u16;
        let rtt_ms = 2 + self.rng.below(30) as i64;
        let uid = self.zconn_port(
            t,
            client,
            orig_port,
            server,
            53,
            "udp",
            "dns",
            30 + query.len() as u64,
            resp_len,
            rtt_ms,
            "SF",
        );
        let qtype_code = match qtype {
            "A" => "1",
            "TXT" => "16",
            "AAAA" => "28",
            "PTR" => "12",
            "SRV" => "33",
            _ => "1",
        };
        let (rcode, rcode_name) = if answer.is_some() || qtype == "TXT" {
            ("0", "NOERROR")
        } else {
            ("3", "NXDOMAIN")
        };
        let rtt = format!("0.{:06}", rtt_ms * 1000 - self.rng.below(900) as i64);
        let trans_id = self.rng.below(65536).to_string();
        let ttl = if answer.is_some() {
            format!("{}.000000", 60 + self.rng.below(3540))
        } else {
            "-".to_owned()
        };
        let columns = vec![
            uid,
            client.to_owned(),
            orig_port.to_string(),
            server.to_owned(),
            "53".to_owned(),
            "udp".to_owned(),
            trans_id,
            rtt,
            query.to_owned(),
            "1".to_owned(),
            "C_INTERNET".to_owned(),
            qtype_code.to_owned(),
            qtype.to_owned(),
            rcode.to_owned(),
            rcode_name.to_owned(),
            "F".to_owned(),
            "F".to_owned(),
            "T".to_owned(),
            "T".to_owned(),
            "0".to_owned(),
            or_unset(answer),
            ttl,
            "F".to_owned(),
        ];
        let stream = self.zeek_dns;
        self.push(stream, t, Body::Zeek(columns));
    }

    /// A plain-HTTP request (Zeek http and conn).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn zhttp(
        &mut self,
        t: i64,
        client: &str,
        server: &str,
        port: u16,
        method: &str,
        host: &str,
        uri: &str,
        user_agent: Option<&str>,
        status: u16,
        response_len: u64,
        mime: Option<&str>,
    ) {
        let duration = 80 + self.rng.below(900) as i64;
        let orig_port = self.rng.range(49152, 65535) as u16;
        let uid = self.zconn_port(
            t,
            client,
            orig_port,
            server,
            port,
            "tcp",
            "http",
            300 + uri.len() as u64,
            response_len + 250,
            duration,
            "SF",
        );
        let status_msg = match status {
            200 => "OK",
            204 => "No Content",
            301 => "Moved Permanently",
            302 => "Found",
            304 => "Not Modified",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "-",
        };
        let fuid = if response_len > 0 {
            self.zeek_uid('F')
        } else {
            "-".to_owned()
        };
        let columns = vec![
            uid,
            client.to_owned(),
            orig_port.to_string(),
            server.to_owned(),
            port.to_string(),
            "1".to_owned(),
            method.to_owned(),
            host.to_owned(),
            uri.to_owned(),
            "-".to_owned(),
            "1.1".to_owned(),
            user_agent.unwrap_or("-").to_owned(),
            "-".to_owned(),
            "0".to_owned(),
            response_len.to_string(),
            status.to_string(),
            status_msg.to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "(empty)".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            fuid,
            "-".to_owned(),
            mime.unwrap_or("-").to_owned(),
        ];
        let stream = self.zeek_http;
        self.push(stream, t, Body::Zeek(columns));
    }

    /// A Zeek uid: a letter and 17 base-62 characters.
    fn zeek_uid(&mut self, first: char) -> String {
        const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut uid = String::with_capacity(18);
        uid.push(first);
        for _ in 0..17 {
            uid.push(CHARS[self.rng.below(62) as usize] as char);
        }
        uid
    }

    // ------------------------------------------------------------------
    // Linux
    // ------------------------------------------------------------------

    /// An auth.log line on a Linux host.
    pub(crate) fn syslog(
        &mut self,
        host: usize,
        t: i64,
        program: &'static str,
        pid: u32,
        message: impl Into<String>,
    ) {
        let Some(stream) = self.host_streams[host].auth else {
            return;
        };
        self.push(
            stream,
            t,
            Body::Syslog {
                program,
                pid,
                message: message.into(),
            },
        );
    }

    /// A process id on a Linux host.
    pub(crate) fn linux_pid(&mut self) -> u32 {
        1000 + self.rng.below(3_000_000) as u32
    }

    /// Milliseconds of human reaction: a few seconds.
    pub(crate) fn pause(&mut self) -> i64 {
        self.rng.range(2 * SECOND, 40 * SECOND)
    }
}
