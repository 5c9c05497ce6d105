//! RocksDB persistence. Column families, one concern each:
//!
//! - `raft_log`: entries keyed by big-endian index;
//! - `raft_hard_state`: the hard state (term, vote, commit);
//! - `raft_conf_state`: the applied membership and the coordinators' address
//!   book (node id -> URL), which is replicated through conf changes and
//!   snapshots;
//! - `raft_snapshot`: metadata (index, term, conf state) of the last entry
//!   folded into the state machine and cut from the log;
//! - `state`: the state machine, one key per entity plus the applied point.
//!
//! Raft writes ([`Store::append`]) are one synced write batch, so entries and
//! hard state reach disk before any message that depends on them is sent. The
//! state machine's changes, its applied index and the membership go in one
//! batch ([`Store::persist_applied`]), so a restart resumes from a consistent
//! point and re-applies the rest of the log. Compaction ([`Store::compact`])
//! are single batches too. Snapshots are files (see [`crate::snapshot_file`]):
//! built from a RocksDB snapshot row by row, installed row by row in bounded
//! batches behind a synced "installing" marker, so a crash mid-install is
//! finished from the received file at the next start.

// rust-protobuf 2 messages carry private bookkeeping fields, so they are
// built by assigning to a default value, as in raft-rs's own examples.
#![allow(clippy::field_reassign_with_default)]

use crate::error::{CoordinatorError, Result};
use crate::snapshot_file::{
    self, ROW_CONF, ROW_FINDINGS, ROW_STATE, ROW_TRIAGE_LINKS, RowReader, RowWriter, SnapshotRef,
};
use crate::state::{Command, NewFinding, State, Touched};
use protobuf::Message as _;
use quarry_proto::{HuntId, ModuleDigest};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const CF_LOG: &str = "raft_log";
const CF_HARD_STATE: &str = "raft_hard_state";
const CF_CONF_STATE: &str = "raft_conf_state";
const CF_SNAPSHOT: &str = "raft_snapshot";
const CF_STATE: &str = "state";
/// Committed findings, one row each, keyed by hunt and sequence number;
/// never held in memory.
const CF_FINDINGS: &str = "findings";
/// Which findings make each triage alert: `<alert>\0<hunt>\0<seq>`, empty
/// values. Alerts keep only their first links in memory; this holds all.
const CF_TRIAGE_LINKS: &str = "triage_links";
/// Where the first versions kept hard state, conf state and snapshot point
/// together; moved into the families above on open.
const CF_LEGACY_META: &str = "raft_meta";

const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
const KEY_PEERS: &[u8] = b"peers";
/// [`SnapshotMetadata`] of the last entry cut from the log (absent: none).
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_metadata";
/// In `raft_snapshot` while a snapshot install is under way: the snapshot's
/// reference and metadata, so a start-up finishes the install.
const KEY_INSTALLING: &[u8] = b"installing";
/// Rows per write while installing a snapshot, by encoded size.
const INSTALL_BATCH_BYTES: usize = 4 << 20;
/// The legacy `(index, term)` snapshot point in `raft_meta`.
const KEY_LEGACY_SNAPSHOT_POINT: &[u8] = b"snapshot_point";
const KEY_APPLIED: &[u8] = b"applied";
/// The replicated hunt clock ([`State::clock_ms`]).
const KEY_CLOCK: &[u8] = b"clock";
/// How many times this node has started: part of every proposal's context,
/// so an entry proposed before a restart never answers a waiter of this boot.
const KEY_BOOT: &[u8] = b"boot";

/// Index and term at which a new cluster's membership is recorded: its log
/// starts after a snapshot at this point, so a node that joins later always
/// gets a snapshot (membership and address book) before any entry.
pub const BOOTSTRAP_INDEX: u64 = 1;
const BOOTSTRAP_TERM: u64 = 1;

/// Memory all memtables may take together.
const MEMTABLE_BUDGET: usize = 64 << 20;
/// One family's memtable before it is flushed.
const MEMTABLE_BYTES: usize = 16 << 20;
/// The block cache all families share.
const BLOCK_CACHE_BYTES: usize = 32 << 20;

/// Coordinator raft ids and the URLs they serve gRPC on.
pub type AddressBook = BTreeMap<u64, String>;

/// The coordinator's RocksDB database.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    path: PathBuf,
    /// Where snapshot files are built and received.
    snapshots: PathBuf,
    bounds: Arc<LogBounds>,
}

/// The log's first and last index, remembered: raft-rs asks for them (and
/// for the term at the snapshot point) on every message, and reading them
/// from RocksDB means an iterator seek past the range deletions compaction
/// leaves, on the raft thread. Only the raft thread writes the log, through
/// the methods below, which keep these current.
#[derive(Debug)]
struct LogBounds {
    /// Last index in the log; [`UNKNOWN`] until read, 0 for an empty log.
    last: std::sync::atomic::AtomicU64,
    /// The snapshot point (index, term), once read.
    snapshot: Mutex<Option<(u64, u64)>>,
}

const UNKNOWN: u64 = u64::MAX;

impl Default for LogBounds {
    fn default() -> Self {
        Self {
            last: std::sync::atomic::AtomicU64::new(UNKNOWN),
            snapshot: Mutex::new(None),
        }
    }
}

/// A reference to the database that does not keep it open: handles read
/// through it while the node runs, and stopping the node still releases
/// the data directory.
#[derive(Clone)]
pub struct WeakStore {
    db: std::sync::Weak<DB>,
    path: PathBuf,
    snapshots: PathBuf,
    bounds: Arc<LogBounds>,
}

impl WeakStore {
    /// Where the store's snapshot files are.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshots
    }

    /// The store, unless the node has stopped and closed it.
    pub fn upgrade(&self) -> Option<Store> {
        Some(Store {
            db: self.db.upgrade()?,
            path: self.path.clone(),
            snapshots: self.snapshots.clone(),
            bounds: self.bounds.clone(),
        })
    }
}

/// The state machine as last persisted, and where it stands in the log.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    /// The state.
    pub state: State,
    /// Last applied raft index.
    pub applied_index: u64,
    /// Term of that entry.
    pub applied_term: u64,
    /// Current membership.
    pub conf_state: ConfState,
    /// Every member's URL, as replicated through conf changes and snapshots.
    pub peers: AddressBook,
}

impl Replica {
    /// Records `entry` as applied (its effects are in `state` already).
    pub fn advance_applied(&mut self, entry: &Entry) {
        if entry.index > self.applied_index {
            self.applied_index = entry.index;
            self.applied_term = entry.term;
        }
    }
}

/// Prefix of the triage state's rows in the state family.
const TRIAGE_ROW_PREFIX: &[u8] = b"x/";
/// Audit records: `a/<8-byte big-endian sequence number>`.
const AUDIT_ROW_PREFIX: &[u8] = b"a/";
/// The audit trail's numbering.
const KEY_AUDIT_META: &[u8] = b"audit";
/// Whether modules must be signed.
const KEY_MODULE_POLICY: &[u8] = b"module-policy";

impl Store {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        // The store holds findings and hunt parameters (intel sets): only
        // the coordinator's user may read it, whatever the umask. RocksDB
        // creates its files with the umask, so the directories guard them.
        let private = |path: &Path| -> std::io::Result<()> {
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        };
        private(dir)
            .and_then(|()| private(&dir.join("rocksdb")))
            .map_err(|source| CoordinatorError::Io {
                context: format!(
                    "cannot create the coordinator data directory {} (mode 0700)",
                    dir.display()
                ),
                source,
            })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Memtables of all families share one budget: by default each of the
        // seven families may hold two 64 MiB memtables, and the log and
        // findings families fill theirs under a findings-heavy hunt.
        options.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let path = dir.join("rocksdb");
        let legacy = DB::list_cf(&options, &path)
            .map(|cfs| cfs.iter().any(|cf| cf == CF_LEGACY_META))
            .unwrap_or(false);
        // One block cache for every family (by default each gets its own).
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut names = vec![
            CF_LOG,
            CF_HARD_STATE,
            CF_CONF_STATE,
            CF_SNAPSHOT,
            CF_STATE,
            CF_FINDINGS,
            CF_TRIAGE_LINKS,
        ];
        if legacy {
            names.push(CF_LEGACY_META);
        }
        let cfs = names.into_iter().map(|name| {
            let mut family = Options::default();
            family.set_block_based_table_factory(&table);
            family.set_write_buffer_size(MEMTABLE_BYTES);
            family.set_max_write_buffer_number(2);
            ColumnFamilyDescriptor::new(name, family)
        });
        let db = DB::open_cf_descriptors(&options, &path, cfs).map_err(|source| {
            CoordinatorError::Storage {
                path: path.display().to_string(),
                source,
            }
        })?;
        let mut store = Self {
            db: Arc::new(db),
            path,
            snapshots: snapshot_file::snapshot_dir(dir),
            bounds: Arc::default(),
        };
        if legacy {
            store.migrate_legacy_meta()?;
        }
        store.migrate_task_findings()?;
        store.finish_interrupted_install()?;
        Ok(store)
    }

    /// Moves findings from the per-task rows (`f/<task>`, every finding of
    /// a task in one value, all loaded into memory) of earlier versions into
    /// one row per finding in the `findings` family, numbered per hunt in
    /// task order.
    fn migrate_task_findings(&self) -> Result<()> {
        let state = self.cf(CF_STATE)?;
        let mut batch = WriteBatch::default();
        let mut next: BTreeMap<HuntId, u64> = BTreeMap::new();
        let mut moved = 0u64;
        let rows = self.db.iterator_cf(
            state,
            IteratorMode::From(b"f/", rocksdb::Direction::Forward),
        );
        for item in rows {
            let (key, value) = item.map_err(|e| self.err(e))?;
            if !key.starts_with(b"f/") {
                break;
            }
            let findings: Vec<crate::state::FindingRecord> = decode(&key, &value)?;
            for finding in findings {
                let hunt = hunt_of_task(&finding.task);
                let seq = next.entry(hunt.clone()).or_default();
                batch.put_cf(
                    self.cf(CF_FINDINGS)?,
                    finding_key(&hunt, *seq),
                    encode(&finding)?,
                );
                *seq += 1;
                moved += 1;
            }
            batch.delete_cf(state, &key);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.err(e))?;
        tracing::info!(findings = moved, "moved findings into one row each");
        Ok(())
    }

    /// Up to `limit` findings of `hunt` from number `from` on, in commit
    /// order, with their numbers.
    pub fn findings(
        &self,
        hunt: &HuntId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::state::FindingRecord)>> {
        let prefix = finding_prefix(hunt);
        let start = finding_key(hunt, from);
        let rows = self.db.iterator_cf(
            self.cf(CF_FINDINGS)?,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in rows {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| self.err(e))?;
            let Some(seq) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let seq = <[u8; 8]>::try_from(seq).map_err(|_| CoordinatorError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                detail: "a finding key must end in an 8-byte number".to_owned(),
            })?;
            out.push((u64::from_be_bytes(seq), decode(&key, &value)?));
        }
        Ok(out)
    }

    /// Moves the keys of the old shared `raft_meta` family into their own families.
    fn migrate_legacy_meta(&mut self) -> Result<()> {
        let mut batch = WriteBatch::default();
        if let Some(hs) = self.get(CF_LEGACY_META, KEY_HARD_STATE)? {
            batch.put_cf(self.cf(CF_HARD_STATE)?, KEY_HARD_STATE, hs);
        }
        let conf = self.get(CF_LEGACY_META, KEY_CONF_STATE)?;
        if let Some(conf) = &conf {
            batch.put_cf(self.cf(CF_CONF_STATE)?, KEY_CONF_STATE, conf);
        }
        if let Some(point) = self.get(CF_LEGACY_META, KEY_LEGACY_SNAPSHOT_POINT)? {
            let (index, term): (u64, u64) = decode(KEY_LEGACY_SNAPSHOT_POINT, &point)?;
            let mut meta = SnapshotMetadata::default();
            meta.index = index;
            meta.term = term;
            if let Some(conf) = &conf {
                meta.set_conf_state(ConfState::parse_from_bytes(conf).map_err(|e| {
                    CoordinatorError::Corrupt {
                        key: "conf_state".to_owned(),
                        detail: e.to_string(),
                    }
                })?);
            }
            batch.put_cf(
                self.cf(CF_SNAPSHOT)?,
                KEY_SNAPSHOT_META,
                Self::pb_bytes(&meta)?,
            );
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.err(e))?;
        self.snapshot_point_changed();
        let db = Arc::get_mut(&mut self.db).ok_or_else(|| CoordinatorError::Corrupt {
            key: CF_LEGACY_META.to_owned(),
            detail: "database shared during migration".to_owned(),
        })?;
        db.drop_cf(CF_LEGACY_META)
            .map_err(|source| CoordinatorError::Storage {
                path: self.path.display().to_string(),
                source,
            })?;
        tracing::info!(path = %self.path.display(), "moved raft metadata into per-kind column families");
        Ok(())
    }

    /// A reference that does not keep the database open.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore {
            db: Arc::downgrade(&self.db),
            path: self.path.clone(),
            snapshots: self.snapshots.clone(),
            bounds: self.bounds.clone(),
        }
    }

    fn err(&self, source: rocksdb::Error) -> CoordinatorError {
        CoordinatorError::Storage {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| CoordinatorError::Corrupt {
                key: name.to_owned(),
                detail: "column family missing".to_owned(),
            })
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(|e| self.err(e))
    }

    fn get_pb<M: protobuf::Message>(&self, cf: &str, key: &[u8]) -> Result<Option<M>> {
        self.get(cf, key)?
            .map(|bytes| {
                M::parse_from_bytes(&bytes).map_err(|e| CoordinatorError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    fn pb_bytes<M: protobuf::Message>(message: &M) -> Result<Vec<u8>> {
        message
            .write_to_bytes()
            .map_err(|e| CoordinatorError::Corrupt {
                key: "protobuf encode".to_owned(),
                detail: e.to_string(),
            })
    }

    /// Whether raft has never written anything here.
    pub fn is_fresh(&self) -> Result<bool> {
        Ok(self.get(CF_HARD_STATE, KEY_HARD_STATE)?.is_none()
            && self.get(CF_CONF_STATE, KEY_CONF_STATE)?.is_none())
    }

    /// Writes the initial membership and address book of a new cluster, as a
    /// snapshot point at [`BOOTSTRAP_INDEX`] (every founding member writes the
    /// same one).
    pub fn bootstrap(&self, voters: &[u64], peers: &AddressBook) -> Result<()> {
        let mut conf = ConfState::default();
        conf.voters = voters.to_vec();
        let mut meta = SnapshotMetadata::default();
        meta.index = BOOTSTRAP_INDEX;
        meta.term = BOOTSTRAP_TERM;
        meta.set_conf_state(conf.clone());
        let mut hs = HardState::default();
        hs.term = BOOTSTRAP_TERM;
        hs.commit = BOOTSTRAP_INDEX;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_CONF_STATE)?,
            KEY_CONF_STATE,
            Self::pb_bytes(&conf)?,
        );
        batch.put_cf(self.cf(CF_CONF_STATE)?, KEY_PEERS, encode(peers)?);
        batch.put_cf(
            self.cf(CF_SNAPSHOT)?,
            KEY_SNAPSHOT_META,
            Self::pb_bytes(&meta)?,
        );
        batch.put_cf(
            self.cf(CF_HARD_STATE)?,
            KEY_HARD_STATE,
            Self::pb_bytes(&hs)?,
        );
        batch.put_cf(
            self.cf(CF_STATE)?,
            KEY_APPLIED,
            encode(&(BOOTSTRAP_INDEX, BOOTSTRAP_TERM))?,
        );
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.err(e))?;
        self.snapshot_point_changed();
        Ok(())
    }

    /// Metadata of the last entry cut from the log (index 0 when none).
    pub fn snapshot_metadata(&self) -> Result<SnapshotMetadata> {
        Ok(self
            .get_pb(CF_SNAPSHOT, KEY_SNAPSHOT_META)?
            .unwrap_or_default())
    }

    /// The state-machine commands still in the log, with their indexes, in
    /// log order (conf changes and a new leader's empty entries left out):
    /// what replaying the log from the last snapshot applies.
    pub fn logged_commands(&self) -> Result<Vec<(u64, Command)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LOG)?, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.err(e))?;
            let index = index_of(&key)?;
            let entry = Entry::parse_from_bytes(&value).map_err(|e| CoordinatorError::Corrupt {
                key: format!("log entry {index}"),
                detail: e.to_string(),
            })?;
            if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                out.push((index, decode(b"log entry", &entry.data)?));
            }
        }
        Ok(out)
    }

    fn snapshot_point(&self) -> Result<(u64, u64)> {
        if let Ok(known) = self.bounds.snapshot.lock()
            && let Some(point) = *known
        {
            return Ok(point);
        }
        let meta = self.snapshot_metadata()?;
        let point = (meta.index, meta.term);
        if let Ok(mut known) = self.bounds.snapshot.lock() {
            *known = Some(point);
        }
        Ok(point)
    }

    /// Forgets the snapshot point after it was rewritten.
    fn snapshot_point_changed(&self) {
        if let Ok(mut known) = self.bounds.snapshot.lock() {
            *known = None;
        }
    }

    fn last_log_index(&self) -> Result<Option<u64>> {
        use std::sync::atomic::Ordering;
        let known = self.bounds.last.load(Ordering::Acquire);
        if known != UNKNOWN {
            return Ok((known != 0).then_some(known));
        }
        let mut iter = self.db.iterator_cf(self.cf(CF_LOG)?, IteratorMode::End);
        let last = match iter.next() {
            Some(Ok((key, _))) => Some(index_of(&key)?),
            Some(Err(e)) => return Err(self.err(e)),
            None => None,
        };
        self.bounds.last.store(last.unwrap_or(0), Ordering::Release);
        Ok(last)
    }

    /// Persists new log entries (replacing any conflicting suffix) and the hard
    /// state in one synced batch.
    pub fn append(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let log = self.cf(CF_LOG)?;
        if let Some(last) = entries.last() {
            // Entries after the new tail came from an old leader and are void.
            if let Some(old_last) = self.last_log_index()?
                && old_last > last.index
            {
                batch.delete_range_cf(log, index_key(last.index + 1), index_key(old_last + 1));
            }
            for entry in entries {
                batch.put_cf(log, index_key(entry.index), Self::pb_bytes(entry)?);
            }
        }
        if let Some(hs) = hard_state {
            batch.put_cf(self.cf(CF_HARD_STATE)?, KEY_HARD_STATE, Self::pb_bytes(hs)?);
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.err(e))?;
        if let Some(last) = entries.last() {
            // The new tail replaced any longer one.
            self.bounds
                .last
                .store(last.index, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Updates only the commit index of the hard state.
    pub fn set_commit(&self, commit: u64) -> Result<()> {
        let mut hs = self.hard_state()?;
        hs.commit = commit;
        self.append(&[], Some(&hs))
    }

    /// Counts this start of the node and returns its number (1 for the
    /// first), synced before any proposal can carry it.
    pub fn next_boot(&self) -> Result<u64> {
        let boot = match self.get(CF_HARD_STATE, KEY_BOOT)? {
            Some(bytes) => decode::<u64>(KEY_BOOT, &bytes)? + 1,
            None => 1,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_HARD_STATE)?, KEY_BOOT, encode(&boot)?);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.err(e))?;
        Ok(boot)
    }

    /// The hard state as stored (default before the first write).
    pub fn hard_state(&self) -> Result<HardState> {
        Ok(self
            .get_pb(CF_HARD_STATE, KEY_HARD_STATE)?
            .unwrap_or_default())
    }

    /// Makes the stored commit index cover `applied`. Everything applied was
    /// committed, but a store written before entries and hard state were
    /// persisted ahead of applying (or copied mid-write) can hold an older
    /// commit; raft-rs refuses to start with `applied > commit`, so the
    /// commit is raised, as TiKV does on load. Returns whether it changed.
    pub fn raise_commit_to(&self, applied: u64) -> Result<bool> {
        let hs = self.hard_state()?;
        if hs.commit >= applied {
            return Ok(false);
        }
        tracing::warn!(
            commit = hs.commit,
            applied,
            "the stored commit index is behind the applied index; raising it"
        );
        self.set_commit(applied)?;
        Ok(true)
    }

    /// Persists an address book learnt outside the log (a joining node's
    /// first view, from the member that admitted it).
    pub fn set_peers(&self, peers: &AddressBook) -> Result<()> {
        self.db
            .put_cf(self.cf(CF_CONF_STATE)?, KEY_PEERS, encode(peers)?)
            .map_err(|e| self.err(e))
    }

    /// Cuts the log up to and including `index` (an applied entry): its
    /// metadata becomes the snapshot point, the state machine in `state`
    /// already holds everything up to it. Returns the number of entries cut.
    pub fn compact(&self, index: u64, conf_state: &ConfState) -> Result<u64> {
        let (first_kept, _) = self.snapshot_point()?;
        if index <= first_kept {
            return Ok(0);
        }
        let term = match self.get(CF_LOG, &index_key(index))? {
            Some(bytes) => {
                Entry::parse_from_bytes(&bytes)
                    .map_err(|e| CoordinatorError::Corrupt {
                        key: format!("log entry {index}"),
                        detail: e.to_string(),
                    })?
                    .term
            }
            None => {
                return Err(CoordinatorError::Corrupt {
                    key: format!("log entry {index}"),
                    detail: "an applied entry is missing from the log".to_owned(),
                });
            }
        };
        let mut meta = SnapshotMetadata::default();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state.clone());
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG)?, index_key(0), index_key(index + 1));
        batch.put_cf(
            self.cf(CF_SNAPSHOT)?,
            KEY_SNAPSHOT_META,
            Self::pb_bytes(&meta)?,
        );
        self.db.write(batch).map_err(|e| self.err(e))?;
        self.snapshot_point_changed();
        Ok(index - first_kept)
    }

    /// Writes the entities `touched` changed, the findings committed and the
    /// applied point, atomically.
    pub fn persist_applied(
        &self,
        replica: &mut Replica,
        touched: &[Touched],
        findings: &[NewFinding],
        triage: &[quarry_triage::Effect],
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.batch_applied(&mut batch, replica, touched)?;
        let cf = self.cf(CF_FINDINGS)?;
        for finding in findings {
            batch.put_cf(
                cf,
                finding_key(&finding.hunt, finding.seq),
                encode(&finding.record)?,
            );
        }
        // In order: a link put and its alert's eviction in one batch leave
        // nothing behind.
        let links = self.cf(CF_TRIAGE_LINKS)?;
        for effect in triage {
            match effect {
                quarry_triage::Effect::Link { alert, hunt, seq } => {
                    batch.put_cf(links, link_key(&alert.to_string(), hunt, *seq), []);
                }
                quarry_triage::Effect::AlertEvicted { alert } => {
                    let (from, to) = prefix_range(link_prefix(&alert.to_string()));
                    batch.delete_range_cf(links, from, to);
                }
                _ => {}
            }
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Up to `limit` findings of triage alert `alert`, from its `from`-th
    /// link on, in link order (hunt, then number), with their hunt and
    /// number. A finding of a deleted hunt is left out.
    pub fn alert_findings(
        &self,
        alert: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<(HuntId, u64, crate::state::FindingRecord)>> {
        let prefix = link_prefix(alert);
        let rows = self.db.iterator_cf(
            self.cf(CF_TRIAGE_LINKS)?,
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in rows.skip(from) {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(|e| self.err(e))?;
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let corrupt = || CoordinatorError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                detail: "a triage link must be <alert>\\0<hunt>\\0<8-byte number>".to_owned(),
            };
            let split = rest.len().checked_sub(9).ok_or_else(corrupt)?;
            let (hunt, seq) = rest.split_at(split);
            let seq = <[u8; 8]>::try_from(&seq[1..]).map_err(|_| corrupt())?;
            let seq = u64::from_be_bytes(seq);
            let hunt = HuntId::new(String::from_utf8_lossy(hunt).into_owned());
            if let Some((_, record)) = self
                .findings(&hunt, seq, 1)?
                .into_iter()
                .next()
                .filter(|(n, _)| *n == seq)
            {
                out.push((hunt, seq, record));
            }
        }
        Ok(out)
    }

    /// Adds the entities `touched` changed, the applied point and the
    /// membership to `batch`.
    fn batch_applied(
        &self,
        batch: &mut WriteBatch,
        replica: &mut Replica,
        touched: &[Touched],
    ) -> Result<()> {
        let cf = self.cf(CF_STATE)?;
        for key in touched {
            if let Touched::Hunt(id) = key {
                // The status row leaves the definition (parameters, task
                // list) out: it is written once, in its own row, not with
                // every report. Taken out and put back rather than cloned:
                // both can be large, and this runs for every report.
                let k = entity_key(b'h', id.as_str());
                match replica.state.hunts.get_mut(id) {
                    Some(hunt) => {
                        let params = std::mem::take(&mut hunt.spec.params);
                        let tasks = std::mem::take(&mut hunt.tasks);
                        let status = encode(&*hunt);
                        hunt.spec.params = params;
                        hunt.tasks = tasks;
                        batch.put_cf(cf, k, status?);
                    }
                    None => batch.delete_cf(cf, k),
                }
                continue;
            }
            let state = &replica.state;
            let (k, value) = match key {
                Touched::Module(id) => (
                    entity_key(b'm', id.as_str()),
                    state.modules.get(id).map(encode).transpose()?,
                ),
                Touched::Worker(id) => (
                    entity_key(b'w', id.as_str()),
                    state.workers.get(id).map(encode).transpose()?,
                ),
                Touched::Shard(id) => (
                    entity_key(b's', id.as_str()),
                    state.shards.get(id).map(encode).transpose()?,
                ),
                Touched::Hunt(_) => continue,
                Touched::HuntDefinition(id) => (
                    entity_key(b'p', id.as_str()),
                    state
                        .hunts
                        .get(id)
                        .map(|h| match &h.traceparent {
                            // Untraced hunts keep the row as it always was.
                            None => encode(&(&h.spec.params, &h.tasks)),
                            Some(traceparent) => encode(&(&h.spec.params, &h.tasks, traceparent)),
                        })
                        .transpose()?,
                ),
                Touched::Task(id) => (
                    entity_key(b't', id.as_str()),
                    state.tasks.get(id).map(encode).transpose()?,
                ),
                Touched::Request(id) => (
                    entity_key(b'r', id.as_str()),
                    state.requests.get(id).map(encode).transpose()?,
                ),
                Touched::Clock => (KEY_CLOCK.to_vec(), Some(encode(&state.clock_ms)?)),
                Touched::Token(id) => (
                    entity_key(b'k', id),
                    state.tokens.get(id).map(encode).transpose()?,
                ),
                Touched::Audit(seq) => {
                    let mut k = AUDIT_ROW_PREFIX.to_vec();
                    k.extend_from_slice(&seq.to_be_bytes());
                    (k, state.audit.entries.get(seq).map(encode).transpose()?)
                }
                Touched::AuditMeta => (KEY_AUDIT_META.to_vec(), Some(encode(&state.audit.meta)?)),
                Touched::ModuleOwner(name) => (
                    entity_key(b'o', name),
                    state.trust.owners.get(name).map(encode).transpose()?,
                ),
                Touched::TrustedKey(name) => (
                    entity_key(b'y', name),
                    state.trust.keys.get(name).map(encode).transpose()?,
                ),
                Touched::ModuleSignature(digest) => (
                    entity_key(b'g', digest.as_str()),
                    state.trust.signatures.get(digest).map(encode).transpose()?,
                ),
                Touched::Schedule(id) => (
                    entity_key(b'e', id.as_str()),
                    state.schedules.by_id.get(id).map(encode).transpose()?,
                ),
                Touched::IntelSet(name, version) => (
                    entity_key(b'n', &format!("{name}/{version:010}")),
                    state.intel.get(name, *version).map(encode).transpose()?,
                ),
                Touched::RulePack(name, version) => (
                    entity_key(b'u', &format!("{name}/{version:010}")),
                    state
                        .rule_packs
                        .get(name, *version)
                        .map(encode)
                        .transpose()?,
                ),
                Touched::ModulePolicy => (
                    KEY_MODULE_POLICY.to_vec(),
                    Some(encode(&state.trust.require_signed)?),
                ),
                Touched::Triage(row) => {
                    let mut k = TRIAGE_ROW_PREFIX.to_vec();
                    k.extend_from_slice(&row.to_bytes());
                    (k, state.triage.row(row).map(|r| encode(&r)).transpose()?)
                }
                Touched::FindingsOf(hunt) => {
                    let from = finding_prefix(hunt);
                    let mut to = from.clone();
                    // The prefix ends in NUL; the next hunt's rows start after 0x01.
                    if let Some(last) = to.last_mut() {
                        *last = 1;
                    }
                    batch.delete_range_cf(self.cf(CF_FINDINGS)?, from, to);
                    continue;
                }
            };
            match value {
                Some(bytes) => batch.put_cf(cf, k, bytes),
                None => batch.delete_cf(cf, k),
            }
        }
        batch.put_cf(
            cf,
            KEY_APPLIED,
            encode(&(replica.applied_index, replica.applied_term))?,
        );
        // Membership changes only through applied entries: keep it with them.
        let conf = self.cf(CF_CONF_STATE)?;
        batch.put_cf(conf, KEY_CONF_STATE, Self::pb_bytes(&replica.conf_state)?);
        batch.put_cf(conf, KEY_PEERS, encode(&replica.peers)?);
        Ok(())
    }

    /// Loads the state machine and membership.
    pub fn load_replica(&self) -> Result<Replica> {
        let mut replica = Replica {
            conf_state: self
                .get_pb(CF_CONF_STATE, KEY_CONF_STATE)?
                .unwrap_or_default(),
            peers: match self.get(CF_CONF_STATE, KEY_PEERS)? {
                Some(bytes) => decode(KEY_PEERS, &bytes)?,
                None => AddressBook::new(),
            },
            ..Replica::default()
        };
        let cf = self.cf(CF_STATE)?;
        // Hunt definitions live in rows of their own (see `batch_applied`);
        // attached once every hunt is loaded.
        let mut definitions = Vec::new();
        let mut triage_rows = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.err(e))?;
            if &*key == KEY_APPLIED {
                (replica.applied_index, replica.applied_term) = decode(&key, &value)?;
                continue;
            }
            if &*key == KEY_CLOCK {
                replica.state.clock_ms = decode(&key, &value)?;
                continue;
            }
            if &*key == KEY_AUDIT_META {
                replica.state.audit.meta = decode(&key, &value)?;
                continue;
            }
            if &*key == KEY_MODULE_POLICY {
                replica.state.trust.require_signed = decode(&key, &value)?;
                continue;
            }
            if let Some(seq) = key.strip_prefix(AUDIT_ROW_PREFIX) {
                let seq = <[u8; 8]>::try_from(seq).map_err(|_| CoordinatorError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    detail: "an audit row's key must be a/<8-byte number>".to_owned(),
                })?;
                replica
                    .state
                    .audit
                    .entries
                    .insert(u64::from_be_bytes(seq), decode(&key, &value)?);
                continue;
            }
            if let Some(row) = key.strip_prefix(TRIAGE_ROW_PREFIX) {
                let row_key = quarry_triage::RowKey::from_bytes(row).map_err(|e| {
                    CoordinatorError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        detail: e.to_string(),
                    }
                })?;
                triage_rows.push((row_key, decode::<quarry_triage::Row>(&key, &value)?));
                continue;
            }
            let state = &mut replica.state;
            match key.first() {
                Some(b'm') => insert(
                    &mut state.modules,
                    &key,
                    &value,
                    |m: &crate::state::ModuleRecord| m.digest.clone(),
                )?,
                Some(b'w') => insert(
                    &mut state.workers,
                    &key,
                    &value,
                    |w: &crate::state::WorkerRecord| w.id.clone(),
                )?,
                Some(b's') => insert(
                    &mut state.shards,
                    &key,
                    &value,
                    |s: &crate::state::ShardRecord| s.description.name.clone(),
                )?,
                Some(b'h') => insert(
                    &mut state.hunts,
                    &key,
                    &value,
                    |h: &crate::state::HuntRecord| h.id.clone(),
                )?,
                Some(b't') => insert(
                    &mut state.tasks,
                    &key,
                    &value,
                    |t: &crate::state::TaskRecord| t.id.clone(),
                )?,
                Some(b'p') => {
                    let definition = decode_definition(&key, &value)?;
                    definitions.push((
                        HuntId::new(String::from_utf8_lossy(&key[2..]).into_owned()),
                        definition,
                    ));
                }
                Some(b'e') => insert(
                    &mut state.schedules.by_id,
                    &key,
                    &value,
                    |s: &crate::schedules::ScheduleRecord| s.id.clone(),
                )?,
                Some(b'n') => {
                    let record: crate::intel_store::IntelSetRecord = decode(&key, &value)?;
                    state
                        .intel
                        .sets
                        .entry(record.name.clone())
                        .or_default()
                        .insert(record.version, record);
                }
                Some(b'u') => {
                    let record: crate::rule_packs::RulePackRecord = decode(&key, &value)?;
                    state
                        .rule_packs
                        .packs
                        .entry(record.name.clone())
                        .or_default()
                        .insert(record.version, record);
                }
                Some(b'o' | b'y' | b'g') => {
                    let name =
                        String::from_utf8_lossy(key.get(2..).unwrap_or_default()).into_owned();
                    let trust = &mut state.trust;
                    match key[0] {
                        b'o' => {
                            trust.owners.insert(name, decode(&key, &value)?);
                        }
                        b'y' => {
                            trust.keys.insert(name, decode(&key, &value)?);
                        }
                        _ => {
                            trust
                                .signatures
                                .insert(ModuleDigest::new(name), decode(&key, &value)?);
                        }
                    }
                }
                Some(b'k') => insert(
                    &mut state.tokens,
                    &key,
                    &value,
                    |t: &crate::state::TokenRecord| t.id.clone(),
                )?,
                Some(b'r') => {
                    let record: crate::state::RequestRecord = decode(&key, &value)?;
                    let request = quarry_proto::RequestId::new(
                        String::from_utf8_lossy(&key[2..]).into_owned(),
                    );
                    state.requests.insert(request, record);
                }
                _ => {
                    return Err(CoordinatorError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        detail: "unknown key in the state column family".to_owned(),
                    });
                }
            }
        }
        for (id, (params, tasks, traceparent)) in definitions {
            match replica.state.hunts.get_mut(&id) {
                Some(hunt) => {
                    hunt.spec.params = params;
                    hunt.tasks = tasks;
                    hunt.traceparent = traceparent;
                }
                None => {
                    return Err(CoordinatorError::Corrupt {
                        key: format!("p/{id}"),
                        detail: "the definition of a hunt that is not stored".to_owned(),
                    });
                }
            }
        }
        // No rows: triage never changed since the store was created.
        if !triage_rows.is_empty() {
            replica.state.triage = quarry_triage::Triage::from_rows(triage_rows).map_err(|e| {
                CoordinatorError::Corrupt {
                    key: "x/ (triage)".to_owned(),
                    detail: e.to_string(),
                }
            })?;
        }
        Ok(replica)
    }

    /// The directory snapshot files are built in and received into.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshots
    }

    /// Replaces the log, the state machine, the findings and the membership
    /// with the snapshot file a MsgSnapshot names (received beforehand into
    /// [`Store::snapshot_dir`]), and returns the replica it holds.
    ///
    /// The file is checked against its digest before anything is touched.
    /// Rows go in bounded batches, so memory does not grow with the
    /// snapshot; a synced marker covers the install, and a start-up that
    /// finds it finishes the install from the same file
    /// ([`Store::open`]), so a crash leaves the old replica or the new one.
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<Replica> {
        let reference = SnapshotRef::decode(&snapshot.data)?;
        let meta = snapshot.get_metadata();
        if (reference.index, reference.term) != (meta.index, meta.term) {
            return Err(CoordinatorError::Corrupt {
                key: "snapshot".to_owned(),
                detail: format!(
                    "the snapshot message is at index {} term {} but names the file of index {} term {}",
                    meta.index, meta.term, reference.index, reference.term
                ),
            });
        }
        self.install_from_file(&reference, meta, None)?;
        self.load_replica()
    }

    /// Writes a snapshot file's rows in place of the replica's. With
    /// `stop_after`, returns an error after that many row batches, as a
    /// crash would (tests).
    fn install_from_file(
        &self,
        reference: &SnapshotRef,
        meta: &SnapshotMetadata,
        stop_after: Option<usize>,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let mut rows = RowReader::open(&self.snapshots, reference)?;
        let synced = {
            let mut options = WriteOptions::default();
            options.set_sync(true);
            options
        };
        let write = |batch: WriteBatch, options: &WriteOptions| {
            self.db.write_opt(batch, options).map_err(|e| self.err(e))
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_SNAPSHOT)?,
            KEY_INSTALLING,
            encode(&(reference, Self::pb_bytes(meta)?))?,
        );
        batch.delete_range_cf(self.cf(CF_LOG)?, index_key(0), index_key(u64::MAX));
        // Every key of these families starts with an ASCII letter or digit.
        for cf in [CF_STATE, CF_FINDINGS, CF_TRIAGE_LINKS] {
            batch.delete_range_cf(self.cf(cf)?, [0u8].as_slice(), [0xffu8; 9].as_slice());
        }
        write(batch, &synced)?;
        let mut batch = WriteBatch::default();
        let (mut count, mut batches) = (0u64, 0usize);
        while let Some((family, key, value)) = rows.next_row()? {
            let cf = match family {
                ROW_STATE => CF_STATE,
                ROW_FINDINGS => CF_FINDINGS,
                ROW_CONF => CF_CONF_STATE,
                ROW_TRIAGE_LINKS => CF_TRIAGE_LINKS,
                other => {
                    return Err(CoordinatorError::Corrupt {
                        key: rows.path().display().to_string(),
                        detail: format!("unknown row family {other}"),
                    });
                }
            };
            batch.put_cf(self.cf(cf)?, key, value);
            count += 1;
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                // Unsynced: the final synced write syncs the WAL behind it.
                write(std::mem::take(&mut batch), &WriteOptions::default())?;
                batches += 1;
                if stop_after == Some(batches) {
                    return Err(CoordinatorError::NodeStopped);
                }
            }
        }
        batch.put_cf(
            self.cf(CF_STATE)?,
            KEY_APPLIED,
            encode(&(meta.index, meta.term))?,
        );
        batch.put_cf(
            self.cf(CF_CONF_STATE)?,
            KEY_CONF_STATE,
            Self::pb_bytes(meta.get_conf_state())?,
        );
        batch.put_cf(
            self.cf(CF_SNAPSHOT)?,
            KEY_SNAPSHOT_META,
            Self::pb_bytes(meta)?,
        );
        let mut hs = self.hard_state()?;
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        batch.put_cf(
            self.cf(CF_HARD_STATE)?,
            KEY_HARD_STATE,
            Self::pb_bytes(&hs)?,
        );
        batch.delete_cf(self.cf(CF_SNAPSHOT)?, KEY_INSTALLING);
        write(batch, &synced)?;
        self.snapshot_point_changed();
        self.bounds
            .last
            .store(0, std::sync::atomic::Ordering::Release);
        snapshot_file::remove_up_to(&self.snapshots, reference.index, false);
        tracing::info!(
            index = reference.index,
            rows = count,
            bytes = reference.bytes,
            elapsed = ?started.elapsed(),
            "snapshot installed"
        );
        Ok(())
    }

    /// At start-up: finishes a snapshot install a crash interrupted (its
    /// file was complete and synced before the install began), and clears
    /// files no install will need.
    fn finish_interrupted_install(&self) -> Result<()> {
        let Some(bytes) = self.get(CF_SNAPSHOT, KEY_INSTALLING)? else {
            snapshot_file::remove_up_to(&self.snapshots, u64::MAX, true);
            return Ok(());
        };
        let (reference, meta): (SnapshotRef, Vec<u8>) = decode(KEY_INSTALLING, &bytes)?;
        let meta =
            SnapshotMetadata::parse_from_bytes(&meta).map_err(|e| CoordinatorError::Corrupt {
                key: "installing".to_owned(),
                detail: e.to_string(),
            })?;
        tracing::warn!(
            index = reference.index,
            "a snapshot install was interrupted; finishing it from the received file"
        );
        self.install_from_file(&reference, &meta, None).map_err(|e| {
            CoordinatorError::Corrupt {
                key: "installing".to_owned(),
                detail: format!(
                    "a snapshot install was interrupted and cannot be finished ({e}); the replica is incomplete: stop this coordinator, move its data directory away, and add it to the cluster again so it receives a fresh copy"
                ),
            }
        })?;
        snapshot_file::remove_up_to(&self.snapshots, u64::MAX, true);
        Ok(())
    }

    /// A snapshot of everything applied, read from one RocksDB snapshot
    /// row by row into a file in [`Store::snapshot_dir`]: the state and
    /// findings rows, the membership, and the applied index and term written
    /// in the same batch as them. Runs off the raft thread; the message it
    /// returns carries only the file's [`SnapshotRef`].
    pub fn build_snapshot(&self) -> Result<Snapshot> {
        let view = self.db.snapshot();
        let mut file = RowWriter::create(&self.snapshots)?;
        let mut applied: Option<(u64, u64)> = None;
        let mut conf: Option<ConfState> = None;
        for (tag, name) in [
            (ROW_STATE, CF_STATE),
            (ROW_FINDINGS, CF_FINDINGS),
            (ROW_CONF, CF_CONF_STATE),
            (ROW_TRIAGE_LINKS, CF_TRIAGE_LINKS),
        ] {
            for item in view.iterator_cf(self.cf(name)?, IteratorMode::Start) {
                let (key, value) = item.map_err(|e| self.err(e))?;
                if tag == ROW_STATE && &*key == KEY_APPLIED {
                    applied = Some(decode(&key, &value)?);
                    continue;
                }
                if tag == ROW_CONF && &*key == KEY_CONF_STATE {
                    conf = Some(ConfState::parse_from_bytes(&value).map_err(|e| {
                        CoordinatorError::Corrupt {
                            key: "conf_state".to_owned(),
                            detail: e.to_string(),
                        }
                    })?);
                    continue;
                }
                file.row(tag, &key, &value)?;
            }
        }
        let (index, term) = applied.ok_or_else(|| CoordinatorError::Corrupt {
            key: "applied".to_owned(),
            detail: "no applied index to build a snapshot at".to_owned(),
        })?;
        let reference = file.finish(index, term)?;
        // Older files serve nobody: raft sends the newest snapshot, and a
        // replica never installs one at or below what it has applied.
        snapshot_file::remove_up_to(&self.snapshots, index.saturating_sub(1), false);
        let mut meta = SnapshotMetadata::default();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf.unwrap_or_default());
        let mut snapshot = Snapshot::default();
        snapshot.data = reference.encode()?.into();
        snapshot.set_metadata(meta);
        Ok(snapshot)
    }
}

/// The raft-rs view of the store. Snapshots are built from a RocksDB
/// snapshot of what is persisted, on a thread of their own.
pub struct RaftStorage {
    store: Store,
    snapshots: Arc<Mutex<SnapshotCache>>,
}

/// The last snapshot built for a follower, and whether one is being built.
#[derive(Default)]
struct SnapshotCache {
    ready: Option<Snapshot>,
    building: bool,
}

impl RaftStorage {
    /// Wraps a store.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            snapshots: Arc::default(),
        }
    }

    /// Starts building a snapshot on a thread of its own: a state holding
    /// many large modules and findings takes a while to read and encode,
    /// and the raft thread must keep sending heartbeats meanwhile. Nothing
    /// is copied on the raft thread.
    fn start_snapshot(&self) -> raft::Result<()> {
        let cache = self.snapshots.clone();
        let store = self.store.clone();
        let built = std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let snapshot = store.build_snapshot();
                let Ok(mut cache) = cache.lock() else { return };
                cache.building = false;
                match snapshot {
                    Ok(snapshot) => {
                        let bytes = SnapshotRef::decode(&snapshot.data).map_or(0, |r| r.bytes);
                        tracing::info!(
                            index = snapshot.get_metadata().index,
                            bytes,
                            elapsed = ?started.elapsed(),
                            "snapshot built"
                        );
                        cache.ready = Some(snapshot);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot build a snapshot"),
                }
            });
        if let Err(e) = built {
            tracing::error!(error = %e, "cannot start a thread to build a snapshot");
            if let Ok(mut cache) = self.snapshots.lock() {
                cache.building = false;
            }
        }
        Ok(())
    }
}

fn store_err(err: CoordinatorError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(err)))
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hard_state: HardState = self
            .store
            .get_pb(CF_HARD_STATE, KEY_HARD_STATE)
            .map_err(store_err)?
            .unwrap_or_default();
        let conf_state: ConfState = self
            .store
            .get_pb(CF_CONF_STATE, KEY_CONF_STATE)
            .map_err(store_err)?
            .unwrap_or_default();
        Ok(RaftState {
            hard_state,
            conf_state,
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (snap_index, _) = self.store.snapshot_point().map_err(store_err)?;
        if low <= snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let last = self.last_index()?;
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let cf = self.store.cf(CF_LOG).map_err(store_err)?;
        let mut out = Vec::with_capacity((high - low) as usize);
        let iter = self.store.db.iterator_cf(
            cf,
            IteratorMode::From(&index_key(low), rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| store_err(self.store.err(e)))?;
            let index = index_of(&key).map_err(store_err)?;
            if index >= high {
                break;
            }
            let entry = Entry::parse_from_bytes(&value).map_err(|e| {
                store_err(CoordinatorError::Corrupt {
                    key: format!("log entry {index}"),
                    detail: e.to_string(),
                })
            })?;
            out.push(entry);
        }
        if out.len() as u64 != high - low {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (snap_index, snap_term) = self.store.snapshot_point().map_err(store_err)?;
        if idx == snap_index {
            return Ok(snap_term);
        }
        if idx < snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let cf = self.store.cf(CF_LOG).map_err(store_err)?;
        match self
            .store
            .db
            .get_cf(cf, index_key(idx))
            .map_err(|e| store_err(self.store.err(e)))?
        {
            Some(bytes) => Entry::parse_from_bytes(&bytes)
                .map(|e| e.term)
                .map_err(|e| {
                    store_err(CoordinatorError::Corrupt {
                        key: format!("log entry {idx}"),
                        detail: e.to_string(),
                    })
                }),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.store.snapshot_point().map_err(store_err)?.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        let (snap_index, _) = self.store.snapshot_point().map_err(store_err)?;
        Ok(self
            .store
            .last_log_index()
            .map_err(store_err)?
            .unwrap_or(snap_index)
            .max(snap_index))
    }

    /// A snapshot at or after `request_index` whose successors are still in
    /// the log; built in the background, so the first call answers
    /// "temporarily unavailable" and raft-rs asks again on the follower's
    /// next heartbeat response. One snapshot serves every follower that
    /// needs it until compaction passes it.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let (compacted, _) = self.store.snapshot_point().map_err(store_err)?;
        let mut cache = self
            .snapshots
            .lock()
            .map_err(|_| raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))?;
        if let Some(snapshot) = &cache.ready {
            let index = snapshot.get_metadata().index;
            // The file goes once this node installs a newer snapshot.
            let file_kept = SnapshotRef::decode(&snapshot.data)
                .is_ok_and(|r| self.store.snapshots.join(r.file_name()).exists());
            if index >= compacted && index >= request_index && file_kept {
                return Ok(snapshot.clone());
            }
        }
        if !cache.building {
            tracing::info!(
                follower = to,
                "building a snapshot for a follower behind the log"
            );
            cache.building = true;
            cache.ready = None;
            drop(cache);
            self.start_snapshot()?;
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| CoordinatorError::Corrupt {
        key: format!("{key:?}"),
        detail: "raft log key is not 8 bytes".to_owned(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// `<hunt>\0`: the prefix of a hunt's finding rows (hunt ids hold no NUL).
fn finding_prefix(hunt: &HuntId) -> Vec<u8> {
    let mut key = Vec::with_capacity(hunt.as_str().len() + 9);
    key.extend_from_slice(hunt.as_str().as_bytes());
    key.push(0);
    key
}

/// `<alert>\0`: the start of an alert's links.
fn link_prefix(alert: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(alert.len() + 24);
    key.extend_from_slice(alert.as_bytes());
    key.push(0);
    key
}

/// `<alert>\0<hunt>\0<seq, 8 bytes big-endian>`.
fn link_key(alert: &str, hunt: &str, seq: u64) -> Vec<u8> {
    let mut key = link_prefix(alert);
    key.extend_from_slice(hunt.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key range of every key that starts with `prefix` (which ends in
/// NUL: the next prefix starts with 0x01 there).
fn prefix_range(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut to = prefix.clone();
    if let Some(last) = to.last_mut() {
        *last = 1;
    }
    (prefix, to)
}

/// `<hunt>\0<seq, 8 bytes big-endian>`: a hunt's findings in commit order.
fn finding_key(hunt: &HuntId, seq: u64) -> Vec<u8> {
    let mut key = finding_prefix(hunt);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The hunt of a task id (`<hunt>/<shard>`).
fn hunt_of_task(task: &quarry_proto::TaskId) -> HuntId {
    let id = task.as_str();
    HuntId::new(id.split_once('/').map_or(id, |(hunt, _)| hunt))
}

fn entity_key(kind: u8, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 2);
    key.push(kind);
    key.push(b'/');
    key.extend_from_slice(id.as_bytes());
    key
}

/// Serde for large byte buffers such as module bytes: one length and one
/// copy instead of a sequence of `u8`s. In bincode the encoding is
/// byte-for-byte that of a plain `Vec<u8>` (so stored data reads back
/// unchanged), but tens of times faster, which matters because modules are
/// encoded and decoded on the raft thread, where a stall of a second costs
/// the leader its lease.
pub mod raw_bytes {
    use serde::{Deserializer, Serializer, de};
    use std::fmt;

    /// Serializes as bytes.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Deserializes bytes (or a sequence of numbers, for self-describing formats).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}

/// A hunt's definition row: its parameters, its tasks and, for a traced
/// hunt, its trace context (a third element only traced hunts have, so rows
/// written before it existed read back unchanged).
type Definition = (
    BTreeMap<String, String>,
    Vec<quarry_proto::TaskId>,
    Option<String>,
);

fn decode_definition(key: &[u8], bytes: &[u8]) -> Result<Definition> {
    // bincode is not self-describing: a row without the trace context ends
    // where the triple's third element would start.
    if let Ok((params, tasks, traceparent)) =
        bincode::deserialize::<(BTreeMap<String, String>, Vec<quarry_proto::TaskId>, String)>(bytes)
    {
        return Ok((params, tasks, Some(traceparent)));
    }
    let (params, tasks): (BTreeMap<String, String>, Vec<quarry_proto::TaskId>) =
        decode(key, bytes)?;
    Ok((params, tasks, None))
}

/// Encodes a state-machine value (bincode).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| CoordinatorError::Corrupt {
        key: "encode".to_owned(),
        detail: e.to_string(),
    })
}

/// Decodes a state-machine value, naming the key on failure.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| CoordinatorError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

fn insert<K: Ord, V: DeserializeOwned>(
    map: &mut std::collections::BTreeMap<K, V>,
    key: &[u8],
    value: &[u8],
    id: impl Fn(&V) -> K,
) -> Result<()> {
    let v: V = decode(key, value)?;
    map.insert(id(&v), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, ModuleRecord};
    use quarry_proto::ModuleDigest;
    use raft::Storage as _;
    use std::path::Path;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = vec![index as u8].into();
        e
    }

    #[test]
    fn log_and_hard_state_survive_reopen_and_conflicts_are_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .bootstrap(&[1], &AddressBook::new())
                .expect("bootstrap");
            let mut hs = HardState::default();
            hs.term = 2;
            hs.vote = 1;
            hs.commit = 4;
            store
                .append(
                    &[entry(2, 1), entry(3, 1), entry(4, 2), entry(5, 2)],
                    Some(&hs),
                )
                .expect("append");
            // A new leader overwrites from index 4.
            store.append(&[entry(4, 3)], None).expect("append");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let raft = RaftStorage::new(store);
        let init = raft.initial_state().expect("initial");
        assert_eq!(
            (
                init.hard_state.term,
                init.hard_state.vote,
                init.hard_state.commit
            ),
            (2, 1, 4)
        );
        assert_eq!(init.conf_state.voters, vec![1]);
        // The membership is a snapshot point at index 1, so the log starts at 2.
        assert_eq!(raft.first_index().expect("first"), 2);
        assert_eq!(raft.term(1).expect("bootstrap term"), 1);
        assert_eq!(raft.last_index().expect("last"), 4);
        assert_eq!(raft.term(4).expect("term"), 3);
        let entries = raft
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(
            entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(
            raft.entries(2, 7, None, GetEntriesContext::empty(false))
                .is_err()
        );
    }

    fn module(n: u8) -> ModuleRecord {
        ModuleRecord {
            digest: ModuleDigest::new(format!("{n:02x}").repeat(32)),
            name: format!("m{n}"),
            version: "1".into(),
            description: "d".into(),
            uploaded_ms: 1,
            techniques: Vec::new(),
            bytes: vec![0, 97, 115, 109, n],
        }
    }

    /// A bootstrapped store with entries 2..=last applied (term 1 up to 10,
    /// then term 2), one module per entry in the state machine.
    fn applied_store(dir: &Path, last: u64) -> (Store, Replica) {
        let store = Store::open(dir).expect("open");
        let peers = AddressBook::from([(1, "http://127.0.0.1:1".to_owned())]);
        store.bootstrap(&[1], &peers).expect("bootstrap");
        let entries: Vec<Entry> = (2..=last)
            .map(|i| entry(i, if i <= 10 { 1 } else { 2 }))
            .collect();
        store.append(&entries, None).expect("append");
        let mut replica = store.load_replica().expect("load");
        let mut touched = Vec::new();
        for i in 2..=last {
            let applied = replica.state.apply(
                i,
                Command::UploadModule {
                    module: module(i as u8),
                },
            );
            touched.extend(applied.touched);
        }
        replica.applied_index = last;
        replica.applied_term = 2;
        store
            .persist_applied(&mut replica, &touched, &[], &[])
            .expect("persist");
        (store, replica)
    }

    /// The audit trail, module owners, trusted keys, signatures and the
    /// signing policy are rows like the rest of the state: a reopened store
    /// loads exactly what was applied, and retention deletes rows.
    #[test]
    fn audit_and_module_trust_rows_survive_a_reopen() {
        use crate::audit::{AuditEntry, AuditRetention};
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut replica) = applied_store(dir.path(), 3);
        let record = |time_ms: i64| AuditEntry {
            time_ms,
            principal: "viewer:v".into(),
            role: "viewer".into(),
            rpc: "/quarry.v1.HuntService/SubmitHunt".into(),
            target: String::new(),
            outcome: "permission_denied".into(),
            detail: "no".into(),
            node: "coordinator:1".into(),
            remote: "127.0.0.1".into(),
            count: 2,
        };
        let keep_two = AuditRetention {
            retain_ms: 0,
            max_records: 2,
        };
        let mut touched = Vec::new();
        let commands = [
            Command::AppendAudit {
                origin: "coordinator:1".into(),
                batch: 7,
                records: vec![record(1), record(2), record(3)],
                retention: keep_two,
                now_ms: 10,
            },
            Command::TrustKey {
                name: "release".into(),
                public_key: vec![7; 32],
                added_by: "admin:ops".into(),
                now_ms: 10,
            },
            Command::SetModulePolicy {
                require_signed: true,
            },
        ];
        for (i, command) in commands.into_iter().enumerate() {
            let applied = replica.state.apply(4 + i as u64, command);
            assert!(applied.outcome.is_ok(), "{applied:?}");
            touched.extend(applied.touched);
        }
        let owner = crate::state::Touched::ModuleOwner("m".into());
        replica
            .state
            .trust
            .owners
            .insert("m".into(), "hunter:a".into());
        let digest = module(2).digest;
        replica.state.trust.signatures.insert(
            digest.clone(),
            crate::module_trust::ModuleSignature {
                key: "release".into(),
                signature: vec![1; 64],
            },
        );
        touched.extend([owner, crate::state::Touched::ModuleSignature(digest)]);
        store
            .persist_applied(&mut replica, &touched, &[], &[])
            .expect("persist");
        drop(store);
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load_replica()
            .expect("load");
        assert_eq!(
            loaded.state.audit.entries.len(),
            2,
            "the oldest record went"
        );
        assert_eq!(loaded.state.audit, replica.state.audit);
        assert_eq!(loaded.state.trust, replica.state.trust);
        assert!(loaded.state.trust.require_signed);
    }

    #[test]
    fn compaction_cuts_the_log_and_restart_sees_the_compacted_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, replica) = applied_store(dir.path(), 30);
        let cut = store.compact(25, &replica.conf_state).expect("compact");
        assert_eq!(cut, 24, "entries 2..=25 are cut");
        // Compacting to an older point changes nothing.
        assert_eq!(store.compact(20, &replica.conf_state).expect("noop"), 0);
        drop(store);

        let store = Store::open(dir.path()).expect("reopen");
        let loaded = store.load_replica().expect("load");
        assert_eq!(loaded.state, replica.state);
        assert_eq!(loaded.applied_index, 30);
        assert_eq!(loaded.peers, replica.peers);
        let meta = store.snapshot_metadata().expect("meta");
        assert_eq!((meta.index, meta.term), (25, 2));
        assert_eq!(meta.get_conf_state().voters, vec![1]);
        let raft = RaftStorage::new(store);
        assert_eq!(raft.first_index().expect("first"), 26);
        assert_eq!(raft.last_index().expect("last"), 30);
        assert_eq!(raft.term(25).expect("term at the compacted index"), 2);
        assert_eq!(
            raft.term(24),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(
            raft.entries(20, 27, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        let rest = raft
            .entries(26, 31, None, GetEntriesContext::empty(false))
            .expect("entries after the cut");
        assert_eq!(rest.len(), 5);
    }

    #[test]
    fn compacting_past_the_log_is_refused_as_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, replica) = applied_store(dir.path(), 12);
        let err = store
            .compact(40, &replica.conf_state)
            .expect_err("index 40 is not in the log");
        assert!(err.to_string().contains("log entry 40"), "{err}");
    }

    #[test]
    fn snapshot_from_one_store_installs_into_a_wiped_one() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let (store, replica) = applied_store(leader_dir.path(), 20);
        store.compact(18, &replica.conf_state).expect("compact");
        let raft = RaftStorage::new(store);
        let snapshot = wait_for_snapshot(&raft, 0);
        assert_eq!(snapshot.get_metadata().index, 20);
        assert_eq!(snapshot.get_metadata().term, 2);

        // A follower with an old log of its own, replaced by the snapshot.
        let follower_dir = tempfile::tempdir().expect("tempdir");
        {
            let follower = Store::open(follower_dir.path()).expect("open");
            follower
                .bootstrap(&[1], &AddressBook::new())
                .expect("bootstrap");
            follower
                .append(&[entry(2, 1), entry(3, 1)], None)
                .expect("append");
            carry(&snapshot, leader_dir.path(), follower_dir.path());
            let installed = follower.install_snapshot(&snapshot).expect("install");
            assert_eq!(installed.state, replica.state);
        }
        let follower = Store::open(follower_dir.path()).expect("reopen");
        let loaded = follower.load_replica().expect("load");
        assert_eq!(loaded.state, replica.state);
        assert_eq!((loaded.applied_index, loaded.applied_term), (20, 2));
        assert_eq!(loaded.peers, replica.peers);
        let raft = RaftStorage::new(follower);
        assert_eq!(raft.first_index().expect("first"), 21);
        assert_eq!(raft.last_index().expect("last"), 20);
        assert_eq!(raft.term(20).expect("term"), 2);
        assert!(raft.initial_state().expect("init").hard_state.commit >= 20);
    }

    /// Copies the file `snapshot` names from one data directory's snapshots
    /// to another's, as the transport does.
    fn carry(snapshot: &Snapshot, from: &Path, to: &Path) {
        let reference = SnapshotRef::decode(&snapshot.data).expect("reference");
        let into = snapshot_file::snapshot_dir(to);
        std::fs::create_dir_all(&into).expect("mkdir");
        std::fs::copy(
            snapshot_file::snapshot_dir(from).join(reference.file_name()),
            into.join(reference.file_name()),
        )
        .expect("copy");
    }

    /// Asks like raft-rs does until the background build is done.
    fn wait_for_snapshot(raft: &RaftStorage, request_index: u64) -> Snapshot {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match raft.snapshot(request_index, 2) {
                Ok(snapshot) => return snapshot,
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                    assert!(std::time::Instant::now() < deadline, "snapshot never built");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("snapshot failed: {e}"),
            }
        }
    }

    /// A leader store at index 20 with about 9 MiB of findings rows (more
    /// than two install batches), its snapshot, and a follower directory
    /// with an older replica of its own (the file is carried once the
    /// follower runs: a start clears received files).
    fn leader_with_findings_and_a_follower() -> (tempfile::TempDir, tempfile::TempDir, Snapshot) {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let (leader, _) = applied_store(leader_dir.path(), 20);
        let cf = leader.cf(CF_FINDINGS).expect("cf");
        for seq in 0..2_300u64 {
            let value = vec![(seq % 251) as u8; 4096];
            leader
                .db
                .put_cf(cf, finding_key(&HuntId::new("h-1"), seq), value)
                .expect("put");
        }
        let snapshot = leader.build_snapshot().expect("snapshot");
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let (follower, _) = applied_store(follower_dir.path(), 12);
        drop(follower);
        (leader_dir, follower_dir, snapshot)
    }

    /// The snapshot reference a store's rows give now (equal references
    /// mean byte-identical rows at the same index).
    fn rows_of(dir: &Path) -> SnapshotRef {
        let store = Store::open(dir).expect("open");
        SnapshotRef::decode(&store.build_snapshot().expect("snapshot").data).expect("reference")
    }

    #[test]
    fn a_crash_in_the_middle_of_an_install_is_finished_at_the_next_start() {
        let (leader_dir, follower_dir, snapshot) = leader_with_findings_and_a_follower();
        {
            let follower = Store::open(follower_dir.path()).expect("open");
            carry(&snapshot, leader_dir.path(), follower_dir.path());
            let reference = SnapshotRef::decode(&snapshot.data).expect("reference");
            let crashed = follower.install_from_file(&reference, snapshot.get_metadata(), Some(1));
            assert!(crashed.is_err(), "the simulated crash stops the install");
            let findings = follower
                .db
                .iterator_cf(follower.cf(CF_FINDINGS).expect("cf"), IteratorMode::Start)
                .count();
            assert!(
                findings > 0 && findings < 2_300,
                "the crash left part of the rows written ({findings})"
            );
            assert!(
                follower
                    .get(CF_SNAPSHOT, KEY_INSTALLING)
                    .expect("get")
                    .is_some(),
                "the marker says an install is under way"
            );
        }
        // The next start finishes the install from the received file.
        let follower = Store::open(follower_dir.path()).expect("reopen");
        let replica = follower.load_replica().expect("load");
        assert_eq!((replica.applied_index, replica.applied_term), (20, 2));
        assert_eq!(follower.snapshot_metadata().expect("meta").index, 20);
        drop(follower);
        assert_eq!(rows_of(follower_dir.path()), rows_of(leader_dir.path()));
        let left: Vec<_> = std::fs::read_dir(snapshot_file::snapshot_dir(follower_dir.path()))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .filter(|name| !name.to_string_lossy().contains("-00000000000000000020-"))
            .collect();
        assert!(
            left.is_empty(),
            "only files it built itself remain: {left:?}"
        );
    }

    #[test]
    fn an_interrupted_install_without_its_file_refuses_to_start_and_says_what_to_do() {
        let (leader_dir, follower_dir, snapshot) = leader_with_findings_and_a_follower();
        let reference = SnapshotRef::decode(&snapshot.data).expect("reference");
        {
            let follower = Store::open(follower_dir.path()).expect("open");
            carry(&snapshot, leader_dir.path(), follower_dir.path());
            let crashed = follower.install_from_file(&reference, snapshot.get_metadata(), Some(1));
            assert!(crashed.is_err());
        }
        std::fs::remove_file(
            snapshot_file::snapshot_dir(follower_dir.path()).join(reference.file_name()),
        )
        .expect("remove");
        let err = Store::open(follower_dir.path()).err().expect("refused");
        let message = err.to_string();
        assert!(message.contains("interrupted"), "{message}");
        assert!(
            message.contains("move its data directory away"),
            "{message}"
        );
    }

    #[test]
    fn a_damaged_snapshot_file_is_refused_before_anything_is_replaced() {
        let (leader_dir, follower_dir, snapshot) = leader_with_findings_and_a_follower();
        let follower = Store::open(follower_dir.path()).expect("open");
        carry(&snapshot, leader_dir.path(), follower_dir.path());
        let reference = SnapshotRef::decode(&snapshot.data).expect("reference");
        let path = snapshot_file::snapshot_dir(follower_dir.path()).join(reference.file_name());
        let mut bytes = std::fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).expect("write");
        let before = follower.load_replica().expect("load");
        let err = follower.install_snapshot(&snapshot).expect_err("damaged");
        assert!(
            err.to_string().contains("does not match its reference"),
            "{err}"
        );
        let after = follower.load_replica().expect("load");
        assert_eq!(after.state, before.state);
        assert_eq!(after.applied_index, 12);
    }

    #[test]
    fn a_snapshot_is_reused_until_compaction_passes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut replica) = applied_store(dir.path(), 20);
        let raft = RaftStorage::new(store.clone());
        assert_eq!(
            raft.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            )),
            "the first request starts a background build"
        );
        let first = wait_for_snapshot(&raft, 0);
        assert_eq!(first.get_metadata().index, 20);

        // More entries apply; the cached snapshot still serves (its
        // successors are in the log).
        let entries: Vec<Entry> = (21..=30).map(|i| entry(i, 2)).collect();
        store.append(&entries, None).expect("append");
        replica.applied_index = 30;
        store
            .persist_applied(&mut replica, &[], &[], &[])
            .expect("persist");
        assert_eq!(
            raft.snapshot(0, 3).expect("cached").get_metadata().index,
            20
        );
        // A follower that asks for a newer one gets a fresh build.
        assert_eq!(wait_for_snapshot(&raft, 25).get_metadata().index, 30);

        // Once compaction passes the cached one, it is rebuilt.
        store.compact(30, &replica.conf_state).expect("compact");
        let rebuilt = wait_for_snapshot(&raft, 0);
        assert_eq!(rebuilt.get_metadata().index, 30);
        let other = tempfile::tempdir().expect("tempdir");
        let follower = Store::open(other.path()).expect("open");
        carry(&rebuilt, dir.path(), other.path());
        let decoded = follower.install_snapshot(&rebuilt).expect("install");
        assert_eq!(decoded.state, replica.state);
    }

    #[test]
    fn schedules_and_their_runs_survive_a_restart() {
        use crate::schedules::{ScheduleRecord, Trigger};
        use crate::state::tests::{cluster, spec};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let peers = AddressBook::from([(1, "http://127.0.0.1:1".to_owned())]);
        store.bootstrap(&[1], &peers).expect("bootstrap");
        let mut replica = store.load_replica().expect("load");
        replica.state = cluster();
        let st = &replica.state;
        let mut everything: Vec<Touched> = Vec::new();
        everything.extend(st.modules.keys().cloned().map(Touched::Module));
        everything.extend(st.workers.keys().cloned().map(Touched::Worker));
        everything.extend(st.shards.keys().cloned().map(Touched::Shard));
        store
            .persist_applied(&mut replica, &everything, &[], &[])
            .expect("persist");
        let id = quarry_proto::ScheduleId::new("nightly");
        let record = ScheduleRecord::new(
            id.clone(),
            spec(&[("env", "demo")]),
            Trigger::Every {
                interval_ms: 1_000,
                anchor_ms: 0,
            },
            0,
            "local".into(),
        );
        let commands = [
            Command::CreateSchedule {
                record: Box::new(record),
            },
            Command::FireSchedule {
                id: id.clone(),
                due_ms: 1_000,
                now_ms: 1_000,
            },
        ];
        for (n, command) in commands.into_iter().enumerate() {
            let index = 10 + n as u64;
            let applied = replica.state.apply(index, command);
            assert!(applied.outcome.is_ok(), "{:?}", applied.outcome);
            replica.applied_index = index;
            store
                .persist_applied(&mut replica, &applied.touched, &[], &applied.triage)
                .expect("persist");
        }
        let run = replica.state.schedules.by_id[&id].active.clone();
        assert!(run.is_some());
        drop(store);
        let reopened = Store::open(dir.path()).expect("reopen");
        let loaded = reopened.load_replica().expect("load");
        assert_eq!(loaded.state.schedules, replica.state.schedules);
        let hunt = run.expect("a run");
        assert_eq!(loaded.state.hunts[&hunt].schedule, Some(id.clone()));
        // Deleting it removes its row.
        let mut replica = loaded;
        let applied = replica.state.apply(20, Command::DeleteSchedule { id });
        replica.applied_index = 20;
        reopened
            .persist_applied(&mut replica, &applied.touched, &[], &applied.triage)
            .expect("persist");
        drop(reopened);
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load_replica()
            .expect("load");
        assert!(loaded.state.schedules.by_id.is_empty());
    }

    #[test]
    fn findings_live_in_rows_of_their_own_and_travel_in_snapshots() {
        use crate::state::tests::{assign_all, cluster, report, submit};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let peers = AddressBook::from([(1, "http://127.0.0.1:1".to_owned())]);
        store.bootstrap(&[1], &peers).expect("bootstrap");
        let mut replica = store.load_replica().expect("load");
        replica.state = cluster();
        let hunt = submit(&mut replica.state, 10);
        assign_all(&mut replica.state, &hunt);
        let tasks = replica.state.hunts[&hunt].tasks.clone();
        let st = &replica.state;
        let mut everything: Vec<Touched> = Vec::new();
        everything.extend(st.modules.keys().cloned().map(Touched::Module));
        everything.extend(st.workers.keys().cloned().map(Touched::Worker));
        everything.extend(st.shards.keys().cloned().map(Touched::Shard));
        everything.extend(st.hunts.keys().cloned().map(Touched::Hunt));
        everything.extend(st.hunts.keys().cloned().map(Touched::HuntDefinition));
        everything.extend(
            st.triage
                .rows()
                .into_iter()
                .map(|(k, _)| Touched::Triage(k)),
        );
        store
            .persist_applied(&mut replica, &everything, &[], &[])
            .expect("persist");
        let mut index = 11;
        for (task, worker) in tasks.iter().zip(["w0", "w1"]) {
            let applied = replica.state.apply(index, report(task, worker, 1, 3));
            replica.applied_index = index;
            store
                .persist_applied(
                    &mut replica,
                    &applied.touched,
                    &applied.findings,
                    &applied.triage,
                )
                .expect("persist");
            index += 1;
        }
        let read = |store: &Store, from, limit| {
            store
                .findings(&hunt, from, limit)
                .expect("read")
                .into_iter()
                .map(|(seq, f)| (seq, f.id))
                .collect::<Vec<_>>()
        };
        let all = read(&store, 0, 100);
        assert_eq!(all.len(), 6);
        assert_eq!(
            all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (0..6).collect::<Vec<_>>()
        );
        // Pages resume where the last one ended, and stop at the hunt.
        assert_eq!(read(&store, 4, 100), all[4..].to_vec());
        assert_eq!(read(&store, 1, 2), all[1..3].to_vec());
        assert!(read(&store, 6, 100).is_empty());
        assert!(
            store
                .findings(&HuntId::new("h-1"), 0, 10)
                .expect("read")
                .is_empty()
        );

        // A follower gets them through a snapshot.
        let snapshot = store.build_snapshot().expect("snapshot");
        assert_eq!(snapshot.get_metadata().index, index - 1);
        let other = tempfile::tempdir().expect("tempdir");
        let follower = Store::open(other.path()).expect("open");
        carry(&snapshot, dir.path(), other.path());
        let installed = follower.install_snapshot(&snapshot).expect("install");
        assert_eq!(installed.state, replica.state);
        assert_eq!(installed.peers, peers);
        assert_eq!(read(&follower, 0, 100), all);
    }

    #[test]
    fn per_task_finding_rows_of_earlier_versions_are_split_into_rows_of_their_own() {
        use crate::state::FindingRecord;
        let dir = tempfile::tempdir().expect("tempdir");
        let finding = |task: &str, n: usize| FindingRecord {
            id: format!("{task}#1.{n}"),
            task: quarry_proto::TaskId::new(task),
            shard: quarry_proto::ShardId::new("s"),
            rule: "r".into(),
            title: "t".into(),
            severity: crate::state::Severity::High,
            confidence: 50,
            entity: "e".into(),
            timestamp_ms: 1,
            evidence: Vec::new(),
            techniques: Vec::new(),
            tags: Vec::new(),
            offsets: Vec::new(),
        };
        {
            let store = Store::open(dir.path()).expect("open");
            for task in ["h-5/a", "h-5/b", "h-9/a"] {
                let findings: Vec<FindingRecord> = (0..2).map(|n| finding(task, n)).collect();
                store
                    .db
                    .put_cf(
                        store.cf(CF_STATE).expect("cf"),
                        entity_key(b'f', task),
                        encode(&findings).expect("encode"),
                    )
                    .expect("put");
            }
        }
        let store = Store::open(dir.path()).expect("migrating open");
        let ids = |hunt: &str| {
            store
                .findings(&HuntId::new(hunt), 0, 100)
                .expect("read")
                .into_iter()
                .map(|(seq, f)| (seq, f.id))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids("h-5"),
            vec![
                (0, "h-5/a#1.0".to_owned()),
                (1, "h-5/a#1.1".to_owned()),
                (2, "h-5/b#1.0".to_owned()),
                (3, "h-5/b#1.1".to_owned())
            ]
        );
        assert_eq!(ids("h-9").len(), 2);
        assert!(
            store
                .get(CF_STATE, &entity_key(b'f', "h-5/a"))
                .expect("read")
                .is_none()
        );
        store
            .load_replica()
            .expect("no per-task rows are left to trip the loader");
    }

    #[test]
    fn legacy_raft_meta_is_moved_into_its_own_families() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rocksdb");
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db = DB::open_cf(&options, &path, [CF_LOG, CF_LEGACY_META, CF_STATE])
                .expect("legacy db");
            let meta = db.cf_handle(CF_LEGACY_META).expect("cf");
            let mut hs = HardState::default();
            hs.term = 7;
            hs.commit = 9;
            db.put_cf(meta, KEY_HARD_STATE, hs.write_to_bytes().expect("hs"))
                .expect("put");
            let mut conf = ConfState::default();
            conf.voters = vec![1, 2, 3];
            db.put_cf(meta, KEY_CONF_STATE, conf.write_to_bytes().expect("cs"))
                .expect("put");
            db.put_cf(
                meta,
                KEY_LEGACY_SNAPSHOT_POINT,
                encode(&(5u64, 6u64)).expect("point"),
            )
            .expect("put");
        }
        let store = Store::open(dir.path()).expect("migrating open");
        assert!(store.db.cf_handle(CF_LEGACY_META).is_none());
        let raft = RaftStorage::new(store.clone());
        let init = raft.initial_state().expect("init");
        assert_eq!((init.hard_state.term, init.hard_state.commit), (7, 9));
        assert_eq!(init.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(raft.first_index().expect("first"), 6);
        assert_eq!(raft.term(5).expect("term"), 6);
        drop(raft);
        drop(store);
        // And a second open finds nothing left to migrate.
        Store::open(dir.path()).expect("reopen");
    }

    #[test]
    fn module_bytes_keep_their_encoding() {
        // The field as stored before `raw_bytes`: a plain Vec<u8>.
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Legacy {
            digest: ModuleDigest,
            name: String,
            version: String,
            description: String,
            uploaded_ms: i64,
            techniques: Vec<String>,
            bytes: Vec<u8>,
        }
        let mut record = module(7);
        record.bytes = (0..(64 << 10)).map(|i| (i % 253) as u8).collect();
        let legacy = Legacy {
            digest: record.digest.clone(),
            name: record.name.clone(),
            version: record.version.clone(),
            description: record.description.clone(),
            uploaded_ms: record.uploaded_ms,
            techniques: record.techniques.clone(),
            bytes: record.bytes.clone(),
        };
        let fast = encode(&record).expect("encode");
        assert_eq!(
            encode(&legacy).expect("legacy encode"),
            fast,
            "stored modules must read back unchanged"
        );
        let json = serde_json::to_string(&record).expect("json");
        let from_json: ModuleRecord = serde_json::from_str(&json).expect("json back");
        assert_eq!(from_json, record);

        // Encoding goes through `raw_bytes` as one copy (a per-byte encoding
        // of 16 MiB took seconds on the raft thread in a debug build); large
        // modules round-trip unchanged. Speed belongs in benchmarks, not here.
        record.bytes = vec![42; 16 << 20];
        let bytes = encode(&record).expect("encode");
        let back: ModuleRecord = decode(b"m", &bytes).expect("decode");
        assert_eq!(back, record);
    }

    #[test]
    fn hunt_definitions_are_written_once_apart_from_the_status() {
        use crate::state::tests::{cluster, spec};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut replica = Replica {
            state: cluster(),
            ..Replica::default()
        };
        let mut hunt_spec = spec(&[("env", "demo")]);
        let intel = "203.0.113.7\n".repeat(50_000);
        hunt_spec
            .params
            .insert("intel.bad-ips".into(), intel.clone());
        let applied = replica.state.apply(
            10,
            Command::SubmitHunt {
                spec: hunt_spec,
                now_ms: 20,
            },
        );
        assert!(
            applied
                .touched
                .iter()
                .any(|t| matches!(t, Touched::HuntDefinition(_)))
        );
        store
            .persist_applied(&mut replica, &applied.touched, &applied.findings, &[])
            .expect("persist");
        let id = replica.state.hunts.keys().next().expect("a hunt").clone();
        // What every task report does: rewrite the status only.
        store
            .persist_applied(&mut replica, &[Touched::Hunt(id.clone())], &[], &[])
            .expect("persist");
        let row = |kind| {
            store
                .get(CF_STATE, &entity_key(kind, id.as_str()))
                .expect("read")
                .expect("row")
                .len()
        };
        assert!(
            row(b'h') < 4_096,
            "the status row carries the parameters: {}",
            row(b'h')
        );
        assert!(row(b'p') > intel.len());
        drop(store);
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load_replica()
            .expect("load");
        assert_eq!(loaded.state.hunts, replica.state.hunts);
        assert_eq!(loaded.state.hunts[&id].spec.params["intel.bad-ips"], intel);
        assert_eq!(
            loaded.state.hunts[&id].tasks.len(),
            2,
            "the task list comes back"
        );
    }

    #[test]
    fn a_hunts_trace_context_is_kept_with_its_definition() {
        use crate::state::tests::{cluster, spec};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut replica = Replica {
            state: cluster(),
            ..Replica::default()
        };
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (index, command) in [
            (
                10,
                Command::SubmitTracedHunt {
                    spec: spec(&[("env", "demo")]),
                    now_ms: 20,
                    traceparent: traceparent.to_owned(),
                },
            ),
            (
                11,
                Command::SubmitHunt {
                    spec: spec(&[("env", "demo")]),
                    now_ms: 21,
                },
            ),
        ] {
            let applied = replica.state.apply(index, command);
            assert!(applied.outcome.is_ok(), "{:?}", applied.outcome);
            store
                .persist_applied(&mut replica, &applied.touched, &applied.findings, &[])
                .expect("persist");
        }
        let traced = HuntId::new("h-10");
        let plain = HuntId::new("h-11");
        assert_eq!(
            replica.state.hunts[&traced].traceparent.as_deref(),
            Some(traceparent)
        );
        assert_eq!(replica.state.hunts[&plain].traceparent, None);
        // An untraced hunt's definition row is what it was before trace
        // contexts existed.
        let row = store
            .get(CF_STATE, &entity_key(b'p', plain.as_str()))
            .expect("read")
            .expect("row");
        let hunt = &replica.state.hunts[&plain];
        assert_eq!(
            row,
            encode(&(&hunt.spec.params, &hunt.tasks)).expect("encode")
        );
        drop(store);
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load_replica()
            .expect("load");
        assert_eq!(loaded.state.hunts, replica.state.hunts);
        assert_eq!(
            loaded.state.hunts[&traced].traceparent.as_deref(),
            Some(traceparent)
        );
    }

    #[test]
    fn state_machine_round_trips_through_rocksdb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut replica = Replica::default();
        let applied = replica.state.apply(
            7,
            Command::UploadModule {
                module: ModuleRecord {
                    digest: ModuleDigest::new("a".repeat(64)),
                    name: "m".into(),
                    version: "1".into(),
                    description: "d".into(),
                    uploaded_ms: 1,
                    techniques: Vec::new(),
                    bytes: vec![0, 97, 115, 109],
                },
            },
        );
        replica.applied_index = 7;
        replica.applied_term = 1;
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .persist_applied(&mut replica, &applied.touched, &applied.findings, &[])
                .expect("persist");
        }
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load_replica()
            .expect("load");
        assert_eq!(loaded.state, replica.state);
        assert_eq!((loaded.applied_index, loaded.applied_term), (7, 1));
    }

    #[test]
    fn the_data_directory_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("coordinator");
        std::fs::create_dir(&data).expect("mkdir");
        // An existing directory with open permissions is closed too.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = Store::open(&data).expect("open");
        drop(store);
        for path in [data.clone(), data.join("rocksdb")] {
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
    }
}
