//! The worker's life: serve health, register shards with the coordinator,
//! hold the task stream open (reconnecting with backoff), run each task in
//! the sandbox on a blocking thread and report its partial result.

use crate::error::WorkerError;
use crate::runtime::{self, LoadedModule, Runtime, TaskLimits, TaskOutput};
use crate::shard::ShardStore;
use quarry_proto::v1::{
    self, cluster_service_client::ClusterServiceClient, worker_service_client::WorkerServiceClient,
};
use quarry_proto::{ModuleDigest, WorkerId};
use quarry_security::access::AccessLayer;
use quarry_security::{Role, SecurityError, ServerTls, TlsFiles};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

/// How a worker is configured.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Its id, unique in the cluster.
    pub id: WorkerId,
    /// Coordinator URL, for example `http://127.0.0.1:7700`, or several,
    /// comma-separated: the worker follows whichever is the raft leader.
    pub coordinator: String,
    /// Where shards live (`<data_dir>/shards`).
    pub data_dir: PathBuf,
    /// Address of the worker's own gRPC server (health, reflection).
    pub listen: SocketAddr,
    /// Tasks run at once.
    pub slots: u32,
    /// Mutual TLS to the coordinators and for the worker's own server;
    /// without it the worker serves plaintext, on a loopback address only.
    pub tls: Option<TlsFiles>,
}

/// A running worker.
pub struct Worker {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<ShardStore>,
    inner: Arc<Inner>,
    /// The worker's observable gauges (see crate::metrics).
    _gauges: Vec<quarry_telemetry::metrics::ObservableGauge<u64>>,
}

pub(crate) struct Inner {
    config: WorkerConfig,
    store: Arc<ShardStore>,
    runtime: Runtime,
    slots: Arc<Semaphore>,
    running: AtomicU32,
    /// Tasks started (task id -> attempt, cancel flag); a re-sent assignment
    /// of the same attempt is ignored.
    started: Mutex<StartedTasks>,
    /// Signalled when an ingest changed the shards: the session re-registers.
    shards_changed: Arc<Notify>,
    /// Index into the coordinator URLs of the one in use; moves on when that
    /// one fails or is not the leader.
    current: std::sync::atomic::AtomicUsize,
    /// The leader a coordinator named (`quarry-leader` metadata) when it
    /// refused us, tried before the configured list: it may be a coordinator
    /// added to the group after this worker started. `true` until the next
    /// [`Inner::rotate`], which keeps a fresh hint and drops a stale one.
    leader_hint: Mutex<Option<(String, bool)>>,
    /// Intel sets fetched by version (see [`crate::intel_fetch`]).
    pub(crate) intel: crate::intel_fetch::IntelCache,
    pub(crate) baselines: crate::baseline_fetch::BaselineCache,
    /// Sigma rule packs fetched by digest (see [`crate::rule_pack_fetch`]).
    pub(crate) rule_packs: crate::rule_pack_fetch::RulePackCache,
    /// One download and compile per module at a time: the tasks of a new
    /// hunt that start together in every slot wait for the first one's
    /// compile instead of each compiling the same module.
    module_loads: Mutex<HashMap<ModuleDigest, Arc<tokio::sync::Mutex<()>>>>,
    /// Graceful shutdown (see [`Worker::shutdown_gracefully`]).
    drain: Drain,
    /// The group's coordinators as a coordinator this worker trusts listed
    /// them (its replicated address book): a hint naming one of them is
    /// followed even if it joined after the worker was configured.
    members: Mutex<Vec<String>>,
}

/// A graceful shutdown's progress, shared with the session and the tasks.
#[derive(Default)]
struct Drain {
    /// Heartbeats say "draining" (the leader places nothing new here).
    announced: AtomicBool,
    /// Tasks not started yet go back instead of starting.
    started: watch::Sender<bool>,
    /// The grace period ended: a task stopped by its cancel flag goes back
    /// rather than ending silently.
    handing_back: AtomicBool,
    /// Attempts the coordinator took back.
    handed_back: AtomicU32,
    /// A task ended (reported, handed back or dropped).
    task_ended: Notify,
}

/// How long a worker whose grace period ended waits for its hand-backs (and
/// reports in flight) to reach the coordinator before it stops anyway.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// How long announcing "draining" to the coordinator may take before the
/// worker goes on without (a lost heartbeat: the next one says it again).
const ANNOUNCE_WAIT: Duration = Duration::from_secs(3);

impl Inner {
    /// Tasks held: running, waiting for a slot, or reporting.
    fn tasks_held(&self) -> usize {
        self.started.lock().map(|s| s.held).unwrap_or(0)
    }

    /// Waits until no task is held, up to `timeout`; whether none is.
    async fn wait_idle(&self, timeout: Duration) -> bool {
        let idle = async {
            loop {
                let ended = self.drain.task_ended.notified();
                tokio::pin!(ended);
                // Registered before the check, so an end between the check
                // and the wait is not missed.
                ended.as_mut().enable();
                if self.tasks_held() == 0 {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(timeout, idle).await.is_ok()
    }

    /// Tells the leader at once that this worker drains, before the
    /// heartbeats (which say so from now on) would.
    async fn announce_draining(&self) {
        self.drain.announced.store(true, Ordering::Relaxed);
        let announce = async {
            let mut client = connect(self).await?;
            client
                .heartbeat(v1::HeartbeatRequest {
                    worker_id: self.config.id.to_string(),
                    running_tasks: self.running.load(Ordering::Relaxed),
                    draining: true,
                })
                .await
                .map_err(|s| coordinator_error(self, s.message()))?;
            Ok::<_, WorkerError>(())
        };
        match tokio::time::timeout(ANNOUNCE_WAIT, announce).await {
            Ok(Ok(())) => tracing::info!("the coordinator knows this worker is draining"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot tell the coordinator this worker is draining; the next heartbeat says it")
            }
            Err(_) => tracing::warn!(
                "the coordinator did not answer in {ANNOUNCE_WAIT:?}; the next heartbeat says this worker is draining"
            ),
        }
    }

    /// Tasks this worker runs at once.
    pub(crate) fn slots_configured(&self) -> u32 {
        self.config.slots
    }

    /// Tasks running now.
    pub(crate) fn tasks_running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// Coordinator URLs (`WorkerConfig::coordinator` is comma-separated).
    fn urls(&self) -> Vec<&str> {
        self.config
            .coordinator
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The coordinator in use.
    pub(crate) fn url(&self) -> String {
        if let Some((hint, _)) = self.hint().as_ref() {
            return hint.clone();
        }
        let urls = self.urls();
        match urls.len() {
            0 => self.config.coordinator.clone(),
            n => urls[self.current.load(Ordering::Relaxed) % n].to_owned(),
        }
    }

    /// Try the next coordinator (after a failure or a "not the leader"): the
    /// leader just named, if any, else the next configured one.
    fn rotate(&self) {
        let mut hint = self.hint();
        match hint.as_mut() {
            Some((_, fresh)) if *fresh => *fresh = false,
            Some(_) => *hint = None,
            None => {
                self.current.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Remembers the leader a refusal names, if it names one of the
    /// coordinators this worker was configured with: a hint is only a
    /// hint, and following one to any URL would let whoever answers as a
    /// coordinator send the worker (and its module downloads) anywhere.
    pub(crate) fn follow(&self, status: &tonic::Status) {
        let named = status
            .metadata()
            .get(quarry_proto::LEADER_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|url| !url.is_empty());
        let Some(named) = named else {
            return;
        };
        let members = self.members.lock().map(|m| m.clone()).unwrap_or_default();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        let known = known_coordinator(&self.urls(), named)
            .or_else(|| known_coordinator(&members, named))
            .map(str::to_owned);
        match known {
            Some(url) => {
                tracing::info!(leader = %url, "following the coordinator's leader hint");
                *self.hint() = Some((url, true));
            }
            None => tracing::warn!(
                leader = named,
                "ignoring a leader hint that names no coordinator of the group; add it to the worker's coordinator list to follow it"
            ),
        }
    }

    /// Learns the group's members from the coordinator at `channel` (one
    /// this worker trusts: configured, or a member another one listed).
    async fn learn_members(&self, channel: Channel) {
        let mut cluster = ClusterServiceClient::new(channel);
        let status =
            tokio::time::timeout(Duration::from_secs(3), cluster.status(v1::StatusRequest {}))
                .await;
        let Ok(Ok(status)) = status else {
            return;
        };
        let urls: Vec<String> = status
            .into_inner()
            .coordinators
            .into_iter()
            .map(|c| c.url)
            .filter(|url| !url.is_empty())
            .collect();
        if !urls.is_empty()
            && let Ok(mut members) = self.members.lock()
        {
            *members = urls;
        }
    }

    fn hint(&self) -> std::sync::MutexGuard<'_, Option<(String, bool)>> {
        // A poisoned hint is only a hint: keep using it.
        self.leader_hint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Worker {
    /// Opens the shard store, starts the sandbox and the worker's server, and
    /// begins talking to the coordinator in the background.
    pub async fn start(config: WorkerConfig) -> Result<Self, WorkerError> {
        let shard_root = config.data_dir.join("shards");
        let store = Arc::new(
            tokio::task::spawn_blocking(move || ShardStore::open(&shard_root))
                .await
                .map_err(|e| {
                    WorkerError::Runtime(format!("shard store start-up task failed: {e}"))
                })??,
        );
        Self::start_with_store(config, store).await
    }

    /// As [`Worker::start`], with a store opened by the caller (the dev
    /// cluster fills demo shards first).
    pub async fn start_with_store(
        config: WorkerConfig,
        store: Arc<ShardStore>,
    ) -> Result<Self, WorkerError> {
        let tls = match &config.tls {
            Some(files) => {
                let principal = files.principal()?;
                if principal.role != Role::Worker || principal.name != config.id.as_str() {
                    return Err(WorkerError::Security(SecurityError::Identity(format!(
                        "{} names {principal}, but this is worker {}: issue it with `quarry certs issue --role worker --name {}`",
                        files.cert.display(),
                        config.id,
                        config.id
                    ))));
                }
                Some(ServerTls::load(files.clone())?)
            }
            None => {
                quarry_security::listen::check_plaintext(config.listen, "worker's ingest API")?;
                None
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| WorkerError::Serve {
                addr: config.listen.to_string(),
                detail: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| WorkerError::Serve {
            addr: config.listen.to_string(),
            detail: e.to_string(),
        })?;
        let slots = config.slots.max(1);
        let runtime = Runtime::new(
            slots,
            runtime::RuntimeConfig::default(),
            Some(&config.data_dir.join("module-cache")),
        )?;
        let shards_changed = Arc::new(Notify::new());
        let ingest = crate::ingest_service::IngestApi::new(
            store.clone(),
            config.data_dir.join("ingest-spool"),
            shards_changed.clone(),
        );
        let inner = Arc::new(Inner {
            shards_changed,
            current: std::sync::atomic::AtomicUsize::new(0),
            leader_hint: Mutex::new(None),
            intel: crate::intel_fetch::IntelCache::default(),
            baselines: crate::baseline_fetch::BaselineCache::default(),
            rule_packs: crate::rule_pack_fetch::RulePackCache::default(),
            module_loads: Mutex::default(),
            members: Mutex::new(Vec::new()),
            drain: Drain::default(),
            config,
            store: store.clone(),
            runtime,
            slots: Arc::new(Semaphore::new(slots as usize)),
            running: AtomicU32::new(0),
            started: Mutex::new(StartedTasks {
                limit: (slots as usize).saturating_mul(4),
                ..StartedTasks::default()
            }),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let audit = crate::audit::buffer_for(&inner.config.id);
        let mut tasks = vec![
            tokio::spawn(serve(
                listener,
                tls.clone(),
                ingest,
                audit.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(crate::audit::hand_over(
                inner.clone(),
                audit,
                shutdown_rx.clone(),
            )),
            tokio::spawn(session_loop(inner.clone(), addr, shutdown_rx)),
        ];
        if let Some(tls) = &tls {
            tasks.push(tls.spawn_reloader());
        }
        Ok(Self {
            addr,
            shutdown,
            tasks,
            store,
            _gauges: crate::metrics::observe(&inner),
            inner,
        })
    }

    /// The worker's own gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shard store.
    /// Modules this worker loaded (downloaded and compiled, or read from
    /// its compiled-module cache) since it started.
    pub fn modules_loaded(&self) -> u64 {
        self.inner.runtime.modules_loaded()
    }

    pub fn store(&self) -> &Arc<ShardStore> {
        &self.store
    }

    /// Tasks executing now (holding a slot), as heartbeats report them.
    pub fn running_tasks(&self) -> u32 {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// Rule packs fetched from a coordinator since the worker started:
    /// each pack is fetched once and then served from the cache, so this
    /// counts distinct packs (less any evicted and fetched again).
    pub fn rule_packs_fetched(&self) -> u64 {
        self.inner.rule_packs.fetched()
    }

    /// Stops gracefully (SIGTERM): takes no new tasks (the coordinator is
    /// told, and places nothing more here), lets the running ones finish
    /// and report for up to `grace`, then stops those still running and
    /// hands them back to the coordinator, which places them on another
    /// holder of their shard at once (not counted as failed attempts, no
    /// wait for this worker's lease to expire). Tasks waiting for a slot
    /// are handed back at the start. Then stops as [`Worker::shutdown`].
    /// Returns how many attempts the coordinator took back.
    pub async fn shutdown_gracefully(self, grace: Duration) -> u32 {
        let span = tracing::info_span!("drain", worker = %self.inner.config.id);
        let handed_back = tracing::Instrument::instrument(self.drain(grace), span).await;
        self.shutdown().await;
        handed_back
    }

    async fn drain(&self, grace: Duration) -> u32 {
        let inner = &self.inner;
        let running = inner.running.load(Ordering::Relaxed);
        let queued = inner.tasks_held().saturating_sub(running as usize);
        tracing::info!(
            running,
            queued,
            "draining: {running} tasks running, waiting up to {grace:?}"
        );
        inner.announce_draining().await;
        inner.drain.started.send_replace(true);
        if !inner.wait_idle(grace).await {
            inner.drain.handing_back.store(true, Ordering::Relaxed);
            let stopping = inner
                .started
                .lock()
                .map(|s| s.cancel_all())
                .unwrap_or_default();
            tracing::info!(
                tasks = stopping,
                "grace period over: stopping the tasks still running to hand them back"
            );
            if !inner.wait_idle(HAND_BACK_WAIT).await {
                tracing::warn!(
                    tasks = inner.tasks_held(),
                    "tasks still not handed back after {HAND_BACK_WAIT:?}; the coordinator moves them when this worker's lease expires"
                );
            }
        }
        let handed_back = inner.drain.handed_back.load(Ordering::Relaxed);
        tracing::info!(handed_back, "handed back {handed_back} tasks");
        handed_back
    }

    /// Stops talking to the coordinator and serving at once (tasks still
    /// running are left to the coordinator's lease expiry; see
    /// [`Worker::shutdown_gracefully`]).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Each task ends on the signal (the audit hand-over after one last
        // try); a stuck one is cut off.
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    ingest: crate::ingest_service::IngestApi,
    audit: Arc<quarry_security::audit::AuditBuffer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let audit: Arc<dyn quarry_security::audit::AuditSink> = audit;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .build_v1();
    let secure = tls.is_some();
    let mut router = tonic::transport::Server::builder()
        .trace_fn(|request| {
            let span = tracing::info_span!("grpc", path = %request.uri().path());
            // A traced caller's context: this request's spans join its trace.
            quarry_telemetry::set_parent_from_headers(&span, request.headers());
            span
        })
        .layer(AccessLayer::new(secure).with_audit(audit.clone()))
        .add_service(health_service)
        .add_service(
            v1::ingest_service_server::IngestServiceServer::new(ingest)
                .max_decoding_message_size(quarry_proto::MAX_MESSAGE_BYTES),
        );
    match reflection {
        Ok(reflection) => router = router.add_service(reflection),
        Err(e) => tracing::warn!(error = %e, "serving without reflection"),
    }
    let incoming = quarry_security::listen::incoming(listener, tls, Some(audit));
    if let Err(e) = router
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
    {
        tracing::error!(error = %e, "worker gRPC server failed");
    }
}

/// Register, then follow the task stream; on any failure start over after a
/// backoff, so a coordinator restart costs a reconnect, not the worker.
async fn session_loop(inner: Arc<Inner>, addr: SocketAddr, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = run_session(inner.clone(), addr);
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            result = session => match result {
                Ok(Session::ShardsChanged) => {
                    tracing::info!(worker = %inner.config.id, "shards changed; registering again");
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(Session::Ended) => tracing::info!(worker = %inner.config.id, "task stream ended; reconnecting"),
                Err(e) => {
                    tracing::warn!(worker = %inner.config.id, error = %e, "coordinator session failed; retrying in {backoff:?}");
                    // Another coordinator may be (or know) the leader.
                    inner.rotate();
                }
            },
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Why a coordinator session ended without an error.
enum Session {
    /// The coordinator closed the task stream.
    Ended,
    /// Shards were ingested; register again so the coordinator sees them.
    ShardsChanged,
}

/// The configured coordinator URL that `hint` names, if any (compared
/// without case and trailing slashes).
fn known_coordinator<'a>(configured: &[&'a str], hint: &str) -> Option<&'a str> {
    let normal = |url: &str| url.trim().trim_end_matches('/').to_ascii_lowercase();
    let hint = normal(hint);
    configured.iter().copied().find(|url| normal(url) == hint)
}

/// Largest module a worker downloads; more is refused as it streams in.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// A module being downloaded: bounded in size as it arrives, and kept only
/// if its bytes have the digest it was asked for.
struct ModuleDownload<'a> {
    digest: &'a ModuleDigest,
    bytes: Vec<u8>,
    limit: usize,
}

impl<'a> ModuleDownload<'a> {
    fn new(digest: &'a ModuleDigest, limit: usize) -> Result<Self, WorkerError> {
        if !digest.is_well_formed() {
            return Err(WorkerError::ModuleDownload {
                digest: digest.clone(),
                detail: "not a sha256 digest (64 lowercase hex digits)".into(),
            });
        }
        Ok(Self {
            digest,
            bytes: Vec::new(),
            limit,
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), WorkerError> {
        if self.bytes.len().saturating_add(chunk.len()) > self.limit {
            return Err(WorkerError::ModuleDownload {
                digest: self.digest.clone(),
                detail: format!(
                    "larger than {} bytes, the most a worker accepts",
                    self.limit
                ),
            });
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, WorkerError> {
        let actual = runtime::module_digest(&self.bytes);
        if actual != *self.digest {
            return Err(WorkerError::ModuleDownload {
                digest: self.digest.clone(),
                detail: format!(
                    "the {} bytes received have sha256 {actual}; the coordinator sent other bytes than the module asked for",
                    self.bytes.len()
                ),
            });
        }
        Ok(self.bytes)
    }
}

fn coordinator_error(inner: &Inner, detail: impl std::fmt::Display) -> WorkerError {
    WorkerError::Coordinator {
        url: inner.url(),
        detail: detail.to_string(),
    }
}

async fn connect(inner: &Inner) -> Result<WorkerServiceClient<Channel>, WorkerError> {
    Ok(worker_client(connect_channel(inner).await?))
}

pub(crate) async fn connect_channel(inner: &Inner) -> Result<Channel, WorkerError> {
    quarry_security::tls::endpoint(&inner.url(), inner.config.tls.as_ref())
        .map_err(|e| coordinator_error(inner, e))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| coordinator_error(inner, format!("cannot connect: {e}")))
}

fn worker_client(channel: Channel) -> WorkerServiceClient<Channel> {
    WorkerServiceClient::new(channel)
        .max_decoding_message_size(quarry_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(quarry_proto::MAX_MESSAGE_BYTES)
}

fn shard_infos(store: &ShardStore) -> Vec<v1::ShardInfo> {
    store
        .list()
        .into_iter()
        .map(|meta| v1::ShardInfo {
            size_bytes: store.size_bytes(&meta.name),
            name: meta.name,
            labels: meta.labels.into_iter().collect(),
            event_count: meta.event_count,
            time_range: Some(v1::TimeRange {
                start_ms: meta.min_ts_ms.unwrap_or(0),
                end_ms: meta.max_ts_ms.unwrap_or(0),
            }),
            worker_ids: Vec::new(),
            field_counts: meta.fields.into_iter().collect(),
        })
        .collect()
}

async fn run_session(inner: Arc<Inner>, addr: SocketAddr) -> Result<Session, WorkerError> {
    let channel = connect_channel(&inner).await?;
    inner.learn_members(channel.clone()).await;
    let mut client = worker_client(channel);
    let id = inner.config.id.to_string();
    let registered = client
        .register_worker(v1::RegisterWorkerRequest {
            worker_id: id.clone(),
            address: addr.to_string(),
            shards: shard_infos(&inner.store),
            slots: inner.config.slots.max(1),
        })
        .await
        .map_err(|s| {
            inner.follow(&s);
            coordinator_error(&inner, format!("registration refused: {}", s.message()))
        })?
        .into_inner();
    let interval = Duration::from_millis(registered.heartbeat_interval_ms.clamp(100, 60_000));
    let mut stream = client
        .task_stream(v1::TaskStreamRequest {
            worker_id: id.clone(),
        })
        .await
        .map_err(|s| {
            inner.follow(&s);
            coordinator_error(&inner, format!("task stream refused: {}", s.message()))
        })?
        .into_inner();
    tracing::info!(worker = %id, shards = inner.store.list().len(), "registered with the coordinator");

    let heartbeat = {
        let mut client = client.clone();
        let inner = inner.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let request = v1::HeartbeatRequest {
                    worker_id: inner.config.id.to_string(),
                    running_tasks: inner.running.load(Ordering::Relaxed),
                    draining: inner.drain.announced.load(Ordering::Relaxed),
                };
                if let Err(status) = client.heartbeat(request).await {
                    tracing::warn!(error = %status.message(), "heartbeat failed");
                }
            }
        })
    };
    let result = async {
        loop {
            let command = tokio::select! {
                command = stream.next() => command,
                () = inner.shards_changed.notified() => return Ok(Session::ShardsChanged),
            };
            let Some(command) = command else {
                return Ok(Session::Ended);
            };
            let command = command.map_err(|s| {
                // A coordinator that lost the leadership ends the stream
                // naming the new leader.
                inner.follow(&s);
                coordinator_error(&inner, format!("task stream broke: {}", s.message()))
            })?;
            match command.command {
                Some(v1::task_command::Command::Run(assignment)) => {
                    start_task(&inner, &client, assignment)
                }
                Some(v1::task_command::Command::CancelTaskId(task)) => {
                    cancel_task(&inner, &task, None)
                }
                Some(v1::task_command::Command::Cancel(c)) => {
                    cancel_task(&inner, &c.task_id, Some(c.attempt))
                }
                None => {}
            }
        }
    }
    .await;
    heartbeat.abort();
    result
}

/// Finished tasks remembered (so that a re-sent assignment of an attempt
/// already run is ignored); older ones are forgotten, or the map would grow
/// with every task the worker ever ran.
const MAX_FINISHED_REMEMBERED: usize = 10_000;

/// Tasks a worker holds at once, running or waiting for a slot, at least:
/// the bound is four times the worker's slots when that is more. The
/// coordinator assigns at most a worker's slots, so only a misbehaving
/// coordinator reaches it; past it further assignments are refused (they
/// are sent again when the worker reconnects), so a flood of assignments
/// cannot grow the worker's memory.
const MAX_TASKS_HELD: usize = 1024;

/// The tasks this worker started: each task's latest attempt and its cancel
/// flag, for running tasks and the most recently finished ones.
#[derive(Default)]
struct StartedTasks {
    tasks: HashMap<String, (u32, Arc<AtomicBool>)>,
    /// Finished (task, attempt), oldest first.
    finished: std::collections::VecDeque<(String, u32)>,
    /// Started and not yet finished (running or waiting for a slot).
    held: usize,
    /// Most tasks held; 0 means [`MAX_TASKS_HELD`].
    limit: usize,
}

impl StartedTasks {
    fn get(&self, task: &str) -> Option<&(u32, Arc<AtomicBool>)> {
        self.tasks.get(task)
    }

    /// Records `attempt` of `task` as started and returns its cancel flag;
    /// `None` when this or a later attempt was started already, or when the
    /// worker already holds [`MAX_TASKS_HELD`] tasks.
    fn start(&mut self, task: &str, attempt: u32) -> Option<Arc<AtomicBool>> {
        if self
            .tasks
            .get(task)
            .is_some_and(|(started, _)| *started >= attempt)
        {
            return None;
        }
        let limit = self.limit.max(MAX_TASKS_HELD);
        if self.held >= limit {
            tracing::warn!(
                task,
                attempt,
                held = self.held,
                "refusing a task assignment: this worker already holds {limit} tasks \
                 (running or waiting for a slot), more than its slots allow; it is sent again when the worker reconnects"
            );
            return None;
        }
        self.held += 1;
        let cancel = Arc::new(AtomicBool::new(false));
        self.tasks
            .insert(task.to_owned(), (attempt, cancel.clone()));
        Some(cancel)
    }

    /// Sets the cancel flag of every task held; returns how many are held.
    fn cancel_all(&self) -> usize {
        for (_, cancel) in self.tasks.values() {
            cancel.store(true, Ordering::Relaxed);
        }
        self.held
    }

    /// Records `attempt` of `task` as finished, forgetting the oldest
    /// finished ones past [`MAX_FINISHED_REMEMBERED`] (not a later attempt
    /// that may be running).
    fn finish(&mut self, task: &str, attempt: u32) {
        self.held = self.held.saturating_sub(1);
        self.finished.push_back((task.to_owned(), attempt));
        while self.finished.len() > MAX_FINISHED_REMEMBERED {
            let Some((old, old_attempt)) = self.finished.pop_front() else {
                break;
            };
            if self
                .tasks
                .get(&old)
                .is_some_and(|(latest, _)| *latest == old_attempt)
            {
                self.tasks.remove(&old);
            }
        }
    }
}

/// Sets the cancel flag of `task` (of that attempt only, when given: a later
/// attempt of the same task on this worker goes on). The guest stops at its
/// next epoch check (see the runtime).
fn cancel_task(inner: &Inner, task: &str, attempt: Option<u32>) {
    if let Ok(started) = inner.started.lock()
        && let Some((running, cancel)) = started.get(task)
        && attempt.is_none_or(|a| a == *running)
    {
        tracing::info!(task, attempt = running, "cancelling task");
        cancel.store(true, Ordering::Relaxed);
    }
}

fn start_task(
    inner: &Arc<Inner>,
    client: &WorkerServiceClient<Channel>,
    assignment: v1::TaskAssignment,
) {
    let cancel = {
        let Ok(mut started) = inner.started.lock() else {
            return;
        };
        match started.start(&assignment.task_id, assignment.attempt) {
            Some(cancel) => cancel,
            None => return, // already running or reported
        }
    };
    let inner = inner.clone();
    let client = client.clone();
    let span = tracing::info_span!(
        "task",
        hunt = %assignment.hunt_id,
        task = %assignment.task_id,
        attempt = assignment.attempt,
        shard = %assignment.shard,
        module = %assignment.module_digest,
    );
    // The hunt's trace (its submission's context, carried by the assignment).
    quarry_telemetry::set_parent_from_traceparent(&span, &assignment.traceparent);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            run_and_report(&inner, client, &assignment, cancel).await;
            if let Ok(mut started) = inner.started.lock() {
                started.finish(&assignment.task_id, assignment.attempt);
            }
            inner.drain.task_ended.notify_waiters();
        },
        span,
    ));
}

async fn run_and_report(
    inner: &Arc<Inner>,
    client: WorkerServiceClient<Channel>,
    assignment: &v1::TaskAssignment,
    cancel: Arc<AtomicBool>,
) {
    // A draining worker starts nothing new: a task waiting for a slot, or
    // assigned while the leader did not know yet, goes back at once.
    let mut draining = inner.drain.started.subscribe();
    let permit = tokio::select! {
        permit = inner.slots.clone().acquire_owned() => Some(permit),
        // (The watch's guard must not live across an await.)
        _ = async { draining.wait_for(|d| *d).await.map(|_| ()) } => None,
    };
    let Some(Ok(_permit)) = permit else {
        if permit.is_none() {
            hand_back(inner, client, assignment).await;
        }
        return;
    };
    if *inner.drain.started.borrow() {
        hand_back(inner, client, assignment).await;
        return;
    }
    if cancel.load(Ordering::Relaxed) {
        tracing::info!("task cancelled before it started");
        return;
    }
    inner.running.fetch_add(1, Ordering::Relaxed);
    let outcome = run_task(inner, client.clone(), assignment, cancel).await;
    inner.running.fetch_sub(1, Ordering::Relaxed);
    if matches!(outcome, Err(WorkerError::Cancelled))
        && inner.drain.handing_back.load(Ordering::Relaxed)
    {
        // Stopped because the grace period ended, not because the hunt
        // was cancelled: another worker runs it.
        hand_back(inner, client, assignment).await;
        return;
    }
    report(inner, client, assignment, outcome).await;
}

/// Gives an attempt back to the coordinator unfinished (the worker is
/// shutting down): it is placed again elsewhere at once, not counted as
/// failed.
async fn hand_back(
    inner: &Arc<Inner>,
    client: WorkerServiceClient<Channel>,
    assignment: &v1::TaskAssignment,
) {
    let request = v1::ReportTaskRequest {
        worker_id: inner.config.id.to_string(),
        task_id: assignment.task_id.clone(),
        attempt: assignment.attempt,
        outcome: v1::TaskOutcome::HandedBack as i32,
        ..Default::default()
    };
    let sent = tracing::Instrument::instrument(
        send_report(inner, client, request),
        tracing::info_span!("hand back"),
    )
    .await;
    if sent {
        tracing::info!("task handed back to the coordinator");
        inner.drain.handed_back.fetch_add(1, Ordering::Relaxed);
    }
}

async fn module_for(
    inner: &Arc<Inner>,
    client: WorkerServiceClient<Channel>,
    digest: &ModuleDigest,
) -> Result<Arc<LoadedModule>, WorkerError> {
    if let Some(module) = inner.runtime.cached(digest) {
        return Ok(module);
    }
    let gate = match inner.module_loads.lock() {
        Ok(mut loads) => loads.entry(digest.clone()).or_default().clone(),
        Err(_) => Arc::default(),
    };
    let _loading = gate.lock().await;
    // Loaded by the task this one waited for (a failed load is tried again).
    if let Some(module) = inner.runtime.cached(digest) {
        return Ok(module);
    }
    let loaded = download_and_load(inner, client, digest).await;
    if let Ok(mut loads) = inner.module_loads.lock() {
        loads.remove(digest);
    }
    loaded
}

async fn download_and_load(
    inner: &Arc<Inner>,
    mut client: WorkerServiceClient<Channel>,
    digest: &ModuleDigest,
) -> Result<Arc<LoadedModule>, WorkerError> {
    let mut download = ModuleDownload::new(digest, MAX_MODULE_BYTES)?;
    let mut stream = client
        .fetch_module(v1::FetchModuleRequest {
            digest: digest.to_string(),
        })
        .await
        .map_err(|s| {
            coordinator_error(
                inner,
                format!("cannot fetch module {digest}: {}", s.message()),
            )
        })?
        .into_inner();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| {
            coordinator_error(
                inner,
                format!("module {digest} download broke: {}", s.message()),
            )
        })?;
        download.push(&chunk.data)?;
    }
    let bytes = download.finish()?;
    let inner = inner.clone();
    let digest = digest.clone();
    tokio::task::spawn_blocking(move || inner.runtime.load(&digest, &bytes))
        .await
        .map_err(|e| WorkerError::Runtime(format!("module compile task failed: {e}")))?
}

/// Refuses a module the cluster's signing policy does not let run: a
/// signature that does not verify (always), or no valid signature from a
/// trusted key while the cluster requires one. The digest is what the
/// worker runs: downloads are checked against it.
fn check_signature(
    digest: &ModuleDigest,
    assignment: &v1::TaskAssignment,
) -> Result<(), WorkerError> {
    let refuse = |detail: String| {
        Err(WorkerError::InvalidModule {
            digest: digest.clone(),
            detail,
        })
    };
    let Some(signed) = &assignment.signature else {
        if assignment.require_signed {
            return refuse(
                "the cluster runs signed modules only and this module is unsigned; upload a version signed with `quarry module sign`".to_owned(),
            );
        }
        return Ok(());
    };
    if signed.public_key.is_empty() {
        if assignment.require_signed {
            return refuse(format!(
                "it was signed with key {}, which the cluster no longer trusts, and the cluster runs signed modules only",
                signed.key
            ));
        }
        return Ok(());
    }
    if !quarry_security::module_sign::verify(&signed.public_key, digest.as_str(), &signed.signature)
    {
        return refuse(format!(
            "its signature does not verify with trusted key {}; the module or its signature was altered",
            signed.key
        ));
    }
    Ok(())
}

async fn run_task(
    inner: &Arc<Inner>,
    client: WorkerServiceClient<Channel>,
    assignment: &v1::TaskAssignment,
    cancel: Arc<AtomicBool>,
) -> Result<TaskOutput, WorkerError> {
    let digest = ModuleDigest::new(assignment.module_digest.clone());
    check_signature(&digest, assignment)?;
    let intel = crate::intel_fetch::resolve(inner, client.clone(), &assignment.params).await?;
    // Before the module plans or initialises: it reads its rules from the
    // parameters.
    let rules = crate::rule_pack_fetch::resolve(inner, client.clone(), &assignment.params).await?;
    let module = module_for(inner, client.clone(), &digest).await?;
    let baseline = if !assignment.schedule_id.is_empty() && module.uses_history() {
        Some(crate::baseline_fetch::resolve(inner, client, &assignment.hunt_id).await?)
    } else {
        None
    };
    let incremental = runtime::Incremental {
        from_offset: assignment.from_offset,
        baseline,
    };
    let limits = assignment.limits.unwrap_or_default();
    let limits = TaskLimits {
        cpu: Duration::from_millis(limits.cpu_ms.max(1)),
        memory_bytes: limits.memory_bytes.max(1024 * 1024),
        max_findings: limits.max_findings_per_task.max(1) as usize,
        // 0 = no cap from the hunt: the worker's maximum applies (clamped in the runtime).
        max_output_bytes: if limits.max_output_bytes == 0 {
            u64::MAX
        } else {
            limits.max_output_bytes
        },
    };
    let mut params: Vec<(String, String)> = assignment
        .params
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(crate::intel_fetch::REF_PREFIX)
                && !k.starts_with(quarry_proto::rule_pack::REF_PREFIX)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(intel)
        .chain(rules)
        .collect();
    params.sort();
    let range = assignment.time_range.unwrap_or_default();
    let time_range = if range.start_ms == 0 && range.end_ms == 0 {
        None
    } else {
        Some((
            if range.start_ms == 0 {
                i64::MIN
            } else {
                range.start_ms
            },
            if range.end_ms == 0 {
                i64::MAX
            } else {
                range.end_ms
            },
        ))
    };
    let inner = inner.clone();
    let shard = assignment.shard.clone();
    let hunt_id = quarry_proto::HuntId::new(assignment.hunt_id.clone());
    let span = tracing::info_span!("module.run", module = %digest);
    tokio::task::spawn_blocking(move || {
        let _run = span.enter();
        let task = runtime::TaskInput {
            params: &params,
            limits,
            shard: &shard,
            time_range,
            hunt: Some(&hunt_id),
        };
        inner
            .runtime
            .run_task(&module, &task, &incremental, &inner.store, &cancel)
    })
    .await
    .map_err(|e| WorkerError::Runtime(format!("task thread failed: {e}")))?
}

async fn report(
    inner: &Arc<Inner>,
    client: WorkerServiceClient<Channel>,
    assignment: &v1::TaskAssignment,
    outcome: Result<TaskOutput, WorkerError>,
) {
    let mut request = v1::ReportTaskRequest {
        worker_id: inner.config.id.to_string(),
        task_id: assignment.task_id.clone(),
        attempt: assignment.attempt,
        ..Default::default()
    };
    match outcome {
        Ok(output) => {
            tracing::info!(
                findings = output.findings.len(),
                scanned = output.events_scanned,
                matched = output.events_matched,
                "task succeeded"
            );
            request.outcome = v1::TaskOutcome::Succeeded as i32;
            request.events_scanned = output.events_scanned;
            request.events_matched = output.events_matched;
            request.end_offset = output.end_offset;
            request.findings_truncated = output.findings_truncated;
            request.log = output.log;
            request.findings = output.findings.into_iter().map(finding).collect();
            request.aggregates = output
                .aggregates
                .iter()
                .map(quarry_proto::aggregate::to_proto)
                .collect();
        }
        Err(WorkerError::Cancelled) => {
            tracing::info!("task cancelled");
            return; // the hunt is cancelled; nothing to report
        }
        Err(e) => {
            tracing::warn!(error = %e, "task failed");
            request.outcome = v1::TaskOutcome::Failed as i32;
            request.error = e.to_string();
            // `Task` carries the sandbox's named failures (deadline, memory,
            // trap, output limit, module error): the module's fault.
            request.failure_kind = match e {
                WorkerError::Task(_)
                | WorkerError::InvalidModule { .. }
                | WorkerError::RulePack { .. } => v1::FailureKind::Module as i32,
                _ => v1::FailureKind::Host as i32,
            };
        }
    }
    tracing::Instrument::instrument(
        send_report(inner, client, request),
        tracing::info_span!("report"),
    )
    .await;
}

/// Sends a task report, following the leader; whether it was taken.
async fn send_report(
    inner: &Arc<Inner>,
    mut client: WorkerServiceClient<Channel>,
    request: v1::ReportTaskRequest,
) -> bool {
    // The coordinator dedupes by (task, attempt), so retrying is safe.
    let mut backoff = Duration::from_millis(200);
    for _ in 0..8 {
        // The report joins the task's trace.
        let mut traced = tonic::Request::new(request.clone());
        quarry_telemetry::inject(traced.metadata_mut());
        match client.report_task(traced).await {
            Ok(_) => return true,
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                // The same report would be refused again (a coordinator
                // older than a hand-back, say): stop here.
                tracing::warn!(error = %status.message(), "the coordinator refused the report");
                return false;
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "report failed; retrying in {backoff:?}");
                inner.follow(&status);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                // The leader may have moved: try the one named, else the next.
                inner.rotate();
                if let Ok(fresh) = connect(inner).await {
                    client = fresh;
                }
            }
        }
    }
    tracing::error!("giving up on reporting the task; the coordinator will reassign it");
    false
}

/// A module's finding as the worker reports it to the coordinator (also
/// what `quarry module test` prints, so local and cluster runs compare).
pub fn finding(f: runtime::types::Finding) -> v1::Finding {
    v1::Finding {
        rule: f.rule,
        title: f.title,
        severity: runtime::severity_value(f.severity),
        confidence: u32::from(f.confidence.min(100)),
        entity: f.entity,
        timestamp_ms: f.timestamp_ms,
        evidence: f
            .evidence
            .into_iter()
            .map(|(key, value)| v1::Evidence { key, value })
            .collect(),
        techniques: f.techniques,
        tags: f.tags,
        offsets: f.offsets,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x0d\0\x01\0 pretend module bytes";

    #[test]
    fn a_download_whose_bytes_do_not_match_the_digest_is_refused() {
        let digest = runtime::module_digest(MODULE);
        let mut download = ModuleDownload::new(&digest, MAX_MODULE_BYTES).expect("well formed");
        download.push(&MODULE[..4]).expect("small");
        download.push(&MODULE[4..]).expect("small");
        assert_eq!(download.finish().expect("the same bytes"), MODULE);

        let mut download = ModuleDownload::new(&digest, MAX_MODULE_BYTES).expect("well formed");
        download.push(b"other bytes").expect("small");
        let error = download.finish().expect_err("other bytes");
        assert!(
            matches!(error, WorkerError::ModuleDownload { .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains(&digest.to_string()) && text.contains("sha256"),
            "{text}"
        );
    }

    #[test]
    fn a_download_larger_than_the_limit_is_refused_as_it_arrives() {
        let digest = runtime::module_digest(MODULE);
        let mut download = ModuleDownload::new(&digest, 16).expect("well formed");
        download.push(&[0; 10]).expect("under the limit");
        let error = download.push(&[0; 10]).expect_err("over the limit");
        assert!(
            error.to_string().contains("larger than 16 bytes"),
            "{error}"
        );
    }

    #[test]
    fn a_malformed_digest_is_not_downloaded() {
        for digest in ["", "../../etc/passwd", &"A".repeat(64)] {
            let digest = ModuleDigest::new(digest.to_owned());
            assert!(
                ModuleDownload::new(&digest, MAX_MODULE_BYTES).is_err(),
                "{digest}"
            );
        }
    }

    #[test]
    fn finished_tasks_are_remembered_up_to_a_bound() {
        let mut started = StartedTasks::default();
        assert!(started.start("t0", 1).is_some());
        assert!(
            started.start("t0", 1).is_none(),
            "a re-sent attempt is ignored"
        );
        started.finish("t0", 1);
        assert!(started.start("t0", 1).is_none(), "also once finished");
        // A later attempt starts, and forgetting the finished first attempt
        // does not forget it.
        assert!(started.start("t0", 2).is_some());
        for i in 1..=MAX_FINISHED_REMEMBERED + 1 {
            let task = format!("t{i}");
            assert!(started.start(&task, 1).is_some());
            started.finish(&task, 1);
        }
        assert!(started.tasks.len() <= MAX_FINISHED_REMEMBERED + 1);
        assert_eq!(started.get("t0").map(|(attempt, _)| *attempt), Some(2));
        assert!(
            started.get("t1").is_none(),
            "the oldest finished is forgotten"
        );
        assert!(
            started
                .get(&format!("t{MAX_FINISHED_REMEMBERED}"))
                .is_some()
        );
    }

    #[test]
    fn a_flood_of_assignments_is_refused_past_a_bound() {
        let mut started = StartedTasks::default();
        for i in 0..MAX_TASKS_HELD {
            assert!(started.start(&format!("t{i}"), 1).is_some(), "task {i}");
        }
        assert!(
            started.start("one-too-many", 1).is_none(),
            "refused while {MAX_TASKS_HELD} tasks are held"
        );
        assert!(started.get("one-too-many").is_none(), "and not remembered");
        started.finish("t0", 1);
        assert!(started.start("one-too-many", 1).is_some(), "room again");
        assert_eq!(started.held, MAX_TASKS_HELD);
    }

    #[test]
    fn leader_hints_are_followed_only_to_configured_coordinators() {
        let configured = ["http://10.0.0.1:7700", "http://10.0.0.2:7700/"];
        assert_eq!(
            known_coordinator(&configured, "http://10.0.0.2:7700"),
            Some("http://10.0.0.2:7700/")
        );
        assert_eq!(
            known_coordinator(&configured, "HTTP://10.0.0.1:7700/"),
            Some("http://10.0.0.1:7700")
        );
        for stranger in [
            "http://evil.example:7700",
            "http://10.0.0.1:7701",
            "https://10.0.0.1:7700",
        ] {
            assert_eq!(known_coordinator(&configured, stranger), None, "{stranger}");
        }
    }
}
