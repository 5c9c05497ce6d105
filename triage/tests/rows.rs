//! Row-level persistence: after every operation, writing the rows
//! `take_dirty` names (or deleting them) keeps a mirror that rebuilds the
//! same state; keys and rows round-trip through bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use quarry_triage::config::TriageConfig;
use quarry_triage::query::Query;
use quarry_triage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use quarry_triage::verdict::{ProposalKey, ProposalSubject};
use quarry_triage::{
    AlertId, CaseId, Effect, IncidentId, ProposalId, ProposalStatus, Row, RowKey, Severity, Triage,
    TriageError, TriageFinding, VerdictKind,
};

/// 2026-05-28T09:00:00Z.
const T0: i64 = 494_445 * HOUR_MS;

/// splitmix64: a fixed sequence from a seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

type Mirror = BTreeMap<RowKey, Row>;

fn kind(key: &RowKey) -> &'static str {
    match key {
        RowKey::Meta => "meta",
        RowKey::Config => "config",
        RowKey::ConfigVersion(_) => "config-version",
        RowKey::Alert(_) => "alert",
        RowKey::Incident(_) => "incident",
        RowKey::Proposal(_) => "proposal",
        RowKey::Risk(_) => "risk",
        RowKey::RuleRarity(_) => "rule-rarity",
        RowKey::EntityRarity(_) => "entity-rarity",
        RowKey::RuleVerdicts(_) => "rule-verdicts",
        RowKey::ModuleVerdicts(_) => "module-verdicts",
        RowKey::Noise(_) => "noise",
        RowKey::Hunt(_) => "hunt",
        RowKey::Shard(_) => "shard",
    }
}

const ALL_KINDS: [&str; 14] = [
    "meta",
    "config",
    "config-version",
    "alert",
    "incident",
    "proposal",
    "risk",
    "rule-rarity",
    "entity-rarity",
    "rule-verdicts",
    "module-verdicts",
    "noise",
    "hunt",
    "shard",
];

/// What the coordinator does after applying a command: write the dirty
/// rows, delete the gone ones. Returns how many keys were dirty.
fn drain(t: &mut Triage, mirror: &mut Mirror, deleted: &mut BTreeSet<&'static str>) -> usize {
    let keys = t.take_dirty();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "dirty keys come sorted and once each"
    );
    for key in &keys {
        assert_eq!(
            RowKey::from_bytes(&key.to_bytes()).as_ref(),
            Ok(key),
            "{key}"
        );
        match t.row(key) {
            Some(row) => {
                mirror.insert(key.clone(), row);
            }
            None => {
                if mirror.remove(key).is_some() {
                    deleted.insert(kind(key));
                }
            }
        }
    }
    keys.len()
}

/// The mirror rebuilds the state, and holds exactly its rows.
fn check(t: &Triage, mirror: &Mirror, at: &str) {
    let rows: Mirror = t.rows().into_iter().collect();
    assert_eq!(
        rows.len(),
        t.rows().len(),
        "{at}: rows() lists each key once"
    );
    if rows != *mirror {
        let stale: Vec<String> = rows
            .iter()
            .filter(|(k, v)| mirror.get(*k) != Some(*v))
            .map(|(k, _)| k.to_string())
            .chain(
                mirror
                    .keys()
                    .filter(|k| !rows.contains_key(*k))
                    .map(|k| format!("{k} (gone)")),
            )
            .take(10)
            .collect();
        panic!("{at}: the mirror differs from rows() at {stale:?}");
    }
    let back = Triage::from_rows(mirror.clone()).expect("from_rows");
    assert!(back == *t, "{at}: from_rows(mirror) differs from the state");
}

const RULES: [&str; 12] = [
    "sigma/r0",
    "sigma/r1",
    "sigma/r2",
    "sigma/r3",
    "sigma/r4",
    "sigma/r5",
    "sigma/r6",
    "sigma/r7",
    "bruteforce/ssh",
    "lateral/psexec",
    "sigma/vss-delete",
    "sigma/admin-share",
];
const MODULES: [&str; 3] = ["sigma@1.0.0", "lateral-movement@0.2.0", "beaconing@1.1.0"];
const TACTICS: [&str; 5] = [
    "attack.execution",
    "attack.persistence",
    "attack.discovery",
    "attack.lateral_movement",
    "attack.credential_access",
];
const TECHNIQUES: [&str; 4] = ["T1059.001", "T1021.002", "T1003", "T1490"];

const CONFIGS: [&str; 3] = [
    // Suppressions that expire, a follow-up, other weights.
    "\
weights:
  severity: 40
suppressions:
  - id: r1-lab
    author: alice
    reason: the lab hosts run r1 all day
    expires: 3d
    scope:
      rules: [\"sigma/r1\"]
      hosts: [\"ws1*\"]
  - id: vss-backup
    author: alice
    reason: the nightly backup deletes shadow copies
    expires: never
    scope:
      rules: [\"sigma/vss-*\"]
      hosts: [\"bkp-*\"]
      fields:
        ParentImage: \"*\\\\veeam*.exe\"
follow_ups:
  - id: pivot-high
    when:
      min_severity: high
    pivot: host
",
    // Crown jewels, longer groups for one family, an entity suppression.
    "\
grouping:
  windows:
    - rule: \"bruteforce/*\"
      window: 6h
assets:
  crown_jewels:
    - name: domain-controllers
      hosts: [\"dc*\"]
      criticality: critical
suppressions:
  - id: scanner
    author: bob
    reason: the scanner account
    expires: 10d
    scope:
      entities: [\"user:corp\\\\svc*\"]
      max_severity: medium
retention:
  closed: 20d
",
    // The defaults again (drops every suppression).
    "version: 1\n",
];

/// Drives a long, fixed sequence of mixed operations.
struct Sim {
    t: Triage,
    rng: Rng,
    now: i64,
    seqs: BTreeMap<String, u64>,
    hunt_counter: u64,
    configs: Vec<TriageConfig>,
    effects: BTreeMap<&'static str, usize>,
    refused: usize,
    last: Option<TriageFinding>,
    /// What the last step did.
    op: &'static str,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            t: Triage::new(TriageConfig::default(), T0),
            rng: Rng(seed),
            now: T0,
            seqs: BTreeMap::new(),
            hunt_counter: 0,
            configs: CONFIGS
                .iter()
                .map(|y| TriageConfig::from_yaml(y).expect("valid config"))
                .collect(),
            effects: BTreeMap::new(),
            refused: 0,
            last: None,
            op: "",
        }
    }

    fn note(&mut self, effects: &[Effect]) {
        for e in effects {
            let name = match e {
                Effect::Link { .. } => "link",
                Effect::AlertOpened { .. } => "opened",
                Effect::AlertAutoClosed { .. } => "auto-closed",
                Effect::AlertReopened { .. } => "reopened",
                Effect::AlertEvicted { .. } => "alert-evicted",
                Effect::IncidentOpened { .. } => "incident-opened",
                Effect::IncidentUpdated { .. } => "incident-updated",
                Effect::IncidentEvicted { .. } => "incident-evicted",
                Effect::StartFollowUp { .. } => "follow-up",
                Effect::ProposalCreated { .. } => "proposal",
            };
            *self.effects.entry(name).or_default() += 1;
        }
    }

    fn finding(&mut self) -> TriageFinding {
        let f = match self.last.take() {
            // Another finding of the same alert, maybe one its suppression
            // does not cover (more severe, another parent process).
            Some(mut f) if self.rng.chance(25) => {
                f.severity = Severity::ALL[self.rng.below(5) as usize];
                for (k, v) in &mut f.evidence {
                    if k == "ParentImage" {
                        *v = "C:\\Windows\\explorer.exe".to_owned();
                    }
                }
                f
            }
            _ => self.fresh_finding(),
        };
        self.last = Some(f.clone());
        let mut f = f;
        if self.rng.chance(10) {
            self.hunt_counter += 1;
        }
        f.hunt = format!("h-{}", self.hunt_counter + self.rng.below(3));
        let seq = self.seqs.entry(f.hunt.clone()).or_insert(0);
        f.seq = *seq;
        *seq += 1;
        f
    }

    fn fresh_finding(&mut self) -> TriageFinding {
        let r = &mut self.rng;
        let noisy = r.chance(15);
        let (rule, host) = if noisy {
            // One noisy rule on a few hosts: verdicts on it make proposals.
            ("sigma/admin-share".to_owned(), format!("ws0{}", r.below(3)))
        } else {
            let rule = (*r.pick(&RULES)).to_owned();
            let host = match r.below(10) {
                0 => format!("dc0{}", r.below(2) + 1),
                // Backups mostly run on the backup servers (suppressed there).
                1..3 => format!("bkp-0{}", r.below(2) + 1),
                _ if rule == "sigma/vss-delete" && r.chance(70) => {
                    format!("bkp-0{}", r.below(2) + 1)
                }
                _ => format!("ws{:02}", r.below(40)),
            };
            (rule, host)
        };
        let day = self.now / DAY_MS;
        let mut evidence = vec![
            (
                "TargetUserName".to_owned(),
                match r.below(4) {
                    0 => format!("corp\\svc{}", r.below(3)),
                    _ => format!("user{}", r.below(12)),
                },
            ),
            // Addresses move day by day, so old ones decay and are forgotten.
            (
                "IpAddress".to_owned(),
                format!("10.{}.{}.{}", day % 50, r.below(4), r.below(250) + 1),
            ),
        ];
        if rule == "sigma/vss-delete" {
            let parent = if r.chance(70) {
                "C:\\Veeam\\VeeamAgent.exe"
            } else {
                "C:\\Windows\\explorer.exe"
            };
            evidence.push(("ParentImage".to_owned(), parent.to_owned()));
        }
        let timestamp_ms = match r.below(100) {
            0..5 => 0,                      // no time: the leader's
            5..7 => self.now + 3 * DAY_MS,  // a clock far ahead
            7..10 => self.now - 5 * DAY_MS, // an old replay
            _ => self.now - r.below(6 * HOUR_MS as u64) as i64,
        };
        let entity = match r.below(10) {
            0 => format!("user:corp\\user{}", r.below(5)),
            1 => String::new(),
            _ => format!("host:{host}"),
        };
        let shard = format!(
            "shard-{}",
            host.len() % 3 + host.as_bytes()[host.len() - 1] as usize % 4
        );
        let mut labels = BTreeMap::new();
        if shard.ends_with('1') {
            labels.insert("criticality".to_owned(), "high".to_owned());
        }
        // Labels change now and then.
        labels.insert("env".to_owned(), format!("e{}", day / 10 % 2));
        let mut tags = vec![(*r.pick(&TACTICS)).to_owned()];
        if r.chance(5) {
            tags.push("intel:abuse-ch".to_owned());
        }
        TriageFinding {
            shard,
            shard_labels: labels,
            host: Some(host.clone()),
            rule: rule.clone(),
            rule_author: r.chance(20).then(|| "Florian Roth".to_owned()),
            module: (*r.pick(&MODULES)).to_owned(),
            title: format!("{rule} on {host}"),
            severity: Severity::ALL[r.below(5) as usize],
            confidence: r.below(101) as u8,
            entity,
            timestamp_ms,
            evidence,
            techniques: vec![(*r.pick(&TECHNIQUES)).to_owned()],
            tags,
            intel_matches: r.below(2) as u32,
            ..TriageFinding::default()
        }
    }

    fn some_alert(&mut self) -> AlertId {
        if self.rng.chance(50) {
            // Prefer the noisy rule's open alerts, so verdicts make proposals.
            let noisy: Vec<AlertId> = self
                .t
                .alerts()
                .filter(|a| a.rule == "sigma/admin-share" && a.case.state.is_open())
                .map(|a| a.id)
                .collect();
            if !noisy.is_empty() {
                return *self.rng.pick(&noisy);
            }
        }
        // Any number given so far: evicted ones are refused.
        AlertId(self.rng.below(self.t.stats().alerts_created) + 1)
    }

    fn some_case(&mut self) -> CaseId {
        let incidents = self.t.stats().incidents_opened;
        if incidents > 0 && self.rng.chance(30) {
            CaseId::Incident(IncidentId(self.rng.below(incidents) + 1))
        } else {
            CaseId::Alert(self.some_alert())
        }
    }

    /// One operation; `Err` when it was refused.
    fn step(&mut self, i: usize) -> Result<(), TriageError> {
        self.now += self.rng.below(80) as i64 * MINUTE_MS;
        if i % 500 == 499 {
            self.now += 2 * DAY_MS;
        }
        let now = self.now;
        let who = ["alice", "bob", "carol"][self.rng.below(3) as usize];
        match self.rng.below(100) {
            0..70 => {
                self.op = "ingest";
                let f = self.finding();
                let effects = self.t.ingest(f, now)?;
                self.note(&effects);
            }
            70..78 => {
                self.op = "verdict";
                let id = self.some_alert();
                let kind = match self.rng.below(10) {
                    0..4 => VerdictKind::BenignExpected,
                    4..7 => VerdictKind::FalsePositive,
                    _ => VerdictKind::TruePositive,
                };
                let effects = self.t.set_verdict(id.into(), kind, "seen it", who, now)?;
                self.note(&effects);
            }
            78..81 => {
                self.op = "assign";
                let id = self.some_case();
                let assignee = self.rng.chance(80).then_some("dave");
                self.t.assign(id, assignee, who, now)?;
            }
            81..83 => {
                self.op = "comment";
                let id = self.some_case();
                self.t.comment(id, "looking", who, now)?;
            }
            83..87 => {
                self.op = "close/reopen";
                let id = self.some_case();
                let open = self.t.case(id).map(|c| c.state.is_open()).unwrap_or(false);
                if open || self.rng.chance(20) {
                    self.t.close(id, "handled", who, now)?;
                } else {
                    self.t.reopen(id, "not so fast", who, now)?;
                }
            }
            87..88 => {
                self.op = "verdict";
                let id = self.some_case();
                self.t
                    .set_verdict(id, VerdictKind::TruePositive, "real", who, now)?;
            }
            88..91 => {
                self.op = "proposal";
                let pending: Vec<ProposalId> = self
                    .t
                    .proposals()
                    .filter(|p| p.status == ProposalStatus::Pending)
                    .map(|p| p.id)
                    .collect();
                let Some(id) = pending.first().copied() else {
                    // An unknown proposal: refused.
                    self.t.reject_proposal(ProposalId(9_999), who, now)?;
                    return Ok(());
                };
                if self.rng.chance(70) {
                    let (_, effects) = self.t.accept_proposal(id, who, now)?;
                    self.note(&effects);
                } else {
                    self.t.reject_proposal(id, who, now)?;
                }
            }
            91..93 => {
                self.op = "apply_config";
                let config = self.rng.pick(&self.configs).clone();
                // Sometimes based on a stale version: refused.
                let base = self
                    .rng
                    .chance(20)
                    .then(|| self.t.config_version().saturating_sub(1));
                let (_, effects) = self.t.apply_config(config, who, "rotate", base, now)?;
                self.note(&effects);
            }
            93..96 => {
                self.op = "rescore_open";
                self.t.rescore_open();
            }
            96..98 => {
                self.op = "prune";
                let effects = self.t.prune(now);
                self.note(&effects);
            }
            _ => {
                self.op = "read";
                // Reads change nothing.
                let _ = self.t.list(&Query::default())?;
                let config = self.configs[0].clone();
                let _ = self.t.dry_run(&config, now);
                let _ = self.t.summary();
                // A replayed finding is refused.
                if let Some((hunt, seq)) = self.seqs.iter().find(|(_, s)| **s > 0) {
                    let f = TriageFinding {
                        hunt: hunt.clone(),
                        seq: seq - 1,
                        rule: "sigma/r0".into(),
                        ..TriageFinding::default()
                    };
                    self.t.ingest(f, now)?;
                }
            }
        }
        Ok(())
    }
}

struct Run {
    sim: Sim,
    mirror: Mirror,
    deleted: BTreeSet<&'static str>,
    max_row: usize,
    /// Keys drained after each kind of operation (when drained after
    /// every one): operations, keys.
    written: BTreeMap<&'static str, (usize, usize)>,
}

/// Runs `ops` operations, draining dirty keys every `drain_every` of them
/// (and before each check), checking every `check_every`.
fn run(seed: u64, ops: usize, drain_every: usize, check_every: usize) -> Run {
    let mut sim = Sim::new(seed);
    let mut mirror = Mirror::new();
    let mut deleted = BTreeSet::new();
    let mut max_row = 0;
    let mut written = BTreeMap::new();
    for i in 0..ops {
        let outcome = sim.step(i);
        let last = i + 1 == ops;
        let checkpoint = (i + 1) % check_every == 0 || last;
        if outcome.is_err() {
            sim.refused += 1;
        }
        if drain_every == 1 || (i + 1) % drain_every == 0 || checkpoint {
            let n = drain(&mut sim.t, &mut mirror, &mut deleted);
            let w: &mut (usize, usize) = written.entry(sim.op).or_default();
            *w = (w.0 + 1, w.1 + n);
            if drain_every == 1 && i > 0 && sim.op == "read" {
                assert_eq!(n, 0, "op {i}: reads mark no row");
            }
            if drain_every == 1 && outcome.is_err() {
                let op = sim.op;
                assert_eq!(
                    n, 0,
                    "op {i} ({op}): a refused command marks no row: {outcome:?}"
                );
            }
        }
        if checkpoint {
            check(&sim.t, &mirror, &format!("op {i} ({})", sim.op));
            for row in mirror.values() {
                max_row = max_row.max(bincode::serialize(row).expect("bincode").len());
            }
        }
    }
    Run {
        sim,
        mirror,
        deleted,
        max_row,
        written,
    }
}

/// The long run, drained after every operation and checked every 200
/// (shared by the tests that look at its outcome).
fn long_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| run(12, 3_000, 1, 200))
}

#[test]
fn rows_written_after_every_operation_rebuild_the_state() {
    let Run {
        sim,
        mirror,
        deleted,
        max_row,
        written,
    } = long_run();
    let (t, max_row) = (&sim.t, *max_row);
    let summary = t.summary();
    eprintln!(
        "{summary:?} effects {:?} refused {} deleted {deleted:?} rows {} largest row {max_row} B, rows written (operations, keys): {written:?}",
        sim.effects,
        sim.refused,
        mirror.len()
    );
    // The run went through everything the rows must follow.
    assert!(t.stats().findings > 2_000, "{:?}", t.stats());
    for effect in [
        "opened",
        "auto-closed",
        "reopened",
        "alert-evicted",
        "incident-opened",
        "incident-updated",
        "incident-evicted",
        "follow-up",
        "proposal",
    ] {
        assert!(
            sim.effects.get(effect).is_some_and(|n| *n > 0),
            "no {effect}: {:?}",
            sim.effects
        );
    }
    assert!(
        t.proposals()
            .any(|p| matches!(p.status, ProposalStatus::Accepted { .. })),
        "a proposal was accepted"
    );
    assert!(t.config_version() >= 3, "configs were applied");
    assert!(sim.refused > 0, "refused commands were tried");
    for k in [
        "alert",
        "incident",
        "risk",
        "entity-rarity",
        "rule-rarity",
        "noise",
    ] {
        assert!(deleted.contains(k), "no {k} row was deleted: {deleted:?}");
    }
    let kinds: BTreeSet<&str> = mirror.keys().map(kind).collect();
    assert_eq!(kinds, ALL_KINDS.into_iter().collect(), "every kind of row");
    // No row grows with the state (the largest is an alert or the config).
    assert!(max_row < 32 * 1024, "largest row {max_row} bytes");

    // Through bytes, as the coordinator stores them, read back in byte order.
    let stored: BTreeMap<Vec<u8>, Vec<u8>> = mirror
        .iter()
        .map(|(k, v)| (k.to_bytes(), bincode::serialize(v).expect("bincode")))
        .collect();
    let read = stored.iter().map(|(k, v)| {
        (
            RowKey::from_bytes(k).expect("key"),
            bincode::deserialize::<Row>(v).expect("row"),
        )
    });
    let mut back = Triage::from_rows(read).expect("from stored rows");
    assert!(back == *t);
    assert!(
        back.take_dirty().is_empty(),
        "a loaded state has nothing to write"
    );
}

#[test]
fn draining_every_few_operations_gives_the_same_rows() {
    let every_op = run(7, 1_500, 1, 300);
    for n in [7, 50] {
        let sparse = run(7, 1_500, n, 300);
        // Checked at each checkpoint inside `run`; and the states are equal
        // whenever their dirty keys were drained.
        assert!(sparse.sim.t == every_op.sim.t, "drain every {n}");
        assert_eq!(sparse.mirror, every_op.mirror, "drain every {n}");
        assert_eq!(
            bincode::serialize(&sparse.sim.t).expect("bincode"),
            bincode::serialize(&every_op.sim.t).expect("bincode"),
            "drain every {n}: the record is not serialized"
        );
    }
    // Undrained changes do not make states unequal either.
    let mut a = every_op.sim.t.clone();
    let mut c = a.clone();
    for t in [&mut a, &mut c] {
        t.rescore_open();
        t.prune(T0 + 400 * DAY_MS);
    }
    let mut mirror = Mirror::new();
    let mut deleted = BTreeSet::new();
    drain(&mut c, &mut mirror, &mut deleted);
    assert!(a == c, "one drained, one not: equal");
    assert_eq!(
        serde_json::to_string(&a).expect("json"),
        serde_json::to_string(&c).expect("json")
    );
}

#[test]
fn every_row_kind_round_trips_through_bincode_and_json() {
    let Run { mirror, .. } = long_run();
    let mut seen = BTreeSet::new();
    for (key, row) in mirror {
        seen.insert(kind(key));
        let bytes = bincode::serialize(&(key, row)).expect("bincode");
        let back: (RowKey, Row) = bincode::deserialize(&bytes).expect("from bincode");
        assert_eq!((&back.0, &back.1), (key, row), "{key}");
        let back: Row =
            bincode::deserialize(&bincode::serialize(row).expect("bincode")).expect("from bincode");
        assert_eq!(&back, row, "{key}");
        let json = serde_json::to_string(row).expect("json");
        let back: Row = serde_json::from_str(&json).expect("from json");
        assert_eq!(&back, row, "{key}");
        assert_eq!(RowKey::from_bytes(&key.to_bytes()).as_ref(), Ok(key));
    }
    assert_eq!(seen, ALL_KINDS.into_iter().collect());
}

#[test]
fn keys_have_stable_printable_bytes() {
    let noise = RowKey::Noise(ProposalKey {
        rule: "sigma/a:b/c".into(),
        subject: ProposalSubject::Host("ws:01/x".into()),
    });
    let cases: [(RowKey, &[u8]); 14] = [
        (RowKey::Meta, b"meta"),
        (RowKey::Config, b"config"),
        (RowKey::ConfigVersion(7), b"v/7"),
        (RowKey::Alert(AlertId(12)), b"a/A-12"),
        (RowKey::Incident(IncidentId(3)), b"i/I-3"),
        (RowKey::Proposal(ProposalId(1)), b"p/P-1"),
        (
            RowKey::Risk("user:corp\\alice".into()),
            b"e/user:corp\\alice",
        ),
        (RowKey::RuleRarity("sigma/r1".into()), b"rr/sigma/r1"),
        (RowKey::EntityRarity("host:ws01".into()), b"re/host:ws01"),
        (RowKey::RuleVerdicts("sigma/r1".into()), b"vr/sigma/r1"),
        (
            RowKey::ModuleVerdicts("sigma@1.0.0".into()),
            b"vm/sigma@1.0.0",
        ),
        (noise, b"n/h/7:ws:01/x/sigma/a:b/c"),
        (RowKey::Hunt("h-12".into()), b"h/h-12"),
        (RowKey::Shard("shard-7".into()), b"s/shard-7"),
    ];
    for (key, bytes) in &cases {
        assert_eq!(key.to_bytes(), *bytes, "{key:?}");
        assert_eq!(RowKey::from_bytes(bytes).as_ref(), Ok(key));
        assert_eq!(key.to_string().as_bytes(), *bytes);
    }
    let entity = RowKey::Noise(ProposalKey {
        rule: "r".into(),
        subject: ProposalSubject::Entity("ip:10.0.0.1".into()),
    });
    assert_eq!(entity.to_bytes(), b"n/e/11:ip:10.0.0.1/r");
    assert_eq!(RowKey::from_bytes(b"n/e/11:ip:10.0.0.1/r"), Ok(entity));
    // Keys order by kind, then id.
    let mut sorted: Vec<RowKey> = cases.iter().map(|(k, _)| k.clone()).collect();
    sorted.reverse();
    sorted.sort();
    assert_eq!(sorted[0], RowKey::Meta);
    assert!(RowKey::Alert(AlertId(2)) < RowKey::Alert(AlertId(10)));

    for bad in [
        &b"a/A-x"[..],
        b"a/12",
        b"a/A-012",
        b"a/I-3",
        b"v/+7",
        b"metadata",
        b"zz/1",
        b"n/h/99:ws01/r",
        b"n/x/4:ws01/r",
        b"n/h/4:ws01r",
        b"e/\xff",
    ] {
        let err = RowKey::from_bytes(bad).expect_err("bad key");
        let TriageError::BadRowKey { key, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(key.as_bytes(), bad.escape_ascii().to_string().as_bytes());
        assert!(err.to_string().contains(key.as_str()), "{err}");
    }
}

#[test]
fn inconsistent_rows_are_refused_with_the_key_named() {
    let Run { sim, mirror, .. } = run(3, 600, 1, 600);
    let t = sim.t;
    assert!(t.alerts().count() > 1);
    let err_of = |rows: Mirror| Triage::from_rows(rows).expect_err("refused").to_string();

    let mut rows = mirror.clone();
    rows.remove(&RowKey::Meta);
    assert!(err_of(rows).contains("triage row `meta` is inconsistent: missing"));

    let mut rows = mirror.clone();
    rows.remove(&RowKey::Config);
    assert!(err_of(rows).contains("`config`"));

    // A row under another row's key.
    let a = t.alerts().next().expect("alert").clone();
    let b = t.alerts().nth(1).expect("alert").clone();
    let mut rows = mirror.clone();
    rows.insert(RowKey::Alert(a.id), Row::Alert(Box::new(b.clone())));
    let err = err_of(rows);
    assert!(
        err.contains(&format!("`a/{}`", a.id)) && err.contains(&b.id.to_string()),
        "{err}"
    );

    // A row of the wrong kind.
    let mut rows = mirror.clone();
    rows.insert(RowKey::Hunt("h-1".into()), Row::Shard(BTreeMap::new()));
    let err = err_of(rows);
    assert!(
        err.contains("`h/h-1`") && err.contains("shard labels row"),
        "{err}"
    );

    // Two alerts for one rule, entity and window.
    let mut rows = mirror.clone();
    let mut twin = a.clone();
    twin.id = AlertId(t.stats().alerts_created + 1);
    let mut meta = match &rows[&RowKey::Meta] {
        Row::Meta(m) => m.clone(),
        other => panic!("{other:?}"),
    };
    meta.next_alert += 1;
    rows.insert(RowKey::Meta, Row::Meta(meta));
    rows.insert(RowKey::Alert(twin.id), Row::Alert(Box::new(twin.clone())));
    let err = err_of(rows);
    assert!(
        err.contains(&format!("`a/{}`", twin.id)) && err.contains(&a.id.to_string()),
        "{err}"
    );

    // An alert beyond the counter.
    let mut rows = mirror.clone();
    let mut late = a.clone();
    late.id = AlertId(t.stats().alerts_created + 5);
    late.window_start_ms += 1;
    rows.insert(RowKey::Alert(late.id), Row::Alert(Box::new(late.clone())));
    let err = err_of(rows);
    assert!(err.contains(&format!("`a/{}`", late.id)), "{err}");

    // The same key twice.
    let mut list: Vec<(RowKey, Row)> = mirror.clone().into_iter().collect();
    list.push(list[0].clone());
    let err = Triage::from_rows(list).expect_err("twice").to_string();
    assert!(err.contains("`meta`") && err.contains("twice"), "{err}");

    // A config version missing from the history.
    if t.config_version() > 0 {
        let mut rows = mirror.clone();
        rows.remove(&RowKey::ConfigVersion(t.config_version()));
        let err = err_of(rows);
        assert!(
            err.contains(&format!("`v/{}`", t.config_version())),
            "{err}"
        );
    }

    // Any order gives the same state.
    let mut list: Vec<(RowKey, Row)> = mirror.into_iter().collect();
    list.reverse();
    assert!(Triage::from_rows(list).expect("reversed") == t);
}

#[test]
fn a_new_or_deserialized_state_writes_its_singletons_first() {
    let mut t = Triage::new(TriageConfig::default(), T0);
    assert_eq!(t.take_dirty(), [RowKey::Meta, RowKey::Config]);
    assert!(t.take_dirty().is_empty());
    // Reads and refused commands mark nothing.
    let _ = t.list(&Query::default());
    assert!(t.close(CaseId::Alert(AlertId(1)), "x", "bob", T0).is_err());
    assert!(t.take_dirty().is_empty());

    let mut f = TriageFinding {
        hunt: "h-1".into(),
        rule: "sigma/r1".into(),
        host: Some("ws01".into()),
        shard: "s1".into(),
        entity: "host:ws01".into(),
        severity: Severity::High,
        confidence: 90,
        timestamp_ms: T0,
        ..TriageFinding::default()
    };
    t.ingest(f.clone(), T0).expect("ingest");
    let keys = t.take_dirty();
    assert_eq!(
        keys,
        [
            RowKey::Meta,
            RowKey::Alert(AlertId(1)),
            RowKey::Risk("host:ws01".into()),
            RowKey::RuleRarity("sigma/r1".into()),
            RowKey::EntityRarity("host:ws01".into()),
            RowKey::Hunt("h-1".into()),
            RowKey::Shard("s1".into()),
        ]
    );
    // A second finding of the same alert: no new risk, shard unchanged.
    f.seq = 1;
    t.ingest(f, T0 + MINUTE_MS).expect("ingest");
    assert_eq!(
        t.take_dirty(),
        [
            RowKey::Meta,
            RowKey::Alert(AlertId(1)),
            RowKey::RuleRarity("sigma/r1".into()),
            RowKey::EntityRarity("host:ws01".into()),
            RowKey::Hunt("h-1".into()),
        ]
    );
    // Nothing moved: rescoring writes nothing.
    t.rescore_open();
    assert!(t.take_dirty().is_empty());

    // A snapshot (serde) knows nothing of what was written: it names its
    // singletons, and the coordinator writes rows() in full.
    let mut back: Triage =
        bincode::deserialize(&bincode::serialize(&t).expect("bincode")).expect("from bincode");
    assert_eq!(back.take_dirty(), [RowKey::Meta, RowKey::Config]);
    let mut loaded = Triage::from_rows(t.rows()).expect("from rows");
    assert!(loaded.take_dirty().is_empty());
    assert!(loaded == t && back == t);
}
