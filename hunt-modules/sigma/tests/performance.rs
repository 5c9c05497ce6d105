//! Performance sanity of the evaluator (native, as the test profile builds
//! it): the SigmaHQ rule set of the shared data, four times over (about 2,000
//! compiled rules), against every event of the OTRF Windows captures. Rules
//! are compiled once and grouped by log source, so an event is checked only
//! against the rules whose log source it belongs to.
//!
//! Skips visibly without the shared data, except under `CI=true`.

use std::time::{Duration, Instant};

use serde_json::Value;
use sigma::{CompileOptions, EventView, RuleSet, loader};

/// Debug build on a shared 2-core machine; the real figure is printed.
const BUDGET: Duration = Duration::from_secs(60);

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[test]
fn thousands_of_rules_over_thousands_of_events() {
    let Some(data) = quarry_testdata::shared_data() else {
        return;
    };
    let params = loader::rule_params(&data.join("sigma/rules")).expect("rules");
    let copies: Vec<(String, &str)> = (0..4)
        .flat_map(|copy| {
            params
                .iter()
                .map(move |(name, text)| (format!("{name}#{copy}"), text.as_str()))
        })
        .collect();

    let started = Instant::now();
    let set = RuleSet::compile(
        copies.iter().map(|(n, t)| (n.as_str(), *t)),
        &CompileOptions::default(),
    );
    let compiled_in = started.elapsed();

    // The OTRF captures are flat JSON documents: project them as the host does.
    let mut events: Vec<Vec<Option<String>>> = Vec::new();
    let dir = data.join("logs/windows/mordor");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("mordor logs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let body = std::fs::read_to_string(&file).expect("read");
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let doc: Value = serde_json::from_str(line).expect("JSON line");
            events.push(
                set.fields()
                    .names()
                    .iter()
                    .map(|f| doc.get(f.as_str()).and_then(text))
                    .collect(),
            );
        }
    }

    let started = Instant::now();
    let mut matches = 0usize;
    for values in &events {
        matches += set.matches(&EventView::new(values)).len();
    }
    let evaluated_in = started.elapsed();
    println!(
        "{} rules ({} log-source groups) compiled in {compiled_in:.1?}; {} events evaluated in \
         {evaluated_in:.1?} ({:.0} events/s, {:.0} rule-event pairs/s); {matches} matches",
        set.len(),
        set.gate_count(),
        events.len(),
        events.len() as f64 / evaluated_in.as_secs_f64(),
        (events.len() * set.len()) as f64 / evaluated_in.as_secs_f64(),
    );
    assert!(set.len() >= 2_000, "{} rules compiled", set.len());
    assert!(events.len() >= 6_000, "{} events", events.len());
    // Four copies of each rule: every match is found four times.
    assert_eq!(matches % 4, 0);
    assert!(matches > 0);
    assert!(
        compiled_in + evaluated_in < BUDGET,
        "{compiled_in:?} + {evaluated_in:?} over {BUDGET:?}"
    );
}
