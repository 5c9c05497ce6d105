//! The raft driver: owns the `RawNode`, runs the Ready loop on a dedicated
//! thread (RocksDB calls block), applies committed commands to the state
//! machine and resolves each proposer's waiter when its entry is applied.

use crate::error::{CoordinatorError, Result};
use crate::state::{Command, Rejection, Response, Touched};
use crate::storage::{RaftStorage, Replica, Store};
use protobuf::Message as _;
use quarry_proto::NodeId;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How often raft ticks. Elections take `ELECTION_TICKS` of these.
const TICK: Duration = Duration::from_millis(100);
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 3;
/// How long a proposer waits for its entry to apply.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends raft messages to peers. The node calls it after persisting.
pub trait Transport: Send + 'static {
    /// Queues messages for their peers; must not block.
    fn send(&self, messages: Vec<Message>);

    /// Peers found unreachable since the last call, for `report_unreachable`.
    fn unreachable(&self) -> Vec<u64> {
        Vec::new()
    }
}

/// Transport for a single-node group: there is nobody to send to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, messages: Vec<Message>) {
        for m in messages {
            tracing::warn!(
                to = m.to,
                "dropping raft message: this coordinator has no peers configured"
            );
        }
    }
}

/// What a proposer gets back: the state machine's answer, or why the
/// proposal did not apply.
pub type ProposalResult = Result<std::result::Result<Response, Rejection>>;

enum NodeMsg {
    Propose {
        command: Box<Command>,
        reply: oneshot::Sender<ProposalResult>,
    },
    Raft(Box<Message>),
    Stop,
}

/// Raft status for `ClusterService.Status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node.
    pub id: u64,
    /// Leader known to this node (0 = none).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Whether this node leads.
    pub is_leader: bool,
}

/// A handle to the running node, cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<NodeMsg>,
    replica: Arc<RwLock<Replica>>,
    status: watch::Receiver<RaftStatus>,
}

/// The node's thread; dropping it does not stop the node, [`NodeThread::stop`] does.
pub struct NodeThread {
    handle: NodeHandle,
    join: Option<JoinHandle<()>>,
}

impl NodeThread {
    /// Opens the raft group stored in `store` and starts driving it.
    ///
    /// A fresh store is bootstrapped with `voters` as its membership.
    pub fn start(
        id: NodeId,
        store: Store,
        voters: &[u64],
        transport: Box<dyn Transport>,
    ) -> Result<Self> {
        if store.is_fresh()? {
            store.bootstrap(voters)?;
        }
        let replica = store.load_replica()?;
        let applied = replica.applied_index;
        let voters_now = replica.conf_state.voters.clone();
        let replica = Arc::new(RwLock::new(replica));
        let storage = RaftStorage::new(store.clone(), replica.clone());
        let config = Config {
            id: id.0,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(crate::raft_log::TracingDrain, slog::o!());
        let mut raw = RawNode::new(&config, storage, &logger)?;
        // A lone voter need not wait out an election timeout.
        if voters_now == [id.0] {
            raw.campaign()?;
        }
        let (tx, rx) = mpsc::channel();
        let (status_tx, status_rx) = watch::channel(RaftStatus {
            id: id.0,
            applied,
            ..RaftStatus::default()
        });
        let handle = NodeHandle {
            tx,
            replica: replica.clone(),
            status: status_rx,
        };
        let mut driver = Driver {
            id: id.0,
            raw,
            store,
            replica,
            transport,
            waiters: HashMap::new(),
            next_proposal: 1,
            status: status_tx,
        };
        let join = std::thread::Builder::new()
            .name(format!("raft-{}", id.0))
            .spawn(move || driver.run(rx))
            .map_err(|source| CoordinatorError::Io {
                context: "cannot start the raft thread".into(),
                source,
            })?;
        Ok(Self {
            handle,
            join: Some(join),
        })
    }

    /// A handle for proposals and reads.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the node and waits until its storage is released.
    pub fn stop(mut self) {
        let _ = self.handle.tx.send(NodeMsg::Stop);
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        let _ = self.handle.tx.send(NodeMsg::Stop);
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl NodeHandle {
    /// Proposes a command and waits until it is applied.
    pub async fn propose(&self, command: Command) -> ProposalResult {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(NodeMsg::Propose {
                command: Box::new(command),
                reply,
            })
            .map_err(|_| CoordinatorError::NodeStopped)?;
        match tokio::time::timeout(PROPOSAL_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CoordinatorError::NodeStopped),
            Err(_) => Err(CoordinatorError::ProposalTimeout(PROPOSAL_TIMEOUT)),
        }
    }

    /// Feeds a message from a peer into raft.
    pub fn step(&self, message: Message) -> Result<()> {
        self.tx
            .send(NodeMsg::Raft(Box::new(message)))
            .map_err(|_| CoordinatorError::NodeStopped)
    }

    /// Reads the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&Replica) -> T) -> Result<T> {
        let guard = self
            .replica
            .read()
            .map_err(|_| CoordinatorError::NodeStopped)?;
        Ok(f(&guard))
    }

    /// Current raft status.
    pub fn status(&self) -> RaftStatus {
        *self.status.borrow()
    }

    /// A receiver that changes whenever an entry is applied or leadership moves.
    pub fn subscribe(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }
}

struct Driver {
    id: u64,
    raw: RawNode<RaftStorage>,
    store: Store,
    replica: Arc<RwLock<Replica>>,
    transport: Box<dyn Transport>,
    /// Proposal id -> (term proposed in, waiter).
    waiters: HashMap<u64, (u64, oneshot::Sender<ProposalResult>)>,
    next_proposal: u64,
    status: watch::Sender<RaftStatus>,
}

impl Driver {
    fn run(&mut self, rx: mpsc::Receiver<NodeMsg>) {
        let mut last_tick = Instant::now();
        loop {
            let wait = TICK.saturating_sub(last_tick.elapsed());
            match rx.recv_timeout(wait) {
                Ok(NodeMsg::Propose { command, reply }) => self.propose(*command, reply),
                Ok(NodeMsg::Raft(message)) => {
                    if let Err(e) = self.raw.step(*message) {
                        tracing::debug!(error = %e, "raft rejected a peer message");
                    }
                }
                Ok(NodeMsg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            for peer in self.transport.unreachable() {
                self.raw.report_unreachable(peer);
            }
            if last_tick.elapsed() >= TICK {
                self.raw.tick();
                last_tick = Instant::now();
            }
            if let Err(e) = self.on_ready() {
                // A storage error is fatal: limping on could diverge from disk.
                tracing::error!(error = %e, node = self.id, "raft node stopping after a storage error; restart the coordinator");
                break;
            }
            self.publish_status();
        }
        for (_, (_, waiter)) in self.waiters.drain() {
            let _ = waiter.send(Err(CoordinatorError::NodeStopped));
        }
    }

    fn propose(&mut self, command: Command, reply: oneshot::Sender<ProposalResult>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(CoordinatorError::NotLeader {
                node: self.id,
                leader: self.raw.raft.leader_id,
            }));
            return;
        }
        let data = match crate::storage::encode(&command) {
            Ok(data) => data,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let proposal = self.next_proposal;
        self.next_proposal += 1;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.id.to_be_bytes());
        context.extend_from_slice(&proposal.to_be_bytes());
        match self.raw.propose(context, data) {
            Ok(()) => {
                self.waiters.insert(proposal, (self.raw.raft.term, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if *ready.snapshot() != raft::eraftpb::Snapshot::default() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        self.apply_entries(ready.take_committed_entries())?;
        self.store.append(ready.entries(), ready.hs())?;
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: raft::eraftpb::Snapshot) -> Result<()> {
        let state = crate::storage::decode(b"snapshot", &snapshot.data)?;
        let meta = snapshot.get_metadata();
        let replica = Replica {
            state,
            applied_index: meta.index,
            applied_term: meta.term,
            conf_state: meta.get_conf_state().clone(),
        };
        self.store.apply_snapshot(&snapshot, &replica)?;
        let mut guard = self
            .replica
            .write()
            .map_err(|_| CoordinatorError::NodeStopped)?;
        *guard = replica;
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (last_index, last_term) = (last.index, last.term);
        let mut touched: Vec<Touched> = Vec::new();
        let mut replies = Vec::new();
        {
            let mut replica = self
                .replica
                .write()
                .map_err(|_| CoordinatorError::NodeStopped)?;
            for entry in entries {
                if entry.index <= replica.applied_index {
                    continue; // already applied before a restart
                }
                match entry.get_entry_type() {
                    EntryType::EntryNormal => {
                        if entry.data.is_empty() {
                            continue; // a new leader's empty entry
                        }
                        let outcome = match crate::storage::decode::<Command>(
                            b"log entry",
                            &entry.data,
                        ) {
                            Ok(command) => {
                                let applied = replica.state.apply(entry.index, command);
                                touched.extend(applied.touched);
                                applied.outcome
                            }
                            Err(e) => {
                                // Every replica skips the same undecodable entry.
                                tracing::error!(index = entry.index, error = %e, "skipping undecodable log entry");
                                Err(Rejection::Invalid(format!("undecodable command: {e}")))
                            }
                        };
                        replies.push((entry.context.to_vec(), outcome));
                    }
                    EntryType::EntryConfChange => {
                        let mut cc = ConfChange::default();
                        if cc.merge_from_bytes(&entry.data).is_ok() {
                            replica.conf_state = self.raw.apply_conf_change(&cc)?;
                            self.store.set_conf_state(&replica.conf_state)?;
                        }
                    }
                    EntryType::EntryConfChangeV2 => {
                        let mut cc = ConfChangeV2::default();
                        if cc.merge_from_bytes(&entry.data).is_ok() {
                            replica.conf_state = self.raw.apply_conf_change(&cc)?;
                            self.store.set_conf_state(&replica.conf_state)?;
                        }
                    }
                }
            }
            replica.applied_index = replica.applied_index.max(last_index);
            replica.applied_term = last_term;
            touched.sort();
            touched.dedup();
            self.store.persist_applied(&replica, &touched)?;
        }
        for (context, outcome) in replies {
            if context.len() != 16 || context[..8] != self.id.to_be_bytes() {
                continue;
            }
            let mut id = [0u8; 8];
            id.copy_from_slice(&context[8..]);
            if let Some((_, waiter)) = self.waiters.remove(&u64::from_be_bytes(id)) {
                let _ = waiter.send(Ok(outcome));
            }
        }
        Ok(())
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        let applied = self.replica.read().map(|r| r.applied_index).unwrap_or(0);
        let status = RaftStatus {
            id: self.id,
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied,
            is_leader: raft.state == StateRole::Leader,
        };
        // Proposals from an earlier term, or made while leading, cannot be
        // answered once leadership moved: tell their callers to retry.
        if !status.is_leader && !self.waiters.is_empty() {
            for (_, (_, waiter)) in self.waiters.drain() {
                let _ = waiter.send(Err(CoordinatorError::NotLeader {
                    node: self.id,
                    leader: status.leader,
                }));
            }
        }
        self.status.send_if_modified(|old| {
            if *old != status {
                *old = status;
                true
            } else {
                false
            }
        });
    }
}
