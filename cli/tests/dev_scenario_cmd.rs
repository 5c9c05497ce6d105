//! `quarry dev scenario` writes the scenario dataset and its manifest, and
//! refuses a meaningless amount of background activity.

use std::process::Command;

use quarry_worker::scenario::{MANIFEST_FILE, ScenarioManifest};

#[test]
fn writes_the_dataset_and_its_manifest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("scenario");
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["dev", "scenario", "--noise-percent", "25", "--out"])
        .arg(&out)
        .output()
        .expect("run quarry");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 planted intrusions"), "{stdout}");
    let manifest: ScenarioManifest =
        serde_json::from_slice(&std::fs::read(out.join(MANIFEST_FILE)).expect("manifest.json"))
            .expect("the manifest parses");
    assert_eq!(manifest.noise_percent, 25);
    assert_eq!(manifest.intrusions.len(), 3);
    for file in &manifest.files {
        let len = std::fs::metadata(out.join(&file.path))
            .expect("listed file exists")
            .len();
        assert_eq!(len, file.bytes, "{}", file.path);
    }
    for set in &manifest.intel {
        assert!(out.join(&set.path).is_file(), "{}", set.path);
    }
}

#[test]
fn zero_noise_is_refused_with_the_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["dev", "scenario", "--noise-percent", "0", "--out"])
        .arg(dir.path())
        .output()
        .expect("run quarry");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1..=1000"), "{stderr}");
    assert!(!dir.path().join(MANIFEST_FILE).exists());
}
