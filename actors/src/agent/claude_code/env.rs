//! The command line and environment of one `claude` process, built from the task's `bot[0]`
//! (contract §5.3) and the executor's settings.
//!
//! Secrets travel only in the child's environment — never in arguments, which any user of the
//! machine can read in `/proc/<pid>/cmdline`. Each task's process gets its own settings through
//! its environment instead of a shared `~/.claude/settings.json`, so tasks with different models
//! or keys never touch each other.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::bot::BotSpec;
use crate::agent::env_rule;
use crate::config::RuntimeConfig;
use crate::error::AgentError;

/// Keys of `agent_config.env` that are mapped to named variables instead of copied.
const MAPPED_KEYS: &[&str] = &["model_id", "api_key", "base_url", "model", "small_model"];

/// The argument list for a long-lived stream-json session (contract §5.3). The MCP config is
/// passed as a file path: after placeholder substitution it may hold tokens.
pub fn claude_args(bot: &BotSpec, resume: Option<&str>, mcp_config: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",
        "--setting-sources",
        "user,project,local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `=` form: a value starting with '-' must not be read as a flag.
    args.push(format!(
        "--system-prompt={}",
        bot.system_prompt.as_deref().unwrap_or("")
    ));
    if let Some(model) = &bot.model {
        args.push(format!("--model={model}"));
    }
    if !bot.allowed_tools.is_empty() {
        args.push(format!("--allowedTools={}", bot.allowed_tools.join(",")));
    }
    if !bot.disallowed_tools.is_empty() {
        args.push(format!(
            "--disallowedTools={}",
            bot.disallowed_tools.join(",")
        ));
    }
    if let Some(n) = bot.max_turns {
        args.push(format!("--max-turns={n}"));
    }
    if let Some(n) = bot.max_thinking_tokens {
        args.push(format!("--max-thinking-tokens={n}"));
    }
    if let Some(path) = mcp_config {
        args.push(format!("--mcp-config={}", path.display()));
    }
    if let Some(id) = resume {
        args.push(format!("--resume={id}"));
    }
    args.extend(["--input-format".to_string(), "stream-json".to_string()]);
    args
}

/// The complete environment of the CLI: the executor's environment under the
/// [`env_rule`](crate::agent::env_rule), `EXECUTOR_ENV`, then the task's settings. The executor's own
/// credentials are added only when the task brings no key and names no endpoint of its own (or
/// one the operator lists), so a task can never have them sent to its own server, and the child
/// never holds both a task key and the executor's. Fails with [`AgentError::ApiKeyMissing`]
/// when no usable credential is left, so the user sees the seed's error instead of a CLI
/// retrying against the API for minutes.
pub fn claude_env(
    cfg: &RuntimeConfig,
    bot: &BotSpec,
    config_dir: &Path,
    host_env: impl Iterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, AgentError> {
    let host: BTreeMap<String, String> = host_env.collect();
    let sec = &cfg.security;
    let mut env = env_rule::inherited(sec, host.clone().into_iter());
    let mut own = BTreeMap::new();
    for (k, v) in &cfg.executor_env {
        let target = if env_rule::is_credential(k) {
            &mut own
        } else {
            &mut env
        };
        target.insert(k.clone(), v.clone());
    }
    if let Some(key) = &cfg.anthropic_api_key {
        own.entry("ANTHROPIC_API_KEY".into())
            .or_insert_with(|| key.expose().to_string());
    }
    if let Some(tok) = &cfg.anthropic_auth_token {
        own.entry("ANTHROPIC_AUTH_TOKEN".into())
            .or_insert_with(|| tok.expose().to_string());
    }
    let operator_url = env.get("ANTHROPIC_BASE_URL").cloned();
    let own_allowed = !names_foreign_endpoint(sec, operator_url.as_deref(), &bot.agent_config);
    let vars = Placeholders {
        sec,
        executor_env: &cfg.executor_env,
        host: &host,
        own: own_allowed.then_some(&own),
    };
    let task = model_env(&bot.agent_config, &vars, &cfg.workspace.cipher);
    let task_has_key = has_key(&task);
    env.extend(task);
    if !task_has_key && own_allowed {
        env.extend(own);
    }
    env.insert("CLAUDE_CONFIG_DIR".into(), config_dir.display().to_string());
    // bypassPermissions as root needs exactly "1" here (research/claude-code-cli.md §4.3);
    // other values such as "yes" are refused by the CLI.
    env.insert("IS_SANDBOX".into(), "1".into());
    env.entry("DISABLE_AUTOUPDATER".into())
        .or_insert_with(|| "1".into());
    env.insert("CLAUDE_CODE_ENTRYPOINT".into(), "sdk-rs".into());
    if has_key(&env) {
        Ok(env)
    } else {
        Err(AgentError::ApiKeyMissing)
    }
}

fn has_key(env: &BTreeMap<String, String>) -> bool {
    ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.trim().is_empty()))
}

/// True when the task's settings send traffic somewhere the operator did not choose: a
/// `base_url`/`ANTHROPIC_BASE_URL` not allowed by [`env_rule::endpoint_allowed`], or a proxy,
/// TLS or Node option of its own ([`env_rule::ENDPOINT_VARS`]).
fn names_foreign_endpoint(
    sec: &crate::config::SecurityConfig,
    operator_url: Option<&str>,
    agent_config: &Value,
) -> bool {
    let Some(env) = agent_config.get("env").and_then(Value::as_object) else {
        return false;
    };
    env.iter().any(|(k, v)| {
        let Some(text) = value_text(v).filter(|s| !s.trim().is_empty()) else {
            return false;
        };
        match k.as_str() {
            "base_url" | "ANTHROPIC_BASE_URL" => {
                !env_rule::endpoint_allowed(sec, operator_url, &text)
            }
            other => env_rule::ENDPOINT_VARS.contains(&other),
        }
    })
}

/// Where a task's `"${VAR}"` placeholders may read from.
struct Placeholders<'a> {
    sec: &'a crate::config::SecurityConfig,
    executor_env: &'a BTreeMap<String, String>,
    host: &'a BTreeMap<String, String>,
    /// The executor's own credentials, when the endpoint rule lets this task use them.
    own: Option<&'a BTreeMap<String, String>>,
}

impl Placeholders<'_> {
    /// `"${VAR}"` → its value when the operator allows it (a key of `EXECUTOR_ENV` or a name
    /// in `TASK_ENV_PLACEHOLDERS`, never one of the deny list; the executor's own credential
    /// only under the endpoint rule); empty otherwise. Anything else as is.
    fn resolve(&self, value: &str) -> String {
        let Some(var) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
            return value.to_string();
        };
        if env_rule::is_credential(var) {
            return self
                .own
                .and_then(|own| own.get(var))
                .cloned()
                .unwrap_or_default();
        }
        if env_rule::is_denied(self.sec, var) {
            return String::new();
        }
        if let Some(v) = self.executor_env.get(var) {
            return v.clone();
        }
        if self.sec.placeholder_vars.iter().any(|n| n == var) {
            return self.host.get(var).cloned().unwrap_or_default();
        }
        String::new()
    }
}

/// `bot[0].agent_config` → variables, as the original's `create_claude_model_config`: with
/// `env.model` set the well-known keys are mapped; without it the object is a raw Claude
/// settings object whose `env` is used as is.
fn model_env(
    agent_config: &Value,
    vars: &Placeholders<'_>,
    cipher: &crate::crypto::TokenCipher,
) -> BTreeMap<String, String> {
    let Some(env) = agent_config.get("env").and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    let text = |k: &str| env.get(k).and_then(value_text).filter(|s| !s.is_empty());
    let mut out = BTreeMap::new();
    if text("model").is_none() {
        for (k, v) in env {
            if let Some(s) = value_text(v) {
                out.insert(k.clone(), vars.resolve(&s));
            }
        }
        return out;
    }
    if let Some(model_id) = text("model_id") {
        let small = text("small_model").unwrap_or_else(|| model_id.clone());
        out.insert("ANTHROPIC_MODEL".into(), model_id);
        out.insert("ANTHROPIC_SMALL_FAST_MODEL".into(), small.clone());
        out.insert("ANTHROPIC_DEFAULT_HAIKU_MODEL".into(), small);
    }
    if let Some(key) = text("api_key")
        .map(|k| cipher.decrypt(&vars.resolve(&k)))
        .filter(|k| !k.is_empty())
    {
        out.insert("ANTHROPIC_AUTH_TOKEN".into(), key);
    }
    if let Some(url) = text("base_url") {
        let url = url.trim_end_matches('/');
        out.insert(
            "ANTHROPIC_BASE_URL".into(),
            url.strip_suffix("/v1").unwrap_or(url).to_string(),
        );
    }
    for (k, v) in env {
        if !MAPPED_KEYS.contains(&k.as_str()) {
            if let Some(s) = value_text(v) {
                out.insert(k.clone(), vars.resolve(&s));
            }
        }
    }
    out
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn bot(agent_config: Value) -> BotSpec {
        BotSpec {
            agent_config,
            ..BotSpec::default()
        }
    }

    fn cfg() -> RuntimeConfig {
        RuntimeConfig::for_tests(PathBuf::from("/tmp/ws"))
    }

    #[test]
    fn maps_model_settings() {
        let b = bot(
            json!({"env": {"model": "claude", "model_id": "m1", "api_key": "sk-x",
                                   "base_url": "https://gw.example/v1", "EXTRA": "1"}}),
        );
        let env = claude_env(&cfg(), &b, Path::new("/c"), std::iter::empty()).unwrap();
        assert_eq!(env["ANTHROPIC_MODEL"], "m1");
        assert_eq!(env["ANTHROPIC_SMALL_FAST_MODEL"], "m1");
        assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], "sk-x");
        assert_eq!(env["ANTHROPIC_BASE_URL"], "https://gw.example");
        assert_eq!(env["EXTRA"], "1");
        assert_eq!(env["CLAUDE_CONFIG_DIR"], "/c");
        assert!(!env.contains_key("model_id"));
    }

    #[test]
    fn raw_settings_object_and_placeholders() {
        let b = bot(json!({"env": {"ANTHROPIC_AUTH_TOKEN": "${MY_TOKEN}"}}));
        let host = vec![("ANTHROPIC_X".to_string(), "y".to_string())];
        let mut c = cfg();
        c.executor_env.insert("MY_TOKEN".into(), "tok".into());
        let env = claude_env(&c, &b, Path::new("/c"), host.into_iter()).unwrap();
        assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], "tok");
        assert_eq!(env["ANTHROPIC_X"], "y");
    }

    #[test]
    fn no_key_anywhere_is_an_error() {
        let err =
            claude_env(&cfg(), &bot(json!({})), Path::new("/c"), std::iter::empty()).unwrap_err();
        assert!(err.to_string().starts_with("API key not configured"));
    }

    #[test]
    fn executor_key_is_the_fallback_and_secrets_stay_out_of_args() {
        let mut c = cfg();
        c.anthropic_api_key = Some(crate::config::Secret::new("sk-secret"));
        let b = bot(json!({}));
        let env = claude_env(&c, &b, Path::new("/c"), std::iter::empty()).unwrap();
        assert_eq!(env["ANTHROPIC_API_KEY"], "sk-secret");
        let args = claude_args(&b, Some("abc"), None);
        assert!(args.iter().all(|a| !a.contains("sk-secret")));
        assert!(args.contains(&"--resume=abc".to_string()));
        assert!(args.contains(&"--system-prompt=".to_string()));
    }

    #[test]
    fn the_executor_key_never_goes_to_a_task_endpoint() {
        let mut c = cfg();
        c.anthropic_api_key = Some(crate::config::Secret::new("sk-exec"));
        let host = || {
            vec![
                ("EXECUTOR_AUTH_TOKEN".to_string(), "tok".to_string()),
                ("ANTHROPIC_API_KEY".to_string(), "sk-exec".to_string()),
            ]
            .into_iter()
        };
        // Own key and own endpoint: only the task key.
        let b = bot(
            json!({"env": {"model": "claude", "api_key": "task-k", "base_url": "http://evil"}}),
        );
        let env = claude_env(&c, &b, Path::new("/c"), host()).unwrap();
        assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], "task-k");
        assert!(!env.contains_key("ANTHROPIC_API_KEY"));
        assert!(!env.contains_key("EXECUTOR_AUTH_TOKEN"));
        // An endpoint and no key, or a proxy of its own: no key at all.
        for raw in [
            json!({"env": {"ANTHROPIC_BASE_URL": "http://evil"}}),
            json!({"env": {"HTTPS_PROXY": "http://evil:3128"}}),
            json!({"env": {"model": "claude", "api_key": "${EXECUTOR_AUTH_TOKEN}", "base_url": "http://evil"}}),
            json!({"env": {"model": "claude", "api_key": "${ANTHROPIC_API_KEY}", "base_url": "http://evil"}}),
        ] {
            let err = claude_env(&c, &bot(raw.clone()), Path::new("/c"), host());
            assert!(
                err.is_err(),
                "{raw}: {:?}",
                err.map(|e| e.get("ANTHROPIC_AUTH_TOKEN").cloned())
            );
        }
        // A listed endpoint may use the executor's key, also as a placeholder.
        c.security.key_endpoints = vec!["http://gw".into()];
        let b = bot(
            json!({"env": {"model": "claude", "api_key": "${ANTHROPIC_API_KEY}", "base_url": "http://gw/v1"}}),
        );
        let env = claude_env(&c, &b, Path::new("/c"), host()).unwrap();
        assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], "sk-exec");
        assert!(!env.contains_key("ANTHROPIC_API_KEY"), "never both keys");
    }
}
