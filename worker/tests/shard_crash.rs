//! A worker killed with SIGKILL in the middle of an ingest restarts with every
//! acknowledged event present and its shard readable.
//!
//! The test re-executes its own binary as the ingesting process: with
//! [`CHILD_DIR`] set, the test function appends events into that directory
//! "forever" (bounded by [`CHILD_MAX_EVENTS`] and [`CHILD_MAX_TIME`]) and prints
//! `acked N` after every fsynced block. The parent reads a few of those lines,
//! kills the child, reopens the store and checks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quarry_worker::shard::{ShardError, ShardStore};

/// Set in the child: the store root to ingest into.
const CHILD_DIR: &str = "QUARRY_SHARD_CRASH_CHILD_DIR";
/// Set in the child: the ingest round (events carry it).
const CHILD_ROUND: &str = "QUARRY_SHARD_CRASH_CHILD_ROUND";
/// A child stops by itself after this many events...
const CHILD_MAX_EVENTS: u64 = 5_000_000;
/// ...or this long, so a lost parent leaves no runaway process.
const CHILD_MAX_TIME: Duration = Duration::from_secs(120);
/// Acknowledgement lines the parent waits for before killing.
const ACKS_BEFORE_KILL: usize = 3;
const SHARD: &str = "crash";
const TEST_NAME: &str = "kill_9_during_ingest_loses_no_acknowledged_event";

#[allow(clippy::result_large_err)]
fn child(root: &str, round: u64) {
    let store = ShardStore::open(Path::new(root)).expect("child opens the store");
    let started = Instant::now();
    let records = (0..CHILD_MAX_EVENTS)
        .take_while(|_| started.elapsed() < CHILD_MAX_TIME)
        .map(|seq| {
            Ok(serde_json::json!({
                "round": round,
                "seq": seq,
                "EventID": 4624 + (seq % 3),
                "Computer": "CRASH01",
                "@timestamp": 1_795_161_600_000u64 + seq,
                "CommandLine": format!("cmd.exe /c echo {seq}"),
            }))
        });
    let mut out = std::io::stdout().lock();
    store
        .append(SHARD, BTreeMap::new(), records, &mut |p| {
            // Printed only after the block is fsynced: every number printed
            // is a promise.
            let _ = writeln!(out, "acked {}", p.events_acknowledged);
            let _ = out.flush();
        })
        .expect("child ingest");
}

/// Runs one child round, kills it after a few acknowledgements, and returns
/// the highest acknowledged count it printed.
fn crash_round(root: &Path, round: u64) -> u64 {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, root)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = 0u64;
    let mut acks = 0usize;
    for line in lines.by_ref() {
        let line = line.expect("read child output");
        if let Some(n) = line.strip_prefix("acked ") {
            acked = acked.max(n.trim().parse().expect("ack count"));
            acks += 1;
            if acks >= ACKS_BEFORE_KILL && acked > 0 {
                break;
            }
        }
    }
    assert!(
        acks >= ACKS_BEFORE_KILL,
        "the child ended before acknowledging {ACKS_BEFORE_KILL} blocks"
    );
    // SIGKILL on Unix: no destructor, no flush, no seal.
    child.kill().expect("kill child");
    // Acknowledgements printed before the kill are promises too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("acked ")
            && let Ok(n) = n.trim().parse::<u64>()
        {
            acked = acked.max(n);
        }
    }
    let status = child.wait().expect("wait child");
    assert!(!status.success(), "the child was killed, not finished");
    acked
}

/// Per round, the `seq` values stored, which must be `0..count` in order.
fn stored_rounds(store: &ShardStore) -> BTreeMap<u64, u64> {
    let mut rounds: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_offset = None;
    store
        .scan::<ShardError, _>(SHARD, None, 4096, |batch| {
            for event in batch {
                if let Some(last) = last_offset {
                    assert!(event.offset > last, "offsets increase");
                }
                last_offset = Some(event.offset);
                let round = event.doc["round"].as_u64().expect("round");
                let seq = event.doc["seq"].as_u64().expect("seq");
                let next = rounds.entry(round).or_insert(0);
                assert_eq!(seq, *next, "round {round}: events in order, none missing");
                *next += 1;
                assert_eq!(event.doc["host"], "CRASH01");
            }
            Ok(())
        })
        .expect("scan after the crash");
    rounds
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_event() {
    if let Ok(root) = std::env::var(CHILD_DIR) {
        let round = std::env::var(CHILD_ROUND)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        child(&root, round);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = BTreeMap::new();
    // Two rounds: the second opens (and repairs) what the first left, then
    // appends and is killed in turn.
    for round in 1..=2u64 {
        acked.insert(round, crash_round(dir.path(), round));
        let store = ShardStore::open(dir.path()).expect("reopen after kill -9");
        assert!(store.skipped().is_empty(), "{:?}", store.skipped());
        let meta = store.get(SHARD).expect("the shard exists");
        let stored = stored_rounds(&store);
        for (r, &n) in &acked {
            let have = stored.get(r).copied().unwrap_or(0);
            assert!(
                have >= n,
                "round {r}: {n} events acknowledged, only {have} stored"
            );
        }
        assert_eq!(meta.event_count, stored.values().sum::<u64>());
        eprintln!(
            "round {round}: acknowledged {acked:?}, stored {stored:?}, recovered {:?}",
            store.recovered()
        );
    }
}
