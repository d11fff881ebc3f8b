//! `GET /metrics` in the Prometheus text format: sessions by state, subtasks by terminal
//! status, callback deliveries/retries/failures and queue depth, live agent processes, HTTP
//! latency, build info.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use actors::index::SessionStatus;
use actors::metrics::{Histogram, Metrics, BUCKETS, METRICS};
use actors::runtime::Runtime;
use warp::{Filter, Rejection, Reply};

/// `GET /metrics` in the OpenAPI document (documentation only: the route is [`route`]).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format (version 0.0.4)", content_type = "text/plain")))]
#[allow(dead_code)] // only its generated `__path_…` type is used, by the OpenAPI derive
pub fn metrics_doc() {}

/// The route.
pub fn route(
    rt: Runtime,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(move || {
        let body = render(&rt);
        warp::reply::with_header(body, "content-type", "text/plain; version=0.0.4").into_response()
    })
}

fn render(rt: &Runtime) -> String {
    let m = &*METRICS;
    let mut out = String::new();
    let sessions = rt.index().list();
    let count = |s: SessionStatus| sessions.iter().filter(|i| i.status == s).count();
    metric(
        &mut out,
        "executor_sessions",
        "gauge",
        "Live sessions by state.",
        &[
            ("state=\"idle\"", count(SessionStatus::Idle) as u64),
            ("state=\"running\"", count(SessionStatus::Running) as u64),
            (
                "state=\"suspended\"",
                count(SessionStatus::Suspended) as u64,
            ),
            ("state=\"queued\"", count(SessionStatus::Queued) as u64),
        ],
    );
    metric(
        &mut out,
        "executor_subtasks_total",
        "counter",
        "Subtasks ended, by terminal status.",
        &[
            ("status=\"COMPLETED\"", Metrics::get(&m.subtasks_completed)),
            ("status=\"FAILED\"", Metrics::get(&m.subtasks_failed)),
            ("status=\"CANCELLED\"", Metrics::get(&m.subtasks_cancelled)),
        ],
    );
    let single = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        metric(out, name, kind, help, &[("", v)])
    };
    single(
        &mut out,
        "executor_callback_deliveries_total",
        "counter",
        "Callbacks accepted by the receiver.",
        Metrics::get(&m.callback_deliveries),
    );
    single(
        &mut out,
        "executor_callback_retries_total",
        "counter",
        "Callback attempts retried.",
        Metrics::get(&m.callback_retries),
    );
    single(
        &mut out,
        "executor_callback_failures_total",
        "counter",
        "Callbacks given up (4xx or retries exhausted).",
        Metrics::get(&m.callback_failures),
    );
    single(
        &mut out,
        "executor_callback_queued_tasks",
        "gauge",
        "Tasks with callbacks waiting in the spool.",
        Metrics::get(&m.callback_queued_tasks),
    );
    for (name, kind, help, v) in m.spool_lines() {
        single(&mut out, name, kind, help, v);
    }
    single(
        &mut out,
        "executor_agent_processes",
        "gauge",
        "Agent (CLI) processes alive.",
        actors::child::owned_count(actors::child::ChildKind::Agent) as u64,
    );
    single(
        &mut out,
        "executor_event_streams",
        "gauge",
        "Tasks with an event-stream entry (SSE subscribers or the current subtask's events).",
        rt.events().len() as u64,
    );
    single(
        &mut out,
        "executor_event_subscribers",
        "gauge",
        "Open SSE streams (GET /api/tasks/{id}/events).",
        rt.events().subscribers() as u64,
    );
    let conns = &super::conn::STATS;
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    single(
        &mut out,
        "executor_http_connections",
        "gauge",
        "Open HTTP connections.",
        load(&conns.open),
    );
    single(
        &mut out,
        "executor_http_connections_idle_closed_total",
        "counter",
        "Idle connections closed by the header or keep-alive timeout.",
        load(&conns.idle_closed),
    );
    single(
        &mut out,
        "executor_http_connections_evicted_total",
        "counter",
        "Idle connections closed to make room at the connection cap.",
        load(&conns.evicted),
    );
    single(
        &mut out,
        "executor_http_connections_refused_total",
        "counter",
        "Connections closed at once: at the cap with every connection busy.",
        load(&conns.refused),
    );
    single(
        &mut out,
        "executor_log_lines_dropped_total",
        "counter",
        "Log lines dropped because standard output was not read fast enough.",
        crate::logging::dropped_lines(),
    );
    histogram(
        &mut out,
        "executor_http_request_duration_seconds",
        "HTTP request latency.",
        &m.http,
    );
    histogram(
        &mut out,
        "executor_event_relay_seconds",
        "From a callback event being produced to the receiver accepting it.",
        &m.relay,
    );
    let version = crate::config::VERSION;
    let claude = actors::config::PINNED_CLAUDE_CODE_VERSION;
    metric(
        &mut out,
        "executor_build_info",
        "gauge",
        "Build information.",
        &[(
            &format!("version=\"{version}\",claude_code=\"{claude}\""),
            1,
        )],
    );
    out
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, le) in BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += h.over.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, values: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}
