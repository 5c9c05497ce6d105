//! Regression tests for the worker's ingest and data-directory hardening
//! (issue 11): bounded malformed samples, one process per data directory,
//! private file permissions, and refusal of input that would amplify.

use quarry_worker::shard::{
    MALFORMED_FILE, MAX_MALFORMED_KEPT, MAX_MALFORMED_REPORTED, ShardStore,
};
use std::collections::BTreeMap;

#[test]
fn garbage_lines_keep_a_bounded_malformed_sample_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ShardStore::open(&dir.path().join("shards")).expect("open");
    let lines = 200_000u64;
    let input = "x\n".repeat(lines as usize);
    let mut labels = BTreeMap::new();
    labels.insert("source".to_owned(), "junk.log".to_owned());
    let report = store
        .ingest_jsonl("junk", labels.clone(), input.as_bytes())
        .expect("ingest");
    assert_eq!(report.malformed, lines, "every garbage line is counted");
    assert_eq!(report.events_stored, 0);
    // Again: the counts add up, the disk does not grow.
    let size_once = std::fs::metadata(store.shard_dir("junk").join(MALFORMED_FILE))
        .expect("sample file")
        .len();
    let report = store
        .ingest_jsonl("junk", labels, input.as_bytes())
        .expect("ingest again");
    assert_eq!(report.meta.malformed_count, 2 * lines);
    assert_eq!(report.meta.malformed_kept, Some(MAX_MALFORMED_KEPT));
    assert_eq!(
        report.meta.malformed_by_source,
        BTreeMap::from([("junk.log".to_owned(), 2 * lines)]),
        "counted per source"
    );
    // This ingest's own sample is in its report, positions included, even
    // though the shard's sample on disk is full.
    assert_eq!(report.malformed_sample.len(), MAX_MALFORMED_REPORTED);
    assert_eq!(
        (
            report.malformed_sample[9].line,
            report.malformed_sample[9].byte_offset
        ),
        (10, 18)
    );
    let size = std::fs::metadata(store.shard_dir("junk").join(MALFORMED_FILE))
        .expect("sample file")
        .len();
    assert_eq!(size, size_once, "a full sample does not grow");
    assert!(
        size < 1_000_000,
        "{size} bytes of malformed records kept for {} bytes of input",
        input.len()
    );
    let sample = store.malformed("junk").expect("sample");
    assert_eq!(
        sample.len() as u64,
        MAX_MALFORMED_KEPT,
        "the first ones are kept"
    );
    assert_eq!((sample[0].line, sample[0].byte_offset), (1, 0));
    assert_eq!((sample[1].line, sample[1].byte_offset), (2, 2));
    assert_eq!(sample[1].raw, "x");
}

#[test]
fn a_second_open_of_a_locked_data_dir_is_refused_naming_the_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("shards");
    let first = ShardStore::open(&root).expect("first open");
    let error = ShardStore::open(&root).expect_err("the directory is in use");
    let text = error.to_string();
    assert!(
        text.contains(&std::process::id().to_string()),
        "names the holder's pid: {text}"
    );
    assert!(text.contains("--worker"), "says what to do instead: {text}");
    drop(first);
    ShardStore::open(&root).expect("free again once the first store is gone");
}
