//! A snapshot far bigger than the memory it may take. Installing one on a
//! follower and building one on a leader stream rows between RocksDB and a
//! file, so the process's peak resident memory grows by a bounded amount,
//! not by the snapshot's size (the earlier design held the whole snapshot,
//! its decoded rows and a write batch of them in memory at once).
//!
//! Linux only: the peak is read from `/proc/self/status` (VmHWM) after
//! resetting it through `/proc/self/clear_refs`.

use quarry_coordinator::snapshot_file::{self, ROW_FINDINGS, RowWriter, SnapshotRef};
use quarry_coordinator::storage::Store;
use raft::eraftpb::Snapshot;

/// Snapshot size: well above the growth bound below.
const SNAPSHOT_BYTES: usize = 256 << 20;
/// Most the peak may grow while installing or building it: RocksDB's
/// memtables (64 MiB budget) and block cache (32 MiB), one 4 MiB batch and
/// I/O buffers, with room for allocator slack.
const GROWTH_BOUND: u64 = 128 << 20;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"))
}

/// Runs `f` and returns how far the peak resident size rose above the
/// resident size at the start.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (clear_refs)");
    let before = status_kib("VmRSS:") * 1024;
    let out = f();
    let peak = status_kib("VmHWM:") * 1024;
    (out, peak.saturating_sub(before))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[test]
fn a_snapshot_bigger_than_the_memory_bound_installs_and_builds_within_it() {
    let source = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let follower = Store::open(follower_dir.path()).expect("open");

    // The leader's file, as it would arrive: findings of 4 KiB each.
    let value_bytes = 4096;
    let mut writer =
        RowWriter::create(&snapshot_file::snapshot_dir(source.path())).expect("create");
    for seq in 0..(SNAPSHOT_BYTES / value_bytes) as u64 {
        let key = format!("h-1/{seq:016x}");
        let value: Vec<u8> = (0..value_bytes)
            .map(|i| (seq as usize + i * 7) as u8)
            .collect();
        writer
            .row(ROW_FINDINGS, key.as_bytes(), &value)
            .expect("row");
    }
    let reference = writer.finish(100, 3).expect("finish");
    std::fs::create_dir_all(follower.snapshot_dir()).expect("mkdir");
    std::fs::rename(
        snapshot_file::snapshot_dir(source.path()).join(reference.file_name()),
        follower.snapshot_dir().join(reference.file_name()),
    )
    .expect("move the file in");
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 100;
    snapshot.mut_metadata().term = 3;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1];
    snapshot.data = reference.encode().expect("encode").into();

    let (installed, install_growth) = peak_growth(|| follower.install_snapshot(&snapshot));
    let installed = installed.expect("install");
    assert_eq!(installed.applied_index, 100);

    let (built, build_growth) = peak_growth(|| follower.build_snapshot());
    let built = SnapshotRef::decode(&built.expect("build").data).expect("reference");
    assert_eq!(
        (built.bytes, built.sha256),
        (reference.bytes, reference.sha256),
        "the installed rows are the leader's, byte for byte"
    );

    println!(
        "snapshot {:.0} MiB: peak RSS grew {:.1} MiB installing it and {:.1} MiB building it (bound {:.0} MiB)",
        mib(reference.bytes),
        mib(install_growth),
        mib(build_growth),
        mib(GROWTH_BOUND)
    );
    assert!(
        install_growth < GROWTH_BOUND,
        "installing grew the peak by {:.1} MiB",
        mib(install_growth)
    );
    assert!(
        build_growth < GROWTH_BOUND,
        "building grew the peak by {:.1} MiB",
        mib(build_growth)
    );
}
