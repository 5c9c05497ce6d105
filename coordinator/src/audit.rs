//! The replicated audit trail (docs/security.md, "Audit trail"): records
//! of mutating and refused calls, appended by [`Command::AppendAudit`]
//! batches that nodes hand to the leader, numbered in apply order, and let
//! go by age and count. A plain part of the state machine: deterministic,
//! no clock but the command's.
//!
//! [`Command::AppendAudit`]: crate::state::Command::AppendAudit

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Records kept by default, whatever their age.
pub const DEFAULT_MAX_RECORDS: u64 = 100_000;
/// How long records are kept by default.
pub const DEFAULT_RETAIN_FOR: Duration = Duration::from_secs(90 * 24 * 3600);
/// Most records one batch may carry.
pub const MAX_BATCH: usize = quarry_security::audit::MAX_BATCH;
/// Most nodes whose last batch number is remembered (oldest forgotten).
const MAX_ORIGINS: usize = 4_096;

/// One call, as kept in the trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it arrived (unix ms, the receiving node's clock).
    pub time_ms: i64,
    /// `role:name`, `anonymous`, `bad token`, `unknown` or `local`.
    pub principal: String,
    /// The principal's role, empty when none.
    pub role: String,
    /// gRPC method path, `(tls handshake)` or `(audit buffer)`.
    pub rpc: String,
    /// What it acted on, when known.
    pub target: String,
    /// `ok` or a gRPC code in snake case.
    pub outcome: String,
    /// Why it was refused or failed.
    pub detail: String,
    /// The node that received it.
    pub node: String,
    /// The caller's IP address.
    pub remote: String,
    /// Identical refusals folded into this record.
    pub count: u32,
}

impl AuditEntry {
    /// Whether the call was refused or failed.
    pub fn refused(&self) -> bool {
        self.outcome != "ok"
    }

    /// Whether `filter` (`role:name`, or a bare name) names this caller.
    pub fn by(&self, filter: &str) -> bool {
        filter.is_empty()
            || self.principal == filter
            || self
                .principal
                .split_once(':')
                .is_some_and(|(_, name)| name == filter)
    }
}

/// What the trail keeps: how many, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRetention {
    /// Records older than this (at the append's time) go; 0: any age.
    pub retain_ms: i64,
    /// At most this many records (the oldest go first); 0: no limit.
    pub max_records: u64,
}

impl Default for AuditRetention {
    fn default() -> Self {
        Self {
            retain_ms: i64::try_from(DEFAULT_RETAIN_FOR.as_millis()).unwrap_or(i64::MAX),
            max_records: DEFAULT_MAX_RECORDS,
        }
    }
}

/// The trail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTrail {
    /// Records by sequence number.
    pub entries: BTreeMap<u64, AuditEntry>,
    /// The positions of the trail outside the records (stored in one row).
    pub meta: AuditMeta,
}

/// Sequence numbering and the batches already appended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditMeta {
    /// The last sequence number given.
    pub last_seq: u64,
    /// The last batch number appended per origin, with its append index
    /// (to forget the longest-silent origin first).
    pub batches: BTreeMap<String, (u64, u64)>,
}

/// What an append changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Sequence numbers written.
    pub added: Vec<u64>,
    /// Sequence numbers let go by retention.
    pub removed: Vec<u64>,
    /// Whether the batch was new (a retried one changes nothing).
    pub new: bool,
}

impl AuditTrail {
    /// Appends batch `batch` of node `origin`, unless it was appended
    /// before, then applies `retention` as of `now_ms`. `index`: the raft
    /// index of the command, which orders origins by recency.
    pub fn append(
        &mut self,
        origin: &str,
        batch: u64,
        records: Vec<AuditEntry>,
        retention: AuditRetention,
        now_ms: i64,
        index: u64,
    ) -> Appended {
        let mut appended = Appended::default();
        if self
            .meta
            .batches
            .get(origin)
            .is_some_and(|(last, _)| *last >= batch)
        {
            return appended;
        }
        appended.new = true;
        self.meta.batches.insert(origin.to_owned(), (batch, index));
        if self.meta.batches.len() > MAX_ORIGINS
            && let Some(oldest) = self
                .meta
                .batches
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(origin, _)| origin.clone())
        {
            self.meta.batches.remove(&oldest);
        }
        for record in records {
            self.meta.last_seq += 1;
            self.entries.insert(self.meta.last_seq, record);
            appended.added.push(self.meta.last_seq);
        }
        let oldest_kept = now_ms.saturating_sub(retention.retain_ms);
        while let Some((&seq, first)) = self.entries.first_key_value() {
            let too_old = retention.retain_ms > 0 && first.time_ms < oldest_kept;
            let too_many =
                retention.max_records > 0 && self.entries.len() as u64 > retention.max_records;
            if !(too_old || too_many) {
                break;
            }
            self.entries.remove(&seq);
            appended.removed.push(seq);
        }
        appended
    }

    /// Records matching the filters, oldest first: from `since_ms`, after
    /// sequence `after`, by `principal` (empty: anyone), refused only if
    /// asked; at most `limit`, and whether more match.
    pub fn list(
        &self,
        since_ms: i64,
        after: u64,
        principal: &str,
        refused_only: bool,
        limit: usize,
    ) -> (Vec<(u64, &AuditEntry)>, bool) {
        let mut matching = self
            .entries
            .range(after.saturating_add(1)..)
            .filter(|(_, e)| e.time_ms >= since_ms && e.by(principal))
            .filter(|(_, e)| !refused_only || e.refused())
            .map(|(seq, e)| (*seq, e));
        let records: Vec<_> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (records, more)
    }

    /// The oldest sequence number kept (0: none).
    pub fn oldest_seq(&self) -> u64 {
        self.entries.keys().next().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time_ms: i64, principal: &str, outcome: &str) -> AuditEntry {
        AuditEntry {
            time_ms,
            principal: principal.to_owned(),
            role: principal.split(':').next().unwrap_or_default().to_owned(),
            rpc: "/quarry.v1.HuntService/SubmitHunt".to_owned(),
            target: String::new(),
            outcome: outcome.to_owned(),
            detail: String::new(),
            node: "coordinator:1".to_owned(),
            remote: "127.0.0.1".to_owned(),
            count: 1,
        }
    }

    #[test]
    fn a_batch_is_appended_once_in_order_and_retention_lets_the_oldest_go() {
        let mut trail = AuditTrail::default();
        let keep = AuditRetention {
            retain_ms: 1_000,
            max_records: 3,
        };
        let first = trail.append(
            "coordinator:1",
            10,
            vec![
                entry(100, "hunter:a", "ok"),
                entry(200, "viewer:v", "permission_denied"),
            ],
            keep,
            300,
            1,
        );
        assert_eq!(first.added, [1, 2]);
        // Retried (the answer was lost): nothing changes.
        let again = trail.append(
            "coordinator:1",
            10,
            vec![entry(100, "x:y", "ok")],
            keep,
            300,
            2,
        );
        assert!(!again.new && again.added.is_empty());
        // Another node's batch 1 is its own.
        let other = trail.append(
            "worker:w1",
            1,
            vec![entry(250, "admin:root", "ok")],
            keep,
            300,
            3,
        );
        assert_eq!(other.added, [3]);
        // Over the count: the oldest goes. Then by age.
        let more = trail.append(
            "coordinator:1",
            11,
            vec![entry(900, "hunter:a", "ok")],
            keep,
            950,
            4,
        );
        assert_eq!((more.added, more.removed), (vec![4], vec![1]));
        let later = trail.append("coordinator:1", 12, vec![], keep, 1_260, 5);
        assert_eq!(later.removed, [2, 3], "older than 1,000 ms at 1,260");
        assert_eq!(trail.oldest_seq(), 4);
        assert_eq!(trail.meta.last_seq, 4);
    }

    #[test]
    fn listing_filters_by_time_caller_and_outcome_and_pages() {
        let mut trail = AuditTrail::default();
        let records = (0..10)
            .map(|i| {
                let who = if i % 2 == 0 {
                    "hunter:alice"
                } else {
                    "viewer:bob"
                };
                let outcome = if i % 3 == 0 {
                    "permission_denied"
                } else {
                    "ok"
                };
                entry(i * 10, who, outcome)
            })
            .collect();
        trail.append(
            "coordinator:1",
            1,
            records,
            AuditRetention::default(),
            100,
            1,
        );
        let (page, more) = trail.list(0, 0, "alice", false, 3);
        assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 3, 5]);
        assert!(more);
        let (rest, more) = trail.list(0, 5, "hunter:alice", false, 10);
        assert_eq!(rest.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [7, 9]);
        assert!(!more);
        let (refused, _) = trail.list(30, 0, "", true, 10);
        assert_eq!(
            refused.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [4, 7, 10]
        );
    }
}
