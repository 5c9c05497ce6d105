//! Task placement: a pure function from the replicated state and the leader's
//! view of worker liveness to a list of assignments.
//!
//! Locality first (a task only goes to a worker holding its shard), then the
//! least loaded live holder, within each worker's slots; hunts of higher
//! priority first, older hunts first among equals.

use crate::state::{Assignment, HuntRecord, HuntState, State, TaskState};
use quarry_proto::{HuntId, WorkerId};
use std::collections::{BTreeMap, BTreeSet};

/// The window a hunt's `max_tasks_per_second` counts task starts in.
const RATE_WINDOW_MS: i64 = 1_000;

/// When a running task counts as a straggler worth a speculative second run.
#[derive(Clone, Copy, Debug)]
pub struct Speculation {
    /// Succeeded tasks of the hunt needed before its median means anything.
    pub min_completed: usize,
    /// A straggler runs longer than this many times the median ...
    pub factor: u32,
    /// ... and at least this much longer than the median (short tasks
    /// jitter by more than a factor).
    pub min_excess_ms: i64,
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            min_completed: 3,
            factor: 3,
            min_excess_ms: 2_000,
        }
    }
}

/// Per hunt: how many more tasks it may start now under its concurrency cap
/// and its rate limit (`u32::MAX` = uncapped).
fn hunt_room(state: &State, hunt: &HuntRecord, now_ms: i64) -> u32 {
    let policy = &hunt.spec.policy;
    if policy.max_concurrency == 0 && policy.max_tasks_per_second == 0 {
        return u32::MAX;
    }
    let mut running = 0u32;
    let mut recent = 0u32;
    for task in hunt.tasks.iter().filter_map(|t| state.tasks.get(t)) {
        if matches!(task.state, TaskState::Assigned { .. }) {
            running += 1;
        }
        if task.issued > 0 && task.started_ms > now_ms - RATE_WINDOW_MS {
            recent += 1;
        }
        if let Some(backup) = &task.backup {
            running += 1;
            if backup.started_ms > now_ms - RATE_WINDOW_MS {
                recent += 1;
            }
        }
    }
    let by_concurrency = match policy.max_concurrency {
        0 => u32::MAX,
        cap => cap.saturating_sub(running),
    };
    let by_rate = match policy.max_tasks_per_second {
        0 => u32::MAX,
        cap => cap.saturating_sub(recent),
    };
    by_concurrency.min(by_rate)
}

/// Running hunts in scheduling order: priority, then submission.
fn running_hunts(state: &State) -> Vec<&HuntRecord> {
    let mut hunts: Vec<_> = state
        .hunts
        .values()
        .filter(|h| h.state == HuntState::Running)
        .collect();
    // Hunt ids are `h-<raft index>`: submission order is the index order.
    hunts.sort_by_key(|h| {
        (
            std::cmp::Reverse(h.spec.priority),
            h.submitted_ms,
            hunt_index(h.id.as_str()),
        )
    });
    hunts
}

/// Plans assignments for pending tasks onto `live` workers at leader time
/// `now_ms`.
///
/// Skips paused hunts, tasks in retry backoff, tasks beyond a canary that
/// has not succeeded yet, and hunts at their concurrency or rate cap. Load
/// counts runs already assigned in `state`; postconditions (holder, slots,
/// each task once, hunt caps) are checked in debug builds.
pub fn plan(state: &State, live: &BTreeSet<WorkerId>, now_ms: i64) -> Vec<Assignment> {
    let mut load = state.assignment_counts();
    let mut out = Vec::new();
    for hunt in running_hunts(state) {
        let mut room = hunt_room(state, hunt, now_ms);
        for task_id in &hunt.tasks {
            if room == 0 {
                break;
            }
            let Some(task) = state.tasks.get(task_id) else {
                continue;
            };
            if task.state != TaskState::Pending
                || task.not_before_ms > now_ms
                || (!hunt.widened && !task.canary)
            {
                continue;
            }
            let Some(shard) = state.shards.get(&task.shard) else {
                continue;
            };
            // A retry prefers another replica than the one that just failed
            // (a bad disk should not burn every attempt).
            let failed_on = (task.failed_attempts > 0)
                .then_some(task.worker.as_ref())
                .flatten();
            let best = shard
                .holders
                .iter()
                .filter(|w| live.contains(*w))
                .filter_map(|w| state.workers.get(w))
                .filter(|w| load.get(&w.id).copied().unwrap_or(0) < w.slots)
                .min_by_key(|w| {
                    (
                        failed_on == Some(&w.id),
                        load.get(&w.id).copied().unwrap_or(0),
                        w.id.clone(),
                    )
                });
            if let Some(worker) = best {
                *load.entry(&worker.id).or_default() += 1;
                room -= 1;
                out.push(Assignment {
                    task: task_id.clone(),
                    worker: worker.id.clone(),
                });
            }
        }
    }
    debug_assert!(
        check_plan(state, live, now_ms, &out).is_ok(),
        "{:?}",
        check_plan(state, live, now_ms, &out)
    );
    out
}

/// Plans speculative second runs: a task running much longer than its
/// hunt's median succeeded task (see [`Speculation`]) gets a backup run on
/// another live holder of its shard with a free slot. At most one backup
/// per task; hunt caps apply.
pub fn speculate(
    state: &State,
    live: &BTreeSet<WorkerId>,
    now_ms: i64,
    policy: &Speculation,
) -> Vec<Assignment> {
    let mut load = state.assignment_counts();
    let mut out = Vec::new();
    for hunt in running_hunts(state) {
        // One pass: durations of succeeded tasks, and whether any run is
        // old enough to be a straggler at all (most ticks, none is).
        let mut durations = Vec::new();
        let mut longest = 0;
        for task in hunt.tasks.iter().filter_map(|t| state.tasks.get(t)) {
            match task.state {
                TaskState::Succeeded => durations.push(task.duration_ms),
                TaskState::Assigned { .. } if task.backup.is_none() => {
                    longest = longest.max(now_ms - task.started_ms);
                }
                _ => {}
            }
        }
        if durations.len() < policy.min_completed.max(1) || longest <= policy.min_excess_ms {
            continue;
        }
        let middle = durations.len() / 2;
        let median = *durations.select_nth_unstable(middle).1;
        let threshold = median
            .saturating_mul(i64::from(policy.factor))
            .max(median.saturating_add(policy.min_excess_ms));
        let mut room = hunt_room(state, hunt, now_ms);
        for task in hunt.tasks.iter().filter_map(|t| state.tasks.get(t)) {
            if room == 0 {
                break;
            }
            let TaskState::Assigned { worker: primary } = &task.state else {
                continue;
            };
            if task.backup.is_some() || now_ms - task.started_ms <= threshold {
                continue;
            }
            let Some(shard) = state.shards.get(&task.shard) else {
                continue;
            };
            let best = shard
                .holders
                .iter()
                .filter(|w| *w != primary && live.contains(*w))
                .filter_map(|w| state.workers.get(w))
                .filter(|w| load.get(&w.id).copied().unwrap_or(0) < w.slots)
                .min_by_key(|w| (load.get(&w.id).copied().unwrap_or(0), w.id.clone()));
            if let Some(worker) = best {
                *load.entry(&worker.id).or_default() += 1;
                room -= 1;
                out.push(Assignment {
                    task: task.id.clone(),
                    worker: worker.id.clone(),
                });
            }
        }
    }
    out
}

fn hunt_index(id: &str) -> u64 {
    id.strip_prefix("h-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Verifies a plan's postconditions: each task once, on a live holder of
/// its shard, within the worker's slots and its hunt's caps.
pub fn check_plan(
    state: &State,
    live: &BTreeSet<WorkerId>,
    now_ms: i64,
    plan: &[Assignment],
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut load = state.assignment_counts();
    let mut per_hunt: BTreeMap<&HuntId, u32> = BTreeMap::new();
    for a in plan {
        if !seen.insert(&a.task) {
            return Err(format!("task {} planned twice", a.task));
        }
        let task = state
            .tasks
            .get(&a.task)
            .ok_or_else(|| format!("unknown task {}", a.task))?;
        let worker = state
            .workers
            .get(&a.worker)
            .ok_or_else(|| format!("unknown worker {}", a.worker))?;
        if !worker.shards.contains(&task.shard) || !live.contains(&a.worker) {
            return Err(format!(
                "task {} placed on {} which is dead or lacks shard {}",
                a.task, a.worker, task.shard
            ));
        }
        if task.not_before_ms > now_ms {
            return Err(format!("task {} placed during its retry backoff", a.task));
        }
        let l = load.entry(&a.worker).or_default();
        *l += 1;
        if *l > worker.slots {
            return Err(format!(
                "worker {} over its {} slots",
                a.worker, worker.slots
            ));
        }
        let hunt = state
            .hunts
            .get(&task.hunt)
            .ok_or_else(|| format!("unknown hunt {}", task.hunt))?;
        let placed = per_hunt.entry(&hunt.id).or_default();
        *placed += 1;
        if *placed > hunt_room(state, hunt, now_ms) {
            return Err(format!("hunt {} over its concurrency or rate cap", hunt.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact::Labels;
    use crate::state::*;
    use quarry_proto::{ModuleDigest, ShardId};

    fn state_with(workers: &[(&str, u32, &[&str])], shards_in_scope: &[&str]) -> State {
        let mut s = State::default();
        s.apply(
            1,
            Command::UploadModule {
                module: ModuleRecord {
                    digest: ModuleDigest::new("0".repeat(64)),
                    name: "m".into(),
                    version: "1".into(),
                    description: String::new(),
                    uploaded_ms: 0,
                    techniques: Vec::new(),
                    bytes: vec![],
                },
            },
        );
        for (i, (id, slots, shards)) in workers.iter().enumerate() {
            s.apply(
                2 + i as u64,
                Command::RegisterWorker {
                    id: WorkerId::new(*id),
                    address: String::new(),
                    slots: *slots,
                    shards: shards
                        .iter()
                        .map(|n| ShardDescription {
                            name: ShardId::new(*n),
                            labels: Labels::default(),
                            event_count: 1,
                            min_ts_ms: 0,
                            max_ts_ms: 1,
                            size_bytes: 1,
                        })
                        .collect(),
                    now_ms: 0,
                },
            );
        }
        let spec = HuntSpec {
            module: ModuleSelector::NameVersion {
                name: "m".into(),
                version: None,
            },
            params: BTreeMap::new(),
            scope: Scope {
                shards: shards_in_scope.iter().map(|n| ShardId::new(*n)).collect(),
                ..Scope::default()
            },
            limits: Limits::default(),
            priority: 0,
            description: String::new(),
            policy: Policy::default(),
        };
        assert!(
            s.apply(100, Command::SubmitHunt { spec, now_ms: 0 })
                .outcome
                .is_ok()
        );
        s
    }

    fn live(ids: &[&str]) -> BTreeSet<WorkerId> {
        ids.iter().map(|i| WorkerId::new(*i)).collect()
    }

    #[test]
    fn places_each_task_on_a_holder_of_its_shard() {
        let s = state_with(&[("w0", 4, &["a"]), ("w1", 4, &["b"])], &["a", "b"]);
        let plan = plan(&s, &live(&["w0", "w1"]), 0);
        let by_task: BTreeMap<_, _> = plan
            .iter()
            .map(|a| (a.task.as_str().to_owned(), a.worker.as_str().to_owned()))
            .collect();
        assert_eq!(by_task["h-100/a"], "w0");
        assert_eq!(by_task["h-100/b"], "w1");
    }

    #[test]
    fn spreads_over_replicas_by_load_and_respects_slots() {
        let s = state_with(
            &[("w0", 1, &["a", "b", "c"]), ("w1", 1, &["a", "b", "c"])],
            &["a", "b", "c"],
        );
        let plan = plan(&s, &live(&["w0", "w1"]), 0);
        assert_eq!(plan.len(), 2, "two slots in total: {plan:?}");
        assert_ne!(plan[0].worker, plan[1].worker);
    }

    #[test]
    fn dead_holders_get_nothing_and_the_task_waits() {
        let s = state_with(&[("w0", 4, &["a"]), ("w1", 4, &["b"])], &["a", "b"]);
        let plan = plan(&s, &live(&["w1"]), 0);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].worker.as_str(), "w1");
    }

    #[test]
    fn assigned_tasks_count_against_slots() {
        let mut s = state_with(&[("w0", 1, &["a", "b"])], &["a", "b"]);
        let first = plan(&s, &live(&["w0"]), 0);
        assert_eq!(first.len(), 1);
        s.apply(
            200,
            Command::AssignTasks {
                assignments: first,
                now_ms: 0,
            },
        );
        assert!(plan(&s, &live(&["w0"]), 0).is_empty());
    }

    fn with_policy(s: &mut State, f: impl Fn(&mut Policy)) {
        for hunt in s.hunts.values_mut() {
            f(&mut hunt.spec.policy);
        }
    }

    #[test]
    fn max_concurrency_caps_a_hunts_running_tasks() {
        let mut s = state_with(&[("w0", 8, &["a", "b", "c", "d"])], &["a", "b", "c", "d"]);
        with_policy(&mut s, |p| p.max_concurrency = 2);
        let first = plan(&s, &live(&["w0"]), 0);
        assert_eq!(first.len(), 2);
        s.apply(
            200,
            Command::AssignTasks {
                assignments: first,
                now_ms: 0,
            },
        );
        assert!(
            plan(&s, &live(&["w0"]), 5_000).is_empty(),
            "two still running"
        );
    }

    #[test]
    fn rate_limit_caps_task_starts_per_second() {
        let mut s = state_with(&[("w0", 8, &["a", "b", "c", "d"])], &["a", "b", "c", "d"]);
        with_policy(&mut s, |p| p.max_tasks_per_second = 1);
        let first = plan(&s, &live(&["w0"]), 1_000);
        assert_eq!(first.len(), 1);
        s.apply(
            200,
            Command::AssignTasks {
                assignments: first,
                now_ms: 1_000,
            },
        );
        assert!(
            plan(&s, &live(&["w0"]), 1_999).is_empty(),
            "within the same second"
        );
        assert_eq!(plan(&s, &live(&["w0"]), 2_000).len(), 1);
    }

    #[test]
    fn higher_priority_hunts_are_placed_first() {
        let mut s = state_with(&[("w0", 1, &["a"])], &["a"]);
        let mut urgent = s
            .hunts
            .values()
            .next()
            .map(|h| h.spec.clone())
            .expect("hunt");
        urgent.priority = 10;
        s.apply(
            300,
            Command::SubmitHunt {
                spec: urgent,
                now_ms: 1,
            },
        );
        let plan = plan(&s, &live(&["w0"]), 0);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].task.as_str(), "h-300/a");
    }

    #[test]
    fn a_retry_prefers_another_replica() {
        let mut s = state_with(&[("w0", 4, &["a"]), ("w1", 4, &["a"])], &["a"]);
        let first = plan(&s, &live(&["w0", "w1"]), 0);
        assert_eq!(first[0].worker.as_str(), "w0");
        s.apply(
            200,
            Command::AssignTasks {
                assignments: first,
                now_ms: 0,
            },
        );
        let task = s.tasks.keys().next().cloned().expect("task");
        s.apply(
            201,
            Command::RecordResult {
                report: TaskReport {
                    task,
                    attempt: 1,
                    worker: WorkerId::new("w0"),
                    outcome: Err(TaskError::host("disk error")),
                },
                now_ms: 0,
            },
        );
        let retry = plan(&s, &live(&["w0", "w1"]), 60_000);
        assert_eq!(retry[0].worker.as_str(), "w1");
        // With only the failing replica alive, it is used all the same.
        assert_eq!(plan(&s, &live(&["w0"]), 60_000)[0].worker.as_str(), "w0");
    }
}
