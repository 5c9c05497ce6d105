//! Hunt module `ioc-sweep`: file hashes, IP addresses, domain names and
//! URLs of events matched against intel sets shipped with the hunt.
//!
//! Sets travel as `intel.<set>` parameters (`quarry hunt submit ioc-sweep
//! --intel hashes=bad-hashes.txt`); the module's own parameters say which
//! sets hold which kind of indicator (`hash_sets`, `ip_sets`,
//! `domain_sets`, `url_sets`, by default `hashes`, `ips`, `domains` and
//! `urls`). A set named there but not shipped is empty; a shipped set that
//! no kind names, or a hunt without any set, fails the task with the fix.
//!
//! Reads (flat, or with Windows event data nested as `EventData.*`):
//!
//! - hashes: Sysmon `Hashes`/`Hash` (`SHA256=…,MD5=…,IMPHASH=…`), Zeek
//!   `files` `md5`, `sha1`, `sha256`;
//! - IP addresses: Sysmon `SourceIp`, `DestinationIp`, the addresses in
//!   Sysmon 22 `QueryResults`, Security `IpAddress`, Zeek `id.orig_h`,
//!   `id.resp_h` (or `id_orig_h`, `id_resp_h`), Zeek `files` `tx_hosts`
//!   and `rx_hosts`;
//! - domains: Sysmon `QueryName`, the CNAMEs in `QueryResults`,
//!   `DestinationHostname`, Zeek `dns`
//!   `query`, `http` `host`, `ssl` `server_name`, and the host of every URL;
//!   a subdomain of a listed domain matches (each parent is looked up);
//! - URLs: Zeek `http` `host` + `uri` (and `id.resp_p`), proxy and ECS
//!   `url`, `url.full`, `url.original`.
//!
//! One finding per matching event (`ioc-sweep/hash-match`, `url-match`,
//! `domain-match` or `ip-match`, after the most specific kind that matched),
//! high severity and confidence, with the indicator, its kind, the set and
//! the field in the evidence. Aggregates: matching events per set and per
//! indicator, first/last match and distinct hosts per indicator.
//!
//! A prefilter with one any-of group lets only events with at least one
//! indicator field reach the module.

#![warn(missing_docs)]

pub mod indicators;
pub mod sweep;

use indicators::{Kind, domain, domain_and_parents, hashes, http_url, ip, url_forms, url_host};
use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params, Predicate, intel};
use sweep::{Candidate, Config, Context, Sets, Sweep};

/// The module's name in the registry.
pub const NAME: &str = "ioc-sweep";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: the sets of file hashes.
pub const PARAM_HASH_SETS: &str = "hash_sets";
/// Parameter: the sets of IP addresses.
pub const PARAM_IP_SETS: &str = "ip_sets";
/// Parameter: the sets of domain names.
pub const PARAM_DOMAIN_SETS: &str = "domain_sets";
/// Parameter: the sets of URLs.
pub const PARAM_URL_SETS: &str = "url_sets";
/// Parameter: findings per indicator and task.
pub const PARAM_MAX_FINDINGS_PER_INDICATOR: &str = "max_findings_per_indicator";

/// Each kind's parameter and default set.
const SET_PARAMS: [(&str, &str); 4] = [
    (PARAM_HASH_SETS, "hashes"),
    (PARAM_IP_SETS, "ips"),
    (PARAM_DOMAIN_SETS, "domains"),
    (PARAM_URL_SETS, "urls"),
];

const PARAMS: [&str; 5] = [
    PARAM_HASH_SETS,
    PARAM_IP_SETS,
    PARAM_DOMAIN_SETS,
    PARAM_URL_SETS,
    PARAM_MAX_FINDINGS_PER_INDICATOR,
];

/// Default of [`PARAM_MAX_FINDINGS_PER_INDICATOR`].
pub const DEFAULT_MAX_FINDINGS_PER_INDICATOR: u64 = 1_000;

/// What `init` says when the hunt shipped no intel at all.
pub const NO_INTEL_MESSAGE: &str = "ioc-sweep has nothing to sweep for: pass at least one intel set, \
     e.g. `--intel hashes=FILE` or the parameter `intel.hashes`";

quarry_sdk::fields! {
    /// The event fields this module reads. Windows event data is declared
    /// with its `EventData.` prefix: the host resolves that path in events
    /// whose data is nested and falls back to the flat name in the others.
    pub mod field {
        /// Sysmon: `SHA256=…,MD5=…,…` of the image or file.
        HASHES = "EventData.Hashes",
        /// Sysmon 15 (stream hash): same format.
        HASH = "EventData.Hash",
        /// Zeek files: MD5.
        ZEEK_MD5 = "md5",
        /// Zeek files: SHA1.
        ZEEK_SHA1 = "sha1",
        /// Zeek files: SHA256.
        ZEEK_SHA256 = "sha256",
        /// Sysmon 3: local address.
        SOURCE_IP = "EventData.SourceIp",
        /// Sysmon 3: remote address.
        DESTINATION_IP = "EventData.DestinationIp",
        /// Security 4624/4625/…: the client's address.
        IP_ADDRESS = "EventData.IpAddress",
        /// Zeek: originating address.
        ZEEK_ORIG_H = "id.orig_h",
        /// Zeek: responding address.
        ZEEK_RESP_H = "id.resp_h",
        /// Zeek (some exporters): originating address.
        ZEEK_ORIG_H_FLAT = "id_orig_h",
        /// Zeek (some exporters): responding address.
        ZEEK_RESP_H_FLAT = "id_resp_h",
        /// Zeek: responding port (for URLs).
        ZEEK_RESP_P = "id.resp_p",
        /// Zeek (some exporters): responding port.
        ZEEK_RESP_P_FLAT = "id_resp_p",
        /// Sysmon 22: the name queried.
        QUERY_NAME = "EventData.QueryName",
        /// Sysmon 22: the answers, `type:  5 alias.example;::ffff:192.0.2.1;…`.
        QUERY_RESULTS = "EventData.QueryResults",
        /// Zeek files: the hosts that sent the file (a set).
        ZEEK_TX_HOSTS = "tx_hosts",
        /// Zeek files: the hosts that received the file (a set).
        ZEEK_RX_HOSTS = "rx_hosts",
        /// Sysmon 3: the remote host's name.
        DESTINATION_HOSTNAME = "EventData.DestinationHostname",
        /// Zeek dns: the name queried.
        ZEEK_QUERY = "query",
        /// Zeek ssl: the SNI server name.
        ZEEK_SERVER_NAME = "server_name",
        /// Zeek http: the Host header. Elsewhere the worker's canonical
        /// host, which is why it is read only in `http` records.
        HOST = "host",
        /// Zeek http: the request target.
        ZEEK_URI = "uri",
        /// Zeek: the log the record came from (`http`, `dns`, …).
        ZEEK_PATH = "_path",
        /// Zeek (some exporters): the log the record came from.
        ZEEK_STREAM = "@stream",
        /// Proxy logs: the requested URL.
        URL = "url",
        /// ECS: the full URL.
        URL_FULL = "url.full",
        /// ECS: the URL as logged.
        URL_ORIGINAL = "url.original",
        /// The machine that logged the event, as evtx names it.
        COMPUTER = "Computer",
        /// The machine that logged the event, as some shippers name it.
        HOSTNAME = "Hostname",
        /// Sysmon: the process image (evidence).
        IMAGE = "EventData.Image",
        /// Sysmon: the user (evidence).
        USER = "EventData.User",
        /// Sysmon 11/23/…: the file (evidence).
        TARGET_FILENAME = "EventData.TargetFilename",
        /// Zeek files: the file name, when known (evidence).
        ZEEK_FILENAME = "filename",
    }
}

/// The fields whose presence means an event may hold an indicator: the
/// prefilter's any-of group.
const INDICATOR_FIELDS: [Field; 23] = [
    field::HASHES,
    field::HASH,
    field::ZEEK_MD5,
    field::ZEEK_SHA1,
    field::ZEEK_SHA256,
    field::SOURCE_IP,
    field::DESTINATION_IP,
    field::IP_ADDRESS,
    field::ZEEK_ORIG_H,
    field::ZEEK_RESP_H,
    field::ZEEK_ORIG_H_FLAT,
    field::ZEEK_RESP_H_FLAT,
    field::QUERY_NAME,
    field::QUERY_RESULTS,
    field::ZEEK_TX_HOSTS,
    field::ZEEK_RX_HOSTS,
    field::DESTINATION_HOSTNAME,
    field::ZEEK_QUERY,
    field::ZEEK_SERVER_NAME,
    field::ZEEK_URI,
    field::URL,
    field::URL_FULL,
    field::URL_ORIGINAL,
];

/// The name of a declared field.
fn name(field: Field) -> &'static str {
    field::NAMES[field.index()]
}

/// The name of a field as evidence shows it: without the `EventData.`
/// prefix, which is a declaration detail.
fn shown(field: Field) -> &'static str {
    let name = name(field);
    name.strip_prefix("EventData.").unwrap_or(name)
}

/// Whether `name` can be an intel set name (as `quarry_contract::intel`
/// accepts them): 1 to 64 of `a-z 0-9 _ -`.
fn valid_set_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The module: a [`Sweep`] per task.
#[derive(Debug)]
pub struct IocSweep {
    sweep: Sweep,
}

impl IocSweep {
    /// The configuration for the hunt's parameters and the intel sets
    /// shipped with the task (name and size, as [`intel::sets`] lists
    /// them).
    pub fn config(params: &Params, shipped: &[(String, u64)]) -> Result<Config, String> {
        params.ensure_known(&PARAMS)?;
        if shipped.is_empty() {
            return Err(NO_INTEL_MESSAGE.to_owned());
        }
        let mut named: Vec<Vec<String>> = Vec::new();
        for (param, default) in SET_PARAMS {
            let names = match params.get(param) {
                None => vec![default],
                Some(_) => params.list(param),
            };
            for set in &names {
                if !valid_set_name(set) {
                    return Err(format!(
                        "parameter `{param}` must list intel set names (1 to 64 of a-z, 0-9, `_`, `-`) separated by commas, got `{set}`"
                    ));
                }
            }
            named.push(names.into_iter().map(str::to_owned).collect());
        }
        for (set, _) in shipped {
            if !named.iter().flatten().any(|n| n == set) {
                return Err(format!(
                    "intel set `{set}` is never looked up: name it in `{PARAM_HASH_SETS}`, `{PARAM_IP_SETS}`, `{PARAM_DOMAIN_SETS}` or `{PARAM_URL_SETS}` (defaults: hashes, ips, domains, urls)"
                ));
            }
        }
        // A set named but not shipped is empty: looking it up would only
        // cost host calls.
        let mut kinds = named.into_iter().map(|names| -> Vec<String> {
            names
                .into_iter()
                .filter(|n| shipped.iter().any(|(s, _)| s == n))
                .collect()
        });
        let mut next = || kinds.next().unwrap_or_default();
        let sets = Sets {
            hash: next(),
            ip: next(),
            domain: next(),
            url: next(),
        };
        let max_findings_per_indicator = params.u64_in_range_or(
            PARAM_MAX_FINDINGS_PER_INDICATOR,
            DEFAULT_MAX_FINDINGS_PER_INDICATOR,
            1..=1_000_000,
        )?;
        Ok(Config {
            sets,
            max_findings_per_indicator,
        })
    }
}

/// `field` unless absent, blank or `-`.
fn meaningful(event: &Event, field: Field) -> Option<&str> {
    event
        .get_nonempty(field)
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "-" && *v != "(empty)")
}

/// The items of a list field: a JSON array of strings, or comma-separated.
fn list_items(text: &str) -> impl Iterator<Item = &str> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    inner
        .split(',')
        .map(|item| item.trim().trim_matches('"').trim())
        .filter(|item| !item.is_empty())
}

/// The candidates a domain name gives: the name and its parents.
fn domain_candidate(text: &str, field: Field) -> Option<Candidate> {
    let name = domain(text)?;
    Some(Candidate {
        kind: Kind::Domain,
        lookups: domain_and_parents(&name)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        observed: name,
        field: shown(field),
        detail: None,
    })
}

/// The candidates of a host part (of a URL or a Host header): a domain, or
/// an address.
fn host_candidate(host: &str, field: Field) -> Option<Candidate> {
    match ip(host) {
        Some(address) => Some(Candidate::exact(Kind::Ip, address, shown(field))),
        None => domain_candidate(host, field),
    }
}

/// The candidates of a URL: its forms, and its host.
fn url_candidates(url: &str, field: Field, out: &mut Vec<Candidate>) {
    out.push(Candidate {
        kind: Kind::Url,
        observed: url.to_owned(),
        lookups: url_forms(url),
        field: shown(field),
        detail: None,
    });
    if let Some(host) = url_host(url) {
        out.extend(host_candidate(&host, field));
    }
}

/// Whether the event is a Zeek `http` record (whose `host` is the Host
/// header, not the logging machine).
fn is_http_record(event: &Event) -> bool {
    match meaningful(event, field::ZEEK_PATH).or_else(|| meaningful(event, field::ZEEK_STREAM)) {
        Some(path) => path.eq_ignore_ascii_case("http"),
        // Exporters that drop `_path`: a request target says it.
        None => meaningful(event, field::ZEEK_URI).is_some(),
    }
}

/// The indicator values of an event and where it was seen.
pub fn candidates(event: &Event) -> (Vec<Candidate>, Context) {
    let mut out = Vec::new();
    for f in [
        field::HASHES,
        field::HASH,
        field::ZEEK_MD5,
        field::ZEEK_SHA1,
        field::ZEEK_SHA256,
    ] {
        if let Some(text) = meaningful(event, f) {
            for (hash_type, digest) in hashes(text) {
                out.push(Candidate {
                    detail: Some(hash_type.name()),
                    ..Candidate::exact(Kind::Hash, digest.to_ascii_lowercase(), shown(f))
                });
            }
        }
    }
    for f in [
        field::SOURCE_IP,
        field::DESTINATION_IP,
        field::IP_ADDRESS,
        field::ZEEK_ORIG_H,
        field::ZEEK_RESP_H,
        field::ZEEK_ORIG_H_FLAT,
        field::ZEEK_RESP_H_FLAT,
    ] {
        if let Some(address) = meaningful(event, f).and_then(ip) {
            out.push(Candidate::exact(Kind::Ip, address, shown(f)));
        }
    }
    // Zeek sets: a JSON array (`["10.0.0.1","10.0.0.2"]`) or, from TSV
    // logs, comma-separated.
    for f in [field::ZEEK_TX_HOSTS, field::ZEEK_RX_HOSTS] {
        if let Some(text) = meaningful(event, f) {
            for item in list_items(text) {
                if let Some(address) = ip(item) {
                    out.push(Candidate::exact(Kind::Ip, address, shown(f)));
                }
            }
        }
    }
    // Sysmon 22 answers: addresses, and `type: N name` records (CNAMEs).
    if let Some(text) = meaningful(event, field::QUERY_RESULTS) {
        for answer in text.split(';').map(str::trim).filter(|a| !a.is_empty()) {
            match answer.strip_prefix("type:") {
                Some(record) => {
                    if let Some(name) = record.split_whitespace().last() {
                        out.extend(domain_candidate(name, field::QUERY_RESULTS));
                    }
                }
                None => {
                    if let Some(address) = ip(answer) {
                        out.push(Candidate::exact(
                            Kind::Ip,
                            address,
                            shown(field::QUERY_RESULTS),
                        ));
                    }
                }
            }
        }
    }
    for f in [
        field::QUERY_NAME,
        field::DESTINATION_HOSTNAME,
        field::ZEEK_QUERY,
        field::ZEEK_SERVER_NAME,
    ] {
        if let Some(text) = meaningful(event, f) {
            out.extend(domain_candidate(text, f));
        }
    }
    let source = [
        field::SOURCE_IP,
        field::ZEEK_ORIG_H,
        field::ZEEK_ORIG_H_FLAT,
        field::IP_ADDRESS,
    ]
    .into_iter()
    .find_map(|f| meaningful(event, f))
    .map(str::to_owned);
    let http = is_http_record(event);
    // A request without a Host header gets the worker's canonical host,
    // which for Zeek is the client's address: not a server name.
    let header = meaningful(event, field::HOST).filter(|h| Some(*h) != source.as_deref());
    if http && let Some(host) = header {
        let port = [field::ZEEK_RESP_P, field::ZEEK_RESP_P_FLAT]
            .into_iter()
            .find_map(|f| event.get_u64(f))
            .and_then(|p| u16::try_from(p).ok());
        if let Some(url) = http_url(host, meaningful(event, field::ZEEK_URI), port) {
            out.push(Candidate {
                kind: Kind::Url,
                lookups: url_forms(&url),
                observed: url,
                field: "host+uri",
                detail: None,
            });
        }
        // The Host header may carry a port.
        let bare = url_host(host).unwrap_or_else(|| host.to_owned());
        out.extend(host_candidate(&bare, field::HOST));
    }
    for f in [field::URL, field::URL_FULL, field::URL_ORIGINAL] {
        if let Some(url) = meaningful(event, f) {
            url_candidates(url, f, &mut out);
        }
    }
    // Two fields with the same value (`url` and `url.original`) are one
    // candidate.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|c| seen.insert((c.kind, c.observed.clone())));

    let host = meaningful(event, field::COMPUTER)
        .or_else(|| meaningful(event, field::HOSTNAME))
        // The canonical host of a Zeek record is its `id.orig_h`: that is
        // the source, not a machine name.
        .or_else(|| {
            meaningful(event, field::HOST).filter(|h| !http && Some(*h) != source.as_deref())
        })
        .map(str::to_owned);
    let mut evidence = Vec::new();
    for f in [
        field::IMAGE,
        field::USER,
        field::TARGET_FILENAME,
        field::ZEEK_FILENAME,
    ] {
        if let Some(value) = meaningful(event, f) {
            evidence.push((shown(f), value.to_owned()));
        }
    }
    let context = Context {
        timestamp_ms: event.timestamp_ms,
        offset: event.offset,
        host,
        source,
        evidence,
    };
    (out, context)
}

impl Hunt for IocSweep {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Matches hashes, IP addresses, domains (with their subdomains) and URLs of events against the intel sets shipped with the hunt.",
            )
            .with_fields(field::NAMES)
            .with_any_of(
                INDICATOR_FIELDS
                    .iter()
                    .map(|&f| Predicate::exists(name(f)))
                    .collect(),
            )
    }

    fn new(params: &Params) -> Result<Self, String> {
        let config = Self::config(params, &intel::sets())?;
        Ok(IocSweep {
            sweep: Sweep::new(config),
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            let (candidates, context) = candidates(event);
            if let Some(finding) = self.sweep.check(&candidates, &context, intel::contains) {
                out.emit(finding);
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let report = self.sweep.finish();
        quarry_sdk::log::debug(&format!(
            "{} events with indicator values, {} set lookups, {} matching events",
            report.events_checked,
            report.lookups,
            report.matches_by_indicator.total(),
        ));
        if report.suppressed > 0 {
            quarry_sdk::log::info(&format!(
                "{} matching events were counted but not reported: their indicator reached `{PARAM_MAX_FINDINGS_PER_INDICATOR}`",
                report.suppressed
            ));
        }
        out.aggregate(report.matches_by_set);
        out.aggregate(report.matches_by_indicator);
        out.aggregate(report.indicator_seen);
        out.aggregate(report.hosts_by_indicator);
    }
}

quarry_sdk::export_hunt!(IocSweep);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::{MatchOp, Severity, Task};

    const MD5: &str = "2e5a8590cf6848968fc23de3fa1e25f1";
    const SHA256: &str = "4ad3b3b4f8c4e1f2a6a2c5e3c2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn intel_params() -> Vec<(String, String)> {
        params(&[
            ("intel.hashes", &format!("# feed\n{SHA256}\n")),
            ("intel.ips", "203.0.113.66"),
            ("intel.domains", "evil[.]example"),
            ("intel.urls", "hxxp://files.example/drop/payload.bin"),
        ])
    }

    /// An event with `values` at the given fields, the rest absent.
    fn event(offset: u64, values: &[(Field, &str)]) -> Event {
        let mut all = vec![None; field::NAMES.len()];
        for (f, v) in values {
            all[f.index()] = Some((*v).to_owned());
        }
        Event::new(1_700_000_000_000 + offset as i64, offset, all)
    }

    fn task(extra: &[(&str, &str)]) -> Task<IocSweep> {
        let mut task = Task::<IocSweep>::new();
        let mut p = intel_params();
        p.extend(params(extra));
        task.init(p).expect("valid parameters");
        task
    }

    #[test]
    fn descriptor_prefilters_on_any_indicator_field() {
        let d = Task::<IocSweep>::describe();
        assert_eq!(d.name, NAME);
        assert!(d.prefilter.is_empty());
        assert_eq!(d.any_of.len(), 1);
        let group = &d.any_of[0];
        assert_eq!(group.len(), INDICATOR_FIELDS.len());
        assert!(group.iter().all(|p| p.op == MatchOp::Exists));
        let fields: Vec<&str> = group.iter().map(|p| p.field.as_str()).collect();
        for expected in [
            "EventData.Hashes",
            "md5",
            "id.resp_h",
            "query",
            "uri",
            "url",
        ] {
            assert!(fields.contains(&expected), "{expected} missing: {fields:?}");
        }
        assert!(
            !fields.contains(&"host"),
            "every event has a canonical host: it would let everything through"
        );
    }

    #[test]
    fn parameters_and_intel_are_validated_with_the_fix() {
        let mut t = Task::<IocSweep>::new();
        let err = t.init(vec![]).unwrap_err();
        assert!(
            err.contains(
                "pass at least one intel set, e.g. `--intel hashes=FILE` or the parameter `intel.hashes`"
            ),
            "{err}"
        );
        let err = t.init(params(&[("intel.bad", "1.2.3.4")])).unwrap_err();
        assert!(
            err.starts_with("intel set `bad` is never looked up"),
            "{err}"
        );
        t.init(params(&[
            ("intel.bad", "1.2.3.4"),
            ("ip_sets", "bad, other"),
        ]))
        .expect("`other` is named but not shipped: empty");
        let mut t = Task::<IocSweep>::new();
        let err = t
            .init(params(&[("intel.ips", "1.2.3.4"), ("ip_sets", "Bad Set")]))
            .unwrap_err();
        assert!(
            err.starts_with("parameter `ip_sets` must list intel set names"),
            "{err}"
        );
        let err = t
            .init(params(&[
                ("intel.ips", "1.2.3.4"),
                ("max_findings_per_indicator", "0"),
            ]))
            .unwrap_err();
        assert!(err.contains("`max_findings_per_indicator`"), "{err}");
        let err = t
            .init(params(&[("intel.ips", "1.2.3.4"), ("sets", "x")]))
            .unwrap_err();
        assert!(err.starts_with("unknown parameter `sets`"), "{err}");

        let shipped = [("ips".to_owned(), 1), ("mixed".to_owned(), 3)];
        let p =
            Params::from_pairs([("domain_sets", "mixed"), ("url_sets", "mixed,absent")]).unwrap();
        let config = IocSweep::config(&p, &shipped).unwrap();
        assert_eq!(
            config.sets,
            Sets {
                hash: vec![],
                ip: vec!["ips".into()],
                domain: vec!["mixed".into()],
                url: vec!["mixed".into()],
            }
        );
        assert_eq!(
            config.max_findings_per_indicator,
            DEFAULT_MAX_FINDINGS_PER_INDICATOR
        );
    }

    #[test]
    fn dns_answers_and_zeek_file_hosts_are_swept() {
        let mut task = task(&[]);
        // Sysmon 22: the C2 answer hides behind a CNAME and an IPv4-mapped address.
        let query = event(
            1,
            &[
                (field::QUERY_NAME, "cdn.benign.example"),
                (
                    field::QUERY_RESULTS,
                    "type:  5 edge.evil.example;::ffff:203.0.113.66;198.51.100.1;",
                ),
                (field::COMPUTER, "WS07"),
            ],
        );
        let files = event(
            2,
            &[
                (field::ZEEK_TX_HOSTS, r#"["192.0.2.10","203.0.113.66"]"#),
                (field::ZEEK_RX_HOSTS, "10.0.0.5"),
            ],
        );
        let tsv = event(3, &[(field::ZEEK_RX_HOSTS, "10.0.0.6,203.0.113.66")]);
        let clean = event(
            4,
            &[(
                field::QUERY_RESULTS,
                "type:  5 cdn.benign.example;192.0.2.1;",
            )],
        );
        let findings = task.scan(vec![query, files, tsv, clean]).unwrap();
        let offsets: Vec<u64> = findings.iter().flat_map(|f| f.offsets.clone()).collect();
        assert_eq!(offsets, [1, 2, 3], "{findings:#?}");
        let fields: Vec<_> = findings
            .iter()
            .filter_map(|f| f.evidence_value("field"))
            .collect();
        assert!(fields.contains(&"QueryResults"), "{fields:?}");
        assert!(
            fields.contains(&"tx_hosts") && fields.contains(&"rx_hosts"),
            "{fields:?}"
        );
    }

    #[test]
    fn sysmon_hashes_match_with_process_evidence() {
        let mut task = task(&[]);
        let process = event(
            1,
            &[
                (
                    field::HASHES,
                    &format!(
                        "MD5={MD5},SHA256={},IMPHASH=00000000000000000000000000000000",
                        SHA256.to_uppercase()
                    ),
                ),
                (field::IMAGE, "C:\\Users\\bob\\AppData\\Local\\Temp\\x.exe"),
                (field::COMPUTER, "WS07.corp.example"),
                (field::USER, "CORP\\bob"),
            ],
        );
        let benign = event(
            2,
            &[
                (field::HASHES, &format!("MD5={MD5}")),
                (field::COMPUTER, "WS01"),
            ],
        );
        let findings = task.scan(vec![process, benign]).unwrap();
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.rule, "ioc-sweep/hash-match");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.entity, "host:WS07.corp.example");
        assert_eq!(f.evidence_value("indicator"), Some(SHA256));
        assert_eq!(f.evidence_value("indicator_type"), Some("hash (SHA256)"));
        assert_eq!(f.evidence_value("intel_set"), Some("hashes"));
        assert_eq!(f.evidence_value("field"), Some("Hashes"));
        assert_eq!(f.evidence_value("User"), Some("CORP\\bob"));
        assert_eq!(f.offsets, [1]);
    }

    #[test]
    fn zeek_dns_http_and_conn_records_match() {
        let mut task = task(&[]);
        let dns = event(
            1,
            &[
                (field::ZEEK_PATH, "dns"),
                (field::ZEEK_QUERY, "a1.cdn.EVIL.example"),
                (field::ZEEK_ORIG_H, "10.0.0.5"),
                (field::ZEEK_RESP_H, "10.0.0.53"),
                (field::HOST, "10.0.0.5"),
            ],
        );
        let http = event(
            2,
            &[
                (field::ZEEK_PATH, "http"),
                (field::HOST, "files.example"),
                (field::ZEEK_URI, "/drop/payload.bin?x=1"),
                (field::ZEEK_RESP_P, "80"),
                (field::ZEEK_ORIG_H, "10.0.0.6"),
                (field::ZEEK_RESP_H, "198.51.100.1"),
            ],
        );
        let conn = event(
            3,
            &[
                (field::ZEEK_PATH, "conn"),
                (field::ZEEK_ORIG_H_FLAT, "10.0.0.7"),
                (field::ZEEK_RESP_H_FLAT, "203.0.113.66"),
                (field::HOST, "10.0.0.7"),
            ],
        );
        // A canonical `host` that looks like a domain, in a record that is
        // not an HTTP request: not read as a Host header.
        let sysmon = event(
            4,
            &[
                (field::HOST, "evil.example"),
                (field::DESTINATION_IP, "198.51.100.1"),
            ],
        );
        let findings = task.scan(vec![dns, http, conn, sysmon]).unwrap();
        let summary: Vec<(&str, &str, Option<&str>, Option<&str>)> = findings
            .iter()
            .map(|f| {
                (
                    f.rule.as_str(),
                    f.entity.as_str(),
                    f.evidence_value("indicator"),
                    f.evidence_value("field"),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "ioc-sweep/domain-match",
                    "ip:10.0.0.5",
                    Some("evil.example"),
                    Some("query")
                ),
                (
                    "ioc-sweep/url-match",
                    "ip:10.0.0.6",
                    Some("http://files.example/drop/payload.bin"),
                    Some("host+uri")
                ),
                (
                    "ioc-sweep/ip-match",
                    "ip:10.0.0.7",
                    Some("203.0.113.66"),
                    Some("id_resp_h")
                ),
            ]
        );
        assert_eq!(
            findings[0].evidence_value("observed_value"),
            Some("a1.cdn.evil.example")
        );
        let output = task.finish().unwrap();
        let names: Vec<&str> = output.aggregates.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                sweep::AGGREGATE_MATCHES_BY_SET,
                sweep::AGGREGATE_MATCHES_BY_INDICATOR,
                sweep::AGGREGATE_INDICATOR_SEEN,
                sweep::AGGREGATE_HOSTS_BY_INDICATOR
            ]
        );
    }

    #[test]
    fn proxy_urls_match_by_url_and_by_host() {
        let mut task = task(&[]);
        let by_url = event(1, &[(field::URL, "http://files.example/drop/payload.bin")]);
        let by_host = event(2, &[(field::URL_FULL, "https://login.evil.example:8443/x")]);
        let by_ip = event(3, &[(field::URL_ORIGINAL, "http://203.0.113.66/gate")]);
        let clean = event(4, &[(field::URL, "https://www.example.org/")]);
        let findings = task.scan(vec![by_url, by_host, by_ip, clean]).unwrap();
        let rules: Vec<(&str, Option<&str>)> = findings
            .iter()
            .map(|f| (f.rule.as_str(), f.evidence_value("indicator")))
            .collect();
        assert_eq!(
            rules,
            [
                (
                    "ioc-sweep/url-match",
                    Some("http://files.example/drop/payload.bin")
                ),
                ("ioc-sweep/domain-match", Some("evil.example")),
                ("ioc-sweep/ip-match", Some("203.0.113.66")),
            ]
        );
        assert_eq!(findings[1].evidence_value("field"), Some("url.full"));
    }

    #[test]
    fn a_request_without_host_header_is_not_read_as_one() {
        // The worker fills a missing `host` with the client's address: an
        // `http` record without a Host header then has `host` = `id.orig_h`.
        let mut task = task(&[]);
        let http = event(
            1,
            &[
                (field::ZEEK_PATH, "http"),
                (field::HOST, "203.0.113.66"),
                (field::ZEEK_ORIG_H, "203.0.113.66"),
                (field::ZEEK_URI, "/x"),
            ],
        );
        let findings = task.scan(vec![http]).unwrap();
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].rule, "ioc-sweep/ip-match");
        assert_eq!(
            findings[0].evidence_value("matches"),
            Some("ip 203.0.113.66 in ips (id.orig_h)")
        );
    }
}
