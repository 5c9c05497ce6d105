//! Column blocks on the scan path (issue 18): what a module's scan reads
//! from a shard, through [`ShardStore::scan_projected`] (prefilter and
//! projection on the columns), is exactly what the whole-event path gives
//! (`scan_with`, `Prefilter::matches`, `Projection::project`), on column
//! blocks and on blocks in the rows format older versions wrote; and
//! `migrate` turns one into the other without losing an event, crash-safe.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use quarry_worker::prefilter::{Clause, MatchOp, Prefilter, Projection};
use quarry_worker::shard::{
    BlockFormat, ColumnBatcher, MigrateReport, ProjectedEvent, ScanFilter, ShardError, ShardStore,
};
use serde_json::{Value, json};

const SHARD: &str = "mixed";

/// Events of every shape a store meets: Windows and Sysmon fields, nested
/// objects and arrays, dotted member names, EVTX-style nesting, nulls,
/// empty strings, numbers of every kind, booleans, events without a time.
fn synthetic(n: u64) -> Vec<Value> {
    let users = ["alice", "BOB", "svc_backup", "", "Administrator"];
    let images = [
        r"C:\Windows\System32\cmd.exe",
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        r"C:\Users\bob\AppData\Local\Temp\x.exe",
    ];
    (0..n)
        .map(|i| {
            let event_id = [4624, 4625, 4688, 1][(i % 4) as usize];
            let mut event = json!({
                "@timestamp": 1_795_161_600_000u64 + i * 1_000,
                "EventID": event_id,
                "Computer": format!("HOST{:02}", i % 7),
                "TargetUserName": users[(i % 5) as usize],
            });
            let map = event.as_object_mut().expect("object");
            match i % 6 {
                0 => {
                    map.insert("Image".into(), json!(images[(i % 3) as usize]));
                    map.insert("CommandLine".into(), json!(format!("cmd /c echo {i}")));
                }
                1 => {
                    map.insert(
                        "answers".into(),
                        json!(["10.0.0.1", format!("host{i}.corp")]),
                    );
                    map.insert("TTLs".into(), json!([60, 3600.5]));
                }
                2 => {
                    map.insert(
                        "userIdentity".into(),
                        json!({"userName": users[(i % 5) as usize], "type": "IAMUser"}),
                    );
                    map.insert(
                        "id.orig_h".into(),
                        json!(format!("10.1.{}.{}", i % 3, i % 250)),
                    );
                }
                3 => {
                    map.insert(
                        "Event".into(),
                        json!({"EventData": {"LogonType": (i % 11).to_string()}}),
                    );
                    map.insert("LogonType".into(), Value::Null);
                }
                4 => {
                    map.insert("big".into(), json!(u64::MAX - i));
                    map.insert("neg".into(), json!(-(i as i64)));
                    map.insert("ratio".into(), json!(i as f64 / 7.0));
                    map.insert("ok".into(), json!(i % 2 == 0));
                }
                _ => {
                    map.remove("@timestamp");
                    map.insert("Image".into(), json!(""));
                    map.insert("empty_list".into(), json!([]));
                    map.insert("empty_obj".into(), json!({}));
                }
            }
            event
        })
        .collect()
}

/// The store holding [`synthetic`] events (written as column blocks, a few
/// blocks' worth) and, when the shared data is here, its JSON logs.
fn store_with_events(dir: &Path) -> ShardStore {
    let store = ShardStore::open(dir).expect("open store");
    let records = synthetic(9_000).into_iter().map(Ok);
    store
        .append(SHARD, BTreeMap::new(), records, &mut |_| {})
        .expect("append");
    if let Some(logs) = quarry_testdata::shared_json_logs() {
        for log in logs.iter().take(12) {
            let file = fs::File::open(log).expect("open log");
            store
                .ingest_jsonl(SHARD, BTreeMap::new(), std::io::BufReader::new(file))
                .expect("ingest log");
        }
    }
    store
}

fn clause(field: &str, op: MatchOp, values: &[&str]) -> Clause {
    Clause::new(field, op, values.iter().copied())
}

/// Prefilters of every kind of clause, on top-level, dotted, EVTX and
/// array-valued fields.
fn prefilters() -> Vec<(&'static str, Prefilter)> {
    let one = |c: Clause| Prefilter::compile(vec![c]).expect("compile");
    vec![
        ("none", Prefilter::match_all()),
        (
            "equals int",
            one(clause("EventID", MatchOp::Equals, &["4625", "1"])),
        ),
        (
            "equals text",
            one(clause(
                "TargetUserName",
                MatchOp::Equals,
                &["bob", "ADMINISTRATOR"],
            )),
        ),
        (
            "contains",
            one(clause(
                "Image",
                MatchOp::Contains,
                &["powershell", "\\TEMP\\"],
            )),
        ),
        (
            "starts",
            one(clause("Computer", MatchOp::StartsWith, &["host0"])),
        ),
        (
            "ends",
            one(clause("CommandLine", MatchOp::EndsWith, &["7"])),
        ),
        ("exists empty", one(clause("Image", MatchOp::Exists, &[]))),
        (
            "exists nested",
            one(clause("empty_list", MatchOp::Exists, &[])),
        ),
        (
            "regex",
            one(clause("CommandLine", MatchOp::Regex, &[r"echo \d*3$"])),
        ),
        (
            "array",
            one(clause("answers", MatchOp::EndsWith, &[".corp"])),
        ),
        (
            "float array",
            one(clause("TTLs", MatchOp::Equals, &["3600.5"])),
        ),
        (
            "dotted",
            one(clause("userIdentity.userName", MatchOp::Equals, &["alice"])),
        ),
        (
            "dotted name",
            one(clause("id.orig_h", MatchOp::StartsWith, &["10.1.2."])),
        ),
        (
            "evtx",
            one(clause(
                "Event.EventData.LogonType",
                MatchOp::Equals,
                &["3", "10"],
            )),
        ),
        (
            "evtx flat",
            one(clause(
                "EventData.TargetUserName",
                MatchOp::Equals,
                &["bob"],
            )),
        ),
        (
            "evtx system",
            one(clause("System.Computer", MatchOp::EndsWith, &["3"])),
        ),
        ("null", one(clause("LogonType", MatchOp::Exists, &[]))),
        ("bool", one(clause("ok", MatchOp::Equals, &["TRUE"]))),
        (
            "u64",
            one(clause("big", MatchOp::StartsWith, &["1844674407370955"])),
        ),
        (
            "mordor",
            one(clause("Channel", MatchOp::Contains, &["sysmon"])),
        ),
        (
            "and with groups",
            Prefilter::compile_with_groups(
                vec![clause("Computer", MatchOp::Exists, &[])],
                vec![
                    vec![
                        clause("EventID", MatchOp::Equals, &["4688"]),
                        clause("answers", MatchOp::Exists, &[]),
                    ],
                    vec![clause("TargetUserName", MatchOp::Contains, &["a", "o"])],
                ],
            )
            .expect("compile"),
        ),
    ]
}

fn projection() -> (Vec<String>, Projection) {
    let fields: Vec<String> = [
        "EventID",
        "Image",
        "answers",
        "userIdentity.userName",
        "id.orig_h",
        "Event.EventData.LogonType",
        "LogonType",
        "ratio",
        "big",
        "EventID",
        "Missing",
        "empty_obj",
        "CommandLine",
        "EventData.Image",
        "Event.System.Computer",
        "System.big",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let projection = Projection::new(&fields);
    (fields, projection)
}

/// What a module reads, the whole-event way.
fn reference(
    store: &ShardStore,
    filter: &ScanFilter<'_>,
    prefilter: &Prefilter,
    projection: &Projection,
) -> Vec<ProjectedEvent> {
    let mut out = Vec::new();
    store
        .scan_with(SHARD, filter, 777, |events| {
            for event in events {
                if prefilter.matches(&event.doc) {
                    out.push(ProjectedEvent {
                        offset: event.offset,
                        timestamp_ms: event.timestamp_ms,
                        values: projection.project(&event.doc),
                    });
                }
            }
            Ok::<_, ShardError>(())
        })
        .expect("scan_with");
    out
}

/// What a module reads through the projected scan, and the events in range.
fn projected(
    store: &ShardStore,
    filter: &ScanFilter<'_>,
    prefilter: &Prefilter,
    projection: &Projection,
) -> (Vec<ProjectedEvent>, u64) {
    let mut out = Vec::new();
    let mut in_range = 0;
    let stats = store
        .scan_projected(SHARD, filter, prefilter, projection, |n, events| {
            in_range += n;
            out.extend(events);
            Ok::<_, ShardError>(())
        })
        .expect("scan_projected");
    assert_eq!(stats.events_emitted, out.len() as u64);

    // By column, in batches of an odd size across blocks: the same events.
    let mut batcher = ColumnBatcher::new(projection.len(), 777);
    let mut by_column = Vec::new();
    let mut columns_in_range = 0;
    let column_stats = store
        .scan_projected_columns(SHARD, filter, prefilter, projection, |n, columns| {
            columns_in_range += n;
            assert_eq!(columns.fields.len(), projection.len());
            batcher.add(&columns, |batch| {
                assert_eq!(batch.len(), 777, "full batches only");
                by_column.extend(batch.to_events());
                Ok::<_, ShardError>(())
            })
        })
        .expect("scan_projected_columns");
    by_column.extend(batcher.batch.to_events());
    assert!(
        by_column == out,
        "by column: {} events, {} by event; first difference {:?}",
        by_column.len(),
        out.len(),
        by_column.iter().zip(&out).find(|(a, b)| a != b)
    );
    assert_eq!(columns_in_range, in_range);
    assert_eq!(column_stats, stats);
    (out, in_range)
}

fn block_formats(store: &ShardStore) -> MigrateReport {
    // Migrating to the current format changes nothing on a shard in it,
    // and says how many blocks were not.
    let mut probe = store
        .migrate(SHARD, BlockFormat::Columns, &mut |_| {})
        .expect("probe");
    probe.segments_done = 0;
    probe
}

/// Every prefilter, with and without a time range and an offset watermark,
/// gives the same events and values through the projected scan as the
/// whole-event path.
fn assert_scans_agree(store: &ShardStore, what: &str) {
    let (_, projection) = projection();
    let total = store.get(SHARD).expect("shard").event_count;
    let start = 1_795_161_600_000i64 + 1_000_000;
    let filters = [
        ScanFilter::default(),
        ScanFilter {
            time_range: Some((start, start + 2_000_000)),
            ..ScanFilter::default()
        },
        ScanFilter {
            min_offset: total / 3,
            ..ScanFilter::default()
        },
    ];
    let mut matched_any = 0;
    for (name, prefilter) in prefilters() {
        for (f, filter) in filters.iter().enumerate() {
            let expected = reference(store, filter, &prefilter, &projection);
            let (got, in_range) = projected(store, filter, &prefilter, &projection);
            assert!(
                got == expected,
                "{what}: prefilter {name:?}, filter {f}: {} events projected, {} expected; first difference {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
            if prefilter.is_empty() {
                assert_eq!(in_range, expected.len() as u64, "{what}: filter {f}");
            }
            if !expected.is_empty() && !prefilter.is_empty() {
                matched_any += 1;
            }
        }
    }
    assert!(
        matched_any >= 30,
        "{what}: prefilters select something ({matched_any})"
    );
}

#[test]
fn projected_scans_equal_whole_event_scans_on_both_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_events(dir.path());
    let formats = block_formats(&store);
    assert_eq!(formats.blocks_rewritten, 0, "ingest writes column blocks");
    assert!(formats.blocks_kept >= 3, "{formats:?}");
    assert_scans_agree(&store, "column blocks");

    let report = store
        .migrate(SHARD, BlockFormat::Rows, &mut |_| {})
        .expect("to rows");
    assert_eq!(report.blocks_rewritten, formats.blocks_kept);
    assert_scans_agree(&store, "rows blocks");
}

fn whole_events(store: &ShardStore) -> Vec<(u64, i64, String)> {
    let mut out = Vec::new();
    store
        .scan(SHARD, None, 1000, |events| {
            out.extend(
                events
                    .iter()
                    .map(|e| (e.offset, e.timestamp_ms, e.doc.to_string())),
            );
            Ok::<_, ShardError>(())
        })
        .expect("scan");
    out
}

/// Equal event lists, or a panic naming the first difference (not both lists).
#[track_caller]
fn assert_same(got: &[(u64, i64, String)], expected: &[(u64, i64, String)], what: &str) {
    if let Some((i, (g, e))) = got
        .iter()
        .zip(expected)
        .enumerate()
        .find(|(_, (g, e))| g != e)
    {
        panic!("{what}: event {i} differs:\n got      {g:?}\n expected {e:?}");
    }
    assert_eq!(got.len(), expected.len(), "{what}: event count");
}

fn shard_dir_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join(SHARD))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A shard in the rows format (as older versions wrote it) is read, then
/// migrated to column blocks: every event, offset, timestamp and member
/// order the same, the shard's statistics unchanged, fewer bytes; running
/// it again changes nothing.
#[test]
fn migrate_rewrites_an_old_shard_as_columns_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original;
    let meta;
    {
        let store = store_with_events(dir.path());
        original = whole_events(&store);
        store
            .migrate(SHARD, BlockFormat::Rows, &mut |_| {})
            .expect("to rows");
        meta = store.get(SHARD).expect("meta");
    }
    let store = ShardStore::open(dir.path()).expect("reopen");
    assert_same(
        &whole_events(&store),
        &original,
        "the old format reads back",
    );
    let mut seen = Vec::new();
    let report = store
        .migrate(SHARD, BlockFormat::CURRENT, &mut |p| {
            seen.push(p.segments_done)
        })
        .expect("migrate");
    assert!(
        report.blocks_rewritten >= 3 && report.blocks_kept == 0,
        "{report:?}"
    );
    assert_eq!(report.events, meta.event_count);
    assert_eq!(
        seen,
        (1..=report.segments_total).collect::<Vec<_>>(),
        "progress per segment"
    );
    assert!(
        report.bytes_after < report.bytes_before,
        "columns are smaller: {report:?}"
    );
    assert_same(&whole_events(&store), &original, "after");
    drop(store);
    let store = ShardStore::open(dir.path()).expect("reopen");
    assert_same(&whole_events(&store), &original, "after");
    assert_eq!(
        store.get(SHARD).expect("meta"),
        meta,
        "statistics unchanged"
    );
    assert!(store.recovered().is_empty());
    let again = store
        .migrate(SHARD, BlockFormat::CURRENT, &mut |_| {})
        .expect("again");
    assert_eq!((again.blocks_rewritten, again.segments_rewritten), (0, 0));
    assert_eq!(again.bytes_after, report.bytes_after);
    assert!(
        !shard_dir_files(dir.path())
            .iter()
            .any(|f| f.ends_with(".tmp")),
        "{:?}",
        shard_dir_files(dir.path())
    );
}

/// The states a crash can leave a migration in, each reopened: the
/// temporary segment half written and the old index already removed (crash
/// before the rename), and the new segment in place without its index
/// (crash before the index was written). Nothing is lost either way.
#[test]
fn a_migration_cut_short_at_any_step_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original;
    let seg;
    {
        let store = store_with_events(dir.path());
        original = whole_events(&store);
        store
            .migrate(SHARD, BlockFormat::Rows, &mut |_| {})
            .expect("to rows");
        seg = dir.path().join(SHARD).join("seg-00000001.qseg");
        assert!(seg.exists());
    }
    // Crash before the rename: a torn temporary file, no old index.
    fs::write(
        dir.path().join(SHARD).join("seg-00000001.qseg.migrate.tmp"),
        b"QBK1 torn",
    )
    .expect("temp");
    fs::remove_file(seg.with_extension("qidx")).expect("remove index");
    {
        let store = ShardStore::open(dir.path()).expect("reopen");
        assert_same(&whole_events(&store), &original, "after");
        assert!(
            !shard_dir_files(dir.path())
                .iter()
                .any(|f| f.ends_with(".tmp")),
            "the temporary file is removed on open"
        );
        // Crash after the rename, before the index: migrate, then drop the
        // new index.
        store
            .migrate(SHARD, BlockFormat::CURRENT, &mut |_| {})
            .expect("migrate");
    }
    fs::remove_file(seg.with_extension("qidx")).expect("remove index");
    let store = ShardStore::open(dir.path()).expect("reopen");
    assert_same(&whole_events(&store), &original, "after");
    assert!(
        store.recovered().is_empty(),
        "nothing cut: {:?}",
        store.recovered()
    );
    assert_eq!(block_formats(&store).blocks_rewritten, 0, "all columns");
}

/// A shard that another process holds is refused, naming the holder, and a
/// shard that does not exist is named.
#[test]
fn migrate_names_what_is_in_its_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ShardStore::open(dir.path()).expect("open");
    let error = ShardStore::open(dir.path()).expect_err("locked");
    assert!(error.to_string().contains("in use"), "{error}");
    let error = store
        .migrate("nope", BlockFormat::CURRENT, &mut |_| {})
        .expect_err("unknown shard");
    assert!(error.to_string().contains("nope"), "{error}");
}
