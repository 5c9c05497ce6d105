//! A leader that is shut down hands leadership over before it stops: three
//! real coordinators on loopback; `Coordinator::shutdown` of the leader
//! moves leadership to a follower with raft's leader transfer, so the group
//! leads again within a few round trips instead of after an election
//! timeout of silence, with everything committed still there and new
//! writes taken. A single-node group just stops.

mod common;

use quarry_coordinator::Coordinator;
use quarry_coordinator::node::{ELECTION_TIMEOUT, NodeHandle};
use quarry_coordinator::state::{Command, ModuleRecord};
use quarry_proto::ModuleDigest;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn module(n: u8) -> ModuleRecord {
    ModuleRecord {
        digest: ModuleDigest::new(format!("{n:02x}").repeat(32)),
        name: format!("m{n}"),
        version: "1".into(),
        description: String::new(),
        uploaded_ms: 1,
        techniques: Vec::new(),
        bytes: vec![n],
    }
}

async fn commit(node: &NodeHandle, n: u8) {
    node.propose(Command::UploadModule { module: module(n) })
        .await
        .expect("committed")
        .expect("applied");
}

/// The modules `node` holds after a linearizable read.
async fn modules(node: &NodeHandle) -> Vec<String> {
    node.read_index().await.expect("read index");
    let mut names: Vec<String> = node
        .read(|r| r.state.modules.values().map(|m| m.name.clone()).collect())
        .expect("read");
    names.sort();
    names
}

async fn leader_of(nodes: &BTreeMap<u64, Coordinator>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((id, _)) = nodes.iter().find(|(_, c)| c.node().status().is_leader) {
            return *id;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_leadership_to_a_follower_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = common::group_urls(&common::free_ports(3), "http");
    let mut nodes = BTreeMap::new();
    for &id in urls.keys() {
        let config = common::group_config(dir.path(), &urls, id);
        nodes.insert(id, Coordinator::start(config).await.expect("start"));
    }
    let old = leader_of(&nodes).await;
    let leader = nodes[&old].node().clone();
    for n in 1..=5 {
        commit(&leader, n).await;
    }
    let committed = modules(&leader).await;
    assert_eq!(committed, ["m1", "m2", "m3", "m4", "m5"]);
    let term = leader.status().term;
    let last_seen = leader.subscribe();
    let survivors: Vec<NodeHandle> = nodes
        .iter()
        .filter(|(id, _)| **id != old)
        .map(|(_, c)| c.node().clone())
        .collect();

    // Time from the start of the shutdown until a survivor leads.
    let started = Instant::now();
    let watched = survivors.clone();
    let took_over = tokio::spawn(async move {
        loop {
            if let Some(new) = watched.iter().find(|n| n.status().is_leader) {
                return (started.elapsed(), new.status());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let stopping = nodes.remove(&old).expect("the leader");
    stopping.shutdown().await;
    let stopped_after = started.elapsed();
    let (took, new) = tokio::time::timeout(Duration::from_secs(15), took_over)
        .await
        .expect("a survivor leads")
        .expect("watcher");

    // The old leader saw its successor before it stopped: leadership was
    // handed over, not taken by an election after it went silent (which no
    // follower starts while the leader still heartbeats).
    let last = *last_seen.borrow();
    assert!(
        !last.is_leader && last.leader == new.id,
        "the stopped leader's last status names its successor {}: {last:?}",
        new.id
    );
    assert!(
        took < ELECTION_TIMEOUT,
        "a survivor led {took:?} after the shutdown began; an election after silence takes at least {ELECTION_TIMEOUT:?}"
    );
    assert!(
        took <= stopped_after,
        "the new leader was there before the old one stopped ({took:?} vs {stopped_after:?})"
    );
    assert_eq!(
        new.term,
        term + 1,
        "one campaign, the transferee's: {new:?} after term {term}"
    );

    eprintln!(
        "node {} leads {took:?} after node {old}'s shutdown began (term {} -> {}); the shutdown took {stopped_after:?}",
        new.id, term, new.term
    );

    // Nothing committed is lost, and the new leader takes writes.
    let new_leader = survivors
        .iter()
        .find(|n| n.status().id == new.id)
        .expect("the new leader");
    assert_eq!(modules(new_leader).await, committed);
    commit(new_leader, 6).await;
    for survivor in &survivors {
        assert_eq!(
            modules(survivor).await,
            ["m1", "m2", "m3", "m4", "m5", "m6"],
            "node {}",
            survivor.status().id
        );
    }
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_group_just_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, _) = common::start_single_node(dir.path(), |_| {}).await;
    commit(coordinator.node(), 1).await;
    let started = Instant::now();
    coordinator.shutdown().await;
    // No hand-off to wait for (that would take up to two election timeouts).
    assert!(
        started.elapsed() < ELECTION_TIMEOUT,
        "stopping took {:?}",
        started.elapsed()
    );
    // It stopped cleanly: the data directory opens again, with its state.
    let (coordinator, _) = common::start_single_node(dir.path(), |_| {}).await;
    assert_eq!(modules(coordinator.node()).await, ["m1"]);
    coordinator.shutdown().await;
}
