//! One hunt is one trace across processes: a coordinator, a worker and the
//! `quarry hunt submit --wait` client run as separate `quarry` processes
//! exporting to an in-process OTLP receiver on loopback, and every span of
//! the hunt (submission, scheduling, the task, the module run, the report
//! and its triage) lands in the client's trace, from three services. The
//! servers' metrics reach the same receiver over OTLP.

mod common;

use common::{Process, demo_worker_dir, until, upload_bruteforce};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use quarry_client::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One exported span, flattened.
#[derive(Clone, Debug)]
struct Exported {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    start_ns: u64,
    attributes: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Exported>>>,
    /// (service.name, metric name) of every metric exported.
    metrics: Arc<Mutex<BTreeSet<(String, String)>>>,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.metrics.lock().expect("lock");
        for resource_metrics in request.into_inner().resource_metrics {
            let resource = resource_metrics
                .resource
                .map(|r| text(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    metrics.insert((service.clone(), metric.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| text(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Exported {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        start_ns: span.start_time_unix_nano,
                        attributes: text(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// `quarry ARGS` exporting traces to `endpoint`, whatever the environment
/// of the test says about OpenTelemetry.
fn quarry(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(Path::new(env!("CARGO_BIN_EXE_quarry")));
    command
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_METRICS_EXPORTER")
        .env("QUARRY_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .stdin(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hunt_is_one_trace_across_client_coordinator_and_worker() -> anyhow::Result<()> {
    // The OTLP receiver.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );

    // A coordinator and a worker holding the demo shards, as processes.
    let dir = tempfile::tempdir()?;
    let port = quarry_cli::process_group::free_ports(1)?[0];
    let url = format!("http://127.0.0.1:{port}");
    let _coordinator = Process(
        quarry(
            &endpoint,
            &["coordinator", "--listen", &format!("127.0.0.1:{port}")],
        )
        .arg("--data-dir")
        .arg(dir.path().join("coordinator"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?,
    );
    let mut client = until("the coordinator", Duration::from_secs(30), async || {
        let mut client = Client::connect(&url).await.ok()?;
        client.status().await.ok()?;
        Some(client)
    })
    .await?;
    upload_bruteforce(&mut client).await?;
    let worker_dir = demo_worker_dir(dir.path())?;
    let _worker = Process(
        quarry(
            &endpoint,
            &["worker", "--id", "worker-0", "--coordinator", &url],
        )
        .arg("--data-dir")
        .arg(&worker_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?,
    );
    until("a live worker", Duration::from_secs(30), async || {
        (client.status().await.ok()?.live_workers == 1).then_some(())
    })
    .await?;

    // The client submits and waits, exporting its own spans.
    let mut submit = quarry(
        &endpoint,
        &[
            "hunt",
            "submit",
            "bruteforce",
            "--selector",
            "env=demo",
            "--wait",
            "--coordinator",
            &url,
            "--output",
            "json",
        ],
    );
    submit.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || submit.output()),
    )
    .await???;
    assert!(output.status.success(), "hunt submit failed: {output:?}");

    // The client flushed at exit; the servers export within their batch
    // delay. Every span of the hunt lands in the client's trace.
    let expected = [
        ("hunt submit", "quarry"),
        ("submit_hunt", "quarry-coordinator"),
        ("schedule", "quarry-coordinator"),
        ("task", "quarry-worker"),
        ("module.run", "quarry-worker"),
        ("report", "quarry-worker"),
        ("report_task", "quarry-coordinator"),
        ("triage", "quarry-coordinator"),
    ];
    let spans = until("the hunt's spans", Duration::from_secs(30), async || {
        let spans = receiver.spans.lock().expect("lock").clone();
        let root = spans
            .iter()
            .find(|s| s.name == "hunt submit" && s.service == "quarry")?
            .trace_id
            .clone();
        let trace: Vec<Exported> = spans
            .iter()
            .filter(|s| s.trace_id == root)
            .cloned()
            .collect();
        expected
            .iter()
            .all(|(name, service)| {
                trace
                    .iter()
                    .any(|s| s.name == *name && s.service == *service)
            })
            .then_some((spans, root))
    })
    .await;
    let (spans, trace_id) = match spans {
        Ok(found) => found,
        Err(e) => {
            let seen: BTreeSet<(String, String)> = receiver
                .spans
                .lock()
                .expect("lock")
                .iter()
                .map(|s| (s.service.clone(), s.name.clone()))
                .collect();
            panic!("{e}; spans seen (service, name): {seen:?}");
        }
    };
    // The servers' metrics arrive over OTLP too (every 300 ms here).
    let wanted = [
        ("quarry-coordinator", "quarry.raft.term"),
        ("quarry-coordinator", "quarry.raft.proposal.duration"),
        ("quarry-coordinator", "quarry.tasks.finished"),
        ("quarry-worker", "quarry.module.run.duration"),
        ("quarry-worker", "quarry.module.events_scanned"),
    ];
    let metrics = until(
        "the servers' metrics",
        Duration::from_secs(30),
        async || {
            let metrics = receiver.metrics.lock().expect("lock").clone();
            wanted
                .iter()
                .all(|(service, name)| {
                    metrics.contains(&((*service).to_owned(), (*name).to_owned()))
                })
                .then_some(metrics)
        },
    )
    .await;
    if let Err(e) = metrics {
        let seen = receiver.metrics.lock().expect("lock").clone();
        panic!("{e}; metrics seen (service, name): {seen:?}");
    }
    let _ = stop.send(());
    let _ = server.await;

    // One trace for the whole hunt: every task of it, and everything done
    // for those tasks, is in the client's trace, and only one hunt ran.
    let tasks: Vec<&Exported> = spans.iter().filter(|s| s.name == "task").collect();
    assert!(!tasks.is_empty());
    let hunts: BTreeSet<&str> = tasks
        .iter()
        .filter_map(|s| s.attributes.get("hunt").map(String::as_str))
        .collect();
    assert_eq!(hunts.len(), 1, "{tasks:#?}");
    for name in ["task", "module.run", "report", "report_task", "triage"] {
        for span in spans.iter().filter(|s| s.name == name) {
            assert_eq!(
                span.trace_id, trace_id,
                "{span:#?} is not in the hunt's trace"
            );
        }
    }
    let mut in_trace: Vec<&Exported> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    // The trace as a hunter's tracing UI lists it (shown with --no-capture).
    in_trace.sort_by_key(|s| s.start_ns);
    let first = in_trace.first().map_or(0, |s| s.start_ns);
    for span in &in_trace {
        eprintln!(
            "+{:>8.3} ms  {:<20} {}",
            span.start_ns.saturating_sub(first) as f64 / 1e6,
            span.service,
            span.name
        );
    }
    let services: BTreeSet<&str> = in_trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["quarry", "quarry-coordinator", "quarry-worker"]),
        "the trace spans the client, the coordinator and the worker"
    );
    let task = tasks[0];
    for field in ["hunt", "task", "shard", "module"] {
        assert!(task.attributes.contains_key(field), "{task:#?}");
    }
    Ok(())
}
