//! `RaftService`: where peers deliver raft messages and stream snapshots.

use crate::node::NodeHandle;
use crate::transport::SnapshotReceiver;
use protobuf::Message as _;
use quarry_proto::v1::{self, raft_service_server::RaftService};
use raft::eraftpb::MessageType;
use std::path::PathBuf;
use tokio_stream::StreamExt as _;
use tonic::{Request, Status, Streaming};

/// The coordinator-to-coordinator raft endpoint.
#[derive(Clone)]
pub struct RaftApi {
    node: NodeHandle,
    /// Where snapshot files are received.
    snapshots: PathBuf,
}

impl RaftApi {
    /// Delivers into `node`, receiving snapshot files into its store's
    /// snapshot directory.
    pub fn new(node: NodeHandle) -> Self {
        Self {
            snapshots: node.snapshot_dir().to_owned(),
            node,
        }
    }
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn send(
        &self,
        request: Request<Streaming<v1::RaftMessage>>,
    ) -> Result<tonic::Response<v1::RaftAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(message) = stream.next().await {
            let message = message?;
            let parsed = raft::eraftpb::Message::parse_from_bytes(&message.message)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            // A snapshot message names a file that must have arrived first.
            if parsed.get_msg_type() == MessageType::MsgSnapshot {
                return Err(Status::invalid_argument(
                    "snapshots are sent with RaftService.SendSnapshot, not Send",
                ));
            }
            self.node.step(parsed)?;
        }
        Ok(tonic::Response::new(v1::RaftAck {}))
    }

    #[tracing::instrument(skip_all, fields(from, index))]
    async fn send_snapshot(
        &self,
        request: Request<Streaming<v1::SnapshotChunk>>,
    ) -> Result<tonic::Response<v1::RaftAck>, Status> {
        let mut stream = request.into_inner();
        // File writes run on a blocking thread, a few chunks behind the
        // network: memory holds those chunks, not the snapshot.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<v1::SnapshotChunk>(4);
        let mut receiver = SnapshotReceiver::new(&self.snapshots);
        let writer = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                receiver.push(chunk)?;
            }
            receiver.finish()
        });
        let mut cut = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is below
                    }
                }
                Err(status) => {
                    cut = Some(status);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Status::internal(format!("snapshot writer task failed: {e}")))?;
        if let Some(status) = cut {
            return Err(status);
        }
        let message = written.map_err(Status::invalid_argument)?;
        tracing::Span::current()
            .record("from", message.from)
            .record("index", message.get_snapshot().get_metadata().index);
        tracing::info!("snapshot file received; handing it to raft");
        self.node.step(message)?;
        Ok(tonic::Response::new(v1::RaftAck {}))
    }
}
