//! What a Dify task brings: key, base URL, app id and the app's `inputs` (params), merged in
//! the original's order, and the prompt with its `[EXTERNAL_API_PARAMS]` block removed.

use serde_json::{Map, Value};

use crate::config::Secret;
use crate::crypto::TokenCipher;
use crate::task::TaskSpec;

/// The default `DIFY_BASE_URL`.
pub const DEFAULT_BASE_URL: &str = "https://api.dify.ai";

const PARAMS_OPEN: &str = "[EXTERNAL_API_PARAMS]";
const PARAMS_CLOSE: &str = "[/EXTERNAL_API_PARAMS]";

/// One subtask's Dify settings (`bot[0].agent_config.env`, `bot_prompt`, the prompt block).
#[derive(Clone)]
pub struct DifyConfig {
    /// `DIFY_API_KEY`, decrypted when it was sent encrypted. The task's own credential.
    pub api_key: Option<Secret>,
    /// `DIFY_BASE_URL` without a trailing `/`.
    pub base_url: String,
    /// `bot_prompt.difyAppId`, else `DIFY_APP_ID` (informational: the key selects the app).
    pub app_id: Option<String>,
    /// The app's `inputs`: `bot_prompt.params` < `DIFY_PARAMS` < the prompt's block.
    pub params: Map<String, Value>,
    /// The query: the prompt without its `[EXTERNAL_API_PARAMS]` block.
    pub query: String,
}

/// Never prints the key.
impl std::fmt::Debug for DifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DifyConfig")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("has_key", &self.api_key.is_some())
            .finish_non_exhaustive()
    }
}

impl DifyConfig {
    /// Reads the settings of `spec` (`prompt` is the prompt as prepared for the agent).
    pub fn from_spec(spec: &TaskSpec, prompt: &str, cipher: &TokenCipher) -> Self {
        let env = spec
            .bot
            .agent_config
            .get("env")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let text = |k: &str| {
            env.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let api_key = text("DIFY_API_KEY")
            .map(|k| cipher.decrypt(&k))
            .filter(|k| !k.is_empty())
            .map(Secret::new);
        let base_url = text("DIFY_BASE_URL")
            .unwrap_or_else(|| DEFAULT_BASE_URL.into())
            .trim_end_matches('/')
            .to_string();
        let (bot_app_id, mut params) = parse_bot_prompt(spec.bot_prompt.as_deref());
        if let Some(p) = env.get("DIFY_PARAMS").and_then(params_value) {
            params.extend(p);
        }
        let (query, prompt_params) = extract_prompt_params(prompt);
        params.extend(prompt_params);
        Self {
            api_key,
            base_url,
            app_id: bot_app_id.or_else(|| text("DIFY_APP_ID")),
            params,
            query,
        }
    }
}

/// `DIFY_PARAMS`: an object, or a JSON string of one; anything else counts as none.
fn params_value(v: &Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m.clone()),
        Value::String(s) if !s.trim().is_empty() => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Some(m),
            _ => {
                tracing::warn!("DIFY_PARAMS is not a JSON object; using no params from it");
                None
            }
        },
        _ => None,
    }
}

/// `bot_prompt`: `{"difyAppId": …, "params": {…}}`.
fn parse_bot_prompt(raw: Option<&str>) -> (Option<String>, Map<String, Value>) {
    let Some(Ok(Value::Object(obj))) = raw.map(serde_json::from_str::<Value>) else {
        return (None, Map::new());
    };
    let app = obj
        .get("difyAppId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from);
    let params = obj
        .get("params")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    (app, params)
}

/// Removes the first `[EXTERNAL_API_PARAMS]{json}[/EXTERNAL_API_PARAMS]` block of `prompt`
/// and returns the trimmed rest with the block's object; a block that is not a JSON object
/// leaves the prompt as it is (the original's behaviour).
pub fn extract_prompt_params(prompt: &str) -> (String, Map<String, Value>) {
    let Some(start) = prompt.find(PARAMS_OPEN) else {
        return (prompt.to_string(), Map::new());
    };
    let body_at = start + PARAMS_OPEN.len();
    let Some(len) = prompt[body_at..].find(PARAMS_CLOSE) else {
        return (prompt.to_string(), Map::new());
    };
    match serde_json::from_str::<Value>(prompt[body_at..body_at + len].trim()) {
        Ok(Value::Object(m)) => {
            let rest = format!(
                "{}{}",
                &prompt[..start],
                &prompt[body_at + len + PARAMS_CLOSE.len()..]
            );
            (rest.trim().to_string(), m)
        }
        _ => {
            tracing::warn!("the prompt's [EXTERNAL_API_PARAMS] block is not a JSON object");
            (prompt.to_string(), Map::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(task: Value) -> TaskSpec {
        TaskSpec::from_value(&task).unwrap()
    }

    #[test]
    fn params_precedence_bot_prompt_then_env_then_prompt_block() {
        let s = spec(json!({"task_id": 1, "prompt": "x",
            "bot_prompt": r#"{"difyAppId": "app-bp", "params": {"a": "bp", "b": "bp", "c": "bp"}}"#,
            "bot": [{"shell_type": "Dify", "agent_config": {"env": {
                "DIFY_API_KEY": "k", "DIFY_PARAMS": r#"{"b": "env", "c": "env"}"#}}}]}));
        let c = DifyConfig::from_spec(
            &s,
            "hello [EXTERNAL_API_PARAMS]{\"c\": \"prompt\"}[/EXTERNAL_API_PARAMS] world",
            &TokenCipher::default(),
        );
        assert_eq!(c.params["a"], "bp");
        assert_eq!(c.params["b"], "env");
        assert_eq!(c.params["c"], "prompt");
        assert_eq!(c.query, "hello  world");
        assert_eq!(c.app_id.as_deref(), Some("app-bp"));
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
    }

    #[test]
    fn params_as_object_and_base_url_trimmed() {
        let s = spec(json!({"task_id": 1, "prompt": "x",
            "bot": [{"shell_type": "Dify", "agent_config": {"env": {
                "DIFY_API_KEY": "k", "DIFY_BASE_URL": "http://h:1/", "DIFY_APP_ID": "app",
                "DIFY_PARAMS": {"x": 1}}}}]}));
        let c = DifyConfig::from_spec(&s, "q", &TokenCipher::default());
        assert_eq!(c.params["x"], 1);
        assert_eq!(c.base_url, "http://h:1");
        assert_eq!(c.app_id.as_deref(), Some("app"));
        assert_eq!(c.api_key.as_ref().map(|k| k.expose()), Some("k"));
    }

    #[test]
    fn a_broken_block_leaves_the_prompt() {
        let p = "a [EXTERNAL_API_PARAMS]nope[/EXTERNAL_API_PARAMS]";
        let (q, m) = extract_prompt_params(p);
        assert_eq!(q, p);
        assert!(m.is_empty());
    }
}
