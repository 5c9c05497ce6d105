//! The fictional enterprise the scenario takes place in: hosts, people,
//! accounts, the services they use on the internet, and the attackers'
//! infrastructure.
//!
//! Every external address is in the documentation ranges (192.0.2.0/24,
//! 198.51.100.0/24, 203.0.113.0/24, RFC 5737), so no record points at a real
//! network; the hunt modules and the Sigma rules treat them as public, as
//! they should. Benign internet names are the well-known ones a company
//! really uses (with those documentation addresses); the attackers' names
//! are made up.

/// A second, in ms.
pub(crate) const SECOND: i64 = 1000;
/// A minute, in ms.
pub(crate) const MINUTE: i64 = 60 * SECOND;
/// An hour, in ms.
pub(crate) const HOUR: i64 = 60 * MINUTE;
/// A day, in ms.
pub(crate) const DAY: i64 = 24 * HOUR;

/// The Active Directory domain (NetBIOS name).
pub(crate) const DOMAIN: &str = "CORP";
/// The DNS suffix of domain members.
pub(crate) const DNS_SUFFIX: &str = "corp.local";
/// The Kerberos realm, as 4768/4769 write it.
pub(crate) const REALM: &str = "CORP.LOCAL";
/// The domain SID.
pub(crate) const DOMAIN_SID: &str = "S-1-5-21-1418150370-2943587362-2580283217";

/// What a host is for; it decides its background activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    DomainController,
    FileServer,
    Database,
    AppServer,
    Backup,
    Management,
    JumpHost,
    Workstation,
    WebServer,
}

impl Role {
    /// The manifest's name for the role.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::DomainController => "domain-controller",
            Role::FileServer => "file-server",
            Role::Database => "database-server",
            Role::AppServer => "application-server",
            Role::Backup => "backup-server",
            Role::Management => "management-server",
            Role::JumpHost => "jump-host",
            Role::Workstation => "workstation",
            Role::WebServer => "web-server",
        }
    }

    pub(crate) fn is_server(self) -> bool {
        !matches!(self, Role::Workstation | Role::WebServer)
    }
}

/// A host whose logs the dataset holds.
#[derive(Debug)]
pub(crate) struct Host {
    pub name: &'static str,
    pub ip: &'static str,
    pub role: Role,
    /// Windows (Security, System, Sysmon) or Linux (auth.log).
    pub windows: bool,
    /// RID of the computer account (Windows).
    pub rid: u32,
    /// Index in [`PEOPLE`] of a workstation's owner.
    pub owner: Option<usize>,
    /// Workstation shard group (`a` or `b`): workstations are collected five
    /// to a shard, as a Windows Event Forwarding collector would hold them.
    pub group: Option<&'static str>,
}

impl Host {
    pub(crate) fn fqdn(&self) -> String {
        if self.windows {
            format!("{}.{DNS_SUFFIX}", self.name)
        } else {
            self.name.to_owned()
        }
    }
}

const fn win(
    name: &'static str,
    ip: &'static str,
    role: Role,
    rid: u32,
    owner: Option<usize>,
    group: Option<&'static str>,
) -> Host {
    Host {
        name,
        ip,
        role,
        windows: true,
        rid,
        owner,
        group,
    }
}

/// Every host with logs, in manifest order.
pub(crate) const HOSTS: &[Host] = &[
    win(
        "DC01",
        "10.10.1.10",
        Role::DomainController,
        1000,
        None,
        None,
    ),
    win(
        "DC02",
        "10.10.1.11",
        Role::DomainController,
        1001,
        None,
        None,
    ),
    win("FS01", "10.10.5.20", Role::FileServer, 1110, None, None),
    win("SQL01", "10.10.5.21", Role::Database, 1111, None, None),
    win("APP01", "10.10.5.30", Role::AppServer, 1112, None, None),
    win("BKP01", "10.10.5.40", Role::Backup, 1113, None, None),
    win("SCCM01", "10.10.5.50", Role::Management, 1114, None, None),
    win("JUMP01", "10.10.30.5", Role::JumpHost, 1115, None, None),
    win(
        "WS01",
        "10.10.20.11",
        Role::Workstation,
        1201,
        Some(0),
        Some("a"),
    ),
    win(
        "WS02",
        "10.10.20.12",
        Role::Workstation,
        1202,
        Some(1),
        Some("a"),
    ),
    win(
        "WS03",
        "10.10.20.13",
        Role::Workstation,
        1203,
        Some(2),
        Some("a"),
    ),
    win(
        "WS04",
        "10.10.20.14",
        Role::Workstation,
        1204,
        Some(3),
        Some("a"),
    ),
    win(
        "WS05",
        "10.10.20.15",
        Role::Workstation,
        1205,
        Some(4),
        Some("a"),
    ),
    win(
        "WS06",
        "10.10.20.16",
        Role::Workstation,
        1206,
        Some(5),
        Some("b"),
    ),
    win(
        "WS07",
        "10.10.20.17",
        Role::Workstation,
        1207,
        Some(6),
        Some("b"),
    ),
    win(
        "WS08",
        "10.10.20.18",
        Role::Workstation,
        1208,
        Some(7),
        Some("b"),
    ),
    win(
        "WS09",
        "10.10.20.19",
        Role::Workstation,
        1209,
        Some(8),
        Some("b"),
    ),
    win(
        "WS10",
        "10.10.20.20",
        Role::Workstation,
        1210,
        Some(9),
        Some("b"),
    ),
    Host {
        name: "web01",
        ip: "172.16.10.11",
        role: Role::WebServer,
        windows: false,
        rid: 0,
        owner: None,
        group: None,
    },
    Host {
        name: "web02",
        ip: "172.16.10.12",
        role: Role::WebServer,
        windows: false,
        rid: 0,
        owner: None,
        group: None,
    },
];

/// Index of the host called `name` in [`HOSTS`].
///
/// # Panics
/// When no host has that name: the names are constants of this file.
pub(crate) fn host(name: &str) -> usize {
    HOSTS
        .iter()
        .position(|h| h.name == name)
        .unwrap_or_else(|| panic!("no host {name} in the scenario"))
}

/// Indexes of the hosts with a role.
pub(crate) fn hosts_with(role: Role) -> Vec<usize> {
    (0..HOSTS.len())
        .filter(|&i| HOSTS[i].role == role)
        .collect()
}

/// Indexes of the Windows hosts.
pub(crate) fn windows_hosts() -> Vec<usize> {
    (0..HOSTS.len()).filter(|&i| HOSTS[i].windows).collect()
}

/// The servers the IT team maintains and the backup server saves.
pub(crate) const MAINTAINED_SERVERS: &[&str] = &["DC01", "DC02", "FS01", "SQL01", "APP01", "BKP01"];

/// An employee and their workstation (see [`HOSTS`]).
#[derive(Debug)]
pub(crate) struct Person {
    pub name: &'static str,
    pub rid: u32,
    /// Typical first logon, minutes after midnight UTC.
    pub arrives_min: i64,
    /// Typical end of the day, minutes after midnight UTC.
    pub leaves_min: i64,
}

pub(crate) const PEOPLE: &[Person] = &[
    Person {
        name: "alice",
        rid: 1104,
        arrives_min: 8 * 60 + 5,
        leaves_min: 17 * 60 + 10,
    },
    Person {
        name: "bob",
        rid: 1105,
        arrives_min: 8 * 60 + 40,
        leaves_min: 17 * 60 + 45,
    },
    Person {
        name: "carol",
        rid: 1106,
        arrives_min: 7 * 60 + 50,
        leaves_min: 16 * 60 + 30,
    },
    Person {
        name: "dave",
        rid: 1107,
        arrives_min: 8 * 60 + 20,
        leaves_min: 17 * 60 + 30,
    },
    Person {
        name: "erin",
        rid: 1108,
        arrives_min: 9 * 60,
        leaves_min: 18 * 60,
    },
    Person {
        name: "frank",
        rid: 1109,
        arrives_min: 7 * 60 + 45,
        leaves_min: 16 * 60 + 50,
    },
    Person {
        name: "grace",
        rid: 1110,
        arrives_min: 8 * 60 + 30,
        leaves_min: 17 * 60 + 15,
    },
    Person {
        name: "heidi",
        rid: 1111,
        arrives_min: 8 * 60 + 10,
        leaves_min: 16 * 60 + 40,
    },
    Person {
        name: "ivan",
        rid: 1112,
        arrives_min: 8 * 60 + 15,
        leaves_min: 17 * 60 + 20,
    },
    Person {
        name: "judy",
        rid: 1113,
        arrives_min: 8 * 60 + 50,
        leaves_min: 17 * 60 + 50,
    },
];

/// Index of the person called `name` in [`PEOPLE`].
///
/// # Panics
/// When nobody has that name: the names are constants of this file.
pub(crate) fn person(name: &str) -> usize {
    PEOPLE
        .iter()
        .position(|p| p.name == name)
        .unwrap_or_else(|| panic!("no person {name} in the scenario"))
}

/// Index in [`HOSTS`] of a person's workstation.
pub(crate) fn workstation_of(person: usize) -> usize {
    HOSTS
        .iter()
        .position(|h| h.owner == Some(person))
        .unwrap_or(0)
}

/// A domain account: a person's, an admin's or a service's.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub name: String,
    pub sid: String,
    /// Logons get a special-privileges logon (4672).
    pub privileged: bool,
}

impl Account {
    pub(crate) fn person(index: usize) -> Self {
        let p = &PEOPLE[index];
        Account {
            name: p.name.to_owned(),
            sid: format!("{DOMAIN_SID}-{}", p.rid),
            privileged: false,
        }
    }

    /// The separate administrator account of an IT person (`admin-frank`).
    pub(crate) fn admin(index: usize) -> Self {
        let p = &PEOPLE[index];
        Account {
            name: format!("admin-{}", p.name),
            sid: format!("{DOMAIN_SID}-{}", p.rid + 500),
            privileged: true,
        }
    }

    pub(crate) fn service(name: &str) -> Self {
        let (rid, privileged) = SERVICE_ACCOUNTS
            .iter()
            .find(|s| s.name == name)
            .map_or((1399, false), |s| (s.rid, s.privileged));
        Account {
            name: name.to_owned(),
            sid: format!("{DOMAIN_SID}-{rid}"),
            privileged,
        }
    }

    pub(crate) fn machine(host: usize) -> Self {
        let h = &HOSTS[host];
        Account {
            name: format!("{}$", h.name),
            sid: format!("{DOMAIN_SID}-{}", h.rid),
            privileged: false,
        }
    }

    /// `CORP\name`, as Sysmon's `User` writes it.
    pub(crate) fn qualified(&self) -> String {
        format!("{DOMAIN}\\{}", self.name)
    }
}

/// A service account, what it is for, and the SPN it carries.
#[derive(Debug)]
pub(crate) struct ServiceAccount {
    pub name: &'static str,
    pub rid: u32,
    pub privileged: bool,
    pub spn: Option<&'static str>,
}

pub(crate) const SERVICE_ACCOUNTS: &[ServiceAccount] = &[
    ServiceAccount {
        name: "svc_backup",
        rid: 1301,
        privileged: true,
        spn: Some("BackupAgent/bkp01.corp.local"),
    },
    ServiceAccount {
        name: "svc_sql",
        rid: 1302,
        privileged: false,
        spn: Some("MSSQLSvc/sql01.corp.local:1433"),
    },
    ServiceAccount {
        name: "svc_web",
        rid: 1303,
        privileged: false,
        spn: Some("HTTP/app01.corp.local"),
    },
    ServiceAccount {
        name: "svc_legacyapp",
        rid: 1304,
        privileged: false,
        spn: Some("HTTP/intranet.corp.local"),
    },
    ServiceAccount {
        name: "svc_itops",
        rid: 1305,
        privileged: true,
        spn: None,
    },
    ServiceAccount {
        name: "svc_nessus",
        rid: 1306,
        privileged: true,
        spn: None,
    },
    ServiceAccount {
        name: "svc_sccm",
        rid: 1307,
        privileged: true,
        spn: Some("SMS/sccm01.corp.local"),
    },
    ServiceAccount {
        name: "svc_monitor",
        rid: 1308,
        privileged: false,
        spn: None,
    },
    ServiceAccount {
        name: "svc_reporting",
        rid: 1309,
        privileged: false,
        spn: Some("MSSQLSvc/sql01.corp.local:1434"),
    },
    ServiceAccount {
        name: "svc_printer",
        rid: 1310,
        privileged: false,
        spn: Some("HOST/print01.corp.local"),
    },
];

/// The vulnerability scanner (no logs of its own: it shows in everyone
/// else's).
pub(crate) const SCANNER_IP: &str = "10.10.40.15";
/// The CI runner that deploys to the web servers.
pub(crate) const CI_IP: &str = "10.10.5.60";
/// The DNS resolver the domain controllers forward to.
pub(crate) const UPSTREAM_DNS: &str = "192.0.2.53";

/// A web service people and machines reach: its name, address and whether
/// it is also fetched over plain HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Site {
    pub name: &'static str,
    pub ip: &'static str,
}

/// Sites browsed on weekdays.
pub(crate) const BROWSED: &[Site] = &[
    Site {
        name: "outlook.office365.com",
        ip: "192.0.2.22",
    },
    Site {
        name: "login.microsoftonline.com",
        ip: "192.0.2.23",
    },
    Site {
        name: "teams.microsoft.com",
        ip: "192.0.2.24",
    },
    Site {
        name: "www.office.com",
        ip: "192.0.2.21",
    },
    Site {
        name: "corp.sharepoint.com",
        ip: "192.0.2.25",
    },
    Site {
        name: "www.google.com",
        ip: "192.0.2.30",
    },
    Site {
        name: "www.bing.com",
        ip: "192.0.2.32",
    },
    Site {
        name: "github.com",
        ip: "192.0.2.50",
    },
    Site {
        name: "www.linkedin.com",
        ip: "192.0.2.51",
    },
    Site {
        name: "en.wikipedia.org",
        ip: "192.0.2.52",
    },
    Site {
        name: "www.salesforce.com",
        ip: "192.0.2.54",
    },
    Site {
        name: "app.slack.com",
        ip: "192.0.2.55",
    },
    Site {
        name: "zoom.us",
        ip: "192.0.2.56",
    },
    Site {
        name: "www.youtube.com",
        ip: "192.0.2.57",
    },
    Site {
        name: "stackoverflow.com",
        ip: "192.0.2.58",
    },
    Site {
        name: "docs.google.com",
        ip: "192.0.2.59",
    },
    Site {
        name: "www.reuters.com",
        ip: "192.0.2.60",
    },
    Site {
        name: "www.bbc.co.uk",
        ip: "192.0.2.61",
    },
    Site {
        name: "www.amazon.com",
        ip: "192.0.2.62",
    },
    Site {
        name: "www.dropbox.com",
        ip: "192.0.2.63",
    },
    Site {
        name: "www.adobe.com",
        ip: "192.0.2.64",
    },
    Site {
        name: "news.ycombinator.com",
        ip: "192.0.2.65",
    },
    Site {
        name: "www.nytimes.com",
        ip: "192.0.2.66",
    },
    Site {
        name: "www.weather.com",
        ip: "192.0.2.67",
    },
    Site {
        name: "static.newsfeed-cdn.net",
        ip: "203.0.113.80",
    },
];

/// Certificate revocation and update checks fetched over plain HTTP by
/// Windows itself (`Microsoft-CryptoAPI/10.0`).
pub(crate) const CRL_SITES: &[Site] = &[
    Site {
        name: "ctldl.windowsupdate.com",
        ip: "192.0.2.40",
    },
    Site {
        name: "ocsp.digicert.com",
        ip: "192.0.2.42",
    },
    Site {
        name: "crl.microsoft.com",
        ip: "192.0.2.43",
    },
];

/// Windows Update, Defender and telemetry endpoints (HTTPS, every host).
pub(crate) const OS_SERVICES: &[Site] = &[
    Site {
        name: "fe3cr.delivery.mp.microsoft.com",
        ip: "192.0.2.44",
    },
    Site {
        name: "wdcp.microsoft.com",
        ip: "192.0.2.45",
    },
    Site {
        name: "v10.events.data.microsoft.com",
        ip: "192.0.2.46",
    },
    Site {
        name: "settings-win.data.microsoft.com",
        ip: "192.0.2.47",
    },
    Site {
        name: "definitionupdates.microsoft.com",
        ip: "192.0.2.48",
    },
];

/// The SaaS monitoring service the servers report to every five minutes.
pub(crate) const MONITORING: Site = Site {
    name: "ingest.saasmon.net",
    ip: "192.0.2.10",
};

/// The anti-virus vendor's cloud lookup zone: file hashes are sent as DNS
/// labels (a long-standing, documented vendor practice that looks exactly
/// like DNS tunnelling).
pub(crate) const AV_LOOKUP_ZONE: &str = "sxl.avcloud-lookup.net";

/// The vendor site the management server's scripts download updates from
/// with `Invoke-WebRequest`.
pub(crate) const VENDOR_UPDATES: Site = Site {
    name: "downloads.vendor-tools.com",
    ip: "192.0.2.70",
};

/// The off-site backup provider the backup server replicates to at night.
pub(crate) const OFFSITE_BACKUP: Site = Site {
    name: "vault.offsite-backup.net",
    ip: "192.0.2.90",
};

// --- intrusion 1: phishing to a workstation, then servers ------------------

/// The phishing stage server (plain HTTP).
pub(crate) const I1_STAGE: Site = Site {
    name: "static.cdn-msftupdate.xyz",
    ip: "203.0.113.45",
};
/// The command-and-control server (HTTPS).
pub(crate) const I1_C2: Site = Site {
    name: "api.telemetry-cloudsvc.com",
    ip: "203.0.113.47",
};

// --- intrusion 2: SSH brute force on a web server -----------------------------

/// The brute-forcing address, which also serves the cron payload.
pub(crate) const I2_ATTACKER: &str = "198.51.100.77";

// --- intrusion 3: trojanised download, Kerberoasting, DNS tunnel ---------------

/// Where the trojanised installer is downloaded from (listed in the intel
/// feed, as is its address).
pub(crate) const I3_DOWNLOAD: Site = Site {
    name: "dl.pdf-converter-free.top",
    ip: "198.51.100.140",
};
/// The stealer's check-in server (listed in the intel feed).
pub(crate) const I3_CHECKIN: Site = Site {
    name: "cdn-static-assets.net",
    ip: "192.0.2.200",
};
/// The zone the stealer tunnels data out through (not in any feed).
pub(crate) const I3_TUNNEL_ZONE: &str = "t.cloud-sync-cdn.net";

/// Internet hosts that scan for SSH all day; the first four are in the
/// intel feed's "known scanners" section.
pub(crate) const INTERNET_SCANNERS: &[&str] = &[
    "203.0.113.201",
    "198.51.100.23",
    "203.0.113.9",
    "198.51.100.190",
    "203.0.113.150",
    "198.51.100.61",
    "203.0.113.77",
    "198.51.100.210",
    "203.0.113.33",
    "198.51.100.5",
    "203.0.113.118",
    "198.51.100.99",
];

/// User names tried by SSH guessers.
pub(crate) const GUESSED_USERS: &[&str] = &[
    "root",
    "admin",
    "test",
    "user",
    "ubuntu",
    "oracle",
    "postgres",
    "git",
    "ftpuser",
    "guest",
    "pi",
    "support",
    "deploy",
    "jenkins",
    "hadoop",
    "mysql",
    "www",
    "administrator",
    "dev",
    "minecraft",
    "tomcat",
    "nagios",
    "backup",
    "ansible",
    "steam",
    "ts3",
    "server",
    "docker",
    "elastic",
    "vagrant",
];
