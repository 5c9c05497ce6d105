//! The coordinator's metrics (names and meanings in docs/observability.md).
//!
//! Raft gauges describe this node. Cluster figures (tasks, hunts, triage)
//! are reported by the leader only — gauges while it leads, counters for
//! the entries it applies while leading — so summing a metric over all
//! coordinators gives the cluster's figure whoever leads.

use crate::node::{NodeHandle, RaftStatus};
use crate::state::{Command, Response, TaskState};
use quarry_telemetry::metrics::{
    AsyncInstrument, Counter, DURATION_BUCKETS, Histogram, KeyValue, ObservableGauge, meter,
};
use std::sync::OnceLock;

const SCOPE: &str = "quarry-coordinator";

/// The synchronous instruments, made on first use (after the process
/// installed its meter provider).
pub(crate) struct Instruments {
    leader_changes: Counter<u64>,
    proposal_duration: Histogram<f64>,
    tasks_finished: Counter<u64>,
    hunts_submitted: Counter<u64>,
    triage_alerts: Counter<u64>,
}

pub(crate) fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = meter(SCOPE);
        let instruments = Instruments {
            leader_changes: meter
                .u64_counter("quarry.raft.leader_changes")
                .with_description("Times this node saw the raft leader change (including to none).")
                .with_unit("{change}")
                .build(),
            proposal_duration: meter
                .f64_histogram("quarry.raft.proposal.duration")
                .with_description("Time from proposing a command on this node to its being applied here.")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            tasks_finished: meter
                .u64_counter("quarry.tasks.finished")
                .with_description("Task attempts that ended, by outcome (succeeded, failed) and, for failures, reason (module, host).")
                .with_unit("{task}")
                .build(),
            hunts_submitted: meter
                .u64_counter("quarry.hunts.submitted")
                .with_description("Hunts submitted (by clients and by schedules).")
                .with_unit("{hunt}")
                .build(),
            triage_alerts: meter
                .u64_counter("quarry.triage.alerts")
                .with_description("Triage alert events by action: opened, auto_closed (by a suppression), reopened, escalated (raised or joined an incident).")
                .with_unit("{alert}")
                .build(),
        };
        // Every series exists from the start, at zero: a rate over a series
        // that appears with its first event misses that event.
        instruments.leader_changes.add(0, &[]);
        instruments.hunts_submitted.add(0, &[]);
        instruments
            .tasks_finished
            .add(0, &[KeyValue::new("outcome", "succeeded")]);
        for reason in ["module", "host"] {
            instruments.tasks_finished.add(
                0,
                &[
                    KeyValue::new("outcome", "failed"),
                    KeyValue::new("reason", reason),
                ],
            );
        }
        for action in ["opened", "auto_closed", "reopened", "escalated"] {
            instruments
                .triage_alerts
                .add(0, &[KeyValue::new("action", action)]);
        }
        instruments
    })
}

impl Instruments {
    /// The leader known to this node changed from `old` to `new`.
    pub(crate) fn leader_changed(&self, old: &RaftStatus, new: &RaftStatus) {
        if old.leader != new.leader {
            self.leader_changes.add(1, &[]);
        }
    }

    /// A proposal made here was applied (or failed) after `elapsed`.
    pub(crate) fn proposal_done(&self, elapsed: std::time::Duration, ok: bool) {
        self.proposal_duration.record(
            elapsed.as_secs_f64(),
            &[KeyValue::new(
                "outcome",
                if ok { "applied" } else { "failed" },
            )],
        );
    }

    /// The leader applied `command` with `response`: counts what it means
    /// for the cluster figures.
    pub(crate) fn applied(&self, command: &CommandKind, response: &Response) {
        // Client submissions (whether or not wrapped in a request id) and
        // schedule runs all answer with the new hunt.
        if matches!(response, Response::Hunt { .. }) {
            self.hunts_submitted.add(1, &[]);
        }
        match command {
            CommandKind::Report { failed } => {
                if matches!(response, Response::StaleReport) {
                    return;
                }
                let attributes = match failed {
                    None => vec![KeyValue::new("outcome", "succeeded")],
                    Some(module_fault) => vec![
                        KeyValue::new("outcome", "failed"),
                        KeyValue::new("reason", if *module_fault { "module" } else { "host" }),
                    ],
                };
                self.tasks_finished.add(1, &attributes);
            }
            CommandKind::Other => {}
        }
    }

    /// Counts the alert events among the triage effects the leader applied.
    pub(crate) fn triage(&self, effects: &[quarry_triage::Effect]) {
        use quarry_triage::Effect;
        for effect in effects {
            let action = match effect {
                Effect::AlertOpened { .. } => "opened",
                Effect::AlertAutoClosed { .. } => "auto_closed",
                Effect::AlertReopened { .. } => "reopened",
                Effect::IncidentOpened { .. } | Effect::IncidentUpdated { .. } => "escalated",
                _ => continue,
            };
            self.triage_alerts
                .add(1, &[KeyValue::new("action", action)]);
        }
    }
}

/// What a command means for the metrics, taken before it is applied (apply
/// consumes it).
pub(crate) enum CommandKind {
    /// A task report; `failed` is `Some(module_fault)` for a failure.
    Report {
        failed: Option<bool>,
    },
    Other,
}

impl CommandKind {
    pub(crate) fn of(command: &Command) -> Self {
        match command {
            Command::RecordResult { report, .. } | Command::RecordTrimmedResult { report, .. } => {
                CommandKind::Report {
                    failed: report.outcome.as_ref().err().map(|e| e.module_fault),
                }
            }
            _ => CommandKind::Other,
        }
    }
}

/// Registers the observable gauges of a running node: raft state always,
/// task and hunt counts while it leads. They read the node through weak
/// references: a stopped node reports nothing. Keep the returned handles
/// for the node's life.
pub(crate) fn observe(node: &NodeHandle) -> Vec<ObservableGauge<u64>> {
    let _ = instruments();
    let meter = meter(SCOPE);
    let raft_gauge = |name: &'static str,
                      description: &'static str,
                      unit: &'static str,
                      read: fn(&RaftStatus) -> u64| {
        let status = node.subscribe();
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |observer: &dyn AsyncInstrument<u64>| {
                // The sender is gone once the node stopped.
                if status.has_changed().is_ok() {
                    observer.observe(read(&status.borrow()), &[]);
                }
            })
            .build()
    };
    let mut gauges = vec![
        raft_gauge(
            "quarry.raft.term",
            "This node's current raft term.",
            "{term}",
            |s| s.term,
        ),
        raft_gauge(
            "quarry.raft.leader",
            "1 while this node is the raft leader, else 0.",
            // Not "1": the Prometheus exporter would name it `_ratio`.
            "",
            |s| u64::from(s.is_leader),
        ),
        raft_gauge(
            "quarry.raft.commit_index",
            "The highest log index this node knows committed.",
            "{entry}",
            |s| s.commit,
        ),
        raft_gauge(
            "quarry.raft.applied_index",
            "The highest log index applied to this node's state machine.",
            "{entry}",
            |s| s.applied,
        ),
        raft_gauge(
            "quarry.raft.apply_lag",
            "Committed entries not yet applied on this node.",
            "{entry}",
            |s| s.commit.saturating_sub(s.applied),
        ),
    ];
    let cluster_gauge = |name: &'static str,
                         description: &'static str,
                         unit: &'static str,
                         count: fn(&crate::state::State) -> u64| {
        let replica = node.weak_replica();
        let status = node.subscribe();
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |observer: &dyn AsyncInstrument<u64>| {
                if !status.borrow().is_leader {
                    return;
                }
                let Some(replica) = replica.upgrade() else {
                    return;
                };
                if let Ok(replica) = replica.read() {
                    observer.observe(count(&replica.state), &[]);
                }
            })
            .build()
    };
    gauges.push(cluster_gauge(
        "quarry.tasks.queued",
        "Tasks waiting for a worker (reported by the leader).",
        "{task}",
        |state| {
            state
                .tasks
                .values()
                .filter(|t| matches!(t.state, TaskState::Pending))
                .count() as u64
        },
    ));
    gauges.push(cluster_gauge(
        "quarry.tasks.running",
        "Tasks assigned to a worker and not yet reported (reported by the leader).",
        "{task}",
        |state| {
            state
                .tasks
                .values()
                .filter(|t| matches!(t.state, TaskState::Assigned { .. }))
                .count() as u64
        },
    ));
    gauges.push(cluster_gauge(
        "quarry.hunts.running",
        "Hunts not yet finished (reported by the leader).",
        "{hunt}",
        |state| {
            state
                .hunts
                .values()
                .filter(|h| !h.state.is_terminal())
                .count() as u64
        },
    ));
    gauges.push(cluster_gauge(
        "quarry.workers.registered",
        "Workers registered with the cluster, live or not (reported by the leader).",
        "{worker}",
        |state| state.workers.len() as u64,
    ));
    gauges
}
