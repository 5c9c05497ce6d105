//! One indicator: what kind of value it is, the value in the form lookups
//! compare ([`quarry_contract::intel::normalise`]: lowercased, re-fanged),
//! and when it is valid.

use quarry_contract::intel::normalise;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What an indicator's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// An IPv4 or IPv6 address.
    Ip,
    /// A range of addresses, `198.51.100.0/24` or `2001:db8::/32`.
    Cidr,
    /// A domain; lookups also match its subdomains where the module says so.
    Domain,
    /// `*.example.org`: any subdomain of example.org.
    WildcardDomain,
    /// A URL.
    Url,
    /// An MD5 hash (32 hex digits).
    Md5,
    /// A SHA-1 hash (40 hex digits).
    Sha1,
    /// A SHA-256 hash (64 hex digits).
    Sha256,
}

impl Kind {
    /// The kind's name in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ip => "ip",
            Kind::Cidr => "cidr",
            Kind::Domain => "domain",
            Kind::WildcardDomain => "wildcard-domain",
            Kind::Url => "url",
            Kind::Md5 => "md5",
            Kind::Sha1 => "sha1",
            Kind::Sha256 => "sha256",
        }
    }
}

/// One indicator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indicator {
    /// What it is.
    pub kind: Kind,
    /// The value, normalised.
    pub value: String,
    /// Valid from (unix ms), if the source said.
    pub valid_from_ms: Option<i64>,
    /// Valid until (unix ms), if the source said.
    pub valid_until_ms: Option<i64>,
}

const WHAT: &str = "not an IP address, CIDR range, domain, *.domain, URL or MD5/SHA-1/SHA-256 hash";

impl Indicator {
    /// An indicator of whatever kind `value` is.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = normalise(value);
        let kind = classify(&value).ok_or_else(|| format!("`{}` is {WHAT}", shown(&value)))?;
        Ok(Self::new(kind, value))
    }

    /// An indicator that must be of `kind` (the source said which).
    pub fn of_kind(kind: Kind, value: &str) -> Result<Self, String> {
        let value = normalise(value);
        let found = classify(&value);
        // A source's "IP" may be a range, its "domain" a wildcard.
        let fits = match (kind, found) {
            (Kind::Ip | Kind::Cidr, Some(Kind::Ip | Kind::Cidr)) => true,
            (Kind::Domain | Kind::WildcardDomain, Some(Kind::Domain | Kind::WildcardDomain)) => {
                true
            }
            (expected, Some(found)) => expected == found,
            (_, None) => false,
        };
        match (fits, found) {
            (true, Some(found)) => Ok(Self::new(found, value)),
            _ => Err(format!(
                "`{}` is not a valid {} value",
                shown(&value),
                kind.as_str()
            )),
        }
    }

    fn new(kind: Kind, value: String) -> Self {
        Self {
            kind,
            value,
            valid_from_ms: None,
            valid_until_ms: None,
        }
    }

    /// Whether it is valid at `now_ms`.
    pub fn valid_at(&self, now_ms: i64) -> bool {
        self.valid_from_ms.is_none_or(|from| from <= now_ms)
            && self.valid_until_ms.is_none_or(|until| now_ms < until)
    }
}

/// At most 60 characters of a value, for messages.
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(60).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out
}

/// The kind of a normalised value, if it is one.
pub fn classify(value: &str) -> Option<Kind> {
    if value.parse::<IpAddr>().is_ok() {
        return Some(Kind::Ip);
    }
    if let Some((address, prefix)) = value.split_once('/')
        && let Ok(address) = address.parse::<IpAddr>()
        && let Ok(prefix) = prefix.parse::<u8>()
    {
        let max = if address.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(Kind::Cidr);
    }
    if value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return match value.len() {
            32 => Some(Kind::Md5),
            40 => Some(Kind::Sha1),
            64 => Some(Kind::Sha256),
            _ => None,
        };
    }
    if let Some((scheme, rest)) = value.split_once("://") {
        let scheme_ok = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        return (scheme_ok && !rest.is_empty() && !rest.contains(char::is_whitespace))
            .then_some(Kind::Url);
    }
    if let Some(rest) = value.strip_prefix("*.") {
        return is_domain(rest).then_some(Kind::WildcardDomain);
    }
    is_domain(value).then_some(Kind::Domain)
}

/// A DNS name with at least two labels and a non-numeric top label.
fn is_domain(value: &str) -> bool {
    let value = value.strip_suffix('.').unwrap_or(value);
    let labels: Vec<&str> = value.split('.').collect();
    labels.len() >= 2
        && value.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                && !label.starts_with('-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_classified_normalised_and_checked_against_their_stated_kind() {
        let cases = [
            ("203.0.113.7", Kind::Ip),
            ("2001:db8::1", Kind::Ip),
            ("198.51.100.0/24", Kind::Cidr),
            ("2001:db8::/32", Kind::Cidr),
            ("Evil[.]Example", Kind::Domain),
            ("*.c2.example.net", Kind::WildcardDomain),
            ("hxxp://files.example/drop.bin", Kind::Url),
            (&"a".repeat(32), Kind::Md5),
            (&"b".repeat(40), Kind::Sha1),
            (&"C".repeat(64), Kind::Sha256),
        ];
        for (value, kind) in cases {
            assert_eq!(Indicator::parse(value).map(|i| i.kind), Ok(kind), "{value}");
        }
        assert_eq!(
            Indicator::parse("hxxp://Files.Example/x")
                .expect("url")
                .value,
            "http://files.example/x"
        );
        for bad in [
            "10.0.0.0/33",
            "not a thing",
            "example",
            "1.2.3",
            "abc://",
            "-bad.example",
        ] {
            assert!(Indicator::parse(bad).is_err(), "{bad}");
        }
        assert!(Indicator::of_kind(Kind::Sha256, &"a".repeat(32)).is_err());
        assert_eq!(
            Indicator::of_kind(Kind::Ip, "10.0.0.0/8").map(|i| i.kind),
            Ok(Kind::Cidr)
        );
        let mut timed = Indicator::parse("203.0.113.7").expect("ip");
        timed.valid_from_ms = Some(10);
        timed.valid_until_ms = Some(20);
        assert!(!timed.valid_at(9) && timed.valid_at(10) && !timed.valid_at(20));
    }
}
