//! The secret values a subtask brings, for the masking registry ([`crate::mask::secrets`]).

use serde_json::Value;

use crate::task::TaskSpec;

impl TaskSpec {
    /// Every secret value this subtask brings — git token (as sent and decrypted), backend
    /// token, credentials in `git_url`, values under secret-named keys of its bots (model keys,
    /// MCP tokens) — for the masking registry, so they are masked wherever they reappear.
    pub fn secret_values(&self, cipher: &crate::crypto::TokenCipher) -> Vec<String> {
        let mut out = Vec::new();
        let ws = &self.workspace;
        for s in [&ws.git_token, &ws.auth_token].into_iter().flatten() {
            out.push(s.expose().to_string());
            out.push(cipher.decrypt(s.expose()));
        }
        if let Some(url) = &self.git_url {
            if let (_, Some((_, pass))) = crate::workspace::git::split_credentials(url) {
                out.push(pass);
            }
            out.extend(query_secrets(url));
        }
        let mut bots = self.bots.clone();
        bots.extend(self.config.secret_json());
        for b in &bots {
            collect_secret_values(b, &mut out);
        }
        let decrypted: Vec<String> = out.iter().map(|v| cipher.decrypt(v)).collect();
        out.extend(decrypted);
        out.retain(|v| !v.trim().is_empty() && !v.starts_with("${"));
        out.sort();
        out.dedup();
        out
    }
}

/// Values of secret-named query parameters (`?private_token=…`) of a URL.
fn query_secrets(url: &str) -> Vec<String> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split(['&', '#'])
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| crate::mask::is_secret_key(k))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Strings under secret-named keys anywhere in `v`.
fn collect_secret_values(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match val {
                    Value::String(s) if crate::mask::is_secret_key(k) => out.push(s.clone()),
                    other => collect_secret_values(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_secret_values(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::task::TaskSpec;
    use serde_json::json;

    #[test]
    fn collects_tokens_keys_and_url_credentials() {
        let t = TaskSpec::from_value(
            &json!({"task_id": 1, "prompt": "x", "auth_token": "jwt-backend-1",
            "git_url": "https://u:url-pass-1@h/r.git?private_token=query-tok-1",
            "user": {"git_token": "git-tok-1"},
            "bot": [{"shell_type": "ClaudeCode", "agent_config": {"env": {"api_key": "model-key-1",
                     "model_id": "not-a-secret"}},
                     "mcp_servers": {"gh": {"env": {"GH_TOKEN": "mcp-tok-1", "X": "${PLACE}"}}}}]}),
        )
        .unwrap();
        let got = t.secret_values(&crate::crypto::TokenCipher::default());
        for want in [
            "jwt-backend-1",
            "url-pass-1",
            "query-tok-1",
            "git-tok-1",
            "model-key-1",
            "mcp-tok-1",
        ] {
            assert!(got.iter().any(|v| v == want), "{want} in {got:?}");
        }
        assert!(!got
            .iter()
            .any(|v| v == "not-a-secret" || v.starts_with("${")));
    }
}
