//! The scenario dataset (`quarry_worker::scenario`) through every shipped
//! hunt module and the shared SigmaHQ rule set, shard by shard as workers
//! run them: each planted intrusion must raise at least 20 raw findings,
//! and most raw findings must be routine (look-alikes and other noise),
//! which is what triage (issue 12) has to cut down.
//!
//! A finding belongs to an intrusion when one of the events it cites (its
//! shard offsets) is a record the manifest lists for that intrusion, else
//! to a look-alike when it cites one of that look-alike's records, else it
//! is other noise. The test prints the table of raw findings per module,
//! per intrusion and per look-alike.
//!
//! Skips (visibly) without the shared data set, whose Sigma rules it needs;
//! fails instead under `CI=true`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_hunt_modules::ShippedModule;
use quarry_worker::runtime::types::Finding;
use quarry_worker::runtime::{Runtime, RuntimeConfig, TaskInput, TaskLimits, module_digest};
use quarry_worker::scenario::{
    DETECTORS, IngestedShard, Owner, Owners, ScenarioManifest, ScenarioOptions, generate,
    ingest_shard,
};
use quarry_worker::shard::ShardStore;

/// Findings each planted intrusion must raise at least.
const MIN_FINDINGS_PER_INTRUSION: usize = 20;

const LIMITS: TaskLimits = TaskLimits {
    cpu: Duration::from_secs(120),
    memory_bytes: 256 * 1024 * 1024,
    max_findings: 100_000,
    max_output_bytes: 64 * 1024 * 1024,
};

/// Where the test's compiled modules are cached: beside the test binaries,
/// shared with the module test kit.
fn module_cache() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .map(|deps| deps.join("../module-testkit-cache"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("quarry-module-testkit-cache"))
}

fn ingest_all(dir: &Path, manifest: &ScenarioManifest, store: &ShardStore) -> Vec<IngestedShard> {
    manifest
        .shards
        .iter()
        .map(|shard| {
            ingest_shard(dir, manifest, shard, store)
                .unwrap_or_else(|e| panic!("{}: {e}", shard.name))
        })
        .collect()
}

/// A finding's owner: the intrusion of any event it cites, else the
/// look-alike of any event it cites.
fn owner_of(finding: &Finding, shard: &IngestedShard, owners: &Owners) -> Option<Owner> {
    shard.owner(&finding.offsets, owners)
}

/// Whether a finding names one of the intrusion's entities and falls in its
/// window (the looser, entity-based reading of "touches").
fn touches_entities(finding: &Finding, intrusion: &quarry_worker::scenario::Intrusion) -> bool {
    if finding.timestamp_ms < intrusion.start_ms || finding.timestamp_ms > intrusion.end_ms {
        return false;
    }
    let entity = finding.entity.to_ascii_lowercase();
    let value = entity.split_once(':').map_or(entity.as_str(), |(_, v)| v);
    let value = value.rsplit('\\').next().unwrap_or(value);
    let short = value.split('.').next().unwrap_or(value);
    intrusion
        .hosts
        .iter()
        .chain(&intrusion.users)
        .chain(&intrusion.ips)
        .chain(&intrusion.domains)
        .any(|e| {
            let e = e.to_ascii_lowercase();
            e == value || e == short || value.ends_with(&format!(".{e}"))
        })
}

struct Run {
    module: &'static str,
    shard: usize,
    findings: Vec<Finding>,
}

#[test]
fn shipped_modules_and_sigma_raise_plenty_of_mostly_routine_findings() {
    let Some(shared) = quarry_testdata::shared_data() else {
        return;
    };
    let rules = quarry_testdata::sigma_rule_params(&shared.join("sigma/rules"));
    assert!(
        rules.len() >= 500,
        "the shared Sigma rule set has {} rules",
        rules.len()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let started = Instant::now();
    let manifest = generate(&data, &ScenarioOptions::default()).expect("generate the scenario");
    let generated_in = started.elapsed();

    let started = Instant::now();
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    let shards = ingest_all(&data, &manifest, &store);
    let ingested_in = started.elapsed();

    let intel: Vec<(String, String)> = manifest
        .intel
        .iter()
        .map(|set| {
            let text = std::fs::read_to_string(data.join(&set.path)).expect("intel set");
            (format!("intel.{}", set.name), text)
        })
        .collect();
    let params_of = |module: &ShippedModule| -> Vec<(String, String)> {
        let mut params = match module.name {
            "sigma" => rules.clone(),
            "ioc-sweep" => intel.clone(),
            _ => Vec::new(),
        };
        params.sort();
        params
    };

    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let runtime = Runtime::new(
        threads as u32,
        RuntimeConfig::default(),
        Some(&module_cache()),
    )
    .expect("runtime");
    let modules: Vec<(&ShippedModule, Vec<(String, String)>)> = DETECTORS
        .iter()
        .map(|name| {
            let module = quarry_hunt_modules::find(name)
                .unwrap_or_else(|| panic!("{name} is not a shipped module"));
            (module, params_of(module))
        })
        .collect();
    let loaded: Vec<_> = modules
        .iter()
        .map(|(m, _)| {
            runtime
                .load(&module_digest(m.wasm), m.wasm)
                .expect("module loads")
        })
        .collect();

    // Every (module, shard) task, the slowest (sigma) first, on a few threads.
    let started = Instant::now();
    let mut tasks: Vec<(usize, usize)> = Vec::new();
    for m in (0..modules.len()).rev() {
        for s in 0..shards.len() {
            tasks.push((m, s));
        }
    }
    tasks.sort_by_key(|&(m, _)| modules[m].0.name != "sigma");
    let next = AtomicUsize::new(0);
    let runs: Mutex<Vec<Run>> = Mutex::new(Vec::new());
    let cancel = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(m, s)) = tasks.get(i) else {
                        break;
                    };
                    let task = TaskInput {
                        params: &modules[m].1,
                        limits: LIMITS,
                        shard: &shards[s].name,
                        time_range: None,
                        hunt: None,
                    };
                    let output = runtime
                        .run(&loaded[m], &task, &store, &cancel)
                        .unwrap_or_else(|e| {
                            panic!("{} on {} failed: {e:?}", modules[m].0.name, shards[s].name)
                        });
                    assert!(
                        !output.findings_truncated,
                        "{} on {}: findings truncated",
                        modules[m].0.name, shards[s].name
                    );
                    runs.lock().expect("runs").push(Run {
                        module: modules[m].0.name,
                        shard: s,
                        findings: output.findings,
                    });
                }
            });
        }
    });
    let hunted_in = started.elapsed();
    let mut runs = runs.into_inner().expect("runs");
    runs.sort_by_key(|r| (r.module, r.shard));

    // Attribute every finding.
    let owners = manifest.owners();
    let n_intrusions = manifest.intrusions.len();
    let n_lookalikes = manifest.lookalikes.len();
    // module → [intrusion counts..., look-alike total, other noise]
    let mut per_module: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut per_intrusion_rule: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); n_intrusions];
    let mut per_intrusion_entity = vec![0usize; n_intrusions];
    let mut per_lookalike = vec![0usize; n_lookalikes];
    let mut per_lookalike_rule: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); n_lookalikes];
    let mut other_rules: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0usize;
    for run in &runs {
        let row = per_module
            .entry(run.module)
            .or_insert_with(|| vec![0; n_intrusions + 2]);
        for finding in &run.findings {
            total += 1;
            let rule = if run.module == "sigma" {
                finding.title.clone()
            } else {
                finding.rule.clone()
            };
            for (i, intrusion) in manifest.intrusions.iter().enumerate() {
                if touches_entities(finding, intrusion) {
                    per_intrusion_entity[i] += 1;
                }
            }
            match owner_of(finding, &shards[run.shard], &owners) {
                Some(Owner::Intrusion(i)) => {
                    row[i] += 1;
                    *per_intrusion_rule[i].entry(rule).or_default() += 1;
                }
                Some(Owner::LookAlike(l)) => {
                    row[n_intrusions] += 1;
                    per_lookalike[l] += 1;
                    *per_lookalike_rule[l].entry(rule).or_default() += 1;
                }
                None => {
                    row[n_intrusions + 1] += 1;
                    *other_rules.entry(rule).or_default() += 1;
                }
            }
        }
    }

    println!(
        "\nscenario: {} files, {} shards, {} events, {:.1} MB; generated in {:.2?}, ingested in {:.2?}, {} tasks ({} modules x {} shards) on {threads} threads in {:.2?}",
        manifest.files.len(),
        manifest.shards.len(),
        manifest.total_events,
        manifest.total_bytes as f64 / 1e6,
        generated_in,
        ingested_in,
        tasks.len(),
        modules.len(),
        shards.len(),
        hunted_in,
    );
    println!("\nraw findings per module");
    print!("{:<20}", "module");
    for i in &manifest.intrusions {
        print!("{:>13}", i.id);
    }
    println!("{:>12}{:>8}{:>8}", "look-alikes", "other", "total");
    let mut column_totals = vec![0usize; n_intrusions + 2];
    for (module, row) in &per_module {
        print!("{module:<20}");
        for (c, n) in row.iter().enumerate() {
            column_totals[c] += n;
            if c < n_intrusions {
                print!("{n:>13}");
            } else if c == n_intrusions {
                print!("{n:>12}");
            } else {
                print!("{n:>8}");
            }
        }
        println!("{:>8}", row.iter().sum::<usize>());
    }
    print!("{:<20}", "total");
    for (c, n) in column_totals.iter().enumerate() {
        if c < n_intrusions {
            print!("{n:>13}");
        } else if c == n_intrusions {
            print!("{n:>12}");
        } else {
            print!("{n:>8}");
        }
    }
    println!("{total:>8}");

    for (i, intrusion) in manifest.intrusions.iter().enumerate() {
        let n: usize = per_intrusion_rule[i].values().sum();
        println!(
            "\n{} ({}): {n} raw findings cite its records; {} name one of its entities inside its window",
            intrusion.id, intrusion.name, per_intrusion_entity[i]
        );
        let mut rules: Vec<_> = per_intrusion_rule[i].iter().collect();
        rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (rule, n) in rules {
            println!("  {n:>5}  {rule}");
        }
    }
    println!("\nraw findings per look-alike");
    for (l, lookalike) in manifest.lookalikes.iter().enumerate() {
        let mut rules: Vec<_> = per_lookalike_rule[l].iter().collect();
        rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = rules
            .iter()
            .take(6)
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        println!(
            "  {:>5}  {:<26} {}",
            per_lookalike[l],
            lookalike.id,
            top.join("; ")
        );
    }
    let other: usize = other_rules.values().sum();
    let mut rules: Vec<_> = other_rules.iter().collect();
    rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("\nother noise: {other} raw findings; most frequent:");
    for (rule, n) in rules.iter().take(12) {
        println!("  {n:>5}  {rule}");
    }

    let planted: usize = column_totals[..n_intrusions].iter().sum();
    let routine = total - planted;
    println!(
        "\nplanted {planted} ({:.1}%), routine {routine} ({:.1}%) of {total} raw findings",
        100.0 * planted as f64 / total as f64,
        100.0 * routine as f64 / total as f64
    );
    for (i, intrusion) in manifest.intrusions.iter().enumerate() {
        assert!(
            column_totals[i] >= MIN_FINDINGS_PER_INTRUSION,
            "{}: only {} raw findings cite its records",
            intrusion.id,
            column_totals[i]
        );
    }
    assert!(
        routine * 4 >= total * 3,
        "raw findings must be dominated by routine ones: {routine} of {total}"
    );
}
