//! `executor`: runs Claude Code tasks for a Wegent-style platform over HTTP.
//!
//! Start-up order: settings → logging → workspace root → Claude Code CLI check → actor runtime →
//! listener → `TASK_INFO` → serve until SIGTERM/SIGINT → close sessions, flush callbacks, exit 0.

mod claude_cli;
mod config;
mod http;
mod shutdown;

mod logging;

use std::net::SocketAddr;
use std::process::ExitCode;

use actors::runtime::Runtime;
use actors::task::TaskSpec;
use anyhow::Context;
use clap::Parser;

use crate::config::{Cli, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("executor: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
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
    logging::init(&settings.log_level, settings.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut settings: Settings) -> anyhow::Result<()> {
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
        .transpose()?;
    let runtime = Runtime::start(settings.runtime.clone()).await?;
    if let Some(spec) = task_info {
        // Before serving, as the original: the task is under way when the port opens.
        let outcome = runtime.execute(spec).await?;
        tracing::info!("Task execution status: {outcome:?}");
    }
    tracing::info!(
        "Task executor {} listening on http://{local}",
        env!("CARGO_PKG_VERSION")
    );
    let service = http::service(
        runtime.clone(),
        http::body::BodyLimits {
            max_bytes: settings.max_body_bytes,
            timeout: settings.body_timeout,
        },
        settings.auth_token.clone().map(std::sync::Arc::new),
    );
    let shutdown = {
        let runtime = runtime.clone();
        async move {
            shutdown::signal().await;
            runtime.begin_shutdown();
        }
    };
    http::server::serve(
        listener,
        warp::service(service),
        settings.connections,
        nofile,
        shutdown,
    )
    .await;
    tracing::info!("Shutting down: closing sessions and flushing callbacks");
    runtime
        .shutdown("executor shutting down", settings.shutdown_grace)
        .await;
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
