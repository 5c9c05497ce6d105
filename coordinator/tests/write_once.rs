//! A write has one true outcome even when leadership moves while it is in
//! flight: three real coordinators on loopback, the leader's append
//! responses dropped so its `SubmitHunt` cannot commit under it, then
//! leadership moved to a follower that holds the entry and commits it.
//! quarry-client's retry (same request id) must not create a second hunt;
//! a write without a request id is told its outcome is unknown (ABORTED)
//! instead of being retried.

mod common;

use quarry_client::{Client, HuntRequest};
use quarry_coordinator::Coordinator;
use quarry_coordinator::state::{Command, ShardDescription};
use quarry_coordinator::transport::RaftFault;
use quarry_proto::{ShardId, WorkerId, v1};
use raft::eraftpb::{Message, MessageType};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Group {
    nodes: BTreeMap<u64, Coordinator>,
    urls: BTreeMap<u64, String>,
    /// Append responses to this node are dropped (0: none).
    starve: Arc<AtomicU64>,
}

async fn start_group(dir: &std::path::Path) -> Group {
    let urls = common::group_urls(&common::free_ports(3), "http");
    let starve = Arc::new(AtomicU64::new(0));
    let mut nodes = BTreeMap::new();
    for &id in urls.keys() {
        let mut config = common::group_config(dir, &urls, id);
        let starve = starve.clone();
        let fault: RaftFault = Arc::new(move |m: &Message| {
            m.get_msg_type() == MessageType::MsgAppendResponse
                && m.to == starve.load(Ordering::SeqCst)
        });
        config.raft_fault = Some(fault);
        nodes.insert(id, Coordinator::start(config).await.expect("start"));
    }
    Group {
        nodes,
        urls,
        starve,
    }
}

impl Group {
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((id, _)) = self.nodes.iter().find(|(_, c)| c.node().status().is_leader) {
                return *id;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starves the leader of append responses, lets `write` start against
    /// it, then hands leadership to a follower (as the leader's own
    /// transfer would, with `MsgTimeoutNow`); returns the new leader.
    async fn move_leadership_during<F>(&self, write: F) -> (u64, tokio::task::JoinHandle<F::Output>)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let old = self.leader().await;
        self.starve.store(old, Ordering::SeqCst);
        let write = tokio::spawn(write);
        // The entry reaches the followers' logs; nothing commits.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = self.nodes[&old].node().status();
        assert!(status.is_leader, "the old leader kept its role: {status:?}");
        // A follower whose log lacks the entry the other one has cannot win
        // the election (on a loaded machine the entry may not have reached
        // it yet): ask each follower in turn until one takes over.
        let followers: Vec<u64> = self.nodes.keys().copied().filter(|id| *id != old).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        for target in followers.iter().copied().cycle() {
            let mut timeout_now = Message::default();
            timeout_now.set_msg_type(MessageType::MsgTimeoutNow);
            timeout_now.from = old;
            timeout_now.to = target;
            // The first candidate may have moved the others' term on.
            timeout_now.term = self.nodes[&target].node().status().term.max(status.term);
            self.nodes[&target].node().step(timeout_now).expect("step");
            let turn = Instant::now() + Duration::from_secs(4);
            while Instant::now() < turn {
                if let Some(leader) = followers
                    .iter()
                    .copied()
                    .find(|id| self.nodes[id].node().status().is_leader)
                {
                    self.starve.store(0, Ordering::SeqCst);
                    return (leader, write);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                Instant::now() < deadline,
                "no follower took over from node {old}"
            );
        }
        unreachable!("the loop returns or fails")
    }

    async fn hunt_count(&self, on: u64) -> usize {
        let mut client = Client::connect(&self.urls[&on]).await.expect("connect");
        client.list_hunts(0).await.expect("list").len()
    }
}

async fn seed(group: &Group) {
    let leader = group.leader().await;
    let node = group.nodes[&leader].node();
    common::commit_module_m1(node).await;
    node.propose(Command::RegisterWorker {
        id: WorkerId::new("w1"),
        address: "127.0.0.1:1".into(),
        slots: 1,
        shards: vec![ShardDescription {
            name: ShardId::new("s1"),
            labels: Default::default(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_retried_across_a_leader_change_creates_exactly_one_hunt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = start_group(dir.path()).await;
    seed(&group).await;
    let old = group.leader().await;
    let url = group.urls[&old].clone();
    let (new, submit) = group
        .move_leadership_during(async move {
            let mut client = Client::connect(&url).await.expect("connect");
            client
                .submit_hunt(HuntRequest::new("m@1").shard("s1"))
                .await
        })
        .await;
    let answer = submit
        .await
        .expect("join")
        .expect("the client follows the new leader and gets the first outcome");
    assert!(!answer.hunt_id.is_empty());
    let mut client = Client::connect(&group.urls[&new]).await.expect("connect");
    let hunts = client.list_hunts(0).await.expect("list");
    let ids: Vec<&str> = hunts.iter().map(|h| h.hunt_id.as_str()).collect();
    assert_eq!(ids, vec![answer.hunt_id.as_str()], "exactly one hunt");

    // Without a request id the same race is reported as unknown, not
    // retried: the caller checks before submitting again.
    let old = new;
    let url = group.urls[&old].clone();
    let (new, raw) = group
        .move_leadership_during(async move {
            let mut hunts = v1::hunt_service_client::HuntServiceClient::connect(url)
                .await
                .expect("connect");
            let mut request = HuntRequest::new("m@1").shard("s1").into_proto();
            request.request_id.clear();
            hunts.submit_hunt(request).await
        })
        .await;
    let status = raw
        .await
        .expect("join")
        .expect_err("the outcome is unknown");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(
        status
            .message()
            .contains("may or may not have been applied"),
        "{}",
        status.message()
    );
    // It did commit under the new leader: two hunts in all, one per write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while group.hunt_count(new).await != 2 {
        assert!(
            Instant::now() < deadline,
            "the second write never committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, node) in group.nodes {
        node.shutdown().await;
    }
}
