//! The triage pipeline end to end through the public API, with an injected
//! clock: no sleeps, no I/O.

use quarry_triage::config::TriageConfig;
use quarry_triage::query::{Kinds, Query, StateFilter};
use quarry_triage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use quarry_triage::{
    AlertId, CaseId, ClosedBy, Effect, IncidentId, ProposalId, Severity, SuppressionId, Triage,
    TriageError, TriageFinding, VerdictKind,
};

/// An hour boundary (2026-05-28T09:00:00Z), so windows are easy to reason about.
const T0: i64 = 494_445 * HOUR_MS;

/// Feeds findings with increasing sequence numbers per hunt.
struct Feed {
    triage: Triage,
    seq: u64,
    effects: Vec<Effect>,
}

impl Feed {
    fn new(config: TriageConfig) -> Self {
        Feed {
            triage: Triage::new(config, T0),
            seq: 0,
            effects: Vec::new(),
        }
    }

    fn yaml(text: &str) -> Self {
        Feed::new(TriageConfig::from_yaml(text).expect("valid config"))
    }

    /// Ingests `f` at leader time `now`, numbering it in hunt `h-1`.
    fn push(&mut self, mut f: TriageFinding, now: i64) -> Vec<Effect> {
        f.hunt = "h-1".into();
        f.seq = self.seq;
        self.seq += 1;
        let effects = self.triage.ingest(f, now).expect("ingest");
        self.effects.extend(effects.clone());
        effects
    }

    fn alert_of(effects: &[Effect]) -> AlertId {
        match effects.first() {
            Some(Effect::Link { alert, .. }) => *alert,
            other => panic!("first effect is not a link: {other:?}"),
        }
    }
}

fn finding(rule: &str, host: &str, ts: i64) -> TriageFinding {
    TriageFinding {
        shard: format!("shard-{host}"),
        host: Some(host.into()),
        rule: rule.into(),
        module: "sigma@1.0.0".into(),
        title: format!("{rule} on {host}"),
        severity: Severity::Medium,
        confidence: 80,
        entity: format!("host:{host}"),
        timestamp_ms: ts,
        ..TriageFinding::default()
    }
}

fn low(rule: &str, host: &str, ts: i64, tactic: &str) -> TriageFinding {
    TriageFinding {
        severity: Severity::Low,
        confidence: 60,
        tags: vec![format!("attack.{tactic}")],
        ..finding(rule, host, ts)
    }
}

fn incidents_opened(effects: &[Effect]) -> Vec<IncidentId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::IncidentOpened { incident, .. } => Some(*incident),
            _ => None,
        })
        .collect()
}

#[test]
fn grouping_within_and_outside_the_window() {
    let mut feed =
        Feed::yaml("grouping:\n  windows:\n    - rule: \"bruteforce/*\"\n      window: 6h\n");
    let now = T0 + DAY_MS;
    let a = Feed::alert_of(&feed.push(finding("sigma/r1", "ws01", T0 + 5 * MINUTE_MS), now));
    let b = Feed::alert_of(&feed.push(finding("sigma/r1", "WS01", T0 + 50 * MINUTE_MS), now));
    assert_eq!(a, b, "same rule, entity and hour: one alert");
    let c = Feed::alert_of(&feed.push(finding("sigma/r1", "ws01", T0 + 2 * HOUR_MS), now));
    assert_ne!(a, c, "the next hour is another alert");
    let d = Feed::alert_of(&feed.push(finding("sigma/r1", "ws02", T0 + 10 * MINUTE_MS), now));
    assert_ne!(a, d, "another entity is another alert");
    // Out of order: an earlier finding still joins its own window's alert.
    let e = Feed::alert_of(&feed.push(finding("sigma/r1", "ws01", T0 + MINUTE_MS), now));
    assert_eq!(a, e);
    let alert = feed.triage.alert(a).expect("alert");
    assert_eq!(alert.count, 3);
    assert_eq!(alert.rule_author, None);
    assert_eq!(alert.first_seen_ms, T0 + MINUTE_MS);
    assert_eq!(alert.last_seen_ms, T0 + 50 * MINUTE_MS);
    assert_eq!(alert.links.len(), 3);
    assert_eq!(alert.hosts.iter().collect::<Vec<_>>(), ["ws01"]);
    // A rule with its own window groups over 6 hours (windows are aligned
    // to the epoch: T0 is 3 h into one).
    let f = Feed::alert_of(&feed.push(finding("bruteforce/spray", "ws01", T0 - 3 * HOUR_MS), now));
    let g = Feed::alert_of(&feed.push(finding("bruteforce/spray", "ws01", T0 + 2 * HOUR_MS), now));
    assert_eq!(f, g);
    let h = Feed::alert_of(&feed.push(finding("bruteforce/spray", "ws01", T0 + 3 * HOUR_MS), now));
    assert_ne!(f, h);
    // Every finding produced exactly one link, first.
    let links = feed
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Link { .. }))
        .count();
    assert_eq!(links, 8);
}

#[test]
fn links_beyond_the_sample_are_still_emitted() {
    let mut feed = Feed::new(TriageConfig::default());
    for i in 0..150 {
        feed.push(finding("sigma/loud", "ws01", T0 + i * 1000), T0 + HOUR_MS);
    }
    let alert = feed.triage.alert(AlertId(1)).expect("alert");
    assert_eq!(alert.count, 150);
    assert_eq!(alert.links.len(), quarry_triage::group::MAX_LINKS);
    let seqs: Vec<u64> = feed
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Link { alert, hunt, seq } if *alert == AlertId(1) && hunt == "h-1" => {
                Some(*seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (0..150).collect::<Vec<_>>());
}

#[test]
fn a_replayed_finding_is_refused_and_changes_nothing() {
    let mut triage = Triage::default();
    let f = TriageFinding {
        hunt: "h-9".into(),
        seq: 4,
        ..finding("sigma/r1", "ws01", T0)
    };
    triage.ingest(f.clone(), T0).expect("first");
    let before = triage.clone();
    let err = triage.ingest(f, T0).expect_err("replay");
    assert!(
        matches!(
            err,
            TriageError::DuplicateFinding {
                seq: 4,
                last: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("already triaged"), "{err}");
    assert_eq!(triage, before);
    let bad = TriageFinding {
        hunt: "h-9".into(),
        seq: 5,
        confidence: 120,
        ..finding("sigma/r1", "ws01", T0)
    };
    let err = triage
        .ingest(bad, T0)
        .expect_err("bad confidence")
        .to_string();
    assert!(err.contains("confidence 120 is above 100"), "{err}");
    assert_eq!(triage, before);
}

const JEWELS: &str = "\
assets:
  crown_jewels:
    - name: domain-controllers
      hosts: [\"dc*\"]
      criticality: critical
";

#[test]
fn crown_jewel_criticality_raises_the_score() {
    let score_on = |host: &str| {
        let mut feed = Feed::yaml(JEWELS);
        let a = Feed::alert_of(&feed.push(finding("sigma/r1", host, T0), T0));
        feed.triage.alert(a).expect("alert").clone()
    };
    let ws = score_on("ws01");
    let dc = score_on("DC01.corp.example");
    assert!(dc.score > ws.score, "{} vs {}", dc.score, ws.score);
    assert_eq!(dc.criticality_reason, "crown jewel domain-controllers");
    let term = |a: &quarry_triage::Alert| {
        a.score_terms
            .iter()
            .find(|t| t.name.name() == "criticality")
            .expect("criticality term")
            .clone()
    };
    assert_eq!(term(&dc).input, "critical (crown jewel domain-controllers)");
    assert_eq!(
        term(&dc).contribution.0 - term(&ws).contribution.0,
        dc.score.0 - ws.score.0
    );
    // A shard label says the same.
    let mut feed = Feed::new(TriageConfig::default());
    let mut f = finding("sigma/r1", "ws09", T0);
    f.shard_labels.insert("criticality".into(), "high".into());
    let a = Feed::alert_of(&feed.push(f, T0));
    let alert = feed.triage.alert(a).expect("alert");
    assert_eq!(
        alert.criticality_reason,
        "shard shard-ws09 label criticality=high"
    );
}

#[test]
fn score_terms_sum_to_the_score_of_every_alert() {
    let mut feed = Feed::yaml(JEWELS);
    for (i, host) in ["ws01", "dc01", "ws02", "ws01"].iter().enumerate() {
        let mut f = finding(&format!("sigma/r{i}"), host, T0 + i as i64 * MINUTE_MS);
        f.tags = vec!["intel:feodo".into(), "attack.t1059.001".into()];
        f.severity = Severity::ALL[i % 5];
        feed.push(f, T0);
    }
    feed.triage.rescore_open();
    for alert in feed.triage.alerts() {
        let sum: u32 = alert.score_terms.iter().map(|t| t.contribution.0).sum();
        assert_eq!(sum, alert.score.0, "{}", alert.id);
        assert_eq!(alert.score_terms.len(), 7);
    }
}

#[test]
fn entity_risk_halves_after_one_half_life() {
    let mut feed = Feed::new(TriageConfig::default());
    let mut f = finding("sigma/r1", "ws01", T0);
    f.severity = Severity::High;
    f.confidence = 100;
    feed.push(f, T0);
    let risk = feed.triage.entity_risk("host:ws01").expect("tracked");
    // High: 40 points × 100% confidence, in thousandths.
    assert_eq!(risk.risk_at(T0, 24 * HOUR_MS), 40_000);
    assert_eq!(risk.risk_at(T0 + 24 * HOUR_MS, 24 * HOUR_MS), 20_000);
    assert_eq!(risk.risk_at(T0 + 48 * HOUR_MS, 24 * HOUR_MS), 10_000);
    // More findings of the same alert add no risk: one alert, one piece of evidence.
    feed.push(finding("sigma/r1", "ws01", T0 + MINUTE_MS), T0);
    let risk = feed.triage.entity_risk("host:ws01").expect("tracked");
    // (40 points decayed by one minute: 40 × 2^(-1/1440) = 39.98.)
    assert_eq!(risk.risk_at(T0 + MINUTE_MS, 24 * HOUR_MS), 39_980);
}

#[test]
fn quiet_multi_rule_activity_on_one_host_raises_exactly_one_incident() {
    let mut feed = Feed::new(TriageConfig::default());
    let now = T0 + DAY_MS;
    // Loud but single-rule noise elsewhere: no incident.
    for i in 0..50 {
        feed.push(
            low("sigma/noisy", "ws01", T0 + i * MINUTE_MS, "discovery"),
            now,
        );
    }
    // Two rules on another host: below the threshold.
    feed.push(low("sigma/a", "ws02", T0, "execution"), now);
    feed.push(low("sigma/b", "ws02", T0 + HOUR_MS, "execution"), now);
    assert!(incidents_opened(&feed.effects).is_empty());
    // A quiet intrusion: a rare binary, an encoded command, a logon to a
    // server, each low severity, within hours on ws07.
    feed.push(low("rare-process/binary", "ws07", T0, "execution"), now);
    feed.push(
        low(
            "encoded-powershell/cmd",
            "ws07",
            T0 + 2 * HOUR_MS,
            "defense-evasion",
        ),
        now,
    );
    let third = feed.push(
        low(
            "lateral-movement/logon",
            "ws07",
            T0 + 5 * HOUR_MS,
            "lateral-movement",
        ),
        now,
    );
    let opened = incidents_opened(&third);
    assert_eq!(opened.len(), 1, "{third:?}");
    let incident = feed.triage.incident(opened[0]).expect("incident");
    assert_eq!(incident.entity.key(), "host:ws07");
    assert_eq!(incident.alerts.len(), 3);
    assert!(
        incident.reason.starts_with("3 distinct rules within 1d"),
        "{}",
        incident.reason
    );
    let sum: u32 = incident.score_terms.iter().map(|t| t.contribution.0).sum();
    assert_eq!(sum, incident.score.0);
    // A fourth rule joins the same incident instead of raising another.
    let fourth = feed.push(
        low("sigma/persistence", "ws07", T0 + 6 * HOUR_MS, "persistence"),
        now,
    );
    assert!(incidents_opened(&fourth).is_empty());
    assert!(
        fourth.iter().any(
            |e| matches!(e, Effect::IncidentUpdated { incident, .. } if *incident == opened[0])
        )
    );
    assert_eq!(incidents_opened(&feed.effects).len(), 1);
    assert_eq!(feed.triage.incidents().count(), 1);
    let incident = feed.triage.incident(opened[0]).expect("incident");
    assert_eq!(incident.alerts.len(), 4);
    // The incident outranks every single low alert in the queue.
    let page = feed.triage.list(&Query::default()).expect("list");
    assert_eq!(page.items[0].id(), CaseId::Incident(opened[0]));
}

#[test]
fn a_lookalike_scores_below_a_rare_rule_on_a_crown_jewel() {
    let mut feed = Feed::yaml(JEWELS);
    let now = T0 + DAY_MS;
    // The same benign admin tool on 40 hosts, a few times each.
    for h in 0..40 {
        for k in 0..3 {
            let mut f = finding(
                "sigma/psexec-service",
                &format!("ws{h:03}"),
                T0 + h * MINUTE_MS + k * 1000,
            );
            f.title = "PsExec service installed".into();
            feed.push(f, now);
        }
    }
    // A rule that never fired before, once, on a domain controller.
    let rare = Feed::alert_of(&feed.push(finding("sigma/lsass-access", "dc01", T0 + HOUR_MS), now));
    feed.triage.rescore_open();
    let rare_score = feed.triage.alert(rare).expect("rare").score;
    for alert in feed
        .triage
        .alerts()
        .filter(|a| a.rule == "sigma/psexec-service")
    {
        assert!(
            alert.score < rare_score,
            "{} scores {} >= {}",
            alert.id,
            alert.score,
            rare_score
        );
    }
    let page = feed
        .triage
        .list(&Query {
            kinds: Kinds::Alerts,
            ..Query::default()
        })
        .expect("list");
    assert_eq!(page.items[0].id(), CaseId::Alert(rare));
    assert_eq!(page.total, 41);
    assert!(
        feed.triage.incidents().next().is_none(),
        "no look-alike is escalated"
    );
}

const BACKUP: &str = "\
suppressions:
  - id: backup-vss
    author: alice
    reason: the nightly backup deletes shadow copies
    expires: 2d
    scope:
      rules: [\"sigma/vss-*\"]
      hosts: [\"bkp-*\"]
      fields:
        ParentImage: \"*\\\\veeam*.exe\"
";

fn vss(host: &str, ts: i64, parent: &str) -> TriageFinding {
    TriageFinding {
        evidence: vec![("ParentImage".into(), parent.into())],
        ..finding("sigma/vss-delete", host, ts)
    }
}

#[test]
fn a_suppression_auto_closes_with_provenance_until_it_expires() {
    let mut feed = Feed::new(TriageConfig::default());
    let config = TriageConfig::from_yaml(BACKUP).expect("valid");
    let (version, _) = feed
        .triage
        .apply_config(config, "alice", "backup noise", None, T0)
        .expect("apply");
    assert_eq!(version.version, 1);
    assert_eq!(version.summary, "suppressions +backup-vss");
    let veeam = "C:\\Program Files\\Veeam\\VeeamAgent.exe";

    let effects = feed.push(vss("bkp-01", T0, veeam), T0);
    let a = Feed::alert_of(&effects);
    assert!(effects.contains(&Effect::AlertAutoClosed {
        alert: a,
        suppression: SuppressionId::new("backup-vss"),
    }));
    let alert = feed.triage.alert(a).expect("kept, not deleted");
    let closure = alert.case.state.closure().expect("closed");
    assert_eq!(
        closure.by,
        ClosedBy::Suppression(SuppressionId::new("backup-vss"))
    );
    assert_eq!(
        closure.reason,
        "suppression backup-vss by alice: the nightly backup deletes shadow copies"
    );
    assert!(
        feed.triage.entity_risk("host:bkp-01").is_none(),
        "suppressed alerts add no risk"
    );
    // Out of the default queue, visible with include_closed and as auto-closed.
    assert_eq!(feed.triage.list(&Query::default()).expect("list").total, 0);
    let all = Query {
        include_closed: true,
        ..Query::default()
    };
    assert_eq!(feed.triage.list(&all).expect("list").total, 1);
    let auto = Query {
        state: Some(StateFilter::AutoClosed),
        ..Query::default()
    };
    assert_eq!(feed.triage.list(&auto).expect("list").total, 1);

    // Out of scope: another host, or another parent process.
    let other = Feed::alert_of(&feed.push(vss("ws01", T0, veeam), T0));
    assert!(
        feed.triage
            .alert(other)
            .expect("alert")
            .case
            .state
            .is_open()
    );
    // A finding the suppression does not cover reopens the auto-closed alert.
    let effects = feed.push(
        vss("bkp-01", T0 + MINUTE_MS, "C:\\Windows\\explorer.exe"),
        T0,
    );
    assert!(effects.contains(&Effect::AlertReopened { alert: a }));
    let alert = feed.triage.alert(a).expect("alert");
    assert!(alert.case.state.is_open());
    assert_eq!((alert.count, alert.suppressed_count), (2, 1));
    assert!(
        alert
            .case
            .history
            .iter()
            .any(|h| h.action.contains("not covered by suppression backup-vss"))
    );

    // Two days after it was applied, it no longer applies.
    let later = T0 + 2 * DAY_MS;
    let effects = feed.push(vss("bkp-01", later, veeam), later);
    let fresh = Feed::alert_of(&effects);
    assert_ne!(fresh, a);
    assert!(effects.contains(&Effect::AlertOpened { alert: fresh }));
    // Just before expiry it still did.
    let just_before = later - 1;
    let effects = feed.push(vss("bkp-02", just_before, veeam), just_before);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::AlertAutoClosed { .. }))
    );
}

#[test]
fn verdicts_propose_a_suppression_that_closes_the_next_run() {
    let mut feed = Feed::new(TriageConfig::default());
    let mut proposal = None;
    for day in 0..5 {
        let now = T0 + day * DAY_MS;
        let a = Feed::alert_of(&feed.push(finding("sigma/admin-share", "ws42", now), now));
        let effects = feed
            .triage
            .set_verdict(
                CaseId::Alert(a),
                VerdictKind::FalsePositive,
                "IT's inventory scan",
                "bob",
                now + 1,
            )
            .expect("verdict");
        let alert = feed.triage.alert(a).expect("alert");
        assert!(
            !alert.case.state.is_open(),
            "a false-positive verdict closes the alert"
        );
        if day < 4 {
            assert!(effects.is_empty(), "day {day}: {effects:?}");
        } else {
            assert_eq!(
                effects,
                [Effect::ProposalCreated {
                    proposal: ProposalId(1)
                }]
            );
            proposal = Some(ProposalId(1));
        }
    }
    let id = proposal.expect("proposal");
    let p = feed.triage.proposal(id).expect("proposal");
    assert_eq!(
        p.summary,
        "rule sigma/admin-share on host ws42 was marked benign or false-positive 5 times in 30d: suppress it?"
    );
    let counts = feed.triage.verdicts_by_rule()["sigma/admin-share"];
    assert_eq!(
        (counts.false_positive, counts.false_positive_rate_permille()),
        (5, Some(1000))
    );
    assert_eq!(feed.triage.verdicts_by_module()["sigma@1.0.0"].total(), 5);

    let now = T0 + 5 * DAY_MS;
    let (sid, _) = feed
        .triage
        .accept_proposal(id, "carol", now)
        .expect("accept");
    assert_eq!(sid, SuppressionId::new("from-P-1"));
    assert_eq!(feed.triage.config_version(), 1);
    let record = &feed.triage.config_history()[0];
    assert_eq!(
        (record.author.as_str(), record.summary.as_str()),
        ("carol", "suppressions +from-P-1")
    );
    let err = feed
        .triage
        .accept_proposal(id, "carol", now)
        .expect_err("twice");
    assert_eq!(
        err.to_string(),
        "proposal P-1 was already accepted by carol; a new proposal appears if verdicts keep coming"
    );

    // The next run's matching finding is closed on arrival, with provenance.
    let effects = feed.push(
        finding("sigma/admin-share", "ws42", now + HOUR_MS),
        now + HOUR_MS,
    );
    let a = Feed::alert_of(&effects);
    let closure = feed
        .triage
        .alert(a)
        .expect("alert")
        .case
        .state
        .closure()
        .cloned()
        .expect("closed");
    assert_eq!(closure.by, ClosedBy::Suppression(sid));
    assert!(
        closure.reason.contains("accepted proposal P-1"),
        "{}",
        closure.reason
    );
    // Another host is untouched.
    let b = Feed::alert_of(&feed.push(
        finding("sigma/admin-share", "ws43", now + HOUR_MS),
        now + HOUR_MS,
    ));
    assert!(feed.triage.alert(b).expect("alert").case.state.is_open());
}

#[test]
fn follow_ups_start_once_per_alert() {
    let mut feed = Feed::yaml(
        "follow_ups:\n  - id: pivot-high\n    when:\n      min_severity: high\n    pivot: host\n    around: 1h\n",
    );
    let mut f = finding("sigma/r1", "ws01", T0 + 10 * MINUTE_MS);
    f.severity = Severity::High;
    let effects = feed.push(f.clone(), T0);
    let a = Feed::alert_of(&effects);
    let started: Vec<&Effect> = effects
        .iter()
        .filter(|e| matches!(e, Effect::StartFollowUp { .. }))
        .collect();
    assert_eq!(started.len(), 1);
    match started[0] {
        Effect::StartFollowUp {
            alert,
            follow_up,
            entity,
            from_ms,
            to_ms,
            shards,
            ..
        } => {
            assert_eq!(*alert, a);
            assert_eq!(follow_up.as_str(), "pivot-high");
            assert_eq!(entity.key(), "host:ws01");
            assert_eq!(
                (*from_ms, *to_ms),
                (T0 - 50 * MINUTE_MS, T0 + 70 * MINUTE_MS)
            );
            assert_eq!(shards, &["shard-ws01".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    f.timestamp_ms += MINUTE_MS;
    let effects = feed.push(f, T0);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::StartFollowUp { .. })),
        "once per alert"
    );
    let medium = feed.push(finding("sigma/r2", "ws01", T0), T0);
    assert!(
        !medium
            .iter()
            .any(|e| matches!(e, Effect::StartFollowUp { .. })),
        "out of scope"
    );
}

#[test]
fn people_get_clear_errors_for_unknown_ids_and_invalid_transitions() {
    let mut feed = Feed::new(TriageConfig::default());
    let a = CaseId::Alert(Feed::alert_of(
        &feed.push(finding("sigma/r1", "ws01", T0), T0),
    ));
    let missing = CaseId::Alert(AlertId(999));
    let err = feed
        .triage
        .assign(missing, Some("dave"), "erin", T0)
        .expect_err("unknown");
    assert!(
        err.to_string().starts_with("there is no alert A-999"),
        "{err}"
    );
    let err = feed
        .triage
        .close(CaseId::Incident(IncidentId(3)), "done", "erin", T0)
        .expect_err("unknown");
    assert!(
        err.to_string().starts_with("there is no incident I-3"),
        "{err}"
    );
    let err = feed.triage.reopen(a, "why", "erin", T0).expect_err("open");
    assert_eq!(
        err.to_string(),
        "A-1 is open; only a closed alert or incident can be reopened"
    );
    let err = feed.triage.close(a, "", "erin", T0).expect_err("no reason");
    assert!(err.to_string().contains("say why"), "{err}");
    let err = feed
        .triage
        .comment(a, "hello", " ", T0)
        .expect_err("no who");
    assert!(err.to_string().starts_with("invalid who"), "{err}");

    feed.triage
        .assign(a, Some("dave"), "erin", T0)
        .expect("assign");
    feed.triage
        .comment(a, "looking", "dave", T0 + 1)
        .expect("comment");
    feed.triage
        .close(a, "contained", "dave", T0 + 2)
        .expect("close");
    let err = feed
        .triage
        .close(a, "again", "dave", T0 + 3)
        .expect_err("closed");
    assert_eq!(
        err.to_string(),
        "A-1 is already closed (closed by dave: contained); reopen it first to close it another way"
    );
    feed.triage
        .reopen(a, "new evidence", "erin", T0 + 4)
        .expect("reopen");
    feed.triage
        .set_verdict(a, VerdictKind::TruePositive, "confirmed", "erin", T0 + 5)
        .expect("verdict");
    let case = feed.triage.case(a).expect("case");
    assert!(
        case.state.is_open(),
        "a true-positive verdict leaves it open"
    );
    assert_eq!(case.assignee.as_deref(), Some("dave"));
    assert_eq!(case.comments.len(), 1);
    let actions: Vec<&str> = case.history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "opened",
            "assigned to dave",
            "commented",
            "closed by dave: contained",
            "reopened: new evidence",
            "verdict true-positive: confirmed"
        ]
    );
    // Changing a verdict moves the counts.
    feed.triage
        .set_verdict(
            a,
            VerdictKind::BenignExpected,
            "admin after all",
            "erin",
            T0 + 6,
        )
        .expect("verdict");
    let counts = feed.triage.verdicts_by_rule()["sigma/r1"];
    assert_eq!((counts.true_positive, counts.benign_expected), (0, 1));
    assert_eq!(counts.noise_rate_permille(), Some(1000));
    assert!("tp-ish".parse::<VerdictKind>().is_err());
}

#[test]
fn the_queue_is_ranked_filtered_and_paged() {
    let mut feed = Feed::yaml(JEWELS);
    for i in 0..250 {
        let host = if i % 50 == 0 {
            "dc01".to_owned()
        } else {
            format!("ws{i:03}")
        };
        let mut f = finding(&format!("sigma/r{}", i % 7), &host, T0 + i * MINUTE_MS);
        f.severity = Severity::ALL[(i % 5) as usize];
        feed.push(f, T0 + DAY_MS);
    }
    let mut seen = Vec::new();
    let mut q = Query {
        kinds: Kinds::Alerts,
        ..Query::default()
    };
    loop {
        let page = feed.triage.list(&q).expect("page");
        assert_eq!(page.total, 250);
        assert!(page.items.len() <= 100);
        seen.extend(
            page.items
                .iter()
                .map(|c| (c.score(), c.last_seen_ms(), c.id())),
        );
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    assert_eq!(
        seen, sorted,
        "highest score first, ties by latest activity then id"
    );
    // Filters.
    let high = Query {
        min_severity: Some(Severity::High),
        ..Query::default()
    };
    assert_eq!(feed.triage.list(&high).expect("list").total, 100);
    let dc = Query {
        entity: Some("DC01".into()),
        ..Query::default()
    };
    assert_eq!(
        feed.triage.list(&dc).expect("list").total,
        6,
        "five alerts and their incident"
    );
    let dc_alerts = Query {
        kinds: Kinds::Alerts,
        ..dc
    };
    assert_eq!(feed.triage.list(&dc_alerts).expect("list").total, 5);
    let rule = Query {
        rule: Some("sigma/r[01]".into()),
        ..Query::default()
    };
    // 36 alerts of each rule, and dc01's incident, which spans both.
    assert_eq!(feed.triage.list(&rule).expect("list").total, 73);
    feed.triage
        .assign(CaseId::Alert(AlertId(7)), Some("Dave"), "erin", T0)
        .expect("assign");
    let mine = Query {
        assignee: Some("dave".into()),
        ..Query::default()
    };
    assert_eq!(
        feed.triage.list(&mine).expect("list").items[0].id(),
        CaseId::Alert(AlertId(7))
    );
    // Page size is clamped; a token does not carry over to other filters.
    let big = Query {
        page_size: 5000,
        ..Query::default()
    };
    assert_eq!(feed.triage.list(&big).expect("list").items.len(), 251);
    for i in 0..800 {
        feed.push(finding("sigma/bulk", &format!("ws{i:04}"), T0), T0 + DAY_MS);
    }
    let page = feed.triage.list(&big).expect("list");
    assert_eq!(
        (page.items.len(), page.total),
        (1000, 1051),
        "at most 1000 a page"
    );
    assert!(page.next_page_token.is_some());
    let first = feed.triage.list(&Query::default()).expect("list");
    let wrong = Query {
        page_token: first.next_page_token,
        min_severity: Some(Severity::Low),
        ..Query::default()
    };
    let err = feed
        .triage
        .list(&wrong)
        .expect_err("other filters")
        .to_string();
    assert!(err.contains("other filters"), "{err}");
    let junk = Query {
        page_token: Some("zz".into()),
        ..Query::default()
    };
    assert!(matches!(
        feed.triage.list(&junk),
        Err(TriageError::InvalidPageToken(_))
    ));
}

#[test]
fn prune_drops_closed_alerts_after_retention_and_keeps_open_ones() {
    let mut feed = Feed::new(TriageConfig::default());
    let a = Feed::alert_of(&feed.push(finding("sigma/r1", "ws01", T0), T0));
    let b = Feed::alert_of(&feed.push(finding("sigma/r2", "ws01", T0), T0));
    feed.triage
        .close(CaseId::Alert(a), "benign", "dave", T0)
        .expect("close");
    assert!(feed.triage.prune(T0 + 29 * DAY_MS).is_empty());
    let effects = feed.triage.prune(T0 + 30 * DAY_MS);
    assert_eq!(effects, [Effect::AlertEvicted { alert: a }]);
    assert!(feed.triage.alert(a).is_none());
    assert!(feed.triage.alert(b).is_some());
    // A late finding of the evicted alert's window opens a new alert.
    let c = Feed::alert_of(&feed.push(
        finding("sigma/r1", "ws01", T0 + MINUTE_MS),
        T0 + 30 * DAY_MS,
    ));
    assert_ne!(c, a);
    // Decayed entities are forgotten too.
    feed.push(
        finding("sigma/r9", "ws77", T0 + 60 * DAY_MS),
        T0 + 60 * DAY_MS,
    );
    feed.triage.prune(T0 + 60 * DAY_MS);
    assert!(feed.triage.entity_risk("host:ws01").is_none());
    assert!(feed.triage.entity_risk("host:ws77").is_some());
}

#[test]
fn a_dry_run_reports_changes_without_making_them() {
    let mut feed = Feed::new(TriageConfig::default());
    let veeam = "C:\\Veeam\\VeeamAgent.exe";
    let a = Feed::alert_of(&feed.push(vss("bkp-01", T0, veeam), T0));
    let b = Feed::alert_of(&feed.push(vss("ws01", T0, veeam), T0));
    let c = Feed::alert_of(&feed.push(finding("sigma/other", "ws02", T0), T0));
    let config =
        TriageConfig::from_yaml(&format!("{BACKUP}weights:\n  severity: 60\n")).expect("valid");
    let before = feed.triage.clone();
    let dry = feed.triage.dry_run(&config, T0 + HOUR_MS);
    assert_eq!(feed.triage, before, "a dry run changes nothing");
    assert_eq!(dry.current_version, 0);
    assert_eq!(dry.summary, "suppressions +backup-vss; weights");
    let ids: Vec<AlertId> = dry.changes.iter().map(|c| c.alert).collect();
    assert_eq!(ids, [a, b, c], "every score moves with the weights");
    assert_eq!(
        dry.changes[0].closed_by,
        Some(SuppressionId::new("backup-vss"))
    );
    assert_eq!(dry.changes[1].closed_by, None);
    assert!(dry.changes.iter().all(|c| c.score_after > c.score_before));

    // Applying does what the dry run said.
    let (_, effects) = feed
        .triage
        .apply_config(config.clone(), "alice", "backup", Some(0), T0 + HOUR_MS)
        .expect("apply");
    assert_eq!(
        effects,
        [Effect::AlertAutoClosed {
            alert: a,
            suppression: SuppressionId::new("backup-vss")
        }]
    );
    for change in &dry.changes[1..] {
        assert_eq!(
            feed.triage.alert(change.alert).expect("alert").score,
            change.score_after
        );
    }
    // Someone applying on top of an older version is refused.
    let err = feed
        .triage
        .apply_config(config, "bob", "", Some(0), T0 + 2 * HOUR_MS)
        .expect_err("stale");
    assert!(
        matches!(
            err,
            TriageError::ConfigConflict {
                expected: 0,
                actual: 1
            }
        ),
        "{err}"
    );
}

/// Drives a bit of everything, for the round-trip and determinism tests.
fn busy_state() -> (Triage, Vec<Effect>) {
    let mut feed = Feed::yaml(&format!(
        "{JEWELS}{}follow_ups:\n  - id: pivot\n    when:\n      min_severity: high\n",
        &BACKUP
    ));
    let now = T0 + HOUR_MS;
    for i in 0..60 {
        let host = ["ws01", "ws02", "dc01", "bkp-01"][i % 4];
        let mut f = low(
            &format!("sigma/r{}", i % 5),
            host,
            T0 + i as i64 * 7 * MINUTE_MS,
            ["execution", "persistence", "discovery"][i % 3],
        );
        f.severity = Severity::ALL[i % 5];
        f.evidence = vec![
            ("TargetUserName".into(), format!("user{}", i % 3)),
            ("IpAddress".into(), format!("10.0.0.{}", i % 4)),
        ];
        f.techniques = vec!["T1059.001".into()];
        feed.push(f, now);
    }
    feed.push(vss("bkp-01", T0, "C:\\Veeam\\VeeamAgent.exe"), now);
    for day in 0..5 {
        let t = now + day * DAY_MS;
        let a = Feed::alert_of(&feed.push(finding("sigma/admin-share", "ws42", t), t));
        feed.triage
            .set_verdict(
                CaseId::Alert(a),
                VerdictKind::BenignExpected,
                "inventory",
                "bob",
                t,
            )
            .expect("verdict");
    }
    feed.triage
        .assign(CaseId::Alert(AlertId(2)), Some("dave"), "erin", now)
        .expect("assign");
    feed.triage
        .comment(CaseId::Alert(AlertId(2)), "on it", "dave", now)
        .expect("comment");
    feed.triage.rescore_open();
    let effects = feed.triage.prune(now + 6 * DAY_MS);
    feed.effects.extend(effects);
    (feed.triage, feed.effects)
}

#[test]
fn the_whole_state_survives_a_serde_round_trip() {
    let (triage, _) = busy_state();
    let summary = triage.summary();
    assert!(
        summary.incidents > 0 && summary.auto_closed_alerts > 0 && summary.pending_proposals > 0,
        "{summary:?}"
    );
    let json = serde_json::to_string(&triage).expect("json");
    let back: Triage = serde_json::from_str(&json).expect("from json");
    assert_eq!(back, triage);
    // The coordinator's snapshots are bincode.
    let bytes = bincode::serialize(&triage).expect("bincode");
    let back: Triage = bincode::deserialize(&bytes).expect("from bincode");
    assert_eq!(back, triage);
}

#[test]
fn the_same_inputs_give_the_same_state_and_effects() {
    let (a, ea) = busy_state();
    let (b, eb) = busy_state();
    assert_eq!(a, b);
    assert_eq!(ea, eb);
    assert_eq!(
        bincode::serialize(&a).expect("bincode"),
        bincode::serialize(&b).expect("bincode")
    );
}

#[test]
fn alerts_carry_attack_names_entities_and_the_rule_author() {
    let mut feed = Feed::new(TriageConfig::default());
    let f = TriageFinding {
        evidence: vec![
            ("sigma.author".into(), "Florian Roth".into()),
            ("User".into(), "CORP\\alice".into()),
            ("SourceIp".into(), "10.1.2.3".into()),
        ],
        tags: vec!["attack.t1059.001".into(), "attack.persistence".into()],
        techniques: vec!["T1003.001".into()],
        ..finding("sigma/ps-encoded", "WS07.corp.example", T0)
    };
    let a = Feed::alert_of(&feed.push(f, T0));
    let alert = feed.triage.alert(a).expect("alert");
    assert_eq!(alert.rule_author.as_deref(), Some("Florian Roth"));
    let names: Vec<(&str, Option<&str>)> = alert
        .techniques
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("T1003.001", Some("LSASS Memory")),
            ("T1059.001", Some("PowerShell"))
        ]
    );
    let tactics: Vec<&str> = alert.tactics.iter().map(String::as_str).collect();
    assert_eq!(tactics, ["credential-access", "execution", "persistence"]);
    // Hosts by short name: the FQDN and the NetBIOS name are one machine.
    let entities: Vec<String> = alert.entities.iter().map(|e| e.key()).collect();
    assert_eq!(entities, ["host:ws07", "user:corp\\alice", "ip:10.1.2.3"]);
    // Risk went to each of them.
    for key in &entities {
        assert!(feed.triage.entity_risk(key).is_some(), "{key}");
    }
    let summary = feed.triage.summary();
    assert_eq!(
        (summary.findings, summary.alerts, summary.open_alerts),
        (1, 1, 1)
    );
}

#[test]
fn suppressions_of_the_initial_config_count_from_its_creation() {
    // Regression: a relative expiry used to count from the epoch, so such a
    // suppression had always expired.
    let mut feed = Feed::yaml(BACKUP);
    let effects = feed.push(vss("bkp-01", T0, "C:\\Veeam\\VeeamAgent.exe"), T0 + HOUR_MS);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::AlertAutoClosed { .. })),
        "{effects:?}"
    );
}
