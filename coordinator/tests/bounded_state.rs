//! Bounded state, seen from the API: `ListHunts` pages newest first with
//! tokens, `StreamFindings` reads findings from RocksDB and resumes from a
//! finding's cursor, follow mode sends each finding once as it commits, and
//! finished hunts are deleted (by a user or the retention policy) with their
//! findings, freeing their module, and a hunt shows its tasks a page at a
//! time. A real single-node coordinator on
//! loopback; state is written through raft.

mod common;

use quarry_client::Client;
use quarry_coordinator::state::{
    Assignment, Command, FindingRecord, HuntSpec, ModuleSelector, PartialResult, Scope, Severity,
    ShardDescription, TaskReport,
};
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_proto::{HuntId, ShardId, TaskId, WorkerId, v1};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_stream::StreamExt as _;

async fn coordinator(dir: &std::path::Path) -> (Coordinator, String) {
    let (coordinator, url) = common::start_single_node(dir, |_| {}).await;
    seed(&coordinator).await;
    (coordinator, url)
}

/// Module `m@1` and worker `w` holding shards `a` and `b`.
async fn seed(coordinator: &Coordinator) {
    let node = coordinator.node();
    common::commit_module_m1(node).await;
    let shards = ["a", "b"]
        .into_iter()
        .map(|name| ShardDescription {
            name: ShardId::new(name),
            labels: Default::default(),
            event_count: 1,
            min_ts_ms: 1,
            max_ts_ms: 2,
            size_bytes: 1,
        })
        .collect();
    node.propose(Command::RegisterWorker {
        id: WorkerId::new("w"),
        address: "127.0.0.1:1".into(),
        slots: 2,
        shards,
        now_ms: 1,
    })
    .await
    .expect("commit")
    .expect("worker");
}

async fn submit(coordinator: &Coordinator, now_ms: i64) -> HuntId {
    let scope = Scope {
        shards: vec![ShardId::new("a"), ShardId::new("b")],
        ..Scope::default()
    };
    common::submit_m1(coordinator.node(), scope, now_ms).await
}

/// Wall time: the leader expires hunts past their deadline by it.
use common::now_ms;

fn finding(n: usize) -> FindingRecord {
    FindingRecord {
        id: String::new(),
        task: TaskId::new(""),
        shard: ShardId::new(""),
        rule: "r".into(),
        title: format!("finding {n}"),
        severity: Severity::Medium,
        confidence: 50,
        entity: format!("host-{n}"),
        timestamp_ms: 1,
        evidence: Vec::new(),
        techniques: Vec::new(),
        tags: Vec::new(),
        offsets: Vec::new(),
    }
}

/// Runs `shard`'s task of `hunt` on worker `w` and reports `count` findings.
async fn report(coordinator: &Coordinator, hunt: &HuntId, shard: &str, count: usize) {
    let task = TaskId::for_shard(hunt, &ShardId::new(shard));
    let node = coordinator.node();
    node.propose(Command::AssignTasks {
        assignments: vec![Assignment {
            task: task.clone(),
            worker: WorkerId::new("w"),
        }],
        now_ms: now_ms(),
    })
    .await
    .expect("commit")
    .expect("assigned");
    let report = TaskReport {
        task,
        attempt: 1,
        worker: WorkerId::new("w"),
        outcome: Ok(PartialResult {
            findings: (0..count).map(finding).collect(),
            ..PartialResult::default()
        }),
    };
    node.propose(Command::RecordResult {
        report,
        now_ms: now_ms(),
    })
    .await
    .expect("commit")
    .expect("recorded");
}

async fn stream(
    client: &mut v1::hunt_service_client::HuntServiceClient<tonic::transport::Channel>,
    request: v1::StreamFindingsRequest,
) -> Vec<v1::Finding> {
    let mut stream = client
        .stream_findings(request)
        .await
        .expect("stream")
        .into_inner();
    let mut out = Vec::new();
    while let Some(f) = stream.next().await {
        out.push(f.expect("finding"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunts_list_a_page_at_a_time_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;
    let mut submitted = Vec::new();
    for n in 0..130 {
        // Two hunts per millisecond: the order falls back on the id.
        submitted.push(submit(&coordinator, now_ms() + n / 2).await);
    }
    let mut client = Client::connect(&url).await.expect("connect");
    let (first, token) = client.list_hunts_page(0, "").await.expect("page");
    assert_eq!(first.len(), 100, "the default page");
    assert!(!token.is_empty());
    let (second, last) = client.list_hunts_page(0, &token).await.expect("page");
    assert_eq!(second.len(), 30);
    assert!(last.is_empty(), "no token after the last page");
    let paged: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|h| h.hunt_id.clone())
        .collect();
    let all: Vec<String> = client
        .list_hunts(0)
        .await
        .expect("all")
        .into_iter()
        .map(|h| h.hunt_id)
        .collect();
    assert_eq!(paged, all);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 130, "each hunt exactly once");
    let submitted_ms: Vec<i64> = first
        .iter()
        .chain(&second)
        .map(|h| h.submitted_ms)
        .collect();
    assert!(
        submitted_ms.windows(2).all(|w| w[0] >= w[1]),
        "newest first"
    );
    assert_eq!(client.list_hunts(7).await.expect("seven").len(), 7);

    let mut raw = v1::hunt_service_client::HuntServiceClient::connect(url)
        .await
        .expect("connect");
    let bad = raw
        .list_hunts(v1::ListHuntsRequest {
            states: vec![],
            limit: 10,
            page_token: "yesterday".into(),
        })
        .await
        .expect_err("a token the coordinator never issued");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("next_page_token"),
        "{}",
        bad.message()
    );
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_resume_from_a_cursor_and_follow_sends_each_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;
    let hunt = submit(&coordinator, now_ms()).await;
    let mut raw = v1::hunt_service_client::HuntServiceClient::connect(url)
        .await
        .expect("connect");

    // Follow from the start while the hunt runs: the first task's findings
    // come at once, the second's as they commit, then the stream ends.
    let follower = {
        let mut raw = raw.clone();
        let request = v1::StreamFindingsRequest {
            hunt_id: hunt.to_string(),
            follow: true,
            ..Default::default()
        };
        tokio::spawn(async move { stream(&mut raw, request).await })
    };
    report(&coordinator, &hunt, "a", 1_500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    report(&coordinator, &hunt, "b", 700).await;
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the stream ends with the hunt")
        .expect("join");
    assert_eq!(followed.len(), 2_200);
    let mut ids: Vec<&str> = followed.iter().map(|f| f.finding_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2_200, "each finding once");

    // A page of 1,000, then the rest from its last cursor.
    let page = stream(
        &mut raw,
        v1::StreamFindingsRequest {
            hunt_id: hunt.to_string(),
            page_size: 1_000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page.len(), 1_000);
    let rest = stream(
        &mut raw,
        v1::StreamFindingsRequest {
            hunt_id: hunt.to_string(),
            page_token: page.last().expect("one").cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    let resumed: Vec<&str> = page
        .iter()
        .chain(&rest)
        .map(|f| f.finding_id.as_str())
        .collect();
    let all: Vec<&str> = followed.iter().map(|f| f.finding_id.as_str()).collect();
    assert_eq!(resumed, all, "the same findings in the same (commit) order");

    let bad = raw
        .stream_findings(v1::StreamFindingsRequest {
            hunt_id: hunt.to_string(),
            page_token: "abc".into(),
            ..Default::default()
        })
        .await
        .expect_err("not a cursor");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_hunts_take_their_findings_and_free_their_module() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;
    let done = submit(&coordinator, now_ms()).await;
    report(&coordinator, &done, "a", 40).await;
    report(&coordinator, &done, "b", 2).await;
    let running = submit(&coordinator, now_ms()).await;
    let mut client = Client::connect(&url).await.expect("connect");
    assert_eq!(
        client
            .findings(done.as_str())
            .await
            .expect("findings")
            .len(),
        42
    );

    let refused = client
        .delete_hunt(running.as_str())
        .await
        .expect_err("a running hunt");
    assert_eq!(refused.code(), Some(tonic::Code::FailedPrecondition));
    assert!(refused.to_string().contains("cancel it first"), "{refused}");
    let bare = client.delete_module("m").await.expect_err("which version?");
    assert_eq!(bare.code(), Some(tonic::Code::InvalidArgument));
    assert!(bare.to_string().contains("m@1"), "{bare}");
    let in_use = client.delete_module("m@1").await.expect_err("in use");
    assert_eq!(in_use.code(), Some(tonic::Code::FailedPrecondition));

    client.delete_hunt(done.as_str()).await.expect("delete");
    let gone = client.hunt(done.as_str()).await.expect_err("deleted");
    assert_eq!(gone.code(), Some(tonic::Code::NotFound));
    assert!(
        coordinator
            .node()
            .findings(&done, 0, 100)
            .expect("read")
            .is_empty(),
        "the findings rows went with the hunt"
    );
    client
        .cancel_hunt(running.as_str(), "done with it")
        .await
        .expect("cancel");
    client.delete_hunt(running.as_str()).await.expect("delete");
    let deleted = client.delete_module("m@1").await.expect("unused now");
    assert_eq!(deleted.name, "m");
    assert!(client.list_modules().await.expect("list").is_empty());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_deletes_finished_hunts_past_the_retention_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config =
        CoordinatorConfig::single_node(dir.path().join("c"), SocketAddr::from(([127, 0, 0, 1], 0)));
    config.retain_hunts = 2;
    let coordinator = Coordinator::start(config).await.expect("start");
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await
        .expect("leader");
    let url = format!("http://{}", coordinator.addr());
    seed(&coordinator).await;
    let mut client = Client::connect(&url).await.expect("connect");
    let mut finished = Vec::new();
    for _ in 0..4 {
        let hunt = submit(&coordinator, now_ms()).await;
        client.cancel_hunt(hunt.as_str(), "").await.expect("cancel");
        finished.push(hunt.to_string());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let running = submit(&coordinator, now_ms()).await.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut left: Vec<String> = client
            .list_hunts(0)
            .await
            .expect("list")
            .into_iter()
            .map(|h| h.hunt_id)
            .collect();
        left.sort();
        let mut want = vec![finished[2].clone(), finished[3].clone(), running.clone()];
        want.sort();
        if left == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention kept {left:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_names_the_module_version_it_resolved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;
    coordinator
        .node()
        .propose(Command::UploadModule {
            module: quarry_coordinator::state::ModuleRecord {
                digest: quarry_proto::ModuleDigest::new("cd".repeat(32)),
                name: "m".into(),
                version: "2".into(),
                description: String::new(),
                uploaded_ms: 2,
                techniques: Vec::new(),
                bytes: vec![2],
            },
        })
        .await
        .expect("commit")
        .expect("module");
    let mut client = Client::connect(&url).await.expect("connect");
    let resolved = |r: &v1::SubmitHuntResponse| {
        r.module
            .as_ref()
            .map(|m| (m.name.clone(), m.version.clone(), m.digest.clone()))
    };
    // A bare name runs the version uploaded last, and says so.
    let latest = client
        .submit_hunt(quarry_client::HuntRequest::new("m").shard("a"))
        .await
        .expect("submit");
    assert_eq!(
        resolved(&latest),
        Some(("m".into(), "2".into(), "cd".repeat(32)))
    );
    let pinned = client
        .submit_hunt(
            quarry_client::HuntRequest::new("m@1")
                .shard("a")
                .dry_run(true),
        )
        .await
        .expect("dry run");
    assert_eq!(
        resolved(&pinned),
        Some(("m".into(), "1".into(), "ab".repeat(32)))
    );
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_workers_and_shards_list_a_page_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;
    let node = coordinator.node();
    for n in 0..150u32 {
        let shards = ["x", "y"]
            .into_iter()
            .map(|s| ShardDescription {
                name: ShardId::new(format!("s-{n:03}-{s}")),
                labels: BTreeMap::from([("side".to_owned(), s.to_owned())]).into(),
                event_count: 1,
                min_ts_ms: 1,
                max_ts_ms: 2,
                size_bytes: 1,
            })
            .collect();
        node.propose(Command::RegisterWorker {
            id: WorkerId::new(format!("w-{n:03}")),
            address: String::new(),
            slots: 1,
            shards,
            now_ms: 1,
        })
        .await
        .expect("commit")
        .expect("worker");
    }
    for n in 0..120u32 {
        node.propose(Command::UploadModule {
            module: quarry_coordinator::state::ModuleRecord {
                digest: quarry_proto::ModuleDigest::new(format!("{n:064x}")),
                name: format!("mod-{:02}", n % 7),
                version: n.to_string(),
                description: String::new(),
                uploaded_ms: i64::from(n),
                techniques: Vec::new(),
                bytes: n.to_be_bytes().to_vec(),
            },
        })
        .await
        .expect("commit")
        .expect("module");
    }
    let mut cluster = v1::cluster_service_client::ClusterServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let first = cluster
        .list_workers(v1::ListWorkersRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(first.workers.len(), 100, "the default page");
    assert_eq!(first.next_page_token, "w-098");
    let shards = cluster
        .list_shards(v1::ListShardsRequest {
            selector: Some(v1::LabelSelector {
                match_labels: [("side".to_owned(), "y".to_owned())].into(),
            }),
            page_size: 40,
            page_token: "s-100-x".into(),
        })
        .await
        .expect("page")
        .into_inner();
    let names: Vec<&str> = shards.shards.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names.len(),
        40,
        "a page of the selected shards after the token"
    );
    assert_eq!((names[0], names[39]), ("s-100-y", "s-139-y"));
    assert_eq!(shards.next_page_token, "s-139-y");

    // The client follows the pages: everything, once, in order.
    let mut client = Client::connect(&url).await.expect("connect");
    let workers = client.workers().await.expect("workers");
    assert_eq!(workers.len(), 151, "150 and the seeded one");
    assert!(workers.windows(2).all(|w| w[0].worker_id < w[1].worker_id));
    assert_eq!(
        client
            .shards(Default::default())
            .await
            .expect("shards")
            .len(),
        302
    );
    let modules = client.list_modules().await.expect("modules");
    assert_eq!(modules.len(), 121);
    let order: Vec<(&str, i64)> = modules
        .iter()
        .map(|m| (m.name.as_str(), m.uploaded_ms))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "by name, then upload time");
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hunt_shows_its_tasks_a_page_at_a_time_with_counts_of_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = coordinator(dir.path()).await;
    let node = coordinator.node();
    let shards: Vec<ShardDescription> = (0..250u32)
        .map(|n| ShardDescription {
            name: ShardId::new(format!("big-{n:03}")),
            labels: BTreeMap::from([("set".to_owned(), "big".to_owned())]).into(),
            event_count: 1,
            min_ts_ms: 1,
            max_ts_ms: 2,
            size_bytes: 1,
        })
        .collect();
    node.propose(Command::RegisterWorker {
        id: WorkerId::new("w"),
        address: "127.0.0.1:1".into(),
        slots: 2,
        shards,
        now_ms: 1,
    })
    .await
    .expect("commit")
    .expect("worker");
    let spec = HuntSpec {
        module: ModuleSelector::NameVersion {
            name: "m".into(),
            version: Some("1".into()),
        },
        params: BTreeMap::new(),
        scope: Scope {
            selector: BTreeMap::from([("set".to_owned(), "big".to_owned())]),
            ..Scope::default()
        },
        limits: Default::default(),
        priority: 0,
        description: String::new(),
        policy: Default::default(),
    };
    let hunt = match node
        .propose(Command::SubmitHunt {
            spec,
            now_ms: now_ms(),
        })
        .await
        .expect("commit")
    {
        Ok(quarry_coordinator::state::Response::Hunt { id, tasks }) => {
            assert_eq!(tasks, 250);
            id
        }
        other => panic!("{other:?}"),
    };
    for shard in ["big-007", "big-150", "big-249"] {
        report(&coordinator, &hunt, shard, 1).await;
    }

    let mut raw = v1::hunt_service_client::HuntServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let get = |size: u32, token: &str, states: Vec<v1::TaskState>| v1::GetHuntRequest {
        hunt_id: hunt.to_string(),
        task_page_size: size,
        task_page_token: token.to_owned(),
        task_states: states.into_iter().map(|s| s as i32).collect(),
    };
    let first = raw
        .get_hunt(get(0, "", vec![]))
        .await
        .expect("hunt")
        .into_inner();
    assert_eq!(first.tasks.len(), 100, "the default page");
    let counts = first.task_counts.expect("counts");
    assert_eq!(
        (
            counts.total,
            counts.succeeded,
            counts.pending + counts.assigned
        ),
        (250, 3, 247)
    );
    // Pages in shard order, each task once.
    let mut seen: Vec<String> = first.tasks.iter().map(|t| t.shard.clone()).collect();
    let mut token = first.next_task_page_token.clone();
    while !token.is_empty() {
        let page = raw
            .get_hunt(get(64, &token, vec![]))
            .await
            .expect("page")
            .into_inner();
        assert!(page.tasks.len() <= 64);
        seen.extend(page.tasks.iter().map(|t| t.shard.clone()));
        token = page.next_task_page_token;
    }
    let expected: Vec<String> = (0..250).map(|n| format!("big-{n:03}")).collect();
    assert_eq!(seen, expected);

    // A state filter pages over the matching tasks only.
    let done = raw
        .get_hunt(get(2, "", vec![v1::TaskState::Succeeded]))
        .await
        .expect("succeeded")
        .into_inner();
    let shards: Vec<&str> = done.tasks.iter().map(|t| t.shard.as_str()).collect();
    assert_eq!(shards, ["big-007", "big-150"]);
    let rest = raw
        .get_hunt(get(
            2,
            &done.next_task_page_token,
            vec![v1::TaskState::Succeeded],
        ))
        .await
        .expect("rest")
        .into_inner();
    assert_eq!(rest.tasks.len(), 1);
    assert!(rest.next_task_page_token.is_empty());

    // Lists carry counts, not tasks; the client follows task pages.
    let mut client = Client::connect(&url).await.expect("connect");
    let listed = client.list_hunts(0).await.expect("list");
    assert!(listed[0].tasks.is_empty());
    assert_eq!(listed[0].task_counts.expect("counts").total, 250);
    assert_eq!(
        client.hunt(hunt.as_str()).await.expect("all").tasks.len(),
        250
    );
    let some = client
        .hunt_tasks(hunt.as_str(), 120, &[])
        .await
        .expect("some");
    assert_eq!(some.tasks.len(), 120);
    assert!(!some.next_task_page_token.is_empty());

    let bad = raw
        .get_hunt(get(10, "later", vec![]))
        .await
        .expect_err("a token the coordinator never issued");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("next_task_page_token"),
        "{}",
        bad.message()
    );
    coordinator.shutdown().await;
}
