//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox over a generated shard of mixed telemetry from an office (Sysmon
//! process starts with hashes, network connections and DNS queries, Zeek
//! `conn`, `dns`, `http`, `ssl` and `files` records, proxy logs, Security
//! logons, events with no indicator at all), with and without a planted
//! intrusion whose indicators are in the intel sets shipped with the hunt
//! as `intel.<set>` parameters. Look-alikes of the indicators are in both.

use quarry_hunt_modules::IOC_SWEEP;
use quarry_module_testkit::{self as testkit, Rng, evidence as ev};
use quarry_sdk::time::format_rfc3339_ms;
use quarry_worker::runtime::TaskOutput;
use quarry_worker::runtime::types::Severity;
use serde_json::{Value, json};

/// 2024-03-04T08:00:00Z.
const START_MS: i64 = 1_709_539_200_000;
const DROPPER_SHA256: &str = "8f3c1b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const PAYLOAD_MD5: &str = "d41d8cd98f00b204e9800998ecf8427f";
const C2_IP: &str = "203.0.113.99";
const C2_DOMAIN: &str = "evil-c2.example";

/// The intel of the hunt: defanged and commented as feeds publish it.
fn intel() -> Vec<(&'static str, String)> {
    vec![
        (
            "intel.hashes",
            format!(
                "# vendor feed 2024-03\n{}\n{PAYLOAD_MD5}\n",
                DROPPER_SHA256.to_uppercase()
            ),
        ),
        (
            "intel.ips",
            format!("{}, 198.51.100.200", C2_IP.replace('.', "[.]")),
        ),
        (
            "intel.domains",
            "evil-c2[.]example\nother-bad.example\n".to_owned(),
        ),
        (
            "intel.urls",
            "hxxp://files.evil-c2[.]example/stage2.bin\n".to_owned(),
        ),
    ]
}

fn ts(t: i64) -> String {
    format_rfc3339_ms(t)
}

fn sysmon_process(t: i64, host: &str, image: &str, hashes: &str, nested: bool) -> Value {
    let data = json!({
        "Image": image,
        "CommandLine": format!("\"{image}\""),
        "User": "CORP\\alice",
        "Hashes": hashes,
    });
    if nested {
        json!({"@timestamp": ts(t), "EventID": 1, "Computer": host, "EventData": data})
    } else {
        let mut doc = json!({"@timestamp": ts(t), "EventID": 1, "Computer": host});
        if let (Value::Object(doc), Value::Object(data)) = (&mut doc, data) {
            doc.extend(data);
        }
        doc
    }
}

fn sysmon_network(t: i64, host: &str, src: &str, dst: &str, name: &str) -> Value {
    json!({
        "@timestamp": ts(t), "EventID": 3, "Computer": host,
        "Image": "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        "SourceIp": src, "DestinationIp": dst, "DestinationPort": 443,
        "DestinationHostname": name,
    })
}

fn sysmon_dns(t: i64, host: &str, name: &str) -> Value {
    json!({
        "@timestamp": ts(t), "EventID": 22, "Computer": host,
        "QueryName": name, "QueryResults": "::ffff:93.184.216.34;",
        "Image": "C:\\Windows\\System32\\svchost.exe",
    })
}

fn zeek(path: &str, t: i64, orig: &str, resp: &str, port: u16, extra: Value) -> Value {
    let mut doc = json!({
        "_path": path, "ts": t as f64 / 1000.0, "uid": format!("C{t:x}"),
        "id.orig_h": orig, "id.orig_p": 50000, "id.resp_h": resp, "id.resp_p": port,
    });
    if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
        doc.extend(extra);
    }
    doc
}

fn proxy(t: i64, client: &str, url: &str) -> Value {
    json!({"@timestamp": ts(t), "source": "proxy", "client_ip": client, "url": url, "status": 200})
}

/// A morning of office telemetry, plus the intrusion when `planted`.
fn telemetry(planted: bool) -> Vec<Value> {
    let mut rng = Rng(0x5eed_10c5);
    let mut events = Vec::new();
    let sites = [
        ("www.example.org", "93.184.216.34"),
        ("login.microsoftonline.com", "20.190.160.1"),
        ("notevil-c2.example", "192.0.2.80"),
        ("evil-c2.example.com", "192.0.2.81"),
    ];
    let images = [
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        "C:\\Windows\\explorer.exe",
    ];
    for i in 0..60u64 {
        let t = START_MS + i as i64 * 60_000 + rng.below(50_000) as i64;
        let host = format!("WS{:02}.corp.example", i % 10);
        let ip = format!("10.20.1.{}", 10 + i % 10);
        let (name, addr) = sites[rng.below(sites.len() as u64) as usize];
        let image = images[rng.below(images.len() as u64) as usize];
        let hashes = format!(
            "SHA1={},MD5={},SHA256={},IMPHASH=00000000000000000000000000000000",
            rng.hex(40),
            rng.hex(32),
            rng.hex(64)
        );
        events.push(sysmon_process(t, &host, image, &hashes, i % 2 == 0));
        events.push(sysmon_network(t + 1, &host, &ip, addr, name));
        events.push(sysmon_dns(t + 2, &host, name));
        events.push(zeek(
            "conn",
            t + 3,
            &ip,
            addr,
            443,
            json!({"proto": "tcp", "service": "ssl"}),
        ));
        events.push(zeek(
            "dns",
            t + 4,
            &ip,
            "10.20.0.53",
            53,
            json!({"query": name, "qtype_name": "A"}),
        ));
        events.push(zeek(
            "ssl",
            t + 5,
            &ip,
            addr,
            443,
            json!({"server_name": name, "version": "TLSv13"}),
        ));
        events.push(zeek(
            "http",
            t + 6,
            &ip,
            addr,
            80,
            json!({"method": "GET", "host": name, "uri": "/stage2.bin", "user_agent": "Mozilla/5.0"}),
        ));
        events.push(zeek(
            "files",
            t + 7,
            addr,
            &ip,
            80,
            json!({"source": "HTTP", "mime_type": "text/html", "md5": rng.hex(32), "sha1": rng.hex(40)}),
        ));
        events.push(proxy(
            t + 8,
            &ip,
            &format!("https://{name}/index.html?q={i}"),
        ));
        events.push(json!({
            "@timestamp": ts(t + 9), "EventID": 4624, "Computer": "DC01.corp.example",
            "TargetUserName": "alice", "IpAddress": ip, "LogonType": "3",
        }));
        // Nothing to look up at all: the prefilter keeps these out.
        events.push(json!({
            "@timestamp": ts(t + 10), "EventID": 4688, "Computer": host,
            "NewProcessName": image, "CommandLine": "whoami",
        }));
    }
    if planted {
        let t = START_MS + 30 * 60_000 + 30_000;
        let host = "WS05.corp.example";
        let ip = "10.20.1.15";
        events.extend([
            // The dropper starts, with its SHA256 (nested event data).
            sysmon_process(
                t,
                host,
                "C:\\Users\\alice\\AppData\\Local\\Temp\\invoice.exe",
                &format!("SHA1={},MD5={},SHA256={DROPPER_SHA256}", rng.hex(40), rng.hex(32)),
                true,
            ),
            // It resolves its C2 (a subdomain of the listed domain) …
            sysmon_dns(t + 1_000, host, "update.evil-c2.example"),
            zeek("dns", t + 1_001, ip, "10.20.0.53", 53, json!({"query": "update.EVIL-C2.example.", "qtype_name": "A"})),
            // … connects to it …
            sysmon_network(t + 2_000, host, ip, C2_IP, "update.evil-c2.example"),
            zeek("conn", t + 2_001, ip, C2_IP, 443, json!({"proto": "tcp"})),
            // … fetches stage two over HTTP on port 80 …
            zeek(
                "http",
                t + 3_000,
                ip,
                "192.0.2.99",
                80,
                json!({"method": "GET", "host": "files.evil-c2.example", "uri": "/stage2.bin?id=7"}),
            ),
            zeek(
                "files",
                t + 3_001,
                "192.0.2.99",
                ip,
                80,
                json!({"source": "HTTP", "mime_type": "application/x-dosexec", "md5": PAYLOAD_MD5, "filename": "stage2.bin"}),
            ),
            // … and its operator logs in to the proxy portal.
            proxy(t + 4_000, ip, "https://portal.evil-c2.example/login?u=alice"),
        ]);
    }
    events.sort_by(|a, b| time_of(a).total_cmp(&time_of(b)));
    events
}

fn time_of(event: &Value) -> f64 {
    event["ts"].as_f64().unwrap_or_else(|| {
        let text = event["@timestamp"].as_str().unwrap_or_default();
        quarry_sdk::time::parse_rfc3339_ms(text).unwrap_or(0) as f64 / 1000.0
    })
}

/// A finding as (rule, indicator, set, field).
type Summary<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

fn run(events: &[Value], extra: &[(&str, &str)]) -> TaskOutput {
    let shard = testkit::shard_of_events("office", "mixed", events);
    let intel = intel();
    let mut params: Vec<(&str, &str)> = intel.iter().map(|(k, v)| (*k, v.as_str())).collect();
    params.extend_from_slice(extra);
    let output = testkit::run(IOC_SWEEP.wasm, &shard, &params);
    assert_eq!(output.events_scanned, events.len() as u64);
    let without_indicator_fields = events.iter().filter(|e| e["EventID"] == 4688).count() as u64;
    assert_eq!(
        output.events_matched,
        events.len() as u64 - without_indicator_fields,
        "the any-of prefilter keeps out only the events with no indicator field"
    );
    output
}

#[test]
fn planted_indicators_are_found_once_per_event() {
    let events = telemetry(true);
    let output = run(&events, &[]);
    let found: Vec<Summary<'_>> = output
        .findings
        .iter()
        .map(|f| {
            (
                f.rule.as_str(),
                ev(f, "indicator"),
                ev(f, "intel_set"),
                ev(f, "field"),
            )
        })
        .collect();
    let hash = DROPPER_SHA256;
    assert_eq!(
        found,
        [
            (
                "ioc-sweep/hash-match",
                Some(hash),
                Some("hashes"),
                Some("Hashes")
            ),
            (
                "ioc-sweep/domain-match",
                Some(C2_DOMAIN),
                Some("domains"),
                Some("QueryName")
            ),
            (
                "ioc-sweep/domain-match",
                Some(C2_DOMAIN),
                Some("domains"),
                Some("query")
            ),
            (
                "ioc-sweep/domain-match",
                Some(C2_DOMAIN),
                Some("domains"),
                Some("DestinationHostname")
            ),
            (
                "ioc-sweep/ip-match",
                Some(C2_IP),
                Some("ips"),
                Some("id.resp_h")
            ),
            (
                "ioc-sweep/url-match",
                Some("http://files.evil-c2.example/stage2.bin"),
                Some("urls"),
                Some("host+uri")
            ),
            (
                "ioc-sweep/hash-match",
                Some(PAYLOAD_MD5),
                Some("hashes"),
                Some("md5")
            ),
            (
                "ioc-sweep/domain-match",
                Some(C2_DOMAIN),
                Some("domains"),
                Some("url")
            ),
        ],
        "{:#?}",
        output.findings
    );
    for f in &output.findings {
        assert_eq!(f.severity, Severity::High, "{}", f.title);
        assert!(f.confidence >= 80, "{}", f.title);
        assert_eq!(f.offsets.len(), 1, "one event per finding");
    }
    let dropper = &output.findings[0];
    assert_eq!(dropper.entity, "host:WS05.corp.example");
    assert_eq!(ev(dropper, "indicator_type"), Some("hash (SHA256)"));
    assert_eq!(
        ev(dropper, "Image"),
        Some("C:\\Users\\alice\\AppData\\Local\\Temp\\invoice.exe")
    );
    // The Sysmon connection matched its address too; the name leads.
    let connection = &output.findings[3];
    assert!(
        ev(connection, "matches").is_some_and(|m| m.contains(C2_IP)),
        "{connection:#?}"
    );
    // The subdomain queried is kept next to the listed parent.
    assert_eq!(
        ev(&output.findings[2], "observed_value"),
        Some("update.evil-c2.example")
    );
    assert_eq!(output.findings[2].entity, "ip:10.20.1.15");
}

#[test]
fn benign_telemetry_with_look_alikes_is_quiet() {
    let events = telemetry(false);
    let output = run(&events, &[]);
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
}

#[test]
fn sets_are_looked_up_only_for_their_kind() {
    // The same intel with the domain set declared as a URL set: the planted
    // names no longer match as domains (only as URL hosts, which are looked
    // up as domains only in domain sets), while hashes still do.
    let events = telemetry(true);
    let output = run(
        &events,
        &[("domain_sets", "other"), ("url_sets", "urls,domains")],
    );
    let rules: Vec<&str> = output.findings.iter().map(|f| f.rule.as_str()).collect();
    assert!(!rules.contains(&"ioc-sweep/domain-match"), "{rules:?}");
    assert!(rules.contains(&"ioc-sweep/hash-match"), "{rules:?}");
    assert!(rules.contains(&"ioc-sweep/url-match"), "{rules:?}");
}
