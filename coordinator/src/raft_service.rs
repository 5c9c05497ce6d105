//! `RaftService`: where peers deliver raft messages and stream snapshots.

use crate::node::NodeHandle;
use crate::transport::SnapshotAssembler;
use protobuf::Message as _;
use quarry_proto::v1::{self, raft_service_server::RaftService};
use tokio_stream::StreamExt as _;
use tonic::{Request, Status, Streaming};

/// The coordinator-to-coordinator raft endpoint.
#[derive(Clone)]
pub struct RaftApi {
    node: NodeHandle,
}

impl RaftApi {
    /// Delivers into `node`.
    pub fn new(node: NodeHandle) -> Self {
        Self { node }
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
            self.node.step(parsed)?;
        }
        Ok(tonic::Response::new(v1::RaftAck {}))
    }

    #[tracing::instrument(skip_all, fields(from, index, bytes))]
    async fn send_snapshot(
        &self,
        request: Request<Streaming<v1::SnapshotChunk>>,
    ) -> Result<tonic::Response<v1::RaftAck>, Status> {
        let mut stream = request.into_inner();
        let mut assembler = SnapshotAssembler::default();
        while let Some(chunk) = stream.next().await {
            assembler.push(chunk?).map_err(Status::invalid_argument)?;
        }
        let message = assembler.finish().map_err(Status::invalid_argument)?;
        let snapshot = message.get_snapshot();
        tracing::Span::current()
            .record("from", message.from)
            .record("index", snapshot.get_metadata().index)
            .record("bytes", snapshot.data.len());
        tracing::info!("snapshot received; handing it to raft");
        self.node.step(message)?;
        Ok(tonic::Response::new(v1::RaftAck {}))
    }
}
