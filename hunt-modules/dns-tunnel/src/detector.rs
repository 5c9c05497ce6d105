//! The detection logic, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! Queries are grouped by registered domain (the public suffix plus one
//! label; multi-label suffixes such as `co.uk` are known, see
//! [`registered_domain`]). Per domain the detector counts queries whose
//! subdomain looks encoded (a long label, high Shannon entropy, digits mixed
//! in) and distinct subdomains per client. At the end of the task a domain
//! with enough encoded-looking queries, or one client asking for an unusual
//! number of distinct subdomains of it, is reported once. Per client, because
//! CDNs give every client a few of their countless hashed names, while a
//! tunnel gives one client hundreds.

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
const MAX_SOURCES_PER_DOMAIN: usize = 64;
/// Examples of encoded-looking names kept per domain.
const MAX_EXAMPLES: usize = 5;
/// Offsets attached to a finding.
const MAX_OFFSETS: usize = 50;

/// Public suffixes of more than one label that are common enough to matter.
/// Not the whole Public Suffix List: a registered domain under a suffix not
/// listed here is taken one label too short (`example.city.state.us` groups
/// as `state.us`), which merges domains but never splits one.
const MULTI_LABEL_SUFFIXES: &[&str] = &[
    "ac.jp", "ac.nz", "ac.uk", "ac.za", "co.id", "co.il", "co.in", "co.jp", "co.kr", "co.nz",
    "co.th", "co.uk", "co.za", "com.ar", "com.au", "com.br", "com.cn", "com.co", "com.hk",
    "com.mx", "com.my", "com.pl", "com.sg", "com.tr", "com.tw", "com.ua", "edu.au", "gov.au",
    "gov.uk", "ltd.uk", "me.uk", "ne.jp", "net.au", "net.br", "net.cn", "or.jp", "org.au",
    "org.br", "org.cn", "org.nz", "org.uk", "plc.uk", "sch.uk",
];

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_label_length: 24,
            min_entropy: 3.0,
            min_encoded_queries: 10,
            max_distinct_subdomains: 300,
            ignore_domains: Vec::new(),
        }
    }
}

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
/// `a.b.example.co.uk`. `None` for names with a single label.
pub fn registered_domain(name: &str) -> Option<(&str, &str)> {
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let n = labels.len();
    let last_two = &name[name.len() - labels[n - 2].len() - labels[n - 1].len() - 1..];
    let keep = if MULTI_LABEL_SUFFIXES.contains(&last_two) {
        3
    } else {
        2
    };
    if n < keep {
        // A bare public suffix.
        return Some((name, ""));
    }
    let domain_len: usize = labels[n - keep..].iter().map(|l| l.len()).sum::<usize>() + keep - 1;
    let domain = &name[name.len() - domain_len..];
    let sub = name[..name.len() - domain_len].trim_end_matches('.');
    Some((domain, sub))
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

impl Domain {
    fn max_distinct_per_source(&self) -> usize {
        self.per_source
            .values()
            .map(BTreeSet::len)
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Domain {
    queries: u64,
    encoded: u64,
    distinct: BTreeSet<u64>,
    distinct_truncated: bool,
    /// Distinct subdomains per client (hashes).
    per_source: BTreeMap<String, BTreeSet<u64>>,
    subdomain_chars: u64,
    max_label: usize,
    qtypes: BTreeMap<String, u64>,
    sources: BTreeSet<String>,
    examples: Vec<String>,
    offsets: Vec<u64>,
    first_ms: i64,
    last_ms: i64,
}

/// What a task saw, for its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Queries observed.
    pub queries: u64,
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

    fn ignored(&self, domain: &str) -> bool {
        domain.ends_with(".arpa")
            || domain == "arpa"
            || self.config.ignore_domains.iter().any(|i| {
                let i = i.trim_start_matches('.');
                domain == i || domain.ends_with(&format!(".{i}"))
            })
    }

    /// Feeds one query.
    pub fn observe(&mut self, q: &Query<'_>) {
        let name = q.name.trim().trim_end_matches('.').to_ascii_lowercase();
        let Some((domain, sub)) = registered_domain(&name) else {
            return;
        };
        if self.ignored(domain) || self.ignored(&name) {
            return;
        }
        self.summary.queries += 1;
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
        if !sub.is_empty() {
            let hash = fnv1a(sub);
            if d.distinct.len() < MAX_DISTINCT {
                d.distinct.insert(hash);
            } else {
                d.distinct_truncated = true;
            }
            let source = q.source.unwrap_or("");
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
        if let Some(source) = q.source
            && d.sources.len() < 10
        {
            d.sources.insert(source.to_owned());
        }
        if encoded {
            d.encoded += 1;
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
        let reason = match (encoded, volume) {
            (true, true) => "encoded-looking subdomains and unusual volume",
            (true, false) => "encoded-looking subdomains",
            _ => "unusual number of distinct subdomains from one client",
        };
        let (severity, confidence) = match (encoded, volume) {
            (true, true) => (Severity::High, 85),
            (true, false) => (Severity::High, 70),
            _ => (Severity::Medium, 50),
        };
        let qtypes = d
            .qtypes
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        Finding::builder(
            RULE_DNS_TUNNEL,
            format!(
                "Possible DNS tunnel via {name}: {reason} ({} queries, {distinct} distinct subdomains)",
                d.queries
            ),
        )
        .severity(severity)
        .confidence(confidence)
        .entity(format!("domain:{name}"))
        .timestamp_ms(d.last_ms)
        .evidence("registered_domain", name)
        .evidence("reason", reason)
        .evidence("queries", d.queries)
        .evidence("encoded_queries", d.encoded)
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
        .evidence("sources", d.sources.iter().cloned().collect::<Vec<_>>().join(", "))
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
    fn registered_domains_handle_multi_label_suffixes() {
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
        assert_eq!(registered_domain("localhost"), None);
        assert_eq!(registered_domain("a..b"), None);
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

    #[test]
    fn names_are_normalised() {
        let names: Vec<String> = (0..12)
            .map(|i| format!("{}.Tunnel.EXAMPLE.org.", hex_label(i, 40).to_uppercase()))
            .collect();
        let f = run(Config::default(), &names);
        assert_eq!(f[0].entity, "domain:example.org");
    }
}
