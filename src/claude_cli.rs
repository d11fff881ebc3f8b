//! Finding the Claude Code CLI at start-up, and `--install-claude`, which fetches the pinned
//! version into `./.tools/claude-code` with npm so a task posted right after start-up runs.

use std::process::Stdio;

use actors::config::PINNED_CLAUDE_CODE_VERSION;

use crate::config::{find_in_path, local_claude_bin, Settings, LOCAL_CLAUDE_DIR};

/// Checks that the configured CLI exists; installs it when asked to, otherwise says how.
pub async fn ensure(settings: &mut Settings) {
    let bin = settings.runtime.claude.bin.clone();
    if find_in_path(&bin.display().to_string()).is_some() {
        tracing::info!("Claude Code CLI: {}", bin.display());
        return;
    }
    if settings.install_claude {
        match install().await {
            Ok(()) => {
                let local =
                    std::path::absolute(local_claude_bin()).unwrap_or_else(|_| local_claude_bin());
                tracing::info!(
                    "Installed Claude Code CLI {PINNED_CLAUDE_CODE_VERSION}: {}",
                    local.display()
                );
                settings.runtime.claude.bin = local;
                return;
            }
            Err(e) => tracing::error!("Installing the Claude Code CLI failed: {e}"),
        }
    }
    tracing::warn!(
        "Claude Code CLI not found at '{}'. Claude tasks will fail until it is installed: run `npm install --prefix {LOCAL_CLAUDE_DIR} @anthropic-ai/claude-code@{PINNED_CLAUDE_CODE_VERSION}` (or start with --install-claude), or set CLAUDE_BIN",
        bin.display()
    );
}

async fn install() -> Result<(), String> {
    tracing::info!("Installing @anthropic-ai/claude-code@{PINNED_CLAUDE_CODE_VERSION} into {LOCAL_CLAUDE_DIR} with npm ...");
    tokio::fs::create_dir_all(LOCAL_CLAUDE_DIR)
        .await
        .map_err(|e| e.to_string())?;
    let mut npm = tokio::process::Command::new("npm");
    npm.args([
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        LOCAL_CLAUDE_DIR,
    ])
    .arg(format!(
        "@anthropic-ai/claude-code@{PINNED_CLAUDE_CODE_VERSION}"
    ))
    .stdin(Stdio::null());
    let status = actors::child::status(&mut npm)
        .await
        .map_err(|e| format!("cannot run npm ({e}); install Node.js and npm first"))?;
    if !status.success() {
        return Err(format!("npm exited with {status}"));
    }
    if local_claude_bin().is_file() {
        Ok(())
    } else {
        Err(format!(
            "npm finished but {} is missing",
            local_claude_bin().display()
        ))
    }
}
