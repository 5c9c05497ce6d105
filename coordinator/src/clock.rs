//! Time as an injected dependency, so the state machine, scheduler and leases
//! can be tested without sleeping.
//!
//! Two readings: wall time, which the leader stamps on commands (replicated
//! facts such as "submitted at"), and a monotonic reading for the leader's
//! own timers (worker leases, the grace a new leader gives workers), which
//! must not jump when an operator or NTP steps the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + 'static {
    /// Wall time: milliseconds since the Unix epoch. May step.
    fn now_ms(&self) -> i64;

    /// Milliseconds on a clock that never steps; only differences mean
    /// anything, and only within this process.
    fn monotonic_ms(&self) -> i64;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn monotonic_ms(&self) -> i64 {
        static START: OnceLock<Instant> = OnceLock::new();
        i64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    monotonic: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock whose wall time reads `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self {
            wall: Arc::new(AtomicI64::new(start_ms)),
            monotonic: Arc::default(),
        }
    }

    /// Lets `ms` pass: both readings move.
    pub fn advance_ms(&self, ms: i64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.monotonic.fetch_add(ms, Ordering::SeqCst);
    }

    /// Steps the wall clock by `ms` (either way) without time passing, as
    /// an operator or NTP does.
    pub fn step_wall_ms(&self, ms: i64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.wall.load(Ordering::SeqCst)
    }

    fn monotonic_ms(&self) -> i64 {
        self.monotonic.load(Ordering::SeqCst)
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;
