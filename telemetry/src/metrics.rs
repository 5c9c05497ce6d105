//! Metrics through the OpenTelemetry metrics API.
//!
//! [`init_metrics`] installs the process's global meter provider when
//! something will read it: a Prometheus `/metrics` endpoint
//! (`--metrics-listen`) and/or OTLP export when the standard variables ask
//! for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, not turned off by
//! `OTEL_METRICS_EXPORTER=none` or `OTEL_SDK_DISABLED=true`). Without either,
//! no provider is installed and every instrument is a no-op.
//!
//! The crates create their instruments with [`meter`] after `init_metrics`
//! ran (instruments made before it stay no-ops); the names are listed in
//! docs/observability.md.

use http_body_util::Full;
use hyper::body::Bytes;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::{
    AsyncInstrument, Counter, Histogram, Meter, ObservableGauge, UpDownCounter,
};

use crate::TelemetryError;

/// The meter of one Quarry component (`quarry-coordinator`,
/// `quarry-worker`): its instruments carry it as `otel_scope_name`.
pub fn meter(component: &'static str) -> Meter {
    opentelemetry::global::meter(component)
}

/// Bucket boundaries (seconds) for durations from a millisecond (a raft
/// proposal on one machine) to ten minutes (a long module run).
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Whether the environment asks for metrics over OTLP, read through `var`:
/// as [`crate::exporter_requested`] for traces, with the `METRICS`
/// variables.
pub fn otlp_requested(var: impl Fn(&str) -> Option<String>) -> bool {
    crate::signal_requested(&var, "METRICS")
}

/// Keeps the meter provider (and the `/metrics` server) alive.
#[must_use = "dropping the guard stops the metrics endpoint and export"]
pub struct MetricsGuard {
    provider: Option<SdkMeterProvider>,
    server: Option<(SocketAddr, watch::Sender<bool>, JoinHandle<()>)>,
}

impl std::fmt::Debug for MetricsGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsGuard")
            .field("recording", &self.provider.is_some())
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl MetricsGuard {
    /// A guard that records nothing (no endpoint, no export).
    pub fn disabled() -> Self {
        Self {
            provider: None,
            server: None,
        }
    }

    /// The address `/metrics` is served on, if it is.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|(addr, _, _)| *addr)
    }

    /// Stops the endpoint and pushes the last OTLP export.
    pub async fn shutdown(mut self) {
        self.stop_server().await;
        if let Some(provider) = self.provider.take() {
            // The async periodic reader's final export runs on the runtime
            // while shutdown blocks its caller: not on a runtime thread.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = provider.shutdown() {
                    tracing::debug!(error = %e, "final metrics export failed");
                }
            })
            .await;
        }
    }

    async fn stop_server(&mut self) {
        if let Some((_, stop, task)) = self.server.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

impl Drop for MetricsGuard {
    fn drop(&mut self) {
        if let Some((_, stop, task)) = self.server.take() {
            let _ = stop.send(true);
            task.abort();
        }
    }
}

/// Installs the global meter provider if `listen` is set (a Prometheus
/// `/metrics` endpoint there) or OTLP metrics export is requested; the
/// resource's `service.name` defaults to `service` as for traces. Must be
/// called within a tokio runtime. A port that cannot be bound is an error
/// (the operator asked for it); an OTLP exporter that cannot be built is a
/// warning, as for traces.
pub async fn init_metrics(
    service: &str,
    listen: Option<SocketAddr>,
) -> Result<MetricsGuard, TelemetryError> {
    let otlp = otlp_requested(|name| std::env::var(name).ok());
    if listen.is_none() && !otlp {
        return Ok(MetricsGuard::disabled());
    }
    // Bind first: a taken port fails before anything is installed.
    let listener = match listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            TelemetryError::MetricsListen {
                addr,
                reason: e.to_string(),
            }
        })?),
        None => None,
    };
    let mut builder = SdkMeterProvider::builder().with_resource(crate::resource(service));
    let registry = prometheus::Registry::new();
    if listener.is_some() {
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter(format!("prometheus exporter: {e}")))?;
        builder = builder.with_reader(exporter);
    }
    if otlp {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                let reader = opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
                builder = builder.with_reader(reader);
            }
            Err(e) => tracing::warn!(error = %e, "metrics are not exported over OTLP"),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    let server = match listener {
        Some(listener) => {
            let addr = listener
                .local_addr()
                .map_err(|e| TelemetryError::MetricsListen {
                    addr: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
                    reason: e.to_string(),
                })?;
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(serve(listener, registry, stopped));
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            Some((addr, stop, task))
        }
        None => None,
    };
    Ok(MetricsGuard {
        provider: Some(provider),
        server,
    })
}

/// Accepts scrapes until `stop` turns true. One connection's failure (a
/// probe that hangs up) ends that connection only.
async fn serve(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let registry = registry.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = respond(&registry, &request);
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics endpoint: connection ended");
            }
        });
    }
}

/// `GET /metrics`: the Prometheus text exposition; `/`: where to look.
fn respond<B>(
    registry: &prometheus::Registry,
    request: &hyper::Request<B>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &str, body: Vec<u8>| {
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    if request.method() != hyper::Method::GET && request.method() != hyper::Method::HEAD {
        return reply(405, text, b"only GET /metrics is served here\n".to_vec());
    }
    match request.uri().path() {
        "/metrics" => {
            use prometheus::Encoder as _;
            let encoder = prometheus::TextEncoder::new();
            let mut body = Vec::new();
            match encoder.encode(&registry.gather(), &mut body) {
                Ok(()) => reply(200, encoder.format_type(), body),
                Err(e) => reply(
                    500,
                    text,
                    format!("cannot encode metrics: {e}\n").into_bytes(),
                ),
            }
        }
        "/" => reply(
            200,
            text,
            b"Quarry metrics: GET /metrics (Prometheus text format)\n".to_vec(),
        ),
        _ => reply(404, text, b"not found: metrics are at /metrics\n".to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::env;

    #[test]
    fn otlp_metrics_follow_the_standard_variables() {
        assert!(!otlp_requested(env(&[])));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(otlp_requested(env(&[endpoint])));
        assert!(otlp_requested(env(&[(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        // A traces-only endpoint does not turn metrics on.
        assert!(!otlp_requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(!otlp_requested(env(&[
            endpoint,
            ("OTEL_METRICS_EXPORTER", "none")
        ])));
        assert!(!otlp_requested(env(&[
            endpoint,
            ("OTEL_SDK_DISABLED", "true")
        ])));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_endpoint_serves_what_instruments_recorded() {
        let guard = init_metrics("quarry-test", Some(SocketAddr::from(([127, 0, 0, 1], 0))))
            .await
            .expect("metrics");
        let addr = guard.endpoint().expect("an endpoint");
        let meter = meter("quarry-test");
        let scanned = meter
            .u64_counter("quarry.test.events_scanned")
            .with_unit("{event}")
            .build();
        scanned.add(7, &[KeyValue::new("module", "noop")]);
        let run = meter
            .f64_histogram("quarry.test.run.duration")
            .with_unit("s")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        run.record(0.2, &[]);
        let body = get(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("text/plain; version=0.0.4"), "{body}");
        assert!(
            body.contains(
                r#"quarry_test_events_scanned_total{module="noop",otel_scope_name="quarry-test"} 7"#
            ),
            "{body}"
        );
        assert!(
            body.contains("quarry_test_run_duration_seconds_bucket"),
            "{body}"
        );
        assert!(body.contains(r#"service_name="quarry-test""#), "{body}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        // A taken port is refused with the address in the message.
        let taken = init_metrics("quarry-test", Some(addr))
            .await
            .expect_err("taken");
        assert!(taken.to_string().contains(&addr.to_string()), "{taken}");
        guard.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
