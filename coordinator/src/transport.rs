//! Raft messages between coordinators over gRPC. Ordinary messages use
//! `RaftService.Send` (a client stream per peer); snapshots, which hold
//! every module and finding, go through `RaftService.SendSnapshot` as a
//! stream of chunks read from the snapshot file (see
//! [`crate::snapshot_file`]) on a task of their own, so heartbeats keep
//! flowing meanwhile and memory holds a few chunks, not the snapshot.
//!
//! The raft thread hands messages over without blocking; one task per peer
//! keeps a stream open, reconnecting with backoff. Peers it cannot reach and
//! the outcome of each snapshot send are reported back to raft. The set of
//! peers follows the replicated address book.

use crate::node::Transport;
use crate::snapshot_file::{Incoming, SnapshotRef};
use crate::storage::AddressBook;
use protobuf::Message as _;
use quarry_proto::v1::{self, raft_service_client::RaftServiceClient};
use quarry_security::TlsFiles;
use raft::SnapshotStatus;
use raft::eraftpb::{Message, MessageType};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Largest raft message on the wire: a single entry may carry a whole module
/// (up to `service::MAX_MODULE_BYTES`) plus its encoding.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 2 * crate::service::MAX_MODULE_BYTES;

/// Snapshot data per `SnapshotChunk`.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest snapshot a follower accepts (the state machine, modules and
/// findings included); it is written to disk as it arrives.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Chunks read ahead of the stream when sending a snapshot.
const CHUNKS_AHEAD: usize = 2;

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
    /// This coordinator's certificate and CA, for connections to peers.
    tls: Option<TlsFiles>,
    /// Where this node's snapshot files are.
    snapshots: PathBuf,
    peers: Mutex<HashMap<u64, Peer>>,
    reports: Arc<Mutex<Reports>>,
    fault: Option<RaftFault>,
}

impl GrpcTransport {
    /// A transport that spawns its per-peer tasks on `runtime` and sends
    /// snapshot files from `snapshots`; peers come from
    /// [`Transport::set_peers`].
    pub fn new(runtime: &tokio::runtime::Handle, snapshots: &Path) -> Self {
        Self {
            runtime: runtime.clone(),
            tls: None,
            snapshots: snapshots.to_owned(),
            peers: Mutex::new(HashMap::new()),
            reports: Arc::default(),
            fault: None,
        }
    }

    /// Connects to peers over mutual TLS with these files.
    pub fn with_tls(mut self, tls: Option<TlsFiles>) -> Self {
        self.tls = tls;
        self
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
            let task = self.runtime.spawn(peer_loop(
                id,
                url.clone(),
                rx,
                self.reports.clone(),
                self.snapshots.clone(),
                self.tls.clone(),
            ));
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
    snapshots: PathBuf,
    tls: Option<TlsFiles>,
) {
    let mut backoff = Duration::from_millis(50);
    let report = |why: &str| {
        tracing::debug!(peer = id, %url, why, "raft peer unreachable");
        if let Ok(mut r) = reports.lock() {
            r.unreachable.push(id);
        }
    };
    loop {
        let channel = match quarry_security::tls::endpoint(&url, tls.as_ref()) {
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
                        tokio::spawn(send_snapshot(
                            id,
                            channel.clone(),
                            message,
                            reports.clone(),
                            snapshots.clone(),
                        ));
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

/// Streams a MsgSnapshot and the file it names as chunks: the message
/// (whose data is the file's [`SnapshotRef`]) with the file's length first,
/// then the file 1 MiB at a time, read by a blocking task at most
/// [`CHUNKS_AHEAD`] chunks ahead of the stream. A read error ends the
/// stream early, which the receiver refuses as truncated.
pub fn snapshot_chunks(
    message: &Message,
    snapshots: &Path,
) -> Result<ReceiverStream<v1::SnapshotChunk>, String> {
    let reference = SnapshotRef::decode(&message.get_snapshot().data).map_err(|e| e.to_string())?;
    let header = message
        .write_to_bytes()
        .map_err(|e| format!("cannot encode the snapshot message: {e}"))?;
    let path = snapshots.join(reference.file_name());
    let mut file = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open the snapshot file {}: {e}", path.display()))?;
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut first = true;
        loop {
            let mut data = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
            if let Err(e) = (&mut file)
                .take(SNAPSHOT_CHUNK_BYTES as u64)
                .read_to_end(&mut data)
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the snapshot file; the send fails");
                return;
            }
            if data.is_empty() && !first {
                return;
            }
            let chunk = v1::SnapshotChunk {
                message: if first { header.clone() } else { Vec::new() },
                total_bytes: if first { reference.bytes } else { 0 },
                data,
            };
            first = false;
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

#[tracing::instrument(skip_all, fields(peer = to, index = message.get_snapshot().get_metadata().index))]
async fn send_snapshot(
    to: u64,
    channel: tonic::transport::Channel,
    message: Message,
    reports: Arc<Mutex<Reports>>,
    snapshots: PathBuf,
) {
    let started = std::time::Instant::now();
    let status = match snapshot_chunks(&message, &snapshots) {
        Ok(chunks) => {
            let mut client = RaftServiceClient::new(channel);
            match client.send_snapshot(chunks).await {
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
            tracing::warn!(error = %e, "cannot send a snapshot; raft will retry");
            SnapshotStatus::Failure
        }
    };
    if let Ok(mut r) = reports.lock() {
        r.snapshots.push((to, status));
    }
}

/// Receives a snapshot's chunks into a file in the receiver's snapshot
/// directory, checking length and digest, and gives back the MsgSnapshot
/// to step once the file is complete and synced.
pub struct SnapshotReceiver {
    dir: PathBuf,
    received: Option<(Message, SnapshotRef, Incoming)>,
}

impl SnapshotReceiver {
    /// Receives into `snapshots`.
    pub fn new(snapshots: &Path) -> Self {
        Self {
            dir: snapshots.to_owned(),
            received: None,
        }
    }

    /// Adds the next chunk (blocking file I/O).
    pub fn push(&mut self, chunk: v1::SnapshotChunk) -> Result<(), String> {
        let (_, reference, file) = match &mut self.received {
            Some(received) => {
                if !chunk.message.is_empty() {
                    return Err("only the first snapshot chunk may carry the raft message".into());
                }
                received
            }
            None => {
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
                let reference =
                    SnapshotRef::decode(&message.get_snapshot().data).map_err(|e| e.to_string())?;
                if chunk.total_bytes != reference.bytes {
                    return Err(format!(
                        "the stream announces {} bytes but the snapshot file has {}",
                        chunk.total_bytes, reference.bytes
                    ));
                }
                if reference.bytes > MAX_SNAPSHOT_BYTES {
                    return Err(format!(
                        "snapshot of {} bytes exceeds the {MAX_SNAPSHOT_BYTES}-byte limit",
                        reference.bytes
                    ));
                }
                let file = Incoming::create(&self.dir).map_err(|e| e.to_string())?;
                self.received.insert((message, reference, file))
            }
        };
        if file.len() + chunk.data.len() as u64 > reference.bytes {
            return Err(format!(
                "snapshot data exceeds the announced {} bytes",
                reference.bytes
            ));
        }
        file.write(&chunk.data).map_err(|e| e.to_string())
    }

    /// The MsgSnapshot to step, once every byte arrived and the file is in
    /// place (blocking file I/O).
    pub fn finish(self) -> Result<Message, String> {
        let (message, reference, file) = self
            .received
            .ok_or_else(|| "the snapshot stream was empty".to_owned())?;
        if file.len() != reference.bytes {
            return Err(format!(
                "snapshot stream ended after {} of {} bytes",
                file.len(),
                reference.bytes
            ));
        }
        file.finish(&reference).map_err(|e| e.to_string())?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot_file::{ROW_FINDINGS, RowWriter};
    use tokio_stream::StreamExt as _;

    /// A MsgSnapshot naming a snapshot file of `rows` rows in `dir`.
    fn snapshot_message(dir: &Path, rows: usize, value_bytes: usize) -> Message {
        let mut writer = RowWriter::create(dir).expect("create");
        for n in 0..rows {
            let value: Vec<u8> = (0..value_bytes).map(|i| ((i + n) % 251) as u8).collect();
            writer
                .row(ROW_FINDINGS, format!("f/{n}").as_bytes(), &value)
                .expect("row");
        }
        let reference = writer.finish(42, 2).expect("finish");
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.to = 4;
        message.mut_snapshot().mut_metadata().index = 42;
        message.mut_snapshot().data = reference.encode().expect("encode").into();
        message
    }

    async fn chunks_of(message: &Message, dir: &Path) -> Vec<v1::SnapshotChunk> {
        snapshot_chunks(message, dir)
            .expect("chunks")
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_snapshot_file_survives_chunking_and_arrives_under_its_name() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let message = snapshot_message(from.path(), 3, SNAPSHOT_CHUNK_BYTES);
        let chunks = chunks_of(&message, from.path()).await;
        assert_eq!(chunks.len(), 3 + 1, "3 MiB and change is four chunks");
        assert!(chunks.iter().all(|c| c.data.len() <= SNAPSHOT_CHUNK_BYTES));
        let mut receiver = SnapshotReceiver::new(to.path());
        for chunk in chunks {
            receiver.push(chunk).expect("push");
        }
        let back = receiver.finish().expect("finish");
        assert_eq!(back.get_snapshot().get_metadata().index, 42);
        let reference = SnapshotRef::decode(&back.get_snapshot().data).expect("reference");
        let sent = std::fs::read(from.path().join(reference.file_name())).expect("sent");
        let received = std::fs::read(to.path().join(reference.file_name())).expect("received");
        assert!(
            sent == received,
            "the received file differs from the sent one"
        );
    }

    #[tokio::test]
    async fn a_small_snapshot_is_one_chunk_with_the_message() {
        let from = tempfile::tempdir().expect("tempdir");
        let message = snapshot_message(from.path(), 0, 0);
        let chunks = chunks_of(&message, from.path()).await;
        assert_eq!(chunks.len(), 1);
        assert!(!chunks[0].message.is_empty());
    }

    #[tokio::test]
    async fn a_truncated_or_altered_snapshot_stream_is_refused_and_leaves_no_file() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let message = snapshot_message(from.path(), 2, SNAPSHOT_CHUNK_BYTES);
        let mut chunks = chunks_of(&message, from.path()).await;

        let mut receiver = SnapshotReceiver::new(to.path());
        for chunk in chunks.iter().take(chunks.len() - 1) {
            receiver.push(chunk.clone()).expect("push");
        }
        let err = receiver.finish().expect_err("truncated");
        assert!(err.contains("ended after"), "{err}");

        chunks[1].data[10] ^= 1;
        let mut receiver = SnapshotReceiver::new(to.path());
        for chunk in chunks {
            receiver.push(chunk).expect("push");
        }
        let err = receiver.finish().expect_err("altered");
        assert!(err.contains("arrived damaged"), "{err}");
        assert_eq!(
            std::fs::read_dir(to.path()).expect("dir").count(),
            0,
            "nothing is left behind"
        );
    }
}
