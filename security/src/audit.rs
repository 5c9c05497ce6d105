//! The source of the audit trail: what a server saw of each call worth
//! recording ([`AuditEvent`]), handed to an [`AuditSink`], and the buffer
//! ([`AuditBuffer`]) a node keeps them in until the raft leader has
//! appended them to the replicated log.
//!
//! Recorded: every mutating call, accepted or refused; every refused call,
//! reads included; failed TLS handshakes. Not recorded: accepted reads and
//! accepted node traffic (raft, heartbeats, task reports), thousands a
//! second in a busy cluster and no one's decision.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Longest `detail` kept, in bytes.
pub const MAX_DETAIL: usize = 512;
/// Longest `target` kept, in bytes.
pub const MAX_TARGET: usize = 256;
/// Most events a node holds for the leader; beyond it they are counted and
/// dropped (a flood of refused calls must not exhaust memory), and the
/// count is recorded.
pub const MAX_PENDING: usize = 20_000;
/// Most records in one batch (one raft entry).
pub const MAX_BATCH: usize = 1_000;
/// Pending events that make a node hand a batch over before its next tick.
pub const FLUSH_AT: usize = 200;

/// One call as the receiving server saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditEvent {
    /// `role:name`, `anonymous`, `bad token`, `unknown` or `local`.
    pub principal: String,
    /// The principal's role, empty when none.
    pub role: String,
    /// gRPC method path, or `(tls handshake)`.
    pub rpc: String,
    /// What the call acted on, when the handler said.
    pub target: String,
    /// How it ended.
    pub outcome: tonic::Code,
    /// Why it was refused or failed.
    pub detail: String,
    /// The caller's IP address.
    pub remote: String,
}

impl AuditEvent {
    /// Caps the free-text fields (a caller chooses them).
    pub fn bounded(mut self) -> Self {
        truncate(&mut self.detail, MAX_DETAIL);
        truncate(&mut self.target, MAX_TARGET);
        self
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// The snake-case name of a gRPC code, as audit records carry it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Where a server sends what it saw.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one event; never blocks.
    fn record(&self, event: AuditEvent);
}

/// What a mutating call acted on: the access layer puts an empty one in the
/// request's extensions and records what the handler wrote in it.
#[derive(Clone, Debug, Default)]
pub struct AuditTarget(Arc<Mutex<String>>);

impl AuditTarget {
    /// The slot of `request` (a detached one if it is not audited), for a
    /// handler that learns the target after taking the request apart.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<AuditTarget>()
            .cloned()
            .unwrap_or_default()
    }

    /// Names what the call acts on (`hunt h-…`).
    pub fn set(&self, target: impl Into<String>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = target.into();
        }
    }

    /// The target the handler set, if any.
    pub fn get(&self) -> String {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Names what `request` acts on in its audit record (`hunt h-…`).
pub fn set_target<T>(request: &tonic::Request<T>, target: impl Into<String>) {
    if let Some(slot) = request.extensions().get::<AuditTarget>() {
        slot.set(target);
    }
}

/// An event with when it happened and how many identical ones it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// When the first of them arrived (unix ms, the node's clock).
    pub time_ms: i64,
    /// The call.
    pub event: AuditEvent,
    /// Identical refusals folded into this one (1: just this).
    pub count: u32,
}

impl Stamped {
    /// The record as the API carries it (no sequence number yet).
    pub fn to_proto(&self) -> quarry_proto::v1::AuditRecord {
        let event = &self.event;
        quarry_proto::v1::AuditRecord {
            seq: 0,
            time_ms: self.time_ms,
            principal: event.principal.clone(),
            role: event.role.clone(),
            rpc: event.rpc.clone(),
            target: event.target.clone(),
            outcome: code_name(event.outcome).to_owned(),
            detail: event.detail.clone(),
            node: String::new(),
            remote: event.remote.clone(),
            count: self.count,
        }
    }
}

/// Records a node hands over at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The node, `role:name`.
    pub origin: String,
    /// Increasing per origin, across restarts (see [`AuditBuffer::new`]):
    /// the leader appends a batch once however often it is retried.
    pub number: u64,
    /// The records, oldest first.
    pub records: Vec<Stamped>,
}

impl Batch {
    /// The batch as `AuditService.ForwardAudit` sends it.
    pub fn to_request(&self) -> quarry_proto::v1::ForwardAuditRequest {
        quarry_proto::v1::ForwardAuditRequest {
            origin: self.origin.clone(),
            batch: self.number,
            records: self.records.iter().map(Stamped::to_proto).collect(),
        }
    }
}

/// Events a node collected and has not yet seen appended.
pub struct AuditBuffer {
    origin: String,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    pending: Mutex<Pending>,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<Stamped>,
    /// Refusals in `queue` by what they have in common, for folding.
    index: HashMap<AuditEvent, usize>,
    dropped: u64,
    /// Handed over, not yet acknowledged; handed over again until it is.
    in_flight: Option<Batch>,
    next_number: u64,
}

impl AuditBuffer {
    /// A buffer for node `origin`, stamping events with `clock` (unix ms).
    /// Batch numbers start at the clock's reading times 1,000, so a node
    /// that restarts numbers above what it sent before (unless it sent a
    /// thousand batches a millisecond, which its tick rules out).
    pub fn new(origin: impl Into<String>, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        let first = u64::try_from(clock()).unwrap_or(0).saturating_mul(1_000);
        Self {
            origin: origin.into(),
            clock: Box::new(clock),
            pending: Mutex::new(Pending {
                next_number: first.max(1),
                ..Pending::default()
            }),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// The node this buffer speaks for.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Waits until enough events are pending to hand a batch over early.
    pub async fn filled(&self) {
        self.ready.notified().await;
    }

    /// The batch to hand to the leader: the one in flight if it was not
    /// acknowledged, else up to [`MAX_BATCH`] pending records (with a
    /// record of any dropped for want of room). `None`: nothing to send.
    pub fn batch(&self) -> Option<Batch> {
        let now = (self.clock)();
        let mut pending = self.pending.lock().ok()?;
        if let Some(batch) = &pending.in_flight {
            return Some(batch.clone());
        }
        if pending.queue.is_empty() && pending.dropped == 0 {
            return None;
        }
        let mut records: Vec<Stamped> = Vec::new();
        if pending.dropped > 0 {
            records.push(Stamped {
                time_ms: now,
                event: AuditEvent {
                    principal: self.origin.clone(),
                    role: String::new(),
                    rpc: "(audit buffer)".to_owned(),
                    target: String::new(),
                    outcome: tonic::Code::ResourceExhausted,
                    detail: format!(
                        "{} audit records were dropped: more than {MAX_PENDING} waited for the leader",
                        pending.dropped
                    ),
                    remote: String::new(),
                },
                count: u32::try_from(pending.dropped).unwrap_or(u32::MAX),
            });
            pending.dropped = 0;
        }
        let take = pending.queue.len().min(MAX_BATCH - records.len());
        records.extend(pending.queue.drain(..take));
        pending.index.clear();
        let number = pending.next_number;
        pending.next_number += 1;
        let batch = Batch {
            origin: self.origin.clone(),
            number,
            records,
        };
        pending.in_flight = Some(batch.clone());
        Some(batch)
    }

    /// The leader appended batch `number`.
    pub fn acknowledge(&self, number: u64) {
        if let Ok(mut pending) = self.pending.lock()
            && pending
                .in_flight
                .as_ref()
                .is_some_and(|b| b.number == number)
        {
            pending.in_flight = None;
        }
    }

    /// Events waiting, the batch in flight included.
    pub fn len(&self) -> usize {
        self.pending.lock().map_or(0, |p| {
            p.queue.len() + p.in_flight.as_ref().map_or(0, |b| b.records.len())
        })
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a node's batches go: the raft log on a leader, a forwarding call
/// elsewhere.
pub trait Deliver {
    /// Hands `batch` over; an error says why it must be tried again.
    fn deliver(&mut self, batch: &Batch) -> impl Future<Output = Result<(), String>> + Send;
}

/// Hands `buffer`'s batches to `to` every `every` (sooner when many
/// records wait) until `shutdown`, then once more. A batch that cannot be
/// delivered stays buffered and goes next time, so a leader change or a
/// network failure loses nothing the node recorded.
pub async fn hand_over(
    buffer: &AuditBuffer,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut to: impl Deliver,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => true,
            _ = ticker.tick() => false,
            () = buffer.filled() => false,
        };
        while let Some(batch) = buffer.batch() {
            match to.deliver(&batch).await {
                Ok(()) => buffer.acknowledge(batch.number),
                Err(why) => {
                    tracing::debug!(
                        %why,
                        waiting = buffer.len(),
                        origin = buffer.origin(),
                        "audit records not handed over yet; retrying"
                    );
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

impl AuditSink for AuditBuffer {
    fn record(&self, event: AuditEvent) {
        let event = event.bounded();
        let time_ms = (self.clock)();
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        // Refusals repeat (a misconfigured client retrying, a scan): one
        // record per kind per batch, with a count.
        let fold = event.outcome != tonic::Code::Ok;
        if fold
            && let Some(&at) = pending.index.get(&event)
            && let Some(record) = pending.queue.get_mut(at)
        {
            record.count = record.count.saturating_add(1);
            return;
        }
        if pending.queue.len() >= MAX_PENDING {
            pending.dropped += 1;
            return;
        }
        if fold {
            let at = pending.queue.len();
            pending.index.insert(event.clone(), at);
        }
        pending.queue.push_back(Stamped {
            time_ms,
            event,
            count: 1,
        });
        if pending.queue.len() == FLUSH_AT {
            self.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(principal: &str) -> AuditEvent {
        AuditEvent {
            principal: principal.to_owned(),
            role: "viewer".to_owned(),
            rpc: "/quarry.v1.HuntService/SubmitHunt".to_owned(),
            target: String::new(),
            outcome: tonic::Code::PermissionDenied,
            detail: "no".to_owned(),
            remote: "127.0.0.1".to_owned(),
        }
    }

    #[test]
    fn refusals_fold_batches_repeat_until_acknowledged_and_numbers_grow() {
        let buffer = AuditBuffer::new("coordinator:1", || 5);
        assert!(buffer.batch().is_none());
        for _ in 0..3 {
            buffer.record(refusal("viewer:v"));
        }
        buffer.record(refusal("viewer:w"));
        let mut accepted = refusal("hunter:h");
        accepted.outcome = tonic::Code::Ok;
        buffer.record(accepted.clone());
        buffer.record(accepted);
        let first = buffer.batch().expect("batch");
        assert_eq!(first.number, 5_000);
        let counts: Vec<_> = first
            .records
            .iter()
            .map(|r| (r.event.principal.as_str(), r.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("viewer:v", 3),
                ("viewer:w", 1),
                ("hunter:h", 1),
                ("hunter:h", 1)
            ]
        );
        // Not acknowledged: the same batch again.
        buffer.record(refusal("viewer:v"));
        assert_eq!(buffer.batch(), Some(first.clone()));
        buffer.acknowledge(first.number);
        let second = buffer.batch().expect("batch");
        assert_eq!(second.number, 5_001);
        assert_eq!(second.records.len(), 1, "folding restarts after a batch");
        buffer.acknowledge(second.number);
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_flood_is_bounded_and_what_was_dropped_is_recorded() {
        let buffer = AuditBuffer::new("worker:w1", || 1);
        for i in 0..(MAX_PENDING + 10) {
            buffer.record(refusal(&format!("viewer:v{i}")));
        }
        let batch = buffer.batch().expect("batch");
        assert_eq!(batch.records.len(), MAX_BATCH);
        let dropped = &batch.records[0];
        assert_eq!(dropped.event.outcome, tonic::Code::ResourceExhausted);
        assert!(
            dropped
                .event
                .detail
                .contains("10 audit records were dropped")
        );
        let long = AuditEvent {
            detail: "é".repeat(MAX_DETAIL),
            ..refusal("x")
        }
        .bounded();
        assert!(long.detail.len() <= MAX_DETAIL + '…'.len_utf8());
    }
}
