//! An in-process raft network for tests: several [`NodeThread`]s in one
//! process, each with its own RocksDB directory, whose messages go straight
//! to their peers' channels unless the test's filter drops them. Lets a test
//! hold back exactly the messages a failure scenario needs (append
//! responses, votes, everything to one node) and restart nodes from their
//! stores.

use crate::node::{LogCompaction, NodeHandle, NodeOptions, NodeThread, Transport};
use crate::storage::{AddressBook, Store};
use quarry_proto::NodeId;
use raft::eraftpb::Message;
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
    inner: Arc<Mutex<Inner>>,
}

impl Transport for LocalTransport {
    fn send(&self, messages: Vec<Message>) {
        let Ok(inner) = self.inner.lock() else { return };
        for message in messages {
            if inner.filter.as_ref().is_some_and(|keep| !keep(&message)) {
                continue;
            }
            if let Some(handle) = inner.handles.get(&message.to) {
                let _ = handle.step(message);
            }
        }
    }
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
