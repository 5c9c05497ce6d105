//! The entity a hunt pivots on, and how one field value is compared with
//! it. Pure functions of their inputs, independent of the component glue.
//!
//! Comparison is case-insensitive throughout:
//!
//! - hosts by short name (`WS07.corp.example` = `ws07`, the DNS domain
//!   removed as `rare-process` does), a `\\` prefix dropped (`\\WS07` as
//!   4776 writes it); an address given as a host is compared as an address;
//! - users by account name, with or without `DOMAIN\` or `@realm`; when
//!   both sides name a domain in the same form (NetBIOS and NetBIOS, realm
//!   and realm) the domains must agree too. A NetBIOS name and a DNS realm
//!   are not compared: `CORP` and `ad.corp.example` may well be one domain;
//! - IP addresses exactly, after parsing (`::ffff:10.0.0.5` = `10.0.0.5`,
//!   `fe80:0:0:0:…` = `fe80::…`, a port or zone removed);
//! - processes by file name (`cmd.exe`, or `cmd` for any extension), or by
//!   full path when the pivot is a path;
//! - hashes exactly (any digest in a Sysmon `SHA1=…,MD5=…` list);
//! - domains exactly or as a parent (`evil.example` matches
//!   `a.evil.example`, not `notevil.example`).
//!
//! Never by substring: `ws1` does not match `ws10`, `bob` not `bobby`.

use std::fmt;
use std::net::IpAddr;

/// The kinds of entity a hunt can pivot on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A host name.
    Host,
    /// An account.
    User,
    /// An IP address.
    Ip,
    /// A process image.
    Process,
    /// A file hash (MD5, SHA-1, SHA-256, SHA-512).
    Hash,
    /// A DNS name.
    Domain,
}

impl Kind {
    /// Every kind, in the order they are documented.
    pub const ALL: [Kind; 6] = [
        Kind::Host,
        Kind::User,
        Kind::Ip,
        Kind::Process,
        Kind::Hash,
        Kind::Domain,
    ];

    /// The kind as written before the `:` of an entity (`host`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Host => "host",
            Kind::User => "user",
            Kind::Ip => "ip",
            Kind::Process => "process",
            Kind::Hash => "hash",
            Kind::Domain => "domain",
        }
    }

    /// Reads a kind name, with the aliases triage accepts (`hostname`,
    /// `computer`, `account`, `addr`, `address`, `image`), any case.
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "host" | "hostname" | "computer" => Kind::Host,
            "user" | "account" => Kind::User,
            "ip" | "addr" | "address" => Kind::Ip,
            "process" | "image" => Kind::Process,
            "hash" => Kind::Hash,
            "domain" => Kind::Domain,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the `entity` parameter looks like, for error messages.
pub const ACCEPTED_FORMS: &str = "KIND:VALUE with KIND one of host, user, ip, process, hash, domain \
     (`host:ws07`, `user:alice`, `user:CORP\\alice`, `user:alice@corp.example`, `ip:10.0.0.5`, \
     `process:psexec.exe`, `hash:<md5, sha1 or sha256>`, `domain:evil.example`)";

/// The domain part of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Qualifier {
    /// A NetBIOS domain or machine name (`CORP` of `CORP\alice`), lowercase.
    NetBios(String),
    /// A DNS realm (`corp.example` of `alice@corp.example`), lowercase.
    Realm(String),
}

impl Qualifier {
    /// A domain as written (`CORP`, `corp.example.`); `None` for an empty or
    /// placeholder one. A name with a dot is a realm.
    pub fn parse(raw: &str) -> Option<Qualifier> {
        let domain = raw.trim().trim_end_matches('.');
        if is_placeholder(domain) {
            return None;
        }
        let domain = domain.to_lowercase();
        Some(if domain.contains('.') {
            Qualifier::Realm(domain)
        } else {
            Qualifier::NetBios(domain)
        })
    }

    /// Whether two qualifiers may name one domain: equal when written the
    /// same way, otherwise not comparable (so not a mismatch).
    pub fn agrees_with(&self, other: &Qualifier) -> bool {
        match (self, other) {
            (Qualifier::NetBios(a), Qualifier::NetBios(b))
            | (Qualifier::Realm(a), Qualifier::Realm(b)) => a == b,
            _ => true,
        }
    }
}

/// An account: its name and, when known, its domain. Lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The account name (`alice`, `ws07$`).
    pub name: String,
    /// The domain, when written.
    pub domain: Option<Qualifier>,
}

impl Account {
    /// Whether `other` is this account: the same name, and domains that
    /// agree when both are known ([`Qualifier::agrees_with`]).
    pub fn same(&self, other: &Account) -> bool {
        self.name == other.name
            && match (&self.domain, &other.domain) {
                (Some(a), Some(b)) => a.agrees_with(b),
                _ => true,
            }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            None => f.write_str(&self.name),
            Some(Qualifier::NetBios(domain)) => write!(f, "{domain}\\{}", self.name),
            Some(Qualifier::Realm(realm)) => write!(f, "{}@{realm}", self.name),
        }
    }
}

/// How a field writes an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStyle {
    /// `alice`, `CORP\alice` or `alice@corp.example`.
    Plain,
    /// A Kerberos principal as Zeek writes it: `alice/CORP.EXAMPLE`.
    Kerberos,
    /// An AWS ARN: the name is the last path segment
    /// (`arn:aws:iam::123456789012:user/alice`).
    Arn,
}

/// A process image to pivot on, lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// The whole path when the pivot named one.
    pub path: Option<String>,
    /// The file name (`psexec.exe`, or `psexec` for any extension).
    pub file: String,
}

impl Process {
    fn parse(raw: &str) -> Option<Process> {
        let image = normalise_image(raw)?;
        if image.contains(['\\', '/']) {
            let file = file_name(&image).to_owned();
            if file.is_empty() {
                return None;
            }
            Some(Process {
                path: Some(image),
                file,
            })
        } else {
            Some(Process {
                path: None,
                file: image,
            })
        }
    }

    /// Whether an image, process name or command name is this process.
    pub fn matches(&self, value: &str) -> bool {
        let Some(image) = normalise_image(value) else {
            return false;
        };
        if let Some(path) = &self.path {
            return image == *path;
        }
        let file = file_name(&image);
        file == self.file
            || (!self.file.contains('.')
                && file
                    .rsplit_once('.')
                    .is_some_and(|(stem, _)| stem == self.file))
    }
}

/// The entity a hunt pivots on, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pivot {
    /// A host: its short name, or an address written as a host.
    Host {
        /// Short lowercase name (or the address's text).
        name: String,
        /// The address, when the host was given as one.
        address: Option<IpAddr>,
    },
    /// An account.
    User(Account),
    /// An IP address (IPv4-mapped IPv6 as IPv4).
    Ip(IpAddr),
    /// A process image.
    Process(Process),
    /// A file hash, lowercase hex.
    Hash(String),
    /// A DNS name, lowercase, without a trailing dot.
    Domain(String),
}

/// What a field holds, and so how its value is compared with the pivot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A host name (or a host's address).
    Host,
    /// An account, written in a style.
    User(UserStyle),
    /// An IP address.
    Ip,
    /// A process image or name.
    Process,
    /// A file hash, or a list of `ALGO=digest`.
    Hash,
    /// A DNS name.
    Domain,
}

impl Role {
    /// The kind of entity fields of this role carry.
    pub fn kind(self) -> Kind {
        match self {
            Role::Host => Kind::Host,
            Role::User(_) => Kind::User,
            Role::Ip => Kind::Ip,
            Role::Process => Kind::Process,
            Role::Hash => Kind::Hash,
            Role::Domain => Kind::Domain,
        }
    }
}

impl Pivot {
    /// Reads the `entity` parameter: `KIND:VALUE` ([`ACCEPTED_FORMS`]).
    ///
    /// # Errors
    ///
    /// Why the text is not an entity, with the text and the accepted forms.
    pub fn parse(text: &str) -> Result<Pivot, String> {
        let bad =
            |why: &str| format!("parameter `entity` must be {ACCEPTED_FORMS}; got `{text}`: {why}");
        let Some((kind, value)) = text.trim().split_once(':') else {
            return Err(bad("no `KIND:` before the value"));
        };
        let Some(kind) = Kind::parse(kind) else {
            return Err(bad(&format!("`{}` is not a kind of entity", kind.trim())));
        };
        let value = value.trim().trim_matches('"').trim();
        if is_placeholder(value) {
            return Err(bad("the value is empty"));
        }
        match kind {
            Kind::Host => {
                if let Some(address) = parse_ip(value) {
                    return Ok(Pivot::Host {
                        name: address.to_string(),
                        address: Some(address),
                    });
                }
                if value.contains(|c: char| c.is_whitespace() || c == '/' || c == '@')
                    || value.trim_start_matches('\\').contains('\\')
                {
                    return Err(bad("a host name has no spaces, `/`, `\\` or `@`"));
                }
                let name = host_name(value).ok_or_else(|| bad("the host name is empty"))?;
                Ok(Pivot::Host {
                    name,
                    address: None,
                })
            }
            Kind::User => account(value, UserStyle::Plain, None)
                .map(Pivot::User)
                .ok_or_else(|| bad("the account name is empty")),
            Kind::Ip => parse_ip(value)
                .map(Pivot::Ip)
                .ok_or_else(|| bad(&format!("`{value}` is not an IP address"))),
            Kind::Process => Process::parse(value)
                .map(Pivot::Process)
                .ok_or_else(|| bad("the process image is empty")),
            Kind::Hash => {
                let hex = value.to_ascii_lowercase();
                if matches!(hex.len(), 32 | 40 | 64 | 128)
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    Ok(Pivot::Hash(hex))
                } else {
                    Err(bad(
                        "a hash is 32, 40, 64 or 128 hexadecimal digits (MD5, SHA-1, SHA-256, SHA-512)",
                    ))
                }
            }
            Kind::Domain => {
                let name = normalise_domain(value);
                if name.is_empty()
                    || name.parse::<IpAddr>().is_ok()
                    || name.contains(|c: char| c.is_whitespace() || "/:\\@".contains(c))
                {
                    Err(bad(
                        "a domain is a DNS name such as `evil.example` (use `ip:` for addresses)",
                    ))
                } else {
                    Ok(Pivot::Domain(name))
                }
            }
        }
    }

    /// The kind of entity.
    pub fn kind(&self) -> Kind {
        match self {
            Pivot::Host { .. } => Kind::Host,
            Pivot::User(_) => Kind::User,
            Pivot::Ip(_) => Kind::Ip,
            Pivot::Process(_) => Kind::Process,
            Pivot::Hash(_) => Kind::Hash,
            Pivot::Domain(_) => Kind::Domain,
        }
    }

    /// The normalised `kind:value` findings name as their entity
    /// (`host:ws07`, `user:corp\alice`, `ip:10.0.0.5`).
    pub fn entity(&self) -> String {
        let value = match self {
            Pivot::Host { name, .. } => name.clone(),
            Pivot::User(account) => account.to_string(),
            Pivot::Ip(address) => address.to_string(),
            Pivot::Process(process) => process.path.clone().unwrap_or(process.file.clone()),
            Pivot::Hash(hex) => hex.clone(),
            Pivot::Domain(name) => name.clone(),
        };
        format!("{}:{value}", self.kind())
    }

    /// Whether a field of `role` whose value is `value` mentions the pivot.
    /// `domain` is the account's domain from a companion field
    /// (`TargetDomainName` beside `TargetUserName`), used when the value
    /// itself names none.
    pub fn matches(&self, role: Role, value: &str, domain: Option<&str>) -> bool {
        match (self, role) {
            (Pivot::Host { name, .. }, Role::Host) => {
                items(value).any(|item| host_name(item).is_some_and(|h| h == *name))
            }
            (
                Pivot::Host {
                    address: Some(address),
                    ..
                },
                Role::Ip,
            )
            | (Pivot::Ip(address), Role::Ip | Role::Host) => {
                items(value).any(|item| parse_ip(item.trim_start_matches('\\')) == Some(*address))
            }
            (Pivot::User(wanted), Role::User(style)) => {
                account(value, style, domain).is_some_and(|found| wanted.same(&found))
            }
            (Pivot::Process(process), Role::Process) => process.matches(value),
            (Pivot::Hash(hex), Role::Hash) => items(value).any(|item| {
                item.split(',').any(|digest| {
                    let digest = digest.rsplit_once('=').map_or(digest, |(_, d)| d);
                    digest.trim().eq_ignore_ascii_case(hex)
                })
            }),
            (Pivot::Domain(wanted), Role::Domain) => items(value).any(|item| {
                let name = normalise_domain(item);
                name == *wanted
                    || name
                        .strip_suffix(wanted.as_str())
                        .is_some_and(|prefix| prefix.ends_with('.'))
            }),
            _ => false,
        }
    }
}

/// Placeholders logs write for "no value".
fn is_placeholder(value: &str) -> bool {
    let value = value.trim();
    value.is_empty()
        || [
            "-",
            "?",
            "(null)",
            "(none)",
            "null",
            "n/a",
            "unset",
            "(unknown)",
        ]
        .iter()
        .any(|p| value.eq_ignore_ascii_case(p))
}

/// The items of a value: a JSON array's strings (`["10.0.0.4","10.0.0.5"]`,
/// as list fields such as Zeek's `tx_hosts` arrive), or the value itself.
pub fn items(value: &str) -> impl Iterator<Item = &str> {
    let value = value.trim();
    let list = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .filter(|inner| inner.trim().is_empty() || inner.trim_start().starts_with('"'));
    let (one, many) = match list {
        Some(inner) => (None, Some(inner.split(','))),
        None => (Some(value), None),
    };
    one.into_iter()
        .chain(many.into_iter().flatten())
        .map(|item| item.trim().trim_matches('"'))
        .filter(|item| !item.is_empty())
}

/// A host name in the form hosts are compared in: lowercase, the DNS domain
/// removed (`WS01.corp.example` and `ws01` are one host). Addresses are kept
/// whole. `None` for an empty or `-` name. The same rule as
/// `rare_process::paths::normalise_host` (a test holds them together).
pub fn normalise_host(raw: &str) -> Option<String> {
    let host = raw.trim().trim_end_matches('.');
    if host.is_empty() || host == "-" {
        return None;
    }
    let host = host.to_lowercase();
    if host.parse::<IpAddr>().is_ok() {
        return Some(host);
    }
    Some(match host.split_once('.') {
        Some((short, _)) if !short.is_empty() => short.to_owned(),
        _ => host,
    })
}

/// A host name from a field: [`normalise_host`] after dropping a UNC `\\`
/// prefix and quotes; an address in canonical form.
fn host_name(raw: &str) -> Option<String> {
    let raw = raw.trim().trim_matches('"').trim_start_matches('\\');
    if is_placeholder(raw) {
        return None;
    }
    match parse_ip(raw) {
        Some(address) => Some(address.to_string()),
        None => normalise_host(raw),
    }
}

/// An IP address as logs write it: bare, in brackets (`[fe80::1]:443`),
/// with a port (`10.0.0.5:3389`), a zone (`fe80::1%12`) or quotes;
/// IPv4-mapped IPv6 is read as IPv4.
pub fn parse_ip(raw: &str) -> Option<IpAddr> {
    let text = raw.trim().trim_matches('"');
    let text = if let Some(rest) = text.strip_prefix('[') {
        rest.split(']').next()?
    } else if text.contains('.') && text.matches(':').count() == 1 {
        text.split(':').next()?
    } else {
        text
    };
    let text = text.split('%').next()?;
    let address: IpAddr = text.parse().ok()?;
    Some(match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    })
}

/// The account a field value names, with the domain from a companion field
/// when the value has none. `None` for empty and placeholder values.
pub fn account(raw: &str, style: UserStyle, domain: Option<&str>) -> Option<Account> {
    let raw = raw.trim().trim_matches('"').trim();
    if is_placeholder(raw) {
        return None;
    }
    let (name, qualifier) = match style {
        UserStyle::Plain => split_account(raw),
        UserStyle::Kerberos => match raw.rsplit_once('/') {
            Some((name, realm)) => (name, Qualifier::parse(realm)),
            None => split_account(raw),
        },
        UserStyle::Arn => match raw.strip_prefix("arn:").and_then(|r| r.rsplit_once('/')) {
            Some((_, name)) => (name, None),
            // `arn:…:root` names no user.
            None if raw.starts_with("arn:") => return None,
            None => split_account(raw),
        },
    };
    let name = name.trim();
    if is_placeholder(name) {
        return None;
    }
    Some(Account {
        name: name.to_lowercase(),
        domain: qualifier.or_else(|| domain.and_then(Qualifier::parse)),
    })
}

/// `DOMAIN\name`, `name@realm` or `name`.
fn split_account(raw: &str) -> (&str, Option<Qualifier>) {
    if let Some((domain, name)) = raw.split_once('\\') {
        return (name, Qualifier::parse(domain));
    }
    if let Some((name, realm)) = raw.rsplit_once('@')
        && !name.is_empty()
    {
        return (name, Qualifier::parse(realm));
    }
    (raw, None)
}

/// An image path or process name for comparison: quotes, `\\?\` and `\??\`
/// removed, lowercase. `None` when empty.
fn normalise_image(raw: &str) -> Option<String> {
    let image = raw.trim().trim_matches('"').trim();
    let image = image
        .strip_prefix("\\\\?\\")
        .or_else(|| image.strip_prefix("\\??\\"))
        .unwrap_or(image);
    (!is_placeholder(image)).then(|| image.to_lowercase())
}

fn file_name(image: &str) -> &str {
    image.rsplit(['\\', '/']).next().unwrap_or(image)
}

fn normalise_domain(raw: &str) -> String {
    raw.trim()
        .trim_matches('"')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pivot(text: &str) -> Pivot {
        Pivot::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn entities_parse_into_their_normal_form() {
        for (text, entity) in [
            ("host:WS07", "host:ws07"),
            ("HOST: WS07.corp.example. ", "host:ws07"),
            ("computer:\\\\WS07", "host:ws07"),
            ("host:10.0.0.5", "host:10.0.0.5"),
            ("user:Alice", "user:alice"),
            ("user:CORP\\Alice", "user:corp\\alice"),
            ("account:alice@Corp.Example", "user:alice@corp.example"),
            ("ip:::ffff:10.0.0.5", "ip:10.0.0.5"),
            (
                "ip:fe80:0:0:0:90e:17af:263c:5209",
                "ip:fe80::90e:17af:263c:5209",
            ),
            ("addr:[2001:db8::1]", "ip:2001:db8::1"),
            (
                "process:C:\\Tools\\PsExec.exe",
                "process:c:\\tools\\psexec.exe",
            ),
            ("image:PsExec.exe", "process:psexec.exe"),
            (
                "hash:CC85D7649546D3C0B1607F761B73FEC2",
                "hash:cc85d7649546d3c0b1607f761b73fec2",
            ),
            ("domain:Evil.Example.", "domain:evil.example"),
        ] {
            assert_eq!(pivot(text).entity(), entity, "{text}");
        }
    }

    #[test]
    fn malformed_entities_are_refused_with_the_accepted_forms() {
        for (text, why) in [
            ("ws07", "no `KIND:` before the value"),
            ("machine:ws07", "`machine` is not a kind of entity"),
            ("host:", "the value is empty"),
            ("user: - ", "the value is empty"),
            ("ip:10.0.0", "`10.0.0` is not an IP address"),
            ("host:ws 07", "a host name has no spaces"),
            ("hash:abc", "a hash is 32, 40, 64 or 128 hexadecimal digits"),
            ("domain:10.0.0.5", "a domain is a DNS name"),
        ] {
            let error = Pivot::parse(text).unwrap_err();
            assert!(
                error.starts_with(
                    "parameter `entity` must be KIND:VALUE with KIND one of host, user, ip"
                ),
                "{error}"
            );
            assert!(error.contains(&format!("got `{text}`: {why}")), "{error}");
        }
    }

    #[test]
    fn hosts_match_by_short_name_and_never_by_prefix() {
        let ws1 = pivot("host:ws1");
        for value in [
            "WS1",
            "ws1.corp.example",
            "WS1.CORP.EXAMPLE.",
            "\\\\WS1",
            " ws1 ",
        ] {
            assert!(ws1.matches(Role::Host, value, None), "{value}");
        }
        for value in [
            "ws10",
            "ws1x.corp.example",
            "corp.ws1",
            "ws",
            "-",
            "",
            "10.0.0.1",
        ] {
            assert!(!ws1.matches(Role::Host, value, None), "{value}");
        }
        // The full name in the pivot is shortened too.
        let fqdn = pivot("host:WS1.other.example");
        assert!(fqdn.matches(Role::Host, "ws1.corp.example", None));
        // Host fields are not read as users or addresses.
        assert!(!ws1.matches(Role::User(UserStyle::Plain), "ws1", None));
        assert!(!ws1.matches(Role::Ip, "ws1", None));
    }

    #[test]
    fn a_host_given_as_an_address_matches_addresses() {
        let host = pivot("host:10.0.0.5");
        assert!(host.matches(Role::Host, "10.0.0.5", None));
        assert!(host.matches(Role::Ip, "::ffff:10.0.0.5", None));
        assert!(!host.matches(Role::Host, "10.0.0.50", None));
        // Names are not shortened at the dots of an address.
        assert!(!host.matches(Role::Host, "10", None));
    }

    #[test]
    fn users_match_with_or_without_domain_or_realm() {
        let alice = pivot("user:alice");
        for (value, domain) in [
            ("alice", None),
            ("ALICE", None),
            ("CORP\\alice", None),
            ("alice@CORP.EXAMPLE", None),
            ("alice", Some("CORP")),
            ("\"alice\"", None),
        ] {
            assert!(
                alice.matches(Role::User(UserStyle::Plain), value, domain),
                "{value}"
            );
        }
        for value in [
            "alicea",
            "malice",
            "CORP\\alice2",
            "alice.smith@corp.example",
            "-",
            "",
        ] {
            assert!(
                !alice.matches(Role::User(UserStyle::Plain), value, None),
                "{value}"
            );
        }
        // A domain in the pivot must agree with one written the same way.
        let corp = pivot("user:CORP\\alice");
        let plain = Role::User(UserStyle::Plain);
        assert!(corp.matches(plain, "alice", None));
        assert!(corp.matches(plain, "corp\\ALICE", None));
        assert!(corp.matches(plain, "alice", Some("CORP")));
        assert!(!corp.matches(plain, "OTHER\\alice", None));
        assert!(!corp.matches(plain, "alice", Some("OTHER")));
        // A realm is another form of domain: not compared with NetBIOS.
        assert!(corp.matches(plain, "alice@ad.corp.example", None));
        let realm = pivot("user:alice@corp.example");
        assert!(realm.matches(plain, "alice@CORP.EXAMPLE", None));
        assert!(realm.matches(plain, "alice", Some("CORP.EXAMPLE")));
        assert!(!realm.matches(plain, "alice@other.example", None));
        assert!(realm.matches(plain, "CORP\\alice", None));
        // Placeholder domains are no domain.
        assert!(corp.matches(plain, "alice", Some("-")));
    }

    #[test]
    fn kerberos_principals_and_arns_name_their_user() {
        let alice = pivot("user:CORP.EXAMPLE\\alice");
        assert!(alice.matches(Role::User(UserStyle::Kerberos), "alice/CORP.EXAMPLE", None));
        assert!(!alice.matches(Role::User(UserStyle::Kerberos), "alice/OTHER.EXAMPLE", None));
        let pedro = pivot("user:pedro");
        let arn = Role::User(UserStyle::Arn);
        assert!(pedro.matches(arn, "arn:aws:iam::123456789123:user/pedro", None));
        assert!(pedro.matches(
            arn,
            "arn:aws:sts::123456789123:assumed-role/Admin/pedro",
            None
        ));
        assert!(!pedro.matches(arn, "arn:aws:iam::123456789123:root", None));
        assert!(!pedro.matches(arn, "arn:aws:iam::123456789123:user/pedro2", None));
        // Machine accounts are accounts like any other.
        assert!(pivot("user:WS07$").matches(Role::User(UserStyle::Plain), "CORP\\ws07$", None));
        assert!(!pivot("user:ws07").matches(Role::User(UserStyle::Plain), "ws07$", None));
    }

    #[test]
    fn addresses_match_exactly_in_every_spelling() {
        let ip = pivot("ip:10.0.0.5");
        for value in [
            "10.0.0.5",
            "::ffff:10.0.0.5",
            "::FFFF:10.0.0.5",
            "10.0.0.5:3389",
            "\"10.0.0.5\"",
            "[\"10.0.0.4\",\"10.0.0.5\"]",
        ] {
            assert!(ip.matches(Role::Ip, value, None), "{value}");
        }
        for value in [
            "10.0.0.50",
            "110.0.0.5",
            "10.0.0.",
            "::ffff:10.0.0.6",
            "-",
            "host10.0.0.5",
        ] {
            assert!(!ip.matches(Role::Ip, value, None), "{value}");
        }
        let v6 = pivot("ip:fe80::90e:17af:263c:5209");
        assert!(v6.matches(Role::Ip, "fe80:0:0:0:90e:17af:263c:5209", None));
        assert!(v6.matches(Role::Ip, "[fe80::90e:17af:263c:5209]:443", None));
        assert!(v6.matches(Role::Ip, "fe80::90e:17af:263c:5209%12", None));
        // A host field holding an address (syslog from an address, Zeek's
        // canonical host) mentions the address.
        assert!(ip.matches(Role::Host, "10.0.0.5", None));
        assert!(!ip.matches(Role::Host, "ws07", None));
        // An address is not a user.
        assert!(!ip.matches(Role::User(UserStyle::Plain), "10.0.0.5", None));
    }

    #[test]
    fn processes_hashes_and_domains_match_whole_names() {
        let psexec = pivot("process:PsExec.exe");
        assert!(psexec.matches(Role::Process, "C:\\Tools\\PSEXEC.EXE", None));
        assert!(psexec.matches(Role::Process, "\"C:\\Tools\\psexec.exe\"", None));
        assert!(!psexec.matches(Role::Process, "C:\\Tools\\PsExec64.exe", None));
        let stem = pivot("process:psexec");
        assert!(stem.matches(Role::Process, "C:\\Tools\\PsExec.exe", None));
        assert!(stem.matches(Role::Process, "psexec", None));
        assert!(!stem.matches(Role::Process, "C:\\Tools\\PsExec64.exe", None));
        let path = pivot("process:C:\\Tools\\PsExec.exe");
        assert!(path.matches(Role::Process, "\\\\?\\c:\\tools\\psexec.exe", None));
        assert!(!path.matches(Role::Process, "D:\\Tools\\PsExec.exe", None));
        let bash = pivot("process:/usr/bin/bash");
        assert!(bash.matches(Role::Process, "/usr/bin/bash", None));
        assert!(!bash.matches(Role::Process, "/tmp/bash", None));

        let md5 = "cc85d7649546d3c0b1607f761b73fec2";
        let hash = pivot(&format!("hash:{md5}"));
        assert!(hash.matches(Role::Hash, &md5.to_uppercase(), None));
        assert!(hash.matches(
            Role::Hash,
            &format!("SHA1=1A1A10B819F321B91B47D7DD73668406A15992DB,MD5={md5},IMPHASH=00"),
            None
        ));
        assert!(!hash.matches(Role::Hash, &md5[1..], None));

        let domain = pivot("domain:evil.example");
        for value in ["evil.example", "EVIL.example.", "a.b.evil.example"] {
            assert!(domain.matches(Role::Domain, value, None), "{value}");
        }
        for value in ["notevil.example", "evil.example.com", "example"] {
            assert!(!domain.matches(Role::Domain, value, None), "{value}");
        }
    }

    #[test]
    fn list_values_are_split_into_items() {
        assert_eq!(items("[\"a\", \"b\"]").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(items("[]").count(), 0);
        assert_eq!(items("[::1]").collect::<Vec<_>>(), ["[::1]"]);
        assert_eq!(items(" x ").collect::<Vec<_>>(), ["x"]);
    }
}
