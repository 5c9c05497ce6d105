//! Mapping Sigma log sources to constraints on Quarry events.
//!
//! A rule's `logsource` (product / category / service, from the Sigma
//! taxonomy) becomes one or more [`Alternative`]s. Each alternative is a set
//! of constraints an event must meet (`Channel` is the Sysmon channel and
//! `EventID` is 1, say) plus field renames from the Sigma taxonomy's names to
//! the names that kind of event carries (Security 4688 names the image
//! `NewProcessName`, not `Image`). A rule is compiled once per alternative;
//! an event matches the rule when it matches any compiled alternative.
//!
//! The tables follow the Sigma taxonomy (sigma-specification appendix and
//! pySigma's Windows/Zeek pipelines); `docs/sigma.md` lists them.

use crate::rule::{LogSource, RuleError};

/// One constraint on an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Constraint {
    /// The field equals one of the values (ignoring ASCII case).
    Equals(&'static str, Vec<&'static str>),
    /// At least one of the fields is present and not empty.
    AnyExists(Vec<&'static str>),
}

/// One way a log source shows up in Quarry events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alternative {
    /// All must hold.
    pub constraints: Vec<Constraint>,
    /// Sigma field name → event field name.
    pub renames: Vec<(&'static str, &'static str)>,
    /// Zeek JSON with flattened names: `id.orig_h` is `id_orig_h`.
    pub dots_to_underscores: bool,
}

impl Alternative {
    fn new(constraints: Vec<Constraint>) -> Self {
        Alternative {
            constraints,
            renames: Vec::new(),
            dots_to_underscores: false,
        }
    }

    fn renames(mut self, renames: &[(&'static str, &'static str)]) -> Self {
        self.renames.extend_from_slice(renames);
        self
    }

    /// The event field a rule field reads under this alternative.
    pub fn event_field(&self, sigma_field: &str) -> String {
        if let Some((_, to)) = self
            .renames
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(sigma_field))
        {
            return (*to).to_owned();
        }
        if self.dots_to_underscores {
            return sigma_field.replace('.', "_");
        }
        sigma_field.to_owned()
    }
}

const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";
const LINUX_SYSMON: &str = "Linux-Sysmon/Operational";
const POWERSHELL: [&str; 2] = [
    "Microsoft-Windows-PowerShell/Operational",
    "PowerShellCore/Operational",
];

fn channel(names: &[&'static str]) -> Constraint {
    Constraint::Equals("Channel", names.to_vec())
}

fn event_id(ids: &[&'static str]) -> Constraint {
    Constraint::Equals("EventID", ids.to_vec())
}

/// Windows `service` → event log channel(s).
const WINDOWS_SERVICES: &[(&str, &[&str])] = &[
    ("security", &["Security"]),
    ("system", &["System"]),
    ("application", &["Application"]),
    ("sysmon", &[SYSMON]),
    ("powershell", &POWERSHELL),
    ("powershell-classic", &["Windows PowerShell"]),
    (
        "taskscheduler",
        &["Microsoft-Windows-TaskScheduler/Operational"],
    ),
    ("wmi", &["Microsoft-Windows-WMI-Activity/Operational"]),
    ("dns-server", &["DNS Server"]),
    (
        "dns-server-analytic",
        &["Microsoft-Windows-DNS-Server/Analytical"],
    ),
    ("dns-server-audit", &["Microsoft-Windows-DNS-Server/Audit"]),
    (
        "dns-client",
        &["Microsoft-Windows-DNS Client Events/Operational"],
    ),
    (
        "driver-framework",
        &["Microsoft-Windows-DriverFrameworks-UserMode/Operational"],
    ),
    ("ntlm", &["Microsoft-Windows-NTLM/Operational"]),
    ("dhcp", &["Microsoft-Windows-DHCP-Server/Operational"]),
    ("msexchange-management", &["MSExchange Management"]),
    (
        "applocker",
        &[
            "Microsoft-Windows-AppLocker/MSI and Script",
            "Microsoft-Windows-AppLocker/EXE and DLL",
            "Microsoft-Windows-AppLocker/Packaged app-Deployment",
            "Microsoft-Windows-AppLocker/Packaged app-Execution",
        ],
    ),
    (
        "printservice-admin",
        &["Microsoft-Windows-PrintService/Admin"],
    ),
    (
        "printservice-operational",
        &["Microsoft-Windows-PrintService/Operational"],
    ),
    (
        "smbclient-security",
        &["Microsoft-Windows-SmbClient/Security"],
    ),
    (
        "smbclient-connectivity",
        &["Microsoft-Windows-SmbClient/Connectivity"],
    ),
    (
        "smbserver-connectivity",
        &["Microsoft-Windows-SMBServer/Connectivity"],
    ),
    (
        "codeintegrity-operational",
        &["Microsoft-Windows-CodeIntegrity/Operational"],
    ),
    (
        "firewall-as",
        &["Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"],
    ),
    (
        "bits-client",
        &["Microsoft-Windows-Bits-Client/Operational"],
    ),
    (
        "windefend",
        &["Microsoft-Windows-Windows Defender/Operational"],
    ),
    (
        "security-mitigations",
        &[
            "Microsoft-Windows-Security-Mitigations/Kernel Mode",
            "Microsoft-Windows-Security-Mitigations/User Mode",
        ],
    ),
    (
        "terminalservices-localsessionmanager",
        &["Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"],
    ),
    ("lsa-server", &["Microsoft-Windows-LSA/Operational"]),
    ("openssh", &["OpenSSH/Operational"]),
    (
        "appxdeployment-server",
        &["Microsoft-Windows-AppXDeploymentServer/Operational"],
    ),
    (
        "appxpackaging-om",
        &["Microsoft-Windows-AppxPackaging/Operational"],
    ),
    ("capi2", &["Microsoft-Windows-CAPI2/Operational"]),
    (
        "certificateservicesclient-lifecycle-system",
        &["Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational"],
    ),
    (
        "diagnosis-scripted",
        &["Microsoft-Windows-Diagnosis-Scripted/Operational"],
    ),
    ("shell-core", &["Microsoft-Windows-Shell-Core/Operational"]),
    ("ldap_debug", &["Microsoft-Windows-LDAP-Client/Debug"]),
    ("vhdmp", &["Microsoft-Windows-VHDMP-Operational"]),
    ("ntfs", &["Microsoft-Windows-Ntfs/Operational"]),
    (
        "bitlocker",
        &["Microsoft-Windows-BitLocker/BitLocker Management"],
    ),
    (
        "iis-configuration",
        &["Microsoft-IIS-Configuration/Operational"],
    ),
    (
        "kernel-shimengine",
        &[
            "Microsoft-Windows-Kernel-ShimEngine/Operational",
            "Microsoft-Windows-Kernel-ShimEngine/Diagnostic",
        ],
    ),
    ("hyper-v-worker", &["Microsoft-Windows-Hyper-V-Worker"]),
    (
        "microsoft-servicebus-client",
        &["Microsoft-ServiceBus-Client"],
    ),
];

/// Windows `category` → Sysmon event ids.
const SYSMON_CATEGORIES: &[(&str, &[&str])] = &[
    ("process_creation", &["1"]),
    ("file_change", &["2"]),
    ("network_connection", &["3"]),
    ("sysmon_status", &["4", "16"]),
    ("process_termination", &["5"]),
    ("driver_load", &["6"]),
    ("image_load", &["7"]),
    ("create_remote_thread", &["8"]),
    ("raw_access_thread", &["9"]),
    ("process_access", &["10"]),
    ("file_event", &["11"]),
    ("registry_add", &["12"]),
    ("registry_delete", &["12"]),
    ("registry_set", &["13"]),
    ("registry_rename", &["14"]),
    ("registry_event", &["12", "13", "14"]),
    ("create_stream_hash", &["15"]),
    ("pipe_created", &["17", "18"]),
    ("wmi_event", &["19", "20", "21"]),
    ("dns_query", &["22"]),
    ("file_delete", &["23", "26"]),
    ("file_delete_detected", &["26"]),
    ("clipboard_capture", &["24"]),
    ("process_tampering", &["25"]),
    ("file_block_executable", &["27"]),
    ("file_block_shredding", &["28"]),
    ("file_executable_detected", &["29"]),
    ("sysmon_error", &["255"]),
];

/// Linux `category` → Sysmon for Linux event ids.
const LINUX_SYSMON_CATEGORIES: &[(&str, &[&str])] = &[
    ("process_creation", &["1"]),
    ("network_connection", &["3"]),
    ("process_termination", &["5"]),
    ("raw_access_thread", &["9"]),
    ("file_event", &["11"]),
    ("file_delete", &["23"]),
];

/// Linux `service` → syslog program names.
const LINUX_SERVICES: &[(&str, &[&str])] = &[
    ("sshd", &["sshd"]),
    ("cron", &["cron", "crond", "CRON"]),
    ("sudo", &["sudo"]),
    ("su", &["su"]),
    ("vsftpd", &["vsftpd"]),
    ("clamav", &["clamd", "freshclam", "clamav"]),
    ("guacamole", &["guacd"]),
    ("sssd", &["sssd"]),
    ("modsecurity", &["modsecurity"]),
    (
        "auth",
        &[
            "sshd", "sudo", "su", "login", "passwd", "useradd", "usermod", "groupadd",
        ],
    ),
];

/// Web proxy taxonomy (W3C / Squid style names) → Zeek `http.log`.
const PROXY_TO_ZEEK_HTTP: &[(&str, &str)] = &[
    ("c-uri", "uri"),
    ("c-uri-query", "uri"),
    ("c-uri-stem", "uri"),
    ("c-useragent", "user_agent"),
    ("cs-method", "method"),
    ("cs-host", "host"),
    ("cs-referrer", "referrer"),
    ("cs-referer", "referrer"),
    ("sc-status", "status_code"),
    ("r-dns", "host"),
    ("cs-version", "version"),
    ("c-ip", "id.orig_h"),
    ("dst-ip", "id.resp_h"),
    ("cs-bytes", "request_body_len"),
    ("sc-bytes", "response_body_len"),
];

/// DNS taxonomy → Zeek `dns.log`.
const DNS_TO_ZEEK: &[(&str, &str)] = &[
    ("record_type", "qtype_name"),
    ("answer", "answers"),
    ("src_ip", "id.orig_h"),
    ("dst_ip", "id.resp_h"),
    ("response_code", "rcode_name"),
];

/// Firewall taxonomy → Zeek `conn.log`.
const FIREWALL_TO_ZEEK: &[(&str, &str)] = &[
    ("src_ip", "id.orig_h"),
    ("src_port", "id.orig_p"),
    ("dst_ip", "id.resp_h"),
    ("dst_port", "id.resp_p"),
];

fn lookup<'a>(table: &'a [(&str, &'a [&'a str])], key: &str) -> Option<&'a [&'a str]> {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Zeek log `name`: JSON streaming logs say it in `@stream` (names flattened
/// with underscores), classic TSV logs in `_path`.
fn zeek(name: &'static str, renames: &[(&'static str, &'static str)]) -> Vec<Alternative> {
    let mut json = Alternative::new(vec![Constraint::Equals("@stream", vec![name])]);
    json.renames = renames
        .iter()
        .map(|&(from, to)| (from, leak_underscored(to)))
        .collect();
    json.dots_to_underscores = true;
    vec![
        json,
        Alternative::new(vec![Constraint::Equals("_path", vec![name])]).renames(renames),
    ]
}

/// `id.orig_h` → `id_orig_h`, for the static rename tables.
fn leak_underscored(name: &'static str) -> &'static str {
    match name {
        "id.orig_h" => "id_orig_h",
        "id.orig_p" => "id_orig_p",
        "id.resp_h" => "id_resp_h",
        "id.resp_p" => "id_resp_p",
        other => other,
    }
}

/// The alternatives of a rule's log source.
pub fn alternatives(ls: &LogSource) -> Result<Vec<Alternative>, RuleError> {
    let unmapped = || RuleError::UnmappedLogsource(ls.to_string());
    let product = ls.product.as_deref();
    let category = ls.category.as_deref();
    let service = ls.service.as_deref();
    let alts = match (product, category, service) {
        (Some("windows"), None, Some(service)) => {
            let channels = lookup(WINDOWS_SERVICES, service).ok_or_else(unmapped)?;
            vec![Alternative::new(vec![channel(channels)])]
        }
        (Some("windows"), Some(category), service) => {
            let mut alts = windows_category(category).ok_or_else(unmapped)?;
            if let Some(service) = service {
                let channels = lookup(WINDOWS_SERVICES, service).ok_or_else(unmapped)?;
                for alt in &mut alts {
                    alt.constraints.push(channel(channels));
                }
            }
            alts
        }
        (Some("windows"), None, None) => {
            vec![Alternative::new(vec![Constraint::AnyExists(vec![
                "Channel",
            ])])]
        }
        (Some("linux"), None, Some("auditd")) => {
            vec![Alternative::new(vec![Constraint::AnyExists(vec!["type"])])]
        }
        (Some("linux"), None, Some("syslog")) => {
            vec![Alternative::new(vec![Constraint::AnyExists(vec![
                "program",
            ])])]
        }
        (Some("linux"), None, Some(service)) => {
            let programs = lookup(LINUX_SERVICES, service).ok_or_else(unmapped)?;
            vec![Alternative::new(vec![Constraint::Equals(
                "program",
                programs.to_vec(),
            )])]
        }
        (Some("linux"), Some(category), None) => {
            let ids = lookup(LINUX_SYSMON_CATEGORIES, category).ok_or_else(unmapped)?;
            vec![Alternative::new(vec![
                channel(&[LINUX_SYSMON]),
                event_id(ids),
            ])]
        }
        (Some("linux"), None, None) => vec![
            Alternative::new(vec![Constraint::AnyExists(vec!["program"])]),
            Alternative::new(vec![Constraint::AnyExists(vec!["type"])]),
        ],
        (Some("zeek"), None, Some(service)) => {
            let name = ZEEK_LOGS
                .iter()
                .find(|&&n| n == service)
                .ok_or_else(unmapped)?;
            zeek(name, &[])
        }
        (Some("aws"), None, Some("cloudtrail")) => vec![Alternative::new(vec![
            Constraint::AnyExists(vec!["eventSource"]),
            Constraint::AnyExists(vec!["eventName"]),
        ])],
        (None, Some("proxy"), None) => {
            let mut alts = zeek("http", PROXY_TO_ZEEK_HTTP);
            alts.push(Alternative::new(vec![Constraint::AnyExists(vec![
                "c-uri",
                "cs-host",
                "c-useragent",
                "cs-method",
            ])]));
            alts
        }
        (None, Some("webserver"), None) => {
            vec![Alternative::new(vec![Constraint::AnyExists(vec![
                "cs-uri-query",
                "cs-uri-stem",
                "cs-uri",
                "cs-method",
                "c-uri",
            ])])]
        }
        (None, Some("dns"), None) => {
            let mut alts = zeek("dns", DNS_TO_ZEEK);
            alts.push(Alternative::new(vec![
                Constraint::AnyExists(vec!["query"]),
                Constraint::AnyExists(vec!["record_type", "answer"]),
            ]));
            alts
        }
        (None, Some("firewall"), None) => {
            let mut alts = zeek("conn", FIREWALL_TO_ZEEK);
            alts.push(Alternative::new(vec![Constraint::AnyExists(vec![
                "dst_ip", "src_ip",
            ])]));
            alts
        }
        _ => return Err(unmapped()),
    };
    Ok(alts)
}

/// Zeek log names (the `service` of `product: zeek` rules).
const ZEEK_LOGS: &[&str] = &[
    "conn",
    "dns",
    "http",
    "ssl",
    "x509",
    "files",
    "dce_rpc",
    "smb_files",
    "smb_mapping",
    "kerberos",
    "rdp",
    "ntlm",
    "notice",
    "weird",
    "pe",
    "ssh",
    "smtp",
    "ftp",
    "dhcp",
    "software",
    "tunnel",
    "snmp",
    "sip",
    "radius",
    "irc",
    "mysql",
];

fn windows_category(category: &str) -> Option<Vec<Alternative>> {
    let powershell = |id: &'static str| {
        vec![Alternative::new(vec![
            channel(&POWERSHELL),
            event_id(&[id]),
        ])]
    };
    let classic = |id: &'static str| {
        vec![Alternative::new(vec![
            channel(&["Windows PowerShell"]),
            event_id(&[id]),
        ])]
    };
    Some(match category {
        "ps_script" => powershell("4104"),
        "ps_module" => powershell("4103"),
        "ps_classic_start" => classic("400"),
        "ps_classic_provider_start" => classic("600"),
        "ps_classic_script_start" => classic("800"),
        _ => {
            let ids = lookup(SYSMON_CATEGORIES, category)?;
            let mut alts = vec![Alternative::new(vec![channel(&[SYSMON]), event_id(ids)])];
            // The same activity seen by Windows' own auditing.
            match category {
                "process_creation" => alts.push(
                    Alternative::new(vec![channel(&["Security"]), event_id(&["4688"])]).renames(&[
                        ("Image", "NewProcessName"),
                        ("ParentImage", "ParentProcessName"),
                    ]),
                ),
                "network_connection" => alts.push(
                    Alternative::new(vec![channel(&["Security"]), event_id(&["5156"])]).renames(&[
                        ("Image", "Application"),
                        ("DestinationIp", "DestAddress"),
                        ("DestinationPort", "DestPort"),
                        ("SourceIp", "SourceAddress"),
                    ]),
                ),
                "registry_set" | "registry_event" => alts.push(
                    Alternative::new(vec![channel(&["Security"]), event_id(&["4657"])]).renames(&[
                        ("TargetObject", "ObjectName"),
                        ("Details", "NewValue"),
                        ("Image", "ProcessName"),
                    ]),
                ),
                _ => {}
            }
            alts
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(product: Option<&str>, category: Option<&str>, service: Option<&str>) -> LogSource {
        LogSource {
            product: product.map(str::to_owned),
            category: category.map(str::to_owned),
            service: service.map(str::to_owned),
        }
    }

    #[test]
    fn process_creation_is_sysmon_1_or_security_4688() {
        let alts = alternatives(&ls(Some("windows"), Some("process_creation"), None)).unwrap();
        assert_eq!(alts.len(), 2);
        assert_eq!(alts[0].constraints, [channel(&[SYSMON]), event_id(&["1"])]);
        assert_eq!(alts[0].event_field("Image"), "Image");
        assert_eq!(alts[1].event_field("Image"), "NewProcessName");
        assert_eq!(alts[1].event_field("ParentImage"), "ParentProcessName");
        assert_eq!(alts[1].event_field("CommandLine"), "CommandLine");
    }

    #[test]
    fn services_and_other_products() {
        let alts = alternatives(&ls(Some("windows"), None, Some("security"))).unwrap();
        assert_eq!(alts[0].constraints, [channel(&["Security"])]);
        let alts = alternatives(&ls(Some("zeek"), None, Some("smb_files"))).unwrap();
        assert_eq!(alts.len(), 2);
        assert_eq!(alts[0].event_field("id.orig_h"), "id_orig_h");
        assert_eq!(alts[1].event_field("id.orig_h"), "id.orig_h");
        let alts = alternatives(&ls(None, Some("proxy"), None)).unwrap();
        assert_eq!(alts[0].event_field("c-useragent"), "user_agent");
        assert_eq!(alts[0].event_field("c-ip"), "id_orig_h");
        assert_eq!(alts[2].event_field("c-useragent"), "c-useragent");
        let alts = alternatives(&ls(Some("linux"), None, Some("sshd"))).unwrap();
        assert_eq!(
            alts[0].constraints,
            [Constraint::Equals("program", vec!["sshd"])]
        );
    }

    #[test]
    fn unknown_sources_are_named() {
        let err = alternatives(&ls(Some("macos"), Some("process_creation"), None)).unwrap_err();
        assert_eq!(
            err.reason(),
            "unmapped logsource [product:macos category:process_creation]"
        );
        assert!(alternatives(&ls(Some("windows"), None, Some("nonsense"))).is_err());
    }
}
