//! Printing API results as tables for people or as JSON lines for scripts
//! (one JSON object per line).

use quarry_proto::v1;
use serde_json::{Value, json};

/// `println!` for table output: module-, log- and user-controlled text in
/// the line is escaped ([`escape`]), so it cannot drive the terminal.
macro_rules! out_line {
    () => {
        println!()
    };
    ($($arg:tt)*) => {
        println!("{}", escape(&format!($($arg)*)))
    };
}

/// `eprintln!` with [`escape`], as [`out_line!`].
macro_rules! err_line {
    ($($arg:tt)*) => {
        eprintln!("{}", escape(&format!($($arg)*)))
    };
}

pub mod triage;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// RFC 3339 text for milliseconds since the epoch ("-" for 0).
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_owned();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Bytes for people: 1.5 MiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A hunt state's name, as the tables print it.
pub fn hunt_state(value: i32) -> &'static str {
    match v1::HuntState::try_from(value) {
        Ok(v1::HuntState::Running) => "running",
        Ok(v1::HuntState::Paused) => "paused",
        Ok(v1::HuntState::Completed) => "completed",
        Ok(v1::HuntState::PartiallyCompleted) => "partially-completed",
        Ok(v1::HuntState::Failed) => "failed",
        Ok(v1::HuntState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn task_state(value: i32) -> &'static str {
    match v1::TaskState::try_from(value) {
        Ok(v1::TaskState::Pending) => "pending",
        Ok(v1::TaskState::Assigned) => "running",
        Ok(v1::TaskState::Succeeded) => "succeeded",
        Ok(v1::TaskState::Failed) => "failed",
        Ok(v1::TaskState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// Severity name.
pub fn severity(value: i32) -> &'static str {
    match v1::Severity::try_from(value) {
        Ok(v1::Severity::Informational) => "info",
        Ok(v1::Severity::Low) => "low",
        Ok(v1::Severity::Medium) => "medium",
        Ok(v1::Severity::High) => "high",
        Ok(v1::Severity::Critical) => "critical",
        _ => "unknown",
    }
}

/// Whether `c` must not reach a terminal raw: C0 and C1 controls (ESC starts
/// escape sequences, CR and backspace overwrite what was printed), DEL, the
/// line and paragraph separators, and the bidirectional controls that reorder
/// what is shown (Trojan Source).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character written as an escape (`\n`, `\r`,
/// `\t`, `\x1b`, `\u{202e}`), for table output of strings that modules,
/// logs or other users control. JSON output is escaped by serde instead.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Aligned table lines: a header line, then one per row. Cells are escaped
/// ([`escape`]) before they are measured, so a cell can neither move the
/// cursor nor break the alignment.
pub(crate) fn render_table(headers: &[&str], rows: Vec<Vec<String>>) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|c| escape(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect();
        text.join("  ").trim_end().to_owned()
    };
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut lines = vec![line(&headers)];
    lines.extend(rows.iter().map(|row| line(row)));
    lines
}

pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    for line in render_table(headers, rows) {
        println!("{line}");
    }
}

pub(crate) fn json_line(value: Value) {
    println!("{value}");
}

/// A submitted hunt.
pub fn submitted(format: Output, response: &v1::SubmitHuntResponse) {
    let module = response.module.as_ref();
    let name = module.map(|m| format!("{}@{}", m.name, m.version));
    match format {
        Output::Json => json_line(json!({
            "hunt_id": response.hunt_id, "task_count": response.task_count,
            "module": name, "module_digest": module.map(|m| &m.digest),
        })),
        Output::Table => out_line!(
            "hunt {} submitted with {} tasks{}",
            response.hunt_id,
            response.task_count,
            name.map(|n| format!(", running {n}")).unwrap_or_default()
        ),
    }
}

/// A dry run's preview.
pub fn dry_run(format: Output, preview: &v1::SubmitHuntResponse) {
    let estimate = (preview.estimated_ms > 0).then(|| {
        humantime::format_duration(std::time::Duration::from_millis(preview.estimated_ms))
            .to_string()
    });
    match format {
        Output::Json => json_line(json!({
            "dry_run": true, "task_count": preview.task_count, "events_in_scope": preview.events_in_scope,
            "bytes_in_scope": preview.bytes_in_scope, "estimated_ms": preview.estimated_ms,
            "shards": preview.shards.iter().map(|s| json!({"name": s.name, "event_count": s.event_count, "size_bytes": s.size_bytes, "workers": s.worker_ids})).collect::<Vec<_>>(),
        })),
        Output::Table => {
            out_line!(
                "dry run: {} shards, {} events, {} in scope; estimated time {}",
                preview.task_count,
                preview.events_in_scope,
                bytes(preview.bytes_in_scope),
                estimate
                    .as_deref()
                    .unwrap_or("unknown (no completed run of this module yet)")
            );
            shards(format, &preview.shards);
        }
    }
}

/// A progress update (table mode writes to stderr so stdout stays results).
pub fn progress(format: Output, p: &v1::HuntProgress) {
    match format {
        Output::Json => json_line(json!({
            "hunt_id": p.hunt_id, "state": hunt_state(p.state), "tasks_total": p.tasks_total,
            "tasks_done": p.tasks_done, "tasks_failed": p.tasks_failed, "tasks_waiting": p.tasks_waiting,
            "findings": p.findings, "events_scanned": p.events_scanned,
            "paused_reason": p.paused_reason, "result_limit": p.result_limit,
            "recent_failures": p.recent_failures.iter().map(|f| json!({
                "shard": f.shard, "attempt": f.attempt, "worker": f.worker_id, "error": f.error,
            })).collect::<Vec<_>>(),
        })),
        Output::Table => {
            err_line!(
                "  {}: {}/{} tasks done ({} failed, {} waiting), {} events scanned, {} findings",
                hunt_state(p.state),
                p.tasks_done,
                p.tasks_total,
                p.tasks_failed,
                p.tasks_waiting,
                p.events_scanned,
                p.findings
            );
            if let Some(f) = p.recent_failures.last() {
                let first_line = f.error.lines().next().unwrap_or_default();
                err_line!(
                    "  latest failure: {} attempt {} on {}: {first_line}",
                    f.shard,
                    f.attempt,
                    f.worker_id
                );
            }
            if !p.paused_reason.is_empty() {
                err_line!("  paused: {}", p.paused_reason);
            }
            if !p.result_limit.is_empty() {
                err_line!("  {}", p.result_limit);
            }
        }
    }
}

fn hunt_json(h: &v1::Hunt) -> Value {
    json!({
        "hunt_id": h.hunt_id,
        "module": h.module.as_ref().map(|m| format!("{}@{}", m.name, m.version)),
        "state": hunt_state(h.state),
        "reason": h.reason,
        "submitted": time(h.submitted_ms),
        "finished": time(h.finished_ms),
        "findings": h.findings,
        "events_scanned": h.events_scanned,
        "deadline": time(h.deadline_ms),
        "paused_reason": h.paused_reason,
        "failures": h.failures,
        "recent_failures": h.recent_failures.iter().map(|f| json!({
            "task_id": f.task_id, "shard": f.shard, "attempt": f.attempt, "worker": f.worker_id, "error": f.error,
        })).collect::<Vec<_>>(),
        "result_limit": h.result_limit,
        "result_bytes": h.result_bytes,
        "findings_dropped": h.findings_dropped,
        "canary_tasks": h.canary_tasks,
        "widened": h.widened,
        "params": h.params,
        "task_counts": h.task_counts.map(|c| json!({
            "total": c.total, "pending": c.pending, "assigned": c.assigned,
            "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled,
        })),
        "more_tasks": !h.next_task_page_token.is_empty(),
        "tasks": h.tasks.iter().map(|t| json!({
            "task_id": t.task_id, "shard": t.shard, "state": task_state(t.state), "worker": t.worker_id,
            "attempt": t.attempt, "error": t.error, "events_scanned": t.events_scanned, "findings": t.findings,
            "canary": t.canary, "backup_worker": t.backup_worker_id, "backup_attempt": t.backup_attempt,
            "failed_attempts": t.failed_attempts, "truncated": t.truncated,
        })).collect::<Vec<_>>(),
        "aggregates": aggregates_json(&h.aggregates),
        "aggregate_errors": h.aggregate_errors,
    })
}

/// Aggregates (summary form) as JSON: name -> `{"kind": …}` and the kind's
/// contents.
pub fn aggregates_json(aggregates: &[v1::Aggregate]) -> Value {
    use v1::aggregate::Value as Kind;
    aggregates
        .iter()
        .map(|a| {
            let value = match &a.value {
                None => json!({"kind": "counts", "counts": a.counts}),
                Some(Kind::Distinct(d)) => json!({
                    "kind": "distinct",
                    "keys": d.keys.iter().map(|k| (k.key.clone(), json!({
                        "count": k.count, "exact": k.exact, "values": k.values,
                    }))).collect::<serde_json::Map<_, _>>(),
                }),
                Some(Kind::TopK(t)) => json!({
                    "kind": "top-k", "k": t.k, "floor": t.floor,
                    "entries": t.entries.iter().map(|e| json!({
                        "key": e.key, "count": e.count, "error": e.error,
                    })).collect::<Vec<_>>(),
                }),
                Some(Kind::Range(r)) => json!({
                    "kind": "range",
                    "keys": r.keys.iter().map(|k| (k.key.clone(), json!({
                        "min": k.min, "max": k.max, "count": k.count,
                    }))).collect::<serde_json::Map<_, _>>(),
                }),
                Some(Kind::Stack(st)) => json!({
                    "kind": "stack", "max_hosts": st.max_hosts, "common_values": st.common_values,
                    "rare": st.values.iter().filter(|v| !v.common).map(|v| json!({
                        "value": v.value, "hosts": v.hosts, "events": v.events,
                    })).collect::<Vec<_>>(),
                }),
            };
            (a.name.clone(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// 2000-01-01 and 2100-01-01 in ms since the epoch: a range entirely within
/// them is taken for event timestamps.
const TIMESTAMP_MS_2000: i64 = 946_684_800_000;
const TIMESTAMP_MS_2100: i64 = 4_102_444_800_000;

/// Aggregates (summary form) as tables, one per aggregate.
pub fn aggregates_table(aggregates: &[v1::Aggregate]) {
    use v1::aggregate::Value as Kind;
    for a in aggregates {
        out_line!();
        match &a.value {
            None => {
                out_line!("aggregate {} (counts, {} keys)", a.name, a.counts.len());
                let mut rows: Vec<(&String, &u64)> = a.counts.iter().collect();
                rows.sort();
                let rows = rows
                    .into_iter()
                    .map(|(k, n)| vec![k.clone(), n.to_string()])
                    .collect();
                table(&["KEY", "COUNT"], rows);
            }
            Some(Kind::Distinct(d)) => {
                out_line!(
                    "aggregate {} (distinct values, {} keys)",
                    a.name,
                    d.keys.len()
                );
                let rows = d
                    .keys
                    .iter()
                    .map(|k| {
                        let count = if k.exact {
                            k.count.to_string()
                        } else {
                            format!("~{}", k.count)
                        };
                        let mut sample = k
                            .values
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ");
                        if k.values.len() > 5 {
                            sample.push_str(", …");
                        }
                        vec![k.key.clone(), count, sample]
                    })
                    .collect();
                table(&["KEY", "DISTINCT", "VALUES"], rows);
            }
            Some(Kind::TopK(t)) => {
                out_line!("aggregate {} (top {})", a.name, t.k);
                let rows = t
                    .entries
                    .iter()
                    .map(|e| {
                        let count = if e.error > 0 {
                            format!("{} (≤ {})", e.count, e.count.saturating_add(e.error))
                        } else {
                            e.count.to_string()
                        };
                        vec![e.key.clone(), count]
                    })
                    .collect();
                table(&["KEY", "COUNT"], rows);
            }
            Some(Kind::Range(r)) => {
                out_line!("aggregate {} (min/max, {} keys)", a.name, r.keys.len());
                // Ranges over event timestamps (first/last seen) read as
                // times; other numbers as they are.
                let plausible = |n: i64| (TIMESTAMP_MS_2000..TIMESTAMP_MS_2100).contains(&n);
                let as_times = r.keys.iter().all(|k| plausible(k.min) && plausible(k.max));
                let show = |n: i64| if as_times { time(n) } else { n.to_string() };
                let rows = r
                    .keys
                    .iter()
                    .map(|k| vec![k.key.clone(), show(k.min), show(k.max), k.count.to_string()])
                    .collect();
                table(&["KEY", "MIN (FIRST)", "MAX (LAST)", "COUNT"], rows);
            }
            Some(Kind::Stack(st)) => {
                let rare: Vec<&v1::StackValue> = st.values.iter().filter(|v| !v.common).collect();
                out_line!(
                    "aggregate {} (stack): {} value(s) seen on at most {} host(s); {} more on more hosts",
                    a.name,
                    rare.len(),
                    st.max_hosts,
                    st.common_values
                );
                let rows = rare
                    .into_iter()
                    .map(|v| vec![v.value.clone(), v.hosts.join(", "), v.events.to_string()])
                    .collect();
                table(&["VALUE", "HOSTS", "EVENTS"], rows);
            }
        }
    }
}

/// One hunt with its tasks.
pub fn hunt(format: Output, h: &v1::Hunt) {
    match format {
        Output::Json => json_line(hunt_json(h)),
        Output::Table => {
            let module = h
                .module
                .as_ref()
                .map(|m| format!("{}@{}", m.name, m.version))
                .unwrap_or_default();
            out_line!(
                "hunt {}  module {}  state {}",
                h.hunt_id,
                module,
                hunt_state(h.state)
            );
            out_line!(
                "submitted {}  finished {}  events scanned {}  findings {}",
                time(h.submitted_ms),
                time(h.finished_ms),
                h.events_scanned,
                h.findings
            );
            if h.state == v1::HuntState::Running as i32 || h.state == v1::HuntState::Paused as i32 {
                out_line!("deadline {}", time(h.deadline_ms));
            }
            if h.canary_tasks > 0 {
                out_line!(
                    "canary: {} shards first; {}",
                    h.canary_tasks,
                    if h.widened {
                        "widened to all shards"
                    } else {
                        "waiting for the canary to succeed"
                    }
                );
            }
            if !h.paused_reason.is_empty() {
                out_line!("paused: {}", h.paused_reason);
            }
            if !h.recent_failures.is_empty() {
                out_line!("failing tasks ({} module failures counted):", h.failures);
                for f in &h.recent_failures {
                    let first_line = f.error.lines().next().unwrap_or_default();
                    out_line!(
                        "  {} attempt {} on {}: {first_line}",
                        f.shard,
                        f.attempt,
                        f.worker_id
                    );
                }
            }
            if !h.result_limit.is_empty() {
                out_line!("{}", h.result_limit);
            }
            if !h.reason.is_empty() {
                out_line!("reason: {}", h.reason);
            }
            for (name, reason) in &h.aggregate_errors {
                out_line!("aggregate {name} not fully merged: {reason}");
            }
            let counts = h.task_counts.unwrap_or_default();
            out_line!(
                "tasks {}: {} pending, {} assigned, {} succeeded, {} failed, {} cancelled",
                counts.total,
                counts.pending,
                counts.assigned,
                counts.succeeded,
                counts.failed,
                counts.cancelled
            );
            if !h.next_task_page_token.is_empty() {
                out_line!(
                    "showing {} tasks; `quarry hunt status {} --tasks 0` shows them all, --task-state filters",
                    h.tasks.len(),
                    h.hunt_id
                );
            }
            let rows = h
                .tasks
                .iter()
                .map(|t| {
                    let mut worker = t.worker_id.clone();
                    if !t.backup_worker_id.is_empty() {
                        worker =
                            format!("{worker} (+{} #{})", t.backup_worker_id, t.backup_attempt);
                    }
                    let mut note = t.error.lines().next().unwrap_or_default().to_owned();
                    if !t.truncated.is_empty() {
                        if !note.is_empty() {
                            note.push_str("; ");
                        }
                        note.push_str(&t.truncated);
                    }
                    vec![
                        format!("{}{}", t.shard, if t.canary { " (canary)" } else { "" }),
                        task_state(t.state).to_owned(),
                        worker,
                        t.attempt.to_string(),
                        t.events_scanned.to_string(),
                        t.findings.to_string(),
                        note,
                    ]
                })
                .collect();
            table(
                &[
                    "SHARD", "STATE", "WORKER", "ATTEMPT", "EVENTS", "FINDINGS", "ERROR",
                ],
                rows,
            );
            aggregates_table(&h.aggregates);
        }
    }
}

/// One task's aggregates in the summary form a hunt shows, so that
/// `quarry module test` prints them as the cluster would.
fn summaries(aggregates: &[quarry_contract::Aggregate]) -> Vec<v1::Aggregate> {
    aggregates
        .iter()
        .map(|a| quarry_proto::aggregate::summary(&a.name, &a.value))
        .collect()
}

/// Hunts, one row each.
pub fn hunts(format: Output, hunts: &[v1::Hunt]) {
    match format {
        Output::Json => hunts.iter().for_each(|h| json_line(hunt_json(h))),
        Output::Table => {
            let rows = hunts
                .iter()
                .map(|h| {
                    vec![
                        h.hunt_id.clone(),
                        h.module
                            .as_ref()
                            .map(|m| format!("{}@{}", m.name, m.version))
                            .unwrap_or_default(),
                        hunt_state(h.state).to_owned(),
                        h.task_counts.unwrap_or_default().total.to_string(),
                        h.findings.to_string(),
                        time(h.submitted_ms),
                    ]
                })
                .collect();
            table(
                &["HUNT", "MODULE", "STATE", "TASKS", "FINDINGS", "SUBMITTED"],
                rows,
            );
        }
    }
}

/// Findings.
pub fn findings(format: Output, findings: &[v1::Finding]) {
    match format {
        Output::Json => {
            for f in findings {
                json_line(finding_json(f));
            }
        }
        Output::Table => {
            if findings.is_empty() {
                out_line!("no findings");
                return;
            }
            let rows = findings
                .iter()
                .map(|f| {
                    vec![
                        severity(f.severity).to_owned(),
                        time(f.timestamp_ms),
                        f.shard.clone(),
                        f.entity.clone(),
                        f.title.clone(),
                        f.techniques.join(","),
                    ]
                })
                .collect();
            table(
                &["SEVERITY", "TIME", "SHARD", "ENTITY", "TITLE", "ATT&CK"],
                rows,
            );
        }
    }
}

/// One finding as JSON (`quarry hunt results` and `quarry module test`
/// print the same shape, so their findings compare).
pub fn finding_json(f: &v1::Finding) -> Value {
    json!({
        "finding_id": f.finding_id, "hunt_id": f.hunt_id, "shard": f.shard, "rule": f.rule,
        "title": f.title, "severity": severity(f.severity), "confidence": f.confidence,
        "entity": f.entity, "time": time(f.timestamp_ms), "timestamp_ms": f.timestamp_ms,
        "techniques": f.techniques,
        "tags": f.tags,
        "evidence": f.evidence.iter().map(|e| (e.key.clone(), json!(e.value))).collect::<serde_json::Map<_, _>>(),
        "offsets": f.offsets,
    })
}

/// Modules.
pub fn modules(format: Output, modules: &[v1::ModuleInfo]) {
    match format {
        Output::Json => modules.iter().for_each(|m| {
            json_line(json!({
                "name": m.name, "version": m.version, "digest": m.digest, "size_bytes": m.size_bytes,
                "description": m.description, "uploaded": time(m.uploaded_ms),
                "owner": m.owner, "signed_by": m.signed_by,
            }))
        }),
        Output::Table => {
            let rows = modules
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.version.clone(),
                        m.digest.chars().take(16).collect(),
                        m.size_bytes.to_string(),
                        m.owner.clone(),
                        if m.signed_by.is_empty() {
                            "-".to_owned()
                        } else {
                            m.signed_by.clone()
                        },
                        m.description.clone(),
                    ]
                })
                .collect();
            table(
                &["NAME", "VERSION", "DIGEST", "BYTES", "OWNER", "SIGNED BY", "DESCRIPTION"],
                rows,
            );
        }
    }
}

/// Shards.
pub fn shards(format: Output, shards: &[v1::ShardInfo]) {
    let labels = |s: &v1::ShardInfo| {
        let mut l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        l.sort();
        l.join(",")
    };
    match format {
        Output::Json => shards.iter().for_each(|s| {
            let range = s.time_range.unwrap_or_default();
            json_line(json!({
                "name": s.name, "labels": s.labels, "event_count": s.event_count, "size_bytes": s.size_bytes,
                "start": time(range.start_ms), "end": time(range.end_ms), "workers": s.worker_ids,
            }))
        }),
        Output::Table => {
            let rows = shards
                .iter()
                .map(|s| {
                    let range = s.time_range.unwrap_or_default();
                    vec![
                        s.name.clone(),
                        s.event_count.to_string(),
                        bytes(s.size_bytes),
                        time(range.start_ms),
                        time(range.end_ms),
                        s.worker_ids.join(","),
                        labels(s),
                    ]
                })
                .collect();
            table(
                &["SHARD", "EVENTS", "SIZE", "FROM", "TO", "WORKERS", "LABELS"],
                rows,
            );
        }
    }
}

/// Workers.
pub fn workers(format: Output, workers: &[v1::WorkerInfo]) {
    match format {
        Output::Json => workers.iter().for_each(|w| {
            json_line(json!({
                "worker_id": w.worker_id, "address": w.address, "live": w.live, "draining": w.draining, "slots": w.slots,
                "running_tasks": w.running_tasks, "shards": w.shards, "last_heartbeat": time(w.last_heartbeat_ms),
            }))
        }),
        Output::Table => {
            let rows = workers
                .iter()
                .map(|w| {
                    vec![
                        w.worker_id.clone(),
                        w.address.clone(),
                        match (w.live, w.draining) {
                            (true, true) => "draining",
                            (true, false) => "live",
                            (false, _) => "silent",
                        }
                        .to_owned(),
                        format!("{}/{}", w.running_tasks, w.slots),
                        w.shards.join(","),
                    ]
                })
                .collect();
            table(&["WORKER", "ADDRESS", "STATE", "TASKS", "SHARDS"], rows);
        }
    }
}

/// Cluster status.
pub fn status(format: Output, s: &v1::StatusResponse) {
    match format {
        Output::Json => json_line(json!({
            "node_id": s.node_id, "is_leader": s.is_leader, "leader_id": s.leader_id, "term": s.term,
            "commit_index": s.commit_index, "applied_index": s.applied_index, "workers": s.workers,
            "live_workers": s.live_workers, "shards": s.shards, "modules": s.modules,
            "running_hunts": s.running_hunts, "version": s.version, "stale": s.stale,
            "first_log_index": s.first_log_index,
            "coordinators": coordinators_json(&s.coordinators),
        })),
        Output::Table => {
            out_line!(
                "node {} ({}), leader {}, term {}, commit {}, applied {}, log from {}",
                s.node_id,
                if s.is_leader { "leader" } else { "follower" },
                s.leader_id,
                s.term,
                s.commit_index,
                s.applied_index,
                s.first_log_index
            );
            out_line!(
                "workers {} ({} live), shards {}, modules {}, running hunts {}, version {}",
                s.workers,
                s.live_workers,
                s.shards,
                s.modules,
                s.running_hunts,
                s.version
            );
            if s.stale {
                out_line!(
                    "warning: no leader confirmed this node's state; the counts above may be stale"
                );
            }
            coordinators_table(&s.coordinators);
        }
    }
}

fn coordinators_json(members: &[v1::CoordinatorInfo]) -> Value {
    members
        .iter()
        .map(|c| json!({"node_id": c.node_id, "url": c.url, "voter": c.voter}))
        .collect()
}

fn coordinators_table(members: &[v1::CoordinatorInfo]) {
    table(
        &["COORDINATOR", "URL", "ROLE"],
        members
            .iter()
            .map(|c| {
                vec![
                    c.node_id.to_string(),
                    if c.url.is_empty() {
                        "(unknown)".to_owned()
                    } else {
                        c.url.clone()
                    },
                    if c.voter { "voter" } else { "learner" }.to_owned(),
                ]
            })
            .collect(),
    );
}

/// The coordinator group after a membership change.
pub fn membership(format: Output, members: &[v1::CoordinatorInfo]) {
    match format {
        Output::Json => json_line(json!({ "coordinators": coordinators_json(members) })),
        Output::Table => coordinators_table(members),
    }
}

/// A module built by `quarry module build`.
pub fn built_module(format: Output, built: &crate::module_tool::Built) {
    let d = &built.description;
    match format {
        Output::Json => json_line(json!({
            "path": built.path.display().to_string(), "size": built.size, "sha256": built.sha256,
            "name": d.name, "version": d.version, "description": d.description,
            "fields": d.fields, "techniques": d.techniques,
        })),
        Output::Table => {
            out_line!("built {}@{}", d.name, d.version);
            out_line!("  path    {}", built.path.display());
            out_line!("  size    {} ({} bytes)", bytes(built.size), built.size);
            out_line!("  sha256  {}", built.sha256);
            out_line!("  fields  {}", d.fields.join(", "));
            if !d.techniques.is_empty() {
                out_line!("  ATT&CK  {}", d.techniques.join(", "));
            }
            out_line!("valid: instantiates against the hunt world and describes itself");
        }
    }
}

/// The report of `quarry module test`.
pub fn local_run(format: Output, run: &crate::module_tool::LocalRun) {
    use crate::module_tool::{failure_kind, findings as local_findings};
    let d = &run.description;
    let events: u64 = run.files.iter().map(|f| f.events).sum();
    let malformed: u64 = run.files.iter().map(|f| f.malformed).sum();
    let findings = run.outcome.as_ref().map(local_findings).unwrap_or_default();
    match format {
        Output::Json => {
            let (output, failure) = match &run.outcome {
                Ok(o) => (Some(o), Value::Null),
                Err(e) => (
                    None,
                    json!({"kind": failure_kind(e), "reason": e.to_string()}),
                ),
            };
            json_line(json!({
                "module": d.name, "version": d.version, "sha256": run.digest,
                "compiled_from_cache": matches!(run.compiled, crate::module_tool::Compiled::FromCache(_)),
                "params": run.params.iter().map(|(k, v)| (k.clone(), json!(quarry_contract::intel::shown_param(k, v)))).collect::<serde_json::Map<_, _>>(),
                "files": run.files.iter().map(|f| json!({
                    "path": f.path.display().to_string(), "format": f.format.name(),
                    "events": f.events, "malformed": f.malformed, "without_timestamp": f.without_timestamp,
                })).collect::<Vec<_>>(),
                "events_stored": events, "malformed": malformed,
                "malformed_records": run.malformed.iter().map(|m| json!({
                    "source": m.source, "place": m.place, "error": m.error,
                })).collect::<Vec<_>>(),
                "events_scanned": output.map(|o| o.events_scanned),
                "events_matched": output.map(|o| o.events_matched),
                "blocks_read": output.map(|o| o.blocks_read),
                "blocks_skipped": output.map(|o| o.blocks_skipped),
                "findings": findings.iter().map(finding_json).collect::<Vec<_>>(),
                "findings_dropped": output.map(|o| o.findings_dropped),
                "aggregates": output.map(|o| aggregates_json(&summaries(&o.aggregates))),
                "log": output.map(|o| o.log.clone()),
                "failure": failure,
            }));
        }
        Output::Table => {
            out_line!("module {}@{} (sha256 {})", d.name, d.version, run.digest);
            match &run.compiled {
                crate::module_tool::Compiled::FromCache(dir) => {
                    out_line!("  compiled module from the cache {}", dir.display())
                }
                crate::module_tool::Compiled::Now { seconds, cache } => out_line!(
                    "  compiled in {seconds:.1} s{}",
                    cache.as_ref().map_or(String::new(), |dir| format!(
                        " (kept in {} for the next run)",
                        dir.display()
                    ))
                ),
            }
            for f in &run.files {
                out_line!(
                    "  {} ({}): {} events, {} malformed, {} without a timestamp",
                    f.path.display(),
                    f.format.name(),
                    f.events,
                    f.malformed,
                    f.without_timestamp
                );
            }
            if malformed > 0 {
                out_line!("malformed records (kept aside, not scanned):");
                for m in &run.malformed {
                    out_line!("  {}: {}: {}", m.source, m.place, m.error);
                }
                if malformed > run.malformed.len() as u64 {
                    out_line!("  ... and {} more", malformed - run.malformed.len() as u64);
                }
            }
            match &run.outcome {
                Err(e) => {
                    out_line!("FAILED ({}): {e}", failure_kind(e));
                }
                Ok(o) => {
                    out_line!(
                        "scanned {} events ({} blocks read, {} skipped by the prefilter's block index), {} passed the prefilter; {} finding(s){}",
                        o.events_scanned,
                        o.blocks_read,
                        o.blocks_skipped,
                        o.events_matched,
                        findings.len(),
                        if o.findings_truncated {
                            format!(
                                " ({} more dropped at the findings limit)",
                                o.findings_dropped
                            )
                        } else {
                            String::new()
                        }
                    );
                    out_line!();
                    self::findings(Output::Table, &findings);
                    aggregates_table(&summaries(&o.aggregates));
                    if !o.log.is_empty() {
                        out_line!();
                        out_line!("module log:");
                        for line in &o.log {
                            out_line!("  {line}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_in_table_output() {
        // ESC sequences (colour, cursor moves, OSC 8 links, title changes),
        // CR and backspace that overwrite, DEL, C1 CSI, and bidi overrides.
        let hostile = "ok\u{1b}[31mred\u{1b}]0;title\u{7}\rover\u{8}\u{7f}\u{9b}2J\u{202e}txt.exe\u{2066}x\u{2069}\nnext\ttab";
        let escaped = escape(hostile);
        assert_eq!(
            escaped,
            "ok\\x1b[31mred\\x1b]0;title\\x07\\rover\\x08\\x7f\\u{9b}2J\\u{202e}txt.exe\\u{2066}x\\u{2069}\\nnext\\ttab"
        );
        assert!(!escaped.chars().any(is_unsafe));
        // Plain text, non-ASCII included, is untouched and not copied.
        assert!(matches!(
            escape("Ünïcode, tabs\u{a0}and 4625"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(escape(&escaped), escaped, "escaping twice changes nothing");

        let lines = render_table(
            &["RULE", "ENTITY"],
            vec![vec![
                "brute\u{1b}[2K".to_owned(),
                "alice\rmallory".to_owned(),
            ]],
        );
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| !l.chars().any(is_unsafe)), "{lines:?}");
        assert_eq!(lines[1], "brute\\x1b[2K  alice\\rmallory");
        // Columns are aligned on the escaped text.
        assert_eq!(lines[0], "RULE          ENTITY");
    }
}
