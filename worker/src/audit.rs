//! The worker's part of the audit trail: calls to its ingest API (every
//! one, and every refusal) are buffered here and handed to the
//! coordinator leader, which appends them to the replicated trail. A batch
//! stays buffered until the leader took it; a retried batch is appended
//! once (docs/security.md, "Audit trail").

use crate::agent::Inner;
use quarry_proto::v1::audit_service_client::AuditServiceClient;
use quarry_security::audit::{AuditBuffer, Batch, Deliver};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How often buffered records are handed over (sooner when many wait).
const HAND_OVER_EVERY: Duration = Duration::from_secs(1);

/// A buffer for worker `id`'s records, stamped with the system clock.
pub fn buffer_for(id: &quarry_proto::WorkerId) -> Arc<AuditBuffer> {
    Arc::new(AuditBuffer::new(format!("worker:{id}"), || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }))
}

/// Hands buffered records to the coordinator the worker talks to (see
/// [`quarry_security::audit::hand_over`]) until `shutdown`.
pub(crate) async fn hand_over(
    inner: Arc<Inner>,
    buffer: Arc<AuditBuffer>,
    shutdown: watch::Receiver<bool>,
) {
    quarry_security::audit::hand_over(&buffer, HAND_OVER_EVERY, shutdown, ToCoordinator(inner))
        .await;
}

/// Forwards batches to the coordinator in use; "not the leader" names the
/// leader, where the next try goes.
struct ToCoordinator(Arc<Inner>);

impl Deliver for ToCoordinator {
    async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        let inner = &self.0;
        let channel = crate::agent::connect_channel(inner)
            .await
            .map_err(|e| e.to_string())?;
        let request = batch.to_request();
        AuditServiceClient::new(channel)
            .forward_audit(request)
            .await
            .map(|_| ())
            .map_err(|status| {
                inner.follow(&status);
                status.message().to_owned()
            })
    }
}
