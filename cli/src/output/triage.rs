//! Printing the triage queue, cases, configs and proposals.

use super::{Output, escape, finding_json, json_line, severity, table, time};
use quarry_proto::v1;
use serde_json::{Value, json};

fn verdict_json(v: &v1::CaseVerdict) -> Value {
    json!({ "kind": v.kind, "comment": v.comment, "who": v.who, "at": time(v.at_ms) })
}

/// A case as one JSON object.
pub fn case_json(c: &v1::TriageCase) -> Value {
    json!({
        "id": c.id,
        "kind": c.kind,
        "title": c.title,
        "rule": c.rule,
        "rule_author": c.rule_author,
        "module": c.module,
        "entity": c.entity,
        "state": c.state,
        "closed_by": c.closed_by,
        "close_reason": c.close_reason,
        "severity": severity(c.severity),
        "score": c.score,
        "score_terms": c.score_terms.iter().map(|t| json!({
            "name": t.name, "input": t.input, "factor": t.factor,
            "weight": t.weight, "contribution": t.contribution,
        })).collect::<Vec<_>>(),
        "count": c.count,
        "first_seen": time(c.first_seen_ms),
        "last_seen": time(c.last_seen_ms),
        "hosts": c.hosts,
        "hunts": c.hunts,
        "techniques": c.techniques.iter().map(|t| json!({
            "id": t.id, "name": t.name, "tactics": t.tactics,
        })).collect::<Vec<_>>(),
        "tactics": c.tactics,
        "assignee": c.assignee,
        "verdict": c.verdict.as_ref().map(verdict_json),
        "comments": c.comments.iter().map(|m| json!({
            "who": m.who, "at": time(m.at_ms), "text": m.text,
        })).collect::<Vec<_>>(),
        "history": c.history.iter().map(|h| json!({
            "at": time(h.at_ms), "actor": h.actor, "action": h.action,
        })).collect::<Vec<_>>(),
        "findings": c.findings.iter().map(|f| format!("{}#{}", f.hunt_id, f.seq)).collect::<Vec<_>>(),
        "related": c.related,
        "rules": c.rules,
        "criticality": c.criticality,
        "criticality_reason": c.criticality_reason,
        "intel_matches": c.intel_matches,
        "suppressed_count": c.suppressed_count,
        "reason": c.reason,
        "fields": c.fields,
        "finding_details": c.finding_details.iter().map(finding_json).collect::<Vec<_>>(),
        "follow_ups": c.follow_ups.iter().map(|f| json!({
            "hunt_id": f.hunt_id, "description": f.description,
        })).collect::<Vec<_>>(),
    })
}

/// The queue, best first.
pub fn cases(format: Output, cases: &[v1::TriageCase], total: u64) {
    match format {
        Output::Json => cases.iter().for_each(|c| json_line(case_json(c))),
        Output::Table => {
            let rows = cases
                .iter()
                .map(|c| {
                    let what = if c.kind == "incident" {
                        c.title.clone()
                    } else {
                        format!("{} ({})", c.title, c.rule)
                    };
                    vec![
                        c.id.clone(),
                        format!("{:.1}", c.score),
                        severity(c.severity).to_owned(),
                        if c.state == "open" {
                            "open".to_owned()
                        } else if c.closed_by.starts_with("auto-closed") {
                            "auto-closed".to_owned()
                        } else {
                            "closed".to_owned()
                        },
                        c.count.to_string(),
                        c.entity.clone(),
                        what,
                        c.assignee.clone(),
                        time(c.last_seen_ms),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "SCORE",
                    "SEVERITY",
                    "STATE",
                    "COUNT",
                    "ENTITY",
                    "WHAT",
                    "ASSIGNEE",
                    "LAST SEEN",
                ],
                rows,
            );
            if (cases.len() as u64) < total {
                out_line!(
                    "showing {} of {total}; --limit 0 shows them all",
                    cases.len()
                );
            }
        }
    }
}

/// One case in full.
pub fn case(format: Output, c: &v1::TriageCase) {
    if format == Output::Json {
        json_line(case_json(c));
        return;
    }
    out_line!(
        "{} {}  score {:.1}  {}  {}",
        c.kind,
        c.id,
        c.score,
        severity(c.severity),
        c.state
    );
    out_line!("{}", c.title);
    if !c.rule.is_empty() {
        let author = if c.rule_author.is_empty() {
            String::new()
        } else {
            format!("  (author: {})", c.rule_author)
        };
        out_line!("rule {}{author}  module {}", c.rule, c.module);
    }
    if !c.reason.is_empty() {
        out_line!("{}", c.reason);
    }
    out_line!(
        "entity {}  findings {}  first {}  last {}",
        c.entity,
        c.count,
        time(c.first_seen_ms),
        time(c.last_seen_ms)
    );
    if !c.hosts.is_empty() {
        out_line!("hosts {}", c.hosts.join(", "));
    }
    if !c.criticality.is_empty() {
        out_line!("criticality {} ({})", c.criticality, c.criticality_reason);
    }
    for t in &c.techniques {
        out_line!("technique {} {} [{}]", t.id, t.name, t.tactics.join(", "));
    }
    if !c.closed_by.is_empty() {
        out_line!("{}: {}", c.closed_by, c.close_reason);
    }
    if !c.assignee.is_empty() {
        out_line!("assigned to {}", c.assignee);
    }
    if let Some(v) = &c.verdict {
        out_line!(
            "verdict {} by {} at {}: {}",
            v.kind,
            v.who,
            time(v.at_ms),
            v.comment
        );
    }
    for f in &c.follow_ups {
        out_line!("follow-up hunt {}: {}", f.hunt_id, f.description);
    }
    if !c.related.is_empty() {
        let label = if c.kind == "incident" {
            "alerts"
        } else {
            "incidents"
        };
        out_line!("{label} {}", c.related.join(", "));
    }
    out_line!();
    out_line!("score {:.1} =", c.score);
    table(
        &["TERM", "INPUT", "FACTOR", "WEIGHT", "POINTS"],
        c.score_terms
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.input.clone(),
                    format!("{:.3}", t.factor),
                    t.weight.to_string(),
                    format!("{:.2}", t.contribution),
                ]
            })
            .collect(),
    );
    if !c.comments.is_empty() {
        out_line!();
        for m in &c.comments {
            out_line!("{} {}: {}", time(m.at_ms), m.who, m.text);
        }
    }
    if !c.finding_details.is_empty() {
        out_line!();
        out_line!("first {} of {} findings:", c.finding_details.len(), c.count);
        super::findings(Output::Table, &c.finding_details);
    }
    if !c.history.is_empty() {
        out_line!();
        for h in &c.history {
            out_line!("{} {}: {}", time(h.at_ms), h.actor, h.action);
        }
    }
}

/// What a config apply (or its dry run) changes.
pub fn applied(format: Output, r: &v1::ApplyTriageConfigResponse, dry_run: bool) {
    if format == Output::Json {
        json_line(json!({
            "dry_run": dry_run,
            "version": r.version,
            "summary": r.summary,
            "unchanged": r.unchanged,
            "changes": r.changes.iter().map(|c| json!({
                "id": c.id, "title": c.title, "score_before": c.score_before,
                "score_after": c.score_after, "closed_by": c.closed_by,
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    if dry_run {
        out_line!(
            "dry run against version {}: {}; nothing changed",
            r.version,
            r.summary
        );
    } else {
        out_line!("version {} in force: {}", r.version, r.summary);
    }
    out_line!(
        "{} open alerts change, {} unchanged",
        r.changes.len(),
        r.unchanged
    );
    table(
        &["ALERT", "TITLE", "SCORE", "CLOSED BY"],
        r.changes
            .iter()
            .map(|c| {
                vec![
                    c.id.clone(),
                    c.title.clone(),
                    format!("{:.1} -> {:.1}", c.score_before, c.score_after),
                    c.closed_by.clone(),
                ]
            })
            .collect(),
    );
}

/// Suppression proposals.
pub fn proposals(format: Output, proposals: &[v1::Proposal]) {
    match format {
        Output::Json => proposals.iter().for_each(|p| {
            json_line(json!({
                "id": p.id, "rule": p.rule, "subject": p.subject, "verdicts": p.verdicts,
                "window_ms": p.window_ms, "alerts": p.alerts, "created": time(p.created_ms),
                "status": p.status, "summary": p.summary,
            }))
        }),
        Output::Table => {
            for p in proposals {
                out_line!("{} [{}] {}", p.id, p.status, p.summary);
            }
            if proposals.iter().any(|p| p.status == "pending") {
                out_line!(
                    "accept one with `quarry triage accept ID`, or `quarry triage reject ID`"
                );
            }
        }
    }
}

/// Queue counts and verdict statistics.
pub fn summary(format: Output, s: &v1::TriageSummaryResponse) {
    let stats = |list: &[v1::VerdictStats]| {
        list.iter()
            .map(|v| {
                json!({
                    "name": v.name, "true_positive": v.true_positive,
                    "false_positive": v.false_positive, "benign_expected": v.benign_expected,
                    "false_positive_rate": v.false_positive_rate,
                })
            })
            .collect::<Vec<_>>()
    };
    if format == Output::Json {
        json_line(json!({
            "findings": s.findings, "alerts": s.alerts, "open_alerts": s.open_alerts,
            "auto_closed_alerts": s.auto_closed_alerts, "incidents": s.incidents,
            "open_incidents": s.open_incidents, "pending_proposals": s.pending_proposals,
            "config_version": s.config_version,
            "by_rule": stats(&s.by_rule), "by_module": stats(&s.by_module),
        }));
        return;
    }
    out_line!(
        "findings {}  alerts {} ({} open, {} auto-closed)  incidents {} ({} open)  proposals {}  config v{}",
        s.findings,
        s.alerts,
        s.open_alerts,
        s.auto_closed_alerts,
        s.incidents,
        s.open_incidents,
        s.pending_proposals,
        s.config_version
    );
    for (label, list) in [("RULE", &s.by_rule), ("MODULE", &s.by_module)] {
        if list.is_empty() {
            continue;
        }
        table(
            &[label, "TP", "FP", "BENIGN", "FP RATE"],
            list.iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        v.true_positive.to_string(),
                        v.false_positive.to_string(),
                        v.benign_expected.to_string(),
                        format!("{:.0}%", v.false_positive_rate * 100.0),
                    ]
                })
                .collect(),
        );
    }
}
