//! A real worker against a fake coordinator that we control: hostile
//! modules end their tasks with a named reason within their deadline plus a
//! grace, the worker keeps heartbeating and then runs a good module, and a
//! coordinator connection that serves the wrong bytes cannot make the worker
//! run them.

use quarry_hunt_modules::test_modules;
use quarry_proto::v1::{self, worker_service_server};
use quarry_worker::runtime::module_digest;
use quarry_worker::shard::ShardStore;
use quarry_worker::{Worker, WorkerConfig};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const SHARD: &str = "win-dc01";
/// How long after its CPU deadline a hostile task's report may take.
const GRACE: Duration = Duration::from_secs(2);

/// A coordinator that registers any worker, sends the tasks the test
/// queues, serves module bytes from a table (right or wrong) and records
/// reports and heartbeats.
struct Fake {
    modules: Mutex<HashMap<String, Vec<u8>>>,
    commands: Mutex<Option<mpsc::Receiver<Result<v1::TaskCommand, Status>>>>,
    reports: mpsc::UnboundedSender<v1::ReportTaskRequest>,
    heartbeats: AtomicU64,
    /// When each heartbeat arrived.
    heartbeat_times: Mutex<Vec<Instant>>,
    registrations: AtomicU64,
    /// Refuse the first registration as "not the leader", naming this URL.
    redirect_to: Mutex<Option<String>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The fake as a gRPC service (shared with the test, which reads its state).
struct FakeService(Arc<Fake>);

impl std::ops::Deref for FakeService {
    type Target = Fake;

    fn deref(&self) -> &Fake {
        &self.0
    }
}

#[tonic::async_trait]
impl worker_service_server::WorkerService for FakeService {
    async fn register_worker(
        &self,
        _: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        self.registrations.fetch_add(1, Ordering::Relaxed);
        let redirect = self
            .redirect_to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(url) = redirect {
            let mut status = Status::failed_precondition("not the leader");
            if let Ok(value) = url.parse() {
                status
                    .metadata_mut()
                    .insert(quarry_proto::LEADER_METADATA_KEY, value);
            }
            return Err(status);
        }
        Ok(Response::new(v1::RegisterWorkerResponse {
            heartbeat_interval_ms: 100,
        }))
    }

    async fn heartbeat(
        &self,
        _: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        self.heartbeat_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        Ok(Response::new(v1::HeartbeatResponse {}))
    }

    type TaskStreamStream = BoxStream<v1::TaskCommand>;

    async fn task_stream(
        &self,
        _: Request<v1::TaskStreamRequest>,
    ) -> Result<Response<Self::TaskStreamStream>, Status> {
        let receiver = self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match receiver {
            Some(receiver) => Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(receiver),
            ))),
            // A later session (the worker registers again after an ingest):
            // a stream that stays open and quiet, so the worker goes on
            // heartbeating instead of retrying with backoff.
            None => Ok(Response::new(Box::pin(tokio_stream::pending()))),
        }
    }

    async fn report_task(
        &self,
        request: Request<v1::ReportTaskRequest>,
    ) -> Result<Response<v1::ReportTaskResponse>, Status> {
        let _ = self.reports.send(request.into_inner());
        Ok(Response::new(v1::ReportTaskResponse {}))
    }

    async fn fetch_baseline(
        &self,
        request: Request<v1::FetchBaselineRequest>,
    ) -> Result<Response<v1::FetchBaselineResponse>, Status> {
        Err(Status::not_found(format!(
            "the fake runs no schedule (hunt {})",
            request.into_inner().hunt_id
        )))
    }

    async fn fetch_intel(
        &self,
        request: Request<v1::FetchIntelRequest>,
    ) -> Result<Response<v1::FetchIntelResponse>, Status> {
        let request = request.into_inner();
        Err(Status::not_found(format!(
            "the fake stores no intel set {}@{}",
            request.name, request.version
        )))
    }

    async fn fetch_rule_pack(
        &self,
        request: Request<v1::FetchRulePackRequest>,
    ) -> Result<Response<v1::FetchRulePackResponse>, Status> {
        let request = request.into_inner();
        Err(Status::not_found(format!(
            "the fake stores no rule pack {}@{}",
            request.name, request.version
        )))
    }

    type FetchModuleStream = BoxStream<v1::ModuleChunk>;

    async fn fetch_module(
        &self,
        request: Request<v1::FetchModuleRequest>,
    ) -> Result<Response<Self::FetchModuleStream>, Status> {
        let digest = request.into_inner().digest;
        let bytes = self
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no module {digest}")))?;
        let chunks: Vec<Result<v1::ModuleChunk, Status>> = bytes
            .chunks(1024 * 1024)
            .map(|chunk| {
                Ok(v1::ModuleChunk {
                    data: chunk.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// A worker connected to a fake coordinator, over a small real shard.
struct Cluster {
    fake: Arc<Fake>,
    commands: mpsc::Sender<Result<v1::TaskCommand, Status>>,
    reports: mpsc::UnboundedReceiver<v1::ReportTaskRequest>,
    worker: Option<Worker>,
    next_task: u32,
    /// What the next assignments say of their module's signature.
    signature: Option<v1::ModuleSignatureCheck>,
    require_signed: bool,
    _dir: tempfile::TempDir,
}

/// A fake coordinator serving on a port of its own, and its URL.
async fn fake_coordinator(redirect_to: Option<String>) -> (Arc<Fake>, String, FakeChannels) {
    let (commands, receiver) = mpsc::channel(16);
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        modules: Mutex::new(HashMap::new()),
        commands: Mutex::new(Some(receiver)),
        reports: reports_tx,
        heartbeats: AtomicU64::new(0),
        heartbeat_times: Mutex::new(Vec::new()),
        registrations: AtomicU64::new(0),
        redirect_to: Mutex::new(redirect_to),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = worker_service_server::WorkerServiceServer::new(FakeService(fake.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (
        fake,
        format!("http://{addr}"),
        FakeChannels { commands, reports },
    )
}

/// The test's ends of a fake coordinator's task stream and reports.
struct FakeChannels {
    commands: mpsc::Sender<Result<v1::TaskCommand, Status>>,
    reports: mpsc::UnboundedReceiver<v1::ReportTaskRequest>,
}

impl Cluster {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A worker whose coordinator first refuses it as "not the leader",
    /// naming `redirect_to`.
    async fn start_with(redirect_to: Option<String>) -> Self {
        let (fake, url, FakeChannels { commands, reports }) = fake_coordinator(redirect_to).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(ShardStore::open(&dir.path().join("shards")).expect("store"));
        let lines: String = (0..20)
            .map(|minute| {
                format!(
                    "{{\"@timestamp\":\"2024-03-01T10:{minute:02}:00.000Z\",\"EventID\":4624,\"Computer\":\"dc01\"}}\n"
                )
            })
            .collect();
        store
            .ingest_jsonl(SHARD, BTreeMap::new(), lines.as_bytes())
            .expect("ingest");
        let worker = Worker::start_with_store(
            WorkerConfig {
                id: quarry_proto::WorkerId::new("w1".to_owned()),
                coordinator: url,
                data_dir: dir.path().to_owned(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                slots: 2,
                tls: None,
            },
            store,
        )
        .await
        .expect("worker starts");
        Cluster {
            fake,
            commands,
            reports,
            worker: Some(worker),
            next_task: 0,
            signature: None,
            require_signed: false,
            _dir: dir,
        }
    }

    /// Runs `digest` with an assignment saying `signature` and
    /// `require_signed`; returns the report.
    async fn run_signed(
        &mut self,
        digest: &str,
        signature: Option<v1::ModuleSignatureCheck>,
        require_signed: bool,
    ) -> v1::ReportTaskRequest {
        self.signature = signature;
        self.require_signed = require_signed;
        self.run(digest, &[], Duration::from_millis(300), COMPILE)
            .await
            .0
    }

    /// Serves `bytes` when the worker asks for `digest`.
    fn serve(&self, digest: &str, bytes: Vec<u8>) {
        self.fake
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_owned(), bytes);
    }

    /// Assigns a task running `digest` with `params` and a CPU deadline of
    /// `cpu`, and waits for its report (at most `cpu` plus [`GRACE`], plus
    /// `compile` for downloading and compiling the module).
    async fn run(
        &mut self,
        digest: &str,
        params: &[(&str, &str)],
        cpu: Duration,
        compile: Duration,
    ) -> (v1::ReportTaskRequest, Duration) {
        self.next_task += 1;
        let task_id = format!("task-{}", self.next_task);
        let assignment = v1::TaskAssignment {
            task_id: task_id.clone(),
            hunt_id: "hunt-1".into(),
            attempt: 1,
            shard: SHARD.into(),
            module_digest: digest.into(),
            params: params
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            time_range: None,
            signature: self.signature.clone(),
            require_signed: self.require_signed,
            from_offset: 0,
            schedule_id: String::new(),
            traceparent: String::new(),
            limits: Some(v1::HuntLimits {
                cpu_ms: cpu.as_millis() as u64,
                memory_bytes: 64 * 1024 * 1024,
                max_findings_per_task: 1000,
                max_output_bytes: 16 * 1024 * 1024,
                ..Default::default()
            }),
        };
        let started = Instant::now();
        self.commands
            .send(Ok(v1::TaskCommand {
                command: Some(v1::task_command::Command::Run(assignment)),
            }))
            .await
            .expect("the worker holds the task stream");
        let limit = cpu + GRACE + compile;
        let report = tokio::time::timeout(limit, async {
            loop {
                let report = self.reports.recv().await.expect("reports");
                if report.task_id == task_id {
                    return report;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no report for {task_id} ({digest}) within {limit:?}"));
        (report, started.elapsed())
    }

    /// Heartbeats arrive while `wait` passes.
    async fn still_heartbeating(&self, wait: Duration) {
        let before = self.fake.heartbeats.load(Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        let after = self.fake.heartbeats.load(Ordering::Relaxed);
        assert!(
            after > before,
            "no heartbeat in {wait:?} ({before} before, {after} after)"
        );
    }

    async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
    }
}

fn digest(module: &quarry_hunt_modules::ShippedModule) -> String {
    module_digest(module.wasm).to_string()
}

/// Compiling a module the first time (no cache yet) is not the task's time.
const COMPILE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_end_by_name_and_the_worker_keeps_serving() {
    let mut cluster = Cluster::start().await;
    for module in [
        &test_modules::SLEEPER,
        &test_modules::POLL_FOREVER,
        &test_modules::NOOP,
    ] {
        cluster.serve(&digest(module), module.wasm.to_vec());
    }
    let cpu = Duration::from_millis(500);
    for (module, params, reason) in [
        (
            &test_modules::SLEEPER,
            &[][..],
            "wasi:clocks/monotonic-clock.subscribe-duration",
        ),
        (
            &test_modules::POLL_FOREVER,
            &[("on", "clock")][..],
            "wasi:clocks/monotonic-clock.subscribe-duration",
        ),
        (
            &test_modules::POLL_FOREVER,
            &[("on", "stdin")][..],
            "deadline exceeded",
        ),
    ] {
        let (report, took) = cluster.run(&digest(module), params, cpu, COMPILE).await;
        eprintln!("{}: reported after {took:?}: {}", module.name, report.error);
        assert_eq!(report.outcome, v1::TaskOutcome::Failed as i32, "{report:?}");
        assert!(
            report.error.contains(reason),
            "{}: {}",
            module.name,
            report.error
        );
        cluster.still_heartbeating(Duration::from_millis(500)).await;
    }
    let (report, _) = cluster
        .run(&digest(&test_modules::NOOP), &[], cpu, COMPILE)
        .await;
    assert_eq!(
        report.outcome,
        v1::TaskOutcome::Succeeded as i32,
        "{report:?}"
    );
    assert_eq!(report.events_scanned, 20);
    cluster.still_heartbeating(Duration::from_millis(500)).await;
    cluster.stop().await;
}

/// The coordinator connection served another module's bytes under noop's
/// digest: the worker compiled and ran them (and cached them under that
/// digest). Now the download is refused, and nothing is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_with_the_wrong_bytes_is_refused() {
    let mut cluster = Cluster::start().await;
    let noop = digest(&test_modules::NOOP);
    cluster.serve(&noop, test_modules::RUNAWAY_LOOP.wasm.to_vec());
    let cpu = Duration::from_millis(300);
    let (report, _) = cluster.run(&noop, &[], cpu, COMPILE).await;
    assert_eq!(report.outcome, v1::TaskOutcome::Failed as i32, "{report:?}");
    assert!(
        report.error.contains("download refused") && report.error.contains("sha256"),
        "{}",
        report.error
    );
    // The right bytes afterwards: the worker did not keep the wrong ones.
    cluster.serve(&noop, test_modules::NOOP.wasm.to_vec());
    let (report, _) = cluster.run(&noop, &[], cpu, COMPILE).await;
    assert_eq!(
        report.outcome,
        v1::TaskOutcome::Succeeded as i32,
        "{report:?}"
    );
    cluster.stop().await;
}

/// The worker checks the module's signature before it fetches or runs
/// anything: a forged one is refused whatever the policy, an unsigned or
/// no-longer-trusted one only where the cluster requires signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_run_only_with_a_valid_signature_where_the_cluster_requires_one() {
    use quarry_security::module_sign;
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, public) = module_sign::keygen(keys.path(), "release").expect("keygen");
    let public =
        module_sign::parse_public_key(&std::fs::read_to_string(public).expect("pub")).expect("hex");
    let mut cluster = Cluster::start().await;
    let noop = digest(&test_modules::NOOP);
    cluster.serve(&noop, test_modules::NOOP.wasm.to_vec());
    let sign = |digest: &str| {
        module_sign::parse_signature(&module_sign::sign(&key, digest).expect("sign")).expect("hex")
    };
    let check = |signature: Vec<u8>, public_key: Vec<u8>| v1::ModuleSignatureCheck {
        key: "release".into(),
        public_key,
        signature,
    };
    let ok = v1::TaskOutcome::Succeeded as i32;
    let failed = v1::TaskOutcome::Failed as i32;

    // Unsigned: runs unless signatures are required.
    assert_eq!(cluster.run_signed(&noop, None, false).await.outcome, ok);
    let refused = cluster.run_signed(&noop, None, true).await;
    assert_eq!(refused.outcome, failed);
    assert!(
        refused.error.contains("signed modules only"),
        "{}",
        refused.error
    );
    // Signed by a trusted key: runs under the policy.
    let valid = check(sign(&noop), public.clone());
    assert_eq!(
        cluster.run_signed(&noop, Some(valid), true).await.outcome,
        ok
    );
    // A signature of another module: refused even without the policy.
    let forged = check(sign(&"ab".repeat(32)), public.clone());
    let refused = cluster.run_signed(&noop, Some(forged), false).await;
    assert_eq!(refused.outcome, failed);
    assert!(
        refused.error.contains("does not verify"),
        "{}",
        refused.error
    );
    // Signed with a key the cluster stopped trusting.
    let untrusted = check(sign(&noop), Vec::new());
    let refused = cluster
        .run_signed(&noop, Some(untrusted.clone()), true)
        .await;
    assert!(
        refused.error.contains("no longer trusts"),
        "{}",
        refused.error
    );
    assert_eq!(
        cluster
            .run_signed(&noop, Some(untrusted), false)
            .await
            .outcome,
        ok
    );
    cluster.stop().await;
}

/// A download is bounded while it streams in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_download_is_refused() {
    let mut cluster = Cluster::start().await;
    let huge = vec![0u8; quarry_worker::agent::MAX_MODULE_BYTES + 1];
    let claimed = module_digest(&huge).to_string();
    cluster.serve(&claimed, huge);
    let (report, _) = cluster
        .run(&claimed, &[], Duration::from_millis(300), COMPILE)
        .await;
    assert_eq!(report.outcome, v1::TaskOutcome::Failed as i32, "{report:?}");
    assert!(
        report.error.contains("download refused") && report.error.contains("larger than"),
        "{}",
        report.error
    );
    cluster.stop().await;
}

/// A "not the leader" refusal named a coordinator this worker was not
/// configured with: the worker used to follow it to any URL. It stays with
/// its configured coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hint_to_an_unknown_coordinator_is_not_followed() {
    let (rogue, rogue_url, _rogue_channels) = fake_coordinator(None).await;
    let mut cluster = Cluster::start_with(Some(rogue_url)).await;
    cluster.serve(
        &digest(&test_modules::NOOP),
        test_modules::NOOP.wasm.to_vec(),
    );
    let (report, _) = cluster
        .run(
            &digest(&test_modules::NOOP),
            &[],
            Duration::from_millis(300),
            COMPILE,
        )
        .await;
    assert_eq!(
        report.outcome,
        v1::TaskOutcome::Succeeded as i32,
        "{report:?}"
    );
    assert!(cluster.fake.registrations.load(Ordering::Relaxed) >= 2);
    assert_eq!(
        rogue.registrations.load(Ordering::Relaxed),
        0,
        "the worker registered with the coordinator a refusal named"
    );
    cluster.stop().await;
}

/// The longest gap between heartbeats that arrived in `from..to`.
fn longest_heartbeat_gap(fake: &Fake, from: Instant, to: Instant) -> Duration {
    let times = fake
        .heartbeat_times
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for t in times.into_iter().filter(|t| *t > from && *t <= to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(to - last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_ingests_are_bounded_and_heartbeats_keep_their_interval() {
    let cluster = Cluster::start().await;
    cluster.still_heartbeating(Duration::from_secs(2)).await;
    let url = format!("http://{}", cluster.worker.as_ref().expect("worker").addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("big.jsonl");
    let line = format!(
        "{{\"@timestamp\":\"2024-03-01T10:00:00.000Z\",\"EventID\":4624,\"Computer\":\"dc01\",\"pad\":\"{}\"}}\n",
        "p".repeat(200)
    );
    std::fs::write(&input, line.repeat(16 * 1024 * 1024 / line.len())).expect("input");
    let started = Instant::now();
    let uploads: Vec<_> = (0..5)
        .map(|i| {
            let (url, input) = (url.clone(), input.clone());
            tokio::spawn(async move {
                quarry_client::ingest_file(&url, &format!("big-{i}"), HashMap::new(), None, &input)
                    .await
            })
        })
        .collect();
    let (mut stored, mut refused) = (0, Vec::new());
    for upload in uploads {
        match upload.await.expect("upload task") {
            Ok(response) => {
                assert!(response.events_stored > 0);
                stored += 1;
            }
            Err(quarry_client::ClientError::Status(status)) => refused.push(status),
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
    let gap = longest_heartbeat_gap(&cluster.fake, started, Instant::now());
    eprintln!(
        "{stored} ingests stored, {} refused; longest heartbeat gap {gap:?}",
        refused.len()
    );
    assert!(stored >= 1, "some ingests ran ({} refused)", refused.len());
    assert!(
        !refused.is_empty(),
        "5 simultaneous 16 MiB ingests all ran at once; they must be bounded"
    );
    for status in &refused {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("retry"), "{}", status.message());
    }
    // Twenty intervals: room for a loaded test machine and for the
    // re-registration after each ingest, far below the seconds a 16 MiB
    // append takes if it ran on the runtime's threads.
    assert!(
        gap < Duration::from_secs(2),
        "heartbeats (every 100 ms) paused for {gap:?} during the ingests"
    );
    cluster.stop().await;
}
