//! `quarry demo`: a throwaway local cluster, the shipped brute-force hunt
//! over the demo shards, and a check of its findings against the attacks
//! planted in the demo data; then a `rare-process` hunt whose merged stack
//! shows the intruders' tools, each seen on one host of the fleet.

use crate::cluster::{LocalCluster, LocalClusterConfig, upload_shipped_modules};
use crate::output::{self, Output};
use quarry_client::{Client, HuntRequest};
use quarry_proto::v1;
use std::net::SocketAddr;
use std::process::ExitCode;

/// The module the demo runs.
pub const DEMO_MODULE: &str = "bruteforce";

/// The stacking module the demo runs second, and its aggregate.
pub const STACK_MODULE: &str = "rare-process";
const STACK_AGGREGATE: &str = "rare_process_images";

/// What the demo's intruders run after getting in, one host each (see
/// `quarry_worker::demo`): the stack must list them as rare.
pub const INTRUDER_TOOLS: &[&str] = &["ntdsutil.exe", "whoami.exe", "net.exe", "nltest.exe"];

/// Intruder tools the merged stack of a `rare-process` hunt does not list
/// as rare.
pub fn missed_tools(hunt: &v1::Hunt) -> Vec<&'static str> {
    let rare: Vec<&str> = hunt
        .aggregates
        .iter()
        .filter(|a| a.name == STACK_AGGREGATE)
        .filter_map(quarry_proto::aggregate::rare_values)
        .flatten()
        .map(|(value, _hosts)| value)
        .collect();
    INTRUDER_TOOLS
        .iter()
        .copied()
        .filter(|tool| {
            !rare
                .iter()
                .any(|value| value.ends_with(&format!("\\{tool}")))
        })
        .collect()
}

/// Planted attacks the findings did not report, as readable lines.
pub fn missed_attacks(findings: &[v1::Finding]) -> Vec<String> {
    quarry_worker::demo::PLANTED
        .iter()
        .filter(|attack| {
            !findings.iter().any(|f| {
                f.shard == attack.shard
                    && f.entity
                        .to_ascii_lowercase()
                        .contains(&attack.account.to_ascii_lowercase())
            })
        })
        .map(|a| format!("{} on {} from {}", a.account, a.shard, a.source_ip))
        .collect()
}

/// Runs the demo; the exit code says whether every planted attack was found.
pub async fn run(format: Output) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new().prefix("quarry-demo-").tempdir()?;
    let say = |text: String| {
        if format == Output::Table {
            eprintln!("{text}");
        }
    };
    say(format!(
        "starting a local cluster (1 coordinator, 2 workers) in {}",
        dir.path().display()
    ));
    let cluster = LocalCluster::start(LocalClusterConfig::demo(
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await?;
    let result = async {
        let mut client = Client::connect(&cluster.url()).await?;
        upload_shipped_modules(&mut client).await?;
        let shards = client.shards(Default::default()).await?;
        let events: u64 = shards.iter().map(|s| s.event_count).sum();
        say(format!(
            "API at {} (plaintext, loopback only: a development cluster); {} shards with {} events on {} workers",
            cluster.url(),
            shards.len(),
            events,
            cluster.workers().len()
        ));
        let submitted = client
            .submit_hunt(
                HuntRequest::new(DEMO_MODULE)
                    .selector("env", "demo")
                    .description("quarry demo"),
            )
            .await?;
        say(format!(
            "hunt {} submitted: {DEMO_MODULE} over {} shards",
            submitted.hunt_id, submitted.task_count
        ));
        let hunt = client
            .wait(&submitted.hunt_id, |p| output::progress(format, p))
            .await?;
        let findings = client.findings(&hunt.hunt_id).await?;
        output::hunt(format, &hunt);
        if format == Output::Table {
            println!();
        }
        output::findings(format, &findings);

        // Stacking: images seen on one host of the whole fleet, merged by
        // the coordinator from every shard's partial stack.
        let submitted = client
            .submit_hunt(
                HuntRequest::new(STACK_MODULE)
                    .selector("env", "demo")
                    .param("max_hosts", "1")
                    .description("quarry demo: stacking"),
            )
            .await?;
        say(String::new());
        say(format!(
            "hunt {} submitted: {STACK_MODULE} (binaries seen on at most 1 host) over {} shards",
            submitted.hunt_id, submitted.task_count
        ));
        let stacked = client
            .wait(&submitted.hunt_id, |p| output::progress(format, p))
            .await?;
        match format {
            Output::Table => output::aggregates_table(
                &stacked
                    .aggregates
                    .iter()
                    .filter(|a| a.name == STACK_AGGREGATE)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            Output::Json => output::hunt(format, &stacked),
        }
        anyhow::Ok((hunt, findings, stacked))
    }
    .await;
    cluster.shutdown().await;
    let (hunt, findings, stacked) = result?;
    let missed = missed_attacks(&findings);
    if hunt.state != v1::HuntState::Completed as i32 {
        eprintln!("demo hunt did not complete: {}", hunt.reason);
        return Ok(ExitCode::FAILURE);
    }
    if !missed.is_empty() {
        eprintln!("demo hunt missed planted attacks: {}", missed.join("; "));
        return Ok(ExitCode::FAILURE);
    }
    if stacked.state != v1::HuntState::Completed as i32 {
        eprintln!("demo stacking hunt did not complete: {}", stacked.reason);
        return Ok(ExitCode::FAILURE);
    }
    let missed_tools = missed_tools(&stacked);
    if !missed_tools.is_empty() {
        eprintln!(
            "demo stacking hunt did not list the intruders' tools as rare: {}",
            missed_tools.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    say(format!(
        "all {} planted attacks found; the intruders' tools ({}) are in the rare tail",
        quarry_worker::demo::PLANTED.len(),
        INTRUDER_TOOLS.join(", ")
    ));
    Ok(ExitCode::SUCCESS)
}
