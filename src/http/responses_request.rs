//! The request decoder of Wegent's current protocol: a `POST /v1/responses` body (an OpenAI
//! Responses-API request with the old task dict inside `metadata`, research/responses-protocol.md
//! §1) mapped onto the task dict the old route already takes, so the same `TaskSpec` drives the
//! same supervisor, session and agent actors.

use actors::protocol::ResponsesIdentity;
use serde_json::{json, Map, Value};

use super::error::ApiError;

/// A decoded request: the task dict, the Responses identity and the answer's `status` mode.
pub struct Decoded {
    /// The old-protocol task dict (`metadata`, with `prompt`, ids and bot settings filled in).
    pub task: Value,
    /// What the Responses envelope needs.
    pub identity: ResponsesIdentity,
    /// `background` (the answer's `status` is then `queued`).
    pub background: bool,
}

/// Decodes a body. Shape errors are 400 for a non-object (upstream's answer) and 422 otherwise.
pub fn decode(body: &Value) -> Result<Decoded, ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::InvalidJson("OpenAI Responses request must be a JSON object".into())
    })?;
    let mut task = match obj.get("metadata") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(unprocessable("metadata must be an object")),
    };
    for key in ["task_id", "subtask_id"] {
        if let Some(v) = task.get(key) {
            let id = numeric_id(v).ok_or_else(|| {
                unprocessable(&format!(
                    "metadata.{key} must be a number or a numeric string"
                ))
            })?;
            task.insert(key.into(), json!(id));
        }
    }
    task.insert("prompt".into(), json!(prompt_of(obj.get("input"))?));
    let model_config = obj.get("model_config").and_then(Value::as_object);
    let instructions = obj
        .get("instructions")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let shell_type = first_bot_mut(&mut task)
        .map(|bot| {
            if let Some(text) = instructions {
                bot.insert("system_prompt".into(), json!(text));
            }
            if let Some(mc) = model_config {
                merge_model_config(bot, mc);
            }
            if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
                merge_mcp_tools(bot, tools);
            }
            bot.get("shell_type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase()
        })
        .unwrap_or_default();
    // As upstream: a validation task runs the image validator whatever its bot says.
    let is_validation = task.get("type").and_then(Value::as_str) == Some("validation");
    let shell_type = if is_validation {
        "imagevalidator".to_string()
    } else {
        shell_type
    };
    let text = |m: &Map<String, Value>, k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let identity = ResponsesIdentity {
        message_id: task.get("message_id").and_then(numeric_id),
        validation_id: task
            .get("validation_params")
            .and_then(|v| v.get("validation_id"))
            .and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        executor_name: text(&task, "executor_name"),
        executor_namespace: text(&task, "executor_namespace"),
        shell_type,
        model: model_config
            .and_then(|m| text(m, "model_id"))
            .unwrap_or_default(),
        created_ack: Default::default(),
    };
    Ok(Decoded {
        task: Value::Object(task),
        identity,
        background: obj
            .get("background")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

fn unprocessable(msg: &str) -> ApiError {
    ApiError::Unprocessable(msg.to_string())
}

/// A number, or a string holding one (upstream's Rust executor takes both).
fn numeric_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `input` as the prompt: a string as is; content blocks (`input_text`, ...) as their texts;
/// a message list as the content of its last `user` message (the CLI keeps the earlier
/// conversation itself); absent or null as "".
fn prompt_of(input: Option<&Value>) -> Result<String, ApiError> {
    match input {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => {
            let is_messages = items.first().is_some_and(|i| i.get("role").is_some());
            if !is_messages {
                return Ok(block_text(items));
            }
            let last_user = items
                .iter()
                .rev()
                .find(|i| i.get("role").and_then(Value::as_str) == Some("user"));
            Ok(match last_user.and_then(|m| m.get("content")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(blocks)) => block_text(blocks),
                _ => String::new(),
            })
        }
        Some(_) => Err(unprocessable(
            "input must be a string, a list of content blocks or a list of messages",
        )),
    }
}

/// The texts of content blocks (`input_text`/`text`), one per line; images are not passed on.
fn block_text(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

fn first_bot_mut(task: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    match task.get_mut("bot")? {
        Value::Array(bots) => bots.first_mut()?.as_object_mut(),
        Value::Object(b) => Some(b),
        _ => None,
    }
}

/// `model_config` (`model`, `model_id`, `api_key`, `base_url`, `env`) into `bot[0].agent_config
/// .env`, where the old protocol keeps the model settings; what the bot already sets wins.
fn merge_model_config(bot: &mut Map<String, Value>, mc: &Map<String, Value>) {
    let config = bot.entry("agent_config").or_insert_with(|| json!({}));
    if !config.is_object() {
        *config = json!({});
    }
    let Some(config) = config.as_object_mut() else {
        return;
    };
    let env = config.entry("env").or_insert_with(|| json!({}));
    let Some(env) = env.as_object_mut() else {
        return;
    };
    for key in ["model", "model_id", "api_key", "base_url"] {
        if let Some(v) = mc
            .get(key)
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            env.entry(key).or_insert_with(|| v.clone());
        }
    }
    if mc.contains_key("model_id") || mc.contains_key("api_key") {
        env.entry("model").or_insert_with(|| json!("claude"));
    }
    if let Some(Value::Object(extra)) = mc.get("env") {
        for (k, v) in extra {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// `tools` of type `mcp` into `bot[0].mcp_servers` (`server_label` → `{type, url, headers}`);
/// other tool types are dropped, as upstream.
fn merge_mcp_tools(bot: &mut Map<String, Value>, tools: &[Value]) {
    let mut servers = Map::new();
    for t in tools.iter().filter_map(Value::as_object) {
        if t.get("type").and_then(Value::as_str) != Some("mcp") {
            continue;
        }
        let Some(label) = t.get("server_label").and_then(Value::as_str) else {
            continue;
        };
        let mut s = Map::new();
        let kind = t
            .get("server_type")
            .and_then(Value::as_str)
            .unwrap_or("streamable-http");
        s.insert("type".into(), json!(kind));
        for (from, to) in [
            ("server_url", "url"),
            ("command", "command"),
            ("args", "args"),
            ("env", "env"),
        ] {
            if let Some(v) = t.get(from).filter(|v| !v.is_null()) {
                s.insert(to.into(), v.clone());
            }
        }
        if let Some(h) = t.get("server_auth").and_then(|a| a.get("headers")) {
            s.insert("headers".into(), h.clone());
        }
        servers.insert(label.to_string(), Value::Object(s));
    }
    if servers.is_empty() {
        return;
    }
    let existing = bot.entry("mcp_servers").or_insert_with(|| json!({}));
    match existing.as_object_mut() {
        Some(m) => {
            for (k, v) in servers {
                m.entry(k).or_insert(v);
            }
        }
        None => *existing = Value::Object(servers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_user_message_is_the_prompt_and_ids_may_be_strings() {
        let d = decode(&json!({"input": [{"role": "user", "content": "first"},
                                          {"role": "assistant", "content": "ok"},
                                          {"role": "user", "content": [{"type": "input_text", "text": "second"}]}],
                               "instructions": "You are a coder.",
                               "model_config": {"model_id": "m1", "api_key": "sk-1", "base_url": "http://x"},
                               "metadata": {"task_id": "77", "subtask_id": 501, "message_id": 3,
                                            "validation_params": {"validation_id": "v-1"},
                                            "bot": [{"shell_type": "ClaudeCode"}]}}))
        .unwrap();
        assert_eq!(d.task["prompt"], "second");
        assert_eq!(d.task["task_id"], 77);
        assert_eq!(d.task["bot"][0]["system_prompt"], "You are a coder.");
        assert_eq!(d.task["bot"][0]["agent_config"]["env"]["model_id"], "m1");
        assert_eq!(d.identity.message_id, Some(3));
        assert_eq!(d.identity.validation_id.as_deref(), Some("v-1"));
        assert_eq!(d.identity.shell_type, "claudecode");
        assert_eq!(d.identity.model, "m1");
    }

    #[test]
    fn content_blocks_null_input_and_bad_shapes() {
        let d = decode(&json!({"input": [{"type": "input_text", "text": "look"}], "metadata": {}}))
            .unwrap();
        assert_eq!(d.task["prompt"], "look");
        let d = decode(&json!({"input": null, "instructions": null, "tools": null})).unwrap();
        assert_eq!(d.task["prompt"], "");
        assert!(matches!(decode(&json!([1])), Err(ApiError::InvalidJson(_))));
        assert!(matches!(
            decode(&json!({"metadata": {"task_id": "abc"}})),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            decode(&json!({"input": 5})),
            Err(ApiError::Unprocessable(_))
        ));
    }

    #[test]
    fn mcp_tools_become_bot_servers() {
        let d = decode(
            &json!({"tools": [{"type": "mcp", "server_label": "kb", "server_url": "http://kb",
                                          "server_auth": {"headers": {"X": "1"}}},
                                         {"type": "function", "name": "f"}],
                               "metadata": {"task_id": 1, "bot": [{"shell_type": "ClaudeCode"}]}}),
        )
        .unwrap();
        let servers = &d.task["bot"][0]["mcp_servers"];
        assert_eq!(servers["kb"]["url"], "http://kb");
        assert_eq!(servers["kb"]["type"], "streamable-http");
        assert_eq!(servers["kb"]["headers"]["X"], "1");
        assert_eq!(servers.as_object().unwrap().len(), 1);
    }
}
