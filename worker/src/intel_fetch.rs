//! Intel sets from the cluster's store: a task bound to set `NAME` at
//! version `V` (parameter `intel-ref.NAME` = `V`) gets the set's text as the
//! parameter `intel.NAME`, which the sandbox turns into the set the module
//! looks values up in. A version is fetched once and cached, so the raft
//! log and the task stream carry it once, not once per task.

use crate::agent::Inner;
use crate::error::WorkerError;
use quarry_proto::v1::{self, worker_service_client::WorkerServiceClient};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub use quarry_contract::intel::REF_PREFIX;
/// How long a fetched set is used before it is fetched again (indicators
/// expire: the coordinator sends those valid when asked).
const FRESH_FOR: Duration = Duration::from_secs(600);
/// Sets kept at once.
const KEPT: usize = 16;

/// A fetched set's text, by stored set name and version, with when it came.
type Fetched = HashMap<(String, u32), (Instant, Arc<String>)>;

/// Fetched sets by name and version.
#[derive(Default)]
pub struct IntelCache {
    sets: Mutex<Fetched>,
}

impl IntelCache {
    fn get(&self, key: &(String, u32)) -> Option<Arc<String>> {
        let sets = self.sets.lock().ok()?;
        let (at, text) = sets.get(key)?;
        (at.elapsed() < FRESH_FOR).then(|| text.clone())
    }

    fn put(&self, key: (String, u32), text: Arc<String>) {
        if let Ok(mut sets) = self.sets.lock() {
            if sets.len() >= KEPT {
                sets.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
                if sets.len() >= KEPT
                    && let Some(oldest) = sets
                        .iter()
                        .min_by_key(|(_, (at, _))| *at)
                        .map(|(k, _)| k.clone())
                {
                    sets.remove(&oldest);
                }
            }
            sets.insert(key, (Instant::now(), text));
        }
    }
}

/// The `intel.NAME` parameters for the `intel-ref.NAME` bindings in
/// `params`, fetched from the coordinator unless cached.
pub(crate) async fn resolve(
    inner: &Arc<Inner>,
    mut client: WorkerServiceClient<Channel>,
    params: &std::collections::HashMap<String, String>,
) -> Result<Vec<(String, String)>, WorkerError> {
    let mut out = Vec::new();
    let refs: BTreeMap<&str, &str> = params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(REF_PREFIX)?, v.as_str())))
        .collect();
    for (name, value) in refs {
        let (set, version) = quarry_contract::intel::parse_ref(name, value).ok_or_else(|| {
            WorkerError::Task(format!(
                "parameter {REF_PREFIX}{name} must name a stored intel set version (`3` or `set@3`), not `{value}`"
            ))
        })?;
        let key = (set.clone(), version);
        let text = match inner.intel.get(&key) {
            Some(text) => text,
            None => {
                let fetched = client
                    .fetch_intel(v1::FetchIntelRequest {
                        name: set.clone(),
                        version,
                    })
                    .await
                    .map_err(|s| {
                        WorkerError::Task(format!(
                            "cannot fetch intel set {set} version {version}: {}",
                            s.message()
                        ))
                    })?
                    .into_inner();
                let text = Arc::new(fetched.text);
                inner.intel.put(key, text.clone());
                text
            }
        };
        out.push((
            format!("{}{name}", quarry_contract::intel::PARAM_PREFIX),
            text.as_str().to_owned(),
        ));
    }
    Ok(out)
}
