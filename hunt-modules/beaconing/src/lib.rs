//! Hunt module `beaconing`: periodic outbound connections per (source,
//! destination, port), the call-home rhythm of implants (ATT&CK T1071,
//! T1071.001, T1573).
//!
//! Reads network connections from Zeek `conn` logs (`id.orig_h`, `id.resp_h`,
//! `id.resp_p`, or their `id_orig_h` spellings), Sysmon network connections
//! (EventID 3: `SourceIp`, `DestinationIp`, `DestinationPort`,
//! `DestinationHostname`, `Image`) and Windows Filtering Platform connection
//! events (5156: `SourceAddress`, `DestAddress`, `DestPort`). Inbound Sysmon
//! and WFP connections and Zeek logs other than `conn` are skipped.
//!
//! Finding `beaconing/periodic-connections`, one per pair, at the end of the
//! task, with the interval statistics as evidence. See [`detector`] for the
//! logic and `docs/modules.md` for the parameters.
//!
//! Prefilter: one any-of group, so that only events with a destination
//! address (`id.resp_h`, `id_resp_h`, `DestinationIp` or `DestAddress`)
//! reach the guest; the sources have no field in common, so a plain
//! (AND) clause could not say this.

#![warn(missing_docs)]

pub mod detector;

use detector::{Config, Connection, Detector, TECHNIQUES};
use quarry_sdk::time::SECOND_MS;
use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params, Predicate};

/// The module's name in the registry.
pub const NAME: &str = "beaconing";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: fewest connections a pair needs.
pub const PARAM_MIN_CONNECTIONS: &str = "min_connections";
/// Parameter: shortest typical gap, in seconds.
pub const PARAM_MIN_INTERVAL: &str = "min_interval_seconds";
/// Parameter: longest typical gap, in seconds.
pub const PARAM_MAX_INTERVAL: &str = "max_interval_seconds";
/// Parameter: largest relative MAD of the gaps (0–1).
pub const PARAM_MAX_JITTER: &str = "max_jitter";
/// Parameter: smallest share of regular gaps (0–1).
pub const PARAM_MIN_REGULAR_SHARE: &str = "min_regular_share";
/// Parameter: destinations with more distinct sources are ignored.
pub const PARAM_MAX_SOURCES: &str = "max_sources_per_destination";
/// Parameter: connections this close (ms) to the previous one count as one.
pub const PARAM_MERGE_MS: &str = "merge_ms";
/// Parameter: comma-separated destination ports to ignore.
pub const PARAM_IGNORE_PORTS: &str = "ignore_ports";
/// Parameter: comma-separated destinations to ignore (`.domain` suffixes).
pub const PARAM_IGNORE_DESTINATIONS: &str = "ignore_destinations";
/// Parameter: whether private destinations are reported.
pub const PARAM_INCLUDE_PRIVATE: &str = "include_private";

const PARAMS: [&str; 10] = [
    PARAM_MIN_CONNECTIONS,
    PARAM_MIN_INTERVAL,
    PARAM_MAX_INTERVAL,
    PARAM_MAX_JITTER,
    PARAM_MIN_REGULAR_SHARE,
    PARAM_MAX_SOURCES,
    PARAM_MERGE_MS,
    PARAM_IGNORE_PORTS,
    PARAM_IGNORE_DESTINATIONS,
    PARAM_INCLUDE_PRIVATE,
];

quarry_sdk::fields! {
    /// The event fields this module reads.
    pub mod field {
        /// Zeek: originating address.
        ZEEK_ORIG_H = "id.orig_h",
        /// Zeek: responding address.
        ZEEK_RESP_H = "id.resp_h",
        /// Zeek: responding port.
        ZEEK_RESP_P = "id.resp_p",
        /// Zeek (some exporters): originating address.
        ZEEK_ORIG_H_FLAT = "id_orig_h",
        /// Zeek (some exporters): responding address.
        ZEEK_RESP_H_FLAT = "id_resp_h",
        /// Zeek (some exporters): responding port.
        ZEEK_RESP_P_FLAT = "id_resp_p",
        /// Zeek: the log the record came from (`conn`, `dns`, …).
        ZEEK_PATH = "_path",
        /// Zeek (some exporters): the log the record came from.
        ZEEK_STREAM = "@stream",
        /// Windows event id (3 for Sysmon, 5156 for WFP).
        EVENT_ID = "EventID",
        /// Sysmon: originating address.
        SOURCE_IP = "SourceIp",
        /// Sysmon: destination address.
        DESTINATION_IP = "DestinationIp",
        /// Sysmon: destination port.
        DESTINATION_PORT = "DestinationPort",
        /// Sysmon: destination host name, when resolved.
        DESTINATION_HOSTNAME = "DestinationHostname",
        /// Sysmon: whether this host initiated the connection.
        INITIATED = "Initiated",
        /// Sysmon: the process that connected.
        IMAGE = "Image",
        /// WFP: local address.
        SOURCE_ADDRESS = "SourceAddress",
        /// WFP: remote address.
        DEST_ADDRESS = "DestAddress",
        /// WFP: remote port.
        DEST_PORT = "DestPort",
        /// WFP: `%%14593` outbound, `%%14592` inbound.
        DIRECTION = "Direction",
        /// WFP: the process that connected.
        APPLICATION = "Application",
        /// The canonical host of the event.
        HOST = "host",
    }
}

/// WFP's inbound direction.
const WFP_INBOUND: &str = "%%14592";

/// The module: a [`Detector`] per task.
#[derive(Debug)]
pub struct Beaconing {
    detector: Detector,
}

impl Beaconing {
    /// The detection configuration for the hunt's parameters.
    pub fn config(params: &Params) -> Result<Config, String> {
        params.ensure_known(&PARAMS)?;
        let d = Config::default();
        let min_connections = params.u64_in_range_or(
            PARAM_MIN_CONNECTIONS,
            d.min_connections as u64,
            3..=MAX_TIMES,
        )?;
        let min_interval = params.u64_in_range_or(
            PARAM_MIN_INTERVAL,
            (d.min_interval_ms / SECOND_MS) as u64,
            0..=7 * 86_400,
        )?;
        let max_interval = params.u64_in_range_or(
            PARAM_MAX_INTERVAL,
            (d.max_interval_ms / SECOND_MS) as u64,
            1..=30 * 86_400,
        )?;
        if min_interval > max_interval {
            return Err(format!(
                "parameter `{PARAM_MIN_INTERVAL}` ({min_interval}) must not exceed `{PARAM_MAX_INTERVAL}` ({max_interval})"
            ));
        }
        let fraction = |name: &str, default: f64| -> Result<f64, String> {
            let value = params.f64_or(name, default)?;
            if (0.0..=1.0).contains(&value) {
                Ok(value)
            } else {
                Err(format!(
                    "parameter `{name}` must be a number from 0 to 1, got `{value}`"
                ))
            }
        };
        let max_sources = params.u64_in_range_or(
            PARAM_MAX_SOURCES,
            d.max_sources_per_destination as u64,
            1..=1_000_000,
        )?;
        let merge_ms = params.u64_in_range_or(PARAM_MERGE_MS, d.merge_ms as u64, 0..=3_600_000)?;
        let ignore_ports = match params.get(PARAM_IGNORE_PORTS) {
            None => d.ignore_ports.clone(),
            Some(_) => params
                .list(PARAM_IGNORE_PORTS)
                .into_iter()
                .map(|p| {
                    p.parse::<u16>().map_err(|_| {
                        format!("parameter `{PARAM_IGNORE_PORTS}` must list ports (0-65535) separated by commas, got `{p}`")
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Config {
            min_connections: min_connections as usize,
            min_interval_ms: min_interval as i64 * SECOND_MS,
            max_interval_ms: max_interval as i64 * SECOND_MS,
            max_jitter: fraction(PARAM_MAX_JITTER, d.max_jitter)?,
            min_regular_share: fraction(PARAM_MIN_REGULAR_SHARE, d.min_regular_share)?,
            max_sources_per_destination: max_sources as usize,
            merge_ms: merge_ms as i64,
            ignore_ports,
            ignore_destinations: params
                .list(PARAM_IGNORE_DESTINATIONS)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            include_private: params.bool_or(PARAM_INCLUDE_PRIVATE, d.include_private)?,
        })
    }
}

/// Upper bound of `min_connections`: no pair keeps more times than this.
const MAX_TIMES: u64 = detector::MAX_TIMES_PER_PAIR as u64;

/// `field` unless absent, blank or `-`.
fn meaningful(event: &Event, field: Field) -> Option<&str> {
    event.get_nonempty(field).filter(|&v| v != "-")
}

fn port(event: &Event, fields: &[Field]) -> Option<u16> {
    fields
        .iter()
        .find_map(|&f| event.get_u64(f))
        .and_then(|p| u16::try_from(p).ok())
}

/// Reads the outbound connection an event describes; `None` for other
/// events (other Zeek logs, inbound connections, other Windows events).
pub fn connection(event: &Event) -> Option<Connection<'_>> {
    let host = meaningful(event, field::HOST);
    // Zeek conn.
    if let Some(source) = event.first_of(&[field::ZEEK_ORIG_H, field::ZEEK_ORIG_H_FLAT]) {
        let log = event.first_of(&[field::ZEEK_PATH, field::ZEEK_STREAM]);
        if log.is_some_and(|l| !l.eq_ignore_ascii_case("conn")) {
            return None;
        }
        return Some(Connection {
            timestamp_ms: event.timestamp_ms,
            offset: event.offset,
            source,
            destination: event.first_of(&[field::ZEEK_RESP_H, field::ZEEK_RESP_H_FLAT])?,
            port: port(event, &[field::ZEEK_RESP_P, field::ZEEK_RESP_P_FLAT]),
            destination_name: None,
            process: None,
            host,
        });
    }
    match event.get_u64(field::EVENT_ID)? {
        3 => {
            if event.get_bool(field::INITIATED) == Some(false) {
                return None;
            }
            Some(Connection {
                timestamp_ms: event.timestamp_ms,
                offset: event.offset,
                source: meaningful(event, field::SOURCE_IP)?,
                destination: meaningful(event, field::DESTINATION_IP)?,
                port: port(event, &[field::DESTINATION_PORT]),
                destination_name: meaningful(event, field::DESTINATION_HOSTNAME),
                process: meaningful(event, field::IMAGE),
                host,
            })
        }
        5156 => {
            if event.get_nonempty(field::DIRECTION) == Some(WFP_INBOUND) {
                return None;
            }
            Some(Connection {
                timestamp_ms: event.timestamp_ms,
                offset: event.offset,
                source: meaningful(event, field::SOURCE_ADDRESS)?,
                destination: meaningful(event, field::DEST_ADDRESS)?,
                port: port(event, &[field::DEST_PORT]),
                destination_name: None,
                process: meaningful(event, field::APPLICATION),
                host,
            })
        }
        _ => None,
    }
}

impl Hunt for Beaconing {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Periodic outbound connections (low jitter in inter-arrival times) per source/destination pair, from Zeek conn, Sysmon 3 or WFP 5156 events.",
            )
            .with_fields(field::NAMES)
            .with_any_of(
                [
                    field::ZEEK_RESP_H,
                    field::ZEEK_RESP_H_FLAT,
                    field::DESTINATION_IP,
                    field::DEST_ADDRESS,
                ]
                .iter()
                .map(|f| Predicate::exists(field::NAMES[f.index()]))
                .collect(),
            )
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        Ok(Beaconing {
            detector: Detector::new(Self::config(params)?),
        })
    }

    fn scan(&mut self, batch: &[Event], _out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            if let Some(c) = connection(event) {
                self.detector.observe(&c);
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let (findings, summary) = self.detector.finish();
        quarry_sdk::log::debug(&format!(
            "{} outbound connections over {} pairs; {} pairs judged, {} left out as shared destinations, {} connections beyond the pair limit; {} beacons",
            summary.connections,
            summary.pairs,
            summary.pairs_judged,
            summary.pairs_shared_destination,
            summary.dropped_connections,
            findings.len()
        ));
        if summary.dropped_connections > 0 {
            quarry_sdk::log::warn(&format!(
                "{} connections of pairs beyond the first {} were not analysed",
                summary.dropped_connections,
                detector::MAX_PAIRS
            ));
        }
        for finding in findings {
            out.emit(finding);
        }
    }
}

quarry_sdk::export_hunt!(Beaconing);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::{MatchOp, Task};

    fn event(offset: u64, t: i64, values: &[(Field, &str)]) -> Event {
        let mut v = vec![None; field::NAMES.len()];
        for &(f, text) in values {
            v[f.index()] = Some(text.to_owned());
        }
        Event::new(t, offset, v)
    }

    #[test]
    fn descriptor_declares_fields_and_techniques() {
        let d = Task::<Beaconing>::describe();
        assert_eq!(d.name, "beaconing");
        assert!(d.fields.iter().any(|f| f == "id.resp_h"));
        assert!(d.fields.iter().any(|f| f == "DestinationIp"));
        assert!(d.prefilter.is_empty());
        let any_of: Vec<(&str, MatchOp)> = d.any_of[0]
            .iter()
            .map(|p| (p.field.as_str(), p.op))
            .collect();
        assert_eq!(
            any_of,
            [
                ("id.resp_h", MatchOp::Exists),
                ("id_resp_h", MatchOp::Exists),
                ("DestinationIp", MatchOp::Exists),
                ("DestAddress", MatchOp::Exists)
            ]
        );
        assert_eq!(d.any_of.len(), 1);
        assert_eq!(d.techniques, ["T1071", "T1071.001", "T1573"]);
    }

    #[test]
    fn parameters_have_defaults_and_clear_errors() {
        assert_eq!(Beaconing::config(&Params::default()), Ok(Config::default()));
        let p = Params::from_pairs([
            ("min_connections", "6"),
            ("max_jitter", "0.3"),
            ("ignore_ports", "443, 80"),
            ("ignore_destinations", ".corp.example,8.8.8.8"),
            ("include_private", "true"),
        ])
        .unwrap();
        let c = Beaconing::config(&p).unwrap();
        assert_eq!(c.min_connections, 6);
        assert_eq!(c.max_jitter, 0.3);
        assert_eq!(c.ignore_ports.into_iter().collect::<Vec<_>>(), [80, 443]);
        assert_eq!(c.ignore_destinations, [".corp.example", "8.8.8.8"]);
        assert!(c.include_private);
        let err = |pairs: &[(&str, &str)]| {
            Beaconing::config(&Params::from_pairs(pairs.iter().copied()).unwrap()).unwrap_err()
        };
        assert_eq!(
            err(&[("max_jitter", "2")]),
            "parameter `max_jitter` must be a number from 0 to 1, got `2`"
        );
        assert_eq!(
            err(&[("ignore_ports", "https")]),
            "parameter `ignore_ports` must list ports (0-65535) separated by commas, got `https`"
        );
        assert!(
            err(&[
                ("min_interval_seconds", "600"),
                ("max_interval_seconds", "60")
            ])
            .contains("must not exceed")
        );
        assert!(err(&[("period", "1")]).starts_with("unknown parameter `period`"));
        assert!(err(&[("min_connections", "2")]).contains("from 3 to"));
    }

    #[test]
    fn reads_zeek_sysmon_and_wfp_connections() {
        let zeek = event(
            1,
            5,
            &[
                (field::ZEEK_ORIG_H, "10.0.0.1"),
                (field::ZEEK_RESP_H, "1.2.3.4"),
                (field::ZEEK_RESP_P, "443"),
                (field::ZEEK_PATH, "conn"),
            ],
        );
        let c = connection(&zeek).unwrap();
        assert_eq!(
            (c.source, c.destination, c.port),
            ("10.0.0.1", "1.2.3.4", Some(443))
        );
        let flat = event(
            1,
            5,
            &[
                (field::ZEEK_ORIG_H_FLAT, "10.0.0.1"),
                (field::ZEEK_RESP_H_FLAT, "1.2.3.4"),
                (field::ZEEK_STREAM, "conn"),
            ],
        );
        assert_eq!(connection(&flat).unwrap().port, None);
        let zeek_dns = event(
            1,
            5,
            &[
                (field::ZEEK_ORIG_H, "10.0.0.1"),
                (field::ZEEK_RESP_H, "1.2.3.4"),
                (field::ZEEK_PATH, "dns"),
            ],
        );
        assert_eq!(connection(&zeek_dns), None);

        let sysmon = event(
            2,
            5,
            &[
                (field::EVENT_ID, "3"),
                (field::SOURCE_IP, "10.0.0.2"),
                (field::DESTINATION_IP, "5.6.7.8"),
                (field::DESTINATION_PORT, "8443"),
                (field::DESTINATION_HOSTNAME, "cdn.example"),
                (field::IMAGE, "C:\\x.exe"),
                (field::INITIATED, "true"),
                (field::HOST, "ws1"),
            ],
        );
        let c = connection(&sysmon).unwrap();
        assert_eq!(
            (c.destination_name, c.process, c.host),
            (Some("cdn.example"), Some("C:\\x.exe"), Some("ws1"))
        );
        let inbound = event(
            2,
            5,
            &[
                (field::EVENT_ID, "3"),
                (field::SOURCE_IP, "10.0.0.2"),
                (field::DESTINATION_IP, "5.6.7.8"),
                (field::INITIATED, "false"),
            ],
        );
        assert_eq!(connection(&inbound), None);

        let wfp = event(
            3,
            5,
            &[
                (field::EVENT_ID, "5156"),
                (field::SOURCE_ADDRESS, "10.0.0.3"),
                (field::DEST_ADDRESS, "9.9.9.9"),
                (field::DEST_PORT, "80"),
                (field::DIRECTION, "%%14593"),
            ],
        );
        assert_eq!(connection(&wfp).unwrap().destination, "9.9.9.9");
        let wfp_in = event(
            3,
            5,
            &[
                (field::EVENT_ID, "5156"),
                (field::SOURCE_ADDRESS, "10.0.0.3"),
                (field::DEST_ADDRESS, "9.9.9.9"),
                (field::DIRECTION, "%%14592"),
            ],
        );
        assert_eq!(connection(&wfp_in), None);
        assert_eq!(connection(&event(4, 5, &[(field::EVENT_ID, "4624")])), None);
    }

    #[test]
    fn task_reports_a_beacon_at_finish() {
        let mut task = Task::<Beaconing>::new();
        task.init(vec![]).unwrap();
        let batch: Vec<Event> = (0..20)
            .map(|i| {
                event(
                    i,
                    1_700_000_000_000 + i as i64 * 300_000,
                    &[
                        (field::ZEEK_ORIG_H, "10.0.0.9"),
                        (field::ZEEK_RESP_H, "198.51.100.7"),
                        (field::ZEEK_RESP_P, "80"),
                    ],
                )
            })
            .collect();
        assert!(task.scan(batch).unwrap().is_empty());
        let output = task.finish().unwrap();
        assert_eq!(output.findings.len(), 1);
        assert!(
            output.findings[0].title.contains("every ~5m"),
            "{}",
            output.findings[0].title
        );
    }
}
