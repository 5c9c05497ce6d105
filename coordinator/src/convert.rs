//! Conversions between the generated `quarry.v1` types and the state
//! machine's types. Generated types stop at the service layer: nothing past
//! this module sees them.

use crate::error::CoordinatorError;
use crate::state::{
    Canary, FindingRecord, HuntRecord, HuntSpec, HuntState, Limits, ModuleRecord, ModuleSelector,
    PartialResult, Policy, Scope, Severity, ShardDescription, State, TaskRecord, TaskState,
};
use quarry_proto::v1;
use quarry_proto::{HuntId, ModuleDigest, ShardId};

/// Parses a module reference (`name@version`, `name`, or a digest).
pub fn module_selector(
    reference: Option<v1::ModuleRef>,
) -> Result<ModuleSelector, CoordinatorError> {
    match reference.and_then(|r| r.r#ref) {
        Some(v1::module_ref::Ref::Digest(digest)) => {
            let digest =
                ModuleDigest::new(digest.trim_start_matches("sha256:").to_ascii_lowercase());
            if !digest.is_well_formed() {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "module digest `{digest}` is not 64 hex characters (sha256)"
                )));
            }
            Ok(ModuleSelector::Digest(digest))
        }
        Some(v1::module_ref::Ref::NameVersion(text)) => parse_name_version(&text),
        None => Err(CoordinatorError::InvalidArgument(
            "no module given: name one as `name@version` or by its sha256 digest".to_owned(),
        )),
    }
}

fn parse_name_version(text: &str) -> Result<ModuleSelector, CoordinatorError> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix("sha256:") {
        return module_selector(Some(v1::ModuleRef {
            r#ref: Some(v1::module_ref::Ref::Digest(hex.to_owned())),
        }));
    }
    let (name, version) = match text.split_once('@') {
        Some((name, version)) => (name, Some(version.to_owned())),
        None => (text, None),
    };
    validate_module_name(name)?;
    if version.as_deref().is_some_and(str::is_empty) {
        return Err(CoordinatorError::InvalidArgument(format!(
            "module reference `{text}` has an empty version; write `{name}@<version>` or just `{name}` for the latest"
        )));
    }
    Ok(ModuleSelector::NameVersion {
        name: name.to_owned(),
        version,
    })
}

/// Checks a module name: 1-64 of `[a-z0-9_-]`, starting with a letter.
pub fn validate_module_name(name: &str) -> Result<(), CoordinatorError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CoordinatorError::InvalidArgument(format!(
            "module name `{name}` is invalid: use 1-64 lowercase letters, digits, `-` or `_`, starting with a letter"
        )))
    }
}

/// Builds a hunt spec from a submission.
pub fn hunt_spec(request: v1::SubmitHuntRequest) -> Result<HuntSpec, CoordinatorError> {
    let module = module_selector(request.module)?;
    let scope = request.scope.unwrap_or_default();
    let range = scope.time_range.unwrap_or_default();
    for name in &scope.shards {
        if name.trim().is_empty() {
            return Err(CoordinatorError::InvalidArgument(
                "scope names an empty shard".to_owned(),
            ));
        }
    }
    let limits = request.limits.unwrap_or_default();
    let defaults = Limits::default();
    let limits = Limits {
        cpu_ms: if limits.cpu_ms == 0 {
            defaults.cpu_ms
        } else {
            limits.cpu_ms
        },
        memory_bytes: if limits.memory_bytes == 0 {
            defaults.memory_bytes
        } else {
            limits.memory_bytes
        },
        max_findings_per_task: if limits.max_findings_per_task == 0 {
            defaults.max_findings_per_task
        } else {
            limits.max_findings_per_task
        },
        max_output_bytes: limits.max_output_bytes,
        max_findings_per_hunt: or_default(
            limits.max_findings_per_hunt,
            defaults.max_findings_per_hunt,
        ),
        max_result_bytes_per_hunt: or_default(
            limits.max_result_bytes_per_hunt,
            defaults.max_result_bytes_per_hunt,
        ),
    };
    let policy = policy(request.policy.unwrap_or_default())?;
    if limits.memory_bytes < 1024 * 1024 {
        return Err(CoordinatorError::InvalidArgument(format!(
            "memory limit {} bytes is below the 1 MiB a module needs to start",
            limits.memory_bytes
        )));
    }
    let params = request.params.into_iter().collect();
    crate::query_result::check_params(&module, &params)?;
    Ok(HuntSpec {
        module,
        params,
        scope: Scope {
            selector: scope
                .selector
                .map(|s| s.match_labels.into_iter().collect())
                .unwrap_or_default(),
            shards: scope.shards.into_iter().map(ShardId::new).collect(),
            start_ms: range.start_ms,
            end_ms: range.end_ms,
        },
        limits,
        priority: request.priority,
        description: request.description,
        policy,
    })
}

fn or_default<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

/// A hunt policy from its protobuf form (zero = default).
pub fn policy(p: v1::HuntPolicy) -> Result<Policy, CoordinatorError> {
    let defaults = Policy::default();
    let canary = match (p.canary_shards, p.canary_percent) {
        (0, 0) => Canary::None,
        (n, 0) => Canary::Shards(n),
        (0, pct) if pct <= 100 => Canary::Percent(pct as u8),
        (0, pct) => {
            return Err(CoordinatorError::InvalidArgument(format!(
                "canary percentage {pct} is above 100; give 1-100, or a shard count"
            )));
        }
        _ => {
            return Err(CoordinatorError::InvalidArgument(
                "give the canary as a shard count or as a percentage, not both".to_owned(),
            ));
        }
    };
    Ok(Policy {
        max_attempts: or_default(p.max_attempts, defaults.max_attempts),
        retry_backoff_ms: or_default(p.retry_backoff_ms, defaults.retry_backoff_ms),
        deadline_ms: or_default(p.deadline_ms, defaults.deadline_ms),
        canary,
        failure_threshold: or_default(p.failure_threshold, defaults.failure_threshold),
        max_concurrency: p.max_concurrency,
        max_tasks_per_second: p.max_tasks_per_second,
    })
}

/// A hunt policy as protobuf.
pub fn policy_proto(p: &Policy) -> v1::HuntPolicy {
    let (canary_shards, canary_percent) = match p.canary {
        Canary::None => (0, 0),
        Canary::Shards(n) => (n, 0),
        Canary::Percent(pct) => (0, u32::from(pct)),
    };
    v1::HuntPolicy {
        max_attempts: p.max_attempts,
        retry_backoff_ms: p.retry_backoff_ms,
        deadline_ms: p.deadline_ms,
        canary_shards,
        canary_percent,
        failure_threshold: p.failure_threshold,
        max_concurrency: p.max_concurrency,
        max_tasks_per_second: p.max_tasks_per_second,
    }
}

/// Module metadata for listings (without the bytes), with its name's
/// owner and signer from `state`.
pub fn module_info(state: &State, module: &ModuleRecord) -> v1::ModuleInfo {
    v1::ModuleInfo {
        name: module.name.clone(),
        version: module.version.clone(),
        digest: module.digest.to_string(),
        size_bytes: module.bytes.len() as u64,
        description: module.description.clone(),
        uploaded_ms: module.uploaded_ms,
        owner: state
            .trust
            .owners
            .get(&module.name)
            .cloned()
            .unwrap_or_default(),
        signed_by: state
            .trust
            .signatures
            .get(&module.digest)
            .map(|s| s.key.clone())
            .unwrap_or_default(),
        techniques: module.techniques.clone(),
    }
}

/// The protobuf form of a hunt state.
pub fn hunt_state(state: HuntState) -> v1::HuntState {
    match state {
        HuntState::Running => v1::HuntState::Running,
        HuntState::Paused => v1::HuntState::Paused,
        HuntState::Completed => v1::HuntState::Completed,
        HuntState::PartiallyCompleted => v1::HuntState::PartiallyCompleted,
        HuntState::Failed => v1::HuntState::Failed,
        HuntState::Cancelled => v1::HuntState::Cancelled,
    }
}

/// The state-machine hunt state for a protobuf filter value.
pub fn hunt_state_from(value: i32) -> Option<HuntState> {
    match v1::HuntState::try_from(value).ok()? {
        v1::HuntState::Unspecified => None,
        v1::HuntState::Running => Some(HuntState::Running),
        v1::HuntState::Paused => Some(HuntState::Paused),
        v1::HuntState::Completed => Some(HuntState::Completed),
        v1::HuntState::PartiallyCompleted => Some(HuntState::PartiallyCompleted),
        v1::HuntState::Failed => Some(HuntState::Failed),
        v1::HuntState::Cancelled => Some(HuntState::Cancelled),
    }
}

fn task_status(hunt: &HuntRecord, task: &TaskRecord) -> v1::TaskStatus {
    // A pending task always says what it waits for, when the state knows.
    let waiting = || {
        if let Some(waiting) = &task.waiting {
            waiting.clone()
        } else if hunt.state == HuntState::Paused {
            "the hunt is paused".to_owned()
        } else if !hunt.widened && !task.canary {
            "waiting for the canary shards to succeed".to_owned()
        } else {
            String::new()
        }
    };
    let state = task_state_of(task);
    let error = match &task.state {
        TaskState::Pending => waiting(),
        TaskState::Failed { error } => error.clone(),
        _ => String::new(),
    };
    let worker = task
        .worker
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    v1::TaskStatus {
        task_id: task.id.to_string(),
        shard: task.shard.to_string(),
        state: state as i32,
        worker_id: worker,
        attempt: task.attempt,
        error,
        events_scanned: task.events_scanned,
        findings: task.findings,
        canary: task.canary,
        backup_worker_id: task
            .backup
            .as_ref()
            .map(|b| b.worker.to_string())
            .unwrap_or_default(),
        backup_attempt: task.backup.as_ref().map_or(0, |b| b.attempt),
        truncated: task.truncated.clone().unwrap_or_default(),
        failed_attempts: task.failed_attempts,
    }
}

fn aggregates(merged: &quarry_contract::aggregate::Merged) -> Vec<v1::Aggregate> {
    merged
        .iter()
        .map(|(name, value)| quarry_proto::aggregate::summary(name, value))
        .collect()
}

/// Which of a hunt's tasks to send with it.
#[derive(Clone, Debug, Default)]
pub struct TaskPage {
    /// Index in the hunt's task list to start from.
    pub from: usize,
    /// At most this many (0: none).
    pub size: usize,
    /// Only tasks in these states (empty: all).
    pub states: Vec<v1::TaskState>,
}

impl TaskPage {
    /// The first `size` tasks.
    pub fn first(size: usize) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }
}

fn task_state_of(task: &TaskRecord) -> v1::TaskState {
    match &task.state {
        TaskState::Pending => v1::TaskState::Pending,
        TaskState::Assigned { .. } => v1::TaskState::Assigned,
        TaskState::Succeeded => v1::TaskState::Succeeded,
        TaskState::Failed { .. } => v1::TaskState::Failed,
        TaskState::Cancelled => v1::TaskState::Cancelled,
    }
}

/// A hunt with one page of its tasks and the count of all of them by state.
pub fn hunt(state: &State, hunt: &HuntRecord, page: &TaskPage) -> v1::Hunt {
    let mut counts = v1::TaskCounts::default();
    let mut tasks = Vec::with_capacity(page.size.min(hunt.tasks.len()));
    let mut next_task_page_token = String::new();
    for (index, task) in hunt.tasks.iter().enumerate() {
        let Some(task) = state.tasks.get(task) else {
            continue;
        };
        let task_state = task_state_of(task);
        counts.total += 1;
        *match task_state {
            v1::TaskState::Pending | v1::TaskState::Unspecified => &mut counts.pending,
            v1::TaskState::Assigned => &mut counts.assigned,
            v1::TaskState::Succeeded => &mut counts.succeeded,
            v1::TaskState::Failed => &mut counts.failed,
            v1::TaskState::Cancelled => &mut counts.cancelled,
        } += 1;
        if index < page.from
            || !(page.states.is_empty() || page.states.contains(&task_state))
            || !next_task_page_token.is_empty()
        {
            continue;
        }
        if tasks.len() == page.size {
            if page.size > 0 {
                next_task_page_token = index.to_string();
            }
            continue;
        }
        tasks.push(task_status(hunt, task));
    }
    let spec = &hunt.spec;
    v1::Hunt {
        hunt_id: hunt.id.to_string(),
        module: state
            .modules
            .get(&hunt.module)
            .map(|m| module_info(state, m)),
        params: shown_params(&spec.params),
        scope: Some(scope(&spec.scope)),
        limits: Some(limits(&spec.limits)),
        priority: spec.priority,
        description: spec.description.clone(),
        state: hunt_state(hunt.state) as i32,
        submitted_ms: hunt.submitted_ms,
        finished_ms: hunt.finished_ms,
        tasks,
        next_task_page_token,
        task_counts: Some(counts),
        findings: hunt.findings,
        events_scanned: hunt.events_scanned,
        aggregates: aggregates(&hunt.aggregates),
        reason: hunt.reason.clone(),
        policy: Some(policy_proto(&spec.policy)),
        deadline_ms: hunt.deadline_ms,
        paused_reason: hunt.paused.clone().unwrap_or_default(),
        recent_failures: failed_attempts(hunt),
        failures: hunt.failures,
        result_limit: hunt.result_limit.clone().unwrap_or_default(),
        result_bytes: hunt.result_bytes,
        findings_dropped: hunt.findings_dropped,
        canary_tasks: hunt.canary_tasks,
        widened: hunt.widened,
        aggregate_errors: hunt
            .aggregate_errors
            .iter()
            .map(|(name, reason)| (name.clone(), reason.clone()))
            .collect(),
    }
}

/// A hunt's parameters as shown to users (intel sets by name and size).
fn shown_params(
    params: &std::collections::BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), quarry_contract::intel::shown_param(k, v)))
        .collect()
}

/// A hunt's scope as protobuf.
pub fn scope(scope: &crate::state::Scope) -> v1::HuntScope {
    v1::HuntScope {
        selector: Some(v1::LabelSelector {
            match_labels: scope
                .selector
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        shards: scope.shards.iter().map(ToString::to_string).collect(),
        time_range: Some(v1::TimeRange {
            start_ms: scope.start_ms,
            end_ms: scope.end_ms,
        }),
    }
}

/// A module selector as protobuf.
pub fn module_ref(selector: &crate::state::ModuleSelector) -> v1::ModuleRef {
    use crate::state::ModuleSelector;
    let reference = match selector {
        ModuleSelector::NameVersion { name, version } => {
            v1::module_ref::Ref::NameVersion(match version {
                Some(version) => format!("{name}@{version}"),
                None => name.clone(),
            })
        }
        ModuleSelector::Digest(digest) => v1::module_ref::Ref::Digest(digest.to_string()),
    };
    v1::ModuleRef {
        r#ref: Some(reference),
    }
}

/// What a hunt spec would be submitted as (a schedule's template).
pub fn submit_request(spec: &HuntSpec) -> v1::SubmitHuntRequest {
    v1::SubmitHuntRequest {
        module: Some(module_ref(&spec.module)),
        params: shown_params(&spec.params),
        scope: Some(scope(&spec.scope)),
        limits: Some(limits(&spec.limits)),
        priority: spec.priority,
        description: spec.description.clone(),
        policy: Some(policy_proto(&spec.policy)),
        ..Default::default()
    }
}

/// Limits as protobuf.
pub fn limits(limits: &Limits) -> v1::HuntLimits {
    v1::HuntLimits {
        cpu_ms: limits.cpu_ms,
        memory_bytes: limits.memory_bytes,
        max_findings_per_task: limits.max_findings_per_task,
        max_output_bytes: limits.max_output_bytes,
        max_findings_per_hunt: limits.max_findings_per_hunt,
        max_result_bytes_per_hunt: limits.max_result_bytes_per_hunt,
    }
}

/// Progress of a hunt.
pub fn progress(state: &State, hunt: &HuntRecord) -> v1::HuntProgress {
    let mut done = 0;
    let mut failed = 0;
    let mut waiting = 0;
    for task in hunt.tasks.iter().filter_map(|t| state.tasks.get(t)) {
        if task.state == TaskState::Pending && task.waiting.is_some() {
            waiting += 1;
        }
        match task.state {
            TaskState::Succeeded | TaskState::Cancelled => done += 1,
            TaskState::Failed { .. } => {
                done += 1;
                failed += 1;
            }
            TaskState::Pending | TaskState::Assigned { .. } => {}
        }
    }
    v1::HuntProgress {
        hunt_id: hunt.id.to_string(),
        state: hunt_state(hunt.state) as i32,
        tasks_total: hunt.tasks.len() as u32,
        tasks_done: done,
        tasks_failed: failed,
        findings: hunt.findings,
        events_scanned: hunt.events_scanned,
        reason: hunt.reason.clone(),
        paused_reason: hunt.paused.clone().unwrap_or_default(),
        result_limit: hunt.result_limit.clone().unwrap_or_default(),
        tasks_waiting: waiting,
        recent_failures: failed_attempts(hunt),
    }
}

fn failed_attempts(hunt: &HuntRecord) -> Vec<v1::FailedAttempt> {
    hunt.recent_failures
        .iter()
        .map(|f| v1::FailedAttempt {
            task_id: f.task.to_string(),
            shard: f.shard.to_string(),
            attempt: f.attempt,
            worker_id: f.worker.to_string(),
            error: f.error.clone(),
        })
        .collect()
}

fn severity(severity: Severity) -> v1::Severity {
    match severity {
        Severity::Informational => v1::Severity::Informational,
        Severity::Low => v1::Severity::Low,
        Severity::Medium => v1::Severity::Medium,
        Severity::High => v1::Severity::High,
        Severity::Critical => v1::Severity::Critical,
    }
}

fn severity_from(value: i32) -> Severity {
    match v1::Severity::try_from(value) {
        Ok(v1::Severity::Low) => Severity::Low,
        Ok(v1::Severity::Medium) => Severity::Medium,
        Ok(v1::Severity::High) => Severity::High,
        Ok(v1::Severity::Critical) => Severity::Critical,
        _ => Severity::Informational,
    }
}

/// A committed finding as protobuf.
/// A committed finding, number `seq` of its hunt, for the API; its cursor
/// resumes a stream after it.
pub fn finding(hunt: &HuntId, seq: u64, finding: &FindingRecord) -> v1::Finding {
    v1::Finding {
        cursor: (seq + 1).to_string(),
        finding_id: finding.id.clone(),
        hunt_id: hunt.to_string(),
        task_id: finding.task.to_string(),
        shard: finding.shard.to_string(),
        rule: finding.rule.clone(),
        title: finding.title.clone(),
        severity: severity(finding.severity) as i32,
        confidence: u32::from(finding.confidence),
        entity: finding.entity.clone(),
        timestamp_ms: finding.timestamp_ms,
        evidence: finding
            .evidence
            .iter()
            .map(|(key, value)| v1::Evidence {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        techniques: finding.techniques.clone(),
        tags: finding.tags.clone(),
        offsets: finding.offsets.clone(),
    }
}

/// A worker's failure report.
pub fn task_error(report: &v1::ReportTaskRequest) -> crate::state::TaskError {
    let message = if report.error.is_empty() {
        "the worker reported a failure without a cause".to_owned()
    } else {
        report.error.clone()
    };
    let module_fault = match v1::FailureKind::try_from(report.failure_kind) {
        Ok(v1::FailureKind::Module) => true,
        Ok(v1::FailureKind::Host) => false,
        // An older worker: judge from its error text.
        _ => crate::state::is_module_fault(&message),
    };
    crate::state::TaskError {
        message,
        module_fault,
    }
}

/// A worker's partial result (ids are assigned on apply).
/// A worker's successful report as the state machine's partial result; a
/// malformed aggregate is refused with its name and the reason.
pub fn partial_result(report: &mut v1::ReportTaskRequest) -> Result<PartialResult, String> {
    let findings = std::mem::take(&mut report.findings)
        .into_iter()
        .map(|f| FindingRecord {
            id: String::new(),
            task: quarry_proto::TaskId::new(String::new()),
            shard: ShardId::new(String::new()),
            rule: f.rule,
            title: f.title,
            severity: severity_from(f.severity),
            confidence: u8::try_from(f.confidence.min(100)).unwrap_or(100),
            entity: f.entity,
            timestamp_ms: f.timestamp_ms,
            evidence: f.evidence.into_iter().map(|e| (e.key, e.value)).collect(),
            techniques: f.techniques,
            tags: f.tags,
            offsets: f.offsets,
        })
        .collect();
    let aggregates = std::mem::take(&mut report.aggregates)
        .into_iter()
        .map(quarry_proto::aggregate::from_proto)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(PartialResult {
        findings,
        aggregates,
        events_scanned: report.events_scanned,
        findings_truncated: report.findings_truncated,
        end_offset: report.end_offset,
    })
}

/// A shard of the catalogue as protobuf (`time_range.end_ms` is the latest
/// event's time, inclusive).
pub fn shard_info(shard: &crate::state::ShardRecord) -> v1::ShardInfo {
    let d = &shard.description;
    v1::ShardInfo {
        name: d.name.to_string(),
        labels: d
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        event_count: d.event_count,
        time_range: Some(v1::TimeRange {
            start_ms: d.min_ts_ms,
            end_ms: d.max_ts_ms,
        }),
        worker_ids: shard.holders.iter().map(ToString::to_string).collect(),
        size_bytes: d.size_bytes,
        // Leader-local: `ListShards` adds them.
        field_counts: Default::default(),
    }
}

/// A shard as a worker describes it.
pub fn shard_description(info: v1::ShardInfo) -> Result<ShardDescription, CoordinatorError> {
    if info.name.trim().is_empty() {
        return Err(CoordinatorError::InvalidArgument(
            "a worker advertised a shard with no name".to_owned(),
        ));
    }
    let range = info.time_range.unwrap_or_default();
    Ok(ShardDescription {
        name: ShardId::new(info.name),
        labels: info.labels.into_iter().collect(),
        event_count: info.event_count,
        min_ts_ms: range.start_ms,
        max_ts_ms: range.end_ms,
        size_bytes: info.size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> Option<v1::ModuleRef> {
        Some(v1::ModuleRef {
            r#ref: Some(v1::module_ref::Ref::NameVersion(text.to_owned())),
        })
    }

    #[test]
    fn module_references_parse_or_say_what_is_wrong() {
        assert_eq!(
            module_selector(reference("bruteforce@0.1.0")).ok(),
            Some(ModuleSelector::NameVersion {
                name: "bruteforce".into(),
                version: Some("0.1.0".into())
            })
        );
        assert!(matches!(
            module_selector(reference("x")),
            Ok(ModuleSelector::NameVersion { version: None, .. })
        ));
        let err = module_selector(reference("Bad Name@1")).expect_err("invalid");
        assert!(err.to_string().contains("lowercase"), "{err}");
        let err = module_selector(reference("m@")).expect_err("empty version");
        assert!(err.to_string().contains("empty version"), "{err}");
        let err = module_selector(None).expect_err("missing");
        assert!(err.to_string().contains("no module"), "{err}");
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert!(matches!(
            module_selector(reference(&digest)),
            Ok(ModuleSelector::Digest(_))
        ));
    }

    #[test]
    fn zero_policy_fields_take_the_defaults_and_canary_is_one_of_two() {
        let p = policy(v1::HuntPolicy::default()).expect("defaults");
        assert_eq!(p, Policy::default());
        let p = policy(v1::HuntPolicy {
            canary_percent: 10,
            max_concurrency: 4,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!((p.canary, p.max_concurrency), (Canary::Percent(10), 4));
        assert_eq!(policy_proto(&p).canary_percent, 10);
        let both = policy(v1::HuntPolicy {
            canary_shards: 2,
            canary_percent: 10,
            ..Default::default()
        });
        assert!(both.expect_err("both").to_string().contains("not both"));
        let over = policy(v1::HuntPolicy {
            canary_percent: 150,
            ..Default::default()
        });
        assert!(over.is_err());
    }

    #[test]
    fn failure_kind_decides_and_unspecified_falls_back_to_the_text() {
        let mut report = v1::ReportTaskRequest {
            error: "trap in scan(): boom".into(),
            ..Default::default()
        };
        assert!(task_error(&report).module_fault, "judged from the text");
        report.failure_kind = v1::FailureKind::Host as i32;
        assert!(!task_error(&report).module_fault);
        report.error = "shard gone".into();
        report.failure_kind = v1::FailureKind::Module as i32;
        assert!(task_error(&report).module_fault);
        report.error.clear();
        assert!(task_error(&report).message.contains("without a cause"));
    }
}
