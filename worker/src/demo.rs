//! Demo data: Windows Security logs with planted attacks among benign noise.
//!
//! `quarry dev` gives each worker a few shards of realistic-looking Windows
//! Security events for 2026-11-20, 08:00 to 14:00 UTC, in the flat "mordor"
//! style (`EventID`, `TargetUserName`, `IpAddress`, `@timestamp`, …). The noise
//! is what a small domain produces: Kerberos network logons, interactive
//! sessions and unlocks, logoffs, process creations, special-privilege logons,
//! and a few isolated mistyped passwords (at most two failures per account and
//! per source on a shard, so no benign pattern looks like guessing). Into it
//! the attacks listed in [`PLANTED`] are planted, so the demo and the tests can
//! check a hunt's findings against ground truth.
//!
//! Generation is deterministic: every shard has its own small PRNG
//! (splitmix64) seeded from the shard name, so the same shard holds the same
//! events on every machine and run, whichever worker generates it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::event::format_rfc3339_ms;
use crate::rng::SplitMix64;
use crate::shard::{ShardError, ShardMeta, ShardStore};

/// Start of the demo window: 2026-11-20T08:00:00Z, in ms since the epoch.
pub const DEMO_START_MS: i64 = 1_795_161_600_000;
/// Length of the demo window: six hours.
pub const DEMO_SPAN_MS: i64 = 6 * HOUR;
/// The demo Active Directory domain (NetBIOS name).
pub const DEMO_DOMAIN: &str = "CORP";

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DOMAIN_SID: &str = "S-1-5-21-3623811015-3361044348-30300820";
const DNS_SUFFIX: &str = "corp.local";

/// An attack planted in the demo data: repeated failed logons against one
/// account from one source, possibly followed by a successful logon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlantedAttack {
    /// Shard holding the attack.
    pub shard: &'static str,
    /// Short name of the attacked host (the shard's `host` label).
    pub host: &'static str,
    /// The targeted account (`TargetUserName`).
    pub account: &'static str,
    /// The attacker's address (`IpAddress`).
    pub source_ip: &'static str,
    /// The attacker's `WorkstationName`.
    pub source_workstation: &'static str,
    /// Number of failed logons (EventID 4625).
    pub failures: usize,
    /// Whether a successful logon (EventID 4624) from the same source follows.
    pub succeeded: bool,
    /// `LogonType` of that successful logon.
    pub success_logon_type: Option<u32>,
    /// Time of the first failure, ms since the epoch (UTC).
    pub first_failure_ms: i64,
    /// Time from the first to the last failure, ms.
    pub failure_span_ms: i64,
    /// MITRE ATT&CK technique.
    pub technique: &'static str,
}

/// The ground truth: every attack planted in the demo shards.
pub const PLANTED: &[PlantedAttack] = &[
    // Brute force against a privileged service account, which succeeds.
    PlantedAttack {
        shard: "win-dc01-security",
        host: "DC01",
        account: "svc_backup",
        source_ip: "203.0.113.66",
        source_workstation: "KALI",
        failures: 14,
        succeeded: true,
        success_logon_type: Some(3),
        first_failure_ms: DEMO_START_MS + 2 * HOUR + 41 * MINUTE + 13 * SECOND,
        failure_span_ms: 2 * MINUTE + 45 * SECOND,
        technique: "T1110.001",
    },
    // Password guessing against a user over RDP, which succeeds.
    PlantedAttack {
        shard: "win-ws02-security",
        host: "WS02",
        account: "alice",
        source_ip: "198.51.100.23",
        source_workstation: "DESKTOP-7QX2LBA",
        failures: 7,
        succeeded: true,
        success_logon_type: Some(10),
        first_failure_ms: DEMO_START_MS + 4 * HOUR + 17 * MINUTE + 40 * SECOND,
        failure_span_ms: MINUTE + 45 * SECOND,
        technique: "T1110.001",
    },
    // Spraying the built-in administrator, which never succeeds.
    PlantedAttack {
        shard: "win-srv01-security",
        host: "SRV01",
        account: "administrator",
        source_ip: "192.0.2.50",
        source_workstation: "WIN-SPR4Y",
        failures: 6,
        succeeded: false,
        success_logon_type: None,
        first_failure_ms: DEMO_START_MS + HOUR + 5 * MINUTE + 2 * SECOND,
        failure_span_ms: 2 * MINUTE + 30 * SECOND,
        technique: "T1110.003",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    DomainController,
    /// A workstation and the index in [`PEOPLE`] of its owner.
    Workstation(usize),
    Server,
}

#[derive(Debug)]
struct DemoHost {
    shard: &'static str,
    host: &'static str,
    /// RID of the host's computer account.
    machine_rid: u32,
    worker: usize,
    role: Role,
    /// Rough number of events to generate.
    target_events: usize,
}

const HOSTS: &[DemoHost] = &[
    DemoHost {
        shard: "win-dc01-security",
        host: "DC01",
        machine_rid: 1000,
        worker: 0,
        role: Role::DomainController,
        target_events: 3600,
    },
    DemoHost {
        shard: "win-ws01-security",
        host: "WS01",
        machine_rid: 1205,
        worker: 0,
        role: Role::Workstation(1),
        target_events: 2400,
    },
    DemoHost {
        shard: "win-ws02-security",
        host: "WS02",
        machine_rid: 1204,
        worker: 1,
        role: Role::Workstation(0),
        target_events: 2400,
    },
    DemoHost {
        shard: "win-srv01-security",
        host: "SRV01",
        machine_rid: 1150,
        worker: 1,
        role: Role::Server,
        target_events: 3000,
    },
];

/// A domain user and the workstation they use.
struct Person {
    name: &'static str,
    workstation: &'static str,
    ip: &'static str,
    rid: u32,
    admin: bool,
}

const PEOPLE: &[Person] = &[
    Person {
        name: "alice",
        workstation: "WS02",
        ip: "10.10.20.12",
        rid: 1104,
        admin: false,
    },
    Person {
        name: "bob",
        workstation: "WS01",
        ip: "10.10.20.11",
        rid: 1105,
        admin: false,
    },
    Person {
        name: "carol",
        workstation: "WS03",
        ip: "10.10.20.13",
        rid: 1106,
        admin: false,
    },
    Person {
        name: "dave",
        workstation: "WS04",
        ip: "10.10.20.14",
        rid: 1107,
        admin: false,
    },
    Person {
        name: "erin",
        workstation: "WS05",
        ip: "10.10.20.15",
        rid: 1108,
        admin: false,
    },
    Person {
        name: "frank",
        workstation: "WS06",
        ip: "10.10.20.16",
        rid: 1109,
        admin: true,
    },
    Person {
        name: "grace",
        workstation: "WS07",
        ip: "10.10.20.17",
        rid: 1110,
        admin: false,
    },
    Person {
        name: "heidi",
        workstation: "WS08",
        ip: "10.10.20.18",
        rid: 1111,
        admin: false,
    },
    Person {
        name: "ivan",
        workstation: "WS09",
        ip: "10.10.20.19",
        rid: 1112,
        admin: false,
    },
    Person {
        name: "judy",
        workstation: "WS10",
        ip: "10.10.20.20",
        rid: 1113,
        admin: false,
    },
];

/// Service accounts: (name, host, ip, rid, privileged).
const SERVICES: &[(&str, &str, &str, u32, bool)] = &[
    ("svc_backup", "BKP01", "10.10.5.20", 1301, true),
    ("svc_sql", "SQL01", "10.10.5.21", 1302, false),
    ("svc_web", "WEB01", "10.10.5.22", 1303, false),
];

const USER_APPS: &[(&str, &str)] = &[
    (
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\"",
    ),
    (
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
        "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE\"",
    ),
    (
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
        "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE\" /dde",
    ),
    (
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
        "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE\" /n",
    ),
    (
        "C:\\Users\\Public\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe",
        "\"Teams.exe\" --system-initiated",
    ),
    (
        "C:\\Windows\\System32\\notepad.exe",
        "\"C:\\Windows\\System32\\notepad.exe\"",
    ),
    (
        "C:\\Windows\\explorer.exe",
        "C:\\Windows\\explorer.exe /factory,{75dff2b7-6936-4c06-a8bb-676a7b00b24b}",
    ),
    (
        "C:\\Windows\\System32\\cmd.exe",
        "\"C:\\Windows\\System32\\cmd.exe\"",
    ),
];

const SYSTEM_PROCESSES: &[(&str, &str, &str)] = &[
    (
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\System32\\services.exe",
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p",
    ),
    (
        "C:\\Windows\\System32\\taskhostw.exe",
        "C:\\Windows\\System32\\svchost.exe",
        "taskhostw.exe",
    ),
    (
        "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\wbem\\wmiprvse.exe -Embedding",
    ),
    (
        "C:\\Windows\\System32\\conhost.exe",
        "C:\\Windows\\System32\\svchost.exe",
        "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
    ),
    (
        "C:\\Windows\\System32\\backgroundTaskHost.exe",
        "C:\\Windows\\System32\\svchost.exe",
        "\"C:\\Windows\\system32\\backgroundTaskHost.exe\" -ServerName:BackgroundTaskHost.WebAccountProvider",
    ),
    (
        "C:\\Windows\\System32\\SearchProtocolHost.exe",
        "C:\\Windows\\System32\\SearchIndexer.exe",
        "\"C:\\Windows\\system32\\SearchProtocolHost.exe\" Global\\UsGthrFltPipeMssGthrPipe1",
    ),
    (
        "C:\\Windows\\System32\\gpupdate.exe",
        "C:\\Windows\\System32\\svchost.exe",
        "gpupdate.exe /target:computer",
    ),
];

const ADMIN_TOOLS: &[(&str, &str)] = &[
    (
        "C:\\Windows\\System32\\mmc.exe",
        "\"C:\\Windows\\system32\\mmc.exe\" \"C:\\Windows\\system32\\dsa.msc\"",
    ),
    (
        "C:\\Windows\\System32\\mmc.exe",
        "\"C:\\Windows\\system32\\mmc.exe\" \"C:\\Windows\\system32\\services.msc\"",
    ),
    (
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -NoProfile -Command Get-ADUser -Filter * -SearchBase \"OU=Staff,DC=corp,DC=local\"",
    ),
    (
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -NoProfile -Command Get-Service | Where-Object Status -eq Stopped",
    ),
    (
        "C:\\Windows\\System32\\eventvwr.exe",
        "\"C:\\Windows\\system32\\eventvwr.exe\"",
    ),
];

const PRIVILEGES_ADMIN: &str = "SeSecurityPrivilege\r\n\t\t\tSeBackupPrivilege\r\n\t\t\tSeRestorePrivilege\r\n\t\t\tSeTakeOwnershipPrivilege\r\n\t\t\tSeDebugPrivilege\r\n\t\t\tSeSystemEnvironmentPrivilege\r\n\t\t\tSeLoadDriverPrivilege\r\n\t\t\tSeImpersonatePrivilege";
const PRIVILEGES_BACKUP: &str = "SeBackupPrivilege\r\n\t\t\tSeRestorePrivilege";

/// Names of the demo shards that worker `worker_index` holds: worker 0 holds
/// `win-dc01-security` and `win-ws01-security`, worker 1 `win-ws02-security`
/// and `win-srv01-security`; other workers hold none.
pub fn demo_shard_names(worker_index: usize) -> Vec<&'static str> {
    HOSTS
        .iter()
        .filter(|h| h.worker == worker_index)
        .map(|h| h.shard)
        .collect()
}

/// Creates the demo shards of worker `worker_index` in `store` (see
/// [`demo_shard_names`]) and returns their metadata.
///
/// A shard that already exists is kept as it is, so restarting `quarry dev`
/// on the same data directory keeps its data.
///
/// # Errors
///
/// Any [`ShardError`] of [`ShardStore::append`], for example when the
/// disk fails or a damaged directory holds a demo shard's name.
pub fn generate_demo_shards(
    store: &ShardStore,
    worker_index: usize,
) -> Result<Vec<ShardMeta>, ShardError> {
    let mut metas = Vec::new();
    for host in HOSTS.iter().filter(|h| h.worker == worker_index) {
        if let Some(meta) = store.get(host.shard) {
            metas.push(meta);
            continue;
        }
        let records = host_events(host).into_iter().map(Ok);
        // A damaged directory holding the name is an error
        // (`ShardError::AlreadyExists`): nothing is written over it.
        let report = store.append(host.shard, host_labels(host), records, &mut |_| {})?;
        metas.push(report.meta);
    }
    Ok(metas)
}

/// The events of demo shard `shard`, in time order, exactly as
/// [`generate_demo_shards`] stores them; `None` for a name that is not a demo
/// shard.
pub fn demo_events(shard: &str) -> Option<Vec<Value>> {
    HOSTS.iter().find(|h| h.shard == shard).map(host_events)
}

/// Labels of a demo shard: `env=demo`, `os=windows`, `source=security`,
/// `host=<HOST>`.
fn host_labels(host: &DemoHost) -> BTreeMap<String, String> {
    [
        ("env", "demo"),
        ("os", "windows"),
        ("source", "security"),
        ("host", host.host),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

/// The account an event is about.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    sid: String,
    /// Gets a special-privileges logon (4672) with each logon.
    privileges: Option<&'static str>,
}

impl Account {
    fn person(p: &Person) -> Self {
        Self {
            name: p.name.to_owned(),
            sid: format!("{DOMAIN_SID}-{}", p.rid),
            privileges: p.admin.then_some(PRIVILEGES_ADMIN),
        }
    }

    fn service(name: &str) -> Self {
        let (rid, privileged) = SERVICES
            .iter()
            .find(|s| s.0 == name)
            .map_or((1399, false), |s| (s.3, s.4));
        Self {
            name: name.to_owned(),
            sid: format!("{DOMAIN_SID}-{rid}"),
            privileges: privileged.then_some(PRIVILEGES_BACKUP),
        }
    }

    fn machine(host: &str, rid: u32) -> Self {
        Self {
            name: format!("{host}$"),
            sid: format!("{DOMAIN_SID}-{rid}"),
            privileges: None,
        }
    }
}

/// Where a logon comes from.
#[derive(Debug, Clone, Copy)]
struct Source<'a> {
    ip: &'a str,
    workstation: &'a str,
}

/// An event before it gets its final timestamp and record number.
struct Draft {
    t: i64,
    fields: Map<String, Value>,
}

struct Generator<'h> {
    host: &'h DemoHost,
    fqdn: String,
    rng: SplitMix64,
    drafts: Vec<Draft>,
    /// On a workstation: the owner's account, morning logon id and logon
    /// time; their applications run in that session.
    owner_session: Option<(Account, String, i64)>,
}

fn host_events(host: &DemoHost) -> Vec<Value> {
    let mut g = Generator {
        host,
        fqdn: format!("{}.{DNS_SUFFIX}", host.host),
        rng: SplitMix64::seeded(host.shard),
        drafts: Vec::new(),
        owner_session: None,
    };
    for attack in PLANTED.iter().filter(|a| a.shard == host.shard) {
        g.plant(attack);
    }
    g.typos();
    g.scheduled_backups();
    if let Role::Workstation(owner) = host.role {
        g.workday(&PEOPLE[owner]);
    }
    while g.drafts.len() < host.target_events {
        g.activity();
    }
    g.finish()
}

impl Generator<'_> {
    fn end(&self) -> i64 {
        DEMO_START_MS + DEMO_SPAN_MS
    }

    /// A uniformly random time in the demo window, leaving room at the end
    /// for the events that follow it.
    fn any_time(&mut self) -> i64 {
        DEMO_START_MS + self.rng.range(0, DEMO_SPAN_MS - 5 * MINUTE)
    }

    fn logon_id(&mut self) -> String {
        format!("0x{:x}", self.rng.range(0x10_0000, 0xff_ffff))
    }

    fn pid(&mut self) -> String {
        format!("0x{:x}", self.rng.range(0x100, 0x3fff))
    }

    fn machine_account(&self) -> Account {
        Account::machine(self.host.host, self.host.machine_rid)
    }

    fn push(
        &mut self,
        t: i64,
        event_id: u32,
        success: bool,
        task: u32,
        fields: Vec<(&str, Value)>,
    ) {
        // Events past the window are dropped: the demo day ends at 14:00.
        if t >= self.end() {
            return;
        }
        let mut map = Map::new();
        map.insert("EventID".into(), event_id.into());
        map.insert("Channel".into(), "Security".into());
        map.insert("Hostname".into(), self.fqdn.clone().into());
        map.insert("Computer".into(), self.fqdn.clone().into());
        map.insert(
            "SourceName".into(),
            "Microsoft-Windows-Security-Auditing".into(),
        );
        map.insert(
            "ProviderGuid".into(),
            "{54849625-5478-4994-A5BA-3E3B0328C30D}".into(),
        );
        map.insert(
            "EventType".into(),
            if success {
                "AUDIT_SUCCESS"
            } else {
                "AUDIT_FAILURE"
            }
            .into(),
        );
        map.insert("Task".into(), task.into());
        for (k, v) in fields {
            map.insert(k.to_owned(), v);
        }
        self.drafts.push(Draft { t, fields: map });
    }

    /// A successful logon (4624), the special-privileges logon (4672) that
    /// comes with a privileged account, and the logoff (4634) after
    /// `session_ms` if that is within the window. Returns the logon id.
    fn logon(
        &mut self,
        t: i64,
        who: &Account,
        logon_type: u32,
        from: Source<'_>,
        session_ms: Option<i64>,
    ) -> String {
        let logon_id = self.logon_id();
        let network = matches!(logon_type, 3);
        let (process, logon_process, package) = match logon_type {
            3 if from.ip.starts_with("10.") => ("-", "Kerberos", "Kerberos"),
            3 => ("-", "NtLmSsp ", "NTLM"),
            _ => (
                "C:\\Windows\\System32\\winlogon.exe",
                "User32 ",
                "Negotiate",
            ),
        };
        let machine = self.machine_account();
        let port = if network || logon_type == 10 {
            self.rng.range(49152, 65535).to_string()
        } else {
            "0".to_owned()
        };
        self.push(
            t,
            4624,
            true,
            12544,
            vec![
                (
                    "SubjectUserSid",
                    (if network { "S-1-0-0" } else { "S-1-5-18" }).into(),
                ),
                (
                    "SubjectUserName",
                    (if network {
                        "-".to_owned()
                    } else {
                        machine.name.clone()
                    })
                    .into(),
                ),
                (
                    "SubjectDomainName",
                    (if network { "-" } else { DEMO_DOMAIN }).into(),
                ),
                (
                    "SubjectLogonId",
                    (if network { "0x0" } else { "0x3e7" }).into(),
                ),
                ("TargetUserSid", who.sid.clone().into()),
                ("TargetUserName", who.name.clone().into()),
                ("TargetDomainName", DEMO_DOMAIN.into()),
                ("TargetLogonId", logon_id.clone().into()),
                ("LogonType", logon_type.to_string().into()),
                ("LogonProcessName", logon_process.into()),
                ("AuthenticationPackageName", package.into()),
                ("WorkstationName", from.workstation.into()),
                ("IpAddress", from.ip.into()),
                ("IpPort", port.into()),
                ("ProcessName", process.into()),
                (
                    "ElevatedToken",
                    (if who.privileges.is_some() {
                        "%%1842"
                    } else {
                        "%%1843"
                    })
                    .into(),
                ),
            ],
        );
        if let Some(privileges) = who.privileges {
            self.push(
                t + 1,
                4672,
                true,
                12548,
                vec![
                    ("SubjectUserSid", who.sid.clone().into()),
                    ("SubjectUserName", who.name.clone().into()),
                    ("SubjectDomainName", DEMO_DOMAIN.into()),
                    ("SubjectLogonId", logon_id.clone().into()),
                    ("PrivilegeList", privileges.into()),
                ],
            );
        }
        if let Some(session) = session_ms {
            self.push(
                t + session,
                4634,
                true,
                12545,
                vec![
                    ("TargetUserSid", who.sid.clone().into()),
                    ("TargetUserName", who.name.clone().into()),
                    ("TargetDomainName", DEMO_DOMAIN.into()),
                    ("TargetLogonId", logon_id.clone().into()),
                    ("LogonType", logon_type.to_string().into()),
                ],
            );
        }
        logon_id
    }

    /// A failed logon (4625) with a wrong password.
    fn failed_logon(&mut self, t: i64, account: &str, logon_type: u32, from: Source<'_>) {
        let network = logon_type == 3;
        let (process, logon_process, package) = if network {
            ("-", "NtLmSsp ", "NTLM")
        } else {
            ("C:\\Windows\\System32\\svchost.exe", "User32 ", "Negotiate")
        };
        let machine = self.machine_account();
        let port = if network {
            self.rng.range(49152, 65535).to_string()
        } else {
            "0".to_owned()
        };
        self.push(
            t,
            4625,
            false,
            12544,
            vec![
                (
                    "SubjectUserSid",
                    (if network { "S-1-0-0" } else { "S-1-5-18" }).into(),
                ),
                (
                    "SubjectUserName",
                    (if network {
                        "-".to_owned()
                    } else {
                        machine.name
                    })
                    .into(),
                ),
                (
                    "SubjectDomainName",
                    (if network { "-" } else { DEMO_DOMAIN }).into(),
                ),
                (
                    "SubjectLogonId",
                    (if network { "0x0" } else { "0x3e7" }).into(),
                ),
                ("TargetUserSid", "S-1-0-0".into()),
                ("TargetUserName", account.into()),
                ("TargetDomainName", DEMO_DOMAIN.into()),
                ("Status", "0xc000006d".into()),
                ("FailureReason", "%%2313".into()),
                ("SubStatus", "0xc000006a".into()),
                ("LogonType", logon_type.to_string().into()),
                ("LogonProcessName", logon_process.into()),
                ("AuthenticationPackageName", package.into()),
                ("WorkstationName", from.workstation.into()),
                ("IpAddress", from.ip.into()),
                ("IpPort", port.into()),
                ("ProcessName", process.into()),
            ],
        );
    }

    /// A process creation (4688).
    fn process(
        &mut self,
        t: i64,
        who: &Account,
        logon_id: &str,
        image: &str,
        parent: &str,
        command_line: &str,
    ) {
        let system = logon_id == "0x3e7";
        let (pid, parent_pid) = (self.pid(), self.pid());
        self.push(
            t,
            4688,
            true,
            13312,
            vec![
                (
                    "SubjectUserSid",
                    (if system {
                        "S-1-5-18".to_owned()
                    } else {
                        who.sid.clone()
                    })
                    .into(),
                ),
                ("SubjectUserName", who.name.clone().into()),
                ("SubjectDomainName", DEMO_DOMAIN.into()),
                ("SubjectLogonId", logon_id.into()),
                ("NewProcessId", pid.into()),
                ("NewProcessName", image.into()),
                (
                    "TokenElevationType",
                    (if system { "%%1936" } else { "%%1938" }).into(),
                ),
                ("ProcessId", parent_pid.into()),
                ("CommandLine", command_line.into()),
                ("TargetUserSid", "S-1-0-0".into()),
                ("TargetUserName", "-".into()),
                ("TargetDomainName", "-".into()),
                ("TargetLogonId", "0x0".into()),
                ("ParentProcessName", parent.into()),
                (
                    "MandatoryLabel",
                    (if system {
                        "S-1-16-16384"
                    } else {
                        "S-1-16-8192"
                    })
                    .into(),
                ),
            ],
        );
    }

    fn system_process(&mut self, t: i64) {
        let machine = self.machine_account();
        let &(image, parent, command_line) = self.rng.pick(SYSTEM_PROCESSES);
        self.process(t, &machine, "0x3e7", image, parent, command_line);
    }

    // --- planted attacks ---------------------------------------------------

    fn plant(&mut self, attack: &PlantedAttack) {
        let from = Source {
            ip: attack.source_ip,
            workstation: attack.source_workstation,
        };
        let n = attack.failures.max(1) as i64;
        let step = attack.failure_span_ms / (n - 1).max(1);
        let mut last = attack.first_failure_ms;
        for k in 0..n {
            // Evenly spread with a little jitter, first and last pinned, so
            // the span is exactly as documented.
            let jitter = if k == 0 || k == n - 1 {
                0
            } else {
                self.rng.range(-step / 5, step / 5)
            };
            last = attack.first_failure_ms + k * step + jitter;
            self.failed_logon(last, attack.account, 3, from);
        }
        let Some(logon_type) = attack.success_logon_type.filter(|_| attack.succeeded) else {
            return;
        };
        let who = if attack.account.starts_with("svc_") {
            Account::service(attack.account)
        } else {
            PEOPLE
                .iter()
                .find(|p| p.name == attack.account)
                .map_or_else(|| Account::service(attack.account), Account::person)
        };
        let t = last + self.rng.range(18 * SECOND, 30 * SECOND);
        let session = self.rng.range(7 * MINUTE, 11 * MINUTE);
        let logon_id = self.logon(t, &who, logon_type, from, Some(session));
        // What the intruder does next, for other hunts to find.
        let follow_up: &[(&str, &str, &str)] = if logon_type == 10 {
            &[
                (
                    "C:\\Windows\\System32\\cmd.exe",
                    "C:\\Windows\\explorer.exe",
                    "\"C:\\Windows\\System32\\cmd.exe\"",
                ),
                (
                    "C:\\Windows\\System32\\whoami.exe",
                    "C:\\Windows\\System32\\cmd.exe",
                    "whoami /all",
                ),
                (
                    "C:\\Windows\\System32\\net.exe",
                    "C:\\Windows\\System32\\cmd.exe",
                    "net group \"Domain Admins\" /domain",
                ),
                (
                    "C:\\Windows\\System32\\nltest.exe",
                    "C:\\Windows\\System32\\cmd.exe",
                    "nltest /dclist:corp.local",
                ),
            ]
        } else {
            &[(
                "C:\\Windows\\System32\\ntdsutil.exe",
                "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
                "ntdsutil.exe \"ac i ntds\" ifm \"create full C:\\Windows\\Temp\\ntds\" q q",
            )]
        };
        let mut pt = t + 40 * SECOND;
        for &(image, parent, command_line) in follow_up {
            self.process(pt, &who, &logon_id, image, parent, command_line);
            pt += self.rng.range(15 * SECOND, 50 * SECOND);
        }
    }

    // --- benign noise ------------------------------------------------------

    /// A few mistyped passwords: each chosen person fails once or twice on
    /// this host, and never as part of an attack, so at most two failures per
    /// account and per source address exist in the noise of a shard.
    fn typos(&mut self) {
        let planted: Vec<&str> = PLANTED.iter().map(|a| a.account).collect();
        // On a workstation only its owner (at the lock screen) and the
        // administrator (over the network) type passwords.
        let owner = match self.host.role {
            Role::Workstation(owner) => Some(owner),
            Role::DomainController | Role::Server => None,
        };
        let mut candidates: Vec<&'static Person> = PEOPLE
            .iter()
            .enumerate()
            .filter(|(i, p)| owner.is_none_or(|o| o == *i || p.admin))
            .map(|(_, p)| p)
            .filter(|p| !planted.contains(&p.name))
            .collect();
        let wanted = match self.host.role {
            Role::DomainController => 4,
            Role::Server => 3,
            Role::Workstation(_) => 2,
        };
        for _ in 0..wanted.min(candidates.len()) {
            let index = self.rng.below(candidates.len() as u64) as usize;
            let person = candidates.swap_remove(index);
            let account = Account::person(person);
            let at_console = owner.is_some_and(|o| PEOPLE[o].name == person.name);
            let (logon_type, from) = if at_console {
                (
                    7,
                    Source {
                        ip: "127.0.0.1",
                        workstation: self.host.host,
                    },
                )
            } else {
                (
                    3,
                    Source {
                        ip: person.ip,
                        workstation: person.workstation,
                    },
                )
            };
            let failures = if self.rng.percent(40) { 2 } else { 1 };
            let back_to_back = self.rng.percent(50);
            let mut t = self.any_time();
            for i in 0..failures {
                if i == 1 && !back_to_back {
                    // A second slip an hour or two later (or earlier).
                    let later = t + self.rng.range(HOUR, 2 * HOUR);
                    t = if later < self.end() - 5 * MINUTE {
                        later
                    } else {
                        t - self.rng.range(HOUR, 2 * HOUR)
                    };
                }
                self.failed_logon(t, person.name, logon_type, from);
                t += self.rng.range(4 * SECOND, 12 * SECOND);
                if i + 1 == failures || !back_to_back {
                    // Then the right password.
                    let session = self.rng.range(10 * SECOND, 20 * MINUTE);
                    self.logon(t, &account, logon_type, from, Some(session));
                    t += session;
                }
            }
        }
    }

    /// The backup server logs on every 30 minutes with its privileged
    /// service account: the baseline the planted brute force departs from.
    fn scheduled_backups(&mut self) {
        if !matches!(self.host.role, Role::DomainController | Role::Server) {
            return;
        }
        let account = Account::service("svc_backup");
        let from = Source {
            ip: "10.10.5.20",
            workstation: "BKP01",
        };
        let mut t = DEMO_START_MS + self.rng.range(MINUTE, 10 * MINUTE);
        while t < self.end() {
            let session = self.rng.range(20 * SECOND, 90 * SECOND);
            self.logon(t, &account, 3, from, Some(session));
            t += 30 * MINUTE + self.rng.range(-2 * MINUTE, 2 * MINUTE);
        }
    }

    /// A workstation owner's day: an interactive logon in the morning, a few
    /// unlocks, and the applications they start.
    fn workday(&mut self, owner: &Person) {
        let account = Account::person(owner);
        let local = Source {
            ip: "127.0.0.1",
            workstation: self.host.host,
        };
        let start = DEMO_START_MS + self.rng.range(2 * MINUTE, 25 * MINUTE);
        let session = self.logon(start, &account, 2, local, None);
        self.process(
            start + 3 * SECOND,
            &account,
            &session,
            "C:\\Windows\\explorer.exe",
            "C:\\Windows\\System32\\userinit.exe",
            "C:\\Windows\\Explorer.EXE",
        );
        for _ in 0..self.rng.range(5, 9) {
            let t = self.any_time().max(start + MINUTE);
            let unlock = self.rng.range(2 * SECOND, 10 * SECOND);
            self.logon(t, &account, 7, local, Some(unlock));
        }
        // Keep the owner's processes on the morning session.
        self.owner_session = Some((account, session, start));
    }

    /// One unit of background activity, chosen by the host's role.
    fn activity(&mut self) {
        let t = self.any_time();
        let roll = self.rng.below(100);
        match self.host.role {
            Role::DomainController => match roll {
                0..45 => self.user_network_logon(t, 1, 30),
                45..65 => self.machine_network_logon(t),
                65..77 => self.service_logon(t),
                77..90 => self.system_process(t),
                _ => self.admin_session(t),
            },
            Role::Workstation(_) => match roll {
                0..55 => self.owner_app(t),
                55..80 => self.system_process(t),
                80..92 => self.machine_network_logon(t),
                _ => self.admin_network_logon(t),
            },
            Role::Server => match roll {
                0..50 => self.user_network_logon(t, 60, 20 * 60),
                50..65 => self.service_logon(t),
                65..90 => self.system_process(t),
                _ => self.admin_session(t),
            },
        }
    }

    /// A domain user's network logon, for `min_s..=max_s` seconds.
    fn user_network_logon(&mut self, t: i64, min_s: i64, max_s: i64) {
        let person = self.rng.pick(PEOPLE);
        let from = Source {
            ip: person.ip,
            workstation: person.workstation,
        };
        let session = self.rng.range(min_s * SECOND, max_s * SECOND);
        self.logon(t, &Account::person(person), 3, from, Some(session));
    }

    /// A workstation's computer account authenticating (group policy, …).
    fn machine_network_logon(&mut self, t: i64) {
        let (account, from) = if matches!(self.host.role, Role::Workstation(_)) {
            // On a workstation, the domain controller's account checks in.
            (
                Account::machine("DC01", 1000),
                Source {
                    ip: "10.10.1.10",
                    workstation: "DC01",
                },
            )
        } else {
            let person = self.rng.pick(PEOPLE);
            (
                // Workstation RIDs follow their owners' (WS02: alice 1104 → 1204).
                Account::machine(person.workstation, person.rid + 100),
                Source {
                    ip: person.ip,
                    workstation: person.workstation,
                },
            )
        };
        let session = self.rng.range(SECOND, 5 * SECOND);
        self.logon(t, &account, 3, from, Some(session));
    }

    /// An application service account (never the backup account, whose
    /// logons are scheduled).
    fn service_logon(&mut self, t: i64) {
        let &(name, host, ip, _, _) = self.rng.pick(&SERVICES[1..]);
        let session = self.rng.range(SECOND, 3 * MINUTE);
        self.logon(
            t,
            &Account::service(name),
            3,
            Source {
                ip,
                workstation: host,
            },
            Some(session),
        );
    }

    /// The administrator (frank) connects over RDP and runs admin tools.
    fn admin_session(&mut self, t: i64) {
        let Some(admin) = PEOPLE.iter().find(|p| p.admin) else {
            return;
        };
        let account = Account::person(admin);
        let from = Source {
            ip: admin.ip,
            workstation: admin.workstation,
        };
        let session_ms = self.rng.range(5 * MINUTE, 30 * MINUTE);
        let logon_id = self.logon(t, &account, 10, from, Some(session_ms));
        let mut pt = t + self.rng.range(20 * SECOND, 60 * SECOND);
        for _ in 0..self.rng.range(1, 3) {
            let &(image, command_line) = self.rng.pick(ADMIN_TOOLS);
            self.process(
                pt,
                &account,
                &logon_id,
                image,
                "C:\\Windows\\explorer.exe",
                command_line,
            );
            pt += self.rng.range(30 * SECOND, 4 * MINUTE);
        }
    }

    /// The administrator checks a workstation over the network.
    fn admin_network_logon(&mut self, t: i64) {
        let Some(admin) = PEOPLE.iter().find(|p| p.admin) else {
            return;
        };
        let from = Source {
            ip: admin.ip,
            workstation: admin.workstation,
        };
        let session = self.rng.range(5 * SECOND, 2 * MINUTE);
        self.logon(t, &Account::person(admin), 3, from, Some(session));
    }

    /// The workstation owner starts an application in the morning session.
    fn owner_app(&mut self, t: i64) {
        let Some((account, logon_id, logged_on)) = self.owner_session.clone() else {
            self.system_process(t);
            return;
        };
        // Nothing runs in the session before the owner has logged on.
        let t = if t < logged_on + 10 * SECOND {
            logged_on + self.rng.range(10 * SECOND, HOUR)
        } else {
            t
        };
        let &(image, command_line) = self.rng.pick(USER_APPS);
        self.process(
            t,
            &account,
            &logon_id,
            image,
            "C:\\Windows\\explorer.exe",
            command_line,
        );
    }

    /// Orders the drafts by time (keeping generation order on ties), makes
    /// timestamps strictly increasing, and numbers the records.
    fn finish(mut self) -> Vec<Value> {
        self.drafts.sort_by_key(|d| d.t);
        let mut record = 180_000 + self.rng.below(50_000);
        let mut last = i64::MIN;
        self.drafts
            .into_iter()
            .map(|mut draft| {
                let t = draft.t.max(last.saturating_add(1));
                last = t;
                record += 1;
                draft.fields.insert("RecordNumber".into(), record.into());
                draft
                    .fields
                    .insert("@timestamp".into(), format_rfc3339_ms(t).into());
                Value::Object(draft.fields)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::event_timestamp_ms;
    use crate::shard::ScanStats;

    fn text<'a>(doc: &'a Value, field: &str) -> &'a str {
        doc.get(field).and_then(Value::as_str).unwrap_or("")
    }

    fn event_id(doc: &Value) -> u64 {
        doc.get("EventID").and_then(Value::as_u64).unwrap_or(0)
    }

    #[test]
    fn demo_start_is_the_documented_instant() {
        assert_eq!(
            crate::event::parse_iso8601_ms("2026-11-20T08:00:00Z"),
            Some(DEMO_START_MS)
        );
    }

    #[test]
    fn workers_get_their_documented_shards() {
        assert_eq!(
            demo_shard_names(0),
            ["win-dc01-security", "win-ws01-security"]
        );
        assert_eq!(
            demo_shard_names(1),
            ["win-ws02-security", "win-srv01-security"]
        );
        assert!(demo_shard_names(2).is_empty());
        assert!(demo_events("nope").is_none());
    }

    #[test]
    fn generation_is_deterministic() {
        for host in HOSTS {
            assert_eq!(demo_events(host.shard), demo_events(host.shard));
        }
        assert_ne!(
            demo_events("win-ws01-security"),
            demo_events("win-ws02-security")
        );
    }

    #[test]
    fn events_look_like_windows_security_logs_in_order() {
        for host in HOSTS {
            let events = demo_events(host.shard).expect("demo shard");
            assert!(
                (2000..6000).contains(&events.len()),
                "{}: {} events",
                host.shard,
                events.len()
            );
            let mut last = i64::MIN;
            for doc in &events {
                let ts = event_timestamp_ms(doc).expect("timestamp");
                assert!(ts > last, "{}: timestamps must increase", host.shard);
                assert!((DEMO_START_MS..DEMO_START_MS + DEMO_SPAN_MS + SECOND).contains(&ts));
                last = ts;
                assert_eq!(text(doc, "Channel"), "Security");
                assert_eq!(text(doc, "Hostname"), format!("{}.corp.local", host.host));
                assert_eq!(text(doc, "Computer"), text(doc, "Hostname"));
                let id = event_id(doc);
                assert!(
                    [4624, 4625, 4634, 4672, 4688].contains(&id),
                    "unexpected {id}"
                );
                if [4624, 4625, 4634].contains(&id) {
                    assert_eq!(text(doc, "TargetDomainName"), "CORP");
                    assert!(!text(doc, "TargetUserName").is_empty());
                    assert!(!text(doc, "LogonType").is_empty());
                }
                if id == 4688 {
                    assert!(text(doc, "NewProcessName").starts_with("C:\\"));
                    assert!(!text(doc, "SubjectUserName").is_empty());
                }
            }
            // Every kind of benign event is present.
            for id in [4624, 4625, 4634, 4672, 4688] {
                assert!(
                    events.iter().any(|d| event_id(d) == id),
                    "{}: no {id}",
                    host.shard
                );
            }
        }
    }

    /// Failures grouped by `key` that number at least 3 within 10 minutes.
    fn bursts(events: &[Value], key: &str) -> Vec<(String, usize)> {
        let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for doc in events.iter().filter(|d| event_id(d) == 4625) {
            let ts = event_timestamp_ms(doc).unwrap_or(0);
            by_key
                .entry(text(doc, key).to_owned())
                .or_default()
                .push(ts);
        }
        let mut found = Vec::new();
        for (k, times) in by_key {
            let max_in_window = times
                .iter()
                .map(|&t| {
                    times
                        .iter()
                        .filter(|&&u| u >= t && u < t + 10 * MINUTE)
                        .count()
                })
                .max()
                .unwrap_or(0);
            if max_in_window >= 3 {
                found.push((k, max_in_window));
            }
        }
        found
    }

    #[test]
    fn planted_attacks_are_present_and_noise_never_looks_like_guessing() {
        for host in HOSTS {
            let events = demo_events(host.shard).expect("demo shard");
            let planted: Vec<&PlantedAttack> =
                PLANTED.iter().filter(|a| a.shard == host.shard).collect();
            let mut expected_accounts: Vec<(String, usize)> = planted
                .iter()
                .map(|a| (a.account.to_owned(), a.failures))
                .collect();
            expected_accounts.sort();
            let mut expected_ips: Vec<(String, usize)> = planted
                .iter()
                .map(|a| (a.source_ip.to_owned(), a.failures))
                .collect();
            expected_ips.sort();
            assert_eq!(
                bursts(&events, "TargetUserName"),
                expected_accounts,
                "{}",
                host.shard
            );
            assert_eq!(bursts(&events, "IpAddress"), expected_ips, "{}", host.shard);
            // Benign failures: 1 or 2 per account.
            let mut per_account: BTreeMap<&str, usize> = BTreeMap::new();
            for doc in events.iter().filter(|d| event_id(d) == 4625) {
                *per_account.entry(text(doc, "TargetUserName")).or_default() += 1;
            }
            let benign: Vec<_> = per_account
                .iter()
                .filter(|(account, _)| !planted.iter().any(|a| a.account == **account))
                .collect();
            assert!(!benign.is_empty(), "{}: no typos", host.shard);
            assert!(
                benign.iter().all(|(_, n)| (1..=2).contains(*n)),
                "{benign:?}"
            );
        }
    }

    #[test]
    fn planted_attacks_match_their_ground_truth() {
        for attack in PLANTED {
            let events = demo_events(attack.shard).expect("demo shard");
            let failures: Vec<i64> = events
                .iter()
                .filter(|d| {
                    event_id(d) == 4625
                        && text(d, "TargetUserName") == attack.account
                        && text(d, "IpAddress") == attack.source_ip
                })
                .filter_map(event_timestamp_ms)
                .collect();
            assert_eq!(failures.len(), attack.failures, "{}", attack.shard);
            let (first, last) = (failures[0], failures[failures.len() - 1]);
            assert!(first - attack.first_failure_ms < 100, "{}", attack.shard);
            assert!(last - first <= attack.failure_span_ms + 100);
            let successes: Vec<&Value> = events
                .iter()
                .filter(|d| {
                    event_id(d) == 4624
                        && text(d, "TargetUserName") == attack.account
                        && text(d, "IpAddress") == attack.source_ip
                })
                .collect();
            if attack.succeeded {
                assert_eq!(successes.len(), 1, "{}", attack.shard);
                let success = successes[0];
                let ts = event_timestamp_ms(success).unwrap_or(0);
                assert!(ts > last && ts - last < MINUTE);
                let logon_type = attack.success_logon_type.map(|t| t.to_string());
                assert_eq!(Some(text(success, "LogonType").to_owned()), logon_type);
            } else {
                assert!(successes.is_empty(), "{}", attack.shard);
            }
        }
        // The brief's numbers.
        let dc = &PLANTED[0];
        assert_eq!((dc.failures, dc.failure_span_ms <= 3 * MINUTE), (14, true));
        let ws = &PLANTED[1];
        assert_eq!((ws.failures, ws.failure_span_ms <= 2 * MINUTE), (7, true));
        assert_eq!(PLANTED[2].failures, 6);
    }

    #[test]
    fn generate_stores_shards_once_and_keeps_them_on_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let store = ShardStore::open(dir.path()).expect("open");
            let metas = generate_demo_shards(&store, 1).expect("generate");
            assert_eq!(
                metas.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                ["win-ws02-security", "win-srv01-security"]
            );
            for meta in &metas {
                assert_eq!(meta.labels["env"], "demo");
                assert_eq!(meta.labels["os"], "windows");
                assert_eq!(meta.labels["source"], "security");
                assert_eq!(meta.malformed_count, 0);
                assert_eq!(meta.untimed_count, 0);
                assert_eq!(meta.min_ts_ms.map(|t| t >= DEMO_START_MS), Some(true));
            }
            assert_eq!(metas[0].labels["host"], "WS02");
            assert_eq!(metas[1].labels["host"], "SRV01");
            // Stored events are exactly the generated ones.
            let mut stored = Vec::new();
            let stats: ScanStats = store
                .scan::<ShardError, _>("win-ws02-security", None, 512, |batch| {
                    stored.extend(batch.iter().map(|e| e.doc.clone()));
                    Ok(())
                })
                .expect("scan");
            assert_eq!(stats.events_read, metas[0].event_count);
            // The store adds the canonical `host` (from `Computer`) and
            // `source` (the `source` label); every generated field is kept.
            let generated = demo_events("win-ws02-security").expect("demo shard");
            assert_eq!(stored.len(), generated.len());
            for (stored, generated) in stored.iter_mut().zip(&generated) {
                assert_eq!(stored["host"], generated["Computer"]);
                assert_eq!(stored["source"], "security");
                if let Value::Object(map) = stored {
                    map.remove("host");
                    map.remove("source");
                }
                assert_eq!(stored, generated);
            }
            metas
        };
        let store = ShardStore::open(dir.path()).expect("reopen");
        let again = generate_demo_shards(&store, 1).expect("generate again");
        // Same metadata, creation time included: nothing was rewritten.
        assert_eq!(again, first);
        assert_eq!(
            generate_demo_shards(&store, 7).expect("no shards"),
            Vec::new()
        );
    }
}
