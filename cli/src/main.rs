//! `quarry`: the one binary. It parses flags and wires the crates together;
//! the logic lives in the library crates.

use anyhow::Context as _;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use quarry_cli::client_args::{ClientArgs, Format, TlsArgs, connect, out, parse_pair, parse_time};
use quarry_cli::cluster::{LocalCluster, LocalClusterConfig, upload_shipped_modules};
use quarry_cli::output::{self, Output};
use quarry_client::{Client, HuntRequest};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  quarry demo                          # throwaway cluster + demo hunt, prints findings
  quarry dev --data-dir ./quarry-data  # local cluster on 127.0.0.1:7700 until Ctrl-C
  quarry hunt submit bruteforce --selector env=demo --wait
  quarry hunt results h-12 --output json";

/// Quarry: distributed threat hunting with sandboxed WebAssembly hunt modules.
#[derive(Parser)]
#[command(name = "quarry", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (RUST_LOG syntax), for example `info` or `quarry=debug`.
    #[arg(long, global = true, env = "QUARRY_LOG", default_value = "warn")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator (raft + RocksDB) serving the gRPC API.
    #[command(
        after_help = "Examples:\n  quarry coordinator --data-dir ./quarry-data/coordinator   # development: plaintext on 127.0.0.1:7700\n  # production: TLS (certificates from `quarry certs`), one line per host\n  quarry coordinator --node-id 1 --listen 0.0.0.0:7700 --advertise-url https://10.0.0.5:7700 --peer 2=https://10.0.0.6:7700 --peer 3=https://10.0.0.7:7700 --tls-ca ca.pem --tls-cert coordinator-1.pem --tls-key coordinator-1.key\n  # a new member, added through any current one (it receives a snapshot):\n  quarry coordinator --node-id 4 --listen 0.0.0.0:7700 --advertise-url https://10.0.0.8:7700 --join https://10.0.0.5:7700 --tls-ca ca.pem --tls-cert coordinator-4.pem --tls-key coordinator-4.key"
    )]
    Coordinator {
        /// This node's raft id (non-zero, unique in the group).
        #[arg(long, env = "QUARRY_NODE_ID", default_value_t = 1)]
        node_id: u64,
        /// Another founding coordinator of the group, `ID=URL` (repeatable),
        /// e.g. `--peer 2=http://10.0.0.6:7700` (comma-separated in
        /// QUARRY_PEER). Without peers or --join: a single-node group.
        #[arg(long = "peer", value_name = "ID=URL", env = "QUARRY_PEER", value_delimiter = ',', value_parser = parse_peer)]
        peers: Vec<(u64, String)>,
        /// Join an existing group through the URL of any of its coordinators
        /// (only when the data directory is empty; a restarted member is
        /// already in the group).
        #[arg(long, value_name = "URL", env = "QUARRY_JOIN", conflicts_with = "peers", value_parser = parse_url)]
        join: Option<String>,
        /// The URL other coordinators and clients reach this one at
        /// (default: http://LISTEN; required when listening on 0.0.0.0).
        #[arg(long, value_name = "URL", env = "QUARRY_ADVERTISE_URL", value_parser = parse_url)]
        advertise_url: Option<String>,
        /// Compact the raft log after this many applied entries (the state
        /// machine in RocksDB is the snapshot; lagging followers get it
        /// streamed).
        #[arg(long, env = "QUARRY_LOG_COMPACT_AFTER", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
        log_compact_after: u64,
        /// Finished hunts kept, newest first: older ones are deleted with
        /// their findings (0: no count limit).
        #[arg(long, env = "QUARRY_RETAIN_HUNTS", default_value_t = quarry_coordinator::server::DEFAULT_RETAIN_HUNTS)]
        retain_hunts: usize,
        /// Finished hunts are deleted with their findings this long after
        /// they ended, e.g. 7d (0s: whatever their age).
        #[arg(long, env = "QUARRY_RETAIN_FOR", default_value = "30d", value_parser = humantime::parse_duration)]
        retain_for: Duration,
        /// Audit records are let go this long after they were made (0s:
        /// whatever their age); the leader's setting applies.
        #[arg(long, env = "QUARRY_AUDIT_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
        audit_retention: Duration,
        /// Audit records kept at most, the oldest going first (0: no limit).
        /// Every replica holds them in memory: about 300 bytes each.
        #[arg(long, env = "QUARRY_AUDIT_MAX_RECORDS", default_value_t = quarry_coordinator::audit::DEFAULT_MAX_RECORDS)]
        audit_max_records: u64,
        /// Directory for RocksDB (raft log and state machine).
        #[arg(
            long,
            env = "QUARRY_DATA_DIR",
            default_value = "./quarry-data/coordinator"
        )]
        data_dir: PathBuf,
        /// Address to serve gRPC on (any but a loopback address needs TLS).
        #[arg(long, env = "QUARRY_LISTEN", default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        config: quarry_cli::config::ConfigArgs,
    },
    /// Run a worker that holds shards and runs hunt tasks, or ingest logs into its shards.
    #[command(
        after_help = "Examples:\n  quarry worker --id worker-a --data-dir /var/lib/quarry/worker --coordinator https://10.0.0.5:7700 --listen 0.0.0.0:7701 --tls-ca ca.pem --tls-cert worker-worker-a.pem --tls-key worker-worker-a.key\n  quarry worker ingest --data-dir /var/lib/quarry/worker --shard dc01-security --label env=prod Security.evtx"
    )]
    Worker(WorkerArgs),
    /// Run a local cluster (one coordinator, two workers) in this process.
    ///
    /// Demo shards with planted attacks are generated on first start; the
    /// shipped hunt modules are uploaded. Stop with Ctrl-C. `quarry dev
    /// scenario` writes the week-long scenario dataset instead.
    #[command(
        after_help = "Examples:\n  quarry dev --data-dir ./quarry-data\n  quarry hunt submit bruteforce --selector env=demo --wait\n  quarry dev scenario --out ./scenario"
    )]
    Dev(DevArgs),
    /// Start a throwaway local cluster, run the demo hunt, print its findings.
    #[command(after_help = "Example:\n  quarry demo\n  quarry demo --output json")]
    Demo {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Submit, follow and inspect hunts.
    #[command(
        subcommand,
        after_help = "Example:\n  quarry hunt submit bruteforce --selector env=demo --wait"
    )]
    Hunt(HuntCommand),
    /// The triage queue: alerts and incidents ranked by score, verdicts,
    /// suppressions and triage as code.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry triage list\n  quarry triage show A-12\n  quarry triage verdict A-12 false-positive --comment \"backup job\"\n  quarry triage apply triage.yaml --dry-run"
    )]
    Triage(quarry_cli::triage_cmd::TriageCommand),
    /// Every event that mentions one entity around a time or an alert,
    /// across hosts and sources, in time order (table, JSON lines or CSV).
    Pivot(quarry_cli::pivot_cmd::PivotArgs),
    /// Ask a question in the hunt query language (docs/queries.md): on the
    /// cluster's shards as a hunt of the `query` module, over local log
    /// files (--logs), or show its compiled plan (--dry-run).
    #[command(
        after_help = "Examples:\n  quarry query 'where EventID == 4625 | stats count() by TargetUserName'\n  quarry query 'where EventID == 4688 and CommandLine contains \"nltest\" | stats count() by Computer, User' --selector env=prod --since 2026-11-20T00:00:00Z\n  quarry query 'where Image endswith \"\\\\rundll32.exe\" | rare ParentImage' --logs sysmon.evtx --output csv\n  quarry query 'where EventID == 4624 and LogonType == 3 | stats dc(Computer) as hosts by TargetUserName' --dry-run"
    )]
    Query(quarry_cli::query_cmd::QueryArgs),
    /// Write, build, test locally, upload and list hunt modules.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry module new watch-admins && cd watch-admins\n  quarry module build\n  quarry module test target/wasm32-wasip2/release/watch_admins.wasm --logs Security.evtx\n  quarry module upload target/wasm32-wasip2/release/watch_admins.wasm"
    )]
    Module(ModuleCommand),
    /// List the cluster's shards (ingest logs with `quarry worker ingest`).
    #[command(
        subcommand,
        after_help = "Example:\n  quarry shard list --selector env=demo"
    )]
    Shard(ShardCommand),
    /// Cluster status, workers and coordinator membership.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry cluster status --output json\n  quarry cluster add-coordinator --node-id 4 --url https://10.0.0.8:7700\n  quarry cluster remove-coordinator --node-id 2"
    )]
    Cluster(ClusterCommand),
    /// Certificates for a TLS cluster: a CA, then one certificate per
    /// coordinator, worker and caller.
    #[command(
        subcommand,
        after_help = "Examples:
  quarry certs init --dir ./pki
  quarry certs issue --dir ./pki --role coordinator --name 1 --host 10.0.0.5
  quarry certs issue --dir ./pki --role admin --name ops"
    )]
    Certs(quarry_cli::certs_cmd::CertsCommand),
    /// Bearer tokens for API callers without a client certificate
    /// (automation, scripts): create, list, revoke. Admins only.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry token create --name nightly-ci --role automation --expires 90d\n  quarry token list\n  quarry token revoke tok-3f9a1c0d5e7b2a41"
    )]
    Token(quarry_cli::token_cmd::TokenCommand),
    /// The audit trail: every mutating call, accepted or refused, and
    /// every refused call (who, role, RPC, target, outcome, time). Admins only.
    #[command(
        after_help = "Examples:\n  quarry audit\n  quarry audit --since 7d --principal hunter:alice\n  quarry audit --since 2026-12-01T00:00:00Z --refused --output json"
    )]
    Audit(quarry_cli::audit_cmd::AuditArgs),
    /// The cluster's intel store: import STIX 2.1 bundles, MISP events,
    /// CSV columns or plain lists as named, versioned indicator sets; hunts
    /// use them with `--intel-set NAME`.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry intel import apt-x --format stix apt-x-bundle.json\n  quarry intel list\n  quarry hunt submit ioc-sweep --selector env=prod --intel-set apt-x"
    )]
    Intel(quarry_cli::intel_cmd::IntelCommand),
    /// Sigma rule packs: rule directories imported as named, versioned
    /// packs in the cluster's store; hunts and schedules name a pack with
    /// `--rule-pack` and carry a reference to it, not the rules.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry sigma import sigma/rules/windows --name windows\n  quarry sigma list\n  quarry sigma show windows --rules\n  quarry hunt submit sigma --selector os=windows --rule-pack windows"
    )]
    Sigma(quarry_cli::sigma_cmd::SigmaCommand),
    /// Share results with other tools: a hunt's findings as JSON lines,
    /// CSV, or a STIX 2.1 bundle (sightings of matched indicators and
    /// ATT&CK techniques, observed data for the entities).
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry export findings h-12 --format stix > h-12.stix.json\n  quarry export findings h-12 --format csv > h-12.csv"
    )]
    Export(quarry_cli::share::ExportCommand),
    /// Recurring hunts: a hunt template plus a cron expression or an
    /// interval; each run scans only the events ingested since the last.
    #[command(
        subcommand,
        after_help = "Examples:
  quarry schedule create nightly-rare rare-process --selector env=prod --cron '0 3 * * *' --tz Europe/Berlin
  quarry schedule create sweep ioc-sweep --selector env=prod --intel-set apt-x --every 15m
  quarry schedule list
  quarry schedule runs nightly-rare"
    )]
    Schedule(ScheduleCommand),
    /// ATT&CK coverage: per tactic and technique, the modules and Sigma
    /// rules that can detect it, which ran in the last N days and on what
    /// share of the shards (table, JSON, or an ATT&CK Navigator layer).
    #[command(
        after_help = "Examples:\n  quarry coverage\n  quarry coverage --days 7 --sigma-rules ./sigma/rules\n  quarry coverage --format navigator > coverage-layer.json"
    )]
    Coverage(quarry_cli::coverage::CoverageArgs),
    /// Configuration files of the servers: `quarry coordinator --config
    /// FILE` and `quarry worker --config FILE` read one TOML format.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry config example coordinator > coordinator.toml\n  quarry config check coordinator.toml\n  quarry coordinator --config coordinator.toml --print-config"
    )]
    Config(quarry_cli::config::ConfigCommand),
    /// Benchmarks: `quarry bench scan` measures ingest and scan rates,
    /// `quarry bench scheduler` raft commits, task placement and failover,
    /// `quarry bench state` findings at scale and coordinator memory,
    /// `quarry bench sigma` the sigma module's rate over real logs,
    /// `quarry bench precision` the shipped modules' findings on real data.
    #[command(
        subcommand,
        after_help = "Examples:\n  quarry bench scan --events 500000\n  quarry bench scheduler\n  quarry bench sigma --rules ./rules --logs ./logs --replicate 5\n  quarry bench precision"
    )]
    Bench(quarry_cli::bench::BenchCommand),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DevArgs {
    #[command(subcommand)]
    action: Option<DevAction>,
    /// Root directory of the cluster's state.
    #[arg(long, default_value = "./quarry-data")]
    data_dir: PathBuf,
    /// Coordinator address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
}

#[derive(Subcommand)]
enum DevAction {
    /// Write the scenario dataset: a week of logs of a small company
    /// (Windows Security/System and Sysmon JSON lines, Linux auth.log, Zeek
    /// conn/dns/http TSV) with three planted multi-step intrusions among
    /// benign look-alikes, an intel feed, and manifest.json with the ground
    /// truth and the proposed shards (see docs/scenario.md). The same seed
    /// gives the same bytes everywhere.
    #[command(
        after_help = "Example:\n  quarry dev scenario --out ./scenario\n  quarry worker ingest --shard zeek-conn --label env=scenario ./scenario/zeek/conn.log"
    )]
    Scenario {
        /// Directory to write into (created if missing; files of an
        /// earlier run are overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the random choices (the planted intrusions are there
        /// whatever the seed).
        #[arg(long, default_value_t = quarry_worker::scenario::DEFAULT_SEED)]
        seed: u64,
        /// Routine background activity in percent of the default amount.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        noise_percent: u32,
    },
}

/// Metrics of the server commands.
#[derive(Args)]
struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g.
    /// `127.0.0.1:9700` (plain HTTP, no credentials: bind it where only
    /// your Prometheus reaches). Off when unset. OTLP export is separate:
    /// it follows OTEL_EXPORTER_OTLP_ENDPOINT (docs/observability.md).
    #[arg(long, value_name = "ADDR", env = "QUARRY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Installs the process's meter provider, telling the operator where
    /// the endpoint is.
    async fn start(
        &self,
        service: &str,
    ) -> anyhow::Result<quarry_telemetry::metrics::MetricsGuard> {
        let metrics = quarry_telemetry::metrics::init_metrics(service, self.metrics_listen).await?;
        if let Some(addr) = metrics.endpoint() {
            println!("metrics at http://{addr}/metrics");
        }
        Ok(metrics)
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct WorkerArgs {
    #[command(subcommand)]
    action: Option<WorkerAction>,
    #[command(flatten)]
    run: WorkerRun,
}

#[derive(Args)]
struct WorkerRun {
    /// Worker id, unique in the cluster.
    #[arg(long, env = "QUARRY_ID", required = true)]
    id: Option<String>,
    /// Directory holding `shards/` and the compiled-module cache.
    #[arg(long, env = "QUARRY_DATA_DIR", default_value = "./quarry-data/worker")]
    data_dir: PathBuf,
    /// Coordinator URL.
    #[arg(long, env = "QUARRY_COORDINATOR", default_value = quarry_client::DEFAULT_COORDINATOR)]
    coordinator: String,
    /// Address of the worker's own gRPC server (ingest, health,
    /// reflection; any but a loopback address needs TLS).
    #[arg(long, env = "QUARRY_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tasks to run at once.
    #[arg(long, env = "QUARRY_SLOTS", default_value_t = 4)]
    slots: u32,
    /// On SIGTERM or Ctrl-C the worker takes no new tasks and lets the
    /// running ones finish for up to this long (e.g. `30s`, `2m`); it then
    /// stops those still running and hands them back to the coordinator,
    /// which runs them on another worker holding the shard at once (not
    /// counted as failed). Give the service manager more time than this
    /// to stop the worker (systemd TimeoutStopSec, Kubernetes
    /// terminationGracePeriodSeconds): about 20 s more.
    #[arg(long, env = "QUARRY_SHUTDOWN_GRACE", default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    config: quarry_cli::config::ConfigArgs,
}

#[derive(Subcommand)]
enum WorkerAction {
    /// Ingest log files into a shard of this worker's store (creates the shard
    /// or appends to it). Formats: jsonl, evtx, syslog (RFC 3164/5424,
    /// auth.log), zeek-json, zeek-tsv, auditd; detected per file when --format is left
    /// out. Malformed records are kept aside with their position and reported.
    #[command(
        after_help = "Examples:\n  quarry worker ingest --shard dc01-security --label env=prod --label os=windows Security.evtx\n  quarry worker ingest --shard gw-auth --format syslog /var/log/auth.log /var/log/auth.log.1\n  quarry worker ingest --worker http://127.0.0.1:7701 --shard gw-auth /var/log/auth.log"
    )]
    Ingest {
        /// Shard name (lowercase letters, digits, `.`, `_`, `-`).
        #[arg(long)]
        shard: String,
        /// Label `key=value` (repeatable), used by hunt scope selectors.
        #[arg(long = "label", value_parser = parse_pair)]
        labels: Vec<(String, String)>,
        /// Input format (jsonl, evtx, syslog, zeek-json, zeek-tsv, auditd); detected when omitted.
        #[arg(long)]
        format: Option<String>,
        /// The worker's data directory (written directly: only while no
        /// worker runs on it; see --worker).
        #[arg(long, default_value = "./quarry-data/worker")]
        data_dir: PathBuf,
        /// Send the files to the running worker at this gRPC URL (its
        /// --listen address, e.g. http://127.0.0.1:7701) instead of writing
        /// its data directory, which the running worker holds locked.
        #[arg(long, value_parser = parse_url, conflicts_with = "data_dir")]
        worker: Option<String>,
        /// Files to ingest, in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rewrite shards stored by older versions in the current block format
    /// (column blocks: smaller, and scans decode only the fields a module
    /// reads). Old blocks stay readable without it. Runs on the data
    /// directory of a stopped worker; crash-safe, segment by segment, and a
    /// second run changes nothing.
    #[command(
        after_help = "Examples:\n  quarry worker migrate --data-dir ./quarry-data/worker\n  quarry worker migrate --data-dir /var/lib/quarry/worker --shard dc01-security"
    )]
    Migrate {
        /// The worker's data directory (the worker must be stopped: it
        /// holds the directory locked).
        #[arg(long, default_value = "./quarry-data/worker")]
        data_dir: PathBuf,
        /// Only this shard (repeatable); every shard when omitted.
        #[arg(long = "shard")]
        shards: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Create a recurring hunt: the hunt flags of `quarry hunt submit` plus
    /// a trigger. Each run scans, per shard, only the events ingested since
    /// the previous successful run (a failed shard is scanned again next
    /// time); findings go to triage like any hunt's.
    #[command(after_help = "Examples:
  quarry schedule create nightly-rare rare-process --selector env=prod --cron '0 3 * * *' --tz Europe/Berlin
  quarry schedule create sweep ioc-sweep --selector env=prod --intel-set apt-x --every 15m --missed skip
  quarry schedule create brute bruteforce --selector os=windows --every 1h --overlap-events 1000
  quarry schedule create nightly-sigma sigma --selector os=windows --rule-pack windows@latest --cron '0 3 * * *'
  quarry schedule create dc-from-new-hosts --query 'where EventID == 4624 and LogonType == 3 | stats dc(Computer) as hosts by TargetUserName | where hosts > 20' --selector role=dc --every 1h --severity high")]
    Create(Box<CreateScheduleArgs>),
    #[command(flatten)]
    Other(quarry_cli::schedule_cmd::ScheduleCommand),
}

/// `quarry schedule create` flags.
#[derive(Args)]
struct CreateScheduleArgs {
    #[command(flatten)]
    schedule: quarry_cli::schedule_cmd::ScheduleArgs,
    #[command(flatten)]
    template: HuntTemplateArgs,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum HuntCommand {
    /// Submit a hunt: run MODULE over the shards in scope.
    #[command(
        after_help = "Examples:\n  quarry hunt submit bruteforce --selector env=demo --wait\n  quarry hunt submit bruteforce@0.1.0 --shard win-dc01-security --param threshold=10\n  quarry hunt submit bruteforce --selector env=prod --dry-run\n  quarry hunt submit bruteforce --selector env=prod --canary 5% --failure-threshold 3\n  quarry hunt submit bruteforce --selector env=prod --deadline 30m --max-attempts 5\n  quarry hunt submit bruteforce --selector env=prod --max-concurrency 20\n  quarry hunt submit bruteforce --selector env=prod --max-hunt-findings 100000\n  quarry hunt submit ioc-sweep --selector env=prod --intel hashes=bad-hashes.txt --intel domains=c2-domains.txt\n  quarry hunt submit ioc-sweep --selector env=prod --intel-set feodo-ips --intel-set misp-phishing\n  quarry hunt submit sigma --selector os=windows --rule-pack windows\n  quarry hunt submit sigma --selector os=windows --rule-pack windows@2 --rules ./extra-rules"
    )]
    Submit(Box<SubmitArgs>),
    /// Show a hunt's state, its task counts and its per-shard tasks.
    #[command(
        after_help = "Examples:\n  quarry hunt status h-12\n  quarry hunt status h-12 --tasks 0\n  quarry hunt status h-12 --task-state failed --task-state pending"
    )]
    Status {
        /// Hunt id.
        hunt: String,
        /// Show at most this many tasks (0: every task; a large hunt is
        /// fetched 1000 at a time).
        #[arg(long, default_value_t = 100)]
        tasks: u32,
        /// Show only tasks in this state (repeatable).
        #[arg(long = "task-state", value_enum)]
        task_states: Vec<TaskStateArg>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a hunt's findings.
    #[command(after_help = "Example:\n  quarry hunt results h-12 --output json")]
    Results {
        /// Hunt id.
        hunt: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a running hunt.
    #[command(after_help = "Example:\n  quarry hunt cancel h-12 --reason 'wrong scope'")]
    Cancel {
        /// Hunt id.
        hunt: String,
        /// Why (recorded on the hunt).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused hunt (circuit breaker tripped or canary failed).
    #[command(
        after_help = "The circuit breaker counts failures from zero again; a failed canary no\nlonger holds back the other shards.\n\nExample:\n  quarry hunt resume h-12"
    )]
    Resume {
        /// Hunt id.
        hunt: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a hunt as portable JSON (module name, version and digest,
    /// parameters, scope, limits, policy) for `quarry hunt import` on
    /// another cluster.
    #[command(after_help = "Example:\n  quarry hunt export h-12 > weekly-sweep.json")]
    Export {
        /// Hunt id.
        hunt: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Submit a hunt written by `quarry hunt export`, after checking that
    /// this cluster has the same module build (same sha256).
    #[command(
        after_help = "Examples:\n  quarry hunt import weekly-sweep.json\n  quarry hunt import weekly-sweep.json --dry-run\n\nStored intel sets travel by name: this cluster's set of that name is used.\nRule packs travel by name and content: this cluster needs a version of the\npack holding the same rules (`quarry sigma import DIR --name NAME`)."
    )]
    Import {
        /// The exported hunt.
        file: PathBuf,
        /// Only check and preview the scope; submit nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a finished hunt with its tasks and findings.
    #[command(
        after_help = "A running hunt is refused: cancel it first. Coordinators also delete\nfinished hunts by themselves (see `quarry coordinator --retain-hunts\n--retain-for`).\n\nExample:\n  quarry hunt delete h-12"
    )]
    Delete {
        /// Hunt id.
        hunt: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List recent hunts, newest first.
    #[command(after_help = "Example:\n  quarry hunt list --limit 20")]
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `quarry hunt submit` flags (boxed: they outweigh every other command).
#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    template: HuntTemplateArgs,
    /// Follow progress until the hunt ends, then print its findings.
    #[arg(long)]
    wait: bool,
    /// Only preview: the shards, events and bytes in scope and an
    /// estimate from past runs of the module; nothing is submitted.
    #[arg(long, conflicts_with = "wait")]
    dry_run: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// What a hunt runs: the module, its scope, parameters, limits and policy
/// (`quarry hunt submit`, and each run of `quarry schedule create`).
#[derive(Args)]
struct HuntTemplateArgs {
    /// Module: `name`, `name@version` or `sha256:<digest>` (a schedule
    /// may give --query instead).
    module: Option<String>,
    /// Shard label selector `key=value` (repeatable; all must match).
    #[arg(long = "selector", value_parser = parse_pair)]
    selectors: Vec<(String, String)>,
    /// Shard name (repeatable).
    #[arg(long = "shard")]
    shards: Vec<String>,
    /// Module parameter `key=value` (repeatable).
    #[arg(long = "param", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    /// Intel set `NAME=FILE`, one indicator per line (repeatable): stored
    /// once as a one-off set (`oneoff-<hash>` in `quarry intel list`) and
    /// seen by modules such as ioc-sweep as the set NAME.
    #[arg(long = "intel", value_parser = quarry_cli::intel::intel_param)]
    intel: Vec<(String, String)>,
    /// A stored intel set (`quarry intel import`) to look values up in, by
    /// name (repeatable): the hunt uses its latest version.
    #[arg(long = "intel-set")]
    intel_sets: Vec<String>,
    /// Sigma rules for the `sigma` module: a rule file or a directory of
    /// `.yml`/`.yaml` files (repeatable), sent as `rule.<path>` parameters.
    /// For many rules, or rules used again, import them once as a pack
    /// and use --rule-pack.
    #[arg(long = "rules", value_name = "PATH")]
    rules: Vec<PathBuf>,
    /// A stored Sigma rule pack (`quarry sigma import`) for the `sigma`
    /// module (repeatable): NAME (its latest version now) or NAME@VERSION.
    /// The hunt carries a reference (version and sha256), not the rules;
    /// workers fetch the pack once and give the module its files as
    /// `rule.NAME/PATH`. A schedule keeps the version current when it is
    /// created; NAME@latest makes each run take the latest. Combines with
    /// --rules; a rule given both ways is refused.
    #[arg(long = "rule-pack", value_name = "NAME[@VERSION]")]
    rule_packs: Vec<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-11-20T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// CPU budget per task, e.g. 30s (default 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    cpu: Option<Duration>,
    /// Memory cap per task in MiB (default 256).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Findings kept per task (default 10000); more are dropped and the
    /// task says so.
    #[arg(long)]
    max_findings: Option<u32>,
    /// Output bytes per task (default: the worker's maximum); a task
    /// producing more fails with "output limit".
    #[arg(long)]
    max_task_bytes: Option<u64>,
    /// Findings kept for the whole hunt (default 1000000); beyond it the
    /// hunt's status names the limit instead of growing.
    #[arg(long)]
    max_hunt_findings: Option<u64>,
    /// Bytes of findings kept for the whole hunt (default 256 MiB).
    #[arg(long)]
    max_hunt_bytes: Option<u64>,
    /// Attempts per task before its shard is reported failed (default 3).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Wait before the first retry, doubling at each further one
    /// (default 1s, at most 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    retry_backoff: Option<Duration>,
    /// Time after which unfinished shards are given up and the hunt ends
    /// partially completed, naming them (default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// Run a canary first: N shards or P% of them; the rest follow once
    /// the canary tasks succeed (a failed canary pauses the hunt).
    #[arg(long, value_parser = parse_canary)]
    canary: Option<Canary>,
    /// Module failures (sandbox kills, traps, output limits) that pause
    /// the hunt (default 5); `quarry hunt resume` goes on.
    #[arg(long)]
    failure_threshold: Option<u32>,
    /// Tasks of this hunt running at once (default: no cap).
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Task starts per second for this hunt (default: no cap).
    #[arg(long)]
    max_tasks_per_second: Option<u32>,
    /// Priority (higher runs first).
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Free-text description.
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Create a hunt-module crate: Cargo.toml, a small working hunt with a
    /// unit test, and a README on building and testing it.
    ///
    /// Inside a Quarry checkout the crate depends on the checkout's
    /// sdk/quarry-sdk by path; elsewhere pass --sdk.
    #[command(
        after_help = "Examples:\n  quarry module new watch-admins                # ./watch-admins, SDK of this checkout\n  quarry module new watch-admins --dir hunt-modules\n  quarry module new watch-admins --sdk ~/src/quarry/sdk/quarry-sdk\n\nThen:\n  cd watch-admins && cargo test && quarry module build"
    )]
    New {
        /// Module name: lowercase letters, digits and `-` (also the crate name).
        name: String,
        /// Directory to create the crate in (as DIR/NAME).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path to the quarry-sdk crate (default: sdk/quarry-sdk of the
        /// Quarry checkout around DIR or the current directory).
        #[arg(long, env = "QUARRY_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Build a module crate to a wasm32-wasip2 component (release), validate
    /// it as a worker would (instantiate against the WIT world, describe()),
    /// and print its path, size and sha256 digest.
    #[command(
        after_help = "Examples:\n  quarry module build                      # the crate in the current directory\n  quarry module build hunt-modules/watch-admins\n  quarry module build --target-dir /tmp/wasm-target --output json\n\nNeeds the wasm target: rustup target add wasm32-wasip2"
    )]
    Build {
        /// The crate directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Cargo target directory (default: cargo's, usually PATH/target).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Run a module locally over log files, with the worker's sandbox and
    /// default limits: ingest the files into a temporary shard (any ingest
    /// format), scan it, print findings, aggregates, malformed records and
    /// failures. No cluster needed; exits non-zero when the module fails.
    #[command(
        after_help = "Examples:\n  quarry module test target/wasm32-wasip2/release/watch_admins.wasm --logs Security.evtx\n  quarry module test my_hunt.wasm --logs auth.log auth.log.1 --format syslog --params threshold=3\n  quarry module test my_hunt.wasm --logs events.jsonl --params '{\"threshold\": 3, \"users\": [\"alice\", \"bob\"]}' --output json"
    )]
    Test {
        /// The module (.wasm component).
        module: PathBuf,
        /// Log files, ingested in order into one shard.
        #[arg(long, num_args = 1.., required = true)]
        logs: Vec<PathBuf>,
        /// Input format (jsonl, evtx, syslog, zeek-json, zeek-tsv, auditd); detected per file when omitted.
        #[arg(long)]
        format: Option<String>,
        /// Module parameters: `key=value`, or a JSON object (repeatable).
        #[arg(long = "params", visible_alias = "param")]
        params: Vec<String>,
        /// Intel set `NAME=FILE`, one indicator per line (repeatable), as
        /// `quarry hunt submit --intel` ships it.
        #[arg(long = "intel", value_parser = quarry_cli::intel::intel_param)]
        intel: Vec<(String, String)>,
        /// Sigma rules for the `sigma` module: a rule file or a directory
        /// of `.yml`/`.yaml` files (repeatable), passed as `rule.<path>`
        /// parameters.
        #[arg(long = "rules", value_name = "PATH")]
        rules: Vec<PathBuf>,
        /// CPU budget, e.g. 30s (default: the cluster's, 60s).
        #[arg(long, value_parser = humantime::parse_duration)]
        cpu: Option<Duration>,
        /// Memory cap in MiB (default: the cluster's, 256).
        #[arg(long)]
        memory_mib: Option<u64>,
        /// Findings kept (default: the cluster's per-task default, 10000).
        #[arg(long)]
        max_findings: Option<u32>,
        /// Output format: a report for people, or one JSON object.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Upload a compiled hunt module (a wasm32-wasip2 component). It is
    /// validated first (instantiated against the WIT world, asked to
    /// describe itself); the coordinator checks it again. The first
    /// uploader of a name owns it: only it or an admin may publish versions.
    #[command(
        after_help = "Examples:\n  quarry module upload target/wasm32-wasip2/release/my_hunt.wasm      # name and version from describe()\n  quarry module upload my_hunt.wasm --name my-hunt --version 0.1.0\n  quarry module upload my_hunt.wasm --signature my_hunt.wasm.sig\n\nA signature file FILE.sig beside the module (`quarry module sign`) is sent with it."
    )]
    Upload {
        /// The .wasm file.
        file: PathBuf,
        /// Its signature (`quarry module sign`; default: FILE.sig if it exists).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Module name (lowercase, `-`/`_`; default: the name it describes).
        #[arg(long)]
        name: Option<String>,
        /// Module version, e.g. 0.1.0 (default: the version it describes).
        #[arg(long)]
        version: Option<String>,
        /// One-line description (default: the one it describes).
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List uploaded modules.
    #[command(after_help = "Example:\n  quarry module list --output json")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make an ed25519 key pair for signing modules: NAME.key (private,
    /// mode 0600) and NAME.pub (what `quarry cluster trust-key` takes).
    #[command(after_help = "Example:\n  quarry module keygen --name release --dir ~/.quarry-keys")]
    Keygen(quarry_cli::signing_cmd::KeygenArgs),
    /// Sign a module file with a signing key; writes FILE.sig, which
    /// `quarry module upload` sends with the module.
    #[command(
        after_help = "Example:\n  quarry module sign target/wasm32-wasip2/release/my_hunt.wasm --key ~/.quarry-keys/release.key\n\nThe signature is ed25519 over `quarry-module-v1:<sha256 of the file, hex>`."
    )]
    Sign(quarry_cli::signing_cmd::SignArgs),
    /// Delete an uploaded module that no hunt refers to.
    #[command(
        after_help = "Name the version (or the digest): a bare name is refused. Hunts that\nused the module must be deleted first.\n\nExamples:\n  quarry module delete bruteforce@0.1.0\n  quarry module delete sha256:3f1c...e9"
    )]
    Delete {
        /// `name@version` or `sha256:<digest>`.
        module: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// List the shards the cluster knows.
    #[command(after_help = "Example:\n  quarry shard list --selector os=windows")]
    List {
        /// Label selector `key=value` (repeatable).
        #[arg(long = "selector", value_parser = parse_pair)]
        selectors: Vec<(String, String)>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A task state, as `--task-state` takes it.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TaskStateArg {
    Pending,
    Assigned,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<TaskStateArg> for quarry_proto::v1::TaskState {
    fn from(state: TaskStateArg) -> Self {
        use quarry_proto::v1;
        match state {
            TaskStateArg::Pending => v1::TaskState::Pending,
            TaskStateArg::Assigned => v1::TaskState::Assigned,
            TaskStateArg::Succeeded => v1::TaskState::Succeeded,
            TaskStateArg::Failed => v1::TaskState::Failed,
            TaskStateArg::Cancelled => v1::TaskState::Cancelled,
        }
    }
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Raft and cluster status of the coordinator answering.
    #[command(
        after_help = "Examples:\n  quarry cluster status\n  quarry cluster status --wait 60s --live-workers 2   # in scripts, after starting a cluster"
    )]
    Status {
        /// Wait up to this long for the coordinator to answer with a leader
        /// (and --live-workers); fail if they do not come.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        /// With --wait: also wait until this many workers are live.
        #[arg(long, default_value_t = 0, requires = "wait")]
        live_workers: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Workers, their shards and liveness.
    #[command(after_help = "Example:\n  quarry cluster workers")]
    Workers {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a coordinator to the raft group (a conf change on the leader).
    ///
    /// Usually a new node does this itself (`quarry coordinator --join`);
    /// use this to admit a node started without --join. Start the node
    /// with an empty data directory: it receives a snapshot. It joins as a
    /// learner and becomes a voter once it has caught up.
    #[command(
        after_help = "Example:\n  quarry cluster add-coordinator --node-id 4 --url https://10.0.0.8:7700 --coordinator https://10.0.0.5:7700"
    )]
    AddCoordinator {
        /// Raft id of the new coordinator (non-zero, unique in the group).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        /// URL the other coordinators reach it at.
        #[arg(long, value_parser = parse_url)]
        url: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a coordinator from the raft group (a conf change on the
    /// leader); removing the leader moves leadership first. Stop the removed
    /// process afterwards.
    #[command(
        after_help = "Example:\n  quarry cluster remove-coordinator --node-id 3 --coordinator https://10.0.0.5:7700"
    )]
    RemoveCoordinator {
        /// Raft id of the coordinator to remove.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Trust a module-signing key: modules it signed show it as their
    /// signer, and may run where signed modules are required. Admins only.
    #[command(
        after_help = "Example:\n  quarry cluster trust-key --name release --public-key release.pub"
    )]
    TrustKey(quarry_cli::signing_cmd::TrustKeyArgs),
    /// Stop trusting a module-signing key: the modules it signed count as
    /// unsigned. Admins only.
    #[command(after_help = "Example:\n  quarry cluster untrust-key --name release")]
    UntrustKey(quarry_cli::signing_cmd::UntrustKeyArgs),
    /// The trusted module-signing keys, and whether signatures are required.
    #[command(after_help = "Example:\n  quarry cluster trusted-keys --output json")]
    TrustedKeys {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Require modules signed by a trusted key (`on`), or stop requiring
    /// them (`off`). With `on`, unsigned uploads are refused and workers
    /// refuse to run unsigned modules, earlier uploads included. Admins only.
    #[command(after_help = "Example:\n  quarry cluster require-signed-modules on")]
    RequireSignedModules(quarry_cli::signing_cmd::PolicyArgs),
}

/// A canary: a shard count or a percentage.
#[derive(Clone, Copy, Debug)]
enum Canary {
    Shards(u32),
    Percent(u32),
}

fn parse_canary(text: &str) -> Result<Canary, String> {
    let bad = || format!("expected a shard count (5) or a percentage (10%), got `{text}`");
    match text.strip_suffix('%') {
        Some(p) => match p.trim().parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) => Ok(Canary::Percent(p)),
            _ => Err(bad()),
        },
        None => match text.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(Canary::Shards(n)),
            _ => Err(bad()),
        },
    }
}

fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, url) = text
        .split_once('=')
        .ok_or_else(|| format!("expected ID=URL, got `{text}`"))?;
    let id: u64 = id
        .parse()
        .map_err(|_| format!("peer id `{id}` is not a positive integer"))?;
    if id == 0 || !url.starts_with("http") {
        return Err(format!(
            "expected ID=http://host:port with ID > 0, got `{text}`"
        ));
    }
    Ok((id, url.to_owned()))
}

fn parse_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(text.to_owned()),
        _ => Err(format!(
            "expected a URL like http://10.0.0.8:7700, got `{text}`"
        )),
    }
}

/// glibc's malloc arenas a process keeps, unless `MALLOC_ARENA_MAX` says.
///
/// By default glibc gives threads up to eight arenas per core, and each keeps
/// the memory its thread freed. A coordinator's tokio threads decode bursts
/// of large reports and hunts, each on whichever thread polled it, and the
/// freed bursts stay resident in every arena: in `quarry bench state`
/// (release build, 2 cores) the leader peaked at 481 MB with the default and
/// 444 MB with two arenas.
const MALLOC_ARENAS: i32 = 2;

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter of the allocator;
        // called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli_main())
}

async fn cli_main() -> std::process::ExitCode {
    let cli = match quarry_cli::config::parse::<Cli>(std::env::args_os().collect()) {
        Ok(parsed) => match parsed.print_config {
            Some(settings) => {
                print!("{settings}");
                return std::process::ExitCode::SUCCESS;
            }
            None => parsed.cli,
        },
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            return std::process::ExitCode::FAILURE;
        }
    };
    let telemetry = match quarry_telemetry::init(service_name(&cli.command), &cli.log) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if is_client_command(&cli.command) {
        restore_sigpipe();
    }
    let span = command_span(&cli.command);
    let code = match tracing::Instrument::instrument(run(cli.command), span).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // Client commands end within a batch delay: flush their spans.
    telemetry.shutdown().await;
    code
}

/// The `service.name` of this process's traces (unless OTEL_SERVICE_NAME
/// or OTEL_RESOURCE_ATTRIBUTES name one).
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::Coordinator { .. } => quarry_telemetry::COORDINATOR_SERVICE,
        Command::Worker(WorkerArgs { action: None, .. }) => quarry_telemetry::WORKER_SERVICE,
        _ => quarry_telemetry::CLIENT_SERVICE,
    }
}

/// The span a client command's calls run in (their root span when traces
/// are exported); servers trace each request instead.
fn command_span(command: &Command) -> tracing::Span {
    match command {
        Command::Hunt(HuntCommand::Submit(_)) => tracing::info_span!("hunt submit"),
        command if is_client_command(command) => tracing::info_span!("quarry"),
        _ => tracing::Span::none(),
    }
}

/// Commands that only talk to a cluster and print (no server of their own).
fn is_client_command(command: &Command) -> bool {
    !matches!(
        command,
        Command::Coordinator { .. }
            | Command::Worker(_)
            | Command::Dev(_)
            | Command::Demo { .. }
            | Command::Bench(_)
    )
}

/// `quarry hunt list | head` ends quietly, as other command-line tools do,
/// instead of panicking on the closed pipe. Only for client commands:
/// servers keep Rust's default of ignoring SIGPIPE, so a peer that hangs up
/// is an error on that connection, not the end of the process.
fn restore_sigpipe() {
    // SAFETY: resets one signal's disposition to the default; no handler
    // runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Coordinator {
            node_id,
            peers,
            join,
            advertise_url,
            log_compact_after,
            retain_hunts,
            retain_for,
            audit_retention,
            audit_max_records,
            data_dir,
            listen,
            metrics,
            tls,
            config: _,
        } => {
            // Before the coordinator starts: its instruments bind to the
            // provider installed here.
            let metrics = metrics.start(quarry_telemetry::COORDINATOR_SERVICE).await?;
            let tls = tls.files()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut config = quarry_coordinator::CoordinatorConfig::single_node(data_dir, listen)
                .with_peers(node_id, peers.into_iter().collect());
            config.join = join;
            config.advertise_url = advertise_url;
            config.compaction = quarry_coordinator::node::LogCompaction::every(log_compact_after);
            config.retain_hunts = retain_hunts;
            config.retain_for = retain_for;
            config.audit_retention = quarry_coordinator::audit::AuditRetention {
                retain_ms: i64::try_from(audit_retention.as_millis()).unwrap_or(i64::MAX),
                max_records: audit_max_records,
            };
            config.tls = tls;
            let coordinator = quarry_coordinator::Coordinator::start(config).await?;
            println!("coordinator serving on {scheme}://{}", coordinator.addr());
            if scheme == "http" {
                println!("  without TLS, on loopback only (development); see `quarry certs`");
            }
            shutdown_signal().await;
            coordinator.shutdown().await;
            metrics.shutdown().await;
        }
        Command::Worker(WorkerArgs {
            action:
                Some(WorkerAction::Ingest {
                    shard,
                    labels,
                    format,
                    data_dir,
                    worker,
                    files,
                }),
            run,
        }) => {
            let labels = labels.into_iter().collect();
            match worker {
                Some(url) => {
                    // A worker's ingest takes certificates only.
                    let credentials = run.tls.credentials(None)?;
                    quarry_cli::ingest::run_remote(
                        &url,
                        &credentials,
                        &shard,
                        labels,
                        format.as_deref(),
                        &files,
                    )
                    .await?
                }
                None => {
                    quarry_cli::ingest::run(&data_dir, &shard, labels, format.as_deref(), &files)
                        .await?
                }
            }
        }
        Command::Worker(WorkerArgs {
            action: Some(WorkerAction::Migrate { data_dir, shards }),
            ..
        }) => quarry_cli::migrate_cmd::run(&data_dir, &shards).await?,
        Command::Worker(WorkerArgs { action: None, run }) => {
            let id = run.id.context("--id is required to run a worker")?;
            let metrics = run.metrics.start(quarry_telemetry::WORKER_SERVICE).await?;
            let config = quarry_worker::WorkerConfig {
                id: quarry_proto::WorkerId::new(id),
                coordinator: run.coordinator,
                data_dir: run.data_dir,
                listen: run.listen,
                slots: run.slots,
                tls: run.tls.files()?,
            };
            let worker = quarry_worker::Worker::start(config).await?;
            println!(
                "worker serving on {} with {} shards",
                worker.addr(),
                worker.store().list().len()
            );
            shutdown_signal().await;
            worker.shutdown_gracefully(run.shutdown_grace).await;
            metrics.shutdown().await;
        }
        Command::Dev(DevArgs {
            action:
                Some(DevAction::Scenario {
                    out,
                    seed,
                    noise_percent,
                }),
            ..
        }) => {
            let options = quarry_worker::scenario::ScenarioOptions {
                seed,
                noise_percent,
            };
            let started = std::time::Instant::now();
            let manifest = quarry_worker::scenario::generate(&out, &options)?;
            println!(
                "wrote {} events ({:.1} MB) in {} files to {} in {:.1?}",
                manifest.total_events,
                manifest.total_bytes as f64 / 1e6,
                manifest.files.len(),
                out.display(),
                started.elapsed()
            );
            println!(
                "  {} planted intrusions, {} look-alikes, {} proposed shards: see {}",
                manifest.intrusions.len(),
                manifest.lookalikes.len(),
                manifest.shards.len(),
                out.join(quarry_worker::scenario::MANIFEST_FILE).display()
            );
        }
        Command::Dev(DevArgs {
            action: None,
            data_dir,
            listen,
        }) => {
            eprintln!("starting a local cluster under {} ...", data_dir.display());
            let cluster = LocalCluster::start(LocalClusterConfig::demo(&data_dir, listen)).await?;
            let mut client = Client::connect(&cluster.url()).await?;
            upload_shipped_modules(&mut client).await?;
            println!("Quarry dev cluster ready: API at {}", cluster.url());
            println!(
                "  try: quarry hunt submit bruteforce --selector env=demo --wait --coordinator {}",
                cluster.url()
            );
            println!(
                "  without TLS, on loopback only (development); a real cluster uses `quarry certs`"
            );
            println!("Ctrl-C stops it; state stays in {}.", data_dir.display());
            shutdown_signal().await;
            cluster.shutdown().await;
        }
        Command::Demo { output } => return quarry_cli::demo::run(out(output)).await,
        Command::Certs(command) => quarry_cli::certs_cmd::run(command)?,
        Command::Token(command) => quarry_cli::token_cmd::run(command).await?,
        Command::Audit(args) => quarry_cli::audit_cmd::run(args).await?,
        Command::Intel(command) => quarry_cli::intel_cmd::run(command).await?,
        Command::Sigma(command) => quarry_cli::sigma_cmd::run(command).await?,
        Command::Export(command) => quarry_cli::share::run(command).await?,
        Command::Coverage(args) => quarry_cli::coverage::run(args).await?,
        Command::Schedule(ScheduleCommand::Create(args)) => {
            let CreateScheduleArgs {
                schedule,
                template,
                client: args,
            } = *args;
            let mut template = template;
            let mut client = connect(&args).await?;
            if let Some(query) = &schedule.query {
                // A question made a recurring detection: the `query`
                // module, its rows reported as findings.
                quarry_query::compile(query).map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(module) = &template.module {
                    anyhow::bail!(
                        "give a module or --query, not both (the query runs as the `query` module, not `{module}`)"
                    );
                }
                quarry_cli::query_cmd::ensure_query_module(&mut client).await?;
                template.module = Some(quarry_cli::query_cmd::query_module());
                template.params.extend([
                    ("query".to_owned(), query.clone()),
                    ("findings".to_owned(), schedule.severity.clone()),
                    ("name".to_owned(), schedule.name.clone()),
                ]);
            }
            let intel = template.intel.clone();
            let request = bind_one_off_intel(&mut client, template.request()?, intel).await?;
            let request =
                quarry_cli::schedule_cmd::create_request(&schedule, request.into_proto())?;
            quarry_cli::schedule_cmd::create(&args, &mut client, request).await?;
        }
        Command::Schedule(ScheduleCommand::Other(command)) => {
            quarry_cli::schedule_cmd::run(command).await?;
        }
        Command::Hunt(command) => hunt(command).await?,
        Command::Triage(command) => quarry_cli::triage_cmd::run(command).await?,
        Command::Pivot(args) => quarry_cli::pivot_cmd::run(args).await?,
        Command::Query(args) => {
            quarry_cli::query_cmd::run(args).await?;
        }
        Command::Module(command) => return module(command).await,
        Command::Shard(command) => shard(command).await?,
        Command::Cluster(command) => cluster(command).await?,
        Command::Config(command) => {
            return Ok(quarry_cli::config::run(command, &Cli::command())?);
        }
        Command::Bench(command) => return quarry_cli::bench::run(command).await,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The `rule.<path>` parameters of the Sigma rule files and directories
/// `paths` (as the `sigma` module reads them).
fn rule_params(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    for path in paths {
        params.extend(
            sigma::loader::rule_params(path)
                .with_context(|| format!("cannot load Sigma rules from {}", path.display()))?,
        );
    }
    Ok(params)
}

impl HuntTemplateArgs {
    /// The hunt request these flags describe (`--intel` files not yet
    /// uploaded: see [`bind_one_off_intel`]).
    fn request(&self) -> anyhow::Result<HuntRequest> {
        let module = self.module.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "name the module to run, for example `bruteforce` (`quarry module list` shows them)"
            )
        })?;
        let mut request = HuntRequest::new(module)
            .priority(self.priority)
            .description(&self.description);
        for (k, v) in &self.selectors {
            request = request.selector(k, v);
        }
        for shard in &self.shards {
            request = request.shard(shard);
        }
        for (k, v) in &self.params {
            request = request.param(k, v);
        }
        for set in &self.intel_sets {
            request = request.intel_set(set);
        }
        for pack in &self.rule_packs {
            request = request.rule_pack(pack);
        }
        for (name, text) in rule_params(&self.rules)? {
            request = request.param(&name, &text);
        }
        if self.since.is_some() || self.until.is_some() {
            request = request.time_range(self.since.unwrap_or(0), self.until.unwrap_or(0));
        }
        let cpu_ms = self.cpu.map(|d| d.as_millis() as u64).unwrap_or(0);
        request = request
            .limits(
                cpu_ms,
                self.memory_mib.unwrap_or(0) * 1024 * 1024,
                self.max_findings.unwrap_or(0),
            )
            .max_output_bytes(self.max_task_bytes.unwrap_or(0))
            .hunt_result_limits(
                self.max_hunt_findings.unwrap_or(0),
                self.max_hunt_bytes.unwrap_or(0),
            )
            .retries(
                self.max_attempts.unwrap_or(0),
                self.retry_backoff.map_or(0, |d| d.as_millis() as u64),
            )
            .failure_threshold(self.failure_threshold.unwrap_or(0))
            .max_concurrency(self.max_concurrency.unwrap_or(0))
            .max_tasks_per_second(self.max_tasks_per_second.unwrap_or(0));
        if let Some(deadline) = self.deadline {
            request = request.deadline(deadline);
        }
        Ok(match self.canary {
            Some(Canary::Shards(n)) => request.canary_shards(n),
            Some(Canary::Percent(p)) => request.canary_percent(p),
            None => request,
        })
    }
}

/// Each `--intel` file goes to the intel store once, as a one-off set named
/// after its content; the hunt is bound to it.
async fn bind_one_off_intel(
    client: &mut Client,
    mut request: HuntRequest,
    intel: Vec<(String, String)>,
) -> anyhow::Result<HuntRequest> {
    for (key, text) in intel {
        let (name, binding) = quarry_cli::intel::upload_one_off(client, &key, text).await?;
        request = request.param(
            &format!("{}{name}", quarry_contract::intel::REF_PREFIX),
            &binding,
        );
    }
    Ok(request)
}

async fn hunt(command: HuntCommand) -> anyhow::Result<()> {
    match command {
        HuntCommand::Submit(args) => {
            let SubmitArgs {
                template,
                wait,
                dry_run,
                client: args,
            } = *args;
            let intel = template.intel.clone();
            let mut request = template.request()?;
            let mut client = connect(&args).await?;
            let format = out(args.output);
            if dry_run {
                for (k, v) in &intel {
                    request = request.param(k, v);
                }
                output::dry_run(format, &client.submit_hunt(request.dry_run(true)).await?);
                return Ok(());
            }
            request = bind_one_off_intel(&mut client, request, intel).await?;
            let submitted = client.submit_hunt(request).await?;
            if !wait {
                output::submitted(format, &submitted);
                return Ok(());
            }
            if format == Output::Table {
                let module = submitted
                    .module
                    .as_ref()
                    .map(|m| format!(", running {}@{}", m.name, m.version))
                    .unwrap_or_default();
                eprintln!(
                    "hunt {} submitted: {} tasks{module}",
                    submitted.hunt_id, submitted.task_count
                );
            }
            let hunt = client
                .wait(&submitted.hunt_id, |p| output::progress(format, p))
                .await?;
            output::hunt(format, &hunt);
            output::findings(format, &client.findings(&hunt.hunt_id).await?);
        }
        HuntCommand::Status {
            hunt,
            tasks,
            task_states,
            client: args,
        } => {
            let states: Vec<quarry_proto::v1::TaskState> =
                task_states.into_iter().map(Into::into).collect();
            let hunt = connect(&args)
                .await?
                .hunt_tasks(&hunt, tasks, &states)
                .await?;
            output::hunt(out(args.output), &hunt);
        }
        HuntCommand::Results { hunt, client: args } => {
            let findings = connect(&args).await?.findings(&hunt).await?;
            output::findings(out(args.output), &findings);
        }
        HuntCommand::Export { hunt, client: args } => {
            let hunt = connect(&args).await?.hunt_tasks(&hunt, 1, &[]).await?;
            let doc = quarry_cli::hunt_transfer::export(&hunt)?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        HuntCommand::Import {
            file,
            dry_run,
            client: args,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut imported = quarry_cli::hunt_transfer::import(&text)
                .with_context(|| format!("{} is not an exported hunt", file.display()))?;
            let mut client = connect(&args).await?;
            let here = client
                .list_modules()
                .await?
                .into_iter()
                .find(|m| format!("{}@{}", m.name, m.version) == imported.module)
                .with_context(|| {
                    format!(
                        "module {} is not uploaded here; upload the same build first (sha256 {})",
                        imported.module, imported.digest
                    )
                })?;
            quarry_cli::hunt_transfer::check_module(&imported, &here)?;
            imported.request.dry_run = dry_run;
            let submitted = client
                .submit_hunt(quarry_client::HuntRequest::from(imported.request))
                .await?;
            output::submitted(out(args.output), &submitted);
        }
        HuntCommand::Delete { hunt, client: args } => {
            connect(&args).await?.delete_hunt(&hunt).await?;
            if out(args.output) == output::Output::Json {
                println!("{}", serde_json::json!({ "deleted": hunt }));
            } else {
                println!("deleted hunt {hunt} with its tasks and findings");
            }
        }
        HuntCommand::Cancel {
            hunt,
            reason,
            client: args,
        } => {
            let hunt = connect(&args).await?.cancel_hunt(&hunt, &reason).await?;
            output::hunt(out(args.output), &hunt);
        }
        HuntCommand::Resume { hunt, client: args } => {
            let hunt = connect(&args).await?.resume_hunt(&hunt).await?;
            output::hunt(out(args.output), &hunt);
        }
        HuntCommand::List {
            limit,
            client: args,
        } => {
            let hunts = connect(&args).await?.list_hunts(limit).await?;
            output::hunts(out(args.output), &hunts);
        }
    }
    Ok(())
}

async fn module(command: ModuleCommand) -> anyhow::Result<std::process::ExitCode> {
    use quarry_cli::module_tool;
    match command {
        ModuleCommand::New { name, dir, sdk } => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let made = module_tool::scaffold(&name, &dir, sdk.as_deref(), &cwd)?;
            println!("created module crate {}", made.dir.display());
            for file in &made.files {
                println!("  {file}");
            }
            println!("quarry-sdk: {}", made.sdk);
            println!("next:");
            println!("  cd {} && cargo test", made.dir.display());
            println!("  quarry module build {}", made.dir.display());
        }
        ModuleCommand::Build {
            path,
            target_dir,
            output,
        } => {
            let built = tokio::task::spawn_blocking(move || {
                module_tool::build(&path, target_dir.as_deref())
            })
            .await??;
            output::built_module(out(output), &built);
        }
        ModuleCommand::Test {
            module,
            logs,
            format,
            params,
            intel,
            rules,
            cpu,
            memory_mib,
            max_findings,
            output,
        } => {
            let format = format
                .map(|f| f.parse::<quarry_worker::ingest::Format>())
                .transpose()?;
            let mut params = module_tool::parse_params(&params)?;
            params.extend(intel);
            params.extend(rule_params(&rules)?);
            let mut limits = module_tool::default_limits();
            if let Some(cpu) = cpu {
                limits.cpu = cpu;
            }
            if let Some(mib) = memory_mib {
                limits.memory_bytes = mib.saturating_mul(1024 * 1024);
            }
            if let Some(n) = max_findings {
                limits.max_findings = n as usize;
            }
            let run = tokio::task::spawn_blocking(move || {
                module_tool::run_local(&module, &logs, format, params, limits)
            })
            .await??;
            output::local_run(out(output), &run);
            if run.outcome.is_err() {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        ModuleCommand::Upload {
            file,
            signature,
            name,
            version,
            description,
            client: args,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            // Validate before anything leaves this machine: the coordinator
            // only checks the component's shape, a worker would find out
            // the rest at the first hunt.
            let described = {
                let (file, bytes) = (file.clone(), bytes.clone());
                tokio::task::spawn_blocking(move || module_tool::validate(&file, &bytes)).await??
            };
            let name = name.unwrap_or_else(|| described.name.clone());
            let version = version.unwrap_or_else(|| described.version.clone());
            if name != described.name || version != described.version {
                eprintln!(
                    "warning: uploading as {name}@{version}, but the module describes itself as {}@{}",
                    described.name, described.version
                );
            }
            let description = description.unwrap_or_else(|| described.description.clone());
            let signature =
                quarry_cli::signing_cmd::signature_for_upload(&file, signature.as_deref())?;
            let info = connect(&args)
                .await?
                .upload_signed_module(
                    &name,
                    &version,
                    &description,
                    &bytes,
                    signature.as_deref(),
                    &described.techniques,
                )
                .await?;
            output::modules(out(args.output), &[info]);
        }
        ModuleCommand::Keygen(args) => quarry_cli::signing_cmd::keygen(&args)?,
        ModuleCommand::Sign(args) => quarry_cli::signing_cmd::sign(&args)?,
        ModuleCommand::List { client: args } => {
            let modules = connect(&args).await?.list_modules().await?;
            output::modules(out(args.output), &modules);
        }
        ModuleCommand::Delete {
            module,
            client: args,
        } => {
            let deleted = connect(&args).await?.delete_module(&module).await?;
            output::modules(out(args.output), &[deleted]);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn shard(command: ShardCommand) -> anyhow::Result<()> {
    match command {
        ShardCommand::List {
            selectors,
            client: args,
        } => {
            let shards = connect(&args)
                .await?
                .shards(selectors.into_iter().collect())
                .await?;
            output::shards(out(args.output), &shards);
        }
    }
    Ok(())
}

async fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status {
            wait: None,
            client: args,
            ..
        } => {
            let status = connect(&args).await?.status().await?;
            output::status(out(args.output), &status);
        }
        ClusterCommand::Status {
            wait: Some(wait),
            live_workers,
            client: args,
        } => {
            let deadline = std::time::Instant::now() + wait;
            let status = loop {
                let why = match leader_status(&args).await {
                    Err(e) => format!("{e:#}"),
                    Ok(status) if status.stale || !status.is_leader => "no leader yet".to_owned(),
                    Ok(status) if status.live_workers < live_workers => {
                        format!("{} of {live_workers} workers live", status.live_workers)
                    }
                    Ok(status) => break status,
                };
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "the cluster at {} was not ready within {} ({why})",
                        args.connect.coordinator,
                        humantime::format_duration(wait)
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            output::status(out(args.output), &status);
        }
        ClusterCommand::Workers { client: args } => {
            let workers = connect(&args).await?.workers().await?;
            output::workers(out(args.output), &workers);
        }
        ClusterCommand::AddCoordinator {
            node_id,
            url,
            client: args,
        } => {
            let members = connect(&args).await?.add_coordinator(node_id, &url).await?;
            output::membership(out(args.output), &members);
        }
        ClusterCommand::RemoveCoordinator {
            node_id,
            client: args,
        } => {
            let members = connect(&args).await?.remove_coordinator(node_id).await?;
            output::membership(out(args.output), &members);
        }
        ClusterCommand::TrustKey(args) => quarry_cli::signing_cmd::trust_key(&args).await?,
        ClusterCommand::UntrustKey(args) => quarry_cli::signing_cmd::untrust_key(&args).await?,
        ClusterCommand::TrustedKeys { client } => {
            quarry_cli::signing_cmd::trusted_keys(&client).await?;
        }
        ClusterCommand::RequireSignedModules(args) => {
            quarry_cli::signing_cmd::require_signed(&args).await?;
        }
    }
    Ok(())
}

/// The status of the raft leader, asked through the coordinator `args`
/// names: only the leader knows which workers are live.
async fn leader_status(args: &ClientArgs) -> anyhow::Result<quarry_proto::v1::StatusResponse> {
    let status = connect(args).await?.status().await?;
    if status.is_leader || status.leader_id == 0 {
        return Ok(status);
    }
    let Some(url) = status
        .coordinators
        .iter()
        .find(|c| c.node_id == status.leader_id && !c.url.is_empty())
        .map(|c| c.url.clone())
    else {
        return Ok(status);
    };
    let credentials = args.connect.tls.credentials(args.connect.token.clone())?;
    Ok(Client::connect_as(&url, &credentials)
        .await?
        .status()
        .await?)
}

/// Ctrl-C (SIGINT) or SIGTERM, which systemd, Kubernetes and `kill` send
/// to stop a service: either stops the server cleanly.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(e) => {
            eprintln!("cannot listen for SIGTERM ({e}); only Ctrl-C stops this server cleanly");
            if let Err(e) = tokio::signal::ctrl_c().await {
                eprintln!("cannot listen for Ctrl-C ({e}); stopping");
            }
            return;
        }
    };
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => {
            if let Err(e) = interrupted {
                eprintln!("cannot listen for Ctrl-C ({e}); stopping");
            }
        }
        _ = terminate.recv() => eprintln!("SIGTERM: stopping"),
    }
}
