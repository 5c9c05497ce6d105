//! The worker's part of the audit trail: calls to its ingest API (every
//! one, and every refusal) are buffered here and handed to the
//! coordinator leader, which appends them to the replicated trail. A batch
//! stays buffered until the leader took it; a retried batch is appended
//! once (docs/security.md, "Audit trail").

use crate::agent::Inner;
use quarry_proto::v1::{self, audit_service_client::AuditServiceClient};
use quarry_security::audit::{AuditBuffer, Stamped};
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

/// Hands buffered records to the coordinator the worker talks to until
/// `shutdown`, then once more.
pub(crate) async fn hand_over(
    inner: Arc<Inner>,
    buffer: Arc<AuditBuffer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(HAND_OVER_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => true,
            _ = ticker.tick() => false,
            () = buffer.filled() => false,
        };
        while let Some(batch) = buffer.batch() {
            let request = v1::ForwardAuditRequest {
                origin: batch.origin.clone(),
                batch: batch.number,
                records: batch.records.iter().map(Stamped::to_proto).collect(),
            };
            let sent = match crate::agent::connect_channel(&inner).await {
                Ok(channel) => AuditServiceClient::new(channel)
                    .forward_audit(request)
                    .await
                    .map_err(|status| {
                        // "Not the leader" names it: the next try goes there.
                        inner.follow(&status);
                        status.message().to_owned()
                    }),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(_) => buffer.acknowledge(batch.number),
                Err(why) => {
                    tracing::debug!(%why, waiting = buffer.len(), "audit records not handed over yet; retrying");
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}
