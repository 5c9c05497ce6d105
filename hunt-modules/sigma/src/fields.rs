//! The fields a rule set reads, and the static catalogue.
//!
//! On a worker that speaks contract 0.2.2 the module *plans* each task
//! (`planner.plan(params)`): it compiles the hunt's rules first and declares
//! exactly the fields they read, in a growing [`FieldTable`], so any field a
//! rule names is projected and nothing else is. A host that does not plan
//! projects what `describe()` declares, which cannot depend on the rules:
//! the static [`FIELDS`] catalogue, the field names of the Sigma taxonomy
//! for the log sources [`crate::logsource`] maps and of the SigmaHQ rules in
//! use. Against the catalogue, a rule that reads a field outside it is
//! rejected with
//! [`RuleError::FieldNotProjected`](crate::rule::RuleError::FieldNotProjected)
//! rather than silently never matching.

use std::collections::HashMap;

/// Most fields a planned table holds: the worker's limit on the fields a
/// module may declare (`MAX_FIELDS` in the worker's runtime).
pub const MAX_PLANNED_FIELDS: usize = 1024;

/// Longest field name a planned table accepts: the worker's limit on a
/// declared field name (`MAX_FIELD_NAME_BYTES`).
pub const MAX_FIELD_NAME_BYTES: usize = 256;

/// The host's pseudo-field holding every value of an event, one per line
/// (contract 0.2.2): what keyword searches read in a planned task.
pub const ALL_VALUES: &str = "@values";

/// The event fields a rule set reads, in projection order: `event.values`
/// carries them in this order.
#[derive(Clone, Debug)]
pub struct FieldTable {
    names: Vec<String>,
    index: HashMap<String, usize>,
    growing: bool,
}

impl FieldTable {
    /// The static catalogue ([`FIELDS`]): what a host that does not plan
    /// projects. [`FieldTable::intern`] only looks names up.
    pub fn catalogue() -> Self {
        let names: Vec<String> = FIELDS.iter().map(|&f| f.to_owned()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        FieldTable {
            names,
            index,
            growing: false,
        }
    }

    /// An empty table that takes every field a rule names, up to
    /// [`MAX_PLANNED_FIELDS`].
    pub fn planned() -> Self {
        FieldTable {
            names: Vec::new(),
            index: HashMap::new(),
            growing: true,
        }
    }

    /// Whether fields are added as rules name them (a planned task).
    pub fn is_growing(&self) -> bool {
        self.growing
    }

    /// Index of `name` (exact, case-sensitive: Sigma field names are
    /// case-sensitive, and so are event keys).
    pub fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Index of `name`, adding it to a growing table. `None`: the catalogue
    /// lacks it, or a growing table is full or the name too long.
    pub fn intern(&mut self, name: &str) -> Option<usize> {
        if let Some(&index) = self.index.get(name) {
            return Some(index);
        }
        if !self.growing
            || self.names.len() >= MAX_PLANNED_FIELDS
            || name.is_empty()
            || name.len() > MAX_FIELD_NAME_BYTES
        {
            return None;
        }
        let index = self.names.len();
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), index);
        Some(index)
    }

    /// Forgets the fields added after the table had `len` of them (a rule
    /// that failed to compile leaves nothing projected behind).
    pub fn truncate(&mut self, len: usize) {
        for name in self.names.drain(len.min(self.names.len())..) {
            self.index.remove(&name);
        }
    }

    /// The names, in projection order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Name of field `index`.
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", String::as_str)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table has no field.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Default for FieldTable {
    fn default() -> Self {
        FieldTable::planned()
    }
}

/// The projected fields, in projection order.
pub const FIELDS: &[&str] = &[
    "@stream",
    "@system",
    "_path",
    "a0",
    "a1",
    "a2",
    "a3",
    "a4",
    "a5",
    "a6",
    "a7",
    "a8",
    "a9",
    "AA",
    "AccessList",
    "AccessMask",
    "AccessReason",
    "AccountExpires",
    "AccountName",
    "action",
    "additionalEventData.MFAUsed",
    "AdditionalInfo",
    "AdditionalInfo2",
    "Address",
    "AllowedToDelegateTo",
    "answer",
    "answers",
    "app_name",
    "AppCorrelationID",
    "Application",
    "Archived",
    "argc",
    "AttributeLDAPDisplayName",
    "AttributeValue",
    "AuditPolicyChanges",
    "AuditSourceName",
    "auid",
    "auth_method",
    "AuthenticationPackageName",
    "awsRegion",
    "basic_constraints.ca",
    "blocked",
    "c-ip",
    "c-uri",
    "c-uri-extension",
    "c-uri-query",
    "c-uri-stem",
    "c-useragent",
    "CallTrace",
    "Caption",
    "certificate.issuer",
    "certificate.serial",
    "basic_constraints_ca",
    "san_dns",
    "certificate_version",
    "certificate_issuer",
    "certificate_subject",
    "certificate_serial",
    "certificate.subject",
    "certificate.version",
    "CertIssuerName",
    "CertSerialNumber",
    "CertThumbprint",
    "Channel",
    "cipher",
    "ClassName",
    "client",
    "client_build",
    "client_cert_subject",
    "client_dig_product_id",
    "client_name",
    "ClientAddress",
    "ClientInfo",
    "ClientProcessId",
    "comm",
    "CommandLine",
    "Company",
    "Computer",
    "conn_state",
    "Consumer",
    "Contents",
    "ContextInfo",
    "cookie",
    "CreationUtcTime",
    "cron_command",
    "cs-bytes",
    "cs-cookie",
    "cs-host",
    "cs-method",
    "cs-referer",
    "cs-referrer",
    "cs-uri",
    "cs-uri-query",
    "cs-uri-stem",
    "cs-user-agent",
    "cs-version",
    "CurrentDirectory",
    "curve",
    "cwd",
    "Data",
    "Description",
    "DestAddress",
    "Destination",
    "DestinationHostname",
    "DestinationIp",
    "DestinationIsIpv6",
    "DestinationPort",
    "DestinationPortName",
    "DestPort",
    "Details",
    "Device",
    "DeviceDescription",
    "Direction",
    "DisplayName",
    "DSName",
    "dst-ip",
    "dst_ip",
    "dst_port",
    "DSType",
    "duration",
    "ElevatedToken",
    "EncyptionUsed",
    "endpoint",
    "EngineVersion",
    "errorCode",
    "errorMessage",
    "established",
    "euid",
    "EventID",
    "eventName",
    "EventNamespace",
    "eventSource",
    "eventType",
    "EventType",
    "exe",
    "facility",
    "FailureReason",
    "filename",
    "FileVersion",
    "Filter",
    "FilterName",
    "FilterOrigin",
    "FilterRTID",
    "forwardable",
    "fuid",
    "gid",
    "GrantedAccess",
    "HandleId",
    "Hash",
    "Hashes",
    "history",
    "HomeDirectory",
    "HomePath",
    "host",
    "HostApplication",
    "Hostname",
    "HostName",
    "hostname",
    "HostVersion",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "id_orig_h",
    "id_orig_p",
    "id_resp_h",
    "id_resp_p",
    "Image",
    "ImageLoaded",
    "ImagePath",
    "ImpersonationLevel",
    "Initiated",
    "IntegrityLevel",
    "invalid_user",
    "IpAddress",
    "IpPort",
    "IsatapRouter",
    "IsExecutable",
    "issuer",
    "ja3",
    "ja3s",
    "key",
    "KeyLength",
    "Keywords",
    "LayerName",
    "LayerRTID",
    "LmPackageName",
    "local_orig",
    "local_resp",
    "LocalName",
    "LogonGuid",
    "LogonHours",
    "LogonId",
    "LogonProcessName",
    "LogonType",
    "MandatoryLabel",
    "md5",
    "MemberName",
    "MemberSid",
    "message",
    "Message",
    "MessageNumber",
    "MessageTotal",
    "method",
    "mime_type",
    "msgid",
    "Name",
    "name",
    "named_pipe",
    "nametype",
    "NewName",
    "NewProcessId",
    "NewProcessName",
    "NewTargetUserName",
    "NewTemplateContent",
    "NewThreadId",
    "NewUacValue",
    "NewValue",
    "NewValueType",
    "next_protocol",
    "ObjectClass",
    "ObjectDN",
    "ObjectGUID",
    "ObjectName",
    "ObjectServer",
    "ObjectType",
    "ObjectValueName",
    "OldUacValue",
    "OldValue",
    "OldValueType",
    "OpCorrelationID",
    "Operation",
    "operation",
    "OperationType",
    "orig_bytes",
    "orig_mime_types",
    "orig_pkts",
    "OriginalFileName",
    "param1",
    "param2",
    "param3",
    "param4",
    "param5",
    "ParentCommandLine",
    "ParentImage",
    "ParentProcessGuid",
    "ParentProcessId",
    "ParentProcessName",
    "ParentUser",
    "PasswordLastSet",
    "path",
    "Path",
    "payload",
    "Payload",
    "pid",
    "PipeName",
    "ppid",
    "PreAuthType",
    "PreviousCreationUtcTime",
    "PrimaryGroupId",
    "PrivilegeList",
    "process",
    "ProcessGuid",
    "ProcessId",
    "ProcessName",
    "processPath",
    "proctitle",
    "Product",
    "ProfilePath",
    "program",
    "Properties",
    "proto",
    "Protocol",
    "Provider_Name",
    "ProviderContextName",
    "qclass_name",
    "qtype_name",
    "query",
    "Query",
    "QueryName",
    "QueryResults",
    "QueryStatus",
    "r-dns",
    "RA",
    "rcode_name",
    "RD",
    "record_type",
    "referrer",
    "rejected",
    "RelativeTargetName",
    "RemoteMachineID",
    "RemoteName",
    "RemoteUserID",
    "renewable",
    "request_body_len",
    "request_type",
    "requestParameters.attribute",
    "requestParameters.bucketName",
    "requestParameters.policyArn",
    "requestParameters.roleName",
    "requestParameters.userName",
    "resp_bytes",
    "resp_mime_types",
    "resp_pkts",
    "response_body_len",
    "response_code",
    "responseElements.ConsoleLogin",
    "responseElements.publiclyAccessible",
    "RestrictedAdminMode",
    "result",
    "resumed",
    "rtt",
    "RuleName",
    "rx_hosts",
    "s-ip",
    "SamAccountName",
    "san.dns",
    "sc-bytes",
    "sc-status",
    "SchemaVersion",
    "ScriptBlockId",
    "ScriptBlockText",
    "ScriptPath",
    "security_protocol",
    "server_cert_subject",
    "server_name",
    "ServerName",
    "service",
    "Service",
    "ServiceAccount",
    "ServiceFileName",
    "ServiceName",
    "ServicePrincipalNames",
    "ServiceSid",
    "ServiceStartType",
    "ServiceType",
    "Session",
    "severity",
    "sha1",
    "sha256",
    "share_type",
    "ShareLocalPath",
    "ShareName",
    "SidHistory",
    "SidList",
    "Signature",
    "SignatureStatus",
    "Signed",
    "SigningUsed",
    "size",
    "source_ip",
    "source_port",
    "SourceAddress",
    "SourceHostname",
    "SourceImage",
    "SourceIp",
    "sourceIPAddress",
    "SourceIsIpv6",
    "SourceName",
    "SourcePort",
    "SourcePortName",
    "SourceProcessGuid",
    "SourceProcessId",
    "SourceThreadId",
    "SourceUser",
    "src_ip",
    "src_port",
    "sshd_event",
    "StartAddress",
    "StartFunction",
    "StartModule",
    "StartType",
    "State",
    "Status",
    "status_code",
    "SubcategoryGuid",
    "subject",
    "SubjectDomainName",
    "SubjectLogonId",
    "SubjectUserName",
    "SubjectUserSid",
    "SubStatus",
    "success",
    "sudo_command",
    "sudo_event",
    "sudo_target_user",
    "SYSCALL",
    "syscall",
    "SyslogMessage",
    "TargetDomainName",
    "TargetFilename",
    "TargetImage",
    "TargetLinkedLogonId",
    "TargetLogonId",
    "TargetName",
    "TargetObject",
    "TargetOutboundDomainName",
    "TargetOutboundUserName",
    "TargetProcessGuid",
    "TargetProcessId",
    "TargetServerName",
    "TargetSid",
    "TargetUser",
    "TargetUserName",
    "TargetUserSid",
    "TaskContent",
    "TaskContentNew",
    "TaskName",
    "TC",
    "TemplateContent",
    "TerminalSessionId",
    "TicketEncryptionType",
    "TicketOptions",
    "till",
    "times_created",
    "times_modified",
    "TokenElevationType",
    "trans_id",
    "TransmittedServices",
    "ts_delta",
    "TTLs",
    "tx_hosts",
    "Type",
    "type",
    "uid",
    "uri",
    "User",
    "user",
    "user_agent",
    "UserAccountControl",
    "userAgent",
    "userIdentity.accountId",
    "userIdentity.arn",
    "userIdentity.principalId",
    "userIdentity.sessionContext.sessionIssuer.type",
    "userIdentity.type",
    "userIdentity.userName",
    "UserName",
    "UserParameters",
    "UserPrincipalName",
    "UserWorkstations",
    "UtcTime",
    "validation_status",
    "Version",
    "version",
    "VirtualAccount",
    "Workstation",
    "WorkstationName",
    "Z",
    // Further Windows taxonomy fields (Security, WMI, Defender, AppLocker,
    // CodeIntegrity, firewall, task scheduler, NTLM, LDAP, VHD).
    "CallerProcessName",
    "CallerProcessId",
    "NewSd",
    "OldSd",
    "FailureCode",
    "RequestId",
    "Requester",
    "ClientMachine",
    "PossibleCause",
    "ThreatName",
    "PolicyName",
    "FilePath",
    "Fqbn",
    "FullFilePath",
    "FileNameBuffer",
    "ProcessNameBuffer",
    "RequestedPolicy",
    "ValidatedPolicy",
    "SignatureLevel",
    "ApplicationPath",
    "ModifyingApplication",
    "Action",
    "LocalPorts",
    "RemotePorts",
    "ActionName",
    "ResultCode",
    "DomainName",
    "SearchFilter",
    "VhdFileName",
    "Value",
    "Imphash",
    "OldTargetUserName",
    "SourceWorkstation",
];

/// Other names the same value has in some collection pipelines, read when an
/// event lacks the taxonomy name: NXLog and Winlogbeat-era exports (the OTRF
/// captures, for one) call the provider `SourceName` and the host
/// `Hostname`.
pub const ALIASES: &[(&str, &[&str])] = &[
    ("Provider_Name", &["SourceName"]),
    ("Computer", &["Hostname"]),
];

/// The aliases of event field `name` (empty for most fields).
pub fn aliases(name: &str) -> &'static [&'static str] {
    ALIASES
        .iter()
        .find(|(field, _)| *field == name)
        .map_or(&[], |(_, aliases)| aliases)
}

/// Index of `name` in [`FIELDS`] (exact, case-sensitive: Sigma field names
/// are case-sensitive, and so are event keys).
pub fn index(name: &str) -> Option<usize> {
    FIELDS.iter().position(|&field| field == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_no_duplicates() {
        let mut sorted = FIELDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), FIELDS.len());
        assert!(index("CommandLine").is_some());
        assert!(index("commandline").is_none());
        for (field, aliases) in ALIASES {
            assert!(index(field).is_some(), "{field}");
            for alias in *aliases {
                assert!(index(alias).is_some(), "{alias}");
            }
        }
    }

    #[test]
    fn catalogue_tables_look_up_and_planned_tables_grow_within_limits() {
        let mut catalogue = FieldTable::catalogue();
        assert_eq!(catalogue.len(), FIELDS.len());
        assert_eq!(catalogue.intern("CommandLine"), index("CommandLine"));
        assert_eq!(catalogue.intern("NotInTheCatalogue"), None);

        let mut planned = FieldTable::planned();
        assert_eq!(planned.intern("NotInTheCatalogue"), Some(0));
        assert_eq!(planned.intern("CommandLine"), Some(1));
        assert_eq!(planned.intern("NotInTheCatalogue"), Some(0));
        assert_eq!(planned.intern(&"x".repeat(MAX_FIELD_NAME_BYTES + 1)), None);
        planned.truncate(1);
        assert_eq!(planned.names(), ["NotInTheCatalogue"]);
        assert_eq!(planned.index("CommandLine"), None);
        for i in 1..MAX_PLANNED_FIELDS {
            assert_eq!(planned.intern(&format!("f{i}")), Some(i));
        }
        assert_eq!(planned.intern("one.too.many"), None);
    }
}
