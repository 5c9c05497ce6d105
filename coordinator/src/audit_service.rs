//! `quarry.v1.AuditService` (admins read the trail; nodes hand their
//! records to the leader) and [`hand_over`], the task that takes this
//! coordinator's records from its [`AuditBuffer`] into the replicated log:
//! proposed directly on the leader, forwarded to it from a follower.
//! A batch stays buffered until appended, and is appended once however
//! often it is retried (numbered per origin), so a leader change loses
//! nothing a node recorded.

use crate::audit::{AuditEntry, MAX_BATCH};
use crate::service::{Api, Shared};
use crate::state::Command;
use quarry_proto::v1::{self, audit_service_client::AuditServiceClient};
use quarry_security::audit::{AuditBuffer, Batch, Deliver, Stamped};
use quarry_security::{TlsFiles, access};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Status};

/// How often buffered records are handed over (sooner when many wait).
const HAND_OVER_EVERY: Duration = Duration::from_secs(1);
/// Records a listing returns unless asked for fewer.
const DEFAULT_LIST: usize = 1_000;
/// Most records one listing returns.
const MAX_LIST: usize = 10_000;

fn proto_of(seq: u64, entry: &AuditEntry) -> v1::AuditRecord {
    v1::AuditRecord {
        seq,
        time_ms: entry.time_ms,
        principal: entry.principal.clone(),
        role: entry.role.clone(),
        rpc: entry.rpc.clone(),
        target: entry.target.clone(),
        outcome: entry.outcome.clone(),
        detail: entry.detail.clone(),
        node: entry.node.clone(),
        remote: entry.remote.clone(),
        count: entry.count,
    }
}

/// A forwarded record as kept: the receiving node is the forwarder, and
/// free text is bounded as if recorded here.
fn entry_of(record: v1::AuditRecord, node: &str) -> AuditEntry {
    let mut event = quarry_security::audit::AuditEvent {
        principal: record.principal,
        role: record.role,
        rpc: record.rpc,
        target: record.target,
        outcome: tonic::Code::Ok,
        detail: record.detail,
        remote: record.remote,
    }
    .bounded();
    let mut outcome = record.outcome;
    outcome.truncate(32);
    for text in [&mut event.principal, &mut event.role, &mut event.rpc] {
        text.truncate(quarry_security::audit::MAX_TARGET);
    }
    AuditEntry {
        time_ms: record.time_ms,
        principal: event.principal,
        role: event.role,
        rpc: event.rpc,
        target: event.target,
        outcome,
        detail: event.detail,
        node: node.to_owned(),
        remote: event.remote,
        count: record.count.max(1),
    }
}

fn batch_entries(batch: &Batch) -> Vec<AuditEntry> {
    batch
        .records
        .iter()
        .map(|r: &Stamped| entry_of(r.to_proto(), &batch.origin))
        .collect()
}

impl Api {
    /// Appends `entries` as batch `batch` of `origin` (this node leads).
    async fn append_audit(
        &self,
        origin: String,
        batch: u64,
        records: Vec<AuditEntry>,
    ) -> Result<(), Status> {
        append(&self.shared, origin, batch, records).await
    }
}

async fn append(
    shared: &Shared,
    origin: String,
    batch: u64,
    records: Vec<AuditEntry>,
) -> Result<(), Status> {
    let command = Command::AppendAudit {
        origin,
        batch,
        records,
        retention: shared.audit_retention,
        now_ms: shared.clock.now_ms(),
    };
    shared.propose_write("", command).await.map(|_| ())
}

#[tonic::async_trait]
impl v1::audit_service_server::AuditService for Api {
    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<tonic::Response<v1::ListAuditResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_LIST,
            n => usize::try_from(n).unwrap_or(MAX_LIST).min(MAX_LIST),
        };
        let response = self.shared.read(|state| {
            let (records, more) = state.audit.list(
                request.since_ms,
                request.after_seq,
                request.principal.trim(),
                request.refused_only,
                limit,
            );
            v1::ListAuditResponse {
                records: records
                    .into_iter()
                    .map(|(seq, entry)| proto_of(seq, entry))
                    .collect(),
                more,
                oldest_seq: state.audit.oldest_seq(),
            }
        })?;
        Ok(tonic::Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(origin, batch, records))]
    async fn forward_audit(
        &self,
        request: Request<v1::ForwardAuditRequest>,
    ) -> Result<tonic::Response<v1::ForwardAuditResponse>, Status> {
        // Over TLS a node speaks only for itself.
        let certified = access::is_secure(&request)
            .then(|| access::principal_of(&request).map(ToString::to_string));
        let request = request.into_inner();
        let origin = match certified {
            Some(Some(principal)) if request.origin.is_empty() || request.origin == principal => {
                principal
            }
            Some(Some(principal)) => {
                return Err(Status::permission_denied(format!(
                    "{principal} may not forward audit records as {}: a node forwards only its own",
                    request.origin
                )));
            }
            Some(None) => {
                return Err(Status::unauthenticated(
                    "forwarding audit records needs a node certificate",
                ));
            }
            None if request.origin.is_empty() => {
                return Err(Status::invalid_argument("origin is empty"));
            }
            None => request.origin,
        };
        if request.records.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "an audit batch holds at most {MAX_BATCH} records, not {}",
                request.records.len()
            )));
        }
        tracing::Span::current()
            .record("origin", origin.as_str())
            .record("batch", request.batch)
            .record("records", request.records.len());
        self.shared.require_leader()?;
        let records = request
            .records
            .into_iter()
            .map(|r| entry_of(r, &origin))
            .collect();
        self.append_audit(origin, request.batch, records).await?;
        Ok(tonic::Response::new(v1::ForwardAuditResponse {}))
    }
}

/// Hands this coordinator's buffered records to the raft log (see
/// [`quarry_security::audit::hand_over`]) until `shutdown`.
pub async fn hand_over(
    shared: Arc<Shared>,
    tls: Option<TlsFiles>,
    shutdown: watch::Receiver<bool>,
) {
    let buffer = shared.audit.clone();
    let to = ToLeader {
        shared,
        tls,
        leader: None,
    };
    quarry_security::audit::hand_over(&buffer, HAND_OVER_EVERY, shutdown, to).await;
}

/// Proposes batches on the leader; forwards them to it from a follower,
/// over a connection kept while it leads.
struct ToLeader {
    shared: Arc<Shared>,
    tls: Option<TlsFiles>,
    leader: Option<(String, AuditServiceClient<tonic::transport::Channel>)>,
}

impl Deliver for ToLeader {
    async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        let shared = &self.shared;
        let status = shared.node.status();
        if status.is_leader {
            return append(
                shared,
                batch.origin.clone(),
                batch.number,
                batch_entries(batch),
            )
            .await
            .map_err(|s| s.message().to_owned());
        }
        let url = shared
            .node
            .peer_url(status.leader)
            .ok_or_else(|| "no leader known".to_owned())?;
        let client = match &mut self.leader {
            Some((known, client)) if *known == url => client,
            slot => {
                let endpoint = quarry_security::tls::endpoint(&url, self.tls.as_ref())
                    .map_err(|e| e.to_string())?
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(10));
                let client = AuditServiceClient::new(endpoint.connect_lazy());
                &mut slot.insert((url, client)).1
            }
        };
        let request = batch.to_request();
        let sent = client.forward_audit(request).await;
        if let Err(status) = sent {
            self.leader = None;
            return Err(status.message().to_owned());
        }
        Ok(())
    }
}

/// A new buffer for coordinator `node`'s records.
pub fn buffer_for(node: u64, clock: crate::clock::SharedClock) -> Arc<AuditBuffer> {
    Arc::new(AuditBuffer::new(format!("coordinator:{node}"), move || {
        clock.now_ms()
    }))
}
