//! The wasm build of the module over the recorded Zeek captures of the
//! shared data set (found through `quarry-testdata`), each capture's logs
//! ingested with the worker's own readers into one shard, with intel sets
//! made of indicators of the recorded attacks: the APT29 emulation's
//! payload server (JSON logs, `id_orig_h` spellings) and the LSASS
//! campaign's C2 and domain (TSV logs, `id.orig_h` spellings). The expected
//! matches are counted from the raw files, independently of the module.
//!
//! Without the data set the tests print why and pass, except under
//! `CI=true`, where missing data is a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use quarry_hunt_modules::IOC_SWEEP;
use quarry_module_testkit::{self as testkit, evidence as ev};
use quarry_worker::runtime::TaskOutput;
use serde_json::Value;

fn run_over(files: &[PathBuf], params: &[(&str, &str)]) -> TaskOutput {
    let shard = testkit::shard_of_files("capture", "zeek", files);
    testkit::run(IOC_SWEEP.wasm, &shard, params)
}

/// Findings per rule.
fn by_rule(output: &TaskOutput) -> BTreeMap<&str, usize> {
    let mut rules = BTreeMap::new();
    for f in &output.findings {
        *rules.entry(f.rule.as_str()).or_default() += 1;
    }
    rules
}

const APT29_SERVER: &str = "192.168.0.4";
const APT29_PAYLOAD_URL: &str = "http://192.168.0.4/webdav/python.exe";
/// The MD5 of a file the capture saw over SMB (a group policy `gpt.ini`).
const APT29_FILE_MD5: &str = "cc85d7649546d3c0b1607f761b73fec2";

#[test]
fn apt29_payload_server_address_url_and_file_hash_are_found() {
    let Some(files) = testkit::shared_files("logs/network/zeek_json_apt29_day1") else {
        return;
    };
    // The oracle, from the raw JSON lines: one finding per record, after
    // the most specific kind that matched (hash, URL, address). Files
    // records name their hosts in the `tx_hosts`/`rx_hosts` arrays.
    let (mut address, mut payload_requests, mut hashed, mut by_file_hosts) = (0, 0, 0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable capture");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: Value = serde_json::from_str(line).expect("JSON lines");
            let involves = |key: &str| record[key].as_str() == Some(APT29_SERVER);
            let lists = |key: &str| {
                record[key]
                    .as_array()
                    .is_some_and(|hosts| hosts.iter().any(|h| h.as_str() == Some(APT29_SERVER)))
            };
            let by_id = involves("id_orig_h") || involves("id_resp_h");
            let by_hosts = lists("tx_hosts") || lists("rx_hosts");
            if record["md5"].as_str() == Some(APT29_FILE_MD5) {
                hashed += 1;
            } else if by_id && record["uri"].as_str() == Some("/webdav/python.exe") {
                payload_requests += 1;
            } else if by_id || by_hosts {
                address += 1;
                by_file_hosts += usize::from(!by_id);
            }
        }
    }
    assert!(address > 100 && payload_requests > 0 && hashed > 0 && by_file_hosts > 0);

    let output = run_over(
        &files,
        &[
            ("intel.ips", APT29_SERVER),
            ("intel.urls", APT29_PAYLOAD_URL),
            ("intel.hashes", APT29_FILE_MD5),
        ],
    );
    let rules = by_rule(&output);
    assert_eq!(
        rules.get("ioc-sweep/url-match"),
        Some(&payload_requests),
        "{rules:?}"
    );
    assert_eq!(
        rules.get("ioc-sweep/hash-match"),
        Some(&hashed),
        "{rules:?}"
    );
    assert_eq!(rules.get("ioc-sweep/ip-match"), Some(&address), "{rules:?}");
    assert_eq!(output.findings.len(), address + payload_requests + hashed);
    let url = output
        .findings
        .iter()
        .find(|f| f.rule == "ioc-sweep/url-match")
        .expect("a payload request");
    assert_eq!(ev(url, "indicator"), Some(APT29_PAYLOAD_URL));
    assert_eq!(ev(url, "field"), Some("host+uri"));
    assert!(
        ev(url, "matches").is_some_and(|m| m.contains("ip 192.168.0.4 in ips")),
        "{url:#?}"
    );
}

/// Records of a Zeek TSV log as field maps (`-` and `(empty)` left out).
fn tsv_records(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut names: Vec<String> = Vec::new();
    let mut records = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("#fields\t") {
            names = header.split('\t').map(str::to_owned).collect();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let record = names
            .iter()
            .zip(line.split('\t'))
            .filter(|(_, v)| *v != "-" && *v != "(empty)")
            .map(|(k, v)| (k.clone(), v.to_owned()))
            .collect();
        records.push(record);
    }
    records
}

const LSASS_C2: &str = "10.0.5.13";
const LSASS_DOMAIN: &str = "pandalab.com";

#[test]
fn lsass_campaign_c2_and_domain_are_found_in_tsv_logs() {
    let Some(files) = testkit::shared_files("logs/network/zeek_tsv_lsass_campaign_01") else {
        return;
    };
    let (mut c2, mut domain) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable capture");
        for record in tsv_records(&text) {
            let involves = |key: &str| record.get(key).map(String::as_str) == Some(LSASS_C2);
            let queried = record.get("query").is_some_and(|q| {
                let q = q.to_ascii_lowercase();
                q == LSASS_DOMAIN || q.ends_with(&format!(".{LSASS_DOMAIN}"))
            });
            if queried {
                domain += 1;
            } else if involves("id.orig_h") || involves("id.resp_h") {
                c2 += 1;
            }
        }
    }
    assert!(c2 > 10 && domain > 0, "c2 {c2}, domain {domain}");

    let output = run_over(
        &files,
        &[
            ("intel.c2", LSASS_C2),
            ("intel.domains", LSASS_DOMAIN),
            ("ip_sets", "c2"),
        ],
    );
    let rules = by_rule(&output);
    assert_eq!(rules.get("ioc-sweep/ip-match"), Some(&c2), "{rules:?}");
    assert_eq!(
        rules.get("ioc-sweep/domain-match"),
        Some(&domain),
        "{rules:?}"
    );
    assert_eq!(output.findings.len(), c2 + domain);
    assert!(
        output
            .findings
            .iter()
            .filter(|f| f.rule == "ioc-sweep/ip-match")
            .all(|f| ev(f, "intel_set") == Some("c2")),
    );
}
