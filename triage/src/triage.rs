//! The triage state and its pipeline: every committed finding is grouped
//! into an alert, enriched, scored, checked against suppressions, adds risk
//! to its entities (which may raise an incident) and may start follow-ups.
//! A plain function of the state, the finding and the leader's clock.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::bounded::BoundedSet;
use crate::case::{Actor, CaseState, ClosedBy};
use crate::config::TriageConfig;
use crate::effect::Effect;
use crate::enrich::{Criticality, attack_of};
use crate::error::TriageError;
use crate::finding::{Entity, EntityKind, TriageFinding, parse_entities};
use crate::followup::pivot_entities;
use crate::group::{Alert, Finding, GroupKey, group_entity, key_for};
use crate::ids::{AlertId, IncidentId, SuppressionId};
use crate::incident::{Incident, MAX_INCIDENT_ALERTS};
use crate::rarity::{MAX_ENTITIES as MAX_RARITY_ENTITIES, MAX_RULES, Rarity, day_of};
use crate::risk::{EntityRisk, MAX_TRACKED, Member, RiskBook, correlate};
use crate::rows::Seen;
use crate::score::{AlertFactors, FactorParams, Score, ScoreTerm, alert_score, incident_score};
use crate::suppress::first_match;
use crate::time::DAY_MS;
use crate::tracked::{Dirty, Tracked};
use crate::verdict::VerdictBook;

/// Hunts whose last finding number is remembered (to refuse replays).
pub const MAX_HUNTS: usize = 10_000;
/// Shards whose labels are remembered.
pub const MAX_SHARDS: usize = 100_000;
/// Config versions whose record is kept.
pub const MAX_CONFIG_HISTORY: usize = 100;
/// Alerts kept; past it, the longest-closed ones go before their retention.
pub const MAX_ALERTS: usize = 500_000;
/// How far past the leader's clock an event time may be; later times are
/// taken as the leader's clock (a wrong clock on one host must not age
/// everyone else's risk away).
pub const MAX_FUTURE_MS: i64 = DAY_MS;

/// One version of the config: who applied it, when, and what changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// From 1; 0 is the built-in default.
    pub version: u64,
    /// Who applied it.
    pub author: String,
    /// When (leader time).
    pub applied_ms: i64,
    /// What changed (`suppressions +backup-vss; weights`).
    pub summary: String,
    /// The author's note.
    pub message: String,
}

/// Counters since the state was created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageStats {
    /// Findings triaged.
    pub findings: u64,
    /// Findings a suppression matched.
    pub suppressed_findings: u64,
    /// Alerts created.
    pub alerts_created: u64,
    /// Alerts closed by a suppression.
    pub alerts_auto_closed: u64,
    /// Incidents raised.
    pub incidents_opened: u64,
    /// Follow-ups requested.
    pub follow_ups_started: u64,
    /// Suppression proposals made.
    pub proposals_created: u64,
}

/// Where the queue stands now (for status output and closing notes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageSummary {
    /// Findings triaged since the state was created.
    pub findings: u64,
    /// Alerts kept.
    pub alerts: usize,
    /// Of which open.
    pub open_alerts: usize,
    /// Of which closed by a suppression.
    pub auto_closed_alerts: usize,
    /// Incidents kept.
    pub incidents: usize,
    /// Of which open.
    pub open_incidents: usize,
    /// Suppression proposals waiting for a person.
    pub pending_proposals: usize,
}

/// What triage remembers of a hunt: the next finding number it takes (a
/// lower one is a replay) and when it last saw one (the stalest hunts are
/// forgotten first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntCursor {
    pub(crate) next_seq: u64,
    pub(crate) last_ms: i64,
}

/// The whole triage state. Serialize it into snapshots; every field is
/// ordered, so two replicas that applied the same calls are equal and
/// serialize to the same bytes. It is also a set of small rows
/// ([`crate::rows`]) and records which of them changed; that record is not
/// part of equality or serialization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triage {
    pub(crate) config: TriageConfig,
    pub(crate) config_version: u64,
    pub(crate) config_history: Vec<ConfigVersion>,
    pub(crate) st: Store,
    /// The singleton rows as of the last `take_dirty` (the maps of `st`
    /// record their own changed keys).
    #[serde(skip)]
    pub(crate) seen: Dirty<Option<Seen>>,
}

/// Everything but the config, so the pipeline can borrow the config while
/// it changes the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Store {
    /// When each suppression without its own date was first applied.
    pub(crate) suppression_created: BTreeMap<SuppressionId, i64>,
    pub(crate) alerts: Tracked<AlertId, Alert>,
    /// Derived from `alerts` (each alert's rule, entity and window start);
    /// not a row of its own.
    #[serde(with = "crate::bounded::pairs")]
    pub(crate) alert_keys: BTreeMap<GroupKey, AlertId>,
    pub(crate) next_alert: u64,
    pub(crate) incidents: Tracked<IncidentId, Incident>,
    pub(crate) next_incident: u64,
    pub(crate) rarity: Rarity,
    pub(crate) risk: RiskBook,
    pub(crate) verdicts: VerdictBook,
    pub(crate) shard_labels: Tracked<String, BTreeMap<String, String>>,
    pub(crate) hunts: Tracked<String, HuntCursor>,
    pub(crate) event_clock_ms: i64,
    pub(crate) stats: TriageStats,
}

impl Default for Triage {
    fn default() -> Self {
        Triage::new(TriageConfig::default(), 0)
    }
}

impl Triage {
    /// An empty state with `config` as version 0, created at leader time
    /// `now_ms` (the creation time of its suppressions that give none).
    pub fn new(config: TriageConfig, now_ms: i64) -> Triage {
        let suppression_created = config
            .suppressions
            .iter()
            .filter(|s| s.created_ms.is_none())
            .map(|s| (s.id.clone(), now_ms))
            .collect();
        Triage {
            config,
            config_version: 0,
            config_history: Vec::new(),
            st: Store {
                suppression_created,
                event_clock_ms: i64::MIN,
                ..Store::default()
            },
            seen: Dirty(None),
        }
    }

    /// The config in force.
    pub fn config(&self) -> &TriageConfig {
        &self.config
    }

    /// Its version (0: the built-in default).
    pub fn config_version(&self) -> u64 {
        self.config_version
    }

    /// Records of the latest config versions, oldest first.
    pub fn config_history(&self) -> &[ConfigVersion] {
        &self.config_history
    }

    /// An alert.
    pub fn alert(&self, id: AlertId) -> Option<&Alert> {
        self.st.alerts.get(&id)
    }

    /// Every alert kept, by id.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.st.alerts.values()
    }

    /// An incident.
    pub fn incident(&self, id: IncidentId) -> Option<&Incident> {
        self.st.incidents.get(&id)
    }

    /// Every incident kept, by id.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.st.incidents.values()
    }

    /// An entity's risk record (`kind:value`).
    pub fn entity_risk(&self, key: &str) -> Option<&EntityRisk> {
        self.st.risk.entities.get(key)
    }

    /// Counters.
    pub fn stats(&self) -> &TriageStats {
        &self.st.stats
    }

    /// Where the queue stands.
    pub fn summary(&self) -> TriageSummary {
        let st = &self.st;
        TriageSummary {
            findings: st.stats.findings,
            alerts: st.alerts.len(),
            open_alerts: st
                .alerts
                .values()
                .filter(|a| a.case.state.is_open())
                .count(),
            auto_closed_alerts: st
                .alerts
                .values()
                .filter(|a| a.case.auto_closed_by().is_some())
                .count(),
            incidents: st.incidents.len(),
            open_incidents: st
                .incidents
                .values()
                .filter(|i| i.case.state.is_open())
                .count(),
            pending_proposals: st
                .verdicts
                .proposals
                .values()
                .filter(|p| p.status == crate::verdict::ProposalStatus::Pending)
                .count(),
        }
    }

    /// The latest event time seen (clamped to the leader's clock).
    pub fn event_clock_ms(&self) -> i64 {
        self.st.event_clock_ms
    }

    /// Triage one committed finding at leader time `now_ms`. Returns what
    /// the coordinator must do, starting with the finding's
    /// [`Effect::Link`]. On error nothing changed.
    pub fn ingest(
        &mut self,
        finding: TriageFinding,
        now_ms: i64,
    ) -> Result<Vec<Effect>, TriageError> {
        self.st.check(&finding)?;
        // Findings without a time, or from a host whose clock is far ahead,
        // are placed at the leader's time.
        let ts = if finding.timestamp_ms <= 0
            || finding.timestamp_ms > now_ms.saturating_add(MAX_FUTURE_MS)
        {
            now_ms
        } else {
            finding.timestamp_ms
        };
        let st = &mut self.st;
        st.event_clock_ms = st.event_clock_ms.max(ts);
        st.note_hunt(&finding.hunt, finding.seq, now_ms);
        st.note_shard(&finding);
        Ok(st.pipeline(&self.config, &finding, ts, now_ms))
    }

    /// Recomputes the score of every open alert and incident (rarity moves
    /// as findings arrive; call it periodically). Returns how many scores
    /// changed.
    pub fn rescore_open(&mut self) -> usize {
        self.st.rescore_open(&self.config)
    }

    /// Drops what is past its time at leader time `now_ms`: closed alerts
    /// and incidents past retention (and, past [`MAX_ALERTS`], the
    /// longest-closed ones), old rarity days, decayed entities, old verdict
    /// history. Open alerts and incidents are never dropped.
    pub fn prune(&mut self, now_ms: i64) -> Vec<Effect> {
        self.st.prune(&self.config, now_ms)
    }
}

impl Store {
    fn check(&self, f: &TriageFinding) -> Result<(), TriageError> {
        let invalid = |reason: &str| TriageError::InvalidFinding {
            finding: format!("{}#{}", f.hunt, f.seq),
            reason: reason.to_owned(),
        };
        if f.hunt.trim().is_empty() {
            return Err(invalid(
                "it has no hunt id; pass the hunt the finding was committed to",
            ));
        }
        if f.rule.trim().is_empty() {
            return Err(invalid(
                "it has no rule id; modules must name the rule that fired",
            ));
        }
        if f.confidence > 100 {
            return Err(invalid(&format!(
                "confidence {} is above 100; confidence is a percentage",
                f.confidence
            )));
        }
        if let Some(c) = self.hunts.get(&f.hunt)
            && f.seq < c.next_seq
        {
            return Err(TriageError::DuplicateFinding {
                hunt: f.hunt.clone(),
                seq: f.seq,
                last: c.next_seq - 1,
            });
        }
        Ok(())
    }

    fn note_hunt(&mut self, hunt: &str, seq: u64, now_ms: i64) {
        self.hunts.insert(
            hunt.to_owned(),
            HuntCursor {
                next_seq: seq.saturating_add(1),
                last_ms: now_ms,
            },
        );
        if self.hunts.len() > MAX_HUNTS {
            let mut by_age: Vec<(i64, String)> = self
                .hunts
                .iter()
                .filter(|(h, _)| h.as_str() != hunt)
                .map(|(h, c)| (c.last_ms, h.clone()))
                .collect();
            by_age.sort();
            for (_, h) in by_age.into_iter().take(MAX_HUNTS / 10) {
                self.hunts.remove(&h);
            }
        }
    }

    fn note_shard(&mut self, f: &TriageFinding) {
        if self.shard_labels.get(&f.shard) == Some(&f.shard_labels) {
            return;
        }
        if self.shard_labels.contains_key(&f.shard) || self.shard_labels.len() < MAX_SHARDS {
            self.shard_labels
                .insert(f.shard.clone(), f.shard_labels.clone());
        }
    }

    fn pipeline(
        &mut self,
        cfg: &TriageConfig,
        finding: &TriageFinding,
        ts: i64,
        now_ms: i64,
    ) -> Vec<Effect> {
        // Enrich the finding.
        let mut entities = if finding.entities.is_empty() {
            parse_entities(&finding.entity, &finding.evidence)
        } else {
            finding.entities.clone()
        };
        let host_entity = finding
            .host
            .as_deref()
            .and_then(|h| Entity::new(EntityKind::Host, h));
        entities.extend(host_entity.clone());
        entities.sort();
        entities.dedup();
        let host = host_entity
            .or_else(|| {
                entities
                    .iter()
                    .find(|e| e.kind == EntityKind::Host)
                    .cloned()
            })
            .map(|e| e.value);
        let entity = group_entity(finding, &entities);
        let (techniques, tactics) = attack_of(&finding.techniques, &finding.tags);
        let today = day_of(self.event_clock_ms);
        let days = cfg.rarity.window_days;
        self.rarity
            .rules
            .add(&finding.rule, ts, today, days, MAX_RULES);
        self.rarity
            .entities
            .add(&entity, ts, today, days, MAX_RARITY_ENTITIES);
        let view = Finding {
            finding,
            timestamp_ms: ts,
            entities: &entities,
            host: host.as_deref(),
            techniques: &techniques,
            tactics: &tactics,
        };

        // Suppress?
        let suppression = first_match(
            &cfg.suppressions,
            &self.suppression_created,
            &view.subject(&entity),
            now_ms,
        )
        .map(|s| {
            (
                s.id.clone(),
                format!("suppression {} by {}: {}", s.id, s.author, s.reason),
            )
        });

        // Group.
        let window = cfg.grouping.window_for(&finding.rule);
        let key = key_for(&finding.rule, &entity, ts, window);
        let mut effects = vec![Effect::Link {
            alert: AlertId(0), // set below, once the alert is known
            hunt: finding.hunt.clone(),
            seq: finding.seq,
        }];
        self.stats.findings += 1;
        if suppression.is_some() {
            self.stats.suppressed_findings += 1;
        }
        let existing = self
            .alert_keys
            .get(&key)
            .copied()
            .filter(|id| self.alerts.contains_key(id));
        let id = match existing.and_then(|id| self.alerts.get_mut(&id)) {
            Some(alert) => {
                alert.absorb(&view, now_ms);
                match &suppression {
                    Some(_) => alert.suppressed_count += 1,
                    None => {
                        if let Some(sid) = alert.case.auto_closed_by().cloned() {
                            alert.case.state = CaseState::Open;
                            alert.case.log(
                                now_ms,
                                Actor::Triage,
                                format!(
                                    "reopened: finding {} is not covered by suppression {sid}",
                                    finding.reference()
                                ),
                            );
                            effects.push(Effect::AlertReopened { alert: alert.id });
                        }
                    }
                }
                alert.id
            }
            None => {
                self.next_alert += 1;
                let id = AlertId(self.next_alert);
                let mut alert = Alert::new(id, &key, window, finding, now_ms);
                alert.absorb(&view, now_ms);
                self.stats.alerts_created += 1;
                match &suppression {
                    Some((sid, reason)) => {
                        alert.suppressed_count = 1;
                        alert.case.close(
                            ClosedBy::Suppression(sid.clone()),
                            reason.clone(),
                            now_ms,
                        );
                        self.stats.alerts_auto_closed += 1;
                        effects.push(Effect::AlertAutoClosed {
                            alert: id,
                            suppression: sid.clone(),
                        });
                    }
                    None => {
                        alert.case.log(now_ms, Actor::Triage, "opened");
                        effects.push(Effect::AlertOpened { alert: id });
                    }
                }
                self.alerts.insert(id, alert);
                self.alert_keys.insert(key, id);
                id
            }
        };
        if let Some(Effect::Link { alert, .. }) = effects.first_mut() {
            *alert = id;
        }

        // Entity risk and correlation.
        let mut rescore: BTreeSet<AlertId> = [id].into();
        let mut touched_incidents: BTreeSet<IncidentId> = BTreeSet::new();
        let counts = self.alerts.get(&id).is_some_and(counts_for_risk);
        if suppression.is_none() && counts {
            // Only an alert new to an entity moves its risk (so its other
            // alerts' scores) or can change what correlates; a loud alert's
            // later findings cost no more than grouping.
            for (key, new_member) in self.add_risk(cfg, id, finding, &entities, ts) {
                if !new_member {
                    continue;
                }
                if let Some(er) = self.risk.entities.get(&key) {
                    rescore.extend(er.members.keys().copied());
                }
                self.correlate_entity(cfg, &key, id, now_ms, &mut effects, &mut touched_incidents);
            }
        }
        for a in &rescore {
            self.rescore_alert(cfg, *a);
            if let Some(alert) = self.alerts.get(a) {
                touched_incidents.extend(alert.incidents.iter().copied());
            }
        }
        for i in &touched_incidents {
            self.refresh_incident(cfg, *i);
        }

        self.follow_ups(cfg, id, &mut effects);
        if self.risk.entities.len() > MAX_TRACKED + MAX_TRACKED / 10 {
            self.prune_risk(cfg);
        }
        effects
    }

    fn add_risk(
        &mut self,
        cfg: &TriageConfig,
        id: AlertId,
        finding: &TriageFinding,
        entities: &[Entity],
        ts: i64,
    ) -> Vec<(String, bool)> {
        let Some(alert) = self.alerts.get(&id) else {
            return Vec::new();
        };
        // Points × confidence%, in thousandths of a point.
        let milli = u64::from(cfg.risk.points.of(finding.severity))
            * u64::from(finding.confidence.min(100))
            * 10;
        let member = Member {
            first_seen_ms: alert.first_seen_ms,
            rule: alert.rule.clone(),
            module: alert.module.clone(),
            tactics: alert.tactics.clone(),
        };
        let mut touched = Vec::new();
        for e in entities.iter().filter(|e| carries_risk(cfg, e)) {
            let key = e.key();
            // A later finding of an alert the entity already remembers as
            // it is changes nothing (and leaves its row clean).
            if self
                .risk
                .entities
                .get(&key)
                .and_then(|er| er.members.get(&id))
                == Some(&member)
            {
                touched.push((key, false));
                continue;
            }
            let er = self
                .risk
                .entities
                .get_or_insert_with(key.clone(), || EntityRisk::new(e.clone()));
            // Risk comes once per alert and entity: a loud alert is one
            // piece of evidence, however many findings it has. A member whose
            // tactics grew counts as new for correlation.
            let new_member = match er.members.get(&id) {
                None => {
                    er.add(milli, ts, cfg.risk.half_life_ms);
                    true
                }
                Some(m) => m.tactics != member.tactics,
            };
            er.remember(id, member.clone());
            touched.push((key, new_member));
        }
        touched
    }

    fn correlate_entity(
        &mut self,
        cfg: &TriageConfig,
        key: &str,
        id: AlertId,
        now_ms: i64,
        effects: &mut Vec<Effect>,
        touched: &mut BTreeSet<IncidentId>,
    ) {
        let Some(er) = self.risk.entities.get(key) else {
            return;
        };
        let open = er.incident.filter(|i| {
            self.incidents
                .get(i)
                .is_some_and(|inc| inc.case.state.is_open())
        });
        if let Some(iid) = open {
            let already = self
                .incidents
                .get(&iid)
                .is_some_and(|inc| inc.alerts.contains(&id));
            if !already {
                self.join_incident(iid, id, now_ms);
                effects.push(Effect::IncidentUpdated {
                    incident: iid,
                    alert: id,
                });
                touched.insert(iid);
            }
            return;
        }
        // Alerts already handled in a closed incident of this entity do
        // not raise it again.
        let handled = |a: &Alert| {
            a.incidents.iter().any(|i| {
                self.incidents
                    .get(i)
                    .is_some_and(|inc| !inc.case.state.is_open() && inc.entity == er.entity)
            })
        };
        let members: Vec<(AlertId, &Member)> = er
            .members
            .iter()
            .filter(|(a, _)| {
                self.alerts
                    .get(a)
                    .is_some_and(|a| counts_for_risk(a) && !handled(a))
            })
            .map(|(a, m)| (*a, m))
            .collect();
        let Some(trigger) =
            correlate(&members, &cfg.correlation).filter(|t| t.alerts.contains(&id))
        else {
            return;
        };
        let entity = er.entity.clone();
        self.next_incident += 1;
        let iid = IncidentId(self.next_incident);
        let mut incident = Incident {
            id: iid,
            entity: entity.clone(),
            reason: trigger.reason.clone(),
            alerts: BoundedSet::new(MAX_INCIDENT_ALERTS),
            rules: BoundedSet::new(64),
            modules: BoundedSet::new(32),
            tactics: BTreeSet::new(),
            severity: Default::default(),
            first_seen_ms: i64::MAX,
            last_seen_ms: i64::MIN,
            opened_ms: now_ms,
            updated_ms: now_ms,
            score: Score::default(),
            score_terms: Vec::new(),
            case: Default::default(),
        };
        incident.case.log(
            now_ms,
            Actor::Triage,
            format!("raised for {entity}: {}", trigger.reason),
        );
        self.incidents.insert(iid, incident);
        for a in &trigger.alerts {
            self.join_incident(iid, *a, now_ms);
        }
        if let Some(er) = self.risk.entities.get_mut(key) {
            er.incident = Some(iid);
        }
        self.stats.incidents_opened += 1;
        effects.push(Effect::IncidentOpened {
            incident: iid,
            entity,
        });
        touched.insert(iid);
    }

    fn join_incident(&mut self, iid: IncidentId, id: AlertId, now_ms: i64) {
        let (Some(alert), Some(incident)) =
            (self.alerts.get_mut(&id), self.incidents.get_mut(&iid))
        else {
            return;
        };
        alert.incidents.insert(iid);
        incident.alerts.insert(id);
        incident.rules.insert(alert.rule.clone());
        for m in alert.modules.iter() {
            incident.modules.insert(m.clone());
        }
        incident.tactics.extend(alert.tactics.iter().cloned());
        incident.updated_ms = now_ms;
    }

    /// Recomputes an incident's summary (severity, times, rules, tactics)
    /// and score from the alerts it lists that are still kept.
    pub(crate) fn refresh_incident(&mut self, cfg: &TriageConfig, iid: IncidentId) {
        let Some(incident) = self.incidents.get(&iid) else {
            return;
        };
        let mut strongest = Score::default();
        let mut severity = incident.severity;
        let (mut first, mut last) = (incident.first_seen_ms, incident.last_seen_ms);
        let mut tactics = incident.tactics.clone();
        for a in incident.alerts.iter().filter_map(|a| self.alerts.get(a)) {
            strongest = strongest.max(a.score);
            severity = severity.max(a.severity);
            first = first.min(a.first_seen_ms);
            last = last.max(a.last_seen_ms);
            tactics.extend(a.tactics.iter().cloned());
        }
        let (score, terms) = incident_score(
            strongest,
            incident.rules.len(),
            tactics.len(),
            cfg.correlation.breadth_points,
        );
        if incident.severity == severity
            && incident.first_seen_ms == first
            && incident.last_seen_ms == last
            && incident.tactics == tactics
            && incident.score == score
            && incident.score_terms == terms
        {
            return; // unchanged: its row stays clean
        }
        if let Some(incident) = self.incidents.get_mut(&iid) {
            incident.severity = severity;
            incident.first_seen_ms = first;
            incident.last_seen_ms = last;
            incident.tactics = tactics;
            incident.score = score;
            incident.score_terms = terms;
        }
    }

    /// What an alert's score would be under `cfg`: criticality, score, terms.
    pub(crate) fn evaluate(
        &self,
        cfg: &TriageConfig,
        alert: &Alert,
    ) -> (Criticality, String, Score, Vec<ScoreTerm>) {
        let mut criticality = (cfg.assets.default_criticality, "default".to_owned());
        let no_labels = BTreeMap::new();
        for asset in alert.assets.iter() {
            let labels = self.shard_labels.get(&asset.shard).unwrap_or(&no_labels);
            let c = cfg
                .assets
                .criticality_of(asset.host.as_deref(), &asset.shard, labels);
            if c.0 > criticality.0 {
                criticality = c;
            }
        }
        let today = day_of(self.event_clock_ms);
        let days = cfg.rarity.window_days;
        let rule_others = self
            .rarity
            .rules
            .count(&alert.rule, today, days)
            .saturating_sub(alert.count);
        let entity_others = self
            .rarity
            .entities
            .count(&alert.entity, today, days)
            .saturating_sub(alert.count);
        let risk_milli = alert
            .entities
            .iter()
            .filter(|e| carries_risk(cfg, e))
            .filter_map(|e| self.risk.entities.get(&e.key()))
            .map(|er| er.risk_at(alert.last_seen_ms, cfg.risk.half_life_ms))
            .max()
            .unwrap_or(0);
        let factors = AlertFactors {
            severity: alert.severity,
            confidence: alert.confidence,
            criticality: criticality.clone(),
            rule_others,
            entity_others,
            intel: alert.intel_matches,
            risk_milli,
        };
        let params = FactorParams {
            rule_half_count: cfg.rarity.rule_half_count,
            entity_half_count: cfg.rarity.entity_half_count,
            risk_half_score: cfg.risk.half_score,
            rarity_days: days,
        };
        let (score, terms) = alert_score(&factors, &cfg.weights, &params);
        (criticality.0, criticality.1, score, terms)
    }

    pub(crate) fn rescore_alert(&mut self, cfg: &TriageConfig, id: AlertId) {
        let Some(alert) = self.alerts.get(&id) else {
            return;
        };
        let (criticality, reason, score, terms) = self.evaluate(cfg, alert);
        if alert.criticality == criticality
            && alert.criticality_reason == reason
            && alert.score == score
            && alert.score_terms == terms
        {
            return; // unchanged: its row stays clean
        }
        if let Some(alert) = self.alerts.get_mut(&id) {
            alert.criticality = criticality;
            alert.criticality_reason = reason;
            alert.score = score;
            alert.score_terms = terms;
        }
    }

    fn follow_ups(&mut self, cfg: &TriageConfig, id: AlertId, effects: &mut Vec<Effect>) {
        let Some(alert) = self.alerts.get(&id) else {
            return;
        };
        if !alert.case.state.is_open() {
            return;
        }
        let mut started = Vec::new();
        let entities: Vec<Entity> = alert.entities.iter().cloned().collect();
        let primary = alert.primary_entity();
        let subject = alert.subject();
        for fu in &cfg.follow_ups {
            if alert.follow_ups.contains(&fu.id)
                || !fu.when.matches(&subject)
                || fu.min_score.is_some_and(|min| alert.score < min)
            {
                continue;
            }
            let targets = pivot_entities(fu.pivot, primary.as_ref(), &entities);
            if targets.is_empty() {
                continue;
            }
            for entity in targets {
                effects.push(Effect::StartFollowUp {
                    alert: id,
                    follow_up: fu.id.clone(),
                    entity,
                    at_ms: alert.first_seen_ms,
                    around_ms: fu.around_ms,
                    from_ms: alert.first_seen_ms.saturating_sub(fu.around_ms),
                    to_ms: alert.last_seen_ms.saturating_add(fu.around_ms),
                    shards: alert
                        .assets
                        .iter()
                        .map(|a| a.shard.clone())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                });
            }
            started.push(fu.id.clone());
        }
        if started.is_empty() {
            return;
        }
        self.stats.follow_ups_started += started.len() as u64;
        if let Some(alert) = self.alerts.get_mut(&id) {
            for f in started {
                alert.case.log(
                    alert.updated_ms,
                    Actor::Triage,
                    format!("follow-up {f} started"),
                );
                alert.follow_ups.insert(f);
            }
        }
    }

    pub(crate) fn rescore_open(&mut self, cfg: &TriageConfig) -> usize {
        let open: Vec<AlertId> = self
            .alerts
            .values()
            .filter(|a| a.case.state.is_open())
            .map(|a| a.id)
            .collect();
        let mut changed = 0;
        for id in open {
            let before = self.alerts.get(&id).map(|a| a.score);
            self.rescore_alert(cfg, id);
            if self.alerts.get(&id).map(|a| a.score) != before {
                changed += 1;
            }
        }
        let incidents: Vec<IncidentId> = self
            .incidents
            .values()
            .filter(|i| i.case.state.is_open())
            .map(|i| i.id)
            .collect();
        for i in incidents {
            let before = self.incidents.get(&i).map(|x| x.score);
            self.refresh_incident(cfg, i);
            if self.incidents.get(&i).map(|x| x.score) != before {
                changed += 1;
            }
        }
        changed
    }

    pub(crate) fn prune(&mut self, cfg: &TriageConfig, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let retention = cfg.retention.closed_ms;
        let closed_at = |state: &CaseState| state.closure().map(|c| c.at_ms);
        let mut closed: Vec<(i64, AlertId)> = self
            .alerts
            .values()
            .filter_map(|a| closed_at(&a.case.state).map(|t| (t, a.id)))
            .collect();
        closed.sort();
        let over = self.alerts.len().saturating_sub(MAX_ALERTS);
        let drop: Vec<AlertId> = closed
            .iter()
            .enumerate()
            .filter(|(i, (t, _))| *i < over || t.saturating_add(retention) <= now_ms)
            .map(|(_, (_, id))| *id)
            .collect();
        for id in drop {
            if self.alerts.remove(&id).is_some() {
                effects.push(Effect::AlertEvicted { alert: id });
            }
        }
        let alerts = &self.alerts;
        self.alert_keys.retain(|_, id| alerts.contains_key(id));

        let old_incidents: Vec<IncidentId> = self
            .incidents
            .values()
            .filter(|i| {
                closed_at(&i.case.state).is_some_and(|t| t.saturating_add(retention) <= now_ms)
            })
            .map(|i| i.id)
            .collect();
        for iid in old_incidents {
            if let Some(incident) = self.incidents.remove(&iid) {
                for a in incident.alerts.iter() {
                    if let Some(alert) = self.alerts.get_mut(a) {
                        alert.incidents.remove(&iid);
                    }
                }
                effects.push(Effect::IncidentEvicted { incident: iid });
            }
        }

        let today = day_of(self.event_clock_ms);
        self.rarity.rules.prune(today, cfg.rarity.window_days);
        self.rarity.entities.prune(today, cfg.rarity.window_days);
        self.prune_risk(cfg);
        let alerts = &self.alerts;
        self.risk.entities.update_where(
            |_, er| er.members.keys().any(|a| !alerts.contains_key(a)),
            |_, er| er.members.retain(|a, _| alerts.contains_key(a)),
        );
        self.verdicts.prune(now_ms, cfg);
        effects
    }

    fn prune_risk(&mut self, cfg: &TriageConfig) {
        let incidents = &self.incidents;
        self.risk
            .prune(self.event_clock_ms, cfg.risk.half_life_ms, |i| {
                incidents
                    .get(&i)
                    .is_some_and(|inc| inc.case.state.is_open())
            });
    }
}

/// Whether an alert adds risk and counts toward correlation: not closed by
/// a suppression, and not judged noise by a person.
pub(crate) fn counts_for_risk(a: &Alert) -> bool {
    a.case.auto_closed_by().is_none() && a.case.verdict.as_ref().is_none_or(|v| !v.kind.is_noise())
}

/// Whether an entity carries risk under `cfg`: a host, user or IP not on
/// the ignore list.
pub(crate) fn carries_risk(cfg: &TriageConfig, e: &Entity) -> bool {
    if !e.kind.carries_risk() {
        return false;
    }
    let key = e.key();
    !cfg.risk.ignore.iter().any(|g| g.matches(&key))
}
