//! `quarry coverage` against a real cluster: a coordinator and a worker on
//! loopback, shipped modules uploaded, a bruteforce hunt and a sigma hunt
//! run; the report names the techniques the modules declare (learnt by
//! describing the uploaded builds) and the rules' tags, scores those that
//! ran above those that only could have, and its Navigator layer has the
//! shape the ATT&CK Navigator reads (layer format 4.5).

use quarry_cli::coverage::{self, DetectionKind};
use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::{BEACONING, BRUTEFORCE, SIGMA};
use quarry_proto::v1;
use serde_json::Value;
use std::time::Duration;

/// Failed logons, then a success, for one account.
fn events() -> String {
    let mut lines: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"@timestamp":"2026-11-20T10:00:0{i}Z","EventID":4625,"Computer":"dc1","EventData":{{"TargetUserName":"alice","IpAddress":"10.0.0.9"}}}}"#
            )
        })
        .collect();
    lines.push(r#"{"@timestamp":"2026-11-20T10:00:09Z","EventID":4624,"Computer":"dc1","EventData":{"TargetUserName":"alice","IpAddress":"10.0.0.9"}}"#.to_owned());
    lines.join("\n") + "\n"
}

/// A rule the sigma hunt runs (tagged T1033).
const RUN_RULE: &str = r"title: Whoami Execution
id: 7e4c1b1a-2f0e-4c4b-9a55-0c2d3e4f5a61
status: test
logsource:
  product: windows
  category: process_creation
detection:
  selection:
    Image|endswith: '\whoami.exe'
  condition: selection
level: medium
tags:
  - attack.discovery
  - attack.t1033
";

/// A rule only in the rule directory (tagged T1021.002): can detect, never ran.
const FILE_RULE: &str = r"title: Admin Share Access
id: 0b3e5c9d-8a1f-4d2e-b6c7-9e8f7a6b5c4d
status: test
logsource:
  product: windows
  service: security
detection:
  selection:
    EventID: 5140
    ShareName: '\\*\ADMIN$'
  condition: selection
level: medium
tags:
  - attack.lateral_movement
  - attack.t1021.002
";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

async fn run_hunt(client: &mut Client, request: HuntRequest) -> v1::Hunt {
    let submitted = client.submit_hunt(request).await.expect("submit");
    let hunt = tokio::time::timeout(
        Duration::from_secs(120),
        client.wait(&submitted.hunt_id, |_| {}),
    )
    .await
    .expect("the hunt ends")
    .expect("wait");
    assert_eq!(hunt.state, v1::HuntState::Completed as i32, "{hunt:?}");
    hunt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_reports_what_ran_and_what_could_detect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = quarry_tests::one_worker(dir.path(), "dc1-security", &events(), None).await;
    let mut client = Client::connect(&cluster.url).await.expect("client");
    for module in [BRUTEFORCE, BEACONING, SIGMA] {
        client
            .upload_module(module.name, module.version, "", module.wasm)
            .await
            .expect("upload");
    }
    // A module of the team's own, not shipped with quarry: its techniques
    // come with the upload (as `quarry module upload` sends them), and an
    // id that is no technique is refused.
    let own = quarry_hunt_modules::test_modules::NOOP;
    let err = client
        .upload_signed_module("own-hunt", "1.0.0", "", own.wasm, None, &["T99".into()])
        .await
        .expect_err("not a technique id");
    assert!(
        err.to_string().contains("not an ATT&CK technique id"),
        "{err}"
    );
    let uploaded = client
        .upload_signed_module(
            "own-hunt",
            "1.0.0",
            "",
            own.wasm,
            None,
            &["t1059.001".into(), "T1059.001".into()],
        )
        .await
        .expect("upload with techniques");
    assert_eq!(uploaded.techniques, ["T1059.001"]);
    run_hunt(
        &mut client,
        HuntRequest::new("bruteforce").shard("dc1-security"),
    )
    .await;
    run_hunt(
        &mut client,
        HuntRequest::new("sigma")
            .shard("dc1-security")
            .param("rule.whoami.yml", RUN_RULE),
    )
    .await;

    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(rules_dir.join("lateral")).expect("mkdir");
    std::fs::write(rules_dir.join("lateral/admin_share.yml"), FILE_RULE).expect("write");
    std::fs::write(rules_dir.join("whoami.yaml"), RUN_RULE).expect("write");
    let rules = coverage::load_sigma_rules(&rules_dir).expect("rules");
    assert_eq!(rules.len(), 2);

    let report = coverage::gather(&mut client, now_ms(), 30, &rules, Vec::new())
        .await
        .expect("coverage");
    assert_eq!(report.cluster_shards, 1);
    assert_eq!(report.hunts, 2);
    assert!(
        report.undescribed_modules.is_empty(),
        "shipped builds are described: {:?}",
        report.undescribed_modules
    );
    let technique = |id: &str| {
        report
            .techniques()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("{id} missing from {report:#?}"))
            .clone()
    };
    // bruteforce declares T1110 and ran on the one shard.
    let brute = technique("T1110");
    assert_eq!(brute.share, 1.0);
    let d = &brute.detections[0];
    let brute_name = format!("bruteforce@{}", BRUTEFORCE.version);
    assert_eq!((d.kind, &d.name), (DetectionKind::Module, &brute_name));
    assert_eq!((d.runs, d.shards), (1, 1));
    // beaconing was uploaded but never run.
    let beacon = technique("T1071");
    assert!(
        beacon
            .detections
            .iter()
            .any(|d| d.name.starts_with("beaconing@"))
    );
    assert_eq!(beacon.share, 0.0);
    // The sigma hunt's rule ran; the file and the parameter are one rule.
    let whoami = technique("T1033");
    assert_eq!(whoami.detections.len(), 1, "{whoami:?}");
    assert_eq!(whoami.detections[0].kind, DetectionKind::SigmaRule);
    assert_eq!(whoami.detections[0].runs, 1);
    assert_eq!(whoami.share, 1.0);
    // The team's module, known by what its upload declared.
    let own = technique("T1059.001");
    assert!(
        own.detections.iter().any(|d| d.name == "own-hunt@1.0.0"),
        "{own:?}"
    );
    // The rule of the directory only: can detect, did not run.
    assert_eq!(technique("T1021.002").detections[0].runs, 0);

    // The table a person reads.
    let table = coverage::table(&report).join("\n");
    for text in [
        "Credential Access",
        "T1110",
        "Brute Force",
        brute_name.as_str(),
        "Whoami Execution",
        "Admin Share Access",
        "1/1 (100%)",
    ] {
        assert!(table.contains(text), "{text} missing:\n{table}");
    }

    // The Navigator layer, as text and parsed back.
    let text = serde_json::to_string_pretty(&coverage::navigator_layer(&report)).expect("json");
    let layer: Value = serde_json::from_str(&text).expect("layer parses");
    for key in [
        "name",
        "versions",
        "domain",
        "description",
        "techniques",
        "gradient",
        "legendItems",
        "layout",
    ] {
        assert!(layer.get(key).is_some(), "layer lacks {key}");
    }
    assert_eq!(layer["versions"]["layer"], "4.5");
    assert_eq!(layer["versions"]["attack"], "18");
    assert!(
        layer["versions"]["navigator"]
            .as_str()
            .is_some_and(|v| v.starts_with("5."))
    );
    assert_eq!(layer["domain"], "enterprise-attack");
    let gradient = &layer["gradient"];
    assert!(gradient["colors"].as_array().is_some_and(|c| c.len() >= 2));
    assert!(gradient["maxValue"].as_f64() > gradient["minValue"].as_f64());
    let entries = layer["techniques"].as_array().expect("techniques");
    assert!(entries.iter().all(|e| e["techniqueID"].is_string()));
    let scored = |id: &str| {
        entries
            .iter()
            .find(|e| e["techniqueID"] == id && e.get("score").is_some())
            .and_then(|e| e["score"].as_f64())
            .unwrap_or_else(|| panic!("{id} unscored"))
    };
    assert!(scored("T1110") > 0.0, "the module that ran");
    assert!(scored("T1033") > 0.0, "the rule that ran");
    assert_eq!(scored("T1071"), 0.0, "uploaded, not run");
    assert_eq!(scored("T1021.002"), 0.0, "rule file, not run");
    let brute_entry = entries
        .iter()
        .find(|e| e["techniqueID"] == "T1110")
        .expect("T1110");
    assert_eq!(brute_entry["tactic"], "credential-access");
    assert!(
        brute_entry["comment"]
            .as_str()
            .is_some_and(|c| c.contains(&brute_name))
    );

    cluster.shutdown().await;
}
