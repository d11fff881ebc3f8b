//! OpenAPI description of every route (`GET /openapi.json`) and Swagger UI served from files
//! compiled into the binary (`GET /docs`), so the docs work with no internet.

use std::sync::Arc;

use serde::Serialize;
use utoipa::OpenApi;
use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

use super::error::ErrorBody;
use super::routes::{MessageResponse, TaskResponse};

/// The task dict accepted by `POST /api/tasks/execute` (documentation only; the handler reads
/// the raw JSON so unknown keys pass through as in the original).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"task_id": 1, "subtask_id": 1, "agent_type": "claude_code", "task_title": "Task Title",
                          "subtask_title": "Subtask Title", "content": "Task Content"}))]
pub struct TaskRequest {
    /// Task id: session key and workspace directory name (required, integer ≥ 0).
    pub task_id: i64,
    /// Subtask (message) id, copied into callbacks.
    pub subtask_id: Option<i64>,
    /// Copied into callbacks.
    pub task_title: Option<String>,
    /// Copied into callbacks.
    pub subtask_title: Option<String>,
    /// The user's message (Wegent). `content` is accepted as the seed's spelling.
    pub prompt: Option<String>,
    /// The seed's spelling of `prompt`.
    pub content: Option<String>,
    /// Seed: `claude_code` or `agno`. Wegent uses `bot[0].shell_type: "ClaudeCode" | "Agno"`.
    pub agent_type: Option<String>,
    /// Wegent bots; `bot[0]` drives Claude Code (`shell_type`, `system_prompt`, `agent_config.env`,
    /// `mcp_servers`, `skills`; `bot[1..]` are coordinate-mode sub-agents); for Agno every bot is
    /// a team member (`name`, `role: "leader"`, `system_prompt`, `agent_config.env`, `mcp_servers`).
    pub bot: Option<Vec<serde_json::Value>>,
    /// Team mode: `coordinate`, `collaborate`, `route`, ...
    pub mode: Option<String>,
    /// Git identity and credentials: `user_name` (clone user, default `token`), `git_token`
    /// (plain or AES-encrypted; never written anywhere), `git_login`, `git_email`, `git_id`.
    pub user: Option<serde_json::Value>,
    /// Bearer token for attachment and skill downloads from `TASK_API_DOMAIN`.
    pub auth_token: Option<String>,
    /// Files to download into the workspace: `{id, original_filename, mime_type, file_size}`;
    /// `[attachment:<id>]` in the prompt is rewritten to the local path.
    pub attachments: Option<Vec<serde_json::Value>>,
    /// Namespace the skills of `bot[0].skills` are looked up in (default `default`).
    pub team_namespace: Option<String>,
    /// Task type, copied into callbacks as `task_type`.
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    /// Start a fresh conversation for this subtask.
    pub new_session: Option<bool>,
    /// Repository (Wegent); `repo_url` is the seed's spelling.
    pub git_url: Option<String>,
    /// Branch (Wegent); `branch` is the seed's spelling.
    pub branch_name: Option<String>,
}

/// One session row.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionRow {
    /// The task.
    pub task_id: i64,
    /// `ClaudeCode` or `Agno`.
    pub agent_type: String,
    /// `idle`, `running` or `suspended`.
    pub status: String,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    /// The subtask running now.
    pub current_subtask_id: Option<i64>,
    /// Subtasks waiting.
    pub queued: usize,
    /// Subtasks finished.
    pub completed_subtasks: u64,
}

/// Answer of `GET /api/tasks/sessions`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    /// Number of sessions.
    pub total: usize,
    /// The sessions.
    pub sessions: Vec<SessionRow>,
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Task Executor API",
        description = "API for executing tasks with agents"
    ),
    paths(
        super::routes::health,
        super::routes::execute,
        super::responses_route::create,
        super::routes::cancel,
        super::routes::list_sessions,
        super::routes::delete_session,
        super::routes::close_claude_sessions,
        super::routes::close_all_sessions,
        super::probes::health_doc,
        super::probes::ready_doc,
        super::metrics::metrics_doc,
        super::events::events_doc
    ),
    components(schemas(
        TaskRequest,
        TaskResponse,
        super::responses_route::ResponsesAnswer,
        super::responses_route::CancelAnswer,
        MessageResponse,
        SessionList,
        SessionRow,
        ErrorBody
    ))
)]
pub struct ApiDoc;

/// Where the Swagger UI files are served; `/docs` itself answers with the page (no redirect:
/// the seed checks the service with a plain `curl .../docs`).
const DOCS_BASE: &str = "/docs/";

/// `GET /openapi.json`, `GET /docs` (the page itself) and `GET /docs/<file>`.
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let spec = Arc::new(ApiDoc::openapi());
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(move || warp::reply::json(spec.as_ref()).into_response());
    let config = Arc::new(utoipa_swagger_ui::Config::from("/openapi.json"));
    let ui = warp::path("docs")
        .and(warp::get())
        .and(warp::path::full())
        .and(warp::path::tail())
        .and_then(move |full: warp::path::FullPath, tail: warp::path::Tail| {
            let config = config.clone();
            // `/docs` without the slash: the page's relative links need a base.
            let needs_base = full.as_str() == "/docs";
            async move { serve_ui(tail.as_str(), config, needs_base) }
        });
    openapi.or(ui).unify()
}

/// Puts `<base href="/docs/">` into the page so its relative links resolve under `/docs/`.
fn with_base(html: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(html);
    let base = format!("<head>\n    <base href=\"{DOCS_BASE}\">");
    text.replacen("<head>", &base, 1).into_bytes()
}

fn serve_ui(
    path: &str,
    config: Arc<utoipa_swagger_ui::Config<'static>>,
    needs_base: bool,
) -> Result<warp::reply::Response, Rejection> {
    let path = if path.is_empty() { "index.html" } else { path };
    match utoipa_swagger_ui::serve(path, config) {
        Ok(Some(file)) => {
            let bytes = if needs_base && !file.gzpipped {
                with_base(&file.bytes)
            } else {
                file.bytes.into_owned()
            };
            let mut resp = warp::reply::Response::new(bytes.into());
            let headers = resp.headers_mut();
            if let Ok(v) = file.content_type.parse() {
                headers.insert(header::CONTENT_TYPE, v);
            }
            if file.gzpipped {
                headers.insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
            }
            Ok(resp)
        }
        Ok(None) => Err(warp::reject::not_found()),
        Err(e) => {
            tracing::error!("swagger ui: {e}");
            Ok(warp::reply::with_status(
                "swagger ui unavailable",
                StatusCode::INTERNAL_SERVER_ERROR,
            )
            .into_response())
        }
    }
}
