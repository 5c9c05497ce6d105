//! The detection logic, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! Queries are grouped by registered domain: the public suffix plus one
//! label, from the Public Suffix List (the `psl` crate, ICANN and private
//! sections), so that a cloud platform's host names under its private
//! suffixes (`ec2-1-2-3-4.compute-1.amazonaws.com`,
//! `d111111abcdef8.cloudfront.net`) are each their own registered domain
//! rather than thousands of subdomains of `amazonaws.com`. Names that never
//! leave the site are left out before grouping (see [`local_reason`]):
//! link-local and private namespaces (`.local`, `.internal`, `.localhost`),
//! reverse lookups (`.arpa`), DNS service discovery (`_tcp` and `_udp`
//! labels) and the organisation's own domains (a parameter).
//!
//! Per domain the detector counts queries whose subdomain looks encoded (a
//! long label, high Shannon entropy, digits mixed in), the clients that ask
//! for it and the distinct subdomains per client. At the end of the task a
//! domain with enough encoded-looking queries, or one client asking for an
//! unusual number of distinct subdomains of it, is reported once. Per
//! client, because CDNs give every client a few of their countless hashed
//! names, while a tunnel gives one client hundreds. How severe and how
//! confident a finding is follows from volume, encoded share and how many
//! clients ask for the domain (see [`Assessment`]): a tunnel is one host
//! sending hundreds of encoded names to a domain nothing else uses, a
//! vendor's telemetry is many hosts asking for the same kind of names.

use std::collections::{BTreeMap, BTreeSet};

use quarry_sdk::time::format_rfc3339_ms;
use quarry_sdk::{Finding, Severity};

/// Rule id of the finding.
pub const RULE_DNS_TUNNEL: &str = "dns-tunnel/suspicious-domain";
/// ATT&CK: Application Layer Protocol: DNS.
pub const T_DNS: &str = "T1071.004";
/// ATT&CK: Exfiltration Over Alternative Protocol.
pub const T_EXFILTRATION: &str = "T1048";
/// Every technique a finding carries.
pub const TECHNIQUES: [&str; 2] = [T_DNS, T_EXFILTRATION];

/// Most registered domains tracked; further ones are counted and dropped.
pub const MAX_DOMAINS: usize = 200_000;
/// Most distinct subdomains remembered per domain (as 64-bit hashes).
const MAX_DISTINCT: usize = 100_000;
/// Clients tracked per domain for distinct counting; a domain asked for by
/// more clients is popular, and the first ones are as good a sample.
pub const MAX_SOURCES_PER_DOMAIN: usize = 64;
/// Examples of encoded-looking names kept per domain.
const MAX_EXAMPLES: usize = 5;
/// Offsets attached to a finding.
const MAX_OFFSETS: usize = 50;

/// Tuning of the detection, from the hunt's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// A subdomain label at least this long may be encoded data.
    pub min_label_length: usize,
    /// Smallest Shannon entropy (bits per character) of the subdomain.
    pub min_entropy: f64,
    /// Encoded-looking queries a domain needs to be reported.
    pub min_encoded_queries: u64,
    /// Distinct subdomains one client asks for that make a domain's volume
    /// unusual on its own.
    pub max_distinct_subdomains: usize,
    /// Domains never reported (`example.com` covers its subdomains).
    pub ignore_domains: Vec<String>,
    /// The organisation's own DNS domains (its Active Directory domain,
    /// internal zones): resolved by its own servers, never a tunnel, left
    /// out like `.local` names.
    pub own_domains: Vec<String>,
    /// Clients asking for a domain that make it popular: a finding about a
    /// domain this many clients ask for is low severity (a vendor's
    /// telemetry or a CDN, rather than one compromised host).
    pub popular_clients: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_label_length: 24,
            min_entropy: 3.0,
            min_encoded_queries: 10,
            max_distinct_subdomains: 300,
            ignore_domains: Vec::new(),
            own_domains: Vec::new(),
            popular_clients: 10,
        }
    }
}

/// Encoded-looking queries within one clock hour, in multiples of
/// `min_encoded_queries`, that a high finding needs: a tunnel moves data,
/// so it sends many at a time, while software that looks hashes up in DNS
/// (anti-virus reputation) sends a few an hour all week.
const HIGH_VOLUME_FACTOR: u64 = 3;
/// Length of the buckets encoded-looking queries are counted in.
const HOUR_MS: i64 = 3_600_000;
/// Most hourly buckets kept per domain (a month); later hours still count
/// towards the domain's totals.
const MAX_HOURS: usize = 24 * 31;
/// Smallest share of a domain's queries that look encoded for a high
/// finding: a tunnel's domain exists for the tunnel, while a vendor's
/// domain also serves ordinary names.
const HIGH_ENCODED_SHARE: f64 = 0.5;
/// Most clients sending encoded-looking names for a high finding: a tunnel
/// runs on one compromised host (two, counting a NAT or a second interface).
const HIGH_MAX_ENCODED_CLIENTS: usize = 2;

/// One DNS query, as read from an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Position of the event in its shard.
    pub offset: u64,
    /// The name asked for.
    pub name: &'a str,
    /// Query type (`A`, `TXT`, …), when known.
    pub qtype: Option<&'a str>,
    /// Who asked: client address (Zeek) or host (Sysmon).
    pub source: Option<&'a str>,
}

/// The registered domain of a (lowercase, dot-trimmed) name and the
/// subdomain part before it: `("example.co.uk", "a.b")` for
/// `a.b.example.co.uk`, by the Public Suffix List (the `psl` crate, private
/// suffixes included). A name that is itself a public suffix (`co.uk`, or
/// `ec2-1-2-3-4.compute-1.amazonaws.com` under the private wildcard
/// `*.compute-1.amazonaws.com`) is its own registered domain with no
/// subdomain. Names under a top-level domain the list does not know
/// (`corp.example`) take the last label as the suffix, as the list's `*`
/// rule says. `None` for names with a single label or an empty label.
pub fn registered_domain(name: &str) -> Option<(&str, &str)> {
    if !name.contains('.') || name.split('.').any(str::is_empty) {
        return None;
    }
    let Some(domain) = psl::domain_str(name) else {
        // The whole name is a public suffix.
        return Some((name, ""));
    };
    let sub = name[..name.len() - domain.len()].trim_end_matches('.');
    Some((&name[name.len() - domain.len()..], sub))
}

/// Top-level names that never leave the site: multicast DNS (`.local`,
/// RFC 6762), the loopback name (`.localhost`), private namespaces
/// (`.internal`, reserved for private use in 2024; cloud providers' own
/// resolvers answer `ec2.internal` and the like) and reverse lookups
/// (`.arpa`, including `home.arpa`).
const LOCAL_TLDS: [&str; 4] = ["local", "localhost", "internal", "arpa"];

/// Why a (lowercase, dot-trimmed) name cannot be a tunnel, or `None` when
/// it may be: a link-local or private namespace ([`LOCAL_TLDS`]), a DNS
/// service discovery or SRV name (a `_tcp` or `_udp` label, as in
/// `_ipp._tcp.local` or `_ldap._tcp.dc._msdcs.corp.example`), or one of
/// the organisation's own domains (`own_domains`; `corp.example` covers its
/// subdomains). A tunnel needs an authoritative server on the internet that
/// the attacker runs; none of these is resolved by one.
pub fn local_reason(name: &str, own_domains: &[String]) -> Option<&'static str> {
    let tld = name.rsplit('.').next().unwrap_or(name);
    if LOCAL_TLDS.contains(&tld) {
        return Some(if tld == "arpa" {
            "reverse lookup"
        } else {
            "link-local or private namespace"
        });
    }
    if name.split('.').any(|l| l == "_tcp" || l == "_udp") {
        return Some("service discovery");
    }
    if own_domains.iter().any(|d| under(name, d)) {
        return Some("own domain");
    }
    None
}

/// Whether `name` is `domain` or one of its subdomains.
fn under(name: &str, domain: &str) -> bool {
    let domain = domain.trim_matches('.');
    !domain.is_empty()
        && (name == domain
            || name
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// Shannon entropy of `text`'s characters, in bits per character.
pub fn entropy(text: &str) -> f64 {
    let mut counts = BTreeMap::new();
    let mut total = 0usize;
    for c in text.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&n| {
            let p = n as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// Whether a subdomain looks like encoded data: a label at least
/// `min_label_length` long, the subdomain's characters (dots left out) at
/// least `min_entropy` bits each, and at least 10 % digits (base16/32/64
/// data has them; long human-made labels rarely do).
pub fn looks_encoded(subdomain: &str, config: &Config) -> bool {
    let longest = subdomain.split('.').map(str::len).max().unwrap_or(0);
    if longest < config.min_label_length {
        return false;
    }
    let chars: String = subdomain
        .chars()
        .filter(|&c| c != '.' && c != '-')
        .collect();
    let digits = chars.chars().filter(char::is_ascii_digit).count();
    digits * 10 >= chars.len() && entropy(&chars) >= config.min_entropy
}

/// A cheap 64-bit hash (FNV-1a) for distinct counting.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, Default)]
struct Domain {
    queries: u64,
    encoded: u64,
    distinct: BTreeSet<u64>,
    distinct_truncated: bool,
    /// Distinct subdomains per client (hashes), for the first
    /// [`MAX_SOURCES_PER_DOMAIN`] clients.
    per_source: BTreeMap<String, BTreeSet<u64>>,
    /// Clients that asked for the domain (the first
    /// [`MAX_SOURCES_PER_DOMAIN`]); `sources_truncated` when more did.
    sources: BTreeSet<String>,
    sources_truncated: bool,
    /// Clients that sent encoded-looking names (bounded likewise).
    encoded_sources: BTreeSet<String>,
    /// Encoded-looking queries per clock hour (hour index since the epoch).
    encoded_per_hour: BTreeMap<i64, u64>,
    subdomain_chars: u64,
    max_label: usize,
    qtypes: BTreeMap<String, u64>,
    examples: Vec<String>,
    offsets: Vec<u64>,
    first_ms: i64,
    last_ms: i64,
}

impl Domain {
    fn max_distinct_per_source(&self) -> usize {
        self.per_source
            .values()
            .map(BTreeSet::len)
            .max()
            .unwrap_or(0)
    }

    /// Most encoded-looking queries in one clock hour.
    fn peak_encoded_per_hour(&self) -> u64 {
        self.encoded_per_hour.values().copied().max().unwrap_or(0)
    }

    /// Clients that asked (at least one: a query without a known client
    /// still came from somewhere).
    fn clients(&self) -> usize {
        self.sources.len().max(1)
    }
}

/// Inserts `value` into a set of at most [`MAX_SOURCES_PER_DOMAIN`],
/// remembering when one was left out.
fn insert_source(set: &mut BTreeSet<String>, truncated: &mut bool, value: &str) {
    if set.contains(value) {
        return;
    }
    if set.len() < MAX_SOURCES_PER_DOMAIN {
        set.insert(value.to_owned());
    } else {
        *truncated = true;
    }
}

/// How suspicious a reported domain is, from what the detector counted.
///
/// - **High**: encoded-looking names make up at least half of the domain's
///   queries, at least three times `min_encoded_queries` of them fell within
///   one clock hour, and at most two clients sent them (fewer than
///   `popular_clients` asked for the domain at all): data moving through
///   one host's lookups.
/// - **Low**: at least `popular_clients` clients asked for the domain: many
///   hosts doing the same is what vendors' telemetry, anti-virus cloud
///   lookups and CDNs look like, not one compromised host.
/// - **Medium**: the rest (encoded names in small numbers or as a minority
///   of the domain's queries, or one client's unusual number of distinct
///   subdomains without encoded names).
///
/// Confidence (0–100) weighs the same three things continuously: the
/// encoded share (35 %), one over the number of clients (35 %) and the
/// volume (30 %: the most encoded queries in one hour, or for volume alone
/// the one client's distinct subdomains, on a log scale reaching 1 at
/// 1,000).
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// Finding severity.
    pub severity: Severity,
    /// Finding confidence, 0–100.
    pub confidence: u8,
    /// Why this severity, for the evidence.
    pub why: &'static str,
}

impl Assessment {
    fn of(d: &Domain, config: &Config, encoded_hit: bool) -> Assessment {
        let share = d.encoded as f64 / d.queries.max(1) as f64;
        let clients = d.clients();
        let popular = clients >= config.popular_clients.max(1) || d.sources_truncated;
        let volume = if encoded_hit {
            d.peak_encoded_per_hour()
        } else {
            d.max_distinct_per_source() as u64
        };
        let volume_term = ((volume.max(1) as f64).log10() / 3.0).min(1.0);
        let score = 0.35 * share + 0.35 / clients as f64 + 0.30 * volume_term;
        let confidence = (score * 100.0).round().clamp(10.0, 95.0) as u8;
        let (severity, why) = if popular {
            (Severity::Low, "many clients ask for this domain")
        } else if encoded_hit
            && share >= HIGH_ENCODED_SHARE
            && d.peak_encoded_per_hour() >= HIGH_VOLUME_FACTOR * config.min_encoded_queries
            && d.encoded_sources.len() <= HIGH_MAX_ENCODED_CLIENTS
        {
            (
                Severity::High,
                "most queries encoded-looking, many within an hour, from one or two clients",
            )
        } else if encoded_hit {
            (
                Severity::Medium,
                "encoded-looking names, but few an hour, a minority of the domain's queries, or from several clients",
            )
        } else {
            (
                Severity::Medium,
                "volume of distinct names from one client without encoded-looking names",
            )
        };
        Assessment {
            severity,
            confidence,
            why,
        }
    }
}

/// What a task saw, for its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Queries observed.
    pub queries: u64,
    /// Queries left out as link-local, reverse, service discovery or the
    /// organisation's own ([`local_reason`]), or ignored by parameter.
    pub local: u64,
    /// Registered domains tracked.
    pub domains: usize,
    /// Queries of domains beyond [`MAX_DOMAINS`].
    pub dropped: u64,
}

/// The per-task detection state.
#[derive(Debug)]
pub struct Detector {
    config: Config,
    domains: BTreeMap<String, Domain>,
    summary: Summary,
}

impl Detector {
    /// A detector with no history.
    pub fn new(config: Config) -> Self {
        Detector {
            config,
            domains: BTreeMap::new(),
            summary: Summary::default(),
        }
    }

    fn ignored(&self, name: &str) -> bool {
        local_reason(name, &self.config.own_domains).is_some()
            || self.config.ignore_domains.iter().any(|i| under(name, i))
    }

    /// Feeds one query.
    pub fn observe(&mut self, q: &Query<'_>) {
        let name = q.name.trim().trim_end_matches('.').to_ascii_lowercase();
        let Some((domain, sub)) = registered_domain(&name) else {
            return;
        };
        self.summary.queries += 1;
        if self.ignored(&name) {
            self.summary.local += 1;
            return;
        }
        if !self.domains.contains_key(domain) && self.domains.len() >= MAX_DOMAINS {
            self.summary.dropped += 1;
            return;
        }
        let encoded = !sub.is_empty() && looks_encoded(sub, &self.config);
        let d = self.domains.entry(domain.to_owned()).or_default();
        if d.queries == 0 {
            d.first_ms = q.timestamp_ms;
            d.last_ms = q.timestamp_ms;
        }
        d.queries += 1;
        d.first_ms = d.first_ms.min(q.timestamp_ms);
        d.last_ms = d.last_ms.max(q.timestamp_ms);
        let source = q.source.unwrap_or("");
        if !source.is_empty() {
            insert_source(&mut d.sources, &mut d.sources_truncated, source);
        }
        if !sub.is_empty() {
            let hash = fnv1a(sub);
            if d.distinct.len() < MAX_DISTINCT {
                d.distinct.insert(hash);
            } else {
                d.distinct_truncated = true;
            }
            let tracked =
                d.per_source.len() < MAX_SOURCES_PER_DOMAIN || d.per_source.contains_key(source);
            if tracked {
                let set = d.per_source.entry(source.to_owned()).or_default();
                if set.len() < MAX_DISTINCT {
                    set.insert(hash);
                }
            }
        }
        d.subdomain_chars += sub.len() as u64;
        d.max_label = d
            .max_label
            .max(sub.split('.').map(str::len).max().unwrap_or(0));
        if let Some(qtype) = q.qtype
            && (d.qtypes.len() < 16 || d.qtypes.contains_key(qtype))
        {
            *d.qtypes.entry(qtype.to_ascii_uppercase()).or_default() += 1;
        }
        if encoded {
            d.encoded += 1;
            let hour = q.timestamp_ms.div_euclid(HOUR_MS);
            if d.encoded_per_hour.len() < MAX_HOURS || d.encoded_per_hour.contains_key(&hour) {
                *d.encoded_per_hour.entry(hour).or_default() += 1;
            }
            let mut ignored = false;
            insert_source(&mut d.encoded_sources, &mut ignored, source);
            if d.examples.len() < MAX_EXAMPLES {
                d.examples.push(name.clone());
            }
            if d.offsets.len() < MAX_OFFSETS {
                d.offsets.push(q.offset);
            }
        }
    }

    /// Judges every domain; returns findings in domain order and a summary.
    pub fn finish(mut self) -> (Vec<Finding>, Summary) {
        self.summary.domains = self.domains.len();
        let mut findings = Vec::new();
        for (name, d) in &self.domains {
            let encoded = d.encoded >= self.config.min_encoded_queries;
            let volume = d.max_distinct_per_source() >= self.config.max_distinct_subdomains;
            if encoded || volume {
                findings.push(self.finding(name, d, encoded, volume));
            }
        }
        (findings, self.summary)
    }

    fn finding(&self, name: &str, d: &Domain, encoded: bool, volume: bool) -> Finding {
        let distinct = if d.distinct_truncated {
            format!("{}+", d.distinct.len())
        } else {
            d.distinct.len().to_string()
        };
        let clients = if d.sources_truncated {
            format!("{}+", d.sources.len())
        } else {
            d.sources.len().to_string()
        };
        let reason = match (encoded, volume) {
            (true, true) => "encoded-looking subdomains and unusual volume",
            (true, false) => "encoded-looking subdomains",
            _ => "unusual number of distinct subdomains from one client",
        };
        let assessment = Assessment::of(d, &self.config, encoded);
        let qtypes = d
            .qtypes
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let listed: Vec<&str> = d.sources.iter().take(10).map(String::as_str).collect();
        Finding::builder(
            RULE_DNS_TUNNEL,
            format!(
                "Possible DNS tunnel via {name}: {reason} ({} queries, {distinct} distinct subdomains, {clients} clients)",
                d.queries
            ),
        )
        .severity(assessment.severity)
        .confidence(assessment.confidence)
        .entity(format!("domain:{name}"))
        .timestamp_ms(d.last_ms)
        .evidence("registered_domain", name)
        .evidence("reason", reason)
        .evidence("severity_reason", assessment.why)
        .evidence("queries", d.queries)
        .evidence("encoded_queries", d.encoded)
        .evidence(
            "encoded_share",
            format!("{:.2}", d.encoded as f64 / d.queries.max(1) as f64),
        )
        .evidence("clients", clients)
        .evidence("encoded_clients", d.encoded_sources.len())
        .evidence("peak_encoded_per_hour", d.peak_encoded_per_hour())
        .evidence("distinct_subdomains", distinct)
        .evidence(
            "max_distinct_subdomains_per_source",
            d.max_distinct_per_source(),
        )
        .evidence(
            "mean_subdomain_length",
            format!("{:.1}", d.subdomain_chars as f64 / d.queries.max(1) as f64),
        )
        .evidence("max_label_length", d.max_label)
        .evidence("query_types", qtypes)
        .evidence("sources", listed.join(", "))
        .evidence("examples", d.examples.join(" "))
        .evidence("first_seen", format_rfc3339_ms(d.first_ms))
        .evidence("last_seen", format_rfc3339_ms(d.last_ms))
        .techniques(TECHNIQUES)
        .offsets(d.offsets.iter().copied())
        .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, offset: u64) -> Query<'_> {
        Query {
            timestamp_ms: 1_700_000_000_000 + offset as i64 * 1000,
            offset,
            name,
            qtype: Some("TXT"),
            source: Some("10.0.0.5"),
        }
    }

    fn hex_label(seed: u64, len: usize) -> String {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from_digit((x % 16) as u32, 16).unwrap()
            })
            .collect()
    }

    fn run(config: Config, names: &[String]) -> Vec<Finding> {
        let mut d = Detector::new(config);
        for (i, n) in names.iter().enumerate() {
            d.observe(&q(n, i as u64));
        }
        d.finish().0
    }

    #[test]
    fn registered_domains_follow_the_public_suffix_list() {
        assert_eq!(
            registered_domain("a.b.example.com"),
            Some(("example.com", "a.b"))
        );
        assert_eq!(registered_domain("example.com"), Some(("example.com", "")));
        assert_eq!(
            registered_domain("x.y.example.co.uk"),
            Some(("example.co.uk", "x.y"))
        );
        assert_eq!(
            registered_domain("example.co.uk"),
            Some(("example.co.uk", ""))
        );
        assert_eq!(registered_domain("co.uk"), Some(("co.uk", "")));
        assert_eq!(
            registered_domain("a.shop.com.au"),
            Some(("shop.com.au", "a"))
        );
        // A suffix the hand-written list did not know.
        assert_eq!(
            registered_domain("www.example.gov.br"),
            Some(("example.gov.br", "www"))
        );
        // Private section: cloud platforms' host names are their own
        // registered domains, not subdomains of the platform's.
        assert_eq!(
            registered_domain("ec2-54-12-3-4.compute-1.amazonaws.com"),
            Some(("ec2-54-12-3-4.compute-1.amazonaws.com", ""))
        );
        assert_eq!(
            registered_domain("a.b.my-lb-1234567890.us-east-1.elb.amazonaws.com"),
            Some(("my-lb-1234567890.us-east-1.elb.amazonaws.com", "a.b"))
        );
        assert_eq!(
            registered_domain("d111111abcdef8.cloudfront.net"),
            Some(("d111111abcdef8.cloudfront.net", ""))
        );
        assert_eq!(
            registered_domain("www.myapp.azurewebsites.net"),
            Some(("myapp.azurewebsites.net", "www"))
        );
        // Unknown top-level domains: the last label is the suffix.
        assert_eq!(
            registered_domain("wpad.corp.example"),
            Some(("corp.example", "wpad"))
        );
        assert_eq!(registered_domain("localhost"), None);
        assert_eq!(registered_domain("a..b"), None);
    }

    #[test]
    fn local_and_service_discovery_names_are_recognised() {
        let own = ["corp.example".to_owned()];
        let reason = |n| local_reason(n, &own);
        assert_eq!(
            reason("_googlecast._tcp.local"),
            Some("link-local or private namespace")
        );
        assert_eq!(
            reason("printer.local"),
            Some("link-local or private namespace")
        );
        assert_eq!(
            reason("ip-10-1-2-3.ec2.internal"),
            Some("link-local or private namespace")
        );
        assert_eq!(reason("4.3.2.10.in-addr.arpa"), Some("reverse lookup"));
        assert_eq!(reason("nas.home.arpa"), Some("reverse lookup"));
        assert_eq!(
            reason("_ldap._tcp.dc._msdcs.example.org"),
            Some("service discovery")
        );
        assert_eq!(reason("_sip._udp.example.net"), Some("service discovery"));
        assert_eq!(reason("wpad.corp.example"), Some("own domain"));
        assert_eq!(reason("corp.example"), Some("own domain"));
        assert_eq!(reason("notcorp.example"), None);
        assert_eq!(reason("www.example.com"), None);
        assert_eq!(reason("local.example.com"), None);
        assert_eq!(reason("_dmarc.example.com"), None);
    }

    #[test]
    fn entropy_and_encoded_shape() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
        let c = Config::default();
        assert!(looks_encoded(&hex_label(1, 40), &c));
        assert!(looks_encoded(
            &format!("{}.{}", hex_label(2, 30), hex_label(3, 30)),
            &c
        ));
        assert!(!looks_encoded(&hex_label(1, 20), &c), "too short");
        assert!(
            !looks_encoded("this-is-a-very-long-but-human-hostname", &c),
            "no digits"
        );
        assert!(
            !looks_encoded("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1111", &c),
            "low entropy"
        );
    }

    #[test]
    fn tunnel_with_encoded_labels_is_reported_once() {
        let names: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    "{}.{}.t.badtunnel.co.uk",
                    hex_label(i, 50),
                    hex_label(i + 100, 30)
                )
            })
            .collect();
        let f = run(Config::default(), &names);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].entity, "domain:badtunnel.co.uk");
        assert_eq!(f[0].evidence_value("encoded_queries"), Some("40"));
        assert_eq!(f[0].evidence_value("distinct_subdomains"), Some("40"));
        assert_eq!(f[0].evidence_value("query_types"), Some("TXT=40"));
        assert_eq!(f[0].evidence_value("max_label_length"), Some("50"));
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].techniques, ["T1048", "T1071.004"]);
        assert_eq!(
            f[0].evidence_value("examples").unwrap().split(' ').count(),
            5
        );
    }

    #[test]
    fn few_encoded_queries_are_quiet() {
        let names: Vec<String> = (0..9)
            .map(|i| format!("{}.cdn.example.com", hex_label(i, 40)))
            .collect();
        assert!(run(Config::default(), &names).is_empty());
        let lower = Config {
            min_encoded_queries: 5,
            ..Config::default()
        };
        assert_eq!(run(lower, &names).len(), 1);
    }

    #[test]
    fn volume_alone_is_a_medium_finding() {
        let names: Vec<String> = (0..400)
            .map(|i| format!("host{i}.spread.example.net"))
            .collect();
        let f = run(Config::default(), &names);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Medium);
        assert_eq!(
            f[0].evidence_value("reason"),
            Some("unusual number of distinct subdomains from one client")
        );
        assert_eq!(
            f[0].evidence_value("max_distinct_subdomains_per_source"),
            Some("400")
        );
        // A CDN: as many names, spread over 40 clients.
        let mut d = Detector::new(Config::default());
        let sources: Vec<String> = (0..40).map(|i| format!("10.0.1.{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            d.observe(&Query {
                source: Some(&sources[i % 40]),
                ..q(name, i as u64)
            });
        }
        assert!(d.finish().0.is_empty());
        // The same names asked for over and over are not volume.
        let repeated: Vec<String> = (0..4000)
            .map(|i| format!("host{}.spread.example.net", i % 20))
            .collect();
        assert!(run(Config::default(), &repeated).is_empty());
    }

    #[test]
    fn ignored_and_reverse_domains_are_quiet() {
        let names: Vec<String> = (0..400)
            .map(|i| format!("{}.{}.10.in-addr.arpa", i % 250, i / 250))
            .collect();
        assert!(run(Config::default(), &names).is_empty());
        let av: Vec<String> = (0..40)
            .map(|i| format!("{}.avqs.vendor.example", hex_label(i, 40)))
            .collect();
        let ignore = Config {
            ignore_domains: vec!["vendor.example".to_owned()],
            ..Config::default()
        };
        assert!(run(ignore, &av).is_empty());
        assert_eq!(run(Config::default(), &av).len(), 1);
    }

    /// Queries of `names` from each of `clients`, in turn.
    fn run_from(config: Config, names: &[String], clients: &[&str]) -> Vec<Finding> {
        let mut d = Detector::new(config);
        let mut offset = 0;
        for name in names {
            for client in clients {
                d.observe(&Query {
                    source: Some(client),
                    ..q(name, offset)
                });
                offset += 1;
            }
        }
        d.finish().0
    }

    #[test]
    fn mdns_service_discovery_reverse_and_cloud_host_names_are_quiet() {
        let mut names = Vec::new();
        for i in 0..200 {
            // mDNS / DNS-SD: service instances named after a device id.
            names.push(format!(
                "chromecast-{}._googlecast._tcp.local",
                hex_label(i, 32)
            ));
            names.push(format!("{}._airplay._tcp.local", hex_label(i + 500, 40)));
            names.push("_services._dns-sd._udp.local".to_owned());
            names.push(format!("{}.local", hex_label(i + 900, 30)));
            // AD service records under a domain that is not `.local`.
            names.push(format!(
                "_ldap._tcp.{}._sites.dc._msdcs.ad.example.org",
                hex_label(i + 1300, 30)
            ));
            // Reverse lookups, IPv6 nibbles and IPv4.
            let nibbles: Vec<String> = hex_label(i + 1700, 32)
                .chars()
                .map(|c| c.to_string())
                .collect();
            names.push(format!("{}.ip6.arpa", nibbles.join(".")));
            names.push(format!("{}.{}.16.172.in-addr.arpa", i % 250, i / 250));
            // Cloud host names that encode addresses, under private suffixes.
            names.push(format!(
                "ec2-{}-{}-{}-{}.compute-1.amazonaws.com",
                54 + i % 3,
                i % 250,
                (i * 7) % 250,
                (i * 13) % 250
            ));
            names.push(format!(
                "internal-{}-{}.eu-west-1.elb.amazonaws.com",
                hex_label(i + 2100, 24),
                1_000_000_000 + i * 7919
            ));
            names.push(format!("ip-10-0-{}-{}.ec2.internal", i % 250, i / 250));
            names.push(format!("d{}.cloudfront.net", hex_label(i + 2500, 13)));
            // The organisation's own zone, given as a parameter.
            names.push(format!("{}.dyn.corp.example", hex_label(i + 2900, 40)));
        }
        let config = Config {
            own_domains: vec!["corp.example".to_owned()],
            ..Config::default()
        };
        let found = run(config.clone(), &names);
        assert!(found.is_empty(), "{found:#?}");
        let found = run_from(config, &names, &["10.0.0.5", "10.0.0.6"]);
        assert!(found.is_empty(), "{found:#?}");
        // Without the parameter, the own zone is a domain like any other.
        let found = run(Config::default(), &names);
        let entities: Vec<&str> = found.iter().map(|f| f.entity.as_str()).collect();
        assert_eq!(entities, ["domain:corp.example"]);
    }

    /// `len` characters of base32 (`a-z2-7`), as iodine encodes upstream
    /// data.
    fn base32_label(seed: u64, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut x = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x % 32) as usize] as char
            })
            .collect()
    }

    #[test]
    fn iodine_style_tunnel_from_one_client_is_high() {
        let names: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    "p{}.{}.t.exfil-example.net",
                    base32_label(i, 60),
                    base32_label(i + 10_000, 50)
                )
            })
            .collect();
        let found = run(Config::default(), &names);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.entity, "domain:exfil-example.net");
        assert_eq!(f.severity, Severity::High);
        assert!(f.confidence >= 85, "{}", f.confidence);
        assert_eq!(f.evidence_value("clients"), Some("1"));
        assert_eq!(f.evidence_value("encoded_clients"), Some("1"));
        assert_eq!(f.evidence_value("encoded_share"), Some("1.00"));
    }

    #[test]
    fn popularity_volume_and_share_set_the_severity() {
        let encoded: Vec<String> = (0..40)
            .map(|i| format!("{}.probe.vendor-telemetry.example", hex_label(i, 40)))
            .collect();
        // One client: a tunnel shape.
        let one = run(Config::default(), &encoded);
        assert_eq!(one[0].severity, Severity::High);
        // The same names asked for by twelve clients: a vendor's probes.
        let clients: Vec<String> = (0..12).map(|i| format!("10.0.3.{i}")).collect();
        let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
        let many = run_from(Config::default(), &encoded, &clients);
        assert_eq!(many.len(), 1);
        assert_eq!(many[0].severity, Severity::Low);
        assert_eq!(many[0].evidence_value("clients"), Some("12"));
        assert!(many[0].confidence < one[0].confidence);
        // Three clients: fewer than popular, more than a tunnel's one or two.
        let three = run_from(Config::default(), &encoded, &clients[..3]);
        assert_eq!(three[0].severity, Severity::Medium);
        // A popularity threshold of 3 makes them low.
        let popular3 = Config {
            popular_clients: 3,
            ..Config::default()
        };
        assert_eq!(
            run_from(popular3, &encoded, &clients[..3])[0].severity,
            Severity::Low
        );
        // The same 40 names from one client, one every two hours (software
        // looking hashes up all week): few an hour, medium.
        let mut d = Detector::new(Config::default());
        for (i, name) in encoded.iter().enumerate() {
            d.observe(&Query {
                timestamp_ms: 1_700_000_000_000 + i as i64 * 2 * HOUR_MS,
                ..q(name, i as u64)
            });
        }
        let slow = d.finish().0;
        assert_eq!(slow[0].severity, Severity::Medium);
        assert_eq!(slow[0].evidence_value("peak_encoded_per_hour"), Some("1"));
        // Few encoded names (above the reporting threshold, below the
        // volume of a high finding): medium.
        let few = run(Config::default(), &encoded[..12]);
        assert_eq!(few[0].severity, Severity::Medium);
        // Encoded names as a minority of a busy domain's queries: medium.
        let mut mixed = encoded.clone();
        mixed.extend((0..100).map(|i| format!("www{}.vendor-telemetry.example", i % 5)));
        let mixed = run(Config::default(), &mixed);
        assert_eq!(mixed[0].severity, Severity::Medium);
        assert_eq!(mixed[0].evidence_value("encoded_share"), Some("0.29"));
    }

    #[test]
    fn names_are_normalised() {
        let names: Vec<String> = (0..12)
            .map(|i| format!("{}.Tunnel.EXAMPLE.org.", hex_label(i, 40).to_uppercase()))
            .collect();
        let f = run(Config::default(), &names);
        assert_eq!(f[0].entity, "domain:example.org");
    }
}
