//! Raft messages between coordinators over gRPC. Ordinary messages use
//! `RaftService.Send` (a client stream per peer); snapshots, which can hold
//! every uploaded module, go through `RaftService.SendSnapshot` as a stream
//! of chunks on a task of their own, so heartbeats keep flowing meanwhile.
//!
//! The raft thread hands messages over without blocking; one task per peer
//! keeps a stream open, reconnecting with backoff. Peers it cannot reach and
//! the outcome of each snapshot send are reported back to raft. The set of
//! peers follows the replicated address book.

use crate::node::Transport;
use crate::storage::AddressBook;
use protobuf::Message as _;
use quarry_proto::v1::{self, raft_service_client::RaftServiceClient};
use raft::SnapshotStatus;
use raft::eraftpb::{Message, MessageType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Largest raft message on the wire: a single entry may carry a whole module
/// (up to `service::MAX_MODULE_BYTES`) plus its encoding.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 2 * crate::service::MAX_MODULE_BYTES;

/// Snapshot data per `SnapshotChunk`.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest snapshot a follower accepts (the state machine, modules included).
pub const MAX_SNAPSHOT_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// Most memory reserved for a snapshot before its bytes arrive.
const MAX_SNAPSHOT_RESERVE: u64 = 256 * 1024 * 1024;

/// Messages queued per peer before new ones are dropped (raft resends).
const QUEUE: usize = 4096;

struct Peer {
    url: String,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Reports {
    unreachable: Vec<u64>,
    snapshots: Vec<(u64, SnapshotStatus)>,
}

/// Fault injection: outgoing raft messages for which it returns `true` are
/// dropped, as a lossy network would. For failure tests.
pub type RaftFault = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

/// gRPC transport to the peers in the address book.
pub struct GrpcTransport {
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<u64, Peer>>,
    reports: Arc<Mutex<Reports>>,
    fault: Option<RaftFault>,
}

impl GrpcTransport {
    /// A transport that spawns its per-peer tasks on `runtime`; peers come
    /// from [`Transport::set_peers`].
    pub fn new(runtime: &tokio::runtime::Handle) -> Self {
        Self {
            runtime: runtime.clone(),
            peers: Mutex::new(HashMap::new()),
            reports: Arc::default(),
            fault: None,
        }
    }

    /// Drops the messages `fault` picks (failure tests).
    pub fn with_fault(mut self, fault: Option<RaftFault>) -> Self {
        self.fault = fault;
        self
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        if let Ok(peers) = self.peers.lock() {
            for peer in peers.values() {
                peer.task.abort();
            }
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        let Ok(peers) = self.peers.lock() else {
            return;
        };
        for message in messages {
            if self.fault.as_ref().is_some_and(|drop| drop(&message)) {
                continue;
            }
            match peers.get(&message.to) {
                // A full queue means the peer is slow or gone: drop, raft retries.
                Some(peer) => {
                    if let Err(e) = peer.queue.try_send(message) {
                        let message = e.into_inner();
                        tracing::debug!(
                            to = message.to,
                            "raft queue to a peer is full; dropping a message"
                        );
                        if message.get_msg_type() == MessageType::MsgSnapshot
                            && let Ok(mut reports) = self.reports.lock()
                        {
                            reports
                                .snapshots
                                .push((message.to, SnapshotStatus::Failure));
                        }
                    }
                }
                None => tracing::warn!(
                    to = message.to,
                    "raft message for a coordinator with no known URL; add it with `quarry cluster add-coordinator`"
                ),
            }
        }
    }

    fn unreachable(&self) -> Vec<u64> {
        self.reports
            .lock()
            .map(|mut r| std::mem::take(&mut r.unreachable))
            .unwrap_or_default()
    }

    fn snapshot_reports(&self) -> Vec<(u64, SnapshotStatus)> {
        self.reports
            .lock()
            .map(|mut r| std::mem::take(&mut r.snapshots))
            .unwrap_or_default()
    }

    fn set_peers(&self, book: &AddressBook) {
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        peers.retain(|id, peer| {
            let keep = book.get(id) == Some(&peer.url);
            if !keep {
                tracing::info!(peer = id, url = %peer.url, "raft peer dropped");
                peer.task.abort();
            }
            keep
        });
        for (&id, url) in book {
            if peers.contains_key(&id) {
                continue;
            }
            tracing::info!(peer = id, %url, "raft peer added");
            let (queue, rx) = mpsc::channel(QUEUE);
            let task = self
                .runtime
                .spawn(peer_loop(id, url.clone(), rx, self.reports.clone()));
            peers.insert(
                id,
                Peer {
                    url: url.clone(),
                    queue,
                    task,
                },
            );
        }
    }
}

async fn peer_loop(
    id: u64,
    url: String,
    mut queue: mpsc::Receiver<Message>,
    reports: Arc<Mutex<Reports>>,
) {
    let mut backoff = Duration::from_millis(50);
    let report = |why: &str| {
        tracing::debug!(peer = id, %url, why, "raft peer unreachable");
        if let Ok(mut r) = reports.lock() {
            r.unreachable.push(id);
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
                // Messages queued meanwhile are stale; raft will resend. A
                // snapshot among them failed and must be reported as such.
                while let Ok(message) = queue.try_recv() {
                    if message.get_msg_type() == MessageType::MsgSnapshot
                        && let Ok(mut r) = reports.lock()
                    {
                        r.snapshots.push((id, SnapshotStatus::Failure));
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (tx, rx) = mpsc::channel::<v1::RaftMessage>(QUEUE);
        let mut client = RaftServiceClient::new(channel.clone())
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
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
                    if message.get_msg_type() == MessageType::MsgSnapshot {
                        tokio::spawn(send_snapshot(id, channel.clone(), message, reports.clone()));
                        continue;
                    }
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

/// Splits a MsgSnapshot into chunks: the message without its data first,
/// then the data 1 MiB at a time. Chunks are cut as the stream is read, so
/// sending holds the snapshot (shared with raft's copy) and one chunk, not
/// a second copy of the whole.
pub fn snapshot_chunks(
    mut message: Message,
) -> Result<impl Iterator<Item = v1::SnapshotChunk> + Send + 'static, String> {
    let data = std::mem::take(&mut message.mut_snapshot().data);
    let header = message
        .write_to_bytes()
        .map_err(|e| format!("cannot encode the snapshot message: {e}"))?;
    let total_bytes = data.len() as u64;
    // At least one chunk, which carries the message even with no data.
    let count = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES).max(1);
    Ok((0..count).map(move |n| {
        let from = n * SNAPSHOT_CHUNK_BYTES;
        let to = (from + SNAPSHOT_CHUNK_BYTES).min(data.len());
        let first = n == 0;
        v1::SnapshotChunk {
            message: if first { header.clone() } else { Vec::new() },
            total_bytes: if first { total_bytes } else { 0 },
            data: data[from..to].to_vec(),
        }
    }))
}

#[tracing::instrument(skip_all, fields(peer = to, index = message.get_snapshot().get_metadata().index, bytes = message.get_snapshot().data.len()))]
async fn send_snapshot(
    to: u64,
    channel: tonic::transport::Channel,
    message: Message,
    reports: Arc<Mutex<Reports>>,
) {
    let started = std::time::Instant::now();
    let status = match snapshot_chunks(message) {
        Ok(chunks) => {
            let mut client = RaftServiceClient::new(channel);
            match client.send_snapshot(tokio_stream::iter(chunks)).await {
                Ok(_) => {
                    tracing::info!(elapsed = ?started.elapsed(), "snapshot sent");
                    SnapshotStatus::Finish
                }
                Err(status) => {
                    tracing::warn!(error = %status, "snapshot send failed; raft will retry");
                    SnapshotStatus::Failure
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot prepare a snapshot for sending");
            SnapshotStatus::Failure
        }
    };
    if let Ok(mut r) = reports.lock() {
        r.snapshots.push((to, status));
    }
}

/// Reassembles a snapshot from its chunks into the MsgSnapshot to step.
#[derive(Default)]
pub struct SnapshotAssembler {
    message: Option<Message>,
    total: u64,
    data: Vec<u8>,
}

impl SnapshotAssembler {
    /// Adds the next chunk.
    pub fn push(&mut self, chunk: v1::SnapshotChunk) -> Result<(), String> {
        if self.message.is_none() {
            if chunk.message.is_empty() {
                return Err("a snapshot stream must start with the raft message".into());
            }
            let message = Message::parse_from_bytes(&chunk.message)
                .map_err(|e| format!("undecodable snapshot message: {e}"))?;
            if message.get_msg_type() != MessageType::MsgSnapshot {
                return Err(format!(
                    "expected a MsgSnapshot, got {:?}",
                    message.get_msg_type()
                ));
            }
            if chunk.total_bytes > MAX_SNAPSHOT_BYTES {
                return Err(format!(
                    "snapshot of {} bytes exceeds the {MAX_SNAPSHOT_BYTES}-byte limit",
                    chunk.total_bytes
                ));
            }
            self.total = chunk.total_bytes;
            // Reserve what a typical state needs up front, but never trust a
            // peer's announcement with more than that: the rest grows as it
            // actually arrives.
            let reserve = self.total.min(MAX_SNAPSHOT_RESERVE);
            self.data.reserve(usize::try_from(reserve).unwrap_or(0));
            self.message = Some(message);
        } else if !chunk.message.is_empty() {
            return Err("only the first snapshot chunk may carry the raft message".into());
        }
        if self.data.len() as u64 + chunk.data.len() as u64 > self.total {
            return Err(format!(
                "snapshot data exceeds the announced {} bytes",
                self.total
            ));
        }
        self.data.extend_from_slice(&chunk.data);
        Ok(())
    }

    /// The complete MsgSnapshot, once every byte arrived.
    pub fn finish(self) -> Result<Message, String> {
        let mut message = self
            .message
            .ok_or_else(|| "the snapshot stream was empty".to_owned())?;
        if self.data.len() as u64 != self.total {
            return Err(format!(
                "snapshot stream ended after {} of {} bytes",
                self.data.len(),
                self.total
            ));
        }
        message.mut_snapshot().data = self.data.into();
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_survives_chunking_and_reassembly() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.to = 4;
        message.mut_snapshot().mut_metadata().index = 42;
        let data: Vec<u8> = (0..(SNAPSHOT_CHUNK_BYTES * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        message.mut_snapshot().data = data.clone().into();
        let chunks: Vec<_> = snapshot_chunks(message).expect("chunks").collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.data.len() <= SNAPSHOT_CHUNK_BYTES));
        let mut assembler = SnapshotAssembler::default();
        for chunk in chunks {
            assembler.push(chunk).expect("push");
        }
        let back = assembler.finish().expect("finish");
        assert_eq!(back.get_snapshot().get_metadata().index, 42);
        assert_eq!(back.get_snapshot().data.as_ref(), data.as_slice());
    }

    #[test]
    fn an_empty_snapshot_is_one_chunk_with_the_message() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.mut_snapshot().mut_metadata().index = 7;
        let chunks: Vec<_> = snapshot_chunks(message).expect("chunks").collect();
        assert_eq!(chunks.len(), 1);
        let mut assembler = SnapshotAssembler::default();
        assembler.push(chunks[0].clone()).expect("push");
        let back = assembler.finish().expect("finish");
        assert_eq!(back.get_snapshot().get_metadata().index, 7);
        assert!(back.get_snapshot().data.is_empty());
    }

    #[test]
    fn truncated_snapshot_stream_is_refused() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.mut_snapshot().data = vec![7u8; SNAPSHOT_CHUNK_BYTES + 1].into();
        let mut chunks: Vec<_> = snapshot_chunks(message).expect("chunks").collect();
        chunks.pop();
        let mut assembler = SnapshotAssembler::default();
        for chunk in chunks {
            assembler.push(chunk).expect("push");
        }
        let err = assembler.finish().expect_err("truncated");
        assert!(err.contains("ended after"), "{err}");
    }
}
