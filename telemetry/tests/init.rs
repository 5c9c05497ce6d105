//! `init` without the OTLP variables installs the log subscriber only.

#[tokio::test]
async fn without_an_endpoint_no_exporter_is_installed() {
    let requested = quarry_telemetry::exporter_requested(|name| std::env::var(name).ok());
    let guard = quarry_telemetry::init(quarry_telemetry::CLIENT_SERVICE, "warn").expect("init");
    assert_eq!(guard.exporting(), requested);
    if !requested {
        // Nothing to propagate: no OpenTelemetry layer is installed.
        let span = tracing::info_span!("hunt submit");
        assert_eq!(quarry_telemetry::traceparent(&span), None);
    }
    // A second subscriber is refused, not silently stacked.
    assert!(matches!(
        quarry_telemetry::init(quarry_telemetry::CLIENT_SERVICE, "warn"),
        Err(quarry_telemetry::TelemetryError::Subscriber(_))
    ));
    guard.shutdown().await;
}
