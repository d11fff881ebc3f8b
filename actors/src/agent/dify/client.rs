//! Dify's HTTP API as the agent uses it: `GET /v1/info` (app mode), streaming
//! `POST /v1/chat-messages` and `POST /v1/workflows/run`, and the two stop endpoints. The key
//! goes only in the `Authorization` header of requests to the task's own `DIFY_BASE_URL`;
//! redirects are not followed (a redirect could carry the header elsewhere).

use std::time::Duration;

use serde_json::{json, Map, Value};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::sse::SseDecoder;
use crate::config::Secret;

/// How long the app-mode lookup may take (the original's 10 s).
pub const INFO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one streaming request may take in all (the original's 300 s).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a stop request may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an error body read for its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Why a Dify call failed; the text becomes the subtask's FAILED message, so it never holds
/// the key (only the base URL, the status and Dify's own message).
#[derive(Debug, Error)]
pub enum DifyError {
    /// Dify answered with an HTTP error (401 for a bad key).
    #[error("Dify {api} API error: {message} (HTTP {status})")]
    Status {
        /// `Chat` or `Workflow`.
        api: &'static str,
        /// The HTTP status code.
        status: u16,
        /// Dify's `message`, or the status text.
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("Failed to connect to Dify {api} API at {base}: {reason}")]
    Connect {
        /// `Chat` or `Workflow`.
        api: &'static str,
        /// `DIFY_BASE_URL`.
        base: String,
        /// What went wrong (without URL or headers).
        reason: String,
    },
    /// No complete answer within the time limit.
    #[error("Dify {api} API did not finish within {secs} s")]
    Timeout {
        /// `Chat` or `Workflow`.
        api: &'static str,
        /// The limit.
        secs: u64,
    },
    /// The stream carried an `error` event.
    #[error("Dify {what} error: {message}")]
    Event {
        /// `API` for chat apps, `Workflow` for workflows (the original's wording).
        what: &'static str,
        /// Dify's message.
        message: String,
    },
    /// The stream sent a line too long to be an event.
    #[error("Dify {api} API sent an event over {limit} bytes")]
    Oversized {
        /// `Chat` or `Workflow`.
        api: &'static str,
        /// The limit.
        limit: usize,
    },
}

/// The app kinds Dify reports in `/v1/info`'s `mode`; everything but `workflow` talks chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMode {
    /// `chat`, `chatflow`, `agent-chat`, `advanced-chat`, `completion`, unknown.
    Chat,
    /// `workflow`.
    Workflow,
}

impl AppMode {
    fn api(self) -> &'static str {
        match self {
            Self::Chat => "Chat",
            Self::Workflow => "Workflow",
        }
    }
}

/// What a streamed call produced.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// The answer (chat: the concatenated `answer`s; workflow: the outputs as pretty JSON).
    pub answer: String,
    /// The conversation id Dify assigned or continued (chat apps).
    pub conversation_id: Option<String>,
    /// The call was cancelled (the stop endpoint was called when Dify's task id was known).
    pub cancelled: bool,
}

/// A Dify application reached with one key.
#[derive(Clone)]
pub struct DifyClient {
    http: reqwest::Client,
    base: String,
    key: Secret,
    user: String,
}

impl DifyClient {
    /// A client for the app behind `key` at `base`, acting as `user` (`task-<task_id>`).
    pub fn new(base: &str, key: Secret, user: String) -> Result<Self, DifyError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(INFO_TIMEOUT)
            .build()
            .map_err(|e| DifyError::Connect {
                api: "Chat",
                base: base.to_string(),
                reason: reason_of(&e),
            })?;
        Ok(Self {
            http,
            base: base.to_string(),
            key,
            user,
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose())
    }

    /// The app's mode from `GET /v1/info`; chat when it cannot be told (the original's default).
    pub async fn app_mode(&self) -> AppMode {
        let req = self
            .http
            .get(format!("{}/v1/info", self.base))
            .bearer_auth(self.key.expose())
            .timeout(INFO_TIMEOUT);
        let mode = match req.send().await {
            Ok(r) if r.status().is_success() => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("mode").and_then(Value::as_str).map(String::from)),
            Ok(r) => {
                tracing::warn!(
                    "Dify /v1/info answered HTTP {}; assuming a chat app",
                    r.status().as_u16()
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "Dify /v1/info failed ({}); assuming a chat app",
                    reason_of(&e)
                );
                None
            }
        };
        match mode.as_deref() {
            Some("workflow") => AppMode::Workflow,
            _ => AppMode::Chat,
        }
    }

    /// Streams one call of `mode` with `query`, `inputs` and (chat) `conversation_id`; ends
    /// early, calling the stop endpoint, when `cancel` fires.
    pub async fn stream(
        &self,
        mode: AppMode,
        query: &str,
        inputs: &Map<String, Value>,
        conversation_id: Option<&str>,
        cancel: &CancellationToken,
        timeout: Duration,
    ) -> Result<StreamOutcome, DifyError> {
        let api = mode.api();
        let body = match mode {
            AppMode::Chat => {
                let mut b = json!({"inputs": inputs, "query": query, "response_mode": "streaming",
                    "user": self.user, "auto_generate_name": true});
                if let Some(c) = conversation_id.filter(|c| !c.is_empty()) {
                    b["conversation_id"] = json!(c);
                }
                b
            }
            AppMode::Workflow => {
                let mut inputs = inputs.clone();
                if !inputs.contains_key("query") && !inputs.contains_key("user_query") {
                    inputs.insert("query".into(), json!(query));
                }
                json!({"inputs": inputs, "response_mode": "streaming", "user": self.user})
            }
        };
        let path = match mode {
            AppMode::Chat => "/v1/chat-messages",
            AppMode::Workflow => "/v1/workflows/run",
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = DifyError::Timeout {
            api,
            secs: timeout.as_secs(),
        };
        let send = self.post(path).json(&body).send();
        let resp = tokio::select! {
            _ = cancel.cancelled() => return Ok(StreamOutcome { cancelled: true, ..Default::default() }),
            _ = tokio::time::sleep_until(deadline) => return Err(timed_out),
            r = send => r.map_err(|e| self.connect_err(api, &e))?,
        };
        if !resp.status().is_success() {
            return Err(status_error(api, resp).await);
        }
        let mut resp = resp;
        let mut sse = SseDecoder::default();
        let mut st = StreamState::default();
        loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => {
                    self.stop(mode, st.dify_task_id.as_deref()).await;
                    return Ok(StreamOutcome { cancelled: true, ..st.outcome(mode) });
                }
                _ = tokio::time::sleep_until(deadline) => return Err(timed_out),
                c = resp.chunk() => c.map_err(|e| self.connect_err(api, &e))?,
            };
            let Some(chunk) = chunk else { break };
            let lines = sse.feed(&chunk).map_err(|_| DifyError::Oversized {
                api,
                limit: super::sse::MAX_LINE,
            })?;
            for data in lines {
                st.on_data(mode, &data)?;
            }
        }
        if let Some(data) = sse.finish() {
            st.on_data(mode, &data)?;
        }
        Ok(st.outcome(mode))
    }

    /// Asks Dify to stop its task `dify_task_id` (best effort; logged when it fails).
    pub async fn stop(&self, mode: AppMode, dify_task_id: Option<&str>) {
        let Some(id) = dify_task_id else {
            tracing::warn!("no Dify task id known yet: cannot send a stop request");
            return;
        };
        let path = match mode {
            AppMode::Chat => format!("/v1/chat-messages/{id}/stop"),
            AppMode::Workflow => format!("/v1/workflows/tasks/{id}/stop"),
        };
        let req = self
            .post(&path)
            .json(&json!({"user": self.user}))
            .timeout(STOP_TIMEOUT);
        match req.send().await {
            Ok(r) if r.status().is_success() => tracing::info!("stopped Dify task {id}"),
            Ok(r) => tracing::warn!("stopping Dify task {id}: HTTP {}", r.status().as_u16()),
            Err(e) => tracing::warn!("stopping Dify task {id}: {}", reason_of(&e)),
        }
    }

    fn connect_err(&self, api: &'static str, e: &reqwest::Error) -> DifyError {
        DifyError::Connect {
            api,
            base: self.base.clone(),
            reason: reason_of(e),
        }
    }
}

/// What a stream told so far.
#[derive(Debug, Default)]
struct StreamState {
    answer: String,
    outputs: Option<Value>,
    conversation_id: Option<String>,
    dify_task_id: Option<String>,
}

impl StreamState {
    fn on_data(&mut self, mode: AppMode, data: &str) -> Result<(), DifyError> {
        let Ok(ev) = serde_json::from_str::<Value>(data) else {
            tracing::debug!("Dify sent a data line that is not JSON");
            return Ok(());
        };
        let text = |k: &str| ev.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if self.dify_task_id.is_none() {
            self.dify_task_id = text("task_id").map(String::from);
        }
        if self.conversation_id.is_none() {
            self.conversation_id = text("conversation_id").map(String::from);
        }
        match (mode, text("event")) {
            (_, Some("error")) => Err(DifyError::Event {
                what: match mode {
                    AppMode::Chat => "API",
                    AppMode::Workflow => "Workflow",
                },
                message: text("message").unwrap_or("Unknown error").to_string(),
            }),
            (AppMode::Chat, Some("message" | "agent_message")) => {
                self.answer.push_str(text("answer").unwrap_or_default());
                Ok(())
            }
            (AppMode::Workflow, Some("workflow_finished")) => {
                self.outputs = ev.get("data").and_then(|d| d.get("outputs")).cloned();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn outcome(&self, mode: AppMode) -> StreamOutcome {
        let answer = match mode {
            AppMode::Chat => self.answer.clone(),
            AppMode::Workflow => {
                let outputs = self.outputs.clone().unwrap_or_else(|| json!({}));
                serde_json::to_string_pretty(&outputs).unwrap_or_default()
            }
        };
        StreamOutcome {
            answer,
            conversation_id: self.conversation_id.clone(),
            cancelled: false,
        }
    }
}

/// The error of a non-success answer, with Dify's `message` when the body has one.
async fn status_error(api: &'static str, mut resp: reqwest::Response) -> DifyError {
    let status = resp.status();
    let mut body = Vec::new();
    while let Ok(Some(c)) = resp.chunk().await {
        body.extend_from_slice(&c);
        if body.len() > ERROR_BODY_LIMIT {
            break;
        }
    }
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    DifyError::Status {
        api,
        status: status.as_u16(),
        message,
    }
}

/// A reqwest error in words, without its URL (the error's own text repeats the URL).
fn reason_of(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_body() || e.is_decode() {
        "the response broke off"
    } else if e.is_request() {
        "the request could not be sent"
    } else {
        "request failed"
    };
    let mut src = std::error::Error::source(e);
    let mut detail = None;
    while let Some(s) = src {
        detail = Some(s.to_string());
        src = s.source();
    }
    match detail {
        Some(d) => format!("{kind} ({d})"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_events_concatenate_and_errors_fail() {
        let mut st = StreamState::default();
        for d in [
            r#"{"event":"message","task_id":"t1","conversation_id":"c1","answer":"Hel"}"#,
            r#"{"event":"agent_message","task_id":"t1","conversation_id":"c1","answer":"lo"}"#,
            r#"{"event":"message_end","task_id":"t1","conversation_id":"c1"}"#,
            "not json",
        ] {
            st.on_data(AppMode::Chat, d).unwrap();
        }
        let out = st.outcome(AppMode::Chat);
        assert_eq!(out.answer, "Hello");
        assert_eq!(out.conversation_id.as_deref(), Some("c1"));
        assert_eq!(st.dify_task_id.as_deref(), Some("t1"));
        let err = st
            .on_data(AppMode::Chat, r#"{"event":"error","message":"quota"}"#)
            .unwrap_err();
        assert_eq!(err.to_string(), "Dify API error: quota");
    }

    #[test]
    fn workflow_outputs_are_pretty_json() {
        let mut st = StreamState::default();
        st.on_data(
            AppMode::Workflow,
            r#"{"event":"workflow_finished","task_id":"w","data":{"outputs":{"k":"v"}}}"#,
        )
        .unwrap();
        assert_eq!(st.outcome(AppMode::Workflow).answer, "{\n  \"k\": \"v\"\n}");
    }
}
