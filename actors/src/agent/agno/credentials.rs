//! The Agno client's environment and the executor's own model keys, under the same rule as
//! the Claude Code CLI ([`env_rule`](crate::agent::env_rule)): the client (and every MCP server
//! it starts) inherits the executor's environment minus the deny list, so it never holds the
//! executor's keys; a task's bot gets the executor's key in its `run` line only when it brings
//! no key and names no endpoint of its own (or one the operator lists).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::agent::env_rule;
use crate::config::RuntimeConfig;

/// The client's environment: nothing task-specific (a pooled client serves any task; the
/// task's model settings come in its `run` line).
pub fn client_env(
    cfg: &RuntimeConfig,
    host: impl Iterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    let mut env = env_rule::inherited(&cfg.security, host);
    let operator_env: BTreeMap<&String, &String> = cfg
        .executor_env
        .iter()
        .filter(|(k, _)| !env_rule::is_credential(k))
        .collect();
    env.extend(
        operator_env
            .iter()
            .map(|(k, v)| ((*k).clone(), (*v).clone())),
    );
    if !operator_env.is_empty() {
        if let Ok(json) = serde_json::to_string(&operator_env) {
            env.insert("EXECUTOR_ENV".into(), json);
        }
    }
    env.insert(
        "AGNO_DB_FILE".into(),
        cfg.agno.db_file.display().to_string(),
    );
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
    env.insert("AGNO_TELEMETRY".into(), "false".into());
    env
}

/// The executor variables holding the key and the base URL of a bot's model kind (as the
/// client's `make_model` picks them).
fn provider_vars(kind: &str) -> (&'static [&'static str], &'static str) {
    match kind {
        "openai" => (&["OPENAI_API_KEY"], "OPENAI_BASE_URL"),
        "gemini" => (&["GOOGLE_API_KEY", "GEMINI_API_KEY"], "GOOGLE_BASE_URL"),
        _ => (&["ANTHROPIC_API_KEY"], "ANTHROPIC_BASE_URL"),
    }
}

/// Fills `agent_config.env.api_key` of every bot that has none with the executor's own key
/// for its model kind — only when the bot names no `base_url` or one the operator allows.
pub fn fill_executor_keys(
    bots: &mut [Value],
    cfg: &RuntimeConfig,
    host: &BTreeMap<String, String>,
) {
    let var = |k: &str| {
        cfg.executor_env
            .get(k)
            .or_else(|| host.get(k))
            .filter(|v| !v.trim().is_empty())
            .cloned()
    };
    for bot in bots {
        let Some(env) = bot
            .pointer_mut("/agent_config/env")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let text = |k: &str| {
            env.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or("")
        };
        if !text("api_key").is_empty() {
            continue;
        }
        let (keys, url_var) = provider_vars(text("model"));
        let base_url = text("base_url");
        let operator_url = var(url_var);
        if !base_url.is_empty()
            && !env_rule::endpoint_allowed(&cfg.security, operator_url.as_deref(), base_url)
        {
            continue;
        }
        if let Some(key) = keys.iter().find_map(|k| var(k)) {
            env.insert("api_key".into(), Value::String(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    #[test]
    fn the_executor_key_goes_only_to_its_own_endpoints() {
        let cfg = RuntimeConfig::for_tests(PathBuf::from("/tmp/ws"));
        let host: BTreeMap<String, String> = [("OPENAI_API_KEY", "sk-exec"), ("PATH", "/bin")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut bots = vec![
            json!({"agent_config": {"env": {"model": "openai"}}}),
            json!({"agent_config": {"env": {"model": "openai", "base_url": "http://evil"}}}),
            json!({"agent_config": {"env": {"model": "openai", "api_key": "own"}}}),
        ];
        fill_executor_keys(&mut bots, &cfg, &host);
        assert_eq!(bots[0]["agent_config"]["env"]["api_key"], "sk-exec");
        assert!(bots[1]["agent_config"]["env"].get("api_key").is_none());
        assert_eq!(bots[2]["agent_config"]["env"]["api_key"], "own");
        let env = client_env(&cfg, host.into_iter());
        assert!(!env.contains_key("OPENAI_API_KEY"));
        assert_eq!(env["PATH"], "/bin");
    }
}
