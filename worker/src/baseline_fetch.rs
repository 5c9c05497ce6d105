//! The history of a scheduled run (`quarry:hunt/history`): fetched from the
//! coordinator once per run and worker, for modules that import it.

use crate::agent::Inner;
use crate::error::WorkerError;
use crate::runtime::Baseline;
use quarry_proto::v1::{self, worker_service_client::WorkerServiceClient};
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;

/// Runs whose baselines are kept at once (a worker runs tasks of a few
/// scheduled runs at a time; each run's tasks share one baseline).
const KEPT: usize = 8;

/// Fetched baselines by hunt (the scheduled run), oldest first.
#[derive(Default)]
pub struct BaselineCache {
    runs: Mutex<Vec<(String, Arc<Baseline>)>>,
}

impl BaselineCache {
    fn get(&self, hunt: &str) -> Option<Arc<Baseline>> {
        let runs = self.runs.lock().ok()?;
        runs.iter().find(|(h, _)| h == hunt).map(|(_, b)| b.clone())
    }

    fn put(&self, hunt: String, baseline: Arc<Baseline>) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.retain(|(h, _)| *h != hunt);
            if runs.len() >= KEPT {
                runs.remove(0);
            }
            runs.push((hunt, baseline));
        }
    }
}

/// The baseline of the scheduled run `hunt`, fetched unless cached.
pub(crate) async fn resolve(
    inner: &Arc<Inner>,
    mut client: WorkerServiceClient<Channel>,
    hunt: &str,
) -> Result<Arc<Baseline>, WorkerError> {
    if let Some(baseline) = inner.baselines.get(hunt) {
        return Ok(baseline);
    }
    let fetched = client
        .fetch_baseline(v1::FetchBaselineRequest {
            hunt_id: hunt.to_owned(),
        })
        .await
        .map_err(|s| WorkerError::Coordinator {
            url: inner.url(),
            detail: format!(
                "cannot fetch the schedule baseline of hunt {hunt}: {}",
                s.message()
            ),
        })?
        .into_inner();
    let mut aggregates = quarry_contract::aggregate::Merged::new();
    for aggregate in fetched.aggregates {
        let aggregate = quarry_proto::aggregate::from_proto(aggregate).map_err(|e| {
            WorkerError::Task(format!(
                "the schedule baseline of hunt {hunt} holds an aggregate the worker cannot read: {e}"
            ))
        })?;
        aggregates.insert(aggregate.name, aggregate.value);
    }
    let baseline = Arc::new(Baseline {
        runs: fetched.runs,
        aggregates,
    });
    inner.baselines.put(hunt.to_owned(), baseline.clone());
    Ok(baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_latest_runs() {
        let cache = BaselineCache::default();
        for n in 0..KEPT + 2 {
            cache.put(format!("h-{n}"), Arc::new(Baseline::default()));
        }
        assert!(cache.get("h-0").is_none() && cache.get("h-1").is_none());
        assert!(cache.get(&format!("h-{}", KEPT + 1)).is_some());
    }
}
