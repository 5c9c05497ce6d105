//! Starting and stopping a coordinator: the raft node, the leader's duties
//! and the gRPC server (public API, worker protocol, raft transport, health
//! and reflection) on one listener.

use crate::clock::{SharedClock, SystemClock};
use crate::error::{CoordinatorError, Result};
use crate::node::{HandOff, LogCompaction, NodeHandle, NodeOptions, NodeThread};
use crate::scheduler;
use crate::service::{self, Dispatcher, Shared};
use crate::state::{Assignment, Command, Response};
use crate::storage::Store;
use quarry_proto::NodeId;
use quarry_proto::v1;
use quarry_security::access::AccessLayer;
use quarry_security::{Role, ServerTls, TlsFiles};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// Least time between two turns of the leader's duties.
const DUTY_INTERVAL: Duration = Duration::from_millis(150);

/// Finished hunts kept by default.
pub const DEFAULT_RETAIN_HUNTS: usize = 1_000;
/// How long finished hunts are kept by default (30 days).
pub const DEFAULT_RETAIN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Hunts deleted per retention proposal (one raft entry each turn).
const RETENTION_BATCH: usize = 100;
/// How often the leader checks the retention policy: it sorts every
/// finished hunt, which need not happen on every turn.
const RETENTION_EVERY: Duration = Duration::from_secs(5);

/// How a coordinator is configured.
#[derive(Clone)]
pub struct CoordinatorConfig {
    /// Raft node id (non-zero).
    pub node_id: NodeId,
    /// Where RocksDB lives.
    pub data_dir: PathBuf,
    /// Address to serve gRPC on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Voters of a new cluster (this node alone for a single-node group).
    pub voters: Vec<u64>,
    /// The other coordinators: raft node id -> `http://host:port`.
    pub peers: BTreeMap<u64, String>,
    /// The URL other coordinators and clients reach this one at; derived
    /// from the bound address when unset (which needs a specific IP).
    pub advertise_url: Option<String>,
    /// Join an existing group through this member's URL instead of founding
    /// one (used only while the data directory is empty).
    pub join: Option<String>,
    /// When the raft log is compacted.
    pub compaction: LogCompaction,
    /// Workers silent for longer than this get no new tasks.
    pub heartbeat_timeout: Duration,
    /// Interval workers are told to heartbeat at.
    pub heartbeat_interval: Duration,
    /// The clock leader duties stamp commands with.
    pub clock: SharedClock,
    /// When a running task counts as a straggler worth a backup run.
    pub speculation: scheduler::Speculation,
    /// Drops chosen outgoing raft messages (failure tests only).
    pub raft_fault: Option<crate::transport::RaftFault>,
    /// Finished hunts kept, newest first; older ones are deleted with their
    /// findings (0: no count limit).
    pub retain_hunts: usize,
    /// Finished hunts are deleted this long after they ended (zero: kept
    /// whatever their age).
    pub retain_for: Duration,
    /// Mutual TLS for the server and for connections to peers; without it
    /// the coordinator serves plaintext, on a loopback address only.
    pub tls: Option<TlsFiles>,
    /// What the audit trail keeps, when this node leads.
    pub audit_retention: crate::audit::AuditRetention,
}

impl CoordinatorConfig {
    /// Makes this node `node_id` of a group with `peers` (the other nodes);
    /// a new cluster's voters are this node and every peer.
    pub fn with_peers(mut self, node_id: u64, peers: BTreeMap<u64, String>) -> Self {
        self.node_id = NodeId(node_id);
        self.voters = peers
            .keys()
            .copied()
            .chain([node_id])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.peers = peers;
        self
    }

    /// A single-node coordinator with default timings.
    pub fn single_node(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            node_id: NodeId(1),
            data_dir,
            listen,
            voters: vec![1],
            peers: BTreeMap::new(),
            advertise_url: None,
            join: None,
            compaction: LogCompaction::default(),
            heartbeat_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(2),
            clock: Arc::new(SystemClock),
            speculation: scheduler::Speculation::default(),
            raft_fault: None,
            retain_hunts: DEFAULT_RETAIN_HUNTS,
            retain_for: DEFAULT_RETAIN_FOR,
            tls: None,
            audit_retention: crate::audit::AuditRetention::default(),
        }
    }
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    node: Option<NodeThread>,
    handle: NodeHandle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The node's observable gauges (see crate::metrics).
    _gauges: Vec<quarry_telemetry::metrics::ObservableGauge<u64>>,
}

impl Coordinator {
    /// Opens the data directory, starts raft and serves gRPC.
    pub async fn start(config: CoordinatorConfig) -> Result<Self> {
        if config.node_id.0 == 0 {
            return Err(CoordinatorError::InvalidArgument(
                "node id must be non-zero".to_owned(),
            ));
        }
        let tls = match &config.tls {
            Some(files) => Some(server_tls(files, config.node_id)?),
            None => {
                quarry_security::listen::check_plaintext(config.listen, "coordinator API")?;
                None
            }
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|e| CoordinatorError::Serve {
                    addr: config.listen.to_string(),
                    detail: format!("{e} (is another coordinator using this address?)"),
                })?;
        let addr = listener.local_addr().map_err(|e| CoordinatorError::Serve {
            addr: config.listen.to_string(),
            detail: e.to_string(),
        })?;
        let data_dir = config.data_dir.clone();
        let node_id = config.node_id;
        let url = match &config.advertise_url {
            Some(url) => {
                crate::node::validate_url(url)?;
                Some(url.clone())
            }
            None if !addr.ip().is_unspecified() => Some(format!(
                "{}://{addr}",
                if tls.is_some() { "https" } else { "http" }
            )),
            None => None,
        };
        if config.join.is_some() && url.is_none() {
            return Err(CoordinatorError::InvalidArgument(format!(
                "listening on {addr}, this coordinator cannot tell the group its URL; pass --advertise-url https://HOST:{}",
                addr.port()
            )));
        }
        let mut peers = config.peers.clone();
        match &url {
            Some(url) => {
                peers.insert(node_id.0, url.clone());
            }
            None => tracing::warn!(
                %addr,
                "this coordinator does not know its own URL, so coordinators added later cannot reach it; pass --advertise-url"
            ),
        }
        let compaction = config.compaction;
        let join = config.join.clone();
        let voters = if join.is_some() {
            Vec::new()
        } else {
            config.voters.clone()
        };
        let transport = Box::new(
            crate::transport::GrpcTransport::new(
                &tokio::runtime::Handle::current(),
                &crate::snapshot_file::snapshot_dir(&data_dir),
            )
            .with_tls(config.tls.clone())
            .with_fault(config.raft_fault.clone()),
        );
        let (node, fresh) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&data_dir)?;
            let fresh = store.is_fresh()?;
            let options = NodeOptions {
                id: node_id,
                voters,
                peers,
                compaction,
            };
            Ok::<_, CoordinatorError>((NodeThread::start(store, options, transport)?, fresh))
        })
        .await
        .map_err(|e| CoordinatorError::Io {
            context: "raft start-up task".into(),
            source: std::io::Error::other(e),
        })??;
        let handle = node.handle();
        let shared = Arc::new(Shared {
            node: handle.clone(),
            dispatcher: Dispatcher::default(),
            clock: config.clock.clone(),
            heartbeat_timeout: config.heartbeat_timeout,
            heartbeat_interval: config.heartbeat_interval,
            leases: crate::lease::Leases::new(config.clock.clone(), config.heartbeat_timeout),
            audit: crate::audit_service::buffer_for(node_id.0, config.clock.clone()),
            audit_retention: config.audit_retention,
            field_counts: Default::default(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(leader_duties(
                shared.clone(),
                Duties {
                    speculation: config.speculation,
                    retain_hunts: config.retain_hunts,
                    retain_for_ms: i64::try_from(config.retain_for.as_millis()).unwrap_or(i64::MAX),
                },
                shutdown_rx.clone(),
            )),
            tokio::spawn(crate::audit_service::hand_over(
                shared.clone(),
                config.tls.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(serve(shared.clone(), listener, tls.clone(), shutdown_rx)),
        ];
        if let Some(tls) = &tls {
            tasks.push(tls.spawn_reloader());
        }
        tracing::info!(%addr, node = node_id.0, "coordinator serving");
        // A node with an empty data directory asks the group to add it; the
        // leader then sends it a snapshot. A restarted member is already in.
        if let (Some(join_url), Some(url), true) = (&join, &url, fresh) {
            let members =
                crate::membership::join(node_id, url, join_url, config.tls.as_ref()).await;
            match members {
                Ok(members) => handle.learn_peers(members)?,
                Err(e) => {
                    let _ = shutdown.send(true);
                    return Err(e);
                }
            }
        }
        Ok(Self {
            addr,
            shared,
            node: Some(node),
            _gauges: crate::metrics::observe(&handle),
            handle,
            shutdown,
            tasks,
        })
    }

    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The raft node, for status and tests.
    pub fn node(&self) -> &NodeHandle {
        &self.handle
    }

    /// Waits until this node leads (a single-node group elects itself at once).
    pub async fn wait_for_leadership(&self, timeout: Duration) -> Result<()> {
        let mut status = self.handle.subscribe();
        let wait = async {
            loop {
                if status.borrow_and_update().is_leader {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| CoordinatorError::ProposalTimeout(timeout))?;
        if self.handle.status().is_leader {
            Ok(())
        } else {
            Err(CoordinatorError::NodeStopped)
        }
    }

    /// Stops serving, stops raft and releases the data directory. A leader
    /// of a group with other voters first hands leadership to the most
    /// caught-up one (see [`NodeHandle::hand_off_leadership`]), so the
    /// group does not sit an election timeout without a leader.
    pub async fn shutdown(mut self) {
        self.hand_off_leadership().await;
        let _ = self.shutdown.send(true);
        // Task streams to workers never end by themselves; close them so the
        // graceful shutdown can finish, and bound it for other open streams.
        self.shared.dispatcher.close_all();
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        if let Some(node) = self.node.take() {
            let _ = tokio::task::spawn_blocking(move || node.stop()).await;
        }
        tracing::info!(addr = %self.addr, "coordinator stopped");
    }
}

impl Coordinator {
    /// Moves leadership away before stopping, while this node still serves
    /// raft (the transfer needs its messages), bounded by
    /// [`LEADER_HAND_OFF_WAIT`].
    async fn hand_off_leadership(&self) {
        let span = tracing::info_span!("leader hand-off", node = self.handle.status().id);
        let outcome = self
            .handle
            .hand_off_leadership(LEADER_HAND_OFF_WAIT)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match outcome {
            HandOff::NotLeader | HandOff::Alone => {}
            HandOff::Moved { leader, term } => {
                // Workers streaming from this node follow the new leader now
                // rather than when the connection drops.
                let closed = self
                    .shared
                    .dispatcher
                    .close_all_with(&self.shared.not_leader_status());
                tracing::info!(
                    leader,
                    term,
                    streams = closed,
                    "leadership handed off before stopping"
                );
            }
            HandOff::TimedOut { target } => tracing::warn!(
                target,
                wait = ?LEADER_HAND_OFF_WAIT,
                "no other coordinator took over the leadership in time; the group elects a leader after this one stops"
            ),
            HandOff::Failed(error) => tracing::warn!(
                %error,
                "cannot hand off the leadership; the group elects a leader after this one stops"
            ),
        }
    }
}

/// How long a stopping leader waits for another node to take over: two
/// election timeouts. raft-rs abandons a transfer not done within one; the
/// second leaves time for the new leader's first message to arrive here.
pub const LEADER_HAND_OFF_WAIT: Duration =
    Duration::from_millis(2 * crate::node::ELECTION_TIMEOUT.as_millis() as u64);

/// Loads a coordinator's TLS files, checking that its certificate names
/// this coordinator, so a misplaced file fails at start, not at the first
/// peer that refuses it.
fn server_tls(files: &TlsFiles, node: NodeId) -> Result<Arc<ServerTls>> {
    let principal = files.principal()?;
    if principal.role != Role::Coordinator || principal.name != node.0.to_string() {
        return Err(CoordinatorError::InvalidArgument(format!(
            "{} names {principal}, but this is coordinator {}: issue it with `quarry certs issue --role coordinator --name {}`",
            files.cert.display(),
            node.0,
            node.0
        )));
    }
    Ok(ServerTls::load(files.clone())?)
}

async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<v1::hunt_service_server::HuntServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::module_service_server::ModuleServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::cluster_service_server::ClusterServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::worker_service_server::WorkerServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::triage_service_server::TriageServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::token_service_server::TokenServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::audit_service_server::AuditServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::intel_service_server::IntelServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::rule_pack_service_server::RulePackServiceServer<service::Api>>()
        .await;
    health
        .set_serving::<v1::schedule_service_server::ScheduleServiceServer<service::Api>>()
        .await;
    let reflection = match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(reflection) => reflection,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the reflection service");
            return;
        }
    };
    let api = service::Api::new(shared.clone());
    let max = quarry_proto::MAX_MESSAGE_BYTES;
    let secure = tls.is_some();
    let audit: Arc<dyn quarry_security::audit::AuditSink> = shared.audit.clone();
    let incoming = quarry_security::listen::incoming(listener, tls, Some(audit.clone()));
    let result = tonic::transport::Server::builder()
        .trace_fn(|request| {
            let span = tracing::info_span!("grpc", path = %request.uri().path());
            // A traced caller's context: this request's spans join its trace.
            quarry_telemetry::set_parent_from_headers(&span, request.headers());
            span
        })
        .layer(
            AccessLayer::new(secure)
                .with_tokens(Arc::new(crate::token_service::Tokens::new(
                    shared.node.clone(),
                    shared.clock.clone(),
                )))
                .with_audit(audit),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            v1::hunt_service_server::HuntServiceServer::new(api.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            v1::module_service_server::ModuleServiceServer::new(api.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(v1::cluster_service_server::ClusterServiceServer::new(
            api.clone(),
        ))
        .add_service(v1::triage_service_server::TriageServiceServer::new(
            api.clone(),
        ))
        .add_service(v1::token_service_server::TokenServiceServer::new(
            api.clone(),
        ))
        .add_service(v1::audit_service_server::AuditServiceServer::new(
            api.clone(),
        ))
        .add_service(
            v1::intel_service_server::IntelServiceServer::new(api.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            v1::rule_pack_service_server::RulePackServiceServer::new(api.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            v1::schedule_service_server::ScheduleServiceServer::new(api.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            v1::worker_service_server::WorkerServiceServer::new(api.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            // One raft entry can hold a whole module upload.
            v1::raft_service_server::RaftServiceServer::new(crate::raft_service::RaftApi::new(
                shared.node.clone(),
            ))
            .max_decoding_message_size(crate::transport::MAX_RAFT_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "coordinator gRPC server failed");
    }
}

/// Workers whose lease expired while holding tasks lose them: the tasks go
/// back to pending (visibly, with the reason) for another holder of the
/// shard or the worker's return.
async fn release_lost_workers(shared: &Shared, leader_since: i64) {
    let lost: Vec<_> = shared
        .node
        .read(|r| {
            r.state
                .assignment_counts()
                .into_keys()
                .filter(|w| shared.lease_expired(w, leader_since))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for worker in lost {
        let reason = format!(
            "worker {worker} stopped heartbeating (lease of {:?} expired); waiting for another holder of the shard or for the worker to return",
            shared.heartbeat_timeout
        );
        tracing::warn!(%worker, "worker lease expired; releasing its tasks");
        if let Err(e) = shared
            .node
            .propose(Command::ReleaseWorker { worker, reason })
            .await
        {
            tracing::warn!(error = %e, "cannot release a lost worker's tasks; will retry");
        }
    }
}

/// Records the leader's hunt time in the log: the evidence the next leader
/// anchors its own on (see [`crate::lease::HuntClock`]).
async fn record_hunt_time(shared: &Shared, now_ms: i64) {
    if let Err(e) = shared.node.propose(Command::Tick { now_ms }).await {
        tracing::debug!(error = %e, "cannot record the hunt time; will retry");
    }
}

/// Hunts past their deadline end: their unfinished shards are given up
/// (named in the hunt's reason) and runs still going are stopped.
async fn expire_hunts(shared: &Shared, now_ms: i64) {
    let due = shared
        .node
        .read(|r| !r.state.expired_hunts(now_ms).is_empty())
        .unwrap_or(false);
    if !due {
        return;
    }
    match shared.node.propose(Command::ExpireHunts { now_ms }).await {
        Ok(Ok(Response::Stop(stop))) => {
            tracing::info!(stopped = stop.len(), "hunts reached their deadline");
            service::send_stops(shared, stop);
        }
        Ok(_) => tracing::info!("hunts reached their deadline"),
        Err(e) => tracing::warn!(error = %e, "cannot expire hunts past their deadline; will retry"),
    }
}

/// Starts the runs of schedules that are due. Applying the proposal starts
/// a run only if the due time is still the schedule's next one, so a
/// proposal repeated (by this leader or the next) fires nothing twice.
async fn fire_schedules(shared: &Shared, now_ms: i64) {
    let due = shared
        .node
        .read(|r| r.state.schedules.due(now_ms))
        .unwrap_or_default();
    for (id, due_ms) in due {
        let span = tracing::info_span!("schedule_run", schedule = %id, due_ms);
        let proposed = shared
            .node
            .propose(Command::FireSchedule {
                id: id.clone(),
                due_ms,
                now_ms,
            })
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match proposed {
            Ok(Ok(Response::Hunt { id: hunt, tasks })) => {
                tracing::info!(%hunt, tasks, "scheduled run started");
            }
            Ok(Ok(_)) => tracing::info!("scheduled due time recorded without a run"),
            Ok(Err(rejection)) => tracing::warn!(%rejection, "scheduled run not started"),
            Err(e) => tracing::debug!(error = %e, "cannot start a scheduled run; will retry"),
        }
    }
}

/// Commits placements (new runs or speculative backups), then sends what the
/// state machine accepted, with the committed attempt.
async fn commit_and_send(shared: &Shared, command: Command, planned: Vec<Assignment>) {
    match shared.node.propose(command).await {
        Ok(Ok(Response::Done)) => {}
        Ok(other) => {
            tracing::warn!(?other, "assignment proposal was not applied");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot commit task assignments; will retry");
            return;
        }
    }
    let sends = shared.node.read(|r| {
        planned
            .into_iter()
            .filter_map(|a| {
                let attempt = r.state.tasks.get(&a.task)?.attempt_on(&a.worker)?;
                Some((a.worker, a.task, attempt))
            })
            .collect::<Vec<_>>()
    });
    if let Ok(sends) = sends {
        for (worker, task, attempt) in sends {
            shared.dispatcher.send_run(&worker, task, attempt);
        }
    }
}

/// Scheduling runs only on the leader and only through proposals: plan from
/// the replicated state, commit the assignments, then send them. Deadlines,
/// retry backoff and stragglers are judged against the injected clock.
/// What the leader's duties are configured with.
struct Duties {
    speculation: scheduler::Speculation,
    retain_hunts: usize,
    retain_for_ms: i64,
}

/// Deletes the finished hunts the retention policy lets go, a batch at a
/// time, oldest first.
async fn apply_retention(shared: &Shared, duties: &Duties, now_ms: i64) {
    let gone = shared
        .node
        .read(|r| {
            r.state
                .hunts_past_retention(duties.retain_hunts, duties.retain_for_ms, now_ms)
        })
        .unwrap_or_default();
    if gone.is_empty() {
        return;
    }
    let hunts: Vec<_> = gone.into_iter().take(RETENTION_BATCH).collect();
    let count = hunts.len();
    match shared.node.propose(Command::DeleteHunts { hunts }).await {
        Ok(Ok(_)) => tracing::info!(
            hunts = count,
            "deleted finished hunts past the retention policy"
        ),
        Ok(Err(rejection)) => tracing::warn!(%rejection, "retention could not delete hunts"),
        Err(e) => tracing::debug!(error = %e, "cannot apply retention; will retry"),
    }
}

async fn leader_duties(shared: Arc<Shared>, duties: Duties, mut shutdown: watch::Receiver<bool>) {
    let speculation = duties.speculation;
    let mut changes = shared.node.subscribe();
    let mut leadership = crate::lease::Leadership::default();
    let mut hunt_clock = crate::lease::HuntClock::default();
    let mut retention_due = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
        // A turn scans the running hunts' tasks; under a stream of commits
        // (every report is one) turns are spaced out rather than run per
        // commit. Changes meanwhile are remembered by the watch.
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(DUTY_INTERVAL) => {}
        }
        let status = shared.node.status();
        let Some(since) =
            leadership.observe(status.is_leader, status.term, shared.clock.monotonic_ms())
        else {
            // Workers still streaming from this node would wait here for
            // tasks that never come while the new leader, which hears
            // nothing from them, gives their tasks away: send them to it.
            if shared.dispatcher.has_streams() {
                let closed = shared
                    .dispatcher
                    .close_all_with(&shared.not_leader_status());
                tracing::info!(
                    streams = closed,
                    leader = shared.node.status().leader,
                    "no longer the leader; closed the workers' task streams"
                );
            }
            continue;
        };
        release_lost_workers(&shared, since).await;
        let now_ms = shared.clock.now_ms();
        let (running, recorded) = shared
            .node
            .read(|r| (r.state.has_running_hunts(), r.state.clock_ms))
            .unwrap_or((false, 0));
        let hunt_now = hunt_clock.now(
            status.term,
            now_ms,
            shared.clock.monotonic_ms(),
            running.then_some(recorded),
        );
        if running && hunt_now >= recorded + crate::lease::TICK_MS {
            record_hunt_time(&shared, hunt_now).await;
        }
        expire_hunts(&shared, hunt_now).await;
        fire_schedules(&shared, now_ms).await;
        if tokio::time::Instant::now() >= retention_due {
            retention_due = tokio::time::Instant::now() + RETENTION_EVERY;
            apply_retention(&shared, &duties, hunt_now).await;
        }
        // Draining workers finish what they run but get nothing new.
        let live = shared.schedulable_workers();
        let plan = match shared
            .node
            .read(|r| scheduler::plan(&r.state, &live, now_ms))
        {
            Ok(plan) => plan,
            Err(_) => return,
        };
        if !plan.is_empty() {
            let span =
                tracing::info_span!("schedule", tasks = plan.len(), hunt = tracing::field::Empty);
            trace_schedule(&shared, &span, &plan);
            let planned = plan.clone();
            commit_and_send(
                &shared,
                Command::AssignTasks {
                    assignments: plan,
                    now_ms,
                },
                planned,
            )
            .instrument(span)
            .await;
        }
        let backups = shared
            .node
            .read(|r| scheduler::speculate(&r.state, &live, now_ms, &speculation))
            .unwrap_or_default();
        if !backups.is_empty() {
            let span = tracing::info_span!("speculate", tasks = backups.len());
            tracing::info!(parent: &span, "straggling tasks get a second run on another replica");
            let planned = backups.clone();
            commit_and_send(
                &shared,
                Command::Speculate {
                    assignments: backups,
                    now_ms,
                },
                planned,
            )
            .instrument(span)
            .await;
        }
    }
}

/// Puts the leader's placement of tasks into their hunts' traces: the child
/// of the hunt's submission when all the tasks are one hunt's (the usual
/// case), else linked to each traced hunt.
fn trace_schedule(shared: &Shared, span: &tracing::Span, plan: &[crate::state::Assignment]) {
    let traces: std::collections::BTreeMap<quarry_proto::HuntId, String> = shared
        .node
        .read(|r| {
            plan.iter()
                .filter_map(|a| r.state.tasks.get(&a.task))
                .filter_map(|task| {
                    let hunt = r.state.hunts.get(&task.hunt)?;
                    Some((
                        hunt.id.clone(),
                        hunt.traceparent.clone().unwrap_or_default(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    match traces.iter().next() {
        Some((hunt, traceparent)) if traces.len() == 1 => {
            span.record("hunt", hunt.as_str());
            quarry_telemetry::set_parent_from_traceparent(span, traceparent);
        }
        _ => {
            for traceparent in traces.values() {
                quarry_telemetry::link_traceparent(span, traceparent);
            }
        }
    }
}
