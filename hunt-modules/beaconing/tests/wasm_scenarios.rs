//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox over generated shards: a day of realistic Zeek `conn` and Sysmon
//! network-connection traffic from a small office (browsing, DNS and NTP to
//! the resolvers, DC polling, a CDN every workstation uses, chatty
//! keep-alives, a nightly backup), with and without two planted implants.

use quarry_hunt_modules::BEACONING;
use quarry_module_testkit::{self as testkit, Rng, evidence as ev};
use quarry_worker::runtime::TaskOutput;
use serde_json::{Value, json};

/// 2024-03-04T08:00:00Z.
const START_MS: i64 = 1_709_539_200_000;
const HOUR_MS: i64 = 3_600_000;
const WORKSTATIONS: u32 = 20;
const C2_ZEEK: &str = "203.0.113.66";
const C2_SYSMON: &str = "198.51.100.23";

fn ws(i: u32) -> String {
    format!("10.20.1.{}", 10 + i)
}

fn zeek_conn(rng: &mut Rng, t: i64, orig: &str, resp: &str, port: u16, service: &str) -> Value {
    json!({
        "_path": "conn",
        "ts": t as f64 / 1000.0,
        "uid": format!("C{:016x}", rng.next_u64()),
        "id.orig_h": orig,
        "id.orig_p": 49152 + rng.below(16000),
        "id.resp_h": resp,
        "id.resp_p": port,
        "proto": if port == 53 || port == 123 { "udp" } else { "tcp" },
        "service": service,
        "duration": rng.unit() * 2.0,
        "orig_bytes": 200 + rng.below(2000),
        "resp_bytes": 300 + rng.below(40000),
        "conn_state": "SF",
    })
}

fn zeek_dns(rng: &mut Rng, t: i64, orig: &str) -> Value {
    json!({
        "_path": "dns",
        "ts": t as f64 / 1000.0,
        "uid": format!("C{:016x}", rng.next_u64()),
        "id.orig_h": orig,
        "id.orig_p": 49152 + rng.below(16000),
        "id.resp_h": "10.20.0.53",
        "id.resp_p": 53,
        "proto": "udp",
        "query": "www.example.com",
        "qtype_name": "A",
    })
}

#[allow(clippy::too_many_arguments)]
fn sysmon_net(
    t: i64,
    host: &str,
    image: &str,
    src: &str,
    dst: &str,
    port: u16,
    name: &str,
) -> Value {
    json!({
        "@timestamp": quarry_sdk::time::format_rfc3339_ms(t),
        "EventID": 3,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Computer": host,
        "Image": image,
        "User": "CORP\\alice",
        "Protocol": "tcp",
        "Initiated": "true",
        "SourceIp": src,
        "SourcePort": "51234",
        "DestinationIp": dst,
        "DestinationPort": port,
        "DestinationHostname": name,
    })
}

/// A day of office traffic, plus the implants when `planted`.
fn traffic(planted: bool) -> Vec<Value> {
    let mut rng = Rng(0x5eed_beac);
    let mut events = Vec::new();
    let day = 10 * HOUR_MS;
    let web = [
        "93.184.216.34",
        "151.101.1.69",
        "140.82.114.4",
        "104.16.132.229",
        "172.217.16.142",
    ];
    for i in 0..WORKSTATIONS {
        let me = ws(i);
        // Browsing: bursty, exponential gaps.
        let mut t = START_MS + rng.below(600_000) as i64;
        while t < START_MS + day {
            let site = web[rng.below(web.len() as u64) as usize];
            events.push(zeek_conn(&mut rng, t, &me, site, 443, "ssl"));
            events.push(zeek_dns(&mut rng, t - 20, &me));
            t += rng.exp_ms(90_000.0);
        }
        // DNS and NTP to the resolvers: periodic but ignored ports.
        let mut t = START_MS + rng.below(64_000) as i64;
        while t < START_MS + day {
            events.push(zeek_conn(&mut rng, t, &me, "10.20.0.53", 53, "dns"));
            events.push(zeek_conn(&mut rng, t + 5, &me, "10.20.0.53", 123, ""));
            t += 64_000;
        }
        // Group policy and LDAP polling of the DC: periodic but private.
        let mut t = START_MS + rng.below(300_000) as i64;
        while t < START_MS + day {
            events.push(zeek_conn(&mut rng, t, &me, "10.20.0.10", 389, "ldap"));
            t += 300_000 + rng.below(2_000) as i64;
        }
        // Every workstation checks the same update CDN every 15 minutes:
        // periodic and public, but shared by all hosts.
        let mut t = START_MS + rng.below(900_000) as i64;
        while t < START_MS + day {
            events.push(zeek_conn(&mut rng, t, &me, "13.107.4.50", 443, "ssl"));
            t += 900_000 + rng.below(5_000) as i64;
        }
        // Sysmon on the workstation: the browser and Teams, irregular.
        let host = format!("WS{:02}.corp.example", i + 1);
        let mut t = START_MS + rng.below(60_000) as i64;
        while t < START_MS + day {
            events.push(sysmon_net(
                t,
                &host,
                "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
                &me,
                web[rng.below(5) as usize],
                443,
                "www.example.com",
            ));
            t += rng.exp_ms(240_000.0);
        }
    }
    // A chatty monitoring agent on one host: a keep-alive every 5 seconds.
    let mut t = START_MS;
    while t < START_MS + 2 * HOUR_MS {
        events.push(zeek_conn(&mut rng, t, &ws(3), "52.4.7.9", 8443, "ssl"));
        t += 5_000;
    }
    // The nightly backup: one upload, a handful of connections.
    for k in 0..6 {
        events.push(zeek_conn(
            &mut rng,
            START_MS + 9 * HOUR_MS + k * 1_000,
            &ws(0),
            "52.95.1.1",
            443,
            "ssl",
        ));
    }
    if planted {
        // Implant 1 (Zeek view): every 5 minutes ±10 %, a few missed beats.
        let mut t = START_MS + 1_234_567;
        let mut beat = 0;
        while t < START_MS + day {
            if beat % 11 != 10 {
                events.push(zeek_conn(&mut rng, t, &ws(7), C2_ZEEK, 443, "ssl"));
            }
            beat += 1;
            let jitter = (rng.unit() * 2.0 - 1.0) * 0.10 * 300_000.0;
            t += 300_000 + jitter as i64;
        }
        // Implant 2 (Sysmon view): rundll32 every 60 s ±3 %, for 3 hours.
        let mut t = START_MS + 4 * HOUR_MS;
        while t < START_MS + 7 * HOUR_MS {
            events.push(sysmon_net(
                t,
                "WS12.corp.example",
                "C:\\Windows\\System32\\rundll32.exe",
                &ws(11),
                C2_SYSMON,
                8080,
                "cdn-update.example.net",
            ));
            let jitter = (rng.unit() * 2.0 - 1.0) * 0.03 * 60_000.0;
            t += 60_000 + jitter as i64;
        }
    }
    // Shards are written in time order.
    events.sort_by(|a, b| event_time(a).total_cmp(&event_time(b)));
    events
}

fn event_time(event: &Value) -> f64 {
    event["ts"].as_f64().unwrap_or_else(|| {
        let text = event["@timestamp"].as_str().expect("a timestamp");
        quarry_sdk::time::parse_rfc3339_ms(text).expect("RFC 3339") as f64 / 1000.0
    })
}

/// The value of evidence item `key` of a host-side finding.
fn run(events: &[Value], params: &[(&str, &str)]) -> TaskOutput {
    let shard = testkit::shard_of_events("office", "office-network", events);
    let output = testkit::run(BEACONING.wasm, &shard, params);
    assert_eq!(output.events_scanned, events.len() as u64);
    // The any-of prefilter (a destination address) lets every connection
    // through: the generated `dns` records have one too.
    assert_eq!(output.events_matched, events.len() as u64);
    output
}

#[test]
fn planted_implants_are_found_with_interval_evidence() {
    let events = traffic(true);
    let output = run(&events, &[]);
    let found: Vec<(&str, Option<&str>, Option<&str>)> = output
        .findings
        .iter()
        .map(|f| {
            (
                f.entity.as_str(),
                ev(f, "destination"),
                ev(f, "destination_port"),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("ip:10.20.1.17", Some(C2_ZEEK), Some("443")),
            ("ip:10.20.1.21", Some(C2_SYSMON), Some("8080")),
        ],
        "{:#?}",
        output.findings
    );
    let zeek = &output.findings[0];
    assert_eq!(zeek.rule, "beaconing/periodic-connections");
    let median: f64 = ev(zeek, "median_interval_s").unwrap().parse().unwrap();
    assert!((median - 300.0).abs() < 15.0, "median {median}");
    let jitter: f64 = ev(zeek, "relative_mad").unwrap().parse().unwrap();
    assert!(jitter < 0.1, "jitter {jitter}");
    assert!(zeek.techniques.contains(&"T1573".to_owned()));
    assert!(!zeek.offsets.is_empty());

    let sysmon = &output.findings[1];
    assert_eq!(
        ev(sysmon, "processes"),
        Some("C:\\Windows\\System32\\rundll32.exe")
    );
    assert_eq!(
        ev(sysmon, "destination_names"),
        Some("cdn-update.example.net")
    );
    assert_eq!(ev(sysmon, "hosts"), Some("WS12.corp.example"));
    assert!(sysmon.techniques.contains(&"T1071.001".to_owned()));
    assert!(sysmon.title.contains("every ~60s"), "{}", sysmon.title);
}

#[test]
fn benign_office_traffic_is_quiet() {
    let events = traffic(false);
    let output = run(&events, &[]);
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
}

#[test]
fn the_shared_cdn_is_reported_only_when_hunters_lift_the_prevalence_limit() {
    // The same benign traffic with the prevalence filter lifted: the update
    // CDN every workstation polls is periodic, which shows the filter (and
    // not a blind detector) is what keeps the default run quiet.
    let events = traffic(false);
    let output = run(&events, &[("max_sources_per_destination", "1000")]);
    assert_eq!(
        output.findings.len(),
        WORKSTATIONS as usize,
        "{:#?}",
        output.findings
    );
    assert!(
        output
            .findings
            .iter()
            .all(|f| ev(f, "destination") == Some("13.107.4.50"))
    );
}
