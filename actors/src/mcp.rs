//! `bot[0].mcp_servers` in every shape the original accepts (contract §3.3), with its
//! `${{dot.path}}` placeholders filled from the task dict.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

static PLACEHOLDER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\$\{\{\s*([^}]+?)\s*\}\}").ok());

/// The server map (`name → config`) of a bot, or `None` when it has none. Accepts
/// `mcp_servers`/`mcpServers` at the top and one more level of either key inside; when both
/// spellings are present they are merged (the original crashed on that, defect §11.2-10).
pub fn servers_of(bot: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut merged = Map::new();
    for key in ["mcpServers", "mcp_servers"] {
        let Some(Value::Object(outer)) = bot.get(key) else {
            continue;
        };
        let inner = ["mcpServers", "mcp_servers"]
            .iter()
            .find_map(|k| outer.get(*k).and_then(Value::as_object));
        merged.extend(inner.unwrap_or(outer).clone());
    }
    (!merged.is_empty()).then_some(merged)
}

/// Replaces `${{a.b.0.c}}` in every string of `v` with that path of `task`; unknown paths are
/// left as they are, non-string values are written as their JSON text.
pub fn substitute(v: &mut Value, task: &Value) {
    match v {
        Value::String(s) => {
            if let Some(re) = PLACEHOLDER.as_ref() {
                if re.is_match(s) {
                    *s = re
                        .replace_all(s, |c: &regex::Captures<'_>| match lookup(task, &c[1]) {
                            Some(Value::String(t)) => t.clone(),
                            Some(other) => other.to_string(),
                            None => c[0].to_string(),
                        })
                        .into_owned();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| substitute(i, task)),
        Value::Object(map) => map.values_mut().for_each(|i| substitute(i, task)),
        _ => {}
    }
}

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(root, |cur, part| match cur {
            Value::Object(m) => m.get(part),
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
        .filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn accepts_every_shape() {
        let want = json!({"gh": {"command": "x"}});
        for bot in [
            json!({"mcp_servers": {"gh": {"command": "x"}}}),
            json!({"mcpServers": {"gh": {"command": "x"}}}),
            json!({"mcpServers": {"mcpServers": {"gh": {"command": "x"}}}}),
            json!({"mcp_servers": {"mcpServers": {"gh": {"command": "x"}}}}),
            json!({"mcp_servers": {"mcp_servers": {"gh": {"command": "x"}}}}),
            json!({"mcpServers": {"mcp_servers": {"gh": {"command": "x"}}}}),
        ] {
            assert_eq!(
                Value::Object(servers_of(&obj(bot.clone())).unwrap()),
                want,
                "{bot}"
            );
        }
        assert!(servers_of(&obj(json!({"name": "x"}))).is_none());
        let both = servers_of(&obj(
            json!({"mcp_servers": {"a": {}}, "mcpServers": {"b": {}}}),
        ))
        .unwrap();
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn fills_placeholders_from_the_task() {
        let task = json!({"user": {"git_token": "tok"}, "git_repo": "o/r", "task_id": 7,
                          "bot": [{"agent_config": {"env": {"api_key": "k"}}}]});
        let mut v = json!({"env": {"T": "${{user.git_token}}", "K": "${{ bot.0.agent_config.env.api_key }}"},
                           "args": ["--repo", "${{git_repo}}", "id-${{task_id}}", "${{missing.path}}"], "n": 3});
        substitute(&mut v, &task);
        assert_eq!(v["env"]["T"], "tok");
        assert_eq!(v["env"]["K"], "k");
        assert_eq!(
            v["args"],
            json!(["--repo", "o/r", "id-7", "${{missing.path}}"])
        );
        assert_eq!(v["n"], 3);
    }
}
