//! The detection logic, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! Connections are grouped by (source, destination, destination port). At the
//! end of the task, each pair with enough connections is judged on the gaps
//! between its connections: a beacon calls home on a timer, so its gaps
//! cluster tightly around one value (low relative median absolute deviation)
//! and most of them fall in a narrow band around that value (a missed beat
//! or an operator's interactive burst may fall outside). Pairs that are too
//! chatty (gaps below `min_interval_ms`), destinations that many sources talk
//! to (shared infrastructure) and ignored ports or destinations are left out.

use std::collections::{BTreeMap, BTreeSet};

use quarry_sdk::time::{SECOND_MS, format_rfc3339_ms};
use quarry_sdk::{Finding, Severity};

/// Rule id of the finding.
pub const RULE_PERIODIC_CONNECTIONS: &str = "beaconing/periodic-connections";
/// ATT&CK: Application Layer Protocol (command and control).
pub const TECHNIQUE_APPLICATION_LAYER: &str = "T1071";
/// ATT&CK: Web Protocols, for beacons to web ports.
pub const TECHNIQUE_WEB_PROTOCOLS: &str = "T1071.001";
/// ATT&CK: Encrypted Channel, for beacons to TLS ports.
pub const TECHNIQUE_ENCRYPTED_CHANNEL: &str = "T1573";
/// Every technique a finding may carry.
pub const TECHNIQUES: [&str; 3] = [
    TECHNIQUE_APPLICATION_LAYER,
    TECHNIQUE_WEB_PROTOCOLS,
    TECHNIQUE_ENCRYPTED_CHANNEL,
];

/// Most (source, destination, port) pairs tracked; connections of further
/// pairs are counted as dropped. Bounds memory on a huge shard.
pub const MAX_PAIRS: usize = 200_000;
/// Most connection times kept per pair (the earliest in shard order). A
/// beacon is recognisable long before this many.
pub const MAX_TIMES_PER_PAIR: usize = 20_000;
/// Most shard offsets attached to a finding.
const MAX_FINDING_OFFSETS: usize = 50;
/// Ports on which TLS is the norm.
const TLS_PORTS: [u16; 4] = [443, 8443, 993, 995];
/// Ports on which HTTP(S) is the norm.
const WEB_PORTS: [u16; 5] = [80, 443, 8080, 8443, 8000];

/// Tuning of the detection, from the hunt's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Fewest connections (after merging near-duplicates) a pair needs.
    pub min_connections: usize,
    /// Pairs whose typical gap is shorter are chatty services, not beacons.
    pub min_interval_ms: i64,
    /// Pairs whose typical gap is longer are ignored.
    pub max_interval_ms: i64,
    /// Largest relative median absolute deviation of the gaps (0.1 = 10 %).
    pub max_jitter: f64,
    /// Smallest share of gaps within the band around the median gap.
    pub min_regular_share: f64,
    /// Destinations contacted by more distinct sources are shared
    /// infrastructure and ignored.
    pub max_sources_per_destination: usize,
    /// Connections closer than this to the previous one of the same pair
    /// count as one (a beacon often opens several at once).
    pub merge_ms: i64,
    /// Destination ports never reported.
    pub ignore_ports: BTreeSet<u16>,
    /// Destinations never reported: exact addresses or host names, or
    /// `.suffix` for every host name under a domain.
    pub ignore_destinations: Vec<String>,
    /// Whether private, loopback and link-local destinations are reported.
    pub include_private: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_connections: 12,
            min_interval_ms: 10 * SECOND_MS,
            max_interval_ms: 24 * 3600 * SECOND_MS,
            max_jitter: 0.15,
            min_regular_share: 0.7,
            max_sources_per_destination: 10,
            merge_ms: SECOND_MS,
            ignore_ports: [53, 123, 137, 138, 5353].into_iter().collect(),
            ignore_destinations: Vec::new(),
            include_private: false,
        }
    }
}

/// One outbound connection, as read from an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection<'a> {
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Position of the event in its shard.
    pub offset: u64,
    /// Originating address.
    pub source: &'a str,
    /// Responding address.
    pub destination: &'a str,
    /// Responding port, when known.
    pub port: Option<u16>,
    /// The destination's host name (Sysmon `DestinationHostname`).
    pub destination_name: Option<&'a str>,
    /// The process that connected (Sysmon `Image`).
    pub process: Option<&'a str>,
    /// The machine that logged the event.
    pub host: Option<&'a str>,
}

/// Statistics of the gaps between a pair's connections.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalStats {
    /// Connections after merging near-duplicates.
    pub connections: usize,
    /// Median gap, ms.
    pub median_ms: f64,
    /// Median absolute deviation of the gaps from the median, ms.
    pub mad_ms: f64,
    /// Mean gap, ms.
    pub mean_ms: f64,
    /// Coefficient of variation of the gaps (standard deviation / mean).
    pub cv: f64,
    /// Share of gaps within the band around the median.
    pub regular_share: f64,
}

impl IntervalStats {
    /// `mad_ms / median_ms`: the jitter, robust to missed beats.
    pub fn relative_mad(&self) -> f64 {
        if self.median_ms > 0.0 {
            self.mad_ms / self.median_ms
        } else {
            f64::INFINITY
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Connection times with those within `merge_ms` of the previous kept one
/// folded into it. `times` must be sorted.
pub fn merge_close(times: &[i64], merge_ms: i64) -> Vec<i64> {
    let mut merged: Vec<i64> = Vec::with_capacity(times.len());
    for &t in times {
        match merged.last() {
            Some(&last) if t - last < merge_ms => {}
            _ => merged.push(t),
        }
    }
    merged
}

/// Gap statistics of sorted, merged connection times; `None` for fewer than
/// three connections (two gaps are no rhythm). `band_fraction` sets the band
/// around the median gap counted as regular (at least one second wide).
pub fn interval_stats(times: &[i64], band_fraction: f64) -> Option<IntervalStats> {
    if times.len() < 3 {
        return None;
    }
    let mut gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    gaps.sort_by(f64::total_cmp);
    let median_ms = median(&gaps);
    let mut deviations: Vec<f64> = gaps.iter().map(|g| (g - median_ms).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    let mad_ms = median(&deviations);
    let n = gaps.len() as f64;
    let mean_ms = gaps.iter().sum::<f64>() / n;
    let variance = gaps.iter().map(|g| (g - mean_ms).powi(2)).sum::<f64>() / n;
    let cv = if mean_ms > 0.0 {
        variance.sqrt() / mean_ms
    } else {
        f64::INFINITY
    };
    let band = (band_fraction * median_ms).max(SECOND_MS as f64);
    let regular = deviations.iter().filter(|&&d| d <= band).count() as f64;
    Some(IntervalStats {
        connections: times.len(),
        median_ms,
        mad_ms,
        mean_ms,
        cv,
        regular_share: regular / n,
    })
}

pub use quarry_sdk::net::is_private_address;

/// Whether `value` (an address or host name) is covered by `pattern`: equal
/// ignoring ASCII case, or under the domain when `pattern` starts with `.`.
pub fn matches_destination(pattern: &str, value: &str) -> bool {
    let value = value.trim_end_matches('.');
    if let Some(domain) = pattern.strip_prefix('.') {
        let value = value.to_ascii_lowercase();
        let domain = domain.to_ascii_lowercase();
        value == domain || value.ends_with(&format!(".{domain}"))
    } else {
        pattern.eq_ignore_ascii_case(value)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PairKey {
    source: String,
    destination: String,
    port: Option<u16>,
}

#[derive(Debug, Default)]
struct Pair {
    /// (timestamp, offset), in arrival order; sorted at the end.
    times: Vec<(i64, u64)>,
    /// Connections seen, including those beyond `MAX_TIMES_PER_PAIR`.
    total: u64,
    destination_names: BTreeSet<String>,
    processes: BTreeSet<String>,
    hosts: BTreeSet<String>,
}

/// What a task saw, for its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Connections observed.
    pub connections: u64,
    /// Pairs tracked.
    pub pairs: usize,
    /// Connections of pairs beyond [`MAX_PAIRS`], not analysed.
    pub dropped_connections: u64,
    /// Pairs with enough connections to be judged.
    pub pairs_judged: usize,
    /// Pairs left out because their destination had too many sources.
    pub pairs_shared_destination: usize,
}

/// The per-task detection state.
#[derive(Debug)]
pub struct Detector {
    config: Config,
    pairs: BTreeMap<PairKey, Pair>,
    /// Distinct sources per (destination, port), at most
    /// `max_sources_per_destination + 1` each.
    sources: BTreeMap<(String, Option<u16>), BTreeSet<String>>,
    summary: Summary,
}

impl Detector {
    /// A detector with no history.
    pub fn new(config: Config) -> Self {
        Detector {
            config,
            pairs: BTreeMap::new(),
            sources: BTreeMap::new(),
            summary: Summary::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the connection is out of scope whatever its rhythm.
    fn ignored(&self, c: &Connection<'_>) -> bool {
        if c.port
            .is_some_and(|p| self.config.ignore_ports.contains(&p))
        {
            return true;
        }
        if !self.config.include_private && is_private_address(c.destination) {
            return true;
        }
        self.config.ignore_destinations.iter().any(|pattern| {
            matches_destination(pattern, c.destination)
                || c.destination_name
                    .is_some_and(|name| matches_destination(pattern, name))
        })
    }

    /// Feeds one connection.
    pub fn observe(&mut self, c: &Connection<'_>) {
        if c.source.is_empty() || c.destination.is_empty() || self.ignored(c) {
            return;
        }
        self.summary.connections += 1;
        let limit = self.config.max_sources_per_destination + 1;
        let sources = self
            .sources
            .entry((c.destination.to_owned(), c.port))
            .or_default();
        if sources.len() < limit {
            sources.insert(c.source.to_owned());
        }
        let key = PairKey {
            source: c.source.to_owned(),
            destination: c.destination.to_owned(),
            port: c.port,
        };
        if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_PAIRS {
            self.summary.dropped_connections += 1;
            return;
        }
        let pair = self.pairs.entry(key).or_default();
        pair.total += 1;
        if pair.times.len() < MAX_TIMES_PER_PAIR {
            pair.times.push((c.timestamp_ms, c.offset));
        }
        // A handful of distinct values is enough evidence.
        for (set, value) in [
            (&mut pair.destination_names, c.destination_name),
            (&mut pair.processes, c.process),
            (&mut pair.hosts, c.host),
        ] {
            if let Some(value) = value
                && set.len() < 5
            {
                set.insert(value.to_owned());
            }
        }
    }

    /// Judges every pair; returns the findings, in pair order, and a summary.
    pub fn finish(mut self) -> (Vec<Finding>, Summary) {
        let mut findings = Vec::new();
        self.summary.pairs = self.pairs.len();
        for (key, mut pair) in std::mem::take(&mut self.pairs) {
            if pair.times.len() < self.config.min_connections {
                continue;
            }
            self.summary.pairs_judged += 1;
            let shared = self
                .sources
                .get(&(key.destination.clone(), key.port))
                .is_some_and(|s| s.len() > self.config.max_sources_per_destination);
            if shared {
                self.summary.pairs_shared_destination += 1;
                continue;
            }
            pair.times.sort_unstable();
            let times: Vec<i64> = pair.times.iter().map(|&(t, _)| t).collect();
            let merged = merge_close(&times, self.config.merge_ms);
            if merged.len() < self.config.min_connections {
                continue;
            }
            let Some(stats) = interval_stats(&merged, 2.0 * self.config.max_jitter) else {
                continue;
            };
            if self.is_beacon(&stats) {
                findings.push(self.finding(&key, &pair, &stats));
            }
        }
        (findings, self.summary)
    }

    /// Whether gap statistics describe a timer.
    pub fn is_beacon(&self, stats: &IntervalStats) -> bool {
        let c = &self.config;
        stats.connections >= c.min_connections
            && stats.median_ms >= c.min_interval_ms as f64
            && stats.median_ms <= c.max_interval_ms as f64
            && stats.relative_mad() <= c.max_jitter
            && stats.regular_share >= c.min_regular_share
    }

    fn finding(&self, key: &PairKey, pair: &Pair, stats: &IntervalStats) -> Finding {
        let destination = match key.port {
            Some(port) => format!("{}:{port}", key.destination),
            None => key.destination.clone(),
        };
        let names = join(&pair.destination_names);
        let shown = if pair.destination_names.is_empty() {
            destination.clone()
        } else {
            format!("{destination} ({names})")
        };
        let jitter = stats.relative_mad();
        // Tighter rhythm and more beats make a timer likelier.
        let mut confidence: u8 = if jitter <= 0.02 {
            80
        } else if jitter <= 0.05 {
            70
        } else {
            55
        };
        if stats.connections >= 50 {
            confidence += 10;
        }
        let severity = if confidence >= 80 {
            Severity::High
        } else {
            Severity::Medium
        };
        let first = pair.times.first().map_or(0, |&(t, _)| t);
        let last = pair.times.last().map_or(0, |&(t, _)| t);
        let mut techniques = vec![TECHNIQUE_APPLICATION_LAYER];
        if let Some(port) = key.port {
            if WEB_PORTS.contains(&port) {
                techniques.push(TECHNIQUE_WEB_PROTOCOLS);
            }
            if TLS_PORTS.contains(&port) {
                techniques.push(TECHNIQUE_ENCRYPTED_CHANNEL);
            }
        }
        let mut builder = Finding::builder(
            RULE_PERIODIC_CONNECTIONS,
            format!(
                "{} connects to {shown} every ~{} ({} connections, jitter {:.1}%)",
                key.source,
                human_duration(stats.median_ms),
                stats.connections,
                jitter * 100.0
            ),
        )
        .severity(severity)
        .confidence(confidence)
        .entity(format!("ip:{}", key.source))
        .timestamp_ms(last)
        .evidence("source", &key.source)
        .evidence("destination", &key.destination)
        .evidence(
            "destination_port",
            key.port.map_or("unknown".to_owned(), |p| p.to_string()),
        );
        if !pair.destination_names.is_empty() {
            builder = builder.evidence("destination_names", names);
        }
        if !pair.processes.is_empty() {
            builder = builder.evidence("processes", join(&pair.processes));
        }
        if !pair.hosts.is_empty() {
            builder = builder.evidence("hosts", join(&pair.hosts));
        }
        builder
            .evidence("connections", stats.connections)
            .evidence("events", pair.total)
            .evidence("median_interval_s", format!("{:.1}", stats.median_ms / 1e3))
            .evidence("mean_interval_s", format!("{:.1}", stats.mean_ms / 1e3))
            .evidence("mad_s", format!("{:.2}", stats.mad_ms / 1e3))
            .evidence("relative_mad", format!("{jitter:.3}"))
            .evidence("cv", format!("{:.3}", stats.cv))
            .evidence("regular_share", format!("{:.2}", stats.regular_share))
            .evidence("first_seen", format_rfc3339_ms(first))
            .evidence("last_seen", format_rfc3339_ms(last))
            .techniques(techniques)
            .offsets(pair.times.iter().take(MAX_FINDING_OFFSETS).map(|&(_, o)| o))
            .build()
    }
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// `45s`, `5m`, `1h30m`, for titles.
pub fn human_duration(ms: f64) -> String {
    let s = (ms / 1e3).round() as i64;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        let (m, rest) = (s / 60, s % 60);
        if rest == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rest}s")
        }
    } else {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if m == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{m}m")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn conn(
        t: i64,
        offset: u64,
        source: &str,
        destination: &str,
        port: u16,
    ) -> Connection<'static> {
        // Leaked for brevity: tests only.
        let source: &'static str = Box::leak(source.to_owned().into_boxed_str());
        let destination: &'static str = Box::leak(destination.to_owned().into_boxed_str());
        Connection {
            timestamp_ms: t,
            offset,
            source,
            destination,
            port: Some(port),
            destination_name: None,
            process: None,
            host: None,
        }
    }

    /// A tiny deterministic generator for jitter.
    struct Lcg(u64);
    impl Lcg {
        fn next_f64(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn run(config: Config, conns: &[Connection<'_>]) -> Vec<Finding> {
        let mut d = Detector::new(config);
        for c in conns {
            d.observe(c);
        }
        d.finish().0
    }

    fn beacon(n: usize, period_ms: i64, jitter: f64, seed: u64) -> Vec<Connection<'static>> {
        let mut rng = Lcg(seed);
        let mut t = T0;
        (0..n)
            .map(|i| {
                let offset = (rng.next_f64() * 2.0 - 1.0) * jitter * period_ms as f64;
                t += period_ms + offset as i64;
                conn(t, i as u64, "10.1.2.3", "203.0.113.50", 443)
            })
            .collect()
    }

    #[test]
    fn stats_of_a_perfect_timer() {
        let times: Vec<i64> = (0..10).map(|i| T0 + i * 60_000).collect();
        let s = interval_stats(&times, 0.3).unwrap();
        assert_eq!(s.connections, 10);
        assert_eq!(s.median_ms, 60_000.0);
        assert_eq!(s.mad_ms, 0.0);
        assert_eq!(s.cv, 0.0);
        assert_eq!(s.regular_share, 1.0);
        assert_eq!(s.relative_mad(), 0.0);
        assert!(interval_stats(&times[..2], 0.3).is_none());
    }

    #[test]
    fn missed_beats_do_not_hide_the_rhythm() {
        // Every 5th beat is missed: those gaps are doubled.
        let times: Vec<i64> = (0..60)
            .filter(|i| i % 5 != 4)
            .map(|i| T0 + i * 60_000)
            .collect();
        let s = interval_stats(&times, 0.3).unwrap();
        assert_eq!(s.median_ms, 60_000.0);
        assert_eq!(s.mad_ms, 0.0);
        assert!(s.cv > 0.3, "the mean-based measure is thrown off: {}", s.cv);
        assert!(s.regular_share > 0.7);
    }

    #[test]
    fn merge_folds_bursts() {
        assert_eq!(
            merge_close(&[0, 100, 900, 1000, 5000], 1000),
            [0, 1000, 5000]
        );
        assert!(merge_close(&[], 1000).is_empty());
    }

    #[test]
    fn periodic_pair_with_jitter_is_reported() {
        let findings = run(Config::default(), &beacon(40, 60_000, 0.05, 7));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.rule, RULE_PERIODIC_CONNECTIONS);
        assert_eq!(f.entity, "ip:10.1.2.3");
        assert_eq!(f.evidence_value("destination"), Some("203.0.113.50"));
        assert_eq!(f.evidence_value("destination_port"), Some("443"));
        assert_eq!(f.evidence_value("connections"), Some("40"));
        let median: f64 = f
            .evidence_value("median_interval_s")
            .unwrap()
            .parse()
            .unwrap();
        assert!((median - 60.0).abs() < 3.0, "{median}");
        assert_eq!(f.techniques, ["T1071", "T1071.001", "T1573"]);
        assert!(
            f.title
                .starts_with("10.1.2.3 connects to 203.0.113.50:443 every ~"),
            "{}",
            f.title
        );
        assert_eq!(f.offsets.len(), MAX_FINDING_OFFSETS.min(40));
    }

    #[test]
    fn high_jitter_is_quiet_and_threshold_is_a_parameter() {
        // Uniformly random gaps between 0.3 and 1.7 periods: no timer.
        let random = beacon(200, 60_000, 0.7, 11);
        assert!(run(Config::default(), &random).is_empty());
        // A very loose jitter limit lets it through: the parameter works.
        let loose = Config {
            max_jitter: 0.9,
            min_regular_share: 0.0,
            ..Config::default()
        };
        assert_eq!(run(loose, &random).len(), 1);
    }

    #[test]
    fn too_few_connections_are_quiet() {
        assert!(run(Config::default(), &beacon(10, 60_000, 0.0, 1)).is_empty());
        let few = Config {
            min_connections: 5,
            ..Config::default()
        };
        assert_eq!(run(few, &beacon(10, 60_000, 0.0, 1)).len(), 1);
    }

    #[test]
    fn chatty_services_are_quiet() {
        // A perfectly regular keep-alive every 2 seconds.
        assert!(run(Config::default(), &beacon(500, 2_000, 0.0, 3)).is_empty());
    }

    #[test]
    fn ignored_ports_private_and_listed_destinations_are_quiet() {
        let mut ntp = beacon(50, 64_000, 0.0, 1);
        for c in &mut ntp {
            c.port = Some(123);
        }
        assert!(run(Config::default(), &ntp).is_empty());

        let internal: Vec<_> = (0..50)
            .map(|i| conn(T0 + i * 300_000, i as u64, "10.1.2.3", "10.0.0.4", 389))
            .collect();
        assert!(run(Config::default(), &internal).is_empty());
        let with_private = Config {
            include_private: true,
            ..Config::default()
        };
        assert_eq!(run(with_private, &internal).len(), 1);

        let mut named = beacon(50, 60_000, 0.0, 1);
        for c in &mut named {
            c.destination_name = Some("telemetry.vendor.example");
        }
        let ignore = Config {
            ignore_destinations: vec![".vendor.example".to_owned()],
            ..Config::default()
        };
        assert!(run(ignore, &named).is_empty());
        let ignore_ip = Config {
            ignore_destinations: vec!["203.0.113.50".to_owned()],
            ..Config::default()
        };
        assert!(run(ignore_ip, &named).is_empty());
        let f = run(Config::default(), &named);
        assert_eq!(
            f[0].evidence_value("destination_names"),
            Some("telemetry.vendor.example")
        );
    }

    #[test]
    fn destinations_shared_by_many_sources_are_quiet() {
        let mut conns = Vec::new();
        for host in 0..12 {
            for i in 0..30 {
                let src = format!("10.1.0.{host}");
                conns.push(conn(
                    T0 + i * 60_000 + host * 1_000,
                    0,
                    &src,
                    "198.51.100.9",
                    443,
                ));
            }
        }
        assert!(run(Config::default(), &conns).is_empty());
        let permissive = Config {
            max_sources_per_destination: 100,
            ..Config::default()
        };
        assert_eq!(run(permissive, &conns).len(), 12);
    }

    #[test]
    fn out_of_order_and_duplicate_events_are_handled() {
        let mut conns = beacon(30, 60_000, 0.0, 1);
        // Each beat logged twice (two sensors) and the shard order shuffled.
        let copies: Vec<_> = conns
            .iter()
            .map(|c| Connection {
                timestamp_ms: c.timestamp_ms + 5,
                ..*c
            })
            .collect();
        conns.extend(copies);
        conns.reverse();
        let f = run(Config::default(), &conns);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence_value("connections"), Some("30"));
        assert_eq!(f[0].evidence_value("events"), Some("60"));
    }

    #[test]
    fn private_address_classification() {
        for private in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.5.4",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private_address(private), "{private}");
        }
        for public in [
            "8.8.8.8",
            "203.0.113.50",
            "172.32.0.1",
            "2001:db8::1",
            "evil.example",
        ] {
            assert!(!is_private_address(public), "{public}");
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(45_000.0), "45s");
        assert_eq!(human_duration(300_000.0), "5m");
        assert_eq!(human_duration(330_000.0), "5m30s");
        assert_eq!(human_duration(5_400_000.0 * 2.0), "3h");
    }
}
