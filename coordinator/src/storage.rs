//! RocksDB persistence: the raft log, hard state and conf state in their own
//! column families, and the state machine in another.
//!
//! Raft writes ([`Store::append`]) are one synced write batch, so entries and
//! hard state reach disk before any message that depends on them is sent. The
//! state machine's changes and its applied index go in one batch
//! ([`Store::persist_applied`]), so a restart resumes from a consistent point
//! and re-applies the rest of the log.

// rust-protobuf 2 messages carry private bookkeeping fields, so they are
// built by assigning to a default value, as in raft-rs's own examples.
#![allow(clippy::field_reassign_with_default)]

use crate::error::{CoordinatorError, Result};
use crate::state::{State, Touched};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const CF_LOG: &str = "raft_log";
const CF_META: &str = "raft_meta";
const CF_STATE: &str = "state";

const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
/// Index and term of the last entry folded into a snapshot (0, 0 when none).
const KEY_SNAPSHOT_POINT: &[u8] = b"snapshot_point";
const KEY_APPLIED: &[u8] = b"applied";

/// The coordinator's RocksDB database.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    path: PathBuf,
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
}

impl Store {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| CoordinatorError::Io {
            context: format!(
                "cannot create the coordinator data directory {}",
                dir.display()
            ),
            source,
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cfs = [CF_LOG, CF_META, CF_STATE]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let path = dir.join("rocksdb");
        let db = DB::open_cf_descriptors(&options, &path, cfs).map_err(|source| {
            CoordinatorError::Storage {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
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
        Ok(self.get(CF_META, KEY_HARD_STATE)?.is_none()
            && self.get(CF_META, KEY_CONF_STATE)?.is_none())
    }

    /// Writes the initial membership of a new cluster.
    pub fn bootstrap(&self, voters: &[u64]) -> Result<()> {
        let mut conf = ConfState::default();
        conf.voters = voters.to_vec();
        let bytes = Self::pb_bytes(&conf)?;
        self.db
            .put_cf(self.cf(CF_META)?, KEY_CONF_STATE, bytes)
            .map_err(|e| self.err(e))
    }

    fn snapshot_point(&self) -> Result<(u64, u64)> {
        match self.get(CF_META, KEY_SNAPSHOT_POINT)? {
            Some(bytes) => decode(KEY_SNAPSHOT_POINT, &bytes),
            None => Ok((0, 0)),
        }
    }

    fn last_log_index(&self) -> Result<Option<u64>> {
        let mut iter = self.db.iterator_cf(self.cf(CF_LOG)?, IteratorMode::End);
        match iter.next() {
            Some(Ok((key, _))) => Ok(Some(index_of(&key)?)),
            Some(Err(e)) => Err(self.err(e)),
            None => Ok(None),
        }
    }

    /// Persists new log entries (replacing any conflicting suffix) and the hard
    /// state in one synced batch.
    pub fn append(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let log = self.cf(CF_LOG)?;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            // Entries after the new tail came from an old leader and are void.
            if let Some(old_last) = self.last_log_index()?
                && old_last > last.index
            {
                batch.delete_range_cf(log, index_key(last.index + 1), index_key(old_last + 1));
            }
            let _ = first;
            for entry in entries {
                batch.put_cf(log, index_key(entry.index), Self::pb_bytes(entry)?);
            }
        }
        if let Some(hs) = hard_state {
            batch.put_cf(self.cf(CF_META)?, KEY_HARD_STATE, Self::pb_bytes(hs)?);
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(|e| self.err(e))
    }

    /// Updates only the commit index of the hard state.
    pub fn set_commit(&self, commit: u64) -> Result<()> {
        let mut hs: HardState = self.get_pb(CF_META, KEY_HARD_STATE)?.unwrap_or_default();
        hs.commit = commit;
        self.append(&[], Some(&hs))
    }

    /// Persists a new membership.
    pub fn set_conf_state(&self, conf: &ConfState) -> Result<()> {
        self.db
            .put_cf(self.cf(CF_META)?, KEY_CONF_STATE, Self::pb_bytes(conf)?)
            .map_err(|e| self.err(e))
    }

    /// Writes the entities `touched` changed and the applied point, atomically.
    pub fn persist_applied(&self, replica: &Replica, touched: &[Touched]) -> Result<()> {
        let cf = self.cf(CF_STATE)?;
        let mut batch = WriteBatch::default();
        let state = &replica.state;
        for key in touched {
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
                Touched::Hunt(id) => (
                    entity_key(b'h', id.as_str()),
                    state.hunts.get(id).map(encode).transpose()?,
                ),
                Touched::Task(id) => (
                    entity_key(b't', id.as_str()),
                    state.tasks.get(id).map(encode).transpose()?,
                ),
                Touched::Findings(id) => (
                    entity_key(b'f', id.as_str()),
                    state.findings.get(id).map(encode).transpose()?,
                ),
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
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Loads the state machine and membership.
    pub fn load_replica(&self) -> Result<Replica> {
        let mut replica = Replica {
            conf_state: self.get_pb(CF_META, KEY_CONF_STATE)?.unwrap_or_default(),
            ..Replica::default()
        };
        let cf = self.cf(CF_STATE)?;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.err(e))?;
            if &*key == KEY_APPLIED {
                (replica.applied_index, replica.applied_term) = decode(&key, &value)?;
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
                Some(b'f') => {
                    let findings: Vec<crate::state::FindingRecord> = decode(&key, &value)?;
                    let task =
                        quarry_proto::TaskId::new(String::from_utf8_lossy(&key[2..]).into_owned());
                    state.findings.insert(task, findings);
                }
                _ => {
                    return Err(CoordinatorError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        detail: "unknown key in the state column family".to_owned(),
                    });
                }
            }
        }
        Ok(replica)
    }

    /// Replaces the log and the state machine with a snapshot from the leader.
    pub fn apply_snapshot(&self, snapshot: &Snapshot, replica: &Replica) -> Result<()> {
        let meta = snapshot.get_metadata();
        let mut batch = WriteBatch::default();
        let log = self.cf(CF_LOG)?;
        let state_cf = self.cf(CF_STATE)?;
        batch.delete_range_cf(log, index_key(0), index_key(u64::MAX));
        batch.delete_range_cf(state_cf, [0u8].as_slice(), [0xffu8; 9].as_slice());
        batch.put_cf(
            self.cf(CF_META)?,
            KEY_SNAPSHOT_POINT,
            encode(&(meta.index, meta.term))?,
        );
        batch.put_cf(
            self.cf(CF_META)?,
            KEY_CONF_STATE,
            Self::pb_bytes(meta.get_conf_state())?,
        );
        self.db.write(batch).map_err(|e| self.err(e))?;
        let s = &replica.state;
        let mut touched = Vec::new();
        touched.extend(s.modules.keys().cloned().map(Touched::Module));
        touched.extend(s.workers.keys().cloned().map(Touched::Worker));
        touched.extend(s.shards.keys().cloned().map(Touched::Shard));
        touched.extend(s.hunts.keys().cloned().map(Touched::Hunt));
        touched.extend(s.tasks.keys().cloned().map(Touched::Task));
        touched.extend(s.findings.keys().cloned().map(Touched::Findings));
        self.persist_applied(replica, &touched)
    }
}

/// The raft-rs view of the store. Snapshots are taken from the shared
/// in-memory replica, which always matches what is persisted.
pub struct RaftStorage {
    store: Store,
    replica: Arc<RwLock<Replica>>,
}

impl RaftStorage {
    /// Wraps a store and the replica the node applies to.
    pub fn new(store: Store, replica: Arc<RwLock<Replica>>) -> Self {
        Self { store, replica }
    }
}

fn store_err(err: CoordinatorError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(err)))
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hard_state: HardState = self
            .store
            .get_pb(CF_META, KEY_HARD_STATE)
            .map_err(store_err)?
            .unwrap_or_default();
        let conf_state: ConfState = self
            .store
            .get_pb(CF_META, KEY_CONF_STATE)
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

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let replica = self
            .replica
            .read()
            .map_err(|_| raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))?;
        let mut snapshot = Snapshot::default();
        snapshot.data = encode(&replica.state).map_err(store_err)?.into();
        let meta = snapshot.mut_metadata();
        meta.index = replica.applied_index;
        meta.term = replica.applied_term;
        meta.set_conf_state(replica.conf_state.clone());
        Ok(snapshot)
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

fn entity_key(kind: u8, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 2);
    key.push(kind);
    key.push(b'/');
    key.extend_from_slice(id.as_bytes());
    key
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
            store.bootstrap(&[1]).expect("bootstrap");
            let mut hs = HardState::default();
            hs.term = 2;
            hs.vote = 1;
            hs.commit = 3;
            store
                .append(
                    &[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)],
                    Some(&hs),
                )
                .expect("append");
            // A new leader overwrites from index 3.
            store.append(&[entry(3, 3)], None).expect("append");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let raft = RaftStorage::new(store, Arc::default());
        let init = raft.initial_state().expect("initial");
        assert_eq!(
            (
                init.hard_state.term,
                init.hard_state.vote,
                init.hard_state.commit
            ),
            (2, 1, 3)
        );
        assert_eq!(init.conf_state.voters, vec![1]);
        assert_eq!(raft.first_index().expect("first"), 1);
        assert_eq!(raft.last_index().expect("last"), 3);
        assert_eq!(raft.term(3).expect("term"), 3);
        let entries = raft
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(
            entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(
            raft.entries(1, 6, None, GetEntriesContext::empty(false))
                .is_err()
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
                    bytes: vec![0, 97, 115, 109],
                },
            },
        );
        replica.applied_index = 7;
        replica.applied_term = 1;
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .persist_applied(&replica, &applied.touched)
                .expect("persist");
        }
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load_replica()
            .expect("load");
        assert_eq!(loaded.state, replica.state);
        assert_eq!((loaded.applied_index, loaded.applied_term), (7, 1));
    }
}
