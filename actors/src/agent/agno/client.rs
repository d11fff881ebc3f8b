//! Starting an agno client process: the Python program shipped in this repository
//! (`agno/agno_client.py`, embedded in the binary and written next to the history database),
//! run by the agno venv's interpreter with the same spawn, line-reader and stop machinery as the
//! Claude Code CLI ([`AgentProcess`]). Its events go into a channel, so a process can be started
//! before anyone owns it (the pool) and handed over later.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::agent::process::{AgentProcess, ProcessEvent, SpawnSpec};
use crate::config::RuntimeConfig;
use crate::error::AgentError;

/// The client program, embedded so the binary needs only the interpreter at run time.
pub const CLIENT_SOURCE: &str = include_str!("../../../../agno/agno_client.py");

/// Longest protocol line accepted from a client.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What the error messages tell an operator to do.
pub const INSTALL_HINT: &str = "install the pinned agno environment with `bash agno/install.sh` \
     (creates .tools/agno-venv) and point AGNO_PYTHON at its bin/python";

/// A started client and its event stream.
pub struct Client {
    /// The process.
    pub process: AgentProcess,
    /// Its events, in order (lines, EOF, exit).
    pub events: mpsc::UnboundedReceiver<ProcessEvent>,
    /// True once its `ready` line was read (pooled clients).
    pub ready: bool,
}

/// Writes the embedded client next to the history database (once per start-up, or when the
/// file differs), with private permissions.
pub async fn install_script(cfg: &RuntimeConfig) -> std::io::Result<()> {
    let path = &cfg.agno.client_script;
    if let Some(dir) = path.parent() {
        crate::workspace::create_private_dir(dir).await?;
    }
    if tokio::fs::read_to_string(path).await.ok().as_deref() == Some(CLIENT_SOURCE) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, CLIENT_SOURCE).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Starts a client (not waiting for `ready`).
pub async fn start(cfg: &RuntimeConfig, tag: i64) -> Result<Client, AgentError> {
    let dir = cfg
        .agno
        .client_script
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| cfg.workspace_root.clone());
    crate::workspace::create_private_dir(&dir)
        .await
        .map_err(|source| AgentError::Workspace {
            path: dir.display().to_string(),
            source,
        })?;
    if let Some(user) = cfg.security.agent_user {
        // The client script and the history database are the agent user's.
        let owned = dir.clone();
        tokio::task::spawn_blocking(move || crate::agent::agent_user::hand_over(&owned, user))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|source| AgentError::Workspace {
                path: dir.display().to_string(),
                source,
            })?;
    }
    let spec = SpawnSpec {
        program: cfg.agno.python.clone(),
        args: vec![cfg.agno.client_script.display().to_string()],
        env: super::credentials::client_env(cfg, std::env::vars()),
        cwd: dir,
        max_line_bytes: MAX_LINE_BYTES,
        marker: crate::agent::family::new_marker(tag),
        priority: cfg.agent_priority,
        uid: cfg.security.agent_user.map(|u| u.uid),
        gid: cfg.security.agent_user.map(|u| u.gid),
    };
    let (tx, events) = mpsc::unbounded_channel();
    let python = spec.program.display().to_string();
    let spawned = crate::agent::launcher::run(
        spec.priority,
        crate::agent::launcher::Lane::Launch,
        move || AgentProcess::spawn(&spec, move |ev| tx.send(ev).is_ok()),
    )
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let process = spawned.map_err(|e| {
        AgentError::Agno(format!(
            "could not start the agno client with `{python}`: {e}; {INSTALL_HINT}"
        ))
    })?;
    Ok(Client {
        process,
        events,
        ready: false,
    })
}

/// Starts a client and waits until it has imported agno and said `ready` (for the pool).
pub async fn start_ready(cfg: &RuntimeConfig, timeout: Duration) -> Result<Client, AgentError> {
    let mut client = start(cfg, -1).await?;
    let wait = async {
        while let Some(ev) = client.events.recv().await {
            match ev {
                ProcessEvent::Line(line) => match parse(&line) {
                    Some(v) if v["type"] == "ready" => return Ok(()),
                    Some(v) if v["type"] == "error" => {
                        return Err(v["message"]
                            .as_str()
                            .unwrap_or("agno client error")
                            .to_string())
                    }
                    _ => {}
                },
                ProcessEvent::Exited(info) => {
                    return Err(format!(
                        "the agno client exited before it was ready ({info})"
                    ))
                }
                _ => {}
            }
        }
        Err("the agno client closed its output before it was ready".to_string())
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(())) => {
            client.ready = true;
            Ok(client)
        }
        Ok(Err(e)) => {
            let tail = client.process.stderr_tail().join("\n");
            Err(AgentError::Agno(if tail.is_empty() {
                e
            } else {
                format!("{e}: {tail}")
            }))
        }
        Err(_) => Err(AgentError::Agno(format!(
            "the agno client was not ready within {} s",
            timeout.as_secs()
        ))),
    }
}

/// One protocol line, if it is a JSON object.
pub fn parse(line: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    v.is_object().then_some(v)
}
