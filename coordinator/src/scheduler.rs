//! Task placement: a pure function from the replicated state and the leader's
//! view of worker liveness to a list of assignments.
//!
//! Locality first (a task only goes to a worker holding its shard), then the
//! least loaded live holder, within each worker's slots; hunts of higher
//! priority first, older hunts first among equals.

use crate::state::{Assignment, State, TaskState};
use quarry_proto::WorkerId;
use std::collections::BTreeSet;

/// Plans assignments for pending tasks onto `live` workers.
///
/// Load counts tasks already assigned in `state`; postconditions (holder,
/// slots, each task once) are checked in debug builds.
pub fn plan(state: &State, live: &BTreeSet<WorkerId>) -> Vec<Assignment> {
    let mut load = state.assignment_counts();
    let mut hunts: Vec<_> = state
        .hunts
        .values()
        .filter(|h| !h.state.is_terminal())
        .collect();
    // Hunt ids are `h-<raft index>`: submission order is the index order.
    hunts.sort_by_key(|h| {
        (
            std::cmp::Reverse(h.spec.priority),
            h.submitted_ms,
            hunt_index(h.id.as_str()),
        )
    });

    let mut out = Vec::new();
    for hunt in hunts {
        for task_id in &hunt.tasks {
            let Some(task) = state.tasks.get(task_id) else {
                continue;
            };
            if task.state != TaskState::Pending {
                continue;
            }
            let Some(shard) = state.shards.get(&task.shard) else {
                continue;
            };
            let best = shard
                .holders
                .iter()
                .filter(|w| live.contains(*w))
                .filter_map(|w| state.workers.get(w))
                .filter(|w| load.get(&w.id).copied().unwrap_or(0) < w.slots)
                .min_by_key(|w| (load.get(&w.id).copied().unwrap_or(0), w.id.clone()));
            if let Some(worker) = best {
                *load.entry(&worker.id).or_default() += 1;
                out.push(Assignment {
                    task: task_id.clone(),
                    worker: worker.id.clone(),
                });
            }
        }
    }
    debug_assert!(
        check_plan(state, live, &out).is_ok(),
        "{:?}",
        check_plan(state, live, &out)
    );
    out
}

fn hunt_index(id: &str) -> u64 {
    id.strip_prefix("h-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Verifies a plan's postconditions.
pub fn check_plan(
    state: &State,
    live: &BTreeSet<WorkerId>,
    plan: &[Assignment],
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut load = state.assignment_counts();
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
        let l = load.entry(&a.worker).or_default();
        *l += 1;
        if *l > worker.slots {
            return Err(format!(
                "worker {} over its {} slots",
                a.worker, worker.slots
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
                            labels: BTreeMap::new(),
                            event_count: 1,
                            min_ts_ms: 0,
                            max_ts_ms: 1,
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
        let plan = plan(&s, &live(&["w0", "w1"]));
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
        let plan = plan(&s, &live(&["w0", "w1"]));
        assert_eq!(plan.len(), 2, "two slots in total: {plan:?}");
        assert_ne!(plan[0].worker, plan[1].worker);
    }

    #[test]
    fn dead_holders_get_nothing_and_the_task_waits() {
        let s = state_with(&[("w0", 4, &["a"]), ("w1", 4, &["b"])], &["a", "b"]);
        let plan = plan(&s, &live(&["w1"]));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].worker.as_str(), "w1");
    }

    #[test]
    fn assigned_tasks_count_against_slots() {
        let mut s = state_with(&[("w0", 1, &["a", "b"])], &["a", "b"]);
        let first = plan(&s, &live(&["w0"]));
        assert_eq!(first.len(), 1);
        s.apply(200, Command::AssignTasks { assignments: first });
        assert!(plan(&s, &live(&["w0"])).is_empty());
    }
}
