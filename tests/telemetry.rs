//! OpenTelemetry: with `OTEL_ENABLED=true` the executor's spans reach an OTLP/HTTP collector
//! (here: a receiver in the test that decodes every `ExportTraceServiceRequest`), continuing the
//! caller's trace (`traceparent` header, or `OTEL_TRACEPARENT` for `TASK_INFO`), with the
//! configured service name, `task_id` attributes and no secrets; and a collector that never
//! answers slows no request and no callback.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as Number};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use warp::Filter;

/// How long spans may take to arrive (the batch delay is set to 100 ms below).
const SPAN_WAIT: Duration = Duration::from_secs(20);
/// The caller's trace: trace id and parent span id, sampled.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver on 127.0.0.1, on its own thread and runtime.
struct Collector {
    url: String,
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Collector {
    fn start() -> Self {
        let got: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
        let metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>> = Arc::default();
        let (sink, metric_sink) = (got.clone(), metrics.clone());
        let answer =
            || warp::reply::with_header(Vec::<u8>::new(), "content-type", "application/x-protobuf");
        let traces = warp::post()
            .and(warp::path!("v1" / "traces"))
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                sink.lock().unwrap().push(req);
                answer()
            });
        let metric_route = warp::post()
            .and(warp::path!("v1" / "metrics"))
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                let req = ExportMetricsServiceRequest::decode(body).expect("OTLP protobuf");
                metric_sink.lock().unwrap().push(req);
                answer()
            });
        let route = traces.or(metric_route);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = warp::serve(route).incoming(listener).run() => {}
                    _ = rx => {}
                }
            });
        });
        Self {
            url,
            got,
            metrics,
            _stop: tx,
        }
    }

    /// Every span received so far, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let got = self.got.lock().unwrap();
        let mut out = Vec::new();
        for req in got.iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .and_then(|a| a.value.as_ref()?.value.as_ref())
                    .map(|v| match v {
                        AnyValue::StringValue(s) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    out.extend(ss.spans.iter().map(|s| (service.clone(), s.clone())));
                }
            }
        }
        out
    }

    /// Waits until spans named `names` (each at least once) have arrived.
    async fn wait_for(&self, names: &[&str]) -> Vec<(String, Span)> {
        let deadline = Instant::now() + SPAN_WAIT;
        loop {
            let spans = self.spans();
            if names
                .iter()
                .all(|n| spans.iter().any(|(_, s)| s.name == *n))
            {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans {names:?} did not all arrive; got {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // polling interval, not a sync
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::IntValue(i) => Some(*i),
            AnyValue::StringValue(s) => s.parse().ok(),
            _ => None,
        }
    })
}

/// The first span named `name`.
fn named<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    &spans
        .iter()
        .find(|(_, s)| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span"))
        .1
}

fn otel_env(collector: &Collector) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_ENABLED", "true".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.clone()),
        ("OTEL_SERVICE_NAME", "executor-under-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

async fn start_with(rx: &CallbackReceiver, env: &[(&str, String)]) -> Executor {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start_fake(rx, &pairs).await
}

#[tokio::test]
async fn spans_continue_the_request_trace_with_parentage_service_name_and_no_secrets() {
    let collector = Collector::start();
    let rx = CallbackReceiver::start();
    let mut env = otel_env(&collector);
    env.push(("ANTHROPIC_API_KEY", "sk-ant-OTELMARK-executor".into()));
    let exec = start_with(&rx, &env).await;
    let task = json!({"task_id": 41, "subtask_id": 7, "prompt": "FAKE:tool\nhi",
        "user": {"git_token": "ghp_OTELMARK000000000000", "name": "u"},
        "bot": [{"shell_type": "ClaudeCode",
                 "agent_config": {"env": {"model": "claude", "model_id": "m", "api_key": "sk-OTELMARK-task"}}}]});
    let resp = exec
        .client()
        .post(exec.url("/api/tasks/execute"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let end = rx.wait_terminal(41, 7, FAKE_WAIT).await;
    assert_eq!(end["status"], "COMPLETED", "{end}");
    let spans = collector
        .wait_for(&[
            "POST /api/tasks/execute",
            "subtask",
            "workspace preparation",
            "agent turn",
            "tool use",
            "callback delivery",
        ])
        .await;
    for (service, s) in &spans {
        assert_eq!(service, "executor-under-test", "span {}", s.name);
    }
    let request = named(&spans, "POST /api/tasks/execute");
    let subtask = named(&spans, "subtask");
    for (_, s) in spans.iter().filter(|(_, s)| s.name != "probe") {
        assert_eq!(
            hex(&s.trace_id),
            TRACE_ID,
            "span {} is in another trace",
            s.name
        );
    }
    assert_eq!(
        hex(&request.parent_span_id),
        PARENT_ID,
        "request continues traceparent"
    );
    assert_eq!(
        subtask.parent_span_id, request.span_id,
        "subtask is the request's child"
    );
    assert_eq!(int_attr(subtask, "task_id"), Some(41));
    assert_eq!(int_attr(subtask, "subtask_id"), Some(7));
    for child in ["workspace preparation", "agent turn", "callback delivery"] {
        let s = named(&spans, child);
        assert_eq!(
            s.parent_span_id, subtask.span_id,
            "{child} is the subtask's child"
        );
        assert_eq!(int_attr(s, "task_id"), Some(41), "{child} has task_id");
    }
    let turn = named(&spans, "agent turn");
    assert_eq!(named(&spans, "tool use").parent_span_id, turn.span_id);
    let everything = format!("{:?}", collector.got.lock().unwrap());
    assert!(
        !everything.contains("OTELMARK"),
        "a secret reached the collector"
    );
    assert!(
        !spans
            .iter()
            .any(|(_, s)| s.name == "probe" || s.name.contains("/health")),
        "probe requests are not exported"
    );
}

#[tokio::test]
async fn the_task_info_subtask_continues_otel_traceparent() {
    let collector = Collector::start();
    let rx = CallbackReceiver::start();
    let mut env = otel_env(&collector);
    env.push(("OTEL_TRACEPARENT", format!("00-{TRACE_ID}-{PARENT_ID}-01")));
    env.push(("OTEL_TRACESTATE", "vendor=1".into()));
    env.push((
        "TASK_INFO",
        json!({"task_id": 5, "subtask_id": 2, "agent_type": "claude_code", "content": "hi"})
            .to_string(),
    ));
    let _exec = start_with(&rx, &env).await;
    assert_eq!(
        rx.wait_terminal(5, 2, FAKE_WAIT).await["status"],
        "COMPLETED"
    );
    let spans = collector.wait_for(&["subtask", "agent turn"]).await;
    let subtask = named(&spans, "subtask");
    assert_eq!(hex(&subtask.trace_id), TRACE_ID);
    assert_eq!(hex(&subtask.parent_span_id), PARENT_ID);
    assert_eq!(subtask.trace_state, "vendor=1");
    assert_eq!(int_attr(subtask, "task_id"), Some(5));
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_request_and_no_callback() {
    // Accepts connections (the kernel's backlog) and never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rx = CallbackReceiver::start();
    let env = [
        ("OTEL_ENABLED", "true".to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", silent.local_addr().unwrap()),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "20".into()),
    ];
    let exec = start_with(&rx, &env).await;
    for subtask in 1..=4 {
        let started = Instant::now();
        post_task(&exec, 8, subtask, "FAKE:tool\nhi").await;
        let answered = started.elapsed();
        let end = rx.wait_terminal(8, subtask, FAKE_WAIT).await;
        assert_eq!(end["status"], "COMPLETED", "{end}");
        eprintln!(
            "silent collector: POST answered in {answered:?}, subtask done in {:?}",
            started.elapsed()
        );
        // An export waits up to 10 s for this collector; a request or callback that waited on
        // it would take that long.
        assert!(
            answered < Duration::from_secs(5),
            "POST took {answered:?} with a silent collector"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "subtask {subtask} took {:?} with a silent collector",
            started.elapsed()
        );
    }
    drop(silent);
}

/// The latest value of counter `name` with attribute `status` = `status` pushed so far.
fn pushed_counter(collector: &Collector, name: &str, status: &str) -> Option<i64> {
    let got = collector.metrics.lock().unwrap();
    let points = got
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == name)
        .filter_map(|m| match &m.data {
            Some(Data::Sum(sum)) => Some(sum.data_points.clone()),
            _ => None,
        })
        .flatten();
    points
        .filter(|p| {
            p.attributes.iter().any(|a| {
                a.key == "status"
                    && matches!(a.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(AnyValue::StringValue(s)) if s == status)
            })
        })
        .filter_map(|p| match p.value {
            Some(Number::AsInt(i)) => Some(i),
            _ => None,
        })
        .next_back()
}

#[tokio::test]
async fn otel_metrics_enabled_pushes_the_counters_over_otlp() {
    let collector = Collector::start();
    let rx = CallbackReceiver::start();
    let mut env = otel_env(&collector);
    env.push(("OTEL_METRICS_ENABLED", "true".into()));
    env.push(("OTEL_METRIC_EXPORT_INTERVAL", "100".into()));
    let exec = start_with(&rx, &env).await;
    assert_eq!(
        run_task(&exec, &rx, 12, 1, "hi").await["status"],
        "COMPLETED"
    );
    let deadline = Instant::now() + SPAN_WAIT;
    while pushed_counter(&collector, "executor.subtasks", "COMPLETED").unwrap_or(0) < 1 {
        assert!(
            Instant::now() < deadline,
            "no executor.subtasks{{status=COMPLETED}} >= 1 pushed; {} metric requests",
            collector.metrics.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling interval, not a sync
    }
}
