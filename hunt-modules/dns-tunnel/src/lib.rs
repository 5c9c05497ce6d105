//! Hunt module `dns-tunnel`: DNS used as a tunnel or exfiltration channel:
//! long, high-entropy subdomain labels and unusual numbers of distinct
//! subdomains per registered domain (ATT&CK T1071.004, T1048).
//!
//! Reads Zeek `dns` logs (`query`, `qtype_name`, `id.orig_h` or
//! `id_orig_h`; records of other Zeek logs are skipped) and Sysmon DNS
//! queries (EventID 22: `QueryName`, `Image`). One finding per registered
//! domain at the end of the task. See [`detector`] for the logic.
//!
//! Prefilter: one any-of group, `query` or `QueryName` exists, so that only
//! DNS records reach the guest (the two sources have no field in common, so
//! a plain AND clause could not say this).

#![warn(missing_docs)]

pub mod detector;

use detector::{Config, Detector, Query, TECHNIQUES};
use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params, Predicate};

/// The module's name in the registry.
pub const NAME: &str = "dns-tunnel";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: shortest label that may be encoded data.
pub const PARAM_MIN_LABEL_LENGTH: &str = "min_label_length";
/// Parameter: smallest entropy (bits per character).
pub const PARAM_MIN_ENTROPY: &str = "min_entropy";
/// Parameter: encoded-looking queries a domain needs.
pub const PARAM_MIN_ENCODED_QUERIES: &str = "min_encoded_queries";
/// Parameter: distinct subdomains that are unusual on their own.
pub const PARAM_MAX_DISTINCT_SUBDOMAINS: &str = "max_distinct_subdomains";
/// Parameter: comma-separated domains never reported.
pub const PARAM_IGNORE_DOMAINS: &str = "ignore_domains";
/// Parameter: comma-separated domains of the organisation itself (its
/// Active Directory domain, internal zones): never tunnels.
pub const PARAM_OWN_DOMAINS: &str = "own_domains";
/// Parameter: clients asking for a domain that make a finding about it low
/// severity.
pub const PARAM_POPULAR_CLIENTS: &str = "popular_clients";

quarry_sdk::fields! {
    /// The event fields this module reads.
    pub mod field {
        /// Zeek: the name asked for.
        QUERY = "query",
        /// Zeek: the query type name.
        QTYPE_NAME = "qtype_name",
        /// Zeek: the client.
        ORIG_H = "id.orig_h",
        /// Zeek (some exporters): the client.
        ORIG_H_FLAT = "id_orig_h",
        /// Zeek: the log the record came from.
        ZEEK_PATH = "_path",
        /// Zeek (some exporters): the log the record came from.
        ZEEK_STREAM = "@stream",
        /// Windows event id (22 for Sysmon DNS queries).
        EVENT_ID = "EventID",
        /// Sysmon: the name asked for.
        QUERY_NAME = "QueryName",
        /// The canonical host of the event.
        HOST = "host",
    }
}

/// The module: a [`Detector`] per task.
#[derive(Debug)]
pub struct DnsTunnel {
    detector: Detector,
}

impl DnsTunnel {
    /// The detection configuration for the hunt's parameters.
    pub fn config(params: &Params) -> Result<Config, String> {
        params.ensure_known(&[
            PARAM_MIN_LABEL_LENGTH,
            PARAM_MIN_ENTROPY,
            PARAM_MIN_ENCODED_QUERIES,
            PARAM_MAX_DISTINCT_SUBDOMAINS,
            PARAM_IGNORE_DOMAINS,
            PARAM_OWN_DOMAINS,
            PARAM_POPULAR_CLIENTS,
        ])?;
        let d = Config::default();
        let min_entropy = params.f64_or(PARAM_MIN_ENTROPY, d.min_entropy)?;
        if !(0.0..=8.0).contains(&min_entropy) {
            return Err(format!(
                "parameter `{PARAM_MIN_ENTROPY}` must be a number from 0 to 8 (bits per character), got `{min_entropy}`"
            ));
        }
        Ok(Config {
            min_label_length: params.u64_in_range_or(
                PARAM_MIN_LABEL_LENGTH,
                d.min_label_length as u64,
                1..=63,
            )? as usize,
            min_entropy,
            min_encoded_queries: params.u64_in_range_or(
                PARAM_MIN_ENCODED_QUERIES,
                d.min_encoded_queries,
                1..=1_000_000,
            )?,
            max_distinct_subdomains: params.u64_in_range_or(
                PARAM_MAX_DISTINCT_SUBDOMAINS,
                d.max_distinct_subdomains as u64,
                1..=100_000,
            )? as usize,
            ignore_domains: domains(params, PARAM_IGNORE_DOMAINS),
            own_domains: domains(params, PARAM_OWN_DOMAINS),
            popular_clients: params.u64_in_range_or(
                PARAM_POPULAR_CLIENTS,
                d.popular_clients as u64,
                2..=MAX_POPULAR_CLIENTS,
            )? as usize,
        })
    }
}

/// Largest `popular_clients`: the detector tracks this many clients per
/// domain.
const MAX_POPULAR_CLIENTS: u64 = detector::MAX_SOURCES_PER_DOMAIN as u64;

/// A comma-separated list of domains, lowercase, without surrounding dots.
fn domains(params: &Params, name: &str) -> Vec<String> {
    params
        .list(name)
        .into_iter()
        .map(|d| d.trim_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect()
}

/// Reads the DNS query an event describes; `None` for other events.
pub fn query(event: &Event) -> Option<Query<'_>> {
    if let Some(name) = event.get_nonempty(field::QUERY) {
        let log = event.first_of(&[field::ZEEK_PATH, field::ZEEK_STREAM]);
        if log.is_some_and(|l| !l.eq_ignore_ascii_case("dns")) {
            return None;
        }
        return Some(Query {
            timestamp_ms: event.timestamp_ms,
            offset: event.offset,
            name,
            qtype: event.get_nonempty(field::QTYPE_NAME).filter(|&t| t != "-"),
            source: event.first_of(&[field::ORIG_H, field::ORIG_H_FLAT, field::HOST]),
        });
    }
    if event.get_u64(field::EVENT_ID) == Some(22) {
        return Some(Query {
            timestamp_ms: event.timestamp_ms,
            offset: event.offset,
            name: event.get_nonempty(field::QUERY_NAME)?,
            qtype: None,
            source: event.get_nonempty(field::HOST),
        });
    }
    None
}

impl Hunt for DnsTunnel {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "DNS tunnelling: long, high-entropy subdomain labels and unusual numbers of distinct subdomains per registered domain, from Zeek dns or Sysmon 22 events.",
            )
            .with_fields(field::NAMES)
            .with_any_of(vec![
                Predicate::exists(field::NAMES[field::QUERY.index()]),
                Predicate::exists(field::NAMES[field::QUERY_NAME.index()]),
            ])
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        Ok(DnsTunnel {
            detector: Detector::new(Self::config(params)?),
        })
    }

    fn scan(&mut self, batch: &[Event], _out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            if let Some(q) = query(event) {
                self.detector.observe(&q);
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let (findings, summary) = self.detector.finish();
        quarry_sdk::log::debug(&format!(
            "{} DNS queries ({} link-local, reverse, service discovery, own or ignored) over {} registered domains ({} beyond the domain limit); {} suspicious",
            summary.queries,
            summary.local,
            summary.domains,
            summary.dropped,
            findings.len()
        ));
        for finding in findings {
            out.emit(finding);
        }
    }
}

quarry_sdk::export_hunt!(DnsTunnel);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::{Field, MatchOp, Task};

    fn event(values: &[(Field, &str)]) -> Event {
        let mut v = vec![None; field::NAMES.len()];
        for &(f, text) in values {
            v[f.index()] = Some(text.to_owned());
        }
        Event::new(1_700_000_000_000, 1, v)
    }

    #[test]
    fn descriptor_and_parameters() {
        let d = Task::<DnsTunnel>::describe();
        assert_eq!(d.name, NAME);
        assert_eq!(d.techniques, ["T1071.004", "T1048"]);
        assert!(d.prefilter.is_empty());
        assert_eq!(d.any_of.len(), 1);
        let any_of: Vec<&str> = d.any_of[0].iter().map(|p| p.field.as_str()).collect();
        assert_eq!(any_of, ["query", "QueryName"]);
        assert!(d.any_of[0].iter().all(|p| p.op == MatchOp::Exists));
        assert_eq!(DnsTunnel::config(&Params::default()), Ok(Config::default()));
        let p = Params::from_pairs([("min_entropy", "9")]).unwrap();
        assert!(DnsTunnel::config(&p).unwrap_err().contains("from 0 to 8"));
        let p = Params::from_pairs([("ignore_domains", "Vendor.Example, b.example")]).unwrap();
        assert_eq!(
            DnsTunnel::config(&p).unwrap().ignore_domains,
            ["vendor.example", "b.example"]
        );
        let p = Params::from_pairs([("min_label_length", "64")]).unwrap();
        assert!(DnsTunnel::config(&p).is_err());
        let p = Params::from_pairs([
            ("own_domains", ".Corp.Example,lab.test"),
            ("popular_clients", "5"),
        ])
        .unwrap();
        let c = DnsTunnel::config(&p).unwrap();
        assert_eq!(c.own_domains, ["corp.example", "lab.test"]);
        assert_eq!(c.popular_clients, 5);
        let p = Params::from_pairs([("popular_clients", "65")]).unwrap();
        assert!(DnsTunnel::config(&p).is_err());
    }

    #[test]
    fn reads_zeek_and_sysmon_queries() {
        let zeek = event(&[
            (field::QUERY, "a.example.com"),
            (field::QTYPE_NAME, "TXT"),
            (field::ORIG_H_FLAT, "10.0.0.1"),
            (field::ZEEK_STREAM, "dns"),
        ]);
        let q = query(&zeek).unwrap();
        assert_eq!(
            (q.name, q.qtype, q.source),
            ("a.example.com", Some("TXT"), Some("10.0.0.1"))
        );
        let http = event(&[(field::QUERY, "a.example.com"), (field::ZEEK_PATH, "http")]);
        assert_eq!(query(&http), None);
        let sysmon = event(&[
            (field::EVENT_ID, "22"),
            (field::QUERY_NAME, "b.example.com"),
            (field::HOST, "ws1"),
        ]);
        assert_eq!(query(&sysmon).unwrap().source, Some("ws1"));
        assert_eq!(query(&event(&[(field::EVENT_ID, "1")])), None);
    }
}
