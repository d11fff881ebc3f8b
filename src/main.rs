//! `executor`: runs Claude Code tasks for a Wegent-style platform over HTTP.
//!
//! Start-up order: settings → logging → workspace root → Claude Code CLI check → actor runtime →
//! listener → `TASK_INFO` → serve until SIGTERM/SIGINT → close sessions, flush callbacks, exit 0.

mod claude_cli;
mod config;
mod http;
mod shutdown;

mod logging;
mod telemetry;

use std::net::SocketAddr;
use std::process::ExitCode;

use actors::runtime::Runtime;
use actors::task::TaskSpec;
use anyhow::Context;
use clap::Parser;

use crate::config::{Cli, Settings};

/// mimalloc instead of glibc's allocator: the relay frees many mid-sized buffers (payloads,
/// bodies, thinking lists) across threads, and glibc's free-list consolidation was a fifth of
/// the executor's own CPU per task (perf, `cargo bench --bench control_plane`).
///
/// Built with `no_thp`: by default mimalloc asks for transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`) on its regions, so a new thread's heap or a growing arena faulted
/// in 2 MiB pages, each zeroed whole in the kernel: 0.3–4 ms with a CPU held at the executor's
/// priority, which the HTTP workers waited behind (sequential accept p99 5.4–7.1 ms under the
/// CPU-heavy control-plane bench, 1.2–2.0 ms with this feature). The feature only drops that
/// request: it does not disable huge pages for the process (which the agents would inherit),
/// so a host set to THP `always` still decides for itself.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// At shutdown, the least time open connections get to close after the sessions are done.
const SERVER_DRAIN_MIN: std::time::Duration = std::time::Duration::from_millis(200);

/// Threads in the blocking pool at most (file work, agent launches, `/proc` walks): enough to
/// keep every core busy with short blocking calls, few enough that a burst does not create
/// hundreds (see the runtime set-up in `main`).
const BLOCKING_THREADS: usize = 32;

fn main() -> ExitCode {
    // Before parsing anything else, as the original: a broken setting cannot hide the version.
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-v")
    {
        println!("{}", config::VERSION);
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let settings = match Settings::load(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("executor: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    config::security::harden_process(&settings.runtime.security);
    if settings.check_config {
        for line in settings.describe() {
            println!("{line}");
        }
        return match settings
            .task_info
            .as_deref()
            .map(parse_task_info)
            .transpose()
        {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("executor: configuration error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    // File work and process start-ups run on the blocking pool; its threads stay a minute (not
    // tokio's 10 s) so bursts of new tasks reuse them instead of creating threads (and fresh
    // allocator heaps) again. The pool is capped (tokio's default is 512): a burst of 200 new
    // tasks grew it to ~390 threads, each a fresh zeroed stack, and every `/proc` walk of the
    // executor's children reads one file per thread. Nothing on the pool waits long (a killed
    // family's settle time is waited for asynchronously), so a small pool only queues work.
    // Before the log writer and the spool writer start: they are created at it.
    actors::agent::priority::set_helper_policy(settings.runtime.agent_priority);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(std::time::Duration::from_secs(60))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("executor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter sends on the runtime, so it starts inside it, before the first log line.
    let otel = match rt.block_on(async { telemetry::start(&settings.telemetry) }) {
        Ok(otel) => otel,
        Err(e) => {
            eprintln!("executor: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (provider, telemetry) = otel.unzip();
    // Kept to the end of `main`: dropping it writes out the lines still queued.
    let _log = logging::init(&settings.log_level, settings.log_json, provider.as_ref());
    telemetry::announce(&settings.telemetry);
    let outcome = rt.block_on(run(settings));
    if let Some(t) = telemetry {
        rt.block_on(t.shutdown());
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut settings: Settings) -> anyhow::Result<()> {
    // Before anything is accepted or announced: a stop signal from here on (even during
    // start-up or TASK_INFO) shuts down gracefully once serving has begun.
    let signals = shutdown::Signals::install();
    // First: every later descriptor (agents' pipes, spool files, sockets) counts against it.
    let nofile = http::server::raise_fd_limit();
    prepare_workspace_root(&settings).await?;
    claude_cli::ensure(&mut settings).await;
    match &settings.runtime.callback.url {
        Some(url) => tracing::info!("Callbacks go to {}", redact_url(url)),
        None => tracing::warn!("CALLBACK_URL is not set: status callbacks are disabled"),
    }
    let addr = SocketAddr::new(settings.bind, settings.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("Port {} is already in use ({e}); stop the other process or set PORT to another port", settings.port)
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {e}")
        }
    })?;
    let local = listener.local_addr().context("listener address")?;
    let task_info = settings
        .task_info
        .take()
        .map(|raw| parse_task_info(&raw))
        .transpose()?
        .map(|spec| with_start_up_span(spec, &settings.telemetry));
    let runtime = Runtime::start(settings.runtime.clone()).await?;
    if let Some(spec) = task_info {
        // Before serving, as the original: the task is under way when the port opens.
        let outcome = runtime.execute_task_info(spec).await?;
        tracing::info!("Task execution status: {outcome:?}");
    }
    tracing::info!(
        "Task executor {} listening on http://{local}",
        config::VERSION
    );
    let service = http::service(
        runtime.clone(),
        http::body::BodyLimits {
            max_bytes: settings.max_body_bytes,
            timeout: settings.body_timeout,
        },
        settings.auth_token.clone().map(std::sync::Arc::new),
    );
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::server::serve(
        listener,
        warp::service(service),
        settings.connections,
        nofile,
        async move {
            let _ = serving_stopped.await;
        },
    ));
    signals.wait().await;
    // From here the clock runs: everything below fits in SHUTDOWN_GRACE_SECS. Routes keep
    // answering meanwhile (new tasks get 503, /ready false), so probes see the shutdown.
    let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
    runtime.begin_shutdown();
    tracing::info!("Shutting down: closing sessions and flushing callbacks");
    runtime.shutdown("executor shutting down", deadline).await;
    // Open connections (event streams, keep-alive) get what is left of the deadline to end;
    // the process does not wait for them beyond it.
    let _ = stop_serving.send(());
    let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
    let _ = tokio::time::timeout(rest.max(SERVER_DRAIN_MIN), server).await;
    tracing::info!("Executor stopped");
    Ok(())
}

/// The seed's "Workspace directory does not exist" case: create it, or say why we cannot.
async fn prepare_workspace_root(settings: &Settings) -> anyhow::Result<()> {
    let root = &settings.runtime.workspace_root;
    if let Err(e) = tokio::fs::create_dir_all(root).await {
        anyhow::bail!(
            "Workspace directory does not exist: {} (cannot create it: {e}); set WORKSPACE_ROOT",
            root.display()
        );
    }
    Ok(())
}

/// `TASK_INFO`: one task run at start-up exactly like a POST (contract §8.2). A broken one
/// stops start-up, as the original's `os._exit(1)`.
fn parse_task_info(raw: &str) -> anyhow::Result<TaskSpec> {
    tracing::info!("TASK_INFO environment variable found, attempting to run task");
    let value: serde_json::Value =
        serde_json::from_str(raw).context("TASK_INFO is not valid JSON")?;
    TaskSpec::from_value(&value).context("TASK_INFO is not a valid task")
}

/// The `TASK_INFO` subtask's span continues the trace executor_manager started
/// (`OTEL_TRACEPARENT`/`OTEL_TRACESTATE`).
fn with_start_up_span(mut spec: TaskSpec, otel: &telemetry::OtelSettings) -> TaskSpec {
    let span = actors::trace::subtask_span(spec.task_id, spec.subtask_id, spec.agent.name());
    telemetry::continue_trace(
        &span,
        otel.traceparent.as_deref(),
        otel.tracestate.as_deref(),
    );
    spec.trace.span = actors::trace::SpanHandle::new(span);
    spec
}

/// Shows scheme, host and path of a URL but never its userinfo or query (which may hold tokens).
pub(crate) fn redact_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or_default();
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_credentials_and_query() {
        assert_eq!(
            redact_url("http://u:p@host:1/cb?token=x"),
            "http://host:1/cb"
        );
        assert_eq!(redact_url("http://host/cb"), "http://host/cb");
    }
}
