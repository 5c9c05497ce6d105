//! An in-process raft network for tests: several [`NodeThread`]s in one
//! process, each with its own RocksDB directory, whose messages go straight
//! to their peers' channels unless the test's filter drops them. Lets a test
//! hold back exactly the messages a failure scenario needs (append
//! responses, votes, everything to one node) and restart nodes from their
//! stores.

use crate::node::{LogCompaction, NodeHandle, NodeOptions, NodeThread, Transport};
use crate::snapshot_file::{Incoming, SnapshotRef};
use crate::storage::{AddressBook, Store};
use quarry_proto::NodeId;
use raft::SnapshotStatus;
use raft::eraftpb::{Message, MessageType};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Decides whether a message is delivered.
type Filter = Box<dyn Fn(&Message) -> bool + Send>;

#[derive(Default)]
struct Inner {
    handles: HashMap<u64, NodeHandle>,
    filter: Option<Filter>,
    /// Snapshot sends not yet reported to their sender, by sender.
    snapshot_reports: HashMap<u64, Vec<(u64, SnapshotStatus)>>,
}

/// The network and the nodes on it.
pub struct LocalNet {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
    voters: Vec<u64>,
    compaction: LogCompaction,
    nodes: HashMap<u64, NodeThread>,
}

struct LocalTransport {
    id: u64,
    inner: Arc<Mutex<Inner>>,
}

impl Transport for LocalTransport {
    fn send(&self, messages: Vec<Message>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for message in messages {
            let kept = inner.filter.as_ref().is_none_or(|keep| keep(&message));
            let (to, is_snapshot) = (
                message.to,
                message.get_msg_type() == MessageType::MsgSnapshot,
            );
            // A snapshot's file travels first, as the gRPC transport's
            // stream does, from the sender's snapshot directory into the
            // receiver's.
            let arrived = || -> bool {
                let (Some(from), Some(into)) =
                    (inner.handles.get(&self.id), inner.handles.get(&to))
                else {
                    return false;
                };
                match copy_snapshot_file(&message, from.snapshot_dir(), into.snapshot_dir()) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot file not delivered");
                        false
                    }
                }
            };
            let delivered = kept
                && (!is_snapshot || arrived())
                && inner
                    .handles
                    .get(&to)
                    .is_some_and(|handle| handle.step(message).is_ok());
            // As the gRPC transport does: raft waits for the outcome of a
            // snapshot send before it sends that peer anything else.
            if is_snapshot {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                inner
                    .snapshot_reports
                    .entry(self.id)
                    .or_default()
                    .push((to, status));
            }
        }
    }

    fn snapshot_reports(&self) -> Vec<(u64, SnapshotStatus)> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner.snapshot_reports.remove(&self.id).unwrap_or_default()
    }
}

/// Streams the file a MsgSnapshot names between two snapshot directories
/// through the receiving side's checks.
fn copy_snapshot_file(message: &Message, from: &Path, into: &Path) -> crate::error::Result<()> {
    let reference = SnapshotRef::decode(&message.get_snapshot().data)?;
    let path = from.join(reference.file_name());
    let mut file =
        std::fs::File::open(&path).map_err(|source| crate::error::CoordinatorError::Io {
            context: format!("cannot open the snapshot file {}", path.display()),
            source,
        })?;
    let mut incoming = Incoming::create(into)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer).map_err(|source| {
            crate::error::CoordinatorError::Io {
                context: format!("cannot read the snapshot file {}", path.display()),
                source,
            }
        })?;
        if n == 0 {
            break;
        }
        incoming.write(&buffer[..n])?;
    }
    incoming.finish(&reference).map(|_| ())
}

impl LocalNet {
    /// Starts voters `1..=n`, each with a store under `dir`.
    pub fn start(dir: &Path, n: u64, compaction: LogCompaction) -> Self {
        let mut net = Self {
            inner: Arc::default(),
            dir: dir.to_owned(),
            voters: (1..=n).collect(),
            compaction,
            nodes: HashMap::new(),
        };
        for id in 1..=n {
            net.restart(id);
        }
        net
    }

    /// The store directory of node `id`.
    pub fn dir_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    /// Starts (or starts again) node `id` from its store.
    pub fn restart(&mut self, id: u64) {
        let store = Store::open(&self.dir_of(id)).expect("open store");
        let options = NodeOptions {
            id: NodeId(id),
            voters: self.voters.clone(),
            peers: AddressBook::new(),
            compaction: self.compaction,
        };
        let transport = LocalTransport {
            id,
            inner: self.inner.clone(),
        };
        let node = NodeThread::start(store, options, Box::new(transport)).expect("start node");
        self.inner
            .lock()
            .expect("net lock")
            .handles
            .insert(id, node.handle());
        self.nodes.insert(id, node);
    }

    /// Stops node `id` and releases its store; messages to it are lost.
    pub fn stop(&mut self, id: u64) {
        self.inner.lock().expect("net lock").handles.remove(&id);
        if let Some(node) = self.nodes.remove(&id) {
            node.stop();
        }
    }

    /// Delivers only the messages `keep` accepts (replacing any filter).
    pub fn filter(&self, keep: impl Fn(&Message) -> bool + Send + 'static) {
        self.inner.lock().expect("net lock").filter = Some(Box::new(keep));
    }

    /// Delivers every message again.
    pub fn heal(&self) {
        self.inner.lock().expect("net lock").filter = None;
    }

    /// Node `id`'s handle.
    pub fn handle(&self, id: u64) -> NodeHandle {
        self.nodes[&id].handle()
    }

    /// Waits until some running node leads; returns its id.
    pub async fn leader(&self) -> u64 {
        self.wait_for("a leader", || {
            self.nodes
                .iter()
                .find(|(_, node)| node.handle().status().is_leader)
                .map(|(id, _)| *id)
        })
        .await
    }

    /// Polls `check` until it returns something (30 s at most).
    pub async fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }
}
