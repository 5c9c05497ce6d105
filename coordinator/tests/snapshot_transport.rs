//! The gRPC transport streams snapshot files in chunks to a real
//! coordinator, which receives them into its own snapshot directory, and
//! reports each send's outcome, `Finish` or `Failure`, back for
//! `report_snapshot`.

use protobuf::Message as _;
use quarry_coordinator::node::Transport as _;
use quarry_coordinator::snapshot_file::{self, ROW_FINDINGS, RowWriter, SnapshotRef};
use quarry_coordinator::transport::{GrpcTransport, SNAPSHOT_CHUNK_BYTES};
use quarry_coordinator::{Coordinator, CoordinatorConfig};
use raft::SnapshotStatus;
use raft::eraftpb::{Message, MessageType};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A snapshot file of about `bytes` bytes in `dir`, and its reference.
fn snapshot_file(dir: &std::path::Path, bytes: usize) -> SnapshotRef {
    let mut writer = RowWriter::create(dir).expect("create");
    for n in 0..bytes / 1000 {
        writer
            .row(
                ROW_FINDINGS,
                format!("f/{n:08}").as_bytes(),
                &[(n % 251) as u8; 1000],
            )
            .expect("row");
    }
    writer.finish(5, 1).expect("finish")
}

fn snapshot_to(to: u64, reference: &SnapshotRef) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.to = to;
    message.from = 99;
    // An old term: the receiving node ignores it after it was delivered.
    message.term = 1;
    let snapshot = message.mut_snapshot();
    snapshot.mut_metadata().index = 5;
    snapshot.mut_metadata().term = 1;
    snapshot.data = reference.encode().expect("encode").into();
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
    let sender = tempfile::tempdir().expect("tempdir");
    // Several chunks' worth, so the stream and the receiver's checks are
    // exercised.
    let reference = snapshot_file(sender.path(), 3 * SNAPSHOT_CHUNK_BYTES + 5);
    let transport = GrpcTransport::new(&tokio::runtime::Handle::current(), sender.path());
    transport.set_peers(&BTreeMap::from([
        (2, format!("http://{}", coordinator.addr())),
        (3, format!("http://{dead}")),
    ]));
    transport.send(vec![snapshot_to(2, &reference), snapshot_to(3, &reference)]);

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
    let sent = std::fs::read(sender.path().join(reference.file_name())).expect("sent");
    let received =
        std::fs::read(snapshot_file::snapshot_dir(dir.path()).join(reference.file_name()))
            .expect("the file arrived in the receiver's snapshot directory");
    assert!(
        sent == received,
        "the received file differs from the sent one"
    );

    // A snapshot message names a file that must have come through
    // SendSnapshot: the plain message stream refuses one.
    let mut client = quarry_proto::v1::raft_service_client::RaftServiceClient::connect(format!(
        "http://{}",
        coordinator.addr()
    ))
    .await
    .expect("connect");
    let forged = quarry_proto::v1::RaftMessage {
        message: snapshot_to(2, &reference).write_to_bytes().expect("encode"),
    };
    let refused = client
        .send(tokio_stream::iter(vec![forged]))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("SendSnapshot"), "{refused:?}");
    drop(transport);
    coordinator.shutdown().await;
}
