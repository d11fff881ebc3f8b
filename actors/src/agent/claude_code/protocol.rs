//! The stream-json wire format of the Claude Code CLI (research/claude-code-cli.md §1), apart
//! from the pipes (`agent::process`) and from what the messages mean (`turn`, `turn_flow`):
//! serde types for every line the executor writes, and typed views of the lines it acts on
//! (control lines, and the parts of conversation messages it reads: content blocks, results).
//! The whole line also stays a `serde_json::Value`: it goes into thinking steps verbatim.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Prefix of the id of the `initialize` request sent to process generation `gen`.
const INIT_ID: &str = "req_init_";

/// Prefix of the id of an `interrupt` request.
const INTERRUPT_ID: &str = "req_int_";

/// A line written to the CLI's stdin.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound<'a> {
    /// A user message: one subtask's prompt.
    User {
        /// The message.
        message: UserMessage<'a>,
        /// Always `null`: the prompt is not a tool result.
        parent_tool_use_id: Option<&'a str>,
        /// Always `""`: the CLI keeps its own session.
        session_id: &'a str,
    },
    /// A request of the executor (initialize, interrupt).
    ControlRequest {
        /// Matches the CLI's `control_response`.
        request_id: String,
        /// What is asked.
        request: Request,
    },
    /// The executor's answer to a request of the CLI.
    ControlResponse {
        /// The answer.
        response: Response,
    },
}

/// The `message` of a user line.
#[derive(Debug, Serialize)]
pub struct UserMessage<'a> {
    /// Always `user`.
    pub role: &'static str,
    /// The prompt text.
    pub content: &'a str,
}

/// A control request of the executor.
#[derive(Debug, Serialize)]
#[serde(tag = "subtype", rename_all = "snake_case")]
pub enum Request {
    /// The first line to every new process; the turn is sent once it is answered.
    Initialize {
        /// No hooks are registered (`null`).
        hooks: Option<Value>,
    },
    /// Stop the running turn (a cancel).
    Interrupt,
}

/// The executor's answer to a control request of the CLI.
#[derive(Debug, Serialize)]
#[serde(tag = "subtype", rename_all = "snake_case")]
pub enum Response {
    /// The request is granted.
    Success {
        /// The CLI's id, echoed.
        request_id: Value,
        /// The grant.
        response: Allow,
    },
    /// The request is refused.
    Error {
        /// The CLI's id, echoed.
        request_id: Value,
        /// Why.
        error: &'static str,
    },
}

/// A `can_use_tool` grant (the executor runs in bypass mode: every tool is allowed as asked).
#[derive(Debug, Serialize)]
pub struct Allow {
    /// Always `allow`.
    pub behavior: &'static str,
    /// The tool input, unchanged.
    #[serde(rename = "updatedInput")]
    pub updated_input: Value,
}

impl Outbound<'_> {
    /// The line as written (one JSON object, no newline).
    pub fn line(&self) -> String {
        // Serialising these types cannot fail: every field is a string, an option or a Value.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The user line carrying `prompt`.
pub fn user(prompt: &str) -> String {
    Outbound::User {
        message: UserMessage {
            role: "user",
            content: prompt,
        },
        parent_tool_use_id: None,
        session_id: "",
    }
    .line()
}

/// The `initialize` request to process generation `gen`.
pub fn initialize(gen: u64) -> String {
    Outbound::ControlRequest {
        request_id: format!("{INIT_ID}{gen}"),
        request: Request::Initialize { hooks: None },
    }
    .line()
}

/// The `interrupt` request to process generation `gen`.
pub fn interrupt(gen: u64) -> String {
    Outbound::ControlRequest {
        request_id: format!("{INTERRUPT_ID}{gen}"),
        request: Request::Interrupt,
    }
    .line()
}

/// The answer to a control request of the CLI: `can_use_tool` is allowed, anything else is
/// refused (so a turn never waits on the executor).
pub fn answer(req: &CliRequest) -> String {
    let response = match req.request.subtype.as_deref() {
        Some("can_use_tool") => Response::Success {
            request_id: req.request_id.clone(),
            response: Allow {
                behavior: "allow",
                updated_input: req
                    .request
                    .input
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default())),
            },
        },
        _ => Response::Error {
            request_id: req.request_id.clone(),
            error: "not supported by this executor",
        },
    };
    Outbound::ControlResponse { response }.line()
}

/// A stdout message the agent acts on itself (everything else is a [`Inbound::Message`]).
#[derive(Debug)]
pub enum Inbound<'a> {
    /// The CLI answers one of the executor's requests.
    ControlResponse(CliResponse),
    /// The CLI asks the executor something.
    ControlRequest(CliRequest),
    /// A conversation message (`system`, `assistant`, `user`, `result`, ...).
    Message(&'a Value),
}

/// A `control_response` line.
#[derive(Debug, Default, Deserialize)]
pub struct CliResponse {
    /// Its body.
    #[serde(default)]
    pub response: CliResponseBody,
}

/// The body of a `control_response`.
#[derive(Debug, Default, Deserialize)]
pub struct CliResponseBody {
    /// Which request it answers.
    #[serde(default)]
    pub request_id: String,
}

impl CliResponse {
    /// Whether it answers the `initialize` request of process generation `gen`.
    pub fn answers_init(&self, gen: u64) -> bool {
        self.response
            .request_id
            .strip_prefix(INIT_ID)
            .is_some_and(|g| g == gen.to_string())
    }
}

/// A `control_request` line of the CLI.
#[derive(Debug, Default, Deserialize)]
pub struct CliRequest {
    /// Echoed in the answer (any JSON value).
    #[serde(default)]
    pub request_id: Value,
    /// What it asks.
    #[serde(default)]
    pub request: CliRequestBody,
}

/// The body of a CLI `control_request`.
#[derive(Debug, Default, Deserialize)]
pub struct CliRequestBody {
    /// `can_use_tool`, ...
    pub subtype: Option<String>,
    /// The tool input of a `can_use_tool`.
    pub input: Option<Value>,
}

/// A conversation message of the CLI, typed where the executor acts on it.
#[derive(Debug, PartialEq)]
pub enum CliMessage {
    /// `system` (init and notices).
    System,
    /// `assistant`: the model's text and tool calls.
    Assistant(Vec<Block>),
    /// `user`: tool results (and the CLI's echo of a prompt).
    User(Vec<Block>),
    /// `result`: the end of a turn.
    Result(CliResult),
    /// Any other type (stream events, future kinds): ignored.
    Other,
}

/// A content block of an `assistant` or `user` message, as far as the executor reads it.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Model text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call.
    ToolUse {
        /// Matches the result.
        id: String,
        /// The tool.
        #[serde(default)]
        name: String,
    },
    /// A tool's answer.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// What the tool returned (any shape).
        #[serde(default)]
        content: Value,
    },
    /// Thinking, images, and blocks of kinds the executor does not read (or malformed ones).
    #[serde(other)]
    Other,
}

/// The `result` line of a turn.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct CliResult {
    /// `success`, `error_max_turns`, `error_during_execution`, ...
    #[serde(default)]
    pub subtype: String,
    /// Set when the turn failed.
    #[serde(default)]
    pub is_error: bool,
    /// The answer (or the error text).
    #[serde(default, deserialize_with = "string_or_none")]
    pub result: Option<String>,
    /// Error texts (the strings among them).
    #[serde(default, deserialize_with = "strings_only")]
    pub errors: Vec<String>,
}

impl CliResult {
    /// Whether the turn failed.
    pub fn failed(&self) -> bool {
        self.is_error || self.subtype.starts_with("error")
    }
}

fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn strings_only<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(a) => a
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

/// The content blocks of a message line (`message.content`; a plain string has none the
/// executor acts on; a block that does not read is [`Block::Other`]).
fn blocks(msg: &Value) -> Vec<Block> {
    msg.pointer("/message/content")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|b| Block::deserialize(b).unwrap_or(Block::Other))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a conversation message (never fails: what does not read is empty or `Other`).
pub fn message(msg: &Value) -> CliMessage {
    match msg.get("type").and_then(Value::as_str) {
        Some("system") => CliMessage::System,
        Some("assistant") => CliMessage::Assistant(blocks(msg)),
        Some("user") => CliMessage::User(blocks(msg)),
        Some("result") => CliMessage::Result(CliResult::deserialize(msg).unwrap_or_default()),
        _ => CliMessage::Other,
    }
}

/// Sorts one parsed stdout message (a malformed control line reads as an empty one).
pub fn classify(msg: &Value) -> Inbound<'_> {
    match msg.get("type").and_then(Value::as_str) {
        Some("control_response") => {
            Inbound::ControlResponse(CliResponse::deserialize(msg).unwrap_or_default())
        }
        Some("control_request") => {
            Inbound::ControlRequest(CliRequest::deserialize(msg).unwrap_or_default())
        }
        _ => Inbound::Message(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn lines_written_match_the_cli_contract() {
        assert_eq!(
            parsed(&user("hi")),
            json!({"type": "user", "message": {"role": "user", "content": "hi"},
                   "parent_tool_use_id": null, "session_id": ""})
        );
        assert_eq!(
            parsed(&initialize(3)),
            json!({"type": "control_request", "request_id": "req_init_3",
                   "request": {"subtype": "initialize", "hooks": null}})
        );
        assert_eq!(
            parsed(&interrupt(3)),
            json!({"type": "control_request", "request_id": "req_int_3",
                   "request": {"subtype": "interrupt"}})
        );
    }

    #[test]
    fn tool_requests_are_allowed_and_others_refused() {
        let Inbound::ControlRequest(r) = classify(&json!({"type": "control_request",
            "request_id": "r1", "request": {"subtype": "can_use_tool", "input": {"a": 1}}}))
        else {
            panic!("not a request")
        };
        assert_eq!(
            parsed(&answer(&r)),
            json!({"type": "control_response", "response": {"subtype": "success",
                   "request_id": "r1", "response": {"behavior": "allow", "updatedInput": {"a": 1}}}})
        );
        let Inbound::ControlRequest(r) = classify(&json!({"type": "control_request",
            "request_id": 7, "request": {"subtype": "hook_callback"}}))
        else {
            panic!("not a request")
        };
        assert_eq!(
            parsed(&answer(&r)),
            json!({"type": "control_response", "response": {"subtype": "error",
                   "request_id": 7, "error": "not supported by this executor"}})
        );
    }

    #[test]
    fn conversation_messages_read_what_the_executor_acts_on() {
        let a = json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}},
            {"type": "thinking", "thinking": "hm"},
            {"type": "text"}]}});
        assert_eq!(
            message(&a),
            CliMessage::Assistant(vec![
                Block::Text { text: "hi".into() },
                Block::ToolUse {
                    id: "t1".into(),
                    name: "Bash".into()
                },
                Block::Other,
                Block::Other
            ])
        );
        let u = json!({"type": "user", "message": {"content": "echo of a prompt"}});
        assert_eq!(message(&u), CliMessage::User(vec![]));
        let r = json!({"type": "result", "subtype": "error_max_turns", "result": 5,
                       "errors": ["a", 1, "b"]});
        let CliMessage::Result(r) = message(&r) else {
            panic!("not a result")
        };
        assert!(r.failed());
        assert_eq!((r.result, r.errors), (None, vec!["a".into(), "b".into()]));
        assert_eq!(
            message(&json!({"type": "result", "is_error": "yes"})),
            CliMessage::Result(CliResult::default()),
            "a malformed result still ends the turn"
        );
        assert_eq!(message(&json!({"type": "stream_event"})), CliMessage::Other);
    }

    #[test]
    fn only_the_current_generations_init_answer_counts() {
        let msg = json!({"type": "control_response", "response": {"request_id": "req_init_2"}});
        let Inbound::ControlResponse(r) = classify(&msg) else {
            panic!("not a response")
        };
        assert!(r.answers_init(2));
        assert!(!r.answers_init(12) && !r.answers_init(1));
        let bad = json!({"type": "control_response", "response": 5});
        assert!(matches!(classify(&bad), Inbound::ControlResponse(r) if !r.answers_init(0)));
    }
}
