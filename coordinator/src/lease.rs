//! Worker leases: the leader's own record of when each worker last
//! heartbeat, judged on the monotonic clock (a wall-clock step must neither
//! expire every lease at once nor keep a dead worker alive), and the term a
//! node has led since, which bounds the grace a new leader gives workers
//! that have not found it yet.

use crate::clock::SharedClock;
use quarry_proto::WorkerId;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// One heartbeat: when, on both clocks.
#[derive(Clone, Copy, Debug)]
struct Beat {
    monotonic_ms: i64,
    wall_ms: i64,
}

/// Last heartbeat per worker (leader-local soft state, not replicated).
pub struct Leases {
    clock: SharedClock,
    timeout_ms: i64,
    beats: Mutex<HashMap<WorkerId, Beat>>,
    /// Workers shutting down gracefully, as their heartbeats say: they keep
    /// their lease (their running tasks may finish) but get no new tasks.
    draining: Mutex<BTreeSet<WorkerId>>,
}

impl Leases {
    /// Leases of `timeout` on `clock`.
    pub fn new(clock: SharedClock, timeout: Duration) -> Self {
        Self {
            clock,
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            beats: Mutex::default(),
            draining: Mutex::default(),
        }
    }

    /// Records whether `worker` is draining, as its heartbeat says.
    pub fn set_draining(&self, worker: &WorkerId, draining: bool) {
        if let Ok(mut set) = self.draining.lock() {
            let changed = if draining {
                set.insert(worker.clone())
            } else {
                set.remove(worker)
            };
            if changed && draining {
                tracing::info!(%worker, "worker is draining: no new tasks for it");
            }
        }
    }

    /// Whether `worker` said it is draining (and has not registered since).
    pub fn is_draining(&self, worker: &WorkerId) -> bool {
        self.draining.lock().is_ok_and(|set| set.contains(worker))
    }

    /// Records a heartbeat of `worker` now.
    pub fn beat(&self, worker: &WorkerId) {
        let beat = Beat {
            monotonic_ms: self.clock.monotonic_ms(),
            wall_ms: self.clock.now_ms(),
        };
        if let Ok(mut beats) = self.beats.lock() {
            beats.insert(worker.clone(), beat);
        }
    }

    fn last(&self, worker: &WorkerId) -> Option<Beat> {
        self.beats.lock().ok()?.get(worker).copied()
    }

    /// Wall time of the last heartbeat, for display.
    pub fn last_wall_ms(&self, worker: &WorkerId) -> Option<i64> {
        self.last(worker).map(|b| b.wall_ms)
    }

    /// Whether `worker` heartbeat within the timeout.
    pub fn fresh(&self, worker: &WorkerId) -> bool {
        self.last(worker)
            .is_some_and(|b| self.clock.monotonic_ms() - b.monotonic_ms <= self.timeout_ms)
    }

    /// Whether `worker`'s lease has expired: no heartbeat for the timeout,
    /// counting from `leader_since` (monotonic) at the earliest, since a new
    /// leader has heard nobody yet and must give workers time to find it.
    pub fn expired(&self, worker: &WorkerId, leader_since: i64) -> bool {
        let last = self
            .last(worker)
            .map_or(leader_since, |b| b.monotonic_ms.max(leader_since));
        self.clock.monotonic_ms() - last > self.timeout_ms
    }
}

/// The term this node leads and since when (monotonic), as the leader's
/// duties see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    current: Option<(u64, i64)>,
}

impl Leadership {
    /// Updates from the node's status; returns since when (monotonic) this
    /// node has led in its current term, or `None` when it does not lead.
    /// A new term restarts the count even if no status without leadership
    /// was seen in between: the workers may have gone to another leader.
    pub fn observe(&mut self, is_leader: bool, term: u64, now_monotonic: i64) -> Option<i64> {
        if !is_leader {
            self.current = None;
            return None;
        }
        match self.current {
            Some((led, since)) if led == term => Some(since),
            _ => {
                self.current = Some((term, now_monotonic));
                Some(now_monotonic)
            }
        }
    }
}

/// How often a leader records its hunt clock while hunts run
/// ([`crate::state::Command::Tick`]); after a leader change, deadlines are
/// judged at most this late.
pub const TICK_MS: i64 = 5_000;

/// The time a leader judges hunt deadlines by. Deadlines are replicated
/// wall times, but leaders' wall clocks differ and step: a new leader whose
/// clock runs an hour ahead must not end every hunt at once, nor a leader
/// whose clock an operator steps forward. So the leader anchors its time at
/// the start of its term, on the cluster's last recorded hunt time when
/// hunts are running (recorded every [`TICK_MS`]) if that is earlier than
/// its own clock, and from there lets only monotonic time pass; it never
/// reads more than its own wall clock either. Skew and steps make deadlines
/// late (by the skew, or by one tick), never early. With no hunt running
/// there is nothing to judge and no evidence; the anchor is the leader's
/// wall clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HuntClock {
    /// Term, anchor wall time, monotonic time at the anchor.
    anchor: Option<(u64, i64, i64)>,
}

impl HuntClock {
    /// The hunt time now, for a leader in `term`. `recorded_ms` is the
    /// replicated [`crate::state::State::clock_ms`] when hunts are running,
    /// `None` otherwise.
    pub fn now(
        &mut self,
        term: u64,
        wall_ms: i64,
        monotonic_ms: i64,
        recorded_ms: Option<i64>,
    ) -> i64 {
        let (anchor_wall, anchor_mono) = match self.anchor {
            Some((t, wall, mono)) if t == term => (wall, mono),
            _ => {
                let wall = recorded_ms.map_or(wall_ms, |recorded| wall_ms.min(recorded));
                self.anchor = Some((term, wall, monotonic_ms));
                (wall, monotonic_ms)
            }
        };
        wall_ms.min(anchor_wall.saturating_add(monotonic_ms - anchor_mono))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock as _, ManualClock};
    use std::sync::Arc;

    fn leases() -> (ManualClock, Leases) {
        let clock = ManualClock::new(1_700_000_000_000);
        let leases = Leases::new(Arc::new(clock.clone()), Duration::from_secs(10));
        (clock, leases)
    }

    #[test]
    fn a_wall_clock_step_neither_expires_leases_nor_keeps_dead_workers_alive() {
        let (clock, leases) = leases();
        let w = WorkerId::new("w1");
        let since = clock.monotonic_ms();
        leases.beat(&w);
        // An hour's step forward of the wall clock: nothing expires.
        clock.step_wall_ms(3_600_000);
        assert!(leases.fresh(&w));
        assert!(!leases.expired(&w, since));
        // A step back: a worker that goes silent still expires on time.
        clock.step_wall_ms(-7_200_000);
        clock.advance_ms(10_001);
        assert!(!leases.fresh(&w));
        assert!(leases.expired(&w, since));
        // The displayed time is the wall time of the beat.
        assert_eq!(leases.last_wall_ms(&w), Some(1_700_000_000_000));
    }

    #[test]
    fn a_new_leader_gives_silent_workers_a_full_lease_from_its_term_start() {
        let (clock, leases) = leases();
        let w = WorkerId::new("w1");
        leases.beat(&w);
        clock.advance_ms(60_000);
        let mut leadership = Leadership::default();
        let since = leadership
            .observe(true, 5, clock.monotonic_ms())
            .expect("leads");
        assert!(!leases.expired(&w, since), "the grace starts at the term");
        clock.advance_ms(10_001);
        assert!(leases.expired(&w, since));
    }

    #[test]
    fn leadership_restarts_with_each_term() {
        let mut leadership = Leadership::default();
        assert_eq!(leadership.observe(true, 3, 100), Some(100));
        assert_eq!(leadership.observe(true, 3, 500), Some(100));
        // Led again in a later term without a non-leader status seen in
        // between (a quick re-election): the grace starts over.
        assert_eq!(leadership.observe(true, 4, 900), Some(900));
        assert_eq!(leadership.observe(false, 4, 950), None);
        assert_eq!(leadership.observe(true, 6, 1_000), Some(1_000));
    }

    const TEN_AM: i64 = 1_700_000_000_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_new_leader_whose_clock_runs_ahead_judges_deadlines_by_the_clusters_time() {
        let mut clock = HuntClock::default();
        // The last leader recorded 10:00 while hunts ran; this one reads 11:00.
        let now = clock.now(7, TEN_AM + HOUR, 0, Some(TEN_AM));
        assert_eq!(now, TEN_AM);
        // A minute later (monotonic), a minute has passed, not an hour.
        assert_eq!(
            clock.now(7, TEN_AM + HOUR + 60_000, 60_000, Some(TEN_AM + 5_000)),
            TEN_AM + 60_000
        );
    }

    #[test]
    fn a_leader_clock_behind_the_record_is_believed_deadlines_come_late_not_early() {
        let mut clock = HuntClock::default();
        // The last leader ran an hour ahead; this one is right.
        assert_eq!(clock.now(3, TEN_AM, 0, Some(TEN_AM + HOUR)), TEN_AM);
        assert_eq!(clock.now(3, TEN_AM + 1_000, 1_000, None), TEN_AM + 1_000);
    }

    #[test]
    fn a_wall_clock_step_in_the_middle_of_a_term_is_ignored() {
        let mut clock = HuntClock::default();
        assert_eq!(clock.now(2, TEN_AM, 500, None), TEN_AM);
        // NTP steps the clock an hour forward; ten seconds passed.
        assert_eq!(
            clock.now(2, TEN_AM + HOUR + 10_000, 10_500, None),
            TEN_AM + 10_000
        );
        // Stepped back: the wall clock is never exceeded.
        assert_eq!(clock.now(2, TEN_AM - HOUR, 20_500, None), TEN_AM - HOUR);
        // A new term anchors afresh.
        assert_eq!(clock.now(4, TEN_AM + 30_000, 30_500, None), TEN_AM + 30_000);
    }
}
