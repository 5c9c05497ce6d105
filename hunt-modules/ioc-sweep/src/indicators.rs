//! Indicator values out of event fields, in plain Rust: no host calls, so
//! it is unit-tested on the build machine.
//!
//! Each function turns one field's text into the values worth looking up
//! in the intel sets, in the form feeds publish them: hashes as hex, IP
//! addresses canonical, domain names without a trailing dot (and every
//! parent domain, so a subdomain of a listed domain matches), URLs with and
//! without their query. The host compares them trimmed, lowercased and
//! re-fanged, like the sets' own entries.

use std::fmt;
use std::net::IpAddr;

/// What kind of indicator a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A file hash (MD5, SHA1, SHA256, IMPHASH).
    Hash,
    /// A URL.
    Url,
    /// A domain name.
    Domain,
    /// An IP address.
    Ip,
}

impl Kind {
    /// The kind's name in rule ids and evidence (`hash`, `url`, `domain`,
    /// `ip`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hash => "hash",
            Kind::Url => "url",
            Kind::Domain => "domain",
            Kind::Ip => "ip",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A file hash algorithm, named as Sysmon names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashType {
    /// 128-bit MD5.
    Md5,
    /// 160-bit SHA-1.
    Sha1,
    /// 256-bit SHA-256.
    Sha256,
    /// The PE import-table hash (an MD5 of the imports).
    Imphash,
}

impl HashType {
    /// The name in evidence (`MD5`, `SHA1`, `SHA256`, `IMPHASH`).
    pub fn name(self) -> &'static str {
        match self {
            HashType::Md5 => "MD5",
            HashType::Sha1 => "SHA1",
            HashType::Sha256 => "SHA256",
            HashType::Imphash => "IMPHASH",
        }
    }

    /// The algorithm of a Sysmon `ALG=` label (any case; `SHA-256` too).
    pub fn from_label(label: &str) -> Option<Self> {
        let label: String = label
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        match label.trim() {
            "MD5" => Some(HashType::Md5),
            "SHA1" => Some(HashType::Sha1),
            "SHA256" => Some(HashType::Sha256),
            "IMPHASH" => Some(HashType::Imphash),
            _ => None,
        }
    }

    /// The algorithm of a bare hex digest, by its length.
    pub fn from_length(len: usize) -> Option<Self> {
        match len {
            32 => Some(HashType::Md5),
            40 => Some(HashType::Sha1),
            64 => Some(HashType::Sha256),
            _ => None,
        }
    }

    fn digest_len(self) -> usize {
        match self {
            HashType::Md5 | HashType::Imphash => 32,
            HashType::Sha1 => 40,
            HashType::Sha256 => 64,
        }
    }
}

/// Whether `value` is a hex digest worth looking up: all hex, not all
/// zeros (Sysmon writes an all-zero IMPHASH for files that are not PE).
fn is_digest(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_hexdigit())
        && value.bytes().any(|b| b != b'0')
}

/// The digests in a hash field: Sysmon's `Hashes`/`Hash`
/// (`SHA1=…,MD5=…,SHA256=…,IMPHASH=…`, any order and subset) or a bare
/// digest (Zeek `files` `md5`/`sha1`/`sha256`), typed by label or length.
/// Malformed parts are skipped.
pub fn hashes(text: &str) -> Vec<(HashType, &str)> {
    let mut found = Vec::new();
    for part in text.split([',', ';', ' ']) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let typed = match part.split_once('=') {
            Some((label, digest)) => HashType::from_label(label).map(|kind| (kind, digest.trim())),
            None => HashType::from_length(part.len()).map(|kind| (kind, part)),
        };
        if let Some((kind, digest)) = typed
            && digest.len() == kind.digest_len()
            && is_digest(digest)
        {
            found.push((kind, digest));
        }
    }
    found
}

/// An IP address in canonical form (IPv4-mapped IPv6 as IPv4, IPv6
/// compressed and lowercase, a `%zone` or surrounding brackets dropped), or
/// `None` when `text` is not an address or is one that says nothing about
/// a peer (unspecified, loopback).
pub fn ip(text: &str) -> Option<String> {
    let text = text.trim().trim_start_matches('[').trim_end_matches(']');
    let unzoned = text.split('%').next().unwrap_or(text);
    let address: IpAddr = unzoned.parse().ok()?;
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if address.is_unspecified() || address.is_loopback() {
        return None;
    }
    Some(address.to_string())
}

/// Most parent domains looked up per name: the registered domain and
/// those just above it are what feeds list; a name with more labels is
/// looked up whole and by its shortest parents.
pub const MAX_PARENT_LOOKUPS: usize = 16;

/// A domain name in comparable form (lowercase, no trailing dot, no
/// surrounding whitespace), or `None` when `text` is not one: it must have
/// at least two labels of letters, digits, `-` and `_`, and not be an IP
/// address.
pub fn domain(text: &str) -> Option<String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    (labels_ok && name.contains('.')).then_some(name)
}

/// The names to look up for a (normalised) domain: the name itself, then
/// its parents down to two labels (`a.b.evil.example` → itself,
/// `b.evil.example`, `evil.example`), so that a listed domain covers its
/// subdomains. Bare top-level domains are never looked up. At most
/// [`MAX_PARENT_LOOKUPS`] parents, the shortest.
pub fn domain_and_parents(name: &str) -> Vec<&str> {
    let mut names = vec![name];
    let mut parents: Vec<&str> = name
        .match_indices('.')
        .map(|(i, _)| &name[i + 1..])
        .filter(|parent| parent.contains('.'))
        .collect();
    let skip = parents.len().saturating_sub(MAX_PARENT_LOOKUPS);
    names.extend(parents.drain(skip..));
    names
}

/// The URL forms of an HTTP request seen on the wire (Zeek `http`): the
/// request was cleartext HTTP, so `http://host[:port]uri`; the port is
/// written only when it is not 80. An absolute-form `uri` (proxy requests)
/// is used as it is. `None` without a usable host.
pub fn http_url(host: &str, uri: Option<&str>, port: Option<u16>) -> Option<String> {
    let uri = uri.map(str::trim).filter(|u| !u.is_empty() && *u != "-");
    if let Some(uri) = uri
        && (uri.starts_with("http://") || uri.starts_with("https://"))
    {
        return Some(uri.to_owned());
    }
    let host = host.trim().trim_end_matches('.');
    if host.is_empty() || host == "-" {
        return None;
    }
    let authority = match port {
        // A Host header may already carry the port.
        Some(port) if port != 80 && !host.contains(':') => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    let path = match uri {
        Some(uri) if uri.starts_with('/') => uri.to_owned(),
        Some(uri) => format!("/{uri}"),
        None => "/".to_owned(),
    };
    Some(format!("http://{authority}{path}"))
}

/// The forms of a URL to look up: as written, without its query and
/// fragment, and without its scheme (feeds list `evil.example/gate.php`
/// as often as `http://evil.example/gate.php`), plus the form with a
/// trailing `/` for a bare host (`http://evil.example` →
/// `http://evil.example/`). Duplicates removed, order kept.
pub fn url_forms(url: &str) -> Vec<String> {
    let url = url.trim();
    let mut forms: Vec<String> = Vec::new();
    let mut push = |form: &str| {
        if !form.is_empty() && !forms.iter().any(|f| f == form) {
            forms.push(form.to_owned());
        }
    };
    push(url);
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    push(without_query);
    for form in [url, without_query] {
        if let Some((_, rest)) = form.split_once("://") {
            push(rest);
        }
    }
    if let Some((scheme, rest)) = url.split_once("://")
        && !rest.contains('/')
    {
        push(&format!("{scheme}://{rest}/"));
    }
    forms
}

/// The host of a URL (`http://user@Evil.example:8080/x` → `evil.example`),
/// or `None` when it has none. Brackets of an IPv6 host are removed.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    let host = host.trim().to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysmon_and_zeek_hashes_are_split_and_typed() {
        let md5 = "2e5a8590cf6848968fc23de3fa1e25f1";
        let sha1 = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
        let sha256 = "4ad3b3b4f8c4e1f2a6a2c5e3c2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3";
        let imphash = "f34d5f2d4577ed6d9ceec516c1f5a744";
        let text = format!("SHA1={sha1},MD5={md5},SHA256={sha256},IMPHASH={imphash}");
        assert_eq!(
            hashes(&text),
            [
                (HashType::Sha1, sha1),
                (HashType::Md5, md5),
                (HashType::Sha256, sha256),
                (HashType::Imphash, imphash)
            ]
        );
        // Bare digests (Zeek) by length; lowercase labels; junk skipped.
        assert_eq!(hashes(md5), [(HashType::Md5, md5)]);
        assert_eq!(hashes(sha256), [(HashType::Sha256, sha256)]);
        assert_eq!(
            hashes(&format!("sha-256={sha256}; crc32=1234abcd")),
            [(HashType::Sha256, sha256)]
        );
        assert_eq!(
            hashes("IMPHASH=00000000000000000000000000000000"),
            [],
            "all zeros: not a PE"
        );
        assert_eq!(hashes("MD5=xyz,SHA1=12"), []);
        assert_eq!(hashes("-"), []);
        assert_eq!(HashType::Imphash.name(), "IMPHASH");
    }

    #[test]
    fn addresses_are_canonical_and_local_ones_skipped() {
        assert_eq!(ip("203.0.113.7").as_deref(), Some("203.0.113.7"));
        assert_eq!(ip("::ffff:203.0.113.7").as_deref(), Some("203.0.113.7"));
        assert_eq!(ip("2001:DB8:0:0::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("fe80::1%eth0").as_deref(), Some("fe80::1"));
        assert_eq!(ip("127.0.0.1"), None);
        assert_eq!(ip("::1"), None);
        assert_eq!(ip("0.0.0.0"), None);
        assert_eq!(ip("-"), None);
        assert_eq!(ip("evil.example"), None);
    }

    #[test]
    fn domains_are_looked_up_with_their_parents() {
        assert_eq!(
            domain("A.B.Evil.Example.").as_deref(),
            Some("a.b.evil.example")
        );
        assert_eq!(domain("localhost"), None);
        assert_eq!(domain("10.0.0.1"), None);
        assert_eq!(domain("bad name.example"), None);
        assert_eq!(domain("a..example"), None);
        assert_eq!(
            domain_and_parents("a.b.evil.example"),
            ["a.b.evil.example", "b.evil.example", "evil.example"]
        );
        assert_eq!(domain_and_parents("evil.example"), ["evil.example"]);
        let long: String = (0..40).map(|i| format!("l{i}.")).collect::<String>() + "example";
        let names = domain_and_parents(&long);
        assert_eq!(names.len(), 1 + MAX_PARENT_LOOKUPS);
        assert_eq!(names[0], long);
        assert_eq!(names.last().copied(), Some("l39.example"));
    }

    #[test]
    fn http_requests_become_urls() {
        assert_eq!(
            http_url("evil.example", Some("/gate.php?id=1"), Some(80)).as_deref(),
            Some("http://evil.example/gate.php?id=1")
        );
        assert_eq!(
            http_url("evil.example", Some("/x"), Some(8080)).as_deref(),
            Some("http://evil.example:8080/x")
        );
        assert_eq!(
            http_url("evil.example:8080", Some("/x"), Some(8080)).as_deref(),
            Some("http://evil.example:8080/x")
        );
        assert_eq!(
            http_url("proxy.corp", Some("http://evil.example/x"), Some(3128)).as_deref(),
            Some("http://evil.example/x")
        );
        assert_eq!(
            http_url("evil.example", None, None).as_deref(),
            Some("http://evil.example/")
        );
        assert_eq!(http_url("-", Some("/x"), None), None);
    }

    #[test]
    fn urls_are_looked_up_in_several_forms() {
        assert_eq!(
            url_forms("http://evil.example/gate.php?id=1#x"),
            [
                "http://evil.example/gate.php?id=1#x",
                "http://evil.example/gate.php",
                "evil.example/gate.php?id=1#x",
                "evil.example/gate.php",
            ]
        );
        assert_eq!(
            url_forms("https://evil.example"),
            [
                "https://evil.example",
                "evil.example",
                "https://evil.example/"
            ]
        );
        assert_eq!(
            url_host("http://u@Evil.Example:8080/x").as_deref(),
            Some("evil.example")
        );
        assert_eq!(
            url_host("http://[2001:db8::1]:443/").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            url_host("evil.example/x?y").as_deref(),
            Some("evil.example")
        );
        assert_eq!(url_host("http:///x"), None);
    }
}
