//! A coordinator on mutual TLS, attacked the ways an unauthenticated
//! listener allowed: every RPC refused to callers without a certificate or
//! with the wrong role (state unchanged), a worker certificate from another
//! CA, a worker acting as another, a report for another worker's task, a
//! client adding a coordinator, a forged raft message; each refusal is in
//! the replicated audit trail. Real gRPC over loopback TLS, certificates
//! made by `quarry_security::certs`.

mod common;

use protobuf::Message as _;
use quarry_coordinator::Coordinator;
use quarry_coordinator::state::{Assignment, Command, Scope, ShardDescription};
use quarry_proto::{ShardId, TaskId, WorkerId, v1};
use quarry_security::access::{Access, RULES};
use quarry_security::{Principal, Role, TlsFiles, certs};
use std::path::Path;
use tonic::transport::Channel;

/// A CA in `dir` and certificates for the principals the tests use.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        certs::init_ca(dir, "Test CA", 2).expect("CA");
        Self {
            dir: dir.to_owned(),
        }
    }

    fn files(&self, role: Role, name: &str) -> TlsFiles {
        let principal = Principal::new(role, name).expect("principal");
        let issued = certs::issued_paths(&self.dir, &principal);
        if !issued.cert.exists() {
            certs::issue(&self.dir, &principal, &["127.0.0.1".into()], 2, &self.dir)
                .expect("issue");
        }
        TlsFiles {
            ca: self.dir.join(certs::CA_CERT),
            cert: issued.cert,
            key: issued.key,
        }
    }
}

/// A TLS channel to `url` trusting `ca`, presenting `files`' certificate
/// (or none).
async fn channel(url: &str, ca: &Path, identity: Option<&TlsFiles>) -> Result<Channel, String> {
    let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(ca).expect("ca")),
    );
    if let Some(files) = identity {
        config = config.identity(tonic::transport::Identity::from_pem(
            std::fs::read(&files.cert).expect("cert"),
            std::fs::read(&files.key).expect("key"),
        ));
    }
    let endpoint = Channel::from_shared(url.to_owned())
        .expect("url")
        .tls_config(config)
        .expect("tls");
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// Calls `path` with an empty message: enough for the access check, which
/// runs before anything is decoded.
async fn call(channel: Channel, path: &str) -> tonic::Status {
    call_with(channel, path, None).await
}

/// [`call`], sending `token` as a bearer token.
async fn call_with(channel: Channel, path: &str, token: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = path.parse().expect("path");
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    match grpc.unary(request, path, codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

fn state_of(coordinator: &Coordinator) -> (u64, quarry_coordinator::state::State) {
    coordinator
        .node()
        .read(|replica| (replica.applied_index, replica.state.clone()))
        .expect("read")
}

/// The replicated state but for the audit trail, which refusals add to.
fn state_but_audit(coordinator: &Coordinator) -> quarry_coordinator::state::State {
    let (_, mut state) = state_of(coordinator);
    state.audit = Default::default();
    state
}

/// Waits until the audit trail holds a record of each `(principal, rpc,
/// outcome)` in `expected` (nodes hand records to the leader every
/// second); panics naming those still missing after 15 s.
async fn wait_for_audit(coordinator: &Coordinator, expected: &[(String, String, &str)]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let trail = state_of(coordinator).1.audit;
        let missing: Vec<_> = expected
            .iter()
            .filter(|(who, rpc, outcome)| {
                !trail
                    .entries
                    .values()
                    .any(|e| e.principal == *who && e.rpc == *rpc && e.outcome == *outcome)
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} calls are not in the audit trail, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `(principal, rpc, outcome)` of a refusal, as the audit trail names it.
fn refusal(principal: &str, rpc: &str, status: &tonic::Status) -> (String, String, &'static str) {
    (
        principal.to_owned(),
        rpc.to_owned(),
        quarry_security::audit::code_name(status.code()),
    )
}

async fn start(dir: &Path, pki: &Pki) -> (Coordinator, String) {
    start_with_clock(dir, pki, None).await
}

/// Coordinator 1 on TLS with its data under `dir`, on `clock` if given;
/// returns it and its `https://` URL.
async fn start_with_clock(
    dir: &Path,
    pki: &Pki,
    clock: Option<quarry_coordinator::clock::SharedClock>,
) -> (Coordinator, String) {
    let tls = pki.files(Role::Coordinator, "1");
    let (coordinator, _) = common::start_single_node(dir, |config| {
        config.tls = Some(tls);
        if let Some(clock) = clock {
            config.clock = clock;
        }
    })
    .await;
    let url = format!("https://{}", coordinator.addr());
    (coordinator, url)
}

/// Sends one raft heartbeat `from` to node 1, term 1000, over the
/// connection of coordinator `as_node`'s certificate; returns the refusal.
async fn forged_heartbeat(url: &str, pki: &Pki, as_node: &str, from: u64) -> tonic::Status {
    let mut message = raft::eraftpb::Message::default();
    message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    message.from = from;
    message.to = 1;
    message.term = 1_000;
    let message = v1::RaftMessage {
        message: message.write_to_bytes().expect("encode"),
    };
    let ca = pki.dir.join(certs::CA_CERT);
    let files = pki.files(Role::Coordinator, as_node);
    let mut client = v1::raft_service_client::RaftServiceClient::new(
        channel(url, &ca, Some(&files)).await.expect("connect"),
    );
    client
        .send(tokio_stream::iter(vec![message]))
        .await
        .expect_err("the message is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_callers_without_identity_or_role_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (coordinator, url) = start(dir.path(), &pki).await;
    let ca = pki.dir.join(certs::CA_CERT);
    let before = state_but_audit(&coordinator);
    let mut expected = Vec::new();

    let anonymous = channel(&url, &ca, None)
        .await
        .expect("connect without a certificate");
    let roles = [
        Role::Admin,
        Role::Hunter,
        Role::Automation,
        Role::Viewer,
        Role::Worker,
        Role::Coordinator,
    ];
    let mut callers = Vec::new();
    for role in roles {
        let files = pki.files(role, if role == Role::Coordinator { "7" } else { "x" });
        callers.push((
            role,
            channel(&url, &ca, Some(&files)).await.expect("connect"),
        ));
    }
    let mut checked = 0;
    for (path, access, _) in RULES {
        let Access::Roles(allowed) = access else {
            continue;
        };
        // The worker's ingest runs on workers, not here.
        if path.contains("IngestService") {
            continue;
        }
        let status = call(anonymous.clone(), path).await;
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{path}: {status:?}"
        );
        assert!(
            status.message().contains("client certificate"),
            "{path}: {status:?}"
        );
        expected.push(refusal("anonymous", path, &status));
        for (role, channel) in &callers {
            if allowed.contains(role) {
                continue;
            }
            let status = call(channel.clone(), path).await;
            assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{role} {path}: {status:?}"
            );
            assert!(status.message().contains(path), "{role} {path}: {status:?}");
            let name = if *role == Role::Coordinator { "7" } else { "x" };
            expected.push(refusal(&format!("{role}:{name}"), path, &status));
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} refusals checked");
    // Health stays open for load balancers.
    let health = call(anonymous, "/grpc.health.v1.Health/Check").await;
    assert_ne!(health.code(), tonic::Code::Unauthenticated);

    // A certificate from another CA does not even get a connection.
    let other = Pki::new(&dir.path().join("other"));
    let stranger = other.files(Role::Admin, "x");
    let refused = match channel(&url, &ca, Some(&stranger)).await {
        Err(e) => e,
        Ok(channel) => format!(
            "{:?}",
            call(channel, "/quarry.v1.ClusterService/Status").await
        ),
    };
    assert!(
        refused.contains("Unavailable")
            || refused.contains("transport")
            || refused.contains("Unknown"),
        "{refused}"
    );
    expected.push((
        "unknown".to_owned(),
        "(tls handshake)".to_owned(),
        "unauthenticated",
    ));

    // Every refusal is in the replicated trail, and nothing else changed.
    wait_for_audit(&coordinator, &expected).await;
    assert!(
        before == state_but_audit(&coordinator),
        "a refused call changed the state"
    );
    // An admin reads the trail through the API; nobody else may.
    let admin = pki.files(Role::Admin, "ops");
    let mut as_admin = quarry_client::Client::connect_with(&url, Some(&admin))
        .await
        .expect("admin");
    let page = as_admin
        .list_audit(v1::ListAuditRequest {
            principal: "viewer:x".into(),
            refused_only: true,
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("list");
    let viewer_refusals = expected
        .iter()
        .filter(|(who, ..)| who == "viewer:x")
        .count();
    assert_eq!(page.records.len(), viewer_refusals, "{:?}", page.records);
    let submit = page
        .records
        .iter()
        .find(|r| r.rpc == "/quarry.v1.HuntService/SubmitHunt")
        .expect("the viewer's refused submit");
    assert_eq!(
        (
            submit.role.as_str(),
            submit.outcome.as_str(),
            submit.node.as_str()
        ),
        ("viewer", "permission_denied", "coordinator:1")
    );
    assert!(submit.detail.contains("needs the role"), "{submit:?}");
    assert_eq!(submit.remote, "127.0.0.1");
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_act_only_as_themselves_and_a_foreign_ca_cannot_register() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (coordinator, url) = start(dir.path(), &pki).await;
    let ca = pki.dir.join(certs::CA_CERT);
    let node = coordinator.node();
    common::commit_module_m1(node).await;
    node.propose(Command::RegisterWorker {
        id: WorkerId::new("w1"),
        address: "127.0.0.1:1".into(),
        slots: 2,
        shards: vec![ShardDescription {
            name: ShardId::new("a"),
            labels: Default::default(),
            event_count: 1,
            min_ts_ms: 1,
            max_ts_ms: 2,
            size_bytes: 1,
        }],
        now_ms: common::now_ms(),
    })
    .await
    .expect("commit")
    .expect("registered");
    let hunt = common::submit_m1(
        node,
        Scope {
            shards: vec![ShardId::new("a")],
            ..Scope::default()
        },
        common::now_ms(),
    )
    .await;
    let task = TaskId::for_shard(&hunt, &ShardId::new("a"));
    node.propose(Command::AssignTasks {
        assignments: vec![Assignment {
            task: task.clone(),
            worker: WorkerId::new("w1"),
        }],
        now_ms: common::now_ms(),
    })
    .await
    .expect("commit")
    .expect("assigned");

    // Worker w2, with its own valid certificate.
    let w2 = pki.files(Role::Worker, "w2");
    let mut as_w2 = v1::worker_service_client::WorkerServiceClient::new(
        channel(&url, &ca, Some(&w2)).await.expect("connect"),
    );
    let register = |id: &str| v1::RegisterWorkerRequest {
        worker_id: id.into(),
        address: "127.0.0.1:2".into(),
        slots: 1,
        shards: Vec::new(),
    };
    let denied = as_w2
        .register_worker(register("w1"))
        .await
        .expect_err("w2 cannot register as w1");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("may not act as worker w1"),
        "{denied:?}"
    );
    let mut expected = vec![refusal(
        "worker:w2",
        "/quarry.v1.WorkerService/RegisterWorker",
        &denied,
    )];
    as_w2
        .register_worker(register("w2"))
        .await
        .expect("w2 registers as itself");
    expected.push((
        "worker:w2".into(),
        "/quarry.v1.WorkerService/RegisterWorker".into(),
        "ok",
    ));

    let before = state_of(&coordinator);
    let report = |worker: &str| v1::ReportTaskRequest {
        task_id: task.as_str().to_owned(),
        attempt: 1,
        worker_id: worker.into(),
        outcome: v1::TaskOutcome::Succeeded as i32,
        ..Default::default()
    };
    let denied = as_w2
        .report_task(report("w1"))
        .await
        .expect_err("w2 cannot report as w1");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    expected.push(refusal(
        "worker:w2",
        "/quarry.v1.WorkerService/ReportTask",
        &denied,
    ));
    // As itself, its report for w1's task is stale: nothing changes.
    as_w2.report_task(report("w2")).await.expect("answered");
    let after = state_of(&coordinator);
    assert!(
        before.1.hunts[&hunt] == after.1.hunts[&hunt]
            && before.1.tasks[&task] == after.1.tasks[&task],
        "a report for another worker's task changed the hunt"
    );
    assert_eq!(
        after.1.tasks[&task].attempt_on(&WorkerId::new("w1")),
        Some(1),
        "the task still runs on w1"
    );

    // A worker certificate from another CA gets no connection at all.
    let other = Pki::new(&dir.path().join("other"));
    let foreign = other.files(Role::Worker, "w3");
    let registered = match channel(&url, &ca, Some(&foreign)).await {
        Err(_) => false,
        Ok(channel) => v1::worker_service_client::WorkerServiceClient::new(channel)
            .register_worker(register("w3"))
            .await
            .is_ok(),
    };
    assert!(!registered, "a worker from another CA registered");
    assert!(
        !state_of(&coordinator)
            .1
            .workers
            .contains_key(&WorkerId::new("w3")),
        "w3 is not in the state"
    );
    wait_for_audit(&coordinator, &expected).await;
    let trail = state_of(&coordinator).1.audit;
    assert!(
        trail
            .entries
            .values()
            .any(|e| e.outcome == "ok" && e.target == "worker w2"),
        "the accepted registration names its target"
    );
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_add_coordinators_and_forged_raft_messages_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (coordinator, url) = start(dir.path(), &pki).await;
    let ca = pki.dir.join(certs::CA_CERT);
    let before = state_but_audit(&coordinator);
    let add = v1::AddCoordinatorRequest {
        node_id: 6,
        url: "https://127.0.0.1:1".into(),
    };

    let hunter = pki.files(Role::Hunter, "alice");
    let mut as_hunter = v1::cluster_service_client::ClusterServiceClient::new(
        channel(&url, &ca, Some(&hunter)).await.expect("connect"),
    );
    let denied = as_hunter
        .add_coordinator(add.clone())
        .await
        .expect_err("hunter");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("needs the role admin"),
        "{denied:?}"
    );
    let add_rpc = "/quarry.v1.ClusterService/AddCoordinator";
    let mut expected = vec![refusal("hunter:alice", add_rpc, &denied)];

    // A coordinator certificate may add only its own node id.
    let five = pki.files(Role::Coordinator, "5");
    let mut as_five = v1::cluster_service_client::ClusterServiceClient::new(
        channel(&url, &ca, Some(&five)).await.expect("connect"),
    );
    let denied = as_five
        .add_coordinator(add)
        .await
        .expect_err("another node");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(denied.message().contains("only itself"), "{denied:?}");
    expected.push(refusal("coordinator:5", add_rpc, &denied));

    // Raft: a coordinator that is not a member, and a member's connection
    // carrying a message that claims another sender.
    let raft = "/quarry.v1.RaftService/Send";
    let dropped = forged_heartbeat(&url, &pki, "9", 9).await;
    assert_eq!(dropped.code(), tonic::Code::PermissionDenied);
    assert!(dropped.message().contains("not a member"), "{dropped:?}");
    expected.push(refusal("coordinator:9", raft, &dropped));
    let dropped = forged_heartbeat(&url, &pki, "1", 2).await;
    assert_eq!(dropped.code(), tonic::Code::PermissionDenied);
    assert!(dropped.message().contains("dropped"), "{dropped:?}");
    expected.push(refusal("coordinator:1", raft, &dropped));
    let status = coordinator.node().status();
    assert!(
        status.is_leader && status.term < 1_000,
        "the forged term reached raft: {status:?}"
    );

    wait_for_audit(&coordinator, &expected).await;
    assert!(
        before == state_but_audit(&coordinator),
        "a refused call changed the state"
    );
    coordinator.shutdown().await;
}

#[tokio::test]
async fn a_coordinator_without_tls_refuses_any_but_a_loopback_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = quarry_coordinator::CoordinatorConfig::single_node(
        dir.path().join("c"),
        std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    );
    let err = Coordinator::start(config).await.err().expect("refused");
    let message = err.to_string();
    assert!(message.contains("without TLS"), "{message}");
    assert!(message.contains("quarry certs"), "{message}");

    // And a certificate naming another node is refused at start.
    let pki = Pki::new(&dir.path().join("pki"));
    let mut config = quarry_coordinator::CoordinatorConfig::single_node(
        dir.path().join("c2"),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    config.tls = Some(pki.files(Role::Worker, "w1"));
    let err = Coordinator::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("names worker:w1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_until_they_expire_or_are_revoked_and_bad_ones_change_nothing() {
    use quarry_coordinator::clock::ManualClock;
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let clock = Arc::new(ManualClock::new(common::now_ms()));
    let (coordinator, url) = start_with_clock(dir.path(), &pki, Some(clock.clone())).await;
    let ca = pki.dir.join(certs::CA_CERT);

    // An admin (by certificate) makes tokens.
    let admin = pki.files(Role::Admin, "ops");
    let mut as_admin = quarry_client::Client::connect_with(&url, Some(&admin))
        .await
        .expect("admin");
    let hour = std::time::Duration::from_secs(3600);
    let shipper = as_admin
        .create_token("shipper", "automation", hour)
        .await
        .expect("create");
    let viewer = as_admin
        .create_token("dashboards", "viewer", std::time::Duration::ZERO)
        .await
        .expect("create");
    let gone = as_admin
        .create_token("old-ci", "hunter", hour)
        .await
        .expect("create");
    let info = shipper.token.clone().expect("info");
    assert_eq!(
        (info.role.as_str(), info.created_by.as_str()),
        ("automation", "admin:ops")
    );
    assert!(shipper.secret.starts_with(&info.id), "{}", shipper.secret);
    let mut expected = vec![(
        "admin:ops".to_owned(),
        "/quarry.v1.TokenService/CreateToken".to_owned(),
        "ok",
    )];
    let refused = as_admin
        .create_token("node", "worker", hour)
        .await
        .expect_err("tokens are not nodes");
    assert!(refused.to_string().contains("certificates"), "{refused}");
    as_admin
        .revoke_token(&gone.token.expect("info").id)
        .await
        .expect("revoke");
    let listed = as_admin.list_tokens().await.expect("list");
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|t| !format!("{t:?}").contains("argon2")),
        "no hash leaves"
    );

    // A token-only caller: the CA for TLS, no certificate.
    let anonymous = channel(&url, &ca, None).await.expect("connect");
    let submit = "/quarry.v1.HuntService/SubmitHunt";
    let accepted = call_with(anonymous.clone(), submit, Some(&shipper.secret)).await;
    assert!(
        !matches!(
            accepted.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ),
        "a valid automation token may submit: {accepted:?}"
    );
    // Accepted by the access table, refused by the handler (an empty
    // request): recorded with the token's principal and the outcome.
    expected.push(refusal("automation:shipper", submit, &accepted));
    let mut with_token = quarry_client::Client::connect_as(
        &url,
        &quarry_client::Credentials {
            ca: Some(ca.clone()),
            identity: None,
            token: Some(viewer.secret.clone()),
        },
    )
    .await
    .expect("token client");
    with_token
        .list_hunts(10)
        .await
        .expect("a viewer token reads");

    // The shipper's token expires an hour later on the cluster's clock.
    clock.advance_ms(2 * 3_600_000);
    let before = state_but_audit(&coordinator);
    let unknown = format!("tok-0000000000000000.{}", "0".repeat(64));
    let wrong_secret = format!("{}.{}", info.id, "f".repeat(64));
    let refusals: [(&str, &str); 5] = [
        (&unknown, "not known"),
        (&wrong_secret, "does not match"),
        (&shipper.secret, "expired"),
        (&gone.secret, "revoked"),
        ("garbage", "malformed"),
    ];
    let mut checked = 0;
    for (path, access, _) in RULES {
        let Access::Roles(allowed) = access else {
            continue;
        };
        if path.contains("IngestService") {
            continue;
        }
        for (token, why) in &refusals {
            let status = call_with(anonymous.clone(), path, Some(token)).await;
            assert_eq!(
                status.code(),
                tonic::Code::Unauthenticated,
                "{path} {why}: {status:?}"
            );
            assert!(status.message().contains(why), "{path} {why}: {status:?}");
            expected.push(refusal("bad token", path, &status));
            checked += 1;
        }
        if !allowed.contains(&Role::Viewer) {
            let status = call_with(anonymous.clone(), path, Some(&viewer.secret)).await;
            assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{path}: {status:?}"
            );
            assert!(
                status.message().contains("viewer:dashboards"),
                "{path}: {status:?}"
            );
            expected.push(refusal("viewer:dashboards", path, &status));
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} refusals checked");
    wait_for_audit(&coordinator, &expected).await;
    assert!(
        before == state_but_audit(&coordinator),
        "a refused call changed the state"
    );
    // Every bad-token refusal is counted (identical ones fold into one
    // record with a count).
    let trail = state_of(&coordinator).1.audit;
    let folded: u32 = trail
        .entries
        .values()
        .filter(|e| e.principal == "bad token")
        .map(|e| e.count)
        .sum();
    assert!(folded >= 5 * 35, "{folded} bad-token refusals recorded");

    // Tokens are replicated state: a restart keeps them, revocations too.
    coordinator.shutdown().await;
    let (coordinator, url) = start_with_clock(dir.path(), &pki, Some(clock.clone())).await;
    let anonymous = channel(&url, &ca, None).await.expect("connect");
    let list = "/quarry.v1.HuntService/ListHunts";
    let status = call_with(anonymous.clone(), list, Some(&viewer.secret)).await;
    assert!(
        !matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ),
        "the viewer token survives a restart: {status:?}"
    );
    let status = call_with(anonymous, list, Some(&gone.secret)).await;
    assert!(status.message().contains("revoked"), "{status:?}");
    // So is the audit trail.
    let restarted = state_of(&coordinator).1.audit;
    assert!(
        trail
            .entries
            .iter()
            .all(|(seq, entry)| restarted.entries.get(seq) == Some(entry)),
        "the audit trail lost records in a restart"
    );
    coordinator.shutdown().await;
}

/// Three TLS coordinators on loopback; returns them by node id.
async fn start_tls_group(
    dir: &Path,
    pki: &Pki,
) -> std::collections::BTreeMap<u64, (Coordinator, String)> {
    let urls = common::group_urls(&common::free_ports(3), "https");
    let mut nodes = std::collections::BTreeMap::new();
    for &id in urls.keys() {
        let mut config = common::group_config(dir, &urls, id);
        config.tls = Some(pki.files(Role::Coordinator, &id.to_string()));
        let coordinator = Coordinator::start(config).await.expect("start");
        nodes.insert(id, (coordinator, urls[&id].clone()));
    }
    nodes
}

async fn leader_of(nodes: &std::collections::BTreeMap<u64, (Coordinator, String)>) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some((id, _)) = nodes.iter().find(|(_, (c, _))| c.node().status().is_leader) {
            return *id;
        }
        assert!(std::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_at_a_follower_reach_the_trail_and_outlive_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = pki.dir.join(certs::CA_CERT);
    let mut nodes = start_tls_group(dir.path(), &pki).await;
    let leader = leader_of(&nodes).await;
    let follower = *nodes.keys().find(|id| **id != leader).expect("follower");
    let submit = "/quarry.v1.HuntService/SubmitHunt";

    // A viewer tries to submit at a follower: refused there, recorded by
    // the follower, forwarded to the leader, replicated.
    let viewer = pki.files(Role::Viewer, "eve");
    let at_follower = channel(&nodes[&follower].1, &ca, Some(&viewer))
        .await
        .expect("connect");
    let denied = call(at_follower, submit).await;
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let expected = [refusal("viewer:eve", submit, &denied)];
    wait_for_audit(&nodes[&leader].0, &expected).await;
    let recorded = state_of(&nodes[&leader].0)
        .1
        .audit
        .entries
        .values()
        .find(|e| e.principal == "viewer:eve")
        .cloned()
        .expect("recorded");
    assert_eq!(recorded.node, format!("coordinator:{follower}"));

    // The leader dies; what was appended is on the others, and a refusal
    // at the survivors still reaches the new leader's trail.
    let (old, _) = nodes.remove(&leader).expect("leader");
    old.shutdown().await;
    let new_leader = leader_of(&nodes).await;
    wait_for_audit(&nodes[&new_leader].0, &expected).await;
    let other = *nodes
        .keys()
        .find(|id| **id != new_leader)
        .expect("follower");
    let again = channel(
        &nodes[&other].1,
        &ca,
        Some(&pki.files(Role::Hunter, "mallory")),
    )
    .await
    .expect("connect");
    let denied = call(again, "/quarry.v1.TokenService/CreateToken").await;
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    wait_for_audit(
        &nodes[&new_leader].0,
        &[refusal(
            "hunter:mallory",
            "/quarry.v1.TokenService/CreateToken",
            &denied,
        )],
    )
    .await;
    for (_, (coordinator, _)) in nodes {
        coordinator.shutdown().await;
    }
}
