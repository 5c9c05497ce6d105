//! Hunt module `pivot`: every event that mentions one entity, as a
//! timeline.
//!
//! Given `entity=KIND:VALUE` (`host:ws07`, `user:CORP\alice`,
//! `ip:10.0.0.5`, `process:psexec.exe`, `hash:<hex>`, `domain:evil.example`),
//! it reports one informational finding (`pivot/event`) per event that
//! names the entity in a field carrying that kind of entity in the formats
//! the worker ingests: Windows Security, System and Sysmon (flat, or with
//! the event data nested as `EventData.*`), Linux auth.log and syslog,
//! auditd, Zeek, Suricata and CloudTrail ([`CARRIERS`]). How values are
//! compared is in [`entity`]; titles and evidence in [`report`].
//!
//! The hunt's time range is applied by the host (only events in range reach
//! the module), so the module does not filter time. After `max_events`
//! findings in a task it stops reporting, counts the rest and says so (the
//! `pivot/truncated` finding, the `pivot_events` aggregate and the task
//! log).
//!
//! Parameters: `entity` (required), `max_events` (1–100000, default 10000).

#![warn(missing_docs)]

pub mod entity;
pub mod report;

use entity::{Pivot, Role, UserStyle};
use quarry_sdk::{
    Counts, Descriptor, Emitter, Event, Field, Finding, Hunt, Output, Params, Severity,
};

/// The module's name in the registry.
pub const NAME: &str = "pivot";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: the entity to pivot on, `KIND:VALUE`.
pub const PARAM_ENTITY: &str = "entity";
/// Parameter: findings per task, after which events are only counted.
pub const PARAM_MAX_EVENTS: &str = "max_events";

const PARAMS: [&str; 2] = [PARAM_ENTITY, PARAM_MAX_EVENTS];

/// Default of `max_events`: the worker's default findings per task.
pub const DEFAULT_MAX_EVENTS: u64 = 10_000;
/// Largest `max_events` (the worker keeps at most 100,000 findings per task).
pub const MAX_MAX_EVENTS: u64 = 100_000;

/// The rule of the per-event findings.
pub const RULE_EVENT: &str = "pivot/event";
/// The rule of the finding that says a task stopped reporting.
pub const RULE_TRUNCATED: &str = "pivot/truncated";
/// Aggregate: events that mention the entity (`matched`), reported
/// (`reported`) and not reported past `max_events` (`not_reported`).
pub const AGGREGATE_EVENTS: &str = "pivot_events";
/// Aggregate: events that mention the entity, by the field that names it.
pub const AGGREGATE_FIELDS: &str = "pivot_events_by_field";

quarry_sdk::fields! {
    /// The event fields this module reads. Windows event data is declared
    /// with its `EventData.` prefix: the host resolves that path in events
    /// whose data is nested and falls back to the flat name in the others,
    /// so one declaration reads both shapes. Every name is declared once.
    pub mod field {
        // --- The host that logged the event -------------------------------
        /// Windows (evtx, most exports); also Azure Monitor syslog rows.
        COMPUTER = "Computer",
        /// Windows exports of NXLog (the Mordor data sets).
        HOSTNAME = "Hostname",
        /// Azure Monitor syslog rows.
        HOST_NAME = "HostName",
        /// Some SIEM exports.
        COMPUTER_NAME = "ComputerName",
        /// ECS.
        HOST_DOT_NAME = "host.name",
        /// ECS.
        HOST_DOT_HOSTNAME = "host.hostname",
        /// ECS: the shipper's host.
        AGENT_HOSTNAME = "agent.hostname",
        /// Defender for Endpoint.
        DEVICE_NAME = "DeviceName",
        /// The worker's canonical host; syslog's host; Zeek `http`'s Host
        /// header; a collector's name when the event names its own host.
        HOST = "host",
        /// Linux audit records forwarded with `node=`.
        NODE = "node",
        // --- Other hosts an event names -----------------------------------
        /// Generic shippers; auditd's remote host; Zeek `ntlm`'s client.
        HOSTNAME_LOWER = "hostname",
        /// 4624/4625: the client's name.
        WORKSTATION_NAME = "EventData.WorkstationName",
        /// 4776: the client's name (`\\WS07`).
        WORKSTATION = "EventData.Workstation",
        /// 4778/4779: the RDP client's name.
        CLIENT_NAME = "EventData.ClientName",
        /// 4648: the server the explicit credentials were for.
        TARGET_SERVER_NAME = "EventData.TargetServerName",
        /// 4741/4742: a computer account's DNS name.
        DNS_HOST_NAME = "EventData.DnsHostName",
        /// Sysmon 3.
        SOURCE_HOSTNAME = "EventData.SourceHostname",
        /// Sysmon 3 (also a DNS name).
        DESTINATION_HOSTNAME = "EventData.DestinationHostname",
        /// auth.log: a PAM `rhost` that is a name.
        SOURCE_HOST = "source_host",
        // --- Accounts -----------------------------------------------------
        /// Windows: the account logged on, created, changed.
        TARGET_USER_NAME = "EventData.TargetUserName",
        /// Its domain.
        TARGET_DOMAIN_NAME = "EventData.TargetDomainName",
        /// Windows: the account that acted.
        SUBJECT_USER_NAME = "EventData.SubjectUserName",
        /// Its domain.
        SUBJECT_DOMAIN_NAME = "EventData.SubjectDomainName",
        /// 4624 (`runas /netonly`): the outbound account.
        TARGET_OUTBOUND_USER_NAME = "EventData.TargetOutboundUserName",
        /// Its domain.
        TARGET_OUTBOUND_DOMAIN_NAME = "EventData.TargetOutboundDomainName",
        /// 4778/4779, NXLog exports: the account.
        ACCOUNT_NAME = "EventData.AccountName",
        /// 4778/4779: its domain.
        ACCOUNT_DOMAIN = "EventData.AccountDomain",
        /// NXLog exports: the domain of `AccountName`.
        DOMAIN = "Domain",
        /// Sysmon: `DOMAIN\user`; RDP session events.
        USER = "EventData.User",
        /// Sysmon 1: the parent's user.
        PARENT_USER = "EventData.ParentUser",
        /// Sysmon 10: the accessing process's user.
        SOURCE_USER = "EventData.SourceUser",
        /// Sysmon 10: the accessed process's user.
        TARGET_USER = "EventData.TargetUser",
        /// 4720/4738: the pre-Windows 2000 name.
        SAM_ACCOUNT_NAME = "EventData.SamAccountName",
        /// 4720/4738: the UPN.
        USER_PRINCIPAL_NAME = "EventData.UserPrincipalName",
        /// Various Windows and SIEM exports.
        USER_NAME = "UserName",
        /// auth.log (sshd, sudo, cron, PAM); generic JSON.
        USER_LOWER = "user",
        /// ECS.
        USER_DOT_NAME = "user.name",
        /// Zeek `http`, `ntlm`.
        USERNAME = "username",
        /// PAM `ruser`.
        REMOTE_USER = "remote_user",
        /// sudo: the account commands ran as.
        SUDO_TARGET_USER = "sudo_target_user",
        /// auditd `USER_*` records.
        ACCT = "acct",
        /// auditd (enriched): the login user's name.
        AUID = "AUID",
        /// auditd (enriched): the user's name.
        UID = "UID",
        /// auditd (enriched): the effective user's name.
        EUID = "EUID",
        /// Zeek `kerberos`: `user/REALM`.
        CLIENT = "client",
        /// CloudTrail.
        AWS_USER_NAME = "userIdentity.userName",
        /// CloudTrail: the role session's issuer.
        AWS_ISSUER_USER_NAME = "userIdentity.sessionContext.sessionIssuer.userName",
        /// CloudTrail: `…:user/NAME`, `…:assumed-role/ROLE/SESSION`.
        AWS_ARN = "userIdentity.arn",
        /// CloudTrail IAM calls on a user.
        AWS_REQUEST_USER_NAME = "requestParameters.userName",
        // --- Addresses ----------------------------------------------------
        /// Windows logon, share and Kerberos events.
        IP_ADDRESS = "EventData.IpAddress",
        /// Sysmon 3.
        SOURCE_IP = "EventData.SourceIp",
        /// Sysmon 3.
        DESTINATION_IP = "EventData.DestinationIp",
        /// WFP 5156/5158.
        SOURCE_ADDRESS = "EventData.SourceAddress",
        /// WFP 5156.
        DEST_ADDRESS = "EventData.DestAddress",
        /// 4778/4779.
        CLIENT_ADDRESS = "EventData.ClientAddress",
        /// RDP session events (LocalSessionManager 21/24/25).
        ADDRESS = "EventData.Address",
        /// Zeek (TSV, and JSON with dotted names).
        ID_ORIG_H = "id.orig_h",
        /// Zeek.
        ID_RESP_H = "id.resp_h",
        /// Zeek (JSON with underscores).
        ID_ORIG_H_UNDERSCORE = "id_orig_h",
        /// Zeek.
        ID_RESP_H_UNDERSCORE = "id_resp_h",
        /// Zeek `notice`.
        SRC = "src",
        /// Zeek `notice`.
        DST = "dst",
        /// Zeek `files`: the senders.
        TX_HOSTS = "tx_hosts",
        /// Zeek `files`: the receivers.
        RX_HOSTS = "rx_hosts",
        /// Suricata EVE.
        SRC_IP = "src_ip",
        /// Suricata EVE.
        DEST_IP = "dest_ip",
        /// auth.log (sshd, PAM `rhost`).
        SOURCE_IP_LOWER = "source_ip",
        /// auditd `USER_*` records.
        ADDR = "addr",
        /// CloudTrail.
        SOURCE_IP_ADDRESS = "sourceIPAddress",
        /// ECS.
        SOURCE_DOT_IP = "source.ip",
        /// ECS.
        DESTINATION_DOT_IP = "destination.ip",
        /// ECS.
        CLIENT_DOT_IP = "client.ip",
        /// Azure Monitor syslog rows: the host's address.
        HOST_IP = "HostIP",
        /// RFC 5424 structured data `[origin ip=…]`.
        ORIGIN_IP = "origin.ip",
        // --- Processes ----------------------------------------------------
        /// Sysmon.
        IMAGE = "EventData.Image",
        /// 4688.
        NEW_PROCESS_NAME = "EventData.NewProcessName",
        /// Sysmon 1.
        PARENT_IMAGE = "EventData.ParentImage",
        /// 4688.
        PARENT_PROCESS_NAME = "EventData.ParentProcessName",
        /// Sysmon 8/10.
        SOURCE_IMAGE = "EventData.SourceImage",
        /// Sysmon 8/10.
        TARGET_IMAGE = "EventData.TargetImage",
        /// 4624/4648/4656…: the process.
        PROCESS_NAME = "EventData.ProcessName",
        /// WFP 5156/5158.
        APPLICATION = "EventData.Application",
        /// 4625/4738…
        CALLER_PROCESS_NAME = "EventData.CallerProcessName",
        /// auditd.
        EXE = "exe",
        /// auditd.
        COMM = "comm",
        /// syslog: the tag.
        PROGRAM = "program",
        // --- Hashes -------------------------------------------------------
        /// Sysmon: `SHA1=…,MD5=…,SHA256=…,IMPHASH=…`.
        HASHES = "EventData.Hashes",
        /// Sysmon 15/26.
        HASH = "EventData.Hash",
        /// Zeek `files`.
        MD5 = "md5",
        /// Zeek `files`.
        SHA1 = "sha1",
        /// Zeek `files`.
        SHA256 = "sha256",
        // --- DNS names ----------------------------------------------------
        /// Sysmon 22.
        QUERY_NAME = "EventData.QueryName",
        /// Zeek `dns`.
        QUERY = "query",
        /// Zeek `ssl`.
        SERVER_NAME = "server_name",
        /// Suricata `dns`.
        DNS_RRNAME = "dns.rrname",
        /// Suricata `tls`.
        TLS_SNI = "tls.sni",
        /// Suricata `http`.
        HTTP_HOSTNAME = "http.hostname",
        /// ECS.
        DNS_QUESTION_NAME = "dns.question.name",
        /// ECS.
        URL_DOMAIN = "url.domain",
        // --- Context for titles and evidence ------------------------------
        /// Windows event id.
        EVENT_ID = "EventID",
        /// Windows channel.
        CHANNEL = "Channel",
        /// Windows provider (evtx).
        PROVIDER_NAME = "Provider_Name",
        /// Windows provider (NXLog).
        SOURCE_NAME = "SourceName",
        /// The worker's canonical source (the shard's `source` label).
        SOURCE = "source",
        /// Zeek TSV: the log (`conn`, `dns`, …).
        PATH = "_path",
        /// Zeek JSON as some pipelines write it: the log.
        STREAM = "@stream",
        /// Suricata EVE: `alert`, `dns`, `http`, …
        EVENT_TYPE = "event_type",
        /// CloudTrail: the API call.
        EVENT_NAME = "eventName",
        /// CloudTrail: the service.
        EVENT_SOURCE = "eventSource",
        /// CloudTrail: why a call failed.
        ERROR_CODE = "errorCode",
        /// auditd: the record type.
        AUDIT_TYPE = "type",
        /// auditd: the kernel event's serial (tells audit records apart).
        AUDIT_SERIAL = "audit_serial",
        /// Windows: the rendered message (its first line is a summary).
        MESSAGE_WINDOWS = "Message",
        /// Process creation.
        COMMAND_LINE = "EventData.CommandLine",
        /// Sysmon 11/23/26.
        TARGET_FILENAME = "EventData.TargetFilename",
        /// Sysmon 12/13/14.
        TARGET_OBJECT = "EventData.TargetObject",
        /// 4624/4625.
        LOGON_TYPE = "EventData.LogonType",
        /// 7045/4697, Kerberos 4769.
        SERVICE_NAME = "EventData.ServiceName",
        /// 7045.
        IMAGE_PATH = "EventData.ImagePath",
        /// 5140/5145.
        SHARE_NAME = "EventData.ShareName",
        /// 5145.
        RELATIVE_TARGET_NAME = "EventData.RelativeTargetName",
        /// 4698–4702.
        TASK_NAME = "EventData.TaskName",
        /// Sysmon 3.
        DESTINATION_PORT = "EventData.DestinationPort",
        /// WFP 5156.
        DEST_PORT = "EventData.DestPort",
        /// Zeek.
        ID_RESP_P = "id.resp_p",
        /// Zeek.
        ID_RESP_P_UNDERSCORE = "id_resp_p",
        /// Zeek, Suricata.
        PROTO = "proto",
        /// Zeek `conn`.
        SERVICE = "service",
        /// Zeek `conn`.
        CONN_STATE = "conn_state",
        /// Zeek `http`.
        METHOD = "method",
        /// Zeek `http`.
        URI = "uri",
        /// Zeek `http`.
        STATUS_CODE = "status_code",
        /// Zeek `files`.
        FILENAME = "filename",
        /// Zeek `notice`.
        NOTE = "note",
        /// Zeek `notice`.
        MSG = "msg",
        /// Suricata EVE.
        DEST_PORT_LOWER = "dest_port",
        /// Suricata EVE.
        ALERT_SIGNATURE = "alert.signature",
        /// syslog.
        MESSAGE = "message",
        /// auth.log: what sshd did.
        SSHD_EVENT = "sshd_event",
        /// auth.log: the command sudo ran.
        SUDO_COMMAND = "sudo_command",
        /// auditd: the command line.
        PROCTITLE = "proctitle",
    }
}

/// When a carrier field counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Always.
    Always,
    /// `host` as a host: unless the event names its own host in another
    /// field ([`OWN_HOST_FIELDS`]; then `host` is a collector's, as in the
    /// Mordor data sets) or it is a Zeek `http` record (a Host header).
    HostFallback,
    /// `host` as a DNS name: only in Zeek `http` records.
    ZeekHttp,
}

/// A field that carries an entity.
#[derive(Clone, Copy, Debug)]
pub struct Carrier {
    /// The field.
    pub field: Field,
    /// What it holds.
    pub role: Role,
    /// Fields that may hold the account's domain, for user fields that
    /// have one beside them (the first present is used).
    pub domains: &'static [Field],
    /// When it counts.
    pub when: When,
}

const fn carrier(field: Field, role: Role) -> Carrier {
    Carrier {
        field,
        role,
        domains: &[],
        when: When::Always,
    }
}

const fn user(field: Field, style: UserStyle) -> Carrier {
    carrier(field, Role::User(style))
}

const fn user_in(field: Field, domains: &'static [Field]) -> Carrier {
    Carrier {
        field,
        role: Role::User(UserStyle::Plain),
        domains,
        when: When::Always,
    }
}

/// Fields in which an event names the host that logged it; when one is
/// present, `host` is not read as a host (see [`When::HostFallback`]).
pub const OWN_HOST_FIELDS: [Field; 8] = [
    field::COMPUTER,
    field::HOSTNAME,
    field::HOST_NAME,
    field::COMPUTER_NAME,
    field::HOST_DOT_NAME,
    field::HOST_DOT_HOSTNAME,
    field::AGENT_HOSTNAME,
    field::DEVICE_NAME,
];

/// Every field that carries an entity, and what it carries, in the order
/// matches are reported. An address in a host field (syslog from an
/// address, Zeek's canonical host) also matches an `ip:` pivot.
pub const CARRIERS: &[Carrier] = &[
    // Hosts.
    carrier(field::COMPUTER, Role::Host),
    carrier(field::HOSTNAME, Role::Host),
    carrier(field::HOST_NAME, Role::Host),
    carrier(field::COMPUTER_NAME, Role::Host),
    carrier(field::HOST_DOT_NAME, Role::Host),
    carrier(field::HOST_DOT_HOSTNAME, Role::Host),
    carrier(field::AGENT_HOSTNAME, Role::Host),
    carrier(field::DEVICE_NAME, Role::Host),
    Carrier {
        field: field::HOST,
        role: Role::Host,
        domains: &[],
        when: When::HostFallback,
    },
    carrier(field::NODE, Role::Host),
    carrier(field::HOSTNAME_LOWER, Role::Host),
    carrier(field::WORKSTATION_NAME, Role::Host),
    carrier(field::WORKSTATION, Role::Host),
    carrier(field::CLIENT_NAME, Role::Host),
    carrier(field::TARGET_SERVER_NAME, Role::Host),
    carrier(field::DNS_HOST_NAME, Role::Host),
    carrier(field::SOURCE_HOSTNAME, Role::Host),
    carrier(field::DESTINATION_HOSTNAME, Role::Host),
    carrier(field::SOURCE_HOST, Role::Host),
    // Accounts.
    user_in(field::TARGET_USER_NAME, &[field::TARGET_DOMAIN_NAME]),
    user_in(field::SUBJECT_USER_NAME, &[field::SUBJECT_DOMAIN_NAME]),
    user_in(
        field::TARGET_OUTBOUND_USER_NAME,
        &[field::TARGET_OUTBOUND_DOMAIN_NAME],
    ),
    user(field::USER, UserStyle::Plain),
    user(field::PARENT_USER, UserStyle::Plain),
    user(field::SOURCE_USER, UserStyle::Plain),
    user(field::TARGET_USER, UserStyle::Plain),
    user(field::SAM_ACCOUNT_NAME, UserStyle::Plain),
    user(field::USER_PRINCIPAL_NAME, UserStyle::Plain),
    user(field::USER_NAME, UserStyle::Plain),
    user(field::USER_LOWER, UserStyle::Plain),
    user(field::USER_DOT_NAME, UserStyle::Plain),
    user(field::USERNAME, UserStyle::Plain),
    user(field::REMOTE_USER, UserStyle::Plain),
    user(field::SUDO_TARGET_USER, UserStyle::Plain),
    user(field::ACCT, UserStyle::Plain),
    user(field::AUID, UserStyle::Plain),
    user(field::UID, UserStyle::Plain),
    user(field::EUID, UserStyle::Plain),
    user(field::CLIENT, UserStyle::Kerberos),
    user(field::AWS_USER_NAME, UserStyle::Plain),
    user(field::AWS_ISSUER_USER_NAME, UserStyle::Plain),
    user(field::AWS_ARN, UserStyle::Arn),
    user(field::AWS_REQUEST_USER_NAME, UserStyle::Plain),
    // `AccountName` goes with `AccountDomain` (4778) or NXLog's `Domain`.
    user_in(field::ACCOUNT_NAME, &[field::ACCOUNT_DOMAIN, field::DOMAIN]),
    // Addresses.
    carrier(field::IP_ADDRESS, Role::Ip),
    carrier(field::SOURCE_IP, Role::Ip),
    carrier(field::DESTINATION_IP, Role::Ip),
    carrier(field::SOURCE_ADDRESS, Role::Ip),
    carrier(field::DEST_ADDRESS, Role::Ip),
    carrier(field::CLIENT_ADDRESS, Role::Ip),
    carrier(field::ADDRESS, Role::Ip),
    carrier(field::ID_ORIG_H, Role::Ip),
    carrier(field::ID_RESP_H, Role::Ip),
    carrier(field::ID_ORIG_H_UNDERSCORE, Role::Ip),
    carrier(field::ID_RESP_H_UNDERSCORE, Role::Ip),
    carrier(field::SRC, Role::Ip),
    carrier(field::DST, Role::Ip),
    carrier(field::TX_HOSTS, Role::Ip),
    carrier(field::RX_HOSTS, Role::Ip),
    carrier(field::SRC_IP, Role::Ip),
    carrier(field::DEST_IP, Role::Ip),
    carrier(field::SOURCE_IP_LOWER, Role::Ip),
    carrier(field::ADDR, Role::Ip),
    carrier(field::SOURCE_IP_ADDRESS, Role::Ip),
    carrier(field::SOURCE_DOT_IP, Role::Ip),
    carrier(field::DESTINATION_DOT_IP, Role::Ip),
    carrier(field::CLIENT_DOT_IP, Role::Ip),
    carrier(field::HOST_IP, Role::Ip),
    carrier(field::ORIGIN_IP, Role::Ip),
    // Processes.
    carrier(field::IMAGE, Role::Process),
    carrier(field::NEW_PROCESS_NAME, Role::Process),
    carrier(field::PARENT_IMAGE, Role::Process),
    carrier(field::PARENT_PROCESS_NAME, Role::Process),
    carrier(field::SOURCE_IMAGE, Role::Process),
    carrier(field::TARGET_IMAGE, Role::Process),
    carrier(field::PROCESS_NAME, Role::Process),
    carrier(field::APPLICATION, Role::Process),
    carrier(field::CALLER_PROCESS_NAME, Role::Process),
    carrier(field::EXE, Role::Process),
    carrier(field::COMM, Role::Process),
    carrier(field::PROGRAM, Role::Process),
    // Hashes.
    carrier(field::HASHES, Role::Hash),
    carrier(field::HASH, Role::Hash),
    carrier(field::MD5, Role::Hash),
    carrier(field::SHA1, Role::Hash),
    carrier(field::SHA256, Role::Hash),
    // DNS names.
    carrier(field::QUERY_NAME, Role::Domain),
    carrier(field::QUERY, Role::Domain),
    carrier(field::SERVER_NAME, Role::Domain),
    Carrier {
        field: field::HOST,
        role: Role::Domain,
        domains: &[],
        when: When::ZeekHttp,
    },
    carrier(field::DESTINATION_HOSTNAME, Role::Domain),
    carrier(field::DNS_RRNAME, Role::Domain),
    carrier(field::TLS_SNI, Role::Domain),
    carrier(field::HTTP_HOSTNAME, Role::Domain),
    carrier(field::DNS_QUESTION_NAME, Role::Domain),
    carrier(field::URL_DOMAIN, Role::Domain),
];

/// A field's name as events show it: without the `EventData.` prefix the
/// descriptor declares Windows event data with.
pub fn display_name(field: Field) -> &'static str {
    let name = field::NAMES[field.index()];
    name.strip_prefix("EventData.").unwrap_or(name)
}

/// `field` unless absent, blank or a placeholder (`-`).
pub fn meaningful(event: &Event, field: Field) -> Option<&str> {
    event
        .get_nonempty(field)
        .filter(|v| !matches!(*v, "-" | "?" | "(null)"))
}

/// Whether the event is a Zeek `http` record: its log says so, or it has
/// no log name but a `uri` (a Zeek-shaped or proxy record).
pub fn is_zeek_http(event: &Event) -> bool {
    match meaningful(event, field::PATH).or_else(|| meaningful(event, field::STREAM)) {
        Some(path) => path.eq_ignore_ascii_case("http"),
        None => meaningful(event, field::URI).is_some(),
    }
}

/// One field of an event that names the pivot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The field.
    pub field: Field,
    /// Its value.
    pub value: &'a str,
    /// Whether the field carries the pivot's kind of entity (not, say, an
    /// address in a host field).
    pub own_kind: bool,
}

/// The fields of `event` that name `pivot`, each field once: first those
/// that carry the pivot's own kind, then the others (an address in a host
/// field), each group in [`CARRIERS`] order.
pub fn hits<'a>(pivot: &Pivot, event: &'a Event) -> Vec<Hit<'a>> {
    let mut found: Vec<Hit<'a>> = Vec::new();
    let mut http: Option<bool> = None;
    for carrier in CARRIERS {
        if found.iter().any(|h| h.field == carrier.field) {
            continue;
        }
        let Some(value) = meaningful(event, carrier.field) else {
            continue;
        };
        let applies = match carrier.when {
            When::Always => true,
            When::HostFallback => {
                !*http.get_or_insert_with(|| is_zeek_http(event))
                    && !OWN_HOST_FIELDS
                        .iter()
                        .any(|&f| meaningful(event, f).is_some())
            }
            When::ZeekHttp => *http.get_or_insert_with(|| is_zeek_http(event)),
        };
        if !applies {
            continue;
        }
        let domain = carrier.domains.iter().find_map(|&f| meaningful(event, f));
        if pivot.matches(carrier.role, value, domain) {
            found.push(Hit {
                field: carrier.field,
                value,
                own_kind: carrier.role.kind() == pivot.kind(),
            });
        }
    }
    // Stable: CARRIERS order within each group.
    found.sort_by_key(|hit| !hit.own_kind);
    found
}

/// The configuration a hunt's parameters give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The entity.
    pub pivot: Pivot,
    /// Findings per task before events are only counted.
    pub max_events: u64,
}

/// The module: the pivot and what a task has seen.
#[derive(Debug)]
pub struct PivotHunt {
    config: Config,
    entity: String,
    matched: u64,
    reported: u64,
    by_field: Counts,
    /// Time range of the events not reported: (first, last).
    unreported: Option<(i64, i64)>,
}

impl PivotHunt {
    /// The configuration for the hunt's parameters.
    ///
    /// # Errors
    ///
    /// An unknown parameter, a missing or malformed `entity`, a
    /// `max_events` out of range; each message names the parameter and the
    /// accepted values.
    pub fn config(params: &Params) -> Result<Config, String> {
        params.ensure_known(&PARAMS)?;
        let Some(text) = params.get(PARAM_ENTITY) else {
            return Err(format!(
                "parameter `{PARAM_ENTITY}` is required: the entity to pivot on, as {}",
                entity::ACCEPTED_FORMS
            ));
        };
        Ok(Config {
            pivot: Pivot::parse(text)?,
            max_events: params.u64_in_range_or(
                PARAM_MAX_EVENTS,
                DEFAULT_MAX_EVENTS,
                1..=MAX_MAX_EVENTS,
            )?,
        })
    }

    fn finding(&self, event: &Event, hits: &[Hit<'_>]) -> Finding {
        let first = hits[0];
        let mut builder = Finding::builder(RULE_EVENT, report::title(event))
            .severity(Severity::Informational)
            .confidence(100)
            .entity(&self.entity)
            .timestamp_ms(event.timestamp_ms)
            .evidence("matched_field", display_name(first.field))
            .evidence(
                "matched_value",
                report::clip(first.value, report::MAX_VALUE_CHARS),
            );
        if hits.len() > 1 {
            let names: Vec<&str> = hits.iter().map(|h| display_name(h.field)).collect();
            builder = builder.evidence("matched_fields", names.join(", "));
        }
        for (key, value) in report::context(event) {
            builder = builder.evidence(key, value);
        }
        builder.tag("pivot").offset(event.offset).build()
    }
}

impl Hunt for PivotHunt {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Every event that mentions one entity (entity=host:NAME, user:NAME, ip:ADDRESS, process:IMAGE, hash:HEX or domain:NAME), one informational finding per event: a timeline for an investigation.",
            )
            .with_fields(field::NAMES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        let config = Self::config(params)?;
        Ok(PivotHunt {
            entity: config.pivot.entity(),
            config,
            matched: 0,
            reported: 0,
            by_field: Counts::new(AGGREGATE_FIELDS),
            unreported: None,
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            let hits = hits(&self.config.pivot, event);
            if hits.is_empty() {
                continue;
            }
            self.matched += 1;
            for hit in &hits {
                self.by_field.increment(display_name(hit.field));
            }
            if self.reported < self.config.max_events {
                self.reported += 1;
                out.emit(self.finding(event, &hits));
            } else {
                let t = event.timestamp_ms;
                self.unreported = Some(match self.unreported {
                    Some((first, last)) => (first.min(t), last.max(t)),
                    None => (t, t),
                });
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let not_reported = self.matched - self.reported;
        let mut events = Counts::new(AGGREGATE_EVENTS);
        events.add("matched", self.matched);
        events.add("reported", self.reported);
        events.add("not_reported", not_reported);
        if let Some((first, last)) = self.unreported {
            let max = self.config.max_events;
            quarry_sdk::log::with_fields(
                quarry_sdk::LogLevel::Warn,
                "max_events reached: later events that mention the entity were counted, not reported",
                &[
                    ("entity", &self.entity),
                    ("max_events", &max.to_string()),
                    ("not_reported", &not_reported.to_string()),
                ],
            );
            out.emit(
                Finding::builder(
                    RULE_TRUNCATED,
                    format!(
                        "Timeline cut: {not_reported} more events mention {} in this shard (max_events={max})",
                        self.entity
                    ),
                )
                .severity(Severity::Informational)
                .confidence(100)
                .entity(&self.entity)
                .timestamp_ms(first)
                .evidence("max_events", max)
                .evidence("matched", self.matched)
                .evidence("not_reported", not_reported)
                .evidence("first_not_reported", quarry_sdk::time::format_rfc3339_ms(first))
                .evidence("last_not_reported", quarry_sdk::time::format_rfc3339_ms(last))
                .tag("pivot"),
            );
        }
        out.aggregate(events);
        out.aggregate(self.by_field);
    }
}

quarry_sdk::export_hunt!(PivotHunt);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::Task;
    use std::collections::BTreeSet;

    fn event(values: &[(Field, &str)]) -> Event {
        Event::with_values(1_700_000_000_000, 7, field::NAMES, values)
    }

    fn pivot(text: &str) -> Pivot {
        Pivot::parse(text).expect("a valid entity")
    }

    fn matched(text: &str, values: &[(Field, &str)]) -> Vec<&'static str> {
        let e = event(values);
        hits(&pivot(text), &e)
            .iter()
            .map(|h| display_name(h.field))
            .collect()
    }

    #[test]
    fn the_descriptor_declares_each_field_once_within_the_worker_limits() {
        let d = Task::<PivotHunt>::describe();
        assert_eq!(d.name, NAME);
        assert_eq!(d.version, VERSION);
        let unique: BTreeSet<&str> = d.fields.iter().map(String::as_str).collect();
        assert_eq!(unique.len(), d.fields.len(), "a field is declared twice");
        // docs/module-contract.md: at most 1024 fields of 256 bytes each.
        assert!(d.fields.len() <= 1024);
        assert!(d.fields.iter().all(|f| f.len() <= 256));
        assert!(d.prefilter.is_empty() && d.any_of.is_empty());
        // Every carrier's field is declared (by construction) and every
        // carrier is distinct.
        for (i, a) in CARRIERS.iter().enumerate() {
            for b in &CARRIERS[i + 1..] {
                assert!(
                    !(a.field == b.field && a.role == b.role),
                    "{} twice",
                    display_name(a.field)
                );
            }
        }
    }

    #[test]
    fn parameters_are_checked_at_init() {
        let mut task = Task::<PivotHunt>::new();
        let error = task.init(vec![]).unwrap_err();
        assert!(
            error.starts_with("parameter `entity` is required: the entity to pivot on, as KIND:VALUE with KIND one of host, user, ip, process, hash, domain"),
            "{error}"
        );
        let error = task
            .init(vec![("entity".into(), "ws07".into())])
            .unwrap_err();
        assert!(error.contains("got `ws07`"), "{error}");
        let error = task
            .init(vec![
                ("entity".into(), "host:ws07".into()),
                ("max_events".into(), "0".into()),
            ])
            .unwrap_err();
        assert_eq!(
            error,
            "parameter `max_events` must be an integer from 1 to 100000, got `0`"
        );
        let error = task
            .init(vec![
                ("entity".into(), "host:ws07".into()),
                ("host".into(), "x".into()),
            ])
            .unwrap_err();
        assert_eq!(
            error,
            "unknown parameter `host`; this module accepts `entity`, `max_events`"
        );
        let p = Params::from_pairs([("entity", "user:CORP\\Alice")]).unwrap();
        let config = PivotHunt::config(&p).unwrap();
        assert_eq!(config.max_events, DEFAULT_MAX_EVENTS);
        assert_eq!(config.pivot.entity(), "user:corp\\alice");
    }

    #[test]
    fn host_normalisation_agrees_with_rare_process() {
        for raw in [
            "WS01",
            "WS01.corp.example",
            "ws01.CORP.example.",
            "10.0.0.5",
            "fe80::1",
            "-",
            "",
            ".hidden",
        ] {
            assert_eq!(
                entity::normalise_host(raw),
                rare_process::paths::normalise_host(raw),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_host_is_found_in_every_host_field_but_a_collector_or_http_host() {
        assert_eq!(
            matched(
                "host:ws07",
                &[
                    (field::COMPUTER, "WS07.corp.example"),
                    (field::WORKSTATION_NAME, "WS07"),
                    (field::TARGET_USER_NAME, "ws07"),
                ]
            ),
            ["Computer", "WorkstationName"]
        );
        // Mordor: `host` is the event collector, the event's host is in
        // `Hostname`.
        let forwarded = [
            (field::HOSTNAME, "WORKSTATION5"),
            (field::HOST, "wec.internal.cloudapp.net"),
        ];
        assert!(matched("host:wec", &forwarded).is_empty());
        assert_eq!(matched("host:workstation5", &forwarded), ["Hostname"]);
        // auth.log: `host` is the event's host.
        assert_eq!(
            matched(
                "host:web01",
                &[(field::HOST, "web01"), (field::PROGRAM, "sshd")]
            ),
            ["host"]
        );
        // Zeek http: `host` is the Host header, a DNS name.
        let http = [
            (field::PATH, "http"),
            (field::HOST, "ws07.corp.example"),
            (field::URI, "/"),
        ];
        assert!(matched("host:ws07", &http).is_empty());
        assert_eq!(matched("domain:corp.example", &http), ["host"]);
    }

    #[test]
    fn users_and_addresses_are_found_with_their_companion_fields() {
        let logon = [
            (field::EVENT_ID, "4624"),
            (field::TARGET_USER_NAME, "alice"),
            (field::TARGET_DOMAIN_NAME, "CORP"),
            (field::SUBJECT_USER_NAME, "WS07$"),
            (field::SUBJECT_DOMAIN_NAME, "CORP"),
            (field::IP_ADDRESS, "::ffff:10.0.0.5"),
        ];
        assert_eq!(matched("user:corp\\alice", &logon), ["TargetUserName"]);
        assert!(matched("user:other\\alice", &logon).is_empty());
        assert_eq!(matched("user:ws07$", &logon), ["SubjectUserName"]);
        assert_eq!(matched("ip:10.0.0.5", &logon), ["IpAddress"]);
        // NXLog's `AccountName` goes with `Domain`.
        assert_eq!(
            matched(
                "user:nt authority\\system",
                &[
                    (field::ACCOUNT_NAME, "SYSTEM"),
                    (field::DOMAIN, "NT AUTHORITY")
                ]
            ),
            ["AccountName"]
        );
        // Zeek's canonical host is the originator's address.
        assert_eq!(
            matched(
                "ip:10.0.0.5",
                &[(field::ID_ORIG_H, "10.0.0.5"), (field::HOST, "10.0.0.5")]
            ),
            ["id.orig_h", "host"]
        );
    }

    #[test]
    fn events_past_max_events_are_counted_and_the_cut_is_reported() {
        let mut task = Task::<PivotHunt>::new();
        task.init(vec![
            ("entity".into(), "host:ws07".into()),
            ("max_events".into(), "2".into()),
        ])
        .unwrap();
        let batch: Vec<Event> = (0..5)
            .map(|i| {
                Event::with_values(
                    1_700_000_000_000 + i * 1000,
                    i as u64,
                    field::NAMES,
                    &[(field::COMPUTER, if i == 1 { "ws08" } else { "WS07" })],
                )
            })
            .collect();
        let findings = task.scan(batch).unwrap();
        assert_eq!(findings.len(), 2);
        assert_eq!(
            findings
                .iter()
                .map(|f| f.offsets.clone())
                .collect::<Vec<_>>(),
            [[0], [2]]
        );
        let output = task.finish().unwrap();
        assert_eq!(output.findings.len(), 1);
        let cut = &output.findings[0];
        assert_eq!(cut.rule, RULE_TRUNCATED);
        assert_eq!(cut.entity, "host:ws07");
        assert_eq!(cut.evidence_value("not_reported"), Some("2"));
        assert_eq!(cut.timestamp_ms, 1_700_000_003_000);
        let counts = Counts::from_aggregate(output.aggregates[0].clone()).unwrap();
        assert_eq!(
            counts.iter().collect::<Vec<_>>(),
            [("matched", 4), ("not_reported", 2), ("reported", 2)]
        );
        let by_field = Counts::from_aggregate(output.aggregates[1].clone()).unwrap();
        assert_eq!(by_field.get("Computer"), 4);
    }
}
