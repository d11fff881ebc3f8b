//! Claude Code's own part of the task: `bot[0]`'s settings, read into a [`BotSpec`] when the
//! task dict is read (a wrong type answers 422 at the door), and kept in the task's
//! [`AgentConfig`](crate::agent::registry::AgentConfig).

use serde_json::{Map, Value};

use crate::error::TaskError;
use crate::task::{arg_field, int_field, no_nul, tool_list};

/// The first bot of the task: the one that drives Claude Code.
#[derive(Debug, Clone, Default)]
pub struct BotSpec {
    /// `bot[0].id`, part of the original's session key.
    pub id: Option<i64>,
    /// `bot[0].system_prompt`; `None` means the CLI gets `--system-prompt ""`.
    pub system_prompt: Option<String>,
    /// `bot[0].model`, passed as `--model`.
    pub model: Option<String>,
    /// `bot[0].agent_config`, the model settings (contract §5.3). May hold secrets.
    pub agent_config: Value,
    /// `bot[0].mcp_servers` (any accepted shape), placeholders filled. May hold secrets.
    pub mcp_servers: Option<Map<String, Value>>,
    /// `bot[0].allowed_tools` → `--allowedTools`.
    pub allowed_tools: Vec<String>,
    /// `bot[0].disallowed_tools` → `--disallowedTools`.
    pub disallowed_tools: Vec<String>,
    /// `bot[0].max_turns` → `--max-turns`.
    pub max_turns: Option<i64>,
    /// `bot[0].max_thinking_tokens` → `--max-thinking-tokens`.
    pub max_thinking_tokens: Option<i64>,
}

/// Reads `bot[0]` (`task` is the whole dict, for MCP placeholders); a field of the wrong
/// type is refused (the request answers 422).
pub fn parse(bot: &Map<String, Value>, task: &Value) -> Result<BotSpec, TaskError> {
    let agent_config = match bot.get("agent_config") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(TaskError::WrongType {
                field: "bot.agent_config",
                expected: "an object",
            })
        }
    };
    Ok(BotSpec {
        id: int_field(bot, "id")?,
        system_prompt: arg_field(bot, "system_prompt")?,
        model: arg_field(bot, "model")?.filter(|m| !m.is_empty()),
        agent_config,
        mcp_servers: crate::mcp::servers_of(bot).map(|servers| {
            let mut v = Value::Object(servers);
            crate::mcp::substitute(&mut v, task);
            v.as_object().cloned().unwrap_or_default()
        }),
        allowed_tools: no_nul(tool_list(bot, "allowed_tools")?, "allowed_tools")?,
        disallowed_tools: no_nul(tool_list(bot, "disallowed_tools")?, "disallowed_tools")?,
        max_turns: int_field(bot, "max_turns")?,
        max_thinking_tokens: int_field(bot, "max_thinking_tokens")?,
    })
}
