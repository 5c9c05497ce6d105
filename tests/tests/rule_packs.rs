//! Sigma rule packs end to end (docs/sigma.md#rule-packs): real SigmaHQ
//! rules from the shared data are imported as a pack into a real
//! coordinator (RocksDB in a temp dir, gRPC on loopback); a real worker
//! holding a real attack simulation (OTRF's LSASS dump through comsvcs.dll)
//! runs the shipped `sigma` module bound to the pack. Asserted: the
//! findings are those of the same hunt sent the rules as parameters
//! (`--rules`); the stored hunt carries one small binding, not the rules;
//! the worker fetches the pack once for any number of hunts; a pack
//! deleted (forced) under a waiting hunt fails its task, naming the pack.
//!
//! Needs the shared data: skips visibly without it, fails under `CI=true`.

use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::{SIGMA, test_modules};
use quarry_proto::v1;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(180);

/// A finding as the module reports it, without the ids the coordinator
/// gives it: what both hunts must agree on.
fn comparable(findings: &[v1::Finding]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|f| {
            let mut evidence: Vec<(String, String)> = f
                .evidence
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            evidence.sort();
            format!(
                "{} | {} | {} | {} | {} | {:?} | {:?} | {:?}",
                f.rule,
                f.title,
                f.entity,
                f.timestamp_ms,
                f.severity,
                f.techniques,
                f.offsets,
                evidence
            )
        })
        .collect()
}

async fn run(
    client: &mut Client,
    request: HuntRequest,
) -> anyhow::Result<(v1::Hunt, Vec<v1::Finding>)> {
    let submitted = client.submit_hunt(request).await?;
    let hunt = tokio::time::timeout(WAIT, client.wait(&submitted.hunt_id, |_| {})).await??;
    let findings = client.findings(&submitted.hunt_id).await?;
    Ok((hunt, findings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hunt_bound_to_a_rule_pack_runs_its_rules_from_one_fetch() -> anyhow::Result<()> {
    let Some(shared) = quarry_testdata::shared_data() else {
        return Ok(());
    };
    let rule_dirs: Vec<PathBuf> = ["process_access", "process_creation"]
        .iter()
        .map(|d| shared.join("sigma/rules/windows").join(d))
        .collect();
    let events = std::fs::read_to_string(
        shared.join("logs/windows/mordor/T1003.001_lsass_dump_comsvcs_powershell.jsonl"),
    )?;
    let dir = tempfile::tempdir()?;
    let cluster = quarry_tests::one_worker(dir.path(), "lsass", &events, None).await;
    let mut client = Client::connect(&cluster.url).await?;
    client
        .upload_module(SIGMA.name, SIGMA.version, "", SIGMA.wasm)
        .await?;

    // `quarry sigma import DIR DIR --name win`, as the CLI reads them.
    let read = quarry_cli::sigma_cmd::read_rules(&rule_dirs)?;
    let files: Vec<v1::RuleFile> = read
        .files
        .iter()
        .map(|(path, text)| v1::RuleFile {
            path: path.clone(),
            text: text.clone(),
        })
        .collect();
    let rule_bytes: usize = read.files.values().map(String::len).sum();
    let imported = client
        .import_rule_pack("win", files.clone(), "windows/process_*")
        .await?;
    let pack = imported.pack.clone().expect("the pack");
    assert_eq!((pack.version, imported.unchanged), (1, false));
    assert_eq!(pack.rules as usize, read.files.len());
    assert_eq!(pack.bytes as usize, rule_bytes);
    assert_eq!(pack.digest.len(), 64);
    // The same rules again keep the version.
    let again = client.import_rule_pack("win", files, "again").await?;
    assert!(again.unchanged, "{again:?}");
    assert_eq!(again.pack.map(|p| p.version), Some(1));

    // (a) The same rules as parameters (`--rules DIR DIR`) find the same.
    let mut by_params = HuntRequest::new("sigma").shard("lsass");
    for dir in &rule_dirs {
        for (name, text) in quarry_testdata::sigma_rule_params(dir) {
            by_params = by_params.param(&name, &text);
        }
    }
    let (direct, direct_findings) = run(&mut client, by_params).await?;
    assert_eq!(direct.state, v1::HuntState::Completed as i32, "{direct:?}");
    assert_eq!(cluster.worker.rule_packs_fetched(), 0);
    let (bound, bound_findings) = run(
        &mut client,
        HuntRequest::new("sigma").shard("lsass").rule_pack("win"),
    )
    .await?;
    assert_eq!(bound.state, v1::HuntState::Completed as i32, "{bound:?}");
    assert!(
        !direct_findings.is_empty(),
        "the LSASS dump is found by the shared rules"
    );
    assert_eq!(comparable(&bound_findings), comparable(&direct_findings));
    eprintln!(
        "{} findings from {} rules ({rule_bytes} bytes) either way",
        bound_findings.len(),
        pack.rules
    );

    // (b) The stored hunt (its definition in the raft log and every task
    // assignment) holds one binding, not the rules.
    let stored = client.hunt(&bound.hunt_id).await?;
    let binding = format!("1:{}", pack.digest);
    assert_eq!(
        stored.params.iter().collect::<Vec<_>>(),
        [(&"rule-pack-ref.win".to_owned(), &binding)]
    );
    let params_bytes: usize = stored.params.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(params_bytes < 100, "{params_bytes} bytes of parameters");
    let direct_bytes: usize = direct.params.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(
        direct_bytes > rule_bytes,
        "the other hunt shipped the rules"
    );

    // (c) Fetched once: a second hunt on the worker uses the cache.
    assert_eq!(cluster.worker.rule_packs_fetched(), 1);
    let (second, second_findings) = run(
        &mut client,
        HuntRequest::new("sigma").shard("lsass").rule_pack("win@1"),
    )
    .await?;
    assert_eq!(second.state, v1::HuntState::Completed as i32, "{second:?}");
    assert_eq!(second_findings.len(), bound_findings.len());
    assert_eq!(
        cluster.worker.rule_packs_fetched(),
        1,
        "the second hunt fetched the pack again"
    );

    // What the listing and `show` tell.
    let listed = client.list_rule_packs().await?;
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["win"]
    );
    let shown = client.get_rule_pack("win", 0, true).await?;
    assert_eq!(shown.files.len(), pack.rules as usize);
    assert_eq!(shown.versions, [1]);
    assert!(shown.used_by.is_empty(), "{:?}", shown.used_by);

    // Refusals that say what to do: an unknown pack; a rule given both as
    // a parameter and in the pack.
    let unknown = client
        .submit_hunt(HuntRequest::new("sigma").shard("lsass").rule_pack("nope"))
        .await
        .expect_err("no such pack");
    assert!(
        unknown.to_string().contains("no rule pack is named nope")
            && unknown.to_string().contains("quarry sigma import"),
        "{unknown}"
    );
    let (path, text) = read.files.iter().next().expect("a rule");
    let twice = client
        .submit_hunt(
            HuntRequest::new("sigma")
                .shard("lsass")
                .rule_pack("win")
                .param(&format!("rule.win/{path}"), text),
        )
        .await
        .expect_err("a rule twice");
    assert!(
        twice
            .to_string()
            .contains(&format!("rule.win/{path} is given twice")),
        "{twice}"
    );

    // (d) A pack deleted under a hunt that has not run yet fails its task,
    // naming the pack. The worker's one slot is held by a module that
    // spins until its CPU budget ends, so the bound hunt waits.
    let gone = client
        .import_rule_pack(
            "gone",
            vec![v1::RuleFile {
                path: path.clone(),
                text: text.clone(),
            }],
            "one rule",
        )
        .await?;
    assert_eq!(gone.pack.map(|p| p.version), Some(1));
    let spin = test_modules::RUNAWAY_LOOP;
    client
        .upload_module(spin.name, spin.version, "", spin.wasm)
        .await?;
    let busy = client
        .submit_hunt(
            HuntRequest::new(spin.name)
                .shard("lsass")
                .limits(4_000, 0, 0)
                .retries(1, 0),
        )
        .await?;
    let started = std::time::Instant::now();
    while cluster.worker.running_tasks() == 0 {
        assert!(started.elapsed() < WAIT, "the spinning task never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = client
        .submit_hunt(
            HuntRequest::new("sigma")
                .shard("lsass")
                .rule_pack("gone")
                .retries(1, 0),
        )
        .await?;
    let refused = client
        .delete_rule_pack("gone", 0, false)
        .await
        .expect_err("a hunt uses it");
    assert!(
        refused
            .to_string()
            .contains(&format!("hunt {}", waiting.hunt_id))
            && refused.to_string().contains("--force"),
        "{refused}"
    );
    assert_eq!(client.delete_rule_pack("gone", 0, true).await?, [1]);
    assert_eq!(
        cluster.worker.running_tasks(),
        1,
        "the spinning task still held the slot when the pack went"
    );
    let failed = tokio::time::timeout(WAIT, client.wait(&waiting.hunt_id, |_| {})).await??;
    assert_eq!(failed.state, v1::HuntState::Failed as i32, "{failed:?}");
    let text = format!("{failed:?}");
    assert!(
        text.contains("rule pack gone version 1") && text.contains("deleted"),
        "{text}"
    );
    tokio::time::timeout(WAIT, client.wait(&busy.hunt_id, |_| {})).await??;

    // Imports and deletions are in the audit trail with the pack they named.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = client.list_audit(v1::ListAuditRequest::default()).await?;
        let seen = |rpc: &str, target: &str| {
            page.records
                .iter()
                .any(|r| r.rpc.ends_with(rpc) && r.target == target)
        };
        if seen("ImportRulePack", "rule pack win")
            && seen("DeleteRulePack", "rule pack gone (forced)")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", page.records);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
    Ok(())
}
