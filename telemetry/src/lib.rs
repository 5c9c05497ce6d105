//! Process telemetry for Quarry.
//!
//! [`init`] installs the process's `tracing` subscriber: the stderr log
//! (filtered by `--log` / `QUARRY_LOG`, as before) and, only when the
//! standard OpenTelemetry variables ask for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! a layer that turns Quarry's `tracing` spans into OpenTelemetry spans
//! exported over OTLP/gRPC. Without those variables nothing of
//! OpenTelemetry is installed.
//!
//! The propagation helpers carry a span's context across processes as a
//! W3C `traceparent`: in gRPC metadata ([`inject`], [`set_parent_from_headers`])
//! or as a plain string inside a protobuf message ([`traceparent`],
//! [`set_parent_from_traceparent`]). Without an exporter they do nothing.

pub mod metrics;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The W3C trace-context header (and gRPC metadata key).
pub const TRACEPARENT: &str = "traceparent";

/// Default `service.name` of a coordinator process.
pub const COORDINATOR_SERVICE: &str = "quarry-coordinator";
/// Default `service.name` of a worker process.
pub const WORKER_SERVICE: &str = "quarry-worker";
/// Default `service.name` of client commands (and of `quarry dev` / `demo`).
pub const CLIENT_SERVICE: &str = "quarry";

/// Spans of these crates are exported (at INFO and above); everything else
/// (tonic, h2, hyper, the exporter itself) stays out of the traces.
const EXPORTED_TARGETS: &[&str] = &[
    "quarry",
    "quarry_cli",
    "quarry_client",
    "quarry_coordinator",
    "quarry_worker",
    "quarry_security",
    "quarry_triage",
    "quarry_intel",
];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global subscriber was already installed in this process.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
    /// The OTLP exporter could not be built (for example a malformed
    /// endpoint); [`init`] warns and goes on without it.
    #[error("cannot set up the OpenTelemetry trace exporter: {0}")]
    Exporter(String),
    /// The metrics endpoint's address cannot be bound.
    #[error(
        "cannot serve metrics on {addr}: {reason}; pick a free address with --metrics-listen (or QUARRY_METRICS_LISTEN)"
    )]
    MetricsListen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it cannot be bound.
        reason: String,
    },
}

/// Keeps the trace pipeline alive; [`TelemetryGuard::shutdown`] (or drop)
/// flushes the spans still queued.
#[must_use = "dropping the guard shuts the trace exporter down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.exporting())
            .finish()
    }
}

impl TelemetryGuard {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the spans still queued and stops the exporter. Call it
    /// before the process exits: client commands end within a batch delay.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            // The processor's flush blocks its caller until the export task
            // (on the runtime) is done: not on a runtime thread.
            let _ = tokio::task::spawn_blocking(move || shutdown_provider(&provider)).await;
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| shutdown_provider(&provider));
            }
            // A current-thread runtime cannot run the export task while this
            // thread waits for it: the queued spans are given up.
            Ok(_) => {}
            Err(_) => shutdown_provider(&provider),
        }
    }
}

fn shutdown_provider(provider: &SdkTracerProvider) {
    // A failed final export was already warned about (once) by the exporter.
    if let Err(e) = provider.shutdown() {
        tracing::debug!(error = %e, "flushing traces at exit failed");
    }
}

/// Whether the environment asks for trace export, read through `var`
/// (`std::env::var` in [`init`]): an OTLP endpoint is set, the SDK is not
/// disabled (`OTEL_SDK_DISABLED=true`) and `OTEL_TRACES_EXPORTER` is not
/// `none`.
pub fn exporter_requested(var: impl Fn(&str) -> Option<String>) -> bool {
    signal_requested(&var, "TRACES")
}

/// Whether OTLP export of `signal` (`TRACES`, `METRICS`) is asked for: an
/// endpoint (general or the signal's own) is set, the SDK is not disabled
/// and `OTEL_<signal>_EXPORTER` is not `none`.
fn signal_requested(var: &impl Fn(&str) -> Option<String>, signal: &str) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    if var(&format!("OTEL_{signal}_EXPORTER"))
        .is_some_and(|v| v.split(',').all(|e| e.trim().eq_ignore_ascii_case("none")))
    {
        return false;
    }
    set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
}

/// Installs the global `tracing` subscriber: logs to stderr filtered by
/// `log_filter` (RUST_LOG syntax; `warn` if it does not parse), and, when
/// [`exporter_requested`], OpenTelemetry spans exported over OTLP/gRPC with
/// `service.name` from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, or
/// `service` if neither names one. Must be called within a tokio runtime
/// when exporting. An exporter that cannot be set up (a malformed endpoint)
/// is a warning: the process runs on without traces.
pub fn init(service: &str, log_filter: &str) -> Result<TelemetryGuard, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let provider = if exporter_requested(|name| std::env::var(name).ok()) {
        provider(service)
    } else {
        Ok(None)
    };
    let provider = match provider {
        Ok(Some(provider)) => provider,
        Ok(None) | Err(_) => {
            tracing_subscriber::registry()
                .with(fmt)
                .try_init()
                .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
            // A misconfigured exporter costs the traces, not the process.
            if let Err(e) = provider {
                tracing::warn!(error = %e, "traces are not exported");
            }
            return Ok(TelemetryGuard { provider: None });
        }
    };
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "quarry");
    let exported = EXPORTED_TARGETS.iter().fold(
        tracing_subscriber::filter::Targets::new(),
        |targets, target| targets.with_target(*target, tracing::Level::INFO),
    );
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(exported);
    let guard = TelemetryGuard {
        provider: Some(provider),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(guard)
}

fn provider(service: &str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            WarnOnce::new(exporter),
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource(service))
            .build(),
    ))
}

/// The standard environment's resource (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), `service.name` defaulting to `service`.
fn resource(service: &str) -> opentelemetry_sdk::Resource {
    let from_env = opentelemetry_sdk::Resource::builder().build();
    let named = from_env
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        from_env
    } else {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    }
}

/// The OTLP exporter, whose first failure is logged (at warn) and the rest
/// are not: a collector that is down must not flood the log or stop Quarry.
#[derive(Debug)]
struct WarnOnce<E> {
    inner: E,
    warned: AtomicBool,
}

impl<E> WarnOnce<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            warned: AtomicBool::new(false),
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for WarnOnce<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "exporting traces failed (further failures are not logged)");
        }
        result
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct StringCarrier<'a>(&'a str);

impl Extractor for StringCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Adds the current span's trace context (`traceparent`) to outgoing gRPC
/// metadata. Does nothing without an exporter.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    inject_span(&tracing::Span::current(), metadata);
}

/// Adds `span`'s trace context to outgoing gRPC metadata.
pub fn inject_span(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// The trace context carried by incoming request headers (empty if none).
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// Makes `span` (not yet entered) a child of the trace context in incoming
/// request headers, if they carry one.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
        let _ = span.set_parent(extract(headers));
    }
}

/// `span`'s trace context as a W3C `traceparent` string, to carry inside a
/// message; `None` without an exporter (or when the span is disabled).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut carrier);
    });
    carrier.remove(TRACEPARENT).filter(|tp| !tp.is_empty())
}

/// The current span's trace context as a `traceparent` string.
pub fn current_traceparent() -> Option<String> {
    traceparent(&tracing::Span::current())
}

/// The trace context of a `traceparent` string (empty if it is not one).
pub fn context_from_traceparent(traceparent: &str) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&StringCarrier(traceparent))
    })
}

/// Makes `span` (not yet entered) a child of the context in `traceparent`;
/// an empty or malformed string leaves it as it is.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let _ = span.set_parent(context_from_traceparent(traceparent));
}

/// Links `span` to the trace in `traceparent` (for work done for several
/// traces at once); an empty or malformed string adds nothing.
pub fn link_traceparent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt as _;
    if traceparent.is_empty() {
        return;
    }
    let cx = context_from_traceparent(traceparent);
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of `vars` only, for the `*_requested` checks.
    pub(crate) fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn export_only_when_an_endpoint_is_set() {
        assert!(!exporter_requested(env(&[])));
        assert!(!exporter_requested(env(&[("OTEL_SERVICE_NAME", "x")])));
        assert!(!exporter_requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            ""
        )])));
        assert!(exporter_requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(exporter_requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
    }

    #[test]
    fn the_sdk_or_the_traces_exporter_can_be_turned_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(!exporter_requested(env(&[
            endpoint,
            ("OTEL_SDK_DISABLED", "true")
        ])));
        assert!(exporter_requested(env(&[
            endpoint,
            ("OTEL_SDK_DISABLED", "false")
        ])));
        assert!(!exporter_requested(env(&[
            endpoint,
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
        assert!(exporter_requested(env(&[
            endpoint,
            ("OTEL_TRACES_EXPORTER", "otlp")
        ])));
    }

    #[test]
    fn without_an_exporter_nothing_is_propagated() {
        let span = tracing::info_span!("quiet");
        assert_eq!(traceparent(&span), None);
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject_span(&span, &mut metadata);
        assert!(metadata.get(TRACEPARENT).is_none());
    }

    #[test]
    fn a_traceparent_string_round_trips() {
        use opentelemetry::trace::TraceContextExt as _;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_from_traceparent(tp);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, tp.parse().expect("header"));
        let from_headers = extract(&headers);
        assert_eq!(from_headers.span().span_context(), &sc);
        assert!(
            !context_from_traceparent("garbage")
                .span()
                .span_context()
                .is_valid()
        );
    }
}
