//! The gRPC transport streams snapshots in chunks to a real coordinator and
//! reports each send's outcome, `Finish` or `Failure`, back for
//! `report_snapshot`.

use quarry_coordinator::node::Transport as _;
use quarry_coordinator::transport::{GrpcTransport, SNAPSHOT_CHUNK_BYTES};
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use raft::SnapshotStatus;
use raft::eraftpb::{Message, MessageType};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn snapshot_to(to: u64, bytes: usize) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.to = to;
    message.from = 99;
    // An old term: the receiving node ignores it after it was delivered.
    message.term = 1;
    let snapshot = message.mut_snapshot();
    snapshot.mut_metadata().index = 5;
    snapshot.mut_metadata().term = 1;
    snapshot.data = vec![7u8; bytes].into();
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_send_reports_finish_to_a_live_peer_and_failure_to_a_dead_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = Coordinator::start(CoordinatorConfig::single_node(
        dir.path().to_owned(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await
    .expect("coordinator");
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let transport = GrpcTransport::new(&tokio::runtime::Handle::current());
    transport.set_peers(&BTreeMap::from([
        (2, format!("http://{}", coordinator.addr())),
        (3, format!("http://{dead}")),
    ]));
    // Several chunks' worth, so the stream and reassembly are exercised.
    let size = 3 * SNAPSHOT_CHUNK_BYTES + 5;
    transport.send(vec![snapshot_to(2, size), snapshot_to(3, size)]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reports = Vec::new();
    while reports.len() < 2 {
        reports.extend(transport.snapshot_reports());
        assert!(
            Instant::now() < deadline,
            "snapshot sends were not reported: {reports:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reports.sort_by_key(|(peer, _)| *peer);
    assert_eq!(
        reports,
        vec![(2, SnapshotStatus::Finish), (3, SnapshotStatus::Failure)]
    );
    assert!(transport.unreachable().contains(&3));
    drop(transport);
    coordinator.shutdown().await;
}
