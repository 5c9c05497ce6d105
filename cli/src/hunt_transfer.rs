//! Portable hunts: `quarry hunt export ID > hunt.json` writes what a hunt
//! ran (module name, version and digest, parameters, scope, limits, policy)
//! and `quarry hunt import hunt.json` submits it on another cluster after
//! checking that the same module (same digest) is there. Stored intel sets
//! the hunt was bound to travel by name: the importing cluster's set of
//! that name is used. Rule packs travel by name and content
//! (`NAME@sha256:DIGEST`): the importing cluster must hold a version of
//! that pack with the same rules, since they decide what the hunt finds.

use anyhow::{Context as _, bail};
use quarry_proto::{rule_pack, v1};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The `format` of an exported hunt.
pub const FORMAT: &str = "quarry-hunt-v1";
/// Parameter-name prefix binding a hunt to a stored intel set's version.
const INTEL_REF: &str = "intel-ref.";

/// The document `quarry hunt export` writes.
pub fn export(hunt: &v1::Hunt) -> anyhow::Result<Value> {
    let module = hunt
        .module
        .as_ref()
        .context("the coordinator did not say which module the hunt ran")?;
    let mut params = BTreeMap::new();
    let mut intel_sets = Vec::new();
    let mut rule_packs = Vec::new();
    for (key, value) in &hunt.params {
        if let Some(set) = key.strip_prefix(INTEL_REF) {
            intel_sets.push(set.to_owned());
        } else if let Some(pack) = key.strip_prefix(rule_pack::REF_PREFIX) {
            match rule_pack::parse_ref(value) {
                Ok(rule_pack::Binding::Pinned(bound)) => {
                    rule_packs.push(format!("{pack}@sha256:{}", bound.digest));
                }
                _ => bail!("the hunt's binding to rule pack {pack} (`{value}`) is not one version"),
            }
        } else {
            params.insert(key.clone(), value.clone());
        }
    }
    intel_sets.sort();
    rule_packs.sort();
    let scope = hunt.scope.clone().unwrap_or_default();
    let range = scope.time_range.unwrap_or_default();
    let labels: BTreeMap<_, _> = scope
        .selector
        .map(|s| s.match_labels.into_iter().collect())
        .unwrap_or_default();
    let limits = hunt.limits.unwrap_or_default();
    let policy = hunt.policy.unwrap_or_default();
    Ok(json!({
        "format": FORMAT,
        "exported_from": hunt.hunt_id,
        "module": {"name": module.name, "version": module.version, "digest": module.digest},
        "params": params,
        "intel_sets": intel_sets,
        "rule_packs": rule_packs,
        "scope": {
            "selector": labels,
            "shards": scope.shards,
            "start_ms": range.start_ms,
            "end_ms": range.end_ms,
        },
        "limits": {
            "cpu_ms": limits.cpu_ms,
            "memory_bytes": limits.memory_bytes,
            "max_findings_per_task": limits.max_findings_per_task,
            "max_output_bytes": limits.max_output_bytes,
            "max_findings_per_hunt": limits.max_findings_per_hunt,
            "max_result_bytes_per_hunt": limits.max_result_bytes_per_hunt,
        },
        "policy": {
            "max_attempts": policy.max_attempts,
            "retry_backoff_ms": policy.retry_backoff_ms,
            "deadline_ms": policy.deadline_ms,
            "canary_shards": policy.canary_shards,
            "canary_percent": policy.canary_percent,
            "failure_threshold": policy.failure_threshold,
            "max_concurrency": policy.max_concurrency,
            "max_tasks_per_second": policy.max_tasks_per_second,
        },
        "priority": hunt.priority,
        "description": hunt.description,
    }))
}

/// An exported hunt, read back.
#[derive(Debug)]
pub struct Imported {
    /// `name@version` of the module.
    pub module: String,
    /// The digest the exporting cluster ran.
    pub digest: String,
    /// What to submit (module by name@version).
    pub request: v1::SubmitHuntRequest,
}

fn text<'a>(value: &'a Value, path: &str) -> anyhow::Result<&'a str> {
    value
        .pointer(path)
        .and_then(Value::as_str)
        .with_context(|| format!("the exported hunt has no {path}"))
}

fn number<T: TryFrom<u64> + Default>(value: &Value, path: &str) -> anyhow::Result<T> {
    match value.pointer(path) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => v
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .with_context(|| format!("{path} must be a non-negative number that fits")),
    }
}

fn map(value: &Value, path: &str) -> anyhow::Result<std::collections::HashMap<String, String>> {
    match value.pointer(path) {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_owned()))
                    .with_context(|| format!("{path}/{k} must be a string"))
            })
            .collect(),
        Some(_) => bail!("{path} must be an object of strings"),
    }
}

fn strings(value: &Value, path: &str) -> anyhow::Result<Vec<String>> {
    match value.pointer(path) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{path} must list strings"))
            })
            .collect(),
        Some(_) => bail!("{path} must be a list of strings"),
    }
}

/// Reads an exported hunt.
pub fn import(text_json: &str) -> anyhow::Result<Imported> {
    let doc: Value = serde_json::from_str(text_json).context("an exported hunt is JSON")?;
    let format = text(&doc, "/format")?;
    if format != FORMAT {
        bail!(
            "this is a `{format}` document; `quarry hunt import` reads {FORMAT} (from `quarry hunt export`)"
        );
    }
    let name = text(&doc, "/module/name")?;
    let version = text(&doc, "/module/version")?;
    let digest = text(&doc, "/module/digest")?.to_owned();
    let module = format!("{name}@{version}");
    let start_ms: i64 = doc
        .pointer("/scope/start_ms")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let end_ms: i64 = doc
        .pointer("/scope/end_ms")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let request = v1::SubmitHuntRequest {
        module: Some(v1::ModuleRef {
            r#ref: Some(v1::module_ref::Ref::NameVersion(module.clone())),
        }),
        params: map(&doc, "/params")?,
        scope: Some(v1::HuntScope {
            selector: Some(v1::LabelSelector {
                match_labels: map(&doc, "/scope/selector")?,
            }),
            shards: strings(&doc, "/scope/shards")?,
            time_range: (start_ms != 0 || end_ms != 0)
                .then_some(v1::TimeRange { start_ms, end_ms }),
        }),
        limits: Some(v1::HuntLimits {
            cpu_ms: number(&doc, "/limits/cpu_ms")?,
            memory_bytes: number(&doc, "/limits/memory_bytes")?,
            max_findings_per_task: number(&doc, "/limits/max_findings_per_task")?,
            max_output_bytes: number(&doc, "/limits/max_output_bytes")?,
            max_findings_per_hunt: number(&doc, "/limits/max_findings_per_hunt")?,
            max_result_bytes_per_hunt: number(&doc, "/limits/max_result_bytes_per_hunt")?,
        }),
        policy: Some(v1::HuntPolicy {
            max_attempts: number(&doc, "/policy/max_attempts")?,
            retry_backoff_ms: number(&doc, "/policy/retry_backoff_ms")?,
            deadline_ms: number(&doc, "/policy/deadline_ms")?,
            canary_shards: number(&doc, "/policy/canary_shards")?,
            canary_percent: number(&doc, "/policy/canary_percent")?,
            failure_threshold: number(&doc, "/policy/failure_threshold")?,
            max_concurrency: number(&doc, "/policy/max_concurrency")?,
            max_tasks_per_second: number(&doc, "/policy/max_tasks_per_second")?,
        }),
        priority: doc
            .pointer("/priority")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0),
        description: doc
            .pointer("/description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        intel_sets: strings(&doc, "/intel_sets")?,
        rule_packs: strings(&doc, "/rule_packs")?,
        // quarry-client gives a submission one.
        request_id: String::new(),
        dry_run: false,
    };
    Ok(Imported {
        module,
        digest,
        request,
    })
}

/// Refuses to run an imported hunt with other code than the exporter ran.
pub fn check_module(imported: &Imported, here: &v1::ModuleInfo) -> anyhow::Result<()> {
    if here.digest != imported.digest {
        bail!(
            "module {} here has sha256 {}, but the exported hunt ran {}: upload the same build (`quarry module upload`) or edit the hunt to use another version",
            imported.module,
            here.digest,
            imported.digest
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_reads_back_as_the_same_submission() {
        let hunt = v1::Hunt {
            hunt_id: "h-7".into(),
            module: Some(v1::ModuleInfo {
                name: "ioc-sweep".into(),
                version: "0.3.0".into(),
                digest: "ab".repeat(32),
                ..Default::default()
            }),
            params: [
                ("ip_sets".to_owned(), "apt-x".to_owned()),
                ("intel-ref.apt-x".to_owned(), "4".to_owned()),
                (
                    "rule-pack-ref.windows".to_owned(),
                    format!("3:{}", "ef".repeat(32)),
                ),
            ]
            .into(),
            scope: Some(v1::HuntScope {
                selector: Some(v1::LabelSelector {
                    match_labels: [("env".to_owned(), "prod".to_owned())].into(),
                }),
                shards: vec!["dc01".into()],
                time_range: Some(v1::TimeRange {
                    start_ms: 10,
                    end_ms: 20,
                }),
            }),
            limits: Some(v1::HuntLimits {
                cpu_ms: 30_000,
                ..Default::default()
            }),
            policy: Some(v1::HuntPolicy {
                canary_percent: 5,
                ..Default::default()
            }),
            priority: 2,
            description: "weekly".into(),
            ..Default::default()
        };
        let doc = export(&hunt).expect("export");
        assert_eq!(doc["intel_sets"], json!(["apt-x"]));
        assert!(
            doc["params"].get("intel-ref.apt-x").is_none(),
            "bound by name, not version"
        );
        let imported = import(&doc.to_string()).expect("import");
        assert_eq!(imported.module, "ioc-sweep@0.3.0");
        let r = imported.request;
        assert_eq!(r.params.get("ip_sets").map(String::as_str), Some("apt-x"));
        assert_eq!(r.intel_sets, ["apt-x"]);
        // A rule pack travels by name and content, not by this cluster's
        // version number.
        assert_eq!(
            r.rule_packs,
            [format!("windows@sha256:{}", "ef".repeat(32))]
        );
        assert!(!r.params.contains_key("rule-pack-ref.windows"));
        let scope = r.scope.expect("scope");
        assert_eq!(scope.shards, ["dc01"]);
        assert_eq!(
            scope.time_range.map(|t| (t.start_ms, t.end_ms)),
            Some((10, 20))
        );
        assert_eq!(r.limits.map(|l| l.cpu_ms), Some(30_000));
        assert_eq!(r.policy.map(|p| p.canary_percent), Some(5));
        assert_eq!((r.priority, r.description.as_str()), (2, "weekly"));
        let other = v1::ModuleInfo {
            digest: "cd".repeat(32),
            ..Default::default()
        };
        let imported = import(&doc.to_string()).expect("import");
        let refused = check_module(&imported, &other).expect_err("another build");
        assert!(
            refused.to_string().contains("upload the same build"),
            "{refused}"
        );
        assert!(import(r#"{"format":"other"}"#).is_err());
    }
}
