//! OpenTelemetry traces, configured as the original's (`OTEL_ENABLED`, `OTEL_SERVICE_NAME`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER_ARG`; contract §8.2): the executor's
//! `tracing` spans (requests, subtasks, workspace preparation, agent turns, tool uses, callback
//! deliveries) are exported over OTLP/HTTP (protobuf) to a collector.
//!
//! The batch processor runs on its own thread with a bounded queue: a slow or unreachable
//! collector costs dropped spans, never a slower request or callback. Exports go through the
//! executor's own reqwest client (on the tokio runtime), so HTTPS collectors work without a
//! second HTTP stack.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

mod metrics;

/// `OTEL_ENABLED`: `true` turns exporting on (off by default, as the original).
pub const ENV_ENABLED: &str = "OTEL_ENABLED";
/// `OTEL_SERVICE_NAME`: the `service.name` of every span.
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's OTLP/HTTP base URL (`/v1/traces` is added).
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_TRACES_SAMPLER_ARG`: share of new traces kept, 0.0–1.0 (continued traces follow
/// their parent's decision).
pub const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// `OTEL_METRICS_ENABLED`: `true` also pushes the executor's counters over OTLP
/// (`/v1/metrics`); Prometheus `/metrics` stays.
pub const ENV_METRICS_ENABLED: &str = "OTEL_METRICS_ENABLED";
/// `OTEL_TRACEPARENT`: the trace executor_manager started; parent of the `TASK_INFO` subtask.
pub const ENV_TRACEPARENT: &str = "OTEL_TRACEPARENT";
/// `OTEL_TRACESTATE`: vendor state that goes with `OTEL_TRACEPARENT`.
pub const ENV_TRACESTATE: &str = "OTEL_TRACESTATE";
/// Service name when `OTEL_SERVICE_NAME` is unset (the original names each service
/// `wegent-<part>`).
pub const DEFAULT_SERVICE_NAME: &str = "wegent-executor";
/// Collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset (OTLP/HTTP's port).
pub const DEFAULT_ENDPOINT: &str = "http://otel-collector:4318";
/// Path of the traces signal under the endpoint (OTLP/HTTP specification).
pub const TRACES_PATH: &str = "/v1/traces";
/// OTLP/gRPC's port: an endpoint on it is almost surely a gRPC receiver (the original's default
/// is `:4317`), which this executor does not speak; said once at start-up.
const GRPC_PORT_SUFFIX: &str = ":4317";
/// Longest time one export may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait at exit for the last spans to go out (after `SHUTDOWN_GRACE_SECS`: together
/// they stay inside `docker stop`'s 10 s).
pub const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest collector answer read (answers are tiny; a bigger one is cut off).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Instrumentation scope of every span and metric.
const TRACER_NAME: &str = "executor";

/// The OpenTelemetry settings (environment only, as the original's).
#[derive(Debug, Clone)]
pub struct OtelSettings {
    /// `OTEL_ENABLED`.
    pub enabled: bool,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler_ratio: f64,
    /// `OTEL_METRICS_ENABLED`.
    pub metrics_enabled: bool,
    /// `OTEL_TRACEPARENT`.
    pub traceparent: Option<String>,
    /// `OTEL_TRACESTATE`.
    pub tracestate: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_flag(name: &str) -> bool {
    env(name)
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

impl OtelSettings {
    /// Reads the settings; a sampler ratio that is not a number in 0–1 is an error.
    pub fn from_env() -> anyhow::Result<Self> {
        let sampler_ratio = match env(ENV_SAMPLER_ARG) {
            None => 1.0,
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .with_context(|| format!("{ENV_SAMPLER_ARG}={v:?} is not a number from 0 to 1"))?,
        };
        Ok(Self {
            enabled: env_flag(ENV_ENABLED),
            service_name: env(ENV_SERVICE_NAME).unwrap_or_else(|| DEFAULT_SERVICE_NAME.into()),
            endpoint: env(ENV_ENDPOINT).unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            sampler_ratio,
            metrics_enabled: env_flag(ENV_METRICS_ENABLED),
            traceparent: env(ENV_TRACEPARENT),
            tracestate: env(ENV_TRACESTATE),
        })
    }

    /// Where spans are POSTed: the endpoint plus `/v1/traces` (kept if already there).
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with(TRACES_PATH) {
            base.to_string()
        } else {
            format!("{base}{TRACES_PATH}")
        }
    }

    /// `NAME=value` lines for `--check-config` (the endpoint without credentials).
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!("{ENV_ENABLED}={}", self.enabled),
            format!("{ENV_SERVICE_NAME}={}", self.service_name),
            format!("{ENV_ENDPOINT}={}", crate::redact_url(&self.endpoint)),
            format!("{ENV_SAMPLER_ARG}={}", self.sampler_ratio),
            format!("{ENV_METRICS_ENABLED}={}", self.metrics_enabled),
        ]
    }
}

/// The running exporter; [`Telemetry::shutdown`] sends what is still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes queued spans and stops the exporter, waiting at most [`FINAL_FLUSH_TIMEOUT`]
    /// (an unreachable collector must not hold up the exit). The flush runs on a thread of its
    /// own: it waits for exports that run on the async runtime.
    pub async fn shutdown(self) {
        let (provider, meters) = (self.provider, self.meters);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("otel-shutdown".into())
            .spawn(move || {
                if let Some(m) = meters {
                    let _ = m.shutdown();
                }
                let _ = tx.send(provider.shutdown());
            });
        if spawned.is_err() {
            return;
        }
        match tokio::time::timeout(FINAL_FLUSH_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("OpenTelemetry: final export failed: {e}"),
            _ => tracing::warn!(
                "OpenTelemetry: final export did not finish within {FINAL_FLUSH_TIMEOUT:?}; spans dropped"
            ),
        }
    }
}

/// The tracer provider for `settings` (`None` when `OTEL_ENABLED` is off); must be called
/// inside the tokio runtime (exports run on it).
pub fn start(settings: &OtelSettings) -> anyhow::Result<Option<(SdkTracerProvider, Telemetry)>> {
    if !settings.enabled {
        return Ok(None);
    }
    let client = ExportClient {
        client: reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("OpenTelemetry HTTP client")?,
        runtime: tokio::runtime::Handle::try_current()
            .context("OpenTelemetry needs the runtime")?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_endpoint(settings.traces_url())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("OpenTelemetry exporter")?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", crate::config::VERSION))
        .build();
    let meters = settings
        .metrics_enabled
        .then(|| metrics::start(client, &settings.endpoint, resource.clone()))
        .transpose()
        .context("OpenTelemetry metrics exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampler_ratio,
        ))))
        .with_resource(resource)
        .build();
    let telemetry = Telemetry {
        provider: provider.clone(),
        meters,
    };
    Ok(Some((provider, telemetry)))
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(TRACER_NAME))
}

/// Says once what the settings mean in practice (no secrets: the endpoint is redacted).
pub fn announce(settings: &OtelSettings) {
    if !settings.enabled {
        return;
    }
    let url = crate::redact_url(&settings.traces_url());
    tracing::info!(
        "OpenTelemetry: exporting traces of service {} to {url} (OTLP/HTTP protobuf, sampling {})",
        settings.service_name,
        settings.sampler_ratio
    );
    if settings
        .endpoint
        .trim_end_matches('/')
        .ends_with(GRPC_PORT_SUFFIX)
    {
        tracing::warn!(
            "OpenTelemetry: {ENV_ENDPOINT} uses port 4317 (OTLP/gRPC); this executor speaks OTLP/HTTP: point it at the collector's port 4318"
        );
    }
    if settings.metrics_enabled {
        tracing::info!(
            "OpenTelemetry: pushing metrics to {} too (Prometheus /metrics stays)",
            crate::redact_url(&settings.endpoint)
        );
    }
}

/// Makes `span` continue the W3C trace `traceparent` (with `tracestate`); does nothing when
/// the value is invalid or exporting is off.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(tp) = traceparent else {
        return;
    };
    let mut carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_string(), ts.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// Makes `span` a child of the current span (in OpenTelemetry terms only, so the current
/// span — a request's — can end before it) and hands it over as a subtask's span.
pub fn child_of_current(span: tracing::Span) -> actors::trace::SpanHandle {
    let _ = span.set_parent(tracing::Span::current().context());
    actors::trace::SpanHandle::new(span)
}

/// Sends OTLP requests with the executor's reqwest client on its tokio runtime (the batch
/// processor's own thread has no runtime; the request runs there and is awaited from here).
#[derive(Debug, Clone)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

type HttpResult = Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(&self, request: http::Request<bytes::Bytes>) -> HttpResult {
        let client = self.client.clone();
        let job = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut answer = http::Response::builder().status(resp.status());
            if let Some(h) = answer.headers_mut() {
                *h = std::mem::take(resp.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok::<_, opentelemetry_http::HttpError>(answer.body(bytes::Bytes::from(body))?)
        });
        job.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str) -> OtelSettings {
        OtelSettings {
            enabled: true,
            service_name: DEFAULT_SERVICE_NAME.into(),
            endpoint: endpoint.into(),
            sampler_ratio: 1.0,
            metrics_enabled: false,
            traceparent: None,
            tracestate: None,
        }
    }

    #[test]
    fn the_traces_path_is_added_once() {
        for (endpoint, want) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
            ("https://c/otlp", "https://c/otlp/v1/traces"),
        ] {
            assert_eq!(settings(endpoint).traces_url(), want, "{endpoint}");
        }
    }

    #[test]
    fn check_config_hides_endpoint_credentials() {
        let lines = settings("https://user:pw@c:4318/?token=x").describe();
        assert!(lines
            .iter()
            .all(|l| !l.contains("pw") && !l.contains("token")));
    }
}
