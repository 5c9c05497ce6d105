//! The wasm build of the module over the recorded Zeek captures of the
//! shared data set (found through `quarry-testdata`), each capture's logs
//! ingested with the worker's own readers (Zeek JSON and TSV) into one
//! shard: small lab captures of attack emulations (minutes of traffic, no
//! timer-driven C2 and no DNS tunnel in them). The module, run with the default parameters,
//! must read their records (the task log counts them, in both the JSON
//! spelling `id_orig_h` and the TSV one `id.orig_h`) and stay quiet.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use quarry_hunt_modules::DNS_TUNNEL;
use quarry_module_testkit as testkit;
use quarry_worker::runtime::TaskOutput;

const CAPTURES: [&str; 2] = [
    "logs/network/zeek_json_apt29_day1",
    "logs/network/zeek_tsv_lsass_campaign_01",
];

fn run_over(relative: &str, params: &[(&str, &str)]) -> Option<TaskOutput> {
    let files = testkit::shared_files(relative)?;
    let shard = testkit::shard_of_files("capture", "zeek", &files);
    Some(testkit::run(DNS_TUNNEL.wasm, &shard, params))
}

#[test]
fn recorded_zeek_captures_are_read_and_quiet() {
    for capture in CAPTURES {
        let Some(output) = run_over(capture, &[]) else {
            return;
        };
        println!(
            "{capture}: {} events, {} matched",
            output.events_scanned, output.events_matched
        );
        for f in &output.findings {
            println!("  {} {} {:?}", f.rule, f.title, f.evidence);
        }
        for line in &output.log {
            println!("  log: {line}");
        }
        assert!(
            output.findings.is_empty(),
            "{capture}: {:#?}",
            output.findings
        );
        assert!(
            output.log.iter().any(|l| l.contains("[debug]"))
                && !output.log.iter().any(|l| l.contains("] 0 DNS queries")),
            "{capture}: the module read no records: {:?}",
            output.log
        );
    }
}
