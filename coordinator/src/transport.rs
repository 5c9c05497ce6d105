//! Raft messages between coordinators over gRPC (`RaftService.Send`, a
//! client stream per peer). The raft thread hands messages over without
//! blocking; one task per peer keeps a stream open, reconnecting with backoff,
//! and peers it cannot reach are reported back to raft.

use crate::node::Transport;
use protobuf::Message as _;
use quarry_proto::v1::{self, raft_service_client::RaftServiceClient};
use raft::eraftpb::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Largest raft message on the wire: a single entry may carry a whole module
/// (up to `service::MAX_MODULE_BYTES`) plus its encoding.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 2 * crate::service::MAX_MODULE_BYTES;

/// Messages queued per peer before new ones are dropped (raft resends).
const QUEUE: usize = 4096;

/// gRPC transport to a fixed set of peers.
pub struct GrpcTransport {
    peers: HashMap<u64, mpsc::Sender<Message>>,
    unreachable: Arc<Mutex<Vec<u64>>>,
}

impl GrpcTransport {
    /// Starts one sender task per peer (`id -> http://host:port`) on `runtime`.
    pub fn start(peers: &BTreeMap<u64, String>, runtime: &tokio::runtime::Handle) -> Self {
        let unreachable = Arc::new(Mutex::new(Vec::new()));
        let peers = peers
            .iter()
            .map(|(&id, url)| {
                let (tx, rx) = mpsc::channel(QUEUE);
                runtime.spawn(peer_loop(id, url.clone(), rx, unreachable.clone()));
                (id, tx)
            })
            .collect();
        Self { peers, unreachable }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            match self.peers.get(&message.to) {
                // A full queue means the peer is slow or gone: drop, raft retries.
                Some(queue) => {
                    if queue.try_send(message).is_err() {
                        tracing::debug!("raft queue to a peer is full; dropping a message");
                    }
                }
                None => tracing::warn!(
                    to = message.to,
                    "raft message for an unknown peer; check --peer flags"
                ),
            }
        }
    }

    fn unreachable(&self) -> Vec<u64> {
        self.unreachable
            .lock()
            .map(|mut ids| std::mem::take(&mut *ids))
            .unwrap_or_default()
    }
}

async fn peer_loop(
    id: u64,
    url: String,
    mut queue: mpsc::Receiver<Message>,
    unreachable: Arc<Mutex<Vec<u64>>>,
) {
    let mut backoff = Duration::from_millis(50);
    let report = |why: &str| {
        tracing::debug!(peer = id, %url, why, "raft peer unreachable");
        if let Ok(mut ids) = unreachable.lock() {
            ids.push(id);
        }
    };
    loop {
        let channel = match tonic::transport::Endpoint::from_shared(url.clone()) {
            Ok(endpoint) => {
                endpoint
                    .connect_timeout(Duration::from_millis(500))
                    .connect()
                    .await
            }
            Err(e) => {
                tracing::error!(peer = id, %url, error = %e, "invalid peer URL; raft cannot reach this peer");
                return;
            }
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(_) => {
                report("connect failed");
                // Messages queued meanwhile are stale; raft will resend.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (tx, rx) = mpsc::channel::<v1::RaftMessage>(QUEUE);
        let mut client =
            RaftServiceClient::new(channel).max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let call = client.send(ReceiverStream::new(rx));
        tokio::pin!(call);
        loop {
            tokio::select! {
                result = &mut call => {
                    if result.is_err() {
                        report("stream failed");
                    }
                    break;
                }
                message = queue.recv() => {
                    let Some(message) = message else { return };
                    let bytes = match message.write_to_bytes() {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot encode a raft message");
                            continue;
                        }
                    };
                    if tx.send(v1::RaftMessage { message: bytes }).await.is_err() {
                        report("stream closed");
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}
