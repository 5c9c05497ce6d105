//! `quarry coverage`: which MITRE ATT&CK techniques the cluster can detect
//! (modules that declare them, Sigma rules tagged with them) and which of
//! those detections actually ran in the last N days, on what share of the
//! cluster's shards. Printed as a table, as JSON, or as an ATT&CK Navigator
//! layer (format 4.5).
//!
//! The coordinator stores modules by digest but not their descriptors, so
//! the techniques a module declares are learnt here, by asking the module
//! itself (`describe()`, in the worker's sandbox) for the builds this binary
//! has: the shipped modules it embeds, and `--module-file` builds. A module
//! of the cluster whose build is not at hand is reported as undescribed
//! rather than guessed from its name.
//!
//! [`compute`] is the whole computation, a pure function of what the API
//! returned; [`gather`] only fetches and describes.

use crate::client_args::{ClientArgs, Format};
use crate::output::render_table;
use clap::{Args, ValueEnum};
use quarry_client::{Client, ClientError};
use quarry_proto::v1;
use quarry_triage::attack::{self, AttackTag};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// One day in milliseconds.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Hunts asked for per ListHunts page while walking back in time.
const HUNT_PAGE: u32 = 200;

/// What can go wrong gathering coverage.
#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    /// A call to the coordinator failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A rule file or module file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `--module-file` is no module the sandbox can describe.
    #[error("{path}: {detail}")]
    Module {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The local sandbox could not be set up or a describe task died.
    #[error("cannot describe modules locally: {0}")]
    Runtime(String),
}

// ---------------------------------------------------------------- inputs

/// A module of the cluster with the techniques its descriptor declares;
/// `None` when no build of it was at hand to ask.
#[derive(Clone, Debug)]
pub struct DescribedModule {
    /// As the coordinator lists it.
    pub info: v1::ModuleInfo,
    /// Declared ATT&CK technique ids.
    pub techniques: Option<Vec<String>>,
}

/// What coverage needs of one Sigma rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigmaRule {
    /// The rule's `id` (a UUID), else its title: how runs and rule files
    /// are matched up.
    pub key: String,
    /// `title`.
    pub title: String,
    /// `level`, lower-case (empty when missing).
    pub level: String,
    /// Technique ids from its `attack.tNNNN` tags, normalised.
    pub techniques: Vec<String>,
    /// Where it came from: a file path or a hunt parameter name.
    pub source: String,
}

/// The Sigma rules in one YAML text (one rule, or several documents).
/// Documents without a title (collection headers, damaged ones) are
/// skipped: coverage is a report, and one bad file must not hide the rest.
pub fn parse_sigma_rules(text: &str, source: &str) -> Vec<SigmaRule> {
    let Ok(docs) = YamlLoader::load_from_str(text) else {
        return Vec::new();
    };
    docs.iter()
        .filter_map(|doc| {
            let title = doc["title"].as_str()?.trim().to_owned();
            let id = doc["id"].as_str().map(str::trim).unwrap_or_default();
            let mut techniques: Vec<String> = doc["tags"]
                .as_vec()
                .map(|tags| {
                    tags.iter()
                        .filter_map(Yaml::as_str)
                        .filter_map(|tag| match attack::parse_tag(tag) {
                            Some(AttackTag::Technique(id)) => Some(id),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            techniques.sort();
            techniques.dedup();
            Some(SigmaRule {
                key: if id.is_empty() {
                    title.clone()
                } else {
                    id.to_owned()
                },
                level: doc["level"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase(),
                title,
                techniques,
                source: source.to_owned(),
            })
        })
        .collect()
}

/// The rules of a rule file, or of every `.yml`/`.yaml` file under a
/// directory (sorted, recursively).
pub fn load_sigma_rules(path: &Path) -> Result<Vec<SigmaRule>, CoverageError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CoverageError::Read { path, source }
    };
    let meta = std::fs::metadata(path).map_err(read_err(path))?;
    if !meta.is_dir() {
        let text = std::fs::read_to_string(path).map_err(read_err(path))?;
        return Ok(parse_sigma_rules(&text, &path.display().to_string()));
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(read_err(&dir))? {
            let entry = entry.map_err(read_err(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(read_err(&path))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut rules = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(read_err(&file))?;
        rules.extend(parse_sigma_rules(&text, &file.display().to_string()));
    }
    Ok(rules)
}

/// The rules a sigma hunt evaluated: its `rule.*` parameters, less those
/// below its `min_level` (the module skips them).
fn hunt_rules(hunt: &v1::Hunt) -> Vec<SigmaRule> {
    let rank = |level: &str| match level {
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "critical" => 4,
        _ => 0,
    };
    let min = hunt
        .params
        .get("min_level")
        .map_or(0, |l| rank(l.trim().to_ascii_lowercase().as_str()));
    let mut names: Vec<&String> = hunt
        .params
        .keys()
        .filter(|k| k.starts_with("rule."))
        .collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|name| parse_sigma_rules(&hunt.params[name], name))
        .filter(|rule| rank(&rule.level) >= min)
        .collect()
}

// ---------------------------------------------------------------- result

/// Module or Sigma rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectionKind {
    /// A hunt module whose descriptor declares the technique.
    Module,
    /// A Sigma rule tagged with the technique.
    SigmaRule,
}

/// One thing that can detect a technique, and how much it ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    /// Module or rule.
    pub kind: DetectionKind,
    /// `bruteforce@0.1.0`, or the rule's title.
    pub name: String,
    /// The module's digest, or the rule's id (or title when it has none).
    pub id: String,
    /// Hunts in the window in which it ran on at least one shard.
    pub runs: usize,
    /// Submission time of the latest of them (ms since the epoch).
    pub last_run_ms: Option<i64>,
    /// Distinct shards of the cluster it ran on successfully.
    pub shards: usize,
    /// `shards` / the cluster's shards, 0..=1.
    pub share: f64,
}

/// A technique, its detections and their combined reach.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TechniqueCoverage {
    /// `T1110.001`.
    pub id: String,
    /// From the catalog; `None` for an id it does not know.
    pub name: Option<String>,
    /// Tactic shortnames (a sub-technique without its own takes its parent's).
    pub tactics: Vec<String>,
    /// What can detect it, modules first.
    pub detections: Vec<Detection>,
    /// Distinct shards that any of them ran on.
    pub shards: usize,
    /// `shards` / the cluster's shards, 0..=1.
    pub share: f64,
}

/// A tactic's techniques.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TacticCoverage {
    /// `credential-access` (`unknown` for techniques the catalog cannot place).
    pub shortname: String,
    /// `TA0006` (empty for `unknown`).
    pub id: String,
    /// `Credential Access`.
    pub name: String,
    /// Techniques by id.
    pub techniques: Vec<TechniqueCoverage>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coverage {
    /// The window, in days back from `now_ms`.
    pub days: u32,
    /// When the report was made.
    pub now_ms: i64,
    /// Hunts submitted since then count.
    pub since_ms: i64,
    /// Shards in the cluster (the denominator of every share).
    pub cluster_shards: usize,
    /// Hunts in the window.
    pub hunts: usize,
    /// The catalog names and tactics come from.
    pub attack_version: &'static str,
    /// Tactics in matrix order; a technique of several tactics is under each.
    pub tactics: Vec<TacticCoverage>,
    /// Modules (`name@version`) whose techniques are unknown because no
    /// build of them was at hand to describe (see `--module-file`).
    pub undescribed_modules: Vec<String>,
}

impl Coverage {
    /// Every distinct technique, once.
    pub fn techniques(&self) -> impl Iterator<Item = &TechniqueCoverage> {
        let mut seen = BTreeSet::new();
        self.tactics
            .iter()
            .flat_map(|t| &t.techniques)
            .filter(move |t| seen.insert(t.id.clone()))
    }
}

/// A detection while it is being counted.
struct Tally {
    kind: DetectionKind,
    name: String,
    id: String,
    techniques: Vec<String>,
    runs: usize,
    last_run_ms: Option<i64>,
    shards: BTreeSet<String>,
}

impl Tally {
    fn ran(&mut self, submitted_ms: i64, shards: &BTreeSet<String>) {
        self.runs += 1;
        self.last_run_ms = Some(
            self.last_run_ms
                .map_or(submitted_ms, |t| t.max(submitted_ms)),
        );
        self.shards.extend(shards.iter().cloned());
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn module_name(info: &v1::ModuleInfo) -> String {
    format!("{}@{}", info.name, info.version)
}

/// Coverage from what the API returned: `modules` with their declared
/// techniques, `hunts` with (at least) their succeeded tasks, the
/// cluster's `shards`, Sigma `rules` that can detect (whether or not they
/// ran), over the `days` before `now_ms`.
///
/// A detection ran in a hunt submitted in the window when at least one of
/// the hunt's tasks succeeded; its share counts the distinct shards of the
/// cluster those tasks ran on (shards deleted since do not count, so a
/// share never exceeds 1).
pub fn compute(
    modules: &[DescribedModule],
    hunts: &[v1::Hunt],
    shards: &[v1::ShardInfo],
    rules: &[SigmaRule],
    now_ms: i64,
    days: u32,
) -> Coverage {
    let since_ms = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
    let cluster: BTreeSet<&str> = shards.iter().map(|s| s.name.as_str()).collect();
    // Keyed by kind and id so that the same rule from a file and from a
    // hunt's parameters is one detection.
    let mut tallies: BTreeMap<(DetectionKind, String), Tally> = BTreeMap::new();
    let mut undescribed = BTreeSet::new();
    let mut by_digest: HashMap<&str, &DescribedModule> = HashMap::new();
    for module in modules {
        by_digest.insert(module.info.digest.as_str(), module);
    }
    let mut add_module = |tallies: &mut BTreeMap<_, Tally>, info: &v1::ModuleInfo| {
        let described = by_digest.get(info.digest.as_str());
        let techniques = described.and_then(|m| m.techniques.clone());
        if techniques.is_none() {
            undescribed.insert(module_name(info));
        }
        tallies
            .entry((DetectionKind::Module, info.digest.clone()))
            .or_insert_with(|| Tally {
                kind: DetectionKind::Module,
                name: module_name(info),
                id: info.digest.clone(),
                techniques: techniques.unwrap_or_default(),
                runs: 0,
                last_run_ms: None,
                shards: BTreeSet::new(),
            })
            .id
            .clone()
    };
    let rule_tally = |rule: &SigmaRule| Tally {
        kind: DetectionKind::SigmaRule,
        name: rule.title.clone(),
        id: rule.key.clone(),
        techniques: rule.techniques.clone(),
        runs: 0,
        last_run_ms: None,
        shards: BTreeSet::new(),
    };
    for module in modules {
        add_module(&mut tallies, &module.info);
    }
    for rule in rules {
        tallies
            .entry((DetectionKind::SigmaRule, rule.key.clone()))
            .or_insert_with(|| rule_tally(rule));
    }
    let window: Vec<&v1::Hunt> = hunts
        .iter()
        .filter(|h| h.submitted_ms >= since_ms && h.submitted_ms <= now_ms)
        .collect();
    for hunt in &window {
        let Some(info) = hunt.module.as_ref() else {
            continue;
        };
        let ran: BTreeSet<String> = hunt
            .tasks
            .iter()
            .filter(|t| t.state == v1::TaskState::Succeeded as i32)
            .filter(|t| cluster.contains(t.shard.as_str()))
            .map(|t| t.shard.clone())
            .collect();
        // A module from a deleted build still counts, under its own name.
        let digest = add_module(&mut tallies, info);
        if ran.is_empty() {
            continue;
        }
        if let Some(tally) = tallies.get_mut(&(DetectionKind::Module, digest)) {
            tally.ran(hunt.submitted_ms, &ran);
        }
        if info.name == "sigma" {
            for rule in hunt_rules(hunt) {
                tallies
                    .entry((DetectionKind::SigmaRule, rule.key.clone()))
                    .or_insert_with(|| rule_tally(&rule))
                    .ran(hunt.submitted_ms, &ran);
            }
        }
    }

    // technique -> detections
    let mut techniques: BTreeMap<String, Vec<&Tally>> = BTreeMap::new();
    for tally in tallies.values() {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for id in &tally.techniques {
            // Malformed ids from a descriptor are left out, not guessed at.
            if let Some(id) = attack::normalize_technique(id) {
                ids.insert(id);
            }
        }
        for id in ids {
            techniques.entry(id).or_default().push(tally);
        }
    }
    let total = cluster.len();
    let mut by_tactic: BTreeMap<String, Vec<TechniqueCoverage>> = BTreeMap::new();
    for (id, tallies) in techniques {
        let info = attack::catalog().technique(&id);
        let (name, tactics) = info.map_or((None, Vec::new()), |i| (i.name, i.tactics));
        let mut detections: Vec<Detection> = tallies
            .iter()
            .map(|t| Detection {
                kind: t.kind,
                name: t.name.clone(),
                id: t.id.clone(),
                runs: t.runs,
                last_run_ms: t.last_run_ms,
                shards: t.shards.len(),
                share: share(t.shards.len(), total),
            })
            .collect();
        detections.sort_by(|a, b| (a.kind, &a.name, &a.id).cmp(&(b.kind, &b.name, &b.id)));
        let reached: BTreeSet<&String> = tallies.iter().flat_map(|t| &t.shards).collect();
        let coverage = TechniqueCoverage {
            name,
            detections,
            shards: reached.len(),
            share: share(reached.len(), total),
            tactics: tactics.clone(),
            id,
        };
        let keys = if tactics.is_empty() {
            vec!["unknown".to_owned()]
        } else {
            tactics
        };
        for key in keys {
            by_tactic.entry(key).or_default().push(coverage.clone());
        }
    }
    let mut tactics: Vec<TacticCoverage> = Vec::new();
    for (short, entry) in attack::catalog().tactics() {
        if let Some(techniques) = by_tactic.remove(short) {
            tactics.push(TacticCoverage {
                shortname: short.to_owned(),
                id: entry.id.clone(),
                name: entry.name.clone(),
                techniques,
            });
        }
    }
    // Tactics the catalog does not list (unknown techniques) go last.
    for (short, techniques) in by_tactic {
        tactics.push(TacticCoverage {
            name: if short == "unknown" {
                "Unknown tactic".to_owned()
            } else {
                short.clone()
            },
            shortname: short,
            id: String::new(),
            techniques,
        });
    }
    Coverage {
        days,
        now_ms,
        since_ms,
        cluster_shards: total,
        hunts: window.len(),
        attack_version: attack::ATTACK_VERSION,
        tactics,
        undescribed_modules: undescribed.into_iter().collect(),
    }
}

// ---------------------------------------------------------------- output

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// The report as table lines: one row per tactic, technique and detection.
pub fn table(coverage: &Coverage) -> Vec<String> {
    let mut rows = Vec::new();
    for tactic in &coverage.tactics {
        for technique in &tactic.techniques {
            for d in &technique.detections {
                rows.push(vec![
                    tactic.name.clone(),
                    technique.id.clone(),
                    technique.name.clone().unwrap_or_else(|| "?".to_owned()),
                    match d.kind {
                        DetectionKind::Module => "module".to_owned(),
                        DetectionKind::SigmaRule => "sigma".to_owned(),
                    },
                    d.name.clone(),
                    d.runs.to_string(),
                    crate::output::time(d.last_run_ms.unwrap_or(0)),
                    format!(
                        "{}/{} ({})",
                        d.shards,
                        coverage.cluster_shards,
                        percent(d.share)
                    ),
                    percent(technique.share),
                ]);
            }
        }
    }
    let mut lines = vec![format!(
        "ATT&CK coverage ({}), last {} days: {} hunts, {} shards in the cluster",
        coverage.attack_version, coverage.days, coverage.hunts, coverage.cluster_shards
    )];
    if rows.is_empty() {
        lines.push("no module or Sigma rule declares an ATT&CK technique".to_owned());
    } else {
        lines.extend(render_table(
            &[
                "TACTIC",
                "TECHNIQUE",
                "NAME",
                "KIND",
                "DETECTION",
                "RUNS",
                "LAST RUN",
                "SHARDS",
                "TECHNIQUE COVERAGE",
            ],
            rows,
        ));
    }
    if !coverage.undescribed_modules.is_empty() {
        // Module names are the uploaders' text: escaped like table cells.
        lines.push(
            crate::output::escape(&format!(
                "techniques unknown (no build at hand; pass it with --module-file): {}",
                coverage.undescribed_modules.join(", ")
            ))
            .into_owned(),
        );
    }
    lines
}

/// Gradient colours, red (0) to yellow to green (100): the Navigator's own
/// default spectrum, so the layer reads as users expect.
const GRADIENT: [&str; 3] = ["#ff6666", "#ffe766", "#8ec843"];

/// The report as an ATT&CK Navigator layer (format 4.5): one entry per
/// technique and tactic, scored with the percentage of shards its
/// detections ran on (0 for a technique that can be detected but did not
/// run in the window), the detections in the comment and metadata. Parents
/// of covered sub-techniques show their sub-techniques.
pub fn navigator_layer(coverage: &Coverage) -> Value {
    let mut entries = Vec::new();
    let mut listed: BTreeSet<(String, Option<String>)> = BTreeSet::new();
    let mut parents: BTreeSet<(String, Option<String>)> = BTreeSet::new();
    for technique in coverage.techniques() {
        // The tactic field pins the annotation to one column; a technique
        // the catalog cannot place is left to the Navigator (all columns).
        let tactics: Vec<Option<String>> = if technique.tactics.is_empty() {
            vec![None]
        } else {
            technique.tactics.iter().cloned().map(Some).collect()
        };
        let ran: Vec<&Detection> = technique.detections.iter().filter(|d| d.runs > 0).collect();
        let comment = format!(
            "{}. Can detect: {}. Ran in the last {} days: {}.",
            if ran.is_empty() {
                "Not run".to_owned()
            } else {
                format!(
                    "Ran on {} of {} shards",
                    technique.shards, coverage.cluster_shards
                )
            },
            technique
                .detections
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            coverage.days,
            if ran.is_empty() {
                "none".to_owned()
            } else {
                ran.iter()
                    .map(|d| format!("{} ({} runs, {} shards)", d.name, d.runs, d.shards))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let metadata: Vec<Value> = technique
            .detections
            .iter()
            .map(|d| {
                json!({
                    "name": match d.kind {
                        DetectionKind::Module => "module",
                        DetectionKind::SigmaRule => "sigma rule",
                    },
                    "value": format!("{}: {} runs, {}/{} shards", d.name, d.runs, d.shards, coverage.cluster_shards),
                })
            })
            .collect();
        let score = (technique.share * 100.0).round() as i64;
        for tactic in tactics {
            let mut entry = json!({
                "techniqueID": technique.id,
                "score": score,
                "comment": comment,
                "enabled": true,
                "metadata": metadata,
                "links": [{
                    "label": "ATT&CK",
                    "url": format!("https://attack.mitre.org/techniques/{}/", technique.id.replace('.', "/")),
                }],
            });
            if let (Some(tactic), Some(object)) = (&tactic, entry.as_object_mut()) {
                object.insert("tactic".to_owned(), json!(tactic));
            }
            entries.push(entry);
            listed.insert((technique.id.clone(), tactic.clone()));
            if let Some((parent, _)) = technique.id.split_once('.') {
                parents.insert((parent.to_owned(), tactic));
            }
        }
    }
    // Without this the Navigator folds sub-techniques away and a covered
    // T1110.001 is invisible under an unannotated T1110.
    for (parent, tactic) in parents {
        if let Some(entry) = entries.iter_mut().find(|e| {
            e["techniqueID"] == json!(parent)
                && e.get("tactic").and_then(Value::as_str) == tactic.as_deref()
        }) {
            entry["showSubtechniques"] = json!(true);
            continue;
        }
        if listed.contains(&(parent.clone(), tactic.clone())) {
            continue;
        }
        let mut entry = json!({
            "techniqueID": parent,
            "enabled": true,
            "showSubtechniques": true,
        });
        if let (Some(tactic), Some(object)) = (&tactic, entry.as_object_mut()) {
            object.insert("tactic".to_owned(), json!(tactic));
        }
        entries.push(entry);
    }
    let attack_major = coverage
        .attack_version
        .trim_start_matches("enterprise-v")
        .split('.')
        .next()
        .unwrap_or_default();
    json!({
        "name": format!("Quarry coverage, last {} days", coverage.days),
        "versions": {"attack": attack_major, "navigator": "5.1.0", "layer": "4.5"},
        "domain": "enterprise-attack",
        "description": format!(
            "Techniques that Quarry's hunt modules and Sigma rules can detect; the score is the percentage of the cluster's {} shards they ran on successfully in the {} days to {} ({} hunts).",
            coverage.cluster_shards, coverage.days, crate::output::time(coverage.now_ms), coverage.hunts
        ),
        "sorting": 3,
        "layout": {
            "layout": "side",
            "showID": true,
            "showName": true,
            "showAggregateScores": false,
            "countUnscored": false,
            "aggregateFunction": "max",
            "expandedSubtechniques": "annotated",
        },
        "hideDisabled": false,
        "techniques": entries,
        "gradient": {"colors": GRADIENT, "minValue": 0, "maxValue": 100},
        "legendItems": [
            {"label": "can detect, did not run", "color": GRADIENT[0]},
            {"label": "ran on some shards", "color": GRADIENT[1]},
            {"label": "ran on every shard", "color": GRADIENT[2]},
        ],
        "showTacticRowBackground": false,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": true,
        "selectSubtechniquesWithParent": false,
        "selectVisibleTechniques": false,
        "metadata": [
            {"name": "generated by", "value": "quarry coverage"},
            {"name": "window", "value": format!("{} to {}", crate::output::time(coverage.since_ms), crate::output::time(coverage.now_ms))},
            {"name": "cluster shards", "value": coverage.cluster_shards.to_string()},
            {"name": "undescribed modules", "value": if coverage.undescribed_modules.is_empty() { "none".to_owned() } else { coverage.undescribed_modules.join(", ") }},
        ],
        "links": [],
    })
}

// ---------------------------------------------------------------- gather

/// Modules to describe: bytes by digest, with where they came from.
type Builds = HashMap<String, (String, &'static [u8])>;

/// The builds this binary can describe without the cluster: the shipped
/// modules it embeds, by digest.
fn shipped_builds() -> Builds {
    quarry_hunt_modules::all()
        .iter()
        .map(|m| {
            let digest = quarry_worker::runtime::module_digest(m.wasm);
            (digest.as_str().to_owned(), (m.name.to_owned(), m.wasm))
        })
        .collect()
}

/// Asks each module in `wanted` (digests) that a build is at hand for
/// for its techniques, in the worker's sandbox. Runs on a blocking thread:
/// compiling a component takes a while.
async fn describe(
    wanted: BTreeSet<String>,
    mut builds: Builds,
    files: Vec<(PathBuf, Vec<u8>)>,
) -> Result<HashMap<String, Vec<String>>, CoverageError> {
    tokio::task::spawn_blocking(move || {
        let runtime = quarry_worker::runtime::Runtime::new(
            1,
            quarry_worker::runtime::RuntimeConfig::default(),
            None,
        )
        .map_err(|e| CoverageError::Runtime(e.to_string()))?;
        let mut out = HashMap::new();
        // Files first: a build named on the command line is asked even if
        // it is no module of the cluster, so that its errors show.
        for (path, bytes) in files {
            let digest = quarry_worker::runtime::module_digest(&bytes);
            let module = runtime
                .load(&digest, &bytes)
                .map_err(|e| CoverageError::Module {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            builds.remove(digest.as_str());
            out.insert(
                digest.as_str().to_owned(),
                module.description().techniques.clone(),
            );
        }
        for digest in wanted {
            if out.contains_key(&digest) {
                continue;
            }
            let Some((_, bytes)) = builds.get(&digest) else {
                continue;
            };
            let id = quarry_proto::ModuleDigest::new(digest.clone());
            // A shipped build that does not describe itself is a bug of
            // this binary, not of the report: leave it undescribed.
            if let Ok(module) = runtime.load(&id, bytes) {
                out.insert(digest, module.description().techniques.clone());
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| CoverageError::Runtime(e.to_string()))?
}

/// Hunts submitted at or after `since_ms`, each with its succeeded tasks.
async fn recent_hunts(client: &mut Client, since_ms: i64) -> Result<Vec<v1::Hunt>, CoverageError> {
    let mut hunts = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = client.list_hunts_page(HUNT_PAGE, &token).await?;
        // Newest first: once a whole page is older than the window, so is
        // everything after it.
        let any_recent = page.iter().any(|h| h.submitted_ms >= since_ms);
        hunts.extend(page.into_iter().filter(|h| h.submitted_ms >= since_ms));
        if next.is_empty() || !any_recent {
            break;
        }
        token = next;
    }
    let mut out = Vec::with_capacity(hunts.len());
    for hunt in hunts {
        let succeeded = hunt.task_counts.map_or(0, |c| c.succeeded);
        if succeeded == 0 {
            out.push(hunt);
            continue;
        }
        // ListHunts carries no tasks; the shards come from GetHunt.
        out.push(
            client
                .hunt_tasks(&hunt.hunt_id, 0, &[v1::TaskState::Succeeded])
                .await?,
        );
    }
    Ok(out)
}

/// Fetches modules, hunts of the window and shards, describes the modules
/// it has builds of (shipped ones, and `module_files`), and computes.
pub async fn gather(
    client: &mut Client,
    now_ms: i64,
    days: u32,
    rules: &[SigmaRule],
    module_files: Vec<(PathBuf, Vec<u8>)>,
) -> Result<Coverage, CoverageError> {
    let since_ms = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
    let modules = client.list_modules().await?;
    let shards = client.shards(HashMap::new()).await?;
    let hunts = recent_hunts(client, since_ms).await?;
    let mut infos: BTreeMap<String, v1::ModuleInfo> =
        modules.into_iter().map(|m| (m.digest.clone(), m)).collect();
    for hunt in &hunts {
        if let Some(info) = &hunt.module {
            infos
                .entry(info.digest.clone())
                .or_insert_with(|| info.clone());
        }
    }
    // Modules uploaded with their declared techniques (`quarry module
    // upload` sends them) need no local describe.
    let mut techniques = describe(
        infos
            .values()
            .filter(|info| info.techniques.is_empty())
            .map(|info| info.digest.clone())
            .collect(),
        shipped_builds(),
        module_files,
    )
    .await?;
    let described: Vec<DescribedModule> = infos
        .into_values()
        .map(|info| DescribedModule {
            techniques: if info.techniques.is_empty() {
                techniques.remove(&info.digest)
            } else {
                Some(info.techniques.clone())
            },
            info,
        })
        .collect();
    Ok(compute(&described, &hunts, &shards, rules, now_ms, days))
}

// ---------------------------------------------------------------- command

/// `--format`'s values.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum CoverageFormat {
    /// Aligned columns, per tactic, technique and detection.
    Table,
    /// An ATT&CK Navigator layer (format 4.5), to open in the Navigator.
    Navigator,
    /// The whole report as one JSON object.
    Json,
}

/// `quarry coverage` flags.
#[derive(Args)]
pub struct CoverageArgs {
    /// The window: hunts submitted in the last N days count as runs.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Output: table, navigator (an ATT&CK Navigator layer) or json
    /// (default: table, or json with `--output json`).
    #[arg(long, value_enum)]
    pub format: Option<CoverageFormat>,
    /// Sigma rule files, or directories of them (repeatable), that can
    /// detect even if no hunt ran them; rules a sigma hunt ran are read
    /// from its parameters anyway.
    #[arg(long = "sigma-rules", value_name = "DIR")]
    pub sigma_rules: Vec<PathBuf>,
    /// A build (`.wasm`) of a module uploaded to the cluster that is not
    /// shipped with quarry (repeatable), to learn the techniques it
    /// declares; matched to the cluster's modules by digest.
    #[arg(long = "module-file", value_name = "FILE")]
    pub module_files: Vec<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `quarry coverage`.
pub async fn run(args: CoverageArgs) -> anyhow::Result<()> {
    let mut rules = Vec::new();
    for path in &args.sigma_rules {
        rules.extend(load_sigma_rules(path)?);
    }
    let mut files = Vec::new();
    for path in &args.module_files {
        let bytes = std::fs::read(path).map_err(|source| CoverageError::Read {
            path: path.clone(),
            source,
        })?;
        files.push((path.clone(), bytes));
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut client = crate::client_args::connect(&args.client).await?;
    let coverage = gather(&mut client, now_ms, args.days, &rules, files).await?;
    let format = args.format.unwrap_or(match args.client.output {
        Format::Table => CoverageFormat::Table,
        Format::Json => CoverageFormat::Json,
    });
    match format {
        CoverageFormat::Table => table(&coverage).iter().for_each(|l| println!("{l}")),
        CoverageFormat::Navigator => {
            println!(
                "{}",
                serde_json::to_string_pretty(&navigator_layer(&coverage))?
            )
        }
        CoverageFormat::Json => println!("{}", serde_json::to_string(&coverage)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn module(name: &str, digest: &str, techniques: Option<&[&str]>) -> DescribedModule {
        DescribedModule {
            info: v1::ModuleInfo {
                name: name.to_owned(),
                version: "0.1.0".to_owned(),
                digest: digest.to_owned(),
                ..Default::default()
            },
            techniques: techniques.map(|t| t.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn shard(name: &str) -> v1::ShardInfo {
        v1::ShardInfo {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    fn task(shard: &str, state: v1::TaskState) -> v1::TaskStatus {
        v1::TaskStatus {
            shard: shard.to_owned(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn hunt(
        module: &DescribedModule,
        days_ago: i64,
        tasks: Vec<v1::TaskStatus>,
        params: &[(&str, &str)],
    ) -> v1::Hunt {
        v1::Hunt {
            hunt_id: format!("h-{days_ago}"),
            module: Some(module.info.clone()),
            submitted_ms: NOW - days_ago * DAY_MS,
            tasks,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    const RULE: &str = "title: Mimikatz Use\nid: 06d71506-7beb-4f22-8888-e2e5e2ca7fd8\nlevel: high\ntags:\n  - attack.credential_access\n  - attack.t1003.001\n  - attack.s0002\n";

    fn technique<'a>(c: &'a Coverage, id: &str) -> &'a TechniqueCoverage {
        c.techniques()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("{id} missing"))
    }

    #[test]
    fn sigma_rules_give_id_title_level_and_technique_tags() {
        let rules = parse_sigma_rules(RULE, "r.yml");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].key, "06d71506-7beb-4f22-8888-e2e5e2ca7fd8");
        assert_eq!(rules[0].title, "Mimikatz Use");
        assert_eq!(rules[0].level, "high");
        assert_eq!(rules[0].techniques, ["T1003.001"]);
        // No id: the title is the key; damaged YAML and untitled documents are skipped.
        let rules = parse_sigma_rules("title: A\ntags: [attack.t1059]\n---\nfoo: bar\n", "x");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].key, "A");
        assert!(parse_sigma_rules("title: [unclosed", "x").is_empty());
    }

    #[test]
    fn shares_count_distinct_succeeded_shards_in_the_window() {
        let brute = module("bruteforce", "d1", Some(&["T1110", "T1110.001"]));
        let beacon = module("beaconing", "d2", Some(&["T1071"]));
        let custom = module("custom", "d3", None);
        let shards: Vec<_> = ["s1", "s2", "s3", "s4"].into_iter().map(shard).collect();
        let hunts = vec![
            // Two runs over overlapping shards: 3 distinct shards.
            hunt(
                &brute,
                1,
                vec![
                    task("s1", v1::TaskState::Succeeded),
                    task("s2", v1::TaskState::Succeeded),
                    task("s3", v1::TaskState::Failed),
                ],
                &[],
            ),
            hunt(
                &brute,
                2,
                vec![
                    task("s2", v1::TaskState::Succeeded),
                    task("s3", v1::TaskState::Succeeded),
                    // A shard that is gone does not count.
                    task("gone", v1::TaskState::Succeeded),
                ],
                &[],
            ),
            // Outside the window.
            hunt(&beacon, 40, vec![task("s4", v1::TaskState::Succeeded)], &[]),
            // Failed only: not a run.
            hunt(&beacon, 3, vec![task("s4", v1::TaskState::Failed)], &[]),
            hunt(&custom, 1, vec![task("s4", v1::TaskState::Succeeded)], &[]),
        ];
        let c = compute(&[brute, beacon, custom], &hunts, &shards, &[], NOW, 30);
        assert_eq!(c.cluster_shards, 4);
        assert_eq!(c.hunts, 4);
        let t1110 = technique(&c, "T1110");
        assert_eq!(t1110.name.as_deref(), Some("Brute Force"));
        assert_eq!(t1110.tactics, ["credential-access"]);
        assert_eq!(t1110.detections.len(), 1);
        let d = &t1110.detections[0];
        assert_eq!(d.name, "bruteforce@0.1.0");
        assert_eq!((d.runs, d.shards), (2, 3));
        assert_eq!(d.last_run_ms, Some(NOW - DAY_MS));
        assert!((t1110.share - 0.75).abs() < 1e-9);
        // Can detect, did not run in the window.
        let t1071 = technique(&c, "T1071");
        assert_eq!((t1071.detections[0].runs, t1071.shards), (0, 0));
        assert_eq!(t1071.share, 0.0);
        assert_eq!(c.undescribed_modules, ["custom@0.1.0"]);
        // Tactics in matrix order, sub-technique placed by its parent's tactic.
        let order: Vec<&str> = c.tactics.iter().map(|t| t.shortname.as_str()).collect();
        assert_eq!(order, ["credential-access", "command-and-control"]);
        assert_eq!(technique(&c, "T1110.001").tactics, ["credential-access"]);
        // A shorter window drops the older run.
        let c1 = compute(
            &[module("bruteforce", "d1", Some(&["T1110"]))],
            &hunts,
            &shards,
            &[],
            NOW,
            1,
        );
        assert_eq!(technique(&c1, "T1110").detections[0].runs, 1);
        assert_eq!(technique(&c1, "T1110").shards, 2);
    }

    #[test]
    fn sigma_hunts_run_their_rules_and_rule_files_can_detect() {
        let sigma = module("sigma", "d9", Some(&[]));
        let below = "title: Low One\nlevel: low\ntags: [attack.t1059.001]\n";
        let hunts = vec![hunt(
            &sigma,
            1,
            vec![task("s1", v1::TaskState::Succeeded)],
            &[
                ("rule.a.yml", RULE),
                ("rule.b.yml", below),
                ("min_level", "medium"),
            ],
        )];
        let files = parse_sigma_rules(RULE, "rules/a.yml")
            .into_iter()
            .chain(parse_sigma_rules(
                "title: Not Run\ntags: [attack.t1021.002]\n",
                "rules/b.yml",
            ))
            .collect::<Vec<_>>();
        let c = compute(
            &[sigma],
            &hunts,
            &[shard("s1"), shard("s2")],
            &files,
            NOW,
            30,
        );
        let t = technique(&c, "T1003.001");
        assert_eq!(
            t.detections.len(),
            1,
            "file and hunt rule are one detection"
        );
        assert_eq!(t.detections[0].kind, DetectionKind::SigmaRule);
        assert_eq!((t.detections[0].runs, t.shards), (1, 1));
        assert!((t.share - 0.5).abs() < 1e-9);
        assert_eq!(technique(&c, "T1021.002").detections[0].runs, 0);
        // Below the hunt's min_level: the module skipped it.
        assert!(c.techniques().all(|t| t.id != "T1059.001"));
    }

    #[test]
    fn navigator_layer_follows_format_4_5() {
        let brute = module("bruteforce", "d1", Some(&["T1110.001"]));
        let dns = module("dns-tunnel", "d2", Some(&["T1071.004", "T9999"]));
        let hunts = vec![hunt(
            &brute,
            1,
            vec![task("s1", v1::TaskState::Succeeded)],
            &[],
        )];
        let c = compute(
            &[brute, dns],
            &hunts,
            &[shard("s1"), shard("s2")],
            &[],
            NOW,
            30,
        );
        let layer = navigator_layer(&c);
        assert_eq!(layer["versions"]["layer"], "4.5");
        assert_eq!(layer["versions"]["attack"], "18");
        assert!(
            layer["versions"]["navigator"]
                .as_str()
                .is_some_and(|v| v.starts_with("5."))
        );
        assert_eq!(layer["domain"], "enterprise-attack");
        assert!(layer["name"].is_string());
        assert_eq!(
            layer["gradient"]["colors"].as_array().map(Vec::len),
            Some(3)
        );
        assert!(
            layer["legendItems"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        );
        let entries = layer["techniques"].as_array().expect("techniques");
        let find = |id: &str| entries.iter().find(|e| e["techniqueID"] == id);
        let sub = find("T1110.001").expect("sub-technique");
        assert_eq!(sub["tactic"], "credential-access");
        assert_eq!(sub["score"], 50);
        assert!(
            sub["comment"]
                .as_str()
                .is_some_and(|c| c.contains("bruteforce@0.1.0"))
        );
        let parent = find("T1110").expect("parent shown");
        assert_eq!(parent["showSubtechniques"], true);
        assert!(
            parent.get("score").is_none(),
            "the parent itself is unscored"
        );
        assert_eq!(find("T1071.004").expect("dns")["score"], 0);
        // Unknown to the catalog: no tactic, the Navigator places it.
        assert!(find("T9999").expect("unknown").get("tactic").is_none());
        // Every entry names a technique in the Navigator's id syntax.
        assert!(entries.iter().all(|e| {
            e["techniqueID"]
                .as_str()
                .and_then(attack::normalize_technique)
                .is_some()
        }));
    }

    #[test]
    fn table_lists_tactic_technique_and_detection() {
        let brute = module("bruteforce", "d1", Some(&["T1110"]));
        let hunts = vec![hunt(
            &brute,
            1,
            vec![task("s1", v1::TaskState::Succeeded)],
            &[],
        )];
        let lines = table(&compute(&[brute], &hunts, &[shard("s1")], &[], NOW, 7));
        assert!(lines[0].contains("last 7 days: 1 hunts, 1 shards"));
        assert!(lines[1].starts_with("TACTIC"));
        let row = &lines[2];
        for cell in [
            "Credential Access",
            "T1110",
            "Brute Force",
            "module",
            "bruteforce@0.1.0",
            "1/1 (100%)",
        ] {
            assert!(row.contains(cell), "{row} lacks {cell}");
        }
        let empty = table(&compute(&[], &[], &[], &[], NOW, 7));
        assert!(empty[1].contains("no module or Sigma rule"));
    }
}
