//! The intel store end to end: a STIX 2.1 bundle, a MISP event and a CSV
//! file written per the public specs are imported into a real coordinator,
//! and ioc-sweep hunts that name the sets (not ship them) find the events
//! that match, including an address inside a CIDR range and a subdomain of
//! a `*.` wildcard. A real worker on loopback fetches each set version once.

use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::IOC_SWEEP;
use quarry_proto::v1;
use std::collections::BTreeSet;
use std::time::Duration;

const SHA256: &str = "5b3e1a4f6c2d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f50617";

/// Sysmon-shaped events: a connection into a listed range, a DNS query for
/// a subdomain of a listed wildcard, a process with a listed hash, and
/// look-alikes that must not match.
fn events() -> String {
    let lines = [
        r#"{"@timestamp":"2026-11-20T10:00:00Z","EventID":3,"Computer":"ws1","Image":"C:\\x.exe","DestinationIp":"198.51.100.77"}"#.to_owned(),
        r#"{"@timestamp":"2026-11-20T10:01:00Z","EventID":3,"Computer":"ws2","Image":"C:\\y.exe","DestinationIp":"198.51.101.1"}"#.to_owned(),
        r#"{"@timestamp":"2026-11-20T10:02:00Z","EventID":22,"Computer":"ws1","Image":"C:\\x.exe","QueryName":"beacon.c2.example"}"#.to_owned(),
        r#"{"@timestamp":"2026-11-20T10:03:00Z","EventID":22,"Computer":"ws3","Image":"C:\\z.exe","QueryName":"notc2.example"}"#.to_owned(),
        format!(
            r#"{{"@timestamp":"2026-11-20T10:04:00Z","EventID":1,"Computer":"ws2","Image":"C:\\drop.exe","Hashes":"SHA256={SHA256}"}}"#
        ),
        r#"{"@timestamp":"2026-11-20T10:05:00Z","EventID":3,"Computer":"ws4","Image":"C:\\w.exe","DestinationIp":"203.0.113.66"}"#.to_owned(),
    ];
    lines.join("\n") + "\n"
}

/// A STIX 2.1 bundle: an address range, an expired indicator, a pattern
/// outside the subset, and an identity (not an indicator).
fn stix_bundle() -> String {
    r#"{
  "type": "bundle",
  "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
  "objects": [
    {"type": "identity", "spec_version": "2.1", "id": "identity--023d105b-752e-4e3c-941c-7d3f3cb15e9e",
     "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
     "name": "Example feed", "identity_class": "organization"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
     "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
     "name": "C2 range", "indicator_types": ["malicious-activity"],
     "pattern": "[ipv4-addr:value ISSUBSET '198.51.100.0/24'] OR [ipv4-addr:value = '203.0.113.66']",
     "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--1a2b3c4d-0000-4000-8000-000000000001",
     "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z",
     "pattern": "[ipv4-addr:value = '198.51.101.1']", "pattern_type": "stix",
     "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2021-01-01T00:00:00Z"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--1a2b3c4d-0000-4000-8000-000000000002",
     "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
     "pattern": "[network-traffic:dst_port = 4444 AND network-traffic:dst_ref.value = '192.0.2.1']",
     "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z"}
  ]
}"#
    .to_owned()
}

/// A MISP event: a wildcard-capable domain, an attribute not for detection.
fn misp_event() -> String {
    r#"{"Event": {
  "id": "42", "info": "C2 infrastructure", "uuid": "5e1f6b1c-0000-4000-8000-00000000e001",
  "Attribute": [
    {"id": "1", "type": "domain", "category": "Network activity", "to_ids": true,
     "uuid": "5e1f6b1c-0000-4000-8000-00000000a001", "value": "*.c2.example"},
    {"id": "2", "type": "domain", "category": "Network activity", "to_ids": false,
     "uuid": "5e1f6b1c-0000-4000-8000-00000000a002", "value": "notc2.example"},
    {"id": "3", "type": "hostname", "category": "Network activity", "to_ids": true,
     "uuid": "5e1f6b1c-0000-4000-8000-00000000a003", "value": "bad host name"}
  ]
}}"#
    .to_owned()
}

fn common_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Runs the OASIS STIX 2.1 validator (`stix2_validator` from PyPI, which
/// `scripts/dev test` installs and names in `QUARRY_STIX_VALIDATOR`) on
/// `path`. Without it the check is skipped with a message, except under
/// `CI=true`, where it fails.
fn validate_stix(path: &std::path::Path) {
    let validator = std::env::var_os("QUARRY_STIX_VALIDATOR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| {
                std::path::PathBuf::from(home).join(".cache/quarry/venv/bin/stix2_validator")
            })
        })
        .filter(|p| p.exists());
    let Some(validator) = validator else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the STIX 2.1 validator is missing: run scripts/dev test, which installs it"
        );
        eprintln!("SKIPPED: STIX validation (no stix2_validator; scripts/dev test installs it)");
        return;
    };
    let output = std::process::Command::new(&validator)
        .arg("--version")
        .arg("2.1")
        .arg(path)
        .output()
        .expect("run stix2_validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the STIX validator refused the bundle:\n{text}"
    );
    // Not even a warning: a bundle other tools take as it is.
    assert!(!text.contains("[X]") && !text.contains("[!]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_imported_from_stix_misp_and_csv_are_swept_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = quarry_tests::one_worker(dir.path(), "sysmon", &events(), None).await;
    let url = cluster.url.clone();
    let mut client = Client::connect(&url).await.expect("client");
    client
        .upload_module(IOC_SWEEP.name, IOC_SWEEP.version, "", IOC_SWEEP.wasm)
        .await
        .expect("upload");

    let stix = client
        .import_intel("ips", "stix", stix_bundle().into_bytes(), "feed.json")
        .await
        .expect("stix");
    let set = stix.set.clone().expect("set");
    assert_eq!(
        (set.version, set.indicators, set.skipped),
        (1, 2, 2),
        "{stix:?}"
    );
    assert_eq!(stix.problems.len(), 1, "{stix:?}");
    assert!(
        stix.problems[0]
            .position
            .contains("indicator--1a2b3c4d-0000-4000-8000-000000000002")
    );
    assert!(stix.problems[0].message.contains("AND"), "{stix:?}");

    let misp = client
        .import_intel(
            "domains",
            "misp",
            misp_event().into_bytes(),
            "event-42.json",
        )
        .await
        .expect("misp");
    let set = misp.set.clone().expect("set");
    assert_eq!(
        (set.indicators, set.skipped, set.problems),
        (1, 1, 1),
        "{misp:?}"
    );
    assert!(misp.problems[0].position.contains("a003"), "{misp:?}");

    let csv =
        format!("first_seen,sha256,comment\n2026-11-01,{SHA256},dropper\n2026-11-02,zzz,broken\n");
    let hashes = client
        .import_intel("hashes", "csv:sha256", csv.into_bytes(), "hashes.csv")
        .await
        .expect("csv");
    assert_eq!(hashes.problems.len(), 1);
    assert_eq!(hashes.problems[0].position, "line 3");
    let refused = client
        .import_intel("bad", "csv:nope", b"a,b\n1,2\n".to_vec(), "x.csv")
        .await
        .expect_err("no such column");
    assert!(
        refused.to_string().contains("no column `nope`"),
        "{refused}"
    );

    let listed: BTreeSet<String> = client
        .list_intel()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["domains".into(), "hashes".into(), "ips".into()])
    );

    // The hunt names the sets; the worker fetches them by version.
    let submitted = client
        .submit_hunt(
            HuntRequest::new("ioc-sweep")
                .shard("sysmon")
                .intel_set("ips")
                .intel_set("domains")
                .intel_set("hashes"),
        )
        .await
        .expect("submit");
    let hunt = tokio::time::timeout(
        Duration::from_secs(60),
        client.wait(&submitted.hunt_id, |_| {}),
    )
    .await
    .expect("the hunt ends")
    .expect("wait");
    assert_eq!(hunt.state, v1::HuntState::Completed as i32, "{hunt:?}");
    let findings = client.findings(&submitted.hunt_id).await.expect("findings");
    let matched: BTreeSet<(String, String)> = findings
        .iter()
        .map(|f| (f.rule.clone(), f.entity.clone()))
        .collect();
    let rules: BTreeSet<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        BTreeSet::from([
            "ioc-sweep/domain-match",
            "ioc-sweep/hash-match",
            "ioc-sweep/ip-match"
        ]),
        "{matched:?}"
    );
    assert_eq!(
        findings.len(),
        4,
        "range, single address, wildcard, hash: {matched:?}"
    );
    let text = format!("{findings:?}");
    for absent in ["198.51.101.1", "notc2.example"] {
        assert!(!text.contains(absent), "{absent} matched: {matched:?}");
    }
    // Shared as STIX 2.1: the OASIS validator accepts the bundle.
    let (bundle, left_out) = quarry_cli::share::stix(&findings, common_now_ms());
    assert_eq!(left_out, 0);
    let sightings = bundle["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["type"] == "sighting")
        .count();
    assert!(sightings >= findings.len(), "{sightings} sightings");
    let path = dir.path().join("findings.stix.json");
    std::fs::write(&path, serde_json::to_string_pretty(&bundle).expect("json")).expect("write");
    validate_stix(&path);

    // The alerts the findings opened, shared the same way.
    let cases = client
        .all_cases(
            v1::ListCasesRequest {
                state: "all".into(),
                page_size: 1000,
                ..Default::default()
            },
            0,
        )
        .await
        .expect("cases")
        .cases;
    assert!(!cases.is_empty(), "the matches opened alerts");
    let alerts = quarry_cli::share::stix_alerts(&cases, common_now_ms());
    let path = dir.path().join("alerts.stix.json");
    std::fs::write(&path, serde_json::to_string_pretty(&alerts).expect("json")).expect("write");
    validate_stix(&path);
    let csv = quarry_cli::share::csv_alerts(&cases);
    assert_eq!(csv.lines().count(), cases.len() + 1, "{csv}");

    // The hunt's parameters hold the binding, not the indicators.
    let params = &hunt.params;
    assert_eq!(
        params.get("intel-ref.ips").map(String::as_str),
        Some("1"),
        "{params:?}"
    );

    // The hunt exported and imported again (as onto another cluster with
    // the same module build) binds to the set's latest version by name.
    let again = client
        .import_intel("ips", "stix", stix_bundle().into_bytes(), "feed-2.json")
        .await
        .expect("a second version");
    assert_eq!(again.set.map(|s| s.version), Some(2));
    let exported = quarry_cli::hunt_transfer::export(&hunt).expect("export");
    assert_eq!(
        exported["module"]["digest"],
        hunt.module.as_ref().expect("module").digest
    );
    let imported = quarry_cli::hunt_transfer::import(&exported.to_string()).expect("import");
    let here = client
        .list_modules()
        .await
        .expect("modules")
        .into_iter()
        .find(|m| format!("{}@{}", m.name, m.version) == imported.module)
        .expect("the module is here");
    quarry_cli::hunt_transfer::check_module(&imported, &here).expect("same build");
    let resubmitted = client
        .submit_hunt(HuntRequest::from(imported.request))
        .await
        .expect("submit the import");
    let rerun = tokio::time::timeout(
        Duration::from_secs(60),
        client.wait(&resubmitted.hunt_id, |_| {}),
    )
    .await
    .expect("the hunt ends")
    .expect("wait");
    assert_eq!(
        rerun.params.get("intel-ref.ips").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        client
            .findings(&resubmitted.hunt_id)
            .await
            .expect("findings")
            .len(),
        findings.len()
    );

    // `--intel NAME=FILE`: the file goes to the store once, as a one-off
    // set named after its content, and the hunt is bound to it as NAME.
    let text = format!("# one-off\n{SHA256}\n");
    let (name, binding) =
        quarry_cli::intel::upload_one_off(&mut client, "intel.hashes", text.clone())
            .await
            .expect("one-off");
    assert_eq!(name, "hashes");
    assert!(
        binding.starts_with("oneoff-") && binding.ends_with("@1"),
        "{binding}"
    );
    let (_, again) = quarry_cli::intel::upload_one_off(&mut client, "intel.hashes", text)
        .await
        .expect("the same file again");
    assert_eq!(again, binding, "reused, not imported twice");
    let one_off = client
        .submit_hunt(
            HuntRequest::new("ioc-sweep")
                .shard("sysmon")
                .param("intel-ref.hashes", &binding),
        )
        .await
        .expect("submit");
    tokio::time::timeout(
        Duration::from_secs(60),
        client.wait(&one_off.hunt_id, |_| {}),
    )
    .await
    .expect("the hunt ends")
    .expect("wait");
    let found = client.findings(&one_off.hunt_id).await.expect("findings");
    assert_eq!(
        found.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
        ["ioc-sweep/hash-match"]
    );

    // A set a hunt names must exist.
    let unknown = client
        .submit_hunt(
            HuntRequest::new("ioc-sweep")
                .shard("sysmon")
                .intel_set("nope"),
        )
        .await
        .expect_err("unknown set");
    assert!(
        unknown.to_string().contains("no intel set is named nope"),
        "{unknown}"
    );
    let deleted = client.delete_intel("hashes").await.expect("delete");
    assert_eq!(deleted, [1]);
    cluster.shutdown().await;
}
