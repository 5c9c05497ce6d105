//! Coverage of the real SigmaHQ rule set in the shared data: how many rules
//! parse, how many the module can evaluate, and why the rest cannot be,
//! grouped by reason. A file of several documents counts each document;
//! correlation rules count among the evaluable when they compile. Prints the report; asserts floors measured on the
//! data set (not 100%: some rules need log sources or features the module
//! does not have, and the report says which).
//!
//! Skips visibly without the shared data, except under `CI=true`.

use std::collections::BTreeMap;

use sigma::{CompileOptions, FieldTable, RuleSet, loader, rule};

/// Measured on the 510 rules of the shared data set; see docs/sigma.md.
const MIN_PARSED: usize = 510;
const MIN_EVALUABLE: usize = 510;

#[test]
fn sigmahq_rules_parse_and_compile() {
    let Some(data) = quarry_testdata::shared_data() else {
        return;
    };
    let params = loader::rule_params(&data.join("sigma/rules")).expect("read the rules");
    let files = params.len();
    // Documents (a file that is not YAML at all counts once), and those
    // that parse as a detection rule or a correlation.
    let (mut total, mut parsed) = (0, 0);
    for (_, text) in &params {
        match rule::parse_documents(text) {
            Ok(docs) => {
                total += docs.len();
                parsed += docs.iter().filter(|d| d.is_ok()).count();
            }
            Err(_) => total += 1,
        }
    }
    let set = RuleSet::compile(
        params.iter().map(|(n, t)| (n.as_str(), t.as_str())),
        &CompileOptions::default(),
    );
    let evaluable = set.len() + set.correlation_count();

    let mut reasons: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for rejected in set.rejected() {
        reasons
            .entry(rejected.error.reason())
            .or_default()
            .push(&rejected.source);
    }
    println!("Sigma coverage over {total} rules ({files} files) of the shared data set:");
    println!(
        "  parsed:    {parsed} ({:.1}%)",
        100.0 * parsed as f64 / total as f64
    );
    println!(
        "  evaluable: {evaluable} ({:.1}%)",
        100.0 * evaluable as f64 / total as f64
    );
    println!(
        "  of which correlations: {} (over {} base rules)",
        set.correlation_count(),
        set.correlations().flat_map(|c| c.series.iter()).count()
    );
    println!("  log-source groups: {}", set.gate_count());
    let catalogue = FieldTable::catalogue().len();
    println!(
        "  fields projected by a planned task: {} (the static catalogue: {catalogue})",
        set.fields().len()
    );
    println!("  not evaluable, by reason:");
    for (reason, sources) in &reasons {
        println!("    {:>4}  {reason}", sources.len());
        for source in sources.iter().take(5) {
            println!("            {source}");
        }
    }
    for rejected in set.rejected() {
        println!("  {}: {}", rejected.source, rejected.error);
    }
    assert_eq!(
        evaluable + set.rejected().len(),
        total,
        "every rule is counted once"
    );
    assert!(
        parsed >= MIN_PARSED,
        "{parsed} rules parsed, floor {MIN_PARSED}"
    );
    assert!(
        evaluable >= MIN_EVALUABLE,
        "{evaluable} rules evaluable, floor {MIN_EVALUABLE}"
    );
}
