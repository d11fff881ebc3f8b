//! One Dify subtask, start to end: the callbacks of contract §4.4 (10, 30, then exactly one
//! terminal), the conversation id read before and stored after.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::client::{AppMode, DifyClient};
use super::{conversation, DifyConfig};
use crate::crypto::TokenCipher;
use crate::payload::{CallbackPayload, SubtaskContext, TaskStatus};
use crate::task::TaskSpec;

/// Message of the COMPLETED callback.
pub const COMPLETED_MESSAGE: &str = "Dify Agent execution completed";
/// Message of the FAILED callback of a task without key or base URL.
pub const CONFIG_MESSAGE: &str = "Dify configuration is incomplete or invalid";
/// Message of the FAILED callback of an empty answer.
pub const NO_ANSWER_MESSAGE: &str = "No answer received from Dify application";

/// Everything one Dify subtask needs.
pub struct DifyRun {
    /// Who the callbacks are about.
    pub ctx: SubtaskContext,
    /// The subtask.
    pub spec: TaskSpec,
    /// The prompt as prepared for the agent.
    pub prompt: String,
    /// The task's directory (where the conversation id is kept).
    pub task_dir: PathBuf,
    /// Decrypts an encrypted `DIFY_API_KEY`.
    pub cipher: TokenCipher,
    /// Fires on a cancel request.
    pub cancel: CancellationToken,
    /// Limit of the streaming call (300 s).
    pub timeout: Duration,
}

/// Runs the subtask, sending its callbacks through `emit`; returns the terminal status (whose
/// callback was sent).
pub async fn run_dify(run: DifyRun, emit: &(dyn Fn(CallbackPayload) + Send + Sync)) -> TaskStatus {
    let DifyRun {
        ctx,
        spec,
        prompt,
        task_dir,
        cipher,
        cancel,
        timeout,
    } = run;
    let end = |status: TaskStatus, message: String, result: Option<serde_json::Value>| {
        emit(ctx.payload(100, status, message, result));
        status
    };
    let cancelled = || {
        end(
            TaskStatus::Cancelled,
            crate::agent::claude_turn::CANCEL_MESSAGE.into(),
            None,
        )
    };
    if cancel.is_cancelled() {
        return cancelled();
    }
    let cfg = DifyConfig::from_spec(&spec, &prompt, &cipher);
    let base_ok = cfg.base_url.starts_with("http://") || cfg.base_url.starts_with("https://");
    let (Some(key), true) = (cfg.api_key.clone(), base_ok) else {
        let what = if base_ok {
            "bot[0].agent_config.env.DIFY_API_KEY is required"
        } else {
            "DIFY_BASE_URL must be an http(s) URL"
        };
        return end(
            TaskStatus::Failed,
            format!("{CONFIG_MESSAGE}: {what}"),
            None,
        );
    };
    let client = match DifyClient::new(&cfg.base_url, key, format!("task-{}", ctx.task_id)) {
        Ok(c) => c,
        Err(e) => return fail(&end, &e.to_string()),
    };
    emit(ctx.payload(
        10,
        TaskStatus::Running,
        "Starting Dify Agent execution",
        None,
    ));
    let mode = tokio::select! {
        _ = cancel.cancelled() => return cancelled(),
        m = client.app_mode() => m,
    };
    tracing::info!(
        "task {}: Dify app mode {mode:?} at {}",
        ctx.task_id,
        cfg.base_url
    );
    let conversation_id = match mode {
        AppMode::Chat if !spec.new_session => conversation::load(&task_dir).await,
        _ => None,
    };
    emit(ctx.payload(
        30,
        TaskStatus::Running,
        "Sending message to Dify application",
        None,
    ));
    let outcome = client
        .stream(
            mode,
            &cfg.query,
            &cfg.params,
            conversation_id.as_deref(),
            &cancel,
            timeout,
        )
        .await;
    let outcome = match outcome {
        Ok(o) if o.cancelled => return cancelled(),
        Ok(o) => o,
        Err(e) => return fail(&end, &e.to_string()),
    };
    if mode == AppMode::Chat {
        if let Some(id) = outcome.conversation_id.as_deref() {
            if let Err(e) = conversation::save(&task_dir, id).await {
                tracing::warn!(
                    "task {}: could not store the Dify conversation id: {e}",
                    ctx.task_id
                );
            }
        }
    }
    if cancel.is_cancelled() {
        return cancelled();
    }
    if outcome.answer.is_empty() {
        return end(TaskStatus::Failed, NO_ANSWER_MESSAGE.into(), None);
    }
    end(
        TaskStatus::Completed,
        COMPLETED_MESSAGE.into(),
        Some(json!({"value": outcome.answer, "thinking": [], "blocks": []})),
    )
}

fn fail(
    end: &dyn Fn(TaskStatus, String, Option<serde_json::Value>) -> TaskStatus,
    why: &str,
) -> TaskStatus {
    let message = crate::mask::mask_str(&format!("Dify Agent execution failed: {why}"));
    tracing::warn!("{message}");
    end(TaskStatus::Failed, message, None)
}
