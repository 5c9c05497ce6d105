//! `deploy/grafana/quarry.json` is a dashboard Grafana imports, over the
//! metrics docs/observability.md lists and nothing else: valid JSON with a
//! Prometheus data-source variable used by every query, the four rows,
//! panels that fit the grid; every metric a query names is in the
//! documented table (a histogram by its `_bucket`/`_sum`/`_count` series)
//! and every documented metric has a panel. With `promtool` on PATH the
//! queries are also parsed by Prometheus's own parser. The sample scrape
//! configuration in deploy/prometheus matches deploy/local-cluster.sh's
//! default ports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The metrics table of docs/observability.md's "## Metrics" section:
/// name to type.
fn documented_metrics() -> BTreeMap<String, String> {
    let doc = read("docs/observability.md");
    let section = doc
        .split_once("\n## Metrics\n")
        .expect("docs/observability.md has a `## Metrics` section")
        .1;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut metrics = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        let kind = cells[2].to_owned();
        assert!(
            ["gauge", "counter", "histogram"].contains(&kind.as_str()),
            "{name}: type {kind:?}"
        );
        assert!(
            kind != "counter" || name.ends_with("_total"),
            "counter {name} ends in _total"
        );
        assert!(
            metrics.insert(name.clone(), kind).is_none(),
            "{name} is listed twice"
        );
    }
    assert!(
        metrics.len() >= 20,
        "only {} metrics documented",
        metrics.len()
    );
    metrics
}

/// Skips from `chars[i]` (an opening bracket) past its closing one.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == open {
            depth += 1;
        } else if chars[i] == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, aggregations, keywords, label names or inside label matchers,
/// ranges or strings.
fn metric_names(expr: &str) -> Vec<String> {
    // Aggregation operators may be followed by their grouping clause
    // (`sum by (le) (...)`) rather than by `(`.
    const KEYWORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_group(&chars, i, '{', '}'),
            '[' => i = skip_group(&chars, i, '[', ']'),
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let followed_by_paren = chars.get(next) == Some(&'(');
                if GROUPING.contains(&word.as_str()) {
                    if followed_by_paren {
                        i = skip_group(&chars, next, '(', ')');
                    }
                } else if !followed_by_paren && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers, including exponents such as 1e3.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for panel in panels {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(all_panels(nested));
        }
    }
    out
}

#[test]
fn the_metric_extractor_skips_functions_labels_and_matchers() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, instance) (rate(quarry_x_bucket{instance=~"$c", a="b"}[$__rate_interval])))"#
        ),
        vec!["quarry_x_bucket"]
    );
    assert_eq!(
        metric_names(
            r#"count(up{job=~"quarry.*"} == 0) or vector(0) / on (instance) group_left (module) b:rule"#
        ),
        vec!["up", "b:rule"]
    );
    assert_eq!(metric_names("sum without (x) (m) * 1e3"), vec!["m"]);
}

#[test]
fn the_dashboard_uses_only_documented_metrics_and_covers_them() {
    let documented = documented_metrics();
    let text = read("deploy/grafana/quarry.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("deploy/grafana/quarry.json is JSON");

    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");

    let panels = all_panels(dashboard["panels"].as_array().expect("panels"));
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        rows,
        [
            "Cluster health",
            "Hunts & tasks",
            "Workers & modules",
            "Triage"
        ]
    );
    let mut ids = BTreeSet::new();
    let mut exprs: Vec<String> = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: id reused"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().unwrap_or(99),
            grid["w"].as_u64().unwrap_or(99),
        );
        assert!(
            x + w <= 24 && grid["h"].as_u64().is_some(),
            "{title}: gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().expect("a PromQL expr");
            exprs.push(expr.to_owned());
        }
    }

    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            used.entry(name).or_default().push(expr.clone());
        }
    }
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let definition = variable["definition"].as_str().expect("definition");
        let metric = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("variable query {definition}: label_values(METRIC, LABEL)"));
        assert_eq!(variable["datasource"]["uid"], "${datasource}");
        used.entry(metric.trim().to_owned())
            .or_default()
            .push(definition.to_owned());
    }

    let base = |name: &str| -> Option<String> {
        if documented.contains_key(name) {
            return Some(name.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let stem = name.strip_suffix(suffix)?;
            (documented.get(stem).map(String::as_str) == Some("histogram")).then(|| stem.to_owned())
        })
    };
    let undocumented: Vec<String> = used
        .iter()
        .filter(|(name, _)| base(name).is_none())
        .map(|(name, exprs)| format!("{name} (in {})", exprs[0]))
        .collect();
    assert!(
        undocumented.is_empty(),
        "the dashboard uses metrics docs/observability.md does not list:\n{}",
        undocumented.join("\n")
    );
    let covered: BTreeSet<String> = used.keys().filter_map(|n| base(n)).collect();
    let missing: Vec<&String> = documented
        .keys()
        .filter(|n| !covered.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "documented metrics without a panel: {missing:?}"
    );
    println!(
        "{} panels, {} queries over {} documented metrics",
        panels.len(),
        exprs.len(),
        documented.len()
    );

    // Prometheus's own parser, where it is installed.
    let promtool = std::env::var_os("QUARRY_TOOLS_BIN")
        .map(|dir| PathBuf::from(dir).join("promtool"))
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        });
    let Some(promtool) = promtool else {
        eprintln!("promtool not installed: the queries were not parsed by Prometheus");
        return;
    };
    let mut rules = String::from("groups:\n  - name: quarry-dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$coordinator", ".*")
            .replace("$worker", ".*");
        rules.push_str(&format!(
            "      - record: quarry_dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("a string")
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    let output = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check rules refused a dashboard query:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_sample_scrape_config_matches_the_local_cluster_ports() {
    use yaml_rust2::YamlLoader;
    let script = read("deploy/local-cluster.sh");
    assert!(
        script.contains("\nBASE_PORT=7700\n"),
        "deploy/local-cluster.sh's default base port is 7700"
    );
    let text = read("deploy/prometheus/prometheus.yml");
    let docs = YamlLoader::load_from_str(&text).expect("prometheus.yml is YAML");
    let jobs: BTreeMap<String, Vec<String>> = docs[0]["scrape_configs"]
        .as_vec()
        .expect("scrape_configs")
        .iter()
        .map(|job| {
            let name = job["job_name"].as_str().expect("job_name").to_owned();
            let targets = job["static_configs"][0]["targets"]
                .as_vec()
                .expect("targets")
                .iter()
                .map(|t| t.as_str().expect("a target").to_owned())
                .collect();
            (name, targets)
        })
        .collect();
    let expect = |offset: u16| -> Vec<String> {
        (1..=3)
            .map(|n| format!("127.0.0.1:{}", 7700 + offset + n))
            .collect()
    };
    assert_eq!(
        jobs.get("quarry-coordinator"),
        Some(&expect(20)),
        "{jobs:?}"
    );
    assert_eq!(jobs.get("quarry-worker"), Some(&expect(30)), "{jobs:?}");
}
