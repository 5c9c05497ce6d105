//! The worker's metrics (names and meanings in docs/observability.md).

use crate::runtime::{TaskFailure, TaskOutput};
use quarry_telemetry::metrics::{
    AsyncInstrument, Counter, DURATION_BUCKETS, Histogram, KeyValue, ObservableGauge, meter,
};
use std::sync::OnceLock;
use std::time::Duration;

const SCOPE: &str = "quarry-worker";

/// The synchronous instruments, made on first use (after the process
/// installed its meter provider).
pub(crate) struct Instruments {
    run_duration: Histogram<f64>,
    events_scanned: Counter<u64>,
    bytes_read: Counter<u64>,
    sandbox_kills: Counter<u64>,
    tasks: Counter<u64>,
    ingest_events: Counter<u64>,
    ingest_malformed: Counter<u64>,
}

pub(crate) fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = meter(SCOPE);
        let instruments = Instruments {
            run_duration: meter
                .f64_histogram("quarry.module.run.duration")
                .with_description("Wall time of one task's module run (instantiate, plan, init, scan, finish), by module.")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            events_scanned: meter
                .u64_counter("quarry.module.events_scanned")
                .with_description("Events read from shards for a module's tasks, by module.")
                .with_unit("{event}")
                .build(),
            bytes_read: meter
                .u64_counter("quarry.module.read")
                .with_description("Compressed shard bytes read from disk for a module's tasks, by module.")
                .with_unit("By")
                .build(),
            sandbox_kills: meter
                .u64_counter("quarry.sandbox.kills")
                .with_description("Module runs the sandbox stopped, by reason: deadline, memory, output, trap, host_call.")
                .with_unit("{kill}")
                .build(),
            tasks: meter
                .u64_counter("quarry.worker.tasks")
                .with_description("Tasks this worker ran, by outcome: succeeded, failed, cancelled.")
                .with_unit("{task}")
                .build(),
            ingest_events: meter
                .u64_counter("quarry.ingest.events")
                .with_description("Events stored by ingest into this worker's shards.")
                .with_unit("{event}")
                .build(),
            ingest_malformed: meter
                .u64_counter("quarry.ingest.malformed_records")
                .with_description("Ingested records that could not be parsed (counted, not stored).")
                .with_unit("{record}")
                .build(),
        };
        // Every series without a module exists from the start, at zero.
        for reason in KILL_REASONS {
            instruments
                .sandbox_kills
                .add(0, &[KeyValue::new("reason", reason)]);
        }
        for outcome in ["succeeded", "failed", "cancelled"] {
            instruments
                .tasks
                .add(0, &[KeyValue::new("outcome", outcome)]);
        }
        instruments.ingest_events.add(0, &[]);
        instruments.ingest_malformed.add(0, &[]);
        instruments
    })
}

/// The reasons [`kill_reason`] gives.
const KILL_REASONS: [&str; 5] = ["deadline", "memory", "output", "trap", "host_call"];

/// The sandbox-kill reason of a failure, if the sandbox stopped the module.
fn kill_reason(failure: &TaskFailure) -> Option<&'static str> {
    Some(match failure {
        TaskFailure::DeadlineExceeded { .. } => "deadline",
        TaskFailure::MemoryLimit { .. } => "memory",
        TaskFailure::OutputLimit { .. } => "output",
        TaskFailure::Trap { .. } => "trap",
        TaskFailure::HostCallDenied { .. } | TaskFailure::HostCallLimit { .. } => "host_call",
        _ => return None,
    })
}

impl Instruments {
    /// One task of `module` ran for `elapsed` with `result`.
    pub(crate) fn task_ran(
        &self,
        module: &str,
        elapsed: Duration,
        result: &Result<TaskOutput, TaskFailure>,
    ) {
        let by_module = [KeyValue::new("module", module.to_owned())];
        self.run_duration.record(elapsed.as_secs_f64(), &by_module);
        let outcome = match result {
            Ok(output) => {
                self.events_scanned.add(output.events_scanned, &by_module);
                self.bytes_read.add(output.bytes_read, &by_module);
                "succeeded"
            }
            Err(TaskFailure::Cancelled) => "cancelled",
            Err(failure) => {
                // By reason only: the task's error names the module.
                if let Some(reason) = kill_reason(failure) {
                    self.sandbox_kills
                        .add(1, &[KeyValue::new("reason", reason)]);
                }
                "failed"
            }
        };
        self.tasks.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// An ingest stored `events` and counted `malformed` records.
    pub(crate) fn ingested(&self, events: u64, malformed: u64) {
        self.ingest_events.add(events, &[]);
        self.ingest_malformed.add(malformed, &[]);
    }
}

/// Registers a running worker's gauges: tasks running and slots.
pub(crate) fn observe(inner: &std::sync::Arc<crate::agent::Inner>) -> Vec<ObservableGauge<u64>> {
    let _ = instruments();
    let meter = meter(SCOPE);
    let running = std::sync::Arc::downgrade(inner);
    let slots = u64::from(inner.slots_configured());
    vec![
        meter
            .u64_observable_gauge("quarry.worker.tasks.running")
            .with_description("Tasks running on this worker now.")
            .with_unit("{task}")
            .with_callback(move |observer: &dyn AsyncInstrument<u64>| {
                if let Some(inner) = running.upgrade() {
                    observer.observe(u64::from(inner.tasks_running()), &[]);
                }
            })
            .build(),
        meter
            .u64_observable_gauge("quarry.worker.slots")
            .with_description("Tasks this worker runs at once (--slots).")
            .with_unit("{task}")
            .with_callback(move |observer: &dyn AsyncInstrument<u64>| {
                observer.observe(slots, &[]);
            })
            .build(),
    ]
}
