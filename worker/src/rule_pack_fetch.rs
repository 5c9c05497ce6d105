//! Sigma rule packs from the cluster's store (docs/sigma.md#rule-packs): a
//! task bound to pack `NAME` (parameter `rule-pack-ref.NAME` =
//! `VERSION:SHA256`) gets the pack's files as `rule.NAME/PATH` parameters,
//! which is how the `sigma` module reads rules. A pack is fetched from the
//! coordinator once, checked against its digest, and cached by digest:
//! content-addressed, so a cached pack never goes stale and needs no
//! freshness timeout (unlike intel sets, whose indicators expire). The
//! cache is bounded in packs and bytes; the least recently used go first.

use crate::agent::Inner;
use crate::error::WorkerError;
use quarry_proto::rule_pack::{self, Binding, REF_PREFIX};
use quarry_proto::v1::{self, worker_service_client::WorkerServiceClient};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;

/// Packs kept at once.
const KEPT: usize = 16;
/// Bytes of rule text kept at once (a pack holds at most 16 MiB).
const KEPT_BYTES: u64 = 64 * 1024 * 1024;

/// A pack's files, path -> text.
pub type Files = Arc<BTreeMap<String, String>>;

/// Fetched packs by digest, with when each was last used.
#[derive(Default)]
pub struct RulePackCache {
    packs: Mutex<HashMap<String, (u64, Files)>>,
    /// Use counter: a pack's last use, for least-recently-used eviction.
    clock: AtomicU64,
    /// Packs fetched from a coordinator (cache misses).
    fetched: AtomicU64,
}

impl RulePackCache {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn get(&self, digest: &str) -> Option<Files> {
        let now = self.tick();
        let mut packs = self.packs.lock().ok()?;
        let (used, files) = packs.get_mut(digest)?;
        *used = now;
        Some(files.clone())
    }

    fn put(&self, digest: String, files: Files) {
        let now = self.tick();
        let Ok(mut packs) = self.packs.lock() else {
            return;
        };
        packs.insert(digest, (now, files));
        let bytes = |packs: &HashMap<String, (u64, Files)>| -> u64 {
            packs.values().map(|(_, f)| rule_pack::text_bytes(f)).sum()
        };
        // The pack just stored stays (it is about to be used), whatever
        // its size; older ones make room.
        while packs.len() > 1 && (packs.len() > KEPT || bytes(&packs) > KEPT_BYTES) {
            let Some(oldest) = packs
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(d, _)| d.clone())
            else {
                break;
            };
            packs.remove(&oldest);
        }
    }

    /// Packs fetched from a coordinator since the worker started.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }
}

pub use rule_pack::digest;

/// Checks fetched files against the bound digest and the pack limits.
fn verify(
    name: &str,
    version: u32,
    expected: &str,
    fetched: Vec<v1::RuleFile>,
) -> Result<BTreeMap<String, String>, WorkerError> {
    let refuse = |detail: String| WorkerError::RulePack {
        name: name.to_owned(),
        version,
        detail,
    };
    let mut files = BTreeMap::new();
    for file in fetched {
        if files.insert(file.path, file.text).is_some() {
            return Err(refuse(
                "the coordinator sent a rule file twice; refusing the pack".to_owned(),
            ));
        }
    }
    rule_pack::check_files(&files).map_err(|why| refuse(format!("refusing the pack: {why}")))?;
    let actual = digest(&files);
    if actual != expected {
        return Err(refuse(format!(
            "the coordinator sent content with sha256 {actual}, not the {expected} the hunt is bound to; refusing it"
        )));
    }
    Ok(files)
}

/// The `rule.NAME/PATH` parameters for the `rule-pack-ref.NAME` bindings
/// in `params`, fetched from the coordinator unless cached.
pub(crate) async fn resolve(
    inner: &Arc<Inner>,
    mut client: WorkerServiceClient<Channel>,
    params: &HashMap<String, String>,
) -> Result<Vec<(String, String)>, WorkerError> {
    let refs: BTreeMap<&str, &str> = params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(REF_PREFIX)?, v.as_str())))
        .collect();
    let mut out = Vec::new();
    for (name, value) in refs {
        let bound = match rule_pack::parse_ref(value) {
            Ok(Binding::Pinned(bound)) => bound,
            Ok(Binding::Latest) => {
                return Err(WorkerError::Task(format!(
                    "parameter {REF_PREFIX}{name} is `latest`: a task must be bound to one version of rule pack {name}"
                )));
            }
            Err(why) => {
                return Err(WorkerError::Task(format!(
                    "parameter {REF_PREFIX}{name}: {why}"
                )));
            }
        };
        let files = match inner.rule_packs.get(&bound.digest) {
            Some(files) => files,
            None => {
                let fetched = client
                    .fetch_rule_pack(v1::FetchRulePackRequest {
                        name: name.to_owned(),
                        version: bound.version,
                        digest: bound.digest.clone(),
                    })
                    .await
                    .map_err(|s| match s.code() {
                        // The hunt's input is gone: no retry brings it back.
                        tonic::Code::NotFound => WorkerError::RulePack {
                            name: name.to_owned(),
                            version: bound.version,
                            detail: s.message().to_owned(),
                        },
                        _ => WorkerError::Coordinator {
                            url: inner.url(),
                            detail: format!(
                                "cannot fetch rule pack {name} version {}: {}",
                                bound.version,
                                s.message()
                            ),
                        },
                    })?
                    .into_inner();
                let (version, digest) = (bound.version, bound.digest.clone());
                let name_owned = name.to_owned();
                // Hashing up to 16 MiB takes a moment: off the runtime.
                let files = tokio::task::spawn_blocking(move || {
                    verify(&name_owned, version, &digest, fetched.files)
                })
                .await
                .map_err(|e| WorkerError::Runtime(format!("rule pack check failed: {e}")))??;
                let files = Arc::new(files);
                inner.rule_packs.fetched.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    pack = name,
                    version = bound.version,
                    digest = %bound.digest,
                    rules = files.len(),
                    "rule pack fetched"
                );
                inner.rule_packs.put(bound.digest.clone(), files.clone());
                files
            }
        };
        for (path, text) in files.iter() {
            let param = rule_pack::param_name(name, path);
            if params.contains_key(&param) {
                return Err(WorkerError::RulePack {
                    name: name.to_owned(),
                    version: bound.version,
                    detail: format!(
                        "rule {param} is also given as a parameter; leave one of them out"
                    ),
                });
            }
            out.push((param, text.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(texts: &[(&str, &str)]) -> Vec<v1::RuleFile> {
        texts
            .iter()
            .map(|(path, text)| v1::RuleFile {
                path: (*path).to_owned(),
                text: (*text).to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_pack_whose_content_does_not_have_the_bound_digest_is_refused() {
        let sent = files(&[("a.yml", "title: a"), ("b/c.yml", "title: c")]);
        let map: BTreeMap<String, String> = sent
            .iter()
            .map(|f| (f.path.clone(), f.text.clone()))
            .collect();
        let good = digest(&map);
        assert_eq!(
            verify("win", 2, &good, sent.clone()).expect("same content"),
            map
        );

        let mut altered = sent.clone();
        altered[1].text.push(' ');
        let error = verify("win", 2, &good, altered)
            .expect_err("altered")
            .to_string();
        assert!(
            error.starts_with("rule pack win version 2:") && error.contains(&good),
            "{error}"
        );
        let mut twice = sent.clone();
        twice.push(sent[0].clone());
        assert!(verify("win", 2, &good, twice).is_err());
        let escaping = files(&[("../a.yml", "title: a")]);
        assert!(verify("win", 2, &good, escaping).is_err());
    }

    #[test]
    fn the_cache_keeps_the_recently_used_packs_within_its_bounds() {
        let cache = RulePackCache::default();
        let pack = |text: &str| Arc::new(BTreeMap::from([("a.yml".to_owned(), text.to_owned())]));
        for n in 0..KEPT {
            cache.put(format!("d{n}"), pack("x"));
        }
        assert!(cache.get("d0").is_some(), "used again: kept");
        cache.put("new".to_owned(), pack("x"));
        assert!(cache.get("d0").is_some() && cache.get("new").is_some());
        assert!(cache.get("d1").is_none(), "the least recently used went");
        // Bytes: a large pack pushes the others out, but stays itself.
        let big = "x".repeat(KEPT_BYTES as usize);
        cache.put("big".to_owned(), pack(&big));
        assert!(cache.get("big").is_some());
        assert!(cache.get("new").is_none());
    }
}
