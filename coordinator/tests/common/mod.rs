//! Helpers shared by the coordinator's integration tests.

use quarry_coordinator::node::NodeHandle;
use quarry_coordinator::state::{Command, HuntSpec, ModuleRecord, ModuleSelector, Scope};
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use quarry_proto::{HuntId, ModuleDigest};
use std::net::SocketAddr;
use std::time::Duration;

/// Starts a single-node coordinator on a loopback port with its data under
/// `dir/c` (`adjust` changes the config first) and waits until it leads;
/// returns it and its URL.
#[allow(dead_code)] // not every test binary that includes this module needs it
pub async fn start_single_node(
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut CoordinatorConfig),
) -> (Coordinator, String) {
    let mut config =
        CoordinatorConfig::single_node(dir.join("c"), SocketAddr::from(([127, 0, 0, 1], 0)));
    adjust(&mut config);
    let coordinator = Coordinator::start(config).await.expect("start");
    coordinator
        .wait_for_leadership(Duration::from_secs(10))
        .await
        .expect("leader");
    let url = format!("http://{}", coordinator.addr());
    (coordinator, url)
}

/// `n` free loopback ports (bound, read, released).
#[allow(dead_code)] // not every test binary that includes this module needs it
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// The URLs (by node id, from 1) of a group listening on `ports`.
#[allow(dead_code)] // not every test binary that includes this module needs it
pub fn group_urls(ports: &[u16], scheme: &str) -> std::collections::BTreeMap<u64, String> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("{scheme}://127.0.0.1:{p}")))
        .collect()
}

/// The config of node `id` of the group at `urls` (data under `dir/c<id>`),
/// its peers being the other nodes.
#[allow(dead_code)] // not every test binary that includes this module needs it
pub fn group_config(
    dir: &std::path::Path,
    urls: &std::collections::BTreeMap<u64, String>,
    id: u64,
) -> CoordinatorConfig {
    let port = urls[&id]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a port");
    let peers = urls
        .iter()
        .filter(|(p, _)| **p != id)
        .map(|(p, u)| (*p, u.clone()))
        .collect();
    CoordinatorConfig::single_node(
        dir.join(format!("c{id}")),
        SocketAddr::from(([127, 0, 0, 1], port)),
    )
    .with_peers(id, peers)
}

/// Wall time, as the leader stamps commands with it.
#[allow(dead_code)] // not every test binary that includes this module needs it
pub fn now_ms() -> i64 {
    use quarry_coordinator::clock::Clock as _;
    quarry_coordinator::clock::SystemClock.now_ms()
}

/// Commits module `m@1` through raft. Its bytes are a placeholder (the
/// upload check is an API concern): these tests schedule and report tasks
/// themselves and never run the module.
#[allow(dead_code)] // not every test binary that includes this module needs it
pub async fn commit_module_m1(node: &NodeHandle) {
    node.propose(Command::UploadModule {
        module: ModuleRecord {
            digest: ModuleDigest::new("ab".repeat(32)),
            name: "m".into(),
            version: "1".into(),
            description: String::new(),
            uploaded_ms: 1,
            techniques: Vec::new(),
            bytes: vec![1],
        },
    })
    .await
    .expect("commit")
    .expect("module");
}

/// Submits a hunt of `m@1` (see [`commit_module_m1`]) over `scope` through
/// raft; returns its id.
#[allow(dead_code)] // not every test binary that includes this module needs it
pub async fn submit_m1(node: &NodeHandle, scope: Scope, now_ms: i64) -> HuntId {
    let spec = HuntSpec {
        module: ModuleSelector::NameVersion {
            name: "m".into(),
            version: Some("1".into()),
        },
        params: Default::default(),
        scope,
        limits: Default::default(),
        priority: 0,
        description: String::new(),
        policy: Default::default(),
    };
    match node
        .propose(Command::SubmitHunt { spec, now_ms })
        .await
        .expect("commit")
    {
        Ok(quarry_coordinator::state::Response::Hunt { id, .. }) => id,
        other => panic!("{other:?}"),
    }
}
