//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox over generated shards: a working day of Zeek `dns` (and `conn`)
//! records from an office (web browsing, Microsoft 365, CDNs with hashed
//! host names, reverse lookups, AD service records, a few long cloud-storage
//! names, mDNS / DNS-SD service discovery, cloud host names under the
//! platforms' private public suffixes, Sysmon DNS events), with and without
//! a planted dnscat2-style tunnel under a `co.uk` domain.

use quarry_hunt_modules::DNS_TUNNEL;
use quarry_module_testkit::{self as testkit, Rng, evidence as ev};
use quarry_sdk::time::format_rfc3339_ms;
use quarry_worker::runtime::TaskOutput;
use quarry_worker::runtime::types::Severity;
use serde_json::{Value, json};

/// 2024-03-04T08:00:00Z.
const START_MS: i64 = 1_709_539_200_000;
const TUNNEL_CLIENT: &str = "10.20.1.30";
fn zeek_dns(rng: &mut Rng, t: i64, client: &str, query: &str, qtype: &str) -> Value {
    json!({
        "_path": "dns",
        "ts": t as f64 / 1000.0,
        "uid": format!("C{:016x}", rng.next_u64()),
        "id.orig_h": client,
        "id.orig_p": 49152 + rng.below(16000),
        "id.resp_h": "10.20.0.53",
        "id.resp_p": 53,
        "proto": "udp",
        "trans_id": rng.below(65536),
        "query": query,
        "qclass": 1,
        "qclass_name": "C_INTERNET",
        "qtype_name": qtype,
        "rcode_name": "NOERROR",
        "AA": false,
        "RD": true,
        "RA": true,
    })
}

fn office(rng: &mut Rng) -> Vec<Value> {
    let sites = [
        "www.bbc.co.uk",
        "news.bbc.co.uk",
        "www.google.com",
        "mail.google.com",
        "outlook.office365.com",
        "login.microsoftonline.com",
        "teams.microsoft.com",
        "www.github.com",
        "api.github.com",
        "www.amazon.co.uk",
        "images-eu.ssl-images-amazon.com",
        "www.gov.uk",
        "corp.example",
        "_ldap._tcp.dc._msdcs.corp.example",
        "_kerberos._tcp.corp.example",
        "wpad.corp.example",
        "this-is-a-rather-long-but-human-made-hostname.intranet.corp.example",
    ];
    let mut events = Vec::new();
    for client in 10..40u32 {
        let me = format!("10.20.1.{client}");
        let mut t = START_MS + rng.below(60_000) as i64;
        while t < START_MS + 9 * 3_600_000 {
            let query = match rng.below(10) {
                // CDN edge names with short hashes.
                0 => format!("d{}.cloudfront.net", rng.alnum(13)),
                1 => format!("e{}.dscb.akamaiedge.net", rng.below(99_999)),
                // Reverse lookups.
                2 => format!("{}.{}.20.10.in-addr.arpa", rng.below(255), rng.below(4)),
                // mDNS / DNS-SD: casting devices announce hex instance names.
                4 => format!("chromecast-{}._googlecast._tcp.local", rng.hex(32)),
                // Cloud host names that encode addresses and load balancers'
                // generated names, under private suffixes.
                5 => format!(
                    "ec2-{}-{}-{}-{}.compute-1.amazonaws.com",
                    rng.below(255),
                    rng.below(255),
                    rng.below(255),
                    rng.below(255)
                ),
                6 => format!(
                    "internal-{}-{}.eu-west-1.elb.amazonaws.com",
                    rng.hex(28),
                    1_000_000_000 + rng.below(1_000_000_000)
                ),
                // Microsoft 365 tenants and regions: many but bounded names.
                3 => format!(
                    "{}-{}.res.office365.com",
                    ["eur", "nam", "apc"][rng.below(3) as usize],
                    rng.below(60)
                ),
                _ => sites[rng.below(sites.len() as u64) as usize].to_owned(),
            };
            let qtype = if query.starts_with('_') || query.contains("._tcp.") {
                "SRV"
            } else if query.ends_with(".arpa") {
                "PTR"
            } else {
                "A"
            };
            events.push(zeek_dns(rng, t, &me, &query, qtype));
            // The connection that follows, to show other Zeek logs are skipped.
            if rng.below(4) == 0 {
                events.push(json!({"_path": "conn", "ts": (t + 30) as f64 / 1000.0, "id.orig_h": me, "id.resp_h": "93.184.216.34", "id.resp_p": 443, "proto": "tcp"}));
            }
            t += 5_000 + rng.below(120_000) as i64;
        }
    }
    // A handful of long signed cloud-storage names: encoded-looking, but few.
    for k in 0..5 {
        let name = format!("{}-ondemand.storage.googleapis.com", rng.hex(40));
        events.push(zeek_dns(
            rng,
            START_MS + k * 600_000,
            "10.20.1.15",
            &name,
            "A",
        ));
    }
    // Sysmon DNS events from one workstation.
    for k in 0..50 {
        events.push(json!({
            "@timestamp": format_rfc3339_ms(START_MS + k * 60_000 + 7),
            "EventID": 22,
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Computer": "WS05.corp.example",
            "QueryName": sites[k as usize % sites.len()],
            "Image": "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        }));
    }
    events
}

/// dnscat2-style: hex-encoded chunks in two labels, TXT and CNAME queries.
fn tunnel(rng: &mut Rng) -> Vec<Value> {
    let mut events = Vec::new();
    let mut t = START_MS + 2 * 3_600_000;
    for k in 0..250 {
        let name = format!("{}.{}.cdn.tunnel-ops.co.uk", rng.hex(60), rng.hex(44));
        let qtype = if k % 3 == 0 { "CNAME" } else { "TXT" };
        events.push(zeek_dns(rng, t, TUNNEL_CLIENT, &name, qtype));
        t += 200 + rng.below(3_000) as i64;
    }
    events
}

fn shard(planted: bool) -> Vec<Value> {
    let mut rng = Rng(0xd15_7e11);
    let mut events = office(&mut rng);
    if planted {
        events.extend(tunnel(&mut rng));
    }
    let time = |e: &Value| {
        e["ts"].as_f64().map_or_else(
            || quarry_sdk::time::parse_rfc3339_ms(e["@timestamp"].as_str().unwrap()).unwrap(),
            |ts| (ts * 1000.0) as i64,
        )
    };
    events.sort_by_key(time);
    events
}

fn run(events: &[Value], params: &[(&str, &str)]) -> TaskOutput {
    let shard = testkit::shard_of_events("dns", "office-dns", events);
    let output = testkit::run(DNS_TUNNEL.wasm, &shard, params);
    assert_eq!(output.events_scanned, events.len() as u64);
    // The any-of prefilter (`query` or `QueryName`) keeps the `conn`
    // records away from the guest.
    let queries = events
        .iter()
        .filter(|e| e.get("query").is_some() || e.get("QueryName").is_some())
        .count() as u64;
    assert!(
        queries < events.len() as u64,
        "the shard mixes in conn records"
    );
    assert_eq!(output.events_matched, queries);
    output
}

#[test]
fn planted_tunnel_is_found_under_its_registered_domain() {
    let output = run(&shard(true), &[]);
    assert_eq!(output.findings.len(), 1, "{:#?}", output.findings);
    let f = &output.findings[0];
    assert_eq!(f.rule, "dns-tunnel/suspicious-domain");
    assert_eq!(f.entity, "domain:tunnel-ops.co.uk");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(ev(f, "queries"), Some("250"));
    assert_eq!(ev(f, "encoded_queries"), Some("250"));
    assert_eq!(ev(f, "distinct_subdomains"), Some("250"));
    assert_eq!(ev(f, "max_label_length"), Some("60"));
    assert_eq!(ev(f, "sources"), Some(TUNNEL_CLIENT));
    assert_eq!(ev(f, "clients"), Some("1"));
    assert_eq!(ev(f, "encoded_share"), Some("1.00"));
    assert_eq!(ev(f, "query_types"), Some("CNAME=84, TXT=166"));
    assert!(
        ev(f, "examples")
            .unwrap()
            .ends_with(".cdn.tunnel-ops.co.uk")
    );
    assert_eq!(f.techniques, ["T1048", "T1071.004"]);
    assert_eq!(f.offsets.len(), 50);
}

#[test]
fn office_dns_is_quiet() {
    let output = run(&shard(false), &[]);
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
}

#[test]
fn lower_thresholds_surface_the_benign_look_alikes() {
    // With hunters' thresholds lowered, the long cloud-storage names (5
    // queries, under the public suffix `googleapis.com`, so grouped as
    // `storage.googleapis.com`) and the CDN edge with many hashed names show
    // up: the defaults are what keep them quiet, not blindness. CloudFront
    // distributions and EC2 host names are each their own registered domain
    // (private public suffixes), and mDNS never counts, whatever the
    // thresholds.
    let output = run(
        &shard(false),
        &[
            ("min_encoded_queries", "5"),
            ("max_distinct_subdomains", "20"),
        ],
    );
    let entities: Vec<&str> = output.findings.iter().map(|f| f.entity.as_str()).collect();
    assert!(
        entities.contains(&"domain:storage.googleapis.com"),
        "{entities:?}"
    );
    assert!(
        entities.contains(&"domain:dscb.akamaiedge.net"),
        "{entities:?}"
    );
    assert!(
        !entities.iter().any(|e| e.ends_with("cloudfront.net")
            || e.contains("amazonaws")
            || e.ends_with("local")),
        "{entities:?}"
    );
    // The CDN edge is asked for by every office client: popular, so low.
    let edge = output
        .findings
        .iter()
        .find(|f| f.entity == "domain:dscb.akamaiedge.net")
        .unwrap();
    assert_eq!(edge.severity, Severity::Low, "{edge:#?}");
    assert_eq!(ev(edge, "clients"), Some("30"));
}
