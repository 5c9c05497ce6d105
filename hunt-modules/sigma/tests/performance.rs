//! The literal index against exhaustive evaluation, on real rules and real
//! events: the SigmaHQ rule set of the shared data, twice over (distinct
//! copies), against every event of the OTRF Windows captures. The indexed
//! evaluator must find exactly what evaluating every rule behind the
//! passing log-source gates finds. Both times are printed; the figures that
//! count come from `quarry bench sigma` (see docs/sigma.md).
//!
//! Skips visibly without the shared data, except under `CI=true`.

use std::time::Instant;

use serde_json::Value;
use sigma::{CompileOptions, EventView, RuleSet, loader};

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[test]
fn the_literal_index_finds_exactly_what_exhaustive_evaluation_finds() {
    let Some(data) = quarry_testdata::shared_data() else {
        return;
    };
    let params = loader::rule_params(&data.join("sigma/rules")).expect("rules");
    let copies: Vec<(String, &str)> = (0..2)
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
    let (literals, indexed) = set.indexed();

    // The OTRF captures are flat JSON documents: project them as the host
    // does (`@values`: every value, one per line).
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
                    .map(|f| match f.as_str() {
                        "@values" => doc.as_object().map(|map| {
                            map.values().filter_map(text).collect::<Vec<_>>().join("\n")
                        }),
                        name => doc.get(name).and_then(text),
                    })
                    .collect(),
            );
        }
    }

    let ids = |hits: Vec<sigma::Match<'_>>| hits.iter().map(|m| m.index).collect::<Vec<_>>();
    let started = Instant::now();
    let indexed_hits: Vec<Vec<usize>> = events
        .iter()
        .map(|values| ids(set.matches(&EventView::new(values))))
        .collect();
    let indexed_in = started.elapsed();
    let started = Instant::now();
    let exhaustive_hits: Vec<Vec<usize>> = events
        .iter()
        .map(|values| ids(set.matches_unindexed(&EventView::new(values))))
        .collect();
    let exhaustive_in = started.elapsed();
    let matches: usize = indexed_hits.iter().map(Vec::len).sum();
    println!(
        "{} rules ({} log-source groups, {indexed} of their variants indexed by {literals} \
         literals) compiled in {compiled_in:.1?}; {} events: indexed {indexed_in:.1?}, \
         exhaustive {exhaustive_in:.1?} (this build); {matches} matches",
        set.len(),
        set.gate_count(),
        events.len(),
    );
    assert!(set.len() >= 1_000, "{} rules compiled", set.len());
    assert!(events.len() >= 6_000, "{} events", events.len());
    assert!(indexed > set.len() / 2, "only {indexed} variants indexed");
    for (event, (indexed, exhaustive)) in indexed_hits.iter().zip(&exhaustive_hits).enumerate() {
        assert_eq!(indexed, exhaustive, "event {event}");
    }
    // Two copies of each rule: every match is found twice.
    assert_eq!(matches % 2, 0);
    assert!(matches > 0);
}
