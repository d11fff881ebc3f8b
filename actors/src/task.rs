//! The task dict of the contract (Wegent's shape and the seed guide's shape), read once into a
//! typed [`TaskSpec`] so nothing downstream pokes at raw JSON.

use serde_json::{Map, Value};

use crate::error::TaskError;

/// Which agent runs a task (defined with the agent registry, the one place that knows every
/// kind).
pub use crate::agent::registry::AgentKind;

/// One subtask to run, with everything the runtime needs from the task dict.
#[derive(Clone)]
pub struct TaskSpec {
    /// Session key and workspace directory name.
    pub task_id: i64,
    /// Identifies this message of the conversation in callbacks (`-1` when absent, as before).
    pub subtask_id: i64,
    /// Copied into callbacks.
    pub task_title: String,
    /// Copied into callbacks.
    pub subtask_title: String,
    /// `type`, copied into callbacks as `task_type`.
    pub task_type: Option<String>,
    /// Which agent runs it.
    pub agent: AgentKind,
    /// The user's message (`prompt`, or the seed's `content`).
    pub prompt: String,
    /// `new_session: true` asks for a fresh conversation.
    pub new_session: bool,
    /// The agent's own reading of the task's bots (Claude Code's `bot[0]` settings, ...),
    /// parsed by the agent kind ([`AgentKind::parse_config`]).
    pub config: crate::agent::registry::AgentConfig,
    /// `git_url` (or the seed's `repo_url`); the clone itself is a later capability.
    pub git_url: Option<String>,
    /// `branch_name` (or the seed's `branch`).
    pub branch: Option<String>,
    /// `user_selected_skills`: named in a preamble of the prompt.
    pub user_selected_skills: Vec<String>,
    /// Set by the HTTP layer from the request headers (not read from the task dict).
    pub trace: crate::payload::TraceContext,
    /// Set by the HTTP layer from the route the request came in on (not read from the dict).
    pub protocol: crate::protocol::Protocol,
    /// What the workspace needs: credentials, attachments, skills, sub-agents.
    pub workspace: WorkspaceSpec,
    /// `bot_prompt`: the Dify agent's `{"difyAppId", "params"}` JSON (lowest-precedence params).
    pub bot_prompt: Option<String>,
    /// `validation_params` of a `type: "validation"` task.
    pub validation: Option<crate::agent::validation::ValidationParams>,
    /// Every bot, as the Agno agent needs them (`name`, `system_prompt`, `role`,
    /// `agent_config`, `mcp_servers` with placeholders filled). May hold secrets.
    pub bots: Vec<Value>,
}

/// Everything workspace preparation reads from the task dict (contract §3, §6).
#[derive(Debug, Clone, Default)]
pub struct WorkspaceSpec {
    /// `git_domain`, shown in the workbench.
    pub git_domain: Option<String>,
    /// `git_repo` (e.g. `org/name`), shown in the workbench.
    pub git_repo: Option<String>,
    /// `git_repo_id`, exported to the agent as `GIT_REPO_ID`.
    pub git_repo_id: Option<String>,
    /// Clone user name: `user.user_name`, the seed's `git_username`; default `token` applies
    /// only when a token is given.
    pub git_username: Option<String>,
    /// `user.git_token` or the seed's `git_password`.
    pub git_token: Option<crate::config::Secret>,
    /// `user.git_login` → `git config user.name`.
    pub git_login: Option<String>,
    /// `user.git_email` → `git config user.email`.
    pub git_email: Option<String>,
    /// `user.git_id`, used for the default no-reply email.
    pub git_id: Option<String>,
    /// `auth_token`: bearer token for attachment and skill downloads.
    pub auth_token: Option<crate::config::Secret>,
    /// `attachments`.
    pub attachments: Vec<AttachmentSpec>,
    /// `bot[0].skills`.
    pub skills: Vec<String>,
    /// `team_namespace` (default `default`): where skills are looked up.
    pub team_namespace: String,
    /// `mode` (team collaboration model).
    pub mode: Option<String>,
    /// `bot[1..]`: sub-agents in coordinate mode.
    pub sub_agents: Vec<SubAgentSpec>,
}

/// One entry of `attachments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentSpec {
    /// Backend id (a number or a string in the dict; kept as text).
    pub id: String,
    /// `original_filename` (sanitised before use).
    pub filename: String,
    /// `mime_type`.
    pub mime_type: Option<String>,
    /// `file_size` as declared.
    pub size: Option<u64>,
}

/// A bot of `bot[1..]`, written as a Claude sub-agent file in coordinate mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAgentSpec {
    /// `id`.
    pub id: Option<i64>,
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// `system_prompt`.
    pub system_prompt: String,
}

/// Only what identifies the subtask: the rest (bots, model settings, MCP servers, tokens) may
/// hold secrets, and a `{:?}` in a log line must never print them.
impl std::fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSpec")
            .field("task_id", &self.task_id)
            .field("subtask_id", &self.subtask_id)
            .field("agent", &self.agent)
            .field("new_session", &self.new_session)
            .finish_non_exhaustive()
    }
}

impl TaskSpec {
    /// Reads a task dict. Accepts Wegent's shape (`bot[0].shell_type`, `prompt`, `git_url`,
    /// `branch_name`) and the seed's (`agent_type`, `content`, `repo_url`, `branch`).
    pub fn from_value(value: &Value) -> Result<Self, TaskError> {
        let obj = value.as_object().ok_or(TaskError::NotAnObject)?;
        let task_id = int_field(obj, "task_id")?.ok_or(TaskError::Missing("task_id"))?;
        if task_id < 0 {
            return Err(TaskError::WrongType {
                field: "task_id",
                expected: "a non-negative integer",
            });
        }
        let subtask_id = int_field(obj, "subtask_id")?.unwrap_or(-1);
        let bot = first_bot(obj)?;
        let agent = agent_kind(obj, bot)?;
        let prompt = match str_field(obj, "prompt")? {
            Some(p) => p,
            // A validation task has no prompt (contract §5.6).
            None if agent == AgentKind::ImageValidator => {
                str_field(obj, "content")?.unwrap_or_default()
            }
            None => str_field(obj, "content")?.ok_or(TaskError::Missing("prompt"))?,
        };
        let validation = match agent {
            AgentKind::ImageValidator => {
                Some(crate::agent::validation::ValidationParams::from_task(obj)?)
            }
            _ => None,
        };
        Ok(Self {
            task_id,
            subtask_id,
            task_title: str_field(obj, "task_title")?.unwrap_or_default(),
            subtask_title: str_field(obj, "subtask_title")?.unwrap_or_default(),
            task_type: str_field(obj, "type")?.filter(|t| !t.is_empty()),
            agent,
            prompt,
            new_session: bool_field(obj, "new_session")?.unwrap_or(false),
            config: agent_kind(obj, bot)?.parse_config(bot, value)?,
            user_selected_skills: tool_list(obj, "user_selected_skills")?,
            trace: Default::default(),
            protocol: Default::default(),
            git_url: first_str(obj, &["git_url", "repo_url"])?,
            branch: first_str(obj, &["branch_name", "branch"])?,
            workspace: workspace_spec(obj, bot)?,
            bots: all_bots(obj, value),
            bot_prompt: str_field(obj, "bot_prompt")?.filter(|p| !p.trim().is_empty()),
            validation,
        })
    }

    /// The `[task_id: T.S]` prefix the original puts on its messages.
    pub fn label(&self) -> String {
        format!("[task_id: {}.{}]", self.task_id, self.subtask_id)
    }
}

/// The bots of the task as the Agno client takes them (a single object counts as a list of one).
fn all_bots(obj: &Map<String, Value>, task: &Value) -> Vec<Value> {
    let list: Vec<&Map<String, Value>> = match obj.get("bot") {
        Some(Value::Array(bots)) => bots.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(b)) => vec![b],
        _ => Vec::new(),
    };
    list.into_iter()
        .map(|b| {
            let mut out = Map::new();
            for key in ["id", "name", "system_prompt", "role", "agent_config"] {
                if let Some(v) = b.get(key).filter(|v| !v.is_null()) {
                    out.insert(key.into(), v.clone());
                }
            }
            if let Some(servers) = crate::mcp::servers_of(b) {
                let mut v = Value::Object(servers);
                crate::mcp::substitute(&mut v, task);
                out.insert("mcp_servers".into(), v);
            }
            Value::Object(out)
        })
        .collect()
}

fn workspace_spec(
    obj: &Map<String, Value>,
    bot: Option<&Map<String, Value>>,
) -> Result<WorkspaceSpec, TaskError> {
    use crate::config::Secret;
    let empty = Map::new();
    let user = match obj.get("user") {
        Some(Value::Object(u)) => u,
        None | Some(Value::Null) => &empty,
        Some(_) => {
            return Err(TaskError::WrongType {
                field: "user",
                expected: "an object",
            })
        }
    };
    let text = |m: &Map<String, Value>, k: &str| match m.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let token = text(user, "git_token")
        .or_else(|| text(obj, "git_password"))
        .filter(|t| t != "***");
    let attachments = match obj.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|a| {
                Some(AttachmentSpec {
                    id: text(a, "id")?,
                    filename: text(a, "original_filename").unwrap_or_default(),
                    mime_type: text(a, "mime_type"),
                    size: a.get("file_size").and_then(Value::as_u64),
                })
            })
            .collect(),
        Some(_) => {
            return Err(TaskError::WrongType {
                field: "attachments",
                expected: "a list of objects",
            })
        }
    };
    let sub_agents = match obj.get("bot") {
        Some(Value::Array(bots)) => bots
            .iter()
            .skip(1)
            .filter_map(Value::as_object)
            .map(|b| SubAgentSpec {
                id: b.get("id").and_then(Value::as_i64),
                name: text(b, "name").unwrap_or_else(|| "agent".into()),
                description: text(b, "description"),
                system_prompt: b
                    .get("system_prompt")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(WorkspaceSpec {
        git_domain: text(obj, "git_domain"),
        git_repo: text(obj, "git_repo"),
        git_repo_id: text(obj, "git_repo_id"),
        git_username: text(user, "user_name").or_else(|| text(obj, "git_username")),
        git_token: token.map(Secret::new),
        git_login: text(user, "git_login"),
        git_email: text(user, "git_email"),
        git_id: text(user, "git_id"),
        auth_token: Secret::non_empty(text(obj, "auth_token")),
        attachments,
        skills: match bot {
            Some(b) => tool_list(b, "skills")?,
            None => Vec::new(),
        },
        team_namespace: text(obj, "team_namespace").unwrap_or_else(|| "default".into()),
        mode: text(obj, "mode"),
        sub_agents,
    })
}

fn agent_kind(
    obj: &Map<String, Value>,
    bot: Option<&Map<String, Value>>,
) -> Result<AgentKind, TaskError> {
    if obj.get("type").and_then(Value::as_str) == Some("validation") {
        return Ok(AgentKind::ImageValidator);
    }
    if let Some(bot) = bot {
        if let Some(shell) = str_field(bot, "shell_type")? {
            return Ok(AgentKind::parse(&shell));
        }
    }
    Ok(AgentKind::parse(
        &str_field(obj, "agent_type")?.unwrap_or_default(),
    ))
}

fn first_bot(obj: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, TaskError> {
    match obj.get("bot") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(bots)) => match bots.first() {
            None => Ok(None),
            Some(Value::Object(b)) => Ok(Some(b)),
            Some(_) => Err(TaskError::WrongType {
                field: "bot",
                expected: "a list of objects",
            }),
        },
        Some(Value::Object(b)) => Ok(Some(b)),
        Some(_) => Err(TaskError::WrongType {
            field: "bot",
            expected: "a list of objects",
        }),
    }
}

/// A list of names: a JSON list of strings, or one comma-separated string.
pub(crate) fn tool_list(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Vec<String>, TaskError> {
    let wrong = TaskError::WrongType {
        field,
        expected: "a list of strings",
    };
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(String::from).ok_or(TaskError::WrongType {
                    field,
                    expected: "a list of strings",
                })
            })
            .collect(),
        Some(_) => Err(wrong),
    }
}

/// A string that ends up on the CLI's command line, where a NUL byte cannot go.
pub(crate) fn arg_field(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, TaskError> {
    let v = str_field(obj, field)?;
    if v.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(TaskError::WrongType {
            field,
            expected: "a string without NUL characters",
        });
    }
    Ok(v)
}

pub(crate) fn no_nul(list: Vec<String>, field: &'static str) -> Result<Vec<String>, TaskError> {
    if list.iter().any(|s| s.contains('\0')) {
        return Err(TaskError::WrongType {
            field,
            expected: "a list of strings without NUL characters",
        });
    }
    Ok(list)
}

fn first_str(obj: &Map<String, Value>, keys: &[&'static str]) -> Result<Option<String>, TaskError> {
    for key in keys {
        if let Some(v) = str_field(obj, key)?.filter(|v| !v.trim().is_empty()) {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

pub(crate) fn int_field(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<i64>, TaskError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(TaskError::WrongType {
            field,
            expected: "an integer",
        }),
    }
}

pub(crate) fn str_field(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, TaskError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TaskError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn bool_field(obj: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, TaskError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TaskError::WrongType {
            field,
            expected: "a boolean",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let spec = TaskSpec::from_value(&serde_json::json!({"task_id": 1, "prompt": "x",
            "auth_token": "jwt-secret-1", "user": {"git_token": "ghp-secret-2"},
            "bot": [{"shell_type": "Agno", "agent_config": {"env": {"api_key": "sk-secret-3"}}}]}))
        .unwrap();
        let shown = format!("{spec:?}");
        for secret in ["jwt-secret-1", "ghp-secret-2", "sk-secret-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("task_id: 1"), "{shown}");
    }
    use serde_json::json;

    #[test]
    fn reads_wegent_shape() {
        let t = TaskSpec::from_value(&json!({
            "task_id": 21, "subtask_id": 31, "task_title": "T", "subtask_title": "S", "type": "online",
            "bot": [{"id": 11, "shell_type": "ClaudeCode", "system_prompt": "You are a coder.",
                     "agent_config": {"env": {"model": "claude", "api_key": "sk"}}}],
            "prompt": "say hello", "git_url": "https://x/y.git", "branch_name": "main"
        }))
        .unwrap();
        assert_eq!((t.task_id, t.subtask_id), (21, 31));
        assert_eq!(t.agent, AgentKind::ClaudeCode);
        let bot = t.config.claude().expect("Claude Code reads bot[0]");
        assert_eq!(bot.id, Some(11));
        assert_eq!(bot.system_prompt.as_deref(), Some("You are a coder."));
        assert_eq!(t.task_type.as_deref(), Some("online"));
        assert_eq!(t.branch.as_deref(), Some("main"));
    }

    #[test]
    fn reads_seed_shape() {
        let t = TaskSpec::from_value(&json!({
            "task_id": 1, "subtask_id": 1, "agent_type": "claude_code", "content": "Task Content",
            "repo_url": "https://github.com/example/repo.git", "branch": "main"
        }))
        .unwrap();
        assert_eq!(t.agent, AgentKind::ClaudeCode);
        assert_eq!(t.prompt, "Task Content");
        assert_eq!(
            t.git_url.as_deref(),
            Some("https://github.com/example/repo.git")
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            TaskSpec::from_value(&json!([1])).unwrap_err(),
            TaskError::NotAnObject
        );
        assert_eq!(
            TaskSpec::from_value(&json!({"prompt": "x"})).unwrap_err(),
            TaskError::Missing("task_id")
        );
        assert!(matches!(
            TaskSpec::from_value(&json!({"task_id": "7", "prompt": "x"})).unwrap_err(),
            TaskError::WrongType {
                field: "task_id",
                ..
            }
        ));
        assert!(matches!(
            TaskSpec::from_value(&json!({"task_id": 7, "prompt": 3})).unwrap_err(),
            TaskError::WrongType {
                field: "prompt",
                ..
            }
        ));
        assert_eq!(
            TaskSpec::from_value(&json!({"task_id": 7})).unwrap_err(),
            TaskError::Missing("prompt")
        );
    }

    #[test]
    fn unknown_types_are_kept_for_the_message() {
        let t = TaskSpec::from_value(
            &json!({"task_id": 5, "prompt": "x", "bot": [{"shell_type": "Nope"}]}),
        )
        .unwrap();
        assert_eq!(t.agent, AgentKind::Unsupported("Nope".into()));
        let t = TaskSpec::from_value(&json!({"task_id": 5, "prompt": "x"})).unwrap();
        assert_eq!(t.agent, AgentKind::Unsupported(String::new()));
    }
}
