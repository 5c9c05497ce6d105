//! The gRPC services a coordinator serves. Handlers validate, read the
//! applied state or propose a command, and map errors to statuses through
//! [`CoordinatorError`]; they hold no scheduling logic.

use crate::clock::SharedClock;
use crate::convert;
use crate::error::CoordinatorError;
use crate::lease::Leases;
use crate::module_check;
use crate::node::NodeHandle;
use crate::state::{
    Command, HuntRecord, ModuleRecord, Rejection, Response, State, StopRun, TaskRecord, TaskReport,
};
use quarry_proto::v1::cluster_service_server::ClusterService;
use quarry_proto::v1::module_service_server::ModuleService;
use quarry_proto::v1::worker_service_server::WorkerService;
use quarry_proto::v1::{self, hunt_service_server::HuntService};
use quarry_proto::{HuntId, ModuleDigest, RequestId, ShardId, TaskId, WorkerId};
use quarry_security::audit::{AuditTarget, set_target as access_set_target};
use quarry_security::{Role, access};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};
use tracing::Instrument as _;

/// Largest module accepted.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// How long a write whose proposer lost the leadership waits for a new
/// leader to name in its answer (a few election timeouts).
const LEADER_WAIT: Duration = Duration::from_secs(3);

type TaskSender = mpsc::Sender<Queued>;

/// What a worker's task stream queues. A run is queued by reference and
/// built into a full assignment (parameters, intel, limits) only when the
/// worker reads it: a 100,000-task hunt on workers with many slots queues
/// 100,000 runs at once, and each would otherwise hold its own copy of the
/// hunt's parameters until read.
enum Queued {
    /// Attempt `attempt` of `task`; dropped if it is no longer the worker's
    /// by the time it is read (a cancel, a reassignment).
    Run { task: TaskId, attempt: u32 },
    /// Sent as it is.
    Command(Box<v1::task_command::Command>),
    /// Ends the stream with this status.
    End(Status),
}

/// Commands queued on a worker's task stream beyond its slots (or the
/// assignments it gets when it connects, if more); a worker that lets this
/// many more pile up is not reading.
const STREAM_QUEUE: usize = 256;

/// Open task streams of connected workers (leader-local, not replicated).
#[derive(Default)]
pub struct Dispatcher {
    streams: Mutex<HashMap<WorkerId, (u64, TaskSender)>>,
    next_connection: std::sync::atomic::AtomicU64,
}

impl Dispatcher {
    fn connect(&self, worker: WorkerId, sender: TaskSender) -> u64 {
        let id = self
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(worker, (id, sender));
        }
        id
    }

    fn sender(&self, worker: &WorkerId) -> Option<(u64, TaskSender)> {
        self.streams.lock().ok()?.get(worker).cloned()
    }

    fn disconnect(&self, worker: &WorkerId, connection: u64) {
        if let Ok(mut streams) = self.streams.lock()
            && streams.get(worker).is_some_and(|(id, _)| *id == connection)
        {
            streams.remove(worker);
        }
    }

    /// Drops every task stream (the coordinator is stopping).
    pub fn close_all(&self) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.clear();
        }
    }

    /// Ends every task stream with `status` (this node no longer leads: the
    /// status names the leader, and workers reconnect there).
    pub fn close_all_with(&self, status: &Status) -> usize {
        let Ok(mut streams) = self.streams.lock() else {
            return 0;
        };
        let closed = streams.len();
        for (_, (_, sender)) in streams.drain() {
            // A full queue cannot take the status; the stream still ends.
            let _ = sender.try_send(Queued::End(status.clone()));
        }
        closed
    }

    /// Whether any task stream is open.
    pub fn has_streams(&self) -> bool {
        self.streams.lock().is_ok_and(|s| !s.is_empty())
    }

    fn is_connected(&self, worker: &WorkerId) -> bool {
        self.streams
            .lock()
            .is_ok_and(|s| s.get(worker).is_some_and(|(_, tx)| !tx.is_closed()))
    }

    /// Sends attempt `attempt` of `task`, committed to `worker`, to it; a
    /// closed stream just drops it (the worker gets it again when it
    /// reconnects).
    pub fn send_run(&self, worker: &WorkerId, task: TaskId, attempt: u32) {
        self.send(worker, Queued::Run { task, attempt });
    }

    /// Queues a command on the worker's stream without ever waiting: the
    /// leader loop, reports and cancels call this, and one worker that stops
    /// reading (SIGSTOP, a stuck network) must not stall them for the whole
    /// cluster. A worker whose queue is full loses its stream; it is not
    /// live until it reconnects, when its assignments are sent again, and
    /// its lease expires meanwhile if it stays silent.
    fn send(&self, worker: &WorkerId, command: Queued) {
        let Some((connection, sender)) = self.sender(worker) else {
            tracing::debug!(%worker, "worker has no task stream; it gets its tasks when it connects");
            return;
        };
        match sender.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    %worker,
                    queued = STREAM_QUEUE,
                    "worker is not reading its task stream; closing it (its assignments are sent again when it reconnects)"
                );
                self.disconnect(worker, connection);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.disconnect(worker, connection),
        }
    }
}

/// What every handler shares.
pub struct Shared {
    /// The raft node.
    pub node: NodeHandle,
    /// Task streams.
    pub dispatcher: Dispatcher,
    /// Leader time.
    pub clock: SharedClock,
    /// Silence after which a worker counts as dead.
    pub heartbeat_timeout: Duration,
    /// What workers are told.
    pub heartbeat_interval: Duration,
    /// Last heartbeat per worker (leader-local soft state, monotonic).
    pub leases: Leases,
    /// Audit records this node saw, until the leader appended them.
    pub audit: Arc<quarry_security::audit::AuditBuffer>,
    /// What the audit trail keeps (applied by this node's appends as leader).
    pub audit_retention: crate::audit::AuditRetention,
    /// Events per field of each shard, as its workers last registered it
    /// (leader-local soft state, like `leases`: not worth a raft entry).
    pub field_counts: std::sync::Mutex<HashMap<ShardId, HashMap<String, u64>>>,
}

impl Shared {
    fn heartbeat(&self, worker: &WorkerId) {
        self.leases.beat(worker);
    }

    fn last_heartbeat(&self, worker: &WorkerId) -> Option<i64> {
        self.leases.last_wall_ms(worker)
    }

    fn is_live(&self, worker: &WorkerId) -> bool {
        self.leases.fresh(worker) && self.dispatcher.is_connected(worker)
    }

    /// Whether `worker`'s lease has expired (see [`Leases::expired`]).
    pub fn lease_expired(&self, worker: &WorkerId, leader_since: i64) -> bool {
        self.leases.expired(worker, leader_since)
    }

    /// Workers that heartbeat recently and hold an open task stream.
    pub fn live_workers(&self) -> BTreeSet<WorkerId> {
        self.node
            .read(|r| {
                r.state
                    .workers
                    .keys()
                    .filter(|w| self.is_live(w))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Live workers that take new tasks: not the ones draining (shutting
    /// down gracefully), which still finish what they run.
    pub fn schedulable_workers(&self) -> BTreeSet<WorkerId> {
        let mut live = self.live_workers();
        live.retain(|w| !self.leases.is_draining(w));
        live
    }

    async fn propose(&self, command: Command) -> Result<Response, Status> {
        match self.node.propose(command).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(rejection)) => Err(rejection_status(rejection)),
            Err(error @ CoordinatorError::NotLeader { leader, .. }) => {
                Err(self.not_leader(error, leader))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Proposes a client write. With a request id it is applied at most
    /// once (a retry gets the first outcome), so an unknown outcome
    /// (leadership moved while it was in flight) is answered like "not the
    /// leader" and the client retries against the new leader. Without one,
    /// an unknown outcome is reported as such (ABORTED), never retried.
    pub(crate) async fn propose_write(
        &self,
        request_id: &str,
        command: Command,
    ) -> Result<Response, Status> {
        if request_id.is_empty() {
            return self.propose(command).await;
        }
        let request = RequestId::new(request_id);
        request
            .validate()
            .map_err(|m| Status::from(CoordinatorError::InvalidArgument(m)))?;
        let once = Command::Once {
            request,
            command: Box::new(command),
            now_ms: self.clock.now_ms(),
        };
        match self.node.propose(once).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(rejection)) => Err(rejection_status(rejection)),
            Err(
                CoordinatorError::NotLeader { node, leader }
                | CoordinatorError::OutcomeUnknown { node, leader },
            ) => {
                // Mid-election nobody leads yet; the retry needs somewhere
                // to go, so give the group an election's time to pick one.
                let leader = if leader == 0 {
                    self.wait_for_leader(LEADER_WAIT).await
                } else {
                    leader
                };
                Err(self.not_leader(CoordinatorError::NotLeader { node, leader }, leader))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The leader this node learns of within `timeout` (0: none yet).
    async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let mut status = self.node.subscribe();
        let found = tokio::time::timeout(timeout, status.wait_for(|s| s.leader != 0)).await;
        match found {
            Ok(Ok(status)) => status.leader,
            _ => 0,
        }
    }

    /// Refuses with "not the leader" (naming the leader) unless this node leads.
    pub fn require_leader(&self) -> Result<(), Status> {
        let raft = self.node.status();
        if raft.is_leader {
            return Ok(());
        }
        Err(self.not_leader_status())
    }

    /// "Not the leader", naming the leader this node knows of.
    pub fn not_leader_status(&self) -> Status {
        let raft = self.node.status();
        let error = CoordinatorError::NotLeader {
            node: raft.id,
            leader: raft.leader,
        };
        self.not_leader(error, raft.leader)
    }

    /// A "not the leader" answer naming the leader's URL (when known) in the
    /// `quarry-leader` metadata, which quarry-client and workers follow.
    fn not_leader(&self, error: CoordinatorError, leader: u64) -> Status {
        let mut status = Status::from(error);
        if let Some(url) = self.node.peer_url(leader)
            && let Ok(value) = url.parse()
        {
            status
                .metadata_mut()
                .insert(quarry_proto::LEADER_METADATA_KEY, value);
        }
        status
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, Status> {
        Ok(self.node.read(|r| f(&r.state))?)
    }
}

/// Most technique ids an upload may declare.
const MAX_DECLARED_TECHNIQUES: usize = 200;

/// The ATT&CK technique ids an upload declares, checked (`T1110`,
/// `T1003.001`), upper-cased, sorted and deduplicated.
fn declared_techniques(ids: &[String]) -> Result<Vec<String>, Status> {
    if ids.len() > MAX_DECLARED_TECHNIQUES {
        return Err(Status::invalid_argument(format!(
            "an upload declares at most {MAX_DECLARED_TECHNIQUES} ATT&CK techniques, not {}",
            ids.len()
        )));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id.trim().to_ascii_uppercase();
        let (main, sub) = id.split_once('.').unwrap_or((&id, ""));
        let ok = main.len() == 5
            && main.starts_with('T')
            && main[1..].bytes().all(|b| b.is_ascii_digit())
            && (sub.is_empty() || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
            && !(id.contains('.') && sub.is_empty());
        if !ok {
            return Err(Status::invalid_argument(format!(
                "`{}` is not an ATT&CK technique id (`T1110`, `T1003.001`)",
                id.escape_debug()
            )));
        }
        out.push(id);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub(crate) fn rejection_status(rejection: Rejection) -> Status {
    let error = match rejection {
        Rejection::NotFound(m) => CoordinatorError::NotFound(m),
        Rejection::Invalid(m) => CoordinatorError::InvalidArgument(m),
        Rejection::Conflict(m) => CoordinatorError::FailedPrecondition(m),
        Rejection::Denied(m) => CoordinatorError::PermissionDenied(m),
    };
    error.into()
}

/// Tells workers to stop runs (a cancelled or expired hunt, the loser of a
/// speculative race). Best effort: a run that is not stopped reports a
/// result that is stale and ignored.
pub fn send_stops(shared: &Shared, stops: Vec<StopRun>) {
    for StopRun {
        worker,
        task,
        attempt,
    } in stops
    {
        let cancel = v1::TaskCancel {
            task_id: task.into_string(),
            attempt,
        };
        shared.dispatcher.send(
            &worker,
            Queued::Command(Box::new(v1::task_command::Command::Cancel(cancel))),
        );
    }
}

/// The committed assignment of `attempt` of `task`, as sent to its worker.
pub fn assignment(state: &State, task: &TaskRecord, attempt: u32) -> Option<v1::TaskAssignment> {
    let hunt = state.hunts.get(&task.hunt)?;
    Some(v1::TaskAssignment {
        task_id: task.id.to_string(),
        hunt_id: hunt.id.to_string(),
        attempt,
        shard: task.shard.to_string(),
        module_digest: hunt.module.to_string(),
        params: hunt
            .spec
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        time_range: Some(v1::TimeRange {
            start_ms: hunt.spec.scope.start_ms,
            end_ms: hunt.spec.scope.end_ms,
        }),
        limits: Some(convert::limits(&hunt.spec.limits)),
        signature: state
            .trust
            .for_workers(&hunt.module)
            .map(|signed| v1::ModuleSignatureCheck {
                key: signed.key,
                public_key: signed.public_key,
                signature: signed.signature,
            }),
        require_signed: state.trust.require_signed,
        from_offset: task.from_offset,
        schedule_id: hunt
            .schedule
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        traceparent: hunt.traceparent.clone().unwrap_or_default(),
    })
}

/// The service implementation; one value serves every service.
#[derive(Clone)]
pub struct Api {
    pub(crate) shared: Arc<Shared>,
}

impl Api {
    /// Wraps the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Binds the hunt to the latest version of each stored intel set it
    /// names (`intel-ref.<set>` parameters); checks that `intel-ref`
    /// parameters given directly name stored versions.
    pub(crate) fn bind_intel(
        &self,
        spec: &mut crate::state::HuntSpec,
        sets: &[String],
    ) -> Result<(), Status> {
        use crate::intel_store::REF_PREFIX;
        self.shared.read(|s| {
            for name in sets {
                let latest = s.intel.latest(name).ok_or_else(|| {
                    Status::not_found(format!(
                        "no intel set is named {name}; `quarry intel list` shows the sets, `quarry intel import` adds one"
                    ))
                })?;
                if spec.params.contains_key(&format!("intel.{name}")) {
                    return Err(Status::invalid_argument(format!(
                        "intel set {name} is given twice: as a stored set and as --intel {name}=FILE"
                    )));
                }
                spec.params
                    .insert(format!("{REF_PREFIX}{name}"), latest.version.to_string());
            }
            for (name, version) in crate::intel_store::refs(&spec.params) {
                if s.intel.get(&name, version).is_none() {
                    return Err(Status::not_found(format!(
                        "intel set {name} version {version} is not stored"
                    )));
                }
            }
            Ok(())
        })?
    }

    fn hunt_exists(&self, id: &HuntId) -> Result<(), Status> {
        if self.shared.read(|s| s.hunts.contains_key(id))? {
            Ok(())
        } else {
            Err(hunt_not_found(id))
        }
    }

    fn hunt(&self, id: &str, page: &convert::TaskPage) -> Result<v1::Hunt, Status> {
        let id = HuntId::new(id);
        self.shared
            .read(|s| s.hunts.get(&id).map(|h| convert::hunt(s, h, page)))?
            .ok_or_else(|| hunt_not_found(&id))
    }
}

fn hunt_not_found(id: &HuntId) -> Status {
    CoordinatorError::NotFound(format!(
        "hunt {id} does not exist; `quarry hunt list` shows the hunts"
    ))
    .into()
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl HuntService for Api {
    #[tracing::instrument(skip_all, fields(hunt))]
    async fn submit_hunt(
        &self,
        request: Request<v1::SubmitHuntRequest>,
    ) -> Result<tonic::Response<v1::SubmitHuntResponse>, Status> {
        let target = AuditTarget::of(&request);
        let request = request.into_inner();
        let dry_run = request.dry_run;
        let request_id = request.request_id.clone();
        let intel_sets = request.intel_sets.clone();
        let rule_packs = request.rule_packs.clone();
        let mut spec = convert::hunt_spec(request)?;
        self.bind_intel(&mut spec, &intel_sets)?;
        self.bind_rule_packs(&mut spec, &rule_packs, false)?;
        if dry_run {
            target.set("dry run (nothing stored)");
            let preview = self
                .shared
                .read(|s| s.preview(&spec))?
                .map_err(rejection_status)?;
            let shards = self.shared.read(|s| {
                preview
                    .shards
                    .iter()
                    .filter_map(|(name, _)| s.shards.get(name))
                    .map(convert::shard_info)
                    .collect()
            })?;
            let module = self.shared.read(|s| {
                s.modules
                    .get(&preview.module)
                    .map(|m| convert::module_info(s, m))
            })?;
            return Ok(tonic::Response::new(v1::SubmitHuntResponse {
                hunt_id: String::new(),
                task_count: preview.shards.len() as u32,
                shards,
                events_in_scope: preview.events,
                estimated_ms: preview.estimated_ms.unwrap_or(0),
                bytes_in_scope: preview.bytes,
                module,
            }));
        }
        // Refuse bad requests before they reach the log.
        let module = self
            .shared
            .read(|s| {
                s.validate_submit(&spec)
                    .map(|(digest, _)| s.modules.get(&digest).map(|m| convert::module_info(s, m)))
            })?
            .map_err(rejection_status)?;
        let now_ms = self.shared.clock.now_ms();
        // A traced submission: the hunt's tasks join this request's trace.
        let command = match quarry_telemetry::current_traceparent() {
            Some(traceparent) => Command::SubmitTracedHunt {
                spec,
                now_ms,
                traceparent,
            },
            None => Command::SubmitHunt { spec, now_ms },
        };
        match self.shared.propose_write(&request_id, command).await? {
            Response::Hunt { id, tasks } => {
                tracing::Span::current().record("hunt", id.as_str());
                if let Some(module) = &module {
                    target.set(format!(
                        "hunt {id} (module {}@{})",
                        module.name, module.version
                    ));
                } else {
                    target.set(format!("hunt {id}"));
                }
                tracing::info!(tasks, "hunt submitted");
                Ok(tonic::Response::new(v1::SubmitHuntResponse {
                    hunt_id: id.into_string(),
                    task_count: tasks,
                    module,
                    ..Default::default()
                }))
            }
            other => Err(Status::internal(format!(
                "unexpected response to SubmitHunt: {other:?}"
            ))),
        }
    }

    async fn get_hunt(
        &self,
        request: Request<v1::GetHuntRequest>,
    ) -> Result<tonic::Response<v1::Hunt>, Status> {
        self.shared.node.read_index().await?;
        let request = request.into_inner();
        let from = match request.task_page_token.as_str() {
            "" => 0,
            token => token.parse().map_err(|_| {
                CoordinatorError::InvalidArgument(format!(
                    "task page token `{token}` is not one this coordinator gave; \
                     pass the `next_task_page_token` of the previous answer, or none for the first page"
                ))
            })?,
        };
        let page = convert::TaskPage {
            from,
            size: page_size(request.task_page_size),
            states: request
                .task_states
                .iter()
                .filter_map(|s| v1::TaskState::try_from(*s).ok())
                .collect(),
        };
        self.hunt(&request.hunt_id, &page).map(tonic::Response::new)
    }

    async fn list_hunts(
        &self,
        request: Request<v1::ListHuntsRequest>,
    ) -> Result<tonic::Response<v1::ListHuntsResponse>, Status> {
        self.shared.node.read_index().await?;
        let request = request.into_inner();
        let states: Vec<_> = request
            .states
            .iter()
            .filter_map(|s| convert::hunt_state_from(*s))
            .collect();
        let limit = page_size(request.limit);
        let after = parse_hunt_token(&request.page_token)?;
        let (hunts, next_page_token) = self.shared.read(|s| {
            // Newest first: descending (submitted, id); a page starts after
            // the last hunt of the previous one.
            let mut hunts: Vec<&HuntRecord> = s
                .hunts
                .values()
                .filter(|h| states.is_empty() || states.contains(&h.state))
                .filter(|h| {
                    after
                        .as_ref()
                        .is_none_or(|(ms, id)| (h.submitted_ms, h.id.as_str()) < (*ms, id.as_str()))
                })
                .collect();
            hunts.sort_by(|a, b| (b.submitted_ms, &b.id).cmp(&(a.submitted_ms, &a.id)));
            let more = hunts.len() > limit;
            hunts.truncate(limit);
            let next = match hunts.last() {
                Some(last) if more => format!("{}:{}", last.submitted_ms, last.id),
                _ => String::new(),
            };
            (
                hunts
                    .into_iter()
                    .map(|h| convert::hunt(s, h, &convert::TaskPage::first(0)))
                    .collect(),
                next,
            )
        })?;
        Ok(tonic::Response::new(v1::ListHuntsResponse {
            hunts,
            next_page_token,
        }))
    }

    async fn cancel_hunt(
        &self,
        request: Request<v1::CancelHuntRequest>,
    ) -> Result<tonic::Response<v1::Hunt>, Status> {
        access_set_target(&request, format!("hunt {}", request.get_ref().hunt_id));
        let request = request.into_inner();
        let id = HuntId::new(request.hunt_id);
        let now_ms = self.shared.clock.now_ms();
        // Workers running its tasks are told to stop once the cancel commits.
        let response = self
            .shared
            .propose_write(
                &request.request_id,
                Command::CancelHunt {
                    hunt: id.clone(),
                    reason: request.reason,
                    now_ms,
                },
            )
            .await?;
        if let Response::Stop(stops) = response {
            tracing::info!(hunt = %id, runs = stops.len(), "hunt cancelled; stopping its runs");
            send_stops(&self.shared, stops);
        }
        self.hunt(id.as_str(), &convert::TaskPage::first(DEFAULT_PAGE))
            .map(tonic::Response::new)
    }

    async fn resume_hunt(
        &self,
        request: Request<v1::ResumeHuntRequest>,
    ) -> Result<tonic::Response<v1::Hunt>, Status> {
        access_set_target(&request, format!("hunt {}", request.get_ref().hunt_id));
        let request = request.into_inner();
        let id = HuntId::new(request.hunt_id);
        self.shared
            .propose_write(
                &request.request_id,
                Command::ResumeHunt { hunt: id.clone() },
            )
            .await?;
        tracing::info!(hunt = %id, "hunt resumed");
        self.hunt(id.as_str(), &convert::TaskPage::first(DEFAULT_PAGE))
            .map(tonic::Response::new)
    }

    #[tracing::instrument(skip_all, fields(hunt))]
    async fn delete_hunt(
        &self,
        request: Request<v1::DeleteHuntRequest>,
    ) -> Result<tonic::Response<v1::DeleteHuntResponse>, Status> {
        access_set_target(&request, format!("hunt {}", request.get_ref().hunt_id));
        let request = request.into_inner();
        let id = HuntId::new(request.hunt_id);
        tracing::Span::current().record("hunt", id.as_str());
        self.shared
            .propose_write(
                &request.request_id,
                Command::DeleteHunts {
                    hunts: vec![id.clone()],
                },
            )
            .await?;
        tracing::info!("hunt deleted with its findings");
        Ok(tonic::Response::new(v1::DeleteHuntResponse {}))
    }

    #[tracing::instrument(skip_all, fields(hunt))]
    async fn query_result(
        &self,
        request: Request<v1::QueryResultRequest>,
    ) -> Result<tonic::Response<v1::QueryResultResponse>, Status> {
        self.shared.node.read_index().await?;
        let id = HuntId::new(request.into_inner().hunt_id);
        tracing::Span::current().record("hunt", id.as_str());
        let result = self.shared.read(|s| {
            s.hunts
                .get(&id)
                .map(|h| crate::query_result::query_result(s, h))
        })?;
        match result {
            Some(table) => Ok(tonic::Response::new(table?)),
            None => Err(hunt_not_found(&id)),
        }
    }

    type WatchHuntStream = Stream<v1::HuntProgress>;

    async fn watch_hunt(
        &self,
        request: Request<v1::WatchHuntRequest>,
    ) -> Result<tonic::Response<Self::WatchHuntStream>, Status> {
        let id = HuntId::new(request.into_inner().hunt_id);
        self.hunt_exists(&id)?;
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut changes = shared.node.subscribe();
            let mut last = None;
            loop {
                let progress = shared.read(|s| s.hunts.get(&id).map(|h| convert::progress(s, h)));
                let Ok(Some(progress)) = progress else { return };
                let done = progress.state != v1::HuntState::Running as i32
                    && progress.state != v1::HuntState::Paused as i32;
                if last.as_ref() != Some(&progress) {
                    if tx.send(Ok(progress.clone())).await.is_err() {
                        return;
                    }
                    last = Some(progress);
                }
                if done {
                    return;
                }
                // Progress is computed over the hunt's tasks: under a
                // stream of commits, once per interval is plenty (changes
                // meanwhile are not lost, the watch remembers them).
                tokio::time::sleep(WATCH_INTERVAL).await;
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    type StreamFindingsStream = Stream<v1::Finding>;

    async fn stream_findings(
        &self,
        request: Request<v1::StreamFindingsRequest>,
    ) -> Result<tonic::Response<Self::StreamFindingsStream>, Status> {
        self.shared.node.read_index().await?;
        let request = request.into_inner();
        let id = HuntId::new(request.hunt_id);
        self.hunt_exists(&id)?;
        let mut next = parse_cursor(&request.page_token)?;
        let follow = request.follow;
        let mut budget = if request.page_size == 0 || follow {
            u64::MAX
        } else {
            u64::from(request.page_size)
        };
        let (tx, rx) = mpsc::channel(FINDINGS_PAGE);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut changes = shared.node.subscribe();
            loop {
                // Whether the hunt had ended before this read: then the read
                // sees every finding it will ever have.
                let ended = match shared.read(|s| s.hunts.get(&id).map(|h| h.state.is_terminal())) {
                    Ok(Some(ended)) => ended,
                    _ => return,
                };
                if ended {
                    // The end shows in the state as soon as its entry
                    // applies, but the findings committed in the same batch
                    // reach RocksDB only when the batch is persisted, after
                    // which the node publishes its applied index: the final
                    // read waits for that (it stopped short under load).
                    let applied = shared.node.read(|r| r.applied_index).unwrap_or(0);
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        changes.wait_for(|status| status.applied >= applied),
                    )
                    .await;
                }
                // Only what is new since the last read: findings are numbered
                // in commit order and read from RocksDB a page at a time.
                loop {
                    let limit =
                        usize::try_from(budget.min(FINDINGS_PAGE as u64)).unwrap_or(FINDINGS_PAGE);
                    if limit == 0 {
                        return;
                    }
                    let node = shared.node.clone();
                    let hunt = id.clone();
                    let page =
                        tokio::task::spawn_blocking(move || node.findings(&hunt, next, limit))
                            .await;
                    let page = match page {
                        Ok(Ok(page)) => page,
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                        Err(_) => return,
                    };
                    let full = page.len() == limit;
                    for (seq, finding) in page {
                        next = seq + 1;
                        budget -= 1;
                        if tx
                            .send(Ok(convert::finding(&id, seq, &finding)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                if !follow || ended || changes.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// Least time between two `WatchHunt` updates.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Items per list page when the caller names no size, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// The page size a list request asks for, within the bounds.
fn page_size(asked: u32) -> usize {
    match asked {
        0 => DEFAULT_PAGE,
        n => (n as usize).min(MAX_PAGE),
    }
}

/// Takes up to `size` items, in key order, from those after the page token;
/// returns them and the next page's token (the last key taken), empty when
/// nothing is left.
fn take_page<T>(items: impl Iterator<Item = (String, T)>, size: usize) -> (Vec<T>, String) {
    let mut page = Vec::with_capacity(size.min(DEFAULT_PAGE));
    let mut last = String::new();
    for (key, item) in items {
        if page.len() == size {
            return (page, last);
        }
        last = key;
        page.push(item);
    }
    (page, String::new())
}

/// A `ListHunts` page token: `<submitted_ms>:<hunt id>` of the last hunt of
/// the previous page.
fn parse_hunt_token(token: &str) -> Result<Option<(i64, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .split_once(':')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_owned())))
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "page token `{}` is not one this coordinator issued; pass `next_page_token` from the previous page",
                token.escape_debug()
            ))
        })
}

/// Findings read from RocksDB per page (and queued per stream).
const FINDINGS_PAGE: usize = 1_000;

/// A findings stream's `page_token`: the number of the next finding.
fn parse_cursor(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "page token `{}` is not one this coordinator issued; pass a finding's `cursor` (or nothing to start from the first)",
            token.escape_debug()
        ))
    })
}

#[tonic::async_trait]
impl ModuleService for Api {
    #[tracing::instrument(skip_all, fields(module))]
    async fn upload_module(
        &self,
        request: Request<Streaming<v1::UploadModuleRequest>>,
    ) -> Result<tonic::Response<v1::ModuleInfo>, Status> {
        let target = AuditTarget::of(&request);
        let (uploader, admin) = caller_of(&request);
        let mut stream = request.into_inner();
        let mut header: Option<v1::ModuleUploadHeader> = None;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Some(h) = chunk.header {
                if header.is_some() {
                    return Err(CoordinatorError::InvalidArgument(
                        "module upload carries two headers; send the header in the first chunk only".into(),
                    )
                    .into());
                }
                header = Some(h);
            } else if header.is_none() {
                return Err(CoordinatorError::InvalidArgument(
                    "module upload must start with a header (name, version)".into(),
                )
                .into());
            }
            if bytes.len() + chunk.data.len() > MAX_MODULE_BYTES {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "module is larger than the {MAX_MODULE_BYTES}-byte limit; strip debug info (`strip = true` in the release profile)"
                ))
                .into());
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let header = header.ok_or_else(|| {
            Status::invalid_argument("module upload was empty: no header, no bytes")
        })?;
        convert::validate_module_name(&header.name)?;
        if header.version.trim().is_empty() || header.version.contains(char::is_whitespace) {
            return Err(CoordinatorError::InvalidArgument(format!(
                "module version `{}` is invalid: give a version such as 0.1.0",
                header.version
            ))
            .into());
        }
        tracing::Span::current().record("module", format!("{}@{}", header.name, header.version));
        target.set(format!("module {}@{}", header.name, header.version));
        let digest = ModuleDigest::new(hex::encode(Sha256::digest(&bytes)));
        if !header.expected_digest.is_empty()
            && header.expected_digest.to_ascii_lowercase() != digest.as_str()
        {
            return Err(CoordinatorError::InvalidArgument(format!(
                "module bytes hash to {digest}, not the expected {}; the upload was corrupted, retry it",
                header.expected_digest
            ))
            .into());
        }
        module_check::check_component(&bytes)?;
        let signature = match header.signature.len() {
            0 => None,
            quarry_security::module_sign::SIGNATURE_BYTES => Some(header.signature.clone()),
            n => {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "a module signature is {} bytes (ed25519), not {n}",
                    quarry_security::module_sign::SIGNATURE_BYTES
                ))
                .into());
            }
        };
        let module = ModuleRecord {
            digest: digest.clone(),
            name: header.name,
            version: header.version,
            description: header.description,
            uploaded_ms: self.shared.clock.now_ms(),
            techniques: declared_techniques(&header.techniques)?,
            bytes,
        };
        self.shared
            .propose(Command::UploadModuleAs {
                module,
                uploader,
                admin,
                signature,
            })
            .await?;
        let info = self
            .shared
            .read(|s| s.modules.get(&digest).map(|m| convert::module_info(s, m)))?;
        info.map(tonic::Response::new)
            .ok_or_else(|| Status::internal("uploaded module vanished"))
    }

    async fn get_module(
        &self,
        request: Request<v1::GetModuleRequest>,
    ) -> Result<tonic::Response<v1::ModuleInfo>, Status> {
        self.shared.node.read_index().await?;
        let selector = convert::module_selector(request.into_inner().module)?;
        let info = self.shared.read(|s| {
            s.resolve_module(&selector)
                .map(|m| convert::module_info(s, m))
        })?;
        info.map(tonic::Response::new).map_err(rejection_status)
    }

    async fn list_modules(
        &self,
        request: Request<v1::ListModulesRequest>,
    ) -> Result<tonic::Response<v1::ListModulesResponse>, Status> {
        self.shared.node.read_index().await?;
        let request = request.into_inner();
        let size = page_size(request.page_size);
        let (modules, next_page_token) = self.shared.read(|s| {
            // By name, then upload time: `name/time/digest` orders them.
            let mut keyed: Vec<_> = s
                .modules
                .values()
                .map(|m| (format!("{}/{:020}/{}", m.name, m.uploaded_ms, m.digest), m))
                .filter(|(key, _)| key.as_str() > request.page_token.as_str())
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            take_page(
                keyed
                    .into_iter()
                    .map(|(key, m)| (key, convert::module_info(s, m))),
                size,
            )
        })?;
        Ok(tonic::Response::new(v1::ListModulesResponse {
            modules,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(module))]
    async fn delete_module(
        &self,
        request: Request<v1::DeleteModuleRequest>,
    ) -> Result<tonic::Response<v1::DeleteModuleResponse>, Status> {
        let target = AuditTarget::of(&request);
        let (caller, admin) = caller_of(&request);
        let selector = convert::module_selector(request.into_inner().module)?;
        if let crate::state::ModuleSelector::NameVersion {
            name,
            version: None,
        } = &selector
        {
            let versions = self.shared.read(|s| {
                s.modules
                    .values()
                    .filter(|m| &m.name == name)
                    .map(|m| format!("{}@{}", m.name, m.version))
                    .collect::<Vec<_>>()
            })?;
            return Err(CoordinatorError::InvalidArgument(format!(
                "name the version to delete: {}",
                if versions.is_empty() {
                    format!("no module `{name}` is uploaded")
                } else {
                    versions.join(", ")
                }
            ))
            .into());
        }
        let module = self
            .shared
            .read(|s| {
                s.resolve_module(&selector)
                    .map(|m| convert::module_info(s, m))
            })?
            .map_err(rejection_status)?;
        tracing::Span::current().record("module", module.digest.as_str());
        target.set(format!("module {}@{}", module.name, module.version));
        // Owners never change once set, so this check cannot race a write.
        self.shared
            .read(|s| s.trust.may_publish(&module.name, &caller, admin, true))?
            .map_err(|why| Status::from(CoordinatorError::PermissionDenied(why)))?;
        self.shared
            .propose(Command::DeleteModule {
                digest: ModuleDigest::new(module.digest.clone()),
            })
            .await?;
        tracing::info!(name = %module.name, version = %module.version, "module deleted");
        Ok(tonic::Response::new(v1::DeleteModuleResponse {
            module: Some(module),
        }))
    }
}

#[tonic::async_trait]
impl ClusterService for Api {
    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<tonic::Response<v1::ListWorkersResponse>, Status> {
        let request = request.into_inner();
        let size = page_size(request.page_size);
        let after = WorkerId::new(request.page_token);
        let (workers, next_page_token) = self.shared.read(|s| {
            let running = s.assignment_counts();
            let from = (
                std::ops::Bound::Excluded(&after),
                std::ops::Bound::Unbounded,
            );
            let page = s.workers.range::<WorkerId, _>(from).map(|(id, w)| {
                (
                    id.to_string(),
                    v1::WorkerInfo {
                        worker_id: w.id.to_string(),
                        address: w.address.clone(),
                        shards: w.shards.iter().map(ToString::to_string).collect(),
                        slots: w.slots,
                        running_tasks: running.get(&w.id).copied().unwrap_or(0),
                        live: self.shared.is_live(&w.id),
                        last_heartbeat_ms: self.shared.last_heartbeat(&w.id).unwrap_or(0),
                        draining: self.shared.leases.is_draining(&w.id),
                    },
                )
            });
            take_page(page, size)
        })?;
        Ok(tonic::Response::new(v1::ListWorkersResponse {
            workers,
            next_page_token,
        }))
    }

    async fn list_shards(
        &self,
        request: Request<v1::ListShardsRequest>,
    ) -> Result<tonic::Response<v1::ListShardsResponse>, Status> {
        self.shared.node.read_index().await?;
        let request = request.into_inner();
        let size = page_size(request.page_size);
        let after = ShardId::new(request.page_token);
        let selector = request.selector.unwrap_or_default().match_labels;
        let (shards, next_page_token) = self.shared.read(|s| {
            let from = (
                std::ops::Bound::Excluded(&after),
                std::ops::Bound::Unbounded,
            );
            let page = s
                .shards
                .range::<ShardId, _>(from)
                .filter(|(_, shard)| {
                    selector
                        .iter()
                        .all(|(k, v)| shard.description.labels.get(k) == Some(v))
                })
                .map(|(name, shard)| (name.to_string(), convert::shard_info(shard)));
            take_page(page, size)
        })?;
        let mut shards = shards;
        let counts = self
            .shared
            .field_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for shard in &mut shards {
            if let Some(fields) = counts.get(&ShardId::new(shard.name.clone())) {
                shard.field_counts = fields.clone();
            }
        }
        drop(counts);
        Ok(tonic::Response::new(v1::ListShardsResponse {
            shards,
            next_page_token,
        }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<tonic::Response<v1::StatusResponse>, Status> {
        // Status must answer without a leader too (that is when people look),
        // so an unconfirmed read is served and flagged rather than refused.
        let stale = self.shared.node.read_index().await.is_err();
        let raft = self.shared.node.status();
        let live = self.shared.live_workers().len() as u32;
        let coordinators = crate::membership::coordinators(&self.shared.node);
        let response = self.shared.node.read(|r| v1::StatusResponse {
            node_id: raft.id,
            is_leader: raft.is_leader,
            leader_id: raft.leader,
            term: raft.term,
            commit_index: raft.commit,
            // The replica, not the published status: a proposer may hear back
            // before the status is republished.
            applied_index: r.applied_index,
            workers: r.state.workers.len() as u32,
            live_workers: live,
            shards: r.state.shards.len() as u32,
            modules: r.state.modules.len() as u32,
            running_hunts: r
                .state
                .hunts
                .values()
                .filter(|h| !h.state.is_terminal())
                .count() as u32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            coordinators,
            stale,
            first_log_index: raft.first_index,
        })?;
        Ok(tonic::Response::new(response))
    }

    async fn add_coordinator(
        &self,
        request: Request<v1::AddCoordinatorRequest>,
    ) -> Result<tonic::Response<v1::MembershipResponse>, Status> {
        access_set_target(
            &request,
            format!("coordinator {}", request.get_ref().node_id),
        );
        // The access table lets coordinators in for `--join`; one may add
        // only itself, under the node id its certificate names.
        if let Some(principal) = access::principal_of(&request)
            && principal.role == Role::Coordinator
            && principal.name != request.get_ref().node_id.to_string()
        {
            return Err(Status::permission_denied(format!(
                "{principal} may add only itself to the group, not node {}; an admin adds others",
                request.get_ref().node_id
            )));
        }
        crate::membership::add(&self.shared.node, request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn remove_coordinator(
        &self,
        request: Request<v1::RemoveCoordinatorRequest>,
    ) -> Result<tonic::Response<v1::MembershipResponse>, Status> {
        access_set_target(
            &request,
            format!("coordinator {}", request.get_ref().node_id),
        );
        crate::membership::remove(&self.shared.node, request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    #[tracing::instrument(skip_all, fields(key))]
    async fn trust_key(
        &self,
        request: Request<v1::TrustKeyRequest>,
    ) -> Result<tonic::Response<v1::TrustedKeysResponse>, Status> {
        let (added_by, _) = caller_of(&request);
        access_set_target(&request, format!("signing key {}", request.get_ref().name));
        let request = request.into_inner();
        tracing::Span::current().record("key", request.name.as_str());
        convert::validate_module_name(&request.name)?;
        let public_key = quarry_security::module_sign::parse_public_key(&request.public_key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let command = Command::TrustKey {
            name: request.name,
            public_key,
            added_by,
            now_ms: self.shared.clock.now_ms(),
        };
        self.shared.propose_write("", command).await?;
        tracing::info!("module-signing key trusted");
        self.trusted_keys()
    }

    async fn untrust_key(
        &self,
        request: Request<v1::UntrustKeyRequest>,
    ) -> Result<tonic::Response<v1::TrustedKeysResponse>, Status> {
        access_set_target(&request, format!("signing key {}", request.get_ref().name));
        let name = request.into_inner().name;
        self.shared
            .propose_write("", Command::UntrustKey { name })
            .await?;
        self.trusted_keys()
    }

    async fn list_trusted_keys(
        &self,
        _request: Request<v1::ListTrustedKeysRequest>,
    ) -> Result<tonic::Response<v1::TrustedKeysResponse>, Status> {
        self.shared.node.read_index().await?;
        self.trusted_keys()
    }

    async fn set_module_policy(
        &self,
        request: Request<v1::SetModulePolicyRequest>,
    ) -> Result<tonic::Response<v1::TrustedKeysResponse>, Status> {
        let require_signed = request.get_ref().require_signed;
        access_set_target(
            &request,
            format!("module policy: require signed modules {require_signed}"),
        );
        self.shared
            .propose_write("", Command::SetModulePolicy { require_signed })
            .await?;
        tracing::info!(require_signed, "module-signing policy set");
        self.trusted_keys()
    }
}

impl Api {
    /// The trusted keys and the signing policy, as this replica has them.
    fn trusted_keys(&self) -> Result<tonic::Response<v1::TrustedKeysResponse>, Status> {
        let response = self.shared.read(|s| v1::TrustedKeysResponse {
            keys: s
                .trust
                .keys
                .iter()
                .map(|(name, key)| v1::TrustedKeyInfo {
                    name: name.clone(),
                    public_key: hex::encode(&key.public_key),
                    added_by: key.added_by.clone(),
                    added_ms: key.added_ms,
                })
                .collect(),
            require_signed: s.trust.require_signed,
        })?;
        Ok(tonic::Response::new(response))
    }
}

fn worker_id(id: &str) -> Result<WorkerId, Status> {
    if id.trim().is_empty() {
        return Err(Status::invalid_argument("worker_id is empty"));
    }
    Ok(WorkerId::new(id))
}

/// The worker a request acts as: the one it names, which over TLS must be
/// the worker its certificate names (the access table has checked the
/// role). A plaintext loopback server (development) trusts the name.
/// Who `request` comes from, `role:name` (`local` on a plaintext
/// development server, where every caller may do everything), and whether
/// that is an admin.
pub(crate) fn caller_of<T>(request: &Request<T>) -> (String, bool) {
    match access::principal_of(request) {
        Some(principal) => (principal.to_string(), principal.role == Role::Admin),
        None => ("local".to_owned(), !access::is_secure(request)),
    }
}

fn acting_worker<T>(request: &Request<T>, id: &str) -> Result<WorkerId, Status> {
    let id = worker_id(id)?;
    if !access::is_secure(request) {
        return Ok(id);
    }
    match access::principal_of(request) {
        Some(principal) if principal.role == Role::Worker && principal.name == id.as_str() => {
            Ok(id)
        }
        Some(principal) => Err(Status::permission_denied(format!(
            "{principal} may not act as worker {id}: a worker acts only as the worker its certificate names"
        ))),
        None => Err(Status::unauthenticated(
            "worker calls need the worker's client certificate",
        )),
    }
}

#[tonic::async_trait]
impl WorkerService for Api {
    #[tracing::instrument(skip_all, fields(worker))]
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<tonic::Response<v1::RegisterWorkerResponse>, Status> {
        access_set_target(&request, format!("worker {}", request.get_ref().worker_id));
        let id = acting_worker(&request, &request.get_ref().worker_id)?;
        let mut request = request.into_inner();
        tracing::Span::current().record("worker", id.as_str());
        let field_counts: Vec<(ShardId, HashMap<String, u64>)> = request
            .shards
            .iter_mut()
            .map(|s| {
                (
                    ShardId::new(s.name.clone()),
                    std::mem::take(&mut s.field_counts),
                )
            })
            .collect();
        let shards = request
            .shards
            .into_iter()
            .map(convert::shard_description)
            .collect::<Result<Vec<_>, _>>()?;
        let now_ms = self.shared.clock.now_ms();
        let count = shards.len();
        self.shared
            .propose(Command::RegisterWorker {
                id: id.clone(),
                address: request.address,
                slots: request.slots,
                shards,
                now_ms,
            })
            .await?;
        self.shared
            .field_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(field_counts);
        self.shared.heartbeat(&id);
        // A (re)started worker takes tasks; one still draining says so
        // again in its next heartbeat, and hands back what it gets meanwhile.
        self.shared.leases.set_draining(&id, false);
        tracing::info!(shards = count, "worker registered");
        Ok(tonic::Response::new(v1::RegisterWorkerResponse {
            heartbeat_interval_ms: self.shared.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<tonic::Response<v1::HeartbeatResponse>, Status> {
        let id = acting_worker(&request, &request.get_ref().worker_id)?;
        // A heartbeat kept by a follower would never reach the leader's
        // lease table: send the worker to the leader.
        self.shared.require_leader()?;
        if !self.shared.read(|s| s.workers.contains_key(&id))? {
            return Err(Status::not_found(format!(
                "worker {id} is not registered; register before heartbeating"
            )));
        }
        self.shared.heartbeat(&id);
        // Sticky until the worker registers again: a heartbeat sent just
        // before the worker began draining may arrive after the one that
        // says so.
        if request.get_ref().draining {
            self.shared.leases.set_draining(&id, true);
        }
        Ok(tonic::Response::new(v1::HeartbeatResponse {}))
    }

    type TaskStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<v1::TaskCommand, Status>> + Send + 'static>,
    >;

    async fn task_stream(
        &self,
        request: Request<v1::TaskStreamRequest>,
    ) -> Result<tonic::Response<Self::TaskStreamStream>, Status> {
        let id = acting_worker(&request, &request.get_ref().worker_id)?;
        self.shared.require_leader()?;
        // Re-send what the worker was assigned: after a reconnect or a new
        // leader it may not have them. Workers drop duplicates by attempt.
        let (pending, slots) = self.shared.read(|s| {
            let Some(worker) = s.workers.get(&id) else {
                return Err(Status::not_found(format!(
                    "worker {id} is not registered; register first"
                )));
            };
            let pending = s
                .assigned_to(&id)
                .map(|(t, attempt)| (t.id.clone(), attempt))
                .collect::<Vec<_>>();
            Ok((pending, worker.slots as usize))
        })??;
        // Room for every pending assignment (the worker reads nothing until
        // this handler returns, so waiting for space here would deadlock),
        // and for a full turn of new ones: the scheduler may fill all of a
        // worker's slots at once. Past that the worker is not reading.
        let (tx, rx) = mpsc::channel(pending.len().max(slots) + STREAM_QUEUE);
        for (task, attempt) in pending {
            let _ = tx.try_send(Queued::Run { task, attempt });
        }
        self.shared.dispatcher.connect(id.clone(), tx);
        self.shared.heartbeat(&id);
        tracing::info!(worker = %id, "worker task stream open");
        let shared = self.shared.clone();
        let commands = ReceiverStream::new(rx).filter_map(move |queued| {
            let command = match queued {
                Queued::Run { task, attempt } => v1::task_command::Command::Run(
                    shared
                        .read(|s| {
                            let record = s.tasks.get(&task)?;
                            (record.attempt_on(&id) == Some(attempt))
                                .then(|| assignment(s, record, attempt))?
                        })
                        .ok()
                        .flatten()?,
                ),
                Queued::Command(command) => *command,
                Queued::End(status) => return Some(Err(status)),
            };
            Some(Ok(v1::TaskCommand {
                command: Some(command),
            }))
        });
        Ok(tonic::Response::new(Box::pin(commands)))
    }

    #[tracing::instrument(skip_all, fields(task, attempt))]
    async fn report_task(
        &self,
        request: Request<v1::ReportTaskRequest>,
    ) -> Result<tonic::Response<v1::ReportTaskResponse>, Status> {
        let worker = acting_worker(&request, &request.get_ref().worker_id)?;
        let mut request = request.into_inner();
        tracing::Span::current()
            .record("task", request.task_id.as_str())
            .record("attempt", request.attempt);
        let outcome = match v1::TaskOutcome::try_from(request.outcome) {
            Ok(v1::TaskOutcome::Succeeded) => {
                Ok(convert::partial_result(&mut request).map_err(|reason| {
                    Status::invalid_argument(format!(
                        "task {} reported a malformed result: {reason}",
                        request.task_id
                    ))
                })?)
            }
            Ok(v1::TaskOutcome::Failed) => Err(convert::task_error(&request)),
            Ok(v1::TaskOutcome::HandedBack) => {
                let command = Command::HandBackTask {
                    task: TaskId::new(request.task_id),
                    attempt: request.attempt,
                    reason: format!(
                        "worker {worker} shut down and handed the attempt back; placed again on another holder of the shard"
                    ),
                    worker,
                };
                return match self.shared.propose(command).await? {
                    Response::StaleReport => {
                        tracing::info!("hand-back of an attempt no longer running ignored");
                        Ok(tonic::Response::new(v1::ReportTaskResponse {}))
                    }
                    _ => {
                        tracing::info!("task handed back by a draining worker; placing it again");
                        Ok(tonic::Response::new(v1::ReportTaskResponse {}))
                    }
                };
            }
            _ => {
                return Err(Status::invalid_argument(
                    "task outcome must be SUCCEEDED, FAILED or HANDED_BACK",
                ));
            }
        };
        let mut report = TaskReport {
            task: TaskId::new(request.task_id),
            attempt: request.attempt,
            worker,
            outcome,
        };
        // Findings past the hunt's result limits would be dropped on apply:
        // cut them here so they do not travel through the raft log.
        let trimmed = match &mut report.outcome {
            Ok(partial) => {
                let room = self
                    .shared
                    .read(|s| s.hunt_room_for(&report.task, &partial.findings))?;
                let cut = partial.findings.len().saturating_sub(room);
                partial.findings.truncate(room);
                cut as u64
            }
            Err(_) => 0,
        };
        let findings = match &report.outcome {
            Ok(partial) => partial.findings.len(),
            Err(_) => 0,
        };
        let now_ms = self.shared.clock.now_ms();
        let command = if trimmed > 0 {
            tracing::info!(
                trimmed,
                "findings past the hunt's result limits cut before proposing"
            );
            Command::RecordTrimmedResult {
                report,
                trimmed,
                now_ms,
            }
        } else {
            Command::RecordResult { report, now_ms }
        };
        // Committing the result is where it is merged into the hunt and its
        // findings are triaged (on apply, on every replica).
        let response = self
            .shared
            .propose(command)
            .instrument(tracing::info_span!("triage", findings))
            .await?;
        match response {
            Response::StaleReport => tracing::info!("stale or duplicate report ignored"),
            Response::Stop(losers) => {
                tracing::info!("task result committed; stopping the other run");
                send_stops(&self.shared, losers);
            }
            _ => tracing::info!(findings = request.findings.len(), "task result committed"),
        }
        Ok(tonic::Response::new(v1::ReportTaskResponse {}))
    }

    type FetchModuleStream = Stream<v1::ModuleChunk>;

    async fn fetch_intel(
        &self,
        request: Request<v1::FetchIntelRequest>,
    ) -> Result<tonic::Response<v1::FetchIntelResponse>, Status> {
        crate::intel_service::fetch(self, request.into_inner()).map(tonic::Response::new)
    }

    async fn fetch_rule_pack(
        &self,
        request: Request<v1::FetchRulePackRequest>,
    ) -> Result<tonic::Response<v1::FetchRulePackResponse>, Status> {
        crate::rule_pack_service::fetch(self, request.into_inner()).map(tonic::Response::new)
    }

    async fn fetch_baseline(
        &self,
        request: Request<v1::FetchBaselineRequest>,
    ) -> Result<tonic::Response<v1::FetchBaselineResponse>, Status> {
        crate::schedule_service::fetch_baseline(self, request.into_inner())
            .map(tonic::Response::new)
    }

    async fn fetch_module(
        &self,
        request: Request<v1::FetchModuleRequest>,
    ) -> Result<tonic::Response<Self::FetchModuleStream>, Status> {
        let digest = ModuleDigest::new(request.into_inner().digest);
        let bytes = self
            .shared
            .read(|s| s.modules.get(&digest).map(|m| m.bytes.clone()))?
            .ok_or_else(|| {
                Status::not_found(format!("module {digest} is not stored on this coordinator"))
            })?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in bytes.chunks(quarry_proto::MODULE_CHUNK_BYTES) {
                if tx
                    .send(Ok(v1::ModuleChunk {
                        data: chunk.to_vec(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}
