//! Triage through the API on a real coordinator (raft, RocksDB, gRPC on
//! loopback): committed findings become ranked alerts; people's verdicts
//! propose a suppression; accepting it closes the next run's matching
//! findings on arrival with provenance; the triage state and every finding
//! link survive a restart from RocksDB.

mod common;

use quarry_client::Client;
use quarry_coordinator::Coordinator;
use quarry_coordinator::state::{
    Assignment, Command, FindingRecord, PartialResult, Scope, Severity, ShardDescription,
    TaskReport,
};
use quarry_proto::{HuntId, ShardId, TaskId, WorkerId, v1};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

async fn start(dir: &std::path::Path) -> (Coordinator, String) {
    common::start_single_node(dir, |_| {}).await
}

/// Module `m@1` and worker `w` holding shard `web`.
async fn seed(coordinator: &Coordinator) {
    let node = coordinator.node();
    common::commit_module_m1(node).await;
    node.propose(Command::RegisterWorker {
        id: WorkerId::new("w"),
        address: "127.0.0.1:1".into(),
        slots: 2,
        shards: vec![ShardDescription {
            name: ShardId::new("web"),
            labels: [("env".to_owned(), "prod".to_owned())]
                .into_iter()
                .collect(),
            event_count: 1,
            min_ts_ms: 1,
            max_ts_ms: 2,
            size_bytes: 1,
        }],
        now_ms: 1,
    })
    .await
    .expect("commit")
    .expect("worker");
}

use common::now_ms;

fn finding(rule: &str, host: &str, timestamp_ms: i64) -> FindingRecord {
    FindingRecord {
        id: String::new(),
        task: TaskId::new(""),
        shard: ShardId::new(""),
        rule: rule.into(),
        title: format!("{rule} on {host}"),
        severity: Severity::Medium,
        confidence: 80,
        entity: format!("host:{host}"),
        timestamp_ms,
        evidence: vec![("Computer".into(), host.into())],
        techniques: vec!["T1021.002".into()],
        tags: Vec::new(),
        offsets: vec![7],
    }
}

/// A hunt over shard `web` whose one task reports `findings`.
async fn run_hunt(coordinator: &Coordinator, findings: Vec<FindingRecord>) -> HuntId {
    let node = coordinator.node();
    let hunt = common::submit_m1(
        node,
        Scope {
            shards: vec![ShardId::new("web")],
            ..Scope::default()
        },
        now_ms(),
    )
    .await;
    let task = TaskId::for_shard(&hunt, &ShardId::new("web"));
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
    node.propose(Command::RecordResult {
        report: TaskReport {
            task,
            attempt: 1,
            worker: WorkerId::new("w"),
            outcome: Ok(PartialResult {
                findings,
                ..PartialResult::default()
            }),
        },
        now_ms: now_ms(),
    })
    .await
    .expect("commit")
    .expect("recorded");
    hunt
}

fn open_alerts(rule: &str) -> v1::ListCasesRequest {
    v1::ListCasesRequest {
        kinds: "alerts".into(),
        rule: rule.into(),
        ..v1::ListCasesRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_propose_a_suppression_that_closes_the_next_runs_findings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = start(dir.path()).await;
    seed(&coordinator).await;
    // Event times days in the past: five alerts of one rule on one host, a
    // day apart (each its own grouping window), three findings each.
    // Five minutes into an hour: a day's three findings, a minute apart,
    // stay in one hour-long grouping window whatever the time of the run.
    let base = (now_ms() - 10 * DAY_MS) / HOUR_MS * HOUR_MS + 5 * 60_000;
    let mut findings = Vec::new();
    for day in 0..5 {
        for n in 0..3 {
            findings.push(finding(
                "sigma/admin-share",
                "ws42",
                base + day * DAY_MS + n * 60_000,
            ));
        }
    }
    findings.push(finding("sigma/rare-binary", "db01", base));
    let first = run_hunt(&coordinator, findings).await;

    let mut client = Client::connect(&url).await.expect("connect");
    let queue = client
        .list_cases(open_alerts("sigma/admin-share"))
        .await
        .expect("list");
    assert_eq!(queue.total, 5, "{:?}", queue.cases);
    assert!(
        queue
            .cases
            .iter()
            .all(|c| c.count == 3 && c.state == "open")
    );
    // Ranked: scores never rise down the page; terms add up to each score.
    assert!(queue.cases.windows(2).all(|w| w[0].score >= w[1].score));
    for case in &queue.cases {
        let sum: f64 = case.score_terms.iter().map(|t| t.contribution).sum();
        assert!((sum - case.score).abs() < 0.011, "{} vs {sum}", case.score);
        assert_eq!(case.techniques[0].name, "SMB/Windows Admin Shares");
    }
    let shown = client.case(&queue.cases[0].id).await.expect("show");
    assert_eq!(
        shown.finding_details.len(),
        3,
        "the alert's findings in full"
    );
    assert!(
        shown
            .finding_details
            .iter()
            .all(|f| f.hunt_id == first.to_string())
    );

    // Five false-positive verdicts: the fifth proposes a suppression.
    for case in &queue.cases {
        let after = client
            .update_case(
                &case.id,
                "bob",
                v1::update_case_request::Action::Verdict(v1::SetVerdict {
                    kind: "false-positive".into(),
                    comment: "IT's inventory scan".into(),
                }),
            )
            .await
            .expect("verdict");
        assert_eq!(after.state, "closed");
        assert_eq!(after.verdict.expect("verdict").who, "bob");
    }
    let proposals = client.proposals(false).await.expect("proposals");
    assert_eq!(proposals.len(), 1, "{proposals:?}");
    let proposal = &proposals[0];
    assert!(
        proposal.summary.contains("sigma/admin-share") && proposal.summary.contains("ws42"),
        "{}",
        proposal.summary
    );
    let summary = client.triage_summary().await.expect("summary");
    let by_rule = summary
        .by_rule
        .iter()
        .find(|r| r.name == "sigma/admin-share")
        .expect("verdict stats");
    assert_eq!(
        (by_rule.false_positive, by_rule.false_positive_rate),
        (5, 1.0)
    );

    let accepted = client
        .decide_proposal(&proposal.id, true, "carol")
        .await
        .expect("accept");
    assert_eq!(accepted.config_version, 1);
    let again = client
        .decide_proposal(&proposal.id, true, "carol")
        .await
        .expect_err("a proposal is decided once");
    assert!(again.to_string().contains("already accepted"), "{again}");

    // A new run: the same rule on the same host is closed on arrival, with
    // provenance; the other host's alert stays open.
    let second = run_hunt(
        &coordinator,
        vec![
            finding("sigma/admin-share", "ws42", base + 6 * DAY_MS),
            finding("sigma/admin-share", "ws43", base + 6 * DAY_MS),
        ],
    )
    .await;
    let all = client
        .all_cases(
            v1::ListCasesRequest {
                kinds: "alerts".into(),
                state: "all".into(),
                rule: "sigma/admin-share".into(),
                ..v1::ListCasesRequest::default()
            },
            0,
        )
        .await
        .expect("all")
        .cases;
    let newest: Vec<&v1::TriageCase> = all
        .iter()
        .filter(|c| c.hunts.contains(&second.to_string()))
        .collect();
    assert_eq!(newest.len(), 2);
    let closed = newest
        .iter()
        .find(|c| c.entity == "host:ws42")
        .expect("ws42");
    assert_eq!(closed.state, "closed");
    assert_eq!(closed.closed_by, "auto-closed by suppression from-P-1");
    assert!(
        closed.close_reason.contains("accepted proposal P-1"),
        "{}",
        closed.close_reason
    );
    let open = newest
        .iter()
        .find(|c| c.entity == "host:ws43")
        .expect("ws43");
    assert_eq!(open.state, "open");
    // Nothing is deleted: the open queue does not show the auto-closed
    // alert, the auto-closed filter does.
    let auto = client
        .list_cases(v1::ListCasesRequest {
            state: "auto-closed".into(),
            ..v1::ListCasesRequest::default()
        })
        .await
        .expect("auto-closed");
    assert_eq!(auto.total, 1);
    let open_ids: Vec<String> = client
        .all_cases(open_alerts(""), 0)
        .await
        .expect("open")
        .cases
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(!open_ids.contains(&closed.id));

    // A restart loads triage from its rows: the same queue, the same links.
    let before = client
        .all_cases(
            v1::ListCasesRequest {
                state: "all".into(),
                ..v1::ListCasesRequest::default()
            },
            0,
        )
        .await
        .expect("before")
        .cases;
    let shown_before = client.case(&closed.id).await.expect("show");
    coordinator.shutdown().await;
    let (coordinator, url) = start(dir.path()).await;
    let mut client = Client::connect(&url).await.expect("connect");
    let after = client
        .all_cases(
            v1::ListCasesRequest {
                state: "all".into(),
                ..v1::ListCasesRequest::default()
            },
            0,
        )
        .await
        .expect("after")
        .cases;
    assert_eq!(before, after);
    assert_eq!(client.case(&closed.id).await.expect("show"), shown_before);
    assert_eq!(
        client
            .triage_summary()
            .await
            .expect("summary")
            .config_version,
        1
    );
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_triage_requests_name_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, url) = start(dir.path()).await;
    seed(&coordinator).await;
    let mut client = Client::connect(&url).await.expect("connect");
    let missing = client.case("A-99").await.expect_err("no such alert");
    assert_eq!(missing.code(), Some(tonic::Code::NotFound));
    let bad_id = client.case("alert-1").await.expect_err("not an id");
    assert_eq!(bad_id.code(), Some(tonic::Code::InvalidArgument));

    let yaml = "version: 1\nsuppressions:\n  - id: s1\n    bogus: true\n";
    let err = client
        .apply_triage_config(v1::ApplyTriageConfigRequest {
            yaml: yaml.into(),
            actor: "carol".into(),
            ..v1::ApplyTriageConfigRequest::default()
        })
        .await
        .expect_err("unknown key");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    assert!(err.to_string().contains("line 4"), "{err}");

    run_hunt(&coordinator, vec![finding("r", "h1", now_ms() - HOUR_MS)]).await;
    let alert = client
        .list_cases(open_alerts(""))
        .await
        .expect("list")
        .cases
        .remove(0);
    let err = client
        .update_case(
            &alert.id,
            "bob",
            v1::update_case_request::Action::Verdict(v1::SetVerdict {
                kind: "maybe".into(),
                comment: String::new(),
            }),
        )
        .await
        .expect_err("not a verdict");
    assert!(err.to_string().contains("true-positive"), "{err}");
    let err = client
        .update_case(
            &alert.id,
            "bob",
            v1::update_case_request::Action::Reopen("why not".into()),
        )
        .await
        .expect_err("open already");
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition));
    coordinator.shutdown().await;
}
