//! The contract's aggregate kinds, intel-set host calls and any-of
//! prefilter groups, through the real sandbox with the `aggregates` test
//! module (built from hunt-modules/test-modules/aggregates by the bundle);
//! per-task plans (0.2.2) and instance reuse (0.2.3) with the `planner`
//! test module; and a module built for 0.2.0.

use quarry_contract::aggregate::{AggregateValue, DistinctValues};
use quarry_hunt_modules::test_modules::{AGGREGATES, PLANNER};
use quarry_worker::runtime::{
    Runtime, RuntimeConfig, TaskFailure, TaskInput, TaskLimits, TaskOutput, module_digest,
};
use quarry_worker::shard::ShardStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const SHARD: &str = "mixed";

/// Events on three hosts: `tool.exe` on h1 only, `cmd.exe` on all three,
/// marker-only events (no value) on h2, and noise neither the value nor the
/// marker lets through.
fn events() -> String {
    let mut lines = Vec::new();
    let mut minute = 0;
    let mut push = |line: String| {
        minute += 1;
        lines.push(line.replace("TS", &format!("2024-03-01T10:{minute:02}:00.000Z")));
    };
    for host in ["h1", "h2", "h3"] {
        push(format!(
            r#"{{"@timestamp":"TS","host":"{host}","value":"cmd.exe"}}"#
        ));
        push(format!(
            r#"{{"@timestamp":"TS","host":"{host}","other":"noise"}}"#
        ));
    }
    push(r#"{"@timestamp":"TS","host":"h1","value":"tool.exe"}"#.to_owned());
    push(r#"{"@timestamp":"TS","host":"h1","value":"TOOL.exe "}"#.to_owned());
    push(r#"{"@timestamp":"TS","host":"h2","marker":"keep"}"#.to_owned());
    push(r#"{"@timestamp":"TS","host":"h2","marker":"drop"}"#.to_owned());
    lines.join("\n") + "\n"
}

fn run(params: &[(&str, &str)]) -> Result<TaskOutput, TaskFailure> {
    run_module(AGGREGATES.wasm, params)
}

fn run_module(wasm: &[u8], params: &[(&str, &str)]) -> Result<TaskOutput, TaskFailure> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    store
        .ingest_jsonl(SHARD, BTreeMap::new(), events().as_bytes())
        .expect("ingest");
    let runtime = Runtime::new(1, RuntimeConfig::default(), None).expect("runtime");
    let module = runtime
        .load(&module_digest(wasm), wasm)
        .expect("the test module loads");
    let params: Vec<(String, String)> = params
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let task = TaskInput {
        params: &params,
        limits: limits(),
        shard: SHARD,
        time_range: None,
        hunt: None,
    };
    runtime.run(&module, &task, &store, &Arc::new(AtomicBool::new(false)))
}

fn value<'a>(output: &'a TaskOutput, name: &str) -> &'a AggregateValue {
    &output
        .aggregates
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no aggregate `{name}` in {:?}", output.aggregates))
        .value
}

#[test]
fn every_aggregate_kind_and_the_intel_lookup_work_in_the_sandbox() {
    // The module accepts only `max_hosts` and `malformed`: had the intel set
    // reached `init` as a parameter, the task would fail.
    let output = run(&[
        ("max_hosts", "1"),
        ("intel.watch", "# watch list\nTOOL.EXE\nnot-seen.exe\n"),
    ])
    .expect("the task runs");

    // Structured log fields follow the message in logfmt.
    assert!(
        output
            .log
            .iter()
            .any(|line| line == r#"[info] aggregated values=4 note="two words""#),
        "{:?}",
        output.log
    );

    // The any-of group lets through events with a value or `marker = keep`.
    assert_eq!(output.events_scanned, 10);
    assert_eq!(output.events_matched, 6);

    // Intel: both spellings of tool.exe match the set (compared normalised).
    let hits: Vec<u64> = output
        .findings
        .iter()
        .filter(|f| f.rule == "aggregates/intel-hit")
        .flat_map(|f| f.offsets.clone())
        .collect();
    assert_eq!(hits.len(), 2, "{:?}", output.findings);
    assert_eq!(
        output
            .aggregates
            .iter()
            .find(|a| a.name == "intel_sets")
            .and_then(|a| a.counts())
            .and_then(|c| c.get("watch")),
        Some(&2)
    );

    let AggregateValue::Counts(counts) = value(&output, "by_value") else {
        panic!("by_value is counts")
    };
    assert_eq!(counts["cmd.exe"], 3);
    assert_eq!(counts["-"], 1, "the marker-only event");
    let AggregateValue::Distinct(hosts) = value(&output, "hosts_by_value") else {
        panic!("hosts_by_value is distinct")
    };
    assert_eq!(
        hosts["cmd.exe"],
        DistinctValues::exact(["h1", "h2", "h3"].map(String::from))
    );
    let AggregateValue::TopK(top) = value(&output, "top_values") else {
        panic!("top_values is top-k")
    };
    assert_eq!(top.top()[0].0, "cmd.exe");
    let AggregateValue::Range(seen) = value(&output, "seen") else {
        panic!("seen is a range")
    };
    assert_eq!(seen["cmd.exe"].count, 3);
    assert!(seen["cmd.exe"].min < seen["cmd.exe"].max);
    let AggregateValue::Stack(stack) = value(&output, "stack") else {
        panic!("stack is a stack")
    };
    let rare: Vec<&str> = stack.rare().into_iter().map(|(v, _)| v).collect();
    assert_eq!(rare, ["-", "TOOL.exe ", "tool.exe"]);
    assert!(stack.entries["cmd.exe"].common);
}

#[test]
fn a_malformed_aggregate_fails_the_task_naming_it() {
    let failure = run(&[("malformed", "true")]).expect_err("a malformed sketch is refused");
    assert!(matches!(failure, TaskFailure::BadOutput(_)), "{failure:?}");
    let message = failure.to_string();
    assert!(
        message.contains("aggregate `broken`") && message.contains("4096 registers, got 3"),
        "{message}"
    );
}

#[test]
fn a_bad_intel_set_fails_the_task_before_the_module_runs() {
    let failure = run(&[("intel.Bad Name", "x")]).expect_err("the set name is refused");
    assert!(matches!(failure, TaskFailure::BadIntel(_)), "{failure:?}");
    assert!(
        failure.to_string().contains("intel set name `Bad Name`"),
        "{failure}"
    );
}

/// A module built for contract 0.2.0 (the `rare-match` test module as built
/// before `history` was added in 0.2.1) loads and runs on this worker: its
/// `@0.2.0` imports and exports link to the 0.2.1 host by semver.
#[test]
fn a_module_built_for_contract_0_2_0_still_runs() {
    let wasm = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/contract-0.2.0/rare_match.wasm"),
    )
    .expect("the 0.2.0 fixture");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    let events = [
        r#"{"@timestamp":"2024-03-01T10:00:00Z","Image":"C:\\Windows\\System32\\rundll32.exe","CommandLine":"rundll32 comsvcs.dll,MiniDump 624 out.dmp full"}"#,
        r#"{"@timestamp":"2024-03-01T10:01:00Z","Image":"C:\\Windows\\System32\\cmd.exe","CommandLine":"cmd /c dir"}"#,
    ]
    .join("\n");
    store
        .ingest_jsonl("old", BTreeMap::new(), events.as_bytes())
        .expect("ingest");
    let runtime = Runtime::new(1, RuntimeConfig::default(), None).expect("runtime");
    let module = runtime
        .load(&module_digest(&wasm), &wasm)
        .expect("a 0.2.0 module loads");
    assert!(!module.uses_history());
    let task = TaskInput {
        params: &[],
        limits: limits(),
        shard: "old",
        time_range: None,
        hunt: None,
    };
    let output = runtime
        .run(&module, &task, &store, &Arc::new(AtomicBool::new(false)))
        .expect("a 0.2.0 module runs");
    assert_eq!(
        value(&output, "rare-match"),
        &AggregateValue::counts_from([("matched".to_owned(), 1u64)])
    );
    // The modules of this build read their schedule's history where they
    // use it.
    let rare = quarry_hunt_modules::RARE_PROCESS;
    let rare = runtime
        .load(&module_digest(rare.wasm), rare.wasm)
        .expect("rare-process loads");
    assert!(rare.uses_history());
}

/// A module that exports `planner` (0.2.2) gets each task projected and
/// prefiltered by the descriptor its `plan(params)` returns: only the
/// fields it planned, only the events its planned prefilter lets through.
#[test]
fn a_planned_task_projects_and_prefilters_by_its_plan() {
    let output = run_module(
        PLANNER.wasm,
        &[
            ("fields", "host,value"),
            ("match_field", "host"),
            ("match_value", "H1"),
        ],
    )
    .expect("a planned task runs");
    assert_eq!(output.fields_projected, 2);
    assert_eq!(output.events_scanned, 10);
    assert_eq!(output.events_matched, 4, "the planned prefilter: host h1");
    assert_eq!(
        value(&output, "present"),
        &AggregateValue::counts_from([("host".to_owned(), 4u64), ("value".to_owned(), 3)])
    );
    // `@values` carries every value of each event: all 10 have one.
    let output = run_module(PLANNER.wasm, &[("fields", "@values")]).expect("@values projects");
    assert_eq!(
        value(&output, "present"),
        &AggregateValue::counts_from([("@values".to_owned(), 10u64)])
    );
    // `none` keeps describe()'s descriptor: no field, no prefilter.
    let output = run_module(PLANNER.wasm, &[("plan_none", "true"), ("fields", "host")])
        .expect("an unplanned task runs");
    assert_eq!(output.fields_projected, 0);
    assert_eq!(output.events_matched, 10);
}

/// Every way a plan can be wrong fails the task, naming the cause: the
/// module's own error, a plan that renames the module, a plan over the
/// descriptor limits.
#[test]
fn a_bad_plan_fails_the_task_naming_the_cause() {
    match run_module(PLANNER.wasm, &[("plan_error", "rule 7 does not parse")]) {
        Err(TaskFailure::Rejected(message)) => assert_eq!(message, "rule 7 does not parse"),
        other => panic!("expected the plan's error, got {other:?}"),
    }
    let renamed = run_module(PLANNER.wasm, &[("plan_name", "someone-else")])
        .expect_err("a renaming plan fails");
    assert!(
        matches!(renamed, TaskFailure::InvalidModule { .. }),
        "{renamed:?}"
    );
    let text = renamed.to_string();
    assert!(
        text.contains("plan()") && text.contains("someone-else"),
        "{text}"
    );
    assert!(text.contains("must keep the name"), "{text}");
    let on_values = run_module(
        PLANNER.wasm,
        &[
            ("fields", "@values"),
            ("match_field", "@values"),
            ("match_value", "x"),
        ],
    )
    .expect_err("a clause on @values fails");
    assert!(
        on_values.to_string().contains("can only be projected"),
        "{on_values}"
    );
    let wide = run_module(PLANNER.wasm, &[("plan_fields", "2000")])
        .expect_err("a plan over the field limit fails");
    let text = wide.to_string();
    assert!(
        text.contains("2000 fields") && text.contains("at most 1024"),
        "{text}"
    );
}

/// Tasks of one hunt run (contract 0.2.3) one after another on one
/// instance when the module exports `reuse` and says yes, without a new
/// plan, with fresh per-task state and a log of their own; another hunt,
/// or no hunt, gets a fresh instance, and one slot keeps one instance.
#[test]
fn a_hunts_tasks_reuse_one_instance_when_the_module_allows_it() {
    let worker = OneSlot::new();
    let params = pairs(&[("fields", "host,value"), ("print", "true")]);
    let first = worker.task(Some("h1"), SHARD, &params).expect("first task");
    assert!(!first.reused_instance);
    assert_eq!(on_instance(&first), (1, 1));
    assert_eq!(first.log, ["[stdout] task 1 on this instance"]);
    let second = worker
        .task(Some("h1"), SHARD, &params)
        .expect("second task");
    assert!(second.reused_instance);
    assert_eq!(on_instance(&second), (2, 1), "planned once, for the first");
    assert_eq!(second.fields_projected, 2, "the first task's plan holds");
    assert_eq!(value(&second, "events"), value(&first, "events"));
    assert_eq!(value(&second, "present"), value(&first, "present"));
    assert_eq!(second.log, ["[stdout] task 2 on this instance"]);
    assert_eq!(worker.runtime.warm_instances(), 1);

    // Another hunt, or the same hunt with other parameters, does not take
    // it; with one slot, the newest hunt's instance is the one kept.
    let other = worker.task(Some("h2"), SHARD, &params).expect("other hunt");
    assert!(!other.reused_instance);
    assert_eq!(on_instance(&other), (1, 1));
    assert_eq!(worker.runtime.warm_instances(), 1);
    let again = worker.task(Some("h1"), SHARD, &params).expect("h1 again");
    assert!(!again.reused_instance, "h2's instance replaced h1's");
    let changed = pairs(&[("fields", "host"), ("print", "true")]);
    let changed = worker
        .task(Some("h1"), SHARD, &changed)
        .expect("other params");
    assert!(!changed.reused_instance);
    assert_eq!(changed.fields_projected, 1);
    let alone = worker.task(None, SHARD, &params).expect("no hunt");
    assert!(!alone.reused_instance);
}

/// A task that fails on a reused instance takes it down with it: the
/// hunt's next task starts afresh. Modules that do not allow reuse (built
/// with the SDK but not reusable, or built for 0.2.0) never share one.
#[test]
fn a_failed_task_hands_no_instance_on_and_other_modules_never_share() {
    let worker = OneSlot::new();
    let params = pairs(&[("fields", "host,value"), ("fail_on", "poison")]);
    let first = worker.task(Some("h1"), SHARD, &params).expect("first task");
    assert!(!first.reused_instance);
    let failure = worker
        .task(Some("h1"), POISONED, &params)
        .expect_err("the poisoned shard fails the task");
    assert!(failure.to_string().contains("poison"), "{failure}");
    assert_eq!(worker.runtime.warm_instances(), 0);
    let after = worker
        .task(Some("h1"), SHARD, &params)
        .expect("after the failure");
    assert!(!after.reused_instance);
    assert_eq!(on_instance(&after), (1, 1));

    let aggregates = worker.load(AGGREGATES.wasm);
    let old = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/contract-0.2.0/rare_match.wasm"),
    )
    .expect("the 0.2.0 fixture");
    let old = worker.load(&old);
    for module in [aggregates, old] {
        for _ in 0..2 {
            let output = worker
                .run(&module, Some("h3"), SHARD, &[])
                .expect("a task runs");
            assert!(!output.reused_instance);
        }
    }
    assert_eq!(worker.runtime.warm_instances(), 1, "only the planner's");
}

/// An instance kept warm holds a place in the instance pool; a task that
/// finds the pool full takes that place at once rather than waiting for the
/// kept instance to expire (30 s).
#[test]
fn a_waiting_task_takes_the_place_of_an_instance_kept_warm() {
    let worker = OneSlot::new();
    let params = pairs(&[("fields", "host")]);
    worker.task(Some("h1"), SHARD, &params).expect("h1");
    assert_eq!(worker.runtime.warm_instances(), 1);
    // One slot: two places. The warm instance holds one, a runaway task
    // the other.
    let runaway = worker.load(quarry_hunt_modules::test_modules::RUNAWAY_LOOP.wasm);
    let cancel = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            let task = TaskInput {
                params: &[],
                limits: TaskLimits {
                    cpu: Duration::from_secs(120),
                    ..limits()
                },
                shard: SHARD,
                time_range: None,
                hunt: None,
            };
            worker.runtime.run(&runaway, &task, &worker.store, &cancel)
        });
        // Give the runaway task time to take its place.
        std::thread::sleep(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let other = worker.task(Some("h2"), SHARD, &params).expect("h2");
        let waited = started.elapsed();
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        let stopped = running.join().expect("the runaway thread");
        assert!(
            matches!(stopped, Err(TaskFailure::Cancelled)),
            "{stopped:?}"
        );
        assert!(!other.reused_instance);
        assert!(
            waited < Duration::from_secs(15),
            "h2 waited {waited:?}: for h1's instance to expire instead of taking its place"
        );
    });
    assert_eq!(worker.runtime.warm_instances(), 1, "h2's");
}

const POISONED: &str = "poisoned";

/// A runtime with one slot, the `planner` module and two shards.
struct OneSlot {
    _dir: tempfile::TempDir,
    store: ShardStore,
    runtime: Runtime,
    planner: Arc<quarry_worker::runtime::LoadedModule>,
}

impl OneSlot {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
        store
            .ingest_jsonl(SHARD, BTreeMap::new(), events().as_bytes())
            .expect("ingest");
        let poisoned = r#"{"@timestamp":"2024-03-01T11:00:00.000Z","host":"h9","value":"poison"}"#;
        store
            .ingest_jsonl(POISONED, BTreeMap::new(), poisoned.as_bytes())
            .expect("ingest");
        let runtime = Runtime::new(1, RuntimeConfig::default(), None).expect("runtime");
        let planner = runtime
            .load(&module_digest(PLANNER.wasm), PLANNER.wasm)
            .expect("planner loads");
        OneSlot {
            _dir: dir,
            store,
            runtime,
            planner,
        }
    }

    fn load(&self, wasm: &[u8]) -> Arc<quarry_worker::runtime::LoadedModule> {
        self.runtime
            .load(&module_digest(wasm), wasm)
            .expect("the module loads")
    }

    fn task(
        &self,
        hunt: Option<&str>,
        shard: &str,
        params: &[(String, String)],
    ) -> Result<TaskOutput, TaskFailure> {
        self.run(&self.planner, hunt, shard, params)
    }

    fn run(
        &self,
        module: &quarry_worker::runtime::LoadedModule,
        hunt: Option<&str>,
        shard: &str,
        params: &[(String, String)],
    ) -> Result<TaskOutput, TaskFailure> {
        let hunt = hunt.map(quarry_proto::HuntId::new);
        let task = TaskInput {
            params,
            limits: limits(),
            shard,
            time_range: None,
            hunt: hunt.as_ref(),
        };
        self.runtime.run(
            module,
            &task,
            &self.store,
            &Arc::new(AtomicBool::new(false)),
        )
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The planner's `instance` counts: tasks and plans on its instance.
fn on_instance(output: &TaskOutput) -> (u64, u64) {
    let AggregateValue::Counts(counts) = value(output, "instance") else {
        panic!("`instance` is not counts");
    };
    let get = |key: &str| counts.get(key).copied().unwrap_or(0);
    (get("tasks"), get("plans"))
}

/// What the tests' tasks may use.
fn limits() -> TaskLimits {
    TaskLimits {
        cpu: Duration::from_secs(10),
        memory_bytes: 64 * 1024 * 1024,
        max_findings: 100,
        max_output_bytes: 1024 * 1024,
    }
}

/// Batches by column (contract 0.2.4): every shipped module, built with the
/// SDK that exports `columnar`, gets its batches through `scan-columns`,
/// and gives exactly the output it gives through `scan` over the same
/// shard (the shared data's recordings when here, else the contract's own
/// events), failures included.
#[test]
fn batches_by_column_give_what_scan_gives_for_every_shipped_module() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("shard store");
    store
        .ingest_jsonl(SHARD, BTreeMap::new(), events().as_bytes())
        .expect("ingest");
    for log in quarry_testdata::shared_json_logs().unwrap_or_default() {
        let file = std::fs::File::open(&log).expect("open log");
        store
            .ingest_jsonl(SHARD, BTreeMap::new(), std::io::BufReader::new(file))
            .expect("ingest log");
    }
    let run = |wasm: &[u8], params: &[(String, String)], column_batches: bool| {
        let runtime = Runtime::new(
            1,
            RuntimeConfig {
                column_batches,
                ..RuntimeConfig::default()
            },
            None,
        )
        .expect("runtime");
        let module = runtime.load(&module_digest(wasm), wasm).expect("loads");
        let task = TaskInput {
            params,
            limits: limits(),
            shard: SHARD,
            time_range: None,
            hunt: None,
        };
        runtime.run(&module, &task, &store, &Arc::new(AtomicBool::new(false)))
    };
    let rules = quarry_testdata::shared_data()
        .map(|data| quarry_testdata::sigma_rule_params(&data.join("sigma")))
        .unwrap_or_default();
    let mut with_findings = 0;
    for module in quarry_hunt_modules::all() {
        let params: Vec<(String, String)> = match module.name {
            "sigma" => rules.clone(),
            "query" => vec![(
                "query".to_owned(),
                "stats count() as n, dc(host) as hosts by EventID | sort -n".to_owned(),
            )],
            _ => Vec::new(),
        };
        let by_column = run(module.wasm, &params, true);
        let by_event = run(module.wasm, &params, false);
        match (by_column, by_event) {
            (Ok(columns), Ok(events)) => {
                assert!(columns.batches_by_column, "{} takes columns", module.name);
                assert!(!events.batches_by_column);
                assert_eq!(
                    columns.events_matched, events.events_matched,
                    "{}",
                    module.name
                );
                assert_eq!(
                    format!("{:?}", columns.findings),
                    format!("{:?}", events.findings),
                    "{}",
                    module.name
                );
                assert_eq!(columns.aggregates, events.aggregates, "{}", module.name);
                with_findings += usize::from(!columns.findings.is_empty());
            }
            (Err(columns), Err(events)) => {
                assert_eq!(columns.to_string(), events.to_string(), "{}", module.name);
            }
            (columns, events) => panic!(
                "{}: by column {:?}, by event {:?}",
                module.name,
                columns.map(|o| o.findings.len()),
                events.map(|o| o.findings.len())
            ),
        }
    }
    if quarry_testdata::shared_json_logs().is_some() {
        assert!(
            with_findings >= 3,
            "modules found something: {with_findings}"
        );
    }
}
