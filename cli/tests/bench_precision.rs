//! The precision benchmark of issue 19 as a gate: every shipped detection
//! module over the shared real data (each file one shard, the shipped wasm in
//! the worker's sandbox, default parameters), and no module may raise a high
//! or critical finding on data benign for it (background recordings whose
//! attack is not one the module reports; see `quarry_cli::bench_precision`).
//! The attack recordings are still found, and every log file of the data
//! set's manifest is read and classed.
//!
//! Without the data set the test prints why and passes, except under
//! `CI=true`, where missing data is a failure.

use quarry_cli::bench_precision::{
    BACKGROUND_LABELS, DatasetClass, PrecisionBenchConfig, precision_bench,
};

#[test]
fn no_module_raises_high_or_critical_on_benign_data() {
    let Some(data) = quarry_testdata::shared_data() else {
        return;
    };
    let config = PrecisionBenchConfig {
        data: data.clone(),
        rules: None,
        threads: 2,
    };
    let report = precision_bench(&config, |line| eprintln!("{line}")).expect("benchmark runs");
    eprintln!("{report}");

    // Every log file of the manifest is a shard (the `.jsonl` conversions of
    // the EVTX files and the `_metadata` descriptions aside), and every
    // labelled background recording is still there.
    let manifest = std::fs::read_to_string(data.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    let mut expected: Vec<String> = manifest
        .lines()
        .filter_map(|line| line.split('\t').next()?.strip_prefix("logs/"))
        .filter(|path| !path.starts_with("_metadata/"))
        .filter(|path| !(path.starts_with("windows/evtx/") && path.ends_with(".jsonl")))
        .map(str::to_owned)
        .collect();
    expected.sort();
    let read: Vec<String> = report.datasets.iter().map(|d| d.file.clone()).collect();
    assert_eq!(read, expected, "the files read are the manifest's logs");
    for (path, _) in BACKGROUND_LABELS {
        assert!(
            read.iter().any(|file| if path.ends_with('/') {
                file.starts_with(path)
            } else {
                file == path
            }),
            "labelled recording {path} is not in the data set"
        );
    }
    assert!(
        report
            .datasets
            .iter()
            .all(|d| d.events > 0 || d.malformed > 0),
        "every file holds records"
    );

    assert!(
        report.failures().is_empty(),
        "tasks failed: {:?}",
        report.failures()
    );
    let names: Vec<&str> = report.modules.iter().map(|m| m.module.as_str()).collect();
    for module in [
        "beaconing",
        "bruteforce",
        "dns-tunnel",
        "encoded-powershell",
        "lateral-movement",
        "rare-process",
        "sigma",
    ] {
        assert!(names.contains(&module), "{module} was not run: {names:?}");
    }
    // The gate means something only where a module has benign data: each
    // module but sigma (whose shared rules were chosen to cover every
    // recorded attack) has thousands of benign events.
    for m in &report.modules {
        if m.module != "sigma" {
            assert!(
                m.benign_events >= 1000,
                "{} has only {} benign events",
                m.module,
                m.benign_events
            );
        }
    }

    let violations = report.benign_high_or_critical();
    assert!(
        violations.is_empty(),
        "high or critical findings on data benign for the module (module, file, count): {violations:?}"
    );

    // The attack recordings are still detected.
    let detected = |module: &str, file: &str| {
        report
            .modules
            .iter()
            .find(|m| m.module == module)
            .and_then(|m| m.attack_detections.iter().find(|d| d.file.contains(file)))
            .map_or(0, |d| d.findings.high_or_critical())
    };
    assert!(detected("bruteforce", "T1110_kerbrute_user_enumeration") >= 1);
    assert!(detected("lateral-movement", "T1021.002_psexec_admin_share") >= 1);
    assert!(detected("lateral-movement", "T1003.004_psexec_reg_lsa_secrets_dump") >= 1);
    assert!(detected("sigma", "T1003.001_lsass_dump_comsvcs_powershell") >= 1);
    for class in [DatasetClass::Background, DatasetClass::Attack] {
        assert!(report.datasets.iter().any(|d| d.class == class));
    }
}
