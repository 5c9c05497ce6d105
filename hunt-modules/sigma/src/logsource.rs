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
//! The tables follow the Sigma taxonomy (sigma-specification appendix v2.1.0
//! and SigmaHQ's `tests/logsource.json`; older names from pySigma's Windows
//! pipeline are kept as aliases). Cloud sources are mapped to the JSON their
//! service exports, one record per line, and gated on a field that names
//! that export (CloudTrail's `eventSource`, Okta's `published`, a Log
//! Analytics row's `Type`), so the rules of one cloud never run on another's
//! records. Log sources that Quarry's ingest cannot carry are refused with
//! the reason ([`REFUSED`]). `docs/sigma.md` lists both.

use crate::rule::{LogSource, RuleError};

/// One constraint on an event.
///
/// A gate on a field outside the static field catalogue pairs
/// `Equals(f, …)` with `AnyExists([f])`: a catalogue-bound engine leaves an
/// `Equals` on a field it cannot project out of the gate, and the
/// `AnyExists` (which it can then never meet) keeps the gate closed instead
/// of open to every event.
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
    /// Sigma field name → event field name (the Sigma name matched ignoring
    /// ASCII case, so `eventtype` finds the `eventType` rename).
    pub renames: Vec<(&'static str, &'static str)>,
    /// Zeek JSON with flattened names: `id.orig_h` is `id_orig_h`.
    pub dots_to_underscores: bool,
    /// `(from, to)`: a Sigma field under prefix `from` is read under `to`,
    /// its later dotted segments turned from snake_case into lowerCamelCase
    /// (`gcp.audit.request_metadata.caller_ip` →
    /// `protoPayload.requestMetadata.callerIp`).
    pub camel_case_under: Option<(&'static str, &'static str)>,
}

impl Alternative {
    fn new(constraints: Vec<Constraint>) -> Self {
        Alternative {
            constraints,
            renames: Vec::new(),
            dots_to_underscores: false,
            camel_case_under: None,
        }
    }

    /// An alternative to build up with [`Alternative::is`] and
    /// [`Alternative::has`].
    fn when() -> Self {
        Alternative::new(Vec::new())
    }

    /// `field` is present and equals one of `values` (a fail-closed pair,
    /// see [`Constraint`]).
    fn is(mut self, field: &'static str, values: &[&'static str]) -> Self {
        self.constraints
            .push(Constraint::Equals(field, values.to_vec()));
        self.constraints.push(Constraint::AnyExists(vec![field]));
        self
    }

    /// One of `fields` is present.
    fn has(mut self, fields: &[&'static str]) -> Self {
        self.constraints
            .push(Constraint::AnyExists(fields.to_vec()));
        self
    }

    fn renames(mut self, renames: &[(&'static str, &'static str)]) -> Self {
        self.renames.extend_from_slice(renames);
        self
    }

    fn camel_case_under(mut self, from: &'static str, to: &'static str) -> Self {
        self.camel_case_under = Some((from, to));
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
        if let Some((from, to)) = self.camel_case_under
            && let Some(rest) = sigma_field
                .get(..from.len())
                .filter(|head| head.eq_ignore_ascii_case(from))
                .map(|_| &sigma_field[from.len()..])
        {
            return format!("{to}{}", snake_to_camel(rest));
        }
        if self.dots_to_underscores {
            return sigma_field.replace('.', "_");
        }
        sigma_field.to_owned()
    }
}

/// `request.source_ranges` → `request.sourceRanges`.
fn snake_to_camel(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            '.' => {
                upper = false;
                out.push('.');
            }
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------------

const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";
const LINUX_SYSMON: &str = "Linux-Sysmon/Operational";
const POWERSHELL: [&str; 2] = [
    "Microsoft-Windows-PowerShell/Operational",
    "PowerShellCore/Operational",
];
const LDAP_CLIENT: &str = "Microsoft-Windows-LDAP-Client/Debug";
/// The taxonomy's two channels, and pySigma's name for them.
const SERVICEBUS_CLIENT: [&str; 3] = [
    "Microsoft-ServiceBus-Client/Operational",
    "Microsoft-ServiceBus-Client/Admin",
    "Microsoft-ServiceBus-Client",
];
const WINDEFEND: &str = "Microsoft-Windows-Windows Defender/Operational";

fn channel(names: &[&'static str]) -> Constraint {
    Constraint::Equals("Channel", names.to_vec())
}

fn event_id(ids: &[&'static str]) -> Constraint {
    Constraint::Equals("EventID", ids.to_vec())
}

/// Windows `service` → event log channel(s): every service of the taxonomy
/// appendix, then the older or extra names SigmaHQ rules and pySigma use.
/// Where the appendix names an ETW provider or a Splunk-style source rather
/// than the Event Viewer channel, both are listed.
const WINDOWS_SERVICES: &[(&str, &[&str])] = &[
    ("application", &["Application"]),
    (
        "application-experience",
        &[
            "Microsoft-Windows-Application-Experience/Program-Telemetry",
            "Microsoft-Windows-Application-Experience/Program-Compatibility-Assistant",
        ],
    ),
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
        "appmodel-runtime",
        &["Microsoft-Windows-AppModel-Runtime/Admin"],
    ),
    (
        "appxdeployment-server",
        &["Microsoft-Windows-AppXDeploymentServer/Operational"],
    ),
    (
        "appxpackaging-om",
        &["Microsoft-Windows-AppxPackaging/Operational"],
    ),
    (
        "bitlocker",
        &["Microsoft-Windows-BitLocker/BitLocker Management"],
    ),
    (
        "bits-client",
        &["Microsoft-Windows-Bits-Client/Operational"],
    ),
    ("capi2", &["Microsoft-Windows-CAPI2/Operational"]),
    (
        "certificateservicesclient-lifecycle-system",
        &["Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational"],
    ),
    (
        "codeintegrity-operational",
        &["Microsoft-Windows-CodeIntegrity/Operational"],
    ),
    ("dhcp", &["Microsoft-Windows-DHCP-Server/Operational"]),
    (
        "diagnosis-scripted",
        &["Microsoft-Windows-Diagnosis-Scripted/Operational"],
    ),
    (
        "dns-client",
        &["Microsoft-Windows-DNS Client Events/Operational"],
    ),
    ("dns-server", &["DNS Server"]),
    (
        "dns-server-analytic",
        &["Microsoft-Windows-DNS-Server/Analytical"],
    ),
    ("dns-server-audit", &["Microsoft-Windows-DNS-Server/Audit"]),
    (
        "driver-framework",
        &["Microsoft-Windows-DriverFrameworks-UserMode/Operational"],
    ),
    (
        "firewall-as",
        &["Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"],
    ),
    (
        "hyper-v-worker",
        &[
            "Microsoft-Windows-Hyper-V-Worker",
            "Microsoft-Windows-Hyper-V-Worker-Admin",
        ],
    ),
    (
        "iis-configuration",
        &["Microsoft-IIS-Configuration/Operational"],
    ),
    (
        "kernel-event-tracing",
        &[
            "Microsoft-Windows-Kernel-EventTracing",
            "Microsoft-Windows-Kernel-EventTracing/Admin",
        ],
    ),
    (
        "kernel-shimengine",
        &[
            "Microsoft-Windows-Kernel-ShimEngine/Operational",
            "Microsoft-Windows-Kernel-ShimEngine/Diagnostic",
        ],
    ),
    ("ldap", &[LDAP_CLIENT]),
    ("lsa-server", &["Microsoft-Windows-LSA/Operational"]),
    ("msexchange-management", &["MSExchange Management"]),
    ("ntfs", &["Microsoft-Windows-Ntfs/Operational"]),
    ("ntlm", &["Microsoft-Windows-NTLM/Operational"]),
    ("openssh", &["OpenSSH/Operational"]),
    ("powershell", &POWERSHELL),
    ("powershell-classic", &["Windows PowerShell"]),
    (
        "printservice-admin",
        &["Microsoft-Windows-PrintService/Admin"],
    ),
    (
        "printservice-operational",
        &["Microsoft-Windows-PrintService/Operational"],
    ),
    ("security", &["Security"]),
    (
        "security-mitigations",
        &[
            "Microsoft-Windows-Security-Mitigations/Kernel Mode",
            "Microsoft-Windows-Security-Mitigations/User Mode",
        ],
    ),
    ("sense", &["Microsoft-Windows-SENSE/Operational"]),
    ("servicebus-client", &SERVICEBUS_CLIENT),
    ("shell-core", &["Microsoft-Windows-Shell-Core/Operational"]),
    (
        "smbclient-security",
        &["Microsoft-Windows-SmbClient/Security"],
    ),
    ("sysmon", &[SYSMON]),
    ("system", &["System"]),
    (
        "taskscheduler",
        &["Microsoft-Windows-TaskScheduler/Operational"],
    ),
    (
        "terminalservices-localsessionmanager",
        &["Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"],
    ),
    (
        "vhdmp",
        &[
            "Microsoft-Windows-VHDMP-Operational",
            "Microsoft-Windows-VHDMP/Operational",
        ],
    ),
    ("windefend", &[WINDEFEND]),
    ("wmi", &["Microsoft-Windows-WMI-Activity/Operational"]),
    // Not in the appendix: pySigma's older names and services SigmaHQ
    // rules use.
    ("ldap_debug", &[LDAP_CLIENT]),
    ("microsoft-servicebus-client", &SERVICEBUS_CLIENT),
    (
        "smbclient-connectivity",
        &["Microsoft-Windows-SmbClient/Connectivity"],
    ),
    (
        "smbserver-connectivity",
        &["Microsoft-Windows-SMBServer/Connectivity"],
    ),
];

/// Windows `category` → Sysmon event ids (taxonomy appendix; the last
/// three are `tests/logsource.json` names).
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
    ("clipboard_capture", &["24"]),
    ("process_tampering", &["25"]),
    ("file_delete_detected", &["26"]),
    ("file_block_executable", &["27"]),
    ("file_block_shredding", &["28"]),
    ("file_executable_detected", &["29"]),
    ("sysmon_error", &["255"]),
    ("raw_access_read", &["9"]),
    ("file_block", &["27", "28"]),
];

/// Windows PowerShell categories → (channels, event id).
const POWERSHELL_CATEGORIES: &[(&str, &[&str], &str)] = &[
    ("ps_module", &POWERSHELL, "4103"),
    ("ps_script", &POWERSHELL, "4104"),
    ("ps_classic_start", &["Windows PowerShell"], "400"),
    ("ps_classic_provider_start", &["Windows PowerShell"], "600"),
    ("ps_classic_script", &["Windows PowerShell"], "800"),
];

fn windows_category(category: &str) -> Option<Vec<Alternative>> {
    if let Some((_, channels, id)) = POWERSHELL_CATEGORIES.iter().find(|(c, ..)| *c == category) {
        return Some(vec![Alternative::new(vec![
            channel(channels),
            event_id(&[id]),
        ])]);
    }
    let ids = lookup(SYSMON_CATEGORIES, category)?;
    let mut alts = vec![Alternative::new(vec![channel(&[SYSMON]), event_id(ids)])];
    // The same activity seen by Windows' own auditing.
    let security =
        |id: &'static str| Alternative::new(vec![channel(&["Security"]), event_id(&[id])]);
    match category {
        // In 4688 `ProcessId` is the creator's id; the new process's is
        // `NewProcessId`.
        "process_creation" => alts.push(security("4688").renames(&[
            ("Image", "NewProcessName"),
            ("ParentImage", "ParentProcessName"),
            ("ProcessId", "NewProcessId"),
            ("ParentProcessId", "ProcessId"),
        ])),
        "process_termination" => alts.push(security("4689").renames(&[("Image", "ProcessName")])),
        "network_connection" => alts.push(security("5156").renames(&[
            ("Image", "Application"),
            ("DestinationIp", "DestAddress"),
            ("DestinationPort", "DestPort"),
            ("SourceIp", "SourceAddress"),
        ])),
        "registry_set" | "registry_event" => alts.push(security("4657").renames(&[
            ("TargetObject", "ObjectName"),
            ("Details", "NewValue"),
            ("Image", "ProcessName"),
        ])),
        _ => {}
    }
    Some(alts)
}

fn windows(category: Option<&str>, service: Option<&str>) -> Option<Vec<Alternative>> {
    Some(match (category, service) {
        (None, Some(service)) => vec![Alternative::new(vec![channel(lookup(
            WINDOWS_SERVICES,
            service,
        )?)])],
        (Some(category), service) => {
            let mut alts = windows_category(category)?;
            if let Some(service) = service {
                let channels = lookup(WINDOWS_SERVICES, service)?;
                for alt in &mut alts {
                    alt.constraints.push(channel(channels));
                }
            }
            alts
        }
        (None, None) => vec![Alternative::new(vec![Constraint::AnyExists(vec![
            "Channel",
        ])])],
    })
}

// ---------------------------------------------------------------------------
// Linux
// ---------------------------------------------------------------------------

/// Linux `category` → Sysmon for Linux event ids (taxonomy appendix, then
/// `tests/logsource.json`).
const LINUX_SYSMON_CATEGORIES: &[(&str, &[&str])] = &[
    ("process_creation", &["1"]),
    ("network_connection", &["3"]),
    ("file_event", &["11"]),
    ("sysmon_status", &["4", "16"]),
    ("process_termination", &["5"]),
    ("raw_access_read", &["9"]),
    ("raw_access_thread", &["9"]),
    ("file_delete", &["23"]),
];

/// Linux `service` → syslog program names (`auth` also takes the
/// `auth`/`authpriv` facility, see [`linux`]).
const LINUX_SERVICES: &[(&str, &[&str])] = &[
    (
        "auth",
        &[
            "sshd",
            "sudo",
            "su",
            "login",
            "passwd",
            "useradd",
            "usermod",
            "userdel",
            "groupadd",
            "groupmod",
            "groupdel",
            "chpasswd",
            "chage",
            "gpasswd",
            "pkexec",
            "polkitd",
            "systemd-logind",
            "unix_chkpwd",
        ],
    ),
    ("clamav", &["clamd", "freshclam", "clamav", "clamav-milter"]),
    ("cron", &["cron", "crond", "anacron"]),
    ("guacamole", &["guacd", "guacamole"]),
    ("sshd", &["sshd"]),
    ("sudo", &["sudo"]),
    ("vsftpd", &["vsftpd"]),
    // Not in the appendix; `modsecurity` is in `tests/logsource.json`.
    ("modsecurity", &["modsecurity"]),
    ("sssd", &["sssd"]),
    ("su", &["su"]),
];

fn linux(category: Option<&str>, service: Option<&str>) -> Option<Vec<Alternative>> {
    let sysmon =
        |ids: &[&'static str]| Alternative::new(vec![channel(&[LINUX_SYSMON]), event_id(ids)]);
    Some(match (category, service) {
        (None, Some("auditd")) => vec![Alternative::new(vec![Constraint::AnyExists(vec!["type"])])],
        (None, Some("syslog")) => vec![Alternative::new(vec![Constraint::AnyExists(vec![
            "program",
        ])])],
        (None, Some("sysmon")) => vec![Alternative::new(vec![channel(&[LINUX_SYSMON])])],
        (None, Some(service)) => {
            let programs = lookup(LINUX_SERVICES, service)?;
            let mut alts = vec![Alternative::new(vec![Constraint::Equals(
                "program",
                programs.to_vec(),
            )])];
            if service == "auth" {
                alts.push(Alternative::new(vec![Constraint::Equals(
                    "facility",
                    vec!["auth", "authpriv"],
                )]));
            }
            alts
        }
        (Some(category), None) => vec![sysmon(lookup(LINUX_SYSMON_CATEGORIES, category)?)],
        (None, None) => vec![
            Alternative::new(vec![Constraint::AnyExists(vec!["program"])]),
            Alternative::new(vec![Constraint::AnyExists(vec!["type"])]),
        ],
        (Some(_), Some(_)) => return None,
    })
}

// ---------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------

/// Zeek log names (the `service` of `product: zeek` rules): the taxonomy's
/// seven and the other logs a default Zeek writes.
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

/// Generic `network` / `connection` (ECS names) → Zeek `conn.log`.
const CONNECTION_TO_ZEEK: &[(&str, &str)] = &[
    ("source.ip", "id.orig_h"),
    ("source.port", "id.orig_p"),
    ("destination.ip", "id.resp_h"),
    ("destination.port", "id.resp_p"),
    ("event.duration", "duration"),
    ("network.transport", "proto"),
    ("network.protocol", "service"),
    ("network.community_id", "community_id"),
    ("network.state", "conn_state"),
    ("network.history", "history"),
    ("source.packets", "orig_pkts"),
    ("destination.packets", "resp_pkts"),
    ("source.bytes", "orig_bytes"),
    ("destination.bytes", "resp_bytes"),
];

/// Generic `network` / `connection` (ECS names) → Suricata EVE `flow`.
const CONNECTION_TO_SURICATA: &[(&str, &str)] = &[
    ("source.ip", "src_ip"),
    ("source.port", "src_port"),
    ("destination.ip", "dest_ip"),
    ("destination.port", "dest_port"),
    ("network.transport", "proto"),
    ("network.protocol", "app_proto"),
    ("network.community_id", "community_id"),
    ("network.state", "flow.state"),
    ("source.packets", "flow.pkts_toserver"),
    ("destination.packets", "flow.pkts_toclient"),
    ("source.bytes", "flow.bytes_toserver"),
    ("destination.bytes", "flow.bytes_toclient"),
];

/// Generic `network` / `dns` (ECS names) → Zeek `dns.log`.
const NETWORK_DNS_TO_ZEEK: &[(&str, &str)] = &[
    ("source.ip", "id.orig_h"),
    ("source.port", "id.orig_p"),
    ("destination.ip", "id.resp_h"),
    ("destination.port", "id.resp_p"),
    ("network.community_id", "community_id"),
    ("dns.id", "trans_id"),
    ("dns.question.name", "query"),
    ("dns.question.type", "qtype_name"),
    ("dns.question.class", "qclass_name"),
    ("dns.answers.data", "answers"),
    ("dns.answers.ttl", "TTLs"),
    ("dns.response.code", "rcode_name"),
];

/// Generic `network` / `dns` (ECS names) → Suricata EVE `dns`.
const NETWORK_DNS_TO_SURICATA: &[(&str, &str)] = &[
    ("source.ip", "src_ip"),
    ("source.port", "src_port"),
    ("destination.ip", "dest_ip"),
    ("destination.port", "dest_port"),
    ("network.community_id", "community_id"),
    ("dns.id", "dns.id"),
    ("dns.question.name", "dns.rrname"),
    ("dns.question.type", "dns.rrtype"),
    ("dns.answers.data", "dns.answers"),
    ("dns.response.code", "dns.rcode"),
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

/// Suricata EVE events of the given `event_type`s.
fn suricata(event_types: &[&'static str], renames: &[(&'static str, &'static str)]) -> Alternative {
    Alternative::when()
        .is("event_type", event_types)
        .renames(renames)
}

/// The product-less categories: `proxy`, `webserver`, `dns`, `firewall`,
/// `antivirus`.
///
/// The first four read only fields of the static catalogue: a worker older
/// than contract 0.2.2 projects nothing else, and one alternative renaming
/// to a field outside it (Suricata's `http.url`, say) would refuse the whole
/// rule there. Suricata EVE events are therefore mapped under the newer
/// `network` category only.
fn generic_category(category: &str) -> Option<Vec<Alternative>> {
    Some(match category {
        "proxy" => {
            let mut alts = zeek("http", PROXY_TO_ZEEK_HTTP);
            alts.push(Alternative::new(vec![Constraint::AnyExists(vec![
                "c-uri",
                "cs-host",
                "c-useragent",
                "cs-method",
            ])]));
            alts
        }
        "webserver" => vec![Alternative::new(vec![Constraint::AnyExists(vec![
            "cs-uri-query",
            "cs-uri-stem",
            "cs-uri",
            "cs-method",
            "c-uri",
        ])])],
        "dns" => {
            let mut alts = zeek("dns", DNS_TO_ZEEK);
            alts.push(Alternative::new(vec![
                Constraint::AnyExists(vec!["query"]),
                Constraint::AnyExists(vec!["record_type", "answer"]),
            ]));
            alts
        }
        "firewall" => {
            let mut alts = zeek("conn", FIREWALL_TO_ZEEK);
            alts.push(Alternative::new(vec![Constraint::AnyExists(vec![
                "dst_ip", "src_ip",
            ])]));
            alts
        }
        // Vendor-neutral antivirus fields on Microsoft Defender's detection
        // (1116) and action (1117) events.
        "antivirus" => vec![
            Alternative::new(vec![channel(&[WINDEFEND]), event_id(&["1116", "1117"])]).renames(&[
                ("Signature", "Threat Name"),
                ("Filename", "Path"),
                ("Action", "Action Name"),
            ]),
        ],
        _ => return None,
    })
}

/// `category: network` with `service: connection` / `dns` (taxonomy
/// v2.1.0, ECS field names): Zeek, Suricata, or events already in ECS.
fn network(service: &str) -> Option<Vec<Alternative>> {
    Some(match service {
        "connection" => {
            let mut alts = zeek("conn", CONNECTION_TO_ZEEK);
            alts.push(suricata(&["flow", "netflow"], CONNECTION_TO_SURICATA));
            alts.push(Alternative::when().has(&["source.ip", "destination.ip"]));
            alts
        }
        "dns" => {
            let mut alts = zeek("dns", NETWORK_DNS_TO_ZEEK);
            alts.push(suricata(&["dns"], NETWORK_DNS_TO_SURICATA));
            alts.push(Alternative::when().has(&["dns.question.name"]));
            alts
        }
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Cloud and SaaS
// ---------------------------------------------------------------------------

/// Azure Activity Log categories (Azure Monitor export).
const AZURE_ACTIVITY_CATEGORIES: &[&str] = &[
    "Administrative",
    "ServiceHealth",
    "ResourceHealth",
    "Alert",
    "Autoscale",
    "Recommendation",
    "Security",
    "Policy",
];

/// Log Analytics (Sentinel) sign-in tables.
const AZURE_SIGNIN_TABLES: &[&str] = &[
    "SigninLogs",
    "AADNonInteractiveUserSignInLogs",
    "AADServicePrincipalSignInLogs",
    "AADManagedIdentitySignInLogs",
];

/// Entra ID audit-log names in the Azure Monitor export (`properties.*`) →
/// Log Analytics `AuditLogs` columns.
const AZURE_AUDIT_TO_LOG_ANALYTICS: &[(&str, &str)] = &[
    ("operationName", "OperationName"),
    ("properties.activityDisplayName", "ActivityDisplayName"),
    ("properties.additionalDetails", "AdditionalDetails"),
    ("properties.category", "Category"),
    ("properties.initiatedBy", "InitiatedBy"),
    ("properties.loggedByService", "LoggedByService"),
    ("properties.result", "Result"),
    ("properties.resultReason", "ResultReason"),
    ("properties.targetResources", "TargetResources"),
];

/// Okta System Log fields as the rules write them (lowercase) → the API's
/// camelCase (matched ignoring case). `target` is a list: its first entry.
const OKTA_FIELDS: &[(&str, &str)] = &[
    ("eventType", "eventType"),
    ("legacyEventType", "legacyEventType"),
    ("displayMessage", "displayMessage"),
    ("actor.alternateId", "actor.alternateId"),
    ("actor.displayName", "actor.displayName"),
    ("client.ipAddress", "client.ipAddress"),
    (
        "client.userAgent.rawUserAgent",
        "client.userAgent.rawUserAgent",
    ),
    ("client.userAgent.os", "client.userAgent.os"),
    ("client.userAgent.browser", "client.userAgent.browser"),
    ("securityContext.isProxy", "securityContext.isProxy"),
    ("securityContext.asOrg", "securityContext.asOrg"),
    ("securityContext.isp", "securityContext.isp"),
    (
        "debugContext.debugData.behaviors",
        "debugContext.debugData.behaviors",
    ),
    (
        "debugContext.debugData.logOnlySecurityData",
        "debugContext.debugData.logOnlySecurityData",
    ),
    (
        "debugContext.debugData.requestUri",
        "debugContext.debugData.requestUri",
    ),
    (
        "debugContext.debugData.threatSuspected",
        "debugContext.debugData.threatSuspected",
    ),
    ("target.alternateId", "target.0.alternateId"),
    ("target.displayName", "target.0.displayName"),
    ("target.type", "target.0.type"),
];

fn azure(service: &str) -> Option<Vec<Alternative>> {
    // Risk detections as Microsoft Graph returns them; PIM alerts carry the
    // same `riskEventType` in the shape SigmaHQ's PIM rules assume.
    let risk = || {
        vec![
            Alternative::when().has(&["riskEventType"]),
            Alternative::when()
                .is("Type", &["AADUserRiskEvents"])
                .renames(&[("riskEventType", "RiskEventType")]),
        ]
    };
    Some(match service {
        // Azure Monitor export (diagnostic settings / Event Hub) or a Log
        // Analytics `AzureActivity` row.
        "activitylogs" => vec![
            Alternative::when()
                .is("category", AZURE_ACTIVITY_CATEGORIES)
                .has(&["operationName"]),
            Alternative::when()
                .is("Type", &["AzureActivity"])
                .renames(&[("operationName", "OperationNameValue")]),
        ],
        "auditlogs" => vec![
            Alternative::when()
                .is("category", &["AuditLogs"])
                .has(&["operationName"]),
            Alternative::when()
                .is("Type", &["AuditLogs"])
                .renames(AZURE_AUDIT_TO_LOG_ANALYTICS),
        ],
        // The rules use the Log Analytics column names (`ResultType`,
        // `AuthenticationRequirement`, `DeviceDetail.*`).
        "signinlogs" => vec![Alternative::when().is("Type", AZURE_SIGNIN_TABLES)],
        "riskdetection" | "pim" => risk(),
        _ => return None,
    })
}

fn m365(service: &str) -> Option<Vec<Alternative>> {
    // Office 365 Management Activity API records.
    let management = || Alternative::when().has(&["Operation"]).has(&["RecordType"]);
    Some(match service {
        "audit" => vec![management().has(&["Workload"])],
        "exchange" => vec![management().is("Workload", &["Exchange"])],
        // Alert records (Security & Compliance Center alert policies): the
        // rules' `eventSource` is the workload and `eventName` the alert
        // policy's name.
        "threat_management" | "threat_detection" => vec![
            management()
                .is("Workload", &["SecurityComplianceCenter"])
                .renames(&[("eventSource", "Workload"), ("eventName", "Name")]),
        ],
        _ => return None,
    })
}

fn cloud(product: &str, service: &str) -> Option<Vec<Alternative>> {
    Some(match (product, service) {
        // CloudTrail records (one per line, `Records` unwrapped).
        ("aws", "cloudtrail") => vec![Alternative::new(vec![
            Constraint::AnyExists(vec!["eventSource"]),
            Constraint::AnyExists(vec!["eventName"]),
        ])],
        ("azure", service) => azure(service)?,
        ("m365", service) => m365(service)?,
        // Cloud Logging `LogEntry` of an audit log (the rules use Filebeat's
        // `gcp.audit.*` names), or an export already in those names.
        ("gcp", "gcp.audit") => vec![
            Alternative::when()
                .is(
                    "protoPayload.@type",
                    &["type.googleapis.com/google.cloud.audit.AuditLog"],
                )
                .camel_case_under("gcp.audit.", "protoPayload."),
            Alternative::when().has(&["gcp.audit.method_name"]),
        ],
        // Workspace admin audit logs shared with Cloud Logging. The event's
        // parameters (`new_value`, …) are a name/value list no field name
        // reaches.
        ("gcp" | "google_workspace", "google_workspace.admin") => vec![
            Alternative::when()
                .is("protoPayload.serviceName", &["admin.googleapis.com"])
                .renames(&[
                    ("eventService", "protoPayload.serviceName"),
                    ("eventName", "protoPayload.metadata.event.0.eventName"),
                ]),
        ],
        // Okta System Log API events.
        ("okta", "okta") => vec![
            Alternative::when()
                .has(&["eventType"])
                .has(&["published"])
                .has(&["uuid"])
                .renames(OKTA_FIELDS),
        ],
        // GitHub organization / enterprise audit log (REST API, streaming).
        ("github", "audit") => vec![
            Alternative::when()
                .has(&["action"])
                .has(&["actor"])
                .has(&["created_at", "_document_id"]),
        ],
        // Bitbucket Data Center audit log (JSON).
        ("bitbucket", "audit") => vec![Alternative::when().has(&["auditType.action"])],
        // Duo Admin API authentication and administrator logs.
        ("cisco", "duo") => vec![
            Alternative::when()
                .has(&["isotimestamp"])
                .has(&["txid", "action"]),
        ],
        // OneLogin Events API.
        ("onelogin", "onelogin.events") => vec![Alternative::when().has(&["event_type_id"])],
        // Kubernetes API server audit events.
        ("kubernetes", "audit") => vec![
            Alternative::when()
                .is("apiVersion", &["audit.k8s.io/v1", "audit.k8s.io/v1beta1"])
                .has(&["verb"]),
        ],
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// What cannot be carried
// ---------------------------------------------------------------------------

/// Why Quarry refuses a log source of the taxonomy.
pub mod why {
    /// `product: macos`.
    pub const MACOS: &str = "macOS unified logs and Endpoint Security events are not an ingest \
        format (no reader for tracev3; eslogger JSON has no Sysmon-style Image/CommandLine/\
        ParentImage/TargetFilename fields)";
    /// `category: file_access` / `file_rename` on Windows.
    pub const KERNEL_FILE_ETW: &str = "Microsoft-Windows-Kernel-File is an ETW provider, not an \
        event-log channel: Quarry ingests EVTX and JSON exports of event logs, not ETW traces";
    /// `category: application` and the application products.
    pub const APPLICATION: &str = "application logs are free text with no field naming the \
        application, so keyword rules could not be kept to it";
    /// `category: database`.
    pub const DATABASE: &str = "database query logs are not an ingest format and carry no \
        field naming the database";
    /// Apache / nginx error logs.
    pub const WEB_SERVER_TEXT: &str = "Apache/nginx error logs are free-text files without a \
        syslog header or JSON structure; no Quarry reader takes them";
    /// `service: netflow`.
    pub const NETFLOW: &str = "NetFlow/IPFIX is a binary export, not an ingest format (flows \
        arrive as Zeek conn or Suricata flow events: use category firewall or network)";
    /// Cisco IOS / AAA, Huawei, Juniper device logs.
    pub const NETWORK_DEVICE: &str = "network-device logs (Cisco IOS/AAA, Huawei, Juniper) \
        arrive as free-text syslog with no field naming the vendor, so their keyword rules \
        would run on every syslog event";
    /// FortiGate, FortiOS, PAN-OS.
    pub const FIREWALL_APPLIANCE: &str = "Fortinet/Palo Alto logs are key=value text: the \
        syslog reader keeps them as one `message`, not the fields (devname, action, cfgpath, \
        ...) the rules read";
}

/// `(product, category, service)`; `None` stands for any value (or none).
pub type SourcePattern = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// Log sources of the taxonomy that Quarry refuses, and why.
pub const REFUSED: &[(SourcePattern, &str)] = &[
    ((Some("macos"), None, None), why::MACOS),
    (
        (Some("windows"), Some("file_access"), None),
        why::KERNEL_FILE_ETW,
    ),
    (
        (Some("windows"), Some("file_rename"), None),
        why::KERNEL_FILE_ETW,
    ),
    ((None, Some("application"), None), why::APPLICATION),
    ((Some("django"), None, None), why::APPLICATION),
    ((Some("python"), None, None), why::APPLICATION),
    ((Some("ruby_on_rails"), None, None), why::APPLICATION),
    ((Some("spring"), None, None), why::APPLICATION),
    ((Some("sql"), None, None), why::APPLICATION),
    ((Some("jvm"), None, None), why::APPLICATION),
    ((Some("nodejs"), None, None), why::APPLICATION),
    ((Some("velocity"), None, None), why::APPLICATION),
    ((Some("opencanary"), None, None), why::APPLICATION),
    ((Some("qualys"), None, None), why::APPLICATION),
    ((None, Some("database"), None), why::DATABASE),
    ((Some("apache"), None, None), why::WEB_SERVER_TEXT),
    ((Some("nginx"), None, None), why::WEB_SERVER_TEXT),
    ((None, None, Some("apache")), why::WEB_SERVER_TEXT),
    ((None, None, Some("nginx")), why::WEB_SERVER_TEXT),
    ((None, None, Some("netflow")), why::NETFLOW),
    ((Some("cisco"), None, Some("aaa")), why::NETWORK_DEVICE),
    ((Some("cisco"), None, Some("bgp")), why::NETWORK_DEVICE),
    ((Some("cisco"), None, Some("ldp")), why::NETWORK_DEVICE),
    ((Some("cisco"), None, Some("syslog")), why::NETWORK_DEVICE),
    ((Some("huawei"), None, None), why::NETWORK_DEVICE),
    ((Some("juniper"), None, None), why::NETWORK_DEVICE),
    ((Some("fortinet"), None, None), why::FIREWALL_APPLIANCE),
    ((Some("fortios"), None, None), why::FIREWALL_APPLIANCE),
    ((Some("paloalto"), None, None), why::FIREWALL_APPLIANCE),
];

/// Why `(product, category, service)` is refused, if it is: the first
/// [`REFUSED`] entry whose given parts all match.
fn refusal(
    product: Option<&str>,
    category: Option<&str>,
    service: Option<&str>,
) -> Option<&'static str> {
    let fits = |want: Option<&str>, got: Option<&str>| want.is_none() || want == got;
    REFUSED
        .iter()
        .find(|((p, c, s), _)| fits(*p, product) && fits(*c, category) && fits(*s, service))
        .map(|(_, why)| *why)
}

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

/// The alternatives of a rule's log source.
///
/// A log source in [`REFUSED`] is rejected with its reason
/// (`unmapped logsource [product:macos]: macOS unified logs …`); any other
/// unknown one as `unmapped logsource [...]`.
pub fn alternatives(ls: &LogSource) -> Result<Vec<Alternative>, RuleError> {
    let product = ls.product.as_deref();
    let category = ls.category.as_deref();
    let service = ls.service.as_deref();
    // RPC Firewall writes Windows events to its own `RPCFW` log, which the
    // rules name in `EventLog`.
    if let (Some("rpc_firewall"), Some("application"), None) = (product, category, service) {
        return Ok(vec![
            Alternative::new(vec![channel(&["RPCFW"])]).renames(&[("EventLog", "Channel")]),
        ]);
    }
    if let Some(why) = refusal(product, category, service) {
        return Err(RuleError::UnmappedLogsource(format!("{ls}: {why}")));
    }
    let alts = match (product, category, service) {
        (Some("windows"), category, service) => windows(category, service),
        (Some("linux"), category, service) => linux(category, service),
        (Some("zeek"), None, Some(service)) => ZEEK_LOGS
            .iter()
            .find(|&&name| name == service)
            .map(|&name| zeek(name, &[])),
        (Some("modsecurity"), None, None) => {
            Some(vec![Alternative::new(vec![Constraint::Equals(
                "program",
                vec!["modsecurity"],
            )])])
        }
        (None, Some("network"), Some(service)) => network(service),
        (None, Some(category), None) => generic_category(category),
        (Some(product), None, Some(service)) => cloud(product, service),
        _ => None,
    };
    alts.ok_or_else(|| RuleError::UnmappedLogsource(ls.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    type Source = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn ls(product: Option<&str>, category: Option<&str>, service: Option<&str>) -> LogSource {
        LogSource {
            product: product.map(str::to_owned),
            category: category.map(str::to_owned),
            service: service.map(str::to_owned),
        }
    }

    fn resolve((product, category, service): Source) -> Vec<Alternative> {
        alternatives(&ls(product, category, service))
            .unwrap_or_else(|e| panic!("{product:?}/{category:?}/{service:?}: {}", e.reason()))
    }

    /// A field of a JSON event the way the worker resolves it: the verbatim
    /// key, else a dotted path into objects and (by index) arrays.
    fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
        match doc {
            Value::Object(map) => map.get(path).or_else(|| {
                path.match_indices('.').find_map(|(i, _)| {
                    map.get(&path[..i])
                        .and_then(|child| get(child, &path[i + 1..]))
                })
            }),
            Value::Array(items) => {
                let (head, rest) = path
                    .split_once('.')
                    .map_or((path, None), |(h, r)| (h, Some(r)));
                let item = items.get(head.parse::<usize>().ok()?)?;
                rest.map_or(Some(item), |rest| get(item, rest))
            }
            _ => None,
        }
    }

    fn text(doc: &Value, field: &str) -> Option<String> {
        match get(doc, field)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Whether `doc` meets every constraint of `alt` (the engine's gate
    /// semantics, with every field projected).
    fn holds(alt: &Alternative, doc: &Value) -> bool {
        alt.constraints.iter().all(|c| match c {
            Constraint::Equals(field, values) => text(doc, field)
                .is_some_and(|v| values.iter().any(|want| want.eq_ignore_ascii_case(&v))),
            Constraint::AnyExists(fields) => fields
                .iter()
                .any(|f| text(doc, f).is_some_and(|v| !v.is_empty())),
        })
    }

    fn passes(source: Source, doc: &Value) -> bool {
        resolve(source).iter().any(|alt| holds(alt, doc))
    }

    const WIN: Option<&str> = Some("windows");
    const LINUX: Option<&str> = Some("linux");

    /// Windows services of the taxonomy appendix (v2.1.0), with the channel
    /// the appendix gives for each.
    const TAXONOMY_WINDOWS_SERVICES: &[(&str, &str)] = &[
        ("application", "Application"),
        (
            "application-experience",
            "Microsoft-Windows-Application-Experience/Program-Telemetry",
        ),
        ("applocker", "Microsoft-Windows-AppLocker/EXE and DLL"),
        (
            "appmodel-runtime",
            "Microsoft-Windows-AppModel-Runtime/Admin",
        ),
        (
            "appxdeployment-server",
            "Microsoft-Windows-AppXDeploymentServer/Operational",
        ),
        (
            "appxpackaging-om",
            "Microsoft-Windows-AppxPackaging/Operational",
        ),
        (
            "bitlocker",
            "Microsoft-Windows-BitLocker/BitLocker Management",
        ),
        ("bits-client", "Microsoft-Windows-Bits-Client/Operational"),
        ("capi2", "Microsoft-Windows-CAPI2/Operational"),
        (
            "certificateservicesclient-lifecycle-system",
            "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",
        ),
        (
            "codeintegrity-operational",
            "Microsoft-Windows-CodeIntegrity/Operational",
        ),
        ("dhcp", "Microsoft-Windows-DHCP-Server/Operational"),
        (
            "diagnosis-scripted",
            "Microsoft-Windows-Diagnosis-Scripted/Operational",
        ),
        (
            "dns-client",
            "Microsoft-Windows-DNS Client Events/Operational",
        ),
        ("dns-server", "DNS Server"),
        (
            "dns-server-analytic",
            "Microsoft-Windows-DNS-Server/Analytical",
        ),
        ("dns-server-audit", "Microsoft-Windows-DNS-Server/Audit"),
        (
            "driver-framework",
            "Microsoft-Windows-DriverFrameworks-UserMode/Operational",
        ),
        (
            "firewall-as",
            "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
        ),
        ("hyper-v-worker", "Microsoft-Windows-Hyper-V-Worker"),
        (
            "iis-configuration",
            "Microsoft-IIS-Configuration/Operational",
        ),
        (
            "kernel-event-tracing",
            "Microsoft-Windows-Kernel-EventTracing",
        ),
        (
            "kernel-shimengine",
            "Microsoft-Windows-Kernel-ShimEngine/Diagnostic",
        ),
        ("ldap", "Microsoft-Windows-LDAP-Client/Debug"),
        ("lsa-server", "Microsoft-Windows-LSA/Operational"),
        ("msexchange-management", "MSExchange Management"),
        ("ntfs", "Microsoft-Windows-Ntfs/Operational"),
        ("ntlm", "Microsoft-Windows-NTLM/Operational"),
        ("openssh", "OpenSSH/Operational"),
        ("powershell", "Microsoft-Windows-PowerShell/Operational"),
        ("powershell-classic", "Windows PowerShell"),
        ("printservice-admin", "Microsoft-Windows-PrintService/Admin"),
        (
            "printservice-operational",
            "Microsoft-Windows-PrintService/Operational",
        ),
        ("security", "Security"),
        (
            "security-mitigations",
            "Microsoft-Windows-Security-Mitigations/User Mode",
        ),
        ("sense", "Microsoft-Windows-SENSE/Operational"),
        ("servicebus-client", "Microsoft-ServiceBus-Client/Admin"),
        ("shell-core", "Microsoft-Windows-Shell-Core/Operational"),
        ("smbclient-security", "Microsoft-Windows-SmbClient/Security"),
        ("sysmon", "Microsoft-Windows-Sysmon/Operational"),
        ("system", "System"),
        (
            "taskscheduler",
            "Microsoft-Windows-TaskScheduler/Operational",
        ),
        (
            "terminalservices-localsessionmanager",
            "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
        ),
        ("vhdmp", "Microsoft-Windows-VHDMP/Operational"),
        (
            "windefend",
            "Microsoft-Windows-Windows Defender/Operational",
        ),
        ("wmi", "Microsoft-Windows-WMI-Activity/Operational"),
        // Older / extra names.
        ("ldap_debug", "Microsoft-Windows-LDAP-Client/Debug"),
        ("microsoft-servicebus-client", "Microsoft-ServiceBus-Client"),
        (
            "smbclient-connectivity",
            "Microsoft-Windows-SmbClient/Connectivity",
        ),
        (
            "smbserver-connectivity",
            "Microsoft-Windows-SMBServer/Connectivity",
        ),
    ];

    /// Windows categories of the taxonomy appendix and `logsource.json`
    /// (except the refused ETW ones), with (channel, event id) of their
    /// first alternative.
    const TAXONOMY_WINDOWS_CATEGORIES: &[(&str, &str, &str)] = &[
        ("process_creation", SYSMON, "1"),
        ("file_change", SYSMON, "2"),
        ("network_connection", SYSMON, "3"),
        ("sysmon_status", SYSMON, "16"),
        ("process_termination", SYSMON, "5"),
        ("driver_load", SYSMON, "6"),
        ("image_load", SYSMON, "7"),
        ("create_remote_thread", SYSMON, "8"),
        ("raw_access_thread", SYSMON, "9"),
        ("raw_access_read", SYSMON, "9"),
        ("process_access", SYSMON, "10"),
        ("file_event", SYSMON, "11"),
        ("registry_event", SYSMON, "14"),
        ("registry_add", SYSMON, "12"),
        ("registry_delete", SYSMON, "12"),
        ("registry_set", SYSMON, "13"),
        ("registry_rename", SYSMON, "14"),
        ("create_stream_hash", SYSMON, "15"),
        ("pipe_created", SYSMON, "18"),
        ("wmi_event", SYSMON, "20"),
        ("dns_query", SYSMON, "22"),
        ("file_delete", SYSMON, "23"),
        ("clipboard_capture", SYSMON, "24"),
        ("process_tampering", SYSMON, "25"),
        ("file_delete_detected", SYSMON, "26"),
        ("file_block_executable", SYSMON, "27"),
        ("file_block_shredding", SYSMON, "28"),
        ("file_block", SYSMON, "28"),
        ("file_executable_detected", SYSMON, "29"),
        ("sysmon_error", SYSMON, "255"),
        ("ps_classic_start", "Windows PowerShell", "400"),
        ("ps_classic_provider_start", "Windows PowerShell", "600"),
        ("ps_classic_script", "Windows PowerShell", "800"),
        ("ps_module", "PowerShellCore/Operational", "4103"),
        (
            "ps_script",
            "Microsoft-Windows-PowerShell/Operational",
            "4104",
        ),
    ];

    /// Every other log source of the taxonomy (appendix v2.1.0 and
    /// `logsource.json`) that Quarry maps.
    const TAXONOMY_OTHER_MAPPED: &[Source] = &[
        (LINUX, None, Some("auditd")),
        (LINUX, None, Some("auth")),
        (LINUX, None, Some("clamav")),
        (LINUX, None, Some("cron")),
        (LINUX, None, Some("guacamole")),
        (LINUX, None, Some("sudo")),
        (LINUX, None, Some("sshd")),
        (LINUX, None, Some("syslog")),
        (LINUX, None, Some("vsftpd")),
        (LINUX, None, Some("modsecurity")),
        (LINUX, Some("file_event"), None),
        (LINUX, Some("network_connection"), None),
        (LINUX, Some("process_creation"), None),
        (LINUX, Some("process_termination"), None),
        (LINUX, Some("raw_access_read"), None),
        (LINUX, Some("sysmon_status"), None),
        (LINUX, Some("file_delete"), None),
        (LINUX, None, None),
        (WIN, None, None),
        (Some("zeek"), None, Some("dce_rpc")),
        (Some("zeek"), None, Some("dns")),
        (Some("zeek"), None, Some("http")),
        (Some("zeek"), None, Some("kerberos")),
        (Some("zeek"), None, Some("rdp")),
        (Some("zeek"), None, Some("smb_files")),
        (Some("zeek"), None, Some("x509")),
        (None, Some("dns"), None),
        (None, Some("firewall"), None),
        (None, Some("proxy"), None),
        (None, Some("webserver"), None),
        (None, Some("antivirus"), None),
        (None, Some("network"), Some("connection")),
        (None, Some("network"), Some("dns")),
        (Some("aws"), None, Some("cloudtrail")),
        (Some("azure"), None, Some("activitylogs")),
        (Some("azure"), None, Some("auditlogs")),
        (Some("azure"), None, Some("riskdetection")),
        (Some("azure"), None, Some("pim")),
        (Some("azure"), None, Some("signinlogs")),
        (Some("bitbucket"), None, Some("audit")),
        (Some("cisco"), None, Some("duo")),
        (Some("gcp"), None, Some("gcp.audit")),
        (Some("gcp"), None, Some("google_workspace.admin")),
        (
            Some("google_workspace"),
            None,
            Some("google_workspace.admin"),
        ),
        (Some("github"), None, Some("audit")),
        (Some("m365"), None, Some("audit")),
        (Some("m365"), None, Some("exchange")),
        (Some("m365"), None, Some("threat_detection")),
        (Some("m365"), None, Some("threat_management")),
        (Some("okta"), None, Some("okta")),
        (Some("onelogin"), None, Some("onelogin.events")),
        (Some("kubernetes"), None, Some("audit")),
        (Some("modsecurity"), None, None),
        (Some("rpc_firewall"), Some("application"), None),
    ];

    /// Taxonomy log sources Quarry refuses, and the reason each names.
    const TAXONOMY_REFUSED: &[(Source, &str)] = &[
        ((Some("macos"), Some("process_creation"), None), why::MACOS),
        ((Some("macos"), Some("file_event"), None), why::MACOS),
        ((WIN, Some("file_access"), None), why::KERNEL_FILE_ETW),
        ((WIN, Some("file_rename"), None), why::KERNEL_FILE_ETW),
        (
            (Some("django"), Some("application"), None),
            why::APPLICATION,
        ),
        (
            (Some("python"), Some("application"), None),
            why::APPLICATION,
        ),
        (
            (Some("ruby_on_rails"), Some("application"), None),
            why::APPLICATION,
        ),
        (
            (Some("spring"), Some("application"), None),
            why::APPLICATION,
        ),
        ((Some("sql"), Some("application"), None), why::APPLICATION),
        (
            (Some("kubernetes"), Some("application"), None),
            why::APPLICATION,
        ),
        ((None, Some("database"), None), why::DATABASE),
        ((None, None, Some("apache")), why::WEB_SERVER_TEXT),
        ((None, None, Some("nginx")), why::WEB_SERVER_TEXT),
        ((None, None, Some("netflow")), why::NETFLOW),
        ((Some("cisco"), None, Some("aaa")), why::NETWORK_DEVICE),
        ((Some("cisco"), None, Some("bgp")), why::NETWORK_DEVICE),
        ((Some("cisco"), None, Some("ldp")), why::NETWORK_DEVICE),
        ((Some("huawei"), None, Some("bgp")), why::NETWORK_DEVICE),
        ((Some("juniper"), None, Some("bgp")), why::NETWORK_DEVICE),
        (
            (Some("fortinet"), None, Some("event")),
            why::FIREWALL_APPLIANCE,
        ),
        (
            (Some("fortios"), None, Some("sslvpnd")),
            why::FIREWALL_APPLIANCE,
        ),
        (
            (Some("paloalto"), None, Some("globalprotect")),
            why::FIREWALL_APPLIANCE,
        ),
        (
            (Some("paloalto"), Some("file_event"), None),
            why::FIREWALL_APPLIANCE,
        ),
    ];

    #[test]
    fn every_taxonomy_windows_service_is_its_channel() {
        for &(service, want) in TAXONOMY_WINDOWS_SERVICES {
            let alts = resolve((WIN, None, Some(service)));
            assert_eq!(alts.len(), 1, "{service}");
            let Constraint::Equals("Channel", channels) = &alts[0].constraints[0] else {
                panic!("{service}: {:?}", alts[0].constraints);
            };
            assert!(channels.contains(&want), "{service}: {channels:?}");
        }
        // The table holds nothing the list above does not check.
        assert_eq!(WINDOWS_SERVICES.len(), TAXONOMY_WINDOWS_SERVICES.len());
    }

    #[test]
    fn every_taxonomy_windows_category_resolves() {
        for &(category, want_channel, want_id) in TAXONOMY_WINDOWS_CATEGORIES {
            let alts = resolve((WIN, Some(category), None));
            let Constraint::Equals("Channel", channels) = &alts[0].constraints[0] else {
                panic!("{category}");
            };
            let Constraint::Equals("EventID", ids) = &alts[0].constraints[1] else {
                panic!("{category}");
            };
            assert!(channels.contains(&want_channel), "{category}: {channels:?}");
            assert!(ids.contains(&want_id), "{category}: {ids:?}");
        }
        assert_eq!(
            SYSMON_CATEGORIES.len() + POWERSHELL_CATEGORIES.len(),
            TAXONOMY_WINDOWS_CATEGORIES.len()
        );
        // A category with a service adds the service's channel.
        let alts = resolve((WIN, Some("process_creation"), Some("security")));
        assert!(
            alts.iter()
                .all(|a| a.constraints.contains(&channel(&["Security"])))
        );
    }

    #[test]
    fn every_other_taxonomy_source_resolves() {
        for &source in TAXONOMY_OTHER_MAPPED {
            let alts = resolve(source);
            assert!(!alts.is_empty(), "{source:?}");
            assert!(
                alts.iter().all(|a| !a.constraints.is_empty()),
                "{source:?}: an alternative that takes every event"
            );
        }
        for &(service, _) in LINUX_SERVICES {
            resolve((LINUX, None, Some(service)));
        }
        for &(category, _) in LINUX_SYSMON_CATEGORIES {
            resolve((LINUX, Some(category), None));
        }
        for &log in ZEEK_LOGS {
            assert_eq!(resolve((Some("zeek"), None, Some(log))).len(), 2);
        }
    }

    #[test]
    fn refused_sources_name_the_reason() {
        for &(source @ (product, category, service), why) in TAXONOMY_REFUSED {
            let err = alternatives(&ls(product, category, service)).unwrap_err();
            let reason = err.reason();
            assert!(reason.starts_with("unmapped logsource ["), "{reason}");
            assert!(reason.ends_with(why), "{source:?}: {reason}");
            assert!(err.to_string().contains(why), "{source:?}");
        }
        let err = alternatives(&ls(Some("macos"), Some("process_creation"), None)).unwrap_err();
        assert_eq!(
            err.reason(),
            format!(
                "unmapped logsource [product:macos category:process_creation]: {}",
                why::MACOS
            )
        );
        // Outside the taxonomy: refused, without a reason to give.
        let err = alternatives(&ls(Some("windows"), None, Some("nonsense"))).unwrap_err();
        assert_eq!(
            err.reason(),
            "unmapped logsource [product:windows service:nonsense]"
        );
        assert!(alternatives(&ls(Some("linux"), Some("process_creation"), Some("x"))).is_err());
        assert!(alternatives(&ls(Some("okta"), None, Some("audit"))).is_err());
    }

    #[test]
    fn process_creation_is_sysmon_1_or_security_4688() {
        let alts = resolve((WIN, Some("process_creation"), None));
        assert_eq!(alts.len(), 2);
        assert_eq!(alts[0].constraints, [channel(&[SYSMON]), event_id(&["1"])]);
        assert_eq!(alts[0].event_field("Image"), "Image");
        assert_eq!(alts[1].event_field("Image"), "NewProcessName");
        assert_eq!(alts[1].event_field("ParentImage"), "ParentProcessName");
        assert_eq!(alts[1].event_field("CommandLine"), "CommandLine");
        // 4688's `ProcessId` is the parent's.
        assert_eq!(alts[1].event_field("ProcessId"), "NewProcessId");
        assert_eq!(alts[1].event_field("ParentProcessId"), "ProcessId");
        let sysmon = json!({"Channel": SYSMON, "EventID": 1, "Image": "C:\\x.exe"});
        let security =
            json!({"Channel": "Security", "EventID": 4688, "NewProcessName": "C:\\x.exe"});
        let logon = json!({"Channel": "Security", "EventID": 4624});
        assert!(holds(&alts[0], &sysmon) && !holds(&alts[1], &sysmon));
        assert!(holds(&alts[1], &security) && !holds(&alts[0], &security));
        assert!(!passes((WIN, Some("process_creation"), None), &logon));
        let termination = resolve((WIN, Some("process_termination"), None));
        assert!(holds(
            &termination[1],
            &json!({"Channel": "Security", "EventID": 4689})
        ));
        assert_eq!(termination[1].event_field("Image"), "ProcessName");
    }

    #[test]
    fn windows_service_gates_on_real_channel_values() {
        let ldap = json!({"Channel": "Microsoft-Windows-LDAP-Client/Debug", "EventID": 30, "SearchFilter": "(objectclass=*)"});
        assert!(passes((WIN, None, Some("ldap")), &ldap));
        assert!(passes((WIN, None, Some("ldap_debug")), &ldap));
        assert!(!passes((WIN, None, Some("security")), &ldap));
        let appmodel =
            json!({"Channel": "Microsoft-Windows-AppModel-Runtime/Admin", "EventID": 201});
        assert!(passes((WIN, None, Some("appmodel-runtime")), &appmodel));
        // Channel names compare ignoring case, as EVTX exports differ.
        let bits = json!({"Channel": "microsoft-windows-bits-client/operational", "EventID": 59});
        assert!(passes((WIN, None, Some("bits-client")), &bits));
        let defender = json!({"Channel": WINDEFEND, "EventID": 1116, "Threat Name": "Virus:DOS/EICAR_Test_File", "Path": "file:_C:\\x.com"});
        assert!(passes((None, Some("antivirus"), None), &defender));
        let av = resolve((None, Some("antivirus"), None));
        assert_eq!(av[0].event_field("Signature"), "Threat Name");
        assert_eq!(av[0].event_field("Filename"), "Path");
        let rpcfw = resolve((Some("rpc_firewall"), Some("application"), None));
        assert_eq!(rpcfw[0].event_field("EventLog"), "Channel");
    }

    #[test]
    fn linux_gates_on_syslog_fields() {
        let sshd = json!({"host": "web01", "program": "sshd", "pid": 2211, "facility": "auth", "message": "Failed password for root"});
        let cron = json!({"host": "web01", "program": "CRON", "message": "(root) CMD (run-parts /etc/cron.hourly)"});
        let authpriv = json!({"program": "gdm-password", "facility": "authpriv", "message": "pam_unix(gdm-password:auth): authentication failure"});
        let audit =
            json!({"type": "EXECVE", "audit_serial": 92733, "argc": 2, "a0": "arp", "a1": "-a"});
        assert!(passes((LINUX, None, Some("sshd")), &sshd));
        assert!(!passes((LINUX, None, Some("sshd")), &cron));
        assert!(passes((LINUX, None, Some("cron")), &cron));
        assert!(passes((LINUX, None, Some("auth")), &sshd));
        assert!(passes((LINUX, None, Some("auth")), &authpriv));
        assert!(!passes((LINUX, None, Some("auth")), &cron));
        assert!(passes((LINUX, None, Some("auditd")), &audit));
        assert!(!passes((LINUX, None, Some("auditd")), &sshd));
        assert!(passes((LINUX, None, Some("syslog")), &cron));
        let sysmon = json!({"Channel": LINUX_SYSMON, "EventID": 1, "Image": "/usr/bin/curl"});
        assert!(passes((LINUX, Some("process_creation"), None), &sysmon));
        assert!(!passes((LINUX, Some("network_connection"), None), &sysmon));
        assert!(!passes((WIN, Some("process_creation"), None), &sysmon));
    }

    #[test]
    fn network_sources_rename_to_zeek_and_suricata() {
        let alts = resolve((Some("zeek"), None, Some("smb_files")));
        assert_eq!(alts[0].event_field("id.orig_h"), "id_orig_h");
        assert_eq!(alts[1].event_field("id.orig_h"), "id.orig_h");
        let proxy = resolve((None, Some("proxy"), None));
        assert_eq!(proxy[0].event_field("c-useragent"), "user_agent");
        assert_eq!(proxy[0].event_field("c-ip"), "id_orig_h");
        assert_eq!(proxy[2].event_field("c-useragent"), "c-useragent");

        // Zeek JSON conn.log line (apt29 day 1 capture).
        let conn = json!({"@stream": "conn", "@system": "bobs.bigwheel.local", "ts": 1588205199.8, "uid": "C1", "id_orig_h": "10.0.1.6", "id_orig_p": 54243, "id_resp_h": "10.0.0.4", "id_resp_p": 53, "proto": "udp", "service": "dns", "conn_state": "SF"});
        let flow = json!({"timestamp": "2018-03-24T14:37:19.037299-0600", "flow_id": 1, "event_type": "flow", "src_ip": "10.0.0.5", "src_port": 4444, "dest_ip": "10.47.8.150", "dest_port": 22, "proto": "TCP", "flow": {"pkts_toserver": 1, "bytes_toserver": 74, "state": "new"}});
        let alert = json!({"timestamp": "2018-03-24T14:37:19.037299-0600", "event_type": "alert", "src_ip": "0.0.0.0", "src_port": 26078, "dest_ip": "10.47.8.150", "dest_port": 22, "alert": {"signature": "ET SCAN Potential SSH Scan"}});
        let connection = resolve((None, Some("network"), Some("connection")));
        assert!(holds(&connection[0], &conn));
        assert_eq!(connection[0].event_field("destination.port"), "id_resp_p");
        assert_eq!(connection[1].event_field("destination.port"), "id.resp_p");
        assert!(holds(&connection[2], &flow) && !holds(&connection[2], &alert));
        assert_eq!(
            connection[2].event_field("source.bytes"),
            "flow.bytes_toserver"
        );
        assert!(!passes((None, Some("network"), Some("dns")), &conn));
        assert!(!passes((None, Some("network"), Some("dns")), &flow));
        let dns = json!({"event_type": "dns", "src_ip": "10.0.0.5", "dest_ip": "8.8.8.8", "dns": {"type": "query", "rrname": "evil.example", "rrtype": "TXT"}});
        assert!(passes((None, Some("network"), Some("dns")), &dns));
        assert_eq!(
            resolve((None, Some("network"), Some("dns")))[2].event_field("dns.question.name"),
            "dns.rrname"
        );
    }

    /// Cloud and SaaS records in the shapes their services export, one of
    /// each source; each gate takes its own records and no other's.
    #[test]
    fn cloud_gates_take_their_own_records_only() {
        // The first record of the shared CloudTrail capture, trimmed.
        let cloudtrail = json!({"eventVersion": "1.05", "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789123:user/pedro", "userName": "pedro"}, "eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstanceTypes", "eventType": "AwsApiCall", "awsRegion": "us-east-1", "sourceIPAddress": "1.2.3.4", "userAgent": "console.ec2.amazonaws.com", "recipientAccountId": "123456789123"});
        let okta = json!({"uuid": "dc9fd3c0-598c-11ef-8478-2b7584bf8d5a", "published": "2024-08-13T15:58:20.353Z", "eventType": "user.session.start", "version": "0", "severity": "INFO", "legacyEventType": "core.user_auth.login_success", "displayMessage": "User login to Okta", "actor": {"id": "00u1", "type": "User", "alternateId": "jdoe@example.com", "displayName": "J Doe"}, "client": {"ipAddress": "203.0.113.7", "userAgent": {"rawUserAgent": "Mozilla/5.0"}}, "outcome": {"result": "SUCCESS"}, "securityContext": {"isProxy": true}, "target": [{"type": "AppInstance", "displayName": "Okta Admin Console", "alternateId": "Okta Admin Console"}]});
        let github = json!({"@timestamp": 1_700_000_000_000_i64, "_document_id": "xHl0s", "action": "org.add_member", "actor": "octocat", "actor_id": 1, "actor_location": {"country_code": "US"}, "created_at": 1_700_000_000_000_i64, "org": "octo-org", "user": "hubot"});
        let azure_activity = json!({"time": "2024-01-05T10:00:00Z", "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/AZUREFIREWALLS/FW1", "operationName": "MICROSOFT.NETWORK/AZUREFIREWALLS/WRITE", "category": "Administrative", "resultType": "Success", "callerIpAddress": "198.51.100.4", "level": "Information", "properties": {"statusCode": "Created"}});
        let azure_audit = json!({"time": "2024-01-05T10:00:00Z", "resourceId": "/tenants/T/providers/Microsoft.aadiam", "operationName": "Add member to role", "category": "AuditLogs", "tenantId": "T", "properties": {"category": "RoleManagement", "result": "success", "loggedByService": "Core Directory", "targetResources": [{"displayName": "Global Administrator"}]}});
        let azure_signin = json!({"TenantId": "T", "SourceSystem": "Azure AD", "TimeGenerated": "2024-01-05T10:00:00Z", "OperationName": "Sign-in activity", "Category": "SignInLogs", "ResultType": "50126", "ResultDescription": "Invalid username or password", "UserPrincipalName": "jdoe@example.com", "AuthenticationRequirement": "singleFactorAuthentication", "Status": {"errorCode": 50126}, "Type": "SigninLogs"});
        let azure_risk = json!({"id": "6e0a", "riskEventType": "anonymizedIPAddress", "riskState": "atRisk", "riskLevel": "medium", "source": "IdentityProtection", "detectedDateTime": "2024-01-05T10:00:00Z", "userPrincipalName": "jdoe@example.com", "ipAddress": "185.220.101.1"});
        let m365 = json!({"CreationTime": "2024-01-05T10:00:00", "Id": "a1", "Operation": "New-InboxRule", "OrganizationId": "o", "RecordType": 1, "ResultStatus": "True", "UserType": 2, "Workload": "Exchange", "ClientIP": "198.51.100.9", "UserId": "jdoe@example.com", "Parameters": [{"Name": "ForwardTo", "Value": "x@evil.example"}]});
        let m365_alert = json!({"CreationTime": "2024-01-05T10:00:00", "Id": "a2", "Operation": "AlertTriggered", "RecordType": 40, "Workload": "SecurityComplianceCenter", "Name": "eDiscovery search started or exported", "Status": "Active", "Severity": "Medium"});
        let gcp = json!({"insertId": "a1", "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity", "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog", "authenticationInfo": {"principalEmail": "dev@example.com"}, "requestMetadata": {"callerIp": "203.0.113.9"}, "serviceName": "storage.googleapis.com", "methodName": "storage.buckets.list", "resourceName": "projects/_/buckets/b"}, "resource": {"type": "gcs_bucket"}, "severity": "INFO", "timestamp": "2024-01-05T10:00:00Z"});
        let workspace = json!({"insertId": "a2", "logName": "organizations/1/logs/cloudaudit.googleapis.com%2Factivity", "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog", "serviceName": "admin.googleapis.com", "methodName": "google.admin.AdminService.enforceStrongAuthentication", "metadata": {"@type": "type.googleapis.com/ccc_hosted_reporting.ActivityProto", "event": [{"eventName": "ENFORCE_STRONG_AUTHENTICATION", "eventType": "SECURITY_SETTINGS", "parameter": [{"name": "NEW_VALUE", "value": "false"}]}]}}, "resource": {"type": "audited_resource"}});
        let duo = json!({"txid": "340a23e3", "event_type": "authentication", "result": "fraud", "factor": "duo_push", "isotimestamp": "2024-01-05T10:00:00+00:00", "timestamp": 1_704_448_800, "user": {"name": "jdoe"}, "access_device": {"ip": "203.0.113.5"}});
        let onelogin = json!({"id": 999, "created_at": "2024-01-05T10:00:00Z", "account_id": 1, "user_id": 7, "event_type_id": 532, "ipaddr": "203.0.113.6", "user_name": "jdoe"});
        let kubernetes = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a", "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/secrets", "verb": "list", "user": {"username": "system:admin"}, "objectRef": {"resource": "secrets", "namespace": "default"}});
        let bitbucket = json!({"affectedObjects": [], "auditType": {"action": "User login failed", "category": "Authentication", "level": "BASE"}, "author": {"name": "jdoe"}, "source": "203.0.113.8", "timestamp": {"epochSecond": 1_704_448_800}});
        // A Log Analytics Syslog row (the shared Linux captures' shape).
        let syslog_row = json!({"TenantId": "redacted", "SourceSystem": "Linux", "Computer": "UBUNTU5", "Facility": "user", "SyslogMessage": "type=AUOMS_EXECVE ...", "ProcessName": "auoms", "Type": "Syslog"});

        let records: &[(&str, &Value)] = &[
            ("cloudtrail", &cloudtrail),
            ("okta", &okta),
            ("github", &github),
            ("azure_activity", &azure_activity),
            ("azure_audit", &azure_audit),
            ("azure_signin", &azure_signin),
            ("azure_risk", &azure_risk),
            ("m365", &m365),
            ("m365_alert", &m365_alert),
            ("gcp", &gcp),
            ("workspace", &workspace),
            ("duo", &duo),
            ("onelogin", &onelogin),
            ("kubernetes", &kubernetes),
            ("bitbucket", &bitbucket),
            ("syslog_row", &syslog_row),
        ];
        let expected: &[(Source, &[&str])] = &[
            ((Some("aws"), None, Some("cloudtrail")), &["cloudtrail"]),
            ((Some("okta"), None, Some("okta")), &["okta"]),
            ((Some("github"), None, Some("audit")), &["github"]),
            (
                (Some("azure"), None, Some("activitylogs")),
                &["azure_activity"],
            ),
            ((Some("azure"), None, Some("auditlogs")), &["azure_audit"]),
            ((Some("azure"), None, Some("signinlogs")), &["azure_signin"]),
            (
                (Some("azure"), None, Some("riskdetection")),
                &["azure_risk"],
            ),
            ((Some("azure"), None, Some("pim")), &["azure_risk"]),
            ((Some("m365"), None, Some("audit")), &["m365", "m365_alert"]),
            ((Some("m365"), None, Some("exchange")), &["m365"]),
            (
                (Some("m365"), None, Some("threat_management")),
                &["m365_alert"],
            ),
            (
                (Some("m365"), None, Some("threat_detection")),
                &["m365_alert"],
            ),
            // Workspace admin events are Cloud Audit Logs too.
            (
                (Some("gcp"), None, Some("gcp.audit")),
                &["gcp", "workspace"],
            ),
            (
                (Some("gcp"), None, Some("google_workspace.admin")),
                &["workspace"],
            ),
            ((Some("cisco"), None, Some("duo")), &["duo"]),
            (
                (Some("onelogin"), None, Some("onelogin.events")),
                &["onelogin"],
            ),
            ((Some("kubernetes"), None, Some("audit")), &["kubernetes"]),
            ((Some("bitbucket"), None, Some("audit")), &["bitbucket"]),
        ];
        for &(source, want) in expected {
            let got: Vec<&str> = records
                .iter()
                .filter(|(_, doc)| passes(source, doc))
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(got, want, "{source:?}");
        }
    }

    #[test]
    fn cloud_renames_reach_the_exported_fields() {
        let okta = resolve((Some("okta"), None, Some("okta")));
        assert_eq!(okta[0].event_field("eventtype"), "eventType");
        assert_eq!(
            okta[0].event_field("securitycontext.isproxy"),
            "securityContext.isProxy"
        );
        assert_eq!(
            okta[0].event_field("target.displayname"),
            "target.0.displayName"
        );
        assert_eq!(okta[0].event_field("outcome.result"), "outcome.result");
        let gcp = resolve((Some("gcp"), None, Some("gcp.audit")));
        assert_eq!(
            gcp[0].event_field("gcp.audit.method_name"),
            "protoPayload.methodName"
        );
        assert_eq!(
            gcp[0].event_field("gcp.audit.request_metadata.caller_ip"),
            "protoPayload.requestMetadata.callerIp"
        );
        assert_eq!(
            gcp[0].event_field("gcp.audit.request.source_ranges"),
            "protoPayload.request.sourceRanges"
        );
        assert_eq!(
            gcp[1].event_field("gcp.audit.method_name"),
            "gcp.audit.method_name"
        );
        let workspace = resolve((Some("gcp"), None, Some("google_workspace.admin")));
        let record = json!({"protoPayload": {"serviceName": "admin.googleapis.com", "metadata": {"event": [{"eventName": "ENFORCE_STRONG_AUTHENTICATION"}]}}});
        assert_eq!(
            text(&record, &workspace[0].event_field("eventName")).as_deref(),
            Some("ENFORCE_STRONG_AUTHENTICATION")
        );
        assert_eq!(
            text(&record, &workspace[0].event_field("eventService")).as_deref(),
            Some("admin.googleapis.com")
        );
        let alerts = resolve((Some("m365"), None, Some("threat_management")));
        assert_eq!(alerts[0].event_field("eventSource"), "Workload");
        assert_eq!(alerts[0].event_field("eventName"), "Name");
        let audit = resolve((Some("azure"), None, Some("auditlogs")));
        assert_eq!(
            audit[0].event_field("properties.targetResources"),
            "properties.targetResources"
        );
        assert_eq!(
            audit[1].event_field("properties.targetResources"),
            "TargetResources"
        );
        assert_eq!(audit[1].event_field("operationName"), "OperationName");
    }

    /// Gates on fields outside the catalogue come with an `AnyExists` of the
    /// same field, so a catalogue-bound engine keeps them closed.
    #[test]
    fn equals_on_new_fields_fail_closed() {
        let known = [
            "Channel", "EventID", "@stream", "_path", "program", "facility",
        ];
        let mut sources: Vec<Source> = TAXONOMY_OTHER_MAPPED.to_vec();
        sources.extend(
            TAXONOMY_WINDOWS_CATEGORIES
                .iter()
                .map(|&(c, ..)| (WIN, Some(c), None)),
        );
        for source in sources {
            for alt in resolve(source) {
                for c in &alt.constraints {
                    if let Constraint::Equals(field, _) = c
                        && !known.contains(field)
                    {
                        assert!(
                            alt.constraints
                                .contains(&Constraint::AnyExists(vec![field])),
                            "{source:?}: {field}"
                        );
                    }
                }
            }
        }
    }

    /// The sources mapped before contract 0.2.2 (Windows, Linux, Zeek, the
    /// product-less categories, CloudTrail) gate on and rename to catalogue
    /// fields only, so their rules still compile for a worker that does not
    /// plan tasks.
    #[test]
    fn older_sources_stay_within_the_catalogue() {
        let mut sources: Vec<Source> = vec![
            (WIN, None, None),
            (LINUX, None, None),
            (None, Some("proxy"), None),
            (None, Some("webserver"), None),
            (None, Some("dns"), None),
            (None, Some("firewall"), None),
            (Some("aws"), None, Some("cloudtrail")),
        ];
        sources.extend(WINDOWS_SERVICES.iter().map(|&(s, _)| (WIN, None, Some(s))));
        sources.extend(
            TAXONOMY_WINDOWS_CATEGORIES
                .iter()
                .map(|&(c, ..)| (WIN, Some(c), None)),
        );
        sources.extend(LINUX_SERVICES.iter().map(|&(s, _)| (LINUX, None, Some(s))));
        sources.extend(["auditd", "syslog", "sysmon"].map(|s| (LINUX, None, Some(s))));
        sources.extend(
            LINUX_SYSMON_CATEGORIES
                .iter()
                .map(|&(c, _)| (LINUX, Some(c), None)),
        );
        sources.extend(ZEEK_LOGS.iter().map(|&log| (Some("zeek"), None, Some(log))));
        for source in sources {
            for alt in resolve(source) {
                for c in &alt.constraints {
                    let names = match c {
                        Constraint::Equals(field, _) => vec![*field],
                        Constraint::AnyExists(fields) => fields.clone(),
                    };
                    for name in names {
                        assert!(crate::fields::index(name).is_some(), "{source:?}: {name}");
                    }
                }
                for (_, to) in &alt.renames {
                    assert!(crate::fields::index(to).is_some(), "{source:?}: {to}");
                }
            }
        }
    }

    #[test]
    fn tables_have_no_duplicate_keys() {
        fn unique<'a>(keys: impl Iterator<Item = &'a str>) {
            let mut seen = std::collections::BTreeSet::new();
            for key in keys {
                assert!(seen.insert(key), "duplicate {key}");
            }
        }
        unique(WINDOWS_SERVICES.iter().map(|(k, _)| *k));
        unique(SYSMON_CATEGORIES.iter().map(|(k, _)| *k));
        unique(POWERSHELL_CATEGORIES.iter().map(|(k, ..)| *k));
        unique(LINUX_SERVICES.iter().map(|(k, _)| *k));
        unique(LINUX_SYSMON_CATEGORIES.iter().map(|(k, _)| *k));
        unique(ZEEK_LOGS.iter().copied());
    }
}
