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

use crate::config::RuntimeConfig;
use crate::error::AgentError;
use crate::task::BotSpec;

/// Environment variables of the executor that are handed to the CLI as they are.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TERM",
    "TZ",
    "SHELL",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
];

/// Prefixes of executor variables that configure Claude Code itself and are handed on.
const INHERITED_PREFIXES: &[&str] = &["ANTHROPIC_", "CLAUDE_", "DISABLE_", "GIT_"];

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

/// The complete environment of the CLI. Fails with [`AgentError::ApiKeyMissing`] when no
/// credential is configured anywhere, so the user sees the seed's error instead of a CLI
/// retrying against the API for minutes.
pub fn claude_env(
    cfg: &RuntimeConfig,
    bot: &BotSpec,
    config_dir: &Path,
    host_env: impl Iterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, AgentError> {
    let mut env: BTreeMap<String, String> = host_env
        .filter(|(k, _)| {
            INHERITED_ENV.contains(&k.as_str())
                || INHERITED_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .collect();
    env.extend(cfg.executor_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(key) = &cfg.anthropic_api_key {
        env.entry("ANTHROPIC_API_KEY".into())
            .or_insert_with(|| key.expose().to_string());
    }
    if let Some(tok) = &cfg.anthropic_auth_token {
        env.entry("ANTHROPIC_AUTH_TOKEN".into())
            .or_insert_with(|| tok.expose().to_string());
    }
    env.extend(model_env(&bot.agent_config, &env, &cfg.workspace.cipher));
    env.insert("CLAUDE_CONFIG_DIR".into(), config_dir.display().to_string());
    // bypassPermissions as root needs exactly "1" here (research/claude-code-cli.md §4.3);
    // other values such as "yes" are refused by the CLI.
    env.insert("IS_SANDBOX".into(), "1".into());
    env.entry("DISABLE_AUTOUPDATER".into())
        .or_insert_with(|| "1".into());
    env.insert("CLAUDE_CODE_ENTRYPOINT".into(), "sdk-rs".into());
    let has_key = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.trim().is_empty()));
    if has_key {
        Ok(env)
    } else {
        Err(AgentError::ApiKeyMissing)
    }
}

/// `bot[0].agent_config` → variables, as the original's `create_claude_model_config`: with
/// `env.model` set the well-known keys are mapped; without it the object is a raw Claude
/// settings object whose `env` is used as is.
fn model_env(
    agent_config: &Value,
    base: &BTreeMap<String, String>,
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
                out.insert(k.clone(), resolve(&s, base));
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
        .map(|k| cipher.decrypt(&resolve(&k, base)))
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
                out.insert(k.clone(), resolve(&s, base));
            }
        }
    }
    out
}

/// `"${VAR}"` → the executor's `VAR` (empty when unset); anything else as is.
fn resolve(value: &str, base: &BTreeMap<String, String>) -> String {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(var) => base
            .get(var)
            .cloned()
            .or_else(|| std::env::var(var).ok())
            .unwrap_or_default(),
        None => value.to_string(),
    }
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
}
