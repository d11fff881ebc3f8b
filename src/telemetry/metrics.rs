//! Metrics over OTLP when `OTEL_METRICS_ENABLED` is true: the counters `/metrics` serves
//! (Prometheus stays), read at each export by observable instruments, pushed by a periodic
//! reader on its own thread (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s).

use std::sync::atomic::AtomicU64;

use actors::metrics::{Metrics, METRICS};
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::Resource;

use super::{ExportClient, EXPORT_TIMEOUT, TRACER_NAME};

/// Path of the metrics signal under the endpoint (OTLP/HTTP specification).
pub const METRICS_PATH: &str = "/v1/metrics";

/// The meter provider exporting the executor's counters to `endpoint` + `/v1/metrics`.
pub fn start(
    client: ExportClient,
    endpoint: &str,
    resource: Resource,
) -> anyhow::Result<SdkMeterProvider> {
    let base = endpoint.trim_end_matches('/');
    let base = base.strip_suffix(super::TRACES_PATH).unwrap_or(base);
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(format!("{base}{METRICS_PATH}"))
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter).build())
        .with_resource(resource)
        .build();
    register(&provider.meter(TRACER_NAME));
    Ok(provider)
}

/// A counter read from one of the executor's atomics.
fn counter(
    meter: &Meter,
    name: &'static str,
    help: &'static str,
    value: fn() -> &'static AtomicU64,
) {
    meter
        .u64_observable_counter(name)
        .with_description(help)
        .with_callback(move |obs: &dyn AsyncInstrument<u64>| {
            obs.observe(Metrics::get(value()), &[])
        })
        .build();
}

/// The instruments; their callbacks live as long as the provider.
fn register(meter: &Meter) {
    meter
        .u64_observable_counter("executor.subtasks")
        .with_description("Subtasks ended, by terminal status.")
        .with_callback(|obs: &dyn AsyncInstrument<u64>| {
            let m = &*METRICS;
            for (status, v) in [
                ("COMPLETED", &m.subtasks_completed),
                ("FAILED", &m.subtasks_failed),
                ("CANCELLED", &m.subtasks_cancelled),
            ] {
                obs.observe(Metrics::get(v), &[KeyValue::new("status", status)]);
            }
        })
        .build();
    counter(
        meter,
        "executor.callback.deliveries",
        "Callbacks accepted by the receiver.",
        || &METRICS.callback_deliveries,
    );
    counter(
        meter,
        "executor.callback.retries",
        "Callback attempts retried.",
        || &METRICS.callback_retries,
    );
    counter(
        meter,
        "executor.callback.failures",
        "Callbacks given up on or rejected.",
        || &METRICS.callback_failures,
    );
    meter
        .u64_observable_gauge("executor.callback.queued_tasks")
        .with_description("Tasks with callbacks waiting for delivery.")
        .with_callback(|obs: &dyn AsyncInstrument<u64>| {
            obs.observe(Metrics::get(&METRICS.callback_queued_tasks), &[])
        })
        .build();
}
