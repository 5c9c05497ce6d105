//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox with the whole SigmaHQ rule set of the shared data over every
//! attack-simulation dataset in `shared/data/logs`, each ingested with the
//! worker's own readers (JSON lines, EVTX, Zeek, syslog) into a shard.
//!
//! Prints a table: dataset → rule titles found (with their ATT&CK ids) and
//! the techniques the dataset's upstream `_metadata` names. Asserts that the
//! datasets labelled with techniques get findings carrying a matching
//! technique, except the ones listed in [`KNOWN_MISSES`] with the reason, and
//! that the whole run stays within a time budget.
//!
//! Skips visibly without the shared data, except under `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use quarry_hunt_modules::SIGMA;
use quarry_worker::ingest;
use quarry_worker::runtime::{Runtime, RuntimeConfig, TaskInput, TaskLimits, module_digest};
use quarry_worker::shard::ShardStore;
use yaml_rust2::YamlLoader;

/// Datasets labelled with techniques where no SigmaHQ rule of the shared set
/// finds a matching technique, and why. Kept exact, so that a regression
/// (or an improvement) shows up.
const KNOWN_MISSES: &[(&str, &str)] = &[
    (
        "cloud/T1078.004_T1530_aws_ec2_proxy_s3_exfiltration_cloudtrail.jsonl",
        "no rule of the set describes instance-profile keys used for S3 listing \
         (the IMDS rule wants an `assumed-role/aws:` ARN)",
    ),
    (
        "linux/T1018_arp_cache_discovery_auditd.log",
        "all 12 audit records are read (`arp -a`), but no rule of the set \
         describes ARP cache discovery",
    ),
    (
        "linux/T1190_log4shell_jndi_auoms_auditd_syslog.jsonl",
        "the auditd record is unparsed text inside `SyslogMessage` (Azure Syslog table)",
    ),
    (
        "linux/T1190_log4shell_jndi_sysmon_for_linux_syslog.jsonl",
        "the Sysmon for Linux event is unparsed XML inside `SyslogMessage`",
    ),
    (
        "network/zeek_tsv_lsass_campaign_01",
        "host-side techniques (LSASS dump) are invisible in Zeek network logs",
    ),
    (
        "windows/mordor/T1056.002_powershell_promptforcredential.jsonl",
        "the capture has no PowerShell/Operational events (Sysmon, Security, System only)",
    ),
    (
        "windows/mordor/T1059.001_powershell_httplistener.jsonl",
        "the capture has no PowerShell/Operational events and no process-creation rule \
         of the set covers the listener",
    ),
    (
        "windows/mordor/T1197_bitsadmin_download_ps_script.jsonl",
        "the set's bitsadmin rules need Bits-Client events or persistence switches \
         (`/SetNotifyCmdLine`); a plain `/transfer` matches none",
    ),
    (
        "windows/mordor/T1210_zerologon_mimikatz_cve_2020_1472.jsonl",
        "Mimikatz execution is found but tagged T1003.*; the set's only T1210 rule is \
         about Quick Assist DNS queries",
    ),
    (
        "windows/mordor/T1543.003_service_modification_fax.jsonl",
        "the set's Fax rules watch `ObjectName` and Fax DLL keys; the dataset changes \
         `ImagePath` via `sc config`",
    ),
];

/// One dataset: a name and the log files that make it up.
struct Dataset {
    name: String,
    files: Vec<PathBuf>,
    /// Techniques from the upstream `_metadata`, if the dataset has one.
    metadata_techniques: BTreeSet<String>,
}

/// `T1003.001` matches `T1003.001` and `T1003`; `T1003` matches any
/// `T1003.xxx`.
fn technique_matches(found: &str, expected: &str) -> bool {
    found == expected
        || found.split('.').next() == expected.split('.').next()
            && (!found.contains('.') || !expected.contains('.'))
}

/// Upstream source path (zip file) of each data file, from MANIFEST.tsv.
fn manifest(data: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(data.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let source = cols.get(6)?.split(" :: ").next()?.to_owned();
            Some((cols[0].to_owned(), source))
        })
        .collect()
}

/// `_metadata` files: (links they list, lowercased; techniques).
fn metadata(data: &Path) -> Vec<(Vec<String>, BTreeSet<String>)> {
    let mut out = Vec::new();
    let dir = data.join("logs/_metadata");
    for entry in std::fs::read_dir(&dir).expect("_metadata") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("metadata");
        let docs = YamlLoader::load_from_str(&text).expect("metadata YAML");
        let doc = &docs[0];
        let mut techniques = BTreeSet::new();
        if let Some(mappings) = doc["attack_mappings"].as_vec() {
            for m in mappings {
                let Some(t) = m["technique"].as_str() else {
                    continue;
                };
                let sub = match &m["sub-technique"] {
                    yaml_rust2::Yaml::String(s) => Some(s.clone()),
                    yaml_rust2::Yaml::Integer(i) => Some(format!("{i:03}")),
                    _ => None,
                };
                techniques.insert(match sub {
                    Some(s) if !s.is_empty() => format!("{t}.{s}"),
                    _ => t.to_owned(),
                });
            }
        }
        let links = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("link:"))
            .map(|l| l.trim().to_lowercase())
            .collect();
        out.push((links, techniques));
    }
    out
}

fn datasets(data: &Path) -> Vec<Dataset> {
    let manifest = manifest(data);
    let metadata = metadata(data);
    let logs = data.join("logs");
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![logs.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read logs") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if !path.ends_with("_metadata") {
                    stack.push(path);
                }
                continue;
            }
            // The EVTX files' JSON conversions duplicate them: read the EVTX.
            if path.extension().is_some_and(|e| e == "jsonl")
                && path.with_extension("evtx").exists()
            {
                continue;
            }
            let relative = path
                .strip_prefix(&logs)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // A Zeek directory is one capture: one dataset.
            let parent = path.parent().unwrap();
            let key = if parent
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("zeek_"))
            {
                parent
                    .strip_prefix(&logs)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            } else {
                relative
            };
            groups.entry(key).or_default().push(path);
        }
    }
    groups
        .into_iter()
        .map(|(name, mut files)| {
            files.sort();
            let mut metadata_techniques = BTreeSet::new();
            for file in &files {
                let key = file
                    .strip_prefix(data)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let Some(source) = manifest.get(&key) else {
                    continue;
                };
                let source = source.to_lowercase();
                for (links, techniques) in &metadata {
                    if links.iter().any(|l| l.ends_with(&source)) {
                        metadata_techniques.extend(techniques.iter().cloned());
                    }
                }
            }
            Dataset {
                name,
                files,
                metadata_techniques,
            }
        })
        .collect()
}

/// `T1110`, `T1003.006` ... at the start of the file name's `_` parts.
fn name_techniques(dataset: &str) -> Vec<String> {
    let file = dataset.rsplit('/').next().unwrap_or(dataset);
    file.split('_')
        .take_while(|part| {
            part.strip_prefix('T').is_some_and(|rest| {
                let (main, sub) = rest.split_once('.').unwrap_or((rest, "000"));
                main.len() == 4
                    && main.bytes().all(|b| b.is_ascii_digit())
                    && sub.len() == 3
                    && sub.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .map(str::to_owned)
        .collect()
}

fn shard_name(dataset: &str) -> String {
    dataset
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(60)
        .collect()
}

#[test]
fn sigmahq_rules_over_every_dataset() {
    let Some(data) = quarry_testdata::shared_data() else {
        return;
    };
    let started = Instant::now();
    let params = sigma::loader::rule_params(&data.join("sigma/rules")).expect("rules");
    let param_bytes: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    // Compiled modules persist across runs here, as on a worker.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sigma-module-cache");
    let runtime = Runtime::new(1, RuntimeConfig::default(), Some(&cache)).expect("runtime");
    let module = runtime
        .load(&module_digest(SIGMA.wasm), SIGMA.wasm)
        .expect("the sigma module loads");
    println!(
        "sigma.wasm: {} bytes, loaded (compiled or from the cache) in {:.1?}",
        SIGMA.wasm.len(),
        started.elapsed()
    );
    let limits = TaskLimits {
        cpu: Duration::from_secs(120),
        memory_bytes: 256 * 1024 * 1024,
        max_findings: 100_000,
        max_output_bytes: 64 * 1024 * 1024,
    };

    let mut failures = Vec::new();
    let mut hits_with_labels = Vec::new();
    let mut total_events = 0u64;
    let mut total_findings = 0usize;
    let mut table = String::new();
    for dataset in datasets(&data) {
        let shard = shard_name(&dataset.name);
        let mut malformed = 0u64;
        for file in &dataset.files {
            let (_format, records) =
                ingest::open(file, None).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let mut labels = BTreeMap::new();
            labels.insert("source".to_owned(), shard.clone());
            let report = store
                .append(&shard, labels, records, &mut |_| {})
                .unwrap_or_else(|e| panic!("ingest {}: {e}", file.display()));
            malformed += report.malformed;
        }
        let task = TaskInput {
            params: &params,
            limits,
            shard: &shard,
            time_range: None,
            hunt: None,
        };
        let task_started = Instant::now();
        let output = runtime
            .run(&module, &task, &store, &Arc::new(AtomicBool::new(false)))
            .unwrap_or_else(|e| panic!("{}: the sigma task failed: {e}", dataset.name));
        total_events += output.events_scanned;
        total_findings += output.findings.len();

        // Rule title → (techniques, findings).
        let mut found: BTreeMap<&str, (BTreeSet<&str>, usize)> = BTreeMap::new();
        for finding in &output.findings {
            let entry = found.entry(&finding.title).or_default();
            entry
                .0
                .extend(finding.techniques.iter().map(String::as_str));
            entry.1 += 1;
            assert!(
                finding
                    .evidence
                    .iter()
                    .any(|(k, v)| k == "sigma.author" && !v.is_empty()),
                "findings carry the rule's author"
            );
        }
        let found_techniques: BTreeSet<&str> = found
            .values()
            .flat_map(|(t, _)| t.iter().copied())
            .collect();
        let labelled: Vec<&String> = dataset.metadata_techniques.iter().collect();
        // Datasets without `_metadata` (EVTX-to-MITRE-Attack) name their
        // technique in the file name: shown, not asserted.
        let named = name_techniques(&dataset.name);
        let named_matched: Vec<&String> = named
            .iter()
            .filter(|e| found_techniques.iter().any(|f| technique_matches(f, e)))
            .collect();
        let matched: Vec<&String> = labelled
            .iter()
            .copied()
            .filter(|e| found_techniques.iter().any(|f| technique_matches(f, e)))
            .collect();

        table.push_str(&format!(
            "\n## {} — {} events ({} malformed), {} findings in {:.1?}; metadata techniques: {}; matched: {}{}\n",
            dataset.name,
            output.events_scanned,
            malformed,
            output.findings.len(),
            task_started.elapsed(),
            if labelled.is_empty() { "-".to_owned() } else { labelled.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ") },
            if matched.is_empty() { "-".to_owned() } else { matched.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ") },
            if labelled.is_empty() && !named.is_empty() {
                format!(
                    " (file name says {}; matched: {})",
                    named.join(" "),
                    if named_matched.is_empty() { "-".to_owned() } else { named_matched.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ") }
                )
            } else {
                String::new()
            },
        ));
        for (title, (techniques, n)) in &found {
            table.push_str(&format!(
                "  {n:>4} × {title} [{}]\n",
                techniques.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if !labelled.is_empty() {
            let known = KNOWN_MISSES.iter().any(|(name, _)| *name == dataset.name);
            if matched.is_empty() && !known {
                failures.push(format!(
                    "{}: no finding carries one of {labelled:?} (found {found_techniques:?})",
                    dataset.name
                ));
            }
            if !matched.is_empty() {
                hits_with_labels.push(dataset.name.clone());
                if known {
                    failures.push(format!(
                        "{}: listed in KNOWN_MISSES but now matches {matched:?}; remove it",
                        dataset.name
                    ));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "Sigma module (wasm) with {} rule files ({} bytes of parameters) over {} events: {} findings in {:.1?}",
        params.len(),
        param_bytes,
        total_events,
        total_findings,
        elapsed
    );
    println!("{table}");
    println!(
        "datasets with matching techniques: {}",
        hits_with_labels.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
