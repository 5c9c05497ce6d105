//! `RaftService`: where peers deliver raft messages and stream snapshots.

use crate::node::NodeHandle;
use crate::transport::SnapshotReceiver;
use protobuf::Message as _;
use quarry_proto::v1::{self, raft_service_server::RaftService};
use quarry_security::{Role, access};
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

    /// The member a request comes from: over TLS, the coordinator its
    /// certificate names, which must be a current member (voter or learner,
    /// or in the address book). A node that knows no membership yet (an
    /// empty data directory waiting for its first snapshot) accepts any
    /// coordinator of the cluster's CA. Plaintext (loopback development):
    /// `None`, unchecked.
    fn sender<T>(&self, request: &Request<T>) -> Result<Option<u64>, Status> {
        if !access::is_secure(request) {
            return Ok(None);
        }
        let principal = access::principal_of(request)
            .ok_or_else(|| Status::unauthenticated("raft calls need a coordinator certificate"))?;
        let id = match (principal.role, principal.name.parse::<u64>()) {
            (Role::Coordinator, Ok(id)) => id,
            _ => {
                return Err(Status::permission_denied(format!(
                    "{principal} is not a coordinator; raft messages come only from members"
                )));
            }
        };
        let member = self
            .node
            .read(|replica| {
                let conf = &replica.conf_state;
                let unknown = conf.voters.is_empty() && replica.peers.is_empty();
                unknown
                    || [
                        &conf.voters,
                        &conf.learners,
                        &conf.voters_outgoing,
                        &conf.learners_next,
                    ]
                    .into_iter()
                    .any(|ids| ids.contains(&id))
                    || replica.peers.contains_key(&id)
            })
            .map_err(Status::from)?;
        if !member {
            tracing::warn!(%principal, "raft messages from a coordinator that is not a member dropped");
            return Err(Status::permission_denied(format!(
                "coordinator {id} is not a member of this group; raft messages from it are dropped"
            )));
        }
        Ok(Some(id))
    }

    /// Checks a message's `from` and `to` against the connection's sender
    /// and this node.
    fn check_message(
        &self,
        sender: Option<u64>,
        message: &raft::eraftpb::Message,
    ) -> Result<(), Status> {
        let Some(sender) = sender else {
            return Ok(());
        };
        let me = self.node.status().id;
        if message.from != sender || message.to != me {
            tracing::warn!(
                sender,
                from = message.from,
                to = message.to,
                "forged raft message dropped"
            );
            return Err(Status::permission_denied(format!(
                "a raft message from {} to {} arrived over coordinator {sender}'s connection to coordinator {me}; dropped",
                message.from, message.to
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn send(
        &self,
        request: Request<Streaming<v1::RaftMessage>>,
    ) -> Result<tonic::Response<v1::RaftAck>, Status> {
        let sender = self.sender(&request)?;
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
            self.check_message(sender, &parsed)?;
            self.node.step(parsed)?;
        }
        Ok(tonic::Response::new(v1::RaftAck {}))
    }

    #[tracing::instrument(skip_all, fields(from, index))]
    async fn send_snapshot(
        &self,
        request: Request<Streaming<v1::SnapshotChunk>>,
    ) -> Result<tonic::Response<v1::RaftAck>, Status> {
        let sender = self.sender(&request)?;
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
        self.check_message(sender, &message)?;
        tracing::Span::current()
            .record("from", message.from)
            .record("index", message.get_snapshot().get_metadata().index);
        tracing::info!("snapshot file received; handing it to raft");
        self.node.step(message)?;
        Ok(tonic::Response::new(v1::RaftAck {}))
    }
}
