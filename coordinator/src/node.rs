//! The raft driver: owns the `RawNode`, runs the Ready loop on a dedicated
//! thread (RocksDB calls block), applies committed commands to the state
//! machine and resolves each proposer's waiter when its entry is applied.
//!
//! Besides commands it handles membership changes (raft conf changes that
//! also carry the new member's URL, so the address book is replicated),
//! linearizable reads (raft ReadIndex), log compaction once enough entries
//! are applied, and the outcome of snapshot sends.

use crate::error::{CoordinatorError, Result};
use crate::state::{Command, Rejection, Response, Touched};
use crate::storage::{AddressBook, RaftStorage, Replica, Store};
use protobuf::Message as _;
use quarry_proto::NodeId;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType, Message,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole};
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
/// The least silence from the leader after which a follower campaigns
/// (raft randomises each node's timeout between this and twice it).
pub const ELECTION_TIMEOUT: Duration =
    Duration::from_millis(TICK.as_millis() as u64 * ELECTION_TICKS as u64);
/// How long a proposer waits for its entry to apply.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a linearizable read waits for the leader to confirm its commit
/// index (raft-rs drops a ReadIndex silently while a new leader has not
/// committed in its term, so requests are re-issued until then).
pub const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(3);
const READ_INDEX_RETRY: Duration = Duration::from_millis(300);
/// Messages taken from the channel per loop turn: proposals in one turn share
/// a Ready (one synced write), reads share a ReadIndex (one heartbeat round).
const MAX_BATCH: usize = 256;
/// A learner this close to the leader's commit index is promoted to voter.
const PROMOTE_WITHIN_ENTRIES: u64 = 64;

/// When a node cuts its raft log. Each node compacts on its own; a follower
/// that needs entries the leader has cut gets a snapshot instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogCompaction {
    /// Compact once this many entries were applied since the last compaction.
    pub threshold: u64,
    /// Applied entries left in the log after compacting, so a follower that
    /// is only slightly behind catches up from the log, not a snapshot.
    pub keep: u64,
}

impl LogCompaction {
    /// Compacts every `threshold` applied entries, keeping a tenth of that.
    pub fn every(threshold: u64) -> Self {
        Self {
            threshold: threshold.max(1),
            keep: threshold / 10,
        }
    }
}

impl Default for LogCompaction {
    fn default() -> Self {
        Self::every(5_000)
    }
}

/// Sends raft messages to peers. The node calls it after persisting.
pub trait Transport: Send + 'static {
    /// Queues messages for their peers; must not block.
    fn send(&self, messages: Vec<Message>);

    /// Peers found unreachable since the last call, for `report_unreachable`.
    fn unreachable(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Snapshot sends that ended since the last call, for `report_snapshot`.
    fn snapshot_reports(&self) -> Vec<(u64, SnapshotStatus)> {
        Vec::new()
    }

    /// The peers to send to (every member but this node), whenever the
    /// replicated address book changes.
    fn set_peers(&self, _peers: &AddressBook) {}
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

/// A change of the coordinator group's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a member reachable at `url` (or change a member's URL). It
    /// joins as a learner and the leader promotes it to voter once it has
    /// caught up, so a new node never counts towards a quorum it cannot
    /// yet help make.
    Add {
        /// The new member.
        node: NodeId,
        /// Where peers reach it.
        url: String,
    },
    /// Remove a member (not the leader: move leadership away first).
    Remove {
        /// The member.
        node: NodeId,
    },
}

/// What [`NodeHandle::hand_off_leadership`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandOff {
    /// This node did not lead: nothing to hand off.
    NotLeader,
    /// This node is the only voter: nobody to hand off to.
    Alone,
    /// Another node leads now.
    Moved {
        /// The new leader.
        leader: u64,
        /// Its term.
        term: u64,
    },
    /// Nobody took over in time (the group elects one after this node stops).
    TimedOut {
        /// The voter asked to take over.
        target: u64,
    },
    /// The transfer could not start.
    Failed(String),
}

/// A member of the group as this node has applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Raft id.
    pub id: NodeId,
    /// URL from the replicated address book, if known.
    pub url: Option<String>,
    /// Voter (true) or learner.
    pub voter: bool,
}

enum NodeMsg {
    Propose {
        command: Box<Command>,
        reply: oneshot::Sender<ProposalResult>,
    },
    ChangeMembership {
        change: MembershipChange,
        reply: oneshot::Sender<ProposalResult>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<()>>,
    },
    TransferLeadership {
        reply: oneshot::Sender<Result<u64>>,
    },
    LearnPeers(AddressBook),
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
    /// First index still in the log (everything before is compacted).
    pub first_index: u64,
}

/// A handle to the running node, cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<NodeMsg>,
    replica: Arc<RwLock<Replica>>,
    status: watch::Receiver<RaftStatus>,
    store: crate::storage::WeakStore,
}

/// The node's thread; dropping it does not stop the node, [`NodeThread::stop`] does.
pub struct NodeThread {
    handle: NodeHandle,
    join: Option<JoinHandle<()>>,
}

/// How a node starts.
pub struct NodeOptions {
    /// This node.
    pub id: NodeId,
    /// Voters of a new cluster; empty for a node that joins an existing one
    /// (it waits, without membership, for the leader's snapshot).
    pub voters: Vec<u64>,
    /// Addresses known from configuration: the whole book of a new cluster;
    /// on restart the replicated book is used instead.
    pub peers: AddressBook,
    /// When to compact the log.
    pub compaction: LogCompaction,
}

impl NodeThread {
    /// Opens the raft group stored in `store` and starts driving it.
    ///
    /// A fresh store is bootstrapped with `options.voters` as its membership
    /// unless that is empty (a joining node).
    pub fn start(
        store: Store,
        options: NodeOptions,
        transport: Box<dyn Transport>,
    ) -> Result<Self> {
        let id = options.id;
        if store.is_fresh()? && !options.voters.is_empty() {
            store.bootstrap(&options.voters, &options.peers)?;
        }
        let mut replica = store.load_replica()?;
        store.raise_commit_to(replica.applied_index)?;
        let boot = store.next_boot()?;
        // The replicated book wins over flags, which may name members removed
        // since; only a store from before the book existed takes the flags.
        if replica.peers.is_empty() {
            replica.peers = options.peers.clone();
        }
        let applied = replica.applied_index;
        let voters_now = replica.conf_state.voters.clone();
        let first_index = store.snapshot_metadata()?.index + 1;
        transport.set_peers(&others(&replica.peers, id.0));
        let replica = Arc::new(RwLock::new(replica));
        let storage = RaftStorage::new(store.clone());
        let config = Config {
            id: id.0,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            max_size_per_msg: 1024 * 1024,
            // Entries can be large (a report's findings, a module), and a
            // slow follower's in-flight appends are held in memory: bound
            // them (32 x 1 MiB per follower) rather than allow 256.
            max_inflight_msgs: 32,
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
            first_index,
            ..RaftStatus::default()
        });
        let handle = NodeHandle {
            tx,
            replica: replica.clone(),
            status: status_rx,
            store: store.downgrade(),
        };
        let mut driver = Driver {
            id: id.0,
            raw,
            store,
            replica,
            transport,
            waiters: HashMap::new(),
            boot,
            next_proposal: 1,
            status: status_tx,
            reads_unissued: Vec::new(),
            reads: HashMap::new(),
            reads_to_apply: Vec::new(),
            next_read: 1,
            compaction: options.compaction,
            first_index,
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

/// The address book without this node: whom the transport sends to.
fn others(peers: &AddressBook, me: u64) -> AddressBook {
    peers
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, url)| (*id, url.clone()))
        .collect()
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
        let started = std::time::Instant::now();
        let result = wait(rx, PROPOSAL_TIMEOUT).await.and_then(|r| r);
        let applied = matches!(result, Ok(Ok(_)));
        crate::metrics::instruments().proposal_done(started.elapsed(), applied);
        result
    }

    /// The replicated state, weakly: for observers that must not keep a
    /// stopped node's state alive.
    pub(crate) fn weak_replica(&self) -> std::sync::Weak<RwLock<Replica>> {
        Arc::downgrade(&self.replica)
    }

    /// Proposes a membership change (a raft conf change) and waits until it
    /// is applied on this node, the leader.
    #[tracing::instrument(skip(self))]
    pub async fn change_membership(&self, change: MembershipChange) -> ProposalResult {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(NodeMsg::ChangeMembership { change, reply })
            .map_err(|_| CoordinatorError::NodeStopped)?;
        wait(rx, PROPOSAL_TIMEOUT).await?
    }

    /// Waits until this node's applied state includes every write committed
    /// before the call (raft ReadIndex), so a read that follows is
    /// linearizable, on the leader and on followers alike.
    pub async fn read_index(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(NodeMsg::ReadIndex { reply })
            .map_err(|_| CoordinatorError::NodeStopped)?;
        // The driver answers by READ_INDEX_TIMEOUT; the margin covers a busy loop.
        wait(rx, READ_INDEX_TIMEOUT + Duration::from_secs(2)).await?
    }

    /// Hands leadership to the most up-to-date other voter; returns its id.
    /// Only the leader can; poll [`NodeHandle::status`] to see it happen.
    pub async fn transfer_leadership(&self) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(NodeMsg::TransferLeadership { reply })
            .map_err(|_| CoordinatorError::NodeStopped)?;
        wait(rx, PROPOSAL_TIMEOUT).await?
    }

    /// Before this node stops: if it leads a group with other voters, hands
    /// leadership to the most caught-up one and waits up to `timeout` until
    /// another node leads, so the group has a leader again within a few
    /// round trips instead of an election timeout of silence.
    pub async fn hand_off_leadership(&self, timeout: Duration) -> HandOff {
        let before = self.status();
        if !before.is_leader {
            return HandOff::NotLeader;
        }
        let others = self
            .read(|r| r.conf_state.voters.iter().any(|v| *v != before.id))
            .unwrap_or(false);
        if !others {
            return HandOff::Alone;
        }
        let target = match self.transfer_leadership().await {
            Ok(target) => target,
            Err(error) => return HandOff::Failed(error.to_string()),
        };
        let mut changes = self.subscribe();
        let moved = tokio::time::timeout(timeout, async {
            loop {
                let s = *changes.borrow_and_update();
                if !s.is_leader && s.leader != 0 && s.leader != s.id {
                    return Some((s.leader, s.term));
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match moved {
            Ok(Some((leader, term))) => HandOff::Moved { leader, term },
            Ok(None) => HandOff::Failed("the raft node stopped".to_owned()),
            Err(_) => HandOff::TimedOut { target },
        }
    }

    /// Adds addresses this node learnt outside the log (a joining node hears
    /// them from the member that admitted it) for ids it does not know yet.
    pub fn learn_peers(&self, peers: AddressBook) -> Result<()> {
        self.tx
            .send(NodeMsg::LearnPeers(peers))
            .map_err(|_| CoordinatorError::NodeStopped)
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

    /// Up to `limit` committed findings of `hunt` from number `from` on,
    /// read from RocksDB (findings are not held in memory). Blocks on disk:
    /// call it off the async runtime for large pages.
    pub fn findings(
        &self,
        hunt: &quarry_proto::HuntId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::state::FindingRecord)>> {
        self.store
            .upgrade()
            .ok_or(CoordinatorError::NodeStopped)?
            .findings(hunt, from, limit)
    }

    /// Up to `limit` findings of triage alert `alert` from its `from`-th
    /// on (see [`Store::alert_findings`]). Blocks on disk.
    pub fn alert_findings(
        &self,
        alert: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<(quarry_proto::HuntId, u64, crate::state::FindingRecord)>> {
        self.store
            .upgrade()
            .ok_or(CoordinatorError::NodeStopped)?
            .alert_findings(alert, from, limit)
    }

    /// The URL of coordinator `id` from the replicated address book.
    pub fn peer_url(&self, id: u64) -> Option<String> {
        self.read(|r| r.peers.get(&id).cloned()).ok().flatten()
    }

    /// The group's members as applied on this node.
    pub fn members(&self) -> Result<Vec<Member>> {
        self.read(|r| {
            let voters = r.conf_state.voters.iter().map(|id| (*id, true));
            let learners = r.conf_state.learners.iter().map(|id| (*id, false));
            let mut members: Vec<Member> = voters
                .chain(learners)
                .map(|(id, voter)| Member {
                    id: NodeId(id),
                    url: r.peers.get(&id).cloned(),
                    voter,
                })
                .collect();
            members.sort_by_key(|m| m.id);
            members
        })
    }

    /// Where this node builds and receives snapshot files.
    pub fn snapshot_dir(&self) -> &std::path::Path {
        self.store.snapshot_dir()
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

async fn wait<T>(rx: oneshot::Receiver<T>, timeout: Duration) -> Result<T> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(_)) => Err(CoordinatorError::NodeStopped),
        Err(_) => Err(CoordinatorError::ProposalTimeout(timeout)),
    }
}

/// One ReadIndex request and every read waiting on it.
struct PendingRead {
    first: Instant,
    issued: Instant,
    replies: Vec<oneshot::Sender<Result<()>>>,
}

struct Driver {
    id: u64,
    raw: RawNode<RaftStorage>,
    store: Store,
    replica: Arc<RwLock<Replica>>,
    transport: Box<dyn Transport>,
    /// Proposal id -> (term proposed in, waiter).
    waiters: HashMap<u64, (u64, oneshot::Sender<ProposalResult>)>,
    /// This start's number ([`Store::next_boot`]): proposal ids restart at 1
    /// on every boot, so the context names the boot too.
    boot: u64,
    next_proposal: u64,
    status: watch::Sender<RaftStatus>,
    /// Reads received this loop turn, not yet asked of raft.
    reads_unissued: Vec<oneshot::Sender<Result<()>>>,
    /// ReadIndex requests raft has not answered yet, by context.
    reads: HashMap<u64, PendingRead>,
    /// Reads whose index is known, waiting for apply to reach it.
    reads_to_apply: Vec<(u64, oneshot::Sender<Result<()>>)>,
    next_read: u64,
    compaction: LogCompaction,
    /// First index still in the log.
    first_index: u64,
}

impl Driver {
    fn run(&mut self, rx: mpsc::Receiver<NodeMsg>) {
        let mut last_tick = Instant::now();
        'run: loop {
            let wait = TICK.saturating_sub(last_tick.elapsed());
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(message) => batch.push(message),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            // Whatever queued meanwhile joins this turn (a closed channel
            // shows up in the next recv_timeout).
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            for message in batch {
                match message {
                    NodeMsg::Propose { command, reply } => self.propose(*command, reply),
                    NodeMsg::ChangeMembership { change, reply } => {
                        self.change_membership(change, reply)
                    }
                    NodeMsg::ReadIndex { reply } => self.reads_unissued.push(reply),
                    NodeMsg::TransferLeadership { reply } => {
                        let _ = reply.send(self.transfer_leadership());
                    }
                    NodeMsg::LearnPeers(peers) => {
                        if let Err(e) = self.learn_peers(peers) {
                            tracing::error!(error = %e, node = self.id, "raft node stopping after a storage error; restart the coordinator");
                            break 'run;
                        }
                    }
                    NodeMsg::Raft(message) => {
                        if let Err(e) = self.raw.step(*message) {
                            tracing::debug!(error = %e, "raft rejected a peer message");
                        }
                    }
                    NodeMsg::Stop => break 'run,
                }
            }
            self.issue_reads();
            for peer in self.transport.unreachable() {
                self.raw.report_unreachable(peer);
            }
            for (peer, status) in self.transport.snapshot_reports() {
                tracing::info!(peer, ?status, "snapshot send ended");
                self.raw.report_snapshot(peer, status);
            }
            if last_tick.elapsed() >= TICK {
                self.raw.tick();
                last_tick = Instant::now();
                self.retry_reads();
            }
            self.promote_caught_up_learners();
            if let Err(e) = self.on_ready().and_then(|()| self.maybe_compact()) {
                // A storage error is fatal: limping on could diverge from disk.
                tracing::error!(error = %e, node = self.id, "raft node stopping after a storage error; restart the coordinator");
                break;
            }
            self.publish_status();
        }
        for (_, (_, waiter)) in self.waiters.drain() {
            let _ = waiter.send(Err(CoordinatorError::NodeStopped));
        }
        let unissued = std::mem::take(&mut self.reads_unissued);
        let pending = self.reads.drain().flat_map(|(_, read)| read.replies);
        for reply in unissued.into_iter().chain(pending) {
            let _ = reply.send(Err(CoordinatorError::NodeStopped));
        }
        for (_, reply) in self.reads_to_apply.drain(..) {
            let _ = reply.send(Err(CoordinatorError::NodeStopped));
        }
    }

    fn not_leader(&self) -> CoordinatorError {
        CoordinatorError::NotLeader {
            node: self.id,
            leader: self.raw.raft.leader_id,
        }
    }

    /// Entry context naming this node, this boot and a proposal, so only the
    /// proposer resolves a waiter when the entry applies: an entry proposed
    /// before a restart (which may commit after it, under any leader) names
    /// an older boot and answers nobody.
    fn next_context(&mut self) -> (u64, Vec<u8>) {
        let proposal = self.next_proposal;
        self.next_proposal += 1;
        (proposal, proposal_context(self.id, self.boot, proposal))
    }

    /// The waiter an applied entry answers, if this node proposed it in
    /// this boot and in the term the waiter recorded.
    fn waiter_for(&mut self, context: &[u8], term: u64) -> Option<oneshot::Sender<ProposalResult>> {
        let (node, boot, proposal) = parse_context(context)?;
        if node != self.id || boot != self.boot {
            return None;
        }
        let (proposed_in, waiter) = self.waiters.remove(&proposal)?;
        if proposed_in != term {
            // raft stamps an entry with the term it was proposed in; another
            // term means this is not the entry the caller is waiting for.
            let _ = waiter.send(Err(CoordinatorError::OutcomeUnknown {
                node: self.id,
                leader: self.raw.raft.leader_id,
            }));
            return None;
        }
        Some(waiter)
    }

    fn propose(&mut self, command: Command, reply: oneshot::Sender<ProposalResult>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let data = match crate::storage::encode(&command) {
            Ok(data) => data,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let (proposal, context) = self.next_context();
        match self.raw.propose(context, data) {
            Ok(()) => {
                self.waiters.insert(proposal, (self.raw.raft.term, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn change_membership(
        &mut self,
        change: MembershipChange,
        reply: oneshot::Sender<ProposalResult>,
    ) {
        match self.conf_change(&change) {
            Ok(cc) => {
                let (proposal, context) = self.next_context();
                match self.raw.propose_conf_change(context, cc) {
                    Ok(()) => {
                        tracing::info!(?change, "membership change proposed");
                        self.waiters.insert(proposal, (self.raw.raft.term, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Checks a membership change against the applied membership and builds
    /// its conf change; the new member's URL rides in the conf change's
    /// context so every replica's address book learns it on apply.
    fn conf_change(&self, change: &MembershipChange) -> Result<ConfChangeV2> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        // raft-rs turns a second pending conf change into an empty entry
        // that would leave the caller waiting: refuse it up front.
        if self.raw.raft.has_pending_conf() {
            return Err(CoordinatorError::FailedPrecondition(
                "another membership change is still being applied; retry in a moment".into(),
            ));
        }
        let conf = self
            .replica
            .read()
            .map_err(|_| CoordinatorError::NodeStopped)?
            .conf_state
            .clone();
        let mut single = ConfChangeSingle::default();
        let mut cc = ConfChangeV2::default();
        match change {
            MembershipChange::Add { node, url } => {
                if node.0 == 0 {
                    return Err(CoordinatorError::InvalidArgument(
                        "coordinator node id must be non-zero".into(),
                    ));
                }
                validate_url(url)?;
                // A current voter keeps its vote; only its URL changes.
                single.set_change_type(if conf.voters.contains(&node.0) {
                    ConfChangeType::AddNode
                } else {
                    ConfChangeType::AddLearnerNode
                });
                single.node_id = node.0;
                cc.context =
                    crate::storage::encode(&AddressBook::from([(node.0, url.clone())]))?.into();
            }
            MembershipChange::Remove { node } => {
                if !conf.voters.contains(&node.0) && !conf.learners.contains(&node.0) {
                    return Err(CoordinatorError::NotFound(format!(
                        "coordinator {node} is not a member (members: {:?}); `quarry cluster status` lists them",
                        conf.voters
                    )));
                }
                if node.0 == self.id {
                    return Err(CoordinatorError::FailedPrecondition(format!(
                        "coordinator {node} leads the group; move leadership away before removing it"
                    )));
                }
                if conf.voters == [node.0] {
                    return Err(CoordinatorError::FailedPrecondition(
                        "cannot remove the last coordinator of the group".into(),
                    ));
                }
                single.set_change_type(ConfChangeType::RemoveNode);
                single.node_id = node.0;
            }
        }
        cc.mut_changes().push(single);
        Ok(cc)
    }

    /// Leader only: proposes the promotion of one learner whose log is
    /// within [`PROMOTE_WITHIN_ENTRIES`] of the commit index (one conf change
    /// at a time; the next waits for this one to apply).
    fn promote_caught_up_learners(&mut self) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader || raft.has_pending_conf() {
            return;
        }
        let Ok(learners) = self.replica.read().map(|r| r.conf_state.learners.clone()) else {
            return;
        };
        let committed = raft.raft_log.committed;
        let ready = learners.into_iter().find(|id| {
            raft.prs()
                .get(*id)
                .is_some_and(|p| p.matched > 0 && p.matched + PROMOTE_WITHIN_ENTRIES >= committed)
        });
        let Some(learner) = ready else { return };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(ConfChangeType::AddNode);
        single.node_id = learner;
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(single);
        // No waiter: nobody asked; the next loop sees it pending or applied.
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => tracing::info!(
                learner,
                "learner caught up; proposing its promotion to voter"
            ),
            Err(e) => {
                tracing::warn!(learner, error = %e, "cannot propose a learner's promotion; will retry")
            }
        }
    }

    fn transfer_leadership(&mut self) -> Result<u64> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        let voters = self
            .replica
            .read()
            .map_err(|_| CoordinatorError::NodeStopped)?
            .conf_state
            .voters
            .clone();
        let target = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.id && voters.contains(id))
            // A voter heard from recently before one that may be down, then
            // the most caught-up: it can take over without a long catch-up.
            .max_by_key(|(_, progress)| (progress.recent_active, progress.matched))
            .map(|(id, _)| *id)
            .ok_or_else(|| {
                CoordinatorError::FailedPrecondition(
                    "no other voter to hand leadership to; add a coordinator first".into(),
                )
            })?;
        tracing::info!(to = target, "transferring leadership");
        self.raw.transfer_leader(target);
        Ok(target)
    }

    fn learn_peers(&mut self, peers: AddressBook) -> Result<()> {
        let mut replica = self
            .replica
            .write()
            .map_err(|_| CoordinatorError::NodeStopped)?;
        let before = replica.peers.len();
        for (id, url) in peers {
            replica.peers.entry(id).or_insert(url);
        }
        if replica.peers.len() != before {
            self.store.set_peers(&replica.peers)?;
            self.transport.set_peers(&others(&replica.peers, self.id));
        }
        Ok(())
    }

    /// Asks raft for one read index on behalf of every read received this
    /// turn. All of them arrived before the request, so the index it returns
    /// covers every write acknowledged before any of them started.
    fn issue_reads(&mut self) {
        if self.reads_unissued.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.reads_unissued);
        if self.raw.raft.leader_id == raft::INVALID_ID {
            // Nobody can confirm the commit index now; fail fast.
            for reply in replies {
                let _ = reply.send(Err(self.not_leader()));
            }
            return;
        }
        let ctx = self.next_read;
        self.next_read += 1;
        self.raw.read_index(ctx.to_be_bytes().to_vec());
        let now = Instant::now();
        self.reads.insert(
            ctx,
            PendingRead {
                first: now,
                issued: now,
                replies,
            },
        );
    }

    /// Re-issues reads raft dropped (no leader yet, or a leader that has not
    /// committed in its term) and fails those past their deadline.
    fn retry_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.first.elapsed() >= READ_INDEX_TIMEOUT)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            if let Some(read) = self.reads.remove(&ctx) {
                for reply in read.replies {
                    let _ = reply.send(Err(self.not_leader()));
                }
            }
        }
        let retry: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.issued.elapsed() >= READ_INDEX_RETRY)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in retry {
            self.raw.read_index(ctx.to_be_bytes().to_vec());
            if let Some(read) = self.reads.get_mut(&ctx) {
                read.issued = Instant::now();
            }
        }
    }

    fn resolve_reads(&mut self) {
        if self.reads_to_apply.is_empty() {
            return;
        }
        let applied = self.replica.read().map(|r| r.applied_index).unwrap_or(0);
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .reads_to_apply
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        self.reads_to_apply = waiting;
        for (_, reply) in ready {
            let _ = reply.send(Ok(()));
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
        for state in ready.take_read_states() {
            let Ok(ctx) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(read) = self.reads.remove(&u64::from_be_bytes(ctx)) {
                let index = state.index;
                self.reads_to_apply
                    .extend(read.replies.into_iter().map(|reply| (index, reply)));
            }
        }
        if *ready.snapshot() != raft::eraftpb::Snapshot::default() {
            self.install_snapshot(ready.snapshot())?;
        }
        // Entries and hard state reach disk before anything is applied, so
        // the stored commit index always covers the stored applied index
        // (raft-rs refuses to start otherwise).
        self.store.append(ready.entries(), ready.hs())?;
        self.apply_entries(ready.take_committed_entries())?;
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
        self.resolve_reads();
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(index = snapshot.get_metadata().index, term = snapshot.get_metadata().term))]
    fn install_snapshot(&mut self, snapshot: &raft::eraftpb::Snapshot) -> Result<()> {
        let replica = self.store.install_snapshot(snapshot)?;
        self.transport.set_peers(&others(&replica.peers, self.id));
        self.first_index = snapshot.get_metadata().index + 1;
        let mut guard = self
            .replica
            .write()
            .map_err(|_| CoordinatorError::NodeStopped)?;
        *guard = replica;
        tracing::info!(
            voters = ?guard.conf_state.voters,
            hunts = guard.state.hunts.len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Cuts the log once `threshold` entries were applied since the last cut.
    /// The state machine in RocksDB already holds everything applied, so the
    /// cut entries are the snapshot; a follower that needs them gets one
    /// built from the replica ([`RaftStorage`]).
    fn maybe_compact(&mut self) -> Result<()> {
        let (applied, conf) = {
            let replica = self
                .replica
                .read()
                .map_err(|_| CoordinatorError::NodeStopped)?;
            (replica.applied_index, replica.conf_state.clone())
        };
        let compacted = self.first_index.saturating_sub(1);
        if applied < compacted + self.compaction.threshold + self.compaction.keep {
            return Ok(());
        }
        let to = applied - self.compaction.keep;
        let span = tracing::info_span!("compact", node = self.id, to, applied);
        let _enter = span.enter();
        let cut = self.store.compact(to, &conf)?;
        self.first_index = to + 1;
        tracing::info!(entries = cut, "compacted the raft log");
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut touched: Vec<Touched> = Vec::new();
        let mut findings = Vec::new();
        let mut triage = Vec::new();
        let mut replies = Vec::new();
        let mut peers_changed = false;
        // The cluster's counters are the leader's (see crate::metrics).
        let leading = self.raw.raft.state == StateRole::Leader;
        let applied = self
            .replica
            .read()
            .map_err(|_| CoordinatorError::NodeStopped)?
            .applied_index;
        for entry in entries {
            if entry.index <= applied {
                continue; // already applied before a restart
            }
            // The applied point moves with the state, entry by entry, under
            // the same lock: a snapshot (which raft may build in the middle
            // of this batch, for instance while a conf change applies)
            // always holds exactly the entries up to the index it claims.
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    // A new leader's empty entry.
                    self.replica_mut()?.advance_applied(&entry);
                    continue;
                }
                EntryType::EntryNormal => {
                    match crate::storage::decode::<Command>(b"log entry", &entry.data) {
                        Ok(command) => {
                            let kind = leading.then(|| crate::metrics::CommandKind::of(&command));
                            let mut replica = self.replica_mut()?;
                            let applied = replica.state.apply(entry.index, command);
                            replica.advance_applied(&entry);
                            if let (Some(kind), Ok(response)) = (&kind, &applied.outcome) {
                                let metrics = crate::metrics::instruments();
                                metrics.applied(kind, response);
                                metrics.triage(&applied.triage);
                            }
                            touched.extend(applied.touched);
                            findings.extend(applied.findings);
                            triage.extend(applied.triage);
                            applied.outcome
                        }
                        Err(e) => {
                            // Every replica skips the same undecodable entry.
                            tracing::error!(index = entry.index, error = %e, "skipping undecodable log entry");
                            self.replica_mut()?.advance_applied(&entry);
                            Err(Rejection::Invalid(format!("undecodable command: {e}")))
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let outcome = self.apply_conf_change(&entry);
                    self.replica_mut()?.advance_applied(&entry);
                    peers_changed |= outcome.is_ok();
                    outcome
                }
            };
            replies.push((entry.context.to_vec(), entry.term, outcome));
        }
        {
            let mut replica = self.replica_mut()?;
            touched.sort();
            touched.dedup();
            self.store
                .persist_applied(&mut replica, &touched, &findings, &triage)?;
            if peers_changed {
                self.transport.set_peers(&others(&replica.peers, self.id));
            }
        }
        for (context, term, outcome) in replies {
            if let Some(waiter) = self.waiter_for(&context, term) {
                let _ = waiter.send(Ok(outcome));
            }
        }
        Ok(())
    }

    fn replica_mut(&self) -> Result<std::sync::RwLockWriteGuard<'_, Replica>> {
        self.replica
            .write()
            .map_err(|_| CoordinatorError::NodeStopped)
    }

    /// Applies a committed conf change to raft, the replica's membership and
    /// its address book. Not under the replica lock: raft may build a
    /// snapshot (which reads the replica) while applying.
    fn apply_conf_change(&mut self, entry: &Entry) -> std::result::Result<Response, Rejection> {
        let cc = if entry.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(&entry.data).map(|mut v1| {
                let mut single = ConfChangeSingle::default();
                single.set_change_type(v1.get_change_type());
                single.node_id = v1.node_id;
                let mut cc = ConfChangeV2::default();
                cc.mut_changes().push(single);
                cc.context = std::mem::take(&mut v1.context);
                cc
            })
        } else {
            ConfChangeV2::parse_from_bytes(&entry.data)
        };
        let cc = cc.map_err(|e| {
            tracing::error!(index = entry.index, error = %e, "skipping undecodable conf change");
            Rejection::Invalid(format!("undecodable conf change: {e}"))
        })?;
        // Deterministic on every replica, so skipping it keeps them equal.
        let conf_state = self.raw.apply_conf_change(&cc).map_err(|e| {
            tracing::error!(index = entry.index, error = %e, "raft refused a conf change");
            Rejection::Conflict(format!("membership change refused: {e}"))
        })?;
        let urls: AddressBook = if cc.context.is_empty() {
            AddressBook::new()
        } else {
            crate::storage::decode(b"conf change context", &cc.context).unwrap_or_default()
        };
        let mut replica = self.replica.write().map_err(|_| {
            Rejection::Invalid("the replica lock is poisoned; restart the coordinator".into())
        })?;
        for change in cc.get_changes() {
            match change.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Some(url) = urls.get(&change.node_id) {
                        replica.peers.insert(change.node_id, url.clone());
                    }
                }
                ConfChangeType::RemoveNode => {
                    replica.peers.remove(&change.node_id);
                    if change.node_id == self.id {
                        tracing::warn!(
                            node = self.id,
                            "this coordinator was removed from the group; stop it (its data directory is no longer needed)"
                        );
                    }
                }
            }
        }
        tracing::info!(index = entry.index, voters = ?conf_state.voters, "membership changed");
        replica.conf_state = conf_state;
        Ok(Response::Done)
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
            first_index: self.first_index,
        };
        // Proposals made while leading cannot be answered once leadership
        // moved, and may still commit under the new leader: their outcome
        // is unknown (a caller with a request id can retry safely).
        if !status.is_leader && !self.waiters.is_empty() {
            for (_, (_, waiter)) in self.waiters.drain() {
                let _ = waiter.send(Err(CoordinatorError::OutcomeUnknown {
                    node: self.id,
                    leader: status.leader,
                }));
            }
        }
        self.status.send_if_modified(|old| {
            if *old != status {
                crate::metrics::instruments().leader_changed(old, &status);
                *old = status;
                true
            } else {
                false
            }
        });
    }
}

/// An entry's context: proposing node, its boot and the proposal's number.
fn proposal_context(node: u64, boot: u64, proposal: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(24);
    context.extend_from_slice(&node.to_be_bytes());
    context.extend_from_slice(&boot.to_be_bytes());
    context.extend_from_slice(&proposal.to_be_bytes());
    context
}

/// The inverse of [`proposal_context`]; `None` for any other context (a
/// learner's promotion has none).
fn parse_context(context: &[u8]) -> Option<(u64, u64, u64)> {
    let part = |i: usize| {
        context
            .get(i * 8..i * 8 + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    };
    (context.len() == 24).then_some(())?;
    Some((part(0)?, part(1)?, part(2)?))
}

/// Checks a coordinator URL given for membership.
pub fn validate_url(url: &str) -> Result<()> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty())
        && url.parse::<tonic::transport::Uri>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(CoordinatorError::InvalidArgument(format!(
            "coordinator URL `{url}` is invalid; give one like http://10.0.0.8:7700"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_net::LocalNet;
    use crate::state::ModuleRecord;
    use quarry_proto::ModuleDigest;

    fn start(dir: &std::path::Path, voters: Vec<u64>) -> NodeThread {
        let store = Store::open(dir).expect("open");
        let options = NodeOptions {
            id: NodeId(1),
            voters,
            peers: AddressBook::new(),
            compaction: LogCompaction::every(4),
        };
        NodeThread::start(store, options, Box::new(NoPeers)).expect("start")
    }

    fn upload(n: u8) -> Command {
        upload_n(u32::from(n))
    }

    fn digest_n(n: u32) -> ModuleDigest {
        ModuleDigest::new(format!("{n:08x}").repeat(8))
    }

    fn upload_n(n: u32) -> Command {
        Command::UploadModule {
            module: ModuleRecord {
                digest: digest_n(n),
                name: format!("m{n}"),
                version: "1".into(),
                description: String::new(),
                uploaded_ms: 1,
                techniques: Vec::new(),
                bytes: n.to_be_bytes().repeat(4),
            },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_see_every_acknowledged_write_and_the_log_compacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = start(dir.path(), vec![1]);
        let handle = node.handle();
        for n in 0..12u8 {
            let applied = handle.propose(upload(n)).await.expect("commit");
            assert!(applied.is_ok(), "{applied:?}");
            // Many reads at once share ReadIndex requests; each still sees
            // every module acknowledged before it started.
            let reads = (0..20).map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    handle.read_index().await?;
                    handle.read(|r| r.state.modules.len())
                })
            });
            for read in reads {
                let seen = read.await.expect("join").expect("read");
                assert!(
                    seen > usize::from(n),
                    "read saw {seen} modules after {n} writes"
                );
            }
        }
        let status = handle.status();
        assert!(
            status.first_index > 2,
            "12 entries with a threshold of 4 compact the log: {status:?}"
        );
        node.stop();

        // Restart from the compacted log: the state and the point are intact.
        let node = start(dir.path(), vec![1]);
        let handle = node.handle();
        assert_eq!(handle.read(|r| r.state.modules.len()).expect("read"), 12);
        let mut changes = handle.subscribe();
        tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|s| s.is_leader))
            .await
            .expect("leader again")
            .expect("status");
        handle
            .propose(upload(99))
            .await
            .expect("commit")
            .expect("applied");
        handle.read_index().await.expect("read index");
        assert_eq!(handle.read(|r| r.state.modules.len()).expect("read"), 13);
        node.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_without_a_leader_fails_at_once_instead_of_serving_stale_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Voter 2 never answers: no leader can be elected.
        let node = start(dir.path(), vec![1, 2]);
        let started = Instant::now();
        let err = node
            .handle()
            .read_index()
            .await
            .expect_err("nobody can confirm the commit index");
        assert!(
            matches!(err, CoordinatorError::NotLeader { leader: 0, .. }),
            "{err}"
        );
        // At once, not after a proposal's 15 s timeout (the bound is loose
        // for loaded machines).
        assert!(started.elapsed() < PROPOSAL_TIMEOUT / 3);
        node.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_whose_applied_index_is_ahead_of_its_commit_starts_and_rejoins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut net = LocalNet::start(dir.path(), 3, LogCompaction::every(1_000));
        let leader = net.leader().await;
        for n in 0..5 {
            net.handle(leader)
                .propose(upload(n))
                .await
                .expect("commit")
                .expect("applied");
        }
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        let modules = |net: &LocalNet, id: u64| net.handle(id).read(|r| r.state.modules.len());
        net.wait_for("the follower to apply every upload", || {
            (modules(&net, follower).ok()? == 5).then_some(())
        })
        .await;
        net.stop(follower);

        // The state of a crash after the applied point reached disk but
        // before the hard state whose commit covers it did.
        let store = Store::open(&net.dir_of(follower)).expect("open");
        let applied = store.load_replica().expect("load").applied_index;
        store.set_commit(applied - 3).expect("set commit");
        drop(store);

        net.restart(follower);
        net.handle(leader)
            .propose(upload(5))
            .await
            .expect("commit")
            .expect("applied");
        net.wait_for("the restarted follower to catch up", || {
            (modules(&net, follower).ok()? == 6).then_some(())
        })
        .await;
        let store_commit = net.handle(follower).status().commit;
        assert!(
            store_commit >= applied,
            "commit {store_commit} < applied {applied}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_applied_index_moves_with_the_state_entry_by_entry() {
        // A snapshot (and a linearizable read) takes the state and the
        // applied index under one read lock; whenever it runs, even in the
        // middle of a batch of entries, the state must hold exactly the
        // entries up to that index, or a follower that installs the
        // snapshot applies the rest twice.
        let dir = tempfile::tempdir().expect("tempdir");
        let node = start(dir.path(), vec![1]);
        let handle = node.handle();
        let mut changes = handle.subscribe();
        tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|s| s.is_leader))
            .await
            .expect("leader")
            .expect("status");
        handle
            .propose(upload_n(0))
            .await
            .expect("commit")
            .expect("applied");
        // Every later entry is one upload.
        let base = handle.read(|r| r.applied_index - 1).expect("read");

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (handle, done) = (handle.clone(), done.clone());
            std::thread::spawn(move || {
                let mut torn = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let (applied, modules) = handle
                        .read(|r| (r.applied_index, r.state.modules.len() as u64))
                        .expect("read");
                    if modules + base != applied && torn.len() < 5 {
                        torn.push((applied, modules));
                    }
                }
                torn
            })
        };
        // Concurrent proposals share batches of many entries.
        let proposals: Vec<_> = (1..=3_000u32)
            .map(|n| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.propose(upload_n(n)).await })
            })
            .collect();
        for proposal in proposals {
            proposal
                .await
                .expect("join")
                .expect("commit")
                .expect("applied");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let torn = sampler.join().expect("sampler");
        assert!(
            torn.is_empty(),
            "views whose state was ahead of their applied index (applied, modules): {torn:?}"
        );
        assert_eq!(handle.read(|r| r.state.modules.len()).expect("read"), 3_001);
        node.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_proposed_before_a_restart_answers_nobody_after_it() {
        use raft::eraftpb::MessageType;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut net = LocalNet::start(dir.path(), 3, LogCompaction::every(1_000));
        let leader = net.leader().await;

        // X reaches the leader's log but cannot commit: no append response
        // gets back to the leader.
        net.filter(move |m| {
            !(m.to == leader && m.get_msg_type() == MessageType::MsgAppendResponse)
        });
        let x = {
            let handle = net.handle(leader);
            tokio::spawn(async move { handle.propose(upload_n(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        net.stop(leader);
        assert!(
            matches!(x.await.expect("join"), Err(CoordinatorError::NodeStopped)),
            "X's caller learns the node stopped"
        );

        // The same node comes back and is the only one that can win an
        // election; commits stay held until its new proposal Y is waiting.
        net.filter(move |m| {
            let vote = matches!(
                m.get_msg_type(),
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            );
            let rival_vote = vote && m.from != leader;
            let ack = m.to == leader && m.get_msg_type() == MessageType::MsgAppendResponse;
            !(rival_vote || ack)
        });
        net.restart(leader);
        net.wait_for("the restarted node to lead", || {
            net.handle(leader).status().is_leader.then_some(())
        })
        .await;
        let y = {
            let handle = net.handle(leader);
            tokio::spawn(async move { handle.propose(upload_n(2)).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        net.heal();

        // X commits first (it is earlier in the log); Y's caller must get
        // Y's answer, not X's.
        let answer = y.await.expect("join").expect("commit").expect("applied");
        assert_eq!(answer, Response::Module(digest_n(2)));
        let both = net
            .handle(leader)
            .read(|r| {
                r.state.modules.contains_key(&digest_n(1))
                    && r.state.modules.contains_key(&digest_n(2))
            })
            .expect("read");
        assert!(both, "X and Y both committed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_restored_from_a_snapshot_holds_exactly_the_leaders_rows() {
        use crate::state::tests::{module, report, shard, spec};
        use crate::state::{Assignment, Command};
        use quarry_proto::{HuntId, WorkerId};
        // Compacting every 40 entries while hundreds commit in batches: the
        // snapshot a lagging follower gets is cut wherever the leader's
        // applied point happens to be.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut net = LocalNet::start(dir.path(), 3, LogCompaction::every(40));
        let leader = net.leader().await;
        let behind = (1..=3).find(|id| *id != leader).expect("a follower");
        let behind_applied = net.handle(behind).status().applied;
        net.filter(move |m| m.to != behind && m.from != behind);
        let handle = net.handle(leader);
        let propose = |command: Command| {
            let handle = handle.clone();
            async move {
                handle
                    .propose(command)
                    .await
                    .expect("commit")
                    .expect("applied")
            }
        };
        propose(Command::UploadModule {
            module: module("m", "1", 1),
        })
        .await;
        for (i, name) in ["a", "b"].iter().enumerate() {
            propose(Command::RegisterWorker {
                id: WorkerId::new(format!("w{i}")),
                address: String::new(),
                slots: 2,
                shards: vec![shard(name, &[("env", "demo")])],
                now_ms: 10,
            })
            .await;
        }
        let Response::Hunt { id: hunt, .. } = propose(Command::SubmitHunt {
            spec: spec(&[("env", "demo")]),
            now_ms: 20,
        })
        .await
        else {
            panic!("a hunt id");
        };
        let tasks = handle
            .read(|r| r.state.hunts[&hunt].tasks.clone())
            .expect("read");
        propose(Command::AssignTasks {
            assignments: tasks
                .iter()
                .enumerate()
                .map(|(i, task)| Assignment {
                    task: task.clone(),
                    worker: WorkerId::new(format!("w{i}")),
                })
                .collect(),
            now_ms: 25,
        })
        .await;
        // Uploads and two reports of 50 findings each, concurrently.
        let mut commands: Vec<Command> = (1..=400u32).map(upload_n).collect();
        for (i, task) in tasks.iter().enumerate() {
            commands.insert(150 + 100 * i, report(task, &format!("w{i}"), 1, 50));
        }
        let proposals: Vec<_> = commands
            .into_iter()
            .map(|command| tokio::spawn(propose(command)))
            .collect();
        for proposal in proposals {
            proposal.await.expect("join");
        }
        // The status is published just after the batch that answered the
        // last proposal, so it may lag that answer by a moment.
        net.wait_for(
            "the leader to compact past the follower, so it must install a snapshot",
            || (handle.status().first_index > behind_applied + 1).then_some(()),
        )
        .await;

        net.heal();
        // At least: the published status may lag the leader's last apply.
        let target = handle.status().applied;
        net.wait_for("every node to apply everything", || {
            (1..=3)
                .all(|id| net.handle(id).status().applied >= target)
                .then_some(())
        })
        .await;
        let view = |id: u64| {
            net.handle(id)
                .read(|r| (r.applied_index, r.state.clone()))
                .expect("read")
        };
        let (leader_view, behind_view) = (view(leader), view(behind));
        assert_eq!(leader_view.0, behind_view.0);
        assert!(
            leader_view.1 == behind_view.1,
            "the follower's state differs from the leader's"
        );
        let hunt_findings = |view: &(u64, crate::state::State)| {
            let hunt: &HuntId = &hunt;
            view.1.hunts[hunt].findings
        };
        assert_eq!(hunt_findings(&behind_view), 100);

        // Byte for byte: every replicated row (state, findings, membership)
        // at the same applied index.
        net.stop(leader);
        net.stop(behind);
        let rows = |id: u64| {
            let store = Store::open(&net.dir_of(id)).expect("open");
            let snapshot = store.build_snapshot().expect("snapshot");
            (snapshot.get_metadata().index, snapshot.data.to_vec())
        };
        let (leader_rows, behind_rows) = (rows(leader), rows(behind));
        assert_eq!(leader_rows.0, behind_rows.0, "same applied index");
        assert!(
            leader_rows.1 == behind_rows.1,
            "replicated rows differ ({} and {} bytes)",
            leader_rows.1.len(),
            behind_rows.1.len()
        );
    }
}
