//! The worker's `IngestService`: a client streams one input file; the worker
//! spools it to its data directory (EVTX needs to seek), reads it with the
//! same readers as `quarry worker ingest`, appends the events to the shard and
//! answers once they are fsynced. The worker then registers again so the
//! coordinator learns the new or grown shard.
//!
//! Nothing here blocks the async runtime that also carries the worker's
//! heartbeats and task stream: the spool is written through `tokio::fs` and
//! the parse-and-append runs on a blocking thread. At most
//! [`MAX_CONCURRENT_INGESTS`] requests run at once; more are refused with
//! `RESOURCE_EXHAUSTED` at once rather than queued, since a queued request
//! would hold its client's upload (and a blocking thread) open.

use crate::ingest::{self, Format};
use crate::shard::{ShardError, ShardStore};
use quarry_proto::v1::{self, ingest_service_server::IngestService};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Notify, Semaphore};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

/// Largest input accepted in one request.
pub const MAX_INGEST_BYTES: u64 = 8 << 30;
/// Ingest requests a worker runs at once (appends to its store are
/// serialised anyway; this bounds spool space and blocking threads).
pub const MAX_CONCURRENT_INGESTS: usize = 2;

/// Serves `quarry.v1.IngestService`.
pub struct IngestApi {
    store: Arc<ShardStore>,
    spool: PathBuf,
    shards_changed: Arc<Notify>,
    next: AtomicU64,
    running: Arc<Semaphore>,
}

impl IngestApi {
    /// Ingests into `store`, spooling uploads under `spool`.
    pub fn new(store: Arc<ShardStore>, spool: PathBuf, shards_changed: Arc<Notify>) -> Self {
        Self {
            store,
            spool,
            shards_changed,
            next: AtomicU64::new(0),
            running: Arc::new(Semaphore::new(MAX_CONCURRENT_INGESTS)),
        }
    }
}

/// Removes the spooled file however the request ends.
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn shard_status(error: ShardError) -> Status {
    match error {
        ShardError::InvalidName { .. } | ShardError::InvalidLabel { .. } => {
            Status::invalid_argument(error.to_string())
        }
        ShardError::AlreadyExists { .. } => Status::failed_precondition(error.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn io_status(what: &str, path: &Path, error: std::io::Error) -> Status {
    Status::internal(format!("cannot {what} {}: {error}", path.display()))
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    // The readers' item type carries a `Malformed` by value; renaming its
    // source in place is the point of the closure below.
    #[allow(clippy::result_large_err)]
    #[tracing::instrument(skip_all, fields(shard))]
    async fn ingest(
        &self,
        request: Request<Streaming<v1::IngestRequest>>,
    ) -> Result<Response<v1::IngestResponse>, Status> {
        // Taken before reading any upload; held until the append is done.
        let permit = self.running.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this worker is already running {MAX_CONCURRENT_INGESTS} ingests, its limit; \
                 retry when one has finished, or send files one after another"
            ))
        })?;
        let audit_target = quarry_security::audit::AuditTarget::of(&request);
        let mut stream = request.into_inner();
        let first = stream.next().await.ok_or_else(|| {
            Status::invalid_argument("empty ingest request: send a header first")
        })??;
        let header = first.header.ok_or_else(|| {
            Status::invalid_argument("the first ingest message must carry the header")
        })?;
        tracing::Span::current().record("shard", header.shard.as_str());
        audit_target.set(format!("shard {}", header.shard));
        crate::shard::validate_shard_name(&header.shard).map_err(shard_status)?;
        let format: Option<Format> = if header.format.is_empty() {
            None
        } else {
            Some(
                header
                    .format
                    .parse()
                    .map_err(|e: ingest::IngestError| Status::invalid_argument(e.to_string()))?,
            )
        };
        let mut dir = tokio::fs::DirBuilder::new();
        dir.recursive(true);
        // Uploads are logs: owner only, whatever the umask.
        #[cfg(unix)]
        dir.mode(0o700);
        dir.create(&self.spool)
            .await
            .map_err(|e| io_status("create", &self.spool, e))?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self
            .spool
            .join(format!("upload-{}-{n}.part", std::process::id()));
        let spooled = Spooled(path.clone());
        let mut file = tokio::fs::OpenOptions::from(crate::shard::segment::private_file())
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| io_status("create", &path, e))?;
        let mut size = 0u64;
        let mut chunk = first.data;
        loop {
            size += chunk.len() as u64;
            if size > MAX_INGEST_BYTES {
                return Err(Status::invalid_argument(format!(
                    "input is larger than {MAX_INGEST_BYTES} bytes; split it into several requests"
                )));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| io_status("write", &path, e))?;
            match stream.next().await {
                Some(message) => {
                    let message = message?;
                    if message.header.is_some() {
                        return Err(Status::invalid_argument(
                            "only the first ingest message may carry a header",
                        ));
                    }
                    chunk = message.data;
                }
                None => break,
            }
        }
        // tokio's File finishes a write in the background: wait for it.
        file.flush()
            .await
            .map_err(|e| io_status("write", &path, e))?;
        drop(file);
        let store = self.store.clone();
        let source = if header.source.is_empty() {
            "grpc".to_owned()
        } else {
            header.source.clone()
        };
        let shard = header.shard.clone();
        let labels = header.labels.into_iter().collect();
        let response =
            tokio::task::spawn_blocking(move || -> Result<v1::IngestResponse, Status> {
                let _spooled = spooled;
                // Held here, not by the request: a client that hangs up does
                // not end this append, so it still counts against the limit.
                let _permit = permit;
                let (format, records) = ingest::open(&path, format)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                // Readers name the spool file; the client knows its input by `source`.
                let records = records.map(|record| {
                    record.map_err(|mut malformed| {
                        malformed.position.source = source.clone();
                        malformed
                    })
                });
                let report = store
                    .append_from(&shard, labels, &source, records, &mut |_| {})
                    .map_err(shard_status)?;
                crate::metrics::instruments().ingested(report.events_stored, report.malformed);
                Ok(v1::IngestResponse {
                    shard: shard.clone(),
                    format: format.name().to_owned(),
                    events_stored: report.events_stored,
                    malformed: report.malformed,
                    without_timestamp: report.without_timestamp,
                    bytes_written: report.bytes_written,
                    shard_event_count: report.meta.event_count,
                    // This ingest's own first records, held in memory: the
                    // shard's sample file is never read back here.
                    malformed_records: report
                        .malformed_sample
                        .into_iter()
                        .map(|m| v1::MalformedRecordInfo {
                            source: m.source,
                            line: m.line,
                            record: m.record.unwrap_or(0),
                            byte_offset: m.byte_offset,
                            error: m.error,
                        })
                        .collect(),
                })
            })
            .await
            .map_err(|e| Status::internal(format!("ingest task failed: {e}")))??;
        tracing::info!(
            events = response.events_stored,
            malformed = response.malformed,
            "ingested"
        );
        self.shards_changed.notify_one();
        Ok(Response::new(response))
    }
}
