//! Silent exit (contract §5.7): a tool (for subscriptions, Wegent's `silent_exit` MCP tool)
//! returns `{"__silent_exit__": true, "reason": "..."}` to say the run needs no one's
//! attention. The subtask then ends COMPLETED with `result.silent_exit: true` and
//! `result.silent_exit_reason`. Claude Code reports tool results in `user` lines (a string or
//! a list of text blocks); the Agno client reports them as `tool_completed` output.

use serde_json::Value;

/// The marker key of the original's `executor/tools/silent_exit.py`.
pub const MARKER: &str = "__silent_exit__";

/// The reason, when `text` is the silent-exit marker (a JSON object with a truthy marker).
pub fn detect(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    let obj = v.as_object()?;
    let Some(marker) = obj.get(MARKER) else {
        // A FastMCP tool returning a string reaches the Claude CLI as structured content
        // `{"result": "<the string>"}` (found with the real CLI and a real MCP server).
        return match obj.get("result") {
            Some(Value::String(inner)) if obj.len() == 1 => detect_plain(inner),
            _ => None,
        };
    };
    marker_reason(obj, marker)
}

/// [`detect`] without looking into a `{"result": ...}` wrapper.
fn detect_plain(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    let obj = v.as_object()?;
    marker_reason(obj, obj.get(MARKER)?)
}

fn marker_reason(obj: &serde_json::Map<String, Value>, marker: &Value) -> Option<String> {
    let truthy = match marker {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    };
    truthy.then(|| {
        obj.get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    })
}

/// The reason, when a `tool_result` block's `content` (a string, or text blocks) is the marker.
pub fn detect_in_content(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => detect(s),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .find_map(detect),
        _ => None,
    }
}

/// Marks a terminal `result` as a silent exit.
pub fn mark(result: &mut Value, reason: &str) {
    if let Some(obj) = result.as_object_mut() {
        obj.insert("silent_exit".into(), Value::Bool(true));
        obj.insert("silent_exit_reason".into(), Value::String(reason.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_marker_is_found_in_strings_and_text_blocks() {
        assert_eq!(
            detect(r#"{"__silent_exit__": true, "reason": "all normal"}"#).as_deref(),
            Some("all normal")
        );
        assert_eq!(detect(r#"{"__silent_exit__": true}"#).as_deref(), Some(""));
        assert_eq!(detect(r#"{"__silent_exit__": false}"#), None);
        assert_eq!(detect("silent_exit"), None);
        assert_eq!(detect("[1]"), None);
        let wrapped = json!({"result": "{\"__silent_exit__\": true, \"reason\": \"q\"}"});
        assert_eq!(detect(&wrapped.to_string()).as_deref(), Some("q"));
        assert_eq!(detect(r#"{"result": "plain"}"#), None);
        let blocks =
            json!([{"type": "text", "text": "{\"__silent_exit__\": true, \"reason\": \"r\"}"}]);
        assert_eq!(detect_in_content(&blocks).as_deref(), Some("r"));
        let mut r = json!({"value": "x"});
        mark(&mut r, "r");
        assert_eq!(
            r,
            json!({"value": "x", "silent_exit": true, "silent_exit_reason": "r"})
        );
    }
}
